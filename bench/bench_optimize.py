"""Optimizer wall time: 20 channels x 1000 posterior draws, each objective (target: under 1 s)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from models.curves import ResponseCurves
from models.optimize import optimize

CHANNELS = 20
DRAWS = 1000
BUDGET = 15_000.0


def curves(seed: int = 0) -> ResponseCurves:
    """Posterior-like draws around per-channel centres: concave and S-shaped curves mixed."""
    rng = np.random.default_rng(seed)
    size = (DRAWS, CHANNELS)
    beta = rng.uniform(500, 3000, (1, CHANNELS)) * rng.lognormal(0, 0.15, size)
    half = rng.uniform(200, 1500, (1, CHANNELS)) * rng.lognormal(0, 0.15, size)
    shape = rng.uniform(0.8, 3.0, (1, CHANNELS)) * rng.lognormal(0, 0.05, size)
    return ResponseCurves(tuple(f"ch{i:02d}" for i in range(CHANNELS)), beta, half, shape, "week")


def run(quick: bool = False) -> dict[str, Any]:
    rc = curves()
    cases: dict[str, dict[str, Any]] = {
        "revenue": {},
        "profit": {"margin": 0.6},
        "target_roas": {"target_roas": 1.5},
    }
    repeats = 3 if quick else 7
    out: dict[str, Any] = {"channels": CHANNELS, "draws": DRAWS, "repeats": repeats, "seconds": {}}
    table = []
    for name, kw in cases.items():
        optimize(rc, BUDGET, objective=name, **kw)  # first call: numpy warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            optimize(rc, BUDGET, objective=name, **kw)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        out["seconds"][name] = {"median": med, "min": min(times), "max": max(times)}
        table.append([f"optimize {name} 20ch x 1000 draws (s, median)", round(med, 3), "< 1"])
    out["table"] = table
    return out
