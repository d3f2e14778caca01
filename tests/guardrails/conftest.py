"""Policies for the guardrail tests: the example file shipped in the repository, and small ones built here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from guardrails import Policy, load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


@pytest.fixture(scope="session")
def example_policy() -> Policy:
    return load_policy(EXAMPLE)


def _policy_from(doc: dict[str, Any]) -> Policy:
    """A policy from a dict, through the YAML loader (so its checks all run)."""
    return parse_policy(yaml.safe_dump(doc, sort_keys=False), source="<test>")


def _small_policy(**sections: Any) -> Policy:
    """Two channels a/b, a generous cap; pass sections to replace the defaults."""
    doc: dict[str, Any] = {
        "timezone": "America/New_York",
        "budget": {"total_daily_max": 100_000},
        "change": {"max_swing_per_change": 0.2, "max_swing_per_week": None, "min_days_between_changes": 0},
        "learning_phase": {"protect": True, "max_change_without_reset": None},
        "channels": {"a": {"min_daily": 0}, "b": {"min_daily": 0}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return _policy_from(doc)


@pytest.fixture(scope="session")
def policy_from() -> Callable[[dict[str, Any]], Policy]:
    return _policy_from


@pytest.fixture(scope="session")
def small_policy() -> Callable[..., Policy]:
    return _small_policy
