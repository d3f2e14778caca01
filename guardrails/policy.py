"""The guardrail policy: what the agents may propose and execute, as validated pydantic models.

Every section but ``budget.total_daily_max`` and ``channels`` is optional. Each model forbids unknown
keys, so a misspelt rule is an error rather than a silently ignored safety limit. Numbers must be
finite (no ``.inf``, ``.nan`` or ``1e400``) and are never booleans; channel and campaign names are
neither empty nor padded with spaces. Checks that span sections (caps below the sum of minimums,
overlapping freeze windows, approvers, ...) live in :func:`cross_problems`, which the loader runs on
every section that parsed, so a user sees every problem at once; :class:`Policy` runs the same checks
when it is built in code. :meth:`Policy.warnings` lists what is valid but probably not meant (no
approver although changes need approval).

Rule names (the keys of ``enforcement`` and of every verdict) are listed in :data:`RULES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

Level = Literal["hard", "soft", "advisory"]
RuleName = Literal[
    "kill_switch",
    "freeze_window",
    "learning_phase",
    "locked",
    "min_days_between_changes",
    "max_swing_per_change",
    "max_swing_per_week",
    "learning_reset",
    "bounds",
    "total_daily_max",
    "total_monthly_max",
    "min_probability_of_improvement",
    "min_expected_gain",
]

#: The level of a rule a policy's ``enforcement`` does not list, where it is not hard. A hard
#: ``min_expected_gain`` (1% of the portfolio's revenue by default) would stop every step of one swing,
#: so a policy that does not ask for it gets a warning instead, as the example policy has it.
DEFAULT_ENFORCEMENT: dict[RuleName, Level] = {"min_expected_gain": "advisory"}
RULES: tuple[str, ...] = RuleName.__args__  # type: ignore[attr-defined]
ALWAYS_HARD: frozenset[str] = frozenset({"kill_switch"})


_NUMERIC: tuple[object, ...] = (float, int, float | None, int | None)


class _Section(BaseModel):
    """Unknown keys forbidden; numbers finite (no .inf/.nan/1e400) and never booleans."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: object, info: ValidationInfo) -> object:
        """YAML's true/false/yes/no are booleans, which pydantic would otherwise read as 1 and 0."""
        if isinstance(value, bool) and info.field_name is not None:
            field_info = cls.model_fields.get(info.field_name)
            if field_info is not None and field_info.annotation in _NUMERIC:
                raise ValueError(
                    f"expected a number, got a boolean ({str(value).lower()}); "
                    "write a number (true/false, yes/no and on/off are booleans in YAML)"
                )
        return value


def _clean_name(value: str) -> str:
    if not value.strip():
        raise ValueError("the name is empty; write the channel's or campaign's name (e.g. search)")
    if value != value.strip():
        raise ValueError(f"the name {value!r} starts or ends with spaces; write it as {value.strip()!r}")
    return value


Name = Annotated[str, AfterValidator(_clean_name)]
"""A channel or campaign name: not empty, no leading or trailing whitespace."""

_DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")


def date_problem(text: str, why: str) -> tuple[str, str]:
    """(message, fix) for a date or datetime that does not exist (``2026-02-30``, month 13, hour 25)."""
    if len(text.strip()) > 10:
        return (
            f"not a valid date and time: {text} ({why})",
            "write a date that exists and a time of day as YYYY-MM-DDTHH:MM (e.g. 2026-03-16T09:00)",
        )
    return f"not a calendar date: {text} ({why})", "write a date that exists as YYYY-MM-DD (e.g. 2026-03-16)"


def _parse_bound(value: object) -> date | datetime:
    """A window bound: a date (whole day) or a datetime (naive = the policy's time zone)."""
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError as exc:
            if _DATE_LIKE.match(text):
                raise ValueError("; ".join(date_problem(text, str(exc)))) from None
    raise ValueError(f"expected a date (2026-03-16) or a datetime (2026-03-16T09:00), got {value!r}")


def _dump_bound(value: date | datetime) -> str:
    return value.isoformat()


WindowBound = Annotated[
    date | datetime,
    PlainValidator(_parse_bound),
    PlainSerializer(_dump_bound, return_type=str),
    WithJsonSchema({"type": "string", "description": "ISO date (whole day) or datetime (policy time zone)"}),
]


