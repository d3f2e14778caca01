"""Planning a geo holdout: which channel, which regions, how long.

1. **Channel**: the one whose ROI the promoted model knows least, in money: the width of its 90% ROI
   interval times its daily spend (revenue at stake per day). Only channels whose platform has geo
   targeting, with spend, can be held out.
2. **Regions**: every set of regions (up to ``MAX_SET`` of them, controls left over) whose share of the
   channel's spend is within ``[LOW_SHARE, min(HIGH_SHARE, policy.experiments.max_holdout_share)]``,
   and whose withheld spend fits the policy's ``exploration_share`` of the daily budget: tests spend
   the exploration budget first.
3. **Power**: for each set, the scaled-control fit of :mod:`.analysis` over the recent pre-period gives
   the standard error of the lift over ``d`` days; the minimum detectable effect at 5% two-sided and
   80% power is ``2.8 * se``. A set qualifies when that is at most ``min_detectable_effect`` of the
   held-out regions' revenue. ``d`` starts at ``policy.experiments.days`` and grows a week at a time up
   to ``MAX_DAYS_FACTOR`` times it. The model's own prediction of the lift (its curve at the channel's
   spend minus at the spend without the held-out share, per posterior draw) gives the power against
   what the model believes, reported with the design.
4. **Window**: switched on today, read from tomorrow for ``d`` days, restored the day after; the whole
   span must be clear of the policy's freeze windows for that channel.

Everything here is pure: the caller reads the database and the platforms and passes arrays in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from scipy.stats import norm

from agents.experiments.analysis import ControlFit, Panel, fit_control
from guardrails.policy import Policy
from models.curves import ResponseCurves

LOW_SHARE = 0.05
HIGH_SHARE = 0.10
MAX_SET = 4
MAX_DAYS_FACTOR = 4
PRE_DAYS = 84
RECENT_DAYS = 28
Z_ALPHA = float(norm.ppf(0.975))
Z_POWER = float(norm.ppf(0.80))


@dataclass(frozen=True)
class DesignInputs:
    today: date
    roi: Mapping[str, Mapping[str, float]]  # channel -> {"mean", "p05", "p95"} (the model's summary)
    curves: ResponseCurves  # per day
    daily_spend: Mapping[str, float]  # channel -> current daily budget
    region_share: Mapping[str, Mapping[str, float]]  # channel -> region -> share of its spend
    panel: Panel  # regional revenue up to yesterday
    testable: Mapping[str, str]  # channel -> platform, for platforms with geo targeting
    model_version_id: int | None = None


@dataclass(frozen=True)
class Design:
    channel: str
    platform: str
    regions: tuple[str, ...]
    share: float  # of the channel's spend
    days: int
    apply_on: date
    start: date
    end: date
    restore_on: date
    holdout_spend_per_day: float
    predicted_lift_mean: float  # over the window, the model's belief
    predicted_lift_p05: float
    predicted_lift_p95: float
    se: float
    mde_abs: float
    mde_rel: float
    power: float  # against the model's predicted lift
    roi: Mapping[str, float]
    model_version_id: int | None
    considered: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "platform": self.platform,
            "regions": list(self.regions),
            "share": round(self.share, 4),
            "days": self.days,
            "apply_on": self.apply_on.isoformat(),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "restore_on": self.restore_on.isoformat(),
            "holdout_spend_per_day": round(self.holdout_spend_per_day, 2),
            "predicted_lift": {
                "mean": round(self.predicted_lift_mean, 2),
                "p05": round(self.predicted_lift_p05, 2),
                "p95": round(self.predicted_lift_p95, 2),
            },
            "se": round(self.se, 2),
            "mde_abs": round(self.mde_abs, 2),
            "mde_rel": round(self.mde_rel, 4),
            "power": round(self.power, 4),
            "roi": dict(self.roi),
            "model_version_id": self.model_version_id,
            "considered": list(self.considered),
        }


@dataclass(frozen=True)
class NoDesign:
    reason: str
    considered: tuple[dict[str, Any], ...] = ()


def uncertainty_score(roi: Mapping[str, float], daily_spend: float) -> float:
    """Revenue at stake per day: the 90% ROI interval's width times the spend."""
    return max(0.0, float(roi["p95"]) - float(roi["p05"])) * max(daily_spend, 0.0)


