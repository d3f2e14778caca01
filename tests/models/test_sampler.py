"""The NUTS driver on models with known posteriors, and its compiled-program cache."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import init_to_mean

from models.sampler import QUICK_COMPILE, Settings, compiler_options, layout, program, run_nuts


def normal_mean(inputs: dict[str, jnp.ndarray]) -> None:
    """y_i ~ Normal(mu, 2), mu ~ Normal(0, 10); plus a positive scale with a LogNormal prior only."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    numpyro.sample("tau", dist.LogNormal(0.5, 0.3))
    numpyro.sample("y", dist.Normal(mu, 2.0), obs=inputs["y"])


def posterior(y: np.ndarray) -> tuple[float, float]:
    precision = 1 / 10.0**2 + len(y) / 2.0**2
    return float(y.sum() / 2.0**2 / precision), float(precision**-0.5)


@pytest.mark.parametrize("quick", [False, True], ids=["thorough-compile", "quick-compile"])
def test_draws_match_the_conjugate_posterior_and_the_prior_of_an_unobserved_site(quick: bool) -> None:
    y = np.random.default_rng(0).normal(3.0, 2.0, size=40).astype(np.float32)
    settings = Settings(chains=2, warmup=400, samples=1000, quick_compile=quick)
    chains = run_nuts(normal_mean, {"y": y}, settings, 0, init_to_mean)
    assert chains.samples["mu"].shape == (2, 1000)
    mean, sd = posterior(y)
    mu = chains.samples["mu"].ravel()
    assert abs(mu.mean() - mean) < 0.1 * sd * 4  # Monte Carlo error of ~2000 near-independent draws
    assert abs(mu.std() / sd - 1) < 0.1
    log_tau = np.log(chains.samples["tau"].ravel())
    assert abs(log_tau.mean() - 0.5) < 0.05 and abs(log_tau.std() / 0.3 - 1) < 0.1
    assert chains.diverging.shape == (2, 1000) and not chains.diverging.any()
    assert np.all(chains.num_steps >= 1) and np.all(chains.step_size > 0)


def test_a_seed_reproduces_its_draws_and_chains_start_apart() -> None:
    y = {"y": np.linspace(-1.0, 1.0, 20, dtype=np.float32)}
    settings = Settings(chains=2, warmup=50, samples=50, jitter=1.0)
    a = run_nuts(normal_mean, y, settings, 7, init_to_mean)
    b = run_nuts(normal_mean, y, settings, 7, init_to_mean)
    c = run_nuts(normal_mean, y, settings, 8, init_to_mean)
    np.testing.assert_array_equal(a.samples["mu"], b.samples["mu"])
    assert not np.array_equal(a.samples["mu"], c.samples["mu"])
    assert not np.array_equal(a.samples["mu"][0], a.samples["mu"][1])


def test_one_compiled_program_per_shape_reused_for_new_data() -> None:
    settings = Settings(chains=2, warmup=20, samples=20)
    first = program(normal_mean, settings, init_to_mean, {"y": np.zeros(30, np.float32)})
    again = program(normal_mean, settings, init_to_mean, {"y": np.ones(30, np.float32)})
    other = program(normal_mean, settings, init_to_mean, {"y": np.zeros(31, np.float32)})
    assert first is again
    assert other is not first


def test_the_quick_compile_is_a_program_of_its_own_with_its_own_options() -> None:
    """The compiler's options are the program's, not the process's: a quick and a thorough program
    of the same model and shapes live side by side, and only the quick one (on a CPU) carries
    :data:`QUICK_COMPILE`."""
    inputs = {"y": np.zeros(30, np.float32)}
    thorough = Settings(chains=2, warmup=20, samples=20)
    quick = Settings(chains=2, warmup=20, samples=20, quick_compile=True)
    assert program(normal_mean, quick, init_to_mean, inputs) is not program(
        normal_mean, thorough, init_to_mean, inputs
    )
    assert compiler_options(thorough) is None
    assert compiler_options(quick) == (QUICK_COMPILE if jax.default_backend() == "cpu" else None)


