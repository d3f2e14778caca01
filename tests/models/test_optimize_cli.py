"""`budgetloop optimize FIT.json --budget AMOUNT [--policy POLICY.yaml] --out PLAN.json` end to end."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budgetloop.cli import main
from models.curves import ResponseCurves
from models.optimize import curves_block

CHANNELS = ("search", "social_prospecting", "retail_media", "video")
POLICY = """\
version: 1
objective: {metric: revenue}
budget: {total_daily_max: 16000}
channels:
  search:             {min_daily: 1000, max_daily: 8000}
  social_prospecting: {min_daily: 2000, max_daily: 9000}
  retail_media:       {min_daily: 500,  max_daily: 7000}
  video:              {min_daily: 0,    max_daily: 5000, locked: true}
"""


def _fit_json(tmp_path: Path, period: str = "day", with_current: bool = True) -> Path:
    rng = np.random.default_rng(0)
    c = len(CHANNELS)
    curves = ResponseCurves(
        CHANNELS,
        np.array([9000.0, 7000.0, 5000.0, 3000.0]) * rng.lognormal(0, 0.1, (300, c)),
        np.array([3000.0, 2500.0, 1500.0, 2000.0]) * rng.lognormal(0, 0.1, (300, c)),
        np.array([1.2, 1.5, 1.0, 2.0]) * rng.lognormal(0, 0.05, (300, c)),
        period,
    )
    current = {"search": 4000.0, "social_prospecting": 3000.0, "retail_media": 2500.0, "video": 1500.0}
    doc = {
        "channels": {ch: {"spend": 1.0} for ch in CHANNELS},
        "response_curves": curves_block(curves, current if with_current else None),
    }
    path = tmp_path / "FIT.json"
    path.write_text(json.dumps(doc))
    return path


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def test_plan_within_policy_bounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit = _fit_json(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", "11000", "--policy", str(policy), "--out", str(out)]) == 0
    assert "P(improvement)" in capsys.readouterr().out
    plan = json.loads(out.read_text())
    alloc = plan["allocation"]
    assert sum(alloc.values()) == pytest.approx(11000.0, abs=0.05)
    assert alloc["video"] == 1500.0  # locked at its current amount
    assert 1000 <= alloc["search"] <= 8000 and 2000 <= alloc["social_prospecting"] <= 9000
    assert 500 <= alloc["retail_media"] <= 7000
    assert plan["channels"]["search"]["before"] == 4000.0
    assert plan["channels"]["search"]["after"] == alloc["search"]
    assert 0.0 <= plan["probability_of_improvement"] <= 1.0
    assert plan["gain_p05"] <= plan["expected_gain"] <= plan["gain_p95"]
    assert plan["objective"]["metric"] == "revenue"


def test_a_budget_finer_than_cents_is_planned_in_cents_and_said(tmp_path: Path) -> None:
    """A reviewer's --budget 0.001 came back as "budget": 0.0 with no word why."""
    fit, out = _fit_json(tmp_path), tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", "11000.004", "--out", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert plan["notes"][0] == "--budget 11000.004 is planned in cents: 11000.00 per day"
    assert sum(plan["allocation"].values()) == pytest.approx(11000.0, abs=0.005)


def test_weekly_fit_scales_daily_policy_bounds_by_seven(tmp_path: Path) -> None:
    fit = _fit_json(tmp_path, period="week")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("locked: true", "locked: false"))
    out = tmp_path / "PLAN.json"
    code = _run(["optimize", str(fit), "--budget", "40000", "--policy", str(policy), "--out", str(out)])
    assert code == 0
    plan = json.loads(out.read_text())
    assert plan["channels"]["social_prospecting"]["lower"] == 14000.0
    assert plan["allocation"]["social_prospecting"] >= 14000.0 - 0.01
    assert plan["channels"]["video"]["upper"] == 35000.0
    assert plan["channels"]["search"]["upper"] == 40000.0  # 8000 x 7 capped at the budget
    assert sum(plan["allocation"].values()) == pytest.approx(40000.0, abs=0.05)


