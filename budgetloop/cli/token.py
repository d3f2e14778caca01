"""`budgetloop token create|revoke|list`: bearer tokens for the REST API (shown once, stored hashed)."""

from __future__ import annotations

import getpass
import os

import typer

from budgetloop.cli import app, fail
from budgetloop.clock import WallClock
from budgetloop.config import load_settings
from budgetloop.db.session import (
    DATABASE_URL_ENV,
    make_engine,
    open_existing_database,
    session_scope,
    upgrade_database,
)
from budgetloop.errors import InputError
from budgetloop.store import tokens

token_app = typer.Typer(
    help="API tokens for the REST API (roles: finance, approver, ops, admin).", no_args_is_help=True
)
app.add_typer(token_app, name="token")

DB_HELP = "database URL (default: BUDGETLOOP_DATABASE_URL, else the SQLite file under ./var/)"


def _url(database_url: str | None) -> tuple[str, str | None]:
    """The URL and where it came from (the flag, the variable, or the default), for messages."""
    if database_url:
        return database_url, "--database-url"
    return load_settings().database_url, (DATABASE_URL_ENV if os.environ.get(DATABASE_URL_ENV) else None)


@token_app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="who or what holds the token, e.g. finance-alice"),
    role: str = typer.Option(..., "--role", help="finance | approver | ops | admin"),
    slack_user_id: str | None = typer.Option(None, "--slack-user-id", help="approvers: their Slack user id"),
    database_url: str | None = typer.Option(None, "--database-url", help=DB_HELP),
) -> None:
    """Create a token and print it once; only its SHA-256 is stored."""
    url, source = _url(database_url)
    upgrade_database(url, source=source)
    engine = make_engine(url, source=source)
    try:
        with session_scope(engine) as session:
            row, secret = tokens.create_token(
                session,
                name=name,
                role=role,
                now=WallClock().now(),
                created_by=f"cli:{getpass.getuser()}",
                slack_user_id=slack_user_id,
            )
            token_id = row.id
    except InputError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    typer.echo(secret)
    typer.echo(f"token {token_id} ({role}) for {name!r}: store it now, it is not shown again", err=True)


@token_app.command("revoke")
def revoke(
    token_id: int = typer.Argument(..., help="the token's id (see `budgetloop token list`)"),
    database_url: str | None = typer.Option(None, "--database-url", help=DB_HELP),
) -> None:
    """Revoke a token at once; requests carrying it get 401 from then on."""
    url, source = _url(database_url)
    engine = open_existing_database(url, source=source)
    try:
        with session_scope(engine) as session:
            tokens.revoke_token(
                session, token_id=token_id, now=WallClock().now(), actor=f"cli:{getpass.getuser()}"
            )
    except LookupError as exc:
        fail(f"{exc}; list the tokens with `budgetloop token list`")
    finally:
        engine.dispose()
    typer.echo(f"token {token_id} revoked")


@token_app.command("list")
def list_(database_url: str | None = typer.Option(None, "--database-url", help=DB_HELP)) -> None:
    """Every token: id, name, role, created, revoked, last used (never the token itself)."""
    url, source = _url(database_url)
    engine = open_existing_database(url, source=source)
    try:
        with session_scope(engine) as session:
            for t in tokens.list_tokens(session):
                revoked = t.revoked_at.isoformat() if t.revoked_at else "-"
                used = t.last_used_at.isoformat() if t.last_used_at else "never"
                created = t.created_at.isoformat()
                typer.echo(f"{t.id}\t{t.name}\t{t.role}\tcreated {created}\trevoked {revoked}\tused {used}")
    finally:
        engine.dispose()
