"""Per-region reports and geo holdouts through the sandbox's dialects, over a real loopback server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from budgetloop.errors import ConnectorError
from connectors.geo import geo_clients, regional_revenue
from connectors.registry import Connectors, sandbox_connectors
from connectors.sandbox.market import Market
from connectors.sandbox.scenario import parse_scenario
from connectors.sandbox.server import SandboxServer

START = date(2026, 1, 5)
REGIONS = [
    {"name": "north", "baseline_share": 0.5},
    {"name": "south", "baseline_share": 0.3, "reach": {"social": 0.2}},
    {"name": "west", "baseline_share": 0.2, "reach": {"social": 0.3}},
]


def _channel(name: str, platform: str, budget: float) -> dict[str, Any]:
    return {
        "name": name,
        "platform": platform,
        "daily_budget": budget,
        "adstock": {"decay": 0.3},
        "saturation": {"half": budget, "shape": 1.0},
        "roi_at_budget": 1.5,
        "learning": {"change_threshold": 0.2, "days": 3, "efficiency": 0.85},
    }


def geo_market(regions: list[dict[str, Any]] | None = REGIONS) -> Market:
    spec: dict[str, Any] = {
        "name": "geo-test",
        "start": START,
        "history_days": 7,
        "seed": 3,
        "currency": "USD",
        "baseline": {"daily_revenue": 20000.0, "weekly": [1.0] * 7},
        "noise": 0.02,
        "channels": [
            _channel("search", "google_ads", 1500.0),
            _channel("social", "meta_ads", 2000.0),
            _channel("retail", "retail_media", 700.0),
        ],
    }
    if regions is not None:
        spec["regions"] = regions
    market = Market(parse_scenario(spec))
    market.advance_to(START + timedelta(days=10))
    return market


@pytest.fixture
def served() -> Iterator[tuple[Market, Connectors]]:
    market = geo_market()
    with SandboxServer(market) as server:
        connectors = sandbox_connectors(server.base_url, sleep=lambda s: None)
        try:
            yield market, connectors
        finally:
            connectors.close()


def _campaign(connectors: Connectors, platform: str) -> str:
    return connectors.platforms[platform].list_campaigns()[0].external_id


def test_region_reports_add_up_to_the_national_ones(served: tuple[Market, Connectors]) -> None:
    market, connectors = served
    day = START + timedelta(days=2)
    store = regional_revenue(connectors)
    assert store is not None
    rows = store.region_revenue(START, START + timedelta(days=9))
    assert len(rows) == 30 and {r.region for r in rows} == {"north", "south", "west"}
    national = market.outcome(day).revenue
    assert sum(r.revenue for r in rows if r.day == day) == pytest.approx(national, abs=0.05)

    geo = geo_clients(connectors)
    assert set(geo) == {"google_ads", "meta_ads"}  # retail media has no geo targeting
    social = geo["meta_ads"].region_spend(_campaign(connectors, "meta_ads"), day, day)
    by_region = {r.region: r.spend for r in social}
    assert sum(by_region.values()) == pytest.approx(market.outcome(day).channels["social"].spend, abs=0.05)
    assert by_region["west"] == pytest.approx(0.3 * market.outcome(day).channels["social"].spend, abs=0.02)


@pytest.mark.parametrize("platform,channel", [("meta_ads", "social"), ("google_ads", "search")])
def test_a_holdout_stops_delivery_in_its_region_and_is_restored(
    served: tuple[Market, Connectors], platform: str, channel: str
) -> None:
    market, connectors = served
    geo = geo_clients(connectors)[platform]
    campaign = _campaign(connectors, platform)
    assert geo.geo_factors(campaign) == {"north": 1.0, "south": 1.0, "west": 1.0}
    after = geo.set_geo_factors(campaign, {"west": 0.0})
    assert after == {"north": 1.0, "south": 1.0, "west": 0.0}
    assert market.geo_factor(channel, "west") == 0.0
    assert geo.set_geo_factors(campaign, {"west": 0.0}) == after  # idempotent: same call, same state
    today = market.today()
    market.advance_to(today + timedelta(days=2))
    spend = {r.region: r.spend for r in geo.region_spend(campaign, today, today)}
    assert spend["west"] == 0.0 and spend["north"] > 0
    assert geo.set_geo_factors(campaign, {"west": 1.0})["west"] == 1.0
    assert market.geo_factor(channel, "west") == 1.0


def test_bad_geo_calls_are_refused_with_the_fix(served: tuple[Market, Connectors]) -> None:
    _, connectors = served
    geo = geo_clients(connectors)
    with pytest.raises(ConnectorError, match="unknown region"):
        geo["google_ads"].set_geo_factors(_campaign(connectors, "google_ads"), {"atlantis": 0.0})
    with pytest.raises(ValueError, match=r"must be 0\.0"):
        geo["meta_ads"].set_geo_factors(_campaign(connectors, "meta_ads"), {"north": 0.5})
    with pytest.raises(ConnectorError):
        geo["meta_ads"].region_spend("999", START, START)


def test_the_default_national_region_keeps_one_row_a_day() -> None:
    market = geo_market(regions=None)
    with SandboxServer(market) as server, sandbox_connectors(server.base_url) as connectors:
        store = regional_revenue(connectors)
        assert store is not None
        rows = store.region_revenue(START, START + timedelta(days=3))
        assert [r.region for r in rows] == ["national"] * 4
        assert rows[0].revenue == pytest.approx(market.outcome(START).revenue, abs=0.01)
