"""The state the sandbox dialects share: the market, budget edits, idempotency keys, the applied log.

Every dialect goes through :class:`SandboxState` for anything that touches the market, under one lock,
so the three APIs see one consistent market. What the platforms enforce lives here once: a cap on
budget edits per campaign per simulated day, positive budgets, idempotency keys whose replay returns
the original answer and applies nothing, and the log of every change actually applied
(``GET /admin/applied``), which the tests and the demo use to check exactly-once execution.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any, Protocol

from connectors.sandbox.api_auth import TokenTable
from connectors.sandbox.faults import FaultPlan

PLATFORM_OF_DIALECT = {"google": "google_ads", "meta": "meta_ads", "retail": "retail_media"}
DEFAULT_EDIT_CAPS = {"google": 4, "meta": 4, "retail": 6}
MAX_DAILY_BUDGET = 10_000_000.0


class SimCampaignLike(Protocol):
    @property
    def channel(self) -> str: ...
    @property
    def platform(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def currency(self) -> str: ...


class ChannelDayLike(Protocol):
    @property
    def budget(self) -> float: ...
    @property
    def spend(self) -> float: ...
    @property
    def impressions(self) -> int: ...
    @property
    def clicks(self) -> int: ...
    @property
    def learning(self) -> bool: ...
    @property
    def attributed_revenue(self) -> float: ...


class DayOutcomeLike(Protocol):
    @property
    def day(self) -> date: ...
    @property
    def channels(self) -> Mapping[str, ChannelDayLike]: ...
    @property
    def revenue(self) -> float: ...


class BudgetSetLike(Protocol):
    @property
    def old(self) -> float: ...
    @property
    def new(self) -> float: ...
    @property
    def learning_started(self) -> bool: ...


class MarketLike(Protocol):
    """What the sandbox needs from ``connectors.sandbox.market.Market``."""

    @property
    def campaigns(self) -> Sequence[SimCampaignLike]: ...
    @property
    def first_loop_day(self) -> date: ...
    @property
    def scenario(self) -> Any: ...  # its ``start`` is the first simulated day
    def today(self) -> date: ...
    def advance_to(self, day: date) -> Any: ...
    def outcome(self, day: date) -> DayOutcomeLike: ...
    def budget(self, channel: str) -> float: ...
    def set_budget(self, channel: str, value: float) -> BudgetSetLike: ...
    def learning_days_left(self, channel: str) -> int: ...


@dataclass(frozen=True)
class AppliedChange:
    """One budget change the sandbox applied to the market."""

    seq: int
    day: date
    dialect: str
    platform: str
    account_id: str
    campaign_id: str
    channel: str
    old: float
    new: float
    learning_started: bool
    idempotency_key: str | None

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out["day"] = self.day.isoformat()
        return out


@dataclass(frozen=True)
class StoredAnswer:
    fingerprint: str
    status: int
    body: Any


class IdempotencyConflict(Exception):
    """A key reused with a different request body."""


class EditRefused(Exception):
    """A budget edit the platform refuses; ``code`` is the dialect-neutral reason."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class SandboxState:
    def __init__(
        self,
        market: MarketLike,
        *,
        faults: FaultPlan | None = None,
        tokens: TokenTable | None = None,
        edit_caps: Mapping[str, int] | None = None,
    ) -> None:
        self.market = market
        self.faults = faults or FaultPlan()
        self.tokens = tokens or TokenTable()
        self.edit_caps = {**DEFAULT_EDIT_CAPS, **(edit_caps or {})}
        self.lock = threading.RLock()
        self.stopping = threading.Event()  # set at server shutdown: releases hung and slow answers
        self.applied: list[AppliedChange] = []
        self._answers: dict[tuple[str, str], StoredAnswer] = {}
        self._ids = itertools.count(1)

    # ---- campaigns -------------------------------------------------------------------------------
    def campaigns(self, dialect: str, account_id: str | None = None) -> list[SimCampaignLike]:
        platform = PLATFORM_OF_DIALECT[dialect]
        return [
            c
            for c in self.market.campaigns
            if c.platform == platform and (account_id is None or c.account_id == account_id)
        ]

    def campaign(self, dialect: str, external_id: str) -> SimCampaignLike | None:
        return next((c for c in self.campaigns(dialect) if c.external_id == external_id), None)

    def accounts(self, dialect: str) -> dict[str, str]:
        """account id -> currency, for the dialect's campaigns."""
        return {c.account_id: c.currency for c in self.campaigns(dialect)}

    def currency(self) -> str:
        return self.market.campaigns[0].currency if self.market.campaigns else "USD"

    def learning(self, campaign: SimCampaignLike) -> int:
        with self.lock:
            return self.market.learning_days_left(campaign.channel)

    def budget(self, campaign: SimCampaignLike) -> float:
        with self.lock:
            return round(self.market.budget(campaign.channel), 2)

    def edits_today(self, dialect: str, campaign_id: str) -> int:
        today = self.market.today()
        return sum(
            1
            for a in self.applied
            if a.dialect == dialect and a.campaign_id == campaign_id and a.day == today
        )

    # ---- budget edits ----------------------------------------------------------------------------
    def check_edit(self, dialect: str, campaign: SimCampaignLike, value: float, *, pending: int = 0) -> None:
        """Raise EditRefused where the platform would refuse (``pending``: earlier ops in a batch)."""
        if not math.isfinite(value) or value <= 0:
            raise EditRefused("NON_POSITIVE", f"daily budget must be positive, got {value}")
        if self.market.today() < self.market.first_loop_day:
            raise EditRefused(
                "HISTORY",
                f"budgets cannot change before the loop's first day {self.market.first_loop_day}; today is "
                f"{self.market.today()}: advance the sandbox clock (POST /admin/clock) first",
            )
        if value > MAX_DAILY_BUDGET:
            raise EditRefused("TOO_LARGE", f"daily budget {value} exceeds the maximum {MAX_DAILY_BUDGET}")
        cap = self.edit_caps[dialect]
        done = self.edits_today(dialect, campaign.external_id) + pending
        if done >= cap:
            raise EditRefused(
                "EDIT_LIMIT",
                f"campaign {campaign.external_id} already had {done} budget edits on {self.market.today()}; "
                f"the limit is {cap} per day, try again tomorrow",
            )

    def apply(self, dialect: str, campaign: SimCampaignLike, value: float, key: str | None) -> AppliedChange:
        with self.lock:
            result = self.market.set_budget(campaign.channel, round(value, 2))
            change = AppliedChange(
                seq=len(self.applied) + 1,
                day=self.market.today(),
                dialect=dialect,
                platform=campaign.platform,
                account_id=campaign.account_id,
                campaign_id=campaign.external_id,
                channel=campaign.channel,
                old=round(result.old, 2),
                new=round(result.new, 2),
                learning_started=bool(result.learning_started),
                idempotency_key=key,
            )
            self.applied.append(change)
            return change

    # ---- idempotency -----------------------------------------------------------------------------
    @staticmethod
    def fingerprint(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def recall(self, dialect: str, key: str | None, fingerprint: str) -> StoredAnswer | None:
        if not key:
            return None
        stored = self._answers.get((dialect, key))
        if stored is not None and stored.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for a different request; use a new key per change"
            )
        return stored

    def remember(self, dialect: str, key: str | None, fingerprint: str, status: int, body: Any) -> None:
        if key:
            self._answers[(dialect, key)] = StoredAnswer(fingerprint, status, body)

    # ---- reports ---------------------------------------------------------------------------------
    def report_days(self, start: date, end: date) -> list[date]:
        """The days of ``start``..``end`` the market has simulated (reports never show the future)."""
        start = max(start, self.market.scenario.start)
        last = min(end, self.market.today() - timedelta(days=1))
        return [start + timedelta(days=i) for i in range((last - start).days + 1)] if last >= start else []

    def advance_to(self, day: date) -> None:
        with self.lock:
            if day < self.market.today():
                raise ValueError(
                    f"the sandbox clock cannot go backwards: today is {self.market.today()}, asked {day}"
                )
            self.market.advance_to(day)

    def request_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):08d}"


