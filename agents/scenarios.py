"""What-if scenarios: "what if we move 10% of social into retail media for 8 weeks?"

A scenario is the current daily budgets plus a list of moves (a share of one channel's budget into
another) or explicit budgets, held for a horizon. From the fitted model's posterior it answers, for
the current plan and for the scenario: the revenue over the horizon (posterior predictive mean and a
90% band), the difference with its band and the probability that the scenario does better, and each
channel's mROAS at the scenario's budgets with its band. Scenarios are stored so later decisions can
refer to them.

Rules a scenario is checked against (a user's mistake raises :class:`InputError` naming the flag):
every channel named is one of the model's; a move's source and target differ and its share is in
(0, 1]; the shares of one source all refer to its *current* budget and add up (two moves of 0.3 out
of search leave it at 0.4), never above 1; a channel gets at most one explicit budget; budgets are
finite and >= 0; the first day lies between the model's first day and a year after its last. A
channel at zero spend gets its mROAS from a finite difference on its curve (a step of 1% of its usual
spend), where the derivative itself may be infinite. Nothing non-finite is ever returned or stored:
:func:`evaluate` refuses it (:func:`ensure_finite`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from budgetloop.db.loop import Scenario as ScenarioRow
from budgetloop.errors import BudgetloopError, InputError
from budgetloop.store import audit
from models.curves import ResponseCurves
from models.fitted import FittedModel

_MOVE = re.compile(r"^\s*(?P<src>[^:>]+?)\s*->\s*(?P<dst>[^:]+?)\s*:\s*(?P<share>\S+?)\s*$")

#: how far past the model's last day a scenario may start (its trend and seasonality are extrapolated)
MAX_DAYS_AHEAD = 365
#: the finite-difference step of mROAS at zero spend, relative to the channel's usual spend per period
FD_STEP = 0.01


class NonFiniteResult(BudgetloopError):
    """A scenario's answer holds NaN or an infinity: refused rather than written as invalid JSON."""


@dataclass(frozen=True)
class Move:
    """Move ``share`` of ``source``'s daily budget into ``target``."""

    source: str
    target: str
    share: float

    @classmethod
    def parse(cls, text: str) -> Move:
        """``"social->retail:0.10"`` or ``"social->retail:10%"``."""
        m = _MOVE.match(text)
        if not m:
            raise InputError(
                f"cannot read the move {text!r}",
                key="--move",
                fix="write it as SOURCE->TARGET:SHARE, e.g. social->retail:0.10",
            )
        raw = m["share"]
        try:
            share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            raise InputError(
                f"cannot read the share {raw!r} of the move {text!r}",
                key="--move",
                fix="use a share such as 0.10 or 10%",
            ) from None
        if not math.isfinite(share) or share <= 0:
            raise InputError(
                f"the share must be > 0, got {raw} in {text!r}",
                key="--move",
                fix="use a share in (0, 1] such as 0.10 or 10%; to move the other way, swap SOURCE and TARGET",
            )
        if share > 1:
            raise InputError(
                f"the share must be at most 1 (all of the source's budget), got {raw} in {text!r}",
                key="--move",
                fix="use a share in (0, 1] such as 0.10 or 10%",
            )
        source, target = m["src"].strip(), m["dst"].strip()
        if source == target:
            raise InputError(
                f"the move {text!r} has the same source and target {source!r}",
                key="--move",
                fix="move budget from one channel into a different one",
            )
        return cls(source, target, share)


@dataclass(frozen=True)
class Band:
    mean: float
    p05: float
    p95: float

    @classmethod
    def of(cls, draws: np.ndarray) -> Band:
        lo, hi = np.quantile(draws, [0.05, 0.95])
        return cls(float(np.mean(draws)), float(lo), float(hi))

    def to_dict(self) -> dict[str, float]:
        return {"mean": round(self.mean, 2), "p05": round(self.p05, 2), "p95": round(self.p95, 2)}


@dataclass(frozen=True)
class ScenarioResult:
    description: str
    start: date
    days: int
    current: dict[str, float]
    scenario: dict[str, float]
    revenue_current: Band
    revenue_scenario: Band
    difference: Band
    probability_better: float
    mroas_current: dict[str, Band | None]
    mroas_scenario: dict[str, Band | None]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "start": self.start.isoformat(),
            "days": self.days,
            "budgets": {"current": self.current, "scenario": self.scenario},
            "revenue": {
                "current": self.revenue_current.to_dict(),
                "scenario": self.revenue_scenario.to_dict(),
                "difference": self.difference.to_dict(),
                "probability_better": round(self.probability_better, 4),
            },
            "mroas": {
                ch: {
                    "current": _band_dict(self.mroas_current[ch]),
                    "scenario": _band_dict(self.mroas_scenario[ch]),
                }
                for ch in self.current
            },
            "notes": self.notes,
        }


def _band_dict(band: Band | None) -> dict[str, float] | None:
    return None if band is None else band.to_dict()


