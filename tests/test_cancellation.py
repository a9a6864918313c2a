"""Every awaitable, cancelled at each of its suspension points: all of its effect or none, nothing left behind.

For each awaitable method the call is started against a full command queue (or an empty event queue)
and cancelled after 0, 1, 2, ... loop iterations, until a run lets it finish. Each time: if it raised
``CancelledError`` it had no effect, if it returned its whole effect is there; no sender, promised
room or receiver is left behind; and the manager still stops on ``shutdown()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from timer_manager import TimerHandle, TimerManager

pytestmark = pytest.mark.usefixtures("core")

HANG = 30.0
MAX_STEPS = 12

Call = Callable[[TimerHandle], Awaitable[Any]]
Effect = Callable[[TimerHandle], bool]  # after a flush: whether the call's effect is there

SENDS: dict[str, tuple[Call, Effect]] = {
    "set_timer": (lambda h: h.set_timer("x", 1000), lambda h: "x" in h),
    "set_timer_at": (lambda h: h.set_timer_at("x", 1e9), lambda h: "x" in h),
    "set_interval": (lambda h: h.set_interval("x", 1000), lambda h: "x" in h),
    "set_timers": (lambda h: h.set_timers([("x", 1000), ("y", 1000)]), lambda h: "x" in h and "y" in h),
    "cancel_timer": (lambda h: h.cancel_timer("p"), lambda h: "p" not in h),
    "cancel_timers": (lambda h: h.cancel_timers(["p", "q"]), lambda h: "p" not in h and "q" not in h),
    "cancel_all_timers": (lambda h: h.cancel_all_timers(), lambda h: "p" not in h and "q" not in h),
}
PARTIAL: dict[str, Effect] = {  # what a half-applied call would leave
    "set_timers": lambda h: ("x" in h) != ("y" in h),
    "cancel_timers": lambda h: ("p" in h) != ("q" in h),
    "cancel_all_timers": lambda h: ("p" in h) != ("q" in h),
}


async def _cancel_after(
    steps: int,
    awaitable: Awaitable[Any],
    manager: TimerManager,
    fill: Callable[[], Any],
    seen: set[str],
    look: Callable[[asyncio.Task[Any]], None] | None = None,
) -> tuple[str, asyncio.Task[None]]:
    """Start ``awaitable`` in a task on a manager not yet running, fill its command queue before the
    task's first step (so the call finds no room), start ``run()`` after one loop iteration, and
    cancel the call after ``steps`` iterations. Return how the call ended and the run() task.
    ``seen`` collects the states calls were cancelled in: "waiting" for room, "woken" (room
    promised, not yet queued); ``look`` sees the call's task just before it is cancelled."""
    task = asyncio.ensure_future(awaitable)
    fill()
    run: asyncio.Task[None] | None = None
    for step in range(steps):
        if step == 1:
            run = asyncio.ensure_future(manager.run())
        await asyncio.sleep(0)
    if manager._runner.promised:
        seen.add("woken")
    elif manager._runner.senders:
        seen.add("waiting")
    if look is not None:
        look(task)
    task.cancel()
    if run is None:
        run = asyncio.ensure_future(manager.run())
    try:
        await asyncio.wait_for(asyncio.shield(task), HANG)
    except asyncio.CancelledError:
        return "cancelled", run
    return "returned", run


def _blocker(handle: TimerHandle) -> Callable[[], None]:
    """Fill a command queue of one."""
    return lambda: handle.try_set_timer("blocker", 1000)


def _assert_nothing_left(manager: TimerManager) -> None:
    core = manager._runner
    assert not core.senders, "a sender was left waiting"
    assert core.promised == 0, "room promised to a cancelled caller was never passed on"
    assert not core.receivers, "a cancelled receiver was left behind"
    assert core.admission is None or core.admission.reserved == {}, "a max_timers place was kept"


async def _stops(manager: TimerManager, handle: TimerHandle, run: asyncio.Task[None]) -> None:
    await asyncio.wait_for(handle.shutdown(), HANG)
    await asyncio.wait_for(run, HANG)


