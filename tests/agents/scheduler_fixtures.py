"""Set-up for the scheduler tests: a migrated database, a runtime on a simulated clock, recording jobs.

Not a test module: ``test_scheduler*.py`` import it. The jobs here are real functions with the
registry's own cron fields, so the triggers under test are exactly the production ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from agents.jobs import JOBS, JobSpec
from agents.runtime import Runtime
from budgetloop.clock import SimulatedClock
from budgetloop.config import Settings
from budgetloop.db.session import make_engine, upgrade_database
from budgetloop.store.policy import active_policy
from connectors.registry import sandbox_connectors

MONDAY = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)


@contextmanager
def runtime(database_url: str, start: datetime = MONDAY, *, migrate: bool = True) -> Iterator[Runtime]:
    if migrate:  # Alembic's commands are not thread-safe: migrate once, then open replicas
        upgrade_database(database_url)
    engine = make_engine(database_url)
    # Nothing listens on port 9: the scheduler tests' jobs never call a platform.
    connectors = sandbox_connectors("http://127.0.0.1:9")
    rt = Runtime(
        engine=engine,
        clock=SimulatedClock(start),
        connectors=connectors,
        settings=Settings(database_url=database_url),
        policy_source=active_policy,
    )
    try:
        yield rt
    finally:
        connectors.close()
        engine.dispose()


class Recorder:
    """Job functions that note (job, clock time) and can be told to fail their first ``n`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, datetime]] = []
        self.fail_first: dict[str, int] = {}
        self.lock = threading.Lock()

    def func(self, name: str) -> Callable[[Runtime], dict[str, Any]]:
        def job(rt: Runtime) -> dict[str, Any]:
            with self.lock:
                self.calls.append((name, rt.clock.now()))
                n = sum(1 for c in self.calls if c[0] == name)
                if n <= self.fail_first.get(name, 0):
                    raise RuntimeError(f"{name} broke on call {n}")
            return {"call": n, "at": rt.clock.now()}

        return job

    def registry(self) -> dict[str, JobSpec]:
        return {
            name: JobSpec(name, self.func(name), spec.cron, spec.description) for name, spec in JOBS.items()
        }

    def times(self, name: str) -> list[datetime]:
        return [at for n, at in self.calls if n == name]
