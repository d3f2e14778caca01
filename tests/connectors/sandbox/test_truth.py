"""The truth used to score the loop: curves, ROI/mROAS, the global best allocation, counterfactual runs."""

from __future__ import annotations

import itertools
import math
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.sandbox import truth
from connectors.sandbox.market import Market
from connectors.sandbox.scenario import Scenario, load_scenario, parse_scenario

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "scenario.yaml"


@pytest.fixture(scope="module")
def example() -> Scenario:
    return load_scenario(EXAMPLE)


def two_curves(shape_b: float) -> Scenario:
    def spec(name: str, budget: float, half: float, shape: float, roi: float) -> dict[str, Any]:
        return {
            "name": name,
            "platform": "meta_ads",
            "daily_budget": budget,
            "adstock": {"decay": 0.3},
            "saturation": {"half": half, "shape": shape},
            "roi_at_budget": roi,
        }

    return parse_scenario(
        {
            "name": "s-curves",
            "start": date(2026, 1, 5),
            "history_days": 0,
            "seed": 3,
            "currency": "USD",
            "baseline": {"daily_revenue": 5000},
            "noise": 0.0,
            "channels": [spec("steady", 1000, 2000, 1.0, 1.2), spec("s_curve", 100, 3000, shape_b, 0.3)],
        }
    )


def test_steady_state_roi_at_the_starting_budget_is_exact(example: Scenario) -> None:
    for spec in example.channels:
        roi = truth.true_roi(example, spec.name, spec.daily_budget)
        assert roi == pytest.approx(spec.roi_at_budget, rel=1e-12)
        contribution = truth.steady_state_contribution(example, spec.name, spec.daily_budget)
        assert contribution == pytest.approx(spec.roi_at_budget * spec.daily_budget, rel=1e-12)


def test_the_truth_matches_the_simulated_steady_state(example: Scenario) -> None:
    s = example.model_copy(update={"history_variation": 0.0})
    m = Market(s)
    for name in m.channels:
        m.force_delivery(name, 1.0)
    day = date(2025, 7, 28)
    m.advance_to(day + timedelta(days=1))
    for name, cd in m.outcome(day).channels.items():
        expected = truth.steady_state_contribution(s, name, cd.budget, day=day)
        assert cd.media_revenue == pytest.approx(expected, rel=1e-9)


def test_shocks_count_from_the_day_asked_for(example: Scenario) -> None:
    before = truth.steady_state_contribution(example, "social_prospecting", 6000, day=date(2026, 4, 5))
    after = truth.steady_state_contribution(example, "social_prospecting", 6000, day=date(2026, 4, 6))
    assert after / before == pytest.approx(0.7)
    assert truth.true_roi(example, "social_prospecting", 6000) == pytest.approx(1.2)  # default: loop's day 1


def test_mroas_is_the_derivative_and_the_curve_is_increasing(example: Scenario) -> None:
    for spec in example.channels:
        for b in (50.0, 900.0, spec.daily_budget, 3 * spec.daily_budget):
            h = b * 1e-6
            numeric = (
                truth.steady_state_contribution(example, spec.name, b + h)
                - truth.steady_state_contribution(example, spec.name, b - h)
            ) / (2 * h)
            assert truth.true_mroas(example, spec.name, b) == pytest.approx(numeric, rel=1e-5)
        curve = truth.response_curve(example, spec.name, [0, 100, 1000, 5000, 20000])
        assert curve[0] == 0 and all(b > a for a, b in itertools.pairwise(curve))
    assert truth.true_mroas(example, "video", 0.0) == 0.0  # shape 1.8: flat at 0
    assert truth.true_roi(example, "video", 0.0) == 0.0
    concave = two_curves(0.8)  # shape < 1: infinitely steep at 0; shape 1: scale / half
    assert truth.true_mroas(concave, "s_curve", 0.0) == math.inf
    assert truth.true_roi(concave, "steady", 0.0) == pytest.approx(concave.channel("steady").scale / 2000)
    with pytest.raises(ValueError, match="finite amount >= 0"):
        truth.true_roi(example, "search", -5)
    with pytest.raises(KeyError, match="no channel `tv`"):
        truth.true_roi(example, "tv", 5)


