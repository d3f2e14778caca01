"""Change requests: create, move through the state machine (compare-and-set), lock campaigns, list.

Every transition is one conditional UPDATE (``... WHERE id = :id AND status = :expected``): when two
deciders race (double clicks, Slack retries, two replicas), exactly one UPDATE matches and the other
gets :class:`ConcurrentTransition` naming the state the request is now in. The audit entry for the
transition is written in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from budgetloop.clock import ensure_utc
from budgetloop.db.loop import Approval, CampaignLock, ChangeRequest, ChangeRequestItem
from budgetloop.errors import BudgetloopError
from budgetloop.lifecycle import OPEN, TERMINAL, Event, State, next_state
from budgetloop.store import audit


class ConcurrentTransition(BudgetloopError):
    """Someone else moved the request first; ``current`` is the state it is in now."""

    def __init__(self, request_id: int, expected: str, current: str, decided_by: str | None) -> None:
        self.request_id = request_id
        self.expected = expected
        self.current = current
        self.decided_by = decided_by
        who = f" by {decided_by}" if decided_by else ""
        super().__init__(f"change request {request_id} is already {current}{who} (expected {expected})")


class CampaignBusy(BudgetloopError):
    def __init__(self, channel: str, holder: int) -> None:
        self.channel = channel
        self.holder = holder
        super().__init__(f"campaign `{channel}` is held by open change request {holder}")


@dataclass(frozen=True)
class ItemDraft:
    channel: str
    platform: str
    campaign_external_id: str
    before: float
    after: float


@dataclass(frozen=True)
class ChangeRequestDraft:
    kind: str
    requested_by: str
    objective: str
    summary: str
    items: Sequence[ItemDraft]
    expected_gain: float
    gain_p05: float
    gain_p95: float
    probability_of_improvement: float
    verdicts: Sequence[Mapping[str, Any]] = ()
    monitoring_plan: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    model_version_id: int | None = None
    policy_version: int | None = None
    rolls_back_id: int | None = None
    expires_at: datetime | None = None
    portfolio_total: float | None = None  # all campaigns' daily budgets, moved or not

    @property
    def relative_move(self) -> float:
        """Sum of |delta| over the portfolio's daily total (the guardrail engine's definition); without a
        portfolio total, over the request's own campaigns."""
        total = (
            self.portfolio_total if self.portfolio_total is not None else sum(i.before for i in self.items)
        )
        moved = sum(abs(i.after - i.before) for i in self.items)
        return 0.0 if total <= 0 else moved / total


def idempotency_key(change_request_id: int, index: int, channel: str) -> str:
    """One key per campaign change, derivable again after a crash."""
    return f"cr{change_request_id}-{index}-{channel}"[:100]


def create(session: Session, *, draft: ChangeRequestDraft, now: datetime) -> ChangeRequest:
    """Store a draft request, lock its campaigns, and audit ``proposed``. Raises CampaignBusy."""
    now = ensure_utc(now, name="now")
    channels = [i.channel for i in draft.items]
    postgres = session.get_bind().dialect.name == "postgresql"
    if not postgres:
        # SQLite: take the database's write lock before the check (pysqlite opens the transaction at
        # the first write, and other writers then wait), so that no process can lock a campaign
        # between the check and the insert. A SAVEPOINT would open that transaction itself, and its
        # release commit the draft and its locks before the caller did.
        session.execute(
            update(CampaignLock)
            .where(CampaignLock.channel.in_(channels))
            .values(channel=CampaignLock.channel)
            .execution_options(synchronize_session=False)
        )
    held = session.execute(select(CampaignLock).where(CampaignLock.channel.in_(channels))).scalars().all()
    if held:
        raise CampaignBusy(held[0].channel, held[0].change_request_id)
    # On PostgreSQL a savepoint: a request that loses the race for its campaigns (another process
    # locked one between the check above and the insert) leaves no row behind and reads as
    # CampaignBusy.
    try:
        with session.begin_nested() if postgres else nullcontext():
            cr = _insert(session, draft=draft, channels=channels, now=now)
    except IntegrityError as exc:
        lock = session.execute(
            select(CampaignLock).where(CampaignLock.channel.in_(channels)).limit(1)
        ).scalar_one_or_none()
        if lock is None:
            raise
        raise CampaignBusy(lock.channel, lock.change_request_id) from exc
    audit.append(
        session,
        action="proposed",
        actor=draft.requested_by,
        at=now,
        subject_type="change_request",
        subject_id=cr.id,
        payload=describe(cr),
    )
    return cr


