"""Same-run ratios of the timer tables against a bare dict, a dict of asyncio handles and a lazy heapq.

Every figure is measured in this one process, side by side, round after round (the machine is
shared and noisy; only ratios from one run mean anything). Names are built before any timing,
visited in a shuffled order, with random deadlines; the garbage collector stays on. Each cell of
the timing table is the median over the rounds of (time for all N operations) / N, in
microseconds. Each target ratio is taken within every round, between runs seconds apart, and
its median over the rounds is the verdict; the lowest and highest round are shown beside it,
because the load of other programs on a shared machine drifts over a run.

    python benches/table_ratios.py                      # 10^5 and 10^6 timers, 7 rounds
    python benches/table_ratios.py --sizes 100000 --rounds 3
    python benches/table_ratios.py --quick              # under a minute

The targets checked are those of the issue that asked for the Cython table; see TARGETS below.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from heapq import heappop, heappush
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timer_manager._table_py import TimerTable as PyTable

CTable: Any
try:
    from timer_manager._core_c import TimerTable as CTable
except ImportError:  # pragma: no cover - the report says so
    CTable = None

BATCH = 1024
SPAN = 1000.0  # deadlines are uniform in [0, SPAN) seconds of loop time

# (label, numerator, denominator, bound, kind): numerator/denominator must be <= bound ("max")
# or >= bound ("min").
TARGETS = [
    ("set (new) vs dict insert", "c.set", "dict.set", 1.5, "max"),
    ("reset vs dict overwrite", "c.reset", "dict.reset", 1.5, "max"),
    ("cancel vs dict pop", "c.cancel", "dict.cancel", 1.5, "max"),
    ("handles set / c set", "handles.set", "c.set", 5.0, "min"),
    ("handles reset / c reset", "handles.reset", "c.reset", 5.0, "min"),
    ("pop_due vs dict pop in deadline order", "c.expire", "dict.expire", 2.0, "max"),
    ("lazy heapq expiry / c pop_due", "heapq.expire", "c.expire", 5.0, "min"),
]


def _noop() -> None:
    pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Workload:
    """Names, deadlines and visiting orders for one size, all built before any timing."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.n = n
        self.names = [f"timer-{i:08d}" for i in range(n)]
        self.set_pairs = self._pairs(rng)
        self.reset_pairs = self._pairs(rng)
        order = self.names[:]
        rng.shuffle(order)
        self.cancel_order = order
        final = dict(self.reset_pairs)
        self.deadline_order = sorted(self.names, key=final.__getitem__)

    def _pairs(self, rng: random.Random) -> list[tuple[str, float]]:
        order = self.names[:]
        rng.shuffle(order)
        return [(name, rng.random() * SPAN) for name in order]


