"""The migration chain builds exactly the schema the table modules declare, and unbuilds it.

Covers every revision in ``migrations/versions`` (not only 0001): upgrade from an empty database to
head, no drift between the migrated schema and ``budgetloop.db.tables.metadata``, downgrade to base,
and upgrade again (so each downgrade really undoes its upgrade). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from budgetloop.db.session import (
    MIGRATIONS_DIR,
    alembic_config,
    downgrade_database,
    make_engine,
    upgrade_database,
)
from budgetloop.db.tables import metadata

# Tables that exist at run time but are created by a library, not by our migrations.
FOREIGN_TABLES = {"apscheduler_jobs"}


def _include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "table" and name in FOREIGN_TABLES:
        return False
    table = getattr(obj, "table", None)
    return not (table is not None and table.name in FOREIGN_TABLES)


def _drift(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": False, "include_object": _include}
        )
        return list(compare_metadata(context, metadata))


def _user_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"} - FOREIGN_TABLES


def test_chain_is_linear_and_ends_at_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = script.get_heads()
    assert len(heads) == 1, f"the migration chain has several heads {heads}; give each revision one parent"
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    assert MIGRATIONS_DIR.is_dir()


def test_upgrade_has_no_drift_and_downgrade_empties(database_url: str) -> None:
    upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        assert _user_tables(engine) == set(metadata.tables) - FOREIGN_TABLES
        drift = _drift(engine)
        assert drift == [], f"the migrated schema differs from the table modules: {drift}"

        downgrade_database(database_url, "base")
        engine.dispose()
        assert _user_tables(engine) == set()

        upgrade_database(database_url)
        engine.dispose()
        assert _drift(engine) == []
    finally:
        engine.dispose()


def test_each_revision_downgrades_on_its_own(database_url: str) -> None:
    """Step down one revision at a time: every downgrade leaves a schema the next one can undo."""
    upgrade_database(database_url)
    script = ScriptDirectory.from_config(alembic_config(database_url))
    engine = make_engine(database_url)
    try:
        for revision in script.walk_revisions():
            downgrade_database(database_url, revision.down_revision or "base")  # type: ignore[arg-type]
        engine.dispose()
        assert _user_tables(engine) == set()
    finally:
        engine.dispose()
