"""Automatic rollback: a request that undoes a monitored change that kept missing its forecast band.

:func:`propose_rollback` writes, in the caller's transaction, a ``rollback`` request whose items take
every applied item of the original from its ``after`` back to its ``before``, with ``rolls_back_id``
pointing at the original. The original keeps its campaign locks until then; they pass to the rollback
in the same transaction, so no planner can slip a change in between. The rollback is approved at once
(``auto_approve``) unless ``policy.monitoring.require_approval_for_rollback``, in which case it waits for
a person like any request. The executor runs it; when it has executed, the original moves to
``rolled_back`` with the reason written here (see :mod:`agents.execute`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from budgetloop.db.loop import CampaignLock, ChangeRequest
from budgetloop.lifecycle import OPEN, Event
from budgetloop.store import audit
from budgetloop.store import change_requests as requests
from guardrails.policy import Policy

ROLLBACK_KIND = "rollback"


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
) -> ChangeRequest:
    """Create (and, unless the policy wants a person, approve) the rollback of ``original``."""
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
    # The original's locks pass to its rollback (create() would otherwise see them held).
    session.execute(delete(CampaignLock).where(CampaignLock.change_request_id == original.id))
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


def restore_locks(
    session: Session, *, original: ChangeRequest, now: datetime, actor: str = "monitor"
) -> list[str]:
    """Give a monitored request back the campaign locks its rollback took, once that rollback has ended
    without executing (blocked, cancelled, rejected, expired): the request is still live on those
    campaigns, so no planner may touch them. Returns the channels re-locked (audited as ``locks_restored``).
    """
    if open_rollback(session, original_id=original.id) is not None:
        return []
    channels = sorted({i.channel for i in original.items})
    held = set(
        session.execute(select(CampaignLock.channel).where(CampaignLock.channel.in_(channels))).scalars()
    )
    missing = [ch for ch in channels if ch not in held]
    for channel in missing:
        session.add(CampaignLock(channel=channel, change_request_id=original.id, acquired_at=now))
    if missing:
        session.flush()
        audit.append(
            session,
            action="locks_restored",
            actor=actor,
            at=now,
            subject_type="change_request",
            subject_id=original.id,
            payload={
                "channels": missing,
                "why": "its rollback ended without executing; the change is still live",
            },
        )
    return missing
