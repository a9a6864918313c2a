"""A signal handler that cancels the main task at any line of library code: the systematic hunt.

``asyncio.run``'s SIGINT handler runs ``main_task.cancel()`` between any two bytecodes of the main thread.
For each scenario (a call the main task makes on a running manager) this script first counts the library
line events N of a clean run (every ``line`` event of a frame whose file is under ``timer_manager/``,
whichever task or callback runs it: the call itself, the manager's pass, another receiver or sender), then
reruns the scenario once per k in 1..N (or with a stride, ``--max-runs``), cancelling the main task at the
k-th line event, as the handler would. After each run it checks:

* the manager never stopped as failed, its ``run()`` task raised nothing, and nothing was logged at ERROR
  on the ``timer_manager`` logger or reported to the loop's exception handler;
* the call either raised ``CancelledError`` and had no effect, or returned with its whole effect (checked
  after a ``flush()``: the timer set or not, an event received exactly once and never lost);
* nothing hung, and the manager still shuts down cleanly.

A call whose coroutine returned normally but whose task ends cancelled (the cancel landed in the task's
last step, after the effect: asyncio checks ``_must_cancel`` when the coroutine returns) is asyncio's own
limitation, counted apart (``late``), not as a defect; its effect is still checked as a return's.

``tests/test_signal_handlers.py`` runs the local line sweep (about 10 s per core). Run it on its own:
``python tests/signal_hunt.py [--core c|py] [--scenario NAME ...] [--max-runs N] [--opcodes] [--redis]
[--debug-log] [--loop-debug]`` (``--opcodes``: cancel between any two bytecodes, not only at lines; ``--redis``: the
Redis scenarios too, on a redis-server of its own; ``--debug-log``: the ``timer_manager`` logger at DEBUG, where the
engine calls back into Python for each command; ``--loop-debug``: asyncio's debug mode); it exits non-zero if any
run broke an invariant, listing the scenario, k and the library line where the cancel landed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from support import use_core

import timer_manager
from timer_manager import CancellationToken, ManagerClosed, TimerHandle, TimerManager

LIBRARY = str(Path(timer_manager.__file__).parent)
HANG = 10.0
# --debug-log: the timer_manager logger at DEBUG (the engine calls back into Python for each command);
# --loop-debug: asyncio's debug mode (every call checks its thread).
OPTIONS = {"debug_log": False, "loop_debug": False}


class Injector:
    """Counts library line events while ``active``; at the ``at``-th one cancels ``target`` (once)."""

    def __init__(self, at: int | None, opcodes: bool = False) -> None:
        self.at = at
        self.event = "opcode" if opcodes else "line"  # opcodes: between any two bytecodes, as a handler may run
        self.count = 0
        self.active = False
        self.target: asyncio.Task[Any] | None = None
        self.site = ""
        self.after = False  # the call had ended when the cancel came (it did nothing)

    def _line(self, frame: FrameType, event: str, _: Any) -> Any:
        if event == self.event and self.active:
            self.count += 1
            if self.count == self.at and self.target is not None:
                self.site = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
                self.after = self.target.done()
                self.target.cancel()  # what asyncio.run's SIGINT handler does
        return self._line

    def _call(self, frame: FrameType, event: str, _: Any) -> Any:
        if not frame.f_code.co_filename.startswith(LIBRARY):
            return None
        if self.event == "opcode":
            frame.f_trace_opcodes = True
        return self._line


@dataclass
class Outcome:
    """How the main task's call ended: ``returned``, ``cancelled``, ``late`` (returned, task cancelled), or
    ``raised ...``/``hung``; ``value`` is what the call returned (``late`` too)."""

    kind: str = ""
    value: Any = None

    @property
    def took_effect(self) -> bool:
        return self.kind in ("returned", "late")


@dataclass
class Context:
    injector: Injector
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def check(self, condition: object, what: str) -> None:
        if not condition:
            self.problems.append(what)

    async def call(
        self, make: Callable[[], Awaitable[Any]], during: Callable[[], Awaitable[None]] | None = None
    ) -> Outcome:
        """Run ``make()`` as the main task, with the injector armed while it runs (``during`` runs beside it)."""
        box: dict[str, Any] = {}

        async def main() -> Any:
            box["value"] = await make()
            box["returned"] = True
            return box["value"]

        task = asyncio.ensure_future(main())
        self.injector.target = task
        self.injector.active = True
        try:
            if during is not None:
                await during()
            await asyncio.wait({task}, timeout=HANG)
        finally:
            self.injector.active = False
        if not task.done():
            task.cancel()
            return Outcome("hung")
        if task.cancelled():
            return Outcome("late", box.get("value")) if box.get("returned") else Outcome("cancelled")
        exc = task.exception()
        if exc is not None:
            return Outcome(f"raised {exc!r}")
        return Outcome("returned", task.result())

    async def running(self, commands: int = 8, **options: Any) -> tuple[TimerManager, TimerHandle, asyncio.Task[None]]:
        manager, handle = TimerManager.new("hunt", 0.0, commands, 8, **options)
        task = asyncio.ensure_future(manager.run())
        await asyncio.sleep(0)
        return manager, handle, task

    async def finish(self, manager: TimerManager, handle: TimerHandle, task: asyncio.Task[Any]) -> None:
        """The manager did not fail, and shuts down cleanly."""
        runner = manager._runner
        self.check(not runner.stop_reason.startswith("failed"), f"stopped as {runner.stop_reason}")
        if task.done() and not task.cancelled():
            self.check(task.exception() is None, f"run() raised {task.exception()!r}")
        if not task.done():
            try:
                await asyncio.wait_for(handle.shutdown(), HANG)
                await asyncio.wait_for(task, HANG)
            except Exception as exc:
                self.problems.append(f"no clean shutdown: {exc!r}")
                return
            self.check(runner.stop_reason == "shutdown requested", f"stopped as {runner.stop_reason}")
        self.check(runner.promised == 0 and not runner.senders, "room still promised, or senders left")


async def _ticks(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def _settled(ctx: Context, others: list[asyncio.Future[Any]], what: str) -> None:
    """Wait for the callers started beside the main task's call (``what``); a failure is a problem."""
    try:
        await asyncio.wait_for(others[0], HANG)
    except Exception as exc:
        ctx.problems.append(f"{what}: {exc!r}")


