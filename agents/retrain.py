"""The weekly retrain: fit the latest four quarters, store the version, promote it only if it is healthy.

A candidate is promoted when

1. its sampler diagnostics pass (r-hat <= 1.05, divergences <= 1%, as judged by ``models.diagnostics``),
2. its time-series holdout (refit without the last ``holdout_days``, predict them) has a MAPE below
   ``MAX_HOLDOUT_MAPE``, or its 90% predictive band holds at least ``MIN_HOLDOUT_COVERAGE`` of the
   held-out days (a noisy market's errors are noise, not a model that cannot predict), and
3. it is not wildly different from the promoted version without cause: a channel whose mROAS, or
   whose ROI where the table pins it, moved by more than ``MAX_SHIFT`` (relative) *and* left the
   previous version's 90% interval needs a new calibration point (a lift test) on that channel since
   the previous version, or it is held back. The ROI of a channel whose spend never came near zero
   (``roi_extrapolated`` in the summary, :meth:`models.fitted.FittedModel.spend_support`) is the
   curve family's extrapolation, which refits of the same data move by multiples while the marginal
   return the planner acts on stays put (measured in the demo), so it is not held against a refit.

Otherwise the previous version stays promoted and the reason is stored and audited. A young account
trains on its clean days, in whole four-week blocks, once it has ``MIN_TRAINING_DAYS`` of them.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.runtime import FitOptions
from budgetloop.db.loop import CalibrationPoint, ModelVersion
from budgetloop.errors import FitError, InputError
from budgetloop.store import metrics as metrics_store
from budgetloop.store import models as model_store
from models.data import from_frame
from models.fit import fit
from models.fitted import FittedModel, Holdout
from models.lift import LiftTest
from models.serialize import from_dict, to_dict

MAX_HOLDOUT_MAPE = 0.15
#: Where the holdout's MAPE is above ``MAX_HOLDOUT_MAPE``, the candidate still passes when the held-out
#: days fall inside its 90% predictive band as often as this: its errors are the market's own noise
#: (a daily noise of 20% gives a MAPE near 16% to a perfect model), not a model that cannot predict.
#: Of a 28-day holdout a calibrated band holds 22 or more days 95% of the time, and 19 or fewer (under
#: 0.7) once in about 850 holdouts.
MIN_HOLDOUT_COVERAGE = 0.7
#: The first model waits for eight weeks of clean data (two fewer and the yearly and weekly terms,
#: the trend and every channel's curve rest on a handful of points each).
MIN_TRAINING_DAYS = 56
MAX_SHIFT = 0.5


@dataclass(frozen=True)
class RetrainOutcome:
    version_id: int | None
    promoted: bool
    reason: str
    fit_seconds: float = 0.0
    summary: Mapping[str, Any] | None = None


ARTIFACT_DRAWS = 500  # posterior draws kept in a stored version (enough for decisions, small on disk)


def encode_model(fm: FittedModel) -> bytes:
    """The stored artifact: the serialised model (a draws subset), compressed."""
    return zlib.compress(json.dumps(to_dict(fm, max_draws=ARTIFACT_DRAWS)).encode(), level=6)


def decode_model(artifact: bytes, *, source: str = "<model version>") -> FittedModel:
    return from_dict(json.loads(zlib.decompress(artifact)), source=source)


def lift_tests_in(session: Session, *, start: date, end: date, channels: Sequence[str]) -> list[LiftTest]:
    """Calibration points whose window lies inside the training range, as lift tests."""
    rows = session.execute(
        select(CalibrationPoint)
        .where(CalibrationPoint.start >= start, CalibrationPoint.end <= end)
        .order_by(CalibrationPoint.id)
    ).scalars()
    return [
        LiftTest(
            channel=r.channel,
            start=np.datetime64(r.start, "D"),
            end=np.datetime64(r.end, "D"),
            spend_delta=r.spend_delta,
            incremental_revenue=r.incremental_revenue,
            incremental_revenue_se=r.incremental_revenue_se,
            holdout_share=_share(r.details),
        )
        for r in rows
        if r.channel in channels
    ]


def _share(details: dict[str, Any]) -> float | None:
    """A geo holdout's share of the channel's spend (points stored before it was recorded: none)."""
    share = details.get("holdout_share")
    return float(share) if isinstance(share, int | float) and 0 < share < 1 else None


def summarise(fm: FittedModel) -> dict[str, Any]:
    """ROI and mROAS per channel (mean, p05, p95), whether the ROI (or the mROAS too) is the
    priors', the holdout and the fit's warnings, for the version's record (``GET /models``)."""
    m = fm.channel_metrics()
    support = fm.spend_support()
    contraction = fm.roi_prior_contraction()
    out: dict[str, Any] = {"channels": {}}
    for i, ch in enumerate(fm.channels):
        out["channels"][ch] = {
            name: {
                "mean": float(arr[:, i].mean()),
                "p05": float(np.quantile(arr[:, i], 0.05)),
                "p95": float(np.quantile(arr[:, i], 0.95)),
            }
            for name, arr in (("roi", m.roi), ("mroas", m.mroas))
        }
        out["channels"][ch]["roi_extrapolated"] = support[i].roi_extrapolated
        out["channels"][ch]["mroas_from_prior"] = support[i].mroas_from_prior
        out["channels"][ch]["roi_prior_contraction"] = float(contraction[i])
    out["holdout"] = None if fm.holdout is None else fm.holdout.to_dict()
    out["warnings"] = list(fm.warnings())  # e.g. a day of revenue the model cannot explain
    return out


