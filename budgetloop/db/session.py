"""Engines, sessions and migrations.

One session per unit of work: a request or a job opens one with :func:`session_scope`, which commits
on success and rolls back on error. Nothing below the job or route commits.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, inspect, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from budgetloop.errors import InputError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

DATABASE_URL_ENV = "BUDGETLOOP_DATABASE_URL"
URL_EXAMPLES = "sqlite:///PATH/TO/budgetloop.db or postgresql://USER@HOST:5432/DB"
# Tables that live in the database but that a library, not our migrations, creates.
LIBRARY_TABLES = frozenset({"alembic_version", "apscheduler_jobs"})


def url_source(source: str | None, url: str | URL) -> str:
    """Where the URL came from, for messages: the given ``source``, ``BUDGETLOOP_DATABASE_URL`` when the
    environment holds this very URL, else a generic name."""
    if source:
        return source
    if os.environ.get(DATABASE_URL_ENV) and os.environ.get(DATABASE_URL_ENV) == str(url):
        return DATABASE_URL_ENV
    return "the database URL"


def masked(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (also for a URL that does not parse)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def _key(label: str) -> str | None:
    """The flag or variable to name as the error's key (none for the generic label)."""
    return label if label.startswith("--") or label.isupper() else None


def _name(label: str) -> str:
    """How to tell the user where to set the URL."""
    return label if _key(label) else f"--database-url or {DATABASE_URL_ENV}"


def _fix(label: str) -> str:
    return f"set {_name(label)} to a URL such as {URL_EXAMPLES}"


def _not_sqlite(path: Path, label: str) -> InputError:
    return InputError(
        f"{path} is not a SQLite database",
        key=_key(label),
        fix=f"point {_name(label)} at a budgetloop database, or at a path where none exists yet",
    )


def _is_memory(u: URL) -> bool:
    return not u.database or u.database == ":memory:" or "mode=memory" in str(u.database)


def sqlite_path(url: str | URL) -> Path | None:
    """The file behind a SQLite URL (None for another dialect or an in-memory database)."""
    u = make_url(url) if isinstance(url, str) else url
    if u.get_backend_name() != "sqlite" or _is_memory(u):
        return None
    name = str(u.database)
    if name.startswith("file:"):  # a URI filename (uri=true)
        name = name[len("file:") :].split("?", 1)[0]
    return Path(name)


def _is_default(url: str | URL) -> bool:
    from budgetloop.config import default_database_url

    return str(url) == default_database_url()


def parse_database_url(url: str | URL, *, source: str | None = None) -> URL:
    """Parse and check a database URL before anything touches it.

    Raises :class:`InputError` (naming ``source``: the flag or variable the URL came from) for a URL
    that does not parse, a dialect other than SQLite or PostgreSQL, a driver that is not installed, a
    SQLite file whose folder does not exist (the default ``./var/`` is created), or a file that is
    not a SQLite database. ``postgresql://`` means psycopg 3."""
    label = url_source(source, url)
    try:
        u = make_url(url)
    except ArgumentError:
        raise InputError(f"{masked(url)!r} is not a database URL", key=_key(label), fix=_fix(label)) from None
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise InputError(
            f"{masked(u)}: budgetloop does not run on `{u.drivername}` (it runs on SQLite and PostgreSQL)",
            key=_key(label),
            fix=_fix(label),
        )
    try:
        u.get_dialect().import_dbapi()
    except (ImportError, ArgumentError) as exc:
        raise InputError(
            f"{masked(u)}: the database driver `{u.drivername}` is not available ({exc})",
            key=_key(label),
            fix=f"use sqlite:///PATH or postgresql+psycopg://... in {label}",
        ) from None
    path = sqlite_path(u)
    if path is not None:
        if path.parent != Path("") and not path.parent.is_dir():
            if not _is_default(url):
                raise InputError(
                    f"{masked(u)}: the folder {path.parent} does not exist",
                    key=_key(label),
                    fix=f"create {path.parent} first, or point {_name(label)} at a file in an existing folder",
                )
        elif path.is_dir():
            raise InputError(
                f"{path} is a folder, not a SQLite database file", key=_key(label), fix=_fix(label)
            )
        elif path.is_file():
            _check_sqlite_file(path, label)
    return u


