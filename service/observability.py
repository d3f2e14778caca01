"""Seeing the service run: structured JSON logs, Prometheus metrics, and the health/readiness probes.

* :func:`configure_logging` makes every log record one JSON object per line with ``time``, ``level``,
  ``logger``, ``message`` and, when set, the ``job`` being run and the HTTP ``request_id``
  (:data:`current_job`, :data:`current_request_id`; :class:`RequestIdMiddleware` sets the latter from
  ``X-Request-ID`` or a fresh id, and echoes it back).
* In-process metrics (:data:`JOB_ATTEMPTS`, :data:`JOB_SECONDS`) count what this process ran.
  :class:`LoopCollector` reads the database at scrape time, so any replica's ``/metrics`` shows the
  whole deployment: job runs and failures by job (from ``job_runs``), durations, change requests by
  state and pending ones, audit entries, and spend under management (the sum of the live daily budgets,
  read through the connectors and cached briefly).
* :func:`observability_router`: ``GET /healthz`` (the process answers; no auth, no database),
  ``GET /readyz`` (database reachable, migrations at head, scheduler running when this process runs
  one; 503 with the failing checks otherwise) and ``GET /metrics`` (Prometheus text format).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

current_job: ContextVar[str | None] = ContextVar("budgetloop_job", default=None)
current_request_id: ContextVar[str | None] = ContextVar("budgetloop_request_id", default=None)

log = logging.getLogger(__name__)

# --- logs ---------------------------------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields given with ``log.info(..., extra={...})`` are kept."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = current_job.get()
        if job is not None:
            out["job"] = job
        request_id = current_request_id.get()
        if request_id is not None:
            out["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route every logger (uvicorn's and APScheduler's included) through one JSON handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "apscheduler"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    for chatty in ("httpx", "httpcore", "alembic"):  # one line per HTTP call or migration step is noise
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


class RequestIdMiddleware:
    """Give every HTTP request an id (``X-Request-ID`` in, or a new one), for the logs and the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given[:100] or uuid.uuid4().hex
        token = current_request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)


# --- metrics --------------------------------------------------------------------------------------------

JOB_ATTEMPTS = Counter(
    "budgetloop_process_job_attempts",
    "Job attempts made by this process, by job and outcome (ok, failed, skipped_locked)",
    ["job", "status"],
)
JOB_SECONDS = Histogram(
    "budgetloop_process_job_seconds",
    "Wall seconds per job attempt in this process",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)


