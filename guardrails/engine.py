"""The guardrail engine: a pure function from (budgets, proposal, states, history, policy, now) to a decision.

How a proposal becomes the budgets that may be executed:

1. **Portfolio blocks.** The kill switch, a freeze window covering every channel, and (when the planner's
   forecast is given) the probability and expected-gain thresholds keep every budget where it is.
2. **Key blocks.** A key that is locked, learning, inside a channel-scoped freeze window, in its cooldown
   (``min_days_between_changes`` since its last executed change) or not covered by the policy keeps its
   current budget.
3. **Intervals.** Every other key gets the interval its enforced rules allow: the swing per change, the
   swing against every budget it held in the last 7 days, the learning-reset limit and its min/max
   (a key already outside its bounds may only move toward them). Each interval contains the current
   budget, so "no change" is always allowed and the rules can never contradict each other.
4. **Totals.** The target total is the proposal's total, capped by the daily cap and the monthly cap
   (expected monthly spend = daily total x ``days_per_month`` x (1 + ``over_delivery``)). The free keys
   are moved together, in proportion to their size and within their intervals, until they reach it: the
   budget a block or a clip freed (or took) is redistributed among the keys still free to move.
5. **Cents.** Budgets are rounded to the cent inside their intervals without letting the total pass the cap.

Levels: ``hard`` rules are enforced; ``soft`` rules are enforced unless an :class:`Override` from an owner
listed in ``policy.owners`` names the rule (and the key, or ``None`` for all keys), in which case the
verdict is ``overridden``; ``advisory`` rules are never enforced and say ``warned`` where they would bite.
:func:`guardrails.checker.check_executed` audits the result independently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from guardrails.policy import FreezeWindow, Policy
from guardrails.records import (
    REDISTRIBUTION,
    CampaignState,
    Decision,
    ExecutedChange,
    Forecast,
    Outcome,
    Override,
    Verdict,
)

WEEK = timedelta(days=7)
_NO_STATE = CampaignState()


class _Rules:
    """Levels and overrides: is a rule enforced for a key, and what does a verdict say when it is not."""

    def __init__(self, policy: Policy, overrides: Sequence[Override]) -> None:
        self.policy = policy
        owners = set(policy.owners)
        self.granted = {(o.rule, o.key): o for o in overrides if o.owner in owners and o.reason.strip()}
        self.verdicts: list[Verdict] = []
        self.seen: set[str] = set()
        self.not_hard = {rule for rule, level in policy.enforcement.items() if level != "hard"}

    def relaxed(self, rule: str, key: str | None) -> tuple[Outcome, str] | None:
        """None when enforced; else the outcome to report and why."""
        if rule not in self.not_hard:
            return None
        level = self.policy.level(rule)
        if level == "advisory":
            return "warned", "advisory rule, not enforced"
        found = self.granted.get((rule, key)) or self.granted.get((rule, None))
        if found is None:
            return None
        return "overridden", f"overridden by {found.owner}: {found.reason.strip()}"

    def add(
        self,
        rule: str,
        key: str | None,
        outcome: Outcome,
        message: str,
        limit: float | None = None,
        proposed: float | None = None,
        adjusted: float | None = None,
    ) -> None:
        self.seen.add(rule)
        level = "hard" if rule == REDISTRIBUTION else self.policy.level(rule)
        self.verdicts.append(Verdict(rule, key, outcome, level, limit, proposed, adjusted, message))

    def block(
        self,
        rule: str,
        key: str | None,
        message: str,
        proposed: float | None = None,
        current: float | None = None,
    ) -> bool:
        """Record a rule that would block; True when it does (not relaxed)."""
        relaxed = self.relaxed(rule, key)
        if relaxed is None:
            self.add(rule, key, "blocked", message, None, proposed, current)
            return True
        self.add(rule, key, relaxed[0], f"{message} ({relaxed[1]})", None, proposed, proposed)
        return False


def evaluate(
    *,
    current: Mapping[str, float],
    proposed: Mapping[str, float],
    states: Mapping[str, CampaignState],
    history: Sequence[ExecutedChange],
    policy: Policy,
    now: datetime,
    overrides: Sequence[Override] = (),
    forecast: Forecast | None = None,
) -> Decision:
    """Apply the policy to a proposal. Keys missing from ``proposed`` keep their current budget."""
    if now.tzinfo is None:
        raise ValueError(f"`now` must be timezone-aware, got naive {now.isoformat()}")
    stray = sorted(set(proposed) - set(current))
    if stray:
        raise ValueError(f"proposed budgets for keys with no current budget: {stray}; add them to `current`")
    bad = sorted({k for m in (current, proposed) for k, v in m.items() if not math.isfinite(v)})
    bad += sorted(k for k, v in current.items() if v < 0)
    if bad:
        raise ValueError(f"budgets must be finite (and current ones >= 0); check the values of {bad}")
    rules = _Rules(policy, overrides)
    cur = {k: float(v) for k, v in current.items()}
    prop = {k: max(0.0, float(proposed.get(k, v))) for k, v in cur.items()}  # a negative proposal means 0
    moving = {k for k in cur if abs(prop[k] - cur[k]) >= 0.005}

    if _portfolio_blocked(rules, policy, now, forecast, bool(moving)):
        return _finish(rules, policy, cur, dict(cur), blocked=True, blocked_keys={})

    last_change: dict[str, datetime] = {}
    recent_levels: dict[str, list[float]] = {}
    for change in history:
        if change.at > now:
            continue
        if change.key not in last_change or change.at > last_change[change.key]:
            last_change[change.key] = change.at
        if now - change.at < WEEK:
            recent_levels.setdefault(change.key, []).append(float(change.before))

    scoped = [(s, e, w) for s, e, w in policy.freeze_intervals() if w.channels and s <= now < e]
    blocked_keys: dict[str, str] = {}
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    clips: list[tuple[str, str, float, float]] = []  # (rule, key, limit, proposed)
    for key, c in cur.items():
        state = states.get(key, _NO_STATE)
        limits = policy.limits_for(key, state.channel)
        reason = _key_block(
            rules, policy, key, state, limits, c, prop[key], key in moving, now, last_change, scoped
        )
        if reason is not None:
            blocked_keys[key] = reason
            continue
        assert limits is not None  # a key the policy does not cover is blocked above
        lo[key], hi[key] = _interval(
            rules, policy, key, limits, c, prop[key], recent_levels.get(key, ()), clips
        )

    adjusted = _allocate(rules, policy, cur, prop, lo, hi, blocked_keys)
    for rule, key, limit, p in clips:
        side = "above" if p > limit else "below"
        rules.add(
            rule, key, "clipped", f"{key}: {p:,.2f} is {side} the limit {limit:,.2f}", limit, p, adjusted[key]
        )
    for key in lo:
        target = min(max(prop[key], lo[key]), hi[key])
        if abs(adjusted[key] - target) >= 0.01:
            rules.add(
                REDISTRIBUTION,
                key,
                "clipped",
                f"{key}: moved from {target:,.2f} to {adjusted[key]:,.2f} so the total respects the caps "
                "and the proposal's total",
                None,
                prop[key],
                adjusted[key],
            )
    return _finish(rules, policy, cur, adjusted, blocked=False, blocked_keys=blocked_keys)


def _portfolio_blocked(
    rules: _Rules, policy: Policy, now: datetime, forecast: Forecast | None, moving: bool
) -> bool:
    blocked = False
    if policy.kill_switch:
        blocked |= rules.block("kill_switch", None, "the kill switch is on: nothing may change")
    for start, end, window in policy.freeze_intervals():
        if window.channels is None and start <= now < end:
            span = f"{window.start.isoformat()}..{window.end.isoformat()}"
            what = f"freeze window {span} ({window.reason or 'no reason given'})"
            blocked |= rules.block("freeze_window", None, f"{what} covers {now.isoformat()}")
    if forecast is not None and moving:
        need = policy.change.min_probability_of_improvement
        if forecast.probability_of_improvement < need:
            blocked |= rules.block(
                "min_probability_of_improvement",
                None,
                f"P(improvement) {forecast.probability_of_improvement:.3f} is below {need:.3f}",
            )
        gain = policy.change.min_expected_gain
        if forecast.expected_gain < gain:
            blocked |= rules.block(
                "min_expected_gain", None, f"expected gain {forecast.expected_gain:.4f} is below {gain:.4f}"
            )
    return blocked


def _key_block(
    rules: _Rules,
    policy: Policy,
    key: str,
    state: CampaignState,
    limits: tuple[float, float, bool] | None,
    c: float,
    p: float,
    moving: bool,
    now: datetime,
    last_change: Mapping[str, datetime],
    scoped: Sequence[tuple[datetime, datetime, FreezeWindow]],
) -> str | None:
    """The first rule that keeps ``key`` at its current budget, or None."""
    if limits is None:
        if moving:
            rules.add(
                "bounds",
                key,
                "blocked",
                f"{key}: not covered by the policy; add it under `channels` or `campaigns`",
                None,
                p,
                c,
            )
        return "bounds"
    checks: list[tuple[str, bool, str]] = [
        ("locked", limits[2], f"{key} is locked"),
        ("learning_phase", policy.learning_phase.protect and state.is_learning(now), f"{key} is learning"),
    ]
    channel = policy.channel_of(key, state.channel)
    for _s, end, window in scoped:
        if channel in (window.channels or ()):
            checks.append(("freeze_window", True, f"{key}: its channel is frozen until {end.isoformat()}"))
    days = policy.change.min_days_between_changes
    last = last_change.get(key)
    if days > 0 and last is not None and now - last < timedelta(days=days):
        checks.append(
            (
                "min_days_between_changes",
                True,
                f"{key} last changed {last.isoformat()}, less than {days:g} days ago",
            )
        )
    first: str | None = None
    for rule, applies, message in checks:
        if not applies:
            continue
        if not moving:
            if rules.relaxed(rule, key) is None:
                first = first or rule
            continue
        if rules.block(rule, key, message, p, c):
            first = first or rule
    return first


def _interval(
    rules: _Rules,
    policy: Policy,
    key: str,
    limits: tuple[float, float, bool],
    c: float,
    p: float,
    levels: Sequence[float],
    clips: list[tuple[str, str, float, float]],
) -> tuple[float, float]:
    """The budgets ``key`` may take: the intersection of its enforced rules' intervals (contains ``c``)."""
    intervals: list[tuple[str, float, float]] = []
    s = policy.change.max_swing_per_change
    intervals.append(("max_swing_per_change", c * (1 - s), c * (1 + s)))
    reset = policy.learning_phase.max_change_without_reset
    if reset is not None:
        intervals.append(("learning_reset", c * (1 - reset), c * (1 + reset)))
    week = policy.change.max_swing_per_week
    if week is not None:
        w_lo, w_hi = c * (1 - week), c * (1 + week)
        for b in levels:
            if b * (1 - week) > w_lo:
                w_lo = b * (1 - week)
            if b * (1 + week) < w_hi:
                w_hi = b * (1 + week)
        intervals.append(
            ("max_swing_per_week", w_lo, w_hi) if w_lo <= c <= w_hi else ("max_swing_per_week", c, c)
        )
    mn, mx = limits[0], limits[1]
    # A key outside its bounds may move toward them (or stay), never further away.
    intervals.append(("bounds", c, mx) if c < mn else ("bounds", mn, c) if c > mx else ("bounds", mn, mx))
    low, high = 0.0, math.inf
    for rule, r_lo, r_hi in intervals:
        relaxed = rules.relaxed(rule, key)
        if relaxed is None:
            # (comparisons rather than max/min: this line runs for every rule of every key)
            if r_lo > low:
                low = r_lo
            if r_hi < high:
                high = r_hi
        elif not r_lo - 1e-9 <= p <= r_hi + 1e-9:
            limit = r_hi if p > r_hi else r_lo
            side = "above" if p > r_hi else "below"
            message = f"{key}: {p:,.2f} is {side} {limit:,.2f} ({relaxed[1]})"
            rules.add(rule, key, relaxed[0], message, limit, p, p)
    if low <= p <= high:
        return low, high
    for rule, r_lo, r_hi in intervals:  # name the binding rules
        if rules.relaxed(rule, key) is not None:
            continue
        if p > high and r_hi == high:
            clips.append((rule, key, r_hi, p))
        elif p < low and r_lo == low:
            clips.append((rule, key, r_lo, p))
    return low, high