def test_profit_override_from_the_command_line(tmp_path: Path) -> None:
    fit = _fit_json(tmp_path)
    out = tmp_path / "PLAN.json"
    code = _run(
        [
            "optimize",
            str(fit),
            "--budget",
            "1e6",
            "--objective",
            "profit",
            "--margin",
            "0.5",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    plan = json.loads(out.read_text())
    assert plan["spend_after"] < 1e6
    for line in plan["channels"].values():
        if line["after"] > 1:
            assert line["mroas_after"]["mean"] == pytest.approx(2.0, rel=5e-3)


@pytest.mark.parametrize(
    ("extra", "policy_text", "needle"),
    [
        (["--budget", "20000"], POLICY, "budget.total_daily_max"),
        (["--budget", "2000"], POLICY, "minimums"),
        (["--budget", "9000"], POLICY.replace("video:", "tv:"), "names channel(s) ['tv']"),
        (["--budget", "9000"], POLICY.replace("16000", "-3"), "total_daily_max"),
    ],
)
def test_bad_input_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], policy_text: str, needle: str
) -> None:
    fit = _fit_json(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), *extra, "--policy", str(policy), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def test_fit_without_curves_or_current(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"channels": {}}))
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(bare), "--budget", "10", "--out", str(out)]) == 2
    assert "no `response_curves` block" in capsys.readouterr().err
    fit = _fit_json(tmp_path, with_current=False)
    assert _run(["optimize", str(fit), "--budget", "10", "--out", str(out)]) == 2
    assert "--current" in capsys.readouterr().err
    code = _run(
        ["optimize", str(fit), "--budget", "10000", "--out", str(out), "--current",
         "search=1,social_prospecting=2,retail_media=3,video=4"]
    )  # fmt: skip
    assert code == 0 and json.loads(out.read_text())["current"]["video"] == 4.0
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert _run(["optimize", str(broken), "--budget", "10", "--out", str(out)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("current", "needle"),
    [
        (
            {"search": 4000.0, "social_prospecting": 3000.0, "retail_media": 2500.0},
            "lacks channel(s) ['video']",
        ),
        (
            {"search": 4000.0, "social_prospecting": -1.0, "retail_media": 2500.0, "video": 1.0},
            "finite amount >= 0",
        ),
        ({"search": "lots", "social_prospecting": 1.0, "retail_media": 1.0, "video": 1.0}, "'lots'"),
        ([1.0, 2.0, 3.0, 4.0], "must map each channel"),
    ],
)
def test_a_bad_current_in_fit_json_names_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], current: object, needle: str
) -> None:
    fit = _fit_json(tmp_path)
    doc = json.loads(fit.read_text())
    doc["response_curves"]["current"] = current
    fit.write_text(json.dumps(doc))
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", "10000", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{fit}, `response_curves.current`: " in err and needle in err, err
    assert "--current" in err and "adjust --budget" not in err
    assert not out.exists()


def test_out_is_checked_first_and_plan_json_follows_the_umask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit = _fit_json(tmp_path)
    folder = tmp_path / "plans"
    folder.mkdir()
    (tmp_path / "plain").write_text("a file")
    for out in (folder, tmp_path / "plain" / "PLAN.json"):
        assert _run(["optimize", str(fit), "--budget", "10000", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "`--out`" in err and str(out) in err and "Traceback" not in err
    assert list(folder.iterdir()) == []
    out = tmp_path / "new" / "PLAN.json"  # a folder that does not exist yet is made
    old_umask = os.umask(0o022)
    try:
        assert _run(["optimize", str(fit), "--budget", "10000", "--out", str(out)]) == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in out.parent.iterdir()] == ["PLAN.json"]  # no temporary file left


def test_stdout_says_when_the_maximums_cannot_absorb_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit = _fit_json(tmp_path)
    policy = tmp_path / "policy.yaml"
    # maximums 8000 + 9000 + 7000, and video locked at its current 1500: 25500 at most
    policy.write_text(POLICY.replace("16000", "40000"))
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", "35000", "--policy", str(policy), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "note: the per-channel maximums add up to 25500.00, below the budget 35000.00" in stdout
    assert json.loads(out.read_text())["notes"]


@pytest.mark.parametrize(
    ("current", "needle"),
    [
        ("search=1,social_prospecting=2,retail_media=3", "lacks channel(s) ['video']"),
        ("search=1,social_prospecting=2,retail_media=3,video=4,radio=5", "names channel(s) ['radio']"),
        ("search=1,social_prospecting=-2,retail_media=3,video=4", "finite amount >= 0"),
        ("search=1,social_prospecting=lots,retail_media=3,video=4", "cannot read 'social_prospecting=lots'"),
        ("search=1,social_prospecting", "cannot read 'social_prospecting'"),
    ],
)
def test_a_bad_current_flag_exits_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], current: str, needle: str
) -> None:
    """--current goes through the same checks as FIT.json's stored current spend."""
    fit = _fit_json(tmp_path, with_current=False)
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", "10000", "--out", str(out), "--current", current]) == 2
    err = capsys.readouterr().err
    assert "`--current`" in err and needle in err and "Traceback" not in err, err
    assert not out.exists()