@pytest.mark.parametrize("method", sorted(SENDS))
async def test_a_send_cancelled_at_each_suspension_point_has_all_or_none_of_its_effect(method: str) -> None:
    """The call waits for room in a full command queue of one, and is cancelled after 0..N iterations
    (waiting; woken with room promised but not yet run; done). Catches: a cancelled call whose
    commands were queued anyway, half a batch queued, room promised to a cancelled caller and never
    passed on (the next caller hangs), a max_timers place kept."""
    call, effect = SENDS[method]
    outcomes = set()
    seen: set[str] = set()
    for steps in range(MAX_STEPS):
        manager, handle = TimerManager.new("cancel", 0, 3, 8, max_timers=100)

        def fill(handle: TimerHandle = handle) -> None:  # the three places, before the call's first step
            handle.try_set_timers([("p", 1000), ("q", 1000), ("blocker", 1000)])

        outcome, run = await _cancel_after(steps, call(handle), manager, fill, seen)
        outcomes.add(outcome)
        await asyncio.wait_for(handle.flush(), HANG)
        assert effect(handle) == (outcome == "returned"), (steps, outcome)
        if method in PARTIAL:
            assert not PARTIAL[method](handle), f"half of the batch was applied (after {steps} steps)"
        _assert_nothing_left(manager)
        # The next caller is not blocked by anything the cancelled one left.
        await asyncio.wait_for(handle.set_timer("after", 1000), HANG)
        await _stops(manager, handle, run)
        if outcome == "returned" and steps > 3:
            break
    assert outcomes == {"cancelled", "returned"}, outcomes
    assert seen == {"waiting", "woken"}, seen


FLUSHES: dict[str, Call] = {  # flush() and the queries that flush first (when anything is queued)
    "flush": lambda h: h.flush(),
    "get_deadline": lambda h: h.get_deadline("blocker"),
    "get_pending_count": lambda h: h.get_pending_count(),
    "get_next_deadline": lambda h: h.get_next_deadline(),
}


@pytest.mark.parametrize("method", sorted(FLUSHES))
async def test_flush_cancelled_at_each_suspension_point_leaves_nothing_behind(method: str) -> None:
    """flush() (or a query, which flushes first) waits for room, then for its marker to be applied; cancelled
    at either, nothing is left, not even its marker in the command queue, and later flushes and the shutdown
    work. Catches: a flush marker resolving a cancelled future (InvalidStateError), a waiter left behind, a
    cancelled call's marker left queued (it held a place in the bounded queue until the next pass)."""
    seen: set[str] = set()
    outcomes = set()
    for steps in range(MAX_STEPS):
        manager, handle = TimerManager.new("flush", 0, 1, 8)
        runner = manager._runner
        left: list[int] = []

        async def call(handle: TimerHandle = handle, left: list[int] = left) -> Any:
            try:
                return await FLUSHES[method](handle)
            except asyncio.CancelledError:
                # As the cancellation arrives: nothing queued but the blocker, if it is not applied yet.
                left.append(handle._runner.engine.queued() - (0 if "blocker" in handle else 1))
                raise

        def look(task: asyncio.Task[Any], handle: TimerHandle = handle) -> None:
            runner = handle._runner
            if not task.done() and not runner.senders and "blocker" in handle and runner.engine.queued():
                seen.add("marker queued")  # the call waits for its marker, the only command queued

        outcome, run = await _cancel_after(steps, call(), manager, _blocker(handle), seen, look)
        outcomes.add(outcome)
        assert left in ([], [0]), f"the cancelled call left {left} command(s) queued (after {steps} steps)"
        await asyncio.wait_for(handle.flush(), HANG)
        _assert_nothing_left(manager)
        assert runner.engine.queued() == 0
        await _stops(manager, handle, run)
    assert outcomes == {"cancelled", "returned"}, outcomes
    assert seen == {"waiting", "woken", "marker queued"}, seen


@pytest.mark.parametrize("method", sorted(FLUSHES))
async def test_a_flush_cancelled_while_its_marker_waits_leaves_no_place_taken(method: str) -> None:
    """Before run(): a set and a flush() (or query) marker fill a command queue of two; the call is cancelled.
    Its marker is withdrawn: the queue has room again for a try_ call, and only the set is applied. Catches: the
    cancelled call's marker kept queued (the try_ call raised QueueFull)."""
    manager, handle = TimerManager.new("withdraw", 0, 2, 8)
    handle.try_set_timer("x", 1000)
    call = asyncio.ensure_future(FLUSHES[method](handle))
    for _ in range(3):
        await asyncio.sleep(0)
    assert manager._runner.engine.queued() == 2  # the set and the marker, which waits
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert manager._runner.engine.queued() == 1, "the cancelled call's marker is still queued"
    handle.try_set_timer("y", 1000)  # the marker's place is free again
    run = asyncio.ensure_future(manager.run())
    await asyncio.wait_for(handle.flush(), HANG)
    assert "x" in handle and "y" in handle
    _assert_nothing_left(manager)
    await _stops(manager, handle, run)


