"""Identifiers of the rows Missive writes at a high rate: messages, webhooks, workflows.

They are UUIDs of version 7 (RFC 9562): a millisecond timestamp, then random bits. A
random (version 4) key lands every insert on a different page of the primary key's
B-tree, and of every index keyed by it (the outbox, the webhook outbox, the events): on
SQLite each commit then writes hundreds of scattered pages to the WAL, on PostgreSQL the
same to its WAL and buffers. Keys that grow with time append to the same few pages:
measured on SQLite, a message and its outbox row went from ~64 to ~18 µs per message.
To a client they are opaque UUIDs, as the hosted API's are.

uuid_utils (Rust) generates them; Python's own `uuid.uuid7` arrives only in 3.14.
"""

from __future__ import annotations

import uuid_utils


def time_ordered_id() -> str:
    """A new UUID (version 7) in its canonical 36-character form."""
    return str(uuid_utils.uuid7())