def _started_full(
    names: list[str], capacity: int | None = None, **options: Any
) -> tuple[TimerManager, TimerHandle, asyncio.Task[None]]:
    """A manager (``options``: ``TimerManager.new``'s) whose command queue (of ``capacity``, default: as many as
    ``names``) holds the sets of ``names``, full until the manager's first pass, and its ``run()`` task."""
    manager, handle = TimerManager.new("hunt", 0.0, capacity or len(names), 8, **options)
    for name in names:
        handle.try_set_timer(name, 1000)
    return manager, handle, asyncio.ensure_future(manager.run())


async def _with_another_behind(
    ctx: Context, call: Callable[[], Awaitable[Any]], behind: Callable[[], Awaitable[Any]], what: str
) -> Outcome:
    """The main task's ``call``, with ``behind()`` (``what``) started in a task of its own once the call waits;
    a failure of that one is a problem."""
    others: list[asyncio.Future[Any]] = []

    async def during() -> None:
        others.append(asyncio.ensure_future(behind()))

    out = await ctx.call(call, during)
    await _settled(ctx, others, what)
    return out


async def _set_with_a_sender_behind(ctx: Context, handle: TimerHandle) -> Outcome:
    """The main task sets ``x`` into a full command queue, a second sender (``y``) waiting behind it."""
    return await _with_another_behind(
        ctx, lambda: handle.set_timer("x", 1000), lambda: handle.set_timer("y", 1000), "the second sender"
    )


