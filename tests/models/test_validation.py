"""The validation harness itself: the truths it scores against must be right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.priors import Priors
from models.validation import (
    PYMC_TRUTH_CSV,
    ChannelScore,
    FitScore,
    lift_tests_for,
    load_pymc_example,
    pymc_true_media,
    simulated_case,
    summarize,
)


def test_pymc_example_truth_reproduces_the_published_contributions() -> None:
    data = load_pymc_example()
    published = pd.read_csv(PYMC_TRUTH_CSV)[["x1_true_contribution", "x2_true_contribution"]].to_numpy()
    ours = pymc_true_media(data.spend)
    np.testing.assert_allclose(ours, published, rtol=1e-9, atol=1e-6)
    # data/README.md: true totals 274,848.3 (x1) and 65,906.0 (x2)
    np.testing.assert_allclose(ours.sum(axis=0), [274_848.3, 65_906.0], atol=0.1)


def _adstock_hill(spend: np.ndarray, decay: float, half: float, shape: float, scale: float) -> np.ndarray:
    out = np.empty(len(spend))
    a = spend[0]
    for t, s in enumerate(spend):
        a = (1 - decay) * s + decay * a
        out[t] = scale * a**shape / (a**shape + half**shape)
    return out


@pytest.mark.parametrize("frequency", ["week", "day"])
def test_lift_tests_measure_the_true_incremental_revenue(frequency: str) -> None:
    data, truth = simulated_case(3, frequency)
    tests = lift_tests_for(data, truth, seed=3)
    assert len(tests) == len(data.channels)
    rows = 4 if frequency == "week" else 28
    for t in tests:
        j = data.channels.index(t.channel)
        inside = (data.dates >= t.start) & (data.dates <= t.end)
        assert inside.sum() == rows
        assert np.flatnonzero(inside)[0] >= data.periods // 2
        per_row = t.spend_delta / rows
        assert per_row < 0 and (data.spend[inside, j] + per_row).min() >= 0  # a holdout, never below zero
        changed = data.spend[:, j].copy()
        changed[inside] += per_row
        args = (truth.decay[j], truth.half[j], truth.shape[j], truth.scale[j])
        true_lift = (_adstock_hill(data.spend[:, j], *args) - _adstock_hill(changed, *args))[inside].sum()
        assert t.incremental_revenue_se == pytest.approx(0.10 * true_lift, rel=1e-9)
        assert abs(t.incremental_revenue - true_lift) < 4 * t.incremental_revenue_se


def test_simulated_cases_are_two_and_a_half_years_of_five_channels_and_seeded() -> None:
    for frequency, periods in (("week", 130), ("day", 913)):
        data, _ = simulated_case(2, frequency)
        assert data.periods == periods and len(data.channels) == 5
    a, ta = simulated_case(5)
    b, tb = simulated_case(5)
    _, tc = simulated_case(6)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(ta.roi, tb.roi)
    assert not np.allclose(ta.roi, tc.roi)


def test_the_study_variation_widens_the_histories_and_keeps_the_curves() -> None:
    """``--variation`` changes how far budgets move, not the channels' true curves: a wider design
    spreads each channel's log spend further around its level."""
    quiet, tq = simulated_case(4)
    loud, tl = simulated_case(4, variation=0.6)
    np.testing.assert_array_equal(tq.decay, tl.decay)
    np.testing.assert_array_equal(tq.half, tl.half)
    spread = [np.std(np.log(d.spend[d.spend.min(1) > 0]), axis=0) for d in (quiet, loud)]
    assert np.all(spread[1] > 1.3 * spread[0])


def _score(seed: int, rows: list[tuple[float, float, float, float, float, float]]) -> FitScore:
    return FitScore(
        seed=seed,
        frequency="week",
        calibrated=False,
        periods=104,
        channels=tuple(ChannelScore(f"c{i}", *r) for i, r in enumerate(rows)),
        r_hat_max=1.01,
        divergences=0,
        fit_seconds=5.0,
        healthy=True,
    )


