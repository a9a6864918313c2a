"""The link between a Redis-backed manager and the server: the tasks that talk to Redis.

Five tasks share one ``redis.asyncio`` client (each blocking call holds its own pooled connection):

* the shipper sends the outbox, acknowledgements, re-arms and checks of read events in batches, one
  ``APPLY`` script call per batch, in order;
* the promoter moves due timers into the stream (``PROMOTE``), then sleeps until the heartbeat tick of
  the next deadline, or until the watcher says another process set an earlier one;
* the watcher blocks on the namespace's marker key (``BZPOPMIN``), which a set of a new earliest
  timer moves, so an idle manager costs nothing and still wakes at once;
* the reader blocks on the stream (``XREADGROUP``) for as many events as the event queue has room for, and
  asks in the same round trip which of the entries it read hold a retracted event (``MARKS``);
* the claimer takes over, every ``claim_after / 2``, events that a consumer read and did not
  acknowledge for ``claim_after`` (``XAUTOCLAIM``).

Every call is retried while the server is unreachable, out of memory (``OOM``: the call applied nothing) or a
read-only replica (``READONLY``, after a failover: the call applied nothing either), for at most ``reconnect_timeout``
seconds; past that the manager stops with :class:`BackendUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import operator
import re
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio
from redis import exceptions as redis_errors

from .._futures import fail, resolve
from .._protocol import CANCEL, CANCEL_ALL, FLUSH, SET, SET_INTERVAL, TOUCH, Interval
from ..errors import BackendUnavailable, ManagerClosed
from ._clock import ServerClock
from ._codec import MAX_NAME_BYTES
from ._event import RedisTimerExpired, entry_events
from ._scripts import APPLY, CLAIM, FORGET, KEY_NAMES, MARKS, PROMOTE, QUERY

if TYPE_CHECKING:
    from .._runner import Runner
    from ._codec import Codec
    from ._engine import RedisEngine

__all__ = ("GROUP", "Link", "namespace_keys")

logger = logging.getLogger("timer_manager")

GROUP = "timers"  # the consumer group every manager of a namespace reads in
BATCH = 1000  # commands per APPLY call
# Bytes of arguments per APPLY call, about (a command longer than that goes alone): Redis refuses an argument longer
# than its proto-max-bulk-len, 1 MiB at the least (512 MB by default), and closes the connection. A set's name and
# payload are limited at the call (_codec.py) so that one set fits this.
CALL_BYTES = 1 << 20
CALL_OVERHEAD = 128  # what a command, re-arm, acknowledgement or check takes besides its name and payload, with room
PROMOTE_LIMIT = 1000  # events per PROMOTE call
CLAIM_MEMBER = "c"  # in the marker key: a stopped manager handed back events
WAKE_MEMBER = "w"  # in the marker key, scored with the earliest due time: a set moved it earlier (see APPLY)
CLAIM_CALLS = 100  # CLAIM calls per round of the claimer at most (the next round goes on from where it stopped)
PACK = 64  # events per stream entry at most (one XADD, pending entry and XACK for them all)
BLOCK_SECONDS = 10.0  # longest blocking read; a stalled connection is noticed within this plus the timeout
# seconds: a batch's record outlives its retries, within what Redis takes as an expiry (ms in 63 bits)
KEEP_LIMIT = 1e15
FAR_MS = 1e300  # a period or heartbeat longer than this many milliseconds is sent as this: it never comes round either
_RETRIED = (redis_errors.ConnectionError, redis_errors.TimeoutError, asyncio.TimeoutError, OSError)
# maxmemory reached (noeviction): the server refuses a script at its first write that may grow memory, so nothing of
# it is applied; memory comes back as consumers acknowledge, keys expire or an operator acts. Waited for as an
# unreachable server is.
_OUT_OF_MEMORY = redis_errors.OutOfMemoryError
_WAITED = (*_RETRIED, _OUT_OF_MEMORY)


def _closed_transport(exc: BaseException) -> bool:
    """Whether ``exc`` is uvloop's refusal of a call on a connection that closed under it (redis-server killed):
    a ``RuntimeError`` ("unable to perform operation on <TCPTransport closed=True ...>; the handler is closed")
    where asyncio's transports raise an ``OSError``. A lost connection all the same; any other RuntimeError is
    a defect, which a retry must not hide."""
    return isinstance(exc, RuntimeError) and str(exc).startswith("unable to perform operation on")


# redis-py's annotation of a pipeline's error, before the server's word: the error's args (``: ('NOGROUP ...',)``)
# up to 8.1, its text from 8.2.
_PIPELINE_ERROR = r"of pipeline caused error: (?:\(['\"])?"
_PIPELINE_NO_GROUP = re.compile(_PIPELINE_ERROR + "NOGROUP ")


def _no_group(exc: BaseException) -> bool:
    """Whether ``exc`` is the server's ``NOGROUP`` (no such stream or consumer group): a call's own error, or one that
    redis-py's pipeline annotated (the reader's XREADGROUP: ``Command # 1 (...) of pipeline caused error: (...)``)."""
    if not isinstance(exc, redis_errors.ResponseError):
        return False
    text = str(exc)
    return text.startswith("NOGROUP") or _PIPELINE_NO_GROUP.search(text) is not None


_PIPELINE_UNBLOCKED = re.compile(_PIPELINE_ERROR + "UNBLOCKED ")


def _read_only(exc: BaseException) -> bool:
    """Whether ``exc`` says the server is now a replica (a failover demoted it, or a replica took its address): its
    ``READONLY`` (redis-py's ``ReadOnlyError``, of a command, a pipeline's, or a script's write), or ``UNBLOCKED``, the
    end of a blocking call it had not served when it became one (the watcher's BZPOPMIN; it then closes the
    connection)."""
    if isinstance(exc, redis_errors.ReadOnlyError):
        return True
    if not isinstance(exc, redis_errors.ResponseError):
        return False
    text = str(exc)
    return text.startswith("UNBLOCKED ") or _PIPELINE_UNBLOCKED.search(text) is not None


T = TypeVar("T")