@pytest.mark.parametrize("how", ["pmap", "vmap"])
def test_a_run_in_segments_reports_progress_and_draws_the_same_posterior(
    how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Progress comes from the host between the calls of one segment program, not from a callback
    inside it (which XLA's persistent cache refuses to store). The segments continue each other's
    chains: they adapt the step size a run in one call adapts, and draw the same posterior (not
    the same draws: the two programs' floating point differs, and a chain amplifies that)."""
    y = np.random.default_rng(0).normal(3.0, 2.0, size=40).astype(np.float32)
    whole = Settings(chains=2, warmup=400, samples=1000, how=how)
    parts = Settings(chains=2, warmup=400, samples=1000, how=how, segments=5, progress_every=200)
    one = run_nuts(normal_mean, {"y": y}, whole, 0, init_to_mean)
    seg = run_nuts(normal_mean, {"y": y}, parts, 0, init_to_mean)
    assert seg.samples["mu"].shape == (2, 1000) and seg.num_steps.shape == (2, 1000)
    np.testing.assert_allclose(seg.step_size, one.step_size, rtol=0.05)
    mean, sd = posterior(y)
    mu = seg.samples["mu"].ravel()
    assert abs(mu.mean() - mean) < 0.1 * sd * 4 and abs(mu.std() / sd - 1) < 0.1
    assert not np.array_equal(seg.samples["mu"][0], seg.samples["mu"][1])
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[2] for line in lines] == [
        "280/1400,",
        "560/1400,",
        "840/1400,",
        "1120/1400,",
        "1400/1400,",
    ]
    assert lines[0].split()[1] == "warmup" and lines[-1].split()[1] == "sample"
    run = program(normal_mean, parts, init_to_mean, {"y": y})
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    states = run.blank(keys, {"y": y})
    hlo = run.segment.lower(keys, states, np.int32(0), np.int32(run.length), {"y": y}).as_text()  # type: ignore[attr-defined]
    assert "callback" not in hlo


def test_chains_are_spread_over_devices_that_divide_them() -> None:
    how, devices = layout(4)
    assert how in ("pmap", "vmap")
    assert 4 % devices == 0 and devices >= 1
    assert layout(1)[1] == 1


def test_chains_vectorised_on_one_device_draw_the_posterior() -> None:
    """An accelerator runs the chains vectorised on one device (``vmap``) where a CPU spreads them
    over its cores (``pmap``); that layout is forced here, so this CPU-only suite checks the code a
    GPU runs: its draws match the conjugate posterior and its chains are distinct. (Its floating
    point differs from the CPU layout's, so the draws are not equal to them, only alike.)"""
    y = np.random.default_rng(0).normal(3.0, 2.0, size=40).astype(np.float32)
    settings = Settings(chains=2, warmup=400, samples=1000, how="vmap")
    chains = run_nuts(normal_mean, {"y": y}, settings, 0, init_to_mean)
    assert layout(2, "vmap") == ("vmap", 1)
    assert chains.samples["mu"].shape == (2, 1000) and chains.step_size.shape == (2,)
    assert not np.array_equal(chains.samples["mu"][0], chains.samples["mu"][1])
    mean, sd = posterior(y)
    mu = chains.samples["mu"].ravel()
    assert abs(mu.mean() - mean) < 0.1 * sd * 4 and abs(mu.std() / sd - 1) < 0.1
    assert not chains.diverging.any()
    with pytest.raises(ValueError, match="`how`"):
        layout(2, "threads")


def badly_scaled(inputs: dict[str, jnp.ndarray]) -> None:
    """Two independent normals a thousand times apart in scale: with the identity mass matrix that
    a warmup starts from, NUTS's step fits the narrow one and its trees run long to cross the wide."""
    numpyro.sample("wide", dist.Normal(0.0, 1.0))
    numpyro.sample("narrow", dist.Normal(0.0, 1e-3))


@pytest.mark.parametrize("depth", [3, 8])
def test_the_warmup_caps_its_trees_and_sampling_does_not(depth: int) -> None:
    """``warmup_tree_depth`` caps the leapfrog steps of a warmup iteration at 2**depth - 1 (those of
    the first iterations, before any mass matrix is estimated, run to the cap); the draws that
    follow use ``max_tree_depth`` and sample the posterior."""
    inputs = {"y": np.zeros(1, np.float32)}
    settings = Settings(chains=1, warmup=150, samples=600, warmup_tree_depth=depth, segments=5)
    run = program(badly_scaled, settings, init_to_mean, inputs)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    _, out = run.segment(keys, run.blank(keys, inputs), np.int32(0), np.int32(run.length), inputs)
    warmup_steps = np.asarray(out[3])[0, :60]  # the first 60 warmup iterations
    assert warmup_steps.max() == 2**depth - 1, warmup_steps
    chains = run_nuts(badly_scaled, inputs, settings, 0, init_to_mean)
    assert abs(chains.samples["wide"].std() - 1.0) < 0.15
    assert abs(chains.samples["narrow"].std() / 1e-3 - 1.0) < 0.15


def walled(inputs: dict[str, jnp.ndarray]) -> None:
    """A normal cut to |x| < 0.05: the density is zero (log density -inf) outside."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("wall", jnp.where(jnp.abs(x) < 0.05, 0.0, -jnp.inf))


@pytest.mark.parametrize(("model", "jittered"), [(normal_mean, True), (walled, False)])
def test_a_jittered_start_outside_the_support_falls_back_to_the_unjittered_one(
    model: Any, jittered: bool
) -> None:
    """Starts are jittered by up to ``jitter`` around the init strategy's point (here 0); where the
    density there is not finite, the chain starts from that point itself, with the finite density
    and gradient NUTS is handed."""
    inputs = {"y": np.zeros(3, np.float32)}
    settings = Settings(chains=2, warmup=50, samples=50, jitter=1.0, segments=2)
    run = program(model, settings, init_to_mean, inputs)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    states, _ = run.segment(keys, run.blank(keys, inputs), np.int32(0), np.int32(0), inputs)
    start = np.asarray(states.z)[:, 0]  # the first site's unconstrained value, per chain
    assert np.all(start != 0.0) if jittered else np.all(start == 0.0), start
    assert np.all(np.isfinite(np.asarray(states.potential_energy)))
    assert np.all(np.isfinite(np.asarray(states.z_grad)))
    chains = run_nuts(model, inputs, settings, 0, init_to_mean)
    if not jittered:
        assert np.all(np.abs(chains.samples["x"]) < 0.05)
