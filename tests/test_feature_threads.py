"""Feature: ``handle.threadsafe()``: set and cancel timers from any thread. Real time (threads), on
every loop; the thread side runs in ``asyncio.to_thread`` / ``run_in_executor`` so the loop stays free."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from support import now, recv, running

from timer_manager import ManagerClosed, QueueFull, ThreadsafeHandle, TimerManager

pytestmark = pytest.mark.usefixtures("core")


async def test_threadsafe_set_and_cancel_from_another_thread() -> None:
    """A set from a thread fires with its payload, its deadline taken at the call; a cancel from a
    thread removes a timer. Catches: thread-side commands not reaching the manager, deadline taken
    when applied."""
    async with running(heartbeat=0.001) as (_, handle, _task):
        threadsafe = handle.threadsafe()
        assert isinstance(threadsafe, ThreadsafeHandle)
        await handle.set_timer("doomed", 60)

        def work() -> tuple[float, float]:
            start = time.monotonic()
            threadsafe.set_timer("a", 0.05, data="from a thread")
            threadsafe.cancel_timer("doomed")
            threadsafe.try_set_timer("b", 0.06)
            threadsafe.try_cancel_timer("nothing")
            return start, time.monotonic()

        t_before = now()
        await asyncio.to_thread(work)
        t_after = now()
        event = await recv(handle, 5)
        assert event.name == "a"
        assert event.data == "from a thread"
        assert t_before + 0.05 <= event.deadline <= t_after + 0.05
        assert (await recv(handle, 5)).name == "b"
        await handle.flush()
        assert "doomed" not in handle


async def test_blocking_calls_wait_for_room_and_time_out_with_queue_full() -> None:
    """command_buffer_size=1, manager not yet running: the loop's queue and the queue for other threads
    each hold one command; then the try_ forms raise QueueFull at once; a blocking set with timeout
    raises QueueFull after about the timeout and is withdrawn (never applied); a blocking set without
    timeout waits until the manager makes room, then completes. Catches: blocking calls not blocking,
    not timing out, or queuing after giving up."""
    manager, handle = TimerManager.new("room", 0.001, 1, 8)
    threadsafe = handle.threadsafe()
    handle.try_set_timer("first", 60)  # the loop queue's single place
    await asyncio.to_thread(threadsafe.try_set_timer, "from a thread", 60)  # the thread queue's single place
    with pytest.raises(QueueFull):
        handle.try_set_timer("x", 60)
    with pytest.raises(QueueFull):
        await asyncio.to_thread(threadsafe.try_set_timer, "x", 60)
    with pytest.raises(QueueFull):
        await asyncio.to_thread(threadsafe.try_cancel_timer, "first")

    def timed_out() -> float:
        start = time.monotonic()
        with pytest.raises(QueueFull):
            threadsafe.set_timer("withdrawn", 60, timeout=0.1)
        with pytest.raises(QueueFull):
            threadsafe.cancel_timer("first", timeout=0.05)
        return time.monotonic() - start

    waited = await asyncio.to_thread(timed_out)
    assert 0.14 <= waited < 5

    blocked = asyncio.ensure_future(asyncio.to_thread(threadsafe.set_timer, "second", 60))
    await asyncio.sleep(0.1)
    assert not blocked.done()
    task = asyncio.create_task(manager.run())
    await asyncio.wait_for(blocked, 5)
    await handle.flush()
    assert sorted(n for n in ("first", "from a thread", "second", "withdrawn", "x") if n in handle) == [
        "first",
        "from a thread",
        "second",
    ]
    await handle.shutdown()
    await task


async def test_threadsafe_calls_raise_manager_closed_once_the_manager_stopped() -> None:
    """After shutdown every thread-side call raises ManagerClosed (the blocking ones do not hang).
    Catches: commands accepted or threads blocked for ever after the manager stopped."""
    async with running(heartbeat=0.001) as (_, handle, _task):
        threadsafe = handle.threadsafe()
    calls: list[Callable[[], Any]] = [
        lambda: threadsafe.set_timer("a", 1),
        lambda: threadsafe.set_timer("a", 1, timeout=1),
        lambda: threadsafe.cancel_timer("a"),
        lambda: threadsafe.try_set_timer("a", 1),
        lambda: threadsafe.try_cancel_timer("a"),
    ]
    for call in calls:
        with pytest.raises(ManagerClosed):
            await asyncio.wait_for(asyncio.to_thread(call), 5)


async def test_order_is_kept_per_calling_thread() -> None:
    """4 threads x 1000 random set/cancel operations on their own 10 names each, through a command queue
    of 16 (so both blocking and try_ calls often meet a full queue); the final state is each thread's
    last operation per name, with the deadline of its last set. Catches: reordering within a thread
    (e.g. a try_ overtaking an earlier blocking call), lost or duplicated commands."""
    async with running(heartbeat=0.001, commands=16, events=16) as (_, handle, _task):
        loop = asyncio.get_running_loop()
        start = now()

        handles = [handle.threadsafe() for _ in range(4)]  # one each, taken on the loop's thread

        def worker(index: int) -> dict[str, int | None]:
            threadsafe = handles[index]
            rng = random.Random(index)
            last: dict[str, int | None] = {}
            for step in range(1000):
                name = f"t{index}-{rng.randrange(10)}"
                use_try = rng.random() < 0.5
                if rng.random() < 0.6:
                    duration = 1000 + 10 * step
                    if use_try:
                        try:
                            threadsafe.try_set_timer(name, duration)
                        except QueueFull:
                            threadsafe.set_timer(name, duration)
                    else:
                        threadsafe.set_timer(name, duration)
                    last[name] = step
                else:
                    if use_try:
                        try:
                            threadsafe.try_cancel_timer(name)
                        except QueueFull:
                            threadsafe.cancel_timer(name)
                    else:
                        threadsafe.cancel_timer(name)
                    last[name] = None
            return last

        results = await asyncio.wait_for(asyncio.gather(*(loop.run_in_executor(None, worker, i) for i in range(4))), 60)
        await asyncio.sleep(0.05)  # the last try_ commands reach the loop
        await handle.flush()
        elapsed = now() - start
        expected_pending = 0
        for last in results:
            for name, step in last.items():
                if step is None:
                    assert name not in handle, name
                else:
                    expected_pending += 1
                    deadline = handle.deadline(name)
                    assert deadline is not None, name
                    offset = deadline - start - (1000 + 10 * step)
                    assert -1e-6 <= offset <= elapsed + 1e-6, (name, step, offset)
        assert handle.pending_count() == expected_pending


async def test_plain_handle_from_another_thread_raises_in_debug_mode() -> None:
    """With loop.set_debug(True), the plain handle's commands called from another thread raise
    RuntimeError naming threadsafe(), and queue nothing; the thread-safe handle still works there.
    Catches: no thread check in debug mode, or a message that does not point to threadsafe()."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    try:
        async with running(heartbeat=0.001) as (_, handle, _task):
            calls: dict[str, Callable[[], Any]] = {
                "try_set_timer": lambda: handle.try_set_timer("a", 60),
                "try_set_timer_at": lambda: handle.try_set_timer_at("a", 60),
                "try_set_interval": lambda: handle.try_set_interval("a", 60),
                "try_set_timers": lambda: handle.try_set_timers([("a", 60)]),
                "try_cancel_timer": lambda: handle.try_cancel_timer("a"),
                "try_cancel_timers": lambda: handle.try_cancel_timers(["a"]),
                "try_cancel_all_timers": lambda: handle.try_cancel_all_timers(),
                "try_shutdown": lambda: handle.try_shutdown(),
            }

            threadsafe = handle.threadsafe()

            def call_all() -> dict[str, str]:
                outcome = {}
                for name, call in calls.items():
                    try:
                        call()
                    except RuntimeError as exc:
                        outcome[name] = str(exc)
                    else:
                        outcome[name] = "no error"
                threadsafe.set_timer("ok", 60)
                return outcome

            outcome = await asyncio.to_thread(call_all)
            assert all("threadsafe()" in message for message in outcome.values()), outcome
            await handle.flush()
            assert handle.pending_count() == 1
            assert "ok" in handle
    finally:
        loop.set_debug(False)


