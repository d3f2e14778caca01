"""A retail-media-like dialect (an Amazon Ads / Criteo style REST API).

    GET /retail/v1/campaigns?page&pageSize                          route "campaigns"
    PUT /retail/v1/campaigns/budgets   [{"campaignId", "dailyBudget"}, ...]    route "budgets"
    GET /retail/v1/reports/daily?start&end&page&pageSize            route "reports"

Budgets and report costs are decimal numbers in the advertiser's currency. A budget update answers
207 with ``{"success": [{"index", ...}], "error": [{"index", "code", "details"}]}``: every valid item is
applied, each refused one is listed by its index. Pages are numbered from 1 (``totalPages``). Errors
are ``{"code", "details", "requestId"}``.
"""

from __future__ import annotations

import json
import math
from datetime import date
from typing import Any

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
    SandboxState,
    SimCampaignLike,
    page,
    report_pager,
)
from connectors.sandbox.faults import Fault, RowShape, malform

PREFIX = "/retail/v1"
ROW_SHAPE = RowShape(
    money="cost", date="date", currency="currencyCode", campaign="campaignId", drift_to="spend"
)
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_ERRORS = {
    "unauthenticated": (401, "UNAUTHORIZED"),
    "forbidden": (403, "FORBIDDEN"),
    "rate_limited": (429, "THROTTLED"),
    "unavailable": (503, "SERVICE_UNAVAILABLE"),
    "invalid": (400, "INVALID_ARGUMENT"),
    "not_found": (404, "NOT_FOUND"),
    "conflict": (409, "IDEMPOTENCY_CONFLICT"),
}
_EDIT_CODES = {
    "NON_POSITIVE": "BUDGET_TOO_LOW",
    "TOO_LARGE": "BUDGET_TOO_HIGH",
    "EDIT_LIMIT": "EDIT_LIMIT_EXCEEDED",
    "HISTORY": "CAMPAIGN_NOT_STARTED",
}


def _error_body(kind: str, message: str, request_id: str, fault: Fault | None) -> tuple[int, Any]:
    status, code = _ERRORS[kind]
    if fault is not None and kind == "unavailable":
        status = fault.status
    return status, {"code": code, "details": message, "requestId": request_id}


DIALECT = Dialect("retail", "x-request-id", _error_body)


def _paging(request: Request) -> tuple[int, int]:
    page_no = int(request.query_params.get("page", 1))
    size = int(request.query_params.get("pageSize", DEFAULT_PAGE_SIZE))
    if page_no < 1:
        raise ValueError(f"`page` counts from 1, got {page_no}")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"`pageSize` must be 1..{MAX_PAGE_SIZE}, got {size}")
    return page_no, size


def _paged(rows: list[dict[str, Any]], page_no: int, size: int) -> tuple[list[dict[str, Any]], int]:
    total = max(1, math.ceil(len(rows) / size))
    return rows[(page_no - 1) * size : page_no * size], total


def _campaign_json(state: SandboxState, c: SimCampaignLike) -> dict[str, Any]:
    return {
        "campaignId": c.external_id,
        "advertiserId": c.account_id,
        "name": c.name,
        "state": "ENABLED",
        "dailyBudget": state.budget(c),
        "currencyCode": c.currency,
        "deliveryStatus": "LEARNING" if state.learning(c) > 0 else "DELIVERING",
        "tags": {"channel": c.channel},
    }


def _check_item(
    state: SandboxState, index: int, item: Any, pending: dict[str, int]
) -> tuple[SimCampaignLike, float] | dict[str, Any]:
    if not isinstance(item, dict):
        return {"index": index, "code": "INVALID_ARGUMENT", "details": "each item must be an object"}
    campaign = state.campaign("retail", str(item.get("campaignId", "")))
    if campaign is None:
        return {"index": index, "code": "NOT_FOUND", "details": f"no campaign {item.get('campaignId')!r}"}
    raw = item.get("dailyBudget")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or round(raw, 2) != raw:
        return {
            "index": index,
            "code": "INVALID_ARGUMENT",
            "details": f"`dailyBudget` must be a number with at most 2 decimals, got {raw!r}",
        }
    try:
        state.check_edit("retail", campaign, float(raw), pending=pending.get(campaign.external_id, 0))
    except EditRefused as exc:
        return {"index": index, "code": _EDIT_CODES[exc.code], "details": str(exc)}
    pending[campaign.external_id] = pending.get(campaign.external_id, 0) + 1
    return campaign, float(raw)


