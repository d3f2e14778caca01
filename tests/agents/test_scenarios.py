"""What-if scenarios (`agents.scenarios`, `budgetloop scenario`): specs that are refused, mROAS at zero
spend, first days out of the model's range, and no NaN/Infinity ever written."""

from __future__ import annotations

import json
import math
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from agents.scenarios import (
    Move,
    NonFiniteResult,
    apply_moves,
    check_start,
    ensure_finite,
    evaluate,
    recent_daily_budgets,
)
from budgetloop.errors import InputError

CHANNELS = ["ch0", "ch1", "ch2"]


# ----------------------------------------------------------------------------- parsing and moves


def test_a_move_from_a_channel_into_itself_is_refused() -> None:
    with pytest.raises(InputError, match="same source and target") as exc:
        Move.parse("search->search:0.2")
    assert exc.value.key == "--move"


@pytest.mark.parametrize("text", ["a->b:-0.2", "a->b:0", "a->b:-5%"])
def test_a_share_at_or_below_zero_says_so(text: str) -> None:
    with pytest.raises(InputError, match=r"the share must be > 0") as exc:
        Move.parse(text)
    assert exc.value.key == "--move"


@pytest.mark.parametrize("text", ["a->b:1.2.3", "a->b:x", "a->b:nan%"])
def test_an_unreadable_share_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError) as exc:
        Move.parse(text)
    assert exc.value.key == "--move"


def test_shares_of_one_source_refer_to_its_current_budget_and_add_up() -> None:
    moves = [Move.parse("ch0->ch1:0.3"), Move.parse("ch0->ch2:0.3")]
    out = apply_moves({"ch0": 1000.0, "ch1": 100.0, "ch2": 100.0}, moves, CHANNELS)
    assert out == {"ch0": 400.0, "ch1": 400.0, "ch2": 400.0}


def test_shares_of_one_source_above_one_are_refused() -> None:
    moves = [Move.parse("ch0->ch1:0.7"), Move.parse("ch0->ch2:0.7")]
    with pytest.raises(InputError, match=r"add up to 1\.4") as exc:
        apply_moves({"ch0": 1000.0, "ch1": 100.0, "ch2": 100.0}, moves, CHANNELS)
    assert exc.value.key == "--move"


def test_shares_adding_up_to_exactly_one_empty_the_source() -> None:
    moves = [Move.parse("ch0->ch1:0.5"), Move.parse("ch0->ch2:50%")]
    out = apply_moves({"ch0": 333.33, "ch1": 0.0, "ch2": 0.0}, moves, CHANNELS)
    assert out["ch0"] == 0.0 and out["ch1"] + out["ch2"] == pytest.approx(333.33, abs=0.01)


def test_an_unknown_channel_names_the_models_channels_not_the_current_ones() -> None:
    with pytest.raises(InputError, match=r"unknown channel 'video'") as exc:
        apply_moves({"ch0": 10.0, "ch1": 0.0, "ch2": 0.0}, [Move.parse("ch0->video:0.5")], CHANNELS)
    assert "ch1" in str(exc.value) and exc.value.key == "--move"


def test_ensure_finite_refuses_nan_and_infinity_anywhere() -> None:
    ensure_finite({"a": [1.0, {"b": 2.0}], "c": None})
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(NonFiniteResult, match=r"result\.a\[1\]\.b"):
            ensure_finite({"a": [1.0, {"b": bad}]})


# ----------------------------------------------------------------------------- a fitted model


