"""Telling people: the Slack side of a change request's life, behind the runtime's ``Notifier``.

A request is posted to Slack when it first needs a decision (``pending_approval``) or, for requests
that skip approval (automatic rollbacks, autonomous moves), when they are approved; every later state
refreshes the same message (the buttons disappear once decided) and notes go in its thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from slack_sdk import WebClient
from sqlalchemy.orm import Session

from budgetloop.clock import Clock
from budgetloop.db.loop import ChangeRequest
from budgetloop.errors import InputError
from guardrails.policy import Policy
from service.slack import notify

log = logging.getLogger(__name__)


class SlackNotifier:
    def __init__(
        self,
        client: WebClient,
        *,
        channel: str,
        clock: Clock,
        policy: Policy | None = None,
        policy_source: Callable[[Session], tuple[int | None, Policy]] | None = None,
    ) -> None:
        """``policy``: a fixed policy (the demo's); ``policy_source``: read the active one each time
        (a deployment, whose ops may change it), so the message asks for the approvals that the
        decision will count."""
        self.client = client
        self.channel = channel
        self.clock = clock
        self.policy = policy
        self.policy_source = policy_source

    def _policy(self, session: Session) -> Policy | None:
        if self.policy is not None or self.policy_source is None:
            return self.policy
        try:
            return self.policy_source(session)[1]
        except InputError:  # no valid policy recorded: nothing could be approved anyway
            return None

    def change_request_changed(self, session: Session, change_request: ChangeRequest) -> None:
        try:
            if change_request.slack_ts:
                notify.update_change_request(session, self.client, change_request_id=change_request.id)
            # an automatic rollback is often executed (or failed) before anyone is told: post it
            # whatever its state, so the channel learns that budgets moved back
            elif (
                change_request.status in ("pending_approval", "approved") or change_request.kind == "rollback"
            ):
                policy = self._policy(session)
                notify.post_change_request(
                    session,
                    self.client,
                    change_request_id=change_request.id,
                    channel=self.channel,
                    now=self.clock.now(),
                    two_approvers_above=None if policy is None else policy.approval.two_approvers_above,
                )
        except Exception:  # Slack being down never undoes a decision or a plan
            log.exception("could not tell Slack about change request %s", change_request.id)

    def note(self, session: Session, change_request: ChangeRequest, text: str) -> None:
        try:
            notify.post_thread_note(session, self.client, change_request_id=change_request.id, text=text)
        except Exception:
            log.exception("could not post a note on change request %s", change_request.id)
