"""The Slack message follows a request past its approval: the execute job refreshes it (it stayed at
`approved` after the budgets moved, or failed to), and a deployment's notifier asks for the approvals
that the active policy will count (it had no policy and always asked for one)."""

from __future__ import annotations

import contextlib
import json

from loop_fixtures import POLICY_YAML, Loop, approved_request, load, loop
from slack_sdk import WebClient
from sqlalchemy import select

from agents import jobs
from agents.notify import SlackNotifier
from agents.runtime import Runtime
from budgetloop.config import Settings
from budgetloop.db.audit import AuditEntry
from budgetloop.db.session import session_scope
from budgetloop.store import change_requests as requests
from budgetloop.store.policy import active_policy, record_policy
from service.slack.fake import FakeSlack


def _policy_text(extra: str = "") -> str:
    return POLICY_YAML.format(evaluation_days=5, require_approval="false", extra=extra)


def _notifier(slack: FakeSlack, world: Loop) -> SlackNotifier:
    """What ``serve`` builds: the real slack-sdk client, the active policy read at each post."""
    client = WebClient(token="xoxb-test", base_url=slack.api_url)
    return SlackNotifier(client, channel="#budget-changes", clock=world.clock, policy_source=active_policy)


def _runtime(world: Loop, notifier: SlackNotifier) -> Runtime:
    return Runtime(
        engine=world.sessions.kw["bind"],
        clock=world.clock,
        connectors=world.connectors,
        settings=Settings(database_url=world.database_url),
        policy_source=active_policy,
        notifier=notifier,
    )


def test_the_execute_job_refreshes_the_message_once_the_change_is_applied(database_url: str) -> None:
    with FakeSlack(signing_secret="s", bot_token="xoxb-test") as slack, loop(database_url) as world:
        notifier = _notifier(slack, world)
        rt = _runtime(world, notifier)
        with session_scope(world.sessions) as s:
            record_policy(s, text=_policy_text(), source="p.yaml", author="U0OPS", now=world.clock.now())
        live = world.live()
        ok = approved_request(world, {"search": live["search"] * 1.1, "social": live["social"] * 0.95})
        with session_scope(world.sessions) as s:
            cr = requests.get(s, change_request_id=ok)
            assert cr is not None
            notifier.change_request_changed(s, cr)  # posted when approved (as the approval path does)
        assert len(slack.calls_to("chat.postMessage")) == 1
        summary = jobs.execute(rt)
        assert summary == {"executed": {str(ok): load(world, ok).status}}
        (update,) = slack.calls_to("chat.update")
        assert load(world, ok).status in ("executed", "monitoring")
        assert load(world, ok).status in json.dumps(update.args)  # the message says where it stands


def test_a_deployments_notifier_asks_for_the_approvals_the_active_policy_counts(database_url: str) -> None:
    with FakeSlack(signing_secret="s", bot_token="xoxb-test") as slack, loop(database_url) as world:
        notifier = _notifier(slack, world)
        with session_scope(world.sessions) as s:
            text = _policy_text().replace(
                "approval: {approvers: [U0APPROVER]}",
                "approval: {approvers: [U0APPROVER, U0SECOND], two_approvers_above: 0.01}",
            )
            record_policy(s, text=text, source="p.yaml", author="U0OPS", now=world.clock.now())
        live = world.live()
        cr_id = approved_request(world, {"search": live["search"] * 1.1, "social": live["social"] * 0.95})
        with session_scope(world.sessions) as s:
            cr = requests.get(s, change_request_id=cr_id)
            assert cr is not None
            notifier.change_request_changed(s, cr)
            posted = s.execute(
                select(AuditEntry.payload).where(AuditEntry.action == "posted_to_slack")
            ).scalar_one()
        assert json.loads(posted)["approvals_needed"] == 2  # was 1: the notifier had no policy


def test_runs_that_leave_a_request_where_it_was_tell_slack_nothing(sqlite_url: str) -> None:
    """With the kill switch on, every 5-minute run halts an interrupted execution again: each run
    posted the same thread note ("Execution halted: ...") and rewrote the message, 288 a day."""
    from agents.execute import ExecutionHooks, execute_request

    class Boom(RuntimeError):
        pass

    def die(key: str) -> None:
        raise Boom(key)

    with FakeSlack(signing_secret="s", bot_token="xoxb-test") as slack, loop(sqlite_url) as world:
        rt = _runtime(world, _notifier(slack, world))
        now = world.clock.now()
        with session_scope(world.sessions) as s:
            record_policy(s, text=_policy_text(), source="p.yaml", author="U0OPS", now=now)
        live = world.live()
        cr_id = approved_request(world, {"search": live["search"] * 0.9, "social": live["social"] * 1.05})
        with session_scope(world.sessions) as s:
            cr = requests.get(s, change_request_id=cr_id)
            assert cr is not None
            rt.notify(s, cr)  # posted when approved
            _, policy = rt.policy(s)
        with contextlib.suppress(Boom):  # the process dies after the first call: `executing` stays
            execute_request(
                world.sessions,
                change_request_id=cr_id,
                connectors=world.connectors,
                policy=policy,
                clock=world.clock,
                hooks=ExecutionHooks(after_commit=die),
            )
        with session_scope(world.sessions) as s:
            record_policy(s, text=_policy_text("kill_switch: true"), source="p.yaml", author="U0OPS", now=now)
        for _ in range(3):
            assert jobs.execute(rt) == {"executed": {str(cr_id): "executing"}}
        assert len(slack.calls_to("chat.postMessage")) == 1  # the request itself, no thread notes
        assert slack.calls_to("chat.update") == []


def test_an_automatic_rollback_is_posted_whatever_state_it_reached(sqlite_url: str) -> None:
    """The monitor executes a rollback before telling anyone; only pending or approved requests were
    posted, so a rollback that had run (or failed) never reached the channel."""
    from budgetloop.lifecycle import Event

    with FakeSlack(signing_secret="s", bot_token="xoxb-test") as slack, loop(sqlite_url) as world:
        notifier = _notifier(slack, world)
        now = world.clock.now()
        live = world.live()
        with session_scope(world.sessions) as s:
            record_policy(s, text=_policy_text(), source="p.yaml", author="U0OPS", now=now)
            draft = requests.ChangeRequestDraft(
                kind="rollback",
                requested_by="monitor",
                objective="revenue",
                summary="roll back change request 1",
                items=[
                    requests.ItemDraft("search", "google_ads", "c1", live["search"], live["search"] * 0.9)
                ],
                expected_gain=0.0,
                gain_p05=0.0,
                gain_p95=0.0,
                probability_of_improvement=0.5,
            )
            rollback = requests.create(s, draft=draft, now=now)
            for ev in (Event.AUTO_APPROVE, Event.START_EXECUTION, Event.FAIL):
                requests.transition(s, change_request_id=rollback.id, event=ev, actor="executor", now=now)
            notifier.change_request_changed(s, rollback)
        (posted,) = slack.calls_to("chat.postMessage")
        assert "failed" in json.dumps(posted.args)
