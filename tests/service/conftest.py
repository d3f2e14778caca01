"""Fixtures for the service: a migrated database (SQLite, PostgreSQL), the example policy recorded, a
token per role, the local fake Slack, and the service itself on a loopback port (or as an ASGI client)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from slack_sdk import WebClient
from sqlalchemy import Engine

from budgetloop.clock import SimulatedClock
from budgetloop.config import Settings
from budgetloop.db.session import session_scope
from budgetloop.lifecycle import Event
from budgetloop.store import change_requests as crs
from budgetloop.store import policy as policies
from budgetloop.store import tokens
from service.app import create_app
from service.slack.fake import FakeSlack, ServerThread

REPO = Path(__file__).resolve().parents[2]
POLICY_TEXT = (
    REPO / "examples" / "policy.yaml"
).read_text()  # approvers U0MARKETER1, U0MARKETER2; two above 0.15
SECRET = "test-signing-secret"
AUDIT_KEY = "test-audit-key"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        slack_signing_secret=SECRET,
        audit_signing_key=AUDIT_KEY,
        slack_bot_token="xoxb-test",
        slack_channel="#budget-changes",
    )


@pytest.fixture
def engine(migrated_engine: Engine, clock: SimulatedClock) -> Engine:
    with session_scope(migrated_engine) as s:
        policies.record_policy(s, text=POLICY_TEXT, source="test", author="ops-lead", now=clock.now())
    return migrated_engine


@pytest.fixture
def role_tokens(engine: Engine, clock: SimulatedClock) -> dict[str, str]:
    """One live token per role, plus ``approver2`` (U0MARKETER2) and ``outsider`` (an approver token whose
    Slack id the policy does not name)."""
    out: dict[str, str] = {}
    with session_scope(engine) as s:
        for name, role, slack_id in [
            ("finance", "finance", None),
            ("approver", "approver", "U0MARKETER1"),
            ("approver2", "approver", "U0MARKETER2"),
            ("outsider", "approver", "U0INTRUDER"),
            ("ops", "ops", None),
            ("admin", "admin", None),
        ]:
            _, out[name] = tokens.create_token(
                s, name=name, role=role, now=clock.now(), created_by="test", slack_user_id=slack_id
            )
    return out


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def draft(
    channels: tuple[str, ...] = ("search", "video"),
    move: float = 0.10,
    requested_by: str = "planner",
    **kw: object,
) -> crs.ChangeRequestDraft:
    """A request moving ``move`` of each channel's 1000/day (+ for the first, - for the rest)."""
    items = [
        crs.ItemDraft(c, "google_ads", f"cmp-{c}", 1000.0, 1000.0 * (1 + move if i == 0 else 1 - move))
        for i, c in enumerate(channels)
    ]
    return crs.ChangeRequestDraft(
        kind="reallocation",
        requested_by=requested_by,
        objective="revenue",
        summary=f"move {move:.0%} from {', '.join(channels[1:])} to {channels[0]}",
        items=items,
        expected_gain=120.0,
        gain_p05=-10.0,
        gain_p95=250.0,
        probability_of_improvement=0.9,
        verdicts=[{"rule": "max_swing_per_change", "outcome": "pass", "message": "20% max"}],
        **kw,  # type: ignore[arg-type]
    )


def make_pending(engine: Engine, clock: SimulatedClock, **kw: object) -> int:
    with session_scope(engine) as s:
        cr = crs.create(s, draft=draft(**kw), now=clock.now())  # type: ignore[arg-type]
        crs.transition(s, change_request_id=cr.id, event=Event.SUBMIT, actor="planner", now=clock.now())
        return cr.id


@dataclass
class Service:
    app: FastAPI
    url: str
    slack: FakeSlack
    client: WebClient
    approved: list[int]

    @property
    def interactions(self) -> str:
        return self.url + "/slack/interactions"


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack(signing_secret=SECRET, bot_token="xoxb-test") as slack:
        yield slack


@pytest.fixture
def service(
    settings: Settings,
    engine: Engine,
    clock: SimulatedClock,
    fake_slack: FakeSlack,
    role_tokens: dict[str, str],
) -> Iterator[Service]:
    """The real service on a loopback port, with the real slack-sdk client pointed at the fake Slack."""
    approved: list[int] = []
    client = WebClient(token="xoxb-test", base_url=fake_slack.api_url)
    app = create_app(settings=settings, engine=engine, clock=clock, slack=client, on_approved=approved.append)
    server = ServerThread(app).start()
    try:
        yield Service(app, server.url, fake_slack, client, approved)
    finally:
        server.stop()


@pytest.fixture
def api(
    settings: Settings, engine: Engine, clock: SimulatedClock, role_tokens: dict[str, str]
) -> Iterator[httpx.Client]:
    """The service (no Slack) on a loopback port, and an HTTP client for it."""
    server = ServerThread(create_app(settings=settings, engine=engine, clock=clock)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


def now_ts(clock: SimulatedClock) -> int:
    return int(clock.now().timestamp())


FIXED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
Factory = Callable[..., int]
