"""The weekly retrain's model structure comes from the environment, validated at startup."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from budgetloop.cli.serve import build_runtime
from budgetloop.clock import WallClock
from budgetloop.config import Settings
from budgetloop.db.session import make_engine


def test_the_retrain_structure_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUDGETLOOP_FIT_SATURATION", "logistic")
    monkeypatch.setenv("BUDGETLOOP_FIT_BASELINE", "additive")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", sandbox_url="http://127.0.0.1:9")
    rt = build_runtime(settings, make_engine(settings.database_url), WallClock())
    assert (rt.fit.saturation, rt.fit.baseline) == ("logistic", "additive")
    monkeypatch.setenv("BUDGETLOOP_FIT_SATURATION", "sigmoid")
    with pytest.raises(ValidationError, match="fit_saturation"):
        Settings()
