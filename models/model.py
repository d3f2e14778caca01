"""The NumPyro model: a baseline plus additive, saturating, carried-over media.

    revenue_t = exp(intercept) * form(trend(t) + seasonality(t) + controls_t . gamma)
                + sum_c beta_c * sat(adstock(spend_c)_t; half_c, shape_c)         + noise

* baseline: a level, a linear trend with a small curvature term, yearly Fourier seasonality (and
  weekly for daily tables), control variables; ``form`` is ``exp`` (multiplicative, the default:
  relative effects that compound, as the sandbox market's are) or ``1 + x`` (additive, as Robyn,
  Meridian and PyMC-Marketing combine them), see :data:`BASELINES`. The level is sampled as an
  offset from the level that makes the mean prediction equal the mean revenue, which takes the
  level's strong correlation with the ROIs out of the sampler's way;
* media: positive and increasing by construction (beta >= 0, saturation increasing, adstock a convex
  combination of past spend). ``sat`` is Hill's curve (the default; S-shaped when its shape
  exceeds 1) or the logistic curve (concave, no shape), see :data:`SATURATIONS`. ``beta_c`` is not
  sampled directly: each channel samples its ROI over the table (contribution / spend) and
  ``beta_c = roi_c * spend_c / sum_t sat_c(t)``, so the ROI prior is exactly a prior on the
  reported ROI;
* lift tests: ``Normal(observed | sum over the window of media(table) - media(changed spend), se)``;
* the trend, seasonality and control coefficients are sized in revenue, not relative to the
  baseline: the model multiplies them by ``rest_scale`` = (the baseline level the priors expect) /
  (the level the sampled ROIs leave), so their priors hold the size of the swings in revenue fixed
  whatever share the media take. Relative coefficients would need to be larger, and could vary more,
  the smaller the baseline: the posterior's volume would grow as level^-K for K such coefficients
  and pull every fit toward large ROIs, the more so the more terms the baseline has (14 on a daily
  table), which the data alone cannot resist when history does not show spend near zero.

All quantities are in scaled units (revenue / its mean, spend / its channel's mean non-zero spend).
The model is a pure function of an ``inputs`` dict of arrays, so fits of equal shapes reuse compiled code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import init_to_mean

from models.data import MMMData
from models.lift import LiftArrays
from models.priors import ResolvedPriors
from models.transforms import SATURATIONS, delayed_adstock, geometric_adstock, saturate

Array = Any
YEAR_DAYS = 365.25
ADSTOCKS = ("geometric", "delayed")
#: scale of the delayed adstock's HalfNormal prior on the lag (periods) to a dollar's peak effect
DELAY_SCALE = 1.0
#: How trend, seasonality and controls combine into the baseline ``level x form(rest)``:
#: ``exp(rest)`` (relative effects that compound, as the sandbox market's baseline) or ``1 + rest``
#: (effects that add up, as in Robyn, Meridian and PyMC-Marketing's models)
BASELINES = ("multiplicative", "additive")


@dataclass(frozen=True)
class ModelSpec:
    """Structure of the model, fixed at fit time and needed again to predict."""

    frequency: str
    t0: int  # first training date, days since epoch
    span_days: int  # last - first training date (>= 1)
    n_yearly: int
    n_weekly: int
    adstock: str = "geometric"
    max_lag: int = 8
    baseline: str = "multiplicative"
    saturation: str = "hill"

    @classmethod
    def for_data(
        cls,
        data: MMMData,
        adstock: str = "geometric",
        baseline: str = "multiplicative",
        saturation: str = "hill",
    ) -> ModelSpec:
        if adstock not in ADSTOCKS:
            raise ValueError(f"`adstock` must be one of {ADSTOCKS}, got {adstock!r}")
        if baseline not in BASELINES:
            raise ValueError(f"`baseline` must be one of {BASELINES}, got {baseline!r}")
        if saturation not in SATURATIONS:
            raise ValueError(f"`saturation` must be one of {SATURATIONS}, got {saturation!r}")
        days = data.dates.astype("datetime64[D]").astype(np.int64)
        span = int(max(days[-1] - days[0], 1))
        # yearly seasonality needs most of a year to be told apart from trend
        n_yearly = 0 if span < 300 else (2 if span < 600 else 3)
        n_weekly = 3 if data.frequency == "day" else 0
        max_lag = 8 if data.frequency == "week" else 28
        return cls(
            data.frequency, int(days[0]), span, n_yearly, n_weekly, adstock, max_lag, baseline, saturation
        )

    def structure(self) -> ModelSpec:
        """The part of the spec that traced code reads (frequency, harmonics, adstock, lags,
        baseline, saturation). The training window's dates (``t0``, ``span_days``) only shape the
        inputs, so they are left out of the keys of compiled programs: a weekly retrain on a rolling
        window of the same length reuses them."""
        return replace(self, t0=0, span_days=1)

    def channel_sites(self) -> tuple[str, ...]:
        """The media parameters sampled per channel, in the model's order."""
        return (
            ("roi", "decay", "half")
            + (("shape",) if self.saturation == "hill" else ())
            + (("delay",) if self.adstock == "delayed" else ())
        )

    def time_features(self, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(trend position in [-1, 1] over the training span [T], Fourier matrix [T, F])."""
        days = dates.astype("datetime64[D]").astype(np.int64).astype(float)
        tpos = 2.0 * (days - self.t0) / self.span_days - 1.0
        cols = []
        for k in range(1, self.n_yearly + 1):
            ang = 2 * np.pi * k * days / YEAR_DAYS
            cols += [np.sin(ang), np.cos(ang)]
        for k in range(1, self.n_weekly + 1):
            ang = 2 * np.pi * k * days / 7.0
            cols += [np.sin(ang), np.cos(ang)]
        four = np.stack(cols, axis=1) if cols else np.zeros((len(days), 0))
        return tpos, four

    def fourier_scale(self) -> np.ndarray:
        """Prior scale per Fourier column: 1/k for yearly harmonic k (a smooth year, so that flights
        and pushes of a few weeks are not taken for seasonality); 1 for the weekly ones (a day-of-week
        pattern need not be smooth)."""
        yearly = [1.0 / k for k in range(1, self.n_yearly + 1) for _ in (0, 1)]
        weekly = [1.0 for _ in range(2 * self.n_weekly)]
        return np.asarray(yearly + weekly, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_inputs(
    data: MMMData,
    spec: ModelSpec,
    priors: ResolvedPriors,
    lift: LiftArrays | None,
    *,
    with_y: bool = True,
) -> dict[str, Any]:
    """The arrays the model function consumes (float32), in scaled units."""
    tpos, four = spec.time_features(data.dates)
    ctrl = (data.controls - data.control_center) / data.control_scale
    f32 = np.float32
    inputs: dict[str, Any] = {
        "x": (data.spend / data.spend_scale).astype(f32),
        "ctrl": ctrl.astype(f32),
        "tpos": tpos.astype(f32),
        "four": four.astype(f32),
        "four_scale": spec.fourier_scale().astype(f32),
        "spend_over_y": (data.spend.sum(0) / data.y_scale).astype(f32),
        "y": (data.y / data.y_scale).astype(f32) if with_y else None,
        # 1 on the table's rows; 0 on rows appended by :func:`pad_inputs`, which nothing reads
        "mask": np.ones(data.periods, dtype=f32),
        "prior": {k: np.asarray(v, dtype=f32) for k, v in priors.__dict__.items()},
        "base_loc": f32(
            np.log(
                1.0
                - min(0.9, float(np.sum(np.exp(priors.roi_loc) * data.spend.sum(0))) / float(data.y.sum()))
            )
        ),
        "lift": None,
    }
    if lift is not None:
        inputs["lift"] = {
            "channel": lift.channel,
            "window": lift.window.astype(f32),
            "delta": lift.delta.astype(f32),
            "share": lift.share.astype(f32),
            "rows": lift.rows,
            "inside": lift.inside.astype(f32),
            "observed": lift.observed.astype(f32),
            "se": lift.se.astype(f32),
        }
    return inputs


#: the inputs with a time axis first; every other input is per channel, per test or a scalar
TIME_INPUTS = ("x", "ctrl", "tpos", "four", "y", "mask")


#: the lift-test inputs, each [tests, ...]; ``window`` is [tests, T], ``rows`` and ``inside`` [tests, W]
LIFT_INPUTS = ("channel", "window", "delta", "share", "rows", "inside", "observed", "se")


@dataclass(frozen=True)
class Extent:
    """The sizes that shape the model's inputs, and so key its compiled programs: the table's rows,
    the lift tests, and the rows of the longest test window (``W``)."""

    periods: int
    tests: int = 0
    width: int = 0

    @classmethod
    def of(cls, inputs: dict[str, Any]) -> Extent:
        lift = inputs.get("lift")
        tests, width = (0, 0) if lift is None else np.shape(lift["rows"])
        return cls(int(np.shape(inputs["x"])[0]), int(tests), int(width))

    def rounded(self, *, periods: bool = True) -> Extent:
        """This extent rounded up onto a coarse grid, so that inputs of similar sizes share compiled
        programs (and XLA's persistent cache): rows to a multiple of an eighth of the largest power
        of two not above them (at least 4; 104 weeks stay 104, 105 become 112, 730 days 768: at
        most an eighth more rows to sample; left as they are with ``periods=False``), lift tests to
        a power of two and at least :data:`MIN_TESTS`, window rows to a power of two."""
        rows = self.periods
        if periods:
            step = max(4, 1 << max(0, rows.bit_length() - 4))
            rows = -(-rows // step) * step
        tests = max(MIN_TESTS, _power_of_two(self.tests)) if self.tests else 0
        return Extent(rows, tests, _power_of_two(self.width))


#: the fewest lift tests that rounded shapes hold (padded with inert ones): a worker whose
#: calibration points arrive one experiment at a time keeps one program for its first four. An
#: inert test is not free (a daily SVI retrain with seven of them sampled about 12% slower), so
#: the grid grows by powers of two past that
MIN_TESTS = 4


def _power_of_two(n: int) -> int:
    """The least power of two >= ``n`` (0 for 0)."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def pad_inputs(inputs: dict[str, Any], to: Extent) -> dict[str, Any]:
    """``inputs`` padded to the extent ``to``: masked rows of zeros appended to the table, inert
    lift tests appended to the tests, and each test's window rows widened.

    The model reads a padded row nowhere: the likelihood skips it, the sums that define the ROI, the
    mean revenue and the baseline's level run over the table's rows, and adstock only carries
    forward, so padding at the end leaves every earlier row's media unchanged. An inert test changes
    no spend in no row and observes 0 with a standard error of 1: the model predicts exactly 0 for
    it, so it adds the same constant to the log density at every point and moves nothing. The
    posterior is the unpadded inputs' (``tests/models/test_model.py``), and a refit of a shorter
    table with fewer tests (the holdout) reuses the program compiled for the longer one, shapes
    being the compiled program's key."""
    have = Extent.of(inputs)
    if to.periods < have.periods or to.tests < have.tests or to.width < have.width:
        raise ValueError(f"cannot pad inputs of extent {have} to {to}")
    extra = to.periods - have.periods
    out = dict(inputs)
    for key in TIME_INPUTS:
        value = inputs.get(key)
        if value is not None:
            value = np.asarray(value)
            out[key] = np.concatenate([value, np.zeros((extra, *value.shape[1:]), dtype=value.dtype)])
    if to.tests == 0:
        return out
    lift = inputs.get("lift") or {
        "channel": np.zeros(0, np.int32),
        "window": np.zeros((0, have.periods), np.float32),
        "rows": np.zeros((0, 0), np.int32),
        "inside": np.zeros((0, 0), np.float32),
        **{k: np.zeros(0, np.float32) for k in ("delta", "share", "observed", "se")},
    }
    more = to.tests - have.tests
    padded = {}
    for key in LIFT_INPUTS:
        value = np.asarray(lift[key])
        wide = {"window": to.periods, "rows": to.width, "inside": to.width}.get(key)
        cols = () if wide is None else ((0, wide - value.shape[1]),)
        padded[key] = np.pad(value, ((0, more), *cols), constant_values=1 if key == "se" else 0)
    out["lift"] = padded
    return out


def adstock_fn(
    spec: ModelSpec, x: Array, decay: Array, delay: Array | None, init: Array | None = None
) -> Array:
    """The adstock of ``x``; ``init``: the state before the table (geometric), the spend of each
    period before it (delayed), the steady state of that spend being that spend; default: the
    first period's spend."""
    if spec.adstock == "delayed":
        return delayed_adstock(x, decay, delay, spec.max_lag, before=init)
    return geometric_adstock(x, decay, init)


# Initial value of the sampler's free coordinate (see :func:`mmm_model`): the baseline at the level
# that the data's mean revenue implies
SAMPLER_INIT = {"base_offset": 0.0}
# Sites derived from the sampler's coordinates (deterministic there), kept with every posterior draw
DERIVED_SITES = ("intercept", "beta", "rest_scale")


@dataclass(frozen=True)
class BoundModel:
    """``mmm_model`` bound to its structure, as a hashable callable of ``inputs`` alone: the key under
    which compiled programs are cached. NumPyro's argument validation is off inside: every value
    reaches the densities through a bijection onto its support, and the checks would add a mask
    per site to every compiled gradient."""

    spec: ModelSpec
    priors_sd: tuple[tuple[str, float], ...]
    generative: bool = False

    def __call__(self, inputs: dict[str, Any]) -> None:
        with numpyro.validation_enabled(False):
            mmm_model(inputs, self.spec, dict(self.priors_sd), self.generative)


#: a LogNormal prior wider than this (sigma) starts the sampler at its median, not its mean
WIDE_LOGNORMAL = 1.0


def _init_site(site: dict[str, Any] | None = None) -> Any:
    if site is None:
        return init_strategy
    if site["name"] in SAMPLER_INIT:
        shape = site["fn"].shape(site["kwargs"].get("sample_shape", ()))
        return jnp.full(shape, SAMPLER_INIT[site["name"]])
    if site["type"] == "sample" and not site["is_observed"] and isinstance(site["fn"], dist.LogNormal):
        # A wide prior's mean exp(loc + sigma^2 / 2) lies far out in its tail: with `roi_sigma: 2` the
        # mean ROIs put media at 1.9x mean revenue, where the baseline's level is not defined, and a
        # chain could never leave its start (sigma 10: the mean overflows). Such a site starts at its
        # median exp(loc); the default priors (sigma <= 1) keep the mean.
        fn = site["fn"]
        shape = fn.shape(site["kwargs"].get("sample_shape", ()))
        mean, median = jnp.broadcast_to(fn.mean, shape), jnp.broadcast_to(jnp.exp(fn.loc), shape)
        return jnp.where(jnp.broadcast_to(fn.scale, shape) > WIDE_LOGNORMAL, median, mean)
    return init_to_mean(site)


#: NumPyro init strategy: the sampler's free coordinates at :data:`SAMPLER_INIT`, the rest at their
#: prior means (deterministic: no sampling code in compiled programs; a ``partial``, as NumPyro
#: expects of a strategy)
init_strategy = partial(_init_site)


def _positive(v: Array, floor: float = 0.01, xp: Any = jnp) -> Array:
    """A smooth max(v, 0) that never reaches 0: ``floor x softplus(v / floor)`` (``xp``: ``jnp``, or
    ``np`` for NumPy callers, which then compile nothing)."""
    return floor * xp.logaddexp(v / floor, 0.0)


@dataclass(frozen=True)
class SitePrior:
    """The prior of one sampled site, as data: the model samples it through :meth:`distribution` and
    the prior predictive check draws it with NumPy through :meth:`sample`, so the two cannot differ.

    ``family`` and its parameters: ``lognormal`` (``a`` = mean of the log, ``b`` = its sd), ``beta``
    (``a``, ``b``), ``normal`` (``a`` = mean, ``b`` = sd), ``halfnormal`` (``a`` = scale). ``event``
    marks a vector site outside the channel plate (one draw is the whole vector).
    """

    family: str
    a: Any
    b: Any = None
    event: bool = False

    def distribution(self) -> dist.Distribution:
        d: dist.Distribution
        if self.family == "lognormal":
            d = dist.LogNormal(self.a, self.b)
        elif self.family == "beta":
            d = dist.Beta(self.a, self.b)
        elif self.family == "normal":
            d = dist.Normal(self.a, self.b)
        elif self.family == "halfnormal":
            d = dist.HalfNormal(self.a)
        else:
            raise ValueError(f"unknown prior family {self.family!r}")
        return d.to_event(1) if self.event else d

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws, [n, *site shape], float64."""
        a = np.asarray(self.a, dtype=float)
        b = np.asarray(self.a if self.b is None else self.b, dtype=float)
        size = (n, *np.broadcast_shapes(a.shape, b.shape))
        if self.family == "lognormal":
            return np.exp(rng.normal(a, b, size))
        if self.family == "beta":
            return rng.beta(a, b, size)
        if self.family == "normal":
            return rng.normal(a, b, size)
        if self.family == "halfnormal":
            return np.abs(rng.normal(0.0, a, size))
        raise ValueError(f"unknown prior family {self.family!r}")


def site_priors(inputs: dict[str, Any], spec: ModelSpec, priors_sd: dict[str, float]) -> dict[str, SitePrior]:
    """The prior of every sampled site of the generative model, in the model's order (the channel
    sites first, each [C])."""
    p = inputs["prior"]
    c = inputs["x"].shape[1]
    media = {
        "roi": SitePrior("lognormal", p["roi_loc"], p["roi_scale"]),
        "decay": SitePrior("beta", p["decay_a"], p["decay_b"]),
        "half": SitePrior("lognormal", p["half_loc"], p["half_scale"]),
        "shape": SitePrior("lognormal", p["shape_loc"], p["shape_scale"]),
        "delay": SitePrior("halfnormal", np.full(c, DELAY_SCALE, dtype=np.float32)),
    }
    out = {name: media[name] for name in spec.channel_sites()}
    out["trend"] = SitePrior("normal", 0.0, priors_sd["trend_sd"])
    out["curvature"] = SitePrior("normal", 0.0, priors_sd["curvature_sd"])
    nf = inputs["four"].shape[1]
    if nf:
        out["season"] = SitePrior(
            "normal", np.zeros(nf, np.float32), priors_sd["season_sd"] * inputs["four_scale"], event=True
        )
    nk = inputs["ctrl"].shape[1]
    if nk:
        out["gamma"] = SitePrior("normal", np.zeros(nk, np.float32), priors_sd["control_sd"], event=True)
    out["intercept"] = SitePrior("normal", inputs["base_loc"], 0.5)
    out["sigma"] = SitePrior("halfnormal", priors_sd["noise_sd"])
    return out


def mmm_model(
    inputs: dict[str, Any], spec: ModelSpec, priors_sd: dict[str, float], generative: bool = False
) -> None:
    """The NumPyro model. ``priors_sd`` holds the model-wide scalar prior scales; every site's prior
    is in :func:`site_priors`.

    One joint distribution, written in two coordinate systems for the baseline's level:

    * ``generative=True`` samples ``intercept`` from its prior (prior predictive checks);
    * the default is the *sampler's* coordinates. Mean revenue pins the baseline's level to a
      fraction of a percent once the media's share of it is known, while the ROIs that set that
      share are known to tens of percent: in (log ROI, intercept) the posterior lies on a thin curved
      ridge that NUTS crosses only with tiny steps at maximum tree depth. So the sampler moves
      ``base_offset``, the log baseline level minus the level that closes mean revenue given the
      ROIs, trend, seasonality and controls, and the model derives ``intercept`` from it. The map is
      a shift with unit Jacobian, so the intercept's prior enters as a factor and the density is
      exactly the generative one (``tests/models/test_model.py``).
    """
    x = inputs["x"]
    c = x.shape[1]
    mask = inputs["mask"]  # 1 on the table's rows, 0 on padding (:func:`pad_inputs`)
    prior = site_priors(inputs, spec, priors_sd)
    with numpyro.plate("channel", c):
        ch = {name: numpyro.sample(name, prior[name].distribution()) for name in spec.channel_sites()}
    roi, decay, half = ch["roi"], ch["decay"], ch["half"]
    shape, delay = ch.get("shape"), ch.get("delay")

    stock = adstock_fn(spec, x, decay, delay)  # [T, C]
    sat = saturate(spec.saturation, stock, half, shape)
    total = mask @ sat  # sum over the table's rows
    beta = numpyro.deterministic("beta", roi * inputs["spend_over_y"] / total)
    media = sat * beta

    trend = numpyro.sample("trend", prior["trend"].distribution())
    curvature = numpyro.sample("curvature", prior["curvature"].distribution())
    tpos = inputs["tpos"]
    rest = trend * tpos + curvature * (tpos**2 - 1.0 / 3.0)
    if "season" in prior:
        rest = rest + inputs["four"] @ numpyro.sample("season", prior["season"].distribution())
    if "gamma" in prior:
        rest = rest + inputs["ctrl"] @ numpyro.sample("gamma", prior["gamma"].distribution())
    # the coefficients are sized in revenue at the level the priors expect (module docstring): their
    # effect relative to the baseline grows as the level that the ROIs leave shrinks
    media_mean = jnp.sum(roi * inputs["spend_over_y"]) / jnp.sum(mask)
    rest = rest * numpyro.deterministic("rest_scale", rest_scale(media_mean, inputs["base_loc"]))
    intercept_prior = prior["intercept"].distribution()
    if generative:
        intercept = numpyro.sample("intercept", intercept_prior)
    else:
        # revenue is scaled to mean 1: the baseline's mean is what the media leave of it
        closing = jnp.log(_positive(1.0 - media_mean)) - log_mean_form(rest, spec.baseline, mask)
        offset = numpyro.sample("base_offset", dist.ImproperUniform(dist.constraints.real, (), ()))
        intercept = numpyro.deterministic("intercept", closing + offset)
        numpyro.factor("intercept_prior", intercept_prior.log_prob(intercept))
    mu = jnp.exp(intercept) * baseline_form(rest, spec.baseline) + jnp.sum(media, axis=1)
    sigma = numpyro.sample("sigma", prior["sigma"].distribution())
    numpyro.sample("obs", dist.Normal(mu, sigma).mask(mask > 0), obs=inputs["y"])

    lift = inputs["lift"]
    if lift is not None:
        pred = lift_predictions(spec, x, lift, decay, delay, half, shape, beta, stock=stock)
        numpyro.sample("lift_obs", dist.Normal(pred, lift["se"]), obs=lift["observed"])


def lift_predictions(
    spec: ModelSpec,
    x: Array,
    lift: dict[str, Array],
    decay: Array,
    delay: Array | None,
    half: Array,
    shape: Array | None,
    beta: Array,
    stock: Array | None = None,
) -> Array:
    """Per test, scaled units, summed over its window (see :mod:`models.lift`):

    * a national test: media(table spend) - media(spend changed by delta);
    * a geo holdout of share ``s``: ``s x (media(full spend) - media(full spend, none in the window))``,
      the full spend in the window being the table's / (1 - s) (the table holds what the other
      regions received).

    ``stock`` is the table's adstock [T, C] when the caller has it. Geometric adstock is linear in
    spend, so the changed spend's adstock is the table's plus the adstock of the change alone, which
    is zero before the window: only the window's rows are computed (a window that starts on the
    table's first row takes the period before it as unchanged). Delayed adstock recomputes the whole
    series per test, with the table's first period's spend before it in both series (the same
    convention).
    """
    if spec.adstock != "geometric":
        return _lift_full(spec, x, lift, decay, delay, half, shape, beta)
    x = jnp.asarray(x)
    stock = geometric_adstock(x, decay) if stock is None else stock

    def one(j: Array, rows: Array, inside: Array, delta: Array, share: Array) -> Array:
        d = decay[j]
        geo = share > 0
        spend = x[rows, j] * inside  # the table's spend in the window, zero after it
        up = jnp.where(geo, spend * share / (1.0 - share), 0.0)  # full spend - table spend
        down = jnp.where(geo, spend, -delta * inside)  # table spend - changed spend
        here = stock[rows, j]
        # the two changes' adstock from a zero state, as two columns of one product (one program)
        moved = _window_adstock(jnp.stack([up, down], axis=1), d)  # [W, 2]
        levels = jnp.stack([here + moved[:, 0], jnp.maximum(here - moved[:, 1], 0.0)], axis=1)
        curve = saturate(spec.saturation, levels, half[j], None if shape is None else shape[j])
        return beta[j] * jnp.where(geo, share, 1.0) * jnp.sum(inside * (curve[:, 0] - curve[:, 1]))

    return jax.vmap(one)(lift["channel"], lift["rows"], lift["inside"], lift["delta"], lift["share"])


#: Lift windows up to this many rows take their adstock as one direct [W, W] product, which XLA
#: compiles faster than the blocked closed form and runs as fast at these sizes (a weekly table's
#: 4-row tests); longer windows take the blocked form, the direct one sampling 35% slower at 64 rows.
DIRECT_WINDOW_ROWS = 16


def _window_adstock(v: Array, decay: Array) -> Array:
    """Geometric adstock of ``v`` [W, K] from a zero state, one scalar ``decay``: for a lift test's
    few rows the lower-triangular Toeplitz product ``(1 - d) d^(i - j)``, direct."""
    if v.shape[0] > DIRECT_WINDOW_ROWS:
        return geometric_adstock(v, decay, jnp.zeros((v.shape[1],), v.dtype))
    lag = np.arange(v.shape[0])[:, None] - np.arange(v.shape[0])[None, :]
    log_d = jnp.log(jnp.maximum(decay, 1e-30))  # d^k as exp(k log d): finite gradients at k = 0
    weights = jnp.where(lag >= 0, jnp.exp(np.maximum(lag, 0).astype(v.dtype) * log_d), 0.0) * (1.0 - decay)
    return weights @ v


def _lift_full(
    spec: ModelSpec,
    x: Array,
    lift: dict[str, Array],
    decay: Array,
    delay: Array | None,
    half: Array,
    shape: Array | None,
    beta: Array,
) -> Array:
    """:func:`lift_predictions` recomputing each test's channel over the whole table (any adstock)."""
    ch = jnp.asarray(lift["channel"])
    x = jnp.asarray(x)

    def one(j: Array, window: Array, delta: Array, share: Array) -> Array:
        xc = x[:, j]
        d = decay[j]
        dl = None if delay is None else delay[j]
        geo = share > 0
        full = jnp.where(geo, xc * (1.0 + window * share / (1.0 - share)), xc)
        changed = jnp.where(geo, full * (1.0 - window), jnp.maximum(xc + delta * window, 0.0))
        s = None if shape is None else shape[j]
        # before the table both series spent its first period as it stands (outside every window)
        before = xc[0]
        base = saturate(spec.saturation, adstock_fn(spec, full, d, dl, before), half[j], s)
        after = saturate(spec.saturation, adstock_fn(spec, changed, d, dl, before), half[j], s)
        return beta[j] * jnp.where(geo, share, 1.0) * jnp.sum(window * (base - after))

    return jax.vmap(one)(ch, lift["window"], lift["delta"], lift["share"])


