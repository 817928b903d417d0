"""Scratch buffers for long frames, shared by every connection in the process.

glibc returns large freed blocks to the kernel, so a fresh buffer for each
1 MiB frame costs 256 page faults, about as much as the rest of the frame's
work (measured: ~750 faults per echoed MiB before this). The few buffers kept
here stay mapped; idle connections hold none.
"""

from __future__ import annotations

__all__ = ["give", "reuse", "take"]

_KEEP = 2  # buffers kept for reuse
_LARGEST = 1 << 22  # bytes; a longer buffer is left to the allocator

_free: list[bytearray] = []


def take(size: int) -> bytearray:
    """Return a buffer of at least ``size`` bytes (its contents are garbage)."""
    return reuse(size) or bytearray(size)


def reuse(size: int) -> bytearray | None:
    """A kept buffer of at least ``size`` bytes, or None: never allocates."""
    for index, buffer in enumerate(_free):
        if len(buffer) >= size:
            return _free.pop(index)
    return None


def give(buffer: bytearray) -> None:
    """Hand back a buffer from :func:`take` that nothing refers to any more.

    The largest are kept: a small one must not push out one that long
    frames can use.
    """
    if len(buffer) > _LARGEST:
        return
    if len(_free) < _KEEP:
        _free.append(buffer)
        return
    smallest = min(range(len(_free)), key=lambda index: len(_free[index]))
    if len(_free[smallest]) < len(buffer):
        _free[smallest] = buffer