async def _shut_down(ctx: Context, manager: TimerManager, task: asyncio.Task[None]) -> None:
    """A ``shutdown()`` returned: ``run()`` ends, without an error, as shut down."""
    try:
        await asyncio.wait_for(asyncio.shield(task), HANG)
    except Exception as exc:
        ctx.problems.append(f"run() after the shutdown: {exc!r}")
    reason = manager._runner.stop_reason
    ctx.check(reason == "shutdown requested", f"stopped as {reason!r}")


# ---------------------------------------------------------------------- scenarios


async def set_with_room(ctx: Context) -> Outcome:
    manager, handle, task = await ctx.running()
    out = await ctx.call(lambda: handle.set_timer("x", 1000))
    await asyncio.wait_for(handle.flush(), HANG)
    ctx.check(("x" in handle) == out.took_effect, f"x set: {'x' in handle}")
    await ctx.finish(manager, handle, task)
    return out


async def _set_full(ctx: Context, size: int) -> Outcome:
    manager, handle, task = _started_full([f"p{i}" for i in range(size)])
    out = await _set_with_a_sender_behind(ctx, handle)
    await asyncio.wait_for(handle.flush(), HANG)
    ctx.check(("x" in handle) == out.took_effect, f"x set: {'x' in handle}")
    ctx.check("y" in handle and all(f"p{i}" in handle for i in range(size)), "y or p lost")
    await ctx.finish(manager, handle, task)
    return out


async def _receive(ctx: Context, how: str, due_later: bool = False) -> Outcome:
    manager, handle, task = await ctx.running()
    if due_later:
        handle.try_set_timer("a", 0.002)

    async def during() -> None:
        if not due_later:
            await _ticks()
            handle.try_set_timer("a", 0)

    async def receive() -> Any:
        if how == "one":
            return [await handle.recv_event()]
        if how == "many":
            return await handle.recv_events(10)
        return [await handle.__anext__()]

    out = await ctx.call(receive, during)
    received = [event.name for event in out.value or []] if out.took_effect else []
    if not received:
        event = await asyncio.wait_for(handle.recv_event(), HANG)
        received.append(event.name if event is not None else None)
    await asyncio.wait_for(handle.flush(), HANG)
    received += [event.name for event in handle.try_recv_events(10)]
    ctx.check(received == ["a"], f"received {received}")
    await ctx.finish(manager, handle, task)
    return out


async def _flush(ctx: Context, full: bool) -> Outcome:
    """A flush with a set queued before it, into a command queue with room or (``full``) of one, full."""
    if full:
        manager, handle, task = _started_full(["f"])
    else:
        manager, handle, task = await ctx.running()
        handle.try_set_timer("f", 1000)
    out = await ctx.call(handle.flush)
    if out.took_effect:
        ctx.check("f" in handle, "a flush returned before the command sent before it was applied")
    await _ticks()
    ctx.check(manager._runner.engine.queued() == 0, "a marker left queued")
    await asyncio.wait_for(handle.set_timer("g", 1000), HANG)  # room is not lost
    await ctx.finish(manager, handle, task)
    return out


async def _shutdown(ctx: Context, full: bool) -> Outcome:
    manager, handle, task = _started_full(["p"]) if full else await ctx.running()
    out = await ctx.call(handle.shutdown)
    runner = manager._runner
    if out.took_effect:
        await _shut_down(ctx, manager, task)
    else:
        await _ticks()
        ctx.check(runner.state == "running" and not runner.closing, f"a cancelled shutdown: {runner.state}")
        await asyncio.wait_for(handle.set_timer("after", 1000), HANG)
        await asyncio.wait_for(handle.flush(), HANG)
        ctx.check("after" in handle, "a set after the cancelled shutdown")
    await ctx.finish(manager, handle, task)
    return out


