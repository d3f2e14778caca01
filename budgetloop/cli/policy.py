"""`budgetloop policy validate`: not built yet, owned by issue 4 (guardrails)."""

from __future__ import annotations

import typer

from budgetloop.cli import app, not_built_yet


@app.command(
    "policy",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Not built yet (issue 4 (guardrails)).",
)
def policy(ctx: typer.Context) -> None:
    not_built_yet("policy validate", "issue 4 (guardrails)")
