"""SMS: numbers, part receipts, receipts waiting for their message, inbound parts.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "numbers",
        sa.Column("number", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("application_id", sa.String(36)),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_numbers_account_id", "numbers", ["account_id"])
    op.create_table(
        "part_receipts",
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("ref", sa.String(200), primary_key=True),
        sa.Column("message_uuid", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_part_receipts_message_uuid", "part_receipts", ["message_uuid"])
    op.create_table(
        "unmatched_receipts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error_code", sa.Integer),
        sa.Column("error_reason", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_unmatched_receipts_ref", "unmatched_receipts", ["kind", "ref"])
    op.create_table(
        "inbound_parts",
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("sender", sa.String(64), primary_key=True),
        sa.Column("concat_ref", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("to_addr", sa.String(64), nullable=False),
        sa.Column("data_coding", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    for table in ("inbound_parts", "unmatched_receipts", "part_receipts", "numbers"):
        op.drop_table(table)
