"""`budgetloop scenario`: not built yet, owned by issue 4 (planner)."""

from __future__ import annotations

import typer

from budgetloop.cli import app, not_built_yet


@app.command(
    "scenario",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Not built yet (issue 4 (planner)).",
)
def scenario(ctx: typer.Context) -> None:
    not_built_yet("scenario", "issue 4 (planner)")
