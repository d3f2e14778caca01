"""NUTS chains as one compiled program per model structure and data shape, the data as arguments.

NumPyro's ``MCMC`` compiles its warmup and its sampling phases apart, searches its starting point
with a compiled retry loop, and its parallel (``pmap``) chains close over the data, so every new
table is compiled again: seconds, more than the sampling of a weekly MMM takes. This driver runs
NumPyro's own NUTS kernel (``numpyro.infer.hmc``: windowed step-size and mass-matrix adaptation, the
multinomial NUTS of Betancourt) but builds the whole run (the start, warmup, draws and the
constrained value of every site) as one function of ``(keys, inputs)``:

* compiled once per model structure, settings and input shapes, then reused by every fit of that
  shape in the process, and across processes through XLA's persistent cache
  (``models.fit.enable_compilation_cache``);
* chains run in parallel across devices (the ``"pmap"`` layout, one host device per CPU core, see
  ``models/__init__.py``; written as a ``jit`` sharded over the chains, which unlike ``pmap`` takes
  compiler options) or vectorised on one accelerator with ``vmap``; with more chains than devices
  each device runs its share one after the other;
* on a small table the program can compile with :data:`QUICK_COMPILE` (``Settings.quick_compile``),
  which trades code that no table of that size would notice for seconds of compiling;
* each chain starts from the model's init strategy (deterministic, no sampling code in the program)
  jittered by up to ``jitter`` in unconstrained space, so chains start apart and r-hat means
  something; a jittered start whose density is not finite falls back to the unjittered one.

Progress, when asked for, is reported from inside the compiled loop every ``progress_every``
iterations through a host callback.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from numpyro.distributions import biject_to
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.hmc import hmc
from numpyro.infer.util import get_potential_fn

Array = Any
Model = Callable[..., None]  # model(inputs); hashable (a frozen dataclass or a module-level function)


@dataclass(frozen=True)
class Settings:
    chains: int
    warmup: int
    samples: int
    target_accept: float = 0.85
    max_tree_depth: int = 8
    dense_mass: bool = False
    jitter: float = 0.5
    progress_every: int = 0  # 0: silent
    how: str | None = None  # "pmap" or "vmap"; None: by the backend (:func:`layout`)
    quick_compile: bool = False  # compile with :data:`QUICK_COMPILE` (on a CPU)


#: XLA options that make the CPU compiler do about a quarter less work on the sampler: its older
#: loop emitters instead of the MLIR fusion emitters, and LLVM without its most expensive passes.
#: Measured on 2 cores (docs/validation.md, section 5): XLA compiles the program of a weekly
#: 104 x 6 table in 4.4 s instead of 5.7 s, which then samples as fast; a daily 730 x 10 one samples
#: 11% slower, more than the 1.9 s it saves. Worth it where compiling outweighs sampling.
QUICK_COMPILE: dict[str, Any] = {
    "xla_cpu_use_fusion_emitters": False,
    "xla_llvm_disable_expensive_passes": True,
}


def compiler_options(settings: Settings) -> dict[str, Any] | None:
    """The XLA options the sampler compiles with: :data:`QUICK_COMPILE` when asked for on a CPU."""
    return dict(QUICK_COMPILE) if settings.quick_compile and jax.default_backend() == "cpu" else None


@dataclass(frozen=True)
class Chains:
    """Draws grouped by chain: every array is [chains, samples, ...]."""

    samples: dict[str, np.ndarray]
    diverging: np.ndarray
    energy: np.ndarray
    num_steps: np.ndarray
    step_size: np.ndarray  # [chains], after warmup


def layout(chains: int, how: str | None = None) -> tuple[str, int]:
    """(``"pmap"`` or ``"vmap"``, devices used): chains across CPU devices, or vectorised on one
    accelerator. On CPU the device count is the largest divisor of ``chains`` that is available.
    ``how`` forces one of the two (the accelerator's layout can then be tested on a CPU)."""
    if how not in (None, "pmap", "vmap"):
        raise ValueError(f"`how` must be 'pmap', 'vmap' or None, got {how!r}")
    if how == "vmap" or (how is None and jax.default_backend() != "cpu"):
        return "vmap", 1
    available = min(chains, jax.local_device_count())
    return "pmap", max(d for d in range(1, available + 1) if chains % d == 0)


def latent_sites(model: Model, inputs: Any, init_strategy: Any) -> dict[str, Any]:
    """The model's latent sample sites and the bijection of each onto its support (shapes only: the
    model is traced abstractly, nothing is computed)."""
    box: dict[str, Any] = {}

    def probe(inputs: Any) -> int:
        tr = trace(substitute(seed(model, 0), substitute_fn=init_strategy)).get_trace(inputs)
        box.update(
            {
                name: biject_to(site["fn"].support)
                for name, site in tr.items()
                if site["type"] == "sample" and not site["is_observed"]
            }
        )
        return 0

    jax.eval_shape(probe, inputs)
    return box


def _start(model: Model, inputs: Any, transforms: dict[str, Any], init_strategy: Any) -> dict[str, Array]:
    """Unconstrained starting point from a deterministic per-site init strategy."""
    tr = trace(substitute(seed(model, 0), substitute_fn=init_strategy)).get_trace(inputs)
    return {name: t.inv(tr[name]["value"]) for name, t in transforms.items()}


def _progress(settings: Settings) -> Callable[[Array, Array], None]:
    total = settings.warmup + settings.samples
    lock = threading.Lock()

    def report(i: Array, steps: Array) -> None:
        i = int(i)
        phase = "warmup" if i <= settings.warmup else "sample"
        with lock:
            print(f"  NUTS {phase} {i}/{total}, {int(steps)} leapfrog steps", file=sys.stderr, flush=True)

    return report


def build(
    model: Model, settings: Settings, init_strategy: Any, transforms: dict[str, Any]
) -> Callable[[Array, Any], Any]:
    """The run of ``settings.chains`` chains as a function ``(keys [chains, 2], inputs) -> outputs``."""
    how, devices = layout(settings.chains, settings.how)
    pe_gen, constrain_gen = get_potential_fn(model, transforms, replay_model=True, dynamic_args=True)
    total = settings.warmup + settings.samples
    report = _progress(settings) if settings.progress_every else None

    def one_chain(key: Array, inputs: Any) -> Any:
        key_jitter, key_run = jax.random.split(key)
        # NUTS moves one flat vector: its tree building applies every step to each leaf of the
        # position, so a model with ten sites compiled ten copies of that machinery (about twice the
        # compile time of the same model seen as one vector, measured); the sites are unravelled
        # inside the potential
        z0, unravel = ravel_pytree(_start(model, inputs, transforms, init_strategy))

        def flat_potential(inputs: Any) -> Callable[[Array], Array]:
            potential = pe_gen(inputs)
            return lambda q: potential(unravel(q))

        potential = flat_potential(inputs)
        jittered = z0 + settings.jitter * jax.random.uniform(key_jitter, z0.shape, minval=-1.0, maxval=1.0)
        ok = jnp.isfinite(potential(jittered))
        z = jnp.where(ok, jittered, z0)
        init_kernel, sample_kernel = hmc(potential_fn_gen=flat_potential, algo="NUTS")
        state = init_kernel(
            z,
            settings.warmup,
            target_accept_prob=settings.target_accept,
            max_tree_depth=settings.max_tree_depth,
            dense_mass=settings.dense_mass,
            model_args=(inputs,),
            rng_key=key_run,
        )
        constrain_sites = constrain_gen(inputs)

        def constrain(q: Array) -> Any:
            return constrain_sites(unravel(q))

        proto = jax.eval_shape(constrain, state.z)
        buffers = (
            jax.tree.map(lambda a: jnp.zeros((settings.samples, *a.shape), a.dtype), proto),
            jnp.zeros(settings.samples, bool),
            jnp.zeros(settings.samples, state.energy.dtype),
            jnp.zeros(settings.samples, jnp.int32),
        )

        def body(i: Array, carry: Any) -> Any:
            state, bufs, step_size = carry
            state = sample_kernel(state, model_args=(inputs,))
            if report is not None:
                jax.lax.cond(
                    (i + 1) % settings.progress_every == 0,
                    lambda: jax.debug.callback(report, i + 1, state.num_steps),
                    lambda: None,
                )
            step_size = jnp.where(i == settings.warmup - 1, state.adapt_state.step_size, step_size)

            def store(bufs: Any) -> Any:
                j = i - settings.warmup
                values = (constrain(state.z), state.diverging, state.energy, state.num_steps)
                return jax.tree.map(lambda b, v: b.at[j].set(v), bufs, values)

            bufs = jax.lax.cond(i >= settings.warmup, store, lambda b: b, bufs)
            return state, bufs, step_size

        _, bufs, step_size = jax.lax.fori_loop(0, total, body, (state, buffers, state.adapt_state.step_size))
        return (*bufs, step_size)

    options = compiler_options(settings)
    if how == "vmap":
        return jax.jit(jax.vmap(one_chain, in_axes=(0, None)), compiler_options=options)

    def device(keys: Array, inputs: Any) -> Any:  # this device's chains, one after the other
        return jax.lax.map(lambda k: one_chain(k, inputs), keys)

    # the chains' axis split over the devices, the inputs replicated: what ``pmap`` does, written
    # as a sharded ``jit`` because only ``jit`` takes compiler options. NumPyro's kernel mixes
    # per-chain values with constants in its branches, which the replication check would reject.
    mesh = Mesh(np.array(jax.devices()[:devices]), ("chains",))
    spread = jax.shard_map(
        device, mesh=mesh, in_specs=(P("chains"), P()), out_specs=P("chains"), check_vma=False
    )
    return jax.jit(spread, compiler_options=options)


_PROGRAMS: dict[tuple[Any, ...], Callable[[Array, Any], Any]] = {}
_PROGRAMS_LOCK = threading.Lock()
_MAX_PROGRAMS = 8


def shapes(inputs: Any) -> tuple[Any, ...]:
    """The inputs' tree structure and leaf shapes and dtypes: a program traced for one shape is never
    reused for another."""
    leaves, tree = jax.tree_util.tree_flatten(inputs)
    return (tree, *((np.shape(leaf), np.asarray(leaf).dtype.str) for leaf in leaves))


def program(model: Model, settings: Settings, init_strategy: Any, inputs: Any) -> Callable[[Array, Any], Any]:
    """The cached program for this model, settings, init strategy and input shapes."""
    key = (model, settings, init_strategy, shapes(inputs))
    with _PROGRAMS_LOCK:
        found = _PROGRAMS.get(key)
        if found is None:
            found = build(model, settings, init_strategy, latent_sites(model, inputs, init_strategy))
            if len(_PROGRAMS) >= _MAX_PROGRAMS:
                _PROGRAMS.pop(next(iter(_PROGRAMS)))
            _PROGRAMS[key] = found
    return found


def run_nuts(model: Model, inputs: Any, settings: Settings, seed: int, init_strategy: Any) -> Chains:
    """Run ``settings.chains`` NUTS chains of ``model(inputs)``; draws of every site, by chain."""
    run = program(model, settings, init_strategy, inputs)
    keys = jax.random.split(jax.random.PRNGKey(seed), settings.chains)
    samples, diverging, energy, num_steps, step_size = run(keys, inputs)
    return Chains(
        samples={k: np.asarray(v) for k, v in samples.items()},
        diverging=np.asarray(diverging),
        energy=np.asarray(energy),
        num_steps=np.asarray(num_steps),
        step_size=np.asarray(step_size),
    )
