"""What the asyncio layer and both engines agree on: the commands, repeating timers, and push results.

Both engines (``_engine_py.Engine`` and the compiled one) import their constants from here, so a
renumbering cannot make them disagree.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sized
from contextlib import AbstractContextManager
from typing import Any, Protocol

from .events import TimerExpired

__all__ = (
    "APPLIED",
    "CANCEL",
    "CANCEL_ALL",
    "FLUSH",
    "LATENESS_WINDOW",
    "OP_NAMES",
    "QUEUED",
    "QUEUED_FIRST",
    "QUEUE_FULL",
    "SET",
    "SETTLE_AHEAD",
    "SET_INTERVAL",
    "SHUTDOWN",
    "TOUCH",
    "Command",
    "EngineInterface",
    "Interval",
    "withdraw_flush",
)

# Command opcodes. A command is (op, name, value, data).
SET = 0  # value: the deadline, or (deadline, span): span is what a touch adds to its now (default 0)
SET_INTERVAL = 1  # value: an Interval
CANCEL = 2
CANCEL_ALL = 3
SHUTDOWN = 4
FLUSH = 5  # value: the future to resolve once applied
TOUCH = 6  # value: the loop time of the touch call
OP_NAMES = ("set", "set_interval", "cancel", "cancel_all", "shutdown", "flush", "touch")

Command = tuple[int, str | None, Any, Any]

# What Engine.push answers. QUEUED_FIRST: the queue was empty, so nothing has asked the manager to run yet.
# APPLIED (Engine.set_now only): applied at the call, and the manager asked to run if it must.
QUEUE_FULL = 0
QUEUED = 1
QUEUED_FIRST = 2
APPLIED = 3

# How far ahead a pass of the manager puts back touched timers, as a share of each one's span: a touched
# timer at the top of the heap with its old deadline would otherwise wake the manager for nothing, once
# per heartbeat tick in a busy server (a wake-up costs what 30 to 150 re-inserts cost). A timer touched
# all the time is then re-inserted once per 7/8 of its span, and such wake-ups come at most 8 times per span.
SETTLE_AHEAD = 0.125
LATENESS_WINDOW = 1024  # samples kept for the lateness percentiles; a power of two


def withdraw_flush(commands: deque[Command], marker: Any) -> bool:
    """Remove from ``commands`` the ``FLUSH`` whose future is ``marker``, keeping the order of the others; return
    whether it was there. Newest first: the marker is usually the last command queued. Not a hot path: a
    cancelled flush or query (``Engine.withdraw`` of the pure-Python and the Redis engines).

    The search reads a copy: Python 3.12 and later run the collector between bytecodes (a loop's jump back, a
    call), and a ``__del__`` it runs may queue or withdraw commands (a handle's call), which changed the deque
    under an iterator of it ("deque mutated during iteration") or under an index computed from it. The copy is
    a list, made before it is filled (before 3.12 an allocation could start a collection: a tuple, grown as the
    deque is read, could mid-copy). The removal is one C call, ``deque.remove``, which runs no Python code here:
    it finds the command by identity, or by an equality that a ``FLUSH`` decides on its opcode or its future,
    neither of which compares user data."""
    for command in reversed(list(commands)):
        if command[2] is marker and command[0] == FLUSH:
            try:
                commands.remove(command)
            except ValueError:  # taken off the queue (applied) by code the collector ran during the search
                return False
            return True
    return False


class Interval:
    """How a repeating timer re-arms: its period, its grid and its missed-tick policy."""

    __slots__ = ("missed", "origin", "period")

    def __init__(self, origin: float, period: float, missed: str) -> None:
        self.origin = origin
        self.period = period
        self.missed = missed

    def __repr__(self) -> str:
        return f"every {self.period:g} s ({self.missed} missed ticks)"

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


class EngineInterface(Protocol):
    """The seam between the asyncio layer (``_runner.Runner``) and an engine: everything the runner asks of
    one. ``_engine_py.Engine`` is the reference; the compiled ``_core_c.Engine`` has the same interface.

    Only the loop's thread calls these, except ``is_live`` and ``live_count``, which ``max_timers``
    admission reads from any thread (under ``lock``).
    """

    table: Any  # the timer table: set, touch, cancel, clear, pop_due, settle, next_deadline, deadline, len, in
    command_capacity: int
    event_capacity: int
    clock: Callable[[], float]  # the loop's clock, set by the runner
    wake: Callable[[], None]  # asks the runner for a pass soon (a repeating timer re-armed, room freed)
    waiting_for_room: bool  # due timers wait for room in the event queue (the runner decides and sets it)
    applies_at_call: bool  # a loop-side set or touch may be applied at the call: running, open, local, not debug
    wake_for: float  # the earliest deadline the runner's armed wake-up is for (inf: none; -inf: a pass is asked for)
    logs_commands: Callable[[], bool]  # whether the runner logs each command it applies
    log_cache: dict[int, bool] | None  # that logger's cache of its answers per level, where it has one
    handed_over: Sized  # the runner's inbox: commands other threads handed over, which a touch waits behind
    halted: bool  # set (from any thread) by a token's cancellation: apply stops before its next command
    reserved: dict[str, int]  # queued sets per name, under max_timers (shared with the admission)
    release: Callable[[str], None]  # called once a set of a reserved name is applied
    admit_rearm: Callable[[str], bool]  # under lock: may a touch re-arm this fired one-shot (max_timers)?
    lock: AbstractContextManager[Any]  # held while a reserved set is applied
    parked: int  # repeating timers whose event is ready
    count_set: int
    count_reset: int
    count_cancelled: int
    count_fired: int
    count_retracted: int
    command_high_water: int
    event_high_water: int

    def queued(self) -> int:
        """How many commands wait to be applied."""

    def push(self, op: int, name: str | None, value: Any, data: Any, /) -> int:
        """Queue a command unless the queue is full: ``QUEUE_FULL``, ``QUEUED`` or ``QUEUED_FIRST``."""

    def push_set(self, name: str, deadline: float, span: float, data: Any, /) -> int:
        """``push(SET, name, (deadline, span), data)``."""

    def set_now(self, name: str, deadline: float, span: float, data: Any, /) -> int:
        """A loop-side set: ``APPLIED`` at once if ``applies_at_call`` and nothing is queued, handed over or being
        logged (waking the runner if ``deadline`` comes before ``wake_for``); else as ``push_set``."""

    def push_all(self, commands: list[Command], /) -> int:
        """Queue ``commands`` whatever the room; answers as ``push``."""

    def withdraw(self, marker: Any, /) -> bool:
        """Remove the queued ``FLUSH`` whose future is ``marker``, if not yet applied; whether it was removed."""

    def apply(self, log: Callable[[int, str | None, Any], None] | None = None, /) -> bool:
        """Apply the queued commands in order; True if a SHUTDOWN was reached."""

    def touch_now(self, name: str, /) -> bool | None:
        """``touch(name, clock())`` if ``applies_at_call`` and nothing is queued or handed over; else None."""

    def touch(self, name: str, now: float, /) -> bool:
        """Make pending ``name`` due at ``now`` + its span, as a set made at ``now`` would; whether it was pending."""

    def discard(self) -> tuple[int, list[Any]]:
        """Drop pending timers and queued commands: (timers dropped, the futures of queued flushes)."""

    def live_count(self) -> int:
        """Pending timers, parked ones included."""

    def is_live(self, name: str, /) -> bool:
        """Whether ``name`` is pending."""

    def pending_deadline(self, name: str, /) -> float | None:
        """The deadline of pending ``name``, or None."""

    def ready_count(self) -> int:
        """Events waiting to be received."""

    def fire(self, bound: float, now: float, /) -> int:
        """Make timers due at ``bound`` ready, as far as the event queue has room; how many."""

    def take_now(self) -> TimerExpired | None:
        """``take()`` if no command waits to be applied (queued or handed over); else None, with nothing taken."""

    def take(self) -> TimerExpired | None:
        """The next receivable event, or None."""

    def take_many(self, limit: int, /) -> list[TimerExpired]:
        """Up to ``limit`` receivable events."""

    def lateness_window(self) -> list[float]:
        """Recent lateness samples, seconds."""