def share_band(policy: Policy) -> tuple[float, float]:
    high = min(HIGH_SHARE, policy.experiments.max_holdout_share)
    return min(LOW_SHARE, high / 2.0), high


def holdout_sets(shares: Mapping[str, float], low: float, high: float) -> list[tuple[tuple[str, ...], float]]:
    """Region sets (leaving at least one control) whose share is within ``[low, high]``, smallest first."""
    regions = sorted(shares)
    out: list[tuple[tuple[str, ...], float]] = []
    for k in range(1, min(MAX_SET, len(regions) - 1) + 1):
        for combo in itertools.combinations(regions, k):
            share = sum(shares[r] for r in combo)
            if low - 1e-12 <= share <= high + 1e-12:
                out.append((combo, share))
    return out


def freeze_conflict(policy: Policy, channel: str, first: date, last: date) -> str | None:
    """The freeze window (if any) touching ``first..last`` (whole days, UTC) for ``channel``."""
    lo = datetime.combine(first, time(0), tzinfo=UTC)
    hi = datetime.combine(last + timedelta(days=1), time(0), tzinfo=UTC)
    for start, end, window in policy.freeze_intervals():
        if window.channels is not None and channel not in window.channels:
            continue
        if start < hi and lo < end:
            why = f" ({window.reason})" if window.reason else ""
            return f"freeze window {window.start.isoformat()}..{window.end.isoformat()}{why}"
    return None


def predicted_lift_per_day(
    curves: ResponseCurves, daily_spend: Mapping[str, float], channel: str, share: float
) -> np.ndarray:
    """Per posterior draw: the revenue per day the held-out regions' ``share`` of the channel brings.

    The channel goes dark there, so the test removes that share of the channel's whole steady-state
    contribution at today's spend (regions being scaled copies of the national curve), not the
    marginal return of a national cut of the same size.
    """
    budgets = np.array([float(daily_spend.get(c, 0.0)) for c in curves.channels])
    i = curves.channels.index(channel)
    return np.asarray(share * curves.revenue(budgets)[:, i])


def _power(
    fit: ControlFit, panel_y: np.ndarray, panel_c: np.ndarray, days: int, lift: np.ndarray
) -> tuple[float, float, float, float]:
    """(se, mde_abs, mde_rel, power) of a ``days``-day test."""
    treated = float(panel_y[-RECENT_DAYS:].mean()) * days
    control = float(panel_c[-RECENT_DAYS:].mean()) * days
    se = fit.se_of_sum(days, control)
    mde = (Z_ALPHA + Z_POWER) * se
    expected = float(lift.mean()) * days
    power = float(norm.cdf(expected / se - Z_ALPHA)) if se > 0 else 1.0
    return se, mde, mde / treated if treated > 0 else math.inf, power


