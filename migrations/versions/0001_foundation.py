"""ingest tables (owner: foundation)

Revision ID: 0001
Revises: None
"""

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
