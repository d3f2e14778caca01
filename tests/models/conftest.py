"""One small real fit shared by the model tests (fitting is the slow part; the checks are cheap)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models.fit import enable_compilation_cache, fit
from models.fitted import FittedModel
from models.simulate import Truth, simulate


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = Path(__file__).resolve().parents[2] / "var" / "jax-cache-tests"
    enable_compilation_cache(d)
    yield d


@pytest.fixture(scope="session")
def easy_case() -> tuple[object, Truth]:
    """Two years weekly, 3 channels, strong spend variation and 2% noise: a table the model should nail."""
    data, truth = simulate(periods=104, channels=3, seed=11, noise=0.02, variation=0.6, media_share=0.35)
    return data, truth


@pytest.fixture(scope="session")
def small_fit(easy_case: tuple[object, Truth], jax_cache: Path) -> FittedModel:
    data, _ = easy_case
    return fit(data, chains=2, warmup=300, samples=300, seed=1, holdout_periods=8)  # type: ignore[arg-type]
