"""Measure permessage-deflate settings: ratio, speed and memory per connection.

Run: hatch run python bench/deflate_settings.py
The figures in docs/compression.md come from this script.
"""

from __future__ import annotations

import json
import os
import random
import time
import tracemalloc
import zlib


def json_messages(count: int) -> list[bytes]:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "status", "price", "user", "event", "ok"]
    return [json.dumps({
        "id": i, "type": rng.choice(words), "user": f"user-{rng.randrange(5000)}",
        "price": round(rng.uniform(1, 1000), 2), "tags": rng.sample(words, 3),
        "text": " ".join(rng.choice(words) for _ in range(rng.randrange(5, 60))),
    }).encode() for i in range(count)]


def throughput(
    messages: list[bytes], level: int, wbits: int, mem_level: int
) -> tuple[float, float]:
    """(compressed/original ratio, MB/s) compressing each message with context takeover."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem_level)
    start = time.perf_counter()
    out = 0
    for message in messages:
        out += len(compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)) - 4
    elapsed = time.perf_counter() - start
    size = sum(map(len, messages))
    return out / size, size / elapsed / 1e6


def memory_per_pair(wbits: int, mem_level: int, n: int = 200) -> float:
    """KiB held by one compressor plus one decompressor that have each seen a message."""
    sample = os.urandom(256) + b"x" * 4096
    tracemalloc.start()
    keep = []
    for _ in range(n):
        c = zlib.compressobj(1, zlib.DEFLATED, -wbits, mem_level)
        d = zlib.decompressobj(-wbits)
        d.decompress(c.compress(sample) + c.flush(zlib.Z_SYNC_FLUSH))
        keep.append((c, d))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held / n / 1024


def main() -> None:
    messages = json_messages(20000)
    randoms = [os.urandom(4096) for _ in range(2000)]
    print("JSON messages, average", sum(map(len, messages)) // len(messages), "bytes")
    print(f"{'level':>5} {'wbits':>5} {'mem':>4} | {'JSON ratio':>10} {'MB/s':>7} | "
          f"{'random MB/s':>11}")
    for level, wbits, mem in [(6, 15, 8), (1, 15, 8), (1, 12, 5), (3, 12, 5), (6, 12, 5),
                              (1, 10, 4)]:
        ratio, speed = throughput(messages, level, wbits, mem)
        _, random_speed = throughput(randoms, level, wbits, mem)
        print(f"{level:>5} {wbits:>5} {mem:>4} | {ratio:>10.3f} {speed:>7.0f} | "
              f"{random_speed:>11.0f}")
    print()
    print("memory per compressing connection (compressor + decompressor), KiB:")
    for wbits, mem in [(15, 8), (12, 5), (10, 4)]:
        print(f"  wbits={wbits} memLevel={mem}: {memory_per_pair(wbits, mem):.0f}")


if __name__ == "__main__":
    main()
