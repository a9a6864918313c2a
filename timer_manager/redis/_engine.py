"""The local side of a Redis-backed manager: the bounded queues the handle and the runner see.

It has the interface of the in-process engines (``_protocol.EngineInterface``), so that the handle
and the runner work unchanged; the difference is where commands go and where events come from.
Applying a command moves it to the *outbox*, which the link (``_link.py``) ships to the server in
batches; a command keeps its place in the bounded command queue until the server has applied it, so
back-pressure and ``flush()`` mean what they mean locally. Events come from the link: read from the
server's stream, checked there to be current where that is needed, then put into the bounded event queue.
Several events share a stream entry, so the engine counts, per entry, the events it holds and has not
acknowledged: the entry itself is acknowledged on the server with the last of them.

A set or cancel applied here retracts the name's event wherever it waits locally (ready, or read and
not yet checked), since the server may have checked that event before the command reached it.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Sized
from contextlib import nullcontext
from typing import Any

from .._protocol import (
    CANCEL,
    CANCEL_ALL,
    FLUSH,
    LATENESS_WINDOW,
    QUEUE_FULL,
    QUEUED,
    QUEUED_FIRST,
    SET,
    SHUTDOWN,
    TOUCH,
    Command,
    withdraw_flush,
)
from ._codec import MAX_NAME_BYTES, name_error, too_long
from ._event import RedisTimerExpired

__all__ = ("ACK_MODES", "RedisEngine", "UnixTime")

ACK_MODES = ("next", "manual", "receive")


def _nothing(*_: object) -> None:
    pass


def _never(*_: object) -> bool:
    return False


class UnixTime:
    """An absolute deadline in Unix seconds, as ``set_timer_at`` takes it on Redis."""

    __slots__ = ("duration", "seconds")

    def __init__(self, seconds: float, duration: float) -> None:
        self.seconds = seconds
        self.duration = duration  # how far off it was at the call (what a touch adds to its now)

    def __repr__(self) -> str:
        return f"at Unix time {self.seconds:.3f}"


class RemoteTable:
    """What the runner reads of a table; the timers themselves are on the server."""

    __slots__ = ("_engine",)

    def __init__(self, engine: RedisEngine) -> None:
        self._engine = engine

    def __len__(self) -> int:
        return self._engine.live

    def next_deadline(self) -> float | None:
        """None: the server's promoter, not the runner's wake-up, watches the deadlines."""
        return None


class RedisEngine:
    """The command queue, the outbox and the event queue of one Redis-backed manager."""

    def __init__(self, command_capacity: int, event_capacity: int, ack: str) -> None:
        self.table = RemoteTable(self)
        self.command_capacity = command_capacity
        self.event_capacity = event_capacity
        self.ack_mode = ack
        self.clock: Callable[[], float] = time.monotonic
        self.wake: Callable[[], None] = _nothing  # asks the runner for a pass
        self.kick: Callable[[], None] = _nothing  # asks the link to ship the outbox
        self.room_freed: Callable[[], None] = _nothing  # tells the link's reader it may read more
        self.waiting_for_room = False
        self.applies_at_call = False  # never: a set or a touch is a command here
        self.wake_for = math.inf
        self.logs_commands: Callable[[], bool] = _never
        self.log_cache: dict[int, bool] | None = None
        self.halted = False  # set (from any thread) by a token's cancellation: apply nothing more
        self.handed_over: Sized = ()
        self.reserved: dict[str, int] = {}
        self.release: Callable[[str], None] = _nothing
        self.lock = nullcontext()
        self.parked = 0

        self._commands: deque[Command] = deque()
        self.outbox: deque[Command] = deque()  # applied here, not yet sent
        self.sending: list[Command] = []  # the batch sent and not yet answered (a stop fails its flushes)
        self.in_flight = 0  # commands in the outbox or sent, until the server has applied them
        self.acks: list[RedisTimerExpired] = []  # events to acknowledge with the next batch
        # The flush markers of ack() calls waiting for the server, with their events: a stop leaves them to the link's
        # settle, which sends their acknowledgements, rather than failing them with the other flushes.
        self._ack_markers: dict[asyncio.Future[None], list[RedisTimerExpired]] = {}
        self.settles = False  # a link serves this engine: its settle follows the stop
        self._acks_settled = False  # the stop's settle has taken the acknowledgements over
        # How many acknowledgements at the head of ``acks`` the link has counted into the calls it is making: on their
        # way (its later calls take that many, so a take-back must leave them where they are).
        self.acks_on_their_way = 0
        self.rearms: list[RedisTimerExpired] = []  # received events of repeating timers, to re-arm
        self.to_check: list[RedisTimerExpired] = []  # read from the stream, to be checked with the next batch
        # One-shot events received and not yet acknowledged (ack "next" or "manual"), to mark as received on the server
        # with the next batch: a touch from another manager then finds the timer not pending, as a local touch does.
        self.marks: list[RedisTimerExpired] = []
        # Read and not yet in the event queue, in the order read: events being checked on the server, and the
        # events read after them, which need no check but wait for them (the order of the stream).
        self._checking: deque[RedisTimerExpired] = deque()
        self._awaiting: set[int] = set()  # ids of the events in _checking whose check has not come back
        self._stale: set[int] = set()  # ids of the events in _checking that their check found superseded
        self._unchecked: dict[str, list[RedisTimerExpired]] = {}  # the events in _checking, by name
        self._dead: set[int] = set()  # ids of unchecked events that a command applied here has retracted
        # ids of events in _checking whose check went to the server before a touch of their name: checked again after
        self._recheck: set[int] = set()
        self._unchecked_count = 0
        # Per stream entry read, the names of its events held here and not yet acknowledged; and the entries
        # whose acknowledgement is on its way to the server.
        self._outstanding: dict[str, set[str]] = {}
        self._acking: set[str] = set()
        self.count_duplicates = 0  # entries read or claimed again while held here, dropped
        # Names with a command sent to the server and not yet confirmed (CANCEL_ALL counted apart), and the
        # names whose events read from the stream now must be checked on the server (see read_unread).
        self._unconfirmed: dict[str, int] = {}
        self._unconfirmed_all = 0
        self._suspects: set[str] = set()
        self._suspect_all = False
        self._reading = False
        self._handed: list[RedisTimerExpired] = []  # received, acknowledged at the next receive (ack="next")
        # One-shot events received and whose acknowledgement is not yet sent: name -> stream entry. Their record in
        # ``fired`` stays until then, and a touch sent meanwhile names that entry, so that the server does not re-arm
        # the timer from it (a received timer is not pending: a touch does nothing, as locally).
        self._received: dict[str, str] = {}
        self._incoming: deque[RedisTimerExpired] = deque()  # checked, waiting for room in the event queue
        self._incoming_names: dict[str, int] = {}
        self._events: deque[RedisTimerExpired] = deque()
        self._ready: dict[str, RedisTimerExpired] = {}
        self._lateness: list[float] = []
        self._lateness_next = 0

        self.live = 0  # pending timers in the namespace, as the server last said
        self.overdue = 0  # of them, past their deadline and not yet promoted (the promoters' backlog)
        self.unacknowledged = 0  # promoted events not yet acknowledged, read or not
        self.count_set = 0
        self.count_reset = 0
        self.count_cancelled = 0
        self.count_fired = 0  # events this manager promoted
        self.count_retracted = 0
        self.count_refused = 0  # sets the server refused under max_timers
        self.count_received = 0
        self.command_high_water = 0
        self.event_high_water = 0

    # ------------------------------------------------------------------ the command queue

    def queued(self) -> int:
        """Commands not yet applied on the server (queued here, in the outbox, or sent)."""
        return len(self._commands) + self.in_flight

    def push(self, op: int, name: str | None, value: Any, data: Any) -> int:
        """Queue a command unless the queue is full (see ``EngineInterface.push``)."""
        commands = self._commands
        used = len(commands) + self.in_flight
        if used >= self.command_capacity:
            return QUEUE_FULL
        commands.append((op, name, value, data))
        if used >= self.command_high_water:
            self.command_high_water = used + 1
        return QUEUED_FIRST if len(commands) == 1 else QUEUED

    def push_set(self, name: str, deadline: float, span: float, data: Any) -> int:
        """``push(SET, name, (deadline, span), data)``; ``ValueError`` for a name too long for the server (the
        handle's ``try_set_timer`` checks it here, its only way into the queue, rather than on its hot path)."""
        if len(name) > MAX_NAME_BYTES // 4 and too_long(name):
            raise name_error(name)
        return self.push(SET, name, (deadline, span), data)

    def set_now(self, name: str, deadline: float, span: float, data: Any) -> int:
        """``push_set``: a set is a command here, sent to the server in order with the others."""
        return self.push_set(name, deadline, span, data)

    def touch_now(self, name: str) -> bool | None:
        """None: a touch is a command here, sent to the server in order with the others."""
        return None

    def touch(self, name: str, now: float) -> bool:
        """Not applied here: the handle queues a ``TOUCH`` command instead (see ``touch_now``)."""
        raise TypeError("a Redis-backed manager applies touches on the server, as queued commands")

    def push_all(self, commands: list[Command]) -> int:
        """Queue ``commands`` whatever the room; answers as ``push``."""
        if not commands:
            return QUEUED
        first = not self._commands
        self._commands.extend(commands)
        self.command_high_water = max(self.command_high_water, self.queued())
        return QUEUED_FIRST if first else QUEUED

    def withdraw(self, marker: Any) -> bool:
        """Remove the ``FLUSH`` whose future is ``marker`` (its caller was cancelled) if it is still queued here;
        return whether it was. One already moved to the outbox or sent stays until the server answers its
        batch: it adds nothing to the batch, holds its place in the command queue until that answer (as the
        commands around it do), and resolves nothing then (its future is cancelled)."""
        return withdraw_flush(self._commands, marker)

    def apply(self, log: Callable[[int, str | None, Any], None] | None = None) -> bool:
        """Move queued commands to the outbox, in order; True once a SHUTDOWN is reached with everything
        before it applied on the server."""
        commands = self._commands
        moved = False
        while commands and not self.halted:
            command = commands[0]
            op, name = command[0], command[1]
            if op == SHUTDOWN:
                if self.in_flight:
                    break  # the link wakes the runner when the server has applied the rest
                commands.popleft()
                return True
            commands.popleft()
            if op in (CANCEL, TOUCH) and too_long(name):  # type: ignore[arg-type]
                continue  # no timer has such a name (its set is refused at the call): nothing to do, nor to send
            if op == TOUCH and self._received:
                entry = self._received.get(name)  # type: ignore[arg-type]
                if entry is not None:
                    command = (op, name, command[2], entry)
            if log is not None:
                value = command[2]
                log(op, name, value[0] if op == SET and type(value) is tuple else value)
            if op <= CANCEL or op == TOUCH:  # a touch is a set there, with the duration last set
                assert name is not None
                if op == TOUCH:
                    self._touched(name)
                else:
                    self._retract(name)
                unconfirmed = self._unconfirmed
                unconfirmed[name] = unconfirmed.get(name, 0) + 1
                if self._reading:
                    self._suspect(name)
            elif op == CANCEL_ALL:
                self._unconfirmed_all += 1
                self._suspect_all = True
                for ready in list(self._ready):
                    self._retract(ready)
                if self._incoming:  # checked, not yet in the event queue: dropped, their room freed
                    self.acks.extend(self._incoming)
                    self._incoming.clear()
                    self._incoming_names.clear()
                    self.room_freed()
                for events in self._unchecked.values():
                    self._dead.update(map(id, events))
                self._unchecked.clear()
            self.outbox.append(command)
            self.in_flight += 1
            moved = True
        if moved:
            self.kick()
        return False

    def applied(self, commands: list[Command], result: list[int]) -> None:
        """The server applied ``commands``, the oldest sent (``result``: the batch's counts)."""
        self.in_flight -= len(commands)
        unconfirmed = self._unconfirmed
        for command in commands:
            op, name = command[0], command[1]
            if op <= CANCEL or op == TOUCH:
                left = unconfirmed[name] - 1  # type: ignore[index]
                if left:
                    unconfirmed[name] = left  # type: ignore[index]
                else:
                    del unconfirmed[name]  # type: ignore[arg-type]
            elif op == CANCEL_ALL:
                self._unconfirmed_all -= 1
        self.count_set += result[0]
        self.count_reset += result[1]
        self.count_cancelled += result[2]
        self.count_retracted += result[3]
        self.count_refused += result[4]
        self.live = result[5]

    def discard(self) -> tuple[int, list[Any]]:
        """Stop: drop what is queued here. The timers stay on the server; events read but not received
        are left to the link to hand back."""
        flushes = [command[2] for command in self._commands if command[0] == FLUSH]
        flushes += [command[2] for command in self.outbox if command[0] == FLUSH]
        flushes += [command[2] for command in self.sending if command[0] == FLUSH]
        self._commands.clear()
        if not self.settles:  # stopped before it ran: nothing will send their acknowledgements
            return 0, flushes
        markers = self._ack_markers
        return 0, [flush for flush in flushes if flush not in markers]

    def unreceived(self) -> list[RedisTimerExpired]:
        """Events read from the server that the application never received (at stop, to hand back)."""
        events = [event for event in self._events if self._ready.get(event.name) is event]
        events += self._incoming
        events += self._checking
        self._events.clear()
        self._ready.clear()
        self._incoming.clear()
        self._incoming_names.clear()
        self.to_check = []
        self._checking.clear()
        self._awaiting.clear()
        self._stale.clear()
        self._unchecked.clear()
        self._dead.clear()
        self._recheck.clear()
        self._unchecked_count = 0
        return events

    # ------------------------------------------------------------------ what is pending (on the server)

    def live_count(self) -> int:
        """Pending timers in the namespace, as the server last reported."""
        return self.live

    def is_live(self, name: str) -> bool:
        """Not known without asking the server (the handle offers the awaitable forms)."""
        raise TypeError("on the Redis backend use: await handle.get_deadline(name) is not None")

    def pending_deadline(self, name: str) -> float | None:
        """Not known without asking the server (the handle offers the awaitable forms)."""
        raise TypeError("on the Redis backend use: await handle.get_deadline(name)")

    # ------------------------------------------------------------------ events

    def begin_read(self) -> None:
        """The link is about to read the stream: remember which names a command of this manager may change
        on the server after that read (sent and not yet confirmed, or applied here from now on)."""
        self._suspects = set(self._unconfirmed)
        self._suspect_all = self._unconfirmed_all > 0
        self._reading = True

    def read_unread(self, events: list[RedisTimerExpired], marked: Collection[str] = ()) -> None:
        """The link read ``events`` from the stream as new (never delivered before); ``marked``: the entries
        among them that hold an event retracted on the server (a set or cancel of its name after its
        promotion), as the server said right after the read. An event of an unmarked entry is its name's
        current event at that moment, so it needs no check on the server, unless a command of this manager may
        have changed its name on the server after the read: those, and the events of marked entries, go
        through the check with the next batch; the events read after them wait for them (their order)."""
        self._reading = False
        suspects = self._suspects
        self._suspects = set()
        events = self._hold(events)
        if not events:
            return
        if self._suspect_all:
            self._enqueue(events, events)
            return
        if marked or suspects:
            verify = [event for event in events if event.entry in marked or event.name in suspects]
        else:
            verify = []
        if verify or self._checking:
            self._enqueue(events, verify)
            return
        incoming, names = self._incoming, self._incoming_names
        for event in events:
            incoming.append(event)
            names[event.name] = names.get(event.name, 0) + 1
        self.wake()

    def _suspect(self, name: str) -> None:
        suspects = self._suspects
        if len(suspects) >= 4 * self.command_capacity:  # a long read under many commands: check them all
            self._suspect_all = True
        else:
            suspects.add(name)

    def read(self, events: list[RedisTimerExpired]) -> None:
        """The link read ``events`` from the stream (taken over from another consumer); they are checked with
        the next batch."""
        events = self._hold(events)
        if events:
            self._enqueue(events, events)

    def _hold(self, events: list[RedisTimerExpired]) -> list[RedisTimerExpired]:
        """Count ``events`` as held; return them, less those of entries this consumer already holds or is
        acknowledging. An entry comes twice when this consumer's own claim took it (its loop stalled longer
        than ``claim_after``, so the entry looked abandoned): a read or a claim that overlaps one still held,
        or an acknowledgement on its way, would hand the application the same event twice."""
        outstanding, acking = self._outstanding, self._acking
        if outstanding or acking:
            entries = {event.entry for event in events}
            known = {entry for entry in entries if entry in outstanding or entry in acking}
            if known:
                events = [event for event in events if event.entry not in known]
                self.count_duplicates += len(known)
        for event in events:
            names = outstanding.get(event.entry)
            if names is None:
                outstanding[event.entry] = {event.name}
            else:
                names.add(event.name)
        return events

    def _enqueue(self, events: list[RedisTimerExpired], verify: list[RedisTimerExpired]) -> None:
        """Queue ``events`` behind those being checked; ``verify`` (some of them) are checked with the next batch."""
        unchecked = self._unchecked
        for event in events:
            same = unchecked.get(event.name)
            if same is None:
                unchecked[event.name] = [event]
            else:
                same.append(event)
        self._checking.extend(events)
        self._unchecked_count += len(events)
        if verify:
            self.to_check.extend(verify)
            self._awaiting.update(map(id, verify))
            self.kick()
        else:
            self._release()

    def checked(self, events: list[RedisTimerExpired], flags: list[int]) -> None:
        """The server checked ``events`` (read from the stream, in order): the current ones, and those read
        after them, go on to the event queue in order, unless a command applied here has retracted them since;
        the others are acknowledged (in their entry's count: the server has nothing of theirs to delete)."""
        awaiting, stale, recheck = self._awaiting, self._stale, self._recheck
        again = False
        for event, flag in zip(events, flags, strict=True):
            key = id(event)
            if key in recheck:  # a touch of its name went after this check: asked again, after the touch
                recheck.discard(key)
                self.to_check.append(event)
                again = True
                continue
            awaiting.discard(key)
            if not flag:
                stale.add(key)
        if again:
            self.kick()
        self._release()

    def _release(self) -> None:
        """Move the events at the head of ``_checking`` that wait for no check on to the event queue."""
        checking, awaiting, stale, dead = self._checking, self._awaiting, self._stale, self._dead
        unchecked, incoming, names = self._unchecked, self._incoming, self._incoming_names
        acked = False
        while checking and id(checking[0]) not in awaiting:
            event = checking.popleft()
            self._unchecked_count -= 1
            key = id(event)
            if key in dead:
                dead.discard(key)
                stale.discard(key)
                self.acks.append(event)
                acked = True
                continue
            same = unchecked.get(event.name)
            if same is not None:
                for index, other in enumerate(same):
                    if other is event:
                        del same[index]
                        break
                if not same:
                    del unchecked[event.name]
            if key in stale:
                stale.discard(key)
                self.acks.append(event)
                acked = True
            else:
                incoming.append(event)
                names[event.name] = names.get(event.name, 0) + 1
        if acked:
            self.kick()
            self.room_freed()  # dropped: room for as many more
        if incoming:
            self.wake()

    def ready_count(self) -> int:
        """Events waiting to be received."""
        return len(self._ready)

    def pending_events(self) -> int:
        """Events read from the server and not yet received (ready, checked, or being checked)."""
        return len(self._ready) + len(self._incoming) + self._unchecked_count

    def fire(self, bound: float, now: float) -> int:
        """Move checked events into the event queue, as far as it has room; how many."""
        incoming = self._incoming
        moved = 0
        ready = self._ready
        while incoming and len(ready) < self.event_capacity:
            event = incoming.popleft()
            self._unincoming(event.name)
            ready[event.name] = event
            self._events.append(event)
            moved += 1
        if moved:
            self.event_high_water = max(self.event_high_water, len(ready))
        return moved

    def note_lateness(self, samples: list[float]) -> None:
        """Record promotion lateness samples (seconds, by the server's clock)."""
        self.count_fired += len(samples)
        lateness = self._lateness
        if len(samples) >= LATENESS_WINDOW:  # the window holds the last ones only
            lateness[:] = samples[-LATENESS_WINDOW:]
            self._lateness_next = 0
            return
        position = self._lateness_next
        for sample in samples:
            if len(lateness) < LATENESS_WINDOW:
                lateness.append(sample)
            else:
                lateness[position] = sample
                position = (position + 1) & (LATENESS_WINDOW - 1)
        self._lateness_next = position

    def take_now(self) -> RedisTimerExpired | None:
        """``take()``, if no command waits here to be moved to the outbox (or handed over by another thread): a set
        or cancel among them withdraws its name's event from this queue when it moves. Otherwise None, with nothing
        taken (the receive's slow path moves them first)."""
        if self._commands or self.handed_over:
            return None
        return self.take()

    def take(self) -> RedisTimerExpired | None:
        """Remove and return the next receivable event, or None (acknowledging as ``ack`` says)."""
        taken = self.take_many(1)
        return taken[0] if taken else None

    def take_many(self, limit: int) -> list[RedisTimerExpired]:
        """Remove and return up to ``limit`` receivable events."""
        self._received_before()
        events, ready = self._events, self._ready
        taken: list[RedisTimerExpired] = []
        rearms: list[RedisTimerExpired] = []
        once = 0
        while events and len(taken) < limit:
            event = events.popleft()
            if ready.get(event.name) is event:
                del ready[event.name]
                taken.append(event)
                if event.repeating:
                    rearms.append(event)
                else:
                    self._received[event.name] = event.entry
                    once += 1
        if not taken:
            return taken
        self.count_received += len(taken)
        if self.ack_mode == "next":
            self._handed += taken
        elif self.ack_mode == "manual":
            pass  # held (in _outstanding) until the application acknowledges them
        else:  # "receive"
            self.acks += taken
        if once and self.ack_mode != "receive":
            self.marks += taken if not rearms else [event for event in taken if not event.repeating]
        if rearms:
            self.rearms += rearms
        if self.acks or self.rearms or self.marks:
            self.kick()
        if self._incoming:
            self.wake()
        self.room_freed()
        return taken

    def acknowledge(self, events: list[RedisTimerExpired], marker: asyncio.Future[None]) -> Callable[[], bool]:
        """Acknowledge received events (``ack="manual"``); ``marker``: the flush queued to confirm them. Returns
        what takes them back if the call is cancelled (:meth:`_take_back`)."""
        self.acks.extend(events)
        markers = self._ack_markers
        markers[marker] = events
        marker.add_done_callback(lambda done: markers.pop(done, None))
        self.kick()
        return functools.partial(self._take_back, events)

    def _take_back(self, events: list[RedisTimerExpired]) -> bool:
        """Take the acknowledgements of a cancelled ``ack()`` back out while every one of them still waits here for
        the next batch and the stop has not taken them over, and say whether it did; once any is on its way to the
        server (sent, or counted by the link into the calls it is making), they all stand. :meth:`acknowledge`
        appended them together and batches take the oldest first, so they are still a run."""
        acks, count = self.acks, len(events)
        if self._acks_settled or not count:
            return False
        for start in range(len(acks) - count, self.acks_on_their_way - 1, -1):  # the latest run, should one event
            if all(acks[start + index] is event for index, event in enumerate(events)):  # be acknowledged twice
                del acks[start : start + count]
                return True
        return False

    def take_ack_markers(self) -> list[tuple[asyncio.Future[None], list[RedisTimerExpired]]]:
        """The flush markers of acknowledgements still waiting for the server, each with its events (at stop: the
        settle resolves them, and sends every acknowledgement queued by then, a cancelled call's too)."""
        self._acks_settled = True
        markers = [(marker, events) for marker, events in self._ack_markers.items() if not marker.done()]
        self._ack_markers.clear()
        return markers

    def held(self) -> list[str]:
        """The stream entries this consumer holds and has not acknowledged: with an event read and not yet
        received, or received and not yet acknowledged (the link keeps them from looking abandoned)."""
        return list(self._outstanding)

    def finished(self, acks: list[RedisTimerExpired]) -> list[str]:
        """Count ``acks`` (about to be sent) off their entries; the entries with nothing left held, to XACK.
        Only the first acknowledgement of an event counts: a second one (twice acknowledged, or a copy
        delivered again) changes nothing."""
        outstanding = self._outstanding
        received = self._received
        done: list[str] = []
        for event in acks:
            entry = event.entry
            if received and received.get(event.name) == entry:
                del received[event.name]
            names = outstanding.get(entry)
            if names is not None:
                names.discard(event.name)
                if not names:
                    del outstanding[entry]
                    done.append(entry)
        self._acking.update(done)
        return done

    def acking(self) -> set[str]:
        """The stream entries whose acknowledgement is on its way to the server."""
        return set(self._acking)

    def acknowledged(self, done: list[str]) -> None:
        """The server has acknowledged the entries ``done`` (from :meth:`finished`): no claim returns them now."""
        self._acking.difference_update(done)

    def take_handed(self) -> list[RedisTimerExpired]:
        """The received events not yet acknowledged under ``ack="next"`` (at stop, to acknowledge)."""
        handed, self._handed = self._handed, []
        return handed

    def lateness_window(self) -> list[float]:
        """Recent promotion lateness samples, seconds."""
        return list(self._lateness)

    def _received_before(self) -> None:
        if self._handed:
            self.acks.extend(self._handed)
            self._handed = []
            self.kick()

    def _withdraw(self, name: str) -> tuple[RedisTimerExpired | None, list[RedisTimerExpired] | None]:
        """Take ``name``'s event out of the event queue, and its checked events out of those on their way to it
        (None if it had none there)."""
        event = self._ready.pop(name, None)
        if event is not None and len(self._events) > 2 * len(self._ready) + 64:
            ready = self._ready
            self._events = deque(event for event in self._events if ready.get(event.name) is event)
        incoming = None
        if name in self._incoming_names:
            del self._incoming_names[name]
            incoming = [event for event in self._incoming if event.name == name]
            self._incoming = deque(event for event in self._incoming if event.name != name)
        return event, incoming

    def _retract(self, name: str) -> None:
        event, incoming = self._withdraw(name)
        if event is not None:
            self.acks.append(event)
            self.count_retracted += 1
            self.room_freed()
        if incoming is not None:
            self.acks.extend(incoming)
            self.room_freed()
        same = self._unchecked.pop(name, None)
        if same is not None:
            self._dead.update(map(id, same))

    def _touched(self, name: str) -> None:
        """A touch of ``name`` goes to the server, which re-arms the timer and retracts its event, or leaves both as
        they are (``max_timers`` reached: no place for it; or the timer not pending): the name's events here are
        taken out of the event queue and checked on the server after the touch, each handed over again if it is
        still current there, and dropped otherwise. (Withdrawn and acknowledged at once, as a set or cancel's are,
        the event of a touch the server refused was lost: not re-armed, and never delivered.)"""
        event, incoming = self._withdraw(name)
        moved = ([] if event is None else [event]) + (incoming or [])
        same = self._unchecked.get(name)
        if same:  # read and being checked, or waiting behind events being checked
            awaiting = self._awaiting
            queued = set(map(id, self.to_check))  # their checks go with the touch, after it
            for other in same:
                key = id(other)
                if key not in awaiting:  # no check of its own (or its check answered): one after the touch
                    self.to_check.append(other)
                    awaiting.add(key)
                elif key not in queued:  # its check is on its way, maybe ahead of the touch: asked again after
                    self._recheck.add(key)
        if moved:  # ahead of the events read after them, in their order
            self._checking.extendleft(reversed(moved))
            unchecked = self._unchecked.setdefault(name, [])
            unchecked += moved
            self._unchecked_count += len(moved)
            self.to_check += moved
            self._awaiting.update(map(id, moved))
        if moved or same:
            self.kick()

    def _unincoming(self, name: str) -> None:
        names = self._incoming_names
        left = names[name] - 1
        if left:
            names[name] = left
        else:
            del names[name]
