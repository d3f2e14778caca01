"""What-if scenarios: "what if we move 10% of social into retail media for 8 weeks?"

A scenario is the current daily budgets plus a list of moves (a share of one channel's budget into
another) or explicit budgets, held for a horizon. From the fitted model's posterior it answers, for
the current plan and for the scenario: the revenue over the horizon (posterior predictive mean and a
90% band), the difference with its band and the probability that the scenario does better, and each
channel's mROAS at the scenario's budgets with its band. Scenarios are stored so later decisions can
refer to them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from budgetloop.db.loop import Scenario as ScenarioRow
from budgetloop.errors import InputError
from budgetloop.store import audit
from models.curves import ResponseCurves
from models.fitted import FittedModel

_MOVE = re.compile(r"^\s*(?P<src>[^-:>]+?)\s*->\s*(?P<dst>[^:]+?)\s*:\s*(?P<share>[0-9.]+%?)\s*$")


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
        share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        if not 0 < share <= 1:
            raise InputError(
                f"share {raw} is not in (0, 1]", key="--move", fix="use a share such as 0.10 or 10%"
            )
        return cls(m["src"].strip(), m["dst"].strip(), share)


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
    mroas_current: dict[str, Band]
    mroas_scenario: dict[str, Band]
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
                    "current": self.mroas_current[ch].to_dict(),
                    "scenario": self.mroas_scenario[ch].to_dict(),
                }
                for ch in self.current
            },
            "notes": self.notes,
        }


def recent_daily_budgets(fm: FittedModel) -> dict[str, float]:
    """The current plan when none is given: each channel's average daily spend over the model's last week."""
    per_period = 7 if fm.data.frequency == "week" else 1
    tail = fm.data.spend[-max(1, 7 // per_period) :]
    return {c: round(float(tail[:, i].mean()) / per_period, 2) for i, c in enumerate(fm.channels)}


def apply_moves(current: Mapping[str, float], moves: Sequence[Move]) -> dict[str, float]:
    budgets = {k: float(v) for k, v in current.items()}
    for mv in moves:
        for name in (mv.source, mv.target):
            if name not in budgets:
                raise InputError(
                    f"unknown channel {name!r}", key="--move", fix=f"use one of {sorted(budgets)}"
                )
        amount = round(budgets[mv.source] * mv.share, 2)
        budgets[mv.source] = round(budgets[mv.source] - amount, 2)
        budgets[mv.target] = round(budgets[mv.target] + amount, 2)
    return budgets


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
    missing = [c for c in channels if c not in current or c not in scenario]
    if missing:
        raise InputError(f"no budget for channel(s) {missing}", key="budgets", fix=f"give all of {channels}")
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
    m_cur = curves.mroas(cur[0])
    m_new = curves.mroas(new[0])
    notes = []
    if controls is not None:
        notes.append("control variables held at their historical mean over the horizon")
    return ScenarioResult(
        description=description,
        start=start,
        days=days,
        current={c: float(current[c]) for c in channels},
        scenario={c: float(scenario[c]) for c in channels},
        revenue_current=Band.of(rev_cur),
        revenue_scenario=Band.of(rev_new),
        difference=Band.of(rev_new - rev_cur),
        probability_better=float(np.mean(rev_new > rev_cur)),
        mroas_current={c: Band.of(m_cur[:, i]) for i, c in enumerate(channels)},
        mroas_scenario={c: Band.of(m_new[:, i]) for i, c in enumerate(channels)},
        notes=notes,
    )


def store(
    session: Session,
    *,
    result: ScenarioResult,
    request: Mapping[str, Any],
    model_version_id: int | None,
    actor: str,
    now: datetime,
) -> ScenarioRow:
    row = ScenarioRow(
        created_at=now,
        created_by=actor,
        description=result.description,
        model_version_id=model_version_id,
        request=dict(request),
        result=result.to_dict(),
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
