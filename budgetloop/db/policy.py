"""Versioned guardrail policies (the YAML as given, who changed it, valid or not)."""

from __future__ import annotations

from budgetloop.db.base import Base  # noqa: F401
