"""`budgetloop policy validate|schema|apply|show`: the guardrail policy from the command line.

``validate`` exits 0 with a one-line summary (then a ``warning:`` line, on stderr, for each thing that is
valid but probably not meant, such as no approvers), or 2 with every problem (``path (line N): what — fix``)
or with why the file cannot be read (missing, a folder, not UTF-8).
``schema`` writes the JSON Schema editors use. ``apply`` records a new version in the database (an
invalid one is stored as rejected and never becomes active); ``show`` prints the active version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from budgetloop.cli import app
from budgetloop.errors import InputError, PolicyError

if TYPE_CHECKING:
    from guardrails.policy import Policy

policy_app = typer.Typer(
    name="policy",
    help="Validate, export the schema of, apply and show the guardrail policy.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")


@policy_app.command(
    "validate", help="Check a policy YAML: exit 0 and a summary, or exit 2 and every problem."
)
def validate(path: Path = typer.Argument(..., help="The policy YAML file")) -> None:
    from guardrails.loading import load_policy

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        if not exc.problems:  # the file itself could not be read: say why
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"error: {path}: {len(exc.problems)} problem(s) in the guardrail policy:", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"ok: {path}: {policy.summary()}")
    _print_warnings(policy)


def _print_warnings(policy: Policy) -> None:
    for warning in policy.warnings():
        typer.echo(f"warning: {warning}", err=True)


@policy_app.command("schema", help="Write the policy's JSON Schema (for editors) to stdout or --out.")
def schema(out: Path | None = typer.Option(None, "--out", help="Write here instead of stdout")) -> None:
    from guardrails.schema import policy_json_schema_text

    text = policy_json_schema_text()
    if out is None:
        typer.echo(text, nl=False)
        return
    from budgetloop.fileio import write_output

    write_output(out, text)
    typer.echo(f"wrote {out}")


@policy_app.command(
    "apply", help="Record a policy version in the database (invalid ones are kept as rejected)."
)
def apply(
    path: Path = typer.Argument(..., help="The policy YAML file"),
    author: str = typer.Option(..., "--author", help="Who changes the policy (kept in the audit log)"),
    database_url: str | None = typer.Option(None, "--database-url", help="Default: BUDGETLOOP_DATABASE_URL"),
) -> None:
    from budgetloop.clock import WallClock
    from budgetloop.db.session import make_engine, session_scope, upgrade_database
    from budgetloop.fileio import read_user_text
    from budgetloop.store.policy import record_policy
    from guardrails.loading import parse_policy

    text = read_user_text(path, what="the policy file")  # InputError (exit 2) says why it cannot be read
    url = _database_url(database_url)
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            record = record_policy(session, text=text, source=str(path), author=author, now=WallClock().now())
    finally:
        engine.dispose()
    if not record.valid:
        typer.echo(
            f"error: {path}: rejected as version {record.version}; the active policy is unchanged:", err=True
        )
        for problem in record.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(2)
    typer.echo(f"ok: {path}: active as version {record.version} (sha256 {record.sha256[:12]})")
    _print_warnings(parse_policy(text, source=str(path)))


@policy_app.command("show", help="Print the active policy version (the last valid one).")
def show(
    database_url: str | None = typer.Option(None, "--database-url", help="Default: BUDGETLOOP_DATABASE_URL"),
) -> None:
    from budgetloop.db.session import DATABASE_URL_ENV, open_existing_database, session_scope
    from budgetloop.store.policy import active_policy_record

    url = _database_url(database_url)
    source = (
        "--database-url" if database_url else (DATABASE_URL_ENV if os.environ.get(DATABASE_URL_ENV) else None)
    )
    engine = open_existing_database(url, source=source)
    try:
        with session_scope(engine) as session:
            record = active_policy_record(session)
    finally:
        engine.dispose()
    if record is None:
        raise InputError(
            "no valid policy has been applied yet",
            fix="run `budgetloop policy apply POLICY.yaml --author NAME`",
        )
    typer.echo(f"# version {record.version} by {record.author} at {record.created_at.isoformat()}")
    typer.echo(record.text, nl=False)


def _database_url(given: str | None) -> str:
    if given:
        return given
    from budgetloop.config import load_settings

    return os.environ.get("BUDGETLOOP_DATABASE_URL") or load_settings().database_url
