"""The executor against the real sandbox over HTTP, on SQLite and PostgreSQL.

Exactly-once is checked against the sandbox's own log of applied changes (``/admin/applied``), never
against what the executor says about itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from loop_fixtures import (
    CLIENT_TIMEOUT,
    D0,
    HANG,
    REPO_ROOT_HINT,
    Loop,
    approved_request,
    at,
    audit_story,
    load,
    loop,
    policy,
)

from agents.execute import (
    LATE_WRITE_WINDOW,
    UNKNOWN,
    ExecutionHooks,
    ExecutionReport,
    execute_request,
    reconcile_unknown,
)
from budgetloop.db.session import session_scope
from budgetloop.store import audit as audit_store
from connectors.sandbox.faults import Fault
from guardrails.policy import Policy

MOVES = {"search": 3600.0, "social": 6400.0}  # -10% / +6.7%: no learning phase, inside every rule
# (calls that lower a budget go first, so these run in the items' order: search, then social)


class Boom(RuntimeError):
    """The executor process 'dies' here."""


def run(world: Loop, rid: int, pol: Policy | None = None, **kw: Any) -> ExecutionReport:
    return execute_request(
        world.sessions,
        change_request_id=rid,
        connectors=world.connectors,
        policy=pol or policy(),
        clock=world.clock,
        **kw,
    )


def _applied_per_key(world: Loop) -> Counter[str]:
    return Counter(a.idempotency_key for a in world.applied())


def test_executes_each_item_once_and_starts_monitoring(database_url: str) -> None:
    with loop(database_url) as world:
        rid = approved_request(world, MOVES)
        report = run(world, rid)
        assert report.outcome == "executed", report.reason
        assert report.status == "monitoring"
        assert world.live()["search"] == 3600.0 and world.live()["social"] == 6400.0
        again = run(world, rid)
        assert again.outcome == "skipped" and again.calls == 0
        counts = _applied_per_key(world)
        assert sorted(counts.values()) == [1, 1] and all(k.startswith(f"cr{rid}-") for k in counts)
        cr = load(world, rid)
        assert [i.state for i in cr.items] == ["applied", "applied"]
        assert all(i.platform_response and i.platform_response["replayed"] is False for i in cr.items)
        assert cr.monitoring_plan["first_day"] == (D0 + timedelta(days=1)).isoformat()
        assert cr.monitoring_plan["evaluation_days"] == 5
        story = [a for _s, a in audit_story(world, [rid])]
        assert story == [
            "proposed",
            "submitted",
            "approved",
            "executing",
            "platform_call",
            "platform_call",
            "executed",
            "monitoring_started",
        ]


def test_budgets_are_lowered_before_others_are_raised(sqlite_url: str) -> None:
    """A reallocation at the daily cap must not stand above it between two calls (a reviewer saw the
    total reach 15,371 against a 15,000 cap when the calls ran in channel order)."""
    with loop(sqlite_url) as world:
        total = sum(world.live().values())
        rid = approved_request(world, {"search": 4400.0, "social": 5600.0})  # social's call goes first
        assert run(world, rid).outcome == "executed"
        keys = [a.idempotency_key for a in world.applied()]
        assert keys == [f"cr{rid}-1-social", f"cr{rid}-0-search"]
        assert sum(world.live().values()) == pytest.approx(total)


def test_crash_between_call_and_commit_resumes_with_the_same_keys(database_url: str) -> None:
    with loop(database_url) as world:
        rid = approved_request(world, MOVES)
        second = f"cr{rid}-1-social"

        def die(key: str) -> None:
            if key == second:
                raise Boom(key)

        with pytest.raises(Boom):
            run(world, rid, hooks=ExecutionHooks(after_call=die))
        cr = load(world, rid)
        assert cr.status == "executing"
        assert [i.state for i in cr.items] == [
            "applied",
            "pending",
        ]  # social reached the platform, not our DB
        assert world.live()["social"] == 6400.0
        report = run(world, rid)
        assert report.outcome == "executed", report.reason
        assert report.calls == 1 and report.replays == 1  # the platform recognised the key: nothing new
        assert sorted(_applied_per_key(world).values()) == [1, 1]
        assert "execution_resumed" in [a for _s, a in audit_story(world, [rid])]


def test_killed_process_mid_execution_is_finished_by_the_next_run(sqlite_url: str) -> None:
    with loop(sqlite_url) as world:
        rid = approved_request(world, {"search": 3600.0, "social": 5600.0, "retail": 2200.0})
        script = textwrap.dedent(
            f"""
            import os, sys
            sys.path.insert(0, {os.path.dirname(__file__)!r})
            from datetime import datetime
            from agents.execute import ExecutionHooks, ExecutionReport, execute_request
            from budgetloop.clock import SimulatedClock
            from budgetloop.db.session import make_engine, session_factory
            from connectors.registry import sandbox_connectors
            from loop_fixtures import policy
            conns = sandbox_connectors({world.server.base_url!r}, sleep=lambda s: None, timeout={CLIENT_TIMEOUT})
            die = ExecutionHooks(after_commit=lambda key: os._exit(9) if key.endswith("-1-social") else None)
            execute_request(session_factory(make_engine({sqlite_url!r})), change_request_id={rid},
                            connectors=conns, policy=policy(),
                            clock=SimulatedClock(datetime.fromisoformat({world.clock.now().isoformat()!r})),
                            hooks=die)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO_ROOT_HINT, timeout=120, capture_output=True
        )
        assert done.returncode == 9, done.stderr.decode()[-2000:]
        cr = load(world, rid)
        assert cr.status == "executing" and [i.state for i in cr.items] == ["applied", "applied", "pending"]
        report = run(world, rid)
        assert report.outcome == "executed", report.reason
        assert report.calls == 1 and report.replays == 0
        assert sorted(_applied_per_key(world).values()) == [1, 1, 1]
        assert world.live() == {"search": 3600.0, "social": 5600.0, "retail": 2200.0}


