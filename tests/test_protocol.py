"""The Sans-IO frame layer on its own: bytes in, events out, any split of the input."""

from __future__ import annotations

import importlib
import os
import struct
from collections.abc import Iterator

import pytest

from trio_websocket_core import _buffers, _mask
from trio_websocket_core._mask import mask_python
from trio_websocket_core._protocol import (
    CLOSE,
    FAIL,
    MESSAGE,
    PING,
    PONG,
    TOO_BIG,
    Event,
    FrameProtocol,
)

from .fuzz.checks import MASKERS, use_masker


# Every way of masking this install has (tests/fuzz/checks.py): pure Python
# always, and the C accelerator when the core was built with a compiler
# (test_mask_selection_prefers_the_accelerator checks it is then the one in use).
@pytest.fixture(params=list(MASKERS))
def masker(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with each masking implementation in turn."""
    with use_masker(request.param):
        yield str(request.param)


def test_mask_selection_prefers_the_accelerator() -> None:
    try:
        importlib.import_module("trio_websocket_core._speedups")
    except ImportError:
        assert not _mask.ACCELERATED
        assert _mask.mask_in_place is _mask.mask_in_place_python
    else:
        assert _mask.ACCELERATED
        assert (_mask.mask, _mask.mask_in_place, _mask.xor) == MASKERS["c"]


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0,
          key: bytes | None = b"\x01\x02\x03\x04", length: int | None = None) -> bytes:
    """A frame as a client (masked, the default) or a server (key=None) sends it."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if key else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    return head + key + mask_python(payload, key) if key else head + payload


def feed(protocol: FrameProtocol, data: bytes, step: int | None = None) -> list[Event]:
    events: list[Event] = []
    for i in range(0, len(data), step or max(1, len(data))):
        protocol.receive_data(data[i:i + (step or len(data))])
        events += all_events(protocol)
    return events


def all_events(protocol: FrameProtocol) -> list[Event]:
    """Every event the data fed so far holds, batch after batch, as the reader takes them."""
    events = protocol.events()
    while protocol.more:
        events += protocol.events()
    return events


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 7, 8, 9, 1023, 1024, 1025, 4099, 70001])
def test_mask_is_xor_with_the_repeating_key(masker: str, size: int) -> None:
    data, key = os.urandom(size), os.urandom(4)
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert _mask.mask(data, key) == expected
    assert _mask.mask(bytearray(data), bytearray(key)) == expected
    assert _mask.mask(memoryview(data), key) == expected
    assert _mask.mask(expected, key) == data


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 17, 600])
def test_xor_is_byte_for_byte(masker: str, size: int) -> None:
    data, keys = os.urandom(size), os.urandom(size)
    assert bytes(_mask.xor(bytearray(data), bytearray(keys))) == bytes(
        a ^ b for a, b in zip(data, keys, strict=True))


def test_accelerator_rejects_bad_arguments() -> None:
    # Checked in C, where a bad index would corrupt memory; Python's slices
    # clip instead. No caller passes such arguments.
    for name, (mask_, in_place, xor) in MASKERS.items():
        if name == "python":
            continue
        with pytest.raises(ValueError):
            mask_(b"abc", b"12345")
        with pytest.raises(IndexError):
            in_place(bytearray(8), 4, 9, b"1234")
        with pytest.raises(IndexError):
            in_place(bytearray(8), 5, 4, b"1234")
        with pytest.raises(BufferError):
            in_place(b"read-only", 0, 4, b"1234")
        with pytest.raises(ValueError):
            xor(bytearray(3), bytearray(4))


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 15, 16, 17, 511, 512, 4097, 65539])
@pytest.mark.parametrize("start", [0, 1, 6, 8])
def test_in_place_masking_touches_exactly_its_range(masker: str, size: int, start: int) -> None:
    data, key = bytearray(os.urandom(start + size + 5)), os.urandom(4)
    expected = data[:start] + mask_python(data[start:start + size], key) + data[start + size:]
    _mask.mask_in_place(data, start, start + size, key)
    assert data == expected


def feed_cut(protocol: FrameProtocol, data: bytes, cuts: list[int]) -> list[Event]:
    """Feed ``data`` in pieces ending at each of ``cuts``, then the rest."""
    events: list[Event] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        protocol.receive_data(data[start:end])
        events += all_events(protocol)
    return events


