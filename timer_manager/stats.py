"""Counters and gauges of a running manager."""

from __future__ import annotations

from dataclasses import dataclass

from ._core import ManagerCore
from .events import _slotted

__all__ = ("TimerStats",)


@_slotted
@dataclass(frozen=True)
class TimerStats:
    """A snapshot of a manager's counters, from :meth:`TimerManager.stats`.

    ``set`` counts sets that created a timer and ``reset`` those that replaced a pending one;
    ``retracted`` counts events withdrawn from the event queue by a cancel or re-set before they
    were received; ``waiting_for_room`` counts the times due timers found the event queue full
    (each also logged as a WARNING). The lateness percentiles are seconds between a timer's
    deadline and the moment the manager made its event ready, over the last 1024 events.
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


def snapshot(core: ManagerCore) -> TimerStats:
    """Read a :class:`TimerStats` off ``core``; costs O(window) for the percentiles, nothing on the hot path."""
    window = sorted(core.lateness)
    p50 = window[(len(window) - 1) // 2] if window else 0.0
    p99 = window[min(len(window) - 1, (len(window) * 99) // 100)] if window else 0.0
    return TimerStats(
        live=len(core.table),
        set=core.count_set,
        reset=core.count_reset,
        cancelled=core.count_cancelled,
        fired=core.count_fired,
        retracted=core.count_retracted,
        waiting_for_room=core.count_room_waits,
        command_queue_high_water=core.command_high_water,
        event_queue_high_water=core.event_high_water,
        events_ready=len(core.ready),
        lateness_p50=p50,
        lateness_p99=p99,
    )
