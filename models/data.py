"""Input tables for the MMM: load, validate, scale, fingerprint.

A user's table (INTERFACES section 2) becomes an :class:`MMMData`: dates, target ``y`` [T], spend
[T, C], controls [T, K], channel names and the inferred frequency ("day" or "week"). Every problem is an
:class:`~budgetloop.errors.InputError` naming the file, the row (1-based, as a spreadsheet shows the
data rows: the header is row 1, the first data row is row 2) and the column, with what to change.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from budgetloop.errors import InputError

FREQ_DAYS = {"day": 1, "week": 7}
# the end of the fix for a cell that is not a number, by the column's kind
TARGET_HINT = "fill in the period's revenue, 0 if there was none"
SPEND_HINT = "use 0 for no spend"
CONTROL_HINT = "fill in the period's value of the control"
MIXED_OFFSETS_FIX = "give plain ISO dates (YYYY-MM-DD), or the same UTC offset on every row"
ISO_DATE_FIX = "write dates as YYYY-MM-DD"

#: Fewest rows a table (and a holdout's training part) may have
MIN_PERIODS = 8


@dataclass(frozen=True)
class MMMData:
    """A validated table. Arrays are float64; dates are ``datetime64[D]``."""

    dates: np.ndarray
    y: np.ndarray
    spend: np.ndarray
    controls: np.ndarray
    channels: tuple[str, ...]
    control_names: tuple[str, ...] = ()
    frequency: str = "week"
    target: str = "y"
    source: str = "<arrays>"
    # computed once per table; not an __init__ argument, so ``dataclasses.replace`` gives the new
    # table its own cache instead of sharing (and filling) this one's
    _fingerprint: list[str] = field(default_factory=list, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        t = len(self.dates)
        c = len(self.channels)
        if self.frequency not in FREQ_DAYS:
            raise ValueError(f"`frequency` must be 'day' or 'week', got {self.frequency!r}")
        if self.y.shape != (t,):
            raise ValueError(f"`y` must have shape [{t}], got {self.y.shape}")
        if self.spend.shape != (t, c):
            raise ValueError(f"`spend` must have shape [{t}, {c}], got {self.spend.shape}")
        if self.controls.shape != (t, len(self.control_names)):
            raise ValueError(
                f"`controls` must have shape [{t}, {len(self.control_names)}], got {self.controls.shape}"
            )
        if t < MIN_PERIODS:
            raise InputError(
                f"only {t} row{'' if t == 1 else 's'}: a model needs at least {MIN_PERIODS} periods",
                file=self.source,
                fix="supply more history",
            )

    @property
    def periods(self) -> int:
        return len(self.dates)

    @property
    def y_scale(self) -> float:
        """Revenue is modelled divided by its mean."""
        m = float(np.mean(self.y))
        return m if m > 0 else 1.0

    @property
    def spend_scale(self) -> np.ndarray:
        """Each channel's spend is modelled divided by its mean over non-zero periods ([C])."""
        out = np.ones(len(self.channels))
        for j in range(len(self.channels)):
            nz = self.spend[:, j][self.spend[:, j] > 0]
            if nz.size:
                out[j] = float(nz.mean())
        return out

    @property
    def control_center(self) -> np.ndarray:
        return self.controls.mean(axis=0) if self.controls.size else np.zeros(len(self.control_names))

    @property
    def control_scale(self) -> np.ndarray:
        if not self.controls.size:
            return np.ones(len(self.control_names))
        sd = self.controls.std(axis=0)
        return np.where(sd > 0, sd, 1.0)

    def fingerprint(self) -> str:
        """sha256 over dates, target, spend, controls and names: identifies the data a model was fitted on."""
        if self._fingerprint:
            return self._fingerprint[0]
        h = hashlib.sha256()
        h.update(
            ("|".join(self.channels) + "#" + "|".join(self.control_names) + "#" + self.frequency).encode()
        )
        for arr in (self.dates.astype("datetime64[D]").astype(np.int64), self.y, self.spend, self.controls):
            h.update(
                np.ascontiguousarray(arr, dtype=np.float64 if arr.dtype != np.int64 else np.int64).tobytes()
            )
        self._fingerprint.append(h.hexdigest())
        return self._fingerprint[0]

    def head(self, n: int) -> MMMData:
        """The first ``n`` periods (for holdout refits)."""
        return MMMData(
            self.dates[:n],
            self.y[:n],
            self.spend[:n],
            self.controls[:n],
            self.channels,
            self.control_names,
            self.frequency,
            self.target,
            self.source,
        )

    def channel_index(self, name: str) -> int:
        try:
            return self.channels.index(name)
        except ValueError:
            raise InputError(
                f"unknown channel `{name}`",
                file=self.source,
                key=name,
                fix=f"use one of {list(self.channels)}",
            ) from None


