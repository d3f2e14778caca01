"""Convergence and fit diagnostics: r-hat, bulk/tail ESS, divergences, BFMI, predictive coverage, PSIS-LOO.

A fit with r-hat above ``RHAT_MAX`` or divergences above ``DIVERGENCE_MAX`` of its transitions is
``healthy=False`` with the reasons spelt out; callers must not use such a fit silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from scipy.special import ndtri
from scipy.stats import rankdata

from models.loo import Loo

RHAT_MAX = 1.05
DIVERGENCE_MAX = 0.01
BFMI_MIN = 0.3
COVERAGE_BAND = (0.05, 0.95)


@dataclass(frozen=True)
class Diagnostics:
    method: str
    chains: int
    draws: int
    r_hat_max: float | None
    ess_bulk_min: float | None
    ess_tail_min: float | None
    divergences: int
    divergence_rate: float
    bfmi_min: float | None
    ppc_coverage_90: float | None
    prior_ppc_coverage_90: float | None
    fit_seconds: float
    worst_parameter: str | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)
    # PSIS-LOO expected log predictive density of a left-out period, summed over periods (higher is
    # better), its standard error, and how many periods have an unreliable estimate (Pareto k > 0.7):
    # compares model structures (`--baseline`, `--adstock`) fitted to the same table
    elpd_loo: float | None = None
    elpd_loo_se: float | None = None
    loo_pareto_k_bad: int | None = None

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        d["healthy"] = self.healthy
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnostics:
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        kw["reasons"] = tuple(kw.get("reasons", ()))
        return cls(**kw)


def _split_chains(x: np.ndarray) -> np.ndarray:
    """Each chain's first and second halves as two chains ([chains, draws] -> [2 chains, draws // 2];
    the middle draw of an odd count is left out): a chain that drifts then shows as two that
    disagree."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def _rank_normalized(x: np.ndarray) -> np.ndarray:
    """The draws' ranks over all chains (ties averaged) through the normal quantile function,
    ``Phi^-1((r - 3/8) / (S + 1/4))``: finite moments whatever the posterior's tails."""
    ranks = rankdata(x, method="average").reshape(x.shape)
    return np.asarray(ndtri((ranks - 0.375) / (x.size + 0.25)))


def _bulk_ess(x: np.ndarray) -> float:
    """Bulk effective sample size (Vehtari, Gelman, Simpson, Carpenter and Buerkner 2021): the ESS
    of the rank-normalized split chains, as Stan, ArviZ and PyMC report it."""
    return float(effective_sample_size(_rank_normalized(_split_chains(x))))


def _tail_ess(x: np.ndarray) -> float:
    """Tail effective sample size: the ESS of the split chains' indicators of the 5% and 95%
    quantiles, the smaller one."""
    q05, q95 = np.quantile(x, [0.05, 0.95])
    split = _split_chains(x)
    vals = []
    for ind in ((split <= q05).astype(float), (split <= q95).astype(float)):
        if np.ptp(ind) == 0:
            continue
        vals.append(float(effective_sample_size(ind)))
    return min(vals) if vals else float(x.size)


def chain_stats(
    grouped: dict[str, np.ndarray],
) -> tuple[float | None, float | None, float | None, str | None]:
    """(r-hat max, bulk ESS min, tail ESS min, worst parameter) over arrays shaped [chains, draws, ...]."""
    rhat_max: float | None = None
    ess_min: float | None = None
    tail_min: float | None = None
    worst: str | None = None
    for name, arr in grouped.items():
        a = np.asarray(arr, dtype=float)
        if a.ndim < 2 or a.shape[1] < 4:
            continue
        flat = a.reshape(a.shape[0], a.shape[1], -1)
        for k in range(flat.shape[2]):
            x = flat[:, :, k]
            if np.ptp(x) == 0:
                continue
            label = name if flat.shape[2] == 1 else f"{name}[{k}]"
            # split r-hat: each chain's halves compared too, so one chain that drifts is caught
            r = float(split_gelman_rubin(x))
            if np.isfinite(r) and (rhat_max is None or r > rhat_max):
                rhat_max, worst = r, label
            e = _bulk_ess(x)
            ess_min = e if ess_min is None else min(ess_min, e)
            te = _tail_ess(x)
            tail_min = te if tail_min is None else min(tail_min, te)
    return rhat_max, ess_min, tail_min, worst


