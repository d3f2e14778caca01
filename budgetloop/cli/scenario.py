"""`budgetloop scenario`: what if we moved budget between channels for a few weeks?"""

from __future__ import annotations

import json
import math
import os
from datetime import date, timedelta
from pathlib import Path

import typer

from budgetloop.cli import app
from budgetloop.errors import InputError


def _pairs(values: list[str], key: str) -> dict[str, float]:
    """``CHANNEL=AMOUNT`` pairs; a channel named twice, an unreadable or negative amount is refused."""
    out: dict[str, float] = {}
    for text in values:
        name, sep, amount = text.partition("=")
        name = name.strip()
        try:
            if not sep or not name:
                raise ValueError
            value = float(amount)
        except ValueError:
            raise InputError(
                f"cannot read {text!r}", key=key, fix="write CHANNEL=AMOUNT, e.g. search=4000"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise InputError(
                f"the daily budget in {text!r} must be a finite amount >= 0",
                key=key,
                fix=f"write {name}=AMOUNT with AMOUNT >= 0",
            )
        if name in out:
            raise InputError(
                f"channel {name!r} is given twice ({name}={out[name]:g} and {text.strip()})",
                key=key,
                fix=f"give {name} once",
            )
        out[name] = value
    return out


def _start(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"cannot read the date {text!r}", key="--start", fix="write an ISO date such as 2026-03-02"
        ) from None


def _sqlite_file_exists(url: str) -> None:
    """A what-if never creates a database: a SQLite file that is not there is the user's mistake."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError(
            f"cannot read the database URL {url!r}",
            key="--database-url",
            fix="write e.g. sqlite:///budgetloop.db or postgresql+psycopg://user@host/db",
        ) from None
    if not parsed.drivername.startswith("sqlite"):
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise InputError(
            f"no database at {database}",
            key="--database-url",
            fix="point it at the database the loop writes to (a what-if does not create one), or pass --model FILE",
        )


@app.command("scenario")
def scenario(
    move: list[str] = typer.Option(
        [], "--move", help="SOURCE->TARGET:SHARE, e.g. social->retail_media:0.10 (repeatable)."
    ),
    budget: list[str] = typer.Option(
        [], "--budget", help="CHANNEL=DAILY_AMOUNT in the scenario (repeatable)."
    ),
    current: list[str] = typer.Option(
        [], "--current", help="CHANNEL=DAILY_AMOUNT of the current plan (default: last 7 days' spend)."
    ),
    weeks: int = typer.Option(8, "--weeks", min=1, max=104, help="How long the scenario holds."),
    start: str | None = typer.Option(
        None, "--start", help="First day (default: the day after the model's data)."
    ),
    model: Path | None = typer.Option(
        None, "--model", help="A model document from `budgetloop fit --model-out`."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", help="Use the promoted model version here."
    ),
    out: Path | None = typer.Option(None, "--out", help="Also write the result as JSON here."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Predicted revenue, mROAS per channel and credible bands of a scenario against the current plan."""
    from agents.retrain import decode_model
    from agents.scenarios import (
        Move,
        apply_moves,
        check_budgets,
        check_start,
        ensure_finite,
        evaluate,
        recent_daily_budgets,
        store,
    )
    from budgetloop.clock import WallClock
    from budgetloop.config import load_settings
    from budgetloop.db.session import make_engine, session_scope, upgrade_database
    from budgetloop.store import models as model_store
    from models.serialize import load

    if not move and not budget:
        raise InputError(
            "nothing to evaluate",
            key="--move",
            fix="pass --move SOURCE->TARGET:SHARE or --budget CHANNEL=AMOUNT",
        )
    moves = [Move.parse(m) for m in move]
    given_current = _pairs(current, "--current")
    given_budgets = _pairs(budget, "--budget")
    first_day = _start(start) if start else None
    engine = None
    version_id = None
    if model is not None:
        if not model.is_file():
            raise InputError(f"no such file: {model}", key="--model")
        fm = load(model)
    else:
        url = database_url or os.environ.get("BUDGETLOOP_DATABASE_URL") or load_settings().database_url
        _sqlite_file_exists(url)
        upgrade_database(url)
        engine = make_engine(url)
        with session_scope(engine) as session:
            version = model_store.promoted(session)
            if version is None:
                raise InputError(
                    "no promoted model version in the database",
                    key="--database-url",
                    fix="run the retrain job first, or pass --model FILE",
                )
            fm = decode_model(version.artifact)
            version_id = version.id
    last = date.fromisoformat(str(fm.data.dates[-1])[:10])
    first = first_day or last + timedelta(days=1)
    channels = list(fm.channels)
    check_budgets(given_current, channels, "--current")
    check_budgets(given_budgets, channels, "--budget")
    check_start(fm, first)
    # the current plan: what --current gives, the model's last week for every channel it leaves out
    base = {**recent_daily_budgets(fm), **given_current}
    planned = apply_moves(base, moves, channels)
    planned.update(given_budgets)
    description = "; ".join(move + budget) + f" for {weeks} weeks"
    result = evaluate(
        fm, current=base, scenario=planned, start=first, days=7 * weeks, description=description, seed=seed
    )
    body = result.to_dict()
    ensure_finite(body)
    if engine is not None:
        with session_scope(engine) as session:
            row = store(
                session,
                result=result,
                request={"move": move, "budget": budget, "weeks": weeks},
                model_version_id=version_id,
                actor="cli",
                now=WallClock().now(),
            )
            body["id"] = row.id
        engine.dispose()
    text = json.dumps(body, indent=2, allow_nan=False)
    if out is not None:
        out.write_text(text + "\n")
    typer.echo(text)
