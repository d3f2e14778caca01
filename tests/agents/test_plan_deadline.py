"""A request's deadline and a freeze window of the whole portfolio: never decided inside the window.

In the regional demo a request proposed at 03:00 UTC on the Monday a freeze began (04:00 UTC, the
policy's midnight in New York) was approved at 09:30 and then blocked at execution: the planner had
asked for a decision that could only come too late.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.plan import MIN_DECISION_TIME, decision_deadline
from guardrails.loading import parse_policy

POLICY = """
timezone: America/New_York
budget: {total_daily_max: 10000}
channels: {search: {}, social: {}}
approval: {approvers: [U0A], expire_after_hours: 48}
freeze_windows:
  - {start: 2026-03-16, end: 2026-03-22, reason: "Spring launch"}
  - {start: 2026-04-01, end: 2026-04-03, channels: [social], reason: "social only"}
"""
FREEZE_START = datetime(2026, 3, 16, 4, 0, tzinfo=UTC)  # midnight in New York (EDT)


def test_a_request_expires_when_the_portfolio_freezes() -> None:
    policy = parse_policy(POLICY, "p.yaml")
    now = FREEZE_START - timedelta(hours=20)
    assert decision_deadline(policy, now) == (FREEZE_START, None)


def test_too_close_to_a_freeze_the_planner_waits_for_its_end() -> None:
    policy = parse_policy(POLICY, "p.yaml")
    deadline, reason = decision_deadline(policy, FREEZE_START - timedelta(hours=1))
    assert deadline == FREEZE_START and reason is not None
    assert "freeze window 2026-03-16..2026-03-22 (Spring launch) starts in 1.0 h" in reason
    assert "planning resumes after 2026-03-23T04:00:00+00:00" in reason
    assert decision_deadline(policy, FREEZE_START - MIN_DECISION_TIME)[1] is None


def test_channel_freezes_and_windows_past_the_deadline_leave_it_alone() -> None:
    policy = parse_policy(POLICY, "p.yaml")
    for now in (
        datetime(2026, 3, 31, 20, 0, tzinfo=UTC),  # the social-only window starts in 8 h
        FREEZE_START - timedelta(hours=60),  # the portfolio's starts after the 48 h deadline
        FREEZE_START + timedelta(days=1),  # inside it: the guardrails block, not this
    ):
        assert decision_deadline(policy, now) == (now + timedelta(hours=48), None)
