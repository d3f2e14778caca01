"""The retrain's stability gate: which moves between two model versions hold a refit back."""

from __future__ import annotations

from typing import Any

from agents.retrain import MAX_SHIFT, shifts


def _line(mean: float, lo: float, hi: float) -> dict[str, float]:
    return {"mean": mean, "p05": lo, "p95": hi}


def _summary(**channels: tuple[dict[str, float], dict[str, float], bool]) -> dict[str, Any]:
    return {
        "channels": {
            ch: {"roi": roi, "mroas": mroas, "roi_extrapolated": extrapolated}
            for ch, (roi, mroas, extrapolated) in channels.items()
        }
    }


# the promoted version and a refit of the regional demo (versions 43 and 47 of its run): retail
# media's ROI more than doubled while its marginal return, what the planner acts on, stayed put
PROMOTED = _summary(retail_media=(_line(2.23, 2.0, 2.45), _line(1.90, 1.75, 2.07), True))
REFIT = _summary(retail_media=(_line(5.02, 4.5, 5.6), _line(1.89, 1.77, 2.03), True))


def test_an_extrapolated_roi_that_moves_alone_does_not_hold_the_refit_back() -> None:
    assert shifts(PROMOTED, REFIT) == []


def test_the_same_roi_move_holds_it_back_where_the_table_pins_the_roi() -> None:
    pinned = _summary(retail_media=(_line(5.02, 4.5, 5.6), _line(1.89, 1.77, 2.03), False))
    assert shifts(PROMOTED, pinned) == ["retail_media ROI 2.23 -> 5.02"]


def test_a_wild_mroas_move_holds_it_back_unless_a_lift_test_explains_it() -> None:
    old = _summary(social=(_line(0.86, 0.6, 1.1), _line(0.60, 0.36, 0.93), True))
    new = _summary(social=(_line(3.31, 2.5, 4.0), _line(1.71, 1.36, 2.1), True))
    assert shifts(old, new) == ["social mROAS 0.60 -> 1.71"]
    assert shifts(old, new, calibrated={"social"}) == []


def test_moves_inside_the_previous_interval_or_under_the_threshold_pass() -> None:
    old = _summary(tv=(_line(1.0, 0.4, 3.0), _line(0.8, 0.3, 2.5), False))
    inside = _summary(tv=(_line(2.9, 2.0, 4.0), _line(2.4, 1.9, 3.0), False))  # far, but inside
    assert shifts(old, inside) == []
    narrow = _summary(tv=(_line(1.0, 0.95, 1.05), _line(0.8, 0.78, 0.82), False))
    small = _summary(tv=(_line(1.0 * (1 + MAX_SHIFT) * 0.99, 1.4, 1.6), _line(0.8, 0.78, 0.82), False))
    assert shifts(narrow, small) == []  # outside the interval, but by less than MAX_SHIFT


def test_a_channel_new_to_the_model_or_a_summary_without_the_flag_is_read_safely() -> None:
    old = _summary(tv=(_line(1.0, 0.9, 1.1), _line(0.8, 0.7, 0.9), False))
    new = {
        "channels": {
            "tv": {"roi": _line(2.0, 1.8, 2.2), "mroas": _line(0.8, 0.7, 0.9)},  # stored before the flag
            "radio": {"roi": _line(9.0, 8, 10), "mroas": _line(5.0, 4, 6), "roi_extrapolated": False},
        }
    }
    assert shifts(old, new) == ["tv ROI 1.00 -> 2.00"]


def test_a_channel_read_from_the_priors_does_not_hold_the_refit_back() -> None:
    """Flat spend: neither figure is measured, so a refit moving them says nothing about the data."""
    old = _summary(brand=(_line(1.0, 0.9, 1.1), _line(0.8, 0.7, 0.9), True))
    moved = _summary(brand=(_line(3.0, 2.5, 3.5), _line(2.4, 2.0, 2.8), True))
    assert shifts(old, moved) == ["brand mROAS 0.80 -> 2.40"]
    moved["channels"]["brand"]["mroas_from_prior"] = True
    assert shifts(old, moved) == []


def test_an_unhealthy_fit_on_flat_spend_names_the_channels_that_never_moved() -> None:
    """A reviewer's market whose budgets never moved: every refit was kept back with 'SVI loss did
    not settle: raise the number of steps', which sends the user after the wrong knob."""
    import dataclasses

    from agents.retrain import gate
    from models.fit import fit
    from models.simulate import simulate

    data, _ = simulate(periods=120, channels=2, frequency="day", seed=3, noise=0.0)
    flat = data.spend.copy()
    flat[:, 0] = round(float(flat[:, 0].mean()), 2)
    fm = fit(dataclasses.replace(data, spend=flat), method="svi", svi_steps=300, samples=50, seed=0)
    channel = fm.channels[0]
    unsettled = dataclasses.replace(
        fm, diagnostics=dataclasses.replace(fm.diagnostics, reasons=("SVI loss did not settle",))
    )
    ok, reason = gate(unsettled, [])
    assert not ok and "SVI loss did not settle" in reason
    assert f"{channel}: its spend barely moved (it varies by 0.0% of its mean" in reason
    assert fm.channels[1] not in reason  # its spend moves


def test_a_holdout_asked_for_and_impossible_keeps_the_previous_version() -> None:
    """A channel launched on the window's last day leaves the holdout refit nothing to learn it
    from, so the fit runs without one (models.fit.holdout_room); nothing then vouches for its
    forecasts, and the gate keeps the previous version until the next day's refit has a holdout."""
    import dataclasses

    from agents.retrain import gate
    from models.fit import fit
    from models.simulate import simulate

    data, _ = simulate(periods=120, channels=2, frequency="day", seed=3)
    spend = data.spend.copy()
    spend[:-1, 1] = 0.0  # launched on the last day
    fm = fit(
        dataclasses.replace(data, spend=spend),
        method="svi",
        svi_steps=300,
        samples=50,
        seed=0,
        holdout_periods=28,
    )
    assert fm.holdout is None
    ok, reason = gate(fm, [])
    assert not ok and "no holdout instead of 28" in reason
