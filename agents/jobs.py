"""The agents as jobs: each takes the :class:`~agents.runtime.Runtime`, does one unit of work and returns a
JSON-able summary. The scheduler (:mod:`agents.scheduler`) decides when they run; the jobs never look
at the wall clock, only at ``rt.clock``.

=========  ==========================  ================================================================
job        when                        what
=========  ==========================  ================================================================
ingest     daily 06:00 UTC             pull every connector up to yesterday into the raw and clean tables
monitor    daily 07:00 UTC             compare yesterday with each monitored request's band; roll back
retrain    weekly, Monday 03:00 UTC    fit the latest four quarters; promote only a healthy version
experiment daily 07:30 UTC             land the regional panel; start, end and read geo holdouts; plan the
                                       next one when nothing is open (tests use the exploration budget first)
plan       daily 08:00 UTC, on demand  one planning step from the promoted model (no-op while a request
                                       is open); runs right after a promotion too
execute    every 5 minutes             apply approved requests exactly once (and finish crashed ones)
expire     hourly                      expire requests nobody decided in time
digest     daily 00:15 UTC             sign the audit log's head, chained to the previous digest
=========  ==========================  ================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.rollback import ROLLED_BACK_REASON
from agents.runtime import Runtime
from budgetloop.db.loop import ChangeRequest
from budgetloop.lifecycle import State
from budgetloop.store import change_requests as crs
from budgetloop.store import metrics as metrics_store

log = logging.getLogger(__name__)

JobFunc = Callable[[Runtime], dict[str, Any]]
EXPERIMENT_KINDS = ("experiment", "experiment_end")
#: executor outcomes that leave an approved change unapplied (or partly undone), worth a warning
UNEXECUTED = frozenset({"blocked", "stale", "failed", "halted"})


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: JobFunc
    cron: dict[str, Any]  # APScheduler CronTrigger fields (UTC)
    description: str


def ingest(rt: Runtime) -> dict[str, Any]:
    from agents.ingest import run_ingest

    yesterday = rt.clock.today() - timedelta(days=1)
    with rt.unit_of_work() as session:
        last = metrics_store.last_complete_day(session)
        start = yesterday - timedelta(days=6) if last is None else min(last + timedelta(days=1), yesterday)
        # Re-pull the last three days too: platforms restate recent days (late corrections).
        start = min(start, yesterday - timedelta(days=2))
        report = run_ingest(session, rt.connectors, start=start, end=yesterday, now=rt.clock.now())
    return {
        "start": start.isoformat(),
        "end": yesterday.isoformat(),
        "landed": report.total("landed"),
        "updated": report.total("updated"),
        "quarantined": report.total("quarantined"),
        "failed_sources": report.failed_sources,
    }


def retrain(rt: Runtime) -> dict[str, Any]:
    from agents.retrain import retrain as run_retrain

    with rt.unit_of_work() as session:
        outcome = run_retrain(session, now=rt.clock.now(), options=rt.fit)
    summary: dict[str, Any] = {
        "version_id": outcome.version_id,
        "promoted": outcome.promoted,
        "reason": outcome.reason,
        "fit_seconds": outcome.fit_seconds,
    }
    if outcome.promoted:
        summary["plan"] = plan(rt)
    return summary


def plan(rt: Runtime) -> dict[str, Any]:
    from agents.plan import run_plan

    with rt.unit_of_work() as session:
        run = run_plan(rt, session)
        return {"proposed": run.proposed, "change_request_id": run.change_request_id, "reason": run.reason}


def execute(rt: Runtime) -> dict[str, Any]:
    from agents.execute import execute_request, reconcile_unknown

    with rt.unit_of_work() as session:
        _, policy = rt.policy(session)
    settled = reconcile_unknown(rt.sessions, rt.connectors, clock=rt.clock, policy=policy)
    for r in settled:  # a call that never answered, looked at again (landed late: put back)
        log.warning("change request %s, %s (%s): %s", r.change_request_id, r.channel, r.key, r.detail)
        if rt.notifier is not None and r.first:  # a failing put-back is tried each run: told once
            with rt.unit_of_work() as session:
                cr = crs.get(session, change_request_id=r.change_request_id)
                if cr is not None:
                    rt.note(session, cr, f"{r.channel}: {r.detail}")
    with rt.unit_of_work() as session:
        due: dict[int, str] = {
            cr_id: status
            for cr_id, status in session.execute(
                select(ChangeRequest.id, ChangeRequest.status)
                .where(ChangeRequest.status.in_([State.APPROVED.value, State.EXECUTING.value]))
                .where(ChangeRequest.kind.not_in(EXPERIMENT_KINDS))  # the experiment job runs those
                .order_by(ChangeRequest.id)
            )
        }
    results = {}
    for cr_id, status_before in due.items():
        report = execute_request(
            rt.sessions, change_request_id=cr_id, connectors=rt.connectors, policy=policy, clock=rt.clock
        )
        results[str(cr_id)] = report.status
        went_wrong = report.outcome in UNEXECUTED
        if went_wrong or report.outcome == "deferred":  # the job ran, the change did not: say so
            log.warning("change request %s %s (%s): %s", cr_id, report.outcome, report.status, report.reason)
        # The Slack message follows the request (executed, failed, ...). A run that leaves it where
        # it was (deferred; halted, every few minutes while the kill switch is on) tells Slack nothing.
        if rt.notifier is not None and report.status != status_before:
            with rt.unit_of_work() as session:
                cr = crs.get(session, change_request_id=cr_id)
                if cr is not None:
                    rt.notify(session, cr)
                    if went_wrong and report.reason:
                        rt.note(session, cr, f"Execution {report.outcome}: {report.reason}")
    summary: dict[str, Any] = {"executed": results}
    if settled:
        summary["reconciled"] = {r.key: r.outcome for r in settled}
    return summary


def cancelled_by_rollback(session: Session, original_id: int) -> list[ChangeRequest]:
    """The requests cancelled because ``original_id`` is being rolled back (planned from budgets the
    rollback changes; see agents.rollback._clear_the_way, whose reason this reads)."""
    return list(
        session.execute(
            select(ChangeRequest)
            .where(
                ChangeRequest.status == State.CANCELLED.value,
                ChangeRequest.status_reason.startswith(ROLLED_BACK_REASON.format(original_id)),
            )
            .order_by(ChangeRequest.id)
        ).scalars()
    )


def monitor(rt: Runtime) -> dict[str, Any]:
    from agents.forecast import model_predictor
    from agents.monitor import monitor_day

    day = rt.clock.today() - timedelta(days=1)
    with rt.unit_of_work() as session:
        _, policy = rt.policy(session)
    readings = monitor_day(
        rt.sessions,
        day=day,
        clock=rt.clock,
        predictor=model_predictor(rt),
        policy=policy,
        connectors=rt.connectors,
    )
    with rt.unit_of_work() as session:
        for r in readings:
            rollback = (
                crs.get(session, change_request_id=r.rollback_request_id) if r.rollback_request_id else None
            )
            if rollback is not None and rollback.status in (State.FAILED.value, State.CANCELLED.value):
                # a rollback that did not run is a warning, as an execution's is
                log.warning(
                    "change request %s: its rollback (request %s) is %s: %s",
                    r.change_request_id,
                    rollback.id,
                    rollback.status,
                    rollback.status_reason,
                )
            if rt.notifier is None:
                continue
            cr = crs.get(session, change_request_id=r.change_request_id)
            if cr is None:
                continue
            band = (
                ""
                if r.band_low is None or r.realised is None
                else f": realised {r.realised:,.0f} vs band {r.band_low:,.0f}–{r.band_high or 0:,.0f}"
            )
            rt.note(session, cr, f"{r.day} {r.outcome}{band}. {r.reason}".strip())
            if r.action != "none":
                rt.notify(session, cr)
            if rollback is not None:
                rt.notify(session, rollback)
                # the requests it cancelled: their messages still offered Approve
                for cancelled in cancelled_by_rollback(session, r.change_request_id):
                    rt.notify(session, cancelled)
    return {
        "day": day.isoformat(),
        "readings": {str(r.change_request_id): r.outcome for r in readings},
        "actions": {str(r.change_request_id): r.action for r in readings if r.action != "none"},
    }


def experiment(rt: Runtime) -> dict[str, Any]:
    from agents.experiments.lifecycle import run_experiments

    return run_experiments(rt)


def digest(rt: Runtime) -> dict[str, Any]:
    """Sign the audit log's head, chained to the previous digest, so history cannot be rewritten unseen."""
    from budgetloop.store.audit import make_digest

    with rt.unit_of_work() as session:
        d = make_digest(session, key=rt.settings.audit_signing_key, now=rt.clock.now())
        return {"head_seq": d.head_seq, "head_hash": d.head_hash}


def expire(rt: Runtime) -> dict[str, Any]:
    from agents.expire import expire_stale

    with rt.unit_of_work() as session:
        expired = expire_stale(session, now=rt.clock.now(), notify=rt.notify)
    return {"expired": expired}


JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec("ingest", ingest, {"hour": 6, "minute": 0}, "pull every connector up to yesterday"),
        JobSpec("monitor", monitor, {"hour": 7, "minute": 0}, "check yesterday against each forecast band"),
        JobSpec("retrain", retrain, {"day_of_week": "mon", "hour": 3, "minute": 0}, "weekly retrain"),
        JobSpec(
            "experiment", experiment, {"hour": 7, "minute": 30}, "geo holdouts: plan, run, read, calibrate"
        ),
        JobSpec("plan", plan, {"hour": 8, "minute": 0}, "one planning step"),
        JobSpec("execute", execute, {"minute": "*/5"}, "apply approved requests exactly once"),
        JobSpec("expire", expire, {"minute": 30}, "expire undecided requests"),
        JobSpec("digest", digest, {"hour": 0, "minute": 15}, "sign the audit log's head (chained digest)"),
    )
}