def _step(diffs: np.ndarray) -> int:
    """The table's step in days: the most common gap between consecutive rows where that is a day
    or a week (among equally common gaps a supported one wins), so that one mistyped date (a gap
    of 6 or 8 days in a weekly table) does not pass for the step; the smallest gap otherwise."""
    values, counts = np.unique(diffs, return_counts=True)
    common = [int(v) for v in values[counts == counts.max()]]
    return next((v for v in common if v in FREQ_DAYS.values()), int(values[0]))


def infer_frequency(dates: np.ndarray, *, source: str, date_col: str) -> str:
    """'day' or 'week' from the spacing of strictly increasing dates; raise naming the first bad row.

    The step is the most common gap, or the smallest where that is neither a day nor a week
    (:func:`_step`). A table whose step is neither is refused as a whole; otherwise the first row
    whose gap differs is named: a missing period where the gap is a whole number of steps, a
    mistyped date where it is not."""
    days = dates.astype("datetime64[D]").astype(np.int64)
    diffs = np.diff(days)
    for i, d in enumerate(diffs):
        if d <= 0:
            what = "duplicate date" if d == 0 else "date earlier than the row above"
            raise InputError(
                f"{what} {str(dates[i + 1])[:10]}",
                file=source,
                row=i + 3,
                key=date_col,
                fix="dates must be strictly increasing, one row per period",
            )
    if diffs.size == 0:
        return "week"
    step = _step(diffs)
    if step not in FREQ_DAYS.values():
        first = int(np.flatnonzero(diffs == step)[0])
        raise InputError(
            f"rows are {step} days apart; only daily or weekly tables are supported",
            file=source,
            row=first + 3,
            key=date_col,
            fix="aggregate the table to days or weeks",
        )
    freq = "day" if step == 1 else "week"
    for i, d in enumerate(diffs):
        if d == step:
            continue
        here, above = str(dates[i + 1])[:10], str(dates[i])[:10]
        if d % step == 0:
            raise InputError(
                f"date gap: {above} is followed by {here} ({int(d)} days, expected {step})",
                file=source,
                row=i + 3,
                key=date_col,
                fix="add the missing periods (with zero spend if nothing ran) so rows are evenly spaced",
            )
        if i == 0 and diffs.size > 1 and diffs[1] == step:  # the first date is the odd one out
            raise InputError(
                f"{above} is {int(d)} days before {here} (row 3); a weekly table steps {step} days",
                file=source,
                row=2,
                key=date_col,
                fix="fix the date",
            )
        after = ""
        if i + 1 < diffs.size:
            after = f" (the next row, {str(dates[i + 2])[:10]}, is {int(diffs[i + 1])} days after it)"
        raise InputError(
            # only a weekly table gets here: every gap of a daily one is a whole number of steps
            f"{here} is {int(d)} days after {above} (row {i + 2}); a weekly table steps {step} days",
            file=source,
            row=i + 3,
            key=date_col,
            fix=f"fix the date{after}",
        )
    return freq


#: the spellings of a flag a control column may use instead of 1 / 0 (compared case-insensitively)
FLAG_VALUES = {"true": 1.0, "false": 0.0}


