"""Inference: NUTS (chains in parallel across devices) or SVI, then diagnostics and an optional holdout.

``fit(data, ...)`` is pure: arrays in, a :class:`~models.fitted.FittedModel` out; the seed is an
argument and nothing reads the clock except an elapsed-time counter for ``fit_seconds``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.handlers import replay, seed
from numpyro.infer import SVI, Predictive
from numpyro.infer.autoguide import AutoMultivariateNormal
from numpyro.infer.elbo import ELBO
from numpyro.infer.util import log_density
from numpyro.optim import ClippedAdam

from budgetloop.errors import BudgetloopError, FitError, InputError
from models.data import MIN_PERIODS, MMMData
from models.diagnostics import DIVERGENCE_MAX, RHAT_MAX, bfmi, chain_stats, coverage, judge, mape
from models.fitted import FittedModel, Holdout, LiftCheck, TableAloneCheck, media_jit
from models.lift import LiftTest, to_arrays
from models.loo import loo
from models.model import (
    ADSTOCKS,
    BASELINES,
    DERIVED_SITES,
    BoundModel,
    Extent,
    ModelSpec,
    baseline_value,
    build_inputs,
    init_strategy,
    pad_inputs,
    rest_scale,
    site_priors,
)
from models.priors import Priors, resolve
from models.sampler import PROGRESS_SEGMENTS, WARMUP_TREE_DEPTH, Chains, Settings, run_nuts, shapes
from models.transforms import SATURATIONS

METHODS = ("nuts", "svi")
#: ``fit(round_shapes=...)``: exact shapes, lift tests rounded, or rows and lift tests rounded
ROUND_SHAPES = (None, "tests", "all")
RETRY_TARGET_ACCEPT = 0.95
#: the largest seed: JAX's PRNGKey keeps 32 bits of it (2**32 gives seed 0's key) and NumPy's
#: generators take no negative one
SEED_MAX = 2**32 - 1
_CACHE_DIR: list[str] = []


def enable_compilation_cache(directory: str | Path) -> None:
    """Keep XLA's compiled code on disk so later processes skip compilation (idempotent)."""
    d = str(Path(directory).resolve())
    if _CACHE_DIR and _CACHE_DIR[0] == d:
        return
    Path(d).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", d)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _CACHE_DIR[:] = [d]


