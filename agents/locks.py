"""Job claims: one (job, scheduled_for) runs once, however many schedulers fire it.

A claim is a ``job_locks`` row keyed by (job, scheduled_for). The primary key makes the first insert
win; a second replica that fires the same run finds the row and stands aside. The row moves
``running`` -> ``retry`` (a failed attempt that will be tried again) -> ``done``.

A holder can die mid-run (SIGKILL, a lost machine), leaving a ``running`` row behind. Whether it is
safe to take that run over is decided differently per engine:

* **PostgreSQL**: every claim also holds a session-level advisory lock on a key derived from
  (job, scheduled_for), on a connection kept open for the whole run. The server releases it when the
  holder's connection closes, dead process included. So whoever gets the advisory lock and finds a
  ``running`` row knows its holder is gone and takes the run over (the attempt count goes up).
* **SQLite** (one machine by construction): a ``running`` row whose owner is a process on this host
  that no longer exists is taken over; one from another host is left alone.

Owners are ``host:pid:token`` strings (:func:`process_owner`), so the audit of who ran what survives.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from budgetloop.clock import ensure_utc
from budgetloop.db.ops import JobLock, JobRun

log = logging.getLogger(__name__)

#: Tries at recording a finished run (1, 2, 4 s apart) before leaving its claim to a later run.
RELEASE_ATTEMPTS = 4

_PROCESS_TOKEN = uuid.uuid4().hex[:8]


def process_owner(tag: str = "") -> str:
    """This process's owner id: ``host:pid:token`` (plus ``:tag`` to tell threads or replicas apart)."""
    base = f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"
    return f"{base}:{tag}" if tag else base


def advisory_key(job: str, scheduled_for: datetime) -> int:
    """A signed 64-bit key for ``pg_try_advisory_lock`` from the job and its due time."""
    digest = hashlib.sha256(f"budgetloop-job|{job}|{ensure_utc(scheduled_for).isoformat()}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _holder_alive(owner: str) -> bool:
    """Whether the process named by ``owner`` may still be running (unknown hosts count as alive)."""
    parts = owner.split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname():
        return True
    try:
        pid = int(parts[1])
    except ValueError:
        return True
    if pid == os.getpid():
        return parts[2] == _PROCESS_TOKEN  # a forked child's copy of a token is not us
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Claim:
    """A held run: release it with :func:`release` whatever happens."""

    job: str
    scheduled_for: datetime
    owner: str
    attempt: int
    took_over_from: str | None = None  # the dead holder whose run this claim resumes
    run_id: int | None = None  # its ``job_runs`` row, written in the claim's own transaction
    _conn: Connection | None = field(default=None, repr=False)  # holds the PostgreSQL advisory lock


@dataclass(frozen=True)
class Refusal:
    """Why a run was not claimed: another live holder has it, or it already ran to the end."""

    job: str
    scheduled_for: datetime
    holder: str | None
    reason: str


def try_claim(
    engine: Engine, *, job: str, scheduled_for: datetime, owner: str, now: datetime
) -> Claim | Refusal:
    """Claim the run of ``job`` due at ``scheduled_for`` for ``owner``, or say why not.

    Never blocks on another holder: a run somebody else is doing is refused at once.
    """
    scheduled_for = ensure_utc(scheduled_for, name="scheduled_for")
    now = ensure_utc(now, name="now")
    conn: Connection | None = None
    if engine.dialect.name == "postgresql":
        conn = engine.connect()
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": advisory_key(job, scheduled_for)}
        ).scalar_one()
        conn.commit()  # the lock is session-level: it outlives this transaction, not the connection
        if not got:
            conn.close()
            return Refusal(job, scheduled_for, None, "another worker is running it right now")
    try:
        try:
            outcome = _claim_row(engine, job=job, scheduled_for=scheduled_for, owner=owner, now=now)
        except IntegrityError:
            with engine.connect() as c:
                holder = c.execute(
                    select(JobLock.owner).where(JobLock.job == job, JobLock.scheduled_for == scheduled_for)
                ).scalar_one_or_none()
            outcome = Refusal(job, scheduled_for, holder, f"claimed first by {holder}")
    except BaseException:
        _drop(conn, job, scheduled_for)
        raise
    if isinstance(outcome, Refusal):
        _drop(conn, job, scheduled_for)
        return outcome
    outcome._conn = conn
    return outcome


