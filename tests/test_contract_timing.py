"""The behaviour contract, points 1-4: deadlines, order, the heartbeat grid, idleness and wake-up cost.

Each timing property is proved twice: in virtual time (looptime, asyncio's loop only: exact times) and in
real time (both loops: never early, exactly; late by less than a generous bound).
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from typing import Any

import pytest
from support import ASYNCIO_ONLY, running

from timer_manager import TimerExpired, TimerHandle, TimerManager
from timer_manager._wakeup import LoopTimerWakeup

pytestmark = pytest.mark.usefixtures("core")

LOOPTIME_TICK = 1e-6  # looptime keeps its clock in integer microseconds
LATE = 1.0  # a generous real-time bound on lateness: the machine is loaded


async def sleep_until_dyadic() -> None:
    """Under looptime: sleep until the next whole second + 0.375, a binary-exact loop time from which
    dyadic offsets and heartbeats give exact grid ticks (no rounding to looptime's microseconds)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(math.floor(loop.time()) + 1.375 - loop.time())
    assert loop.time() % 1 == 0.375


def first_tick(origin: float, heartbeat: float, deadline: float) -> float:
    """The contract's definition: the first tick origin + k*h (k = 0, 1, ...) at or after ``deadline``."""
    if heartbeat == 0:
        return deadline
    k = max(0, math.floor((deadline - origin) / heartbeat) - 1)
    while origin + k * heartbeat < deadline:
        k += 1
    return origin + k * heartbeat


async def receive(handle: TimerHandle, count: int, timeout: float = 30) -> list[tuple[TimerExpired, float]]:
    """Receive ``count`` events, each with the loop time at which it was received (a hang fails after
    ``timeout`` loop seconds)."""
    loop = asyncio.get_running_loop()
    received = []
    for _ in range(count):
        event = await asyncio.wait_for(handle.recv_event(), timeout)
        assert isinstance(event, TimerExpired)
        received.append((event, loop.time()))
    return received


def spy_wakeups(manager: TimerManager) -> collections.Counter[str]:
    """Count the manager's callbacks (service and on_timer); call before run()."""
    core = manager._runner
    counts: collections.Counter[str] = collections.Counter()
    service, on_timer = core.service, core.on_timer

    def counted_service() -> None:
        counts["service"] += 1
        service()

    def counted_on_timer() -> None:
        counts["on_timer"] += 1
        on_timer()

    core.service = counted_service  # type: ignore[method-assign]
    core.on_timer = counted_on_timer  # type: ignore[method-assign]
    return counts


class EngineSpy:
    """Wraps a manager's engine (the part that owns the timer table, C or Python) and records, for every
    call the manager's asyncio side makes on it, the method name; for ``fire``, how many timers it moved
    into the event queue. Installed after construction, so it sees every call from then on."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "calls", collections.Counter())
        object.__setattr__(self, "popped", [])

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self.inner, attr)
        if not callable(value):
            return value

        def counted(*args: Any) -> Any:
            self.calls[attr] += 1
            result = value(*args)
            if attr == "fire":
                self.popped.append(result)
            return result

        return counted

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self.inner, attr, value)


def spy_engine(manager: TimerManager) -> EngineSpy:
    spy = EngineSpy(manager._runner.engine)
    manager._runner.engine = spy
    return spy


# -- 1. the deadline is taken at the call ---------------------------------------------------------------


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_deadline_taken_at_call_before_run_virtual() -> None:
    """A set queued before run() starts is due at call time + d.
    catches: deadline taken when the manager applies the command (here 3 s later)."""
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("early", 0, 16, 16)
    called_at = loop.time()
    handle.try_set_timer("a", 5.0)
    await handle.set_timer("b", 2.0)
    await asyncio.sleep(3.0)  # the manager is not running yet: nothing is applied
    task = asyncio.create_task(manager.run())
    (b_event, b_at), (a_event, a_at) = await receive(handle, 2)
    assert (b_event.name, a_event.name) == ("b", "a")
    assert b_event.deadline == called_at + 2.0
    assert a_event.deadline == called_at + 5.0
    assert b_at == pytest.approx(max(called_at + 3.0, b_event.deadline), abs=LOOPTIME_TICK)
    assert a_at == pytest.approx(called_at + 5.0, abs=LOOPTIME_TICK)
    await handle.shutdown()
    await task


async def test_deadline_taken_at_call_while_loop_blocked() -> None:
    """A set made while the loop is then blocked (the manager cannot apply it) keeps the call's time.
    catches: deadline taken at apply time instead of call time."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.01) as (_, handle, _task):
        handle.try_cancel_timer("x")  # queued: the sets queue behind it (with nothing queued they apply at the call)
        before = loop.time()
        # Due a second out: still pending after the block and the flush below, however loaded the machine.
        handle.try_set_timer("a", 1.0)
        await handle.set_timer("b", 1.0)
        after = loop.time()
        time.sleep(0.2)  # block the loop: the queued sets wait
        assert handle.pending_count() == 0  # not applied yet
        await handle.flush()
        for name in ("a", "b"):
            deadline = handle.deadline(name)
            assert deadline is not None
            assert before + 1.0 <= deadline <= after + 1.0
        received = await receive(handle, 2)
        assert [event.name for event, _ in received] == ["a", "b"]
        for event, at in received:
            assert before + 1.0 <= event.deadline <= after + 1.0
            assert at >= event.deadline


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_set_replaces_deadline_with_now_plus_duration_virtual() -> None:
    """A re-set replaces the deadline (later or earlier) with call time + d; one event only.
    catches: re-set ignored, re-set adding a second timer, re-set keeping the earlier deadline."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0) as (_, handle, _task):
        start = loop.time()
        await handle.set_timer("later", 1.0)
        await handle.set_timer("earlier", 10.0)
        await asyncio.sleep(0.5)
        await handle.set_timer("later", 3.0)  # due at start + 3.5 instead of start + 1
        await handle.set_timer("earlier", 1.0)  # due at start + 1.5 instead of start + 10
        received = await receive(handle, 2)
        assert [(event.name, event.deadline, at) for event, at in received] == [
            ("earlier", start + 1.5, start + 1.5),
            ("later", start + 3.5, start + 3.5),
        ]
        await asyncio.sleep(20)
        with pytest.raises(asyncio.QueueEmpty):
            handle.try_recv_event()


# -- 2. order, ties, never early ----------------------------------------------------------------------


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_order_by_deadline_ties_in_set_order_virtual() -> None:
    """Deadline order; equal deadlines in the order set (a re-set moves a name to the end of its tie).
    catches: hash/insertion order, unstable heap ties, re-set keeping its old sequence number."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.25) as (_, handle, _task):
        base = loop.time() + 10.0
        names = [f"t{i}" for i in range(40)]
        # deadlines: 4 distinct values, set in a scrambled order, many ties
        plan = [(name, base + (i * 7) % 4) for i, name in enumerate(names)]
        for name, when in plan:
            await handle.set_timer_at(name, when)
        await handle.set_timer_at("t0", base + 0)  # re-set to the same deadline: now last of its tie
        await handle.set_timers([("d1", base + 2 - loop.time()), ("d2", base + 2 - loop.time())])
        received = await receive(handle, 42)
        plan = [(name, when) for name, when in plan if name != "t0"] + [("t0", base + 0)]
        plan += [("d1", base + 2), ("d2", base + 2)]
        expected = sorted(plan, key=lambda pair: pair[1])  # stable: ties keep set order
        assert [(event.name, event.deadline) for event, _ in received] == expected
        for event, at in received:
            assert at >= event.deadline


async def test_order_and_never_early_real_time() -> None:
    """Real time, both loops: exact deadline order with ties in set order; each event received at or
    after its deadline. catches: early delivery (e.g. popping at the next tick instead of the last one)."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.01) as (_, handle, _task):
        base = loop.time() + 0.1
        offsets = [0.05, 0.0, 0.031, 0.0, 0.05, 0.017, 0.031, 0.0, 0.002]
        plan = [(f"n{i}", base + offset) for i, offset in enumerate(offsets)]
        for name, when in plan:
            handle.try_set_timer_at(name, when)
        received = await receive(handle, len(plan))
        assert [(event.name, event.deadline) for event, _ in received] == sorted(plan, key=lambda p: p[1])
        for event, at in received:
            assert at >= event.deadline
            assert at - event.deadline < LATE


# -- 3. the heartbeat grid --------------------------------------------------------------------------------


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_heartbeat_grid_exact_dyadic_virtual() -> None:
    """h = 1/64 from an origin of 0.375: every timer is received exactly at the first grid tick at or
    after its deadline (binary-exact values, so no rounding at all).
    catches: grid anchored at 0 instead of run() start; delivery at the deadline; delivery one tick late."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.375)
    heartbeat = 1 / 64
    async with running(heartbeat=heartbeat) as (manager, handle, _task):
        origin = loop.time()
        assert origin == 0.375 == manager._runner.origin
        offsets = [0.001, 1 / 64, 0.02, 3 / 64, 0.0469, 0.1, 0.5, 0.50001, 1.0]
        for i, offset in enumerate(offsets):
            handle.try_set_timer_at(f"n{i}", origin + offset)
        received = await receive(handle, len(offsets))
        assert [event.name for event, _ in received] == [f"n{i}" for i in range(len(offsets))]
        for event, at in received:
            assert at == first_tick(origin, heartbeat, event.deadline)
            assert at >= event.deadline


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_heartbeat_grid_centiseconds_virtual() -> None:
    """h = 0.01 from an origin of 0.0037: received at the first tick t0 + k*0.01 >= deadline (within one
    looptime microsecond, its clock's resolution), never early, and never more than h late.
    catches: grid anchored at 0 or at the last command; rounding the tick down (early delivery)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.0037)
    async with running(heartbeat=0.01) as (_, handle, _task):
        origin = loop.time()
        offsets = [0.0084, 0.0121, 0.0158, 0.05, 0.0999, 0.1, 0.2345]
        for i, offset in enumerate(offsets):
            await handle.set_timer(f"n{i}", offset)
        received = await receive(handle, len(offsets))
        assert [event.name for event, _ in received] == [f"n{i}" for i in range(len(offsets))]
        for event, at in received:
            tick = first_tick(origin, 0.01, event.deadline)
            assert tick >= event.deadline
            assert at == pytest.approx(tick, abs=LOOPTIME_TICK + 1e-9)
            assert at >= event.deadline
            assert at - event.deadline <= 0.01 + LOOPTIME_TICK


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_heartbeat_zero_delivers_at_deadline_virtual() -> None:
    """h = 0: each timer is received exactly at its own deadline.
    catches: a default grid applied when h = 0; division by a zero heartbeat."""
    asyncio.get_running_loop()
    await asyncio.sleep(0.0037)
    async with running(heartbeat=0) as (_, handle, _task):
        offsets = [0.0084, 0.0121, 0.0158, 0.05, 0.0999, 1.2345, 3600.0]
        for i, offset in enumerate(offsets):
            await handle.set_timer(f"n{i}", offset)
        received = await receive(handle, len(offsets), timeout=10_000)
        assert [event.name for event, _ in received] == [f"n{i}" for i in range(len(offsets))]
        for event, at in received:
            assert at == pytest.approx(event.deadline, abs=LOOPTIME_TICK)
            assert at >= event.deadline


async def test_heartbeat_grid_real_time() -> None:
    """Real time, both loops: received at or after the first grid tick at or after the deadline (so never
    early), and not much later. catches: delivery between ticks; early delivery."""
    loop = asyncio.get_running_loop()
    heartbeat = 0.05
    async with running(heartbeat=heartbeat) as (manager, handle, _task):
        origin = manager._runner.origin
        offsets = [0.011, 0.052, 0.09, 0.1234]
        for i, offset in enumerate(offsets):
            handle.try_set_timer(f"n{i}", offset)
        received = await receive(handle, len(offsets))
        assert [event.name for event, _ in received] == [f"n{i}" for i in range(len(offsets))]
        for event, at in received:
            assert at >= first_tick(origin, heartbeat, event.deadline) >= event.deadline
            assert at - event.deadline < heartbeat + LATE
    assert loop.time() > origin


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_timers_due_close_together_take_one_wakeup_virtual() -> None:
    """Five timers due within one heartbeat period are handled in one wake-up (one on_timer, one
    pop_due returning all five); with h = 0 each takes its own.
    catches: one loop timer per deadline regardless of the grid."""
    loop = asyncio.get_running_loop()
    heartbeat = 1 / 8
    for h, wakeups in ((heartbeat, 1), (0, 5)):
        await sleep_until_dyadic()
        manager, handle = TimerManager.new("grid", h, 64, 64)
        counts = spy_wakeups(manager)
        task = asyncio.create_task(manager.run())
        await asyncio.sleep(0)
        table = spy_engine(manager)
        origin = loop.time()
        # all in (origin + 1/8, origin + 2/8], binary- and microsecond-exact
        offsets = [9 / 64, 10 / 64, 11 / 64, 13 / 64, 16 / 64]
        for i, offset in enumerate(offsets):
            handle.try_set_timer_at(f"n{i}", origin + offset)
        await handle.flush()
        counts.clear()
        table.popped.clear()
        received = await receive(handle, 5)
        assert [event.name for event, _ in received] == [f"n{i}" for i in range(5)]
        assert counts["on_timer"] == wakeups
        assert table.popped == ([5] if h else [1] * 5)
        if h:
            assert [at for _, at in received] == [origin + 2 * heartbeat] * 5
        else:
            assert [at for _, at in received] == [origin + offset for offset in offsets]
        await handle.shutdown()
        await task


async def test_timers_due_close_together_take_one_wakeup_real_time() -> None:
    """Real time, both loops: timers due within one heartbeat tick come out of one engine.fire.
    catches: one wake-up per timer instead of per grid tick."""
    manager, handle = TimerManager.new("grid", 0.2, 64, 64)
    table = spy_engine(manager)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    origin = manager._runner.origin
    # all five fall in (origin + 0.2, origin + 0.4]: the tick origin + 0.4 takes them all
    for i, offset in enumerate([0.25, 0.26, 0.27, 0.28, 0.29]):
        handle.try_set_timer_at(f"n{i}", origin + offset)
    received = await receive(handle, 5)
    assert [event.name for event, _ in received] == [f"n{i}" for i in range(5)]
    assert [n for n in table.popped if n] == [5]
    for event, at in received:
        assert at >= origin + 0.4 >= event.deadline
    await handle.shutdown()
    await task


# -- 4. idle costs nothing; a wake-up costs in proportion to the timers due --------------------------------


async def _set_many(handle: TimerHandle, count: int, start: float, spread: float) -> None:
    await handle.set_timers((f"idle:{i}", start + (i % 997) * spread) for i in range(count))
    await handle.flush()


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_idle_with_100k_pending_no_callbacks_virtual() -> None:
    """100,000 timers pending, none due: across 500 s of loop time the manager runs no callback at all,
    and holds exactly one loop timer, at the grid tick of the earliest deadline.
    catches: a polling heartbeat (the Rust original wakes every tick); one loop timer per timer."""
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("idle", 0.01, 1024, 1024)
    counts = spy_wakeups(manager)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    origin = loop.time()
    await _set_many(handle, 100_000, 1000.0, 0.5)
    assert handle.pending_count() == 100_000
    counts.clear()
    await asyncio.sleep(500)
    assert counts == {}
    wakeup = manager._runner.wakeup
    assert isinstance(wakeup, LoopTimerWakeup)  # looptime's loop has its own clock: no timerfd
    scheduled: list[Any] = loop._scheduled  # type: ignore[attr-defined]  # asyncio.TimerHandle, read privately
    ours = [timer for timer in scheduled if not timer.cancelled() and timer._callback == wakeup.fire]
    assert len(ours) == 1
    earliest = handle.next_deadline()
    assert earliest is not None
    assert ours[0].when() == pytest.approx(first_tick(origin, 0.01, earliest), abs=LOOPTIME_TICK)
    await handle.shutdown()
    await task


async def test_idle_with_100k_pending_no_callbacks_real_time() -> None:
    """Real time, both loops: 100,000 timers pending far ahead, none due: 0.3 s pass with no callback.
    catches: polling every heartbeat while idle."""
    manager, handle = TimerManager.new("idle", 0.01, 1024, 1024)
    counts = spy_wakeups(manager)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    await _set_many(handle, 100_000, 1000.0, 0.5)
    counts.clear()
    await asyncio.sleep(0.3)
    assert counts == {}
    assert handle.pending_count() == 100_000
    await handle.shutdown()
    await task


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_wakeup_cost_follows_due_not_pending_virtual() -> None:
    """With 10 or 100,000 timers pending, a wake-up for 5 due timers makes the very same table calls:
    one fire that moves exactly the 5, and a bounded number of other calls, the same for both sizes.
    catches: scanning every timer per tick (the Rust original's O(n) check)."""
    loop = asyncio.get_running_loop()
    calls_per_size = {}
    for pending in (10, 100_000):
        await sleep_until_dyadic()
        manager, handle = TimerManager.new("cost", 1 / 8, 1024, 1024)
        counts = spy_wakeups(manager)
        task = asyncio.create_task(manager.run())
        await asyncio.sleep(0)
        table = spy_engine(manager)
        await _set_many(handle, pending, 1000.0, 0.5)
        await sleep_until_dyadic()
        base = loop.time()
        for i in range(1, 6):  # all in (base + 1, base + 1 + 1/8]: one grid tick
            handle.try_set_timer_at(f"due:{i}", base + 1.0 + i / 64)
        await handle.flush()
        table.calls.clear()
        table.popped.clear()
        counts.clear()
        await asyncio.sleep(2.0)
        assert counts["on_timer"] == 1
        assert table.popped == [5]
        calls_per_size[pending] = dict(table.calls)
        assert sum(table.calls.values()) <= 8
        events = handle.try_recv_events(10)
        assert [event.name for event in events] == [f"due:{i}" for i in range(1, 6)]
        assert handle.pending_count() == pending
        await handle.shutdown()
        await task
    assert calls_per_size[10] == calls_per_size[100_000]


async def test_wakeup_cost_follows_due_not_pending_real_time() -> None:
    """Real time, both loops: with 100,000 pending, the wake-up for 3 due timers moves exactly those 3 in
    one engine.fire call and makes a bounded number of engine calls. catches: O(pending) work per wake-up."""
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("cost", 0.01, 1024, 1024)
    table = spy_engine(manager)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    await _set_many(handle, 100_000, 1000.0, 0.5)
    # One instant (three readings could straddle a heartbeat tick: uvloop's clock steps), a second out: none falls
    # due in the flush's pass, before the counts are cleared, however loaded the machine.
    due = loop.time() + 1.0
    for i in range(3):
        handle.try_set_timer_at(f"due:{i}", due)
    await handle.flush()
    table.calls.clear()
    table.popped.clear()
    received = await receive(handle, 3)
    assert [event.name for event, _ in received] == ["due:0", "due:1", "due:2"]
    assert [n for n in table.popped if n] == [3]
    assert sum(table.calls.values()) <= 8 * max(1, len(table.popped))
    await handle.shutdown()
    await task
