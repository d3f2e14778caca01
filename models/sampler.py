"""NUTS chains as compiled programs per model structure and data shape, the data as arguments.

NumPyro's ``MCMC`` compiles its warmup and its sampling phases apart, searches its starting point
with a compiled retry loop, and its parallel (``pmap``) chains close over the data, so every new
table is compiled again: seconds, more than the sampling of a weekly MMM takes. This driver runs
NumPyro's own NUTS kernel (``numpyro.infer.hmc``: windowed step-size and mass-matrix adaptation, the
multinomial NUTS of Betancourt) but builds the run (the start, warmup, draws and the constrained
value of every site) as functions of the data (:class:`Program`):

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

A run that reports progress is split into segments (``Settings.segments``): one program called
once per segment, with the iteration it starts from as an argument (:class:`Program`), the host
reporting between calls. A host callback inside the program would keep it out of XLA's persistent
cache. A run without progress is one call of a program with static loop bounds, which compiles
faster (:data:`PROGRESS_SEGMENTS`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from numpyro.distributions import biject_to
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.hmc import hmc
from numpyro.infer.util import ParamInfo, get_potential_fn

Array = Any
Model = Callable[..., None]  # model(inputs); hashable (a frozen dataclass or a module-level function)


#: The deepest NUTS tree during warmup: at most 2**6 - 1 = 63 leapfrog steps per warmup iteration
#: (sampling keeps ``max_tree_depth``). Until the first windows have estimated the mass matrix, the
#: sampler moves with the identity (then a dense estimate from 25 draws) through a posterior whose
#: scales span two orders of magnitude (the baseline's level is known to a fraction of a percent, a
#: channel's carry-over to tens of percent): its step fits the tightest direction and the trees ran
#: to the 255-step limit for the first 160 iterations, half of a weekly fit's leapfrog steps.
#: Capped, the warmup lands on as good a mass matrix (the draws' steps per iteration unchanged,
#: their effective sample sizes about the same) and a fit samples 25-45% faster
#: (docs/validation.md, section 5). A cap of 5 was faster still but left one of the recovery
#: study's 40 weekly fits with chains that disagreed (r-hat 1.18); ``models.fit.fit`` reruns such a
#: fit once with the uncapped warmup.
WARMUP_TREE_DEPTH = 6


@dataclass(frozen=True)
class Settings:
    chains: int
    warmup: int
    samples: int
    target_accept: float = 0.85
    max_tree_depth: int = 8
    warmup_tree_depth: int = WARMUP_TREE_DEPTH
    dense_mass: bool = False
    jitter: float = 0.5
    progress_every: int = 0  # 0: silent
    how: str | None = None  # "pmap" or "vmap"; None: by the backend (:func:`layout`)
    quick_compile: bool = False  # compile with :data:`QUICK_COMPILE` (on a CPU)
    segments: int = 1  # calls a run is split into; progress is reported between them


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


def _progress(settings: Settings) -> Callable[[int, float], None]:
    total = settings.warmup + settings.samples

    def report(done: int, steps: float) -> None:
        phase = "warmup" if done <= settings.warmup else "sample"
        print(
            f"  NUTS {phase} {done}/{total}, {steps:.0f} leapfrog steps per iteration",
            file=sys.stderr,
            flush=True,
        )

    return report


#: the segments of a run that reports progress: one report per tenth. A run in one segment compiles
#: faster (its loop bounds are static, it takes no state in; on the weekly bench table 4.7-5.1 s of
#: XLA against 5.5-5.9 s, and the whole fit from nothing 1.3-1.5 s faster), so runs without
#: progress keep it.
PROGRESS_SEGMENTS = 10


@dataclass(frozen=True)
class Program:
    """A compiled run, in segments: ``segment(keys, states, first, count, inputs) -> (states,
    outputs)`` advances every chain by ``count <= length`` iterations from iteration ``first``;
    at ``first == 0`` it sets the chains up from their ``keys`` (jittered start, NUTS state) and
    ignores ``states``, for which ``blank(keys, inputs)`` gives zeros of the right shapes. The
    outputs (constrained sites, divergence, energy, leapfrog steps) are by chain and by iteration of
    the segment; rows past ``count`` hold zeros, and so do the rows of warmup iterations except
    their leapfrog steps. The start is computed inside the segment, not by a program of its own:
    two programs compiled about a second longer than one (measured). A run in one segment
    (``settings.segments == 1``) ignores ``states``, ``first`` and ``count``: it runs every
    iteration from the start, its outputs the ``length == samples`` draws."""

    segment: Callable[[Array, Any, Array, Array, Any], Any]
    blank: Callable[[Array, Any], Any]
    length: int


def build(model: Model, settings: Settings, init_strategy: Any, inputs: Any) -> Program:
    """The compiled parts of a run of ``settings.chains`` chains of ``model`` on inputs shaped like
    ``inputs`` (:class:`Program`)."""
    how, devices = layout(settings.chains, settings.how)
    transforms = latent_sites(model, inputs, init_strategy)
    pe_gen, constrain_gen = get_potential_fn(model, transforms, replay_model=True, dynamic_args=True)
    single, total = settings.segments == 1, settings.warmup + settings.samples
    # rows of a call's outputs: the draws of a whole run, or every iteration of a segment
    length = settings.samples if single else -(-total // settings.segments)
    # NUTS moves one flat vector: its tree building applies every step to each leaf of the position,
    # so a model with ten sites compiled ten copies of that machinery (about twice the compile time
    # of the same model seen as one vector, measured); the sites are unravelled inside the potential
    sites = jax.eval_shape(lambda inputs: _start(model, inputs, transforms, init_strategy), inputs)
    position, unravel = ravel_pytree(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), sites))

    def start_point(inputs: Any) -> Array:
        return ravel_pytree(_start(model, inputs, transforms, init_strategy))[0]

    def flat_potential(inputs: Any) -> Callable[[Array], Array]:
        potential = pe_gen(inputs)
        return lambda q: potential(unravel(q))

    kernels = hmc(potential_fn_gen=flat_potential, algo="NUTS")

    def start_chain(key: Array, inputs: Any) -> Any:
        key_jitter, key_run = jax.random.split(key)
        z0 = start_point(inputs)
        # the density and gradient at the start, handed to NUTS: the kernel would compute them
        # again, and a separate finiteness check of the jittered start was one more pass of the
        # model; one evaluation inside a loop of at most two tries compiles 0.4-0.6 s faster
        # (docs/validation.md, section 5)
        value_and_grad = jax.value_and_grad(flat_potential(inputs))
        jitter = settings.jitter * jax.random.uniform(key_jitter, z0.shape, minval=-1.0, maxval=1.0)

        def attempt(carry: Any) -> Any:  # the jittered start, then (where its density is not finite) z0
            tries = carry[0]
            z = z0 + jnp.where(tries == 0, 1.0, 0.0) * jitter
            return (tries + 1, z, *value_and_grad(z))

        def again(carry: Any) -> Any:
            tries, _, pe, grad = carry
            return (tries == 0) | ((tries == 1) & ~(jnp.isfinite(pe) & jnp.all(jnp.isfinite(grad))))

        blank = (jnp.int32(0), z0, jnp.zeros((), z0.dtype), jnp.zeros_like(z0))
        _, z, pe, grad = jax.lax.while_loop(again, attempt, blank)
        return kernels[0](
            ParamInfo(z, pe, grad),
            settings.warmup,
            target_accept_prob=settings.target_accept,
            max_tree_depth=(
                min(settings.warmup_tree_depth, settings.max_tree_depth),
                settings.max_tree_depth,
            ),
            dense_mass=settings.dense_mass,
            model_args=(inputs,),
            rng_key=key_run,
        )

    def run_chain(key: Array, state: Any, first: Any, count: Any, inputs: Any) -> Any:
        """``count`` iterations of one chain from iteration ``first``; in one segment, the whole run
        from the start, with static bounds and rows for the draws alone (what compiles fastest)."""
        if single:
            state = start_chain(key, inputs)
        else:  # computed by every segment, kept by the first: straight-line code compiles faster
            fresh = start_chain(key, inputs)
            state = jax.tree.map(lambda a, b: jnp.where(first == 0, a, b), fresh, state)
        constrain_sites = constrain_gen(inputs)

        def constrain(q: Array) -> Any:
            return constrain_sites(unravel(q))

        proto = jax.eval_shape(constrain, state.z)
        buffers = (
            jax.tree.map(lambda a: jnp.zeros((length, *a.shape), a.dtype), proto),
            jnp.zeros(length, bool),
            jnp.zeros(length, state.energy.dtype),
            jnp.zeros(length, jnp.int32),
        )

        def body(j: Array, carry: Any) -> Any:
            state, bufs = carry
            state = kernels[1](state, model_args=(inputs,))
            row = j - settings.warmup if single else j

            def store(bufs: Any) -> Any:
                values = (constrain(state.z), state.diverging, state.energy, state.num_steps)
                return jax.tree.map(lambda b, v: b.at[row].set(v), bufs, values)

            def skip(bufs: Any) -> Any:  # a segment keeps a warmup iteration's leapfrog steps (progress)
                return bufs if single else (*bufs[:3], bufs[3].at[row].set(state.num_steps))

            return state, jax.lax.cond(first + j >= settings.warmup, store, skip, bufs)

        return jax.lax.fori_loop(0, count, body, (state, buffers))

    options = compiler_options(settings)
    mesh = Mesh(np.array(jax.devices()[:devices]), ("chains",))  # the "pmap" layout's devices
    if single:

        def whole(key: Array, inputs: Any) -> Any:
            return run_chain(key, None, 0, total, inputs)

        if how == "vmap":
            compiled = jax.jit(jax.vmap(whole, in_axes=(0, None)), compiler_options=options)
        else:
            by_chain = (P("chains"), P())
            compiled = _spread(
                lambda keys, inputs: jax.lax.map(lambda k: whole(k, inputs), keys), mesh, by_chain, options
            )
        return Program(
            lambda keys, states, first, count, inputs: compiled(keys, inputs), lambda k, i: None, length
        )

    def blanks(sharding: Any) -> Callable[[Array, Any], Any]:
        traced: list[Any] = []  # the states' shapes, traced on first use, then kept

        def blank(keys: Array, inputs: Any) -> Any:
            if not traced:  # NUTS' state depends on the position's size alone: traced on a stand-in
                z = jax.ShapeDtypeStruct((len(keys), *position.shape), position.dtype)

                def stand_in(key: Array, z: Array) -> Any:
                    return hmc(potential_fn=lambda q: jnp.sum(q**2), algo="NUTS")[0](
                        z, settings.warmup, dense_mass=settings.dense_mass, rng_key=key
                    )

                traced.append(jax.eval_shape(jax.vmap(stand_in), keys, z))
            return jax.tree.map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype), sharding), traced[0])

        return blank

    if how == "vmap":
        segment = jax.vmap(run_chain, in_axes=(0, 0, None, None, None))
        return Program(jax.jit(segment, compiler_options=options), blanks(None), length)

    def device(keys: Array, states: Any, first: Array, count: Array, inputs: Any) -> Any:
        return jax.lax.map(lambda ks: run_chain(ks[0], ks[1], first, count, inputs), (keys, states))

    # the blank states are placed as the segments leave theirs: the first segment and the later
    # ones run one executable
    in_specs = (P("chains"), P("chains"), P(), P(), P())
    return Program(_spread(device, mesh, in_specs, options), blanks(NamedSharding(mesh, P("chains"))), length)


def _spread(
    fn: Callable[..., Any], mesh: Mesh, in_specs: tuple[Any, ...], options: dict[str, Any] | None
) -> Any:
    """``fn`` over the chains' axis split across the mesh's devices (``P("chains")`` arguments; the
    ``P()`` ones are given whole to each): what ``pmap`` does, written as a sharded ``jit`` because
    only ``jit`` takes compiler options. Each device runs its chains one after the other. NumPyro's
    kernel mixes per-chain values with constants in its branches, which the replication check would
    reject."""
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P("chains"), check_vma=False)
    return jax.jit(mapped, compiler_options=options)


_PROGRAMS: dict[tuple[Any, ...], Program] = {}
_PROGRAMS_LOCK = threading.Lock()
_MAX_PROGRAMS = 8


def shapes(inputs: Any) -> tuple[Any, ...]:
    """The inputs' tree structure and leaf shapes and dtypes: a program traced for one shape is never
    reused for another."""
    leaves, tree = jax.tree_util.tree_flatten(inputs)
    return (tree, *((np.shape(leaf), np.asarray(leaf).dtype.str) for leaf in leaves))


def program(model: Model, settings: Settings, init_strategy: Any, inputs: Any) -> Program:
    """The cached program for this model, settings, init strategy and input shapes (progress is
    reported from the host, so a run with it and one without share the program)."""
    settings = replace(settings, progress_every=0)
    key = (model, settings, init_strategy, shapes(inputs))
    with _PROGRAMS_LOCK:
        found = _PROGRAMS.get(key)
        if found is None:
            found = build(model, settings, init_strategy, inputs)
            if len(_PROGRAMS) >= _MAX_PROGRAMS:
                _PROGRAMS.pop(next(iter(_PROGRAMS)))
            _PROGRAMS[key] = found
    return found


def run_nuts(model: Model, inputs: Any, settings: Settings, seed: int, init_strategy: Any) -> Chains:
    """Run ``settings.chains`` NUTS chains of ``model(inputs)``; draws of every site, by chain.

    The run is ``settings.segments`` calls of the compiled program; with ``settings.progress_every``
    the host reports the iterations done and the mean leapfrog steps after each call that crosses a
    multiple of it (a run in one segment reports once, at its end)."""
    run = program(model, settings, init_strategy, inputs)
    report = _progress(settings) if settings.progress_every else None
    warmup, total, single = settings.warmup, settings.warmup + settings.samples, settings.segments == 1
    keys = jax.random.split(jax.random.PRNGKey(seed), settings.chains)
    states = run.blank(keys, inputs)
    spans = [(0, total)] if single else [(f, min(run.length, total - f)) for f in range(0, total, run.length)]
    kept: list[Any] = []
    for first, count in spans:
        states, out = run.segment(keys, states, np.int32(first), np.int32(count), inputs)
        # the rows of sampling iterations: all of a whole run's, those past the warmup of a segment's
        rows = slice(None) if single else slice(max(0, warmup - first), count)
        if first + count > warmup:
            kept.append(jax.tree.map(lambda a, rows=rows: np.asarray(a[:, rows]), out))
        if (
            report is not None
            and (first + count) // settings.progress_every > first // settings.progress_every
        ):
            steps = np.asarray(out[3])[:, rows if single else slice(0, count)]
            report(first + count, float(np.mean(steps)))
    samples, diverging, energy, num_steps = jax.tree.map(lambda *parts: np.concatenate(parts, axis=1), *kept)
    return Chains(
        samples=samples,
        diverging=diverging,
        energy=energy,
        num_steps=num_steps,
        step_size=np.asarray(states.adapt_state.step_size),
    )
