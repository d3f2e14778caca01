"""API tokens: created once (the caller shows the token to its owner), stored as SHA-256, revocable.

Roles: ``finance`` reads (audit, change requests, models, reconciliation), ``approver`` also approves and
rejects, ``ops`` also edits the policy, ``admin`` manages tokens and digests. Which role may call which
route is declared on the route itself (see :mod:`service.deps`).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Literal, get_args

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from budgetloop.clock import ensure_utc
from budgetloop.db.audit import ApiToken
from budgetloop.errors import InputError
from budgetloop.store import audit

Role = Literal["finance", "approver", "ops", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
TOKEN_PREFIX = "blt_"
# last_used_at is refreshed at most this often, so a busy client does not write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session,
    *,
    name: str,
    role: str,
    now: datetime,
    created_by: str,
    slack_user_id: str | None = None,
) -> tuple[ApiToken, str]:
    """Store a new token and return (row, the token itself). The token is never stored or shown again."""
    now = ensure_utc(now, name="now")
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}", key="role", fix=f"choose one of {', '.join(ROLES)}")
    name = name.strip()
    if not name:
        raise InputError(
            "a token needs a name", key="name", fix="name it after its owner, e.g. `finance-alice`"
        )
    if session.execute(select(ApiToken.id).where(ApiToken.name == name)).first() is not None:
        raise InputError(f"a token named {name!r} exists already", key="name", fix="choose another name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=role,
        token_sha256=hash_token(token),
        created_at=now,
        created_by=created_by,
        slack_user_id=slack_user_id,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        action="token_created",
        actor=created_by,
        at=now,
        subject_type="api_token",
        subject_id=row.id,
        payload={"name": name, "role": role, "slack_user_id": slack_user_id},
    )
    return row, token


def authenticate(session: Session, *, token: str, now: datetime) -> ApiToken | None:
    """The live token row for a bearer token, or None (unknown or revoked). Refreshes ``last_used_at``."""
    row = session.execute(
        select(ApiToken).where(ApiToken.token_sha256 == hash_token(token))
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    now = ensure_utc(now, name="now")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        row.last_used_at = now
    return row


def revoke_token(session: Session, *, token_id: int, now: datetime, actor: str) -> ApiToken:
    now = ensure_utc(now, name="now")
    row = session.get(ApiToken, token_id)
    if row is None:
        raise LookupError(f"no API token with id {token_id}")
    if row.revoked_at is None:
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(revoked_at=now))
        session.refresh(row)
        audit.append(
            session,
            action="token_revoked",
            actor=actor,
            at=now,
            subject_type="api_token",
            subject_id=token_id,
            payload={"name": row.name, "role": row.role},
        )
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.execute(select(ApiToken).order_by(ApiToken.id)).scalars())
