"""The model's two coordinate systems describe one joint distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.handlers import seed, substitute, trace
from numpyro.infer import Predictive
from numpyro.infer.util import log_density

from models.fit import _prior_revenue, _scalar_sds, model_inputs
from models.lift import LiftTest
from models.model import BoundModel, Extent, ModelSpec, media_per_draw, pad_inputs, site_priors
from models.priors import Priors
from models.simulate import simulate


def _random_point(rng: np.random.Generator, spec: ModelSpec, channels: int = 3) -> dict[str, jax.Array]:
    """A plausible value of every sampled site of the sampler's coordinates, for ``spec``."""
    point = {
        "decay": rng.uniform(0.1, 0.8, channels),
        "half": rng.lognormal(0.0, 0.4, channels),
        "shape": rng.lognormal(0.3, 0.2, channels),
        "roi": rng.lognormal(0.5, 0.5, channels),
        "trend": rng.normal(0.0, 0.05),
        "curvature": rng.normal(0.0, 0.02),
        "base_offset": rng.normal(0.0, 0.05),
        "sigma": rng.uniform(0.01, 0.05),
    }
    if spec.adstock == "delayed":
        point["delay"] = rng.uniform(0.0, 2.0, channels)
    if spec.saturation != "hill":
        del point["shape"]
    if spec.n_yearly:
        point["season"] = rng.normal(0.0, 0.02, 2 * spec.n_yearly)
    return {k: jnp.asarray(v, dtype=jnp.float32) for k, v in point.items()}


@pytest.mark.parametrize(
    ("adstock", "baseline"),
    [("geometric", "multiplicative"), ("delayed", "multiplicative"), ("geometric", "additive")],
)
@pytest.mark.parametrize("saturation", ["hill", "logistic"])
def test_sampler_coordinates_have_the_generative_density(
    adstock: str, baseline: str, saturation: str
) -> None:
    """At any point, log p_sampler(base_offset, rest) = log p_generative(intercept, rest), where the
    intercept is the one the sampler's coordinates derive: the map is a shift (unit Jacobian)."""
    data, _ = simulate(periods=60, channels=3, seed=4)
    spec = ModelSpec.for_data(data, adstock=adstock, baseline=baseline, saturation=saturation)
    priors = Priors()
    test = LiftTest(
        "ch1", data.dates[30], data.dates[33], -0.5 * float(data.spend[30:34, 1].sum()), 900.0, 200.0
    )
    inputs = model_inputs(data, spec, priors, [test])
    sds = tuple(sorted(_scalar_sds(priors).items()))
    sampler, generative = BoundModel(spec, sds), BoundModel(spec, sds, generative=True)
    rng = np.random.default_rng(0)
    for _ in range(5):
        point = _random_point(rng, spec)
        lp_sampler, tr = log_density(sampler, (inputs,), {}, point)
        other = {k: v for k, v in point.items() if k != "base_offset"} | {
            "intercept": tr["intercept"]["value"]
        }
        lp_generative, _ = log_density(generative, (inputs,), {}, other)
        assert float(lp_sampler) == pytest.approx(float(lp_generative), abs=1e-4 * abs(float(lp_sampler)))
        # the derived intercept closes mean (scaled) revenue: baseline mean = exp(offset) x what the
        # media leave of it
        media_mean = float(np.sum(point["roi"] * inputs["spend_over_y"])) / data.periods
        expected_mean = np.exp(float(point["base_offset"])) * (1 - media_mean) + media_mean
        assert float(np.mean(tr["obs"]["fn"].base_dist.loc)) == pytest.approx(expected_mean, rel=1e-3)
        # and the sampler's derived beta reproduces the generative model's
        gen_trace = trace(substitute(generative, other)).get_trace(inputs)
        np.testing.assert_allclose(tr["beta"]["value"], gen_trace["beta"]["value"], rtol=1e-5)


