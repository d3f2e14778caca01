"""The demo's policy against its market, and a young account's first models.

A policy that does not describe the scenario's channels, or whose caps the starting budgets already
break, ends the demo before anything is written; without ``--policy`` an unseen market gets the
example's rules with bounds from its own budgets; a policy without approvers gets the simulated
marketers; a market with less history than the retrain's window trains on what it has.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from loop_fixtures import D0, demo_cli, loop, scenario

from agents.demo.market_policy import (
    DEMO_APPROVERS,
    check_policy_fits_market,
    policy_for_scenario,
    with_demo_approvers,
    with_scenario_freezes,
)
from agents.retrain import MIN_HOLDOUT_COVERAGE, MIN_TRAINING_DAYS, holdout_ok, retrain
from agents.runtime import FitOptions
from budgetloop.db.session import session_scope
from budgetloop.errors import InputError
from budgetloop.store import models as model_store
from connectors.sandbox.scenario import Scenario, parse_scenario
from guardrails.checker import check_executed
from guardrails.loading import parse_policy
from guardrails.records import CampaignState
from models.fitted import Holdout

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _market(budgets: dict[str, float], **extra: Any) -> Scenario:
    return parse_scenario(
        {
            "name": "two-channel",
            "start": "2024-03-04",
            "history_days": 364,
            "seed": 1,
            "currency": "USD",
            "baseline": {"daily_revenue": 20000, "trend_per_year": 0.0, "yearly_amplitude": 0.1},
            "noise": 0.05,
            "channels": [
                {
                    "name": name,
                    "platform": "google_ads",
                    "daily_budget": b,
                    "adstock": {"decay": 0.2},
                    "saturation": {"half": b, "shape": 1.1},
                    "roi_at_budget": 1.5,
                }
                for name, b in budgets.items()
            ],
            **extra,
        }
    )


def _policy(channels: str, cap: float = 5000) -> Any:
    return parse_policy(f"budget: {{total_daily_max: {cap}}}\nchannels:\n{channels}", "p.yaml")


def _problems(policy: Any, market: Scenario) -> str:
    with pytest.raises(InputError) as err:
        check_policy_fits_market(policy, market, source="p.yaml", scenario_source="s.yaml")
    return str(err.value)


def test_a_policy_must_name_exactly_the_markets_channels() -> None:
    market = _market({"search": 1500, "tiktok": 2500})
    extra = _policy("  search: {}\n  tiktok: {}\n  snapchat: {}\n")
    assert "['snapchat'], which the scenario (s.yaml) does not have" in _problems(extra, market)
    missing = _policy("  search: {}\n")
    assert "no entry for the scenario's ['tiktok']" in _problems(missing, market)
    check_policy_fits_market(
        _policy("  search: {}\n  tiktok: {}\n"), market, source="p.yaml", scenario_source="s.yaml"
    )


def test_starting_budgets_must_already_obey_the_caps_and_bounds() -> None:
    market = _market({"search": 1500, "tiktok": 2500})
    text = _problems(_policy("  search: {}\n  tiktok: {}\n", cap=3500), market)
    assert "sum to 4,000.00, above `budget.total_daily_max` 3,500.00" in text
    tight = parse_policy(
        "budget: {total_daily_max: 5000, total_monthly_max: 90000}\n"
        "channels:\n  search: {min_daily: 1600}\n  tiktok: {max_daily: 2000}\n",
        "p.yaml",
    )
    text = _problems(tight, market)
    assert "exceeds `budget.total_monthly_max` 90,000.00" in text  # 4,000 a day over 30 days
    assert (
        "`channels.search.min_daily` is 1,600.00, above the scenario's starting daily budget 1,500.00" in text
    )
    assert (
        "`channels.tiktok.max_daily` is 2,000.00, below the scenario's starting daily budget 2,500.00" in text
    )


def test_the_example_policy_fitted_to_an_unseen_market_keeps_its_rules() -> None:
    market = _market({"search": 1500, "tiktok": 2500})
    example_text = (EXAMPLES / "policy.yaml").read_text()
    example = parse_policy(example_text, "example")
    derived = parse_policy(policy_for_scenario(example_text, market), "derived")
    check_policy_fits_market(derived, market, source="derived", scenario_source="s.yaml")
    assert derived.budget.total_daily_max == 4000
    assert derived.channels["search"].min_daily == 375 and derived.channels["tiktok"].max_daily == 4000
    assert derived.change == example.change and derived.approval == example.approval
    assert derived.monitoring == example.monitoring and derived.freeze_windows == []


def test_a_policy_without_approvers_gets_the_simulated_marketers() -> None:
    text = "budget: {total_daily_max: 5000}\nchannels:\n  search: {}\nmonitoring: {band: 0.8}\n"
    new_text, policy, added = with_demo_approvers(text, parse_policy(text, "p.yaml"), source="p.yaml")
    assert added and policy.approval.approvers == list(DEMO_APPROVERS)
    assert policy.monitoring.band == 0.8
    assert yaml.safe_load(new_text)["approval"]["approvers"] == list(DEMO_APPROVERS)
    same = with_demo_approvers(new_text, policy, source="p.yaml")
    assert same == (new_text, policy, False)


def test_the_scenarios_freeze_events_become_the_policys_freeze_windows() -> None:
    """A freeze the scenario declares binds the loop whatever policy it runs under: the stored
    policy carries it, so the engine, the executor and the independent checker all see it."""
    market = _market(
        {"search": 1500, "tiktok": 2500},
        events=[
            {"type": "freeze", "start": "2025-05-11", "end": "2025-05-14", "reason": "launch"},
            {"type": "freeze", "start": "2025-06-02", "end": "2025-06-02"},
        ],
    )
    text = (
        "timezone: America/New_York\nbudget: {total_daily_max: 5000}\n"
        "channels:\n  search: {}\n  tiktok: {}\n"
        # Covers June 2nd in UTC as well (New York is four hours behind); a window for one channel
        # does not cover the launch.
        "freeze_windows:\n  - {start: 2025-06-01, end: 2025-06-02}\n"
        "  - {start: 2025-05-01, end: 2025-05-31, channels: [search]}\n"
    )
    policy = parse_policy(text, "p.yaml")
    new_text, merged, added = with_scenario_freezes(text, policy, market, source="p.yaml")
    # The launch, cut where the policy's May window already freezes search: tiktok alone over it.
    # June 2nd is covered by the policy's own window (in New York, four hours behind UTC).
    assert added == 1 and len(merged.freeze_windows) == 3
    window = merged.freeze_windows[-1]
    assert window.reason == "scenario freeze: launch" and window.channels == ["tiktok"]
    start, stop = window.interval(ZoneInfo("America/New_York"))
    assert (start, stop) == (datetime(2025, 5, 11, tzinfo=UTC), datetime(2025, 5, 15, tzinfo=UTC))
    assert yaml.safe_load(new_text)["freeze_windows"][-1]["reason"] == "scenario freeze: launch"
    assert with_scenario_freezes(new_text, merged, market, source="p.yaml")[2] == 0
    # Without the policy's windows every channel is frozen by one window per event, in UTC days.
    bare = parse_policy("budget: {total_daily_max: 5000}\nchannels:\n  search: {}\n  tiktok: {}\n", "b")
    _, alone, n = with_scenario_freezes(
        "budget: {total_daily_max: 5000}\nchannels:\n  search: {}\n  tiktok: {}\n", bare, market, source="b"
    )
    assert n == 2 and [w.channels for w in alone.freeze_windows] == [None, None]
    assert alone.freeze_windows[1].interval(ZoneInfo("UTC")) == (
        datetime(2025, 6, 2, tzinfo=UTC),
        datetime(2025, 6, 3, tzinfo=UTC),
    )

    states = {ch: CampaignState(channel=ch) for ch in ("search", "tiktok")}
    # tiktok alone moves: the policy's own May window keeps search frozen past the launch.
    before, after = {"search": 1500.0, "tiktok": 2500.0}, {"search": 1500.0, "tiktok": 2300.0}

    def rules(at: datetime, p: Any) -> list[str]:
        found = check_executed(before=before, after=after, states=states, history=[], policy=p, at=at)
        return [v.rule for v in found]

    inside = datetime(2025, 5, 12, 9, 30, tzinfo=UTC)  # the reviewer's change, inside the launch
    for p in (merged, alone):
        assert "freeze_window" in rules(inside, p)
        assert "freeze_window" in rules(datetime(2025, 5, 14, 23, 59, tzinfo=UTC), p)
        assert "freeze_window" not in rules(datetime(2025, 5, 15, 0, 0, tzinfo=UTC), p)
    assert "freeze_window" not in rules(datetime(2025, 5, 12, 9, 30, tzinfo=UTC), bare)


def test_overlapping_freeze_events_become_one_window() -> None:
    """The scenario accepts freeze events that overlap or repeat; the policy refuses overlapping
    windows, so the demo would have died on windows the user never wrote."""
    market = _market(
        {"search": 1500, "tiktok": 2500},
        events=[
            {"type": "freeze", "start": "2025-05-11", "end": "2025-05-14", "reason": "launch"},
            {"type": "freeze", "start": "2025-05-14", "end": "2025-05-16", "reason": "sale"},
            {"type": "freeze", "start": "2025-05-11", "end": "2025-05-14", "reason": "launch"},
            {"type": "freeze", "start": "2025-05-17", "end": "2025-05-17"},
        ],
    )
    text = "budget: {total_daily_max: 5000}\nchannels:\n  search: {}\n  tiktok: {}\n"
    _, merged, added = with_scenario_freezes(text, parse_policy(text, "p"), market, source="p")
    assert added == 1
    (window,) = merged.freeze_windows
    assert window.interval(ZoneInfo("UTC")) == (
        datetime(2025, 5, 11, tzinfo=UTC),
        datetime(2025, 5, 18, tzinfo=UTC),
    )
    assert window.reason == "scenario freeze: launch; sale"


def test_the_demo_refuses_a_policy_for_another_market_before_writing_anything(tmp_path: Path) -> None:
    market = tmp_path / "two.yaml"
    doc = yaml.safe_load((EXAMPLES / "scenario.yaml").read_text())
    doc["channels"] = doc["channels"][:2]
    market.write_text(yaml.safe_dump(doc))
    db = tmp_path / "demo.db"
    result = demo_cli(
        "--weeks",
        "1",
        "--scenario",
        str(market),
        "--policy",
        str(EXAMPLES / "policy.yaml"),
        "--database-url",
        f"sqlite:///{db}",
        "--report-dir",
        str(tmp_path / "report"),
    )
    assert result.returncode == 2, result.stderr
    assert "does not fit the scenario's market" in result.stderr
    assert "['retail_media', 'video'], which the scenario" in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists() and not (tmp_path / "report").exists()


def test_a_noisy_markets_holdout_passes_when_its_band_holds_the_days() -> None:
    assert holdout_ok(Holdout(periods=28, mape=0.12, coverage_90=0.5))  # accurate enough anyway
    assert holdout_ok(Holdout(periods=28, mape=0.23, coverage_90=25 / 28))  # noise, honestly banded
    assert not holdout_ok(Holdout(periods=28, mape=0.23, coverage_90=19 / 28))
    assert 19 / 28 < MIN_HOLDOUT_COVERAGE <= 20 / 28
    assert not holdout_ok(Holdout(periods=28, mape=0.23))  # stored before the band was recorded


def test_a_young_account_waits_for_eight_weeks_then_trains_on_whole_four_week_blocks(sqlite_url: str) -> None:
    options = FitOptions(method="svi", samples=100, holdout_days=0)
    with loop(sqlite_url, scenario(history_days=MIN_TRAINING_DAYS - 6)) as world:
        with session_scope(world.sessions) as session:
            outcome = retrain(session, now=world.clock.now(), options=options)
        assert outcome.version_id is None and not outcome.promoted
        assert f"only {MIN_TRAINING_DAYS - 6} day(s) of clean data" in outcome.reason
        assert "waits 6 more day(s)" in outcome.reason
        for _ in range(6):
            world.next_day()
        with session_scope(world.sessions) as session:
            outcome = retrain(session, now=world.clock.now(), options=options)
            assert outcome.version_id is not None, outcome.reason
            version = model_store.get(session, model_version_id=outcome.version_id)
            assert version is not None
            assert version.data_start == world.market.scenario.start
            assert version.data_end == D0 + timedelta(days=5)
        for _ in range(4):  # 60 days: the window keeps whole four-week blocks, the latest 56 days
            world.next_day()
        with session_scope(world.sessions) as session:
            outcome = retrain(session, now=world.clock.now(), options=options)
            version = model_store.get(session, model_version_id=outcome.version_id or -1)
            assert version is not None
            assert version.data_start == world.market.scenario.start + timedelta(days=4)
