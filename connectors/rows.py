"""Reading one raw row: nested fields, numbers in native units, dates. Every failure is a RowRejected.

Platforms send int64 as strings (Google's micros), money as decimal strings (Meta's insights) or
numbers (retail), and counts as either. These helpers accept each form a platform really uses and
refuse the rest with a reason naming the field, so a bad row is quarantined and never guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from typing import Any

from connectors.base import RowRejected

_MISSING = object()


def field(payload: Mapping[str, Any], path: str) -> Any:
    """``payload["a"]["b"]`` for ``path="a.b"``; a missing key is a RowRejected (schema drift)."""
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, dict) and not isinstance(node, Mapping):  # dict first: the cheap check
            raise RowRejected(
                f"`{path}`: `{part}` is inside a {type(node).__name__}, not an object", field_name=path
            )
        node = node.get(part, _MISSING)
        if node is _MISSING:
            known = ", ".join(sorted(str(k) for k in payload)) or "none"
            raise RowRejected(
                f"`{path}` is missing (top-level fields present: {known}); has the report schema changed?",
                field_name=path,
            )
    return node


def number(value: Any, *, field_name: str, integer: bool = False) -> float:
    """A finite number from a JSON number or a numeric string."""
    if value is None:
        raise RowRejected(f"`{field_name}` is null", field_name=field_name)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RowRejected(f"`{field_name}` is not a number: {value!r}", field_name=field_name)
    try:
        result = float(value)
    except ValueError:
        raise RowRejected(f"`{field_name}` is not a number: {value!r}", field_name=field_name) from None
    if not math.isfinite(result):
        raise RowRejected(f"`{field_name}` is not finite: {value!r}", field_name=field_name)
    if integer and result != math.floor(result):
        raise RowRejected(f"`{field_name}` must be a whole number, got {value!r}", field_name=field_name)
    return result


def non_negative(value: float, *, field_name: str) -> float:
    if value < 0:
        raise RowRejected(f"`{field_name}` is negative: {value}", field_name=field_name)
    return value


def money(value: Any, *, field_name: str) -> float:
    """Currency units (a decimal string or number), non-negative, rounded to the cent."""
    return round(non_negative(number(value, field_name=field_name), field_name=field_name), 2)


def money_from_micros(value: Any, *, field_name: str) -> float:
    micros = non_negative(number(value, field_name=field_name, integer=True), field_name=field_name)
    return round(micros / 1_000_000, 2)


def money_from_cents(value: Any, *, field_name: str) -> float:
    cents = non_negative(number(value, field_name=field_name, integer=True), field_name=field_name)
    return round(cents / 100, 2)


def count(value: Any, *, field_name: str) -> int:
    return int(non_negative(number(value, field_name=field_name, integer=True), field_name=field_name))


def day(value: Any, *, field_name: str) -> date:
    if not isinstance(value, str):
        raise RowRejected(f"`{field_name}` is not an ISO date string: {value!r}", field_name=field_name)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RowRejected(
            f"`{field_name}` is not an ISO date (YYYY-MM-DD): {value!r}", field_name=field_name
        ) from None


def currency(value: Any, *, field_name: str) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha() or not value.isupper():
        raise RowRejected(f"`{field_name}` is not an ISO 4217 code: {value!r}", field_name=field_name)
    return value


def text(value: Any, *, field_name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise RowRejected(f"`{field_name}` must be a non-empty id, got {value!r}", field_name=field_name)
    return str(value)


def micros_from_money(amount: float) -> int:
    """Currency units to micros, on a whole cent (platforms refuse sub-cent budgets)."""
    return round(amount * 100) * 10_000


def cents_from_money(amount: float) -> int:
    return round(amount * 100)
