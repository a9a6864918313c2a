"""Feature: batch and streaming API: set_timers / try_set_timers, cancel_timers / try_cancel_timers,
recv_events / try_recv_events, and ``async for event in handle``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from support import now, running, virtual

from timer_manager import ManagerClosed, QueueFull, TimerExpired, TimerManager

pytestmark = pytest.mark.usefixtures("core")

# ------------------------------------------------------------------ set_timers / cancel_timers


@virtual
async def test_set_timers_applies_items_in_order() -> None:
    """Items apply in order: equal deadlines come out in item order (not name order), a later item for
    the same name re-sets it, and a generator works. Catches: reordering, de-duplication, only the
    first item of a name kept."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_timers([("z", 1), ("y", 1), ("a", 5), ("x", 1), ("a", 2)])
        handle.try_set_timers((f"g{i}", 3) for i in range(3))
        await handle.flush()
        assert handle.pending_count() == 7
        assert handle.deadline("a") == t0 + 2
        names = [e.name for e in await handle.recv_events(10)]
        names += [e.name for e in await handle.recv_events(10)]
        names += [e.name for e in await handle.recv_events(10)]
        assert names == ["z", "y", "x", "a", "g0", "g1", "g2"]


BAD_BATCHES: list[tuple[Any, type]] = [
    ([("ok", 1), ("bad", -1)], ValueError),
    ([("ok", 1), ("bad", float("nan"))], ValueError),
    ([("ok", 1), (2, 1)], TypeError),
    ([("ok", 1), ("bad", "1")], TypeError),
    ([("ok", 1), ("short",)], TypeError),
    ([("ok", 1), ("long", 1, None, None)], TypeError),
    ([("ok", 1), "ab"], TypeError),
    ([("ok", 1), None], TypeError),
]


@pytest.mark.parametrize(("items", "error"), BAD_BATCHES)
async def test_set_timers_validates_every_item_before_queuing_any(items: Any, error: type) -> None:
    """A bad item anywhere refuses the whole batch, for both forms, and nothing is queued (the first,
    good item is not applied and takes no command place). Catches: items queued one by one as they
    are checked."""
    manager, handle = TimerManager.new("bad-batch", 0, 2, 4)
    with pytest.raises(error):
        await handle.set_timers(items)
    with pytest.raises(error):
        handle.try_set_timers(items)

    def failing() -> Iterator[tuple[str, float]]:
        yield ("ok", 1)
        raise LookupError("the iterable failed")

    with pytest.raises(LookupError):
        handle.try_set_timers(failing())
    handle.try_set_timers([("p", 10), ("q", 10)])  # both places are still free
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert handle.pending_count() == 2
    assert "ok" not in handle
    await handle.shutdown()
    await task


async def test_batches_take_one_command_place_per_item() -> None:
    """command_buffer_size=4: a batch of 3 leaves room for 1; the try_ form refuses a batch that does
    not fit whole and queues none of it; high water = items. Catches: a batch counted as one command,
    or a partial try_ batch."""
    manager, handle = TimerManager.new("places", 0, 4, 8)
    handle.try_set_timers([("a", 10), ("b", 10), ("c", 10)])
    assert manager.stats().command_queue_high_water == 3
    with pytest.raises(QueueFull):
        handle.try_set_timers([("d", 10), ("e", 10)])
    with pytest.raises(QueueFull):
        handle.try_cancel_timers(["a", "b"])
    handle.try_set_timer("d", 10)
    with pytest.raises(QueueFull):
        handle.try_set_timer("e", 10)
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert handle.pending_count() == 4
    assert "e" not in handle
    handle.try_cancel_timers(["a", "b", "c"])
    await handle.flush()
    assert handle.pending_count() == 1
    await handle.shutdown()
    await task


async def test_a_batch_larger_than_the_command_queue_completes() -> None:
    """The awaitable forms take batches far larger than the command queue (here 1000 items through 8
    places), apply them in order, and the try_ form of such a batch raises QueueFull. Catches:
    deadlock or QueueFull for big awaitable batches, order lost across refills."""
    async with running(heartbeat=0.01, commands=8) as (_, handle, _task):
        with pytest.raises(QueueFull):
            handle.try_set_timers((f"t{i}", 60) for i in range(9))
        await asyncio.wait_for(handle.set_timers([(f"t{i}", 60 + i) for i in range(1000)] + [("t0", 30)]), 10)
        await handle.flush()
        assert handle.pending_count() == 1000
        first, second, last = handle.deadline("t0"), handle.deadline("t1"), handle.deadline("t999")
        assert first is not None and second is not None and last is not None
        assert last - second == pytest.approx(998)
        assert first < second - 29
        await asyncio.wait_for(handle.cancel_timers(f"t{i}" for i in range(0, 1000, 2)), 10)
        await handle.flush()
        assert handle.pending_count() == 500
        assert "t0" not in handle
        assert "t1" in handle


async def test_cancel_timers_applies_in_order_and_validates_first() -> None:
    """cancel_timers interleaves in order with sets; a bad name or a bare str refuses the whole call.
    Catches: cancels applied out of order, a str iterated char by char, partial queuing."""
    async with running(heartbeat=0.01) as (_, handle, _task):
        await handle.set_timers([("a", 60), ("b", 60), ("c", 60)])
        await handle.cancel_timers(["a", "b", "missing"])
        await handle.set_timer("a", 60)
        with pytest.raises(TypeError):
            await handle.cancel_timers("abc")
        with pytest.raises(TypeError):
            handle.try_cancel_timers(["c", 3])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            await handle.cancel_timers(["c", None])  # type: ignore[list-item]
        await handle.flush()
        assert sorted(n for n in "abc" if n in handle) == ["a", "c"]


