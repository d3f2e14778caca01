"""``/change-requests``: list, one with its whole story, approve/reject by the same rules as Slack."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Body, HTTPException, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select

from agents.approvals import Decision, DecisionOutcome, decide
from budgetloop.db.loop import Approval, ChangeRequest, MonitoringReading
from budgetloop.db.session import session_scope
from budgetloop.errors import InputError
from budgetloop.lifecycle import State
from budgetloop.store import audit
from budgetloop.store import change_requests as crs
from service.deps import READERS, ContextDep, CurrentToken, SessionDep, allow
from service.flows import after_decision
from service.schemas import (
    ChangeRequestDetailPublic,
    ChangeRequestId,
    ChangeRequestPublic,
    DecisionCreate,
    DecisionPublic,
    DecisionRefusedPublic,
)

router = APIRouter(prefix="/change-requests", tags=["change requests"])


def public(cr: ChangeRequest) -> dict[str, Any]:
    return {
        "id": cr.id,
        "kind": cr.kind,
        "status": cr.status,
        "created_at": cr.created_at,
        "requested_by": cr.requested_by,
        "summary": cr.summary,
        "expected_gain": cr.expected_gain,
        "gain_p05": cr.gain_p05,
        "gain_p95": cr.gain_p95,
        "probability_of_improvement": cr.probability_of_improvement,
        "relative_move": cr.relative_move,
        "decided_by": cr.decided_by,
        "decided_at": cr.decided_at,
        "executed_at": cr.executed_at,
        "status_reason": cr.status_reason,
        "rolls_back_id": cr.rolls_back_id,
        "items": [
            {
                "channel": i.channel,
                "platform": i.platform,
                "campaign": i.campaign_external_id,
                "before": i.before,
                "after": i.after,
                "delta": i.delta,
                "pct": round(i.pct, 4),
                "state": i.state,
                "applied_at": i.applied_at,
            }
            for i in cr.items
        ],
    }


@router.get(
    "", response_model=list[ChangeRequestPublic], summary="Change requests, oldest first", **allow(*READERS)
)
def list_change_requests(
    session: SessionDep,
    status: Annotated[
        list[State] | None,
        Query(description="repeat to match several states; anything else is answered 422 naming them"),
    ] = None,
    kind: Annotated[str | None, Query(examples=["reallocation", "rollback"])] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    statuses = [s.value for s in status] if status else None
    return [public(cr) for cr in crs.list_requests(session, statuses=statuses, kind=kind, limit=limit)]


@router.get(
    "/{change_request_id}",
    response_model=ChangeRequestDetailPublic,
    summary="One change request: items, approvals, monitoring readings and its full audit history",
    **allow(*READERS, responses={404: {"description": "no change request with that id"}}),
)
def get_change_request(session: SessionDep, change_request_id: ChangeRequestId) -> Any:
    cr = crs.get(session, change_request_id=change_request_id)
    if cr is None:
        raise HTTPException(
            404, f"no change request with id {change_request_id}; list them at /api/v1/change-requests"
        )
    approvals = session.execute(
        select(Approval).where(Approval.change_request_id == cr.id).order_by(Approval.id)
    ).scalars()
    readings = session.execute(
        select(MonitoringReading)
        .where(MonitoringReading.change_request_id == cr.id)
        .order_by(MonitoringReading.day)
    ).scalars()
    return {
        **public(cr),
        "verdicts": cr.verdicts,
        "monitoring_plan": cr.monitoring_plan,
        "approvals": [
            {
                "approver": a.approver,
                "decision": a.decision,
                "at": a.at,
                "source": a.source,
                "reason": a.reason,
            }
            for a in approvals
        ],
        "monitoring": [
            {
                "day": r.day.isoformat(),
                "outcome": r.outcome,
                "realised": r.realised,
                "forecast_mean": r.forecast_mean,
                "band_low": r.band_low,
                "band_high": r.band_high,
                "reason": r.reason,
            }
            for r in readings
        ],
        "history": audit.history(session, subject_type="change_request", subject_id=cr.id),
    }


def _decide(
    ctx: ContextDep,
    token: CurrentToken,
    background: BackgroundTasks,
    change_request_id: int,
    decision: Decision,
    body: DecisionCreate | None,
) -> DecisionOutcome:
    with session_scope(ctx.sessions) as session:
        try:
            policy = ctx.policy_provider(session)
        except InputError as exc:
            raise HTTPException(409, f"no decision without a valid policy: {exc}") from None
        outcome = decide(
            session,
            change_request_id=change_request_id,
            actor=token.actor,
            decision=decision,
            policy=policy,
            now=ctx.now(),
            source="rest",
            reason=body.reason if body else None,
        )
    if outcome.status == "not_found":
        raise HTTPException(404, outcome.message)
    background.add_task(after_decision, ctx, outcome)  # also runs with a JSONResponse returned below
    return outcome


# A decision that was not taken is an error status, so a script checking the code never reads success;
# the body keeps every field of a decision (clients reading `status` still work) and adds `detail`.
_REFUSAL_CODES: dict[str, int] = {"refused": 403, "already_decided": 409, "expired": 409}


def _answer(outcome: DecisionOutcome) -> Any:
    code = _REFUSAL_CODES.get(outcome.status)
    if code is None:
        return outcome
    body = DecisionPublic.model_validate(outcome, from_attributes=True).model_dump(mode="json")
    return JSONResponse(status_code=code, content={"detail": outcome.message, **body})


_DECISION_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {
        "model": DecisionRefusedPublic,
        "description": "refused: the caller is not an approver the policy names (`approval.approvers`) or "
        "is approving their own request (`status: refused`, audited as `approval_refused`); or the "
        "token's role may not decide (then only `detail`)",
    },
    404: {"description": "no such change request"},
    409: {
        "model": DecisionRefusedPublic,
        "description": "the request is no longer pending: `already_decided` (who decided, the "
        "approvals recorded) or `expired` (its `expires_at` passed: it is expired now, as the expire "
        "job would, and cannot be approved or rejected); or no valid policy is active (then only "
        "`detail`)",
    },
}


def _route(decision: Literal["approve", "reject"]) -> Any:
    def handler(
        ctx: ContextDep,
        token: CurrentToken,
        background: BackgroundTasks,
        change_request_id: ChangeRequestId,
        body: Annotated[DecisionCreate | None, Body()] = None,
    ) -> Any:
        return _answer(_decide(ctx, token, background, change_request_id, decision, body))

    handler.__name__ = f"{decision}_change_request"
    return handler


_COMMON = (
    "409 `already_decided` (with who decided) or `expired` (past its `expires_at`: expired now, for "
    "any caller, checked before the approver rules). The caller is the token's `slack_user_id`, else "
    "its name."
)
_DESCRIPTIONS = {
    "approve": "Only approvers the policy names; not one's own request; two distinct approvers above "
    "`approval.two_approvers_above`. 200 for a decision taken (`approved`) or an approval recorded "
    "(`recorded`, waiting for a second approver); 403 `refused`; " + _COMMON,
    "reject": "Only approvers the policy names; one rejection rejects (one's own request included). 200 "
    "`rejected`, or `recorded` where this approver has already approved; 403 `refused` (not a named "
    "approver); " + _COMMON,
}

for _decision in ("approve", "reject"):
    _kwargs = allow("approver", responses=_DECISION_RESPONSES)
    router.post(
        f"/{{change_request_id}}/{_decision}",
        response_model=DecisionPublic,
        summary=f"{_decision.title()} a pending request (same rules as the Slack buttons)",
        description=_DESCRIPTIONS[_decision],
        **_kwargs,
    )(_route(_decision))
