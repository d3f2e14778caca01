"""The monitor: each day, did an executed change deliver what it promised?

For every request in ``monitoring`` whose plan has started, :func:`monitor_day` compares the day's
realised revenue (``daily_revenue``) with the forecast band the request promised: the posterior
predictive of the request's model for the day, given the spend the platforms actually delivered
(``daily_metrics``), at the plan's ``band`` (the policy's, 90% by default). The day is

* ``pass``: realised at or above the band's lower edge (above the band is good news, not a failure);
* ``fail``: realised below the band;
* ``inconclusive``: no revenue for the day yet, no spend rows for a channel of the request, or the
  predictor could not answer (a model that cannot be loaded, a connector or input error). An
  inconclusive day is **never counted as a failure and does not reset a run of failures either**: the
  run of failures is counted over conclusive days only, so a data outage neither triggers nor hides a
  rollback. Re-running a day is idempotent; an inconclusive day is re-evaluated (late data may have
  landed), a conclusive one is kept as recorded.

Then: ``rollback_after_days_outside`` consecutive failing (conclusive) days → an automatic rollback
request (:mod:`agents.rollback`), executed at once through the executor when connectors are given
(deferred to the next failing day while a newer request is executing on the same campaigns);
``evaluation_days`` conclusive days with the last one passing → ``confirmed``, with
``details["next_step"]`` telling the planner it may take a larger step (``expand_step``).

Every reading lands in ``monitoring_readings`` (one per request and day) and in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from agents.execute import EXPERIMENT_KINDS, ExecutionReport, Platforms, execute_request
from agents.rollback import open_rollback, propose_rollback
from budgetloop.clock import Clock
from budgetloop.db.loop import ChangeRequest, MonitoringReading
from budgetloop.db.metrics import Campaign, DailyMetric, DailyRevenue, IngestBatch
from budgetloop.db.session import session_scope
from budgetloop.errors import BudgetloopError
from budgetloop.lifecycle import Event, State
from budgetloop.store import audit
from budgetloop.store import change_requests as requests
from guardrails.policy import Policy

Predictor = Callable[[ChangeRequest, date, Mapping[str, float]], tuple[float, float, float]]
"""``(request, day, spend per channel) -> (mean, low, high)`` of the day's revenue, at the plan's band."""

ReadingOutcome = Literal["pass", "fail", "inconclusive"]
Action = Literal["none", "rollback", "rollback_deferred", "confirm"]


@dataclass(frozen=True)
class Reading:
    change_request_id: int
    day: date
    outcome: ReadingOutcome
    realised: float | None
    forecast_mean: float | None
    band_low: float | None
    band_high: float | None
    reason: str
    fail_streak: int = 0  # consecutive failing conclusive days up to this one
    conclusive_days: int = 0  # conclusive readings so far, this one included
    action: Action = "none"
    rollback_request_id: int | None = None
    rollback: ExecutionReport | None = None


def monitor_day(
    session_factory: sessionmaker[Session],
    *,
    day: date,
    clock: Clock,
    predictor: Predictor,
    policy: Policy,
    connectors: Platforms | None = None,
    actor: str = "monitor",
) -> list[Reading]:
    """Read ``day`` for every request in ``monitoring``; roll back or confirm where the plan says so.

    ``connectors``: when given, an automatic rollback is executed at once; otherwise it is left
    ``approved`` for the next execution run.
    """
    with session_scope(session_factory) as session:
        ids = [
            cr.id
            for cr in requests.list_requests(session, statuses=[State.MONITORING.value], limit=10_000)
            if _first_day(cr) <= day
            and cr.kind not in EXPERIMENT_KINDS  # they have their own read-out
            and any(i.state == "applied" for i in cr.items)
        ]
    out: list[Reading] = []
    for request_id in ids:
        with session_scope(session_factory) as session:
            reading = _read_one(session, request_id, day, clock, predictor, policy, actor)
        if (
            reading.action == "rollback"
            and reading.rollback_request_id is not None
            and connectors is not None
        ):
            report = execute_request(
                session_factory,
                change_request_id=reading.rollback_request_id,
                connectors=connectors,
                policy=policy,
                clock=clock,
                actor="executor",
            )
            reading = replace(reading, rollback=report)
        out.append(reading)
    return out


def _first_day(cr: ChangeRequest) -> date:
    """The plan's first monitored day; a plan without one (never started) is never read."""
    raw = (cr.monitoring_plan or {}).get("first_day")
    return date.fromisoformat(raw) if isinstance(raw, str) else date.max


