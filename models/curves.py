"""Posterior response curves: the seam between the fitted model and the optimizer / planner.

A budget ``b`` (currency per period) held constant brings the normalised geometric adstock to its
steady state ``b`` itself (its weights sum to one), so the media revenue per period at steady state is
``beta * sat(b)``, one value per posterior draw, where ``sat`` is the fit's saturation curve: Hill's
``b^shape / (b^shape + half^shape)`` or the logistic ``tanh(atanh(1/2) b / half)`` (see
:mod:`models.transforms`).

Everything here is NumPy: the optimizer calls it in tight loops and must not pay JAX dispatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERIODS = ("day", "week")
SATURATIONS = ("hill", "logistic")
LOGISTIC_K = float(np.arctanh(0.5))  # as models.transforms.LOGISTIC_K (that module imports JAX)


def hill_np(x: np.ndarray, half: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """``x^shape / (x^shape + half^shape)`` computed stably (as ``1 / (1 + (half/x)^shape)``); 0 at x = 0."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ratio = np.where(x > 0, half / np.where(x > 0, x, 1.0), np.inf)
        out = 1.0 / (1.0 + ratio**shape)
    return np.where(x > 0, out, 0.0)


def hill_grad_np(x: np.ndarray, half: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """d hill / dx = shape x^(shape-1) half^shape / (x^shape + half^shape)^2 (at 0: 0 if shape > 1)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        safe = np.where(x > 0, x, 1.0)
        h = 1.0 / (1.0 + (half / safe) ** shape)
        # d/dx of 1/(1+(half/x)^s) = s/x * h * (1-h)
        grad = shape / safe * h * (1.0 - h)
        at_zero = np.where(shape < 1, np.inf, np.where(shape == 1, 1.0 / half, 0.0))
    return np.where(x > 0, grad, at_zero)


def logistic_np(x: np.ndarray, half: np.ndarray) -> np.ndarray:
    """``tanh(atanh(1/2) x / half)``: 0 at x = 0, half of its ceiling at ``half``, concave."""
    return np.tanh(LOGISTIC_K * np.maximum(np.asarray(x, dtype=float), 0.0) / half)


def logistic_grad_np(x: np.ndarray, half: np.ndarray) -> np.ndarray:
    """d logistic / dx = k / half x (1 - tanh(k x / half)^2), ``k = atanh(1/2)``; k / half at 0."""
    t = logistic_np(x, half)
    return LOGISTIC_K / half * (1.0 - t * t)


_Curve = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def geometric_adstock_np(x: np.ndarray, decay: np.ndarray, init: Any = None) -> np.ndarray:
    """:func:`models.transforms.geometric_adstock` in NumPy: ``a_t = (1 - d) x_t + d a_(t-1)`` from
    ``init`` (default: the first period's spend held before the table), for ``x`` [T, C] (or [T])
    and ``decay`` [C]."""
    out = np.empty_like(x, dtype=float)
    prev = np.broadcast_to(np.asarray(x[0] if init is None else init, dtype=float), np.shape(x[0]))
    for t in range(x.shape[0]):
        prev = (1 - decay) * x[t] + decay * prev
        out[t] = prev
    return out


def delayed_adstock_np(
    x: np.ndarray,
    decay: np.ndarray,
    delay: np.ndarray,
    max_lag: int,
    before: np.ndarray | float | None = None,
) -> np.ndarray:
    """:func:`models.transforms.delayed_adstock` in NumPy: weights ``decay^((l - delay)^2)`` over
    lags ``0..max_lag-1``, normalised, from ``before`` spent in each period before the table
    (default: the first period's spend)."""
    x = np.asarray(x, dtype=float)
    lags = np.arange(max_lag, dtype=float).reshape((max_lag,) + (1,) * (x.ndim - 1))
    w = np.power(decay, (lags - delay) ** 2)
    w = w / w.sum(axis=0, keepdims=True)
    first = x[:1] if before is None else np.broadcast_to(np.asarray(before, dtype=float), x[:1].shape)
    padded = np.concatenate([np.repeat(first, max_lag - 1, axis=0), x], axis=0)
    t = x.shape[0]
    out = np.zeros_like(x)
    for lag in range(max_lag):
        out += w[lag] * padded[max_lag - 1 - lag : max_lag - 1 - lag + t]
    return out


def _curve(kind: str) -> tuple[_Curve, _Curve]:
    """(curve, its derivative) of the saturation ``kind``, each ``f(x, half, shape)``."""
    if kind == "hill":
        return hill_np, hill_grad_np
    if kind == "logistic":
        return (lambda x, half, _: logistic_np(x, half)), (lambda x, half, _: logistic_grad_np(x, half))
    raise ValueError(f"`saturation` must be one of {SATURATIONS}, got {kind!r}")


def saturation_np(kind: str, x: np.ndarray, half: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """The saturation curve ``kind`` at ``x`` (``shape`` is read by Hill only)."""
    return _curve(kind)[0](x, half, shape)


def saturation_grad_np(kind: str, x: np.ndarray, half: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """d saturation / dx at ``x``."""
    return _curve(kind)[1](x, half, shape)


@dataclass(frozen=True)
class ResponseCurves:
    """Per-draw steady-state response of each channel to a budget held constant per period.

    ``beta``: [draws, C] revenue per period at full saturation (currency units);
    ``half``: [draws, C] half-saturation spend per period (currency units); ``shape``: [draws, C],
    Hill's exponent (all ones for ``saturation="logistic"``, a curve without one).
    """

    channels: tuple[str, ...]
    beta: np.ndarray
    half: np.ndarray
    shape: np.ndarray
    period: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    saturation: str = "hill"

    def __post_init__(self) -> None:
        c = len(self.channels)
        if c == 0:
            raise ValueError("`channels` must name at least one channel")
        if len(set(self.channels)) != c:
            raise ValueError(f"`channels` must be unique, got {self.channels}")
        if self.period not in PERIODS:
            raise ValueError(f"`period` must be one of {PERIODS}, got {self.period!r}")
        for name in ("beta", "half", "shape"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.ndim != 2 or arr.shape[1] != c:
                raise ValueError(f"`{name}` must have shape [draws, {c}], got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"`{name}` holds non-finite values")
            object.__setattr__(self, name, arr)
        if not (self.beta.shape == self.half.shape == self.shape.shape):
            raise ValueError(
                f"`beta`, `half` and `shape` must share one shape, got {self.beta.shape}, "
                f"{self.half.shape}, {self.shape.shape}"
            )
        if np.any(self.beta < 0) or np.any(self.half <= 0) or np.any(self.shape <= 0):
            raise ValueError("`beta` must be >= 0 and `half`, `shape` > 0 in every draw")
        if self.saturation not in SATURATIONS:
            raise ValueError(f"`saturation` must be one of {SATURATIONS}, got {self.saturation!r}")
        if self.saturation == "logistic" and np.any(self.shape != 1.0):
            raise ValueError("logistic curves have no shape: `shape` must be all ones")

    @property
    def draws(self) -> int:
        return int(self.beta.shape[0])

    def _check_budgets(self, budgets: np.ndarray) -> np.ndarray:
        b = np.asarray(budgets, dtype=float)
        if b.ndim == 0 or b.shape[-1] != len(self.channels):
            raise ValueError(
                f"`budgets` must end in one value per channel ({len(self.channels)}: {self.channels}), "
                f"got shape {b.shape}"
            )
        if np.any(b < 0) or not np.all(np.isfinite(b)):
            raise ValueError("`budgets` must be finite and >= 0")
        return b

    def _params(self, extra_dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = (slice(None),) + (None,) * extra_dims + (slice(None),)
        return self.beta[idx], self.half[idx], self.shape[idx]

    def revenue(self, budgets: np.ndarray) -> np.ndarray:
        """Media revenue per period, per channel, at steady state: budgets [..., C] -> [draws, ..., C]."""
        b = self._check_budgets(budgets)
        beta, half, shape = self._params(b.ndim - 1)
        return beta * saturation_np(self.saturation, b[None, ...], half, shape)

    def total_revenue(self, budgets: np.ndarray) -> np.ndarray:
        """Media revenue per period summed over channels: budgets [..., C] -> [draws, ...]."""
        return self.revenue(budgets).sum(axis=-1)

    def mroas(self, budgets: np.ndarray) -> np.ndarray:
        """Marginal return per extra unit of spend at steady state: budgets [..., C] -> [draws, ..., C]."""
        b = self._check_budgets(budgets)
        beta, half, shape = self._params(b.ndim - 1)
        return beta * saturation_grad_np(self.saturation, b[None, ...], half, shape)

    def roas(self, budgets: np.ndarray) -> np.ndarray:
        """Average return (revenue / spend) at steady state; 0 where the budget is 0."""
        b = self._check_budgets(budgets)
        rev = self.revenue(b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b[None, ...] > 0, rev / np.where(b[None, ...] > 0, b[None, ...], 1.0), 0.0)

    def mean(self) -> ResponseCurves:
        """A one-draw curve set of posterior means of the parameters (for plots, never for decisions)."""
        return ResponseCurves(
            self.channels,
            self.beta.mean(0, keepdims=True),
            self.half.mean(0, keepdims=True),
            self.shape.mean(0, keepdims=True),
            self.period,
            dict(self.meta),
            self.saturation,
        )

    def subset(self, n: int, seed: int) -> ResponseCurves:
        """``n`` draws without replacement (all when ``n`` >= draws), reproducible from ``seed``."""
        if n <= 0:
            raise ValueError(f"`n` must be positive, got {n}")
        if n >= self.draws:
            return self
        idx = np.sort(np.random.default_rng(seed).choice(self.draws, size=n, replace=False))
        return ResponseCurves(
            self.channels,
            self.beta[idx],
            self.half[idx],
            self.shape[idx],
            self.period,
            dict(self.meta),
            self.saturation,
        )

    def select(self, channels: tuple[str, ...] | list[str]) -> ResponseCurves:
        """The curves of some channels, in the order given."""
        missing = [c for c in channels if c not in self.channels]
        if missing:
            raise ValueError(f"unknown channel(s) {missing}; fitted channels are {list(self.channels)}")
        idx = [self.channels.index(c) for c in channels]
        return ResponseCurves(
            tuple(channels),
            self.beta[:, idx],
            self.half[:, idx],
            self.shape[:, idx],
            self.period,
            dict(self.meta),
            self.saturation,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "period": self.period,
            "beta": self.beta.tolist(),
            "half": self.half.tolist(),
            "shape": self.shape.tolist(),
            "saturation": self.saturation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResponseCurves:
        return cls(
            tuple(d["channels"]),
            np.asarray(d["beta"], dtype=float),
            np.asarray(d["half"], dtype=float),
            np.asarray(d["shape"], dtype=float),
            d["period"],
            saturation=d.get("saturation", "hill"),
        )
