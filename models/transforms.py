"""Media transforms: normalised geometric adstock, delayed (Weibull-like) adstock, and the two saturation
curves (Hill, logistic).

All functions are pure ``jnp`` code with their shape and sign checks up front (checks run at trace time
on shapes, and on values only when the inputs are concrete NumPy arrays).

Geometric adstock is the normalised recursion ``a_t = (1 - decay) x_t + decay a_{t-1}`` with
``a_{-1} = x_0`` (its weights sum to one, so a constant spend ``b`` gives ``a = b``), solved in
closed form by blocks (see :func:`geometric_adstock`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any


def _check_time_major(x: Array, name: str) -> None:
    if jnp.ndim(x) < 1:
        raise ValueError(f"`{name}` must have a time axis first ([T] or [T, C]), got a scalar")
    if isinstance(x, np.ndarray) and x.size and (np.any(~np.isfinite(x)) or np.any(x < 0)):
        raise ValueError(f"`{name}` must be finite and >= 0 (spend cannot be negative)")


def _check_param(p: Array, x: Array, name: str) -> None:
    expected = jnp.shape(x)[1:]
    shape = jnp.shape(p)
    if shape not in ((), expected):
        raise ValueError(
            f"`{name}` must be a scalar or have the channel shape {expected} of `x`, got {shape}"
        )


def geometric_adstock(x: Array, decay: Array, init: Array | None = None) -> Array:
    """Normalised geometric adstock of ``x`` [T] or [T, C] with ``decay`` in [0, 1) (scalar or [C]).

    ``init`` is the adstock state before the first period (default: the first period's spend, the
    steady state had that spend been held before the table began).

    The recursion is solved in closed form in two levels of blocks of about sqrt(T) periods: inside a
    block, adstock from a zero state is a small lower-triangular (Toeplitz) product; the states at
    the blocks' ends follow the same recursion with decay^B, solved by one more such product; each
    period then adds its block's incoming state times decay^(i+1). About 2 T^1.5 multiply-adds per
    channel and no sequential loop: compiled NUTS programs (which hold several copies of the
    gradient) compile in a fraction of a scan's time, and a gradient runs in a few microseconds.
    """
    _check_time_major(x, "x")
    _check_param(decay, x, "decay")
    if isinstance(decay, np.ndarray | float | int) and np.any(
        (np.asarray(decay) < 0) | (np.asarray(decay) >= 1)
    ):
        raise ValueError(f"`decay` must lie in [0, 1), got {decay}")
    x = jnp.asarray(x)
    vector = x.ndim == 1
    x2 = x[:, None] if vector else x  # [T, C]
    c = x2.shape[1]
    decay = jnp.broadcast_to(jnp.asarray(decay, dtype=x.dtype), (c,))
    a0 = x2[0] if init is None else jnp.broadcast_to(jnp.asarray(init, dtype=x.dtype), (c,))
    out = _blocked_geometric(x2, decay, a0)
    return out[:, 0] if vector else out


def _blocked_geometric(x: Array, decay: Array, a0: Array) -> Array:
    """``a_t = (1 - d) x_t + d a_{t-1}``, ``a_{-1} = a0``, for x [T, C], d [C], a0 [C]."""
    t_len, c = x.shape
    b = max(1, int(np.ceil(np.sqrt(t_len))))
    nb = -(-t_len // b)
    xb = jnp.pad(x, ((0, nb * b - t_len), (0, 0))).reshape(nb, b, c)
    # d^k through exp(k log d): finite gradients at every k, including k = 0
    log_d = jnp.log(jnp.maximum(decay, 1e-30))

    def powers(k: np.ndarray) -> Array:  # k integer array -> d^k with a trailing channel axis
        return jnp.exp(k[..., None].astype(x.dtype) * log_d)

    lag = np.arange(b)[:, None] - np.arange(b)[None, :]  # [B, B], i - j
    inner = jnp.where((lag >= 0)[..., None], powers(np.maximum(lag, 0)), 0.0) * (1.0 - decay)
    local = jnp.einsum("ijc,njc->nic", inner, xb)  # [NB, B, C], from a zero state
    blag = np.arange(nb)[:, None] - np.arange(nb)[None, :]
    outer = jnp.where((blag >= 0)[..., None], powers(b * np.maximum(blag, 0)), 0.0)  # [NB, NB, C]
    ends = jnp.einsum("kmc,mc->kc", outer, local[:, -1]) + powers(b * (np.arange(nb) + 1)) * a0
    incoming = jnp.concatenate([a0[None], ends[:-1]], axis=0)  # [NB, C], state before each block
    full = local + powers(np.arange(1, b + 1))[None] * incoming[:, None]
    return full.reshape(nb * b, c)[:t_len]


def delayed_adstock(x: Array, decay: Array, delay: Array, max_lag: int, before: Array | None = None) -> Array:
    """Delayed adstock: weights ``w_l ∝ decay^((l - delay)^2)`` for lags ``l = 0..max_lag-1``, normalised.

    The peak effect arrives ``delay`` periods after the spend (``delay = 0`` is a smooth geometric-like
    decay). Periods before the table are taken to have spent ``before`` each (shaped like one row of
    ``x``; default: the first period's amount). A lift test that changes the first period's spend
    passes the table's own first period here, so the change does not reach back before the table.
    """
    _check_time_major(x, "x")
    if max_lag < 1:
        raise ValueError(f"`max_lag` must be >= 1, got {max_lag}")
    _check_param(decay, x, "decay")
    _check_param(delay, x, "delay")
    x = jnp.asarray(x)
    lags = jnp.arange(max_lag, dtype=x.dtype).reshape((max_lag,) + (1,) * (x.ndim - 1))
    w = jnp.power(jnp.asarray(decay, x.dtype), (lags - jnp.asarray(delay, x.dtype)) ** 2)
    w = w / jnp.sum(w, axis=0, keepdims=True)
    first = x[:1] if before is None else jnp.broadcast_to(jnp.asarray(before, x.dtype), x[:1].shape)
    padded = jnp.concatenate([jnp.repeat(first, max_lag - 1, axis=0), x], axis=0)
    t = x.shape[0]
    out = jnp.zeros_like(x)
    for lag in range(max_lag):
        out = out + w[lag] * padded[max_lag - 1 - lag : max_lag - 1 - lag + t]
    return out


def hill(x: Array, half: Array, shape: Array) -> Array:
    """Hill saturation ``x^shape / (x^shape + half^shape)``, 0 at x = 0, increasing, bounded by 1."""
    if isinstance(half, np.ndarray | float | int) and np.any(np.asarray(half) <= 0):
        raise ValueError(f"`half` must be > 0, got {half}")
    if isinstance(shape, np.ndarray | float | int) and np.any(np.asarray(shape) <= 0):
        raise ValueError(f"`shape` must be > 0, got {shape}")
    x = jnp.asarray(x)
    safe = jnp.where(x > 0, x, 1.0)
    # 1 / (1 + (half/x)^shape), written through exp/log for a stable gradient in every parameter
    val = jax.nn.sigmoid(shape * (jnp.log(safe) - jnp.log(half)))
    return jnp.where(x > 0, val, 0.0)


#: ``atanh(1/2)``: a logistic curve ``tanh(LOGISTIC_K x / half)`` reaches half of its ceiling at ``half``
LOGISTIC_K = float(np.arctanh(0.5))
SATURATIONS = ("hill", "logistic")


def logistic(x: Array, half: Array) -> Array:
    """Logistic saturation ``(1 - e^(-lam x)) / (1 + e^(-lam x)) = tanh(lam x / 2)`` with
    ``lam = ln(3) / half``: 0 at x = 0, concave, half of its ceiling 1 at ``x = half``.

    This is the curve of PyMC-Marketing's ``LogisticSaturation`` (and LightweightMMM's), written with
    the half-saturation point as its parameter so it shares Hill's ``half`` and its priors; unlike
    Hill it has no shape: it is always steepest at zero spend.
    """
    if isinstance(half, np.ndarray | float | int) and np.any(np.asarray(half) <= 0):
        raise ValueError(f"`half` must be > 0, got {half}")
    return jnp.tanh(LOGISTIC_K * jnp.asarray(x) / half)  # x >= 0: spend (and its adstock)


def saturate(kind: str, x: Array, half: Array, shape: Array | None) -> Array:
    """The saturation curve ``kind`` (one of :data:`SATURATIONS`); ``shape`` is Hill's only."""
    if kind == "hill":
        if shape is None:
            raise ValueError("Hill saturation needs `shape`")
        return hill(x, half, shape)
    if kind == "logistic":
        return logistic(x, half)
    raise ValueError(f"`saturation` must be one of {SATURATIONS}, got {kind!r}")
