"""Reading a geo holdout: a scaled-control difference-in-differences fit for a handful of regions.

The held-out regions' daily revenue is modelled as a fixed share of the control regions' (their sum)
over a pre-period, ``treated_t = b * control_t + e_t`` with ``b`` the ratio of the sums: the shared
multiplicative seasonality, trend and weekly cycle move both sides alike. Over the test
window the fit gives the revenue the held-out regions would have made with the channel on; the lift is
that counterfactual minus what they made, summed over the window. That sum is INTERFACES section 2's
``incremental_revenue`` (revenue with the table's spend minus with the changed spend).

The standard error adds the residual noise of each test day and the uncertainty of ``b``, both
inflated for day-to-day autocorrelation of the residuals (``(1 + rho) / (1 - rho)``).

Checks before a reading is trusted:

* **pre-period fit**: the fit must explain the held-out regions (MAPE at most ``MAX_PRE_MAPE``, R^2 at
  least ``MIN_PRE_R2``) and they must not drift away from the controls (a linear drift of the
  residuals across the pre-period at most ``MAX_PRE_DRIFT``);
* **placebo in time**: the same estimator, fitted on the earlier pre-period and read on its last days
  (where nothing changed), must find no effect (``|z| <= PLACEBO_Z``);
* **placebo in space**: each control region, read against the other controls over the test window,
  must find no effect either (at most one of them may exceed ``PLACEBO_Z`` by chance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

MAX_PRE_MAPE = 0.10
MIN_PRE_R2 = 0.30
PLACEBO_Z = 2.58  # two-sided 1%
MIN_PRE_DAYS = 21
MAX_RHO = 0.9
MAX_PRE_DRIFT = 0.05


@dataclass(frozen=True)
class Panel:
    """Daily revenue per region: ``revenue[t, r]`` for ``days[t]`` and ``regions[r]`` (no gaps)."""

    days: tuple[date, ...]
    regions: tuple[str, ...]
    revenue: np.ndarray

    def __post_init__(self) -> None:
        if self.revenue.shape != (len(self.days), len(self.regions)):
            raise ValueError(
                f"revenue has shape {self.revenue.shape}, expected (days, regions) = "
                f"({len(self.days)}, {len(self.regions)})"
            )
        if not np.all(np.isfinite(self.revenue)):
            raise ValueError("the regional panel has missing or non-finite revenue; re-ingest those days")

    def index(self, day: date) -> int:
        return self.days.index(day)

    def split(self, treated: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(treated sum, control sum) per day."""
        unknown = [r for r in treated if r not in self.regions]
        if unknown:
            raise ValueError(f"regions {unknown} are not in the panel ({', '.join(self.regions)})")
        mask = np.array([r in treated for r in self.regions])
        if mask.all() or not mask.any():
            raise ValueError("a holdout needs at least one treated and one control region")
        return self.revenue[:, mask].sum(axis=1), self.revenue[:, ~mask].sum(axis=1)


@dataclass(frozen=True)
class ControlFit:
    """``treated ~ a + b * control`` over the pre-period (``a`` is 0 for the ratio fit)."""

    a: float
    b: float
    cov: np.ndarray  # 2x2 covariance of (a, b), autocorrelation-inflated
    sigma: float  # residual standard deviation per day
    rho: float  # lag-1 autocorrelation of the residuals, clipped to [0, MAX_RHO]
    r2: float
    mape: float
    n: int

    @property
    def inflation(self) -> float:
        return (1.0 + self.rho) / (1.0 - self.rho)

    def predict(self, control: np.ndarray) -> np.ndarray:
        return self.a + self.b * control

    def se_of_sum(self, days: int, control_sum: float) -> float:
        """Standard error of (counterfactual - actual) summed over ``days`` with that control total."""
        x = np.array([float(days), control_sum])
        var = days * self.sigma**2 * self.inflation + float(x @ self.cov @ x)
        return math.sqrt(max(var, 0.0))


