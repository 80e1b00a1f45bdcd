"""SQLAlchemy Core tables: the whole schema in one place (migrations mirror it).

Times are stored as UNIX epoch seconds (double precision): portable between SQLite and
PostgreSQL, cheap to compare in the outbox claim, and exact enough for milliseconds.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("api_key", String(32), nullable=False, unique=True),
    Column("secret_salt", String(64), nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("signature_secret", String(128), nullable=False),
    Column("status_url", Text),
    Column("inbound_url", Text),
    Column("created_at", Double, nullable=False),
    # A disabled account's credentials are refused and its queued messages not sent.
    Column("disabled", Integer, nullable=False, server_default="0"),
)

# An account's API secrets: at most two, at least one (the hosted Account API's rules),
# so that a client can move to a new one before the old one is revoked. Hashed.
account_secrets = Table(
    "account_secrets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False, index=True),
    Column("secret_salt", String(64), nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("created_at", Double, nullable=False),
)

# One counter bumped in the transaction of every configuration change (accounts, secrets,
# applications, links, numbers): caches compare it rather than trust an entry for seconds.
config_version = Table(
    "config_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

applications = Table(
    "applications",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("status_url", Text),
    Column("status_method", String(8), nullable=False, server_default="POST"),
    Column("inbound_url", Text),
    Column("inbound_method", String(8), nullable=False, server_default="POST"),
    # Everything else of the Vonage application shape (other capabilities, privacy) kept
    # as given so that a PUT/GET round trip returns it unchanged.
    Column("extra", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

messages = Table(
    "messages",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("application_id", String(36)),
    Column("channel", String(20), nullable=False),
    Column("message_type", String(20), nullable=False),
    Column("to_addr", String(64), nullable=False),
    Column("from_addr", String(64), nullable=False),
    # The normalised v1 request: payload (text/image/...) and channel options.
    Column("body", JSON, nullable=False),
    Column("client_ref", String(100)),
    Column("webhook_url", Text),
    # "v1" or "v0.1": the shape of this message's status webhooks.
    Column("webhook_version", String(8), nullable=False),
    Column("status", String(20), nullable=False),
    Column("workflow_id", String(36)),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # The link that carried it (set with its send result): `sandbox:<channel>` for the
    # built-in sandbox.
    Column("link_id", String(36)),
    Column("link_kind", String(20)),
    Index("ix_messages_account_created", "account_id", "created_at"),
    Index("ix_messages_application_created", "application_id", "created_at"),
    # Only messages that have a client_ref: most have none, and an index entry costs
    # every accept a B-tree insert (migration 0009).
    Index(
        "ix_messages_client_ref",
        "account_id",
        "client_ref",
        sqlite_where=text("client_ref IS NOT NULL"),
        postgresql_where=text("client_ref IS NOT NULL"),
    ),
)

message_events = Table(
    "message_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_uuid", String(36), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("timestamp", Double, nullable=False),
    Column("provider_ref", String(200)),
    Column("error_code", Integer),
    Column("error_reason", Text),
)

# One row per message waiting to be handed to its channel. Written in the same
# transaction as the message; claimed by dispatchers with a lease (claimed_until).
outbox = Table(
    "outbox",
    metadata,
    Column("message_uuid", String(36), primary_key=True),
    Column("due_at", Double, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_until", Double),
    # The node holding the lease (missive/node.py): taken back at once by its next life.
    Column("claimed_by", String(36)),
    Column("last_error", Text),
    Index("ix_outbox_due", "due_at"),
    # On SQLite the rows live in the primary key's B-tree: no separate rowid table
    # (migration 0009).
    sqlite_with_rowid=False,
)

# Which provider account carries a channel for an account (application_id NULL) or for
# one application. `config` holds the provider settings and credentials.
channel_links = Table(
    "channel_links",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False, index=True),
    Column("application_id", String(36)),
    Column("channel", String(20), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("name", String(100), nullable=False),
    Column("config", JSON, nullable=False),
    Column("tps", Double),
    Column("is_default", Integer, nullable=False, server_default="0"),
    Column("created_at", Double, nullable=False),
)

# Statuses a provider promised to report later (the sandbox's simulated receipts), and
# later the workflow expiry timers: due rows claimed with a lease like the outbox.
timers = Table(
    "timers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),
    Column("message_uuid", String(36), nullable=False),
    Column("due_at", Double, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("claimed_until", Double),
    # The node holding the lease (missive/node.py): taken back at once by its next life.
    Column("claimed_by", String(36)),
    Index("ix_timers_due", "due_at"),
)

# Status and inbound webhooks waiting to be delivered; `payload` is the exact body signed.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    # The application, or the account for Basic-auth messages: concurrency is bounded per target.
    Column("target", String(36), nullable=False),
    Column("application_id", String(36)),
    Column("message_uuid", String(36)),
    Column("kind", String(20), nullable=False),
    Column("url", Text, nullable=False),
    Column("method", String(8), nullable=False, server_default="POST"),
    Column("payload", Text, nullable=False),
    Column("state", String(20), nullable=False),  # pending | delivered | failed
    Column("due_at", Double, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_until", Double),
    # The node holding the lease (missive/node.py): taken back at once by its next life.
    Column("claimed_by", String(36)),
    Column("last_error", Text),
    Column("last_status_code", Integer),
    Column("created_at", Double, nullable=False),
    Column("delivered_at", Double),
    Index("ix_webhook_outbox_due", "state", "due_at"),
    Index("ix_webhook_outbox_message", "message_uuid"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", String(36), nullable=False, index=True),
    Column("at", Double, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Double, nullable=False),
)

inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("application_id", String(36)),
    Column("channel", String(20), nullable=False),
    Column("message_type", String(20), nullable=False),
    Column("to_addr", String(64), nullable=False),
    Column("from_addr", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("provider_ref", String(200)),
    Column("status", String(20), nullable=False),
    Column("created_at", Double, nullable=False),
    Index("ix_inbound_account_created", "account_id", "created_at"),
)

# Provider references of sent messages (a Graph message id, a Viber message token, an
# SMSC id per part): how receipts find their message, across restarts. Scoped to the link
# that sent the message: a callback or receipt arriving on another link never finds it
# (migration 0010). A reference a provider repeats points at the newest message.
provider_refs = Table(
    "provider_refs",
    metadata,
    Column("link_id", String(36), primary_key=True),
    Column("ref", String(200), primary_key=True),
    Column("message_uuid", String(36), nullable=False, index=True),
    Column("created_at", Double, nullable=False),
)

# Provider events already handled (by message id or token): each is handled once even
# when the provider sends it again.
seen_events = Table(
    "seen_events",
    metadata,
    Column("link_id", String(36), primary_key=True),
    Column("event_key", String(200), primary_key=True),
    Column("created_at", Double, nullable=False),
)

# What Missive has learned about a provider's users: a Viber user's phone number (from a
# shared contact), whether they are subscribed, whether they ever got a transaction.
provider_users = Table(
    "provider_users",
    metadata,
    Column("link_id", String(36), primary_key=True),
    Column("user_id", String(100), primary_key=True),
    Column("phone", String(32)),
    Column("subscribed", Integer, nullable=False, server_default="1"),
    Column("had_transaction", Integer, nullable=False, server_default="0"),
    Column("updated_at", Double, nullable=False),
    Index("ix_provider_users_phone", "link_id", "phone"),
)

# Failover workflows: the steps (each a normalised v1 message and its failover rule),
# which step is current, and why each step was left. Moves are guarded by `current_step`
# so that a step is left once, whichever of a status and an expiry timer comes first.
workflows = Table(
    "workflows",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("application_id", String(36)),
    Column("template", String(20), nullable=False),
    # "dispatch" (the Workflows API, beta messages) or "v1" (a v1 message's failover array).
    Column("source", String(10), nullable=False),
    Column("status", String(20), nullable=False),  # running | completed | error
    Column("current_step", Integer, nullable=False),
    Column("steps", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Index("ix_workflows_account_created", "account_id", "created_at"),
)

# Numbers (SMS long codes, short codes) and the application their inbound messages go to.
# Each account has its own: an inbound SMS looks its number up among the numbers of the
# account whose link it arrived on, so another account registering it changes nothing.
numbers = Table(
    "numbers",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("number", String(32), primary_key=True),
    Column("application_id", String(36)),
    Column("created_at", Double, nullable=False),
)

# Receipts of single parts of multipart messages (SMS): a message is delivered when
# every one of its parts is.
part_receipts = Table(
    "part_receipts",
    metadata,
    Column("link_id", String(36), primary_key=True),
    Column("ref", String(200), primary_key=True),
    Column("message_uuid", String(36), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("created_at", Double, nullable=False),
)

# Receipts whose reference matches no sent message yet: kept, and applied when a send
# result with that reference is recorded (a receipt can overtake its submit_sm_resp).
unmatched_receipts = Table(
    "unmatched_receipts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("link_id", String(36), nullable=False),
    Column("ref", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("error_code", Integer),
    Column("error_reason", Text),
    Column("created_at", Double, nullable=False),
    Index("ix_unmatched_receipts_ref", "link_id", "ref"),
)

# Parts of inbound multipart SMS waiting for the rest (stored before the SMSC is answered).
inbound_parts = Table(
    "inbound_parts",
    metadata,
    Column("link_id", String(36), primary_key=True),
    Column("sender", String(64), primary_key=True),
    Column("concat_ref", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("total", Integer, nullable=False),
    Column("to_addr", String(64), nullable=False),
    Column("data_coding", Integer, nullable=False),
    Column("payload", Text, nullable=False),  # hex
    Column("created_at", Double, nullable=False),
)

# Dispatcher processes alive, by heartbeat: how many share the SMPP binds of a link.
dispatchers = Table(
    "dispatchers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("seen_at", Double, nullable=False),
)

# Which dispatcher holds which of a link's K binds, until its lease runs out.
bind_slots = Table(
    "bind_slots",
    metadata,
    Column("link_id", String(36), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("holder", String(36)),
    Column("until", Double, nullable=False),
)

# A link's token bucket (messages per second), shared by every dispatcher.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("tokens", Double, nullable=False),
    Column("stamp", Double, nullable=False),
)

# JWT ids already used while MISSIVE_JWT_SINGLE_USE is on, kept until their token expires:
# the primary key makes a second use fail its insert, whichever API process sees it.
used_jtis = Table(
    "used_jtis",
    metadata,
    Column("application_id", String(36), primary_key=True),
    Column("jti_hash", String(64), primary_key=True),  # SHA-256 hex: any jti, fixed size
    Column("expires_at", Double, nullable=False, index=True),
)

# When each WhatsApp user last wrote to a link (the 24-hour customer service window).
conversation_windows = Table(
    "conversation_windows",
    metadata,
    Column("link_id", String(36), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("last_inbound_at", Double, nullable=False),
)

# Inbound media fetched from a provider whose URLs need its token (WhatsApp), served by
# Missive until it expires. In the database: every process can serve what any fetched.
media = Table(
    "media",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("link_id", String(36), nullable=False),
    Column("inbound_uuid", String(36)),
    Column("content_type", String(100), nullable=False),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False, index=True),
)

# Each exchange with a provider for a message (HTTP to Graph or Viber, SMPP PDUs), in
# readable form with secrets redacted; pruned after MISSIVE_PROVIDER_LOG_DAYS.
provider_logs = Table(
    "provider_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_uuid", String(36), index=True),
    Column("account_id", String(36)),
    Column("link_id", String(36)),
    Column("direction", String(4), nullable=False),  # out | in
    Column("protocol", String(8), nullable=False),  # http | smpp
    Column("summary", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("at", Double, nullable=False, index=True),
)
