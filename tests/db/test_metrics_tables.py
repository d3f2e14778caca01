"""raw_metrics is append-only in the database itself, and the clean tables hold their keys."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine, delete, insert, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from budgetloop.db.metrics import (
    RAW_APPEND_ONLY_MESSAGE,
    AdAccount,
    Campaign,
    DailyMetric,
    IngestBatch,
    MetricCorrection,
    RawMetric,
)
from budgetloop.db.session import session_scope

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _seed(engine: Engine) -> tuple[int, int, int]:
    with session_scope(engine) as session:
        batch = IngestBatch(
            source="google_ads",
            requested_start=date(2025, 1, 1),
            requested_end=date(2025, 1, 1),
            started_at=NOW,
            status="running",
            pulled=0,
            raw_stored=0,
            landed=0,
            updated=0,
            quarantined=0,
            unchanged=0,
            errors=[],
            missing_days={},
        )
        account = AdAccount(platform="google_ads", external_id="111", currency="USD", created_at=NOW)
        session.add_all([batch, account])
        session.flush()
        campaign = Campaign(
            platform="google_ads",
            account_id=account.id,
            external_id="c1",
            name="Search",
            channel="search",
            currency="USD",
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(campaign)
        session.flush()
        raw_id = session.execute(
            insert(RawMetric).returning(RawMetric.id),
            [
                {
                    "batch_id": batch.id,
                    "source": "google_ads",
                    "received_at": NOW,
                    "natural_key": "google_ads|111|c1|2025-01-01",
                    "day": date(2025, 1, 1),
                    "payload": {"cost_micros": "1230000"},
                    "payload_hash": "0" * 64,
                    "version": 1,
                }
            ],
        ).scalar_one()
        return batch.id, campaign.id, raw_id


def test_raw_rows_cannot_be_updated_or_deleted(migrated_engine: Engine) -> None:
    _, _, raw_id = _seed(migrated_engine)
    for statement in (
        update(RawMetric).where(RawMetric.id == raw_id).values(payload_hash="f" * 64),
        delete(RawMetric).where(RawMetric.id == raw_id),
    ):
        with (
            pytest.raises((IntegrityError, DBAPIError), match="append-only"),
            migrated_engine.begin() as conn,
        ):
            conn.execute(statement)
    with migrated_engine.connect() as conn:
        assert conn.execute(text("select count(*) from raw_metrics")).scalar_one() == 1
    assert "append-only" in RAW_APPEND_ONLY_MESSAGE


@pytest.mark.postgres
def test_raw_table_cannot_be_truncated_on_postgresql(postgres_url: str) -> None:
    from budgetloop.db.session import make_engine, upgrade_database

    upgrade_database(postgres_url)
    engine = make_engine(postgres_url)
    try:
        _seed(engine)
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("TRUNCATE raw_metrics CASCADE"))
    finally:
        engine.dispose()


def test_one_clean_row_per_campaign_and_day(migrated_engine: Engine) -> None:
    _, campaign_id, raw_id = _seed(migrated_engine)
    row = {
        "campaign_id": campaign_id,
        "day": date(2025, 1, 1),
        "spend": Decimal("1.23"),
        "impressions": 10,
        "clicks": 1,
        "currency": "USD",
        "raw_metric_id": raw_id,
        "version": 1,
        "updated_at": NOW,
    }
    with session_scope(migrated_engine) as session:
        session.execute(insert(DailyMetric), [row])
    with pytest.raises(IntegrityError), session_scope(migrated_engine) as session:
        session.execute(insert(DailyMetric), [row])
    with session_scope(migrated_engine) as session:
        stored = session.query(DailyMetric).one()
        assert stored.spend == Decimal("1.23")


def test_a_correction_points_at_exactly_one_clean_row(migrated_engine: Engine) -> None:
    batch_id, _, raw_id = _seed(migrated_engine)
    with pytest.raises(IntegrityError), session_scope(migrated_engine) as session:
        session.execute(
            insert(MetricCorrection),
            [
                {
                    "batch_id": batch_id,
                    "daily_metric_id": None,
                    "daily_revenue_id": None,
                    "old_values": {},
                    "new_values": {},
                    "old_raw_metric_id": raw_id,
                    "new_raw_metric_id": raw_id,
                    "corrected_at": NOW,
                }
            ],
        )


def test_upsert_campaign_refreshes_name_and_channel_but_never_the_currency(migrated_engine: Engine) -> None:
    from budgetloop.store.metrics import campaigns, upsert_campaign

    base = {"platform": "meta_ads", "account_external_id": "act-1", "external_id": "c1", "now": NOW}
    with session_scope(migrated_engine) as session:
        first, problem = upsert_campaign(
            session, name="Prospecting", channel="social", currency="USD", **base
        )
        assert problem is None
        again, problem = upsert_campaign(
            session, name="Prospecting EU", channel="social_eu", currency="EUR", **base
        )
        assert again.id == first.id
        assert problem is not None and "now reports currency EUR but was USD" in problem
        [record] = campaigns(session)
        assert (record.name, record.channel, record.currency) == ("Prospecting EU", "social_eu", "USD")
