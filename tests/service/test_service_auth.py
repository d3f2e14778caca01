"""Every route: 401 without a valid token, 403 with a role it does not list, neither with one it lists.

The walk is over ``/openapi.json``, so a route added later is covered without touching this test; each
route declares its roles (``x-roles``), and only ``/healthz`` and ``/slack/interactions`` may lack them.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import Engine

from budgetloop.clock import SimulatedClock
from budgetloop.db.session import session_scope
from budgetloop.store import tokens
from tests.service.conftest import auth

UNGUARDED = {("get", "/healthz"), ("post", "/slack/interactions")}


def _operations(api: httpx.Client) -> list[tuple[str, str, list[str] | None]]:
    spec: dict[str, Any] = api.get("/openapi.json").json()
    return [
        (method, path, op.get("x-roles"))
        for path, item in spec["paths"].items()
        for method, op in item.items()
    ]


def _call(api: httpx.Client, method: str, path: str, headers: dict[str, str]) -> int:
    concrete = re.sub(r"\{[^}]+\}", "999999", path)  # no such row: nothing is changed
    params = {"quarter": "2026Q1"} if "reconciliation" in path else {}
    return api.request(method.upper(), concrete, headers=headers, params=params).status_code


def test_only_health_and_slack_are_unguarded(api: httpx.Client) -> None:
    ops = _operations(api)
    assert len(ops) >= 15
    assert {(m, p) for m, p, roles in ops if roles is None} == UNGUARDED
    assert api.get("/healthz").json()["status"] == "ok"


def test_every_route_refuses_a_missing_or_unknown_token(api: httpx.Client) -> None:
    for method, path, roles in _operations(api):
        if roles is None:
            continue
        assert _call(api, method, path, {}) == 401, (method, path)
        assert _call(api, method, path, auth("blt_not-a-real-token")) == 401, (method, path)
        assert _call(api, method, path, {"Authorization": "Basic Zm9vOmJhcg=="}) == 401, (method, path)


def test_every_route_refuses_other_roles_and_admits_its_own(
    api: httpx.Client, role_tokens: dict[str, str]
) -> None:
    checked = 0
    for method, path, roles in _operations(api):
        if roles is None:
            continue
        for role in tokens.ROLES:
            status = _call(api, method, path, auth(role_tokens[role]))
            if role in roles:
                assert status not in (401, 403), (method, path, role, status)
            else:
                assert status == 403, (method, path, role, status)
            checked += 1
    assert checked >= 15 * len(tokens.ROLES)


def test_a_revoked_token_is_refused_at_once(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    assert api.get("/api/v1/audit", headers=auth(role_tokens["finance"])).status_code == 200
    with session_scope(engine) as s:
        row = next(t for t in tokens.list_tokens(s) if t.name == "finance")
        tokens.revoke_token(s, token_id=row.id, now=clock.now(), actor="test")
    response = api.get("/api/v1/audit", headers=auth(role_tokens["finance"]))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "revoked" in response.json()["detail"]