_length = struct.Struct(">I").pack
_name = operator.attrgetter("name")
_name_of, _data_of = operator.itemgetter(1), operator.itemgetter(3)  # of a command
# What the engine queues for the next call besides commands, in the order of APPLY's arguments (see _ship).
_QUEUED = ("rearms", "acks", "to_check", "marks")
_ACKS = _QUEUED.index("acks")
_EMPTY = _length(0)
_EMPTY_FIELDS = _EMPTY * 3
_NO_PAYLOAD = _length(1) + b"n"


def _field(text: str) -> bytes:
    """One field of APPLY's commands string: its length, then its UTF-8 bytes."""
    raw = text.encode("utf-8", "surrogatepass")
    return _length(len(raw)) + raw


def _payload(data: bytes | None) -> bytes:
    """A payload (already encoded at the call) as a field; None when the set gave none."""
    return _NO_PAYLOAD if data is None else _length(len(data)) + data


def _entries(events: list[RedisTimerExpired]) -> bytes:
    """APPLY's acknowledgements or checks string: the name and stream entry id of each event, as fields (an
    entry's field made once: its events come together)."""
    parts: list[bytes] = []
    made: dict[str, bytes] = {}
    for event in events:
        name = event.name.encode("utf-8", "surrogatepass")
        entry = made.get(event.entry)
        if entry is None:
            entry = made[event.entry] = _field(event.entry)
        parts += (_length(len(name)), name, entry)
    return b"".join(parts)


def _fit(items: list[Any], count: int, room: int, first: bool) -> tuple[int, int]:
    """How many of the first ``count`` events (re-arms, acknowledgements, checks) fit ``room`` bytes of a call, and
    their bytes (over-counted: 4 bytes a character of a name); ``first``: none is in the call yet, so that one goes
    whatever its size."""
    if not count:
        return 0, 0
    used = count * CALL_OVERHEAD + (sum(map(len, map(_name, itertools.islice(items, count)))) << 2)
    if used <= room:  # all of them (the common case: one pass in C)
        return count, used
    taken = used = 0
    for index in range(count):
        cost = CALL_OVERHEAD + (len(items[index].name) << 2)
        if used + cost > room and (taken or not first):
            break
        used += cost
        taken += 1
    return taken, used


def _fit_ids(ids: list[str], room: int, first: bool) -> int:
    """How many of the first stream entry ids fit ``room`` bytes of a call (APPLY's ``done``: each id and a space);
    ``first``: none is in the call yet, so that one goes whatever the room."""
    taken = used = 0
    for entry in ids:
        used += len(entry) + 1
        if used > room and (taken or not first):
            break
        taken += 1
    return taken


def _whole_ms(seconds: float) -> int:
    """A period or heartbeat in whole milliseconds, at least 1, as the scripts take it. A finite span may be too
    long for its milliseconds to be a finite float (a period of 1e306 s): it is capped at ``FAR_MS``, as far off."""
    return max(1, round(min(seconds * 1000.0, FAR_MS)))


def _ms_text(ms: int) -> str:
    """Whole milliseconds as APPLY reads them (Lua's ``tonumber``), in at most 23 characters: past 2**53 in the
    shortest float form, which names the same double (a period of 1e250 s written out in full is 254 digits, more
    than the ``CALL_OVERHEAD`` counted for a command besides its name and payload)."""
    return str(ms) if ms < 1 << 53 else repr(float(ms))


def namespace_keys(namespace: str) -> list[str]:
    """The namespace's keys, in the order the scripts take them (one hash tag: one Cluster slot)."""
    return [f"{{tm:{namespace}}}:{name}" for name in KEY_NAMES]


