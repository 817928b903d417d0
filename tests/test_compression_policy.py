"""Which messages we compress (issue #13): per message, only where it pays.

The frame layer is driven directly for the rules themselves; then our server
and our client each send a mixed stream to wsproto, whose own permessage-
deflate inflates it, while the bytes on the wire show which messages went out
compressed (RSV1).
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate

from trio_websocket import PerMessageDeflate, WebSocketConnection, wrap_client_stream
from trio_websocket_core import _budget, _deflate
from trio_websocket_core._deflate import (
    _FEW_VALUES,
    _MANY_VALUES,
    _PROBE_FROM,
    _RECHECK_EVERY,
    _RECHECK_FROM,
    MIN_SIZE,
    TEXT_LOOK_FROM,
    Deflate,
)
from trio_websocket_core._protocol import MESSAGE, FrameProtocol

from .conftest import RawPeer
from .test_deflate import (
    RSV1,
    CountingStream,
    deflated,
    feed,
    open_pair,
    server_protocol,
    wsproto_client,
    wsproto_message,
)
from .test_protocol import frame

JSON = json.dumps([{"id": i, "name": f"user {i}", "active": i % 3 == 0, "tags": ["a", "b"]}
                   for i in range(200)])
assert len(JSON) > TEXT_LOOK_FROM


# Fixed random bytes: a fresh random draw looks "in between" once in a while
# (a 32-byte one about once in a thousand), which would make a test flaky.
DRAW = random.Random(13)


def compressed(protocol: FrameProtocol, message: str | bytes) -> bool:
    """Whether ``protocol`` sends ``message`` compressed (RSV1 on its frame)."""
    return bool(bytes(protocol.message(message))[0] & RSV1)


def sender(**settings: Any) -> FrameProtocol:
    return FrameProtocol(False, Deflate(False, **settings))


def test_messages_under_the_minimum_go_as_they_are() -> None:
    protocol = sender()
    assert not compressed(protocol, "a" * (MIN_SIZE - 1))
    assert not compressed(protocol, b"\0" * (MIN_SIZE - 1))
    assert compressed(protocol, "a" * MIN_SIZE)
    assert compressed(protocol, b"\0" * MIN_SIZE)


@pytest.mark.parametrize("size", [MIN_SIZE, 100, 1000, _RECHECK_FROM, 2**20])
def test_random_binary_of_any_size_goes_as_it_is_and_needs_no_compressor(size: int) -> None:
    deflate = Deflate(False)
    protocol = FrameProtocol(False, deflate)
    draw = random.Random(size)  # fixed bytes: a random draw may look in between, rarely
    assert not any(compressed(protocol, draw.randbytes(size)) for _ in range(20))
    assert deflate._compressor is None  # a connection that never compresses holds no zlib state


@pytest.mark.parametrize("size", [MIN_SIZE, 100, 1000, TEXT_LOOK_FROM, 2**20])
def test_text_and_structured_binary_of_any_size_are_compressed(size: int) -> None:
    protocol = sender()
    text = (JSON * (size // len(JSON) + 1))[:size]
    packed = struct.pack(f"<{size // 4}i", *range(size // 4)) + bytes(size % 4)
    assert compressed(protocol, text)
    assert compressed(protocol, text.encode())
    assert compressed(protocol, packed)


def test_the_look_takes_bytes_from_across_the_message() -> None:
    # A header that compresses before random data, and the other way about;
    # a compressible stretch in the very middle of random data.
    protocol = sender()
    assert not compressed(protocol, bytes(1000) + DRAW.randbytes(64 * 1024))
    middle = DRAW.randbytes(32 * 1024) + bytes(4096) + DRAW.randbytes(32 * 1024)
    assert not compressed(protocol, middle)
    assert compressed(protocol, DRAW.randbytes(1000) + bytes(64 * 1024))


def test_a_message_neither_plainly_text_nor_plainly_random_is_probed() -> None:
    # 100-odd distinct values in the first look: it settles nothing.
    draw = random.Random(5)
    scattered = bytes(draw.randrange(160) for _ in range(70000))  # 7.3 bits a byte, no repeats
    repeating = bytes(draw.randrange(110) for _ in range(128)) * 550  # every 128 bytes again
    noisy = bytes(min(255, max(0, int(draw.gauss(128, 40)))) for _ in range(_PROBE_FROM))
    for message in (scattered, repeating, noisy):
        look = len(set(b"".join(_deflate._spread(message, 256))))
        assert _FEW_VALUES * 162 < look < _MANY_VALUES * 162
    protocol = sender()
    assert not compressed(protocol, scattered)
    assert compressed(protocol, repeating)
    assert not compressed(protocol, noisy)  # would save under a tenth
    # Under _PROBE_FROM, compressing it costs about as much as probing it.
    assert compressed(protocol, noisy[:_PROBE_FROM - 1])


def id_list(draw: random.Random, pool: int = 200, size: int = 64_000) -> bytes:
    """Binary ids from a small set: every byte value appears, yet each id repeats."""
    ids = [draw.randbytes(16) for _ in range(pool)]
    return b"".join(draw.choice(ids) for _ in range(size // 16))


def counting_probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Record the sample of every probe from now on."""
    probes: list[tuple[int, int, int]] = []
    real_probe = _deflate._probe

    def probe(payload: bytes, sample: tuple[int, int, int], window_bits: int,
              joined: bool) -> bool:
        probes.append(sample)
        return real_probe(payload, sample, window_bits, joined)

    monkeypatch.setattr(_deflate, "_probe", probe)
    return probes


