"""Masking (RFC 6455 section 5.3): XOR with a repeating 4-byte key.

Every byte a client sends and a server receives goes through here, so large
messages live or die by it. Wheels built where a C compiler works carry
``_speedups`` (see the core's ``hatch_build.py``), which masks at memory speed;
without it the pure-Python functions below run, near 1 GB/s for long payloads
(four translate-table passes). Both are always defined when built, so the
tests hold them to the same answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["ACCELERATED", "SMALL", "mask", "mask_in_place", "mask_in_place_python",
           "mask_python", "new_key", "xor", "xor_python"]

#: Below this many bytes a payload is masked into a new object, above it in place.
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


def mask_python(data: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    """Return ``data`` XORed with ``key``, in one big-integer XOR (best under :data:`SMALL`)."""
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


def xor_python(data: bytearray, keys: bytearray) -> bytes | bytearray:
    """``data`` XOR ``keys``, byte for byte (same length): a run of small frames at once."""
    return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        len(data), "little")


mask: Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes]
mask_in_place: Callable[[bytearray, int, int, bytes | bytearray], None]
xor: Callable[[bytearray, bytearray], bytes | bytearray]
#: Whether the compiled accelerator is in use.
ACCELERATED: bool
try:
    from . import _speedups
except ImportError:  # built without a C compiler: pure Python
    ACCELERATED = False
    mask, mask_in_place, xor = mask_python, mask_in_place_python, xor_python
else:
    ACCELERATED = True
    mask, mask_in_place, xor = _speedups.mask, _speedups.mask_in_place, _speedups.xor
