"""The holdout planner: the channel worth learning, a holdout within the policy's share and exploration
budget, sized by power, never touching a freeze window (property tests over random policies/markets)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from geo_world import policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.experiments.analysis import Panel
from agents.experiments.design import (
    Design,
    DesignInputs,
    NoDesign,
    freeze_conflict,
    holdout_sets,
    plan_experiment,
    region_shares,
)
from models.curves import ResponseCurves

TODAY = date(2026, 3, 2)
CHANNELS = ("search", "social", "retail")


def curves(beta: tuple[float, ...] = (9000.0, 20000.0, 3000.0)) -> ResponseCurves:
    rng = np.random.default_rng(0)
    b = np.array(beta)[None, :] * (1 + 0.1 * rng.standard_normal((50, 3)))
    half = np.array([[8000.0, 12000.0, 4000.0]]).repeat(50, axis=0)
    return ResponseCurves(CHANNELS, b, half, np.ones((50, 3)), "day", {})


def panel(shares: list[float], *, noise: float = 0.02, seed: int = 1, days: int = 120) -> Panel:
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    common = 40_000 * (1 + 0.05 * np.sin(2 * np.pi * t / 7))
    rev = common[:, None] * np.array(shares)[None, :] * (1 + noise * rng.standard_normal((days, len(shares))))
    names = tuple(f"r{i}" for i in range(len(shares)))
    return Panel(tuple(TODAY - timedelta(days=days - k) for k in range(days)), names, rev)


def inputs(
    shares: list[float],
    *,
    roi_width: dict[str, float] | None = None,
    noise: float = 0.02,
    testable: dict[str, str] | None = None,
    spend: dict[str, float] | None = None,
) -> DesignInputs:
    p = panel(shares, noise=noise)
    width = roi_width or {"search": 0.4, "social": 1.0, "retail": 2.0}
    return DesignInputs(
        today=TODAY,
        roi={ch: {"mean": 1.5, "p05": 1.5 - w / 2, "p95": 1.5 + w / 2} for ch, w in width.items()},
        curves=curves(),
        daily_spend=spend or {"search": 4000.0, "social": 6000.0, "retail": 2000.0},
        region_share={ch: dict(zip(p.regions, shares, strict=True)) for ch in CHANNELS},
        panel=p,
        testable=testable or {"search": "google_ads", "social": "meta_ads"},
    )


SHARES = [0.3, 0.22, 0.18, 0.12, 0.07, 0.06, 0.05]


def test_picks_the_testable_channel_with_the_most_revenue_at_stake() -> None:
    d = plan_experiment(inputs(SHARES), policy())
    assert isinstance(d, Design), d
    # retail has the widest interval but its platform has no geo targeting; social: 1.0 x 6000 > 0.4 x 4000
    assert d.channel == "social" and d.platform == "meta_ads"
    assert 0.05 - 1e-9 <= d.share <= 0.10 + 1e-9
    assert d.days >= 14 and d.end - d.start == timedelta(days=d.days - 1)
    assert d.start == TODAY + timedelta(days=1) and d.restore_on == d.end + timedelta(days=1)
    assert d.mde_rel <= 0.04
    assert d.predicted_lift_p05 <= d.predicted_lift_mean <= d.predicted_lift_p95
    assert d.to_dict()["regions"] == list(d.regions)


def test_noisier_regions_need_a_longer_test_or_none() -> None:
    quiet = plan_experiment(inputs(SHARES, noise=0.01), policy())
    loud = plan_experiment(inputs(SHARES, noise=0.05), policy())
    assert isinstance(quiet, Design)
    assert isinstance(loud, NoDesign) or loud.days > quiet.days
    hopeless = plan_experiment(inputs(SHARES, noise=0.19), policy())
    assert isinstance(hopeless, NoDesign) and "detects" in hopeless.reason


def test_no_exploration_budget_no_experiment() -> None:
    d = plan_experiment(inputs(SHARES), policy(exploration=0.0))
    assert isinstance(d, NoDesign) and "exploration" in d.reason
    # a budget too small for even 5% of the channel leaves it out
    tight = plan_experiment(inputs(SHARES), policy(exploration=0.01))
    assert isinstance(tight, NoDesign) or tight.holdout_spend_per_day <= 0.01 * 12000 + 1e-6


def test_a_freeze_window_in_the_test_span_moves_the_planner_off() -> None:
    freeze = f"[{{start: {(TODAY + timedelta(days=9)).isoformat()}, end: {(TODAY + timedelta(days=9)).isoformat()}}}]"
    d = plan_experiment(inputs(SHARES), policy(freezes=freeze))
    assert isinstance(d, NoDesign) and "freeze" in d.reason
    only_search = f"[{{start: {TODAY.isoformat()}, end: {(TODAY + timedelta(days=60)).isoformat()}, channels: [social]}}]"
    d2 = plan_experiment(inputs(SHARES), policy(freezes=only_search))
    assert isinstance(d2, Design) and d2.channel == "search"


def test_one_region_or_kill_switch_means_no_experiment() -> None:
    assert isinstance(plan_experiment(inputs([1.0]), policy()), NoDesign)
    assert isinstance(plan_experiment(inputs(SHARES), policy(kill_switch=True)), NoDesign)


def test_region_shares_and_sets() -> None:
    shares = region_shares([("a", "x", 30.0), ("a", "y", 70.0), ("b", "x", 0.0)])
    assert shares == {"a": {"x": 0.3, "y": 0.7}, "b": {"x": 0.0}}
    sets = holdout_sets({"x": 0.04, "y": 0.03, "z": 0.93}, 0.05, 0.10)
    assert sets == [(("x", "y"), pytest.approx(0.07))]
    assert holdout_sets({"x": 0.5, "y": 0.5}, 0.05, 0.10) == []


@st.composite
def markets(draw: st.DrawFn) -> tuple[list[float], float, float, str]:
    n = draw(st.integers(min_value=2, max_value=9))
    raw = draw(st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=n, max_size=n))
    shares = [r / sum(raw) for r in raw]
    max_share = draw(st.sampled_from([0.02, 0.06, 0.08, 0.10, 0.5, 1.0]))
    exploration = draw(st.sampled_from([0.0, 0.005, 0.02, 0.05, 0.2]))
    offset = draw(st.integers(min_value=-3, max_value=70))
    length = draw(st.integers(min_value=0, max_value=10))
    first = TODAY + timedelta(days=offset)
    freeze = f"[{{start: {first.isoformat()}, end: {(first + timedelta(days=length)).isoformat()}}}]"
    return shares, max_share, exploration, freeze


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_property_a_holdout_stays_within_share_budget_and_outside_freezes(
    m: tuple[list[float], float, float, str],
) -> None:
    shares, max_share, exploration, freeze = m
    text_policy = policy(exploration=exploration, freezes=freeze)
    p = text_policy.model_copy(
        update={"experiments": text_policy.experiments.model_copy(update={"max_holdout_share": max_share})}
    )
    d = plan_experiment(inputs(shares, noise=0.01), p)
    if isinstance(d, NoDesign):
        return
    assert d.share <= min(0.10, max_share) + 1e-9
    assert d.holdout_spend_per_day <= exploration * 12000 + 1e-6
    assert freeze_conflict(p, d.channel, d.apply_on, d.restore_on) is None
    assert 0 < len(d.regions) < len(shares)
