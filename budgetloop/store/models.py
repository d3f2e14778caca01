"""Model versions: store each fit with its diagnostics, promote only healthy ones, load the promoted one.

The artifact is the serialised :class:`models.fit.FittedModel` (bytes, from ``models.serialize``); this
module does not interpret it, so the store stays independent of the model's internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from budgetloop.clock import ensure_utc
from budgetloop.db.loop import ModelVersion
from budgetloop.store import audit


def save_candidate(
    session: Session,
    *,
    artifact: bytes,
    data_start: date,
    data_end: date,
    method: str,
    healthy: bool,
    fingerprint: str,
    diagnostics: Mapping[str, Any],
    summary: Mapping[str, Any],
    now: datetime,
    actor: str = "retrain",
) -> ModelVersion:
    version = ModelVersion(
        created_at=ensure_utc(now),
        data_start=data_start,
        data_end=data_end,
        method=method,
        status="candidate",
        healthy=healthy,
        fingerprint=fingerprint,
        diagnostics=dict(diagnostics),
        summary=dict(summary),
        artifact=artifact,
    )
    session.add(version)
    session.flush()
    audit.append(
        session,
        action="model_trained",
        actor=actor,
        at=now,
        subject_type="model_version",
        subject_id=version.id,
        payload={
            "data_start": data_start,
            "data_end": data_end,
            "method": method,
            "healthy": healthy,
            "fingerprint": fingerprint,
            "diagnostics": dict(diagnostics),
        },
    )
    return version


def promoted(session: Session) -> ModelVersion | None:
    return session.execute(
        select(ModelVersion)
        .where(ModelVersion.status == "promoted")
        .order_by(ModelVersion.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def get(session: Session, *, model_version_id: int) -> ModelVersion | None:
    return session.get(ModelVersion, model_version_id)


def promote(
    session: Session, *, model_version_id: int, reason: str, now: datetime, actor: str = "retrain"
) -> None:
    """Make a candidate the promoted version (the previous one is retired), with the reason audited."""
    previous = promoted(session)
    if previous is not None and previous.id != model_version_id:
        session.execute(update(ModelVersion).where(ModelVersion.id == previous.id).values(status="retired"))
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.id == model_version_id)
        .values(status="promoted", reason=reason)
    )
    audit.append(
        session,
        action="model_promoted",
        actor=actor,
        at=now,
        subject_type="model_version",
        subject_id=model_version_id,
        payload={"reason": reason, "replaces": None if previous is None else previous.id},
    )


def reject(
    session: Session, *, model_version_id: int, reason: str, now: datetime, actor: str = "retrain"
) -> None:
    """Keep the old version; record why the candidate was not promoted."""
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.id == model_version_id)
        .values(status="rejected", reason=reason)
    )
    audit.append(
        session,
        action="model_rejected",
        actor=actor,
        at=now,
        subject_type="model_version",
        subject_id=model_version_id,
        payload={"reason": reason},
    )


def list_versions(session: Session, *, limit: int = 100) -> list[ModelVersion]:
    return list(session.execute(select(ModelVersion).order_by(ModelVersion.id.desc()).limit(limit)).scalars())
