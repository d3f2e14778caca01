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


def _ar1(rng: np.random.Generator, chains: int, draws: int, phi: float) -> np.ndarray:
    x = np.zeros((chains, draws))
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + rng.normal(size=chains)
    return x


def test_bulk_and_tail_ess_are_the_rank_normalized_split_chain_estimates() -> None:
    """FIT.json's ESS is what Stan, ArviZ and PyMC report (Vehtari et al. 2021), so an analyst can put
    it beside theirs: bulk from the rank-normalized split chains, tail from the split chains'
    quantile indicators. Before, the plain multi-chain ESS read 5x lower than ArviZ's on a
    heavy-tailed ROI."""
    rng = np.random.default_rng(0)
    # an AR(1) chain with phi = 0.9 carries about (1 - phi) / (1 + phi) of its draws' information
    slow = _ar1(rng, 4, 2000, 0.9)
    _, bulk, tail, _ = chain_stats({"x": slow})
    assert bulk == pytest.approx(8000 * 0.1 / 1.9, rel=0.2)
    assert tail is not None and tail < 8000 * 0.3
    # rank-normalized: a monotone transform of the draws (a log-normal ROI and its log) gives the same
    skewed = np.exp(3.0 * _ar1(rng, 2, 1001, 0.5))
    assert chain_stats({"r": skewed})[1] == pytest.approx(chain_stats({"r": np.log(skewed)})[1], rel=1e-9)
    # a chain that drifts within itself is seen by splitting it, though the chains agree as wholes
    drift = rng.normal(size=(2, 1000)) + np.linspace(-3.0, 3.0, 1000)
    assert chain_stats({"d": drift})[1] < 100

    az = pytest.importorskip("arviz")
    for x in (slow, skewed, rng.standard_cauchy(size=(4, 501))):
        _, bulk, tail, _ = chain_stats({"x": x})
        assert bulk == pytest.approx(float(az.ess(x, method="bulk")), rel=0.02)
        assert tail == pytest.approx(float(az.ess(x, method="tail")), rel=0.02)


def test_one_chain_that_drifts_is_caught_by_split_rhat() -> None:
    """With ``--chains 1`` there is no second chain to disagree with: r-hat was None and the gate
    never ran, so a chain still walking away from its start was called healthy. Split r-hat compares
    the chain's two halves."""
    rng = np.random.default_rng(1)
    still = {"a": rng.normal(size=(1, 500))}
    drifting = {"a": rng.normal(size=(1, 500)) + np.linspace(0.0, 4.0, 500)}
    r, *_ = chain_stats(still)
    assert r is not None and r == pytest.approx(1.0, abs=0.02)
    r, _, _, worst = chain_stats(drifting)
    assert r is not None and r > 1.5 and worst == "a"
