"""The Redis backend at its limits: the size of what one call carries (Redis refuses an argument longer than its
``proto-max-bulk-len``), names and payloads too large for it, a server out of memory (``maxmemory``), and
many events held at once. Each server here is started for this module or this test alone (its options differ
from the session's), and stopped by pid."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions
from redis_server import LIMIT, REDIS_SERVER, RedisServer, acks_a_stop_catches, client_of, hold_answers, receive

from timer_manager import CancellationToken, ManagerClosed, TimerHandle, TimerManager
from timer_manager.redis import BackendUnavailable, RedisBackend
from timer_manager.redis._codec import MAX_NAME_BYTES
from timer_manager.redis._link import CALL_OVERHEAD, _field, _payload, namespace_keys
from timer_manager.redis._scripts import APPLY, PROMOTE

pytestmark = pytest.mark.usefixtures("default_core", "redis_server")  # redis_server: skip or fail without it


@pytest.fixture(scope="module")
def small_bulk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server that takes arguments of 1 MiB at most (``proto-max-bulk-len``'s least value; 512 MB by
    default): what a larger batch would meet on a default server, at a test's cost."""
    assert REDIS_SERVER is not None
    server = RedisServer(tmp_path_factory.mktemp("redis-small-bulk"), options=("--proto-max-bulk-len", "1mb"))
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def opened(url: str, namespace: str, **options: Any) -> AsyncIterator[TimerHandle]:
    """A Redis-backed manager on ``namespace``, heartbeat 0; a call the server keeps refusing stops it soon."""
    manager_options = {key: options.pop(key) for key in ("event_buffer_size", "command_buffer_size") if key in options}
    options.setdefault("reconnect_timeout", 3.0)
    backend = RedisBackend(url, namespace=namespace, **options)
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend, **manager_options) as handle:
        yield handle


# ---------------------------------------------------------------------- the size of one call


async def test_a_batch_of_large_payloads_is_split_below_the_servers_argument_limit(
    small_bulk: RedisServer, namespace: str
) -> None:
    """Thirty sets of 100 kB each are 3 MB of commands, and the manager sent them in one APPLY call, as one
    argument: past the server's ``proto-max-bulk-len``, the server refused the call and closed the connection,
    the call was retried until ``reconnect_timeout`` and the manager stopped, losing the sets it had accepted.
    On a default server (512 MB) the same happens to 1,000 sets of 600 kB. Catches: batches cut by count only."""
    payload = b"p" * 100_000
    async with opened(small_bulk.url, namespace, command_buffer_size=64) as handle:
        for index in range(30):
            handle.try_set_timer(f"big{index:02}", 2.0, data=payload)  # none due before the count below
        await asyncio.wait_for(handle.flush(), LIMIT)
        assert await handle.get_pending_count() == 30
        events = await receive(handle, 30)
    assert sorted(event.name for event in events) == [f"big{index:02}" for index in range(30)]
    assert all(event.data == payload for event in events)


async def test_acknowledgements_of_many_long_names_are_split_below_the_servers_argument_limit(
    small_bulk: RedisServer, namespace: str
) -> None:
    """Two hundred events named with 8 kB each, acknowledged at once (``ack="manual"``): 1.6 MB of
    acknowledgements in one argument, refused by the server as the large batch is. Catches: acknowledgements (and
    checks, and re-arms) sent whole, whatever their size."""
    names = [f"{index:03}" + "n" * 8000 for index in range(200)]
    async with (
        client_of(small_bulk) as client,
        opened(small_bulk.url, namespace, ack="manual", event_buffer_size=256, command_buffer_size=256) as handle,
    ):
        for name in names:
            handle.try_set_timer(name, 0.05)
        events = await receive(handle, 200)
        await handle.ack_events(events)
        await asyncio.wait_for(handle.flush(), LIMIT)
        stream = f"{{tm:{namespace}}}:ev"
        assert (await client.xpending(stream, "timers"))["pending"] == 0
        assert await client.hlen(f"{{tm:{namespace}}}:fired") == 0
        handle.try_set_timer("after", 0.01)
        assert [event.name for event in await receive(handle, 1)] == ["after"]
    assert sorted(event.name for event in events) == names


