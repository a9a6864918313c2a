"""The per-timer work of a manager, in pure Python: the typed reference that the compiled engine mirrors.

An engine holds the command queue, the timer table and the ready events, and does everything whose
cost grows with the number of timers: queueing commands, applying them, moving due timers into the
event queue, and handing events out. The asyncio side (``_runner.py``) decides when it runs. Only the
loop's thread calls it; the one exception is ``is_live``/``live_count``, which ``max_timers``
admission reads from other threads, so every change to what they count adds before it removes.

Ready events sit in ``_events`` in order; ``_ready`` maps each name to its one receivable event, so
that a cancel or re-set can retract it. Events in ``_events`` that ``_ready`` no longer points to
were retracted, and are skipped. A repeating timer whose event is ready is *parked*: out of the
table, still in ``intervals``, re-armed when its event is received; it still counts as pending.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sized
from contextlib import AbstractContextManager, nullcontext
from logging import DEBUG
from typing import Any

from ._futures import resolve
from ._protocol import (
    APPLIED,
    CANCEL,
    CANCEL_ALL,
    FLUSH,
    LATENESS_WINDOW,
    QUEUE_FULL,
    QUEUED,
    QUEUED_FIRST,
    SET,
    SET_INTERVAL,
    SETTLE_AHEAD,
    TOUCH,
    Command,
    Interval,
    withdraw_flush,
)
from .events import TimerExpired

__all__ = ("Engine",)


def _nothing(*_: object) -> None:
    pass


def _always(*_: object) -> bool:
    return True


def _never(*_: object) -> bool:
    return False


class Engine:
    """The command queue, the timer table and the ready events of one manager."""

    def __init__(self, table: Any, command_capacity: int, event_capacity: int) -> None:
        self.table = table
        self.command_capacity = command_capacity
        self.event_capacity = event_capacity
        self.clock: Callable[[], float] = _nothing  # type: ignore[assignment]  # the loop's time(), set at bind
        self.wake: Callable[[], None] = _nothing  # asks the manager to run again soon
        self.waiting_for_room = False  # due timers wait for room in the event queue
        # Kept by the runner: a loop-side set or touch may be applied at the call (running on its loop, open, local,
        # not in debug mode); and the earliest deadline its armed wake-up is for (inf: none is armed; -inf: a set
        # at the call asked for a pass, which arms it afresh), so that a set at or after it asks for no pass.
        self.applies_at_call = False
        self.wake_for = math.inf
        self.logs_commands: Callable[[], bool] = _never  # whether the runner logs each command it applies
        self.log_cache: dict[int, bool] | None = None  # that logger's cache of its answers per level, if it has one
        self.handed_over: Sized = ()  # the runner's inbox: commands other threads handed over
        self.halted = False  # set (from any thread) by a token's cancellation: apply nothing more

        self.data: dict[str, Any] = {}
        self.intervals: dict[str, Interval] = {}
        # With max_timers: queued sets per name (shared with the admission), and what to call once one is applied.
        self.reserved: dict[str, int] = {}
        self.release: Callable[[str], None] = _nothing
        # With max_timers: whether a touch may re-arm a one-shot timer that fell due (it takes a place again).
        self.admit_rearm: Callable[[str], bool] = _always
        self.parked = 0  # repeating timers whose event is ready: out of the table, still pending
        # Held where a timer moves between the table and ``parked`` (max_timers admission reads both).
        self.lock: AbstractContextManager[Any] = nullcontext()
        # Set while a timer moves between the queue, the table and the ready events (apply, fire, a take or a
        # touch that re-arms), through calls: code the collector runs at one (a __del__ using a handle) must not
        # change timers then. Its apply() does nothing (the outer one, or the pass its commands woke, applies them
        # in order) and its touch() is queued behind them.
        self._busy = False

        self._commands: deque[Command] = deque()
        self._events: deque[TimerExpired] = deque()
        self._ready: dict[str, TimerExpired] = {}
        # A touch of a timer whose event is ready re-arms it with its span. While every set used one span
        # (NaN before the first set) that is _span, and nothing is kept per event; after, _spans has it.
        self._span = math.nan
        self._spans_vary = False
        self._spans: dict[str, float] = {}  # name -> span, for events made ready since the spans varied
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
        """Queue a command unless the queue is full: ``QUEUE_FULL``, ``QUEUED``, or ``QUEUED_FIRST`` if the
        queue was empty (the manager must be woken)."""
        commands = self._commands
        length = len(commands)
        if length >= self.command_capacity:
            return QUEUE_FULL
        commands.append((op, name, value, data))
        if length >= self.command_high_water:
            self.command_high_water = length + 1
        return QUEUED_FIRST if length == 0 else QUEUED

    def push_set(self, name: str, deadline: float, span: float, data: Any) -> int:
        """``push(SET, name, (deadline, span), data)``, the hot path."""
        return self.push(SET, name, (deadline, span), data)

    def set_now(self, name: str, deadline: float, span: float, data: Any) -> int:
        """A loop-side set: applied at once where nothing may have to come first (``applies_at_call`` is set, no
        command is queued or handed over, no command is being logged, ``name`` is a str), answering ``APPLIED``;
        otherwise ``push_set``'s answer. A set applied at once asks for a pass only where its deadline comes
        before the one the armed wake-up is for (``wake_for``)."""
        if (
            not self.applies_at_call
            or self._commands
            or self._busy
            or self.halted
            or type(name) is not str
            or self.handed_over
            or self._logging()
        ):
            return self.push_set(name, deadline, span, data)
        self._busy = True  # code run meanwhile (a payload's __del__, the admission's lock) queues behind this set
        try:
            self._apply_set(name, None, deadline, span, data)
        finally:
            self._busy = False
        if deadline < self.wake_for:
            # The pass asked for arms the wake-up for whatever is earliest then: no set before it asks again.
            self.wake_for = -math.inf
            self.wake()
        return APPLIED

    def _logging(self) -> bool:
        """Whether the runner logs each command it applies (then a set is queued, and logged as it is applied).
        The logger's own cache of its answers (``log_cache``) spares the call to ``logs_commands`` where it
        holds one."""
        cache = self.log_cache
        if cache is not None:
            cached = cache.get(DEBUG)
            if cached is not None:
                return cached
        return self.logs_commands()

    def push_all(self, commands: list[Command]) -> int:
        """Queue ``commands`` whatever the room (the caller has accounted for it); answers as ``push``."""
        queue = self._commands
        length = len(queue)
        if not commands:
            return QUEUED
        queue.extend(commands)
        self.command_high_water = max(self.command_high_water, len(queue))
        return QUEUED_FIRST if length == 0 else QUEUED

    def withdraw(self, marker: Any) -> bool:
        """Remove the queued ``FLUSH`` whose future is ``marker`` (its caller was cancelled before it was applied),
        keeping the order of the others; return whether it was still queued. Newest first: the marker is
        usually the last command queued. Not a hot path: a cancelled flush or query."""
        return withdraw_flush(self._commands, marker)

    def apply(self, log: Callable[[int, str | None, Any], None] | None = None) -> bool:
        """Apply the queued commands in order; stop after a shutdown and return True if there was one.

        ``log`` sees each command just before it is applied; it may queue more (a log handler that sets a
        timer), which are applied in this call too.
        """
        if self._busy:
            return False
        self._busy = True
        try:
            return self._apply(log)
        finally:
            self._busy = False

    def _apply(self, log: Callable[[int, str | None, Any], None] | None) -> bool:
        commands = self._commands
        table = self.table
        while commands and not self.halted:
            op, name, value, data = commands.popleft()
            if log is not None:
                log(op, name, value[0] if op == SET and type(value) is tuple else value)
            if op <= SET_INTERVAL:
                if op == SET_INTERVAL:
                    self._apply_set(name, value, value.origin, value.period, data)  # type: ignore[arg-type]
                elif type(value) is tuple:
                    self._apply_set(name, None, value[0], value[1], data)  # type: ignore[arg-type]
                else:
                    self._apply_set(name, None, value, 0.0, data)  # type: ignore[arg-type]
            elif op == CANCEL:
                was_parked = self._ready and name in self._ready and self._retract(name)
                # Out of the repeating timers before it leaves parked or the table: a timer that is_live() sees and
                # live_count() no longer counts would be counted nowhere by max_timers admission, nor a set of its
                # name queued behind this cancel (reserved, but taken for live).
                if self.intervals:
                    self.intervals.pop(name, None)  # type: ignore[arg-type]
                if was_parked:
                    self.parked -= 1  # a parked repeating timer, pending, out of the table: cancelled
                    self.count_cancelled += 1
                if table.cancel(name):
                    self.count_cancelled += 1
                if self.data:
                    self.data.pop(name, None)  # type: ignore[arg-type]
            elif op == CANCEL_ALL:
                for ready_name in list(self._ready):
                    # A retraction may drop events, whose payloads' __del__ may take events from the queue.
                    if ready_name in self._ready:
                        self._retract(ready_name)
                self.intervals.clear()  # first, as for CANCEL
                self.count_cancelled += table.clear() + self.parked  # parked repeating timers are pending too
                self.parked = 0
                self.data.clear()
            elif op == FLUSH:
                resolve(value)
            elif op == TOUCH:
                self._touch(name, value)  # type: ignore[arg-type]
            else:  # SHUTDOWN
                return True
        return False

    def _apply_set(self, name: str, interval: Interval | None, deadline: float, span: float, data: Any) -> None:
        """Apply a set (a repeating one with ``interval``) of ``name`` due at ``deadline``: its ready event
        retracted, the timer placed, counted, its payload kept. Called with ``_busy`` set."""
        was_parked = bool(self._ready) and name in self._ready and self._retract(name)
        if not self._spans_vary and span != self._span:
            if self._span != self._span:  # the first set
                self._span = span
            else:
                self._spans_vary = True
        if self.reserved:
            # A reserved name turns live, counted and unreserved at once for an admission that reads
            # intervals (is_live), the table and parked (live_count), and the reservations.
            with self.lock:
                replaced = self._place(name, interval, deadline, span, was_parked)
                self.release(name)
        else:
            replaced = self._place(name, interval, deadline, span, was_parked)
        if replaced or was_parked:  # a parked repeating timer is pending: a set of it replaces it
            self.count_reset += 1
        else:
            self.count_set += 1
        if data is not None:
            self.data[name] = data
        elif self.data:
            self.data.pop(name, None)

    def _place(self, name: str, interval: Interval | None, deadline: float, span: float, was_parked: bool) -> bool:
        """Make ``name`` a pending timer (repeating if ``interval``) due at ``deadline``: every change that
        ``is_live`` and ``live_count`` see, made together (under the admission's lock with ``max_timers``).
        Return whether it replaced a timer in the table."""
        if interval is not None:
            self.intervals[name] = interval
        elif self.intervals:
            self.intervals.pop(name, None)
        replaced: bool = self.table.set_with_span(name, deadline, span)
        if was_parked:
            self.parked -= 1
        return replaced

    def discard(self) -> tuple[int, list[Any]]:
        """Stop for good: drop pending timers and queued commands.

        Returns how many timers were pending and the futures of queued flushes (to be failed).
        """
        flushes = [value for op, _, value, _ in self._commands if op == FLUSH]
        self._commands.clear()
        self._spans.clear()
        pending = self.table.clear() + self.parked
        self.parked = 0
        self.intervals.clear()
        self.data.clear()
        return pending, flushes

    def touch_now(self, name: str) -> bool | None:
        """``touch(name, clock())`` at the call, if nothing may have to come first: ``applies_at_call`` is set, no
        command is queued or handed over, and ``name`` is a str. Otherwise None, with nothing done."""
        if not self.applies_at_call or self._commands or type(name) is not str or self.handed_over or self._busy:
            return None
        return self._touch(name, self.clock())

    def touch(self, name: str, now: float) -> bool:
        """Make pending timer ``name`` due at ``now`` + the duration it was last set with, as a set made at
        ``now`` would (its ready event, if it fell due and was not received, is retracted and it is armed
        again); keep its payload. Return whether it was pending."""
        if self._busy:  # from code the collector ran in the middle of a timer's move: queued behind it
            if self.push_all([(TOUCH, name, now, None)]) == QUEUED_FIRST:
                self.wake()
            return self.is_live(name)
        return self._touch(name, now)

    def _touch(self, name: str, now: float) -> bool:
        intervals = self.intervals
        interval = intervals.get(name) if intervals else None
        if interval is not None:  # a repeating timer: its grid restarts one period from now
            interval.origin = now + interval.period
        if not (self._ready and name in self._ready):
            table = self.table
            before = table.deadline(name)
            if not table.touch(name, now):
                return False
            if table.deadline(name) < before:
                # Earlier than it was (a repeating timer whose first tick was more than a period away): the table
                # moved it, and the wake-up armed for its old deadline may come too late. A touch at the call
                # queues no command, so nothing else would re-arm it.
                self.wake()
            return True
        event = self._ready[name]
        span = self._spans.get(name, self._span) if interval is None else interval.period
        busy = self._busy
        self._busy = True  # from the event's retraction until the timer is armed again
        try:
            with self.lock:  # parked and table move together for the admission (max_timers)
                # A one-shot timer that fell due is not pending: re-arming it takes a place, as a set would. At the
                # max_timers limit the touch does nothing (its event stays) and reports it was not pending.
                if interval is None and not self.admit_rearm(name):
                    return False
                # Taking the lock and asking the admission are Python calls: the collector may have run, and a
                # __del__ received or retracted the event meanwhile. Then the touch starts again from what is there.
                again = self._ready.get(name) is not event
                if not again:
                    was_parked = self._retract(name)
                    if event.data is not None and interval is None:
                        self.data[name] = event.data  # fire moved it into the event; the timer keeps it
                    self.table.set_with_span(name, now + span, span)
                    if was_parked:
                        self.parked -= 1
        finally:
            self._busy = busy
        if again:
            return self._touch(name, now)
        if interval is None:  # a one-shot that fell due was not pending: re-armed, it is a timer created
            self.count_set += 1
        self.wake()  # the runner arms the wake-up for it
        return True

    # ------------------------------------------------------------------ what is pending

    def live_count(self) -> int:
        """How many timers are pending: in the table, or parked (a repeating timer whose event is ready)."""
        return len(self.table) + self.parked

    def is_live(self, name: str) -> bool:
        """Whether ``name`` is pending (in the table, or a parked repeating timer)."""
        return name in self.table or name in self.intervals

    def pending_deadline(self, name: str) -> float | None:
        """The deadline of pending timer ``name`` (a parked one's is its ready event's), or None."""
        deadline: float | None = self.table.deadline(name)
        if deadline is None and name in self.intervals:
            event = self._ready.get(name)
            if event is not None:
                deadline = event.deadline
        return deadline

    # ------------------------------------------------------------------ the ready events

    def ready_count(self) -> int:
        """How many events wait to be received."""
        return len(self._ready)

    def fire(self, bound: float, now: float) -> int:
        """Move timers due at ``bound`` into the event queue, as far as it has room; return how many."""
        busy = self._busy
        self._busy = True  # timers out of the table are not ready until their events are built (calls)
        try:
            return self._fire(bound, now)
        finally:
            self._busy = busy

    def _fire(self, bound: float, now: float) -> int:
        room = self.event_capacity - len(self._ready)
        if room <= 0:
            self.table.settle(bound, SETTLE_AHEAD)  # so that the runner sees whether a timer is due
            return 0
        intervals = self.intervals
        spans: list[float] | None = [] if self._spans_vary else None
        # Repeating timers leave the table here but stay pending: a thread reading live_count() under the
        # lock must see them in one place or the other.
        with self.lock:
            # Each counted as parked before it can leave the table, and uncounted after if it did not: pop_due makes
            # calls, where code the collector runs may ask the admission (which re-enters the lock).
            counted = len(intervals)
            self.parked += counted
            due = self.table.pop_due(bound, room, spans)
            self.table.settle(bound, SETTLE_AHEAD)  # so that the runner sees whether a timer is due
            if counted:
                self.parked -= counted - sum(1 for name, _ in due if name in intervals)
        if not due:
            return 0
        if spans is not None:
            self._spans.update(zip((name for name, _ in due), spans, strict=True))
        ready = self._ready
        data = self.data
        lateness = self._lateness
        position = self._lateness_next
        for name, deadline in due:
            if data:
                payload = data.get(name) if name in intervals else data.pop(name, None)
                event = TimerExpired(name, deadline, payload)
            else:
                event = TimerExpired(name, deadline)
            ready[name] = event
            # Not a deque read before the loop: building the event may run the garbage collector, and through a
            # __del__ a touch whose retraction replaced the queue (_retract).
            self._events.append(event)
            if len(lateness) < LATENESS_WINDOW:
                lateness.append(now - deadline)
            else:
                lateness[position] = now - deadline
                position = (position + 1) & (LATENESS_WINDOW - 1)
        self._lateness_next = position
        self.count_fired += len(due)
        self.event_high_water = max(self.event_high_water, len(ready))
        return len(due)

    def take_now(self) -> TimerExpired | None:
        """``take()``, if no command waits to be applied (queued, or handed over by another thread): a reset or a
        cancel among them may retract the event. Otherwise None, with nothing taken (the receive's slow path
        applies them first)."""
        if self._commands or self.handed_over:
            return None
        return self.take()

    def take(self) -> TimerExpired | None:
        """Remove and return the next receivable event, or None."""
        ready = self._ready
        while True:
            # Read afresh each round: dropping a retracted event (below) may have run its payload's __del__, and
            # through it this engine's methods (a take, a touch that rebuilt the queue).
            events = self._events
            if not events:
                return None
            event = events.popleft()
            name = event.name
            # No call from the check to the event's removal from _ready: a __del__ the collector runs at one may
            # retract it (a cancel, a touch).
            if name in ready and ready[name] is event:
                if self.intervals and name in self.intervals:
                    busy = self._busy
                    self._busy = True  # until the repeating timer is back in the table
                    try:
                        del ready[name]
                        self._rearm(name, event)
                    finally:
                        self._busy = busy
                    self.wake()
                    return event
                del ready[name]
                if self._spans:
                    self._spans.pop(name, None)
                if self.waiting_for_room:
                    self.wake()
                return event
            # A retracted event: its last reference (and its payload's) goes here, before the next one is taken,
            # so that a __del__ that takes an event cannot be handed one queued after the event taken next here.
            del event, events

    def _rearm(self, name: str, event: TimerExpired) -> None:
        """Arm repeating timer ``name`` again, its ``event`` taken: from parked back to the table."""
        if self._spans:
            self._spans.pop(name, None)
        interval = self.intervals[name]
        deadline = interval.next_deadline(event.deadline, self.clock())
        with self.lock:  # from parked back to the table in one step, for the admission (max_timers)
            self.table.set_with_span(name, deadline, interval.period)
            self.parked -= 1

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

    def _retract(self, name: str) -> bool:
        """Withdraw ``name``'s ready event; return whether ``name`` was parked (the caller uncounts it).

        Nothing to withdraw (False) if the event is gone: between the caller's check and here, the collector may
        have run a ``__del__`` that received it (any allocation can start a collection).
        """
        if self._ready.pop(name, None) is None:
            return False
        if self._spans:
            self._spans.pop(name, None)
        self.count_retracted += 1
        events = self._events
        # Retracted events stay in the deque until they reach its front; rebuild it if they pile up.
        if len(events) > 2 * len(self._ready) + 64:
            ready = self._ready
            # From a copy: the filter makes calls, where a __del__ the collector runs may take from the queue.
            self._events = deque([event for event in list(events) if ready.get(event.name) is event])
        return name in self.intervals