@pytest.mark.parametrize(
    ("adstock", "baseline"),
    [("geometric", "multiplicative"), ("delayed", "multiplicative"), ("geometric", "additive")],
)
def test_padded_inputs_leave_the_density_unchanged(adstock: str, baseline: str) -> None:
    """Rows appended by ``pad_inputs`` are masked out everywhere, and its inert lift tests predict
    exactly 0 and observe 0: the log density moves by the same constant at every point (the inert
    tests' normalising terms) and every derived site is the unpadded inputs', so a holdout refit may
    run the full fit's compiled sampler. Without the mask the padded rows would enter the
    likelihood and the sums."""
    data, _ = simulate(periods=60, channels=3, seed=5)
    spec = ModelSpec.for_data(data, adstock=adstock, baseline=baseline)
    priors = Priors()
    test = LiftTest(
        "ch2", data.dates[50], data.dates[53], -0.5 * float(data.spend[50:54, 2].sum()), 700.0, 150.0
    )
    inputs = model_inputs(data, spec, priors, [test])
    assert Extent.of(inputs) == Extent(60, 1, 4)
    padded = pad_inputs(inputs, Extent(73, 3, 6))
    assert Extent.of(padded) == Extent(73, 3, 6)
    assert padded["x"].shape == (73, 3) and float(padded["mask"].sum()) == 60.0
    inert = -float(np.log(2 * np.pi))  # two inert tests: 2 x log Normal(0 | 0, 1)
    model = BoundModel(spec, tuple(sorted(_scalar_sds(priors).items())))
    rng = np.random.default_rng(1)
    for _ in range(4):
        point = _random_point(rng, spec)
        lp, tr = log_density(model, (inputs,), {}, point)
        lp_padded, tr_padded = log_density(model, (padded,), {}, point)
        assert float(lp_padded) == pytest.approx(float(lp) + inert, abs=1e-5 * abs(float(lp)))
        for site in ("beta", "intercept", "rest_scale"):
            np.testing.assert_allclose(tr[site]["value"], tr_padded[site]["value"], rtol=1e-5)
        pred = np.asarray(tr_padded["lift_obs"]["fn"].loc)
        np.testing.assert_allclose(pred[:1], np.asarray(tr["lift_obs"]["fn"].loc), rtol=1e-5)
        assert np.all(pred[1:] == 0.0)
        # without the mask, the padded rows would count: the densities then differ
        unmasked = dict(padded, mask=np.ones(73, np.float32))
        lp_unmasked = float(log_density(model, (unmasked,), {}, point)[0])
        assert lp_unmasked != pytest.approx(float(lp) + inert, rel=1e-3)
    # a table without tests padded to one with tests: the same density plus the inert terms
    bare = model_inputs(data, spec, priors)
    point = _random_point(rng, spec)
    lp_bare = float(log_density(model, (bare,), {}, point)[0])
    lp_two = float(log_density(model, (pad_inputs(bare, Extent(60, 2, 4)),), {}, point)[0])
    assert lp_two == pytest.approx(lp_bare + inert, abs=1e-5 * abs(lp_bare))
    for smaller in (Extent(50, 1, 4), Extent(60, 0, 0), Extent(60, 1, 3)):
        with pytest.raises(ValueError, match="cannot pad inputs"):
            pad_inputs(inputs, smaller)


def test_the_baselines_swings_in_revenue_do_not_depend_on_the_media_share() -> None:
    """The same trend and seasonality coefficients give the same swings of the baseline in revenue
    whatever ROIs the media take (``rest_scale``): only the level moves. With relative coefficients,
    a baseline half as large would swing half as much, and a fit would have to double its
    coefficients, and their spread, to match the table (the pull toward large ROIs that the scale
    removes)."""
    data, _ = simulate(periods=104, channels=3, seed=4)
    spec = ModelSpec.for_data(data, baseline="additive")
    priors = Priors()
    inputs = model_inputs(data, spec, priors)
    model = BoundModel(spec, tuple(sorted(_scalar_sds(priors).items())))
    common = {
        "decay": np.full(3, 0.3),
        "half": np.ones(3),
        "shape": np.full(3, 1.5),
        "trend": 0.04,
        "curvature": 0.01,
        "season": np.asarray([0.05, -0.03, 0.01, 0.02, 0.0, 0.01]),
        "base_offset": 0.0,
        "sigma": 0.02,
    }
    swings = []
    levels = []
    for roi in (np.full(3, 0.5), np.full(3, 5.0)):
        point = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in (common | {"roi": roi}).items()}
        tr = trace(substitute(model, point)).get_trace(inputs)
        curve = {k: point[k][None] for k in ("decay", "half", "shape")} | {"beta": tr["beta"]["value"][None]}
        media = np.asarray(media_per_draw(spec, jnp.asarray(inputs["x"]), curve)[0][0]).sum(axis=1)
        base = np.asarray(tr["obs"]["fn"].base_dist.loc) - media
        swings.append(base - base.mean())
        levels.append(base.mean())
    assert levels[1] < 0.6 * levels[0]  # the media took a much larger share ...
    np.testing.assert_allclose(swings[1], swings[0], rtol=1e-3, atol=1e-5)  # ... the swings stayed


