"""The monitor with the real model: a fitted MMM's posterior predictive is the promised band.

Slow (a small SVI fit on four months of sandbox history): run by ``make test-all``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from loop_fixtures import D0, approved_request, load, loop, policy, scenario

from agents.execute import execute_request
from agents.forecast import model_predictor
from agents.monitor import monitor_day
from agents.retrain import encode_model
from agents.runtime import Runtime
from budgetloop.config import Settings
from budgetloop.db.session import make_engine, session_scope
from budgetloop.store import metrics as metrics_store
from budgetloop.store import models as model_store
from models.data import from_frame
from models.fit import fit


@pytest.mark.slow
def test_the_real_model_band_catches_a_shock_and_triggers_the_rollback(sqlite_url: str) -> None:
    pol = policy()
    sc = scenario(shock=("search", D0 + timedelta(days=1), 0.05), history_days=120)
    with loop(sqlite_url, sc) as world:
        with session_scope(world.sessions) as session:
            end = D0 - timedelta(days=1)
            start = sc.start
            channels = metrics_store.channels(session)
            table = metrics_store.daily_table(session, start=start, end=end, channel_names=channels)
            data = from_frame(table, target="revenue", date="date", channels=channels, source="daily_metrics")
            fm = fit(data, method="svi", svi_steps=1500, samples=200, seed=1)
            version = model_store.save_candidate(
                session,
                artifact=encode_model(fm),
                data_start=start,
                data_end=end,
                method="svi",
                healthy=True,
                fingerprint=data.fingerprint(),
                diagnostics=fm.diagnostics.to_dict(),
                summary={},
                now=world.clock.now(),
            )
            version_id = version.id
        rid = approved_request(world, {"search": 4400.0, "social": 5600.0}, model_version_id=version_id)
        report = execute_request(
            world.sessions, change_request_id=rid, connectors=world.connectors, policy=pol, clock=world.clock
        )
        assert report.outcome == "executed", report.reason
        engine = make_engine(world.database_url)
        rt = Runtime(
            engine=engine,
            clock=world.clock,
            connectors=world.connectors,
            settings=Settings(database_url=world.database_url),
            policy_source=lambda _s: (None, pol),
        )
        predictor = model_predictor(rt)
        world.next_day()
        seen = []
        for _ in range(3):
            day = world.next_day()
            (reading,) = monitor_day(
                world.sessions,
                day=day,
                clock=world.clock,
                predictor=predictor,
                policy=pol,
                connectors=world.connectors,
            )
            assert reading.band_low is not None and reading.band_high is not None
            assert reading.band_low < reading.forecast_mean < reading.band_high  # type: ignore[operator]
            seen.append((reading.outcome, reading.action, reading.realised, reading.band_low))
        engine.dispose()
        assert [s[:2] for s in seen] == [("fail", "none"), ("fail", "none"), ("fail", "rollback")], seen
        assert load(world, rid).status == "rolled_back"
