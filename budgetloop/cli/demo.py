"""`budgetloop demo`: not built yet, owned by issue 6 (closed-loop demo)."""

from __future__ import annotations

import typer

from budgetloop.cli import app, not_built_yet


@app.command(
    "demo",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Not built yet (issue 6 (closed-loop demo)).",
)
def demo(ctx: typer.Context) -> None:
    not_built_yet("demo", "issue 6 (closed-loop demo)")
