"""What the asyncio layer and both engines agree on: the commands, repeating timers, and push results.

Both engines (``_engine_py.Engine`` and the compiled one) import their constants from here, so a
renumbering cannot make them disagree.
"""

from __future__ import annotations

import math
from typing import Any, Optional

__all__ = (
    "CANCEL",
    "CANCEL_ALL",
    "FLUSH",
    "LATENESS_WINDOW",
    "OP_NAMES",
    "QUEUED",
    "QUEUED_FIRST",
    "QUEUE_FULL",
    "SET",
    "SET_INTERVAL",
    "SHUTDOWN",
    "Command",
    "Interval",
)

# Command opcodes. A command is (op, name, value, data).
SET = 0  # value: the deadline
SET_INTERVAL = 1  # value: an Interval
CANCEL = 2
CANCEL_ALL = 3
SHUTDOWN = 4
FLUSH = 5  # value: the future to resolve once applied
OP_NAMES = ("set", "set_interval", "cancel", "cancel_all", "shutdown", "flush")

Command = tuple[int, Optional[str], Any, Any]

# What Engine.push answers. QUEUED_FIRST: the queue was empty, so nothing has asked the manager to run yet.
QUEUE_FULL = 0
QUEUED = 1
QUEUED_FIRST = 2

LATENESS_WINDOW = 1024  # samples kept for the lateness percentiles; a power of two


class Interval:
    """How a repeating timer re-arms: its period, its grid and its missed-tick policy."""

    __slots__ = ("missed", "origin", "period")

    def __init__(self, origin: float, period: float, missed: str) -> None:
        self.origin = origin
        self.period = period
        self.missed = missed

    def __repr__(self) -> str:
        return f"<every {self.period:g}s from {self.origin:g}, missed={self.missed}>"

    def next_deadline(self, previous: float, now: float) -> float:
        """The deadline after the event for ``previous`` was received at ``now``; always later than both."""
        period = self.period
        if self.missed == "burst":
            deadline = previous + period
        elif self.missed == "delay":
            deadline = now + period
        else:
            deadline = self.origin + (math.floor((now - self.origin) / period) + 1) * period
            if deadline <= now:  # float rounding in the division above
                deadline = self.origin + (math.floor((now - self.origin) / period) + 2) * period
        # A period the clock can no longer resolve (the grid drifted far from its origin) must still move
        # the timer forward, or it would fire again at once, for ever.
        floor = now if self.missed != "burst" else previous
        if deadline <= floor:
            deadline = math.nextafter(floor, math.inf)
        return deadline