def _plan_without_flags(tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(FIT.json path, its document, PLAN.json of 11,000 a day) for a FIT.json without the
    per-channel support fields."""
    fit = _fit_json(tmp_path)
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", "11000", "--out", str(out)]) == 0
    return fit, json.loads(fit.read_text()), json.loads(out.read_text())


def _replan(
    fit: Path, doc: dict[str, Any], budget: float, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """PLAN.json after rewriting FIT.json as ``doc`` (stdout captured afresh)."""
    fit.write_text(json.dumps(doc))
    capsys.readouterr()
    out = fit.parent / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", str(budget), "--out", str(out)]) == 0
    plan: dict[str, Any] = json.loads(out.read_text())
    return plan


@pytest.mark.parametrize(
    ("field", "flagged", "unflagged", "why"),
    [
        ("mroas_from_prior", True, False, "`mroas_from_prior`"),
        ("roi_prior_contraction", 0.05, 0.6, "removed 5% of its ROI prior's variance"),
    ],
)
def test_the_plan_says_when_it_moves_a_channel_whose_mroas_is_the_priors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    flagged: object,
    unflagged: object,
    why: str,
) -> None:
    """A channel whose spend barely moved, or whose ROI prior the data hardly narrowed: the plan's
    move on it rests on the priors, and the plan says so."""
    fit, doc, plan = _plan_without_flags(tmp_path)
    assert not any("from the priors" in n for n in plan["notes"])
    moved = [ch for ch, row in plan["channels"].items() if abs(row["after"] - row["before"]) > 100]
    assert moved
    for ch in CHANNELS:
        doc["channels"][ch][field] = flagged if ch == moved[0] else unflagged
    notes = [n for n in _replan(fit, doc, 11000, capsys)["notes"] if "from the priors" in n]
    assert len(notes) == 1 and notes[0].startswith(f"{moved[0]}: the plan moves it"), notes
    assert why in notes[0]
    assert f"note: {moved[0]}: the plan moves it" in capsys.readouterr().out


def test_the_plan_says_when_it_funds_a_channel_past_anything_the_table_spent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit, doc, plan = _plan_without_flags(tmp_path)
    assert not any("extrapolation" in n for n in plan["notes"])  # no spend_max_per_period: no note
    for ch in CHANNELS:
        doc["channels"][ch]["spend_max_per_period"] = 4000.0  # each at most 4,000 a day in the table
    plan = _replan(fit, doc, 40000, capsys)
    beyond = sorted(ch for ch, amount in plan["allocation"].items() if amount > 1.5 * 4000.0)
    assert beyond  # 40,000 over four channels: at least one past 6,000
    notes = [n for n in plan["notes"] if "extrapolation" in n]
    assert sorted(n.split(":")[0] for n in notes) == beyond
    assert "the most the fitted table ever spent in one day (4,000.00)" in notes[0]
    assert "note: " + notes[0] in capsys.readouterr().out


def test_the_plan_says_when_it_cuts_a_channel_below_the_curve_the_table_showed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The counterpart of the note above, below the data: a plan that cuts a channel far under the
    least spend its curve read (carried over) leans on the curve's unmeasured lower part, where
    FIT.json marks its ROI an extrapolation. A channel whose curve the table shows near zero, or an
    older FIT.json, gets no note."""
    fit, doc, plan = _plan_without_flags(tmp_path)
    assert not any("cuts it to" in n for n in plan["notes"])
    cut = min(plan["allocation"], key=lambda ch: plan["allocation"][ch] - plan["channels"][ch]["before"])
    floor = 1.6 * plan["allocation"][cut]  # the plan goes under 1/1.5 of the least carried-over spend
    for ch in CHANNELS:
        doc["channels"][ch]["carried_spend_min_per_period"] = floor
        doc["channels"][ch]["roi_extrapolated"] = True
    plan = _replan(fit, doc, 11000, capsys)
    notes = [n for n in plan["notes"] if "cuts it to" in n]
    below = sorted(ch for ch, amount in plan["allocation"].items() if amount < floor / 1.5)
    assert cut in below and sorted(n.split(":")[0] for n in notes) == below
    assert f"of the least spend its response curve read in the fitted table ({floor:,.2f} per day" in notes[0]
    assert "note: " + notes[0] in capsys.readouterr().out
    for ch in CHANNELS:  # the table showed each curve near zero: the cut is measured
        doc["channels"][ch]["roi_extrapolated"] = False
    assert not any("cuts it to" in n for n in _replan(fit, doc, 11000, capsys)["notes"])


def _unhealthy(fit: Path) -> list[str]:
    doc = json.loads(fit.read_text())
    reasons = ["r-hat 1.300 > 1.05 (worst: trend): chains disagree", "12 divergent transitions"]
    doc["diagnostics"] = {"r_hat_max": 1.3, "divergences": 12, "healthy": False, "reasons": reasons}
    fit.write_text(json.dumps(doc))
    return reasons


def test_an_unhealthy_fit_is_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fit` exits 3 on a fit whose diagnostics failed; `optimize` planned from it silently. It exits
    3 too, naming the failed diagnostics, and plans only with --allow-unhealthy, saying so."""
    fit = _fit_json(tmp_path)
    reasons = _unhealthy(fit)
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", "11000", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert f"error: {fit}: the fit is NOT healthy" in err and "--allow-unhealthy" in err, err
    assert all(r in err for r in reasons) and "Traceback" not in err
    assert not out.exists()
    assert _run(["optimize", str(fit), "--budget", "11000", "--out", str(out), "--allow-unhealthy"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {fit}: the fit is NOT healthy") and all(r in err for r in reasons)
    plan = json.loads(out.read_text())
    assert plan["notes"][0].startswith("planned with --allow-unhealthy from a fit that is NOT healthy")
    doc = json.loads(fit.read_text())
    doc["diagnostics"]["healthy"] = True
    fit.write_text(json.dumps(doc))
    assert _run(["optimize", str(fit), "--budget", "11000", "--out", str(out)]) == 0
    assert "NOT healthy" not in capsys.readouterr().err


@pytest.mark.parametrize("which", ["fit", "policy"])
def test_an_out_that_is_an_input_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    fit = _fit_json(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    target = fit if which == "fit" else policy
    before = target.read_bytes()
    args = ["optimize", str(fit), "--budget", "11000", "--policy", str(policy), "--out", str(target)]
    assert _run(args) == 2
    err = capsys.readouterr().err
    assert f"--out is the input file {target}" in err and "Traceback" not in err, err
    assert target.read_bytes() == before


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--target-roas", "3"], "`--target-roas`: --target-roas 3 has no effect on the objective `revenue`"),
        (["--margin", "0.4"], "--margin 0.4 has no effect on the objective `revenue`"),
        (["--objective", "profit", "--margin", "1.5"], "margin 1.5 is not a share of revenue"),
        (["--objective", "target_roas", "--target-roas", "3", "--margin", "0.4"], "objective `target_roas`"),
    ],
)
def test_an_objective_flag_the_objective_ignores_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    """`--target-roas 3` alone planned for revenue and said nothing; `--margin 1.5` was taken where
    `policy validate` refuses the same margin."""
    fit = _fit_json(tmp_path)
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", "9000", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def test_a_policy_that_leaves_a_fitted_channel_out_says_it_is_unbounded(tmp_path: Path) -> None:
    """The demo refuses a policy that omits a channel; optimize planned it between 0 and the whole
    budget and said nothing."""
    fit = _fit_json(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        POLICY.replace("  video:              {min_daily: 0,    max_daily: 5000, locked: true}\n", "")
    )
    out = tmp_path / "PLAN.json"
    assert _run(["optimize", str(fit), "--budget", "11000", "--policy", str(policy), "--out", str(out)]) == 0
    notes = json.loads(out.read_text())["notes"]
    assert f"{policy} sets no bounds for video: planned anywhere from 0 to the budget" in " ".join(notes)
    # a policy that bounds every channel says nothing of the kind
    policy.write_text(POLICY)
    assert _run(["optimize", str(fit), "--budget", "11000", "--policy", str(policy), "--out", str(out)]) == 0
    assert not any("sets no bounds" in n for n in json.loads(out.read_text())["notes"])
