"""Ad accounts, campaigns, ingest batches, the append-only raw table and the clean daily tables.

Data moves one way: every record a connector returns lands untouched in ``raw_metrics`` (never
updated or deleted: database triggers refuse it), then the validated, typed value lands in
``daily_metrics`` (one row per campaign and day) or ``daily_revenue`` (one row per day), each
pointing at the raw row it came from. A row that fails validation goes to ``quarantined_rows``
with the reason; a late restatement of a day already landed is a new raw *version*, updates the
clean row and is recorded in ``metric_corrections``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from budgetloop.db.base import Base

# Integer on SQLite (only INTEGER PRIMARY KEY auto-increments there), BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Money = Numeric(18, 2)

RAW_APPEND_ONLY_MESSAGE = "raw_metrics is append-only: store a new version instead of changing a row"


class AdAccount(Base):
    __tablename__ = "ad_accounts"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime]


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[int] = mapped_column(ForeignKey("ad_accounts.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(64), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class IngestBatch(Base):
    """One pull of one source over a requested range; ``status``: running, succeeded, partial, failed."""

    __tablename__ = "ingest_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(32), index=True)
    requested_start: Mapped[date] = mapped_column(Date)
    requested_end: Mapped[date] = mapped_column(Date)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    pulled: Mapped[int] = mapped_column(Integer, default=0)
    raw_stored: Mapped[int] = mapped_column(Integer, default=0)
    landed: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[Any]]
    missing_days: Mapped[dict[str, Any]]
    schema_keys: Mapped[list[Any] | None]


class RawMetric(Base):
    """A record exactly as a source sent it. Append-only: triggers refuse UPDATE and DELETE.

    ``natural_key`` identifies what the record is about (``platform|account|campaign|day`` or
    ``store|day``; ``unkeyed|<hash>`` when the record is too broken to say); ``version`` counts the
    distinct payloads seen for that key. Non-finite numbers, which JSON cannot hold, are stored as
    the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``; ``payload_hash`` is taken before that.
    """

    __tablename__ = "raw_metrics"
    __table_args__ = (
        Index("ix_raw_metrics_source_natural_key", "source", "natural_key"),
        Index("ix_raw_metrics_source_day", "source", "day"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("ingest_batches.id"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime]
    natural_key: Mapped[str] = mapped_column(String(255))
    day: Mapped[date | None] = mapped_column(Date)
    payload: Mapped[dict[str, Any]]
    payload_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)


class DailyMetric(Base):
    """Clean: one row per campaign and day, in the campaign's currency."""

    __tablename__ = "daily_metrics"
    __table_args__ = (
        UniqueConstraint("campaign_id", "day"),
        Index("ix_daily_metrics_day", "day"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    day: Mapped[date] = mapped_column(Date)
    spend: Mapped[Decimal] = mapped_column(Money)
    impressions: Mapped[int] = mapped_column(BigInteger)
    clicks: Mapped[int] = mapped_column(BigInteger)
    attributed_revenue: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    raw_metric_id: Mapped[int] = mapped_column(ForeignKey("raw_metrics.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class DailyRevenue(Base):
    """Clean: the business's total revenue for one day, from the revenue source."""

    __tablename__ = "daily_revenue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, unique=True)
    revenue: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    source: Mapped[str] = mapped_column(String(32))
    raw_metric_id: Mapped[int] = mapped_column(ForeignKey("raw_metrics.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class QuarantinedRow(Base):
    """A raw row that did not land: which one, which field, and why."""

    __tablename__ = "quarantined_rows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("ingest_batches.id"), index=True)
    raw_metric_id: Mapped[int] = mapped_column(ForeignKey("raw_metrics.id"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    natural_key: Mapped[str] = mapped_column(String(255))
    field: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class MetricCorrection(Base):
    """A late restatement of a clean row: the values before and after, and both raw rows."""

    __tablename__ = "metric_corrections"
    __table_args__ = (
        CheckConstraint(
            "(daily_metric_id IS NULL) <> (daily_revenue_id IS NULL)",
            name="one_clean_row",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("ingest_batches.id"), index=True)
    daily_metric_id: Mapped[int | None] = mapped_column(ForeignKey("daily_metrics.id"), index=True)
    daily_revenue_id: Mapped[int | None] = mapped_column(ForeignKey("daily_revenue.id"), index=True)
    old_values: Mapped[dict[str, Any]]
    new_values: Mapped[dict[str, Any]]
    old_raw_metric_id: Mapped[int] = mapped_column(ForeignKey("raw_metrics.id"))
    new_raw_metric_id: Mapped[int] = mapped_column(ForeignKey("raw_metrics.id"))
    corrected_at: Mapped[datetime]
