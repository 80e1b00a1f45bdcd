"""The send window (dispatch/send_window.py): how many sends may be out, their
result not yet committed, at once. It follows each result's age at its commit, so that a
SIGKILL sends again only what was answered in about the last RESULT_TARGET.

The crash tests check the hard bound end to end (a kill sends again only what the
database had not recorded, never more than the in-flight limit); these check how the
window moves, on a clock the test sets."""

from __future__ import annotations

import asyncio

from missive.dispatch.send_window import RESULT_TARGET, WINDOW_FLOOR, SendWindow


def fill(window: SendWindow, count: int) -> list[str]:
    uuids = [f"m{i}" for i in range(count)]

    async def enter_all() -> None:
        for uuid in uuids:
            await window.enter(uuid)

    asyncio.run(enter_all())
    return uuids


def test_old_results_shrink_the_window_in_proportion_once_per_target() -> None:
    window = SendWindow(ceiling=256, start=64)
    uuids = fill(window, 64)
    # A result committed 0.2 s after its answer: twice the target, the window halves.
    window.leave(uuids[0], age=2 * RESULT_TARGET, now=10.0)
    assert window.capacity == 32
    # Within the same RESULT_TARGET, more old results do not cut again.
    window.leave(uuids[1], age=2 * RESULT_TARGET, now=10.0 + RESULT_TARGET / 2)
    assert window.capacity == 32
    # Later, they do; never by more than half at once, however old.
    window.leave(uuids[2], age=100 * RESULT_TARGET, now=10.0 + 2 * RESULT_TARGET)
    assert window.capacity == 16


def test_the_window_never_goes_under_its_floor_nor_over_its_ceiling() -> None:
    window = SendWindow(ceiling=40, start=16)
    uuids = fill(window, 16)
    for i, uuid in enumerate(uuids):
        window.leave(uuid, age=10.0, now=float(i))
    assert window.capacity == WINDOW_FLOOR
    young = fill(window, WINDOW_FLOOR)
    for _ in range(100):
        for uuid in young:
            window.leave(uuid, age=RESULT_TARGET / 2, now=200.0)
        young = fill(window, WINDOW_FLOOR)
    assert window.capacity == 40


def test_young_results_grow_the_window_by_half_a_send_each() -> None:
    window = SendWindow(ceiling=256, start=20)
    uuids = fill(window, 20)
    for uuid in uuids[:10]:
        window.leave(uuid, age=RESULT_TARGET / 2, now=1.0)
    assert window.capacity == 25


def test_a_full_window_holds_the_next_send_until_a_result_leaves() -> None:
    async def scenario() -> list[str]:
        window = SendWindow(ceiling=256, start=WINDOW_FLOOR)
        for i in range(WINDOW_FLOOR):
            await window.enter(f"m{i}")
        order: list[str] = []

        async def next_send() -> None:
            await window.enter("late")
            order.append("late entered")

        waiting = asyncio.create_task(next_send())
        await asyncio.sleep(0.01)
        order.append("still waiting" if not waiting.done() else "entered early")
        # A send that failed to commit (age None) frees its place without moving the window.
        window.leave("m0", age=None, now=1.0)
        await asyncio.wait_for(waiting, 1)
        assert window.capacity == WINDOW_FLOOR
        return order

    assert asyncio.run(scenario()) == ["still waiting", "late entered"]


def test_take_enters_at_once_only_with_room_and_nobody_waiting() -> None:
    """A batch of SMS joins its first message in the window only while there is room, and
    never ahead of a send already waiting for its turn."""
    async def scenario() -> None:
        window = SendWindow(ceiling=256, start=WINDOW_FLOOR)
        assert all(window.take(f"m{i}") for i in range(WINDOW_FLOOR))
        assert not window.take("one more")  # full
        waiting = asyncio.create_task(window.enter("waiter"))
        await asyncio.sleep(0.01)
        window.leave("m0", age=None, now=1.0)  # a place frees, handed to the waiter's turn
        assert not window.take("jumps the queue")
        await asyncio.wait_for(waiting, 1)
        window.leave("m1", age=None, now=1.0)
        assert window.take("after the waiter")

    asyncio.run(scenario())