def encode_cursor(offset: int, scope: str) -> str:
    raw = json.dumps({"o": offset, "s": scope}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, scope: str) -> int:
    """The offset in a cursor made by :func:`encode_cursor` for the same query; ValueError otherwise."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = int(data["o"])
        same = data["s"] == scope
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"page token {token!r} is not one this API issued") from None
    if not same or offset < 0:
        raise ValueError(f"page token {token!r} belongs to a different query; send the same query with it")
    return offset


Pager = Callable[[int, int], tuple[list[dict[str, Any]], int]]
"""``pager(offset, size)`` -> (the rows of that page, the total number of rows)."""


def list_pager(rows: Sequence[dict[str, Any]]) -> Pager:
    return lambda offset, size: (list(rows[offset : offset + size]), len(rows))


def report_pager(
    state: SandboxState,
    start: date,
    end: date,
    per_day: int,
    make_rows: Callable[[DayOutcomeLike], list[dict[str, Any]]],
) -> Pager:
    """Rows ordered by day, ``per_day`` rows a day: a page simulates-out only the days it shows."""
    days = state.report_days(start, end)

    def pager(offset: int, size: int) -> tuple[list[dict[str, Any]], int]:
        total = len(days) * per_day
        if per_day == 0 or offset >= total:
            return [], total
        first, last = offset // per_day, (min(offset + size, total) - 1) // per_day
        with state.lock:
            rows = [row for d in days[first : last + 1] for row in make_rows(state.market.outcome(d))]
        skip = offset - first * per_day
        return rows[skip : skip + size], total

    return pager


def page(pager: Pager, offset: int, size: int) -> tuple[list[dict[str, Any]], int | None, int]:
    """One page, the offset of the next (None on the last) and the total."""
    chunk, total = pager(offset, size)
    nxt = offset + size
    return chunk, (nxt if nxt < total else None), total
