"""The behaviour contract, points 7-9: shutdown, the cancellation token, and how every way run() ends
releases every waiting caller."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from support import ASYNCIO_ONLY

from timer_manager import CancellationToken, ManagerClosed, TimerHandle, TimerManager

pytestmark = pytest.mark.usefixtures("core")

HANG = 10.0  # seconds: a call that takes longer than this is hung


def closed_queries(handle: TimerHandle) -> list[Callable[[], Any]]:
    """The awaitable queries: they raise ManagerClosed from the moment shutdown() is called, as commands do."""
    return [
        lambda: handle.get_deadline("x"),
        lambda: handle.get_pending_count(),
        lambda: handle.get_next_deadline(),
    ]


def closed_calls(handle: TimerHandle) -> list[Callable[[], Any]]:
    """Every command of the handle and the awaitable queries, each as a zero-argument call (awaitables return a
    coroutine)."""
    return [
        *closed_queries(handle),
        lambda: handle.set_timer("x", 1.0),
        lambda: handle.set_timer_at("x", 1.0),
        lambda: handle.set_interval("x", 1.0),
        lambda: handle.set_timers([("x", 1.0)]),
        lambda: handle.cancel_timer("x"),
        lambda: handle.cancel_timers(["x"]),
        lambda: handle.cancel_all_timers(),
        lambda: handle.flush(),
        lambda: handle.try_set_timer("x", 1.0),
        lambda: handle.try_set_timer_at("x", 1.0),
        lambda: handle.try_set_interval("x", 1.0),
        lambda: handle.try_set_timers([("x", 1.0)]),
        lambda: handle.try_cancel_timer("x"),
        lambda: handle.try_cancel_timers(["x"]),
        lambda: handle.try_cancel_all_timers(),
    ]


async def assert_every_command_closed(handle: TimerHandle) -> None:
    for call in closed_calls(handle):
        with pytest.raises(ManagerClosed):
            result = call()
            if asyncio.iscoroutine(result):
                await asyncio.wait_for(result, HANG)


async def assert_stopped_state(handle: TimerHandle, queued: list[str]) -> None:
    """The state shutdown leaves: no pending timer; the queued events, then None / ManagerClosed / []."""
    assert handle.pending_count() == 0
    assert handle.next_deadline() is None
    names = []
    for _ in queued:
        event = await asyncio.wait_for(handle.recv_event(), HANG)
        assert event is not None
        names.append(event.name)
    assert names == queued
    assert await asyncio.wait_for(handle.recv_event(), HANG) is None
    assert await asyncio.wait_for(handle.recv_events(10), HANG) == []
    with pytest.raises(ManagerClosed):
        handle.try_recv_event()
    with pytest.raises(ManagerClosed):
        handle.try_recv_events(10)
    assert [event async for event in handle] == []
    await assert_every_command_closed(handle)


# -- 7. shutdown -----------------------------------------------------------------------------------------


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_shutdown_semantics_virtual() -> None:
    """shutdown() comes after the commands sent before it (a cancel that retracts a queued event, a set
    counted by the stats); run() returns; pending timers are discarded; queued events stay receivable,
    then None / ManagerClosed; every later command raises ManagerClosed.
    catches: shutdown jumping the queue; events dropped at shutdown; pending timers firing after it."""
    manager, handle = TimerManager.new("stopper", 0.01, 100, 100)
    task = asyncio.create_task(manager.run())
    for i in range(4):
        await handle.set_timer(f"due{i}", 1.0 + i)
    await handle.set_timer("far", 1000.0)
    await asyncio.sleep(10)  # due0..due3 are in the event queue
    await handle.cancel_timer("due1")
    await handle.set_timer("new", 500.0)
    await handle.shutdown()
    await asyncio.wait_for(task, HANG)
    assert task.result() is None
    stats = manager.stats()
    assert (stats.set, stats.live, stats.retracted) == (6, 0, 1)
    await assert_stopped_state(handle, ["due0", "due2", "due3"])
    await asyncio.sleep(2000)  # "far" and "new" were discarded: nothing fires
    assert await handle.recv_event() is None


async def test_shutdown_semantics_real_time() -> None:
    """Real time, both loops: the same shutdown contract with try_shutdown().
    catches: try_shutdown not stopping, or dropping the queued events."""
    manager, handle = TimerManager.new("stopper", 0.01, 100, 100)
    task = asyncio.create_task(manager.run())
    handle.try_set_timer("a", 0.0)
    handle.try_set_timer("b", 0.01)
    handle.try_set_timer("far", 1000.0)
    while manager.stats().events_ready < 2:
        await asyncio.sleep(0.01)
    handle.try_shutdown()
    await asyncio.wait_for(task, HANG)
    await assert_stopped_state(handle, ["a", "b"])


async def test_commands_refused_from_the_moment_shutdown_is_called() -> None:
    """Right after try_shutdown() (before the manager applies it), or while shutdown() waits for room,
    every command raises ManagerClosed. catches: closing only when the shutdown is applied."""
    manager, handle = TimerManager.new("closing", 0.01, 1, 10)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    handle.try_shutdown()
    await assert_every_command_closed(handle)
    await asyncio.wait_for(task, HANG)

    manager, handle = TimerManager.new("closing", 0.01, 1, 10)
    handle.try_set_timer("fills the queue", 1.0)
    stopping = asyncio.create_task(handle.shutdown())
    await asyncio.sleep(0)
    assert not stopping.done()  # waiting for room: the manager is not running
    await assert_every_command_closed(handle)
    task = asyncio.create_task(manager.run())
    await asyncio.wait_for(asyncio.gather(stopping, task), HANG)


@pytest.mark.parametrize("end", ["shutdown", "try_shutdown", "token"])
async def test_the_awaitable_queries_raise_manager_closed_from_shutdown_on_as_on_redis(end: str) -> None:
    """get_deadline(), get_pending_count() and get_next_deadline() raise ManagerClosed from the moment shutdown()
    is called and after the stop, however the manager stopped, as the commands do and as they do on Redis; the
    synchronous forms keep answering from the table (nothing is pending after the stop). Catches: the local
    queries answering 0 / None once the manager had stopped, where they raised while its SHUTDOWN was queued."""
    token = CancellationToken()
    manager, handle = TimerManager.new("queries", 0, 8, 8, token)
    task = asyncio.create_task(manager.run())
    await handle.set_timer("x", 1000.0)
    assert await handle.get_pending_count() == 1
    if end == "try_shutdown":
        handle.try_shutdown()
        for query in closed_queries(handle):  # the SHUTDOWN is queued, not yet applied (awaited in this task)
            with pytest.raises(ManagerClosed, match="shutting down"):
                await query()
    elif end == "shutdown":
        await handle.shutdown()
    else:
        token.cancel()
    await asyncio.wait_for(task, HANG)
    for query in closed_queries(handle):
        with pytest.raises(ManagerClosed, match="stopped"):
            await asyncio.wait_for(query(), HANG)
    assert (handle.pending_count(), handle.deadline("x"), handle.next_deadline(), "x" in handle) == (
        0,
        None,
        None,
        False,
    )


async def test_shutdown_is_idempotent_both_forms() -> None:
    """shutdown() and try_shutdown(), called again (before and after the stop), neither raise nor hang.
    catches: a second shutdown raising ManagerClosed or QueueFull, or waiting forever."""
    manager, handle = TimerManager.new("idem", 0.01, 1, 10)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    handle.try_shutdown()
    handle.try_shutdown()  # the queue (capacity 1) is full with the first one: still no error
    await asyncio.wait_for(handle.shutdown(), HANG)
    await asyncio.wait_for(task, HANG)
    await asyncio.wait_for(handle.shutdown(), HANG)
    handle.try_shutdown()
    assert manager._runner.stop_reason == "shutdown requested"


@pytest.mark.parametrize("capacity", [1, 2])
async def test_shutdown_calls_waiting_together_for_room_all_return(capacity: int) -> None:
    """Several shutdown() calls wait for room in a full command queue: the first to get it queues the SHUTDOWN,
    and every other returns, as a shutdown() made after it does, whether the stop came before or after it was
    given room. catches: a call still waiting when the first one's SHUTDOWN stopped the manager raised
    ManagerClosed("... stopped (shutdown requested)")."""
    manager, handle = TimerManager.new("idem-waiting", 0, capacity, 8)
    run = asyncio.ensure_future(manager.run())
    for index in range(capacity):
        handle.try_set_timer(f"blocker {index}", 1000)
    calls = []
    for _ in range(3):
        calls.append(asyncio.ensure_future(handle.shutdown()))
        await asyncio.sleep(0)  # each starts waiting before the manager applies anything
    assert await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), HANG) == [None, None, None]
    await asyncio.wait_for(run, HANG)
    assert manager._runner.stop_reason == "shutdown requested"


# -- 8. the cancellation token ----------------------------------------------------------------------------


async def test_token_cancel_stops_run_promptly_with_nothing_due() -> None:
    """Timers pending far ahead, no heartbeat tick due for an hour, no command: cancelling the token
    stops run() within a generous bound, leaving the state shutdown leaves.
    catches: the token only checked at a tick or a command."""
    loop = asyncio.get_running_loop()
    token = CancellationToken()
    with pytest.warns(UserWarning, match="heartbeat_interval=3600"):  # an hour, on purpose
        manager, handle = TimerManager.new("token", 3600.0, 10, 10, token)
    task = asyncio.create_task(manager.run())
    handle.try_set_timer("ready", 0.0)
    handle.try_set_timer("far", 7200.0)
    while manager.stats().events_ready < 1:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    started = loop.time()
    token.cancel()
    await asyncio.wait_for(task, HANG)
    assert loop.time() - started < HANG  # an hour's tick away: a token only seen at a tick fails this
    assert manager._runner.stop_reason == "cancellation token cancelled"
    await assert_stopped_state(handle, ["ready"])


async def test_token_cancel_from_another_thread() -> None:
    """The token cancelled from a plain thread stops run(). catches: cancel() touching the loop from
    the wrong thread (no call_soon_threadsafe), leaving run() asleep."""
    token = CancellationToken()
    manager, handle = TimerManager.new("thread", 0, 10, 10, token)
    task = asyncio.create_task(manager.run())
    await handle.set_timer("far", 1000.0)
    await asyncio.sleep(0.01)
    thread = threading.Thread(target=token.cancel)
    thread.start()
    await asyncio.wait_for(task, HANG)
    thread.join()
    await assert_stopped_state(handle, [])


async def test_token_cancel_discards_commands_still_queued() -> None:
    """A set queued after the token was cancelled (before the manager stopped) is discarded, not
    applied: no event, no timer. catches: applying the command queue on the way out."""
    token = CancellationToken()
    manager, handle = TimerManager.new("discard", 0, 10, 10, token)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0.01)
    token.cancel()
    with contextlib.suppress(ManagerClosed):
        handle.try_set_timer("late", 0.0)
    await asyncio.wait_for(task, HANG)
    assert manager.stats().set == 0
    await assert_stopped_state(handle, [])


@pytest.mark.parametrize("how", ["touch", "touch_many", "touch behind a queued command"])
async def test_a_touch_after_the_token_was_cancelled_leaves_the_events_receivable(how: str) -> None:
    """Contract 8: a token stop leaves the state a shutdown leaves, whose events already queued stay receivable
    (contract 7). A touch made after the token was cancelled, before the manager stopped, is discarded as the
    commands still queued are: it does not withdraw a one-shot timer's or a repeating timer's waiting event
    (after a shutdown() it would raise ManagerClosed and withdraw nothing). Catches: a touch applied at the
    call in that gap, which retracted the waiting events and armed timers the stop then discarded: the
    events were lost."""
    token = CancellationToken()
    manager, handle = TimerManager.new("touched late", 0, 10, 10, token)
    task = asyncio.create_task(manager.run())
    await handle.set_timer("one-shot", 0)
    await handle.set_interval("repeating", 60, first=0)
    while manager.stats().events_ready < 2:
        await asyncio.sleep(0.001)
    token.cancel()  # on the loop's thread: the stop is on its way, not yet made
    if how == "touch":
        handle.touch("one-shot")
        handle.touch("repeating")
    elif how == "touch_many":
        handle.touch_many(["one-shot", "repeating"])
    else:
        with contextlib.suppress(ManagerClosed):
            handle.try_cancel_timer("nothing")
        handle.touch("one-shot")
        handle.touch("repeating")
    await asyncio.wait_for(task, HANG)
    assert manager.stats().retracted == 0
    await assert_stopped_state(handle, ["one-shot", "repeating"])


async def test_parent_token_cancel_stops_manager_with_child_token() -> None:
    """A manager given a child token stops when the parent is cancelled.
    catches: children not cancelled with their parent."""
    parent = CancellationToken()
    manager, handle = TimerManager.new("child", 0.01, 10, 10, parent.child_token())
    task = asyncio.create_task(manager.run())
    await handle.set_timer("far", 1000.0)
    parent.cancel()
    await asyncio.wait_for(task, HANG)
    await assert_stopped_state(handle, [])


async def test_child_token_cancel_leaves_parent_manager_running() -> None:
    """Cancelling a child token stops its manager, not the one on the parent token.
    catches: cancellation propagating upwards."""
    parent = CancellationToken()
    child = parent.child_token()
    parent_manager, parent_handle = TimerManager.new("parent", 0, 10, 10, parent)
    child_manager, _ = TimerManager.new("child", 0, 10, 10, child)
    parent_task = asyncio.create_task(parent_manager.run())
    child_task = asyncio.create_task(child_manager.run())
    child.cancel()
    await asyncio.wait_for(child_task, HANG)
    await parent_handle.set_timer("alive", 0.01)
    event = await asyncio.wait_for(parent_handle.recv_event(), HANG)
    assert event is not None
    assert event.name == "alive"
    assert not parent.is_cancelled()
    assert not parent_task.done()
    await parent_handle.shutdown()
    await parent_task


async def test_token_cancelled_before_run() -> None:
    """run() with an already cancelled token returns at once, and the handle is closed.
    catches: a missed cancellation (callback registered after the cancel never fires)."""
    token = CancellationToken()
    token.cancel()
    manager, handle = TimerManager.new("pre", 0.01, 10, 10, token)
    await asyncio.wait_for(manager.run(), HANG)
    assert manager._runner.stop_reason == "cancellation token cancelled"
    await assert_stopped_state(handle, [])


# -- 9. however run() ends, nobody hangs ------------------------------------------------------------------


@contextlib.contextmanager
def frozen(manager: TimerManager) -> Iterator[None]:
    """Keep the manager from servicing its queue (as if it had not got round to it yet), a receive's
    applying of the commands sent before it included."""
    core = manager._runner
    service, apply_before_receive = core.service, core.apply_before_receive
    core.service = lambda: setattr(core, "service_soon", False)  # type: ignore[method-assign]
    core.apply_before_receive = lambda: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        core.service, core.apply_before_receive = service, apply_before_receive  # type: ignore[method-assign]


async def _waiters(handle: TimerHandle) -> tuple[list[asyncio.Task[Any]], list[asyncio.Task[Any]]]:
    """Two receivers waiting for an event and three senders waiting for room (queue of 1, full)."""
    receivers: list[asyncio.Task[Any]] = [asyncio.create_task(handle.recv_event()) for _ in range(2)]
    receivers.append(asyncio.create_task(handle.recv_events(5)))
    handle.try_cancel_timer("fill")  # a set with nothing queued would be applied at the call
    senders = [
        asyncio.create_task(handle.set_timer("s1", 1.0)),
        asyncio.create_task(handle.cancel_timer("s2")),
        asyncio.create_task(handle.set_timers([("s3", 1.0), ("s4", 1.0)])),
    ]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in receivers + senders)
    return receivers, senders


async def _assert_released(receivers: list[asyncio.Task[Any]], senders: list[asyncio.Task[Any]]) -> None:
    _done, pending = await asyncio.wait(receivers + senders, timeout=HANG)
    assert not pending, "a caller hangs"
    assert [task.result() for task in receivers] == [None, None, []]
    for task in senders:
        assert isinstance(task.exception(), ManagerClosed)


async def _end_by_token(manager: TimerManager, task: asyncio.Task[None]) -> None:
    manager.cancel_token.cancel()
    await asyncio.wait_for(task, HANG)


async def _end_by_cancel(manager: TimerManager, task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, HANG)


@pytest.mark.parametrize("end", [_end_by_token, _end_by_cancel], ids=["token", "task-cancelled"])
async def test_waiters_released_however_run_ends(end: Callable[..., Awaitable[None]]) -> None:
    """Token or task cancellation while receivers wait for events and senders wait for room: receivers
    get None / [], senders ManagerClosed, nobody hangs; a cancelled run() re-raises CancelledError.
    catches: waiters left pending when run() ends other than by shutdown; swallowing CancelledError."""
    manager, handle = TimerManager.new("ends", 0.01, 1, 10, CancellationToken())
    task = asyncio.create_task(manager.run())
    await handle.flush()  # its first service has run
    with frozen(manager):
        receivers, senders = await _waiters(handle)
        await end(manager, task)
    await _assert_released(receivers, senders)
    await assert_stopped_state(handle, [])


async def test_waiters_released_when_run_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception inside the manager while it applies commands (here: the DEBUG command log raises):
    run() raises it, waiting senders get ManagerClosed, waiting receivers None, later commands
    ManagerClosed. catches: a failing manager leaving callers hung, or swallowing its exception."""
    caplog.set_level(logging.DEBUG, logger="timer_manager")

    class Boom(Exception):
        pass

    def exploding_debug(*args: Any, **kwargs: Any) -> None:
        raise Boom("log broke")

    manager, handle = TimerManager.new("fails", 0.01, 1, 10)
    task = asyncio.create_task(manager.run())
    await handle.flush()  # its first service has run
    with frozen(manager):
        receivers, senders = await _waiters(handle)
    monkeypatch.setattr(logging.getLogger("timer_manager"), "debug", exploding_debug)
    manager._runner.schedule_service()
    with pytest.raises(Boom):
        await asyncio.wait_for(task, HANG)
    await _assert_released(receivers, senders)
    assert "Boom" in manager._runner.stop_reason
    await assert_stopped_state(handle, [])


