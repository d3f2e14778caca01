"""A regional market behind the real sandbox, a migrated database and a Runtime on a simulated clock.

Not a test module: the experiment tests import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from agents.ingest import run_ingest
from agents.runtime import Runtime
from budgetloop.clock import SimulatedClock
from budgetloop.config import Settings
from budgetloop.db.session import make_engine, upgrade_database
from connectors.registry import sandbox_connectors
from connectors.sandbox.market import Market
from connectors.sandbox.scenario import Scenario, parse_scenario
from connectors.sandbox.server import SandboxServer
from guardrails.loading import parse_policy
from guardrails.policy import Policy

START = date(2025, 9, 1)
HISTORY_DAYS = 126
D0 = START + timedelta(days=HISTORY_DAYS)

REGIONS: list[dict[str, Any]] = [
    {"name": "north", "baseline_share": 0.30},
    {"name": "south", "baseline_share": 0.25},
    {"name": "east", "baseline_share": 0.20},
    {"name": "west", "baseline_share": 0.17},
    {"name": "coast", "baseline_share": 0.08},
]


def scenario(*, noise: float = 0.02, seed: int = 11) -> Scenario:
    return parse_scenario(
        {
            "name": "geo-experiments",
            "start": START.isoformat(),
            "history_days": HISTORY_DAYS,
            "seed": seed,
            "currency": "USD",
            "baseline": {"daily_revenue": 30000, "trend_per_year": 0.0, "yearly_amplitude": 0.1},
            "noise": noise,
            "history_variation": 0.2,
            "channels": [
                {
                    "name": name,
                    "platform": platform,
                    "daily_budget": budget,
                    "adstock": {"decay": 0.3},
                    "saturation": {"half": budget * 3, "shape": 1.0},
                    "roi_at_budget": roi,
                    "learning": {"change_threshold": 0.3, "days": 5, "efficiency": 0.9},
                }
                for name, platform, budget, roi in (
                    ("search", "google_ads", 4000.0, 1.5),
                    ("social", "meta_ads", 6000.0, 2.0),
                    ("retail", "retail_media", 2000.0, 1.2),
                )
            ],
            "regions": REGIONS,
        }
    )


def misleading_scenario(*, seed: int = 5) -> Scenario:
    """Social's budget always moved with the season (``follows_season``, no other variation in the
    history): the history cannot tell social's revenue from the season's, so a model fitted on it gets
    social's ROI (0.6) wrong, with a wide interval."""
    start = date(2025, 3, 1)
    return parse_scenario(
        {
            "name": "misleading-social",
            "start": start.isoformat(),
            "history_days": 400,
            "seed": seed,
            "currency": "USD",
            "baseline": {"daily_revenue": 30000, "trend_per_year": 0.0, "yearly_amplitude": 0.3},
            "noise": 0.02,
            "history_variation": 0.0,
            "channels": [
                {
                    "name": name,
                    "platform": platform,
                    "daily_budget": budget,
                    "adstock": {"decay": 0.3},
                    "saturation": {"half": budget * 10, "shape": 1.0},
                    "roi_at_budget": roi,
                    "follows_season": follows,
                    "learning": {"change_threshold": 0.3, "days": 5, "efficiency": 0.9},
                }
                for name, platform, budget, roi, follows in (
                    ("search", "google_ads", 4000.0, 1.5, 0.0),
                    ("social", "meta_ads", 6000.0, 0.6, 3.0),
                    ("retail", "retail_media", 2000.0, 1.2, 0.0),
                )
            ],
            "regions": REGIONS,
        }
    )


POLICY = """
version: 1
timezone: UTC
autonomy: approval
budget: {{total_daily_max: 20000}}
channels:
  search: {{min_daily: 500, max_daily: 9000}}
  social: {{min_daily: 500, max_daily: 9000}}
  retail: {{min_daily: 500, max_daily: 9000}}
approval: {{approvers: [U0APPROVER]}}
exploration_share: {exploration}
experiments: {{min_detectable_effect: 0.04, days: 14, max_holdout_share: 0.10}}
freeze_windows: {freezes}
"""


def policy(*, exploration: float = 0.05, freezes: str = "[]", kill_switch: bool = False) -> Policy:
    text = POLICY.format(exploration=exploration, freezes=freezes)
    if kill_switch:
        text += "kill_switch: true\n"
    return parse_policy(text, "<experiment test policy>")


def at(day: date, hour: int = 7, minute: int = 30) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


@dataclass
class World:
    server: SandboxServer
    rt: Runtime
    clock: SimulatedClock
    holder: dict[str, Policy]

    @property
    def market(self) -> Market:
        return self.server.market  # type: ignore[return-value]

    def set_policy(self, p: Policy) -> None:
        self.holder["policy"] = p

    def morning(self, day: date) -> None:
        """Simulate every day before ``day``, ingest yesterday, and stand at ``day`` 07:30."""
        self.server.advance_to(day)
        self.clock.set(at(day))
        yesterday = day - timedelta(days=1)
        with self.rt.unit_of_work() as session:
            run_ingest(session, self.rt.connectors, start=yesterday, end=yesterday, now=self.clock.now())


@contextmanager
def world(database_url: str, *, market: Market | None = None, p: Policy | None = None) -> Iterator[World]:
    market = market or Market(scenario())
    first = market.first_loop_day
    market.advance_to(first)
    upgrade_database(database_url)
    engine = make_engine(database_url)
    clock = SimulatedClock(at(first))
    holder = {"policy": p or policy()}
    with SandboxServer(market) as server:
        connectors = sandbox_connectors(server.base_url, sleep=lambda s: None)
        rt = Runtime(
            engine=engine,
            clock=clock,
            connectors=connectors,
            settings=Settings(database_url=database_url),
            policy_source=lambda session: (None, holder["policy"]),
        )
        with rt.unit_of_work() as session:
            run_ingest(
                session,
                connectors,
                start=market.scenario.start,
                end=first - timedelta(days=1),
                now=clock.now(),
            )
        try:
            yield World(server, rt, clock, holder)
        finally:
            connectors.close()
            engine.dispose()