def _insert(
    session: Session, *, draft: ChangeRequestDraft, channels: list[str], now: datetime
) -> ChangeRequest:
    cr = ChangeRequest(
        kind=draft.kind,
        status=State.DRAFT.value,
        created_at=now,
        updated_at=now,
        requested_by=draft.requested_by,
        model_version_id=draft.model_version_id,
        policy_version=draft.policy_version,
        objective=draft.objective,
        summary=draft.summary,
        expected_gain=float(draft.expected_gain),
        gain_p05=float(draft.gain_p05),
        gain_p95=float(draft.gain_p95),
        probability_of_improvement=float(draft.probability_of_improvement),
        relative_move=float(draft.relative_move),
        verdicts=[dict(v) for v in draft.verdicts],
        monitoring_plan=dict(draft.monitoring_plan),
        details=dict(draft.details),
        rolls_back_id=draft.rolls_back_id,
        expires_at=draft.expires_at,
    )
    session.add(cr)
    session.flush()
    for index, item in enumerate(draft.items):
        cr.items.append(
            ChangeRequestItem(
                channel=item.channel,
                platform=item.platform,
                campaign_external_id=item.campaign_external_id,
                before=round(float(item.before), 2),
                after=round(float(item.after), 2),
                idempotency_key=idempotency_key(cr.id, index, item.channel),
                state="pending",
            )
        )
    for channel in dict.fromkeys(channels):  # one lock per channel, however many of its campaigns move
        session.add(CampaignLock(channel=channel, change_request_id=cr.id, acquired_at=now))
    session.flush()
    return cr


def describe(cr: ChangeRequest) -> dict[str, Any]:
    """The request as finance and Slack see it (also the audit payload of ``proposed``)."""
    return {
        "id": cr.id,
        "kind": cr.kind,
        "status": cr.status,
        "objective": cr.objective,
        "summary": cr.summary,
        "model_version_id": cr.model_version_id,
        "policy_version": cr.policy_version,
        "expected_gain_per_day": round(cr.expected_gain, 2),
        "gain_p05": round(cr.gain_p05, 2),
        "gain_p95": round(cr.gain_p95, 2),
        "probability_of_improvement": round(cr.probability_of_improvement, 4),
        "relative_move": round(cr.relative_move, 4),
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
                "idempotency_key": i.idempotency_key,
            }
            for i in cr.items
        ],
        "verdicts": cr.verdicts,
        "monitoring_plan": cr.monitoring_plan,
    }


def get(session: Session, *, change_request_id: int) -> ChangeRequest | None:
    return session.execute(
        select(ChangeRequest)
        .options(selectinload(ChangeRequest.items))
        .where(ChangeRequest.id == change_request_id)
    ).scalar_one_or_none()


def list_requests(
    session: Session, *, statuses: Sequence[str] | None = None, kind: str | None = None, limit: int = 100
) -> list[ChangeRequest]:
    q = select(ChangeRequest).options(selectinload(ChangeRequest.items)).order_by(ChangeRequest.id)
    if statuses:
        q = q.where(ChangeRequest.status.in_(list(statuses)))
    if kind:
        q = q.where(ChangeRequest.kind == kind)
    return list(session.execute(q.limit(limit)).scalars())