@pytest.mark.parametrize("method", ["try_recv_event", "try_recv_events"])
async def test_receiving_on_the_plain_handle_from_another_thread_raises_in_debug_mode(method: str) -> None:
    """Receiving is a call on the plain handle too (it changes the manager's state: re-arms intervals,
    frees event room): from another thread in debug mode it raises RuntimeError naming threadsafe(),
    and the event is not taken. Catches: receive calls skipping the debug-mode thread check."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    try:
        async with running(heartbeat=0.001) as (manager, handle, _task):
            await handle.set_timer("a", 0)
            while manager.stats().events_ready < 1:
                await asyncio.sleep(0.001)
            call = (
                (lambda: handle.try_recv_event()) if method == "try_recv_event" else (lambda: handle.try_recv_events(5))
            )
            with pytest.raises(RuntimeError, match=r"threadsafe\(\)"):
                await asyncio.to_thread(call)
            assert (await recv(handle, 5)).name == "a"
    finally:
        loop.set_debug(False)


async def _receive_one(handle: Any) -> Any:
    return await handle.recv_event()


async def _receive_some(handle: Any) -> Any:
    return await handle.recv_events(5)


@pytest.mark.parametrize("method", ["recv_event", "recv_events", "deadline", "pending_count", "next_deadline", "in"])
async def test_the_plain_handles_other_calls_from_another_thread_raise_in_debug_mode(method: str) -> None:
    """In debug mode "calling the plain handle from another thread raises RuntimeError naming threadsafe()"
    (the guide): the awaitable receives too (from a thread running a loop of its own), and the introspection
    calls, which read (``next_deadline`` even settles) the table the loop's thread changes. The event stays
    for the loop's thread. Catches: ``recv_event`` and ``recv_events`` taking a ready event from another
    thread without a word (only a receive that had to wait was refused), the introspection calls not
    checked."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    try:
        async with running(heartbeat=0.001) as (manager, handle, _task):
            await handle.set_timer("a", 0)
            await handle.set_timer("b", 60)
            while manager.stats().events_ready < 1:
                await asyncio.sleep(0.001)
            calls: dict[str, Callable[[], Any]] = {
                "recv_event": lambda: asyncio.run(_receive_one(handle)),
                "recv_events": lambda: asyncio.run(_receive_some(handle)),
                "deadline": lambda: handle.deadline("b"),
                "pending_count": lambda: handle.pending_count(),
                "next_deadline": lambda: handle.next_deadline(),
                "in": lambda: "b" in handle,
            }
            with pytest.raises(RuntimeError, match=r"threadsafe\(\)"):
                await asyncio.to_thread(calls[method])
            assert (await recv(handle, 5)).name == "a"
            assert handle.deadline("b") is not None and "b" in handle and handle.pending_count() == 1
    finally:
        loop.set_debug(False)


