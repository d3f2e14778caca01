"""The geo dimension of the sandbox platforms: per-region reports and per-region delivery.

Each dialect speaks geo its own way, where the real platform has an equivalent:

    GET  /store/v1/daily_revenue_by_region?start&end&page&page_size        route "revenue_by_region"
         rows {"date", "region", "revenue" (decimal string), "currency"}
    GET  /meta/v21.0/{campaign_id}/insights_by_region?since&until             route "region_insights"
         rows {"date_start", "date_stop", "campaign_id", "region", "spend" (decimal string)}
    GET  /meta/v21.0/{campaign_id}/geo_targeting                             route "geo_targeting"
    POST /meta/v21.0/{campaign_id}/geo_targeting  form excluded_regions=["a","b"] (JSON list)
         the ad set's location targeting: every region is targeted but the excluded ones
    GET  /google/v17/customers/{cid}/campaigns/{campaign_id}/geoPerformance?start&end   route "geo_report"
         rows {"segments": {"date", "geoTargetRegion"}, "metrics": {"costMicros"}}
    GET  /google/v17/customers/{cid}/campaigns/{campaign_id}/geoBidModifiers            route "geo_modifiers"
    POST /google/v17/customers/{cid}/campaigns/{campaign_id}/geoBidModifiers
         body {"modifiers": {"region": -1.0, ...}}: a bid modifier per geo target, -1.0 excludes the
         region (Google's "-100%"), 0.0 restores it; regions left out keep their modifier

The retail-media dialect has no geo targeting, so a retail channel cannot be held out by region.
A region's factor multiplies the channel's delivery there (``Market.set_geo_factor``); the market
reports the spend delivered per region and channel, and the revenue per region.
"""

from __future__ import annotations

import json
import math
from datetime import date
from typing import Any, Protocol, cast

from fastapi import APIRouter, Request
from fastapi.responses import Response

from connectors.sandbox import api_google, api_meta, api_store
from connectors.sandbox.api_common import Dialect, answer, guard
from connectors.sandbox.api_state import DayOutcomeLike, SandboxState, SimCampaignLike, page, report_pager

MAX_PAGE_SIZE = 5000
DEFAULT_PAGE_SIZE = 1000


class GeoMarket(Protocol):
    """What the geo routes need from the market beyond :class:`~connectors.sandbox.api_state.MarketLike`."""

    @property
    def regions(self) -> list[str]: ...
    def set_geo_factor(self, channel: str, region: str, factor: float) -> None: ...
    def geo_factor(self, channel: str, region: str) -> float: ...


class RegionalDay(Protocol):
    """What the geo reports read from a simulated day (``connectors.sandbox.market.DayOutcome``)."""

    @property
    def regions(self) -> dict[str, float]: ...
    @property
    def region_spend(self) -> dict[str, dict[str, float]]: ...


def _regional(o: DayOutcomeLike) -> RegionalDay:
    return cast(RegionalDay, o)


def _geo(state: SandboxState) -> GeoMarket:
    market: Any = state.market
    return market  # type: ignore[no-any-return]


def _window(request: Request, first: str, last: str) -> tuple[date, date, int, int]:
    q = request.query_params
    start, end = date.fromisoformat(q[first]), date.fromisoformat(q[last])
    page_no = int(q.get("page", 1))
    size = int(q.get("page_size", DEFAULT_PAGE_SIZE))
    if page_no < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"`page` counts from 1 and `page_size` is 1..{MAX_PAGE_SIZE}")
    if end < start:
        raise ValueError(f"`{last}` {end} is before `{first}` {start}")
    return start, end, page_no, size


def _paged(
    state: SandboxState, dialect: Dialect, route: str, request: Request, first: str, last: str, make_rows: Any
) -> Response:
    try:
        start, end, page_no, size = _window(request, first, last)
    except (KeyError, ValueError) as exc:
        return dialect.error(
            state, "invalid", f"`{first}`, `{last}` (YYYY-MM-DD), `page`, `page_size`: {exc}"
        )
    per_day = len(_geo(state).regions)
    chunk, _, total = page(report_pager(state, start, end, per_day, make_rows), (page_no - 1) * size, size)
    total_pages = max(1, math.ceil(total / size))
    body = {"data": chunk, "page": page_no, "next_page": page_no + 1 if page_no < total_pages else None}
    return answer(state, dialect, route, body)