def fit_control(treated: np.ndarray, control: np.ndarray) -> ControlFit:
    """The held-out regions as a share of the controls: ``b = sum(treated) / sum(control)``.

    A ratio of sums rather than a least-squares slope: the controls' own daily noise would bias a fitted
    slope toward zero (errors in the regressor), which turns any level change between the pre-period and
    the test (season, trend) into a false lift. Regions that share the market's multiplicative season,
    trend and weekly cycle are proportional, so no intercept is needed.
    """
    n = len(treated)
    if n < MIN_PRE_DAYS:
        raise ValueError(
            f"the pre-period has {n} days; at least {MIN_PRE_DAYS} are needed to fit the control"
        )
    total = float(control.sum())
    if total <= 0:
        raise ValueError("the control regions have no revenue in the pre-period")
    b = float(treated.sum()) / total
    resid = treated - b * control
    sigma2 = float(resid @ resid) / max(n - 1, 1)
    r = resid - resid.mean()
    denom = float(r @ r)
    rho = 0.0 if denom <= 0 else float(r[1:] @ r[:-1]) / denom
    rho = min(max(rho, 0.0), MAX_RHO)
    inflation = (1.0 + rho) / (1.0 - rho)
    spread = float(((treated - treated.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / spread if spread > 0 else 0.0
    mape = float(np.mean(np.abs(resid) / np.maximum(np.abs(treated), 1e-9)))
    var_b = n * sigma2 / total**2 * inflation
    return ControlFit(
        a=0.0,
        b=b,
        cov=np.array([[0.0, 0.0], [0.0, var_b]]),
        sigma=math.sqrt(sigma2),
        rho=rho,
        r2=r2,
        mape=mape,
        n=n,
    )


def pre_drift(fit: ControlFit, treated: np.ndarray, control: np.ndarray) -> float:
    """How far the held-out regions drift from the fit across the pre-period (relative, end to end)."""
    n = len(treated)
    rel = (treated - fit.predict(control)) / max(float(np.mean(treated)), 1e-9)
    t = np.arange(n) - (n - 1) / 2.0
    return float(t @ rel) / float(t @ t) * n


@dataclass(frozen=True)
class Estimate:
    """Lift over a window: counterfactual minus actual, summed, with its standard error."""

    total: float
    se: float
    days: int
    daily: tuple[float, ...] = ()

    @property
    def z(self) -> float:
        return self.total / self.se if self.se > 0 else 0.0


def estimate(fit: ControlFit, treated: np.ndarray, control: np.ndarray) -> Estimate:
    gap = fit.predict(control) - treated
    return Estimate(
        total=float(gap.sum()),
        se=fit.se_of_sum(len(gap), float(control.sum())),
        days=len(gap),
        daily=tuple(round(float(g), 2) for g in gap),
    )


@dataclass(frozen=True)
class LiftReading:
    """The result of one holdout, in INTERFACES section 2 terms, with the checks that back it."""

    treated: tuple[str, ...]
    start: date
    end: date
    incremental_revenue: float
    incremental_revenue_se: float
    treated_revenue: float  # what the held-out regions made over the window
    pre_days: int
    pre_r2: float
    pre_mape: float
    placebo_time: Estimate
    placebo_space: dict[str, float]  # control region -> z
    problems: tuple[str, ...] = field(default_factory=tuple)
    daily_effect: tuple[float, ...] = ()

    @property
    def trusted(self) -> bool:
        return not self.problems

    @property
    def relative_lift(self) -> float:
        counterfactual = self.treated_revenue + self.incremental_revenue
        return self.incremental_revenue / counterfactual if counterfactual > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "scaled-control difference-in-differences",
            "treated": list(self.treated),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "incremental_revenue": round(self.incremental_revenue, 2),
            "incremental_revenue_se": round(self.incremental_revenue_se, 2),
            "relative_lift": round(self.relative_lift, 4),
            "treated_revenue": round(self.treated_revenue, 2),
            "pre_days": self.pre_days,
            "pre_r2": round(self.pre_r2, 4),
            "pre_mape": round(self.pre_mape, 4),
            "placebo_time": {
                "estimate": round(self.placebo_time.total, 2),
                "se": round(self.placebo_time.se, 2),
                "z": round(self.placebo_time.z, 3),
                "days": self.placebo_time.days,
            },
            "placebo_space_z": {k: round(v, 3) for k, v in self.placebo_space.items()},
            "trusted": self.trusted,
            "problems": list(self.problems),
            "daily_effect": list(self.daily_effect),
        }


def read_holdout(
    panel: Panel,
    treated: Sequence[str],
    start: date,
    end: date,
    *,
    pre_days: int = 84,
    skip_before_start: int = 1,
) -> LiftReading:
    """Estimate the lift of a holdout of ``treated`` regions over ``start..end`` (both in the panel).

    The pre-period is the ``pre_days`` days ending ``skip_before_start`` days before ``start`` (the day
    the holdout was switched on is neither pre nor test).
    """
    s, e = panel.index(start), panel.index(end)
    if e < s:
        raise ValueError(f"the test window ends ({end}) before it starts ({start})")
    pre_end = s - skip_before_start
    pre_start = max(0, pre_end - pre_days)
    y, c = panel.split(treated)
    fit = fit_control(y[pre_start:pre_end], c[pre_start:pre_end])
    main = estimate(fit, y[s : e + 1], c[s : e + 1])
    problems: list[str] = []
    if fit.mape > MAX_PRE_MAPE:
        problems.append(f"pre-period fit is loose: MAPE {fit.mape:.1%} > {MAX_PRE_MAPE:.0%}")
    if fit.r2 < MIN_PRE_R2:
        problems.append(f"pre-period fit explains little: R^2 {fit.r2:.2f} < {MIN_PRE_R2:.2f}")
    drift = pre_drift(fit, y[pre_start:pre_end], c[pre_start:pre_end])
    if abs(drift) > MAX_PRE_DRIFT:
        problems.append(
            f"the held-out regions drift away from the controls before the test ({drift:+.1%} over "
            f"{pre_end - pre_start} days): the control would not track them"
        )

    # placebo in time: fit on the earlier pre-period, read its last days, where nothing changed
    n_pre = pre_end - pre_start
    fake = min(main.days, n_pre // 3)
    placebo = Estimate(0.0, 0.0, 0)
    if n_pre - fake >= MIN_PRE_DAYS and fake > 0:
        early = slice(pre_start, pre_end - fake)
        late = slice(pre_end - fake, pre_end)
        placebo = estimate(fit_control(y[early], c[early]), y[late], c[late])
        if abs(placebo.z) > PLACEBO_Z:
            problems.append(
                f"placebo in time finds an effect where there is none (z {placebo.z:.2f}): "
                "the control does not track the held-out regions"
            )
    else:
        problems.append(f"pre-period too short for a placebo test ({n_pre} days)")

    # placebo in space: each control region against the other controls, over the test window
    controls = [r for r in panel.regions if r not in treated]
    space: dict[str, float] = {}
    if len(controls) >= 2:
        keep = [panel.regions.index(r) for r in controls]
        sub = Panel(panel.days, tuple(controls), panel.revenue[:, keep])
        for region in controls:
            py, pc = sub.split([region])
            pfit = fit_control(py[pre_start:pre_end], pc[pre_start:pre_end])
            space[region] = estimate(pfit, py[s : e + 1], pc[s : e + 1]).z
        misses = [r for r, z in space.items() if abs(z) > PLACEBO_Z]
        if len(misses) > max(1, len(controls) // 10):
            problems.append(f"placebo in space finds effects in untouched regions: {', '.join(misses)}")
    return LiftReading(
        treated=tuple(treated),
        start=start,
        end=end,
        incremental_revenue=main.total,
        incremental_revenue_se=main.se,
        treated_revenue=float(y[s : e + 1].sum()),
        pre_days=n_pre,
        pre_r2=fit.r2,
        pre_mape=fit.mape,
        placebo_time=placebo,
        placebo_space=space,
        problems=tuple(problems),
        daily_effect=main.daily,
    )
