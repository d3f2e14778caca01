"""What a route may ask for: the app's context, a session, the caller's token, a role check.

``SessionDep`` and ``CurrentToken`` are named dependencies (as in the full-stack FastAPI template). A
route declares who may call it with ``**allow("finance", "ops")``: the same tuple guards the route
(401 without a valid token, 403 for another role) and is published in OpenAPI as ``x-roles``, so the
tests can walk ``/openapi.json`` and try every role on every route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from agents.approvals import PolicyWithApproval
from budgetloop.clock import Clock
from budgetloop.config import Settings
from budgetloop.db.session import session_scope
from budgetloop.store import tokens

PolicyProvider = Callable[[Session], PolicyWithApproval]
OnApproved = Callable[[int], None]


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    policy_provider: PolicyProvider
    on_approved: OnApproved | None
    slack: WebClient | None

    def now(self) -> datetime:
        return self.clock.now()


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    """One session per request; the route commits what it writes, anything else is rolled back."""
    session = ctx.sessions()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: str
    slack_user_id: str | None

    @property
    def actor(self) -> str:
        """Who the caller is in the audit log and in the policy's approver list."""
        return self.slack_user_id or self.name


_bearer = HTTPBearer(auto_error=False, description="An API token from `budgetloop token create`.")


def get_current_token(
    ctx: ContextDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> TokenInfo:
    """401 unless the request carries a live bearer token. Uses its own short unit of work, so the
    request's session never holds a write lock for ``last_used_at``."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send `Authorization: Bearer <token>` "
            "(create one with `budgetloop token create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with session_scope(ctx.sessions) as session:
        row = tokens.authenticate(session, token=credentials.credentials, now=ctx.now())
        info = None if row is None else TokenInfo(row.id, row.name, row.role, row.slack_user_id)
    if info is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked token: ask an admin for a new one",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return info


CurrentToken = Annotated[TokenInfo, Depends(get_current_token)]


class RoleGuard:
    def __init__(self, roles: tuple[str, ...]) -> None:
        unknown = set(roles) - set(tokens.ROLES)
        if unknown:
            raise ValueError(f"unknown role(s) {sorted(unknown)}; roles are {tokens.ROLES}")
        self.roles = roles

    def __call__(self, token: CurrentToken) -> TokenInfo:
        if token.role not in self.roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {token.role!r} may not call this route; it needs one of {list(self.roles)}",
            )
        return token


READERS = ("finance", "approver", "ops", "admin")


def allow(*roles: str, responses: dict[int | str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Route keyword arguments: guard the route by role and publish the roles in OpenAPI (``x-roles``)."""
    return {
        "dependencies": [Depends(RoleGuard(tuple(roles)))],
        "openapi_extra": {"x-roles": list(roles)},
        "responses": {
            401: {"description": "no valid bearer token"},
            403: {"description": "role not allowed"},
            **(responses or {}),
        },
    }