async def test_threadsafe_blocking_call_from_the_loop_thread_is_refused() -> None:
    """Calling a blocking thread-side method on the loop's own thread would deadlock; every one of them raises
    RuntimeError instead (as threadsafe.py documents), whatever the room, and queues nothing. Catches: a
    deadlocked loop; ``cancel_timer``, which skipped the check (it queued while there was room, and with the
    queue for other threads full it blocked the loop for good)."""
    async with running(heartbeat=0.001) as (_, handle, _task):
        threadsafe = handle.threadsafe()
        with pytest.raises(RuntimeError):
            threadsafe.set_timer("a", 1)
        blocking_calls: list[Callable[[], None]] = [
            lambda: threadsafe.set_timers([("a", 1)]),
            lambda: threadsafe.cancel_timer("a"),
            lambda: threadsafe.cancel_timers(["a"]),
            lambda: threadsafe.touch("a"),
            lambda: threadsafe.touch_many(["a"]),
        ]
        for blocking in blocking_calls:
            with pytest.raises(RuntimeError, match="loop's"):
                blocking()
        await handle.flush()
        assert handle.pending_count() == 0


async def test_threadsafe_non_blocking_calls_work_on_the_loops_thread_too() -> None:
    """The thread-safe handle's methods "may be called from any thread" (its docstring; only the blocking ones
    must not be called on the loop's thread, which they would block): its ``try_`` calls work on the loop's
    thread as well, applied in order with the plain handle's calls around them. Catches: every method,
    ``try_`` ones included, refusing the loop's thread with RuntimeError."""
    async with running(heartbeat=0.001, commands=8) as (_, handle, _task):
        threadsafe = handle.threadsafe()
        await handle.set_timer("before", 60)
        threadsafe.try_set_timer("a", 60, data="x")
        threadsafe.try_set_timers([("b", 60), ("c", 60)])
        threadsafe.try_cancel_timer("before")
        threadsafe.try_cancel_timers(["c"])
        handle.try_set_timer("a", 30)  # the plain handle's later call goes after the thread-safe handle's
        await handle.flush()
        assert sorted((name, handle.deadline(name) is not None) for name in ("a", "b", "before", "c")) == [
            ("a", True),
            ("b", True),
            ("before", False),
            ("c", False),
        ]
        deadline_a = handle.deadline("a")
        # Set for 30 s, not the thread-safe handle's 60 s. Not "<= 30": with uvloop's millisecond clock the loop time
        # may not move between the set and now(), and T + 30 - T can come out a rounding above 30.
        assert deadline_a is not None and deadline_a - now() < 45
        threadsafe.try_touch("b")
        threadsafe.try_touch_many(["b", "a"])
        await handle.flush()
        assert handle.pending_count() == 2
        for index in range(8):
            threadsafe.try_set_timer(f"fill{index}", 60)
        with pytest.raises(QueueFull):  # its queue is bounded as from any thread, and it never blocks
            threadsafe.try_set_timer("one more", 60)