def shifts(old: Mapping[str, Any], new: Mapping[str, Any], calibrated: Set[str] = frozenset()) -> list[str]:
    """The channels of summary ``new`` (:func:`summarise`) that moved wildly from summary ``old``:
    mROAS, and ROI unless ``new`` marks it extrapolated, each more than ``MAX_SHIFT`` (relative) and
    outside ``old``'s 90% interval; neither where ``new`` marks the mROAS too as the priors'.
    Channels in ``calibrated`` (a lift test since ``old``) may move."""
    out: list[str] = []
    old_ch = old.get("channels", {})
    for ch, n in new["channels"].items():
        o = old_ch.get(ch)
        if not o or ch in calibrated:
            continue
        if n.get("mroas_from_prior"):  # flat spend: both figures are the priors', nothing to hold
            continue
        names = ("mroas",) if n.get("roi_extrapolated") else ("roi", "mroas")
        for name in names:
            a, b = o[name], n[name]
            rel = abs(b["mean"] - a["mean"]) / max(abs(a["mean"]), 1e-9)
            if rel > MAX_SHIFT and not a["p05"] <= b["mean"] <= a["p95"]:
                out.append(f"{ch} {'ROI' if name == 'roi' else 'mROAS'} {a['mean']:.2f} -> {b['mean']:.2f}")
    return out


def _shifted_without_cause(session: Session, previous: ModelVersion, summary: Mapping[str, Any]) -> list[str]:
    calibrated = {
        r.channel
        for r in session.execute(
            select(CalibrationPoint).where(CalibrationPoint.created_at >= previous.created_at)
        ).scalars()
    }
    return shifts(previous.summary, summary, calibrated)


def holdout_ok(h: Holdout) -> bool:
    if h.mape <= MAX_HOLDOUT_MAPE:
        return True
    return h.coverage_90 is not None and h.coverage_90 >= MIN_HOLDOUT_COVERAGE


