"""The contract points that were checked in virtual time only (looptime, Python 3.11 and later), checked
again on the real clock, so that they also run on Python 3.10 and on uvloop.

Real time on a loaded machine: each test asserts orders, grids and "never early", and bounds computed
from the clock readings taken around a call, never a tight lateness bound. Durations are tens of
milliseconds; every wait has a generous timeout, so a broken manager fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from support import recv, running

from timer_manager import CancellationToken, ManagerClosed, QueueEmpty, TimerExpired, TimerHandle, TimerManager
from timer_manager._wakeup import LoopTimerWakeup, TimerFdWakeup

pytestmark = pytest.mark.usefixtures("core")

PERIOD = 0.05  # the repeating timers' period (s)
WAIT = 30.0  # s: a condition not met by then is a failure, not a slow machine
EPS = 1e-9  # s: tolerance for a deadline computed two ways


async def wait_until(manager: TimerManager, ready: int, waiting_episodes: int) -> None:
    """Poll until ``ready`` events sit in the event queue and ``waiting_episodes`` full-queue episodes
    have started (so due timers now wait for room); fail after ``WAIT`` seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + WAIT
    while True:
        stats = manager.stats()
        if stats.events_ready == ready and stats.waiting_for_room == waiting_episodes:
            return
        assert loop.time() < give_up, f"stuck at {stats}"
        await asyncio.sleep(0.005)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "timer_manager" and r.levelno == logging.WARNING]


def on_grid(deadline: float, origin: float, period: float) -> bool:
    """Whether ``deadline`` is ``origin + k * period`` for a whole k >= 0 (to a microsecond)."""
    steps = (deadline - origin) / period
    return steps > -1e-6 and abs(steps - round(steps)) < 1e-6


async def slow_first_receipt(handle: TimerHandle, missed: str) -> tuple[TimerExpired, float, float]:
    """Set a repeating timer of ``PERIOD`` with the ``missed`` policy, sleep through several ticks, then
    take what waits with one synchronous call. Return its one event and the loop times just before and
    after that call (the moment the manager saw the event received lies between them).

    Asserts on the way: the first deadline is the call time + PERIOD, exactly one event waits however
    many ticks were missed, and it is not received before its deadline."""
    loop = asyncio.get_running_loop()
    called = loop.time()
    await handle.set_interval("i", PERIOD, missed=missed)
    returned = loop.time()
    await asyncio.sleep(3.5 * PERIOD)  # ticks at +1, +2 and +3 periods pass unreceived
    before = loop.time()
    events = handle.try_recv_events(10)
    after = loop.time()
    assert len(events) == 1, events  # never more than one event waiting
    first = events[0]
    assert first.name == "i"
    assert called + PERIOD - EPS <= first.deadline <= returned + PERIOD + EPS
    assert before >= first.deadline
    # At least two ticks were missed (the sleep may only overrun), so the policies differ below.
    assert before >= first.deadline + 2.5 * PERIOD - EPS
    return first, before, after


# -- 1. a set replaces the deadline with call time + duration ------------------------------------------


async def test_reset_replaces_the_deadline_with_call_time_plus_duration_real_time() -> None:
    """A re-set of a pending name moves its deadline earlier or later, to the re-set's call time + d; one
    event per name, at its new deadline, never before it. Catches: a re-set ignored, a re-set adding a
    second timer, a re-set keeping the earlier deadline (or the earlier of both), or a deadline taken
    when the manager applies the command."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0) as (_, handle, _task):
        await handle.set_timer("earlier", 10.0)
        await handle.set_timer("later", 0.02)
        called = loop.time()
        await handle.set_timer("earlier", 0.06)
        await handle.set_timer("later", 0.12)
        returned = loop.time()
        received = []
        for _ in range(2):
            event = await recv(handle, WAIT)
            assert isinstance(event, TimerExpired)
            received.append((event, loop.time()))
        assert [event.name for event, _ in received] == ["earlier", "later"]
        durations = {"earlier": 0.06, "later": 0.12}
        for event, at in received:
            duration = durations[event.name]
            assert called + duration - EPS <= event.deadline <= returned + duration + EPS
            assert at >= event.deadline
        await asyncio.sleep(0.05)
        assert handle.try_recv_events(10) == []  # no event for either earlier deadline
        assert handle.pending_count() == 0


# -- 3. with h = 0, a timer is delivered at its deadline -------------------------------------------------


async def test_heartbeat_zero_wakes_for_the_earliest_deadline_itself_real_time() -> None:
    """With h = 0 the manager's one wake-up is armed for the earliest deadline itself, and follows it
    when an earlier timer is set or cancelled; the event carries the deadline as set, received at or
    after it. Catches: a default grid applied when h = 0 (the wake-up rounded to a tick), a wake-up
    left at a cancelled timer's deadline, one per timer instead of the earliest."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0) as (manager, handle, _task):
        wakeup = manager._runner.wakeup
        assert isinstance(wakeup, (LoopTimerWakeup, TimerFdWakeup))  # either kind: it reports ``when``
        far = loop.time() + 5.123456789
        near = loop.time() + 3.3210987
        await handle.set_timer_at("far", far)
        await handle.flush()
        assert wakeup.when == far
        await handle.set_timer_at("near", near)
        await handle.flush()
        assert wakeup.when == near
        await handle.cancel_timer("near")
        await handle.flush()
        assert wakeup.when == far
        soon = loop.time() + 1.0437  # far enough not to fall due before the flush below, however loaded the machine
        await handle.set_timer_at("soon", soon)
        await handle.flush()
        assert wakeup.when == soon
        event = await recv(handle, WAIT)
        assert event == TimerExpired("soon", soon)
        assert loop.time() >= soon
        await handle.flush()
        assert wakeup.when == far


