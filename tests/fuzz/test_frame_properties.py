"""Properties of the Sans-IO frame parser over random streams split at random reads.

Streams come from tests/fuzz/wire.py's own encoder (and zlib for
permessage-deflate), in both roles, both masking implementations, with and
without compression. Valid streams must come out exactly: every message
intact and in order, every ping and pong, the close, and nothing else.
Broken ones may only end in the parser's documented outcomes, never an
exception, with every event from before the damage intact, in bounded memory.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from .checks import check_events, feed, feed_bounded, first_divergence, named, use_masker
from .strategies import Scenario, fuzz_settings, scenarios
from .wire import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    RSV1,
    RSV2,
    RSV3,
    TEXT,
    WIRE_CLOSE_CODES,
    Expected,
    encode_frame,
    fresh_deflate,
    repeated_deflate,
)


def assert_same_events(actual: list[Expected], expected: list[Expected]) -> None:
    assert actual == expected, f"first difference (index, got, expected): " \
                               f"{first_divergence(actual, expected)!r:.500}"


@fuzz_settings(200)
@given(scenarios())
def test_valid_streams_arrive_intact_and_in_order(scenario: Scenario) -> None:
    protocol = scenario.protocol()
    with use_masker(scenario.masker):
        events = feed(protocol, scenario.reads())
        assert_same_events(named(events), scenario.stream.expected)
        check_events(events, scenario.max_message_size, protocol)
        if not scenario.stream.closed:
            # The parser stopped exactly at the end of the last frame: the next one parses.
            key = next(scenario.keys) if scenario.masked else None
            assert named(feed(protocol, [encode_frame(PING, b"next", key=key)])) == [
                ("ping", b"next")]


# -- one broken frame at a frame boundary: the documented outcome, exactly ----------

INVALID_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\xe2\x82",
                b"\x80"]
BAD_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]
#: Broken frames: name -> (where it fits: "any", "open" (inside a message), "closed"
#: (between messages), "closed+deflate", "plain" (no compression); the outcomes allowed).
FAIL_1002 = {("fail", 1002)}
TOO_BIG = {("too big", None), ("fail", 1009)}
BROKEN = {
    "rsv2-or-3": ("any", FAIL_1002),
    "rsv1-on-control": ("any", FAIL_1002),
    "rsv1-on-continuation": ("any", FAIL_1002),
    "rsv1-without-deflate": ("plain", FAIL_1002),
    "reserved-opcode": ("any", FAIL_1002),
    "long-length-form": ("any", FAIL_1002),
    "wrong-masking": ("any", FAIL_1002),
    "long-control": ("any", FAIL_1002),
    "fragmented-control": ("any", FAIL_1002),
    "close-1-byte": ("any", FAIL_1002),
    "close-bad-code": ("any", FAIL_1002),
    "close-bad-reason": ("any", {("fail", 1007)}),
    "huge-length": ("any", {("fail", 1009)}),
    "continuation-outside-message": ("closed", FAIL_1002),
    "message-inside-message": ("open", FAIL_1002),
    "invalid-utf8": ("closed", {("fail", 1007)}),
    "invalid-utf8-compressed": ("closed+deflate", {("fail", 1007)}),
    "corrupt-deflate": ("closed+deflate", {("fail", 1007)}),
    "too-big": ("closed", TOO_BIG),
    "too-big-text": ("closed", TOO_BIG),
    "deflate-bomb": ("closed+deflate", TOO_BIG),
}


def applies(needs: str, open_message: bool, deflate: bool) -> bool:
    return {"any": True, "open": open_message, "closed": not open_message,
            "closed+deflate": deflate and not open_message,
            "plain": not deflate}[needs]


def broken_frame(draw: st.DrawFn, name: str, scenario: Scenario) -> bytes:
    """Bytes of the broken frame ``name``, masked as the scenario's sender masks."""
    masked = scenario.masked

    def key(wrong: bool = False) -> bytes | None:
        return next(scenario.keys) if masked != wrong else None

    small = draw(st.binary(max_size=20))
    data_opcode = draw(st.sampled_from([TEXT, BINARY, CONTINUATION]))
    control = draw(st.sampled_from([PING, PONG, CLOSE]))
    limit = int(scenario.max_message_size)
    if name == "rsv2-or-3":
        opcode = draw(st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG]))
        return encode_frame(opcode, small, rsv=draw(st.sampled_from([RSV2, RSV3])), key=key())
    if name == "rsv1-on-control":
        return encode_frame(draw(st.sampled_from([PING, PONG])), small, rsv=RSV1, key=key())
    if name == "rsv1-on-continuation":
        return encode_frame(CONTINUATION, small, fin=draw(st.booleans()), rsv=RSV1, key=key())
    if name == "rsv1-without-deflate":
        return encode_frame(data_opcode, small, rsv=RSV1, key=key())
    if name == "reserved-opcode":
        opcode = draw(st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]))
        return encode_frame(opcode, small, fin=draw(st.booleans()), key=key())
    if name == "long-length-form":
        form, size = draw(st.sampled_from([(16, 0), (16, 125), (64, 0), (64, 65535),
                                           (64, 1 << 63), (64, (1 << 64) - 1)]))
        opcode = draw(st.sampled_from([TEXT, BINARY, CONTINUATION, PING]))
        return encode_frame(opcode, b"", length=size, length_form=form, key=key())
    if name == "wrong-masking":
        opcode = draw(st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE]))
        return encode_frame(opcode, b"", key=key(wrong=True))
    if name == "long-control":
        return encode_frame(control, draw(st.binary(min_size=126, max_size=300)), key=key())
    if name == "fragmented-control":
        return encode_frame(control, small[:2] if control == CLOSE else small, fin=False,
                            key=key())
    if name == "close-1-byte":
        return encode_frame(CLOSE, small[:1] or b"\x03", key=key())
    if name == "close-bad-code":
        return encode_frame(CLOSE, struct.pack("!H", draw(st.sampled_from(BAD_CLOSE_CODES))),
                            key=key())
    if name == "close-bad-reason":
        reason = b"ok" + draw(st.sampled_from(INVALID_UTF8))
        code = draw(st.sampled_from(WIRE_CLOSE_CODES))
        return encode_frame(CLOSE, struct.pack("!H", code) + reason, key=key())
    if name == "huge-length":
        size = draw(st.sampled_from([max(limit * 5 + 5000, 1 << 17), 1 << 40, (1 << 63) - 1]))
        return encode_frame(data_opcode, b"", length=size, key=key())
    if name == "continuation-outside-message":
        return encode_frame(CONTINUATION, small, fin=draw(st.booleans()), key=key())
    if name == "message-inside-message":
        rsv = RSV1 if scenario.agreed is not None and draw(st.booleans()) else 0
        return encode_frame(draw(st.sampled_from([TEXT, BINARY])), small,
                            fin=draw(st.booleans()), rsv=rsv, key=key())
    if name == "invalid-utf8":
        payload = draw(st.sampled_from(INVALID_UTF8))
        return encode_frame(TEXT, small.decode("latin-1").encode("ascii", "replace") + payload,
                            key=key())
    if name == "invalid-utf8-compressed":
        # Inflating to at most 4 * limit bytes (1009 past that, before any decoding).
        text = "é".encode() * min(len(small), (4 * limit - 4) // 2)
        payload = fresh_deflate(text + draw(st.sampled_from(INVALID_UTF8)))
        return encode_frame(TEXT, payload, rsv=RSV1, key=key())
    if name == "corrupt-deflate":
        # BTYPE 11 is reserved: no inflater accepts a block starting so.
        return encode_frame(draw(st.sampled_from([TEXT, BINARY])), b"\x06" + small, rsv=RSV1,
                            key=key())
    if name in ("too-big", "too-big-text"):
        extra = draw(st.integers(1, 40))
        if name == "too-big":
            payload, opcode = b"\x00" * (limit + extra), BINARY
        else:
            payload, opcode = "é".encode() * (limit + extra), TEXT
        cut = draw(st.integers(0, len(payload)))
        if draw(st.booleans()):
            return encode_frame(opcode, payload, key=key())
        return (encode_frame(opcode, payload[:cut], fin=False, key=key())
                + encode_frame(CONTINUATION, payload[cut:], key=key()))
    assert name == "deflate-bomb"
    # Inflating to far more than the limit, from fewer bytes than a frame may
    # have (zlib shrinks a run of one byte about 1000 times), in fragments.
    big = min(900 * (limit + 1024), 1 << 23)
    size = draw(st.sampled_from([limit + 1, 4 * limit + 4, big, big]))
    payload = repeated_deflate(size)
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
    edges = [0, *cuts, len(payload)]
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    return b"".join(
        encode_frame(opcode if index == 0 else CONTINUATION, payload[a:b],
                     fin=index == len(edges) - 2, rsv=RSV1 if index == 0 else 0, key=key())
        for index, (a, b) in enumerate(itertools.pairwise(edges)))


@pytest.mark.parametrize("name", sorted(BROKEN))
@fuzz_settings(12)
@given(data=st.data())
def test_a_broken_frame_fails_as_documented_after_every_event_before_it(
        name: str, data: st.DataObject) -> None:
    needs, outcomes = BROKEN[name]
    deflate = True if "deflate" in needs else False if needs == "plain" else None
    scenario = data.draw(scenarios(finite_limit=True, deflate=deflate))
    places = [(offset, open_message) for _, offset, open_message in scenario.stream.boundaries()
              if applies(needs, open_message, scenario.agreed is not None)]
    assume(places)
    offset, _ = data.draw(st.sampled_from(places))
    broken = broken_frame(data.draw, name, scenario)
    stream = bytes(scenario.stream.data[:offset]) + broken + bytes(scenario.stream.data[offset:])
    cuts = sorted({*scenario.cuts, offset, offset + len(broken) // 2})
    protocol = scenario.protocol()
    with use_masker(scenario.masker):
        events = feed_bounded(protocol, scenario.reads(stream, cuts),
                              int(scenario.max_message_size))
    check_events(events, scenario.max_message_size, protocol)
    actual, prefix = named(events), scenario.stream.prefix(offset)
    assert_same_events(actual[:len(prefix)], prefix)
    assert len(actual) > len(prefix), f"{name}: nothing reported"
    kind, value = actual[len(prefix)]
    outcome = (kind, value[0] if kind == "fail" else value)
    if name == "invalid-utf8-compressed" and scenario.max_message_size == 0:
        outcomes = TOO_BIG  # no text at all fits: the size check comes first
    assert outcome in outcomes, f"{name}: {actual[len(prefix)]!r}"


# -- random damage anywhere: documented outcomes only --------------------------------

mutations = st.lists(st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(0, 2**31), st.integers(0, 255), st.binary(min_size=1, max_size=12)),
    min_size=1, max_size=4)


def damage(data: bytes, changes: list[tuple[str, int, int, bytes]]) -> tuple[bytes, int]:
    """``data`` with each change made, and the offset of the first byte changed."""
    out = bytearray(data)
    where = []
    # Offsets are taken modulo the length + 1. Made from the last backwards, each
    # change leaves the bytes before it where they were.
    folded = [(kind, position % (len(data) + 1), value, inserted)
              for kind, position, value, inserted in changes]
    for kind, position, value, inserted in sorted(folded, key=lambda change: -change[1]):
        if kind in ("flip", "set") and position == len(out):
            kind = "insert"
        if kind == "flip":
            out[position] ^= 1 << (value % 8)
        elif kind == "set":
            out[position] = value
        elif kind == "insert":
            out[position:position] = inserted
        elif kind == "delete":
            del out[position:position + 1 + value]
        else:
            del out[position:]
        where.append(position)
    return bytes(out), min(where)


@fuzz_settings(250)
@given(scenarios(finite_limit=True), mutations, st.none() | st.binary(max_size=300))
def test_damaged_streams_give_only_documented_outcomes(
        scenario: Scenario, changes: list[Any], garbage: bytes | None) -> None:
    if garbage is not None:
        data, first_change = garbage, 0
    else:
        data, first_change = damage(bytes(scenario.stream.data), changes)
    protocol = scenario.protocol()
    with use_masker(scenario.masker):
        events = feed_bounded(protocol, scenario.reads(data), int(scenario.max_message_size))
    check_events(events, scenario.max_message_size, protocol)
    prefix = scenario.stream.prefix(first_change) if garbage is None else []
    assert_same_events(named(events)[:len(prefix)], prefix)
