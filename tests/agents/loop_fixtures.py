"""Shared set-up for the executor and monitor tests: a small market behind the real sandbox over HTTP,
a migrated database, a policy, approved change requests, and a predictor built from the market truth.

Not a test module: ``test_execute*.py`` and ``test_monitor*.py`` import it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from agents.ingest import run_ingest
from budgetloop.clock import SimulatedClock
from budgetloop.db.loop import ChangeRequest
from budgetloop.db.session import make_engine, session_factory, session_scope, upgrade_database
from budgetloop.lifecycle import Event
from budgetloop.store import change_requests as requests
from connectors.registry import Connectors, sandbox_connectors
from connectors.sandbox.market import Market
from connectors.sandbox.scenario import Scenario, parse_scenario
from connectors.sandbox.server import SandboxServer
from guardrails.loading import parse_policy
from guardrails.policy import Policy

REPO_ROOT_HINT = str(Path(__file__).resolve().parents[2])
START = date(2026, 1, 5)
HISTORY_DAYS = 7
D0 = START + timedelta(days=HISTORY_DAYS)  # the loop's first day: execution happens on it

CHANNELS = {  # channel -> (platform, daily budget)
    "search": ("google_ads", 4000.0),
    "social": ("meta_ads", 6000.0),
    "retail": ("retail_media", 2000.0),
}


def scenario(
    *, shock: tuple[str, date, float] | None = None, noise: float = 0.02, history_days: int = HISTORY_DAYS
) -> Scenario:
    events: list[dict[str, Any]] = []
    if shock is not None:
        events.append(
            {"type": "shock", "channel": shock[0], "start": shock[1].isoformat(), "factor": shock[2]}
        )
    return parse_scenario(
        {
            "name": "executor-tests",
            "start": (D0 - timedelta(days=history_days)).isoformat(),
            "history_days": history_days,
            "seed": 3,  # no day of the first week after D0 falls outside the 90% band by chance
            "currency": "USD",
            "baseline": {"daily_revenue": 20000, "trend_per_year": 0.0, "yearly_amplitude": 0.0},
            "noise": noise,
            "history_variation": 0.1 if history_days < 60 else 0.3,
            "channels": [
                {
                    "name": name,
                    "platform": platform,
                    "daily_budget": budget,
                    "adstock": {"decay": 0.3},
                    "saturation": {"half": budget * 1.2, "shape": 1.2},
                    "roi_at_budget": 1.5,
                    "learning": {"change_threshold": 0.3, "days": 5, "efficiency": 0.9},
                }
                for name, (platform, budget) in CHANNELS.items()
            ],
            "events": events,
        }
    )


POLICY_YAML = """
version: 1
timezone: UTC
autonomy: approval
budget: {{total_daily_max: 20000}}
change:
  max_swing_per_change: 0.20
  max_swing_per_week: 0.30
  min_days_between_changes: 3
  min_probability_of_improvement: 0.5
  min_expected_gain: 0.0
channels:
  search: {{min_daily: 500, max_daily: 9000}}
  social: {{min_daily: 500, max_daily: 9000}}
  retail: {{min_daily: 500, max_daily: 9000}}
approval: {{approvers: [U0APPROVER]}}
monitoring:
  band: 0.90
  rollback_after_days_outside: 3
  evaluation_days: {evaluation_days}
  require_approval_for_rollback: {require_approval}
{extra}
"""


def policy(*, evaluation_days: int = 5, require_approval: bool = False, extra: str = "") -> Policy:
    text = POLICY_YAML.format(
        evaluation_days=evaluation_days, require_approval=str(require_approval).lower(), extra=extra
    )
    return parse_policy(text, "<test policy>")


def at(day: date, hour: int = 9, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


@dataclass
class Loop:
    """One test's world: sandbox server, connectors, database and a simulated clock on D0."""

    server: SandboxServer
    connectors: Connectors
    sessions: sessionmaker[Session]
    clock: SimulatedClock
    database_url: str

    @property
    def market(self) -> Market:
        return self.server.market  # type: ignore[return-value]

    def applied(self, key_prefix: str | None = None) -> list[Any]:
        return [
            a
            for a in self.server.applied()
            if key_prefix is None or (a.idempotency_key or "").startswith(key_prefix)
        ]

    def live(self) -> dict[str, float]:
        return {ch: round(self.market.budget(ch), 2) for ch in CHANNELS}

    def next_day(self) -> date:
        """Simulate today, move the clock to tomorrow 09:00, ingest the day just simulated; return it."""
        today = self.market.today()
        self.server.advance_to(today + timedelta(days=1))
        self.clock.set(at(today + timedelta(days=1)))
        self.ingest(today)
        return today

    def ingest(self, day: date) -> None:
        with session_scope(self.sessions) as session:
            run_ingest(session, self.connectors, start=day, end=day, now=self.clock.now())


