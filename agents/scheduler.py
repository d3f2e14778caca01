"""When the agents run: one set of cron triggers, two ways to drive them, one way to run a job.

The triggers come from :data:`agents.jobs.JOBS` (APScheduler ``CronTrigger`` fields, UTC). They drive

* :class:`WallScheduler` for ``serve``/``worker``: APScheduler 3's ``BackgroundScheduler`` with a
  persistent ``SQLAlchemyJobStore`` in the service's own database, on the wall clock;
* :class:`SimulatedScheduler` for the demo and the tests: :meth:`~SimulatedScheduler.run_due` computes
  fire times with ``trigger.get_next_fire_time(prev, now)`` and runs what is due in order, moving a
  :class:`~budgetloop.clock.SimulatedClock` forward. No sleeping, no wall clock.

Both go through :func:`run_job`, which

1. claims the run of (job, scheduled_for) in the database (:mod:`agents.locks`), so two replicas against
   one PostgreSQL never run the same job twice, and a killed worker's half-done run is taken over;
2. records each attempt in ``job_runs`` (ok, failed, or skipped_locked with the holder);
3. turns a failure into a retry after a backoff on the runtime's clock, up to
   :attr:`RetryPolicy.max_attempts`; the failure stays in ``job_runs``, the metrics and the logs.

A job's exception never escapes :func:`run_job`: the scheduler keeps going.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from agents.jobs import JOBS, JobSpec
from agents.locks import Claim, Refusal, process_owner, release, try_claim
from agents.runtime import Runtime
from budgetloop.clock import SimulatedClock, ensure_utc
from budgetloop.db.loop import ChangeRequest, ChangeRequestItem
from budgetloop.db.ops import JobLock, JobRun
from budgetloop.errors import InputError
from budgetloop.lifecycle import State
from service.observability import JOB_ATTEMPTS, JOB_SECONDS, current_job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts; the n-th retry waits ``backoff x factor^(n-1)`` on the runtime's clock."""

    max_attempts: int = 3
    backoff: timedelta = timedelta(minutes=2)
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"`max_attempts` must be at least 1, got {self.max_attempts}")
        if self.backoff <= timedelta(0):
            raise ValueError(f"`backoff` must be positive, got {self.backoff}")

    def delay(self, attempt: int) -> timedelta:
        """Wait after failed ``attempt`` (1-based) before the next one."""
        return self.backoff * (self.factor ** (attempt - 1))


@dataclass(frozen=True)
class JobResult:
    job: str
    scheduled_for: datetime
    status: str  # ok | failed | skipped_locked
    attempt: int
    summary: dict[str, Any] | None = None
    error: str | None = None
    retry_at: datetime | None = None  # when a failed attempt should be tried again
    duration_s: float = 0.0


WORK_NOW = "work"  # what an idle check answers when the job has something to do now

# An idle check answers WORK_NOW, or the first time work may exist without anyone acting (None: not
# before another job runs or a person decides something).
IdleCheck = Callable[[Session, datetime], "str | datetime | None"]


def _execute_idle(session: Session, now: datetime) -> str | datetime | None:
    """Work when a request is approved or was left executing, or a budget call's outcome is still
    unknown (each run looks at it again: agents.execute.reconcile_unknown); otherwise none until
    someone acts."""
    from agents.execute import UNKNOWN

    states = (State.APPROVED.value, State.EXECUTING.value)
    found = session.execute(select(ChangeRequest.id).where(ChangeRequest.status.in_(states)).limit(1)).first()
    unknown = session.execute(
        select(ChangeRequestItem.id).where(ChangeRequestItem.state == UNKNOWN).limit(1)
    ).first()
    return WORK_NOW if found is not None or unknown is not None else None


def _expire_idle(session: Session, now: datetime) -> str | datetime | None:
    """Work when a waiting request is past its deadline; otherwise none before the next deadline."""
    deadline = session.execute(
        select(func.min(ChangeRequest.expires_at)).where(
            ChangeRequest.status == State.PENDING_APPROVAL.value, ChangeRequest.expires_at.is_not(None)
        )
    ).scalar_one_or_none()
    if deadline is None:
        return None
    deadline = ensure_utc(deadline)
    return WORK_NOW if deadline <= now else deadline


