"""The behaviour contract, points 5 and 6 (and "No stale events"): a lossless event queue, a bounded
command queue, order of application."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from support import ASYNCIO_ONLY, running

from timer_manager import ManagerClosed, QueueFull, TimerExpired, TimerManager

pytestmark = pytest.mark.usefixtures("core")


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "timer_manager" and r.levelno == logging.WARNING]


# -- 5. lossless with a full event queue ----------------------------------------------------------------


@ASYNCIO_ONLY
@pytest.mark.looptime
@pytest.mark.parametrize("capacity", [1, 2, 3])
async def test_full_event_queue_loses_nothing_virtual(capacity: int, caplog: pytest.LogCaptureFixture) -> None:
    """50 timers due at once with an event queue of 1..3: all 50 are received, in deadline/set order, as
    the consumer drains; one WARNING for the episode. catches: dropping expiries on a full queue (the Rust
    original), reordering the waiting ones, a warning per wake-up or none."""
    caplog.set_level(logging.INFO, logger="timer_manager")
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.01, events=capacity) as (manager, handle, _):
        base = loop.time() + 1.0
        plan = [(f"n{i:02}", base + (i % 5) * 0.001) for i in range(50)]
        for name, when in plan:
            await handle.set_timer_at(name, when)
        await asyncio.sleep(5.0)  # all due long ago; the consumer has not read anything
        assert manager.stats().events_ready == capacity
        assert len(warnings_of(caplog)) == 1
        received = []
        for _ in range(50):
            event = await asyncio.wait_for(handle.recv_event(), 10)
            assert isinstance(event, TimerExpired)
            received.append((event.name, event.deadline))
            await asyncio.sleep(0.5)
        assert received == sorted(plan, key=lambda pair: pair[1])
        assert len(warnings_of(caplog)) == 1
        assert manager.stats().fired == 50


async def test_full_event_queue_loses_nothing_real_time(caplog: pytest.LogCaptureFixture) -> None:
    """Real time, both loops: 50 timers due at once, event queue of 2: all 50 received in order, each
    at or after its deadline, one WARNING. catches: drops and reordering under back-pressure."""
    caplog.set_level(logging.INFO, logger="timer_manager")
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.01, events=2) as (_, handle, _task):
        base = loop.time() + 0.05
        plan = [(f"n{i:02}", base + (i % 5) * 0.001) for i in range(50)]
        for name, when in plan:
            handle.try_set_timer_at(name, when)
        await asyncio.sleep(0.3)
        received = []
        for _ in range(50):
            event = await asyncio.wait_for(handle.recv_event(), 30)
            assert event is not None
            assert loop.time() >= event.deadline
            received.append((event.name, event.deadline))
        assert received == sorted(plan, key=lambda pair: pair[1])
        assert len(warnings_of(caplog)) == 1


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_cancel_or_reset_while_waiting_for_room_virtual(caplog: pytest.LogCaptureFixture) -> None:
    """With a full event queue of 2 and 10 due timers: cancelling one that waits for room, re-setting
    another, and cancelling one whose event sits in the queue: none of them is received for its old
    deadline, the re-set one comes at its new one; commands are applied while the queue is full.
    catches: stale events (no retraction), commands stalled behind a full event queue."""
    caplog.set_level(logging.INFO, logger="timer_manager")
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0, events=2) as (_, handle, _task):
        base = loop.time() + 1.0
        for i in range(10):
            await handle.set_timer_at(f"n{i}", base + i * 0.01)
        await asyncio.sleep(2.0)  # n0, n1 in the event queue; n2..n9 wait for room
        await handle.cancel_timer("n0")  # in the event queue: retracted, its place freed
        await handle.cancel_timer("n5")  # waiting for room
        await handle.set_timer_at("n6", base + 10.0)  # waiting for room: re-set
        await asyncio.wait_for(handle.flush(), 1.0)  # commands are applied while the queue is full
        received: list[tuple[str, float, float]] = []
        while len(received) < 8:
            event = await asyncio.wait_for(handle.recv_event(), 100)
            assert event is not None
            received.append((event.name, event.deadline, loop.time()))
        expected = [(f"n{i}", base + i * 0.01) for i in (1, 2, 3, 4, 7, 8, 9)] + [("n6", base + 10.0)]
        assert [(name, deadline) for name, deadline, _ in received] == expected
        assert received[-1][2] == base + 10.0
        await asyncio.sleep(20)
        with pytest.raises(asyncio.QueueEmpty):
            handle.try_recv_event()


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_one_warning_per_full_queue_episode_virtual(caplog: pytest.LogCaptureFixture) -> None:
    """Two separate episodes of a full event queue log exactly two WARNINGs (one each), naming the
    manager. catches: warning on every wake-up while full, or only the first time ever."""
    caplog.set_level(logging.INFO, logger="timer_manager")
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0, events=1, name="queues") as (_, handle, _task):
        for episode in (1, 2):
            base = loop.time() + 1.0
            for i in range(5):
                await handle.set_timer_at(f"e{episode}:{i}", base + i)
            await asyncio.sleep(10)
            assert len(warnings_of(caplog)) == episode
            names = [(await handle.recv_event()).name for _ in range(5)]  # type: ignore[union-attr]
            assert names == [f"e{episode}:{i}" for i in range(5)]
            await asyncio.sleep(1)
        records = warnings_of(caplog)
        assert len(records) == 2
        assert all("'queues'" in record.getMessage() for record in records)


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_no_stale_event_after_cancel_or_reset_virtual() -> None:
    """An event already in the event queue is retracted by a cancel or a re-set of its name, and its
    place is freed (the queue of 2 takes the next due timers at once).
    catches: delivering the cancelled timer's queued event (the Rust original); retracted events
    still occupying room."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0, events=2) as (manager, handle, _task):
        base = loop.time() + 1.0
        for i in range(4):
            await handle.set_timer_at(f"n{i}", base + i * 0.1)
        await asyncio.sleep(2.0)
        assert manager.stats().events_ready == 2  # n0, n1
        await handle.cancel_timer("n0")
        await handle.set_timer("n1", 5.0)
        await handle.flush()
        await asyncio.sleep(0.01)
        assert manager.stats().events_ready == 2  # n2, n3 took the freed places
        events = handle.try_recv_events(10)
        assert [(event.name, event.deadline) for event in events] == [("n2", base + 0.2), ("n3", base + 0.3)]
        event = await asyncio.wait_for(handle.recv_event(), 100)
        assert event is not None
        assert (event.name, event.deadline) == ("n1", base + 2.0 + 5.0 - 1.0)


