"""A signal handler cancels a future the manager is about to resolve: the manager goes on.

Python runs a signal handler on the main thread between any two bytecodes, and ``asyncio.run`` installs
one for SIGINT that cancels the main task, and with it the future the task awaits (a receiver's waiter,
a sender's promise of room, a flush, the manager's own ``done`` when the main task awaits ``run()``). The
manager resolves such futures right after it checked that they are pending: a handler that runs between
the check and the ``set_result`` made it raise ``InvalidStateError``, and the manager stopped as failed
(``tests/test_faults.py::test_keyboard_interrupt_during_run`` showed it about once in 80 runs).

These tests make that moment certain: a line tracer cancels the future named on each library line that
resolves one (``X.set_result(`` or ``X.set_exception(``) just before that line runs, as the handler
would, and records the library line that asked for it. The caller whose future was cancelled ends
cancelled, with no effect; everyone else is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import linecache
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from signal_hunt import SCENARIOS, hunt
from support import HANG, Core, running

import timer_manager
from timer_manager import CancellationToken, ManagerClosed, TimerManager

pytestmark = pytest.mark.usefixtures("core")

LIBRARY = str(Path(timer_manager.__file__).parent)
FUTURES = str(Path(timer_manager.__file__).parent / "_futures.py")
RESOLVES = re.compile(r"([\w.\[\]]+)\.set_(?:result|exception)\(")


class SignalAtEachResolve:
    """While active, cancel the future each library line is about to resolve (the first ``limit`` of them, if
    given), as a signal handler run just before that line would; ``sites`` records where it did (file name and
    line)."""

    def __init__(self, limit: int | None = None) -> None:
        self.sites: list[str] = []
        self.limit = limit

    def _line(self, frame: FrameType, event: str, _: Any) -> Any:
        if event == "line":
            match = RESOLVES.search(linecache.getline(frame.f_code.co_filename, frame.f_lineno))
            if match is not None and (self.limit is None or len(self.sites) < self.limit):
                future = eval(match.group(1), frame.f_globals, frame.f_locals)  # the future the line resolves
                if isinstance(future, asyncio.Future) and future.cancel():
                    site: FrameType | None = frame
                    while site is not None and site.f_code.co_filename == FUTURES:  # the library's line that called it
                        site = site.f_back
                    assert site is not None
                    self.sites.append(f"{Path(site.f_code.co_filename).name}:{site.f_lineno}")
        return self._line

    def _call(self, frame: FrameType, event: str, _: Any) -> Any:
        return self._line if frame.f_code.co_filename.startswith(LIBRARY) else None

    @contextlib.contextmanager
    def active(self) -> Iterator[SignalAtEachResolve]:
        previous = sys.gettrace()
        sys.settrace(self._call)
        try:
            yield self
        finally:
            sys.settrace(previous)


async def _iterations(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_receivers_waiter_cancelled_as_an_event_wakes_it() -> None:
    """A receiver waits; a timer falls due and the pass wakes it, the handler cancelling its waiter first.
    The receiver ends cancelled, the event stays for the next receive, the manager runs on.
    Catches: the pass's ``set_result`` on the cancelled waiter (InvalidStateError: the manager failed)."""
    async with running() as (manager, handle, task):
        receiver = asyncio.ensure_future(handle.recv_event())
        await _iterations(3)
        signal = SignalAtEachResolve()
        with signal.active():
            handle.try_set_timer("a", 0)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(receiver, HANG)
        assert [site.split(":")[0] for site in signal.sites] == ["_runner.py"], signal.sites
        assert receiver.cancelled()
        assert manager._runner.state == "running", manager._runner.stop_reason
        event = await asyncio.wait_for(handle.recv_event(), HANG)
        assert event is not None and event.name == "a"
    assert task.result() is None


async def test_a_senders_promise_of_room_cancelled_as_it_is_made() -> None:
    """Two senders wait for room in a full command queue; the pass promises room to the first, the handler
    cancelling its future first. The first sender ends cancelled with nothing queued; the room goes to the
    second, which returns with its command applied; nothing stays promised.
    Catches: ``set_result`` on the cancelled promise (the manager failed), or room counted as promised to
    a sender that never got it (the second sender hung)."""
    manager, handle = TimerManager.new("signal-senders", 0.0, 1, 8)
    handle.try_set_timer("p", 1000)  # the queue is full until the manager's first pass
    first = asyncio.ensure_future(handle.set_timer("first", 1000))
    second = asyncio.ensure_future(handle.set_timer("second", 1000))
    await _iterations(2)
    assert len(manager._runner.senders) == 2
    signal = SignalAtEachResolve(limit=1)
    with signal.active():
        task = asyncio.ensure_future(manager.run())
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(first, HANG)
    assert [site.split(":")[0] for site in signal.sites] == ["_runner.py"], signal.sites
    assert first.cancelled()
    await asyncio.wait_for(second, HANG)
    await asyncio.wait_for(handle.flush(), HANG)
    assert manager._runner.state == "running", manager._runner.stop_reason
    assert "second" in handle and "p" in handle and "first" not in handle
    assert manager._runner.promised == 0 and not manager._runner.senders
    await asyncio.wait_for(handle.shutdown(), HANG)
    await asyncio.wait_for(task, HANG)
    assert task.result() is None


