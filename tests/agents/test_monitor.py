"""The monitor and automatic rollback, end to end: sandbox over HTTP -> ingestion -> monitor -> executor.

The forecast comes from :class:`loop_fixtures.TruthPredictor` (what a perfect model fitted before the
shock would promise), so a day outside the band means the market really moved away from the promise.
"""

from __future__ import annotations

from datetime import date, timedelta

from loop_fixtures import (
    D0,
    Loop,
    TruthPredictor,
    approved_request,
    audit_story,
    load,
    loop,
    policy,
    scenario,
)
from sqlalchemy import func, select

from agents.execute import execute_request
from agents.monitor import Reading, monitor_day
from budgetloop.db.audit import AuditEntry
from budgetloop.db.loop import MonitoringReading
from budgetloop.db.session import session_scope
from budgetloop.lifecycle import Event
from budgetloop.store import audit as audit_store
from budgetloop.store import change_requests as requests
from connectors.sandbox.faults import Fault
from guardrails.policy import Policy

MOVES = {"search": 4400.0, "social": 5600.0}


def watch(
    world: Loop, day: date, predictor: TruthPredictor, pol: Policy, *, execute: bool = False
) -> list[Reading]:
    conns = world.connectors if execute else None
    return monitor_day(
        world.sessions, day=day, clock=world.clock, predictor=predictor, policy=pol, connectors=conns
    )


def _execute(world: Loop, pol: Policy) -> int:
    rid = approved_request(world, MOVES)
    report = execute_request(
        world.sessions, change_request_id=rid, connectors=world.connectors, policy=pol, clock=world.clock
    )
    assert report.outcome == "executed", report.reason
    return rid


def test_a_shock_after_execution_rolls_back_on_the_third_day_outside_the_band(database_url: str) -> None:
    pol = policy()
    shocked = scenario(shock=("search", D0 + timedelta(days=1), 0.1))
    with loop(database_url, shocked) as world:
        before = world.live()
        rid = _execute(world, pol)
        predictor = TruthPredictor(world.market)
        world.next_day()  # D0 itself: not monitored (the plan starts the day after execution)
        assert watch(world, D0, predictor, pol) == []
        outcomes = []
        for _ in range(3):
            day = world.next_day()
            readings = watch(world, day, predictor, pol, execute=True)
            assert [r.change_request_id for r in readings] == [rid]
            outcomes.append((readings[0].outcome, readings[0].fail_streak, readings[0].action))
        assert outcomes == [("fail", 1, "none"), ("fail", 2, "none"), ("fail", 3, "rollback")]
        last = readings[0]
        assert last.realised is not None and last.band_low is not None and last.realised < last.band_low
        assert last.rollback is not None and last.rollback.outcome == "executed", last.rollback
        rollback_id = last.rollback_request_id
        assert rollback_id is not None
        assert world.live() == before  # the budgets are back where they were
        original = load(world, rid)
        assert original.status == "rolled_back"
        assert "3 consecutive days" in (original.status_reason or "")
        rollback = load(world, rollback_id)
        assert (
            rollback.kind == "rollback" and rollback.rolls_back_id == rid and rollback.status == "confirmed"
        )
        assert [(i.channel, i.before, i.after) for i in rollback.items] == [
            ("search", 4400.0, before["search"]),
            ("social", 5600.0, before["social"]),
        ]
        applied = [a.idempotency_key for a in world.applied()]
        assert applied == [  # each request lowers a budget before it raises one
            f"cr{rid}-1-social",
            f"cr{rid}-0-search",
            f"cr{rollback_id}-0-search",
            f"cr{rollback_id}-1-social",
        ]
        # The audit log tells the whole story, in order.
        story = audit_story(world, [rid, rollback_id])
        o, r = str(rid), str(rollback_id)
        assert story == [
            (o, "proposed"),
            (o, "submitted"),
            (o, "approved"),
            (o, "executing"),
            (o, "platform_call"),
            (o, "platform_call"),
            (o, "executed"),
            (o, "monitoring_started"),
            (o, "monitoring_reading"),
            (o, "monitoring_reading"),
            (o, "monitoring_reading"),
            (o, "rollback_triggered"),
            (r, "proposed"),
            (r, "approved"),
            (r, "executing"),
            (r, "platform_call"),
            (r, "platform_call"),
            (r, "executed"),
            (r, "monitoring_started"),
            (r, "confirmed"),
            (o, "rolled_back"),
        ]
        with session_scope(world.sessions) as session:
            assert audit_store.verify_chain(session).valid
            assert requests.open_channels(session) == {}  # every lock released


