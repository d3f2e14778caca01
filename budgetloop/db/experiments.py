"""Incrementality experiments: the regional panel they are read from, and the experiments themselves.

``regional_revenue`` and ``regional_spend`` are clean tables (one row per day and region, and per day,
region and channel), landed by :mod:`agents.experiments.regional` from the store's and the platforms'
per-region reports. An :class:`Experiment` ties a geo holdout to its two change requests (``experiment``
starts it, ``experiment_end`` restores the regions), the model version that planned it, the analysis
result and the calibration point it became.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from budgetloop.db.base import Base


class RegionalRevenue(Base):
    __tablename__ = "regional_revenue"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    region: Mapped[str] = mapped_column(String(100), primary_key=True)
    revenue: Mapped[float] = mapped_column(Float, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    pulled_at: Mapped[datetime] = mapped_column(nullable=False)


class RegionalSpend(Base):
    __tablename__ = "regional_spend"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    region: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    spend: Mapped[float] = mapped_column(Float, nullable=False)
    pulled_at: Mapped[datetime] = mapped_column(nullable=False)


class Experiment(Base):
    """One geo holdout. ``status``: proposed -> running -> analysed | failed | cancelled."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)
    channel: Mapped[str] = mapped_column(String(200), nullable=False)
    platform: Mapped[str] = mapped_column(String(32), nullable=False)
    regions: Mapped[list[Any]] = mapped_column(nullable=False)  # the held-out regions
    holdout_share: Mapped[float] = mapped_column(Float, nullable=False)  # of the channel's spend
    start: Mapped[date] = mapped_column(Date, nullable=False)
    end: Mapped[date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    change_request_id: Mapped[int] = mapped_column(ForeignKey("change_requests.id"), nullable=False)
    end_request_id: Mapped[int | None] = mapped_column(ForeignKey("change_requests.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    roi_before: Mapped[float | None] = mapped_column(Float)
    after_model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    roi_after: Mapped[float | None] = mapped_column(Float)
    calibration_point_id: Mapped[int | None] = mapped_column(ForeignKey("calibration_points.id"))
    design: Mapped[dict[str, Any]] = mapped_column(nullable=False)  # power analysis, candidates
    result: Mapped[dict[str, Any] | None] = mapped_column()  # the analysis, once read
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_experiments_status", "status"),)
