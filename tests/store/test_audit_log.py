"""The audit log: the database refuses changes, verification names the first bad entry, digests are
signed and chained, an export can be checked without the database, and queries paginate by keyset."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from budgetloop.db.session import session_scope
from budgetloop.errors import InputError
from budgetloop.store import audit

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _fill(engine: Engine, n: int, start: int = 0) -> None:
    with session_scope(engine) as s:
        for i in range(start, start + n):
            audit.append(
                s,
                action=["proposed", "approved", "executed"][i % 3],
                actor=f"user{i % 4}",
                at=T0 + timedelta(hours=i),
                subject_type="change_request",
                subject_id=i // 3,
                channel=["search", "video", None][i % 3],
                payload={"i": i, "note": 'naïve ☃ "quoted"\n', "amount": 1234.5},
            )


@settings(max_examples=200, deadline=None)
@given(
    actor=st.text(),
    action=st.text(max_size=64),
    sid=st.none() | st.text(),
    channel=st.none() | st.text(),
    payload=st.text(),
    seq=st.integers(min_value=1, max_value=2**62),
    micros=st.integers(min_value=0, max_value=10**15),
)
def test_the_fast_hash_is_the_canonical_hash(
    actor: str, action: str, sid: str | None, channel: str | None, payload: str, seq: int, micros: int
) -> None:
    at = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    kwargs = dict(
        actor=actor, action=action, subject_type="t", subject_id=sid, channel=channel, payload_text=payload
    )
    slow = audit.entry_hash(prev_hash=audit.GENESIS, seq=seq, at=at, **kwargs)  # type: ignore[arg-type]
    fast = audit.fast_entry_hash(
        audit.GENESIS, seq, at.isoformat(timespec="microseconds"), actor, action, "t", sid, channel, payload
    )
    assert fast == slow


def test_an_untouched_chain_verifies(migrated_engine: Engine) -> None:
    _fill(migrated_engine, 30)
    with session_scope(migrated_engine) as s:
        report = audit.verify_chain(s)
    assert report.valid and report.entries == 30 and report.first_bad_id is None


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_log SET actor = 'mallory' WHERE seq = 2", "DELETE FROM audit_log WHERE seq = 2"],
)
def test_the_database_refuses_update_and_delete(migrated_engine: Engine, statement: str) -> None:
    _fill(migrated_engine, 3)
    with pytest.raises(DBAPIError, match="audit_log is append-only"), migrated_engine.begin() as conn:
        conn.execute(text(statement))
    with session_scope(migrated_engine) as s:
        assert audit.verify_chain(s).valid


@pytest.mark.postgres
def test_postgres_refuses_truncate_and_the_service_role_cannot_change_rows(postgres_url: str) -> None:
    from budgetloop.db.session import make_engine, upgrade_database

    upgrade_database(postgres_url)
    engine = make_engine(postgres_url)
    try:
        _fill(engine, 3)
        with pytest.raises(DBAPIError, match="audit_log is append-only"), engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_log"))
        with engine.connect() as conn:
            privileges = {
                p: conn.execute(
                    text("SELECT has_table_privilege('budgetloop_service', 'audit_log', :p)"), {"p": p}
                ).scalar_one()
                for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
            }
        assert privileges == {
            "SELECT": True,
            "INSERT": True,
            "UPDATE": False,
            "DELETE": False,
            "TRUNCATE": False,
        }
        with pytest.raises(DBAPIError, match="permission denied"), engine.begin() as conn:
            conn.execute(text("SET LOCAL ROLE budgetloop_service"))
            conn.execute(text("DELETE FROM audit_log"))
    finally:
        engine.dispose()


def _drop_triggers(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_change ON audit_log"))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("UPDATE audit_log SET payload = '{\"i\": 999}' WHERE seq = 17", "content does not match its hash"),
        ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 17", "content does not match its hash"),
        ("DELETE FROM audit_log WHERE seq = 17", "sequence gap: expected seq 17, found 18"),
        ("UPDATE audit_log SET prev_hash = hash WHERE seq = 17", "prev_hash does not match"),
    ],
)
def test_a_row_changed_behind_the_databases_back_is_named(
    migrated_engine: Engine, tamper: str, reason: str
) -> None:
    _fill(migrated_engine, 40)
    _drop_triggers(migrated_engine)
    with migrated_engine.begin() as conn:
        conn.execute(text(tamper))
        expected_id = conn.execute(text("SELECT min(id) FROM audit_log WHERE seq >= 17")).scalar_one()
    with session_scope(migrated_engine) as s:
        report = audit.verify_chain(s)
    assert not report.valid
    assert reason in (report.reason or "")
    assert report.first_bad_id == expected_id  # the edited row itself; for a removed row, its successor


def test_digests_are_chained_signed_and_catch_a_rewritten_history(migrated_engine: Engine) -> None:
    _fill(migrated_engine, 10)
    with session_scope(migrated_engine) as s:
        first = audit.make_digest(s, key="k1", now=T0 + timedelta(days=1))
    _fill(migrated_engine, 5, start=10)
    with session_scope(migrated_engine) as s:
        second = audit.make_digest(s, key="k1", now=T0 + timedelta(days=2))
    assert (first.number, first.head_seq, first.entries) == (1, 10, 10)
    assert (second.number, second.head_seq, second.entries) == (
        2,
        16,
        16,
    )  # 15 entries + the first digest's entry
    assert second.prev_digest_hash == first.digest_hash and first.prev_digest_hash == audit.GENESIS
    with session_scope(migrated_engine) as s:
        assert audit.verify_digests(s, key="k1").valid
        wrong = audit.verify_digests(s, key="k2")
        assert not wrong.valid and wrong.first_bad_number == 1 and "another key" in (wrong.reason or "")
        document = audit.export(s)
    roundtrip = json.loads(json.dumps(document))
    assert audit.verify_export(roundtrip, key="k1").valid
    assert len(roundtrip["entries"]) == 17 and "sha256" in roundtrip["hash_definition"]

    # someone rewrites history and recomputes every hash after it: the chain verifies again, the digests do not
    _drop_triggers(migrated_engine)
    with session_scope(migrated_engine) as s:
        rows = [dict(r._mapping) for r in s.execute(text("SELECT * FROM audit_log ORDER BY seq"))]
    prev = audit.GENESIS
    with migrated_engine.begin() as conn:
        for row in rows:
            actor = "mallory" if row["seq"] == 5 else row["actor"]
            at = row["at"] if isinstance(row["at"], datetime) else datetime.fromisoformat(row["at"])
            h = audit.entry_hash(
                prev_hash=prev,
                seq=row["seq"],
                at=at.replace(tzinfo=UTC),
                actor=actor,
                action=row["action"],
                subject_type=row["subject_type"],
                subject_id=row["subject_id"],
                channel=row["channel"],
                payload_text=row["payload"],
            )
            conn.execute(
                text("UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"a": actor, "p": prev, "h": h, "s": row["seq"]},
            )
            prev = h
    with session_scope(migrated_engine) as s:
        assert audit.verify_chain(s).valid
        report = audit.verify_digests(s, key="k1")
        assert (
            not report.valid
            and report.first_bad_number == 1
            and "no longer has the hash" in (report.reason or "")
        )
        assert not audit.verify_export(audit.export(s), key="k1").valid

    tampered = json.loads(json.dumps(document))
    tampered["entries"][3]["actor"] = "mallory"
    assert "content does not match" in (audit.verify_export(tampered).reason or "")
    forged = json.loads(json.dumps(document))
    forged["digests"][1]["signature"] = "0" * 64
    assert "signature does not verify" in (audit.verify_export(forged, key="k1").reason or "")


def test_query_filters_and_keyset_pages_see_every_entry_once(migrated_engine: Engine) -> None:
    _fill(migrated_engine, 50)
    with session_scope(migrated_engine) as s:
        seen: list[int] = []
        cursor = None
        while True:
            page = audit.query(s, action="approved", cursor=cursor, limit=7)
            seen += [e["seq"] for e in page.entries]
            assert all(e["action"] == "approved" for e in page.entries)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [i + 1 for i in range(50) if i % 3 == 1]
        window = audit.query(s, from_=T0 + timedelta(hours=10), to=T0 + timedelta(hours=20), channel="search")
        assert [e["seq"] for e in window.entries] == [13, 16, 19] and window.next_cursor is None
        assert [e["seq"] for e in audit.query(s, actor="user1", limit=3, descending=True).entries] == [
            50,
            46,
            42,
        ]
        assert [e["seq"] for e in audit.query(s, subject_type="change_request", subject_id="2").entries] == [
            7,
            8,
            9,
        ]
        with pytest.raises(InputError, match="`cursor`"):
            audit.query(s, cursor="abc")
        with pytest.raises(InputError, match="`limit`"):
            audit.query(s, limit=0)
