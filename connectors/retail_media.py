"""The retail-media connector (an Amazon Ads / Criteo style API): decimal budgets, 207 multi-status.

A budget update answers ``{"success": [{"index"}], "error": [{"index", "code", "details"}]}``; an item
in ``error`` becomes a :class:`RejectedByPlatform` carrying the platform's code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import date
from typing import Any

import httpx

from budgetloop.errors import RejectedByPlatform
from connectors import rows
from connectors.base import BudgetChangeResult, CampaignInfo, LearningStatus, MetricRow, RawRecord
from connectors.http import ErrorInfo, PlatformHttp, RetryPolicy, Sleep, collect_pages

PLATFORM = "retail_media"


def parse_retail_error(response: httpx.Response, body: Any) -> ErrorInfo:
    """``{"code", "details", "requestId"}``."""
    if not isinstance(body, dict) or "code" not in body:
        return ErrorInfo(message=f"HTTP {response.status_code}: {str(body)[:300]}")
    return ErrorInfo(message=f"{body['code']}: {body.get('details', '')}", code=str(body["code"]))


def numbered_pages(
    http: PlatformHttp,
    path: str,
    params: Mapping[str, str],
    *,
    key: str,
    what: str,
    next_of: str = "totalPages",
) -> list[dict[str, Any]]:
    """Every row of a listing paged by number from 1 (``totalPages``, or ``next_page`` for the store)."""

    def fetch(cursor: str | None) -> tuple[list[Any], str | None]:
        number = int(cursor or 1)
        body = http.get(path, params={**params, "page": str(number)}).body
        if next_of == "totalPages":
            nxt = number + 1 if number < int(body.get("totalPages", 1)) else None
        else:
            nxt = body.get(next_of)
        return list(body.get(key, [])), None if nxt is None else str(nxt)

    return collect_pages(fetch, platform=http.platform, what=what)


class RetailMediaConnector:
    """:class:`connectors.base.Connector` for a retail-media-like API at ``base_url`` (``.../v1``)."""

    platform = PLATFORM

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        channel_map: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        sleep: Sleep = time.sleep,
        retry: RetryPolicy | None = None,
        page_size: int = 500,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = PlatformHttp(
            platform=PLATFORM,
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            sleep=sleep,
            retry=retry,
            parse_error=parse_retail_error,
            request_id_headers=("x-request-id",),
            transport=transport,
        )
        self._channel_map = dict(channel_map or {})
        self._page_size = page_size

    @property
    def http(self) -> PlatformHttp:
        return self._http

    def close(self) -> None:
        self._http.close()

    def _campaigns(self) -> list[dict[str, Any]]:
        return numbered_pages(
            self._http, "/campaigns", {"pageSize": str(self._page_size)}, key="campaigns", what="campaigns"
        )

    def _channel(self, campaign: Mapping[str, Any]) -> str:
        cid = str(campaign["campaignId"])
        if cid in self._channel_map:
            return self._channel_map[cid]
        tags = campaign.get("tags")
        if isinstance(tags, dict) and tags.get("channel"):
            return str(tags["channel"])
        raise ValueError(
            f"retail_media campaign {cid} ({campaign.get('name')!r}) has no `channel` tag; "
            "tag it on the platform or pass channel_map={campaign_id: channel}"
        )

    def list_campaigns(self) -> list[CampaignInfo]:
        return [
            CampaignInfo(
                platform=PLATFORM,
                account_id=str(c["advertiserId"]),
                external_id=str(c["campaignId"]),
                name=str(c.get("name", "")),
                channel=self._channel(c),
                currency=str(c["currencyCode"]),
            )
            for c in self._campaigns()
        ]

    def pull_daily_metrics(self, start: date, end: date) -> list[RawRecord]:
        params = {"start": start.isoformat(), "end": end.isoformat(), "pageSize": str(self._page_size)}
        found = numbered_pages(self._http, "/reports/daily", params, key="rows", what="daily report")
        return [RawRecord(source=PLATFORM, payload=row) for row in found]

    def parse_metric(self, record: RawRecord) -> MetricRow:
        p = record.payload
        sales = p.get("attributedSales14d")
        return MetricRow(
            platform=PLATFORM,
            account_id=rows.text(rows.field(p, "advertiserId"), field_name="advertiserId"),
            campaign_external_id=rows.text(rows.field(p, "campaignId"), field_name="campaignId"),
            day=rows.day(rows.field(p, "date"), field_name="date"),
            spend=rows.money(rows.field(p, "cost"), field_name="cost"),
            impressions=rows.count(rows.field(p, "impressions"), field_name="impressions"),
            clicks=rows.count(rows.field(p, "clicks"), field_name="clicks"),
            currency=rows.currency(rows.field(p, "currencyCode"), field_name="currencyCode"),
            attributed_revenue=None if sales is None else rows.money(sales, field_name="attributedSales14d"),
        )

    def get_budgets(self) -> dict[str, float]:
        return {
            str(c["campaignId"]): rows.money(c["dailyBudget"], field_name="dailyBudget")
            for c in self._campaigns()
        }

    def set_budget(
        self, campaign_external_id: str, daily_budget: float, *, idempotency_key: str
    ) -> BudgetChangeResult:
        """Set one campaign's daily budget; an item in the answer's ``error`` list is RejectedByPlatform."""
        if not math.isfinite(daily_budget) or daily_budget <= 0:
            raise ValueError(
                f"daily budget for retail_media campaign {campaign_external_id} must be > 0, "
                f"got {daily_budget}"
            )
        previous = self.get_budgets().get(campaign_external_id)
        if previous is None:
            raise ValueError(
                f"retail_media campaign {campaign_external_id} is unknown; list_campaigns() shows the ids"
            )
        answer = self._http.request(
            "PUT",
            "/campaigns/budgets",
            json_body=[{"campaignId": campaign_external_id, "dailyBudget": round(daily_budget, 2)}],
            idempotency_key=idempotency_key,
        )
        errors = answer.body.get("error") or []
        if errors:
            first = errors[0]
            raise RejectedByPlatform(
                f"budget update of campaign {campaign_external_id} refused: {first.get('details', '')}",
                platform=PLATFORM,
                status=answer.status,
                request_id=answer.request_id,
                code=str(first.get("code")),
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
        return {
            str(c["campaignId"]): LearningStatus(
                campaign_external_id=str(c["campaignId"]),
                learning=c.get("deliveryStatus") == "LEARNING",
                detail=str(c.get("deliveryStatus", "")),
            )
            for c in self._campaigns()
        }
