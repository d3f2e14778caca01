"""Slack approvals end to end: the real service on loopback, the real slack-sdk client, the fake Slack.

Covers: the Block Kit message and its buttons, signature and 5-minute window against the injected clock,
approvers named by the policy only (refusals audited), no self-approval, two distinct approvers above the
size, double clicks / retries / concurrent clicks giving one decision, and the late clicker told who
decided, the message losing its buttons, and monitoring news threaded under it.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import Engine, select

from budgetloop.clock import SimulatedClock
from budgetloop.config import Settings
from budgetloop.db.audit import AuditEntry
from budgetloop.db.loop import Approval
from budgetloop.db.session import session_scope
from budgetloop.store import audit
from budgetloop.store import change_requests as crs
from service.slack import notify
from service.slack.fake import FakeSlack
from tests.service.conftest import Service, make_pending, now_ts


def _post(service: Service, engine: Engine, clock: SimulatedClock, cr_id: int) -> str:
    with session_scope(engine) as s:
        return notify.post_change_request(
            s,
            service.client,
            change_request_id=cr_id,
            channel="#budget-changes",
            now=clock.now(),
            two_approvers_above=0.15,
        )


def _status(engine: Engine, cr_id: int) -> str:
    with session_scope(engine) as s:
        cr = crs.get(s, change_request_id=cr_id)
        assert cr is not None
        return cr.status


def _actions(engine: Engine, cr_id: int) -> list[str]:
    with session_scope(engine) as s:
        return [e["action"] for e in audit.history(s, subject_type="change_request", subject_id=cr_id)]


def _click(
    service: Service, clock: SimulatedClock, cr_id: int, user: str, action: str = "approve", **kw: Any
) -> httpx.Response:
    """A signed click from the fake Slack, timestamped by the injected clock."""
    return service.slack.click(
        service.interactions, user_id=user, action=action, value=str(cr_id), timestamp=now_ts(clock), **kw
    )


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "background work did not finish in time"
        time.sleep(0.01)


def test_the_client_from_settings_talks_to_the_fake(fake_slack: FakeSlack, settings: Settings) -> None:
    client = notify.slack_client(settings.model_copy(update={"slack_base_url": fake_slack.api_url}))
    assert client.auth_test()["user_id"] == "UBOT"
    assert fake_slack.calls_to("auth.test")[0].token == "xoxb-test"


def test_posted_message_shows_the_request_and_buttons(
    service: Service, engine: Engine, clock: SimulatedClock
) -> None:
    cr_id = make_pending(engine, clock)
    ts = _post(service, engine, clock, cr_id)
    message = service.slack.messages[ts]
    assert message.buttons == ["approve", "reject", "details"]
    text = json.dumps(message.blocks)
    assert "1,000.00" in text and "1,100.00" in text and "+10.0%" in text and "-10.0%" in text
    assert "90% band -10.00 to 250.00" in text and "P(improvement)" in text and "max_swing_per_change" in text
    assert _actions(engine, cr_id)[-1] == "posted_to_slack"
    with session_scope(engine) as s:
        assert notify.post_thread_note(
            s, service.client, change_request_id=cr_id, text="day 1: inside the band"
        )
    assert [m.text for m in service.slack.replies(ts)] == ["day 1: inside the band"]


def test_a_click_is_answered_at_once_and_approves(
    service: Service, engine: Engine, clock: SimulatedClock
) -> None:
    cr_id = make_pending(engine, clock)
    ts = _post(service, engine, clock, cr_id)
    started = time.perf_counter()
    response = _click(service, clock, cr_id, "U0MARKETER1", message_ts=ts)
    assert response.status_code == 200
    assert time.perf_counter() - started < 3.0
    _wait(lambda: service.approved == [cr_id])
    assert _status(engine, cr_id) == "approved"
    _wait(lambda: service.slack.messages[ts].updates >= 1)
    assert service.slack.messages[ts].buttons == []
    assert "approved" in json.dumps(service.slack.messages[ts].blocks) and "U0MARKETER1" in json.dumps(
        service.slack.messages[ts].blocks
    )
    assert _actions(engine, cr_id)[-1] == "approved"


@pytest.mark.parametrize("forgery", ["wrong_secret", "old_timestamp", "future_timestamp", "unsigned"])
def test_forged_or_replayed_clicks_get_401(
    service: Service, engine: Engine, clock: SimulatedClock, forgery: str
) -> None:
    cr_id = make_pending(engine, clock)
    ts = now_ts(clock)
    if forgery == "unsigned":
        body = service.slack.interaction_body(user_id="U0MARKETER1", action="approve", value=str(cr_id))
        response = httpx.post(
            service.interactions, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    else:
        response = service.slack.click(
            service.interactions,
            user_id="U0MARKETER1",
            action="approve",
            value=str(cr_id),
            timestamp={"old_timestamp": ts - 301, "future_timestamp": ts + 301}.get(forgery, ts),
            secret="not-the-secret" if forgery == "wrong_secret" else None,
        )
    assert response.status_code == 401
    time.sleep(0.2)
    assert _status(engine, cr_id) == "pending_approval"
    assert service.approved == []


def test_the_window_follows_the_injected_clock(
    service: Service, engine: Engine, clock: SimulatedClock
) -> None:
    """A click signed 4 minutes ago passes; the same click replayed after the clock moved on is refused."""
    cr_id = make_pending(engine, clock)
    signed_at = now_ts(clock)
    clock.advance(timedelta(minutes=4))
    kwargs = dict(user_id="U0MARKETER1", action="reject", value=str(cr_id), timestamp=signed_at)
    assert service.slack.click(service.interactions, **kwargs).status_code == 200  # type: ignore[arg-type]
    clock.advance(timedelta(minutes=2))
    assert service.slack.click(service.interactions, **kwargs).status_code == 401  # type: ignore[arg-type]
    _wait(lambda: _status(engine, cr_id) == "rejected")


def test_someone_the_policy_does_not_name_is_refused_and_logged(
    service: Service, engine: Engine, clock: SimulatedClock
) -> None:
    cr_id = make_pending(engine, clock)
    _post(service, engine, clock, cr_id)
    response = _click(service, clock, cr_id, "U0INTRUDER", response_key="intruder")
    assert response.status_code == 200
    _wait(lambda: any(r["key"] == "intruder" for r in service.slack.responses))
    reply = next(r for r in service.slack.responses if r["key"] == "intruder")
    assert reply["response_type"] == "ephemeral" and "not an approver" in reply["text"]
    assert _status(engine, cr_id) == "pending_approval"
    with session_scope(engine) as s:
        refused = s.execute(select(AuditEntry).where(AuditEntry.action == "approval_refused")).scalars().all()
    assert [(e.actor, e.subject_id) for e in refused] == [("U0INTRUDER", str(cr_id))]
    assert "not an approver" in json.loads(refused[0].payload)["reason"]


def test_a_requester_cannot_approve_their_own_request(
    service: Service, engine: Engine, clock: SimulatedClock
) -> None:
    cr_id = make_pending(engine, clock, requested_by="U0MARKETER1")
    _click(service, clock, cr_id, "U0MARKETER1", response_key="own")
    _wait(lambda: any(r["key"] == "own" for r in service.slack.responses))
    assert "cannot approve" in service.slack.responses[-1]["text"]
    assert _status(engine, cr_id) == "pending_approval"
    assert _actions(engine, cr_id)[-1] == "approval_refused"


def test_a_large_move_needs_two_distinct_approvers(
    service: Service, engine: Engine, clock: SimulatedClock
) -> None:
    cr_id = make_pending(engine, clock, move=0.20)  # relative move 0.2 > two_approvers_above 0.15
    ts = _post(service, engine, clock, cr_id)
    for key in ("first", "again"):  # the same person twice still counts once
        _click(service, clock, cr_id, "U0MARKETER1", message_ts=ts, response_key=key)
        _wait(lambda key=key: any(r["key"] == key for r in service.slack.responses))
    assert _status(engine, cr_id) == "pending_approval"
    assert "1 of 2" in json.dumps(service.slack.messages[ts].blocks)
    assert service.slack.messages[ts].buttons == ["approve", "reject", "details"]
    _click(service, clock, cr_id, "U0MARKETER2", message_ts=ts)
    _wait(lambda: service.approved == [cr_id])
    with session_scope(engine) as s:
        cr = crs.get(s, change_request_id=cr_id)
        assert cr is not None and cr.status == "approved" and cr.decided_by == "U0MARKETER1, U0MARKETER2"
    _wait(lambda: service.slack.messages[ts].buttons == [])


def test_double_clicks_and_retries_give_one_decision(
    service: Service, engine: Engine, clock: SimulatedClock
) -> None:
    cr_id = make_pending(engine, clock)
    ts = _post(service, engine, clock, cr_id)
    for i, (user, retry) in enumerate([("U0MARKETER1", None), ("U0MARKETER1", 1), ("U0MARKETER2", None)]):
        response = _click(service, clock, cr_id, user, message_ts=ts, response_key=f"k{i}", retry_num=retry)
        assert response.status_code == 200
    _wait(lambda: len(service.slack.responses) >= 2)
    time.sleep(0.2)
    assert service.approved == [cr_id]
    assert _actions(engine, cr_id).count("approved") == 1
    late = [r["text"] for r in service.slack.responses]
    assert all("already approved by U0MARKETER1" in t for t in late), late


def test_concurrent_clicks_from_threads_give_one_decision(
    service: Service, engine: Engine, clock: SimulatedClock
) -> None:
    cr_id = make_pending(engine, clock)
    barrier = threading.Barrier(6)
    codes: list[int] = []

    def click(i: int) -> None:
        barrier.wait()
        user = "U0MARKETER1" if i % 2 else "U0MARKETER2"
        codes.append(
            _click(
                service, clock, cr_id, user, "approve" if i else "reject", response_key=f"t{i}"
            ).status_code
        )

    threads = [threading.Thread(target=click, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 6
    _wait(lambda: _status(engine, cr_id) in ("approved", "rejected"))
    _wait(
        lambda: len(service.slack.responses) >= 4
    )  # every click but the deciding one (and a same-person one)
    time.sleep(0.3)
    decisions = [a for a in _actions(engine, cr_id) if a in ("approved", "rejected")]
    assert len(decisions) == 1
    assert service.approved == ([cr_id] if decisions == ["approved"] else [])
    with session_scope(engine) as s:
        approvals = s.execute(select(Approval).where(Approval.change_request_id == cr_id)).scalars().all()
    assert 1 <= len(approvals) <= 2  # one per person at most


def test_details_button_answers_privately(service: Service, engine: Engine, clock: SimulatedClock) -> None:
    cr_id = make_pending(engine, clock)
    _click(service, clock, cr_id, "U0FINANCE", "details", response_key="details")
    _wait(lambda: any(r["key"] == "details" for r in service.slack.responses))
    assert "pending_approval" in service.slack.responses[-1]["text"]
    assert _status(engine, cr_id) == "pending_approval"


def test_a_click_after_the_deadline_expires_the_request(
    service: Service, engine: Engine, clock: SimulatedClock
) -> None:
    """Before the expire job ran, a correctly signed Approve after ``expires_at`` does not approve: the
    request is expired (as the job would), the clicker is told why, and the buttons go."""
    deadline = clock.now() + timedelta(hours=1)
    cr_id = make_pending(engine, clock, expires_at=deadline)
    ts = _post(service, engine, clock, cr_id)
    clock.advance(timedelta(hours=2))
    assert _click(service, clock, cr_id, "U0MARKETER1", message_ts=ts, response_key="late").status_code == 200
    _wait(lambda: any(r["key"] == "late" for r in service.slack.responses))
    reply = next(r for r in service.slack.responses if r["key"] == "late")
    assert "expired" in reply["text"] and deadline.isoformat() in reply["text"]
    assert _status(engine, cr_id) == "expired"
    assert _actions(engine, cr_id)[-1] == "expired"
    _wait(lambda: service.slack.messages[ts].buttons == [])
    assert service.approved == []


def _signed(service: Service, clock: SimulatedClock, body: bytes) -> httpx.Response:
    headers = service.slack.signed_headers(body, timestamp=now_ts(clock))
    return httpx.post(service.interactions, content=body, headers=headers, timeout=10)


def _payload(value: object) -> bytes:
    return urlencode({"payload": json.dumps(value)}).encode()


_BUTTON = {"type": "button", "action_id": "approve", "value": "1"}


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2],
        "block_actions",
        {"type": "block_actions", "user": {"id": "U0MARKETER1"}, "actions": "x"},
        {"type": "block_actions", "user": {"id": "U0MARKETER1"}, "actions": [5]},
        {"type": "block_actions", "user": {"id": "U0MARKETER1"}, "actions": [{**_BUTTON, "value": None}]},
        {"type": "block_actions", "user": {"id": "U0MARKETER1"}, "actions": [{**_BUTTON, "value": "x"}]},
        {"type": "block_actions", "user": {"id": "U0MARKETER1"}, "actions": [{**_BUTTON, "value": [1]}]},
        {"type": "block_actions", "user": {"id": "U0MARKETER1"}, "actions": [{**_BUTTON, "value": "0"}]},
        {"type": "block_actions", "user": "U0MARKETER1", "actions": [_BUTTON]},
        {"type": "block_actions", "actions": [_BUTTON]},
        {"type": "block_actions", "user": {"name": "someone"}, "actions": [_BUTTON]},
        {"type": "block_actions", "user": {"id": "U0MARKETER1"}, "actions": [_BUTTON], "response_url": 5},
    ],
    ids=[
        "payload_a_list",
        "payload_a_string",
        "actions_a_string",
        "action_a_number",
        "value_null",
        "value_not_a_number",
        "value_a_list",
        "value_zero",
        "user_a_string",
        "user_missing",
        "user_without_an_id",
        "response_url_a_number",
    ],
)
def test_a_signed_payload_of_the_wrong_shape_gets_400_and_changes_nothing(
    service: Service, engine: Engine, clock: SimulatedClock, payload: object
) -> None:
    cr_id = make_pending(engine, clock)
    assert cr_id == 1  # the button value above
    before = _actions(engine, cr_id)
    response = _signed(service, clock, _payload(payload))
    assert response.status_code == 400, response.text
    assert "malformed Slack interaction" in response.json()["detail"]
    time.sleep(0.2)
    assert _status(engine, cr_id) == "pending_approval"
    assert _actions(engine, cr_id) == before
    with session_scope(engine) as s:
        assert s.execute(select(Approval)).first() is None


@pytest.mark.parametrize(
    "payload",
    [{"type": "view_submission"}, {"type": "block_actions", "actions": []}, {}],
    ids=["other_kind", "no_actions", "empty"],
)
def test_other_interactions_are_acknowledged_and_ignored(
    service: Service, engine: Engine, clock: SimulatedClock, payload: object
) -> None:
    assert _signed(service, clock, _payload(payload)).status_code == 200
