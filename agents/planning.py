"""The planner's pure core: from posterior response curves to a guarded, evaluated proposal.

One planning step:

1. **Target**: the best allocation of the current total (capped by the policy) under the posterior,
   within the policy's per-channel bounds and locks (:func:`models.optimize.optimize`).
2. **Step**: the best allocation of the same total that one step can reach: each channel moves from
   its budget toward its target (never away: whipsawing budgets restart learning phases), by at most
   the policy's swing (scaled by the step factor, which grows after a confirmed move), inside its
   bounds. The target says where we are going; the step is the best move allowed today.
3. **Guardrails**: the engine clips or blocks the step (:func:`guardrails.engine.evaluate`).
4. **Evaluation**: over posterior draws, the gain of the guarded step against the current budgets: mean,
   90% band and the probability that it improves the objective.
5. **Decision**: propose only when the probability and the relative gain reach the policy's
   thresholds (an advisory threshold warns instead of blocking). Otherwise say why.

No database, no clock: everything arrives as arguments, so it can be tested and replayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from guardrails.engine import evaluate
from guardrails.policy import Policy
from guardrails.records import CampaignState, Decision, ExecutedChange, Forecast
from models.curves import ResponseCurves
from models.optimize import optimize

# A step smaller than this share of the portfolio is not worth a person's attention, where the policy
# lets a change move a budget by REFERENCE_SWING; a policy that allows smaller swings asks for smaller
# steps, so the floor shrinks with it (2% swings: 0.05% of the portfolio).
MIN_RELATIVE_MOVE = 0.005
REFERENCE_SWING = 0.20


@dataclass(frozen=True)
class PlanContext:
    curves: ResponseCurves  # per-day curves of the promoted model
    current: Mapping[str, float]  # live daily budget per channel
    states: Mapping[str, CampaignState]
    history: Sequence[ExecutedChange]
    policy: Policy
    now: datetime
    baseline_revenue_per_day: float  # recent average total revenue, for the relative gain
    step_scale: float = 1.0  # share of the policy's max swing this step may use (grows after confirmations)


@dataclass(frozen=True)
class ChannelMove:
    channel: str
    current: float
    target: float
    proposed: float
    mroas_mean: float
    mroas_p05: float
    mroas_p95: float


@dataclass(frozen=True)
class PlanOutcome:
    propose: bool
    reason: str
    moves: tuple[ChannelMove, ...]
    decision: Decision | None
    expected_gain: float = 0.0  # objective per day
    gain_p05: float = 0.0
    gain_p95: float = 0.0
    probability_of_improvement: float = 0.0
    relative_gain: float = 0.0
    expected_revenue_before: float = 0.0  # media revenue per day (posterior mean)
    expected_revenue_after: float = 0.0
    warnings: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def proposed(self) -> dict[str, float]:
        return {m.channel: m.proposed for m in self.moves}

    @property
    def target(self) -> dict[str, float]:
        return {m.channel: m.target for m in self.moves}


def _bounds(
    policy: Policy, channels: Sequence[str], total: float
) -> dict[str, tuple[float | None, float | None]]:
    out: dict[str, tuple[float | None, float | None]] = {}
    for ch in channels:
        rule = policy.channels.get(ch)
        if rule is None:
            continue
        hi = rule.max_daily if rule.max_daily is not None else total
        out[ch] = (float(rule.min_daily), float(min(hi, total)))
    return out


def step_box(
    policy: Policy,
    channels: Sequence[str],
    current: np.ndarray,
    target: np.ndarray,
    total: float,
    swing: float,
) -> dict[str, tuple[float | None, float | None]]:
    """Per channel, the budgets one step may reach: from today's budget toward the target (never away
    from it: budgets that whipsaw restart learning phases), at most one swing, inside the policy's
    min/max (a budget already outside them may only move toward them)."""
    policy_bounds = _bounds(policy, channels, total)
    box: dict[str, tuple[float | None, float | None]] = {}
    for i, ch in enumerate(channels):
        lo, hi = current[i] * (1 - swing), current[i] * (1 + swing)
        if target[i] >= current[i]:
            lo, hi = current[i], min(hi, target[i])
        else:
            lo, hi = max(lo, target[i]), current[i]
        p_lo, p_hi = policy_bounds.get(ch, (None, None))
        if p_lo is not None:
            lo = max(lo, min(p_lo, current[i]))
        if p_hi is not None:
            hi = min(hi, max(p_hi, current[i]))
        box[ch] = (max(lo, 0.0), max(hi, 0.0))
    return box


def plan(ctx: PlanContext) -> PlanOutcome:
    """One planning step (see the module docstring)."""
    policy = ctx.policy
    channels = [c for c in ctx.curves.channels if c in ctx.current]
    if not channels:
        return PlanOutcome(False, "the promoted model shares no channel with the live campaigns", (), None)
    curves = ctx.curves.select(channels)
    cur = np.array([float(ctx.current[c]) for c in channels])
    total = float(min(cur.sum(), policy.budget.total_daily_max))
    locked = [c for c in channels if policy.channels.get(c) is not None and policy.channels[c].locked]
    objective = policy.objective.metric
    try:
        best = optimize(
            curves,
            total,
            current=dict(zip(channels, cur.tolist(), strict=True)),
            bounds=_bounds(policy, channels, total),
            locked=locked,
            objective=objective,
            margin=policy.objective.margin,
            target_roas=policy.objective.target,
        )
    except ValueError as exc:
        return PlanOutcome(False, f"no feasible allocation under the policy: {exc}", (), None)
    target = np.array([best.allocation[c] for c in channels])
    # The step: the best allocation of the same total within one swing of today's budgets (it grows
    # after each confirmed move, never beyond the policy's swing; the engine clips anyway).
    swing = policy.change.max_swing_per_change * min(max(ctx.step_scale, 0.0), 1.0)
    try:
        step = optimize(
            curves,
            total,
            current=dict(zip(channels, cur.tolist(), strict=True)),
            bounds=step_box(policy, channels, cur, target, total, swing),
            locked=locked,
            objective=objective,
            margin=policy.objective.margin,
            target_roas=policy.objective.target,
        )
        stepped = np.round(np.array([step.allocation[c] for c in channels]), 2)
    except ValueError:  # the box cannot hold the total (e.g. every channel at its bound): stay put
        stepped = cur.copy()
    decision = evaluate(
        current=dict(zip(channels, cur.tolist(), strict=True)),
        proposed=dict(zip(channels, stepped.tolist(), strict=True)),
        states=ctx.states,
        history=ctx.history,
        policy=policy,
        now=ctx.now,
    )
    adjusted = np.array([float(decision.adjusted.get(c, ctx.current[c])) for c in channels])
    m_draws = curves.mroas(cur)  # [D, C]
    m05, m95 = np.quantile(m_draws, [0.05, 0.95], axis=0)
    moves = tuple(
        ChannelMove(
            c,
            float(cur[i]),
            float(target[i]),
            float(adjusted[i]),
            float(m_draws[:, i].mean()),
            float(m05[i]),
            float(m95[i]),
        )
        for i, c in enumerate(channels)
    )
    details: dict[str, Any] = {
        "target": dict(zip(channels, np.round(target, 2).tolist(), strict=True)),
        "stepped": dict(zip(channels, stepped.tolist(), strict=True)),
        "optimizer_expected_gain": best.expected_gain,
        "optimizer_probability_of_improvement": best.probability_of_improvement,
        "objective": objective,
        "step_scale": ctx.step_scale,
    }
    if decision.blocked:
        why = (
            "; ".join(v.message for v in decision.verdicts if v.outcome == "blocked")
            or "blocked by guardrails"
        )
        return PlanOutcome(False, f"blocked by guardrails: {why}", moves, decision, details=details)
    moved = float(np.abs(adjusted - cur).sum())
    allowed = policy.change.max_swing_per_change  # the policy's, not this step's scaled share of it
    floor = MIN_RELATIVE_MOVE * min(1.0, allowed / REFERENCE_SWING) * max(float(cur.sum()), 1e-9)
    if moved < floor:
        away = float(np.abs(target - cur).sum())
        why = (
            f"already at the best allocation (the optimum is {away:.2f}/day away)"
            if away < floor
            else f"the step the guardrails allow ({moved:.2f}/day) is under the {floor:.2f}/day worth "
            f"proposing, while the optimum is {away:.2f}/day away"
        )
        return PlanOutcome(False, why, moves, decision, details=details)
    rev_cur = curves.total_revenue(cur)
    rev_new = curves.total_revenue(adjusted)
    if objective == "profit":
        margin = float(policy.objective.margin or 1.0)
        gain = margin * (rev_new - rev_cur) - (adjusted.sum() - cur.sum())
    else:
        gain = rev_new - rev_cur
    g05, g95 = np.quantile(gain, [0.05, 0.95])
    prob = float(np.mean(gain > 0))
    rel = float(gain.mean() / max(ctx.baseline_revenue_per_day, 1e-9))
    outcome = dict(
        moves=moves,
        decision=decision,
        expected_gain=float(gain.mean()),
        gain_p05=float(g05),
        gain_p95=float(g95),
        probability_of_improvement=prob,
        relative_gain=rel,
        expected_revenue_before=float(rev_cur.mean()),
        expected_revenue_after=float(rev_new.mean()),
        details=details,
    )
    # Second pass with the forecast: the engine owns the thresholds and their enforcement levels.
    final = evaluate(
        current=dict(zip(channels, cur.tolist(), strict=True)),
        proposed=dict(zip(channels, adjusted.tolist(), strict=True)),
        states=ctx.states,
        history=ctx.history,
        policy=policy,
        now=ctx.now,
        forecast=Forecast(probability_of_improvement=prob, expected_gain=rel),
    )
    outcome["decision"] = final
    warnings = tuple(v.message for v in final.verdicts if v.outcome == "warned")
    if final.blocked:
        why = "; ".join(v.message for v in final.verdicts if v.outcome == "blocked")
        return PlanOutcome(False, why or "blocked by guardrails", warnings=warnings, **outcome)  # type: ignore[arg-type]
    return PlanOutcome(True, "meets the policy's thresholds", warnings=warnings, **outcome)  # type: ignore[arg-type]


def summarise(outcome: PlanOutcome, currency: str = "USD") -> str:
    """A sentence a marketer can judge in ten seconds."""
    ups = [m for m in outcome.moves if m.proposed > m.current + 0.005]
    downs = [m for m in outcome.moves if m.proposed < m.current - 0.005]

    def fmt(ms: list[ChannelMove]) -> str:
        return ", ".join(f"{m.channel} {m.current:,.0f}→{m.proposed:,.0f}" for m in ms) or "nothing"

    moved = sum(m.proposed - m.current for m in ups)
    return (
        f"Move {moved:,.0f} {currency}/day: up {fmt(ups)}; down {fmt(downs)}. "
        f"Expected {outcome.expected_gain:+,.0f} {currency}/day (90% band {outcome.gain_p05:+,.0f} to "
        f"{outcome.gain_p95:+,.0f}), probability of improvement {outcome.probability_of_improvement:.0%}."
    )
