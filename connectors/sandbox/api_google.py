"""A Google Ads-like REST dialect (v17 shapes): campaigns, campaign budgets, mutate, search.

    GET  /google/v17/customers:listAccessibleCustomers
    GET  /google/v17/customers/{customer_id}/campaigns
    GET  /google/v17/customers/{customer_id}/campaignBudgets
    POST /google/v17/customers/{customer_id}/campaignBudgets:mutate     route "mutate"
    POST /google/v17/customers/{customer_id}/googleAds:search           route "search"

Budgets are ``amountMicros`` (int64 as a string, a whole number of cents). A mutate is all-or-nothing
unless ``partialFailure`` is true, when the failed operations come back in ``partialFailureError``
with their operation index; ``validateOnly`` checks without applying. The search takes a minimal GAQL
(``... FROM campaign WHERE segments.date BETWEEN 'A' AND 'B'``) and pages with ``pageToken``.
"""

from __future__ import annotations

import hashlib
import json
import re
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
    decode_cursor,
    encode_cursor,
    page,
    report_pager,
)
from connectors.sandbox.faults import Fault, RowShape, malform

PREFIX = "/google/v17"
FAILURE_TYPE = "type.googleapis.com/google.ads.googleads.v17.errors.GoogleAdsFailure"
ROW_SHAPE = RowShape(
    money="metrics.costMicros",
    date="segments.date",
    currency="customer.currencyCode",
    campaign="campaign.id",
    drift_to="cost_micros",
)
DEFAULT_PAGE_SIZE = 1000
_STATUS = {
    "unauthenticated": (401, "UNAUTHENTICATED", {"authenticationError": "NOT_AUTHORIZED"}),
    "forbidden": (403, "PERMISSION_DENIED", {"authorizationError": "ACTION_NOT_PERMITTED"}),
    "rate_limited": (429, "RESOURCE_EXHAUSTED", {"quotaError": "RESOURCE_EXHAUSTED"}),
    "unavailable": (503, "UNAVAILABLE", {"internalError": "TRANSIENT_ERROR"}),
    "invalid": (400, "INVALID_ARGUMENT", {"requestError": "INVALID_INPUT"}),
    "not_found": (404, "NOT_FOUND", {"mutateError": "RESOURCE_NOT_FOUND"}),
    "conflict": (409, "ALREADY_EXISTS", {"requestError": "DUPLICATE_REQUEST_ID"}),
}
_EDIT_CODES = {
    "NON_POSITIVE": {"rangeError": "TOO_LOW"},
    "TOO_LARGE": {"rangeError": "TOO_HIGH"},
    "EDIT_LIMIT": {"campaignBudgetError": "TOO_MANY_BUDGET_CHANGES_TODAY"},
    "HISTORY": {"campaignBudgetError": "CAMPAIGN_NOT_YET_STARTED"},
}
_QUERY = re.compile(
    r"\bFROM\s+campaign\b.*\bsegments\.date\s+BETWEEN\s+'(\d{4}-\d{2}-\d{2})'\s+AND\s+'(\d{4}-\d{2}-\d{2})'",
    re.IGNORECASE | re.DOTALL,
)


def _failure(errors: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    return {"@type": FAILURE_TYPE, "errors": errors, "requestId": request_id}


def _error_body(kind: str, message: str, request_id: str, fault: Fault | None) -> tuple[int, Any]:
    status, name, code = _STATUS[kind]
    if fault is not None and kind == "unavailable":
        status = fault.status
    error = {"errorCode": code, "message": message}
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": name,
            "details": [_failure([error], request_id)],
        }
    }
    return status, body


DIALECT = Dialect("google", "request-id", _error_body)


def budget_id(campaign: SimCampaignLike) -> str:
    """A stable numeric campaign-budget id for a campaign."""
    return str(int(hashlib.sha256(f"budget:{campaign.external_id}".encode()).hexdigest()[:12], 16))


def _campaign_json(state: SandboxState, c: SimCampaignLike) -> dict[str, Any]:
    learning = state.learning(c) > 0
    return {
        "resourceName": f"customers/{c.account_id}/campaigns/{c.external_id}",
        "id": c.external_id,
        "name": c.name,
        "status": "ENABLED",
        "campaignBudget": f"customers/{c.account_id}/campaignBudgets/{budget_id(c)}",
        "primaryStatus": "LEARNING" if learning else "ELIGIBLE",
        "primaryStatusReasons": ["BIDDING_STRATEGY_LEARNING"] if learning else [],
        "labels": [f"channel:{c.channel}"],
    }


def _budget_json(state: SandboxState, c: SimCampaignLike) -> dict[str, Any]:
    return {
        "resourceName": f"customers/{c.account_id}/campaignBudgets/{budget_id(c)}",
        "id": budget_id(c),
        "amountMicros": str(round(state.budget(c) * 100) * 10_000),
        "deliveryMethod": "STANDARD",
        "explicitlyShared": False,
    }


def _known(state: SandboxState, customer_id: str) -> Response | None:
    if customer_id not in state.accounts("google"):
        return DIALECT.error(state, "not_found", f"customer {customer_id} is not accessible with this token")
    return None


