"""The manager's state and loop logic, shared by :class:`TimerManager` and :class:`TimerHandle`.

Everything here runs on the event loop's thread. The manager does its work in loop callbacks,
never in a polling task: a ``call_soon`` when the first command of a batch arrives, a single
``call_at`` for the next grid tick at or after the earliest deadline, and nothing at all while no
timer is due and no command arrives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
from collections import deque
from typing import Any, Callable, Optional

from ._table import TimerTable
from .errors import ManagerClosed, TimerLimitExceeded
from .events import TimerExpired

logger = logging.getLogger("timer_manager")

# Command opcodes. A command is a tuple (op, name, value, data).
SET = 0  # value: deadline
SET_INTERVAL = 1  # value: Interval
CANCEL = 2
CANCEL_ALL = 3
SHUTDOWN = 4
FLUSH = 5  # value: the future to resolve once applied

Command = tuple[int, Optional[str], Any, Any]

_OP_NAMES = ("set", "set_interval", "cancel", "cancel_all", "shutdown", "flush")

NEW, RUNNING, STOPPED = "new", "running", "stopped"

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


class Sender:
    """A caller waiting for room in the command queue, with the commands it still has to queue.

    ``claim`` (for callers in other threads) is asked just before the commands are queued; if it
    returns False the caller gave up waiting, and its commands are dropped.
    """

    __slots__ = ("claim", "commands", "future", "position")

    def __init__(
        self,
        future: asyncio.Future[None] | concurrent.futures.Future[None],
        commands: list[Command],
        position: int = 0,
        claim: Callable[[], bool] | None = None,
    ) -> None:
        self.future = future
        self.commands = commands
        self.position = position
        self.claim = claim


class ManagerCore:
    """The timer table, both queues, the waiters and the wake-up scheduling of one manager."""

    def __init__(
        self,
        name: str,
        heartbeat: float,
        command_capacity: int,
        event_capacity: int,
        max_timers: int | None,
    ) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self.command_capacity = command_capacity
        self.event_capacity = event_capacity
        self.max_timers = max_timers
        self.table = TimerTable()

        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id = 0
        self.debug = False
        self.state = NEW
        self.closing = False  # no command is taken once shutdown was sent or the manager stopped
        self.stop_reason = ""
        self.done: asyncio.Future[None] | None = None

        self.commands: deque[Command] = deque()
        self.senders: deque[Sender] = deque()
        # With max_timers: the new names that queued sets will add, and how many sets queue each.
        self.reserved: dict[str, int] = {}

        # Ready events in order; ``ready`` maps each name to its one receivable event, so that a
        # cancel or re-set can retract it. Events in ``events`` that ``ready`` no longer points
        # to are retracted and skipped.
        self.events: deque[TimerExpired] = deque()
        self.ready: dict[str, TimerExpired] = {}
        self.receivers: deque[asyncio.Future[None]] = deque()

        self.data: dict[str, Any] = {}
        self.intervals: dict[str, Interval] = {}

        self.origin = 0.0  # the heartbeat grid is origin + k * heartbeat
        self.service_soon = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = 0.0
        self.waiting_for_room = False

        self.count_set = 0
        self.count_reset = 0
        self.count_cancelled = 0
        self.count_fired = 0
        self.count_retracted = 0
        self.count_room_waits = 0
        self.command_high_water = 0
        self.event_high_water = 0
        self.lateness: list[float] = []
        self.lateness_next = 0

    # ------------------------------------------------------------------ binding and checks

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the manager to the loop it runs on (at ``run()`` or the first call, if earlier)."""
        self.loop = loop
        self.thread_id = threading.get_ident()
        self.debug = loop.get_debug()

    def bound_loop(self) -> asyncio.AbstractEventLoop:
        """The manager's loop, binding the running one on first use."""
        loop = self.loop
        if loop is None:
            loop = asyncio.get_running_loop()
            self.bind(loop)
        elif self.debug:
            self.check_thread()
        return loop

    def check_thread(self) -> None:
        """In debug mode: refuse calls from a thread other than the loop's."""
        if threading.get_ident() != self.thread_id:
            raise RuntimeError(
                "TimerHandle methods must be called from the event loop's thread; "
                "from other threads use handle.threadsafe()"
            )

    def now(self) -> float:
        """The loop time."""
        return self.bound_loop().time()

    # ------------------------------------------------------------------ queueing commands

    def check_open(self) -> None:
        """Raise :class:`ManagerClosed` once the manager takes no more commands."""
        if self.closing:
            raise ManagerClosed(f"timer manager {self.name!r} is {self._closed_state()}")

    def _closed_state(self) -> str:
        return "stopped" if self.state == STOPPED else "shutting down"

    def has_room(self, count: int) -> bool:
        """Whether ``count`` commands fit in the command queue now, behind no waiting sender."""
        return not self.senders and len(self.commands) + count <= self.command_capacity

    def enqueue(self, command: Command) -> None:
        """Queue one command (room was checked by the caller) and make sure the manager wakes."""
        commands = self.commands
        commands.append(command)
        self.command_high_water = max(self.command_high_water, len(commands))
        if not self.service_soon and self.state == RUNNING:
            self.service_soon = True
            self.loop.call_soon(self.service)  # type: ignore[union-attr]

    def enqueue_many(self, commands: list[Command]) -> None:
        """Queue several commands (room was checked by the caller)."""
        for command in commands:
            self.enqueue(command)

    async def send(self, commands: list[Command], *, closing: bool = False) -> None:
        """Queue ``commands`` in order, waiting for room as long as needed.

        With ``closing`` (a shutdown), no later command is taken from the moment of the call.
        """
        loop = self.bound_loop()
        self.check_open()
        if closing:
            self.closing = True
        position = 0
        if not self.senders:
            room = self.command_capacity - len(self.commands)
            position = min(room, len(commands))
            for command in commands[:position]:
                self.enqueue(command)
            if position == len(commands):
                return
        future = loop.create_future()
        sender = Sender(future, commands, position)
        self.senders.append(sender)
        try:
            await future
        except BaseException:
            if not future.done() or future.cancelled():
                # Cancelled while waiting: what was not queued yet is dropped.
                self._forget_sender(sender)
            raise

    def _forget_sender(self, sender: Sender) -> None:
        try:
            self.senders.remove(sender)
        except ValueError:
            return
        self._release_unsent(sender)

    def _release_unsent(self, sender: Sender) -> None:
        for command in sender.commands[sender.position :]:
            if command[0] <= SET_INTERVAL and self.reserved:
                self.release_reservation(command[1])  # type: ignore[arg-type]

    def reserve(self, names: list[str]) -> None:
        """Count queued sets of new names against ``max_timers``, or refuse them all."""
        limit = self.max_timers
        assert limit is not None
        table = self.table
        reserved = self.reserved
        new = {name for name in names if name not in table and name not in reserved}
        if new and len(table) + len(reserved) + len(new) > limit:
            raise TimerLimitExceeded(
                f"timer manager {self.name!r} holds {len(table)} timers with {len(reserved)} more queued; "
                f"{len(new)} new would exceed max_timers={limit}"
            )
        for name in names:
            if name in new or name in reserved:
                reserved[name] = reserved.get(name, 0) + 1

    def release_reservation(self, name: str) -> None:
        """A reserved set was applied or dropped."""
        count = self.reserved.get(name, 0)
        if count > 1:
            self.reserved[name] = count - 1
        elif count == 1:
            del self.reserved[name]

    def admit_senders(self) -> None:
        """Move waiting senders' commands into the freed room, oldest sender first."""
        senders = self.senders
        while senders and len(self.commands) < self.command_capacity:
            sender = senders[0]
            if sender.claim is not None:
                claim, sender.claim = sender.claim, None
                if not claim():
                    senders.popleft()
                    self._release_unsent(sender)
                    continue
            room = self.command_capacity - len(self.commands)
            end = min(sender.position + room, len(sender.commands))
            for command in sender.commands[sender.position : end]:
                self.enqueue(command)
            sender.position = end
            if end == len(sender.commands):
                senders.popleft()
                if not sender.future.done():
                    sender.future.set_result(None)

    # ------------------------------------------------------------------ receiving events

    def take_event(self) -> TimerExpired | None:
        """Remove and return the next receivable event, or None if there is none."""
        events = self.events
        ready = self.ready
        while events:
            event = events.popleft()
            name = event.name
            if ready.get(name) is event:
                del ready[name]
                if self.intervals and name in self.intervals:
                    self._rearm_interval(event)
                if self.waiting_for_room and not self.service_soon and self.state == RUNNING:
                    self.service_soon = True
                    self.loop.call_soon(self.service)  # type: ignore[union-attr]
                return event
        return None

    def take_events(self, limit: int) -> list[TimerExpired]:
        """Remove and return up to ``limit`` receivable events."""
        taken: list[TimerExpired] = []
        while len(taken) < limit:
            event = self.take_event()
            if event is None:
                break
            taken.append(event)
        return taken

    @property
    def finished(self) -> bool:
        """Whether the manager has stopped and every event has been received."""
        return self.state == STOPPED and not self.ready

    async def wait_for_event(self) -> None:
        """Wait until an event may be ready or the manager has stopped."""
        waiter = self.bound_loop().create_future()
        self.receivers.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()
            # A receiver cancelled after it was woken passes the wake-up on.
            elif not waiter.cancelled() and self.ready:
                self.wake_receivers()

    def wake_receivers(self) -> None:
        """Wake every receiver that waits for an event."""
        receivers = self.receivers
        while receivers:
            waiter = receivers.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ the manager's work

    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Begin running on ``loop``; return the future that completes when the manager stops."""
        if self.state != NEW:
            raise RuntimeError(f"timer manager {self.name!r}: run() was already called; a manager runs once")
        if self.loop is not None and self.loop is not loop:
            raise RuntimeError(f"timer manager {self.name!r} was used from another event loop")
        self.bind(loop)
        self.state = RUNNING
        self.origin = loop.time()
        self.done = loop.create_future()
        self.service_soon = True
        loop.call_soon(self.service)
        logger.info(
            "timer manager %r started (heartbeat %gs, command queue %d, event queue %d)",
            self.name,
            self.heartbeat,
            self.command_capacity,
            self.event_capacity,
        )
        return self.done

    def service(self) -> None:
        """Apply queued commands, deliver what is due, and arm the next wake-up."""
        self.service_soon = False
        if self.state != RUNNING:
            return
        try:
            if self.commands or self.senders:
                self.apply_commands()
                if self.state != RUNNING:
                    return
            self.fire_due()
            self.arm_timer()
        except Exception as exc:
            self.stop(f"failed: {exc!r}", exc)

    def on_timer(self) -> None:
        """The grid tick for the earliest deadline has come."""
        self.timer = None
        self.service()

    def apply_commands(self) -> None:
        """Apply every queued command, in order, then admit waiting senders and repeat."""
        commands = self.commands
        table = self.table
        log_commands = logger.isEnabledFor(logging.DEBUG)
        while commands:
            if log_commands:
                for op, name, value, _ in commands:
                    logger.debug("timer manager %r: %s %r %r", self.name, _OP_NAMES[op], name, value)
            while commands:
                op, name, value, data = commands.popleft()
                if op <= SET_INTERVAL:
                    ready = self.ready
                    if ready and name in ready:
                        self.retract(name)
                    intervals = self.intervals
                    if op == SET_INTERVAL:
                        intervals[name] = value  # type: ignore[index]
                        value = value.origin
                    elif intervals:
                        intervals.pop(name, None)  # type: ignore[arg-type]
                    if self.reserved:
                        self.release_reservation(name)  # type: ignore[arg-type]
                    if table.set(name, value):  # type: ignore[arg-type]
                        self.count_reset += 1
                    else:
                        self.count_set += 1
                    if data is not None:
                        self.data[name] = data  # type: ignore[index]
                    elif self.data:
                        self.data.pop(name, None)  # type: ignore[arg-type]
                elif op == CANCEL:
                    if self.ready and name in self.ready:
                        self.retract(name)
                    if table.cancel(name):  # type: ignore[arg-type]
                        self.count_cancelled += 1
                    if self.intervals:
                        self.intervals.pop(name, None)  # type: ignore[arg-type]
                    if self.data:
                        self.data.pop(name, None)  # type: ignore[arg-type]
                elif op == CANCEL_ALL:
                    for ready_name in list(self.ready):
                        self.retract(ready_name)
                    self.count_cancelled += table.clear()
                    self.intervals.clear()
                    self.data.clear()
                elif op == FLUSH:
                    if not value.done():
                        value.set_result(None)
                else:  # SHUTDOWN
                    self.stop("shutdown requested")
                    return
            if self.senders:
                self.admit_senders()

    def retract(self, name: str) -> None:
        """Withdraw the receivable event of ``name``: a cancel or re-set made it stale."""
        del self.ready[name]
        self.count_retracted += 1
        events = self.events
        # Retracted events stay in the deque until they reach its front; rebuild it if they pile up.
        if len(events) > 2 * len(self.ready) + 64:
            ready = self.ready
            self.events = deque(event for event in events if ready.get(event.name) is event)

    def fire_due(self) -> None:
        """Move due timers into the event queue, as far as it has room, and wake receivers."""
        room = self.event_capacity - len(self.ready)
        table = self.table
        if not table or room <= 0:
            self._note_room(room)
            return
        now = self.loop.time()  # type: ignore[union-attr]
        due = table.pop_due(self._grid_floor(now), room)
        if not due:
            self._note_room(room)
            return
        ready = self.ready
        events = self.events
        data = self.data
        intervals = self.intervals
        lateness = self.lateness
        position = self.lateness_next
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
        self.lateness_next = position
        self.count_fired += len(due)
        self.event_high_water = max(self.event_high_water, len(ready))
        self.wake_receivers()
        self._note_room(room - len(due))

    def _note_room(self, room: int) -> None:
        """Track whether due timers wait for room in a full event queue; warn once per episode."""
        if room > 0:
            if self.waiting_for_room:
                self.waiting_for_room = False
                logger.info("timer manager %r: the event queue has room again", self.name)
            return
        next_deadline = self.table.next_deadline()
        waiting = next_deadline is not None and next_deadline <= self._grid_floor(self.loop.time())  # type: ignore[union-attr]
        if waiting and not self.waiting_for_room:
            self.count_room_waits += 1
            logger.warning(
                "timer manager %r: the event queue is full (%d events); due timers wait for room",
                self.name,
                self.event_capacity,
            )
        self.waiting_for_room = waiting

    def _grid_floor(self, now: float) -> float:
        """The latest heartbeat tick at or before ``now`` (``now`` itself without a heartbeat)."""
        step = self.heartbeat
        if step == 0.0:
            return now
        index = math.floor((now - self.origin) / step)
        if self.origin + (index + 1) * step <= now:  # float rounding in the division above
            index += 1
        return min(self.origin + index * step, now)

    def _grid_ceil(self, deadline: float) -> float:
        """The first heartbeat tick at or after ``deadline``."""
        step = self.heartbeat
        if step == 0.0 or deadline <= self.origin:
            return deadline
        index = math.ceil((deadline - self.origin) / step)
        tick = self.origin + index * step
        while tick < deadline:  # float rounding in the division above
            index += 1
            tick = self.origin + index * step
        return tick

    def arm_timer(self) -> None:
        """Schedule one wake-up at the grid tick of the earliest deadline, or none at all."""
        next_deadline = None if self.waiting_for_room else self.table.next_deadline()
        timer = self.timer
        if next_deadline is None:
            if timer is not None:
                timer.cancel()
                self.timer = None
            return
        when = self._grid_ceil(next_deadline) if next_deadline < math.inf else math.inf
        if timer is not None:
            if self.timer_when == when:
                return
            timer.cancel()
            self.timer = None
        if when < math.inf:
            self.timer = self.loop.call_at(when, self.on_timer)  # type: ignore[union-attr]
            self.timer_when = when

    def _rearm_interval(self, event: TimerExpired) -> None:
        interval = self.intervals[event.name]
        deadline = interval.next_deadline(event.deadline, self.loop.time())  # type: ignore[union-attr]
        self.table.set(event.name, deadline)
        if not self.service_soon and self.state == RUNNING:
            self.service_soon = True
            self.loop.call_soon(self.service)  # type: ignore[union-attr]

    def stop(self, reason: str, exc: BaseException | None = None) -> None:
        """Stop for good: discard pending timers and commands, release every waiter."""
        if self.state == STOPPED:
            return
        self.state = STOPPED
        self.closing = True
        self.stop_reason = reason
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        discarded = self.table.clear()
        self.intervals.clear()
        self.data.clear()
        self.reserved.clear()
        closed = ManagerClosed(f"timer manager {self.name!r} stopped ({reason})")
        for _, _, value, _ in self.commands:
            if isinstance(value, asyncio.Future) and not value.done():
                value.set_exception(closed)
        self.commands.clear()
        while self.senders:
            sender = self.senders.popleft()
            if not sender.future.done():
                sender.future.set_exception(closed)
        self.wake_receivers()
        done = self.done
        if done is not None and not done.done():
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)
        log = logger.error if exc is not None else logger.info
        log(
            "timer manager %r stopped: %s (%d pending timers discarded, %d events still receivable)",
            self.name,
            reason,
            discarded,
            len(self.ready),
        )
