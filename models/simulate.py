"""Tables simulated from known media curves, for tests and benchmarks (seeded, pure NumPy).

The generating process mirrors the sandbox market (INTERFACES section 4): a multiplicative baseline
with trend and yearly (and weekly) seasonality, normalised geometric adstock, Hill saturation with
``scale = roi_at_budget x budget / hill(budget)``, multiplicative noise (``noise`` is the relative sd
of daily revenue, as in the sandbox, so a weekly table carries ``noise / sqrt(7)``). :class:`Truth` carries the
true ROI and mROAS over the table, computed with INTERFACES section 3's definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.curves import geometric_adstock_np, saturation_np
from models.data import MMMData


@dataclass(frozen=True)
class Truth:
    decay: np.ndarray
    half: np.ndarray
    shape: np.ndarray
    scale: np.ndarray
    roi: np.ndarray  # over the table
    mroas: np.ndarray  # over the table, x1.01 definition
    contribution: np.ndarray  # [C] summed over the table
    media: np.ndarray  # [T, C]
    saturation: str = "hill"


def media_np(
    spend: np.ndarray,
    decay: np.ndarray,
    half: np.ndarray,
    shape: np.ndarray,
    scale: np.ndarray,
    saturation: str = "hill",
) -> np.ndarray:
    return scale * saturation_np(saturation, geometric_adstock_np(spend, decay), half, shape)


def _spend_history(
    rng: np.random.Generator, budget: np.ndarray, periods: int, step: int, hv: float
) -> np.ndarray:
    """Daily budgets built like the sandbox market's history (INTERFACES section 4), summed to the table's
    periods: an AR(1) weekly drift, a yearly push, a few flights at a clearly higher level, a few
    multi-day pauses, and +-5% daily delivery noise."""
    days_total = periods * step
    days = np.arange(days_total)
    weeks = days_total // 7 + 2
    out = np.zeros((days_total, len(budget)))
    for c, b in enumerate(budget):
        shocks = rng.standard_normal(weeks)
        walk = np.zeros(weeks)
        walk[0] = shocks[0]
        for w in range(1, weeks):
            walk[w] = 0.8 * walk[w - 1] + np.sqrt(1 - 0.64) * shocks[w]
        drift = 0.6 * hv * walk[days // 7]
        push = (
            hv
            * rng.uniform(0.3, 0.8)
            * np.sin(2 * np.pi * (days // 7) * 7 / 365.25 + rng.uniform(0, 2 * np.pi))
        )
        level = b * np.exp(drift + push)
        n_flights = int(rng.integers(1, 4)) * max(1, days_total // 365)
        for _ in range(n_flights):
            length = int(rng.integers(14, 36))
            begin = int(rng.integers(0, max(1, days_total - length)))
            level[begin : begin + length] *= np.exp(hv * rng.uniform(0.8, 1.6))
        for _ in range(int(rng.integers(0, 3)) * max(1, days_total // 365)):
            length = int(rng.integers(3, 13))
            begin = int(rng.integers(0, max(1, days_total - length)))
            level[begin : begin + length] = 0.0
        out[:, c] = level * np.exp(rng.normal(0, 0.05, days_total))
    return out.reshape(periods, step, len(budget)).sum(axis=1)


def simulate(
    *,
    periods: int = 104,
    channels: int = 4,
    frequency: str = "week",
    seed: int = 0,
    noise: float = 0.04,
    revenue_per_period: float = 100_000.0,
    media_share: float = 0.25,
    variation: float = 0.3,
    trend_per_year: float = 0.05,
    yearly_amplitude: float = 0.1,
    decay: np.ndarray | None = None,
    half_ratio: np.ndarray | None = None,
    shape: np.ndarray | None = None,
    roi_at_budget: np.ndarray | None = None,
    saturation: str = "hill",
) -> tuple[MMMData, Truth]:
    """A table and its truth. Budgets drift, push, fly and pause as the sandbox market's history does.

    ``saturation="logistic"`` uses the logistic curve instead of Hill (``shape`` is then unused)."""
    rng = np.random.default_rng(seed)
    c = channels
    step = 7 if frequency == "week" else 1
    dates = np.datetime64("2023-01-02") + np.arange(periods) * np.timedelta64(step, "D")
    decay = rng.uniform(0.1, 0.6, c) if decay is None else np.asarray(decay, float)
    half_ratio = rng.uniform(0.7, 2.5, c) if half_ratio is None else np.asarray(half_ratio, float)
    shape = rng.uniform(1.0, 1.8, c) if shape is None else np.asarray(shape, float)
    roi_at_budget = rng.uniform(0.8, 3.0, c) if roi_at_budget is None else np.asarray(roi_at_budget, float)
    share = rng.dirichlet(np.full(c, 3.0))
    budget = media_share * revenue_per_period * share / roi_at_budget  # per period
    spend = np.round(_spend_history(rng, budget / step, periods, step, variation), 2)
    half = half_ratio * budget
    scale = roi_at_budget * budget / saturation_np(saturation, budget, half, shape)
    media = media_np(spend, decay, half, shape, scale, saturation)
    days = np.arange(periods) * step
    baseline = (
        revenue_per_period
        * (1 - media_share)
        * (1 + trend_per_year * days / 365.25)
        * (1 + yearly_amplitude * np.sin(2 * np.pi * days / 365.25))
    )
    if frequency == "day":
        weekly = np.array([1.0, 0.95, 0.95, 1.0, 1.05, 1.1, 0.95])
        baseline = baseline * weekly[(dates.astype("datetime64[D]").astype(np.int64) + 3) % 7]
    mean = baseline + media.sum(1)
    # ``noise`` is the relative sd of *daily* revenue, as the sandbox scenario's ``noise``: independent
    # daily draws summed over a week leave noise / sqrt(7) on the week
    y = mean * (1 + noise / np.sqrt(step) * rng.standard_normal(periods))
    contrib = media.sum(0)
    bumped = media_np(spend * 1.01, decay, half, shape, scale, saturation).sum(0)
    truth = Truth(
        decay=decay,
        half=half,
        shape=shape,
        scale=scale,
        roi=contrib / spend.sum(0),
        mroas=(bumped - contrib) / (0.01 * spend.sum(0)),
        contribution=contrib,
        media=media,
        saturation=saturation,
    )
    data = MMMData(
        dates=dates,
        y=y,
        spend=spend,
        controls=np.zeros((periods, 0)),
        channels=tuple(f"ch{j}" for j in range(c)),
        frequency=frequency,
        source=f"<simulated seed={seed}>",
    )
    return data, truth
