"""Masking (RFC 6455 section 5.3): XOR with a repeating 4-byte key.

Every byte a client sends and a server receives goes through here, so large
messages live or die by it. Pure Python tops out near 1 GB/s (four
translate-table passes); with NumPy installed (the ``speedups`` extra) one
vectorised XOR over 8-byte words runs at memory speed. Both are always
defined so the tests can hold them to the same answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["SMALL", "mask", "mask_in_place", "mask_in_place_numpy", "mask_in_place_python",
           "new_key", "xor", "xor_numpy", "xor_python"]

#: Below this many bytes one big-integer XOR beats any in-place pass.
SMALL = 512

_XOR_TABLES = [bytes(byte ^ key for byte in range(256)) for key in range(256)]

# Masking keys come from the OS's CSPRNG a batch at a time: one getrandom()
# call per 1024 frames instead of one per frame. A forked child starts afresh
# so that it never repeats its parent's keys.
_KEY_BATCH = 4096
_keys = b""
_key_position = 0


def new_key() -> bytes:
    """A fresh, unpredictable 4-byte masking key (RFC 6455 section 5.3)."""
    global _keys, _key_position
    position = _key_position
    if position >= len(_keys):
        _keys = os.urandom(_KEY_BATCH)
        position = 0
    _key_position = position + 4
    return _keys[position:position + 4]


def _forget_keys() -> None:
    global _keys, _key_position
    _keys, _key_position = b"", 0


os.register_at_fork(after_in_child=_forget_keys)


def mask(data: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    """Return ``data`` XORed with ``key``; meant for payloads under :data:`SMALL`."""
    size = len(data)
    if not size:
        return b""
    pad = (key * ((size >> 2) + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(
        size, "little")


def mask_in_place_python(buffer: bytearray, start: int, end: int,
                         key: bytes | bytearray) -> None:
    """XOR ``buffer[start:end]`` with ``key`` in place, one translate pass per key byte."""
    for i in range(4):
        buffer[start + i:end:4] = buffer[start + i:end:4].translate(_XOR_TABLES[key[i]])


def mask_in_place_numpy(buffer: bytearray, start: int, end: int,
                        key: bytes | bytearray) -> None:
    """XOR ``buffer[start:end]`` with ``key`` in place, 8 bytes at a time.

    Fastest when ``start`` is a multiple of 8 (NumPy copies unaligned words).
    """
    words = (end - start) >> 3
    if words:
        key8 = bytes(key) * 2
        view = _numpy.frombuffer(buffer, _numpy.uint64, words, start)
        _numpy.bitwise_xor(view, _numpy.frombuffer(key8, _numpy.uint64)[0], out=view)
    tail = start + (words << 3)
    if tail < end:  # the last 0-7 bytes; the key repeats every 4 bytes
        buffer[tail:end] = mask(buffer[tail:end], key)


def xor_python(data: bytearray, keys: bytearray) -> bytes | bytearray:
    """``data`` XOR ``keys``, byte for byte (same length): a run of small frames at once."""
    return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        len(data), "little")


def xor_numpy(data: bytearray, keys: bytearray) -> bytes | bytearray:
    """Like :func:`xor_python`, in place in ``data``."""
    view = _numpy.frombuffer(data, _numpy.uint8)
    _numpy.bitwise_xor(view, _numpy.frombuffer(keys, _numpy.uint8), out=view)
    return data


mask_in_place: Callable[[bytearray, int, int, bytes | bytearray], None]
xor: Callable[[bytearray, bytearray], bytes | bytearray]
try:
    import numpy as _numpy
except ImportError:  # the slim install: pure Python
    mask_in_place, xor = mask_in_place_python, xor_python
else:
    mask_in_place, xor = mask_in_place_numpy, xor_numpy
