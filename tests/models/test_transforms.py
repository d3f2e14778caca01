"""Adstock and Hill against hand computations; shape and sign checks up front."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.transforms import delayed_adstock, geometric_adstock, hill


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
