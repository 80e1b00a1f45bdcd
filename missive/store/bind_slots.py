"""Dispatcher heartbeats and the SMPP bind slots of each link.

A link with K binds has K slots. Each dispatcher process, at every round of its sessions
loop, says it is alive (`heartbeat`), counts the live ones (M), and holds up to ceil(K/M)
slots of each link (`hold`): it keeps and renews its own, gives back any above its share,
and takes free or expired ones. A slot is held under a lease, so the slots of a
dispatcher that died free themselves, and binds across all processes never exceed K.

A process that stalls past its lease (a long event-loop stall or SQLite lock, a VM
pause) keeps its binds up meanwhile, and another process may take its slots and bind
them too: the SMSC sees more than K binds until the stalled one runs its next round.
That round takes back the slots nobody took (the row still names it: nobody bound them
meanwhile) and gives up the others, whose binds its channel then closes.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.store.tables import bind_slots, dispatchers
from missive.store.upsert import insert


async def heartbeat(conn: AsyncConnection, me: str, now: float, forget_before: float) -> None:
    statement = insert(conn, dispatchers).values(id=me, seen_at=now)
    await conn.execute(statement.on_conflict_do_update(index_elements=["id"], set_={"seen_at": now}))
    await conn.execute(delete(dispatchers).where(dispatchers.c.seen_at < forget_before))


async def live_dispatchers(conn: AsyncConnection, since: float) -> int:
    count = (await conn.execute(select(func.count()).select_from(dispatchers).where(dispatchers.c.seen_at >= since))).scalar_one()
    return max(1, int(count))


async def hold(conn: AsyncConnection, me: str, link_id: str, slots: int, share: int, lease: float,
               clock: Callable[[], float]) -> int:
    """Hold up to `share` of the link's `slots`; how many this process now holds."""
    await conn.execute(
        insert(conn, bind_slots).values([{"link_id": link_id, "slot": i, "holder": None, "until": 0.0} for i in range(slots)])
        .on_conflict_do_nothing()
    )
    await conn.execute(delete(bind_slots).where(bind_slots.c.link_id == link_id, bind_slots.c.slot >= slots))
    query = select(bind_slots.c.slot, bind_slots.c.holder, bind_slots.c.until).where(bind_slots.c.link_id == link_id).order_by(bind_slots.c.slot)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = (await conn.execute(query)).all()
    # Read once the slots are locked: a lease dated from before a long wait for the lock
    # could be over already when written, and taken by another process at once.
    now = clock()
    # Ours even when our lease ran out (we stalled): no one else took the slot meanwhile.
    mine = [r.slot for r in rows if r.holder == me]
    free = [r.slot for r in rows if r.holder != me and (r.holder is None or r.until < now)]
    keep = (mine + free)[:share]
    give_back = [slot for slot in mine if slot not in keep]
    if give_back:
        await conn.execute(update(bind_slots).where(bind_slots.c.link_id == link_id, bind_slots.c.slot.in_(give_back))
                           .values(holder=None, until=0.0))
    if keep:
        await conn.execute(update(bind_slots).where(bind_slots.c.link_id == link_id, bind_slots.c.slot.in_(keep))
                           .values(holder=me, until=now + lease))
    return len(keep)


async def forget_links(conn: AsyncConnection, keep: list[str]) -> None:
    """Drop the slots of links that no longer exist."""
    await conn.execute(delete(bind_slots).where(bind_slots.c.link_id.not_in(keep)) if keep else delete(bind_slots))


async def release(conn: AsyncConnection, me: str) -> None:
    """Give back every slot of a dispatcher that stops, and its heartbeat."""
    await conn.execute(update(bind_slots).where(bind_slots.c.holder == me).values(holder=None, until=0.0))
    await conn.execute(delete(dispatchers).where(dispatchers.c.id == me))


