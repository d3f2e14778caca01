"""`budgetloop worker --simulated-start` and `budgetloop jobs` in-process, against a loopback sandbox:
a simulated day runs the production jobs once each, a second worker with the same arguments resumes
at the end instead of starting over, a job that keeps failing is recorded and the worker goes on."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from agents.jobs import JOBS
from budgetloop.cli import _register_all, app
from budgetloop.db.ops import JobRun
from budgetloop.db.session import make_engine, session_scope
from budgetloop.errors import InputError
from connectors.sandbox.market import Market
from connectors.sandbox.scenario import load_scenario
from connectors.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parents[2]
TUESDAY = date(2026, 1, 6)  # the day after the example's first loop day: no Monday retrain to fit


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    market = Market(load_scenario(REPO / "examples" / "scenario.yaml"))
    market.advance_to(market.first_loop_day)
    with SandboxServer(market) as server:
        yield server.base_url


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


def _invoke(args: list[str], env: dict[str, str]) -> str:
    _register_all()
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result.output


def _ok_runs(url: str) -> list[tuple[str, str, int, str]]:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            rows = s.execute(select(JobRun).order_by(JobRun.id)).scalars().all()
            return [(r.job, r.scheduled_for.isoformat(), r.attempt, r.status) for r in rows]
    finally:
        engine.dispose()


def test_simulated_worker_runs_a_day_and_resumes_instead_of_repeating(
    sqlite_url: str, sandbox_url: str
) -> None:
    env = {
        "BUDGETLOOP_DATABASE_URL": sqlite_url,
        "BUDGETLOOP_SANDBOX_URL": sandbox_url,
        "BUDGETLOOP_POLICY_FILE": str(REPO / "examples" / "policy.yaml"),
    }
    args = [
        "worker",
        "--simulated-start",
        TUESDAY.isoformat(),
        "--until",
        (TUESDAY + timedelta(days=1)).isoformat(),
    ]
    _invoke(args, env)
    first = _ok_runs(sqlite_url)
    ran = {job for job, _, _, status in first if status == "ok"}
    assert {"ingest", "monitor", "plan"} <= ran and "retrain" not in ran
    assert all(status == "ok" for *_, status in first), first
    assert len({(j, at) for j, at, _, _ in first}) == len(first), "a job ran twice"
    # The same command again: the worker resumes at the last due time and repeats nothing.
    _invoke(args, env)
    second = _ok_runs(sqlite_url)
    assert [r for r in second if r[3] == "ok"] == [r for r in first if r[3] == "ok"]
    listing = _invoke(["jobs", "list", "--limit", "50"], env)
    assert "ingest" in listing and "due 2026-01-06T06:00:00+00:00" in listing


class _Records(logging.Handler):
    """The scheduler's log records (the worker replaces the root handlers, so caplog sees nothing)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def scheduler_log() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("agents.scheduler")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _failing_monitor(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def boom(_rt: object) -> dict[str, object]:
        raise error

    monkeypatch.setitem(JOBS, "monitor", dataclasses.replace(JOBS["monitor"], func=boom))


