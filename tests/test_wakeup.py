"""The manager's wake-up (``_wakeup.py``): a timerfd on Linux's stock asyncio loop, a ``call_at`` elsewhere.

The lateness it buys is measured in ``benches/compare.py`` (storm lateness at heartbeat 0 and 10 ms);
these tests pin what makes it possible and safe: which kind a manager gets, the exact instant the
kernel is armed for, stale readiness, closing, and the loop timer's back-off on coarse clocks.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import select
import sys
import time
from typing import Any

import pytest
from support import ASYNCIO_ONLY, recv, running

from timer_manager import _wakeup
from timer_manager._wakeup import LoopTimerWakeup, TimerFdWakeup

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux only")


def _stock_loop(loop: asyncio.AbstractEventLoop) -> bool:
    return getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time


def _remaining_reader() -> Any:
    """A function: timerfd -> nanoseconds left on it, as the kernel reports (``timerfd_gettime``)."""
    if hasattr(os, "timerfd_gettime_ns"):
        return lambda fd: int(os.timerfd_gettime_ns(fd)[0])
    gettime = ctypes.CDLL(None, use_errno=True).timerfd_gettime
    spec = _wakeup._Itimerspec()

    def remaining(fd: int) -> int:
        assert gettime(fd, ctypes.byref(spec)) == 0
        return int(spec.it_value.tv_sec * 1_000_000_000 + spec.it_value.tv_nsec)

    return remaining


def _kernel_remaining_ns(fd: int) -> int:
    return int(_remaining_reader()(fd))


@pytest.mark.usefixtures("core")
@LINUX
async def test_stock_loop_gets_a_timerfd_other_loops_a_loop_timer() -> None:
    """catches: the timerfd never used (the lateness gain lost), or used on a loop with another clock."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.0, name="wakeup", timer_slack=0) as (manager, handle, task):
        wakeup = manager._runner.wakeup
        if _stock_loop(loop):
            assert isinstance(wakeup, TimerFdWakeup)
        else:  # uvloop: its clock is libuv's, not CLOCK_MONOTONIC as Python reads it
            assert isinstance(wakeup, LoopTimerWakeup)
        await handle.shutdown()
        await task


@pytest.mark.usefixtures("core")
@LINUX
@ASYNCIO_ONLY
@pytest.mark.parametrize(
    ("heartbeat", "slack", "precise"),
    [(0.0, 0.002, False), (0.001, 0.002, False), (0.0, 0.0005, True), (0.0, 0.0, True), (0.01, 0.002, True)],
)
async def test_timerfd_only_where_the_slack_asks_for_precision(heartbeat: float, slack: float, precise: bool) -> None:
    """A slack of at least the loop timer's resolution (1 ms) and the heartbeat takes the loop's own timer;
    a finer slack, or a heartbeat that spaces the wake-ups more than the slack does, a timerfd.
    catches: the costly timerfd where the slack allows the loop timer, or the loop timer where the caller
    asked for sub-millisecond precision (or relies on exact heartbeat ticks)."""
    async with running(heartbeat=heartbeat, name="wakeup", timer_slack=slack) as (manager, handle, task):
        wakeup = manager._runner.wakeup
        assert isinstance(wakeup, TimerFdWakeup if precise else LoopTimerWakeup)
        await handle.shutdown()
        await task


@pytest.mark.usefixtures("core")
@LINUX
@ASYNCIO_ONLY
async def test_timerfd_is_armed_for_the_exact_instant() -> None:
    """The kernel holds the grid tick itself, to the nanosecond (rounded up), not a millisecond delay.
    catches: arming by a relative delay, or rounding the instant down (an early wake-up)."""
    loop = asyncio.get_running_loop()
    assert _stock_loop(loop)
    async with running(heartbeat=0.0, name="wakeup", timer_slack=0) as (manager, handle, task):
        wakeup = manager._runner.wakeup
        assert isinstance(wakeup, TimerFdWakeup)
        deadline = loop.time() + 5.123456789
        handle.try_set_timer_at("t", deadline)
        await handle.flush()
        assert wakeup.when == deadline
        expected_ns = int(deadline * 1e9) + 2  # ceil(deadline in ns) + 1, allowing for the float product
        # The kernel reports the time left when asked: the instant lies in [before, after] + remaining.
        # Ask until the window is narrow (a preemption in between only widens it).
        read_remaining = _remaining_reader()
        for _ in range(100):
            before = time.monotonic_ns()
            remaining = read_remaining(wakeup.fd)
            after = time.monotonic_ns()
            if after - before < 100_000:
                break
        assert after - before < 100_000
        low, high = before + remaining, after + remaining
        assert low - 2 <= expected_ns <= high + 2
        assert high >= deadline * 1e9  # never before the deadline
        await handle.shutdown()
        await task


