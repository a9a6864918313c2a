"""One test per way the cross-thread, cancellation and stopping paths once lost a command or hung a caller.

Each is named for the behaviour it holds the manager to; its docstring names the defect it catches.
The broad searches for this class of bug are ``test_cross_thread.py`` (threads and tasks at random)
and ``test_cancellation.py`` (every awaitable cancelled at each suspension point).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import ASYNCIO_ONLY

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
from timer_manager._protocol import Interval

HANG = 60.0


@pytest.fixture
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _in_own_loop_thread(scenario: Any) -> Any:
    """Run ``scenario()`` (a coroutine function) with asyncio.run in a thread of its own and return its
    result; fail, instead of hanging the test run, if that loop is stuck (a loop spinning in the
    manager cannot run a timeout of its own)."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            result.append(asyncio.run(scenario()))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), "the event loop hung"
    if errors:
        raise errors[0]
    return result[0]


# ---------------------------------------------------------------------- threads and the command queue


@pytest.mark.usefixtures("core")
def test_threads_filling_a_tiny_command_queue_never_lock_up_the_loop(fast_switching: None) -> None:
    """Defect 1: four threads mixing blocking and try_ sets on a command queue of 2, with loop-side callers
    waiting for room, hung the loop in an endless service pass. Every call must end and the manager stop."""

    async def scenario() -> tuple[int, int]:
        manager, handle = TimerManager.new("tiny", 0, 2, 2)
        run = asyncio.ensure_future(manager.run())
        threadsafe = handle.threadsafe()
        accepted = [0] * 4

        def work(index: int) -> None:
            for k in range(1500):
                try:
                    if k % 2:
                        threadsafe.set_timer(f"t{index}:{k}", 1000, timeout=1.0)
                    else:
                        threadsafe.try_set_timer(f"t{index}:{k}", 1000)
                except QueueFull:
                    continue
                accepted[index] += 1

        async def loop_side() -> int:
            done = 0
            for k in range(1500):
                await handle.set_timer(f"loop:{k}", 1000)
                done += 1
            return done

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        on_loop = await loop_side()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        await handle.flush()
        pending = handle.pending_count()
        await handle.shutdown()
        await run
        return pending, on_loop + sum(accepted)

    pending, accepted = _in_own_loop_thread(scenario)
    assert pending == accepted


@pytest.mark.usefixtures("core")
def test_every_accepted_threadsafe_set_is_applied_under_fast_thread_switching(fast_switching: None) -> None:
    """Defect 2: a thread took a queue place between a loop-side room check and the push, and the push
    dropped the command although the call returned normally (3 to 16 of 250k). Every accepted set is
    applied; every refused one is not."""

    async def scenario() -> tuple[set[str], set[str]]:
        manager, handle = TimerManager.new("loss", 0, 8, 8)
        run = asyncio.ensure_future(manager.run())
        threadsafe = handle.threadsafe()
        accepted: list[list[str]] = [[] for _ in range(4)]

        def work(index: int) -> None:
            for k in range(5000):
                name = f"t{index}:{k}"
                try:
                    threadsafe.try_set_timer(name, 1000)
                except QueueFull:
                    continue
                accepted[index].append(name)

        async def loop_side() -> list[str]:
            mine = []
            for k in range(5000):
                name = f"loop:{k}"
                try:
                    handle.try_set_timer(name, 1000)
                except QueueFull:
                    await handle.set_timer(name, 1000)
                mine.append(name)
                if k % 7 == 0:
                    await asyncio.sleep(0)
            return mine

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        mine = await loop_side()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        await handle.flush()
        expected = set(mine).union(*accepted)
        applied = {name for name in expected if name in handle}
        live = handle.pending_count()
        await handle.shutdown()
        await run
        assert live == len(expected)
        return expected, applied

    expected, applied = _in_own_loop_thread(scenario)
    assert applied == expected


