"""The scenario file: the simulated market behind the sandbox ad platforms (INTERFACES section 4).

A scenario is validated in two passes. Pydantic checks each value's type and range; then
:func:`_cross_check` checks what spans several keys (unique channel names, event dates against the
history, shock channels that exist, region shares that sum to 1). Every problem becomes an
:class:`~budgetloop.errors.InputError` naming the file, the key path as the user wrote it
(``channels[2].saturation.half``), the YAML line where known, and what to change.

The curve math the market and the truth share lives here too (:func:`hill`, :meth:`ChannelSpec.scale`),
so both compute the same numbers from the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from budgetloop.errors import InputError
from budgetloop.fileio import invalid_yaml, read_user_text, reject_duplicate_keys

__all__ = [
    "PLATFORMS",
    "Adstock",
    "Baseline",
    "ChannelSpec",
    "FreezeEvent",
    "Learning",
    "RegionSpec",
    "Saturation",
    "Scenario",
    "ScenarioError",
    "ShockEvent",
    "hill",
    "load_scenario",
    "parse_scenario",
]

PLATFORMS: tuple[str, ...] = ("google_ads", "meta_ads", "retail_media")
Platform = Literal["google_ads", "meta_ads", "retail_media"]
_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
_SHARE_TOLERANCE = 1e-6
_EXAMPLE = "see examples/scenario.yaml for a complete, valid scenario"


def hill(x: Any, half: Any, shape: Any) -> Any:
    """Hill saturation ``x^shape / (x^shape + half^shape)`` (0 at 0, 1/2 at ``half``), elementwise."""
    xs = np.power(np.maximum(x, 0.0), shape)
    return xs / (xs + np.power(half, shape))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Baseline(_Strict):
    """Revenue without media: level x trend x yearly seasonality x weekday multiplier."""

    daily_revenue: float = Field(gt=0)
    trend_per_year: float = Field(default=0.0, gt=-1.0, le=10.0)
    yearly_amplitude: float = Field(default=0.0, ge=0.0, lt=1.0)
    weekly: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

    @field_validator("weekly")
    @classmethod
    def _seven_positive_days(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) != 7:
            raise ValueError(f"needs 7 multipliers, Monday..Sunday; got {len(value)}")
        for i, v in enumerate(value):
            if not v > 0:
                raise ValueError(f"weekday {i} multiplier must be > 0, got {v}")
        return value

    def at(self, day_index: int, weekday: int) -> float:
        """``baseline(d)`` exactly as INTERFACES section 4 writes it (d = days since ``start``)."""
        d = float(day_index)
        return (
            self.daily_revenue
            * (1.0 + self.trend_per_year * d / 365.25)
            * (1.0 + self.yearly_amplitude * math.sin(2.0 * math.pi * d / 365.25))
            * self.weekly[weekday]
        )


class Adstock(_Strict):
    decay: float = Field(ge=0.0, lt=1.0)


class Saturation(_Strict):
    half: float = Field(gt=0)
    shape: float = Field(gt=0, le=10.0)


class Learning(_Strict):
    change_threshold: float = Field(default=0.2, ge=0.0)
    days: int = Field(default=7, ge=0, le=90)
    efficiency: float = Field(default=0.85, gt=0.0, le=1.0)


class ChannelSpec(_Strict):
    name: str = Field(pattern=_NAME_PATTERN)
    platform: Platform
    daily_budget: float = Field(gt=0)
    adstock: Adstock
    saturation: Saturation
    roi_at_budget: float = Field(ge=0.0)
    learning: Learning = Field(default_factory=Learning)
    # how strongly the history's budgets moved with the baseline's yearly season (an elasticity: the
    # budget scales with season ** follows_season); 0 = unrelated. A channel that always spent more in
    # the high season is the classic trap for a model fitted on history alone.
    follows_season: float = Field(default=0.0, ge=0.0, le=5.0)

    @property
    def scale(self) -> float:
        """``scale_c = roi_at_budget x daily_budget / hill(daily_budget)``: steady-state ROI at the budget."""
        h = float(hill(self.daily_budget, self.saturation.half, self.saturation.shape))
        return self.roi_at_budget * self.daily_budget / h

    def curve(self, spend: Any) -> Any:
        """Steady-state media revenue per day at a constant ``spend`` (no learning, no shock)."""
        return self.scale * hill(spend, self.saturation.half, self.saturation.shape)


class FreezeEvent(_Strict):
    """No budget change may execute from ``start`` to ``end`` inclusive (enforced by the guardrails)."""

    type: Literal["freeze"]
    start: date
    end: date
    reason: str = ""


class ShockEvent(_Strict):
    """The channel's scale is multiplied by ``factor`` from ``start`` on."""

    type: Literal["shock"]
    channel: str
    start: date
    factor: float = Field(ge=0.0, le=100.0)
    reason: str = ""


Event = Annotated[FreezeEvent | ShockEvent, Field(discriminator="type")]