async def test_receivers_released_when_a_wakeup_fails() -> None:
    """An exception at a timer wake-up (here: the manager's clock raises): run() raises it; receivers
    waiting get None; later commands ManagerClosed.
    catches: an exception in the wake-up path leaving receivers hung."""
    manager, handle = TimerManager.new("wake", 0.01, 10, 10)
    task = asyncio.create_task(manager.run())
    receivers = [asyncio.create_task(handle.recv_event()) for _ in range(3)]
    await handle.set_timer("due", 1.0)  # not due in the flush's pass, however loaded the machine: due at the wake-up
    await handle.flush()
    core = manager._runner
    clock = core.clock
    armed = [True]

    def broken_clock() -> float:
        if armed[0]:
            raise RuntimeError("clock broke")
        return clock()

    core.clock = broken_clock
    with pytest.raises(RuntimeError, match="clock broke"):
        await asyncio.wait_for(task, HANG)
    armed[0] = False
    _done, pending = await asyncio.wait(receivers, timeout=HANG)
    assert not pending
    assert [r.result() for r in receivers] == [None, None, None]
    await assert_every_command_closed(handle)


async def test_shutdown_releases_receivers() -> None:
    """Receivers waiting when shutdown() is applied get None. catches: receivers left waiting forever."""
    manager, handle = TimerManager.new("shut", 0.01, 10, 10)
    task = asyncio.create_task(manager.run())
    receivers = [asyncio.create_task(handle.recv_event()) for _ in range(3)]
    await asyncio.sleep(0.01)
    await handle.shutdown()
    _done, pending = await asyncio.wait(receivers, timeout=HANG)
    assert not pending
    assert [r.result() for r in receivers] == [None, None, None]
    await asyncio.wait_for(task, HANG)


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_open_context_manager_shuts_down_on_exit_virtual() -> None:
    """TimerManager.open runs the manager and shuts it down on exit; events are received inside.
    catches: open() leaving the task running or not shutting down."""
    async with TimerManager.open("ctx", heartbeat_interval=0.01) as handle:
        await handle.set_timer("a", 30.0)
        event = await handle.recv_event()
        assert event is not None
        assert event.name == "a"
    assert await handle.recv_event() is None
    with pytest.raises(ManagerClosed):
        await handle.set_timer("b", 1.0)
