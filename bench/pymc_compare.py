"""budgetloop vs PyMC-Marketing 0.19.2, side by side in one run: same data, same sampler settings.

PyMC-Marketing is installed only in its own environment, ``.venv-bench`` (created here from
``bench/requirements-pymc.txt`` when missing); it is never a dependency of budgetloop. This file runs
in two roles: in budgetloop's venv it prepares the datasets, fits our model, starts itself under
``.venv-bench`` as a worker that fits PyMC-Marketing's ``MMM`` (geometric adstock over 8 periods,
logistic saturation, yearly Fourier seasonality of order 2, the NumPyro NUTS sampler), and scores
both against the truth.

Datasets: ``data/pymc-marketing/mmm_example.csv`` (truth from its documented process) and a table
simulated by :func:`models.simulate.simulate` (seed 0: 104 weeks x 4 channels), plain and with one
4-week lift test per channel (PyMC-Marketing's ``add_lift_test_measurements``, fed the same test as
a per-period spend level, spend change and revenue change); on request (``--cases bench_weekly``,
``bench_daily``) the tables of `make bench`'s fit-time benchmark, which ``bench/bench_pymc.py``
runs in the bench itself.

Compilation caches: both tools keep compiled code on disk between processes (PyMC-Marketing through
PyTensor's compile directory, budgetloop through XLA's persistent cache, which ``budgetloop fit``
enables). For each of the cases above every fit is timed twice: **from nothing** (our first fit of
that program in this process with an empty cache; PyMC-Marketing in an empty PyTensor directory) and
**cache warm** (a new process whose cache already holds the program: ours a subprocess over the cache
the first fit filled; PyMC-Marketing again over the directory its first run filled). Each tool's
accuracy comes from its first fit (the second, seeded alike, only gives a time).

With ``--study-seeds N`` both models also fit the recovery study's tables (docs/validation.md
section 1: 130 weeks x 5 channels) of seeds 0..N-1, plain and with the study's lift tests, and the
run ends with medians over all of them (``study`` in the results).

    .venv/bin/python -m bench.pymc_compare [--chains 2 --warmup 1000 --samples 1000] [--cases a,b]
        [--study-seeds N]

(The study's tables are timed once each, PyMC-Marketing over its default compile directory.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_VENV = REPO / ".venv-bench"
REQUIREMENTS = REPO / "bench" / "requirements-pymc.txt"
RESULTS = REPO / "bench" / "results"
CASES = ("mmm_example", "simulated", "simulated_calibrated")
#: `make bench`'s own tables (bench/bench_mmm.py), for ``--cases``: PyMC-Marketing on the very data
#: and settings of our fit-time benchmark (``bench_daily`` takes PyMC-Marketing many minutes)
BENCH_CASES = ("bench_weekly", "bench_daily")


# --------------------------------------------------------------------------------------------------
# worker: runs under .venv-bench, imports nothing of budgetloop


def worker(spec_path: Path, out_path: Path) -> None:
    import arviz as az
    import numpy as np
    import pandas as pd
    from pymc_marketing.mmm import MMM, GeometricAdstock, LogisticSaturation

    spec = json.loads(spec_path.read_text())
    df = pd.read_csv(spec["csv"], parse_dates=[spec["date"]])
    channels, controls = spec["channels"], spec["controls"]
    mmm = MMM(
        date_column=spec["date"],
        channel_columns=channels,
        control_columns=controls or None,
        adstock=GeometricAdstock(l_max=8),
        saturation=LogisticSaturation(),
        yearly_seasonality=2,
    )
    x = df[[spec["date"], *channels, *controls]]
    y = df[spec["target"]]
    t0 = time.perf_counter()
    if spec.get("lift"):
        mmm.build_model(x, y)
        mmm.add_lift_test_measurements(pd.DataFrame(spec["lift"]))
    mmm.fit(
        X=x,
        y=y,
        chains=spec["chains"],
        tune=spec["warmup"],
        draws=spec["samples"],
        nuts_sampler="numpyro",
        random_seed=spec["seed"],
        progressbar=False,
    )
    fit_s = time.perf_counter() - t0
    plan: dict[str, Any] = {}
    if spec.get("regret_budget"):  # its own optimizer: the budget per period, held for 8 periods
        t1 = time.perf_counter()
        alloc, _ = mmm.optimize_budget(budget=spec["regret_budget"], num_periods=spec["regret_weeks"])
        plan = {
            "regret_allocation": [float(alloc.sel(channel=c)) for c in channels],
            "optimize_seconds": time.perf_counter() - t1,
        }
    idata = mmm.idata
    spend = df[channels].to_numpy(dtype=float)
    base = mmm.channel_contribution_forward_pass(spend)  # [chain, draw, T, C] original scale
    bumped = mmm.channel_contribution_forward_pass(spend * 1.01)
    base = base.reshape(-1, *base.shape[-2:]).sum(axis=1)  # [N, C] over the table
    bumped = bumped.reshape(-1, *bumped.shape[-2:]).sum(axis=1)
    totals = spend.sum(axis=0)
    rhat = az.rhat(idata.posterior)
    r_hat_max = max(float(np.nanmax(rhat[v].values)) for v in rhat.data_vars)
    out = {
        "fit_seconds": fit_s,
        "r_hat_max": r_hat_max,
        "divergences": int(idata.sample_stats["diverging"].values.sum()),
        "contribution": base.tolist(),
        "roi": (base / totals).tolist(),
        "mroas": ((bumped - base) / (0.01 * totals)).tolist(),
        **plan,
    }
    out_path.write_text(json.dumps(out))


# --------------------------------------------------------------------------------------------------
# driver: runs in budgetloop's venv


def ensure_bench_venv() -> Path:
    """Create ``.venv-bench`` from the pinned requirements if needed; return its python."""
    py = BENCH_VENV / "bin" / "python"
    if py.exists():
        probe = subprocess.run([str(py), "-c", "import pymc_marketing"], capture_output=True, check=False)
        if probe.returncode == 0:
            return py
    subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    return py


def _prepare(case: str, tmp: Path) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """(worker spec, our MMMData, truth dict) for one case."""
    import numpy as np
    import pandas as pd

    from models.simulate import simulate
    from models.validation import (
        PYMC_CSV,
        lift_tests_for,
        load_pymc_example,
        pymc_true_media,
        simulated_case,
    )

    if case == "mmm_example":
        data = load_pymc_example()
        df = pd.read_csv(PYMC_CSV)
        csv = tmp / "mmm_example.csv"
        df.to_csv(csv, index=False)
        true_contrib = pymc_true_media(data.spend).sum(axis=0)
        spec: dict[str, Any] = {"csv": str(csv), "date": "date_week", "target": "y", "channels": ["x1", "x2"]}
        spec["controls"] = ["event_1", "event_2", "t"]
        spec["regret_budget"] = float(data.spend.sum(axis=1).mean())  # as models.validation.pymc_regret
        spec["regret_weeks"] = 8
        truth = {"contribution": true_contrib.tolist(), "roi": (true_contrib / data.spend.sum(0)).tolist()}
        return spec, (data, None), truth
    kind, _, seed_text = case.partition(":")
    seed = int(seed_text or 0)
    if kind.startswith("study"):  # the recovery study's table for this seed (docs/validation.md 1)
        data, tr = simulated_case(seed)
    elif kind in BENCH_CASES:  # the table bench/bench_mmm.py times (its seed 0)
        from bench.bench_mmm import CASES as TIMED

        shape = TIMED[kind.removeprefix("bench_")]
        data, tr = simulate(
            periods=shape["periods"], channels=shape["channels"], frequency=shape["frequency"], seed=seed
        )
    else:
        data, tr = simulate(periods=104, channels=4, frequency="week", seed=0)
    frame = pd.DataFrame(data.spend, columns=list(data.channels))
    frame.insert(0, "date", pd.to_datetime(data.dates))
    frame.insert(1, "y", data.y)
    frame["t"] = np.arange(data.periods, dtype=float)
    csv = tmp / f"{kind}-{seed}.csv"
    frame.to_csv(csv, index=False)
    spec = {
        "csv": str(csv),
        "date": "date",
        "target": "y",
        "channels": list(data.channels),
        "controls": ["t"],
    }
    tests = lift_tests_for(data, tr, seed=seed) if kind.endswith("calibrated") else None
    if tests:
        rows = []
        for t in tests:
            j = data.channels.index(t.channel)
            inside = (data.dates >= t.start) & (data.dates <= t.end)
            n = int(inside.sum())
            rows.append(
                {
                    "channel": t.channel,
                    "x": float(data.spend[inside, j].mean()),
                    "delta_x": t.spend_delta / n,
                    "delta_y": -t.incremental_revenue / n,  # revenue change of the changed spend
                    "sigma": t.incremental_revenue_se / n,
                }
            )
        spec["lift"] = rows
    truth = {"contribution": tr.contribution.tolist(), "roi": tr.roi.tolist(), "mroas": tr.mroas.tolist()}
    return spec, (data, tests), truth


def _score(contrib: Any, roi: Any, mroas: Any, truth: dict[str, Any], channels: list[str]) -> dict[str, Any]:
    import numpy as np

    contrib, roi = np.asarray(contrib), np.asarray(roi)
    out: dict[str, Any] = {"channels": {}}
    roi_err, mroas_err, covered = [], [], []
    for j, ch in enumerate(channels):
        true_roi = truth["roi"][j]
        p05, p95 = np.quantile(roi[:, j], [0.05, 0.95])
        line = {
            "contribution_error": float(contrib[:, j].mean() / truth["contribution"][j] - 1),
            "roi_error": float(abs(roi[:, j].mean() - true_roi) / true_roi),
            "covered": bool(p05 <= true_roi <= p95),
        }
        if "mroas" in truth:
            line["mroas_error"] = float(
                abs(np.asarray(mroas)[:, j].mean() - truth["mroas"][j]) / truth["mroas"][j]
            )
            mroas_err.append(line["mroas_error"])
        roi_err.append(line["roi_error"])
        covered.append(line["covered"])
        out["channels"][ch] = line
    out["median_roi_error"] = float(np.median(roi_err))
    out["median_mroas_error"] = float(np.median(mroas_err)) if mroas_err else None
    out["covered"] = f"{sum(covered)}/{len(covered)}"
    return out


#: our model in the structure of PyMC-Marketing's documented setup for its example (logistic
#: saturation, trend and seasonality added to the baseline), fitted beside our defaults on that table
PYMC_STRUCTURE = {"saturation": "logistic", "baseline": "additive"}


def ours_worker(case: str, cache: Path, settings_json: str, out_path: Path) -> None:
    """Our fit of ``case`` in a fresh process over the persistent compilation cache ``cache``."""
    from models.fit import enable_compilation_cache, fit

    enable_compilation_cache(cache)
    with tempfile.TemporaryDirectory(prefix="pymc-compare-ours-") as tmp:
        _, (data, tests), _ = _prepare(case, Path(tmp))
        t0 = time.perf_counter()
        fit(data, lift_tests=tests, seed=0, **json.loads(settings_json))
        out_path.write_text(json.dumps({"fit_seconds": time.perf_counter() - t0}))


def _ours_cache_warm(case: str, cache: Path, settings: dict[str, Any], tmp: Path) -> float:
    out = tmp / "ours-warm.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.pymc_compare",
            "--ours-worker",
            case,
            str(cache),
            json.dumps(settings),
            str(out),
        ],
        check=True,
        cwd=REPO,
    )
    return float(json.loads(out.read_text())["fit_seconds"])


def _ours(case: str, data: Any, tests: Any, truth: dict[str, Any], **kw: Any) -> dict[str, Any]:
    from models.fit import fit

    t0 = time.perf_counter()
    fm = fit(data, lift_tests=tests, seed=0, **kw)
    wall = time.perf_counter() - t0
    m = fm.channel_metrics()
    ours = _score(m.contribution, m.roi, m.mroas, truth, list(data.channels))
    ours.update(
        {
            "fit_seconds": wall,
            "r_hat_max": fm.diagnostics.r_hat_max,
            "divergences": fm.diagnostics.divergences,
            "structure": {k: fm.settings[k] for k in ("saturation", "baseline", "adstock")},
        }
    )
    if case == "mmm_example":
        from models.validation import pymc_regret

        ours["regret"] = pymc_regret(fm)
    return ours


def _pymc_run(
    py: Path, spec_path: Path, out_path: Path, compiledir: Path | None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if compiledir is not None:
        env["PYTENSOR_FLAGS"] = f"base_compiledir={compiledir}"
    return subprocess.run(
        [str(py), str(Path(__file__).resolve()), "--worker", str(spec_path), str(out_path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def run_case(
    case: str, py: Path, tmp: Path, chains: int, warmup: int, samples: int, *, caches: bool = False
) -> dict[str, Any]:
    """Both models on one case. With ``caches`` every fit is timed from nothing and cache warm (module
    docstring); without, once: ours compiled in this process, PyMC-Marketing over its default
    compile directory."""
    spec, (data, tests), truth = _prepare(case, tmp)
    spec.update({"chains": chains, "warmup": warmup, "samples": samples, "seed": 0})
    settings: dict[str, Any] = {"chains": chains, "warmup": warmup, "samples": samples}
    name = case.replace(":", "-")
    # one cache for the whole run: XLA's persistent cache is set up once per process, and the cases'
    # programs differ (structure, shapes), so a case's first fit still compiles from nothing
    jax_cache = tmp / "jax-cache"
    if caches:
        from models.fit import enable_compilation_cache

        enable_compilation_cache(jax_cache)  # the first fits below fill it
    ours = _ours(case, data, tests, truth, **settings)
    # each structure compiles its own program: timed from nothing like the default one
    same = _ours(case, data, tests, truth, **settings, **PYMC_STRUCTURE) if case == "mmm_example" else None
    if caches:
        ours["fit_seconds_cache_warm"] = _ours_cache_warm(case, jax_cache, settings, tmp)
        if same is not None:
            same["fit_seconds_cache_warm"] = _ours_cache_warm(
                case, jax_cache, {**settings, **PYMC_STRUCTURE}, tmp
            )
    spec_path, out_path = tmp / f"{name}.spec.json", tmp / f"{name}.pymc.json"
    spec_path.write_text(json.dumps(spec))
    compiledir = tmp / f"{name}.pytensor" if caches else None
    proc = _pymc_run(py, spec_path, out_path, compiledir)
    extra = {} if same is None else {"ours_pymc_structure": same}
    if proc.returncode != 0:
        return {"ours": ours, **extra, "pymc": {"error": proc.stderr[-3000:]}}
    raw = json.loads(out_path.read_text())
    if caches:
        warm_path = tmp / f"{name}.pymc-warm.json"
        again = _pymc_run(py, spec_path, warm_path, compiledir)
        if again.returncode == 0:
            raw["fit_seconds_cache_warm"] = json.loads(warm_path.read_text())["fit_seconds"]
    theirs = _score(raw["contribution"], raw["roi"], raw["mroas"], truth, list(data.channels))
    theirs.update(
        {k: raw[k] for k in ("fit_seconds", "fit_seconds_cache_warm", "r_hat_max", "divergences") if k in raw}
    )
    if "regret_allocation" in raw:
        from models.validation import pymc_regret_of

        theirs["regret"] = pymc_regret_of(data.spend, raw["regret_allocation"])
        theirs["optimize_seconds"] = raw["optimize_seconds"]
    out: dict[str, Any] = {"ours": ours, **extra, "pymc": theirs, "ratios": _ratios(theirs, ours)}
    if same is not None:
        out["ratios_pymc_structure"] = _ratios(theirs, same)
    return out


def _ratios(theirs: dict[str, Any], ours: dict[str, Any]) -> dict[str, float]:
    ratios = {"time_pymc_over_ours": theirs["fit_seconds"] / ours["fit_seconds"]}
    if "fit_seconds_cache_warm" in theirs and "fit_seconds_cache_warm" in ours:
        ratios["time_pymc_over_ours_cache_warm"] = (
            theirs["fit_seconds_cache_warm"] / ours["fit_seconds_cache_warm"]
        )
        # the comparison least kind to us: ours compiling from nothing, PyMC-Marketing's cache warm
        ratios["time_pymc_cache_warm_over_ours_from_nothing"] = (
            theirs["fit_seconds_cache_warm"] / ours["fit_seconds"]
        )
    if ours["median_roi_error"] > 0:
        ratios["roi_error_pymc_over_ours"] = theirs["median_roi_error"] / ours["median_roi_error"]
    if ours.get("median_mroas_error"):
        ratios["mroas_error_pymc_over_ours"] = theirs["median_mroas_error"] / ours["median_mroas_error"]
    return ratios


def study_summary(cases: dict[str, Any]) -> dict[str, Any]:
    """Per model, plain and calibrated: medians over every channel of every seed's table, coverage
    of the true ROI by the 90% interval, median fit time; and PyMC-Marketing / ours ratios."""
    import numpy as np

    out: dict[str, Any] = {}
    for kind in ("study", "study_calibrated"):
        runs = [
            v
            for k, v in cases.items()
            if k.split(":")[0] == kind and "pymc" in v and "error" not in v["pymc"]
        ]
        if not runs:
            continue
        line: dict[str, Any] = {"tables": len(runs)}
        for model in ("ours", "pymc"):
            chans = [c for r in runs for c in r[model]["channels"].values()]
            line[model] = {
                "median_roi_error": float(np.median([c["roi_error"] for c in chans])),
                "median_mroas_error": float(np.median([c["mroas_error"] for c in chans])),
                "covered": f"{sum(c['covered'] for c in chans)}/{len(chans)}",
                "median_fit_seconds": float(np.median([r[model]["fit_seconds"] for r in runs])),
                "max_r_hat": max(float(r[model]["r_hat_max"] or 0.0) for r in runs),
                "divergences": int(sum(r[model]["divergences"] for r in runs)),
            }
        line["ratios"] = {
            f"{k}_pymc_over_ours": line["pymc"][k] / line["ours"][k]
            for k in ("median_roi_error", "median_mroas_error", "median_fit_seconds")
        }
        out["calibrated" if kind.endswith("calibrated") else "plain"] = line
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pymc_compare")
    parser.add_argument("--worker", nargs=2, type=Path, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--ours-worker", nargs=4, metavar=("CASE", "CACHE", "SETTINGS", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=RESULTS / "pymc_compare.json", help="results JSON")
    parser.add_argument(
        "--study-seeds",
        type=int,
        default=0,
        help="also fit both models to the recovery study's tables of seeds 0..N-1, plain and calibrated",
    )
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if args.ours_worker:
        case, cache, settings_json, out = args.ours_worker
        ours_worker(case, Path(cache), settings_json, Path(out))
        return 0
    py = ensure_bench_venv()
    result: dict[str, Any] = {
        "settings": {"chains": args.chains, "warmup": args.warmup, "samples": args.samples},
        "cpus": os.cpu_count(),
        "cases": {},
    }
    cases = [c for c in args.cases.split(",") if c]
    cases += [f"{k}:{s}" for s in range(args.study_seeds) for k in ("study", "study_calibrated")]
    with tempfile.TemporaryDirectory(prefix="pymc-compare-") as tmp:
        for case in cases:
            print(f"== {case}", flush=True)
            try:
                result["cases"][case] = run_case(
                    case,
                    py,
                    Path(tmp),
                    args.chains,
                    args.warmup,
                    args.samples,
                    caches=case in CASES + BENCH_CASES,
                )
            except Exception as exc:  # one broken case is reported; the others still run
                result["cases"][case] = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(result["cases"][case], indent=1, default=float), flush=True)
    if args.study_seeds:
        result["study"] = study_summary(result["cases"])
        print(json.dumps(result["study"], indent=1, default=float), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    if "--worker" not in sys.argv:
        sys.path.insert(0, str(REPO))
    raise SystemExit(main())