async def _run_awaited(ctx: Context, manager: TimerManager, handle: TimerHandle) -> Outcome:
    """``run()`` awaited by the main task, a worker setting, receiving and shutting down meanwhile."""

    async def work() -> Any:
        with contextlib.suppress(ManagerClosed):
            await handle.set_timer("w", 0)
        event = await handle.recv_event()
        with contextlib.suppress(ManagerClosed):
            await handle.shutdown()
        return event

    out = await _with_another_behind(ctx, manager.run, work, "the worker")
    runner = manager._runner
    ctx.check(runner.state == "stopped", f"run() ended with the manager {runner.state}")
    ctx.check(not runner.stop_reason.startswith("failed"), f"stopped as {runner.stop_reason}")
    ctx.check(out.kind in ("returned", "cancelled", "late"), f"run(): {out.kind}")
    return out


async def run_awaited(ctx: Context) -> Outcome:
    return await _run_awaited(ctx, *TimerManager.new("hunt", 0.0, 2, 8))


async def open_exit(ctx: Context) -> Outcome:
    handles: list[TimerHandle] = []
    before = asyncio.all_tasks()

    async def body() -> None:
        async with TimerManager.open("hunt", 0.0, 8, 8) as handle:
            handles.append(handle)
            handle.try_set_timer("a", 0)
            await handle.flush()

    out = await ctx.call(body)
    await _ticks()
    if handles:
        runner = handles[0]._runner
        ctx.check(runner.state == "stopped", f"the manager outlived its block: {runner.state}")
        ctx.check(not runner.stop_reason.startswith("failed"), f"stopped as {runner.stop_reason}")
    left = asyncio.all_tasks() - before
    ctx.check(not left, f"tasks left: {left}")
    return out


async def _token(ctx: Context, from_thread: bool) -> Outcome:
    token = CancellationToken()
    manager, _, task = await ctx.running(cancel_token=token)

    async def during() -> None:
        await _ticks()
        if from_thread:
            await asyncio.to_thread(token.cancel)
        else:
            token.cancel()

    out = await ctx.call(token.cancelled, during)
    if out.took_effect:
        ctx.check(token.is_cancelled(), "cancelled() returned before the cancel")
    try:
        await asyncio.wait_for(asyncio.shield(task), HANG)
    except Exception as exc:
        ctx.problems.append(f"run() after the token: {exc!r}")
    runner = manager._runner
    ctx.check(runner.stop_reason == "cancellation token cancelled", f"stopped as {runner.stop_reason!r}")
    return out


async def _touch(ctx: Context, variant: str) -> Outcome:
    manager, handle, task = await ctx.running()
    handle.try_set_timer("t", 100 if variant != "fired" else 0)
    await asyncio.wait_for(handle.flush(), HANG)
    await _ticks()
    before = manager._runner.engine.pending_deadline("t")
    ready = manager._runner.engine.ready_count()

    async def touch() -> bool:
        if variant == "queued":
            handle.try_set_timer("q", 1000)  # queued: the touch applies it first
        return handle.touch("t")

    out = await ctx.call(touch)
    await asyncio.wait_for(handle.flush(), HANG)
    after = manager._runner.engine.pending_deadline("t")
    if out.took_effect:
        ctx.check(out.value is True, f"touch returned {out.value!r}")
        if variant != "fired":
            ctx.check(after is not None and before is not None and after > before, f"deadline {before} -> {after}")
    else:
        ctx.check(after == before or variant == "fired", f"a cancelled touch moved the deadline {before} -> {after}")
    if variant == "fired":  # retracted and re-armed due at once (duration 0), or left: one event either way
        await _ticks()
        ready_after = manager._runner.engine.ready_count()
        ctx.check(ready == 1 and ready_after == 1, f"events ready {ready} -> {ready_after}")
    if variant == "queued":
        ctx.check(("q" in handle) == out.took_effect, "q")
    await ctx.finish(manager, handle, task)
    return out


