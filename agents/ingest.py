"""Daily ingestion: pull every source, keep what came untouched, land only what is valid.

    for each ad platform, then the revenue source (one ingest batch each; the pulls run side by side):
        pull           list_campaigns + pull_daily_metrics(start, end)    a failure fails this batch only
        raw            every record, hashed, keyed, versioned             identical payload: nothing new
        validate       parse (units at the connector edge), then our checks
        land           new clean rows inserted; restated ones updated + a metric_corrections row
        quarantine     bad rows kept with which row, which field and why

A record's *natural key* says what it is about (``platform|account|campaign|day``, ``store|day``).
Re-pulling a key with the same payload stores nothing; a different payload (a platform's late
restatement) is stored as the key's next raw *version* and, when valid, updates the clean row.

Checks, each quarantining the row with its reason: what the connector's parser refuses (negative,
non-numeric, NaN/inf, missing fields, bad dates); values that are not finite or negative after
parsing; schema drift (keys the source's other rows do not have, or lack); the same key more than
once in one pull; a row for a campaign no one listed; a currency other than the campaign's. Days
without a readable row are reported per campaign (``missing_days``), never invented.

Time is an input: ``now`` stamps the batch and the rows; nothing here reads the clock.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import text
from sqlalchemy.orm import Session

from budgetloop.clock import ensure_utc
from budgetloop.db.metrics import (
    DailyMetric,
    DailyRevenue,
    IngestBatch,
    MetricCorrection,
    QuarantinedRow,
)
from budgetloop.errors import InputError
from budgetloop.store import metrics as store
from connectors.base import (
    CampaignInfo,
    Connector,
    MetricRow,
    RawRecord,
    RevenueRow,
    RevenueSource,
    RowRejected,
)


class ConnectorSet(Protocol):
    """What ingestion needs: the ad platforms by name and the business's revenue source."""

    @property
    def platforms(self) -> Mapping[str, Connector]: ...

    @property
    def revenue(self) -> RevenueSource | None: ...


@dataclass(frozen=True)
class Quarantined:
    """One held-back row: its raw id, its key, its place in the pull (1-based), the field and why."""

    source: str
    raw_metric_id: int
    natural_key: str
    row: int
    field: str | None
    reason: str


@dataclass
class BatchReport:
    """What one source's pull did.

    ``status``: succeeded; partial (rows quarantined, days missing or a warning); failed (the pull).
    """

    source: str
    batch_id: int
    status: str = "running"
    pulled: int = 0
    raw_stored: int = 0
    landed: int = 0
    updated: int = 0
    quarantined: int = 0
    unchanged: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    missing_days: dict[str, list[str]] = field(default_factory=dict)
    quarantine: list[Quarantined] = field(default_factory=list)

    def line(self) -> str:
        out = (
            f"{self.source:<14} {self.status:<9} pulled {self.pulled}, landed {self.landed}, "
            f"updated {self.updated}, unchanged {self.unchanged}, quarantined {self.quarantined}"
        )
        if self.missing_days:
            out += f", days missing for {len(self.missing_days)} key(s)"
        return out


@dataclass(frozen=True)
class IngestReport:
    start: date
    end: date
    batches: tuple[BatchReport, ...]

    def total(self, counter: str) -> int:
        return sum(int(getattr(b, counter)) for b in self.batches)

    @property
    def failed_sources(self) -> list[str]:
        return [b.source for b in self.batches if b.status == "failed"]

    @property
    def quarantine(self) -> list[Quarantined]:
        return [q for b in self.batches for q in b.quarantine]

    def summary(self, *, max_reasons: int = 10) -> str:
        lines = [f"ingest {self.start}..{self.end}"] + ["  " + b.line() for b in self.batches]
        for b in self.batches:
            lines += [f"  ! {b.source}: {e['message']}" for e in b.errors]
            for key, ranges in b.missing_days.items():
                lines.append(f"  ? {b.source}: no readable row for {key} on {', '.join(ranges)}")
        shown = self.quarantine[:max_reasons]
        lines += [
            f"  x {q.source} row {q.row} (raw #{q.raw_metric_id}, {q.natural_key}): {q.reason}" for q in shown
        ]
        if len(self.quarantine) > len(shown):
            lines.append(f"  x ... and {len(self.quarantine) - len(shown)} more quarantined row(s)")
        return "\n".join(lines)


