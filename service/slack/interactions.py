"""``POST /slack/interactions``: Block Kit button clicks.

The request is authenticated with slack-sdk's :class:`SignatureVerifier` against the signing secret, and
its timestamp must lie within 5 minutes of the *injected* clock (so a replay of an old, correctly signed
click is refused, and tests can move time). The answer (200, empty) goes back at once, well inside Slack's
3 seconds; the decision runs afterwards as a background task through :func:`agents.approvals.decide`, and
whoever clicked is told the outcome by an ephemeral message on the click's ``response_url`` when it was
not the decision itself (refused, already decided, expired, first of two approvals). A signed body of
the wrong shape (a payload that is not an object, ``actions`` not a list, a button value that is not an
id) is answered 400 with the reason, and nothing is decided.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, Response
from slack_sdk.signature import Clock as SlackClock
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from agents.approvals import Decision, DecisionOutcome, decide
from budgetloop.clock import Clock
from budgetloop.db.base import MAX_ROW_ID
from budgetloop.db.session import session_scope
from budgetloop.errors import InputError
from budgetloop.store import change_requests as crs
from service.deps import AppContext, ContextDep
from service.flows import after_decision
from service.slack.blocks import APPROVE, DETAILS, REJECT, diff_table

log = logging.getLogger(__name__)
router = APIRouter(tags=["slack"])


class _InjectedClock(SlackClock):
    """slack-sdk asks its clock for epoch seconds; ours is the service's injected clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now().timestamp()


def verify(ctx: AppContext, body: bytes, timestamp: str | None, signature: str | None) -> None:
    verifier = SignatureVerifier(ctx.settings.slack_signing_secret, clock=_InjectedClock(ctx.clock))
    try:
        ok = verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
    except ValueError:  # a timestamp that is not a number
        ok = False
    if not ok:
        raise HTTPException(
            401,
            "Slack signature invalid or timestamp outside 5 minutes of now: "
            "check BUDGETLOOP_SLACK_SIGNING_SECRET and the clocks",
        )


def _respond(response_url: str | None, text: str) -> None:
    if not response_url:
        return
    try:
        WebhookClient(response_url, timeout=5).send(
            text=text, response_type="ephemeral", replace_original=False
        )
    except Exception:
        log.exception("could not answer on the Slack response_url")


def handle_click(
    ctx: AppContext, *, user: str, action_id: str, change_request_id: int, response_url: str | None
) -> None:
    """The work after the 200: decide, tell the clicker, refresh the message, hand over to the executor."""
    if action_id == DETAILS:
        with session_scope(ctx.sessions) as session:
            cr = crs.get(session, change_request_id=change_request_id)
            text = (
                f"No change request #{change_request_id}."
                if cr is None
                else f"#{cr.id} is {cr.status}.\n{cr.summary}\n{diff_table(crs.describe(cr)['items'])}"
            )
        _respond(response_url, text)
        return
    decision: Decision = "approve" if action_id == APPROVE else "reject"
    try:
        with session_scope(ctx.sessions) as session:
            outcome: DecisionOutcome = decide(
                session,
                change_request_id=change_request_id,
                actor=user,
                decision=decision,
                policy=ctx.policy_provider(session),
                now=ctx.now(),
                source="slack",
            )
    except InputError as exc:
        _respond(response_url, f"No decision was recorded: {exc}")
        return
    if outcome.status in ("refused", "already_decided", "expired", "recorded", "not_found"):
        _respond(response_url, outcome.message)
    after_decision(ctx, outcome)


def _malformed(reason: str) -> HTTPException:
    return HTTPException(400, f"malformed Slack interaction: {reason}")


def parse_click(body: bytes) -> dict[str, Any] | None:
    """The first button action of a ``block_actions`` payload, or None for anything else (another kind
    of interaction, another button). A payload of the wrong shape is answered 400 with the reason."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=False)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, KeyError, IndexError, json.JSONDecodeError):
        raise HTTPException(
            400, "expected a form-encoded `payload` holding Slack's interaction JSON"
        ) from None
    if not isinstance(payload, dict):
        raise _malformed(f"`payload` must be a JSON object, got {type(payload).__name__}")
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not actions:
        return None
    if not isinstance(actions, list):
        raise _malformed(f"`actions` must be a list, got {type(actions).__name__}")
    action = actions[0]
    if not isinstance(action, dict):
        raise _malformed(f"`actions[0]` must be an object, got {type(action).__name__}")
    action_id = action.get("action_id")
    if action_id not in (APPROVE, REJECT, DETAILS):
        return None
    value = action.get("value")
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _malformed(f"button value {value!r} is not a change request id")
    try:
        cr_id = int(value)
    except ValueError:
        raise _malformed(f"button value {value!r} is not a change request id") from None
    if not 1 <= cr_id <= MAX_ROW_ID:
        raise _malformed(f"button value {value!r} is not a change request id")
    user = payload.get("user")
    if not isinstance(user, dict) or not str(user.get("id") or ""):
        raise _malformed("a click on a decision button must say who clicked (`user.id`)")
    response_url = payload.get("response_url")
    if response_url is not None and not isinstance(response_url, str):
        raise _malformed("`response_url` must be a string")
    return {
        "user": str(user["id"]),
        "action_id": str(action_id),
        "change_request_id": cr_id,
        "response_url": response_url,
    }


@router.post(
    "/slack/interactions",
    summary="Slack Block Kit button clicks (signed by Slack; answered at once, decided afterwards)",
    description="Slack sends every interaction of the app here: other kinds (a modal's submission, a "
    "shortcut) and other buttons are acknowledged (200) and ignored, as Slack expects of an app.",
    responses={
        400: {"description": "a signed body that is not a Slack interaction of the expected shape"},
        401: {"description": "bad signature or timestamp older than 5 minutes"},
    },
)
async def interactions(request: Request, background: BackgroundTasks, ctx: ContextDep) -> Response:
    body = await request.body()
    verify(
        ctx, body, request.headers.get("x-slack-request-timestamp"), request.headers.get("x-slack-signature")
    )
    click = parse_click(body)
    if click is not None:
        background.add_task(handle_click, ctx, **click)
    return Response(status_code=200)