async def recv_with_another_receiver(ctx: Context) -> Outcome:
    """Two receivers wait for one event: the main task's, woken first, and another. A woken receiver that is
    cancelled passes the wake-up on; the event is received exactly once."""
    manager, handle, task = await ctx.running()
    other: list[asyncio.Future[Any]] = []

    async def during() -> None:
        await _ticks()
        other.append(asyncio.ensure_future(handle.recv_event()))
        await _ticks()
        handle.try_set_timer("a", 0)

    out = await ctx.call(handle.recv_event, during)
    received = [out.value.name] if out.took_effect and out.value is not None else []
    await asyncio.wait_for(handle.flush(), HANG)
    if received:
        handle.try_set_timer("b", 0)  # the other receiver's
    try:
        event = await asyncio.wait_for(other[0], HANG)
        received.append(event.name if event is not None else None)
    except Exception as exc:
        ctx.problems.append(f"the other receiver: {exc!r}")
    await asyncio.wait_for(handle.flush(), HANG)
    received += [event.name for event in handle.try_recv_events(10)]
    ctx.check(sorted(received) == (["a", "b"] if out.took_effect else ["a"]), f"received {received}")
    await ctx.finish(manager, handle, task)
    return out


async def recv_interval(ctx: Context) -> Outcome:
    """A repeating timer's event: receiving it re-arms it; a cancelled receive leaves it for the next."""
    manager, handle, task = await ctx.running()

    async def during() -> None:
        await _ticks()
        handle.try_set_interval("i", 1000, first=0)

    out = await ctx.call(handle.recv_event, during)
    received = [out.value.name] if out.took_effect and out.value is not None else []
    if not received:
        event = await asyncio.wait_for(handle.recv_event(), HANG)
        received.append(event.name if event is not None else None)
    await asyncio.wait_for(handle.flush(), HANG)
    received += [event.name for event in handle.try_recv_events(10)]
    ctx.check(received == ["i"], f"received {received}")
    ctx.check("i" in handle and (handle.remaining("i") or 0) > 900, "the interval was not re-armed")
    await ctx.finish(manager, handle, task)
    return out


async def flush_with_a_sender_behind(ctx: Context) -> Outcome:
    """A flush waits in a full queue with a sender behind it: a cancelled flush's place goes to the sender."""
    manager, handle, task = _started_full(["f"])
    out = await _with_another_behind(ctx, handle.flush, lambda: handle.set_timer("y", 1000), "the sender behind")
    await asyncio.wait_for(handle.flush(), HANG)
    ctx.check("f" in handle and "y" in handle, "f or y lost")
    ctx.check(manager._runner.engine.queued() == 0, "a marker left queued")
    await ctx.finish(manager, handle, task)
    return out


async def set_timers_batch(ctx: Context) -> Outcome:
    """A batch of three into a queue of two, with one command queued: all or nothing."""
    manager, handle, task = _started_full(["p"], capacity=2)
    out = await ctx.call(lambda: handle.set_timers([("x1", 1000), ("x2", 1000), ("x3", 1000)]))
    await asyncio.wait_for(handle.flush(), HANG)
    present = [name in handle for name in ("x1", "x2", "x3")]
    ctx.check(present == [out.took_effect] * 3, f"batch {present}")
    await ctx.finish(manager, handle, task)
    return out


async def set_under_max_timers(ctx: Context) -> Outcome:
    """Under max_timers=2 with one live: a cancelled set gives its place back."""
    manager, handle, task = await ctx.running(commands=1, max_timers=2)
    handle.try_set_timer("p", 1000)
    out = await ctx.call(lambda: handle.set_timer("x", 1000))
    await asyncio.wait_for(handle.flush(), HANG)
    ctx.check(("x" in handle) == out.took_effect, f"x set: {'x' in handle}")
    if not out.took_effect:
        try:
            await asyncio.wait_for(handle.set_timer("z", 1000), HANG)  # the place was given back
        except Exception as exc:
            ctx.problems.append(f"the place was not given back: {exc!r}")
    await ctx.finish(manager, handle, task)
    return out


async def two_shutdowns(ctx: Context) -> Outcome:
    """Two shutdown() calls wait for room for the one SHUTDOWN; the main task's is cancelled: the other's
    still stops the manager."""
    manager, handle, task = _started_full(["p"])
    out = await _with_another_behind(ctx, handle.shutdown, handle.shutdown, "the other shutdown")
    await _shut_down(ctx, manager, task)
    return out


