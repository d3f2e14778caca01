"""The simulated marketer: reads each request posted to (fake) Slack and clicks like a careful person.

A careful marketer approves a move when the model is confident (probability of improvement at least
``min_probability``), the pessimistic end of the band does not lose much, and no channel is cut by
more than ``max_cut`` at once; otherwise they reject it. Now and then (``whim``, seeded) they reject a
good one anyway ("not this week"). Where the policy asks for two approvers, a second one clicks too.
Clicks go through the fake Slack to the service's signed ``/slack/interactions`` endpoint, like a
real click, at the simulated time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.orm import Session

from agents.approvals import approvals_needed
from budgetloop.clock import Clock
from budgetloop.db.loop import ChangeRequest
from budgetloop.store import change_requests as crs
from guardrails.policy import Policy
from service.slack.fake import FakeSlack


@dataclass
class Click:
    change_request_id: int
    user: str
    action: str
    reason: str
    status_code: int


@dataclass
class SimulatedApprover:
    slack: FakeSlack
    interactions_url: str
    clock: Clock
    seed: int = 0
    min_probability: float = 0.85
    max_cut: float = 0.25
    max_loss_share: float = 0.01  # of the day's expected revenue at the band's low end
    whim: float = 0.08
    clicks: list[Click] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def judge(self, cr: ChangeRequest, revenue_per_day: float) -> tuple[str, str]:
        if cr.kind == "rollback":
            return "approve", "a rollback the monitor asked for"
        if cr.kind == "experiment":
            return "approve", "a small geo holdout paid from the exploration budget"
        if cr.probability_of_improvement < self.min_probability:
            return "reject", f"only {cr.probability_of_improvement:.0%} likely to help"
        cuts = [-(i.after - i.before) / i.before for i in cr.items if i.before > 0 and i.after < i.before]
        if cuts and max(cuts) > self.max_cut:
            return "reject", f"cuts a channel by {max(cuts):.0%} at once"
        if cr.gain_p05 < -self.max_loss_share * max(revenue_per_day, 1.0):
            return "reject", "the pessimistic case loses too much"
        if self._rng.random() < self.whim:
            return "reject", "not this week (a marketer's call)"
        return "approve", "looks right"

    def review(self, session: Session, policy: Policy, revenue_per_day: float) -> list[Click]:
        """Answer every request waiting in Slack that this marketer has not answered yet."""
        done: list[Click] = []
        for cr in crs.list_requests(session, statuses=["pending_approval"], limit=1000):
            if cr.id in self._seen or not cr.slack_ts:
                continue
            self._seen.add(cr.id)
            action, reason = self.judge(cr, revenue_per_day)
            approvers = list(policy.approval.approvers) or ["U0MARKETER"]
            needed = approvals_needed(policy, cr.relative_move) if action == "approve" else 1
            for user in approvers[: max(1, needed)]:
                response = self.slack.click(
                    self.interactions_url,
                    user_id=user,
                    action=action,
                    value=str(cr.id),
                    timestamp=int(self.clock.now().timestamp()),
                    message_ts=cr.slack_ts,
                    response_key=f"cr{cr.id}-{user}",
                )
                click = Click(cr.id, user, action, reason, response.status_code)
                done.append(click)
                self.clicks.append(click)
        return done
