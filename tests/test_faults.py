"""Faults around the manager: consumers that fail, run() cancelled with callers waiting, a token
cancelled from the manager's own logging, a closed event loop, a second run(), the plain handle used
from another thread, and Ctrl-C during run().

Virtual-time tests use looptime on asyncio's loop; the rest run on every loop (conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ASYNCIO_ONLY, Core

from timer_manager import CancellationToken, ManagerClosed, TimerExpired, TimerManager

pytestmark = pytest.mark.usefixtures("core")

ROOT = Path(__file__).absolute().parent.parent


async def _start(*args: Any, **kwargs: Any) -> tuple[TimerManager, Any, asyncio.Task[None]]:
    manager, handle = TimerManager.new(*args, **kwargs)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    return manager, handle, task


# ---------------------------------------------------------------------- consumers that fail


@pytest.mark.looptime
@ASYNCIO_ONLY
async def test_consumer_raising_or_cancelled_mid_stream_loses_nothing() -> None:
    """A consumer that raises, one cancelled while waiting, one cancelled just after it was woken:
    the next consumer receives every remaining event, in order, exactly once."""
    manager, handle, task = await _start("faults", 0.25, 8, 3)
    names = [f"t{i:02d}" for i in range(30)]
    for i, name in enumerate(names):
        await handle.set_timer(name, 1.0 + (i // 3) * 0.5)  # three per deadline, tied in set order
    received: list[TimerExpired] = []

    async def consumer(count: int) -> None:
        for _ in range(count):
            event = await handle.recv_event()
            assert event is not None
            received.append(event)
        raise RuntimeError("consumer crashed")

    crashing = asyncio.create_task(consumer(6))
    with pytest.raises(RuntimeError, match="consumer crashed"):
        await crashing
    assert [e.name for e in received] == names[:6]
    assert asyncio.get_running_loop().time() == 1.5

    # Cancelled while waiting for an event (nothing is due now).
    waiting = asyncio.create_task(handle.recv_event())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    # Cancelled after the manager woke it but before it ran: the wake-up must be passed on.
    woken = asyncio.create_task(handle.recv_event())
    await asyncio.sleep(0)
    handle.try_set_timer("now", 0.0)
    await asyncio.sleep(0)  # the manager applies the set and wakes `woken`
    woken.cancel()
    with pytest.raises(asyncio.CancelledError):
        await woken
    second = asyncio.create_task(handle.recv_event())
    event = await asyncio.wait_for(second, 0.5)
    assert event is not None
    assert event.name == "now"
    received.append(event)

    rest: list[TimerExpired] = []
    while len(received) + len(rest) < len(names) + 1:
        event = await handle.recv_event()
        assert event is not None
        assert asyncio.get_running_loop().time() >= event.deadline
        rest.append(event)
    got = received + rest
    assert [e.name for e in got] == [*names[:6], "now", *names[6:]]
    assert [e.deadline for e in got] == sorted(e.deadline for e in got)
    await handle.shutdown()
    await task
    assert await handle.recv_event() is None
    assert manager.stats().fired == len(names) + 1


@pytest.mark.looptime
@ASYNCIO_ONLY
async def test_many_consumers_cancelled_at_random_points_lose_nothing() -> None:
    """Consumers are cancelled over and over at every await point of a busy stream."""
    _manager, handle, task = await _start("faults", 0, 4, 2)
    total = 200
    for i in range(total):
        await handle.set_timer(f"n{i:03d}", i * 0.01)
    received: list[str] = []

    async def consumer() -> None:
        while True:
            events = await handle.recv_events(3)
            if not events:
                return
            received.extend(e.name for e in events)

    round_ = 0
    while len(received) < total and round_ < 5000:
        round_ += 1
        current = asyncio.create_task(consumer())
        for _ in range(round_ % 4):
            await asyncio.sleep(0)
        await asyncio.sleep(0.003)
        current.cancel()
        await asyncio.gather(current, return_exceptions=True)
    assert received == [f"n{i:03d}" for i in range(total)]
    await handle.shutdown()
    await task


# ---------------------------------------------------------------------- run() cancelled with waiters


@pytest.mark.looptime
@ASYNCIO_ONLY
async def test_run_cancelled_releases_senders_and_receivers() -> None:
    """Senders waiting on a full command queue get ManagerClosed, receivers waiting on an empty
    event queue get None (or [] / StopAsyncIteration), run() re-raises CancelledError; nothing hangs."""
    manager, handle, task = await _start("faults", 0.01, 2, 2)
    await handle.set_timer("far", 3600.0)
    await handle.flush()

    receivers = [asyncio.create_task(handle.recv_event()) for _ in range(3)]
    many = asyncio.create_task(handle.recv_events(10))

    async def iterate() -> list[Any]:
        return [event async for event in handle]

    iterating = asyncio.create_task(iterate())
    await asyncio.sleep(0)

    async def fill_then_set() -> None:
        # Fill the command queue without yielding (cancels: a set with nothing queued is applied at the call),
        # then wait for room behind it.
        handle.try_cancel_timer("a")
        handle.try_cancel_timer("b")
        await handle.set_timer("c", 10.0)

    senders = [
        asyncio.create_task(fill_then_set()),
        asyncio.create_task(handle.set_timers([("d", 1.0), ("e", 1.0), ("f", 1.0)])),
        asyncio.create_task(handle.cancel_timer("a")),
        asyncio.create_task(handle.flush()),
        asyncio.create_task(handle.shutdown()),
    ]
    # The senders run (and wait for room) before the manager gets to apply anything; then run() is
    # cancelled with all of them waiting.
    task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*senders, return_exceptions=True), 1.0)
    assert all(isinstance(result, ManagerClosed) for result in results), results
    assert await asyncio.wait_for(asyncio.gather(*receivers), 1.0) == [None, None, None]
    assert await asyncio.wait_for(many, 1.0) == []
    assert await asyncio.wait_for(iterating, 1.0) == []
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ManagerClosed):
        handle.try_set_timer("late", 1.0)
    with pytest.raises(ManagerClosed):
        await handle.set_timer("late", 1.0)
    with pytest.raises(ManagerClosed):
        handle.try_recv_event()
    assert manager.stats().live == 0


@pytest.mark.looptime
@ASYNCIO_ONLY
async def test_token_cancel_releases_senders_and_receivers() -> None:
    token = CancellationToken()
    _manager, handle, task = await _start("faults", 0.01, 1, 1, token)
    receiver = asyncio.create_task(handle.recv_event())
    await asyncio.sleep(0)

    async def fill_then_set() -> None:
        handle.try_cancel_timer("a")  # a command that waits, as a set with nothing queued would not
        await handle.set_timer("b", 1.0)

    sender = asyncio.create_task(fill_then_set())
    token.cancel()  # the manager stops after the sender has started waiting
    assert isinstance(await asyncio.wait_for(asyncio.gather(sender, return_exceptions=True), 1.0), list)
    assert isinstance(sender.exception(), ManagerClosed)
    assert await asyncio.wait_for(receiver, 1.0) is None
    assert await asyncio.wait_for(task, 1.0) is None  # type: ignore[func-returns-value]


# ---------------------------------------------------------------------- the token from a log handler


class _CancelOnRecord(logging.Handler):
    def __init__(self, token: CancellationToken, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.token = token
        self.needle = needle
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.seen.append(message)
        if self.needle in message:
            self.token.cancel()


@contextlib.contextmanager
def _handling_debug_records(handler: logging.Handler) -> Iterator[None]:
    """The library's logger at DEBUG, with ``handler`` added, for the block."""
    logger = logging.getLogger("timer_manager")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def _start_with_an_event_waiting(
    name: str, token: CancellationToken
) -> tuple[TimerManager, Any, asyncio.Task[None]]:
    """A running manager whose one-shot timer ``a`` has fired and waits to be received."""
    manager, handle, task = await _start(name, 0, 8, 8, token)
    await handle.set_timer("a", 0.0)
    while manager.stats().events_ready < 1:
        await asyncio.sleep(0.001)
    return manager, handle, task


