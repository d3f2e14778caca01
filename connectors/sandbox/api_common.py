"""What every dialect route does around its own work: auth, faults before and after, the answer.

A route calls :func:`guard` first (token scope, then armed rate-limit / 5xx / slow faults), does its
work, and returns through :func:`answer` (which may truncate the body when such a fault is armed and
stamps the dialect's request-id header). A budget change answers through :func:`answer_applied`, which,
when a ``timeout_after_apply`` fault is armed, holds the answer so the client times out, or drops it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from connectors.sandbox.api_auth import bearer
from connectors.sandbox.api_state import SandboxState
from connectors.sandbox.faults import Fault, InjectedDrop

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

# kind is one of: unauthenticated, forbidden, rate_limited, unavailable, invalid, not_found, conflict
ErrorBody = Callable[[str, str, str, Fault | None], tuple[int, Any]]


@dataclass(frozen=True)
class Dialect:
    """A dialect's name, request-id header and error envelope maker."""

    name: str
    request_id_header: str
    error_body: ErrorBody

    def error(
        self,
        state: SandboxState,
        kind: str,
        message: str,
        *,
        fault: Fault | None = None,
        status: int | None = None,
    ) -> JSONResponse:
        request_id = state.request_id(self.name)
        code, body = self.error_body(kind, message, request_id, fault)
        headers = {self.request_id_header: request_id}
        if kind == "rate_limited" and fault is not None:
            headers["Retry-After"] = _seconds(fault.retry_after)
        return JSONResponse(body, status_code=status or code, headers=headers)


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.3f}"


def guard(
    state: SandboxState, dialect: Dialect, route: str, scope: str, request: Request, token: str | None = None
) -> JSONResponse | None:
    """Refuse the request the way the platform would (auth, armed faults); None lets it through.

    The token is ``token`` when given (Meta's ``access_token``), else the request's Bearer token.
    """
    token = token or bearer(request.headers.get("authorization"))
    denied = state.tokens.check(token, scope)
    if denied == 401:
        return dialect.error(state, "unauthenticated", "the access token is missing, unknown or expired")
    if denied == 403:
        return dialect.error(
            state, "forbidden", f"the access token lacks the `{scope}` scope this call needs"
        )
    fault = state.faults.take(dialect.name, route, ("rate_limit", "server_error", "slow"))
    if fault is None:
        return None
    if fault.kind == "rate_limit":
        return dialect.error(state, "rate_limited", "too many requests; retry later", fault=fault)
    if fault.kind == "server_error":
        return dialect.error(
            state, "unavailable", "the service is temporarily unavailable", fault=fault, status=fault.status
        )
    state.stopping.wait(fault.delay)  # slow: answer normally, late
    return None


def answer(
    state: SandboxState,
    dialect: Dialect,
    route: str,
    body: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    out = {dialect.request_id_header: state.request_id(dialect.name), **(headers or {})}
    if state.faults.take(dialect.name, route, ("truncated",)) is not None:
        raw = json.dumps(body).encode()
        return Response(
            raw[: max(1, len(raw) // 2)], status_code=status, media_type="application/json", headers=out
        )
    return JSONResponse(body, status_code=status, headers=out)


def answer_applied(
    state: SandboxState, dialect: Dialect, route: str, body: Any, *, applied: bool, status: int = 200
) -> Response:
    """The answer to a budget change; when one was applied, an armed ``timeout_after_apply`` fault holds
    it ``delay`` seconds (the client times out) and, with ``drop``, then cuts the connection mid-body."""
    fault = state.faults.take(dialect.name, route, ("timeout_after_apply",)) if applied else None
    if fault is not None:
        state.stopping.wait(fault.delay)
        if fault.drop:
            return DroppedAnswer()
    return answer(state, dialect, route, body, status=status)


class DroppedAnswer(Response):
    """Starts a 200 answer, sends a few bytes of it, then aborts the connection."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"256")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"resu', "more_body": True})
        raise InjectedDrop("sandbox fault: the connection was dropped after the change was applied")


def malformed_fault(state: SandboxState, dialect: Dialect, route: str) -> Fault | None:
    return state.faults.take(dialect.name, route, ("malformed",))


def idempotency_key(request: Request, body_key: Any = None) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key:
        return key
    return str(body_key) if isinstance(body_key, (str, int)) and str(body_key) else None


def replay(dialect: Dialect, state: SandboxState, status: int, body: Any) -> Response:
    headers = {dialect.request_id_header: state.request_id(dialect.name), REPLAYED_HEADER: "true"}
    return JSONResponse(body, status_code=status, headers=headers)