async def test_an_ack_events_whose_acknowledgements_take_several_calls_returns_once_the_last_is_applied(
    redis_server: RedisServer, namespace: str
) -> None:
    """ack="manual": forty events named with 16 KiB each, acknowledged by one ``ack_events()``: fifteen such
    acknowledgements fill a call, so they go in three, the first with the call's flush marker. The call must return
    once the server has applied every one of them. Catches: the marker confirmed with the first call, the call
    returning while 25 acknowledgements were still to be sent (a manager that stopped then, unable to send them,
    left a call that returned without its effect)."""
    names = [f"{index:02}".ljust(MAX_NAME_BYTES, "n") for index in range(40)]
    backend = RedisBackend(redis_server.url, namespace=namespace, ack="manual", claim_after=120.0)
    async with (
        client_of(redis_server) as client,
        TimerManager.open(namespace, heartbeat_interval=0, event_buffer_size=64, backend=backend) as handle,
    ):
        await handle.set_timers([(name, 0.0) for name in names])
        events: list[Any] = []
        while len(events) < len(names):
            events += await asyncio.wait_for(handle.recv_events(len(names) - len(events)), LIMIT)
        await asyncio.wait_for(handle.flush(), LIMIT)
        link: Any = handle._runner.store.link  # type: ignore[attr-defined]
        send = link._send_batch
        held, release = asyncio.Event(), asyncio.Event()

        async def holding(commands: list[Any], rearms: Any, acks: list[Any], *rest: Any) -> Any:
            if acks and not commands:  # a call of acknowledgements after the marker's: held a while
                held.set()
                await release.wait()
            return await send(commands, rearms, acks, *rest)

        link._send_batch = holding
        acked = asyncio.ensure_future(handle.ack_events(events))
        await asyncio.wait_for(held.wait(), LIMIT)
        await asyncio.sleep(0.1)
        assert not acked.done(), await client.hlen(f"{{tm:{namespace}}}:fired")
        release.set()
        await asyncio.wait_for(acked, LIMIT)
        assert await client.hlen(f"{{tm:{namespace}}}:fired") == 0


async def test_an_ack_events_followed_by_more_commands_than_a_call_takes_returns_once_its_acknowledgement_is_applied(
    redis_server: RedisServer, namespace: str
) -> None:
    """ack="manual": an ``ack_events()`` queues its acknowledgement and its flush marker, then 1,500 sets are queued
    before the shipper comes round (it is held in a call). The marker goes in the first call of the round, with 999
    sets; the acknowledgement goes with the last of the commands, in the second call. The call must return once that
    second call is answered. Catches: the marker confirmed with the first call, the call returning while its
    acknowledgement was still to be sent."""
    backend = RedisBackend(redis_server.url, namespace=namespace, ack="manual", claim_after=120.0)
    async with (
        client_of(redis_server) as client,
        TimerManager.open(namespace, heartbeat_interval=0, command_buffer_size=4096, backend=backend) as handle,
    ):
        handle.try_set_timer("a", 0.0)
        [event] = await receive(handle, 1)
        await asyncio.wait_for(handle.flush(), LIMIT)
        link: Any = handle._runner.store.link  # type: ignore[attr-defined]
        send = link._send_batch
        first_held, second_held = asyncio.Event(), asyncio.Event()
        release_first, release_second = asyncio.Event(), asyncio.Event()

        async def holding(commands: list[Any], rearms: Any, acks: list[Any], *rest: Any) -> Any:
            if any(command[1] == "hold" for command in commands):  # the call before the round: held a while
                first_held.set()
                await release_first.wait()
            elif acks:  # the round's call that carries the acknowledgement
                second_held.set()
                await release_second.wait()
            return await send(commands, rearms, acks, *rest)

        link._send_batch = holding
        handle.try_set_timer("hold", 60.0)
        await asyncio.wait_for(first_held.wait(), LIMIT)
        acked = asyncio.ensure_future(handle.ack_events([event]))
        while not acked.done() and not link.engine.acks:
            await asyncio.sleep(0)
        handle.try_set_timers([(f"s{index}", 60.0) for index in range(1500)])
        release_first.set()
        await asyncio.wait_for(second_held.wait(), LIMIT)
        await asyncio.sleep(0.1)
        assert not acked.done(), "ack_events() returned before its acknowledgement was sent"
        assert await client.hlen(f"{{tm:{namespace}}}:fired") == 1
        release_second.set()
        await asyncio.wait_for(acked, LIMIT)
        assert await client.hlen(f"{{tm:{namespace}}}:fired") == 0


