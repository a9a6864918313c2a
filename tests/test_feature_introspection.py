"""Features: introspection from the applied state (deadline, remaining, pending_count, ``in``,
next_deadline), ``flush()``, and absolute deadlines (set_timer_at / try_set_timer_at)."""

from __future__ import annotations

import asyncio
import math

import pytest
from support import now, recv, running, virtual

from timer_manager import CancellationToken, ManagerClosed, QueueFull, TimerExpired, TimerManager

pytestmark = pytest.mark.usefixtures("core")

# ------------------------------------------------------------------ introspection and flush


@virtual
async def test_introspection_answers_from_the_applied_state() -> None:
    """Queued but unapplied sets do not show; after flush() they do, with exact deadlines; firing and
    cancelling remove timers. Catches: introspection reading queued commands, wrong deadline/remaining/
    next_deadline/pending_count, fired or cancelled timers still listed."""
    manager, handle = TimerManager.new("intro", 0, 16, 16)
    t0 = now()
    handle.try_set_timer("a", 5)
    handle.try_set_timer("b", 2)
    # run() has not started: nothing is applied yet
    assert handle.pending_count() == 0
    assert "a" not in handle
    assert handle.deadline("a") is None
    assert handle.remaining("a") is None
    assert handle.next_deadline() is None
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert handle.pending_count() == 2
    assert "a" in handle
    assert "b" in handle
    assert "c" not in handle
    assert 1 not in handle  # not a str: simply not there
    assert handle.deadline("a") == t0 + 5
    assert handle.deadline("b") == t0 + 2
    assert handle.deadline("c") is None
    assert handle.remaining("a") == 5
    assert handle.next_deadline() == t0 + 2
    await asyncio.sleep(1)
    assert handle.remaining("a") == 4
    assert handle.remaining("b") == 1
    assert await recv(handle) == TimerExpired("b", t0 + 2)
    assert handle.pending_count() == 1
    assert "b" not in handle
    assert handle.deadline("b") is None
    assert handle.next_deadline() == t0 + 5
    await handle.set_timer("a", 10)  # a re-set shows its new deadline once applied
    await handle.flush()
    assert handle.deadline("a") == t0 + 12
    assert handle.pending_count() == 1
    await handle.cancel_timer("a")
    await handle.flush()
    assert handle.pending_count() == 0
    assert "a" not in handle
    assert handle.next_deadline() is None
    assert handle.remaining("a") is None
    await handle.shutdown()
    await task


@virtual
async def test_remaining_is_never_negative() -> None:
    """With event_buffer_size=1, "b" is past due but still pending (waiting for room): remaining is
    0.0, not -1.0, while deadline() still tells the past deadline. Catches: remaining = deadline - now."""
    async with running(events=1) as (_, handle, _task):
        t0 = now()
        await handle.set_timer("a", 1)
        await handle.set_timer("b", 2)
        await asyncio.sleep(3)
        assert "b" in handle
        assert handle.deadline("b") == t0 + 2
        assert handle.remaining("b") == 0.0
        assert handle.next_deadline() == t0 + 2


@virtual
async def test_flush_returns_only_once_earlier_commands_are_applied() -> None:
    """With the manager not running yet, flush() does not return (and the set does not show); once
    run() starts, flush returns and the set shows. Catches: flush returning when its command is merely
    queued, or before the manager applied what came before."""
    manager, handle = TimerManager.new("flush", 0, 16, 16)
    handle.try_set_timer("a", 5)
    flushing = asyncio.create_task(handle.flush())
    await asyncio.sleep(1)
    assert not flushing.done()
    assert "a" not in handle
    task = asyncio.create_task(manager.run())
    await asyncio.wait_for(flushing, 10)
    assert "a" in handle
    await handle.shutdown()
    await task


@virtual
async def test_flush_behind_a_backlog_larger_than_the_command_queue() -> None:
    """command_buffer_size=2 and 20 sets from waiting senders: flush() (itself waiting for room) returns
    only when all 20 are applied. Catches: flush jumping the queue."""
    async with running(commands=2) as (_, handle, _task):
        t0 = now()
        senders = [asyncio.create_task(handle.set_timer(f"t{i}", 10 + i)) for i in range(20)]
        await asyncio.sleep(0)
        await handle.flush()
        assert handle.pending_count() == 20
        assert handle.deadline("t19") == t0 + 29
        await asyncio.gather(*senders)


@virtual
async def test_flush_never_hangs_when_the_manager_stops() -> None:
    """A flush queued when the token stops the manager is released (it returns or raises
    ManagerClosed); a flush after shutdown raises ManagerClosed. Catches: a stopped manager leaving the
    flush's future unresolved (the caller would hang)."""
    token = CancellationToken()
    manager, handle = TimerManager.new("flush-stop", 0, 16, 16, token)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0.5)
    flushing = asyncio.create_task(handle.flush())
    token.cancel()
    try:
        await asyncio.wait_for(flushing, 10)
    except ManagerClosed:
        pass
    await asyncio.wait_for(task, 10)
    with pytest.raises(ManagerClosed):
        await handle.flush()


async def test_flush_in_real_time() -> None:
    """flush() on every loop: the sets sent before it show afterwards. Catches: flush broken on uvloop."""
    async with running(heartbeat=0.01, commands=128) as (_, handle, _task):
        for i in range(100):
            handle.try_set_timer(f"t{i}", 60)
        await handle.flush()
        assert handle.pending_count() == 100
        assert all(f"t{i}" in handle for i in range(100))


