"""Does the model recover the truth? Simulate with known curves, fit, score; and the public datasets.

Three checks, all seeded and pure (arrays and files in, numbers out):

* **Recovery study** (:func:`recovery_study`): for each seed, a table from
  :func:`models.simulate.simulate` (weekly or daily, 2.5 years, 5 channels, geometric adstock +
  Hill, 4% noise) is fitted twice, plain and calibrated with one 4-week lift test per channel
  (:func:`lift_tests_for`: a full holdout whose incremental revenue is measured from the truth with
  10% noise). Each fit is scored per channel (:func:`score_fit`): relative error of the posterior
  mean ROI and mROAS, and whether the true ROI lies inside the 90% interval. With ``oracle=True``
  every curve's decay, half-saturation and shape are pinned at the truth (:func:`oracle_priors`):
  what is left is the error of estimating each channel's size and the baseline from that table, a
  bound on what any model of the family can reach on it.
* **PyMC-Marketing's example** (:func:`pymc_example`): ``data/pymc-marketing/mmm_example.csv``, whose
  data-generating process is documented in ``data/README.md`` (adstock over 8 weeks, *logistic*
  saturation, so our Hill family is slightly misspecified). Scored on total contribution per channel,
  truth inside the interval, diagnostics, and the optimizer's regret for 8 future weeks against the
  true optimum computed from the true process (:func:`pymc_regret`).
* **Smoke fits** (:func:`smoke_fit`) on datasets without published truth (Robyn, Meridian): does it
  run, and are the diagnostics healthy.

``python -m models.validation study|pymc|smoke ...`` runs them and prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.data import MMMData, from_frame
from models.fit import METHODS, fit
from models.fitted import FittedModel
from models.lift import LiftTest
from models.optimize import optimize
from models.priors import ROI_CONTRACTION_MIN, BetaPrior, LogNormalPrior, Priors
from models.sampler import WARMUP_TREE_DEPTH
from models.simulate import Truth, media_np, simulate

REPO = Path(__file__).resolve().parents[1]
PYMC_CSV = REPO / "data" / "pymc-marketing" / "mmm_example.csv"
PYMC_TRUTH_CSV = REPO / "data" / "pymc-marketing" / "ground_truth_contributions.csv"
LIFT_SE_SHARE = 0.10  # a lift test measures the true incremental revenue with this relative error


# --------------------------------------------------------------------------------------------------
# scoring a fit against known truth


def _relative_error(estimate: float, truth: float) -> float:
    return abs(estimate - truth) / truth


@dataclass(frozen=True)
class ChannelScore:
    channel: str
    roi_true: float
    roi_mean: float
    roi_p05: float
    roi_p95: float
    mroas_true: float
    mroas_mean: float
    # posterior medians (FIT.json's `median`); None in scores written before they were kept
    roi_median: float | None = None
    mroas_median: float | None = None
    # the share of the ROI prior's variance the data removed (None in older scores)
    roi_prior_contraction: float | None = None

    @property
    def roi_error(self) -> float:
        return _relative_error(self.roi_mean, self.roi_true)

    @property
    def mroas_error(self) -> float:
        return _relative_error(self.mroas_mean, self.mroas_true)

    @property
    def roi_median_error(self) -> float | None:
        return None if self.roi_median is None else _relative_error(self.roi_median, self.roi_true)

    @property
    def mroas_median_error(self) -> float | None:
        return None if self.mroas_median is None else _relative_error(self.mroas_median, self.mroas_true)

    @property
    def covered(self) -> bool:
        return self.roi_p05 <= self.roi_true <= self.roi_p95


@dataclass(frozen=True)
class FitScore:
    seed: int
    frequency: str
    calibrated: bool
    periods: int
    channels: tuple[ChannelScore, ...]
    r_hat_max: float | None
    divergences: int
    fit_seconds: float
    healthy: bool
    oracle: bool = False
    # the curve parts pinned at the truth (:data:`CURVE_PARTS`; all three when ``oracle``)
    pinned: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = [
            {
                **asdict(c),
                "roi_error": c.roi_error,
                "mroas_error": c.mroas_error,
                "roi_median_error": c.roi_median_error,
                "mroas_median_error": c.mroas_median_error,
                "covered": c.covered,
            }
            for c in self.channels
        ]
        return d


def score_fit(
    fm: FittedModel,
    truth: Truth,
    *,
    seed: int,
    calibrated: bool,
    oracle: bool = False,
    pinned: Sequence[str] = (),
) -> FitScore:
    """Per-channel errors of the posterior mean ROI / mROAS and 90% coverage of the true ROI."""
    m = fm.channel_metrics()
    p05, p95 = np.quantile(m.roi, [0.05, 0.95], axis=0)
    contraction = fm.roi_prior_contraction()
    chans = tuple(
        ChannelScore(
            channel=name,
            roi_true=float(truth.roi[j]),
            roi_mean=float(m.roi[:, j].mean()),
            roi_p05=float(p05[j]),
            roi_p95=float(p95[j]),
            mroas_true=float(truth.mroas[j]),
            mroas_mean=float(m.mroas[:, j].mean()),
            roi_median=float(np.median(m.roi[:, j])),
            mroas_median=float(np.median(m.mroas[:, j])),
            roi_prior_contraction=float(contraction[j]),
        )
        for j, name in enumerate(fm.channels)
    )
    d = fm.diagnostics
    return FitScore(
        seed=seed,
        frequency=fm.data.frequency,
        calibrated=calibrated,
        periods=fm.data.periods,
        channels=chans,
        r_hat_max=d.r_hat_max,
        divergences=d.divergences,
        fit_seconds=d.fit_seconds,
        healthy=d.healthy,
        oracle=oracle,
        pinned=tuple(pinned),
    )


def _median_estimate_errors(chans: Sequence[ChannelScore]) -> dict[str, float]:
    roi = [c.roi_median_error for c in chans]
    mroas = [c.mroas_median_error for c in chans]
    if any(e is None for e in roi + mroas):
        return {}
    return {
        "median_roi_error_of_median": float(np.median([e for e in roi if e is not None])),
        "median_mroas_error_of_median": float(np.median([e for e in mroas if e is not None])),
    }


def _contraction_summary(chans: Sequence[ChannelScore]) -> dict[str, float]:
    """How much of the ROI prior the data removed, where the scores have it: a channel under
    ``ROI_CONTRACTION_MIN`` gets a warning in FIT.json, so a study's tables should have none."""
    values = [c.roi_prior_contraction for c in chans if c.roi_prior_contraction is not None]
    if len(values) < len(chans):
        return {}
    return {
        "median_roi_prior_contraction": float(np.median(values)),
        "min_roi_prior_contraction": float(np.min(values)),
        "roi_prior_contraction_under_min": int(sum(v < ROI_CONTRACTION_MIN for v in values)),
    }


