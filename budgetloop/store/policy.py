"""Policy versions: record every submitted policy, serve the last valid one.

An invalid policy is stored (so the attempt and its problems are on record) but never becomes active:
:func:`active_policy` keeps returning the last valid version, and :func:`policy_status` says so.
Each recorded version appends a ``policy_changed`` or ``policy_rejected`` audit entry in the caller's
transaction. Nothing here commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from budgetloop.clock import ensure_utc
from budgetloop.db.policy import PolicyVersion
from budgetloop.errors import InputError
from budgetloop.store import audit
from guardrails.loading import channel_names, check_policy_text, parse_policy
from guardrails.policy import Policy, Problem


@dataclass(frozen=True, slots=True)
class PolicyVersionRecord:
    version: int
    valid: bool
    sha256: str
    problems: list[str]
    author: str
    source: str
    created_at: datetime
    text: str
    active: bool  # whether this version is the active policy right after recording it


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """What a service says about its policy: the active version and the newest rejected one after it."""

    active_version: int | None
    latest_version: int | None
    rejected_after_active: list[int]

    @property
    def message(self) -> str:
        if self.active_version is None:
            return "no valid policy yet"
        if not self.rejected_after_active:
            return f"policy version {self.active_version} is active"
        newer = ", ".join(str(v) for v in self.rejected_after_active)
        return (
            f"policy version {self.active_version} is active; newer version(s) {newer} were invalid "
            "and did not take effect"
        )


def _record(row: PolicyVersion, *, active: bool) -> PolicyVersionRecord:
    return PolicyVersionRecord(
        version=row.version,
        valid=row.valid,
        sha256=row.sha256,
        problems=list(row.problems),
        author=row.author,
        source=row.source,
        created_at=row.created_at,
        text=row.text,
        active=active,
    )


def record_policy(
    session: Session, *, text: str, source: str, author: str, now: datetime
) -> PolicyVersionRecord:
    """Validate and store a policy as the next version: a valid one becomes active, an invalid one never."""
    now = ensure_utc(now, name="now")
    if not author.strip():
        raise InputError("a policy change needs an author", key="author", fix="pass who is changing it")
    policy, problems = check_policy_text(text)
    # checked even where the schema failed, so that one answer lists every problem
    uncovered = _uncovered_channels(
        session, list(policy.channels) if policy is not None else channel_names(text), text
    )
    if uncovered:
        policy, problems = None, sorted([*problems, *uncovered], key=lambda p: (p.line or 0, p.path))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    # Serialise writers on the version number: the unique constraint refuses a concurrent duplicate.
    latest = session.scalar(select(func.max(PolicyVersion.version))) or 0
    previous = active_policy_record(session)
    row = PolicyVersion(
        version=latest + 1,
        text=text,
        parsed=policy.model_dump(mode="json") if policy is not None else None,
        sha256=digest,
        valid=policy is not None,
        problems=[str(p) for p in problems],
        source=source,
        author=author,
        created_at=now,
    )
    session.add(row)
    session.flush()
    payload: dict[str, object] = {
        "version": row.version,
        "sha256": digest,
        "source": source,
        "previous_active_version": previous.version if previous is not None else None,
    }
    if policy is not None:
        payload["summary"] = policy.summary(stored_version=row.version)
        payload["file_version"] = policy.version
    else:
        payload["problems"] = row.problems
        payload["active_version_kept"] = previous.version if previous is not None else None
    audit.append(
        session,
        action="policy_changed" if policy is not None else "policy_rejected",
        actor=author,
        at=now,
        subject_type="policy",
        subject_id=row.version,
        payload=payload,
    )
    return _record(row, active=policy is not None)


def _uncovered_channels(session: Session, names: Collection[str] | None, text: str) -> list[Problem]:
    """A policy must have a rule for every channel that has campaigns: one without would leave those
    campaigns' budgets to no rule at all (``locked: true`` is how a policy keeps its hands off)."""
    from budgetloop.store.metrics import channels  # the metrics store, not this one, knows campaigns

    line = next((i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("channels:")), None)
    return [
        Problem(
            ("channels",),
            f"no entry for `{ch}`, which has campaigns",
            f"add `channels.{ch}` (with `locked: true` to leave its budgets alone)",
            line,
        )
        for ch in channels(session)
        if names is not None and ch not in names
    ]


def _active_row(session: Session) -> PolicyVersion | None:
    query = select(PolicyVersion).where(PolicyVersion.valid.is_(True)).order_by(PolicyVersion.version.desc())
    return session.scalars(query.limit(1)).first()


def active_policy_record(session: Session) -> PolicyVersionRecord | None:
    row = _active_row(session)
    return _record(row, active=True) if row is not None else None


def active_policy(session: Session) -> tuple[int, Policy]:
    """The last valid version and its policy; :class:`InputError` when none was ever valid."""
    row = _active_row(session)
    if row is None:
        raise InputError(
            "no valid guardrail policy has been recorded",
            key="policy_versions",
            fix="apply one with `budgetloop policy apply POLICY.yaml --author NAME` or PUT /api/v1/policy",
        )
    # The YAML text is the source of truth (the parsed JSON is kept for readers of the table).
    return row.version, parse_policy(row.text, source=f"policy version {row.version}")


def policy_status(session: Session) -> PolicyStatus:
    rows = session.execute(
        select(PolicyVersion.version, PolicyVersion.valid).order_by(PolicyVersion.version)
    ).all()
    active = max((v for v, ok in rows if ok), default=None)
    latest = rows[-1][0] if rows else None
    rejected = [v for v, ok in rows if not ok and (active is None or v > active)]
    return PolicyStatus(active, latest, rejected)


def list_policy_versions(session: Session, *, limit: int = 50) -> list[PolicyVersionRecord]:
    rows = session.scalars(select(PolicyVersion).order_by(PolicyVersion.version.desc()).limit(limit)).all()
    active = max((r.version for r in rows if r.valid), default=None)
    return [_record(r, active=r.version == active) for r in rows]