@pytest.mark.parametrize("needle", ["started", ": set ", "the event queue is full"])
async def test_token_cancelled_from_the_managers_own_logging(needle: str) -> None:
    """A logging.Handler cancels the token from inside the manager's own log call (on the start
    record, a DEBUG command record, the full-queue WARNING): the manager stops cleanly, once,
    with no recursion and no error."""
    token = CancellationToken()
    logger = logging.getLogger("timer_manager")
    handler = _CancelOnRecord(token, needle)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        manager, handle = TimerManager.new("logged", 0, 4, 1, token)
        task = asyncio.create_task(manager.run())
        await asyncio.sleep(0)
        if not token.is_cancelled():
            for i in range(3):
                handle.try_set_timer(f"x{i}", 0.0)  # 3 due, room for 1: the WARNING
        await asyncio.wait_for(task, 2.0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert token.is_cancelled()
    stopped = [m for m in handler.seen if "stopped" in m]
    assert len(stopped) == 1, handler.seen
    assert "cancellation token" in stopped[0]
    with pytest.raises(ManagerClosed):
        handle.try_set_timer("after", 1.0)
    while await handle.recv_event() is not None:
        pass


async def test_a_token_cancelled_while_the_manager_applies_a_command_discards_the_commands_behind_it() -> None:
    """The token cancelled from a DEBUG log handler, on the record of a set the manager is about to apply: the
    commands queued behind it are discarded, as every command still queued at a token stop is (contract 8), so the
    event that a cancel among them would retract stays receivable, and nothing more is delivered.
    catches: the engine's apply went on with the queue, and the pass then delivered what fell due: the cancel
    retracted the waiting event, received by nobody."""
    token = CancellationToken()
    manager, handle, task = await _start_with_an_event_waiting("halted", token)
    handler = _CancelOnRecord(token, "set 'x'")
    with _handling_debug_records(handler):
        handle.try_set_timer("x", 0.0)  # logged, and the token cancelled, before it is applied
        handle.try_cancel_timer("a")
        handle.try_set_timer("b", 0.0)
        await asyncio.wait_for(task, 2.0)
    assert manager._runner.stop_reason == "cancellation token cancelled"
    assert [event.name async for event in handle] == ["a"]
    assert len([m for m in handler.seen if "stopped" in m]) == 1, handler.seen


@pytest.mark.parametrize("touch", ["touch", "touch_many"])
async def test_a_touch_whose_queued_commands_cancel_the_token_as_they_are_applied_is_discarded(touch: str) -> None:
    """A touch with a command queued applies it first; a DEBUG log handler cancels the token on that command's
    record. The touch then comes after the cancel, and is discarded as a touch made after it is (contract 8): the
    one-shot timer's waiting event stays receivable. catches: the touch went on, withdrew the event and armed the
    timer, which the stop then discarded: the event was lost."""
    token = CancellationToken()
    _, handle, task = await _start_with_an_event_waiting("touch halted", token)
    with _handling_debug_records(_CancelOnRecord(token, "set 'x'")):
        handle.try_set_timer("x", 1000.0)
        touched = handle.touch("a") if touch == "touch" else handle.touch_many(["a"])
        await asyncio.wait_for(task, 2.0)
    assert token.is_cancelled()
    assert [event.name async for event in handle] == ["a"]
    assert touched in (False, 0)  # "a" is not pending: its event waits


# ---------------------------------------------------------------------- lifecycle misuse


async def test_second_run_raises_runtime_error() -> None:
    manager, handle = TimerManager.new("twice", 0.01, 4, 4)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="run"):
        await manager.run()
    assert not task.done()  # the first run is unharmed
    await handle.set_timer("ok", 0.0)
    event = await asyncio.wait_for(handle.recv_event(), 2.0)
    assert event is not None
    assert event.name == "ok"
    await handle.shutdown()
    await task
    with pytest.raises(RuntimeError, match="run"):
        await manager.run()  # and after it stopped


