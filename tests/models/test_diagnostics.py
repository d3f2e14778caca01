"""The diagnostics gate: r-hat, divergences and BFMI decide `healthy`, with reasons that say why."""

from __future__ import annotations

import numpy as np
import pytest

from models.diagnostics import bfmi, chain_stats, coverage, judge, mape
from models.fit import fit
from models.simulate import simulate

BASE = dict(
    method="nuts",
    chains=2,
    draws=2000,
    ess_bulk_min=400.0,
    ess_tail_min=300.0,
    bfmi_min=0.9,
    ppc_coverage_90=0.9,
    prior_ppc_coverage_90=1.0,
    fit_seconds=1.0,
    worst_parameter="roi[0]",
)


def test_gate_passes_a_good_fit_and_flags_rhat_and_divergences() -> None:
    ok = judge(r_hat_max=1.01, divergences=5, transitions=2000, **BASE)  # type: ignore[arg-type]
    assert ok.healthy and ok.reasons == ()
    bad = judge(r_hat_max=1.2, divergences=40, transitions=2000, **BASE)  # type: ignore[arg-type]
    assert not bad.healthy
    assert any("r-hat 1.200 > 1.05 (worst: roi[0])" in r for r in bad.reasons)
    assert any("40 divergent transitions (2.0% > 1%)" in r for r in bad.reasons)
    assert bad.to_dict()["healthy"] is False


def test_chain_stats_see_disagreeing_chains() -> None:
    rng = np.random.default_rng(0)
    same = {"a": rng.normal(size=(2, 500))}
    apart = {"a": rng.normal(size=(2, 500)) + np.array([[0.0], [3.0]])}
    assert chain_stats(same)[0] == pytest.approx(1.0, abs=0.02)
    r, ess, tail, worst = chain_stats(apart)
    assert r is not None and r > 1.5 and worst == "a"
    assert ess is not None and tail is not None and ess < 100


def test_bfmi_coverage_and_mape_by_hand() -> None:
    e = np.array([[0.0, 1.0, 0.0, 1.0]])
    # mean squared step 1 over the variance 0.25
    assert bfmi(e) == pytest.approx(4.0)
    pred = np.tile(np.arange(100.0)[:, None], (1, 3))
    assert coverage(np.array([50.0, 50.0, 200.0]), pred) == pytest.approx(2 / 3)
    assert mape(np.array([100.0, 200.0]), np.array([110.0, 180.0])) == pytest.approx(0.1)


def test_a_fit_that_cannot_converge_is_flagged_unhealthy() -> None:
    data, _ = simulate(periods=60, channels=2, seed=3)
    fm = fit(data, chains=2, warmup=3, samples=40, seed=0)
    assert not fm.healthy
    assert any("r-hat" in r or "divergent" in r for r in fm.diagnostics.reasons)