@pytest.mark.usefixtures("core")
@LINUX
@ASYNCIO_ONLY
async def test_timerfd_is_disarmed_when_nothing_is_pending() -> None:
    """catches: a stale alarm left armed after the last timer is cancelled (a needless wake-up)."""
    loop = asyncio.get_running_loop()
    assert _stock_loop(loop)
    async with running(heartbeat=0.01, name="wakeup") as (manager, handle, task):
        wakeup = manager._runner.wakeup
        assert isinstance(wakeup, TimerFdWakeup)
        await handle.set_timer("t", 30.0)
        await handle.flush()
        assert _kernel_remaining_ns(wakeup.fd) > 0
        await handle.cancel_timer("t")
        await handle.flush()
        assert wakeup.when is None
        assert _kernel_remaining_ns(wakeup.fd) == 0
        await handle.shutdown()
        await task


@pytest.mark.usefixtures("core")
@LINUX
@ASYNCIO_ONLY
async def test_timerfd_closed_and_unwatched_after_stop() -> None:
    """catches: a descriptor leaked per manager, or left in the loop's selector."""
    loop = asyncio.get_running_loop()
    assert _stock_loop(loop)
    async with running(heartbeat=0.0, name="wakeup", timer_slack=0) as (manager, handle, task):
        wakeup = manager._runner.wakeup
        assert isinstance(wakeup, TimerFdWakeup)
        fd = wakeup.fd
        selector = loop._selector  # type: ignore[attr-defined]
        assert fd in selector.get_map()
        await handle.set_timer("t", 30.0)
        await handle.shutdown()
        await task
    assert wakeup.fd == -1
    assert fd not in selector.get_map()
    with pytest.raises(OSError):
        os.fstat(fd)


@LINUX
@ASYNCIO_ONLY
async def test_readiness_from_before_a_rearm_does_not_call_back() -> None:
    """An expiry that was overtaken by a re-arm (or a disarm) before its callback ran is ignored.
    catches: calling back for an instant that is no longer wanted (a spurious service pass)."""
    loop = asyncio.get_running_loop()
    calls = _wakeup._timerfd_calls()
    assert calls is not None
    assert _stock_loop(loop)
    fired: list[float] = []
    wakeup = TimerFdWakeup(loop, lambda: fired.append(time.monotonic()), calls)
    try:
        wakeup.arm(time.monotonic() - 1.0)  # already past: readable at once
        wakeup.fire()  # as if the loop ran the reader now
        assert len(fired) == 1
        wakeup.arm(time.monotonic() - 1.0)
        wakeup.arm(time.monotonic() + 60.0)  # overtaken before the loop got to it
        wakeup.fire()
        await asyncio.sleep(0.02)
        assert len(fired) == 1
        wakeup.arm(time.monotonic() - 1.0)
        wakeup.disarm()
        await asyncio.sleep(0.02)
        assert len(fired) == 1
        soon = time.monotonic() + 0.005
        wakeup.arm(soon)
        await asyncio.wait_for(_until(lambda: len(fired) == 2), 10)
        assert fired[1] >= soon
    finally:
        wakeup.close()


