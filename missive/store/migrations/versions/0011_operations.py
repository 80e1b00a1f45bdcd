"""What an operator changes takes effect at once; secrets rotate; a restart resumes.

- `account_secrets`: an account's API secrets (at most two, at least one, as the hosted
  Account API has them), each hashed with its own salt. The secret each account had is
  copied in as its first.
- `accounts.disabled`: a disabled account's credentials are refused and its queued
  messages are not sent.
- `config_version`: one counter, bumped in the same transaction as every change of
  configuration (accounts, secrets, applications, links, numbers): each process's caches
  compare it, one cheap read, instead of trusting an entry for seconds.
- `claimed_by` on the three queues: the node that holds a lease, so that a process that
  starts again with the same node identity takes back at once what its previous life held.

Revision ID: 0011
Revises: 0010
"""
import time
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    secrets = op.create_table(
        "account_secrets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("secret_salt", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_account_secrets_account_id", "account_secrets", ["account_id"])
    rows = op.get_bind().execute(sa.text("SELECT id, secret_salt, secret_hash, created_at FROM accounts")).all()
    if rows:
        op.bulk_insert(secrets, [
            {"id": str(uuid.uuid4()), "account_id": r.id, "secret_salt": r.secret_salt, "secret_hash": r.secret_hash,
             "created_at": r.created_at or time.time()}
            for r in rows
        ])
    op.add_column("accounts", sa.Column("disabled", sa.Integer, nullable=False, server_default="0"))

    config = op.create_table(
        "config_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.bulk_insert(config, [{"id": 1, "version": 1}])

    for table in ("outbox", "timers", "webhook_outbox"):
        op.add_column(table, sa.Column("claimed_by", sa.String(36)))


def downgrade() -> None:
    for table in ("outbox", "timers", "webhook_outbox"):
        op.drop_column(table, "claimed_by")
    op.drop_table("config_version")
    op.drop_column("accounts", "disabled")
    op.drop_table("account_secrets")
