"""The plan job: read the live state, run one planning step, and turn a worthwhile step into a request.

Reads like a script: load the promoted model and the active policy, read live budgets and learning
status through the connectors, gather the executed history, call :func:`agents.planning.plan`, store
the outcome (a change request when it proposes, a planner run with the reason either way), and hand
the request to the right path for the policy's autonomy: ``shadow`` records it, ``autonomous_below``
approves small moves by itself, ``approval`` asks a person in Slack.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from agents.execute import UNKNOWN
from agents.execute_guard import executed_history
from agents.planning import PlanContext, PlanOutcome, plan, summarise
from agents.retrain import decode_model
from agents.rollback import ROLLBACK_KIND
from agents.runtime import Runtime
from budgetloop.db.loop import ChangeRequest, ChangeRequestItem, ModelVersion, PlannerRun
from budgetloop.db.metrics import DailyRevenue
from budgetloop.lifecycle import OPEN, Event, State
from budgetloop.store import change_requests as crs
from budgetloop.store import metrics as metrics_store
from budgetloop.store import models as model_store
from guardrails.policy import Policy
from guardrails.records import CampaignState
from models.curves import ResponseCurves
from models.fitted import FittedModel

ACTOR = "planner"
#: A request needs at least this long between its proposal and a freeze window of the whole portfolio
#: to be read, decided and executed: closer to the window the planner waits for its end, and a
#: request's deadline is never past the window's start (approved inside it, it could only be blocked).
MIN_DECISION_TIME = timedelta(hours=12)
APPLIED_STATES = ("executed", "monitoring", "confirmed", "rolled_back")


@dataclass(frozen=True)
class LiveCampaign:
    channel: str
    platform: str
    external_id: str
    budget: float
    learning: bool


MODEL_CACHE_SIZE = 4  # the promoted version and the versions behind requests still being watched


def load_model(rt: Runtime, version: ModelVersion) -> FittedModel:
    """The fitted model of a version, deserialised once per process (a few recent versions kept)."""
    cache: dict[int, FittedModel] = rt.extras.setdefault("model_cache", {})
    if version.id in cache:
        cache[version.id] = cache.pop(version.id)  # most recently used last
    else:
        while len(cache) >= MODEL_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[version.id] = decode_model(version.artifact, source=f"model version {version.id}")
    return cache[version.id]


def daily_curves(fm: FittedModel) -> ResponseCurves:
    """Curves per day: a weekly model's per-week curve scaled to a day (budget x 7 in, revenue / 7 out)."""
    rc = fm.response_curves()
    if rc.period == "day":
        return rc
    return replace(rc, beta=rc.beta / 7.0, half=rc.half / 7.0, period="day", meta=dict(rc.meta))


def live_campaigns(rt: Runtime, session: Session) -> list[LiveCampaign]:
    """Every known campaign with its live daily budget and learning status, read through the connectors."""
    known = {(c.platform, c.external_id): c.channel for c in metrics_store.campaigns(session)}
    out: list[LiveCampaign] = []
    for name, connector in sorted(rt.connectors.platforms.items()):
        budgets = connector.get_budgets()
        learning = connector.learning_status()
        if not known:
            known.update({(name, c.external_id): c.channel for c in connector.list_campaigns()})
        for external_id, budget in sorted(budgets.items()):
            channel = known.get((name, external_id))
            if channel is None:
                continue
            status = learning.get(external_id)
            out.append(
                LiveCampaign(channel, name, external_id, float(budget), bool(status and status.learning))
            )
    return out


def baseline_revenue(session: Session, *, days: int = 28) -> float:
    last = session.scalar(select(func.max(DailyRevenue.day)))
    if last is None:
        return 0.0
    avg = session.scalar(
        select(func.avg(DailyRevenue.revenue)).where(DailyRevenue.day > last - timedelta(days=days))
    )
    return float(avg or 0.0)


