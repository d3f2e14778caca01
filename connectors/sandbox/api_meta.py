"""A Meta Marketing API-like dialect (Graph v21.0 shapes).

    GET  /meta/v21.0/me/adaccounts                                   route "accounts"
    GET  /meta/v21.0/act_{id}/campaigns?fields&limit&after           route "campaigns"
    GET  /meta/v21.0/act_{id}/adsets?fields&limit&after              route "adsets"
    GET  /meta/v21.0/act_{id}/insights?level=campaign&time_increment=1&time_range={...}   route "insights"
    GET  /meta/v21.0/{campaign_id}?fields                            route "campaign"
    POST /meta/v21.0/{campaign_id}   daily_budget=<cents>            route "edit"

The token comes as ``access_token`` (query or form) or a Bearer header. Budgets are whole cents as
strings; insights ``spend`` is a decimal string in the account currency. Lists page with cursors
(``paging.cursors.after`` and ``paging.next``). Errors use the Graph envelope ``{"error": {"message",
"type", "code", "error_subcode", "fbtrace_id"}}``; throttling is code 17 or 613 (HTTP 400, as Meta
does), with a ``Retry-After`` header added by the sandbox.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from connectors.sandbox.api_common import (
    Dialect,
    answer,
    answer_applied,
    guard,
    idempotency_key,
    malformed_fault,
    replay,
)
from connectors.sandbox.api_state import (
    DayOutcomeLike,
    EditRefused,
    IdempotencyConflict,
    Pager,
    SandboxState,
    SimCampaignLike,
    decode_cursor,
    encode_cursor,
    list_pager,
    page,
    report_pager,
)
from connectors.sandbox.faults import Fault, RowShape, malform

PREFIX = "/meta/v21.0"
ROW_SHAPE = RowShape(
    money="spend",
    date="date_start",
    currency="account_currency",
    campaign="campaign_id",
    drift_to="amount_spent",
)
DEFAULT_LIMIT = 25
MAX_LIMIT = 500
MIN_BUDGET_CENTS = 100
_ERRORS: dict[str, tuple[int, int, int | None, str]] = {
    # kind: (http status, code, error_subcode, type)
    "unauthenticated": (401, 190, 463, "OAuthException"),
    "forbidden": (403, 200, None, "OAuthException"),
    "rate_limited": (400, 17, 2446079, "OAuthException"),
    "unavailable": (500, 2, None, "OAuthException"),
    "invalid": (400, 100, None, "OAuthException"),
    "not_found": (404, 100, 33, "GraphMethodException"),
    "conflict": (409, 100, 1487390, "OAuthException"),
    "edit_limit": (400, 100, 1885183, "OAuthException"),
}


def _error_body(kind: str, message: str, request_id: str, fault: Fault | None) -> tuple[int, Any]:
    status, code, subcode, kind_type = _ERRORS[kind]
    if fault is not None and kind == "rate_limited":
        code = fault.rate_limit_code
    if fault is not None and kind == "unavailable":
        status = fault.status
    error: dict[str, Any] = {"message": message, "type": kind_type, "code": code, "fbtrace_id": request_id}
    if subcode is not None:
        error["error_subcode"] = subcode
    if kind in ("rate_limited", "unavailable"):
        error["is_transient"] = True
    return status, {"error": error}


DIALECT = Dialect("meta", "x-fb-trace-id", _error_body)


def _token(request: Request, form: dict[str, str] | None = None) -> str | None:
    token = request.query_params.get("access_token") or (form or {}).get("access_token")
    return token or None  # else guard() reads the Bearer header


def _learning(state: SandboxState, c: SimCampaignLike) -> dict[str, Any]:
    left = state.learning(c)
    return {"status": "LEARNING" if left > 0 else "SUCCESS", "days_left": left}


def _campaign_json(state: SandboxState, c: SimCampaignLike) -> dict[str, Any]:
    return {
        "id": c.external_id,
        "account_id": c.account_id.removeprefix("act_"),
        "name": c.name,
        "status": "ACTIVE",
        "effective_status": "ACTIVE",
        "daily_budget": str(round(state.budget(c) * 100)),
        "learning_stage_info": _learning(state, c),
        "adlabels": [{"name": f"channel:{c.channel}"}],
    }


def _list(state: SandboxState, request: Request, route: str, pager: Pager, scope: str) -> Response:
    try:
        limit = int(request.query_params.get("limit", DEFAULT_LIMIT))
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"`limit` must be 1..{MAX_LIMIT}, got {limit}")
        after = request.query_params.get("after")
        offset = decode_cursor(after, f"{scope}|{limit}") if after else 0
    except ValueError as exc:
        return DIALECT.error(state, "invalid", f"(#100) {exc}")
    chunk, nxt, total = page(pager, offset, limit)
    if route == "insights" and (fault := malformed_fault(state, DIALECT, route)) is not None:
        chunk = malform(chunk, fault, ROW_SHAPE)
    paging: dict[str, Any] = {
        "cursors": {
            "before": encode_cursor(offset, f"{scope}|{limit}"),
            "after": encode_cursor(nxt if nxt is not None else total, f"{scope}|{limit}"),
        }
    }
    if nxt is not None:
        query = {k: v for k, v in request.query_params.items() if k not in ("after", "access_token")}
        query["after"] = paging["cursors"]["after"]
        paging["next"] = str(request.url.replace(query=urlencode(query)))
    return answer(state, DIALECT, route, {"data": chunk, "paging": paging})


def _account(state: SandboxState, ref: str) -> str | None:
    return ref if ref.startswith("act_") and ref in state.accounts("meta") else None


def _insights(state: SandboxState, account: str, request: Request) -> Response:
    q = request.query_params
    if q.get("level", "campaign") != "campaign" or q.get("time_increment", "1") != "1":
        return DIALECT.error(
            state, "invalid", "(#100) the sandbox serves level=campaign with time_increment=1"
        )
    try:
        span = json.loads(q.get("time_range", ""))
        start, end = date.fromisoformat(span["since"]), date.fromisoformat(span["until"])
    except (ValueError, KeyError, TypeError):
        return DIALECT.error(
            state,
            "invalid",
            '(#100) `time_range` must be JSON like {"since":"2026-01-01","until":"2026-01-31"}',
        )
    if end < start:
        return DIALECT.error(state, "invalid", "(#100) `time_range.until` is before `time_range.since`")
    campaigns = state.campaigns("meta", account)

    def make_rows(o: DayOutcomeLike) -> list[dict[str, Any]]:
        return [_insight_row(o, c) for c in campaigns]

    pager = report_pager(state, start, end, len(campaigns), make_rows)
    return _list(state, request, "insights", pager, f"insights|{account}|{start}|{end}")


def _insight_row(o: DayOutcomeLike, c: SimCampaignLike) -> dict[str, Any]:
    day = o.channels[c.channel]
    return {
        "account_id": c.account_id.removeprefix("act_"),
        "account_currency": c.currency,
        "campaign_id": c.external_id,
        "campaign_name": c.name,
        "date_start": o.day.isoformat(),
        "date_stop": o.day.isoformat(),
        "spend": f"{day.spend:.2f}",
        "impressions": str(int(day.impressions)),
        "clicks": str(int(day.clicks)),
        "action_values": [{"action_type": "omni_purchase", "value": f"{day.attributed_revenue:.2f}"}],
    }


def _edit(state: SandboxState, object_id: str, request: Request, form: dict[str, str]) -> Response:
    if (refused := guard(state, DIALECT, "edit", "meta:write", request, _token(request, form))) is not None:
        return refused
    campaign = state.campaign("meta", object_id)
    if campaign is None:
        return DIALECT.error(
            state, "not_found", f"Unsupported post request. Object with ID '{object_id}' does not exist"
        )
    raw = form.get("daily_budget")
    if raw is None or not re.fullmatch(r"\d+", raw):
        return DIALECT.error(
            state,
            "invalid",
            f"(#100) `daily_budget` must be a whole number of cents as a string, got {raw!r}",
        )
    cents = int(raw)
    if cents < MIN_BUDGET_CENTS:
        return DIALECT.error(
            state, "invalid", f"(#100) `daily_budget` must be at least {MIN_BUDGET_CENTS} cents"
        )
    key = idempotency_key(request, form.get("request_id"))
    fingerprint = state.fingerprint("meta-edit", object_id, cents)
    with state.lock:
        try:
            stored = state.recall("meta", key, fingerprint)
        except IdempotencyConflict as exc:
            return DIALECT.error(state, "conflict", str(exc))
        if stored is not None:
            return replay(DIALECT, state, stored.status, stored.body)
        try:
            state.check_edit("meta", campaign, cents / 100)
        except EditRefused as exc:
            kind = "edit_limit" if exc.code == "EDIT_LIMIT" else "invalid"
            refused = DIALECT.error(state, kind, f"(#100) {exc}")
            state.remember("meta", key, fingerprint, refused.status_code, json.loads(bytes(refused.body)))
            return refused
        state.apply("meta", campaign, cents / 100, key)
        body = {"success": True}
        state.remember("meta", key, fingerprint, 200, body)
    return answer_applied(state, DIALECT, "edit", body, applied=True)


async def _form(request: Request) -> dict[str, str]:
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return {k: v[-1] for k, v in parse_qs(raw.decode(errors="replace")).items()}


def router(state: SandboxState) -> APIRouter:
    r = APIRouter(tags=["meta"])

    @r.get(PREFIX + "/me/adaccounts")
    def accounts(request: Request) -> Response:
        if (refused := guard(state, DIALECT, "accounts", "meta:read", request, _token(request))) is not None:
            return refused
        rows = [
            {"id": acct, "account_id": acct.removeprefix("act_"), "currency": currency, "account_status": 1}
            for acct, currency in sorted(state.accounts("meta").items())
        ]
        return _list(state, request, "accounts", list_pager(rows), "accounts")

    @r.get(PREFIX + "/{account_ref}/campaigns")
    def campaigns(account_ref: str, request: Request) -> Response:
        if (refused := guard(state, DIALECT, "campaigns", "meta:read", request, _token(request))) is not None:
            return refused
        if (account := _account(state, account_ref)) is None:
            return DIALECT.error(
                state, "not_found", f"ad account {account_ref!r} does not exist or is not yours"
            )
        rows = [_campaign_json(state, c) for c in state.campaigns("meta", account)]
        return _list(state, request, "campaigns", list_pager(rows), f"campaigns|{account}")

    @r.get(PREFIX + "/{account_ref}/adsets")
    def adsets(account_ref: str, request: Request) -> Response:
        if (refused := guard(state, DIALECT, "adsets", "meta:read", request, _token(request))) is not None:
            return refused
        if (account := _account(state, account_ref)) is None:
            return DIALECT.error(
                state, "not_found", f"ad account {account_ref!r} does not exist or is not yours"
            )
        rows = [
            {
                "id": f"{c.external_id}01",
                "campaign_id": c.external_id,
                "name": f"{c.name} | ad set",
                "status": "ACTIVE",
                "learning_stage_info": _learning(state, c),
            }
            for c in state.campaigns("meta", account)
        ]
        return _list(state, request, "adsets", list_pager(rows), f"adsets|{account}")

    @r.get(PREFIX + "/{account_ref}/insights")
    def insights(account_ref: str, request: Request) -> Response:
        if (refused := guard(state, DIALECT, "insights", "meta:read", request, _token(request))) is not None:
            return refused
        if (account := _account(state, account_ref)) is None:
            return DIALECT.error(
                state, "not_found", f"ad account {account_ref!r} does not exist or is not yours"
            )
        return _insights(state, account, request)

    @r.get(PREFIX + "/{object_id}")
    def read_object(object_id: str, request: Request) -> Response:
        if (refused := guard(state, DIALECT, "campaign", "meta:read", request, _token(request))) is not None:
            return refused
        campaign = state.campaign("meta", object_id)
        if campaign is None:
            return DIALECT.error(state, "not_found", f"Object with ID '{object_id}' does not exist")
        return answer(state, DIALECT, "campaign", _campaign_json(state, campaign))

    @r.post(PREFIX + "/{object_id}")
    async def edit(object_id: str, request: Request) -> Response:
        form = await _form(request)
        return await run_in_threadpool(_edit, state, object_id, request, form)

    return r