class Link:
    """The tasks of one manager that talk to its Redis server."""

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        runner: Runner,
        engine: RedisEngine,
        codec: Codec,
        *,
        namespace: str,
        consumer: str,
        claim_after: float,
        reconnect_timeout: float,
        max_timers: int | None,
    ) -> None:
        self.client = client
        self.runner = runner
        self.engine = engine
        self.codec = codec
        self.keys = namespace_keys(namespace)
        # APPLY's keys: the namespace's, then this manager's record of its last batch applied (see APPLY), so that a
        # batch sent again after a dropped connection is not applied twice. Batches are numbered from 1.
        self._apply_keys = [*self.keys, f"{{tm:{namespace}}}:batch:{secrets.token_hex(8)}"]
        self._batches = 0
        self.consumer = consumer
        self.claim_after = claim_after
        self.reconnect_timeout = reconnect_timeout
        self.max_timers = max_timers or 0
        # The blocking reads (XREADGROUP, BZPOPMIN) must end on the server before the client's socket timeout cuts
        # them short: a read cut short looks like an unreachable server, and an idle manager would stop after
        # reconnect_timeout (redis-py 8's default socket timeout, 5 s, is shorter than BLOCK_SECONDS).
        self.block_seconds = _block_seconds(client)
        heartbeat = runner.heartbeat
        self.heartbeat_ms = 0 if heartbeat == 0.0 else _whole_ms(heartbeat)
        # Events per stream entry: a reader takes whole entries, so a small event queue gets small ones.
        self.pack = max(1, min(PACK, engine.event_capacity // 16))
        self._apply = client.register_script(APPLY)
        self._promote = client.register_script(PROMOTE)
        self._claim = client.register_script(CLAIM)
        self._query = client.register_script(QUERY)
        self._forget = client.register_script(FORGET)
        # The reader's replies are taken raw (on the same connections): redis-py's parsing of XREADGROUP into
        # dictionaries costs more than making the events. A cluster client has no single pool to share: its
        # replies come parsed and are put back in the raw shape.
        self._reader: redis.asyncio.Redis | None = None
        if not isinstance(client, redis.asyncio.RedisCluster):
            self._reader = redis.asyncio.Redis(connection_pool=client.connection_pool)
            self._reader.response_callbacks.pop("XREADGROUP", None)
        self._last_read = "0-0"  # the last stream entry this consumer read as new
        # A read whose reply did not come back (a dropped connection, a stall) may have been served: the entries it got
        # are pending on this consumer, and a read of new entries (">") never returns them. Until a read's reply comes
        # back, the next one reads this consumer's own pending entries past the last read (its history) instead.
        self._reread = False
        self._read_since = ">"  # what the last read asked for: ">" (new entries) or the entry its history starts after
        self._claim_from = "0-0"  # where the claimer's next XAUTOCLAIM starts in the pending list
        self._unconfirmed: (
            tuple[list[RedisTimerExpired], list[RedisTimerExpired], list[str], list[RedisTimerExpired]] | None
        ) = None
        self._held_flushes: list[Any] = []  # of a call answered, confirmed with a later one (see _ship)
        self._work = asyncio.Event()  # the engine has something to ship
        self._room = asyncio.Event()  # the event queue has room again
        self._marker = asyncio.Event()  # another process set an earlier timer
        self._claim_now = asyncio.Event()  # a manager that stopped handed back events: claim them now
        # The tasks end on this flag, not only on cancellation: asyncio.wait_for (Python < 3.12) swallows a
        # cancellation that arrives as the awaited call completes.
        self._stopping = False
        self._reachable = True  # the last call to the server that ended got an answer (not a connection error)
        self._reading = False  # the reader's call is on its way (a stop that cuts it short may lose its reply)
        engine.kick = self._work.set
        engine.room_freed = self._room.set
        engine.settles = True  # serve() always ends in _finish, which resolves the ack() markers a stop leaves

    # ------------------------------------------------------------------ running

    async def serve(self) -> None:
        """Run until the manager stops; then acknowledge what was received and hand back what was not."""
        runner = self.runner
        done = runner.done
        assert done is not None
        tasks: list[asyncio.Task[None]] = []
        try:
            # Raced against the stop: while the server cannot be reached, the first call is retried for up to
            # reconnect_timeout, and a stop meanwhile (a token, a shutdown) must end run() promptly.
            prepare = asyncio.ensure_future(self._prepare())
            prepare.add_done_callback(_take_error)
            try:
                await asyncio.wait([done, prepare], return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not prepare.done():
                    prepare.cancel()
            if not prepare.done() or prepare.cancelled():
                return  # stopped first (the finally below settles)
            prepare.result()
            tasks = [
                asyncio.ensure_future(work())
                for work in (self._ship_loop, self._promote_loop, self._watch_loop, self._read_loop, self._claim_loop)
            ]
            await asyncio.wait([done, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    runner.stop(f"failed: {exc!r}", exc)
                    break
        except asyncio.CancelledError:
            runner.stop("run() was cancelled")
            raise
        except Exception as exc:
            runner.stop(f"failed: {exc!r}", exc)
        finally:
            self._stopping = True
            while tasks:
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=0.1)
                tasks = [task for task in tasks if not task.done()]
            await self._finish()

    async def _prepare(self) -> None:
        """Check the server's settings (where it shows them): the largest set must fit its argument limit, and a
        policy that evicts keys is warned of; then create the namespace's consumer group (reading from the
        stream's start) if it does not exist."""
        settings = await self._call(self._settings)
        limits = [int(value) for value in _config_values(settings, "proto-max-bulk-len")]
        if limits:
            _check_max_payload(self.codec.max_payload, min(limits))
        _warn_of_eviction(self.runner.name, _evicting_policies(settings))
        await self._call(self._create_group)

    async def _create_group(self) -> None:
        """Create the namespace's consumer group, reading from the stream's start (and the stream, if it does not
        exist), unless it exists."""
        try:
            await self.client.xgroup_create(self.keys[5], GROUP, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _settings(self) -> Any:
        """The server's ``proto-max-bulk-len``, ``maxmemory`` and ``maxmemory-policy`` (a ``CONFIG GET`` reply); only
        the first where the server takes one setting per ``CONFIG GET`` (before Redis 7, or a proxy); None where
        ``CONFIG`` is refused (a managed Redis: an ACL, or the command renamed). On a cluster, every primary's: the
        namespace's slot may move to any of them (a cluster client would ask its default node alone)."""
        options: dict[str, Any] = {}
        if isinstance(self.client, redis.asyncio.RedisCluster):
            options["target_nodes"] = redis.asyncio.RedisCluster.PRIMARIES
        for names in (("proto-max-bulk-len", "maxmemory", "maxmemory-policy"), ("proto-max-bulk-len",)):
            with contextlib.suppress(redis_errors.ResponseError):
                return await self.client.config_get(*names, **options)
        return None

    async def _finish(self) -> None:
        """After the stop: acknowledge received events (``ack="next"``, and those of ``ack()`` calls the stop caught
        waiting for the server, which return once that is done), re-arm received repeating timers, mark received
        events as received, hand events read but never received back to the other consumers at once, and leave the
        consumer group if this consumer holds nothing (``FORGET``)."""
        engine = self.engine
        unreceived = engine.unreceived()
        waiting = engine.take_ack_markers()
        engine.acks.extend(engine.take_handed())
        done = engine.finished(engine.acks)
        if self._unconfirmed is not None:
            # The stop cut a batch short: the server may not have its acknowledgements, re-arms and receipt marks
            # (sending them twice does no harm: a re-arm names its event's entry, see APPLY). Lost, the entries
            # would stay pending here and go to another consumer after claim_after, though this one received them;
            # and a touch from another manager would re-arm a timer whose event this one received and holds
            # unacknowledged (ack="manual").
            rearms, acks, sent, marks = self._unconfirmed
            engine.rearms[:0], engine.acks[:0], done[:0], engine.marks[:0] = rearms, acks, sent, marks
        # The acknowledgements still to be sent (ids of their events); a waiting ack() call's others are on the server
        # (sent in a batch that was answered).
        unsent = set(map(id, engine.acks))

        def answer() -> None:
            """The ack() calls whose every acknowledgement is on the server return."""
            nonlocal waiting
            for marker, events in waiting:
                if not marker.done() and unsent.isdisjoint(map(id, events)):
                    resolve(marker)
            waiting = [(marker, events) for marker, events in waiting if not marker.done()]

        retry = self._reachable

        def call(make: Callable[[], Awaitable[T]]) -> Awaitable[T]:
            # Retried while the server cannot be reached or answer (until the bound below): each call does no harm
            # twice, and one whose reply was lost may have been applied. An APPLY sent again keeps its batch number.
            # Made once if the server was not answering at the stop (BackendUnavailable, a stop while the first call
            # is retried): the stop is not held up for a server already waited for.
            return self._call(make, settling=True) if retry else make()

        async def settle() -> None:
            answer()
            rearms, acks, marks, entries = engine.rearms, engine.acks, engine.marks, done
            # In calls of CALL_BYTES at most. The entries to XACK go once every acknowledgement and re-arm is sent,
            # with the last of them and in the calls after it: an entry acknowledged first would stay so if the
            # settle then failed, its events' records left behind (and a received repeating timer never re-armed).
            while rearms or acks or marks or entries:
                taken, used = _fit(rearms, len(rearms), CALL_BYTES, True)
                more, used_more = _fit(acks, len(acks), CALL_BYTES - used, not taken)
                used += used_more
                noted, used_noted = _fit(marks, len(marks), CALL_BYTES - used, not (taken or more))
                used += used_noted
                xacked = 0
                if taken == len(rearms) and more == len(acks) and noted == len(marks):
                    xacked = _fit_ids(entries, CALL_BYTES - used, not (taken or more or noted))
                self._batches += 1  # a batch of its own (the one the stop cut short may have been applied)
                args = self._batch_args([], rearms[:taken], acks[:more], [], entries[:xacked], marks[:noted])
                await call(functools.partial(self._apply, keys=self._apply_keys, args=args))
                unsent.difference_update(map(id, acks[:more]))
                answer()
                rearms, acks, marks, entries = rearms[taken:], acks[more:], marks[noted:], entries[xacked:]
            engine.acks, engine.rearms, engine.marks = [], [], []
            handed_back: list[Any] = list(dict.fromkeys(event.entry for event in unreceived))
            # Entries pending on this consumer that the engine never got: the read the stop cut short after the
            # server had handed them over, its reply lost on its way. Read and never received: handed back too.
            # They come after the last entry read; the other entries pending here past it are known (taken over
            # from another consumer and held, or being acknowledged).
            # Asked only if the stop cut a read short, and the server was answering (not after BackendUnavailable).
            known = set(engine.held()) | engine.acking()
            pending: Any = []
            if self._reading and self._reachable:
                pending = await call(
                    functools.partial(
                        self.client.xpending_range,
                        self.keys[5],
                        GROUP,
                        min="-" if self._last_read == "0-0" else f"({self._last_read}",
                        max="+",
                        count=min(len(known) + engine.event_capacity + 1, 2**62),  # one read, of at most that many
                        consumername=self.consumer,
                    )
                )
            for item in pending:
                entry = item["message_id"]
                entry = entry.decode("ascii") if isinstance(entry, bytes) else str(entry)
                if entry not in known:
                    handed_back.append(entry)
            if handed_back:
                # Their idle time set past claim_after: the next XAUTOCLAIM of any consumer takes them (the events
                # of an entry that this consumer acknowledged are not taken again: their records are gone).
                await call(
                    functools.partial(
                        self.client.xclaim,
                        self.keys[5],
                        GROUP,
                        self.consumer,
                        0,
                        handed_back,
                        idle=int(self.claim_after * 1000),
                        justid=True,
                    )
                )
                # and tell another manager of the namespace, whose watcher takes this member of the marker key
                # first (score 0): its claimer takes them over now, not at its next round (claim_after / 2)
                await call(functools.partial(self.client.zadd, self.keys[4], {CLAIM_MEMBER: 0}))
            # The marker this manager's watcher may have popped (a set of an earlier timer, elsewhere too) and its
            # promoter not yet acted on (the stop cut either short): put back, due at once, so that another manager's
            # promoter looks for that timer now rather than at the deadline it knew (minutes away, say). Harmless
            # when there was none: a promoter that pops it finds nothing new.
            await call(functools.partial(self.client.zadd, self.keys[4], {WAKE_MEMBER: 0}))
            # This consumer leaves the group if it holds nothing (else it stays until its entries are taken over),
            # with the consumers that stopped before and whose entries were taken over since: idle for claim_after,
            # as a dead consumer's events are, and for two blocking reads. On Redis 7.2 and later a live consumer's
            # every read resets its idle time; before 7.2 only a read that returns entries does, so a live consumer
            # with nothing pending that has read nothing for that long may go too, which loses nothing (the script
            # removes only consumers holding no entry) and its next read makes it again. The group's list of
            # consumers does not grow with each restart.
            idle = max(self.claim_after, 2 * BLOCK_SECONDS)
            await call(functools.partial(self._forget, keys=self.keys, args=[GROUP, self.consumer, int(idle * 1000)]))

        try:
            await asyncio.wait_for(settle(), min(self.reconnect_timeout, 5.0))
        except Exception as exc:  # the manager has stopped: report, never raise from here
            logger.warning("timer manager %r: could not settle with Redis at stop: %r", self.runner.name, exc)
        finally:
            runner = self.runner
            closed = ManagerClosed(f"timer manager {runner.name!r} stopped ({runner.stop_reason})")
            for marker, _ in waiting:  # not on the server: those ack() calls had no effect
                fail(marker, closed)

    # ------------------------------------------------------------------ the tasks

    async def _ship_loop(self) -> None:
        engine = self.engine
        while not self._stopping:
            await self._work.wait()
            self._work.clear()
            while engine.outbox or engine.acks or engine.rearms or engine.to_check or engine.marks:
                # The acknowledgements, re-arms, checks and receipts queued so far come after the commands now in the
                # outbox (a retraction's acknowledgement after the touch that re-arms from the event's record, a check
                # after a set of its name applied here before the read): they go with the call that carries the last
                # of those commands, never with an earlier one when the outbox takes several calls. Each call carries
                # BATCH commands and CALL_BYTES at most (or one longer command alone); what does not fit the call of
                # the last commands goes in the calls after it, in order. Everything is taken from the engine call by
                # call, so that a stop finds there what was not sent.
                ahead = len(engine.outbox)
                left = [len(getattr(engine, kind)) for kind in _QUEUED]
                engine.acks_on_their_way = left[_ACKS]  # counted: a cancelled ack() may no longer take them back
                while True:
                    commands, used = self._take(ahead)
                    ahead -= len(commands)
                    if ahead:  # its flushes are confirmed with the round's last call (an ack_events() marker's
                        # acknowledgements go with the last commands)
                        await self._ship(commands, [], [], [], [], last=False)
                        continue
                    while True:
                        first = not commands
                        pieces: list[list[RedisTimerExpired]] = []
                        for index, kind in enumerate(_QUEUED):
                            queued = getattr(engine, kind)
                            taken, more = _fit(queued, left[index], CALL_BYTES - used, first)
                            pieces.append(queued[:taken])
                            setattr(engine, kind, queued[taken:])
                            left[index] -= taken
                            used += more
                            first = first and not taken
                        engine.acks_on_their_way = left[_ACKS]
                        await self._ship(commands, *pieces, last=not any(left))
                        if not any(left):
                            break
                        commands, used = [], 0
                    break

    def _take(self, ahead: int) -> tuple[list[Any], int]:
        """The next call's commands from the outbox (of the ``ahead`` there before the acknowledgements, re-arms and
        checks now queued), and their bytes (over-counted)."""
        outbox = self.engine.outbox
        count = min(BATCH, ahead)
        commands: list[Any] = [outbox.popleft() for _ in range(count)]
        used = count * CALL_OVERHEAD + (sum(map(len, filter(None, map(_name_of, commands)))) << 2)
        used += sum(map(len, filter(None, map(_data_of, commands))))
        if used <= CALL_BYTES or count == 1:  # all of them (the common case: passes in C)
            return commands, used
        outbox.extendleft(reversed(commands))
        commands = []
        used = 0
        for _ in range(count):
            command = outbox[0]
            name, data = command[1], command[3]
            cost = CALL_OVERHEAD + (len(name) << 2 if name else 0) + (len(data) if data else 0)
            if used + cost > CALL_BYTES and commands:
                break
            used += cost
            commands.append(outbox.popleft())
        return commands, used

    async def _ship(
        self,
        commands: list[Any],
        rearms: list[RedisTimerExpired],
        acks: list[RedisTimerExpired],
        checks: list[RedisTimerExpired],
        marks: list[RedisTimerExpired],
        *,
        last: bool = True,
    ) -> None:
        """Send one batch and take in its result (``marks``: one-shot events received here and not yet acknowledged,
        to mark as received on the server; ``last``: the last call of a round, which carries the commands that were in
        the outbox at its start, then the acknowledgements, re-arms, checks and receipts queued by then; the flushes
        of the round's earlier calls are confirmed with it)."""
        engine = self.engine
        done = engine.finished(acks)
        # Until the server answers, a stop (which cancels this call) must send these again at the finish.
        self._unconfirmed = (rearms, acks, done, marks)
        held = self._held_flushes
        engine.sending = [*held, *commands]  # a stop meanwhile fails its flushes, as those still queued
        self._batches += 1  # a new batch; the tries of one batch carry the same number
        result = await self._call(functools.partial(self._send_batch, commands, rearms, acks, checks, done, marks))
        self._unconfirmed = None
        engine.acknowledged(done)
        engine.applied(commands, result)
        flushes = [command for command in commands if command[0] == FLUSH]
        if not last:
            # An ack_events() queues its acknowledgements with its flush: the flush is confirmed once they all are
            # (they go with the round's last commands and may take calls after them), in flight until then.
            held += flushes
            engine.in_flight += len(flushes)
            flushes = []
        else:
            engine.in_flight -= len(held)
            flushes[:0] = held
            self._held_flushes = held = []
        engine.sending = held
        if result[4]:
            logger.warning(
                "timer manager %r: %d sets refused by the server: max_timers=%d reached in the namespace",
                self.runner.name,
                result[4],
                self.max_timers,
            )
        if checks:
            engine.checked(checks, result[6:])
        for command in flushes:
            resolve(command[2])
        engine.wake()

    async def _send_batch(
        self,
        commands: list[Any],
        rearms: list[RedisTimerExpired],
        acks: list[RedisTimerExpired],
        checks: list[RedisTimerExpired],
        done: list[str],
        marks: list[RedisTimerExpired],
    ) -> list[int]:
        """One APPLY call (its arguments made afresh at each try, so a retry takes the wait off too)."""
        args = self._batch_args(commands, rearms, acks, checks, done, marks)
        result = await self._apply(keys=self._apply_keys, args=args)
        return [int(value) for value in result]

    def _batch_args(
        self,
        commands: list[Any],
        rearms: list[RedisTimerExpired],
        acks: list[RedisTimerExpired],
        checks: list[RedisTimerExpired],
        done: list[str],
        marks: list[RedisTimerExpired] | None = None,
    ) -> list[Any]:
        """The APPLY arguments; relative deadlines become the time left now (the wait so far is taken off).
        ``done``: the stream entries whose every event this consumer has acknowledged; ``marks``: events received."""
        parts: list[bytes] = []
        add = parts.append
        now = time.monotonic()
        for op, name, value, data in commands:
            if op == SET:
                if type(value) is tuple:  # (monotonic deadline, duration): the duration is what a touch adds
                    delay = (value[0] - now) * 1e6
                    add(b"s" + _field(name) + _field(repr(delay)) + _field(repr(value[1] * 1e6)))
                elif isinstance(value, float):
                    delay = (value - now) * 1e6
                    add(b"s" + _field(name) + _field(repr(delay)) + _field(repr(max(0.0, delay))))
                else:
                    add(b"a" + _field(name) + _field(repr(value.seconds * 1000.0)) + _field(repr(value.duration * 1e6)))
                add(_payload(data))
            elif op == SET_INTERVAL:
                interval: Interval = value
                period_ms = _ms_text(_whole_ms(interval.period))
                first = repr((interval.origin - now) * 1e6)
                add(b"i" + _field(name) + _field(first) + _field(f"{period_ms}|{interval.missed}") + _payload(data))
            elif op == TOUCH:  # due at the call + the duration last set: the server takes off the time it waited
                # data: the stream entry of this name's event received here and not yet acknowledged, if any
                waited = max(0.0, (now - value) * 1e6)
                add(b"t" + _field(name) + (_field(data) if data else _EMPTY) + _field(repr(waited)) + _EMPTY)
            elif op == CANCEL:
                add(b"c" + _field(name) + _EMPTY_FIELDS)
            elif op == CANCEL_ALL:
                add(b"C" + _field("") + _EMPTY_FIELDS)
        for event in rearms:
            add(b"r" + _field(event.name) + _field(str(event.generation)) + _field(repr(event.deadline * 1000.0)))
            add(_field(event.entry))
        # a batch sent again after a dropped connection is recognised by its number for as long as it may be retried
        keep = int(min(self.reconnect_timeout + 60.0, KEEP_LIMIT) * 1000)
        batch = self._batches
        received = _entries(marks) if marks else b""
        return [
            self.max_timers,
            GROUP,
            b"".join(parts),
            _entries(acks),
            _entries(checks),
            " ".join(done),
            batch,
            keep,
            received,
        ]

    async def _promote_loop(self) -> None:
        engine = self.engine
        heartbeat = self.heartbeat_ms
        clock = ServerClock()
        while not self._stopping:
            self._marker.clear()
            sent = time.monotonic()
            result = await self._call(lambda: self._promote(keys=self.keys, args=[PROMOTE_LIMIT, heartbeat, self.pack]))
            promoted, next_due, now_us, engine.live, engine.overdue, engine.unacknowledged = map(int, result[:6])
            clock.note(sent, time.monotonic(), now_us)
            if promoted:
                samples: list[float] = []
                for index in range(6, len(result), 2):  # (ms late, how many) runs
                    samples += [int(result[index]) / 1000.0] * int(result[index + 1])
                engine.note_lateness(samples)
            if promoted >= PROMOTE_LIMIT:
                continue
            if next_due < 0:
                wake_at = time.monotonic() + BLOCK_SECONDS
            else:
                tick = next_due if not heartbeat else math.ceil(next_due / heartbeat) * heartbeat
                wake_at = clock.local_time(tick)
            await self._sleep_until(wake_at)

    async def _sleep_until(self, wake_at: float) -> None:
        """Wait until ``wake_at`` (monotonic), or until the watcher says another process set an earlier timer. A
        loop's timer may fire early (uvloop's, by up to a millisecond): then the rest is waited too, since a
        PROMOTE sent before the tick would find nothing and cost a round trip more before the next one."""
        while not self._marker.is_set():
            wait = wake_at - time.monotonic()
            if wait <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._marker.wait(), wait)

    async def _watch_loop(self) -> None:
        wake_key = self.keys[4]
        tries = 0

        def pop() -> Awaitable[Any]:
            nonlocal tries
            tries += 1
            if tries > 1:
                # The try before, whose reply did not come back (a dropped connection, a stall), may have popped a
                # member no one else will see: the promoter looks for an earlier timer, the claimer for events handed
                # back.
                self._marker.set()
                self._claim_now.set()
            return self.client.bzpopmin(wake_key, timeout=self.block_seconds)

        while not self._stopping:
            tries = 0
            popped = await self._call(pop, blocking=True)
            if popped:
                if popped[1] == CLAIM_MEMBER.encode():
                    self._claim_now.set()
                else:
                    self._marker.set()

    async def _read_loop(self) -> None:
        engine = self.engine
        stream = self.keys[5]
        while not self._stopping:
            room = engine.event_capacity - engine.pending_events()
            if room <= 0:
                self._room.clear()
                if engine.event_capacity - engine.pending_events() <= 0:
                    await self._room.wait()
                continue
            # whole entries: as many as fit the room when every entry is full, and at least one
            count = max(1, room // self.pack)
            self._reading = True
            reply, marked = await self._call(functools.partial(self._read_new, stream, count), blocking=True)
            self._reading = False
            # the raw reply: [[stream, [[entry id, [name, value, name, value...]], ...]]] (RESP3: a map), or None
            entries = (next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]) if reply else []
            # the reply is here: a read of the history goes on while it fills its count (more may be pending here)
            self._reread = self._read_since != ">" and len(entries) >= count
            events: list[RedisTimerExpired] = []
            for raw_entry, fields in entries:
                if fields:
                    events += entry_events(raw_entry.decode("ascii"), fields, 1, self._decode)
            if entries:
                self._last_read = entries[-1][0].decode("ascii")
            if self._read_since != ">":
                # Its history may hold an entry this consumer took over (a claim whose reply is still on its way, or
                # was lost) whose other events the consumer that read it first acknowledged: each is checked.
                marked = [entry[0] for entry in entries]
            engine.read_unread(events, {mark.decode("ascii") for mark in marked} if marked else ())

    async def _read_new(self, stream: str, count: int) -> tuple[Any, list[bytes]]:
        """XREADGROUP for new entries, then (in the same round trip, run right after it) MARKS: which of the
        entries this consumer now holds past the last one it read hold a retracted event."""
        self.engine.begin_read()
        marks: list[Any] = ["EVAL", MARKS, len(self.keys), *self.keys, GROUP, self.consumer, self._last_read]
        # After a read whose reply was lost, this consumer's pending entries past the last one read (not blocking:
        # the server answers at once), until a read of them returns fewer than it asked for; else new entries.
        since = self._read_since = self._last_read if self._reread else ">"
        self._reread = True  # until the read loop has this read's reply
        if self._reader is None:  # a cluster client: MARKS in a call of its own, still after the read
            reply = await self._read_new_parsed(stream, count, since)
            return reply, await self.client.execute_command(*marks)
        return await self._read_pipelined(stream, count, since, marks)

    async def _read_pipelined(self, stream: str, count: int, since: str, marks: list[Any]) -> tuple[Any, list[bytes]]:
        """XREADGROUP from ``since``, then MARKS, in one round trip on the raw reader."""
        assert self._reader is not None
        pipe = self._reader.pipeline(transaction=False)
        pipe.execute_command(
            "XREADGROUP",
            "GROUP",
            GROUP,
            self.consumer,
            "COUNT",
            count,
            "BLOCK",
            int(self.block_seconds * 1000),
            "STREAMS",
            stream,
            since,
        )
        # EVAL with the script's text: nothing to reload after a server restart (NOSCRIPT) in a pipeline
        pipe.execute_command(*marks)
        reply, marked = await pipe.execute()
        return reply, marked

    async def _read_new_parsed(self, stream: str, count: int, since: str = ">") -> Any:
        """XREADGROUP through a client that parses the reply (a cluster client), in the raw reply's shape."""
        reply: Any = await self.client.xreadgroup(
            GROUP, self.consumer, {stream: since}, count=count, block=int(self.block_seconds * 1000)
        )
        if not reply:
            return None
        # parsed: [[stream, [(entry id, {field: value}), ...]]] (RESP3: {stream: [[(entry id, {...}), ...]]})
        entries = next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
        flat = [(entry, [*itertools.chain(*fields.items())] if fields else None) for entry, fields in entries]
        return [[stream, flat]]

    async def _claim_loop(self) -> None:
        engine = self.engine
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._claim_now.wait(), max(self.claim_after / 2, 0.01))
            self._claim_now.clear()
            held = engine.held()
            for start in range(0, len(held), BATCH):
                # Claimed again by this consumer, their idle time starts over: no other consumer takes them.
                chunk: list[Any] = held[start : start + BATCH]
                await self._call(
                    functools.partial(self.client.xclaim, self.keys[5], GROUP, self.consumer, 0, chunk, justid=True)
                )
            # Through the whole pending list (XAUTOCLAIM looks at a few entries per call), from where the last
            # round stopped, as far as the event queue has room; for a quarter of claim_after at most, so that the
            # next renewal of what this consumer holds is not held up.
            until = time.monotonic() + self.claim_after / 4
            lost = False
            for _ in range(CLAIM_CALLS):
                room = engine.event_capacity - engine.pending_events()
                if room <= 0 or self._stopping or time.monotonic() > until:
                    break
                args = [GROUP, self.consumer, int(self.claim_after * 1000), max(1, room // self.pack), self._claim_from]
                result, retried = await self._claim_call(args)
                lost = lost or retried
                self._claim_from = result[0].decode("ascii")
                self._took_over(result)
                if self._claim_from == "0-0":
                    break
            while lost and not self._stopping:
                lost = await self._retake()

    async def _claim_call(self, args: list[Any]) -> tuple[Any, bool]:
        """A CLAIM call; and whether it was tried more than once (a try whose reply did not come back, a dropped
        connection or a stall, may have taken entries over for this consumer: they are pending on it unread)."""
        tries = 0

        def claim() -> Awaitable[Any]:
            nonlocal tries
            tries += 1
            return self._claim(keys=self.keys, args=args)

        result = await self._call(claim)
        return result, tries > 1

    def _took_over(self, result: Any) -> None:
        """Hand the events of a CLAIM reply to the engine, which checks them on the server."""
        events = [
            event
            for index in range(1, len(result), 4)
            for event in entry_events(
                result[index].decode("ascii"), result[index + 1 : index + 3], int(result[index + 3]), self._decode
            )
        ]
        if events:
            logger.info("timer manager %r: took over %d unacknowledged events", self.runner.name, len(events))
            self.engine.read(events)

    async def _retake(self) -> bool:
        """Take again the entries that a claim whose reply was lost took over for this consumer: pending on it, and
        neither held nor being acknowledged here (left so, they would wait for claim_after before any consumer took
        them, this one included). An entry the reader's read on its way has (delivered once) is left to it; one
        delivered more than once is taken (an entry both a read and this bring is handed over once, and checked).
        Return whether a CLAIM call of its own had to be tried again (the same may have happened to it)."""
        engine = self.engine
        known = set(engine.held()) | engine.acking()
        pending: Any = await self._call(
            functools.partial(
                self.client.xpending_range,
                self.keys[5],
                GROUP,
                min="-",
                max="+",
                count=min(len(known) + 2 * engine.event_capacity + 1, 2**62),
                consumername=self.consumer,
            )
        )
        known |= set(engine.held()) | engine.acking()
        ids: list[str] = []
        for item in pending:
            entry = item["message_id"]
            entry = entry.decode("ascii") if isinstance(entry, bytes) else str(entry)
            if entry not in known and int(item["times_delivered"]) > 1:
                ids.append(entry)
        lost = False
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            result, retried = await self._claim_call([GROUP, self.consumer, 0, len(chunk), "0-0", *chunk])
            lost = lost or retried
            self._took_over(result)
        return lost

    # ------------------------------------------------------------------ helpers

    def _decode(self, name: bytes, payload: bytes) -> object:
        """An event's data from its payload, or the payload itself if this backend cannot decode it."""
        try:
            return self.codec.decode(payload)
        except Exception as exc:  # a payload from a manager with another serializer: deliver it raw
            logger.error("timer manager %r: cannot decode the payload of %r: %r", self.runner.name, name, exc)
            return payload

    async def query(self, what: str, name: str = "") -> float:
        """One of QUERY's answers (a deadline in ms, a count, or the earliest due time; -1 for none).

        The call runs in the caller's task, not in one of the link's, so the stop does not cancel it: it is
        raced against the stop instead, and a query the stop overtakes raises ``ManagerClosed``, as every
        caller waiting at a stop gets (never the ``CancelledError`` of the link's own winding down, nor a wait
        for a stalled server until ``reconnect_timeout``)."""
        runner = self.runner
        done = runner.done
        assert done is not None
        call = asyncio.ensure_future(self._call(lambda: self._query(keys=self.keys, args=[what, name])))
        try:
            await asyncio.wait([call, done], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not call.done():
                call.cancel()
                call.add_done_callback(_take_error)
        if call.done() and not call.cancelled():
            return float(call.result())
        raise ManagerClosed(f"timer manager {runner.name!r} stopped ({runner.stop_reason})")

    async def _call(self, make: Callable[[], Awaitable[T]], *, blocking: bool = False, settling: bool = False) -> T:
        """``await make()``, retried while the server is unreachable, out of memory or a read-only replica, or without
        the consumer group (made again first), for at most ``reconnect_timeout``; until the stop, or (``settling``: a
        call of the stop's settle) after it too."""
        limit = self.reconnect_timeout + (self.block_seconds if blocking else 0.0)
        first_failure = 0.0
        pause = 0.02
        regroup = False
        while settling or not self._stopping:
            started = time.monotonic()
            try:
                if regroup:  # made again before the call is (see NOGROUP below)
                    await asyncio.wait_for(self._create_group(), self.reconnect_timeout)
                    regroup = False
                    logger.warning("timer manager %r: made the namespace's consumer group again", self.runner.name)
                call = asyncio.ensure_future(make())
                # A call cut short by the stop may still end in an error (its connection closed under it): that
                # error is taken here, not reported by asyncio as never retrieved.
                call.add_done_callback(_take_error)
                result = await asyncio.wait_for(call, limit)
                self._reachable = True
                return result
            except (*_WAITED, RuntimeError, redis_errors.ResponseError) as exc:
                if _no_group(exc):
                    # The consumer group is gone: the server restarted without its data (no persistence, or a
                    # failover to a replica that did not have it yet), or the stream was deleted. Made again, as a
                    # start makes it; every call that names the group does no harm when sent again (an APPLY that
                    # failed at its XPENDING, after its commands, keeps its batch number: they are not applied twice).
                    regroup = True
                    what = "without the namespace's consumer group (restarted without its data?)"
                elif _read_only(exc):
                    # A replica refuses every write, from a script's first (each of ours reads, then writes; a
                    # script runs whole on a primary or on a replica), and ends a blocking call unserved: the call
                    # applied nothing, and is sent again as to an unreachable server. The pooled connections are
                    # dropped, so that the next try connects afresh, where the primary may now be behind the same
                    # address (DNS moved by Sentinel or an operator, a proxy, the server promoted back).
                    self._reachable = False
                    await self._drop_connections()
                    what = "read-only (a replica: READONLY, after a failover?)"
                elif isinstance(exc, _OUT_OF_MEMORY):
                    self._reachable = False
                    what = "out of memory (OOM, maxmemory reached)"
                elif isinstance(exc, _WAITED) or _closed_transport(exc):
                    self._reachable = False
                    what = "unreachable"
                else:
                    raise
                if not first_failure:
                    first_failure = started  # the trouble began when the failed call was made
                    logger.warning("timer manager %r: Redis %s, retrying: %r", self.runner.name, what, exc)
                waited = time.monotonic() - first_failure
                if waited >= self.reconnect_timeout:
                    raise BackendUnavailable(
                        f"timer manager {self.runner.name!r}: Redis {what} for {waited:.1f} s "
                        f"(reconnect_timeout={self.reconnect_timeout:g}): {exc!r}"
                    ) from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
        raise asyncio.CancelledError  # stopping

    async def _drop_connections(self) -> None:
        """Close the client's idle connections (the failed call's is back among them), so that the next call connects
        afresh. Those in use are left to their calls, which are not cut short (a call cut short may have been
        applied): each meets the replica's refusal in turn, or is answered. A cluster client is closed, as it closes
        itself at a ``CLUSTERDOWN`` (its calls in flight cut short, as by a dropped connection): its next call reads
        the cluster's slots again (a demoted node answers a keyed write with ``MOVED``, which it follows; it ends a
        blocking call with ``UNBLOCKED``)."""
        client = self.client
        with contextlib.suppress(Exception):  # one that fails to close is dropped all the same
            if isinstance(client, redis.asyncio.RedisCluster):
                await asyncio.wait_for(client.aclose(), self.reconnect_timeout)
            else:
                await asyncio.wait_for(
                    client.connection_pool.disconnect(inuse_connections=False), self.reconnect_timeout
                )


def _config_values(reply: Any, name: str) -> list[str]:
    """The values of setting ``name`` in a ``CONFIG GET`` reply: a dict of settings (str or bytes), or of nodes to
    such dicts (a cluster client's); none in None (``CONFIG`` refused)."""
    values: list[str] = []
    if isinstance(reply, dict):
        for key, value in reply.items():
            if isinstance(value, dict):
                values += _config_values(value, name)
            elif key in (name, name.encode()):
                values.append(value.decode() if isinstance(value, bytes) else str(value))
    return values


def _evicting_policies(reply: Any) -> list[str]:
    """The ``maxmemory-policy`` of each server in a ``CONFIG GET`` reply (as for ``_config_values``) that may evict
    keys: one with a ``maxmemory`` set and a policy other than ``noeviction``."""
    if not isinstance(reply, dict):
        return []
    if any(isinstance(value, dict) for value in reply.values()):  # a cluster client's: node -> its settings
        return [policy for node in reply.values() for policy in _evicting_policies(node)]
    limit = _config_values(reply, "maxmemory")
    policy = _config_values(reply, "maxmemory-policy")
    if limit and int(limit[0]) > 0 and policy and policy[0] != "noeviction":
        return policy
    return []


def _warn_of_eviction(manager: str, policies: list[str]) -> None:
    """Warn (once, at the start) of servers that may evict keys at ``maxmemory`` (``policies``: theirs). Nothing
    tells the managers of an eviction: an ``allkeys-*`` policy may take timers, events and their records; a
    ``volatile-*`` one, the only keys the manager gives a time to live, the records that make a batch re-sent
    after a lost reply apply once (evicted, it applies twice: its cancels remove what other managers set since, its
    sets arm their timers again)."""
    evicting = sorted(set(policies))
    if not evicting:
        return
    if any(policy.startswith("allkeys") for policy in evicting):
        what = "timers, events and the records of applied batches"
    else:
        what = "the records of applied batches (a batch re-sent after a lost reply may then apply twice)"
    logger.warning(
        "timer manager %r: the Redis server may evict %s at maxmemory (maxmemory-policy %s), and nothing tells "
        "the managers; set maxmemory-policy noeviction",
        manager,
        what,
        ", ".join(evicting),
    )


def _check_max_payload(max_payload: int, limit: int) -> None:
    """``ValueError`` if a set of ``max_payload`` bytes with the longest name would make an argument the server
    refuses (longer than ``limit``, its ``proto-max-bulk-len``): it would close the connection at every try, and
    the manager would stop with ``BackendUnavailable``, losing the commands it had accepted."""
    largest = max_payload + MAX_NAME_BYTES + CALL_OVERHEAD
    if largest > limit:
        raise ValueError(
            f"max_payload={max_payload:,} (RedisBackend(max_payload=...)) makes a set of up to {largest:,} bytes "
            f"with a {MAX_NAME_BYTES:,}-byte name, more than the server's proto-max-bulk-len ({limit:,}) takes: "
            f"make max_payload at most {max(limit - MAX_NAME_BYTES - CALL_OVERHEAD, 0):,}, or raise proto-max-bulk-len"
        )


def _block_seconds(client: Any) -> float:
    """How long a blocking read may wait on the server: BLOCK_SECONDS, or less, so that it ends before the
    client's socket timeout (that of its connections, or of a cluster client's nodes) would cut it short."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        options = pool.connection_kwargs
    else:
        options = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", {})
    timeout = options.get("socket_timeout")
    if not timeout or timeout <= 0:
        return BLOCK_SECONDS
    return max(0.01, min(BLOCK_SECONDS, float(timeout) * 0.8, float(timeout) - 0.5))


def _take_error(call: asyncio.Future[Any]) -> None:
    if not call.cancelled():
        call.exception()
