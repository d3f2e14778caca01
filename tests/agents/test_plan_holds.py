"""When the planner must not propose: a rollback that failed leaves its original monitored, and the
monitor tries it again; a step planned on top would start from budgets being undone and, once
executed, would supersede the very change the monitor decided to roll back."""

from __future__ import annotations

from datetime import timedelta

from agents.execute import UNKNOWN
from agents.plan import failed_rollback, run_plan
from agents.rollback import ROLLBACK_KIND
from budgetloop.db.session import session_scope
from budgetloop.lifecycle import Event
from budgetloop.store import change_requests as crs
from budgetloop.store.policy import record_policy
from tests.agents.scheduler_fixtures import runtime

POLICY = """
budget: {total_daily_max: 10000}
channels: {search: {}, video: {}}
"""
TO_MONITORING = (Event.AUTO_APPROVE, Event.START_EXECUTION, Event.FINISH_EXECUTION, Event.START_MONITORING)


def _draft(
    kind: str = "reallocation", rolls_back_id: int | None = None, up: bool = True
) -> crs.ChangeRequestDraft:
    search, video = (4000.0, 4400.0) if up else (4400.0, 4000.0)
    return crs.ChangeRequestDraft(
        kind=kind,
        requested_by="planner" if rolls_back_id is None else "monitor",
        objective="revenue",
        summary="move 400/day from video into search",
        items=[
            crs.ItemDraft("search", "google_ads", "111", search, video),
            crs.ItemDraft("video", "google_ads", "222", 3000.0, 2600.0 if up else 3400.0),
        ],
        expected_gain=120.0,
        gain_p05=20.0,
        gain_p95=230.0,
        probability_of_improvement=0.91,
        rolls_back_id=rolls_back_id,
    )


def test_a_failed_rollback_holds_the_planner_until_it_is_done(database_url: str) -> None:
    with runtime(database_url) as rt:
        now = rt.clock.now()
        with session_scope(rt.engine) as s:
            record_policy(s, text=POLICY, source="p.yaml", author="U0OPS", now=now)
            original = crs.create(s, draft=_draft(), now=now)
            for ev in TO_MONITORING:
                crs.transition(s, change_request_id=original.id, event=ev, actor="t", now=now)
            assert failed_rollback(s) is None
            later = now + timedelta(days=3)
            rollback = crs.create(s, draft=_draft(ROLLBACK_KIND, original.id, up=False), now=later)
            for ev in (Event.AUTO_APPROVE, Event.START_EXECUTION, Event.FAIL):
                crs.transition(s, change_request_id=rollback.id, event=ev, actor="executor", now=later)
            assert failed_rollback(s) == (rollback.id, original.id)
            run = run_plan(rt, s)
            assert not run.proposed and run.change_request_id is None
            assert run.reason.startswith(
                f"the rollback of change request {original.id} (request {rollback.id}) failed"
            )
            # once the monitor lets the original go (confirmed, or rolled back by a retry) it plans again
            crs.transition(s, change_request_id=original.id, event=Event.CONFIRM, actor="monitor", now=later)
            assert failed_rollback(s) is None
            assert run_plan(rt, s).reason == "no promoted model yet"


def test_a_budget_call_whose_outcome_is_unknown_holds_the_planner(database_url: str) -> None:
    """A call that never answered may still land: a plan made now would start from a budget that
    can change under it (agents.execute.reconcile_unknown settles it)."""
    with runtime(database_url) as rt:
        now = rt.clock.now()
        with session_scope(rt.engine) as s:
            record_policy(s, text=POLICY, source="p.yaml", author="U0OPS", now=now)
            failed = crs.create(s, draft=_draft(), now=now)
            for ev in (Event.AUTO_APPROVE, Event.START_EXECUTION, Event.FAIL):
                crs.transition(s, change_request_id=failed.id, event=ev, actor="executor", now=now)
            failed.items[1].state = UNKNOWN  # as the executor records a call with no answer
            s.flush()
            run = run_plan(rt, s)
            assert not run.proposed
            assert run.reason.startswith(
                f"a budget call of change request {failed.id} (video) never answered"
            )
            failed.items[1].state = "failed"  # settled
            s.flush()
            assert run_plan(rt, s).reason == "no promoted model yet"
