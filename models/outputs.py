"""FIT.json (INTERFACES section 3) and the richer outputs: response curves, decomposition.

Every figure comes from posterior draws; intervals are the 5th and 95th percentiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.fitted import FittedModel, TableAloneCheck

CURVE_POINTS = 41
CURVE_MAX_MULTIPLE = 3.0
RESPONSE_DRAWS = 1000  # posterior curve draws written for the optimizer


def summarize(draws: np.ndarray, *, median: bool = True) -> dict[str, float]:
    """mean / median / p05 / p95 of a 1-d array of draws."""
    d = np.asarray(draws, dtype=float)
    out = {"mean": float(d.mean())}
    if median:
        out["median"] = float(np.median(d))
    out["p05"] = float(np.quantile(d, 0.05))
    out["p95"] = float(np.quantile(d, 0.95))
    return out


def table_alone_block(check: TableAloneCheck) -> dict[str, Any]:
    """FIT.json's ``lift_tests[].table_alone``: the test against the table-alone fit's prediction of
    it, with the channel's ROI from the table alone."""
    return {
        "predicted": summarize(check.predicted),
        "z": check.z,
        "agrees": check.agrees,
        "roi_table_alone": summarize(check.roi_alone),
    }


def _finite(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _finite_list(a: np.ndarray) -> list[float | None]:
    """JSON-safe values: JSON has no Infinity or NaN, so those become null."""
    return [_finite(float(v)) for v in np.asarray(a, dtype=float)]


#: significant digits that amounts of spend keep in FIT.json when cents would not hold them
MONEY_DIGITS = 6


def money_decimals(amounts: np.ndarray) -> int:
    """Decimals for amounts of spend: cents, or more where the table's unit is large (spend in
    millions: 0.008 a week), so that they keep :data:`MONEY_DIGITS` significant digits of the
    largest; rounded to cents, such a table's grid read all 0 and its current spend 0."""
    top = float(np.max(np.abs(amounts), initial=0.0))
    if not np.isfinite(top) or top <= 0:
        return 2
    return max(2, MONEY_DIGITS - 1 - int(np.floor(np.log10(top))))


def response_curve_grid(fm: FittedModel, points: int = CURVE_POINTS) -> dict[str, Any]:
    """Per channel: spend per period grid (0 .. 3x the mean spend) -> steady-state revenue bands."""
    rc = fm.response_curves()
    out: dict[str, Any] = {}
    mean_spend = fm.data.spend.mean(axis=0)
    for j, ch in enumerate(fm.channels):
        grid = np.linspace(0.0, CURVE_MAX_MULTIPLE * max(mean_spend[j], 1e-9), points)
        budgets = np.zeros((points, len(fm.channels)))
        budgets[:, j] = grid
        rev = rc.revenue(budgets)[:, :, j]  # [draws, points]
        marg = rc.mroas(budgets)[:, :, j]
        out[ch] = {
            "spend_per_period": grid.round(money_decimals(grid)).tolist(),
            "revenue_mean": _finite_list(rev.mean(0)),
            "revenue_p05": _finite_list(np.quantile(rev, 0.05, axis=0)),
            "revenue_p95": _finite_list(np.quantile(rev, 0.95, axis=0)),
            # a Hill curve with shape < 1 is infinitely steep at zero spend: null, not Infinity
            "mroas_mean": _finite_list(marg.mean(0)),
            "current_spend_per_period": float(mean_spend[j]),
        }
    return out


def decomposition(fm: FittedModel) -> dict[str, Any]:
    """Revenue over time split into baseline parts and channels (posterior means, currency)."""
    parts = fm.baseline_parts()
    media = fm.media().mean(axis=0)  # [T, C]
    return {
        "dates": [str(d)[:10] for d in fm.data.dates],
        "actual": fm.data.y.tolist(),
        "expected": fm.expected().mean(0).tolist(),
        "baseline": {k: v.tolist() for k, v in parts.items()},
        "channels": {ch: media[:, j].tolist() for j, ch in enumerate(fm.channels)},
    }


def fit_json(fm: FittedModel, *, extras: bool = True, plots: dict[str, str] | None = None) -> dict[str, Any]:
    """FIT.json: section 3's fields exactly, plus curves, decomposition, priors and provenance."""
    m = fm.channel_metrics()
    spend = fm.data.spend.sum(axis=0)
    support = fm.spend_support()
    carried = fm.carried_spend()
    contraction = fm.roi_prior_contraction()
    channels: dict[str, Any] = {}
    for j, ch in enumerate(fm.channels):
        channels[ch] = {
            "spend": float(spend[j]),
            # the most one period of the table spent: beyond it the curve is the model's extrapolation
            "spend_max_per_period": float(fm.data.spend[:, j].max()),
            # the least spend carried over (adstock) the curve read: below it, where the channel is
            # `roi_extrapolated`, the curve is the model's extrapolation too
            "carried_spend_min_per_period": float(carried[:, j].min()),
            "roi": summarize(m.roi[:, j]),
            "mroas": summarize(m.mroas[:, j]),
            "contribution_share": summarize(m.contribution_share[:, j], median=False),
            "contribution": summarize(m.contribution[:, j]),
            "low_spend_share": support[j].low_spend_share,
            "roi_extrapolated": support[j].roi_extrapolated,
            "spend_variation": support[j].spend_variation,
            "mroas_from_prior": support[j].mroas_from_prior,
            # the share of the ROI prior's (log) variance the data removed: near 0, the prior's ROI
            "roi_prior_contraction": float(contraction[j]),
        }
    d = fm.diagnostics
    out: dict[str, Any] = {
        "channels": channels,
        "diagnostics": {
            "r_hat_max": _finite(d.r_hat_max),
            "ess_bulk_min": _finite(d.ess_bulk_min),
            "divergences": d.divergences,
            "fit_seconds": d.fit_seconds,
            **{
                k: v
                for k, v in d.to_dict().items()
                if k not in ("r_hat_max", "ess_bulk_min", "divergences", "fit_seconds")
            },
        },
        "holdout": (
            {k: (_finite(v) if isinstance(v, float) else v) for k, v in fm.holdout.to_dict().items()}
            if fm.holdout
            else None
        ),
        # what an analyst should know before reading the numbers (the fit may still be healthy)
        "warnings": list(fm.warnings()),
    }
    if fm.lift_tests:  # each test against the fit's own prediction of it
        out["lift_tests"] = [
            {**c.test.to_dict(), "predicted": summarize(c.predicted), "z": c.z, "agrees": c.agrees}
            for c in fm.lift_checks()
        ]
    if not extras:
        return out
    out["model"] = {
        "method": fm.method,
        "seed": fm.seed,
        "settings": fm.settings,
        "spec": fm.spec.to_dict(),
        "frequency": fm.data.frequency,
        "periods": fm.data.periods,
        "first_date": str(fm.data.dates[0])[:10],
        "last_date": str(fm.data.dates[-1])[:10],
        "target": fm.data.target,
        "controls": list(fm.data.control_names),
        "data_fingerprint": fm.data.fingerprint(),
        "priors": fm.priors.to_dict(),
        "priors_by_channel": fm.priors_by_channel(),
        "lift_tests": [t.to_dict() for t in fm.lift_tests],
        "versions": fm.versions,
    }
    rc = fm.response_curves()
    hill = rc.saturation == "hill"
    out["curves"] = {
        "period": rc.period,
        "saturation": rc.saturation,
        "parameters": {
            ch: {
                "beta": summarize(rc.beta[:, j]),
                "half": summarize(rc.half[:, j]),
                **({"shape": summarize(rc.shape[:, j])} if hill else {}),
                "decay": summarize(fm.draws["decay"][:, j]),
                # delayed adstock: the lag (periods) at which a dollar's effect peaks
                **({"delay": summarize(fm.draws["delay"][:, j])} if "delay" in fm.draws else {}),
            }
            for j, ch in enumerate(fm.channels)
        },
        "grid": response_curve_grid(fm),
    }
    recent = fm.data.spend[-(4 if fm.data.frequency == "week" else 28) :].mean(axis=0)
    out["response_curves"] = {
        **rc.subset(RESPONSE_DRAWS, seed=fm.seed).to_dict(),
        "current": {ch: round(float(recent[j]), money_decimals(recent)) for j, ch in enumerate(fm.channels)},
    }
    out["decomposition"] = decomposition(fm)
    if plots:
        out["plots"] = plots
    return out
