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
    try:
        buffer = _free.pop()
    except IndexError:
        return bytearray(size)
    return buffer if len(buffer) >= size else bytearray(size)


def reuse(size: int) -> bytearray | None:
    """A kept buffer of at least ``size`` bytes, or None: never allocates."""
    for index, buffer in enumerate(_free):
        if len(buffer) >= size:
            return _free.pop(index)
    return None


def give(buffer: bytearray) -> None:
    """Hand back a buffer from :func:`take` that nothing refers to any more."""
    if len(buffer) <= _LARGEST and len(_free) < _KEEP:
        _free.append(buffer)
