"""Lift-test calibration: the model's own prediction of a test, and its pull toward the measured lift."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from budgetloop.errors import InputError
from models.fit import fit
from models.fitted import FittedModel, LiftCheck
from models.lift import LiftTest, load_lift_tests, to_arrays
from models.model import DIRECT_WINDOW_ROWS, ModelSpec, lift_predictions
from models.outputs import fit_json, table_alone_block
from models.priors import LogNormalPrior, Priors
from models.simulate import media_np, simulate


@pytest.mark.parametrize("n", [4, DIRECT_WINDOW_ROWS + 4])  # the direct product, and the blocked form
def test_lift_prediction_is_table_minus_changed_spend_inside_the_window(n: int) -> None:
    data, truth = simulate(periods=30, channels=2, seed=4)
    j, start = 1, 10
    per_row = -0.5 * float(data.spend[start : start + n, j].min())
    test = LiftTest(
        data.channels[j],
        data.dates[start].astype("datetime64[D]"),
        data.dates[start + n - 1].astype("datetime64[D]"),
        per_row * n,
        0.0,
        1.0,
    )
    arr = to_arrays([test], data)
    assert arr is not None
    spec = ModelSpec.for_data(data)
    scale = data.spend_scale
    # true curves in the model's scaled units: beta in revenue / y_scale, half in spend / spend_scale
    beta = truth.scale / data.y_scale
    pred = lift_predictions(
        spec,
        jnp.asarray(data.spend / scale, dtype=jnp.float32),
        {k: jnp.asarray(v) for k, v in arr.__dict__.items()},
        jnp.asarray(truth.decay, dtype=jnp.float32),
        None,
        jnp.asarray(truth.half / scale, dtype=jnp.float32),
        jnp.asarray(truth.shape, dtype=jnp.float32),
        jnp.asarray(beta, dtype=jnp.float32),
    )
    changed = data.spend.copy()
    changed[start : start + n, j] += per_row
    args = (truth.decay, truth.half, truth.shape, truth.scale)
    by_hand = (media_np(data.spend, *args) - media_np(changed, *args))[start : start + n, j].sum()
    assert by_hand > 0
    assert float(pred[0]) * data.y_scale == pytest.approx(by_hand, rel=1e-4)


def test_a_geo_holdout_is_predicted_as_the_held_out_regions_whole_contribution() -> None:
    # regions that hold share s of the channel's spend go dark: the table shows what the others got,
    # and the test measures s x (media at the full spend - media with none), carry-over included
    data, truth = simulate(periods=30, channels=2, seed=4)
    j, start, n, s = 0, 12, 5, 0.08
    full = data.spend.copy()
    table = full.copy()
    table[start : start + n, j] *= 1 - s
    test = LiftTest(
        data.channels[j],
        data.dates[start].astype("datetime64[D]"),
        data.dates[start + n - 1].astype("datetime64[D]"),
        -s * float(full[start : start + n, j].sum()),
        0.0,
        1.0,
        holdout_share=s,
    )
    shown = dataclasses.replace(data, spend=table)
    arr = to_arrays([test], shown)
    assert arr is not None and arr.share[0] == pytest.approx(s)
    scale = shown.spend_scale
    pred = lift_predictions(
        ModelSpec.for_data(shown),
        jnp.asarray(table / scale, dtype=jnp.float32),
        {k: jnp.asarray(v) for k, v in arr.__dict__.items()},
        jnp.asarray(truth.decay, dtype=jnp.float32),
        None,
        jnp.asarray(truth.half / scale, dtype=jnp.float32),
        jnp.asarray(truth.shape, dtype=jnp.float32),
        jnp.asarray(truth.scale / shown.y_scale, dtype=jnp.float32),
    )
    dark = full.copy()
    dark[start : start + n, j] = 0.0
    args = (truth.decay, truth.half, truth.shape, truth.scale)
    by_hand = s * (media_np(full, *args) - media_np(dark, *args))[start : start + n, j].sum()
    # a national cut of the same spend measures the marginal return instead: a different number
    cut = table.copy()
    cut[start : start + n, j] += test.spend_delta / n
    marginal = (media_np(table, *args) - media_np(cut, *args))[start : start + n, j].sum()
    assert float(pred[0]) * shown.y_scale == pytest.approx(by_hand, rel=1e-4)
    assert abs(by_hand - marginal) > 0.05 * by_hand
    assert LiftTest.from_dict(test.to_dict()) == test


def _delayed_media_by_hand(
    spend: np.ndarray, before: np.ndarray, decay: np.ndarray, delay: np.ndarray, max_lag: int, curve: object
) -> np.ndarray:
    """Delayed adstock written out: ``sum_l w_l x[t - l]``, ``w_l ∝ decay^((l - delay)^2)``, the periods
    before the table having spent ``before``; then the saturation ``curve``."""
    t, c = spend.shape
    out = np.zeros_like(spend)
    for j in range(c):
        w = decay[j] ** ((np.arange(max_lag) - delay[j]) ** 2)
        w = w / w.sum()
        for i in range(t):
            out[i, j] = sum(w[lag] * (spend[i - lag, j] if i >= lag else before[j]) for lag in range(max_lag))
    return curve(out)  # type: ignore[operator,no-any-return]


@pytest.mark.parametrize("share", [None, 0.1])
def test_a_delayed_adstock_test_on_the_first_row_does_not_reach_back_before_the_table(
    share: float | None,
) -> None:
    # INTERFACES section 2: the spend differed on the rows start..end only; the periods before the
    # table spent its first row as it stands in both the table's and the changed spend
    data, truth = simulate(periods=30, channels=2, seed=4)
    j, n = 1, 4
    table = data.spend.copy()
    if share is None:
        delta = -0.6 * float(table[:n, j].min()) * n
        full = table.copy()
        changed = table.copy()
        changed[:n, j] += delta / n
    else:
        delta = -share / (1 - share) * float(table[:n, j].sum())
        full = table.copy()
        full[:n, j] /= 1 - share
        changed = full.copy()
        changed[:n, j] = 0.0
    day = data.dates.astype("datetime64[D]")
    test = LiftTest(data.channels[j], day[0], day[n - 1], delta, 0.0, 1.0, share)
    arr = to_arrays([test], data)
    assert arr is not None
    spec = ModelSpec.for_data(data, adstock="delayed")
    scale = data.spend_scale
    delay = np.array([1.5, 2.0])
    pred = lift_predictions(
        spec,
        jnp.asarray(table / scale, dtype=jnp.float32),
        {k: jnp.asarray(v) for k, v in arr.__dict__.items()},
        jnp.asarray(truth.decay, dtype=jnp.float32),
        jnp.asarray(delay, dtype=jnp.float32),
        jnp.asarray(truth.half / scale, dtype=jnp.float32),
        jnp.asarray(truth.shape, dtype=jnp.float32),
        jnp.asarray(truth.scale / data.y_scale, dtype=jnp.float32),
    )

    def media(spend: np.ndarray) -> np.ndarray:
        def curve(stock: np.ndarray) -> np.ndarray:
            return np.asarray(
                truth.scale * stock**truth.shape / (stock**truth.shape + truth.half**truth.shape)
            )

        return _delayed_media_by_hand(spend, table[0], truth.decay, delay, spec.max_lag, curve)

    by_hand = (1.0 if share is None else share) * (media(full) - media(changed))[:n, j].sum()
    assert by_hand > 0
    assert float(pred[0]) * data.y_scale == pytest.approx(by_hand, rel=1e-4)


def test_a_window_must_lie_within_the_tables_periods() -> None:
    # a weekly row stands for the week from its date: a test may end inside the last row's week, but
    # one that starts before the first row's date would squeeze days outside the table into its rows
    data, _ = simulate(periods=20, channels=1, seed=2)
    day = data.dates.astype("datetime64[D]")
    one = np.timedelta64(1, "D")

    def test_between(start: np.datetime64, end: np.datetime64) -> LiftTest:
        return LiftTest(data.channels[0], start, end, -1.0, 1.0, 1.0)

    arr = to_arrays([test_between(day[0], day[1]), test_between(day[-2], day[-1] + 6 * one)], data)
    assert arr is not None and arr.window.sum(axis=1).tolist() == [2.0, 2.0]
    for start, end, key in [(day[0] - one, day[1], "start"), (day[-2], day[-1] + 7 * one, "end")]:
        with pytest.raises(InputError, match="only part of the test would be counted") as err:
            to_arrays([test_between(day[3], day[4]), test_between(start, end)], data, source="tests.csv")
        assert (err.value.file, err.value.row, err.value.key) == ("tests.csv", 3, key)


def test_a_holdout_share_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="holdout_share"):
        LiftTest("tv", np.datetime64("2024-01-01"), np.datetime64("2024-01-14"), -10.0, 5.0, 1.0, 1.5)


@pytest.mark.slow
def test_a_lift_test_pulls_a_badly_biased_channel_toward_the_truth() -> None:
    data, truth = simulate(periods=104, channels=3, seed=21)
    j = 0
    # a wrong prior: ROI two and a half times the truth. (Held much tighter than this, the model keeps
    # the prior's ROI and meets the lift through a long carry-over instead: a test over a few weeks
    # cannot tell a high ROI with slow decay from a lower one with fast decay.)
    priors = Priors().with_channel(data.channels[j], roi=LogNormalPrior(2.5 * float(truth.roi[j]), 0.5))
    start, n = 70, 4
    per_row = -0.9 * float(data.spend[start : start + n, j].min())
    changed = data.spend.copy()
    changed[start : start + n, j] += per_row
    args = (truth.decay, truth.half, truth.shape, truth.scale)
    lift = float((media_np(data.spend, *args) - media_np(changed, *args))[start : start + n, j].sum())
    test = LiftTest(
        data.channels[j],
        data.dates[start].astype("datetime64[D]"),
        data.dates[start + n - 1].astype("datetime64[D]"),
        per_row * n,
        lift,
        0.05 * lift,
    )
    kw = dict(chains=2, warmup=300, samples=300, seed=0, priors=priors)
    plain = fit(data, **kw)  # type: ignore[arg-type]
    calibrated = fit(data, lift_tests=[test], **kw)  # type: ignore[arg-type]
    err_plain = abs(np.median(plain.channel_metrics().roi[:, j]) / truth.roi[j] - 1)
    err_cal = abs(np.median(calibrated.channel_metrics().roi[:, j]) / truth.roi[j] - 1)
    assert err_plain > 0.25  # the prior did bias it
    assert err_cal < 0.6 * err_plain


def test_the_csv_may_mark_geo_holdouts_and_a_bad_share_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "lift.csv"
    head = "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se,holdout_share\n"
    path.write_text(
        head + "tv,2024-01-01,2024-01-14,-500,900,100,0.07\nsearch,2024-02-01,2024-02-14,-300,400,80,\n"
    )
    geo, national = load_lift_tests(path)
    assert geo.holdout_share == pytest.approx(0.07) and national.holdout_share is None
    path.write_text(
        head + "tv,2024-01-01,2024-01-14,-500,900,100,0.07\ntv,2024-02-01,2024-02-14,-300,400,80,7\n"
    )
    with pytest.raises(InputError) as err:
        load_lift_tests(path)
    assert err.value.row == 3 and err.value.key == "holdout_share"


def _check_of(fm: FittedModel, test: LiftTest) -> LiftCheck:
    (check,) = dataclasses.replace(fm, lift_tests=(test,), _cache={}).lift_checks()
    return check


def _test_on(
    fm: FittedModel, j: int, start: int, n: int, lift: float, se: float, share: float | None = None
) -> LiftTest:
    data = fm.data
    if share is None:
        delta = -0.5 * float(data.spend[start : start + n, j].min()) * n
    else:
        delta = -share / (1 - share) * float(data.spend[start : start + n, j].sum())
    day = data.dates.astype("datetime64[D]")
    return LiftTest(data.channels[j], day[start], day[start + n - 1], delta, lift, se, share)


@pytest.mark.parametrize(("share", "start"), [(None, 40), (0.1, 40), (0.1, 0)])  # 0: the table's first row
def test_the_fits_view_of_a_lift_test_is_its_likelihood_terms_prediction(
    small_fit: FittedModel, share: float | None, start: int
) -> None:
    """FIT.json reports each test against the model's own prediction of it: computed in NumPy from the
    draws, it must be the very quantity the likelihood reads (models.model.lift_predictions)."""
    fm = small_fit
    test = _test_on(fm, 1, start, 4, 1.0, 1.0, share)
    predicted = _check_of(fm, test).predicted
    arr = to_arrays([test], fm.data)
    assert arr is not None
    lift = {k: jnp.asarray(v) for k, v in arr.__dict__.items()}
    x = jnp.asarray(fm.data.spend / fm.data.spend_scale, dtype=jnp.float32)
    picks = np.linspace(0, fm.n_draws - 1, 7).astype(int)
    for i in picks:
        d = {k: jnp.asarray(v[i], dtype=jnp.float32) for k, v in fm.draws.items() if np.ndim(v) == 2}
        (want,) = lift_predictions(fm.spec, x, lift, d["decay"], None, d["half"], d.get("shape"), d["beta"])
        assert predicted[i] == pytest.approx(float(want) * fm.data.y_scale, rel=2e-4)
    assert np.all(predicted > 0)  # a holdout of a positive media effect loses revenue


def test_a_lift_test_the_fit_cannot_follow_is_named_with_what_to_check(small_fit: FittedModel) -> None:
    fm = small_fit
    middle = float(np.mean(_check_of(fm, _test_on(fm, 0, 60, 4, 1.0, 1.0)).predicted))
    sd = float(np.std(_check_of(fm, _test_on(fm, 0, 60, 4, 1.0, 1.0)).predicted))
    agreeing = _check_of(fm, _test_on(fm, 0, 60, 4, middle, sd))
    assert agreeing.agrees and agreeing.warning() is None and abs(agreeing.z) < 0.1
    far = _check_of(fm, _test_on(fm, 0, 60, 4, 4 * middle, sd))
    assert not far.agrees and far.z > 3
    message = far.warning()
    assert message is not None and "lift test 1 (`ch0`" in message and "disagree" in message
    flipped = _check_of(fm, _test_on(fm, 0, 60, 4, -middle, 0.1 * middle))
    assert flipped.reversed_sign
    assert "Check its sign" in (flipped.warning() or "")
    doc = fit_json(dataclasses.replace(fm, lift_tests=(far.test, flipped.test), _cache={}))
    assert [t["agrees"] for t in doc["lift_tests"]] == [False, False]
    assert doc["lift_tests"][0]["predicted"]["p05"] < middle < doc["lift_tests"][0]["predicted"]["p95"]
    assert sum("lift test" in w for w in doc["warnings"]) == 2
    assert "lift_tests" not in fit_json(fm)  # a plain fit has none


def test_a_tight_test_the_table_contradicts_is_named_against_the_table_alone(small_fit: FittedModel) -> None:
    """A test 4x what the table implies, with a 3% standard error, pulls the calibrated posterior to
    itself: against that posterior it barely disagrees. Against a fit of the table alone it does,
    and the warning gives both ROIs; a test that matches the table passes both checks."""
    from models.fit import check_lift_tests_against_the_table

    base = _test_on(small_fit, 1, 60, 4, 1.0, 1.0)
    implied = float(np.mean(_check_of(small_fit, base).predicted))
    right = dataclasses.replace(base, incremental_revenue=implied, incremental_revenue_se=0.1 * implied)
    wrong = dataclasses.replace(base, incremental_revenue=4 * implied, incremental_revenue_se=0.03 * implied)
    zs = {}
    for name, test in (("right", right), ("wrong", wrong)):
        fm = fit(small_fit.data, lift_tests=[test], chains=2, warmup=300, samples=300, seed=1)
        (check,) = check_lift_tests_against_the_table(fm)
        zs[name] = (check.z, fm.lift_checks()[0].z)
        assert check.agrees is (name == "right"), zs
        block = table_alone_block(check)
        assert block["roi_table_alone"]["p05"] < block["roi_table_alone"]["p95"]
        assert block["predicted"]["mean"] == pytest.approx(float(np.mean(check.predicted)))
        if name == "wrong":
            warning = check.warning()
            assert warning is not None and warning.startswith("lift test 1 (`ch1`")
            assert "where the table alone predicts" in warning and "from the table alone" in warning
            assert np.median(check.roi_calibrated) > 1.3 * np.median(check.roi_alone)  # the test moved it
        else:
            assert check.warning() is None
            # a table-alone fit whose loss did not settle predicts nothing worth comparing: said so
            from budgetloop.errors import FitError

            with pytest.raises(FitError, match="did not settle in 20 SVI steps"):
                check_lift_tests_against_the_table(fm, svi_steps=20)
    # the calibrated posterior's own check sees far less of the conflict
    assert abs(zs["wrong"][1]) < abs(zs["wrong"][0]) / 2, zs


def test_a_test_with_the_wrong_sign_gets_one_warning_about_its_sign() -> None:
    """A holdout that "raised" revenue is named by its LiftCheck (check the sign); the table-alone
    check, which a far-off value also trips, must not add advice that the test may be right."""
    from models.fitted import TableAloneCheck

    day = np.datetime64("2024-01-01")
    test = LiftTest("tv", day, day + np.timedelta64(21, "D"), -1000.0, -5000.0, 100.0)
    predicted = np.full(200, 800.0) + np.linspace(-50.0, 50.0, 200)
    roi = np.linspace(1.0, 2.0, 200)
    assert LiftCheck(1, test, predicted).reversed_sign
    check = TableAloneCheck(1, test, predicted, roi, roi)
    assert not check.agrees and check.warning() is None
    flipped = dataclasses.replace(check, test=dataclasses.replace(test, incremental_revenue=5000.0))
    assert flipped.warning() is not None and "where the table alone predicts" in str(flipped.warning())


def test_a_geo_holdout_whose_spend_delta_and_share_disagree_is_named(small_fit: FittedModel) -> None:
    """The model reads a geo holdout's share, not its spend_delta: a share typed 0.1 where the
    withheld spend says 0.01 would calibrate the channel on ten times the regions, silently."""
    fm = small_fit
    consistent = _test_on(fm, 1, 40, 4, 1.0, 1.0, share=0.1)  # spend_delta = -s / (1 - s) x the window's
    mistyped = dataclasses.replace(consistent, spend_delta=consistent.spend_delta / 10)
    slightly_off = dataclasses.replace(consistent, spend_delta=consistent.spend_delta * 1.1)
    assert (
        dataclasses.replace(fm, lift_tests=(consistent, slightly_off), _cache={}).geo_share_warnings() == ()
    )
    (warning,) = dataclasses.replace(fm, lift_tests=(consistent, mistyped), _cache={}).geo_share_warnings()
    assert warning.startswith("lift test 2 (`ch1`") and "holdout_share 0.1" in warning
    assert "The model reads the share, not spend_delta" in warning
    # and it is among FIT.json's warnings
    assert any(
        "holdout_share 0.1 says" in w
        for w in dataclasses.replace(fm, lift_tests=(mistyped,), _cache={}).warnings()
    )


def test_a_table_with_controls_predicts_a_test_on_any_channel(easy_case: tuple[object, object]) -> None:
    """The fit's view of a test took every [draws, k] array as a per-channel one, controls'
    coefficients included: a test on a channel at or past the number of controls raised IndexError
    after sampling (an analyst's `--controls` with `--lift-tests`), and FIT.json was never written."""
    data, _ = easy_case
    n = data.periods  # type: ignore[attr-defined]
    promo = np.random.default_rng(3).normal(size=(n, 1))
    with_control = dataclasses.replace(data, controls=promo, control_names=("promo",))  # type: ignore[call-overload]
    dates = data.dates  # type: ignore[attr-defined]
    test = LiftTest("ch2", dates[40], dates[43], -1000.0, 2000.0, 400.0)
    fm = fit(with_control, lift_tests=[test], chains=1, warmup=60, samples=60, seed=0, retry=False)
    (check,) = fm.lift_checks()
    assert np.all(np.isfinite(check.predicted)) and np.all(check.predicted > 0)
    doc = fit_json(fm)
    (reported,) = doc["lift_tests"]
    assert reported["channel"] == "ch2"
    assert 0 < reported["predicted"]["p05"] <= reported["predicted"]["p95"]
