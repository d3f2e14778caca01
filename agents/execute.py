"""The executor: applies an approved change request through the ad platforms, exactly once.

One run of :func:`execute_request`::

    approved ──(guardrails re-checked now, live budgets == planned `before`)──▶ executing
        │  blocked (freeze, kill switch, learning, shadow, a rule that would now clip) ──▶ failed
        │  stale (a live budget moved since planning, > 1 cent)                       ──▶ cancelled: re-plan
    executing: one item at a time, those that lower a budget first (an undo: raises undone first)
        set_budget(campaign, after, idempotency_key=item key)   ← the platform replays a key it has seen
        commit item `applied` + its audit entry                  ← its own transaction, after every call
    all applied ──▶ executed ──▶ monitoring (with the monitoring plan)
                    (a rollback: ──▶ confirmed at once, and the request it undoes ──▶ rolled_back)
    one rejected ──▶ compensate the applied part (each back to `before`, key `<key>-undo`) ──▶ failed
    one never answered (timeouts, then 5xx) ──▶ undone if the platform shows it applied, else `unknown`
        ──▶ each later run (:func:`reconcile_unknown`): landed late ──▶ put back (`<key>-late-undo`);
            still at `before` after LATE_WRITE_WINDOW ──▶ settled `failed`; the planner waits meanwhile

**Crash safety.** Everything the executor knows lives in the database, committed after each platform
call, and every call carries an idempotency key derived from the item. A run that dies anywhere leaves
the request ``executing``; the next run resumes it: items already ``applied`` are skipped, ``pending``
ones are sent again with the *same* key, so a call that reached the platform before the crash (or whose
answer timed out after the platform applied it) is answered as a replay and nothing is applied twice.
A resumed request whose items were being compensated goes on compensating. The kill switch halts a
resumed request where it stands (no call at all) until it is lifted.

**Two executors at once** (an approval's immediate run and the daily sweep, two workers): every write
is conditional on the state the run read (the request's status, each item's state), so the first
writer wins and the other run ends ``skipped``; a run that finds the request ``executing`` cannot tell
a live run from a crashed one and resumes it, its calls being replays of the other's keys.

**Rollbacks** (``kind == "rollback"``) restore budgets the policy already accepted, so at execution
time only the portfolio-wide stops (kill switch, freeze window, shadow autonomy) hold them back;
learning phases, cooldowns and swing limits, which the change being undone set off, do not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from agents.execute_guard import LiveState, known_channels, read_live, recheck
from budgetloop.clock import Clock
from budgetloop.db.audit import AuditEntry
from budgetloop.db.loop import ChangeRequest, ChangeRequestItem
from budgetloop.db.session import session_scope
from budgetloop.errors import ConnectorError, IllegalTransition, RejectedByPlatform
from budgetloop.lifecycle import Event, State
from budgetloop.store import audit
from budgetloop.store import change_requests as requests
from budgetloop.store.change_requests import ConcurrentTransition
from connectors.base import Connector
from guardrails.policy import Policy

EXPERIMENT_KINDS = frozenset({"experiment", "experiment_end"})  # geo tests: agents.experiments runs them
CENT = 0.01 + 1e-9  # budgets within a cent of each other are the same budget
Outcome = Literal["executed", "blocked", "stale", "failed", "halted", "deferred", "skipped"]
#: an item whose platform call never answered and whose budget had not moved when its request failed
UNKNOWN = "unknown"
#: how long such a call may still land (a request held in the platform's queue): well past any
#: connector's timeouts and retries; until then each execute run looks at the live budget again
LATE_WRITE_WINDOW = timedelta(hours=1)


class LostRace(RuntimeError):
    """Another executor recorded an item of this request before this run could."""


class HasPlatforms(Protocol):
    @property
    def platforms(self) -> Mapping[str, Connector]: ...


Platforms = Mapping[str, Connector] | HasPlatforms


@dataclass(frozen=True)
class ItemResult:
    idempotency_key: str
    channel: str
    platform: str
    campaign: str
    before: float
    after: float
    state: str  # pending | applied | failed | compensated
    replayed: bool | None = None
    detail: str | None = None


@dataclass(frozen=True)
class ExecutionReport:
    """What one run did. ``status`` is the request's state when the run ended."""

    change_request_id: int
    outcome: Outcome
    status: str
    reason: str | None
    items: tuple[ItemResult, ...]
    calls: int = 0  # budget writes sent to the platforms in this run (undo calls included)
    replays: int = 0  # of those, answered by the platform as replays of an earlier call

    @property
    def ok(self) -> bool:
        return self.outcome == "executed"


