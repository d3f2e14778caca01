"""The Bayesian marketing mix model: pure computation (arrays in, posterior and decisions out).

No database, no HTTP, no environment reads, no wall clock here. Importing the package asks XLA for one
host device per CPU core (so NUTS chains run in parallel) when JAX has not started its backends yet.

Public surface (import from the modules):

    models.data       load_csv(path, target=, date=, channels=, controls=) / from_frame(df, ...) -> MMMData
    models.lift       load_lift_tests(path) -> list[LiftTest]
    models.priors     Priors(...).with_channel(name, roi=LogNormalPrior(median, sigma), ...)
    models.fit        fit(data, priors=, lift_tests=, method="nuts"|"svi", chains=, warmup=, samples=,
                          seed=, progress=, holdout_periods=) -> FittedModel;  enable_compilation_cache(dir)
    models.fitted     FittedModel: channel_metrics(), response_curves(), predict(spend, controls, dates),
                          media(), baseline(), expected(), posterior_predictive(), save()/load()
    models.curves     ResponseCurves: revenue(budgets), mroas(budgets), subset(n, seed)
    models.outputs    fit_json(fm) -> FIT.json (INTERFACES section 3 and more)
    models.serialize  to_dict / from_dict / save / load (a model version, exact round trip)
    models.plots      write_plots(fm, directory)
    models.simulate   simulate(...) -> (MMMData, Truth) for tests and benchmarks
"""

from __future__ import annotations

import os


def _request_host_devices() -> None:
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return
    except (ImportError, AttributeError):  # pragma: no cover - older/newer JAX layouts
        pass
    import numpyro

    numpyro.set_host_device_count(max(2, min(os.cpu_count() or 1, 8)))


_request_host_devices()
