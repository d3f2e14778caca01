"""The Bayesian marketing mix model: pure computation (arrays in, posterior and decisions out).

No database, no HTTP, no environment reads, no wall clock here. Importing the package asks XLA for one
host device per CPU core (so NUTS chains run in parallel) when JAX has not started its backends yet.
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
