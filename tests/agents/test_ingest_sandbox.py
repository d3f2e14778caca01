"""Ingestion end to end: the sandbox's platform APIs over real HTTP on loopback, into each engine.

The headline check: a year of the example market lands in the clean tables and its spend and revenue
equal, to the cent, what the simulator produced. Then the sandbox's own faults: malformed rows of
every kind are quarantined with their reason while the rest lands, a platform that keeps failing is
recorded and does not stop the others, and re-running a range stores nothing new.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from agents.ingest import IngestReport, run_ingest
from budgetloop.db.metrics import Campaign, DailyMetric, DailyRevenue, QuarantinedRow, RawMetric
from budgetloop.db.session import session_scope
from budgetloop.store.metrics import daily_table
from connectors.http import RetryPolicy
from connectors.registry import sandbox_connectors
from connectors.sandbox.faults import Fault
from connectors.sandbox.market import Market
from connectors.sandbox.scenario import load_scenario
from connectors.sandbox.server import SandboxServer
from tests.conftest import REPO_ROOT

SCENARIO = load_scenario(REPO_ROOT / "examples" / "scenario.yaml")
START = SCENARIO.start
YEAR = 365


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    market = Market(SCENARIO)
    market.advance_to(START + timedelta(days=YEAR))
    with SandboxServer(market) as server:
        yield server


@pytest.fixture
def clean_faults(sandbox: SandboxServer) -> Iterator[SandboxServer]:
    sandbox.state.faults.clear()
    yield sandbox
    sandbox.state.faults.clear()


def _ingest(engine: Engine, server: SandboxServer, start: date, end: date, **kw: Any) -> IngestReport:
    now = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    with (
        sandbox_connectors(server.base_url, sleep=lambda _s: None, **kw) as connectors,
        session_scope(engine) as s,
    ):
        return run_ingest(s, connectors, start=start, end=end, now=now)


def test_a_year_lands_to_the_cent(migrated_engine: Engine, clean_faults: SandboxServer) -> None:
    end = START + timedelta(days=YEAR - 1)
    report = _ingest(migrated_engine, clean_faults, START, end)
    assert report.failed_sources == [] and report.total("quarantined") == 0, report.summary()
    assert all(b.missing_days == {} for b in report.batches), report.summary()
    market = clean_faults.market
    with session_scope(migrated_engine) as session:
        spend = {
            (day, channel): total
            for day, channel, total in session.execute(
                select(DailyMetric.day, Campaign.channel, func.sum(DailyMetric.spend))
                .join(Campaign, Campaign.id == DailyMetric.campaign_id)
                .group_by(DailyMetric.day, Campaign.channel)
            )
        }
        revenue = {d: r for d, r in session.execute(select(DailyRevenue.day, DailyRevenue.revenue))}
        table = daily_table(session, start=START, end=end)
    assert len(revenue) == YEAR and len(spend) == YEAR * len(SCENARIO.channels)
    for k in range(YEAR):
        day = START + timedelta(days=k)
        outcome = market.outcome(day)
        assert Decimal(revenue[day]) == Decimal(f"{outcome.revenue:.2f}"), day
        for name, channel in outcome.channels.items():
            assert Decimal(spend[(day, name)]) == Decimal(f"{channel.spend:.2f}"), (day, name)
    truth_total = sum(
        round(o.spend, 2) for o in (market.outcome(START + timedelta(days=k)) for k in range(YEAR))
    )
    assert abs(table[SCENARIO.channel_names].to_numpy().sum() - truth_total) < 0.01


# (dialect, route, malformation, day offset, a word the reason must name, what it must say). The
# sandbox applies one malformation per dialect at a time, so they come in two rounds of a week each.
ROUNDS = [
    [
        ("meta", "insights", "negative_spend", 3, "`spend`", "negative"),
        ("google", "search", "non_numeric_spend", 4, "costMicros", "not a number: '12,50 USD'"),
        ("retail", "reports", "nan_spend", 5, "cost", "not finite"),
        ("store", "revenue", "duplicate_row", 2, "store|", "duplicate"),
    ],
    [
        ("meta", "insights", "missing_field", 8, "`spend`", "missing key(s)"),
        ("retail", "reports", "currency_change", 9, "EUR", "differs from the campaign's USD"),
        ("google", "search", "schema_drift", 10, "cost_micros", "schema drift"),
        ("store", "revenue", "negative_spend", 11, "`revenue`", "negative"),
    ],
]


def test_every_malformation_is_quarantined_with_its_reason(
    migrated_engine: Engine, clean_faults: SandboxServer
) -> None:
    search = clean_faults.market.campaign("search").external_id
    reasons: list[str] = []
    for week, faults in enumerate(ROUNDS):
        clean_faults.state.faults.clear()
        for dialect, route, kind, offset, _, _ in faults:
            clean_faults.arm(
                Fault.model_validate(
                    {"kind": "malformed", "dialect": dialect, "route": route, "malformation": kind,
                     "day": START + timedelta(days=offset), "times": None,
                     "campaign_id": search if dialect == "google" else None}
                )
            )  # fmt: skip
        report = _ingest(
            migrated_engine,
            clean_faults,
            START + timedelta(days=7 * week),
            START + timedelta(days=7 * week + 6),
        )
        assert report.failed_sources == []
        assert len(report.quarantine) == len(faults), report.summary()
        reasons += [q.reason for q in report.quarantine]
        for dialect, _, kind, _, word, says in faults:
            assert any(word in r and says in r for r in reasons), (
                f"{dialect}/{kind}: no reason names {word!r} and says {says!r}:\n{report.summary()}"
            )
    with session_scope(migrated_engine) as session:
        landed = session.scalar(select(func.count()).select_from(DailyMetric))
        assert landed == 14 * len(SCENARIO.channels) - 6  # one campaign-day per platform malformation
        assert session.scalar(select(func.count()).select_from(DailyRevenue)) == 14 - 1  # the negative day
        assert session.scalar(select(func.count()).select_from(QuarantinedRow)) == 8


def test_rerun_stores_nothing_and_a_failing_platform_does_not_stop_the_others(
    sqlite_url: str, clean_faults: SandboxServer
) -> None:
    from budgetloop.db.session import make_engine, upgrade_database

    upgrade_database(sqlite_url)
    engine = make_engine(sqlite_url)
    start, end = START + timedelta(days=30), START + timedelta(days=44)
    clean_faults.arm(Fault(kind="server_error", dialect="meta", route="*", status=503, times=None))
    first = _ingest(engine, clean_faults, start, end, retry=RetryPolicy(max_attempts=2, base_delay=0))
    assert first.failed_sources == ["meta_ads"], first.summary()
    assert "status=503" in first.batches[1].errors[0]["message"]
    assert first.total("landed") == 15 * 3 + 15  # google (2 campaigns), retail, store
    clean_faults.state.faults.clear()

    second = _ingest(engine, clean_faults, start, end)
    assert second.failed_sources == []
    assert second.total("landed") == 15 and second.total("unchanged") == 15 * 4
    with session_scope(engine) as session:
        raw = session.scalar(select(func.count()).select_from(RawMetric))
    clean_faults.arm({"kind": "rate_limit", "dialect": "store", "retry_after": 30})  # retried, not a failure
    third = _ingest(engine, clean_faults, start, end)
    assert third.failed_sources == [] and clean_faults.state.faults.fired[-1]["kind"] == "rate_limit"
    assert (
        third.total("raw_stored") == 0 and third.total("landed") == 0 and third.total("unchanged") == 15 * 5
    )
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(RawMetric)) == raw
    engine.dispose()
