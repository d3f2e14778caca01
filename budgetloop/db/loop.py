"""The loop's records: model versions, change requests and their items, approvals, monitoring readings,
campaign locks, scenarios, calibration points and planner runs.

A change request's ``status`` changes only through :mod:`budgetloop.store.change_requests`, which goes
through :mod:`budgetloop.lifecycle` and writes the audit entry in the same transaction.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from budgetloop.db.base import Base


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    data_start: Mapped[date] = mapped_column(Date, nullable=False)
    data_end: Mapped[date] = mapped_column(Date, nullable=False)
    method: Mapped[str] = mapped_column(String(16), nullable=False)  # nuts | svi
    status: Mapped[str] = mapped_column(
        String(16), nullable=False
    )  # candidate | promoted | rejected | retired
    healthy: Mapped[bool] = mapped_column(Boolean, nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    diagnostics: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    summary: Mapped[dict[str, Any]] = mapped_column(nullable=False)  # roi / mroas per channel, holdout
    reason: Mapped[str | None] = mapped_column(Text)  # why promoted or not
    artifact: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # serialised FittedModel

    __table_args__ = (Index("ix_model_versions_status", "status"),)


class ChangeRequest(Base):
    __tablename__ = "change_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(
        String(24), nullable=False
    )  # reallocation | rollback | experiment | experiment_end
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)
    requested_by: Mapped[str] = mapped_column(String(200), nullable=False)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    policy_version: Mapped[int | None] = mapped_column(Integer)
    objective: Mapped[str] = mapped_column(String(24), nullable=False)
    summary: Mapped[str] = mapped_column(Text, nullable=False)
    # expected effect per day, in currency units, from posterior draws
    expected_gain: Mapped[float] = mapped_column(Float, nullable=False)
    gain_p05: Mapped[float] = mapped_column(Float, nullable=False)
    gain_p95: Mapped[float] = mapped_column(Float, nullable=False)
    probability_of_improvement: Mapped[float] = mapped_column(Float, nullable=False)
    relative_move: Mapped[float] = mapped_column(Float, nullable=False)  # sum |delta| / sum before
    verdicts: Mapped[list[Any]] = mapped_column(nullable=False)
    monitoring_plan: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(nullable=False)  # forecast, mROAS, anything else
    rolls_back_id: Mapped[int | None] = mapped_column(ForeignKey("change_requests.id"))
    expires_at: Mapped[datetime | None] = mapped_column()
    executed_at: Mapped[datetime | None] = mapped_column()
    decided_at: Mapped[datetime | None] = mapped_column()
    decided_by: Mapped[str | None] = mapped_column(String(400))
    status_reason: Mapped[str | None] = mapped_column(Text)
    slack_channel: Mapped[str | None] = mapped_column(String(100))
    slack_ts: Mapped[str | None] = mapped_column(String(64))

    items: Mapped[list[ChangeRequestItem]] = relationship(
        back_populates="change_request", order_by="ChangeRequestItem.id", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_change_requests_status", "status"),)


class ChangeRequestItem(Base):
    """One campaign's budget move inside a request; ``idempotency_key`` is unique per campaign change."""

    __tablename__ = "change_request_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    change_request_id: Mapped[int] = mapped_column(ForeignKey("change_requests.id"), nullable=False)
    channel: Mapped[str] = mapped_column(String(200), nullable=False)
    platform: Mapped[str] = mapped_column(String(32), nullable=False)
    campaign_external_id: Mapped[str] = mapped_column(String(200), nullable=False)
    before: Mapped[float] = mapped_column(Float, nullable=False)
    after: Mapped[float] = mapped_column(Float, nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    state: Mapped[str] = mapped_column(
        String(16), nullable=False, default="pending"
    )  # pending | applied | failed | compensated
    applied_at: Mapped[datetime | None] = mapped_column()
    platform_response: Mapped[dict[str, Any] | None] = mapped_column()

    change_request: Mapped[ChangeRequest] = relationship(back_populates="items")

    @property
    def delta(self) -> float:
        return round(self.after - self.before, 2)

    @property
    def pct(self) -> float:
        return 0.0 if self.before == 0 else (self.after - self.before) / self.before


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    change_request_id: Mapped[int] = mapped_column(ForeignKey("change_requests.id"), nullable=False)
    approver: Mapped[str] = mapped_column(String(200), nullable=False)
    decision: Mapped[str] = mapped_column(String(16), nullable=False)  # approve | reject
    at: Mapped[datetime] = mapped_column(nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # slack | rest | auto
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("change_request_id", "approver"),)


class MonitoringReading(Base):
    __tablename__ = "monitoring_readings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    change_request_id: Mapped[int] = mapped_column(ForeignKey("change_requests.id"), nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)  # pass | fail | inconclusive
    realised: Mapped[float | None] = mapped_column(Float)
    forecast_mean: Mapped[float | None] = mapped_column(Float)
    band_low: Mapped[float | None] = mapped_column(Float)
    band_high: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(nullable=False)

    __table_args__ = (UniqueConstraint("change_request_id", "day"),)


class CampaignLock(Base):
    """One open request per campaign: the row exists while the request is open."""

    __tablename__ = "campaign_locks"

    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    change_request_id: Mapped[int] = mapped_column(ForeignKey("change_requests.id"), nullable=False)
    acquired_at: Mapped[datetime] = mapped_column(nullable=False)


class Scenario(Base):
    __tablename__ = "scenarios"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    request: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    result: Mapped[dict[str, Any]] = mapped_column(nullable=False)


class CalibrationPoint(Base):
    """A lift-test result the next retrain uses (INTERFACES section 2 columns)."""

    __tablename__ = "calibration_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    channel: Mapped[str] = mapped_column(String(200), nullable=False)
    start: Mapped[date] = mapped_column(Date, nullable=False)
    end: Mapped[date] = mapped_column(Date, nullable=False)
    spend_delta: Mapped[float] = mapped_column(Float, nullable=False)
    incremental_revenue: Mapped[float] = mapped_column(Float, nullable=False)
    incremental_revenue_se: Mapped[float] = mapped_column(Float, nullable=False)
    source: Mapped[str] = mapped_column(String(200), nullable=False)  # experiment:<id> | manual
    details: Mapped[dict[str, Any]] = mapped_column(nullable=False)


class PlannerRun(Base):
    """Every planning run, proposing or not, with the reason."""

    __tablename__ = "planner_runs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(nullable=False)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    proposed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    change_request_id: Mapped[int | None] = mapped_column(ForeignKey("change_requests.id"))
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(nullable=False)