LONG_TEXT = "é" * 40000 + "x" * 3  # 80 003 bytes of UTF-8
LONG_BINARY = os.urandom(300000)


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("cuts", [
    [],  # all at once
    [1, 5, 9, 11, 12, 70000],  # headers split byte by byte, then a long frame in two
    list(range(7919, 900000, 7919)),  # small reads straddling every boundary
    list(range(65536, 900000, 65536)),  # reads of the usual size
    [80014, 80015, 80016],  # the next header arrives with the end of a long frame
])
def test_long_frames_arrive_intact_however_they_are_read(masker: str, client: bool,
                                                         cuts: list[int]) -> None:
    key = None if client else b"\x9a\x0b\xfe\x11"  # what a server sends is not masked
    stream = (frame(0x1, LONG_TEXT.encode(), key=key) + frame(0x2, b"small", key=key)
              + frame(0x2, LONG_BINARY, key=key)
              + frame(0x2, LONG_BINARY[:100000], fin=False, key=key)
              + frame(0x9, b"between", key=key)
              + frame(0x0, LONG_BINARY[100000:], key=key)
              + frame(0x1, "é".encode() * 40000, fin=False, key=key)
              + frame(0x0, b"!", key=key))
    assert feed_cut(FrameProtocol(client=client), stream, cuts) == [
        (MESSAGE, LONG_TEXT), (MESSAGE, b"small"), (MESSAGE, LONG_BINARY),
        (PING, b"between"), (MESSAGE, LONG_BINARY), (MESSAGE, "é" * 40000 + "!"),
    ]


def test_invalid_utf8_in_a_long_text_frame_fails_with_1007(masker: str) -> None:
    data = frame(0x1, b"a" * 70000 + b"\xff" + b"a" * 100)
    events = feed_cut(FrameProtocol(client=False), data, [100, 50000])
    assert events == [(FAIL, (1007, "text message is not valid UTF-8"))]


@pytest.mark.parametrize("size", [600, 70000, 2**20])
def test_long_messages_round_trip_and_leave_the_buffer_pool_bounded(masker: str,
                                                                   size: int) -> None:
    client, server = FrameProtocol(client=True), FrameProtocol(client=False)
    for _ in range(2):  # fill the pool, so the frames below come out of it
        FrameProtocol.release(server.message(os.urandom(size)))
    messages = [os.urandom(size) for _ in range(3)]
    frames = [client.message(m) for m in messages]  # all built before any is written
    wire = b"".join(bytes(f) for f in frames)
    for f in frames:
        FrameProtocol.release(f)
    assert len(_buffers._free) <= _buffers._KEEP  # the pool keeps only a few buffers
    assert feed(server, wire, 65536) == [(MESSAGE, m) for m in messages]
    echoed = [server.message(m) for m in messages]
    assert feed(client, b"".join(bytes(f) for f in echoed), 65536) == [
        (MESSAGE, m) for m in messages]


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7, 100, 4096])
def test_any_split_of_the_input_gives_the_same_events(step: int | None) -> None:
    stream = (frame(0x1, b"hello") + frame(0x2, b"\x00" * 125) + frame(0x2, b"b" * 126)
              + frame(0x1, b"x" * 65535) + frame(0x2, b"y" * 65536)
              + frame(0x9, b"ping") + frame(0x1, b"frag", fin=False) + frame(0xA, b"pong")
              + frame(0x0, "é".encode(), fin=False) + frame(0x0, b"!", fin=True)
              + frame(0x8, struct.pack("!H", 1000) + b"bye") + frame(0x1, b"after close"))
    events = feed(FrameProtocol(client=False), stream, step)
    assert events == [
        (MESSAGE, "hello"), (MESSAGE, b"\x00" * 125), (MESSAGE, b"b" * 126),
        (MESSAGE, "x" * 65535), (MESSAGE, b"y" * 65536), (PING, b"ping"), (PONG, b"pong"),
        (MESSAGE, "fragé!"), (CLOSE, (1000, "bye")),
    ]


def test_client_reads_unmasked_frames_and_masks_its_own() -> None:
    client = FrameProtocol(client=True)
    assert feed(client, frame(0x2, b"data", key=None)) == [(MESSAGE, b"data")]
    sent = client.message(b"out")
    assert sent[1] & 0x80  # masked
    server = FrameProtocol(client=False)
    assert feed(server, sent) == [(MESSAGE, b"out")]
    assert feed(FrameProtocol(client=True), server.message("back")) == [(MESSAGE, "back")]


