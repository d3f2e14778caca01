"""The ingestion pipeline's rules, on a small platform whose rows each test writes by hand.

``LedgerPlatform`` is a complete (in-memory) implementation of the connector interface, so each test
can say exactly what a platform returns: a late restatement, conflicting duplicates, a campaign that
switches currency. The end-to-end tests over the real sandbox HTTP APIs are in
``test_ingest_sandbox.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from agents.ingest import day_ranges, expected_schema, key_paths, payload_hash, run_ingest, storable
from budgetloop.db.metrics import (
    DailyMetric,
    DailyRevenue,
    IngestBatch,
    MetricCorrection,
    QuarantinedRow,
    RawMetric,
)
from budgetloop.db.session import session_scope
from budgetloop.errors import InputError, TransientError
from budgetloop.store.metrics import daily_table
from connectors.base import (
    BudgetChangeResult,
    CampaignInfo,
    LearningStatus,
    MetricRow,
    RawRecord,
    RevenueRow,
    RowRejected,
)

DAY0 = date(2025, 3, 3)
NOW = datetime(2025, 3, 10, 6, 0, tzinfo=UTC)


def _num(payload: dict[str, Any], key: str) -> float:
    if key not in payload:
        raise RowRejected(f"`{key}` is missing", field_name=key)
    try:
        value = float(payload[key])
    except (TypeError, ValueError):
        raise RowRejected(f"`{key}` is not a number: {payload[key]!r}", field_name=key) from None
    if not math.isfinite(value):
        raise RowRejected(f"`{key}` is not finite: {payload[key]!r}", field_name=key)
    return value


@dataclass
class LedgerPlatform:
    """A platform that returns exactly the rows in ``rows`` (spend as a decimal string, like Meta)."""

    platform: str
    campaigns: list[CampaignInfo]
    rows: list[dict[str, Any]] = field(default_factory=list)
    failure: Exception | None = None

    def list_campaigns(self) -> list[CampaignInfo]:
        return list(self.campaigns)

    def pull_daily_metrics(self, start: date, end: date) -> list[RawRecord]:
        if self.failure is not None:
            raise self.failure
        return [
            RawRecord(self.platform, dict(r))
            for r in self.rows
            if "date" not in r or start.isoformat() <= str(r["date"]) <= end.isoformat()
        ]

    def parse_metric(self, record: RawRecord) -> MetricRow:
        p = record.payload
        spend = _num(p, "spend")
        if spend < 0:
            raise RowRejected(f"`spend` is negative: {spend}", field_name="spend")
        try:
            day = date.fromisoformat(p["date"])
            campaign = str(p["campaign_id"])
            currency = str(p["currency"])
        except KeyError as exc:
            raise RowRejected(f"`{exc.args[0]}` is missing", field_name=str(exc.args[0])) from None
        return MetricRow(
            platform=self.platform,
            account_id="acct-1",
            campaign_external_id=campaign,
            day=day,
            spend=round(spend, 2),
            impressions=int(_num(p, "impressions")),
            clicks=int(_num(p, "clicks")),
            currency=currency,
        )

    def get_budgets(self) -> dict[str, float]:
        return {}

    def set_budget(
        self, campaign_external_id: str, daily_budget: float, *, idempotency_key: str
    ) -> BudgetChangeResult:
        raise NotImplementedError("the ledger platform is read-only")

    def learning_status(self) -> dict[str, LearningStatus]:
        return {}


@dataclass
class LedgerStore:
    source: str = "store"
    rows: list[dict[str, Any]] = field(default_factory=list)

    def pull_daily_revenue(self, start: date, end: date) -> list[RawRecord]:
        return [
            RawRecord(self.source, dict(r))
            for r in self.rows
            if start.isoformat() <= r["date"] <= end.isoformat()
        ]

    def parse_revenue(self, record: RawRecord) -> RevenueRow:
        p = record.payload
        return RevenueRow(
            day=date.fromisoformat(p["date"]), revenue=round(_num(p, "revenue"), 2), currency=p["currency"]
        )


@dataclass
class Ledger:
    platforms: dict[str, LedgerPlatform]
    revenue: LedgerStore


def _campaign(external_id: str, channel: str, currency: str = "USD") -> CampaignInfo:
    return CampaignInfo("meta_ads", "acct-1", external_id, f"Campaign {external_id}", channel, currency)


def _row(campaign: str, day: date, spend: str, **extra: Any) -> dict[str, Any]:
    return {"campaign_id": campaign, "date": day.isoformat(), "spend": spend, "impressions": 1000,
            "clicks": 10, "currency": "USD", **extra}  # fmt: skip


def _ledger(days: int = 3) -> Ledger:
    platform = LedgerPlatform("meta_ads", [_campaign("c1", "social"), _campaign("c2", "video")])
    store = LedgerStore()
    for k in range(days):
        d = DAY0 + timedelta(days=k)
        platform.rows += [_row("c1", d, f"{100 + k}.25"), _row("c2", d, f"{50 + k}.10")]
        store.rows.append({"date": d.isoformat(), "revenue": f"{1000 + k}.99", "currency": "USD"})
    return Ledger({"meta_ads": platform}, store)


def _ingest(engine: Engine, ledger: Ledger, days: int = 3, now: datetime = NOW) -> Any:
    with session_scope(engine) as session:
        return run_ingest(session, ledger, start=DAY0, end=DAY0 + timedelta(days=days - 1), now=now)


def _count(engine: Engine, model: type[Any]) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_good_rows_land_with_provenance_to_the_raw_rows(migrated_engine: Engine) -> None:
    ledger = _ledger()
    report = _ingest(migrated_engine, ledger)
    assert [b.status for b in report.batches] == ["succeeded", "succeeded"]
    assert report.total("landed") == 9 and report.total("quarantined") == 0
    with session_scope(migrated_engine) as session:
        spend = session.scalar(select(func.sum(DailyMetric.spend)))
        assert spend == Decimal("303.75") + Decimal("153.30")
        metric = session.scalars(select(DailyMetric).order_by(DailyMetric.id)).first()
        assert metric is not None
        raw = session.get(RawMetric, metric.raw_metric_id)
        assert raw is not None and raw.payload == ledger.platforms["meta_ads"].rows[0]
        assert raw.payload_hash == payload_hash(ledger.platforms["meta_ads"].rows[0]) and raw.version == 1
        table = daily_table(session, start=DAY0, end=DAY0 + timedelta(days=2))
        assert list(table.columns) == ["date", "revenue", "social", "video"]
        assert table["revenue"].tolist() == [1000.99, 1001.99, 1002.99]
        assert table["social"].tolist() == [100.25, 101.25, 102.25]


def test_rerunning_the_same_range_stores_nothing_new(migrated_engine: Engine) -> None:
    ledger = _ledger()
    _ingest(migrated_engine, ledger)
    raw_before = _count(migrated_engine, RawMetric)
    report = _ingest(migrated_engine, ledger, now=NOW + timedelta(days=1))
    assert report.total("raw_stored") == 0 and report.total("landed") == 0 and report.total("updated") == 0
    assert report.total("unchanged") == 9
    assert _count(migrated_engine, RawMetric) == raw_before
    assert _count(migrated_engine, DailyMetric) == 6 and _count(migrated_engine, DailyRevenue) == 3


def test_a_late_correction_is_a_new_version_that_updates_the_clean_row(migrated_engine: Engine) -> None:
    ledger = _ledger()
    _ingest(migrated_engine, ledger)
    ledger.platforms["meta_ads"].rows[0]["spend"] = "99.75"  # the platform restates c1's first day
    ledger.revenue.rows[1]["revenue"] = "1500.00"
    report = _ingest(migrated_engine, ledger, now=NOW + timedelta(days=1))
    assert report.total("updated") == 2 and report.total("raw_stored") == 2 and report.total("landed") == 0
    with session_scope(migrated_engine) as session:
        fixes = session.scalars(select(MetricCorrection).order_by(MetricCorrection.id)).all()
        assert [f.old_values for f in fixes] == [{"spend": "100.25"}, {"revenue": "1001.99"}]
        assert [f.new_values for f in fixes] == [{"spend": "99.75"}, {"revenue": "1500.00"}]
        metric = session.get(DailyMetric, fixes[0].daily_metric_id)
        assert metric is not None and metric.spend == Decimal("99.75") and metric.version == 2
        assert metric.raw_metric_id == fixes[0].new_raw_metric_id != fixes[0].old_raw_metric_id
        versions = session.scalars(
            select(RawMetric.version).where(RawMetric.natural_key == "meta_ads|acct-1|c1|2025-03-03")
        ).all()
        assert sorted(versions) == [1, 2]
        assert session.scalars(
            select(DailyRevenue.revenue).where(DailyRevenue.day == DAY0 + timedelta(1))
        ).one() == (Decimal("1500.00"))


def test_every_kind_of_bad_row_is_quarantined_and_good_rows_still_land(migrated_engine: Engine) -> None:
    ledger = _ledger(days=5)
    platform = ledger.platforms["meta_ads"]
    d = [DAY0 + timedelta(days=k) for k in range(5)]
    platform.rows = [
        _row("c1", d[0], "10.00"),
        _row("c2", d[0], "-5.00"),  # negative
        _row("c1", d[1], "ten"),  # non-numeric
        _row("c2", d[1], "NaN"),  # NaN
        {k: v for k, v in _row("c1", d[2], "7.00").items() if k != "clicks"},  # missing field
        _row("c2", d[2], "8.00", spend_v2="8.00"),  # schema drift: unknown key
        _row("c1", d[3], "9.00"),
        _row("c1", d[3], "9.00"),  # exact duplicate: first lands
        _row("c2", d[3], "1.00"),
        _row("c2", d[3], "2.00"),  # conflicting duplicates: none lands
        _row("c9", d[3], "3.00"),  # a campaign nobody listed
        _row("c1", d[4], "6.00"),
        {**_row("c2", d[4], "4.00"), "currency": "EUR"},  # the campaign is in USD
    ]
    report = _ingest(migrated_engine, ledger, days=5)
    batch = report.batches[0]
    assert batch.status == "partial"
    reasons = {(q.natural_key, q.field): q.reason for q in batch.quarantine}
    text = "\n".join(f"{k} {f}: {r}" for (k, f), r in reasons.items())
    assert "is not a number: 'ten'" in text
    assert "`spend` is not finite: 'NaN'" in text
    assert "`clicks`" in text and "missing" in text
    assert "unknown key(s) `spend_v2`" in text
    assert "duplicate: meta_ads|acct-1|c1|2025-03-06 came 2 times" in text
    assert text.count("conflicting duplicates: meta_ads|acct-1|c2|2025-03-06") == 1
    assert "unknown campaign c9" in text
    assert "currency EUR differs from the campaign's USD" in text
    assert batch.quarantined == 10
    with session_scope(migrated_engine) as session:
        landed = session.execute(select(DailyMetric.day, DailyMetric.spend).order_by(DailyMetric.day)).all()
        assert landed == [(d[0], Decimal("10.00")), (d[3], Decimal("9.00")), (d[4], Decimal("6.00"))]
        assert session.scalar(select(func.count()).select_from(QuarantinedRow)) == 10
        assert _count(migrated_engine, RawMetric) == len(platform.rows) + 5
        stored = session.scalars(select(IngestBatch).where(IngestBatch.source == "meta_ads")).one()
        assert stored.quarantined == 10 and stored.status == "partial"
    # days whose only rows could not be read are reported as missing too (the quarantine says why)
    assert batch.missing_days == {
        "campaign c1": ["2025-03-04..2025-03-05"],
        "campaign c2": ["2025-03-03..2025-03-04"],
    }


def test_a_campaign_that_changes_currency_is_held_back(migrated_engine: Engine) -> None:
    ledger = _ledger(days=2)
    _ingest(migrated_engine, ledger, days=1)
    platform = ledger.platforms["meta_ads"]
    platform.campaigns[0] = _campaign("c1", "social", currency="EUR")
    for row in platform.rows:
        if row["campaign_id"] == "c1":
            row["currency"] = "EUR"
    report = _ingest(migrated_engine, ledger, days=2)
    batch = report.batches[0]
    assert any("now reports currency EUR but was USD" in e["message"] for e in batch.errors)
    reasons = [q.reason for q in batch.quarantine]
    assert reasons == ["currency EUR differs from the campaign's USD"] * 2
    assert batch.landed == 1  # c2's second day


def test_missing_days_are_reported_not_invented(migrated_engine: Engine) -> None:
    ledger = _ledger(days=5)
    ledger.platforms["meta_ads"].rows = [
        r
        for r in ledger.platforms["meta_ads"].rows
        if not (r["campaign_id"] == "c2" and r["date"] in ("2025-03-04", "2025-03-05"))
    ]
    del ledger.revenue.rows[4]
    report = _ingest(migrated_engine, ledger, days=5)
    assert report.batches[0].missing_days == {"campaign c2": ["2025-03-04..2025-03-05"]}
    assert report.batches[1].missing_days == {"revenue": ["2025-03-07"]}
    assert "no readable row for campaign c2 on 2025-03-04..2025-03-05" in report.summary()
    with (
        session_scope(migrated_engine) as session,
        pytest.raises(InputError, match="no revenue landed for 1 day"),
    ):
        daily_table(session, start=DAY0, end=DAY0 + timedelta(days=4))


def test_a_failing_source_is_recorded_and_the_others_land(migrated_engine: Engine) -> None:
    ledger = _ledger()
    broken = LedgerPlatform(
        "google_ads",
        [],
        failure=TransientError("gave up after 5 attempts", platform="google_ads", status=503),
    )
    ledger.platforms["google_ads"] = broken
    report = _ingest(migrated_engine, ledger)
    assert report.failed_sources == ["google_ads"]
    assert report.total("landed") == 9
    with session_scope(migrated_engine) as session:
        failed = session.scalars(select(IngestBatch).where(IngestBatch.source == "google_ads")).one()
        assert failed.status == "failed" and "status=503" in failed.errors[0]["message"]
        assert failed.finished_at == NOW


def test_rules_in_isolation() -> None:
    assert key_paths({"a": 1, "b": {"c": 2, "d": {"e": 3}}, "f": []}) == {"a", "b.c", "b.d.e", "f"}
    assert day_ranges([date(2025, 1, 3), date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 5)]) == [
        "2025-01-01..2025-01-03",
        "2025-01-05",
    ]
    assert storable({"x": [float("nan"), float("inf")], "y": -float("inf")}) == {
        "x": ["NaN", "Infinity"],
        "y": "-Infinity",
    }
    a, b = frozenset({"x", "y"}), frozenset({"x", "z"})
    assert expected_schema([a, a, b], None) == (a, None)
    assert expected_schema([b, b, a], ["x", "y"])[0] == b  # most rows moved: a new schema, with a note
    assert "added ['z']" in str(expected_schema([b, b, a], ["x", "y"])[1])
    assert expected_schema([b, a, a], ["x", "y"]) == (a, None)
    assert payload_hash({"b": 1, "a": 2}) == payload_hash({"a": 2, "b": 1})


def test_store_reads_for_the_later_parts(migrated_engine: Engine) -> None:
    from budgetloop.store.metrics import campaign_daily, campaigns, channels, last_complete_day

    ledger = _ledger(days=3)
    del ledger.revenue.rows[2]
    _ingest(migrated_engine, ledger, days=3)
    with session_scope(migrated_engine) as session:
        assert [(c.external_id, c.channel, c.account_external_id) for c in campaigns(session)] == [
            ("c1", "social", "acct-1"),
            ("c2", "video", "acct-1"),
        ]
        assert channels(session) == ["social", "video"]
        assert last_complete_day(session) == DAY0 + timedelta(days=1)
        rows = campaign_daily(session, start=DAY0, end=DAY0)
        assert rows[["campaign", "channel", "spend", "impressions"]].values.tolist() == [
            ["c1", "social", 100.25, 1000],
            ["c2", "video", 50.10, 1000],
        ]
        table = daily_table(
            session, start=DAY0, end=DAY0 + timedelta(days=2), channel_names=["video", "tv"], allow_gaps=True
        )
        assert list(table.columns) == ["date", "revenue", "video", "tv"]
        assert table["tv"].tolist() == [0.0, 0.0, 0.0]  # a channel without campaigns spent nothing
        assert math.isnan(table["revenue"].iloc[2])
        with pytest.raises(InputError, match=r"ends \(2025-03-02\) before it starts"):
            daily_table(session, start=DAY0, end=DAY0 - timedelta(days=1))


@pytest.mark.postgres
def test_a_running_ingest_holds_the_lock_on_postgresql(postgres_url: str) -> None:
    from sqlalchemy import text

    from agents.ingest import INGEST_LOCK_KEY
    from budgetloop.db.session import make_engine, upgrade_database

    upgrade_database(postgres_url)
    engine = make_engine(postgres_url)
    try:
        with session_scope(engine) as session:
            run_ingest(session, _ledger(), start=DAY0, end=DAY0, now=NOW)
            with engine.connect() as other:
                taken = other.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": INGEST_LOCK_KEY})
                assert taken.scalar_one() is False  # a second ingest would wait for this one to commit
        with engine.connect() as other:
            assert other.execute(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": INGEST_LOCK_KEY}
            ).scalar_one()
    finally:
        engine.dispose()


def test_non_finite_numbers_are_kept_raw_and_never_land(migrated_engine: Engine) -> None:
    """JSON (and PostgreSQL's JSONB) has no NaN or Infinity: the raw row keeps them as strings."""
    from agents.ingest import _check_metric
    from budgetloop.store.metrics import CampaignRecord

    ledger = _ledger(days=1)
    ledger.platforms["meta_ads"].rows[0]["spend"] = float("nan")
    ledger.platforms["meta_ads"].rows[1]["impressions"] = float("inf")
    report = _ingest(migrated_engine, ledger, days=1)
    assert sorted(q.field or "" for q in report.quarantine) == ["impressions", "spend"]
    with session_scope(migrated_engine) as session:
        payloads = session.scalars(select(RawMetric.payload).where(RawMetric.source == "meta_ads")).all()
        assert sorted(str(p.get("spend")) + str(p.get("impressions")) for p in payloads) == [
            "50.10Infinity",
            "NaN1000",
        ]
        assert session.scalar(select(func.count()).select_from(DailyMetric)) == 0
    # our own check, behind the connector's: a parser that let a non-finite value through
    campaign = CampaignRecord(1, "meta_ads", "acct-1", "c1", "C1", "social", "USD")
    row = MetricRow("meta_ads", "acct-1", "c1", DAY0, float("inf"), 1, 1, "USD")
    assert _check_metric(row, campaign) == ("spend", "`spend` is not finite: inf")
    negative = MetricRow("meta_ads", "acct-1", "c1", DAY0, 1.0, 1, -1, "USD")
    assert _check_metric(negative, campaign) == ("clicks", "`clicks` is negative: -1.0")


def test_a_pull_whose_rows_were_all_quarantined_does_not_move_the_schema_baseline(
    migrated_engine: Engine,
) -> None:
    ledger = _ledger(days=1)
    platform = ledger.platforms["meta_ads"]
    _ingest(migrated_engine, ledger, days=1)  # the baseline: the clean rows' keys
    # One bad pull: every row has a new key (and is quarantined for its currency, so none lands) ...
    platform.rows = [{**_row(c, DAY0, "11.00", spend_v2="11.00"), "currency": "EUR"} for c in ("c1", "c2")]
    bad = _ingest(migrated_engine, ledger, days=1, now=NOW + timedelta(days=1)).batches[0]
    assert bad.quarantined == 2 and bad.landed == bad.updated == 0
    # ... and the next clean pull is checked against the last accepted schema, not the quarantined one.
    platform.rows = [_row("c1", DAY0, "12.00"), _row("c2", DAY0, "13.00")]
    good = _ingest(migrated_engine, ledger, days=1, now=NOW + timedelta(days=2)).batches[0]
    assert good.status == "succeeded" and good.updated == 2, good
    assert not [e for e in good.errors if e["kind"] == "schema"], good.errors
    # Rows the parser could not read do not vote either: they are quarantined against the baseline.
    platform.rows = [{k: v for k, v in _row(c, DAY0, "14.00").items() if k != "clicks"} for c in ("c1", "c2")]
    unread = _ingest(migrated_engine, ledger, days=1, now=NOW + timedelta(days=3)).batches[0]
    assert unread.quarantined == 2 and not [e for e in unread.errors if e["kind"] == "schema"]
    with session_scope(migrated_engine) as session:
        schemas = session.scalars(
            select(IngestBatch.schema_keys).where(IngestBatch.source == "meta_ads").order_by(IngestBatch.id)
        ).all()
    baseline = sorted(key_paths(_row("c1", DAY0, "1.00")))
    assert schemas == [baseline, None, baseline, None]
