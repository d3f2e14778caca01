"""The change-request state machine: one transition table, nothing else assigns a status.

    draft ──submit──▶ pending_approval ──approve──▶ approved ──start_execution──▶ executing
      │                  │    │                        │                            │
      │                  │    ├─reject──▶ rejected     ├─block──▶ failed            ├─finish_execution──▶ executed
      │                  │    └─expire──▶ expired      └─cancel─▶ cancelled         └─fail──▶ failed
      ├─auto_approve──▶ approved        (autonomous moves, rollbacks that need no approval)
      ├─record_shadow─▶ shadow          (autonomy: shadow — recorded, never executed)
      └─cancel────────▶ cancelled
    executed ──start_monitoring──▶ monitoring ──confirm──▶ confirmed
                                       └──roll_back──▶ rolled_back   (executed ──roll_back──▶ rolled_back too)

An illegal move raises :class:`~budgetloop.errors.IllegalTransition` naming the request, its state and
the event. The table is data, so tests can walk every (state, event) pair.
"""

from __future__ import annotations

from enum import StrEnum

from budgetloop.errors import IllegalTransition


class State(StrEnum):
    DRAFT = "draft"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    SHADOW = "shadow"
    EXECUTING = "executing"
    EXECUTED = "executed"
    MONITORING = "monitoring"
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class Event(StrEnum):
    SUBMIT = "submit"
    AUTO_APPROVE = "auto_approve"
    RECORD_SHADOW = "record_shadow"
    APPROVE = "approve"
    REJECT = "reject"
    EXPIRE = "expire"
    CANCEL = "cancel"
    BLOCK = "block"
    START_EXECUTION = "start_execution"
    FINISH_EXECUTION = "finish_execution"
    FAIL = "fail"
    START_MONITORING = "start_monitoring"
    CONFIRM = "confirm"
    ROLL_BACK = "roll_back"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.DRAFT, Event.SUBMIT): State.PENDING_APPROVAL,
    (State.DRAFT, Event.AUTO_APPROVE): State.APPROVED,
    (State.DRAFT, Event.RECORD_SHADOW): State.SHADOW,
    (State.DRAFT, Event.CANCEL): State.CANCELLED,
    (State.PENDING_APPROVAL, Event.APPROVE): State.APPROVED,
    (State.PENDING_APPROVAL, Event.REJECT): State.REJECTED,
    (State.PENDING_APPROVAL, Event.EXPIRE): State.EXPIRED,
    (State.PENDING_APPROVAL, Event.CANCEL): State.CANCELLED,
    (State.APPROVED, Event.START_EXECUTION): State.EXECUTING,
    (State.APPROVED, Event.BLOCK): State.FAILED,
    (State.APPROVED, Event.CANCEL): State.CANCELLED,
    (State.EXECUTING, Event.FINISH_EXECUTION): State.EXECUTED,
    (State.EXECUTING, Event.FAIL): State.FAILED,
    (State.EXECUTED, Event.START_MONITORING): State.MONITORING,
    (State.EXECUTED, Event.ROLL_BACK): State.ROLLED_BACK,
    (State.MONITORING, Event.CONFIRM): State.CONFIRMED,
    (State.MONITORING, Event.ROLL_BACK): State.ROLLED_BACK,
}

TERMINAL: frozenset[State] = frozenset(
    {
        State.REJECTED,
        State.EXPIRED,
        State.CANCELLED,
        State.SHADOW,
        State.CONFIRMED,
        State.ROLLED_BACK,
        State.FAILED,
    }
)
# States in which a request holds its campaigns (no other request may touch them).
OPEN: frozenset[State] = frozenset(
    {State.DRAFT, State.PENDING_APPROVAL, State.APPROVED, State.EXECUTING, State.EXECUTED, State.MONITORING}
)


def next_state(request_id: object, state: str | State, event: str | Event) -> State:
    """The state after ``event`` in ``state``; raises IllegalTransition when the edge does not exist."""
    try:
        current = State(state)
        ev = Event(event)
    except ValueError as exc:
        raise IllegalTransition(request_id, str(state), str(event)) from exc
    try:
        return TRANSITIONS[(current, ev)]
    except KeyError:
        raise IllegalTransition(request_id, current.value, ev.value) from None


def allowed_events(state: str | State) -> list[Event]:
    current = State(state)
    return [ev for (st, ev) in TRANSITIONS if st is current]
