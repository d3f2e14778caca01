"""Adstock and Hill against hand computations; shape and sign checks up front."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.transforms import delayed_adstock, geometric_adstock, hill, logistic, saturate


def test_geometric_adstock_matches_the_recursion_by_hand() -> None:
    x = np.array([10.0, 0.0, 0.0, 20.0])
    # a_{-1} = x_0 = 10; a_t = 0.5 x_t + 0.5 a_{t-1}
    expected = [10.0, 5.0, 2.5, 11.25]
    np.testing.assert_allclose(geometric_adstock(x, 0.5), expected, rtol=1e-6)


def test_geometric_adstock_is_normalised_and_per_channel() -> None:
    x = np.tile(np.array([[3.0, 7.0]]), (30, 1))
    out = np.asarray(geometric_adstock(x, np.array([0.2, 0.9])))
    np.testing.assert_allclose(out, x, rtol=1e-6)  # constant spend is its own steady state
    pulse = np.zeros((40, 2))
    pulse[5] = 1.0
    resp = np.asarray(geometric_adstock(pulse, np.array([0.3, 0.8])))
    np.testing.assert_allclose(resp.sum(0), [1.0, 1.0], atol=2e-3)  # weights sum to one
    assert resp[6, 0] == pytest.approx(0.7 * 0.3, rel=1e-5)


def test_geometric_adstock_carries_an_initial_state() -> None:
    out = geometric_adstock(np.array([0.0, 0.0]), 0.5, init=8.0)
    np.testing.assert_allclose(out, [4.0, 2.0])


def test_adstock_is_differentiable_in_decay() -> None:
    x = jnp.asarray([1.0, 2.0, 0.0, 4.0])
    g = jax.grad(lambda d: jnp.sum(geometric_adstock(x, d)))(0.4)
    eps = 1e-3
    num = (jnp.sum(geometric_adstock(x, 0.4 + eps)) - jnp.sum(geometric_adstock(x, 0.4 - eps))) / (2 * eps)
    assert float(g) == pytest.approx(float(num), rel=1e-2)


def test_delayed_adstock_peaks_after_the_delay_and_keeps_mass() -> None:
    pulse = np.zeros(20)
    pulse[2] = 1.0
    out = np.asarray(delayed_adstock(pulse, 0.5, 2.0, max_lag=8))
    assert int(np.argmax(out)) == 4
    assert out.sum() == pytest.approx(1.0, rel=1e-5)


def test_hill_by_hand_and_monotone() -> None:
    assert float(hill(2.0, 2.0, 1.7)) == pytest.approx(0.5)
    assert float(hill(3.0, 1.0, 2.0)) == pytest.approx(9.0 / 10.0)
    assert float(hill(0.0, 1.0, 2.0)) == 0.0
    xs = jnp.linspace(0.0, 10.0, 50)
    assert bool(jnp.all(jnp.diff(hill(xs, 2.0, 1.3)) > 0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: geometric_adstock(np.array([1.0, -1.0]), 0.5), "`x` must be finite and >= 0"),
        (lambda: geometric_adstock(np.ones((3, 2)), 1.0), r"`decay` must lie in \[0, 1\)"),
        (lambda: geometric_adstock(np.ones((3, 2)), np.array([0.1, 0.2, 0.3])), "`decay` must be a scalar"),
        (lambda: geometric_adstock(np.float64(1.0), 0.5), "must have a time axis"),
        (lambda: hill(np.ones(3), 0.0, 1.0), "`half` must be > 0"),
        (lambda: hill(np.ones(3), 1.0, -1.0), "`shape` must be > 0"),
        (lambda: delayed_adstock(np.ones(3), 0.5, 0.0, max_lag=0), "`max_lag` must be >= 1"),
    ],
)
def test_bad_arguments_are_refused_with_the_argument_named(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


@pytest.mark.parametrize("periods", [1, 2, 3, 7, 10, 104, 731])
def test_blocked_geometric_adstock_equals_the_sequential_recursion(periods: int) -> None:
    """The closed-form blocked solution against the plain loop, for table lengths that are and are not
    multiples of the block, decays from almost none to almost full carry-over, and a given initial state."""
    rng = np.random.default_rng(periods)
    x = rng.gamma(2.0, 50.0, size=(periods, 4))
    x[rng.random(x.shape) < 0.1] = 0.0
    decay = np.array([1e-4, 0.3, 0.8, 0.99])
    init = np.array([5.0, 0.0, 80.0, 120.0])
    for start in (None, init):
        prev = x[0].copy() if start is None else start.copy()
        expected = np.empty_like(x)
        for t in range(periods):
            prev = (1 - decay) * x[t] + decay * prev
            expected[t] = prev
        got = np.asarray(geometric_adstock(x.astype(np.float32), decay.astype(np.float32), start))
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-3)


def test_blocked_adstock_has_finite_gradients_at_extreme_decays() -> None:
    x = jnp.asarray(np.linspace(0.0, 3.0, 60, dtype=np.float32))
    for d in (1e-7, 0.5, 0.999):
        g = jax.grad(lambda d: jnp.sum(geometric_adstock(x, d) ** 2))(jnp.float32(d))
        assert np.isfinite(float(g))


def test_logistic_is_pymc_marketings_curve_with_its_half_saturation_point() -> None:
    """``tanh(atanh(1/2) x / half)`` is ``(1 - e^(-lam x)) / (1 + e^(-lam x))`` with ``lam = ln 3 / half``,
    half of its ceiling at ``half``, concave, 0 at zero spend; ``saturate`` dispatches on the kind."""
    x = np.array([0.0, 0.3, 1.0, 2.0, 7.5])
    half = 2.0
    lam = np.log(3.0) / half
    np.testing.assert_allclose(logistic(x, half), (1 - np.exp(-lam * x)) / (1 + np.exp(-lam * x)), rtol=1e-6)
    assert float(logistic(np.array([half]), half)[0]) == pytest.approx(0.5, rel=1e-6)
    grad = jax.vmap(jax.grad(lambda v: logistic(v, half)))(jnp.asarray(x))
    assert np.all(np.diff(np.asarray(grad)) < 0)  # concave: steepest at zero
    np.testing.assert_allclose(saturate("logistic", x, half, None), logistic(x, half))
    np.testing.assert_allclose(saturate("hill", x, half, 1.5), hill(x, half, 1.5))
    with pytest.raises(ValueError, match="`saturation` must be one of"):
        saturate("gompertz", x, half, None)
    with pytest.raises(ValueError, match="Hill saturation needs `shape`"):
        saturate("hill", x, half, None)
    with pytest.raises(ValueError, match="`half` must be > 0"):
        logistic(x, 0.0)


def test_the_numpy_adstocks_are_the_models() -> None:
    """``models.curves``' NumPy adstocks (the simulator's, and the carried-over spend behind
    FIT.json's ROI flag) equal the model's JAX ones, geometric and delayed."""
    from models.curves import delayed_adstock_np, geometric_adstock_np

    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 1.0, size=(40, 3))
    decay, delay = np.array([0.1, 0.5, 0.8]), np.array([0.0, 1.5, 3.0])
    np.testing.assert_allclose(
        geometric_adstock_np(x, decay),
        np.asarray(geometric_adstock(jnp.asarray(x), jnp.asarray(decay))),
        rtol=1e-5,
    )
    expected = delayed_adstock(jnp.asarray(x), jnp.asarray(decay), jnp.asarray(delay), 8)
    np.testing.assert_allclose(delayed_adstock_np(x, decay, delay, 8), np.asarray(expected), rtol=1e-5)
    # the spend before the table, when given, replaces the first period's in both
    before = np.array([0.5, 0.0, 2.0])
    expected = delayed_adstock(jnp.asarray(x), jnp.asarray(decay), jnp.asarray(delay), 8, jnp.asarray(before))
    got = delayed_adstock_np(x, decay, delay, 8, before=before)
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5)
    # the first row reads lags 1..7 from before the table: with delay 3 and decay 0.8 most of its weight
    assert got[0, 2] != pytest.approx(delayed_adstock_np(x, decay, delay, 8)[0, 2], rel=1e-3)
