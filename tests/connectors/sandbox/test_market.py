"""The market simulator against hand computations of INTERFACES section 4, and its platform behaviour."""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.sandbox.market import DayNotSimulated, Market, UnknownChannel
from connectors.sandbox.scenario import Scenario, load_scenario, parse_scenario

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "scenario.yaml"
START = date(2026, 1, 5)  # a Monday


def channel(name: str, platform: str = "retail_media", **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "daily_budget": 1000.0,
        "adstock": {"decay": 0.5},
        "saturation": {"half": 800.0, "shape": 1.5},
        "roi_at_budget": 2.0,
        "learning": {"change_threshold": 0.2, "days": 3, "efficiency": 0.8},
    }
    spec.update(over)
    return spec


def scenario(channels: list[dict[str, Any]], **over: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "unit",
        "start": START,
        "history_days": 0,
        "seed": 11,
        "currency": "EUR",
        "baseline": {
            "daily_revenue": 10000.0,
            "trend_per_year": 0.1,
            "yearly_amplitude": 0.2,
            "weekly": [1.0, 0.9, 0.9, 1.0, 1.1, 1.2, 0.8],
        },
        "noise": 0.0,
        "channels": channels,
    }
    data.update(over)
    return parse_scenario(data)


def test_same_seed_same_market_and_another_seed_another() -> None:
    s = load_scenario(EXAMPLE)
    end = s.first_loop_day + timedelta(days=30)
    a, b = Market(s), Market(s)
    a.advance_to(end)
    for step in range(0, 400, 50):  # b advances in uneven steps: the result must not depend on them
        b.advance_to(min(end, s.start + timedelta(days=step)))
    b.advance_to(end)
    assert a.outcomes(s.start, end - timedelta(days=1)) == b.outcomes(s.start, end - timedelta(days=1))
    other = Market(s.model_copy(update={"seed": 8}))
    other.advance_to(end)
    assert other.outcome(s.start).revenue != a.outcome(s.start).revenue
    assert a.campaigns == b.campaigns and len({c.external_id for c in a.campaigns}) == 4


def test_noise_draw_of_a_day_does_not_depend_on_the_budgets() -> None:
    s = load_scenario(EXAMPLE)
    loop = s.first_loop_day
    static, moved = Market(s), Market(s)
    for m in (static, moved):
        m.advance_to(loop)
    moved.set_budget("search", 9000)
    moved.set_budget("video", 0)
    for m in (static, moved):
        m.advance_to(loop + timedelta(days=20))
    for k in range(20):
        day = loop + timedelta(days=k)
        a, b = static.outcome(day), moved.outcome(day)
        e_a = a.revenue / (a.baseline + a.media_revenue) - 1
        e_b = b.revenue / (b.baseline + b.media_revenue) - 1
        assert e_a == pytest.approx(e_b, abs=1e-6)
        assert a.channels["retail_media"].spend == b.channels["retail_media"].spend
    assert static.outcome(loop - timedelta(days=1)) == moved.outcome(loop - timedelta(days=1))


def test_adstock_hill_and_baseline_by_hand() -> None:
    decay, half, shape = 0.5, 800.0, 1.5
    s = scenario([channel("shop", learning={"change_threshold": 0.2, "days": 0})])  # no learning phase
    m = Market(s)
    m.force_delivery("shop", 1.0)
    budgets = [1000.0, 300.0, 0.0, 2500.0, 1000.0]
    for k, b in enumerate(budgets):
        m.set_budget("shop", b)
        m.advance_to(START + timedelta(days=k + 1))
    scale = 2.0 * 1000.0 / (1000.0**shape / (1000.0**shape + half**shape))
    a = budgets[0]  # a(-1) = the first day's spend
    for k, b in enumerate(budgets):
        a = (1 - decay) * b + decay * a
        media = scale * a**shape / (a**shape + half**shape)
        day = START + timedelta(days=k)
        base = 10000.0 * (1 + 0.1 * k / 365.25) * (1 + 0.2 * math.sin(2 * math.pi * k / 365.25))
        base *= [1.0, 0.9, 0.9, 1.0, 1.1, 1.2, 0.8][day.weekday()]
        out = m.outcome(day)
        assert out.channels["shop"].spend == b
        assert out.channels["shop"].media_revenue == pytest.approx(media, rel=1e-12)
        assert out.baseline == pytest.approx(base, rel=1e-12)
        assert out.revenue == pytest.approx(base + media, abs=0.006)  # noise 0: revenue is the formula
        assert out.regions == {"national": out.revenue}
    assert m.outcome(START + timedelta(days=2)).channels["shop"].impressions == 0


