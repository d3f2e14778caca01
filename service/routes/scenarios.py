"""``/scenarios``: what-if questions against the promoted model ("move 10% of social into retail for 8
weeks?"), answered with posterior bands by :mod:`agents.scenarios` and stored so decisions can cite them."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from budgetloop.db.loop import Scenario
from budgetloop.errors import InputError
from budgetloop.store import models as model_store
from service.deps import READERS, ContextDep, CurrentToken, SessionDep, allow
from service.schemas import ScenarioId

router = APIRouter(prefix="/scenarios", tags=["scenarios"])


class ScenarioCreate(BaseModel):
    # NaN and infinities are refused (422) rather than carried into the answer or the database
    model_config = {"allow_inf_nan": False}

    moves: list[str] = Field(
        default_factory=list,
        examples=[["social->retail_media:0.10"]],
        description="SOURCE->TARGET:SHARE; each share is of the source's current budget (before any move), "
        "and the shares out of one source add up to at most 1",
    )
    budgets: dict[str, float] = Field(
        default_factory=dict,
        examples=[{"search": 4500.0}],
        description="explicit daily budgets in the scenario (after the moves)",
    )
    current: dict[str, float] | None = Field(
        None, description="the current daily budgets (default: the model's last week of spend)"
    )
    weeks: int = Field(8, ge=1, le=104)
    start: date | None = Field(None, description="first day (default: the day after the model's data)")
    seed: int = 0


class ScenarioPublic(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": 4,
                    "created_by": "finance-alice",
                    "description": "social->retail_media:0.10 for 8 weeks",
                    "model_version_id": 2,
                    "request": {"moves": ["social->retail_media:0.10"], "weeks": 8},
                    "result": {
                        "revenue": {
                            "difference": {"mean": 5200.0, "p05": -800.0, "p95": 11000.0},
                            "probability_better": 0.87,
                        }
                    },
                }
            ]
        }
    }

    id: int
    created_by: str
    description: str
    model_version_id: int | None
    request: dict[str, Any]
    result: dict[str, Any] = Field(
        description="budgets, revenue bands, difference, P(better), mROAS per channel"
    )


def _public(row: Scenario) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_by": row.created_by,
        "description": row.description,
        "model_version_id": row.model_version_id,
        "request": row.request,
        "result": row.result,
    }


_FIELDS = {
    "--move": "moves",
    "--budget": "budgets",
    "--current": "current",
    "--start": "start",
    "--weeks": "weeks",
}


def _unprocessable(exc: InputError) -> HTTPException:
    """422 in FastAPI's validation shape, naming the body field (the CLI's flag mapped to it)."""
    field = _FIELDS.get(exc.key or "", exc.key or "body")
    message = exc.message + (f" — {exc.fix}" if exc.fix else "")
    return HTTPException(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


@router.post(
    "",
    response_model=ScenarioPublic,
    status_code=201,
    summary="Evaluate a what-if scenario against the promoted model and store it",
    **allow(
        *READERS,
        responses={
            400: {"description": "nothing to evaluate"},
            422: {
                "description": "a move, budget or first day that cannot be used (unknown channel, source equal "
                "to target, a share not in (0, 1] or shares of one source above 1, a negative or non-finite "
                "budget, a start outside the model's range): `detail[0].loc` names the field; or an answer "
                "that came out non-finite (then `detail` is a sentence)"
            },
            409: {"description": "no promoted model version yet"},
        },
    ),
)
def create_scenario(ctx: ContextDep, session: SessionDep, token: CurrentToken, body: ScenarioCreate) -> Any:
    # imported here: the model stack (JAX) loads on the first scenario, not when the service starts
    from agents.retrain import decode_model
    from agents.scenarios import (
        Move,
        NonFiniteResult,
        answer,
        store,
    )

    try:
        moves = [Move.parse(m) for m in body.moves]
    except InputError as exc:
        raise _unprocessable(exc) from None
    if not moves and not body.budgets:
        raise HTTPException(400, "nothing to evaluate: give `moves` (SOURCE->TARGET:SHARE) or `budgets`")
    version = model_store.promoted(session)
    if version is None:
        raise HTTPException(
            409, "no promoted model version yet: the retrain job promotes one after a healthy fit"
        )
    fm = decode_model(version.artifact, source=f"model version {version.id}")
    try:
        result = answer(
            fm,
            moves=moves,
            current=body.current or {},
            budgets=body.budgets,
            start=body.start,
            weeks=body.weeks,
            description="; ".join([*body.moves, *(f"{k}={v:g}" for k, v in body.budgets.items())]),
            seed=body.seed,
        )
        row = store(
            session,
            result=result,
            request=body.model_dump(mode="json"),
            model_version_id=version.id,
            actor=token.actor,
            now=ctx.now(),
        )
    except InputError as exc:
        raise _unprocessable(exc) from None
    except NonFiniteResult as exc:
        raise HTTPException(422, str(exc)) from None
    session.commit()
    return _public(row)


@router.get(
    "/{scenario_id}",
    response_model=ScenarioPublic,
    summary="A stored scenario and its answer",
    **allow(*READERS, responses={404: {"description": "no such scenario"}}),
)
def get_scenario(session: SessionDep, scenario_id: ScenarioId) -> Any:
    row = session.get(Scenario, scenario_id)
    if row is None:
        raise HTTPException(404, f"no scenario with id {scenario_id}")
    return _public(row)
