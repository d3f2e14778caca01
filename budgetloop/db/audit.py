"""The append-only, hash-chained audit_log, its signed digests, and hashed API tokens."""

from __future__ import annotations

from budgetloop.db.base import Base  # noqa: F401
