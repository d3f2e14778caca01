"""Scoring the loop against the market's truth (the one agent module allowed to import it).

The counterfactual runs replay the same scenario with the same noise draws and other budgets:
``static`` keeps the starting budgets, ``oracle`` holds the best fixed allocation of the same total
(within the policy's per-channel bounds) from the loop's first day on: best over the whole run, so a
shock that starts part-way through weighs in for the days it lasts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from connectors.sandbox import truth
from connectors.sandbox.scenario import Scenario
from guardrails.policy import Policy


@dataclass(frozen=True)
class Score:
    static_revenue_total: float
    oracle_revenue_total: float
    oracle_allocation: dict[str, float]

    def uplift_captured(self, revenue_total: float) -> float | None:
        span = self.oracle_revenue_total - self.static_revenue_total
        if abs(span) < 1e-9:
            return None
        return (revenue_total - self.static_revenue_total) / span


def policy_bounds(scenario: Scenario, policy: Policy, total: float) -> dict[str, tuple[float, float]]:
    bounds: dict[str, tuple[float, float]] = {}
    for ch in scenario.channel_names:
        rule = policy.channels.get(ch)
        if rule is None:
            continue
        if rule.locked:
            budget = scenario.channel(ch).daily_budget
            bounds[ch] = (budget, budget)
        else:
            hi = total if rule.max_daily is None else min(rule.max_daily, total)
            bounds[ch] = (min(rule.min_daily, hi), hi)
    return bounds


def starting_budgets(scenario: Scenario) -> dict[str, float]:
    return {c.name: float(c.daily_budget) for c in scenario.channels}


def oracle_allocation(
    scenario: Scenario,
    policy: Policy,
    *,
    day: date | None = None,
    over: tuple[date, date] | None = None,
) -> dict[str, float]:
    """The best fixed allocation of the starting total within the policy's bounds: for the curves of
    ``day`` (default the loop's first), or to hold through ``over`` (first, last day), shocks included."""
    total = min(sum(starting_budgets(scenario).values()), policy.budget.total_daily_max)
    bounds = policy_bounds(scenario, policy, total)
    return truth.best_allocation(scenario, total, bounds, day=day, over=over)


def score(scenario: Scenario, policy: Policy, start: date, end: date) -> Score:
    """Static and oracle revenue over ``start``..``end``; the oracle holds the allocation that is best
    over that span (a shock part-way through included), from ``start`` on."""
    static = truth.counterfactual_revenue(scenario, lambda _d: {}, start, end)
    alloc = oracle_allocation(scenario, policy, over=(start, end))
    oracle = truth.counterfactual_revenue(scenario, lambda _d: alloc, start, end)
    return Score(static, oracle, alloc)


def true_curves(
    scenario: Scenario, channels: Sequence[str], grid: Mapping[str, np.ndarray], *, day: date | None = None
) -> dict[str, list[float]]:
    return {ch: truth.response_curve(scenario, ch, list(grid[ch]), day=day) for ch in channels}


def true_mroas(
    scenario: Scenario, budgets: Mapping[str, float], *, day: date | None = None
) -> dict[str, float]:
    return {ch: truth.true_mroas(scenario, ch, b, day=day) for ch, b in budgets.items()}


def true_roi(
    scenario: Scenario, budgets: Mapping[str, float], *, day: date | None = None
) -> dict[str, float]:
    return {ch: truth.true_roi(scenario, ch, b, day=day) for ch, b in budgets.items() if b > 0}
