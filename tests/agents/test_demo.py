"""The closed-loop demo end to end: two simulated weeks through real HTTP, real Slack clicks and SQLite,
and the report INTERFACES section 4 promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loop_fixtures import demo_cli

from agents.demo.loop import DemoConfig, run_demo
from agents.runtime import FitOptions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONTRACT_FIELDS = {
    "weeks",
    "revenue_total",
    "static_revenue_total",
    "oracle_revenue_total",
    "uplift_captured",
    "spend_total",
    "budget_total",
    "change_requests",
    "rollbacks",
    "guardrail_violations",
    "audit_chain_valid",
    "experiments",
}


def test_two_weeks_of_closed_loop_write_the_contract_report(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(
        DemoConfig(
            scenario_path=EXAMPLES / "scenario.yaml",
            policy_path=EXAMPLES / "policy.yaml",
            weeks=2,
            report_dir=tmp_path / "report",
            database_url=f"sqlite:///{(tmp_path / 'demo.db').as_posix()}",
            fit=FitOptions(method="svi", samples=200, holdout_days=0),
        ),
        progress=lines.append,
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report) >= CONTRACT_FIELDS
    assert report["weeks"] == 2
    assert report["guardrail_violations"] == 0
    assert report["audit_chain_valid"] is True
    assert report["budget_total"] == pytest.approx(16_000 * 14)
    assert report["daily_cap_respected"] is True
    assert report["budgets_set_total"] <= report["budget_total"] + 0.005
    # The uplift is the contract's ratio of the three revenue totals.
    expected = (report["revenue_total"] - report["static_revenue_total"]) / (
        report["oracle_revenue_total"] - report["static_revenue_total"]
    )
    assert report["uplift_captured"] == pytest.approx(expected, abs=1e-4)
    assert report["static_revenue_total"] < report["oracle_revenue_total"]
    # The loop did something a person decided: at least one request went through Slack.
    assert sum(report["change_requests"].values()) >= 1
    assert any(line.startswith("week  1/2") for line in lines)
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert summary["report_json"].endswith("report.json")


def test_a_missing_scenario_file_exits_2_and_names_the_flag(tmp_path: Path) -> None:
    result = demo_cli("--scenario", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "--scenario" in result.stderr and "nope.yaml" in result.stderr


def test_a_report_dir_that_is_a_file_exits_2_before_the_run(tmp_path: Path) -> None:
    taken = tmp_path / "afile"
    taken.write_text("mine\n")
    db = tmp_path / "demo.db"
    result = demo_cli("--weeks", "1", "--report-dir", str(taken), "--database-url", f"sqlite:///{db}")
    assert result.returncode == 2, result.stderr
    assert "--report-dir" in result.stderr and "is a file, not a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert taken.read_text() == "mine\n" and not db.exists()