# Frequent jobs that are idle nearly always: their idle fires are skipped without a claim or a
# ``job_runs`` row. Requests are created only by jobs (plan, monitor, experiment) and decided by people,
# so "none until another job runs" holds inside one simulated step.
IDLE_CHECKS: dict[str, IdleCheck] = {"execute": _execute_idle, "expire": _expire_idle}


def idle_until(
    rt: Runtime, name: str, checks: Mapping[str, IdleCheck] = IDLE_CHECKS
) -> str | datetime | None:
    """WORK_NOW when ``name`` should run now (or has no idle check), else how long it stays idle."""
    check = checks.get(name)
    if check is None:
        return WORK_NOW
    with rt.unit_of_work() as session:
        return check(session, rt.clock.now())


def cron_triggers(jobs: Mapping[str, JobSpec] = JOBS) -> dict[str, CronTrigger]:
    """One UTC ``CronTrigger`` per job, from the registry's fields."""
    return {name: CronTrigger(timezone=UTC, **spec.cron) for name, spec in jobs.items()}


def last_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest fire time of ``trigger`` at or before ``now`` (what a run started now was due at)."""
    now = ensure_utc(now, name="now")
    for lookback in (timedelta(minutes=10), timedelta(hours=2), timedelta(days=2), timedelta(days=9)):
        t: datetime | None = trigger.get_next_fire_time(None, now - lookback)
        found: datetime | None = None
        while t is not None and t <= now:
            found = t
            t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
        if found is not None:
            return found.astimezone(UTC)
    return None


def _json_default(value: Any) -> Any:
    iso = getattr(value, "isoformat", None)
    return iso() if callable(iso) else str(value)


def _jsonable(summary: Any) -> dict[str, Any]:
    value = json.loads(json.dumps(summary, default=_json_default))
    return value if isinstance(value, dict) else {"result": value}


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, InputError):  # a user's mistake: the message says it all, no traceback
        return f"{type(exc).__name__}: {exc}"[:4000]
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return f"{type(exc).__name__}: {exc}\n{tail}"[:4000]


def run_job(
    rt: Runtime,
    name: str,
    scheduled_for: datetime,
    *,
    jobs: Mapping[str, JobSpec] = JOBS,
    retry: RetryPolicy | None = None,
    owner: str | None = None,
) -> JobResult:
    """Run job ``name`` for its run due at ``scheduled_for``, at most once across every replica."""
    if name not in jobs:
        raise KeyError(f"no job named {name!r}; the jobs are {sorted(jobs)}")
    retry = retry or RetryPolicy()
    owner = owner or process_owner()
    scheduled_for = ensure_utc(scheduled_for, name="scheduled_for")
    token = current_job.set(name)
    try:
        try:
            claim = try_claim(
                rt.engine, job=name, scheduled_for=scheduled_for, owner=owner, now=rt.clock.now()
            )
        except OperationalError as exc:  # the database is away: nothing claimed, try again later
            retry_at = rt.clock.now() + retry.delay(1)
            log.warning(
                "%s due %s: cannot reach the database (%s); trying again at %s",
                name,
                scheduled_for.isoformat(),
                str(exc).splitlines()[0],
                retry_at.isoformat(),
            )
            JOB_ATTEMPTS.labels(name, "failed").inc()
            return JobResult(name, scheduled_for, "failed", 0, error=_error_text(exc), retry_at=retry_at)
        if isinstance(claim, Refusal):
            return _skipped(rt.engine, claim, owner=owner, now=rt.clock.now())
        return _attempt(rt, jobs[name], claim, retry)
    finally:
        current_job.reset(token)


def _skipped(engine: Engine, refusal: Refusal, *, owner: str, now: datetime) -> JobResult:
    with engine.begin() as tx:
        tx.execute(
            insert(JobRun).values(
                job=refusal.job,
                scheduled_for=refusal.scheduled_for,
                attempt=0,
                owner=owner,
                status="skipped_locked",
                started_at=now,
                finished_at=now,
                duration_s=0.0,
                error=refusal.reason,
            )
        )
    JOB_ATTEMPTS.labels(refusal.job, "skipped_locked").inc()
    log.info("skipped %s due %s: %s", refusal.job, refusal.scheduled_for.isoformat(), refusal.reason)
    return JobResult(refusal.job, refusal.scheduled_for, "skipped_locked", 0, error=refusal.reason)


def _attempt(rt: Runtime, spec: JobSpec, claim: Claim, retry: RetryPolicy) -> JobResult:
    if claim.took_over_from:
        log.warning(
            "taking over %s due %s from %s, which died",
            claim.job,
            claim.scheduled_for.isoformat(),
            claim.took_over_from,
        )
    t0 = time.perf_counter()
    summary: dict[str, Any] | None = None
    # Until the job returns, assume the worst: interrupted (KeyboardInterrupt, SystemExit), to retry.
    status, final = "failed", False
    error: str | None = "interrupted before the job returned"
    try:
        summary = _jsonable(spec.func(rt))
        status, error, final = "ok", None, True
    except Exception as exc:  # a job's failure never kills the scheduler
        error = _error_text(exc)
        final = claim.attempt >= retry.max_attempts
        # A user's mistake (no policy, a bad setting) is said in one line; anything else with its traceback.
        log.log(
            logging.ERROR,
            "%s due %s failed (attempt %d of %d)%s",
            claim.job,
            claim.scheduled_for.isoformat(),
            claim.attempt,
            retry.max_attempts,
            f": {exc}" if isinstance(exc, InputError) else "",
            exc_info=not isinstance(exc, InputError),
        )
    finally:
        duration = time.perf_counter() - t0
        finished = rt.clock.now()
        outcome = {
            "status": status,
            "finished_at": finished,
            "duration_s": duration,
            "error": error,
            "summary": summary,
        }
        release(rt.engine, claim, final=final, now=finished, outcome=outcome)
    JOB_ATTEMPTS.labels(claim.job, status).inc()
    JOB_SECONDS.labels(claim.job).observe(duration)
    retry_at = None if final or status == "ok" else finished + retry.delay(claim.attempt)
    if status == "ok":
        log.info(
            "%s due %s ok in %.2fs",
            claim.job,
            claim.scheduled_for.isoformat(),
            duration,
            extra={"summary": summary},
        )
    elif retry_at is not None:
        log.warning(
            "%s due %s will be retried at %s",
            claim.job,
            claim.scheduled_for.isoformat(),
            retry_at.isoformat(),
        )
    return JobResult(
        claim.job, claim.scheduled_for, status, claim.attempt, summary, error, retry_at, duration
    )


def unfinished_runs(engine: Engine) -> list[tuple[str, datetime]]:
    """(job, scheduled_for) claims left ``running`` or ``retry``: a dead worker's runs and pending retries."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(JobLock.job, JobLock.scheduled_for)
            .where(JobLock.status.in_(("running", "retry")))
            .order_by(JobLock.scheduled_for, JobLock.job)
        ).all()
    return [(job, ensure_utc(at)) for job, at in rows]


