"""The monitor's forecast: the promised band for a day's revenue, from the request's own model version.

For a request planned on model version ``v``, the forecast of day ``d`` is the posterior predictive of
``v`` over the ``WINDOW_DAYS`` ending on ``d``, given the spend the platforms actually delivered (so
adstock carries over), read at ``d``: mean and the central ``band`` interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import numpy as np

from agents.plan import load_model
from agents.runtime import Runtime
from budgetloop.db.loop import ChangeRequest
from budgetloop.store import metrics as metrics_store
from budgetloop.store import models as model_store

# The forecast reads a fixed window of actual spend ending on the day: long enough for adstock to
# carry over (its weight after 8 weeks is negligible at any decay we fit), and always the same length,
# so the compiled prediction is reused day after day instead of compiled for each new horizon.
WINDOW_DAYS = 56


def model_predictor(rt: Runtime):  # type: ignore[no-untyped-def]
    """A ``Predictor`` for :func:`agents.monitor.monitor_day` backed by the stored model versions."""

    def predict(cr: ChangeRequest, day: date, spend: Mapping[str, float]) -> tuple[float, float, float]:
        band = float((cr.monitoring_plan or {}).get("band", 0.9))
        with rt.unit_of_work() as session:
            if cr.model_version_id is None:
                raise LookupError(f"change request {cr.id} names no model version")
            version = model_store.get(session, model_version_id=cr.model_version_id)
            if version is None:
                raise LookupError(f"model version {cr.model_version_id} is gone")
            fm = load_model(rt, version)
            if fm.data.frequency != "day":
                raise ValueError(
                    f"model version {version.id} is {fm.data.frequency}ly; the monitor needs a daily one"
                )
            start = day - timedelta(days=WINDOW_DAYS - 1)
            table = metrics_store.daily_table(
                session, start=start, end=day, channel_names=list(fm.channels), allow_gaps=True
            )
        spend_matrix = np.array(table[list(fm.channels)].to_numpy(dtype=float))  # writable copy (pandas CoW)
        spend_matrix[-1] = [float(spend.get(c, spend_matrix[-1][i])) for i, c in enumerate(fm.channels)]
        dates = table["date"].to_numpy().astype("datetime64[D]")
        draws = fm.predict(spend_matrix, None, dates, seed=int(day.toordinal()))[:, -1]
        lo, hi = np.quantile(draws, [(1 - band) / 2, 1 - (1 - band) / 2])
        return float(draws.mean()), float(lo), float(hi)

    return predict