class RegionSpec(_Strict):
    """A geographic region: its share of the baseline and of each channel's reach.

    A channel missing from ``reach`` reaches the region in proportion to its ``baseline_share``.
    """

    name: str = Field(pattern=_NAME_PATTERN)
    baseline_share: float = Field(ge=0.0, le=1.0)
    reach: dict[str, float] = Field(default_factory=dict)

    @field_validator("reach")
    @classmethod
    def _shares_in_unit_interval(cls, value: dict[str, float]) -> dict[str, float]:
        for channel, share in value.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"reach share of `{channel}` must be within [0, 1], got {share}")
        return value

    def reach_of(self, channel: str) -> float:
        return self.reach.get(channel, self.baseline_share)


class ScenarioError(InputError):
    """An invalid scenario; ``problems`` lists every problem found (key, what, line, fix)."""

    def __init__(
        self, message: str, *, file: str, problems: list[str], key: str | None = None, fix: str | None = None
    ) -> None:
        self.problems = problems
        super().__init__(message, file=file, key=key, fix=fix)


def _national() -> list[RegionSpec]:
    return [RegionSpec(name="national", baseline_share=1.0)]


class Scenario(_Strict):
    name: str = Field(min_length=1)
    start: date
    history_days: int = Field(ge=0, le=3660)
    seed: int = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    baseline: Baseline
    noise: float = Field(ge=0.0, le=0.2)
    history_variation: float = Field(default=0.3, ge=0.0, le=1.0)
    channels: list[ChannelSpec] = Field(min_length=1)
    events: list[Event] = Field(default_factory=list)
    regions: list[RegionSpec] = Field(default_factory=_national, min_length=1)

    @property
    def first_loop_day(self) -> date:
        return self.start + timedelta(days=self.history_days)

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def channel(self, name: str) -> ChannelSpec:
        for spec in self.channels:
            if spec.name == name:
                return spec
        raise KeyError(
            f"no channel `{name}` in scenario `{self.name}` (channels: {', '.join(self.channel_names)})"
        )

    def day_index(self, day: date) -> int:
        """Days since ``start`` (0 on ``start``)."""
        return (day - self.start).days

    def shock_factor(self, channel: str, day: date) -> float:
        """Product of the factors of every shock on ``channel`` that has started by ``day``."""
        factor = 1.0
        for event in self.events:
            if isinstance(event, ShockEvent) and event.channel == channel and event.start <= day:
                factor *= event.factor
        return factor

    def freezes(self) -> list[FreezeEvent]:
        return [e for e in self.events if isinstance(e, FreezeEvent)]

    def shocks(self) -> list[ShockEvent]:
        return [e for e in self.events if isinstance(e, ShockEvent)]


# ---------------------------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a date-shaped scalar that is no calendar date (2024-02-30,
    month 13) stays text, so validation names its key and line instead of PyYAML raising."""


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file; :class:`InputError` names the file, key and line."""
    source = str(path)
    text = read_user_text(path, what="the scenario file")
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader (below)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise invalid_yaml(exc, source=source) from None
    reject_duplicate_keys(text, source=source)
    if not isinstance(data, dict):
        raise InputError(
            f"a scenario must be a YAML mapping at the top level, got {type(data).__name__}",
            file=source,
            fix=_EXAMPLE,
        )
    return _validate(data, source, root)


def parse_scenario(data: dict[str, Any], *, source: str = "<scenario>") -> Scenario:
    """Validate an already-parsed scenario mapping (``source`` names it in errors)."""
    return _validate(data, source, None)


def _validate(data: dict[str, Any], source: str, yaml_root: Any) -> Scenario:
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [_from_pydantic(err) for err in exc.errors()]
        raise _problems_error(problems, source, yaml_root) from None
    problems = _cross_check(scenario)
    if problems:
        raise _problems_error(problems, source, yaml_root)
    return scenario


_Problem = tuple[tuple[str | int, ...], str, str | None]  # (key path, what is wrong, how to fix)


_EVENT_KINDS: dict[str, type[BaseModel]] = {"freeze": FreezeEvent, "shock": ShockEvent}


