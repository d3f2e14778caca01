"""Campaigns and daily metrics: the reads later parts use, and the bulk writes ingestion uses.

Reads (for the MMM, the planner, the monitor):

- :func:`campaigns` -> every known campaign, with its channel.
- :func:`daily_table` -> one row per day: the business's revenue and the spend of each channel,
  the shape ``budgetloop fit`` takes.
- :func:`campaign_daily` -> the clean rows per campaign and day (spend, impressions, clicks).
- :func:`last_complete_day` -> the latest day with revenue and spend landed.

Writes are bulk statements (one ``executemany`` per table and pull), never row-by-row ORM adds, so
two years of twenty campaigns land in seconds. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pandas as pd
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from budgetloop.db.metrics import (
    AdAccount,
    Campaign,
    DailyMetric,
    DailyRevenue,
    IngestBatch,
    RawMetric,
)
from budgetloop.errors import InputError

# Keep IN (...) lists well below SQLite's and psycopg's parameter limits.
_CHUNK = 500


@dataclass(frozen=True)
class CampaignRecord:
    id: int
    platform: str
    account_external_id: str
    external_id: str
    name: str
    channel: str
    currency: str


@dataclass(frozen=True)
class LatestRaw:
    """The newest version stored for one natural key: its number, and the rows and hashes at it."""

    version: int
    raw_ids: tuple[int, ...]
    hashes: frozenset[str]


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def to_money(value: float) -> Decimal:
    """A float in currency units as the exact cent amount stored in ``Numeric(18, 2)``."""
    return Decimal(f"{value:.2f}")


def from_money(value: Decimal | None) -> float | None:
    return None if value is None else round(float(value), 2)


# --- reads ---------------------------------------------------------------------------------------


def campaigns(session: Session, *, platform: str | None = None) -> list[CampaignRecord]:
    """Every known campaign (optionally of one platform), ordered by platform and external id."""
    stmt = select(Campaign, AdAccount.external_id).join(AdAccount, AdAccount.id == Campaign.account_id)
    if platform is not None:
        stmt = stmt.where(Campaign.platform == platform)
    stmt = stmt.order_by(Campaign.platform, Campaign.external_id)
    return [
        CampaignRecord(c.id, c.platform, account, c.external_id, c.name, c.channel, c.currency)
        for c, account in session.execute(stmt)
    ]


def channels(session: Session) -> list[str]:
    """The channels of the known campaigns, sorted."""
    return sorted(session.scalars(select(Campaign.channel).distinct()))


def campaign_daily(session: Session, *, start: date, end: date) -> pd.DataFrame:
    """Clean rows per campaign and day in ``start``..``end``: date, platform, campaign, channel, values."""
    stmt = (
        select(
            DailyMetric.day,
            Campaign.platform,
            Campaign.external_id,
            Campaign.channel,
            DailyMetric.spend,
            DailyMetric.impressions,
            DailyMetric.clicks,
            DailyMetric.attributed_revenue,
            DailyMetric.currency,
        )
        .join(Campaign, Campaign.id == DailyMetric.campaign_id)
        .where(DailyMetric.day >= start, DailyMetric.day <= end)
        .order_by(DailyMetric.day, Campaign.platform, Campaign.external_id)
    )
    columns = ["date", "platform", "campaign", "channel", "spend", "impressions", "clicks",
               "attributed_revenue", "currency"]  # fmt: skip
    rows = [
        (d, p, c, ch, from_money(s), int(i), int(k), from_money(a), cur)
        for d, p, c, ch, s, i, k, a, cur in session.execute(stmt)
    ]
    return pd.DataFrame(rows, columns=columns)


def daily_table(
    session: Session,
    *,
    start: date,
    end: date,
    channel_names: Sequence[str] | None = None,
    allow_gaps: bool = False,
) -> pd.DataFrame:
    """One row per day in ``start``..``end``: ``date``, ``revenue``, then the spend of each channel.

    A channel with no clean row on a day spent nothing that day (platforms omit empty days). A day
    without revenue is a gap the model cannot fit over: an :class:`InputError` names the days,
    unless ``allow_gaps`` (then ``revenue`` is NaN there). Amounts are floats rounded to the cent.
    """
    if end < start:
        raise InputError(
            f"the range ends ({end}) before it starts ({start})", key="end", fix="swap the dates"
        )
    names = list(channel_names) if channel_names is not None else channels(session)
    days = pd.date_range(start, end, freq="D")
    spend_stmt = (
        select(DailyMetric.day, Campaign.channel, func.sum(DailyMetric.spend))
        .join(Campaign, Campaign.id == DailyMetric.campaign_id)
        .where(DailyMetric.day >= start, DailyMetric.day <= end)
        .group_by(DailyMetric.day, Campaign.channel)
    )
    spend = pd.DataFrame(
        [(pd.Timestamp(day), channel, float(total)) for day, channel, total in session.execute(spend_stmt)],
        columns=["date", "channel", "spend"],
    )
    table = (
        spend.pivot_table(index="date", columns="channel", values="spend", aggfunc="sum")
        .reindex(index=days, columns=names)
        .fillna(0.0)
        .round(2)
    )
    revenue_stmt = select(DailyRevenue.day, DailyRevenue.revenue).where(
        DailyRevenue.day >= start, DailyRevenue.day <= end
    )
    found = {pd.Timestamp(day): round(float(amount), 2) for day, amount in session.execute(revenue_stmt)}
    revenue = pd.Series([found.get(d, float("nan")) for d in days], index=days, dtype=float)
    missing = [d.date().isoformat() for d in days[revenue.isna().to_numpy()]]
    if missing and not allow_gaps:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(
            f"no revenue landed for {len(missing)} day(s) between {start} and {end}: {shown}",
            key="daily_revenue",
            fix=f"run `budgetloop ingest --since {missing[0]}` or choose a range with revenue on every day",
        )
    table.insert(0, "revenue", revenue)
    table.index.name = "date"
    table.columns.name = None
    return table.reset_index()


def last_complete_day(session: Session) -> date | None:
    """The latest day with both revenue and at least one campaign's spend landed, or None."""
    revenue_day: date | None = session.scalar(select(func.max(DailyRevenue.day)))
    spend_day: date | None = session.scalar(select(func.max(DailyMetric.day)))
    if revenue_day is None or spend_day is None:
        return None
    return min(revenue_day, spend_day)


