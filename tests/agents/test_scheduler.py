"""The scheduler on a simulated clock: fire times from the production triggers, order, job_runs rows,
retries with backoff on the clock, a failing job never stopping the others, resuming unfinished runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from agents.jobs import JOBS, JobSpec
from agents.locks import process_owner, try_claim
from agents.scheduler import (
    RetryPolicy,
    SimulatedScheduler,
    cron_triggers,
    last_fire_time,
    resume_point,
    run_job,
)
from budgetloop.db.ops import JobLock, JobRun
from budgetloop.store import change_requests as crs
from tests.agents.scheduler_fixtures import MONDAY, Recorder, runtime


def _runs(rt, job: str | None = None) -> list[JobRun]:  # type: ignore[no-untyped-def]
    with rt.unit_of_work() as s:
        q = select(JobRun).order_by(JobRun.id)
        if job:
            q = q.where(JobRun.job == job)
        return list(s.execute(q).scalars())


def test_triggers_are_the_registry_fields_in_utc() -> None:
    trig = cron_triggers()
    assert set(trig) == set(JOBS)
    t = trig["retrain"].get_next_fire_time(None, datetime(2026, 1, 6, tzinfo=UTC))  # a Tuesday
    assert t == datetime(2026, 1, 12, 3, 0, tzinfo=UTC)  # the next Monday 03:00
    assert trig["ingest"].get_next_fire_time(None, MONDAY) == MONDAY.replace(hour=6)


def test_last_fire_time_finds_the_due_time_of_a_run_started_late() -> None:
    trig = cron_triggers()
    now = datetime(2026, 1, 7, 6, 0, 42, tzinfo=UTC)
    assert last_fire_time(trig["ingest"], now) == datetime(2026, 1, 7, 6, 0, tzinfo=UTC)
    assert last_fire_time(trig["retrain"], now) == datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
    assert last_fire_time(trig["ingest"], datetime(2026, 1, 7, 6, 0, tzinfo=UTC)) == datetime(
        2026, 1, 7, 6, 0, tzinfo=UTC
    )


def test_a_week_runs_every_job_at_its_times_in_order(sqlite_url: str) -> None:
    rec = Recorder()
    with runtime(sqlite_url) as rt:
        sched = SimulatedScheduler(rt, rt.clock, jobs=rec.registry())  # type: ignore[arg-type]
        until = MONDAY + timedelta(days=7)
        results = sched.run_due(until)
        assert rt.clock.now() == until
        assert all(r.status == "ok" for r in results)
        assert rec.times("ingest") == [MONDAY + timedelta(days=d, hours=6) for d in range(7)]
        assert rec.times("monitor") == [MONDAY + timedelta(days=d, hours=7) for d in range(7)]
        assert rec.times("retrain") == [MONDAY + timedelta(hours=3)]
        # execute and expire are idle (no request is approved or stale): their fires cost no run.
        assert rec.times("execute") == [] and rec.times("expire") == []
        times = [at for _, at in rec.calls]
        assert times == sorted(times), "jobs ran out of time order"
        runs = _runs(rt, "ingest")
        assert [r.status for r in runs] == ["ok"] * 7
        assert runs[0].summary == {"call": 1, "at": MONDAY.replace(hour=6).isoformat()}
        assert runs[0].scheduled_for == MONDAY.replace(hour=6)
        assert runs[0].finished_at is not None and runs[0].duration_s is not None
        assert resume_point(rt.engine) is not None


def test_jobs_due_at_the_same_instant_run_in_registry_order(sqlite_url: str) -> None:
    rec = Recorder()
    six = {"hour": 6, "minute": 0}
    jobs = {n: JobSpec(n, rec.func(n), six, n) for n in ("zeta", "alpha", "mid")}
    with runtime(sqlite_url) as rt:
        SimulatedScheduler(rt, rt.clock, jobs=jobs).run_due(MONDAY + timedelta(days=1, hours=12))  # type: ignore[arg-type]
        assert [n for n, _ in rec.calls] == ["zeta", "alpha", "mid"] * 2


def test_a_failing_job_is_retried_with_backoff_and_the_others_go_on(sqlite_url: str) -> None:
    rec = Recorder()
    rec.fail_first = {"ingest": 2, "monitor": 99}
    registry = {n: s for n, s in rec.registry().items() if n in ("ingest", "monitor", "retrain")}
    retry = RetryPolicy(max_attempts=3, backoff=timedelta(minutes=5), factor=2.0)
    with runtime(sqlite_url) as rt:
        sched = SimulatedScheduler(rt, rt.clock, jobs=registry, retry=retry)  # type: ignore[arg-type]
        results = sched.run_due(MONDAY + timedelta(days=2))
        six = MONDAY.replace(hour=6)
        assert rec.times("ingest")[:3] == [six, six + timedelta(minutes=5), six + timedelta(minutes=15)]
        ingest = _runs(rt, "ingest")
        assert [(r.attempt, r.status) for r in ingest[:3]] == [(1, "failed"), (2, "failed"), (3, "ok")]
        assert all(r.scheduled_for == six for r in ingest[:3])
        assert "ingest broke on call 1" in (ingest[0].error or "")
        # The next day's run starts from attempt 1 again.
        assert (ingest[3].attempt, ingest[3].status, ingest[3].scheduled_for) == (
            1,
            "ok",
            six + timedelta(days=1),
        )
        # A job that always fails stops after max_attempts and is visible; nothing else stopped.
        monitor = [r for r in _runs(rt, "monitor") if r.scheduled_for == MONDAY.replace(hour=7)]
        assert [(r.attempt, r.status) for r in monitor] == [(1, "failed"), (2, "failed"), (3, "failed")]
        assert len(rec.times("monitor")) == 6  # three attempts on each of the two days
        assert any(r.job == "retrain" and r.status == "ok" for r in results)
        with rt.unit_of_work() as s:
            lock = s.get(JobLock, ("monitor", MONDAY.replace(hour=7)))
            assert lock is not None and (lock.status, lock.attempt) == ("done", 3)


def test_run_job_twice_for_the_same_due_time_runs_once(sqlite_url: str) -> None:
    rec = Recorder()
    with runtime(sqlite_url) as rt:
        due = MONDAY.replace(hour=6)
        first = run_job(rt, "ingest", due, jobs=rec.registry())  # type: ignore[arg-type]
        second = run_job(rt, "ingest", due, jobs=rec.registry())  # type: ignore[arg-type]
        assert (first.status, second.status) == ("ok", "skipped_locked")
        assert "already ran to the end" in (second.error or "")
        assert len(rec.times("ingest")) == 1
        assert [r.status for r in _runs(rt)] == ["ok", "skipped_locked"]


def test_unknown_job_names_the_known_ones(sqlite_url: str) -> None:
    with runtime(sqlite_url) as rt, pytest.raises(KeyError, match="the jobs are"):
        run_job(rt, "nope", MONDAY)


def test_a_new_scheduler_first_finishes_what_a_dead_one_left(sqlite_url: str) -> None:
    rec = Recorder()
    with runtime(sqlite_url) as rt:
        due = MONDAY.replace(hour=6)
        # A claim left running by an owner whose process is gone (pid 1 is never ours, and a
        # made-up host's pid we cannot check is treated as alive, so use this host and a dead pid).
        import socket
        import subprocess
        import sys

        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        owner = f"{socket.gethostname()}:{int(dead.stdout)}:deadbeef"
        claim = try_claim(rt.engine, job="ingest", scheduled_for=due, owner=owner, now=rt.clock.now())
        assert not isinstance(claim, type(None)) and getattr(claim, "attempt", None) == 1
        rt.clock.set(due + timedelta(minutes=30))
        sched = SimulatedScheduler(rt, rt.clock, jobs=rec.registry(), only=["ingest"])  # type: ignore[arg-type]
        results = sched.run_due(due + timedelta(minutes=30))
        assert [(r.job, r.status, r.attempt, r.scheduled_for) for r in results] == [("ingest", "ok", 2, due)]
        assert rec.times("ingest") == [due + timedelta(minutes=30)]
        assert process_owner() != owner


def _small_move() -> crs.ChangeRequestDraft:
    """A one-campaign request draft, as the planner would write it."""
    return crs.ChangeRequestDraft(
        kind="reallocation",
        requested_by="planner",
        objective="revenue",
        summary="small move",
        items=[crs.ItemDraft("search", "google_ads", "c1", 1000.0, 1050.0)],
        expected_gain=1.0,
        gain_p05=0.0,
        gain_p95=2.0,
        probability_of_improvement=0.9,
    )


def test_an_idle_job_wakes_when_another_job_gives_it_work(sqlite_url: str) -> None:
    """execute is skipped while nothing is approved, and runs at its first fire after a job approves."""
    from budgetloop.lifecycle import Event
    from budgetloop.store import change_requests as crs

    executed: list[datetime] = []

    def plan(rt):  # type: ignore[no-untyped-def]
        with rt.unit_of_work() as s:
            draft = _small_move()
            cr = crs.create(s, draft=draft, now=rt.clock.now())
            crs.transition(
                s, change_request_id=cr.id, event=Event.AUTO_APPROVE, actor="planner", now=rt.clock.now()
            )
        return {"id": cr.id}

    def execute(rt):  # type: ignore[no-untyped-def]
        executed.append(rt.clock.now())
        with rt.unit_of_work() as s:
            for cr in crs.list_requests(s, statuses=["approved"]):
                for event in (
                    Event.START_EXECUTION,
                    Event.FINISH_EXECUTION,
                    Event.START_MONITORING,
                    Event.CONFIRM,
                ):
                    crs.transition(s, change_request_id=cr.id, event=event, actor="x", now=rt.clock.now())
        return {}

    jobs = {
        "plan": JobSpec("plan", plan, {"hour": 8, "minute": 2}, "plan"),
        "execute": JobSpec("execute", execute, {"minute": "*/5"}, "execute"),
    }
    with runtime(sqlite_url) as rt:
        sched = SimulatedScheduler(rt, rt.clock, jobs=jobs)
        sched.run_due(MONDAY + timedelta(days=2))
        assert executed == [MONDAY.replace(hour=8, minute=5), MONDAY.replace(day=6, hour=8, minute=5)]
        # Between steps a person may approve something: the next call looks again at once.
        assert sched.run_due(MONDAY + timedelta(days=2, minutes=30)) == []


def test_a_database_that_goes_away_is_waited_for_not_a_crash(sqlite_url: str) -> None:
    """A reviewer cut the simulated worker's database for 25 s: its idle check ('is there anything
    to execute?') and the claim sat outside the job's retry, and the worker died with a traceback.
    Now the job is tried, the claim that cannot reach the database is a failed attempt with a retry
    time, and the worker goes on; once the database is back the job runs."""
    from budgetloop.db.session import make_engine

    ran: list[datetime] = []
    jobs = {
        "execute": JobSpec(
            "execute", lambda rt: ran.append(rt.clock.now()) or {}, {"minute": "*/5"}, "execute"
        )
    }
    with runtime(sqlite_url) as rt:
        sched = SimulatedScheduler(rt, rt.clock, jobs=jobs)  # with the real idle check of execute
        live = rt.engine
        rt.engine = make_engine("postgresql://nobody@127.0.0.1:9/none")  # nothing listens there
        results = sched.run_due(MONDAY + timedelta(minutes=11))
        assert results and all(r.status == "failed" and r.retry_at is not None for r in results)
        assert "OperationalError" in (results[0].error or "") and ran == []
        rt.engine.dispose()
        rt.engine = live  # the database is back
        sched.run_due(MONDAY + timedelta(minutes=30))
        assert ran, "the job never ran once the database was back"


def test_a_budget_call_with_no_answer_keeps_the_execute_job_awake(sqlite_url: str) -> None:
    """The executor looks again at a call whose outcome is unknown each run (a late landing is put
    back), but the scheduler skipped execute whenever nothing was approved: the raise stayed on the
    platform and the planner, waiting for it to settle, never planned again."""
    from agents.execute import UNKNOWN
    from agents.scheduler import WORK_NOW, _execute_idle
    from budgetloop.lifecycle import Event
    from budgetloop.store import change_requests as crs

    with runtime(sqlite_url) as rt, rt.unit_of_work() as s:
        now = rt.clock.now()
        assert _execute_idle(s, now) is None
        draft = _small_move()
        cr = crs.create(s, draft=draft, now=now)
        for event in (Event.AUTO_APPROVE, Event.START_EXECUTION, Event.FAIL):
            crs.transition(s, change_request_id=cr.id, event=event, actor="executor", now=now)
        assert _execute_idle(s, now) is None  # failed, every item settled: nothing to do
        cr.items[0].state = UNKNOWN  # as the executor records a call with no answer
        s.flush()
        assert _execute_idle(s, now) == WORK_NOW
