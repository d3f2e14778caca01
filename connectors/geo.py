"""The geo dimension through the platforms' own dialects: per-region reports and per-region delivery.

A geo holdout turns a channel off in some regions (factor 0) and back on at the end (factor 1). Each
client wraps the HTTP session of its platform's connector, so auth, retries and error typing are the
connector's. Meta-like ad sets take an exclusion list (factors 0 or 1 only); Google-like campaigns take
a bid modifier per geo target (-100% excludes). The retail-media dialect has no geo targeting: its
channels cannot be held out by region (:func:`geo_clients` leaves them out).

Setting factors is idempotent (absolute values, not deltas), so a retried call cannot apply twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from connectors import rows
from connectors.google_ads import GoogleAdsConnector
from connectors.meta_ads import MetaAdsConnector
from connectors.registry import Connectors
from connectors.retail_media import numbered_pages
from connectors.store import StoreRevenueSource

__all__ = [
    "GeoClient",
    "GoogleGeo",
    "MetaGeo",
    "RegionRevenue",
    "RegionSpend",
    "StoreRegions",
    "geo_clients",
    "regional_revenue",
]


@dataclass(frozen=True)
class RegionSpend:
    day: date
    region: str
    campaign_external_id: str
    spend: float


@dataclass(frozen=True)
class RegionRevenue:
    day: date
    region: str
    revenue: float
    currency: str


class GeoClient(Protocol):
    platform: str

    def region_spend(self, campaign_external_id: str, start: date, end: date) -> list[RegionSpend]: ...

    def geo_factors(self, campaign_external_id: str) -> dict[str, float]:
        """Region -> delivery factor (1.0 normal, 0.0 held out)."""

    def set_geo_factors(self, campaign_external_id: str, factors: Mapping[str, float]) -> dict[str, float]:
        """Set the named regions' factors (others unchanged); returns every region's factor after."""


class MetaGeo:
    """Ad-set location targeting: regions are targeted or excluded, nothing in between."""

    platform = "meta_ads"

    def __init__(self, connector: MetaAdsConnector) -> None:
        self._http = connector.http

    def region_spend(self, campaign_external_id: str, start: date, end: date) -> list[RegionSpend]:
        found = numbered_pages(
            self._http,
            f"/{campaign_external_id}/insights_by_region",
            {"since": start.isoformat(), "until": end.isoformat()},
            key="data",
            what="region insights",
            next_of="next_page",
        )
        return [
            RegionSpend(
                day=rows.day(rows.field(r, "date_start"), field_name="date_start"),
                region=str(rows.field(r, "region")),
                campaign_external_id=campaign_external_id,
                spend=rows.money(rows.field(r, "spend"), field_name="spend"),
            )
            for r in found
        ]

    def geo_factors(self, campaign_external_id: str) -> dict[str, float]:
        body = self._http.get(f"/{campaign_external_id}/geo_targeting").body
        excluded = set(body["excluded_geo_locations"]["regions"])
        return {g: 0.0 if g in excluded else 1.0 for g in body["geo_locations"]["regions"]}

    def set_geo_factors(self, campaign_external_id: str, factors: Mapping[str, float]) -> dict[str, float]:
        odd = {g: f for g, f in factors.items() if f not in (0.0, 1.0)}
        if odd:
            raise ValueError(
                f"meta_ads targets a region or excludes it; factors {odd} for campaign "
                f"{campaign_external_id} must be 0.0 (excluded) or 1.0 (targeted)"
            )
        merged = {**self.geo_factors(campaign_external_id), **factors}
        excluded = sorted(g for g, f in merged.items() if f == 0.0)
        body = self._http.request(
            "POST",
            f"/{campaign_external_id}/geo_targeting",
            form={"excluded_regions": json.dumps(excluded)},
            idempotency_key=f"geo-{campaign_external_id}-{'|'.join(excluded)}"[:100],
        ).body
        gone = set(body["excluded_geo_locations"]["regions"])
        return {g: 0.0 if g in gone else 1.0 for g in body["geo_locations"]["regions"]}


class GoogleGeo:
    """Geo bid modifiers per campaign: factor = 1 + modifier (-1.0, i.e. -100%, excludes the region)."""

    platform = "google_ads"

    def __init__(self, connector: GoogleAdsConnector) -> None:
        self._connector = connector
        self._http = connector.http

    def _base(self, campaign_external_id: str) -> str:
        customer_id, _ = self._connector._locate(campaign_external_id)
        return f"/customers/{customer_id}/campaigns/{campaign_external_id}"

    def region_spend(self, campaign_external_id: str, start: date, end: date) -> list[RegionSpend]:
        found = numbered_pages(
            self._http,
            self._base(campaign_external_id) + "/geoPerformance",
            {"start": start.isoformat(), "end": end.isoformat()},
            key="data",
            what="geo performance",
            next_of="next_page",
        )
        return [
            RegionSpend(
                day=rows.day(r["segments"]["date"], field_name="segments.date"),
                region=str(r["segments"]["geoTargetRegion"]),
                campaign_external_id=campaign_external_id,
                spend=round(int(r["metrics"]["costMicros"]) / 1_000_000, 2),
            )
            for r in found
        ]

    def geo_factors(self, campaign_external_id: str) -> dict[str, float]:
        body = self._http.get(self._base(campaign_external_id) + "/geoBidModifiers").body
        return {g: round(1.0 + float(m), 6) for g, m in body["modifiers"].items()}

    def set_geo_factors(self, campaign_external_id: str, factors: Mapping[str, float]) -> dict[str, float]:
        modifiers = {g: round(float(f) - 1.0, 6) for g, f in factors.items()}
        body = self._http.request(
            "POST",
            self._base(campaign_external_id) + "/geoBidModifiers",
            json_body={"modifiers": modifiers},
            idempotency_key=f"geo-{campaign_external_id}-{json.dumps(modifiers, sort_keys=True)}"[:100],
        ).body
        return {g: round(1.0 + float(m), 6) for g, m in body["modifiers"].items()}


class StoreRegions:
    """The store's revenue per region (``GET .../daily_revenue_by_region``)."""

    def __init__(self, source: StoreRevenueSource) -> None:
        self._http = source.http

    def region_revenue(self, start: date, end: date) -> list[RegionRevenue]:
        found = numbered_pages(
            self._http,
            "/daily_revenue_by_region",
            {"start": start.isoformat(), "end": end.isoformat(), "page_size": "2000"},
            key="data",
            what="revenue by region",
            next_of="next_page",
        )
        return [
            RegionRevenue(
                day=rows.day(rows.field(r, "date"), field_name="date"),
                region=str(rows.field(r, "region")),
                revenue=rows.money(rows.field(r, "revenue"), field_name="revenue"),
                currency=rows.currency(rows.field(r, "currency"), field_name="currency"),
            )
            for r in found
        ]


def geo_clients(connectors: Connectors) -> dict[str, GeoClient]:
    """Platform name -> its geo client, for the platforms whose dialect has geo targeting."""
    out: dict[str, GeoClient] = {}
    for name, connector in connectors.platforms.items():
        if isinstance(connector, MetaAdsConnector):
            out[name] = MetaGeo(connector)
        elif isinstance(connector, GoogleAdsConnector):
            out[name] = GoogleGeo(connector)
    return out


def regional_revenue(connectors: Connectors) -> StoreRegions | None:
    """The revenue source's per-region export, when it has one."""
    source = connectors.revenue
    return StoreRegions(source) if isinstance(source, StoreRevenueSource) else None
