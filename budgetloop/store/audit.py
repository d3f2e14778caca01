"""Appending to and verifying the hash-chained audit log.

The hash of entry ``n`` is ``sha256(prev_hash || "\\n" || canonical(entry n))`` where ``canonical`` is a
JSON object with sorted keys and no whitespace over seq, time (ISO 8601, UTC, microseconds), actor,
action, subject, channel and the payload's canonical text. The first entry's ``prev_hash`` is 64 zeros.
Any edit, insertion or deletion changes a hash or breaks a link, and :func:`verify_chain` names the
first entry where that happens.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from budgetloop.clock import ensure_utc
from budgetloop.db.audit import AuditEntry

GENESIS = "0" * 64
_PG_AUDIT_LOCK = 0x6275646C  # "budl": serialises appenders across processes on PostgreSQL


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return ensure_utc(value).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot put {type(value).__name__} in an audit payload")


def _clean(value: Any) -> Any:
    """Floats that JSON cannot carry (NaN, inf) become strings, so the payload stays canonical."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(_clean(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def entry_hash(
    *,
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str | None,
    channel: str | None,
    payload_text: str,
) -> str:
    record = canonical_json(
        {
            "seq": seq,
            "at": ensure_utc(at).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "channel": channel,
            "payload": payload_text,
        }
    )
    return hashlib.sha256(f"{prev_hash}\n{record}".encode()).hexdigest()


def _lock_head(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})


def head(session: Session) -> tuple[int, str]:
    """(seq, hash) of the last entry, or (0, GENESIS) for an empty log."""
    row = session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def append(
    session: Session,
    *,
    action: str,
    actor: str,
    at: datetime,
    subject_type: str,
    subject_id: object | None = None,
    channel: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction (so the event and its state change commit together)."""
    at = ensure_utc(at, name="at")
    _lock_head(session)
    session.flush()
    seq, prev = head(session)
    payload_text = canonical_json(dict(payload or {}))
    sid = None if subject_id is None else str(subject_id)
    entry = AuditEntry(
        seq=seq + 1,
        at=at,
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=sid,
        channel=channel,
        payload=payload_text,
        prev_hash=prev,
        hash=entry_hash(
            prev_hash=prev,
            seq=seq + 1,
            at=at,
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=sid,
            channel=channel,
            payload_text=payload_text,
        ),
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class ChainReport:
    valid: bool
    entries: int
    first_bad_id: int | None = None
    first_bad_seq: int | None = None
    reason: str | None = None
    head_hash: str = GENESIS


def iter_entries(session: Session, *, batch: int = 5000) -> Iterator[tuple[Any, ...]]:
    last = 0
    cols = (
        AuditEntry.id,
        AuditEntry.seq,
        AuditEntry.at,
        AuditEntry.actor,
        AuditEntry.action,
        AuditEntry.subject_type,
        AuditEntry.subject_id,
        AuditEntry.channel,
        AuditEntry.payload,
        AuditEntry.prev_hash,
        AuditEntry.hash,
    )
    while True:
        rows = session.execute(select(*cols).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1][1]


def verify_chain(session: Session) -> ChainReport:
    """Walk the whole chain; name the first entry whose link, sequence or hash is wrong."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    for row in iter_entries(session):
        id_, seq, at, actor, action, stype, sid, channel, payload, prev_hash, h = row
        count += 1
        if seq != expected_seq:
            return ChainReport(False, count, id_, seq, f"sequence gap: expected seq {expected_seq}, found {seq}", prev)
        if prev_hash != prev:
            return ChainReport(False, count, id_, seq, "prev_hash does not match the previous entry's hash", prev)
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        recomputed = entry_hash(
            prev_hash=prev_hash,
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            subject_type=stype,
            subject_id=sid,
            channel=channel,
            payload_text=payload,
        )
        if recomputed != h:
            return ChainReport(False, count, id_, seq, "content does not match its hash (edited)", prev)
        prev = h
        expected_seq += 1
    return ChainReport(True, count, None, None, None, prev)