def summarize(scores: Sequence[FitScore]) -> dict[str, Any]:
    """Medians over every channel of every fit, coverage share, and the health of the fits."""
    chans = [c for s in scores for c in s.channels]
    if not chans:
        raise ValueError("nothing to summarize: no fits were scored")
    return {
        "fits": len(scores),
        "channels": len(chans),
        "median_roi_error": float(np.median([c.roi_error for c in chans])),
        "median_mroas_error": float(np.median([c.mroas_error for c in chans])),
        # the same errors of the posterior medians (FIT.json reports both), where the scores have them
        **_median_estimate_errors(chans),
        "coverage_90": float(np.mean([c.covered for c in chans])),
        "covered": int(sum(c.covered for c in chans)),
        # how wide the intervals are: coverage alone rewards intervals that say nothing
        "median_roi_interval_ratio": float(np.median([c.roi_p95 / c.roi_p05 for c in chans])),
        **_contraction_summary(chans),
        "unhealthy_fits": int(sum(not s.healthy for s in scores)),
        "max_r_hat": max((s.r_hat_max or 0.0) for s in scores),
        "total_divergences": int(sum(s.divergences for s in scores)),
        "median_fit_seconds": float(np.median([s.fit_seconds for s in scores])),
    }


# --------------------------------------------------------------------------------------------------
# simulated tables with lift tests


