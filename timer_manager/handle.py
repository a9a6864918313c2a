"""The handle: how a program talks to its timer manager."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any, NoReturn

from . import _runner
from ._core import HandleCore, adopt_touch
from ._protocol import (
    CANCEL,
    CANCEL_ALL,
    FLUSH,
    QUEUE_FULL,
    QUEUED_FIRST,
    SET,
    SET_INTERVAL,
    TOUCH,
    Command,
    Interval,
)
from ._runner import Runner
from ._validate import Duration, check_name, check_size, seconds
from .errors import ManagerClosed, QueueEmpty, QueueFull
from .events import TimerEvent, TimerExpired
from .threadsafe import ThreadsafeHandle

__all__ = ("Duration", "TimerHandle")


_INF = math.inf
_MISSED = ("skip", "burst", "delay")


def _full(runner: Runner) -> QueueFull:
    capacity = runner.engine.command_capacity
    return QueueFull(f"timer manager {runner.name!r}: the command queue is full ({capacity} commands)")


class TimerHandle(HandleCore):
    """Sets and cancels timers, receives their events, and shuts the manager down.

    Every command has an awaitable form, which waits for room in the bounded command queue, and a
    ``try_`` form, which raises :class:`QueueFull` instead. Commands are applied in the order they
    were sent; a timer's deadline is taken when the set call is made, not when it is applied.
    Bad input raises ``TypeError`` or ``ValueError`` at the call, and nothing is queued.
    Call it from the loop's thread; from other threads use :meth:`threadsafe`.
    """

    __slots__ = ("_engine", "_handed_over", "_runner", "_take")

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._engine = runner.engine
        self._use_engine(runner.engine)
        # recv_event's fast path: an event, if no command waits to be applied (one may retract it); in debug
        # mode behind the thread check (_bound).
        self._take = runner.engine.take_now
        self._handed_over = runner.inbox.commands  # non-empty while other threads' commands wait for the loop
        runner.on_bind.append(self._bound)

    def __repr__(self) -> str:
        return f"<TimerHandle of {self._runner.name!r}>"

    def __reduce__(self) -> NoReturn:
        """Refuse: a handle belongs to its manager (a copy would miss what the manager told it when bound)."""
        raise TypeError(f"a TimerHandle cannot be copied or pickled: use {self!r} itself")

    def _bound(self) -> None:
        """The manager was bound to its loop: in debug mode every receive checks its thread, the fast one too."""
        self._take = self._take_on_the_loops_thread if self._runner.debug else self._engine.take_now

    def _take_on_the_loops_thread(self) -> TimerEvent | None:
        self._runner.check_thread()
        return self._engine.take_now()

    # ------------------------------------------------------------------ setting timers

    async def set_timer(self, name: str, duration: Duration, *, data: Any = None) -> None:
        """Create timer ``name`` or replace its deadline with now + ``duration``; wait for room.

        With nothing queued before it, on a running manager, the set is applied at the call and takes no room
        (as a touch is): ``name`` is pending with its new deadline as soon as the call returns."""
        command = self._set_command(name, duration, data)
        runner = self._runner
        _, checked, (deadline, span), encoded = command
        pushed = QUEUE_FULL  # anyone waiting for room, or commands other threads handed over, go first
        if not (runner.senders or self._handed_over):
            try:
                pushed = runner.engine.set_now(checked, deadline, span, encoded)  # type: ignore[arg-type]
            except Exception as exc:
                runner.failed_at_call(exc)
                raise
        if pushed == QUEUE_FULL:
            await runner.send([command])
        elif pushed == QUEUED_FIRST:
            runner.schedule_service()

    def try_set_timer(self, name: str, duration: Duration, *, data: Any = None) -> None:
        """Like :meth:`set_timer`, but raise :class:`QueueFull` instead of waiting."""
        # The hot path: _set_command's checks inlined (keep the two in step), then one call into the
        # engine, with no helper call and no command tuple.
        runner = self._runner
        if type(name) is not str:
            name = check_name(name)
        if type(duration) is not float or not 0.0 <= duration < _INF:
            duration = seconds(duration)
        if runner.loop is None or runner.debug:
            runner.bound_loop()
        if runner.closing or runner.admission is not None:
            runner.admit([name])
        if data is not None and runner.encode is not None:
            data = runner.encode(data)
        # Anyone waiting for room, or commands other threads handed over that do not fit, go first.
        if not runner.senders and (not self._handed_over or runner.take_inbox()):
            try:
                pushed = runner.engine.set_now(name, runner.clock() + duration, duration, data)
            except Exception as exc:
                runner.failed_at_call(exc)
                raise
            if pushed == QUEUED_FIRST:
                runner.schedule_service()
            if pushed != QUEUE_FULL:
                return
        if runner.check_names is not None:  # as push_set would have (a name too long for a remote backend)
            runner.check_names([name])
        runner.drop([(SET, name, None, None)])
        raise _full(runner)

    async def set_timer_at(self, name: str, when: float | datetime, *, data: Any = None) -> None:
        """Create timer ``name`` or replace its deadline with ``when`` (loop time; on Redis: Unix time, or an
        aware ``datetime``). A past ``when`` is due at once: with a heartbeat, it is delivered at the first grid
        tick at or after it, as any timer is (at once if that tick has come, else at the next one)."""
        await self._runner.send([self._set_at_command(name, when, data)])

    def try_set_timer_at(self, name: str, when: float | datetime, *, data: Any = None) -> None:
        """Like :meth:`set_timer_at`, but raise :class:`QueueFull` instead of waiting."""
        self._try_send([self._set_at_command(name, when, data)])

    async def set_interval(
        self,
        name: str,
        period: Duration,
        *,
        first: Duration | None = None,
        missed: str = "skip",
        data: Any = None,
    ) -> None:
        """Make ``name`` a repeating timer: due ``first`` (default: ``period``) from now, then every
        ``period`` on that grid. It re-arms when its event is received, so it never has more than one
        event waiting. ``missed`` says what happens to ticks the consumer missed: ``"skip"`` them,
        ``"burst"`` (deliver each), or ``"delay"`` (restart the grid from the receive time)."""
        await self._runner.send([self._interval_command(name, period, first, missed, data)])

    def try_set_interval(
        self,
        name: str,
        period: Duration,
        *,
        first: Duration | None = None,
        missed: str = "skip",
        data: Any = None,
    ) -> None:
        """Like :meth:`set_interval`, but raise :class:`QueueFull` instead of waiting."""
        self._try_send([self._interval_command(name, period, first, missed, data)])

    async def set_timers(self, items: Iterable[tuple[str, Duration] | tuple[str, Duration, Any]]) -> None:
        """Set several timers, in order, from ``(name, duration)`` or ``(name, duration, data)`` items.

        All items are checked before any is queued; each takes one place in the command queue, and
        the call waits for room as long as needed.
        """
        await self._runner.send(self._set_commands(items))

    def try_set_timers(self, items: Iterable[tuple[str, Duration] | tuple[str, Duration, Any]]) -> None:
        """Like :meth:`set_timers`, but all or nothing: raise :class:`QueueFull` unless all fit now."""
        self._try_send(self._set_commands(items))

    # ------------------------------------------------------------------ touching

    # touch(): HandleCore's (compiled with the engine), which calls this when the touch may not be made at once.

    def _touch_in_order(self, name: str) -> bool:
        name = check_name(name)
        runner = self._runner
        runner.bound_loop()
        runner.check_open()
        if runner.remote:  # applied on the server, in order with the other commands
            self._try_send([(TOUCH, name, runner.clock(), None)])
            return True
        if runner.token_cancelled:
            # The token's stop is on its way: it discards a touch as it discards the commands still queued, and
            # leaves the events that wait receivable (a touch would withdraw a fired timer's event).
            return bool(runner.engine.is_live(name))
        queued = self._handed_over or runner.engine.queued() or runner.logging_command
        if queued and not runner.apply_queued():
            # Inside the engine's own pass (a DEBUG log handler): queue it behind what is queued, and behind the
            # command being applied (which is no longer counted as queued).
            runner.enqueue_all([(TOUCH, name, runner.clock(), None)])
            return bool(runner.engine.is_live(name))
        if runner.token_cancelled:  # cancelled while those were applied (from a DEBUG log handler): as above
            return bool(runner.engine.is_live(name))
        return bool(runner.engine.touch(name, runner.clock()))

    def touch_many(self, names: Iterable[str]) -> int:
        """:meth:`touch` each of ``names``, in order, all at one now; return how many were pending (or had their
        event waiting). All names are checked before any is touched."""
        checked = self._names(names)
        runner = self._runner
        runner.check_open()
        now = runner.clock()
        if runner.remote:
            self._try_send([(TOUCH, name, now, None) for name in checked])
            return len(checked)
        if runner.token_cancelled:  # discarded by the stop on its way, as in touch()
            return sum(1 for name in checked if runner.engine.is_live(name))
        queued = self._handed_over or runner.engine.queued() or runner.logging_command
        if queued and not runner.apply_queued():
            runner.enqueue_all([(TOUCH, name, now, None) for name in checked])
            return sum(1 for name in checked if runner.engine.is_live(name))
        if runner.token_cancelled:  # cancelled while those were applied, as in touch()
            return sum(1 for name in checked if runner.engine.is_live(name))
        touch = runner.engine.touch
        return sum(1 for name in checked if touch(name, now))

    # ------------------------------------------------------------------ cancelling

    async def cancel_timer(self, name: str) -> None:
        """Cancel timer ``name`` (nothing happens if it is not pending); wait for room."""
        await self._runner.send([self._cancel_command(name)])

    def try_cancel_timer(self, name: str) -> None:
        """Like :meth:`cancel_timer`, but raise :class:`QueueFull` instead of waiting."""
        self._try_send([self._cancel_command(name)])

    async def cancel_timers(self, names: Iterable[str]) -> None:
        """Cancel several timers, in order; all names are checked before any is queued."""
        await self._runner.send([self._cancel_command(name) for name in self._names(names)])

    def try_cancel_timers(self, names: Iterable[str]) -> None:
        """Like :meth:`cancel_timers`, but all or nothing: raise :class:`QueueFull` unless all fit now."""
        self._try_send([self._cancel_command(name) for name in self._names(names)])

    async def cancel_all_timers(self) -> None:
        """Cancel every pending timer; wait for room."""
        await self._runner.send([(CANCEL_ALL, None, None, None)])

    def try_cancel_all_timers(self) -> None:
        """Like :meth:`cancel_all_timers`, but raise :class:`QueueFull` instead of waiting."""
        self._try_send([(CANCEL_ALL, None, None, None)])

    # ------------------------------------------------------------------ shutting down

    async def shutdown(self) -> None:
        """Ask the manager to stop once the commands sent before are applied; idempotent.

        Pending timers are then discarded; events already queued stay receivable.
        """
        await self._runner.shutdown()

    def try_shutdown(self) -> None:
        """Like :meth:`shutdown`, but raise :class:`QueueFull` instead of waiting."""
        if not self._runner.try_shutdown():
            raise _full(self._runner)

    async def flush(self) -> None:
        """Return once every command sent before this call has been applied by the manager (from any thread,
        if the thread's call returned before this one was made). Cancelled, it leaves nothing queued: its marker
        is taken back out of the command queue if not yet applied (on Redis: if not yet handed on for the
        server; one on its way stays until the server answers its batch, and resolves nothing)."""
        runner = self._runner
        applied = runner.bound_loop().create_future()
        await runner.send([(FLUSH, None, applied, None)])
        try:
            await applied
        except asyncio.CancelledError:
            runner.withdraw(applied)  # a cancelled call leaves nothing queued: its marker goes, if not yet applied
            raise

    # ------------------------------------------------------------------ receiving events

    async def recv_event(self) -> TimerEvent | None:
        """Wait for the next event; return None once the manager has stopped and every event was
        received. Commands sent before (from this task, or from threads whose call returned) are applied
        first, so no event comes that a reset or cancel among them retracts (on Redis: they are moved towards the
        server, which withdraws their names' events from this manager's queue)."""
        event = self._take()
        if event is not None:  # the hot path: an event is ready and no command waits
            return event
        runner = self._runner
        while True:
            runner.apply_before_receive()
            event = runner.engine.take()
            if event is not None:
                return event
            if runner.state == _runner.STOPPED:
                return None
            await runner.wait_for_event()

    def try_recv_event(self) -> TimerEvent:
        """Return the next event now; raise :class:`QueueEmpty` if none is ready, or
        :class:`ManagerClosed` once the manager has stopped and every event was received. Commands sent
        before are applied first, as for :meth:`recv_event`."""
        runner = self._runner
        if runner.debug:
            runner.check_thread()
        event = runner.engine.take_now()
        if event is None:
            runner.apply_before_receive()
            event = runner.engine.take()
        if event is not None:
            return event
        if runner.state == _runner.STOPPED:
            raise ManagerClosed(f"timer manager {runner.name!r} has stopped and every event was received")
        raise QueueEmpty(f"timer manager {runner.name!r}: no event is ready")

    async def recv_events(self, max_events: int) -> list[TimerEvent]:
        """Wait for events; return a non-empty list of at most ``max_events`` ready events, or ``[]``
        once the manager has stopped and every event was received. Commands sent before are applied first,
        as for :meth:`recv_event`."""
        limit = min(check_size(max_events, "max_events"), sys.maxsize)
        runner = self._runner
        if runner.debug:
            runner.check_thread()
        while True:
            runner.apply_before_receive()
            events = runner.engine.take_many(limit)
            if events or runner.state == _runner.STOPPED:
                return events
            await runner.wait_for_event()

    def try_recv_events(self, max_events: int) -> list[TimerEvent]:
        """Return at most ``max_events`` ready events without waiting (maybe none); raise
        :class:`ManagerClosed` once the manager has stopped and every event was received. Commands sent
        before are applied first, as for :meth:`recv_event`."""
        limit = min(check_size(max_events, "max_events"), sys.maxsize)
        runner = self._runner
        if runner.debug:
            runner.check_thread()
        runner.apply_before_receive()
        events = runner.engine.take_many(limit)
        if not events and runner.state == _runner.STOPPED:
            raise ManagerClosed(f"timer manager {runner.name!r} has stopped and every event was received")
        return events

    def __aiter__(self) -> AsyncIterator[TimerEvent]:
        return self

    async def __anext__(self) -> TimerEvent:
        event = await self.recv_event()
        if event is None:
            raise StopAsyncIteration
        return event

    # ------------------------------------------------------------------ introspection

    def deadline(self, name: str) -> float | None:
        """The loop time at which pending timer ``name`` is due, or None (as the manager has applied
        the commands so far). A repeating timer whose event waits to be received is pending, due at
        that event's deadline. On a remote backend: ``TypeError`` (use :meth:`get_deadline`)."""
        self._local_only("get_deadline(name)")
        return self._runner.engine.pending_deadline(check_name(name))

    def remaining(self, name: str) -> float | None:
        """Seconds until pending timer ``name`` is due (never negative), or None."""
        deadline = self.deadline(name)
        if deadline is None:
            return None
        return max(0.0, deadline - self._runner.now())

    def pending_count(self) -> int:
        """How many timers are pending (as the manager has applied the commands so far), counting repeating
        timers whose event waits to be received; ``max_timers`` counts the same. On a remote backend:
        ``TypeError`` (use :meth:`get_pending_count`)."""
        self._local_only("get_pending_count()")
        return self._runner.engine.live_count()

    def next_deadline(self) -> float | None:
        """The earliest deadline still to fall due (loop time), or None; events already ready are not counted.
        On a remote backend: ``TypeError`` (use :meth:`get_next_deadline`)."""
        self._local_only("get_next_deadline()")
        table = self._runner.table
        table.settle(_INF)  # touched timers at the top go back to their latest deadlines first
        deadline: float | None = table.next_deadline()
        return deadline

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is pending (see :meth:`pending_count`). On a remote backend: ``TypeError`` (use
        ``await handle.get_deadline(name) is not None``)."""
        self._local_only("get_deadline(name) is not None")
        return isinstance(name, str) and bool(self._runner.engine.is_live(check_name(name)))

    async def get_deadline(self, name: str) -> float | None:
        """:meth:`deadline`, on any backend: once every command sent before is applied, the deadline of
        pending timer ``name`` (loop time locally, Unix time on Redis), or None. Like the commands, the
        awaitable queries raise :class:`ManagerClosed` from the moment :meth:`shutdown` is called, and after
        the stop (where the synchronous forms keep answering: nothing is pending)."""
        name = check_name(name)
        return await self._query("deadline", name)

    async def get_pending_count(self) -> int:
        """:meth:`pending_count`, on any backend (on Redis: the whole namespace's); :class:`ManagerClosed` from
        :meth:`shutdown` on, as :meth:`get_deadline`."""
        return int(await self._query("count", "") or 0)

    async def get_next_deadline(self) -> float | None:
        """:meth:`next_deadline`, on any backend (on Redis: the whole namespace's, Unix time); :class:`ManagerClosed`
        from :meth:`shutdown` on, as :meth:`get_deadline`."""
        return await self._query("next", "")

    async def ack(self, event: TimerEvent) -> None:
        """Acknowledge a received event (for ``RedisBackend(ack="manual")``; elsewhere it does nothing)."""
        await self.ack_events([event])

    async def ack_events(self, events: Iterable[TimerEvent]) -> None:
        """Acknowledge received events (see :meth:`ack`); returns once the backend has them.

        The acknowledgements are queued with a flush marker, as a command: a call that raises (the manager
        closed) or is cancelled while it waits for room sends none; once queued, they are sent, and the call
        waits for the backend's confirmation. Cancelled then, it takes them back if none has left for the server
        yet (those on their way stand: they cannot be called back). A stop meanwhile does not end the wait: the
        stopped manager sends them as it settles with the server, and the call returns once they were sent, or
        raises :class:`ManagerClosed` if they could not be (the server unreachable)."""
        runner = self._runner
        events = list(events)
        for event in events:
            if not isinstance(event, TimerExpired):
                raise TypeError(f"events must be timer events, got {type(event).__name__}")
        queue = runner.store.acknowledge(events) if events else None
        if queue is None:
            return
        applied = runner.bound_loop().create_future()
        await runner.send([(FLUSH, None, applied, None)])
        take_back = queue(applied)  # with the marker just queued, no await between: confirmed once they are applied
        try:
            await applied
        except asyncio.CancelledError:
            runner.withdraw(applied)
            take_back()
            raise

    def _local_only(self, awaitable: str) -> None:
        runner = self._runner
        if runner.remote:
            raise TypeError(f"this handle's timers are on a remote backend: use await handle.{awaitable}")
        if runner.debug:
            runner.check_thread()

    async def _query(self, what: str, name: str) -> float | int | None:
        runner = self._runner
        runner.bound_loop()
        runner.check_open()  # from shutdown() on, and after the stop: as the commands, and as on Redis
        if runner.remote or runner.engine.queued() or runner.inbox.commands or runner.senders:
            await self.flush()  # the answer reflects every command sent before (locally: at once if none waits)
        return await runner.store.query(what, name)

    def threadsafe(self) -> ThreadsafeHandle:
        """Return a handle whose methods may be called from any thread (its blocking ones from any but the loop's,
        where they raise ``RuntimeError``)."""
        self._runner.bound_loop()
        return ThreadsafeHandle(self._runner)

    # ------------------------------------------------------------------ building commands

    def _set_command(self, name: object, duration: object, data: Any) -> Command:
        runner = self._runner
        if type(name) is not str:
            name = check_name(name)
        if type(duration) is not float or not 0.0 <= duration < _INF:
            duration = seconds(duration)
        if runner.loop is None or runner.debug:
            runner.bound_loop()
        if data is not None and runner.encode is not None:
            data = runner.encode(data)
        if runner.closing or runner.admission is not None or runner.remote:
            runner.admit([name])
        return (SET, name, (runner.clock() + duration, duration), data)

    def _set_at_command(self, name: object, when: object, data: Any) -> Command:
        name = check_name(name)
        runner = self._runner
        deadline = runner.store.deadline_at(when)
        runner.bound_loop()
        if data is not None and runner.encode is not None:
            data = runner.encode(data)
        runner.admit([name])
        if type(deadline) is float:  # a loop time: its duration is the time left now
            return (SET, name, (deadline, max(0.0, deadline - runner.clock())), data)
        return (SET, name, deadline, data)  # the backend's own form, which carries its duration

    def _interval_command(self, name: object, period: object, first: object, missed: str, data: Any) -> Command:
        name = check_name(name)
        step = seconds(period, "period")
        if step <= 0.0:
            raise ValueError(f"period must be a finite number of seconds > 0, got {period!r}")
        delay = step if first is None else seconds(first, "first")
        if missed not in _MISSED:
            raise ValueError(f"missed must be one of {', '.join(map(repr, _MISSED))}, got {missed!r}")
        runner = self._runner
        now = runner.now()
        origin = now + delay
        if origin + step <= origin:
            why = "" if first is None or delay <= step else f" (first={first!r} puts the first tick there)"
            raise ValueError(
                f"period must be longer than the loop clock's resolution at {origin:g} s{why}, got {period!r}"
            )
        if runner.remote and step < 0.001:
            raise ValueError(f"period must be at least 1 ms on a remote backend, got {period!r}")
        if data is not None and runner.encode is not None:
            data = runner.encode(data)
        runner.admit([name])
        return (SET_INTERVAL, name, Interval(origin, step, missed), data)

    def _set_commands(self, items: Iterable[tuple[str, Duration] | tuple[str, Duration, Any]]) -> list[Command]:
        runner = self._runner
        now = runner.now()
        commands: list[Command] = []
        for item in items:
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise TypeError(f"each item must be a (name, duration) or (name, duration, data) tuple, got {item!r}")
            name = check_name(item[0])
            duration = seconds(item[1])
            data = item[2] if len(item) == 3 else None
            if data is not None and runner.encode is not None:
                data = runner.encode(data)
            commands.append((SET, name, (now + duration, duration), data))
        runner.admit([command[1] for command in commands])  # type: ignore[misc]
        return commands

    def _cancel_command(self, name: object) -> Command:
        return (CANCEL, check_name(name), None, None)

    def _names(self, names: Iterable[str]) -> list[str]:
        if isinstance(names, str):
            raise TypeError("names must be an iterable of str, not a single str")
        self._runner.bound_loop()
        return [check_name(name) for name in names]

    def _try_send(self, commands: list[Command]) -> None:
        runner = self._runner
        try:
            runner.bound_loop()
            runner.check_open()
            if not runner.has_room(len(commands)):
                raise _full(runner)
        except BaseException:
            runner.drop(commands)
            raise
        runner.enqueue_all(commands)


adopt_touch(TimerHandle)  # touch() is called on every message of an idle timeout: its call must be specialised
