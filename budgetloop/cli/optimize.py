"""`budgetloop optimize`: not built yet, owned by issue 3 (the Bayesian MMM)."""

from __future__ import annotations

import typer

from budgetloop.cli import app, not_built_yet


@app.command(
    "optimize",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Not built yet (issue 3 (the Bayesian MMM)).",
)
def optimize(ctx: typer.Context) -> None:
    not_built_yet("optimize", "issue 3 (the Bayesian MMM)")