def test_a_job_that_keeps_failing_is_recorded_and_the_worker_goes_on(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, scheduler_log: _Records
) -> None:
    # A user's mistake inside a job (here: made up) is recorded and logged in one line, no traceback.
    _failing_monitor(monkeypatch, InputError("no readings to judge", key="metrics", fix="ingest first"))
    env = {
        "BUDGETLOOP_DATABASE_URL": sqlite_url,
        "BUDGETLOOP_SANDBOX_URL": "http://127.0.0.1:9",  # nothing listens: the clock sync fails too
        "BUDGETLOOP_POLICY_FILE": str(REPO / "examples" / "policy.yaml"),
        "BUDGETLOOP_JOB_MAX_ATTEMPTS": "2",
        "BUDGETLOOP_JOB_RETRY_BACKOFF_S": "600",
    }
    args = ["worker", "--simulated-start", "2026-01-06T05:00", "--until", "2026-01-06T09:00"]
    _register_all()
    result = CliRunner().invoke(app, args, env=env)
    runs = _ok_runs(sqlite_url)
    assert result.exit_code == 0, (result.output, repr(result.exception), runs)
    monitor = [(at, attempt, status) for job, at, attempt, status in runs if job == "monitor"]
    assert monitor == [  # the retry came 10 simulated minutes later, then it gave up
        ("2026-01-06T07:00:00+00:00", 1, "failed"),
        ("2026-01-06T07:00:00+00:00", 2, "failed"),
    ]
    engine = make_engine(sqlite_url)
    try:
        with session_scope(engine) as s:
            errors = s.execute(select(JobRun.error).where(JobRun.job == "monitor")).scalars().all()
            retried = (
                s.execute(select(JobRun.started_at).where(JobRun.job == "monitor").order_by(JobRun.id))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert all("no readings to judge" in (e or "") and "Traceback" not in (e or "") for e in errors), errors
    assert retried[1] - retried[0] == timedelta(minutes=10)
    failures = [r for r in scheduler_log.records if "failed (attempt" in r.getMessage()]
    assert len(failures) == 2 and not any(r.exc_info for r in failures), failures
    assert "`metrics`: no readings to judge" in failures[0].getMessage()
    # The other jobs went on at their times, whatever became of them.
    assert any(job == "ingest" and at == "2026-01-06T06:00:00+00:00" for job, at, _, _ in runs)
    assert any(job == "plan" and at == "2026-01-06T08:00:00+00:00" for job, at, _, _ in runs)


def test_a_job_failing_on_a_bug_is_logged_with_its_traceback(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, scheduler_log: _Records
) -> None:
    _failing_monitor(monkeypatch, RuntimeError("a bug"))
    env = {
        "BUDGETLOOP_DATABASE_URL": sqlite_url,
        "BUDGETLOOP_SANDBOX_URL": "http://127.0.0.1:9",
        "BUDGETLOOP_POLICY_FILE": str(REPO / "examples" / "policy.yaml"),
        "BUDGETLOOP_JOB_MAX_ATTEMPTS": "1",
    }
    _register_all()
    args = ["worker", "--simulated-start", "2026-01-06T06:30", "--until", "2026-01-06T07:10"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, (result.output, repr(result.exception))
    failures = [r for r in scheduler_log.records if "failed (attempt" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info


def test_a_worker_without_any_policy_refuses_to_start(sqlite_url: str) -> None:
    env = {"BUDGETLOOP_DATABASE_URL": sqlite_url, "BUDGETLOOP_SANDBOX_URL": "http://127.0.0.1:9"}
    args = ["worker", "--simulated-start", "2026-01-05", "--until", "2026-01-07"]
    _register_all()
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code != 0 and isinstance(result.exception, InputError), (
        result.output,
        result.exception,
    )
    text = str(result.exception)
    assert "BUDGETLOOP_POLICY_FILE" in text and "budgetloop policy apply" in text
    assert _ok_runs(sqlite_url) == [], "no job may run without a policy"


def test_a_heartbeat_file_in_a_missing_folder_is_refused_at_start(sqlite_url: str, tmp_path: Path) -> None:
    env = {
        "BUDGETLOOP_DATABASE_URL": sqlite_url,
        "BUDGETLOOP_SANDBOX_URL": "http://127.0.0.1:9",
        "BUDGETLOOP_POLICY_FILE": str(REPO / "examples" / "policy.yaml"),
    }
    hb = tmp_path / "nonexistent" / "hb"
    args = ["worker", "--simulated-start", "2026-01-05", "--until", "2026-01-07", "--heartbeat-file", str(hb)]
    _register_all()
    result = CliRunner().invoke(app, args, env=env)
    assert isinstance(result.exception, InputError), (result.output, result.exception)
    assert "--heartbeat-file" in str(result.exception) and "does not exist" in str(result.exception)


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_serve_refuses_a_port_outside_1_to_65535(port: str) -> None:
    _register_all()
    result = CliRunner().invoke(app, ["serve", "--port", port])
    assert result.exit_code == 2, result.output
    assert "--port" in result.output, result.output


def test_jobs_run_names_the_jobs_on_a_typo(sqlite_url: str) -> None:
    _register_all()
    result = CliRunner().invoke(app, ["jobs", "run", "ingets"], env={"BUDGETLOOP_DATABASE_URL": sqlite_url})
    assert result.exit_code != 0
    assert "no job named 'ingets'" in str(result.exception) + result.output


def test_an_invalid_policy_file_is_stored_once_however_often_the_service_restarts(
    sqlite_url: str, tmp_path: Path
) -> None:
    from budgetloop.cli.serve import record_policy_file
    from budgetloop.db.session import upgrade_database
    from budgetloop.store.policy import list_policy_versions

    bad = tmp_path / "policy.yaml"
    bad.write_text("budget: {total_daily_max: -1}\nchannels: {search: {}}\n")
    upgrade_database(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        for _ in range(3):  # a crash-looping container
            with pytest.raises(InputError, match="the policy file is invalid"):
                record_policy_file(engine, bad)
        with session_scope(engine) as s:
            assert [(r.version, r.valid) for r in list_policy_versions(s)] == [(1, False)]
        with pytest.raises(InputError, match="it is a folder"):
            record_policy_file(engine, tmp_path)
    finally:
        engine.dispose()