def _read_one(
    session: Session,
    request_id: int,
    day: date,
    clock: Clock,
    predictor: Predictor,
    policy: Policy,
    actor: str,
) -> Reading:
    cr = requests.get(session, change_request_id=request_id)
    assert cr is not None
    plan = cr.monitoring_plan or {}
    now = clock.now()
    row = session.execute(
        select(MonitoringReading).where(
            MonitoringReading.change_request_id == request_id, MonitoringReading.day == day
        )
    ).scalar_one_or_none()
    if row is None or row.outcome == "inconclusive":
        measured = _measure(session, cr, day, predictor)
        if row is None or measured.outcome != "inconclusive":
            revised = row is not None
            if row is None:
                row = MonitoringReading(
                    change_request_id=request_id, day=day, recorded_at=now, outcome="inconclusive"
                )
                session.add(row)
            row.outcome = measured.outcome
            row.realised = measured.realised
            row.forecast_mean = measured.forecast_mean
            row.band_low = measured.band_low
            row.band_high = measured.band_high
            row.reason = measured.reason
            row.recorded_at = now
            session.flush()
            audit.append(
                session,
                action="monitoring_reading",
                actor=actor,
                at=now,
                subject_type="change_request",
                subject_id=request_id,
                payload={
                    "day": day,
                    "outcome": measured.outcome,
                    "realised": measured.realised,
                    "forecast_mean": measured.forecast_mean,
                    "band_low": measured.band_low,
                    "band_high": measured.band_high,
                    "band": plan.get("band", policy.monitoring.band),
                    "reason": measured.reason,
                    **({"revised_from": "inconclusive"} if revised else {}),
                },
            )
    streak, conclusive, passes = _tally(session, request_id, day)
    reading = Reading(
        change_request_id=request_id,
        day=day,
        outcome=row.outcome,  # type: ignore[arg-type]
        realised=row.realised,
        forecast_mean=row.forecast_mean,
        band_low=row.band_low,
        band_high=row.band_high,
        reason=row.reason or "",
        fail_streak=streak,
        conclusive_days=conclusive,
    )
    limit = int(plan.get("rollback_after_days_outside", policy.monitoring.rollback_after_days_outside))
    window = int(plan.get("evaluation_days", policy.monitoring.evaluation_days))
    if streak >= limit and cr.kind != "rollback":
        if open_rollback(session, original_id=request_id) is not None:
            return reading
        why = (
            f"realised revenue below the {float(plan.get('band', policy.monitoring.band)):.0%} forecast band "
            f"for {streak} consecutive days up to {day.isoformat()} (limit {limit})"
        )
        evidence = _evidence(session, request_id, day)
        rollback = propose_rollback(
            session, original=cr, reason=why, policy=policy, now=now, evidence=evidence
        )
        if rollback is None:
            return replace(reading, action="rollback_deferred")
        return replace(reading, action="rollback", rollback_request_id=rollback.id)
    if conclusive >= window and streak == 0:
        move = float(cr.relative_move)
        step = policy.monitoring.expand_step
        details = dict(cr.details or {})
        details["next_step"] = {
            "confirmed_on": day.isoformat(),
            "relative_move": round(move, 4),
            "suggested_relative_move": round(move * (1.0 + step), 4),
            "expand_step": step,
            "direction": {
                i.channel: (1 if i.after > i.before else -1 if i.after < i.before else 0) for i in cr.items
            },
            "days_inside": passes,
            "days_evaluated": conclusive,
        }
        cr.details = details
        requests.transition(
            session,
            change_request_id=request_id,
            event=Event.CONFIRM,
            actor=actor,
            now=now,
            reason=f"inside the forecast band on {passes} of {conclusive} evaluated days",
            payload={"next_step": details["next_step"]},
        )
        return replace(reading, action="confirm")
    return reading


