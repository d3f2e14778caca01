"""PyMC-Marketing beside our model in the bench run: same data, same settings, ratios of times and errors.

`make bench` times our fit on its own tables (``bench_mmm``); this puts PyMC-Marketing 0.19.2 on the
weekly one (104 weeks x 6 channels, the same simulated table, 2 chains x 1000 warmup + 1000 draws)
and on its own documented example, through ``bench/pymc_compare.py``, which installs it in its own
environment (``.venv-bench``, never a dependency of budgetloop) and fits each tool from nothing and
with its compilation cache warm. It runs in a subprocess, so the persistent compilation cache that
the comparison sets up never reaches the other benchmarks of this process.

Each tool's time is its fit call; errors are scored against the known truth (the simulated table's
curves; the example's documented process). The daily table is left out: PyMC-Marketing takes many
minutes on 730 days x 10 channels (``python -m bench.pymc_compare --cases bench_daily`` runs it).

    python -m bench pymc           # both cases, each tool from nothing and cache warm
    python -m bench pymc --quick   # the weekly table only
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_mmm import CASES as TIMED

REPO = Path(__file__).resolve().parents[1]
CASES = ("bench_weekly", "mmm_example")


def run(quick: bool = False) -> dict[str, Any]:
    cases = CASES[:1] if quick else CASES
    with tempfile.TemporaryDirectory(prefix="bench-pymc-") as tmp:
        out = Path(tmp) / "pymc.json"
        proc = subprocess.run(
            [sys.executable, "-m", "bench.pymc_compare", "--cases", ",".join(cases), "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"the comparison failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
    table: list[list[Any]] = []
    for case, r in result["cases"].items():
        if "error" in r or "error" in r.get("pymc", {}):
            reason = r.get("error") or r["pymc"]["error"]
            raise RuntimeError(f"case {case}: {str(reason)[-500:]}")
        table += rows(case, r)
    result["table"] = table
    return result


def rows(case: str, r: dict[str, Any]) -> list[list[Any]]:
    """The bench table's lines for one case: times side by side, their ratios, the errors."""
    ours, theirs, ratios = r["ours"], r["pymc"], r["ratios"]
    shape = TIMED["weekly"]
    label = (
        f"{shape['periods']} {shape['frequency']}s x {shape['channels']} ch"
        if case == "bench_weekly"
        else "PyMC example"
    )
    out = [
        [
            f"fit {label}: ours / PyMC-Marketing from nothing (s)",
            f"{ours['fit_seconds']:.1f} / {theirs['fit_seconds']:.1f}",
            f"{ratios['time_pymc_over_ours']:.1f}x (>= 5x)",
        ]
    ]
    if "time_pymc_over_ours_cache_warm" in ratios:
        out.append(
            [
                f"fit {label}: ours / PyMC-Marketing, caches warm (s)",
                f"{ours['fit_seconds_cache_warm']:.1f} / {theirs['fit_seconds_cache_warm']:.1f}",
                f"{ratios['time_pymc_over_ours_cache_warm']:.1f}x (>= 5x)",
            ]
        )
    errors = [f"ROI {ours['median_roi_error']:.1%} / {theirs['median_roi_error']:.1%}"]
    if ours.get("median_mroas_error") is not None and theirs.get("median_mroas_error") is not None:
        errors.append(f"mROAS {ours['median_mroas_error']:.1%} / {theirs['median_mroas_error']:.1%}")
    out.append(
        [
            f"{label}: median error ours / PyMC-Marketing",
            ", ".join(errors),
            f"covered {ours['covered']} / {theirs['covered']}",
        ]
    )
    same = r.get("ours_pymc_structure")
    if same is not None:
        out.append(
            [
                f"fit {label}, ours in its structure / PyMC-Marketing from nothing (s)",
                f"{same['fit_seconds']:.1f} / {theirs['fit_seconds']:.1f}",
                f"{r['ratios_pymc_structure']['time_pymc_over_ours']:.1f}x (>= 5x)",
            ]
        )
    return out
