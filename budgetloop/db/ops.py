"""Scheduled job runs and job locks (the APScheduler job store creates its own ``apscheduler_jobs`` table).

``job_locks`` holds one row per (job, scheduled_for): the claim that makes a scheduled run happen once
however many replicas fire it. ``status`` moves ``running`` -> ``retry`` (between attempts) -> ``done``.
On PostgreSQL the claim is also guarded by a session-level advisory lock held for the whole run, which
the server releases when the holder's connection dies, so a killed worker's half-done run can be taken
over by the next one (see :mod:`agents.locks`).

``job_runs`` records every attempt, including the ones skipped because another holder had the lock:
what ran, when it was due, when it started and finished, how it ended and its JSON summary or error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from budgetloop.db.base import Base

JOB_RUN_STATUSES = ("running", "ok", "failed", "skipped_locked")
LOCK_STATUSES = ("running", "retry", "done")


class JobLock(Base):
    __tablename__ = "job_locks"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    scheduled_for: Mapped[datetime] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), nullable=False)  # host:pid:token of the holder
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # running | retry | done
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    acquired_at: Mapped[datetime] = mapped_column(nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)


class JobRun(Base):
    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job: Mapped[str] = mapped_column(String(64), nullable=False)
    scheduled_for: Mapped[datetime] = mapped_column(nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    owner: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # running | ok | failed | skipped_locked
    started_at: Mapped[datetime] = mapped_column(nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column()
    duration_s: Mapped[float | None] = mapped_column(Float)  # wall seconds the attempt took
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column()

    __table_args__ = (
        Index("ix_job_runs_job_scheduled", "job", "scheduled_for"),
        Index("ix_job_runs_status", "status"),
    )