# -- 6. the bounded command queue --------------------------------------------------------------------------


async def test_try_calls_raise_queue_full_when_full() -> None:
    """With a command queue of 3 (manager not running, so nothing drains), three commands fit and every
    try_ form then raises QueueFull; nothing extra was queued. catches: an unbounded queue; try_ waiting."""
    manager, handle = TimerManager.new("full", 0.01, 3, 10)
    handle.try_set_timer("a", 1.0)
    handle.try_cancel_timer("zzz")
    handle.try_set_timer("b", 1.0)
    attempts: list[Callable[[], object]] = [
        lambda: handle.try_set_timer("c", 1.0),
        lambda: handle.try_set_timer_at("c", 1.0),
        lambda: handle.try_set_interval("c", 1.0),
        lambda: handle.try_set_timers([("c", 1.0)]),
        lambda: handle.try_cancel_timer("a"),
        lambda: handle.try_cancel_timers(["a"]),
        lambda: handle.try_cancel_all_timers(),
        lambda: handle.try_shutdown(),
    ]
    for attempt in attempts:
        with pytest.raises(QueueFull, match="full"):
            attempt()
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert manager.stats().set == 2
    assert manager.stats().cancelled == 0
    assert sorted(name for name in ("a", "b", "c") if name in handle) == ["a", "b"]
    await handle.shutdown()
    await task