# --- records: hash, key, schema -------------------------------------------------------------------


def canonical_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_hash(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def storable(value: Any) -> Any:
    """``value`` with non-finite floats as the strings ``NaN``/``Infinity``/``-Infinity`` (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def key_paths(payload: Mapping[str, Any], prefix: str = "") -> frozenset[str]:
    """The dotted paths of a record's keys (into nested objects; lists are leaves)."""
    out: list[str] = []
    for key, value in payload.items():
        if type(value) is dict and value:
            out.extend(key_paths(value, f"{prefix}{key}."))
        else:
            out.append(f"{prefix}{key}")
    return frozenset(out)


def expected_schema(
    seen: Sequence[frozenset[str]], previous: Sequence[str] | None
) -> tuple[frozenset[str] | None, str | None]:
    """The key set rows of this source should have, and a note when the source changed its schema.

    The previous batch's schema holds unless most of this pull agrees on a different one: then the
    platform changed its report for everyone (a new API version), which is news but not bad rows.
    ``seen`` should hold the rows that could be read (a row its parser refused does not vote), and
    ``previous`` comes from the last batch that landed rows (see :meth:`_SourceRun.finish`).
    """
    before = frozenset(previous) if previous is not None else None
    if not seen:
        return before, None
    modal, count = Counter(seen).most_common(1)[0]
    if before is None or modal == before:
        return modal, None
    if count * 2 > len(seen):
        added, removed = sorted(modal - before), sorted(before - modal)
        return (
            modal,
            f"the source changed its row schema: added {added or 'nothing'}, removed {removed or 'nothing'}",
        )
    return before, None


def drift_reason(keys: frozenset[str], expected: frozenset[str] | None) -> tuple[str, str] | None:
    if expected is None or keys == expected:
        return None
    unknown, missing = sorted(keys - expected), sorted(expected - keys)
    bits = []
    if unknown:
        bits.append("unknown key(s) " + ", ".join(f"`{k}`" for k in unknown))
    if missing:
        bits.append("missing key(s) " + ", ".join(f"`{k}`" for k in missing))
    return (missing or unknown)[0], "schema drift: " + "; ".join(bits) + " (vs. this source's other rows)"


def day_ranges(days: Iterable[date]) -> list[str]:
    """``["2025-01-03", "2025-01-05..2025-01-07"]`` for a set of days."""
    ordered = sorted(set(days))
    out: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and (ordered[j + 1] - ordered[j]).days == 1:
            j += 1
        out.append(ordered[i].isoformat() if i == j else f"{ordered[i]}..{ordered[j]}")
        i = j + 1
    return out


_T = TypeVar("_T")


@dataclass
class _Pulled:
    """One record in flight: as it came, its parse, its key, and (once stored) its raw id."""

    record: RawRecord
    stored: dict[str, Any]
    digest: str
    keys: frozenset[str]
    parsed: MetricRow | RevenueRow | None
    rejected: RowRejected | None
    natural_key: str
    day: date | None
    position: int
    raw_id: int = 0
    version: int = 0


# (the record, its clean row's key, the columns that identify a new clean row, the values)
_Landing = tuple[_Pulled, Any, dict[str, Any], dict[str, Any]]


def _parse(record: RawRecord, parse: Callable[[RawRecord], Any]) -> tuple[Any, RowRejected | None]:
    try:
        return parse(record), None
    except RowRejected as exc:
        return None, exc
    except Exception as exc:  # a parser bug on an odd row must not stop the others
        return None, RowRejected(f"the connector could not read this row: {type(exc).__name__}: {exc}")


def _prepare(
    records: Sequence[RawRecord], parse: Callable[[RawRecord], Any], key_of: Callable[[Any], str]
) -> list[_Pulled]:
    out = []
    for position, record in enumerate(records, start=1):
        canonical = canonical_json(record.payload)
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        # JSON has no NaN/Infinity: only such payloads (rare) need rewriting before they are stored
        stored = (
            storable(record.payload) if ("NaN" in canonical or "Infinity" in canonical) else record.payload
        )
        parsed, rejected = _parse(record, parse)
        natural_key = key_of(parsed) if parsed is not None else f"unkeyed|{digest[:32]}"
        day = parsed.day if parsed is not None else None
        out.append(
            _Pulled(
                record,
                stored,
                digest,
                key_paths(record.payload),
                parsed,
                rejected,
                natural_key,
                day,
                position,
            )
        )
    return out


# --- the pipeline for one source -----------------------------------------------------------------


class _SourceRun:
    """Stores, validates and lands one source's pull into one batch."""

    def __init__(self, session: Session, batch: BatchReport, *, now: datetime) -> None:
        self.session = session
        self.batch = batch
        self.now = now
        self.quarantine_rows: list[dict[str, Any]] = []
        self.accepted = 0  # rows that passed every check and landed (new, restated or same values)

    def reject(self, item: _Pulled, field_name: str | None, reason: str) -> None:
        self.quarantine_rows.append(
            {
                "batch_id": self.batch.batch_id,
                "raw_metric_id": item.raw_id,
                "source": self.batch.source,
                "natural_key": item.natural_key,
                "field": field_name,
                "reason": reason,
                "created_at": self.now,
            }
        )
        self.batch.quarantine.append(
            Quarantined(self.batch.source, item.raw_id, item.natural_key, item.position, field_name, reason)
        )
        self.batch.quarantined += 1

    def store_raw(self, items: list[_Pulled]) -> list[_Pulled]:
        """Append what is new; returns the one candidate per changed key (duplicates quarantined)."""
        self.batch.pulled = len(items)
        groups: dict[str, list[_Pulled]] = {}
        for item in items:
            groups.setdefault(item.natural_key, []).append(item)
        latest = store.latest_raw(
            self.session, source=self.batch.source, keys={key: group[0].day for key, group in groups.items()}
        )
        changed: dict[str, list[_Pulled]] = {}
        for key, group in groups.items():
            before = latest.get(key)
            if before is not None and {g.digest for g in group} == set(before.hashes):
                self.batch.unchanged += len(group)
                continue
            for g in group:
                g.version = (before.version if before else 0) + 1
            changed[key] = group
        fresh = [g for group in changed.values() for g in group]
        raw_rows = [
            {
                "batch_id": self.batch.batch_id,
                "source": self.batch.source,
                "received_at": self.now,
                "natural_key": g.natural_key,
                "day": g.day,
                "payload": g.stored,
                "payload_hash": g.digest,
                "version": g.version,
            }
            for g in fresh
        ]
        for g, raw_id in zip(fresh, store.insert_raw(self.session, raw_rows), strict=True):
            g.raw_id = raw_id
        self.batch.raw_stored = len(fresh)
        candidates: list[_Pulled] = []
        for key, group in changed.items():
            if len(group) == 1:
                candidates.append(group[0])
            elif len({g.digest for g in group}) == 1:
                candidates.append(group[0])
                for dup in group[1:]:
                    self.reject(dup, None, f"duplicate: {key} came {len(group)} times in one pull; "
                                           f"kept the first (raw #{group[0].raw_id})")  # fmt: skip
            else:
                for g in group:
                    self.reject(g, None, f"conflicting duplicates: {key} came {len(group)} times in one pull "
                                         "with different values; none landed")  # fmt: skip
        return candidates

    def check_common(self, item: _Pulled, expected: frozenset[str] | None) -> bool:
        drift = drift_reason(item.keys, expected)
        if drift is not None:
            self.reject(item, drift[0], drift[1])
            return False
        if item.rejected is not None:
            self.reject(item, item.rejected.field_name, item.rejected.reason)
            return False
        return True

    def pull(self, fetch: Callable[[], _T]) -> _T | None:
        """Call the connector; a failure of any kind is recorded in the batch, which then ends failed."""
        try:
            return fetch()
        except Exception as exc:
            message = f"pull failed: {type(exc).__name__}: {exc}"
            self.batch.errors.append({"kind": "connector", "message": message})
            self.finish(None)
            return None

    def land(self, model: type[Any], rows: Sequence[_Landing], existing: Mapping[Any, Any], fk: str) -> None:
        """Insert new clean rows, update restated ones (recording each correction), in bulk."""
        inserts, updates, corrections = [], [], []
        self.accepted += len(rows)
        for item, key, identity, values in rows:
            provenance = {"raw_metric_id": item.raw_id, "version": item.version, "updated_at": self.now}
            old = existing.get(key)
            if old is None:
                inserts.append({**identity, **values, **provenance})
                self.batch.landed += 1
                continue
            updates.append({"id": old.id, **values, **provenance})
            before = {k: getattr(old, k) for k in values}
            if before == values:  # a new payload with the same values: provenance moves, nothing else
                self.batch.unchanged += 1
                continue
            self.batch.updated += 1
            changed = [k for k in values if before[k] != values[k]]
            corrections.append(
                {
                    "batch_id": self.batch.batch_id,
                    "daily_metric_id": None,
                    "daily_revenue_id": None,
                    fk: old.id,
                    "old_values": _jsonable({k: before[k] for k in changed}),
                    "new_values": _jsonable({k: values[k] for k in changed}),
                    "old_raw_metric_id": old.raw_metric_id,
                    "new_raw_metric_id": item.raw_id,
                    "corrected_at": self.now,
                }
            )
        store.insert_rows(self.session, model, inserts)
        store.update_rows(self.session, model, updates)
        store.insert_rows(self.session, MetricCorrection, corrections)

    def finish(self, expected: frozenset[str] | None) -> None:
        store.insert_rows(self.session, QuarantinedRow, self.quarantine_rows)
        failed = any(e["kind"] == "connector" for e in self.batch.errors)
        if failed:
            self.batch.status = "failed"
        elif self.batch.quarantined or self.batch.missing_days or self.batch.errors:
            self.batch.status = "partial"
        else:
            self.batch.status = "succeeded"
        row = self.session.get(IngestBatch, self.batch.batch_id)
        assert row is not None
        for name in ("status", "pulled", "raw_stored", "landed", "updated", "quarantined", "unchanged"):
            setattr(row, name, getattr(self.batch, name))
        row.errors = list(self.batch.errors)
        row.missing_days = dict(self.batch.missing_days)
        # The baseline the next pull is checked against comes from accepted rows only: a pull whose
        # rows were all quarantined (or that failed) leaves the last good schema in place.
        row.schema_keys = sorted(expected) if expected is not None and self.accepted else None
        row.finished_at = self.now


def _valid_number(value: float | None, name: str, *, optional: bool = False) -> tuple[str, str] | None:
    if value is None:
        return None if optional else (name, f"`{name}` is missing")
    if not math.isfinite(value):
        return name, f"`{name}` is not finite: {value}"
    if value < 0:
        return name, f"`{name}` is negative: {value}"
    return None


def _check_metric(row: MetricRow, campaign: store.CampaignRecord | None) -> tuple[str, str] | None:
    if campaign is None:
        return (
            "campaign_id",
            f"unknown campaign {row.campaign_external_id}: not in this platform's campaign list",
        )
    if row.currency != campaign.currency:
        return "currency", f"currency {row.currency} differs from the campaign's {campaign.currency}"
    return (
        _valid_number(row.spend, "spend")
        or _valid_number(float(row.impressions), "impressions")
        or _valid_number(float(row.clicks), "clicks")
        or _valid_number(row.attributed_revenue, "attributed_revenue", optional=True)
    )


def _metric_values(row: MetricRow) -> dict[str, Any]:
    return {
        "spend": store.to_money(row.spend),
        "impressions": int(row.impressions),
        "clicks": int(row.clicks),
        "attributed_revenue": None
        if row.attributed_revenue is None
        else store.to_money(row.attributed_revenue),
        "currency": row.currency,
    }


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if not isinstance(v, (int, str, type(None))) else v) for k, v in values.items()}


