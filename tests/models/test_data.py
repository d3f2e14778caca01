"""Loading tables: frequency, scaling, fingerprint; every bad input names file, row and column."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from budgetloop.errors import InputError
from models.data import load_csv
from models.lift import load_lift_tests, to_arrays


def _table(path: Path, rows: int = 12, step: int = 7, **overrides: list[object]) -> Path:
    dates = pd.date_range("2024-01-01", periods=rows, freq=f"{step}D").strftime("%Y-%m-%d")
    df = pd.DataFrame(
        {
            "week": list(dates),
            "revenue": [1000.0 + 10 * i for i in range(rows)],
            "tv": [100.0 + i for i in range(rows)],
            "search": [50.0 if i % 3 else 0.0 for i in range(rows)],
            "price": [9.5] * rows,
        }
    )
    for col, values in overrides.items():
        df[col] = values
    df.to_csv(path, index=False)
    return path


def _load(path: Path, **kw: object) -> object:
    args: dict[str, object] = {"target": "revenue", "date": "week", "channels": ["tv", "search"]}
    args.update(kw)
    return load_csv(path, **args)  # type: ignore[arg-type]


def test_weekly_table_loads_scales_and_fingerprints(tmp_path: Path) -> None:
    data = load_csv(
        _table(tmp_path / "t.csv"),
        target="revenue",
        date="week",
        channels=["tv", "search"],
        controls=["price"],
    )
    assert data.frequency == "week" and data.periods == 12
    assert data.spend.shape == (12, 2) and data.controls.shape == (12, 1)
    assert data.y_scale == pytest.approx(np.mean(data.y))
    assert data.spend_scale[1] == pytest.approx(50.0)  # mean of the non-zero weeks only
    again = load_csv(
        _table(tmp_path / "u.csv"),
        target="revenue",
        date="week",
        channels=["tv", "search"],
        controls=["price"],
    )
    assert data.fingerprint() == again.fingerprint() and len(data.fingerprint()) == 64
    other = load_csv(
        _table(tmp_path / "v.csv", tv=[101.0] * 12), target="revenue", date="week", channels=["tv", "search"]
    )
    assert other.fingerprint() != data.fingerprint()


def test_daily_table_is_recognised(tmp_path: Path) -> None:
    assert (
        load_csv(
            _table(tmp_path / "d.csv", rows=20, step=1), target="revenue", date="week", channels=["tv"]
        ).frequency
        == "day"
    )


@pytest.mark.parametrize(
    ("kw", "overrides", "pattern"),
    [
        ({"target": "sales"}, {}, r"`sales`: column not found"),
        ({}, {"tv": [100.0] * 4 + [-5.0] + [100.0] * 7}, r"row 6, `tv`: negative value -5"),
        ({}, {"search": [50.0] * 3 + ["abc"] + [50.0] * 8}, r"row 5, `search`: value 'abc' is not a number"),
        # a spend of 1e300 overflowed the model's inputs: "the posterior of `beta` holds non-finite values"
        (
            {},
            {"search": [50.0] * 6 + [1e300] + [50.0] * 5},
            r"row 8, `search`: value '1e\+300' is beyond any amount",
        ),
        (
            {},
            {"week": ["2024-01-01", "2024-01-08", "2024-01-08"] + [f"2024-02-{d:02d}" for d in range(1, 10)]},
            r"row 4, `week`: duplicate date 2024-01-08",
        ),
        (
            {},
            {"week": ["2024-01-01", "2024-01-08", "2024-01-22"] + [f"2024-{m:02d}-05" for m in range(2, 11)]},
            r"row 4, `week`: date gap",
        ),
        (
            {},
            {"week": ["2024-01-01", "yesterday"] + [f"2024-02-{d:02d}" for d in range(1, 11)]},
            r"row 3, `week`: 'yesterday' is not an ISO date",
        ),
    ],
)
def test_bad_tables_name_file_row_and_column(
    tmp_path: Path, kw: dict[str, object], overrides: dict[str, list[object]], pattern: str
) -> None:
    path = _table(tmp_path / "bad.csv", **overrides)
    with pytest.raises(InputError, match=pattern) as err:
        _load(path, **kw)
    assert str(path) in str(err.value)


def test_lift_tests_are_placed_on_rows_and_checked(tmp_path: Path) -> None:
    data = _load(_table(tmp_path / "t.csv"))
    lt = tmp_path / "lift.csv"
    lt.write_text(
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        "tv,2024-01-15,2024-01-29,-150,300,30\n"
    )
    tests = load_lift_tests(lt)
    arr = to_arrays(tests, data, source=str(lt))  # type: ignore[arg-type]
    assert arr is not None
    assert arr.window[0].tolist() == [0, 0, 1, 1, 1] + [0] * 7
    assert arr.delta[0] == pytest.approx(-50.0 / data.spend_scale[0])  # type: ignore[attr-defined]
    lt.write_text(
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        "radio,2024-01-15,2024-01-29,-150,300,30\n"
    )
    with pytest.raises(InputError, match=r"row 2, `channel`: unknown channel `radio`"):
        to_arrays(load_lift_tests(lt), data, source=str(lt))  # type: ignore[arg-type]
    lt.write_text("channel,start,end,spend_delta,incremental_revenue\ntv,2024-01-15,2024-01-29,-150,300\n")
    with pytest.raises(InputError, match="`incremental_revenue_se`: column not found"):
        load_lift_tests(lt)


def test_dates_with_mixed_utc_offsets_name_the_row_and_the_fix(tmp_path: Path) -> None:
    weeks = [
        f"{d}T00:00:00+00:00" for d in pd.date_range("2024-01-01", periods=12, freq="7D").strftime("%Y-%m-%d")
    ]
    weeks[5] = weeks[5].replace("+00:00", "+01:00")
    path = _table(tmp_path / "tz.csv", week=weeks)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"row 7, `week`: .*\+01:00.*mix time zones") as err:
        _load(path)
    assert str(path) in str(err.value) and "YYYY-MM-DD" in str(err.value)
    same = _table(tmp_path / "same.csv", week=[w.replace("+01:00", "+00:00") for w in weeks])  # type: ignore[arg-type]
    assert _load(same).periods == 12  # type: ignore[attr-defined]


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_table_separated_by_something_else_than_commas_says_so(tmp_path: Path, sep: str) -> None:
    path = _table(tmp_path / "semi.csv")
    path.write_text(path.read_text().replace(",", sep))
    hint = re.escape(f"separated by {sep!r}: save it with commas")
    with pytest.raises(InputError, match=rf"`week`: column not found.*{hint}"):
        _load(path)


def test_a_repeated_header_name_is_refused_not_renamed(tmp_path: Path) -> None:
    path = _table(tmp_path / "dup.csv")
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("price", "tv")  # week,revenue,tv,search,tv
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"`tv`: the header names column 'tv' more than once") as err:
        _load(path)
    assert str(path) in str(err.value)


def test_a_trailing_comma_on_the_rows_is_ignored_but_an_extra_value_names_its_row(tmp_path: Path) -> None:
    plain = _table(tmp_path / "plain.csv")
    lines = plain.read_text().splitlines()
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("\n".join([lines[0]] + [line + "," for line in lines[1:]]) + "\n")
    got, want = _load(trailing), _load(plain)
    assert got.fingerprint() == want.fingerprint()  # type: ignore[attr-defined]
    some = tmp_path / "some.csv"  # only some rows end in a comma
    some.write_text("\n".join([line + ("," if i % 2 else "") for i, line in enumerate(lines)]) + "\n")
    assert _load(some).fingerprint() == want.fingerprint()  # type: ignore[attr-defined]
    extra = tmp_path / "extra.csv"
    extra.write_text("\n".join([*lines[:4], lines[4] + ",7", *lines[5:]]) + "\n")
    with pytest.raises(InputError, match=r"row 5: the row has 6 fields but the header names 5") as err:
        _load(extra)
    assert str(extra) in str(err.value)


@pytest.mark.parametrize(
    ("col", "kw", "hint"),
    [
        ("tv", {}, "use 0 for no spend"),
        ("revenue", {}, "fill in the period's revenue"),
        ("price", {"controls": ["price"]}, "fill in the period's value of the control"),
    ],
)
def test_the_fix_for_a_non_number_fits_the_column(
    tmp_path: Path, col: str, kw: dict[str, object], hint: str
) -> None:
    path = _table(tmp_path / "t.csv", **{col: [1.0] * 3 + ["n/a"] + [1.0] * 8})
    with pytest.raises(InputError, match=rf"row 5, `{col}`: value 'n/a' is not a number") as err:
        _load(path, **kw)
    assert hint in str(err.value)
    assert ("spend" in str(err.value)) == (col == "tv")


def test_lift_csv_header_and_rows_are_checked_like_the_table(tmp_path: Path) -> None:
    head = "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se"
    lt = tmp_path / "lift.csv"
    lt.write_text(head + ",channel\ntv,2024-01-15,2024-01-29,-150,300,30,x\n")
    with pytest.raises(InputError, match=r"`channel`: the header names column 'channel' more than once"):
        load_lift_tests(lt)
    lt.write_text(head + "\ntv,2024-01-15,2024-01-29,-150,300,30,extra\n")
    with pytest.raises(InputError, match=r"lift.csv, row 2: the row has 7 fields but the header names 6"):
        load_lift_tests(lt)
    lt.write_text(head + "\ntv,2024-01-15,2024-01-29,-150,300,30,\n")
    (test,) = load_lift_tests(lt)
    assert (test.channel, test.spend_delta, test.incremental_revenue_se) == ("tv", -150.0, 30.0)


def test_a_lift_window_reaching_past_the_table_is_refused(tmp_path: Path) -> None:
    data = _load(_table(tmp_path / "t.csv"))  # weekly, 2024-01-01 .. 2024-03-18
    lt = tmp_path / "lift.csv"
    head = "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
    for window, key in (("2023-12-04,2024-01-08", "start"), ("2024-03-11,2024-04-01", "end")):
        lt.write_text(head + f"tv,{window},-150,300,30\n")
        with pytest.raises(InputError) as err:
            to_arrays(load_lift_tests(lt), data, source=str(lt))  # type: ignore[arg-type]
        msg = str(err.value)
        assert err.value.row == 2 and err.value.key == key and str(lt) in msg
        assert "must lie within the table's dates, 2024-01-01 to 2024-03-18" in msg
    # a window that ends inside the last row's week covers no missing row: accepted
    lt.write_text(head + "tv,2024-03-11,2024-03-24,-150,300,30\n")
    arr = to_arrays(load_lift_tests(lt), data, source=str(lt))  # type: ignore[arg-type]
    assert arr is not None and arr.window[0].tolist() == [0] * 10 + [1, 1]


def test_a_replaced_table_keeps_its_own_fingerprint() -> None:
    """``dataclasses.replace`` on a table gave the copy the original's fingerprint cache: the copy's
    hash landed in it first and the original then reported the copy's (a saved model failed its
    own check on load)."""
    from dataclasses import replace

    from models.simulate import simulate

    data, _ = simulate(periods=30, channels=2, seed=1)
    changed = replace(data, spend=data.spend * 2.0)
    assert changed.fingerprint() != data.fingerprint()
    assert data.fingerprint() == replace(data).fingerprint()


def test_a_control_of_true_and_false_flags_reads_as_one_and_zero(tmp_path: Path) -> None:
    """A promotion flag as pandas or a spreadsheet writes it (True / FALSE / true) is a 0/1 control;
    a flag column with an empty cell or another value names that cell; spend and revenue take
    numbers only."""
    flags = ["True", "FALSE", " true", "False"] * 3
    data = _load(_table(tmp_path / "t.csv", promo=flags), controls=["price", "promo"])
    assert data.controls[:, 1].tolist() == [1.0, 0.0, 1.0, 0.0] * 3  # type: ignore[attr-defined]
    gap = _table(tmp_path / "gap.csv", promo=[*flags[:6], "", *flags[7:]])
    with pytest.raises(InputError, match=r"row 8, `promo`: value .* is not a number") as err:
        _load(gap, controls=["promo"])
    mixed = _table(tmp_path / "mixed.csv", promo=[*flags[:6], "1", *flags[7:]])
    with pytest.raises(InputError, match=r"row 8, `promo`: value '1' is neither true nor false") as err:
        _load(mixed, controls=["promo"])
    assert "write every cell of a flag column as true / false" in str(err.value)
    with pytest.raises(InputError, match=r"row 2, `tv`: value 'True' is not a number"):
        _load(_table(tmp_path / "spend.csv", tv=flags))


def _weeks(rows: int = 12) -> list[str]:
    return list(pd.date_range("2024-01-01", periods=rows, freq="7D").strftime("%Y-%m-%d"))


@pytest.mark.parametrize(("shift", "gap", "after"), [(1, 8, 6), (-1, 6, 8)])
def test_one_mistyped_date_in_a_weekly_table_names_its_row(
    tmp_path: Path, shift: int, gap: int, after: int
) -> None:
    """The step is the table's most common gap, not its smallest: one date moved by a day is named
    with its row (header = row 1) and the fix, not taken for a table of 6-day periods."""
    weeks = _weeks()
    moved = str((pd.Timestamp(weeks[6]) + pd.Timedelta(days=shift)).date())
    weeks[6] = moved  # data row 7: row 8 of the file
    with pytest.raises(InputError) as err:
        _load(_table(tmp_path / "t.csv", week=weeks))  # type: ignore[arg-type]
    msg = str(err.value)
    assert err.value.row == 8 and err.value.key == "week"
    assert f"{moved} is {gap} days after {weeks[5]} (row 7); a weekly table steps 7 days" in msg
    assert f"fix the date (the next row, {weeks[7]}, is {after} days after it)" in msg
    assert "only daily or weekly" not in msg


def test_a_mistyped_first_date_names_the_first_row(tmp_path: Path) -> None:
    weeks = _weeks()
    weeks[0] = "2024-01-02"  # 6 days before the second row, whose gaps are all 7
    with pytest.raises(InputError) as err:
        _load(_table(tmp_path / "t.csv", week=weeks))  # type: ignore[arg-type]
    assert err.value.row == 2 and "2024-01-02 is 6 days before 2024-01-08 (row 3)" in str(err.value)


@pytest.mark.parametrize(("step", "days"), [(2, "2 days"), (30, "30 days")])
def test_a_table_of_other_periods_is_still_refused_as_a_whole(tmp_path: Path, step: int, days: str) -> None:
    with pytest.raises(InputError, match=rf"row 3, `week`: rows are {days} apart; only daily or weekly"):
        _load(_table(tmp_path / "t.csv", step=step))


@pytest.mark.parametrize("value", ["03/04/2024", "4 March 2024", "2024-W10"])
def test_lift_test_dates_follow_the_tables_iso_rule(tmp_path: Path, value: str) -> None:
    """03/04/2024 was read as March 4 (or, elsewhere, April 3): refused as the table's date column
    refuses it, naming file, row and column."""
    lt = tmp_path / "lift.csv"
    head = "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
    lt.write_text(head + "tv,2024-01-15,2024-01-29,-150,300,30\n" + f"tv,{value},2024-04-15,-150,300,30\n")
    with pytest.raises(InputError) as err:
        load_lift_tests(lt)
    assert str(err.value) == f"{lt}, row 3, `start`: {value!r} is not an ISO date — write dates as YYYY-MM-DD"
    lt.write_text(head + "tv,2024-01-15T00:00:00,2024-01-29,-150,300,30\n")  # the table takes it too
    assert load_lift_tests(lt)[0].start == np.datetime64("2024-01-15")


def test_a_semicolon_file_with_decimal_commas_says_so(tmp_path: Path) -> None:
    """A European spreadsheet's export: ';' between fields, ',' in the numbers. Its rows split on the
    decimal commas; the message names the separator, not a row with too many fields."""
    path = _table(tmp_path / "semi.csv", revenue=[1000.5 + i for i in range(12)])
    text = path.read_text().replace(",", ";").replace(".", ",")
    path.write_text(text)
    with pytest.raises(InputError) as err:
        _load(path)
    msg = str(err.value)
    assert str(path) in msg and "seems separated by ';'" in msg and "decimal comma" in msg, msg
    assert "fields but the header names" not in msg


def test_header_names_are_read_without_surrounding_spaces(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "week,revenue,tv,search,price"
    padded = tmp_path / "padded.csv"
    padded.write_text("\n".join(["week, revenue ,tv,search, price", *lines[1:]]) + "\n")
    got = _load(padded, controls=["price"])
    assert got.fingerprint() == _load(path, controls=["price"]).fingerprint()  # type: ignore[attr-defined]
    twice = tmp_path / "twice.csv"
    twice.write_text("\n".join(["week,revenue,tv,search, tv", *lines[1:]]) + "\n")
    with pytest.raises(InputError, match=r"`tv`: the header names column 'tv' more than once") as err:
        _load(twice)
    assert "columns [3, 5]" in str(err.value) and "' tv'" in str(err.value)


def test_dates_padded_with_spaces_are_read_like_padded_numbers(tmp_path: Path) -> None:
    """A reviewer's export padded every cell: numbers were read, dates refused as 'not an ISO date'."""
    path = _table(tmp_path / "t.csv")
    lines = path.read_text().splitlines()
    padded = tmp_path / "padded.csv"
    cells = [line.split(",") for line in lines[1:]]
    padded.write_text("\n".join([lines[0], *(",".join(f" {c} " for c in row) for row in cells)]) + "\n")
    got = _load(padded, controls=["price"])
    assert got.fingerprint() == _load(path, controls=["price"]).fingerprint()  # type: ignore[attr-defined]
    lt = tmp_path / "lift.csv"
    lt.write_text(
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        "tv, 2024-01-15 , 2024-01-29,-150,300,30\n"
    )
    test = load_lift_tests(lt)[0]
    assert (test.start, test.end) == (np.datetime64("2024-01-15"), np.datetime64("2024-01-29"))


