"""Provider references, handled provider events, and what is known of provider users.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_refs",
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("ref", sa.String(200), primary_key=True),
        sa.Column("message_uuid", sa.String(36), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_provider_refs_message_uuid", "provider_refs", ["message_uuid"])
    op.create_table(
        "seen_events",
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("event_key", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_table(
        "provider_users",
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(100), primary_key=True),
        sa.Column("phone", sa.String(32)),
        sa.Column("subscribed", sa.Integer, nullable=False, server_default="1"),
        sa.Column("had_transaction", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_index("ix_provider_users_phone", "provider_users", ["link_id", "phone"])


def downgrade() -> None:
    for table in ("provider_users", "seen_events", "provider_refs"):
        op.drop_table(table)
