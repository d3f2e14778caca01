"""Property-based tests: random policies, states, histories and proposals.

For every generated case: nothing the engine lets through breaks a hard rule (the independent checker
finds no violation), the engine is idempotent on its own output, and it never takes the total above the
caps (unless the budgets already were, in which case it never raises the total).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrails import CampaignState, Decision, ExecutedChange, Override, Policy, check_executed, evaluate

FAST = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPOCH = datetime(2026, 3, 1, tzinfo=UTC)
LEVELS = st.sampled_from(["hard", "hard", "soft", "soft", "advisory"])
OVERRIDABLE = [
    "freeze_window",
    "learning_phase",
    "locked",
    "min_days_between_changes",
    "max_swing_per_change",
    "max_swing_per_week",
    "learning_reset",
    "bounds",
    "total_daily_max",
    "total_monthly_max",
]


@dataclass(frozen=True)
class Case:
    policy: Policy
    current: dict[str, float]
    proposed: dict[str, float]
    states: dict[str, CampaignState]
    history: list[ExecutedChange]
    now: datetime
    overrides: list[Override]

    def evaluate(self, proposed: dict[str, float] | None = None) -> Decision:
        return evaluate(
            current=self.current,
            proposed=self.proposed if proposed is None else proposed,
            states=self.states,
            history=self.history,
            policy=self.policy,
            now=self.now,
            overrides=self.overrides,
        )


# Strategies built once: building them inside the composite costs more than the engine itself.
MONEY = st.integers(min_value=0, max_value=2_000_000).map(lambda cents: cents / 100)
UNIT = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
COIN = st.booleans()
DIE = st.integers(min_value=0, max_value=15)
SMALL = st.integers(min_value=0, max_value=6)
ZONES = st.sampled_from(["UTC", "America/New_York", "Europe/Paris", "Asia/Kolkata"])
DAYS_PER_MONTH = st.sampled_from([28, 30, 30.4375, 31])
OVER_DELIVERY = st.sampled_from([0.0, 0.0, 0.1, 0.25])
COOLDOWN = st.sampled_from([0, 0.5, 1, 3, 7])
RULE = st.sampled_from(OVERRIDABLE)
OWNER = st.sampled_from(["U0OWNER", "U0OTHER"])
REASON = st.sampled_from(["", "launch"])
MINUTES = st.integers(min_value=0, max_value=60 * 24 * 60)
BEFORE_NOW = st.integers(min_value=1, max_value=60 * 24 * 10)
HOURS = st.integers(min_value=-48, max_value=48)
HOUR = st.integers(min_value=0, max_value=23)
MINUTE = st.sampled_from([0, 1, 29, 30, 59])


def _maybe(draw: st.DrawFn, value: Any) -> Any:
    return value if draw(COIN) else None


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = 1 + draw(SMALL) % 8
    names = [f"c{i}" for i in range(n)]
    channels: dict[str, dict[str, Any]] = {}
    for name in names:
        low = round(draw(MONEY) / 10, 2) if draw(DIE) < 5 else 0.0
        high = _maybe(draw, low + draw(UNIT) * 20_000)
        channels[name] = {"min_daily": low, "max_daily": high, "locked": draw(DIE) < 3}
    min_sum = sum(c["min_daily"] for c in channels.values())
    daily = min_sum + 1 + draw(UNIT) * 60_000
    monthly = _maybe(draw, min_sum * 31 * 1.25 + 1 + draw(UNIT) * 2_000_000)
    enforcement = {draw(RULE): draw(LEVELS) for _ in range(draw(SMALL) % 4)}
    owners = ["U0OWNER"] if any(level == "soft" for level in enforcement.values()) or draw(COIN) else []
    windows = []
    start = date(2026, 3, 1) + timedelta(days=draw(DIE))
    for _ in range(draw(SMALL) % 3):
        end = start + timedelta(days=draw(SMALL) % 5)
        scope = _maybe(draw, sorted({names[draw(SMALL) % n] for _ in range(1 + draw(SMALL) % 2)}))
        if draw(COIN):  # dates: whole days
            bounds = (start.isoformat(), end.isoformat())
        else:  # wall times, often inside a daylight-saving change (2026-03-08 New York, 03-29 Paris)
            first = datetime.combine(start, time(draw(HOUR), draw(MINUTE)))
            last = first + timedelta(minutes=draw(MINUTES) % (5 * 24 * 60))
            bounds = (first.isoformat(), last.isoformat())
            end = max(end, last.date())
        windows.append({"start": bounds[0], "end": bounds[1], "channels": scope})
        start = end + timedelta(days=2 + draw(DIE))
    doc: dict[str, Any] = {
        "timezone": draw(ZONES),
        "kill_switch": draw(DIE) == 0,
        "budget": {
            "total_daily_max": daily,
            "total_monthly_max": monthly,
            "days_per_month": draw(DAYS_PER_MONTH),
            "over_delivery": draw(OVER_DELIVERY),
        },
        "change": {
            "max_swing_per_change": 0.01 + 0.99 * draw(UNIT),
            "max_swing_per_week": _maybe(draw, 0.01 + 2 * draw(UNIT)),
            "min_days_between_changes": draw(COOLDOWN),
        },
        "learning_phase": {
            "protect": draw(COIN),
            "max_change_without_reset": _maybe(draw, 0.05 + 0.95 * draw(UNIT)),
        },
        "freeze_windows": windows,
        "channels": channels,
        "enforcement": enforcement,
        "owners": owners,
    }
    policy = Policy.model_validate(doc)
    keys = names + (["x0"] if draw(DIE) < 3 else [])  # sometimes a key the policy does not cover
    # Budgets around the cap (total between 0 and twice the daily cap), so caps bind often in both directions.
    current = {k: round(2 * daily * draw(UNIT) / len(keys), 2) if draw(DIE) else 0.0 for k in keys}
    proposed: dict[str, float] = {}
    for k in keys:
        mode = draw(SMALL) % 4
        if mode == 0:
            continue  # unchanged
        proposed[k] = (
            round(2 * daily * draw(UNIT) / len(keys), 2)
            if mode == 1
            else round(current[k] * 3 * draw(UNIT), 2)
        )
    now = EPOCH + timedelta(minutes=draw(MINUTES))
    states = {
        k: CampaignState(
            channel=k if k in names else (names[0] if draw(COIN) else None),
            learning=draw(SMALL) == 0,
            learning_until=_maybe(draw, now + timedelta(hours=draw(HOURS))),
        )
        for k in keys
    }
    history = [
        ExecutedChange(
            key=keys[draw(SMALL) % len(keys)],
            at=now - timedelta(minutes=draw(BEFORE_NOW)),
            before=draw(MONEY),
            after=draw(MONEY),
        )
        for _ in range(draw(SMALL))
    ]
    soft = sorted(rule for rule, level in enforcement.items() if level == "soft")
    overrides = [
        Override(
            rule=soft[draw(SMALL) % len(soft)] if soft and draw(COIN) else draw(RULE),
            key=_maybe(draw, keys[draw(SMALL) % len(keys)]),
            owner=draw(OWNER),
            reason=draw(REASON),
        )
        for _ in range(draw(SMALL) % 3)
    ]
    return Case(policy, current, proposed, states, history, now, overrides)


def _no_hard_rule_broken(case: Case) -> None:
    decision = case.evaluate()
    found = check_executed(
        before=case.current,
        after=decision.adjusted,
        states=case.states,
        history=case.history,
        policy=case.policy,
        at=case.now,
        overrides=case.overrides,
    )
    assert found == [], (found, decision.adjusted)
    assert all(round(v, 2) == v or v == case.current[k] for k, v in decision.adjusted.items())
    if decision.blocked:
        assert decision.adjusted == case.current


def _idempotent(case: Case) -> None:
    first = case.evaluate().adjusted
    again = case.evaluate(first).adjusted
    assert again == first


def _total_within_caps(case: Case) -> None:
    decision = case.evaluate()
    budget = case.policy.budget
    caps = [budget.total_daily_max]
    if budget.monthly_as_daily is not None:
        caps.append(budget.monthly_as_daily)
    enforced = [
        cap
        for cap, rule in zip(caps, ["total_daily_max", "total_monthly_max"], strict=False)
        if case.policy.level(rule) == "hard"
    ]
    cap = min(enforced, default=math.inf)
    total, before = sum(decision.adjusted.values()), sum(case.current.values())
    assert total <= cap + 1e-6 or total <= before + 0.005 * len(case.current) + 1e-6


# Generating a case costs far more than checking it, so each generated case is checked for all three
# properties: every property sees the full number of examples.
@FAST
@given(cases())
def test_no_hard_rule_broken_idempotent_and_within_caps(case: Case) -> None:
    _no_hard_rule_broken(case)
    _idempotent(case)
    _total_within_caps(case)


@pytest.mark.slow
@SLOW
@given(cases())
def test_properties_hold_on_many_more_cases(case: Case) -> None:
    _no_hard_rule_broken(case)
    _idempotent(case)
    _total_within_caps(case)
