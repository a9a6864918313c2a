"""Feature: no stale events. Once a cancel or a set of a name has been applied, no event for that
timer's earlier deadline is received, even if it had fallen due and sat in the event queue; the
retracted event frees its place there, and ``stats().retracted`` counts it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support import now, recv, running, virtual

from timer_manager import QueueEmpty, TimerExpired, TimerHandle

pytestmark = pytest.mark.usefixtures("core")

# A re-set given the handle and the current loop time, and the new deadline it sets (relative).
RESETS: dict[str, tuple[Callable[[TimerHandle, float], Any], float]] = {
    "set_timer": (lambda h, t: h.set_timer("a", 0.5), 0.5),
    "try_set_timer": (lambda h, t: h.try_set_timer("a", 0.5), 0.5),
    "set_timer_at": (lambda h, t: h.set_timer_at("a", t + 0.25), 0.25),
    "try_set_timer_at": (lambda h, t: h.try_set_timer_at("a", t + 0.25), 0.25),
    "set_timer_at_same_deadline": (lambda h, t: h.set_timer_at("a", t - 1), -1.0),
    "set_interval": (lambda h, t: h.set_interval("a", 0.75), 0.75),
    "try_set_interval": (lambda h, t: h.try_set_interval("a", 0.75), 0.75),
    "set_timers": (lambda h, t: h.set_timers([("a", 0.5)]), 0.5),
    "try_set_timers": (lambda h, t: h.try_set_timers([("a", 0.5)]), 0.5),
    "set_timer_zero": (lambda h, t: h.set_timer("a", 0), 0.0),
}

CANCELS: dict[str, Callable[[TimerHandle], Any]] = {
    "cancel_timer": lambda h: h.cancel_timer("a"),
    "try_cancel_timer": lambda h: h.try_cancel_timer("a"),
    "cancel_timers": lambda h: h.cancel_timers(["a"]),
    "try_cancel_timers": lambda h: h.try_cancel_timers(["a"]),
    "cancel_all_timers": lambda h: h.cancel_all_timers(),
    "try_cancel_all_timers": lambda h: h.try_cancel_all_timers(),
}


async def run_command(result: Any) -> None:
    if asyncio.iscoroutine(result):
        await result


@virtual
@pytest.mark.parametrize("kind", list(CANCELS))
async def test_cancel_retracts_an_event_that_fell_due_but_was_not_received(kind: str) -> None:
    """ "a" fell due at t0+1 and its event waits; a cancel applied afterwards retracts it, the other
    waiting event is still received (cancel_all retracts both). Catches: a cancel (of any form) leaving the
    stale event in place, or retracting the wrong one."""
    async with running() as (manager, handle, _task):
        t0 = now()
        await handle.set_timer("a", 1)
        await handle.set_timer("b", 1.5)
        await asyncio.sleep(2)
        assert manager.stats().events_ready == 2
        await run_command(CANCELS[kind](handle))
        await handle.flush()
        everything = kind.endswith("cancel_all_timers")  # which retracts "b"'s event too
        expected = [] if everything else [TimerExpired("b", t0 + 1.5)]
        assert handle.try_recv_events(10) == expected
        with pytest.raises(QueueEmpty):
            handle.try_recv_event()
        await asyncio.sleep(10)
        with pytest.raises(QueueEmpty):
            handle.try_recv_event()
        stats = manager.stats()
        assert stats.retracted == (2 if everything else 1)
        assert stats.events_ready == 0


@virtual
@pytest.mark.parametrize("kind", list(RESETS))
async def test_reset_retracts_the_earlier_deadlines_event(kind: str) -> None:
    """ "a" fell due at t0+1, unreceived; a re-set (any set form) applied at t0+2 retracts it: the only
    event for "a" received is for the new deadline, after "b"'s. Catches: a set form that does not
    retract (the t0+1 event would be received first, or twice)."""
    async with running() as (manager, handle, _task):
        t0 = now()
        await handle.set_timer("a", 1)
        await handle.set_timer("b", 1.5)
        await asyncio.sleep(2)
        make, offset = RESETS[kind]
        await run_command(make(handle, now()))
        await handle.flush()
        assert await recv(handle) == TimerExpired("b", t0 + 1.5)
        event = await recv(handle)
        assert event.name == "a"
        assert event.deadline == t0 + 2 + offset
        assert manager.stats().retracted == 1
        await handle.cancel_timer("a")  # the interval forms would go on
        await handle.flush()
        assert handle.try_recv_events(10) == []


@virtual
async def test_reset_before_receiving_keeps_deadline_order_of_the_rest() -> None:
    """The re-set "a" lands behind "b" and "c" in the event queue, in deadline order. Catches: the new
    event taking the retracted one's place at the front."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_timers([("a", 1), ("b", 1.25), ("c", 1.5)])
        await asyncio.sleep(2)
        await handle.set_timer("a", 0)
        await handle.flush()
        assert await handle.recv_events(10) == [
            TimerExpired("b", t0 + 1.25),
            TimerExpired("c", t0 + 1.5),
            TimerExpired("a", t0 + 2),
        ]


