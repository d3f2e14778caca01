"""`budgetloop scenario`: what if we moved budget between channels for a few weeks?"""

from __future__ import annotations

import json
import math
import os
from datetime import date
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
        answer,
        store,
    )
    from budgetloop.clock import WallClock
    from budgetloop.config import load_settings
    from budgetloop.db.session import open_existing_database, session_scope
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
        engine = open_existing_database(url, source="--database-url" if database_url else None)
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
    result = answer(
        fm,
        moves=moves,
        current=given_current,
        budgets=given_budgets,
        start=first_day,
        weeks=weeks,
        description="; ".join(move + budget),
        seed=seed,
    )
    body = result.to_dict()  # finite: evaluate() refuses anything else
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
