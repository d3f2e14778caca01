"""What the executor checks right before it moves money: the live platform state and the guardrails.

:func:`read_live` asks every platform for its campaigns, their daily budgets and learning status.
:func:`recheck` runs the guardrail engine (:func:`guardrails.engine.evaluate`) *and* the independent
checker (:func:`guardrails.checker.check_executed`) on the request as it would execute now, with the
executed-change history from the database, and returns what stops it (empty: go). Budget keys are
channels, as the planner proposes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from budgetloop.db.loop import ChangeRequest, ChangeRequestItem
from budgetloop.db.metrics import Campaign
from connectors.base import Connector
from guardrails.checker import check_executed
from guardrails.engine import evaluate
from guardrails.policy import Policy
from guardrails.records import CampaignState, ExecutedChange, Override

# A rollback restores budgets the policy accepted before; only these stops hold it back.
ROLLBACK_STOPS = frozenset({"kill_switch", "freeze_window"})
HISTORY_DAYS = 35  # the rules look back at most a week (cooldowns: at most the policy's days); keep a month


@dataclass(frozen=True)
class LiveState:
    """Every campaign on every platform, keyed by (platform, campaign external id)."""

    budgets: dict[tuple[str, str], float] = field(default_factory=dict)
    channels: dict[tuple[str, str], str] = field(default_factory=dict)
    learning: dict[tuple[str, str], bool] = field(default_factory=dict)

    def budget(self, platform: str, campaign: str) -> float:
        """The live budget, NaN when the platform does not list the campaign."""
        return self.budgets.get((platform, campaign), float("nan"))

    def by_channel(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in self.budgets.items():
            channel = self.channels.get(key, key[1])
            out[channel] = round(out.get(channel, 0.0) + value, 2)
        return out

    def learning_channels(self) -> set[str]:
        return {self.channels.get(k, k[1]) for k, on in self.learning.items() if on}


def read_live(
    platforms: Mapping[str, Connector], known: Mapping[tuple[str, str], str] | None = None
) -> LiveState:
    """Ask each platform for its budgets and learning status; raises ConnectorError when one does not answer.

    ``known``: (platform, campaign) -> channel already on record (the ``campaigns`` table); a platform
    is asked for its campaign list only when it reports a campaign not in it.
    """
    live = LiveState()
    for name, connector in sorted(platforms.items()):
        budgets = connector.get_budgets()
        if known is None or any((name, campaign) not in known for campaign in budgets):
            for info in connector.list_campaigns():
                live.channels[(name, info.external_id)] = info.channel
        for campaign, budget in budgets.items():
            live.budgets[(name, campaign)] = round(float(budget), 2)
            if known is not None and (name, campaign) in known:
                live.channels.setdefault((name, campaign), known[(name, campaign)])
        for campaign, status in connector.learning_status().items():
            live.learning[(name, campaign)] = bool(status.learning)
    return live


def known_channels(session: Session) -> dict[tuple[str, str], str]:
    """(platform, campaign external id) -> channel, for every campaign ingestion has recorded."""
    rows = session.execute(select(Campaign.platform, Campaign.external_id, Campaign.channel)).all()
    return {(str(p), str(e)): str(c) for p, e, c in rows}


def executed_history(
    session: Session, *, now: datetime, exclude_request: int | None = None
) -> list[ExecutedChange]:
    """Budget changes applied on the platforms (per channel), most recent month, from the items table."""
    since = now.timestamp() - HISTORY_DAYS * 86400.0
    rows = session.execute(
        select(
            ChangeRequestItem.channel,
            ChangeRequestItem.applied_at,
            ChangeRequestItem.before,
            ChangeRequestItem.after,
        )
        .where(ChangeRequestItem.state == "applied", ChangeRequestItem.applied_at.is_not(None))
        .where(
            ChangeRequestItem.change_request_id != (exclude_request if exclude_request is not None else -1)
        )
    ).all()
    # One change per channel and moment: a channel's campaigns moved together add up to its budget.
    per_channel: dict[tuple[str, datetime], list[float]] = {}
    for channel, applied_at, before, after in rows:
        if applied_at is None:
            continue
        at: datetime = applied_at if applied_at.tzinfo is not None else applied_at.replace(tzinfo=UTC)
        if at.timestamp() >= since:
            sums = per_channel.setdefault((channel, at), [0.0, 0.0])
            sums[0] += float(before)
            sums[1] += float(after)
    return [
        ExecutedChange(key=channel, at=at, before=b, after=a)
        for (channel, at), (b, a) in sorted(per_channel.items(), key=lambda kv: kv[0][1])
    ]


def overrides_of(cr: ChangeRequest) -> list[Override]:
    """Owners' overrides the request carries (``details["overrides"]``, recorded when it was planned)."""
    raw: Any = (cr.details or {}).get("overrides", [])
    out = []
    for o in raw if isinstance(raw, list) else []:
        if isinstance(o, Mapping) and {"rule", "owner", "reason"} <= set(o):
            out.append(Override(str(o["rule"]), o.get("key"), str(o["owner"]), str(o["reason"])))
    return out


def recheck(
    session: Session, cr: ChangeRequest, *, live: LiveState, policy: Policy, now: datetime
) -> list[str]:
    """Why the request may not execute now (empty list: it may), from the engine and the checker."""
    problems: list[str] = []
    if policy.autonomy == "shadow":
        problems.append("autonomy is `shadow`: changes are recorded, never executed")
    current = live.by_channel()
    proposed = dict(current)
    keys: list[str] = []
    for item in cr.items:
        if item.channel not in current:
            problems.append(
                f"{item.channel}: no live campaign {item.campaign_external_id} on {item.platform}; re-plan"
            )
            continue
        keys.append(item.channel)
        proposed[item.channel] = round(
            current[item.channel] - live.budget(item.platform, item.campaign_external_id) + item.after, 2
        )
    if not keys:
        return problems
    learning = live.learning_channels()
    states = {ch: CampaignState(channel=ch, learning=ch in learning) for ch in current}
    history = executed_history(session, now=now, exclude_request=cr.id)
    overrides = overrides_of(cr)
    rollback = cr.kind == "rollback"

    def counts(rule: str) -> bool:
        return not rollback or rule in ROLLBACK_STOPS

    decision = evaluate(
        current=current,
        proposed=proposed,
        states=states,
        history=history,
        policy=policy,
        now=now,
        overrides=overrides,
    )
    for v in decision.verdicts:
        if v.outcome == "blocked" and (v.key is None or v.key in keys) and counts(v.rule):
            problems.append(f"guardrail `{v.rule}`: {v.message}")
    if not rollback:
        for key in keys:
            allowed = decision.adjusted.get(key, current[key])
            if (
                key not in decision.blocked_keys
                and not decision.blocked
                and abs(allowed - proposed[key]) >= 0.01
            ):
                why = [f"`{v.rule}`" for v in decision.verdicts if v.key == key and v.outcome == "clipped"]
                problems.append(
                    f"guardrail {', '.join(why) or 'clip'}: {key} may now move to {allowed:,.2f}, "
                    f"not the approved {proposed[key]:,.2f}"
                )
    violations = check_executed(
        before=current,
        after=proposed,
        states=states,
        history=history,
        policy=policy,
        at=now,
        overrides=overrides,
    )
    for viol in violations:
        if counts(viol.rule):
            problems.append(f"checker `{viol.rule}`: {viol.message}")
    return _dedupe(problems)


def _dedupe(lines: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in lines if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]
