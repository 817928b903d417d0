"""Matching pongs to the pings that are waiting for them."""

from __future__ import annotations

import os

import trio

__all__ = ["PingTracker"]


class PingTracker:
    """In-flight pings, oldest first.

    A peer may answer several pings with one pong (RFC 6455 section 5.5.3),
    so a pong releases its own ping and every ping sent before it.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        # dicts keep insertion order, which is the order the pings were sent.
        self._waiting: dict[bytes, trio.Event] = {}

    def unique_payload(self) -> bytes:
        """A random 4-byte payload that no in-flight ping uses."""
        while True:
            payload = os.urandom(4)
            if payload not in self._waiting:
                return payload

    def register(self, payload: bytes) -> trio.Event:
        """Start tracking a ping; the returned event is set when it is answered or abandoned."""
        if payload in self._waiting:
            raise ValueError(f"a ping with payload {payload!r} is already in flight")
        event = trio.Event()
        self._waiting[payload] = event
        return event

    def acknowledge(self, payload: bytes) -> None:
        """Release the ping with this payload and all older ones; ignore unsolicited pongs."""
        if payload not in self._waiting:
            return
        for key in list(self._waiting):
            self._waiting.pop(key).set()
            if key == payload:
                break

    def forget(self, payload: bytes, event: trio.Event) -> bool:
        """Stop tracking a ping. Return True if it was still unanswered."""
        if self._waiting.get(payload) is event:
            del self._waiting[payload]
            return True
        return False

    def abandon_all(self) -> None:
        """Wake every waiter without answering it (the connection is gone)."""
        for event in self._waiting.values():
            event.set()