@virtual
async def test_retracted_event_frees_its_place_in_a_full_event_queue() -> None:
    """event_buffer_size=1: "a"'s event fills the queue and "b" (due) waits for room; cancelling "a"
    retracts its event and "b" now gets in. Catches: a retraction that does not free the place (b
    would stay waiting), and the retracted counter."""
    async with running(events=1) as (manager, handle, _task):
        t0 = now()
        await handle.set_timer("a", 1)
        await handle.set_timer("b", 2)
        await asyncio.sleep(3)
        stats = manager.stats()
        assert (stats.events_ready, stats.live, stats.waiting_for_room) == (1, 1, 1)
        await handle.cancel_timer("a")
        await handle.flush()
        assert handle.try_recv_events(10) == [TimerExpired("b", t0 + 2)]
        stats = manager.stats()
        assert (stats.retracted, stats.live, stats.fired) == (1, 0, 2)


@virtual
async def test_many_retractions_keep_the_rest_receivable_in_order() -> None:
    """200 events wait; 150 of them are retracted (enough to make the event queue compact itself);
    the 50 others come out exactly, in deadline order, and then nothing. Catches: losing or
    resurrecting events when retracted ones pile up."""
    async with running(commands=256, events=256) as (manager, handle, _task):
        t0 = now()
        await handle.set_timers([(f"t{i:03}", 1 + i / 256) for i in range(200)])
        await asyncio.sleep(3)
        assert manager.stats().events_ready == 200
        keep = [i for i in range(200) if i % 4 == 0]
        await handle.cancel_timers([f"t{i:03}" for i in range(200) if i % 4])
        await handle.flush()
        assert await handle.recv_events(1000) == [TimerExpired(f"t{i:03}", t0 + 1 + i / 256) for i in keep]
        assert handle.try_recv_events(1000) == []
        assert manager.stats().retracted == 150


@virtual
async def test_unrelated_commands_retract_nothing() -> None:
    """A cancel of another name (pending or not) and a set of a third name leave waiting events alone.
    Catches: over-eager retraction."""
    async with running() as (manager, handle, _task):
        t0 = now()
        await handle.set_timer("a", 1)
        await handle.set_timer("pending", 50)
        await asyncio.sleep(2)
        await handle.cancel_timer("nope")
        await handle.cancel_timer("pending")
        await handle.set_timer("other", 50)
        await handle.flush()
        assert handle.try_recv_events(10) == [TimerExpired("a", t0 + 1)]
        assert manager.stats().retracted == 0


async def test_no_stale_event_in_real_time() -> None:
    """The same rule in real time, on every loop: a timer due at once, cancelled before its event is
    received, never shows up. Catches: no retraction (on uvloop too)."""
    async with running(heartbeat=0.001) as (manager, handle, _task):
        await handle.set_timer("a", 0)
        await handle.set_timer("b", 0)
        while manager.stats().events_ready < 2:
            await asyncio.sleep(0.001)
        await handle.cancel_timer("a")
        await handle.set_timer("b", 0.01)
        await handle.flush()
        event = await recv(handle, 5)
        assert event.name == "b"
        assert event.deadline > 0
        with pytest.raises(QueueEmpty):
            handle.try_recv_event()
        assert manager.stats().retracted == 2