class Objective(_Section):
    metric: Literal["revenue", "profit", "target_roas"] = "revenue"
    margin: float | None = Field(
        default=None, gt=0, le=1, description="Gross margin, needed when metric is profit"
    )
    target: float | None = Field(
        default=None, gt=0, description="Target ROAS, needed when metric is target_roas"
    )

    @model_validator(mode="after")
    def _needs(self) -> Objective:
        if self.metric == "profit" and self.margin is None:
            raise ValueError("metric `profit` needs `margin` (e.g. margin: 0.35)")
        if self.metric == "target_roas" and self.target is None:
            raise ValueError("metric `target_roas` needs `target` (e.g. target: 3.0)")
        return self


class Budget(_Section):
    total_daily_max: float = Field(gt=0, description="Hard cap on the sum of all daily budgets")
    total_monthly_max: float | None = Field(default=None, gt=0, description="Cap on expected monthly spend")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    days_per_month: float = Field(
        default=30.0, ge=28, le=31, description="Days a daily budget runs in a month"
    )
    over_delivery: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Expected platform over-delivery above the daily budget (0.1 = 10%)",
    )

    @property
    def monthly_as_daily(self) -> float | None:
        """The monthly cap expressed as a cap on the sum of daily budgets."""
        if self.total_monthly_max is None:
            return None
        return self.total_monthly_max / (self.days_per_month * (1.0 + self.over_delivery))


class ChangeRules(_Section):
    max_swing_per_change: float = Field(default=0.20, gt=0, le=1)
    max_swing_per_week: float | None = Field(default=0.30, gt=0, le=10)
    min_days_between_changes: float = Field(default=3, ge=0, le=365)
    min_probability_of_improvement: float = Field(default=0.80, ge=0, le=1)
    min_expected_gain: float = Field(default=0.01, ge=0)


class LearningPhase(_Section):
    protect: bool = True
    max_change_without_reset: float | None = Field(default=0.20, gt=0, le=1)


