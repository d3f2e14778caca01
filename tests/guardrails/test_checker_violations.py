"""The independent checker finds each kind of violation in an executed change, and nothing in a clean one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from budgetloop.errors import GuardrailViolation
from guardrails import CampaignState, ExecutedChange, Forecast, Override, Policy, check_executed

AT = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)
MakePolicy = Callable[..., Policy]


def rules_broken(
    policy: Policy,
    before: Mapping[str, float],
    after: Mapping[str, float],
    *,
    at: datetime = AT,
    states: Mapping[str, CampaignState] | None = None,
    history: Sequence[ExecutedChange] = (),
    overrides: Sequence[Override] = (),
    forecast: Forecast | None = None,
) -> list[tuple[str, str | None]]:
    found = check_executed(
        before=before,
        after=after,
        states=states or {},
        history=history,
        policy=policy,
        at=at,
        overrides=overrides,
        forecast=forecast,
    )
    return [(v.rule, v.key) for v in found]


def test_a_clean_change_and_no_change_pass(small_policy: MakePolicy) -> None:
    p = small_policy(kill_switch=True)
    assert rules_broken(p, {"a": 100.0, "b": 100.0}, {"a": 100.0, "b": 100.0}) == []
    assert rules_broken(small_policy(), {"a": 100.0, "b": 100.0}, {"a": 120.0, "b": 80.0}) == []


def test_swings_bounds_and_caps(small_policy: MakePolicy) -> None:
    p = small_policy(
        budget={"total_daily_max": 300, "total_monthly_max": 7500},
        channels={"a": {"max_daily": 130}, "b": {"min_daily": 90}},
        change={"max_swing_per_week": 0.3},
    )
    assert rules_broken(p, {"a": 100.0, "b": 100.0}, {"a": 120.01, "b": 100.0}) == [
        ("max_swing_per_change", "a")
    ]
    assert rules_broken(p, {"a": 125.0, "b": 100.0}, {"a": 140.0, "b": 85.0}) == [
        ("bounds", "a"),
        ("bounds", "b"),
    ]
    history = [ExecutedChange("a", AT - timedelta(days=6), before=90.0, after=110.0)]
    assert rules_broken(p, {"a": 110.0, "b": 100.0}, {"a": 120.0, "b": 100.0}, history=history) == [
        ("max_swing_per_week", "a")
    ]
    # 260/day x 30 days = 7800 > 7500; the daily cap (300) is not reached.
    assert rules_broken(p, {"a": 110.0, "b": 130.0}, {"a": 130.0, "b": 130.0}) == [
        ("total_monthly_max", None)
    ]
    # Already over the cap: lowering the total is fine, raising it is not.
    over = small_policy(budget={"total_daily_max": 150})
    assert rules_broken(over, {"a": 100.0, "b": 100.0}, {"a": 90.0, "b": 100.0}) == []
    assert rules_broken(over, {"a": 100.0, "b": 100.0}, {"a": 110.0, "b": 100.0}) == [
        ("total_daily_max", None)
    ]


def test_blocks(small_policy: MakePolicy) -> None:
    p = small_policy(
        channels={"a": {"locked": True}, "b": {}},
        change={"min_days_between_changes": 2},
        freeze_windows=[{"start": "2026-05-04", "end": "2026-05-04", "channels": ["b"]}],
    )
    states = {"b": CampaignState("b", learning=True)}
    history = [ExecutedChange("b", AT - timedelta(days=1), before=90.0, after=100.0)]
    found = rules_broken(
        p, {"a": 100.0, "b": 100.0}, {"a": 110.0, "b": 110.0}, states=states, history=history
    )
    assert sorted(found, key=str) == sorted(
        [("locked", "a"), ("learning_phase", "b"), ("min_days_between_changes", "b"), ("freeze_window", "b")],
        key=str,
    )
    assert rules_broken(p, {"a": 100.0, "zz": 1.0}, {"a": 100.0, "zz": 1.1}) == [("bounds", "zz")]
    assert rules_broken(small_policy(kill_switch=True), {"a": 1.0}, {"a": 1.1}) == [("kill_switch", None)]


def test_freeze_window_is_read_in_local_wall_time(example_policy: Policy) -> None:
    ny = ZoneInfo("America/New_York")
    before = {"search": 5000.0, "video": 2000.0}
    after = {"search": 5500.0, "video": 2000.0}
    last_minute = datetime(2026, 12, 1, 23, 59, tzinfo=ny)
    assert ("freeze_window", None) in rules_broken(example_policy, before, after, at=last_minute)
    assert rules_broken(example_policy, before, after, at=last_minute + timedelta(minutes=1)) == []


def test_levels_and_overrides(small_policy: MakePolicy) -> None:
    p = small_policy(
        enforcement={"max_swing_per_change": "soft", "bounds": "advisory"},
        owners=["U0OPS"],
        channels={"a": {"max_daily": 100}, "b": {}},
    )
    before, after = {"a": 100.0, "b": 100.0}, {"a": 150.0, "b": 100.0}
    assert rules_broken(p, before, after) == [("max_swing_per_change", "a")]
    granted = [Override("max_swing_per_change", "a", "U0OPS", "promo")]
    assert rules_broken(p, before, after, overrides=granted) == []
    stranger = [Override("max_swing_per_change", None, "U0NOBODY", "promo")]
    assert rules_broken(p, before, after, overrides=stranger) == [("max_swing_per_change", "a")]


def test_forecast_rules_and_error_conversion(example_policy: Policy) -> None:
    before, after = {"search": 5000.0}, {"search": 5100.0}
    found = check_executed(
        before=before,
        after=after,
        states={},
        history=[],
        policy=example_policy,
        at=AT,
        forecast=Forecast(probability_of_improvement=0.5, expected_gain=0.0),
    )
    assert [v.rule for v in found] == ["min_probability_of_improvement"]  # min_expected_gain is advisory
    error = found[0].to_error()
    assert isinstance(error, GuardrailViolation) and error.limit == 0.8
    assert "guardrail `min_probability_of_improvement` broken for the portfolio" in str(error)
    with pytest.raises(ValueError, match="timezone-aware"):
        check_executed(
            before={}, after={}, states={}, history=[], policy=example_policy, at=datetime(2026, 1, 1)
        )