def _schema(run: _SourceRun, items: Sequence[_Pulled]) -> frozenset[str] | None:
    previous = store.previous_schema(run.session, source=run.batch.source)
    readable = [i.keys for i in items if i.rejected is None]  # an unreadable row does not vote
    expected, note = expected_schema(readable, previous)
    if note:
        run.batch.errors.append({"kind": "schema", "message": note})
    return expected


def _pull_platform(
    connector: Connector, start: date, end: date
) -> tuple[list[CampaignInfo], list[RawRecord]]:
    return connector.list_campaigns(), connector.pull_daily_metrics(start, end)


def _ingest_platform(
    session: Session, connector: Connector, run: _SourceRun, fetched: Future[Any], start: date, end: date
) -> None:
    batch = run.batch
    pulled = run.pull(fetched.result)
    if pulled is None:
        return
    listed, records = pulled
    for info in listed:
        _, problem = store.upsert_campaign(
            session,
            platform=info.platform,
            account_external_id=info.account_id,
            external_id=info.external_id,
            name=info.name,
            channel=info.channel,
            currency=info.currency,
            now=run.now,
        )
        if problem:
            batch.errors.append({"kind": "currency", "message": problem})
    known = {c.external_id: c for c in store.campaigns(session, platform=connector.platform)}
    items = _prepare(
        records,
        connector.parse_metric,
        lambda r: f"{r.platform}|{r.account_id}|{r.campaign_external_id}|{r.day.isoformat()}",
    )
    expected = _schema(run, items)
    seen_days: dict[str, set[date]] = {info.external_id: set() for info in listed}
    for item in items:
        if isinstance(item.parsed, MetricRow) and item.parsed.campaign_external_id in seen_days:
            seen_days[item.parsed.campaign_external_id].add(item.parsed.day)

    valid: list[_Landing] = []
    for item in run.store_raw(items):
        if not run.check_common(item, expected):
            continue
        row = item.parsed
        assert isinstance(row, MetricRow)
        campaign = known.get(row.campaign_external_id)
        issue = _check_metric(row, campaign)
        if issue is not None:
            run.reject(item, *issue)
            continue
        assert campaign is not None
        key = (campaign.id, row.day)
        valid.append((item, key, {"campaign_id": campaign.id, "day": row.day}, _metric_values(row)))
    existing: dict[Any, Any] = {}
    if valid:
        days = [day for _, (_, day), _, _ in valid]
        ids = [campaign_id for _, (campaign_id, _), _, _ in valid]
        existing = dict(store.clean_metrics(session, campaign_ids=ids, start=min(days), end=max(days)))
    run.land(DailyMetric, valid, existing, "daily_metric_id")
    every_day = set(store.days_between(start, end))
    for external_id, days_seen in sorted(seen_days.items()):
        if every_day - days_seen:
            batch.missing_days[f"campaign {external_id}"] = day_ranges(every_day - days_seen)
    run.finish(expected)


