"""The sandbox ad platforms: one FastAPI app over a simulated market.

    /google/v17/...     a Google Ads-like API          (connectors.sandbox.api_google)
    /meta/v21.0/...     a Meta Marketing API-like API  (connectors.sandbox.api_meta)
    /retail/v1/...      a retail-media-like API        (connectors.sandbox.api_retail)
    /store/v1/...       the business's own revenue     (connectors.sandbox.api_store)
    per-region reports and geo targeting in each dialect  (connectors.sandbox.api_geo)
    /admin/...          the sandbox's controls (no auth: it listens on loopback only)

Admin API:

    POST   /admin/clock    {"date": "YYYY-MM-DD"}   simulate every day before that date (never backwards)
    GET    /admin/state                             today, budgets, learning, edits today, armed faults
    POST   /admin/faults   a Fault or {"faults": [...]}   arm faults (see connectors.sandbox.faults)
    GET    /admin/faults / DELETE /admin/faults     list / clear the armed faults
    GET    /admin/applied?after=SEQ                 every budget change actually applied, in order

Simulated time moves only through ``/admin/clock`` (or the market object in-process).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict

from connectors.sandbox import api_geo, api_google, api_meta, api_retail, api_store
from connectors.sandbox.api_auth import TokenTable
from connectors.sandbox.api_state import MarketLike, SandboxState
from connectors.sandbox.faults import Fault, FaultPlan

__all__ = ["create_sandbox_app", "sandbox_state"]


class ClockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    date: date


class FaultList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    faults: list[Fault]


def create_sandbox_app(
    market: MarketLike,
    *,
    faults: FaultPlan | Iterable[Fault] | None = None,
    tokens: Mapping[str, Iterable[str]] | None = None,
    edit_caps: Mapping[str, int] | None = None,
) -> FastAPI:
    """The sandbox app over ``market``.

    ``tokens`` maps each accepted token to its scopes (``google:read``, ``meta:write``, ...); by default
    the documented dev tokens of :mod:`connectors.sandbox.api_auth`. ``edit_caps`` overrides the budget
    edits allowed per campaign per day (``{"google": 4, "meta": 4, "retail": 6}``).
    """
    plan = faults if isinstance(faults, FaultPlan) else FaultPlan(list(faults or []))
    state = SandboxState(market, faults=plan, tokens=TokenTable(tokens), edit_caps=edit_caps)
    app = FastAPI(title="budgetloop sandbox ad platforms", version="1", docs_url=None, redoc_url=None)
    app.state.sandbox = state
    for module in (api_geo, api_google, api_meta, api_retail, api_store):
        app.include_router(module.router(state))
    _admin_routes(app, state)
    return app


def sandbox_state(app: FastAPI) -> SandboxState:
    state = getattr(app.state, "sandbox", None)
    if not isinstance(state, SandboxState):
        raise TypeError("this FastAPI app was not made by create_sandbox_app()")
    return state


def _summary(state: SandboxState) -> dict[str, Any]:
    market = state.market
    with state.lock:
        return {
            "today": market.today().isoformat(),
            "first_loop_day": market.first_loop_day.isoformat(),
            "campaigns": [
                {
                    "channel": c.channel,
                    "platform": c.platform,
                    "account_id": c.account_id,
                    "external_id": c.external_id,
                    "name": c.name,
                    "currency": c.currency,
                    "daily_budget": round(market.budget(c.channel), 2),
                    "learning_days_left": market.learning_days_left(c.channel),
                    "edits_today": sum(
                        1 for a in state.applied if a.campaign_id == c.external_id and a.day == market.today()
                    ),
                }
                for c in market.campaigns
            ],
            "applied": len(state.applied),
            "faults": [f.model_dump(mode="json") for f in state.faults.armed()],
            "edit_caps": state.edit_caps,
        }


def _admin_routes(app: FastAPI, state: SandboxState) -> None:
    @app.get("/admin/state", tags=["admin"])
    def admin_state() -> dict[str, Any]:
        return _summary(state)

    @app.post("/admin/clock", tags=["admin"])
    def admin_clock(body: ClockBody) -> dict[str, Any]:
        try:
            state.advance_to(body.date)
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return _summary(state)

    @app.post("/admin/faults", tags=["admin"])
    def admin_arm(body: Fault | FaultList) -> dict[str, Any]:
        for fault in body.faults if isinstance(body, FaultList) else [body]:
            state.faults.arm(fault)
        return {"faults": [f.model_dump(mode="json") for f in state.faults.armed()]}

    @app.get("/admin/faults", tags=["admin"])
    def admin_faults() -> dict[str, Any]:
        return {
            "faults": [f.model_dump(mode="json") for f in state.faults.armed()],
            "fired": state.faults.fired,
        }

    @app.delete("/admin/faults", tags=["admin"])
    def admin_clear() -> dict[str, Any]:
        state.faults.clear()
        return {"faults": []}

    @app.get("/admin/applied", tags=["admin"])
    def admin_applied(after: int = 0) -> dict[str, Any]:
        with state.lock:
            return {"applied": [a.public() for a in state.applied if a.seq > after]}
