"""`budgetloop optimize FIT.json --budget AMOUNT [--policy POLICY.yaml] --out PLAN.json`.

Reads the posterior response curves from FIT.json (its ``response_curves`` block), the objective and
the per-channel bounds from the guardrail policy when one is given, and writes the best allocation of
AMOUNT per period (the fit's period: a day or a week) with its expected gain, the gain's 90% band and
the posterior probability that it beats the current allocation. Policy amounts are daily; for a weekly
fit they are multiplied by 7.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from budgetloop.cli import app, check_not_an_input
from budgetloop.errors import InputError
from budgetloop.fileio import check_output_path, write_output

PERIOD_DAYS = {"day": 1, "week": 7}
#: the exit code for a fit whose diagnostics failed, as `budgetloop fit` uses it
UNHEALTHY_EXIT = 3
CURRENT_FIX = "pass --current channel=amount,... (per period) to override it, or refit to rewrite FIT.json"


@dataclass(frozen=True)
class PolicyLimits:
    """The few policy keys the optimizer needs (amounts per day, as the policy writes them)."""

    metric: str = "revenue"
    margin: float | None = None
    target: float | None = None
    total_daily_max: float | None = None
    channels: dict[str, tuple[float, float | None, bool]] = field(default_factory=dict)


def read_policy_limits(path: Path) -> PolicyLimits:
    """Objective, cap and channel bounds of a policy file, validated by the guardrails engine."""
    from guardrails.loading import load_policy

    policy = load_policy(path)
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


def _unhealthy_reasons(doc: dict[str, Any]) -> list[str] | None:
    """The failed diagnostics of a FIT.json whose ``diagnostics.healthy`` is false (its
    ``diagnostics.reasons``, possibly empty); None for a healthy fit or one that does not say."""
    diagnostics = doc.get("diagnostics")
    if not isinstance(diagnostics, dict) or diagnostics.get("healthy") is not False:
        return None
    reasons = diagnostics.get("reasons")
    return [str(r) for r in reasons] if isinstance(reasons, list) else []


def _parse_current(text: str, channels: tuple[str, ...]) -> dict[str, float]:
    """``--current channel=amount,...``: each part readable, then checked as FIT.json's is."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = float("nan")
        if not sep or not math.isfinite(amount):
            raise InputError(
                f"cannot read {part!r}", key="--current", fix="write channel=amount,channel=amount"
            )
        out[name] = amount
    return _check_current(
        out, channels, file=None, key="--current", fix="give every fitted channel an amount per period >= 0"
    )


