"""The market's truth, for scoring only: true curves, true ROI and mROAS, the best allocation.

Nothing that decides budgets may import this module (the agents never do; the demo's scoring module
is the one exception). Everything here is computed from the scenario alone, with no simulation noise:
steady state means a constant daily budget delivered exactly, long enough for the adstock to settle
(``a = spend``), no learning phase, and the shocks that have started by ``day`` (default: the loop's
first day). With every geo factor at 1, the regional split adds up to exactly these national curves.

:func:`counterfactual_revenue` is the exception that does simulate: it replays the whole market from
the scenario's start with other budgets and the same noise draws, for the demo's static and oracle
totals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta

import numpy as np

from connectors.sandbox.market import Market
from connectors.sandbox.scenario import ChannelSpec, Scenario, hill

__all__ = [
    "GeoFactors",
    "best_allocation",
    "counterfactual_market",
    "counterfactual_revenue",
    "response_curve",
    "steady_state_contribution",
    "total_contribution",
    "true_mroas",
    "true_roi",
]

_GRID = 1000  # steps of the exact dynamic programme over the total budget
_POLISH_LEVELS = 40  # halvings of the exchange step in the local polish


def _curve(scenario: Scenario, channel: str, day: date | None) -> tuple[ChannelSpec, float]:
    spec = scenario.channel(channel)
    return spec, spec.scale * scenario.shock_factor(channel, day or scenario.first_loop_day)


def _check_budget(channel: str, daily_budget: float) -> float:
    value = float(daily_budget)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"daily budget for `{channel}` must be a finite amount >= 0, got {daily_budget!r}")
    return value


def steady_state_contribution(
    scenario: Scenario, channel: str, daily_budget: float, *, day: date | None = None
) -> float:
    """Media revenue per day at a constant ``daily_budget`` (shocks as of ``day``; no learning)."""
    spec, scale = _curve(scenario, channel, day)
    x = _check_budget(channel, daily_budget)
    return scale * float(hill(x, spec.saturation.half, spec.saturation.shape))


def response_curve(
    scenario: Scenario, channel: str, grid: Sequence[float], *, day: date | None = None
) -> list[float]:
    """:func:`steady_state_contribution` at each budget of ``grid``."""
    return [steady_state_contribution(scenario, channel, b, day=day) for b in grid]


def true_mroas(scenario: Scenario, channel: str, daily_budget: float, *, day: date | None = None) -> float:
    """The derivative of the steady-state contribution at ``daily_budget`` (revenue per extra unit)."""
    spec, scale = _curve(scenario, channel, day)
    x = _check_budget(channel, daily_budget)
    return scale * _hill_slope(x, spec.saturation.half, spec.saturation.shape)


def true_roi(scenario: Scenario, channel: str, daily_budget: float, *, day: date | None = None) -> float:
    """Steady-state contribution / budget; at a budget of 0, its limit (which equals the mROAS there)."""
    x = _check_budget(channel, daily_budget)
    if x == 0:
        return true_mroas(scenario, channel, 0.0, day=day)
    return steady_state_contribution(scenario, channel, x, day=day) / x


def total_contribution(
    scenario: Scenario, allocation: Mapping[str, float], *, day: date | None = None
) -> float:
    """Sum of the steady-state contributions of an allocation (channels left out spend nothing)."""
    return sum(steady_state_contribution(scenario, c, b, day=day) for c, b in allocation.items())


def _hill_slope(x: float, half: float, shape: float) -> float:
    if x == 0:
        if shape < 1:
            return math.inf
        return 1.0 / half if shape == 1 else 0.0
    xs, hs = math.pow(x, shape), math.pow(half, shape)
    return shape * math.pow(x, shape - 1) * hs / (xs + hs) ** 2


# ------------------------------------------------------------------------------------------ allocation


def best_allocation(
    scenario: Scenario,
    total_daily: float,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    *,
    day: date | None = None,
    over: tuple[date, date] | None = None,
) -> dict[str, float]:
    """The fixed daily allocation of ``total_daily`` that maximises the true steady-state revenue.

    The curves are those of ``day``; with ``over`` (first and last day, inclusive), each channel's
    curve is scaled by its shock factor averaged over those days instead, so the allocation is the
    best one to hold through the whole span (media add to the baseline, so a span's steady-state
    media revenue is the curve at the allocation times the sum of the daily factors).

    Every channel of the scenario gets a share within its ``bounds`` (``(low, high)`` per channel;
    a channel left out may get anything from 0 to the total), and the shares add up to the total.
    Hill curves with ``shape > 1`` are convex near 0, so a greedy on marginal returns can stall there;
    this solves it globally on a grid by dynamic programming, then polishes locally by exchanging ever
    smaller amounts between channels while revenue improves. Amounts are rounded to the cent, with the
    rounding put where it keeps the total exact.
    """
    names = scenario.channel_names
    total = float(total_daily)
    if not math.isfinite(total) or total < 0:
        raise ValueError(f"total daily budget must be a finite amount >= 0, got {total_daily!r}")
    lo, hi = _bounds(names, total, bounds or {})
    if lo.sum() > total + 1e-9:
        raise ValueError(
            f"the lower bounds add up to {lo.sum():.2f}, more than the total {total:.2f}: "
            "lower them or raise the total"
        )
    if hi.sum() < total - 1e-9:
        raise ValueError(
            f"the upper bounds add up to {hi.sum():.2f}, less than the total {total:.2f}: "
            "raise them or lower the total"
        )
    value = _Curves(scenario, names, day, over)
    extra = total - lo.sum()
    x = lo.copy() if extra <= 0 else _grid_optimum(value, lo, hi, extra)
    x = _polish(value, x, lo, hi, total)
    return dict(zip(names, _round_to_cents(x, lo, hi, total), strict=True))


def _bounds(
    names: list[str], total: float, bounds: Mapping[str, tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    unknown = sorted(set(bounds) - set(names))
    if unknown:
        raise ValueError(f"bounds given for unknown channels {unknown}; the channels are {names}")
    lo = np.zeros(len(names))
    hi = np.full(len(names), total)
    for i, name in enumerate(names):
        if name in bounds:
            low, high = (float(v) for v in bounds[name])
            if not (0 <= low <= high) or math.isnan(high):
                raise ValueError(f"bounds of `{name}` must satisfy 0 <= low <= high, got ({low}, {high})")
            lo[i], hi[i] = low, min(high, total)
    return lo, hi


class _Curves:
    """The channels' steady-state curves, evaluated together (``value(x)[c]`` for channel c)."""

    def __init__(
        self, scenario: Scenario, names: list[str], day: date | None, over: tuple[date, date] | None = None
    ) -> None:
        specs = [scenario.channel(n) for n in names]
        if over is None:
            self.scale = np.array([_curve(scenario, n, day)[1] for n in names])
        else:
            first, last = over
            if last < first:
                raise ValueError(f"`over` ends ({last}) before it starts ({first})")
            days = [first + timedelta(days=k) for k in range((last - first).days + 1)]
            self.scale = np.array(
                [s.scale * float(np.mean([scenario.shock_factor(s.name, d) for d in days])) for s in specs]
            )
        self.half = np.array([s.saturation.half for s in specs])
        self.shape = np.array([s.saturation.shape for s in specs])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.scale * hill(x, self.half, self.shape))

    def one(self, c: int, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.scale[c] * hill(x, self.half[c], self.shape[c]))