def _structures() -> list[ModelSpec]:
    data, _ = simulate(periods=60, channels=3, seed=4)
    return [
        ModelSpec.for_data(data),
        ModelSpec.for_data(data, adstock="delayed", baseline="additive", saturation="logistic"),
    ]


@pytest.mark.parametrize("spec", _structures(), ids=["hill-geometric", "logistic-delayed"])
def test_the_numpy_prior_draws_follow_the_models_own_distributions(spec: ModelSpec) -> None:
    """Every site's NumPy sampler (the prior predictive check's) and the NumPyro distribution the model
    samples from are one prior: same shapes, and the NumPy draws' mean, sd and quartiles match the
    distribution's within Monte Carlo error."""
    data, _ = simulate(periods=60, channels=3, seed=4, frequency="week")
    priors = Priors()
    inputs = model_inputs(data, spec, priors)
    sites = site_priors(inputs, spec, _scalar_sds(priors))
    trace_sites = {
        k: v
        for k, v in trace(seed(BoundModel(spec, tuple(sorted(_scalar_sds(priors).items())), True), 0))
        .get_trace(inputs)
        .items()
        if v["type"] == "sample" and not v["is_observed"]
    }
    assert list(sites) == list(trace_sites)  # the model samples exactly these sites, in this order
    rng = np.random.default_rng(1)
    n = 40_000
    for name, prior in sites.items():
        ours = prior.sample(rng, n)
        theirs = np.asarray(prior.distribution().sample(jax.random.PRNGKey(2), (n,)), dtype=float)
        assert ours.shape == theirs.shape == (n, *np.shape(trace_sites[name]["value"])), name
        sd = theirs.std(axis=0)
        np.testing.assert_allclose(ours.mean(0), theirs.mean(0), atol=float(np.max(5 * sd / np.sqrt(n))))
        np.testing.assert_allclose(ours.std(0), sd, rtol=0.03)
        for q in (0.25, 0.5, 0.75):
            np.testing.assert_allclose(
                np.quantile(ours, q, 0), np.quantile(theirs, q, 0), atol=float(np.max(0.03 * sd)) + 1e-9
            )


def test_the_prior_predictive_check_matches_numpyros_predictive_of_the_generative_model() -> None:
    """The fit's prior predictive coverage (NumPy draws through the compiled media function) and a
    NumPyro ``Predictive`` of the generative model produce the same distribution of revenue: per
    period, their 5%, 50% and 95% quantiles agree within Monte Carlo error."""
    data, _ = simulate(periods=60, channels=3, seed=4)
    spec = ModelSpec.for_data(data)
    priors = Priors()
    sds = _scalar_sds(priors)
    inputs = model_inputs(data, spec, priors)
    # the upper tail is long (ROIs that leave little baseline scale its swings up, ``rest_scale``),
    # so its 95% quantile needs many draws to settle
    n = 20000
    rng = np.random.default_rng(0)
    draws = {name: sp.sample(rng, n) for name, sp in site_priors(inputs, spec, sds).items()}
    ours = _prior_revenue(inputs, spec, draws, rng)
    gen = BoundModel(spec, tuple(sorted(sds.items())), generative=True)
    theirs = np.asarray(
        Predictive(gen, num_samples=n, return_sites=["obs"])(jax.random.PRNGKey(3), dict(inputs, y=None))[
            "obs"
        ]
    )
    for q in (0.05, 0.5, 0.95):
        a, b = np.quantile(ours, q, axis=0), np.quantile(theirs, q, axis=0)
        spread = np.quantile(theirs, 0.95, axis=0) - np.quantile(theirs, 0.05, axis=0)
        assert np.max(np.abs(a - b) / spread) < 0.06, (q, np.max(np.abs(a - b) / spread))
        assert abs(np.mean((a - b) / spread)) < 0.02, (q, np.mean((a - b) / spread))  # no systematic gap
