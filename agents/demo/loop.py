"""The closed loop in accelerated time: a simulated market, real HTTP, real Slack clicks, a real database.

Everything runs on embedded defaults: SQLite under ``./var/``, the sandbox ad platforms on a loopback
port over an in-process :class:`~connectors.sandbox.market.Market`, the service (REST + Slack
endpoints) on another, and a fake Slack on a third where a simulated marketer reads each request and
clicks. The clock is simulated, and the same job registry and triggers that ``serve`` schedules run
through :class:`~agents.scheduler.SimulatedScheduler` (job locks, ``job_runs``, retries), so a day is:

====== ==================================================================================
03:00  Mondays: retrain on the latest four quarters (and plan right after a promotion)
06:00  ingest yesterday from every connector
07:00  monitor yesterday against each executed request's band (roll back after 3 days out)
07:30  experiments: start an approved geo holdout, end a finished one, read it and calibrate
08:00  plan one step (no-op while a request is still being decided or executed)
09:30  the marketer reads Slack and clicks; an approval executes at once through the service
10:00  execute anything approved that has not run (e.g. a rollback left for approval)
12:00  expire requests nobody decided in time
23:45  sign the audit log's head (a digest chained to the previous one)
====== ==================================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from slack_sdk import WebClient
from sqlalchemy import func, select

from agents import jobs
from agents.demo import market_policy
from agents.demo import report as reports
from agents.demo import score as scoring
from agents.demo.approver import SimulatedApprover
from agents.execute import EXPERIMENT_KINDS
from agents.execute_guard import ROLLBACK_STOPS
from agents.experiments.lifecycle import experiments_report
from agents.ingest import run_ingest
from agents.notify import SlackNotifier
from agents.plan import daily_curves, load_model
from agents.retrain import MIN_TRAINING_DAYS
from agents.runtime import FitOptions, Runtime
from agents.scheduler import SimulatedScheduler
from budgetloop.clock import SimulatedClock
from budgetloop.config import Settings
from budgetloop.db.loop import ChangeRequest, ChangeRequestItem, ModelVersion
from budgetloop.db.session import make_engine, upgrade_database
from budgetloop.errors import InputError
from budgetloop.fileio import read_user_text
from budgetloop.lifecycle import State
from budgetloop.store import audit
from budgetloop.store import metrics as metrics_store
from budgetloop.store import models as model_store
from budgetloop.store import policy as policy_store
from connectors.registry import sandbox_connectors
from connectors.sandbox.market import Market
from connectors.sandbox.scenario import Scenario, load_scenario
from connectors.sandbox.server import SandboxServer
from guardrails.checker import check_executed
from guardrails.loading import parse_policy
from guardrails.policy import Policy
from guardrails.records import CampaignState, ExecutedChange
from models.fit import enable_compilation_cache
from service.app import create_app
from service.slack.fake import FakeSlack, ServerThread

log = logging.getLogger(__name__)

ROLLBACK_RULES = ROLLBACK_STOPS | {"total_daily_max", "total_monthly_max", "bounds"}

SIGNING_SECRET = "demo-signing-secret"
BOT_TOKEN = "xoxb-demo"
SLACK_CHANNEL = "#budget-changes"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    scenario_path: Path
    policy_path: Path
    weeks: int = 52
    seed: int = 0
    report_dir: Path = Path("report")
    database_url: str | None = None
    fit: FitOptions = field(default_factory=lambda: FitOptions(method="svi", samples=500, holdout_days=28))
    # False: ``policy_path`` is the example policy the user did not choose, which the demo may fit
    # to a market with other channels (:func:`agents.demo.market_policy.policy_for_scenario`)
    policy_given: bool = True


@dataclass
class _State:
    days: list[reports.DayRecord] = field(default_factory=list)
    learning: dict[date, dict[str, bool]] = field(default_factory=dict)
    retrains: list[dict[str, Any]] = field(default_factory=list)


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def _default_database_url(report_dir: Path) -> str:
    path = Path("var") / "demo.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return f"sqlite:///{path.as_posix()}"


def _cached_policy_source(rt_cache: dict[str, Any]) -> Callable[[Any], tuple[int | None, Policy]]:
    def source(session: Any) -> tuple[int | None, Policy]:
        record = policy_store.active_policy_record(session)
        version = None if record is None else record.version
        if rt_cache.get("version") != version or "policy" not in rt_cache:
            v, policy = policy_store.active_policy(session)
            rt_cache.update(version=v, policy=policy)
        return rt_cache["version"], rt_cache["policy"]

    return source


def _execute_now(rt: Runtime) -> None:
    """What the service does after an approval commits: execute at once (the 10:00 sweep is the net)."""
    jobs.execute(rt)


def _wait_until_settled(rt: Runtime, clicked: list[int], timeout: float = 60.0) -> None:
    """Wait for the service's background work: the decisions on the clicked requests, then their
    execution (an approval executes at once through ``on_approved``). Jobs must not race it.

    An approved experiment (or its end) waits for the experiment job, not for the executor: it is
    decided, not in flight."""
    deadline = time.monotonic() + timeout
    waiting = set(clicked)
    while time.monotonic() < deadline:
        with rt.unit_of_work() as session:
            rows = session.execute(select(ChangeRequest.id, ChangeRequest.status, ChangeRequest.kind)).all()
        decided = {cr_id for cr_id, status, _ in rows if status != State.PENDING_APPROVAL.value}
        waiting -= decided
        in_flight = [
            cr_id
            for cr_id, status, kind in rows
            if status == State.EXECUTING.value
            or (status == State.APPROVED.value and kind not in EXPERIMENT_KINDS)
        ]
        if not waiting and not in_flight:
            return
        time.sleep(0.02)
    log.warning(
        "requests still undecided or executing after %.0f s; the next execute run picks them up", timeout
    )


def _forecast_week(rt: Runtime, days: list[reports.DayRecord], band: float) -> None:
    """Out-of-sample forecast of the week just passed by the model that was promoted during it."""
    if not days:
        return
    with rt.unit_of_work() as session:
        version = model_store.promoted(session)
        if version is None:
            return
        fm = load_model(rt, version)
        start = version.data_end + timedelta(days=1)
        end = days[-1].day
        if end < start:
            return
        table = metrics_store.daily_table(
            session, start=start, end=end, channel_names=list(fm.channels), allow_gaps=True
        )
    spend = table[list(fm.channels)].to_numpy(dtype=float)
    dates = table["date"].to_numpy().astype("datetime64[D]")
    draws = fm.predict(spend, None, dates, seed=int(end.toordinal()))
    lo_q, hi_q = (1 - band) / 2, 1 - (1 - band) / 2
    index = {np.datetime64(d, "D"): i for i, d in enumerate(dates)}
    for rec in days:
        i = index.get(np.datetime64(rec.day, "D"))
        if i is None:
            continue
        col = draws[:, i]
        rec.forecast_mean = float(col.mean())
        rec.forecast_low, rec.forecast_high = (float(q) for q in np.quantile(col, [lo_q, hi_q]))


def _violations(
    rt: Runtime, policy: Policy, start_budgets: dict[str, float], learning: dict[date, dict[str, bool]]
) -> tuple[int, list[dict[str, Any]]]:
    """Audit every executed change with the independent checker (not the engine that proposed it).

    A rollback undoes a change the monitor judged harmful, so the rules that change itself set off
    (learning, cooldown, swing) do not hold it back; the kill switch, freeze windows, caps and bounds
    still do, exactly as the executor applies them (``agents.execute_guard.ROLLBACK_STOPS``).
    """
    with rt.unit_of_work() as session:
        rows = session.execute(
            select(
                ChangeRequest.kind,
                ChangeRequestItem.change_request_id,
                ChangeRequestItem.channel,
                ChangeRequestItem.applied_at,
                ChangeRequestItem.before,
                ChangeRequestItem.after,
                ChangeRequestItem.state,
            )
            .join(ChangeRequest, ChangeRequest.id == ChangeRequestItem.change_request_id)
            .where(ChangeRequestItem.applied_at.is_not(None), ChangeRequestItem.state == "applied")
            .order_by(ChangeRequestItem.applied_at, ChangeRequestItem.id)
        ).all()
    budgets = dict(start_budgets)
    history: list[ExecutedChange] = []
    found: list[dict[str, Any]] = []
    groups: dict[tuple[int, datetime], list[Any]] = {}
    for row in rows:
        groups.setdefault((row.change_request_id, row.applied_at), []).append(row)
    for (cr_id, at), items in sorted(groups.items(), key=lambda kv: kv[0][1]):
        before = dict(budgets)
        after = dict(budgets)
        for it in items:
            after[it.channel] = float(it.after)
        day_learning = learning.get(at.date(), {})
        states = {ch: CampaignState(channel=ch, learning=bool(day_learning.get(ch))) for ch in before}
        rollback = items[0].kind == "rollback"
        for v in check_executed(
            before=before, after=after, states=states, history=history, policy=policy, at=at
        ):
            if rollback and v.rule not in ROLLBACK_RULES:
                continue
            found.append(
                {
                    "change_request_id": cr_id,
                    "at": at.isoformat(),
                    **{k: getattr(v, k) for k in ("rule", "key", "message") if hasattr(v, k)},
                }
            )
        for it in items:
            history.append(
                ExecutedChange(key=it.channel, at=at, before=before[it.channel], after=after[it.channel])
            )
        budgets = after
    return len(found), found


def _demo_policy(config: DemoConfig, scenario: Scenario, progress: Progress) -> tuple[str, Policy, str]:
    """The policy the loop runs under, checked against the market before anything is written."""
    source = str(config.policy_path)
    text = read_user_text(config.policy_path, what="the guardrail policy")
    policy = parse_policy(text, source=source)
    if not config.policy_given and set(policy.channels) != set(scenario.channel_names):
        text = market_policy.policy_for_scenario(text, scenario)
        source = f"{source} (derived for scenario {scenario.name!r})"
        policy = parse_policy(text, source=source)
        progress(
            f"no --policy given and the example policy's channels are not the scenario's: using its rules "
            f"with a daily cap of {policy.budget.total_daily_max:,.0f} (the starting budgets' sum) and each "
            "channel between a quarter and twice its starting budget"
        )
    market_policy.check_policy_fits_market(
        policy, scenario, source=str(config.policy_path), scenario_source=str(config.scenario_path)
    )
    text, policy, frozen = market_policy.with_scenario_freezes(text, policy, scenario, source=source)
    if frozen:
        source += " (the scenario's freezes added)"
        progress(
            f"the scenario's freeze events are added to the policy as {frozen} freeze window(s) "
            "(00:00-24:00 UTC on the market's days, where its own windows do not already cover them): "
            "no change executes inside them"
        )
    text, policy, added = market_policy.with_demo_approvers(text, policy, source=source)
    if added:
        source += " (simulated approvers added)"
        progress(
            "the policy names no approvers (approval.approvers): the simulated marketers "
            f"{', '.join(market_policy.DEMO_APPROVERS)} approve in this demo"
        )
    return text, policy, source


def run_demo(config: DemoConfig, progress: Progress = print) -> dict[str, Any]:
    started = time.perf_counter()
    enable_compilation_cache(Path("var") / "jax-cache")  # a second demo run skips XLA compilation
    scenario: Scenario = load_scenario(config.scenario_path)
    if scenario.history_days < 1:
        raise InputError(
            "the demo backfills the scenario's history before its first day, and there is none",
            file=str(config.scenario_path),
            key="history_days",
            fix=f"set history_days to 1 or more (the first model waits for {MIN_TRAINING_DAYS} days of data; "
            "the example has 364)",
        )
    policy_text, policy, policy_source = _demo_policy(config, scenario, progress)
    url = config.database_url or _default_database_url(config.report_dir)
    upgrade_database(url)
    engine = make_engine(url)
    first = scenario.first_loop_day
    last = first + timedelta(days=7 * config.weeks - 1)
    clock = SimulatedClock(_at(first - timedelta(days=1), 22))
    market = Market(scenario)
    market.advance_to(first)
    settings = Settings(
        database_url=url,
        slack_signing_secret=SIGNING_SECRET,
        slack_bot_token=BOT_TOKEN,
        slack_channel=SLACK_CHANNEL,
    )
    state = _State()
    with (
        SandboxServer(market) as sandbox,
        FakeSlack(signing_secret=SIGNING_SECRET, bot_token=BOT_TOKEN) as slack,
    ):
        connectors = sandbox_connectors(sandbox.base_url)
        client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
        cache: dict[str, Any] = {}
        rt = Runtime(
            engine=engine,
            clock=clock,
            connectors=connectors,
            settings=settings,
            policy_source=_cached_policy_source(cache),
            notifier=SlackNotifier(client, channel=SLACK_CHANNEL, clock=clock, policy=policy),
            fit=config.fit,
        )
        with rt.unit_of_work() as session:
            policy_store.record_policy(
                session, text=policy_text, source=policy_source, author="ops", now=clock.now()
            )
        app = create_app(
            settings=settings,
            engine=engine,
            clock=clock,
            slack=client,
            on_approved=lambda _id: _execute_now(rt),
        )
        service = ServerThread(app).start()
        try:
            approver = SimulatedApprover(slack, service.url + "/slack/interactions", clock, seed=config.seed)
            # History backfill: everything before the loop's first day, as a new customer would on day one.
            with rt.unit_of_work() as session:
                run_ingest(
                    session, connectors, start=scenario.start, end=first - timedelta(days=1), now=clock.now()
                )
            progress(
                f"backfilled {scenario.history_days} days of history from {scenario.start} "
                f"({len(scenario.channels)} channels) in {time.perf_counter() - started:.1f} s"
            )
            start_budgets = market.budgets()
            week_days: list[reports.DayRecord] = []
            day = first
            scheduler = SimulatedScheduler(rt, clock, before_run=lambda now: market.advance_to(now.date()))
            if first.weekday() != 0:  # the first model cannot wait for the first Monday
                scheduler.request("retrain", at=_at(first, 3))
            while day <= last + timedelta(days=1):
                market.advance_to(day)
                state.learning[day] = {ch: market.learning_days_left(ch) > 0 for ch in market.channels}
                if day > first:
                    o = market.outcome(day - timedelta(days=1))
                    rec = reports.DayRecord(
                        day=o.day,
                        budgets={ch: cd.budget for ch, cd in o.channels.items()},
                        spend={ch: cd.spend for ch, cd in o.channels.items()},
                        revenue=o.revenue,
                    )
                    state.days.append(rec)
                    week_days.append(rec)
                if day > last:  # the last day's numbers: ingest and monitor it, then stop
                    scheduler.run_due(_at(day, 7, 15))
                    break
                if day.weekday() == 0:
                    _forecast_week(rt, week_days, policy.monitoring.band)
                    week_days = []
                # The night and the morning's jobs (retrain on Mondays, ingest, monitor, experiments, plan).
                morning = scheduler.run_due(_at(day, 9, 29))
                for result in morning:
                    if result.job == "retrain":
                        state.retrains.append(
                            {
                                **(result.summary or {}),
                                "wall_s": round(result.duration_s, 2),
                                "status": result.status,
                                "day": day.isoformat(),
                            }
                        )
                        _progress_week(progress, rt, day, first, config.weeks, state.retrains[-1], state)
                # 09:30: the marketer reads Slack; an approval executes at once through the service.
                clock.set(_at(day, 9, 30))
                with rt.unit_of_work() as session:
                    _, current_policy = rt.policy(session)
                    revenue_per_day = (
                        float(np.mean([d.revenue for d in state.days[-28:]])) if state.days else 0.0
                    )
                    clicks = approver.review(session, current_policy, revenue_per_day)
                _wait_until_settled(rt, [c.change_request_id for c in clicks])
                # The rest of the day: execution sweeps, expiry, the audit digest.
                scheduler.run_due(_at(day, 23, 59))
                day += timedelta(days=1)
            _forecast_week(rt, week_days, policy.monitoring.band)
            summary = _summarise(
                config, scenario, policy, rt, market, state, start_budgets, first, last, started
            )
            curves = _curves(rt, scenario, market)
            requests, versions = _records(rt)
        finally:
            service.stop()
            connectors.close()
    oracle = summary["oracle_allocation"]
    report = reports.DemoReport(
        summary=summary,
        days=state.days,
        oracle=oracle,
        curves=curves,
        requests=requests,
        model_versions=versions,
    )
    json_path = reports.write_json(report, config.report_dir)
    html_path = reports.write_html(report, config.report_dir)
    summary["report_json"] = str(json_path)
    summary["report_html"] = str(html_path)
    engine.dispose()
    return summary


def _progress_week(
    progress: Progress, rt: Runtime, day: date, first: date, weeks: int, result: dict[str, Any], state: _State
) -> None:
    # a loop that starts mid-week retrains on its first day and again on the first Monday
    week = (
        "loop start"
        if day == first and first.weekday() != 0
        else f"week {(day - first).days // 7 + 1:>2}/{weeks}"
    )
    with rt.unit_of_work() as session:
        counts = dict(
            session.execute(select(ChangeRequest.status, func.count()).group_by(ChangeRequest.status)).all()
        )
        has_model = model_store.promoted(session) is not None
    revenue = sum(d.revenue for d in state.days)
    if result.get("promoted"):
        verdict = "promoted"
    else:
        reason = str(result.get("reason") or result.get("status") or "")
        reason = reason.removeprefix("kept the previous version: ")
        verdict = f"{'kept previous' if has_model else 'no model yet'} ({_clip(reason, 120)})"
    progress(
        f"{week} {day}  retrain {result.get('wall_s', 0):.1f}s {verdict}; "
        f"revenue so far {revenue:,.0f}; requests {dict(sorted(counts.items()))}"
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summarise(
    config: DemoConfig,
    scenario: Scenario,
    policy: Policy,
    rt: Runtime,
    market: Market,
    state: _State,
    start_budgets: dict[str, float],
    first: date,
    last: date,
    started: float,
) -> dict[str, Any]:
    outcomes = market.outcomes(first, last)
    revenue_total = round(sum(o.revenue for o in outcomes), 2)
    spend_total = round(sum(o.spend for o in outcomes), 2)
    days = len(outcomes)
    score = scoring.score(scenario, policy, first, last)
    half = first + timedelta(days=min(7 * 26, days) - 1)
    score_26 = scoring.score(scenario, policy, first, half) if days > 7 * 26 else None
    revenue_26 = round(sum(o.revenue for o in market.outcomes(first, half)), 2)
    with rt.unit_of_work() as session:
        final = dict(
            session.execute(select(ChangeRequest.status, func.count()).group_by(ChangeRequest.status)).all()
        )
        rollbacks = session.scalar(
            select(func.count())
            .select_from(ChangeRequest)
            .where(
                ChangeRequest.kind == "rollback",
                ChangeRequest.status.in_(["executed", "monitoring", "confirmed"]),
            )
        )
        chain = audit.verify_chain(session)
        experiments = experiments_report(session)
        promoted = session.scalar(
            select(func.count())
            .select_from(ModelVersion)
            .where(ModelVersion.status.in_(["promoted", "retired"]))
        )
        trained = session.scalar(select(func.count()).select_from(ModelVersion))
    n_violations, violations = _violations(rt, policy, start_budgets, state.learning)
    daily_totals = [sum(o.channels[c].budget for c in o.channels) for o in outcomes]
    month_spend: dict[str, float] = {}
    for o in outcomes:
        key = o.day.strftime("%Y-%m")
        month_spend[key] = month_spend.get(key, 0.0) + o.spend
    uplift = score.uplift_captured(revenue_total)
    summary: dict[str, Any] = {
        "weeks": config.weeks,
        "scenario": scenario.name,
        "seed": config.seed,
        "currency": scenario.currency,
        "loop_start": first.isoformat(),
        "loop_end": last.isoformat(),
        "revenue_total": revenue_total,
        "static_revenue_total": score.static_revenue_total,
        "oracle_revenue_total": score.oracle_revenue_total,
        "uplift_captured": None if uplift is None else round(uplift, 4),
        "spend_total": spend_total,
        "budget_total": round(policy.budget.total_daily_max * days, 2),
        # The daily budgets in force, summed over the run: platforms deliver around them (over on
        # single days, up to the monthly cap), so spend_total can exceed both this and budget_total.
        "budgets_set_total": round(sum(daily_totals), 2),
        "change_requests": dict(sorted(final.items())),
        "rollbacks": int(rollbacks or 0),
        "guardrail_violations": n_violations,
        "guardrail_violation_details": violations,
        "audit_chain_valid": chain.valid,
        "audit_entries": chain.entries,
        "experiments": experiments,
        "max_daily_budget_total": round(max(daily_totals), 2) if daily_totals else 0.0,
        "daily_cap": policy.budget.total_daily_max,
        "daily_cap_respected": all(t <= policy.budget.total_daily_max + 0.005 for t in daily_totals),
        "max_monthly_spend": round(max(month_spend.values()), 2) if month_spend else 0.0,
        "monthly_cap": policy.budget.total_monthly_max,
        "oracle_allocation": score.oracle_allocation,
        "final_budgets": market.budgets(),
        "model_versions_trained": int(trained or 0),
        "model_versions_promoted": int(promoted or 0),
        "retrain_seconds_median": float(np.median([r.get("wall_s", 0.0) for r in state.retrains]))
        if state.retrains
        else None,
        "elapsed_seconds": round(time.perf_counter() - started, 1),
    }
    if score_26 is not None:
        u26 = score_26.uplift_captured(revenue_26)
        summary["uplift_captured_26_weeks"] = None if u26 is None else round(u26, 4)
    return summary


def _curves(rt: Runtime, scenario: Scenario, market: Market) -> list[reports.CurveComparison]:
    with rt.unit_of_work() as session:
        version = model_store.promoted(session)
        if version is None:
            return []
        fm = load_model(rt, version)
    rc = daily_curves(fm)
    out: list[reports.CurveComparison] = []
    day = market.today() - timedelta(days=1)
    for i, ch in enumerate(rc.channels):
        budget = scenario.channel(ch).daily_budget
        grid = np.linspace(0.0, 3.0 * max(budget, 1.0), 40)
        rev = rc.revenue(np.tile(grid[:, None], (1, len(rc.channels))))[:, :, i]
        true = scoring.true_curves(scenario, [ch], {ch: grid}, day=day)[ch]
        out.append(
            reports.CurveComparison(
                ch,
                grid.tolist(),
                true,
                rev.mean(0).tolist(),
                np.quantile(rev, 0.05, axis=0).tolist(),
                np.quantile(rev, 0.95, axis=0).tolist(),
                float(market.budget(ch)),
            )
        )
    return out


def _records(rt: Runtime) -> tuple[list[reports.RequestRecord], list[dict[str, Any]]]:
    with rt.unit_of_work() as session:
        crs_ = session.execute(select(ChangeRequest).order_by(ChangeRequest.id)).scalars().all()
        requests = [
            reports.RequestRecord(
                id=c.id,
                kind=c.kind,
                status=c.status,
                created=c.created_at.date(),
                decided=c.decided_at.date() if c.decided_at else None,
                executed=c.executed_at.date() if c.executed_at else None,
                summary=c.summary,
                relative_move=c.relative_move,
            )
            for c in crs_
        ]
        versions = [
            {
                "id": v.id,
                "status": v.status,
                "data_end": v.data_end.isoformat(),
                "healthy": v.healthy,
                "reason": v.reason or "",
            }
            for v in session.execute(select(ModelVersion).order_by(ModelVersion.id)).scalars()
        ]
    return requests, versions
