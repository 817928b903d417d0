"""The bounded queue between a connection's reader and the tasks that get messages.

A trio memory channel does this job but costs about 2.7 KiB a connection
(state, two channel objects, their statistics and parking lots). This holds
only what an idle connection needs: a few slots, and a deque while messages
are actually waiting. A waiting getter is handed its item as it is woken,
so getters are served in the order they came; trio never cancels a task it
has already woken, so no item is lost to a cancelled getter.

When the queue is full the producer parks with the rest of what it has
(the messages parsed from one read), and getters take those in turn
without waking it: with the default capacity of 1, waking the reader for
every message cost a third of a pipelined workload's time.
"""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import Any, Generic, TypeVar

import trio

__all__ = ["Inbox"]

T = TypeVar("T")
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_NOTHING: Any = object()  # a waiting getter's slot before it is handed an item


class Inbox(Generic[T]):
    """A FIFO of up to ``capacity`` items (0: each put waits for a getter).

    One producer (the reader task) and any number of getters. Either side
    may close it: ``close_put`` once nothing more will come (getters drain
    what is queued, then see ``EndOfChannel``), ``close_get`` when nobody
    will read any more (queued items are dropped, puts are discarded).
    """

    __slots__ = ("_capacity", "_closed_get", "_closed_put", "_getters", "_handed", "_items",
                 "_putter", "_putting")

    def __init__(self, capacity: float) -> None:
        self._capacity = capacity
        self._items: deque[T] | None = None  # only while something is queued
        # Waiting getters, oldest first: [task, the item handed to it].
        self._getters: list[list[Any]] = []
        self._putter: trio.lowlevel.Task | None = None  # the producer, waiting for room
        self._putting: deque[T] | None = None  # what it waits to put, in order
        self._closed_put = False
        self._closed_get = False
        self._handed = False  # an item went straight to a getter that has not run since

    # -- producer -----------------------------------------------------------

    def put_nowait(self, item: T) -> bool:
        """Queue ``item`` if there is room (or drop it after ``close_get``); False if full."""
        if self._closed_get:
            return True
        if self._getters:  # the queue is empty: hand it straight over
            getter = self._getters.pop(0)
            getter[1] = item
            trio.lowlevel.reschedule(getter[0])
            self._handed = True
            return True
        items = self._items
        if items is None:
            if self._capacity < 1:
                return False
            self._items = deque((item,))
        elif len(items) < self._capacity:
            items.append(item)
        else:
            return False
        return True

    async def put(self, items: list[T]) -> None:
        """Queue ``items`` in order, waiting until the last is taken if the queue fills.

        While it waits, getters take the waiting items one by one as the
        queue has room, and it wakes once all are taken. Like :meth:`get`,
        a checkpoint only when it has to wait.
        """
        index = 0
        while index < len(items) and self.put_nowait(items[index]):
            index += 1
        if index == len(items):
            return
        self._putter = trio.lowlevel.current_task()
        self._putting = deque(items[index:])
        await trio.lowlevel.wait_task_rescheduled(self._abort_put)

    def _abort_put(self, _: object) -> trio.lowlevel.Abort:
        self._putter = self._putting = None  # cancelled: what it held is dropped
        return _SUCCEEDED

    def close_put(self) -> None:
        """Nothing more will be put: getters drain the queue, then see EndOfChannel.

        Items a put is still waiting with are dropped (the connection is closing).
        """
        self._closed_put = True
        self._drop_pending()
        self._wake_all_getters()

    def queued(self) -> bool:
        """Whether items wait to be taken, in the queue or in a waiting producer's hands."""
        return self._items is not None or self._putter is not None

    def handed(self) -> bool:
        """Whether an item went straight to a waiting getter that has not run yet."""
        return self._handed

    def waiting(self) -> bool:
        """Whether getters are waiting for items."""
        return bool(self._getters)

    # -- getters ------------------------------------------------------------

    def get_nowait(self) -> T:
        """Take the oldest item.

        :raises trio.WouldBlock: if there is none yet.
        :raises trio.EndOfChannel: if there is none and never will be.
        """
        items = self._items
        if items:
            item = items.popleft()
            if not items:
                self._items = None
            if self._putter is not None:  # its item now fits
                self.put_nowait(self._take_pending())
            return item
        if self._putter is not None:  # capacity 0: take it from the producer's hands
            return self._take_pending()
        if self._closed_put or self._closed_get:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def get(self) -> T:
        """Take the oldest item, waiting for one if the queue is empty.

        A checkpoint only when it has to wait: the caller decides whether a
        ready item costs a trip through the scheduler.

        :raises trio.EndOfChannel: once the queue is empty and closed.
        """
        while True:
            try:
                return self.get_nowait()
            except trio.WouldBlock:
                pass
            getter = [trio.lowlevel.current_task(), _NOTHING]
            self._getters.append(getter)
            await trio.lowlevel.wait_task_rescheduled(partial(self._abort_get, getter))
            self._handed = False
            if getter[1] is not _NOTHING:
                return getter[1]  # type: ignore[no-any-return]
            # Woken without an item: the inbox closed. Look again.

    def _abort_get(self, getter: list[Any], _: object) -> trio.lowlevel.Abort:
        self._getters.remove(getter)
        return _SUCCEEDED

    def close_get(self) -> None:
        """Nobody will get any more: drop what is queued and whatever comes."""
        self._closed_get = True
        self._items = None
        self._drop_pending()
        self._wake_all_getters()

    # -- waking -------------------------------------------------------------

    def _drop_pending(self) -> None:
        if self._putter is not None:
            trio.lowlevel.reschedule(self._putter)
            self._putter = self._putting = None

    def _take_pending(self) -> T:
        """The producer's next waiting item; the producer wakes once it has none left."""
        putting = self._putting
        assert putting is not None
        item = putting.popleft()
        if not putting:
            assert self._putter is not None
            trio.lowlevel.reschedule(self._putter)
            self._putter = self._putting = None
        return item

    def _wake_all_getters(self) -> None:
        getters, self._getters = self._getters, []
        for task, _ in getters:
            trio.lowlevel.reschedule(task)