def _check_sqlite_file(path: Path, label: str) -> None:
    """Refuse a file that is not a SQLite database (an empty one is a new database).

    Read through SQLite itself, never with open()/close(): closing any descriptor of a file drops
    every POSIX lock this process holds on it, those of its live SQLite connections included (a
    server migrating at start-up beside its pooled connection let the next process delete the WAL
    under it). SQLite keeps one set of locks per file for all its connections in a process."""
    try:
        conn = sqlite3.connect(path, timeout=30)  # as long as the engine waits for a busy file
    except sqlite3.Error as exc:
        raise InputError(
            f"cannot read the SQLite database {path} ({exc})",
            key=_key(label),
            fix="check the file's permissions",
        ) from None
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "encrypted" in str(exc):
            raise _not_sqlite(path, label) from None
        fix = (
            "another program holds it: stop it, or wait and retry"
            if "locked" in str(exc)
            else "restore it from a backup, or point at another file"
            if "malformed" in str(exc)
            else "check the file's permissions"
        )
        raise InputError(
            f"cannot read the SQLite database {path} ({exc})", key=_key(label), fix=fix
        ) from None
    finally:
        conn.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str | URL, *, source: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine; SQLite files get WAL and foreign keys (and the default ``./var/`` folder).

    The URL is checked first (:func:`parse_database_url`): a user's bad URL is an
    :class:`InputError` naming ``source``, never a SQLAlchemy traceback. Creating an engine does
    not connect to a server; an existing SQLite file is opened once, through SQLite, to check that
    it is a database."""
    u = parse_database_url(url, source=source)
    path = sqlite_path(u)
    if u.get_backend_name() == "sqlite":
        if path is not None and path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)  # only the default ./var/ gets this far
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(u, **kwargs)


def where(url: str | URL) -> str:
    """Where a database is, for messages: ``host:port/db`` or the SQLite file (never a password)."""
    u = make_url(url) if isinstance(url, str) else url
    path = sqlite_path(u)
    if u.get_backend_name() == "sqlite":
        return str(path) if path is not None else "(in memory)"
    return f"{u.host or 'localhost'}:{u.port or 5432}/{u.database or ''}"


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    if not lines:
        return type(orig).__name__
    # psycopg: 'connection failed: connection to server at "h", port p failed: Connection refused'
    return " ".join(lines[0].split(" failed: ")[-1].split())


def connect_error(exc: BaseException, url: str | URL, *, source: str | None = None) -> InputError:
    """The :class:`InputError` for a database that cannot be reached or opened."""
    label = url_source(source, url)
    u = make_url(url) if isinstance(url, str) else url
    reason = _reason(exc)
    path = sqlite_path(u)
    if path is not None and "not a database" in reason:
        return _not_sqlite(path, label)
    hint = label if label != "the database URL" else f"--database-url / {DATABASE_URL_ENV}"
    return InputError(
        f"cannot connect to the database at {where(u)} ({reason})",
        key=_key(label),
        fix=f"check {hint}, and that the database runs",
    )


def check_connection(engine: Engine, *, source: str | None = None) -> None:
    """Connect once; a failure is an :class:`InputError` (for one-shot commands: exit 2)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        raise connect_error(exc, engine.url, source=source) from None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(engine_or_factory: Engine | sessionmaker[Session]) -> Iterator[Session]:
    factory = (
        engine_or_factory
        if isinstance(engine_or_factory, sessionmaker)
        else session_factory(engine_or_factory)
    )
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str | URL) -> Any:
    from alembic.config import Config

    text_url = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", text_url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()}


