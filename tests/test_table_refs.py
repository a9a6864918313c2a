"""Reference and memory safety of the tables under long mixed use.

The Cython table holds its names in C arrays, so ``sys.getrefcount`` on the names is the direct
check that every reference it takes is given back. For the pure table the same counts are
checked too, though there the dict does the bookkeeping.
"""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
from typing import Any

from support import SOAK

INF = float("inf")
# 10^5 mixed operations in the normal run; TIMER_MANAGER_SOAK=1 raises it to 10^6.
OPERATIONS = 1_000_000 if SOAK else 100_000


def _mixed_ops(table: Any, names: list[str], operations: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(operations):
        op = rng.random()
        name = names[rng.randrange(len(names))]
        if op < 0.45:
            table.set(name, float(rng.randrange(1000)))
        elif op < 0.65:
            table.cancel(name)
        elif op < 0.75:
            table.deadline(name)
            _ = name in table
        elif op < 0.9995:
            table.pop_due(float(rng.randrange(1000)), rng.randrange(0, 8))
        else:
            table.clear()


def test_name_refcounts_are_stable(table_class: Any) -> None:
    names = [f"name-{i}" for i in range(2000)]
    before = [sys.getrefcount(name) for name in names]
    table = table_class()
    _mixed_ops(table, names, OPERATIONS, seed=1)
    table.pop_due(INF, sys.maxsize)
    assert len(table) == 0
    table.clear()
    gc.collect()
    assert [sys.getrefcount(name) for name in names] == before


def test_refcounts_with_equal_but_distinct_names(table_class: Any) -> None:
    """Re-sets with an equal but different object swap the held reference; none may leak."""
    first = [f"n{i}".upper() for i in range(100)]
    second = [f"N{i}".upper() for i in range(100)]
    assert all(a == b and a is not b for a, b in zip(first, second, strict=False))
    before = [sys.getrefcount(n) for n in first + second]
    table = table_class()
    _equal_but_distinct(table, first, second)
    table.clear()
    assert [sys.getrefcount(n) for n in first + second] == before


def _equal_but_distinct(table: Any, first: list[str], second: list[str]) -> None:
    for _ in range(100):
        for a, b in zip(first, second, strict=False):
            table.set(a, 1.0)
            table.set(b, 2.0)
        table.pop_due(1.5, 10)
        for a in first[::3]:
            table.cancel(a)
    popped = table.pop_due(INF, sys.maxsize)
    assert popped == [(b, 2.0) for i, b in enumerate(second) if i % 3]
    assert all(name is b for (name, _), b in zip(popped, [b for i, b in enumerate(second) if i % 3], strict=False))


def test_tracemalloc_is_stable(table_class: Any) -> None:
    names = [f"name-{i}" for i in range(5000)]
    table = table_class()
    _mixed_ops(table, names, 20_000, seed=2)  # warm up to a steady size
    gc.collect()
    tracemalloc.start()
    try:
        for round_ in range(5):
            _mixed_ops(table, names, OPERATIONS // 5, seed=3 + round_)
        table.clear()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # An empty table holds a few hundred bytes; a leak per operation would show as megabytes.
    assert grown < 64 * 1024, grown


def test_clear_during_use(table_class: Any) -> None:
    names = [f"name-{i}" for i in range(500)]
    before = [sys.getrefcount(n) for n in names]
    table = table_class()
    _clear_now_and_then(table, names)
    table.clear()
    assert [sys.getrefcount(n) for n in names] == before


def _clear_now_and_then(table: Any, names: list[str]) -> None:
    rng = random.Random(4)
    for round_ in range(200):
        for name in rng.sample(names, 100):
            table.set(name, rng.random())
        due = table.pop_due(0.5, 10)
        assert all(d <= 0.5 for _, d in due)
        if round_ % 7 == 0:
            live = len(table)
            assert table.clear() == live
            assert len(table) == 0
            assert table.next_deadline() is None


def test_clear_from_a_name_destructor(table_class: Any) -> None:
    """A name whose last reference goes away inside the table may run code that uses the table."""

    class Name(str):
        table: Any = None

        def __del__(self) -> None:
            if Name.table is not None:
                Name.table.set("from-del", 1.0)
                Name.table.clear()

    table = table_class()
    Name.table = table
    try:
        for i in range(50):
            table.set(Name(f"a{i}"), float(i))
        for i in range(0, 50, 3):
            table.set(Name(f"a{i}"), 0.0)  # the replaced name object dies here
        table.cancel("a1")
        table.pop_due(INF, 5)
        table.clear()
    finally:
        Name.table = None
    table.set("ok", 1.0)
    assert table.pop_due(INF, 10) == [("ok", 1.0)]