def step_scale(session: Session, policy: Policy) -> float:
    """Share of the max swing the next step may use: grows by ``expand_step`` after each confirmed move,
    starts (and restarts after a rollback) at ``1 / (1 + expand_step)``."""
    start = 1.0 / (1.0 + policy.monitoring.expand_step)
    last = session.execute(
        select(ChangeRequest)
        .where(
            ChangeRequest.kind == "reallocation",
            ChangeRequest.status.in_([State.CONFIRMED.value, State.ROLLED_BACK.value]),
        )
        .order_by(ChangeRequest.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if last is None or last.status == State.ROLLED_BACK.value:
        return start
    previous = float(last.details.get("step_scale", start))
    return min(1.0, previous * (1.0 + policy.monitoring.expand_step))


def _record_run(
    session: Session,
    *,
    now: datetime,
    version_id: int | None,
    reason: str,
    cr_id: int | None,
    details: dict[str, Any],
) -> PlannerRun:
    run = PlannerRun(
        at=now,
        model_version_id=version_id,
        proposed=cr_id is not None,
        change_request_id=cr_id,
        reason=reason,
        details=details,
    )
    session.add(run)
    session.flush()
    return run


def _split(campaigns: list[LiveCampaign], new_total: float) -> list[tuple[LiveCampaign, float]]:
    """A channel's new daily budget shared among its campaigns in proportion to their budgets."""
    old_total = sum(c.budget for c in campaigns)
    shares = [c.budget / old_total if old_total > 0 else 1.0 / len(campaigns) for c in campaigns]
    amounts = [round(new_total * s, 2) for s in shares]
    amounts[-1] = round(new_total - sum(amounts[:-1]), 2)
    return list(zip(campaigns, amounts, strict=True))


def run_plan(rt: Runtime, session: Session) -> PlannerRun:
    """One planning run (see the module docstring). Never commits."""
    now = rt.clock.now()
    policy_version, policy = rt.policy(session)
    held = why_held(session)
    if held is not None:
        return _record_run(session, now=now, version_id=None, reason=held, cr_id=None, details={})
    version = model_store.promoted(session)
    if version is None:
        return _record_run(
            session, now=now, version_id=None, reason="no promoted model yet", cr_id=None, details={}
        )
    turned_down = session.execute(
        select(ChangeRequest.id, ChangeRequest.status, ChangeRequest.decided_by)
        .where(
            ChangeRequest.kind == "reallocation",
            ChangeRequest.model_version_id == version.id,
            ChangeRequest.status.in_([State.REJECTED.value, State.EXPIRED.value]),
        )
        .order_by(ChangeRequest.id.desc())
        .limit(1)
    ).first()
    if turned_down is not None:
        who = f" by {turned_down[2]}" if turned_down[2] else ""
        return _record_run(
            session,
            now=now,
            version_id=version.id,
            reason=(
                f"change request {turned_down[0]} from this model version was {turned_down[1]}{who}: "
                "waiting for new evidence (the next promoted version) before asking again"
            ),
            cr_id=None,
            details={},
        )
    deadline, frozen_soon = decision_deadline(policy, now)
    if frozen_soon is not None:
        return _record_run(
            session, now=now, version_id=version.id, reason=frozen_soon, cr_id=None, details={}
        )
    fm = load_model(rt, version)
    live = live_campaigns(rt, session)
    by_channel: dict[str, list[LiveCampaign]] = defaultdict(list)
    for c in live:
        by_channel[c.channel].append(c)
    current = {ch: round(sum(c.budget for c in cs), 2) for ch, cs in by_channel.items()}
    states = {
        ch: CampaignState(channel=ch, learning=any(c.learning for c in cs)) for ch, cs in by_channel.items()
    }
    scale = step_scale(session, policy)
    ctx = PlanContext(
        curves=daily_curves(fm),
        current=current,
        states=states,
        history=executed_history(session, now=now),
        policy=policy,
        now=now,
        baseline_revenue_per_day=baseline_revenue(session),
        step_scale=scale,
    )
    outcome = plan(ctx)
    details = _outcome_details(outcome)
    if not outcome.propose:
        return _record_run(
            session, now=now, version_id=version.id, reason=outcome.reason, cr_id=None, details=details
        )
    try:
        cr = _create_request(
            rt, session, outcome, by_channel, policy, policy_version, version.id, scale, now, deadline
        )
    except crs.CampaignBusy as busy:  # another worker proposed between our check and our insert
        return _record_run(
            session,
            now=now,
            version_id=version.id,
            reason=f"{busy} (proposed while this run was planning): one decision at a time",
            cr_id=None,
            details=details,
        )
    return _record_run(
        session, now=now, version_id=version.id, reason=outcome.reason, cr_id=cr.id, details=details
    )


def why_held(session: Session) -> str | None:
    """Why no step may be planned now, whatever the model says (None when nothing holds it): a
    request still waiting for a decision or its execution, a budget call whose outcome is unknown,
    or a rollback that failed and will be tried again."""
    open_cr = session.execute(
        select(ChangeRequest.id, ChangeRequest.status)
        .where(ChangeRequest.status.in_([s.value for s in OPEN if s is not State.MONITORING]))
        .order_by(ChangeRequest.id)
        .limit(1)
    ).first()
    if open_cr is not None:
        return f"change request {open_cr[0]} is still {open_cr[1]}: one decision at a time"
    unknown = session.execute(
        select(ChangeRequestItem.change_request_id, ChangeRequestItem.channel)
        .where(ChangeRequestItem.state == UNKNOWN)
        .limit(1)
    ).first()
    if unknown is not None:
        return (
            f"a budget call of change request {unknown[0]} ({unknown[1]}) never answered and may still "
            "land: the executor looks again each run, and planning waits until it is settled"
        )
    stuck = failed_rollback(session)
    if stuck is not None:
        rollback_id, original_id = stuck
        return (
            f"the rollback of change request {original_id} (request {rollback_id}) failed and the "
            "monitor will try it again: no new step on top of a change that is being undone"
        )
    return None


def failed_rollback(session: Session) -> tuple[int, int] | None:
    """(rollback id, original id) of a rollback that failed while its original is still monitored:
    the budgets are not where the monitor decided they must go back to, and the next failing day
    triggers the rollback again. A step planned meanwhile would start from them, and once executed
    it would supersede the very change that was being undone."""
    original = aliased(ChangeRequest)
    row = session.execute(
        select(ChangeRequest.id, original.id)
        .join(original, original.id == ChangeRequest.rolls_back_id)
        .where(
            ChangeRequest.kind == ROLLBACK_KIND,
            ChangeRequest.status == State.FAILED.value,
            original.status == State.MONITORING.value,
        )
        .order_by(ChangeRequest.id.desc())
        .limit(1)
    ).first()
    return (int(row[0]), int(row[1])) if row is not None else None


def decision_deadline(policy: Policy, now: datetime) -> tuple[datetime, str | None]:
    """When a request proposed ``now`` expires: after ``approval.expire_after_hours``, or when the next
    freeze window of the whole portfolio starts, whichever is first; and why not to propose at all
    when that leaves under :data:`MIN_DECISION_TIME` (None otherwise)."""
    deadline = now + timedelta(hours=policy.approval.expire_after_hours)
    for start, end, window in policy.freeze_intervals():
        if window.channels or not now < start < deadline:
            continue
        deadline = start
        if start - now < MIN_DECISION_TIME:
            span = f"{window.start}..{window.end}"
            hours = (start - now).total_seconds() / 3600
            return deadline, (
                f"freeze window {span} ({window.reason or 'no reason given'}) starts in {hours:.1f} h, "
                f"too soon for a change to be decided and executed: planning resumes after {end.isoformat()}"
            )
    return deadline, None


def _outcome_details(outcome: PlanOutcome) -> dict[str, Any]:
    return {
        "current": {m.channel: m.current for m in outcome.moves},
        "target": outcome.target,
        "proposed": outcome.proposed,
        "expected_gain": outcome.expected_gain,
        "gain_p05": outcome.gain_p05,
        "gain_p95": outcome.gain_p95,
        "probability_of_improvement": outcome.probability_of_improvement,
        "relative_gain": outcome.relative_gain,
        "warnings": list(outcome.warnings),
        **outcome.details,
    }


def _create_request(
    rt: Runtime,
    session: Session,
    outcome: PlanOutcome,
    by_channel: dict[str, list[LiveCampaign]],
    policy: Policy,
    policy_version: int | None,
    model_version_id: int,
    scale: float,
    now: datetime,
    deadline: datetime,
) -> ChangeRequest:
    items: list[crs.ItemDraft] = []
    for move in outcome.moves:
        if abs(move.proposed - move.current) < 0.005:
            continue
        for campaign, amount in _split(by_channel[move.channel], move.proposed):
            items.append(
                crs.ItemDraft(move.channel, campaign.platform, campaign.external_id, campaign.budget, amount)
            )
    assert outcome.decision is not None
    verdicts = [
        {
            "rule": v.rule,
            "key": v.key,
            "outcome": v.outcome,
            "level": v.level,
            "limit": v.limit,
            "proposed": v.proposed,
            "adjusted": v.adjusted,
            "message": v.message,
        }
        for v in outcome.decision.verdicts
    ]
    monitoring = policy.monitoring
    draft = crs.ChangeRequestDraft(
        kind="reallocation",
        requested_by=ACTOR,
        objective=policy.objective.metric,
        summary=summarise(outcome, policy.budget.currency),
        items=items,
        expected_gain=outcome.expected_gain,
        gain_p05=outcome.gain_p05,
        gain_p95=outcome.gain_p95,
        probability_of_improvement=outcome.probability_of_improvement,
        verdicts=verdicts,
        monitoring_plan={
            "band": monitoring.band,
            "rollback_after_days_outside": monitoring.rollback_after_days_outside,
            "evaluation_days": monitoring.evaluation_days,
            "expected_media_revenue_before": outcome.expected_revenue_before,
            "expected_media_revenue_after": outcome.expected_revenue_after,
        },
        details={
            "step_scale": scale,
            "approvals_required": outcome.decision.approvals_required,
            "relative_gain": outcome.relative_gain,
            "mroas": {
                m.channel: {"mean": m.mroas_mean, "p05": m.mroas_p05, "p95": m.mroas_p95}
                for m in outcome.moves
            },
            "target": outcome.target,
            "warnings": list(outcome.warnings),
        },
        model_version_id=model_version_id,
        policy_version=policy_version,
        expires_at=deadline,
        portfolio_total=sum(m.current for m in outcome.moves),
    )
    cr = crs.create(session, draft=draft, now=now)
    if policy.autonomy == "shadow":
        cr = crs.transition(
            session,
            change_request_id=cr.id,
            event=Event.RECORD_SHADOW,
            actor=ACTOR,
            now=now,
            reason="autonomy is shadow: recorded, not executed",
            payload={"would_have": {i.channel: i.after for i in cr.items}},
        )
    elif (
        policy.autonomy == "autonomous_below"
        and policy.approval.autonomous_below is not None
        and cr.relative_move < policy.approval.autonomous_below
    ):
        cr = crs.transition(
            session,
            change_request_id=cr.id,
            event=Event.AUTO_APPROVE,
            actor="autonomy",
            now=now,
            reason=(
                f"relative move {cr.relative_move:.1%} is below autonomous_below "
                f"{policy.approval.autonomous_below:.0%}"
            ),
        )
    else:
        cr = crs.transition(session, change_request_id=cr.id, event=Event.SUBMIT, actor=ACTOR, now=now)
    rt.notify(session, cr)
    return cr
