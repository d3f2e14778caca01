"""Budget allocation over the posterior: where should the next dollar go.

The optimizer maximises the posterior **expected** objective (the mean over draws, never a point
estimate) of a total budget per period, spread over the fitted channels within per-channel bounds:

- ``revenue``: expected steady-state media revenue, spending the whole budget;
- ``profit``: ``margin x revenue - spend``, spending at most the budget;
- ``target_roas``: the most revenue whose ratio revenue / spend is at least the target, spending at
  most the budget (it may spend less).

The expected objective is a sum of one-dimensional curves, ``g_c(x) = mean_d beta_dc sat(x; half_dc,
shape_dc)`` (``sat`` Hill's curve or the logistic one, as the fit chose), and a Hill curve with shape > 1 is S-shaped (convex near zero), so gradient methods can
stall at zero spend. We therefore solve the separable problem globally on a grid by dynamic
programming (a max-plus convolution per channel, which also yields the best revenue for *every*
total spend: the efficient frontier that ``profit`` and ``target_roas`` choose from), then refine it
by the same dynamic programme on ever finer local grids around the solution. A last exchange pass
moves spend, at equal total, from the channel earning least per dollar to the one earning most while
revenue rises: what the grids cannot express, such as a bound that falls between two grid points.
The method has no randomness: the same inputs give the same plan, bit for bit.

Public surface::

    optimize(curves, budget, *, current=None, bounds=None, locked=(), objective="revenue",
             margin=None, target_roas=None, cents=False) -> OptimizationResult
    evaluate(curves, allocation) -> np.ndarray          # revenue per draw
    OptimizationResult.to_dict()                        # the PLAN.json body, amounts in cents
    round_to_cents(x, lower, upper, budget)             # cents summing to the total, within bounds
    curves_to_block(curves, current=None) / curves_from_block(block)   # FIT.json "response_curves"
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

Objective = Literal["revenue", "profit", "target_roas"]
OBJECTIVES: tuple[str, ...] = ("revenue", "profit", "target_roas")

_COARSE_STEPS = 256  # grid steps of the global pass over the budget left above the lower bounds
_REFINE_HALF = 16  # each refinement looks +-_REFINE_HALF finer steps around the current point
_REFINE_ROUNDS = 3  # each round divides the step by _REFINE_HALF: 256 * 16**3 ~ 1e6 steps in all
_NEG = -np.inf
_LOGISTIC_K = float(np.arctanh(0.5))  # the logistic curve tanh(k x / half) is at half its ceiling at half


class CurvesLike(Protocol):
    """What the optimizer reads of :class:`models.curves.ResponseCurves`."""

    @property
    def channels(self) -> tuple[str, ...]: ...
    @property
    def beta(self) -> np.ndarray: ...
    @property
    def half(self) -> np.ndarray: ...
    @property
    def shape(self) -> np.ndarray: ...
    @property
    def period(self) -> str: ...
    @property
    def saturation(self) -> str: ...


# --------------------------------------------------------------------------------------------------
# curve arithmetic (numpy, vectorised over draws, channels and grid points)


def _params(curves: CurvesLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    beta = np.asarray(curves.beta, dtype=np.float64)
    half = np.asarray(curves.half, dtype=np.float64)
    shape = np.asarray(curves.shape, dtype=np.float64)
    n = len(curves.channels)
    for name, arr in (("beta", beta), ("half", half), ("shape", shape)):
        if arr.ndim != 2 or arr.shape[1] != n:
            raise ValueError(f"response curves: `{name}` must have shape [draws, {n}], got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"response curves: `{name}` holds non-finite values")
    if beta.shape != half.shape or beta.shape != shape.shape:
        raise ValueError(
            f"response curves: `beta` {beta.shape}, `half` {half.shape} and `shape` {shape.shape} differ"
        )
    if np.any(beta < 0) or np.any(half <= 0) or np.any(shape <= 0):
        raise ValueError("response curves: need beta >= 0, half > 0 and shape > 0 in every draw")
    return beta, half, shape


def _saturation(curves: CurvesLike) -> str:
    kind = getattr(curves, "saturation", "hill")
    if kind not in ("hill", "logistic"):
        raise ValueError(f"response curves: unknown `saturation` {kind!r} (hill or logistic)")
    return str(kind)


def _sat_dcg(kind: str, x_cg: np.ndarray, half: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """The saturation curve at x [C, G] for draws [D, C] -> [D, C, G]. Hill's ``x^s / (x^s + h^s)`` is
    computed in logs (stable for any shape); the logistic one ignores ``shape``."""
    if kind == "logistic":
        return np.tanh(_LOGISTIC_K * np.maximum(x_cg, 0.0)[None, :, :] / half[:, :, None])
    with np.errstate(divide="ignore"):
        logx = np.log(np.maximum(x_cg, 0.0))
    z = shape[:, :, None] * (np.log(half)[:, :, None] - logx[None, :, :])
    # exactly 0 at no spend (the clipped exponent alone leaves 1e-304 there)
    return np.where(x_cg[None, :, :] > 0, 1.0 / (1.0 + np.exp(np.minimum(z, 700.0))), 0.0)


def _mean_curve(
    kind: str, beta: np.ndarray, half: np.ndarray, shape: np.ndarray, x_cg: np.ndarray
) -> np.ndarray:
    """Posterior-mean revenue of each channel at each grid point: [C, G]."""
    sat = _sat_dcg(kind, x_cg, half, shape)
    return np.einsum("dc,dcg->cg", beta, sat) / beta.shape[0]


def _revenue_draws(
    kind: str, beta: np.ndarray, half: np.ndarray, shape: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """Revenue per draw and channel at allocation x [C]: [D, C]."""
    return beta * _sat_dcg(kind, x[:, None], half, shape)[:, :, 0]


def _mroas_draws(
    kind: str, beta: np.ndarray, half: np.ndarray, shape: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """d revenue / d spend per draw and channel at allocation x [C]: [D, C].

    Hill: d/dx beta hill(x) = beta * s * hill * (1 - hill) / x; at x = 0 it is 0 for s > 1, beta/h
    for s = 1 and unbounded for s < 1 (reported as +inf). Logistic: beta k / h (1 - tanh^2), finite
    everywhere (``k = atanh(1/2)``).
    """
    if kind == "logistic":
        t = _sat_dcg(kind, x[:, None], half, shape)[:, :, 0]
        return beta * _LOGISTIC_K / half * (1.0 - t * t)
    hill = _sat_dcg(kind, x[:, None], half, shape)[:, :, 0]
    out = np.empty_like(beta)
    pos = x > 0
    out[:, pos] = beta[:, pos] * shape[:, pos] * hill[:, pos] * (1.0 - hill[:, pos]) / x[pos]
    zero = ~pos
    if np.any(zero):
        s = shape[:, zero]
        b = beta[:, zero]
        h = half[:, zero]
        out[:, zero] = np.where(s > 1.0, 0.0, np.where(s == 1.0, b / h, np.inf))
    return out


def evaluate(curves: CurvesLike, allocation: Sequence[float] | np.ndarray) -> np.ndarray:
    """Steady-state media revenue per period of ``allocation`` [C], one value per posterior draw."""
    beta, half, shape = _params(curves)
    x = np.asarray(allocation, dtype=np.float64)
    if x.shape != (beta.shape[1],):
        raise ValueError(f"allocation must have one value per channel ({beta.shape[1]}), got shape {x.shape}")
    return _revenue_draws(_saturation(curves), beta, half, shape, x).sum(axis=1)


# --------------------------------------------------------------------------------------------------
# the separable dynamic programme


def _maxplus(values: np.ndarray, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best sum of one grid choice per channel for every total number of steps.

    ``values`` [C, K+1] holds channel c's value at k steps (``-inf`` where not allowed). Returns
    ``V`` [C*K+1] (best total value using exactly s steps) and ``choice`` [C, C*K+1] (channel c's k on
    the best path to s) for backtracking. ``limit`` caps the totals considered (steps beyond the budget).
    """
    n_ch, width = values.shape
    k_max = width - 1
    size = n_ch * k_max + 1 if limit is None else min(n_ch * k_max, limit) + 1
    total = np.full(size, _NEG)
    total[0] = 0.0
    choice = np.zeros((n_ch, size), dtype=np.int64)
    s_idx = np.arange(size)[:, None]
    k_idx = np.arange(width)[None, :]
    prev_idx = s_idx - k_idx  # [size, K+1]
    valid = prev_idx >= 0
    safe = np.where(valid, prev_idx, 0)
    for c in range(n_ch):
        cand = np.where(valid, total[safe], _NEG) + values[c][None, :]
        best = np.argmax(cand, axis=1)
        choice[c] = best
        total = cand[np.arange(size), best]
    return total, choice


