"""The Google Ads connector (REST, v17 shapes): micros at the edge, one mutate per budget change.

Campaign budgets are separate resources in Google Ads: a campaign points at its ``campaignBudget``,
whose ``amountMicros`` is the daily budget. Daily metrics come from ``googleAds:search`` with a GAQL
query over ``segments.date``, paged with ``pageToken``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import date
from typing import Any

import httpx

from connectors import rows
from connectors.base import BudgetChangeResult, CampaignInfo, LearningStatus, MetricRow, RawRecord
from connectors.http import ErrorInfo, PlatformHttp, RetryPolicy, Sleep, collect_pages

PLATFORM = "google_ads"
METRICS_QUERY = (
    "SELECT customer.id, customer.currency_code, campaign.id, campaign.name, segments.date, "
    "metrics.cost_micros, metrics.impressions, metrics.clicks, metrics.conversions_value "
    "FROM campaign WHERE segments.date BETWEEN '{start}' AND '{end}' ORDER BY segments.date"
)


def parse_google_error(response: httpx.Response, body: Any) -> ErrorInfo:
    """``{"error": {"code", "message", "status", "details": [{"errors": [{"errorCode": {...}}]}]}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ErrorInfo(message=f"HTTP {response.status_code}: {str(body)[:300]}")
    codes: list[str] = []
    messages: list[str] = []
    for detail in error.get("details") or []:
        for item in detail.get("errors") or [] if isinstance(detail, dict) else []:
            for family, value in (item.get("errorCode") or {}).items():
                codes.append(f"{family}.{value}")
            if item.get("message"):
                messages.append(str(item["message"]))
    message = "; ".join(messages) or str(error.get("message", ""))
    code = codes[0] if codes else error.get("status")
    return ErrorInfo(
        message=f"{error.get('status', response.status_code)}: {message}",
        code=code,
        rate_limited=any(c.startswith("quotaError.") for c in codes)
        or error.get("status") == "RESOURCE_EXHAUSTED",
    )


class GoogleAdsConnector:
    """:class:`connectors.base.Connector` for a Google Ads-like API at ``base_url`` (``.../v17``)."""

    platform = PLATFORM

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        customer_ids: list[str] | None = None,
        channel_map: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        sleep: Sleep = time.sleep,
        retry: RetryPolicy | None = None,
        page_size: int = 1000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = PlatformHttp(
            platform=PLATFORM,
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            sleep=sleep,
            retry=retry,
            parse_error=parse_google_error,
            request_id_headers=("request-id",),
            transport=transport,
        )
        self._customer_ids = list(customer_ids) if customer_ids is not None else None
        self._channel_map = dict(channel_map or {})
        self._page_size = page_size
        self._budget_of: dict[str, tuple[str, str]] = {}  # campaign id -> (customer id, budget resource)

    @property
    def http(self) -> PlatformHttp:
        return self._http

    def close(self) -> None:
        self._http.close()

    # ---- discovery -------------------------------------------------------------------------------
    def customers(self) -> list[str]:
        if self._customer_ids is None:
            body = self._http.get("/customers:listAccessibleCustomers").body
            self._customer_ids = [name.split("/", 1)[1] for name in body.get("resourceNames", [])]
        return list(self._customer_ids)

    def _campaign_rows(self, customer_id: str) -> list[dict[str, Any]]:
        body = self._http.get(f"/customers/{customer_id}/campaigns").body
        found = [r["campaign"] for r in body.get("results", [])]
        for c in found:
            self._budget_of[str(c["id"])] = (customer_id, str(c["campaignBudget"]))
        return found

    def _channel(self, campaign: Mapping[str, Any]) -> str:
        cid = str(campaign["id"])
        if cid in self._channel_map:
            return self._channel_map[cid]
        for label in campaign.get("labels") or []:
            if str(label).startswith("channel:"):
                return str(label).split(":", 1)[1]
        raise ValueError(
            f"google_ads campaign {cid} ({campaign.get('name')!r}) has no `channel:` label; "
            "label it in the platform or pass channel_map={campaign_id: channel}"
        )

    def list_campaigns(self) -> list[CampaignInfo]:
        out: list[CampaignInfo] = []
        for customer_id in self.customers():
            currency = str(self._http.get(f"/customers/{customer_id}").body["currencyCode"])
            for c in self._campaign_rows(customer_id):
                out.append(
                    CampaignInfo(
                        platform=PLATFORM,
                        account_id=customer_id,
                        external_id=str(c["id"]),
                        name=str(c.get("name", "")),
                        channel=self._channel(c),
                        currency=currency,
                    )
                )
        return out

    # ---- metrics ---------------------------------------------------------------------------------
    def pull_daily_metrics(self, start: date, end: date) -> list[RawRecord]:
        query = METRICS_QUERY.format(start=start.isoformat(), end=end.isoformat())
        records: list[RawRecord] = []
        for customer_id in self.customers():

            def fetch(token: str | None, customer_id: str = customer_id) -> tuple[list[Any], str | None]:
                body: dict[str, Any] = {"query": query, "pageSize": self._page_size}
                if token:
                    body["pageToken"] = token
                answer = self._http.request(
                    "POST", f"/customers/{customer_id}/googleAds:search", json_body=body, read_only=True
                )
                return list(answer.body.get("results", [])), answer.body.get("nextPageToken") or None

            rows_ = collect_pages(fetch, platform=PLATFORM, what=f"search for customer {customer_id}")
            records.extend(RawRecord(source=PLATFORM, payload=r) for r in rows_)
        return records

    def parse_metric(self, record: RawRecord) -> MetricRow:
        p = record.payload
        value = p.get("metrics", {}).get("conversionsValue") if isinstance(p.get("metrics"), dict) else None
        return MetricRow(
            platform=PLATFORM,
            account_id=rows.text(rows.field(p, "customer.id"), field_name="customer.id"),
            campaign_external_id=rows.text(rows.field(p, "campaign.id"), field_name="campaign.id"),
            day=rows.day(rows.field(p, "segments.date"), field_name="segments.date"),
            spend=rows.money_from_micros(
                rows.field(p, "metrics.costMicros"), field_name="metrics.costMicros"
            ),
            impressions=rows.count(rows.field(p, "metrics.impressions"), field_name="metrics.impressions"),
            clicks=rows.count(rows.field(p, "metrics.clicks"), field_name="metrics.clicks"),
            currency=rows.currency(
                rows.field(p, "customer.currencyCode"), field_name="customer.currencyCode"
            ),
            attributed_revenue=None
            if value is None
            else rows.money(value, field_name="metrics.conversionsValue"),
        )

    # ---- budgets ---------------------------------------------------------------------------------
    def _budgets_by_resource(self, customer_id: str) -> dict[str, float]:
        body = self._http.get(f"/customers/{customer_id}/campaignBudgets").body
        return {
            str(r["campaignBudget"]["resourceName"]): rows.money_from_micros(
                r["campaignBudget"]["amountMicros"], field_name="campaignBudget.amountMicros"
            )
            for r in body.get("results", [])
        }

    def get_budgets(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for customer_id in self.customers():
            by_resource = self._budgets_by_resource(customer_id)
            for c in self._campaign_rows(customer_id):
                out[str(c["id"])] = by_resource[str(c["campaignBudget"])]
        return out

    def _locate(self, campaign_external_id: str) -> tuple[str, str]:
        if campaign_external_id not in self._budget_of:
            for customer_id in self.customers():
                self._campaign_rows(customer_id)
        if campaign_external_id not in self._budget_of:
            raise ValueError(
                f"google_ads campaign {campaign_external_id} is not in customers {self.customers()}; "
                "check the id (list_campaigns() shows the known ones)"
            )
        return self._budget_of[campaign_external_id]

    def set_budget(
        self,
        campaign_external_id: str,
        daily_budget: float,
        *,
        idempotency_key: str,
        validate_only: bool = False,
    ) -> BudgetChangeResult:
        """Set a campaign's daily budget (currency units). ``validate_only`` checks without applying.

        Retried after a timeout or 5xx with the same key, so the platform applies it once. On a
        replay, ``previous_daily_budget`` is the budget read before this call (already the new one
        when an earlier call applied it).
        """
        if not math.isfinite(daily_budget) or daily_budget <= 0:
            raise ValueError(
                f"daily budget for google_ads campaign {campaign_external_id} must be > 0, got {daily_budget}"
            )
        customer_id, resource = self._locate(campaign_external_id)
        previous = self._budgets_by_resource(customer_id)[resource]
        body = {
            "operations": [
                {
                    "update": {
                        "resourceName": resource,
                        "amountMicros": str(rows.micros_from_money(daily_budget)),
                    },
                    "updateMask": "amount_micros",
                }
            ],
            "partialFailure": False,
            "validateOnly": validate_only,
        }
        answer = self._http.request(
            "POST",
            f"/customers/{customer_id}/campaignBudgets:mutate",
            json_body=body,
            idempotency_key=idempotency_key,
        )
        return BudgetChangeResult(
            campaign_external_id=campaign_external_id,
            previous_daily_budget=previous,
            new_daily_budget=round(daily_budget, 2),
            idempotency_key=idempotency_key,
            replayed=answer.replayed,
            response={"status": answer.status, "request_id": answer.request_id, "body": answer.body},
        )

    def learning_status(self) -> dict[str, LearningStatus]:
        out: dict[str, LearningStatus] = {}
        for customer_id in self.customers():
            for c in self._campaign_rows(customer_id):
                status = str(c.get("primaryStatus", ""))
                reasons = ",".join(str(r) for r in c.get("primaryStatusReasons") or [])
                out[str(c["id"])] = LearningStatus(
                    campaign_external_id=str(c["id"]),
                    learning=status == "LEARNING",
                    detail=f"{status} {reasons}".strip(),
                )
        return out
