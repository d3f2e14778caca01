"""The Meta Marketing API connector (Graph v21.0 shapes): budgets in cents, spend as decimal strings.

Meta throttles with HTTP 400 and an error code (4, 17, 32, 613, 80000-80014) rather than 429, so the
error parser flags those codes as rate limits; they are retried like a 429.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from datetime import date
from typing import Any

import httpx

from connectors import rows
from connectors.base import BudgetChangeResult, CampaignInfo, LearningStatus, MetricRow, RawRecord
from connectors.http import ErrorInfo, PlatformHttp, RetryPolicy, Sleep, collect_pages

PLATFORM = "meta_ads"
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
PURCHASE_ACTIONS = frozenset({"omni_purchase", "purchase", "offsite_conversion.fb_pixel_purchase"})
CAMPAIGN_FIELDS = "id,name,account_id,daily_budget,effective_status,learning_stage_info,adlabels"
INSIGHT_FIELDS = (
    "account_id,account_currency,campaign_id,campaign_name,spend,impressions,clicks,action_values"
)


def parse_meta_error(response: httpx.Response, body: Any) -> ErrorInfo:
    """``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ErrorInfo(message=f"HTTP {response.status_code}: {str(body)[:300]}")
    code = error.get("code")
    subcode = error.get("error_subcode")
    text = f"{error.get('type', 'error')} code {code}" + (f"/{subcode}" if subcode else "")
    text += f": {error.get('message', '')}"
    if error.get("fbtrace_id"):
        text += f" (fbtrace_id {error['fbtrace_id']})"
    return ErrorInfo(message=text, code=code, rate_limited=isinstance(code, int) and code in RATE_LIMIT_CODES)


class MetaAdsConnector:
    """:class:`connectors.base.Connector` for a Meta-like Graph API at ``base_url`` (``.../v21.0``)."""

    platform = PLATFORM

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        account_ids: list[str] | None = None,
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
            parse_error=parse_meta_error,
            request_id_headers=("x-fb-trace-id",),
            transport=transport,
        )
        self._accounts: dict[str, str] | None = (
            None
            if account_ids is None
            else {a if a.startswith("act_") else f"act_{a}": "" for a in account_ids}
        )
        self._channel_map = dict(channel_map or {})
        self._page_size = page_size

    @property
    def http(self) -> PlatformHttp:
        return self._http

    def close(self) -> None:
        self._http.close()

    def _paged(self, path: str, params: Mapping[str, str], what: str) -> list[dict[str, Any]]:
        def fetch(after: str | None) -> tuple[list[Any], str | None]:
            query = {**params, "limit": str(self._page_size)}
            if after:
                query["after"] = after
            body = self._http.get(path, params=query).body
            paging = body.get("paging") or {}
            nxt = (paging.get("cursors") or {}).get("after") if paging.get("next") else None
            return list(body.get("data", [])), nxt

        return collect_pages(fetch, platform=PLATFORM, what=what)

    def accounts(self) -> dict[str, str]:
        """``act_<id>`` -> currency of every ad account the token reaches (or of those configured)."""
        if self._accounts is None or not all(self._accounts.values()):
            found = {
                str(a["id"]): str(a.get("currency", ""))
                for a in self._paged("/me/adaccounts", {"fields": "id,account_id,currency"}, "ad accounts")
            }
            self._accounts = (
                found if self._accounts is None else {a: found.get(a, "") for a in self._accounts}
            )
        return dict(self._accounts)

    def _campaigns(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (account, c)
            for account in self.accounts()
            for c in self._paged(
                f"/{account}/campaigns", {"fields": CAMPAIGN_FIELDS}, f"campaigns of {account}"
            )
        ]

    def _channel(self, campaign: Mapping[str, Any]) -> str:
        cid = str(campaign["id"])
        if cid in self._channel_map:
            return self._channel_map[cid]
        for label in campaign.get("adlabels") or []:
            name = str(label.get("name", "")) if isinstance(label, dict) else ""
            if name.startswith("channel:"):
                return name.split(":", 1)[1]
        raise ValueError(
            f"meta_ads campaign {cid} ({campaign.get('name')!r}) has no `channel:` ad label; "
            "add one in Ads Manager or pass channel_map={campaign_id: channel}"
        )

    def list_campaigns(self) -> list[CampaignInfo]:
        currencies = self.accounts()
        return [
            CampaignInfo(
                platform=PLATFORM,
                account_id=account,
                external_id=str(c["id"]),
                name=str(c.get("name", "")),
                channel=self._channel(c),
                currency=currencies[account],
            )
            for account, c in self._campaigns()
        ]

    def pull_daily_metrics(self, start: date, end: date) -> list[RawRecord]:
        params = {
            "level": "campaign",
            "time_increment": "1",
            "time_range": json.dumps({"since": start.isoformat(), "until": end.isoformat()}),
            "fields": INSIGHT_FIELDS,
        }
        return [
            RawRecord(source=PLATFORM, payload=row)
            for account in self.accounts()
            for row in self._paged(f"/{account}/insights", params, f"insights of {account}")
        ]

    def parse_metric(self, record: RawRecord) -> MetricRow:
        p = record.payload
        account = rows.text(rows.field(p, "account_id"), field_name="account_id")
        attributed: float | None = None
        values = p.get("action_values")
        if isinstance(values, list):
            attributed = round(
                sum(
                    rows.money(v.get("value"), field_name="action_values.value")
                    for v in values
                    if isinstance(v, dict) and v.get("action_type") in PURCHASE_ACTIONS
                ),
                2,
            )
        return MetricRow(
            platform=PLATFORM,
            account_id=account if account.startswith("act_") else f"act_{account}",
            campaign_external_id=rows.text(rows.field(p, "campaign_id"), field_name="campaign_id"),
            day=rows.day(rows.field(p, "date_start"), field_name="date_start"),
            spend=rows.money(rows.field(p, "spend"), field_name="spend"),
            impressions=rows.count(rows.field(p, "impressions"), field_name="impressions"),
            clicks=rows.count(rows.field(p, "clicks"), field_name="clicks"),
            currency=rows.currency(rows.field(p, "account_currency"), field_name="account_currency"),
            attributed_revenue=attributed,
        )

    def get_budgets(self) -> dict[str, float]:
        return {
            str(c["id"]): rows.money_from_cents(c["daily_budget"], field_name="daily_budget")
            for _, c in self._campaigns()
        }

    def set_budget(
        self, campaign_external_id: str, daily_budget: float, *, idempotency_key: str
    ) -> BudgetChangeResult:
        """Set a campaign's ``daily_budget`` (sent in cents). Retries reuse the key: applied once."""
        if not math.isfinite(daily_budget) or daily_budget <= 0:
            raise ValueError(
                f"daily budget for meta_ads campaign {campaign_external_id} must be > 0, got {daily_budget}"
            )
        current = self._http.get(f"/{campaign_external_id}", params={"fields": "daily_budget"}).body
        previous = rows.money_from_cents(current.get("daily_budget"), field_name="daily_budget")
        answer = self._http.request(
            "POST",
            f"/{campaign_external_id}",
            form={"daily_budget": str(rows.cents_from_money(daily_budget))},
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
        for _, c in self._campaigns():
            info = c.get("learning_stage_info") or {}
            status = str(info.get("status", "")) if isinstance(info, dict) else ""
            out[str(c["id"])] = LearningStatus(
                campaign_external_id=str(c["id"]), learning=status == "LEARNING", detail=status
            )
        return out
