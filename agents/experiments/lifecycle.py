"""The experiment job: land the regional panel, move each experiment one step, plan the next one.

An experiment is two change requests and a record::

    plan ── experiment CR (no budget items; details: regions, window, power) ── Slack ──▶ approved
    approved ──(freeze, kill switch re-checked for the whole window)──▶ executing
        geo factor 0 in the held-out regions ──▶ executed; experiment `running` (start = next day)
        a platform refuses ──▶ every region restored ──▶ failed; experiment `failed`
    day after `end` ── experiment_end CR (auto-approved: it restores what the policy accepted)
        geo factor 1 everywhere ──▶ executed ──▶ confirmed; experiment `reading`
        a platform refuses ──▶ the end request stays `executing`, retried on the next run (`ending`)
    reading ── analysis (scaled-control DiD, fit and placebo checks)
        trusted ──▶ calibration point (audited `calibration_added`); experiment `analysed`
        not trusted or failed ──▶ experiment `inconclusive` (no calibration)
        either way the experiment CR ──▶ confirmed

The restore never waits for anything: not for approval, a freeze window or the kill switch (it puts
back the state before the test). The experiment request stays ``executed`` for the whole test, and the
reallocation planner holds while any request is undecided or executed (one decision at a time), so no
budget moves during the test. Like the planner, a test is planned while an earlier move is only being
watched (``monitoring``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.experiments.analysis import Panel, read_holdout
from agents.experiments.design import (
    PRE_DAYS,
    RECENT_DAYS,
    Design,
    DesignInputs,
    NoDesign,
    freeze_conflict,
    plan_experiment,
    region_shares,
)
from agents.runtime import Runtime
from budgetloop.db.experiments import Experiment
from budgetloop.db.loop import CalibrationPoint, ChangeRequest, ModelVersion
from budgetloop.errors import ConnectorError
from budgetloop.lifecycle import OPEN, Event, State
from budgetloop.store import change_requests as crs
from budgetloop.store import experiments as store
from budgetloop.store import metrics as metrics_store
from budgetloop.store import models as model_store
from connectors.geo import geo_clients, regional_revenue
from guardrails.policy import Policy

log = logging.getLogger(__name__)

ACTOR = "experimenter"
KINDS = ("experiment", "experiment_end")
BACKFILL_DAYS = PRE_DAYS + 28
REPULL_DAYS = 3
RETEST_AFTER_DAYS = 182  # the same channel again
GAP_DAYS = 56  # between the end of one experiment and the start of the next (reallocations in between)
MAX_APPLY_DELAY_DAYS = 7
ENDED = ("rejected", "expired", "cancelled", "shadow", "failed")


# ------------------------------------------------------------------------------------- the panel


def ingest_regional(rt: Runtime, session: Session, *, today: date) -> dict[str, Any]:
    """Pull per-region revenue and spend up to yesterday (re-pulling the last days) into the panel."""
    source = regional_revenue(rt.connectors)
    if source is None:
        return {"skipped": "the revenue source has no per-region export"}
    yesterday = today - timedelta(days=1)
    last = store.last_regional_day(session)
    start = today - timedelta(days=BACKFILL_DAYS) if last is None else last - timedelta(days=REPULL_DAYS - 1)
    start = min(start, yesterday)
    revenue = [(r.day, r.region, r.revenue, r.currency) for r in source.region_revenue(start, yesterday)]
    geo = geo_clients(rt.connectors)
    spend: list[tuple[date, str, str, float]] = []
    channels: set[str] = set()
    for c in metrics_store.campaigns(session):
        client = geo.get(c.platform)
        if client is None:
            continue
        channels.add(c.channel)
        spend += [
            (s.day, s.region, c.channel, s.spend)
            for s in client.region_spend(c.external_id, start, yesterday)
        ]
    n_rev, n_spend = store.replace_regional(
        session,
        start=start,
        end=yesterday,
        revenue=revenue,
        spend=spend,
        channels=sorted(channels),
        now=rt.clock.now(),
    )
    return {
        "start": start.isoformat(),
        "end": yesterday.isoformat(),
        "revenue_rows": n_rev,
        "spend_rows": n_spend,
    }


def _panel(session: Session, *, start: date, end: date) -> Panel:
    days, regions, revenue = store.regional_panel(session, start=start, end=end)
    return Panel(days, regions, revenue)


# ------------------------------------------------------------------------------------- the job


def run_experiments(rt: Runtime) -> dict[str, Any]:
    """One pass (see the module docstring); each step commits on its own."""
    today = rt.clock.today()
    out: dict[str, Any] = {}
    try:
        with rt.unit_of_work() as session:
            out["regional"] = ingest_regional(rt, session, today=today)
    except ConnectorError as exc:  # the next run pulls from the last landed day again
        out["regional"] = {"failed": str(exc)}
    with rt.unit_of_work() as session:
        ids = [e.id for e in store.active(session)]
    steps: dict[str, str] = {}
    for exp_id in ids:
        steps[str(exp_id)] = advance(rt, exp_id)
    out["steps"] = steps
    with rt.unit_of_work() as session:
        out["roi_after"] = fill_roi_after(session)
    try:
        with rt.unit_of_work() as session:
            out["plan"] = propose(rt, session)
    except ConnectorError as exc:
        out["plan"] = {"proposed": False, "reason": f"could not read the live state: {exc}"}
    return out


def advance(rt: Runtime, exp_id: int) -> str:
    """Move one experiment a step; returns what happened."""
    with rt.unit_of_work() as session:
        exp = _load(session, exp_id)
        status = exp.status
        cr = crs.get(session, change_request_id=exp.change_request_id)
        assert cr is not None
        cr_status = cr.status
        end = exp.end
    today = rt.clock.today()
    if status == "proposed":
        if cr_status in ENDED:
            with rt.unit_of_work() as session:
                exp = _load(session, exp_id)
                store.set_status(
                    session,
                    exp,
                    status="cancelled",
                    now=rt.clock.now(),
                    actor=ACTOR,
                    reason=f"its change request {exp.change_request_id} was {cr_status}",
                )
            return "cancelled"
        if cr_status == State.APPROVED.value:
            return start_holdout(rt, exp_id)
        return f"waiting ({cr_status})"
    if status == "running" and today > end:
        return finish(rt, exp_id)
    if status in ("ending", "reading"):
        return finish(rt, exp_id)
    return status


def _load(session: Session, exp_id: int) -> Experiment:
    exp = session.get(Experiment, exp_id)
    if exp is None:
        raise LookupError(f"no experiment with id {exp_id}")
    return exp


def _campaigns(session: Session, channel: str, platform: str) -> list[str]:
    return [
        c.external_id for c in metrics_store.campaigns(session, platform=platform) if c.channel == channel
    ]


def _set_factors(
    rt: Runtime, campaigns: list[str], platform: str, factors: dict[str, float]
) -> dict[str, Any]:
    client = geo_clients(rt.connectors)[platform]
    return {cid: client.set_geo_factors(cid, factors) for cid in campaigns}


def _block_reason(policy: Policy, exp: Experiment, first: date, last: date) -> str | None:
    if policy.kill_switch:
        return "kill switch is on"
    if policy.autonomy == "shadow":
        return "autonomy is shadow"
    conflict = freeze_conflict(policy, exp.channel, first, last)
    return None if conflict is None else f"{first}..{last} touches {conflict}"


def start_holdout(rt: Runtime, exp_id: int) -> str:
    """Switch the holdout on (an approved experiment request), or block/cancel it with the reason."""
    now, today = rt.clock.now(), rt.clock.today()
    with rt.unit_of_work() as session:
        exp = _load(session, exp_id)
        _, policy = rt.policy(session)
        days = (exp.end - exp.start).days + 1
        start, end = today + timedelta(days=1), today + timedelta(days=days)
        planned = date.fromisoformat(exp.design["apply_on"])
        why = _block_reason(policy, exp, today, end + timedelta(days=1))
        if why is None and (today - planned).days > MAX_APPLY_DELAY_DAYS:
            why = f"approved {(today - planned).days} days after its planned start: the design is stale"
        if why is not None:
            crs.transition(
                session,
                change_request_id=exp.change_request_id,
                event=Event.BLOCK,
                actor=ACTOR,
                now=now,
                reason=why,
            )
            store.set_status(session, exp, status="cancelled", now=now, actor=ACTOR, reason=why)
            return "blocked"
        crs.transition(
            session,
            change_request_id=exp.change_request_id,
            event=Event.START_EXECUTION,
            actor=ACTOR,
            now=now,
        )
        campaigns = _campaigns(session, exp.channel, exp.platform)
        regions, platform, channel = list(exp.regions), exp.platform, exp.channel
    try:
        if not campaigns:
            raise LookupError(f"no {platform} campaign of channel `{channel}` is known; run ingestion first")
        applied = _set_factors(rt, campaigns, platform, {r: 0.0 for r in regions})
    except Exception as exc:
        log.warning("experiment %s: holdout failed (%s); restoring", exp_id, exc)
        restored = _restore_quietly(rt, campaigns, platform, regions)
        with rt.unit_of_work() as session:
            exp = _load(session, exp_id)
            reason = f"the holdout could not be applied: {exc}"
            crs.transition(
                session,
                change_request_id=exp.change_request_id,
                event=Event.FAIL,
                actor=ACTOR,
                now=rt.clock.now(),
                reason=reason,
                payload={"restored": restored},
            )
            status = "failed" if restored else "ending"
            store.set_status(session, exp, status=status, now=rt.clock.now(), actor=ACTOR, reason=reason)
        return "failed"
    with rt.unit_of_work() as session:
        exp = _load(session, exp_id)
        crs.transition(
            session,
            change_request_id=exp.change_request_id,
            event=Event.FINISH_EXECUTION,
            actor=ACTOR,
            now=rt.clock.now(),
            payload={"geo_factors": applied},
        )
        store.set_status(
            session,
            exp,
            status="running",
            now=rt.clock.now(),
            actor=ACTOR,
            start=start,
            end=end,
            payload={"geo_factors": applied},
        )
    return "running"


def _restore_quietly(rt: Runtime, campaigns: list[str], platform: str, regions: list[str]) -> bool:
    try:
        _set_factors(rt, campaigns, platform, {r: 1.0 for r in regions})
    except Exception as exc:
        log.warning("restore of %s on %s failed: %s", regions, platform, exc)
        return False
    return True


def _end_request(session: Session, exp: Experiment, now: datetime) -> ChangeRequest:
    if exp.end_request_id is not None:
        cr = crs.get(session, change_request_id=exp.end_request_id)
        assert cr is not None
        return cr
    draft = crs.ChangeRequestDraft(
        kind="experiment_end",
        requested_by=ACTOR,
        objective="restore",
        summary=f"End of experiment {exp.id}: {exp.channel} back on in {', '.join(exp.regions)}",
        items=[],
        expected_gain=0.0,
        gain_p05=0.0,
        gain_p95=0.0,
        probability_of_improvement=1.0,
        details={"experiment_id": exp.id, "regions": list(exp.regions), "channel": exp.channel},
        model_version_id=exp.model_version_id,
    )
    cr = crs.create(session, draft=draft, now=now)
    crs.transition(
        session,
        change_request_id=cr.id,
        event=Event.AUTO_APPROVE,
        actor="autonomy",
        now=now,
        reason="restoring the regions of a finished experiment needs no approval",
    )
    crs.transition(session, change_request_id=cr.id, event=Event.START_EXECUTION, actor=ACTOR, now=now)
    exp.end_request_id = cr.id
    return cr


def finish(rt: Runtime, exp_id: int) -> str:
    """Restore the regions (retried until it works), then read the result and calibrate."""
    now = rt.clock.now()
    with rt.unit_of_work() as session:
        exp = _load(session, exp_id)
        if exp.status == "running":
            _end_request(session, exp, now)
            store.set_status(session, exp, status="ending", now=now, actor=ACTOR)
        campaigns = _campaigns(session, exp.channel, exp.platform)
        regions, platform, status = list(exp.regions), exp.platform, exp.status
    if status == "ending":
        if not _restore_quietly(rt, campaigns, platform, regions):
            return "restore pending"
        with rt.unit_of_work() as session:
            exp = _load(session, exp_id)
            cr = _end_request(session, exp, rt.clock.now())
            for event in (Event.FINISH_EXECUTION, Event.START_MONITORING, Event.CONFIRM):
                if cr.status == State.EXECUTING.value or event is not Event.FINISH_EXECUTION:
                    cr = crs.transition(
                        session,
                        change_request_id=cr.id,
                        event=event,
                        actor=ACTOR,
                        now=rt.clock.now(),
                        payload={"geo_factors": {r: 1.0 for r in regions}}
                        if event is Event.FINISH_EXECUTION
                        else None,
                    )
            started = crs.get(session, change_request_id=exp.change_request_id)
            if started is not None and started.status == State.FAILED.value:
                store.set_status(
                    session,
                    exp,
                    status="failed",
                    now=rt.clock.now(),
                    actor=ACTOR,
                    reason="the holdout failed; its regions are restored",
                )
                return "failed"
            store.set_status(session, exp, status="reading", now=rt.clock.now(), actor=ACTOR)
    return read_result(rt, exp_id)


def read_result(rt: Runtime, exp_id: int) -> str:
    now = rt.clock.now()
    with rt.unit_of_work() as session:
        exp = _load(session, exp_id)
        last = store.last_regional_day(session)
        if last is None or last < exp.end:
            return "waiting for the regional data"
        outcome: str
        try:
            panel = _panel(session, start=exp.start - timedelta(days=PRE_DAYS + 2), end=exp.end)
            reading = read_holdout(panel, list(exp.regions), exp.start, exp.end, pre_days=PRE_DAYS)
            spend_delta = -holdout_spend(session, exp)
        except (ValueError, KeyError) as exc:
            reason = f"analysis failed: {exc}"
            store.set_status(session, exp, status="inconclusive", now=now, actor=ACTOR, reason=reason)
            _close_experiment_request(session, exp, now, reason)
            return "inconclusive"
        # a geo holdout: the model predicts it as the held-out regions' share of the channel's media
        result = {
            **reading.to_dict(),
            "spend_delta": round(spend_delta, 2),
            "holdout_share": round(float(exp.holdout_share), 4),
        }
        if reading.trusted and reading.incremental_revenue_se > 0:
            point = store.add_calibration_point(
                session,
                exp=exp,
                spend_delta=spend_delta,
                incremental_revenue=reading.incremental_revenue,
                incremental_revenue_se=reading.incremental_revenue_se,
                details=result,
                now=now,
                actor=ACTOR,
            )
            store.set_status(
                session,
                exp,
                status="analysed",
                now=now,
                actor=ACTOR,
                result=result,
                calibration_point_id=point.id,
                payload={"calibration_point_id": point.id},
            )
            outcome = "analysed"
        else:
            reason = "; ".join(reading.problems) or "zero standard error"
            store.set_status(
                session, exp, status="inconclusive", now=now, actor=ACTOR, result=result, reason=reason
            )
            outcome = "inconclusive"
        _close_experiment_request(session, exp, now, f"experiment {outcome}")
    return outcome


def _close_experiment_request(session: Session, exp: Experiment, now: datetime, reason: str) -> None:
    cr = crs.get(session, change_request_id=exp.change_request_id)
    if cr is None or cr.status != State.EXECUTED.value:
        return
    crs.transition(session, change_request_id=cr.id, event=Event.START_MONITORING, actor=ACTOR, now=now)
    crs.transition(session, change_request_id=cr.id, event=Event.CONFIRM, actor=ACTOR, now=now, reason=reason)


def holdout_spend(session: Session, exp: Experiment) -> float:
    """The spend the held-out regions would have had over the window: the control regions' spend in the
    window scaled by the held-out share of the channel's spend before it."""
    before = store.spend_rows(
        session, start=exp.start - timedelta(days=RECENT_DAYS + 1), end=exp.start - timedelta(days=2)
    )
    shares = region_shares([r for r in before if r[0] == exp.channel]).get(exp.channel, {})
    share = sum(shares.get(r, 0.0) for r in exp.regions)
    during = [r for r in store.spend_rows(session, start=exp.start, end=exp.end) if r[0] == exp.channel]
    controls = sum(s for _, region, s in during if region not in exp.regions)
    if share >= 1.0:
        raise ValueError(f"experiment {exp.id} held out every region of {exp.channel}")
    return controls * share / (1.0 - share)