def _budgets(state: SandboxState, request: Request, body: Any) -> Response:
    if (refused := guard(state, DIALECT, "budgets", "retail:write", request)) is not None:
        return refused
    items = body.get("campaigns") if isinstance(body, dict) else body
    if not isinstance(items, list) or not items:
        return DIALECT.error(
            state, "invalid", 'the body must be a non-empty list of {"campaignId", "dailyBudget"}'
        )
    key = idempotency_key(request, body.get("requestId") if isinstance(body, dict) else None)
    fingerprint = state.fingerprint("retail-budgets", items)
    applied = 0
    with state.lock:
        try:
            stored = state.recall("retail", key, fingerprint)
        except IdempotencyConflict as exc:
            return DIALECT.error(state, "conflict", str(exc))
        if stored is not None:
            return replay(DIALECT, state, stored.status, stored.body)
        pending: dict[str, int] = {}
        success: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            checked = _check_item(state, index, item, pending)
            if isinstance(checked, dict):
                errors.append(checked)
                continue
            campaign, value = checked
            change = state.apply("retail", campaign, value, key)
            applied += 1
            success.append({"index": index, "campaignId": campaign.external_id, "dailyBudget": change.new})
        out = {"success": success, "error": errors}
        state.remember("retail", key, fingerprint, 207, out)
    return answer_applied(state, DIALECT, "budgets", out, applied=applied > 0, status=207)


def _reports(state: SandboxState, request: Request) -> Response:
    try:
        start = date.fromisoformat(request.query_params["start"])
        end = date.fromisoformat(request.query_params["end"])
        page_no, size = _paging(request)
    except (KeyError, ValueError) as exc:
        return DIALECT.error(state, "invalid", f"`start` and `end` (YYYY-MM-DD), `page`, `pageSize`: {exc}")
    campaigns = state.campaigns("retail")

    def make_rows(o: DayOutcomeLike) -> list[dict[str, Any]]:
        return [_report_row(o, c) for c in campaigns]

    pager = report_pager(state, start, end, len(campaigns), make_rows)
    chunk, _, total = page(pager, (page_no - 1) * size, size)
    if (fault := malformed_fault(state, DIALECT, "reports")) is not None:
        chunk = malform(chunk, fault, ROW_SHAPE)
    body = {"rows": chunk, "page": page_no, "totalPages": max(1, math.ceil(total / size)), "totalRows": total}
    return answer(state, DIALECT, "reports", body)


def _report_row(o: DayOutcomeLike, c: SimCampaignLike) -> dict[str, Any]:
    day = o.channels[c.channel]
    return {
        "date": o.day.isoformat(),
        "campaignId": c.external_id,
        "advertiserId": c.account_id,
        "cost": round(day.spend, 2),
        "impressions": int(day.impressions),
        "clicks": int(day.clicks),
        "attributedSales14d": round(day.attributed_revenue, 2),
        "currencyCode": c.currency,
    }


def router(state: SandboxState) -> APIRouter:
    r = APIRouter(tags=["retail"])

    @r.get(PREFIX + "/campaigns")
    def campaigns(request: Request) -> Response:
        if (refused := guard(state, DIALECT, "campaigns", "retail:read", request)) is not None:
            return refused
        try:
            page_no, size = _paging(request)
        except ValueError as exc:
            return DIALECT.error(state, "invalid", str(exc))
        rows = [_campaign_json(state, c) for c in state.campaigns("retail")]
        chunk, total = _paged(rows, page_no, size)
        return answer(state, DIALECT, "campaigns", {"campaigns": chunk, "page": page_no, "totalPages": total})

    @r.put(PREFIX + "/campaigns/budgets")
    async def budgets(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return await run_in_threadpool(_budgets, state, request, body)

    @r.get(PREFIX + "/reports/daily")
    def reports(request: Request) -> Response:
        if (refused := guard(state, DIALECT, "reports", "retail:read", request)) is not None:
            return refused
        return _reports(state, request)

    return r
