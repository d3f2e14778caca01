"""The demo's policy against its market: the two must describe the same channels and budgets.

A demo starts from the scenario's budgets under the policy's rules, so before anything is written
the policy must name exactly the scenario's channels and the starting budgets must already obey it
(a loop that starts above its own cap breaks it every day until a change it may not want to make).
Without ``--policy`` the demo takes the example policy; for a market whose channels differ from the
example's, it keeps the example's rules and derives the budget section and the channel bounds from
the scenario's starting budgets (:func:`policy_for_scenario`). A policy that names no approvers
(every change would wait for an approval nobody may give) gets the simulated marketers as its
approvers, and the demo says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from budgetloop.errors import InputError
from connectors.sandbox.scenario import Scenario
from guardrails.loading import parse_policy
from guardrails.policy import Policy

#: The simulated marketers who click in the demo's Slack when the policy names no approvers.
DEMO_APPROVERS = ("U0MARKETER1", "U0MARKETER2")

#: Derived channel bounds, as multiples of the scenario's starting daily budget (the example
#: policy's own bounds are 0-0.33x and 1.5-3.5x of the example market's budgets).
MIN_SHARE_OF_START = 0.25
MAX_MULTIPLE_OF_START = 2.0


def check_policy_fits_market(
    policy: Policy, scenario: Scenario, *, source: str, scenario_source: str
) -> None:
    """Raise :class:`InputError` naming every mismatch between the policy and the scenario's market."""
    channels = scenario.channel_names
    problems: list[str] = []
    unknown = [ch for ch in policy.channels if ch not in channels]
    if unknown:
        problems.append(
            f"`channels` names {unknown}, which the scenario ({scenario_source}) does not have; "
            f"its channels are {channels}"
        )
    missing = [ch for ch in channels if ch not in policy.channels]
    if missing:
        problems.append(
            f"`channels` has no entry for the scenario's {missing}: add one per channel "
            "(e.g. `"
            + missing[0]
            + ": {min_daily: 0, max_daily: ...}`), or the loop would move them unbounded"
        )
    for key, campaign in policy.campaigns.items():
        if campaign.channel not in channels:
            problems.append(f"`campaigns.{key}.channel` is {campaign.channel!r}, not one of {channels}")
    budgets = {c.name: float(c.daily_budget) for c in scenario.channels}
    total = sum(budgets.values())
    if total > policy.budget.total_daily_max + 0.005:
        problems.append(
            f"the scenario's starting daily budgets sum to {total:,.2f}, above `budget.total_daily_max` "
            f"{policy.budget.total_daily_max:,.2f}: raise the cap or lower the scenario's `daily_budget`s "
            "(the loop starts from them)"
        )
    monthly = policy.budget.monthly_as_daily
    if monthly is not None and total > monthly + 0.005:
        problems.append(
            f"the scenario's starting daily budgets sum to {total:,.2f}, which over "
            f"{policy.budget.days_per_month:g} days exceeds `budget.total_monthly_max` "
            f"{policy.budget.total_monthly_max:,.2f}: raise the monthly cap or lower the budgets"
        )
    for ch, rule in policy.channels.items():
        if ch not in budgets:
            continue
        b = budgets[ch]
        if b < rule.min_daily - 0.005:
            problems.append(
                f"`channels.{ch}.min_daily` is {rule.min_daily:,.2f}, above the scenario's starting "
                f"daily budget {b:,.2f}: lower it or raise the channel's `daily_budget`"
            )
        if rule.max_daily is not None and b > rule.max_daily + 0.005:
            problems.append(
                f"`channels.{ch}.max_daily` is {rule.max_daily:,.2f}, below the scenario's starting "
                f"daily budget {b:,.2f}: raise it or lower the channel's `daily_budget`"
            )
    if problems:
        raise InputError(
            "the guardrail policy does not fit the scenario's market:\n"
            + "\n".join(f"  - {p}" for p in problems),
            file=source,
        )


def policy_for_scenario(example_text: str, scenario: Scenario) -> str:
    """The example policy's rules for another market: the same change, learning, approval and
    monitoring rules, with the budget section and the channel bounds derived from the scenario's
    starting budgets (total cap = their sum, so the loop reallocates rather than grows spend; each
    channel between a quarter and twice its budget) and without the example's business calendar
    (its freeze windows belong to the example's year; the scenario brings its own)."""
    doc = _mapping(yaml.safe_load(example_text))
    budgets = {c.name: float(c.daily_budget) for c in scenario.channels}
    total = round(sum(budgets.values()), 2)
    budget = dict(_mapping(doc.get("budget") or {}))
    days = float(budget.get("days_per_month", 30))
    budget.update(total_daily_max=total, total_monthly_max=round(total * days, 2), currency=scenario.currency)
    doc["budget"] = budget
    doc["channels"] = {
        name: {
            "min_daily": round(MIN_SHARE_OF_START * b, 2),
            "max_daily": round(min(MAX_MULTIPLE_OF_START * b, total), 2),
        }
        for name, b in budgets.items()
    }
    doc.pop("campaigns", None)
    doc["freeze_windows"] = []
    return (
        f"# Derived by `budgetloop demo` for scenario {scenario.name!r}: the example policy's rules, "
        "budget and bounds from the scenario's starting budgets.\n" + yaml.safe_dump(doc, sort_keys=False)
    )


