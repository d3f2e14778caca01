"""`POST /api/v1/scenarios` end to end: a real (small, quick) fit promoted in the database, then a what-if."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from budgetloop.clock import SimulatedClock
from budgetloop.db.loop import Scenario
from budgetloop.db.session import session_scope
from budgetloop.store import models as model_store
from tests.service.conftest import auth


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_scenario_is_answered_from_the_promoted_model_and_stored(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    from models.fit import fit
    from models.simulate import simulate

    data, _ = simulate(periods=52, channels=2, seed=1, noise=0.05, variation=0.6, media_share=0.3)
    fm = fit(data, method="svi", svi_steps=300, samples=50, seed=0, chains=1, warmup=1)
    version_id = _save_and_promote(engine, clock, fm, data, date(2024, 1, 1), date(2024, 12, 31))
    h = auth(role_tokens["finance"])
    created = api.post("/api/v1/scenarios", json={"moves": ["ch0->ch1:0.2"], "weeks": 4}, headers=h)
    assert created.status_code == 201, created.text
    body = created.json()
    result = body["result"]
    budgets = result["budgets"]
    assert budgets["scenario"]["ch0"] == pytest.approx(budgets["current"]["ch0"] * 0.8, abs=0.01)
    assert sum(budgets["scenario"].values()) == pytest.approx(sum(budgets["current"].values()), abs=0.02)
    band = result["revenue"]["difference"]
    assert band["p05"] <= band["mean"] <= band["p95"] and 0 <= result["revenue"]["probability_better"] <= 1
    assert body["created_by"] == "finance" and body["model_version_id"] == version_id
    assert api.get(f"/api/v1/scenarios/{body['id']}", headers=h).json() == body


def _promote_small_model(engine: Engine, clock: SimulatedClock) -> int:
    from models.fit import fit
    from models.simulate import simulate

    data, _ = simulate(periods=52, channels=2, seed=1, noise=0.05, variation=0.6, media_share=0.3)
    fm = fit(data, method="svi", svi_steps=200, samples=40, seed=0, chains=1, warmup=1)
    # a Hill shape below 1 in half the draws: the curve's derivative at zero spend is infinite there
    shape = np.array(fm.draws["shape"], dtype=float)
    shape[: len(shape) // 2, 0] = 0.6
    fm.draws["shape"] = shape
    first, last = (date.fromisoformat(str(d)[:10]) for d in (data.dates[0], data.dates[-1]))
    return _save_and_promote(engine, clock, fm, data, first, last)


def _save_and_promote(
    engine: Engine, clock: SimulatedClock, fm: Any, data: Any, data_start: date, data_end: date
) -> int:
    from agents.retrain import encode_model

    with session_scope(engine) as s:
        version = model_store.save_candidate(
            s,
            artifact=encode_model(fm),
            data_start=data_start,
            data_end=data_end,
            method="svi",
            healthy=True,
            fingerprint=data.fingerprint(),
            diagnostics={},
            summary={},
            now=clock.now(),
        )
        model_store.promote(s, model_version_id=version.id, reason="test", now=clock.now())
        return int(version.id)


@pytest.mark.slow
@pytest.mark.parametrize(
    "database_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_zero_spend_and_wrong_specs(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    _promote_small_model(engine, clock)
    h = auth(role_tokens["finance"])
    # a channel at zero: a finite mROAS (a finite difference), stored on PostgreSQL too
    zero = api.post("/api/v1/scenarios", json={"budgets": {"ch0": 0}, "weeks": 1}, headers=h)
    assert zero.status_code == 201, zero.text
    band = zero.json()["result"]["mroas"]["ch0"]["scenario"]
    assert all(math.isfinite(band[k]) for k in ("mean", "p05", "p95"))
    for body, field, words in [
        ({"moves": ["ch0->ch1:0.1"], "start": "2099-01-01"}, "start", "start between"),
        ({"moves": ["ch0->ch1:0.1"], "start": "1990-01-01"}, "start", "start between"),
        ({"budgets": {"nope": 100}}, "budgets", "unknown channel 'nope'"),
        ({"moves": ["ch0->ch0:0.2"]}, "moves", "same source and target"),
        ({"moves": ["ch0->ch1:0.7", "ch0->ch1:0.7"]}, "moves", "add up to 1.4"),
        ({"moves": ["ch0->ch1:-0.2"]}, "moves", "the share must be > 0"),
        ({"budgets": {"ch0": -100}}, "budgets", ">= 0"),
        ({"current": {"vid": 1}, "moves": ["ch0->ch1:0.1"]}, "current", "unknown channel 'vid'"),
    ]:
        answer = api.post("/api/v1/scenarios", json=body, headers=h)
        assert answer.status_code == 422, (body, answer.text)
        detail = answer.json()["detail"][0]
        assert detail["loc"] == ["body", field] and words in detail["msg"], (body, detail)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Scenario)) == 1