def _backtrack(choice: np.ndarray, s: int) -> np.ndarray:
    ks = np.zeros(choice.shape[0], dtype=np.int64)
    for c in range(choice.shape[0] - 1, -1, -1):
        ks[c] = choice[c, s]
        s -= int(ks[c])
    return ks


@dataclass(frozen=True)
class _Problem:
    saturation: str
    beta: np.ndarray
    half: np.ndarray
    shape: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    budget: float
    objective: str
    margin: float
    target: float

    def score(self, revenue: np.ndarray, spend: np.ndarray) -> np.ndarray:
        """Expected objective of each candidate total, ``-inf`` where a constraint fails."""
        tol = 1e-9 * max(self.budget, 1.0)
        ok = np.isfinite(revenue) & (spend <= self.budget + tol)
        if self.objective == "profit":
            val = self.margin * revenue - spend
        elif self.objective == "target_roas":
            ratio_ok = revenue >= self.target * spend - 1e-9 * np.maximum(revenue, 1.0)
            ok &= ratio_ok
            val = revenue
        else:
            val = revenue
        return np.where(ok, val, _NEG)


def _solve(p: _Problem) -> tuple[np.ndarray, list[str]]:
    notes: list[str] = []
    n_ch = p.lower.size
    room = p.upper - p.lower
    cap = min(p.budget, float(p.upper.sum())) - float(p.lower.sum())
    if cap <= 0 or float(room.sum()) <= 0:
        return p.lower.copy(), notes
    step = cap / _COARSE_STEPS
    k = np.arange(_COARSE_STEPS + 1, dtype=np.float64)
    grid = p.lower[:, None] + step * k[None, :]  # [C, K+1]
    allowed = grid <= p.upper[:, None] + 1e-12 * max(cap, 1.0)
    grid = np.minimum(grid, p.upper[:, None])
    vals = np.where(allowed, _mean_curve(p.saturation, p.beta, p.half, p.shape, grid), _NEG)
    frontier, choice = _maxplus(vals, limit=_COARSE_STEPS)
    spend = float(p.lower.sum()) + step * np.arange(frontier.size)
    scored = p.score(frontier, spend)
    if not np.any(np.isfinite(scored)):
        if p.objective == "target_roas":
            notes.append(
                f"no allocation within the bounds reaches the target ROAS {p.target:g}; "
                "spending only the per-channel minimums"
            )
        return p.lower.copy(), notes
    s = int(np.argmax(scored))
    x = grid[np.arange(n_ch), _backtrack(choice, s)]

    offsets = np.arange(-_REFINE_HALF, _REFINE_HALF + 1, dtype=np.float64)
    fine = step
    for _ in range(_REFINE_ROUNDS):
        fine = fine / _REFINE_HALF
        local = x[:, None] + fine * offsets[None, :]  # [C, 2H+1]
        ok = (local >= p.lower[:, None] - 1e-12 * cap) & (local <= p.upper[:, None] + 1e-12 * cap)
        local = np.clip(local, p.lower[:, None], p.upper[:, None])
        vals = np.where(ok, _mean_curve(p.saturation, p.beta, p.half, p.shape, local), _NEG)
        frontier, choice = _maxplus(vals)
        # step index s is the total of offsets: spend = sum(x) + (s - C*H) * fine (valid points unclipped)
        spend = float(x.sum()) + fine * (np.arange(frontier.size) - n_ch * _REFINE_HALF)
        scored = p.score(frontier, spend)
        if not np.any(np.isfinite(scored)):
            break
        s = int(np.argmax(scored))
        x = local[np.arange(n_ch), _backtrack(choice, s)]
    if p.objective == "revenue":
        x = _spend_residual(p, x, min(p.budget, float(p.upper.sum())))
    x = _exchange(p, x)
    if p.objective == "target_roas" and float(x.sum()) <= float(p.lower.sum()) + 1e-9 * max(cap, 1.0):
        notes.append(
            f"no spend above the per-channel minimums reaches the target ROAS {p.target:g}: the plan "
            "spends only the minimums"
        )
    return x, notes