class LoopCollector(Collector):
    """Metrics read from the database (and the live budgets) at scrape time."""

    def __init__(
        self,
        engine: Engine,
        *,
        live_budgets: Callable[[], Mapping[str, float]] | None = None,
        budget_ttl_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.live_budgets = live_budgets
        self.budget_ttl_s = budget_ttl_s
        self._budget_cache: tuple[float, float | None] | None = None  # (monotonic time read, total)
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Any]:
        return []  # collected lazily; the database may be down when the registry is built

    def collect(self) -> Iterator[Any]:
        try:
            yield from self._from_database()
        except Exception as exc:  # a scrape must answer even when the database does not
            log.warning("metrics: the database could not be read: %s", exc)
            up = GaugeMetricFamily("budgetloop_database_up", "1 when the database answered the scrape")
            up.add_metric([], 0)
            yield up
            return
        spend = self._spend_under_management()
        if spend is not None:
            g = GaugeMetricFamily(
                "budgetloop_spend_under_management",
                "Sum of the live daily budgets of every campaign budgetloop manages (currency units per day)",
            )
            g.add_metric([], spend)
            yield g

    def _from_database(self) -> Iterator[Any]:
        from budgetloop.db.audit import AuditEntry
        from budgetloop.db.loop import ChangeRequest
        from budgetloop.db.ops import JobRun

        with self.engine.connect() as conn:
            runs = conn.execute(
                select(
                    JobRun.job, JobRun.status, func.count(), func.coalesce(func.sum(JobRun.duration_s), 0.0)
                )
                .group_by(JobRun.job, JobRun.status)
                .order_by(JobRun.job, JobRun.status)
            ).all()
            requests = conn.execute(
                select(ChangeRequest.status, func.count()).group_by(ChangeRequest.status)
            ).all()
            audit_entries = conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
            last_ok = conn.execute(
                select(JobRun.job, func.max(JobRun.finished_at))
                .where(JobRun.status == "ok")
                .group_by(JobRun.job)
            ).all()
        up = GaugeMetricFamily("budgetloop_database_up", "1 when the database answered the scrape")
        up.add_metric([], 1)
        yield up
        total = CounterMetricFamily(
            "budgetloop_job_runs",
            "Job run attempts recorded in job_runs (every replica), by job and status",
            labels=["job", "status"],
        )
        failures = CounterMetricFamily(
            "budgetloop_job_failures", "Failed job attempts by job", labels=["job"]
        )
        seconds = SummaryMetricFamily(
            "budgetloop_job_duration_seconds", "Wall seconds of finished job attempts by job", labels=["job"]
        )
        per_job: dict[str, tuple[int, float]] = {}
        failed_by_job: dict[str, int] = {}
        for job, status, count, secs in runs:
            total.add_metric([job, status], float(count))
            if status == "failed":
                failed_by_job[job] = failed_by_job.get(job, 0) + int(count)
            if status in ("ok", "failed"):
                n, s = per_job.get(job, (0, 0.0))
                per_job[job] = (n + int(count), s + float(secs or 0.0))
        for job in sorted({r[0] for r in runs}):
            failures.add_metric([job], float(failed_by_job.get(job, 0)))
        for job, (n, s) in sorted(per_job.items()):
            seconds.add_metric([job], count_value=n, sum_value=s)
        yield total
        yield failures
        yield seconds
        last = GaugeMetricFamily(
            "budgetloop_job_last_success_timestamp_seconds",
            "When each job last finished ok (the loop's clock)",
            labels=["job"],
        )
        for job, at in last_ok:
            if at is not None:
                last.add_metric([job], _aware(at).timestamp())
        yield last
        by_state = GaugeMetricFamily(
            "budgetloop_change_requests", "Change requests by state", labels=["status"]
        )
        pending = 0
        for status, count in requests:
            by_state.add_metric([status], float(count))
            if status == "pending_approval":
                pending = int(count)
        yield by_state
        p = GaugeMetricFamily("budgetloop_pending_change_requests", "Change requests waiting for a decision")
        p.add_metric([], float(pending))
        yield p
        a = GaugeMetricFamily("budgetloop_audit_entries", "Entries in the audit log")
        a.add_metric([], float(audit_entries))
        yield a

    def _spend_under_management(self) -> float | None:
        if self.live_budgets is None:
            return None
        with self._lock:
            cached = self._budget_cache
            if cached is not None and time.monotonic() - cached[0] < self.budget_ttl_s:
                return cached[1]
            try:
                total: float | None = round(sum(float(v) for v in self.live_budgets().values()), 2)
            except Exception as exc:  # remembered for the TTL too: a scrape must not wait on a dead platform
                log.warning("metrics: live budgets could not be read: %s", exc)
                total = None
            self._budget_cache = (time.monotonic(), total)
            return total


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def connector_budgets(connectors: Any) -> Callable[[], dict[str, float]]:
    """Live daily budgets keyed ``platform:campaign`` from a :class:`connectors.registry.Connectors`."""

    def read() -> dict[str, float]:
        out: dict[str, float] = {}
        for platform, connector in connectors.platforms.items():
            for campaign, budget in connector.get_budgets().items():
                out[f"{platform}:{campaign}"] = float(budget)
        return out

    return read


# --- probes ---------------------------------------------------------------------------------------------


def migrations_at_head(engine: Engine) -> tuple[bool, str]:
    """Whether the database's Alembic revision is the chain's head, with what each side says."""
    from alembic.script import ScriptDirectory

    from budgetloop.db.session import alembic_config

    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as conn:
        try:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
        except Exception:
            current = None
    if current == head:
        return True, f"at head {head}"
    return (
        False,
        f"database at {current or 'no revision'}, code expects {head}: run `alembic upgrade head` (serve does it on start)",
    )


def observability_router(engine: Engine, *, include_healthz: bool = True) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/metrics`` over ``engine``.

    The process edge tells the router more through ``app.state`` (read per request): ``scheduler``, an
    object with a ``running`` property when this process runs the scheduler (readiness then waits for
    it), and ``live_budgets``, a callable returning the live daily budgets (for spend under
    management). ``/readyz`` and ``/metrics`` are left out of OpenAPI: they are for probes and
    Prometheus, not for API clients, and take no token.
    """
    from prometheus_client import REGISTRY

    collector = LoopCollector(engine)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    router = APIRouter(tags=["health"])

    if include_healthz:

        @router.get("/healthz", summary="Liveness: the process answers (no auth, no database)")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

    @router.get("/readyz", include_in_schema=False)
    def readyz(request: Request) -> JSONResponse:
        checks: dict[str, dict[str, Any]] = {}
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = {"ok": True, "detail": "reachable"}
            ok, detail = migrations_at_head(engine)
            checks["migrations"] = {"ok": ok, "detail": detail}
        except Exception as exc:
            checks["database"] = {"ok": False, "detail": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
            checks["migrations"] = {"ok": False, "detail": "unknown: the database is unreachable"}
        scheduler = getattr(request.app.state, "scheduler", None)
        if scheduler is not None:
            running = bool(scheduler.running)
            checks["scheduler"] = {"ok": running, "detail": "running" if running else "not running"}
        ready = all(c["ok"] for c in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @router.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        collector.live_budgets = getattr(request.app.state, "live_budgets", None)
        body = generate_latest(REGISTRY) + generate_latest(registry)
        return Response(content=body, media_type=CONTENT_TYPE_LATEST)

    return router
