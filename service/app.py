"""The application factory. Everything the app needs comes in as an argument: no globals, no wall clock.

    app = create_app(settings=Settings(), engine=make_engine(url), clock=WallClock(), slack=WebClient(...))

Routes: ``/healthz`` (no auth), ``/slack/interactions`` (Slack's signature), and under ``/api/v1`` the
finance REST API (bearer tokens; each route's roles are in OpenAPI as ``x-roles``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from slack_sdk import WebClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from budgetloop.clock import Clock
from budgetloop.config import Settings
from budgetloop.db.session import session_factory
from budgetloop.store import policy as policies
from service.deps import AppContext, ContextDep, OnApproved, PolicyProvider
from service.observability import observability_router
from service.routes import audit, change_requests, misc, reconciliation, scenarios
from service.schemas import HealthPublic
from service.slack import interactions

API_PREFIX = "/api/v1"


def active_policy(session: Session) -> Any:
    """The default policy provider: the last valid version recorded in the database."""
    return policies.active_policy(session)[1]


def create_app(
    *,
    settings: Settings,
    engine: Engine,
    clock: Clock,
    policy_provider: PolicyProvider | None = None,
    on_approved: OnApproved | None = None,
    slack: WebClient | None = None,
) -> FastAPI:
    """Build the service. ``slack`` None: no Slack messages are posted or updated (clicks still verify);
    ``on_approved(change_request_id)`` is called after an approval commits (the executor's entry)."""
    app = FastAPI(
        title="budgetloop",
        version="1",
        summary="Closed-loop marketing mix modeling: approvals, audit log, finance reporting.",
        description="Bearer tokens from `budgetloop token create`. Roles: finance reads, approver decides, "
        "ops edits the policy, admin manages tokens. Each route lists its roles as `x-roles`.",
    )
    app.state.ctx = AppContext(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        clock=clock,
        policy_provider=policy_provider or active_policy,
        on_approved=on_approved,
        slack=slack,
    )
    for router in (
        audit.router,
        change_requests.router,
        misc.models_router,
        misc.policy_router,
        misc.tokens_router,
        reconciliation.router,
        scenarios.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(interactions.router)
    app.include_router(observability_router(engine, include_healthz=False))  # /readyz, /metrics (issue 6)

    @app.get(
        "/healthz",
        response_model=HealthPublic,
        tags=["health"],
        summary="Liveness and database reachability",
        responses={
            503: {
                "description": "The database does not answer: "
                '`{"status": "error", "database": "error", "checks": {"database": {"ok": false, "detail": ...}}, '
                '"at": ...}`'
            }
        },
    )
    def healthz(ctx: ContextDep) -> Any:
        try:
            with ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # a probe answers, it does not crash: name the failed check
            detail = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            return JSONResponse(
                {
                    "status": "error",
                    "database": "error",
                    "checks": {"database": {"ok": False, "detail": detail}},
                    "at": _now_or_none(ctx),
                },
                status_code=503,
            )
        return {"status": "ok", "database": "ok", "at": _now_or_none(ctx)}

    return app


def _now_or_none(ctx: AppContext) -> str | None:
    """The service's time for a probe, or None where its clock cannot tell (a clock that follows a
    simulated worker reads the database, and has nothing to read before the worker's first job)."""
    try:
        return ctx.now().isoformat()
    except Exception:
        return None