def fill_roi_after(session: Session) -> int:
    """Set ``roi_after`` from the first model version trained with each experiment's calibration point."""
    filled = 0
    for exp in session.execute(
        select(Experiment).where(Experiment.status == "analysed", Experiment.roi_after.is_(None))
    ).scalars():
        point = session.get(CalibrationPoint, exp.calibration_point_id)
        version = None if point is None else store.first_version_with(session, point)
        if version is None:
            continue
        roi = (version.summary.get("channels", {}).get(exp.channel) or {}).get("roi")
        if roi is None:
            continue
        exp.roi_after = float(roi["mean"])
        exp.after_model_version_id = version.id
        filled += 1
    session.flush()
    return filled


# ------------------------------------------------------------------------------------- planning


def _recently_tested(session: Session, today: date) -> set[str]:
    since = today - timedelta(days=RETEST_AFTER_DAYS)
    return {
        e.channel
        for e in store.list_experiments(session)
        if e.status in ("running", "ending", "reading", "analysed") and e.end >= since
    }


def design_inputs(rt: Runtime, session: Session, version: ModelVersion, today: date) -> DesignInputs | str:
    from agents.plan import daily_curves, live_campaigns, load_model

    yesterday = today - timedelta(days=1)
    try:
        panel = _panel(session, start=yesterday - timedelta(days=PRE_DAYS - 1), end=yesterday)
    except ValueError:  # a young account, or days not landed yet
        return f"the regional panel does not cover each of the last {PRE_DAYS} days"
    if panel.revenue.size == 0:
        return "no regional revenue has landed yet"
    live = live_campaigns(rt, session)
    spend: dict[str, float] = defaultdict(float)
    for c in live:
        spend[c.channel] += c.budget
    geo = geo_clients(rt.connectors)
    recent = _recently_tested(session, today)
    testable = {c.channel: c.platform for c in live if c.platform in geo and c.channel not in recent}
    rows = store.spend_rows(session, start=yesterday - timedelta(days=RECENT_DAYS - 1), end=yesterday)
    roi = {ch: v["roi"] for ch, v in version.summary.get("channels", {}).items() if "roi" in v}
    return DesignInputs(
        today=today,
        roi=roi,
        curves=daily_curves(load_model(rt, version)),
        daily_spend=dict(spend),
        region_share=region_shares(rows),
        panel=panel,
        testable=testable,
        model_version_id=version.id,
    )