#: Lowest baseline level (share of mean revenue) that :func:`rest_scale` divides by: ROIs that leave
#: the baseline less than this are beyond what any table supports, and the factor stays bounded there
REST_LEVEL_FLOOR = 0.05


def rest_scale(media_mean: Array, base_loc: Array, xp: Any = jnp) -> Array:
    """Factor from the sampled trend, seasonality and control coefficients to their effects relative
    to the baseline: the reference level ``exp(base_loc)`` over the level that the ROIs leave,
    ``1 - media_mean``, floored smoothly at :data:`REST_LEVEL_FLOOR` (see :func:`mmm_model`).
    ``xp``: ``jnp`` in the model, ``np`` for the NumPy prior draws."""
    level = REST_LEVEL_FLOOR + _positive(1.0 - REST_LEVEL_FLOOR - media_mean, xp=xp)
    return xp.exp(base_loc) / level


def baseline_form(rest: Array, baseline: str) -> Array:
    """The baseline relative to its level: ``exp(rest)`` or ``1 + rest`` (see :data:`BASELINES`)."""
    return jnp.exp(rest) if baseline == "multiplicative" else 1.0 + rest


def log_mean_form(rest: Array, baseline: str, mask: Array) -> Array:
    """log of the mean over the table's periods (``mask`` 1) of :func:`baseline_form` (``rest`` [T]),
    computed stably."""
    n = jnp.sum(mask)
    if baseline == "multiplicative":
        return jax.nn.logsumexp(rest, b=mask) - jnp.log(n)
    return jnp.log(_positive(1.0 + jnp.sum(rest * mask) / n))


