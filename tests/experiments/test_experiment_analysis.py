"""The scaled-control DiD: unbiased with honest errors on synthetic panels, and its checks fire when they should."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from agents.experiments.analysis import Panel, fit_control, read_holdout

START = date(2026, 1, 1)
REGIONS = ("a", "b", "c", "d", "e")
SHARES = np.array([0.1, 0.15, 0.2, 0.25, 0.3])


def panel(
    seed: int,
    *,
    lift: float = 0.0,
    days: int = 140,
    test_start: int = 110,
    test_days: int = 14,
    drift: float = 0.0,
    noise: float = 0.03,
) -> tuple[Panel, float]:
    """Regions sharing a weekly and yearly pattern; region `a` loses ``lift`` of its revenue in the test."""
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    common = 50_000 * (1 + 0.1 * np.sin(2 * np.pi * t / 365)) * (1 + 0.05 * np.sin(2 * np.pi * t / 7))
    rev = common[:, None] * SHARES[None, :] * (1 + noise * rng.standard_normal((days, len(REGIONS))))
    rev[:, 0] *= 1 + drift * t / days
    window = slice(test_start, test_start + test_days)
    lost = float((rev[window, 0] * lift).sum())
    rev[window, 0] *= 1 - lift
    return Panel(tuple(START + timedelta(days=k) for k in range(days)), REGIONS, rev), lost


def window(test_start: int = 110, test_days: int = 14) -> tuple[date, date]:
    return START + timedelta(days=test_start), START + timedelta(days=test_start + test_days - 1)


def test_recovers_a_known_lift_within_its_error() -> None:
    p, lost = panel(1, lift=0.10)
    start, end = window()
    r = read_holdout(p, ["a"], start, end)
    assert r.trusted, r.problems
    assert abs(r.incremental_revenue - lost) < 3 * r.incremental_revenue_se
    assert r.incremental_revenue_se < 0.4 * lost
    assert r.relative_lift == pytest.approx(0.10, abs=0.04)
    assert r.to_dict()["incremental_revenue"] == round(r.incremental_revenue, 2)


def test_no_effect_reads_zero_and_errors_are_calibrated() -> None:
    start, end = window()
    z = []
    for seed in range(60):
        p, lost = panel(100 + seed, lift=0.05)
        r = read_holdout(p, ["a", "b"], start, end)
        z.append((r.incremental_revenue - lost) / r.incremental_revenue_se)
    z_arr = np.array(z)
    assert abs(z_arr.mean()) < 0.45  # unbiased
    assert 0.6 < z_arr.std() < 1.5  # the standard error is about right
    assert np.mean(np.abs(z_arr) > 1.96) < 0.15


def test_placebo_in_time_catches_a_region_drifting_away_from_its_controls() -> None:
    p, _ = panel(7, lift=0.0, drift=0.5)
    start, end = window()
    r = read_holdout(p, ["a"], start, end)
    assert not r.trusted
    assert any("drift" in msg or "placebo" in msg for msg in r.problems)


def test_placebo_in_space_and_fit_checks_are_reported() -> None:
    p, _ = panel(3, lift=0.08)
    start, end = window()
    r = read_holdout(p, ["a"], start, end)
    assert set(r.placebo_space) == {"b", "c", "d", "e"}
    assert all(abs(z) < 3.5 for z in r.placebo_space.values())
    assert r.pre_mape < 0.05 and r.pre_r2 > 0.3 and r.trusted


def test_bad_inputs_say_what_to_fix() -> None:
    p, _ = panel(2)
    start, end = window()
    with pytest.raises(ValueError, match="not in the panel"):
        read_holdout(p, ["zz"], start, end)
    with pytest.raises(ValueError, match="treated and one control"):
        read_holdout(p, list(REGIONS), start, end)
    with pytest.raises(ValueError, match="at least 21"):
        fit_control(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="non-finite"):
        Panel(p.days, p.regions, np.full_like(p.revenue, np.nan))