def _brute_force(s: Scenario, total: float, steps: int) -> float:
    """The best total contribution over every allocation on a grid of ``total / steps``."""
    grid = np.linspace(0.0, total, steps + 1)
    curves = [np.array(truth.response_curve(s, name, list(grid))) for name in s.channel_names]
    best = curves[0]  # best[k]: the best value of spending k grid steps on the channels so far
    for curve in curves[1:]:
        best = np.array([max(best[k - j] + curve[j] for j in range(k + 1)) for k in range(steps + 1)])
    return float(best[steps])


def test_best_allocation_beats_every_allocation_on_a_grid(example: Scenario) -> None:
    total = 15000.0
    best = truth.best_allocation(example, total)
    assert sum(best.values()) == pytest.approx(total, abs=1e-6)
    value = truth.total_contribution(example, best)
    assert value >= _brute_force(example, total, 300) - 1e-6
    shares = np.random.default_rng(0).dirichlet(np.full(4, 0.7), size=3000)
    for share in shares:  # and no random allocation does better
        other = dict(zip(example.channel_names, total * share, strict=True))
        assert truth.total_contribution(example, other) <= value + 1e-6
    funded = [c for c, b in best.items() if b > 1]
    marginals = [truth.true_mroas(example, c, best[c]) for c in funded]
    assert max(marginals) - min(marginals) < 1e-3 * max(marginals)  # equal marginal returns
    assert value > truth.total_contribution(example, {c.name: c.daily_budget for c in example.channels})


@pytest.mark.parametrize("shape", [2.5, 4.0])
def test_best_allocation_crosses_the_convex_start_of_an_s_curve(shape: float) -> None:
    s = two_curves(shape)
    for total in (1500.0, 6000.0, 12000.0):
        best = truth.best_allocation(s, total)
        value = truth.total_contribution(s, best)
        assert value >= _brute_force(s, total, 600) - 1e-6 * value
    # at 12000 the S-curve is worth funding although its marginal return at 0 is nil
    assert truth.true_mroas(s, "s_curve", 0.0) == 0.0
    assert truth.best_allocation(s, 12000.0)["s_curve"] > 1000.0


def test_best_allocation_respects_bounds_and_the_total_to_the_cent(example: Scenario) -> None:
    bounds = {c.name: (0.5 * c.daily_budget, 1.5 * c.daily_budget) for c in example.channels}
    best = truth.best_allocation(example, 15000.0, bounds)
    assert round(sum(best.values()), 2) == 15000.0
    for name, (low, high) in bounds.items():
        assert low <= best[name] <= high
        assert best[name] == round(best[name], 2)
    assert best["retail_media"] == 3000.0  # the most efficient channel runs into its upper bound
    assert best["video"] >= 1500.0  # and video is held at least at its lower bound
    unbounded = truth.best_allocation(example, 15000.0)
    assert truth.total_contribution(example, unbounded) > truth.total_contribution(example, best)
    tied = truth.best_allocation(example, 6000.0, dict.fromkeys(example.channel_names, (1500.0, 1500.0)))
    assert tied == dict.fromkeys(example.channel_names, 1500.0)
    assert truth.best_allocation(example, 0.0) == dict.fromkeys(example.channel_names, 0.0)


def test_best_allocation_explains_impossible_requests(example: Scenario) -> None:
    with pytest.raises(ValueError, match=r"lower bounds add up to 20000\.00, more than the total 1000\.00"):
        truth.best_allocation(example, 1000.0, dict.fromkeys(example.channel_names, (5000.0, 9000.0)))
    with pytest.raises(ValueError, match=r"upper bounds add up to 400\.00, less than the total 1000\.00"):
        truth.best_allocation(example, 1000.0, dict.fromkeys(example.channel_names, (0.0, 100.0)))
    with pytest.raises(ValueError, match=r"unknown channels \['tv'\]"):
        truth.best_allocation(example, 1000.0, {"tv": (0.0, 10.0)})
    with pytest.raises(ValueError, match="0 <= low <= high"):
        truth.best_allocation(example, 1000.0, {"video": (50.0, 10.0)})


def test_best_allocation_of_twenty_channels_spends_the_total() -> None:
    """How fast: `python -m bench market` (performance is measured there, not here)."""
    data = two_curves(2.0).model_dump()
    data["channels"] = [
        {**data["channels"][i % 2], "name": f"c{i}", "roi_at_budget": 0.5 + 0.1 * i} for i in range(20)
    ]
    s = parse_scenario(data)
    best = truth.best_allocation(s, 40000.0)
    assert round(sum(best.values()), 2) == 40000.0