def lift_tests_for(
    data: MMMData, truth: Truth, *, seed: int, periods: int | None = None, se_share: float = LIFT_SE_SHARE
) -> list[LiftTest]:
    """One holdout test per channel over ``periods`` rows (4 weeks; 28 days for daily tables).

    Each window lies in the second half of the table where the channel spent in every row. The spend
    change is spread evenly over the rows (INTERFACES section 2), so the holdout removes 90% of the
    window's smallest row from every row. The measured lift is the true incremental revenue inside
    the window (carry-over after it not counted) plus Normal noise with ``se = se_share x |true lift|``.
    """
    rng = np.random.default_rng(seed + 7919)
    n = periods or (4 if data.frequency == "week" else 28)
    t_len = data.periods
    args = (truth.decay, truth.half, truth.shape, truth.scale, truth.saturation)
    base = media_np(data.spend, *args)
    tests = []
    for j, name in enumerate(data.channels):
        starts = [s for s in range(t_len // 2, t_len - n + 1) if data.spend[s : s + n, j].min() > 0]
        if not starts:
            continue
        s = int(rng.choice(starts))
        per_row = 0.9 * float(data.spend[s : s + n, j].min())
        changed = data.spend.copy()
        changed[s : s + n, j] -= per_row
        true_lift = float((base[:, j] - media_np(changed, *args)[:, j])[s : s + n].sum())
        se = max(se_share * abs(true_lift), 1e-9)
        tests.append(
            LiftTest(
                channel=name,
                start=data.dates[s].astype("datetime64[D]"),
                end=data.dates[s + n - 1].astype("datetime64[D]"),
                spend_delta=-per_row * n,
                incremental_revenue=true_lift + se * float(rng.standard_normal()),
                incremental_revenue_se=se,
            )
        )
    return tests


#: the parts of a curve's shape that :func:`oracle_priors` can pin at the truth
CURVE_PARTS = ("decay", "half", "shape")


def _check_parts(parts: Sequence[str]) -> None:
    unknown = sorted(set(parts) - set(CURVE_PARTS))
    if unknown:
        raise ValueError(f"cannot pin {unknown}: choose among {list(CURVE_PARTS)}")


def oracle_priors(data: MMMData, truth: Truth, parts: Sequence[str] = CURVE_PARTS) -> Priors:
    """Priors that pin each channel's adstock decay, half-saturation and Hill shape at the truth (Beta
    with concentration 2000, LogNormal with sigma 0.005): only the ROIs (the curves' sizes), the
    baseline and the noise are left to estimate. ``parts`` pins a subset (the others keep their
    default priors), which tells how much of an error each unknown of the shape causes."""
    _check_parts(parts)
    priors = Priors()
    for j, ch in enumerate(data.channels):
        d = float(truth.decay[j])
        pinned: dict[str, Any] = {}
        if "decay" in parts:
            pinned["decay"] = BetaPrior(2000.0 * d, 2000.0 * (1.0 - d))
        if "half" in parts:
            pinned["half"] = LogNormalPrior(float(truth.half[j]), 0.005)
        if "shape" in parts and truth.saturation == "hill":
            pinned["shape"] = LogNormalPrior(float(truth.shape[j]), 0.005)
        if pinned:
            priors = priors.with_channel(ch, **pinned)
    return priors


#: how much the study's budgets move (``models.simulate.simulate``'s ``variation``): the default design
STUDY_VARIATION = 0.3


def simulated_case(
    seed: int, frequency: str = "week", variation: float = STUDY_VARIATION
) -> tuple[MMMData, Truth]:
    """The study's table for ``seed``: 2.5 years, 5 channels, 4% noise; everything else from the seed.

    The size is fixed on purpose: tables of one shape reuse the compiled model, so a 20-seed study
    compiles twice (plain and calibrated) instead of forty times. ``variation`` scales how far the
    budgets drift, push, fly and pause: how informative the history is about each channel.
    """
    periods = 130 if frequency == "week" else 913
    return simulate(
        periods=periods, channels=5, frequency=frequency, seed=seed, noise=0.04, variation=variation
    )


def recovery_study(
    seeds: Sequence[int],
    *,
    frequency: str = "week",
    chains: int = 2,
    warmup: int = 1000,
    samples: int = 1000,
    calibrated: Sequence[bool] = (False, True),
    log: Any = None,
    jsonl: Path | None = None,
    oracle: bool = False,
    variation: float = STUDY_VARIATION,
    method: str = "nuts",
    warmup_tree_depth: int = WARMUP_TREE_DEPTH,
    pin: Sequence[str] = (),
) -> dict[str, Any]:
    """Fit each seed's table plain and/or calibrated; return every score and the summaries.

    ``oracle=True`` fits with :func:`oracle_priors` (the true curve shapes known), ``pin`` with only
    those parts of them known (:data:`CURVE_PARTS`); ``variation`` is
    the design's (:func:`simulated_case`); ``method="svi"`` scores the quick-refresh path (its
    ``samples x chains`` draws from the fitted guide).

    With ``jsonl``, each fit's score is appended to that file as soon as it is known, so a long
    study that is stopped early still leaves its results (see :func:`summarize_jsonl`).
    """
    if oracle and pin:
        raise ValueError("give `oracle` (every part pinned) or `pin` (some), not both")
    parts = CURVE_PARTS if oracle else tuple(pin)
    _check_parts(parts)
    scores: dict[bool, list[FitScore]] = {c: [] for c in calibrated}
    for seed in seeds:
        data, truth = simulated_case(seed, frequency, variation)
        for cal in calibrated:
            tests = lift_tests_for(data, truth, seed=seed) if cal else None
            priors = oracle_priors(data, truth, parts) if parts else None
            fm = fit(
                data,
                priors=priors,
                lift_tests=tests,
                method=method,
                warmup_tree_depth=warmup_tree_depth,
                chains=chains,
                warmup=warmup,
                samples=samples,
                seed=seed,
            )
            sc = score_fit(fm, truth, seed=seed, calibrated=cal, oracle=oracle, pinned=parts)
            scores[cal].append(sc)
            if jsonl is not None:
                with jsonl.open("a") as fh:
                    fh.write(json.dumps(sc.to_dict(), default=float) + "\n")
            if log is not None:
                s = summarize([sc])
                log(
                    f"seed {seed} {'calibrated' if cal else 'plain':10s}{' oracle' if oracle else ''}"
                    f"{' pinned ' + ','.join(parts) if parts and not oracle else ''} "
                    f"T={data.periods} C={len(data.channels)} "
                    f"roi {s['median_roi_error']:.3f} mroas {s['median_mroas_error']:.3f} "
                    f"covered {s['covered']}/{s['channels']} r_hat {sc.r_hat_max} div {sc.divergences} "
                    f"{sc.fit_seconds:.1f}s"
                )
    return {
        "settings": {
            "frequency": frequency,
            "chains": chains,
            "warmup": warmup,
            "samples": samples,
            "oracle": oracle,
            "pinned": list(parts),
            "variation": variation,
            "method": method,
            "warmup_tree_depth": warmup_tree_depth,
        },
        "seeds": list(seeds),
        "summary": {("calibrated" if c else "plain"): summarize(v) for c, v in scores.items()},
        "fits": [s.to_dict() for v in scores.values() for s in v],
    }


def _score_from_dict(d: dict[str, Any]) -> FitScore:
    fields = ChannelScore.__dataclass_fields__
    chans = tuple(ChannelScore(**{k: v for k, v in c.items() if k in fields}) for c in d["channels"])
    return FitScore(**{**d, "channels": chans, "pinned": tuple(d.get("pinned", ()))})


def summarize_jsonl(paths: Sequence[Path]) -> dict[str, Any]:
    """Plain and calibrated summaries of the fits recorded in JSON-lines files."""
    fits = [_score_from_dict(json.loads(line)) for p in paths for line in p.read_text().splitlines() if line]
    out: dict[str, Any] = {"seeds": sorted({f.seed for f in fits})}
    for cal, name in ((False, "plain"), (True, "calibrated")):
        group = [f for f in fits if f.calibrated == cal]
        if group:
            out[name] = summarize(group)
    return out


# --------------------------------------------------------------------------------------------------
# PyMC-Marketing's example dataset (truth documented in data/README.md)

PYMC_ALPHA = np.array([0.4, 0.2])  # geometric adstock decay, normalised weights over 8 weeks
PYMC_LAM = np.array([4.0, 3.0])  # logistic saturation
PYMC_BETA = np.array([3.0, 2.0]) * 1000.0  # x 1000: the CSV's y is 1000 x the DGP value
PYMC_L_MAX = 8


def pymc_true_media(x: np.ndarray) -> np.ndarray:
    """True media revenue [T, 2] of spend x [T, 2] under the documented process (zero before the table)."""
    w = PYMC_ALPHA[None, :] ** np.arange(PYMC_L_MAX)[:, None]  # [L, 2]
    w = w / w.sum(axis=0, keepdims=True)
    t_len = x.shape[0]
    ad = np.zeros_like(x, dtype=float)
    for lag in range(PYMC_L_MAX):
        ad[lag:] += w[lag] * x[: t_len - lag]
    sat = (1 - np.exp(-PYMC_LAM * ad)) / (1 + np.exp(-PYMC_LAM * ad))
    return PYMC_BETA * sat


def load_pymc_example(path: Path = PYMC_CSV) -> MMMData:
    df = pd.read_csv(path)
    return from_frame(
        df,
        target="y",
        date="date_week",
        channels=["x1", "x2"],
        controls=["event_1", "event_2"],
        source=str(path),
    )


def pymc_regret_of(
    x_hist: np.ndarray, allocation: Sequence[float], *, weeks: int = 8, budget: float | None = None
) -> dict[str, Any]:
    """Regret of ``allocation`` (spend per week of x1, x2) held for the next ``weeks`` against the true
    optimum of the true process, for any optimizer's plan.

    The budget per week (default: the table's mean weekly x1 + x2) is held constant over the weeks; the
    true outcome of a split is the true media revenue of those weeks, carry-over from the history
    included. The true optimum is found by scanning the split on a 0.1% grid.
    """
    b = float(x_hist.sum(axis=1).mean()) if budget is None else float(budget)

    def true_revenue(split: np.ndarray) -> np.ndarray:  # split [S, 2] per week -> [S]
        out = np.empty(len(split))
        for i, alloc in enumerate(split):
            x = np.vstack([x_hist, np.tile(alloc, (weeks, 1))])
            out[i] = pymc_true_media(x)[-weeks:].sum()
        return out

    share = np.linspace(0.0, 1.0, 1001)
    grid = np.stack([share * b, (1 - share) * b], axis=1)
    rev = true_revenue(grid)
    best = float(rev.max())
    current = x_hist.mean(axis=0) / x_hist.sum(axis=1).mean() * b
    plan = np.asarray(allocation, dtype=float)[None, :]
    got = float(true_revenue(plan)[0])
    cur = float(true_revenue(current[None, :])[0])
    return {
        "weeks": weeks,
        "budget_per_week": b,
        "true_optimum": {"x1": float(grid[rev.argmax(), 0]), "x2": float(grid[rev.argmax(), 1])},
        "plan": {"x1": float(plan[0, 0]), "x2": float(plan[0, 1])},
        "true_media_revenue_optimum": best,
        "true_media_revenue_plan": got,
        "true_media_revenue_current_mix": cur,
        "regret": (best - got) / best,
        "regret_current_mix": (best - cur) / best,
    }


def pymc_regret(fm: FittedModel, *, weeks: int = 8, budget: float | None = None) -> dict[str, Any]:
    """Regret of our optimizer's plan for the example (:func:`pymc_regret_of`)."""
    x_hist = fm.data.spend
    b = float(x_hist.sum(axis=1).mean()) if budget is None else float(budget)
    current = x_hist.mean(axis=0) / x_hist.sum(axis=1).mean() * b
    plan = optimize(fm.response_curves(), b, current=current)
    return pymc_regret_of(x_hist, [plan.allocation["x1"], plan.allocation["x2"]], weeks=weeks, budget=b)


def pymc_example(
    *,
    chains: int = 2,
    warmup: int = 1000,
    samples: int = 1000,
    seed: int = 0,
    path: Path = PYMC_CSV,
    baseline: str = "multiplicative",
    saturation: str = "hill",
) -> dict[str, Any]:
    """Fit the example and score contributions, intervals, diagnostics and the optimizer's regret."""
    data = load_pymc_example(path)
    t0 = time.perf_counter()
    fm = fit(
        data,
        chains=chains,
        warmup=warmup,
        samples=samples,
        seed=seed,
        baseline=baseline,
        saturation=saturation,
    )
    wall = time.perf_counter() - t0
    true = pymc_true_media(data.spend).sum(axis=0)
    contrib = fm.channel_metrics().contribution  # [N, 2], summed over rows
    p05, p95 = np.quantile(contrib, [0.05, 0.95], axis=0)
    d = fm.diagnostics
    return {
        "channels": {
            ch: {
                "true_contribution": float(true[j]),
                "contribution_mean": float(contrib[:, j].mean()),
                "contribution_p05": float(p05[j]),
                "contribution_p95": float(p95[j]),
                "error": float(contrib[:, j].mean() / true[j] - 1),
                "covered": bool(p05[j] <= true[j] <= p95[j]),
            }
            for j, ch in enumerate(data.channels)
        },
        "r_hat_max": d.r_hat_max,
        "ess_bulk_min": d.ess_bulk_min,
        "divergences": d.divergences,
        "healthy": d.healthy,
        "reasons": list(d.reasons),
        "fit_seconds": d.fit_seconds,
        "wall_seconds": wall,
        "regret": pymc_regret(fm),
    }


# --------------------------------------------------------------------------------------------------
# smoke fits on datasets without published truth

SMOKE_CASES: dict[str, dict[str, Any]] = {
    "robyn": {
        "path": REPO / "data" / "robyn" / "dt_simulated_weekly.csv",
        "target": "revenue",
        "date": "DATE",
        "channels": ["tv_S", "ooh_S", "print_S", "facebook_S", "search_S"],
        "controls": ["competitor_sales_B", "newsletter"],
    },
    "meridian": {
        "path": REPO / "data" / "meridian" / "national_all_channels.csv",
        "target": "conversions",
        "date": "time",
        "channels": [f"Channel{i}_spend" for i in range(5)],
        "controls": ["competitor_sales_control", "sentiment_score_control", "Promo"],
    },
}


def smoke_fit(
    name: str, *, chains: int = 2, warmup: int = 1000, samples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    case = SMOKE_CASES[name]
    df = pd.read_csv(case["path"])
    data = from_frame(
        df,
        target=case["target"],
        date=case["date"],
        channels=case["channels"],
        controls=case["controls"],
        source=str(case["path"]),
    )
    fm = fit(data, chains=chains, warmup=warmup, samples=samples, seed=seed)
    m = fm.channel_metrics()
    return {
        "dataset": name,
        "periods": data.periods,
        "diagnostics": fm.diagnostics.to_dict(),
        "roi_mean": {c: float(m.roi[:, j].mean()) for j, c in enumerate(data.channels)},
        "roi_prior_contraction": {
            c: float(v) for c, v in zip(data.channels, fm.roi_prior_contraction(), strict=True)
        },
        "warnings": list(fm.warnings()),
    }


def _curve_parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in CURVE_PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more of {','.join(CURVE_PARTS)}")
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.validation")
    sub = parser.add_subparsers(dest="what", required=True)
    st = sub.add_parser("study", help="recovery study over seeds (plain and calibrated)")
    st.add_argument("--seeds", type=int, default=20)
    st.add_argument("--first-seed", type=int, default=0)
    st.add_argument("--frequency", choices=["week", "day"], default="week")
    st.add_argument("--jsonl", type=Path, default=None, help="append each fit's score here as it lands")
    st.add_argument("--oracle", action="store_true", help="pin the true curve shapes (an accuracy bound)")
    st.add_argument(
        "--pin",
        type=_curve_parts,
        default=(),
        metavar="PARTS",
        help=f"pin only these parts of the true curves, comma-separated among {','.join(CURVE_PARTS)}",
    )
    st.add_argument("--plain-only", action="store_true", help="skip the calibrated fits")
    st.add_argument(
        "--variation",
        type=float,
        default=STUDY_VARIATION,
        help="how far budgets move in the simulated histories (default %(default)s)",
    )
    st.add_argument("--method", choices=METHODS, default="nuts")
    st.add_argument(
        "--warmup-tree-depth",
        type=int,
        default=WARMUP_TREE_DEPTH,
        help="NUTS's deepest tree during warmup (8, the sampling depth: no cap)",
    )
    sm = sub.add_parser("summary", help="summaries of the fits in JSON-lines files")
    sm.add_argument("files", type=Path, nargs="+")
    py = sub.add_parser("pymc", help="PyMC-Marketing's example: contributions, intervals, regret")
    py.add_argument("--baseline", choices=["multiplicative", "additive"], default="multiplicative")
    py.add_argument("--saturation", choices=["hill", "logistic"], default="hill")
    for p in (st, py, sub.add_parser("smoke")):
        p.add_argument("--chains", type=int, default=2)
        p.add_argument("--warmup", type=int, default=1000)
        p.add_argument("--samples", type=int, default=1000)
        p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.what == "study" and args.oracle and args.pin:
        parser.error("--oracle pins every part of the curves; --pin pins some: give one of them")
    if args.what == "summary":
        print(json.dumps(summarize_jsonl(args.files), indent=2))
        return 0
    kw = {"chains": args.chains, "warmup": args.warmup, "samples": args.samples}
    result: dict[str, Any]
    if args.what == "study":
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        result = recovery_study(
            seeds,
            frequency=args.frequency,
            log=lambda s: print(s, flush=True),
            jsonl=args.jsonl,
            oracle=args.oracle,
            pin=args.pin,
            variation=args.variation,
            method=args.method,
            warmup_tree_depth=args.warmup_tree_depth,
            calibrated=(False,) if args.plain_only else (False, True),
            **kw,
        )
    elif args.what == "pymc":
        result = pymc_example(baseline=args.baseline, saturation=args.saturation, **kw)
    else:
        result = {name: smoke_fit(name, **kw) for name in SMOKE_CASES}
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps(result.get("summary", result), indent=2, default=float)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