async def test_plain_handle_from_another_thread_in_debug_mode_names_threadsafe() -> None:
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    try:
        manager, handle = TimerManager.new("threads", 0.01, 4, 4)
        task = asyncio.create_task(manager.run())
        await asyncio.sleep(0)
        await handle.set_timer("kept", 0.05)
        errors: dict[str, BaseException | None] = {}

        def other_thread() -> None:
            calls = {
                "try_set_timer": lambda: handle.try_set_timer("x", 1.0),
                "try_cancel_timer": lambda: handle.try_cancel_timer("x"),
                "try_set_timers": lambda: handle.try_set_timers([("x", 1.0)]),
                "try_cancel_all_timers": handle.try_cancel_all_timers,
                "try_shutdown": handle.try_shutdown,
            }
            for name, call in calls.items():
                try:
                    call()
                    errors[name] = None
                except BaseException as exc:
                    errors[name] = exc

        thread = threading.Thread(target=other_thread)
        thread.start()
        await loop.run_in_executor(None, thread.join)
        for name, exc in errors.items():
            assert isinstance(exc, RuntimeError), (name, exc)
            assert "threadsafe()" in str(exc), (name, exc)
        # Nothing was queued: the manager still runs, with exactly its own timer.
        event = await asyncio.wait_for(handle.recv_event(), 2.0)
        assert event is not None
        assert event.name == "kept"
        assert handle.pending_count() == 0
        await handle.shutdown()
        await task
    finally:
        loop.set_debug(False)


