"""Calls from other threads and from many tasks at once: nothing lost, nothing applied twice, nothing hung.

The stress tests drive one manager from several threads (``threadsafe()``: blocking and ``try_``, with
and without timeouts, single and batched) and several loop tasks (awaitable and ``try_``, some
cancelled by a tiny ``wait_for``), with ``sys.setswitchinterval`` turned down so that threads switch
between almost any two bytecodes. A recording table logs every set and cancel the engine applies.
The invariant: each caller's calls that returned normally were applied exactly once, in that
caller's order; calls that raised or were cancelled left no trace; ``max_timers`` was never exceeded
and its accounting returns to zero; ``stats()`` agrees with what was applied; no thread, task or
loop hangs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, cast

import pytest
from stress import Crowd, RecordingTable, applied_by, consume, record_refused_rearms, recording_table, same_calls

from timer_manager import CancellationToken, QueueFull, TimerHandle, TimerManager, _backend

HANG = 60.0  # seconds after which a wait counts as a hang (generous: a loaded 2-core machine)


@pytest.fixture
def recording(table_class: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Managers made in the test use a recording subclass of the table under test."""
    table = recording_table(table_class)
    monkeypatch.setattr(_backend, "TimerTable", table)
    return table


async def _stress(
    recording: Any,
    *,
    stop_by: str,
    max_timers: int | None,
    seconds: float = 0.6,
    seed: int = 0,
    touches: bool = False,
) -> None:
    """Threads and tasks hammer a small command queue for ``seconds``, then the manager is stopped by
    ``stop_by``: "shutdown" once the callers stopped, or "shutdown-live" while they call (every accepted
    command must be applied), or "token" while they call (a per-caller prefix of them). With ``touches``
    they also touch their recent timers, from the threads and on the loop."""
    recording.limit = max_timers
    token = CancellationToken()
    manager, handle = TimerManager.new("stress", 0.0, 4, 8, token, max_timers=max_timers)
    record_refused_rearms(manager._runner.engine, cast(RecordingTable, manager._runner.table))
    run = asyncio.ensure_future(manager.run())
    seen: list[str] = []
    consumer = asyncio.ensure_future(consume(handle, seen))
    crowd = Crowd(handle, seed, touches=touches)
    await asyncio.sleep(seconds)

    if stop_by == "shutdown":
        # Stop the callers first, so that every accepted command can be checked as applied.
        assert await crowd.stop(HANG) == [], "a caller hangs"
        await asyncio.wait_for(handle.flush(), HANG)
        assert manager._runner.admission is None or manager._runner.admission.reserved == {}
        stats = manager.stats()
        assert stats.live == len(manager._runner.table) == handle.pending_count()
        await asyncio.wait_for(handle.shutdown(), HANG)
    else:
        if stop_by == "token":  # cancelled from a thread while everyone is still calling
            await asyncio.to_thread(token.cancel)
        else:  # a shutdown while everyone is still calling
            await asyncio.wait_for(handle.shutdown(), HANG)
        assert await crowd.stop(HANG) == [], "a caller hangs"
    await asyncio.wait_for(run, HANG)
    await asyncio.wait_for(consumer, HANG)
    assert not crowd.errors, crowd.errors

    table = cast(RecordingTable, manager._runner.table)
    log = table.log
    for caller in crowd.callers:
        applied = applied_by(log, caller.key)
        if stop_by != "token":
            assert same_calls(applied, list(caller.accepted)), f"{caller.key}: applied differs from accepted"
        else:
            assert same_calls(applied, list(caller.accepted)[: len(applied)]), (
                f"{caller.key}: applied is not a prefix of accepted"
            )
    assert table.over_limit == [], f"max_timers={max_timers} exceeded: {table.over_limit[:5]}"
    assert manager._runner.admission is None or manager._runner.admission.reserved == {}
    stats = manager.stats()
    sets = [entry for entry in log if entry[0] == "set"]
    assert stats.set == sum(1 for _, _, replaced in sets if not replaced)
    assert stats.reset == sum(1 for _, _, replaced in sets if replaced)
    applied_sets = Counter(name for _, name, _ in sets)
    delivered = Counter(seen)
    assert not delivered - applied_sets, "more events for a name than sets of it were applied"
    assert sum(len(caller.accepted) for caller in crowd.thread_callers) > 0
    assert sum(len(caller.accepted) for caller in crowd.task_callers) > 0
    if touches:
        for callers in (crowd.thread_callers, crowd.task_callers):
            assert any(op == "touch" for caller in callers for op, _ in caller.accepted)
        assert any(op == "touch" and touched for op, _, touched in log), "no touch found its timer pending"