def _check_current(
    values: dict[str, float], channels: tuple[str, ...], *, file: str | None, key: str, fix: str
) -> dict[str, float]:
    """Current spend per period (``--current`` or FIT.json's): every fitted channel, none other,
    each a finite amount >= 0; refused naming ``file`` and ``key`` otherwise."""
    unknown = sorted(set(values) - set(channels))
    if unknown:
        raise InputError(
            f"names channel(s) {unknown} that the fit does not have; it has {list(channels)}",
            file=file,
            key=key,
            fix=fix,
        )
    missing = [c for c in channels if c not in values]
    if missing:
        raise InputError(f"lacks channel(s) {missing}", file=file, key=key, fix=fix)
    bad = {c: v for c, v in values.items() if not math.isfinite(v) or v < 0}
    if bad:
        raise InputError(f"spend must be a finite amount >= 0, got {bad}", file=file, key=key, fix=fix)
    return values


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
    allow_unhealthy: bool = typer.Option(
        False,
        "--allow-unhealthy",
        help="plan from a fit whose diagnostics failed (FIT.json diagnostics.healthy false), with a warning",
    ),
) -> None:
    from models.optimize import BadCurrent, curves_from_fit
    from models.optimize import optimize as run_optimize

    check_output_path(out, flag="--out")
    check_not_an_input(out, flag="--out", inputs={"FIT.json": fit_json, "--policy file": policy})
    doc = load_fit(fit_json)
    unhealthy = _unhealthy_reasons(doc)
    if unhealthy is not None:
        what = f"{fit_json}: the fit is NOT healthy (diagnostics.healthy is false)"
        reasons = "".join(f"\n  - {r}" for r in unhealthy)
        if not allow_unhealthy:
            typer.echo(
                f"error: {what}; a plan from it is not to be trusted:{reasons}\n"
                "refit until the diagnostics pass (`budgetloop fit` says how), or pass --allow-unhealthy "
                "to plan from it anyway",
                err=True,
            )
            raise typer.Exit(UNHEALTHY_EXIT)
        typer.echo(f"warning: {what}; planning from it because of --allow-unhealthy:{reasons}", err=True)
    try:
        curves, fit_current = curves_from_fit(doc)
    except BadCurrent as exc:
        raise InputError(
            exc.args[0], file=str(fit_json), key="response_curves.current", fix=CURRENT_FIX
        ) from exc
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
    if current:
        cur: dict[str, float] | None = _parse_current(current, channels)
    else:
        cur = (
            None
            if fit_current is None
            else _check_current(
                fit_current, channels, file=str(fit_json), key="response_curves.current", fix=CURRENT_FIX
            )
        )
    if cur is None:
        raise InputError(
            "carries no current spend per channel",
            file=str(fit_json),
            key="response_curves.current",
            fix="pass --current channel=amount,... (per period)",
        )
    metric = objective or limits.metric
    if margin is not None and not 0 < margin <= 1:
        raise InputError(
            f"margin {margin:g} is not a share of revenue",
            key="--margin",
            fix="give the gross margin as a share in (0, 1], e.g. --margin 0.35 for 35%",
        )
    for flag, value, wants in (("--margin", margin, "profit"), ("--target-roas", target_roas, "target_roas")):
        if value is not None and metric != wants:
            raise InputError(
                f"{flag} {value:g} has no effect on the objective `{metric}`",
                key=flag,
                fix=f"add --objective {wants}, or drop {flag}",
            )
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
            cents=True,
        )
    except ValueError as exc:
        raise InputError(
            str(exc), file=str(policy) if policy else None, fix="adjust --budget, the bounds or the objective"
        ) from exc
    body = {"fit": str(fit_json), "policy": str(policy) if policy else None, **result.to_dict()}
    notes = (
        list(result.notes)
        + _prior_only_moves(doc, result.allocation, cur, curves.period)
        + _beyond_the_data(doc, result.allocation, curves.period)
        + _below_the_data(doc, result.allocation, curves.period)
    )
    if unhealthy is not None:
        notes.insert(
            0,
            "planned with --allow-unhealthy from a fit that is NOT healthy: "
            + "; ".join(unhealthy or ["diagnostics.healthy is false"]),
        )
    unbounded = [ch for ch in channels if ch not in limits.channels]
    if policy is not None and unbounded:
        notes.append(
            f"{policy} sets no bounds for {', '.join(unbounded)}: planned anywhere from 0 to the budget "
            "(add them under `channels` to bound them, as the loop requires)"
        )
    if round(budget, 2) != budget:
        notes.insert(0, f"--budget {budget} is planned in cents: {round(budget, 2):.2f} per {curves.period}")
    body["notes"] = notes
    write_output(out, json.dumps(body, indent=2) + "\n", flag="--out")
    typer.echo(
        f"{metric}: expected gain {result.expected_gain:,.2f} per {curves.period} "
        f"(90% band {result.gain_p05:,.2f} .. {result.gain_p95:,.2f}), "
        f"P(improvement) {result.probability_of_improvement:.2f}; wrote {out}"
    )
    for note in notes:
        typer.echo(f"note: {note}")


def _fitted(doc: dict[str, Any], channel: str) -> dict[str, Any]:
    """FIT.json's entry for ``channel`` under ``channels``; empty where the file has none."""
    fitted = doc.get("channels")
    info = fitted.get(channel) if isinstance(fitted, dict) else None
    return info if isinstance(info, dict) else {}


