"""Small pytest-benchmark benchmarks of the handle's calls and of delivery, for both tables.

Each round does N (10^3) operations on a manager running on its own asyncio loop; the manager is
built with the table under test by patching ``timer_manager._backend.TimerTable`` (``tests/conftest.py``
does not apply here). They run in the normal test run, so they are tiny and assert no speed; the
real comparison is ``benches/compare.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _contenders import core_patches

from timer_manager import TimerManager, _backend, _env

N = 1_000
ROUNDS = 20
FAR = 3600.0


def _kinds() -> list[Any]:
    params = [pytest.param("py", id="py")]
    if not _env.no_extensions():
        params.insert(0, pytest.param("c", id="c"))
    return params


@pytest.fixture(params=_kinds())
def table_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Managers created in the test use this table (``c``: Cython, ``py``: pure Python)."""
    for name, value in core_patches(request.param).items():  # a missing extension fails here: no fallback
        monkeypatch.setattr(_backend, name, value)
    return str(request.param)


@pytest.fixture
def names() -> list[str]:
    return [f"timer-{i:06d}" for i in range(N)]


class Running:
    """A manager running on a private loop; ``run(fn)`` calls ``fn()`` (sync or async) on it."""

    def __init__(self, heartbeat: float) -> None:
        self.loop = asyncio.new_event_loop()
        self.manager, self.handle = TimerManager.new("bench", heartbeat, 4 * N, 4 * N)
        self.task = self.loop.create_task(self.manager.run())
        self.run(asyncio.sleep, 0)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def main() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return self.loop.run_until_complete(main())

    def close(self) -> None:
        try:
            self.run(self.handle.shutdown)
            self.loop.run_until_complete(self.task)
        finally:
            self.loop.close()


@pytest.fixture
def running(table_kind: str) -> Iterator[Running]:
    manager = Running(heartbeat=0.0)
    assert type(manager.manager._runner.table) is core_patches(table_kind)["TimerTable"]
    yield manager
    manager.close()


async def _set_all(handle: Any, names: list[str]) -> None:
    """``try_set_timer`` for every name, far ahead, then ``flush()`` (the manager applies them)."""
    try_set = handle.try_set_timer
    for name in names:
        try_set(name, FAR)
    await handle.flush()


def test_try_set_timer_new(benchmark: Any, running: Running, names: list[str]) -> None:
    """``try_set_timer`` of N new names, then ``flush()`` (the manager applies them), then cancel
    them all outside the timing."""
    handle = running.handle

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        running.run(handle.cancel_all_timers)
        running.run(handle.flush)
        return (), {}

    benchmark.pedantic(lambda: running.run(_set_all, handle, names), setup=setup, rounds=ROUNDS)
    assert handle.pending_count() == N


def test_try_set_timer_reset(benchmark: Any, running: Running, names: list[str]) -> None:
    """``try_set_timer`` of N pending names (a reset each), then ``flush()``."""
    handle = running.handle

    running.run(_set_all, handle, names)
    benchmark.pedantic(lambda: running.run(_set_all, handle, names), rounds=ROUNDS)
    assert handle.pending_count() == N


def test_try_cancel_timer(benchmark: Any, running: Running, names: list[str]) -> None:
    """``try_cancel_timer`` of N pending names, then ``flush()``."""
    handle = running.handle

    async def cancel_all() -> None:
        try_cancel = handle.try_cancel_timer
        for name in names:
            try_cancel(name)
        await handle.flush()

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        running.run(_set_all, handle, names)
        return (), {}

    benchmark.pedantic(lambda: running.run(cancel_all), setup=setup, rounds=ROUNDS)
    assert handle.pending_count() == 0


@pytest.mark.parametrize("style", ["recv_event", "recv_events"])
def test_set_then_deliver(benchmark: Any, running: Running, names: list[str], style: str) -> None:
    """N timers set due now (heartbeat 0) and received, one at a time or in batches of 1024:
    the whole set -> event path, per round of N."""
    handle = running.handle

    async def cycle() -> int:
        try_set = handle.try_set_timer
        for name in names:
            try_set(name, 0.0)
        received = 0
        if style == "recv_event":
            recv = handle.recv_event
            for _ in range(N):
                await recv()
                received += 1
        else:
            while received < N:
                received += len(await handle.recv_events(1024))
        return received

    received = benchmark.pedantic(lambda: running.run(cycle), rounds=ROUNDS)
    assert received == N
    assert handle.pending_count() == 0
