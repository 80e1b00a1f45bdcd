"""Several dispatchers: heartbeats, SMPP bind slots, shared rate buckets.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatchers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("seen_at", sa.Double, nullable=False),
    )
    op.create_table(
        "bind_slots",
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("holder", sa.String(36)),
        sa.Column("until", sa.Double, nullable=False),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("tokens", sa.Double, nullable=False),
        sa.Column("stamp", sa.Double, nullable=False),
    )


def downgrade() -> None:
    for table in ("rate_buckets", "bind_slots", "dispatchers"):
        op.drop_table(table)