def resume_point(engine: Engine) -> datetime | None:
    """The latest due time any scheduler claimed: where a restarted simulated worker picks up."""
    with engine.connect() as conn:
        at = conn.execute(select(func.max(JobLock.scheduled_for))).scalar_one_or_none()
    return None if at is None else ensure_utc(at)


@dataclass(order=True)
class _Due:
    when: datetime
    order: int
    seq: int
    name: str = field(compare=False)
    scheduled_for: datetime = field(compare=False)
    recurring: bool = field(compare=False)


class SimulatedScheduler:
    """The cron triggers on a simulated clock: :meth:`run_due` runs everything due up to ``until``.

    Jobs due at the same instant run in the registry's order (ingest before monitor before plan ...).
    ``before_run(now)`` is called before each run, once the clock shows its due time (the demo and the
    e2e worker use it to move the sandbox's market to the same day). Unfinished runs found in the
    database at construction (a killed worker's) are run first. Fires of a job with an
    :data:`IdleCheck` that has nothing to do are skipped (no claim, no ``job_runs`` row), and the answer
    is remembered until its time comes or another job runs.
    """

    def __init__(
        self,
        rt: Runtime,
        clock: SimulatedClock,
        *,
        jobs: Mapping[str, JobSpec] = JOBS,
        retry: RetryPolicy | None = None,
        owner: str | None = None,
        only: Iterable[str] | None = None,
        before_run: Callable[[datetime], None] | None = None,
        idle_checks: Mapping[str, IdleCheck] = IDLE_CHECKS,
    ) -> None:
        self.rt = rt
        self.idle_checks = idle_checks
        self._idle: dict[str, datetime | None] = {}  # job -> idle until (None: until another job runs)
        self._parked: set[str] = set()  # idle recurring jobs off the queue until another job runs
        self.clock = clock
        self.jobs = dict(jobs) if only is None else {n: jobs[n] for n in only}
        self.retry = retry or RetryPolicy()
        self.owner = owner or process_owner("sim")
        self.before_run = before_run
        self.triggers = cron_triggers(self.jobs)
        self._order = {name: i for i, name in enumerate(self.jobs)}
        self._queue: list[_Due] = []
        self._seq = 0
        now = clock.now()
        for job, at in unfinished_runs(rt.engine):
            if job in self.jobs:
                self._push(now, job, at, recurring=False)
        for name, trigger in self.triggers.items():
            first = trigger.get_next_fire_time(None, now)
            if first is not None:
                self._push(first, name, first, recurring=True)

    def _push(self, when: datetime, name: str, scheduled_for: datetime, *, recurring: bool) -> None:
        self._seq += 1
        heapq.heappush(
            self._queue,
            _Due(ensure_utc(when), self._order[name], self._seq, name, ensure_utc(scheduled_for), recurring),
        )

    def request(self, name: str, at: datetime | None = None) -> None:
        """Run ``name`` on demand at ``at`` (default: now), besides its schedule."""
        if name not in self.jobs:
            raise KeyError(f"no job named {name!r}; the jobs are {sorted(self.jobs)}")
        when = self.clock.now() if at is None else max(ensure_utc(at), self.clock.now())
        self._push(when, name, when, recurring=False)

    def _skip_idle(self, name: str) -> bool:
        now = self.clock.now()
        if name in self._idle:
            until = self._idle[name]
            if until is None or now < until:
                return True
            del self._idle[name]
        try:
            answer = idle_until(self.rt, name, self.idle_checks)
        except Exception as exc:  # the database is away: run the job, whose attempt retries with backoff
            log.warning("cannot tell whether %s has work (%s): running it", name, _error_text(exc))
            return False
        if answer == WORK_NOW:
            return False
        assert answer is None or isinstance(answer, datetime)
        self._idle[name] = answer
        return True

    def next_due(self) -> datetime | None:
        return self._queue[0].when if self._queue else None

    def run_due(self, until: datetime) -> list[JobResult]:
        """Run every job due at or before ``until`` in time order, then leave the clock at ``until``."""
        until = ensure_utc(until, name="until")
        results: list[JobResult] = []
        self._wake()  # people may have acted since the last call
        while self._queue and self._queue[0].when <= until:
            due = heapq.heappop(self._queue)
            if due.when > self.clock.now():
                self.clock.set(due.when)
            if due.recurring and self._skip_idle(due.name):
                self._rest(due.name)
                continue
            if due.recurring:
                self._push_next(due.name, after=due.scheduled_for)
            if self.before_run is not None:
                self.before_run(self.clock.now())
            result = run_job(
                self.rt, due.name, due.scheduled_for, jobs=self.jobs, retry=self.retry, owner=self.owner
            )
            results.append(result)
            if result.status != "skipped_locked":
                self._wake()  # a job ran: the world may have changed
            if result.retry_at is not None:
                self._push(result.retry_at, due.name, due.scheduled_for, recurring=False)
        if until > self.clock.now():
            self.clock.set(until)
        return results

    def _push_next(
        self, name: str, *, after: datetime | None = None, at_or_after: datetime | None = None
    ) -> None:
        trig = self.triggers[name]
        if after is not None:
            nxt = trig.get_next_fire_time(after, after + timedelta(microseconds=1))
        else:
            nxt = trig.get_next_fire_time(None, at_or_after or self.clock.now())
        if nxt is not None:
            self._push(nxt, name, nxt, recurring=True)

    def _rest(self, name: str) -> None:
        """An idle recurring job waits for its idle time to pass (or, with none, is parked until another
        job runs) instead of being popped at every fire in between."""
        until = self._idle.get(name)
        if until is None:
            self._parked.add(name)
        else:
            self._push_next(name, at_or_after=until)

    def _wake(self) -> None:
        self._idle.clear()
        for name in sorted(self._parked, key=self._order.__getitem__):
            self._push_next(name, at_or_after=self.clock.now())
        self._parked.clear()


