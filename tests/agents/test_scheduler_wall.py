"""The wall-clock scheduler: APScheduler 3 with its persistent job store in our database, firing the
registry's kind of cron triggers for real (every second here), retrying a failed run, and finishing a
dead worker's unfinished run at start. Also the expire job, on its own and under the scheduler."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from agents.jobs import JOBS, JobSpec
from agents.runtime import Runtime
from agents.scheduler import RetryPolicy, SimulatedScheduler, WallScheduler
from budgetloop.clock import WallClock
from budgetloop.db.audit import AuditEntry
from budgetloop.db.loop import CampaignLock, ChangeRequest
from budgetloop.db.ops import JobLock, JobRun
from budgetloop.db.session import make_engine, upgrade_database
from budgetloop.lifecycle import Event
from budgetloop.store import change_requests as crs
from tests.agents.scheduler_fixtures import MONDAY, Recorder, runtime


def _wait_for(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _runs(rt: Runtime, job: str) -> list[tuple[int, str]]:
    with rt.unit_of_work() as s:
        return [
            (r.attempt, r.status)
            for r in s.execute(select(JobRun).where(JobRun.job == job).order_by(JobRun.id)).scalars()
        ]


def test_wall_scheduler_fires_persists_retries_and_recovers(sqlite_url: str) -> None:
    rec = Recorder()
    rec.fail_first = {"flaky": 1}
    every_second = {"second": "*"}
    jobs = {
        "tick": JobSpec("tick", rec.func("tick"), every_second, "tick"),
        "flaky": JobSpec("flaky", rec.func("flaky"), {"hour": 23, "minute": 59, "second": 59}, "flaky"),
        "orphan": JobSpec("orphan", rec.func("orphan"), {"month": 2, "day": 29}, "orphan"),
    }
    with runtime(sqlite_url) as sim_rt:
        rt = Runtime(
            engine=sim_rt.engine,
            clock=WallClock(),
            connectors=sim_rt.connectors,
            settings=sim_rt.settings,
            policy_source=sim_rt.policy_source,
        )
        # A run a dead worker left waiting for its retry: the new scheduler finishes it at start.
        orphan_due = datetime(2024, 2, 29, tzinfo=UTC)
        with rt.unit_of_work() as s:
            s.add(
                JobLock(
                    job="orphan",
                    scheduled_for=orphan_due,
                    owner="gone:1:x",
                    status="retry",
                    attempt=1,
                    acquired_at=orphan_due,
                    updated_at=orphan_due,
                )
            )
        sched = WallScheduler(
            rt, jobs=jobs, retry=RetryPolicy(max_attempts=2, backoff=timedelta(seconds=0.5))
        )
        sched.start()
        try:
            assert sched.running
            assert "apscheduler_jobs" in inspect(rt.engine).get_table_names()
            stored = {j.id for j in sched.scheduler.get_jobs()}
            assert {"budgetloop:tick", "budgetloop:flaky", "budgetloop:orphan"} <= stored
            assert _wait_for(lambda: len(_runs(rt, "tick")) >= 2), _runs(rt, "tick")
            assert _wait_for(lambda: _runs(rt, "orphan") == [(2, "ok")]), _runs(rt, "orphan")
            sched.request("flaky")  # on demand: fails once, retried after the backoff on the wall clock
            assert _wait_for(lambda: _runs(rt, "flaky") == [(1, "failed"), (2, "ok")]), _runs(rt, "flaky")
        finally:
            sched.shutdown()
        assert not sched.running
        with rt.unit_of_work() as s:
            ticks = list(
                s.execute(select(JobRun).where(JobRun.job == "tick", JobRun.status == "ok")).scalars()
            )
        dues = [r.scheduled_for for r in ticks]
        assert len(dues) == len(set(dues)) and all(d.microsecond == 0 for d in dues)


def _pending(rt: Runtime, *, expires_at: datetime, channels: tuple[str, str] = ("search", "social")) -> int:
    with rt.unit_of_work() as s:
        draft = crs.ChangeRequestDraft(
            kind="reallocation",
            requested_by="planner",
            objective="revenue",
            summary="move 10% from social to search",
            items=[
                crs.ItemDraft(channels[0], "google_ads", f"c-{channels[0]}", 1000.0, 1100.0),
                crs.ItemDraft(channels[1], "meta_ads", f"c-{channels[1]}", 1000.0, 900.0),
            ],
            expected_gain=50.0,
            gain_p05=-5.0,
            gain_p95=90.0,
            probability_of_improvement=0.9,
            expires_at=expires_at,
        )
        cr = crs.create(s, draft=draft, now=rt.clock.now())
        crs.transition(s, change_request_id=cr.id, event=Event.SUBMIT, actor="planner", now=rt.clock.now())
        return cr.id


def test_expire_job_expires_only_stale_requests_once(database_url: str) -> None:
    with runtime(database_url, start=MONDAY.replace(hour=9)) as rt:
        deadline = MONDAY + timedelta(days=2, hours=9)
        cr_id = _pending(rt, expires_at=deadline)
        later_id = _pending(rt, expires_at=deadline + timedelta(days=30), channels=("video", "retail"))
        told: list[tuple[int, str]] = []

        class Told:
            def change_request_changed(self, session, change_request):  # type: ignore[no-untyped-def]
                told.append((change_request.id, change_request.status))

            def note(self, session, change_request, text):  # type: ignore[no-untyped-def]
                pass

        rt.notifier = Told()
        sched = SimulatedScheduler(rt, rt.clock, only=["expire"], jobs=JOBS)
        sched.run_due(MONDAY + timedelta(days=4))
        with rt.unit_of_work() as s:
            cr = s.get(ChangeRequest, cr_id)
            assert cr is not None and cr.status == "expired"
            assert cr.updated_at == MONDAY + timedelta(days=2, hours=9, minutes=30)  # the first :30 after
            held = set(s.execute(select(CampaignLock.channel)).scalars())
            assert held == {"video", "retail"}  # its campaigns are free again; the other's are not
            later = s.get(ChangeRequest, later_id)
            assert later is not None and later.status == "pending_approval"
            actions = [a for a in s.execute(select(AuditEntry.action).order_by(AuditEntry.seq)).scalars()]
            assert actions[-1] == "expired"
            runs = list(s.execute(select(JobRun).where(JobRun.job == "expire")).scalars())
        # Idle hours cost no run: exactly one expire run, the one that had work.
        assert [(r.status, r.summary) for r in runs] == [("ok", {"expired": [cr_id]})]
        assert told == [(cr_id, "expired")]


REPLICA = """
import sys, time
from agents.jobs import JobSpec
from agents.runtime import Runtime
from agents.scheduler import WallScheduler
from budgetloop.clock import WallClock
from budgetloop.config import Settings
from budgetloop.db.session import make_engine
from budgetloop.store.policy import active_policy
from connectors.registry import sandbox_connectors

url, seconds = sys.argv[1], float(sys.argv[2])
engine = make_engine(url)
rt = Runtime(engine=engine, clock=WallClock(), connectors=sandbox_connectors("http://127.0.0.1:9"),
             settings=Settings(database_url=url), policy_source=active_policy)
def tick(rt):
    time.sleep(0.3)  # long enough for the other replica to fire the same second
    return {"ok": True}
sched = WallScheduler(rt, jobs={"tick": JobSpec("tick", tick, {"second": "*"}, "tick")})
sched.start()
time.sleep(seconds)
sched.shutdown()
print("done", flush=True)
"""


@pytest.mark.postgres
def test_two_replicas_sharing_one_job_store_run_each_second_once(postgres_url: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    upgrade_database(postgres_url)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA, postgres_url, "6"],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(JobRun.scheduled_for, JobRun.status, JobRun.owner)).all()
    finally:
        engine.dispose()
    ok = Counter(at for at, status, _ in rows if status == "ok")
    assert len(ok) >= 3, rows
    assert max(ok.values()) == 1, f"a second ran twice: {[at for at, n in ok.items() if n > 1]}"
    pids = {owner.split(":")[1] for _, _, owner in rows}
    assert len(pids) == 2, f"only one replica ever fired: {pids}"
