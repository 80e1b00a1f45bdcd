"""WhatsApp's conversation windows and inbound media; every exchange with a provider.

- `conversation_windows`: when each WhatsApp user last wrote to a link: a free-form
  message to a user who has not written within 24 hours is refused without calling Meta.
- `media`: inbound media fetched from a provider whose URLs need its token (WhatsApp),
  served by Missive and deleted when it expires. Kept in the database, so that every
  process of a PostgreSQL deployment can serve what any of them fetched.
- `provider_logs`: each request and answer exchanged with a provider for a message (HTTP
  to Graph or Viber, SMPP PDUs), secrets redacted, pruned after a configurable time.

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_windows",
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("last_inbound_at", sa.Double, nullable=False),
    )
    op.create_table(
        "media",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("link_id", sa.String(36), nullable=False),
        sa.Column("inbound_uuid", sa.String(36)),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    op.create_index("ix_media_expires_at", "media", ["expires_at"])
    op.create_table(
        "provider_logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_uuid", sa.String(36)),
        sa.Column("account_id", sa.String(36)),
        sa.Column("link_id", sa.String(36)),
        # "out" (Missive to the provider) or "in" (the provider to Missive)
        sa.Column("direction", sa.String(4), nullable=False),
        # "http" or "smpp"
        sa.Column("protocol", sa.String(8), nullable=False),
        # One line: "POST /v19.0/123/messages -> 200", "submit_sm seq 7", ...
        sa.Column("summary", sa.Text, nullable=False),
        # The exchange in readable form (JSON text), secrets redacted.
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
    )
    op.create_index("ix_provider_logs_message_uuid", "provider_logs", ["message_uuid"])
    op.create_index("ix_provider_logs_at", "provider_logs", ["at"])


def downgrade() -> None:
    for table in ("provider_logs", "media", "conversation_windows"):
        op.drop_table(table)
