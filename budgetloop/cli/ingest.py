"""`budgetloop ingest`: pull a date range from the ad platforms and the store into the database.

    budgetloop ingest --since 2025-01-06 --scenario examples/scenario.yaml
    budgetloop ingest --since 2025-06-01 --until 2025-06-30 --sandbox-url http://127.0.0.1:8765

With ``--scenario`` an in-process sandbox (the simulated market behind the platform APIs) is started
on loopback and advanced past ``--until``; with ``--sandbox-url`` a running one is used. The
database is migrated first. Exit 0 when every source was pulled (rows may still be quarantined:
the report lists them), 1 when a source failed, 2 on bad input.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from budgetloop.cli import app
from budgetloop.errors import InputError


def _parse_day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{value!r} is not a date", key=option, fix="write it as YYYY-MM-DD, e.g. 2025-01-06"
        ) from None


def default_database_url() -> str:
    from budgetloop.config import load_settings

    return os.environ.get("BUDGETLOOP_DATABASE_URL") or load_settings().database_url


@contextmanager
def sandbox_for(scenario_file: Path, *, until: date | None) -> Iterator[tuple[str, date]]:
    """Start the sandbox over the scenario's market, simulated through ``until`` (inclusive).

    Yields the base URL and ``until`` (default: the last day of the scenario's history).
    """
    from connectors.sandbox.market import Market
    from connectors.sandbox.scenario import load_scenario
    from connectors.sandbox.server import SandboxServer

    scenario = load_scenario(scenario_file)
    history_end = scenario.first_loop_day - timedelta(days=1)
    last = until if until is not None else history_end
    if last > history_end:  # the days after are the loop's, simulated by `budgetloop worker` or `demo`
        raise InputError(
            f"--until {last} is past the scenario's history, which ends {history_end} (the loop starts "
            f"{scenario.first_loop_day}); later days are not data yet",
            file=str(scenario_file),
            key="--until",
            fix=f"give --until {history_end} or earlier (or leave it out); `budgetloop worker "
            "--simulated-start` or `budgetloop demo` simulate the days after",
        )
    if last < scenario.start:
        raise InputError(
            f"--until {last} is before the scenario starts ({scenario.start})",
            file=str(scenario_file),
            key="until",
            fix=f"give a day from {scenario.start} on",
        )
    market = Market(scenario)
    market.advance_to(last + timedelta(days=1))
    with SandboxServer(market) as server:
        yield server.base_url, last


def check_sandbox_url(url: str) -> None:
    from budgetloop.config import http_url_problem

    problem = http_url_problem(url, example="http://127.0.0.1:8765")
    if problem is not None:
        raise InputError(problem, key="--sandbox-url", fix="give the running sandbox's base URL")


def sandbox_last_day(base_url: str) -> date | None:
    """The last day a running sandbox has data for (the day before its ``today``); None where it does
    not say (not a sandbox, or it does not answer: the pull then reports that)."""
    import httpx

    try:
        answer = httpx.get(base_url.rstrip("/") + "/admin/state", timeout=5.0)
        answer.raise_for_status()
        return date.fromisoformat(answer.json()["today"]) - timedelta(days=1)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def check_range_available(base_url: str, start: date, end: date, *, until_given: bool) -> None:
    last = sandbox_last_day(base_url)
    if last is None:
        return
    if start > last:
        raise InputError(
            f"--since {start} is in the future: the sandbox's last available day is {last}",
            key="since",
            fix=f"give --since {last} or earlier (advance the sandbox with POST /admin/clock for later days)",
        )
    if end > last:
        raise InputError(
            f"--until {end} is after the sandbox's last available day, {last}",
            key="until" if until_given else "since",
            fix=f"give --until {last} or earlier",
        )


def ingest_range(database_url: str, base_url: str, *, start: date, end: date, now: datetime) -> Any:
    """Migrate, then run one ingest of ``start``..``end`` against the sandbox at ``base_url``."""
    from agents.ingest import run_ingest
    from budgetloop.db.session import make_engine, session_scope, upgrade_database
    from connectors.registry import sandbox_connectors

    upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        with sandbox_connectors(base_url) as connectors, session_scope(engine) as session:
            return run_ingest(session, connectors, start=start, end=end, now=now)
    finally:
        engine.dispose()


@app.command("ingest", help="Pull ad-platform metrics and store revenue for a date range into the database.")
def ingest(
    since: Annotated[str, typer.Option("--since", help="first day to pull (YYYY-MM-DD)")],
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="last day to pull, inclusive (default: with --scenario the last day of its history, "
            "otherwise --since itself)",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="default: BUDGETLOOP_DATABASE_URL or ./var/budgetloop.db"),
    ] = None,
    sandbox_url: Annotated[
        str | None, typer.Option("--sandbox-url", help="a running sandbox's base URL")
    ] = None,
    scenario: Annotated[
        Path | None, typer.Option("--scenario", help="start an in-process sandbox over this scenario YAML")
    ] = None,
) -> None:
    start = _parse_day(since, "since")
    end = _parse_day(until, "until") if until is not None else None
    if end is not None and end < start:
        raise InputError(f"--until {end} is before --since {start}", key="until", fix="swap the two dates")
    if (sandbox_url is None) == (scenario is None):
        raise InputError(
            "say where to pull from",
            key="--sandbox-url/--scenario",
            fix="give exactly one of --sandbox-url URL (a running sandbox) or --scenario FILE",
        )
    if sandbox_url is not None:
        check_sandbox_url(sandbox_url)
    if scenario is not None and not scenario.is_file():
        raise InputError(
            "no such file", file=str(scenario), key="--scenario", fix="give a scenario YAML path"
        )
    url = database_url or default_database_url()
    if scenario is not None:
        with sandbox_for(scenario, until=end) as (base_url, last):
            report = _run(url, base_url, start, last)
    else:
        assert sandbox_url is not None
        last = end if end is not None else start
        check_range_available(sandbox_url, start, last, until_given=end is not None)
        report = _run(url, sandbox_url, start, last)
    typer.echo(report.summary())
    if report.failed_sources:
        raise typer.Exit(1)


def _run(database_url: str, base_url: str, start: date, end: date) -> Any:
    if end < start:
        raise InputError(
            f"the last day to pull ({end}) is before --since {start}",
            key="since",
            fix="give an earlier --since",
        )
    # The batch is stamped with the end of the last day pulled: the sandbox's time, not the wall clock.
    now = datetime.combine(end + timedelta(days=1), time(0), tzinfo=UTC)
    return ingest_range(database_url, base_url, start=start, end=end, now=now)