def _flag_column(raw: pd.Series, *, source: str, col: str) -> pd.Series | None:
    """A column of true / false cells (a promotion flag as pandas or a spreadsheet writes it) as
    1 / 0, an empty cell left NaN to be named by the caller; None for a column without such cells.
    A column that mixes them with anything else names the first other cell."""
    if raw.dtype == bool:
        return raw.astype(float)
    text = raw.astype(str).str.strip().str.lower()
    filled = (raw.notna() & (text != "")).to_numpy()
    is_flag = text.isin(list(FLAG_VALUES)).to_numpy()
    if not is_flag.any():
        return None
    _refuse_cells(
        filled & ~is_flag,
        raw,
        source=source,
        col=col,
        problem="value {value!r} is neither true nor false, as this column's other cells are",
        fix="write every cell of a flag column as true / false (or every cell as 1 / 0)",
    )
    return text.map(FLAG_VALUES)


def _refuse_cells(bad: np.ndarray, raw: pd.Series, *, source: str, col: str, problem: str, fix: str) -> None:
    """Raise :class:`InputError` at the first cell where ``bad`` holds, naming its row (the header
    is row 1) and its value (``problem`` formats ``{value}``)."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(problem.format(value=raw.iloc[i]), file=source, row=i + 2, key=col, fix=fix)


#: the largest magnitude a cell may hold: 10^18 of any currency per period is past every economy;
#: beyond it the model's single-precision inputs overflow (a spend of 1e300 failed the fit with
#: "the posterior of `beta` holds non-finite values", naming no row)
MAX_AMOUNT = 1e18


def _numeric_column(
    df: pd.DataFrame, col: str, *, source: str, nonneg: bool, hint: str, flags: bool = False
) -> np.ndarray:
    """A column of finite numbers; ``hint`` ends the fix of a bad cell (it depends on the column's
    kind). With ``flags``, a column of true / false cells reads as 1 / 0."""
    raw = df[col]
    flag = _flag_column(raw, source=source, col=col) if flags else None
    num = flag if flag is not None else pd.to_numeric(raw, errors="coerce")
    bad = num.isna() | ~np.isfinite(num.to_numpy(dtype=float, na_value=np.nan))
    _refuse_cells(
        bad.to_numpy(),
        raw,
        source=source,
        col=col,
        problem="value {value!r} is not a number",
        fix=f"every cell of this column must be a finite number ({hint})",
    )
    arr = num.to_numpy(dtype=float)
    _refuse_cells(
        np.abs(arr) > MAX_AMOUNT,
        raw,
        source=source,
        col=col,
        problem="value {value!r} is beyond any amount a table of this kind holds (" + f"{MAX_AMOUNT:.0e})",
        fix="check the cell (a stray exponent, digits run together, the wrong column?)",
    )
    if nonneg and np.any(arr < 0):
        i = int(np.flatnonzero(arr < 0)[0])
        raise InputError(
            f"negative value {arr[i]:g}", file=source, row=i + 2, key=col, fix="values must be >= 0"
        )
    return arr


def _offset_text(offset: object) -> str:
    if not isinstance(offset, pd.Timedelta | timedelta):
        return "no offset"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"offset {sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _mixed_offsets(values: pd.Series, *, source: str, date_col: str) -> InputError:
    """The error for a date column whose rows carry different UTC offsets, naming the first such row."""
    first: tuple[int, object] | None = None
    for i, value in enumerate(values):
        try:
            offset = pd.Timestamp(str(value)).utcoffset()
        except (ValueError, TypeError):
            continue
        if first is None:
            first = (i, offset)
        elif offset != first[1]:
            seen, here = (_offset_text(x) for x in (first[1], offset))
            return InputError(
                f"{value!r} has {here}, but row {first[0] + 2} has {seen}: the dates mix time zones",
                file=source,
                row=i + 2,
                key=date_col,
                fix=MIXED_OFFSETS_FIX,
            )
    return InputError(
        "the dates mix time zones",
        file=source,
        key=date_col,
        fix=MIXED_OFFSETS_FIX,
    )


def separator_hint(header: str) -> str | None:
    """What to do with a file whose header reads as one column because it is separated by ';',
    a tab or '|' rather than commas; None where the header holds none of them. A ';'-separated
    file usually comes from a spreadsheet set to a locale that writes decimal commas (1234,5)."""
    sep = next((c for c in (";", "\t", "|") if c in header), None)
    if sep is None:
        return None
    hint = f"the file seems separated by {sep!r}: save it with commas (CSV)"
    if sep == ";":
        hint += " and decimal points (1234.5, not the decimal comma 1234,5)"
    return hint


def parse_iso_date(value: object) -> np.datetime64 | None:
    """One cell read by the rule of a table's date column (:func:`from_frame`): an ISO 8601 date,
    or date and time (its calendar day is kept); None for anything else (03/04/2024, 4 March 2024)."""
    if isinstance(value, str):
        value = value.strip()  # ' 2024-03-04 ' is an ISO date padded, as numbers and headers may be
    try:
        parsed = pd.to_datetime(pd.Series([value], dtype=object), errors="coerce", format="ISO8601")
    except (ValueError, TypeError):
        return None
    ts = parsed.iloc[0]
    if pd.isna(ts):
        return None
    return np.datetime64(ts.date(), "D")


def from_frame(
    df: pd.DataFrame,
    *,
    target: str,
    date: str,
    channels: list[str] | tuple[str, ...],
    controls: list[str] | tuple[str, ...] = (),
    source: str = "<table>",
) -> MMMData:
    """Validate a DataFrame into :class:`MMMData` (see the module docstring for the error contract)."""
    if not channels:
        raise InputError("no channels given", file=source, key="--channels", fix="pass --channels A,B,...")
    names = [date, target, *channels, *controls]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(
            f"column(s) {dup} named more than once", file=source, key=dup[0], fix="name each column once"
        )
    for col in names:
        if col not in df.columns:
            fix = f"the table's columns are {list(map(str, df.columns))}"
            hint = separator_hint(str(df.columns[0])) if len(df.columns) == 1 else None
            if hint is not None:  # one column: the file is not comma-separated
                fix += f"; {hint}"
            raise InputError("column not found", file=source, key=col, fix=fix)
    if len(df) == 0:
        raise InputError("the table has no rows", file=source, fix="supply one row per period")
    column = df[date].map(lambda v: v.strip() if isinstance(v, str) else v)  # padded cells, as numbers
    try:
        parsed = pd.to_datetime(column, errors="coerce", format="ISO8601")
    except ValueError:  # pandas refuses a column whose rows carry different UTC offsets
        raise _mixed_offsets(df[date], source=source, date_col=date) from None
    if parsed.isna().any():
        i = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise InputError(
            f"{df[date].iloc[i]!r} is not an ISO date",
            file=source,
            row=i + 2,
            key=date,
            fix=ISO_DATE_FIX,
        )
    dates = parsed.dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    frequency = infer_frequency(dates, source=source, date_col=date)
    y = _numeric_column(df, target, source=source, nonneg=True, hint=TARGET_HINT)
    spend = np.stack(
        [_numeric_column(df, c, source=source, nonneg=True, hint=SPEND_HINT) for c in channels], axis=1
    )
    ctrl = (
        np.stack(
            [
                _numeric_column(df, c, source=source, nonneg=False, hint=CONTROL_HINT, flags=True)
                for c in controls
            ],
            axis=1,
        )
        if controls
        else np.zeros((len(df), 0))
    )
    for j, c in enumerate(channels):
        if not np.any(spend[:, j] > 0):
            raise InputError(
                "the channel never spends",
                file=source,
                key=c,
                fix="drop it from --channels: nothing to learn",
            )
    if not np.any(y > 0):
        raise InputError("the target is zero in every row", file=source, key=target, fix="check --target")
    return MMMData(
        dates=dates,
        y=y,
        spend=spend,
        controls=ctrl,
        channels=tuple(channels),
        control_names=tuple(controls),
        frequency=frequency,
        target=target,
        source=source,
    )


def load_csv(
    path: str | Path,
    *,
    target: str,
    date: str,
    channels: list[str] | tuple[str, ...],
    controls: list[str] | tuple[str, ...] = (),
) -> MMMData:
    """Read and validate a CSV table (INTERFACES section 2)."""
    p = Path(path)
    source = str(path)
    check_input_file(p, source=source, fix="check the path")
    df = read_csv_strings(p, source=source, fix="save the table as comma-separated UTF-8 with a header row")
    return from_frame(df, target=target, date=date, channels=channels, controls=controls, source=source)


def check_input_file(path: Path, *, source: str, fix: str) -> None:
    """Refuse a path that is no file: a folder is named as one (not as missing)."""
    if path.is_dir():
        raise InputError("is a directory, not a file", file=source, fix="give the path of the CSV file in it")
    if path.exists() and not path.is_file():
        raise InputError(
            "is not a regular file (a device, a pipe or a socket)",
            file=source,
            fix="give the path of a CSV file",
        )
    if not path.is_file():
        raise InputError("file not found", file=source, fix=fix)


def read_csv_strings(path: Path, *, source: str, fix: str) -> pd.DataFrame:
    """A CSV file as a frame of strings whose columns line up with its header, read in one pass.

    A header that names a column twice is refused (pandas would silently rename the second
    ``name.1``), and so is a row with more fields than the header, naming its line, unless the extra
    fields are empty: a trailing comma on the rows, as some spreadsheets write, is ignored (pandas
    would take a table whose rows all end in a comma as having an index column and shift every
    column by one). Blank lines are skipped; a short row's missing cells are empty, which the
    column checks then name. ``fix`` is the advice for a file that is no readable CSV at all.

    Header names are stripped of surrounding spaces (``date, revenue ,tv`` names ``revenue``), as
    the command line strips the names it is given; two names equal once stripped are refused. A
    one-column header holding ';' (or a tab, '|') whose rows split on their decimal commas is named
    as a file separated by ';', not as rows with too many fields.
    """
    rows: list[list[str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InputError("the file is empty", file=source, fix=fix)
            raw_header = header
            header = [h.strip() for h in header]
            names = [h for h in header if h]
            dup = sorted({h for h in names if names.count(h) > 1})
            if dup:
                cols = [i + 1 for i, h in enumerate(header) if h == dup[0]]
                spelled = sorted({repr(raw_header[c - 1]) for c in cols})
                how = (
                    f": {', '.join(spelled)} once the spaces around them are removed"
                    if len(spelled) > 1
                    else ""
                )
                raise InputError(
                    f"the header names column {dup[0]!r} more than once (columns {cols}{how})",
                    file=source,
                    key=dup[0],
                    fix="give every column its own name, or delete the copy",
                )
            width = len(header)
            for record in reader:
                if not record:
                    continue
                if len(record) > width and any(f.strip() for f in record[width:]):
                    hint = separator_hint(header[0]) if width == 1 else None
                    if hint is not None:
                        raise InputError(
                            f"the header is one column, {raw_header[0]!r}, and the rows split on "
                            "commas inside their values (decimal commas?)",
                            file=source,
                            row=reader.line_num,
                            fix=hint,
                        )
                    raise InputError(
                        f"the row has {len(record)} fields but the header names {width} columns",
                        file=source,
                        row=reader.line_num,
                        fix="remove the extra values, or add a name for their column to the header",
                    )
                rows.append(record[:width] + [""] * (width - len(record)))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(
            f"not a readable CSV ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            file=source,
            fix=fix,
        ) from None
    # a column without a name gets pandas' name for it, so it never collides with a named one
    columns = [h if h else f"Unnamed: {i}" for i, h in enumerate(header)]
    return pd.DataFrame(rows, columns=columns, dtype=str)
