"""The independent checker: does an executed change break the policy?

This module shares no code with :mod:`guardrails.engine` beyond the policy and record types. The engine
builds intervals and redistributes; the checker takes the change as done and tests each rule directly,
in its own terms (freeze windows in local wall time rather than UTC instants, swings as ratios, the
monthly cap as projected spend), so a bug in one is unlikely to hide in the other. The executor calls
it before and after executing; the demo counts what it finds as ``guardrail_violations``.

Rules enforced by the checker are the ``hard`` ones and the ``soft`` ones that no valid override (an
owner listed in ``policy.owners``, a non-empty reason) covers. ``advisory`` rules never violate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from budgetloop.errors import GuardrailViolation
from guardrails.policy import ChannelRule, FreezeWindow, Policy
from guardrails.records import CampaignState, ExecutedChange, Forecast, Override

ABS_TOL = 1e-6  # currency units: float noise, far below a cent
Enforced = Callable[[str, str | None], bool]


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    key: str | None
    limit: float | None
    value: float | None
    message: str

    def to_error(self) -> GuardrailViolation:
        return GuardrailViolation(self.rule, self.key, self.limit, self.value, self.message)


def check_executed(
    *,
    before: Mapping[str, float],
    after: Mapping[str, float],
    states: Mapping[str, CampaignState],
    history: Sequence[ExecutedChange],
    policy: Policy,
    at: datetime,
    overrides: Sequence[Override] = (),
    forecast: Forecast | None = None,
) -> list[Violation]:
    """Every rule the change ``before -> after`` (all keys' daily budgets) executed at ``at`` breaks.

    ``history`` holds the changes executed before this one (entries at or after ``at`` are ignored).
    An empty list means the change is allowed.
    """
    if at.tzinfo is None:
        raise ValueError(f"`at` must be timezone-aware, got naive {at.isoformat()}")
    keys = sorted(set(before) | set(after))
    old = {k: float(before.get(k, 0.0)) for k in keys}
    new = {k: float(after.get(k, old[k])) for k in keys}
    moved = [k for k in keys if abs(new[k] - old[k]) > ABS_TOL]
    if not moved:
        return []
    found: list[Violation] = []

    def enforced(rule: str, key: str | None) -> bool:
        level = policy.enforcement.get(rule, "hard")  # type: ignore[call-overload]
        if level == "advisory":
            return False
        if level == "hard":
            return True
        return not any(
            o.rule == rule and o.key in (key, None) and o.owner in policy.owners and o.reason.strip()
            for o in overrides
        )

    def report(rule: str, key: str | None, limit: float | None, value: float | None, message: str) -> None:
        if enforced(rule, key):
            found.append(Violation(rule, key, limit, value, message))

    if policy.kill_switch:
        report("kill_switch", None, None, None, "executed while the kill switch is on")
    local = at.astimezone(policy.zone)
    for window in policy.freeze_windows:
        if _inside(window, local):
            hit = moved if window.channels else [None]
            for key in hit:
                if key is None or _channel(policy, key, states) in (window.channels or ()):
                    report(
                        "freeze_window",
                        key,
                        None,
                        None,
                        f"executed at {local.isoformat()} inside "
                        f"the freeze window {window.start}..{window.end}",
                    )
    if forecast is not None:
        if forecast.probability_of_improvement < policy.change.min_probability_of_improvement:
            report(
                "min_probability_of_improvement",
                None,
                policy.change.min_probability_of_improvement,
                forecast.probability_of_improvement,
                "probability of improvement below the minimum",
            )
        if forecast.expected_gain < policy.change.min_expected_gain:
            report(
                "min_expected_gain",
                None,
                policy.change.min_expected_gain,
                forecast.expected_gain,
                "expected gain below the minimum",
            )
    for key in moved:
        found.extend(_key_violations(key, old[key], new[key], states, history, policy, at, enforced))
    found.extend(_total_violations(sum(old.values()), sum(new.values()), policy, enforced))
    return found


def _inside(window: FreezeWindow, local: datetime) -> bool:
    """Is the local wall time inside the window? Dates cover whole days; datetimes their whole minute."""
    start, end = window.start, window.end
    if isinstance(start, datetime) and start.tzinfo is not None:
        after_start = local >= start
    elif isinstance(start, datetime):
        after_start = local.replace(tzinfo=None) >= start
    else:
        after_start = local.date() >= start
    if isinstance(end, datetime) and end.tzinfo is not None:
        before_end = local < end + timedelta(minutes=1)
    elif isinstance(end, datetime):
        before_end = local.replace(tzinfo=None) < end + timedelta(minutes=1)
    else:
        before_end = local.date() <= end
    return after_start and before_end


def _channel(policy: Policy, key: str, states: Mapping[str, CampaignState]) -> str | None:
    if key in policy.campaigns:
        return policy.campaigns[key].channel
    if key in policy.channels:
        return key
    state = states.get(key)
    return state.channel if state is not None else None


def _rule_of(
    policy: Policy, key: str, states: Mapping[str, CampaignState]
) -> tuple[ChannelRule | None, bool]:
    """The key's own bounds (if any) and whether it or its channel is locked. (None, False): uncovered."""
    own = policy.campaigns.get(key) or policy.channels.get(key)
    channel = _channel(policy, key, states)
    parent = policy.channels.get(channel) if channel is not None else None
    if own is None and parent is None:
        return None, False
    return own, bool((own is not None and own.locked) or (parent is not None and parent.locked))


def _key_violations(
    key: str,
    b: float,
    a: float,
    states: Mapping[str, CampaignState],
    history: Sequence[ExecutedChange],
    policy: Policy,
    at: datetime,
    enforced: Enforced,
) -> list[Violation]:
    out: list[Violation] = []

    def report(rule: str, limit: float | None, message: str) -> None:
        if enforced(rule, key):
            out.append(Violation(rule, key, limit, a, f"{key}: {message}"))

    own, locked = _rule_of(policy, key, states)
    covered = own is not None or locked or _channel(policy, key, states) in policy.channels
    if not covered:
        report("bounds", None, "changed but the policy does not cover it")
    if locked:
        report("locked", None, "changed while locked")
    state = states.get(key)
    if policy.learning_phase.protect and state is not None and state.is_learning(at):
        report("learning_phase", None, "changed while learning")
    earlier = [h for h in history if h.key == key and h.at < at]
    days = policy.change.min_days_between_changes
    if earlier and days > 0:
        last = max(h.at for h in earlier)
        if at - last < timedelta(days=days):
            report("min_days_between_changes", days, f"changed {at - last} after its previous change")
    if not _within_ratio(b, a, policy.change.max_swing_per_change):
        report("max_swing_per_change", policy.change.max_swing_per_change, f"moved {b:,.2f} -> {a:,.2f}")
    reset = policy.learning_phase.max_change_without_reset
    if reset is not None and not _within_ratio(b, a, reset):
        report("learning_reset", reset, f"moved {b:,.2f} -> {a:,.2f}, enough to reset learning")
    week = policy.change.max_swing_per_week
    if week is not None:
        for h in earlier:
            if at - h.at < timedelta(days=7) and not _within_ratio(h.before, a, week):
                report("max_swing_per_week", week, f"{a:,.2f} is too far from {h.before:,.2f} held on {h.at}")
                break
    if own is not None:
        low, high = own.min_daily, own.max_daily
        if a < low - ABS_TOL and not (b < low and a >= b - ABS_TOL):
            report("bounds", low, f"{a:,.2f} is below min_daily {low:,.2f}")
        if high is not None and a > high + ABS_TOL and not (b > high and a <= b + ABS_TOL):
            report("bounds", high, f"{a:,.2f} is above max_daily {high:,.2f}")
    if a < -ABS_TOL:
        report("bounds", 0.0, f"negative budget {a:,.2f}")
    return out


def _within_ratio(reference: float, value: float, ratio: float) -> bool:
    return abs(value - reference) <= ratio * reference + ABS_TOL


def _total_violations(
    old_total: float, new_total: float, policy: Policy, enforced: Enforced
) -> list[Violation]:
    out: list[Violation] = []
    # A hard cap holds to the cent: a total that rises above it breaks it, even by a rounding.
    grew = new_total > old_total + ABS_TOL
    cap = policy.budget.total_daily_max
    if new_total > cap + ABS_TOL and grew and enforced("total_daily_max", None):
        out.append(
            Violation("total_daily_max", None, cap, new_total, f"total {new_total:,.2f} above {cap:,.2f}")
        )
    monthly = policy.budget.total_monthly_max
    if monthly is not None:
        spend = new_total * policy.budget.days_per_month * (1.0 + policy.budget.over_delivery)
        if spend > monthly + ABS_TOL and grew and enforced("total_monthly_max", None):
            out.append(
                Violation(
                    "total_monthly_max",
                    None,
                    monthly,
                    spend,
                    f"expected monthly spend {spend:,.2f} above {monthly:,.2f}",
                )
            )
    return out
