"""The Sans-IO frame layer on its own: bytes in, events out, any split of the input."""

from __future__ import annotations

import os
import struct

import pytest

from trio_websocket_core._protocol import (
    CLOSE,
    FAIL,
    MESSAGE,
    PING,
    PONG,
    TOO_BIG,
    Event,
    FrameProtocol,
    mask,
)


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
    return head + key + mask(payload, key) if key else head + payload


def feed(protocol: FrameProtocol, data: bytes, step: int | None = None) -> list[Event]:
    events: list[Event] = []
    for i in range(0, len(data), step or max(1, len(data))):
        protocol.receive_data(data[i:i + (step or len(data))])
        events += protocol.events()
    return events


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1023, 1024, 1025, 4099, 70001])
def test_mask_is_xor_with_the_repeating_key(size: int) -> None:
    data, key = os.urandom(size), os.urandom(4)
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert mask(data, key) == expected
    assert mask(bytearray(data), bytearray(key)) == expected
    assert mask(expected, key) == data


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
    assert feed(protocol, frame(0x8, struct.pack("!H", code))) == [(CLOSE, (code, ""))]
    assert protocol.peer_close == (code, "")


def test_empty_close_means_1005_and_states_advance() -> None:
    protocol = FrameProtocol(client=False)
    assert feed(protocol, frame(0x8, b"")) == [(CLOSE, (1005, ""))]
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
