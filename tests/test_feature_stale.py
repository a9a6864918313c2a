"""Feature: no stale events. Once a cancel or a set of a name has been applied, no event for that
timer's earlier deadline is received, even if it had fallen due and sat in the event queue; the
retracted event frees its place there, and ``stats().retracted`` counts it."""

from __future__ import annotations

import asyncio
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