def propose(rt: Runtime, session: Session) -> dict[str, Any]:
    """Plan an experiment when nothing else is open; store it as a change request sent for approval."""
    now, today = rt.clock.now(), rt.clock.today()
    if store.active(session):
        return {"proposed": False, "reason": "an experiment is under way"}
    # one decision at a time, as the planner: a request being watched (monitoring) does not hold us
    deciding = [s.value for s in OPEN if s is not State.MONITORING]
    open_cr = session.execute(
        select(ChangeRequest.id, ChangeRequest.status).where(ChangeRequest.status.in_(deciding)).limit(1)
    ).first()
    if open_cr is not None:
        return {
            "proposed": False,
            "reason": f"change request {open_cr[0]} is still {open_cr[1]}: one at a time",
        }
    last_end = max((e.end for e in store.list_experiments(session) if e.status != "cancelled"), default=None)
    if last_end is not None and (today - last_end).days < GAP_DAYS:
        return {
            "proposed": False,
            "reason": f"the last experiment ended {last_end}: {GAP_DAYS} days between tests",
        }
    version = model_store.promoted(session)
    if version is None:
        return {"proposed": False, "reason": "no promoted model yet"}
    policy_version, policy = rt.policy(session)
    inputs = design_inputs(rt, session, version, today)
    if isinstance(inputs, str):
        return {"proposed": False, "reason": inputs}
    design = plan_experiment(inputs, policy)
    if isinstance(design, NoDesign):
        return {"proposed": False, "reason": design.reason}
    cr, exp = create_experiment(rt, session, design, policy, policy_version, now)
    return {"proposed": True, "experiment_id": exp.id, "change_request_id": cr.id, "design": design.to_dict()}