class FreezeWindow(_Section):
    start: WindowBound
    end: WindowBound
    reason: str = ""
    channels: list[str] | None = Field(default=None, description="Only these channels; all when absent")

    @model_validator(mode="after")
    def _ordered(self) -> FreezeWindow:
        if _as_naive_start(self.start) > _as_naive_end(self.end):
            raise ValueError(
                f"window ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()}); "
                "swap `start` and `end`"
            )
        return self

    def interval(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[first instant, first instant after] in UTC; a date end covers its whole day."""
        return _instant(self.start, tz, end=False), _instant(self.end, tz, end=True)


def _as_naive_start(bound: date | datetime) -> datetime:
    if isinstance(bound, datetime):
        return bound.replace(tzinfo=None)
    return datetime.combine(bound, time())


def _as_naive_end(bound: date | datetime) -> datetime:
    if isinstance(bound, datetime):
        return bound.replace(tzinfo=None)
    return datetime.combine(bound, time()) + timedelta(days=1) - timedelta(microseconds=1)


def _instant(bound: date | datetime, tz: ZoneInfo, *, end: bool) -> datetime:
    if isinstance(bound, datetime):
        if bound.tzinfo is not None:
            moments = [bound.astimezone(UTC)]
        else:
            # A wall time that happens twice (autumn) or never (spring) has two readings: take the one
            # that makes the window longer.
            moments = [bound.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)]
        # A datetime end is inclusive of its whole minute (`end: 2026-03-22T18:00` blocks 18:00:59).
        return max(moments) + timedelta(minutes=1) if end else min(moments)
    day = bound + timedelta(days=1) if end else bound
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


class ChannelRule(_Section):
    min_daily: float = Field(default=0, ge=0)
    max_daily: float | None = Field(default=None, ge=0)
    locked: bool = False

    @model_validator(mode="after")
    def _min_le_max(self) -> ChannelRule:
        if self.max_daily is not None and self.min_daily > self.max_daily:
            raise ValueError(
                f"min_daily {self.min_daily:g} is above max_daily {self.max_daily:g}; "
                "lower min_daily or raise max_daily"
            )
        return self


class CampaignRule(ChannelRule):
    channel: str


class Approval(_Section):
    required: bool = True
    autonomous_below: float | None = Field(default=None, gt=0, le=1)
    approvers: list[str] = Field(default_factory=list)
    two_approvers_above: float | None = Field(default=None, gt=0)
    expire_after_hours: float = Field(default=48, gt=0)


class Monitoring(_Section):
    band: float = Field(default=0.90, gt=0, lt=1)
    rollback_after_days_outside: int = Field(default=3, ge=1)
    evaluation_days: int = Field(default=14, ge=1)
    expand_step: float = Field(default=0.5, ge=0)
    require_approval_for_rollback: bool = False


class Experiments(_Section):
    min_detectable_effect: float = Field(default=0.04, gt=0, lt=1)
    days: int = Field(default=14, ge=1)
    max_holdout_share: float = Field(default=0.10, gt=0, le=1)


class Policy(_Section):
    """A whole guardrail policy. Build it with :func:`guardrails.parse_policy` from YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="budgetloop guardrail policy")

    version: int = 1
    timezone: str = "UTC"
    objective: Objective = Objective()
    autonomy: Literal["shadow", "approval", "autonomous_below"] = "approval"
    kill_switch: bool = False
    budget: Budget
    change: ChangeRules = ChangeRules()
    learning_phase: LearningPhase = LearningPhase()
    freeze_windows: list[FreezeWindow] = Field(default_factory=list)
    channels: dict[Name, ChannelRule] = Field(min_length=1)
    campaigns: dict[Name, CampaignRule] = Field(default_factory=dict)
    enforcement: dict[RuleName, Level] = Field(
        default_factory=lambda: dict(DEFAULT_ENFORCEMENT),
        description="Level of each rule; a rule not listed is hard, except min_expected_gain, which is "
        "advisory unless listed",
    )
    owners: list[str] = Field(default_factory=list)
    exploration_share: float = Field(default=0.05, ge=0, le=0.5)
    approval: Approval = Approval()
    monitoring: Monitoring = Monitoring()
    experiments: Experiments = Experiments()

    @field_validator("enforcement", mode="after")
    @classmethod
    def _over_the_defaults(cls, value: dict[RuleName, Level]) -> dict[RuleName, Level]:
        return {**DEFAULT_ENFORCEMENT, **value}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as America/New_York or UTC"
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Policy:
        if info.context and info.context.get("skip_cross_checks"):
            return self
        problems = cross_problems(_sections(self))
        if problems:
            raise ValueError("; ".join(f"{p.path}: {p.message}" for p in problems))
        return self

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def level(self, rule: str) -> Level:
        return self.enforcement.get(rule, "hard")  # type: ignore[call-overload,no-any-return]

    def limits_for(self, key: str, channel: str | None) -> tuple[float, float, bool] | None:
        """(min, max, locked) for a budget key, or None when the policy does not cover it.

        A key is a campaign listed under ``campaigns``, a channel listed under ``channels``, or a campaign
        of a listed channel (``channel`` from its state): such a campaign has no bounds of its own but
        shares its channel's lock.
        """
        rule: ChannelRule | None = self.campaigns.get(key) or self.channels.get(key)
        if rule is not None:
            top = float("inf") if rule.max_daily is None else rule.max_daily
            parent = self.channels.get(rule.channel) if isinstance(rule, CampaignRule) else None
            locked = rule.locked or (parent is not None and parent.locked)
            return rule.min_daily, top, locked
        if channel is not None and channel in self.channels:
            return 0.0, float("inf"), self.channels[channel].locked
        return None

    def channel_of(self, key: str, channel: str | None) -> str | None:
        if key in self.campaigns:
            return self.campaigns[key].channel
        if key in self.channels:
            return key
        return channel if channel in self.channels else None

    def freeze_intervals(self) -> tuple[tuple[datetime, datetime, FreezeWindow], ...]:
        """Each window as [first instant, first instant after) in UTC, computed once per policy."""
        return self._freeze_intervals

    @cached_property
    def _freeze_intervals(self) -> tuple[tuple[datetime, datetime, FreezeWindow], ...]:
        return tuple((*w.interval(self.zone), w) for w in self.freeze_windows)

    def warnings(self) -> list[Problem]:
        """What is valid but probably not meant; `budgetloop policy validate` prints each after its summary.

        Approval required (the default) but the ``approval`` section, and so every approver, left out:
        valid (ops may add approvers later, and nothing moves meanwhile), but no change request can
        ever be approved. (An ``approval`` section that is written without approvers is a problem.)
        """
        out: list[Problem] = []
        if self.autonomy != "shadow" and self.approval.required and not self.approval.approvers:
            out.append(
                Problem(
                    ("approval", "approvers"),
                    "no approver is listed, so no change request can be approved and budgets will not move",
                    "list the Slack user ids allowed to approve under `approval.approvers`",
                )
            )
        return out

    def summary(self, *, stored_version: int | None = None) -> str:
        """One line for people. ``stored_version``: the version the store gave it (what every reader
        means by "version"); the file's own ``version:`` key is then named only where it differs."""
        if stored_version is None:
            head = f"policy v{self.version}"
        elif stored_version == self.version:
            head = f"policy version {stored_version}"
        else:
            head = f"policy version {stored_version} (the file says `version: {self.version}`)"
        caps = f"daily cap {self.budget.total_daily_max:,.2f} {self.budget.currency}"
        if self.budget.total_monthly_max is not None:
            caps += f", monthly cap {self.budget.total_monthly_max:,.2f}"
        soft = sorted(r for r, lv in self.enforcement.items() if lv != "hard")
        return (
            f"{head}: {len(self.channels)} channels, {caps}, autonomy {self.autonomy}, "
            f"max swing {self.change.max_swing_per_change:.0%}/change, "
            f"{len(self.freeze_windows)} freeze windows, kill switch {'ON' if self.kill_switch else 'off'}"
            + (f", non-hard rules: {', '.join(soft)}" if soft else "")
        )


