"""The simulated market: 2 years x 20 channels simulated and read back; the truth's best allocation."""

from __future__ import annotations

import statistics
import time
from datetime import date, timedelta
from typing import Any

from connectors.sandbox import truth
from connectors.sandbox.market import Market
from connectors.sandbox.scenario import Scenario, parse_scenario

CHANNELS = 20
DAYS = 730


def scenario() -> Scenario:
    platforms = ["google_ads", "meta_ads", "retail_media"]
    channels = [
        {
            "name": f"channel_{i:02d}",
            "platform": platforms[i % 3],
            "daily_budget": 500.0 + 150.0 * i,
            "adstock": {"decay": 0.1 + 0.04 * i},
            "saturation": {"half": 600.0 + 120.0 * i, "shape": 0.8 + 0.1 * (i % 12)},
            "roi_at_budget": 0.6 + 0.1 * (i % 15),
        }
        for i in range(CHANNELS)
    ]
    return parse_scenario(
        {
            "name": "bench-20",
            "start": date(2025, 1, 6),
            "history_days": 365,
            "seed": 1,
            "currency": "USD",
            "baseline": {"daily_revenue": 200000.0, "trend_per_year": 0.05, "yearly_amplitude": 0.1},
            "noise": 0.05,
            "channels": channels,
        },
        source="bench",
    )


def run(quick: bool = False) -> dict[str, Any]:
    s = scenario()
    repeats = 2 if quick else 5
    simulate, read, allocate = [], [], []
    total = sum(c.daily_budget for c in s.channels)
    for _ in range(repeats):
        t0 = time.perf_counter()
        market = Market(s)
        market.advance_to(s.start + timedelta(days=DAYS))
        t1 = time.perf_counter()
        market.outcomes(s.start, s.start + timedelta(days=DAYS - 1))
        t2 = time.perf_counter()
        truth.best_allocation(s, total)
        t3 = time.perf_counter()
        simulate.append(t1 - t0)
        read.append(t2 - t1)
        allocate.append(t3 - t2)
    timings = {"simulate": simulate, "read": read, "allocate": allocate}
    med = {k: statistics.median(v) for k, v in timings.items()}
    return {
        "channels": CHANNELS,
        "days": DAYS,
        "repeats": repeats,
        "seconds_median": med,
        "table": [
            [f"simulate {DAYS} days x {CHANNELS} channels (s, median)", round(med["simulate"], 3), "< 1"],
            [f"read back {DAYS} DayOutcomes (s, median)", round(med["read"], 3), "< 1"],
            [f"true best allocation of {CHANNELS} channels (s, median)", round(med["allocate"], 3), "< 1"],
        ],
    }
