"""Telling people: the Slack side of a change request's life, behind the runtime's ``Notifier``.

A request is posted to Slack when it first needs a decision (``pending_approval``) or, for requests
that skip approval (automatic rollbacks, autonomous moves), when they are approved; every later state
refreshes the same message (the buttons disappear once decided) and notes go in its thread.
"""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from sqlalchemy.orm import Session

from budgetloop.clock import Clock
from budgetloop.db.loop import ChangeRequest
from guardrails.policy import Policy
from service.slack import notify

log = logging.getLogger(__name__)


class SlackNotifier:
    def __init__(
        self, client: WebClient, *, channel: str, clock: Clock, policy: Policy | None = None
    ) -> None:
        self.client = client
        self.channel = channel
        self.clock = clock
        self.policy = policy

    def change_request_changed(self, session: Session, change_request: ChangeRequest) -> None:
        try:
            if change_request.slack_ts:
                notify.update_change_request(session, self.client, change_request_id=change_request.id)
            elif change_request.status in ("pending_approval", "approved"):
                notify.post_change_request(
                    session,
                    self.client,
                    change_request_id=change_request.id,
                    channel=self.channel,
                    now=self.clock.now(),
                    two_approvers_above=None
                    if self.policy is None
                    else self.policy.approval.two_approvers_above,
                )
        except Exception:  # Slack being down never undoes a decision or a plan
            log.exception("could not tell Slack about change request %s", change_request.id)

    def note(self, session: Session, change_request: ChangeRequest, text: str) -> None:
        try:
            notify.post_thread_note(session, self.client, change_request_id=change_request.id, text=text)
        except Exception:
            log.exception("could not post a note on change request %s", change_request.id)