def test_steady_state_roi_at_the_starting_budget() -> None:
    s = load_scenario(EXAMPLE).model_copy(update={"history_variation": 0.0})
    exact = Market(s)
    for name in exact.channels:
        exact.force_delivery(name, 1.0)
    day = date(2025, 7, 28)  # June has 30 days, so exact delivery stayed under Google's 30.4x cap
    exact.advance_to(day + timedelta(days=1))
    for name, cd in exact.outcome(day).channels.items():
        assert cd.budget == s.channel(name).daily_budget
        assert cd.media_revenue / cd.spend == pytest.approx(s.channel(name).roi_at_budget, rel=1e-9)
    delivered = Market(s)  # with the platforms' own delivery: within its noise
    delivered.advance_to(s.start + timedelta(days=200))
    rows = delivered.outcomes(s.start + timedelta(days=30), s.start + timedelta(days=199))
    for name in delivered.channels:
        media = sum(r.channels[name].media_revenue for r in rows)
        spend = sum(r.channels[name].spend for r in rows)
        assert media / spend == pytest.approx(s.channel(name).roi_at_budget, rel=0.03), name


def test_learning_flips_just_above_the_threshold_and_ends_after_its_days() -> None:
    s = scenario([channel("shop")])  # threshold 0.2, 3 days, efficiency 0.8
    at, above = Market(s), Market(s)
    for m in (at, above):
        m.force_delivery("shop", 1.0)
        m.advance_to(START + timedelta(days=10))
    assert not at.set_budget("shop", 1200.0).learning_started  # exactly +20%: no learning
    result = above.set_budget("shop", 1200.01)
    assert result.learning_started and result.old == 1000.0 and result.new == 1200.01
    assert result.effective == START + timedelta(days=10)
    assert at.learning_days_left("shop") == 0 and above.learning_days_left("shop") == 3
    for m in (at, above):
        m.advance_to(START + timedelta(days=14))
    assert above.learning_days_left("shop") == 0
    for k in range(10, 14):
        day = START + timedelta(days=k)
        learning = above.outcome(day).channels["shop"]
        assert learning.learning is (k < 13) and not at.outcome(day).channels["shop"].learning
        ratio = learning.media_revenue / at.outcome(day).channels["shop"].media_revenue
        assert ratio == pytest.approx(0.8 if k < 13 else 1.0, rel=1e-4)
    assert not at.set_budget("shop", 1200.0 * 0.8).learning_started  # -20% exactly


def test_small_edits_on_one_day_cannot_dodge_learning() -> None:
    m = Market(scenario([channel("shop")]))
    assert not m.set_budget("shop", 1150.0).learning_started
    assert m.set_budget("shop", 1300.0).learning_started  # 13% on top, but 30% on the day
    assert m.learning_days_left("shop") == 3


def test_a_budget_raised_from_zero_learns() -> None:
    m = Market(scenario([channel("shop")]))
    m.set_budget("shop", 0.0)
    m.advance_to(START + timedelta(days=1))
    assert m.set_budget("shop", 10.0).learning_started


def test_shock_multiplies_the_scale_from_its_start() -> None:
    shock_day = START + timedelta(days=5)
    events = [{"type": "shock", "channel": "shop", "start": shock_day, "factor": 0.6}]
    m = Market(scenario([channel("shop"), channel("other")], events=events))
    for name in m.channels:
        m.force_delivery(name, 1.0)
    m.advance_to(START + timedelta(days=8))
    before, on, after = (m.outcome(shock_day + timedelta(days=k)) for k in (-1, 0, 2))
    assert on.channels["shop"].media_revenue / before.channels["shop"].media_revenue == pytest.approx(0.6)
    assert after.channels["shop"].media_revenue / before.channels["shop"].media_revenue == pytest.approx(0.6)
    assert on.channels["other"].media_revenue == pytest.approx(before.channels["other"].media_revenue)


def test_google_monthly_cap_holds_over_a_month_of_maximum_over_delivery() -> None:
    s = scenario([channel("search", "google_ads"), channel("social", "meta_ads"), channel("shelf")])
    m = Market(s)
    for name in m.channels:
        m.force_delivery(name, 2.0)
    m.advance_to(date(2026, 2, 1))
    m.set_budget("search", 1100.0)  # the cap follows the month's average budget
    m.advance_to(date(2026, 3, 1))
    feb = m.outcomes(date(2026, 2, 1), date(2026, 2, 28))
    first = feb[0].channels
    assert first["search"].spend == 2200.0  # a day may go to 2x
    assert first["social"].spend == 1250.0  # Meta-like: at most 1.25x
    assert first["shelf"].spend == 1000.0  # retail: never above the budget
    search = [r.channels["search"].spend for r in feb]
    assert sum(search) <= 30.4 * 1100.0 + 1e-6
    assert sum(search) == pytest.approx(30.4 * 1100.0, abs=0.05)  # it spends right up to the cap
    assert search[-1] == 0.0  # and then stops for the rest of the month
    jan = [r.channels["search"].spend for r in m.outcomes(date(2026, 1, 5), date(2026, 1, 31))]
    assert sum(jan) <= 30.4 * 1000.0 + 1e-6
    march = Market(s)
    march.advance_to(date(2026, 2, 1))
    assert march.outcome(date(2026, 1, 31)).channels["search"].spend <= 2000.0


