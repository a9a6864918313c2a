"""Paired A/B of two builds of the compiled timer table in one process: this checkout's against another's.

Both tables run the same operations (set new, reset, cancel, expire all) on the same names and deadlines,
in alternating rounds (A, B, B, A, ...), at each size; the report gives the median time per operation of
each and the median of the per-round ratios B/A. A is the other build (e.g. main's), B this checkout's.
``--spans`` chooses what this checkout's table is given as each timer's span (what a touch would add):
``none`` (the table-level call, as ``table_ratios.py`` makes it), ``one`` (every timer the same span, as
an idle timeout gives), or ``many`` (each timer its own: the per-slot span array exists).

Build the other checkout's extension first, then point at its folder::

    git -C /path/to/main archive HEAD | tar -x -C /tmp/main-build
    (cd /tmp/main-build && python setup.py -q build_ext --inplace)
    python benches/table_ab.py --baseline /tmp/main-build --sizes 100000 1000000 --rounds 9 --spans one

Run it alone on the machine (``flock /tmp/bench.lock``): the figures are only as quiet as the CPU.
"""

from __future__ import annotations

import argparse
import gc
import glob
import importlib.util
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from timer_manager import _core_c

BATCH = 1024
SPAN = 1000.0


def load_baseline(folder: str) -> Any:
    """The compiled core built in ``folder``, loaded beside this checkout's under its own file."""
    (path,) = glob.glob(os.path.join(folder, "timer_manager", "_core_c*.so"))
    spec = importlib.util.spec_from_file_location("timer_manager._core_c", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.pop("timer_manager._core_c")
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules["timer_manager._core_c"] = saved
    return module


def _timed(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / n


def one_round(module: Any, n: int, data: dict[str, Any], with_spans: bool) -> dict[str, float]:
    """ns per operation for set, reset, cancel and expire, on a fresh table. With ``data["spans"]``
    both tables walk the same (name, deadline, span) triples; only ``with_spans`` passes the span on."""
    table = module.TimerTable()
    first, second, cancel_order = data["first"], data["second"], data["cancel_order"]

    if data["spans"] is None:
        set_ = table.set

        def set_all(pairs: list[Any]) -> None:
            for name, deadline in pairs:
                set_(name, deadline)

    elif with_spans:
        set_span = table.set_with_span

        def set_all(pairs: list[Any]) -> None:
            for name, deadline, span in pairs:
                set_span(name, deadline, span)

    else:
        set_ = table.set

        def set_all(pairs: list[Any]) -> None:
            for name, deadline, _ in pairs:
                set_(name, deadline)

    def cancel_all() -> None:
        cancel = table.cancel
        for name in cancel_order:
            cancel(name)

    def expire_all() -> None:
        pop_due = table.pop_due
        inf = float("inf")
        while pop_due(inf, BATCH):
            pass

    return _measure(table, n, lambda: set_all(first), lambda: set_all(second), cancel_all, expire_all)


def _measure(
    table: Any,
    n: int,
    set_first: Callable[[], None],
    set_second: Callable[[], None],
    cancel_all: Callable[[], None],
    expire_all: Callable[[], None],
) -> dict[str, float]:
    """ns per timer of a round's four steps: set every timer, reset every one, cancel every one; then set
    and reset them all again, untimed, and expire them all."""
    gc.collect()
    out = {"set": _timed(set_first, n)}
    out["reset"] = _timed(set_second, n)
    out["cancel"] = _timed(cancel_all, n)
    set_first()
    set_second()
    out["expire"] = _timed(expire_all, n)
    assert len(table) == 0
    return out


def engine_round(module: Any, n: int, data: dict[str, Any], with_spans: bool) -> dict[str, float]:
    """ns per timer through the engine, as a manager drives the table: push every set (then every reset,
    cancel) into the command ring, apply them; expire them all with fire and take_many. With
    ``with_spans`` the engine's ``push_set`` takes the span (this checkout's), else it has none (main's)."""
    table = module.TimerTable()
    engine = module.Engine(table, n + 1, n + 1)
    spans = data["spans"] or [2.0] * n
    first = [(name, deadline, span) for (name, deadline, *_), span in zip(data["first"], spans, strict=True)]
    second = [(name, deadline, span) for (name, deadline, *_), span in zip(data["second"], spans, strict=True)]
    push_set, push, apply = engine.push_set, engine.push, engine.apply

    if with_spans:

        def set_all(items: list[tuple[str, float, float]]) -> None:
            for name, deadline, span in items:
                push_set(name, deadline, span, None)
            apply()

    else:

        def set_all(items: list[tuple[str, float, float]]) -> None:
            for name, deadline, _ in items:
                push_set(name, deadline, None)
            apply()

    def cancel_all() -> None:
        for name in data["cancel_order"]:
            push(2, name, None, None)  # CANCEL
        apply()

    def expire_all() -> None:
        inf = float("inf")
        while engine.fire(inf, inf):
            engine.take_many(n)

    return _measure(table, n, lambda: set_all(first), lambda: set_all(second), cancel_all, expire_all)


def memory(baseline: Any, n: int, seed: int) -> None:
    """Traced bytes per timer at ``n`` (names excluded: they exist before), as ``table_ratios.py`` measures
    it, for A, and for B set without spans, with one span, with many, and with every timer touched."""
    import tracemalloc

    rng = random.Random(seed)
    names = [f"timer-{i:08d}" for i in range(n)]
    deadlines = [rng.random() * SPAN for _ in names]
    spans = [rng.random() * 10 for _ in names]

    def traced(build: Callable[[], Any]) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            kept = build()
            used = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        del kept
        return used / n

    def a_plain() -> Any:
        table = baseline.TimerTable()
        for name, deadline in zip(names, deadlines, strict=True):
            table.set(name, deadline)
        return table

    def b_filled(span_of: Callable[[int], float] | None, touch: bool) -> Any:
        table = _core_c.TimerTable()
        for i, (name, deadline) in enumerate(zip(names, deadlines, strict=True)):
            if span_of is None:
                table.set(name, deadline)
            else:
                table.set_with_span(name, deadline, span_of(i))
        if touch:
            for name in names:
                table.touch(name, 0.0)
        return table

    print(f"\nmemory at n = {n:,} (traced bytes per timer, names excluded)")
    print(f"  A, set:                     {traced(a_plain):6.1f}")
    print(f"  B, set (no span):           {traced(lambda: b_filled(None, False)):6.1f}")
    print(f"  B, set_with_span, one span: {traced(lambda: b_filled(lambda i: 2.0, False)):6.1f}")
    print(f"  B, set_with_span, many:     {traced(lambda: b_filled(spans.__getitem__, False)):6.1f}")
    print(f"  B, one span, all touched:   {traced(lambda: b_filled(lambda i: 2.0, True)):6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="a checkout whose extension is built in place (A)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=9, help="pairs of rounds per size")
    parser.add_argument("--spans", choices=("none", "one", "many"), default="none")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--engine", action="store_true", help="drive each table through its engine's command ring")
    parser.add_argument("--memory", type=int, default=0, help="measure memory per timer at this size instead")
    args = parser.parse_args()
    baseline = load_baseline(args.baseline)
    if args.memory:
        memory(baseline, args.memory, args.seed)
        return
    how = "through the engine" if args.engine else "table calls"
    print(f"A: {baseline.__file__}\nB: {_core_c.__file__}")
    print(f"spans given to B: {args.spans}; {how}; Python {sys.version.split()[0]}")
    for n in args.sizes:
        rng = random.Random(args.seed)
        names = [f"timer-{i:08d}" for i in range(n)]
        data: dict[str, Any] = {"names": names}
        for key in ("first", "second"):
            order = names[:]
            rng.shuffle(order)
            data[key] = [(name, rng.random() * SPAN) for name in order]
        order = names[:]
        rng.shuffle(order)
        data["cancel_order"] = order
        spans = (
            None if args.spans == "none" else [2.0] * n if args.spans == "one" else [rng.random() * 10 for _ in names]
        )
        data["spans"] = spans
        if spans is not None:
            by_name = dict(zip(names, spans, strict=True))
            for key in ("first", "second"):
                data[key] = [(name, deadline, by_name[name]) for name, deadline in data[key]]
        samples: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
        ratios: dict[str, list[float]] = {}
        for r in range(args.rounds):
            order_ab = ("A", "B") if r % 2 == 0 else ("B", "A")
            got = {}
            for which in order_ab:
                if which == "A":
                    got[which] = (engine_round if args.engine else one_round)(baseline, n, data, False)
                else:
                    got[which] = (engine_round if args.engine else one_round)(_core_c, n, data, True)
            for op in got["A"]:
                samples["A"].setdefault(op, []).append(got["A"][op])
                samples["B"].setdefault(op, []).append(got["B"][op])
                ratios.setdefault(op, []).append(got["B"][op] / got["A"][op])
        print(f"\nn = {n:,}, {args.rounds} rounds (ns per operation, medians; B/A: median of same-round ratios)")
        print(f"{'operation':<10}{'A':>10}{'B':>10}{'B/A':>8}")
        for op, op_ratios in ratios.items():
            a = statistics.median(samples["A"][op])
            b = statistics.median(samples["B"][op])
            print(f"{op:<10}{a:>10.1f}{b:>10.1f}{statistics.median(op_ratios):>8.3f}")


if __name__ == "__main__":
    main()