async def test_the_stop_releases_everyone_when_their_futures_are_cancelled_at_the_release() -> None:
    """A shutdown with a receiver, a sender and a flush waiting, each of their futures (and the manager's
    own ``done``) cancelled just before the stop resolves it: the stop completes, as a shutdown, and
    every caller ends (cancelled). Catches: the stop raising InvalidStateError half-way (callers after it
    never released, the manager left half-stopped)."""
    manager, handle = TimerManager.new("signal-stop", 0.0, 1, 8)
    task = asyncio.ensure_future(manager.run())
    await asyncio.sleep(0)
    handle.try_set_timer("p", 1000)
    receiver = asyncio.ensure_future(handle.recv_event())
    sender = asyncio.ensure_future(handle.set_timer("s", 1000))
    flush = asyncio.ensure_future(handle.flush())
    await asyncio.sleep(0)
    signal = SignalAtEachResolve()
    with signal.active():
        manager._runner.stop("shutdown requested")
    assert manager._runner.state == "stopped"
    assert len(signal.sites) >= 3, signal.sites
    for caller in (receiver, sender, flush):
        with contextlib.suppress(asyncio.CancelledError, ManagerClosed):
            await asyncio.wait_for(caller, HANG)
        assert caller.done()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, HANG)
    assert task.done()


async def test_a_flush_cancelled_as_the_engine_resolves_it(core: Core) -> None:
    """A flush is applied and the handler cancels its future just before the engine resolves it: the flush
    ends cancelled and the manager runs on. (The compiled engine's own check and set, both C calls on a C
    future, leave no room for a handler; it resolves through the same Python helper, where one could run.)
    Catches: the engine's ``set_result`` on the cancelled flush (the manager failed)."""
    async with running() as (manager, handle, task):
        flush = asyncio.ensure_future(handle.flush())
        signal = SignalAtEachResolve()
        with signal.active():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(flush, HANG)
            await _iterations(3)
        engine = "_engine_py.py" if core.kind == "py" else "_runner.py"  # a C frame is not seen: its caller is
        assert [site.split(":")[0] for site in signal.sites] == [engine], signal.sites
        assert flush.cancelled()
        assert manager._runner.state == "running", manager._runner.stop_reason
        await asyncio.wait_for(handle.flush(), HANG)
    assert task.result() is None


async def test_a_token_waiter_cancelled_as_the_token_wakes_it() -> None:
    """``await token.cancelled()`` is woken by a cancel from another thread; the handler cancels its waiter
    just before the wake-up resolves it. The wait ends cancelled and nothing raises in the loop's callback.
    Catches: InvalidStateError out of the token's wake-up (reported by the loop's exception handler)."""
    token = CancellationToken()
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    waiting = asyncio.ensure_future(token.cancelled())
    await asyncio.sleep(0)
    signal = SignalAtEachResolve()
    with signal.active():
        await asyncio.to_thread(token.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(waiting, HANG)
        await _iterations(3)
    loop.set_exception_handler(None)
    assert len(signal.sites) == 1, signal.sites  # the loop's call of the token's wake-up
    assert waiting.cancelled()
    assert errors == []


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_cancel_of_the_main_task_at_any_library_line(scenario: str, core: Core) -> None:
    """``tests/signal_hunt.py``'s sweep: the main task makes one call on a running manager (a set with room or into
    a full queue, a receive, a flush, a shutdown, ``run()`` itself, ``open()``'s exit, ``token.cancelled()``, a
    touch...) and is cancelled, as ``asyncio.run``'s SIGINT handler would, at the k-th library line event of the
    run, for every k (whichever task or callback runs that line). Each call raises CancelledError with no effect, or
    returns with its whole effect; the manager never fails, logs no error, hangs nowhere and shuts down cleanly.
    (The sweep between bytecodes, and on Redis: ``python tests/signal_hunt.py --opcodes --redis``.)"""
    tally, problems = hunt(scenario, max_runs=1000, out=io.StringIO())
    assert not problems, problems
    if scenario == "touch" and core.kind == "c":  # C from the call to the touch record: no line to cancel at
        assert tally["runs"] == 0, tally
        return
    assert tally["runs"] > 0 and tally["cancelled"] + tally["late"] > 0, tally