# -- 5. a full event queue: nothing lost, commands still applied, one WARNING per episode ---------------


async def test_commands_applied_while_the_event_queue_is_full_real_time(caplog: pytest.LogCaptureFixture) -> None:
    """Event queue of 2, six timers due at once: two events wait in the queue, four timers wait for room.
    Meanwhile a cancel of a waiting timer, a re-set of another and a new set are applied (flush()
    returns while nobody receives); then everything comes out in deadline order, ties in set order, the
    cancelled one never, the re-set one at its new deadline; one WARNING. Catches: commands stalled
    behind a full event queue (flush would time out), a waiting timer delivered after its cancel or at
    its old deadline, drops or reordering under back-pressure."""
    caplog.set_level(logging.INFO, logger="timer_manager")
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0, events=2) as (manager, handle, _task):
        base = loop.time() + 0.02
        for name in "abcdef":
            handle.try_set_timer_at(name, base)
        await wait_until(manager, ready=2, waiting_episodes=1)
        await handle.cancel_timer("d")
        called = loop.time()
        await handle.set_timer("e", 0.1)
        handle.try_set_timer_at("g", base)
        await asyncio.wait_for(handle.flush(), WAIT)
        assert manager.stats().events_ready == 2  # nothing was received: the queue stayed full
        assert "d" not in handle
        new_deadline = handle.deadline("e")
        assert new_deadline is not None and new_deadline >= called + 0.1 - EPS
        received = []
        for _ in range(6):
            event = await recv(handle, WAIT)
            assert isinstance(event, TimerExpired)
            assert loop.time() >= event.deadline
            received.append(event)
        assert [event.name for event in received] == ["a", "b", "c", "f", "g", "e"]
        assert [event.deadline for event in received] == [base] * 5 + [new_deadline]
        await asyncio.sleep(0.05)
        assert handle.try_recv_events(10) == []
        assert len(warnings_of(caplog)) == 1


async def test_one_warning_per_full_queue_episode_real_time(caplog: pytest.LogCaptureFixture) -> None:
    """Two separate episodes of a full event queue (size 1, three timers due each time) log exactly two
    WARNINGs, one as each starts, naming the manager; a queue that stays full logs nothing more.
    Catches: a WARNING on every wake-up or every waiting timer while full, or only the first time ever."""
    caplog.set_level(logging.INFO, logger="timer_manager")
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0, events=1, name="queues") as (manager, handle, _task):
        for episode in (1, 2):
            base = loop.time() + 0.02
            for i in range(3):
                await handle.set_timer_at(f"e{episode}:{i}", base + i * 0.001)
            await wait_until(manager, ready=1, waiting_episodes=episode)
            await asyncio.sleep(0.05)  # still full: no further WARNING
            assert len(warnings_of(caplog)) == episode
            names = []
            for _ in range(3):
                event = await recv(handle, WAIT)
                assert isinstance(event, TimerExpired)
                names.append(event.name)
            assert names == [f"e{episode}:{i}" for i in range(3)]
            await asyncio.sleep(0.02)
        records = warnings_of(caplog)
        assert len(records) == 2
        assert all("'queues'" in record.getMessage() for record in records)
        assert manager.stats().waiting_for_room == 2


# -- No stale events: a retracted event frees its place ---------------------------------------------------