def test_timeout_after_the_platform_applied_is_applied_exactly_once(database_url: str) -> None:
    with loop(database_url) as world:
        world.server.arm(Fault(kind="timeout_after_apply", dialect="meta", delay=HANG))
        rid = approved_request(world, MOVES)
        report = run(world, rid)
        assert report.outcome == "executed", report.reason
        social = next(i for i in report.items if i.channel == "social")
        assert social.replayed is True  # the retry with the same key was answered as a replay
        assert sorted(_applied_per_key(world).values()) == [1, 1]
        assert world.live()["social"] == 6400.0


def test_partial_failure_rolls_back_the_applied_part(database_url: str) -> None:
    with loop(database_url, edit_caps={"meta": 0}) as world:  # Meta refuses every budget edit today
        before = world.live()
        rid = approved_request(world, MOVES)  # search is lowered, then raising social is refused
        report = run(world, rid)
        assert report.outcome == "failed" and report.status == "failed"
        assert "rejected social" in (report.reason or "")
        assert [i.state for i in report.items] == ["compensated", "failed"]
        assert world.live() == before
        keys = [a.idempotency_key for a in world.applied()]
        assert keys == [f"cr{rid}-0-search", f"cr{rid}-0-search-undo"]
        cr = load(world, rid)
        assert cr.status_reason == report.reason
        story = [a for _s, a in audit_story(world, [rid])]
        assert story[-5:] == ["platform_call", "platform_rejected", "compensating", "platform_undo", "failed"]


def test_a_freeze_that_began_after_approval_blocks_execution(database_url: str) -> None:
    frozen = policy(extra=f"freeze_windows:\n  - {{start: '{D0}T10:00', end: '{D0}T23:00', reason: launch}}")
    with loop(database_url) as world:
        rid = approved_request(world, MOVES)  # approved at 09:00, before the window
        world.clock.set(at(D0, 10, 30))
        report = run(world, rid, frozen)
        assert report.outcome == "blocked" and report.status == "failed"
        assert "freeze_window" in (report.reason or "") and "launch" in (report.reason or "")
        assert world.applied() == []