def test_a_lift_test_given_twice_is_refused_naming_both_rows(tmp_path: Path) -> None:
    lt = tmp_path / "lift.csv"
    lt.write_text(
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        "tv,2024-01-15,2024-01-29,-150,300,30\n"
        "search,2024-01-15,2024-01-29,-50,80,30\n"
        "tv,2024-01-15,2024-01-29,-150.0,300,30\n"
    )
    with pytest.raises(InputError, match=r"lift.csv, row 4: repeats row 2 exactly .* count twice"):
        load_lift_tests(lt)


def test_a_holdout_too_large_for_one_row_names_that_row_and_the_even_spread(tmp_path: Path) -> None:
    """A holdout removing the window's whole spend: spread evenly, the share of a row that spent less
    than average is more than that row spent. The message says so, naming the row and its spend."""
    tv = [100.0] * 12
    tv[3] = 40.0  # 2024-01-22, row 5 of the table
    path = _table(tmp_path / "t.csv", tv=tv)  # type: ignore[arg-type]
    data = _load(path)
    lt = tmp_path / "lift.csv"
    lt.write_text(
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        "tv,2024-01-15,2024-01-29,-240,300,30\n"  # the window's 100 + 40 + 100, all of it
    )
    with pytest.raises(InputError) as err:
        to_arrays(load_lift_tests(lt), data, source=str(lt))  # type: ignore[arg-type]
    msg = str(err.value)
    assert err.value.row == 2 and err.value.key == "spend_delta"
    assert "spread evenly over the window's 3 rows (-80.00 per row)" in msg, msg
    assert f"on 2024-01-22 ({path} row 5), where the table shows 40.00" in msg
    assert "at most 3 x the least spend in it, 120.00" in msg


def test_one_row_and_a_folder_are_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"only 1 row: a model needs at least 8 periods"):
        _load(_table(tmp_path / "one.csv", rows=1), channels=["tv"])
    with pytest.raises(InputError, match=rf"{re.escape(str(tmp_path))}: is a directory, not a file"):
        _load(tmp_path)
    with pytest.raises(InputError, match=r"is a directory, not a file"):
        load_lift_tests(tmp_path)


def test_a_device_is_named_as_such_not_as_missing() -> None:
    """A reviewer's `budgetloop fit /dev/null` was told the file does not exist."""
    with pytest.raises(InputError, match="is not a regular file"):
        load_csv("/dev/null", target="revenue", date="week", channels=["tv"])