def _cap(rules: _Rules, policy: Policy, proposed_total: float) -> float:
    cap = math.inf
    named = [("total_daily_max", policy.budget.total_daily_max)]
    monthly = policy.budget.monthly_as_daily
    if monthly is not None:
        named.append(("total_monthly_max", monthly))
    for rule, limit in named:
        if proposed_total <= limit + 1e-9:
            continue
        relaxed = rules.relaxed(rule, None)
        if relaxed is not None:
            rules.add(
                rule,
                None,
                relaxed[0],
                f"total {proposed_total:,.2f} is above {limit:,.2f} ({relaxed[1]})",
                limit,
                proposed_total,
                proposed_total,
            )
        else:
            cap = min(cap, limit)
    return cap


def _allocate(
    rules: _Rules,
    policy: Policy,
    cur: Mapping[str, float],
    prop: Mapping[str, float],
    lo: Mapping[str, float],
    hi: Mapping[str, float],
    blocked_keys: Mapping[str, str],
) -> dict[str, float]:
    proposed_total = sum(prop.values())
    cap = _cap(rules, policy, proposed_total)
    frozen = sum(cur[k] for k in blocked_keys)
    free = list(lo)
    targets = [min(max(prop[k], lo[k]), hi[k]) for k in free]
    want = min(proposed_total, cap) - frozen
    lows = [lo[k] for k in free]
    highs = [hi[k] for k in free]
    want = min(max(want, sum(lows)), sum(highs))
    values = _water_fill(
        targets, lows, highs, [max(cur[k], t, 1.0) for k, t in zip(free, targets, strict=True)], want
    )
    adjusted = dict(cur)
    for key, value, low, high in zip(free, values, lows, highs, strict=True):
        adjusted[key] = _to_cents(value, low, high, cur[key])
    total = sum(adjusted.values())
    # Rounding to the cent must not carry a total that the caps held over them, even where the
    # proposal was already inside them (no clip: ``cap`` is then infinite).
    ceiling = cap
    for rule, limit_value in (
        ("total_daily_max", policy.budget.total_daily_max),
        ("total_monthly_max", policy.budget.monthly_as_daily),
    ):
        enforced = rules.relaxed(rule, None) is None
        if limit_value is not None and enforced and frozen + sum(values) <= limit_value + 1e-9:
            ceiling = min(ceiling, limit_value)
    limit = max(ceiling, sum(cur.values())) if frozen + sum(lows) > ceiling else ceiling
    if total > limit + 1e-9:  # rounding up to the cent pushed the total over: take cents back
        # from the keys that move anyway first, so an untouched budget stays untouched
        order = sorted(free, key=lambda k: (adjusted[k] == cur[k], -(adjusted[k] - lo[k])))
        for key in order:
            while total > limit + 1e-9 and adjusted[key] - 0.01 >= lo[key] - 1e-9:
                adjusted[key] = round(adjusted[key] - 0.01, 2)
                total -= 0.01
    for rule, limit_value in (
        ("total_daily_max", policy.budget.total_daily_max),
        ("total_monthly_max", policy.budget.monthly_as_daily),
    ):
        if (
            limit_value is not None
            and proposed_total > limit_value + 1e-9
            and rules.relaxed(rule, None) is None
        ):
            rules.add(
                rule,
                None,
                "clipped",
                f"proposed total {proposed_total:,.2f} is above the cap {limit_value:,.2f}",
                limit_value,
                proposed_total,
                round(sum(adjusted.values()), 2),
            )
    return adjusted


