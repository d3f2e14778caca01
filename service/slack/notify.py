"""Post a change request to Slack, keep its message in step with its state, thread monitoring news under it.

All three take the caller's session (they read the request, and posting records the message's ``ts`` and
an audit entry) and a slack-sdk ``WebClient`` whose ``base_url`` points at Slack or at the local fake.
"""

from __future__ import annotations

import json
from datetime import datetime

from slack_sdk import WebClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from budgetloop.config import Settings
from budgetloop.db.audit import AuditEntry
from budgetloop.db.loop import ChangeRequest
from budgetloop.store import audit
from budgetloop.store import change_requests as crs
from service.slack.blocks import change_request_blocks, fallback_text


def slack_client(settings: Settings) -> WebClient:
    """The Web API client the service uses: bot token and base URL from the settings (the fake in tests)."""
    return WebClient(token=settings.slack_bot_token, base_url=settings.slack_base_url)


def _load(session: Session, change_request_id: int) -> ChangeRequest:
    cr = crs.get(session, change_request_id=change_request_id)
    if cr is None:
        raise LookupError(f"no change request with id {change_request_id}")
    return cr


def _blocks(
    session: Session, cr: ChangeRequest, details_url: str | None, needed: int
) -> list[dict[str, object]]:
    return change_request_blocks(
        crs.describe(cr),
        status=cr.status,
        approvals=crs.approvers(session, cr.id),
        approvals_needed=needed,
        decided_by=cr.decided_by,
        status_reason=cr.status_reason,
        details_url=details_url,
    )


def post_change_request(
    session: Session,
    client: WebClient,
    *,
    change_request_id: int,
    channel: str,
    now: datetime,
    two_approvers_above: float | None = None,
    details_url: str | None = None,
) -> str:
    """Post the request as Block Kit with Approve / Reject / Details; store and audit the message's ts."""
    cr = _load(session, change_request_id)
    needed = 2 if two_approvers_above is not None and cr.relative_move > two_approvers_above else 1
    response = client.chat_postMessage(
        channel=channel,
        text=fallback_text(crs.describe(cr), cr.status),
        blocks=_blocks(session, cr, details_url, needed),
    )
    ts = str(response["ts"])
    posted_channel = str(response.get("channel") or channel)
    session.execute(
        update(ChangeRequest)
        .where(ChangeRequest.id == cr.id)
        .values(slack_channel=posted_channel, slack_ts=ts)
        .execution_options(synchronize_session=False)
    )
    audit.append(
        session,
        action="posted_to_slack",
        actor="system",
        at=now,
        subject_type="change_request",
        subject_id=cr.id,
        payload={"channel": posted_channel, "ts": ts, "approvals_needed": needed},
    )
    return ts


def update_change_request(
    session: Session,
    client: WebClient,
    *,
    change_request_id: int,
    approvals_needed: int | None = None,
    details_url: str | None = None,
) -> bool:
    """Rewrite the message for the current state (no buttons once decided). False if never posted."""
    cr = _load(session, change_request_id)
    if not cr.slack_ts or not cr.slack_channel:
        return False
    if approvals_needed is None:
        posted = session.execute(
            select(AuditEntry.payload)
            .where(
                AuditEntry.subject_type == "change_request",
                AuditEntry.subject_id == str(cr.id),
                AuditEntry.action == "posted_to_slack",
            )
            .order_by(AuditEntry.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
        approvals_needed = int(json.loads(posted).get("approvals_needed", 1)) if posted else 1
    client.chat_update(
        channel=cr.slack_channel,
        ts=cr.slack_ts,
        text=fallback_text(crs.describe(cr), cr.status),
        blocks=_blocks(session, cr, details_url, approvals_needed),
    )
    return True


def post_thread_note(session: Session, client: WebClient, *, change_request_id: int, text: str) -> str | None:
    """Reply in the request's thread (monitoring readings, execution, rollback). None if never posted."""
    cr = _load(session, change_request_id)
    if not cr.slack_ts or not cr.slack_channel:
        return None
    response = client.chat_postMessage(channel=cr.slack_channel, thread_ts=cr.slack_ts, text=text)
    return str(response["ts"])


__all__ = ["post_change_request", "post_thread_note", "slack_client", "update_change_request"]