def _from_pydantic(err: Any) -> _Problem:
    raw = list(err["loc"])
    # a discriminated union puts the tag between the index and the field: events[1].shock.factor
    loc: list[str | int] = [p for i, p in enumerate(raw) if not (i == 2 and raw[0] == "events")]
    kind = err["type"]
    fix: str | None = None
    message = err["msg"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc.append("type")
        message = "event `type` must be `freeze` or `shock`"
        fix = "use {type: freeze, start, end} or {type: shock, channel, start, factor}"
    elif kind == "extra_forbidden":
        message = "unknown key"
        allowed = _allowed_keys(raw[:-1])
        fix = "remove it or check its spelling" + (f" (keys here: {', '.join(allowed)})" if allowed else "")
    elif kind == "missing":
        message = "required key is missing"
        fix = "add it; " + _EXAMPLE
    elif kind == "literal_error" and loc and loc[-1] == "platform":
        message = f"unknown platform {err['input']!r}"
        fix = "use one of " + ", ".join(PLATFORMS)
    elif "input" in err and not isinstance(err["input"], dict | list):
        message = f"{message} (got {err['input']!r})"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return tuple(loc), message, fix


def _allowed_keys(parent: list[Any]) -> list[str]:
    """The keys the model at ``parent`` (a raw pydantic location) accepts."""
    model: Any = Scenario
    for part in parent:
        if isinstance(part, int):
            continue
        if part in _EVENT_KINDS:
            model = _EVENT_KINDS[part]
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        args = get_args(annotation)
        model = args[0] if args and get_origin(annotation) is list else annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


class _Problems(list[_Problem]):
    def add(self, path: tuple[str | int, ...], what: str, fix: str | None) -> None:
        self.append((path, what, fix))


def _cross_check(s: Scenario) -> list[_Problem]:
    """What pydantic cannot see field by field: names, dates and shares that span several keys."""
    problems = _Problems()
    first_use: dict[str, int] = {}
    for i, channel in enumerate(s.channels):
        if channel.name in first_use:
            problems.add(
                ("channels", i, "name"),
                f"duplicate channel name `{channel.name}` (also channels[{first_use[channel.name]}])",
                "give every channel a unique name",
            )
        first_use.setdefault(channel.name, i)
    _check_events(s, problems)
    _check_regions(s, problems)
    return problems


def _check_events(s: Scenario, problems: _Problems) -> None:
    horizon = s.first_loop_day + timedelta(days=3660)
    known = "use one of " + ", ".join(s.channel_names)
    for i, event in enumerate(s.events):
        if event.start < s.start:
            problems.add(
                ("events", i, "start"),
                f"{event.start} is before the scenario's start {s.start}",
                "move the event inside the simulated period",
            )
        if event.start > horizon:
            problems.add(
                ("events", i, "start"),
                f"{event.start} is more than ten years after the loop's first day",
                "check the year",
            )
        if isinstance(event, ShockEvent):
            if event.channel not in s.channel_names:
                problems.add(("events", i, "channel"), f"shock on unknown channel `{event.channel}`", known)
        elif event.end < event.start:
            problems.add(
                ("events", i, "end"),
                f"freeze ends ({event.end}) before it starts ({event.start})",
                "swap `start` and `end`",
            )
        elif event.end < s.first_loop_day:
            problems.add(
                ("events", i, "end"),
                f"freeze ends {event.end}, before the loop's first day {s.first_loop_day}, "
                "so it could never stop a change",
                "check the dates",
            )


def _check_regions(s: Scenario, problems: _Problems) -> None:
    first_use: dict[str, int] = {}
    known = "use one of " + ", ".join(s.channel_names)
    for i, region in enumerate(s.regions):
        if region.name in first_use:
            problems.add(
                ("regions", i, "name"),
                f"duplicate region name `{region.name}`",
                "give every region a unique name",
            )
        first_use.setdefault(region.name, i)
        for channel in region.reach:
            if channel not in s.channel_names:
                problems.add(
                    ("regions", i, "reach", channel), f"reach given for unknown channel `{channel}`", known
                )
    total = sum(r.baseline_share for r in s.regions)
    if abs(total - 1.0) > _SHARE_TOLERANCE:
        problems.add(
            ("regions",),
            f"baseline_share values sum to {total:.6g}, not 1",
            "make the regions' shares add up to 1",
        )
    for channel in s.channel_names:
        reach = sum(r.reach_of(channel) for r in s.regions)
        if abs(reach - 1.0) > _SHARE_TOLERANCE:
            problems.add(
                ("regions", "*", "reach", channel),
                f"reach shares of `{channel}` sum to {reach:.6g}, not 1",
                "make each channel's reach over the regions add up to 1 (a missing entry counts as the "
                "region's baseline_share)",
            )


def _key(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "*":
            out += "[*]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_of(root: Any, path: Sequence[str | int]) -> int | None:
    """The 1-based YAML line of the deepest node along ``path`` that exists."""
    node, line = root, None
    for part in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _problems_error(problems: list[_Problem], source: str, root: Any) -> InputError:
    def describe(p: _Problem) -> str:
        line = _line_of(root, p[0]) if root is not None else None
        return f"{p[1]}" + (f" (line {line})" if line else "")

    first = problems[0]
    listed = [f"`{_key(p[0])}`: {describe(p)}" + (f" — {p[2]}" if p[2] else "") for p in problems]
    if len(problems) == 1:
        return ScenarioError(describe(first), file=source, key=_key(first[0]), fix=first[2], problems=listed)
    # several: one line each, every problem with its own fix (one fix after them all read as the last's)
    message = f"{len(problems)} problems in the scenario:\n" + "\n".join(f"  - {p}" for p in listed)
    error = ScenarioError(message, file=source, problems=listed)
    error.key = _key(first[0])  # for callers that point at the first; the message names each
    return error
