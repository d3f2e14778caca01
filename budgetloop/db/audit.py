"""The append-only, hash-chained intervention audit log (``audit_log``).

Each entry carries ``seq`` (1, 2, 3, ... with no gaps), the hash of the previous entry and its own hash
over a canonical serialisation (see :mod:`budgetloop.store.audit`). The database refuses UPDATE and
DELETE on the table (triggers created by migration 0003), and the unique ``seq`` makes a forked chain
impossible even under concurrent writers.
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

    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_action", "action"),
        Index("ix_audit_log_subject", "subject_type", "subject_id"),
        Index("ix_audit_log_channel", "channel"),
        Index("ix_audit_log_actor", "actor"),
    )
