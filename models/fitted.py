"""A fitted MMM: posterior draws plus everything needed to decompose, predict and decide.

All outputs are computed from posterior draws (INTERFACES section 3):
* ``roi``  = sum over rows of the channel's contribution / its spend, where the contribution is
  expected revenue minus expected revenue with the channel's spend zeroed in every row (media are
  additive here, so it is the channel's media term summed over rows);
* ``mroas`` = (expected revenue with the channel's spend x 1.01 - expected revenue) / (0.01 x spend);
* ``contribution_share`` = contribution / expected revenue, both summed over the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from budgetloop.errors import InputError
from models.curves import ResponseCurves, delayed_adstock_np, geometric_adstock_np, saturation_np
from models.data import FREQ_DAYS, MMMData
from models.diagnostics import Diagnostics
from models.lift import LiftTest
from models.model import DELAY_SCALE, ModelSpec, baseline_value, media_per_draw
from models.priors import ROI_CONTRACTION_MIN, ChannelPrior, Priors, ResolvedPriors, resolve

MROAS_STEP = 0.01
#: the per-channel parameters of a media curve, each drawn as [draws, channels]
CURVE_PARAMETERS = ("beta", "decay", "delay", "half", "shape")
#: a period's carried-over spend (the adstock the response curve reads) is "low" below this share
#: of its mean; a channel with fewer than LOW_SPEND_MIN_SHARE of its periods low never showed the
#: curve near zero (see :meth:`FittedModel.spend_support`)
LOW_SPEND = 0.25
LOW_SPEND_MIN_SHARE = 0.05
#: a channel whose spend varies less than this (standard deviation over mean, across periods) never
#: showed how revenue answers a change of its budget: neither its ROI nor its mROAS is measured
FLAT_SPEND_VARIATION = 0.05
#: A period whose revenue sits this many robust standard deviations of the residuals (1.4826 x their
#: median absolute deviation) away from the model's expectation is named in the warnings: under the
#: model's normal noise one such period turns up in about 1.7 million
OUTLIER_Z = 5.0
#: at most this many such periods are named; the warning counts the rest
OUTLIERS_NAMED = 5
#: a spend cell this many times the channel's 90th percentile of non-zero spend is named (a typo?): a
#: dropped decimal point is 100x; the liveliest simulated budgets (`--variation 1`) reach 21x
SPEND_OUTLIER_RATIO = 50.0
#: A lift test whose measured lift sits further than this many standard deviations (its own and the
#: posterior's prediction's, combined) from what the fitted model predicts for it is named in the
#: warnings: the table and the test disagree, or the test was entered wrongly
LIFT_CONFLICT_Z = 3.0
#: a geo holdout's withheld spend (-spend_delta) may differ from what its holdout_share implies by
#: this share before the fit warns (regions' shares drift a little between the design and the window)
GEO_SHARE_TOLERANCE = 0.25
#: A default ROI prior median above this (media spend under 1% of revenue at the default media
#: share) is worth a warning: ROIs that high are rare, and a table may not be able to say so
DEFAULT_ROI_WARN = 25.0


@dataclass(frozen=True)
class LiftCheck:
    """How the fitted model sees one lift test: its own prediction of the test's incremental revenue
    (per draw, currency) against the measured one."""

    number: int  # 1-based, in the order the tests were given (row number - 1 in a lift-test CSV)
    test: LiftTest
    predicted: np.ndarray  # [N]

    @property
    def z(self) -> float:
        """(measured - predicted mean) over the combined standard deviation of the two."""
        sd = float(np.hypot(self.test.incremental_revenue_se, np.std(self.predicted)))
        return float((self.test.incremental_revenue - np.mean(self.predicted)) / sd)

    @property
    def agrees(self) -> bool:
        return abs(self.z) <= LIFT_CONFLICT_Z

    @property
    def reversed_sign(self) -> bool:
        """The measurement says the change moved revenue the other way than spend, by more than two
        standard errors: media effects here are positive, so no curve can follow it."""
        t = self.test
        expected_sign = -np.sign(t.spend_delta)  # table's spend minus the changed one
        return bool(expected_sign * t.incremental_revenue < -2.0 * t.incremental_revenue_se)

    def name(self) -> str:
        t = self.test
        return f"lift test {self.number} (`{t.channel}`, {str(t.start)[:10]}..{str(t.end)[:10]})"

    def warning(self) -> str | None:
        t = self.test
        if self.reversed_sign:
            kind, moved = ("holdout", "raised") if t.spend_delta < 0 else ("spend increase", "lowered")
            return (
                f"{self.name()}: incremental_revenue {t.incremental_revenue:,.6g} says the {kind} "
                f"(spend_delta {t.spend_delta:,.6g}) {moved} revenue, which no positive media effect "
                "can produce: incremental_revenue is the revenue with the table's spend minus the "
                "revenue with the changed spend, positive when a holdout lost revenue (INTERFACES "
                "section 2). Check its sign."
            )
        if self.agrees:
            return None
        lo, hi = np.quantile(self.predicted, [0.05, 0.95])
        return (
            f"{self.name()}: measured {t.incremental_revenue:,.6g} +- {t.incremental_revenue_se:,.6g}, "
            f"the fit predicts {np.mean(self.predicted):,.6g} ({lo:,.6g} to {hi:,.6g}, 90%): "
            f"{abs(self.z):.1f} standard deviations apart, so the table and the test disagree. Check "
            "the test's window (the rows dated start..end are counted), spend_delta (the total over "
            "the window) and units; if they are right, the curve's shape or carry-over is off "
            "(--saturation, --adstock, priors)."
        )


@dataclass(frozen=True)
class TableAloneCheck(LiftCheck):
    """One lift test against what the table alone predicts for it (a fit of the same model without
    the tests, :func:`models.fit.check_lift_tests_against_the_table`). :class:`LiftCheck` compares a
    test with a posterior that already contains it, so a tight test the table contradicts pulls that
    posterior to itself and still "agrees"; against the table alone the conflict shows."""

    # ``predicted`` (and so ``z`` and ``agrees``): the table-alone fit's prediction of the test
    roi_alone: np.ndarray  # [N] the channel's ROI, table alone
    roi_calibrated: np.ndarray  # [N] the channel's ROI in the fit with the tests

    def warning(self) -> str | None:
        # a test with the wrong sign is named by its LiftCheck, with the right advice (its sign)
        if self.agrees or self.reversed_sign:
            return None
        t = self.test
        lo, hi = np.quantile(self.predicted, [0.05, 0.95])

        def roi(v: np.ndarray) -> str:
            a, m, b = np.quantile(v, [0.05, 0.5, 0.95])
            return f"{m:.3g} ({a:.3g} to {b:.3g}, 90%)"

        return (
            f"{self.name()}: measured {t.incremental_revenue:,.6g} +- {t.incremental_revenue_se:,.6g}, where the table alone "
            f"predicts {np.mean(self.predicted):,.6g} ({lo:,.6g} to {hi:,.6g}, 90%): {abs(self.z):.1f} "
            f"standard deviations apart. The fit followed the test: `{t.channel}`'s ROI is "
            f"{roi(self.roi_calibrated)} with it, {roi(self.roi_alone)} from the table alone. Check the "
            "test's window (the rows dated start..end count), spend_delta (the total over the window) "
            "and units; if the test is right, the table misled the model about this channel and the "
            "test corrects it."
        )


@dataclass(frozen=True)
class SpendSupport:
    """How much of a channel's curve the table shows, from zero spend up."""

    channel: str
    low_spend_share: float  # share of periods whose carried-over spend is under LOW_SPEND x its mean
    lift_tests: int  # lift tests of this channel in the fit
    roi_extrapolated: bool  # too few such periods and no lift test: the ROI rests on the curve's shape
    spend_variation: float  # standard deviation of the spend over its mean, across periods
    mroas_from_prior: bool  # spend (nearly) flat and no lift test: the mROAS is the priors' too

    def warning(self) -> str | None:
        if self.mroas_from_prior:
            return (
                f"{self.channel}: its spend barely moved (it varies by {self.spend_variation:.1%} of its "
                f"mean, under {FLAT_SPEND_VARIATION:.0%}), so the table cannot tell its effect from the "
                "baseline: its ROI and its mROAS both come from the priors, not the data. Vary its "
                "budget for a few weeks, or add a lift test of it (--lift-tests), before acting on them."
            )
        return roi_extrapolation_note([self]) if self.roi_extrapolated else None


