"""The connectors against the real sandbox on loopback: units, budgets, and every injected fault."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from budgetloop.errors import RateLimited, RejectedByPlatform
from connectors.base import Connector, RevenueSource, RowRejected
from connectors.google_ads import GoogleAdsConnector
from connectors.registry import Connectors, sandbox_connectors
from connectors.sandbox.api_auth import READ_ONLY_TOKENS
from connectors.sandbox.server import SandboxServer

CHANNEL_OF = {"google_ads": "search", "meta_ads": "social", "retail_media": "retail"}
WRITE_ROUTE = {
    "google_ads": ("google", "mutate"),
    "meta_ads": ("meta", "edit"),
    "retail_media": ("retail", "budgets"),
}
REPORT_ROUTE = {
    "google_ads": ("google", "search"),
    "meta_ads": ("meta", "insights"),
    "retail_media": ("retail", "reports"),
    "store": ("store", "revenue"),
}
PLATFORMS = list(CHANNEL_OF)


@pytest.fixture
def quick(sandbox: SandboxServer, sleeps: list[float]) -> Iterator[Connectors]:
    """Connectors with a short timeout, for the hang faults."""
    with sandbox_connectors(sandbox.base_url, sleep=sleeps.append, timeout=0.3) as built:
        yield built


def applied_over_http(sandbox: SandboxServer) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = httpx.get(f"{sandbox.base_url}/admin/applied").json()["applied"]
    return rows


def pull(conns: Connectors, source: str, sandbox: SandboxServer) -> list[Any]:
    start, end = sandbox.market.scenario.start, sandbox.market.today()
    if source == "store":
        return conns.revenue.pull_daily_revenue(start, end)
    return conns.platforms[source].pull_daily_metrics(start, end)


def test_registry_builds_every_connector_behind_the_interface(conns: Connectors) -> None:
    assert sorted(conns.platforms) == ["google_ads", "meta_ads", "retail_media"]
    assert all(isinstance(c, Connector) and c.platform == name for name, c in conns.platforms.items())
    assert isinstance(conns.revenue, RevenueSource) and conns.revenue.source == "store"


def test_campaigns_carry_the_markets_ids_channels_and_currency(
    sandbox: SandboxServer, conns: Connectors
) -> None:
    listed = {
        (c.platform, c.account_id, c.external_id, c.channel, c.currency)
        for conn in conns.platforms.values()
        for c in conn.list_campaigns()
    }
    truth = {
        (c.platform, c.account_id, c.external_id, c.channel, c.currency) for c in sandbox.market.campaigns
    }
    assert listed == truth and len(truth) == 4


def test_metrics_and_revenue_equal_the_simulator_to_the_cent(
    sandbox: SandboxServer, conns: Connectors
) -> None:
    market = sandbox.market
    by_id = {c.external_id: c.channel for c in market.campaigns}
    seen = 0
    for name, conn in conns.platforms.items():
        for record in pull(conns, name, sandbox):
            row = conn.parse_metric(record)
            truth = market.outcome(row.day).channels[by_id[row.campaign_external_id]]
            assert (row.spend, row.impressions, row.clicks) == (
                round(truth.spend, 2),
                truth.impressions,
                truth.clicks,
            )
            assert row.attributed_revenue == round(truth.attributed_revenue, 2) and row.currency == "USD"
            seen += 1
    days = (market.today() - market.scenario.start).days
    assert seen == 4 * days
    revenue = [conns.revenue.parse_revenue(r) for r in pull(conns, "store", sandbox)]
    assert [(r.day, r.revenue) for r in revenue] == [
        (
            market.scenario.start + timedelta(days=k),
            market.outcome(market.scenario.start + timedelta(days=k)).revenue,
        )
        for k in range(days)
    ]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_budgets_are_read_and_set_in_currency_units_and_learning_flips(
    platform: str, sandbox: SandboxServer, conns: Connectors, campaign: Callable[[str], Any]
) -> None:
    conn, c = conns.platforms[platform], campaign(CHANNEL_OF[platform])
    market = sandbox.market
    assert conn.get_budgets()[c.external_id] == market.budget(c.channel)
    assert conn.learning_status()[c.external_id].learning is False
    small = round(market.budget(c.channel) * 1.05, 2) + 0.01  # under every threshold: no learning
    result = conn.set_budget(c.external_id, small, idempotency_key=f"{platform}-small")
    assert (result.previous_daily_budget, result.new_daily_budget, result.replayed) == (
        market.scenario.channel(c.channel).daily_budget,
        small,
        False,
    )
    assert market.budget(c.channel) == small and conn.get_budgets()[c.external_id] == small
    assert conn.learning_status()[c.external_id].learning is False
    conn.set_budget(c.external_id, round(small * 1.6, 2), idempotency_key=f"{platform}-big")
    assert conn.learning_status()[c.external_id].learning is True
    assert [(a["new"], a["learning_started"]) for a in applied_over_http(sandbox)] == [
        (small, False),
        (round(small * 1.6, 2), True),
    ]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_replayed_key_returns_the_original_and_applies_nothing(
    platform: str, sandbox: SandboxServer, conns: Connectors, campaign: Callable[[str], Any]
) -> None:
    conn, c = conns.platforms[platform], campaign(CHANNEL_OF[platform])
    first = conn.set_budget(c.external_id, 999.99, idempotency_key="cr-41/execute")
    again = conn.set_budget(c.external_id, 999.99, idempotency_key="cr-41/execute")
    assert (first.replayed, again.replayed) == (False, True)
    assert [a["idempotency_key"] for a in applied_over_http(sandbox)] == ["cr-41/execute"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_timeout_after_apply_then_retry_applies_exactly_once(
    platform: str,
    sandbox: SandboxServer,
    quick: Connectors,
    sleeps: list[float],
    campaign: Callable[[str], Any],
) -> None:
    dialect, route = WRITE_ROUTE[platform]
    sandbox.arm({"kind": "timeout_after_apply", "dialect": dialect, "route": route, "delay": 1.0})
    conn, c = quick.platforms[platform], campaign(CHANNEL_OF[platform])
    result = conn.set_budget(c.external_id, 1234.5, idempotency_key="cr-9/execute")
    assert result.replayed is True  # the first attempt applied, timed out; the retry was recognised
    assert result.previous_daily_budget == sandbox.market.scenario.channel(c.channel).daily_budget
    assert len(sleeps) == 1 and sandbox.market.budget(c.channel) == 1234.5
    applied = applied_over_http(sandbox)
    assert [(a["campaign_id"], a["new"], a["idempotency_key"]) for a in applied] == [
        (c.external_id, 1234.5, "cr-9/execute")
    ]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_connection_dropped_after_apply_is_retried_and_applied_once(
    platform: str,
    sandbox: SandboxServer,
    conns: Connectors,
    sleeps: list[float],
    campaign: Callable[[str], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dialect, route = WRITE_ROUTE[platform]
    sandbox.arm({"kind": "timeout_after_apply", "dialect": dialect, "route": route, "delay": 0, "drop": True})
    conn, c = conns.platforms[platform], campaign(CHANNEL_OF[platform])
    result = conn.set_budget(c.external_id, 1500.25, idempotency_key="cr-10/execute")
    assert result.replayed is True and len(sleeps) == 1
    assert [a["idempotency_key"] for a in applied_over_http(sandbox)] == ["cr-10/execute"]
    # an injected drop is not logged as a server error
    assert [r for r in caplog.records if r.name == "uvicorn.error"] == []


@pytest.mark.parametrize(
    ("source", "code"),
    [("google_ads", None), ("meta_ads", 17), ("meta_ads", 613), ("retail_media", None), ("store", None)],
)
def test_rate_limits_are_retried_honouring_retry_after(
    source: str, code: int | None, sandbox: SandboxServer, conns: Connectors, sleeps: list[float]
) -> None:
    dialect, route = REPORT_ROUTE[source]
    sandbox.arm(
        {
            "kind": "rate_limit",
            "dialect": dialect,
            "route": route,
            "times": 2,
            "retry_after": 4,
            **({"rate_limit_code": code} if code else {}),
        }
    )
    records = pull(conns, source, sandbox)
    assert sleeps == [4.0, 4.0]
    assert (
        len(records)
        == (2 if source == "google_ads" else 1)
        * (sandbox.market.today() - sandbox.market.scenario.start).days
    )


def test_a_rate_limit_that_never_lifts_ends_as_rate_limited(
    sandbox: SandboxServer, conns: Connectors, sleeps: list[float]
) -> None:
    sandbox.arm(
        {"kind": "rate_limit", "dialect": "meta", "times": None, "retry_after": 2, "rate_limit_code": 613}
    )
    with pytest.raises(RateLimited, match=r"gave up after 5 attempts.*code 613") as info:
        conns.platforms["meta_ads"].get_budgets()
    assert info.value.retry_after == 2.0 and info.value.code == 613 and info.value.status == 400
    assert info.value.request_id and sleeps == [2.0] * 4


@pytest.mark.parametrize("source", [*PLATFORMS, "store"])
def test_server_errors_are_retried_with_jittered_backoff(
    source: str, sandbox: SandboxServer, conns: Connectors, sleeps: list[float]
) -> None:
    dialect, route = REPORT_ROUTE[source]
    sandbox.arm({"kind": "server_error", "dialect": dialect, "route": route, "times": 3, "status": 503})
    assert pull(conns, source, sandbox)
    assert len(sleeps) == 3 and all(0.0 <= s <= 0.25 * 2**k for k, s in enumerate(sleeps))


@pytest.mark.parametrize("source", [*PLATFORMS, "store"])
def test_slow_answers_past_the_timeout_and_truncated_bodies_are_retried(
    source: str, sandbox: SandboxServer, quick: Connectors, sleeps: list[float]
) -> None:
    dialect, route = REPORT_ROUTE[source]
    sandbox.arm(
        {"kind": "slow", "dialect": dialect, "route": route, "delay": 0.6},
        {"kind": "truncated", "dialect": dialect, "route": route},
    )
    records = pull(quick, source, sandbox)
    assert len(records) >= (sandbox.market.today() - sandbox.market.scenario.start).days
    assert len(sleeps) == 2  # one after the timeout, one after the truncated body


def test_a_slow_answer_within_the_timeout_is_just_slow(
    sandbox: SandboxServer, conns: Connectors, sleeps: list[float]
) -> None:
    sandbox.arm({"kind": "slow", "dialect": "retail", "route": "reports", "delay": 0.2})
    assert pull(conns, "retail_media", sandbox) and sleeps == []


MALFORMED = {
    "negative_spend": "negative",
    "nan_spend": "not finite",
    "non_numeric_spend": "not a number",
    "missing_field": "is missing",
    "schema_drift": "has the report schema changed",
}
MONEY_FIELD = {
    "google_ads": "metrics.costMicros",
    "meta_ads": "spend",
    "retail_media": "cost",
    "store": "revenue",
}


@pytest.mark.parametrize("source", [*PLATFORMS, "store"])
def test_malformed_rows_are_rejected_with_the_field_and_why(
    source: str, sandbox: SandboxServer, conns: Connectors
) -> None:
    dialect, route = REPORT_ROUTE[source]
    parse = conns.revenue.parse_revenue if source == "store" else conns.platforms[source].parse_metric
    day = sandbox.market.scenario.start + timedelta(days=2)
    clean = pull(conns, source, sandbox)
    for malformation, reason in MALFORMED.items():
        sandbox.arm(
            {
                "kind": "malformed",
                "dialect": dialect,
                "route": route,
                "malformation": malformation,
                "day": day.isoformat(),
            }
        )
        records = pull(conns, source, sandbox)
        bad = [r for r, c in zip(records, clean, strict=True) if r.payload != c.payload]
        assert bad, malformation
        for record in bad:
            with pytest.raises(RowRejected, match=reason) as info:
                parse(record)
            assert info.value.field_name == MONEY_FIELD[source]
    sandbox.arm(
        {
            "kind": "malformed",
            "dialect": dialect,
            "route": route,
            "malformation": "currency_change",
            "day": day.isoformat(),
        }
    )
    changed = {parse(r).currency for r in pull(conns, source, sandbox)}
    assert changed == {"USD", "EUR"}
    sandbox.arm(
        {
            "kind": "malformed",
            "dialect": dialect,
            "route": route,
            "malformation": "duplicate_row",
            "day": day.isoformat(),
        }
    )
    doubled = pull(conns, source, sandbox)
    assert len(doubled) == len(clean) + (2 if source == "google_ads" else 1)


@pytest.mark.parametrize(
    ("platform", "code", "status"),
    [
        ("google_ads", "campaignBudgetError.TOO_MANY_BUDGET_CHANGES_TODAY", 400),
        ("meta_ads", 100, 400),
        ("retail_media", "EDIT_LIMIT_EXCEEDED", 207),
    ],
)
def test_the_daily_edit_cap_is_a_rejection_carrying_the_platform_code(
    platform: str,
    code: object,
    status: int,
    sandbox: SandboxServer,
    conns: Connectors,
    campaign: Callable[[str], Any],
    sleeps: list[float],
) -> None:
    conn, c = conns.platforms[platform], campaign(CHANNEL_OF[platform])
    cap = sandbox.state.edit_caps[WRITE_ROUTE[platform][0]]
    for i in range(cap):
        conn.set_budget(c.external_id, 500.0 + i, idempotency_key=f"edit-{i}")
    with pytest.raises(RejectedByPlatform, match="limit is") as info:
        conn.set_budget(c.external_id, 600.0, idempotency_key="edit-over")
    assert (info.value.code, info.value.status, info.value.platform) == (code, status, platform)
    assert info.value.request_id and sleeps == [] and len(sandbox.applied()) == cap


def test_a_read_only_token_reads_but_cannot_change_budgets(
    sandbox: SandboxServer, campaign: Callable[[str], Any]
) -> None:
    with sandbox_connectors(sandbox.base_url, tokens=READ_ONLY_TOKENS, sleep=lambda s: None) as ro:
        for platform, conn in ro.platforms.items():
            c = campaign(CHANNEL_OF[platform])
            assert conn.get_budgets()[c.external_id] > 0
            with pytest.raises(RejectedByPlatform) as info:
                conn.set_budget(c.external_id, 900.0, idempotency_key="ro")
            assert info.value.status == 403
    assert sandbox.applied() == []


def test_an_unknown_token_is_rejected_not_retried(sandbox: SandboxServer, sleeps: list[float]) -> None:
    with (
        sandbox_connectors(sandbox.base_url, tokens={"google": "stolen"}, sleep=sleeps.append) as bad,
        pytest.raises(RejectedByPlatform, match="UNAUTHENTICATED") as info,
    ):
        bad.platforms["google_ads"].list_campaigns()
    assert info.value.status == 401 and sleeps == []


def test_google_validate_only_applies_nothing(
    sandbox: SandboxServer, conns: Connectors, campaign: Callable[[str], Any]
) -> None:
    google = conns.platforms["google_ads"]
    assert isinstance(google, GoogleAdsConnector)
    c = campaign("video")
    google.set_budget(c.external_id, 1111.11, idempotency_key="v-1", validate_only=True)
    assert sandbox.applied() == [] and sandbox.market.budget("video") == 800.0
    with pytest.raises(ValueError, match="must be > 0"):
        google.set_budget(c.external_id, 0.0, idempotency_key="v-2")