def _sections(policy: Policy) -> dict[str, Any]:
    """The parsed sections as objects, with the set of keys the author wrote."""
    return {
        "budget": policy.budget,
        "channels": policy.channels,
        "campaigns": policy.campaigns,
        "freeze_windows": policy.freeze_windows,
        "approval": policy.approval if "approval" in policy.model_fields_set else None,
        "autonomy": policy.autonomy,
        "enforcement": policy.enforcement,
        "owners": policy.owners,
        "timezone": policy.timezone if "timezone" in policy.model_fields_set else "UTC",
        "change": policy.change,
    }


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy: where (YAML path, line), what, and what to change."""

    loc: tuple[str | int, ...]
    message: str
    fix: str = ""
    line: int | None = None

    @property
    def path(self) -> str:
        return format_path(self.loc)

    def __str__(self) -> str:
        where = self.path or "(document)"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.message}" + (f" — {self.fix}" if self.fix else "")


def format_path(loc: Sequence[str | int]) -> str:
    """``("freeze_windows", 1, "end")`` -> ``freeze_windows[1].end``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "" or part != part.strip() or any(c in part for c in '.[]"'):
            text += f"[{json.dumps(part)}]"  # `channels[""]`, `channels["search "]`
        else:
            text += f".{part}" if text else part
    return text