def _water_fill(
    targets: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    weights: Sequence[float],
    want: float,
) -> list[float]:
    """Move every value by ``lam x weight`` (clipped to its interval) so that they sum to ``want``."""
    need = want - sum(targets)
    if abs(need) <= 1e-7 * max(1.0, abs(want)):
        return list(targets)
    up = need > 0
    gaps = sorted(
        ((h - t) / w if up else (t - lo_) / w, w)
        for t, lo_, h, w in zip(targets, lows, highs, weights, strict=True)
        if (h > t if up else t > lo_)
    )
    slope = sum(w for _g, w in gaps)
    remaining = abs(need)
    lam = 0.0
    for gap, w in gaps:
        step = (gap - lam) * slope
        if step >= remaining:
            lam += remaining / slope
            break
        remaining -= step
        lam = gap
        slope -= w
    sign = 1.0 if up else -1.0
    return [
        min(max(t + sign * lam * w, lo_), h)
        for t, lo_, h, w in zip(targets, lows, highs, weights, strict=True)
    ]


def _to_cents(value: float, low: float, high: float, current: float) -> float:
    if abs(value - current) < 0.005:
        return current
    floor_high = math.floor(high * 100 + 1e-6) / 100 if math.isfinite(high) else math.inf
    ceil_low = math.ceil(low * 100 - 1e-6) / 100
    if ceil_low > floor_high:
        return current
    return min(max(round(value, 2), ceil_low), floor_high)