async def query(ctx: Context) -> Outcome:
    """``get_deadline`` (a flush, then the query) with a command queued before it."""
    manager, handle, task = await ctx.running()
    handle.try_set_timer("q", 1000)
    out = await ctx.call(lambda: handle.get_deadline("q"))
    if out.took_effect:
        ctx.check(out.value is not None, "the query missed the command sent before it")
    await _ticks()
    ctx.check(manager._runner.engine.queued() == 0, "a marker left queued")
    await ctx.finish(manager, handle, task)
    return out


async def set_behind_a_thread(ctx: Context) -> Outcome:
    """The main task sets while another thread's handle waits for room in a full queue."""
    manager, handle, task = _started_full(["p"])
    await asyncio.sleep(0)
    threadsafe = handle.threadsafe()
    thread = asyncio.ensure_future(asyncio.to_thread(threadsafe.set_timer, "t", 1000))
    await asyncio.sleep(0.01)
    out = await ctx.call(lambda: handle.set_timer("x", 1000))
    try:
        await asyncio.wait_for(thread, HANG)
    except Exception as exc:
        ctx.problems.append(f"the thread's set: {exc!r}")
    await asyncio.wait_for(handle.flush(), HANG)
    ctx.check(("x" in handle) == out.took_effect, f"x set: {'x' in handle}")
    ctx.check("t" in handle and "p" in handle, "t or p lost")
    await ctx.finish(manager, handle, task)
    return out


# ---------------------------------------------------------------------- Redis (--redis)

REDIS_URL = ""
_namespaces = iter(range(1 << 30))


def _redis_backend(**options: Any) -> Any:
    """A ``RedisBackend`` on the hunt's server, in a namespace of its own (``options``: its own)."""
    from timer_manager.redis import RedisBackend

    return RedisBackend(REDIS_URL, namespace=f"hunt-{next(_namespaces)}", **options)


async def _redis(ctx: Context, **options: Any) -> tuple[TimerManager, TimerHandle, asyncio.Task[None]]:
    manager, handle = TimerManager.new("hunt", 0.0, 8, 8, backend=_redis_backend(**options))
    task = asyncio.ensure_future(manager.run())
    await asyncio.wait_for(handle.flush(), HANG)  # connected
    return manager, handle, task


async def redis_set(ctx: Context) -> Outcome:
    manager, handle, task = await _redis(ctx)
    out = await ctx.call(lambda: handle.set_timer("x", 1000))
    deadline = await asyncio.wait_for(handle.get_deadline("x"), HANG)
    ctx.check((deadline is not None) == out.took_effect, f"x set: {deadline}")
    await ctx.finish(manager, handle, task)
    return out


async def redis_flush(ctx: Context) -> Outcome:
    manager, handle, task = await _redis(ctx)
    handle.try_set_timer("f", 1000)
    out = await ctx.call(handle.flush)
    deadline = await asyncio.wait_for(handle.get_deadline("f"), HANG)
    ctx.check(deadline is not None, "f lost")
    await ctx.finish(manager, handle, task)
    return out


async def redis_receive(ctx: Context) -> Outcome:
    manager, handle, task = await _redis(ctx)

    async def during() -> None:
        await _ticks()
        handle.try_set_timer("a", 0)

    out = await ctx.call(handle.recv_event, during)
    received = [out.value.name] if out.took_effect and out.value is not None else []
    if not received:
        event = await asyncio.wait_for(handle.recv_event(), HANG)
        received.append(event.name if event is not None else None)
    await asyncio.wait_for(handle.flush(), HANG)
    await asyncio.sleep(0.05)
    received += [event.name for event in handle.try_recv_events(10)]
    ctx.check(received == ["a"], f"received {received}")
    await ctx.finish(manager, handle, task)
    return out


