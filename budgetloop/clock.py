"""Time is an input.

Code that decides takes a :class:`Clock` (or a ``now`` argument) instead of reading the wall clock.
``serve`` uses :class:`WallClock`; ``demo`` and the tests use :class:`SimulatedClock`, which only moves
when told to, so a year can pass in seconds and a test can step through a freeze window minute by
minute.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol, runtime_checkable


def ensure_utc(value: datetime, *, name: str = "datetime") -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes, which are ambiguous."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"`{name}` must be a timezone-aware datetime, got naive {value.isoformat()}")
    return value.astimezone(UTC)


@runtime_checkable
class Clock(Protocol):
    """Something that says what time it is (always timezone-aware, in UTC)."""

    def now(self) -> datetime: ...

    def today(self) -> date: ...


class WallClock:
    """The real clock. Only the process edges (``serve``, ``worker``) construct one."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def today(self) -> date:
        return self.now().date()


class SimulatedClock:
    """A clock that moves only when told to. Thread-safe, never goes backwards."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start, name="start")
        self._lock = threading.Lock()

    @classmethod
    def at_day(cls, day: date, hour: int = 0) -> SimulatedClock:
        return cls(datetime.combine(day, time(hour=hour), tzinfo=UTC))

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def today(self) -> date:
        return self.now().date()

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError(f"a clock cannot go backwards (asked to move by {delta})")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, value: datetime) -> datetime:
        value = ensure_utc(value, name="value")
        with self._lock:
            if value < self._now:
                raise ValueError(
                    f"a clock cannot go backwards: now {self._now.isoformat()}, asked {value.isoformat()}"
                )
            self._now = value
            return self._now
