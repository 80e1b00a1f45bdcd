"""What a provider sends is scoped to the link it arrived on; numbers to their account.

- `provider_refs`, `part_receipts`, `seen_events` and `unmatched_receipts` were keyed by
  the link's kind ("messenger", "viber", "sms"): a second account's correctly signed
  callback naming the first account's Graph message id or Viber token found the first
  account's message. They are now keyed by the link id. Rows written before are
  attributed to the link of their message's account and kind (an SMS reference already
  starts with its link id); a row no link can be found for is dropped, and so are the
  dedupe keys of handled events and the receipts still waiting for their message,
  which cannot be attributed (at worst a provider's resent event is handled again).
- `numbers` was keyed by the number alone, first come first served across accounts:
  now by account and number, so what one account registers has no effect on another.
- `messages` records the link that carried it (id and kind).

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# The link of a row's message: the message's account, the row's kind, and for SMS the
# link id its reference starts with.
_LINK_OF = """(SELECT cl.id FROM channel_links cl JOIN messages m ON m.account_id = cl.account_id
    WHERE m.uuid = {table}.message_uuid AND cl.kind = {table}.kind
      AND ({table}.kind <> 'sms' OR {table}.ref LIKE cl.id || ':%')
    ORDER BY cl.created_at LIMIT 1)"""


def _rekey(table: str, columns: list[sa.Column], copied: str) -> None:
    """Copy `table` into a new table of `columns`, keyed by link, and swap them."""
    op.create_table(f"{table}_new", *columns)
    link = _LINK_OF.format(table=table)
    op.execute(
        f"INSERT INTO {table}_new (link_id, {copied}) SELECT link_id, {copied} FROM "
        f"(SELECT {link} AS link_id, {copied} FROM {table}) AS attributed WHERE link_id IS NOT NULL"
    )
    op.drop_table(table)
    op.rename_table(f"{table}_new", table)


def upgrade() -> None:
    _rekey("provider_refs", [
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("ref", sa.String(200), primary_key=True),
        sa.Column("message_uuid", sa.String(36), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    ], "ref, message_uuid, created_at")
    op.create_index("ix_provider_refs_message_uuid", "provider_refs", ["message_uuid"])
    _rekey("part_receipts", [
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("ref", sa.String(200), primary_key=True),
        sa.Column("message_uuid", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    ], "ref, message_uuid, status, created_at")
    op.create_index("ix_part_receipts_message_uuid", "part_receipts", ["message_uuid"])

    op.drop_table("seen_events")
    op.create_table(
        "seen_events",
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("event_key", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.drop_table("unmatched_receipts")
    op.create_table(
        "unmatched_receipts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("link_id", sa.String(36), nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error_code", sa.Integer),
        sa.Column("error_reason", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_unmatched_receipts_ref", "unmatched_receipts", ["link_id", "ref"])

    op.create_table(
        "numbers_new",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("number", sa.String(32), primary_key=True),
        sa.Column("application_id", sa.String(36)),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.execute("INSERT INTO numbers_new (account_id, number, application_id, created_at) "
               "SELECT account_id, number, application_id, created_at FROM numbers")
    op.drop_table("numbers")
    op.rename_table("numbers_new", "numbers")

    op.add_column("messages", sa.Column("link_id", sa.String(36)))
    op.add_column("messages", sa.Column("link_kind", sa.String(20)))


def downgrade() -> None:
    raise NotImplementedError("0010 is not reversible: references attributed to links cannot be un-attributed")
