"""The sandbox dialects on the wire, as a platform's own client would see them (real server, loopback)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from connectors.sandbox.api_auth import DEV_TOKENS, READ_ONLY_TOKENS
from connectors.sandbox.api_google import budget_id
from connectors.sandbox.server import SandboxServer

G = {"Authorization": f"Bearer {DEV_TOKENS['google']}"}
M = {"Authorization": f"Bearer {DEV_TOKENS['meta']}"}
R = {"Authorization": f"Bearer {DEV_TOKENS['retail']}"}
S = {"Authorization": f"Bearer {DEV_TOKENS['store']}"}


@pytest.fixture
def http(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, timeout=5.0) as c:
        yield c


def budget_op(customer: str, c: Any, amount: float) -> dict[str, Any]:
    name = f"customers/{customer}/campaignBudgets/{budget_id(c)}"
    return {
        "update": {"resourceName": name, "amountMicros": str(round(amount * 1e6))},
        "updateMask": "amount_micros",
    }


def test_tokens_are_scoped_per_dialect_with_each_dialects_error_shape(
    http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    g = campaign("search")
    r = http.get(f"/google/v17/customers/{g.account_id}/campaigns", headers=M)
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
    r = http.get(f"/google/v17/customers/{g.account_id}/campaigns")
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    meta = campaign("social")
    r = http.get(f"/meta/v21.0/{meta.account_id}/campaigns", params={"access_token": "nope"})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "OAuthException" and r.json()["error"]["code"] == 190
    assert r.json()["error"]["fbtrace_id"] == r.headers["x-fb-trace-id"]
    r = http.get(f"/meta/v21.0/{meta.account_id}/campaigns", params={"access_token": DEV_TOKENS["meta"]})
    assert r.status_code == 200  # the query-string token form works too
    r = http.post(
        f"/meta/v21.0/{meta.external_id}",
        data={"daily_budget": "250000"},
        headers={"Authorization": f"Bearer {READ_ONLY_TOKENS['meta']}"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == 200
    r = http.put(
        "/retail/v1/campaigns/budgets",
        json=[{"campaignId": campaign("retail").external_id, "dailyBudget": 800}],
        headers={"Authorization": f"Bearer {READ_ONLY_TOKENS['retail']}"},
    )
    assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    r = http.get("/store/v1/daily_revenue", params={"start": "2026-01-05", "end": "2026-01-06"}, headers=G)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_google_mutate_is_all_or_nothing_unless_partial_failure(
    sandbox: SandboxServer, http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    search, video = campaign("search"), campaign("video")
    cid = search.account_id
    url = f"/google/v17/customers/{cid}/campaignBudgets:mutate"
    bad = budget_op(cid, video, 900.001)  # not a whole number of cents
    r = http.post(url, headers=G, json={"operations": [budget_op(cid, search, 1600.0), bad]})
    assert r.status_code == 400
    errors = r.json()["error"]["details"][0]["errors"]
    assert errors[0]["errorCode"] == {"campaignBudgetError": "NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT"}
    assert errors[0]["location"]["fieldPathElements"][0] == {"fieldName": "operations", "index": 1}
    assert sandbox.applied() == [] and sandbox.market.budget("search") == 1500.0

    r = http.post(
        url, headers=G, json={"operations": [budget_op(cid, search, 1600.0), bad], "partialFailure": True}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["results"][0]["resourceName"].endswith(budget_id(search)) and body["results"][1] == {}
    failed = body["partialFailureError"]["details"][0]["errors"]
    assert [e["location"]["fieldPathElements"][0]["index"] for e in failed] == [1]
    assert [(a.channel, a.old, a.new) for a in sandbox.applied()] == [("search", 1500.0, 1600.0)]


def test_google_validate_only_checks_without_applying(
    sandbox: SandboxServer, http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    search = campaign("search")
    url = f"/google/v17/customers/{search.account_id}/campaignBudgets:mutate"
    ok = http.post(
        url,
        headers=G,
        json={"operations": [budget_op(search.account_id, search, 2000.0)], "validateOnly": True},
    )
    assert ok.status_code == 200 and ok.json()["results"] == []
    bad = http.post(
        url,
        headers=G,
        json={"operations": [budget_op(search.account_id, search, -5.0)], "validateOnly": True},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["details"][0]["errors"][0]["errorCode"] == {"rangeError": "TOO_LOW"}
    assert sandbox.applied() == [] and sandbox.market.budget("search") == 1500.0


def test_edit_cap_per_campaign_per_day_then_allowed_again_tomorrow(
    sandbox: SandboxServer, http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    meta = campaign("social")
    codes = [
        http.post(
            f"/meta/v21.0/{meta.external_id}", data={"daily_budget": str(200000 + i)}, headers=M
        ).status_code
        for i in range(5)
    ]
    assert codes == [200, 200, 200, 200, 400]
    last = http.post(f"/meta/v21.0/{meta.external_id}", data={"daily_budget": "210000"}, headers=M).json()
    assert last["error"]["code"] == 100 and "limit is 4 per day" in last["error"]["message"]
    tomorrow = sandbox.market.today() + timedelta(days=1)
    assert http.post("/admin/clock", json={"date": tomorrow.isoformat()}).status_code == 200
    r = http.post(f"/meta/v21.0/{meta.external_id}", data={"daily_budget": "210000"}, headers=M)
    assert r.status_code == 200 and sandbox.market.budget("social") == 2100.0


def test_idempotent_replay_returns_the_original_and_applies_nothing(
    sandbox: SandboxServer, http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    retail = campaign("retail")
    body = [{"campaignId": retail.external_id, "dailyBudget": 910.5}]
    first = http.put("/retail/v1/campaigns/budgets", json=body, headers={**R, "Idempotency-Key": "cr-7"})
    again = http.put("/retail/v1/campaigns/budgets", json=body, headers={**R, "Idempotency-Key": "cr-7"})
    assert first.status_code == again.status_code == 207 and first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    other = http.put(
        "/retail/v1/campaigns/budgets",
        json=[{**body[0], "dailyBudget": 1.0}],
        headers={**R, "Idempotency-Key": "cr-7"},
    )
    assert other.status_code == 409 and other.json()["code"] == "IDEMPOTENCY_CONFLICT"
    applied = http.get("/admin/applied").json()["applied"]
    assert [(a["campaign_id"], a["new"], a["idempotency_key"]) for a in applied] == [
        (retail.external_id, 910.5, "cr-7")
    ]
    assert applied[0]["learning_started"] is True  # +30.1% crosses retail's 0.3 threshold


def test_retail_budget_update_splits_success_and_error_by_index(
    sandbox: SandboxServer, http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    retail = campaign("retail")
    r = http.put(
        "/retail/v1/campaigns/budgets",
        headers=R,
        json=[
            {"campaignId": "nope", "dailyBudget": 5.0},
            {"campaignId": retail.external_id, "dailyBudget": 750.0},
            {"campaignId": retail.external_id, "dailyBudget": 0},
        ],
    )
    assert r.status_code == 207
    assert [s["index"] for s in r.json()["success"]] == [1]
    assert [(e["index"], e["code"]) for e in r.json()["error"]] == [(0, "NOT_FOUND"), (2, "BUDGET_TOO_LOW")]
    assert sandbox.market.budget("retail") == 750.0


def test_reports_page_completely_and_never_show_the_future(
    sandbox: SandboxServer, http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    market = sandbox.market
    start, today = market.scenario.start, market.today()
    days = (today - start).days  # simulated days: start .. today - 1
    cid = campaign("search").account_id
    later = today + timedelta(days=30)
    query = f"SELECT metrics.cost_micros FROM campaign WHERE segments.date BETWEEN '{start}' AND '{later}'"
    google, token = [], None
    while True:
        body = http.post(
            f"/google/v17/customers/{cid}/googleAds:search",
            headers=G,
            json={"query": query, "pageSize": 3, **({"pageToken": token} if token else {})},
        ).json()
        google += body["results"]
        token = body.get("nextPageToken")
        if not token:
            break
    assert len(google) == 2 * days and int(body["totalResultsCount"]) == 2 * days
    assert len({(r["campaign"]["id"], r["segments"]["date"]) for r in google}) == 2 * days
    assert max(r["segments"]["date"] for r in google) == (today - timedelta(days=1)).isoformat()

    meta = campaign("social")
    params: dict[str, str] | None = {
        "level": "campaign",
        "time_increment": "1",
        "limit": "4",
        "time_range": json.dumps({"since": str(start), "until": str(today)}),
    }
    insights, url = [], f"/meta/v21.0/{meta.account_id}/insights"
    while url:
        body = http.get(url, params=params, headers=M).json()
        insights += body["data"]
        url = body["paging"].get("next")
        params = None  # the `next` link carries the whole query
    assert [r["date_start"] for r in insights] == [str(start + timedelta(days=k)) for k in range(days)]

    retail, page = [], 1
    while True:
        body = http.get(
            "/retail/v1/reports/daily",
            headers=R,
            params={"start": str(start), "end": str(today), "page": page, "pageSize": 4},
        ).json()
        retail += body["rows"]
        if page >= body["totalPages"]:
            break
        page += 1
    assert len(retail) == days

    store, page = [], 1
    while page:
        body = http.get(
            "/store/v1/daily_revenue",
            headers=S,
            params={"start": str(start), "end": str(today), "page": page, "page_size": 4},
        ).json()
        store += body["data"]
        page = body["next_page"]
    assert [float(r["revenue"]) for r in store] == [
        market.outcome(start + timedelta(days=k)).revenue for k in range(days)
    ]


def test_a_page_token_from_another_query_is_refused(
    http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    cid = campaign("search").account_id
    q = "SELECT x FROM campaign WHERE segments.date BETWEEN '2026-01-05' AND '2026-01-14'"
    first = http.post(
        f"/google/v17/customers/{cid}/googleAds:search", headers=G, json={"query": q, "pageSize": 2}
    ).json()
    other = q.replace("2026-01-05", "2026-01-06")
    r = http.post(
        f"/google/v17/customers/{cid}/googleAds:search",
        headers=G,
        json={"query": other, "pageSize": 2, "pageToken": first["nextPageToken"]},
    )
    assert r.status_code == 400 and "different query" in r.json()["error"]["message"]


def test_admin_clock_moves_forward_only_and_state_shows_learning(
    sandbox: SandboxServer, http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    today = sandbox.market.today()
    r = http.post("/admin/clock", json={"date": str(today - timedelta(days=1))})
    assert r.status_code == 409 and "cannot go backwards" in r.json()["detail"]
    video = campaign("video")
    http.post(
        f"/google/v17/customers/{video.account_id}/campaignBudgets:mutate",
        headers=G,
        json={"operations": [budget_op(video.account_id, video, 1200.0)]},
    )
    state = http.post("/admin/clock", json={"date": str(today + timedelta(days=1))}).json()
    row = next(c for c in state["campaigns"] if c["channel"] == "video")
    assert row["daily_budget"] == 1200.0 and row["learning_days_left"] == 2
    listed = http.get(f"/google/v17/customers/{video.account_id}/campaigns", headers=G).json()["results"]
    status = {c["campaign"]["id"]: c["campaign"]["primaryStatus"] for c in listed}
    assert status == {video.external_id: "LEARNING", campaign("search").external_id: "ELIGIBLE"}


def test_faults_armed_over_the_admin_api(http: httpx.Client, campaign: Callable[[str], Any]) -> None:
    armed = http.post(
        "/admin/faults",
        json={
            "faults": [
                {
                    "kind": "rate_limit",
                    "dialect": "meta",
                    "route": "campaigns",
                    "retry_after": 3,
                    "rate_limit_code": 613,
                },
                {"kind": "server_error", "dialect": "retail", "status": 502, "times": 2},
            ]
        },
    )
    assert armed.status_code == 200 and len(armed.json()["faults"]) == 2
    meta = campaign("social")
    r = http.get(f"/meta/v21.0/{meta.account_id}/campaigns", headers=M)
    assert r.status_code == 400 and r.json()["error"]["code"] == 613 and r.headers["Retry-After"] == "3"
    assert (
        http.get(f"/meta/v21.0/{meta.account_id}/campaigns", headers=M).status_code == 200
    )  # times=1: used up
    assert [http.get("/retail/v1/campaigns", headers=R).status_code for _ in range(3)] == [502, 502, 200]
    bad = http.post("/admin/faults", json={"kind": "malformed"})
    assert bad.status_code == 422


def test_idempotency_key_may_come_in_the_body(
    sandbox: SandboxServer, http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    meta, search = campaign("social"), campaign("search")
    for _ in range(2):
        r = http.post(
            f"/meta/v21.0/{meta.external_id}", data={"daily_budget": "210000", "request_id": "m-1"}, headers=M
        )
        assert r.status_code == 200
    body = {"operations": [budget_op(search.account_id, search, 1550.0)], "requestId": "g-1"}
    url = f"/google/v17/customers/{search.account_id}/campaignBudgets:mutate"
    replayed = [http.post(url, headers=G, json=body).headers.get("Idempotent-Replayed") for _ in range(2)]
    assert replayed == [None, "true"]
    assert [a.idempotency_key for a in sandbox.applied()] == ["m-1", "g-1"]


def test_google_refuses_an_update_without_the_field_mask(
    sandbox: SandboxServer, http: httpx.Client, campaign: Callable[[str], Any]
) -> None:
    search = campaign("search")
    op = budget_op(search.account_id, search, 1550.0)
    del op["updateMask"]
    r = http.post(
        f"/google/v17/customers/{search.account_id}/campaignBudgets:mutate",
        headers=G,
        json={"operations": [op]},
    )
    assert r.status_code == 400 and sandbox.applied() == []
    assert r.json()["error"]["details"][0]["errors"][0]["errorCode"] == {"fieldMaskError": "FIELD_NOT_FOUND"}
