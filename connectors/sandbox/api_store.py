"""The business's own revenue, as an e-commerce backend would export it.

    GET /store/v1/daily_revenue?start&end&page&page_size            route "revenue"

Rows are ``{"date", "revenue" (a decimal string), "currency", "orders"}``; pages count from 1 and
``next_page`` is null on the last one. Errors are ``{"error": {"code", "message", "request_id"}}``.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from connectors.sandbox.api_common import Dialect, answer, guard, malformed_fault
from connectors.sandbox.api_state import DayOutcomeLike, SandboxState, page, report_pager
from connectors.sandbox.faults import Fault, RowShape, malform

PREFIX = "/store/v1"
ROW_SHAPE = RowShape(money="revenue", date="date", currency="currency", drift_to="gross_revenue")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
AVERAGE_ORDER_VALUE = 85.0
_ERRORS = {
    "unauthenticated": (401, "unauthenticated"),
    "forbidden": (403, "forbidden"),
    "rate_limited": (429, "rate_limited"),
    "unavailable": (503, "unavailable"),
    "invalid": (400, "invalid_request"),
    "not_found": (404, "not_found"),
    "conflict": (409, "conflict"),
}


def _error_body(kind: str, message: str, request_id: str, fault: Fault | None) -> tuple[int, Any]:
    status, code = _ERRORS[kind]
    if fault is not None and kind == "unavailable":
        status = fault.status
    return status, {"error": {"code": code, "message": message, "request_id": request_id}}


DIALECT = Dialect("store", "x-request-id", _error_body)


def _revenue(state: SandboxState, request: Request) -> Response:
    q = request.query_params
    try:
        start, end = date.fromisoformat(q["start"]), date.fromisoformat(q["end"])
        page_no = int(q.get("page", 1))
        size = int(q.get("page_size", DEFAULT_PAGE_SIZE))
        if page_no < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"`page` counts from 1 and `page_size` is 1..{MAX_PAGE_SIZE}")
    except (KeyError, ValueError) as exc:
        return DIALECT.error(state, "invalid", f"`start`, `end` (YYYY-MM-DD), `page`, `page_size`: {exc}")
    currency = state.currency()

    def make_rows(o: DayOutcomeLike) -> list[dict[str, Any]]:
        revenue = {"date": o.day.isoformat(), "revenue": f"{o.revenue:.2f}", "currency": currency}
        return [{**revenue, "orders": max(0, round(o.revenue / AVERAGE_ORDER_VALUE))}]

    chunk, _, total = page(report_pager(state, start, end, 1, make_rows), (page_no - 1) * size, size)
    total_pages = max(1, math.ceil(total / size))
    if (fault := malformed_fault(state, DIALECT, "revenue")) is not None:
        chunk = malform(chunk, fault, ROW_SHAPE)
    body = {"data": chunk, "page": page_no, "next_page": page_no + 1 if page_no < total_pages else None}
    return answer(state, DIALECT, "revenue", body)


def router(state: SandboxState) -> APIRouter:
    r = APIRouter(tags=["store"])

    @r.get(PREFIX + "/daily_revenue")
    def daily_revenue(request: Request) -> Response:
        if (refused := guard(state, DIALECT, "revenue", "store:read", request)) is not None:
            return refused
        return _revenue(state, request)

    return r
