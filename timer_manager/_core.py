"""The manager's asyncio side, shared by :class:`TimerManager` and :class:`TimerHandle`.

The per-timer work is the engine's (``_engine_py.py`` / ``_engine_c.pyx``); this module decides
when it runs, and keeps everything else: the waiting senders and receivers, the heartbeat grid,
stopping, logging. Everything here runs on the event loop's thread, in loop callbacks, never in a
polling task: a ``call_soon`` when the first command of a batch arrives, one wake-up for the next
grid tick at or after the earliest deadline (``_wakeup.py``: a timerfd on Linux's stock loop, a
``call_at`` elsewhere), and nothing at all while no timer is due and no command arrives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from ._engine_py import OP_NAMES, SET_INTERVAL, Command
from ._table import Engine, TimerTable
from ._wakeup import Wakeup, create_wakeup
from .errors import ManagerClosed, TimerLimitExceeded

logger = logging.getLogger("timer_manager")

NEW, RUNNING, STOPPED = "new", "running", "stopped"

_EXACT_TICKS = 2.0**52  # beyond this many heartbeats from the origin, ticks are not representable
_LONGEST_WAIT = 365 * 86400.0  # the manager wakes at least once a year


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
    """Waiters, wake-up scheduling and lifecycle of one manager, around its engine."""

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
        self.max_timers = max_timers
        self.table = TimerTable()
        # A size past sys.maxsize is no bound at all; the engine counts in C ssize_t.
        self.engine = Engine(self.table, min(command_capacity, sys.maxsize), min(event_capacity, sys.maxsize))
        self.engine.wake = self.schedule_service

        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.thread_id = 0
        self.debug = False
        self.state = NEW
        self.closing = False  # no command is taken once shutdown was sent or the manager stopped
        self.stop_reason = ""
        self.done: asyncio.Future[None] | None = None

        self.senders: deque[Sender] = deque()
        self.receivers: deque[asyncio.Future[None]] = deque()

        self.origin = 0.0  # the heartbeat grid is origin + k * heartbeat
        self.service_soon = False
        self.wakeup: Wakeup | None = None  # the one wake-up for the next grid tick, from start()
        self.count_room_waits = 0
        self.reserve_lock = threading.Lock()
        self.thread_lock = threading.Lock()  # thread-safe handles taking places in the command queue

    # ------------------------------------------------------------------ binding and checks

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the manager to the loop it runs on (at ``run()`` or the first call, if earlier)."""
        self.loop = loop
        # asyncio's own time() is time.monotonic() behind a Python method call: skip the call, unless
        # the loop's time() is another (uvloop's, or a test clock's such as looptime's).
        stock = getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time
        self.clock = time.monotonic if stock else loop.time
        self.engine.clock = self.clock
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
        self.bound_loop()
        return self.clock()

    # ------------------------------------------------------------------ queueing commands

    def check_open(self) -> None:
        """Raise :class:`ManagerClosed` once the manager takes no more commands."""
        if self.closing:
            state = "stopped" if self.state == STOPPED else "shutting down"
            raise ManagerClosed(f"timer manager {self.name!r} is {state}")

    def has_room(self, count: int) -> bool:
        """Whether ``count`` commands fit in the command queue now, behind no waiting sender."""
        return not self.senders and self.engine.queued() + count <= self.engine.command_capacity

    def enqueue(self, command: Command) -> None:
        """Queue one command (room was checked by the caller) and make sure the manager wakes."""
        if self.engine.push(*command) == 2:
            self.schedule_service()

    def enqueue_many(self, commands: list[Command]) -> None:
        """Queue several commands (room was checked by the caller)."""
        for command in commands:
            self.enqueue(command)

    def schedule_service(self) -> None:
        """Run :meth:`service` soon (once, however often it is asked before it runs)."""
        if not self.service_soon and self.state == RUNNING:
            self.service_soon = True
            self.loop.call_soon(self.service)  # type: ignore[union-attr]

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
            room = self.engine.command_capacity - self.engine.queued()
            position = max(0, min(room, len(commands)))
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
            self.drop(command)

    def drop(self, command: Command) -> None:
        """A command will never be queued: give back its place under ``max_timers``."""
        if command[0] <= SET_INTERVAL and self.engine.reserved:
            self.engine.release(command[1])  # type: ignore[arg-type]

    def admit(self, names: list[str]) -> None:
        """Check that a set of ``names`` may be queued: the manager is open, and under ``max_timers``."""
        self.check_open()
        if self.max_timers is not None and names:
            self.reserve(names)

    def reserve(self, names: list[str]) -> None:
        """Count queued sets of new names against ``max_timers``, or refuse them all."""
        limit = self.max_timers
        assert limit is not None
        table = self.table
        reserved = self.engine.reserved
        with self.reserve_lock:  # thread-safe handles reserve from their own threads
            new = {name for name in names if name not in table and name not in reserved}
            if new and len(table) + len(reserved) + len(new) > limit:
                raise TimerLimitExceeded(
                    f"timer manager {self.name!r} holds {len(table)} timers with {len(reserved)} more queued; "
                    f"{len(new)} new would exceed max_timers={limit}"
                )
            for name in names:
                if name in new or name in reserved:
                    reserved[name] = reserved.get(name, 0) + 1

    def admit_senders(self) -> None:
        """Move waiting senders' commands into the freed room, oldest sender first."""
        senders = self.senders
        engine = self.engine
        while senders and engine.queued() < engine.command_capacity:
            sender = senders[0]
            if sender.claim is not None:
                claim, sender.claim = sender.claim, None
                if not claim():
                    senders.popleft()
                    self._release_unsent(sender)
                    continue
            room = engine.command_capacity - engine.queued()
            end = min(sender.position + room, len(sender.commands))
            for command in sender.commands[sender.position : end]:
                self.enqueue(command)
            sender.position = end
            if end == len(sender.commands):
                senders.popleft()
                if not sender.future.done():
                    sender.future.set_result(None)

    # ------------------------------------------------------------------ receiving events

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
            elif not waiter.cancelled() and self.engine.ready_count():
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
        self.origin = self.clock()
        self.done = loop.create_future()
        self.wakeup = create_wakeup(loop, self.clock, self._on_wakeup)
        self.schedule_service()
        logger.info(
            "timer manager %r started (heartbeat %gs, command queue %d, event queue %d)",
            self.name,
            self.heartbeat,
            self.engine.command_capacity,
            self.engine.event_capacity,
        )
        return self.done

    def service(self) -> None:
        """Apply queued commands, deliver what is due, and arm the next wake-up."""
        self.service_soon = False
        if self.state != RUNNING:
            return
        try:
            engine = self.engine
            while engine.queued() or self.senders:
                log = self._log_command if logger.isEnabledFor(logging.DEBUG) else None
                if engine.apply(log):
                    self.stop("shutdown requested")
                    return
                if self.senders:
                    self.admit_senders()
                else:
                    break
            now = self.clock()
            if engine.fire(self._grid_floor(now), now):
                self.wake_receivers()
            self._note_room(now)
            self.arm_timer()
        except Exception as exc:
            self.stop(f"failed: {exc!r}", exc)

    def _log_command(self, op: int, name: str | None, value: Any) -> None:
        logger.debug("timer manager %r: %s %r %r", self.name, OP_NAMES[op], name, value)

    def _on_wakeup(self) -> None:
        self.on_timer()  # looked up at each wake-up, so that a test can wrap it

    def on_timer(self) -> None:
        """The grid tick for the earliest deadline has come."""
        self.service()

    def _note_room(self, now: float) -> None:
        """Track whether due timers wait for room in a full event queue; warn once per episode."""
        engine = self.engine
        waiting = False
        if engine.ready_count() >= engine.event_capacity:
            next_deadline = self.table.next_deadline()
            waiting = next_deadline is not None and next_deadline <= self._grid_floor(now)
        if waiting and not engine.waiting_for_room:
            self.count_room_waits += 1
            logger.warning(
                "timer manager %r: the event queue is full (%d events); due timers wait for room",
                self.name,
                engine.event_capacity,
            )
        elif engine.waiting_for_room and not waiting:
            logger.info("timer manager %r: due timers found room in the event queue again", self.name)
        engine.waiting_for_room = waiting

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
        ticks = (deadline - self.origin) / step if step else 0.0
        if ticks <= 0.0 or ticks > _EXACT_TICKS:  # no heartbeat, in the past, or beyond the grid's precision
            return deadline
        index = math.ceil(ticks)
        tick = self.origin + index * step
        while tick < deadline:  # float rounding in the division above
            index += 1
            tick = self.origin + index * step
        return tick

    def arm_timer(self) -> None:
        """Schedule one wake-up at the grid tick of the earliest deadline, or none at all."""
        next_deadline = None if self.engine.waiting_for_room else self.table.next_deadline()
        wakeup = self.wakeup
        assert wakeup is not None
        if next_deadline is None or next_deadline == math.inf:
            wakeup.disarm()
            return
        # Far deadlines (a duration of 1e15 s, say) wake the manager once a year instead: loops
        # cannot hold timers that far away.
        when = min(self._grid_ceil(next_deadline), self.clock() + _LONGEST_WAIT)
        if wakeup.when != when:
            wakeup.arm(when)

    def stop(self, reason: str, exc: BaseException | None = None) -> None:
        """Stop for good: discard pending timers and commands, release every waiter."""
        if self.state == STOPPED:
            return
        self.state = STOPPED
        self.closing = True
        self.stop_reason = reason
        if self.wakeup is not None:
            self.wakeup.close()
        discarded, flushes = self.engine.discard()
        if self.loop is not None and self.loop.is_closed():
            # The loop is gone (run() is being closed at interpreter exit): nobody can be woken.
            self.senders.clear()
            self.receivers.clear()
            logger.info("timer manager %r stopped: %s (its event loop is closed)", self.name, reason)
            return
        closed = ManagerClosed(f"timer manager {self.name!r} stopped ({reason})")
        for future in flushes:
            if not future.done():
                future.set_exception(closed)
        while self.senders:
            sender = self.senders.popleft()
            if sender.claim is not None and not sender.claim():
                continue  # a thread that gave up waiting
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
            self.engine.ready_count(),
        )