def test_a_change_that_holds_is_confirmed_and_the_next_step_recorded(database_url: str) -> None:
    pol = policy(evaluation_days=4)
    with loop(database_url) as world:
        rid = _execute(world, pol)
        predictor = TruthPredictor(world.market)
        world.next_day()
        actions = []
        for _ in range(4):
            day = world.next_day()
            (reading,) = watch(world, day, predictor, pol)
            actions.append((reading.outcome, reading.action))
        assert actions == [("pass", "none")] * 3 + [("pass", "confirm")]
        cr = load(world, rid)
        assert cr.status == "confirmed"
        step = cr.details["next_step"]
        assert step["expand_step"] == 0.5 and step["days_inside"] == 4
        assert step["suggested_relative_move"] == round(step["relative_move"] * 1.5, 4)
        assert step["direction"] == {"search": 1, "social": -1}
        day = world.next_day()
        assert watch(world, day, predictor, pol) == []


def test_inconclusive_days_neither_count_nor_reset_and_reruns_are_idempotent(sqlite_url: str) -> None:
    pol = policy()
    with loop(sqlite_url, scenario(shock=("search", D0 + timedelta(days=1), 0.1))) as world:
        rid = _execute(world, pol)
        predictor = TruthPredictor(world.market)
        world.next_day()
        seen, reasons = [], []
        for n in range(5):
            today = world.market.today()
            world.server.advance_to(today + timedelta(days=1))
            world.clock.set(world.clock.now() + timedelta(days=1))
            if n == 2:  # the revenue source is down: the pull fails, the day cannot be judged
                world.server.arm(Fault(kind="server_error", dialect="store", times=None))
            if n != 1:  # n == 1: the day's data has not landed yet
                world.ingest(today)
            world.server.state.faults.clear()
            (reading,) = watch(world, today, predictor, pol)
            reasons.append(reading.reason)
            seen.append((reading.outcome, reading.fail_streak, reading.action))
        assert seen == [
            ("fail", 1, "none"),
            ("inconclusive", 1, "none"),
            ("inconclusive", 1, "none"),
            ("fail", 2, "none"),
            ("fail", 3, "rollback"),
        ]
        late = D0 + timedelta(days=2)
        assert "no revenue" in reasons[1] and "pull" not in reasons[1]
        assert "no revenue" in reasons[2] and "the store pull covering it failed" in reasons[2]
        assert "no revenue" in load_reading_reason(world, rid, late)
        # The late data lands; re-running that day upgrades the inconclusive reading, once.
        world.ingest(late)
        for _ in range(2):
            watch(world, late, predictor, pol)
        with session_scope(world.sessions) as session:
            rows = session.execute(
                select(MonitoringReading.day, MonitoringReading.outcome).where(
                    MonitoringReading.change_request_id == rid
                )
            ).all()
            assert len(rows) == 5 and dict(rows)[late] == "fail"
            entries = session.execute(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "monitoring_reading")
            ).scalar_one()
            assert entries == 6  # five readings + one revision of the late day, no duplicate on the re-run


def test_rollback_waits_for_a_person_when_the_policy_says_so(sqlite_url: str) -> None:
    pol = policy(require_approval=True)
    with loop(sqlite_url, scenario(shock=("search", D0 + timedelta(days=1), 0.1))) as world:
        rid = _execute(world, pol)
        predictor = TruthPredictor(world.market)
        world.next_day()
        for _ in range(4):
            day = world.next_day()
            readings = watch(world, day, predictor, pol, execute=True)
        rollbacks = [r.rollback_request_id for r in readings if r.rollback_request_id]
        assert rollbacks == []  # the fourth failing day does not propose a second rollback
        with session_scope(world.sessions) as session:
            (pending,) = requests.list_requests(session, kind="rollback")
            assert pending.status == "pending_approval" and pending.rolls_back_id == rid
        assert load(world, rid).status == "monitoring"
        assert len(world.applied()) == 2  # nothing undone without the approval


def load_reading_reason(world: Loop, rid: int, day: object) -> str:
    with session_scope(world.sessions) as session:
        row = session.execute(
            select(MonitoringReading).where(
                MonitoringReading.change_request_id == rid, MonitoringReading.day == day
            )
        ).scalar_one()
        return row.reason or ""