def cross_problems(sections: Mapping[str, Any]) -> list[Problem]:
    """Checks that span sections. ``sections`` holds parsed section objects; missing ones are skipped.

    ``channel_names`` (optional) is every channel the author declared, including those whose own entry
    is broken; "unknown channel" checks and their hints use it, falling back to ``channels``' keys.
    """
    out: list[Problem] = []
    budget: Budget | None = sections.get("budget")
    channels: Mapping[str, ChannelRule] | None = sections.get("channels")
    declared: Collection[str] | None = sections.get("channel_names")
    if declared is None and channels is not None:
        declared = frozenset(channels)
    if budget is not None and channels:
        min_sum = sum(c.min_daily for c in channels.values())
        if min_sum > budget.total_daily_max:
            out.append(
                Problem(
                    ("budget", "total_daily_max"),
                    f"cap {budget.total_daily_max:g} is below the sum of the channels' "
                    f"min_daily ({min_sum:g})",
                    "raise the cap or lower some channels' min_daily",
                )
            )
        monthly = budget.monthly_as_daily
        if monthly is not None and min_sum > monthly + 1e-9:
            out.append(
                Problem(
                    ("budget", "total_monthly_max"),
                    f"cap {budget.total_monthly_max:g} is below the expected monthly spend of the channels' "
                    f"min_daily ({min_sum:g}/day x {budget.days_per_month:g} days"
                    f" x {1 + budget.over_delivery:g} over-delivery = "
                    f"{min_sum * budget.days_per_month * (1 + budget.over_delivery):g})",
                    "raise the monthly cap or lower some channels' min_daily",
                )
            )
    campaigns: Mapping[str, CampaignRule] | None = sections.get("campaigns")
    if declared and campaigns:
        for key, campaign in campaigns.items():
            if campaign.channel not in declared:
                out.append(
                    Problem(
                        ("campaigns", key, "channel"),
                        f"unknown channel {campaign.channel!r}",
                        f"use one of {sorted(declared)} or add it under `channels`",
                    )
                )
    windows: Sequence[FreezeWindow] | Mapping[int, FreezeWindow] | None = sections.get("freeze_windows")
    zone_name = sections.get("timezone") or "UTC"
    if windows:
        indexed = windows if isinstance(windows, Mapping) else dict(enumerate(windows))
        out.extend(_window_problems(indexed, zone_name, declared))
    out.extend(_approval_problems(sections))
    enforcement: Mapping[str, str] | None = sections.get("enforcement")
    if enforcement:
        for rule, level in enforcement.items():
            if rule in ALWAYS_HARD and level != "hard":
                out.append(
                    Problem(("enforcement", rule), f"`{rule}` is always hard", f"remove `{rule}: {level}`")
                )
        soft = sorted(r for r, lv in enforcement.items() if lv == "soft")
        if soft and sections.get("owners") == []:
            out.append(
                Problem(
                    ("owners",),
                    f"rules {soft} are soft but no owner may override them",
                    "list the Slack user ids of the owners, or make those rules hard",
                )
            )
    return out


def _window_problems(
    windows: Mapping[int, FreezeWindow], zone_name: str, channels: Collection[str] | None
) -> list[Problem]:
    """Unknown channels and overlaps; ``windows`` maps each window's index in the YAML to it."""
    out: list[Problem] = []
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    spans = {j: w.interval(zone) for j, w in windows.items()}
    order = sorted(windows)
    for pos, j in enumerate(order):
        wj, (sj, ej) = windows[j], spans[j]
        for name in wj.channels or ():
            if channels is not None and name not in channels:
                out.append(
                    Problem(
                        ("freeze_windows", j, "channels"),
                        f"unknown channel {name!r}",
                        f"use one of {sorted(channels)}",
                    )
                )
        for i in order[:pos]:
            wi, (si, ei) = windows[i], spans[i]
            shared = wi.channels is None or wj.channels is None or bool(set(wi.channels) & set(wj.channels))
            if shared and sj < ei and si < ej:
                out.append(
                    Problem(
                        ("freeze_windows", j),
                        f"overlaps freeze_windows[{i}] ({wi.start.isoformat()}..{wi.end.isoformat()})",
                        "merge the two windows into one or move one of them",
                    )
                )
    return out


def _approval_problems(sections: Mapping[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    approval: Approval | None = sections.get("approval")
    autonomy = sections.get("autonomy")
    if approval is not None and approval.required and not approval.approvers and autonomy != "shadow":
        out.append(
            Problem(
                ("approval", "approvers"),
                "approval is required but no approver is listed",
                "list the Slack user ids allowed to approve, or set `approval.required: false`",
            )
        )
    if approval is not None and approval.two_approvers_above is not None and 0 < len(approval.approvers) < 2:
        out.append(
            Problem(
                ("approval", "two_approvers_above"),
                "two distinct approvers are required above this size but only one approver is listed",
                "add a second approver or remove `two_approvers_above`",
            )
        )
    if autonomy == "autonomous_below" and (approval is None or approval.autonomous_below is None):
        out.append(
            Problem(
                ("approval", "autonomous_below"),
                "autonomy is `autonomous_below` but no size is given",
                "set `approval.autonomous_below` (e.g. 0.05) or choose `autonomy: approval`",
            )
        )
    return out