@pytest.mark.parametrize(
    ("extra", "needle"),
    [("kill_switch: true", "kill_switch"), ("autonomy: shadow", "shadow")],
)
def test_kill_switch_and_shadow_autonomy_block(sqlite_url: str, extra: str, needle: str) -> None:
    text_policy = (
        policy(extra=extra) if "kill" in extra else policy().model_copy(update={"autonomy": "shadow"})
    )
    with loop(sqlite_url) as world:
        rid = approved_request(world, MOVES)
        report = run(world, rid, text_policy)
        assert report.outcome == "blocked" and needle in (report.reason or "")
        assert world.applied() == []


def test_a_campaign_that_entered_learning_blocks(sqlite_url: str) -> None:
    with loop(sqlite_url) as world:
        rid = approved_request(world, MOVES)
        # Someone else's big edit after the request was planned puts search into learning ...
        world.connectors.platforms["google_ads"].set_budget(
            next(
                c.external_id
                for c in world.connectors.platforms["google_ads"].list_campaigns()
                if c.channel == "search"
            ),
            6000.0,
            idempotency_key="outside-edit",
        )
        world.market.set_budget("search", 4000.0)  # ... and back; learning stays on
        report = run(world, rid)
        assert report.outcome == "blocked", report.reason
        assert "learning" in (report.reason or "")


def test_a_stale_live_budget_is_refused_for_replanning(database_url: str) -> None:
    with loop(database_url) as world:
        rid = approved_request(world, MOVES)
        google = world.connectors.platforms["google_ads"]
        search = next(c.external_id for c in google.list_campaigns() if c.channel == "search")
        google.set_budget(search, 4100.0, idempotency_key="someone-else")
        report = run(world, rid)
        assert report.outcome == "stale" and report.status == "cancelled"
        assert "re-plan" in (report.reason or "") and "4000.00" in (report.reason or "")
        assert [a.idempotency_key for a in world.applied()] == ["someone-else"]


def test_the_audit_chain_stays_valid(sqlite_url: str) -> None:
    with loop(sqlite_url, edit_caps={"meta": 0}) as world:
        rid = approved_request(world, MOVES)
        run(world, rid)
        with session_scope(world.sessions) as session:
            assert audit_store.verify_chain(session).valid


def test_two_executors_racing_on_one_request_apply_it_once(database_url: str) -> None:
    with loop(database_url) as world:
        rid = approved_request(world, MOVES)
        gate = threading.Barrier(2)
        reports: list[ExecutionReport] = []

        def worker() -> None:
            gate.wait()
            reports.append(run(world, rid))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(r.outcome for r in reports) == ["executed", "skipped"], [r.reason for r in reports]
        assert sorted(_applied_per_key(world).values()) == [1, 1]
        assert load(world, rid).status == "monitoring"


def test_a_second_executor_resuming_a_request_mid_execution_leaves_the_rest_to_one(database_url: str) -> None:
    """The sweep finds a request `executing` while an approval's immediate run is still on it (it cannot
    tell a live run from a crashed one) and resumes it. Between them each item is applied and recorded
    once, the request finishes once, and the run that lost the race says so instead of failing."""
    with loop(database_url) as world:
        rid = approved_request(world, MOVES)
        inner: list[ExecutionReport] = []

        def second_executor(key: str) -> None:
            if not inner:  # after the first run's first item is committed
                inner.append(run(world, rid))

        first = run(world, rid, hooks=ExecutionHooks(after_commit=second_executor))
        (second,) = inner
        assert second.outcome == "executed", second.reason
        assert first.outcome == "skipped" and "another executor" in (first.reason or ""), first.reason
        assert sorted(_applied_per_key(world).values()) == [1, 1]
        assert load(world, rid).status == "monitoring"
        story = [a for _s, a in audit_story(world, [rid])]
        assert story.count("platform_call") == 2 and story.count("executed") == 1
        with session_scope(world.sessions) as session:
            assert audit_store.verify_chain(session).valid