def _grid_optimum(value: _Curves, lo: np.ndarray, hi: np.ndarray, extra: float) -> np.ndarray:
    """Exact optimum over the grid ``lo + k x extra / _GRID`` (dynamic programme over channels)."""
    n = len(lo)
    step = extra / _GRID
    ks = np.arange(_GRID + 1)
    cap = np.minimum(np.ceil((hi - lo) / step - 1e-9), _GRID).astype(int)
    table = np.empty((n, _GRID + 1))
    for c in range(n):
        table[c] = value.one(c, np.minimum(lo[c] + ks * step, hi[c]))
        table[c, ks > cap[c]] = -np.inf
    best = table[0].copy()
    choice = np.zeros((n, _GRID + 1), dtype=int)
    choice[0] = ks
    j, k = np.meshgrid(ks, ks, indexing="ij")
    valid = k <= j
    prev_index = np.where(valid, j - k, 0)
    for c in range(1, n):
        candidates = np.where(valid, best[prev_index] + table[c][k], -np.inf)
        choice[c] = np.argmax(candidates, axis=1)
        best = candidates[ks, choice[c]]
    x = lo.copy()
    remaining = _GRID
    for c in range(n - 1, -1, -1):
        k_c = int(choice[c, remaining])
        x[c] = min(lo[c] + k_c * step, hi[c])
        remaining -= k_c
    return x