def test_random_looking_messages_are_rechecked_for_repeats(
        monkeypatch: pytest.MonkeyPatch) -> None:
    draw = random.Random(7)
    manifest = id_list(draw)
    assert len(set(b"".join(_deflate._spread(manifest, 256)))) >= _MANY_VALUES * 162
    probes = counting_probes(monkeypatch)
    protocol = sender()
    # The first random-looking message is probed, and every one while they shrink.
    assert all(compressed(protocol, manifest) for _ in range(5))
    assert probes == [_deflate._RECHECK] * 5
    # Random data: after each probe that fails, the next comes 1, 2, 4 ... 64 later.
    noise = [draw.randbytes(_RECHECK_FROM) for _ in range(4)]
    probed = []
    for i in range(256):
        before = len(probes)
        assert not compressed(protocol, noise[i % 4])
        if len(probes) > before:
            probed.append(i)
    assert probed == [0, 1, 3, 7, 15, 31, 63, 127, 191, 255]
    assert _RECHECK_EVERY == 64
    # Below _RECHECK_FROM, random-looking messages are never probed.
    probes.clear()
    assert not any(compressed(protocol, draw.randbytes(_RECHECK_FROM - 1)) for _ in range(200))
    assert probes == []


def test_id_lists_between_random_messages_are_all_compressed() -> None:
    draw = random.Random(8)
    protocol = sender()
    for _ in range(20):
        assert compressed(protocol, id_list(draw))
        assert not compressed(protocol, draw.randbytes(8192))


def test_probes_use_the_window_the_peer_agreed() -> None:
    # Ids repeat every few KiB: within our default 4 KiB window, beyond a 512-byte one.
    manifest = id_list(random.Random(9))
    assert compressed(sender(server_max_window_bits=12), manifest)
    assert not compressed(sender(server_max_window_bits=9), manifest)


def test_mixed_small_messages_are_each_judged_alone() -> None:
    # Events and random blobs interleaved, as text and as binary: no blob
    # holds back the events after it.
    protocol = sender()
    draw = random.Random(3)
    for i in range(50):
        event = json.dumps({"seq": i, "kind": "update", "user": f"user-{i % 7}", "ok": True})
        assert compressed(protocol, event)
        assert not compressed(protocol, draw.randbytes(200))
        assert compressed(protocol, event.encode())
        assert not compressed(protocol, draw.randbytes(1000))


def test_always_and_never() -> None:
    always, never = sender(compress="always"), sender(compress="never")
    for message in ("", "a", DRAW.randbytes(2**20), JSON):
        assert compressed(always, message)
        assert not compressed(never, message)


def test_never_still_inflates_what_the_peer_compresses() -> None:
    protocol = server_protocol(compress="never")
    assert feed(protocol, frame(0x1, deflated(JSON.encode()), rsv=RSV1)) == [(MESSAGE, JSON)]


def test_the_setting_is_checked_and_reaches_both_roles() -> None:
    for wrong in ("sometimes", ["auto"], None):
        with pytest.raises(ValueError, match="compress must be"):
            PerMessageDeflate(compress=wrong)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="compress must be"):
            Deflate(True, compress=wrong)  # type: ignore[arg-type]
    settings = PerMessageDeflate(compress="never")
    agreed = Deflate.accept(settings, [Deflate.offer(settings)])
    assert agreed is not None
    client = Deflate.confirm(settings, [agreed[1]])
    assert client is not None
    for deflate in (agreed[0], client):
        assert not deflate.wants(JSON.encode(), True)
        assert "compress='never'" in repr(deflate)


def test_skipped_messages_leave_the_context_as_the_peer_sees_it() -> None:
    # Our compressor with context takeover; a plain inflater on the peer's side
    # that sees only the compressed messages, as RFC 7692 has it.
    # A 4 KiB window: had the 8 KiB of random bytes entered the context, the
    # repeat could not reach back to the first.
    protocol, peer = sender(server_max_window_bits=12), zlib.decompressobj(-12)
    short = JSON[:1500]
    messages: list[str | bytes] = [short, DRAW.randbytes(8192), "ok", DRAW.randbytes(100), short]
    sizes = []
    for message in messages:
        wire = bytes(protocol.message(message))
        payload = wire[4:] if wire[1] & 0x7F == 126 else wire[2:]
        data = message.encode() if isinstance(message, str) else message
        if wire[0] & RSV1:
            assert peer.decompress(payload + b"\x00\x00\xff\xff") == data
        else:
            assert payload == data
        sizes.append(len(payload))
    # The repeat referred back into the first: nothing skipped entered the context.
    assert sizes[-1] < sizes[0] // 4


