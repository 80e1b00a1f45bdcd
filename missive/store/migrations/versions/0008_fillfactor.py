"""Room in each page of `messages` for its status updates (PostgreSQL).

A message's status changes two to four times, and no index covers the columns that
change (status, updated_at). PostgreSQL can then write the new version of the row in
the same page without touching any index (a HOT update), but only if the page has room:
rows inserted in creation order fill pages completely, so every status update went to
another page and added an entry to each of the four indexes. A fill factor of 80 leaves
that room. SQLite has no such setting, and needs none.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE messages SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE messages RESET (fillfactor)")