async def test_the_stream_entries_a_stop_acknowledges_are_split_below_the_servers_argument_limit(
    small_bulk: RedisServer, namespace: str
) -> None:
    """ack="manual", one event per stream entry (an event queue of 31): 70,000 events received, then acknowledged by
    one ``ack_events()`` that the stop (its token) catches before the shipper sends it. The stop's settle sends the
    acknowledgements in calls of about 1 MiB, and the stream entries to XACK with the last call: 70,000 ids, about
    1.1 MB in one argument, which the server refused (closing the connection). The events' records were deleted by
    the earlier calls, yet the entries stayed pending and the ``ack_events()`` call raised ``ManagerClosed``.
    Catches: the settle's entries to XACK sent whole, whatever their size."""
    count = 70_000
    token = CancellationToken()
    backend = RedisBackend(small_bulk.url, namespace=namespace, ack="manual", claim_after=120.0, reconnect_timeout=10.0)
    manager, handle = TimerManager.new(namespace, 0, 4096, 31, token, backend=backend)
    run = asyncio.ensure_future(manager.run())
    try:
        for start in range(0, count, 4000):
            await handle.set_timers([(f"e{index:05}", 0.0) for index in range(start, min(start + 4000, count))])
        events: list[Any] = []
        while len(events) < count:
            events += await asyncio.wait_for(handle.recv_events(count - len(events)), LIMIT)
        await asyncio.wait_for(handle.flush(), LIMIT)
        link: Any = manager._runner.store.link  # type: ignore[attr-defined]
        held = hold_answers(link)  # a batch on its way, its answer held: the acks wait behind it
        (outcome,) = await acks_a_stop_catches(handle, token, run, held, lambda: handle.ack_events(events))
        async with client_of(small_bulk) as client:
            assert (await client.xpending(f"{{tm:{namespace}}}:ev", "timers"))["pending"] == 0
            assert await client.hlen(f"{{tm:{namespace}}}:fired") == 0
        assert outcome is None, outcome
    finally:
        token.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_a_payload_or_name_too_large_is_refused_at_the_call_and_the_manager_goes_on(
    redis_server: RedisServer, namespace: str
) -> None:
    """A payload (encoded) or a name larger than one call may carry must be refused at the call (``ValueError``)
    rather than queued: queued, it made the call that carried it fail on the server, and the manager stop."""
    async with opened(redis_server.url, namespace, max_payload=1000) as handle:
        with pytest.raises(ValueError, match="max_payload"):
            handle.try_set_timer("big", 60.0, data=b"x" * 1000)  # 1001 bytes encoded (a tag byte)
        with pytest.raises(ValueError, match="max_payload"):
            await handle.set_timer("big", 60.0, data="x" * 1000)
        with pytest.raises(ValueError, match="max_payload"):
            await handle.set_interval("big", 60.0, data={"x": "x" * 1000})
        with pytest.raises(ValueError, match="max_payload"):
            await handle.set_timers([("ok", 60.0), ("big", 60.0, b"x" * 1000)])
        with pytest.raises(ValueError, match="name"):
            handle.try_set_timer("n" * 70_000, 60.0)
        with pytest.raises(ValueError, match="name"):
            await handle.set_timer_at("\u20ac" * 30_000, 2e9)  # 90 kB of UTF-8
        handle.try_set_timer("fits", 0.01, data=b"x" * 999)
        event = (await receive(handle, 1))[0]
        assert (event.name, event.data) == ("fits", b"x" * 999)
        assert await handle.get_pending_count() == 0  # "ok" went with "big": a refused call queues nothing
    with pytest.raises(ValueError, match="max_payload"):
        RedisBackend(redis_server.url, max_payload=0)


