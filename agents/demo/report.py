"""The demo's reports: ``report.json`` (INTERFACES section 4, extended) and ``report.html`` with plots.

The JSON is the contract outside checks read; the HTML is for people: budgets per channel over time
against the true optimum, realised against forecast revenue with its band, posterior against true
response curves, and the change requests on a timeline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

STATE_COLOURS = {
    "confirmed": "#2e7d32",
    "monitoring": "#66bb6a",
    "executed": "#66bb6a",
    "rolled_back": "#c62828",
    "rejected": "#ef6c00",
    "expired": "#9e9e9e",
    "failed": "#6a1b9a",
    "cancelled": "#bdbdbd",
    "shadow": "#90a4ae",
    "pending_approval": "#1565c0",
    "approved": "#1565c0",
}


@dataclass
class DayRecord:
    day: date
    budgets: dict[str, float]
    spend: dict[str, float]
    revenue: float
    forecast_mean: float | None = None
    forecast_low: float | None = None
    forecast_high: float | None = None


@dataclass
class CurveComparison:
    channel: str
    grid: list[float]
    true: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    budget: float


@dataclass
class RequestRecord:
    id: int
    kind: str
    status: str
    created: date
    decided: date | None
    executed: date | None
    summary: str
    relative_move: float


@dataclass
class DemoReport:
    summary: dict[str, Any]
    days: list[DayRecord]
    oracle: dict[str, float]
    curves: list[CurveComparison] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    model_versions: list[dict[str, Any]] = field(default_factory=list)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(report: DemoReport, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "report.json"
    _atomic_write(path, json.dumps(report.summary, indent=2, default=str) + "\n")
    return path


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _budget_plot(report: DemoReport) -> str:
    channels = list(report.days[0].budgets) if report.days else []
    fig, axes = plt.subplots(
        len(channels), 1, figsize=(10, 2.0 * max(len(channels), 1)), sharex=True, squeeze=False
    )
    days = [d.day for d in report.days]
    for ax, ch in zip(axes[:, 0], channels, strict=True):
        ax.step(
            days,
            [d.budgets.get(ch, 0.0) for d in report.days],
            where="post",
            label="daily budget",
            color="#1565c0",
        )
        ax.plot(
            days,
            [d.spend.get(ch, 0.0) for d in report.days],
            lw=0.6,
            alpha=0.5,
            color="#90a4ae",
            label="spend",
        )
        if ch in report.oracle:
            ax.axhline(report.oracle[ch], color="#2e7d32", ls="--", lw=1.2, label="true optimum")
        ax.set_ylabel(ch, fontsize=8)
        ax.grid(alpha=0.3)
    if channels:
        axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
        axes[0, 0].set_title("Daily budget per channel against the true best fixed allocation")
    return _png(fig)


def _revenue_plot(report: DemoReport) -> str:
    fig, ax = plt.subplots(figsize=(10, 3.2))
    days = np.array([d.day for d in report.days], dtype="datetime64[D]")
    ax.plot(days, [d.revenue for d in report.days], lw=0.8, color="#263238", label="realised revenue")
    fc = [
        (d.day, d.forecast_mean, d.forecast_low, d.forecast_high)
        for d in report.days
        if d.forecast_mean is not None
    ]
    if fc:
        fd, fm, fl, fh = zip(*fc, strict=True)
        ax.plot(fd, fm, lw=0.8, color="#1565c0", label="forecast (posterior mean)")
        ax.fill_between(fd, fl, fh, color="#1565c0", alpha=0.18, label="90% band")
    ax.set_title("Realised revenue against the promoted model's forecast")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def _curves_plot(report: DemoReport) -> str:
    n = len(report.curves)
    cols = min(n, 3) or 1
    rows = int(np.ceil(n / cols)) or 1
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False, constrained_layout=True
    )
    for ax, cc in zip(axes.flat, report.curves, strict=False):
        ax.plot(cc.grid, cc.true, color="#2e7d32", lw=1.5, label="true")
        ax.plot(cc.grid, cc.mean, color="#1565c0", lw=1.2, label="posterior mean")
        ax.fill_between(cc.grid, cc.low, cc.high, color="#1565c0", alpha=0.2, label="90% band")
        ax.axvline(cc.budget, color="#9e9e9e", ls=":", lw=1)
        ax.set_title(cc.channel, fontsize=9)
        ax.set_xlabel("daily budget", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if n:
        axes[0, 0].legend(fontsize=7)
    fig.suptitle("Posterior response curves (last promoted model) against the truth", fontsize=10)
    return _png(fig)


def _timeline_plot(report: DemoReport) -> str:
    fig, ax = plt.subplots(figsize=(10, 2.6))
    for i, r in enumerate(report.requests):
        end = r.executed or r.decided or r.created
        colour = STATE_COLOURS.get(r.status, "#607d8b")
        span = np.array([r.created, end], dtype="datetime64[D]")
        ax.plot(span, [i, i], color=colour, lw=4, solid_capstyle="butt")
        ax.scatter(span[:1], [i], color=colour, s=14, zorder=3, marker="s" if r.kind == "rollback" else "o")
    handles = [
        Line2D([0], [0], color=c, lw=4, label=s)
        for s, c in STATE_COLOURS.items()
        if any(r.status == s for r in report.requests)
    ]
    if handles:
        ax.legend(handles=handles, fontsize=7, ncol=6, loc="upper left")
    ax.set_yticks([])
    ax.set_title("Change requests (squares: rollbacks), coloured by final state")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def write_html(report: DemoReport, directory: Path) -> Path:
    s = report.summary
    headline = [
        ("uplift captured", s.get("uplift_captured")),
        (
            "revenue vs static",
            f"{s['revenue_total'] - s['static_revenue_total']:+,.0f} {s.get('currency', '')}",
        ),
        ("guardrail violations", s.get("guardrail_violations")),
        ("audit chain valid", s.get("audit_chain_valid")),
    ]
    cards = "".join(
        f"<div class=card><div class=k>{html.escape(k)}</div><div class=v>{html.escape(_fmt(v))}</div></div>"
        for k, v in headline
    )
    summary_rows = [
        (k, _fmt(v)) for k, v in s.items() if not isinstance(v, list | dict) or k == "change_requests"
    ]
    requests = _table(
        [
            (
                r.id,
                r.kind,
                r.status,
                r.created,
                r.decided or "",
                r.executed or "",
                f"{r.relative_move:.1%}",
                r.summary,
            )
            for r in report.requests
        ],
        ["id", "kind", "final state", "proposed", "decided", "executed", "move", "summary"],
    )
    versions = _table(
        [
            (v["id"], v["status"], v["data_end"], v.get("healthy"), v.get("reason", ""))
            for v in report.model_versions
        ],
        ["version", "status", "data through", "healthy", "reason"],
    )
    experiments = s.get("experiments") or []
    exp_html = (
        _table(
            [
                [
                    e.get(k, "")
                    for k in (
                        "channel",
                        "start",
                        "end",
                        "incremental_revenue",
                        "incremental_revenue_se",
                        "roi_before",
                        "roi_after",
                    )
                ]
                for e in experiments
            ],
            ["channel", "start", "end", "incremental revenue", "se", "ROI before", "ROI after"],
        )
        if experiments
        else "<p>No experiment ran.</p>"
    )
    figures = [
        ("Budgets", _budget_plot(report)),
        ("Revenue", _revenue_plot(report)),
        ("Response curves", _curves_plot(report)),
        ("Change requests", _timeline_plot(report)),
    ]
    figs = "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{b}'/>" for t, b in figures)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>budgetloop demo — {html.escape(str(s.get("scenario", "")))}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#263238}}
.cards{{display:flex;gap:1em;flex-wrap:wrap}}.card{{border:1px solid #cfd8dc;border-radius:8px;padding:.8em 1.2em}}
.k{{font-size:.8em;color:#607d8b}}.v{{font-size:1.5em;font-weight:600}}
table{{border-collapse:collapse;font-size:.8em;margin:1em 0}}td,th{{border-bottom:1px solid #eceff1;padding:.3em .6em;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>budgetloop demo: {html.escape(str(s.get("scenario", "")))}</h1>
<p>{s.get("weeks")} simulated weeks from {html.escape(str(s.get("loop_start")))} in {s.get("elapsed_seconds")} s.</p>
<div class=cards>{cards}</div>{figs}
<h2>Change requests</h2>{requests}<h2>Experiments</h2>{exp_html}<h2>Model versions</h2>{versions}
<h2>Summary</h2>{_table(summary_rows, ["measure", "value"])}
</body></html>"""
    path = directory / "report.html"
    _atomic_write(path, page)
    return path