def with_demo_approvers(text: str, policy: Policy, *, source: str) -> tuple[str, Policy, bool]:
    """The policy with the simulated marketers as approvers where it names none (else unchanged)."""
    if policy.approval.approvers:
        return text, policy, False
    doc = _mapping(yaml.safe_load(text))
    approval = dict(_mapping(doc.get("approval") or {}))
    approval["approvers"] = list(DEMO_APPROVERS)
    doc["approval"] = approval
    new_text = (
        "# `budgetloop demo`: the policy named no approvers, so the simulated marketers approve.\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    return new_text, parse_policy(new_text, source=source), True


def with_scenario_freezes(
    text: str, policy: Policy, scenario: Scenario, *, source: str
) -> tuple[str, Policy, int]:
    """The policy with every ``freeze`` event of the scenario as freeze windows, and how many it added.

    The scenario's days are the market's days, which the demo runs in UTC, so each event freezes
    every channel from 00:00 UTC on its first day to the end of its last, whatever the policy's time
    zone. The policy refuses windows that overlap for a channel, so the event is cut where the
    policy's own windows already freeze some channels: those stretches get a window for the other
    channels only, and stretches where every channel is frozen get none. The windows go into the
    stored policy itself, so the engine that proposes, the executor's last check and the independent
    checker that counts violations all see them.
    """
    zone = ZoneInfo(policy.timezone)
    channels = list(policy.channels)
    own = [
        (*w.interval(zone), None if w.channels is None else set(w.channels)) for w in policy.freeze_windows
    ]
    added: list[dict[str, Any]] = []
    for start, stop, reason in _merged_freezes(scenario):
        cuts = sorted({start, stop} | {t for a, b, _ in own for t in (a, b) if start < t < stop})
        pieces: list[tuple[datetime, datetime, list[str]]] = []
        for a, b in pairwise(cuts):
            frozen: set[str] = set()
            for wa, wb, names in own:
                if wa <= a and b <= wb:
                    frozen |= set(channels) if names is None else names
            free = [ch for ch in channels if ch not in frozen]
            if not free:
                continue
            if pieces and pieces[-1][1] == a and pieces[-1][2] == free:
                pieces[-1] = (pieces[-1][0], b, free)
            else:
                pieces.append((a, b, free))
        for a, b, free in pieces:
            # A datetime end blocks its whole minute: ending at b - 1 minute closes the window at b.
            window: dict[str, Any] = {
                "start": a.isoformat(),
                "end": (b - timedelta(minutes=1)).isoformat(),
                "reason": reason,
            }
            if len(free) < len(channels):
                window["channels"] = free
            added.append(window)
    if not added:
        return text, policy, 0
    doc = _mapping(yaml.safe_load(text))
    doc["freeze_windows"] = list(doc.get("freeze_windows") or []) + added
    new_text = (
        "# `budgetloop demo`: the scenario's freeze events added as freeze windows (UTC days).\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    return new_text, parse_policy(new_text, source=source), len(added)


def _merged_freezes(scenario: Scenario) -> list[tuple[datetime, datetime, str]]:
    """The scenario's freeze events as [start, stop) UTC spans, overlapping or touching ones joined
    (the policy refuses overlapping windows, and a scenario may list events that overlap)."""
    spans = sorted(
        (
            datetime.combine(e.start, time(), tzinfo=UTC),
            datetime.combine(e.end + timedelta(days=1), time(), tzinfo=UTC),
            e.reason,
        )
        for e in scenario.freezes()
    )
    merged: list[tuple[datetime, datetime, list[str]]] = []
    for start, stop, reason in spans:
        if merged and start <= merged[-1][1]:
            first, last, reasons = merged[-1]
            merged[-1] = (first, max(last, stop), reasons if reason in reasons else [*reasons, reason])
        else:
            merged.append((start, stop, [reason]))
    return [
        (start, stop, "scenario freeze" + (": " + "; ".join(r for r in reasons if r) if any(reasons) else ""))
        for start, stop, reasons in merged
    ]


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):  # parse_policy has already accepted the text
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return dict(value)