@pytest.mark.parametrize(("data", "code"), [
    (frame(0x1, b"x", key=None), 1002),  # a client's frame must be masked
    (frame(0x3, b""), 1002),  # reserved opcode
    (frame(0xB, b""), 1002),  # reserved control opcode
    (frame(0x1, b"x", rsv=0x40), 1002),  # RSV1 with no extension
    (frame(0x9, b"x" * 126), 1002),  # control frame too long
    (frame(0x9, b"x", fin=False), 1002),  # fragmented control frame
    (frame(0x0, b"x"), 1002),  # continuation with no message
    (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002),  # new message mid-message
    (frame(0x1, b"\xff"), 1007),  # invalid UTF-8
    (frame(0x8, b"\x03"), 1002),  # 1-byte close payload
    (frame(0x8, struct.pack("!H", 1005)), 1002),  # local-only close code
    (frame(0x8, struct.pack("!H", 999)), 1002),
    (frame(0x8, struct.pack("!H", 2999)), 1002),
    (frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),  # invalid UTF-8 reason
    (b"\x81\xfe\x00\x05" + b"\x00" * 9, 1002),  # 2-byte length that fits in 7 bits
    (b"\x81\xff" + struct.pack("!Q", 100) + b"\x00" * 104, 1002),  # 8-byte length, not needed
])
def test_protocol_errors_fail_with_the_right_code(data: bytes, code: int) -> None:
    protocol = FrameProtocol(client=False)
    events = feed(protocol, data)
    assert events[-1][0] == FAIL and events[-1][1][0] == code
    assert protocol.events() == []  # nothing more is parsed after a failure


def test_invalid_utf8_fails_at_the_fragment_that_breaks_it() -> None:
    protocol = FrameProtocol(client=False)
    assert feed(protocol, frame(0x1, b"ok", fin=False)) == []
    events = feed(protocol, frame(0x0, b"\xc3\x28", fin=False))
    assert events == [(FAIL, (1007, "text message is not valid UTF-8"))]


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    protocol = FrameProtocol(client=False)
    assert feed(protocol, frame(0x8, struct.pack("!H", code))) == [(CLOSE, (code, None))]
    assert protocol.peer_close == (code, None)


def test_empty_close_means_1005_and_states_advance() -> None:
    protocol = FrameProtocol(client=False)
    assert feed(protocol, frame(0x8, b"")) == [(CLOSE, (1005, None))]
    assert protocol.state.name == "REMOTE_CLOSING"
    assert protocol.close(1005) == b"\x88\x00"
    assert protocol.state.name == "CLOSED"
    ours = FrameProtocol(client=False)
    ours.close(1000, "x" * 200)  # the reason is cut to fit a control frame
    assert ours.state.name == "LOCAL_CLOSING"
    with pytest.raises(RuntimeError):
        ours.message("late")


def test_size_limit_is_enforced_per_message() -> None:
    protocol = FrameProtocol(client=False, max_message_size=10)
    assert feed(protocol, frame(0x2, b"x" * 10)) == [(MESSAGE, b"x" * 10)]
    events = feed(protocol, frame(0x2, b"x" * 6, fin=False) + frame(0x0, b"x" * 6)
                  + frame(0x9, b"still parsed"))
    assert events == [(TOO_BIG, None), (PING, b"still parsed")]


def test_a_frame_too_long_for_any_message_fails_before_it_is_buffered() -> None:
    protocol = FrameProtocol(client=False, max_message_size=1000)
    # Only the header of a 1 GiB frame arrives: that alone settles it.
    events = feed(protocol, frame(0x2, b"", length=2**30)[:14])
    assert events == [(FAIL, (1009, "frame longer than any acceptable message"))]


def test_masking_keys_are_fresh_for_every_frame_across_batches() -> None:
    client = FrameProtocol(client=True)
    keys = [bytes(client.message(b"x"))[2:6] for _ in range(3000)]  # crosses key batches
    assert all(len(key) == 4 for key in keys)
    assert len(set(keys)) > 2990  # 32 random bits each: a repeat or two at most


