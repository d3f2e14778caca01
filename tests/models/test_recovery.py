"""Recovery of known truth: simulated tables (plain and lift-calibrated) and PyMC-Marketing's example.

The fast test (in ``make test``) fits one seed with few draws and tolerant bounds; the slow ones
(``make test-all``) run the full study of docs/validation.md and assert the figures reached there.
"""

from __future__ import annotations

import pytest

from models.fit import fit
from models.simulate import simulate
from models.validation import (
    lift_tests_for,
    pymc_example,
    recovery_study,
    score_fit,
    simulated_case,
    summarize,
)


def test_one_seed_recovers_mroas_and_calibration_pulls_roi_toward_the_truth() -> None:
    data, truth = simulated_case(1)
    kw = {"chains": 2, "warmup": 300, "samples": 300, "seed": 1}
    plain = score_fit(fit(data, **kw), truth, seed=1, calibrated=False)
    tests = lift_tests_for(data, truth, seed=1)
    cal = score_fit(fit(data, lift_tests=tests, **kw), truth, seed=1, calibrated=True)
    sp, sc = summarize([plain]), summarize([cal])
    for s in (plain, cal):
        assert s.r_hat_max is not None and s.r_hat_max < 1.1, s
    assert sp["median_mroas_error"] < 0.30, sp
    assert sc["median_mroas_error"] < 0.30, sc
    assert sc["median_roi_error"] < 0.20, sc
    assert sc["median_roi_error"] <= sp["median_roi_error"] + 0.05, (sp, sc)
    assert sc["covered"] >= len(cal.channels) - 1, sc


@pytest.mark.slow
def test_twenty_seeds_weekly_plain_and_calibrated() -> None:
    # the settings and the figures of docs/validation.md section 1, with a margin for seed noise
    study = recovery_study(range(20), frequency="week", warmup=500, samples=500)
    plain, cal = study["summary"]["plain"], study["summary"]["calibrated"]
    # measured (1000/1000): plain ROI 19.9%, mROAS 12.5%, coverage 100%; calibrated ROI 15.8%,
    # mROAS 11.2%, 96%
    assert plain["median_mroas_error"] < 0.15, plain
    assert cal["median_mroas_error"] < 0.15, cal
    assert cal["median_roi_error"] < 0.19, cal
    assert cal["median_roi_error"] < plain["median_roi_error"], (plain, cal)
    assert 0.85 <= cal["coverage_90"] <= 0.99, cal
    # a plain table barely pins the ROIs (the curve below the spend it shows): their intervals are
    # wide and cover more than 90%; wide, not useless: the 95th percentile within 5x the 5th
    assert plain["coverage_90"] >= 0.85, plain
    assert plain["median_roi_interval_ratio"] < 5.0, plain  # measured 4.2
    assert cal["unhealthy_fits"] <= 2, cal


@pytest.mark.slow
def test_pymc_marketing_example_contributions_and_regret() -> None:
    """Our default structure (Hill curves, multiplicative baseline) on a table made with logistic
    curves and an additive baseline: x1 has few periods of low spend, so the shape of its curve there
    is the Hill family's guess, and its contribution comes out 23% under the truth with an
    interval that misses it (docs/validation.md section 2); in PyMC-Marketing's structure, the next
    test, it is 2%."""
    r = pymc_example()
    assert abs(r["channels"]["x1"]["error"]) < 0.25, r["channels"]  # measured: -22.7%
    assert abs(r["channels"]["x2"]["error"]) < 0.10, r["channels"]  # measured: +5.2%
    assert r["channels"]["x2"]["covered"], r["channels"]
    assert r["healthy"], r["reasons"]
    assert r["regret"]["regret"] < 0.01, r["regret"]  # measured: 0.39%