@pytest.mark.usefixtures("core")
async def test_a_refused_threadsafe_timeout_keeps_no_max_timers_place() -> None:
    """Defect 5: threadsafe().set_timer(name, d, timeout=<negative, NaN or a str>) was refused but kept a
    max_timers place. The timeout is checked first; the single place stays free."""
    manager, handle = TimerManager.new("timeout", 0, 8, 8, max_timers=1)
    run = asyncio.ensure_future(manager.run())
    threadsafe = handle.threadsafe()
    for bad, error in ((-1.0, ValueError), (math.nan, ValueError), ("1", TypeError)):
        with pytest.raises(error):
            await asyncio.to_thread(threadsafe.set_timer, "x", 1000, timeout=bad)  # type: ignore[arg-type]
    await handle.set_timer("the one", 1000)
    await handle.flush()
    assert handle.pending_count() == 1
    await handle.shutdown()
    await run


@pytest.mark.usefixtures("core")
def test_a_blocked_threadsafe_call_gets_manager_closed_when_the_manager_stops_or_its_loop_closes() -> None:
    """Defect 7: a blocking threadsafe set_timer() without a timeout, called after the manager stopped on
    a loop that was stopped but not closed, blocked forever; so did a thread blocked on a manager whose
    loop then closed. Both get ManagerClosed."""
    loop = asyncio.new_event_loop()
    try:
        manager, handle = TimerManager.new("closed", 0, 1, 1)
        threadsafe = loop.run_until_complete(_threadsafe_of(handle))
        run = loop.create_task(manager.run())
        loop.run_until_complete(handle.shutdown())
        loop.run_until_complete(run)
        late: list[BaseException] = []

        def call_late() -> None:
            try:
                threadsafe.set_timer("late", 1)
            except BaseException as exc:
                late.append(exc)

        caller = threading.Thread(target=call_late, daemon=True)
        caller.start()
        caller.join(HANG / 2)
        assert not caller.is_alive(), "a blocking call on a stopped manager hung"
        assert len(late) == 1
        assert isinstance(late[0], ManagerClosed)
    finally:
        loop.close()

    loop = asyncio.new_event_loop()
    manager, handle = TimerManager.new("dying", 0, 1, 1)
    threadsafe = loop.run_until_complete(_threadsafe_of(handle))
    filler = threading.Thread(target=threadsafe.try_set_timer, args=("fills the thread queue", 1))
    filler.start()
    filler.join()
    outcome: list[BaseException] = []

    def blocked() -> None:
        try:
            threadsafe.set_timer("waits for room", 1)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=blocked, daemon=True)
    thread.start()
    time.sleep(0.1)
    assert thread.is_alive()
    loop.close()  # the manager never ran; nothing will ever make room
    thread.join(HANG / 2)
    assert not thread.is_alive(), "a thread stayed blocked on a closed loop"
    assert len(outcome) == 1
    assert isinstance(outcome[0], ManagerClosed)


async def _threadsafe_of(handle: Any) -> Any:
    return handle.threadsafe()


@pytest.mark.usefixtures("core")
@ASYNCIO_ONLY
async def test_threadsafe_calls_work_after_asyncio_debug_mode_is_switched_on() -> None:
    """Defect 13: with asyncio's debug mode switched on after run() started, a cross-thread call failed
    with asyncio's own error, and run() then never ended. Threads only hand commands over."""
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("debug", 0, 8, 8)
    run = asyncio.ensure_future(manager.run())
    await asyncio.sleep(0)
    threadsafe = handle.threadsafe()
    loop.set_debug(True)
    try:
        await asyncio.to_thread(threadsafe.set_timer, "from a thread", 0.0)
        await asyncio.to_thread(threadsafe.try_cancel_timer, "nothing")
        event = await asyncio.wait_for(handle.recv_event(), HANG)
        assert event is not None and event.name == "from a thread"
        await handle.shutdown()
        await asyncio.wait_for(run, HANG)
    finally:
        loop.set_debug(False)


