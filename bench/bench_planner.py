"""Planner step: optimise toward the target, the best step one swing allows, guardrails twice, and the
evaluation over 1,000 posterior draws, for 20 channels (target: under 2 s per step)."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agents.planning import PlanContext, plan
from bench.bench_optimize import CHANNELS, curves
from guardrails.loading import parse_policy

NOW = datetime(2026, 2, 2, 14, 0, tzinfo=UTC)


def policy_text(channels: list[str], total: float) -> str:
    lines = [
        "timezone: UTC",
        "budget: {total_daily_max: %.0f}" % (total * 1.1),
        "channels:",
        *[f"  {ch}: {{min_daily: 0, max_daily: {total:.0f}}}" for ch in channels],
    ]
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> dict[str, Any]:
    weekly = curves()
    daily = type(weekly)(weekly.channels, weekly.beta / 7, weekly.half / 7, weekly.shape, "day")
    rng = np.random.default_rng(1)
    current = {
        ch: float(round(v, 2)) for ch, v in zip(daily.channels, rng.uniform(100, 600, CHANNELS), strict=True)
    }
    policy = parse_policy(policy_text(list(daily.channels), sum(current.values())), source="<bench>")
    ctx = PlanContext(
        curves=daily,
        current=current,
        states={},
        history=[],
        policy=policy,
        now=NOW,
        baseline_revenue_per_day=50_000.0,
        step_scale=1.0,
    )
    plan(ctx)  # warm-up
    repeats = 3 if quick else 9
    times = []
    outcome = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        outcome = plan(ctx)
        times.append(time.perf_counter() - t0)
    assert outcome is not None
    median = statistics.median(times)
    return {
        "channels": CHANNELS,
        "draws": daily.draws,
        "step_s": {"median_s": round(median, 4), "runs": [round(t, 4) for t in times]},
        "proposed": outcome.propose,
        "reason": outcome.reason,
        "table": [["planner step, 20 channels x 1000 draws", f"{median * 1000:.0f} ms", "< 2 s"]],
    }