@LINUX
@ASYNCIO_ONLY
async def test_a_timerfd_wake_up_reads_nothing_and_leaves_the_descriptor_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wake-up is one system call: the expiry is reset by the re-arm or disarm that follows, never read.
    catches: a ``read`` per wake-up (a cold system call, 5 to 8 µs here), or an expiry left readable when
    the callback arms nothing (the loop would spin on it)."""
    loop = asyncio.get_running_loop()
    calls = _wakeup._timerfd_calls()
    assert calls is not None
    assert _stock_loop(loop)

    def no_read(fd: int, size: int) -> bytes:
        raise AssertionError("the timerfd was read")

    monkeypatch.setattr(os, "read", no_read)
    fired: list[float] = []
    wakeup = TimerFdWakeup(loop, lambda: fired.append(time.monotonic()), calls)
    try:
        wakeup.arm(time.monotonic() + 0.002)
        await asyncio.wait_for(_until(lambda: len(fired) == 1), 10)
        assert wakeup.when is None
        assert not select.select([wakeup.fd], [], [], 0)[0]  # disarmed, since the callback armed nothing
        await asyncio.sleep(0.02)
        assert len(fired) == 1
    finally:
        wakeup.close()


@LINUX
@ASYNCIO_ONLY
async def test_a_callback_that_raises_leaves_the_descriptor_unreadable() -> None:
    """catches: an expiry left readable after the callback raised (the loop would call back forever)."""
    loop = asyncio.get_running_loop()
    calls = _wakeup._timerfd_calls()
    assert calls is not None

    def fail() -> None:
        raise RuntimeError("boom")

    wakeup = TimerFdWakeup(loop, fail, calls)
    try:
        wakeup.arm(time.monotonic() - 1.0)
        assert select.select([wakeup.fd], [], [], 0)[0]
        with pytest.raises(RuntimeError, match="boom"):
            wakeup.fire()
        assert not select.select([wakeup.fd], [], [], 0)[0]
    finally:
        wakeup.close()


@LINUX
def test_the_compiled_core_arms_the_timerfd_in_c() -> None:
    """catches: arming through ctypes where the compiled core is in use (cold, 6 to 20 µs a call here)."""
    from timer_manager import _core

    if _core.CORE != "cython":
        pytest.skip("the compiled core is not in use")
    from timer_manager import _core_c

    calls = _wakeup._timerfd_calls()
    assert calls is not None
    assert calls.setter() is _core_c._timerfd_arm
    fd = calls.create()
    try:
        _core_c._timerfd_arm(fd, time.monotonic_ns() + 60 * 1_000_000_000)
        assert 0 < _kernel_remaining_ns(fd) <= 60 * 1_000_000_000
        _core_c._timerfd_arm(fd, 0)
        assert _kernel_remaining_ns(fd) == 0
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        _core_c._timerfd_arm(-1, 1)


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.001)


@pytest.mark.usefixtures("core")
async def test_no_timerfd_variable_gives_loop_timers_that_still_keep_the_contract(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``TIMER_MANAGER_NO_TIMERFD=1``: the manager wakes through ``call_at``; order and never-early hold.
    catches: the variable ignored, or the call_at path broken on the stock loop."""
    monkeypatch.setenv("TIMER_MANAGER_NO_TIMERFD", "1")
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0.002, name="wakeup") as (manager, handle, task):
        assert isinstance(manager._runner.wakeup, LoopTimerWakeup)
        base = loop.time() + 0.01
        offsets = [0.0031, 0.0005, 0.012, 0.0007, 0.02, 0.0062]
        for i, offset in enumerate(offsets):
            handle.try_set_timer_at(f"t{i}", base + offset)
        received = []
        for _ in offsets:
            event = await asyncio.wait_for(handle.recv_event(), 10)
            assert event is not None
            received.append((event.name, event.deadline, loop.time()))
        assert [name for name, _, _ in received] == [f"t{i}" for i in sorted(range(6), key=offsets.__getitem__)]
        assert all(at >= deadline for _, deadline, at in received)
        await handle.shutdown()
        await task


class _CoarseLoop:
    """Just enough of a loop for ``LoopTimerWakeup``: records call_at, runs nothing by itself."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def call_at(self, when: float, callback: Any) -> asyncio.TimerHandle:
        self.calls.append(when)
        return asyncio.TimerHandle(when, callback, (), self)  # type: ignore[arg-type]

    def _timer_handle_cancelled(self, handle: Any) -> None:
        pass

    def get_debug(self) -> bool:
        return False


def test_loop_timer_backs_off_on_early_wakeups() -> None:
    """A loop timer that runs before its instant is re-asked for twice as far past the early moment, then
    four times; a punctual run resets that.
    catches: spinning on uvloop's millisecond clock (thousands of wake-ups for a few timers)."""
    loop = _CoarseLoop()
    now = [9.9995]
    tick = 10.0
    called: list[float] = []
    wakeup = LoopTimerWakeup(loop, lambda: now[0], lambda: called.append(now[0]))  # type: ignore[arg-type]
    wakeup.arm(tick)
    assert loop.calls == [tick]
    wakeup.fire()  # 0.5 ms early
    assert loop.calls[-1] == pytest.approx(now[0] + 2 * 0.0005)
    wakeup.fire()  # still early, at the same moment
    assert loop.calls[-1] == pytest.approx(now[0] + 4 * 0.0005)
    assert wakeup.when == tick
    now[0] = 10.001
    wakeup.fire()  # punctual
    assert called == [10.001]
    assert wakeup.early_wakes == 0
    assert wakeup.when is None


