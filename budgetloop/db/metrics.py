"""Ad accounts, campaigns, raw_metrics (append-only), daily_metrics (clean), ingest batches and quarantined rows."""

from __future__ import annotations

from budgetloop.db.base import Base  # noqa: F401
