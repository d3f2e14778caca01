"""Experiments and the regional panel: land per-region rows, read the panel, record experiments.

Every state change of an experiment appends an audit entry in the caller's transaction (subject
``experiment``); a calibration point is audited as ``calibration_added``. Functions never commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from budgetloop.clock import ensure_utc
from budgetloop.db.experiments import Experiment, RegionalRevenue, RegionalSpend
from budgetloop.db.loop import CalibrationPoint, ModelVersion
from budgetloop.store import audit

ACTIVE = ("proposed", "running", "ending")


def replace_regional(
    session: Session,
    *,
    start: date,
    end: date,
    revenue: Sequence[tuple[date, str, float, str]],
    spend: Sequence[tuple[date, str, str, float]],
    channels: Sequence[str],
    now: datetime,
) -> tuple[int, int]:
    """Replace ``start..end`` of the panel: revenue rows (day, region, revenue, currency) and spend rows
    (day, region, channel, spend) for ``channels``. A re-pull lands restated days as they are now."""
    now = ensure_utc(now, name="now")
    if revenue:
        session.execute(delete(RegionalRevenue).where(RegionalRevenue.day.between(start, end)))
        session.add_all(
            RegionalRevenue(day=d, region=r, revenue=float(v), currency=cur, pulled_at=now)
            for d, r, v, cur in revenue
        )
    if channels:
        session.execute(
            delete(RegionalSpend).where(
                RegionalSpend.day.between(start, end), RegionalSpend.channel.in_(list(channels))
            )
        )
        merged: dict[tuple[date, str, str], float] = {}
        for d, r, ch, v in spend:
            merged[(d, r, ch)] = merged.get((d, r, ch), 0.0) + float(v)
        session.add_all(
            RegionalSpend(day=d, region=r, channel=ch, spend=round(v, 2), pulled_at=now)
            for (d, r, ch), v in merged.items()
        )
    session.flush()
    return len(revenue), len(spend)


def last_regional_day(session: Session) -> date | None:
    return session.scalar(select(RegionalRevenue.day).order_by(RegionalRevenue.day.desc()).limit(1))


def regional_panel(
    session: Session, *, start: date, end: date
) -> tuple[tuple[date, ...], tuple[str, ...], np.ndarray]:
    """Days, regions and revenue[day, region] over ``start..end``; a missing cell is NaN."""
    rows = session.execute(
        select(RegionalRevenue.day, RegionalRevenue.region, RegionalRevenue.revenue).where(
            RegionalRevenue.day.between(start, end)
        )
    ).all()
    regions = tuple(sorted({r for _, r, _ in rows}))
    days = tuple(start + timedelta(days=k) for k in range((end - start).days + 1))
    out = np.full((len(days), len(regions)), np.nan)
    col = {r: i for i, r in enumerate(regions)}
    for d, r, v in rows:
        out[(d - start).days, col[r]] = float(v)
    return days, regions, out


def spend_rows(session: Session, *, start: date, end: date) -> list[tuple[str, str, float]]:
    """(channel, region, spend) per day summed over ``start..end``."""
    rows = session.execute(
        select(RegionalSpend.channel, RegionalSpend.region, RegionalSpend.spend).where(
            RegionalSpend.day.between(start, end)
        )
    ).all()
    return [(str(c), str(r), float(s)) for c, r, s in rows]


def create(
    session: Session,
    *,
    channel: str,
    platform: str,
    regions: Sequence[str],
    holdout_share: float,
    start: date,
    end: date,
    change_request_id: int,
    model_version_id: int | None,
    roi_before: float | None,
    design: Mapping[str, Any],
    now: datetime,
    actor: str,
) -> Experiment:
    now = ensure_utc(now, name="now")
    exp = Experiment(
        created_at=now,
        updated_at=now,
        channel=channel,
        platform=platform,
        regions=list(regions),
        holdout_share=float(holdout_share),
        start=start,
        end=end,
        status="proposed",
        change_request_id=change_request_id,
        model_version_id=model_version_id,
        roi_before=roi_before,
        design=dict(design),
    )
    session.add(exp)
    session.flush()
    audit.append(
        session,
        action="experiment_proposed",
        actor=actor,
        at=now,
        subject_type="experiment",
        subject_id=exp.id,
        channel=channel,
        payload={"change_request_id": change_request_id, **describe(exp)},
    )
    return exp


def describe(exp: Experiment) -> dict[str, Any]:
    return {
        "id": exp.id,
        "channel": exp.channel,
        "platform": exp.platform,
        "regions": list(exp.regions),
        "holdout_share": round(exp.holdout_share, 4),
        "start": exp.start.isoformat(),
        "end": exp.end.isoformat(),
        "status": exp.status,
    }


def set_status(
    session: Session,
    exp: Experiment,
    *,
    status: str,
    now: datetime,
    actor: str,
    reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
    **values: Any,
) -> Experiment:
    """Move an experiment to ``status`` (and set ``values``), audited as ``experiment_<status>``."""
    now = ensure_utc(now, name="now")
    before = exp.status
    for key, value in values.items():
        setattr(exp, key, value)
    exp.status = status
    exp.updated_at = now
    if reason is not None:
        exp.reason = reason
    session.flush()
    body: dict[str, Any] = {"from": before, "to": status, **describe(exp)}
    if reason:
        body["reason"] = reason
    body.update(payload or {})
    audit.append(
        session,
        action=f"experiment_{status}",
        actor=actor,
        at=now,
        subject_type="experiment",
        subject_id=exp.id,
        channel=exp.channel,
        payload=body,
    )
    return exp


def active(session: Session) -> list[Experiment]:
    return list(
        session.execute(
            select(Experiment).where(Experiment.status.in_(ACTIVE)).order_by(Experiment.id)
        ).scalars()
    )


def list_experiments(session: Session) -> list[Experiment]:
    return list(session.execute(select(Experiment).order_by(Experiment.id)).scalars())


def add_calibration_point(
    session: Session,
    *,
    exp: Experiment,
    spend_delta: float,
    incremental_revenue: float,
    incremental_revenue_se: float,
    details: Mapping[str, Any],
    now: datetime,
    actor: str,
) -> CalibrationPoint:
    """Store an experiment's result for the next retrain (INTERFACES section 2), audited."""
    now = ensure_utc(now, name="now")
    point = CalibrationPoint(
        created_at=now,
        channel=exp.channel,
        start=exp.start,
        end=exp.end,
        spend_delta=round(float(spend_delta), 2),
        incremental_revenue=round(float(incremental_revenue), 2),
        incremental_revenue_se=round(float(incremental_revenue_se), 2),
        source=f"experiment:{exp.id}",
        details=dict(details),
    )
    session.add(point)
    session.flush()
    audit.append(
        session,
        action="calibration_added",
        actor=actor,
        at=now,
        subject_type="calibration_point",
        subject_id=point.id,
        channel=exp.channel,
        payload={
            "experiment_id": exp.id,
            "channel": exp.channel,
            "start": exp.start.isoformat(),
            "end": exp.end.isoformat(),
            "spend_delta": point.spend_delta,
            "incremental_revenue": point.incremental_revenue,
            "incremental_revenue_se": point.incremental_revenue_se,
        },
    )
    return point


def first_version_with(session: Session, point: CalibrationPoint) -> ModelVersion | None:
    """The first model version trained after ``point`` whose window holds it (so it used the point)."""
    return session.execute(
        select(ModelVersion)
        .where(
            ModelVersion.created_at >= point.created_at,
            ModelVersion.data_start <= point.start,
            ModelVersion.data_end >= point.end,
        )
        .order_by(ModelVersion.id)
        .limit(1)
    ).scalar_one_or_none()