@pytest.mark.parametrize("switch_interval", [1e-5, 1e-4, 1e-3], indirect=True)
@pytest.mark.parametrize("max_timers", [None, 40])
async def test_threads_and_tasks_lose_nothing_up_to_a_shutdown(
    recording: Any, switch_interval: float, max_timers: int | None
) -> None:
    """Every call that returned normally was applied exactly once, in its caller's order, and nothing
    else was; the cap held; the accounting returned to zero. Catches: lost or duplicated commands,
    commands applied out of a thread's order, a refused or cancelled call that took effect, places
    under max_timers leaked, the loop or a thread hung by a full queue."""
    await _stress(recording, stop_by="shutdown", max_timers=max_timers, seed=int(switch_interval * 1e5))


@pytest.mark.parametrize("switch_interval", [1e-5, 1e-3], indirect=True)
@pytest.mark.parametrize("max_timers", [None, 40])
async def test_threads_and_tasks_that_touch_lose_nothing_up_to_a_shutdown(
    recording: Any, switch_interval: float, max_timers: int | None
) -> None:
    """The same with touches among the calls: threadsafe ``try_touch``, ``touch`` (with timeouts),
    ``try_touch_many`` and ``touch_many`` from the threads, ``touch`` and ``touch_many`` on the loop (at the call,
    or behind what is queued). Each touch that returned normally was applied once, in its caller's order: a
    touch of the table, or a set where it re-armed a timer whose event waited, or turned down by ``max_timers``.
    Catches: a touch lost or applied twice, a touch applied before a command its caller sent first (the loop's
    touch at the call with commands queued), a re-arm that broke the cap or its accounting."""
    await _stress(
        recording, stop_by="shutdown", max_timers=max_timers, seed=int(switch_interval * 1e5) + 1, touches=True
    )


@pytest.mark.parametrize("switch_interval", [1e-5], indirect=True)
@pytest.mark.parametrize("stop_by", ["token", "shutdown-live"])
async def test_threads_and_tasks_that_touch_stopped_mid_stream_apply_what_they_must(
    recording: Any, switch_interval: float, stop_by: str
) -> None:
    """Touching callers stopped while they call: by a token cancelled from a thread (each caller's applied calls
    are the first part of what it sent), or by a shutdown (every call that returned normally was applied).
    Catches: a touch applied after the stop began discarding, a touch handed over and dropped at a shutdown."""
    await _stress(recording, stop_by=stop_by, max_timers=20 if stop_by == "token" else None, seed=5, touches=True)


@pytest.mark.parametrize("switch_interval", [1e-5, 1e-3], indirect=True)
async def test_a_token_cancelled_from_a_thread_mid_stream_applies_a_prefix_of_each_callers_commands(
    recording: Any, switch_interval: float
) -> None:
    """Token cancelled from another thread while threads and tasks call: the manager stops, every caller
    is released (ManagerClosed), and what was applied is, for each caller, the first part of what it
    sent. Catches: a command applied after a later one of the same thread, a hang at the stop."""
    await _stress(recording, stop_by="token", max_timers=20, seed=7)


@pytest.mark.parametrize("switch_interval", [1e-5, 1e-3], indirect=True)
async def test_a_shutdown_while_threads_and_tasks_call_applies_everything_accepted_before_it(
    recording: Any, switch_interval: float
) -> None:
    """shutdown() on the loop while threads and tasks keep calling: every call that returned normally
    (before or during the shutdown) was applied, in order; the rest got ManagerClosed. Catches: commands
    handed over by threads dropped at the shutdown, a thread blocked for room never released."""
    await _stress(recording, stop_by="shutdown-live", max_timers=None, seed=3)


@pytest.mark.usefixtures("core")
async def test_commands_handed_over_behind_an_oversized_batch_wait_for_room() -> None:
    """A batch larger than the whole command queue is let in alone, once the queue is empty; what a thread
    hands over while its room is promised must wait for room, not join it. catches: the room left for the
    inbox computed as negative (more promised than the capacity) and read as "no limit", so that the inbox
    was taken whole and the queue held the batch and the thread's commands, beyond both bounds."""
    import threading

    manager, handle = TimerManager.new("oversized", 0.0, 2, 10, CancellationToken())
    run = asyncio.ensure_future(manager.run())
    handle.try_set_timers([("p", 100), ("q", 100)])  # the queue is full
    batch = asyncio.ensure_future(handle.set_timers([("a", 100), ("b", 100), ("c", 100)]))
    for _ in range(20):  # the manager applies p and q, and promises the empty queue to the batch
        await asyncio.sleep(0)
        if manager._runner.promised:
            break
    assert manager._runner.promised == 3 and not batch.done()
    threadsafe = handle.threadsafe()
    thread = threading.Thread(target=threadsafe.try_set_timers, args=([("d", 100), ("e", 100)],))
    thread.start()
    thread.join()
    with pytest.raises(QueueFull):  # the batch is ahead of it; the look for room takes the inbox if it fits
        handle.try_cancel_timer("x")
    await asyncio.wait_for(batch, HANG)
    await handle.flush()
    assert all(name in handle for name in "pqabcde")
    assert manager.stats().command_queue_high_water <= 3  # the oversized batch, alone
    await handle.shutdown()
    await asyncio.wait_for(run, HANG)


