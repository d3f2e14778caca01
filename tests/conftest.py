"""Shared fixtures: databases (SQLite always, PostgreSQL when one answers), clocks.

PostgreSQL: ``BUDGETLOOP_TEST_POSTGRES_URL`` or ``postgresql://postgres@127.0.0.1:5432/test``. Each
xdist worker gets its own database (created on demand), so parallel runs never collide. Tests that
need it are marked ``postgres`` and skip with the reason when no server answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from budgetloop.clock import SimulatedClock
from budgetloop.db.session import make_engine, upgrade_database

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "BUDGETLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}: {str(exc).splitlines()[0]}"


_PG_SKIP_REASON = _pg_reachable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _PG_SKIP_REASON is None:
        return
    skip = pytest.mark.skip(reason=_PG_SKIP_REASON)
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def fresh_postgres_url(tag: str = "t") -> str:
    """Create an empty database on the test server and return its URL (dropped at session end)."""
    name = f"bl_{tag}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    _CREATED_PG.append(name)
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


_CREATED_PG: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _CREATED_PG:
        return
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in _CREATED_PG:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    except Exception:
        pass


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'budgetloop.db').as_posix()}"


@pytest.fixture
def postgres_url() -> str:
    if _PG_SKIP_REASON is not None:
        pytest.skip(_PG_SKIP_REASON)
    return fresh_postgres_url()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each engine (SQLite file, then PostgreSQL)."""
    if request.param == "sqlite":
        return f"sqlite:///{(tmp_path / 'budgetloop.db').as_posix()}"
    if _PG_SKIP_REASON is not None:
        pytest.skip(_PG_SKIP_REASON)
    return fresh_postgres_url()


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """A database migrated to head, on each engine."""
    upgrade_database(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
