"""A small market behind a real sandbox server on loopback, and connectors pointed at it.

Every test gets a fresh market (budget edits and faults change it) at ``LOOP_DAY + 3``: ten days of
reports exist and budgets may change. Connectors record their sleeps instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from connectors.registry import Connectors, sandbox_connectors
from connectors.sandbox.market import Market
from connectors.sandbox.scenario import parse_scenario
from connectors.sandbox.server import SandboxServer

START = date(2026, 1, 5)
HISTORY_DAYS = 7
LOOP_DAY = START + timedelta(days=HISTORY_DAYS)
TODAY = LOOP_DAY + timedelta(days=3)


def _channel(name: str, platform: str, budget: float, threshold: float = 0.2) -> dict[str, Any]:
    return {
        "name": name,
        "platform": platform,
        "daily_budget": budget,
        "adstock": {"decay": 0.3},
        "saturation": {"half": budget, "shape": 1.2},
        "roi_at_budget": 1.5,
        "learning": {"change_threshold": threshold, "days": 3, "efficiency": 0.85},
    }


def small_market() -> Market:
    scenario = parse_scenario(
        {
            "name": "connectors-test",
            "start": START,
            "history_days": HISTORY_DAYS,
            "seed": 5,
            "currency": "USD",
            "baseline": {
                "daily_revenue": 20000.0,
                "trend_per_year": 0.05,
                "yearly_amplitude": 0.1,
                "weekly": [1.0, 0.95, 0.95, 1.0, 1.05, 1.1, 0.95],
            },
            "noise": 0.05,
            "channels": [
                _channel("search", "google_ads", 1500.0),
                _channel("video", "google_ads", 800.0),
                _channel("social", "meta_ads", 2000.0),
                _channel("retail", "retail_media", 700.0, threshold=0.3),
            ],
        }
    )
    return Market(scenario)


@pytest.fixture(scope="session")
def _server() -> Iterator[SandboxServer]:
    with SandboxServer(small_market()) as server:
        yield server


@pytest.fixture
def sandbox(_server: SandboxServer) -> SandboxServer:
    """The loopback sandbox serving a fresh market (at ``TODAY``) with no faults armed."""
    market = small_market()
    market.advance_to(TODAY)
    _server.replace(market)
    return _server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def conns(sandbox: SandboxServer, sleeps: list[float]) -> Iterator[Connectors]:
    with sandbox_connectors(sandbox.base_url, sleep=sleeps.append, timeout=2.0) as built:
        yield built


@pytest.fixture
def campaign(sandbox: SandboxServer) -> Callable[[str], Any]:
    """The market's campaign of a channel (``search``, ``video``, ``social``, ``retail``)."""

    def find(channel: str) -> Any:
        return next(c for c in sandbox.market.campaigns if c.channel == channel)

    return find