async def test_a_set_with_nothing_queued_is_applied_at_the_call_and_takes_no_place() -> None:
    """While the manager runs, a set on the loop's thread with nothing queued is applied at the call: pending at
    once with its call-time deadline, holding no place in the command queue (here of one, and the manager gets
    no turn). Behind a queued command a set queues, in order: try_ raises QueueFull, the awaitable waits.
    Catches: a set applied ahead of a command sent before it; a set at the call that still takes a place."""
    loop = asyncio.get_running_loop()
    async with running(commands=1) as (manager, handle, _task):
        await handle.flush()
        runner = manager._runner
        service = runner.service
        runner.service = lambda: setattr(runner, "service_soon", False)  # type: ignore[method-assign]
        try:
            before = loop.time()
            for name in ("a", "b", "c"):
                handle.try_set_timer(name, 10.0)
            await handle.set_timer("d", 20.0)
            after = loop.time()
            assert [name in handle for name in "abcd"] == [True] * 4
            assert before + 10.0 <= handle.deadline("a") <= after + 10.0  # type: ignore[operator]
            assert before + 20.0 <= handle.deadline("d") <= after + 20.0  # type: ignore[operator]
            assert manager._runner.engine.queued() == 0
            handle.try_cancel_timer("a")  # the one place
            with pytest.raises(QueueFull):
                handle.try_set_timer("a", 5.0)
            waiting = asyncio.ensure_future(handle.set_timer("a", 5.0))
            await asyncio.sleep(0)
            assert not waiting.done()
            assert "a" in handle  # the cancel is not applied yet, and nothing overtook it
        finally:
            runner.service = service  # type: ignore[method-assign]
        runner.schedule_service()
        await asyncio.wait_for(waiting, 5.0)
        await handle.flush()
        assert handle.deadline("a") is not None  # cancelled, then set again: in the order sent
        stats = manager.stats()
        assert (stats.set, stats.cancelled) == (5, 1)


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_a_set_at_the_call_wakes_the_manager_only_before_its_armed_wake_up_virtual() -> None:
    """A set applied at the call whose deadline comes before the one the armed wake-up is for asks for a pass,
    which re-arms it; one at or after it asks for none, and the armed wake-up delivers it in turn (exactly on
    time, heartbeat 0). A timer reset later at the call is never delivered early. Catches: a set at the call
    left behind a later wake-up (delivered late), or a pass asked for every set."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0) as (manager, handle, _task):
        runner = manager._runner
        t0 = loop.time()
        handle.try_set_timer("far", 10.0)
        assert runner.service_soon  # nothing was armed: a pass arms the wake-up
        await asyncio.sleep(0.5)
        assert not runner.service_soon
        handle.try_set_timer("later", 19.5)  # t0 + 20: after the armed 10
        assert not runner.service_soon
        handle.try_set_timer("near", 0.5)  # t0 + 1: before it
        assert runner.service_soon
        await asyncio.sleep(0)
        handle.try_set_timer("moved", 2.5)  # t0 + 3: after the wake-up armed for near
        await asyncio.sleep(0)
        handle.try_set_timer("moved", 4.5)  # reset to t0 + 5: no pass either; the wake-up at t0 + 1 re-arms
        assert not runner.service_soon
        received = []
        for _ in range(4):
            event = await asyncio.wait_for(handle.recv_event(), 30.0)
            assert event is not None
            received.append((event.name, round(event.deadline - t0, 6), round(loop.time() - t0, 6)))
        assert received == [("near", 1.0, 1.0), ("moved", 5.0, 5.0), ("far", 10.0, 10.0), ("later", 20.0, 20.0)]


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_a_pass_that_leaves_the_wake_up_as_it_was_still_lets_a_later_set_at_the_call_ask_for_one_virtual() -> (
    None
):
    """A set at the call asked for a pass, which found the armed wake-up right as it was (the set's timer was
    cancelled meanwhile): a later set at the call before that wake-up must ask for a pass again. Catches: the
    runner skipping its note of the armed deadline when nothing changed (the later set delivered late)."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0) as (_manager, handle, _task):
        t0 = loop.time()
        handle.try_set_timer("far", 10.0)
        await asyncio.sleep(0)  # armed for t0 + 10
        handle.try_set_timer("x", 5.0)  # before it: a pass is asked for
        handle.try_cancel_timer("x")  # queued; that pass applies it, and leaves the wake-up armed for far
        await asyncio.sleep(0)
        handle.try_set_timer("near", 1.0)
        event = await asyncio.wait_for(handle.recv_event(), 30.0)
        assert event is not None
        assert (event.name, loop.time() - t0) == ("near", 1.0)