async def test_a_cancel_or_touch_of_a_name_too_long_for_any_timer_is_a_no_op(
    small_bulk: RedisServer, namespace: str
) -> None:
    """No timer can have a name longer than the limit (its set is refused), so a cancel or touch of one does
    nothing; sent to the server, it made the call fail as a too-large set did."""
    async with opened(small_bulk.url, namespace) as handle:
        huge = "h" * 2_000_000
        await handle.cancel_timer(huge)
        handle.touch(huge)
        handle.try_set_timer("after", 0.01)
        await asyncio.wait_for(handle.flush(), LIMIT)
        assert [event.name for event in await receive(handle, 1)] == ["after"]


# ---------------------------------------------------------------------- max_payload against the server's limit

ONE_MIB = 1 << 20
LARGEST_FITTING = ONE_MIB - MAX_NAME_BYTES - CALL_OVERHEAD  # the largest max_payload a server at 1 MiB takes


async def test_a_max_payload_larger_than_the_servers_argument_limit_is_refused_at_the_start(
    small_bulk: RedisServer, namespace: str
) -> None:
    """``max_payload`` above what the server's ``proto-max-bulk-len`` takes (here 1 MiB): the manager started, took
    a set of 1.5 MB at the call, and the server refused the call that carried it and closed the connection; the
    call was retried until ``reconnect_timeout`` and the manager stopped with ``BackendUnavailable``, losing what it
    had accepted. The start reads the limit (``CONFIG GET``) and refuses such a ``max_payload`` with a
    ``ValueError`` that says so, before any command is applied."""
    backend = RedisBackend(small_bulk.url, namespace=namespace, max_payload=2_000_000, reconnect_timeout=3.0)
    manager, handle = TimerManager.new(namespace, 0, 8, 8, backend=backend)
    run = asyncio.ensure_future(manager.run())
    try:
        with pytest.raises(ManagerClosed):
            await asyncio.wait_for(handle.flush(), LIMIT)  # before: returned, the manager running
        with pytest.raises(ValueError, match=r"proto-max-bulk-len \(1,048,576\).*at most 1,032,064"):
            await asyncio.wait_for(run, LIMIT)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_the_largest_max_payload_the_servers_argument_limit_takes_works_with_the_longest_name(
    small_bulk: RedisServer, namespace: str
) -> None:
    """At the boundary: a ``max_payload`` whose largest set (payload, a 16 KiB name, the command's own bytes) just
    fits the server's 1 MiB starts, and such a set goes through; one byte more is refused at the start."""
    name = "n" * MAX_NAME_BYTES
    payload = b"p" * (LARGEST_FITTING - 1)  # a tag byte makes it LARGEST_FITTING encoded
    async with opened(small_bulk.url, namespace, max_payload=LARGEST_FITTING) as handle:
        handle.try_set_timer(name, 0.01, data=payload)
        (event,) = await receive(handle, 1)
        assert (event.name, event.data) == (name, payload)
    over = RedisBackend(small_bulk.url, namespace=namespace, max_payload=LARGEST_FITTING + 1, reconnect_timeout=3.0)
    manager, _ = TimerManager.new(namespace, 0, 8, 8, backend=over)
    with pytest.raises(ValueError, match="proto-max-bulk-len"):
        await asyncio.wait_for(manager.run(), LIMIT)


@pytest.mark.parametrize("case", ["longest-name-largest-payload", "two-that-fill-a-call"])
async def test_a_repeating_timer_with_a_far_period_fits_the_servers_argument_limit(
    small_bulk: RedisServer, namespace: str, case: str
) -> None:
    """A period of 1e250 s is taken (it never comes round), and was sent as its milliseconds written out in full
    (``period_ms|missed``: 254 digits, up to 301 for the farthest), some 220 bytes more than the room a command has
    besides its name and payload (``CALL_OVERHEAD``). At the boundary (the longest name, the largest payload a server
    at 1 MiB takes), or with two such timers whose payloads just fill a call (the default ``max_payload``), the
    argument went past the server's ``proto-max-bulk-len``: refused at every try, the connection closed, the manager
    stopped with ``BackendUnavailable``, the sets it had accepted lost. Catches: a command's text longer than the
    room counted for it."""
    far = 1e250
    if case == "longest-name-largest-payload":
        timers = [("n" * MAX_NAME_BYTES, b"p" * (LARGEST_FITTING - 1))]  # a tag byte makes it LARGEST_FITTING encoded
        options: dict[str, Any] = {"max_payload": LARGEST_FITTING}
    else:
        half = (ONE_MIB - 2 * (CALL_OVERHEAD + 4)) // 2 - 1  # counted with a one-character name: the call is full
        timers = [(name, b"p" * half) for name in "ab"]
        options = {}
    async with opened(small_bulk.url, namespace, **options) as handle:
        for name, payload in timers:
            await handle.set_interval(name, far, data=payload)
        await asyncio.wait_for(handle.flush(), LIMIT)
        assert await handle.get_pending_count() == len(timers)
        for name, _ in timers:
            deadline = await handle.get_deadline(name)
            assert deadline is not None and deadline >= far


