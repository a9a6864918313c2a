"""The per-timer work of a manager, in pure Python: the typed reference that ``_engine_c.pyx`` mirrors.

An engine holds the command queue, the timer table and the ready events, and does everything whose
cost grows with the number of timers: queueing commands, applying them, moving due timers into the
event queue, and handing events out. The asyncio side (``_core.py``) decides when it runs.

Ready events sit in ``_events`` in order; ``_ready`` maps each name to its one receivable event, so
that a cancel or re-set can retract it. Events in ``_events`` that ``_ready`` no longer points to
were retracted, and are skipped.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable, Optional

from .events import TimerExpired

__all__ = (
    "CANCEL",
    "CANCEL_ALL",
    "FLUSH",
    "LATENESS_WINDOW",
    "OP_NAMES",
    "SET",
    "SET_INTERVAL",
    "SHUTDOWN",
    "Command",
    "Engine",
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

LATENESS_WINDOW = 1024  # samples kept for the lateness percentiles; a power of two


class Interval:
    """How a repeating timer re-arms: its period, its grid and its missed-tick policy."""

    __slots__ = ("missed", "origin", "period")

    def __init__(self, origin: float, period: float, missed: str) -> None:
        self.origin = origin
        self.period = period
        self.missed = missed

    def next_deadline(self, previous: float, now: float) -> float:
        """The deadline after the event for ``previous`` was received at ``now``."""
        period = self.period
        if self.missed == "burst":
            return previous + period
        if self.missed == "delay":
            return now + period
        ticks = math.floor((now - self.origin) / period) + 1
        deadline = self.origin + ticks * period
        while deadline <= now:  # float rounding in the division above
            deadline += period
        return deadline


def _nothing() -> None:
    pass


class Engine:
    """The command queue, the timer table and the ready events of one manager."""

    def __init__(self, table: Any, command_capacity: int, event_capacity: int) -> None:
        self.table = table
        self.command_capacity = command_capacity
        self.event_capacity = event_capacity
        self.clock: Callable[[], float] = _nothing  # type: ignore[assignment]  # the loop's time(), set at bind
        self.wake: Callable[[], None] = _nothing  # asks the manager to run again soon
        self.waiting_for_room = False  # due timers wait for room in the event queue

        self.data: dict[str, Any] = {}
        self.intervals: dict[str, Interval] = {}
        # With max_timers: the new names that queued sets will add, and how many sets queue each.
        self.reserved: dict[str, int] = {}

        self._commands: deque[Command] = deque()
        self._events: deque[TimerExpired] = deque()
        self._ready: dict[str, TimerExpired] = {}
        self._lateness: list[float] = []
        self._lateness_next = 0

        self.count_set = 0
        self.count_reset = 0
        self.count_cancelled = 0
        self.count_fired = 0
        self.count_retracted = 0
        self.command_high_water = 0
        self.event_high_water = 0

    # ------------------------------------------------------------------ the command queue

    def queued(self) -> int:
        """How many commands wait to be applied."""
        return len(self._commands)

    def push(self, op: int, name: str | None, value: Any, data: Any) -> int:
        """Queue a command: 0 if the queue is full, 2 if it was empty (the manager must wake), else 1."""
        commands = self._commands
        length = len(commands)
        if length >= self.command_capacity:
            return 0
        commands.append((op, name, value, data))
        if length >= self.command_high_water:
            self.command_high_water = length + 1
        return 2 if length == 0 else 1

    def push_set(self, name: str, deadline: float, data: Any) -> int:
        """``push(SET, name, deadline, data)``, the hot path."""
        return self.push(SET, name, deadline, data)

    def apply(self, log: Callable[[int, str | None, Any], None] | None = None) -> bool:
        """Apply the queued commands in order; stop after a shutdown and return True if there was one."""
        commands = self._commands
        table = self.table
        if log is not None:
            for op, name, value, _ in commands:
                log(op, name, value)
        while commands:
            op, name, value, data = commands.popleft()
            if op <= SET_INTERVAL:
                if self._ready and name in self._ready:
                    self._retract(name)
                if op == SET_INTERVAL:
                    self.intervals[name] = value  # type: ignore[index]
                    value = value.origin
                elif self.intervals:
                    self.intervals.pop(name, None)  # type: ignore[arg-type]
                if self.reserved:
                    self.release(name)  # type: ignore[arg-type]
                if table.set(name, value):
                    self.count_reset += 1
                else:
                    self.count_set += 1
                if data is not None:
                    self.data[name] = data  # type: ignore[index]
                elif self.data:
                    self.data.pop(name, None)  # type: ignore[arg-type]
            elif op == CANCEL:
                if self._ready and name in self._ready:
                    self._retract(name)
                if table.cancel(name):
                    self.count_cancelled += 1
                if self.intervals:
                    self.intervals.pop(name, None)  # type: ignore[arg-type]
                if self.data:
                    self.data.pop(name, None)  # type: ignore[arg-type]
            elif op == CANCEL_ALL:
                for ready_name in list(self._ready):
                    self._retract(ready_name)
                self.count_cancelled += table.clear()
                self.intervals.clear()
                self.data.clear()
            elif op == FLUSH:
                if not value.done():
                    value.set_result(None)
            else:  # SHUTDOWN
                return True
        return False

    def release(self, name: str) -> None:
        """A set counted against max_timers was applied or dropped."""
        count = self.reserved.get(name, 0)
        if count > 1:
            self.reserved[name] = count - 1
        elif count == 1:
            del self.reserved[name]

    def discard(self) -> tuple[int, list[Any]]:
        """Stop for good: drop pending timers and queued commands.

        Returns how many timers were pending and the futures of queued flushes (to be failed).
        """
        flushes = [value for op, _, value, _ in self._commands if op == FLUSH]
        self._commands.clear()
        pending = self.table.clear()
        self.intervals.clear()
        self.data.clear()
        self.reserved.clear()
        return pending, flushes

    # ------------------------------------------------------------------ the ready events

    def ready_count(self) -> int:
        """How many events wait to be received."""
        return len(self._ready)

    def fire(self, bound: float, now: float) -> int:
        """Move timers due at ``bound`` into the event queue, as far as it has room; return how many."""
        room = self.event_capacity - len(self._ready)
        if room <= 0:
            return 0
        due = self.table.pop_due(bound, room)
        if not due:
            return 0
        ready = self._ready
        events = self._events
        data = self.data
        intervals = self.intervals
        lateness = self._lateness
        position = self._lateness_next
        for name, deadline in due:
            if data:
                payload = data.get(name) if name in intervals else data.pop(name, None)
                event = TimerExpired(name, deadline, payload)
            else:
                event = TimerExpired(name, deadline)
            ready[name] = event
            events.append(event)
            if len(lateness) < LATENESS_WINDOW:
                lateness.append(now - deadline)
            else:
                lateness[position] = now - deadline
                position = (position + 1) & (LATENESS_WINDOW - 1)
        self._lateness_next = position
        self.count_fired += len(due)
        self.event_high_water = max(self.event_high_water, len(ready))
        return len(due)

    def take(self) -> TimerExpired | None:
        """Remove and return the next receivable event, or None."""
        events = self._events
        ready = self._ready
        while events:
            event = events.popleft()
            name = event.name
            if ready.get(name) is event:
                del ready[name]
                if self.intervals and name in self.intervals:
                    self.table.set(name, self.intervals[name].next_deadline(event.deadline, self.clock()))
                    self.wake()
                elif self.waiting_for_room:
                    self.wake()
                return event
        return None

    def take_many(self, limit: int) -> list[TimerExpired]:
        """Remove and return up to ``limit`` receivable events."""
        taken: list[TimerExpired] = []
        while len(taken) < limit:
            event = self.take()
            if event is None:
                break
            taken.append(event)
        return taken

    def lateness_window(self) -> list[float]:
        """The recent lateness samples (seconds from deadline to ready), oldest first not guaranteed."""
        return list(self._lateness)

    def _retract(self, name: str) -> None:
        del self._ready[name]
        self.count_retracted += 1
        events = self._events
        # Retracted events stay in the deque until they reach its front; rebuild it if they pile up.
        if len(events) > 2 * len(self._ready) + 64:
            ready = self._ready
            self._events = deque(event for event in events if ready.get(event.name) is event)
