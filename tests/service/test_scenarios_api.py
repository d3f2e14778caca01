"""`POST /api/v1/scenarios` end to end: a real (small, quick) fit promoted in the database, then a what-if."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from sqlalchemy import Engine

from budgetloop.clock import SimulatedClock
from budgetloop.db.session import session_scope
from budgetloop.store import models as model_store
from tests.service.conftest import auth


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_scenario_is_answered_from_the_promoted_model_and_stored(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    from agents.retrain import encode_model
    from models.fit import fit
    from models.simulate import simulate

    data, _ = simulate(periods=52, channels=2, seed=1, noise=0.05, variation=0.6, media_share=0.3)
    fm = fit(data, method="svi", svi_steps=300, samples=50, seed=0, chains=1, warmup=1)
    with session_scope(engine) as s:
        version = model_store.save_candidate(
            s,
            artifact=encode_model(fm),
            data_start=date(2024, 1, 1),
            data_end=date(2024, 12, 31),
            method="svi",
            healthy=True,
            fingerprint=data.fingerprint(),
            diagnostics={},
            summary={},
            now=clock.now(),
        )
        model_store.promote(s, model_version_id=version.id, reason="test", now=clock.now())
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
    assert body["created_by"] == "finance" and body["model_version_id"] == version.id
    assert api.get(f"/api/v1/scenarios/{body['id']}", headers=h).json() == body
