"""ResponseCurves: steady-state revenue and marginal return against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from models.curves import ResponseCurves


def _curves() -> ResponseCurves:
    beta = np.array([[100.0, 50.0], [200.0, 60.0]])
    half = np.array([[10.0, 5.0], [20.0, 5.0]])
    shape = np.array([[1.0, 2.0], [1.5, 1.0]])
    return ResponseCurves(("a", "b"), beta, half, shape, "week")


def test_revenue_matches_hand_computation() -> None:
    rc = _curves()
    rev = rc.revenue(np.array([10.0, 10.0]))
    assert rev.shape == (2, 2)
    assert rev[0, 0] == pytest.approx(50.0)  # 100 * 10/(10+10)
    assert rev[0, 1] == pytest.approx(50.0 * 100 / (100 + 25))
    assert rev[1, 0] == pytest.approx(200.0 * 10**1.5 / (10**1.5 + 20**1.5))
    assert rev[1, 1] == pytest.approx(60.0 * 10 / 15)


def test_revenue_broadcasts_over_leading_budget_dims_and_is_zero_at_zero() -> None:
    rc = _curves()
    grid = np.array([[0.0, 0.0], [5.0, 1.0], [50.0, 100.0]])
    rev = rc.revenue(grid)
    assert rev.shape == (2, 3, 2)
    assert np.all(rev[:, 0, :] == 0.0)
    assert np.all(np.diff(rev, axis=1) > 0)
    assert rc.total_revenue(grid).shape == (2, 3)


def test_mroas_is_the_derivative_of_revenue() -> None:
    rc = _curves()
    b = np.array([7.0, 3.0])
    eps = 1e-5
    num = (rc.revenue(b + eps) - rc.revenue(b - eps)) / (2 * eps)
    np.testing.assert_allclose(rc.mroas(b), num, rtol=1e-5)


def test_subset_is_reproducible_and_validation_names_the_problem() -> None:
    rc = ResponseCurves(("a",), np.ones((10, 1)), np.ones((10, 1)), np.ones((10, 1)), "day")
    s1, s2 = rc.subset(4, seed=3), rc.subset(4, seed=3)
    assert s1.draws == 4 and np.array_equal(s1.beta, s2.beta)
    with pytest.raises(ValueError, match="`budgets` must end in one value per channel"):
        rc.revenue(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="`period`"):
        ResponseCurves(("a",), np.ones((1, 1)), np.ones((1, 1)), np.ones((1, 1)), "month")


def _logistic_curves() -> ResponseCurves:
    beta = np.array([[100.0, 50.0], [200.0, 60.0]])
    half = np.array([[10.0, 5.0], [20.0, 5.0]])
    return ResponseCurves(("a", "b"), beta, half, np.ones_like(beta), "week", saturation="logistic")


def test_logistic_curves_by_hand_with_their_derivative() -> None:
    rc = _logistic_curves()
    rev = rc.revenue(np.array([10.0, 10.0]))
    lam = np.log(3.0) / 20.0  # draw 1, channel a: half 20
    assert rev[0, 0] == pytest.approx(50.0)  # at its half-saturation point: half the ceiling
    assert rev[1, 0] == pytest.approx(200.0 * (1 - np.exp(-lam * 10)) / (1 + np.exp(-lam * 10)))
    b = np.array([7.0, 3.0])
    eps = 1e-5
    num = (rc.revenue(b + eps) - rc.revenue(b - eps)) / (2 * eps)
    np.testing.assert_allclose(rc.mroas(b), num, rtol=1e-5)
    # steepest at zero: beta x atanh(1/2) / half, finite (a Hill curve with shape < 1 is not)
    np.testing.assert_allclose(
        rc.mroas(np.zeros(2))[:, 0], [100 * np.arctanh(0.5) / 10, 200 * np.arctanh(0.5) / 20]
    )


def test_the_saturation_travels_with_the_curves_and_old_documents_read_as_hill() -> None:
    rc = _logistic_curves()
    for other in (rc.subset(1, seed=0), rc.select(["b"]), rc.mean(), ResponseCurves.from_dict(rc.to_dict())):
        assert other.saturation == "logistic"
    old = _curves().to_dict()
    del old["saturation"]
    assert ResponseCurves.from_dict(old).saturation == "hill"
    with pytest.raises(ValueError, match="logistic curves have no shape"):
        ResponseCurves(
            ("a",), np.ones((1, 1)), np.ones((1, 1)), np.full((1, 1), 2.0), "day", saturation="logistic"
        )
    with pytest.raises(ValueError, match="`saturation` must be one of"):
        ResponseCurves(("a",), np.ones((1, 1)), np.ones((1, 1)), np.ones((1, 1)), "day", saturation="linear")