def _known(state: SandboxState, dialect: Dialect, name: str, campaign_id: str) -> SimCampaignLike | Response:
    campaign = state.campaign(name, campaign_id)
    if campaign is None:
        return dialect.error(state, "not_found", f"no campaign `{campaign_id}` in this {name} sandbox")
    return campaign


def _regions_or_error(state: SandboxState, dialect: Dialect, regions: list[str]) -> Response | None:
    known = _geo(state).regions
    unknown = [r for r in regions if r not in known]
    if unknown:
        return dialect.error(
            state, "invalid", f"unknown region(s) {', '.join(unknown)}; known regions: {', '.join(known)}"
        )
    return None


# ------------------------------------------------------------------------------------------- store


def _store_routes(r: APIRouter, state: SandboxState) -> None:
    dialect = api_store.DIALECT

    @r.get(api_store.PREFIX + "/daily_revenue_by_region")
    def revenue_by_region(request: Request) -> Response:
        if (refused := guard(state, dialect, "revenue_by_region", "store:read", request)) is not None:
            return refused
        currency = state.currency()

        def rows(o: DayOutcomeLike) -> list[dict[str, Any]]:
            regions = _regional(o).regions
            return [
                {"date": o.day.isoformat(), "region": name, "revenue": f"{value:.2f}", "currency": currency}
                for name, value in regions.items()
            ]

        return _paged(state, dialect, "revenue_by_region", request, "start", "end", rows)


# -------------------------------------------------------------------------------------------- meta


def _meta_routes(r: APIRouter, state: SandboxState) -> None:
    dialect = api_meta.DIALECT

    @r.get(api_meta.PREFIX + "/{campaign_id}/insights_by_region")
    def region_insights(campaign_id: str, request: Request) -> Response:
        token = api_meta._token(request)
        if (refused := guard(state, dialect, "region_insights", "meta:read", request, token)) is not None:
            return refused
        found = _known(state, dialect, "meta", campaign_id)
        if isinstance(found, Response):
            return found
        channel = found.channel

        def rows(o: DayOutcomeLike) -> list[dict[str, Any]]:
            spend = _regional(o).region_spend
            day = o.day.isoformat()
            return [
                {
                    "date_start": day,
                    "date_stop": day,
                    "campaign_id": campaign_id,
                    "region": name,
                    "spend": f"{per_channel.get(channel, 0.0):.2f}",
                }
                for name, per_channel in spend.items()
            ]

        return _paged(state, dialect, "region_insights", request, "since", "until", rows)

    def targeting(campaign: SimCampaignLike) -> dict[str, Any]:
        market = _geo(state)
        with state.lock:
            excluded = [g for g in market.regions if market.geo_factor(campaign.channel, g) == 0.0]
        return {
            "id": campaign.external_id,
            "geo_locations": {"regions": market.regions},
            "excluded_geo_locations": {"regions": excluded},
        }

    @r.get(api_meta.PREFIX + "/{campaign_id}/geo_targeting")
    def read_targeting(campaign_id: str, request: Request) -> Response:
        token = api_meta._token(request)
        if (refused := guard(state, dialect, "geo_targeting", "meta:read", request, token)) is not None:
            return refused
        found = _known(state, dialect, "meta", campaign_id)
        if isinstance(found, Response):
            return found
        return answer(state, dialect, "geo_targeting", targeting(found))

    @r.post(api_meta.PREFIX + "/{campaign_id}/geo_targeting")
    async def edit_targeting(campaign_id: str, request: Request) -> Response:
        form = await api_meta._form(request)
        token = api_meta._token(request, form)
        if (refused := guard(state, dialect, "geo_targeting", "meta:write", request, token)) is not None:
            return refused
        found = _known(state, dialect, "meta", campaign_id)
        if isinstance(found, Response):
            return found
        try:
            excluded = json.loads(form["excluded_regions"])
            if not isinstance(excluded, list) or not all(isinstance(x, str) for x in excluded):
                raise ValueError("must be a JSON list of region names")
        except (KeyError, ValueError) as exc:
            return dialect.error(state, "invalid", f"`excluded_regions` (a JSON list of region names): {exc}")
        if (bad := _regions_or_error(state, dialect, excluded)) is not None:
            return bad
        market = _geo(state)
        with state.lock:
            for region in market.regions:
                market.set_geo_factor(found.channel, region, 0.0 if region in excluded else 1.0)
        return answer(state, dialect, "geo_targeting", targeting(found))


