"""Automatic rollback: a request that undoes a monitored change that kept missing its forecast band.

:func:`propose_rollback` writes, in the caller's transaction, a ``rollback`` request whose items take
every applied item of the original from its ``after`` back to its ``before``, with ``rolls_back_id``
pointing at the original. A request in ``monitoring`` holds no campaign locks (the planner may prepare
the next step meanwhile); a newer request not yet executed on the same campaigns is cancelled, since it
was planned from budgets the rollback is about to change, and one already executing defers the
rollback to the next failing day. The rollback takes the locks itself. It is approved at once
(``auto_approve``) unless ``policy.monitoring.require_approval_for_rollback``, in which case it waits for
a person like any request. The executor runs it; when it has executed, the original moves to
``rolled_back`` with the reason written here (see :mod:`agents.execute`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from budgetloop.db.loop import CampaignLock, ChangeRequest
from budgetloop.lifecycle import OPEN, Event, State
from budgetloop.store import audit
from budgetloop.store import change_requests as requests
from guardrails.policy import Policy

ROLLBACK_KIND = "rollback"
CANCELLABLE = frozenset({State.DRAFT, State.PENDING_APPROVAL, State.APPROVED})
#: how the reason of a request cancelled for a rollback starts (the monitor job finds them by it)
ROLLED_BACK_REASON = "change request {} is being rolled back"


def _clear_the_way(session: Session, *, original: ChangeRequest, now: datetime, actor: str) -> list[str]:
    """Cancel the not-yet-executed requests holding the original's campaigns (planned from budgets the
    rollback is about to change); return what cannot be cancelled (a request already executing)."""
    channels = sorted({i.channel for i in original.items})
    holders = sorted(
        set(
            session.execute(
                select(CampaignLock.change_request_id).where(CampaignLock.channel.in_(channels))
            ).scalars()
        )
    )
    busy: list[str] = []
    for holder_id in holders:
        holder = session.get(ChangeRequest, holder_id)
        if holder is None:
            continue
        if State(holder.status) in CANCELLABLE:
            requests.transition(
                session,
                change_request_id=holder_id,
                event=Event.CANCEL,
                actor=actor,
                now=now,
                reason=ROLLED_BACK_REASON.format(original.id) + " on the same campaigns; "
                "this plan starts from budgets that are about to change: re-plan after the rollback",
            )
        else:
            busy.append(f"change request {holder_id} is {holder.status} on the same campaigns")
    return busy


def open_rollback(session: Session, *, original_id: int) -> ChangeRequest | None:
    """The rollback of ``original_id`` still in flight (not yet executed, refused or failed), if any."""
    return (
        session.execute(
            select(ChangeRequest)
            .where(ChangeRequest.rolls_back_id == original_id, ChangeRequest.kind == ROLLBACK_KIND)
            .where(ChangeRequest.status.in_([s.value for s in OPEN]))
            .order_by(ChangeRequest.id.desc())
        )
        .scalars()
        .first()
    )


def propose_rollback(
    session: Session,
    *,
    original: ChangeRequest,
    reason: str,
    policy: Policy,
    now: datetime,
    actor: str = "monitor",
    evidence: Sequence[Mapping[str, Any]] = (),
) -> ChangeRequest | None:
    """Create (and, unless the policy wants a person, approve) the rollback of ``original``.

    Returns None, with a ``rollback_deferred`` audit entry, while a newer request is executing on the
    same campaigns (the next failing day tries again).
    """
    applied = [i for i in original.items if i.state == "applied"]
    if not applied:
        raise ValueError(f"change request {original.id} has no applied item to roll back")
    audit.append(
        session,
        action="rollback_triggered",
        actor=actor,
        at=now,
        subject_type="change_request",
        subject_id=original.id,
        payload={"reason": reason, "evidence": [dict(e) for e in evidence]},
    )
    busy = _clear_the_way(session, original=original, now=now, actor=actor)
    if busy:
        audit.append(
            session,
            action="rollback_deferred",
            actor=actor,
            at=now,
            subject_type="change_request",
            subject_id=original.id,
            payload={"reason": reason, "busy": busy},
        )
        return None
    moves = ", ".join(f"{i.channel} {i.after:,.2f}→{i.before:,.2f}" for i in applied)
    draft = requests.ChangeRequestDraft(
        kind=ROLLBACK_KIND,
        requested_by=actor,
        objective=original.objective,
        summary=f"Roll back change request {original.id}: {moves}. Why: {reason}",
        items=[
            requests.ItemDraft(i.channel, i.platform, i.campaign_external_id, i.after, i.before)
            for i in applied
        ],
        expected_gain=-float(original.expected_gain),
        gain_p05=-float(original.gain_p95),
        gain_p95=-float(original.gain_p05),
        probability_of_improvement=0.0,
        details={"reason": reason, "evidence": [dict(e) for e in evidence], "rolls_back": original.id},
        model_version_id=original.model_version_id,
        policy_version=original.policy_version,
        rolls_back_id=original.id,
    )
    rollback = requests.create(session, draft=draft, now=now)
    if policy.monitoring.require_approval_for_rollback:
        requests.transition(
            session,
            change_request_id=rollback.id,
            event=Event.SUBMIT,
            actor=actor,
            now=now,
            reason="the policy requires approval for rollbacks",
        )
    else:
        requests.transition(
            session,
            change_request_id=rollback.id,
            event=Event.AUTO_APPROVE,
            actor=actor,
            now=now,
            reason="automatic rollback (policy.monitoring.require_approval_for_rollback is false)",
        )
    session.refresh(rollback)
    return rollback
