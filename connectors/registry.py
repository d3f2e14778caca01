"""All connectors of one deployment, built together: the sandbox's, or (later) real ones from settings."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from connectors.base import Connector, RevenueSource
from connectors.google_ads import GoogleAdsConnector
from connectors.http import RetryPolicy, Sleep
from connectors.meta_ads import MetaAdsConnector
from connectors.retail_media import RetailMediaConnector
from connectors.sandbox.api_auth import DEV_TOKENS
from connectors.store import StoreRevenueSource

__all__ = ["Connectors", "sandbox_connectors"]


@dataclass
class Connectors:
    """The ad platforms by platform name (``google_ads``, ``meta_ads``, ``retail_media``) and the revenue."""

    platforms: dict[str, Connector]
    revenue: RevenueSource

    def close(self) -> None:
        for client in [*self.platforms.values(), self.revenue]:
            close = getattr(client, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> Connectors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sandbox_connectors(
    base_url: str,
    *,
    tokens: Mapping[str, str] | None = None,
    sleep: Sleep = time.sleep,
    timeout: float = 10.0,
    retry: RetryPolicy | None = None,
) -> Connectors:
    """Connectors for the sandbox at ``base_url`` (e.g. ``SandboxServer.base_url``).

    ``tokens`` maps a dialect (``google``, ``meta``, ``retail``, ``store``) to its token; the missing
    ones default to the sandbox's documented dev tokens.
    """
    root = base_url.rstrip("/")
    tok = {**DEV_TOKENS, **(tokens or {})}
    platforms: dict[str, Connector] = {
        "google_ads": GoogleAdsConnector(
            f"{root}/google/v17", token=tok["google"], sleep=sleep, timeout=timeout, retry=retry
        ),
        "meta_ads": MetaAdsConnector(
            f"{root}/meta/v21.0", token=tok["meta"], sleep=sleep, timeout=timeout, retry=retry
        ),
        "retail_media": RetailMediaConnector(
            f"{root}/retail/v1", token=tok["retail"], sleep=sleep, timeout=timeout, retry=retry
        ),
    }
    revenue = StoreRevenueSource(
        f"{root}/store/v1", token=tok["store"], sleep=sleep, timeout=timeout, retry=retry
    )
    return Connectors(platforms=platforms, revenue=revenue)