async def redis_ack(ctx: Context) -> Outcome:
    manager, handle, task = await _redis(ctx, ack="manual")
    handle.try_set_timer("a", 0)
    event = await asyncio.wait_for(handle.recv_event(), HANG)
    assert event is not None
    out = await ctx.call(lambda: handle.ack(event))
    await asyncio.wait_for(handle.flush(), HANG)
    ctx.check(not handle.try_recv_events(10), "an event came again")
    await ctx.finish(manager, handle, task)
    return out


async def redis_run_awaited(ctx: Context) -> Outcome:
    """``run()`` of a Redis-backed manager awaited by the main task."""
    return await _run_awaited(ctx, *TimerManager.new("hunt", 0.0, 2, 8, backend=_redis_backend()))


async def redis_set_full(ctx: Context) -> Outcome:
    """A set into a full command queue of one (room comes back with the server's answers), a sender behind it."""
    manager, handle, task = _started_full(["p"], backend=_redis_backend())
    out = await _set_with_a_sender_behind(ctx, handle)
    deadlines = [await asyncio.wait_for(handle.get_deadline(name), HANG) for name in ("x", "y", "p")]
    ctx.check((deadlines[0] is not None) == out.took_effect, f"x set: {deadlines[0]}")
    ctx.check(None not in deadlines[1:], f"y or p lost: {deadlines}")
    await ctx.finish(manager, handle, task)
    return out


async def redis_shutdown(ctx: Context) -> Outcome:
    manager, handle, task = await _redis(ctx)
    handle.try_set_timer("s", 1000)
    out = await ctx.call(handle.shutdown)
    runner = manager._runner
    if out.took_effect:
        await _shut_down(ctx, manager, task)
    else:
        ctx.check(runner.state == "running" and not runner.closing, f"a cancelled shutdown: {runner.state}")
        deadline = await asyncio.wait_for(handle.get_deadline("s"), HANG)
        ctx.check(deadline is not None, "s lost")
    await ctx.finish(manager, handle, task)
    return out


REDIS_SCENARIOS: dict[str, Callable[[Context], Awaitable[Outcome]]] = {
    function.__name__: function
    for function in (
        redis_set,
        redis_set_full,
        redis_flush,
        redis_receive,
        redis_ack,
        redis_shutdown,
        redis_run_awaited,
    )
}


SCENARIOS: dict[str, Callable[[Context], Awaitable[Outcome]]] = {
    **{
        function.__name__: function
        for function in (
            set_with_room,
            run_awaited,
            open_exit,
            recv_with_another_receiver,
            recv_interval,
            flush_with_a_sender_behind,
            set_timers_batch,
            set_under_max_timers,
            two_shutdowns,
            query,
            set_behind_a_thread,
        )
    },
    # the variants of one scenario
    "flush": partial(_flush, full=False),
    "flush_full": partial(_flush, full=True),
    "set_full_1": partial(_set_full, size=1),
    "set_full_2": partial(_set_full, size=2),
    "recv_event": partial(_receive, how="one"),
    "recv_events": partial(_receive, how="many"),
    "async_for": partial(_receive, how="iter"),
    "recv_event_due_later": partial(_receive, how="one", due_later=True),
    "shutdown": partial(_shutdown, full=False),
    "shutdown_full": partial(_shutdown, full=True),
    "token_cancelled": partial(_token, from_thread=False),
    "token_cancelled_from_a_thread": partial(_token, from_thread=True),
    "touch": partial(_touch, variant="plain"),
    "touch_queued": partial(_touch, variant="queued"),
    "touch_fired": partial(_touch, variant="fired"),
}

# ---------------------------------------------------------------------- the hunt


