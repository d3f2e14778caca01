"""Faults a test or the demo arms on the sandbox, per dialect and route, to reproduce bad days.

A :class:`Fault` hits the next ``times`` matching requests (``times=None``: until cleared):

    rate_limit            refused before processing: 429 + Retry-After (Meta: its code 17/613 envelope)
    server_error          refused before processing with ``status`` (5xx)
    slow                  answered normally after ``delay`` seconds
    truncated             a 2xx whose JSON body is cut short
    malformed             report rows altered by ``malformation`` (see MALFORMATIONS)
    timeout_after_apply   a budget change is applied and recorded, then the answer hangs ``delay``
                          seconds (the client times out); with ``drop``, the connection is then cut
                          mid-answer (the client sees a broken response)

Routes are the names in each dialect module (``search``, ``mutate``, ``insights``, ``edit``,
``reports``, ``budgets``, ``revenue``, ...), or ``*``.
"""

from __future__ import annotations

import copy
import threading
import typing
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FaultKind = Literal["rate_limit", "server_error", "slow", "truncated", "malformed", "timeout_after_apply"]
Malformation = Literal[
    "negative_spend",
    "nan_spend",
    "non_numeric_spend",
    "missing_field",
    "currency_change",
    "duplicate_row",
    "schema_drift",
]
MALFORMATIONS: tuple[str, ...] = typing.get_args(Malformation)
DIALECTS = ("google", "meta", "retail", "store")


class Fault(BaseModel):
    """One armed fault (the body of ``POST /admin/faults``)."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    dialect: Literal["google", "meta", "retail", "store", "*"] = "*"
    route: str = "*"
    times: int | None = Field(default=1, ge=1)
    status: int = Field(default=503, ge=500, le=599)
    retry_after: float = Field(default=1.0, ge=0)
    rate_limit_code: Literal[4, 17, 32, 613] = 17
    delay: float = Field(default=1.0, ge=0, le=30)
    drop: bool = False  # timeout_after_apply: after the delay, cut the connection mid-answer
    malformation: Malformation | None = None
    day: date | None = None
    campaign_id: str | None = None

    @model_validator(mode="after")
    def _malformation_needs_kind(self) -> Fault:
        if (self.kind == "malformed") != (self.malformation is not None):
            raise ValueError("`malformation` is required with kind `malformed` and only with it")
        return self

    def matches(self, dialect: str, route: str) -> bool:
        return self.dialect in ("*", dialect) and self.route in ("*", route)


class InjectedDrop(ConnectionAbortedError):
    """Raised inside the server to cut a connection on purpose (not logged as a server error)."""


class FaultPlan:
    """The armed faults. Thread-safe: taking a fault consumes one of its ``times``."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = list(faults or [])
        self.fired: list[dict[str, Any]] = []

    def arm(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def armed(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, dialect: str, route: str, kinds: tuple[str, ...]) -> Fault | None:
        """The first armed fault of one of ``kinds`` for this request, consumed once; None if none."""
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.kind in kinds and fault.matches(dialect, route):
                    if fault.times is not None:
                        left = fault.times - 1
                        if left == 0:
                            del self._faults[i]
                        else:
                            self._faults[i] = fault.model_copy(update={"times": left})
                    self.fired.append({"kind": fault.kind, "dialect": dialect, "route": route})
                    return fault
        return None


@dataclass(frozen=True)
class RowShape:
    """Where a dialect keeps the fields a malformation alters (dotted paths into one row)."""

    money: str  # spend (or revenue, for the store)
    date: str
    currency: str
    campaign: str | None = None
    drift_to: str = "amount_v2"  # the name a schema drift gives the money field


def malform(rows: list[dict[str, Any]], fault: Fault, shape: RowShape) -> list[dict[str, Any]]:
    """A copy of ``rows`` with the fault's malformation applied to its target rows.

    Target rows: those of ``fault.day`` (and ``fault.campaign_id``) when given, else the first row.
    """
    out = copy.deepcopy(rows)
    targets = [
        i
        for i, row in enumerate(out)
        if (fault.day is None or _get(row, shape.date) == fault.day.isoformat())
        and (
            fault.campaign_id is None
            or shape.campaign is None
            or str(_get(row, shape.campaign)) == fault.campaign_id
        )
    ]
    if fault.day is None and fault.campaign_id is None:
        targets = targets[:1]
    for i in reversed(targets):
        row = out[i]
        value = _get(row, shape.money)
        kind = fault.malformation
        if kind == "negative_spend":
            _set(row, shape.money, _negate(value))
        elif kind == "nan_spend":
            _set(row, shape.money, "NaN")
        elif kind == "non_numeric_spend":
            _set(row, shape.money, "12,50 USD")
        elif kind == "missing_field":
            _pop(row, shape.money)
        elif kind == "currency_change":
            _set(row, shape.currency, "EUR" if _get(row, shape.currency) != "EUR" else "USD")
        elif kind == "duplicate_row":
            out.insert(i + 1, copy.deepcopy(row))
        elif kind == "schema_drift":
            _pop(row, shape.money)
            _set(
                row,
                shape.money.rsplit(".", 1)[0] + "." + shape.drift_to
                if "." in shape.money
                else shape.drift_to,
                value,
            )
    return out


def _negate(value: Any) -> Any:
    if isinstance(value, str):
        return value[1:] if value.startswith("-") else "-" + value
    if isinstance(value, (int, float)):
        return -value if value else -1
    return "-1"


def _walk(row: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    *parents, leaf = path.split(".")
    node = row
    for part in parents:
        node = node.setdefault(part, {})
    return node, leaf


def _get(row: dict[str, Any], path: str) -> Any:
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _set(row: dict[str, Any], path: str, value: Any) -> None:
    node, leaf = _walk(row, path)
    node[leaf] = value


def _pop(row: dict[str, Any], path: str) -> None:
    node, leaf = _walk(row, path)
    node.pop(leaf, None)
