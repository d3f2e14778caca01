"""Loading tables: frequency, scaling, fingerprint; every bad input names file, row and column."""

from __future__ import annotations

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