def library_versions() -> dict[str, str]:
    import numpy
    import scipy

    return {
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def _scalar_sds(priors: Priors) -> dict[str, float]:
    return {
        k: float(getattr(priors, k))
        for k in ("trend_sd", "curvature_sd", "season_sd", "control_sd", "noise_sd")
    }


def model_inputs(
    data: MMMData,
    spec: ModelSpec,
    priors: Priors,
    lift_tests: Sequence[LiftTest] = (),
    *,
    lift_source: str = "<lift tests>",
) -> dict[str, Any]:
    """The model's input arrays for ``data``: priors resolved to the data's scale, lift tests placed
    on its rows."""
    resolved = resolve(
        priors,
        channels=data.channels,
        frequency=data.frequency,
        y_total=float(data.y.sum()),
        spend_total=data.spend.sum(0),
        spend_scale=data.spend_scale,
    )
    return build_inputs(data, spec, resolved, to_arrays(list(lift_tests), data, source=lift_source))


def _bound(spec: ModelSpec, sds: dict[str, float], generative: bool = False) -> BoundModel:
    return BoundModel(spec.structure(), tuple(sorted(sds.items())), generative)


#: the most spend cells (rows x channels, as sampled) of a table whose sampler compiles with
#: :data:`models.sampler.QUICK_COMPILE`. Measured side by side on 2 cores, medians of 3
#: (docs/validation.md, section 5): 104 x 6, 179 x 2 and 365 x 5 compile 1.3-1.8 s faster and
#: sample as fast; 260 x 10 compiles 1.0 s faster and samples 5% slower, a loss from the third
#: refit on; 730 x 10 samples 11% slower (2.1 s) for 1.9 s saved once.
QUICK_COMPILE_CELLS = 2048


def quick_compile(inputs: dict[str, Any]) -> bool:
    """Whether the sampler of ``inputs`` compiles quickly rather than thoroughly (its spend table
    holds at most :data:`QUICK_COMPILE_CELLS` cells)."""
    return int(np.size(inputs["x"])) <= QUICK_COMPILE_CELLS


def _chain_stats(run: Chains) -> tuple[float | None, float | None, float | None, str | None]:
    """r-hat max, bulk and tail ESS min and the worst site of a run (``beta`` is derived from the
    ROIs and the curves, so it is left out)."""
    return chain_stats({k: v for k, v in run.samples.items() if k != "beta"})


def _run_nuts(
    inputs: dict[str, Any],
    spec: ModelSpec,
    sds: dict[str, float],
    *,
    chains: int,
    warmup: int,
    samples: int,
    seed: int,
    progress: bool,
    target_accept: float,
    max_tree_depth: int,
    warmup_tree_depth: int,
    dense_mass: bool,
    quick: bool,
) -> Chains:
    settings = Settings(
        chains=chains,
        warmup=warmup,
        samples=samples,
        target_accept=target_accept,
        max_tree_depth=max_tree_depth,
        warmup_tree_depth=warmup_tree_depth,
        dense_mass=dense_mass,
        progress_every=max(1, (warmup + samples) // PROGRESS_SEGMENTS) if progress else 0,
        quick_compile=quick,
        segments=PROGRESS_SEGMENTS if progress else 1,
    )
    return run_nuts(_bound(spec, sds), inputs, settings, seed, init_strategy)


class _OrderedELBO(ELBO):  # type: ignore[misc]
    """Trace ELBO (particles averaged) whose terms are summed in trace order.

    NumPyro's ``Trace_ELBO`` sums per-site terms in the iteration order of a ``set`` of site names,
    which follows Python's per-process string hashing: the compiled program then differs from one
    process to the next and XLA's persistent cache never hits. Summing in trace order fixes that.
    """

    def loss_with_mutable_state(
        self, rng_key: Any, param_map: dict[str, Any], model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> Any:
        def one(key: Any) -> Any:
            key_guide, key_model = jax.random.split(key)
            guide_lp, guide_trace = log_density(seed(guide, key_guide), args, kwargs, param_map)
            model_lp, _ = log_density(replay(seed(model, key_model), guide_trace), args, kwargs, param_map)
            return guide_lp - model_lp

        keys = jax.random.split(rng_key, self.num_particles)
        return {"loss": jnp.mean(jax.vmap(one)(keys)), "mutable_state": None}


@lru_cache(maxsize=16)
def _svi_program(
    spec: ModelSpec,
    sds_items: tuple[tuple[str, float], ...],
    steps: int,
    samples: int,
    shapes: tuple[Any, ...],
) -> Any:
    """A jitted SVI run whose data are *arguments*, so equal shapes reuse the compiled program (in this
    process and, through the persistent cache, in later ones).

    The guide is one multivariate normal over every latent site (in unconstrained space) with a full
    covariance. A channel's ROI, half-saturation, shape and decay trade off against each other (a
    table pins combinations of them, not each one), and a mean-field guide, which cannot express
    that, put the true ROI inside its 90% interval for 62% of the channels of the weekly study and
    49% once calibrated; the full-rank guide covers 98% and 88%, with lower mROAS errors and in
    about half the time (one vector instead of a dozen sites; ``docs/validation.md``). The
    covariance has d(d+1)/2 entries for d latent values: about 470 for a weekly table with five
    channels (d = 30), about 4,700 for a daily one with twenty (d = 96).
    """
    model = BoundModel(spec, sds_items)
    guide = AutoMultivariateNormal(model, init_loc_fn=init_strategy, init_scale=0.05)
    # the step size decays 20-fold over the run so the final parameters settle
    decay = 0.05 ** (1.0 / steps)
    optim = ClippedAdam(step_size=lambda i: 0.02 * decay**i, clip_norm=10.0)
    svi = SVI(model, guide, optim, _OrderedELBO(num_particles=4))

    def run(key: Any, inputs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        key_run, key_draw = jax.random.split(key)
        state = svi.init(key_run, inputs)

        def body(i: Any, carry: tuple[Any, Any]) -> tuple[Any, Any]:
            st, losses = carry
            st, loss = svi.update(st, inputs)
            return st, losses.at[i].set(loss)

        state, losses = jax.lax.fori_loop(0, steps, body, (state, jnp.zeros(steps)))
        params = svi.get_params(state)
        draws = Predictive(guide, params=params, num_samples=samples)(key_draw, inputs)
        # the model's sites only: not the guide's own vector of every latent value (``_auto_latent``)
        draws = {k: v for k, v in draws.items() if k not in ("obs", "lift_obs") and not k.startswith("_")}
        derived = Predictive(model, posterior_samples=draws, return_sites=list(DERIVED_SITES))(
            key_draw, inputs
        )
        return losses, {**draws, **derived}

    return jax.jit(run)


def _run_svi(
    inputs: dict[str, Any],
    spec: ModelSpec,
    sds: dict[str, float],
    *,
    steps: int,
    samples: int,
    seed: int,
) -> tuple[dict[str, np.ndarray], bool]:
    program = _svi_program(spec.structure(), tuple(sorted(sds.items())), steps, samples, shapes(inputs))
    losses, draws = program(jax.random.PRNGKey(seed), inputs)
    losses = np.asarray(losses)
    if not np.all(np.isfinite(losses[-max(steps // 10, 1) :])):
        raise FitError(
            "SVI diverged (non-finite loss); use --method nuts or check the data for extreme values"
        )
    tail = losses[-max(steps // 5, 10) :]
    half_a, half_b = np.array_split(tail, 2)
    rows = float(np.sum(inputs["mask"]))
    settled = bool(abs(np.mean(half_a) - np.mean(half_b)) < 0.01 * (abs(np.mean(half_b)) + rows))
    return {k: np.asarray(v) for k, v in draws.items()}, settled


def _prior_revenue(
    inputs: dict[str, Any], spec: ModelSpec, draws: dict[str, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Replicated revenue [N, T] (scaled) of prior draws of every site of the generative model.

    The media go through the compiled function that the posterior's metrics use (same structure and,
    with as many draws, same shapes: nothing new is compiled).
    """
    unit = {k: jnp.asarray(draws[k], jnp.float32) for k in spec.channel_sites() if k != "roi"}
    unit["beta"] = jnp.ones_like(unit["decay"])  # saturated adstock alone; beta follows from the ROI
    sat = np.asarray(media_jit(spec, jnp.asarray(inputs["x"]), unit, 1.0)[0], dtype=float)  # [N, T, C]
    beta = draws["roi"] * np.asarray(inputs["spend_over_y"], dtype=float) / sat.sum(axis=1)
    tpos, four, ctrl = (np.asarray(inputs[k], dtype=float) for k in ("tpos", "four", "ctrl"))
    media_mean = draws["roi"] @ np.asarray(inputs["spend_over_y"], dtype=float) / tpos.shape[0]
    draws = {**draws, "rest_scale": rest_scale(media_mean, float(inputs["base_loc"]), xp=np)}
    mu = baseline_value(spec, draws, tpos, four, ctrl) + np.einsum("ntc,nc->nt", sat, beta)
    return mu + rng.standard_normal(mu.shape) * draws["sigma"][:, None]


def _prior_coverage(
    inputs: dict[str, Any], spec: ModelSpec, sds: dict[str, float], y: np.ndarray, seed: int, n: int
) -> float:
    """Share of periods inside the 90% band of ``n`` draws of the prior predictive.

    The parameters are drawn with NumPy from the very priors the model samples
    (:func:`models.model.site_priors`); a NumPyro ``Predictive`` of the generative model cost 2-3 s
    of compilation per fit (its Beta and Gamma samplers included) for the same distribution
    (``tests/models/test_model.py``).
    """
    rng = np.random.default_rng(seed + 1)
    draws = {name: sp.sample(rng, n) for name, sp in site_priors(inputs, spec, sds).items()}
    return coverage(np.asarray(y, dtype=float), _prior_revenue(inputs, spec, draws, rng))


def check_seed(seed: object) -> int:
    """``seed`` as an int in 0..``SEED_MAX``; ``ValueError`` saying the range otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"`seed` must be a whole number from 0 to {SEED_MAX} (2**32 - 1), got {seed!r}")
    return int(seed)


def _without_tests(data: MMMData, **kw: Any) -> FittedModel:
    """``data`` fitted without lift tests, holdout or checks: what the table alone says of each test
    (the SVI divergence's diagnosis and :func:`check_lift_tests_against_the_table`)."""
    return fit(data, lift_tests=(), holdout_periods=None, checks=False, **kw)


def _lift_conflict(
    diverged: FitError, data: MMMData, tests: tuple[LiftTest, ...], lift_source: str, **kw: Any
) -> BudgetloopError:
    """Why SVI diverged on a table with lift tests. The table is fitted again without them: where
    that fit fails too, the table itself is the problem and ``diverged`` is returned; otherwise each
    test is set against that fit's prediction of it (as NUTS's fits report a test they cannot
    follow, :meth:`models.fitted.LiftCheck.warning`) and an :class:`InputError` names the tests
    furthest from it, worst first."""
    try:
        alone = _without_tests(data, **kw)
    except FitError:
        return diverged
    checks = sorted(
        (LiftCheck(i + 1, t, alone._lift_prediction(t)) for i, t in enumerate(tests)),
        key=lambda c: -abs(c.z),
    )
    named = [c for c in checks if c.warning() is not None] or checks[:1]
    what = " ".join(
        c.warning()
        or f"{c.name()} is the furthest from the table's prediction, {abs(c.z):.1f} standard deviations."
        for c in named
    )
    return InputError(
        "SVI diverged (non-finite loss) with the lift tests but fits the table without them, so the "
        f"tests contradict the table. Without them: {what}",
        file=lift_source,
        row=named[0].number + 1,
        key="incremental_revenue",
        fix="correct or drop the test(s) named (incremental_revenue and spend_delta are totals over "
        "the window, in the table's currency); --method nuts fits with them and reports each one",
    )


def max_holdout_periods(periods: int) -> int:
    """Most rows a holdout may take from a table of ``periods``: a third of it, leaving the refit
    at least ``MIN_PERIODS`` (0 where no holdout fits)."""
    return max(0, min(periods // 3, periods - MIN_PERIODS))


def holdout_room(data: MMMData, periods: int) -> tuple[int, str | None]:
    """How many of the last ``periods`` rows a holdout can take, and why fewer where it cannot.

    The refit learns each channel's curve from the rows it keeps; a channel that first spends
    inside the held-out rows has none there (its ROI would divide by zero spend), so the holdout
    shrinks until every channel spends at least once in the refit's rows (0: no holdout at all).
    """
    first = [int(np.argmax(data.spend[:, j] > 0)) for j in range(len(data.channels))]
    room = max(0, min(periods, data.periods - 1 - max(first, default=0)))
    if room == periods:
        return room, None
    late = [c for c, f in zip(data.channels, first, strict=True) if f >= data.periods - periods]
    first_day = str(data.dates[max(first)])[:10]
    what = f"a holdout of {room} {data.frequency}s" if room else "no holdout"
    return room, (
        f"{what} instead of {periods}: {', '.join(f'`{c}`' for c in late)} first spend(s) inside the "
        f"last {periods} {data.frequency}s (the latest on {first_day}), and the holdout refit needs "
        "every channel's spend in the rows it keeps"
    )


def fit(
    data: MMMData,
    *,
    priors: Priors | None = None,
    lift_tests: Sequence[LiftTest] | None = None,
    method: str = "nuts",
    chains: int = 2,
    warmup: int = 1000,
    samples: int = 1000,
    seed: int = 0,
    progress: bool = False,
    holdout_periods: int | None = None,
    adstock: str = "geometric",
    baseline: str = "multiplicative",
    saturation: str = "hill",
    svi_steps: int = 3000,
    target_accept: float = 0.85,
    max_tree_depth: int = 8,
    warmup_tree_depth: int = WARMUP_TREE_DEPTH,
    dense_mass: bool = True,
    lift_source: str = "<lift tests>",
    retry: bool = True,
    pad_to: Extent | None = None,
    round_shapes: str | None = None,
    checks: bool = True,
) -> FittedModel:
    """Fit the MMM to ``data``; see the module docstrings of :mod:`models.model` and :mod:`models.fitted`.

    A NUTS run with more than 1% divergent transitions is run again once with ``target_accept``
    raised to ``RETRY_TARGET_ACCEPT``, and the run with fewer divergences is kept;
    ``settings["divergence_retry"]`` records the other one. A run whose chains disagree (r-hat over
    ``RHAT_MAX``) after a warmup with capped trees (``warmup_tree_depth``) is run again once with
    the uncapped warmup, and the run with the lower r-hat is kept; ``settings["warmup_retry"]``
    records the other one. ``retry=False`` turns both reruns off. The health gate
    judges the run that is kept.

    ``pad_to`` samples on the model's inputs padded with masked rows and inert lift tests to that
    extent (:func:`models.model.pad_inputs`): the same posterior, from the program compiled for
    inputs of that extent. The holdout refit pads to the fit's own extent, so a fit with a holdout
    compiles one sampler, not two, even when the split drops a lift test. ``round_shapes`` pads
    further, onto the coarse grid of :meth:`models.model.Extent.rounded`, so that inputs of similar
    sizes share compiled programs: ``"all"`` rounds the rows and the lift tests (`budgetloop fit`: a
    table a week longer, or with another test within the grid's step, finds its sampler in XLA's
    persistent cache), ``"tests"`` the lift tests alone (the loop's retrain, whose window has a fixed
    length while its calibration points accumulate); ``None`` samples the exact shapes.
    ``checks=False`` skips the posterior and prior predictive checks and PSIS-LOO (their fields stay
    empty): the holdout refit, whose own diagnostics nobody reads, runs without them.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}", key="--method", fix=f"use one of {METHODS}")
    seed = check_seed(seed)
    # what a refit of this fit repeats: the holdout's, and the one that tests a diverged SVI's lift tests
    refit: dict[str, Any] = {
        "method": method,
        "chains": chains,
        "warmup": warmup,
        "samples": samples,
        "seed": seed,
        "adstock": adstock,
        "baseline": baseline,
        "saturation": saturation,
        "svi_steps": svi_steps,
        "target_accept": target_accept,
        "max_tree_depth": max_tree_depth,
        "warmup_tree_depth": warmup_tree_depth,
        "dense_mass": dense_mass,
        "retry": retry,
    }
    if round_shapes not in ROUND_SHAPES:
        raise ValueError(f"`round_shapes` must be one of {ROUND_SHAPES}, got {round_shapes!r}")
    for name, value, low in (("chains", chains, 1), ("warmup", warmup, 1), ("samples", samples, 10)):
        if value < low:
            raise InputError(f"`{name}` must be >= {low}, got {value}", key=f"--{name}")
    if holdout_periods is not None:
        most = max_holdout_periods(data.periods)
        if not 1 <= holdout_periods <= most:
            raise InputError(
                f"holdout of {holdout_periods} periods out of {data.periods}",
                key="holdout_periods",
                fix=(
                    f"use between 1 and {most} periods (the refit keeps at least {MIN_PERIODS})"
                    if most >= 1
                    else f"fit without a holdout: {data.periods} rows leave none to spare"
                ),
            )
    priors = priors or Priors()
    started = time.perf_counter()
    if baseline not in BASELINES:
        raise InputError(f"unknown baseline {baseline!r}", key="--baseline", fix=f"use one of {BASELINES}")
    if adstock not in ADSTOCKS:
        raise InputError(f"unknown adstock {adstock!r}", key="--adstock", fix=f"use one of {ADSTOCKS}")
    if saturation not in SATURATIONS:
        raise InputError(
            f"unknown saturation {saturation!r}", key="--saturation", fix=f"use one of {SATURATIONS}"
        )
    priors.check_saturation(saturation)
    spec = ModelSpec.for_data(data, adstock=adstock, baseline=baseline, saturation=saturation)
    tests = tuple(lift_tests or ())
    inputs = model_inputs(data, spec, priors, tests, lift_source=lift_source)
    exact = Extent.of(inputs)
    extent = pad_to or exact
    if round_shapes is not None:
        extent = extent.rounded(periods=round_shapes == "all")
    sampled = inputs if extent == exact else pad_inputs(inputs, extent)
    sds = _scalar_sds(priors)
    quick = method == "nuts" and quick_compile(sampled)  # the sampler's compile, recorded below

    svi_ok: bool | None = None
    t_sample = time.perf_counter()
    retried: dict[str, Any] | None = None
    warmup_retry: dict[str, Any] | None = None
    if method == "nuts":
        nuts_kw: dict[str, Any] = {
            "chains": chains,
            "warmup": warmup,
            "samples": samples,
            "seed": seed,
            "progress": progress,
            "max_tree_depth": max_tree_depth,
            "warmup_tree_depth": warmup_tree_depth,
            "dense_mass": dense_mass,
            "quick": quick,
        }
        run = _run_nuts(sampled, spec, sds, target_accept=target_accept, **nuts_kw)
        first_div = int(run.diverging.sum())
        if retry and target_accept < RETRY_TARGET_ACCEPT and first_div > DIVERGENCE_MAX * run.diverging.size:
            # divergences mark curvature the step size cannot follow: smaller steps usually cure them
            # (Stan's advice, "raise adapt_delta"); one automatic retry, the run not kept in the settings
            again = _run_nuts(sampled, spec, sds, target_accept=RETRY_TARGET_ACCEPT, **nuts_kw)
            again_div = int(again.diverging.sum())
            if again_div < first_div:  # the retry helped: keep it
                retried = {"target_accept": target_accept, "divergences": first_div}
                run, target_accept = again, RETRY_TARGET_ACCEPT
            else:  # a posterior it cannot cure is judged on the better, first run
                retried = {"target_accept": RETRY_TARGET_ACCEPT, "divergences": again_div}
        rhat, ess, tail, worst = _chain_stats(run)
        if retry and warmup_tree_depth < max_tree_depth and rhat is not None and rhat > RHAT_MAX:
            # a chain whose capped warmup (models.sampler.WARMUP_TREE_DEPTH) left it adapted to the
            # wrong scales: one run with the uncapped warmup, kept where its chains agree better
            nuts_kw["warmup_tree_depth"] = max_tree_depth
            again = _run_nuts(sampled, spec, sds, target_accept=target_accept, **nuts_kw)
            again_stats = _chain_stats(again)
            if again_stats[0] is not None and again_stats[0] < rhat:
                warmup_retry = {"warmup_tree_depth": warmup_tree_depth, "r_hat_max": rhat}
                run, warmup_tree_depth = again, max_tree_depth
                rhat, ess, tail, worst = again_stats
            else:
                warmup_retry = {"warmup_tree_depth": max_tree_depth, "r_hat_max": again_stats[0]}
        grouped = run.samples
        flat = {k: v.reshape((-1, *v.shape[2:])) for k, v in grouped.items()}
        n_div = int(run.diverging.sum())
        transitions = int(run.diverging.size)
        bfmi_min = bfmi(run.energy)
    else:
        try:
            flat, svi_ok = _run_svi(sampled, spec, sds, steps=svi_steps, samples=samples * chains, seed=seed)
        except FitError as exc:
            if not tests or not checks:  # the holdout refit's tests are a subset: not renumbered here
                raise
            raise _lift_conflict(
                exc, data, tests, lift_source, priors=priors, round_shapes=round_shapes, **refit
            ) from None
        rhat = ess = tail = bfmi_min = None
        worst = None
        n_div = transitions = 0
    timings = {"setup": round(t_sample - started, 3), "sample": round(time.perf_counter() - t_sample, 3)}
    for k, v in flat.items():
        if not np.all(np.isfinite(v)):
            raise FitError(
                f"the posterior of `{k}` holds non-finite values: the model cannot be fitted to this data"
            )

    fm = FittedModel(
        data=data,
        spec=spec,
        priors=priors,
        draws={k: np.asarray(v, dtype=float) for k, v in flat.items()},
        diagnostics=judge(  # provisional: coverage filled in below
            method=method,
            chains=chains,
            draws=int(flat["roi"].shape[0]),
            r_hat_max=rhat,
            ess_bulk_min=ess,
            ess_tail_min=tail,
            divergences=n_div,
            transitions=transitions,
            bfmi_min=bfmi_min,
            ppc_coverage_90=None,
            prior_ppc_coverage_90=None,
            fit_seconds=0.0,
            worst_parameter=worst,
            svi_converged=svi_ok,
        ),
        method=method,
        seed=seed,
        # what ran: an SVI fit lists its optimisation (and whether its loss settled), not the
        # sampler's settings it never used, and the reverse
        settings={
            "chains": chains,
            "samples": samples,
            "adstock": adstock,
            "baseline": baseline,
            "saturation": saturation,
            **(
                {"svi_steps": svi_steps, "svi_converged": svi_ok}
                if method == "svi"
                else {
                    "warmup": warmup,
                    "target_accept": target_accept,
                    "max_tree_depth": max_tree_depth,
                    "warmup_tree_depth": warmup_tree_depth,
                    "dense_mass": dense_mass,
                    "divergence_retry": retried,
                    "warmup_retry": warmup_retry,
                }
            ),
            "round_shapes": round_shapes,
            "quick_compile": quick,
        },
        lift_tests=tests,
        versions=library_versions(),
    )
    t_post = time.perf_counter()
    ppc = prior_ppc = elpd = None
    if checks:
        ppc = coverage(data.y, fm.posterior_predictive(seed))
        prior_ppc = _prior_coverage(inputs, spec, sds, inputs["y"], seed, fm.n_draws)
        elpd = loo(fm.log_likelihood())
    timings["checks"] = round(time.perf_counter() - t_post, 3)
    holdout = None
    t_hold = time.perf_counter()
    if holdout_periods:
        holdout_periods, note = holdout_room(data, holdout_periods)
        if note is not None:  # kept with the fit (FittedModel.warnings reads it back)
            fm.settings["holdout_note"] = note
    if holdout_periods:
        if progress:  # the refit's progress starts again from its first warmup iteration: say why
            print(
                f"  holdout: refitting without the last {holdout_periods} {data.frequency}s to predict them",
                file=sys.stderr,
                flush=True,
            )
        holdout = _holdout(
            data,
            holdout_periods,
            extent=extent,
            priors=priors,
            tests=tests,
            progress=progress,  # the same program as the fit's, whose progress runs it in segments
            **refit,
        )
    fm.diagnostics = judge(
        method=method,
        chains=chains,
        draws=fm.n_draws,
        r_hat_max=rhat,
        ess_bulk_min=ess,
        ess_tail_min=tail,
        divergences=n_div,
        transitions=transitions,
        bfmi_min=bfmi_min,
        ppc_coverage_90=ppc,
        prior_ppc_coverage_90=prior_ppc,
        fit_seconds=round(t_hold - started, 3),
        worst_parameter=worst,
        svi_converged=svi_ok,
        loo=elpd,
    )
    fm.holdout = holdout
    timings["holdout"] = round(time.perf_counter() - t_hold, 3)
    fm.settings["timings"] = timings
    return fm


def _holdout(
    data: MMMData,
    periods: int,
    *,
    extent: Extent,
    priors: Priors,
    tests: tuple[LiftTest, ...],
    **kw: Any,
) -> Holdout:
    """Refit without the last ``periods`` rows and predict them from their actual spend and controls;
    the refit's inputs are padded to ``extent``, the full fit's, so that it runs the same program."""
    train = data.head(data.periods - periods)
    last = train.dates[-1].astype("datetime64[D]")
    kept = tuple(t for t in tests if t.start <= last)
    clipped = tuple(
        t
        if t.end <= last
        else type(t)(t.channel, t.start, last, t.spend_delta, t.incremental_revenue, t.incremental_revenue_se)
        for t in kept
    )
    # a test cut by the split no longer matches its measurement: keep only those fully inside
    inside = tuple(t for t, c in zip(kept, clipped, strict=True) if t is c)
    # padded back to the full table's length and tests: the refit reuses the fit's compiled sampler
    fm = fit(train, priors=priors, lift_tests=inside, holdout_periods=None, pad_to=extent, checks=False, **kw)
    rest = slice(data.periods - periods, data.periods)
    draws = fm.predict(data.spend[rest], data.controls[rest], data.dates[rest], seed=kw.get("seed", 0))
    expected = fm.predict(data.spend[rest], data.controls[rest], data.dates[rest], noise=False).mean(0)
    return Holdout(
        periods=periods, mape=mape(data.y[rest], expected), coverage_90=coverage(data.y[rest], draws)
    )


def check_lift_tests_against_the_table(
    fm: FittedModel, *, svi_steps: int = 3000
) -> tuple[TableAloneCheck, ...]:
    """Each of ``fm``'s lift tests against a fit of the same table, structure and priors without any
    test: a quick SVI fit (its full-rank guide held 98% of the true ROIs in the recovery study,
    ``docs/validation.md``), 1,000 draws. Raises :class:`FitError` where that fit fails or its loss
    does not settle (its predictions would then say nothing)."""
    if not fm.lift_tests:
        return ()
    spec = fm.spec
    alone = _without_tests(
        fm.data,
        priors=fm.priors,
        method="svi",
        chains=2,
        samples=500,
        seed=fm.seed,
        adstock=spec.adstock,
        baseline=spec.baseline,
        saturation=spec.saturation,
        svi_steps=svi_steps,
        round_shapes=fm.settings.get("round_shapes"),
    )
    if not alone.settings["svi_converged"]:
        raise FitError(f"the fit of the table alone did not settle in {svi_steps} SVI steps")
    roi_alone, roi_cal = alone.channel_metrics().roi, fm.channel_metrics().roi
    out = []
    for i, test in enumerate(fm.lift_tests):
        j = fm.channels.index(test.channel)
        out.append(TableAloneCheck(i + 1, test, alone._lift_prediction(test), roi_alone[:, j], roi_cal[:, j]))
    return tuple(out)


__all__ = [
    "METHODS",
    "SEED_MAX",
    "check_lift_tests_against_the_table",
    "check_seed",
    "enable_compilation_cache",
    "fit",
    "holdout_room",
    "library_versions",
    "max_holdout_periods",
]