def bfmi(energy: np.ndarray) -> float | None:
    """Bayesian fraction of missing information per chain, the smallest ([chains, draws] energies)."""
    e = np.asarray(energy, dtype=float)
    if e.ndim != 2 or e.shape[1] < 3:
        return None
    num = np.sum(np.diff(e, axis=1) ** 2, axis=1) / (e.shape[1] - 1)
    den = np.var(e, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = np.where(den > 0, num / den, np.nan)
    return float(np.nanmin(vals)) if np.any(np.isfinite(vals)) else None


def coverage(y: np.ndarray, predictive: np.ndarray, band: tuple[float, float] = COVERAGE_BAND) -> float:
    """Share of observed ``y`` [T] inside the predictive band of ``predictive`` [draws, T]."""
    lo, hi = np.quantile(predictive, band, axis=0)
    return float(np.mean((y >= lo) & (y <= hi)))


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    mask = a != 0
    return float(np.mean(np.abs((a[mask] - p[mask]) / a[mask]))) if mask.any() else float("nan")


def judge(
    *,
    method: str,
    chains: int,
    draws: int,
    r_hat_max: float | None,
    ess_bulk_min: float | None,
    ess_tail_min: float | None,
    divergences: int,
    transitions: int,
    bfmi_min: float | None,
    ppc_coverage_90: float | None,
    prior_ppc_coverage_90: float | None,
    fit_seconds: float,
    worst_parameter: str | None,
    svi_converged: bool | None = None,
    loo: Loo | None = None,
) -> Diagnostics:
    """Collect the figures and the reasons (if any) why the fit must not be used."""
    reasons: list[str] = []
    rate = divergences / transitions if transitions else 0.0
    if r_hat_max is not None and r_hat_max > RHAT_MAX:
        reasons.append(
            f"r-hat {r_hat_max:.3f} > {RHAT_MAX} (worst: {worst_parameter}): chains disagree; "
            "run longer (--warmup/--samples), tighten priors, or check the data"
        )
    if rate > DIVERGENCE_MAX:
        reasons.append(
            f"{divergences} divergent transitions ({rate:.1%} > {DIVERGENCE_MAX:.0%}): "
            "the posterior has regions "
            "the sampler cannot explore; tighten priors or raise target acceptance"
        )
    if bfmi_min is not None and bfmi_min < BFMI_MIN:
        reasons.append(f"energy BFMI {bfmi_min:.2f} < {BFMI_MIN}: the sampler explores the posterior poorly")
    if svi_converged is False:
        reasons.append("SVI loss did not settle: raise the number of steps or use NUTS")
    if ppc_coverage_90 is not None and ppc_coverage_90 < 0.6:
        reasons.append(
            f"only {ppc_coverage_90:.0%} of observed periods lie in the 90% posterior predictive band: "
            "the model misses structure in the data (controls? events?)"
        )
    return Diagnostics(
        method=method,
        chains=chains,
        draws=draws,
        r_hat_max=r_hat_max,
        ess_bulk_min=ess_bulk_min,
        ess_tail_min=ess_tail_min,
        divergences=int(divergences),
        divergence_rate=rate,
        bfmi_min=bfmi_min,
        ppc_coverage_90=ppc_coverage_90,
        prior_ppc_coverage_90=prior_ppc_coverage_90,
        fit_seconds=fit_seconds,
        worst_parameter=worst_parameter,
        reasons=tuple(reasons),
        elpd_loo=None if loo is None else round(loo.elpd, 3),
        elpd_loo_se=None if loo is None else round(loo.se, 3),
        loo_pareto_k_bad=None if loo is None else loo.bad_k,
    )
