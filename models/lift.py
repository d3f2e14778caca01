"""Lift tests (incrementality experiments) used to calibrate the MMM (INTERFACES section 2).

A test says: over the rows dated ``start``..``end`` inclusive, the channel's spend differed from the
table's by ``spend_delta`` in total (spread evenly over those rows; negative for a holdout), and the
revenue difference (table's spend minus changed spend) summed over those rows was
``incremental_revenue`` with standard error ``incremental_revenue_se``. Carry-over after ``end`` is
not counted. The model adds ``Normal(incremental_revenue | its own prediction, se)`` per test.

An optional ``holdout_share`` (our extension of the contract) says the test was a *geo holdout*: the
channel was switched off entirely in regions that hold that share of its spend, and the table's
spend over the window is what the other regions received (``-spend_delta`` is what the held-out
regions would have had). Such a test measures the held-out regions' whole contribution, an
*average* return over the curve from zero, not the marginal return of a small national cut; the
model predicts it as ``share x (media at the full spend - media with the channel off)`` over the
window, the regions being scaled copies of the national curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from budgetloop.errors import InputError
from models.data import (
    FREQ_DAYS,
    ISO_DATE_FIX,
    MMMData,
    check_input_file,
    parse_iso_date,
    read_csv_strings,
)

COLUMNS = ("channel", "start", "end", "spend_delta", "incremental_revenue", "incremental_revenue_se")


@dataclass(frozen=True)
class LiftTest:
    channel: str
    start: np.datetime64
    end: np.datetime64
    spend_delta: float
    incremental_revenue: float
    incremental_revenue_se: float
    holdout_share: float | None = None  # a geo holdout: the share of the channel's spend held out

    def __post_init__(self) -> None:
        if self.holdout_share is not None and not 0 < self.holdout_share < 1:
            raise ValueError(
                f"lift test on `{self.channel}`: `holdout_share` must lie in (0, 1), got {self.holdout_share}"
            )
        if self.end < self.start:
            raise ValueError(
                f"lift test on `{self.channel}`: `end` {self.end} is before `start` {self.start}"
            )
        if not self.incremental_revenue_se > 0:
            raise ValueError(f"lift test on `{self.channel}`: `incremental_revenue_se` must be > 0")

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "channel": self.channel,
            "start": str(self.start)[:10],
            "end": str(self.end)[:10],
            "spend_delta": self.spend_delta,
            "incremental_revenue": self.incremental_revenue,
            "incremental_revenue_se": self.incremental_revenue_se,
        }
        if self.holdout_share is not None:
            d["holdout_share"] = self.holdout_share
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> LiftTest:
        return cls(
            str(d["channel"]),
            np.datetime64(str(d["start"]), "D"),
            np.datetime64(str(d["end"]), "D"),
            float(d["spend_delta"]),  # type: ignore[arg-type]
            float(d["incremental_revenue"]),  # type: ignore[arg-type]
            float(d["incremental_revenue_se"]),  # type: ignore[arg-type]
            None if d.get("holdout_share") is None else float(d["holdout_share"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class LiftArrays:
    """Tests as fixed-shape arrays over the table, in scaled units: what the model consumes."""

    channel: np.ndarray  # [L] int
    window: np.ndarray  # [L, T] 1.0 inside start..end
    delta: np.ndarray  # [L] scaled spend change per row inside the window
    share: np.ndarray  # [L] geo holdout share, 0.0 for a test that changed the national spend
    rows: np.ndarray  # [L, W] int: the table rows from each test's start on (W: the longest window)
    inside: np.ndarray  # [L, W] 1.0 where that row lies inside the test's window
    observed: np.ndarray  # [L] incremental revenue / y_scale
    se: np.ndarray  # [L] standard error / y_scale


def load_lift_tests(path: str | Path) -> list[LiftTest]:
    """Read a lift-test CSV; every problem names the file, row and column."""
    source = str(path)
    p = Path(path)
    check_input_file(p, source=source, fix="check the --lift-tests path")
    df = read_csv_strings(p, source=source, fix=f"columns must be {','.join(COLUMNS)}")
    for col in COLUMNS:
        if col not in df.columns:
            raise InputError(
                "column not found", file=source, key=col, fix=f"columns must be {','.join(COLUMNS)}"
            )
    tests: list[LiftTest] = []
    for i, rec in enumerate(df.to_dict("records")):
        row = i + 2
        dates = {}
        for col in ("start", "end"):
            # the table's date column's rule: 03/04/2024 is March 4 or April 3, so refused
            day = parse_iso_date(rec[col])
            if day is None:
                raise InputError(
                    f"{rec[col]!r} is not an ISO date", file=source, row=row, key=col, fix=ISO_DATE_FIX
                )
            dates[col] = day
        nums = {}
        for col in ("spend_delta", "incremental_revenue", "incremental_revenue_se"):
            try:
                nums[col] = float(rec[col])
            except ValueError:
                raise InputError(f"{rec[col]!r} is not a number", file=source, row=row, key=col) from None
            if not np.isfinite(nums[col]):
                raise InputError(f"{rec[col]!r} is not a finite number", file=source, row=row, key=col)
        if nums["incremental_revenue_se"] <= 0:
            raise InputError("standard error must be > 0", file=source, row=row, key="incremental_revenue_se")
        if nums["spend_delta"] == 0:
            raise InputError("a test must change spend", file=source, row=row, key="spend_delta")
        if dates["end"] < dates["start"]:
            raise InputError("`end` is before `start`", file=source, row=row, key="end")
        share: float | None = None
        if str(rec.get("holdout_share", "")).strip():
            try:
                share = float(rec["holdout_share"])
            except ValueError:
                raise InputError(
                    f"{rec['holdout_share']!r} is not a number", file=source, row=row, key="holdout_share"
                ) from None
            if not 0 < share < 1:
                raise InputError(
                    f"holdout_share {share:g} is not a share",
                    file=source,
                    row=row,
                    key="holdout_share",
                    fix="give the share of the channel's spend held out, between 0 and 1, or leave it empty",
                )
            if nums["spend_delta"] > 0:
                raise InputError(
                    "a geo holdout removes spend: spend_delta must be negative",
                    file=source,
                    row=row,
                    key="spend_delta",
                )
        tests.append(
            LiftTest(
                str(rec["channel"]).strip(),
                dates["start"],
                dates["end"],
                nums["spend_delta"],
                nums["incremental_revenue"],
                nums["incremental_revenue_se"],
                share,
            )
        )
    if not tests:
        raise InputError(
            "no lift tests in the file", file=source, fix="add one row per test or drop --lift-tests"
        )
    seen: dict[LiftTest, int] = {}
    for i, test in enumerate(tests):
        first = seen.setdefault(test, i + 2)
        if first != i + 2:
            raise InputError(
                f"repeats row {first} exactly ({test.channel}, {str(test.start)[:10]}..{str(test.end)[:10]}, "
                f"spend_delta {test.spend_delta:g}): the same evidence would count twice",
                file=source,
                row=i + 2,
                fix=f"delete row {i + 2} or row {first}",
            )
    return tests


def to_arrays(tests: list[LiftTest], data: MMMData, *, source: str = "<lift tests>") -> LiftArrays | None:
    """Place tests on the table's rows; tests outside the table are refused with their row."""
    if not tests:
        return None
    days = data.dates.astype("datetime64[D]")
    t = data.periods
    scale = data.spend_scale
    ch, win, delta, share, obs, se = [], [], [], [], [], []
    for i, test in enumerate(tests):
        row = i + 2
        if test.channel not in data.channels:
            raise InputError(
                f"unknown channel `{test.channel}`",
                file=source,
                row=row,
                key="channel",
                fix=f"use one of {list(data.channels)}",
            )
        j = data.channels.index(test.channel)
        inside = (days >= test.start) & (days <= test.end)
        n = int(inside.sum())
        if n == 0:
            raise InputError(
                f"the window {str(test.start)[:10]}..{str(test.end)[:10]} holds no row of the table "
                f"({str(days[0])[:10]}..{str(days[-1])[:10]})",
                file=source,
                row=row,
                key="start",
                fix="use tests run inside the fitted period",
            )
        # a window reaching past either end would squeeze the whole test into the rows it overlaps;
        # a row stands for its whole period, from its date on, so the window may end inside the last
        # row's period but may not start before the first row's date
        step = np.timedelta64(FREQ_DAYS[data.frequency], "D")
        before, after = test.start < days[0], test.end >= days[-1] + step
        if before or after:
            first, last = str(days[0])[:10], str(days[-1])[:10]
            raise InputError(
                f"the window {str(test.start)[:10]}..{str(test.end)[:10]} reaches "
                f"{'before the first' if before else 'past the last'} row of the table ({first}..{last}), "
                "so only part of the test would be counted",
                file=source,
                row=row,
                key="start" if before else "end",
                fix=f"start..end must lie within the table's dates, {first} to {last}: "
                "drop the test or fit a table that covers its whole window",
            )
        per_row = test.spend_delta / n
        negative = np.flatnonzero(inside & (data.spend[:, j] + per_row < -1e-9))
        if test.holdout_share is None and negative.size:
            k = int(negative[0])
            least = float(data.spend[inside, j].min())
            raise InputError(
                f"spend_delta {test.spend_delta:,.2f} is spread evenly over the window's {n} row"
                f"{'s' if n > 1 else ''} ({per_row:,.2f} per row), so `{test.channel}` would spend "
                f"{data.spend[k, j] + per_row:,.2f} on {str(days[k])[:10]} ({data.source} row {k + 2}), "
                f"where the table shows {data.spend[k, j]:,.2f}",
                file=source,
                row=row,
                key="spend_delta",
                fix=f"check the window's dates (it covers the rows {str(days[inside][0])[:10]}.."
                f"{str(days[inside][-1])[:10]}); spread evenly, a holdout there can remove at most "
                f"{n} x the least spend in it, {n * least:,.2f}",
            )
        ch.append(j)
        win.append(inside.astype(float))
        delta.append(per_row / scale[j])
        share.append(test.holdout_share or 0.0)
        obs.append(test.incremental_revenue / data.y_scale)
        se.append(test.incremental_revenue_se / data.y_scale)
    windows = np.stack(win)
    starts = np.argmax(windows > 0, axis=1)
    width = int(windows.sum(axis=1).max())
    rows = np.minimum(starts[:, None] + np.arange(width)[None, :], t - 1).astype(np.int32)
    inside = np.take_along_axis(windows, rows, axis=1) * (np.arange(width)[None, :] < windows.sum(1)[:, None])
    return LiftArrays(
        np.asarray(ch, dtype=np.int32),
        windows,
        np.asarray(delta),
        np.asarray(share),
        rows,
        inside,
        np.asarray(obs),
        np.asarray(se),
    )
