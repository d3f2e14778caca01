"""Ingestion throughput: 2 years x 20 campaigns, end to end through the sandbox's HTTP APIs.

Each run pulls every platform and the store over loopback HTTP (pagination, JSON, unit conversion),
hashes and stores every raw record, validates and lands the clean rows, and commits, into a fresh
database: a SQLite file and, when one answers, a PostgreSQL database. Migration time is reported
apart. The target from issue 2: under 10 s for that volume on 2 cores. A re-run over the same range
(nothing new to store) is timed too. Wall time depends on what else the machine runs, so the CPU
time of this process (the client and the in-process sandbox; not the PostgreSQL server) is
reported beside it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from agents.ingest import IngestReport, run_ingest
from bench._db import postgres_unreachable, postgres_url, sqlite_url
from bench.bench_market import DAYS, scenario
from budgetloop.db.session import make_engine, session_scope, upgrade_database
from connectors.registry import sandbox_connectors
from connectors.sandbox.market import Market
from connectors.sandbox.server import SandboxServer

TARGET_S = 10.0


def _one_run(server: SandboxServer, fresh: Callable[[], Any], start: Any, end: Any) -> dict[str, float]:
    now = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    with fresh() as url:
        began = time.perf_counter()
        upgrade_database(url)
        migrated = time.perf_counter()
        engine = make_engine(url)
        report: IngestReport
        cpu = time.process_time()
        with sandbox_connectors(server.base_url) as connectors, session_scope(engine) as session:
            report = run_ingest(session, connectors, start=start, end=end, now=now)
        ingested = time.perf_counter()
        cpu = time.process_time() - cpu
        with sandbox_connectors(server.base_url) as connectors, session_scope(engine) as session:
            again = run_ingest(session, connectors, start=start, end=end, now=now)
        rerun = time.perf_counter()
        engine.dispose()
    if report.failed_sources or report.total("quarantined") or again.total("raw_stored"):
        raise RuntimeError(f"the benchmark's ingest was not clean:\n{report.summary()}\n{again.summary()}")
    return {
        "migrate_s": migrated - began,
        "ingest_s": ingested - migrated,
        "ingest_cpu_s": cpu,
        "rerun_s": rerun - ingested,
        "rows": float(report.total("pulled")),
    }


def run(quick: bool = False) -> dict[str, Any]:
    s = scenario()
    start = s.start
    end = start + timedelta(days=DAYS - 1)
    market = Market(s)
    market.advance_to(end + timedelta(days=1))
    repeats = 1 if quick else 3
    engines: dict[str, Callable[[], Any]] = {"sqlite": partial(sqlite_url, "ingest")}
    skipped = postgres_unreachable()
    if skipped is None:
        engines["postgresql"] = partial(postgres_url, "ingest")
    results: dict[str, Any] = {}
    table: list[list[Any]] = []
    with SandboxServer(market) as server:
        for name, fresh in engines.items():
            runs = [_one_run(server, fresh, start, end) for _ in range(repeats)]
            ingest_s = statistics.median(r["ingest_s"] for r in runs)
            rows = runs[0]["rows"]
            results[name] = {
                "runs": runs,
                "ingest_s_median": round(ingest_s, 3),
                "rows": int(rows),
                "rows_per_s": round(rows / ingest_s, 1),
                "ingest_cpu_s_median": round(statistics.median(r["ingest_cpu_s"] for r in runs), 3),
                "rerun_s_median": round(statistics.median(r["rerun_s"] for r in runs), 3),
                "migrate_s_median": round(statistics.median(r["migrate_s"] for r in runs), 3),
                "meets_target": ingest_s < TARGET_S,
            }
            table.append([f"ingest {DAYS}d x {len(s.channels)} campaigns -> {name} (s)", round(ingest_s, 2),
                          f"< {TARGET_S:g}"])  # fmt: skip
            table.append([f"ingest rows/s -> {name}", round(rows / ingest_s), ""])
            table.append([f"  CPU of this process (client + in-process sandbox) -> {name} (s)",
                          results[name]["ingest_cpu_s_median"], ""])  # fmt: skip
            table.append([f"re-run, nothing new -> {name} (s)", results[name]["rerun_s_median"], ""])
    if skipped is not None:
        results["postgresql"] = {"skipped": skipped}
        table.append(["ingest -> postgresql", "skipped", skipped])
    return {
        "days": DAYS,
        "campaigns": len(s.channels),
        "repeats": repeats,
        "target_s": TARGET_S,
        "engines": results,
        "table": table,
    }