def _polish(value: _Curves, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float) -> np.ndarray:
    """Move ever smaller amounts from the channel that loses least to the one that gains most."""
    x = np.clip(x, lo, hi)
    gap = total - x.sum()  # the grid's rounding at an upper bound: hand it to channels with room
    for i in np.argsort(hi - x)[::-1]:
        move = float(np.clip(gap, lo[i] - x[i], hi[i] - x[i]))
        x[i] += move
        gap -= move
    step = max(total / _GRID, 1e-6)
    for _ in range(_POLISH_LEVELS):
        for _ in range(10 * len(x)):
            now = value(x)
            up = np.where(x + step <= hi, value(np.minimum(x + step, hi)) - now, -np.inf)
            down = np.where(x - step >= lo, now - value(np.maximum(x - step, lo)), np.inf)
            i, j = int(np.argmin(down)), int(np.argmax(up))
            if i == j or up[j] - down[i] <= 1e-12 * max(1.0, float(now.sum())):
                break
            x[i] -= step
            x[j] += step
        step /= 2
    return x


def _round_to_cents(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float) -> list[float]:
    """Cents per channel, within the bounds, adding up to the total's cents exactly."""
    lo_c, hi_c = np.ceil(lo * 100.0 - 1e-6), np.floor(hi * 100.0 + 1e-6)
    cents = np.clip(np.round(x * 100.0), lo_c, hi_c)
    short = round(total * 100.0) - int(cents.sum())
    residual = x * 100.0 - cents  # how far each channel was rounded down
    for i in np.argsort(-residual if short > 0 else residual):
        if short == 0:
            break
        move = min(short, hi_c[i] - cents[i]) if short > 0 else max(short, lo_c[i] - cents[i])
        cents[i] += move
        short -= int(move)
    return [float(c) / 100.0 + 0.0 for c in cents]  # + 0.0: never a negative zero


# ------------------------------------------------------------------------------------- counterfactuals


GeoFactors = Mapping[tuple[str, str], float]  # (channel, region) -> factor, as Market.set_geo_factor


def counterfactual_market(
    scenario: Scenario,
    budgets_by_day: Callable[[date], Mapping[str, float]],
    end: date,
    *,
    geo_by_day: Callable[[date], GeoFactors] | None = None,
) -> Market:
    """A fresh market simulated from the scenario's start through ``end`` (inclusive).

    From the loop's first day on, each day's budgets are ``budgets_by_day(day)`` (channels it leaves
    out keep their budget) and, when given, its geo factors ``geo_by_day(day)`` (pairs it leaves out
    keep theirs); the noise draws are the scenario's, so only these inputs differ from the loop's run.
    """
    market = Market(scenario)
    market.advance_to(min(scenario.first_loop_day, end + timedelta(days=1)))
    day = scenario.first_loop_day
    while day <= end:
        for channel, budget in budgets_by_day(day).items():
            if round(float(budget), 2) != market.budget(channel):
                market.set_budget(channel, budget)
        if geo_by_day is not None:
            for (channel, region), factor in geo_by_day(day).items():
                market.set_geo_factor(channel, region, factor)
        day += timedelta(days=1)
        market.advance_to(day)
    return market


def counterfactual_revenue(
    scenario: Scenario,
    budgets_by_day: Callable[[date], Mapping[str, float]],
    start: date,
    end: date,
    *,
    geo_by_day: Callable[[date], GeoFactors] | None = None,
) -> float:
    """Total revenue from ``start`` to ``end`` inclusive, re-simulated with other budgets, same noise.

    Static run: ``lambda day: {}`` (the starting budgets never change). Oracle run:
    ``lambda day: best_allocation(scenario, total, bounds)``. A geo experiment's true effect: the same
    budgets with and without its ``geo_by_day`` holdout.
    """
    if end < start:
        raise ValueError(f"`end` ({end}) is before `start` ({start})")
    if start < scenario.start:
        raise ValueError(f"`start` ({start}) is before the scenario's start ({scenario.start})")
    market = counterfactual_market(scenario, budgets_by_day, end, geo_by_day=geo_by_day)
    return round(sum(o.revenue for o in market.outcomes(start, end)), 2)
