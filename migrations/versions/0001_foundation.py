"""ingest tables (owner: foundation): accounts, campaigns, batches, raw and clean metrics

Revision ID: 0001
Revises: None

``raw_metrics`` is append-only: triggers on SQLite and PostgreSQL refuse UPDATE and DELETE (and
TRUNCATE on PostgreSQL), so a stored record can never be changed after the fact.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
MONEY = sa.Numeric(precision=18, scale=2)
UTC_TS = sa.DateTime(timezone=True)

APPEND_ONLY = "raw_metrics is append-only: store a new version instead of changing a row"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER raw_metrics_no_{verb.lower()} BEFORE {verb} ON raw_metrics
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY} ({verb} refused)'); END"""
    for verb in ("UPDATE", "DELETE")
]

PG_FUNCTION = f"""CREATE FUNCTION raw_metrics_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY} (% refused)', TG_OP USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql"""

PG_TRIGGERS = [
    "CREATE TRIGGER raw_metrics_no_change BEFORE UPDATE OR DELETE ON raw_metrics "
    "FOR EACH ROW EXECUTE FUNCTION raw_metrics_append_only()",
    "CREATE TRIGGER raw_metrics_no_truncate BEFORE TRUNCATE ON raw_metrics "
    "FOR EACH STATEMENT EXECUTE FUNCTION raw_metrics_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "ad_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ad_accounts")),
        sa.UniqueConstraint("platform", "external_id", name=op.f("uq_ad_accounts_platform_external_id")),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["ad_accounts.id"], name=op.f("fk_campaigns_account_id_ad_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("platform", "external_id", name=op.f("uq_campaigns_platform_external_id")),
    )
    op.create_index(op.f("ix_campaigns_account_id"), "campaigns", ["account_id"])
    op.create_index(op.f("ix_campaigns_channel"), "campaigns", ["channel"])
    op.create_table(
        "ingest_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("requested_start", sa.Date(), nullable=False),
        sa.Column("requested_end", sa.Date(), nullable=False),
        sa.Column("started_at", UTC_TS, nullable=False),
        sa.Column("finished_at", UTC_TS, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("pulled", sa.Integer(), nullable=False),
        sa.Column("raw_stored", sa.Integer(), nullable=False),
        sa.Column("landed", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("errors", JSON, nullable=False),
        sa.Column("missing_days", JSON, nullable=False),
        sa.Column("schema_keys", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_batches")),
    )
    op.create_index(op.f("ix_ingest_batches_source"), "ingest_batches", ["source"])
    op.create_table(
        "raw_metrics",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("received_at", UTC_TS, nullable=False),
        sa.Column("natural_key", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["ingest_batches.id"], name=op.f("fk_raw_metrics_batch_id_ingest_batches")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_metrics")),
    )
    op.create_index(op.f("ix_raw_metrics_batch_id"), "raw_metrics", ["batch_id"])
    op.create_index("ix_raw_metrics_source_natural_key", "raw_metrics", ["source", "natural_key"])
    op.create_index("ix_raw_metrics_source_day", "raw_metrics", ["source", "day"])
    op.create_table(
        "daily_metrics",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("spend", MONEY, nullable=False),
        sa.Column("impressions", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("attributed_revenue", MONEY, nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("raw_metric_id", BIG_ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name=op.f("fk_daily_metrics_campaign_id_campaigns")),
        sa.ForeignKeyConstraint(
            ["raw_metric_id"], ["raw_metrics.id"], name=op.f("fk_daily_metrics_raw_metric_id_raw_metrics")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_metrics")),
        sa.UniqueConstraint("campaign_id", "day", name=op.f("uq_daily_metrics_campaign_id_day")),
    )
    op.create_index("ix_daily_metrics_day", "daily_metrics", ["day"])
    op.create_index(op.f("ix_daily_metrics_raw_metric_id"), "daily_metrics", ["raw_metric_id"])
    op.create_table(
        "daily_revenue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("revenue", MONEY, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("raw_metric_id", BIG_ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["raw_metric_id"], ["raw_metrics.id"], name=op.f("fk_daily_revenue_raw_metric_id_raw_metrics")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_revenue")),
        sa.UniqueConstraint("day", name=op.f("uq_daily_revenue_day")),
    )
    op.create_index(op.f("ix_daily_revenue_raw_metric_id"), "daily_revenue", ["raw_metric_id"])
    op.create_table(
        "quarantined_rows",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("raw_metric_id", BIG_ID, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("natural_key", sa.String(length=255), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["ingest_batches.id"], name=op.f("fk_quarantined_rows_batch_id_ingest_batches")
        ),
        sa.ForeignKeyConstraint(
            ["raw_metric_id"], ["raw_metrics.id"], name=op.f("fk_quarantined_rows_raw_metric_id_raw_metrics")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantined_rows")),
    )
    op.create_index(op.f("ix_quarantined_rows_batch_id"), "quarantined_rows", ["batch_id"])
    op.create_index(op.f("ix_quarantined_rows_raw_metric_id"), "quarantined_rows", ["raw_metric_id"])
    op.create_table(
        "metric_corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("daily_metric_id", BIG_ID, nullable=True),
        sa.Column("daily_revenue_id", sa.Integer(), nullable=True),
        sa.Column("old_values", JSON, nullable=False),
        sa.Column("new_values", JSON, nullable=False),
        sa.Column("old_raw_metric_id", BIG_ID, nullable=False),
        sa.Column("new_raw_metric_id", BIG_ID, nullable=False),
        sa.Column("corrected_at", UTC_TS, nullable=False),
        sa.CheckConstraint(
            "(daily_metric_id IS NULL) <> (daily_revenue_id IS NULL)",
            name=op.f("ck_metric_corrections_one_clean_row"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["ingest_batches.id"], name=op.f("fk_metric_corrections_batch_id_ingest_batches")
        ),
        sa.ForeignKeyConstraint(
            ["daily_metric_id"], ["daily_metrics.id"], name=op.f("fk_metric_corrections_daily_metric_id_daily_metrics")
        ),
        sa.ForeignKeyConstraint(
            ["daily_revenue_id"],
            ["daily_revenue.id"],
            name=op.f("fk_metric_corrections_daily_revenue_id_daily_revenue"),
        ),
        sa.ForeignKeyConstraint(
            ["new_raw_metric_id"], ["raw_metrics.id"], name=op.f("fk_metric_corrections_new_raw_metric_id_raw_metrics")
        ),
        sa.ForeignKeyConstraint(
            ["old_raw_metric_id"], ["raw_metrics.id"], name=op.f("fk_metric_corrections_old_raw_metric_id_raw_metrics")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_corrections")),
    )
    op.create_index(op.f("ix_metric_corrections_batch_id"), "metric_corrections", ["batch_id"])
    op.create_index(op.f("ix_metric_corrections_daily_metric_id"), "metric_corrections", ["daily_metric_id"])
    op.create_index(op.f("ix_metric_corrections_daily_revenue_id"), "metric_corrections", ["daily_revenue_id"])

    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(PG_FUNCTION)
        for statement in PG_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS raw_metrics_no_update")
        op.execute("DROP TRIGGER IF EXISTS raw_metrics_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS raw_metrics_no_truncate ON raw_metrics")
        op.execute("DROP TRIGGER IF EXISTS raw_metrics_no_change ON raw_metrics")
        op.execute("DROP FUNCTION IF EXISTS raw_metrics_append_only()")
    for table in (
        "metric_corrections",
        "quarantined_rows",
        "daily_revenue",
        "daily_metrics",
        "raw_metrics",
        "ingest_batches",
        "campaigns",
        "ad_accounts",
    ):
        op.drop_table(table)