#: the exchange pass moves spend only between channels whose mean mROAS differ by more than this share:
#: at an interior optimum they agree to the refinement's resolution, and chasing that noise costs time
_EXCHANGE_MIN_GAP = 1e-3
#: halvings of a move before the pass gives up on a pair (2**-30 of the move it started from)
_EXCHANGE_HALVINGS = 30


def _exchange(p: _Problem, x: np.ndarray) -> np.ndarray:
    """Moves from the channel with the lowest mean mROAS to the one with the highest, at equal total
    spend, while the posterior-mean revenue rises: what the refinement's grids cannot express, a
    channel left a fraction of a step below its maximum (the next point lay past it) while another
    earned less per dollar. Each move goes as far as the two bounds allow, halved until it pays.
    The total is unchanged, so profit rises with revenue and a met target ROAS stays met."""
    tol = 1e-12 * max(p.budget, 1.0)
    # a channel no move into pays (say at zero spend, where a Hill curve with shape < 1 has an
    # infinite derivative yet earns little) stops receiving; the others still may
    stuck = np.zeros(x.size, dtype=bool)
    for _ in range(4 * x.size):
        with np.errstate(invalid="ignore"):
            marg = _mroas_draws(p.saturation, p.beta, p.half, p.shape, x).mean(axis=0)
        up, down = (x < p.upper - tol) & ~stuck, x > p.lower + tol
        if not (up.any() and down.any()):
            break
        i = int(np.argmax(np.where(up, marg, -np.inf)))
        j = int(np.argmin(np.where(down, marg, np.inf)))
        if i == j or not marg[i] > marg[j] * (1.0 + _EXCHANGE_MIN_GAP):
            break
        pair = [i, j]
        move = min(p.upper[i] - x[i], x[j] - p.lower[j])
        for _ in range(_EXCHANGE_HALVINGS):
            # the two channels' revenue before and after the move: [2 channels, 2 points]
            points = np.array([[x[i], x[i] + move], [x[j], x[j] - move]])
            rev = _mean_curve(p.saturation, p.beta[:, pair], p.half[:, pair], p.shape[:, pair], points)
            if (rev[0, 1] - rev[0, 0]) + (rev[1, 1] - rev[1, 0]) > 0:
                x = x.copy()
                x[i] += move
                x[j] -= move
                break
            move /= 2.0
        else:
            stuck[i] = True
    return x


