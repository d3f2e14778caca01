"""`budgetloop ingest`: not built yet, owned by issue 2 (foundation)."""

from __future__ import annotations

import typer

from budgetloop.cli import app, not_built_yet


@app.command(
    "ingest",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Not built yet (issue 2 (foundation)).",
)
def ingest(ctx: typer.Context) -> None:
    not_built_yet("ingest", "issue 2 (foundation)")