def baseline_rest(draws: dict[str, Array], tpos: Array, four: Array, ctrl: Array) -> Array:
    """Trend, seasonality and controls per draw before :func:`baseline_form`: [N, T]."""
    rest = draws["trend"][:, None] * tpos[None, :]
    rest = rest + draws["curvature"][:, None] * (tpos[None, :] ** 2 - 1.0 / 3.0)
    if four.shape[1]:
        rest = rest + draws["season"] @ four.T
    if ctrl.shape[1]:
        rest = rest + draws["gamma"] @ ctrl.T
    if "rest_scale" in draws:  # versions stored before the factor existed have none (1)
        rest = rest * draws["rest_scale"][:, None]
    return rest


def baseline_value(spec: ModelSpec, draws: dict[str, Array], tpos: Array, four: Array, ctrl: Array) -> Array:
    """Baseline per draw and period [N, T] in scaled revenue (NumPy in, NumPy out)."""
    rest = baseline_rest(draws, tpos, four, ctrl)
    form = np.exp(rest) if spec.baseline == "multiplicative" else 1.0 + rest
    return np.exp(draws["intercept"])[:, None] * form


def media_per_draw(
    spec: ModelSpec, x: Array, draws: dict[str, Array], init: Array | None = None, multiplier: float = 1.0
) -> tuple[Array, Array]:
    """(media [N, T, C] in scaled revenue, adstock state after the last period [N, C]).

    ``draws`` holds ``decay``, ``half``, ``beta`` and, as the structure has them, ``shape`` and
    ``delay`` (each [N, C])."""
    hill_shape = spec.saturation == "hill"

    def one(
        decay: Array, delay: Array | None, half: Array, shape: Array | None, beta: Array, a0: Array | None
    ) -> Any:
        ad = adstock_fn(spec, x * multiplier, decay, delay, a0)
        return saturate(spec.saturation, ad, half, shape) * beta, ad[-1]

    n = draws["decay"].shape[0]
    if init is None:
        init = jnp.broadcast_to(x[0] * multiplier, (n, x.shape[1]))
    absent = jnp.zeros_like(draws["decay"])  # stands in for a parameter the structure does not have
    delay = draws.get("delay", absent)
    shape = draws["shape"] if hill_shape else absent
    f = jax.vmap(
        lambda d, dl, h, s, b, a0: one(
            d, dl if spec.adstock == "delayed" else None, h, s if hill_shape else None, b, a0
        )
    )
    return f(draws["decay"], delay, draws["half"], shape, draws["beta"], init)