def _finish(
    rules: _Rules,
    policy: Policy,
    cur: Mapping[str, float],
    adjusted: dict[str, float],
    *,
    blocked: bool,
    blocked_keys: dict[str, str],
) -> Decision:
    evaluated = [
        "kill_switch",
        "freeze_window",
        "learning_phase",
        "locked",
        "min_days_between_changes",
        "max_swing_per_change",
        "bounds",
        "total_daily_max",
    ]
    if policy.change.max_swing_per_week is not None:
        evaluated.append("max_swing_per_week")
    if policy.learning_phase.max_change_without_reset is not None:
        evaluated.append("learning_reset")
    if policy.budget.total_monthly_max is not None:
        evaluated.append("total_monthly_max")
    for rule in evaluated:
        if rule not in rules.seen:
            rules.add(rule, None, "pass", "no key is held back by this rule")
    changes = {k: (cur[k], v) for k, v in adjusted.items() if v != cur[k]}
    base = sum(cur.values())
    moved = sum(abs(b - a) for a, b in changes.values())
    relative = moved / base if base > 0 else (math.inf if moved else 0.0)
    return Decision(
        adjusted=adjusted,
        verdicts=rules.verdicts,
        blocked=blocked,
        blocked_keys=blocked_keys,
        approvals_required=_approvals(policy, relative),
        execute=bool(changes) and not blocked and policy.autonomy != "shadow",
        relative_move=relative,
        changes=changes,
    )


def _approvals(policy: Policy, relative_move: float) -> int:
    approval = policy.approval
    if policy.autonomy == "autonomous_below" and approval.autonomous_below is not None:
        if relative_move < approval.autonomous_below:
            return 0
    elif not approval.required:
        return 0
    if approval.two_approvers_above is not None and relative_move > approval.two_approvers_above:
        return 2
    return 1