@functools.lru_cache(maxsize=16)
def tables_at(revision: str) -> frozenset[str]:
    """The tables our migrations have created at ``revision`` (migrated once into a scratch SQLite
    file, remembered)."""
    from alembic import command

    with tempfile.TemporaryDirectory(prefix="budgetloop-schema-") as tmp:
        url = f"sqlite:///{(Path(tmp) / 'schema.db').as_posix()}"
        command.upgrade(alembic_config(url), revision)
        engine = create_engine(url, poolclass=pool.NullPool)
        try:
            return frozenset(inspect(engine).get_table_names())
        finally:
            engine.dispose()


def check_migratable(engine: Engine, *, source: str | None = None) -> None:
    """Refuse, before migrating, a database this build cannot migrate: one at a revision newer than
    this build's (from a newer budgetloop), or one holding tables but no migration record (not
    created by budgetloop). Connection failures become :class:`InputError` too."""
    label = url_source(source, engine.url)
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        raise connect_error(exc, engine.url, source=source) from None
    with conn:
        tables = set(inspect(conn).get_table_names())
        current: list[str] = []
        if "alembic_version" in tables:
            current = [
                str(r) for r in conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            ]
    unknown = sorted(set(current) - _known_revisions())
    if unknown:
        head = head_revision()
        raise InputError(
            f"the database at {where(engine.url)} is at revision {', '.join(unknown)}, newer than this "
            f"build's {head}: it was migrated by a newer budgetloop",
            key=_key(label),
            fix=f"upgrade budgetloop, or point {_name(label)} at another database",
        )
    foreign = sorted(tables - LIBRARY_TABLES)
    if len(current) == 1 and current[0] != head_revision():
        # Tables that the pending migrations would create are already there: migrating would fail
        # half-way (SQLite cannot roll DDL back), so refuse before touching anything.
        extra = sorted(tables - tables_at(current[0]) - LIBRARY_TABLES)
        if extra:
            raise InputError(
                f"the database at {where(engine.url)} is at revision {current[0]} but has tables "
                f"budgetloop did not create there ({', '.join(extra)}), which the next migrations create",
                key=_key(label),
                fix=f"drop or rename those tables, or point {_name(label)} at an empty database",
            )
    if "alembic_version" not in tables and foreign:
        raise InputError(
            f"the database at {where(engine.url)} has tables budgetloop did not create "
            f"({', '.join(foreign)}) and no migration record",
            key=_key(label),
            fix=f"point {_name(label)} at an empty database (or a budgetloop one)",
        )


def upgrade_database(url: str | URL, revision: str = "head", *, source: str | None = None) -> None:
    """Apply migrations up to ``revision`` (idempotent).

    Checks first (each an :class:`InputError` naming ``source``): the URL, that the database answers,
    and that it is one budgetloop can migrate (:func:`check_migratable`), so a refused database is
    left untouched."""
    from alembic import command

    engine = make_engine(url, source=source, poolclass=pool.NullPool)
    try:
        check_migratable(engine, source=source)
    finally:
        engine.dispose()
    command.upgrade(alembic_config(url), revision)


def open_existing_database(url: str | URL, *, source: str | None = None) -> Engine:
    """An engine on a database that must already exist (read-only commands, ``token revoke``).

    A SQLite file that is not there is an :class:`InputError` and nothing is created; an existing
    database is migrated to head first, as the write commands do (an empty PostgreSQL database gets
    the schema rather than a missing-table traceback)."""
    label = url_source(source, url)
    u = parse_database_url(url, source=source)
    path = sqlite_path(u)
    if path is not None and not path.exists():
        raise InputError(
            f"no database at {path} yet",
            key=_key(label),
            fix="run `budgetloop policy apply POLICY.yaml --author NAME` or `budgetloop serve` first, "
            f"or point {_name(label)} at an existing database",
        )
    upgrade_database(url, source=source)
    return make_engine(url, source=source)


def downgrade_database(url: str | URL, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
