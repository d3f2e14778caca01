"""Leave-one-out predictive accuracy by Pareto-smoothed importance sampling (PSIS-LOO).

``elpd_loo`` estimates the expected log density of a period the fit has not seen, from the posterior
draws alone (Vehtari, Gelman and Gabry, 2017; Vehtari et al., 2024): for each period the draws are
importance-weighted by 1 / p(y_t | draw), the largest weights are replaced by quantiles of a
generalized Pareto distribution fitted to them (Zhang and Stephens, 2009), and the Pareto shape
``k`` of each period says whether its estimate can be trusted (k > 0.7: no).

Used to choose between model structures fitted to the same table (:func:`compare`): the difference
in ``elpd_loo`` with its standard error from the per-period differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

K_MAX = 0.7


@dataclass(frozen=True)
class Loo:
    elpd: float
    se: float
    pointwise: np.ndarray  # [T]
    pareto_k: np.ndarray  # [T]

    @property
    def bad_k(self) -> int:
        return int(np.sum(self.pareto_k > K_MAX))


def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """Shape k and scale sigma of a generalized Pareto fitted to exceedances ``x`` (sorted, > 0), by
    the empirical Bayes estimate of Zhang and Stephens with Vehtari's weak prior on k."""
    n = len(x)
    m = 30 + int(np.sqrt(n))
    b = 1 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    b = b / (3.0 * x[int(n / 4 + 0.5) - 1]) + 1 / x[-1]
    k = np.mean(np.log1p(-b[:, None] * x[None, :]), axis=1)
    log_lik = n * (np.log(-b / k) - k - 1)
    w = 1 / np.sum(np.exp(log_lik[None, :] - log_lik[:, None]), axis=1)
    b_hat = float(np.sum(b * w))
    k_hat = float(np.mean(np.log1p(-b_hat * x)))
    sigma = -k_hat / b_hat
    k_hat = (n * k_hat + 10 * 0.5) / (n + 10)  # shrink toward 0.5
    return k_hat, sigma


def psis(log_ratios: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed log weights (normalised) of one period's draws, and the Pareto k."""
    s = len(log_ratios)
    lw = log_ratios - np.max(log_ratios)
    m = int(np.ceil(min(0.2 * s, 3 * np.sqrt(s))))
    order = np.argsort(lw)
    cutoff = lw[order[-m - 1]]
    tail = order[-m:]
    exceed = np.exp(lw[tail]) - np.exp(cutoff)
    k = np.inf
    if np.all(exceed > 0) and m >= 5:
        k, sigma = _gpd_fit(exceed)
        if np.isfinite(k):
            p = (np.arange(1, m + 1) - 0.5) / m
            q = sigma * np.expm1(-k * np.log1p(-p)) / k if abs(k) > 1e-12 else -sigma * np.log1p(-p)
            lw = lw.copy()
            lw[tail] = np.minimum(np.log(np.exp(cutoff) + q), 0.0)
    lw = lw - np.logaddexp.reduce(lw)
    return lw, float(k)


def loo(log_lik: np.ndarray) -> Loo:
    """PSIS-LOO from pointwise log likelihoods [draws, T]."""
    ll = np.asarray(log_lik, dtype=float)
    if ll.ndim != 2 or ll.shape[0] < 10:
        raise ValueError(f"`log_lik` must be [draws >= 10, periods], got {ll.shape}")
    point = np.empty(ll.shape[1])
    ks = np.empty(ll.shape[1])
    for t in range(ll.shape[1]):
        lw, ks[t] = psis(-ll[:, t])
        point[t] = np.logaddexp.reduce(lw + ll[:, t])
    return Loo(float(point.sum()), float(np.sqrt(len(point) * np.var(point))), point, ks)


def compare(a: Loo, b: Loo) -> tuple[float, float]:
    """``elpd(a) - elpd(b)`` and its standard error from the per-period differences."""
    diff = a.pointwise - b.pointwise
    return float(diff.sum()), float(np.sqrt(len(diff) * np.var(diff)))