async def test_retracted_event_frees_its_place_in_a_full_event_queue_real_time() -> None:
    """Event queue of 1: "a"'s event fills it and "b", due, waits for room; a cancel of "a" retracts its
    event and "b" takes the freed place as soon as the cancel is applied. Catches: a retraction that
    leaves its place taken ("b" would wait for ever), a stale "a" delivered, the retraction not counted."""
    async with running(heartbeat=0.0, events=1) as (manager, handle, _task):
        await handle.set_timer("a", 0.0)
        await handle.set_timer("b", 0.01)
        await wait_until(manager, ready=1, waiting_episodes=1)
        assert "b" in handle  # due, still pending: waiting for room
        await handle.cancel_timer("a")
        await handle.flush()
        events = handle.try_recv_events(10)
        assert [event.name for event in events] == ["b"]
        with pytest.raises(QueueEmpty):
            handle.try_recv_event()
        stats = manager.stats()
        assert (stats.retracted, stats.live, stats.fired) == (1, 0, 2)


# -- flush() never hangs when the manager stops ------------------------------------------------------------


async def test_flush_queued_when_the_token_stops_the_manager_is_released() -> None:
    """A flush() sent before run() (so still waiting for its marker to be applied) is released when the
    token stops the manager: it returns or raises ManagerClosed, within the timeout; a flush after the
    stop raises ManagerClosed at once. Catches: a stopped manager leaving the flush's future unresolved
    (the caller would hang for ever)."""
    token = CancellationToken()
    manager, handle = TimerManager.new("flusher", 0.0, 8, 8, token)
    await handle.set_timer("a", 0.01)
    flushing = asyncio.create_task(handle.flush())
    await asyncio.sleep(0.02)
    assert not flushing.done()  # not applied: the manager is not running
    token.cancel()
    await asyncio.wait_for(manager.run(), WAIT)
    try:
        await asyncio.wait_for(flushing, WAIT)
    except ManagerClosed:
        pass
    with pytest.raises(ManagerClosed):
        await handle.flush()
    assert await recv(handle, WAIT) is None  # the queued set was discarded with the commands


# -- Repeating timers: the three missed-tick policies, with a slow consumer -------------------------------


async def test_interval_skip_policy_with_a_slow_consumer_real_time() -> None:
    """The "skip" policy: a consumer late by several periods finds one event, for the first tick; the next deadline
    is the first point of the grid (first deadline + k * period) after the moment it was received.
    Catches: missed ticks queued or delivered one by one, a next tick off the grid or in the past,
    re-arming from the fire time instead of the receipt."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0) as (_, handle, _task):
        first, before, after = await slow_first_receipt(handle, "skip")
        event = await recv(handle, WAIT)
        assert isinstance(event, TimerExpired)
        assert loop.time() >= event.deadline
        assert on_grid(event.deadline, first.deadline, PERIOD)
        assert event.deadline > before - EPS  # after the receipt: the missed ticks are skipped
        assert event.deadline - PERIOD <= after + EPS  # the first such grid point, not a later one
        await handle.cancel_timer("i")


async def test_interval_burst_policy_with_a_slow_consumer_real_time() -> None:
    """The "burst" policy: a consumer late by several periods gets every missed tick, one after another, each one
    period after the previous (first deadline + 1, 2, 3 periods), each received at or after its deadline,
    and one event waiting at a time. Catches: missed ticks skipped, re-arming from the receive time,
    several events queued at once."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0) as (manager, handle, _task):
        first, _, _ = await slow_first_receipt(handle, "burst")
        previous = first.deadline
        for _ in range(3):
            event = await recv(handle, WAIT)
            assert isinstance(event, TimerExpired)
            assert loop.time() >= event.deadline
            assert event.deadline == pytest.approx(previous + PERIOD, abs=EPS)
            assert manager.stats().events_ready <= 1  # the next tick waits for this one's receipt
            previous = event.deadline
        await handle.cancel_timer("i")


async def test_interval_delay_policy_with_a_slow_consumer_real_time() -> None:
    """The "delay" policy: a consumer late by several periods finds one event; the next deadline is one period after
    the moment it was received, and the grid moves with it (each later tick at least a period after the
    previous one). Catches: "skip" or "burst" behaviour under "delay", a grid kept from the first tick."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0) as (_, handle, _task):
        _, before, after = await slow_first_receipt(handle, "delay")
        event = await recv(handle, WAIT)
        assert isinstance(event, TimerExpired)
        assert loop.time() >= event.deadline
        assert before + PERIOD - EPS <= event.deadline <= after + PERIOD + EPS
        previous = event.deadline
        for _ in range(2):
            event = await recv(handle, WAIT)
            assert isinstance(event, TimerExpired)
            assert loop.time() >= event.deadline
            assert event.deadline >= previous + PERIOD - EPS
            previous = event.deadline
        await handle.cancel_timer("i")
