"""audit log (append-only, hash-chained), signed audit digests and API tokens: owner audit/service

``audit_log`` and ``audit_digests`` are append-only: triggers refuse UPDATE and DELETE on SQLite and
PostgreSQL, and TRUNCATE on PostgreSQL. On PostgreSQL a role ``budgetloop_service`` (NOLOGIN; grant it to
the login the service uses) may SELECT and INSERT on them but not UPDATE, DELETE or TRUNCATE. Roles belong
to the whole cluster, so the role is created when missing and left in place by the downgrade.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC_TS = sa.DateTime(timezone=True)
APPEND_ONLY_TABLES = ("audit_log", "audit_digests")
SERVICE_ROLE = "budgetloop_service"


def _message(table: str) -> str:
    return f"{table} is append-only: record a new entry instead of changing or removing one"


def _sqlite_triggers(table: str) -> list[str]:
    return [
        f"""CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table}
        BEGIN SELECT RAISE(ABORT, '{_message(table)} ({verb} refused)'); END"""
        for verb in ("UPDATE", "DELETE")
    ]


def _pg_statements(table: str) -> list[str]:
    return [
        f"""CREATE FUNCTION {table}_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{_message(table)} (% refused)', TG_OP USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql""",
        f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()",
    ]


# Two migrations may run at once against one cluster (tests, replicas): creating the role can race,
# so both "already exists" outcomes are accepted.
PG_CREATE_ROLE = f"""DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
        CREATE ROLE {SERVICE_ROLE} NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$"""

PG_GRANTS = [
    f"REVOKE ALL ON audit_log, audit_digests FROM {SERVICE_ROLE}",
    f"GRANT SELECT, INSERT ON audit_log, audit_digests TO {SERVICE_ROLE}",
    f"GRANT SELECT, INSERT, UPDATE ON api_tokens TO {SERVICE_ROLE}",
    f"GRANT USAGE ON SEQUENCE audit_log_id_seq, audit_digests_id_seq, api_tokens_id_seq TO {SERVICE_ROLE}",
]


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=True),
        sa.Column("channel", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_log_seq")),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action", "seq"], unique=False)
    op.create_index("ix_audit_log_actor", "audit_log", ["actor", "seq"], unique=False)
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    op.create_index("ix_audit_log_channel", "audit_log", ["channel", "seq"], unique=False)
    op.create_index("ix_audit_log_subject", "audit_log", ["subject_type", "subject_id", "seq"], unique=False)
    op.create_table(
        "audit_digests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("prev_digest_hash", sa.String(length=64), nullable=False),
        sa.Column("digest_hash", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_digests")),
        sa.UniqueConstraint("number", name=op.f("uq_audit_digests_number")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", UTC_TS, nullable=True),
        sa.Column("last_used_at", UTC_TS, nullable=True),
        sa.Column("slack_user_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_api_tokens_token_sha256")),
    )
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY_TABLES:
        if dialect == "sqlite":
            for statement in _sqlite_triggers(table):
                op.execute(statement)
        elif dialect == "postgresql":
            for statement in _pg_statements(table):
                op.execute(statement)
    if dialect == "postgresql":
        op.execute(PG_CREATE_ROLE)
        for statement in PG_GRANTS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            f"REVOKE ALL ON audit_log, audit_digests, api_tokens FROM {SERVICE_ROLE}; "
            f"REVOKE ALL ON SEQUENCE audit_log_id_seq, audit_digests_id_seq, api_tokens_id_seq FROM {SERVICE_ROLE}"
        )
    for table in APPEND_ONLY_TABLES:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        elif dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
    op.drop_table("api_tokens")
    op.drop_table("audit_digests")
    op.drop_index("ix_audit_log_subject", table_name="audit_log")
    op.drop_index("ix_audit_log_channel", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_index("ix_audit_log_actor", table_name="audit_log")
    op.drop_index("ix_audit_log_action", table_name="audit_log")
    op.drop_table("audit_log")
