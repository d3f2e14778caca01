"""The one small interface every ad platform connector implements.

Units are converted at this edge: nothing inside budgetloop sees micros or cents, only currency units
(floats rounded to the cent). Raw payloads are returned as the platform sent them, so ingestion can
store them untouched before parsing; ``parse_metric`` does the unit conversion and raises
:class:`RowRejected` with a reason for a row it cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class CampaignInfo:
    platform: str  # "google_ads" | "meta_ads" | "retail_media"
    account_id: str
    external_id: str
    name: str
    channel: str  # the budgetloop channel this campaign belongs to
    currency: str


@dataclass(frozen=True)
class RawRecord:
    """One record exactly as the platform returned it (``payload`` is the JSON object of one row)."""

    source: str  # platform name, or "store" for the business's revenue
    payload: dict[str, Any]


@dataclass(frozen=True)
class MetricRow:
    """A parsed, unit-converted daily metric row for one campaign."""

    platform: str
    account_id: str
    campaign_external_id: str
    day: date
    spend: float  # currency units, rounded to the cent
    impressions: int
    clicks: int
    currency: str
    attributed_revenue: float | None = None  # what the platform claims (last-touch style); never the truth


@dataclass(frozen=True)
class RevenueRow:
    """The business's total revenue for a day (from the store / analytics source)."""

    day: date
    revenue: float
    currency: str


class RowRejected(ValueError):
    """A raw row that cannot be parsed; ``reason`` says which field and why."""

    def __init__(self, reason: str, *, field_name: str | None = None) -> None:
        self.reason = reason
        self.field_name = field_name
        super().__init__(reason)


@dataclass(frozen=True)
class BudgetChangeResult:
    campaign_external_id: str
    previous_daily_budget: float
    new_daily_budget: float
    idempotency_key: str
    replayed: bool  # True when the platform recognised the idempotency key and did nothing new
    response: dict[str, Any] = field(default_factory=dict)  # the platform's response, for the audit log


@dataclass(frozen=True)
class LearningStatus:
    campaign_external_id: str
    learning: bool
    detail: str = ""  # e.g. Meta's learning_stage_info status


@runtime_checkable
class Connector(Protocol):
    """One ad platform."""

    platform: str

    def list_campaigns(self) -> list[CampaignInfo]: ...

    def pull_daily_metrics(self, start: date, end: date) -> list[RawRecord]:
        """Every campaign's daily rows for ``start``..``end`` inclusive, all pages, as sent."""
        ...

    def parse_metric(self, record: RawRecord) -> MetricRow: ...

    def get_budgets(self) -> dict[str, float]:
        """Current daily budget per campaign external id, in currency units."""
        ...

    def set_budget(
        self, campaign_external_id: str, daily_budget: float, *, idempotency_key: str
    ) -> BudgetChangeResult: ...

    def learning_status(self) -> dict[str, LearningStatus]: ...


@runtime_checkable
class RevenueSource(Protocol):
    """The business's own revenue (an e-commerce backend or analytics export)."""

    source: str

    def pull_daily_revenue(self, start: date, end: date) -> list[RawRecord]: ...

    def parse_revenue(self, record: RawRecord) -> RevenueRow: ...