def plan_experiment(inputs: DesignInputs, policy: Policy) -> Design | NoDesign:
    """The most valuable holdout the policy allows today, or why there is none."""
    if policy.kill_switch:
        return NoDesign("kill switch is on: no experiments")
    if policy.exploration_share <= 0:
        return NoDesign("the policy reserves no exploration budget (exploration_share is 0)")
    if len(inputs.panel.regions) < 2:
        return NoDesign("one region only: a geo holdout needs regions to compare")
    total_spend = sum(max(v, 0.0) for v in inputs.daily_spend.values())
    budget_for_tests = policy.exploration_share * total_spend
    low, high = share_band(policy)
    ranked = sorted(
        (
            (uncertainty_score(inputs.roi[ch], inputs.daily_spend.get(ch, 0.0)), ch)
            for ch in inputs.testable
            if ch in inputs.roi and ch in inputs.curves.channels and inputs.daily_spend.get(ch, 0.0) > 0
        ),
        reverse=True,
    )
    if not ranked:
        return NoDesign(
            "no channel can be held out by region (no geo targeting, no spend, or not in the model)"
        )
    pre = inputs.panel.revenue[-PRE_DAYS:]
    panel = Panel(inputs.panel.days[-PRE_DAYS:], inputs.panel.regions, pre)
    apply_on = inputs.today
    considered: list[dict[str, Any]] = []
    for score, channel in ranked:
        note: dict[str, Any] = {"channel": channel, "score": round(score, 2)}
        considered.append(note)
        shares = {r: float(inputs.region_share.get(channel, {}).get(r, 0.0)) for r in panel.regions}
        spend = float(inputs.daily_spend[channel])
        sets = [
            (regions, share)
            for regions, share in holdout_sets(shares, low, high)
            if share * spend <= budget_for_tests + 1e-9
        ]
        if not sets:
            note["skipped"] = (
                f"no region set holds out {low:.0%}..{high:.0%} of its spend within the exploration budget "
                f"({budget_for_tests:.2f}/day)"
            )
            continue
        best: tuple[tuple[int, float], Design] | None = None
        for regions, share in sets:
            y, c = panel.split(regions)
            try:
                fit = fit_control(y, c)
            except (ValueError, np.linalg.LinAlgError) as exc:
                note.setdefault("unfit", []).append(f"{'+'.join(regions)}: {exc}")
                continue
            lift = predicted_lift_per_day(inputs.curves, inputs.daily_spend, channel, share)
            for days in range(policy.experiments.days, MAX_DAYS_FACTOR * policy.experiments.days + 1, 7):
                se, mde, mde_rel, power = _power(fit, y, c, days, lift)
                if mde_rel <= policy.experiments.min_detectable_effect:
                    break
            else:
                continue
            start = apply_on + timedelta(days=1)
            end = start + timedelta(days=days - 1)
            design = Design(
                channel=channel,
                platform=inputs.testable[channel],
                regions=regions,
                share=share,
                days=days,
                apply_on=apply_on,
                start=start,
                end=end,
                restore_on=end + timedelta(days=1),
                holdout_spend_per_day=share * spend,
                predicted_lift_mean=float(lift.mean()) * days,
                predicted_lift_p05=float(np.quantile(lift, 0.05)) * days,
                predicted_lift_p95=float(np.quantile(lift, 0.95)) * days,
                se=se,
                mde_abs=mde,
                mde_rel=mde_rel,
                power=power,
                roi={k: float(v) for k, v in inputs.roi[channel].items()},
                model_version_id=inputs.model_version_id,
            )
            key = (days, mde_rel)
            if best is None or key < best[0]:
                best = (key, design)
        if best is None:
            note["skipped"] = (
                f"no region set detects a {policy.experiments.min_detectable_effect:.0%} effect within "
                f"{MAX_DAYS_FACTOR * policy.experiments.days} days"
            )
            continue
        design = best[1]
        conflict = freeze_conflict(policy, channel, design.apply_on, design.restore_on)
        if conflict is not None:
            note["skipped"] = f"{design.apply_on}..{design.restore_on} touches {conflict}"
            continue
        note["chosen"] = list(design.regions)
        return Design(**{**design.__dict__, "considered": tuple(considered)})
    return NoDesign(
        "no channel can be tested now: "
        + "; ".join(f"{n['channel']}: {n.get('skipped', 'no design')}" for n in considered),
        tuple(considered),
    )


def region_shares(rows: Sequence[tuple[str, str, float]]) -> dict[str, dict[str, float]]:
    """(channel, region, spend) rows -> channel -> region -> share of that channel's spend."""
    totals: dict[str, float] = {}
    per: dict[str, dict[str, float]] = {}
    for channel, region, spend in rows:
        per.setdefault(channel, {})
        per[channel][region] = per[channel].get(region, 0.0) + float(spend)
        totals[channel] = totals.get(channel, 0.0) + float(spend)
    return {
        ch: {r: (v / totals[ch] if totals[ch] > 0 else 0.0) for r, v in regions.items()}
        for ch, regions in per.items()
    }