#: a planned amount above this multiple of the most one period of the fitted table spent is noted:
#: the response curve there is the model family's extrapolation, not something the data showed
BEYOND_DATA = 1.5


def _beyond_the_data(doc: dict[str, Any], allocation: dict[str, float], period: str) -> list[str]:
    """A note per channel the plan funds well past any spend the fitted table shows (FIT.json's
    ``spend_max_per_period``; older FIT.json files without it get no such note)."""
    out: list[str] = []
    for ch, after in allocation.items():
        most = _fitted(doc, ch).get("spend_max_per_period")
        if isinstance(most, int | float) and most > 0 and after > BEYOND_DATA * most:
            out.append(
                f"{ch}: the plan spends {after:,.2f} per {period}, {after / most:,.1f}x the most the "
                f"fitted table ever spent in one {period} ({most:,.2f}); the response curve there is "
                "the model's extrapolation, not data: move toward it in steps and refit as data arrive"
            )
    return out


def _below_the_data(doc: dict[str, Any], allocation: dict[str, float], period: str) -> list[str]:
    """A note per channel the plan cuts well below any spend its response curve read in the fitted
    table (FIT.json's ``carried_spend_min_per_period``), where FIT.json marks its ROI an
    extrapolation (``roi_extrapolated``: the table never showed the curve near zero and no lift test
    measured it). The loss the plan expects there is the curve family's guess: the same channel's
    ROI came out 22% apart between a Hill and a logistic fit on PyMC-Marketing's example. Channels
    whose curve the table shows near zero, and older FIT.json files, get no such note."""
    out: list[str] = []
    for ch, after in allocation.items():
        info = _fitted(doc, ch)
        least = info.get("carried_spend_min_per_period")
        if info.get("roi_extrapolated") is not True or not isinstance(least, int | float) or least <= 0:
            continue
        if after < least / BEYOND_DATA:
            out.append(
                f"{ch}: the plan cuts it to {after:,.2f} per {period}, {after / least:.0%} of the least "
                f"spend its response curve read in the fitted table ({least:,.2f} per {period}, "
                "carried over); the curve there is the model's extrapolation (FIT.json "
                "`roi_extrapolated`): cut in steps, or run a holdout test of it first"
            )
    return out


def _prior_only_moves(
    doc: dict[str, Any], allocation: dict[str, float], current: dict[str, float], period: str
) -> list[str]:
    """A note per channel the plan moves although FIT.json says its figures are the priors': its
    spend barely moved in the fitted table (``mroas_from_prior``), or the data removed little of its
    ROI prior's variance (``roi_prior_contraction`` under ``models.priors.ROI_CONTRACTION_MIN``).
    The gain on it is an assumption, not a measurement. Older FIT.json files, without the
    contraction, get the first note only."""
    from models.priors import ROI_CONTRACTION_MIN

    out: list[str] = []
    for ch, after in allocation.items():
        info = _fitted(doc, ch)
        before = current[ch]
        if abs(after - before) <= 0.01 * max(before, 1e-9):
            continue
        contraction = info.get("roi_prior_contraction")
        if info.get("mroas_from_prior") is True:
            why = "its spend barely moved in the fitted table, FIT.json `mroas_from_prior`"
        elif isinstance(contraction, int | float) and contraction < ROI_CONTRACTION_MIN:
            why = (
                f"the data removed {max(contraction, 0.0):.0%} of its ROI prior's variance, FIT.json "
                "`roi_prior_contraction`"
            )
        else:
            continue
        out.append(
            f"{ch}: the plan moves it from {before:,.2f} to {after:,.2f} per {period} on an mROAS "
            f"that comes from the priors ({why}): try the move on a small scale, or measure the "
            "channel with a lift test, before trusting that part of the gain"
        )
    return out
