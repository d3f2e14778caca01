"""The append-only, hash-chained intervention audit log (``audit_log``), its signed digests and API tokens.

Each entry carries ``seq`` (1, 2, 3, ... with no gaps), the hash of the previous entry and its own hash
over a canonical serialisation (see :mod:`budgetloop.store.audit`). The database refuses UPDATE and
DELETE on the table (triggers created by migration 0003, TRUNCATE too on PostgreSQL), and the unique
``seq`` makes a forked chain impossible even under concurrent writers.

``audit_digests`` is a second, smaller chain: every digest states the log's head (seq, hash, count) at a
moment, links to the previous digest's hash and is signed with HMAC-SHA256, as CloudTrail's digest files
are. It is append-only as well.

``api_tokens`` holds the REST API's bearer tokens, stored as their SHA-256 only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from budgetloop.db.base import Base


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True, nullable=False)
    at: Mapped[datetime] = mapped_column(nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    subject_type: Mapped[str] = mapped_column(String(64), nullable=False)
    subject_id: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text, nullable=False)  # canonical JSON text, hashed byte for byte
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)

    # Every filter index ends in ``seq`` so that a filtered, keyset-paginated query
    # (``WHERE action = :a AND seq > :cursor ORDER BY seq LIMIT n``) is one index range scan.
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_action", "action", "seq"),
        Index("ix_audit_log_subject", "subject_type", "subject_id", "seq"),
        Index("ix_audit_log_channel", "channel", "seq"),
        Index("ix_audit_log_actor", "actor", "seq"),
    )


class AuditDigest(Base):
    """A signed statement of the audit log's head, chained to the previous statement."""

    __tablename__ = "audit_digests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True, nullable=False)  # 1, 2, 3, ... no gaps
    at: Mapped[datetime] = mapped_column(nullable=False)
    head_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    head_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    entries: Mapped[int] = mapped_column(BigInteger, nullable=False)
    prev_digest_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    digest_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    signature: Mapped[str] = mapped_column(String(64), nullable=False)  # HMAC-SHA256(key, digest_hash), hex
    key_id: Mapped[str] = mapped_column(String(64), nullable=False)  # sha256(key)[:16]: which key signed


class ApiToken(Base):
    """A bearer token for the REST API. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # finance | approver | ops | admin
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
    slack_user_id: Mapped[str | None] = mapped_column(String(64))  # approvers: who they are in Slack