@pytest.fixture(scope="module")
def fitted():  # type: ignore[no-untyped-def]
    from models.fit import fit
    from models.simulate import simulate

    data, _ = simulate(periods=52, channels=3, seed=1, noise=0.05, variation=0.6, media_share=0.3)
    fm = fit(data, method="svi", svi_steps=200, samples=40, seed=0, chains=1, warmup=1)
    # half the draws with a Hill shape below 1: the curve's derivative at zero spend is infinite there
    shape = np.array(fm.draws["shape"], dtype=float)
    shape[: len(shape) // 2, 0] = 0.6
    fm.draws["shape"] = shape
    fm._cache.clear()
    return fm


def _last(fm) -> date:  # type: ignore[no-untyped-def]
    return date.fromisoformat(str(fm.data.dates[-1])[:10])


@pytest.mark.slow
def test_mroas_at_zero_spend_is_finite_without_warnings(fitted) -> None:  # type: ignore[no-untyped-def]
    current = recent_daily_budgets(fitted)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = evaluate(
            fitted,
            current=current,
            scenario={**current, "ch0": 0.0},
            start=_last(fitted) + timedelta(days=1),
            days=7,
            description="ch0=0",
        )
    body = result.to_dict()
    band = body["mroas"]["ch0"]["scenario"]
    assert all(math.isfinite(band[k]) for k in ("mean", "p05", "p95"))
    assert band["p05"] <= band["mean"] <= band["p95"]
    json.dumps(body, allow_nan=False)
    assert any("zero spend" in n for n in body["notes"])


@pytest.mark.slow
@pytest.mark.parametrize("days", [-1, 366, 365 * 70])
def test_a_start_far_from_the_models_data_is_refused(fitted, days: int) -> None:  # type: ignore[no-untyped-def]
    first = date.fromisoformat(str(fitted.data.dates[0])[:10])
    start = first + timedelta(days=days) if days < 0 else _last(fitted) + timedelta(days=days)
    with pytest.raises(InputError, match=r"start between") as exc:
        check_start(fitted, start)
    assert exc.value.key == "--start"
    current = recent_daily_budgets(fitted)
    with pytest.raises(InputError):
        evaluate(fitted, current=current, scenario=current, start=start, days=7, description="x")
    check_start(fitted, _last(fitted) + timedelta(days=365))


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def promoted_db(fitted, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    from agents.retrain import encode_model
    from budgetloop.db.session import make_engine, session_scope, upgrade_database
    from budgetloop.store import models as model_store

    url = f"sqlite:///{tmp_path_factory.mktemp('scen') / 'loop.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    with session_scope(engine) as s:
        version = model_store.save_candidate(
            s,
            artifact=encode_model(fitted),
            data_start=date.fromisoformat(str(fitted.data.dates[0])[:10]),
            data_end=_last(fitted),
            method="svi",
            healthy=True,
            fingerprint=fitted.data.fingerprint(),
            diagnostics={},
            summary={},
            now=now,
        )
        model_store.promote(s, model_version_id=version.id, reason="test", now=now)
    engine.dispose()
    return url


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from budgetloop.cli import main

    try:
        main(["scenario", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _count(url: str) -> int:
    from sqlalchemy import func, select

    from budgetloop.db.loop import Scenario
    from budgetloop.db.session import make_engine, session_scope

    engine = make_engine(url)
    with session_scope(engine) as s:
        n = int(s.scalar(select(func.count()).select_from(Scenario)) or 0)
    engine.dispose()
    return n


@pytest.mark.slow
def test_cli_zero_budget_writes_valid_json(promoted_db: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out_file = tmp_path / "s.json"
    code, out, err = _cli(
        capsys, "--budget", "ch0=0", "--weeks", "1", "--database-url", promoted_db, "--out", str(out_file)
    )
    assert code == 0, err
    strict = json.loads(out_file.read_text(), parse_constant=lambda c: pytest.fail(f"non-finite {c}"))
    assert math.isfinite(strict["mroas"]["ch0"]["scenario"]["mean"])
    json.loads(out, parse_constant=lambda c: pytest.fail(f"non-finite {c}"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "flag", "words"),
    [
        (["--start", "2099-01-01", "--move", "ch0->ch1:0.1"], "--start", "start between"),
        (["--start", "1990-01-01", "--move", "ch0->ch1:0.1"], "--start", "start between"),
        (["--start", "2026-13-01", "--move", "ch0->ch1:0.1"], "--start", "cannot read the date"),
        (["--budget", "nope=100"], "--budget", "unknown channel 'nope'"),
        (["--move", "ch0->ch0:0.2"], "--move", "same source and target"),
        (["--move", "ch0->ch1:0.7", "--move", "ch0->ch2:0.7"], "--move", "add up to 1.4"),
        (["--budget", "ch0=100", "--budget", "ch0=200"], "--budget", "given twice"),
        (["--budget", "ch0=-100"], "--budget", ">= 0"),
        (["--budget", "ch0=nan"], "--budget", ">= 0"),
        (["--move", "ch0->ch1:-0.2"], "--move", "the share must be > 0"),
        (["--current", "vid=10", "--move", "ch0->ch1:0.2"], "--current", "unknown channel 'vid'"),
    ],
)
def test_cli_wrong_specs_exit_2_naming_the_flag(  # type: ignore[no-untyped-def]
    promoted_db: str, tmp_path: Path, capsys, args: list[str], flag: str, words: str
) -> None:
    before = _count(promoted_db)
    out_file = tmp_path / "s.json"
    code, out, err = _cli(capsys, *args, "--database-url", promoted_db, "--out", str(out_file))
    assert code == 2, (out, err)
    assert f"`{flag}`" in err and words in err and "Traceback" not in err
    assert not out_file.exists() and _count(promoted_db) == before


@pytest.mark.slow
def test_cli_a_partial_current_plan_keeps_every_model_channel(promoted_db: str, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _cli(
        capsys, "--current", "ch0=0", "--move", "ch0->ch1:0.5", "--database-url", promoted_db
    )
    assert code == 0, err
    body = json.loads(out)
    assert body["budgets"]["current"]["ch0"] == 0 and set(body["budgets"]["current"]) == set(CHANNELS)


def test_cli_a_missing_database_is_not_created(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "missing.db"
    code, _out, err = _cli(capsys, "--move", "a->b:0.1", "--database-url", f"sqlite:///{missing}")
    assert code == 2 and f"no database at {missing}" in err and "`--database-url`" in err
    assert not missing.exists()