# ------------------------------------------------------------------------------------------ google


def _google_routes(r: APIRouter, state: SandboxState) -> None:
    dialect = api_google.DIALECT
    base = api_google.PREFIX + "/customers/{customer_id}/campaigns/{campaign_id}"

    def located(customer_id: str, campaign_id: str) -> SimCampaignLike | Response:
        found = _known(state, dialect, "google", campaign_id)
        if isinstance(found, Response) or found.account_id.replace("-", "") == customer_id.replace("-", ""):
            return found
        return dialect.error(state, "not_found", f"campaign `{campaign_id}` is not in customer {customer_id}")

    @r.get(base + "/geoPerformance")
    def geo_report(customer_id: str, campaign_id: str, request: Request) -> Response:
        if (refused := guard(state, dialect, "geo_report", "google:read", request)) is not None:
            return refused
        found = located(customer_id, campaign_id)
        if isinstance(found, Response):
            return found
        channel = found.channel

        def rows(o: DayOutcomeLike) -> list[dict[str, Any]]:
            spend = _regional(o).region_spend
            return [
                {
                    "campaign": {"id": campaign_id},
                    "segments": {"date": o.day.isoformat(), "geoTargetRegion": name},
                    "metrics": {"costMicros": str(round(per_channel.get(channel, 0.0) * 100) * 10_000)},
                }
                for name, per_channel in spend.items()
            ]

        return _paged(state, dialect, "geo_report", request, "start", "end", rows)

    def modifiers(campaign: SimCampaignLike) -> dict[str, Any]:
        market = _geo(state)
        with state.lock:
            return {
                "campaign": campaign.external_id,
                "modifiers": {
                    g: round(market.geo_factor(campaign.channel, g) - 1.0, 6) for g in market.regions
                },
            }

    @r.get(base + "/geoBidModifiers")
    def read_modifiers(customer_id: str, campaign_id: str, request: Request) -> Response:
        if (refused := guard(state, dialect, "geo_modifiers", "google:read", request)) is not None:
            return refused
        found = located(customer_id, campaign_id)
        if isinstance(found, Response):
            return found
        return answer(state, dialect, "geo_modifiers", modifiers(found))

    @r.post(base + "/geoBidModifiers")
    async def edit_modifiers(customer_id: str, campaign_id: str, request: Request) -> Response:
        if (refused := guard(state, dialect, "geo_modifiers", "google:write", request)) is not None:
            return refused
        found = located(customer_id, campaign_id)
        if isinstance(found, Response):
            return found
        try:
            body = json.loads(await request.body())
            wanted = body["modifiers"]
            if not isinstance(wanted, dict):
                raise ValueError("`modifiers` must be an object region -> modifier")
            factors = {str(k): 1.0 + float(v) for k, v in wanted.items()}
            if any(not math.isfinite(f) or f < 0 for f in factors.values()):
                raise ValueError("a modifier must be a number >= -1.0 (-1.0 excludes the region)")
        except (KeyError, ValueError, TypeError) as exc:
            return dialect.error(state, "invalid", f'body {{"modifiers": {{region: modifier}}}}: {exc}')
        if (bad := _regions_or_error(state, dialect, list(factors))) is not None:
            return bad
        market = _geo(state)
        with state.lock:
            for region, factor in factors.items():
                market.set_geo_factor(found.channel, region, factor)
        return answer(state, dialect, "geo_modifiers", modifiers(found))


def router(state: SandboxState) -> APIRouter:
    r = APIRouter(tags=["geo"])
    _store_routes(r, state)
    _meta_routes(r, state)
    _google_routes(r, state)
    return r