# ---------------------------------------------------------------------- subprocesses


def _run_script(source: str, table: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TIMER_MANAGER_NO_EXTENSIONS"] = "1" if table == "py" else ""
    return subprocess.run(
        [sys.executable, "-X", "dev", "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )


def test_event_loop_closed_with_the_manager_running(core: Core) -> None:
    """The loop is closed under a running manager: later calls fail with a clear error (never a hang),
    and the interpreter exits cleanly."""
    result = _run_script(
        """
        import asyncio, gc, threading
        from timer_manager import CancellationToken, ManagerClosed, TimerManager

        token = CancellationToken()
        loop = asyncio.new_event_loop()
        manager, handle = TimerManager.new("orphan", 0.01, 4, 4, token)

        async def start():
            task = asyncio.ensure_future(manager.run())
            await handle.set_timer("a", 5.0)
            await asyncio.sleep(0.01)
            return task

        task = loop.run_until_complete(start())
        loop.close()  # the manager task is still pending

        threadsafe = handle.threadsafe()

        def attempt(call):
            try:
                call()
                print("accepted")
            except (ManagerClosed, RuntimeError) as exc:
                print("refused:", type(exc).__name__, exc)

        attempt(lambda: handle.try_set_timer("b", 1.0))
        thread = threading.Thread(target=attempt, args=(lambda: threadsafe.try_set_timer("b", 1.0),))
        thread.start()
        thread.join()
        token.cancel()  # the token's callback must not touch the closed loop
        print("token cancelled")
        del task
        gc.collect()
        print("done")
        """,
        core.kind,
    )
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    assert "token cancelled" in result.stdout
    assert "accepted" not in result.stdout, result.stdout
    assert result.stdout.count("closed") == 2, result.stdout
    # asyncio's own "Task was destroyed but it is pending!" is expected; nothing from the library.
    assert "Exception ignored" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_asyncio_run_returns_with_the_manager_still_running(core: Core) -> None:
    """asyncio.run() ends while run() is still going: asyncio cancels it; the exit is clean."""
    result = _run_script(
        """
        import asyncio
        from timer_manager import TimerManager

        async def main():
            manager, handle = TimerManager.new("left", 0.01, 4, 4)
            asyncio.ensure_future(manager.run())
            await handle.set_timer("a", 60.0)
            waiter = asyncio.ensure_future(handle.recv_event())
            await asyncio.sleep(0.05)

        asyncio.run(main())
        print("done")
        """,
        core.kind,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert result.stderr == "", result.stderr


def test_keyboard_interrupt_during_run(core: Core) -> None:
    """SIGINT while asyncio.run(main) runs a manager: the process exits promptly with the usual
    KeyboardInterrupt (exit status 130 or -SIGINT, a traceback ending in KeyboardInterrupt), and no
    traceback or error from the library."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TIMER_MANAGER_NO_EXTENSIONS"] = "1" if core.kind == "py" else ""
    source = textwrap.dedent(
        """
        import asyncio, signal, sys
        from timer_manager import TimerManager

        # A shell that started the suite in the background made SIGINT ignored, and children inherit that.
        signal.signal(signal.SIGINT, signal.default_int_handler)

        async def main():
            async with TimerManager.open("sigint", 0.01) as handle:
                for i in range(1000):
                    await handle.set_timer(f"t{i}", 0.001 * i)
                print("ready", flush=True)
                async for event in handle:
                    await handle.set_timer(event.name, 0.5)

        asyncio.run(main())
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", source],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert elapsed < 5, elapsed
    assert process.returncode in (130, -signal.SIGINT, 1), (process.returncode, stderr)
    assert stderr.rstrip().endswith("KeyboardInterrupt"), stderr
    # The usual: asyncio.run chains the main task's CancelledError into the KeyboardInterrupt.
    assert stderr.count("Traceback") <= 2, stderr
    assert "Exception in callback" not in stderr, stderr
    assert "never retrieved" not in stderr, stderr
    assert "timer manager" not in stderr, stderr  # no log record of the library's
    assert "Exception ignored" not in stderr, stderr
    assert "Task was destroyed" not in stderr, stderr