@pytest.mark.parametrize(("resolution", "step"), [(None, 0.001), (1e-9, 1e-9)])
def test_an_early_loop_timer_does_not_call_back_and_waits_for_the_clock_to_step(
    resolution: float | None, step: float
) -> None:
    """A wake-up that runs before its instant does not call back: nothing can be due at that instant yet,
    and a manager's pass would only ask for it again. It asks again no sooner than the loop's clock can
    step (its ``_clock_resolution``; 1 ms without one, as uvloop's). Catches: on uvloop, a tick one float
    bit past a millisecond (a heartbeat grid's often is) ran a pass of the manager at every iteration of
    the loop until the clock stepped (157 early wake-ups a second in one run of the idle-server benchmark)."""
    loop = _CoarseLoop()
    if resolution is not None:
        loop._clock_resolution = resolution  # type: ignore[attr-defined]
    tick = 12345.678
    now = [math.nextafter(tick, 0.0)]  # the clock reads the millisecond; the tick is one bit past it
    called: list[float] = []
    wakeup = LoopTimerWakeup(loop, lambda: now[0], lambda: called.append(now[0]))  # type: ignore[arg-type]
    wakeup.arm(tick)
    wakeup.fire()
    assert called == []
    assert wakeup.when == tick
    assert loop.calls[-1] == now[0] + step
    now[0] = tick
    wakeup.fire()
    assert called == [tick]
    assert wakeup.when is None


@pytest.mark.parametrize("between", ["arm", "disarm"])
def test_loop_timer_back_off_starts_afresh_for_a_new_instant(between: str) -> None:
    """The back-off is for consecutive early wake-ups for one instant: after a re-arm (or a disarm and a
    later arm) the first early wake-up for the new instant is re-asked for twice as far past, not more.
    catches: early_wakes surviving arm() and disarm(), so that early wake-ups each followed by a re-arm
    (uvloop's coarse clock, with a manager re-armed for an earlier deadline) added up to 2**30 times the
    early gap: a timer delivered hours late."""
    loop = _CoarseLoop()
    now = [0.0]
    called: list[float] = []
    wakeup = LoopTimerWakeup(loop, lambda: now[0], lambda: called.append(now[0]))  # type: ignore[arg-type]
    tick = 1.0
    for _ in range(40):
        tick += 1.0
        wakeup.arm(tick)
        now[0] = tick - 0.0005
        wakeup.fire()  # 0.5 ms early
        if between == "disarm":
            wakeup.disarm()
    tick += 1.0
    wakeup.arm(tick)
    now[0] = tick - 0.0005
    wakeup.fire()  # 0.5 ms early, the first for this instant
    assert loop.calls[-1] == pytest.approx(now[0] + 2 * 0.0005)


@pytest.mark.usefixtures("core")
async def test_passes_that_leave_the_earliest_deadline_alone_keep_the_wake_up_and_a_lost_one_is_armed_again() -> None:
    """A pass skips the grid's arithmetic when neither the earliest deadline nor the last delivery changed since
    it last armed the wake-up, and the wake-up still holds that instant.
    catches: a pass re-arming the same instant (a cancel and a new loop timer each time); trusting the last
    arming after the wake-up was disarmed or came (a timer never delivered); keeping it when an earlier timer came."""
    async with running(heartbeat=0.01, name="arming") as (manager, handle, task):
        runner = manager._runner
        wakeup = runner.wakeup
        assert wakeup is not None
        handle.try_set_timer("far", 30.0)
        await handle.flush()
        armed = wakeup.when
        assert armed is not None
        arms: list[float] = []
        original_arm = wakeup.arm

        def counting_arm(when: float) -> None:
            arms.append(when)
            original_arm(when)

        wakeup.arm = counting_arm  # type: ignore[method-assign]
        for i in range(20):  # each flush is a pass for one command, its deadline later than "far"
            handle.try_set_timer(f"later{i}", 60.0)
            await handle.flush()
        assert arms == [] and wakeup.when == armed
        wakeup.disarm()  # as if it had come, or been replaced, with nothing else changed
        handle.try_set_timer("later0", 60.0)
        await handle.flush()
        assert arms == [armed] and wakeup.when == armed
        handle.try_set_timer("near", 0.05)
        await handle.flush()
        assert wakeup.when is not None and wakeup.when < armed
        event = await recv(handle, 5.0)
        assert event is not None and event.name == "near"
        await handle.shutdown()
        await task
