"""The HTTP layer every connector shares: timeouts, retries with backoff, typed errors.

One :class:`PlatformHttp` wraps one ``httpx.Client`` for one platform. It retries what is safe to
retry and turns everything else into a typed error from :mod:`budgetloop.errors`:

    429, or a dialect's rate-limit code   -> RateLimited(retry_after)     retried, honouring Retry-After
                                                                        (raised at once past max_retry_after)
    5xx, timeouts, dropped connections    -> TransientError               retried with backoff + full jitter
    malformed JSON in a 2xx               -> TransientError               retried (a truncated body)
    any other 4xx                         -> RejectedByPlatform           raised at once

A write is retried after it may have reached the platform (a timeout, a 5xx) only when it carries an
idempotency key, so the platform can recognise the replay and apply nothing twice. The sleep
function and the jitter's random generator are injectable: tests never sleep for real.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from budgetloop.errors import ConnectorError, RateLimited, RejectedByPlatform, TransientError

Sleep = Callable[[float], None]
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait. ``max_attempts`` counts the first try.

    A ``Retry-After`` longer than ``max_retry_after`` is not slept through: the RateLimited is raised
    at once with its ``retry_after``, for the caller to reschedule.
    """

    max_attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 20.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"`max_attempts` must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("`base_delay` and `max_delay` must be non-negative")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**attempt)] (attempt counts from 0)."""
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        return rng.uniform(0.0, cap)

    def delay_for(self, error: ConnectorError, attempt: int, rng: random.Random) -> float:
        if isinstance(error, RateLimited) and error.retry_after > 0:
            return error.retry_after
        return self.backoff(attempt, rng)


@dataclass(frozen=True)
class ErrorInfo:
    """What a dialect's error envelope says, as :class:`PlatformHttp` needs it."""

    message: str
    code: str | int | None = None
    rate_limited: bool = False


ErrorParser = Callable[[httpx.Response, Any], ErrorInfo]


@dataclass(frozen=True)
class JsonResponse:
    status: int
    body: Any
    headers: Mapping[str, str]
    request_id: str | None

    @property
    def replayed(self) -> bool:
        return self.headers.get(REPLAYED_HEADER, "").lower() == "true"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form); None when absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _default_error(response: httpx.Response, body: Any) -> ErrorInfo:
    return ErrorInfo(message=f"HTTP {response.status_code}: {str(body)[:300]}")


class PlatformHttp:
    """One platform's HTTP client with retries. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        *,
        platform: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        sleep: Sleep = time.sleep,
        retry: RetryPolicy | None = None,
        parse_error: ErrorParser = _default_error,
        request_id_headers: tuple[str, ...] = ("x-request-id", "request-id"),
        seed: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"`timeout` must be positive seconds, got {timeout}")
        self.platform = platform
        self._sleep = sleep
        self._retry = retry or RetryPolicy()
        self._parse_error = parse_error
        self._request_id_headers = request_id_headers
        self._rng = random.Random(seed)
        self._client = httpx.Client(
            base_url=base_url,
            headers=dict(headers or {}),
            params=dict(params or {}),
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )
        self.attempts = 0  # every HTTP attempt made, retries included (for tests and metrics)

    def __enter__(self) -> PlatformHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> JsonResponse:
        return self.request("GET", path, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        read_only: bool = False,
    ) -> JsonResponse:
        """Send, retrying what is safe to retry; return the decoded JSON of a 2xx or raise typed.

        ``read_only`` marks a POST that changes nothing (a search), so it is retried like a GET.
        """
        safe = read_only or method.upper() in ("GET", "HEAD") or idempotency_key is not None
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}
        last: ConnectorError | None = None
        for attempt in range(self._retry.max_attempts):
            if last is not None:
                self._sleep(self._retry.delay_for(last, attempt - 1, self._rng))
            try:
                return self._once(method, path, params, json_body, form, headers)
            except RateLimited as exc:
                if exc.retry_after > self._retry.max_retry_after:
                    raise  # longer than we will wait here: the caller reschedules
                last = exc  # refused before processing: always safe to retry
            except TransientError as exc:
                if not safe:
                    raise TransientError(
                        f"{_bare(exc)}; not retried: a {method} without an idempotency key may have been "
                        "applied",
                        platform=self.platform,
                        status=exc.status,
                        request_id=exc.request_id,
                        code=exc.code,
                    ) from exc
                last = exc
        assert last is not None
        raise type(last)(
            f"gave up after {self._retry.max_attempts} attempts on {method} {path}: {_bare(last)}",
            platform=self.platform,
            status=last.status,
            request_id=last.request_id,
            code=last.code,
            **({"retry_after": last.retry_after} if isinstance(last, RateLimited) else {}),
        ) from last

    def _once(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        form: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> JsonResponse:
        self.attempts += 1
        where = f"{method} {path}"
        try:
            response = self._client.request(
                method, path, params=dict(params or {}), json=json_body, data=form, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"timed out on {where}: {type(exc).__name__}", platform=self.platform
            ) from exc
        except httpx.TransportError as exc:
            raise TransientError(
                f"connection failed on {where}: {type(exc).__name__}: {exc}", platform=self.platform
            ) from exc
        request_id = next(
            (response.headers[h] for h in self._request_id_headers if h in response.headers), None
        )
        try:
            body: Any = response.json() if response.content else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            if response.is_success or response.status_code >= 500:
                raise TransientError(
                    f"unreadable JSON in the answer to {where} ({len(response.content)} bytes)",
                    platform=self.platform,
                    status=response.status_code,
                    request_id=request_id,
                ) from None
            body = response.text
        if response.is_success:
            return JsonResponse(response.status_code, body, response.headers, request_id)
        info = self._parse_error(response, body)
        message = f"{where} failed: {info.message}"
        status = response.status_code
        if status == 429 or info.rate_limited:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise RateLimited(
                message,
                platform=self.platform,
                retry_after=retry_after if retry_after is not None else 0.0,
                status=status,
                request_id=request_id,
                code=info.code,
            )
        if status >= 500 or status == 408:
            raise TransientError(
                message, platform=self.platform, status=status, request_id=request_id, code=info.code
            )
        raise RejectedByPlatform(
            message, platform=self.platform, status=status, request_id=request_id, code=info.code
        )


def _bare(exc: ConnectorError) -> str:
    """``exc``'s message without its ``(platform=…, status=…)`` context, for a wrapper that adds its own."""
    text = str(exc)
    cut = text.rfind(f" (platform={exc.platform}")
    return text[:cut] if cut >= 0 and text.endswith(")") else text


def collect_pages(
    fetch: Callable[[str | None], tuple[list[Any], str | None]],
    *,
    platform: str,
    what: str,
    max_pages: int = 100_000,
) -> list[Any]:
    """Every item of a paged listing: ``fetch(cursor)`` returns one page and the next cursor (None: last).

    A platform that hands back a cursor it already gave (a paging loop) is an error, not a hang.
    """
    items: list[Any] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(max_pages):
        chunk, cursor = fetch(cursor)
        items.extend(chunk)
        if cursor is None:
            return items
        if cursor in seen:
            raise TransientError(f"{what}: the platform repeated page cursor {cursor!r}", platform=platform)
        seen.add(cursor)
    raise TransientError(f"{what}: more than {max_pages} pages; narrow the date range", platform=platform)