@dataclass(frozen=True)
class _Measured:
    outcome: ReadingOutcome
    realised: float | None
    forecast_mean: float | None
    band_low: float | None
    band_high: float | None
    reason: str


def _measure(session: Session, cr: ChangeRequest, day: date, predictor: Predictor) -> _Measured:
    revenue = session.execute(
        select(DailyRevenue.revenue).where(DailyRevenue.day == day)
    ).scalar_one_or_none()
    if revenue is None:
        why = f"no revenue for {day} yet (late or missing data)"
        return _Measured("inconclusive", None, None, None, None, why + _failed_pulls(session, day))
    realised = round(float(revenue), 2)
    spend = spend_by_channel(session, day=day)
    missing = sorted({i.channel for i in cr.items} - set(spend))
    if missing:
        why = f"no spend rows for {', '.join(missing)} on {day} yet" + _failed_pulls(session, day)
        return _Measured("inconclusive", realised, None, None, None, why)
    try:
        mean, low, high = predictor(cr, day, spend)
    except (BudgetloopError, LookupError, ValueError) as exc:
        return _Measured(
            "inconclusive", realised, None, None, None, f"no forecast: {type(exc).__name__}: {exc}"
        )
    mean, low, high = round(float(mean), 2), round(float(low), 2), round(float(high), 2)
    if realised < low:
        why = f"realised {realised:,.2f} is below the band [{low:,.2f}, {high:,.2f}] by {low - realised:,.2f}"
        return _Measured("fail", realised, mean, low, high, why)
    where = "above" if realised > high else "inside"
    return _Measured(
        "pass", realised, mean, low, high, f"realised {realised:,.2f} is {where} [{low:,.2f}, {high:,.2f}]"
    )


def _failed_pulls(session: Session, day: date) -> str:
    """``"; the <source> pull covering it failed: ..."`` per failed ingest batch covering ``day``."""
    batches = session.execute(
        select(IngestBatch.source, IngestBatch.errors)
        .where(
            IngestBatch.requested_start <= day,
            IngestBatch.requested_end >= day,
            IngestBatch.status == "failed",
        )
        .order_by(IngestBatch.id.desc())
        .limit(5)
    ).all()
    notes = []
    for source, errors in batches:
        first = errors[0].get("message", "") if errors and isinstance(errors[0], dict) else ""
        notes.append(f"; the {source} pull covering it failed: {first}"[:300])
    return "".join(notes)


def spend_by_channel(session: Session, *, day: date) -> dict[str, float]:
    """What the platforms delivered on ``day``, per channel (campaigns summed), from ``daily_metrics``."""
    rows = session.execute(
        select(Campaign.channel, func.sum(DailyMetric.spend))
        .join(Campaign, Campaign.id == DailyMetric.campaign_id)
        .where(DailyMetric.day == day)
        .group_by(Campaign.channel)
    ).all()
    return {str(channel): round(float(total), 2) for channel, total in rows}


def _tally(session: Session, request_id: int, day: date) -> tuple[int, int, int]:
    """(trailing run of failing conclusive days, conclusive days, passing days) up to ``day``."""
    outcomes = (
        session.execute(
            select(MonitoringReading.outcome)
            .where(MonitoringReading.change_request_id == request_id, MonitoringReading.day <= day)
            .order_by(MonitoringReading.day)
        )
        .scalars()
        .all()
    )
    conclusive = [o for o in outcomes if o != "inconclusive"]
    streak = 0
    for o in reversed(conclusive):
        if o != "fail":
            break
        streak += 1
    return streak, len(conclusive), sum(1 for o in conclusive if o == "pass")


def _evidence(session: Session, request_id: int, day: date) -> list[dict[str, Any]]:
    rows = session.execute(
        select(MonitoringReading)
        .where(MonitoringReading.change_request_id == request_id, MonitoringReading.day <= day)
        .order_by(MonitoringReading.day)
    ).scalars()
    return [
        {
            "day": r.day.isoformat(),
            "outcome": r.outcome,
            "realised": r.realised,
            "band_low": r.band_low,
            "band_high": r.band_high,
        }
        for r in rows
    ]