def recent_daily_budgets(fm: FittedModel) -> dict[str, float]:
    """The current plan when none is given: each channel's average daily spend over the model's last week."""
    per_period = 7 if fm.data.frequency == "week" else 1
    tail = fm.data.spend[-max(1, 7 // per_period) :]
    return {c: round(float(tail[:, i].mean()) / per_period, 2) for i, c in enumerate(fm.channels)}


def _known(name: str, channels: Sequence[str], key: str) -> None:
    if name not in channels:
        raise InputError(
            f"unknown channel {name!r}", key=key, fix=f"use one of the model's channels {sorted(channels)}"
        )


def check_budgets(budgets: Mapping[str, float], channels: Sequence[str], key: str) -> dict[str, float]:
    """Named channels are the model's, amounts finite and >= 0."""
    out: dict[str, float] = {}
    for name, value in budgets.items():
        _known(name, channels, key)
        amount = float(value)
        if not math.isfinite(amount) or amount < 0:
            raise InputError(
                f"the daily budget of {name!r} must be a finite amount >= 0, got {value}",
                key=key,
                fix=f"write {name}=AMOUNT with AMOUNT >= 0",
            )
        out[name] = amount
    return out


def apply_moves(
    current: Mapping[str, float], moves: Sequence[Move], channels: Sequence[str] | None = None
) -> dict[str, float]:
    """The budgets after ``moves``: each share is of its source's *current* budget; shares add up.

    ``channels`` are the known ones (the model's; default: ``current``'s). One source's shares may
    add up to at most 1.
    """
    known = list(channels) if channels is not None else list(current)
    budgets = {k: float(v) for k, v in current.items()}
    totals: dict[str, float] = {}
    for mv in moves:
        for name in (mv.source, mv.target):
            _known(name, known, "--move")
            if name not in budgets:
                raise InputError(
                    f"no current budget for channel {name!r}",
                    key="--current",
                    fix=f"give the current budget of {name} with --current {name}=AMOUNT",
                )
        totals[mv.source] = totals.get(mv.source, 0.0) + mv.share
    for source, total in totals.items():
        if total > 1 + 1e-9:
            shares = [f"{mv.source}->{mv.target}:{mv.share:g}" for mv in moves if mv.source == source]
            raise InputError(
                f"the moves out of {source!r} ({', '.join(shares)}) add up to {total:g} of its current "
                "budget, more than all of it",
                key="--move",
                fix=f"make the shares out of {source} add up to at most 1 (each is a share of its current budget)",
            )
    base = dict(budgets)
    last_of = {mv.source: i for i, mv in enumerate(moves)}
    moved: dict[str, float] = {}
    for i, mv in enumerate(moves):
        if last_of[mv.source] == i and abs(totals[mv.source] - 1) <= 1e-9:
            amount = round(base[mv.source] - moved.get(mv.source, 0.0), 2)  # all of it, despite rounding
        else:
            amount = round(base[mv.source] * mv.share, 2)
        moved[mv.source] = moved.get(mv.source, 0.0) + amount
        budgets[mv.source] = max(round(budgets[mv.source] - amount, 2), 0.0)
        budgets[mv.target] = round(budgets[mv.target] + amount, 2)
    return budgets


def check_start(fm: FittedModel, start: date, key: str = "--start") -> None:
    """The first day must lie between the model's first day and a year after its last."""
    first = date.fromisoformat(str(fm.data.dates[0])[:10])
    last = date.fromisoformat(str(fm.data.dates[-1])[:10])
    latest = last + timedelta(days=MAX_DAYS_AHEAD)
    if not first <= start <= latest:
        raise InputError(
            f"the first day {start.isoformat()} is outside the range the model can answer for "
            f"(its data runs {first.isoformat()} to {last.isoformat()})",
            key=key,
            fix=f"start between {first.isoformat()} and {latest.isoformat()}",
        )


def ensure_finite(value: Any, where: str = "result") -> None:
    """Refuse NaN and infinities anywhere in ``value`` (dicts, lists, numbers)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            ensure_finite(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            ensure_finite(v, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise NonFiniteResult(
            f"the scenario's answer has a non-finite number ({value}) at {where}; nothing was stored — "
            "the model cannot answer this scenario (check the budgets and the first day)"
        )


def _mroas(curves: ResponseCurves, budgets: np.ndarray, usual: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """mROAS draws [draws, C] at ``budgets`` (per period) and the channels it cannot give (None).

    The derivative where it is finite; where the budget is 0 (a Hill curve's derivative there may be
    infinite or 0/0), a forward difference with a step of ``FD_STEP`` x the channel's usual spend.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = np.asarray(curves.mroas(budgets), dtype=float)
    unknown: list[int] = []
    for i in range(len(budgets)):
        if budgets[i] > 0 and np.all(np.isfinite(m[:, i])):
            continue
        h = FD_STEP * float(usual[i])
        if not (h > 0 and math.isfinite(h)):
            unknown.append(i)
            continue
        up = budgets.copy()
        up[i] += h
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = (curves.revenue(up)[:, i] - curves.revenue(budgets)[:, i]) / h
        if np.all(np.isfinite(d)):
            m[:, i] = d
        else:
            unknown.append(i)
    return m, unknown


def answer(
    fm: FittedModel,
    *,
    moves: Sequence[Move],
    current: Mapping[str, float],
    budgets: Mapping[str, float],
    start: date | None,
    weeks: int,
    description: str,
    seed: int = 0,
) -> ScenarioResult:
    """A scenario as the CLI and the REST API ask it: ``current`` overrides the model's last week for
    the channels it names, ``moves`` then ``budgets`` make the scenario, from ``start`` (default the
    day after the model's data) for ``weeks``. Every input is checked first (InputError names the flag)."""
    channels = list(fm.channels)
    given_current = check_budgets(current, channels, "--current")
    given_budgets = check_budgets(budgets, channels, "--budget")
    first = start or date.fromisoformat(str(fm.data.dates[-1])[:10]) + timedelta(days=1)
    check_start(fm, first)
    base = {**recent_daily_budgets(fm), **given_current}
    planned = apply_moves(base, moves, channels)
    planned.update(given_budgets)
    return evaluate(
        fm,
        current=base,
        scenario=planned,
        start=first,
        days=7 * weeks,
        description=f"{description} for {weeks} weeks",
        seed=seed,
    )


def evaluate(
    fm: FittedModel,
    *,
    current: Mapping[str, float],
    scenario: Mapping[str, float],
    start: date,
    days: int,
    description: str,
    seed: int = 0,
) -> ScenarioResult:
    """Compare ``scenario`` with ``current`` daily budgets held from ``start`` for ``days`` days."""
    if days < 1:
        raise InputError(f"a scenario needs at least one day, got {days}", key="--weeks")
    channels = list(fm.channels)
    check_start(fm, start)
    current = check_budgets(current, channels, "--current")
    scenario = check_budgets(scenario, channels, "--budget")
    missing = [c for c in channels if c not in current or c not in scenario]
    if missing:
        raise InputError(
            f"no budget for channel(s) {missing}", key="--current", fix=f"give all of {channels}"
        )
    per_period = 7 if fm.data.frequency == "week" else 1
    periods = max(1, int(np.ceil(days / per_period)))
    step = timedelta(days=per_period)
    dates = np.array([np.datetime64(start + i * step, "D") for i in range(periods)])
    cur = np.array([[current[c] * per_period for c in channels]] * periods)
    new = np.array([[scenario[c] * per_period for c in channels]] * periods)
    controls = None if not fm.data.control_names else np.tile(fm.data.controls.mean(0), (periods, 1))
    rev_cur = fm.predict(cur, controls, dates, seed=seed, noise=False).sum(axis=1)
    rev_new = fm.predict(new, controls, dates, seed=seed, noise=False).sum(axis=1)
    curves: ResponseCurves = fm.response_curves()
    spend = np.asarray(fm.data.spend, dtype=float)
    usual = np.array(
        [
            float(spend[spend[:, i] > 0, i].mean()) if np.any(spend[:, i] > 0) else 0.0
            for i in range(len(channels))
        ]
    )
    m_cur, unknown_cur = _mroas(curves, cur[0], usual)
    m_new, unknown_new = _mroas(curves, new[0], usual)
    notes = []
    if controls is not None:
        notes.append("control variables held at their historical mean over the horizon")
    fd = sorted(
        {c for i, c in enumerate(channels) if (cur[0][i] <= 0 or new[0][i] <= 0)}
        - {channels[i] for i in unknown_cur + unknown_new}
    )
    if fd:
        notes.append(
            f"mROAS of {', '.join(fd)} at zero spend: the return of the first {FD_STEP:.0%} of its usual "
            "spend (a finite difference on its curve)"
        )
    unknown = sorted({channels[i] for i in unknown_cur + unknown_new})
    if unknown:
        notes.append(
            f"mROAS of {', '.join(unknown)} is null: the model has no spend of it to measure a step by"
        )
    result = ScenarioResult(
        description=description,
        start=start,
        days=days,
        current={c: float(current[c]) for c in channels},
        scenario={c: float(scenario[c]) for c in channels},
        revenue_current=Band.of(rev_cur),
        revenue_scenario=Band.of(rev_new),
        difference=Band.of(rev_new - rev_cur),
        probability_better=float(np.mean(rev_new > rev_cur)),
        mroas_current={c: None if i in unknown_cur else Band.of(m_cur[:, i]) for i, c in enumerate(channels)},
        mroas_scenario={
            c: None if i in unknown_new else Band.of(m_new[:, i]) for i, c in enumerate(channels)
        },
        notes=notes,
    )
    ensure_finite(result.to_dict())
    return result


def store(
    session: Session,
    *,
    result: ScenarioResult,
    request: Mapping[str, Any],
    model_version_id: int | None,
    actor: str,
    now: datetime,
) -> ScenarioRow:
    body = result.to_dict()  # finite: evaluate() refuses anything else
    ensure_finite(dict(request), "request")
    row = ScenarioRow(
        created_at=now,
        created_by=actor,
        description=result.description,
        model_version_id=model_version_id,
        request=dict(request),
        result=body,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        action="scenario_evaluated",
        actor=actor,
        at=now,
        subject_type="scenario",
        subject_id=row.id,
        payload={"description": result.description, "difference": result.difference.to_dict()},
    )
    return row
