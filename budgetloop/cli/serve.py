"""`budgetloop serve`, `budgetloop worker`, `budgetloop sandbox serve` and `budgetloop jobs`: the processes.

    budgetloop serve [--host H] [--port P] [--no-scheduler]   REST API + Slack endpoints (+ the scheduler)
    budgetloop worker                                         the scheduler alone, on the wall clock
    budgetloop worker --simulated-start 2026-01-05 --until 2026-02-02 [--speed 86400]
                                                              the scheduler on a simulated clock (demos, e2e)
    budgetloop sandbox serve --scenario FILE [--port P]       the sandbox ad platforms over a simulated market
    budgetloop jobs run NAME | jobs list                      run one job now (on demand) / recent job runs

Configured from the environment (:class:`budgetloop.config.Settings`, ``BUDGETLOOP_*``). Every process
applies the migrations on start (waiting for the database to answer), records ``BUDGETLOOP_POLICY_FILE``
as the active policy when it differs from the recorded one, and logs one JSON object per line.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from budgetloop import config
from budgetloop.cli import app
from budgetloop.config import DEFAULT_SLACK_BASE_URL, DEV_SLACK_BOT_TOKEN, DEV_SLACK_SIGNING_SECRET, Settings
from budgetloop.errors import InputError

log = logging.getLogger("budgetloop.process")


def load_settings() -> Settings:
    """The settings from the environment; a bad variable exits 2 naming it (see :func:`config.load_settings`)."""
    return config.load_settings()


def prepare_database(settings: Settings, *, wait_s: float = 60.0) -> Any:
    """Wait for the database, migrate it to head, record the policy file; return an engine."""
    from sqlalchemy import text

    from budgetloop.db.session import make_engine, upgrade_database

    engine = make_engine(settings.database_url)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise InputError(
                    f"the database does not answer: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                    key="BUDGETLOOP_DATABASE_URL",
                    fix="start the database or point BUDGETLOOP_DATABASE_URL at one that runs",
                ) from None
            log.info("waiting for the database: %s", type(exc).__name__)
            time.sleep(1.0)
    for attempt in range(5):  # two processes starting together may race on the first migration
        try:
            upgrade_database(settings.database_url)
            break
        except InputError:
            raise  # a database this build cannot migrate (newer, foreign tables): no race to wait out
        except Exception:
            if attempt == 4:
                raise
            time.sleep(1.0 + attempt)
    if settings.policy_file is not None:
        record_policy_file(engine, settings.policy_file)
    return engine


def record_policy_file(engine: Any, path: Path) -> None:
    """Make ``path`` the active policy unless the active one already has the same text."""
    import hashlib

    from sqlalchemy.exc import IntegrityError

    from budgetloop.clock import WallClock
    from budgetloop.db.session import session_scope
    from budgetloop.fileio import read_user_text
    from budgetloop.store.policy import active_policy_record, list_policy_versions, record_policy

    try:
        body = read_user_text(path, what="the policy file")
    except InputError as exc:
        raise InputError(exc.message, file=str(path), key="BUDGETLOOP_POLICY_FILE", fix=exc.fix) from None
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    try:
        with session_scope(engine) as session:
            current = active_policy_record(session)
            if current is not None and current.sha256 == digest:
                return
            latest = next(iter(list_policy_versions(session, limit=1)), None)
            if latest is not None and latest.sha256 == digest and not latest.valid:
                record = latest  # refused before: a restarting service does not store it again
            else:
                record = record_policy(
                    session,
                    text=body,
                    source=str(path),
                    author="BUDGETLOOP_POLICY_FILE",
                    now=WallClock().now(),
                )
    except IntegrityError:
        log.info("another process recorded the policy at the same moment")
        return
    if not record.valid:
        raise InputError(
            "the policy file is invalid: " + "; ".join(record.problems),
            file=str(path),
            key="BUDGETLOOP_POLICY_FILE",
            fix="run `budgetloop policy validate` on it",
        )
    log.info("policy %s recorded as version %s", path, record.version)


NO_POLICY = (
    "no guardrail policy is active: BUDGETLOOP_POLICY_FILE is not set and none was ever applied to this "
    "database, so plan, execute and monitor cannot run"
)
NO_POLICY_FIX = (
    "set BUDGETLOOP_POLICY_FILE to a policy YAML, or run `budgetloop policy apply POLICY.yaml --author NAME`"
)


def has_active_policy(engine: Any) -> bool:
    from budgetloop.db.session import session_scope
    from budgetloop.store.policy import active_policy_record

    with session_scope(engine) as session:
        return active_policy_record(session) is not None


def build_runtime(settings: Settings, engine: Any, clock: Any) -> Any:
    """The jobs' runtime from the settings: connectors to ``BUDGETLOOP_SANDBOX_URL``, Slack when set."""
    from agents.runtime import FitOptions, Runtime
    from budgetloop.store.policy import active_policy
    from connectors.registry import sandbox_connectors

    if not settings.sandbox_url:
        raise InputError(
            "the scheduler needs the ad platforms and none is configured",
            key="BUDGETLOOP_SANDBOX_URL",
            fix="set it to the sandbox's base URL (e.g. http://sandbox:8765); real platform credentials "
            "are not supported yet",
        )
    notifier = None
    slack = slack_client(settings)
    if slack is not None:
        from agents.notify import SlackNotifier

        notifier = SlackNotifier(
            slack, channel=settings.slack_channel, clock=clock, policy_source=active_policy
        )
    fit = FitOptions(
        method=settings.fit_method,
        chains=settings.fit_chains,
        warmup=settings.fit_warmup,
        samples=settings.fit_samples,
        baseline=settings.fit_baseline,
        saturation=settings.fit_saturation,
    )
    return Runtime(
        engine=engine,
        clock=clock,
        connectors=sandbox_connectors(settings.sandbox_url),
        settings=settings,
        policy_source=active_policy,
        notifier=notifier,
        fit=fit,
    )


