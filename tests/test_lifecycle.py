"""The change-request state machine: every legal edge works, every other pair raises, CAS holds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from budgetloop.db.loop import ChangeRequest, ChangeRequestItem
from budgetloop.db.session import make_engine, session_scope, upgrade_database
from budgetloop.errors import IllegalTransition
from budgetloop.lifecycle import TERMINAL, TRANSITIONS, Event, State, allowed_events, next_state
from budgetloop.store import audit
from budgetloop.store import change_requests as crs

NOW = datetime(2026, 2, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_pair_is_either_in_the_table_or_illegal(state: State, event: Event) -> None:
    if (state, event) in TRANSITIONS:
        assert next_state(1, state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(
            IllegalTransition, match=f"event `{event.value}` is not allowed in state `{state.value}`"
        ):
            next_state(1, state, event)


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        assert allowed_events(state) == []


def _draft(**kw: object) -> crs.ChangeRequestDraft:
    base: dict[str, object] = dict(
        kind="reallocation",
        requested_by="planner",
        objective="revenue",
        summary="move 10% of video into search",
        items=[
            crs.ItemDraft("search", "google_ads", "111", 4000.0, 4400.0),
            crs.ItemDraft("video", "google_ads", "222", 3000.0, 2600.0),
        ],
        expected_gain=120.0,
        gain_p05=20.0,
        gain_p95=230.0,
        probability_of_improvement=0.91,
    )
    base.update(kw)
    return crs.ChangeRequestDraft(**base)  # type: ignore[arg-type]


def test_compare_and_set_gives_one_decision(migrated_engine: Engine) -> None:
    with session_scope(migrated_engine) as s:
        cr = crs.create(s, draft=_draft(), now=NOW)
        cr_id = cr.id
        assert cr.relative_move == pytest.approx(800 / 7000)
        crs.transition(s, change_request_id=cr_id, event=Event.SUBMIT, actor="planner", now=NOW)
    with session_scope(migrated_engine) as s:
        crs.transition(
            s, change_request_id=cr_id, event=Event.APPROVE, actor="U1", now=NOW + timedelta(minutes=1)
        )
    with session_scope(migrated_engine) as s, pytest.raises(IllegalTransition):
        crs.transition(
            s, change_request_id=cr_id, event=Event.APPROVE, actor="U2", now=NOW + timedelta(minutes=2)
        )
    with session_scope(migrated_engine) as s:
        cr2 = crs.get(s, change_request_id=cr_id)
        assert cr2 is not None and cr2.status == "approved" and cr2.decided_by == "U1"
        assert [i.idempotency_key for i in cr2.items] == [f"cr{cr_id}-0-search", f"cr{cr_id}-1-video"]
        assert crs.open_channels(s) == {"search": cr_id, "video": cr_id}
        report = audit.verify_chain(s)
        assert report.valid and report.entries == 3


def test_a_campaign_is_held_by_one_open_request(migrated_engine: Engine) -> None:
    with session_scope(migrated_engine) as s:
        first = crs.create(s, draft=_draft(), now=NOW)
        with pytest.raises(crs.CampaignBusy, match="campaign `search` is held by open change request"):
            crs.create(s, draft=_draft(), now=NOW)
        crs.transition(
            s, change_request_id=first.id, event=Event.CANCEL, actor="planner", now=NOW, reason="superseded"
        )
        assert crs.open_channels(s) == {}
        crs.create(s, draft=_draft(), now=NOW)


def test_a_request_its_caller_rolls_back_leaves_no_row(migrated_engine: Engine) -> None:
    """On SQLite the race-proof savepoint opened the transaction itself and its release committed
    the draft and its campaign locks before the planner did: a planner that died then left a draft
    that never expires, and every later run stopped on "change request 1 is still draft"."""
    with pytest.raises(RuntimeError), session_scope(migrated_engine) as s:
        crs.create(s, draft=_draft(), now=NOW)
        raise RuntimeError("the planner dies before it commits")
    with session_scope(migrated_engine) as s:
        assert s.execute(select(func.count()).select_from(ChangeRequest)).scalar_one() == 0
        assert crs.open_channels(s) == {}


def test_a_request_that_loses_the_race_for_its_campaigns_is_busy_and_leaves_no_row(database_url: str) -> None:
    """Two planners at once: on PostgreSQL both pass the open-lock check and the second insert waits
    on the first's lock row; on SQLite the second waits for the first's write lock before its check.
    Either way, once the first commits the second reads as CampaignBusy, with none of its rows left
    behind (it was a raw IntegrityError; on SQLite, for a while, PendingRollbackError)."""
    upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        first = Session(engine)
        winner = crs.create(first, draft=_draft(), now=NOW)  # locks held, not committed yet
        outcome: list[BaseException | int] = []

        def second() -> None:
            with Session(engine) as s:
                try:
                    outcome.append(crs.create(s, draft=_draft(), now=NOW).id)
                    s.commit()
                except BaseException as exc:  # recorded for the main thread to judge
                    outcome.append(exc)

        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=1.0)
        assert t.is_alive(), "the second planner should wait on the first's uncommitted locks"
        first.commit()
        winner_id = winner.id
        first.close()
        t.join(timeout=30)
        assert not t.is_alive()
        (result,) = outcome
        assert isinstance(result, crs.CampaignBusy), result
        assert result.holder == winner_id and result.channel in {"search", "video"}
        with session_scope(engine) as s:
            assert s.execute(select(func.count()).select_from(ChangeRequest)).scalar_one() == 1
            assert s.execute(select(func.count()).select_from(ChangeRequestItem)).scalar_one() == 2
            assert audit.verify_chain(s).entries == 1
    finally:
        engine.dispose()


def test_a_newer_executed_request_supersedes_the_watch_of_an_older_one(migrated_engine: Engine) -> None:
    with session_scope(migrated_engine) as s:
        older = crs.create(s, draft=_draft(), now=NOW)
        for ev in (Event.AUTO_APPROVE, Event.START_EXECUTION, Event.FINISH_EXECUTION, Event.START_MONITORING):
            crs.transition(s, change_request_id=older.id, event=ev, actor="t", now=NOW)
        assert crs.open_channels(s) == {}  # a watched request no longer holds its campaigns
        newer = crs.create(s, draft=_draft(), now=NOW + timedelta(days=3))
        for ev in (Event.AUTO_APPROVE, Event.START_EXECUTION, Event.FINISH_EXECUTION, Event.START_MONITORING):
            crs.transition(s, change_request_id=newer.id, event=ev, actor="t", now=NOW + timedelta(days=3))
        unrelated = crs.create(
            s, draft=_draft(items=[crs.ItemDraft("tv", "google_ads", "9", 100.0, 110.0)]), now=NOW
        )
        assert crs.supersede_monitoring(s, by=newer, now=NOW + timedelta(days=3)) == [older.id]
        refreshed = crs.get(s, change_request_id=older.id)
        assert refreshed is not None and refreshed.status == "confirmed"
        assert "superseded by change request" in (refreshed.status_reason or "")
        assert crs.get(s, change_request_id=unrelated.id).status == "draft"  # type: ignore[union-attr]


def test_relative_move_is_over_the_whole_portfolio_when_given() -> None:
    items = [
        crs.ItemDraft("search", "google_ads", "1", 1000.0, 1200.0),
        crs.ItemDraft("video", "google_ads", "2", 1000.0, 800.0),
    ]
    assert _draft(items=items).relative_move == pytest.approx(400 / 2000)
    # Two channels moved out of a 4,000/day portfolio: the engine's (and the approvers') 10%, not 20%.
    assert _draft(items=items, portfolio_total=4000.0).relative_move == pytest.approx(400 / 4000)


def test_a_channel_with_two_campaigns_is_locked_once_and_its_history_adds_up(migrated_engine: Engine) -> None:
    from agents.execute_guard import executed_history

    items = [
        crs.ItemDraft("search", "google_ads", "s1", 1000.0, 1100.0),
        crs.ItemDraft("search", "google_ads", "s2", 3000.0, 3300.0),
    ]
    with session_scope(migrated_engine) as s:
        cr = crs.create(s, draft=_draft(items=items), now=NOW)
        assert crs.open_channels(s) == {"search": cr.id}
        for item in cr.items:
            item.state = "applied"
            item.applied_at = NOW
    with session_scope(migrated_engine) as s:
        history = executed_history(s, now=NOW + timedelta(days=1))
    assert [(h.key, h.before, h.after) for h in history] == [("search", 4000.0, 4400.0)]
