"""Wall time of a full NUTS fit (2 chains x 1000 warmup + 1000 draws), compilation included.

Cases: 2 years weekly x 6 channels (target < 10 s) and 2 years daily x 10 channels (target < 40 s)
on simulated tables with known truth. Every run is a fresh process, so each timing includes tracing
and compiling the model; runs after the first may reuse XLA's persistent compilation cache (that is
"caching compiled code across fits where JAX allows"), and the first, cold run is reported apart.
The figure per case is the median over the runs. Each run then fits a second table of the same shape
in the same process, as a long-running worker's weekly retrain does: that reuses the compiled
sampler, data being an argument of it. Last, the analyst's case: a weekly table a few rows longer
than one just fitted, in a new process with the same persistent cache, with the shapes rounded as
`budgetloop fit` rounds them and with exact shapes (``grown_table``).

    python -m bench mmm            # all cases, 3 runs each
    python -m bench.bench_mmm --case weekly --cache DIR   # one fit, prints JSON (used internally)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES: dict[str, dict[str, Any]] = {
    "weekly": {"periods": 104, "channels": 6, "frequency": "week", "target_s": 10.0},
    "daily": {"periods": 730, "channels": 10, "frequency": "day", "target_s": 40.0},
}
REPO = Path(__file__).resolve().parents[1]


def one_fit(
    case: str,
    cache: str | None,
    seed: int = 0,
    chains: int = 2,
    warmup: int = 1000,
    samples: int = 1000,
    periods: int | None = None,
    round_shapes: str | None = None,
    refit: bool = True,
) -> dict[str, Any]:
    """Simulate the case's table (``periods`` rows, default the case's) and fit it once in this
    process; time the fit call; then, with ``refit``, a second table of the same shape."""
    t_import = time.perf_counter()
    from models.fit import enable_compilation_cache, fit
    from models.simulate import simulate

    if cache:
        enable_compilation_cache(cache)
    spec = CASES[case]
    periods = periods or spec["periods"]
    data, truth = simulate(periods=periods, channels=spec["channels"], frequency=spec["frequency"], seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    fm = fit(data, chains=chains, warmup=warmup, samples=samples, seed=seed, round_shapes=round_shapes)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    m = fm.channel_metrics()
    roi_err = abs(m.roi.mean(0) - truth.roi) / truth.roi
    mroas_err = abs(m.mroas.mean(0) - truth.mroas) / truth.mroas
    out: dict[str, Any] = {
        "case": case,
        "periods": periods,
        "round_shapes": round_shapes,
        "fit_wall_s": wall,
        "fit_cpu_s": cpu,  # all threads; on an idle machine wall ~ cpu / cores used
        "import_s": t0 - t_import,
        "diagnostics": fm.diagnostics.to_dict(),
        "median_roi_error": float(sorted(roi_err)[len(roi_err) // 2]),
        "median_mroas_error": float(sorted(mroas_err)[len(mroas_err) // 2]),
    }
    if not refit:
        return out
    # a long-running worker refits new tables of the same shape with the compiled program it holds
    other, _ = simulate(
        periods=periods, channels=spec["channels"], frequency=spec["frequency"], seed=seed + 1
    )
    t1 = time.perf_counter()
    fit(other, chains=chains, warmup=warmup, samples=samples, seed=seed, round_shapes=round_shapes)
    out["refit_same_process_wall_s"] = time.perf_counter() - t1
    return out


def _spawn(
    case: str, cache: str | None, *, periods: int | None = None, round_shapes: str | None = None
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_mmm", "--case", case]
    if cache:
        cmd += ["--cache", cache]
    if periods is not None:  # a grown table: one fit, no refit
        cmd += ["--periods", str(periods), "--no-refit"]
    if round_shapes is not None:
        cmd += ["--round-shapes", round_shapes]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False, env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(f"bench fit `{case}` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - t0
    return out


def run(quick: bool = False, cases: tuple[str, ...] = tuple(CASES)) -> dict[str, Any]:
    repeats = 1 if quick else 3
    result: dict[str, Any] = {"repeats": repeats, "cases": {}}
    table = []
    cache = tempfile.mkdtemp(prefix="budgetloop-xla-")
    try:
        for case in cases:
            spec = CASES[case]
            cold = _spawn(case, None)  # no persistent cache: compile from scratch
            warm = [_spawn(case, cache) for _ in range(repeats)]  # first fills the cache, later reuse it
            times = [r["fit_wall_s"] for r in warm]
            med = statistics.median(times)
            result["cases"][case] = {**spec, "cold": cold, "runs": warm, "median_fit_wall_s": med}
            label = f"{spec['periods']} {spec['frequency']}s x {spec['channels']} ch"
            table.append(
                [f"fit {label} cold compile (s)", round(cold["fit_wall_s"], 1), f"< {spec['target_s']:g}"]
            )
            table.append([f"fit {label} median of {repeats} (s)", round(med, 1), f"< {spec['target_s']:g}"])
            refit = statistics.median(r["refit_same_process_wall_s"] for r in warm)
            result["cases"][case]["median_refit_same_process_wall_s"] = refit
            table.append([f"refit {label}, same process, new data (s)", round(refit, 1), "(weekly retrain)"])
            cpu = statistics.median(r["fit_cpu_s"] for r in warm)
            table.append([f"fit {label} CPU seconds, median", round(cpu, 1), "(wall on idle ~ CPU / 2)"])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if "weekly" in cases:
        result["grown"] = grown_table(table)
    result["table"] = table
    return result


def grown_table(table: list[list[Any]], before: int = 105, after: int = 110) -> dict[str, Any]:
    """The analyst's refit after appending weeks: a weekly table of ``before`` rows fitted in one
    process (filling a fresh persistent cache), then one of ``after`` rows in a new process, with
    the shapes rounded as `budgetloop fit` rounds them and with exact shapes, side by side."""
    out: dict[str, Any] = {}
    for mode in ("all", None):
        cache = tempfile.mkdtemp(prefix="budgetloop-xla-")
        try:
            first = _spawn("weekly", cache, periods=before, round_shapes=mode)
            second = _spawn("weekly", cache, periods=after, round_shapes=mode)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        out["rounded" if mode else "exact"] = {"first": first, "second": second}
    rounded, exact = (out[k]["second"]["fit_wall_s"] for k in ("rounded", "exact"))
    table.append(
        [
            f"fit {after} weeks x 6 ch after {before}, cache warm, shapes rounded (s)",
            round(rounded, 1),
            f"(exact shapes: {exact:.1f})",
        ]
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_mmm")
    parser.add_argument("--case", choices=sorted(CASES), help="fit this case once and print JSON")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--cases", default=",".join(CASES), help="benchmark these cases (driver mode)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--periods", type=int, default=None, help="rows of the one fit (default: the case's)")
    parser.add_argument("--round-shapes", choices=("tests", "all"), default=None)
    parser.add_argument("--no-refit", action="store_true", help="skip the same-process refit")
    args = parser.parse_args(argv)
    if args.case:
        fitted = one_fit(
            args.case,
            args.cache,
            periods=args.periods,
            round_shapes=args.round_shapes,
            refit=not args.no_refit,
        )
        print(json.dumps(fitted, default=float))
        return 0
    result = run(quick=args.quick, cases=tuple(args.cases.split(",")))
    out = REPO / "bench" / "results" / "mmm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    for row in result["table"]:
        print(*row, sep="  ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
