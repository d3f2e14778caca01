"""Scheduled job runs and job locks (the APScheduler job store creates its own table)."""

from __future__ import annotations

from budgetloop.db.base import Base  # noqa: F401
