"""The sessions loop: keep the provider sessions of connected channels (SMPP) open.

Every `sessions_interval` seconds the dispatcher reads the links of every kind whose
channel keeps sessions, says it is alive, and holds its share of each link's binds
(`missive/store/bind_slots.py`); the channel is then told to keep exactly that many
binds per link, so receipts and inbound messages arrive while nothing is sent. With
several dispatchers the binds of a link are spread among them and never exceed its
`binds`; a dispatcher holding none hands that link's messages back (`Elsewhere`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncEngine

from missive.channels.base import Channel, ChannelLink
from missive.config import Settings
from missive.dispatch.routing import as_link
from missive.store import bind_slots
from missive.store.links import links_of_kinds
from missive.waiting import Outage, wait_any

log = logging.getLogger("missive.dispatch")

# A dispatcher is alive, and its slots held, for this many sessions intervals, and at
# least MISSIVE_BIND_LEASE_MIN seconds (10): a round held up by a busy process must not
# let another process take a slot whose bind is still up.
LEASE_ROUNDS = 3


class SessionKeeper:
    def __init__(self, engine: AsyncEngine, settings: Settings, channels: dict[str, Channel],
                 clock: Callable[[], float]) -> None:
        self.id = str(uuid.uuid4())
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._channels = {kind: c for kind, c in channels.items() if hasattr(c, "maintain")}
        # Set when a send found no session here: look for a free slot now, not next round.
        self.wake = asyncio.Event()
        # When the leases of the last round run out (0: no round yet).
        self._leased_until = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        if not self._channels:
            return
        outage = Outage(log, "keeping provider sessions")
        while not stopping.is_set():
            try:
                await self._round()
                outage.recovered()
            except Exception as exc:  # noqa: BLE001 - tried again at the next round
                outage.failed(exc)
            await wait_any(stopping, self.wake, self._settings.sessions_interval)
            self.wake.clear()
        try:
            async with self._engine.begin() as conn:
                await bind_slots.release(conn, self.id)
        except Exception as exc:  # noqa: BLE001 - the leases run out instead
            log.warning("giving back bind slots failed: %s", exc)

    async def _round(self) -> None:
        interval = self._settings.sessions_interval
        lease = max(self._settings.bind_lease_min, LEASE_ROUNDS * interval)
        rows = await links_of_kinds(self._engine, list(self._channels))
        now = self._clock()
        if self._leased_until and now > self._leased_until:
            # The process stalled, or its rounds failed, past its leases: `hold` takes back
            # the slots nobody took meanwhile and gives up the others (their binds close).
            log.warning("bind slot leases ran out %.1f s ago; holding the slots again", now - self._leased_until)
        async with self._engine.begin() as conn:
            await bind_slots.heartbeat(conn, self.id, now, forget_before=now - 10 * lease)
            live = await bind_slots.live_dispatchers(conn, since=now - lease)
            await bind_slots.forget_links(conn, [r["id"] for r in rows])
        held: dict[str, list[ChannelLink]] = {kind: [] for kind in self._channels}
        for row in rows:
            link = as_link(row, self._settings)
            wanted = _binds(link)
            async with self._engine.begin() as conn:
                mine = await bind_slots.hold(conn, self.id, link.id, wanted, math.ceil(wanted / live), lease, self._clock)
            if mine:
                held[link.kind].append(replace(link, config={**link.config, "binds": mine}))
        self._leased_until = now + lease if any(held.values()) else 0.0
        for kind, links in held.items():
            await self._channels[kind].maintain(links)  # type: ignore[attr-defined]


def _binds(link: ChannelLink) -> int:
    binds = link.config.get("binds", 1)
    return binds if isinstance(binds, int) and binds >= 1 else 1
