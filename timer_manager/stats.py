"""Counters and gauges of a running manager."""

from __future__ import annotations

from dataclasses import dataclass

from ._runner import Runner

__all__ = ("TimerStats",)


@dataclass(frozen=True, slots=True)
class TimerStats:
    """A snapshot of a manager's counters, from :meth:`TimerManager.stats`.

    ``set`` counts sets that created a timer and ``reset`` those that replaced a pending one;
    ``cancelled`` counts pending timers cancelled (a repeating timer whose event waits to be received is
    pending, as ``live`` counts it; a touch counts in neither, unless it re-armed a one-shot timer whose
    event waited: a timer created, in ``set``);
    ``retracted`` counts events withdrawn from the event queue by a cancel or re-set before they
    were received; ``waiting_for_room`` counts the times due timers found the event queue full
    (each also logged as a WARNING). The lateness percentiles are seconds between a timer's
    deadline and the moment the manager made its event ready, over the last 1024 events.

    On a remote backend (Redis), ``live`` is the whole namespace's count and ``fired`` counts the events
    this manager promoted; ``refused`` counts sets the server refused under ``max_timers``;
    ``backend_overdue`` counts timers past their deadline not yet promoted, and
    ``backend_unacknowledged`` promoted events not yet acknowledged (read or not), as the server last
    reported them. The local backend reports 0, None and None there.
    """

    live: int
    set: int
    reset: int
    cancelled: int
    fired: int
    retracted: int
    waiting_for_room: int
    command_queue_high_water: int
    event_queue_high_water: int
    events_ready: int
    lateness_p50: float
    lateness_p99: float
    refused: int = 0
    backend_overdue: int | None = None
    backend_unacknowledged: int | None = None


def snapshot(runner: Runner) -> TimerStats:
    """Read a :class:`TimerStats` off ``runner``; costs O(window) for the percentiles, nothing on the hot path."""
    engine = runner.engine
    refused, overdue, unacknowledged = runner.store.counts()
    window = sorted(engine.lateness_window())
    p50 = window[(len(window) - 1) // 2] if window else 0.0
    p99 = window[min(len(window) - 1, (len(window) * 99) // 100)] if window else 0.0
    return TimerStats(
        live=engine.live_count(),
        set=engine.count_set,
        reset=engine.count_reset,
        cancelled=engine.count_cancelled,
        fired=engine.count_fired,
        retracted=engine.count_retracted,
        waiting_for_room=runner.count_room_waits,
        command_queue_high_water=engine.command_high_water,
        event_queue_high_water=engine.event_high_water,
        events_ready=engine.ready_count(),
        lateness_p50=p50,
        lateness_p99=p99,
        # A remote backend's own figures, as its server last reported them (None for the local backend).
        refused=refused,
        backend_overdue=overdue,
        backend_unacknowledged=unacknowledged,
    )
