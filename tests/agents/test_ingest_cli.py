"""`budgetloop ingest` as a user runs it: an in-process sandbox over a scenario, a migrated database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from budgetloop.db.metrics import DailyMetric, DailyRevenue
from budgetloop.db.session import make_engine, session_scope
from tests.conftest import REPO_ROOT

SCENARIO = str(REPO_ROOT / "examples" / "scenario.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from budgetloop.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, "ingest", *args], capture_output=True, text=True, cwd=REPO_ROOT
    )


def test_ingest_a_month_from_the_scenario(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = _cli(
        "--since", "2025-01-06", "--until", "2025-02-04", "--scenario", SCENARIO, "--database-url", url
    )
    assert done.returncode == 0, done.stderr
    assert "ingest 2025-01-06..2025-02-04" in done.stdout
    assert "store          succeeded pulled 30, landed 30" in done.stdout
    engine = make_engine(url)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(DailyRevenue)) == 30
        assert session.scalar(select(func.count()).select_from(DailyMetric)) == 30 * 4
    engine.dispose()


def test_bad_input_exits_2_with_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    bad_date = _cli("--since", "06/01/2025", "--scenario", SCENARIO, "--database-url", url)
    assert (
        bad_date.returncode == 2
        and "`since`: '06/01/2025' is not a date — write it as YYYY-MM-DD" in bad_date.stderr
    )
    no_source = _cli("--since", "2025-01-06", "--database-url", url)
    assert no_source.returncode == 2 and "give exactly one of --sandbox-url URL" in no_source.stderr
    backwards = _cli(
        "--since", "2025-02-01", "--until", "2025-01-01", "--scenario", SCENARIO, "--database-url", url
    )
    assert backwards.returncode == 2 and "is before --since" in backwards.stderr
    assert "Traceback" not in bad_date.stderr + no_source.stderr + backwards.stderr


def test_ingest_from_a_running_sandbox(tmp_path: Path) -> None:
    from datetime import date

    from connectors.sandbox.market import Market
    from connectors.sandbox.scenario import load_scenario
    from connectors.sandbox.server import SandboxServer

    market = Market(load_scenario(SCENARIO))
    market.advance_to(date(2025, 1, 20))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with SandboxServer(market) as server:
        done = _cli("--since", "2025-01-10", "--until", "2025-01-12", "--sandbox-url", server.base_url,
                    "--database-url", url)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "google_ads     succeeded pulled 6, landed 6" in done.stdout
        server.arm({"kind": "server_error", "dialect": "retail", "times": None})
        failed = _cli("--since", "2025-01-13", "--sandbox-url", server.base_url, "--database-url", url)
    assert failed.returncode == 1
    assert "retail_media   failed" in failed.stdout and "status=503" in failed.stdout
    assert "google_ads     succeeded pulled 2, landed 2" in failed.stdout


def test_a_sandbox_url_that_is_no_url_exits_2_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = _cli("--since", "2025-01-06", "--sandbox-url", "notaurl", "--database-url", url)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "`--sandbox-url`: 'notaurl' is not an http(s) URL" in done.stderr
    assert "Traceback" not in done.stderr and "attempts" not in done.stdout + done.stderr
    assert not (tmp_path / "cli.db").exists(), "nothing may be written on bad input"


def test_a_range_past_the_available_days_is_refused(tmp_path: Path) -> None:
    from datetime import date

    from connectors.sandbox.market import Market
    from connectors.sandbox.scenario import load_scenario
    from connectors.sandbox.server import SandboxServer

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    # --scenario: the history ends the day before the loop starts; later days are not data
    future = _cli(
        "--since", "2025-01-06", "--until", "2035-01-01", "--scenario", SCENARIO, "--database-url", url
    )
    assert future.returncode == 2, future.stdout + future.stderr
    assert "--until 2035-01-01 is past the scenario's history, which ends 2026-01-04" in future.stderr
    # --sandbox-url: a running sandbox says which day it is
    market = Market(load_scenario(SCENARIO))
    market.advance_to(date(2025, 1, 20))
    with SandboxServer(market) as server:
        ahead = _cli("--since", "2026-06-01", "--sandbox-url", server.base_url, "--database-url", url)
        overlapping = _cli("--since", "2025-01-15", "--until", "2025-02-01", "--sandbox-url", server.base_url,
                           "--database-url", url)  # fmt: skip
    assert ahead.returncode == 2, ahead.stdout + ahead.stderr
    assert (
        "--since 2026-06-01 is in the future: the sandbox's last available day is 2025-01-19" in ahead.stderr
    )
    assert overlapping.returncode == 2 and "--until 2025-02-01 is after" in overlapping.stderr
    assert "Traceback" not in future.stderr + ahead.stderr + overlapping.stderr
    assert not (tmp_path / "cli.db").exists(), "nothing may be written on bad input"
