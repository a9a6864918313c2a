"""The CPU of a wake-up with no timer library at all: the floor under every contender's wake-up.

A chain of wake-ups ``period`` apart, through ``loop.call_at`` or a ``timerfd`` (asyncio's loop, Linux),
each either doing nothing or waking a consumer task through a future (what every contender of
``compare.py`` does per wake-up at least); process CPU per wake-up, median of ``--rounds`` runs each.

    python benches/wakeup_floor.py --period 0.00095 --wakeups 1000   # p99 <= 1 ms needs this spacing
    python benches/wakeup_floor.py --period 0.01 --wakeups 150       # a 10 ms heartbeat tick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from timer_manager import _wakeup  # noqa: E402


async def chain(kind: str, consumer: bool, period: float, wakeups: int) -> None:
    """``wakeups`` wake-ups ``period`` apart, each waking the consumer task if ``consumer``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    calls = _wakeup._timerfd_calls()
    fd = -1
    if kind == "timerfd":
        if calls is None:
            raise RuntimeError("no timerfd here")
        fd = calls.create()
        arm_fd = calls.setter()
    state = {"when": time.monotonic(), "count": 0}
    waiter: list[asyncio.Future[None] | None] = [None]

    def arm() -> None:
        state["when"] += period
        if fd >= 0:
            arm_fd(fd, int(state["when"] * 1e9) + 1)
        else:
            loop.call_at(state["when"], woken)

    def woken() -> None:
        if fd >= 0 and time.monotonic() < state["when"]:
            return
        state["count"] += 1
        future = waiter[0]
        if future is not None and not future.done():
            future.set_result(None)
        if state["count"] >= wakeups:
            if fd >= 0:
                arm_fd(fd, 0)
            done.set_result(None)
            return
        arm()

    if fd >= 0:
        loop.add_reader(fd, woken)
    arm()
    try:
        if consumer:
            while not done.done():
                waiter[0] = future = loop.create_future()
                await future
        else:
            await done
    finally:
        if fd >= 0:
            loop.remove_reader(fd)
            os.close(fd)


def measure(kind: str, consumer: bool, period: float, wakeups: int) -> float:
    """Process CPU per wake-up (µs) of one run on a new asyncio loop."""
    loop = asyncio.new_event_loop()
    try:
        start = time.process_time()
        loop.run_until_complete(chain(kind, consumer, period, wakeups))
        return (time.process_time() - start) / wakeups * 1e6
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--period", type=float, default=0.01, help="seconds between wake-ups")
    parser.add_argument("--wakeups", type=int, default=150, help="wake-ups per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per kind (the median is shown)")
    args = parser.parse_args(argv)
    kinds = ["call_at"] + (["timerfd"] if _wakeup._timerfd_calls() is not None else [])
    results: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for kind in kinds:
            for consumer in (False, True):
                results.setdefault((kind, consumer), []).append(measure(kind, consumer, args.period, args.wakeups))
    print(f"CPU per wake-up (µs), {args.wakeups} wake-ups {args.period * 1e3:g} ms apart, median of {args.rounds}:")
    for (kind, consumer), values in results.items():
        what = f"{kind}, waking a consumer task" if consumer else f"{kind}, callback only"
        print(f"  {what:32s} {statistics.median(values):7.1f}   ({', '.join(f'{v:.0f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