#: the connectors' HTTP timeout in these tests: several times a loaded CI machine's slowest answer (at
#: 0.5 s, a first call under load timed out and came back as a replay of itself), and shorter than
#: the hang of the faults that test a timeout (``HANG``)
CLIENT_TIMEOUT = 2.0
HANG = 2.5 * CLIENT_TIMEOUT


@contextmanager
def loop(database_url: str, sc: Scenario | None = None, **server_kw: Any) -> Iterator[Loop]:
    upgrade_database(database_url)
    engine = make_engine(database_url)
    market = Market(sc or scenario())
    market.advance_to(D0)
    with SandboxServer(market, **server_kw) as server:
        connectors = sandbox_connectors(server.base_url, sleep=lambda _s: None, timeout=CLIENT_TIMEOUT)
        try:
            clock = SimulatedClock(at(D0))
            world = Loop(server, connectors, session_factory(engine), clock, database_url)
            with session_scope(world.sessions) as session:
                run_ingest(
                    session,
                    connectors,
                    start=market.scenario.start,
                    end=D0 - timedelta(days=1),
                    now=clock.now(),
                )
            yield world
        finally:
            connectors.close()
            engine.dispose()


def approved_request(
    world: Loop,
    moves: Mapping[str, float],
    *,
    kind: str = "reallocation",
    approver: str = "U0APPROVER",
    details: Mapping[str, Any] | None = None,
    model_version_id: int | None = None,
) -> int:
    """A request planned from the live budgets (channel -> new budget), submitted and approved now."""
    campaigns = {c.channel: c for conn in world.connectors.platforms.values() for c in conn.list_campaigns()}
    live = world.live()
    items = [
        requests.ItemDraft(ch, campaigns[ch].platform, campaigns[ch].external_id, live[ch], after)
        for ch, after in moves.items()
    ]
    now = world.clock.now()
    with session_scope(world.sessions) as session:
        cr = requests.create(
            session,
            draft=requests.ChangeRequestDraft(
                kind=kind,
                requested_by="planner",
                objective="revenue",
                summary="test move",
                items=items,
                expected_gain=120.0,
                gain_p05=20.0,
                gain_p95=220.0,
                probability_of_improvement=0.9,
                details=dict(details or {}),
                model_version_id=model_version_id,
            ),
            now=now,
        )
        requests.transition(session, change_request_id=cr.id, event=Event.SUBMIT, actor="planner", now=now)
        requests.transition(session, change_request_id=cr.id, event=Event.APPROVE, actor=approver, now=now)
        return cr.id


def load(world: Loop, request_id: int) -> ChangeRequest:
    with session_scope(world.sessions) as session:
        cr = requests.get(session, change_request_id=request_id)
        assert cr is not None
        _ = [i.state for i in cr.items]
        return cr


class TruthPredictor:
    """The forecast a perfect model would have promised: the market's true expected revenue for the day
    (baseline plus each channel's media revenue at the spend actually delivered), without any shock the
    model could not have known about, with the band from the scenario's noise. A real component built
    from the simulator's truth, not a stand-in for our code."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.calls: list[tuple[int, date, dict[str, float]]] = []

    def __call__(
        self, cr: ChangeRequest, day: date, spend: Mapping[str, float]
    ) -> tuple[float, float, float]:
        self.calls.append((cr.id, day, dict(spend)))
        sc = self.market.scenario
        outcome = self.market.outcome(day)
        media = sum(
            c.media_revenue / max(sc.shock_factor(name, day), 1e-9) for name, c in outcome.channels.items()
        )
        mean = outcome.baseline + media
        band = float((cr.monitoring_plan or {}).get("band", 0.9))
        z = statistics.NormalDist().inv_cdf(0.5 + band / 2)
        return mean, mean * (1 - z * sc.noise), mean * (1 + z * sc.noise)


def audit_story(world: Loop, subject_ids: Sequence[int]) -> list[tuple[str, str]]:
    """(subject id, action) of every audit entry about these requests, in chain order."""
    from sqlalchemy import select

    from budgetloop.db.audit import AuditEntry

    wanted = {str(i) for i in subject_ids}
    with session_scope(world.sessions) as session:
        rows = session.execute(
            select(AuditEntry.subject_id, AuditEntry.action)
            .where(AuditEntry.subject_type == "change_request")
            .order_by(AuditEntry.seq)
        ).all()
    return [(str(s), str(a)) for s, a in rows if str(s) in wanted]


def demo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`budgetloop demo ARGS` in a process of its own, as a user runs it."""
    code = "import sys; from budgetloop.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, "demo", *args], capture_output=True, text=True)
