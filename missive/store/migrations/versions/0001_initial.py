"""Accounts, applications, messages, their events and the dispatch outbox.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("api_key", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_salt", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("signature_secret", sa.String(128), nullable=False),
        sa.Column("status_url", sa.Text),
        sa.Column("inbound_url", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_table(
        "applications",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("status_url", sa.Text),
        sa.Column("status_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("inbound_url", sa.Text),
        sa.Column("inbound_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("extra", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_index("ix_applications_account_id", "applications", ["account_id"])
    op.create_table(
        "messages",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("application_id", sa.String(36)),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("message_type", sa.String(20), nullable=False),
        sa.Column("to_addr", sa.String(64), nullable=False),
        sa.Column("from_addr", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("client_ref", sa.String(100)),
        sa.Column("webhook_url", sa.Text),
        sa.Column("webhook_version", sa.String(8), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("workflow_id", sa.String(36)),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_index("ix_messages_account_created", "messages", ["account_id", "created_at"])
    op.create_index(
        "ix_messages_application_created", "messages", ["application_id", "created_at"]
    )
    op.create_index("ix_messages_client_ref", "messages", ["account_id", "client_ref"])
    op.create_table(
        "message_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_uuid", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("timestamp", sa.Double, nullable=False),
        sa.Column("provider_ref", sa.String(200)),
        sa.Column("error_code", sa.Integer),
        sa.Column("error_reason", sa.Text),
    )
    op.create_index("ix_message_events_message_uuid", "message_events", ["message_uuid"])
    op.create_table(
        "outbox",
        sa.Column("message_uuid", sa.String(36), primary_key=True),
        sa.Column("due_at", sa.Double, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_until", sa.Double),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_outbox_due", "outbox", ["due_at"])


def downgrade() -> None:
    for table in ("outbox", "message_events", "messages", "applications", "accounts"):
        op.drop_table(table)