def _claim_row(
    engine: Engine, *, job: str, scheduled_for: datetime, owner: str, now: datetime
) -> Claim | Refusal:
    key = (JobLock.job == job, JobLock.scheduled_for == scheduled_for)
    with engine.begin() as tx:
        row = tx.execute(select(JobLock.owner, JobLock.status, JobLock.attempt).where(*key)).one_or_none()
        if row is None:
            # Two claimers racing past the SELECT: the primary key lets one insert win; the other's
            # IntegrityError is turned into a refusal by the caller.
            tx.execute(
                insert(JobLock).values(
                    job=job,
                    scheduled_for=scheduled_for,
                    owner=owner,
                    status="running",
                    attempt=1,
                    acquired_at=now,
                    updated_at=now,
                )
            )
            return _started(tx, Claim(job, scheduled_for, owner, 1), now)
        holder, status, attempt = row.owner, row.status, row.attempt
        if status == "done":
            return Refusal(job, scheduled_for, holder, f"already ran to the end (by {holder})")
        took_over: str | None = None
        if status == "running":
            # On PostgreSQL we hold the advisory lock, so the recorded holder is gone; on SQLite ask the OS.
            if engine.dialect.name != "postgresql" and _holder_alive(holder):
                return Refusal(job, scheduled_for, holder, f"{holder} is running it right now")
            took_over = holder
            tx.execute(
                update(JobRun)
                .where(JobRun.job == job, JobRun.scheduled_for == scheduled_for, JobRun.status == "running")
                .values(status="failed", finished_at=now, error=f"the holder {holder} died during the run")
            )
        changed = tx.execute(
            update(JobLock)
            .where(*key, JobLock.status == status, JobLock.attempt == attempt)
            .values(owner=owner, status="running", attempt=attempt + 1, updated_at=now)
        ).rowcount
        if changed != 1:
            return Refusal(job, scheduled_for, None, "another worker claimed the retry first")
        return _started(tx, Claim(job, scheduled_for, owner, attempt + 1, took_over_from=took_over), now)


def _started(tx: Connection, claim: Claim, now: datetime) -> Claim:
    """The attempt's ``job_runs`` row (status ``running``), in the claim's transaction."""
    claim.run_id = tx.execute(
        insert(JobRun)
        .values(
            job=claim.job,
            scheduled_for=claim.scheduled_for,
            attempt=claim.attempt,
            owner=claim.owner,
            status="running",
            started_at=now,
        )
        .returning(JobRun.id)
    ).scalar_one()
    return claim


def release(
    engine: Engine, claim: Claim, *, final: bool, now: datetime, outcome: Mapping[str, Any] | None = None
) -> None:
    """End the claim: ``final`` marks the run done (ok, or failed for the last time); otherwise the row
    waits for a retry, which any scheduler may claim. ``outcome`` (status, finished_at, duration_s,
    error, summary) goes to the attempt's ``job_runs`` row in the same transaction."""
    try:
        # A database away for a while (down, or a file another process holds) must not kill the
        # worker: try again, then leave the claim `running` for a later run to take over.
        for attempt in range(RELEASE_ATTEMPTS):
            try:
                with engine.begin() as tx:
                    if outcome is not None and claim.run_id is not None:
                        tx.execute(update(JobRun).where(JobRun.id == claim.run_id).values(**outcome))
                    tx.execute(
                        update(JobLock)
                        .where(
                            JobLock.job == claim.job,
                            JobLock.scheduled_for == claim.scheduled_for,
                            JobLock.owner == claim.owner,
                        )
                        .values(status="done" if final else "retry", updated_at=ensure_utc(now))
                    )
                break
            except OperationalError as exc:
                if attempt + 1 == RELEASE_ATTEMPTS:
                    log.error(
                        "could not record %s due %s (%s): its claim is left for a later run to take over",
                        claim.job,
                        claim.scheduled_for.isoformat(),
                        str(exc).splitlines()[0],
                    )
                    break
                time.sleep(2.0**attempt)
    finally:
        _drop(claim._conn, claim.job, claim.scheduled_for)
        claim._conn = None


def _drop(conn: Connection | None, job: str, scheduled_for: datetime) -> None:
    if conn is None:
        return
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(job, scheduled_for)})
        conn.commit()
    except OperationalError as exc:
        # the session is gone (terminated, the server restarted): the server dropped its advisory
        # lock with it, so there is nothing left to release
        log.warning(
            "advisory lock of %s due %s went with its connection (%s)",
            job,
            ensure_utc(scheduled_for).isoformat(),
            str(exc).splitlines()[0],
        )
    finally:
        conn.close()
