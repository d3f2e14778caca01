"""``/models`` (versions, diagnostics), ``/policy`` (YAML, validated, versioned), ``/tokens`` (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from budgetloop.db.loop import ModelVersion
from budgetloop.errors import InputError
from budgetloop.store import policy as policies
from budgetloop.store import tokens
from service.deps import READERS, ContextDep, CurrentToken, SessionDep, allow
from service.schemas import (
    ModelVersionPublic,
    PolicyPublic,
    TokenCreate,
    TokenCreatedPublic,
    TokenId,
    TokenPublic,
)

models_router = APIRouter(prefix="/models", tags=["models"])
policy_router = APIRouter(prefix="/policy", tags=["policy"])
tokens_router = APIRouter(prefix="/tokens", tags=["tokens"])


@models_router.get(
    "",
    response_model=list[ModelVersionPublic],
    summary="Model versions, newest first, with diagnostics",
    description=(
        "Each version's `summary` holds ROI and mROAS per channel (mean, p05, p95), whether the "
        "table measures them (`roi_extrapolated`, `mroas_from_prior`), the share of each ROI "
        "prior's variance the data removed (`roi_prior_contraction`: near 0, the ROI is the prior's), "
        "the holdout, and the fit's "
        "`warnings` (for example a day of revenue the model cannot explain: a tracking glitch or "
        "an event the data do not mark)."
    ),
    **allow(*READERS),
)
def list_models(session: SessionDep) -> Any:
    rows = session.execute(select(ModelVersion).order_by(ModelVersion.id.desc())).scalars()
    return [
        {
            "id": m.id,
            "created_at": m.created_at,
            "data_start": m.data_start.isoformat(),
            "data_end": m.data_end.isoformat(),
            "method": m.method,
            "status": m.status,
            "healthy": m.healthy,
            "diagnostics": m.diagnostics,
            "summary": m.summary,
            "reason": m.reason,
        }
        for m in rows
    ]


def _policy_public(record: policies.PolicyVersionRecord) -> dict[str, Any]:
    return {
        "version": record.version,
        "valid": record.valid,
        "active": record.active,
        "sha256": record.sha256,
        "author": record.author,
        "source": record.source,
        "created_at": record.created_at,
        "problems": record.problems,
        "text": record.text,
    }


@policy_router.get(
    "",
    response_model=PolicyPublic,
    summary="The active guardrail policy (the last valid version)",
    **allow(*READERS, responses={404: {"description": "no valid policy recorded yet"}}),
)
def get_policy(session: SessionDep) -> Any:
    record = policies.active_policy_record(session)
    if record is None:
        raise HTTPException(404, "no valid guardrail policy has been recorded; PUT one at /api/v1/policy")
    return _policy_public(record)


@policy_router.get(
    "/versions",
    response_model=list[PolicyPublic],
    summary="Every recorded version, newest first (valid or not)",
    **allow(*READERS),
)
def list_policy_versions(session: SessionDep) -> Any:
    return [_policy_public(r) for r in policies.list_policy_versions(session)]


_YAML_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {
                "schema": {"type": "string"},
                "example": "budget: {total_daily_max: 16000}\nchannels:\n  search: {min_daily: 1000}\n",
            }
        },
    }
}


#: A policy is a page of YAML; a body larger than this is refused before it is read or stored.
MAX_POLICY_BYTES = 1 << 20
#: Content types a YAML body may come with (JSON is YAML); none at all is read as YAML too.
POLICY_CONTENT_TYPES = frozenset(
    {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain", "application/json"}
)

_PUT_POLICY_ROUTE = allow(
    "ops",
    "admin",
    responses={
        400: {"description": "the body is not UTF-8 text"},
        413: {"description": f"the body is larger than {MAX_POLICY_BYTES // 1024} KiB"},
        415: {"description": "the body is not sent as YAML (`Content-Type: application/yaml`)"},
        422: {"description": "invalid policy: `problems` lists each with its YAML path and line"},
    },
)
_PUT_POLICY_ROUTE["openapi_extra"].update(_YAML_BODY)


@policy_router.put(
    "",
    response_model=PolicyPublic,
    summary="Replace the policy: the YAML body is validated and stored as the next version",
    description="A valid policy becomes active at once (200). An invalid one is recorded with its problems "
    "(each with its YAML path and line) and answered 422; the previous version stays active.",
    **_PUT_POLICY_ROUTE,
)
async def put_policy(ctx: ContextDep, session: SessionDep, token: CurrentToken, request: Request) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind not in POLICY_CONTENT_TYPES and not kind.endswith("+yaml"):
        raise HTTPException(
            415, f"a policy is YAML text, not {kind}: send it with `Content-Type: application/yaml`"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_POLICY_BYTES:
        raise HTTPException(
            413, f"a policy of {int(declared):,} bytes is over the {MAX_POLICY_BYTES:,} allowed"
        )
    raw = bytearray()
    async for chunk in request.stream():  # a body without a length is cut off at the limit, not read whole
        raw += chunk
        if len(raw) > MAX_POLICY_BYTES:
            raise HTTPException(413, f"a policy is at most {MAX_POLICY_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the policy must be UTF-8 YAML text") from None
    try:
        record = policies.record_policy(session, text=text, source="rest", author=token.actor, now=ctx.now())
    except InputError as exc:
        raise HTTPException(400, str(exc)) from None
    session.commit()
    if not record.valid:
        return JSONResponse(
            status_code=422,
            content={
                "detail": "invalid policy; the previous version stays active",
                **_policy_public(record) | {"created_at": record.created_at.isoformat()},
            },
        )
    return _policy_public(record)


@tokens_router.get(
    "", response_model=list[TokenPublic], summary="Every API token (never the token itself)", **allow("admin")
)
def list_tokens(session: SessionDep) -> Any:
    return tokens.list_tokens(session)


@tokens_router.post(
    "",
    response_model=TokenCreatedPublic,
    status_code=201,
    summary="Create a token (shown once in this answer)",
    **allow("admin"),
)
def create_token(ctx: ContextDep, session: SessionDep, token: CurrentToken, body: TokenCreate) -> Any:
    try:
        row, secret = tokens.create_token(
            session,
            name=body.name,
            role=body.role,
            now=ctx.now(),
            created_by=token.actor,
            slack_user_id=body.slack_user_id,
        )
    except InputError as exc:
        raise HTTPException(409, str(exc)) from None
    session.commit()
    return {**TokenPublic.model_validate(row, from_attributes=True).model_dump(), "token": secret}


@tokens_router.delete(
    "/{token_id}",
    response_model=TokenPublic,
    summary="Revoke a token at once",
    **allow("admin"),
)
def revoke_token(ctx: ContextDep, session: SessionDep, token: CurrentToken, token_id: TokenId) -> Any:
    try:
        row = tokens.revoke_token(session, token_id=token_id, now=ctx.now(), actor=token.actor)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    session.commit()
    return row
