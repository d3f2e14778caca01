"""PSIS-LOO against exact leave-one-out where the posterior is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from models.loo import K_MAX, compare, loo, psis


def _normal_mean(y: np.ndarray, sigma: float, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Pointwise log likelihoods [draws, n] under the flat-prior posterior of a normal mean."""
    n = len(y)
    mu = rng.normal(y.mean(), sigma / np.sqrt(n), size=draws)
    return np.asarray(stats.norm.logpdf(y[None, :], mu[:, None], sigma))


def _exact_loo(y: np.ndarray, sigma: float) -> np.ndarray:
    n = len(y)
    rest_mean = (y.sum() - y) / (n - 1)
    return np.asarray(stats.norm.logpdf(y, rest_mean, sigma * np.sqrt(1 + 1 / (n - 1))))


def test_matches_exact_leave_one_out_of_a_normal_mean() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(2.0, 1.5, size=60)
    y[7] = 9.0  # one surprising period: its importance weights are the heavy-tailed case
    result = loo(_normal_mean(y, 1.5, 4000, rng))
    exact = _exact_loo(y, 1.5)
    assert result.elpd == pytest.approx(exact.sum(), abs=0.15)
    assert np.max(np.abs(result.pointwise - exact)) < 0.05
    assert result.bad_k == 0
    assert result.pareto_k[7] == result.pareto_k.max()  # the outlier is the least certain period
    # the standard error is the spread of the pointwise terms, as for any sum of n observations
    assert result.se == pytest.approx(np.sqrt(60 * np.var(exact)), rel=0.05)


def test_the_better_model_wins_the_comparison() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(0.0, 1.0, size=80)
    right = loo(_normal_mean(y, 1.0, 2000, rng))
    wrong = loo(_normal_mean(y, 3.0, 2000, rng))  # noise assumed three times too large
    diff, se = compare(right, wrong)
    assert diff > 2 * se > 0


def test_smoothing_caps_the_largest_weights_and_flags_a_hopeless_period() -> None:
    rng = np.random.default_rng(5)
    heavy = rng.standard_cauchy(1000) * 20  # raw importance ratios with a very heavy tail
    lw, k = psis(heavy)
    assert np.isclose(np.logaddexp.reduce(lw), 0.0)  # normalised
    assert k > K_MAX
    raw = heavy - np.logaddexp.reduce(heavy)
    assert lw.max() <= raw.max() + 1e-12


def test_rejects_too_few_draws() -> None:
    with pytest.raises(ValueError, match="draws >= 10"):
        loo(np.zeros((3, 5)))
