"""Feature: ``async with TimerManager.open(...) as handle`` runs the manager in a task and stops it on
exit; ``TimerManager.new(...)`` keeps working and takes the same options."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import now, recv, virtual

from timer_manager import (
    CancellationToken,
    ManagerClosed,
    QueueFull,
    TimerExpired,
    TimerHandle,
    TimerLimitExceeded,
    TimerManager,
    _backend,
)

pytestmark = pytest.mark.usefixtures("core")


class Boom(Exception):
    """Raised inside the manager by a failing table."""


def failing_table(monkeypatch: pytest.MonkeyPatch, table_class: Any) -> None:
    """Make managers created from now on use a table whose ``pop_due`` raises ``Boom``.

    (The Cython table's type is immutable, so ``pop_due`` is overridden in a subclass rather than
    patched on the class itself.)
    """

    class FailingTable(table_class):  # type: ignore[misc]
        def pop_due(self, now: float, limit: int, spans: Any = None) -> Any:
            raise Boom("pop_due failed")

    monkeypatch.setattr(_backend, "TimerTable", FailingTable)


@virtual
async def test_open_runs_the_manager_in_a_task_and_stops_it_on_exit() -> None:
    """Inside the block one new task runs the manager (a timer fires); after it that task has finished
    normally and no task is left. Catches: open() not starting run(), exit not shutting the manager
    down (the exit would hang: wait_for fails), exit cancelling instead of shutting down, a leaked task."""

    async def scenario() -> tuple[TimerHandle, asyncio.Task[Any]]:
        before = asyncio.all_tasks()
        async with TimerManager.open("ctx", 0, 8, 8) as handle:
            assert isinstance(handle, TimerHandle)
            inside = asyncio.all_tasks() - before
            assert len(inside) == 1
            (task,) = inside
            await handle.set_timer("a", 1.5)
            t0 = now()
            event = await recv(handle)
            assert event == TimerExpired("a", t0 + 1.5)
            assert now() == event.deadline
            assert not task.done()
        assert task.done()
        assert not task.cancelled()
        assert task.exception() is None
        assert asyncio.all_tasks() == before
        return handle, task

    handle, _ = await asyncio.wait_for(scenario(), 60)
    with pytest.raises(ManagerClosed):
        handle.try_set_timer("b", 1)
    assert await recv(handle) is None


@virtual
async def test_open_exit_is_a_graceful_shutdown() -> None:
    """On exit the manager is shut down (not cancelled): an event already queued stays receivable,
    pending timers are discarded. Catches: exit cancelling the task or dropping queued events."""
    async with TimerManager.open("graceful", 0, 8, 8) as handle:
        t0 = now()
        await handle.set_timer("due", 1)
        await handle.set_timer("pending", 100)
        await asyncio.sleep(2)
    assert await recv(handle) == TimerExpired("due", t0 + 1)
    assert await recv(handle) is None
    assert "pending" not in handle
    assert handle.pending_count() == 0


@virtual
async def test_open_has_the_documented_defaults() -> None:
    """``open(name)`` alone works: heartbeat 0.01 s, command and event buffers of 1024 (README).
    Catches: missing or different defaults."""
    async with TimerManager.open("defaults") as handle:
        start = now()
        for i in range(1024):  # run() has not started yet: every command stays queued
            handle.try_set_timer(f"t{i}", 1)
        with pytest.raises(QueueFull):
            handle.try_set_timer("one-too-many", 1)
        await handle.set_timer("last", 1)  # the awaitable form waits for room
        await asyncio.sleep(1.5)
        ready = handle.try_recv_events(5000)
        assert len(ready) == 1024  # the event queue holds 1024; the 1025th waits for room
        assert len(handle.try_recv_events(5000) + await handle.recv_events(5000)) == 1
    async with TimerManager.open("heartbeat") as handle:
        start = now()
        await handle.set_timer("early", 0.0025)
        event = await recv(handle)
        assert event.deadline == start + 0.0025
        assert abs(now() - (start + 0.01)) < 1e-9  # delivered at the first 0.01 s grid tick


@virtual
async def test_open_reraises_what_the_manager_raised(monkeypatch: pytest.MonkeyPatch, table_class: Any) -> None:
    """An exception inside the manager (the table's pop_due raises) stops it — receivers get None — and
    is re-raised at the exit of the block, with no task left. Catches: open() swallowing the manager's
    exception (e.g. gather(..., return_exceptions=True)) or not awaiting the task."""
    failing_table(monkeypatch, table_class)
    before = asyncio.all_tasks()
    with pytest.raises(Boom, match="pop_due failed"):
        async with TimerManager.open("failing", 0, 8, 8) as handle:
            await handle.set_timer("a", 1)
            assert await recv(handle) is None
            with pytest.raises(ManagerClosed):
                await handle.set_timer("b", 1)
    assert asyncio.all_tasks() == before


@virtual
async def test_open_reraises_a_failure_the_body_did_not_notice(
    monkeypatch: pytest.MonkeyPatch, table_class: Any
) -> None:
    """The manager fails while the body only sleeps: the exit still raises it. Catches: exit skipping
    ``await task`` when the task is already done."""
    failing_table(monkeypatch, table_class)
    with pytest.raises(Boom):
        async with TimerManager.open("failing-quietly", 0, 8, 8) as handle:
            await handle.set_timer("a", 1)
            await asyncio.sleep(5)


@virtual
async def test_open_propagates_an_exception_from_the_body_and_stops_the_manager() -> None:
    """An exception in the body propagates unchanged; the manager's task is finished, nothing leaks,
    the handle refuses commands and its pending timers are gone. Catches: open() swallowing the body's
    exception, or leaving the manager running."""
    before = asyncio.all_tasks()
    with pytest.raises(KeyError, match="from the body"):
        async with TimerManager.open("body", 0, 8, 8) as handle:
            await handle.set_timer("a", 5)
            await handle.flush()
            (task,) = asyncio.all_tasks() - before
            raise KeyError("from the body")
    assert task.done()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
    with pytest.raises(ManagerClosed):
        handle.try_set_timer("b", 1)
    assert "a" not in handle
    assert await recv(handle) is None


@virtual
async def test_open_cancelled_from_outside_stops_the_manager() -> None:
    """Cancelling the task that sits in the block propagates CancelledError and stops the manager.
    Catches: the manager task leaking when the body is cancelled."""
    before = asyncio.all_tasks()
    entered = asyncio.Event()
    handles: list[TimerHandle] = []

    async def user() -> None:
        async with TimerManager.open("cancelled", 0, 8, 8) as handle:
            handles.append(handle)
            entered.set()
            await asyncio.sleep(1000)

    task = asyncio.create_task(user())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
    with pytest.raises(ManagerClosed):
        handles[0].try_set_timer("x", 1)


@virtual
async def test_open_takes_the_cancel_token_sizes_and_options_by_keyword() -> None:
    """open() passes name, sizes, cancel_token and options through (keywords here); a cancelled token
    stops the manager inside the block and the exit is then clean. Catches: options or token ignored."""
    token = CancellationToken()
    async with TimerManager.open(
        name="kw",
        heartbeat_interval=0,
        command_buffer_size=2,
        event_buffer_size=2,
        cancel_token=token,
        max_timers=2,
    ) as handle:
        handle.try_set_timer("a", 10)
        handle.try_set_timer("b", 10)
        with pytest.raises(TimerLimitExceeded):
            handle.try_set_timer("c", 10)
        with pytest.raises(QueueFull):  # command_buffer_size=2, run() has not started yet
            handle.try_set_timer("a", 10)
        await handle.flush()
        assert handle.pending_count() == 2
        token.cancel()
        assert await recv(handle, 10) is None
    with pytest.raises(TypeError):
        async with TimerManager.open("bad", 0, 2, 2, None, no_such_option=1):
            pass


@virtual
async def test_new_keeps_working_and_takes_the_same_options() -> None:
    """``TimerManager.new`` (positional and keyword) still returns (manager, handle) to run by hand, and
    takes the same options as open(). Catches: new() broken or not forwarding options."""
    manager, handle = TimerManager.new("seed", 0, 4, 4, CancellationToken(), max_timers=1)
    task = asyncio.create_task(manager.run())
    t0 = now()
    await handle.set_timer("a", 1)
    with pytest.raises(TimerLimitExceeded):
        await handle.set_timer("b", 1)
    assert await recv(handle) == TimerExpired("a", t0 + 1)
    await handle.shutdown()
    await asyncio.wait_for(task, 10)

    manager, handle = TimerManager.new(
        name="seed-kw", heartbeat_interval=0, command_buffer_size=1, event_buffer_size=1, cancel_token=None
    )
    handle.try_set_timer("a", 1)
    with pytest.raises(QueueFull):
        handle.try_set_timer("b", 1)
    task = asyncio.create_task(manager.run())
    assert (await recv(handle)).name == "a"
    handle.try_shutdown()
    await asyncio.wait_for(task, 10)
    with pytest.raises(TypeError):
        TimerManager.new("x", 0, 1, 1, None, no_such_option=1)
