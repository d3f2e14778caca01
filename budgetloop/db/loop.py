"""Model versions, change requests and their items, executions, monitoring readings, scenarios, calibration points."""

from __future__ import annotations

from budgetloop.db.base import Base  # noqa: F401
