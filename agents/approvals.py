"""Human decisions on change requests, the one path used by Slack buttons and by the REST API.

:func:`decide` applies the policy's approval rules and records the outcome in one transaction:

- only approvers the policy names (``approval.approvers``) may decide; anyone else is refused, and the
  refusal is written to the audit log;
- a requester cannot approve their own request;
- a request whose relative move is above ``approval.two_approvers_above`` needs two distinct approvers:
  the first approval is recorded and the request stays pending until a second, different one arrives;
- one rejection by an approver rejects the request;
- a request past its ``expires_at`` (by the ``now`` the caller passes, never the wall clock) cannot be
  decided any more: the first late click expires it exactly as the expire job would
  (:func:`agents.expire.expire_request`, audited ``expired`` by ``expirer``) and is answered ``expired``;
  a request already expired is answered ``expired`` too;
- the decision itself is a compare-and-set (:func:`budgetloop.store.change_requests.transition`), and the
  request's row is locked first, so double clicks, Slack retries and concurrent approvals produce exactly
  one decision; a late decider gets ``already_decided`` naming who decided (and the approvals recorded).

The caller commits, and after the commit calls ``on_approved`` when the outcome is ``approved``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agents.expire import expire_request, is_overdue
from budgetloop.clock import ensure_utc
from budgetloop.db.loop import Approval, ChangeRequest
from budgetloop.lifecycle import Event, State
from budgetloop.store import audit
from budgetloop.store import change_requests as crs
from budgetloop.store.change_requests import ConcurrentTransition, transition

Decision = Literal["approve", "reject"]
OutcomeStatus = Literal[
    "approved", "rejected", "recorded", "refused", "already_decided", "expired", "not_found"
]


class ApprovalRules(Protocol):
    """The part of a guardrail policy's ``approval`` section a decision needs."""

    @property
    def approvers(self) -> list[str]: ...

    @property
    def two_approvers_above(self) -> float | None: ...


class PolicyWithApproval(Protocol):
    @property
    def approval(self) -> ApprovalRules: ...


@dataclass(frozen=True)
class DecisionOutcome:
    status: OutcomeStatus
    change_request_id: int
    state: str | None
    message: str
    decided_by: str | None = None
    approvals: Sequence[str] = field(default_factory=tuple)
    approvals_needed: int = 1

    @property
    def accepted(self) -> bool:
        return self.status in ("approved", "rejected", "recorded")


def approvals_needed(policy: PolicyWithApproval, relative_move: float) -> int:
    above = policy.approval.two_approvers_above
    return 2 if above is not None and relative_move > above else 1