@pytest.mark.usefixtures("core")
def test_the_plain_handle_from_another_thread_before_run_points_to_threadsafe() -> None:
    """Defect 14: a plain handle called from a thread with no running loop raised asyncio's "no running
    event loop", which does not say what to do. The message names threadsafe()."""
    _manager, handle = TimerManager.new("no loop", 0, 8, 8)
    with pytest.raises(RuntimeError, match=r"threadsafe\(\)"):
        handle.try_set_timer("x", 1)


@pytest.mark.usefixtures("core")
async def test_queue_full_names_the_configured_capacity() -> None:
    """Defect 15: QueueFull's message showed the room left after other threads' reservations ("full (1
    commands)" for 64). It names the configured size."""
    _manager, handle = TimerManager.new("full", 0, 64, 8)
    threadsafe = handle.threadsafe()
    for index in range(64):
        handle.try_set_timer(f"loop{index}", 1)
    for index in range(64):
        await asyncio.to_thread(threadsafe.try_set_timer, f"thread{index}", 1)
    with pytest.raises(QueueFull, match=r"\(64 commands\)"):
        handle.try_set_timer("one more", 1)
    with pytest.raises(QueueFull, match=r"\(64 commands\)"):
        await asyncio.to_thread(threadsafe.try_set_timer, "one more", 1)


# ---------------------------------------------------------------------- repeating timers


@pytest.mark.usefixtures("core")
@pytest.mark.looptime
@ASYNCIO_ONLY
async def test_a_repeating_timer_whose_event_waits_is_still_pending_and_counts_against_max_timers() -> None:
    """Defect 6: a repeating timer whose event waited to be received was outside the table, so new names
    were admitted past max_timers, and it was invisible to ``in``, deadline() and pending_count(). It
    stays pending (deadline: its ready event's) and holds its place."""
    manager, handle = TimerManager.new("parked", 0, 8, 8, max_timers=1)
    run = asyncio.ensure_future(manager.run())
    await handle.set_interval("tick", 1.0)
    await asyncio.sleep(1.5)  # fired; its event waits, unreceived
    assert manager.stats().events_ready == 1
    assert "tick" in handle
    assert handle.pending_count() == 1 == manager.stats().live
    assert handle.deadline("tick") == pytest.approx(1.0)
    assert handle.remaining("tick") == 0.0
    with pytest.raises(TimerLimitExceeded):
        handle.try_set_timer("another", 10)
    event = handle.try_recv_event()
    assert isinstance(event, TimerExpired)
    assert event.name == "tick"
    await handle.flush()
    assert handle.pending_count() == 1
    assert handle.deadline("tick") == pytest.approx(2.0)
    await handle.cancel_timer("tick")
    await handle.flush()
    assert handle.pending_count() == 0
    await handle.set_timer("another", 10)  # the place is free again
    await handle.shutdown()
    await run


@pytest.mark.usefixtures("core")
def test_a_period_below_the_clock_resolution_is_refused_and_the_next_tick_never_loops() -> None:
    """Defect 8: set_interval with a period below the loop clock's float resolution (1e-13 s after some
    uptime) hung the loop in "skip" mode. The call refuses it; the next tick is computed without a loop
    and is always later than the previous one."""
    uptime = 1e6  # seconds (11.6 days): 1e-13 is below a float's resolution here

    async def scenario() -> None:
        _manager, handle = TimerManager.new("tiny period", 0, 8, 8)
        loop = asyncio.get_running_loop()
        if loop.time() + 1e-13 == loop.time():
            with pytest.raises(ValueError, match="resolution"):
                await handle.set_interval("tiny", 1e-13)

    asyncio.run(scenario())
    assert uptime + 1e-13 == uptime
    for missed in ("skip", "burst", "delay"):
        interval = Interval(uptime, 1e-13, missed)
        following = interval.next_deadline(uptime, uptime)
        assert following > uptime
        assert interval.next_deadline(following, following) > following