async def test_try_set_timers_is_all_or_nothing() -> None:
    """try_set_timers with more items than fit raises QueueFull and queues none of them.
    catches: a partial batch queued before the QueueFull."""
    manager, handle = TimerManager.new("batch", 0.01, 3, 10)
    handle.try_set_timer("first", 1.0)
    with pytest.raises(QueueFull):
        handle.try_set_timers([("x", 1.0), ("y", 1.0), ("z", 1.0)])
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert handle.pending_count() == 1
    assert "first" in handle
    await handle.shutdown()
    await task


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_awaitable_calls_wait_fifo_and_apply_in_order_virtual() -> None:
    """With a full command queue of 2, six senders wait; they complete first come first served, and
    their sets are applied in the order sent (visible as the order of equal deadlines); a try_ call
    cannot jump the waiting senders. catches: LIFO/unfair wake-up of senders; try_ overtaking them."""
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("fifo", 0, 2, 100)
    when = loop.time() + 10.0
    handle.try_set_timer_at("q0", when)
    handle.try_set_timer_at("q1", when)
    completed: list[str] = []

    async def sender(name: str) -> None:
        await handle.set_timer_at(name, when)
        completed.append(name)

    senders = [asyncio.create_task(sender(f"s{i}")) for i in range(6)]
    await asyncio.sleep(1.0)
    assert completed == []  # all waiting: the queue is full and the manager is not running
    with pytest.raises(QueueFull):
        handle.try_set_timer_at("jumper", when)
    task = asyncio.create_task(manager.run())
    await asyncio.wait_for(asyncio.gather(*senders), 5)
    assert completed == [f"s{i}" for i in range(6)]
    events = [await handle.recv_event() for _ in range(8)]
    assert [event.name for event in events if event] == ["q0", "q1"] + [f"s{i}" for i in range(6)]
    assert "jumper" not in handle
    await handle.shutdown()
    await task


async def test_awaitable_calls_wait_fifo_real_time() -> None:
    """Real time, both loops: twenty senders behind a full command queue of 1 complete in FIFO order and
    are applied in that order. catches: unfair or reordered senders."""
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("fifo", 0.01, 1, 100)
    when = loop.time() + 0.2
    handle.try_set_timer_at("q", when)
    completed: list[str] = []

    async def sender(name: str) -> None:
        await handle.set_timer_at(name, when)
        completed.append(name)

    senders = [asyncio.create_task(sender(f"s{i:02}")) for i in range(20)]
    await asyncio.sleep(0.01)
    task = asyncio.create_task(manager.run())
    await asyncio.wait_for(asyncio.gather(*senders), 30)
    names = [f"s{i:02}" for i in range(20)]
    assert completed == names
    events = [await asyncio.wait_for(handle.recv_event(), 30) for _ in range(21)]
    assert [event.name for event in events if event] == ["q", *names]
    await handle.shutdown()
    await task


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_commands_applied_in_order_sent_virtual() -> None:
    """set/cancel/set of one name in one batch leaves the last set; set/cancel leaves nothing;
    cancel_all then set keeps only the later set. catches: commands applied out of order (e.g. cancels
    before sets, or the batch deduplicated by name)."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0) as (_, handle, _task):
        start = loop.time()
        handle.try_set_timer("a", 1.0)
        handle.try_cancel_timer("a")
        handle.try_set_timer("a", 2.0)
        handle.try_set_timer("b", 1.0)
        handle.try_cancel_timer("b")
        handle.try_set_timer("c", 3.0)
        handle.try_cancel_all_timers()
        handle.try_set_timer("d", 4.0)
        await handle.flush()
        assert (handle.pending_count(), "a" in handle, "b" in handle, "c" in handle) == (1, False, False, False)
        await handle.set_timer("a", 2.0)
        events = [await handle.recv_event() for _ in range(2)]
        assert [(e.name, e.deadline) for e in events if e] == [("a", start + 2.0), ("d", start + 4.0)]
        await asyncio.sleep(10)
        with pytest.raises(asyncio.QueueEmpty):
            handle.try_recv_event()


async def test_sender_waiting_when_shutdown_sent_is_applied_before_it() -> None:
    """A sender waiting for room before shutdown() was called is applied before the shutdown (FIFO);
    a command after shutdown() raises ManagerClosed at once. catches: shutdown overtaking earlier senders."""
    manager, handle = TimerManager.new("order", 0.01, 1, 10)
    handle.try_set_timer("queued", 100.0)
    waiting = asyncio.create_task(handle.set_timer("waiting", 100.0))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(handle.shutdown())
    await asyncio.sleep(0)
    with pytest.raises(ManagerClosed):
        await handle.set_timer("late", 1.0)
    task = asyncio.create_task(manager.run())
    await asyncio.wait_for(asyncio.gather(waiting, stopping, task), 10)
    assert manager.stats().set == 2