def _op_error(index: int, code: dict[str, str], message: str, *leaf: str) -> dict[str, Any]:
    path = [{"fieldName": "operations", "index": index}, *({"fieldName": f} for f in leaf)]
    return {"errorCode": code, "message": message, "location": {"fieldPathElements": path}}


def _check_operation(
    state: SandboxState,
    customer_id: str,
    index: int,
    op: Any,
    by_budget: dict[str, SimCampaignLike],
    pending: dict[str, int],
) -> tuple[SimCampaignLike, float] | dict[str, Any]:
    """The campaign and new budget an operation asks for, or its error (with its index)."""
    update = op.get("update") if isinstance(op, dict) else None
    if not isinstance(update, dict):
        return _op_error(
            index, {"requestError": "OPERATION_REQUIRED"}, "only `update` operations are supported"
        )
    mask = str(op.get("updateMask", ""))
    if not {"amount_micros", "amountMicros"} & set(mask.replace(" ", "").split(",")):
        return _op_error(
            index,
            {"fieldMaskError": "FIELD_NOT_FOUND"},
            "`updateMask` must name amount_micros",
            "update_mask",
        )
    name = str(update.get("resourceName", ""))
    prefix = f"customers/{customer_id}/campaignBudgets/"
    campaign = by_budget.get(name[len(prefix) :]) if name.startswith(prefix) else None
    if campaign is None:
        return _op_error(
            index,
            {"mutateError": "RESOURCE_NOT_FOUND"},
            f"no campaign budget {name!r}",
            "update",
            "resource_name",
        )
    raw = update.get("amountMicros")
    if isinstance(raw, bool) or not re.fullmatch(r"-?\d+", str(raw)):
        return _op_error(
            index,
            {"fieldError": "INVALID_VALUE"},
            f"`amountMicros` must be an int64, got {raw!r}",
            "update",
            "amount_micros",
        )
    micros = int(str(raw))
    if micros % 10_000:
        return _op_error(
            index,
            {"campaignBudgetError": "NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT"},
            f"amountMicros {micros} is not a whole number of cents (a multiple of 10000)",
            "update",
            "amount_micros",
        )
    value = micros / 1_000_000
    try:
        state.check_edit("google", campaign, value, pending=pending.get(campaign.external_id, 0))
    except EditRefused as exc:
        return _op_error(index, _EDIT_CODES[exc.code], str(exc), "update", "amount_micros")
    pending[campaign.external_id] = pending.get(campaign.external_id, 0) + 1
    return campaign, value


def _mutate(state: SandboxState, customer_id: str, request: Request, body: Any) -> Response:
    if (refused := guard(state, DIALECT, "mutate", "google:write", request)) is not None:
        return refused
    if (missing := _known(state, customer_id)) is not None:
        return missing
    if not isinstance(body, dict) or not isinstance(body.get("operations"), list) or not body["operations"]:
        return DIALECT.error(state, "invalid", "the body must be JSON with a non-empty `operations` list")
    key = idempotency_key(request, body.get("requestId"))
    validate_only = bool(body.get("validateOnly", False))
    partial = bool(body.get("partialFailure", False))
    fingerprint = state.fingerprint("google-mutate", customer_id, body)
    with state.lock:
        try:
            stored = None if validate_only else state.recall("google", key, fingerprint)
        except IdempotencyConflict as exc:
            return DIALECT.error(state, "conflict", str(exc))
        if stored is not None:
            return replay(DIALECT, state, stored.status, stored.body)
        by_budget = {budget_id(c): c for c in state.campaigns("google", customer_id)}
        pending: dict[str, int] = {}
        checked = [
            _check_operation(state, customer_id, i, op, by_budget, pending)
            for i, op in enumerate(body["operations"])
        ]
        errors = [c for c in checked if isinstance(c, dict)]
        request_id = state.request_id("google")
        if errors and not partial:
            status, envelope = (
                400,
                {
                    "error": {
                        "code": 400,
                        "status": "INVALID_ARGUMENT",
                        "message": "Request contains an invalid argument; nothing was applied.",
                        "details": [_failure(errors, request_id)],
                    }
                },
            )
            state.remember("google", key, fingerprint, status, envelope)
            return answer(state, DIALECT, "mutate", envelope, status=status)
        results: list[dict[str, Any]] = []
        applied = 0
        for item in checked:
            if isinstance(item, dict):
                results.append({})
                continue
            campaign, value = item
            if not validate_only:
                state.apply("google", campaign, value, key)
                applied += 1
            results.append({"resourceName": f"customers/{customer_id}/campaignBudgets/{budget_id(campaign)}"})
        out: dict[str, Any] = {"results": [] if validate_only else results}
        if errors:
            out["partialFailureError"] = {
                "code": 3,
                "message": f"{len(errors)} of {len(checked)} operations failed (see details).",
                "details": [_failure(errors, request_id)],
            }
        if not validate_only:
            state.remember("google", key, fingerprint, 200, out)
    return answer_applied(state, DIALECT, "mutate", out, applied=applied > 0)