async def test_a_threadsafe_try_batch_larger_than_the_queue_is_refused_as_on_the_loop() -> None:
    """``try_set_timers``: "if all fit now, else raise QueueFull and set none". A batch larger than the whole
    queue never fits: refused from a thread as on the loop's thread, even with the queue empty; the blocking
    form lets it in alone once the queue is empty. Catches: the queue for other threads taking any
    ``try_`` batch whenever it was empty, however large (the bound did not hold for one call)."""
    async with running(heartbeat=0.001, commands=4) as (manager, handle, _task):
        threadsafe = handle.threadsafe()
        items = [(f"t{index}", 60) for index in range(5)]
        names = [name for name, _ in items]
        with pytest.raises(QueueFull):
            handle.try_set_timers(items)
        for call, argument in (
            (threadsafe.try_set_timers, items),
            (threadsafe.try_cancel_timers, names),
            (threadsafe.try_touch_many, names),
        ):
            with pytest.raises(QueueFull):
                await asyncio.to_thread(call, argument)  # type: ignore[arg-type]
        await handle.flush()
        assert handle.pending_count() == 0
        assert manager.stats().command_queue_high_water <= 1  # the flush alone
        await asyncio.to_thread(threadsafe.set_timers, items)  # the blocking form: let in alone
        await handle.flush()
        assert handle.pending_count() == 5


def test_a_blocking_call_from_a_thread_given_the_ended_loop_threads_id_gets_manager_closed() -> None:
    """The manager ran and stopped on a loop in a thread that then ended; another thread, which the system gave that
    ended thread's id (ids are reused: the test sets it, so as not to depend on the reuse), makes a blocking call: it
    gets ManagerClosed, as any thread does. Catches: the check that refuses the loop's own thread compared thread ids,
    and refused it with RuntimeError ("on the loop's thread they would block the loop")."""
    handles: list[ThreadsafeHandle] = []

    async def run_and_stop() -> None:
        manager, handle = TimerManager.new("ended", 0.0, 4, 8)
        run = asyncio.ensure_future(manager.run())
        handles.append(handle.threadsafe())
        await handle.shutdown()
        await run

    loop_thread = threading.Thread(target=asyncio.run, args=(run_and_stop(),))
    loop_thread.start()
    loop_thread.join()
    threadsafe = handles[0]
    outcome: list[BaseException | None] = []

    def call() -> None:
        threadsafe._runner.thread_id = threading.get_ident()  # as the system may give it
        try:
            threadsafe.set_timer("a", 1, timeout=5)
            outcome.append(None)
        except BaseException as exc:  # recorded, asserted below
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    caller.join(60)
    assert len(outcome) == 1
    assert isinstance(outcome[0], ManagerClosed), outcome[0]