def slack_client(settings: Settings) -> Any:
    """A Slack Web API client, or None while Slack is left at its development placeholders."""
    if settings.slack_bot_token == DEV_SLACK_BOT_TOKEN and settings.slack_base_url == DEFAULT_SLACK_BASE_URL:
        return None
    from slack_sdk import WebClient

    return WebClient(token=settings.slack_bot_token, base_url=settings.slack_base_url)


def slack_off_reason(settings: Settings, *, receives_clicks: bool) -> str | None:
    """Why this process will not run Slack approvals, or None when it will.

    ``receives_clicks``: the process serves ``POST /slack/interactions`` (``serve``), so an unset
    signing secret matters too; the worker only posts the approval requests."""
    missing = []
    if slack_client(settings) is None:
        missing.append("BUDGETLOOP_SLACK_BOT_TOKEN")
    if receives_clicks and settings.slack_signing_secret == DEV_SLACK_SIGNING_SECRET:
        missing.append("BUDGETLOOP_SLACK_SIGNING_SECRET")
    if not missing:
        return None
    what = " and ".join(missing) + (" are" if len(missing) > 1 else " is")
    effect = (
        "no approval request is posted to Slack"
        if "BUDGETLOOP_SLACK_BOT_TOKEN" in missing
        else "Slack's button clicks cannot be verified"
    )
    return (
        f"Slack approvals are disabled: {what} not set, so {effect}; approve change requests through "
        "the REST API (POST /api/v1/change-requests/{id}/approve), or set "
        + ("them" if len(missing) > 1 else "it")
    )


def log_slack_state(settings: Settings, *, receives_clicks: bool) -> None:
    """One line at start when Slack approvals are off, saying why."""
    reason = slack_off_reason(settings, receives_clicks=receives_clicks)
    if reason is not None:
        log.warning(reason)


