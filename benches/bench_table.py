"""Small pytest-benchmark benchmarks of the table operations, for both tables (10^4 timers each).

They run in the normal test run, so each is tiny; the real comparisons live in
``benches/table_ratios.py``. The Cython table must be importable unless extensions are forbidden.
"""

from __future__ import annotations

import importlib
import random
import sys
from typing import Any

import pytest

from timer_manager import _env

N = 10_000
INF = float("inf")


def _table_classes() -> list[Any]:
    params = [pytest.param("timer_manager._table_py", id="py")]
    if not _env.no_extensions():
        params.insert(0, pytest.param("timer_manager._core_c", id="c"))
    return params


@pytest.fixture(params=_table_classes())
def table_class(request: pytest.FixtureRequest) -> Any:
    # No skip and no fallback: a missing extension is a failure here.
    return importlib.import_module(request.param).TimerTable


@pytest.fixture(scope="module")
def workload() -> tuple[list[str], list[float], list[float]]:
    rng = random.Random(7)
    names = [f"timer-{i}" for i in range(N)]
    rng.shuffle(names)
    return names, [rng.random() * 1000 for _ in names], [rng.random() * 1000 for _ in names]


def test_set_new(benchmark: Any, table_class: Any, workload: Any) -> None:
    names, first, _ = workload

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        return (table_class(),), {}

    def run(table: Any) -> None:
        set_ = table.set
        for name, deadline in zip(names, first, strict=False):
            set_(name, deadline)

    benchmark.pedantic(run, setup=setup, rounds=10)


def test_reset(benchmark: Any, table_class: Any, workload: Any) -> None:
    names, first, second = workload
    table = table_class()
    for name, deadline in zip(names, first, strict=False):
        table.set(name, deadline)

    def run() -> None:
        set_ = table.set
        for name, deadline in zip(names, second, strict=False):
            set_(name, deadline)

    benchmark.pedantic(run, rounds=10)
    assert len(table) == N


def test_cancel(benchmark: Any, table_class: Any, workload: Any) -> None:
    names, first, _ = workload

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        table = table_class()
        for name, deadline in zip(names, first, strict=False):
            table.set(name, deadline)
        return (table,), {}

    def run(table: Any) -> None:
        cancel = table.cancel
        for name in names:
            cancel(name)

    benchmark.pedantic(run, setup=setup, rounds=10)


def test_pop_due(benchmark: Any, table_class: Any, workload: Any) -> None:
    names, first, second = workload

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        table = table_class()
        for name, deadline in zip(names, first, strict=False):
            table.set(name, deadline)
        for name, deadline in zip(names, second, strict=False):
            table.set(name, deadline)
        return (table,), {}

    def run(table: Any) -> None:
        pop_due = table.pop_due
        while pop_due(INF, 1024):
            pass
        assert len(table) == 0

    benchmark.pedantic(run, setup=setup, rounds=10)


def test_next_deadline(benchmark: Any, table_class: Any, workload: Any) -> None:
    names, first, _ = workload
    table = table_class()
    for name, deadline in zip(names, first, strict=False):
        table.set(name, deadline)
    assert benchmark(table.next_deadline) == min(first)
    assert sys.getrefcount(table) >= 2