@dataclass(frozen=True)
class ExecutionHooks:
    """Points where a test can interrupt a run (raise, or kill the process) to prove crash safety.

    ``after_call(key)`` runs once the platform answered an item's call, before its state commits;
    ``after_commit(key)`` once the item's ``applied`` state is committed, ``after_commit(key-undo)``
    once an undone item's ``compensated`` state is, and ``after_commit(key-unknown)`` once an item
    whose call never answered is recorded ``unknown``.
    """

    after_call: Callable[[str], None] | None = None
    after_commit: Callable[[str], None] | None = None


@dataclass
class _Run:
    """Mutable bookkeeping of one run."""

    request_id: int
    actor: str
    clock: Clock
    hooks: ExecutionHooks
    calls: int = 0
    replays: int = 0
    notes: dict[str, str] = field(default_factory=dict)  # item key -> detail
    replayed: dict[str, bool] = field(default_factory=dict)


def platforms_of(connectors: Platforms) -> Mapping[str, Connector]:
    """Accept a registry ``Connectors`` (with ``.platforms``) or a plain platform -> connector mapping."""
    if isinstance(connectors, Mapping):
        return connectors
    return connectors.platforms


def execute_request(
    session_factory: sessionmaker[Session],
    *,
    change_request_id: int,
    connectors: Platforms,
    policy: Policy,
    clock: Clock,
    actor: str = "executor",
    hooks: ExecutionHooks | None = None,
) -> ExecutionReport:
    """Apply an ``approved`` request (or resume one left ``executing``) and start its monitoring.

    Never raises for a platform's refusal or an outage: the report says what happened and the request's
    state records it. Raises LookupError for an unknown id.
    """
    run = _Run(change_request_id, actor, clock, hooks or ExecutionHooks())
    try:
        return _run_request(session_factory, run, platforms_of(connectors), policy)
    except (ConcurrentTransition, IllegalTransition, LostRace) as exc:
        # Another executor (the sweep and an approval's immediate run, two workers) moved the request
        # or one of its items after we read it: it owns the rest. Every write of ours is conditional
        # on the state we read and every platform call carries the item's key, so nothing was applied
        # or recorded twice.
        return _report(session_factory, run, "skipped", f"another executor is on it: {exc}")


