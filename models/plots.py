"""PNG plots of a fitted model (matplotlib, Agg backend): curves, decomposition, fit vs actual."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from models.fitted import FittedModel
from models.outputs import response_curve_grid


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return str(path)


def plot_curves(fm: FittedModel, path: Path) -> str:
    grid = response_curve_grid(fm)
    n = len(grid)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (ch, g) in zip(axes.flat, grid.items(), strict=False):
        x = np.asarray(g["spend_per_period"])
        band = [np.asarray(g[k], dtype=float) for k in ("revenue_p05", "revenue_p95", "revenue_mean")]
        ax.fill_between(x, band[0], band[1], alpha=0.25, label="90% band")
        ax.plot(x, band[2], label="mean")
        ax.axvline(g["current_spend_per_period"], color="grey", ls="--", lw=1, label="mean spend")
        ax.set_title(ch)
        ax.set_xlabel(f"spend per {fm.data.frequency}")
        ax.set_ylabel(f"revenue per {fm.data.frequency}")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return _save(fig, path)


def plot_decomposition(fm: FittedModel, path: Path) -> str:
    dates = fm.data.dates.astype("datetime64[D]")
    parts = fm.baseline_parts()
    base = parts["trend"] + parts["seasonality"] + parts["controls"]
    media = fm.media().mean(axis=0)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    layers = [base] + [media[:, j] for j in range(media.shape[1])]
    ax.stackplot(dates, *layers, labels=["baseline", *fm.channels], alpha=0.8)
    ax.plot(dates, fm.data.y, color="black", lw=0.8, label="actual")
    ax.set_title("Revenue decomposition (posterior mean)")
    ax.legend(loc="upper left", fontsize=7, ncol=4)
    return _save(fig, path)


def plot_fit(fm: FittedModel, path: Path) -> str:
    dates = fm.data.dates.astype("datetime64[D]")
    pp = fm.posterior_predictive(fm.seed)
    lo, hi = np.quantile(pp, [0.05, 0.95], axis=0)
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.fill_between(dates, lo, hi, alpha=0.3, label="90% predictive band")
    ax.plot(dates, pp.mean(0), lw=1, label="fitted")
    ax.plot(dates, fm.data.y, color="black", lw=0.8, label="actual")
    ax.set_title(f"Fit vs actual (coverage {fm.diagnostics.ppc_coverage_90 or float('nan'):.0%})")
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_plots(fm: FittedModel, directory: str | Path) -> dict[str, str]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    return {
        "curves": plot_curves(fm, d / "curves.png"),
        "decomposition": plot_decomposition(fm, d / "decomposition.png"),
        "fit": plot_fit(fm, d / "fit.png"),
    }