def test_a_rollback_blocked_by_a_freeze_is_retried_the_next_failing_day(sqlite_url: str) -> None:
    # Monitoring day D0+3 runs on D0+4 at 09:00, inside a one-day freeze: the rollback is blocked.
    freeze_day = D0 + timedelta(days=4)
    pol = policy(extra=f"freeze_windows:\n  - {{start: {freeze_day}, end: {freeze_day}, reason: launch}}")
    with loop(sqlite_url, scenario(shock=("search", D0 + timedelta(days=1), 0.1))) as world:
        rid = _execute(world, pol)
        predictor = TruthPredictor(world.market)
        world.next_day()
        for _ in range(3):
            day = world.next_day()
            (reading,) = watch(world, day, predictor, pol, execute=True)
        assert reading.action == "rollback" and reading.rollback is not None
        assert reading.rollback.outcome == "blocked" and "freeze_window" in (reading.rollback.reason or "")
        assert load(world, rid).status == "monitoring"
        day = world.next_day()  # D0+4 read on D0+5: the freeze is over
        (reading,) = watch(world, day, predictor, pol, execute=True)
        assert reading.fail_streak == 4 and reading.action == "rollback"
        assert reading.rollback is not None and reading.rollback.outcome == "executed"
        assert load(world, rid).status == "rolled_back"
        story = [a for _s, a in audit_story(world, [rid]) if a in ("rollback_triggered", "rolled_back")]
        assert story == ["rollback_triggered", "rollback_triggered", "rolled_back"]


def test_a_rollback_cancels_a_newer_plan_for_the_same_campaigns(sqlite_url: str) -> None:
    pol = policy()
    with loop(sqlite_url, scenario(shock=("search", D0 + timedelta(days=1), 0.1))) as world:
        rid = _execute(world, pol)
        predictor = TruthPredictor(world.market)
        world.next_day()
        for n in range(3):
            day = world.next_day()
            if n == 1:  # the planner prepares the next step while the first is watched
                newer = approved_request(world, {"search": 4600.0})
            (reading,) = watch(world, day, predictor, pol, execute=True)
        assert reading.action == "rollback" and reading.rollback is not None
        assert reading.rollback.outcome == "executed", reading.rollback.reason
        cancelled = load(world, newer)
        assert cancelled.status == "cancelled" and f"change request {rid} is being rolled back" in (
            cancelled.status_reason or ""
        )
        assert load(world, rid).status == "rolled_back"
        # what the monitor job refreshes in Slack: that request, and no other original's
        from agents.jobs import cancelled_by_rollback

        with session_scope(world.sessions) as s:
            assert [c.id for c in cancelled_by_rollback(s, rid)] == [newer]
            assert cancelled_by_rollback(s, newer) == [] and cancelled_by_rollback(s, rid + 10) == []


def test_a_newer_executed_move_takes_over_the_watch(sqlite_url: str) -> None:
    pol = policy()
    pol = pol.model_copy(update={"change": pol.change.model_copy(update={"min_days_between_changes": 0})})
    with loop(sqlite_url) as world:
        first = _execute(world, pol)
        world.next_day()
        second = approved_request(world, {"search": 4700.0})
        report = execute_request(
            world.sessions,
            change_request_id=second,
            connectors=world.connectors,
            policy=pol,
            clock=world.clock,
        )
        assert report.outcome == "executed", report.reason
        older = load(world, first)
        assert older.status == "confirmed" and f"superseded by change request {second}" in (
            older.status_reason or ""
        )
        assert load(world, second).status == "monitoring"


def test_geo_experiment_requests_are_left_to_their_own_job(sqlite_url: str) -> None:
    pol = policy()
    with loop(sqlite_url, scenario(shock=("search", D0 + timedelta(days=1), 0.1))) as world:
        now = world.clock.now()
        with session_scope(world.sessions) as session:
            cr = requests.create(
                session,
                draft=requests.ChangeRequestDraft(
                    kind="experiment",
                    requested_by="experimenter",
                    objective="revenue",
                    summary="geo holdout",
                    items=[],
                    expected_gain=0.0,
                    gain_p05=0.0,
                    gain_p95=0.0,
                    probability_of_improvement=0.0,
                    monitoring_plan={"first_day": (D0 + timedelta(days=1)).isoformat()},
                ),
                now=now,
            )
            for event in (
                Event.AUTO_APPROVE,
                Event.START_EXECUTION,
                Event.FINISH_EXECUTION,
                Event.START_MONITORING,
            ):
                requests.transition(
                    session, change_request_id=cr.id, event=event, actor="experimenter", now=now
                )
            experiment_id = cr.id
        world.next_day()
        day = world.next_day()
        assert watch(world, day, TruthPredictor(world.market), pol, execute=True) == []
        report = execute_request(
            world.sessions,
            change_request_id=experiment_id,
            connectors=world.connectors,
            policy=pol,
            clock=world.clock,
        )
        assert report.outcome == "skipped" and "agents.experiments" in (report.reason or "")
        assert load(world, experiment_id).status == "monitoring"
