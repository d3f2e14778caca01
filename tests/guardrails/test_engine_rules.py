"""Each engine rule at its edges: exact limits, a window's first and last minute, leaving learning."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from guardrails import (
    CampaignState,
    Decision,
    ExecutedChange,
    Forecast,
    Override,
    Policy,
    check_executed,
    evaluate,
)

NOW = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)
NY = ZoneInfo("America/New_York")
MakePolicy = Callable[..., Policy]


def run(
    policy: Policy,
    current: Mapping[str, float],
    proposed: Mapping[str, float],
    *,
    now: datetime = NOW,
    states: Mapping[str, CampaignState] | None = None,
    history: Sequence[ExecutedChange] = (),
    overrides: Sequence[Override] = (),
    forecast: Forecast | None = None,
) -> Decision:
    decision = evaluate(
        current=current,
        proposed=proposed,
        states=states or {},
        history=history,
        policy=policy,
        now=now,
        overrides=overrides,
        forecast=forecast,
    )
    # Whatever the engine lets through, the independent checker accepts.
    assert (
        check_executed(
            before=current,
            after=decision.adjusted,
            states=states or {},
            history=history,
            policy=policy,
            at=now,
            overrides=overrides,
            forecast=forecast,
        )
        == []
    )
    return decision


def outcomes(decision: Decision, rule: str) -> list[tuple[str | None, str]]:
    return [(v.key, v.outcome) for v in decision.verdicts if v.rule == rule]


def test_exactly_twenty_percent_passes_and_a_hair_more_is_clipped(small_policy: MakePolicy) -> None:
    p = small_policy(budget={"total_daily_max": 500_000})
    current = {"a": 100_000.0, "b": 100_000.0}
    exact = run(p, current, {"a": 120_000.0, "b": 80_000.0})
    assert exact.adjusted == {"a": 120_000.0, "b": 80_000.0}
    assert outcomes(exact, "max_swing_per_change") == [(None, "pass")]
    over = run(p, current, {"a": 100_000 * 1.200001, "b": 100_000 * (1 - 0.200001)})
    assert over.adjusted == {"a": 120_000.0, "b": 80_000.0}
    assert outcomes(over, "max_swing_per_change") == [("a", "clipped"), ("b", "clipped")]
    clipped = next(v for v in over.verdicts if v.rule == "max_swing_per_change")
    assert clipped.limit == pytest.approx(120_000.0) and clipped.proposed == pytest.approx(120_000.1)


@pytest.mark.parametrize(
    ("local", "frozen"),
    [
        (datetime(2026, 3, 15, 23, 59), False),  # the minute before
        (datetime(2026, 3, 16, 0, 0), True),  # first minute
        (datetime(2026, 3, 22, 23, 59), True),  # last minute of the whole end day
        (datetime(2026, 3, 23, 0, 0), False),  # the minute after
    ],
)
def test_freeze_window_first_and_last_minute_in_policy_time_zone(
    example_policy: Policy, local: datetime, frozen: bool
) -> None:
    now = local.replace(tzinfo=NY).astimezone(UTC)
    current = {"search": 5000.0, "social_prospecting": 5000.0, "retail_media": 3000.0, "video": 2000.0}
    proposed = {**current, "search": 5400.0, "video": 1600.0}
    decision = run(example_policy, current, proposed, now=now)
    assert decision.blocked is frozen
    assert decision.adjusted == (current if frozen else proposed)
    assert outcomes(decision, "freeze_window") == [(None, "blocked" if frozen else "pass")]


@pytest.mark.parametrize(
    ("window", "local", "frozen"),
    [
        # Spring forward: 2026-03-08 has 23 hours in New York; the window still ends at local midnight.
        ("{start: 2026-03-07, end: 2026-03-08}", datetime(2026, 3, 8, 23, 59), True),
        ("{start: 2026-03-07, end: 2026-03-08}", datetime(2026, 3, 9, 0, 0), False),
        # Fall back: 2026-11-01 has 25 hours; 01:30 happens twice and both are inside.
        ("{start: 2026-11-01, end: 2026-11-01}", datetime(2026, 11, 1, 1, 30, fold=1), True),
        ("{start: 2026-11-01, end: 2026-11-01}", datetime(2026, 11, 1, 23, 59), True),
        ("{start: 2026-11-01, end: 2026-11-01}", datetime(2026, 10, 31, 23, 59), False),
        ('{start: "2026-06-01T09:00", end: "2026-06-01T17:00"}', datetime(2026, 6, 1, 17, 0), True),
        # Bounds at wall times that never happen (02:30 on 2026-03-08) or happen twice (01:30 on 2026-11-01).
        ('{start: "2026-03-08T02:30", end: "2026-03-08T05:00"}', datetime(2026, 3, 8, 3, 0), True),
        # (02:30 read as EST is 03:30 EDT, read as EDT it is 01:30 EST: the window takes both.)
        ('{start: "2026-03-08T02:30", end: "2026-03-08T05:00"}', datetime(2026, 3, 8, 1, 30), True),
        ('{start: "2026-03-08T02:30", end: "2026-03-08T05:00"}', datetime(2026, 3, 8, 1, 29), False),
        ('{start: "2026-03-07T12:00", end: "2026-03-08T02:30"}', datetime(2026, 3, 8, 3, 30), True),
        ('{start: "2026-03-07T12:00", end: "2026-03-08T02:30"}', datetime(2026, 3, 8, 3, 31), False),
        ('{start: "2026-11-01T01:30", end: "2026-11-01T05:00"}', datetime(2026, 11, 1, 1, 15, fold=1), True),
        ('{start: "2026-10-31T12:00", end: "2026-11-01T01:30"}', datetime(2026, 11, 1, 1, 15, fold=1), True),
        ('{start: "2026-06-01T09:00", end: "2026-06-01T17:00"}', datetime(2026, 6, 1, 17, 1), False),
        ('{start: "2026-06-01T09:00", end: "2026-06-01T17:00"}', datetime(2026, 6, 1, 8, 59), False),
    ],
)
def test_freeze_windows_across_daylight_saving_changes(
    policy_from: Callable[[dict[str, Any]], Policy], window: str, local: datetime, frozen: bool
) -> None:
    import yaml

    policy = policy_from(
        {
            "timezone": "America/New_York",
            "budget": {"total_daily_max": 10_000},
            "channels": {"a": {}, "b": {}},
            "freeze_windows": [yaml.safe_load(window)],
        }
    )
    now = local.replace(tzinfo=NY).astimezone(UTC)
    decision = run(policy, {"a": 100.0, "b": 100.0}, {"a": 110.0, "b": 90.0}, now=now)
    assert decision.blocked is frozen


def test_channel_scoped_freeze_keeps_only_that_channel(small_policy: MakePolicy) -> None:
    p = small_policy(freeze_windows=[{"start": "2026-05-01", "end": "2026-05-10", "channels": ["a"]}])
    decision = run(p, {"a": 100.0, "b": 100.0}, {"a": 120.0, "b": 105.0})
    assert not decision.blocked and decision.blocked_keys == {"a": "freeze_window"}
    # The proposal's total (225) is kept as far as b's 20% swing allows.
    assert decision.adjusted == {"a": 100.0, "b": 120.0}


def test_a_campaign_leaving_learning(small_policy: MakePolicy) -> None:
    p = small_policy()
    ends = NOW + timedelta(hours=1)
    states = {"a": CampaignState(channel="a", learning=True, learning_until=ends), "b": CampaignState("b")}
    current, proposed = {"a": 100.0, "b": 100.0}, {"a": 110.0, "b": 90.0}
    during = run(p, current, proposed, now=ends - timedelta(minutes=1), states=states)
    assert during.adjusted == current and outcomes(during, "learning_phase") == [("a", "blocked")]
    assert during.blocked_keys == {"a": "learning_phase"}
    after = run(p, current, proposed, now=ends, states=states)
    assert after.adjusted == proposed and outcomes(after, "learning_phase") == [(None, "pass")]
    flag_cleared = run(p, current, proposed, states={"a": CampaignState("a", learning=False)})
    assert flag_cleared.adjusted == proposed


def test_learning_protection_can_be_turned_off(small_policy: MakePolicy) -> None:
    p = small_policy(learning_phase={"protect": False})
    decision = run(p, {"a": 100.0, "b": 100.0}, {"a": 110.0}, states={"a": CampaignState("a", learning=True)})
    assert decision.adjusted["a"] == 110.0


def test_blocked_key_frees_its_move_for_the_others_so_the_total_holds(small_policy: MakePolicy) -> None:
    p = small_policy(channels={"a": {}, "b": {}, "c": {"locked": True}})
    current = {"a": 1000.0, "b": 1000.0, "c": 1000.0}
    decision = run(p, current, {"a": 1150.0, "b": 1050.0, "c": 800.0})
    # c is locked, so the 200 it would have freed is missing: a and b give it back in proportion.
    assert decision.adjusted == {"a": 1045.45, "b": 954.55, "c": 1000.0}
    assert sum(decision.adjusted.values()) == pytest.approx(3000.0)
    assert outcomes(decision, "locked") == [("c", "blocked")]
    assert outcomes(decision, "redistribution") == [("a", "clipped"), ("b", "clipped")]


def test_caps_clip_the_total_and_spread_the_cut(small_policy: MakePolicy) -> None:
    p = small_policy(budget={"total_daily_max": 2300, "total_monthly_max": 66_000})
    decision = run(p, {"a": 1000.0, "b": 1000.0}, {"a": 1200.0, "b": 1200.0})
    assert sum(decision.adjusted.values()) == pytest.approx(2200.0)  # 66000 / 30 days binds before 2300
    assert decision.adjusted == {"a": 1100.0, "b": 1100.0}
    assert outcomes(decision, "total_monthly_max") == [(None, "clipped")]
    assert outcomes(decision, "total_daily_max") == [(None, "clipped")]


def test_rounding_to_the_cent_never_carries_a_total_over_the_cap(policy_from: Any) -> None:
    """A reviewer's demo: a plan at exactly the cap, whose amounts each rounded up to the cent,
    executed 15,000.01 against a 15,000 cap. The engine takes the cent back, from a budget that moves
    anyway, and the checker counts a total that rises over a cap by any amount."""
    keys = {k: {"min_daily": 0} for k in ("a", "b", "c", "d")}
    p = policy_from({"budget": {"total_daily_max": 15_000}, "channels": keys})
    current = {"a": 4000.0, "b": 6000.0, "c": 2500.0, "d": 2500.0}
    proposed = {"a": 4278.866, "b": 5958.776, "c": 2500.0, "d": 2262.358}  # sums to 15,000
    assert sum(proposed.values()) == pytest.approx(15_000.0, abs=1e-9)
    decision = run(p, current, proposed)
    assert round(sum(decision.adjusted.values()), 2) <= 15_000.0
    # the budget nobody moved stays as it was, though it has the most room above its minimum
    roomy = {"a": 3000.0, "b": 3000.0, "c": 6000.0, "d": 3000.0}
    moved = {"a": 3100.006, "b": 3100.006, "c": 6000.0, "d": 2799.988}  # sums to 15,000
    assert sum(moved.values()) == pytest.approx(15_000.0, abs=1e-9)
    assert run(p, roomy, moved).adjusted["c"] == 6000.0
    over = {"a": 4278.87, "b": 5958.78, "c": 2500.0, "d": 2262.36}  # what executed: 15,000.01
    found = check_executed(before=current, after=over, states={}, history=[], policy=p, at=NOW)
    assert [v.rule for v in found] == ["total_daily_max"]


def test_over_delivery_tightens_the_monthly_cap(small_policy: MakePolicy) -> None:
    p = small_policy(budget={"total_monthly_max": 60_000, "over_delivery": 0.25})
    decision = run(p, {"a": 1000.0, "b": 1000.0}, {"a": 1000.0, "b": 1000.0})
    assert sum(decision.adjusted.values()) == pytest.approx(1600.0)  # 60000 / (30 x 1.25)


def test_bounds_clip_and_a_key_below_its_minimum_only_moves_up(small_policy: MakePolicy) -> None:
    p = small_policy(channels={"a": {"min_daily": 1000, "max_daily": 1150}, "b": {}})
    decision = run(p, {"a": 1000.0, "b": 1000.0}, {"a": 1200.0, "b": 800.0})
    assert decision.adjusted["a"] == 1150.0 and ("a", "clipped") in outcomes(decision, "bounds")
    below = run(p, {"a": 500.0, "b": 1000.0}, {"a": 400.0, "b": 1100.0})
    assert below.adjusted["a"] == 500.0  # may not move further from its minimum
    rising = run(p, {"a": 500.0, "b": 1000.0}, {"a": 1000.0, "b": 500.0})
    assert rising.adjusted["a"] == 600.0  # toward the minimum, by at most the 20% swing


def test_weekly_swing_counts_every_budget_held_in_the_last_seven_days(small_policy: MakePolicy) -> None:
    p = small_policy(change={"max_swing_per_week": 0.3})
    history = [ExecutedChange("a", NOW - timedelta(days=3), before=1000.0, after=1200.0)]
    decision = run(p, {"a": 1200.0, "b": 1000.0}, {"a": 1440.0, "b": 800.0}, history=history)
    assert decision.adjusted["a"] == 1300.0  # 30% above the 1000 it held three days ago
    assert ("a", "clipped") in outcomes(decision, "max_swing_per_week")
    old = [ExecutedChange("a", NOW - timedelta(days=7), before=1000.0, after=1200.0)]
    assert run(p, {"a": 1200.0, "b": 1000.0}, {"a": 1440.0, "b": 800.0}, history=old).adjusted["a"] == 1440.0


def test_cooldown_blocks_until_exactly_the_minimum_days(small_policy: MakePolicy) -> None:
    p = small_policy(change={"min_days_between_changes": 3})
    history = [ExecutedChange("a", NOW - timedelta(days=3), before=900.0, after=1000.0)]
    current, proposed = {"a": 1000.0, "b": 1000.0}, {"a": 1100.0, "b": 900.0}
    early = run(p, current, proposed, now=NOW - timedelta(seconds=1), history=history)
    assert early.adjusted == current and early.blocked_keys == {"a": "min_days_between_changes"}
    assert run(p, current, proposed, history=history).adjusted == proposed


def test_soft_rule_yields_only_to_a_listed_owner_with_a_reason(small_policy: MakePolicy) -> None:
    p = small_policy(
        change={"min_days_between_changes": 3},
        enforcement={"min_days_between_changes": "soft"},
        owners=["U0OPS"],
    )
    history = [ExecutedChange("a", NOW - timedelta(days=1), before=900.0, after=1000.0)]
    current, proposed = {"a": 1000.0, "b": 1000.0}, {"a": 1100.0, "b": 900.0}
    stranger = [Override("min_days_between_changes", "a", "U0INTERN", "because")]
    no_reason = [Override("min_days_between_changes", "a", "U0OPS", "  ")]
    for overrides in ([], stranger, no_reason):
        assert run(p, current, proposed, history=history, overrides=overrides).adjusted == current
    owner = [Override("min_days_between_changes", "a", "U0OPS", "launch needs it")]
    decision = run(p, current, proposed, history=history, overrides=owner)
    assert decision.adjusted == proposed
    verdict = next(v for v in decision.verdicts if v.rule == "min_days_between_changes")
    assert verdict.outcome == "overridden" and "U0OPS: launch needs it" in verdict.message


def test_advisory_rule_only_warns(small_policy: MakePolicy) -> None:
    p = small_policy(enforcement={"max_swing_per_change": "advisory"})
    decision = run(p, {"a": 1000.0, "b": 1000.0}, {"a": 1500.0, "b": 500.0})
    assert decision.adjusted == {"a": 1500.0, "b": 500.0}
    assert outcomes(decision, "max_swing_per_change") == [("a", "warned"), ("b", "warned")]


def test_kill_switch_blocks_everything(small_policy: MakePolicy) -> None:
    decision = run(small_policy(kill_switch=True), {"a": 1000.0, "b": 1000.0}, {"a": 1100.0, "b": 900.0})
    assert decision.blocked and not decision.execute and decision.adjusted == {"a": 1000.0, "b": 1000.0}
    assert outcomes(decision, "kill_switch") == [(None, "blocked")]


def test_forecast_thresholds_block_or_warn(example_policy: Policy) -> None:
    current = {"search": 5000.0, "social_prospecting": 5000.0, "retail_media": 3000.0, "video": 2000.0}
    proposed = {**current, "search": 5400.0, "video": 1600.0}
    unsure = run(example_policy, current, proposed, forecast=Forecast(0.7, 0.05))
    assert unsure.blocked and outcomes(unsure, "min_probability_of_improvement") == [(None, "blocked")]
    small = run(example_policy, current, proposed, forecast=Forecast(0.95, 0.001))
    assert not small.blocked and outcomes(small, "min_expected_gain") == [(None, "warned")]


def test_unknown_keys_are_held_and_stray_proposals_refused(small_policy: MakePolicy) -> None:
    decision = run(small_policy(), {"a": 100.0, "b": 100.0, "zz": 50.0}, {"zz": 60.0})
    assert decision.adjusted["zz"] == 50.0 and decision.blocked_keys == {"zz": "bounds"}
    with pytest.raises(ValueError, match=r"no current budget: \['c'\]"):
        evaluate(
            current={"a": 1.0}, proposed={"c": 2.0}, states={}, history=[], policy=small_policy(), now=NOW
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(
            current={}, proposed={}, states={}, history=[], policy=small_policy(), now=datetime(2026, 1, 1)
        )


def test_campaign_keys_take_campaign_bounds_and_the_channel_lock(small_policy: MakePolicy) -> None:
    p = small_policy(
        channels={"a": {}, "b": {"locked": True}},
        campaigns={"a-brand": {"channel": "a", "max_daily": 105}},
    )
    states = {"a-brand": CampaignState("a"), "a-other": CampaignState("a"), "b-1": CampaignState("b")}
    current = {"a-brand": 100.0, "a-other": 100.0, "b-1": 100.0}
    decision = run(p, current, {"a-brand": 120.0, "a-other": 90.0, "b-1": 90.0}, states=states)
    assert decision.adjusted == {"a-brand": 105.0, "a-other": 95.0, "b-1": 100.0}


def test_approvals_and_autonomy(policy_from: Callable[[dict[str, Any]], Policy]) -> None:
    base: dict[str, Any] = {"budget": {"total_daily_max": 10_000}, "channels": {"a": {}, "b": {}}}
    two = policy_from({**base, "approval": {"approvers": ["U1", "U2"], "two_approvers_above": 0.15}})
    assert run(two, {"a": 1000.0, "b": 1000.0}, {"a": 1200.0, "b": 800.0}).approvals_required == 2
    assert run(two, {"a": 1000.0, "b": 1000.0}, {"a": 1100.0, "b": 900.0}).approvals_required == 1
    auto = policy_from(
        {**base, "autonomy": "autonomous_below", "approval": {"approvers": ["U1"], "autonomous_below": 0.05}}
    )
    assert run(auto, {"a": 1000.0, "b": 1000.0}, {"a": 1040.0, "b": 960.0}).approvals_required == 0
    assert run(auto, {"a": 1000.0, "b": 1000.0}, {"a": 1100.0, "b": 900.0}).approvals_required == 1
    shadow = run(
        policy_from({**base, "autonomy": "shadow"}), {"a": 1000.0, "b": 1000.0}, {"a": 1100.0, "b": 900.0}
    )
    assert shadow.adjusted == {"a": 1100.0, "b": 900.0} and shadow.execute is False


def test_verdicts_carry_the_numbers(example_policy: Policy) -> None:
    current = {"search": 5000.0, "social_prospecting": 5000.0, "retail_media": 3000.0, "video": 2000.0}
    decision = run(example_policy, current, {**current, "search": 8000.0})
    verdict = next(v for v in decision.verdicts if v.rule == "max_swing_per_change" and v.key == "search")
    assert (verdict.limit, verdict.proposed, verdict.adjusted, verdict.level) == (
        6000.0,
        8000.0,
        6000.0,
        "hard",
    )
    assert sum(decision.adjusted.values()) == 16000.0
    assert decision.changes["search"] == (5000.0, 6000.0)
    assert (
        decision.explain()[0]
        == "[clipped] total_daily_max (hard): proposed total 18,000.00 is above the cap 16,000.00"
    )
    assert [v.rule for v in decision.problems()][:2] == ["total_daily_max", "total_monthly_max"]