class _LateReader:
    """A real connector whose budget read waits until another executor has finished the request."""

    def __init__(self, inner: Any, reading: threading.Event, done: threading.Event) -> None:
        self._inner, self._reading, self._done = inner, reading, done

    def get_budgets(self) -> dict[str, float]:
        self._reading.set()
        assert self._done.wait(timeout=60)
        return dict(self._inner.get_budgets())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_an_executor_that_reads_live_budgets_after_another_applied_them_steps_aside(
    database_url: str,
) -> None:
    """The loser of the race saw `approved`, then reads budgets the winner has already moved: it must
    neither cancel the request as stale nor block it, only step aside (`skipped`)."""
    with loop(database_url) as world:
        rid = approved_request(world, MOVES)
        reading, done = threading.Event(), threading.Event()
        late = {name: _LateReader(c, reading, done) for name, c in world.connectors.platforms.items()}
        reports: dict[str, ExecutionReport] = {}

        def loser() -> None:
            reports["late"] = execute_request(
                world.sessions, change_request_id=rid, connectors=late, policy=policy(), clock=world.clock
            )

        thread = threading.Thread(target=loser)
        thread.start()
        assert reading.wait(timeout=60)  # the loser has seen `approved` and is reading live budgets
        reports["first"] = run(world, rid)
        done.set()
        thread.join(timeout=60)
        assert reports["first"].outcome == "executed", reports["first"].reason
        assert reports["late"].outcome == "skipped", reports["late"].reason
        assert "another executor" in (reports["late"].reason or "")
        assert load(world, rid).status == "monitoring"
        assert sorted(_applied_per_key(world).values()) == [1, 1]


def test_an_outage_while_reading_live_budgets_defers_without_touching_anything(sqlite_url: str) -> None:
    with loop(sqlite_url) as world:
        rid = approved_request(world, MOVES)
        world.server.arm(Fault(kind="server_error", dialect="google", times=None))
        report = run(world, rid)
        assert report.outcome == "deferred" and report.status == "approved"
        assert "will retry" in (report.reason or "")
        world.server.state.faults.clear()
        assert run(world, rid).outcome == "executed"
        assert sorted(_applied_per_key(world).values()) == [1, 1]


def test_a_platform_that_never_answers_an_edit_is_compensated(sqlite_url: str) -> None:
    with loop(sqlite_url) as world:
        before = world.live()
        rid = approved_request(world, MOVES)
        world.server.arm(Fault(kind="server_error", dialect="meta", route="edit", times=None))
        report = run(world, rid)
        assert report.outcome == "failed" and "did not answer for social" in (report.reason or "")
        social = next(i for i in report.items if i.channel == "social")
        assert social.state == UNKNOWN and "not applied by the platform so far" in (social.detail or "")
        assert [i.state for i in report.items] == ["compensated", UNKNOWN]
        assert world.live() == before
        assert [a.idempotency_key for a in world.applied()] == [f"cr{rid}-0-search", f"cr{rid}-0-search-undo"]
        story = [a for _s, a in audit_story(world, [rid])]
        assert "platform_call_failed" in story and story[-1] == "failed"
        # the call never lands: looked at again by each execute run, settled once the window passed
        assert reconcile_unknown(world.sessions, world.connectors, clock=world.clock) == []
        world.clock.set(world.clock.now() + LATE_WRITE_WINDOW)
        (settled,) = reconcile_unknown(world.sessions, world.connectors, clock=world.clock)
        assert (settled.change_request_id, settled.channel, settled.outcome) == (rid, "social", "not_applied")
        assert [i.state for i in load(world, rid).items] == ["compensated", "failed"]
        assert reconcile_unknown(world.sessions, world.connectors, clock=world.clock) == []
        assert world.live() == before