def roi_extrapolation_note(supports: Sequence[SpendSupport]) -> str:
    """One note for channels whose ROI extrapolates below the spend the table shows (FIT.json gives
    each its own; ``budgetloop fit`` names them all in one)."""
    names = ", ".join(s.channel for s in supports)
    shares = ", ".join(f"{s.low_spend_share:.1%}" for s in supports)
    return (
        f"{names}: its spend carried over (the adstock its response curve reads) fell below "
        f"{LOW_SPEND:.0%} of its mean in {shares} of the periods, so "
        "the ROI extrapolates the response curve down to zero spend (its interval reflects the curve "
        "family, not the data); the mROAS is measured. A holdout test (--lift-tests) or a period of "
        "much lower spend would pin the ROI."
    )


@dataclass(frozen=True)
class Holdout:
    periods: int
    mape: float
    coverage_90: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"periods": self.periods, "mape": self.mape, "coverage_90": self.coverage_90}


@dataclass(frozen=True)
class ChannelMetrics:
    """Per-draw channel figures: each array is [draws, C]."""

    roi: np.ndarray
    mroas: np.ndarray
    contribution: np.ndarray
    contribution_share: np.ndarray


def media_jit(spec: ModelSpec, x: Any, draws: dict[str, Any], multiplier: float) -> Any:
    """:func:`models.model.media_per_draw` compiled per model structure and shapes (the adstock
    starting at the first period's steady state). Keyed on ``spec.structure()``, not on the training
    window's dates: each weekly retrain on a rolling window, and a holdout refit, reuse it."""
    return _media(spec.structure(), x, draws, multiplier)


