"""`budgetloop optimize FIT.json --budget AMOUNT [--policy POLICY.yaml] --out PLAN.json`.

Reads the posterior response curves from FIT.json (its ``response_curves`` block), the objective and
the per-channel bounds from the guardrail policy when one is given, and writes the best allocation of
AMOUNT per period (the fit's period: a day or a week) with its expected gain, the gain's 90% band and
the posterior probability that it beats the current allocation. Policy amounts are daily; for a weekly
fit they are multiplied by 7.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from budgetloop.cli import app
from budgetloop.errors import InputError

PERIOD_DAYS = {"day": 1, "week": 7}


@dataclass(frozen=True)
class PolicyLimits:
    """The few policy keys the optimizer needs (amounts per day, as the policy writes them)."""

    metric: str = "revenue"
    margin: float | None = None
    target: float | None = None
    total_daily_max: float | None = None
    channels: dict[str, tuple[float, float | None, bool]] = field(default_factory=dict)


def read_policy_limits(path: Path) -> PolicyLimits:
    """Objective, cap and channel bounds of a policy file.

    Uses the guardrails engine's ``load_policy`` when it is installed (full validation); otherwise
    reads the keys with PyYAML and checks only what the optimizer relies on.
    """
    try:
        loader = getattr(importlib.import_module("guardrails.policy"), "load_policy", None)
    except ImportError:
        loader = None
    if loader is not None:
        policy = loader(path)
        return PolicyLimits(
            metric=str(policy.objective.metric),
            margin=policy.objective.margin,
            target=policy.objective.target,
            total_daily_max=float(policy.budget.total_daily_max),
            channels={
                name: (float(rule.min_daily), rule.max_daily, bool(rule.locked))
                for name, rule in policy.channels.items()
            },
        )
    return _read_policy_yaml(path)


def _read_policy_yaml(path: Path) -> PolicyLimits:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(
            f"cannot read the policy: {exc.strerror}", file=str(path), fix="check the path"
        ) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", file=str(path), fix="fix the YAML syntax") from exc
    if not isinstance(doc, dict):
        raise InputError("a policy must be a YAML mapping", file=str(path), fix="see examples/policy.yaml")
    obj = doc.get("objective") or {}
    if not isinstance(obj, dict):
        raise InputError("must be a mapping", file=str(path), key="objective", fix="see examples/policy.yaml")
    metric = str(obj.get("metric", "revenue"))
    if metric not in ("revenue", "profit", "target_roas"):
        raise InputError(
            f"unknown metric {metric!r}",
            file=str(path),
            key="objective.metric",
            fix="use revenue, profit or target_roas",
        )
    margin = _num(path, "objective.margin", obj.get("margin"), positive=True)
    target = _num(path, "objective.target", obj.get("target", obj.get("target_roas")), positive=True)
    budget = doc.get("budget") or {}
    cap = _num(
        path,
        "budget.total_daily_max",
        budget.get("total_daily_max") if isinstance(budget, dict) else None,
        positive=True,
    )
    chans = doc.get("channels") or {}
    if not isinstance(chans, dict):
        raise InputError(
            "must be a mapping of channel names",
            file=str(path),
            key="channels",
            fix="see examples/policy.yaml",
        )
    limits: dict[str, tuple[float, float | None, bool]] = {}
    for name, rule in chans.items():
        rule = rule or {}
        if not isinstance(rule, dict):
            raise InputError(
                "must be a mapping",
                file=str(path),
                key=f"channels.{name}",
                fix="write {min_daily: ..., max_daily: ...}",
            )
        lo = _num(path, f"channels.{name}.min_daily", rule.get("min_daily", 0.0), positive=False) or 0.0
        hi = _num(path, f"channels.{name}.max_daily", rule.get("max_daily"), positive=False)
        limits[str(name)] = (lo, hi, bool(rule.get("locked", False)))
    return PolicyLimits(metric=metric, margin=margin, target=target, total_daily_max=cap, channels=limits)


def _num(path: Path, key: str, value: object, *, positive: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise InputError(f"must be a number, got {value!r}", file=str(path), key=key, fix="write a number")
    if float(value) < 0 or (positive and float(value) == 0):
        raise InputError(
            f"must be {'> 0' if positive else '>= 0'}, got {value!r}",
            file=str(path),
            key=key,
            fix="write a non-negative amount",
        )
    return float(value)


def load_fit(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(
            f"cannot read the fit: {exc.strerror}", file=str(path), fix="check the path"
        ) from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON (line {exc.lineno}: {exc.msg})",
            file=str(path),
            fix="pass the FIT.json written by `budgetloop fit`",
        ) from exc
    if not isinstance(doc, dict):
        raise InputError(
            "not a FIT.json object", file=str(path), fix="pass the FIT.json written by `budgetloop fit`"
        )
    return doc


def _parse_current(text: str, channels: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = float("nan")
        if not sep or not math.isfinite(amount) or amount < 0:
            raise InputError(
                f"cannot read {part!r}", key="--current", fix="write channel=amount,channel=amount"
            )
        if name not in channels:
            raise InputError(f"unknown channel {name!r}", key="--current", fix=f"use one of {list(channels)}")
        out[name] = amount
    missing = [c for c in channels if c not in out]
    if missing:
        raise InputError(
            f"lacks channel(s) {missing}", key="--current", fix="give every fitted channel an amount"
        )
    return out


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command(
    "optimize", help="Best allocation of AMOUNT per period over the fitted channels, within the policy."
)
def optimize(
    fit_json: Path = typer.Argument(..., help="FIT.json written by `budgetloop fit`"),
    budget: float = typer.Option(..., "--budget", help="Total budget per period of the fit (day or week)"),
    out: Path = typer.Option(..., "--out", help="Where to write PLAN.json"),
    policy: Path | None = typer.Option(None, "--policy", help="Guardrail policy YAML: objective and bounds"),
    objective: str | None = typer.Option(
        None, "--objective", help="revenue | profit | target_roas (overrides policy)"
    ),
    margin: float | None = typer.Option(None, "--margin", help="Profit margin for --objective profit"),
    target_roas: float | None = typer.Option(
        None, "--target-roas", help="Target ROAS for --objective target_roas"
    ),
    current: str | None = typer.Option(
        None,
        "--current",
        help="Current spend per period, channel=amount,...; default: the fit's recent spend",
    ),
) -> None:
    from models.optimize import curves_from_fit
    from models.optimize import optimize as run_optimize

    doc = load_fit(fit_json)
    try:
        curves, fit_current = curves_from_fit(doc)
    except ValueError as exc:
        raise InputError(
            str(exc),
            file=str(fit_json),
            key="response_curves",
            fix="pass a FIT.json written by this version of `budgetloop fit`",
        ) from exc
    channels = tuple(curves.channels)
    if not math.isfinite(budget) or budget < 0:
        raise InputError(
            f"must be a finite amount >= 0, got {budget}", key="--budget", fix="pass e.g. --budget 15000"
        )
    days = PERIOD_DAYS[curves.period]
    limits = read_policy_limits(policy) if policy is not None else PolicyLimits()
    if limits.total_daily_max is not None and budget > limits.total_daily_max * days * (1 + 1e-12):
        raise InputError(
            f"--budget {budget:g} per {curves.period} is above the policy's cap "
            f"{limits.total_daily_max:g} per day x {days}",
            file=str(policy),
            key="budget.total_daily_max",
            fix="lower --budget or raise the cap",
        )
    unknown = sorted(set(limits.channels) - set(channels))
    if unknown:
        raise InputError(
            f"names channel(s) {unknown} that the fit does not have (fitted: {list(channels)})",
            file=str(policy),
            key="channels",
            fix="rename them to fitted channels or refit with them",
        )
    bounds = {
        name: (lo * days, None if hi is None else hi * days) for name, (lo, hi, _) in limits.channels.items()
    }
    locked = [name for name, (_, _, lock) in limits.channels.items() if lock]
    cur = _parse_current(current, channels) if current else fit_current
    if cur is None:
        raise InputError(
            "carries no current spend per channel",
            file=str(fit_json),
            key="response_curves.current",
            fix="pass --current channel=amount,... (per period)",
        )
    metric = objective or limits.metric
    try:
        result = run_optimize(
            curves,
            budget,
            current=cur,
            bounds=bounds,
            locked=locked,
            objective=metric,
            margin=margin if margin is not None else limits.margin,
            target_roas=target_roas if target_roas is not None else limits.target,
        )
    except ValueError as exc:
        raise InputError(
            str(exc), file=str(policy) if policy else None, fix="adjust --budget, the bounds or the objective"
        ) from exc
    body = {"fit": str(fit_json), "policy": str(policy) if policy else None, **result.to_dict()}
    _write_atomic(out, json.dumps(body, indent=2) + "\n")
    typer.echo(
        f"{metric}: expected gain {result.expected_gain:,.2f} per {curves.period} "
        f"(90% band {result.gain_p05:,.2f} .. {result.gain_p95:,.2f}), "
        f"P(improvement) {result.probability_of_improvement:.2f}; wrote {out}"
    )