def _timed(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / n / 1000.0


# -- one round of each contender; each returns {operation: µs per op} -------------------------


def round_dict(w: Workload) -> dict[str, float]:
    d: dict[str, float] = {}

    def set_all(pairs: list[tuple[str, float]]) -> None:
        for name, deadline in pairs:
            d[name] = deadline

    def cancel_all() -> None:
        pop = d.pop
        for name in w.cancel_order:
            pop(name)

    def expire_all() -> None:
        pop = d.pop
        for name in w.deadline_order:
            pop(name)

    out = {"set": _timed(lambda: set_all(w.set_pairs), w.n)}
    out["reset"] = _timed(lambda: set_all(w.reset_pairs), w.n)
    out["cancel"] = _timed(cancel_all, w.n)
    set_all(w.set_pairs)
    out["expire"] = _timed(expire_all, w.n)
    return out


def round_table(w: Workload, table_class: Any) -> dict[str, float]:
    table = table_class()
    set_ = table.set

    def set_all(pairs: list[tuple[str, float]]) -> None:
        for name, deadline in pairs:
            set_(name, deadline)

    def cancel_all() -> None:
        cancel = table.cancel
        for name in w.cancel_order:
            cancel(name)

    def expire_all() -> None:
        pop_due = table.pop_due
        inf = float("inf")
        while pop_due(inf, BATCH):
            pass

    out = {"set": _timed(lambda: set_all(w.set_pairs), w.n)}
    out["reset"] = _timed(lambda: set_all(w.reset_pairs), w.n)
    out["cancel"] = _timed(cancel_all, w.n)
    assert len(table) == 0
    # Expiry after every timer was set and then reset once, like the heapq it is compared with.
    set_all(w.set_pairs)
    set_all(w.reset_pairs)
    out["expire"] = _timed(expire_all, w.n)
    assert len(table) == 0
    return out


def round_handles(w: Workload) -> dict[str, float]:
    loop = asyncio.new_event_loop()  # never run: call_later only schedules
    try:
        handles: dict[str, asyncio.TimerHandle] = {}
        call_later = loop.call_later

        def set_all() -> None:
            for name, deadline in w.set_pairs:
                handles[name] = call_later(deadline, _noop)

        def reset_all() -> None:
            for name, deadline in w.reset_pairs:
                handles[name].cancel()
                handles[name] = call_later(deadline, _noop)

        def cancel_all() -> None:
            pop = handles.pop
            for name in w.cancel_order:
                pop(name).cancel()

        out = {"set": _timed(set_all, w.n)}
        out["reset"] = _timed(reset_all, w.n)
        out["cancel"] = _timed(cancel_all, w.n)
        return out
    finally:
        loop.close()


def round_heapq(w: Workload) -> dict[str, float]:
    """A heapq of [deadline, sequence, name] with lazy deletion (name None) and a dict of entries."""
    heap: list[list[Any]] = []
    entries: dict[str, list[Any]] = {}
    counter = iter(range(sys.maxsize))

    def set_all(pairs: list[tuple[str, float]]) -> None:
        get = entries.get
        for name, deadline in pairs:
            old = get(name)
            if old is not None:
                old[2] = None
            entry = [deadline, next(counter), name]
            entries[name] = entry
            heappush(heap, entry)

    def cancel_all() -> None:
        pop = entries.pop
        for name in w.cancel_order:
            pop(name)[2] = None

    def expire_all() -> None:
        inf = float("inf")
        while True:
            due: list[tuple[str, float]] = []
            while heap and len(due) < BATCH:
                top = heap[0]
                name = top[2]
                if name is None:
                    heappop(heap)
                    continue
                if top[0] > inf:
                    break
                heappop(heap)
                del entries[name]
                due.append((name, top[0]))
            if not due:
                break

    out = {"set": _timed(lambda: set_all(w.set_pairs), w.n)}
    out["reset"] = _timed(lambda: set_all(w.reset_pairs), w.n)
    out["cancel"] = _timed(cancel_all, w.n)
    heap.clear()
    set_all(w.set_pairs)
    set_all(w.reset_pairs)  # every timer reset once: half the heap is stale
    out["expire"] = _timed(expire_all, w.n)
    return out


# -- memory ---------------------------------------------------------------------------------------


def memory_child(table_class: Any, n: int, keep: int, seed: int, how: str) -> dict[str, float]:
    """Bytes per live timer at n (names excluded), and the share kept after a drop to ``keep``.

    Runs in a fresh process (see ``memory``), so that RSS is not blurred by memory this
    process freed earlier; ``how`` is "traced" (tracemalloc) or "rss" (/proc/self/statm).
    """
    names = [f"timer-{i:08d}" for i in range(n)]
    rng = random.Random(seed)
    deadlines = [rng.random() * SPAN for _ in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    gc.collect()
    if how == "traced":
        tracemalloc.start()

    def used() -> int:
        return tracemalloc.get_traced_memory()[0] if how == "traced" else _rss_bytes()

    base = used()
    table = table_class()
    for i in order:
        table.set(names[i], deadlines[i])
    peak = used() - base
    for i in order[: (n - keep) // 2]:
        table.cancel(names[i])  # half of the drop by cancel
    while len(table) > keep:  # the rest by firing
        table.pop_due(float("inf"), min(BATCH, len(table) - keep))
    gc.collect()
    kept = used() - base
    return {"per_timer": peak / n, "kept": kept / peak if peak > 0 else 0.0}


def memory(label: str, n: int, keep: int, seed: int) -> dict[str, float]:
    out = {}
    for how in ("traced", "rss"):
        child = subprocess.run(
            [sys.executable, __file__, "--memory-child", label, how, "--memory-size", str(n), "--seed", str(seed)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout)
        out[f"{how}_per_timer"] = result["per_timer"]
        out[f"{how}_kept"] = result["kept"]
    return out


# -- report ---------------------------------------------------------------------------------------


def _verdict(value: float, bound: float, kind: str) -> str:
    ok = value <= bound if kind == "max" else value >= bound
    return "PASS" if ok else "FAIL"


def run_size(n: int, rounds: int, seed: int) -> dict[str, list[float]]:
    """Per-round samples (µs per operation) of every contender's operations at ``n`` timers."""
    w = Workload(n, seed)
    samples: dict[str, list[float]] = {}
    contenders: list[tuple[str, Callable[[], dict[str, float]]]] = [
        ("dict", lambda: round_dict(w)),
        ("handles", lambda: round_handles(w)),
        ("heapq", lambda: round_heapq(w)),
        ("py", lambda: round_table(w, PyTable)),
    ]
    if CTable is not None:
        contenders.insert(1, ("c", lambda: round_table(w, CTable)))
    for r in range(rounds):
        # Rotate the order so no contender always runs right after the same neighbour.
        shift = r % len(contenders)
        for label, fn in contenders[shift:] + contenders[:shift]:
            gc.collect()
            for op, value in fn().items():
                samples.setdefault(f"{label}.{op}", []).append(value)
        print(f"  n={n}: round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return samples


def round_ratios(samples: dict[str, list[float]], num: str, den: str) -> list[float]:
    """``num / den`` within each round."""
    return [a / b for a, b in zip(samples[num], samples[den], strict=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="live timer counts (default 100000 1000000)")
    parser.add_argument("--rounds", type=int, help="rounds per size; medians are taken (default 7, quick 3)")
    parser.add_argument("--memory-size", type=int, default=1_000_000, help="timers for the memory check")
    parser.add_argument("--quick", action="store_true", help="10^5 timers, 3 rounds: under a minute")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--memory-child", nargs=2, metavar=("TABLE", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        label, how = args.memory_child
        cls = CTable if label == "c" else PyTable
        print(json.dumps(memory_child(cls, args.memory_size, 1000, args.seed, how)))
        return 0
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    rounds = args.rounds or (3 if args.quick else 7)

    print("# Timer table ratios (one process, side by side)\n")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"- python: {sys.version.split()[0]} ({platform.python_implementation()}), gc enabled: {gc.isenabled()}")
    print(f"- C table: {'built' if CTable is not None else 'MISSING (only the pure table is measured)'}")
    print(f"- rerun: python benches/table_ratios.py --sizes {' '.join(map(str, sizes))} --rounds {rounds}")
    print(f"- medians of {rounds} rounds, µs per operation (expire: per timer returned, batches of {BATCH})\n")

    for n in sizes:
        samples = run_size(n, rounds, args.seed)
        med = {key: statistics.median(values) for key, values in samples.items()}
        print(f"## {n:,} live timers\n")
        print("| operation | dict | c | py | handles | lazy heapq |")
        print("|---|---|---|---|---|---|")
        for op in ("set", "reset", "cancel", "expire"):
            cells = [
                f"{med[k]:.3f}" if (k := f"{who}.{op}") in med else "-"
                for who in ("dict", "c", "py", "handles", "heapq")
            ]
            print(f"| {op} | " + " | ".join(cells) + " |")
        print()
        if CTable is not None:
            print("| target | ratio (median of rounds) | rounds | bound | verdict |")
            print("|---|---|---|---|---|")
            for label, num, den, bound, kind in TARGETS:
                if num not in samples or den not in samples:
                    continue
                ratios = round_ratios(samples, num, den)
                ratio = statistics.median(ratios)
                spread = f"{min(ratios):.2f} to {max(ratios):.2f}"
                sign = "<=" if kind == "max" else ">="
                print(f"| {label} | {ratio:.2f} | {spread} | {sign} {bound} | {_verdict(ratio, bound, kind)} |")
            print()

    print(f"## memory at {args.memory_size:,} timers, then a drop to 1,000 (half cancelled, half fired)\n")
    print("Each figure from a fresh child process (tracemalloc and RSS in separate ones); names excluded.\n")
    print("| table | traced B/timer | RSS B/timer | traced kept | RSS kept |")
    print("|---|---|---|---|---|")
    results = {}
    for label, cls in (("c", CTable), ("py", PyTable)):
        if cls is None:
            continue
        m = memory(label, args.memory_size, 1000, args.seed)
        results[label] = m
        print(
            f"| {label} | {m['traced_per_timer']:.1f} | {m['rss_per_timer']:.1f} "
            f"| {m['traced_kept']:.1%} | {m['rss_kept']:.1%} |"
        )
    print()
    if "c" in results:
        m = results["c"]
        print("| target | value | bound | verdict |")
        print("|---|---|---|---|")
        for label, value, bound, shown, bound_shown in (
            ("traced bytes per timer", m["traced_per_timer"], 80, f"{m['traced_per_timer']:.1f}", "80"),
            ("RSS bytes per timer", m["rss_per_timer"], 80, f"{m['rss_per_timer']:.1f}", "80"),
            ("traced memory kept after drop", m["traced_kept"], 0.10, f"{m['traced_kept']:.1%}", "10%"),
            ("RSS kept after drop", m["rss_kept"], 0.25, f"{m['rss_kept']:.1%}", "25%"),
        ):
            print(f"| {label} | {shown} | <= {bound_shown} | {_verdict(value, bound, 'max')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
