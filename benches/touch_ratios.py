"""Same-run ratio of the timer table's ``touch`` to a bare dict store, and the re-insert it defers.

A touch writes a timer's latest deadline beside its heap entry; the cost it leaves for later is one
re-insert per touched timer per idle period (when the entry's old deadline comes round). This
measures both, in one process, round after round: ``n`` timers set with one span and deadlines spread
over that span, then

- ``dict``: ``d[name] = now`` into an existing key, every name in a shuffled order;
- ``touch``: ``table.touch(name, now)``, the same names in the same order;
- ``re-insert``: the idle period ends (``pop_due`` at the latest old deadline): every touched timer is
  put back at its latest deadline and none is due; time per timer put back.

Each cell is the median over the rounds of (time for all ``n``) / ``n``; each ratio is taken within
every round and its median is the verdict. The garbage collector stays on.

    python benches/touch_ratios.py                # 10^5 and 10^6 timers, 7 rounds, both tables
    python benches/touch_ratios.py --quick        # 10^5, 3 rounds
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timer_manager._table_py import TimerTable as PyTable

CTable: Any
try:
    from timer_manager._core_c import TimerTable as CTable
except ImportError:  # pragma: no cover - the report says so
    CTable = None

SPAN = 2.0  # the idle timeout every timer is set with
BOUND = 1.5  # c touch / dict store


def one_round(n: int, names: list[str], order: list[str], table_class: Any, rng: random.Random) -> dict[str, float]:
    """One round: µs per operation for the dict store, the touch, and the deferred re-insert."""
    d = dict.fromkeys(names, 0.0)
    table = table_class()
    for name in names:
        table.set_with_span(name, rng.random() * SPAN, SPAN)
    now = SPAN  # later than every deadline: each touch moves its timer to now + SPAN

    def stores() -> None:
        for name in order:
            d[name] = now

    def touches() -> None:
        touch = table.touch
        for name in order:
            touch(name, now)

    out = {"dict": _timed(stores, n), "touch": _timed(touches, n)}
    before = table.reinserted
    start = time.perf_counter_ns()
    assert table.pop_due(SPAN, n) == []  # every old deadline has come round; nothing is due
    out["re-insert"] = (time.perf_counter_ns() - start) / n / 1000.0
    assert table.reinserted - before == n
    assert len(table) == n
    return out


def _timed(fn: Any, n: int) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / n / 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    rounds = args.rounds or (3 if args.quick else 7)
    tables = [("c", CTable), ("py", PyTable)] if CTable is not None else [("py", PyTable)]
    print(
        f"touch vs a dict store: CPython {platform.python_version()}, {len(sizes)} size(s), {rounds} rounds, "
        "GC on; µs per operation, median of rounds"
    )
    status = 0
    for n in sizes:
        rng = random.Random(n)
        names = [f"conn-{i:08d}" for i in range(n)]
        order = names[:]
        rng.shuffle(order)
        print(f"\n{n:,} timers\n")
        print("| table | dict store | touch | touch / dict (median; rounds) | re-insert per timer per idle period |")
        print("|---|---:|---:|---|---:|")
        for label, table_class in tables:
            results = [one_round(n, names, order, table_class, rng) for _ in range(rounds)]
            ratios = [r["touch"] / r["dict"] for r in results]
            cells = {key: statistics.median(r[key] for r in results) for key in ("dict", "touch", "re-insert")}
            median = statistics.median(ratios)
            print(
                f"| {label} | {cells['dict']:.3f} | {cells['touch']:.3f} | {median:.2f} "
                f"({min(ratios):.2f} to {max(ratios):.2f}) | {cells['re-insert']:.3f} |"
            )
            if label == "c":
                verdict = "PASS" if median <= BOUND else "FAIL"
                status |= verdict == "FAIL"
                print(f"\n  {verdict}  c touch / dict store @ {n:,}: {median:.2f}, need <= {BOUND}\n")
    print("\nRerun: python benches/touch_ratios.py" + (" --quick" if args.quick else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
