"""The deployment without Docker: sandbox, `serve` and `worker` as separate processes on one PostgreSQL.

A shortened loop (one simulated week from the example scenario's first loop day): the worker runs the
production triggers on a simulated clock, retrains on the backfilled history, plans; this test
approves through the REST API as the policy's two approvers would. The sandbox is slowed while a
request executes and the worker is killed with SIGKILL in the middle of it, then started again with
the same arguments. At the end the audit log must match what the sandbox applied: every idempotency
key applied once, every applied change in the audit log, the chain valid, no job run twice, no day lost.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from budgetloop.db.audit import AuditEntry
from budgetloop.db.loop import ChangeRequest, ChangeRequestItem
from budgetloop.db.ops import JobRun
from budgetloop.db.session import make_engine, session_scope, upgrade_database
from budgetloop.store import tokens

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUDGETLOOP = str(Path(sys.executable).with_name("budgetloop"))
START = date(2026, 1, 5)  # the example scenario's first loop day (a Monday)
UNTIL = START + timedelta(days=7)  # one simulated week: one retrain (Monday 03:00), seven ingests
APPLIED_STATES = {"executed", "monitoring", "confirmed", "rolled_back"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Procs:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.count: Counter[str] = Counter()

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.count[name] += 1
        log = (self.tmp / f"{name}-{self.count[name]}.log").open("wb")
        proc = subprocess.Popen(
            [BUDGETLOOP, *args], cwd=self.tmp, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.running[name] = proc
        return proc

    def logs(self, name: str) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob(f"{name}-*.log"))
        )

    def stop_all(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.running.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


@pytest.fixture
def world(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Procs, str, str, str]]:
    sandbox_port, api_port = _free_port(), _free_port()
    sandbox_url, api_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "BUDGETLOOP_DATABASE_URL": postgres_url,
        "BUDGETLOOP_SANDBOX_URL": sandbox_url,
        "BUDGETLOOP_POLICY_FILE": str(REPO / "examples" / "policy.yaml"),
        "BUDGETLOOP_FIT_METHOD": "svi",  # the e2e checks the plumbing, not the sampler
        "BUDGETLOOP_JOB_RETRY_BACKOFF_S": "60",
    }
    procs = Procs(tmp_path, env)
    try:
        sandbox = procs.start(
            "sandbox",
            "sandbox",
            "serve",
            "--scenario",
            str(REPO / "examples" / "scenario.yaml"),
            "--port",
            str(sandbox_port),
        )
        _wait_http(sandbox_url + "/healthz", sandbox)
        backfill = subprocess.run(
            [
                BUDGETLOOP,
                "ingest",
                "--since",
                "2025-01-06",
                "--until",
                str(START - timedelta(days=1)),
                "--sandbox-url",
                sandbox_url,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert backfill.returncode == 0, backfill.stdout + backfill.stderr
        yield procs, postgres_url, sandbox_url, api_url
    finally:
        procs.stop_all()


def _tokens(engine: Engine) -> dict[str, str]:
    out = {}
    with session_scope(engine) as s:
        for name, role, slack in [
            ("m1", "approver", "U0MARKETER1"),
            ("m2", "approver", "U0MARKETER2"),
            ("fin", "finance", None),
        ]:
            _, out[name] = tokens.create_token(
                s, name=name, role=role, now=datetime.now(UTC), created_by="e2e", slack_user_id=slack
            )
    return out


def _statuses(engine: Engine) -> dict[int, str]:
    with session_scope(engine) as s:
        return {cr_id: status for cr_id, status in s.execute(select(ChangeRequest.id, ChangeRequest.status))}


def test_processes_run_the_loop_and_a_killed_worker_loses_and_repeats_nothing(
    world: tuple[Procs, str, str, str],
) -> None:
    procs, db_url, sandbox_url, api_url = world
    worker_args = (
        "worker",
        "--simulated-start",
        START.isoformat(),
        "--until",
        UNTIL.isoformat(),
        "--speed",
        "43200",
    )
    upgrade_database(db_url)
    engine = make_engine(db_url)
    try:
        worker = procs.start("worker", *worker_args)
        # The API tells time by the worker's clock: start it once the worker has claimed its first run.
        deadline = time.monotonic() + 120
        while not _job_runs(engine) and time.monotonic() < deadline:
            assert worker.poll() is None, procs.logs("worker")
            time.sleep(0.3)
        api = procs.start("api", "serve", "--follow-simulated-worker", "--port", api_url.rsplit(":", 1)[1])
        _wait_http(api_url + "/readyz", api)
        tok = _tokens(engine)
        decided: set[int] = set()
        killed_during: int | None = None
        armed = False
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                assert worker.returncode == 0, procs.logs("worker")
                break
            for cr_id, status in sorted(_statuses(engine).items()):
                if status == "pending_approval" and cr_id not in decided:
                    if not armed:
                        # Slow every budget edit, so the execution is still going when the worker dies.
                        faults = [
                            {"kind": "slow", "dialect": d, "route": r, "delay": 4, "times": 2}
                            for d, r in (("google", "mutate"), ("meta", "edit"), ("retail", "budgets"))
                        ]
                        httpx.post(
                            f"{sandbox_url}/admin/faults", json={"faults": faults}, timeout=10
                        ).raise_for_status()
                        armed = True
                    decided.add(cr_id)
                    for who in ("m1", "m2"):  # the second click is needed above two_approvers_above
                        answer = httpx.post(
                            f"{api_url}/api/v1/change-requests/{cr_id}/approve",
                            headers={"Authorization": f"Bearer {tok[who]}"},
                            json={"reason": "e2e"},
                            timeout=30,
                        )
                        # one approver may suffice: the second click then finds it decided (409)
                        assert answer.status_code in (200, 409), answer.text
                        if answer.status_code == 409:
                            assert answer.json()["status"] == "already_decided", answer.text
                if status == "executing" and killed_during is None:
                    time.sleep(1.0)  # let a platform call be under way
                    worker.send_signal(signal.SIGKILL)
                    worker.wait(10)
                    killed_during = cr_id
                    httpx.delete(f"{sandbox_url}/admin/faults", timeout=10)
                    worker = procs.start("worker", *worker_args)
            time.sleep(0.2)
        else:
            raise AssertionError("the worker did not reach --until in time:\n" + procs.logs("worker"))
        assert killed_during is not None, (
            "no request was ever executing: " + json.dumps(_statuses(engine)) + procs.logs("worker")
        )
        _check(engine, procs, sandbox_url, api_url, tok, killed_during)
    finally:
        engine.dispose()


def _job_runs(engine: Engine) -> list[JobRun]:
    with session_scope(engine) as s:
        return list(s.execute(select(JobRun).order_by(JobRun.id)).scalars())


def _check(
    engine: Engine, procs: Procs, sandbox_url: str, api_url: str, tok: dict[str, str], killed_during: int
) -> None:
    applied: list[dict[str, Any]] = httpx.get(f"{sandbox_url}/admin/applied", timeout=10).json()["applied"]
    keys = [a["idempotency_key"] for a in applied]
    assert keys, "the sandbox applied nothing"
    assert len(keys) == len(set(keys)), (
        f"an idempotency key was applied twice: {Counter(keys).most_common(3)}"
    )

    statuses = _statuses(engine)
    assert statuses[killed_during] != "executing", "the request the worker died in was never finished"
    with session_scope(engine) as s:
        items = list(s.execute(select(ChangeRequestItem)).scalars())
        entries = list(s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars())
    audited_keys = Counter(
        json.loads(e.payload).get("idempotency_key")
        for e in entries
        if e.action in ("platform_call", "platform_undo")
    )
    by_key = {i.idempotency_key: i for i in items}
    for key in keys:  # everything the sandbox applied is ours and is in the audit log once
        base = key.removesuffix("-undo")
        assert base in by_key, f"the sandbox applied {key}, which no change request holds"
        assert audited_keys[base] == 1, f"{key}: {audited_keys[base]} audit entries for its platform call"
    for item in items:  # every change the database says was applied reached the sandbox once
        if item.state in ("applied", "compensated"):
            assert keys.count(item.idempotency_key) == 1, item.idempotency_key
    for cr_id, status in statuses.items():
        if status in APPLIED_STATES:
            actions = [
                e.action for e in entries if e.subject_type == "change_request" and e.subject_id == str(cr_id)
            ]
            assert {"approved", "executing", "executed"} <= set(actions), (cr_id, actions)

    verify = httpx.get(
        f"{api_url}/api/v1/audit/verify", headers={"Authorization": f"Bearer {tok['fin']}"}, timeout=30
    )
    assert verify.status_code == 200 and verify.json()["valid"] is True, verify.text
    assert verify.json()["entries"] == len(entries)

    runs = _job_runs(engine)
    ok = Counter((r.job, r.scheduled_for) for r in runs if r.status == "ok")
    assert max(ok.values()) == 1, [k for k, n in ok.items() if n > 1]
    assert any(r.status == "failed" and "died during the run" in (r.error or "") for r in runs), (
        "no run was taken over"
    )
    ingest_days = sorted(at.date() for (job, at) in ok if job == "ingest")
    assert ingest_days == [START + timedelta(days=d) for d in range(7)], "a day's ingest was lost or repeated"
    retrains = [r for r in runs if r.job == "retrain" and r.status == "ok"]
    assert retrains and retrains[0].summary and retrains[0].summary["promoted"] is True, retrains
    metrics = httpx.get(f"{api_url}/metrics", timeout=30).text
    assert 'budgetloop_job_runs_total{job="ingest",status="ok"} 7.0' in metrics
    assert "budgetloop_spend_under_management" in metrics
