"""Structured logs, /readyz and /metrics: JSON lines with the job and request id, readiness that names the
failing check, and metrics that count job runs, failures, pending requests, audit entries and spend."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from agents.jobs import JobSpec
from agents.scheduler import RetryPolicy, run_job
from budgetloop.clock import SimulatedClock
from budgetloop.config import Settings
from budgetloop.db.session import make_engine, upgrade_database
from service.app import create_app
from service.observability import RequestIdMiddleware, configure_logging, current_job
from service.slack.fake import ServerThread
from tests.agents.scheduler_fixtures import runtime


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_log_lines_are_json_with_job_and_extras(json_log: io.StringIO) -> None:
    log = logging.getLogger("budgetloop.test")
    token = current_job.set("ingest")
    try:
        log.info("pulled %d rows", 35, extra={"rows": 35})
    finally:
        current_job.reset(token)
    try:
        raise ValueError("bad row")
    except ValueError:
        log.exception("failed")
    first, second = _lines(json_log)
    assert first["message"] == "pulled 35 rows" and first["job"] == "ingest" and first["rows"] == 35
    assert first["level"] == "INFO" and first["logger"] == "budgetloop.test"
    datetime.fromisoformat(str(first["time"]))
    assert "job" not in second and "ValueError: bad row" in str(second["exception"])


@dataclass
class Sched:
    running: bool


def _serve(engine: Engine, url: str, **state: object) -> ServerThread:
    app = create_app(
        settings=Settings(database_url=url),
        engine=engine,
        clock=SimulatedClock(datetime(2026, 1, 5, tzinfo=UTC)),
    )
    app.add_middleware(RequestIdMiddleware)
    for key, value in state.items():
        setattr(app.state, key, value)
    return ServerThread(app).start()


def test_readyz_names_each_check(database_url: str) -> None:
    upgrade_database(database_url)
    engine = make_engine(database_url)
    server = _serve(engine, database_url, scheduler=Sched(running=True))
    try:
        ok = httpx.get(server.url + "/readyz")
        assert ok.status_code == 200 and ok.json()["ready"] is True
        assert set(ok.json()["checks"]) == {"database", "migrations", "scheduler"}
    finally:
        server.server.should_exit = True
    stopped = _serve(engine, database_url, scheduler=Sched(running=False))
    try:
        answer = httpx.get(stopped.url + "/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["scheduler"] == {"ok": False, "detail": "not running"}
    finally:
        stopped.server.should_exit = True
        engine.dispose()


def test_healthz_answers_503_json_naming_the_database_when_it_fails(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    url = f"sqlite:///{(folder / 'budgetloop.db').as_posix()}"
    upgrade_database(url)
    engine = make_engine(url, poolclass=NullPool)  # a real engine: every request opens the file anew
    server = _serve(engine, url)
    try:
        healthy = httpx.get(server.url + "/healthz")
        assert healthy.status_code == 200
        assert healthy.json()["status"] == "ok" and healthy.json()["database"] == "ok"
        shutil.rmtree(folder)  # the database's file and folder vanish: SQLite cannot open it
        down = httpx.get(server.url + "/healthz")
        assert down.status_code == 503 and down.headers["content-type"].startswith("application/json")
        body = down.json()
        assert body["status"] == "error" and body["checks"]["database"]["ok"] is False
        assert "unable to open database file" in body["checks"]["database"]["detail"]
    finally:
        server.server.should_exit = True
        engine.dispose()


def test_healthz_answers_while_a_followed_simulated_worker_has_not_started(sqlite_url: str) -> None:
    """`serve --follow-simulated-worker` reads its time from the worker's job claims: before the first
    there is no time to tell, and the probe still answers (with no time), not a 500."""
    from budgetloop.cli.serve import FollowingClock

    upgrade_database(sqlite_url)
    engine = make_engine(sqlite_url)
    app = create_app(settings=Settings(database_url=sqlite_url), engine=engine, clock=FollowingClock(engine))
    server = ServerThread(app).start()
    try:
        answer = httpx.get(server.url + "/healthz")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "ok", "database": "ok", "at": None}
    finally:
        server.server.should_exit = True
        engine.dispose()


def _head() -> str:
    from alembic.script import ScriptDirectory

    from budgetloop.db.session import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None and head != "0004"
    return head


def test_readyz_refuses_a_database_behind_the_code(sqlite_url: str) -> None:
    upgrade_database(sqlite_url, "0004")
    engine = make_engine(sqlite_url)
    server = _serve(engine, sqlite_url)
    try:
        answer = httpx.get(server.url + "/readyz", headers={"X-Request-ID": "req-42"})
        assert answer.status_code == 503
        assert answer.headers["x-request-id"] == "req-42"
        checks = answer.json()["checks"]
        assert checks["database"]["ok"] is True and "scheduler" not in checks
        assert (
            checks["migrations"]["ok"] is False
            and f"database at 0004, code expects {_head()}" in checks["migrations"]["detail"]
        )
    finally:
        server.server.should_exit = True
        engine.dispose()


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_runs_failures_and_spend(sqlite_url: str) -> None:
    def ok(rt):  # type: ignore[no-untyped-def]
        return {"fine": True}

    def broken(rt):  # type: ignore[no-untyped-def]
        raise RuntimeError("platform down")

    jobs = {
        "ingest": JobSpec("ingest", ok, {"hour": 6}, "ok"),
        "monitor": JobSpec("monitor", broken, {"hour": 7}, "x"),
    }
    with runtime(sqlite_url) as rt:
        due = rt.clock.now()
        run_job(rt, "ingest", due, jobs=jobs)
        run_job(rt, "ingest", due, jobs=jobs)  # skipped: already done
        for _attempt in range(2):
            run_job(rt, "monitor", due + timedelta(hours=1), jobs=jobs, retry=RetryPolicy(max_attempts=2))
        server = _serve(
            rt.engine, sqlite_url, live_budgets=lambda: {"google_ads:1": 4000.0, "meta_ads:2": 6000.5}
        )
        try:
            text = httpx.get(server.url + "/metrics").text
        finally:
            server.server.should_exit = True
    assert 'budgetloop_job_runs_total{job="ingest",status="ok"} 1.0' in text
    assert 'budgetloop_job_runs_total{job="ingest",status="skipped_locked"} 1.0' in text
    assert 'budgetloop_job_runs_total{job="monitor",status="failed"} 2.0' in text
    assert 'budgetloop_job_failures_total{job="monitor"} 2.0' in text
    assert 'budgetloop_job_duration_seconds_count{job="monitor"} 2.0' in text
    assert _metric(text, "budgetloop_pending_change_requests") == 0.0
    assert _metric(text, "budgetloop_audit_entries") == 0.0
    assert _metric(text, "budgetloop_spend_under_management") == 10000.5
    assert _metric(text, "budgetloop_database_up") == 1.0
