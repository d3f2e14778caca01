"""`budgetloop token create`: not built yet, owned by issue 5 (finance REST)."""

from __future__ import annotations

import typer

from budgetloop.cli import app, not_built_yet


@app.command(
    "token",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Not built yet (issue 5 (finance REST)).",
)
def token(ctx: typer.Context) -> None:
    not_built_yet("token create", "issue 5 (finance REST)")