def test_a_call_that_never_answered_and_landed_late_is_put_back(sqlite_url: str) -> None:
    """The platform held the raise past the client's timeout and its retries (503s); the executor
    saw social still at `before`, undid search and failed the request. Then the held call landed:
    social raised with no record, which the next plan took as its start and its swing limits never
    counted. The next execute run finds it at `after` and puts it back."""
    with loop(sqlite_url) as world:
        before = world.live()
        rid = approved_request(world, MOVES)
        world.server.arm(
            Fault(kind="slow", dialect="meta", route="edit", delay=HANG, times=1),
            Fault(kind="server_error", dialect="meta", route="edit", times=None),
        )
        report = run(world, rid)
        assert report.outcome == "failed" and [i.state for i in report.items] == ["compensated", UNKNOWN]
        deadline = time.monotonic() + 4 * HANG
        while world.live()["social"] != MOVES["social"]:  # the held call lands
            assert time.monotonic() < deadline, "the held call never landed"
            time.sleep(0.05)
        # Meta still refuses edits: the put-back fails, is said once, and is tried again each run
        (failing,) = reconcile_unknown(world.sessions, world.connectors, clock=world.clock)
        assert (failing.outcome, failing.first) == ("undo_failed", True)
        (again,) = reconcile_unknown(world.sessions, world.connectors, clock=world.clock)
        assert (again.outcome, again.first) == ("undo_failed", False)
        assert load(world, rid).items[1].state == UNKNOWN
        world.server.state.faults.clear()
        stopped = policy(extra="kill_switch: true")  # no budget write at all, this one included
        assert reconcile_unknown(world.sessions, world.connectors, clock=world.clock, policy=stopped) == []
        assert world.live()["social"] == MOVES["social"]
        (settled,) = reconcile_unknown(world.sessions, world.connectors, clock=world.clock)
        assert (settled.channel, settled.outcome) == ("social", "undone")
        assert settled.detail.startswith("the budget call that never answered landed late, setting 6400.00")
        assert world.live() == before
        assert [i.state for i in load(world, rid).items] == ["compensated", "compensated"]
        story = [a for _s, a in audit_story(world, [rid])]
        assert story[-1] == "platform_late_write_undone"
        assert reconcile_unknown(world.sessions, world.connectors, clock=world.clock) == []


def test_the_kill_switch_halts_an_interrupted_execution_until_lifted(sqlite_url: str) -> None:
    with loop(sqlite_url) as world:
        rid = approved_request(world, MOVES)

        def die(key: str) -> None:
            raise Boom(key)

        with pytest.raises(Boom):
            run(world, rid, hooks=ExecutionHooks(after_commit=die))
        halted = run(world, rid, policy(extra="kill_switch: true"))
        assert halted.outcome == "halted" and halted.calls == 0 and halted.status == "executing"
        assert [i.state for i in halted.items] == ["applied", "pending"]
        assert run(world, rid).outcome == "executed"
        assert sorted(_applied_per_key(world).values()) == [1, 1]


def test_a_compensation_undoes_the_raises_before_the_lowerings(sqlite_url: str) -> None:
    """Applied: retail lowered, then search raised; social's raise is refused. Undoing search's raise
    first keeps the total between its two ends, as applying did."""
    with loop(sqlite_url, edit_caps={"meta": 0}) as world:
        before = world.live()
        rid = approved_request(world, {"retail": 1800.0, "search": 4400.0, "social": 6200.0})
        assert run(world, rid).outcome == "failed"
        assert [a.idempotency_key for a in world.applied()] == [
            f"cr{rid}-0-retail",
            f"cr{rid}-1-search",
            f"cr{rid}-1-search-undo",
            f"cr{rid}-0-retail-undo",
        ]
        assert world.live() == before