def gate(fm: FittedModel, previous_reasons: list[str]) -> tuple[bool, str]:
    reasons: list[str] = []
    diag = fm.diagnostics
    if not diag.healthy:
        reasons.append("unhealthy fit: " + "; ".join(diag.reasons))
        # The likeliest cause, where the table has it: a channel whose spend never moved leaves its
        # effect and the baseline's level to trade freely, which no sampler settles.
        reasons.extend(w for s in fm.spend_support() if s.mroas_from_prior and (w := s.warning()))
    h = fm.holdout
    skipped = fm.settings.get("holdout_note") if h is None else None
    if skipped:  # asked for and impossible (a channel launched on the last day): nothing vouches for it
        reasons.append(str(skipped))
    if h is not None and not holdout_ok(h):
        covered = (
            "" if h.coverage_90 is None else f" and its 90% band held only {h.coverage_90:.0%} of the days"
        )
        reasons.append(f"holdout MAPE {h.mape:.1%} above {MAX_HOLDOUT_MAPE:.0%}{covered}")
    if previous_reasons:
        reasons.append(
            "wildly different from the promoted version without a new lift test: "
            + ", ".join(previous_reasons)
        )
    if reasons:
        return False, "kept the previous version: " + "; ".join(reasons)
    holdout = "" if h is None else f", holdout MAPE {h.mape:.1%}"
    if h is not None and h.coverage_90 is not None:
        holdout += f" with {h.coverage_90:.0%} of its days in the 90% band"
    return True, f"healthy (r-hat max {diag.r_hat_max}, divergences {diag.divergences}{holdout})"


def retrain(
    session: Session, *, now: datetime, options: FitOptions, actor: str = "retrain"
) -> RetrainOutcome:
    """Fit the latest ``options.window_days`` of clean data and promote or keep the previous version."""
    end = metrics_store.last_complete_day(session)
    if end is None:
        return RetrainOutcome(None, False, "no clean data yet: run ingestion first")
    first = metrics_store.first_complete_day(session) or end
    days = min(options.window_days, (end - first).days + 1)
    if days < MIN_TRAINING_DAYS:
        return RetrainOutcome(
            None,
            False,
            f"only {days} day(s) of clean data ({first} to {end}); the first model needs "
            f"{MIN_TRAINING_DAYS}, so it waits {MIN_TRAINING_DAYS - days} more day(s)",
        )
    if days < options.window_days:
        # A young account trains on what it has, in whole four-week blocks: each new table length
        # compiles the fit again (seconds), so the window grows once every four weeks, not weekly.
        days -= days % 28
    start = end - timedelta(days=days - 1)
    channels = metrics_store.channels(session)
    try:
        table = metrics_store.daily_table(session, start=start, end=end, channel_names=channels)
        data = from_frame(table, target="revenue", date="date", channels=channels, source="daily_metrics")
    except InputError as exc:
        return RetrainOutcome(None, False, f"training data not usable: {exc}")
    tests = lift_tests_in(session, start=start, end=end, channels=channels)
    holdout = (
        options.holdout_days if options.holdout_days and data.periods >= 3 * options.holdout_days else None
    )
    try:
        fm = fit(
            data,
            lift_tests=tests,
            method=options.method,
            chains=options.chains,
            warmup=options.warmup,
            samples=options.samples,
            seed=options.seed,
            baseline=options.baseline,
            saturation=options.saturation,
            holdout_periods=holdout,
            lift_source="calibration_points",
            # the window's length is fixed; calibration points arrive one experiment at a time, and
            # each new count or window length compiled the fit again (about 8 s a daily table)
            round_shapes="tests",
        )
    except (FitError, InputError) as exc:
        return RetrainOutcome(None, False, f"fit failed: {exc}")
    summary = summarise(fm)
    summary["lift_tests"] = len(tests)
    previous = model_store.promoted(session)
    shifted = [] if previous is None else _shifted_without_cause(session, previous, summary)
    ok, reason = gate(fm, shifted)
    version = model_store.save_candidate(
        session,
        artifact=encode_model(fm),
        data_start=start,
        data_end=end,
        method=options.method,
        healthy=fm.diagnostics.healthy,
        fingerprint=data.fingerprint(),
        diagnostics=fm.diagnostics.to_dict(),
        summary=summary,
        now=now,
        actor=actor,
    )
    if ok:
        model_store.promote(session, model_version_id=version.id, reason=reason, now=now, actor=actor)
    else:
        model_store.reject(session, model_version_id=version.id, reason=reason, now=now, actor=actor)
    return RetrainOutcome(version.id, ok, reason, float(fm.diagnostics.fit_seconds), summary)