def _run_request(
    session_factory: sessionmaker[Session],
    run: _Run,
    platforms: Mapping[str, Connector],
    policy: Policy,
) -> ExecutionReport:
    change_request_id, actor, clock = run.request_id, run.actor, run.clock
    with session_scope(session_factory) as session:
        cr = requests.get(session, change_request_id=change_request_id)
        if cr is None:
            raise LookupError(
                f"no change request with id {change_request_id}; list them with GET /api/v1/change-requests"
            )
        status = State(cr.status)
        kind = cr.kind
        known = known_channels(session)
        known.update({(i.platform, i.campaign_external_id): i.channel for i in cr.items})
    if kind in EXPERIMENT_KINDS:
        return _report(session_factory, run, "skipped", f"a `{kind}` request is run by agents.experiments")
    if status is State.EXECUTED:  # a run died between `executed` and `monitoring`
        return _finish(session_factory, run, policy, already_executed=True)
    if status not in (State.APPROVED, State.EXECUTING):
        return _report(session_factory, run, "skipped", f"nothing to do: the request is {status.value}")

    if status is State.APPROVED:
        try:
            live = read_live(platforms, known)
        except ConnectorError as exc:
            return _report(
                session_factory, run, "deferred", f"could not read live budgets, will retry: {exc}"
            )
        # A transition below raises when another executor moved the request after we read it (it
        # started the request, and the live budgets may carry its changes): execute_request reports
        # that run as skipped, nothing of ours written.
        with session_scope(session_factory) as session:
            cr = _load(session, change_request_id)
            problems = recheck(session, cr, live=live, policy=policy, now=clock.now())
            if problems:
                reason = "blocked at execution time: " + "; ".join(problems)
                _transition(session, run, Event.BLOCK, reason=reason, payload={"problems": problems})
                return _report_in(session, run, "blocked", reason)
            stale = _stale_items(cr.items, live)
            if stale:
                reason = "stale plan, re-plan: live budgets moved since planning (" + "; ".join(stale) + ")"
                _transition(session, run, Event.CANCEL, reason=reason, payload={"stale": stale})
                return _report_in(session, run, "stale", reason)
            _transition(
                session,
                run,
                Event.START_EXECUTION,
                payload={"calls": [_plan_entry(i) for i in cr.items], "kind": kind},
            )
    else:
        if policy.kill_switch:
            return _report(
                session_factory,
                run,
                "halted",
                "the kill switch is on: the interrupted execution stays where it stopped until it is lifted",
            )
        with session_scope(session_factory) as session:
            cr = _load(session, change_request_id)
            if any(i.state in ("compensated", "failed", UNKNOWN) for i in cr.items):
                first = _compensation_reason(session, change_request_id) or "unknown"
                return _compensate(
                    session_factory, platforms, run, f"{first} (an interrupted compensation was resumed)"
                )
            try:
                live = read_live(platforms, known)
            except ConnectorError as exc:
                return _report_in(session, run, "deferred", f"could not read live budgets, will retry: {exc}")
            moved = [
                f"{i.channel} ({i.campaign_external_id}) is at {_live_budget(live, i):.2f}, "
                f"neither {i.before:.2f} nor {i.after:.2f}"
                for i in cr.items
                if i.state == "pending"
                and not (_same(_live_budget(live, i), i.before) or _same(_live_budget(live, i), i.after))
            ]
            audit.append(
                session,
                action="execution_resumed",
                actor=actor,
                at=clock.now(),
                subject_type="change_request",
                subject_id=change_request_id,
                payload={
                    "pending": [i.idempotency_key for i in cr.items if i.state == "pending"],
                    "moved": moved,
                },
            )
        if moved:
            return _compensate(
                session_factory,
                platforms,
                run,
                "budgets moved by someone else mid-execution: " + "; ".join(moved),
            )

    return _apply_pending(session_factory, platforms, run, policy)


def _apply_pending(
    session_factory: sessionmaker[Session],
    platforms: Mapping[str, Connector],
    run: _Run,
    policy: Policy,
) -> ExecutionReport:
    hooks = run.hooks
    with session_scope(session_factory) as session:
        items = _lowering_first(_ItemRef.of(i) for i in _load(session, run.request_id).items)
    for item in items:
        if item.state != "pending":
            continue
        connector = platforms.get(item.platform)
        if connector is None:
            return _compensate(
                session_factory,
                platforms,
                run,
                f"no connector for platform `{item.platform}` (item {item.key}); configure one and re-plan",
            )
        try:
            result = connector.set_budget(item.campaign, item.after, idempotency_key=item.key)
        except RejectedByPlatform as exc:
            run.calls += 1
            _record_item(
                session_factory,
                run,
                item,
                "failed",
                {"error": str(exc), "status": exc.status},
                "platform_rejected",
            )
            return _compensate(
                session_factory,
                platforms,
                run,
                f"{item.platform} rejected {item.channel} ({item.key}): {exc}",
            )
        except ConnectorError as exc:
            run.calls += 1
            run.notes[item.key] = f"outcome unknown: {exc}"
            _audit_error(session_factory, run, item, "platform_call_failed", str(exc))
            return _compensate(
                session_factory,
                platforms,
                run,
                f"{item.platform} did not answer for {item.channel} ({item.key}) after retries: {exc}",
                uncertain=item.key,
            )
        run.calls += 1
        run.replayed[item.key] = result.replayed
        run.replays += int(result.replayed)
        if hooks.after_call:
            hooks.after_call(item.key)
        response = {
            "previous_daily_budget": result.previous_daily_budget,
            "new_daily_budget": result.new_daily_budget,
            "replayed": result.replayed,
            "platform": dict(result.response),
        }
        _record_item(session_factory, run, item, "applied", response, "platform_call")
        if hooks.after_commit:
            hooks.after_commit(item.key)
    return _finish(session_factory, run, policy, already_executed=False)


@dataclass(frozen=True)
class _ItemRef:
    id: int
    key: str
    channel: str
    platform: str
    campaign: str
    before: float
    after: float
    state: str

    @classmethod
    def of(cls, i: ChangeRequestItem) -> _ItemRef:
        return cls(
            i.id, i.idempotency_key, i.channel, i.platform, i.campaign_external_id, i.before, i.after, i.state
        )