async def test_shutdown_cancelled_at_each_suspension_point_either_stops_the_manager_or_leaves_it_open() -> None:
    """shutdown() waiting for room, cancelled: the manager takes commands again and a later shutdown()
    stops it; if it returned, run() ends. Catches (issue 12, defect 3): a cancelled shutdown leaving the
    manager closed with no SHUTDOWN queued, so that run() never returns and open() hangs."""
    outcomes = set()
    seen: set[str] = set()
    for steps in range(MAX_STEPS):
        manager, handle = TimerManager.new("shutdown", 0, 1, 8)
        outcome, run = await _cancel_after(steps, handle.shutdown(), manager, _blocker(handle), seen)
        outcomes.add(outcome)
        if outcome == "returned":
            await asyncio.wait_for(run, HANG)
            continue
        await asyncio.wait_for(handle.set_timer("still open", 1000), HANG)
        await asyncio.wait_for(handle.flush(), HANG)
        assert "still open" in handle
        _assert_nothing_left(manager)
        await _stops(manager, handle, run)
    assert outcomes == {"cancelled", "returned"}, outcomes
    assert seen == {"waiting", "woken"}, seen


async def test_one_of_two_shutdown_calls_cancelled_the_other_still_stops_the_manager() -> None:
    """Two shutdown() calls wait for the same SHUTDOWN; the first is cancelled: the second still returns
    and run() ends. Catches: the later call returning at once while the earlier one's cancellation
    reopens the manager."""
    manager, handle = TimerManager.new("two", 0, 1, 8)
    run = asyncio.ensure_future(manager.run())
    handle.try_set_timer("blocker", 1000)
    first = asyncio.ensure_future(handle.shutdown())
    await asyncio.sleep(0)
    second = asyncio.ensure_future(handle.shutdown())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, HANG)
    await asyncio.wait_for(run, HANG)
    assert first.cancelled() or first.exception() is None


@pytest.mark.parametrize("receive", ["recv_event", "recv_events", "anext"])
async def test_a_receive_cancelled_at_each_suspension_point_loses_no_event(receive: str) -> None:
    """The receiver waits for an event, which falls due; it is cancelled after 0..N iterations (waiting;
    woken but not yet run; done). A cancelled receive took nothing: the event is received by the next
    call. Catches: an event taken by a cancelled receiver, a wake-up not passed on, waiters left behind."""
    outcomes = set()
    seen: set[str] = set()
    for steps in range(MAX_STEPS):
        manager, handle = TimerManager.new("recv", 0, 8, 8)
        run = asyncio.ensure_future(manager.run())
        await handle.flush()  # the manager's first pass is done: nothing else is scheduled
        if receive == "recv_event":
            awaitable: Awaitable[Any] = handle.recv_event()
        elif receive == "recv_events":
            awaitable = handle.recv_events(4)
        else:
            awaitable = handle.__anext__()
        task = asyncio.ensure_future(awaitable)
        for step in range(steps):
            if step == 1:  # the receiver has waited one iteration already
                handle.try_set_timer("due", 0.0)
            await asyncio.sleep(0)
        if manager._runner.receivers:
            seen.add("waiting")
        elif manager.stats().events_ready and not task.done():
            seen.add("woken")
        task.cancel()
        if steps <= 1:
            handle.try_set_timer("due", 0.0)
        try:
            result = await asyncio.wait_for(asyncio.shield(task), HANG)
        except asyncio.CancelledError:
            outcomes.add("cancelled")
            event = await asyncio.wait_for(handle.recv_event(), HANG)
            assert event is not None and event.name == "due"
        else:
            outcomes.add("returned")
            names = [e.name for e in result] if isinstance(result, list) else [result.name]
            assert names == ["due"]
            assert handle.try_recv_events(4) == []
        _assert_nothing_left(manager)
        await _stops(manager, handle, run)
    assert outcomes == {"cancelled", "returned"}, outcomes
    assert seen == {"waiting", "woken"}, seen


async def test_receivers_polling_an_idle_manager_with_a_timeout_leave_no_waiters() -> None:
    """6,000 recv_event()/recv_events() calls time out on an idle manager: no waiter is kept. Catches
    (issue 12, defect 4): every timed-out receive leaving its waiter behind until an event or the stop."""
    manager, handle = TimerManager.new("idle", 0, 8, 8)
    run = asyncio.ensure_future(manager.run())
    for index in range(3000):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(handle.recv_event(), 0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(handle.recv_events(4), 0 if index % 2 else 1e-6)
    assert len(manager._runner.receivers) == 0
    await _stops(manager, handle, run)