class _OneSettingPerConfigGet(redis.asyncio.Redis):
    """A client whose server answers ``CONFIG GET`` of one setting only, as a server before Redis 7 (or a proxy)
    does: more are refused with the error such a server gives."""

    async def config_get(self, pattern: Any = "*", *args: Any, **kwargs: Any) -> Any:
        if args:
            raise redis.exceptions.ResponseError("ERR wrong number of arguments for 'config|get' command")
        return await super().config_get(pattern, **kwargs)


async def test_a_server_that_reads_one_setting_per_config_get_still_refuses_too_large_a_max_payload(
    small_bulk: RedisServer, namespace: str
) -> None:
    """The start asks for its settings in one ``CONFIG GET``; a server that takes one setting at a time refuses
    that, and the start then asks for the argument limit alone, as it did before it read the eviction policy.
    Catches: the limit's check lost on such servers (the refusal taken as a refused ``CONFIG``)."""
    client = _OneSettingPerConfigGet.from_url(small_bulk.url)
    try:
        backend = RedisBackend(client=client, namespace=namespace, max_payload=2_000_000, reconnect_timeout=3.0)
        manager, _ = TimerManager.new(namespace, 0, 8, 8, backend=backend)
        with pytest.raises(ValueError, match="proto-max-bulk-len"):
            await asyncio.wait_for(manager.run(), LIMIT)
    finally:
        await client.aclose()


async def _user_without_config(client: redis.asyncio.Redis, server: RedisServer) -> str:
    """The URL of ``server`` for an ACL user who may run everything but ``CONFIG``, as on a managed Redis."""
    await client.acl_setuser(
        "noconfig", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", "-config"]
    )
    return server.url.replace("redis://", "redis://noconfig:pw@")


async def test_a_server_that_refuses_config_keeps_max_payload_as_given(small_bulk: RedisServer, namespace: str) -> None:
    """A managed Redis refuses ``CONFIG`` (here an ACL user without it): the limit cannot be read, and the manager
    starts with ``max_payload`` as given (the server's limit is then the user's to know), as before the check."""
    async with client_of(small_bulk) as client:
        url = await _user_without_config(client, small_bulk)
    async with opened(url, namespace, max_payload=2_000_000) as handle:
        handle.try_set_timer("fits", 0.01, data=b"x" * 100_000)
        (event,) = await receive(handle, 1)
        assert (event.name, event.data) == ("fits", b"x" * 100_000)


# ---------------------------------------------------------------------- a server out of memory


async def test_a_server_out_of_memory_for_a_while_costs_latency_not_the_commands(
    own_redis: RedisServer, namespace: str
) -> None:
    """With ``maxmemory`` reached (``noeviction``: Redis's default), the server refuses every script whose first
    write may grow memory (``OOM command not allowed``), applying nothing of it. The manager took that error as
    fatal: it stopped, and the sets it had accepted were lost. Memory is freed as consumers acknowledge, keys expire
    or an operator acts: like an unreachable server, it is waited for (``reconnect_timeout``)."""
    async with client_of(own_redis) as client, opened(own_redis.url, namespace, reconnect_timeout=30.0) as handle:
        await handle.set_timer("before", 0.01)
        assert [event.name for event in await receive(handle, 1)] == ["before"]
        await client.config_set("maxmemory", 1)  # below what is used: every write that may grow memory is refused
        for index in range(20):
            handle.try_set_timer(f"during{index:02}", 0.05, data="kept")
        await asyncio.sleep(1.5)  # refused meanwhile, and retried
        assert await client.hlen(f"{{tm:{namespace}}}:data") == 0
        await client.config_set("maxmemory", 0)
        await asyncio.wait_for(handle.flush(), LIMIT)
        events = await receive(handle, 20)
    assert sorted(event.name for event in events) == [f"during{index:02}" for index in range(20)]
    assert {event.data for event in events} == {"kept"}


