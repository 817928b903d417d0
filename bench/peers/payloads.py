"""The messages of the compression workloads, and the bytes a client moved, for every peer.

``text`` echoes JSON text of about 16 KiB a message, the shape of an API's
list response: records with ids, names, timestamps, numbers and flags.
``binary`` echoes 1 MB of random bytes a message, the stand-in for media,
encrypted or already-compressed payloads. Both run with each library's
default compression, so they show what users get out of the box.

Bytes on the wire are the IP bytes sent while the workload ran, in both
directions (``OutOctets`` in /proc/net/netstat, Linux): frames, their TCP/IP
headers and acknowledgements, whatever the library, measured by the kernel
rather than by the library. It counts the whole machine, so run the
benchmark on a quiet one (other traffic can only inflate it).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

TEXT_COUNT = 2000
TEXT_SIZE = 16 * 1024
BINARY_COUNT = 64
# Under 1 MiB even once deflate has grown it: each library takes it at its default limit.
BINARY_SIZE = 1_000_000
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
          "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo")


def json_texts(count: int = 64) -> list[str]:
    """``count`` different JSON documents of about TEXT_SIZE characters each."""
    texts = []
    for seed in range(count):
        draw = random.Random(seed)
        records = []
        size = 2  # the brackets
        while size < TEXT_SIZE - 400:
            record = {
                "id": draw.randrange(10**9),
                "name": " ".join(draw.choice(_WORDS) for _ in range(draw.randint(1, 3))),
                "email": f"{draw.choice(_WORDS)}.{draw.randrange(10**4)}@example.com",
                "created": f"2026-{draw.randint(1, 12):02}-{draw.randint(1, 28):02}T"
                           f"{draw.randrange(24):02}:{draw.randrange(60):02}:00Z",
                "score": round(draw.uniform(0, 100), 3),
                "active": draw.random() < 0.5,
                "tags": draw.sample(_WORDS, draw.randint(0, 4)),
            }
            records.append(record)
            size += len(json.dumps(record)) + 2
        texts.append(json.dumps(records))
    return texts


def wire_bytes() -> int:
    """IP bytes this machine has sent so far, loopback included."""
    with open("/proc/net/netstat") as netstat:
        names, values = (line.split() for line in netstat if line.startswith("IpExt:"))
    return int(values[names.index("OutOctets")])


def random_blobs(count: int = 4) -> list[bytes]:
    """``count`` different random messages of BINARY_SIZE bytes."""
    return [os.urandom(BINARY_SIZE) for _ in range(count)]


#: workload -> (its distinct messages, how many are echoed in all)
WORKLOADS: dict[str, tuple[Callable[[], list[Any]], int]] = {
    "text": (json_texts, TEXT_COUNT),
    "binary": (random_blobs, BINARY_COUNT),
}


async def measured_echo(send: Callable[[Any], Awaitable[Any]],
                        receive: Callable[[], Awaitable[Any]], workload: str) -> dict[str, float]:
    """Echo a workload's messages one after another (any library, trio or asyncio).

    Returns the report the benchmark reads: MB/s of payload, the bytes on the
    wire meanwhile, and the payload both ways.
    """
    make, count = WORKLOADS[workload]
    messages = make()
    size = sum(len(messages[i % len(messages)]) for i in range(count))
    wire = wire_bytes()
    start = time.perf_counter()
    for i in range(count):
        await send(messages[i % len(messages)])
        await receive()
    seconds = time.perf_counter() - start
    return {"value": size / 1e6 / seconds, "wire": wire_bytes() - wire, "payload": 2 * size}