class _Errors(logging.Handler):
    def __init__(self, errors: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(record.getMessage())


async def _one(
    scenario: Callable[[Context], Awaitable[Outcome]], at: int | None, opcodes: bool
) -> tuple[Context, Outcome]:
    ctx = Context(Injector(at, opcodes))
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(
        lambda _, context: ctx.errors.append(f"{context.get('message')}: {context.get('exception')!r}")
    )
    handler = _Errors(ctx.errors)
    logger = logging.getLogger("timer_manager")
    logger.addHandler(handler)
    level = logger.level
    if OPTIONS["debug_log"]:
        logger.setLevel(logging.DEBUG)
    previous = sys.gettrace()
    sys.settrace(ctx.injector._call)
    try:
        outcome = await asyncio.wait_for(scenario(ctx), 3 * HANG)
    except Exception as exc:
        outcome = Outcome(f"scenario raised {exc!r}")
        ctx.problems.append(outcome.kind)
    finally:
        sys.settrace(previous)
        logger.removeHandler(handler)
        logger.setLevel(level)
    if outcome.kind not in ("returned", "cancelled", "late"):
        ctx.problems.append(f"the call: {outcome.kind}")
    ctx.problems += [f"error: {error}" for error in ctx.errors]
    return ctx, outcome


def run_one(
    scenario: Callable[[Context], Awaitable[Outcome]], at: int | None, opcodes: bool = False
) -> tuple[Context, Outcome]:
    return asyncio.run(_one(scenario, at, opcodes), debug=OPTIONS["loop_debug"])


def hunt(name: str, max_runs: int, opcodes: bool = False, out: Any = sys.stdout) -> tuple[dict[str, int], list[str]]:
    """Count the scenario's line events, then cancel at each (or every stride-th); return the outcome counts
    and the problems found."""
    scenario = {**SCENARIOS, **REDIS_SCENARIOS}[name]
    counts = [run_one(scenario, None, opcodes)[0].injector.count for _ in range(3)]
    total = max(counts)
    stride = max(1, -(-total // max_runs))
    tally: dict[str, int] = {"runs": 0, "returned": 0, "cancelled": 0, "late": 0, "after": 0}
    problems: list[str] = []
    for at in range(1, total + 1, stride):
        ctx, outcome = run_one(scenario, at, opcodes)
        tally["runs"] += 1
        if not ctx.injector.site:  # this run had fewer events (timing: a real clock, a real server)
            kind = "not reached"
        elif ctx.injector.after:
            kind = "after"
        else:
            kind = outcome.kind if outcome.kind in tally else "other"
        tally[kind] = tally.get(kind, 0) + 1
        if kind == "returned":  # the cancel came while the call ran, and it returned: the cancellation was swallowed
            ctx.problems.append("returned although cancelled while it ran")
        if ctx.problems:
            problems.append(f"{name} k={at} at {ctx.injector.site} ({outcome.kind}): {'; '.join(ctx.problems)}")
    print(f"{name}: N={counts} stride={stride} {tally}", file=out, flush=True)
    return tally, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--core", choices=("c", "py"), default="py")
    parser.add_argument("--scenario", action="append", choices=sorted({**SCENARIOS, **REDIS_SCENARIOS}))
    parser.add_argument("--debug-log", action="store_true", help="the timer_manager logger at DEBUG")
    parser.add_argument("--loop-debug", action="store_true", help="asyncio's debug mode")
    parser.add_argument("--opcodes", action="store_true", help="cancel between bytecodes, not only at lines")
    parser.add_argument("--redis", action="store_true", help="also the Redis scenarios, on a redis-server of its own")
    parser.add_argument("--max-runs", type=int, default=400, help="at most this many injections per scenario")
    args = parser.parse_args()
    use_core(args.core)
    OPTIONS.update(debug_log=args.debug_log, loop_debug=args.loop_debug)
    found: list[str] = []
    names = args.scenario or [*SCENARIOS, *(REDIS_SCENARIOS if args.redis else ())]
    server = None
    if any(name in REDIS_SCENARIOS for name in names):
        import tempfile

        from redis_server import RedisServer

        global REDIS_URL
        server = RedisServer(Path(tempfile.mkdtemp(prefix="signal-hunt-redis-")))
        REDIS_URL = server.url
    try:
        for name in names:
            found += hunt(name, args.max_runs, args.opcodes)[1]
    finally:
        if server is not None:
            server.stop()
    for problem in found:
        print("PROBLEM", problem)
    print(f"{len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