def first_complete_day(session: Session) -> date | None:
    """The earliest day with both revenue and at least one campaign's spend landed, or None."""
    revenue_day: date | None = session.scalar(select(func.min(DailyRevenue.day)))
    spend_day: date | None = session.scalar(select(func.min(DailyMetric.day)))
    if revenue_day is None or spend_day is None:
        return None
    return max(revenue_day, spend_day)


# --- writes for ingestion -------------------------------------------------------------------------


def upsert_campaign(
    session: Session,
    *,
    platform: str,
    account_external_id: str,
    external_id: str,
    name: str,
    channel: str,
    currency: str,
    now: datetime,
) -> tuple[Campaign, str | None]:
    """Create or refresh one campaign (name, channel). Returns it and a problem, if any.

    The currency is never changed in place: money in two currencies under one campaign would add
    up to nonsense. A different currency is returned as a problem for the caller to report.
    """
    account = session.scalar(
        select(AdAccount).where(AdAccount.platform == platform, AdAccount.external_id == account_external_id)
    )
    if account is None:
        account = AdAccount(
            platform=platform, external_id=account_external_id, currency=currency, created_at=now
        )
        session.add(account)
        session.flush()
    campaign = session.scalar(
        select(Campaign).where(Campaign.platform == platform, Campaign.external_id == external_id)
    )
    if campaign is None:
        campaign = Campaign(
            platform=platform,
            account_id=account.id,
            external_id=external_id,
            name=name,
            channel=channel,
            currency=currency,
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
        session.flush()
        return campaign, None
    if (campaign.name, campaign.channel, campaign.account_id) != (name, channel, account.id):
        campaign.name, campaign.channel, campaign.account_id = name, channel, account.id
        campaign.updated_at = now
    problem = None
    if campaign.currency != currency:
        problem = (
            f"campaign {platform}/{external_id} now reports currency {currency} but was {campaign.currency}; "
            f"its rows in {currency} are quarantined until the currency is settled"
        )
    return campaign, problem


def latest_raw(session: Session, *, source: str, keys: Mapping[str, date | None]) -> dict[str, LatestRaw]:
    """For each natural key already stored for ``source``: its newest version and that version's rows.

    ``keys`` maps each key to the day it is about (None when unknown). Dated keys are looked up
    with one range scan over ``(source, day)``; undated ones by key, in chunks.
    """
    columns = (RawMetric.natural_key, RawMetric.version, RawMetric.id, RawMetric.payload_hash)
    statements = []
    days = [d for d in keys.values() if d is not None]
    if days:
        statements.append(
            select(*columns).where(
                RawMetric.source == source, RawMetric.day >= min(days), RawMetric.day <= max(days)
            )
        )
    undated = sorted(k for k, d in keys.items() if d is None)
    statements += [
        select(*columns).where(RawMetric.source == source, RawMetric.natural_key.in_(chunk))
        for chunk in _chunks(undated)
    ]
    found: dict[str, list[tuple[int, int, str]]] = {}
    for stmt in statements:
        for key, version, raw_id, digest in session.execute(stmt):
            if key in keys:
                found.setdefault(key, []).append((version, raw_id, digest))
    latest: dict[str, LatestRaw] = {}
    for key, rows in found.items():
        top = max(v for v, _, _ in rows)
        at_top = sorted((raw_id, digest) for v, raw_id, digest in rows if v == top)
        latest[key] = LatestRaw(top, tuple(r for r, _ in at_top), frozenset(d for _, d in at_top))
    return latest


def insert_raw(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Append raw rows of one batch; returns their ids in the order given.

    A plain executemany (the fastest bulk path on both engines), then the ids are read back by
    batch, natural key, version and hash. Rows equal in all four are the same payload pulled twice,
    so they take their ids in order.
    """
    if not rows:
        return []
    batches = {row["batch_id"] for row in rows}
    session.execute(insert(cast(Table, RawMetric.__table__)), list(rows))
    stmt = (
        select(RawMetric.id, RawMetric.natural_key, RawMetric.version, RawMetric.payload_hash)
        .where(RawMetric.batch_id.in_(sorted(batches)))
        .order_by(RawMetric.id)
    )
    ids: dict[tuple[str, int, str], list[int]] = {}
    for raw_id, key, version, digest in session.execute(stmt):
        ids.setdefault((key, version, digest), []).append(int(raw_id))
    out = []
    for row in rows:
        same = ids[(row["natural_key"], row["version"], row["payload_hash"])]
        out.append(same.pop(0))
    return out


def clean_metrics(
    session: Session, *, campaign_ids: Sequence[int], start: date, end: date
) -> dict[tuple[int, date], DailyMetric]:
    """The clean rows of these campaigns in ``start``..``end``, keyed by (campaign id, day)."""
    out: dict[tuple[int, date], DailyMetric] = {}
    for chunk in _chunks(sorted(set(campaign_ids))):
        stmt = select(DailyMetric).where(
            DailyMetric.campaign_id.in_(chunk), DailyMetric.day >= start, DailyMetric.day <= end
        )
        for row in session.scalars(stmt):
            out[(row.campaign_id, row.day)] = row
    return out


def clean_revenue(session: Session, *, start: date, end: date) -> dict[date, DailyRevenue]:
    stmt = select(DailyRevenue).where(DailyRevenue.day >= start, DailyRevenue.day <= end)
    return {row.day: row for row in session.scalars(stmt)}


def revenue_currency(session: Session) -> str | None:
    """The currency revenue has landed in so far (that of the latest day), or None."""
    found: str | None = session.scalar(
        select(DailyRevenue.currency).order_by(DailyRevenue.day.desc()).limit(1)
    )
    return found


def previous_schema(session: Session, *, source: str) -> list[str] | None:
    """The record keys the last batch of ``source`` that recorded a schema saw."""
    stmt = (
        select(IngestBatch.schema_keys)
        .where(IngestBatch.source == source, IngestBatch.schema_keys.is_not(None))
        .order_by(IngestBatch.id.desc())
        .limit(1)
    )
    keys = session.scalar(stmt)
    return list(keys) if keys is not None else None


def insert_rows(session: Session, model: type[Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """One bulk INSERT (executemany, Core: no ORM bookkeeping) of plain dicts into ``model``'s table."""
    if rows:
        session.execute(insert(model.__table__), list(rows))


def update_rows(session: Session, model: type[Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """One bulk UPDATE by primary key (each dict carries ``id``)."""
    if rows:
        session.execute(update(model), list(rows))


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


__all__ = [
    "CampaignRecord",
    "LatestRaw",
    "campaign_daily",
    "campaigns",
    "channels",
    "clean_metrics",
    "clean_revenue",
    "daily_table",
    "days_between",
    "from_money",
    "insert_raw",
    "insert_rows",
    "last_complete_day",
    "latest_raw",
    "previous_schema",
    "revenue_currency",
    "to_money",
    "update_rows",
    "upsert_campaign",
]