# ------------------------------------------------------------------ receiving in bulk


@virtual
async def test_recv_events_returns_up_to_max_ready_events_in_order() -> None:
    """Five ready events: recv_events(3) gives the first three, then recv_events(10) the other two,
    without waiting. Catches: ignoring max_events, reordering, waiting for more."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_timers([(f"e{i}", 1 + i / 8) for i in range(5)])
        await asyncio.sleep(2)
        first = await handle.recv_events(3)
        assert first == [TimerExpired(f"e{i}", t0 + 1 + i / 8) for i in range(3)]
        rest = await handle.recv_events(10)
        assert rest == [TimerExpired(f"e{i}", t0 + 1 + i / 8) for i in range(3, 5)]
        assert now() == t0 + 2


@virtual
async def test_recv_events_waits_only_while_none_is_ready() -> None:
    """recv_events waits while nothing is ready, and returns as soon as one event is (a list of one,
    not waiting for max_events or for the next timer). Catches: returning [] while running, or
    waiting to fill the list."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_timers([("a", 1), ("b", 5)])
        receiving = asyncio.create_task(handle.recv_events(10))
        await asyncio.sleep(0.5)
        assert not receiving.done()
        events = await asyncio.wait_for(receiving, 100)
        assert events == [TimerExpired("a", t0 + 1)]
        assert now() == t0 + 1
        assert handle.try_recv_events(10) == []  # try_ does not wait: nothing ready yet
        assert await handle.recv_events(10) == [TimerExpired("b", t0 + 5)]


@virtual
async def test_recv_events_returns_empty_list_once_stopped_and_drained() -> None:
    """After shutdown, events already ready are still returned, then []; a receiver waiting when the
    manager stops gets []. Catches: [] before the queued events, a hang after stop, None instead of
    []."""
    async with running() as (_, handle, _task):
        await handle.set_timers([("a", 1), ("b", 1)])
        await asyncio.sleep(2)
    assert [e.name for e in await handle.recv_events(1)] == ["a"]
    assert [e.name for e in await handle.recv_events(5)] == ["b"]
    assert await asyncio.wait_for(handle.recv_events(5), 10) == []
    assert await asyncio.wait_for(handle.recv_events(5), 10) == []

    manager, handle = TimerManager.new("waiting", 0, 4, 4)
    task = asyncio.create_task(manager.run())
    receiving = asyncio.create_task(handle.recv_events(5))
    await asyncio.sleep(1)
    await handle.shutdown()
    assert await asyncio.wait_for(receiving, 10) == []
    await task


@virtual
async def test_try_recv_events_never_waits() -> None:
    """try_recv_events returns at once: [] while nothing is ready, else up to max_events ready events.
    Catches: a try_ form that waits or ignores max_events."""
    async with running() as (_, handle, _task):
        t0 = now()
        assert handle.try_recv_events(5) == []
        await handle.set_timers([(f"e{i}", 1) for i in range(4)])
        await asyncio.sleep(2)
        assert handle.try_recv_events(3) == [TimerExpired(f"e{i}", t0 + 1) for i in range(3)]
        assert handle.try_recv_events(3) == [TimerExpired("e3", t0 + 1)]
        assert handle.try_recv_events(3) == []


async def test_recv_events_validates_max_events() -> None:
    """max_events must be an int >= 1. Catches: recv_events(0) returning [] (a consumer would take it
    for 'stopped') or waiting for ever."""
    _manager, handle = TimerManager.new("max", 0, 4, 4)
    for bad, error in [(0, ValueError), (-1, ValueError), (True, TypeError), (1.5, TypeError), ("2", TypeError)]:
        with pytest.raises(error):
            await handle.recv_events(bad)  # type: ignore[arg-type]
        with pytest.raises(error):
            handle.try_recv_events(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ async for


@virtual
async def test_async_for_yields_every_event_until_the_manager_stops() -> None:
    """``async for event in handle`` yields the events in order and ends once the manager stopped (a
    shutdown at t0+3.5) and the events were all received. Catches: iteration ending early, never
    ending, or skipping events."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_timers([("a", 1), ("b", 2), ("c", 3), ("late", 10)])

        async def stop_later() -> None:
            await asyncio.sleep(3.5)
            await handle.shutdown()

        stopper = asyncio.create_task(stop_later())

        async def consume() -> list[TimerExpired]:
            return [event async for event in handle]

        events = await asyncio.wait_for(consume(), 100)
        assert events == [TimerExpired("a", t0 + 1), TimerExpired("b", t0 + 2), TimerExpired("c", t0 + 3)]
        assert now() == t0 + 3.5
        await stopper


async def test_async_for_in_real_time_drains_after_shutdown() -> None:
    """On every loop: events ready at shutdown are still yielded, then the iteration ends. Catches: the
    iterator broken on uvloop or dropping queued events."""
    async with running(heartbeat=0.001) as (manager, handle, _task):
        await handle.set_timers([(f"e{i}", 0) for i in range(5)])
        while manager.stats().events_ready < 5:
            await asyncio.sleep(0.001)
        await handle.shutdown()
        names = [event.name async for event in handle]
        assert names == [f"e{i}" for i in range(5)]
        with pytest.raises(ManagerClosed):
            handle.try_recv_event()
