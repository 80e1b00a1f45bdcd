"""The node identity of a dispatching process, kept in its data directory.

Every lease a dispatcher takes (outbox, timers, webhooks, SMPP bind slots) names its
node. A process that starts again takes the same identity, so it can hand back at once
what its previous life held instead of waiting for the leases to run out.

The identity lives in `<data_dir>/node-id`; a process holds it under an exclusive
`flock` for as long as it runs. Several processes on one data directory (`missive serve
--workers N`, `missive dispatch` beside a server) each take the first file they can lock:
`node-id`, then `node-id.1`, `node-id.2`, ... The kernel drops the lock when the process
dies, however it dies, so holding it proves that no live process holds the same
identity: what the identity leased was its previous life's.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: a fresh identity per process
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("missive.node")

# Past this many processes on one data directory, the others run without a kept identity.
MAX_SLOTS = 256


@dataclass
class Node:
    id: str
    # The locked file, or None for an identity kept nowhere (nothing to take back).
    path: Path | None = None
    _fd: int | None = None

    def close(self) -> None:
        """Let another process take this identity (the process is done with its leases)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def take(data_dir: Path) -> Node:
    """The identity of the first free `node-id` file of `data_dir`, created when new; a
    fresh one, kept nowhere, when the directory cannot hold it (logged)."""
    if fcntl is None:
        return Node(str(uuid.uuid4()))
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            path = data_dir / ("node-id" if slot == 0 else f"node-id.{slot}")
            node = _lock(path)
            if node is not None:
                return node
        log.warning("%d processes already hold an identity in %s: this one takes a fresh one, and its leases "
                    "run out after a crash instead of being taken back at its restart", MAX_SLOTS, data_dir)
    except OSError as exc:
        log.warning("no node identity kept in %s (%s): after a crash, this process's leases run out "
                    "instead of being taken back at its restart", data_dir, exc)
    return Node(str(uuid.uuid4()))


def _lock(path: Path) -> Node | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        kept = os.read(fd, 100).decode("ascii", "replace").strip()
        try:
            ident = str(uuid.UUID(kept))
        except ValueError:
            # New (or never completely written: nothing was leased under it).
            ident = str(uuid.uuid4())
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{ident}\n".encode(), 0)
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return Node(ident, path, fd)