def _lock_request(session: Session, change_request_id: int) -> bool:
    """Take the request's row lock (PostgreSQL row lock; SQLite write lock) before reading it."""
    result = session.execute(
        update(ChangeRequest)
        .where(ChangeRequest.id == change_request_id)
        .values(updated_at=ChangeRequest.updated_at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _expired(
    session: Session, cr: ChangeRequest, *, decision: Decision, needed: int, expired_now: bool
) -> DecisionOutcome:
    deadline = cr.expires_at.isoformat() if cr.expires_at is not None else "its deadline"
    verb = "approved" if decision == "approve" else "rejected"
    how = "has just expired" if expired_now else "expired"
    return DecisionOutcome(
        "expired",
        cr.id,
        cr.status,
        f"change request {cr.id} {how}: no decision was taken before {deadline}, "
        f"so it can no longer be {verb}",
        cr.decided_by,
        tuple(crs.approvers(session, cr.id)),
        needed,
    )


def _refuse(
    session: Session,
    cr: ChangeRequest,
    *,
    actor: str,
    decision: Decision,
    reason: str,
    now: datetime,
    source: str,
) -> DecisionOutcome:
    audit.append(
        session,
        action="approval_refused",
        actor=actor,
        at=now,
        subject_type="change_request",
        subject_id=cr.id,
        payload={"decision": decision, "reason": reason, "source": source, "state": cr.status},
    )
    return DecisionOutcome("refused", cr.id, cr.status, reason, cr.decided_by)


def decide(
    session: Session,
    *,
    change_request_id: int,
    actor: str,
    decision: Decision,
    policy: PolicyWithApproval,
    now: datetime,
    source: str,
    reason: str | None = None,
) -> DecisionOutcome:
    """Apply one person's approve/reject to a pending request (see the module docstring for the rules)."""
    now = ensure_utc(now, name="now")
    if decision not in ("approve", "reject"):
        raise ValueError(f"decision must be 'approve' or 'reject', got {decision!r}")
    if not _lock_request(session, change_request_id):
        return DecisionOutcome(
            "not_found", change_request_id, None, f"no change request with id {change_request_id}"
        )
    cr = session.get(ChangeRequest, change_request_id)
    assert cr is not None
    session.refresh(cr)
    needed = approvals_needed(policy, cr.relative_move)
    if cr.status == State.EXPIRED.value:
        return _expired(session, cr, decision=decision, needed=needed, expired_now=False)
    if cr.status != State.PENDING_APPROVAL.value:
        return _already_decided(session, cr.id, cr.status, cr.decided_by, needed)
    if is_overdue(cr, now=now):
        # The deadline passed and the expire job has not run yet: expire it now, as the job would, so a
        # decision never depends on when the job last ran. The row lock taken above serialises this.
        try:
            cr = expire_request(
                session,
                cr,
                now=now,
                payload={"source": source, "attempted_by": actor, "attempted": decision},
            )
        except ConcurrentTransition as exc:
            return _already_decided(session, cr.id, exc.current, exc.decided_by, needed)
        return _expired(session, cr, decision=decision, needed=needed, expired_now=True)
    if actor not in policy.approval.approvers:
        return _refuse(
            session,
            cr,
            actor=actor,
            decision=decision,
            reason=f"{actor} is not an approver named in the policy (approval.approvers)",
            now=now,
            source=source,
        )
    if decision == "approve" and actor == cr.requested_by:
        return _refuse(
            session,
            cr,
            actor=actor,
            decision=decision,
            reason=f"{actor} requested change request {cr.id} and cannot approve it",
            now=now,
            source=source,
        )
    prior = crs.approvers(session, cr.id)
    if decision == "approve" and actor in prior:
        return DecisionOutcome(
            "recorded",
            cr.id,
            cr.status,
            f"{actor} has already approved change request {cr.id}; "
            f"it needs {needed - len(prior)} more distinct approver(s)",
            None,
            tuple(prior),
            needed,
        )
    try:
        with session.begin_nested():
            session.add(
                Approval(
                    change_request_id=cr.id,
                    approver=actor,
                    decision=decision,
                    at=now,
                    source=source,
                    reason=reason,
                )
            )
    except IntegrityError:  # the same person decided already (a retry): nothing new to record
        return DecisionOutcome(
            "recorded",
            cr.id,
            cr.status,
            f"{actor} has already decided on change request {cr.id}",
            None,
            tuple(prior),
            needed,
        )
    approvers = [*prior, actor] if decision == "approve" else prior
    try:
        if decision == "reject":
            cr = transition(
                session,
                change_request_id=cr.id,
                event=Event.REJECT,
                actor=actor,
                now=now,
                reason=reason,
                payload={"source": source},
            )
            return DecisionOutcome(
                "rejected", cr.id, cr.status, f"rejected by {actor}", actor, tuple(approvers), needed
            )
        if len(approvers) < needed:
            audit.append(
                session,
                action="approval_recorded",
                actor=actor,
                at=now,
                subject_type="change_request",
                subject_id=cr.id,
                payload={"source": source, "approvals": approvers, "needed": needed},
            )
            return DecisionOutcome(
                "recorded",
                cr.id,
                cr.status,
                f"approval {len(approvers)} of {needed} recorded; a second, different approver is needed",
                None,
                tuple(approvers),
                needed,
            )
        decided_by = ", ".join(approvers)
        cr = transition(
            session,
            change_request_id=cr.id,
            event=Event.APPROVE,
            actor=decided_by,
            now=now,
            reason=reason,
            payload={"source": source, "approvals": approvers, "needed": needed},
        )
        return DecisionOutcome(
            "approved", cr.id, cr.status, f"approved by {decided_by}", decided_by, tuple(approvers), needed
        )
    except ConcurrentTransition as exc:
        return _already_decided(session, cr.id, exc.current, exc.decided_by, needed)


def _already_decided(
    session: Session, change_request_id: int, state: str, decided_by: str | None, needed: int
) -> DecisionOutcome:
    who = f" by {decided_by}" if decided_by else ""
    return DecisionOutcome(
        "already_decided",
        change_request_id,
        state,
        f"change request {change_request_id} is already {state}{who}",
        decided_by,
        tuple(crs.approvers(session, change_request_id)),
        needed,
    )