def test_summary_takes_medians_over_all_channels_and_counts_coverage() -> None:
    # (roi_true, roi_mean, p05, p95, mroas_true, mroas_mean)
    a = _score(0, [(2.0, 2.2, 1.5, 2.5, 1.0, 1.1), (1.0, 1.5, 1.2, 1.8, 0.5, 0.4)])
    b = _score(1, [(3.0, 3.0, 2.0, 4.0, 2.0, 2.0)])
    s = summarize([a, b])
    assert s["channels"] == 3 and s["fits"] == 2
    assert s["median_roi_error"] == pytest.approx(0.1)  # errors 0.1, 0.5, 0.0
    assert s["median_mroas_error"] == pytest.approx(0.1)  # errors 0.1, 0.2, 0.0
    assert s["covered"] == 2 and s["coverage_90"] == pytest.approx(2 / 3)
    assert s["median_roi_interval_ratio"] == pytest.approx(2.5 / 1.5)  # of 2.5/1.5, 1.8/1.2, 4.0/2.0
    with pytest.raises(ValueError, match="nothing to summarize"):
        summarize([])


def test_oracle_priors_pin_every_curve_at_the_truth() -> None:
    from models.priors import resolve
    from models.validation import oracle_priors

    data, truth = simulated_case(3)
    r = resolve(
        oracle_priors(data, truth),
        channels=data.channels,
        frequency=data.frequency,
        y_total=float(data.y.sum()),
        spend_total=data.spend.sum(0),
        spend_scale=data.spend_scale,
    )
    np.testing.assert_allclose(r.decay_a / (r.decay_a + r.decay_b), truth.decay, rtol=1e-9)
    np.testing.assert_allclose(np.exp(r.half_loc) * data.spend_scale, truth.half, rtol=1e-9)
    np.testing.assert_allclose(np.exp(r.shape_loc), truth.shape, rtol=1e-9)
    assert np.all(r.half_scale <= 0.005) and np.all(r.shape_scale <= 0.005)
    np.testing.assert_allclose(r.decay_a + r.decay_b, 2000.0)
    # the sizes are not pinned: the ROI prior stays the default one
    np.testing.assert_allclose(r.roi_scale, 0.8)


def test_summary_scores_the_posterior_medians_too_when_the_scores_have_them() -> None:
    def score(with_medians: bool) -> FitScore:
        c = ChannelScore("c0", 2.0, 2.4, 1.5, 3.0, 1.0, 1.2)
        if with_medians:
            c = ChannelScore("c0", 2.0, 2.4, 1.5, 3.0, 1.0, 1.2, roi_median=2.1, mroas_median=0.9)
        return FitScore(0, "week", False, 104, (c,), 1.01, 0, 5.0, True)

    s = summarize([score(True)])
    assert s["median_roi_error"] == pytest.approx(0.2) and s["median_roi_error_of_median"] == pytest.approx(
        0.05
    )
    assert s["median_mroas_error_of_median"] == pytest.approx(0.1)
    assert "median_roi_error_of_median" not in summarize([score(False)])  # older scores: not made up


def test_oracle_priors_can_pin_part_of_each_curve() -> None:
    from models.priors import resolve
    from models.validation import oracle_priors

    data, truth = simulated_case(3)
    kw = {
        "channels": data.channels,
        "frequency": data.frequency,
        "y_total": float(data.y.sum()),
        "spend_total": data.spend.sum(0),
        "spend_scale": data.spend_scale,
    }
    default = resolve(Priors(), **kw)
    r = resolve(oracle_priors(data, truth, parts=("half",)), **kw)
    np.testing.assert_allclose(np.exp(r.half_loc) * data.spend_scale, truth.half, rtol=1e-9)
    # the parts not named keep their default priors
    np.testing.assert_array_equal(r.decay_a, default.decay_a)
    np.testing.assert_array_equal(r.shape_loc, default.shape_loc)
    np.testing.assert_array_equal(r.shape_scale, default.shape_scale)
    with pytest.raises(ValueError, match="cannot pin \\['roi'\\]"):
        oracle_priors(data, truth, parts=("roi",))


def test_a_study_pins_all_the_curves_or_some_not_both() -> None:
    from models.validation import recovery_study

    with pytest.raises(ValueError, match="not both"):
        recovery_study([0], oracle=True, pin=("decay",))
