"""What happens after a decision is committed: hand an approval to the executor, refresh the Slack message.

Runs as a background task (after the HTTP answer), in its own units of work. The executor goes first (it
is the critical path from click to executed budget); the message is refreshed afterwards, so it shows the
state the request reached (approved, or already executing/monitoring). A Slack outage never undoes a
decision: the failure is logged and the message is refreshed by the next state change.
"""

from __future__ import annotations

import logging

from agents.approvals import DecisionOutcome
from budgetloop.db.session import session_scope
from service.deps import AppContext
from service.slack import notify

log = logging.getLogger(__name__)


def after_decision(ctx: AppContext, outcome: DecisionOutcome) -> None:
    try:
        if outcome.status == "approved" and ctx.on_approved is not None:
            ctx.on_approved(outcome.change_request_id)
    finally:
        # An expiry found by a late click drops the buttons, as the expire job's notification does.
        if ctx.slack is not None and outcome.status in ("approved", "rejected", "recorded", "expired"):
            try:
                with session_scope(ctx.sessions) as session:
                    notify.update_change_request(
                        session, ctx.slack, change_request_id=outcome.change_request_id
                    )
            except Exception:
                log.exception(
                    "could not refresh the Slack message of change request %s", outcome.change_request_id
                )
