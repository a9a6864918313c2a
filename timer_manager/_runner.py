"""The manager's asyncio side, shared by :class:`TimerManager` and :class:`TimerHandle`.

The per-timer work is the engine's (``_engine_py.py`` / ``_engine_c.pxi``); this module decides
when it runs, and keeps everything else: the waiting senders and receivers, the heartbeat grid,
stopping, logging. Everything here runs on the event loop's thread, in loop callbacks, never in a
polling task: a ``call_soon`` when the first command of a batch arrives, one wake-up for the next
grid tick at or after the earliest deadline, no sooner than ``slack`` after the last delivery
(``_wakeup.py``: a timerfd on Linux's stock loop where precision pays, a ``call_at`` elsewhere), and
nothing at all while no timer is due and no command arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ._admission import Admission
from ._backend import LocalStore, Store
from ._futures import fail, resolve
from ._inbox import Inbox
from ._protocol import OP_NAMES, QUEUED_FIRST, SET, SET_INTERVAL, SHUTDOWN, Command, EngineInterface
from ._wakeup import LOOP_RESOLUTION, Wakeup, create_wakeup
from .errors import ManagerClosed

logger = logging.getLogger("timer_manager")

NEW, RUNNING, STOPPED = "new", "running", "stopped"

_EXACT_TICKS = 2.0**52  # beyond this many heartbeats from the origin, ticks are not representable
_LONGEST_WAIT = 365 * 86400.0  # the manager wakes at least once a year


def _logs_commands() -> bool:
    """Whether each command is logged as it is applied (DEBUG)."""
    return logger.isEnabledFor(logging.DEBUG)


class Sender:
    """A loop-side caller waiting for room for ``count`` commands.

    The manager resolves ``future`` once the room is promised to it; the caller then queues its
    commands itself, so a caller cancelled at any moment has queued nothing.
    """

    __slots__ = ("after", "count", "future")

    def __init__(self, future: asyncio.Future[None], count: int, after: int) -> None:
        self.future = future
        self.count = count
        self.after = after  # how many commands other threads had handed over when it started waiting


class Runner:
    """Waiters, wake-up scheduling and lifecycle of one manager, around its engine."""

    def __init__(
        self,
        name: str,
        heartbeat: float,
        command_capacity: int,
        event_capacity: int,
        max_timers: int | None,
        store: Store | None = None,
        slack: float = 0.0,
    ) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self.slack = slack  # a wake-up for due timers comes at least this long after the last delivery
        self.last_delivery = -math.inf  # the clock at the last pass that delivered a timer
        # What arm_timer last armed the wake-up at, and for which earliest deadline and last delivery.
        self.armed_when: float | None = None
        self.armed_for: float | None = None
        self.armed_after = -math.inf
        self.max_timers = max_timers
        # A size past sys.maxsize is no bound at all; the engine counts in C ssize_t.
        command_capacity = min(command_capacity, sys.maxsize)
        event_capacity = min(event_capacity, sys.maxsize)
        self.store: Store = store if store is not None else LocalStore(command_capacity, event_capacity)
        self.remote = self.store.remote  # the timers live in a backend: introspection must be awaited
        self.encode = self.store.encode  # the backend's check of a payload at the call, if any
        self.engine: EngineInterface = self.store.engine
        self.table = self.engine.table
        self.engine.wake = self.schedule_service
        # A set applied at the call is queued instead while each command is logged, so that it is logged too.
        self.engine.logs_commands = _logs_commands
        cache = getattr(logger, "_cache", None)  # the answers isEnabledFor keeps per level (CPython's logging)
        self.engine.log_cache = cache if type(cache) is dict else None
        # A remote backend enforces max_timers itself, across all its managers.
        self.admission = (
            Admission(name, max_timers, self.engine) if max_timers is not None and not self.remote else None
        )
        # and may check the names of sets at the call (Redis: their size); its engine's push_set checks them too
        self.check_names: Callable[[list[str]], None] | None = getattr(self.store, "check_names", None)
        self.inbox = Inbox(name, command_capacity, self.schedule_service)
        self.engine.handed_over = self.inbox.commands  # a touch at the call waits behind these

        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_bind: list[Callable[[], None]] = []  # called after each bind (the handle picks its receive path)
        self.clock: Callable[[], float] = time.monotonic
        self.thread_id = 0
        # The loop's thread itself: its id may be given to another thread once it ended, the object never is.
        self.thread: threading.Thread | None = None
        self.debug = False
        self.state = NEW
        self.closing = False  # no command is taken: a shutdown was sent or is waiting for room, or the manager stopped
        self.shutdown_queued = False
        self.shutdown_callers = 0  # shutdown() calls waiting for room for the one SHUTDOWN
        self.token_cancelled = False  # set from any thread; the manager stops before it applies anything more
        self.stop_reason = ""
        self.done: asyncio.Future[None] | None = None

        # Callers waiting for room, oldest first; a woken one stays until it has queued (so that one look at
        # this deque tells the hot path whether anyone is ahead of it).
        self.senders: deque[Sender] = deque()
        self.promised = 0  # places promised to woken senders that have not queued yet
        self.receivers: dict[asyncio.Future[None], None] = {}  # insertion-ordered; a cancelled one leaves at once

        self.origin = 0.0  # the heartbeat grid is origin + k * heartbeat
        self.service_soon = False
        self.logging_command = False  # a DEBUG log handler runs, in the middle of the engine's apply
        self.wakeup: Wakeup | None = None  # the one wake-up for the next grid tick, from start()
        self.background: Awaitable[None] | None = None  # the backend's own work, from start()
        self.count_room_waits = 0

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
        self.thread = threading.current_thread()
        self.debug = loop.get_debug()
        with self.inbox.lock:
            self.inbox.loop = loop
        self.update_applies_at_call()
        for hook in self.on_bind:
            hook()

    def update_applies_at_call(self) -> None:
        """Tell the engine whether a loop-side set or touch may be applied at the call, as ``TimerHandle`` does
        when nothing is queued: while the manager runs on its loop (before, commands wait for ``run()``), open,
        on a local table, not in debug mode (where every call checks its thread), and no token stop is on its
        way (which discards them, as it does the commands still queued). Called wherever one of those changes."""
        direct = self.state == RUNNING and not (self.debug or self.closing or self.remote or self.token_cancelled)
        self.engine.applies_at_call = direct
        if direct and self.token_cancelled:
            # The token's callback, in another thread, set the flag after the read above and wrote False before the
            # write: read again after writing, or a set or touch would be applied at the call after the cancel.
            self.engine.applies_at_call = False

    def bound_loop(self) -> asyncio.AbstractEventLoop:
        """The manager's loop, binding the running one on first use."""
        loop = self.loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    f"timer manager {self.name!r}: no event loop is running in this thread. Call TimerHandle "
                    "methods from the loop's thread (in a coroutine or a loop callback); for other threads, get "
                    "handle.threadsafe() on the loop's thread and pass it to them"
                ) from None
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
            state = f"stopped ({self.stop_reason})" if self.state == STOPPED else "shutting down"
            raise ManagerClosed(f"timer manager {self.name!r} is {state}")

    def admit(self, names: list[str]) -> None:
        """Check that sets of ``names`` may be queued: the manager is open, and under ``max_timers`` (if set)."""
        self.check_open()
        if self.check_names is not None:
            self.check_names(names)
        if self.admission is not None and names:
            self.admission.reserve(names)

    def drop(self, commands: list[Command]) -> None:
        """These commands will never be queued: give back their places under ``max_timers``."""
        admission = self.admission
        if admission is not None:
            for command in commands:
                if command[0] <= SET_INTERVAL and command[1] is not None:  # a set of either kind
                    admission.release(command[1])

    def has_room(self, count: int) -> bool:
        """Whether ``count`` commands may be queued now: room behind what other threads handed over, and no
        earlier caller waiting for it."""
        if self.senders:  # earlier callers first; what threads handed over stays behind those already waiting
            return False
        if self.inbox.commands and not self.take_inbox():
            return False
        return self.engine.queued() + count <= self.engine.command_capacity

    def take_inbox(self) -> bool:
        """Queue what other threads have handed over, if it fits; return whether it did (or there was none).

        Every loop-side command first calls this (when the inbox is not empty) and waits or fails while it
        returns False, so a thread's command goes ahead of any the loop's thread sends after it.
        """
        engine = self.engine
        # None left (an oversized batch alone, or what a close queued whatever the room) is 0, not -1 (no limit).
        room = max(engine.command_capacity - engine.queued() - self.promised, 0)
        commands = self.inbox.take(room if engine.queued() or self.promised else -1)  # alone, it always fits
        if commands is None:
            return False
        if commands and engine.push_all(commands) == QUEUED_FIRST:
            self.schedule_service()
        return True

    def enqueue_all(self, commands: list[Command]) -> None:
        """Queue several commands, whatever the room (it was checked or promised)."""
        if self.engine.push_all(commands) == QUEUED_FIRST:
            self.schedule_service()

    def withdraw(self, marker: asyncio.Future[None]) -> None:
        """A ``flush()`` (or query) was cancelled while its marker waited: take the marker out of the command
        queue if it is still there, and pass the place it held on to a waiting sender. On a remote backend a
        marker already handed to the link stays until the server answers its batch (``RedisEngine.withdraw``)."""
        if self.engine.withdraw(marker) and self.senders:
            self.wake_senders()

    def schedule_service(self) -> None:
        """Run :meth:`service` soon (once, however often it is asked before it runs)."""
        if not self.service_soon and self.state == RUNNING:
            self.loop.call_soon(self.service)  # type: ignore[union-attr]
            self.service_soon = True  # only once it is scheduled: a call_soon that raised must not wedge the manager

    async def send(self, commands: list[Command]) -> None:
        """Queue ``commands`` in order and as one, waiting for room as long as needed.

        Returns once they are queued; raises (``ManagerClosed``, ``CancelledError``) with none queued.
        """
        try:
            self.bound_loop()
            self.check_open()
            if not self.has_room(len(commands)):
                await self.wait_for_room(len(commands))
        except BaseException:
            self.drop(commands)
            raise
        self.enqueue_all(commands)
        if self.inbox.commands:  # handed over while this caller waited, left behind it (see wake_senders)
            self._take_inbox_in_turn()

    async def wait_for_room(self, count: int) -> None:
        """Wait until room for ``count`` commands is promised to this caller, who must then queue them at once
        (the manager's loop thread runs nothing else in between).

        A batch larger than the whole queue is let in when the queue is empty. Cancelled or stopped while
        waiting: nothing was promised, or the promise is passed on to the next caller.
        """
        future = self.bound_loop().create_future()
        sender = Sender(future, count, self.inbox.appended)
        self.senders.append(sender)
        if len(self.senders) == 1:
            # Alone, and blocked only by its size (a batch larger than the whole queue, at an empty queue): it
            # goes at once. Never while an earlier sender, woken, has not queued yet (it would still be in
            # the deque): this caller's `await` below would not yield, and it would queue ahead of that one.
            self.wake_senders()
        try:
            await future
        except BaseException:
            self._leave(sender)  # woken, then cancelled before it could queue: its room goes to the next
            self.wake_senders()
            raise
        self._leave(sender)
        if self.state == STOPPED:  # stopped after this caller was woken and before it ran
            self.check_open()

    def _leave(self, sender: Sender) -> None:
        """``sender`` stops waiting: it queues now, or gives up; a promise made to it ends either way."""
        with contextlib.suppress(ValueError):  # the stop took the whole deque
            self.senders.remove(sender)
        future = sender.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self.promised -= sender.count

    def wake_senders(self, inbox_taken: bool = False) -> None:
        """Promise the free room to waiting senders, oldest first. What other threads handed over goes ahead
        of a sender that started waiting after it was handed over, behind one that was waiting already
        (``inbox_taken``: the caller just queued it)."""
        if self.state == STOPPED:
            return
        if (
            not inbox_taken
            and self.inbox.commands
            and not self.promised  # a sender promised room and not yet run came before all of it
            and not self._sender_first()
            and not self.take_inbox()
        ):
            return
        self._promise_room()
        if self.inbox.commands:
            self._take_inbox_in_turn()

    def _take_inbox_in_turn(self) -> None:
        """Queue what other threads handed over, as it fits, unless a sender that started waiting before it was
        handed over is still to queue (promised room and not yet run, or still waiting): it goes behind them, and
        the last of them to queue takes it (or, if one gives up, the next wake_senders)."""
        if not self.promised and not self._sender_first():
            self.take_inbox()

    def _sender_first(self) -> bool:
        """Whether the oldest waiting sender may have room ahead of what other threads have handed over: all of
        that came after it started waiting. Threads calling in a tight loop keep the inbox full; were it always
        taken first, a sender would get room only when the inbox happened to be empty (on Redis, where room comes
        back with each answer: a few calls a second against the threads' thousands)."""
        for sender in self.senders:
            if not sender.future.done():
                return sender.after <= self.inbox.taken
        return False

    def _promise_room(self) -> None:
        engine = self.engine
        for sender in self.senders:
            if sender.future.done():  # woken already, or cancelled and not yet gone
                continue
            if sender.after > self.inbox.taken:  # it started waiting after a thread's call returned: behind it
                return
            used = engine.queued() + self.promised
            if used + sender.count > engine.command_capacity and used:
                return
            if resolve(sender.future):  # else cancelled just now (a signal handler): the room goes to the next
                self.promised += sender.count

    # ------------------------------------------------------------------ shutting down

    def close(self) -> None:
        """Take no more commands from anyone; what other threads handed over before goes ahead of the SHUTDOWN."""
        self.closing = True
        self.update_applies_at_call()
        if self.senders and (self.promised or self._sender_first()):
            # A sender that waited before it was handed over goes first: it stays, taken in its turn (see
            # wake_senders), and by queue_shutdown at the latest.
            self.inbox.close("shutting down", take=False)
            return
        commands = self.inbox.close("shutting down")
        if commands:
            self.enqueue_all(commands)

    def reopen(self) -> None:
        """Undo :meth:`close`: the shutdown it was for was cancelled before it was queued."""
        if self.state != STOPPED and not self.shutdown_queued:
            self.closing = False
            self.update_applies_at_call()
            self.inbox.reopen()

    def try_shutdown(self) -> bool:
        """Queue the SHUTDOWN now if there is room; return whether it is queued (or the manager stopped)."""
        self.bound_loop()
        if self.shutdown_queued or self.state == STOPPED:
            return True
        if self.closing:  # an awaitable shutdown() waits for room
            return False
        if not self.has_room(1):
            return False
        self.close()
        self.queue_shutdown()
        return True

    async def shutdown(self) -> None:
        """Queue the SHUTDOWN, waiting for room; no command is taken from the call on.

        Cancelled before it was queued: the manager takes commands again (unless another shutdown()
        call still waits for the same SHUTDOWN).
        """
        self.bound_loop()
        if self.shutdown_queued or self.state == STOPPED:
            return
        if not self.closing:
            self.close()
        self.shutdown_callers += 1
        try:
            while not self.shutdown_queued:
                if self.has_room(1):
                    self.queue_shutdown()
                    return
                try:
                    await self.wait_for_room(1)
                except ManagerClosed:
                    if self.shutdown_queued:  # another call queued the SHUTDOWN this one waited for: as after it
                        return
                    raise
                if self.shutdown_queued:  # another shutdown() call queued it meanwhile: pass the room on
                    self.wake_senders()
                else:
                    self.queue_shutdown()
        except BaseException:
            if self.shutdown_callers == 1:
                self.reopen()
            raise
        finally:
            self.shutdown_callers -= 1

    def queue_shutdown(self) -> None:
        """Queue the one SHUTDOWN (room was checked or promised), behind what threads handed over before the close
        and left in the inbox behind the senders that waited before it (:meth:`close`)."""
        self.shutdown_queued = True
        commands: list[Command] = (self.inbox.take() or []) if self.inbox.commands else []
        commands.append((SHUTDOWN, None, None, None))
        self.enqueue_all(commands)

    # ------------------------------------------------------------------ receiving events

    async def wait_for_event(self) -> None:
        """Wait until an event may be ready or the manager has stopped."""
        waiter = self.bound_loop().create_future()
        self.receivers[waiter] = None
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter.cancelled():  # never woken: leave at once, not at the next event
                self.receivers.pop(waiter, None)
            # A receiver cancelled after it was woken passes the wake-up on (to the receivers still waiting).
            elif self.receivers and self.engine.ready_count():
                self.wake_receivers()

    def wake_receivers(self) -> None:
        """Wake every receiver that waits for an event."""
        receivers = self.receivers
        if receivers:
            self.receivers = {}
            for waiter in receivers:
                resolve(waiter)

    # ------------------------------------------------------------------ the manager's work

    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Begin running on ``loop``; return the future that completes when the manager stops."""
        if self.state != NEW:
            raise RuntimeError(f"timer manager {self.name!r}: run() was already called; a manager runs once")
        if self.loop is not None and self.loop is not loop:
            raise RuntimeError(f"timer manager {self.name!r} was used from another event loop")
        self.bind(loop)
        self.state = RUNNING
        self.update_applies_at_call()
        self.origin = self.clock()
        self.done = loop.create_future()
        # Precision is worth a timerfd only where the slack asks for finer than the loop's own timer, or
        # where the heartbeat, not the slack, spaces the wake-ups (they are rare then).
        precise = self.slack < max(self.heartbeat, LOOP_RESOLUTION)
        try:
            self.wakeup = create_wakeup(loop, self.clock, self._on_wakeup, precise)
            self.background = self.store.start(self)
            self.schedule_service()
        except BaseException as exc:
            # Callers may already wait (a receiver, a flush): release them, as any stop does, then let
            # run() raise what went wrong.
            self.stop(f"it could not start: {exc!r}")
            raise
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
        if self.token_cancelled:  # its stop is on the way; commands still queued are discarded with it
            self.stop("cancellation token cancelled")
            return
        try:
            engine = self.engine
            if self.inbox.commands:  # unless a sender that came before it is to queue first (then below)
                self._take_inbox_in_turn()
            if engine.queued():
                log = self._log_command if logger.isEnabledFor(logging.DEBUG) else None
                if engine.apply(log):
                    self.stop("shutdown requested")
                    return
                if self.token_cancelled:  # cancelled during the apply (a log handler, another thread): it stopped there
                    self.stop("cancellation token cancelled")
                    return
            # What threads handed over meanwhile goes ahead of the senders woken now (it is applied next pass),
            # unless it all came after the oldest started waiting: then behind them. It must be taken here
            # whenever it fits: nothing else will ask for a pass for it.
            # A sender promised room and not yet run (this pass may come before its step) is ahead of all of it.
            if self.senders and self.inbox.commands and (self.promised or self._sender_first()):
                self.wake_senders()
            elif (not self.inbox.commands or self.take_inbox()) and self.senders:
                self.wake_senders(inbox_taken=True)
            now = self.clock()
            # Each wake-up runs this, cold: calls that would only return their argument or do nothing are
            # skipped (no heartbeat: the grid is the clock; an event queue with room: nothing to note). With
            # nothing due by now (a pass for commands), no grid tick can be either: the fire only puts back
            # touched timers, for which now is as good a bound as the tick before it.
            bound = now
            if self.heartbeat != 0.0:
                earliest = self.table.next_deadline()
                if earliest is not None and earliest <= now:
                    bound = self._grid_floor(now)
            if engine.fire(bound, now):
                self.last_delivery = now
                self.wake_receivers()
            if engine.waiting_for_room or engine.ready_count() >= engine.event_capacity:
                self._note_room(now)
            self.arm_timer()
        except Exception as exc:
            self.stop(f"failed: {exc!r}", exc)

    def _log_command(self, op: int, name: str | None, value: Any) -> None:
        if op == SET:
            # A deadline on the runner's clock, or a backend's own form of one (Redis: Unix time).
            detail = f", due in {value - self.clock():.6g} s" if isinstance(value, float) else f", due {value!r}"
        elif op == SET_INTERVAL:
            detail = f", {value!r}"
        else:
            detail = ""
        # The command is not applied yet: a touch from the handler must be queued behind it, never applied at
        # the call (touch_now would find nothing queued when it is the last one).
        self.logging_command = True
        self.engine.applies_at_call = False
        try:
            logger.debug("timer manager %r: %s %r%s", self.name, OP_NAMES[op], name, detail)
        finally:
            self.logging_command = False
            self.update_applies_at_call()

    def apply_queued(self) -> bool:
        """Apply now what is queued, what other threads handed over first, for a loop-side call that must
        act on the state those commands leave (a touch); the pass already scheduled for them arms the
        wake-up. False, with nothing applied, from inside the engine's apply (a DEBUG log handler)."""
        if self.logging_command:
            return False
        if self.token_cancelled:  # its stop is on the way and discards them: the state stays as it is
            return True
        if self._apply_now():  # not while the manager is open, as it is for every caller; kept for safety
            self.check_open()
        return True

    def apply_before_receive(self) -> None:
        """Apply what is queued or handed over, so that a receive returns no event that a command sent before
        it retracts (a reset or a cancel of a timer whose event waits; on a remote backend, applying moves the
        command towards the server and withdraws its name's event from the local queue). Only while the manager
        runs and no token stop is on its way (which discards those commands); not from inside the engine's own
        pass (a DEBUG log handler), where the receive takes what is ready."""
        if self.state != RUNNING or self.logging_command or self.token_cancelled:
            return
        if not (self.engine.queued() or self.inbox.commands):
            return
        # If the engine fails, the manager stops as failed (_apply_now) and run() raises it, as after a pass; the
        # receive goes on with what is ready.
        with contextlib.suppress(Exception):
            self._apply_now()

    def _apply_now(self) -> bool:
        """Apply what other threads handed over, then everything queued; at a SHUTDOWN stop the manager and
        return True. If the engine fails, stop the manager as failed and raise."""
        if self.inbox.commands:
            handed_over = self.inbox.take()
            # A pass for them, as for any command queued first: from code run in the middle of the engine's own
            # work (a __del__ a collection runs in a fire), the apply below does nothing.
            if handed_over and self.engine.push_all(handed_over) == QUEUED_FIRST:
                self.schedule_service()
        log = self._log_command if logger.isEnabledFor(logging.DEBUG) else None
        try:
            shutdown = self.engine.apply(log)
        except Exception as exc:
            self.stop(f"failed: {exc!r}", exc)
            raise
        if shutdown:
            self.stop("shutdown requested")
        return shutdown

    def failed_at_call(self, exc: Exception) -> None:
        """A set applied at the call raised: the engine failed there as it would have in a pass, so the manager
        stops as failed (``run()`` raises ``exc``) and the call raises it too. A remote engine applies nothing at
        the call: what it raises is its refusal of the call (a name too long for the server), and changes
        nothing."""
        if not self.remote:
            self.stop(f"failed: {exc!r}", exc)

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
                "timer manager %r: the event queue is full (capacity %d); due timers wait for room",
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
        ticks = (now - self.origin) / step
        # Beyond the grid's precision (an infinite count with a subnormal heartbeat) there is no tick to floor to,
        # as in _ceil_on, which arms such deadlines off the grid: every deadline up to now is due.
        if not ticks <= _EXACT_TICKS:
            return now
        index = math.floor(ticks)
        if self.origin + (index + 1) * step <= now:  # float rounding in the division above
            index += 1
        return min(self.origin + index * step, now)

    def _grid_ceil(self, deadline: float) -> float:
        """The first heartbeat tick at or after ``deadline``."""
        return self._ceil_on(self.heartbeat, deadline)

    def _ceil_on(self, step: float, deadline: float) -> float:
        """The first instant ``origin + k * step`` at or after ``deadline`` (``deadline`` itself if ``step`` is 0)."""
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
            self.engine.wake_for = math.inf
            return
        # A set applied at the call for this deadline or later is delivered by this wake-up or one it arms.
        self.engine.wake_for = next_deadline
        # A pass that changed neither the earliest deadline nor the last delivery (most passes for commands)
        # would arm what is armed: skip the grid's arithmetic. A wake-up that came or was replaced has another
        # ``when``, so it is computed afresh.
        if (
            wakeup.when is not None
            and wakeup.when == self.armed_when
            and next_deadline == self.armed_for
            and self.last_delivery == self.armed_after
        ):
            return
        # Timers due within timer_slack of the last delivery wait for one wake-up together: each wake-up
        # costs far more than a timer (docs/benchmarks.md, "Steady rates").
        tick = next_deadline if self.heartbeat == 0.0 else self._grid_ceil(next_deadline)
        when = max(tick, self.last_delivery + self.slack)
        # Far deadlines (a duration of 1e15 s, say) wake the manager once a year instead: loops
        # cannot hold timers that far away.
        when = min(when, self.clock() + _LONGEST_WAIT)
        if wakeup.when != when:
            wakeup.arm(when)
        self.armed_when, self.armed_for, self.armed_after = when, next_deadline, self.last_delivery

    def stop(self, reason: str, exc: BaseException | None = None) -> None:
        """Stop for good: discard pending timers and commands, release every waiter."""
        if self.state == STOPPED:
            return
        self.state = STOPPED
        self.closing = True
        self.update_applies_at_call()
        self.stop_reason = reason
        if self.wakeup is not None:
            self.wakeup.close()
        self.inbox.close("stopped")  # threads waiting for room get ManagerClosed; what they handed over is dropped
        discarded, flushes = self.engine.discard()
        if self.admission is not None:
            self.admission.clear()
        senders, self.senders = self.senders, deque()
        receivers, self.receivers = self.receivers, {}
        if self.loop is not None and self.loop.is_closed():
            # The loop is gone (run() is being closed at interpreter exit): nobody can be woken.
            logger.info("timer manager %r stopped: %s (its event loop is closed)", self.name, reason)
            return
        closed = ManagerClosed(f"timer manager {self.name!r} stopped ({reason})")
        for future in flushes:
            fail(future, closed)
        for sender in senders:
            fail(sender.future, closed)
        for waiter in receivers:
            resolve(waiter)
        done = self.done
        if done is not None:
            if exc is None:
                resolve(done)
            else:
                fail(done, exc)
        log = logger.error if exc is not None else logger.info
        log(
            "timer manager %r stopped: %s (pending timers discarded: %d; events still to receive: %d)",
            self.name,
            reason,
            discarded,
            self.engine.ready_count(),
        )
