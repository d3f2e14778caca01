"""`agents.approvals.decide` on its own: the policy's rules, and concurrent deciders from threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from agents.approvals import DecisionOutcome, decide
from budgetloop.clock import SimulatedClock
from budgetloop.db.audit import AuditEntry
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