def retry_policy(settings: Settings) -> Any:
    from agents.scheduler import RetryPolicy

    return RetryPolicy(
        max_attempts=settings.job_max_attempts, backoff=timedelta(seconds=settings.job_retry_backoff_s)
    )


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def check_port_free(host: str, port: int) -> None:
    """Refuse (exit 2, naming --port) a port another process listens on, before any work is done:
    uvicorn would only log the bind error after start-up and exit 3."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(
            f"cannot listen on {host!r}: {exc.strerror}", key="--host", fix="give an IP or a host name"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise InputError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                key="--port",
                fix="choose another port, or stop the process that listens there",
            ) from None


@app.command("serve", help="Run the REST API, the Slack endpoints and (unless --no-scheduler) the scheduler.")
def serve(
    host: Annotated[str, typer.Option("--host", help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port", min=1, max=65535)] = 8000,
    no_scheduler: Annotated[
        bool, typer.Option("--no-scheduler", help="serve only; run `budgetloop worker` for the jobs")
    ] = False,
    follow_simulated_worker: Annotated[
        bool,
        typer.Option(
            "--follow-simulated-worker",
            help="demos and e2e runs: tell time by the simulated worker's clock (the latest due time it "
            "claimed) instead of the wall clock; implies --no-scheduler",
        ),
    ] = False,
) -> None:
    import uvicorn

    from budgetloop.clock import WallClock
    from service.app import create_app
    from service.observability import RequestIdMiddleware, configure_logging, connector_budgets

    settings = load_settings()
    configure_logging(settings.log_level)
    check_port_free(host, port)
    log_slack_state(settings, receives_clicks=True)
    engine = prepare_database(settings)
    if not has_active_policy(engine):  # the REST API still serves the audit log and the history
        log.warning("%s — %s", NO_POLICY, NO_POLICY_FIX)
    clock: Any = FollowingClock(engine) if follow_simulated_worker else WallClock()
    scheduler = None
    on_approved: Callable[[int], None] | None = None
    rt = None
    if settings.scheduler and not (no_scheduler or follow_simulated_worker):
        from agents.scheduler import WallScheduler

        rt = build_runtime(settings, engine, clock)
        scheduler = WallScheduler(rt, retry=retry_policy(settings))
        sched = scheduler

        def on_approved(_change_request_id: int) -> None:
            sched.request("execute")  # execute at once rather than at the next fire

    api = create_app(
        settings=settings, engine=engine, clock=clock, slack=slack_client(settings), on_approved=on_approved
    )
    api.add_middleware(RequestIdMiddleware)
    api.state.scheduler = scheduler
    if settings.sandbox_url:
        from connectors.http import RetryPolicy
        from connectors.registry import sandbox_connectors

        # A scrape must stay quick: one try, a short timeout (the collector caches the answer a minute).
        quick = sandbox_connectors(settings.sandbox_url, timeout=3.0, retry=RetryPolicy(max_attempts=1))
        api.state.live_budgets = connector_budgets(quick)
    if scheduler is not None:
        scheduler.start()
    log.info("serving on %s:%d (scheduler %s)", host, port, "on" if scheduler else "off")
    # uvicorn stops on SIGTERM/SIGINT, then re-raises the signal to the handler it found: make that a
    # no-op, so the scheduler below is shut down and the process exits 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    try:
        uvicorn.run(api, host=host, port=port, log_config=None, access_log=True)
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        engine.dispose()


class FollowingClock:
    """The simulated worker's time as seen from another process: the latest due time claimed in
    ``job_locks`` (never earlier than the last answer), read at most every ``refresh_s`` seconds."""

    def __init__(self, engine: Any, refresh_s: float = 0.5) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self._last: datetime | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        from agents.scheduler import resume_point

        with self._lock:
            if self._last is None or time.monotonic() - self._read_at > self.refresh_s:
                at = resume_point(self.engine)
                if at is None:
                    raise RuntimeError("the simulated worker has not started: no job has been claimed yet")
                self._last = at if self._last is None else max(self._last, at)
                self._read_at = time.monotonic()
            return self._last

    def today(self) -> date:
        return self.now().date()


@app.command(
    "worker", help="Run the scheduler alone (wall clock, or a simulated clock with --simulated-start)."
)
def worker(
    simulated_start: Annotated[
        str | None,
        typer.Option(
            "--simulated-start",
            help="run on a simulated clock from this UTC date/time (ISO); a restarted worker resumes where "
            "the last one stopped",
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="simulated mode: stop at this UTC date/time (ISO)")
    ] = None,
    speed: Annotated[
        float,
        typer.Option("--speed", help="simulated seconds per wall second; 0 = as fast as the jobs allow"),
    ] = 0.0,
    step_minutes: Annotated[
        int, typer.Option("--step-minutes", help="simulated mode: how far the clock moves per step")
    ] = 60,
    heartbeat_file: Annotated[
        Path | None,
        typer.Option("--heartbeat-file", help="touch this file every few seconds while the scheduler runs"),
    ] = None,
) -> None:
    from service.observability import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    if simulated_start is None and until is not None:
        raise InputError("--until needs --simulated-start", key="--until", fix="add --simulated-start DATE")
    if step_minutes < 1:
        raise InputError(
            f"--step-minutes {step_minutes} is below 1", key="--step-minutes", fix="give 1 or more"
        )
    if speed < 0:
        raise InputError(
            f"--speed {speed} is negative", key="--speed", fix="give 0 (as fast as possible) or more"
        )
    start = None if simulated_start is None else _parse_when(simulated_start, "--simulated-start")
    end = None if until is None else _parse_when(until, "--until")
    if start is not None and end is not None and end <= start:
        raise InputError(
            f"--until {end} is not after --simulated-start {start}", key="--until", fix="swap them"
        )
    if heartbeat_file is not None:
        check_heartbeat_file(heartbeat_file)
    log_slack_state(settings, receives_clicks=False)
    engine = prepare_database(settings)
    if not has_active_policy(engine):  # every plan, execute and monitor would fail: say so once, now
        engine.dispose()
        raise InputError(NO_POLICY, key="BUDGETLOOP_POLICY_FILE", fix=NO_POLICY_FIX)
    stop = _stop_event()
    beat = Heartbeat(heartbeat_file)
    try:
        if start is None:
            _run_wall(settings, engine, stop, beat)
        else:
            _run_simulated(
                settings,
                engine,
                stop,
                beat,
                start=start,
                end=end,
                speed=speed,
                step=timedelta(minutes=step_minutes),
            )
    finally:
        engine.dispose()


def _parse_when(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{value!r} is not a date or time", key=option, fix="write YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def check_heartbeat_file(path: Path) -> None:
    """The worker must be able to touch ``path``: refuse at start rather than crash on the first beat."""
    import os

    parent = path.parent
    if not parent.is_dir():
        raise InputError(
            f"the folder {parent} does not exist",
            file=str(path),
            key="--heartbeat-file",
            fix="create the folder or give a path in an existing one",
        )
    if path.is_dir():
        raise InputError("is a folder", file=str(path), key="--heartbeat-file", fix="give a file path")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(
            "cannot be written by this process",
            file=str(path),
            key="--heartbeat-file",
            fix="give a path this user can write",
        )


class Heartbeat:
    """Touches a file (for a container healthcheck) at most every ``every_s`` seconds."""

    def __init__(self, path: Path | None, every_s: float = 5.0) -> None:
        self.path = path
        self.every_s = every_s
        self._last = 0.0

    def __call__(self) -> None:
        if self.path is None or time.monotonic() - self._last < self.every_s:
            return
        self.path.touch()
        self._last = time.monotonic()


def _run_wall(settings: Settings, engine: Any, stop: threading.Event, beat: Heartbeat) -> None:
    from agents.scheduler import WallScheduler
    from budgetloop.clock import WallClock

    rt = build_runtime(settings, engine, WallClock())
    scheduler = WallScheduler(rt, retry=retry_policy(settings))
    scheduler.start()
    try:
        while not stop.wait(1.0):
            if scheduler.running:
                beat()
    finally:
        scheduler.shutdown(wait=True)
        rt.connectors.close()


def _run_simulated(
    settings: Settings,
    engine: Any,
    stop: threading.Event,
    beat: Heartbeat,
    *,
    start: datetime,
    end: datetime | None,
    speed: float,
    step: timedelta,
) -> None:
    from agents.scheduler import SimulatedScheduler, resume_point
    from budgetloop.clock import SimulatedClock

    resumed = resume_point(engine)
    now = max(start, resumed) if resumed is not None else start
    clock = SimulatedClock(now)
    rt = build_runtime(settings, engine, clock)
    sync = SandboxClockSync(settings.sandbox_url) if settings.sandbox_url else None
    scheduler = SimulatedScheduler(rt, clock, retry=retry_policy(settings), before_run=sync)
    log.info(
        "simulated worker from %s%s",
        now.isoformat(),
        f" (resumed; asked {start.isoformat()})" if resumed else "",
    )
    try:
        while not stop.is_set() and (end is None or clock.now() < end):
            t0 = time.monotonic()
            target = clock.now() + step
            if end is not None:
                target = min(target, end)
            scheduler.run_due(target)
            beat()
            if speed > 0:
                stop.wait(max(0.0, step.total_seconds() / speed - (time.monotonic() - t0)))
        log.info("simulated worker stopped at %s", clock.now().isoformat())
    finally:
        rt.connectors.close()
        if sync is not None:
            sync.close()


class SandboxClockSync:
    """Before a simulated run: move the sandbox's market to the clock's day (``POST /admin/clock``)."""

    def __init__(self, base_url: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=30.0)
        self.day: date | None = None

    def __call__(self, now: datetime) -> None:
        import httpx

        day = now.date()
        if self.day is not None and day <= self.day:
            return
        try:
            answer = self.client.post("/admin/clock", json={"date": day.isoformat()})
            if answer.status_code not in (200, 409):  # 409: the market is already past that day (a restart)
                answer.raise_for_status()
        except httpx.HTTPError as exc:  # the jobs will fail and be retried; the worker goes on
            log.warning("could not move the sandbox to %s: %s", day.isoformat(), exc)
            return
        self.day = day

    def close(self) -> None:
        self.client.close()


sandbox_app = typer.Typer(help="The sandbox ad platforms over a simulated market.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command(
    "serve", help="Serve the sandbox's Google/Meta/retail/store APIs over a scenario's market."
)
def sandbox_serve(
    scenario: Annotated[Path, typer.Option("--scenario", help="the scenario YAML")],
    host: Annotated[str, typer.Option("--host", help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port", min=1, max=65535)] = 8765,
    through: Annotated[
        str | None,
        typer.Option(
            "--through", help="simulate every day up to this one (default: the last day of history)"
        ),
    ] = None,
) -> None:
    import uvicorn

    from connectors.sandbox.app import create_sandbox_app
    from connectors.sandbox.market import Market
    from connectors.sandbox.scenario import load_scenario
    from service.observability import configure_logging

    configure_logging(load_settings().log_level)
    check_port_free(host, port)
    if not scenario.is_file():
        raise InputError(
            "no such file", file=str(scenario), key="--scenario", fix="give a scenario YAML path"
        )
    sc = load_scenario(scenario)
    market = Market(sc)
    last = (
        sc.first_loop_day - timedelta(days=1) if through is None else _parse_when(through, "--through").date()
    )
    market.advance_to(last + timedelta(days=1))
    sandbox = create_sandbox_app(market)

    @sandbox.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "today": market.today().isoformat()}

    log.info("sandbox %s on %s:%d, market at %s", sc.name, host, port, market.today().isoformat())
    uvicorn.run(sandbox, host=host, port=port, log_config=None, access_log=False)


jobs_app = typer.Typer(help="The scheduled jobs: run one now, list recent runs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("run", help="Run one job now, under the same lock and job_runs record as the scheduler.")
def jobs_run(
    name: Annotated[
        str, typer.Argument(help="ingest | monitor | retrain | experiment | plan | execute | expire | digest")
    ],
) -> None:
    from agents.jobs import JOBS
    from agents.scheduler import run_job
    from budgetloop.clock import WallClock
    from service.observability import configure_logging

    if name not in JOBS:
        raise InputError(f"no job named {name!r}", key="NAME", fix=f"use one of {', '.join(JOBS)}")
    settings = load_settings()
    configure_logging(settings.log_level)
    engine = prepare_database(settings)
    clock = WallClock()
    rt = build_runtime(settings, engine, clock)
    try:
        result = run_job(rt, name, clock.now(), retry=retry_policy(settings))
    finally:
        rt.connectors.close()
        engine.dispose()
    typer.echo(f"{name}: {result.status} (attempt {result.attempt})")
    if result.summary is not None:
        import json

        typer.echo(json.dumps(result.summary, indent=2))
    if result.status == "failed":
        typer.echo(result.error or "", err=True)
        raise typer.Exit(1)


@jobs_app.command("list", help="The most recent job runs (every replica), newest first.")
def jobs_list(limit: Annotated[int, typer.Option("--limit", min=1, help="how many")] = 20) -> None:
    from sqlalchemy import select

    from budgetloop.db.ops import JobRun
    from budgetloop.db.session import open_existing_database, session_scope

    source = "BUDGETLOOP_DATABASE_URL" if os.environ.get("BUDGETLOOP_DATABASE_URL") else None
    engine = open_existing_database(load_settings().database_url, source=source)
    try:
        with session_scope(engine) as session:
            rows = session.execute(select(JobRun).order_by(JobRun.id.desc()).limit(limit)).scalars().all()
            for r in rows:
                took = "" if r.duration_s is None else f" {r.duration_s:.2f}s"
                typer.echo(
                    f"{r.id:>6} {r.job:<8} due {r.scheduled_for.isoformat()} attempt {r.attempt} {r.status}{took}"
                    + (f"  {(r.error or '').splitlines()[0]}" if r.error else "")
                )
    finally:
        engine.dispose()
