"""The queue between a reader and get_message(): order, bounds, closing, cancelling."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from trio_websocket_core._inbox import Inbox


async def test_items_come_out_in_order_up_to_the_capacity() -> None:
    inbox: Inbox[int] = Inbox(2)
    assert inbox.put_nowait(1) and inbox.put_nowait(2)
    assert not inbox.put_nowait(3)  # full
    assert [inbox.get_nowait(), inbox.get_nowait()] == [1, 2]
    with pytest.raises(trio.WouldBlock):
        inbox.get_nowait()


async def test_a_full_queue_holds_the_producer_until_a_getter_makes_room(
        nursery: trio.Nursery) -> None:
    inbox: Inbox[int] = Inbox(1)
    done: list[int] = []

    async def produce() -> None:
        for i in range(3):
            await inbox.put([i])
            done.append(i)

    nursery.start_soon(produce)
    await trio.testing.wait_all_tasks_blocked()
    assert done == [0]  # 0 is queued, 1 waits for room
    assert inbox.get_nowait() == 0
    assert inbox.get_nowait() == 1  # the waiting item moved up at once
    await trio.testing.wait_all_tasks_blocked()
    assert done == [0, 1, 2]
    assert await inbox.get() == 2


async def test_capacity_zero_hands_each_item_to_a_getter(nursery: trio.Nursery) -> None:
    inbox: Inbox[str] = Inbox(0)
    assert not inbox.put_nowait("x")
    got: list[str] = []

    async def getter() -> None:
        got.append(await inbox.get())

    nursery.start_soon(getter)
    await trio.testing.wait_all_tasks_blocked()
    await inbox.put(["handed over"])
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["handed over"]


async def test_an_unbounded_queue_never_blocks() -> None:
    inbox: Inbox[int] = Inbox(math.inf)
    assert all(inbox.put_nowait(i) for i in range(10000))
    assert [inbox.get_nowait() for _ in range(10000)] == list(range(10000))


async def test_getters_are_served_in_the_order_they_came(nursery: trio.Nursery) -> None:
    inbox: Inbox[int] = Inbox(10)
    got: list[tuple[str, int]] = []

    async def getter(name: str) -> None:
        got.append((name, await inbox.get()))

    for name in "abc":
        nursery.start_soon(getter, name)
        await trio.testing.wait_all_tasks_blocked()
    for i in range(3):
        inbox.put_nowait(i)
    await trio.testing.wait_all_tasks_blocked()
    assert dict(got) == {"a": 0, "b": 1, "c": 2}  # the first to wait gets the first item


async def test_a_cancelled_getter_loses_nothing(nursery: trio.Nursery) -> None:
    inbox: Inbox[int] = Inbox(5)
    scope = trio.CancelScope()

    async def impatient() -> None:
        with scope:
            await inbox.get()

    nursery.start_soon(impatient)
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert inbox.put_nowait(7)  # no cancelled getter is left waiting to swallow it
    assert inbox.get_nowait() == 7


async def test_close_put_lets_getters_drain_then_ends(nursery: trio.Nursery) -> None:
    inbox: Inbox[int] = Inbox(5)
    inbox.put_nowait(1)
    inbox.close_put()
    assert await inbox.get() == 1
    with pytest.raises(trio.EndOfChannel):
        await inbox.get()

    waiting: Inbox[int] = Inbox(5)
    ended = trio.Event()

    async def getter() -> None:
        with pytest.raises(trio.EndOfChannel):
            await waiting.get()
        ended.set()

    nursery.start_soon(getter)
    await trio.testing.wait_all_tasks_blocked()
    waiting.close_put()
    await ended.wait()


async def test_close_get_drops_the_queue_and_frees_the_producer(nursery: trio.Nursery) -> None:
    inbox: Inbox[int] = Inbox(1)
    inbox.put_nowait(1)
    released = trio.Event()

    async def produce() -> None:
        await inbox.put([2])  # waits: the queue is full
        released.set()

    nursery.start_soon(produce)
    await trio.testing.wait_all_tasks_blocked()
    inbox.close_get()
    await released.wait()
    assert inbox.put_nowait(3)  # accepted and dropped
    with pytest.raises(trio.EndOfChannel):
        inbox.get_nowait()


async def test_a_producer_waiting_with_several_items_wakes_once_all_are_queued(
        nursery: trio.Nursery) -> None:
    inbox: Inbox[int] = Inbox(1)
    woke: list[bool] = []

    async def produce() -> None:
        await inbox.put([1, 2, 3, 4])
        woke.append(True)

    nursery.start_soon(produce)
    await trio.testing.wait_all_tasks_blocked()
    assert [inbox.get_nowait(), inbox.get_nowait()] == [1, 2]  # no wake-up in between
    await trio.testing.wait_all_tasks_blocked()
    assert not woke  # it still holds 4
    assert inbox.get_nowait() == 3  # 4 moves into the queue: nothing left to hold
    await trio.testing.wait_all_tasks_blocked()
    assert woke == [True]
    assert inbox.get_nowait() == 4


async def test_queued_says_whether_anything_waits_to_be_taken(nursery: trio.Nursery) -> None:
    # The reader asks this after each read: items still waiting mean the
    # peer streams, so it reads again before waiting for the socket.
    inbox: Inbox[int] = Inbox(1)
    assert not inbox.queued()
    nursery.start_soon(inbox.put, [1, 2])
    await trio.testing.wait_all_tasks_blocked()
    assert inbox.queued()  # 1 in the queue, 2 in the producer's hands
    assert inbox.get_nowait() == 1
    assert inbox.queued()  # 2 moved up
    assert inbox.get_nowait() == 2
    assert not inbox.queued()


async def test_waiting_and_handed_track_getters_until_they_run(nursery: trio.Nursery) -> None:
    # The reader stands aside after handing an item to a waiting getter
    # (handed) until that getter has run; a getter may read the socket
    # itself only when no other getter waits ahead of it (waiting).
    inbox: Inbox[int] = Inbox(1)
    got: list[int] = []

    async def getter() -> None:
        got.append(await inbox.get())

    assert not inbox.waiting() and not inbox.handed()
    nursery.start_soon(getter)
    await trio.testing.wait_all_tasks_blocked()
    assert inbox.waiting() and not inbox.handed()
    assert inbox.put_nowait(7)  # straight to the getter, which has not run yet
    assert inbox.handed() and not inbox.waiting() and not inbox.queued()
    await trio.testing.wait_all_tasks_blocked()
    assert got == [7] and not inbox.handed()
    assert inbox.put_nowait(8)  # nobody waits: queued, not handed
    assert inbox.queued() and not inbox.handed()
