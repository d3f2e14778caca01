"""The audit log at 1,000,000 entries: `GET /api/v1/audit` latency per page, and a full chain verification.

A valid chain is bulk-inserted straight through the driver (hashes computed with the same definition the
service uses), then the real service runs on a loopback port and a client asks for pages the way finance
does: unfiltered at random depths (keyset cursor), filtered by action, by actor, by channel, by subject,
and by a time window. Targets from issue 5: p99 per page under 50 ms, verification under 10 s. Runs on a
SQLite file and, when one answers, on PostgreSQL (bulk load with COPY).
"""

from __future__ import annotations

import os
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy import Engine, text

from bench._db import postgres_unreachable, postgres_url, sqlite_url
from budgetloop.clock import SimulatedClock
from budgetloop.config import Settings
from budgetloop.db.session import make_engine, session_scope, upgrade_database
from budgetloop.store import audit, tokens
from service.app import create_app
from service.slack.fake import ServerThread

N = 1_000_000
PAGE = 100
PAGE_TARGET_MS = 50.0
VERIFY_TARGET_S = 10.0
T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=30)
ACTIONS = [
    "proposed",
    "submitted",
    "posted_to_slack",
    "approved",
    "executing",
    "executed",
    "monitoring_started",
    "monitoring_reading",
    "confirmed",
    "rolled_back",
    "policy_changed",
    "model_promoted",
]
ACTORS = [f"U0USER{i:02d}" for i in range(20)] + ["planner", "executor", "monitor", "system"]
CHANNELS = ["search", "social_prospecting", "retail_media", "video", None]
COLUMNS = "seq, at, actor, action, subject_type, subject_id, channel, payload, prev_hash, hash"