# ---------------------------------------------------------------------- tokens


def test_a_raising_token_callback_does_not_stop_the_others_or_the_children(caplog: pytest.LogCaptureFixture) -> None:
    """Defect 9: one callback that raised stopped cancel() from running the others and from cancelling
    child tokens. Every callback runs, every child is cancelled, and the error is logged."""
    token = CancellationToken()
    child = token.child_token()
    ran: list[str] = []

    def bad() -> None:
        ran.append("bad")
        raise RuntimeError("callback failed")

    token.add_callback(bad)
    token.add_callback(lambda: ran.append("good"))
    with caplog.at_level(logging.ERROR, logger="timer_manager"):
        token.cancel()
    assert ran == ["bad", "good"]
    assert child.is_cancelled()
    assert "callback failed" in caplog.text


@pytest.mark.usefixtures("core")
async def test_a_raising_token_callback_does_not_keep_a_manager_running(caplog: pytest.LogCaptureFixture) -> None:
    """Defect 9, as a user meets it: a manager on the token stops although another callback raised."""
    token = CancellationToken()
    token.add_callback(lambda: 1 / 0)  # type: ignore[arg-type]  # a callback that raises
    manager, _handle = TimerManager.new("on token", 0, 8, 8, token)
    run = asyncio.ensure_future(manager.run())
    await asyncio.sleep(0)
    with caplog.at_level(logging.CRITICAL, logger="timer_manager"):
        token.cancel()
    await asyncio.wait_for(run, HANG)


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("when", ["before run", "while running", "applied at the call"])
async def test_commands_queued_at_a_token_stop_are_discarded(when: str) -> None:
    """Defect 10: contract 8 discards commands still queued at a token stop, but a set_timer(x, 0) queued
    before the stop (or before run() with the token already cancelled) was applied and delivered. A set applied
    at the call before the stop is a pending timer, which the stop discards too: due at once, it is never
    delivered."""
    token = CancellationToken()
    manager, handle = TimerManager.new("discard", 0, 8, 8, token)
    if when == "before run":
        handle.try_set_timer("queued", 0)
        token.cancel()
        run = asyncio.ensure_future(manager.run())
    else:
        run = asyncio.ensure_future(manager.run())
        await asyncio.sleep(0)
        if when == "while running":
            handle.try_cancel_timer("first")  # the set queues behind it
        handle.try_set_timer("queued", 0)  # with nothing queued: applied at the call, due at once
        token.cancel()  # on the loop's thread, before the manager's next pass
    await asyncio.wait_for(run, HANG)
    assert await handle.recv_event() is None
    assert manager.stats().set == (1 if when == "applied at the call" else 0)