def _spend_residual(p: _Problem, x: np.ndarray, total: float) -> np.ndarray:
    """Put the last rounding crumbs (smaller than the finest step) where the mean mROAS is highest."""
    residual = total - float(x.sum())
    if abs(residual) <= 0:
        return x
    marg = _mroas_draws(p.saturation, p.beta, p.half, p.shape, x).mean(axis=0)
    order = np.argsort(-marg) if residual > 0 else np.argsort(marg)
    out = x.copy()
    for c in order:
        move = min(residual, p.upper[c] - out[c]) if residual > 0 else max(residual, p.lower[c] - out[c])
        out[c] += move
        residual -= move
        if residual == 0:
            break
    return out


# --------------------------------------------------------------------------------------------------
# public API


@dataclass(frozen=True)
class ChannelPlan:
    """One channel's line of a plan: amounts per period, mROAS as posterior mean and 90% band."""

    channel: str
    current: float
    allocation: float
    lower: float
    upper: float
    locked: bool
    expected_revenue_current: float
    expected_revenue: float
    mroas_current: float
    mroas: float
    mroas_p05: float
    mroas_p95: float

    @property
    def change(self) -> float:
        return self.allocation - self.current

    def to_dict(self, after: float | None = None) -> dict[str, Any]:
        """The channel's line of PLAN.json; ``after``: its allocation rounded to cents as the plan's
        (:func:`round_to_cents`), by default this one rounded alone."""
        after = _money(self.allocation) if after is None else after
        return {
            "before": _money(self.current),
            "after": after,
            "change": _money(after - _money(self.current)),
            "change_relative": (self.change / self.current) if self.current > 0 else None,
            "lower": _money(self.lower),
            "upper": _money(self.upper),
            "locked": self.locked,
            "expected_revenue_before": self.expected_revenue_current,
            "expected_revenue_after": self.expected_revenue,
            "mroas_before": _finite(self.mroas_current),
            "mroas_after": {
                "mean": _finite(self.mroas),
                "p05": _finite(self.mroas_p05),
                "p95": _finite(self.mroas_p95),
            },
        }