def _ingest_revenue(
    session: Session, source: RevenueSource, run: _SourceRun, fetched: Future[Any], start: date, end: date
) -> None:
    records = run.pull(fetched.result)
    if records is None:
        return
    items = _prepare(records, source.parse_revenue, lambda r: f"{source.source}|{r.day.isoformat()}")
    expected = _schema(run, items)
    currency = store.revenue_currency(session)
    if currency is None:
        currencies = Counter(i.parsed.currency for i in items if isinstance(i.parsed, RevenueRow))
        currency = currencies.most_common(1)[0][0] if currencies else None
    seen = {i.parsed.day for i in items if isinstance(i.parsed, RevenueRow)}
    valid: list[_Landing] = []
    for item in run.store_raw(items):
        if not run.check_common(item, expected):
            continue
        row = item.parsed
        assert isinstance(row, RevenueRow)
        issue = (
            ("currency", f"currency {row.currency} differs from the revenue so far, in {currency}")
            if row.currency != currency
            else _valid_number(row.revenue, "revenue")
        )
        if issue is not None:
            run.reject(item, *issue)
            continue
        values = {"revenue": store.to_money(row.revenue), "currency": row.currency}
        valid.append((item, row.day, {"day": row.day, "source": source.source}, values))
    existing: dict[Any, Any] = {}
    if valid:
        days = [day for _, day, _, _ in valid]
        existing = dict(store.clean_revenue(session, start=min(days), end=max(days)))
    run.land(DailyRevenue, valid, existing, "daily_revenue_id")
    missing = set(store.days_between(start, end)) - seen
    if missing:
        run.batch.missing_days["revenue"] = day_ranges(missing)
    run.finish(expected)