# --- the wall clock: APScheduler with a persistent job store --------------------------------------------

_ACTIVE: WallScheduler | None = None  # APScheduler stores jobs as "module:function" + pickled args
_ACTIVE_LOCK = threading.Lock()


def _fire(name: str) -> None:
    """What the job store calls for a cron fire: find the due time and run the job."""
    sched = _ACTIVE
    if sched is None:
        log.error("job %s fired but no WallScheduler is active in this process", name)
        return
    if idle_until(sched.rt, name, sched.idle_checks) != WORK_NOW:
        log.debug("%s has nothing to do", name)
        return
    due = last_fire_time(sched.triggers[name], sched.rt.clock.now()) or sched.rt.clock.now()
    sched.run(name, due)


def _retry(name: str, scheduled_for_iso: str) -> None:
    """What the job store calls for a retry (or a dead worker's unfinished run) at its backoff time."""
    sched = _ACTIVE
    if sched is None:
        log.error("a retry of %s fired but no WallScheduler is active in this process", name)
        return
    sched.run(name, datetime.fromisoformat(scheduled_for_iso))


class WallScheduler:
    """``serve``/``worker``: the cron triggers on the wall clock, jobs persisted in ``apscheduler_jobs``.

    Several replicas may share the job store and all fire a run; :func:`run_job`'s claim lets one do it.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        jobs: Mapping[str, JobSpec] = JOBS,
        retry: RetryPolicy | None = None,
        threads: int = 4,
        idle_checks: Mapping[str, IdleCheck] = IDLE_CHECKS,
    ) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        self.rt = rt
        self.jobs = dict(jobs)
        self.retry = retry or RetryPolicy()
        self.idle_checks = idle_checks
        self.triggers = cron_triggers(self.jobs)
        self.owner = process_owner("wall")
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=rt.engine)},
            executors={"default": ThreadPoolExecutor(threads)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
            timezone=UTC,
        )

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        global _ACTIVE
        with _ACTIVE_LOCK:
            if _ACTIVE is not None and _ACTIVE is not self:
                raise RuntimeError("a WallScheduler is already running in this process; stop it first")
            _ACTIVE = self
        self.scheduler.start(paused=True)
        for name, trigger in self.triggers.items():
            self.scheduler.add_job(
                _fire,
                trigger=trigger,
                args=[name],
                id=f"budgetloop:{name}",
                name=f"{name}: {self.jobs[name].description}",
                replace_existing=True,
            )
        for job, at in unfinished_runs(self.rt.engine):
            if job in self.jobs:
                self._schedule_retry(job, at, self.rt.clock.now())
        self.scheduler.resume()
        log.info("scheduler started with jobs %s", sorted(self.jobs))

    def run(self, name: str, scheduled_for: datetime) -> JobResult:
        result = run_job(self.rt, name, scheduled_for, jobs=self.jobs, retry=self.retry, owner=self.owner)
        if result.retry_at is not None:
            self._schedule_retry(name, result.scheduled_for, result.retry_at)
        return result

    def request(self, name: str) -> None:
        """Run ``name`` as soon as a thread is free (on demand, e.g. execute right after an approval)."""
        if name not in self.jobs:
            raise KeyError(f"no job named {name!r}; the jobs are {sorted(self.jobs)}")
        now = self.rt.clock.now()
        self._schedule_retry(name, now, now)

    def _schedule_retry(self, name: str, scheduled_for: datetime, when: datetime) -> None:
        iso = ensure_utc(scheduled_for).isoformat()
        self.scheduler.add_job(
            _retry,
            trigger="date",
            run_date=when,
            args=[name, iso],
            id=f"budgetloop-retry:{name}:{iso}",
            replace_existing=True,
        )

    def shutdown(self, wait: bool = True) -> None:
        global _ACTIVE
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        with _ACTIVE_LOCK:
            if _ACTIVE is self:
                _ACTIVE = None