def _search(state: SandboxState, customer_id: str, request: Request, body: Any) -> Response:
    if (refused := guard(state, DIALECT, "search", "google:read", request)) is not None:
        return refused
    if (missing := _known(state, customer_id)) is not None:
        return missing
    query = body.get("query") if isinstance(body, dict) else None
    match = _QUERY.search(query) if isinstance(query, str) else None
    if match is None:
        return DIALECT.error(
            state,
            "invalid",
            "`query` must read `SELECT ... FROM campaign WHERE segments.date BETWEEN 'YYYY-MM-DD' AND "
            "'YYYY-MM-DD'`",
        )
    try:
        start, end = date.fromisoformat(match.group(1)), date.fromisoformat(match.group(2))
        size = int(body.get("pageSize") or DEFAULT_PAGE_SIZE)
        if size < 1 or size > 10_000:
            raise ValueError(f"pageSize must be 1..10000, got {size}")
        scope = f"{customer_id}|{start}|{end}|{size}"
        offset = decode_cursor(body["pageToken"], scope) if body.get("pageToken") else 0
    except ValueError as exc:
        return DIALECT.error(state, "invalid", str(exc))
    campaigns = state.campaigns("google", customer_id)

    def make_rows(o: DayOutcomeLike) -> list[dict[str, Any]]:
        return [_metric_row(o, c) for c in campaigns]

    pager = report_pager(state, start, end, len(campaigns), make_rows)
    chunk, nxt, total = page(pager, offset, size)
    if (fault := malformed_fault(state, DIALECT, "search")) is not None:
        chunk = malform(chunk, fault, ROW_SHAPE)
    out: dict[str, Any] = {
        "results": chunk,
        "totalResultsCount": str(total),
        "fieldMask": "campaign,metrics",
    }
    if nxt is not None:
        out["nextPageToken"] = encode_cursor(nxt, scope)
    return answer(state, DIALECT, "search", out)


def _metric_row(o: DayOutcomeLike, c: SimCampaignLike) -> dict[str, Any]:
    day = o.channels[c.channel]
    return {
        "customer": {"id": c.account_id, "currencyCode": c.currency},
        "campaign": {
            "resourceName": f"customers/{c.account_id}/campaigns/{c.external_id}",
            "id": c.external_id,
            "name": c.name,
        },
        "segments": {"date": o.day.isoformat()},
        "metrics": {
            "costMicros": str(round(day.spend * 1_000_000)),
            "impressions": str(int(day.impressions)),
            "clicks": str(int(day.clicks)),
            "conversionsValue": round(day.attributed_revenue, 2),
        },
    }


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def router(state: SandboxState) -> APIRouter:
    r = APIRouter(tags=["google"])

    @r.get(PREFIX + "/customers:listAccessibleCustomers")
    def list_customers(request: Request) -> Response:
        if (refused := guard(state, DIALECT, "customers", "google:read", request)) is not None:
            return refused
        names = [f"customers/{cid}" for cid in sorted(state.accounts("google"))]
        return answer(state, DIALECT, "customers", {"resourceNames": names})

    @r.get(PREFIX + "/customers/{customer_id}")
    def customer(customer_id: str, request: Request) -> Response:
        if (refused := guard(state, DIALECT, "customer", "google:read", request)) is not None:
            return refused
        if (missing := _known(state, customer_id)) is not None:
            return missing
        body = {
            "resourceName": f"customers/{customer_id}",
            "id": customer_id,
            "currencyCode": state.accounts("google")[customer_id],
            "timeZone": "UTC",
            "manager": False,
        }
        return answer(state, DIALECT, "customer", body)

    @r.get(PREFIX + "/customers/{customer_id}/campaigns")
    def campaigns(customer_id: str, request: Request) -> Response:
        if (refused := guard(state, DIALECT, "campaigns", "google:read", request)) is not None:
            return refused
        if (missing := _known(state, customer_id)) is not None:
            return missing
        rows = [{"campaign": _campaign_json(state, c)} for c in state.campaigns("google", customer_id)]
        return answer(state, DIALECT, "campaigns", {"results": rows})

    @r.get(PREFIX + "/customers/{customer_id}/campaignBudgets")
    def budgets(customer_id: str, request: Request) -> Response:
        if (refused := guard(state, DIALECT, "budgets", "google:read", request)) is not None:
            return refused
        if (missing := _known(state, customer_id)) is not None:
            return missing
        rows = [{"campaignBudget": _budget_json(state, c)} for c in state.campaigns("google", customer_id)]
        return answer(state, DIALECT, "budgets", {"results": rows})

    @r.post(PREFIX + "/customers/{customer_id}/campaignBudgets:mutate")
    async def mutate(customer_id: str, request: Request) -> Response:
        body = await _json(request)
        return await run_in_threadpool(_mutate, state, customer_id, request, body)

    @r.post(PREFIX + "/customers/{customer_id}/googleAds:search")
    async def search(customer_id: str, request: Request) -> Response:
        body = await _json(request)
        return await run_in_threadpool(_search, state, customer_id, request, body)

    return r
