"""Feature: ``manager.stats()`` returns a frozen dataclass ``TimerStats`` of counters and gauges."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from support import now, recv, running, virtual

from timer_manager import TimerExpired, TimerManager, TimerStats

pytestmark = pytest.mark.usefixtures("core")

FIELDS = (
    "live",
    "set",
    "reset",
    "cancelled",
    "fired",
    "retracted",
    "waiting_for_room",
    "command_queue_high_water",
    "event_queue_high_water",
    "lateness_p50",
    "lateness_p99",
)


async def test_stats_is_a_frozen_dataclass_starting_at_zero() -> None:
    """A new manager's stats: a frozen TimerStats dataclass with the documented fields, all zero.
    Catches: a missing field, a mutable snapshot, a non-zero start."""
    manager, _ = TimerManager.new("stats", 0, 4, 4)
    stats = manager.stats()
    assert isinstance(stats, TimerStats)
    assert dataclasses.is_dataclass(stats)
    names = {field.name for field in dataclasses.fields(stats)}
    assert set(FIELDS) <= names
    for name in FIELDS:
        assert getattr(stats, name) == 0, name
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.live = 5  # type: ignore[misc]
    assert manager.stats() == stats  # a snapshot: equal while nothing happened


@virtual
async def test_stats_count_exactly_over_a_scripted_sequence() -> None:
    """Every counter after a scripted sequence (heartbeat 0, event queue of 2). Catches: any counter
    counted in the wrong place (sets vs re-sets, cancels of absent names, retractions, fires, room
    waits, high-water marks, lateness percentiles)."""
    async with running(commands=8, events=2) as (manager, handle, _task):
        t0 = now()
        # The manager has no turn until the flush: the sets queue behind the first command (with nothing queued,
        # a set would be applied at the call).
        handle.try_cancel_timer("nope")  # not pending: not counted
        handle.try_set_timer("a", 1)
        handle.try_set_timer("b", 2)
        handle.try_set_timer("c", 3)
        handle.try_set_timer("d", 10)
        handle.try_set_timer("d", 20)  # a re-set
        handle.try_cancel_timer("c")  # cancels a pending timer
        snapshot = manager.stats()  # a snapshot does not change later
        await handle.flush()  # the 8th queued command
        assert snapshot.set == 0
        stats = manager.stats()
        assert (stats.live, stats.set, stats.reset, stats.cancelled, stats.fired) == (3, 4, 1, 1, 0)
        assert stats.command_queue_high_water == 8

        await asyncio.sleep(2.5)  # a@1 and b@2 fired, on time; both wait
        stats = manager.stats()
        assert (stats.live, stats.fired, stats.event_queue_high_water, stats.waiting_for_room) == (1, 2, 2, 0)
        handle.try_set_timer("e", 0.5)  # due at t0+3, but the event queue is full
        await asyncio.sleep(1)  # t0+3.5
        stats = manager.stats()
        assert (stats.live, stats.set, stats.fired, stats.waiting_for_room) == (2, 5, 2, 1)

        assert await recv(handle) == TimerExpired("a", t0 + 1)  # room: e gets in, 0.5 s late
        await handle.set_timer("b", 0)  # b's t0+2 event is retracted; b set anew, fires at once
        await handle.flush()
        assert await recv(handle) == TimerExpired("e", t0 + 3)
        assert await recv(handle) == TimerExpired("b", t0 + 3.5)
        await handle.cancel_all_timers()  # cancels d
        await handle.flush()
        stats = manager.stats()
        assert stats.live == 0
        assert stats.set == 6
        assert stats.reset == 1
        assert stats.cancelled == 2
        assert stats.fired == 4
        assert stats.retracted == 1
        assert stats.waiting_for_room == 1
        assert stats.command_queue_high_water == 8
        assert stats.event_queue_high_water == 2
        assert stats.lateness_p50 == 0.0  # lateness samples: 0, 0, 0.5, 0
        assert stats.lateness_p99 == 0.5


@virtual
async def test_lateness_percentiles_follow_the_heartbeat_grid() -> None:
    """heartbeat 1 s: timers due at +0.25, +0.5, +0.75 are all made ready at the tick +1, so their
    lateness is 0.75, 0.5 and 0.25 s: p50 = 0.5, p99 = 0.75. Catches: lateness not measured, measured
    from the wrong moment, or wrong percentiles."""
    async with running(heartbeat=1.0) as (manager, handle, _task):
        await handle.set_timers([("x", 0.75), ("y", 0.5), ("z", 0.25)])
        events = await handle.recv_events(10)
        assert [e.name for e in events] == ["z", "y", "x"]
        stats = manager.stats()
        assert stats.lateness_p50 == 0.5
        assert stats.lateness_p99 == 0.75
        assert stats.fired == 3


@virtual
async def test_waiting_for_room_counts_each_episode_and_intervals_count_each_tick() -> None:
    """Two separate episodes of a full event queue count 2; an interval's set counts once, each tick as
    a fire. Catches: counting room waits per wake-up or per timer, re-arms counted as sets."""
    async with running(events=1) as (manager, handle, _task):
        await handle.set_timers([("a", 1), ("b", 1)])
        await asyncio.sleep(2)
        assert manager.stats().waiting_for_room == 1
        assert len(await handle.recv_events(5)) == 1
        await asyncio.sleep(0)
        assert len(await handle.recv_events(5)) == 1
        await asyncio.sleep(1)
        await handle.set_timers([("c", 1), ("d", 1)])
        await asyncio.sleep(2)
        assert manager.stats().waiting_for_room == 2
        await handle.recv_events(5)
        await handle.recv_events(5)
        before = manager.stats()
        await handle.set_interval("i", 1)
        for _ in range(3):
            await recv(handle)
        stats = manager.stats()
        assert stats.set == before.set + 1
        assert stats.reset == before.reset
        assert stats.fired == before.fired + 3


@virtual
async def test_a_repeating_timer_whose_event_waits_is_counted_as_pending() -> None:
    """A repeating timer whose event waits to be received is pending (``live`` counts it, and so do ``in``
    and ``max_timers``), and the counters treat it so: cancelling it counts in ``cancelled`` (by
    ``cancel_timer`` and by ``cancel_all_timers``), a set of its name replaces a pending timer (``reset``, not
    ``set``), and a touch of it, like a touch of any pending timer, counts as neither. Catches: the counters
    reading the table alone, which such a timer has left (the cancels went uncounted, the re-set and the
    touch were counted as sets that created a timer)."""
    async with running() as (manager, handle, _task):
        await handle.set_interval("i", 1)
        await asyncio.sleep(1.5)  # i's event waits: it is parked, still pending
        assert "i" in handle and manager.stats().live == 1
        await handle.cancel_timer("i")
        await handle.flush()
        stats = manager.stats()
        assert (stats.live, stats.set, stats.reset, stats.cancelled, stats.retracted) == (0, 1, 0, 1, 1)

        await handle.set_interval("j", 1)
        await asyncio.sleep(1.5)  # j's event waits
        await handle.set_timer("j", 100)  # replaces the pending repeating timer with a one-shot
        await handle.flush()
        stats = manager.stats()
        assert (stats.live, stats.set, stats.reset, stats.cancelled, stats.retracted) == (1, 2, 1, 1, 2)

        await handle.set_interval("k", 1)
        await asyncio.sleep(1.5)  # k's event waits
        assert handle.touch("k")  # its event is withdrawn, its next tick one period from now
        stats = manager.stats()
        assert (stats.live, stats.set, stats.reset, stats.cancelled, stats.retracted) == (2, 3, 1, 1, 3)

        await handle.set_interval("m", 10, first=0)  # due at once: its event waits
        await asyncio.sleep(0.25)
        assert manager.stats().events_ready == 1
        await handle.cancel_all_timers()  # j and k in the table, m parked
        await handle.flush()
        stats = manager.stats()
        assert (stats.live, stats.set, stats.reset, stats.cancelled, stats.retracted) == (0, 4, 1, 4, 4)
        assert stats.fired == 4  # i, j, k, m once each


async def test_the_managers_repr_counts_the_pending_timers_as_live_does() -> None:
    """``repr(manager)`` shows the pending count ``stats().live`` shows: a repeating timer whose event waits
    (out of the table, still pending) counts. Catches: the repr counting the table alone (1 timer, live 2)."""
    async with running() as (manager, handle, _task):
        await handle.set_timer("one-shot", 100)
        await handle.set_interval("m", 10, first=0)  # due at once: its event waits, the timer parked
        while manager.stats().events_ready < 1:
            await asyncio.sleep(0.001)
        assert manager.stats().live == handle.pending_count() == 2
        assert repr(manager) == "<TimerManager 'test' running, 2 timers>"
        assert await recv(handle) is not None  # received: back in the table
        await handle.flush()
        assert repr(manager) == "<TimerManager 'test' running, 2 timers>"
