"""Guardrail engine speed: 10,000 proposals over 50 campaigns (target: under 1 ms per proposal).

The policy has 5 channels with 10 campaigns each (per-campaign bounds on half of them), caps that bind,
a weekly swing rule, a cooldown, two freeze windows and a soft rule; campaigns are sometimes learning
and carry a few weeks of executed changes. Each proposal moves every campaign by up to +-40%, so clips,
blocks and redistribution all happen. The independent checker is timed on the engine's output, and
every output is confirmed clean by it.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from guardrails import CampaignState, ExecutedChange, Policy, check_executed, evaluate

CHANNELS = 5
PER_CHANNEL = 10
START = datetime(2026, 6, 1, tzinfo=UTC)


def _policy() -> Policy:
    channels = {f"ch{i}": {"min_daily": 0, "max_daily": None} for i in range(CHANNELS)}
    campaigns = {
        f"ch{i}-c{j}": {"channel": f"ch{i}", "min_daily": 50, "max_daily": 2500}
        for i in range(CHANNELS)
        for j in range(0, PER_CHANNEL, 2)
    }
    return Policy.model_validate(
        {
            "timezone": "America/New_York",
            "budget": {"total_daily_max": 60_000, "total_monthly_max": 1_750_000, "over_delivery": 0.05},
            "change": {"max_swing_per_change": 0.2, "max_swing_per_week": 0.3, "min_days_between_changes": 3},
            "freeze_windows": [
                {"start": "2026-07-01", "end": "2026-07-03"},
                {"start": "2026-08-10", "end": "2026-08-12", "channels": ["ch1"]},
            ],
            "channels": channels,
            "campaigns": campaigns,
            "enforcement": {"min_days_between_changes": "soft"},
            "owners": ["U0OPS"],
        }
    )


def _cases(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    keys = [f"ch{i}-c{j}" for i in range(CHANNELS) for j in range(PER_CHANNEL)]
    out = []
    for _ in range(n):
        now = START + timedelta(minutes=rng.randrange(0, 90 * 24 * 60))
        current = {k: round(rng.uniform(200, 2000), 2) for k in keys}
        proposed = {k: round(v * rng.uniform(0.6, 1.4), 2) for k, v in current.items()}
        states = {k: CampaignState(channel=k.split("-")[0], learning=rng.random() < 0.05) for k in keys}
        history = [
            ExecutedChange(k, now - timedelta(hours=rng.randrange(1, 21 * 24)), v * 0.9, v)
            for k, v in current.items()
            if rng.random() < 0.3
        ]
        out.append(
            {"current": current, "proposed": proposed, "states": states, "history": history, "now": now}
        )
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(quick: bool = False) -> dict[str, Any]:
    n = 1_000 if quick else 10_000
    policy = _policy()
    cases = _cases(n, seed=7)
    engine_ms: list[float] = []  # wall clock: includes time the process waits for a busy CPU
    engine_cpu_ms: list[float] = []  # this thread's CPU time: what the evaluation itself costs
    checker_ms: list[float] = []
    violations = clipped = blocked = 0
    started = time.perf_counter()
    for case in cases:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        decision = evaluate(policy=policy, **case)
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        found = check_executed(
            before=case["current"],
            after=decision.adjusted,
            states=case["states"],
            history=case["history"],
            policy=policy,
            at=case["now"],
        )
        t2 = time.perf_counter_ns()
        engine_ms.append((t1 - t0) / 1e6)
        engine_cpu_ms.append((c1 - c0) / 1e6)
        checker_ms.append((t2 - t1) / 1e6)
        violations += len(found)
        blocked += decision.blocked
        clipped += any(v.outcome == "clipped" for v in decision.verdicts)
    total_s = time.perf_counter() - started
    median, p99 = statistics.median(engine_ms), _percentile(engine_ms, 0.99)
    cpu_median, cpu_p99 = statistics.median(engine_cpu_ms), _percentile(engine_cpu_ms, 0.99)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "proposals": n,
        "campaigns": CHANNELS * PER_CHANNEL,
        "engine_ms": {"median": round(median, 4), "p99": round(p99, 4), "max": round(max(engine_ms), 4)},
        "engine_cpu_ms": {"median": round(cpu_median, 4), "p99": round(cpu_p99, 4)},
        "load_average_1min": load,
        "checker_ms": {
            "median": round(statistics.median(checker_ms), 4),
            "p99": round(_percentile(checker_ms, 0.99), 4),
        },
        "proposals_per_second": round(n / sum(engine_ms) * 1000, 1),
        "blocked_whole_portfolio": blocked,
        "with_clips": clipped,
        "checker_violations": violations,
        "wall_s_engine_and_checker": round(total_s, 2),
        "table": [
            ["evaluate median (50 campaigns)", f"{median:.3f} ms", "< 1 ms"],
            ["evaluate p99 (50 campaigns)", f"{p99:.3f} ms", "< 1 ms"],
            ["evaluate CPU median / p99", f"{cpu_median:.3f} / {cpu_p99:.3f} ms", "< 1 ms"],
            ["proposals per second", f"{n / sum(engine_ms) * 1000:,.0f}", ">= 1,000"],
            ["checker violations on engine output", str(violations), "0"],
        ],
    }


if __name__ == "__main__":
    import json

    print(json.dumps({k: v for k, v in run().items() if k != "table"}, indent=2))
