"""The values the engine and the checker take and give: states, history, overrides, verdicts, decisions.

Budgets are daily budgets in currency units, keyed by channel (or campaign key). Every datetime is
timezone-aware; the engine compares instants, so any zone works, UTC by convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Outcome = Literal["pass", "clipped", "blocked", "warned", "overridden"]

# Not a policy rule: the verdict for a key moved away from its proposal so the total fits.
REDISTRIBUTION = "redistribution"


@dataclass(frozen=True, slots=True)
class CampaignState:
    """What the platform says about a budget key now. ``learning_until`` ends learning at that instant."""

    channel: str | None = None
    learning: bool = False
    learning_until: datetime | None = None

    def is_learning(self, now: datetime) -> bool:
        if not self.learning:
            return False
        return self.learning_until is None or now < self.learning_until


@dataclass(frozen=True, slots=True)
class ExecutedChange:
    """One executed budget change of one key."""

    key: str
    at: datetime
    before: float
    after: float


@dataclass(frozen=True, slots=True)
class Override:
    """An owner's override of a soft rule for one key (``key=None``: the whole portfolio)."""

    rule: str
    key: str | None
    owner: str
    reason: str


@dataclass(frozen=True, slots=True)
class Forecast:
    """The planner's evaluation of a proposal, for the probability and expected-gain rules."""

    probability_of_improvement: float
    expected_gain: float  # relative gain of the objective at the portfolio level (0.01 = 1%)


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str
    key: str | None
    outcome: Outcome
    level: str
    limit: float | None
    proposed: float | None
    adjusted: float | None
    message: str


@dataclass(slots=True)
class Decision:
    """The engine's answer: the budgets that may be executed and why each rule said what it said."""

    adjusted: dict[str, float]
    verdicts: list[Verdict]
    blocked: bool
    blocked_keys: dict[str, str] = field(default_factory=dict)  # key -> rule that kept it at its budget
    approvals_required: int = 1
    execute: bool = True  # False in shadow mode, when blocked, or when nothing changes
    relative_move: float = 0.0  # sum |adjusted - current| / sum current
    changes: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (current, adjusted)

    def problems(self) -> list[Verdict]:
        """The verdicts that changed the proposal (clipped or blocked)."""
        return [v for v in self.verdicts if v.outcome in ("clipped", "blocked")]

    def explain(self) -> list[str]:
        """One plain line per verdict that is not a pass, for a change request or a log."""
        return [
            f"[{v.outcome}] {v.rule} ({v.level}){f' {v.key}' if v.key else ''}: {v.message}"
            for v in self.verdicts
            if v.outcome != "pass"
        ]