def test_static_counterfactual_replays_the_untouched_market(example: Scenario) -> None:
    loop = example.first_loop_day
    end = loop + timedelta(days=27)
    market = Market(example)
    market.advance_to(end + timedelta(days=1))
    expected = round(sum(o.revenue for o in market.outcomes(loop, end)), 2)
    assert truth.counterfactual_revenue(example, lambda day: {}, loop, end) == expected


def test_counterfactual_follows_the_budgets_it_is_given(example: Scenario) -> None:
    loop = example.first_loop_day
    end = loop + timedelta(days=20)
    market = Market(example)
    market.advance_to(loop + timedelta(days=7))
    market.set_budget("search", 5000.0)
    market.advance_to(end + timedelta(days=1))

    def plan(day: date) -> dict[str, float]:
        return {"search": 5000.0} if day >= loop + timedelta(days=7) else {}

    expected = round(sum(o.revenue for o in market.outcomes(loop, end)), 2)
    assert truth.counterfactual_revenue(example, plan, loop, end) == expected
    with pytest.raises(ValueError, match="is before `start`"):
        truth.counterfactual_revenue(example, plan, end, loop)


def test_the_oracle_beats_the_static_budgets_over_a_year(example: Scenario) -> None:
    loop = example.first_loop_day
    end = loop + timedelta(days=364)
    total = sum(c.daily_budget for c in example.channels)
    bounds = {c.name: (0.5 * c.daily_budget, 2.0 * c.daily_budget) for c in example.channels}
    oracle = truth.best_allocation(example, total, bounds)
    static_revenue = truth.counterfactual_revenue(example, lambda day: {}, loop, end)
    oracle_revenue = truth.counterfactual_revenue(example, lambda day: oracle, loop, end)
    steady_gain = truth.total_contribution(example, oracle) - truth.total_contribution(
        example, {c.name: c.daily_budget for c in example.channels}
    )
    assert oracle_revenue - static_revenue > 0.5 * 365 * steady_gain


def test_the_oracle_to_hold_through_a_run_counts_a_shock_part_way_through(example: Scenario) -> None:
    """The example's social shock (x0.7 from 2026-04-06) lasts most of a year from the loop's first
    day: the allocation best over that span moves money out of social, and earns more over it than
    the allocation best for the first day's curves."""
    loop = example.first_loop_day
    end = loop + timedelta(days=363)
    total = sum(c.daily_budget for c in example.channels)
    first_day = truth.best_allocation(example, total)
    held = truth.best_allocation(example, total, over=(loop, end))
    assert held["social_prospecting"] < first_day["social_prospecting"] - 100
    assert sum(held.values()) == pytest.approx(total, abs=0.005)
    held_revenue = truth.counterfactual_revenue(example, lambda day: held, loop, end)
    first_day_revenue = truth.counterfactual_revenue(example, lambda day: first_day, loop, end)
    assert held_revenue > first_day_revenue
    # a span before the shock is the first day's curves
    assert truth.best_allocation(example, total, over=(loop, loop + timedelta(days=30))) == first_day
    with pytest.raises(ValueError, match="ends"):
        truth.best_allocation(example, total, over=(end, loop))


def test_a_geo_holdout_replays_and_costs_what_the_region_would_have_earned(example: Scenario) -> None:
    regions = [
        {"name": "north", "baseline_share": 0.7, "reach": {"search": 0.6}},
        {"name": "south", "baseline_share": 0.3, "reach": {"search": 0.4}},
    ]
    s = parse_scenario({**example.model_dump(), "regions": regions})
    loop = s.first_loop_day
    begin, end = loop + timedelta(days=7), loop + timedelta(days=20)

    def holdout(day: date) -> dict[tuple[str, str], float]:
        return {("search", "south"): 0.0 if begin <= day <= end else 1.0}

    live = Market(s)
    live.advance_to(begin)
    live.set_geo_factor("search", "south", 0.0)
    live.advance_to(end + timedelta(days=1))
    replay = truth.counterfactual_market(s, lambda day: {}, end, geo_by_day=holdout)
    assert replay.outcomes(loop, end) == live.outcomes(loop, end)
    with_holdout = truth.counterfactual_revenue(s, lambda day: {}, begin, end, geo_by_day=holdout)
    without = truth.counterfactual_revenue(s, lambda day: {}, begin, end)
    lost = without - with_holdout
    steady = 0.4 * truth.steady_state_contribution(s, "search", 4000.0) * 14  # reach x curve x days
    assert 0.7 * steady < lost < 1.2 * steady  # noise and delivery aside, the south's search revenue
