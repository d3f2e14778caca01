"""Policy versions in the database: invalid versions are kept but never active; both land in the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from budgetloop.db.audit import AuditEntry
from budgetloop.db.session import session_scope
from budgetloop.errors import InputError
from budgetloop.store.audit import verify_chain
from budgetloop.store.policy import active_policy, list_policy_versions, policy_status, record_policy

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "policy.yaml").read_text()
NOW = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)


def test_invalid_versions_never_become_active(migrated_engine: Engine) -> None:
    with (
        session_scope(migrated_engine) as session,
        pytest.raises(InputError, match="no valid guardrail policy"),
    ):
        active_policy(session)
    with session_scope(migrated_engine) as session:
        first = record_policy(
            session, text=EXAMPLE, source="examples/policy.yaml", author="U0OPSLEAD", now=NOW
        )
    assert first.valid and first.version == 1 and first.active and first.problems == []
    broken = EXAMPLE.replace("max_swing_per_change: 0.20", "max_swing_per_change: 2.0")
    with session_scope(migrated_engine) as session:
        second = record_policy(
            session, text=broken, source="ops.yaml", author="U0INTERN", now=NOW + timedelta(hours=1)
        )
    assert not second.valid and second.version == 2 and not second.active
    assert second.problems == [
        "change.max_swing_per_change (line 14): input should be less than or equal to 1 (got 2.0)"
    ]
    with session_scope(migrated_engine) as session:
        version, policy = active_policy(session)
        status = policy_status(session)
        listed = list_policy_versions(session)
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        chain = verify_chain(session)
    assert version == 1 and policy.change.max_swing_per_change == 0.20
    assert (
        status.message
        == "policy version 1 is active; newer version(s) 2 were invalid and did not take effect"
    )
    assert [(r.version, r.valid, r.active) for r in listed] == [(2, False, False), (1, True, True)]
    assert [(e.action, e.actor, e.subject_id) for e in entries] == [
        ("policy_changed", "U0OPSLEAD", "1"),
        ("policy_rejected", "U0INTERN", "2"),
    ]
    assert '"active_version_kept":1' in entries[1].payload
    assert chain.valid


def test_a_new_valid_version_takes_over_and_a_failed_transaction_leaves_nothing(
    migrated_engine: Engine,
) -> None:
    with session_scope(migrated_engine) as session:
        record_policy(session, text=EXAMPLE, source="a.yaml", author="U0OPSLEAD", now=NOW)
    tighter = EXAMPLE.replace("total_daily_max: 16000", "total_daily_max: 15000")
    with pytest.raises(RuntimeError), session_scope(migrated_engine) as session:
        record_policy(session, text=tighter, source="b.yaml", author="U0OPSLEAD", now=NOW)
        raise RuntimeError("the caller's unit of work failed")
    with session_scope(migrated_engine) as session:
        assert active_policy(session)[1].budget.total_daily_max == 16000
        record = record_policy(session, text=tighter, source="b.yaml", author="U0OPSLEAD", now=NOW)
    assert record.version == 2 and len(record.sha256) == 64
    with session_scope(migrated_engine) as session:
        version, policy = active_policy(session)
    assert (version, policy.budget.total_daily_max) == (2, 15000)


def test_author_is_required(migrated_engine: Engine) -> None:
    with session_scope(migrated_engine) as session, pytest.raises(InputError, match="needs an author"):
        record_policy(session, text=EXAMPLE, source="a.yaml", author=" ", now=NOW)


def test_cli_apply_keeps_the_last_valid_version(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import budgetloop.cli.policy  # noqa: F401  (registers `policy` on the app)
    from budgetloop.cli import app

    url = f"sqlite:///{(tmp_path / 'cli.db').as_posix()}"
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(EXAMPLE)
    bad.write_text(EXAMPLE.replace("timezone: America/New_York", "timezone: Nowhere/City"))
    runner = CliRunner()
    first = runner.invoke(app, ["policy", "apply", str(good), "--author", "U0OPSLEAD", "--database-url", url])
    assert first.exit_code == 0 and "active as version 1" in first.stdout
    second = runner.invoke(app, ["policy", "apply", str(bad), "--author", "U0OPSLEAD", "--database-url", url])
    assert second.exit_code == 2
    assert "rejected as version 2; the active policy is unchanged" in second.output
    assert "timezone (line 3): unknown time zone 'Nowhere/City'" in second.output
    shown = runner.invoke(app, ["policy", "show", "--database-url", url])
    assert shown.exit_code == 0 and shown.stdout.startswith("# version 1 by U0OPSLEAD")
    assert "timezone: America/New_York" in shown.stdout


def test_an_impossible_date_is_recorded_as_a_rejected_version_not_an_error(migrated_engine: Engine) -> None:
    # PUT /api/v1/policy stores through record_policy: PyYAML's ValueError for 2026-02-30 made it a 500
    text = (
        "budget: {total_daily_max: 10000}\nfreeze_windows:\n  - {start: 2026-02-30, end: 2026-03-01}\n"
        "channels:\n  a: {max_daily: 5000}\n"
    )
    with session_scope(migrated_engine) as session:
        record = record_policy(session, text=text, source="rest", author="U0OPS", now=NOW)
    assert not record.valid and not record.active
    assert record.problems == [
        "freeze_windows[0].start (line 3): not a calendar date: 2026-02-30 (day is out of range for month)"
        " — write a date that exists as YYYY-MM-DD (e.g. 2026-03-16)"
    ]


def test_cli_apply_of_an_unreadable_file_says_why_and_writes_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import budgetloop.cli.policy  # noqa: F401  (registers `policy` on the app)
    from budgetloop.cli import app

    database = tmp_path / "cli.db"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"\xff\xfebudget")
    for path, why in ((latin, "is not UTF-8 text (byte 1"), (tmp_path / "nope.yaml", "does not exist")):
        done = CliRunner().invoke(
            app,
            ["policy", "apply", str(path), "--author", "U0OPS", "--database-url", f"sqlite:///{database}"],
        )
        assert isinstance(done.exception, InputError) and why in str(done.exception), done.exception
    assert not database.exists()


def test_a_policy_without_a_rule_for_a_channel_with_campaigns_is_rejected(migrated_engine: Engine) -> None:
    from budgetloop.store.metrics import upsert_campaign

    with session_scope(migrated_engine) as session:
        for external_id, channel in (("1", "search"), ("2", "tiktok")):
            upsert_campaign(
                session,
                platform="google_ads",
                account_external_id="acct",
                external_id=external_id,
                name=channel,
                channel=channel,
                currency="USD",
                now=NOW,
            )
    with session_scope(migrated_engine) as session:
        record = record_policy(session, text=EXAMPLE, source="ops.yaml", author="U0OPSLEAD", now=NOW)
    assert not record.valid and not record.active
    line = next(i for i, ln in enumerate(EXAMPLE.splitlines(), 1) if ln.startswith("channels:"))
    assert record.problems == [
        f"channels (line {line}): no entry for `tiktok`, which has campaigns — add `channels.tiktok` "
        "(with `locked: true` to leave its budgets alone)"
    ]
    # One answer lists every problem: a reviewer fixed the schema errors, only to be told then about
    # the missing channel.
    broken = EXAMPLE.replace("max_swing_per_change: 0.20", "max_swing_per_change: lots")
    with session_scope(migrated_engine) as session:
        record = record_policy(session, text=broken, source="ops.yaml", author="U0OPSLEAD", now=NOW)
    assert not record.valid and len(record.problems) == 2, record.problems
    assert "max_swing_per_change" in record.problems[0] and "`tiktok`" in record.problems[1]
    covered = EXAMPLE.replace("channels:\n", "channels:\n  tiktok: {locked: true}\n")
    with session_scope(migrated_engine) as session:
        record = record_policy(session, text=covered, source="ops.yaml", author="U0OPSLEAD", now=NOW)
    assert record.valid and record.active
