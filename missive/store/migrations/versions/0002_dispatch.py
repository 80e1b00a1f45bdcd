"""Channel links, timers, the webhook outbox and its attempts, inbound messages.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_links",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("application_id", sa.String(36)),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("tps", sa.Double),
        sa.Column("is_default", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_channel_links_account_id", "channel_links", ["account_id"])
    op.create_table(
        "timers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("message_uuid", sa.String(36), nullable=False),
        sa.Column("due_at", sa.Double, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("claimed_until", sa.Double),
    )
    op.create_index("ix_timers_due", "timers", ["due_at"])
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("target", sa.String(36), nullable=False),
        sa.Column("application_id", sa.String(36)),
        sa.Column("message_uuid", sa.String(36)),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("due_at", sa.Double, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_until", sa.Double),
        sa.Column("last_error", sa.Text),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("delivered_at", sa.Double),
    )
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["state", "due_at"])
    op.create_index("ix_webhook_outbox_message", "webhook_outbox", ["message_uuid"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("webhook_id", sa.String(36), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Double, nullable=False),
    )
    op.create_index("ix_webhook_attempts_webhook_id", "webhook_attempts", ["webhook_id"])
    op.create_table(
        "inbound_messages",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("application_id", sa.String(36)),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("message_type", sa.String(20), nullable=False),
        sa.Column("to_addr", sa.String(64), nullable=False),
        sa.Column("from_addr", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("provider_ref", sa.String(200)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_inbound_account_created", "inbound_messages", ["account_id", "created_at"])


def downgrade() -> None:
    for table in ("inbound_messages", "webhook_attempts", "webhook_outbox", "timers", "channel_links"):
        op.drop_table(table)
