"""Two replicas never run the same job twice: threads and processes racing for one (job, due time),
on SQLite and PostgreSQL; a holder killed with SIGKILL mid-run is taken over by the next claimer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from agents.jobs import JobSpec
from agents.locks import Claim, Refusal, process_owner, release, try_claim
from agents.scheduler import SimulatedScheduler, run_job
from budgetloop.db.ops import JobLock, JobRun
from tests.agents.scheduler_fixtures import MONDAY, runtime

REPO = Path(__file__).resolve().parents[2]


def test_two_threads_firing_one_run_execute_it_once(database_url: str) -> None:
    entered = threading.Event()
    release_job = threading.Event()
    calls: list[str] = []

    def slow(rt):  # type: ignore[no-untyped-def]
        calls.append(threading.current_thread().name)
        entered.set()
        assert release_job.wait(20)
        return {"by": threading.current_thread().name}

    jobs = {"ingest": JobSpec("ingest", slow, {"hour": 6, "minute": 0}, "slow")}
    due = MONDAY.replace(hour=6)
    with runtime(database_url) as rt:
        results = {}

        def replica(tag: str) -> None:
            results[tag] = run_job(rt, "ingest", due, jobs=jobs, owner=process_owner(tag))

        a = threading.Thread(target=replica, args=("a",), name="a")
        a.start()
        assert entered.wait(20)
        b = threading.Thread(target=replica, args=("b",), name="b")
        b.start()
        b.join(20)  # b must not wait for a: it is refused at once
        assert not b.is_alive()
        release_job.set()
        a.join(20)
        assert (results["a"].status, results["b"].status) == ("ok", "skipped_locked")
        assert calls == ["a"]
        # A third replica arriving after the end finds the run done.
        late = run_job(rt, "ingest", due, jobs=jobs, owner=process_owner("c"))
        assert late.status == "skipped_locked" and "already ran" in (late.error or "")
        with rt.unit_of_work() as s:
            statuses = sorted(s.execute(select(JobRun.status)).scalars())
        assert statuses == ["ok", "skipped_locked", "skipped_locked"]


def test_many_replicas_each_simulating_a_day_run_each_job_once(database_url: str) -> None:
    """Four schedulers over one database, the same day: every (job, due time) ran exactly once."""
    ran: list[tuple[str, object]] = []
    lock = threading.Lock()

    def make(name: str):  # type: ignore[no-untyped-def]
        def job(rt):  # type: ignore[no-untyped-def]
            with lock:
                ran.append((name, rt.clock.now()))
            time.sleep(0.01)
            return {}

        return job

    cron = {
        "ingest": {"hour": 6, "minute": 0},
        "monitor": {"hour": 7, "minute": 0},
        "tick": {"minute": "*/30"},
    }
    jobs = {n: JobSpec(n, make(n), c, n) for n, c in cron.items()}
    errors: list[BaseException] = []

    def replica(tag: str) -> None:
        try:
            with runtime(database_url, migrate=False) as rt:
                SimulatedScheduler(rt, rt.clock, jobs=jobs, owner=process_owner(tag)).run_due(
                    MONDAY + timedelta(hours=12)
                )
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    with runtime(database_url):
        pass  # migrate once before the replicas start
    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(ran) == len(set(ran)), "a run happened twice"
    assert sorted({n for n, _ in ran}) == ["ingest", "monitor", "tick"]
    assert len([1 for n, _ in ran if n == "tick"]) == 25  # 00:00 .. 12:00 every 30 minutes


HOLDER = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime
    from agents.locks import process_owner, try_claim
    from budgetloop.db.session import make_engine
    engine = make_engine(sys.argv[1])
    due = datetime.fromisoformat(sys.argv[2])
    claim = try_claim(engine, job="ingest", scheduled_for=due, owner=process_owner(), now=due)
    print("claimed" if hasattr(claim, "attempt") else "refused", flush=True)
    time.sleep(120)
    """
)


def test_a_holder_killed_mid_run_is_taken_over(database_url: str) -> None:
    due = MONDAY.replace(hour=6)
    with runtime(database_url) as rt:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, database_url, due.isoformat()],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "claimed"
            alive = try_claim(rt.engine, job="ingest", scheduled_for=due, owner=process_owner("x"), now=due)
            assert isinstance(alive, Refusal), "a live holder's run was taken"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        # PostgreSQL notices the closed connection asynchronously; give it a moment.
        claim: Claim | Refusal = alive
        for _ in range(50):
            claim = try_claim(rt.engine, job="ingest", scheduled_for=due, owner=process_owner("y"), now=due)
            if isinstance(claim, Claim):
                break
            time.sleep(0.1)
        assert isinstance(claim, Claim), claim
        assert claim.attempt == 2 and claim.took_over_from is not None
        assert f":{proc.pid}:" in claim.took_over_from
        release(rt.engine, claim, final=True, now=due)
        with rt.unit_of_work() as s:
            row = s.get(JobLock, ("ingest", due))
            assert row is not None and (row.status, row.attempt) == ("done", 2)


@pytest.mark.postgres
def test_postgres_advisory_lock_refuses_while_held(postgres_url: str) -> None:
    due = MONDAY.replace(hour=7)
    with runtime(postgres_url) as rt:
        first = try_claim(rt.engine, job="monitor", scheduled_for=due, owner=process_owner("a"), now=due)
        assert isinstance(first, Claim)
        second = try_claim(rt.engine, job="monitor", scheduled_for=due, owner=process_owner("b"), now=due)
        assert isinstance(second, Refusal) and "right now" in second.reason
        release(rt.engine, first, final=False, now=due)  # a failed attempt waiting for its retry
        retry = try_claim(rt.engine, job="monitor", scheduled_for=due, owner=process_owner("b"), now=due)
        assert isinstance(retry, Claim) and retry.attempt == 2 and retry.took_over_from is None
        release(rt.engine, retry, final=True, now=due)


def test_a_claim_whose_postgres_session_was_terminated_is_released_without_raising(postgres_url: str) -> None:
    """The advisory lock lives on the claim's own connection. When the server ends that session
    (pg_terminate_backend, a restart) unlocking it raised OperationalError out of ``release`` and
    killed the simulated worker; the lock went with the session, so releasing now just records."""
    due = MONDAY.replace(hour=7)
    with runtime(postgres_url) as rt:
        claim = try_claim(rt.engine, job="monitor", scheduled_for=due, owner=process_owner("a"), now=due)
        assert isinstance(claim, Claim) and claim._conn is not None
        pid = claim._conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        claim._conn.commit()
        with rt.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            other.commit()
        release(rt.engine, claim, final=True, now=due)  # raised OperationalError before
        with rt.engine.connect() as c:
            assert c.execute(select(JobLock.status).where(JobLock.job == "monitor")).scalar_one() == "done"
        again = try_claim(rt.engine, job="monitor", scheduled_for=due, owner=process_owner("b"), now=due)
        assert isinstance(again, Refusal) and "already ran to the end" in again.reason