@pytest.mark.slow
def test_pymc_marketing_example_in_pymc_marketings_own_structure() -> None:
    """Logistic saturation and an additive baseline, the structure of PyMC-Marketing's documented
    setup for its example (and of the process that generated it)."""
    r = pymc_example(saturation="logistic", baseline="additive")
    # measured (docs/validation.md section 2): x1 -2.1%, x2 +4.4%, regret 0.09%
    assert abs(r["channels"]["x1"]["error"]) < 0.05, r["channels"]
    assert abs(r["channels"]["x2"]["error"]) < 0.08, r["channels"]
    assert all(r["channels"][ch]["covered"] for ch in ("x1", "x2")), r["channels"]
    assert r["healthy"], r["reasons"]
    assert r["regret"]["regret"] < 0.003, r["regret"]


@pytest.mark.slow
def test_the_plain_fit_reaches_the_oracle_floor_on_mroas() -> None:
    """docs/validation.md section 1: handed the true curve shapes, a fit of the study's tables misses
    the mROAS by about as much as ours does (11.2% and 12.5% measured, 20 seeds): the error is
    mostly the data's.
    Plain fits only, 10 seeds, at the study's 1000 + 1000 draws: with 500 + 500 the posterior means
    carry enough Monte Carlo error to move the median by two points from one machine's floating
    point to another's (17.5% against the oracle's 13.9% on one, inside the bound on another; 15.1%
    against 13.6% at 1000 + 1000)."""
    kw = {"calibrated": (False,), "warmup": 1000, "samples": 1000}
    ours = recovery_study(range(10), **kw)["summary"]["plain"]
    oracle = recovery_study(range(10), oracle=True, **kw)["summary"]["plain"]
    assert ours["median_mroas_error"] <= 1.15 * oracle["median_mroas_error"] + 0.01, (ours, oracle)
    # the oracle knows more, so its ROI (which needs the curve down to zero spend) is far closer
    assert oracle["median_roi_error"] < ours["median_roi_error"], (ours, oracle)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("periods", "channels", "frequency"),
    [(260, 20, "week"), (52, 2, "week"), (365, 2, "day"), (1826, 3, "day")],
    ids=["5y-weekly-20ch", "1y-weekly-2ch", "1y-daily-2ch", "5y-daily-3ch"],
)
def test_the_envelope_of_tables_the_model_is_for(periods: int, channels: int, frequency: str) -> None:
    """The corners of what the model promises (weekly and daily, 2-20 channels, 1-5 years): each fits
    healthy and still finds the channels' marginal returns; and where a channel's ROI interval misses
    the truth, the fit said beforehand that the ROI was an extrapolation (measured: on one year of
    daily data, channels that never spent far below their mean came out 1.2-2x too high, their
    intervals just excluding the truth)."""
    data, truth = simulate(periods=periods, channels=channels, frequency=frequency, seed=7)
    fm = fit(data, chains=2, warmup=500, samples=500, seed=7)
    assert fm.healthy, fm.diagnostics.reasons
    sc = score_fit(fm, truth, seed=7, calibrated=False)
    score = summarize([sc])
    assert score["median_mroas_error"] < 0.35, score
    flagged = {s.channel for s in fm.spend_support() if s.roi_extrapolated}
    missed = {c.channel for c in sc.channels if not c.covered}
    assert missed <= flagged, (missed, flagged, score)


@pytest.mark.slow
def test_short_daily_tables_are_not_pulled_toward_large_rois() -> None:
    """One year of daily data, two channels that never spend far below their mean (seeds 7-9): the
    table pins each channel's marginal return but barely its ROI. With the baseline's 14 trend and
    Fourier coefficients relative to its level, the posterior's volume pulled the ROIs 1.3-3x too
    high with intervals that missed half the truths (measured: median ROI error 84%, 3/6 covered);
    sized in revenue (``rest_scale``, docs/model.md), 42% and 4/6 (500 + 500 draws; seed 7's first
    channel sits at its interval's edge)."""
    scores = []
    for seed in (7, 8, 9):
        data, truth = simulate(periods=365, channels=2, frequency="day", seed=seed)
        scores.append(
            score_fit(
                fit(data, chains=2, warmup=500, samples=500, seed=seed), truth, seed=seed, calibrated=False
            )
        )
    s = summarize(scores)
    assert s["covered"] >= 4, s
    assert s["median_roi_error"] < 0.5, s
    assert s["median_mroas_error"] < 0.15, s