def test_normal_delivery_stays_within_each_platforms_limits() -> None:
    s = scenario([channel("search", "google_ads"), channel("social", "meta_ads"), channel("shelf")])
    m = Market(s)
    m.advance_to(START + timedelta(days=365))
    spend = {
        n: np.array([m.outcome(START + timedelta(days=k)).channels[n].spend for k in range(365)])
        for n in m.channels
    }
    assert spend["shelf"].max() <= 1000.0 and spend["shelf"].mean() < 1000.0
    assert spend["social"].max() <= 1250.0 and (spend["social"] > 1000).any()
    assert spend["search"].max() <= 2000.0 and (spend["search"] > 1000).any()
    assert 0.9 < spend["search"].mean() / 1000.0 < 1.1
    days = [START + timedelta(days=k) for k in range(365)]
    for month in {(d.year, d.month) for d in days}:
        in_month = np.array([(d.year, d.month) == month for d in days])
        assert spend["search"][in_month].sum() <= 30.4 * 1000.0 + 1e-6


def test_revenue_noise_is_standard_normal_and_seeded() -> None:
    m = Market(scenario([channel("shop")], noise=0.1))
    m.advance_to(START + timedelta(days=2000))
    rows = m.outcomes(START, START + timedelta(days=1999))
    e = np.array([(r.revenue / (r.baseline + r.media_revenue) - 1) / 0.1 for r in rows])
    assert abs(e.mean()) < 0.1 and 0.93 < e.std() < 1.07
    assert abs(np.corrcoef(e[:-1], e[1:])[0, 1]) < 0.1  # independent from day to day


def test_impressions_and_clicks_follow_spend_with_worsening_cpm() -> None:
    m = Market(scenario([channel("shop", "meta_ads")]))
    m.force_delivery("shop", 1.0)
    m.advance_to(START + timedelta(days=60))
    m.set_budget("shop", 4000.0)
    m.advance_to(START + timedelta(days=120))
    low = m.outcomes(START, START + timedelta(days=59))
    high = m.outcomes(START + timedelta(days=60), START + timedelta(days=119))
    cpm_low = sum(r.channels["shop"].spend for r in low) / sum(r.channels["shop"].impressions for r in low)
    cpm_high = sum(r.channels["shop"].spend for r in high) / sum(r.channels["shop"].impressions for r in high)
    assert cpm_high > cpm_low * 1.05
    assert all(0 < r.channels["shop"].clicks < r.channels["shop"].impressions for r in high)


def test_regions_add_up_to_the_national_formula() -> None:
    regions = [
        {"name": "north", "baseline_share": 0.5, "reach": {"a": 0.7, "b": 0.2}},
        {"name": "south", "baseline_share": 0.3, "reach": {"a": 0.2, "b": 0.5}},
        {"name": "west", "baseline_share": 0.2, "reach": {"a": 0.1, "b": 0.3}},
    ]
    channels = [channel("a", "google_ads"), channel("b", "meta_ads", adstock={"decay": 0.2})]
    national = Market(scenario(channels))
    regional = Market(scenario(channels, regions=regions))
    for m in (national, regional):
        m.advance_to(START + timedelta(days=60))
    for k in range(60):
        day = START + timedelta(days=k)
        n, r = national.outcome(day), regional.outcome(day)
        assert r.media_revenue == pytest.approx(n.media_revenue, rel=1e-12)
        assert sum(r.regions.values()) == pytest.approx(n.revenue, abs=0.02)
        assert r.regions["north"] > r.regions["west"]
    # With noise the nation still follows the contract, e_d included: each region deviates from e_d
    # by its own draw, and the deviations cancel in the national sum.
    noisy_national = Market(scenario(channels, noise=0.05))
    noisy = Market(scenario(channels, regions=regions, noise=0.05))
    for m in (noisy_national, noisy, regional):
        m.advance_to(START + timedelta(days=400))
    deviations = []
    for k in range(400):
        day = START + timedelta(days=k)
        n, r, quiet = noisy_national.outcome(day), noisy.outcome(day), regional.outcome(day)
        assert r.revenue == pytest.approx(n.revenue, abs=0.02)
        assert sum(r.regions.values()) == pytest.approx(n.revenue, abs=0.02)
        e_d = (n.revenue / quiet.revenue - 1) / 0.05
        deviations.append([(r.regions[g] / quiet.regions[g] - 1) / 0.05 - e_d for g in quiet.regions])
    d = np.array(deviations)
    # sd of u_r less the revenue-weighted mean (weights about 0.5 / 0.3 / 0.2): 0.62 north, 0.99 west
    assert 0.55 < d[:, 0].std() < 0.7 and 0.9 < d[:, 2].std() < 1.1
    assert abs(np.corrcoef(d[:, 1], d[:, 2])[0, 1]) < 0.5


