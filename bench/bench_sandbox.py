"""The sandbox over loopback HTTP and the connectors: pull + parse throughput, budget-change latency.

2 years x 20 campaigns (bench_market's scenario) are pulled from the three platform dialects and the
store, every page over HTTP, and parsed to currency units; then budget changes are timed end to end
(read the current budget, one idempotent write), and the same changes replayed.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from typing import Any

from bench.bench_market import DAYS, scenario
from connectors.registry import sandbox_connectors
from connectors.sandbox.market import Market
from connectors.sandbox.server import SandboxServer


def _pull(base_url: str, start: Any, end: Any) -> tuple[float, int]:
    began = time.perf_counter()
    count = 0
    with sandbox_connectors(base_url) as conns:
        for conn in conns.platforms.values():
            count += sum(1 for r in conn.pull_daily_metrics(start, end) if conn.parse_metric(r))
        count += sum(
            1 for r in conns.revenue.pull_daily_revenue(start, end) if conns.revenue.parse_revenue(r)
        )
    return time.perf_counter() - began, count


def run(quick: bool = False) -> dict[str, Any]:
    s = scenario()
    market = Market(s)
    market.advance_to(s.start + timedelta(days=DAYS))
    start, end = s.start, s.start + timedelta(days=DAYS - 1)
    repeats = 1 if quick else 3
    pulls: list[float] = []
    writes: list[float] = []
    replays: list[float] = []
    with SandboxServer(market) as server:
        for _ in range(repeats):
            seconds, rows = _pull(server.base_url, start, end)
            pulls.append(seconds)
        with sandbox_connectors(server.base_url) as conns:
            for n, campaign in enumerate(market.campaigns):
                conn = conns.platforms[campaign.platform]
                amount = round(market.budget(campaign.channel) * 1.01, 2)
                t0 = time.perf_counter()
                conn.set_budget(campaign.external_id, amount, idempotency_key=f"bench-{n}")
                t1 = time.perf_counter()
                assert conn.set_budget(campaign.external_id, amount, idempotency_key=f"bench-{n}").replayed
                writes.append(t1 - t0)
                replays.append(time.perf_counter() - t1)
        applied = len(server.applied())
    best = min(pulls)
    return {
        "rows": rows,
        "pull_parse_s": {"best": round(best, 3), "median": round(statistics.median(pulls), 3)},
        "rows_per_s": round(rows / best),
        "set_budget_ms": {
            "median": round(1000 * statistics.median(writes), 1),
            "max": round(1000 * max(writes), 1),
        },
        "replay_ms": {"median": round(1000 * statistics.median(replays), 1)},
        "applied_exactly_once": applied == len(market.campaigns),
        "table": [
            ["pull+parse 2y x 20 campaigns + revenue (s)", round(best, 2), "< 5 (half of ingest's 10 s)"],
            ["rows/s over HTTP", round(rows / best), ""],
            ["set_budget median (ms)", round(1000 * statistics.median(writes), 1), "< 50"],
        ],
    }