def create_experiment(
    rt: Runtime, session: Session, design: Design, policy: Policy, policy_version: int | None, now: datetime
) -> tuple[ChangeRequest, Experiment]:
    cost_per_day = design.predicted_lift_mean / design.days
    verdicts: list[dict[str, Any]] = [
        {
            "rule": "max_holdout_share",
            "key": design.channel,
            "outcome": "pass",
            "level": "hard",
            "limit": min(0.10, policy.experiments.max_holdout_share),
            "proposed": round(design.share, 4),
            "adjusted": None,
            "message": f"holds out {design.share:.1%} of {design.channel}'s spend",
        },
        {
            "rule": "exploration_share",
            "key": design.channel,
            "outcome": "pass",
            "level": "hard",
            "limit": policy.exploration_share,
            "proposed": round(design.holdout_spend_per_day, 2),
            "adjusted": None,
            "message": "withheld spend fits the exploration budget",
        },
        {
            "rule": "freeze_window",
            "key": design.channel,
            "outcome": "pass",
            "level": "hard",
            "limit": None,
            "proposed": f"{design.apply_on}..{design.restore_on}",
            "adjusted": None,
            "message": "the whole test window is clear of freeze windows",
        },
    ]
    currency = policy.budget.currency
    draft = crs.ChangeRequestDraft(
        kind="experiment",
        requested_by=ACTOR,
        objective="incrementality",
        summary=(
            f"Geo holdout: pause {design.channel} in {', '.join(design.regions)} ({design.share:.1%} of its "
            f"spend, {design.holdout_spend_per_day:,.2f} {currency}/day) for {design.days} days to measure its "
            f"incremental revenue (model ROI {design.roi['mean']:.2f}, 90% {design.roi['p05']:.2f}.."
            f"{design.roi['p95']:.2f}); detects a {design.mde_rel:.1%} effect, power {design.power:.0%} "
            "against the model's prediction"
        ),
        items=[],
        expected_gain=-cost_per_day,
        gain_p05=-design.predicted_lift_p95 / design.days,
        gain_p95=-design.predicted_lift_p05 / design.days,
        probability_of_improvement=design.power,
        verdicts=verdicts,
        details={"experiment": design.to_dict(), "approvals_required": 1},
        model_version_id=design.model_version_id,
        policy_version=policy_version,
        expires_at=now + timedelta(hours=policy.approval.expire_after_hours),
    )
    cr = crs.create(session, draft=draft, now=now)
    exp = store.create(
        session,
        channel=design.channel,
        platform=design.platform,
        regions=design.regions,
        holdout_share=design.share,
        start=design.start,
        end=design.end,
        change_request_id=cr.id,
        model_version_id=design.model_version_id,
        roi_before=float(design.roi["mean"]),
        design=design.to_dict(),
        now=now,
        actor=ACTOR,
    )
    if policy.autonomy == "shadow":
        cr = crs.transition(
            session,
            change_request_id=cr.id,
            event=Event.RECORD_SHADOW,
            actor=ACTOR,
            now=now,
            reason="autonomy is shadow: recorded, not run",
        )
    else:
        cr = crs.transition(session, change_request_id=cr.id, event=Event.SUBMIT, actor=ACTOR, now=now)
    rt.notify(session, cr)
    return cr, exp