def test_peer_interleaving_compressed_and_plain_messages_inflates_in_order() -> None:
    # The peer keeps its context across its own plain messages.
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    text = JSON[:2000]
    first = deflated(text.encode(), compressor=compressor)
    again = deflated(text.encode(), compressor=compressor)
    assert len(again) < 50  # back-references into the first
    stream = (frame(0x1, first, rsv=RSV1) + frame(0x2, b"plain binary")
              + frame(0x1, b"plain text", fin=False) + frame(0x0, b"!")
              + frame(0x1, again, rsv=RSV1) + frame(0x2, bytes(100)))
    assert feed(server_protocol(), stream) == [
        (MESSAGE, text), (MESSAGE, b"plain binary"), (MESSAGE, "plain text!"),
        (MESSAGE, text), (MESSAGE, bytes(100))]


# -- against wsproto, over streams -----------------------------------------

class RecordingStream(CountingStream):
    """Keeps every byte received, to read the frames' headers afterwards."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.record = bytearray()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await super().receive_some(max_bytes)
        self.record += data
        return data


def rsv1_of_messages(wire: bytes | bytearray) -> list[bool]:
    """For each data message's first frame in ``wire``, whether RSV1 is set."""
    flags, position = [], 0
    while position < len(wire):
        first, second = wire[position], wire[position + 1]
        position += 2
        length = second & 0x7F
        if length == 126:
            length, position = int.from_bytes(wire[position:position + 2], "big"), position + 2
        elif length == 127:
            length, position = int.from_bytes(wire[position:position + 8], "big"), position + 8
        position += (4 if second & 0x80 else 0) + length
        if first & 0x0F in (0x1, 0x2):
            flags.append(bool(first & RSV1))
    return flags


MIXED: list[tuple[str | bytes, bool]] = [  # a message, and whether it goes compressed
    (JSON, True),
    (DRAW.randbytes(64 * 1024), False),  # random binary, sampled
    ("ok", False),  # tiny
    (JSON[:2000], True),
    (bytes(5000), True),  # binary that shrinks
    (b"\x01\x02", False),
    (DRAW.randbytes(1000), False),  # small random binary
    (bytes(range(60)) * 3, True),  # binary right after it
    (JSON, True),
]


async def send_mixed(ours: WebSocketConnection, peer: RawPeer, wire: RecordingStream) -> None:
    start = len(wire.record)
    for message, _ in MIXED:
        await ours.send_message(message)
        assert await wsproto_message(peer) == message  # wsproto inflated it on its own
    assert rsv1_of_messages(wire.record[start:]) == [expected for _, expected in MIXED]


async def test_our_server_decides_per_message_and_wsproto_inflates(
        nursery: trio.Nursery) -> None:
    server, peer, accepted = await wsproto_client(nursery, WsprotoDeflate(),
                                                  wrap=RecordingStream)
    assert isinstance(accepted, AcceptConnection) and accepted.extensions
    assert isinstance(peer.stream, RecordingStream)
    await send_mixed(server, peer, peer.stream)


async def test_our_client_decides_per_message_and_wsproto_inflates(
        nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    wire = RecordingStream(server_stream)
    peer = RawPeer(wire, ConnectionType.SERVER)
    extension = WsprotoDeflate()

    async def answer() -> None:
        assert isinstance(await peer.next_event(), Request)
        await peer.send(AcceptConnection(extensions=[extension]))

    nursery.start_soon(answer)
    client = await wrap_client_stream(nursery, client_stream, "localhost", "/")
    assert extension.enabled()
    await send_mixed(client, peer, wire)



async def test_the_budget_counts_compression_only_for_messages_compressed(
        nursery: trio.Nursery) -> None:
    # Compressing costs far more a byte than sending, so a compressed message
    # spends a unit per KiB (docs/api.md, "Scheduling"); one sent as it is, on
    # the same connection, a unit per 16 KiB like any other.
    client, server, _ = await open_pair(nursery, PerMessageDeflate(), PerMessageDeflate())
    spent = []
    try:
        for message in (random.Random(1).randbytes(64 * 1024), bytes(64 * 1024)):
            _budget._left = 10_000  # far from empty: nothing yields, nothing refills
            await client.send_message(message)
            spent.append(10_000 - _budget._left)
            assert await server.get_message() == message
    finally:
        _budget._left = _budget.BUDGET  # as the next test expects to find it
    assert spent == [1 + 4, 1 + 4 + 64]
