"""``RedisBackend``: what a user passes to keep a manager's timers on a Redis server."""

from __future__ import annotations

import asyncio
import datetime
import functools
import os
import secrets
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from numbers import Real
from typing import TYPE_CHECKING, Any

from .._validate import _to_float, seconds, shown
from ._codec import MAX_NAME_BYTES, MAX_PAYLOAD, Codec, Serializer, check_names, too_long
from ._engine import ACK_MODES, RedisEngine, UnixTime
from ._event import RedisTimerExpired
from ._link import Link

if TYPE_CHECKING:
    import redis.asyncio

    from .._runner import Runner

__all__ = ("RedisBackend",)


MIN_RECONNECT_TIMEOUT = 0.01  # seconds


def _check_key_text(what: str, value: str) -> None:
    """A namespace or consumer name goes into key and consumer names, which the client encodes as UTF-8; every call
    carries them, so they must fit one (as a timer's name must)."""
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be encodable as UTF-8 (no lone surrogate), got {shown(value)}") from None
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"{what} must be at most {MAX_NAME_BYTES:,} bytes in UTF-8, got {len(raw):,}: {shown(value)}")


class RedisBackend:
    """Keep timers on a Redis server (7.0 or later), shared by every manager that uses the same namespace.

    ``url`` (``redis://host:port/db``) or ``client`` (a ``redis.asyncio.Redis``, or a
    ``redis.asyncio.RedisCluster`` for a Redis Cluster, made with ``decode_responses=False``) says which
    server. ``namespace`` (default: the manager's name) names
    the set of timers; any number of managers, in any processes, may share one, and each event goes
    to one of them. ``consumer`` names this manager among them (default: host, pid and a random part).
    ``ack``: ``"next"`` acknowledges an event when the same consumer asks for the next one (or at
    shutdown), ``"manual"`` leaves it to ``handle.ack(event)``, ``"receive"`` acknowledges at receipt
    (at most once). An event another consumer read and did not acknowledge within ``claim_after``
    seconds is handed to a live one. While the server is unreachable, out of memory or a read-only replica (a
    failover), calls are retried for up to ``reconnect_timeout`` seconds; then the manager stops with
    :class:`~timer_manager.BackendUnavailable`.
    ``serializer``: an object with ``dumps``/``loads`` for payloads (default: JSON, with ``bytes`` and
    ``str`` as they are). ``max_payload``: the longest payload, in bytes as encoded, that a set takes (a longer one
    is refused at the call with ``ValueError``, as is a name longer than 16 KiB in UTF-8); above the default
    (1,000,000), the server's ``proto-max-bulk-len`` must take it with such a name (512 MB by default): where the
    server lets it be read (``CONFIG GET``), ``run()`` raises ``ValueError`` at the start if it does not.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None,
        namespace: str | None = None,
        consumer: str | None = None,
        claim_after: float = 30.0,
        ack: str = "next",
        reconnect_timeout: float = 30.0,
        serializer: Serializer | None = None,
        max_payload: int = MAX_PAYLOAD,
    ) -> None:
        if (url is None) == (client is None):
            raise TypeError("pass either a url or a client")
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}: {shown(url)}")
        if client is not None and getattr(client.get_encoder(), "decode_responses", False):
            raise ValueError("the client must be made with decode_responses=False (payloads are bytes)")
        for what, value in (("namespace", namespace), ("consumer", consumer)):
            if value is not None:
                if not isinstance(value, str) or not value:
                    raise TypeError(f"{what} must be a non-empty str, got {shown(value)}")
                _check_key_text(what, value)
        if ack not in ACK_MODES:
            raise ValueError(f"ack must be one of {', '.join(map(repr, ACK_MODES))}, got {shown(ack)}")
        self.claim_after = seconds(claim_after, "claim_after")
        self.reconnect_timeout = seconds(reconnect_timeout, "reconnect_timeout")
        if self.claim_after < 0.001:
            raise ValueError(f"claim_after must be at least 0.001 s, got {shown(claim_after)}")
        # Every call to the server is cut short after reconnect_timeout (a stall that long stops the manager): below
        # a round trip, every call would be, and the manager would stop at its first.
        if self.reconnect_timeout < MIN_RECONNECT_TIMEOUT:
            raise ValueError(
                f"reconnect_timeout must be at least {MIN_RECONNECT_TIMEOUT:g} s, got {shown(reconnect_timeout)}"
            )
        if isinstance(max_payload, bool) or not isinstance(max_payload, int):
            raise TypeError(f"max_payload must be an int (bytes), got {shown(max_payload)}")
        if max_payload < 1:
            raise ValueError(f"max_payload must be at least 1 byte, got {shown(max_payload)}")
        self.url = url
        self.client = client
        self.namespace = namespace
        self.consumer = consumer
        self.ack = ack
        self.codec = Codec(serializer, max_payload)

    def __repr__(self) -> str:
        where = self.url if self.url is not None else repr(self.client)
        return f"RedisBackend({where}, namespace={self.namespace!r})"

    def store(self, name: str, command_capacity: int, event_capacity: int, max_timers: int | None) -> RedisStore:
        """The store for manager ``name``."""
        return RedisStore(self, name, command_capacity, event_capacity, max_timers)


class RedisStore:
    """One manager's timers on Redis."""

    remote: bool = True
    check_names = staticmethod(check_names)  # a set's name must fit a call to the server (and engine.push_set's)

    def __init__(
        self, backend: RedisBackend, name: str, command_capacity: int, event_capacity: int, max_timers: int | None
    ) -> None:
        self.backend = backend
        self.namespace = backend.namespace if backend.namespace is not None else str.__str__(name)
        if backend.namespace is None:
            _check_key_text("the namespace (the manager's name, by default)", self.namespace)
        self.consumer = backend.consumer or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.max_timers = max_timers
        self.engine = RedisEngine(command_capacity, event_capacity, backend.ack)
        self.encode = backend.codec.encode
        self.link: Link | None = None

    def deadline_at(self, when: object) -> UnixTime:
        """Unix time in seconds: a number, or an aware ``datetime``."""
        if isinstance(when, datetime.datetime):
            if when.tzinfo is None or when.utcoffset() is None:
                raise ValueError(f"when must be an aware datetime (with a tzinfo), got {when!r}")
            return UnixTime(when.timestamp(), max(0.0, when.timestamp() - time.time()))
        if isinstance(when, bool) or not isinstance(when, (Real, Decimal)):
            raise TypeError(f"when must be Unix time in seconds or an aware datetime, got {shown(when)}")
        value = _to_float(when)  # an int too large for a float is infinite, Decimal('sNaN') not a number
        if not 0.0 <= value < 1e13:
            raise ValueError(f"when must be Unix time in seconds, got {shown(when)}")
        return UnixTime(value, max(0.0, value - time.time()))

    def start(self, runner: Runner) -> asyncio.Future[None]:
        """Connect and run the link's tasks until the manager stops."""
        backend = self.backend
        owned = backend.client is None
        if owned:
            import redis.asyncio
            from redis.asyncio.retry import Retry  # an asyncio client's own (redis-py 8.2 warns of the other)
            from redis.backoff import NoBackoff

            from ._link import BLOCK_SECONDS

            # The link retries on its own terms (reconnect_timeout); the client's default policy would
            # take seconds to surface a dead server. The socket timeout must outlast the longest blocking
            # read (redis-py 8's default, 5 s, would cut every idle XREADGROUP/BZPOPMIN short).
            client = redis.asyncio.Redis.from_url(
                backend.url,  # type: ignore[arg-type]
                retry=Retry(NoBackoff(), 0),
                socket_timeout=BLOCK_SECONDS + 5.0,
            )
        else:
            client = backend.client  # type: ignore[assignment]
        self.link = Link(
            client,
            runner,
            self.engine,
            backend.codec,
            namespace=self.namespace,
            consumer=self.consumer,
            claim_after=backend.claim_after,
            reconnect_timeout=backend.reconnect_timeout,
            max_timers=self.max_timers,
        )

        async def serve() -> None:
            try:
                await self.link.serve()  # type: ignore[union-attr]
            finally:
                if owned:
                    await client.aclose()

        return asyncio.ensure_future(serve())

    def acknowledge(self, events: list[Any]) -> Callable[[asyncio.Future[None]], Callable[[], bool]]:
        """Check ``events``; return what queues their acknowledgements for the next batch to the server, with the
        flush marker that confirms them (a stop before the server answered leaves it to the settle)."""
        for event in events:
            if not isinstance(event, RedisTimerExpired):
                raise TypeError(
                    f"events must be events this Redis-backed manager handed over (RedisTimerExpired), "
                    f"got {type(event).__name__}: {shown(event)}"
                )
        return functools.partial(self.engine.acknowledge, events)

    def counts(self) -> tuple[int, int | None, int | None]:
        """As the server last reported them."""
        engine = self.engine
        return engine.count_refused, engine.overdue, engine.unacknowledged

    async def query(self, what: str, name: str) -> float | int | None:
        """Asked of the server."""
        if self.link is None:
            raise RuntimeError("the manager is not running: start run() first")
        if what == "deadline" and too_long(name):
            return None  # no timer has such a name (its set is refused), and the server might not take it
        answer = await self.link.query(what, name)
        if what == "count":
            return int(answer)
        return None if answer < 0 else answer / 1000.0
