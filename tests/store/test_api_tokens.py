"""API tokens: shown once, stored as SHA-256 only, refused once revoked; the `budgetloop token` command."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from budgetloop.cli import _register_all, app
from budgetloop.db.audit import ApiToken
from budgetloop.db.session import make_engine, session_scope
from budgetloop.errors import InputError
from budgetloop.store import audit, tokens

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_a_token_is_stored_hashed_and_authenticates_until_revoked(migrated_engine: Engine) -> None:
    with session_scope(migrated_engine) as s:
        row, secret = tokens.create_token(s, name="finance-alice", role="finance", now=T0, created_by="admin")
        token_id = row.id
    assert secret.startswith("blt_") and len(secret) > 40
    with session_scope(migrated_engine) as s:
        stored = s.execute(select(ApiToken)).scalar_one()
        assert stored.token_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr(stored.__dict__)
        found = tokens.authenticate(s, token=secret, now=T0 + timedelta(minutes=5))
        assert found is not None and found.role == "finance"
        assert found.last_used_at == T0 + timedelta(minutes=5)
        assert tokens.authenticate(s, token=secret + "x", now=T0) is None
    with session_scope(migrated_engine) as s:
        tokens.revoke_token(s, token_id=token_id, now=T0 + timedelta(hours=1), actor="admin")
    with session_scope(migrated_engine) as s:
        assert tokens.authenticate(s, token=secret, now=T0 + timedelta(hours=2)) is None
        actions = [e["action"] for e in audit.query(s, subject_type="api_token").entries]
        assert actions == ["token_created", "token_revoked"]
        assert audit.verify_chain(s).valid


def test_bad_roles_and_duplicate_names_are_refused(migrated_engine: Engine) -> None:
    with session_scope(migrated_engine) as s:
        with pytest.raises(InputError, match=r"unknown role 'boss'.*finance, approver, ops, admin"):
            tokens.create_token(s, name="x", role="boss", now=T0, created_by="admin")
        tokens.create_token(s, name="x", role="ops", now=T0, created_by="admin")
        with pytest.raises(InputError, match="exists already"):
            tokens.create_token(s, name="x", role="ops", now=T0, created_by="admin")


def test_the_cli_prints_the_token_once(sqlite_url: str) -> None:
    _register_all()
    runner = CliRunner()
    result = runner.invoke(
        app, ["token", "create", "--name", "ops-bob", "--role", "ops", "--database-url", sqlite_url]
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[0]
    engine = make_engine(sqlite_url)
    try:
        with session_scope(engine) as s:
            row = tokens.authenticate(s, token=secret, now=T0)
            assert row is not None and (row.name, row.role) == ("ops-bob", "ops")
    finally:
        engine.dispose()
    again = runner.invoke(
        app, ["token", "create", "--name", "ops-bob", "--role", "ops", "--database-url", sqlite_url]
    )
    assert again.exit_code == 2 and "exists already" in again.output
    bad = runner.invoke(
        app, ["token", "create", "--name", "z", "--role", "root", "--database-url", sqlite_url]
    )
    assert bad.exit_code == 2 and "unknown role" in bad.output
    listed = runner.invoke(app, ["token", "list", "--database-url", sqlite_url])
    assert "ops-bob" in listed.stdout and secret not in listed.stdout
