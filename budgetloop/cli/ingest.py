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
    from budgetloop.config import Settings

    return os.environ.get("BUDGETLOOP_DATABASE_URL") or Settings().database_url


@contextmanager
def sandbox_for(scenario_file: Path, *, until: date | None) -> Iterator[tuple[str, date]]:
    """Start the sandbox over the scenario's market, simulated through ``until`` (inclusive).

    Yields the base URL and ``until`` (default: the last day of the scenario's history).
    """
    from connectors.sandbox.market import Market
    from connectors.sandbox.scenario import load_scenario
    from connectors.sandbox.server import SandboxServer

    scenario = load_scenario(scenario_file)
    last = until if until is not None else scenario.first_loop_day - timedelta(days=1)
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
        report = _run(url, sandbox_url, start, end if end is not None else start)
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