def test_a_geo_holdout_removes_the_media_of_that_region_only() -> None:
    regions = [
        {"name": "north", "baseline_share": 0.6, "reach": {"a": 0.6}},
        {"name": "south", "baseline_share": 0.4, "reach": {"a": 0.4}},
    ]
    s = scenario([channel("a", adstock={"decay": 0.0})], regions=regions)
    normal, holdout = Market(s), Market(s)
    for m in (normal, holdout):
        m.force_delivery("a", 1.0)
        m.advance_to(START + timedelta(days=3))
    holdout.set_geo_factor("a", "south", 0.0)
    assert holdout.geo_factor("a", "south") == 0.0
    for m in (normal, holdout):
        m.advance_to(START + timedelta(days=5))
    day = START + timedelta(days=4)
    n, h = normal.outcome(day), holdout.outcome(day)
    assert h.regions["north"] == n.regions["north"]
    assert h.regions["south"] == pytest.approx(h.baseline * 0.4, abs=0.01)
    assert h.region_media["south"] == 0.0 and h.region_media["north"] == n.region_media["north"]
    media_south = 0.4 * s.channels[0].curve(1000.0)  # reach x scale x hill(a / reach) at a = 0.4 x spend
    assert n.regions["south"] - h.regions["south"] == pytest.approx(media_south, abs=0.02)
    with pytest.raises(KeyError, match="no region `east`"):
        holdout.set_geo_factor("a", "east", 1.0)


def test_history_budgets_move_and_settle_on_the_starting_budget() -> None:
    s = load_scenario(EXAMPLE)
    m = Market(s)
    m.advance_to(s.first_loop_day + timedelta(days=1))
    assert m.outcome(s.first_loop_day).channels["search"].budget == 4000.0
    history = np.array(
        [
            [m.history_budget(c, s.start + timedelta(days=k)) for c in m.channels]
            for k in range(s.history_days)
        ]
    )
    assert (history[-14:] == np.array([c.daily_budget for c in s.channels])).all()
    paused = (history == 0).sum(axis=0)
    assert paused.sum() > 0  # somebody paused a campaign
    live = np.where(history > 0, history, np.nan)
    spread = np.nanstd(np.log(live[:-60]), axis=0)
    assert ((spread > 0.1) & (spread < 0.6)).all(), spread
    logs = np.log(live[:-60][~np.isnan(live[:-60]).any(axis=1)])
    corr = np.corrcoef(logs.T)
    assert (np.abs(corr[~np.eye(len(m.channels), dtype=bool)]) < 0.9).all(), corr  # channels move apart
    flat = Market(s.model_copy(update={"history_variation": 0.0}))
    assert flat.history_budget("video", s.start + timedelta(days=100)) == 3000.0
    with pytest.raises(ValueError, match="not a history day"):
        m.history_budget("video", s.first_loop_day)


def test_misuse_is_refused_with_the_reason() -> None:
    s = load_scenario(EXAMPLE)
    m = Market(s)
    with pytest.raises(ValueError, match=r"before the loop's first day \(2026-01-05\)"):
        m.set_budget("search", 100.0)
    m.advance_to(s.first_loop_day)
    with pytest.raises(ValueError, match="finite amount >= 0"):
        m.set_budget("search", -1.0)
    with pytest.raises(ValueError, match="finite amount >= 0"):
        m.set_budget("search", float("nan"))
    with pytest.raises(UnknownChannel, match="no channel `tv` in this market"):
        m.budget("tv")
    with pytest.raises(DayNotSimulated, match="day 2026-01-05 has not been simulated"):
        m.outcome(s.first_loop_day)
    with pytest.raises(ValueError, match="cannot go backwards"):
        m.advance_to(s.start)
    m.advance_to(s.first_loop_day)  # already there: nothing happens
    assert m.today() == s.first_loop_day


def test_two_years_of_twenty_channels_simulate() -> None:
    """How fast: `python -m bench market` (performance is measured there, not here)."""
    platforms = ["google_ads", "meta_ads", "retail_media"]
    channels = [channel(f"c{i}", platforms[i % 3], daily_budget=500.0 + 100 * i) for i in range(20)]
    s = scenario(channels, history_days=365, noise=0.05)
    m = Market(s)
    m.advance_to(START + timedelta(days=730))
    rows = m.outcomes(START, START + timedelta(days=729))
    assert len(rows) == 730 and len(rows[-1].channels) == 20
