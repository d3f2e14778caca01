"""The model's two coordinate systems describe one joint distribution."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.handlers import substitute, trace
from numpyro.infer.util import log_density

from models.fit import _scalar_sds, model_inputs
from models.lift import LiftTest
from models.model import BoundModel, ModelSpec
from models.priors import Priors
from models.simulate import simulate


@pytest.mark.parametrize(
    ("adstock", "baseline"),
    [("geometric", "multiplicative"), ("delayed", "multiplicative"), ("geometric", "additive")],
)
def test_sampler_coordinates_have_the_generative_density(adstock: str, baseline: str) -> None:
    """At any point, log p_sampler(base_offset, rest) = log p_generative(intercept, rest), where the
    intercept is the one the sampler's coordinates derive: the map is a shift (unit Jacobian)."""
    data, _ = simulate(periods=60, channels=3, seed=4)
    spec = ModelSpec.for_data(data, adstock=adstock, baseline=baseline)
    priors = Priors()
    test = LiftTest(
        "ch1", data.dates[30], data.dates[33], -0.5 * float(data.spend[30:34, 1].sum()), 900.0, 200.0
    )
    inputs = model_inputs(data, spec, priors, [test])
    sds = tuple(sorted(_scalar_sds(priors).items()))
    sampler, generative = BoundModel(spec, sds), BoundModel(spec, sds, generative=True)
    rng = np.random.default_rng(0)
    for _ in range(5):
        point = {
            "decay": rng.uniform(0.1, 0.8, 3),
            "half": rng.lognormal(0.0, 0.4, 3),
            "shape": rng.lognormal(0.3, 0.2, 3),
            "roi": rng.lognormal(0.5, 0.5, 3),
            "trend": rng.normal(0.0, 0.05),
            "curvature": rng.normal(0.0, 0.02),
            "base_offset": rng.normal(0.0, 0.05),
            "sigma": rng.uniform(0.01, 0.05),
        }
        if spec.adstock == "delayed":
            point["delay"] = rng.uniform(0.0, 2.0, 3)
        if spec.n_yearly:
            point["season"] = rng.normal(0.0, 0.02, 2 * spec.n_yearly)
        point = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in point.items()}
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
        assert float(np.mean(tr["obs"]["fn"].loc)) == pytest.approx(expected_mean, rel=1e-3)
        # and the sampler's derived beta reproduces the generative model's
        gen_trace = trace(substitute(generative, other)).get_trace(inputs)
        np.testing.assert_allclose(tr["beta"]["value"], gen_trace["beta"]["value"], rtol=1e-5)