def experiments_report(session: Session) -> list[dict[str, Any]]:
    """The demo report's ``experiments`` list: one entry per experiment that ran."""
    out: list[dict[str, Any]] = []

    def mroas(version_id: int | None, channel: str) -> float | None:
        version = None if version_id is None else session.get(ModelVersion, version_id)
        found = (
            None if version is None else (version.summary.get("channels", {}).get(channel) or {}).get("mroas")
        )
        return None if found is None else round(float(found["mean"]), 4)

    for e in store.list_experiments(session):
        if e.status in ("proposed", "cancelled"):
            continue
        result = e.result or {}
        delta, lift = result.get("spend_delta"), result.get("incremental_revenue")
        out.append(
            {
                "id": e.id,
                "channel": e.channel,
                "regions": list(e.regions),
                "holdout_share": round(e.holdout_share, 4),
                "start": e.start.isoformat(),
                "end": e.end.isoformat(),
                "status": e.status,
                "spend_delta": result.get("spend_delta"),
                "incremental_revenue": result.get("incremental_revenue"),
                "incremental_revenue_se": result.get("incremental_revenue_se"),
                "relative_lift": result.get("relative_lift"),
                "measured_return": None if not delta or lift is None else round(lift / -delta, 4),
                "roi_before": e.roi_before,
                "roi_after": e.roi_after,
                "mroas_before": mroas(e.model_version_id, e.channel),
                "mroas_after": mroas(e.after_model_version_id, e.channel),
                "model_version_before": e.model_version_id,
                "model_version_after": e.after_model_version_id,
                "placebo_time_z": (result.get("placebo_time") or {}).get("z"),
                "pre_mape": result.get("pre_mape"),
                "reason": e.reason,
            }
        )
    return out
