"""The soak workload: many live timers and many mixed operations through the handle, in virtual time.

``run_soak(timers, operations)`` sets ``timers`` named timers, then runs ``operations`` mixed calls
(60 % set or reset, 25 % cancel, 5 % batch set, 5 % batch cancel, 5 % introspection) while a
consumer drains the events, the clock moving 1 ms (virtual) every 1000 operations. Every set carries
a unique generation number as its payload, so each event is checked against the call that armed it:

* an event's deadline is the one its set call computed, it is received at or after that deadline,
  and each generation is received at most once, in increasing order per name;
* at the end (commands flushed, the clock moved past every deadline, events drained) every name
  whose last call was a set has received exactly that set's event, and names whose last call was a
  cancel have received nothing after it;
* ``stats().fired - stats().retracted`` equals the events received (nothing lost, nothing doubled);
* RSS and tracemalloc's traced memory are sampled at checkpoints; after the working set is reached
  they must stay flat;
* the names' reference counts are the same before and after (a leak in the Cython table shows there).

Run it on its own: ``python tests/soak.py [--timers N] [--operations N] [--table c|py]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import sys
import time
import tracemalloc
from array import array
from typing import Any

import looptime
from support import use_core

from timer_manager import TimerManager

MS = 0.001


def rss_bytes() -> int:
    """The current resident set size (Linux /proc), or the peak where that is not available."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize()
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _soak(timers: int, operations: int, checkpoints: int, seed: int, trace: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    names = [f"timer:{i}" for i in range(timers)]
    index = {name: i for i, name in enumerate(names)}
    refcounts_before = [sys.getrefcount(names[i]) for i in range(0, timers, max(1, timers // 1000))]

    latest_gen = array("q", [-1] * timers)  # the generation of the last set, or -1
    latest_deadline = array("d", [0.0] * timers)
    cancelled_after = array("q", [-1] * timers)  # the generation current when the last cancel came
    received_gen = array("q", [-1] * timers)  # the last generation received per name
    counts = {"received": 0, "late_max": 0.0}
    problems: list[str] = []

    manager, handle = TimerManager.new("soak", MS, 4096, 1024)
    run_task = asyncio.ensure_future(manager.run())
    gen = 0

    async def consume() -> None:
        while True:
            events = await handle.recv_events(1024)
            if not events:
                return
            now = loop.time()
            for event in events:
                i = index[event.name]
                g = event.data
                if g <= received_gen[i]:
                    problems.append(f"{event!r}: generation {g} after {received_gen[i]} (twice or out of order)")
                received_gen[i] = g
                if g == latest_gen[i] and event.deadline != latest_deadline[i]:
                    problems.append(f"{event!r}: deadline differs from its set call's {latest_deadline[i]}")
                if now < event.deadline:
                    problems.append(f"{event!r} received early at {now}")
                counts["late_max"] = max(counts["late_max"], now - event.deadline)
            counts["received"] += len(events)
            if len(problems) > 20:
                raise AssertionError(problems)

    consumer = asyncio.ensure_future(consume())

    def set_one(i: int, duration: float) -> None:
        nonlocal gen
        gen += 1
        latest_gen[i] = gen
        latest_deadline[i] = loop.time() + duration

    # Warm-up: every name armed once.
    for i, name in enumerate(names):
        duration = rng.uniform(0.5, 5.0)
        set_one(i, duration)
        await handle.set_timer(name, duration, data=gen)
    await handle.flush()

    samples: list[dict[str, Any]] = []
    started = time.perf_counter()
    if trace:
        tracemalloc.start()
    every = max(1, operations // checkpoints)
    done_ops = 0
    while done_ops < operations:
        for _ in range(min(1000, operations - done_ops)):
            r = rng.random()
            i = rng.randrange(timers)
            if r < 0.60:
                duration = rng.uniform(0.0, 5.0)
                set_one(i, duration)
                await handle.set_timer(names[i], duration, data=gen)
            elif r < 0.85:
                cancelled_after[i] = latest_gen[i]
                latest_gen[i] = -1
                await handle.cancel_timer(names[i])
            elif r < 0.90:
                items: list[tuple[int, float, int]] = []
                for j in rng.sample(range(timers), min(8, timers)):
                    if any(j == k for k, _, _ in items):
                        continue
                    duration = rng.uniform(0.0, 5.0)
                    set_one(j, duration)
                    items.append((j, duration, gen))
                await handle.set_timers([(names[j], d, g) for j, d, g in items])
            elif r < 0.95:
                chosen = rng.sample(range(timers), min(8, timers))
                for j in chosen:
                    cancelled_after[j] = latest_gen[j]
                    latest_gen[j] = -1
                await handle.cancel_timers([names[j] for j in chosen])
            else:
                handle.deadline(names[i])
                handle.remaining(names[i])
                _ = names[i] in handle
            done_ops += 1
            if done_ops % every == 0:
                gc.collect()
                samples.append(
                    {
                        "operations": done_ops,
                        "seconds": round(time.perf_counter() - started, 2),
                        "rss_mb": round(rss_bytes() / 2**20, 1),
                        "traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2) if trace else None,
                        "live": handle.pending_count(),
                        "received": counts["received"],
                    }
                )
        await asyncio.sleep(MS)

    # The end: everything applied, the clock past every deadline, every event received.
    await handle.flush()
    await asyncio.sleep(10.0)
    while manager.stats().events_ready or handle.pending_count():
        await asyncio.sleep(0.1)
    await asyncio.sleep(0)
    stats = manager.stats()
    if trace:
        tracemalloc.stop()

    for i in range(timers):
        if latest_gen[i] >= 0 and received_gen[i] != latest_gen[i]:
            problems.append(f"{names[i]}: last set (gen {latest_gen[i]}) never received (got {received_gen[i]})")
        elif latest_gen[i] < 0 and received_gen[i] > cancelled_after[i] and cancelled_after[i] >= 0:
            problems.append(f"{names[i]}: received gen {received_gen[i]} after a cancel")
        if len(problems) > 20:
            break
    if stats.fired - stats.retracted != counts["received"]:
        problems.append(f"fired {stats.fired} - retracted {stats.retracted} != received {counts['received']}")

    await handle.shutdown()
    await run_task
    if await asyncio.wait_for(consumer, 10.0) is not None:  # type: ignore[func-returns-value]
        problems.append("the consumer did not end")
    del manager, run_task, consumer
    gc.collect()
    refcounts_after = [sys.getrefcount(names[i]) for i in range(0, timers, max(1, timers // 1000))]
    if refcounts_after != refcounts_before:
        leaked = sum(a - b for a, b in zip(refcounts_after, refcounts_before, strict=False))
        problems.append(f"name reference counts changed by {leaked} over {len(refcounts_before)} sampled names")
    return {
        "timers": timers,
        "operations": operations,
        "received": counts["received"],
        "fired": stats.fired,
        "retracted": stats.retracted,
        "lateness_max_s": counts["late_max"],
        "samples": samples,
        "problems": problems,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def run_soak(
    timers: int, operations: int, *, checkpoints: int = 10, seed: int = 7, trace: bool = True
) -> dict[str, Any]:
    """Run the soak on a fresh virtual-time loop; return its figures and every problem found."""
    # No no-op cycles before each jump of the clock: nothing here relies on them, and a soak jumps
    # the clock hundreds of thousands of times.
    loop = looptime.new_event_loop(noop_cycles=0)
    try:
        return loop.run_until_complete(_soak(timers, operations, checkpoints, seed, trace))
    finally:
        loop.close()


def flat(samples: list[dict[str, Any]], key: str, skip: int, slack: float) -> tuple[bool, float]:
    """Whether ``key`` grows by less than ``slack`` (MB) from the sample ``skip`` to the last one."""
    values = [s[key] for s in samples[skip:] if s[key] is not None]
    if len(values) < 2:
        return True, 0.0
    growth = max(values[len(values) // 2 :]) - min(values[: len(values) // 2 + 1])
    return growth < slack, growth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument("--operations", type=int, default=10_000_000)
    parser.add_argument("--table", choices=["c", "py"], default="c")
    parser.add_argument("--no-trace", action="store_true", help="skip tracemalloc (faster)")
    args = parser.parse_args()
    use_core(args.table)  # the table and its engine
    report = run_soak(args.timers, args.operations, trace=not args.no_trace)
    report["table"] = args.table
    print(json.dumps(report, indent=1))
    sys.exit(1 if report["problems"] else 0)


if __name__ == "__main__":
    main()