@partial(jax.jit, static_argnums=(0,))
def _media(spec: ModelSpec, x: Any, draws: dict[str, Any], multiplier: float) -> Any:
    return media_per_draw(spec, x, draws, None, multiplier)


@dataclass
class FittedModel:
    data: MMMData
    spec: ModelSpec
    priors: Priors
    draws: dict[str, np.ndarray]  # [N, ...] per parameter, chains flattened
    diagnostics: Diagnostics
    method: str
    seed: int
    settings: dict[str, Any]
    lift_tests: tuple[LiftTest, ...] = ()
    holdout: Holdout | None = None
    versions: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ basics
    @property
    def channels(self) -> tuple[str, ...]:
        return self.data.channels

    @property
    def n_draws(self) -> int:
        return int(self.draws["roi"].shape[0])

    @property
    def healthy(self) -> bool:
        return self.diagnostics.healthy

    def _jdraws(self) -> dict[str, Any]:
        keys = ("decay", "half", "beta", *(k for k in ("shape", "delay") if k in self.draws))
        return {k: jnp.asarray(self.draws[k], dtype=jnp.float32) for k in keys}

    def _x(self, spend: np.ndarray) -> Any:
        return jnp.asarray(spend / self.data.spend_scale, dtype=jnp.float32)

    # ------------------------------------------------------------------ decomposition
    def media(self, multiplier: float = 1.0) -> np.ndarray:
        """Media revenue per draw, period and channel over the table [N, T, C] (currency)."""
        key = f"media{multiplier}"
        if key not in self._cache:
            m, _ = media_jit(self.spec, self._x(self.data.spend), self._jdraws(), multiplier)
            self._cache[key] = np.asarray(m, dtype=float) * self.data.y_scale
        return self._cache[key]

    def baseline(self, dates: np.ndarray | None = None, controls: np.ndarray | None = None) -> np.ndarray:
        """Baseline revenue (everything but media) per draw and period [N, T] (currency)."""
        d = self.data.dates if dates is None else dates
        c = self.data.controls if controls is None else controls
        tpos, four = self.spec.time_features(d)
        ctrl = (c - self.data.control_center) / self.data.control_scale
        draws = {k: np.asarray(v, dtype=float) for k, v in self.draws.items()}
        return baseline_value(self.spec, draws, tpos, four, ctrl) * self.data.y_scale

    def baseline_parts(self) -> dict[str, np.ndarray]:
        """Posterior-mean split of the baseline [T]: level+trend, seasonality, controls (multiplicative parts
        shown additively: each part is the baseline's change when that part is added last)."""
        tpos, four = self.spec.time_features(self.data.dates)
        ctrl = (self.data.controls - self.data.control_center) / self.data.control_scale
        d = {k: np.asarray(v, dtype=float) for k, v in self.draws.items()}
        zero_ctrl = np.zeros((len(tpos), 0))
        zero_four = np.zeros((len(tpos), 0))
        trend_only = baseline_value(self.spec, d, tpos, zero_four, zero_ctrl)
        with_season = baseline_value(self.spec, d, tpos, four, zero_ctrl)
        full = baseline_value(self.spec, d, tpos, four, ctrl)
        s = self.data.y_scale
        return {
            "trend": trend_only.mean(0) * s,
            "seasonality": (with_season - trend_only).mean(0) * s,
            "controls": (full - with_season).mean(0) * s,
        }

    def expected(self) -> np.ndarray:
        """Expected revenue per draw and period [N, T] (computed once: the fit's checks, its metrics
        and FIT.json all read it)."""
        if "expected" not in self._cache:
            self._cache["expected"] = self.baseline() + self.media().sum(axis=2)
        return self._cache["expected"]

    def log_likelihood(self) -> np.ndarray:
        """Log density of each period's revenue under each draw [N, T] (for PSIS-LOO)."""
        sigma = self.draws["sigma"][:, None] * self.data.y_scale
        z = (self.data.y[None, :] - self.expected()) / sigma
        return -0.5 * z**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)

    def posterior_predictive(self, seed: int = 0) -> np.ndarray:
        """Replicated revenue per draw and period [N, T], observation noise included."""
        rng = np.random.default_rng(seed)
        sigma = self.draws["sigma"][:, None] * self.data.y_scale
        return self.expected() + rng.standard_normal((self.n_draws, self.data.periods)) * sigma

    def spend_support(self) -> tuple[SpendSupport, ...]:
        """Per channel: does the table show its curve near zero spend? The ROI (contribution over
        spend) needs the curve from zero up; a channel whose spend rarely falls far below its mean
        leaves that part to the curve family and its priors, however well its marginal return, the
        slope at the spend it runs at, is measured (``docs/validation.md``, the envelope). A lift
        test of the channel measures a stretch of that curve, so the channel is not flagged.

        The curve reads the spend carried over (the adstock, here at the posterior mean carry-over),
        not the period's own spend: a channel that pauses now and then but whose effect carries
        across the pauses never brings the curve near zero. PyMC-Marketing's example: x1 spends
        under a quarter of its mean in 13% of the weeks, its carried-over spend in 1.7% of them,
        and its ROI is indeed the curve family's guess there (a Hill fit misses its contribution by
        22%, a logistic one by 2%, ``docs/validation.md``).

        A channel whose spend hardly varies shows no slope either: its media effect is a constant
        the baseline's level absorbs, so its mROAS, like its ROI, is what the priors say
        (``mroas_from_prior``)."""
        spend = self.data.spend
        mean = spend.mean(axis=0)
        sd = spend.std(axis=0)
        carried = self.carried_spend()
        carried_mean = carried.mean(axis=0)
        out = []
        for j, ch in enumerate(self.channels):
            low = carried[:, j] < LOW_SPEND * carried_mean[j]
            share = float(np.mean(low)) if carried_mean[j] > 0 else 1.0
            variation = float(sd[j] / mean[j]) if mean[j] > 0 else 0.0
            tests = sum(t.channel == ch for t in self.lift_tests)
            out.append(
                SpendSupport(
                    ch,
                    share,
                    tests,
                    share < LOW_SPEND_MIN_SHARE and tests == 0,
                    variation,
                    variation < FLAT_SPEND_VARIATION and tests == 0,
                )
            )
        return tuple(out)

    def carried_spend(self) -> np.ndarray:
        """The table's spend as the response curves read it, carried over by the adstock at the
        posterior mean decay (and delay): [T, C], in currency per period (the adstock is a weighted
        average of past spend)."""
        if "carried" not in self._cache:  # FIT.json reads it through several of its fields
            decay = self.draws["decay"].mean(axis=0)
            spend = self.data.spend
            self._cache["carried"] = (
                delayed_adstock_np(spend, decay, self.draws["delay"].mean(axis=0), self.spec.max_lag)
                if self.spec.adstock == "delayed"
                else geometric_adstock_np(spend, decay)
            )
        carried: np.ndarray = self._cache["carried"]
        return carried

    def warnings(self) -> tuple[str, ...]:
        """What an analyst should know before reading the figures, healthy fit or not: channels
        whose ROI (or mROAS) the table does not measure, default priors it may be unable to
        correct, periods it cannot explain."""
        support = tuple(w for w in (s.warning() for s in self.spend_support()) if w)
        lift = tuple(w for w in (c.warning() for c in self.lift_checks()) if w) + self.geo_share_warnings()
        held = (str(self.settings["holdout_note"]),) if self.settings.get("holdout_note") else ()
        return (
            support
            + self.contraction_warnings()
            + lift
            + self.prior_warnings()
            + self.outlier_warnings()
            + self.spend_outlier_warnings()
            + held
        )

    def geo_share_warnings(self) -> tuple[str, ...]:
        """A warning per geo holdout whose ``spend_delta`` and ``holdout_share`` disagree by more than
        a quarter: the share says the held-out regions would have spent ``s / (1 - s)`` times the
        table's spend over the window, and the model reads the share alone (:mod:`models.lift`), so a
        mistyped share would calibrate the channel silently."""
        out = []
        days = self.data.dates.astype("datetime64[D]")
        for check in self.lift_checks():
            t, s = check.test, check.test.holdout_share
            if s is None:
                continue
            window = (days >= t.start) & (days <= t.end)
            shown = float(self.data.spend[window, self.channels.index(t.channel)].sum())
            implied = shown * s / (1.0 - s)
            if implied > 0 and abs(-t.spend_delta - implied) > GEO_SHARE_TOLERANCE * implied:
                out.append(
                    f"{check.name()}: holdout_share {s:g} says the held-out regions would have spent "
                    f"{implied:,.2f} over the window (the table's {shown:,.2f} x {s:g} / {1 - s:g}), but "
                    f"spend_delta is {t.spend_delta:,.2f}. The model reads the share, not spend_delta: "
                    "check which of the two is right."
                )
        return tuple(out)

    def _resolved_priors(self) -> ResolvedPriors:
        return resolve(
            self.priors,
            channels=self.channels,
            frequency=self.data.frequency,
            y_total=float(self.data.y.sum()),
            spend_total=self.data.spend.sum(0),
            spend_scale=self.data.spend_scale,
        )

    def priors_by_channel(self) -> dict[str, dict[str, dict[str, float]]]:
        """The prior each channel's parameters were sampled from, defaults filled in from the table
        (FIT.json ``model.priors_by_channel``): ROI and half-saturation (currency per period) as
        LogNormal ``{median, sigma}``, decay as Beta ``{a, b}``, the Hill shape where the curve has one,
        the delayed adstock's lag to its peak as HalfNormal ``{scale}``.
        ``model.priors`` holds what was asked for; this is what it came to on this table."""
        r = self._resolved_priors()
        hill = self.spec.saturation == "hill"
        out: dict[str, dict[str, dict[str, float]]] = {}
        for j, ch in enumerate(self.channels):
            out[ch] = {
                "roi": {"median": float(np.exp(r.roi_loc[j])), "sigma": float(r.roi_scale[j])},
                "decay": {"a": float(r.decay_a[j]), "b": float(r.decay_b[j])},
                "half": {
                    "median": float(np.exp(r.half_loc[j]) * self.data.spend_scale[j]),
                    "sigma": float(r.half_scale[j]),
                },
            }
            if hill:
                out[ch]["shape"] = {"median": float(np.exp(r.shape_loc[j])), "sigma": float(r.shape_scale[j])}
            if self.spec.adstock == "delayed":  # HalfNormal, periods to the peak
                out[ch]["delay"] = {"scale": DELAY_SCALE}
        return out

    def roi_prior_contraction(self) -> np.ndarray:
        """Per channel [C], the share of the ROI prior's variance that the data (the table and its
        lift tests) removed: ``1 - var(log ROI | data) / sigma**2``, the ROI's prior being
        LogNormal with scale ``sigma`` (the posterior contraction of Betancourt's Bayesian
        workflow). Near 1 the data measured the ROI; near 0 the posterior repeats the prior, however
        healthy the sampler's diagnostics: the channel's effect is too small against the revenue's
        noise, or moves too much with the other channels and the baseline, for the table to size it."""
        if "contraction" not in self._cache:
            resolved = self._resolved_priors()
            log_roi = np.log(np.maximum(self.channel_metrics().roi, np.finfo(float).tiny))
            self._cache["contraction"] = 1.0 - log_roi.var(axis=0) / resolved.roi_scale**2
        contraction: np.ndarray = self._cache["contraction"]
        return contraction

    def contraction_warnings(self) -> tuple[str, ...]:
        """A warning per channel whose ROI mostly repeats its prior (:meth:`roi_prior_contraction`
        under ``ROI_CONTRACTION_MIN``), unless its flat spend already says so (``mroas_from_prior``)."""
        contraction = self.roi_prior_contraction()
        support = self.spend_support()
        roi = self.channel_metrics().roi
        out = []
        for j, ch in enumerate(self.channels):
            if contraction[j] >= ROI_CONTRACTION_MIN or support[j].mroas_from_prior:
                continue
            lo, hi = np.quantile(roi[:, j], [0.05, 0.95])
            head = (
                f"{ch}: the data removed only {max(contraction[j], 0.0):.0%} of its ROI prior's "
                f"variance (roi_prior_contraction, under {ROI_CONTRACTION_MIN:.0%}), so its ROI "
                f"({np.median(roi[:, j]):.3g}, {lo:.3g} to {hi:.3g}, 90%) and its mROAS mostly repeat "
            )
            own = (self.priors.channels.get(ch) or ChannelPrior()).roi
            if own is not None:  # the analyst's own prior: it speaks louder than the table, by choice
                out.append(
                    head + f"the ROI prior set for it (median {own.median:.3g}, sigma {own.sigma:.3g}, "
                    "--priors). That is as meant if the prior comes from a measurement you trust; if the "
                    "table should speak, widen its sigma."
                )
                continue
            out.append(
                head + "the prior: its effect is too small against the revenue's "
                "noise, or moves too much with the other channels and the baseline, for this table to "
                "size it. Add a lift test of it (--lift-tests), or set its roi prior from what you "
                "know (--priors), before acting on it."
            )
        return tuple(out)

    def lift_checks(self) -> tuple[LiftCheck, ...]:
        """Each lift test against the fitted model's own prediction of it (the quantity its
        likelihood term reads, :func:`models.model.lift_predictions`), in NumPy per draw."""
        if "lift_checks" not in self._cache:
            self._cache["lift_checks"] = tuple(
                LiftCheck(i + 1, t, self._lift_prediction(t)) for i, t in enumerate(self.lift_tests)
            )
        checks: tuple[LiftCheck, ...] = self._cache["lift_checks"]
        return checks

    def _lift_prediction(self, test: LiftTest) -> np.ndarray:
        """A national test: media(table spend) - media(spend changed by its delta), summed over its
        window; a geo holdout of share s: s x (media(full spend) - media(none in the window)), the
        full spend being the table's / (1 - s). Currency, one value per draw."""
        j = self.channels.index(test.channel)
        days = self.data.dates.astype("datetime64[D]")
        window = (days >= test.start) & (days <= test.end)
        x = self.data.spend[:, j].astype(float)
        s = test.holdout_share
        if s is None:
            full, changed, weight = x, np.maximum(x + window * test.spend_delta / window.sum(), 0.0), 1.0
        else:
            full = x * (1.0 + window * s / (1.0 - s))
            changed, weight = full * ~window, s
        scale = float(self.data.spend_scale[j])
        # the channel's own curve parameters (not every [draws, k] array: controls' gamma is one too)
        draws = {k: np.asarray(self.draws[k], dtype=float)[:, j] for k in CURVE_PARAMETERS if k in self.draws}

        def media(spend: np.ndarray) -> np.ndarray:  # [T, N], scaled units as the draws are
            xs = np.broadcast_to((spend / scale)[:, None], (len(spend), self.n_draws))
            # both series start from the table's first period held before it, as the model's lift term
            if self.spec.adstock == "delayed":
                ad = delayed_adstock_np(
                    xs, draws["decay"], draws["delay"], self.spec.max_lag, before=x[0] / scale
                )
            else:
                ad = geometric_adstock_np(xs, draws["decay"], init=x[0] / scale)
            shape = draws.get("shape", np.ones(self.n_draws))
            return draws["beta"] * saturation_np(self.spec.saturation, ad, draws["half"], shape)

        lift = weight * ((media(full) - media(changed)) * window[:, None]).sum(axis=0)
        return np.asarray(lift * self.data.y_scale, dtype=float)

    def outlier_warnings(self) -> tuple[str, ...]:
        """Periods the model cannot follow. Noise is normal, so one week of many times the usual
        revenue (an event the table has no column for, or a typo) pulls the whole fit toward it:
        on a 156-week table one week at 8x the mean revenue tripled every channel's ROI. Each period
        whose residual exceeds ``OUTLIER_Z`` robust standard deviations is named with what to do."""
        y = self.data.y
        resid = y - self.expected().mean(axis=0)
        centre = float(np.median(resid))
        scale = 1.4826 * float(np.median(np.abs(resid - centre)))
        if not np.isfinite(scale) or scale <= 0:
            return ()
        z = (resid - centre) / scale
        rows = [int(i) for i in np.argsort(-np.abs(z)) if abs(z[i]) > OUTLIER_Z]
        if not rows:
            return ()
        expected = y - resid
        named = ", ".join(
            f"{str(self.data.dates[i])[:10]} ({_amount(y[i])} against {_amount(expected[i])} expected, "
            f"{z[i]:+.1f} SD)"
            for i in sorted(rows[:OUTLIERS_NAMED])
        )
        more = f" and {len(rows) - OUTLIERS_NAMED} more" if len(rows) > OUTLIERS_NAMED else ""
        return (
            f"revenue lies far from anything the model can explain on {len(rows)} period(s): {named}"
            f"{more}. Such periods pull every channel's estimates toward them. If an event explains "
            "one (a sale, an outage, a holiday), add a control column marking it (1 on its rows, 0 "
            "elsewhere; --controls); if it is a data error, correct the row.",
        )

    def spend_outlier_warnings(self) -> tuple[str, ...]:
        """Spend cells many times anything else the channel spent: a dropped decimal point (598262
        for 5982.62) moved every channel's ROI with no word (the default ROI prior is sized on total
        spend), where a revenue outlier is named. A cell above ``SPEND_OUTLIER_RATIO`` times the
        channel's 90th percentile of non-zero spend is named with its row; flights and launches,
        a few times the usual, stay well under it."""
        out: list[str] = []
        for j, ch in enumerate(self.channels):
            x = self.data.spend[:, j]
            spent = x[x > 0]
            if spent.size < 10:
                continue
            usual = float(np.quantile(spent, 0.9))
            rows = [int(i) for i in np.flatnonzero(x > SPEND_OUTLIER_RATIO * usual)]
            if not rows:
                continue
            named = ", ".join(
                f"{str(self.data.dates[i])[:10]} ({_amount(float(x[i]))}, {x[i] / usual:,.0f}x)"
                for i in rows[:OUTLIERS_NAMED]
            )
            more = f" and {len(rows) - OUTLIERS_NAMED} more" if len(rows) > OUTLIERS_NAMED else ""
            out.append(
                f"{ch}: spend on {named}{more} is over {SPEND_OUTLIER_RATIO:g} times the channel's 90th "
                f"percentile ({_amount(usual)}). Check the row(s) for a typo (a dropped decimal point); "
                "one such cell moves every channel's ROI."
            )
        return tuple(out)

    def prior_warnings(self) -> tuple[str, ...]:
        """Where a default prior says something the table may be unable to correct. The default ROI
        prior's median is ``media_share x revenue / spend`` for every channel (media drive that share
        of revenue); when the media spend is a tiny fraction of revenue that median is very large,
        and a table whose media effects are smaller than its noise cannot pull the ROIs down."""
        defaulted = [
            ch for ch in self.channels if (self.priors.channels.get(ch) or ChannelPrior()).roi is None
        ]
        spend, revenue = float(self.data.spend.sum()), float(self.data.y.sum())
        if not defaulted or spend <= 0:
            return ()
        median = self.priors.media_share * revenue / spend
        if median <= DEFAULT_ROI_WARN:
            return ()
        return (
            f"media spend is {spend / revenue:.2%} of revenue, so the default ROI prior (media drive "
            f"media_share = {self.priors.media_share:g} of revenue) centres the ROI of "
            f"{', '.join(defaulted)} at {median:,.0f}: where the media's effect is smaller than the "
            "table's noise, the ROIs follow that prior. Set media_share, or each channel's roi prior, "
            "from what you know (--priors FILE, docs/model.md).",
        )

    # ------------------------------------------------------------------ decisions
    def channel_metrics(self) -> ChannelMetrics:
        if "metrics" not in self._cache:
            base = self.media()
            contrib = base.sum(axis=1)  # [N, C]
            bumped = self.media(1.0 + MROAS_STEP).sum(axis=1)
            spend = self.data.spend.sum(axis=0)[None, :]
            total = self.expected().sum(axis=1)[:, None]
            self._cache["metrics"] = ChannelMetrics(
                roi=contrib / spend,
                mroas=(bumped - contrib) / (MROAS_STEP * spend),
                contribution=contrib,
                contribution_share=contrib / total,
            )
        return self._cache["metrics"]

    def response_curves(self) -> ResponseCurves:
        """Steady-state curves in currency per period, one row per draw (the optimizer's input)."""
        half = np.asarray(self.draws["half"], dtype=float) * self.data.spend_scale[None, :]
        return ResponseCurves(
            channels=self.channels,
            beta=np.asarray(self.draws["beta"], dtype=float) * self.data.y_scale,
            half=half,
            # a logistic curve has no shape: ResponseCurves carries ones
            shape=np.asarray(self.draws["shape"], dtype=float)
            if "shape" in self.draws
            else np.ones_like(half),
            period=self.data.frequency,
            meta={"fingerprint": self.data.fingerprint(), "last_date": str(self.data.dates[-1])[:10]},
            saturation=self.spec.saturation,
        )

    def predict(
        self,
        spend: np.ndarray,
        controls: np.ndarray | None,
        dates: np.ndarray,
        *,
        seed: int = 0,
        noise: bool = True,
    ) -> np.ndarray:
        """Revenue draws [N, T_new] for future (or any) periods given their spend [T_new, C].

        When ``dates`` start right after the table, adstock carries over from the fitted history;
        otherwise it starts at the steady state of the first period's spend. ``noise=False`` gives the
        expected revenue per draw instead of the posterior predictive.
        """
        spend = np.asarray(spend, dtype=float)
        dates = np.asarray(dates).astype("datetime64[D]")
        c = len(self.channels)
        if spend.ndim != 2 or spend.shape != (len(dates), c):
            raise InputError(
                f"`spend` must have shape [{len(dates)}, {c}] (periods x channels {list(self.channels)}), "
                f"got {spend.shape}",
                key="spend",
            )
        if np.any(spend < 0) or not np.all(np.isfinite(spend)):
            raise InputError("`spend` must be finite and >= 0", key="spend")
        k = len(self.data.control_names)
        if controls is None:
            if k:
                raise InputError(
                    f"`controls` needed: the model uses {list(self.data.control_names)}", key="controls"
                )
            controls = np.zeros((len(dates), 0))
        controls = np.asarray(controls, dtype=float)
        if controls.shape != (len(dates), k):
            raise InputError(
                f"`controls` must have shape [{len(dates)}, {k}], got {controls.shape}", key="controls"
            )
        step = np.timedelta64(FREQ_DAYS[self.data.frequency], "D")
        if len(dates) and dates[0] == self.data.dates[-1].astype("datetime64[D]") + step:
            # carry-over from the table: the media of the table followed by the new periods, the new
            # rows kept. One compiled function for every use of the posterior's media, and for a
            # holdout (the table less its last rows, then those rows) the very shape of the fit's own
            m, _ = media_jit(
                self.spec, self._x(np.concatenate([self.data.spend, spend])), self._jdraws(), 1.0
            )
            m = np.asarray(m)[:, self.data.periods :]
        else:
            m, _ = media_jit(self.spec, self._x(spend), self._jdraws(), 1.0)
        rev = self.baseline(dates, controls) + np.asarray(m, dtype=float).sum(axis=2) * self.data.y_scale
        if noise:
            rng = np.random.default_rng(seed)
            rev = rev + rng.standard_normal(rev.shape) * self.draws["sigma"][:, None] * self.data.y_scale
        return rev

    # ------------------------------------------------------------------ versions
    def to_dict(self, *, max_draws: int | None = None, seed: int = 0) -> dict[str, Any]:
        from models.serialize import to_dict

        return to_dict(self, max_draws=max_draws, seed=seed)

    def save(self, path: str, *, max_draws: int | None = None, seed: int = 0) -> None:
        from models.serialize import save

        save(self, path, max_draws=max_draws, seed=seed)

    @classmethod
    def load(cls, path: str) -> FittedModel:
        from models.serialize import load

        return load(path)


def _amount(value: float) -> str:
    """A revenue figure for a message: whole units with separators, or 4 significant digits when it
    is small (a table in millions or in thousandths reads as well as one in units)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
