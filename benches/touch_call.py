"""What ``handle.touch(name)`` costs at the call, hot and cold, beside the re-check's store of the loop time.

The idle-timeout server (``idle_server.py``) resets a timeout on every message, either with a touch or,
hand-rolled, by storing ``loop.time()`` in the connection (``c.last = loop.time()``). This times the two
calls alone, in one process on a running manager with ``--timers`` live timers, each already touched once
(as in a server, where the touch records exist):

- hot: every name in turn, then the same number of stores, many times over; ns per call;
- cold: before each single call an 8 MB copy evicts the caches (the library's lines, and most of the
  interpreter's), then one call is timed with ``perf_counter_ns``; the median over the names.

Each line gives both calls and what the touch costs beyond the store; medians of the rounds. A server's
message leaves the caches somewhere between the two.

    python benches/touch_call.py                 # 1,000 timers, 5 rounds, on each loop
    python benches/touch_call.py --quick         # 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timer_manager import CORE, TimerManager

EVICTION_BYTES = 8 << 20
HOT_PASSES = 50


class Connection:
    """Where the re-check keeps its last activity."""

    last = 0.0


async def one_round(timers: int) -> dict[str, float]:
    """One round on the running loop: ns per call of the touch and of the store, hot and cold. Each is written
    out in its own loop, as a server's ``data_received`` would make it (no wrapper call around either)."""
    loop = asyncio.get_running_loop()
    buffer = bytearray(EVICTION_BYTES)
    clock = time.perf_counter_ns
    async with TimerManager.open("touch-call", heartbeat_interval=0.01) as handle:
        names = [f"c{i}" for i in range(timers)]
        for name in names:
            handle.try_set_timer(name, 100.0)
        await asyncio.sleep(0.01)  # the sets are applied
        for name in names:
            assert handle.touch(name)
        connections = [Connection() for _ in names]
        calls = HOT_PASSES * timers
        out: dict[str, float] = {}

        start = clock()
        for _ in range(HOT_PASSES):
            for name in names:
                handle.touch(name)
        out["touch hot"] = (clock() - start) / calls
        start = clock()
        for _ in range(HOT_PASSES):
            for connection in connections:
                connection.last = loop.time()
        out["store hot"] = (clock() - start) / calls

        times = []
        for name in names:
            bytes(buffer)  # a copy of EVICTION_BYTES: what the call reads leaves the caches
            start = clock()
            handle.touch(name)
            times.append(clock() - start)
        out["touch cold"] = statistics.median(times)
        times = []
        for connection in connections:
            bytes(buffer)
            start = clock()
            connection.last = loop.time()
            times.append(clock() - start)
        out["store cold"] = statistics.median(times)
        return out


def _run(loop_name: str, timers: int) -> dict[str, float]:
    """One round on a new loop of the kind named."""
    loop: asyncio.AbstractEventLoop
    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(one_round(timers))
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 5)
    loops = ["asyncio"]
    try:
        import uvloop  # noqa: F401

        loops.append("uvloop")
    except ImportError:  # pragma: no cover - uvloop is a test extra where it installs
        pass
    print(
        f"handle.touch against c.last = loop.time(): CPython {platform.python_version()}, core {CORE}, "
        f"{args.timers:,} timers, {rounds} round(s); ns per call, median of rounds\n"
    )
    print("| loop | caches | touch | store | touch - store |")
    print("|---|---|---:|---:|---:|")
    for loop_name in loops:
        results = [_run(loop_name, args.timers) for _ in range(rounds)]
        for caches in ("hot", "cold"):
            touch = statistics.median(r[f"touch {caches}"] for r in results)
            store = statistics.median(r[f"store {caches}"] for r in results)
            extra = statistics.median(r[f"touch {caches}"] - r[f"store {caches}"] for r in results)
            print(f"| {loop_name} | {caches} | {touch:,.0f} | {store:,.0f} | {extra:,.0f} |")
    print("\nRerun: python benches/touch_call.py" + (" --quick" if args.quick else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