def _rows(n: int, seed: int = 5) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    prev = audit.GENESIS
    for seq in range(1, n + 1):
        at = T0 + STEP * seq
        # "rolled_back" and "policy_changed" are rare (as in life): a filter on them is a sparse scan
        action = ACTIONS[rng.randrange(len(ACTIONS))] if rng.random() > 0.01 else "rolled_back"
        actor = ACTORS[rng.randrange(len(ACTORS))]
        channel = CHANNELS[rng.randrange(len(CHANNELS))]
        sid = str(seq // 8)
        payload = audit.canonical_json({"n": seq, "amount": round(rng.uniform(0, 5000), 2), "note": "bench"})
        h = audit.fast_entry_hash(
            prev,
            seq,
            at.isoformat(timespec="microseconds"),
            actor,
            action,
            "change_request",
            sid,
            channel,
            payload,
        )
        yield seq, at, actor, action, "change_request", sid, channel, payload, prev, h
        prev = h


def bulk_load(engine: Engine, n: int) -> float:
    started = time.perf_counter()
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            batch: list[tuple[Any, ...]] = []
            sql = f"INSERT INTO audit_log ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
            for row in _rows(n):
                at = row[1].strftime("%Y-%m-%d %H:%M:%S.%f")  # how SQLAlchemy stores UTC datetimes on SQLite
                batch.append((row[0], at, *row[2:]))
                if len(batch) == 50_000:
                    cur.executemany(sql, batch)
                    batch.clear()
            cur.executemany(sql, batch)
            raw.commit()
        finally:
            raw.close()
    else:
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur, cur.copy(f"COPY audit_log ({COLUMNS}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in _rows(n):
                    copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        with engine.begin() as conn:
            conn.execute(text("ANALYZE audit_log"))
    return time.perf_counter() - started


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "requests": len(ordered),
    }


def page_latencies(url: str, engine: Engine, n: int, requests: int) -> dict[str, Any]:
    clock = SimulatedClock(T0 + STEP * (n + 10))
    with session_scope(engine) as s:
        _, secret = tokens.create_token(
            s, name=f"bench-{uuid.uuid4().hex[:6]}", role="finance", now=clock.now(), created_by="bench"
        )
    app = create_app(settings=Settings(database_url=url), engine=engine, clock=clock)
    rng = random.Random(11)
    kinds: dict[str, Any] = {
        "unfiltered, random depth": lambda: {"cursor": str(rng.randrange(n))},
        "action (common), random depth": lambda: {"action": "approved", "cursor": str(rng.randrange(n))},
        "action (rare, 1%)": lambda: {"action": "rolled_back", "cursor": str(rng.randrange(n))},
        "actor + channel": lambda: {
            "actor": rng.choice(ACTORS),
            "channel": "search",
            "cursor": str(rng.randrange(n)),
        },
        "subject (one request)": lambda: {
            "subject_type": "change_request",
            "subject_id": str(rng.randrange(n // 8)),
        },
        "time window (1 day)": lambda: {
            "from": (T0 + STEP * rng.randrange(n - 3000)).isoformat(),
            "to": None,
        },
        "newest first": lambda: {"order": "desc"},
    }
    results: dict[str, Any] = {}
    server = ServerThread(app).start()
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        ) as client:
            for _ in range(20):  # warm the connection pool and the route; not measured
                client.get("/api/v1/audit", params={"limit": PAGE}).raise_for_status()
            for name, make in kinds.items():
                samples = []
                for _ in range(requests):
                    params = make()
                    if "from" in params:
                        params["to"] = (
                            datetime.fromisoformat(params["from"]) + timedelta(days=1)
                        ).isoformat()
                    params["limit"] = PAGE
                    started = time.perf_counter()
                    response = client.get("/api/v1/audit", params=params)
                    samples.append(time.perf_counter() - started)
                    response.raise_for_status()
                results[name] = _percentiles(samples)
    finally:
        server.stop()
    return results


def run_on(url: str, engine: Engine, n: int, requests: int) -> dict[str, Any]:
    upgrade_database(url)
    load_s = bulk_load(engine, n)
    started, cpu = time.perf_counter(), time.process_time()
    with session_scope(engine) as s:
        report = audit.verify_chain(s)
    verify_s, verify_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    if not report.valid or report.entries != n:
        raise AssertionError(f"the bulk-loaded chain does not verify: {report}")
    pages = page_latencies(url, engine, n, requests)
    return {
        "entries": n,
        "bulk_load_s": round(load_s, 2),
        "verify_s": round(verify_s, 2),
        "verify_cpu_s": round(verify_cpu_s, 2),  # this process's CPU: what the wall time is on an idle core
        "load_average_1m": round(os.getloadavg()[0], 2),
        "pages": pages,
    }


def run(quick: bool = False) -> dict[str, Any]:
    n = 50_000 if quick else N
    requests = 30 if quick else 200
    result: dict[str, Any] = {
        "entries": n,
        "page_size": PAGE,
        "targets": {"page_p99_ms": PAGE_TARGET_MS, "verify_s": VERIFY_TARGET_S},
    }
    engines: list[tuple[str, Any]] = [("sqlite", partial(sqlite_url, "audit"))]
    skip = postgres_unreachable()
    if skip is None:
        engines.append(("postgresql", partial(postgres_url, "audit")))
    else:
        result["postgresql_skipped"] = skip
    table: list[list[Any]] = []
    for name, make in engines:
        with make() as url:
            engine = make_engine(url)
            try:
                measured = run_on(url, engine, n, requests)
            finally:
                engine.dispose()
        result[name] = measured
        worst = max(v["p99_ms"] for v in measured["pages"].values())
        table.append(
            [
                f"{name}: GET /audit p99 per page (worst filter, {n:,} entries)",
                f"{worst} ms",
                f"< {PAGE_TARGET_MS:.0f} ms",
            ]
        )
        table.append(
            [
                f"{name}: verify chain of {n:,} (CPU {measured['verify_cpu_s']} s)",
                f"{measured['verify_s']} s",
                f"< {VERIFY_TARGET_S:.0f} s",
            ]
        )
    result["table"] = table
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
