"""`budgetloop serve`: not built yet, owned by issue 6 (service)."""

from __future__ import annotations

import typer

from budgetloop.cli import app, not_built_yet


@app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Not built yet (issue 6 (service)).",
)
def serve(ctx: typer.Context) -> None:
    not_built_yet("serve", "issue 6 (service)")
