"""The business's own revenue source (an e-commerce backend's daily export)."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import httpx

from connectors import rows
from connectors.base import RawRecord, RevenueRow
from connectors.http import ErrorInfo, PlatformHttp, RetryPolicy, Sleep
from connectors.retail_media import numbered_pages

SOURCE = "store"


def parse_store_error(response: httpx.Response, body: Any) -> ErrorInfo:
    """``{"error": {"code", "message", "request_id"}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ErrorInfo(message=f"HTTP {response.status_code}: {str(body)[:300]}")
    return ErrorInfo(message=f"{error.get('code')}: {error.get('message', '')}", code=error.get("code"))


class StoreRevenueSource:
    """:class:`connectors.base.RevenueSource` over ``GET {base_url}/daily_revenue`` (``.../store/v1``)."""

    source = SOURCE

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        timeout: float = 10.0,
        sleep: Sleep = time.sleep,
        retry: RetryPolicy | None = None,
        page_size: int = 500,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = PlatformHttp(
            platform=SOURCE,
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            sleep=sleep,
            retry=retry,
            parse_error=parse_store_error,
            transport=transport,
        )
        self._page_size = page_size

    @property
    def http(self) -> PlatformHttp:
        return self._http

    def close(self) -> None:
        self._http.close()

    def pull_daily_revenue(self, start: date, end: date) -> list[RawRecord]:
        params = {"start": start.isoformat(), "end": end.isoformat(), "page_size": str(self._page_size)}
        found = numbered_pages(
            self._http, "/daily_revenue", params, key="data", what="daily revenue", next_of="next_page"
        )
        return [RawRecord(source=SOURCE, payload=row) for row in found]

    def parse_revenue(self, record: RawRecord) -> RevenueRow:
        p = record.payload
        return RevenueRow(
            day=rows.day(rows.field(p, "date"), field_name="date"),
            revenue=rows.money(rows.field(p, "revenue"), field_name="revenue"),
            currency=rows.currency(rows.field(p, "currency"), field_name="currency"),
        )
