"""The scenario file: the example loads, and every mistake names the file, the key, the line and the fix."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from budgetloop.errors import InputError
from connectors.sandbox.scenario import (
    FreezeEvent,
    ScenarioError,
    ShockEvent,
    hill,
    load_scenario,
    parse_scenario,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "scenario.yaml"


def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def test_the_example_loads_with_its_contract_values() -> None:
    s = load_scenario(EXAMPLE)
    assert s.name == "example-ecommerce"
    assert s.first_loop_day == date(2026, 1, 5)
    assert s.channel_names == ["search", "social_prospecting", "retail_media", "video"]
    assert [r.name for r in s.regions] == ["national"]
    assert s.regions[0].reach_of("search") == 1.0
    assert isinstance(s.events[0], FreezeEvent) and s.events[0].reason == "Spring collection launch"
    assert isinstance(s.events[1], ShockEvent) and s.events[1].factor == 0.7
    assert s.history_variation == 0.3


def test_scale_makes_the_steady_state_roi_at_the_budget_what_the_file_says() -> None:
    s = load_scenario(EXAMPLE)
    for channel in s.channels:
        b = channel.daily_budget
        assert channel.curve(b) / b == pytest.approx(channel.roi_at_budget, rel=1e-12)
        # by hand for search: half 3500, shape 1.2
    search = s.channel("search")
    h = 4000**1.2 / (4000**1.2 + 3500**1.2)
    assert search.scale == pytest.approx(1.6 * 4000 / h, rel=1e-12)
    assert float(hill(3500.0, 3500.0, 1.2)) == pytest.approx(0.5)
    assert float(hill(0.0, 3500.0, 1.2)) == 0.0


def test_shock_factor_applies_from_its_start_day() -> None:
    s = load_scenario(EXAMPLE)
    assert s.shock_factor("social_prospecting", date(2026, 4, 5)) == 1.0
    assert s.shock_factor("social_prospecting", date(2026, 4, 6)) == 0.7
    assert s.shock_factor("search", date(2026, 12, 31)) == 1.0


def test_defaults_for_optional_keys() -> None:
    data = example()
    del data["history_variation"], data["events"]
    del data["channels"][0]["learning"]
    data["baseline"] = {"daily_revenue": 1000}
    s = parse_scenario(data)
    assert s.history_variation == 0.3 and s.events == []
    assert s.baseline.weekly == (1.0,) * 7 and s.baseline.trend_per_year == 0.0
    assert s.channels[0].learning.change_threshold == 0.2 and s.channels[0].learning.days == 7


def _mutate(path: str, value: Any) -> dict[str, Any]:
    """The example with ``value`` put at a dotted path (``channels.2.saturation.half``); None deletes."""
    data = copy.deepcopy(example())
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = data
    for p in parts[:-1]:
        node = node[p]
    if value is None:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("channels.2.saturation.half", -5, "channels[2].saturation.half", "greater than 0"),
        ("channels.1.platform", "tiktok", "channels[1].platform", "unknown platform 'tiktok'"),
        ("channels.0.adstock.decay", 1.0, "channels[0].adstock.decay", "less than 1"),
        ("channels.0.learning.efficiency", 1.5, "channels[0].learning.efficiency", "less than or equal to 1"),
        (
            "channels.0.budget",
            10,
            "channels[0].budget",
            "unknown key — remove it or check its spelling (keys h",
        ),
        ("events.1.chanel", "search", "events[1].chanel", "keys here: type, channel, start, factor, reason"),
        ("channels.3.roi_at_budget", None, "channels[3].roi_at_budget", "required key is missing"),
        ("baseline.weekly", [1, 1, 1], "baseline.weekly", "needs 7 multipliers"),
        ("noise", "lots", "noise", "valid number"),
        ("currency", "usd", "currency", "pattern"),
        ("events.1.factor", -0.5, "events[1].factor", "greater than or equal to 0"),
        ("events.0.type", "blackout", "events[0].type", "`freeze` or `shock`"),
        ("events.1.channel", "tv", "events[1].channel", "unknown channel `tv`"),
        ("events.0.end", date(2026, 3, 1), "events[0].end", "before it starts"),
        ("events.0.start", date(2024, 3, 1), "events[0].start", "before the scenario's start"),
        ("events.2.end", date(2025, 12, 1), "events[2].end", "before it starts"),
        ("channels.3.name", "search", "channels[3].name", "duplicate channel name `search`"),
    ],
)
def test_each_mistake_names_its_key(path: str, value: Any, key: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_scenario(_mutate(path, value), source="my.yaml")
    err = caught.value
    assert err.file == "my.yaml"
    assert err.key == key
    assert words in str(err)
    assert str(err).startswith(f"my.yaml, `{key}`")


def test_a_freeze_entirely_in_the_history_is_refused() -> None:
    data = example()
    data["events"][0].update(start=date(2025, 6, 1), end=date(2025, 6, 7))
    with pytest.raises(InputError, match=r"before the loop's first day 2026-01-05, so it could never stop"):
        parse_scenario(data)


def test_every_problem_is_listed_not_only_the_first() -> None:
    data = _mutate("channels.2.saturation.half", 0)
    data["channels"][0]["adstock"]["decay"] = -1
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    keys = " ".join(caught.value.problems)
    assert "`channels[0].adstock.decay`" in keys and "`channels[2].saturation.half`" in keys
    # one line each, each with its own fix (a single fix after them all read as the last one's)
    lines = str(caught.value).splitlines()
    assert lines[0] == "<scenario>: 2 problems in the scenario:"
    assert [line.startswith("  - `channels[") for line in lines[1:]] == [True, True]


def _with_regions(regions: list[dict[str, Any]]) -> dict[str, Any]:
    data = example()
    data["regions"] = regions
    return data


def test_regions_validate_their_shares() -> None:
    ok = parse_scenario(
        _with_regions(
            [
                {"name": "north", "baseline_share": 0.4, "reach": {"search": 0.5}},
                {"name": "south", "baseline_share": 0.6, "reach": {"search": 0.5}},
            ]
        )
    )
    assert ok.regions[0].reach_of("search") == 0.5
    assert ok.regions[0].reach_of("video") == 0.4  # missing reach follows the baseline share
    with pytest.raises(InputError, match=r"baseline_share values sum to 0.9, not 1") as caught:
        parse_scenario(
            _with_regions([{"name": "a", "baseline_share": 0.5}, {"name": "b", "baseline_share": 0.4}])
        )
    assert caught.value.key == "regions"
    with pytest.raises(InputError, match=r"reach shares of `search` sum to 0.8") as caught:
        parse_scenario(
            _with_regions(
                [
                    {"name": "a", "baseline_share": 0.5, "reach": {"search": 0.4}},
                    {"name": "b", "baseline_share": 0.5, "reach": {"search": 0.4}},
                ]
            )
        )
    assert caught.value.key == "regions[*].reach.search"
    with pytest.raises(InputError, match=r"reach given for unknown channel `tv`") as caught:
        parse_scenario(_with_regions([{"name": "a", "baseline_share": 1.0, "reach": {"tv": 1.0}}]))
    assert caught.value.key == "regions[0].reach.tv"
    with pytest.raises(InputError, match="duplicate region name"):
        parse_scenario(
            _with_regions([{"name": "a", "baseline_share": 0.5}, {"name": "a", "baseline_share": 0.5}])
        )


def test_file_errors_carry_the_yaml_line(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("half: 5000", "half: -5000")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    expected_line = next(i for i, line in enumerate(text.splitlines(), 1) if "half: -5000" in line)
    with pytest.raises(InputError) as caught:
        load_scenario(path)
    assert caught.value.file == str(path)
    assert caught.value.key == "channels[2].saturation.half"
    assert f"(line {expected_line})" in str(caught.value)


def test_unreadable_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the scenario file: it does not exist"):
        load_scenario(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nchannels: [unclosed\n")
    with pytest.raises(InputError, match=r"invalid YAML at line \d+"):
        load_scenario(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="must be a YAML mapping at the top level, got list"):
        load_scenario(listed)


@pytest.mark.parametrize("bad", ["2025-02-30", "2025-13-01"])
def test_a_date_that_is_no_calendar_day_names_its_key_and_line(tmp_path: Path, bad: str) -> None:
    text = EXAMPLE.read_text().replace("start: 2025-01-06", f"start: {bad}")
    assert bad in text
    path = tmp_path / "bad-date.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_scenario(path)
    assert caught.value.key == "start"
    assert f"got '{bad}'" in str(caught.value) and "(line 3)" in str(caught.value)


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys silently: a scenario could state one noise and run another."""
    text = EXAMPLE.read_text()
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("noise:"))
    path = tmp_path / "twice.yaml"
    path.write_text(text + "noise: 0.5\n")
    with pytest.raises(InputError) as caught:
        load_scenario(path)
    assert caught.value.file == str(path) and caught.value.key == "noise"
    last = len(text.splitlines()) + 1
    assert f"duplicate key at line {last} (first given on line {first})" in str(caught.value)
