"""The expire job: a request nobody decided before its ``expires_at`` is expired, not left hanging.

Reads like a script: find the requests still waiting for a decision whose deadline has passed, move each
one along the state machine's ``expire`` edge (which audits it and frees its campaigns), and tell Slack so
the buttons disappear. A request decided in the meantime by someone else (a click racing the job) is
left as it is: the compare-and-set transition refuses, and the job moves on. A click that arrives after
the deadline but before the job (:func:`agents.approvals.decide`) expires the request through the same
:func:`expire_request`, so the outcome never depends on when the job last ran.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from budgetloop.clock import ensure_utc
from budgetloop.db.loop import ChangeRequest
from budgetloop.lifecycle import Event, State
from budgetloop.store import change_requests as crs

ACTOR = "expirer"
log = logging.getLogger(__name__)

Notify = Callable[[Session, ChangeRequest], None]


def stale_requests(session: Session, *, now: datetime) -> list[int]:
    """Ids of requests waiting for a decision whose deadline is at or before ``now``, oldest first."""
    now = ensure_utc(now, name="now")
    return list(
        session.execute(
            select(ChangeRequest.id)
            .where(
                ChangeRequest.status == State.PENDING_APPROVAL.value,
                ChangeRequest.expires_at.is_not(None),
                ChangeRequest.expires_at <= now,
            )
            .order_by(ChangeRequest.id)
        ).scalars()
    )


def expire_request(
    session: Session,
    cr: ChangeRequest,
    *,
    now: datetime,
    payload: Mapping[str, Any] | None = None,
) -> ChangeRequest:
    """Move one pending request past its deadline along the ``expire`` edge, audited as ``expired`` by
    the expirer (the one transition the job and a late click share). Raises ConcurrentTransition when
    someone moved it first."""
    deadline = cr.expires_at
    return crs.transition(
        session,
        change_request_id=cr.id,
        event=Event.EXPIRE,
        actor=ACTOR,
        now=now,
        reason=f"no decision before {deadline.isoformat() if deadline else 'its deadline'}",
        payload=payload,
    )


def is_overdue(cr: ChangeRequest, *, now: datetime) -> bool:
    """Whether a request has a deadline and ``now`` is at or past it (the job's own test)."""
    return cr.expires_at is not None and ensure_utc(cr.expires_at, name="expires_at") <= ensure_utc(
        now, name="now"
    )


def expire_stale(session: Session, *, now: datetime, notify: Notify | None = None) -> list[int]:
    """Expire every stale request; return the ids actually expired (in the caller's transaction)."""
    now = ensure_utc(now, name="now")
    expired: list[int] = []
    for cr_id in stale_requests(session, now=now):
        cr = session.get(ChangeRequest, cr_id)
        assert cr is not None
        try:
            # Compare-and-set: when a click won the race nothing is written and we move on.
            cr = expire_request(session, cr, now=now)
        except crs.ConcurrentTransition as exc:
            log.info("change request %s was decided while expiring it: %s", cr_id, exc)
            continue
        expired.append(cr_id)
        if notify is not None:
            notify(session, cr)
    return expired
