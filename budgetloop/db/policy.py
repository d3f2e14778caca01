"""Versioned guardrail policies (the YAML as given, who changed it, valid or not).

Every submitted policy gets the next version number, valid or not, so the history shows rejected
attempts too. Only valid versions can become active: the active policy is the last valid version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from budgetloop.db.base import Base


class PolicyVersion(Base):
    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)  # the YAML exactly as submitted
    parsed: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)  # the validated policy, as JSON
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    valid: Mapped[bool] = mapped_column(Boolean, nullable=False)
    problems: Mapped[list[Any]] = mapped_column(nullable=False)  # one line per problem, [] when valid
    source: Mapped[str] = mapped_column(String(500), nullable=False)
    author: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)

    __table_args__ = (Index("ix_policy_versions_valid_version", "valid", "version"),)
