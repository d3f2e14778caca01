"""A user's bad database (URL, missing file, foreign or newer schema, not a database) ends with exit
code 2 and a message naming the flag or variable and what to change: no traceback, nothing created,
nothing half-migrated. Unreachable databases in one-shot commands likewise."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from budgetloop.db.session import make_engine, upgrade_database
from budgetloop.errors import InputError


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from budgetloop.cli import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    code = done.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("BUDGETLOOP_DATABASE_URL", raising=False)
    return work


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("garbage", "is not a database URL"),
        ("mysql://x@y/z", "does not run on `mysql`"),
        ("sqlite:///no/such/dir/x.db", "the folder no/such/dir does not exist"),
        (
            "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x",
            "cannot connect to the database at 127.0.0.1:1/x",
        ),
    ],
)
@pytest.mark.parametrize(
    "command", [["token", "list"], ["token", "create", "--name", "a", "--role", "admin"]]
)
def test_a_bad_database_url_exits_2_naming_the_flag(
    url: str, says: str, command: list[str], empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _cli([*command, "--database-url", url], capsys)
    assert code == 2, err
    assert says in err and "--database-url" in err and "Traceback" not in err
    assert "s3cret" not in err
    assert list(empty_dir.iterdir()) == []  # no folder, no file


def test_the_variable_is_named_when_the_url_comes_from_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETLOOP_DATABASE_URL", "garbage")
    with pytest.raises(InputError, match=r"BUDGETLOOP_DATABASE_URL.*not a database URL"):
        make_engine("garbage")
    with pytest.raises(InputError, match="--database-url or BUDGETLOOP_DATABASE_URL"):
        make_engine("also garbage")


def test_an_engine_on_a_refusing_server_is_made_and_fails_only_on_connect() -> None:
    """serve/worker wait for a database that is still starting: building the engine must not fail."""
    engine = make_engine("postgresql://postgres@127.0.0.1:1/x")
    engine.dispose()


@pytest.mark.postgres
def test_a_missing_postgres_database_is_named(
    postgres_url: str, empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/doesnotexist_bl"
    code, err = _cli(["token", "list", "--database-url", url], capsys)
    assert code == 2 and "Traceback" not in err
    assert (
        'cannot connect to the database at 127.0.0.1:5432/doesnotexist_bl (FATAL: database "doesnotexist_bl"'
        in err
    )


@pytest.mark.parametrize(
    "command", [["policy", "show"], ["token", "list"], ["token", "revoke", "1"], ["jobs", "list"]]
)
def test_read_only_commands_on_no_database_say_so_and_create_nothing(
    command: list[str], empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _cli(command, capsys)
    assert code == 2, err
    assert "no database at var/budgetloop.db yet" in err and "budgetloop policy apply" in err
    assert list(empty_dir.iterdir()) == []


def test_read_only_commands_migrate_an_empty_database_like_the_write_commands(
    database_url: str, empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if database_url.startswith("sqlite"):
        sqlite3.connect(database_url.split("///", 1)[1]).close()  # an empty file
    code, err = _cli(["policy", "show", "--database-url", database_url], capsys)
    assert code == 2 and "no valid policy has been applied yet" in err, err
    code, err = _cli(["token", "revoke", "7", "--database-url", database_url], capsys)
    assert code == 2 and "budgetloop token list" in err, err
    engine = make_engine(database_url)
    try:
        assert "policy_versions" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"))


def test_a_database_from_a_newer_build_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    url = f"sqlite:///{path}"
    upgrade_database(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    before = _tables(path)
    with pytest.raises(
        InputError, match=r"at revision 0099, newer than this build's 0006.*upgrade budgetloop"
    ):
        upgrade_database(url, source="BUDGETLOOP_DATABASE_URL")
    assert _tables(path) == before


def test_foreign_tables_without_a_migration_record_are_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE audit_log (x INTEGER)")
    with pytest.raises(InputError) as raised:
        upgrade_database(f"sqlite:///{path}", source="BUDGETLOOP_DATABASE_URL")
    message = str(raised.value)
    assert "tables budgetloop did not create (audit_log) and no migration record" in message
    assert "point BUDGETLOOP_DATABASE_URL at an empty database" in message
    assert _tables(path) == ["audit_log"]


def test_a_foreign_table_the_next_migration_creates_is_refused_before_migrating(tmp_path: Path) -> None:
    path = tmp_path / "half.db"
    url = f"sqlite:///{path}"
    upgrade_database(url, "0002")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE audit_log (x INTEGER)")
    before = _tables(path)
    with pytest.raises(
        InputError, match=r"at revision 0002 but has tables budgetloop did not create there \(audit_log\)"
    ):
        upgrade_database(url)
    assert _tables(path) == before


def test_a_file_that_is_not_a_database_is_named_at_once(
    empty_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (empty_dir / "x.db").write_text("hello\n")
    monkeypatch.setenv("BUDGETLOOP_DATABASE_URL", "sqlite:///x.db")
    with pytest.raises(InputError, match=r"BUDGETLOOP_DATABASE_URL.*x\.db is not a SQLite database"):
        make_engine("sqlite:///x.db")
    code, err = _cli(["token", "create", "--name", "a", "--role", "admin"], capsys)
    assert code == 2 and "x.db is not a SQLite database" in err and "Traceback" not in err
    assert (empty_dir / "x.db").read_text() == "hello\n"


def test_a_serving_process_keeps_its_locks_on_the_sqlite_file(tmp_path: Path) -> None:
    """A reviewer's `serve` lost writes: migrating at start-up checked the file's header with a
    plain open()/close() while the server's pooled connection was live, and closing any descriptor
    of a file drops every POSIX lock the process holds on it. The next process to open and close
    the database then took itself for the last one and deleted the WAL under the live server. The
    check now goes through SQLite, which keeps its connections' locks."""
    import subprocess
    import sys

    from sqlalchemy import text

    from budgetloop.cli.serve import prepare_database
    from budgetloop.config import Settings
    from budgetloop.db.session import upgrade_database

    db = tmp_path / "live.db"
    upgrade_database(f"sqlite:///{db}")
    engine = prepare_database(Settings(database_url=f"sqlite:///{db}"))
    with engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM audit_log")).one()
    assert (tmp_path / "live.db-wal").exists()
    other = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM audit_log'); c.close()"
    subprocess.run([sys.executable, "-c", other, str(db)], check=True)
    assert (tmp_path / "live.db-wal").exists(), "another process deleted the live server's WAL"
    engine.dispose()