async def test_a_token_cancelled_by_a_thread_while_the_loop_updates_applies_at_call_keeps_touches_discarded(
    core: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner recomputes whether a touch may be applied at the call (``update_applies_at_call``: read the flags,
    then write the engine's ``applies_at_call``) on the loop's thread, and the token's callback does the same from the
    thread that cancels it. A thread switch between the loop's read and its write (played here by running the
    cancel, in a thread of its own, from that write) left ``applies_at_call`` set with the token cancelled: a touch
    then went to the table at the call, withdrew a one-shot timer's waiting event and armed the timer, which the
    stop discarded: the event was lost, where a touch after the cancel does nothing (reliability row 32)."""
    token = CancellationToken()
    switch = threading.Event()  # set: the loop's next write of True lets the cancelling thread run first
    loop_thread = threading.get_ident()
    base: Any = core.Engine
    field = getattr(base, "applies_at_call", None)  # the compiled engine's own field; the pure one keeps an attribute

    class Switching(base):  # type: ignore[misc]
        @property
        def applies_at_call(self) -> bool:
            return bool(field.__get__(self) if field is not None else self.__dict__["_applies_at_call"])

        @applies_at_call.setter
        def applies_at_call(self, value: bool) -> None:
            if value and switch.is_set() and threading.get_ident() == loop_thread:
                switch.clear()
                thread = threading.Thread(target=token.cancel)
                thread.start()
                thread.join()
            if field is not None:
                field.__set__(self, value)
            else:
                self.__dict__["_applies_at_call"] = value

    monkeypatch.setattr(_backend, "Engine", Switching)
    manager, handle = TimerManager.new("switched", 0, 8, 8, token)
    run = asyncio.ensure_future(manager.run())
    await handle.set_timer("a", 0.0)
    while manager.stats().events_ready < 1:
        await asyncio.sleep(0.001)
    logger = logging.getLogger("timer_manager")
    handler = logging.NullHandler(logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # each command applied is logged, and applies_at_call recomputed after its record
    try:
        handle.try_set_timer("x", 1000.0)
        switch.set()
        # applies the set first: the token is cancelled as applies_at_call is written after its record
        handle.touch("a")
        assert token.is_cancelled()
        assert not switch.is_set()
        touched = handle.touch("a")
        await asyncio.wait_for(run, HANG)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert [event.name async for event in handle] == ["a"]
    assert touched is False


# ---------------------------------------------------------------------- starting and stopping


@pytest.mark.usefixtures("core")
async def test_open_whose_body_raises_before_the_manager_started_leaves_no_zombie() -> None:
    """Defect 11: TimerManager.open() whose body raised before the manager task had started left a
    manager that took commands it never applied, and recv_event() waited forever."""
    captured: list[Any] = []
    with pytest.raises(RuntimeError, match="body"):
        async with TimerManager.open("zombie") as handle:
            captured.append(handle)
            raise RuntimeError("body")
    handle = captured[0]
    with pytest.raises(ManagerClosed):
        handle.try_set_timer("x", 1)
    assert await asyncio.wait_for(handle.recv_event(), HANG) is None


@pytest.mark.usefixtures("core")
async def test_a_run_task_cancelled_before_its_first_step_stops_the_manager() -> None:
    """Defect 11: a run() task cancelled before its first step never entered run(), so the manager never
    stopped; its handle took commands and receivers waited forever."""
    manager, handle = TimerManager.new("never ran", 0, 8, 8)
    run = asyncio.ensure_future(manager.run())
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    with pytest.raises(ManagerClosed):
        handle.try_set_timer("x", 1)
    assert await asyncio.wait_for(handle.recv_event(), HANG) is None


@pytest.mark.usefixtures("core")
async def test_open_whose_exit_is_cancelled_still_stops_the_manager() -> None:
    """The block ends normally but its shutdown() waits for room and is cancelled: the manager is
    stopped anyway, so nothing outlives the block."""
    captured: list[Any] = []

    async def body() -> None:
        async with TimerManager.open("exit", command_buffer_size=1) as handle:
            captured.append(handle)
            handle.try_set_timer("fills the queue", 1000)

    task = asyncio.ensure_future(body())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ManagerClosed):
        captured[0].try_set_timer("x", 1)


@pytest.mark.parametrize("stop", ["token", "run-cancelled", "fails"])
async def test_open_whose_exit_waits_for_room_when_the_manager_stops_ends_as_the_manager_did(
    stop: str, core: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block ends normally with the command queue full, so the exit's shutdown() waits for room, and the manager
    stops meanwhile: by its token, open() ends normally, as it does when the token stopped the manager before the
    exit; its task cancelled, open() raises CancelledError, as ``await task`` does; failed, open() re-raises the
    failure. It raised the waiting shutdown()'s ManagerClosed instead (for a failure, hiding it)."""
    token = CancellationToken()
    captured: list[Any] = []
    base: Any = core.Engine

    class Failing(base):  # type: ignore[misc]
        fail = False

        def apply(self, log: Any = None) -> bool:
            if self.fail:
                raise ValueError("engine failed")
            return bool(super().apply(log))

    monkeypatch.setattr(_backend, "Engine", Failing)

    async def block() -> None:
        before = asyncio.all_tasks()
        async with TimerManager.open("exit", 0, command_buffer_size=1, cancel_token=token) as handle:
            captured.append(handle)
            handle.try_set_timer("fills the queue", 1000)
            # Run after the run() task's first step, while the exit's shutdown() waits for room.
            if stop == "token":
                asyncio.get_running_loop().call_soon(token.cancel)
            elif stop == "run-cancelled":
                (run,) = asyncio.all_tasks() - before
                asyncio.get_running_loop().call_soon(run.cancel)
            else:
                handle._runner.engine.fail = True  # type: ignore[attr-defined]  # the manager's first pass fails

    task = asyncio.ensure_future(block())
    if stop == "token":
        await asyncio.wait_for(task, HANG)
    elif stop == "run-cancelled":
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, HANG)
    else:
        with pytest.raises(ValueError, match="engine failed"):
            await asyncio.wait_for(task, HANG)
    with pytest.raises(ManagerClosed):
        captured[0].try_set_timer("x", 1)