def small_fragments(opcode: int, payload: bytes, size: int) -> bytes:
    """``payload`` as a client sends it in fragments of ``size`` bytes, each with its own key."""
    pieces = [payload[i:i + size] for i in range(0, len(payload), size)]
    return b"".join(frame(opcode if i == 0 else 0, piece, fin=i == len(pieces) - 1,
                          key=os.urandom(4)) for i, piece in enumerate(pieces))


@pytest.mark.parametrize("step", [None, 1, 5, 71, 1000, 65536])
def test_runs_of_small_fragments_reassemble_however_they_are_read(masker: str,
                                                                  step: int | None) -> None:
    text = "é☃x" * 3000  # multi-byte characters split across fragments
    binary = os.urandom(20000)
    stream = (small_fragments(0x1, text.encode(), 64) + frame(0x9, b"p")
              + small_fragments(0x2, binary, 7) + small_fragments(0x2, b"ab", 1))
    assert feed(FrameProtocol(client=False), stream, step) == [
        (MESSAGE, text), (PING, b"p"), (MESSAGE, binary), (MESSAGE, b"ab")]


def test_a_ping_inside_a_run_of_fragments_keeps_its_place(masker: str) -> None:
    message = frame(0x2, b"a" * 64, fin=False) + frame(0x0, b"b" * 64, fin=False)
    ping = frame(0x9, b"mid")
    rest = frame(0x0, b"c" * 64, fin=False) + frame(0x0, b"d", fin=True)
    events = feed(FrameProtocol(client=False), message + ping + rest)
    assert events == [(PING, b"mid"), (MESSAGE, b"a" * 64 + b"b" * 64 + b"c" * 64 + b"d")]


def test_invalid_utf8_in_a_run_of_small_fragments_fails_before_later_frames(masker: str) -> None:
    bad = small_fragments(0x1, b"ok" * 100 + b"\xff" + b"x" * 100, 16)
    events = feed(FrameProtocol(client=False), bad[:-30] + frame(0x9, b"after"))
    assert events == [(FAIL, (1007, "text message is not valid UTF-8"))]