# A receive made right after a command, with no await between that lets the manager run: the event it returns
# (or None if there is none now), and what it leaves (nothing: each form takes one event).
async def _take_recv_event(handle: TimerHandle) -> TimerExpired | None:
    try:
        return await asyncio.wait_for(handle.recv_event(), 0.25)
    except asyncio.TimeoutError:
        return None


def _take_try_recv_event(handle: TimerHandle) -> TimerExpired | None:
    try:
        return handle.try_recv_event()
    except QueueEmpty:
        return None


async def _take_recv_events(handle: TimerHandle) -> TimerExpired | None:
    try:
        (event,) = await asyncio.wait_for(handle.recv_events(1), 0.25)
    except asyncio.TimeoutError:
        return None
    return event


def _take_try_recv_events(handle: TimerHandle) -> TimerExpired | None:
    events = handle.try_recv_events(1)
    return events[0] if events else None


async def _take_async_for(handle: TimerHandle) -> TimerExpired | None:
    async def first() -> TimerExpired:
        async for event in handle:
            return event
        raise AssertionError("the manager stopped")

    try:
        return await asyncio.wait_for(first(), 0.25)
    except asyncio.TimeoutError:
        return None


RECEIVES: dict[str, Callable[[TimerHandle], Any]] = {
    "recv_event": _take_recv_event,
    "try_recv_event": _take_try_recv_event,
    "recv_events": _take_recv_events,
    "try_recv_events": _take_try_recv_events,
    "async_for": _take_async_for,
}

# A command that retracts "a"'s waiting event, sent with no await that lets the manager apply it: the awaitable
# forms have room and return without yielding; a thread's call returns once handed over (the loop is blocked
# meanwhile, so nothing applies it before the receive). What "a"'s next event is then: none, or one due later.
RETRACTING: dict[str, tuple[Callable[[TimerHandle], Any], bool]] = {
    "try_cancel_timer": (lambda h: h.try_cancel_timer("a"), False),
    "cancel_timer": (lambda h: h.cancel_timer("a"), False),
    "try_cancel_all_timers": (lambda h: h.try_cancel_all_timers(), False),
    "try_set_timer": (lambda h: h.try_set_timer("a", 0.1), True),
    "set_timer": (lambda h: h.set_timer("a", 0.1), True),
    "set_timers": (lambda h: h.set_timers([("a", 0.1)]), True),
    "thread_cancel_timer": (lambda h: _from_a_thread(lambda: h.threadsafe().cancel_timer("a")), False),
    "thread_try_set_timer": (lambda h: _from_a_thread(lambda: h.threadsafe().try_set_timer("a", 0.1)), True),
}


def _from_a_thread(call: Callable[[], Any]) -> None:
    """Make ``call`` on another thread and wait for it here, blocking the loop: what it handed over stays
    handed over until the loop runs again."""
    failures: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and not failures, failures


@virtual
@pytest.mark.parametrize("command", list(RETRACTING))
@pytest.mark.parametrize("receive", list(RECEIVES))
async def test_a_receive_right_after_a_retracting_command_never_returns_the_retracted_event(
    command: str, receive: str
) -> None:
    """ "a" fell due and its event waits; a cancel or a re-set of "a" returns, and at once (no await that lets
    the manager run its pass) the program receives. The commands sent before a receive are applied before it
    takes an event, so the retracted event never comes: a receive gets nothing, or "a"'s event for its new
    deadline. Catches: a receive that takes what is ready while the commands that retract it still wait in the
    queue (or, from a thread, handed over), as the receives did when no flush() came between."""
    async with running() as (manager, handle, _task):
        t0 = now()
        await handle.set_timer("a", 1)
        await asyncio.sleep(2)
        assert manager.stats().events_ready == 1
        send, rearmed = RETRACTING[command]
        if command.startswith("try_cancel_all"):
            await handle.set_timer("b", 5)  # applied below, with the cancel, before the receive
        await run_command(send(handle))
        got = await run_command_value(RECEIVES[receive](handle))
        assert got is None or (rearmed and got.name == "a" and got.deadline > t0 + 1), got
        await handle.flush()
        rest = handle.try_recv_events(10)
        assert all(event.deadline > t0 + 1 for event in rest), rest
        assert manager.stats().retracted == 1


async def run_command_value(result: Any) -> Any:
    if asyncio.iscoroutine(result):
        return await result
    return result
