"""The retrying HTTP layer and the row readers, on misbehaviour that is hard to get from a real server.

``httpx.MockTransport`` stands in for a third-party server here (truncated bodies, dropped
connections, a paging loop); everything else is tested against the real sandbox on loopback.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date

import httpx
import pytest

from budgetloop.errors import RateLimited, RejectedByPlatform, TransientError
from connectors import rows
from connectors.base import RowRejected
from connectors.http import PlatformHttp, RetryPolicy, collect_pages, parse_retry_after


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return httpx.MockTransport(handle), seen


def client(transport: httpx.MockTransport, sleeps: list[float], **kw: object) -> PlatformHttp:
    return PlatformHttp(
        platform="p", base_url="http://platform.test", sleep=sleeps.append, transport=transport, seed=1, **kw
    )  # type: ignore[arg-type]


def test_full_jitter_stays_under_the_exponential_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(3)
    for attempt in range(8):
        cap = min(4.0, 0.5 * 2**attempt)
        draws = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) > 0.7 * cap  # it does spread over the whole interval


def test_retry_after_is_honoured_then_the_answer_returned() -> None:
    transport, seen = scripted(
        httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "slow down"}),
        httpx.Response(200, json={"ok": True}),
    )
    sleeps: list[float] = []
    with client(transport, sleeps) as http:
        assert http.get("/x").body == {"ok": True}
    assert sleeps == [7.0] and len(seen) == 2


def test_gives_up_after_max_attempts_with_the_typed_error() -> None:
    transport, seen = scripted(*[httpx.Response(503, json={}, headers={"x-request-id": "r9"})] * 3)
    sleeps: list[float] = []
    with (
        client(transport, sleeps, retry=RetryPolicy(max_attempts=3, base_delay=1.0)) as http,
        pytest.raises(TransientError, match=r"gave up after 3 attempts on GET /x") as info,
    ):
        http.get("/x")
    assert info.value.status == 503 and info.value.request_id == "r9" and info.value.platform == "p"
    assert str(info.value).count("(platform=p") == 1, str(info.value)  # the context once, not per wrap
    assert len(seen) == 3 and len(sleeps) == 2 and all(0 <= s <= 2.0 for s in sleeps)


def test_rate_limit_exhausted_stays_rate_limited() -> None:
    transport, _ = scripted(*[httpx.Response(429, headers={"Retry-After": "2"}, json={})] * 2)
    with client(transport, [], retry=RetryPolicy(max_attempts=2)) as http, pytest.raises(RateLimited) as info:
        http.get("/x")
    assert info.value.retry_after == 2.0


def test_a_4xx_is_rejected_at_once() -> None:
    transport, seen = scripted(httpx.Response(400, json={"bad": 1}))
    with client(transport, []) as http, pytest.raises(RejectedByPlatform, match="HTTP 400"):
        http.get("/x")
    assert len(seen) == 1


def test_a_write_without_idempotency_key_is_not_retried_after_a_5xx() -> None:
    transport, seen = scripted(httpx.Response(502, json={}), httpx.Response(200, json={}))
    with (
        client(transport, []) as http,
        pytest.raises(TransientError, match="not retried: a POST without an idempotency key"),
    ):
        http.request("POST", "/budgets", json_body={"a": 1})
    assert len(seen) == 1


def test_a_write_with_a_key_is_retried_with_the_same_key() -> None:
    transport, seen = scripted(httpx.ReadTimeout("slow"), httpx.Response(200, json={"done": 1}))
    with client(transport, []) as http:
        assert http.request("POST", "/budgets", json_body={}, idempotency_key="k-1").body == {"done": 1}
    assert [r.headers["Idempotency-Key"] for r in seen] == ["k-1", "k-1"]


def test_truncated_json_and_dropped_connections_are_transient() -> None:
    transport, seen = scripted(
        httpx.Response(200, content=b'{"results": [1, 2'),
        httpx.ConnectError("refused"),
        httpx.Response(200, json={"results": [1, 2]}),
    )
    with client(transport, []) as http:
        assert http.get("/x").body == {"results": [1, 2]}
    assert len(seen) == 3


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-1") is None and parse_retry_after(None) is None


def test_a_paging_loop_is_an_error_not_a_hang() -> None:
    fetch: Callable[[str | None], tuple[list[int], str | None]] = lambda cursor: ([1], "same")  # noqa: E731
    with pytest.raises(TransientError, match="repeated page cursor 'same'"):
        collect_pages(fetch, platform="p", what="report")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-5", "negative"),
        ("NaN", "not finite"),
        ("12,50", "not a number"),
        (None, "null"),
        (True, "not a number"),
        ("1.5", "whole number"),
    ],
)
def test_micros_reader_refuses_bad_values(value: object, reason: str) -> None:
    with pytest.raises(RowRejected, match=reason) as info:
        rows.money_from_micros(value, field_name="metrics.costMicros")
    assert info.value.field_name == "metrics.costMicros"


def test_unit_conversions_round_to_the_cent() -> None:
    assert rows.money_from_micros("1234567890", field_name="f") == 1234.57
    assert rows.money_from_cents("123456", field_name="f") == 1234.56
    assert rows.money("19.90", field_name="f") == 19.9 and rows.money(7, field_name="f") == 7.0
    assert rows.micros_from_money(1234.567) == 1_234_570_000
    assert rows.cents_from_money(19.99) == 1999
    assert rows.day("2026-01-05", field_name="d") == date(2026, 1, 5)


def test_missing_nested_field_names_the_path() -> None:
    with pytest.raises(RowRejected, match=r"`metrics.costMicros` is missing") as info:
        rows.field({"metrics": {"cost_micros": "1"}}, "metrics.costMicros")
    assert info.value.field_name == "metrics.costMicros"


def test_a_retry_after_longer_than_we_wait_is_raised_at_once() -> None:
    transport, seen = scripted(httpx.Response(429, headers={"Retry-After": "3600"}, json={}))
    sleeps: list[float] = []
    with (
        client(transport, sleeps, retry=RetryPolicy(max_retry_after=60)) as http,
        pytest.raises(RateLimited) as info,
    ):
        http.get("/x")
    assert info.value.retry_after == 3600.0 and sleeps == [] and len(seen) == 1