def test_a_run_of_small_fragments_over_the_size_limit_is_too_big(masker: str) -> None:
    protocol = FrameProtocol(client=False, max_message_size=1000)
    wire = small_fragments(0x2, b"z" * 5000, 50)
    # Known as soon as the read that passes the limit is parsed, not at the last fragment.
    assert feed(protocol, wire[:len(wire) // 2]) == [(TOO_BIG, None)]
    assert feed(protocol, wire[len(wire) // 2:] + frame(0x1, b"next")) == []  # closing: dropped


def test_events_come_in_bounded_batches() -> None:
    # However small the frames, one call parses at most a batch of them, so
    # the reader can let other tasks run between batches.
    from trio_websocket_core._protocol import FRAMES_PER_BATCH

    count = 3 * FRAMES_PER_BATCH + 5
    data = b"".join(frame(0x1, b"%d" % number) for number in range(count))
    protocol = FrameProtocol(client=False)
    protocol.receive_data(data)
    first = protocol.events()
    assert len(first) == FRAMES_PER_BATCH and protocol.more
    rest = all_events(protocol)
    assert not protocol.more
    assert [value for _, value in first + rest] == [str(number) for number in range(count)]


@pytest.mark.parametrize("announced", [4 * 2**20, 2**50])
def test_memory_follows_the_bytes_received_not_the_length_announced(announced: int) -> None:
    # A header announcing a long frame, and little behind it: what is held is
    # about what arrived, however much was announced (even with no limit).
    import tracemalloc

    head = bytes([0x82, 0xFF]) + announced.to_bytes(8, "big") + b"\x01\x02\x03\x04"
    protocol = FrameProtocol(client=False, max_message_size=float("inf"))
    tracemalloc.start()
    try:
        protocol.receive_data(head + b"x" * 100)
        assert protocol.events() == []
        for _ in range(10):
            protocol.receive_data(b"y" * 10000)
            assert protocol.events() == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**18  # 100 KB arrived; 4 MiB or 1 PiB was announced


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "deflate"])
def test_a_message_in_one_character_fragments_costs_about_its_own_size(compressed: bool) -> None:
    # Issue #12 point 3: an object kept per fragment (a str for each
    # non-ASCII character) cost some 60 bytes a fragment. What is held for a
    # message in progress must stay a small multiple of the message.
    import tracemalloc
    import zlib

    from trio_websocket_core._deflate import Deflate

    text = "".join(chr(0x4E00 + i % 5000) for i in range(50_000))  # 150 KB of UTF-8
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    frames = []
    for index, character in enumerate(text):
        data = character.encode()
        if compressed:
            data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        last = index == len(text) - 1
        if compressed and last:
            data = data.removesuffix(b"\x00\x00\xff\xff")
        frames.append(frame(0x1 if index == 0 else 0x0, data, fin=last,
                            rsv=0x40 if compressed and index == 0 else 0))
    wire = b"".join(frames)
    protocol = FrameProtocol(client=False, deflate=Deflate(False) if compressed else None,
                             max_message_size=2**20)
    tracemalloc.start()
    try:
        events = feed(protocol, wire, step=65536)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert events == [(MESSAGE, text)]
    assert peak < 6 * len(text.encode())  # a str per fragment: over 20 times


def test_a_batch_ends_once_its_messages_hold_bytes_per_batch() -> None:
    # Compressed messages can be a thousand times the bytes read: one read of
    # them must not all be inflated before a full queue can stop the reader.
    import zlib

    from trio_websocket_core._deflate import Deflate
    from trio_websocket_core._protocol import BYTES_PER_BATCH

    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = b""
    for _ in range(20):
        payload = compressor.compress(bytes(2**20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        data += frame(0x2, payload.removesuffix(b"\x00\x00\xff\xff"), rsv=0x40)
    assert len(data) < 30_000
    protocol = FrameProtocol(client=False, deflate=Deflate(False), max_message_size=2**20)
    protocol.receive_data(data)
    batches = []
    while True:
        events = protocol.events()
        batches.append(events)
        assert sum(len(value) for _, value in events) <= BYTES_PER_BATCH + 2**20
        if not protocol.more:
            break
    assert [value for batch in batches for _, value in batch] == [bytes(2**20)] * 20


def test_a_run_of_small_fragments_leaves_nothing_behind() -> None:
    # The key stream kept beside a run of small masked fragments goes with it.
    import tracemalloc

    piece = b"b" * 500  # under SMALL: such fragments wait masked, in runs
    data = frame(0x2, b"a", fin=False) + b"".join(frame(0x0, piece, fin=False)
                                                  for _ in range(2_000))
    data += frame(0x0, b"c")
    protocol = FrameProtocol(client=False, max_message_size=2**21)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        assert feed(protocol, data) == [(MESSAGE, b"a" + piece * 2_000 + b"c")]
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 4096  # a run's key stream was kept: up to 1,024 x 500 bytes


def test_a_frame_filled_piece_by_piece_is_whole_when_it_arrives() -> None:
    # Growing the buffer as pieces come must not lose or reorder a byte.
    payload = os.urandom(3 * 2**20 + 17)
    data = frame(0x2, payload) + frame(0x1, b"next")
    protocol = FrameProtocol(client=False, max_message_size=2**22)
    events = feed(protocol, data, step=7919)
    assert events == [(MESSAGE, payload), (MESSAGE, "next")]


def test_binary_frames_are_limited_to_the_message_size_text_frames_to_four_times() -> None:
    binary = bytes([0x82, 0xFE]) + (2000).to_bytes(2, "big") + b"\x01\x02\x03\x04"
    assert feed(FrameProtocol(client=False, max_message_size=500), binary) == [
        (FAIL, (1009, "frame longer than any acceptable message"))]
    text = frame(0x1, "é".encode() * 400)  # 800 bytes, 400 characters
    assert feed(FrameProtocol(client=False, max_message_size=500), text) == [
        (MESSAGE, "é" * 400)]


def test_long_frames_arriving_in_pieces_keep_reusing_the_pool() -> None:
    # Growing a buffer as a frame arrives must not fill the shared pool with
    # the small buffers it outgrew: the next long frame then reuses a whole one.
    from trio_websocket_core import _buffers

    payload = os.urandom(2**20)
    data = frame(0x2, payload)
    protocol = FrameProtocol(client=False, max_message_size=2**21)
    for _ in range(3):
        assert feed(protocol, data, step=2**16) == [(MESSAGE, payload)]
        assert max(len(buffer) for buffer in _buffers._free) >= 2**20