# ------------------------------------------------------------------ absolute deadlines


@virtual
async def test_set_timer_at_fires_at_the_absolute_loop_time() -> None:
    """set_timer_at / try_set_timer_at take ``when`` in loop time as the deadline, exactly. Catches:
    ``when`` treated as a duration, or shifted."""
    async with running() as (_, handle, _task):
        await asyncio.sleep(7)
        t0 = now()
        await handle.set_timer_at("a", t0 + 2.5)
        handle.try_set_timer_at("b", t0 + 1.25)
        await handle.flush()
        assert handle.deadline("a") == t0 + 2.5
        assert handle.next_deadline() == t0 + 1.25
        event = await recv(handle)
        assert event == TimerExpired("b", t0 + 1.25)
        assert now() == t0 + 1.25
        event = await recv(handle)
        assert event == TimerExpired("a", t0 + 2.5)
        assert now() == t0 + 2.5


@virtual
async def test_set_timer_at_in_the_past_fires_at_once_with_deadline_when() -> None:
    """A past ``when`` fires at once (no time passes) and the event's deadline is ``when`` itself;
    several past ones come out in deadline order, ties in set order. Catches: clamping the deadline to
    now, or delaying past timers."""
    async with running() as (_, handle, _task):
        await asyncio.sleep(10)
        t = now()
        await handle.set_timer_at("late", t - 7.5)
        event = await recv(handle)
        assert event == TimerExpired("late", t - 7.5)
        assert now() == t
        handle.try_set_timer_at("p3", t - 1)
        handle.try_set_timer_at("p1", t - 2)
        handle.try_set_timer_at("p2", t - 1)
        await handle.set_timer_at("p0", 0)  # an int loop time
        events = await handle.recv_events(10)
        events += handle.try_recv_events(10)
        assert events == [
            TimerExpired("p0", 0),
            TimerExpired("p1", t - 2),
            TimerExpired("p3", t - 1),
            TimerExpired("p2", t - 1),
        ]
        assert now() == t


@virtual
async def test_set_timer_at_replaces_a_pending_deadline() -> None:
    """set_timer_at on a pending name replaces its deadline, earlier or later. Catches: a second timer
    or the old deadline kept."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_timer("a", 10)
        await handle.set_timer_at("a", t0 + 3)
        await handle.flush()
        assert handle.deadline("a") == t0 + 3
        assert handle.pending_count() == 1
        assert await recv(handle) == TimerExpired("a", t0 + 3)
        await asyncio.sleep(20)
        assert handle.try_recv_events(5) == []


@virtual
async def test_set_timer_at_refuses_bad_input_and_a_full_queue() -> None:
    """Bad ``when`` raises at the call (TypeError / ValueError) and queues nothing; the try_ form raises
    QueueFull when the command queue is full. Catches: missing validation, try_ waiting or queuing."""
    manager, handle = TimerManager.new("at-bad", 0, 1, 4)
    for bad, error in [
        ("1", TypeError),
        (True, TypeError),
        (None, TypeError),
        (math.nan, ValueError),
        (math.inf, ValueError),
    ]:
        with pytest.raises(error):
            handle.try_set_timer_at("a", bad)  # type: ignore[arg-type]
        with pytest.raises(error):
            await handle.set_timer_at("a", bad)  # type: ignore[arg-type]
    handle.try_set_timer_at("a", 5)  # the one place: nothing bad took it
    with pytest.raises(QueueFull):
        handle.try_set_timer_at("b", 5)
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert handle.pending_count() == 1
    await handle.shutdown()
    await task


@virtual
async def test_set_timer_at_in_the_past_with_a_heartbeat_follows_the_grid() -> None:
    """With a heartbeat, a past ``when`` is due at once as contract 3 has it for any deadline: at the first
    grid tick at or after ``when``: at once if such a tick has come (``when`` before the last tick), else
    at the next tick, not at the call. The docs said "a past one fires at once", which held only for the
    first case. Catches: the docs and the code disagreeing again (a past ``when`` delivered off the grid,
    or the docs promising that)."""
    async with running(heartbeat=1.0) as (_, handle, _task):
        origin = now()
        await asyncio.sleep(5.5)  # between the ticks origin+5 and origin+6
        await handle.set_timer_at("before the last tick", origin + 4.75)
        assert await recv(handle) == TimerExpired("before the last tick", origin + 4.75)
        assert now() == origin + 5.5  # at once: the tick at origin+5 has come
        await handle.set_timer_at("after the last tick", origin + 5.25)
        assert await recv(handle) == TimerExpired("after the last tick", origin + 5.25)
        assert now() == origin + 6  # the first tick at or after it


async def test_set_timer_at_in_the_past_with_a_heartbeat_in_real_time() -> None:
    """On every loop, with a heartbeat: a past ``when`` fires promptly and the event carries ``when``.
    Catches: the same in real time / on uvloop."""
    async with running(heartbeat=0.01) as (_, handle, _task):
        when = now() - 3.0
        await handle.set_timer_at("past", when)
        event = await recv(handle, 5)
        assert event == TimerExpired("past", when)
        assert now() - when < 3.5