def _lowering_first(items: Iterable[_ItemRef], *, undo: bool = False) -> list[_ItemRef]:
    """The calls that lower a budget before those that raise one (for an undo, the reverse moves),
    so that the portfolio's total passes through no sum above both its ends: a reallocation at the
    daily cap never stands above the cap between two calls."""
    return sorted(items, key=lambda i: (i.after < i.before) == undo)


def _record_item(
    session_factory: sessionmaker[Session],
    run: _Run,
    item: _ItemRef,
    state: str,
    response: Mapping[str, Any],
    action: str,
) -> None:
    """One item's new state and its audit entry, committed together; only from the state this run
    read (``item.state``): an item another executor recorded first is theirs (:class:`LostRace`)."""
    now = run.clock.now()
    values: dict[str, Any] = {"state": state, "platform_response": dict(response)}
    if state == "applied":
        values["applied_at"] = now
    with session_scope(session_factory) as session:
        moved = session.execute(
            update(ChangeRequestItem)
            .where(ChangeRequestItem.id == item.id, ChangeRequestItem.state == item.state)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            raise LostRace(f"item {item.key} was recorded by another executor first")
        _audit_item(session, run, item, action, {"item_state": state, "response": dict(response)})


def _audit_item(session: Session, run: _Run, item: _ItemRef, action: str, extra: Mapping[str, Any]) -> None:
    """An audit entry about one item's platform call (sent, answered, refused, undone)."""
    audit.append(
        session,
        action=action,
        actor=run.actor,
        at=run.clock.now(),
        subject_type="change_request",
        subject_id=run.request_id,
        channel=item.channel,
        payload={
            "idempotency_key": item.key,
            "platform": item.platform,
            "campaign": item.campaign,
            "before": item.before,
            "after": item.after,
            **extra,
        },
    )


def _audit_error(
    session_factory: sessionmaker[Session], run: _Run, item: _ItemRef, action: str, error: str
) -> None:
    with session_scope(session_factory) as session:
        _audit_item(session, run, item, action, {"error": error})


def _compensate(
    session_factory: sessionmaker[Session],
    platforms: Mapping[str, Connector],
    run: _Run,
    reason: str,
    *,
    uncertain: str | None = None,
) -> ExecutionReport:
    """Undo the applied part (each item back to `before`, key ``<key>-undo``) and fail the request.

    ``uncertain``: the key of an item whose call may or may not have been applied (no answer); it is
    undone when the live budget shows it applied. An undo the platform refuses leaves its item
    ``applied`` and the failure reason says a person must restore it.
    """
    with session_scope(session_factory) as session:
        items = [_ItemRef.of(i) for i in _load(session, run.request_id).items]
        audit.append(
            session,
            action="compensating",
            actor=run.actor,
            at=run.clock.now(),
            subject_type="change_request",
            subject_id=run.request_id,
            payload={"reason": reason, "applied": [i.key for i in items if i.state == "applied"]},
        )
    live: LiveState | None = None
    if uncertain is not None:
        try:
            live = read_live(platforms)
        except ConnectorError:
            live = None  # cannot tell: undo it anyway (setting `before` again is harmless)
    left: list[str] = []
    for item in _lowering_first(items, undo=True):
        if item.state != "applied" and item.key != uncertain:
            continue
        if (
            item.key == uncertain
            and live is not None
            and _same(live.budget(item.platform, item.campaign), item.before)
        ):
            # Not applied yet, as far as the platform shows; but a call that never answered may still
            # land (it hung in the platform's queue). The item stays `unknown`, and each execute run
            # looks again until LATE_WRITE_WINDOW has passed (:func:`reconcile_unknown`).
            run.notes[item.key] = "not applied by the platform so far (live budget still at `before`)"
            _record_item(
                session_factory,
                run,
                item,
                UNKNOWN,
                {"outcome": "unknown", "since": run.clock.now().isoformat(), "live": item.before},
                "platform_outcome_unknown",
            )
            if run.hooks.after_commit:
                run.hooks.after_commit(f"{item.key}-unknown")
            continue
        undo_key = f"{item.key}-undo"[:100]
        try:
            result = _put_back(platforms, item, undo_key)
        except (ConnectorError, LookupError) as exc:
            run.calls += item.platform in platforms
            left.append(f"{item.channel} ({item.campaign}) is still at {item.after:.2f}: undo failed: {exc}")
            _audit_error(session_factory, run, item, "platform_undo_failed", f"{undo_key}: {exc}")
            continue
        run.calls += 1
        run.replays += int(result.replayed)
        response = {
            "undo_idempotency_key": undo_key,
            "previous_daily_budget": result.previous_daily_budget,
            "new_daily_budget": result.new_daily_budget,
            "replayed": result.replayed,
            "platform": dict(result.response),
        }
        _record_item(session_factory, run, item, "compensated", response, "platform_undo")
        if run.hooks.after_commit:
            run.hooks.after_commit(undo_key)
    if left:
        reason += "; COMPENSATION INCOMPLETE, restore by hand: " + "; ".join(left)
    with session_scope(session_factory) as session:
        _transition(session, run, Event.FAIL, reason=reason, payload={"not_compensated": left})
        return _report_in(session, run, "failed", reason)


def _put_back(platforms: Mapping[str, Connector], item: _ItemRef, undo_key: str) -> Any:
    """Set the item's campaign back to ``before`` under ``undo_key`` (the platform's answer);
    LookupError where no connector serves its platform."""
    connector = platforms.get(item.platform)
    if connector is None:
        raise LookupError(f"no connector for platform `{item.platform}`")
    return connector.set_budget(item.campaign, item.before, idempotency_key=undo_key)


@dataclass(frozen=True)
class Reconciled:
    """What a look at an ``unknown`` item found: ``undone`` (the call had landed late: put back),
    ``not_applied`` (still at ``before`` once the window passed), ``moved`` (someone else set the
    budget: left alone, recorded), ``undo_failed`` (landed, and putting it back failed: tried again)."""

    change_request_id: int
    key: str
    channel: str
    outcome: Literal["undone", "not_applied", "moved", "undo_failed"]
    detail: str
    first: bool = True  # False for an ``undo_failed`` already reported by an earlier run


def reconcile_unknown(
    session_factory: sessionmaker[Session],
    connectors: Platforms,
    *,
    clock: Clock,
    policy: Policy | None = None,
    actor: str = "executor",
) -> list[Reconciled]:
    """Settle the items of failed requests whose platform call never answered (state ``unknown``).

    Such a call may land after the request was failed and the rest undone: a budget raised with no
    record, which the next plan would take as its starting point. Each run of the execute job reads
    the live budgets: a campaign found at the item's ``after`` is put back to ``before`` (key
    ``<key>-late-undo``); one still at ``before`` once :data:`LATE_WRITE_WINDOW` has passed is
    settled as not applied; one at a third value was set by someone else and is left, recorded.
    Nothing is decided when the platforms cannot be read, nor written while ``policy``'s kill switch
    is on: the next run looks again.
    """
    if policy is not None and policy.kill_switch:
        return []
    platforms = platforms_of(connectors)
    with session_scope(session_factory) as session:
        rows = session.execute(
            select(ChangeRequestItem).where(ChangeRequestItem.state == UNKNOWN).order_by(ChangeRequestItem.id)
        ).scalars()
        found = [(_ItemRef.of(i), i.change_request_id, dict(i.platform_response or {})) for i in rows]
    if not found:
        return []
    try:
        live = read_live(platforms)
    except ConnectorError:
        return []
    now = clock.now()
    out: list[Reconciled] = []
    for item, request_id, response in found:
        run = _Run(request_id=request_id, actor=actor, clock=clock, hooks=ExecutionHooks())
        budget = live.budget(item.platform, item.campaign)
        since = datetime.fromisoformat(str(response.get("since", now.isoformat())))
        # once a newer request has written the campaign, its budget is that request's, whatever it is
        later = _later_change(session_factory, request_id, item)
        if later is None and _same(budget, item.after):
            undo_key = f"{item.key}-late-undo"[:100]
            try:
                result = _put_back(platforms, item, undo_key)
            except (ConnectorError, LookupError) as exc:
                _audit_error(session_factory, run, item, "platform_undo_failed", f"{undo_key}: {exc}")
                first = "late_undo_failed_at" not in response
                if first:  # the item stays unknown; its response remembers that this was said
                    with session_scope(session_factory) as session:
                        session.execute(
                            update(ChangeRequestItem)
                            .where(ChangeRequestItem.id == item.id, ChangeRequestItem.state == UNKNOWN)
                            .values(platform_response={**response, "late_undo_failed_at": now.isoformat()})
                            .execution_options(synchronize_session=False)
                        )
                detail = (
                    f"the budget call that never answered landed late, setting {item.after:.2f}; "
                    f"putting it back failed ({exc}), tried again each run"
                )
                out.append(Reconciled(request_id, item.key, item.channel, "undo_failed", detail, first))
                continue
            _record_item(
                session_factory,
                run,
                item,
                "compensated",
                {
                    **response,
                    "outcome": "landed late",
                    "undo_idempotency_key": undo_key,
                    "previous_daily_budget": result.previous_daily_budget,
                    "new_daily_budget": result.new_daily_budget,
                    "replayed": result.replayed,
                },
                "platform_late_write_undone",
            )
            detail = (
                f"the budget call that never answered landed late, setting {item.after:.2f}; "
                f"put back to {item.before:.2f}"
            )
            out.append(Reconciled(request_id, item.key, item.channel, "undone", detail))
        elif later is None and _same(budget, item.before):
            if now - since < LATE_WRITE_WINDOW:
                continue
            _record_item(
                session_factory,
                run,
                item,
                "failed",
                {**response, "outcome": "not applied", "settled_at": now.isoformat()},
                "platform_outcome_settled",
            )
            detail = (
                f"the budget call that never answered did not land in {LATE_WRITE_WINDOW} (the budget "
                f"is still {budget:.2f}): settled as not applied"
            )
            out.append(Reconciled(request_id, item.key, item.channel, "not_applied", detail))
        else:
            if later is not None:
                detail = f"change request {later} has moved the campaign since; left as it is"
            elif math.isnan(budget):
                detail = "the platform no longer lists the campaign; nothing to put back"
            else:
                detail = (
                    f"live budget {budget:.2f} is neither before ({item.before:.2f}) nor after "
                    f"({item.after:.2f}): set by someone else; left as it is"
                )
            detail = "the budget call that never answered is settled: " + detail
            _record_item(
                session_factory,
                run,
                item,
                "failed",
                {
                    **response,
                    "outcome": detail,
                    "live": None if math.isnan(budget) else budget,  # JSON has no NaN
                    "settled_at": now.isoformat(),
                },
                "platform_budget_moved",
            )
            out.append(Reconciled(request_id, item.key, item.channel, "moved", detail))
    return out


def _later_change(session_factory: sessionmaker[Session], request_id: int, item: _ItemRef) -> int | None:
    """A newer request that has written this item's campaign (an item applied or undone), if any."""
    with session_scope(session_factory) as session:
        return session.execute(
            select(ChangeRequestItem.change_request_id)
            .where(
                ChangeRequestItem.change_request_id > request_id,
                ChangeRequestItem.platform == item.platform,
                ChangeRequestItem.campaign_external_id == item.campaign,
                ChangeRequestItem.state.in_(("applied", "compensated")),
            )
            .order_by(ChangeRequestItem.change_request_id.desc())
            .limit(1)
        ).scalar_one_or_none()


def _finish(
    session_factory: sessionmaker[Session], run: _Run, policy: Policy, *, already_executed: bool
) -> ExecutionReport:
    """executing -> executed -> monitoring in one transaction (a rollback: confirmed, its target undone)."""
    with session_scope(session_factory) as session:
        cr = _load(session, run.request_id)
        if not already_executed:
            responses = [
                {"idempotency_key": i.idempotency_key, "channel": i.channel, "response": i.platform_response}
                for i in cr.items
            ]
            _transition(session, run, Event.FINISH_EXECUTION, payload={"responses": responses})
        plan = monitoring_plan(cr, policy, executed_at=cr.executed_at or run.clock.now())
        cr.monitoring_plan = plan
        _transition(session, run, Event.START_MONITORING, payload={"monitoring_plan": plan})
        if cr.kind == "rollback":
            _close_rollback(session, run, cr)
        else:  # an older watch on the same campaigns ends here: this request carries it now
            requests.supersede_monitoring(session, by=cr, now=run.clock.now(), actor=run.actor)
        return _report_in(session, run, "executed", None)


def monitoring_plan(cr: ChangeRequest, policy: Policy, *, executed_at: datetime) -> dict[str, Any]:
    """What the monitor will check: from the day after execution, the policy's band and windows.

    Values the planner already put in the request's plan win over the policy's defaults.
    """
    first = (executed_at + timedelta(days=1)).date()
    plan: dict[str, Any] = {
        "first_day": first.isoformat(),
        "band": policy.monitoring.band,
        "rollback_after_days_outside": policy.monitoring.rollback_after_days_outside,
        "evaluation_days": 0 if cr.kind == "rollback" else policy.monitoring.evaluation_days,
        "model_version_id": cr.model_version_id,
        "allocation": {i.channel: i.after for i in cr.items},
    }
    plan.update({k: v for k, v in (cr.monitoring_plan or {}).items() if k not in ("first_day", "allocation")})
    return plan


def _close_rollback(session: Session, run: _Run, rollback: ChangeRequest) -> None:
    """A rollback has nothing to evaluate: confirm it, and mark the request it undid ``rolled_back``."""
    _transition(
        session,
        run,
        Event.CONFIRM,
        reason="rollback executed: the budgets are back where they were",
        payload={"rolls_back_id": rollback.rolls_back_id},
    )
    if rollback.rolls_back_id is None:
        return
    original = session.get(ChangeRequest, rollback.rolls_back_id)
    if original is None or original.status not in (State.MONITORING.value, State.EXECUTED.value):
        return
    why = rollback.details.get("reason") if isinstance(rollback.details, dict) else None
    requests.transition(
        session,
        change_request_id=original.id,
        event=Event.ROLL_BACK,
        actor=run.actor,
        now=run.clock.now(),
        reason=str(why or f"rolled back by request {rollback.id}"),
        payload={"rollback_request_id": rollback.id},
    )


# ---- small helpers ------------------------------------------------------------------------------


def _load(session: Session, request_id: int) -> ChangeRequest:
    cr = requests.get(session, change_request_id=request_id)
    if cr is None:
        raise LookupError(f"change request {request_id} disappeared")
    return cr


def _transition(
    session: Session,
    run: _Run,
    event: Event,
    *,
    reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> ChangeRequest:
    return requests.transition(
        session,
        change_request_id=run.request_id,
        event=event,
        actor=run.actor,
        now=run.clock.now(),
        reason=reason,
        payload=payload,
    )


def _compensation_reason(session: Session, request_id: int) -> str | None:
    """Why the last compensation of this request began (from its ``compensating`` audit entry)."""
    text = session.execute(
        select(AuditEntry.payload)
        .where(AuditEntry.subject_type == "change_request", AuditEntry.subject_id == str(request_id))
        .where(AuditEntry.action == "compensating")
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    reason = json.loads(text).get("reason") if text else None
    return str(reason) if reason else None


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= CENT


def _live_budget(live: LiveState, item: ChangeRequestItem) -> float:
    return live.budget(item.platform, item.campaign_external_id)


def _stale_items(items: Sequence[ChangeRequestItem], live: LiveState) -> list[str]:
    out = []
    for i in items:
        now = _live_budget(live, i)
        if not _same(now, i.before):
            shown = "missing" if now != now else f"{now:.2f}"
            out.append(f"{i.channel} ({i.campaign_external_id}) planned from {i.before:.2f}, live {shown}")
    return out


def _plan_entry(i: ChangeRequestItem) -> dict[str, Any]:
    return {
        "idempotency_key": i.idempotency_key,
        "platform": i.platform,
        "campaign": i.campaign_external_id,
        "channel": i.channel,
        "before": i.before,
        "after": i.after,
    }


def _report(
    session_factory: sessionmaker[Session], run: _Run, outcome: Outcome, reason: str | None
) -> ExecutionReport:
    with session_scope(session_factory) as session:
        return _report_in(session, run, outcome, reason)


def _report_in(session: Session, run: _Run, outcome: Outcome, reason: str | None) -> ExecutionReport:
    session.flush()
    cr = session.execute(select(ChangeRequest).where(ChangeRequest.id == run.request_id)).scalar_one()
    session.refresh(cr)
    items = tuple(
        ItemResult(
            idempotency_key=i.idempotency_key,
            channel=i.channel,
            platform=i.platform,
            campaign=i.campaign_external_id,
            before=i.before,
            after=i.after,
            state=i.state,
            replayed=run.replayed.get(i.idempotency_key),
            detail=run.notes.get(i.idempotency_key),
        )
        for i in cr.items
    )
    return ExecutionReport(run.request_id, outcome, cr.status, reason, items, run.calls, run.replays)
