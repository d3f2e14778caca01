"""``/reconciliation``: per executed change in a quarter, spend before/after and expected vs realised effect.

Windows are ``window_days`` calendar days before the execution day and from it on. The realised effect
is read two ways: the naive difference in mean daily revenue (after minus before, which also carries
seasonality and every other change), and the monitor's mean of realised minus forecast over the days it
checked (the model's view). Both are shown beside the expected effect and its 90% band.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from budgetloop.db.loop import ChangeRequest, ChangeRequestItem, MonitoringReading
from budgetloop.db.metrics import Campaign, DailyMetric, DailyRevenue
from service.deps import READERS, SessionDep, allow
from service.schemas import ReconciliationPublic

router = APIRouter(prefix="/reconciliation", tags=["finance"])

_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")


def quarter_bounds(quarter: str) -> tuple[date, date]:
    """``2026Q1`` -> (2026-01-01, 2026-04-01): start inclusive, end exclusive."""
    match = _QUARTER.match(quarter)
    if match is None:
        raise ValueError(f"quarter {quarter!r} is not like 2026Q1")
    year, q = int(match.group(1)), int(match.group(2))
    start = date(year, 3 * (q - 1) + 1, 1)
    end = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    return start, end


def _spend(session: Session, item: ChangeRequestItem, start: date, end: date) -> float:
    total = session.execute(
        select(func.coalesce(func.sum(DailyMetric.spend), 0))
        .join(Campaign, Campaign.id == DailyMetric.campaign_id)
        .where(
            Campaign.platform == item.platform,
            Campaign.external_id == item.campaign_external_id,
            DailyMetric.day >= start,
            DailyMetric.day < end,
        )
    ).scalar_one()
    return round(float(total), 2)


def _revenue_per_day(session: Session, start: date, end: date) -> float | None:
    mean = session.execute(
        select(func.avg(DailyRevenue.revenue)).where(DailyRevenue.day >= start, DailyRevenue.day < end)
    ).scalar_one()
    return None if mean is None else round(float(mean), 2)


def reconcile(session: Session, *, quarter: str, window_days: int) -> dict[str, Any]:
    start, end = quarter_bounds(quarter)
    lo = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    hi = datetime.combine(end, datetime.min.time(), tzinfo=UTC)
    changes = session.execute(
        select(ChangeRequest)
        .where(
            ChangeRequest.executed_at.is_not(None),
            ChangeRequest.executed_at >= lo,
            ChangeRequest.executed_at < hi,
        )
        .order_by(ChangeRequest.executed_at)
    ).scalars()
    rows: list[dict[str, Any]] = []
    window = timedelta(days=window_days)
    for cr in changes:
        assert cr.executed_at is not None
        day = cr.executed_at.date()
        items = [
            {
                "channel": i.channel,
                "budget_before": i.before,
                "budget_after": i.after,
                "spend_before": _spend(session, i, day - window, day),
                "spend_after": _spend(session, i, day, day + window),
            }
            for i in cr.items
        ]
        before = _revenue_per_day(session, day - window, day)
        after = _revenue_per_day(session, day, day + window)
        readings = list(
            session.execute(
                select(MonitoringReading).where(MonitoringReading.change_request_id == cr.id)
            ).scalars()
        )
        counts = {k: sum(1 for r in readings if r.outcome == k) for k in ("pass", "fail", "inconclusive")}
        gaps = [
            r.realised - r.forecast_mean
            for r in readings
            if r.realised is not None and r.forecast_mean is not None and r.outcome != "inconclusive"
        ]
        rows.append(
            {
                "change_request_id": cr.id,
                "kind": cr.kind,
                "status": cr.status,
                "executed_at": cr.executed_at,
                "window_days": window_days,
                "items": items,
                "revenue_before_per_day": before,
                "revenue_after_per_day": after,
                "realised_effect_per_day": None
                if before is None or after is None
                else round(after - before, 2),
                "expected_effect_per_day": round(cr.expected_gain, 2),
                "expected_p05": round(cr.gain_p05, 2),
                "expected_p95": round(cr.gain_p95, 2),
                "monitoring": counts,
                "realised_minus_forecast_per_day": round(sum(gaps) / len(gaps), 2) if gaps else None,
            }
        )
    realised = [r["realised_effect_per_day"] for r in rows if r["realised_effect_per_day"] is not None]
    return {
        "quarter": quarter,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "changes": rows,
        "spend_before_total": round(sum(i["spend_before"] for r in rows for i in r["items"]), 2),
        "spend_after_total": round(sum(i["spend_after"] for r in rows for i in r["items"]), 2),
        "expected_effect_per_day_total": round(sum(r["expected_effect_per_day"] for r in rows), 2),
        "realised_effect_per_day_total": round(sum(realised), 2) if realised else None,
    }


@router.get(
    "",
    response_model=ReconciliationPublic,
    summary="Each change executed in the quarter: spend before/after, expected vs realised effect",
    **allow(*READERS),
)
def get_reconciliation(
    session: SessionDep,
    quarter: Annotated[str, Query(pattern=r"^\d{4}Q[1-4]$", examples=["2026Q1"])],
    window_days: Annotated[int, Query(ge=1, le=92)] = 7,
) -> Any:
    try:
        return reconcile(session, quarter=quarter, window_days=window_days)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