def test_a_compensation_interrupted_by_a_crash_is_finished_by_the_next_run(sqlite_url: str) -> None:
    with loop(sqlite_url, edit_caps={"meta": 0}) as world:
        before = world.live()
        rid = approved_request(world, {"search": 3600.0, "retail": 1800.0, "social": 6400.0})

        def die(key: str) -> None:
            if key.endswith("-0-search-undo"):
                raise Boom(key)

        with pytest.raises(Boom):
            run(world, rid, hooks=ExecutionHooks(after_commit=die))
        assert [i.state for i in load(world, rid).items] == ["compensated", "applied", "failed"]
        report = run(world, rid)
        assert report.outcome == "failed" and "interrupted compensation" in (report.reason or "")
        assert "rejected social" in (report.reason or "")
        assert [i.state for i in report.items] == ["compensated", "compensated", "failed"]
        assert world.live() == before
        assert sorted(_applied_per_key(world).values()) == [1, 1, 1, 1]  # two applied, two undone, once each


def test_a_cooldown_blocks_unless_an_owner_overrode_the_soft_rule(sqlite_url: str) -> None:
    soft = policy(extra="enforcement: {min_days_between_changes: soft}\nowners: [U0OPSLEAD]")
    override = {"rule": "min_days_between_changes", "key": "search", "owner": "U0OPSLEAD", "reason": "launch"}
    with loop(sqlite_url) as world:
        assert run(world, approved_request(world, {"search": 4400.0}), soft).outcome == "executed"
        world.next_day()
        plain = run(world, approved_request(world, {"search": 4600.0}), soft)
        assert plain.outcome == "blocked" and "min_days_between_changes" in (plain.reason or "")
        overridden = approved_request(world, {"search": 4600.0}, details={"overrides": [override]})
        assert run(world, overridden, soft).outcome == "executed"
        assert world.live()["search"] == 4600.0


def test_an_unknown_item_whose_campaign_a_newer_request_moved_is_left_alone(sqlite_url: str) -> None:
    """Put back only what the lost call itself set: once a newer request has written the campaign,
    a budget at the old `after` is that request's, not a late landing."""
    with loop(sqlite_url) as world:
        rid = approved_request(world, MOVES)
        world.server.arm(Fault(kind="server_error", dialect="meta", route="edit", times=None))
        assert run(world, rid).outcome == "failed"
        world.server.state.faults.clear()
        newer = approved_request(world, {"social": MOVES["social"]})  # sets the very same budget
        assert run(world, newer).outcome == "executed"
        (settled,) = reconcile_unknown(world.sessions, world.connectors, clock=world.clock)
        assert (settled.outcome, settled.detail) == (
            "moved",
            f"the budget call that never answered is settled: change request {newer} has moved the "
            "campaign since; left as it is",
        )
        assert world.live()["social"] == MOVES["social"]
        assert [i.state for i in load(world, rid).items] == ["compensated", "failed"]


def test_a_run_that_dies_after_recording_an_unknown_item_resumes_the_compensation(sqlite_url: str) -> None:
    """Killed between recording social `unknown` and undoing search, the request stayed `executing`;
    the resumed run skipped the unknown item and finished the request `executed` with search lowered
    and social never raised. It now goes on compensating."""
    with loop(sqlite_url) as world:
        before = world.live()
        rid = approved_request(world, MOVES)
        world.server.arm(Fault(kind="server_error", dialect="meta", route="edit", times=None))

        def die(key: str) -> None:
            if key.endswith("-unknown"):
                raise Boom(key)

        with pytest.raises(Boom):
            run(world, rid, hooks=ExecutionHooks(after_commit=die))
        assert [i.state for i in load(world, rid).items] == ["applied", UNKNOWN]
        world.server.state.faults.clear()
        report = run(world, rid)
        assert report.outcome == "failed" and report.status == "failed", report.reason
        assert [i.state for i in report.items] == ["compensated", UNKNOWN]
        assert world.live() == before
