"""`agents.approvals.decide` on its own: the policy's rules, and concurrent deciders from threads."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from agents.approvals import DecisionOutcome, decide
from agents.expire import expire_stale
from budgetloop.clock import SimulatedClock
from budgetloop.db.audit import AuditEntry
from budgetloop.db.loop import Approval
from budgetloop.db.session import session_scope
from tests.service.conftest import make_pending


@dataclass(frozen=True)
class Rules:
    approvers: list[str] = field(default_factory=lambda: ["A", "B", "C", "D"])
    two_approvers_above: float | None = 0.15


@dataclass(frozen=True)
class Policy:
    approval: Rules = field(default_factory=Rules)


def _decide(
    engine: Engine,
    clock: SimulatedClock,
    cr_id: int,
    actor: str,
    decision: str = "approve",
    policy: Policy | None = None,
) -> DecisionOutcome:
    with session_scope(engine) as s:
        return decide(
            s,
            change_request_id=cr_id,
            actor=actor,
            decision=decision,  # type: ignore[arg-type]
            policy=policy or Policy(),
            now=clock.now(),
            source="test",
        )


def test_rules(migrated_engine: Engine, clock: SimulatedClock) -> None:
    small = make_pending(migrated_engine, clock, channels=("a", "b"), move=0.05)
    assert _decide(migrated_engine, clock, small, "Z").status == "refused"
    assert _decide(migrated_engine, clock, small, "A").status == "approved"
    assert _decide(migrated_engine, clock, small, "B", "reject").status == "already_decided"
    assert _decide(migrated_engine, clock, 4242, "A").status == "not_found"

    big = make_pending(migrated_engine, clock, channels=("c", "d"), move=0.30)
    first = _decide(migrated_engine, clock, big, "A")
    assert (first.status, first.approvals_needed, list(first.approvals)) == ("recorded", 2, ["A"])
    assert _decide(migrated_engine, clock, big, "A").status == "recorded"
    rejected = _decide(migrated_engine, clock, big, "B", "reject")
    assert (rejected.status, rejected.state, rejected.decided_by) == ("rejected", "rejected", "B")

    unlimited = make_pending(migrated_engine, clock, channels=("e", "f"), move=0.30)
    one = _decide(migrated_engine, clock, unlimited, "C", policy=Policy(Rules(two_approvers_above=None)))
    assert one.status == "approved"

    own = make_pending(migrated_engine, clock, channels=("g", "h"), requested_by="D")
    assert _decide(migrated_engine, clock, own, "D").status == "refused"
    assert (
        _decide(migrated_engine, clock, own, "D", "reject").status == "rejected"
    )  # one may withdraw one's own


@pytest.mark.parametrize("move", [0.05, 0.30])
def test_concurrent_deciders_give_one_decision(
    migrated_engine: Engine, clock: SimulatedClock, move: float
) -> None:
    """Eight threads (four people, each clicking twice) at once: exactly one decision, and a two-approver
    request does not get stuck with two approvals and no decision."""
    cr_id = make_pending(migrated_engine, clock, move=move)
    clock.advance(timedelta(minutes=1))
    barrier = threading.Barrier(8)
    outcomes: list[DecisionOutcome] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            outcomes.append(_decide(migrated_engine, clock, cr_id, "ABCD"[i % 4]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    statuses = sorted(o.status for o in outcomes)
    assert statuses.count("approved") == 1
    assert set(statuses) <= {"approved", "recorded", "already_decided"}
    with session_scope(migrated_engine) as s:
        decided = (
            s.execute(
                select(AuditEntry.actor).where(
                    AuditEntry.action == "approved", AuditEntry.subject_id == str(cr_id)
                )
            )
            .scalars()
            .all()
        )
    assert len(decided) == 1
    assert len(decided[0].split(", ")) == (2 if move > 0.15 else 1)


def _audit(engine: Engine, cr_id: int) -> list[tuple[str, str, dict[str, object]]]:
    """(action, actor, payload) of the request's audit entries, oldest first."""
    with session_scope(engine) as s:
        rows = s.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.payload)
            .where(AuditEntry.subject_type == "change_request", AuditEntry.subject_id == str(cr_id))
            .order_by(AuditEntry.seq)
        ).all()
    return [(action, actor, json.loads(payload)) for action, actor, payload in rows]


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_an_overdue_request_is_expired_as_the_job_would_not_decided(
    migrated_engine: Engine, clock: SimulatedClock, decision: str
) -> None:
    """Past ``expires_at`` (by the clock passed in, before the expire job ran) neither an approval nor a
    rejection is taken: the request is expired with the job's own transition and audit entry."""
    deadline = clock.now() + timedelta(hours=1)
    late = make_pending(migrated_engine, clock, channels=("a", "b"), expires_at=deadline)
    twin = make_pending(migrated_engine, clock, channels=("c", "d"), expires_at=deadline)
    clock.set(deadline)  # at the deadline, as the job's `expires_at <= now`
    outcome = _decide(migrated_engine, clock, late, "A", decision)
    assert (outcome.status, outcome.state, outcome.decided_by) == ("expired", "expired", None)
    assert "expired" in outcome.message and deadline.isoformat() in outcome.message
    assert not outcome.accepted

    with session_scope(migrated_engine) as s:
        assert expire_stale(s, now=clock.now()) == [twin]  # `late` is no longer pending
        assert s.execute(select(Approval).where(Approval.change_request_id == late)).first() is None
    (click_action, click_actor, by_click), (job_action, job_actor, by_job) = (
        _audit(migrated_engine, late)[-1],
        _audit(migrated_engine, twin)[-1],
    )
    assert (click_action, click_actor) == (job_action, job_actor) == ("expired", "expirer")
    assert {k: by_click[k] for k in by_job} == by_job  # the job's entry, plus who clicked
    assert (by_click["attempted_by"], by_click["attempted"]) == ("A", decision)

    again = _decide(migrated_engine, clock, late, "B", "reject")
    assert (again.status, again.state) == ("expired", "expired")
    assert [action for action, _, _ in _audit(migrated_engine, late)].count("expired") == 1


def test_a_request_before_its_deadline_is_decided(migrated_engine: Engine, clock: SimulatedClock) -> None:
    cr_id = make_pending(migrated_engine, clock, expires_at=clock.now() + timedelta(hours=1))
    clock.advance(timedelta(minutes=59))
    assert _decide(migrated_engine, clock, cr_id, "A").status == "approved"


def test_already_decided_names_the_approvals(migrated_engine: Engine, clock: SimulatedClock) -> None:
    big = make_pending(migrated_engine, clock, move=0.30)
    _decide(migrated_engine, clock, big, "A")
    assert _decide(migrated_engine, clock, big, "B").status == "approved"
    late = _decide(migrated_engine, clock, big, "C", "reject")
    assert late.status == "already_decided" and late.decided_by == "A, B"
    assert (list(late.approvals), late.approvals_needed) == (["A", "B"], 2)
