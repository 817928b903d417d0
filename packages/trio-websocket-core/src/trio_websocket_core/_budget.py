"""The cooperative budget: how much work our calls may do before they yield.

Trio's own primitives make every call a schedule point. A pass through the
scheduler costs more than sending or taking a small message, so making every
call one would halve small-message throughput. Instead, a call that can
finish at once spends from one budget shared by every task in the process,
and the call that empties it yields to the scheduler and refills it. So no
task can run more than ``BUDGET`` units of our calls in a row without letting
the others run, whichever connections the calls are on; other tasks' calls
only make it yield sooner. Every call still raises a pending cancellation
before it does anything.
"""

from __future__ import annotations

import trio

__all__ = ["BUDGET", "UNIT_BYTES", "UNIT_BYTES_COMPRESSED", "charge", "spend"]

#: Units of work between two schedule points, at most.
BUDGET = 64
#: A call costs one unit, plus one for every this many bytes it sends...
UNIT_BYTES = 1 << 14
#: ...or compresses, which costs far more per byte.
UNIT_BYTES_COMPRESSED = 1 << 10

_left = BUDGET


async def spend(units: int) -> None:
    """Pay for a call about to do ``units`` of work: raise a pending cancellation,
    and yield to the scheduler if the budget is spent.
    """
    global _left
    _left -= units
    if _left > 0:
        await trio.lowlevel.checkpoint_if_cancelled()
    else:
        _left = BUDGET  # refilled before yielding: the tasks that run next start afresh
        await trio.lowlevel.checkpoint()


def charge(units: int) -> None:
    """Add ``units`` of work found out about after :func:`spend`, without yielding.

    For a call that has already done work it cannot take back (a message
    compressed for a write that must follow): the next call to spend pays.
    """
    global _left
    _left -= units
