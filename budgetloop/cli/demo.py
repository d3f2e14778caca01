"""`budgetloop demo`: the whole closed loop on the sandbox market, in accelerated time."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from budgetloop.cli import app
from budgetloop.errors import InputError
from budgetloop.fileio import check_output_folder

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@app.command("demo")
def demo(
    weeks: int = typer.Option(52, "--weeks", min=1, max=260, help="Simulated weeks of closed loop."),
    scenario: Path = typer.Option(
        EXAMPLES / "scenario-regions.yaml",
        "--scenario",
        help="Market scenario YAML (default: the example market in 7 regions, so geo experiments can run).",
    ),
    policy: Path | None = typer.Option(
        None,
        "--policy",
        help="Guardrail policy YAML (default: the example policy; for a market with other channels, its "
        "rules with the budget cap and channel bounds derived from the scenario's starting budgets).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated marketer and the model fits."),
    report_dir: Path = typer.Option(
        Path("report"), "--report-dir", help="Where report.json and report.html go."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", help="Database (default: a fresh SQLite file var/demo.db)."
    ),
    fit_method: str = typer.Option(
        "svi",
        "--fit-method",
        help="Weekly retrain: `svi` (fast refresh, the default here) or `nuts` (full MCMC, minutes per fit).",
    ),
    fast: bool = typer.Option(False, "--fast", help="Fewer posterior draws and no holdout (smoke runs)."),
) -> None:
    """Run the closed loop for N simulated weeks and write the report (INTERFACES section 4)."""
    for label, path in (("--scenario", scenario), ("--policy", policy)):
        if path is not None and not path.is_file():
            raise InputError(f"no such file: {path}", key=label, fix="pass the path of an existing YAML file")
    check_output_folder(report_dir, flag="--report-dir")  # before the run, not after a year of it
    from agents.demo.loop import DemoConfig, run_demo
    from agents.runtime import FitOptions

    if fit_method not in ("svi", "nuts"):
        raise InputError(f"unknown fit method {fit_method!r}", key="--fit-method", fix="use svi or nuts")
    fit = FitOptions(
        method=fit_method, warmup=300, samples=250 if fast else 500, holdout_days=0 if fast else 28
    )
    summary = run_demo(
        DemoConfig(
            scenario_path=scenario,
            policy_path=policy or EXAMPLES / "policy.yaml",
            policy_given=policy is not None,
            weeks=weeks,
            seed=seed,
            report_dir=report_dir,
            database_url=database_url or os.environ.get("BUDGETLOOP_DEMO_DATABASE_URL"),
            fit=FitOptions(**{**fit.__dict__, "seed": seed}),
        ),
        progress=lambda line: typer.echo(line, err=True),
    )
    uplift = summary.get("uplift_captured")
    typer.echo(f"report: {summary['report_json']} and {summary['report_html']}")
    typer.echo(
        f"uplift captured: {'n/a' if uplift is None else f'{uplift:.2f}'}   "
        f"guardrail violations: {summary['guardrail_violations']}   "
        f"audit chain valid: {summary['audit_chain_valid']}   "
        f"({summary['weeks']} weeks in {summary['elapsed_seconds']:.0f} s)"
    )