def _open_batch(session: Session, source: str, start: date, end: date, now: datetime) -> BatchReport:
    row = IngestBatch(
        source=source,
        requested_start=start,
        requested_end=end,
        started_at=now,
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
    session.add(row)
    session.flush()
    return BatchReport(source=source, batch_id=row.id)


# pg_advisory_xact_lock key: any fixed 64-bit number, the same in every process ("ingest" in ASCII).
INGEST_LOCK_KEY = 0x696E67657374


def _one_ingest_at_a_time(session: Session) -> None:
    """Serialise concurrent ingests (the scheduler and a CLI run) until this transaction ends.

    Two ingests of the same range could otherwise both find a key new and both store version 1.
    PostgreSQL: a transaction-scoped advisory lock. SQLite allows one writer at a time already; a
    second writer that read before the first committed fails with "database is locked" and
    rolls back whole, never half-written.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INGEST_LOCK_KEY})


def run_ingest(
    session: Session, connectors: ConnectorSet, *, start: date, end: date, now: datetime
) -> IngestReport:
    """Pull ``start``..``end`` (inclusive) from every platform and the revenue source, into one session.

    Never commits: the caller's unit of work does. A source that fails is recorded in its batch
    (status ``failed``) and the others still land. The HTTP pulls run side by side in threads (no
    database work there), so the network and the database writes of the previous source overlap.
    """
    if end < start:
        raise InputError(
            f"the range ends ({end}) before it starts ({start})", key="until", fix="swap the dates"
        )
    now = ensure_utc(now, name="now")
    _one_ingest_at_a_time(session)
    batches: list[BatchReport] = []
    platforms = [connectors.platforms[name] for name in sorted(connectors.platforms)]
    revenue = connectors.revenue
    with ThreadPoolExecutor(max_workers=len(platforms) + 1, thread_name_prefix="ingest-pull") as pool:
        pulls = [pool.submit(_pull_platform, connector, start, end) for connector in platforms]
        revenue_pull = pool.submit(revenue.pull_daily_revenue, start, end) if revenue is not None else None
        for connector, fetched in zip(platforms, pulls, strict=True):
            batch = _open_batch(session, connector.platform, start, end, now)
            _ingest_platform(session, connector, _SourceRun(session, batch, now=now), fetched, start, end)
            batches.append(batch)
        if revenue is not None and revenue_pull is not None:
            batch = _open_batch(session, revenue.source, start, end, now)
            _ingest_revenue(session, revenue, _SourceRun(session, batch, now=now), revenue_pull, start, end)
            batches.append(batch)
    session.flush()
    return IngestReport(start=start, end=end, batches=tuple(batches))
