"""`budgetloop serve` as a real process with its scheduler: migrations applied on start, the policy
file recorded, /readyz counting the scheduler, JSON logs on stderr, a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import inspect

from budgetloop.db.session import make_engine

REPO = Path(__file__).resolve().parents[2]
BUDGETLOOP = str(Path(sys.executable).with_name("budgetloop"))


def test_serve_runs_api_and_scheduler_and_stops_on_sigterm(sqlite_url: str, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "BUDGETLOOP_DATABASE_URL": sqlite_url,
        "BUDGETLOOP_SANDBOX_URL": "http://127.0.0.1:9",  # no job fires within the test's few seconds
        "BUDGETLOOP_POLICY_FILE": str(REPO / "examples" / "policy.yaml"),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [BUDGETLOOP, "serve", "--port", str(port)], env=env, cwd=tmp_path, stdout=out, stderr=out
        )
    try:
        ready = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert ready is not None, log.read_text()
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["scheduler"] == {"ok": True, "detail": "running"}
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"X-Request-ID": "probe-1"}, timeout=5)
        assert answer.headers["x-request-id"] == "probe-1"
        assert "budgetloop_audit_entries 1.0" in answer.text  # the policy file, recorded on start
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert any(x.get("request_id") == "probe-1" for x in lines), "the access log line lacks the request id"
    engine = make_engine(sqlite_url)
    try:
        assert {"apscheduler_jobs", "job_runs", "job_locks"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