@dataclass(frozen=True)
class OptimizationResult:
    """The plan and what the posterior says about it (all amounts per ``period``)."""

    objective: str
    budget: float
    period: str
    channels: tuple[ChannelPlan, ...]
    expected_gain: float  # mean over draws of objective(allocation) - objective(current)
    gain_p05: float
    gain_p95: float
    probability_of_improvement: float  # share of draws where the allocation beats the current
    expected_objective: float
    current_objective: float
    expected_revenue: float
    current_revenue: float
    draws: int
    margin: float | None = None
    target_roas: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def allocation(self) -> dict[str, float]:
        return {c.channel: c.allocation for c in self.channels}

    @property
    def current(self) -> dict[str, float]:
        return {c.channel: c.current for c in self.channels}

    @property
    def mroas_at_allocation(self) -> dict[str, float]:
        return {c.channel: c.mroas for c in self.channels}

    @property
    def spend(self) -> float:
        return float(sum(c.allocation for c in self.channels))

    @property
    def relative_gain(self) -> float:
        """Expected gain relative to the current objective (0 when the current objective is 0)."""
        base = abs(self.current_objective)
        return self.expected_gain / base if base > 0 else 0.0

    def rounded_allocation(self) -> dict[str, float]:
        """The allocation in cents, summing to its total rounded to cents, never above the budget,
        each channel within its bounds (:func:`round_to_cents`): what PLAN.json shows."""
        cents = round_to_cents(
            np.array([c.allocation for c in self.channels]),
            np.array([c.lower for c in self.channels]),
            np.array([c.upper for c in self.channels]),
            self.budget,
        )
        return {c.channel: float(v) for c, v in zip(self.channels, cents, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        """The body of PLAN.json. Amounts are in cents; the allocation's sum to its total
        (``spend_after``) exactly."""
        after = self.rounded_allocation()
        return {
            "objective": {"metric": self.objective, "margin": self.margin, "target_roas": self.target_roas},
            "budget": _money(self.budget),
            "period": self.period,
            "spend_before": _money(sum(c.current for c in self.channels)),
            "spend_after": _money(sum(after.values())),
            "allocation": after,
            "current": {c.channel: _money(c.current) for c in self.channels},
            "expected_gain": self.expected_gain,
            "gain_p05": self.gain_p05,
            "gain_p95": self.gain_p95,
            "relative_gain": self.relative_gain,
            "probability_of_improvement": self.probability_of_improvement,
            "expected_objective": {"before": self.current_objective, "after": self.expected_objective},
            "expected_revenue": {"before": self.current_revenue, "after": self.expected_revenue},
            "mroas_at_allocation": {c.channel: _finite(c.mroas) for c in self.channels},
            "channels": {c.channel: c.to_dict(after[c.channel]) for c in self.channels},
            "draws": self.draws,
            "notes": list(self.notes),
        }


def _money(x: float) -> float:
    return round(float(x), 2) + 0.0  # + 0.0: no "-0.0" in a plan


def round_to_cents(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, budget: float) -> np.ndarray:
    """Amounts ``x`` [C] rounded to cents so that they sum exactly to their total rounded to cents
    (at most the budget's cents), each within its bounds (a bound between two cents rounds inward):
    every amount is rounded down, then the cents left over go one by one to the amounts with the
    largest remainders (the largest-remainder method). Rounding each amount alone can overshoot
    the total, and the budget, by a cent per channel. A channel whose bounds hold no whole cent (a
    locked amount of fractions of a cent) keeps its nearest cent."""
    cents = np.asarray(x, dtype=np.float64) * 100.0
    lo = np.ceil(np.asarray(lower, dtype=np.float64) * 100.0 - 1e-6)
    hi = np.floor(np.asarray(upper, dtype=np.float64) * 100.0 + 1e-6)
    stuck = lo > hi
    lo = np.where(stuck, np.round(cents), lo)
    hi = np.where(stuck, np.round(cents), hi)
    target = min(round(float(cents.sum())), int(np.floor(budget * 100.0 + 1e-6)))
    target = int(min(max(target, lo.sum()), hi.sum()))
    out = np.clip(np.floor(cents), lo, hi)
    rest = cents - out
    left = target - int(out.sum())
    while left:
        up = left > 0
        moved = False
        for c in np.argsort(-rest if up else rest, kind="stable"):
            if left and (out[c] < hi[c] if up else out[c] > lo[c]):
                step = 1 if up else -1
                out[c] += step
                rest[c] -= step
                left -= step
                moved = True
        if not moved:  # pragma: no cover - the target lies within the bounds' sums
            break
    return out / 100.0 + 0.0  # + 0.0 turns the -0.0 of a bound at zero (ceil(-1e-6)) into 0.0


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _vector(
    name: str, channels: tuple[str, ...], value: Mapping[str, float] | Sequence[float] | np.ndarray
) -> np.ndarray:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(channels))
        if unknown:
            raise ValueError(
                f"`{name}` names unknown channel(s) {unknown}; the fitted ones are {list(channels)}"
            )
        missing = [c for c in channels if c not in value]
        if missing:
            raise ValueError(f"`{name}` lacks channel(s) {missing}; give one value per fitted channel")
        out = np.array([float(value[c]) for c in channels])
    else:
        out = np.asarray(value, dtype=np.float64)
        if out.shape != (len(channels),):
            raise ValueError(
                f"`{name}` must have one value per channel ({len(channels)}), got shape {out.shape}"
            )
    if not np.all(np.isfinite(out)) or np.any(out < 0):
        raise ValueError(
            f"`{name}` must be finite and >= 0, got {dict(zip(channels, out.tolist(), strict=True))}"
        )
    return out


def optimize(
    curves: CurvesLike,
    budget: float,
    *,
    current: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
    bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    locked: Iterable[str] = (),
    objective: Objective | str = "revenue",
    margin: float | None = None,
    target_roas: float | None = None,
    cents: bool = False,
) -> OptimizationResult:
    """Best allocation of ``budget`` per period over ``curves.channels`` under the posterior mean.

    With ``cents``, the allocation is rounded to cents (:func:`round_to_cents`) before the posterior
    judges it, so the gain, its band and the probability of improvement are those of the amounts a
    plan shows (PLAN.json): a plan that rounds back to the current spend gains exactly nothing.

    ``current`` is what each channel spends now per period (default: the budget split evenly); the
    gain, its band and the probability of improvement compare against it, draw by draw. ``bounds``
    maps a channel to ``(min, max)`` per period (``None`` = unbounded); a channel in ``locked`` keeps
    its current amount. Raises ``ValueError`` naming the argument when the inputs are inconsistent
    (unknown channel, minimums above the budget, a missing margin or target).
    """
    beta, half, shape = _params(curves)
    channels = tuple(curves.channels)
    if objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {list(OBJECTIVES)}, got {objective!r}")
    if not np.isfinite(budget) or budget < 0:
        raise ValueError(f"`budget` must be a finite amount >= 0, got {budget!r}")
    if objective == "profit" and (margin is None or not margin > 0):
        raise ValueError(
            f"objective `profit` needs `margin` > 0 (revenue share kept as profit), got {margin!r}"
        )
    if objective == "target_roas" and (target_roas is None or not target_roas > 0):
        raise ValueError(f"objective `target_roas` needs `target_roas` > 0, got {target_roas!r}")
    cur = (
        np.full(len(channels), budget / max(len(channels), 1))
        if current is None
        else _vector("current", channels, current)
    )
    lower = np.zeros(len(channels))
    upper = np.full(len(channels), float(budget))
    for ch, (lo, hi) in (bounds or {}).items():
        if ch not in channels:
            raise ValueError(f"`bounds` names unknown channel {ch!r}; the fitted ones are {list(channels)}")
        i = channels.index(ch)
        if lo is not None:
            lower[i] = float(lo)
        if hi is not None:
            upper[i] = float(hi)
        if lower[i] < 0 or upper[i] < lower[i]:
            raise ValueError(f"`bounds` for {ch!r}: need 0 <= min <= max, got min={lo!r} max={hi!r}")
        upper[i] = min(upper[i], max(float(budget), lower[i]))
    locked_set = set(locked)
    for ch in sorted(locked_set):
        if ch not in channels:
            raise ValueError(f"`locked` names unknown channel {ch!r}; the fitted ones are {list(channels)}")
        i = channels.index(ch)
        lower[i] = upper[i] = cur[i]
    if float(lower.sum()) > budget * (1 + 1e-12) + 1e-9:
        raise ValueError(
            f"the per-channel minimums (and locked amounts) add up to {lower.sum():.2f}, above the `budget` "
            f"{budget:.2f}: raise the budget or lower the minimums"
        )
    problem = _Problem(
        saturation=_saturation(curves),
        beta=beta,
        half=half,
        shape=shape,
        lower=lower,
        upper=upper,
        budget=float(budget),
        objective=str(objective),
        margin=float(margin or 1.0),
        target=float(target_roas or 0.0),
    )
    x, notes = _solve(problem)
    if cents:
        # a target ROAS holds at the optimum with no room to spare: rounding the total up by a cent
        # can take it under, rounding it down (spending where the return is below the average) cannot
        cap = float(budget)
        if objective == "target_roas":
            cap = min(cap, math.floor(float(x.sum()) * 100.0 + 1e-6) / 100.0)
        x = round_to_cents(x, lower, upper, cap)
        cur = np.round(cur, 2)  # judged against the current amounts as the plan shows them
    if objective == "revenue" and float(upper.sum()) < budget * (1 - 1e-9):
        notes.append(f"the per-channel maximums add up to {upper.sum():.2f}, below the budget {budget:.2f}")
    return _report(problem, channels, curves.period, cur, x, locked_set, notes)


def _objective_draws(p: _Problem, revenue: np.ndarray, spend: float) -> np.ndarray:
    return p.margin * revenue - spend if p.objective == "profit" else revenue


def _report(
    p: _Problem,
    channels: tuple[str, ...],
    period: str,
    cur: np.ndarray,
    x: np.ndarray,
    locked: set[str],
    notes: list[str],
) -> OptimizationResult:
    rev_new = _revenue_draws(p.saturation, p.beta, p.half, p.shape, x)  # [D, C]
    rev_cur = _revenue_draws(p.saturation, p.beta, p.half, p.shape, cur)
    obj_new = _objective_draws(p, rev_new.sum(axis=1), float(x.sum()))
    obj_cur = _objective_draws(p, rev_cur.sum(axis=1), float(cur.sum()))
    gain = obj_new - obj_cur
    m_new = _mroas_draws(p.saturation, p.beta, p.half, p.shape, x)
    m_cur = _mroas_draws(p.saturation, p.beta, p.half, p.shape, cur)
    with np.errstate(invalid="ignore"):
        m_new_mean = m_new.mean(axis=0)
        m_cur_mean = m_cur.mean(axis=0)
        m05, m95 = np.quantile(m_new, [0.05, 0.95], axis=0)
    plans = tuple(
        ChannelPlan(
            channel=ch,
            current=float(cur[i]),
            allocation=float(x[i]),
            lower=float(p.lower[i]),
            upper=float(p.upper[i]),
            locked=ch in locked,
            expected_revenue_current=float(rev_cur[:, i].mean()),
            expected_revenue=float(rev_new[:, i].mean()),
            mroas_current=float(m_cur_mean[i]),
            mroas=float(m_new_mean[i]),
            mroas_p05=float(m05[i]),
            mroas_p95=float(m95[i]),
        )
        for i, ch in enumerate(channels)
    )
    for i, ch in enumerate(channels):
        vertical = float(np.mean(np.isinf(m_new[:, i])))
        if vertical > 0:
            notes.append(
                f"{ch}: at no spend its curve rises vertically in "
                f"{f'{vertical:.0%}' if vertical >= 0.005 else 'under 1%'} of the draws (a Hill shape "
                "under 1), so the return on its first dollar has no bound: PLAN.json's mROAS figures that "
                "are infinite read null"
            )
    g05, g95 = np.quantile(gain, [0.05, 0.95])
    return OptimizationResult(
        objective=p.objective,
        budget=p.budget,
        period=period,
        channels=plans,
        expected_gain=float(gain.mean()),
        gain_p05=float(g05),
        gain_p95=float(g95),
        probability_of_improvement=float(np.mean(gain > 0)),
        expected_objective=float(obj_new.mean()),
        current_objective=float(obj_cur.mean()),
        expected_revenue=float(rev_new.sum(axis=1).mean()),
        current_revenue=float(rev_cur.sum(axis=1).mean()),
        draws=int(p.beta.shape[0]),
        margin=p.margin if p.objective == "profit" else None,
        target_roas=p.target if p.objective == "target_roas" else None,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------------
# FIT.json: the `response_curves` block


def curves_block(curves: CurvesLike, current: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The FIT.json ``response_curves`` block: the curve draws plus the current spend per period."""
    from models.curves import ResponseCurves

    rc = (
        curves
        if isinstance(curves, ResponseCurves)
        else ResponseCurves(
            tuple(curves.channels),
            curves.beta,
            curves.half,
            curves.shape,
            curves.period,
            saturation=_saturation(curves),
        )
    )
    block = rc.to_dict()
    if current is not None:
        block["current"] = {c: float(current[c]) for c in rc.channels}
    return block


def curves_from_fit(doc: Mapping[str, Any]) -> tuple[Any, dict[str, float] | None]:
    """``(ResponseCurves, current spend per period or None)`` from a parsed FIT.json.

    Raises ``ValueError`` saying what is missing when the document carries no usable curves.
    """
    from models.curves import ResponseCurves

    block = doc.get("response_curves")
    if not isinstance(block, Mapping):
        raise ValueError(
            "FIT.json has no `response_curves` block (the posterior curve draws the optimizer needs)"
        )
    try:
        curves = ResponseCurves.from_dict(dict(block))
    except KeyError as exc:
        raise ValueError(f"the `response_curves` block lacks {exc.args[0]!r}") from exc
    raw = block.get("current")
    if raw is None:
        meta = block.get("meta")
        raw = meta.get("current") if isinstance(meta, Mapping) else None
    if raw is None:
        return curves, None
    if not isinstance(raw, Mapping):
        raise BadCurrent("must map each channel to its spend per period")
    current: dict[str, float] = {}
    for k, v in raw.items():
        try:
            current[str(k)] = float(v)
        except (TypeError, ValueError):
            raise BadCurrent(f"gives {v!r} for {str(k)!r}, not an amount per period") from None
    return curves, current


class BadCurrent(ValueError):
    """FIT.json's ``response_curves.current`` (the current spend per period) is unusable."""

    def __str__(self) -> str:
        return f"`response_curves.current` {self.args[0]}"