def transition(
    session: Session,
    *,
    change_request_id: int,
    event: Event | str,
    actor: str,
    now: datetime,
    reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
    action: str | None = None,
) -> ChangeRequest:
    """Move a request along one edge of the state machine, atomically, with its audit entry.

    Raises IllegalTransition when the edge does not exist from the current state and
    ConcurrentTransition when another writer moved the request between our read and our write.
    """
    now = ensure_utc(now, name="now")
    ev = Event(event)
    state = session.execute(
        select(ChangeRequest.status).where(ChangeRequest.id == change_request_id)
    ).scalar_one_or_none()
    if state is None:
        raise LookupError(f"no change request with id {change_request_id}")
    target = next_state(change_request_id, state, ev)
    values: dict[str, Any] = {"status": target.value, "updated_at": now}
    if reason is not None:
        values["status_reason"] = reason
    if ev in (Event.APPROVE, Event.REJECT, Event.AUTO_APPROVE):
        values["decided_at"] = now
        values["decided_by"] = actor
    if ev is Event.FINISH_EXECUTION:
        values["executed_at"] = now
    result = session.execute(
        update(ChangeRequest)
        .where(ChangeRequest.id == change_request_id, ChangeRequest.status == state)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        now_state, now_by = session.execute(
            select(ChangeRequest.status, ChangeRequest.decided_by).where(
                ChangeRequest.id == change_request_id
            )
        ).one()
        raise ConcurrentTransition(change_request_id, state, now_state, now_by)
    if target in TERMINAL or target is State.MONITORING:
        # Once its budgets are live, a request no longer holds its campaigns: the next step may be
        # planned while it is watched (and supersedes it when executed, see `supersede_monitoring`).
        session.execute(delete(CampaignLock).where(CampaignLock.change_request_id == change_request_id))
    body: dict[str, Any] = {"from": state, "to": target.value, "event": ev.value}
    if reason:
        body["reason"] = reason
    if payload:
        body.update(payload)
    audit.append(
        session,
        action=action or _ACTION_FOR_EVENT[ev],
        actor=actor,
        at=now,
        subject_type="change_request",
        subject_id=change_request_id,
        payload=body,
    )
    cr = session.get(ChangeRequest, change_request_id)
    assert cr is not None
    session.refresh(cr)
    return cr


_ACTION_FOR_EVENT: dict[Event, str] = {
    Event.SUBMIT: "submitted",
    Event.AUTO_APPROVE: "approved",
    Event.RECORD_SHADOW: "shadow_recorded",
    Event.APPROVE: "approved",
    Event.REJECT: "rejected",
    Event.EXPIRE: "expired",
    Event.CANCEL: "cancelled",
    Event.BLOCK: "blocked",
    Event.START_EXECUTION: "executing",
    Event.FINISH_EXECUTION: "executed",
    Event.FAIL: "failed",
    Event.START_MONITORING: "monitoring_started",
    Event.CONFIRM: "confirmed",
    Event.ROLL_BACK: "rolled_back",
}


def supersede_monitoring(
    session: Session, *, by: ChangeRequest, now: datetime, actor: str = "executor"
) -> list[int]:
    """Close the watch of older requests whose campaigns ``by`` has just moved again.

    Each such request in ``monitoring`` is confirmed with the reason (its readings so far stay on
    record); from now on the newer request carries the watch, and its rollback restores the budgets it
    found. Rollback requests are never superseded.
    """
    channels = {i.channel for i in by.items}
    closed: list[int] = []
    for older in list_requests(session, statuses=[State.MONITORING.value], limit=10_000):
        if older.id == by.id or older.kind == "rollback" or not channels & {i.channel for i in older.items}:
            continue
        transition(
            session,
            change_request_id=older.id,
            event=Event.CONFIRM,
            actor=actor,
            now=now,
            reason=f"superseded by change request {by.id}, which moved the same campaigns again",
            payload={"superseded_by": by.id},
        )
        closed.append(older.id)
    return closed


def open_channels(session: Session) -> dict[str, int]:
    """Channels held by an open request -> that request's id."""
    return {lock.channel: lock.change_request_id for lock in session.execute(select(CampaignLock)).scalars()}


def is_open(status: str) -> bool:
    return State(status) in OPEN


def approvers(session: Session, change_request_id: int) -> list[str]:
    """Who has approved the request so far, in order."""
    return list(
        session.execute(
            select(Approval.approver)
            .where(Approval.change_request_id == change_request_id, Approval.decision == "approve")
            .order_by(Approval.id)
        ).scalars()
    )
