"""incrementality experiments and the regional panel (owner: agents/experiments)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "regional_revenue",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "region", name=op.f("pk_regional_revenue")),
    )
    op.create_table(
        "regional_spend",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("spend", sa.Float(), nullable=False),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "region", "channel", name=op.f("pk_regional_spend")),
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("regions", _json(), nullable=False),
        sa.Column("holdout_share", sa.Float(), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("change_request_id", sa.Integer(), nullable=False),
        sa.Column("end_request_id", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("roi_before", sa.Float(), nullable=True),
        sa.Column("after_model_version_id", sa.Integer(), nullable=True),
        sa.Column("roi_after", sa.Float(), nullable=True),
        sa.Column("calibration_point_id", sa.Integer(), nullable=True),
        sa.Column("design", _json(), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["change_request_id"],
            ["change_requests.id"],
            name=op.f("fk_experiments_change_request_id_change_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["end_request_id"],
            ["change_requests.id"],
            name=op.f("fk_experiments_end_request_id_change_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_experiments_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["after_model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_experiments_after_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["calibration_point_id"],
            ["calibration_points.id"],
            name=op.f("fk_experiments_calibration_point_id_calibration_points"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
    )
    op.create_index("ix_experiments_status", "experiments", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_experiments_status", table_name="experiments")
    op.drop_table("experiments")
    op.drop_table("regional_spend")
    op.drop_table("regional_revenue")