async def test_a_server_out_of_memory_longer_than_reconnect_timeout_stops_the_manager_with_backend_unavailable(
    own_redis: RedisServer, namespace: str
) -> None:
    """Past ``reconnect_timeout`` the manager stops as for an unreachable server: ``run()`` raises
    ``BackendUnavailable`` naming the server's answer, and a caller waiting on ``flush()`` is released."""
    backend = RedisBackend(own_redis.url, namespace=namespace, reconnect_timeout=1.0)
    manager, handle = TimerManager.new(namespace, 0, 64, 64, backend=backend)
    task = asyncio.ensure_future(manager.run())
    async with client_of(own_redis) as client:
        try:
            await handle.set_timer("before", 600.0)
            await asyncio.wait_for(handle.flush(), LIMIT)
            await client.config_set("maxmemory", 1)
            await handle.set_timer("during", 600.0)
            with pytest.raises(ManagerClosed):
                await asyncio.wait_for(handle.flush(), LIMIT)
            with pytest.raises(BackendUnavailable, match="OOM"):
                await asyncio.wait_for(task, LIMIT)
        finally:
            await client.config_set("maxmemory", 0)
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), LIMIT)


def _eviction_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if "maxmemory-policy" in record.getMessage()]


@pytest.mark.parametrize("policy", ["volatile-lru", "allkeys-lru"])
async def test_a_server_that_may_evict_keys_is_named_in_a_warning_at_the_start(
    own_redis: RedisServer, namespace: str, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Under an eviction policy, a server at ``maxmemory`` drops keys and nothing tells the managers: ``allkeys-*``
    timers and events, ``volatile-*`` the records that make a batch re-sent after a lost reply apply once (the
    only keys the manager gives a time to live). The manager read nothing of it and said nothing. Its start now
    warns once, naming the policy and what it may take; the manager runs as before."""
    caplog.set_level("WARNING", logger="timer_manager")
    async with client_of(own_redis) as client:
        await client.config_set("maxmemory-policy", policy)
        await client.config_set("maxmemory", "1gb")  # a server evicts only with a maxmemory set
    async with opened(own_redis.url, namespace) as handle:
        handle.try_set_timer("a", 0.01)
        assert [event.name for event in await receive(handle, 1)] == ["a"]
        await asyncio.wait_for(handle.flush(), LIMIT)
    (warning,) = _eviction_warnings(caplog)
    assert f"(maxmemory-policy {policy})" in warning
    assert ("timers, events" in warning) == policy.startswith("allkeys")
    assert warning.endswith("set maxmemory-policy noeviction")


async def test_no_eviction_warning_where_the_server_evicts_nothing_or_does_not_say(
    own_redis: RedisServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``noeviction`` (Redis's default) draws no warning, with a ``maxmemory`` or without; nor does an evicting
    policy without a ``maxmemory`` (0: no limit, nothing evicted). A server that refuses ``CONFIG`` (here an ACL
    user without it) does not say its policy: the start warns of nothing, even where the server evicts, and goes
    on as before (a refused ``CONFIG`` must never stop it)."""
    caplog.set_level("WARNING", logger="timer_manager")
    async with client_of(own_redis) as client:
        for policy, limit in (("noeviction", "0"), ("noeviction", "1gb"), ("allkeys-lru", "0")):
            await client.config_set("maxmemory-policy", policy)
            await client.config_set("maxmemory", limit)
            async with opened(own_redis.url, namespace) as handle:
                handle.try_set_timer(policy, 0.01)
                assert [event.name for event in await receive(handle, 1)] == [policy]
        await client.config_set("maxmemory-policy", "volatile-lru")
        await client.config_set("maxmemory", "1gb")
        url = await _user_without_config(client, own_redis)
    async with opened(url, namespace) as handle:
        handle.try_set_timer("b", 0.01)
        assert [event.name for event in await receive(handle, 1)] == ["b"]
    assert _eviction_warnings(caplog) == []


# ---------------------------------------------------------------------- names of keys and consumers


def test_a_namespace_or_consumer_name_too_long_is_refused_at_the_backend() -> None:
    """Every call carries the namespace's keys (and the reader's the consumer name) as arguments: one longer than
    the server takes failed every call, and the manager stopped with ``BackendUnavailable`` after
    ``reconnect_timeout``, far from the mistake. Refused where it is given, as a name that is not UTF-8 is."""
    with pytest.raises(ValueError, match="namespace"):
        RedisBackend("redis://127.0.0.1:1/0", namespace="n" * 20_000)
    with pytest.raises(ValueError, match="consumer"):
        RedisBackend("redis://127.0.0.1:1/0", consumer="\u20ac" * 6_000)  # 18 kB of UTF-8
    RedisBackend("redis://127.0.0.1:1/0", namespace="n" * 1_000, consumer="c" * 1_000)
    backend = RedisBackend("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="namespace"):
        TimerManager.new("m" * 20_000, 0, 8, 8, backend=backend)  # the manager's name, as the namespace


# ---------------------------------------------------------------------- events held beyond the event queue


async def test_a_read_and_a_takeover_in_flight_together_hold_at_most_twice_the_queue(
    redis_server: RedisServer, namespace: str
) -> None:
    """The reader asks for as many events as the queue has room for and blocks; meanwhile the claimer takes over
    what a dead consumer left, as far as the queue has room too. When new events then arrive, the read brings them
    on top: docs/redis.md gives the bound, twice the queue's room and two entries' events (here 2 x 256 + 2 x 15;
    it said one entry's, at most 63, beyond the room, and 512 events were held here), and every event is delivered
    once."""
    size, pack = 256, 16  # event_buffer_size 256: stream entries of 256 // 16 events
    stream = f"{{tm:{namespace}}}:ev"
    async with client_of(redis_server) as client:
        await client.xgroup_create(stream, "timers", id="0", mkstream=True)
        seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        command = b"".join(
            b"a" + _field(f"old{index:03}") + _field(str(now_ms - 1000 + index)) + _field("0") + _payload(None)
            for index in range(size)
        )
        await client.register_script(APPLY)(keys=namespace_keys(namespace), args=[0, "timers", command, b"", b""])
        await client.register_script(PROMOTE)(keys=namespace_keys(namespace), args=[1000, 0, pack])
        await client.xreadgroup("timers", "ghost", {stream: ">"})  # a consumer reads them all, and dies
        backend = RedisBackend(redis_server.url, namespace=namespace, claim_after=0.5)
        manager, handle = TimerManager.new(namespace, 0, 1024, size, backend=backend)
        engine: Any = manager._runner.engine
        task = asyncio.ensure_future(manager.run())
        try:
            deadline = asyncio.get_running_loop().time() + LIMIT
            while engine.pending_events() < size:  # taken over while the reader waits for new entries
                assert asyncio.get_running_loop().time() < deadline, engine.pending_events()
                await asyncio.sleep(0.05)
            await handle.set_timers([(f"new{index:03}", 0.01) for index in range(size)])
            await asyncio.sleep(1.0)  # promoted and read
            held = engine.pending_events()
            assert held <= 2 * size + 2 * (pack - 1), held
            names = {event.name for event in await receive(handle, 2 * size)}
            assert len(names) == 2 * size
        finally:
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), LIMIT)


async def test_the_deadline_of_a_name_too_long_for_any_timer_is_none_without_asking_the_server(
    small_bulk: RedisServer, namespace: str
) -> None:
    """``get_deadline(name)`` sends the name to the server: one longer than the server takes failed the call, which
    was retried as if the server were unreachable, and the caller got ``BackendUnavailable`` after
    ``reconnect_timeout``. No timer has such a name: None, at once."""
    async with opened(small_bulk.url, namespace) as handle:
        assert await asyncio.wait_for(handle.get_deadline("h" * 2_000_000), LIMIT) is None
        handle.try_set_timer("after", 0.01)
        assert [event.name for event in await receive(handle, 1)] == ["after"]