# ---------------------------------------------------------------------- re-entrant logging


@pytest.mark.usefixtures("core")
async def test_a_debug_log_handler_that_sets_timers_does_not_kill_the_manager() -> None:
    """Defect 12: with the pure-Python table, a DEBUG handler on ``timer_manager`` that called
    try_set_timer killed the manager ("deque mutated during iteration") and discarded every timer."""
    manager, handle = TimerManager.new("reentrant", 0, 64, 64)
    logger = logging.getLogger("timer_manager")

    class Reentrant(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "set 'a" in record.getMessage() and "echo" not in record.getMessage():
                handle.try_set_timer(f"echo of {record.args[2]}", 1000)  # type: ignore[index]

    handler = Reentrant(logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        run = asyncio.ensure_future(manager.run())
        for index in range(3):
            await handle.set_timer(f"a{index}", 1000)
        await handle.flush()
        await handle.flush()
        assert manager._runner.state == "running"
        assert {"a0", "a1", "a2", "echo of a0", "echo of a1", "echo of a2"} <= {
            name for name in ("a0", "a1", "a2", "echo of a0", "echo of a1", "echo of a2") if name in handle
        }
        await handle.shutdown()
        await run
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _with_a_table_broken_by_boom(
    table_class: Any, monkeypatch: pytest.MonkeyPatch, name: str, capacity: int
) -> tuple[TimerManager, TimerHandle]:
    """A new manager (queues of ``capacity``) whose table raises RuntimeError at a set of "boom"."""

    class Broken(table_class):  # type: ignore[misc]
        def set_with_span(self, name: str, deadline: float, span: float, /) -> bool:
            if name == "boom":
                raise RuntimeError("table broke")
            return bool(super().set_with_span(name, deadline, span))

    with monkeypatch.context() as patch:  # this manager only
        patch.setattr(_backend, "TimerTable", Broken)
        return TimerManager.new(name, 0, capacity, capacity)


async def test_an_engine_step_that_raises_releases_every_waiter_and_run_reraises(
    table_class: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table whose set raises: run() raises that error, waiting senders get ManagerClosed, waiting
    receivers None, threads ManagerClosed; nothing hangs."""
    manager, handle = _with_a_table_broken_by_boom(table_class, monkeypatch, "broken", 1)
    threadsafe = handle.threadsafe()
    run = asyncio.ensure_future(manager.run())
    await asyncio.sleep(0)
    receiver = asyncio.ensure_future(handle.recv_event())
    # queued (a set by duration would be applied at the call)
    handle.try_set_timer_at("boom", asyncio.get_running_loop().time() + 1)
    sender = asyncio.ensure_future(handle.set_timer("waits", 1))
    await asyncio.to_thread(threadsafe.try_set_timer, "from a thread", 1)
    blocked = asyncio.ensure_future(asyncio.to_thread(threadsafe.set_timer, "blocked", 1))
    with pytest.raises(RuntimeError, match="table broke"):
        await asyncio.wait_for(run, HANG)
    assert await asyncio.wait_for(receiver, HANG) is None
    with pytest.raises(ManagerClosed):
        await asyncio.wait_for(sender, HANG)
    with pytest.raises(ManagerClosed):
        await asyncio.wait_for(blocked, HANG)


@pytest.mark.parametrize("form", ["try_set_timer", "set_timer"])
async def test_a_set_that_fails_at_the_call_stops_the_manager_as_failed_and_raises(
    table_class: Any, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """A table whose set raises, reached by a set applied at the call (nothing queued): the call raises that
    error, and the manager stops as failed, as after a pass (run() raises it, waiting receivers get None, later
    calls ManagerClosed). Catches: the error raised to the caller while the manager runs on with the table it
    broke, or swallowed."""
    manager, handle = _with_a_table_broken_by_boom(table_class, monkeypatch, "broken at the call", 4)
    run = asyncio.ensure_future(manager.run())
    await handle.flush()
    receiver = asyncio.ensure_future(handle.recv_event())
    await asyncio.sleep(0)
    await handle.set_timer("fine", 1)
    assert manager.stats().live == 1  # applied at the call
    with pytest.raises(RuntimeError, match="table broke"):
        if form == "try_set_timer":
            handle.try_set_timer("boom", 1)
        else:
            await handle.set_timer("boom", 1)
    with pytest.raises(RuntimeError, match="table broke"):
        await asyncio.wait_for(run, HANG)
    assert await asyncio.wait_for(receiver, HANG) is None
    with pytest.raises(ManagerClosed):
        handle.try_set_timer("later", 1)


@pytest.mark.usefixtures("core")
async def test_a_backend_that_fails_to_start_releases_every_waiter_and_run_reraises() -> None:
    """A backend whose start raises (a Redis client of a kind it cannot use, say): run() raises that
    error and every caller already waiting is released. The manager was left running with nothing
    behind it: receivers and senders that came before the run waited for ever."""

    class FailingStore(_backend.LocalStore):
        def start(self, runner: Any) -> None:
            raise AttributeError("no connection_pool")

    class FailingBackend(_backend.LocalBackend):
        def store(self, name: str, command_capacity: int, event_capacity: int, max_timers: int | None) -> Any:
            return FailingStore(command_capacity, event_capacity)

    manager, handle = TimerManager.new("fails to start", 0, 1, 1, backend=FailingBackend())
    handle.try_set_timer("first", 1)
    receiver = asyncio.ensure_future(handle.recv_event())
    sender = asyncio.ensure_future(handle.set_timer("waits for room", 1))
    await asyncio.sleep(0)
    with pytest.raises(AttributeError, match="no connection_pool"):
        await asyncio.wait_for(manager.run(), HANG)
    assert await asyncio.wait_for(receiver, HANG) is None
    with pytest.raises(ManagerClosed):
        await asyncio.wait_for(sender, HANG)
    with pytest.raises(ManagerClosed, match="could not start: AttributeError"):
        handle.try_set_timer("after", 1)
    with pytest.raises(AttributeError, match="no connection_pool"):
        async with TimerManager.open("fails to start too", 0, backend=FailingBackend()) as opened:
            assert await asyncio.wait_for(opened.recv_event(), HANG) is None


@pytest.mark.usefixtures("core")
async def test_a_call_from_a_thread_is_applied_before_a_later_call_on_the_loop() -> None:
    """Causal order across threads: a thread's call that returned before the loop's call is applied
    before it, even when the loop has not yet looked at what threads handed over (here the loop is
    blocked while the thread calls): a thread sets and the loop cancels, the timer ends cancelled; a
    thread sets and the loop re-sets, the loop's deadline stands."""
    manager, handle = TimerManager.new("order", 0, 8, 8)
    run = asyncio.ensure_future(manager.run())
    threadsafe = handle.threadsafe()

    def from_a_thread(name: str) -> None:  # blocks the loop until the thread's call returned
        thread = threading.Thread(target=threadsafe.try_set_timer, args=(name, 1000))
        thread.start()
        thread.join()

    for index in range(50):
        from_a_thread(f"x{index}")
        handle.try_cancel_timer(f"x{index}")
        from_a_thread(f"y{index}")
        handle.try_set_timer(f"y{index}", 5000)
        from_a_thread(f"z{index}")
        await handle.set_timer(f"z{index}", 5000)
        await handle.flush()
    assert handle.pending_count() == 100
    remaining = [handle.remaining(f"{kind}{index}") for kind in "yz" for index in range(50)]
    assert min(r for r in remaining if r is not None) > 4000
    await handle.shutdown()
    await run


@pytest.mark.usefixtures("core")
async def test_a_shutdown_never_overtakes_a_sender_woken_before_it() -> None:
    """A sender woken with room promised, not yet run, when shutdown() is called on a queue that has
    room for both: the SHUTDOWN must queue behind the sender's command, or the sender returns normally
    and its command is discarded. (The stress test found this: the shutdown's own await did not yield.)"""
    manager, handle = TimerManager.new("overtake", 0, 2, 8)
    run = asyncio.ensure_future(manager.run())
    await handle.flush()
    sender = asyncio.ensure_future(handle.set_timer("sender", 1000))
    handle.try_set_timers([("b1", 1000), ("b2", 1000)])  # full before the sender's first step
    await asyncio.sleep(0)  # the sender waits; the manager applies b1 and b2 and wakes it
    assert manager._runner.promised == 1
    await handle.shutdown()  # in this task: wrapped in a task of its own it would run after the sender
    await asyncio.wait_for(sender, HANG)
    await asyncio.wait_for(run, HANG)
    assert manager.stats().set == 3


@pytest.mark.usefixtures("core")
async def test_a_thread_command_after_a_cancelled_shutdown_is_applied() -> None:
    """A thread hands a command over (the loop is asked to come for it); before the loop takes it, a
    shutdown() that must wait for room closes the manager, taking the handed-over command ahead of its
    SHUTDOWN, and is then cancelled, so the manager reopens. A thread's later command must still be
    applied. Catches: the inbox still believing the loop was asked (its wake_pending left set by close()),
    so that no later thread command asks the loop to come: it waits, unapplied, for some unrelated pass."""
    manager, handle = TimerManager.new("reopened", 0, 1, 8)
    run = asyncio.ensure_future(manager.run())
    await handle.flush()
    threadsafe = handle.threadsafe()

    def put(name: str) -> None:
        thread = threading.Thread(target=threadsafe.try_set_timer, args=(name, 1000))
        thread.start()
        thread.join()

    put("first")  # handed over; the loop (blocked in this step) is asked to come, nothing else is scheduled
    shutdown = asyncio.ensure_future(handle.shutdown())
    await asyncio.sleep(0)  # shutdown() closes the manager, takes "first" (the one place), and waits for room
    assert manager._runner.closing
    shutdown.cancel()
    with pytest.raises(asyncio.CancelledError):
        await shutdown
    assert not manager._runner.closing  # reopened
    await asyncio.sleep(0.05)  # the manager's passes for what was queued are over
    assert "first" in handle

    await asyncio.to_thread(threadsafe.try_set_timer, "second", 0.0)  # due at once
    event = await asyncio.wait_for(handle.recv_event(), HANG)
    assert event is not None and event.name == "second"
    await handle.shutdown()
    await run
