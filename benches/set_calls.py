"""What a loop-side ``try_set_timer`` costs, whole (the call and its share of the manager's passes), for this
checkout and, with ``--baseline FOLDER``, another one (its extension built in place), side by side.

Two patterns, on a running manager with ``--timers`` live timers (heartbeat 10 ms), each timed with
``time.process_time`` over the whole pattern:

- ``spread``: one reset per loop iteration (``await asyncio.sleep(0)`` between), as a server's messages come,
  with the deadline after the armed wake-up's; the loop iteration alone is timed the same way and subtracted.
  Beside it, the same pattern with ``call_later`` cancelled and created again, the hand-rolled way.
- ``burst``: every timer reset in one loop step, then ``flush()``: the burst and the pass it leaves.

Each build runs in processes of its own, alternated round after round; the report gives the medians in ns per
set and the median of the same-round ratios (this checkout / the baseline; below 1: this one costs less).

    python benches/set_calls.py --baseline ../main     # 10^4 timers, 7 rounds
    python benches/set_calls.py --quick                # this checkout only, 1 round
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# One round in a child process: sys.argv[1] is the checkout to import, [2] the number of timers.
CHILD = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
import timer_manager
from timer_manager import TimerManager

N = int(sys.argv[2])
SPREAD = N // 4


async def main():
    loop = asyncio.get_running_loop()
    cpu = time.process_time
    manager, handle = TimerManager.new("set-calls", 0.01, 1 << 20, 1024)
    task = asyncio.create_task(manager.run())
    names = [f"t{i}" for i in range(N)]
    for name in names:
        handle.try_set_timer(name, 50.0)
    await handle.flush()
    start = cpu()
    for _ in range(SPREAD):
        await asyncio.sleep(0)
    floor = (cpu() - start) / SPREAD
    set_timer = handle.try_set_timer
    start = cpu()
    for name in names[:SPREAD]:
        set_timer(name, 100.0)
        await asyncio.sleep(0)
    spread = (cpu() - start) / SPREAD - floor
    start = cpu()
    for name in names:
        set_timer(name, 200.0)
    await handle.flush()
    burst = (cpu() - start) / N
    now = loop.time()
    # Every set took effect: the spread ones were reset again by the burst, all due about 200 s from now.
    assert handle.pending_count() == N and all(now < handle.deadline(name) <= now + 200.0 for name in names)
    handles = {name: loop.call_later(50.0, print) for name in names[:SPREAD]}
    start = cpu()
    for name in names[:SPREAD]:
        handles[name].cancel()
        handles[name] = loop.call_later(100.0, print)
        await asyncio.sleep(0)
    call_later = (cpu() - start) / SPREAD - floor
    for handle_ in handles.values():
        handle_.cancel()
    await handle.shutdown()
    await task
    print(json.dumps({"core": timer_manager.CORE, "spread": spread, "burst": burst, "call_later": call_later}))


asyncio.run(main())
"""


def one_round(checkout: Path, timers: int) -> dict[str, float]:
    """Run one round in a child process importing ``checkout``'s library; ns per set of each pattern."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(checkout), str(timers)], capture_output=True, text=True, check=True
    )
    out = json.loads(result.stdout)
    if out["core"] != "cython":
        raise SystemExit(f"{checkout}: the compiled core is not in use ({out['core']}); build it in place first")
    return {key: value * 1e9 for key, value in out.items() if key != "core"}


def main(argv: list[str] | None = None) -> None:
    """Run the rounds and print the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another checkout, its extension built in place")
    parser.add_argument("--timers", type=int, default=10_000, help="live timers (default 10^4)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    checkouts = {"this": HERE.parent}
    if args.baseline is not None:
        checkouts["base"] = args.baseline.resolve()
    results: dict[str, list[dict[str, float]]] = {label: [] for label in checkouts}
    for index in range(rounds):
        order = list(checkouts.items())
        if index % 2:
            order.reverse()
        for label, checkout in order:
            results[label].append(one_round(checkout, args.timers))
    print(f"{args.timers:,} live timers, {rounds} round(s); ns per set, medians (CPython {sys.version.split()[0]})")
    for label, rows in results.items():
        medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        ratio = statistics.median(row["spread"] / row["call_later"] for row in rows)
        print(
            f"  {label}: spread {medians['spread']:.0f} (call_later cancelled and created again: "
            f"{medians['call_later']:.0f}; library / call_later {ratio:.2f}), burst {medians['burst']:.0f}"
        )
    if "base" in results:
        for key in ("spread", "burst"):
            ratios = [this[key] / base[key] for this, base in zip(results["this"], results["base"], strict=True)]
            spread = f"rounds {min(ratios):.2f} to {max(ratios):.2f}"
            print(f"  {key}: this / base {statistics.median(ratios):.3f} ({spread})")


if __name__ == "__main__":
    main()