def _in_a_thread(call: Any, *args: Any) -> None:
    """``call(*args)`` in another thread, waited for."""
    import threading

    thread = threading.Thread(target=call, args=args)
    thread.start()
    thread.join()


async def _the_threads_later_set_of_x_was_kept(handle: TimerHandle, run: asyncio.Task[None]) -> None:
    """Once what was queued is applied, ``x`` is due in about 200 s (the thread's set), not 100 s (the task's, which
    came first); then the manager stops."""
    await handle.flush()
    deadline = handle.deadline("x")
    assert deadline is not None, "x is not pending"
    assert deadline > asyncio.get_running_loop().time() + 150, "the thread's set was applied before the task's"
    await handle.shutdown()
    await asyncio.wait_for(run, HANG)


@pytest.mark.usefixtures("core")
async def test_what_a_thread_hands_over_while_a_task_waits_for_room_is_applied_after_the_tasks_command() -> None:
    """A task waits for room in a full command queue; then a thread sets the same timer. The task's call came
    first, so its command is applied first and the thread's deadline is the one kept. Catches: room freed was
    promised to the task, and what the thread had handed over meanwhile was queued at once, ahead of the task's
    command (which the task queues when it runs)."""
    manager, handle = TimerManager.new("arrival-order", 0.0, 2, 10, CancellationToken())
    handle.try_set_timers([("p", 100), ("q", 100)])  # the queue is full until run() applies it
    task = asyncio.ensure_future(handle.set_timer("x", 100))
    await asyncio.sleep(0)
    assert manager._runner.senders, "the task waits for room"
    _in_a_thread(handle.threadsafe().try_set_timer, "x", 200)
    run = asyncio.ensure_future(manager.run())
    await asyncio.wait_for(task, HANG)
    await _the_threads_later_set_of_x_was_kept(handle, run)


@pytest.mark.usefixtures("core")
async def test_a_pass_between_a_senders_promise_and_its_step_leaves_the_inbox_behind_it() -> None:
    """A task waits for room in a full command queue; a thread then sets the same timer. The pass that frees the
    room promises it to the task, and applying a thread's touch of a timer whose event waited asked for another
    pass, which runs before the task's step. The task's call came first, so its command is applied first and the
    thread's deadline is the one kept. Catches: that pass took the inbox (the waiting senders it checks skip the
    promised one), queueing the thread's set ahead of the task's."""
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("promised-order", 0.0, 2, 10, CancellationToken())
    run = asyncio.ensure_future(manager.run())
    await handle.set_timer("f", 0)
    for _ in range(100):  # f fires; its event waits, not received
        await asyncio.sleep(0)
        if manager._runner.engine.ready_count():
            break
    assert manager._runner.engine.ready_count() == 1
    threadsafe = handle.threadsafe()
    task = asyncio.ensure_future(handle.set_timer("x", 100))  # its first step runs first: it finds no room
    loop.call_soon(_in_a_thread, threadsafe.try_set_timer, "x", 200)  # then a thread sets x, behind it
    _in_a_thread(threadsafe.touch, "f")  # a touch that re-arms f, so that applying it asks for a pass
    handle.try_set_timer("a", 100)  # the touch is queued first, then this: the queue is full
    await asyncio.wait_for(task, HANG)
    await _the_threads_later_set_of_x_was_kept(handle, run)


@pytest.mark.usefixtures("core")
async def test_a_shutdown_queues_what_threads_handed_over_behind_a_task_that_waited_before_it() -> None:
    """A task's cancel waits for room in a full command queue; a thread then sets the same timer due at once, and a
    shutdown() follows. The task's call came first: the cancel is applied, then the set, whose event is delivered and
    stays receivable after the stop. Catches: the shutdown's close queued what the thread had handed over at once,
    ahead of the task's cancel, which then retracted the thread's timer's event."""
    manager, handle = TimerManager.new("close-order", 0.0, 2, 10, CancellationToken())
    handle.try_set_timers([("p", 100), ("q", 100)])  # the queue is full until run() applies it
    task = asyncio.ensure_future(handle.cancel_timer("x"))
    await asyncio.sleep(0)
    assert manager._runner.senders, "the task waits for room"
    _in_a_thread(handle.threadsafe().try_set_timer, "x", 0)
    shutdown = asyncio.ensure_future(handle.shutdown())
    await asyncio.sleep(0)
    run = asyncio.ensure_future(manager.run())
    await asyncio.wait_for(task, HANG)
    await asyncio.wait_for(shutdown, HANG)
    await asyncio.wait_for(run, HANG)
    names = [event.name for event in handle.try_recv_events(10)]
    assert names == ["x"], "the thread's set was applied before the task's cancel"
