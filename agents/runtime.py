"""What every job needs, in one place: the database, the clock, the connectors, settings and Slack.

``serve``/``worker`` build a :class:`Runtime` on the wall clock; the demo and the tests build one on a
:class:`~budgetloop.clock.SimulatedClock`. Jobs receive it and never reach for globals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from budgetloop.clock import Clock
from budgetloop.config import Settings
from budgetloop.db.loop import ChangeRequest
from budgetloop.db.session import session_factory, session_scope
from connectors.registry import Connectors
from guardrails.policy import Policy


class Notifier(Protocol):
    """Tells people about a change request (Slack in production and in the demo)."""

    def change_request_changed(self, session: Session, change_request: ChangeRequest) -> None:
        """Post the request when it first needs eyes, update the message on every later state."""

    def note(self, session: Session, change_request: ChangeRequest, text: str) -> None:
        """A short note in the request's thread (monitoring readings, execution results)."""


@dataclass(frozen=True)
class FitOptions:
    """How the weekly retrain fits (the demo trades draws for speed; serve uses the defaults)."""

    method: str = "nuts"
    chains: int = 2
    warmup: int = 500
    samples: int = 500
    baseline: str = "multiplicative"  # models.model.BASELINES
    saturation: str = "hill"  # models.transforms.SATURATIONS
    window_days: int = 364  # the latest four quarters
    holdout_days: int = 28
    seed: int = 0


@dataclass
class Runtime:
    engine: Engine
    clock: Clock
    connectors: Connectors
    settings: Settings
    policy_source: Callable[[Session], tuple[int | None, Policy]]
    notifier: Notifier | None = None
    fit: FitOptions = field(default_factory=FitOptions)
    extras: dict[str, Any] = field(default_factory=dict)
    _sessions: sessionmaker[Session] | None = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            self._sessions = session_factory(self.engine)
        return self._sessions

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """One session, committed on success and rolled back on error."""
        with session_scope(self.sessions) as session:
            yield session

    def policy(self, session: Session) -> tuple[int | None, Policy]:
        return self.policy_source(session)

    def notify(self, session: Session, change_request: ChangeRequest) -> None:
        if self.notifier is not None:
            self.notifier.change_request_changed(session, change_request)

    def note(self, session: Session, change_request: ChangeRequest, text: str) -> None:
        if self.notifier is not None:
            self.notifier.note(session, change_request, text)
