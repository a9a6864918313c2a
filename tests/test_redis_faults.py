"""The Redis backend when things break: the server killed (-9) and restarted, stalled (SIGSTOP), its
connections dropped, its script cache flushed, and a consumer killed while it holds events. Each test
has a redis-server of its own (``RedisServer``), stopped by pid at the end."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import (
    LIMIT,
    REDIS_SERVER,
    RedisServer,
    acks_a_stop_catches,
    client_of,
    eventually,
    hold_answers,
    receive,
)

from timer_manager import CancellationToken, ManagerClosed, TimerExpired, TimerManager
from timer_manager.redis import BackendUnavailable, RedisBackend, RedisTimerExpired
from timer_manager.redis._engine import RedisEngine

pytestmark = pytest.mark.usefixtures("default_core", "redis_server")  # redis_server: skip or fail without it


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone, with an append-only file written at every command."""
    assert REDIS_SERVER is not None
    server = RedisServer(tmp_path / "redis", appendonly=True)
    try:
        yield server
    finally:
        server.stop()


def backend(server: RedisServer, namespace: str, **options: Any) -> RedisBackend:
    return RedisBackend(server.url, namespace=namespace, **options)


async def sent(engine: Any) -> None:
    """Wait until ``engine``'s link has sent a batch of commands (to a stalled server: it holds it); fail after
    LIMIT. Quick, but not to be assumed of a loaded machine after a fixed sleep."""
    await eventually(lambda: bool(engine.sending) and not engine.outbox, "the batch was sent")


async def test_a_flushed_set_survives_kill_9_and_the_manager_goes_on_after_the_restart(
    own_redis: RedisServer, namespace: str
) -> None:
    keys = {name: f"{{tm:{namespace}}}:{name}" for name in ("due", "data")}
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend(own_redis, namespace)) as handle:
        await handle.set_timers([(f"n{index}", 600.0) for index in range(300)])
        await handle.flush()  # the durability point: applied on the server, and (appendfsync always) on disk
        own_redis.restart()  # kill -9, then the same folder: the AOF is replayed
        async with client_of(own_redis) as client:
            assert await client.zcard(keys["due"]) == 300
            assert await client.hlen(keys["data"]) == 300
        # The manager reconnects, reloads its scripts (the restarted server has none) and carries on.
        await handle.set_timer("after", 0.05, data="restart")
        event = (await receive(handle, 1))[0]
        assert (event.name, event.data) == ("after", "restart")
        assert await handle.get_pending_count() == 300


async def test_a_server_restarted_without_its_data_costs_latency_and_the_manager_goes_on(
    tmp_path: Path, namespace: str
) -> None:
    """A server restarted without its data (no append-only file; as a failover to a replica that had not yet the
    namespace): the timers and events it had are gone, the consumer group too. Each of the manager's calls that
    names the group (its reader's XREADGROUP, the claimer's, an APPLY that acknowledges) got ``NOGROUP``, which
    the manager took as fatal: it stopped as failed, and the sets it accepted after the restart were lost (as a
    fresh start would, it now makes the group again and goes on). Catches: NOGROUP stopping the manager."""
    assert REDIS_SERVER is not None
    server = RedisServer(tmp_path / "redis")  # no append-only file: a restart loses everything
    try:
        options = {"reconnect_timeout": 10.0, "claim_after": 1.0}  # the claimer asks too, every 0.5 s
        async with TimerManager.open(
            namespace, heartbeat_interval=0, backend=backend(server, namespace, **options)
        ) as handle:
            await handle.set_timers([("before", 0.0), ("lost", 600.0)])
            assert [event.name for event in await receive(handle, 1)] == ["before"]
            server.restart()
            await handle.set_timer("after", 0.05, data="restart")
            await asyncio.wait_for(handle.flush(), LIMIT)
            event = (await receive(handle, 1))[0]  # acknowledges "before", whose entry is gone: nothing to do
            assert (event.name, event.data) == ("after", "restart")
            await handle.set_timer("later", 0.0)
            assert [event.name for event in await receive(handle, 1)] == ["later"]
            assert await handle.get_pending_count() == 0  # "lost" went with the server's data
    finally:
        server.stop()


async def test_a_flushed_script_cache_is_reloaded(own_redis: RedisServer, namespace: str) -> None:
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend(own_redis, namespace)) as handle:
        await handle.set_timer("before", 0.01)
        await receive(handle, 1)
        async with client_of(own_redis) as client:
            await client.script_flush()
        await handle.set_timer("after", 0.01)  # NOSCRIPT on the server: loaded again, applied once
        assert [event.name for event in await receive(handle, 1)] == ["after"]
        assert await handle.get_pending_count() == 0


async def test_dropped_connections_are_made_again(own_redis: RedisServer, namespace: str) -> None:
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend(own_redis, namespace)) as handle:
        await handle.set_timer("before", 0.01)
        await receive(handle, 1)
        async with client_of(own_redis) as client:
            await client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]
        await handle.set_timers([(f"n{index}", 0.05) for index in range(20)])
        events = await receive(handle, 20)
        assert sorted(event.name for event in events) == sorted(f"n{index}" for index in range(20))


async def test_a_stall_shorter_than_reconnect_timeout_loses_and_duplicates_nothing(
    own_redis: RedisServer, namespace: str
) -> None:
    options = {"reconnect_timeout": 15.0}
    async with TimerManager.open(
        namespace, heartbeat_interval=0, backend=backend(own_redis, namespace, **options)
    ) as handle:
        await handle.set_timers([(f"early{index}", 0.2) for index in range(50)])
        await handle.flush()
        own_redis.pause()
        try:
            for index in range(50):  # queued locally while the server is stalled
                handle.try_set_timer(f"late{index}", 0.1)
            await asyncio.sleep(1.5)
        finally:
            own_redis.resume()
        events = await receive(handle, 100)
        names = [event.name for event in events]
        assert sorted(names) == sorted(
            [f"early{index}" for index in range(50)] + [f"late{index}" for index in range(50)]
        )
        await asyncio.sleep(0.5)
        with pytest.raises(Exception, match="no event is ready"):
            handle.try_recv_event()  # and nothing more: no duplicate


async def test_a_stall_longer_than_reconnect_timeout_stops_the_manager_and_releases_everyone(
    own_redis: RedisServer, namespace: str
) -> None:
    manager, handle = TimerManager.new(namespace, 0, 4, 4, backend=backend(own_redis, namespace, reconnect_timeout=1.0))
    task = asyncio.ensure_future(manager.run())
    await handle.set_timer("a", 60.0)
    await handle.flush()
    receiver = asyncio.ensure_future(handle.recv_event())
    own_redis.pause()
    try:
        started = time.monotonic()
        for index in range(4):  # the server applies none of these: the queue stays full
            handle.try_set_timer(f"stuck{index}", 1.0)
        sender = asyncio.ensure_future(handle.set_timer("waiting", 1.0))  # waits for room
        await asyncio.sleep(0.1)
        assert not sender.done()
        with pytest.raises(BackendUnavailable, match="reconnect_timeout=1"):
            await asyncio.wait_for(task, LIMIT)
        assert time.monotonic() - started < LIMIT
        assert await asyncio.wait_for(receiver, LIMIT) is None
        with pytest.raises(ManagerClosed):
            await asyncio.wait_for(sender, LIMIT)
        with pytest.raises(ManagerClosed):
            await handle.set_timer("b", 1.0)
    finally:
        own_redis.resume()


_HOLDER = """
import asyncio, sys
from timer_manager import TimerManager
from timer_manager.redis import RedisBackend

async def main(url, namespace, names):
    backend = RedisBackend(url, namespace=namespace, ack="manual")
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend) as handle:
        await handle.set_timers([(name, 0.01) for name in names])
        for _ in names:
            await handle.recv_event()
        print("holding", flush=True)
        await asyncio.sleep(120)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
"""


async def kill_while_holding(server: RedisServer, namespace: str, names: list[str]) -> None:
    """A consumer in a process of its own sets ``names``, receives their events without acknowledging them,
    and is killed (SIGKILL: it acknowledges nothing, hands nothing back)."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, server.url, namespace, *names, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), LIMIT)
        assert line.strip() == b"holding"
    finally:
        holder.kill()
        await holder.wait()


async def test_events_of_a_consumer_killed_while_holding_them_go_to_a_live_one(
    own_redis: RedisServer, namespace: str
) -> None:
    await kill_while_holding(own_redis, namespace, ["kept", "reset"])
    options = {"claim_after": 0.3}
    async with TimerManager.open(
        namespace, heartbeat_interval=0, backend=backend(own_redis, namespace, **options)
    ) as handle:
        await handle.set_timer("reset", 0.5, data="fresh")  # the held "reset" event is stale from now on
        events = await receive(handle, 2)
        await asyncio.sleep(0.8)  # more than claim_after: the stale one would have come by now
        with pytest.raises(Exception, match="no event is ready"):
            handle.try_recv_event()
    by_name = {event.name: event for event in events}
    assert by_name["kept"].attempt == 2
    assert (by_name["reset"].data, by_name["reset"].attempt) == ("fresh", 1)


async def test_a_deadline_is_taken_at_the_call_however_long_the_command_waits_here(
    own_redis: RedisServer, namespace: str
) -> None:
    # The client sends the time left, not the duration: what a command waited in this process is taken off.
    # (A stall of the server after the command was sent delays the deadline by that stall: the server's
    # clock decides, and it learns of the command only when it reads it.)
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend(own_redis, namespace)) as handle:
        await handle.set_timer("warm", 0.001)
        await receive(handle, 1)
        own_redis.pause()
        try:
            handle.try_set_timer("first", 60.0)
            await asyncio.sleep(0.1)  # its batch is sent, and held by the stalled server
            called_at = time.time()  # the machine's clock, which is also the server's
            await handle.set_timer("x", 1.0)  # waits here, behind that batch, for 0.7 s
            await asyncio.sleep(0.7)
        finally:
            own_redis.resume()
        event = (await receive(handle, 1))[0]
        await handle.cancel_timer("first")
    assert event.name == "x"
    # Due one second after the call, not one second after the server got the command.
    assert called_at + 1.0 - 0.002 <= event.deadline < called_at + 1.0 + 0.3


@pytest.mark.parametrize("stop", ["token", "task"])
async def test_a_flush_whose_batch_is_on_its_way_when_the_manager_stops_is_released(
    own_redis: RedisServer, namespace: str, stop: str
) -> None:
    """flush() queues a FLUSH; the shipper sends it in a batch, which the stalled server holds; the manager
    stops (its token, or its task cancelled). Every stop fails waiting flushes with ManagerClosed (design.md,
    "Stopping releases everyone"). Catches: a flush whose FLUSH was taken out of the outbox into the batch in
    flight, which the stop neither resolves nor fails: flush() hangs for good."""
    token = CancellationToken()
    backend = RedisBackend(own_redis.url, namespace=namespace, reconnect_timeout=60.0)
    manager, handle = TimerManager.new(namespace, 0, 16, 16, token, backend=backend)
    task = asyncio.ensure_future(manager.run())
    await handle.set_timer("a", 60.0)
    await asyncio.wait_for(handle.flush(), LIMIT)
    own_redis.pause()
    try:
        flush = asyncio.ensure_future(handle.flush())
        engine = manager._runner.engine
        assert isinstance(engine, RedisEngine)
        await sent(engine)  # its batch is sent, and held by the stalled server
        assert not flush.done()
        assert engine.queued() == 1 and not engine.outbox  # in flight
        if stop == "token":
            token.cancel()
        else:
            task.cancel()
        with pytest.raises(ManagerClosed):
            await asyncio.wait_for(flush, LIMIT)
    finally:
        own_redis.resume()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_batch_applied_before_its_connection_dropped_is_not_applied_again(
    own_redis: RedisServer, namespace: str
) -> None:
    """A's batch (a cancel of "x") reaches the server; B's set of "x" comes after it; A's connection drops
    before the server's reply gets back (the server still reads and applies the batch), so A sends the batch
    again on a new connection. Applied a second time, A's cancel cancels B's set, which came after it: a
    command applied twice, and B's timer lost though no connection of B's dropped. Catches: an APPLY retried
    without knowing whether the server already applied it."""
    manager, a = TimerManager.new(namespace, 0, 64, 64, backend=backend(own_redis, namespace))
    task = asyncio.ensure_future(manager.run())
    try:
        async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend(own_redis, namespace)) as b:
            await a.set_timer("x", 600.0)
            await a.flush()
            await b.set_timer("warm", 600.0)
            await b.flush()
            await asyncio.sleep(0.3)  # both promoters asleep: each shipper's connection waits in its pool
            own_redis.pause()
            try:
                a.try_cancel_timer("x")
                await sent(manager._runner.engine)  # A's batch is sent, and held by the stalled server
                b.try_set_timer("x", 0.3, data="B")
                await sent(b._runner.engine)  # B's batch too, behind it
                link = manager._runner.store.link  # type: ignore[attr-defined]
                for connection in list(link.client.connection_pool._in_use_connections):
                    fileno = connection._writer.get_extra_info("socket").fileno()
                    with socket.fromfd(fileno, socket.AF_INET, socket.SOCK_STREAM) as dropped:  # a copy of it
                        dropped.shutdown(socket.SHUT_RDWR)  # the connection drops
                await asyncio.sleep(0.2)  # A sends its batch again, on a new connection
            finally:
                own_redis.resume()
            await asyncio.wait_for(b.flush(), LIMIT)
            await asyncio.wait_for(a.flush(), LIMIT)
            assert await b.get_deadline("x") is not None  # B's set stands
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_dead_consumers_events_go_to_a_live_one_behind_many_held_by_a_live_consumer(
    own_redis: RedisServer, namespace: str
) -> None:
    """A live consumer holds many stream entries (received under ack="manual", not yet acknowledged, its claim
    renewed); a consumer that dies holding an event read after them leaves it at the end of the group's pending
    list. XAUTOCLAIM looks at ten entries per entry asked for, from the cursor it is given: a claimer that
    always starts from the head of the pending list never gets past the live consumer's entries, and the dead
    consumer's event is never handed to anyone. Catches: the cursor XAUTOCLAIM returns thrown away."""
    live_options = {"ack": "manual", "claim_after": 1.0}
    async with TimerManager.open(
        namespace, heartbeat_interval=0, event_buffer_size=16, backend=backend(own_redis, namespace, **live_options)
    ) as live:
        # one event per stream entry (a 16-event queue): 200 entries held, received and not acknowledged
        await live.set_timers([(f"held{index:03}", 0.01) for index in range(216)])
        held: list[TimerExpired] = []
        while len(held) < 200:
            held += await asyncio.wait_for(live.recv_events(200 - len(held)), LIMIT)
        await asyncio.sleep(0.3)  # the other 16 fill its event queue: it reads no more
        await kill_while_holding(own_redis, namespace, ["orphan"])
        async with TimerManager.open(
            namespace, heartbeat_interval=0, backend=backend(own_redis, namespace, claim_after=1.0)
        ) as taker:
            event = await asyncio.wait_for(taker.recv_event(), 10.0)
        assert isinstance(event, RedisTimerExpired)
        assert (event.name, event.attempt) == ("orphan", 2)
        await live.ack_events(held)


# What uvloop raises for a write on a transport that closed under it (redis-server killed), where asyncio's
# transports raise an OSError subclass.
UVLOOP_CLOSED = (
    "unable to perform operation on <TCPTransport closed=True reading=False 0x7f0000000000>; the handler is closed"
)


@pytest.mark.parametrize(
    "annotation",
    [": ('{}',)", ": {}"],  # redis-py up to 8.1: the error's args; from 8.2: its text
    ids=["args", "text"],
)
def test_a_pipelines_nogroup_and_unblocked_are_recognised_as_redis_py_words_them(annotation: str) -> None:
    """A pipeline's error comes annotated with the command that failed, worded by the redis-py release in use.
    Catches: a restart without data (NOGROUP) or a demotion (UNBLOCKED) in a pipeline taken for a defect, which
    stops the manager (every restart and failover test of this module failed so under redis-py 8.2)."""
    from redis.exceptions import ResponseError

    from timer_manager.redis._link import _no_group, _read_only

    def annotated(error: str) -> ResponseError:
        return ResponseError(
            "Command # 2 (XREADGROUP GROUP g c STREAMS s >) of pipeline caused error" + annotation.format(error)
        )

    assert _no_group(annotated("NOGROUP No such key 's' or consumer group 'g' in XREADGROUP with GROUP option"))
    assert _read_only(annotated("UNBLOCKED force unblocked, the server is now a replica"))
    assert not _no_group(annotated("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert not _read_only(annotated("WRONGTYPE Operation against a key holding the wrong kind of value"))


@pytest.mark.parametrize(
    ("message", "retried"), [(UVLOOP_CLOSED, True), ("a defect", False)], ids=["uvloop-closed-transport", "other"]
)
async def test_uvlooops_closed_transport_error_is_retried_as_a_lost_connection(
    redis_server: RedisServer, namespace: str, message: str, retried: bool
) -> None:
    """On uvloop a call on a connection the server closed (kill -9) fails with uvloop's RuntimeError, not an
    OSError: it is a lost connection, retried until ``reconnect_timeout`` like one, and the batch is then
    applied. Any other RuntimeError is a defect, not hidden by retries: the manager stops with it. Catches: the
    manager stopping as failed after redis-server's kill -9 on uvloop (test_a_flushed_set_survives_kill_9...
    did, now and then)."""
    manager, handle = TimerManager.new(namespace, 0, 64, 64, backend=backend(redis_server, namespace))
    task = asyncio.ensure_future(manager.run())
    await asyncio.wait_for(handle.flush(), LIMIT)
    link = manager._runner.store.link  # type: ignore[attr-defined]
    send = link._send_batch
    failures = [RuntimeError(message)]

    async def failing_once(*arguments: Any) -> Any:
        if failures:
            raise failures.pop()
        return await send(*arguments)

    link._send_batch = failing_once
    await handle.set_timer("x", 600.0)
    if retried:
        await asyncio.wait_for(handle.flush(), LIMIT)
        assert not failures
        assert await handle.get_deadline("x") is not None
        await handle.shutdown()
        await asyncio.wait_for(task, LIMIT)
    else:
        with pytest.raises(ManagerClosed):
            await asyncio.wait_for(handle.flush(), LIMIT)
        with pytest.raises(RuntimeError, match="a defect"):
            await asyncio.wait_for(task, LIMIT)


async def test_an_ack_whose_settle_call_lost_its_reply_returns_as_the_acknowledgement_was_applied(
    own_redis: RedisServer, namespace: str
) -> None:
    """ack="manual": an ack() the stop (its token) catches before the server answered is left to the stop's settle.
    The settle's call carrying the acknowledgement reaches the server (stalled, SIGSTOP), and its connection drops
    before the reply: the server applies the call, the reply is lost. The call does no harm twice, so it is sent
    again, and the ack(), whose acknowledgement is applied, returns. Catches: the settle giving up at its first
    failed call, the ack() raising ManagerClosed though the event was acknowledged (a call that raised must have
    had no effect)."""
    token = CancellationToken()
    options = {"ack": "manual", "claim_after": 120.0, "reconnect_timeout": 10.0}
    manager, handle = TimerManager.new(namespace, 0, 8, 8, token, backend=backend(own_redis, namespace, **options))
    run = asyncio.ensure_future(manager.run())
    try:
        await handle.set_timer("x", 0.0)
        event = await asyncio.wait_for(handle.recv_event(), LIMIT)
        assert isinstance(event, RedisTimerExpired)
        await asyncio.wait_for(handle.flush(), LIMIT)
        link: Any = manager._runner.store.link  # type: ignore[attr-defined]
        held = hold_answers(link)  # a batch on its way, its answer held: the ack waits behind it
        pool = link.client.connection_pool
        get_connection = pool.get_connection
        dropped: list[Any] = []

        async def dropping(*arguments: Any, **options: Any) -> Any:
            connection = await get_connection(*arguments, **options)
            if link._stopping and not dropped:  # the settle's first call
                dropped.append(connection)
                send = connection.send_packed_command

                async def send_then_drop(*sent: Any, **more: Any) -> None:
                    del connection.send_packed_command
                    own_redis.pause()  # before the server can read the call: it cannot answer before the drop
                    try:
                        await send(*sent, **more)
                        fileno = connection._writer.get_extra_info("socket").fileno()
                        with socket.fromfd(fileno, socket.AF_INET, socket.SOCK_STREAM) as copy:
                            copy.shutdown(socket.SHUT_RDWR)  # the connection drops, the call on the server
                    finally:
                        own_redis.resume()  # it reads the call, applies it, and cannot answer

                connection.send_packed_command = send_then_drop
            return connection

        pool.get_connection = dropping
        (outcome,) = await acks_a_stop_catches(handle, token, run, held, lambda: handle.ack(event))
        assert dropped, "the settle made no call"
        async with client_of(own_redis) as client:
            await eventually(
                lambda: _pending(client, namespace, 0), "the acknowledgement applied by the call whose reply was lost"
            )
        assert outcome is None, outcome
    finally:
        own_redis.resume()
        token.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def _pending(client: Any, namespace: str, count: int) -> bool:
    """Whether ``count`` stream entries of ``namespace`` are read and not acknowledged."""
    return bool((await client.xpending(f"{{tm:{namespace}}}:ev", "timers"))["pending"] == count)


async def test_an_ack_whose_settle_call_was_answered_returns_though_a_later_call_fails_for_good(
    own_redis: RedisServer, namespace: str
) -> None:
    """ack="manual": two ack_events() calls the stop (its token) catches before the server answered, their
    acknowledgements (names of 16 KiB) in two calls of the settle: the first call's fifteen, then the second's one.
    The server is killed (-9) as the second call is made, and comes back only after the settle gave up. The first
    ack_events(), whose acknowledgements the server applied (and answered), returns; the second raises
    ManagerClosed, its acknowledgement not applied. Catches: every ack() the settle caught raising ManagerClosed once
    any call of the settle failed, those whose acknowledgements were on the server too."""
    token = CancellationToken()
    options = {"ack": "manual", "claim_after": 120.0, "reconnect_timeout": 1.0}
    manager, handle = TimerManager.new(namespace, 0, 64, 64, token, backend=backend(own_redis, namespace, **options))
    run = asyncio.ensure_future(manager.run())
    try:
        names = [f"{index:02}".ljust(16_384, "n") for index in range(16)]  # 15 acknowledgements fill a call
        await handle.set_timers([(name, 0.0) for name in names])
        events: list[Any] = []
        while len(events) < len(names):
            events += await asyncio.wait_for(handle.recv_events(len(names) - len(events)), LIMIT)
        events.sort(key=lambda event: event.name)
        await asyncio.wait_for(handle.flush(), LIMIT)
        link: Any = manager._runner.store.link  # type: ignore[attr-defined]
        held = hold_answers(link)  # a batch on its way, its answer held: the acks wait behind it
        pool = link.client.connection_pool
        get_connection = pool.get_connection
        settling: list[Any] = []

        async def killing(*arguments: Any, **more: Any) -> Any:
            if link._stopping:
                settling.append(None)
                if len(settling) == 2:  # the settle's second call
                    own_redis.kill()
            return await get_connection(*arguments, **more)

        pool.get_connection = killing
        outcomes = await acks_a_stop_catches(
            handle, token, run, held, lambda: handle.ack_events(events[:15]), lambda: handle.ack_events(events[15:])
        )
        assert len(settling) >= 2, "the settle made fewer than two calls"
        own_redis.start()  # the append-only file replayed: what the server applied before the kill
        async with client_of(own_redis) as client:
            fired = await client.hgetall(f"{{tm:{namespace}}}:fired")
        assert list(fired) == [events[15].name.encode()]  # the first call's fifteen applied, not the second's
        assert outcomes[0] is None, outcomes[0]
        assert isinstance(outcomes[1], ManagerClosed), outcomes[1]
    finally:
        token.cancel()
        await asyncio.gather(run, return_exceptions=True)


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two redis-servers without persistence: the manager's (A), and an empty one (B) that A may be made a replica
    of. B hands its data to a replica at once (no wait for more replicas before a diskless sync)."""
    assert REDIS_SERVER is not None
    servers: list[RedisServer] = []
    try:
        servers.append(RedisServer(tmp_path / "a"))
        servers.append(RedisServer(tmp_path / "b", options=("--repl-diskless-sync-delay", "0")))
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


async def _replica_of(client: Any, primary: RedisServer | None) -> None:
    """Make the server of ``client`` a replica of ``primary`` and wait until it holds the primary's data (its link
    up, the full sync loaded); with None, promote it back to a primary (``REPLICAOF NO ONE``)."""
    if primary is None:
        await client.execute_command("REPLICAOF", "NO", "ONE")
        return
    await client.execute_command("REPLICAOF", "127.0.0.1", primary.port)

    async def synced() -> bool:
        role = await client.execute_command("ROLE")
        return bool(role[0] == b"slave" and role[3] == b"connected")

    await eventually(synced, "the replica's sync with its primary")


async def test_a_server_demoted_to_a_replica_and_promoted_back_within_reconnect_timeout_costs_latency(
    two_servers: tuple[RedisServer, RedisServer], namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The manager's server A is made a replica of an empty server B while the manager runs (as a failover that
    demotes the primary), then promoted back within reconnect_timeout (as a deployment that moves the primary
    behind the same address). As a replica A refuses every write: the blocked BZPOPMIN is unblocked
    (``UNBLOCKED``), the reader's XREADGROUP and the APPLY of the sets made meanwhile get ``READONLY``. The link
    took either as fatal: the manager stopped as failed (``ResponseError``), and what it had accepted was lost. A
    refused call applied nothing, so it is waited for as an unreachable server and sent again: the sets accepted
    while A was a replica and after its promotion fire, once each. What A had before is gone with its data (it
    took B's, empty: the consumer group too, which the manager makes again). Catches: READONLY (or UNBLOCKED)
    stopping the manager."""
    a, b = two_servers
    caplog.set_level("WARNING", logger="timer_manager")
    options = {"reconnect_timeout": 60.0, "claim_after": 1.0}  # the claimer asks too, every 0.5 s
    manager, handle = TimerManager.new(namespace, 0, 64, 64, backend=backend(a, namespace, **options))
    task = asyncio.ensure_future(manager.run())
    try:
        await handle.set_timers([("before", 0.0), ("lost", 600.0)])
        assert [event.name for event in await receive(handle, 1)] == ["before"]
        await asyncio.wait_for(handle.flush(), LIMIT)
        await asyncio.sleep(0.2)  # the watcher and the reader blocked on A again
        async with client_of(a) as client:
            await _replica_of(client, b)
            handle.try_set_timers([(f"during{index}", 0.05) for index in range(10)])  # refused by A: READONLY
            await eventually(
                lambda: task.done() or "ReadOnlyError" in caplog.text, "a call refused by the replica (READONLY)"
            )
            assert not task.done(), task.exception()
            await asyncio.sleep(0.5)  # more refusals, by every task's calls
            assert not task.done(), task.exception()
            await _replica_of(client, None)
        await handle.set_timer("after", 0.05, data="promoted")
        await asyncio.wait_for(handle.flush(), LIMIT)
        events = await receive(handle, 11)
        assert sorted(event.name for event in events) == sorted(["after"] + [f"during{index}" for index in range(10)])
        assert next(event.data for event in events if event.name == "after") == "promoted"
        await handle.set_timer("later", 0.0)
        assert [event.name for event in await receive(handle, 1)] == ["later"]
        await asyncio.sleep(0.5)
        with pytest.raises(Exception, match="no event is ready"):
            handle.try_recv_event()  # nothing more: no set applied twice
        assert await handle.get_pending_count() == 0  # "lost" went with A's data
        assert not task.done()
        await handle.shutdown()
        await asyncio.wait_for(task, LIMIT)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_server_that_stays_a_replica_past_reconnect_timeout_stops_the_manager_with_backend_unavailable(
    two_servers: tuple[RedisServer, RedisServer], namespace: str
) -> None:
    """The manager's server is made a replica and stays one: every write is refused (``READONLY``) for longer than
    reconnect_timeout. The manager stops with BackendUnavailable, as for an unreachable server, soon after
    reconnect_timeout, and every waiting caller is released. Catches: the manager stopping at once with the
    server's ResponseError (ReadOnlyError), or never stopping."""
    a, b = two_servers
    manager, handle = TimerManager.new(namespace, 0, 64, 64, backend=backend(a, namespace, reconnect_timeout=1.0))
    task = asyncio.ensure_future(manager.run())
    waiting: list[asyncio.Future[None]] = []
    try:
        await handle.set_timer("a", 60.0)
        await asyncio.wait_for(handle.flush(), LIMIT)
        async with client_of(a) as client:
            started = time.monotonic()
            await client.execute_command("REPLICAOF", "127.0.0.1", b.port)  # type: ignore[no-untyped-call]
            handle.try_set_timer("x", 1.0)
            waiting.append(asyncio.ensure_future(handle.flush()))
            with pytest.raises(BackendUnavailable, match=r"Redis read-only .*\(reconnect_timeout=1\)"):
                await asyncio.wait_for(task, LIMIT)
            assert time.monotonic() - started < 15.0
            with pytest.raises(ManagerClosed):
                await asyncio.wait_for(waiting[0], LIMIT)
    finally:
        task.cancel()
        await asyncio.gather(task, *waiting, return_exceptions=True)


class _Proxy:
    """A TCP proxy on a free loopback port that forwards each new connection to ``port`` on 127.0.0.1, which a test
    may change (an address that leads to another server from then on: DNS moved by Sentinel or an operator, a
    proxy); a connection made before keeps its server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = ""
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.close()
            return
        self._writers.append(server_writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(1 << 16):
                    sink.write(data)
                    await sink.drain()
            except (OSError, RuntimeError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, server_writer), pipe(server_reader, writer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()


async def test_a_failover_that_moves_the_primary_behind_the_same_address_costs_latency(
    two_servers: tuple[RedisServer, RedisServer], namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The manager reaches its server A through an address (a proxy here; DNS that Sentinel or an operator moves)
    that leads to B after a failover: A is made a replica of B, B is the primary, and the address leads to B from
    then on, for new connections. A keeps refusing writes on the manager's open connections (``READONLY``): the
    manager must drop its pooled connections and connect again, and the sets it accepted meanwhile and after fire,
    on B. Catches: the manager retrying on its old connections to A, READONLY until it stops with
    BackendUnavailable (or stopping at once with the ResponseError)."""
    a, b = two_servers
    caplog.set_level("WARNING", logger="timer_manager")
    proxy = _Proxy(a.port)
    await proxy.start()
    options = RedisBackend(proxy.url, namespace=namespace, reconnect_timeout=20.0, claim_after=1.0)
    manager, handle = TimerManager.new(namespace, 0, 64, 64, backend=options)
    task = asyncio.ensure_future(manager.run())
    try:
        await handle.set_timer("before", 0.0)
        assert [event.name for event in await receive(handle, 1)] == ["before"]
        await asyncio.wait_for(handle.flush(), LIMIT)
        await asyncio.sleep(0.2)  # the watcher and the reader blocked on A again
        async with client_of(a) as client:
            await _replica_of(client, b)  # the failover: B is the primary, A its replica
        handle.try_set_timer("during", 0.05)  # refused by A: READONLY
        await eventually(lambda: task.done() or "ReadOnlyError" in caplog.text, "a call refused by A (READONLY)")
        assert not task.done(), task.exception()
        proxy.port = b.port  # the address leads to B from now on
        await handle.set_timer("after", 0.05, data="moved")
        await asyncio.wait_for(handle.flush(), LIMIT)
        events = await receive(handle, 2)
        assert sorted(event.name for event in events) == ["after", "during"]
        async with client_of(b) as client:  # on B, the primary
            assert await client.xlen(f"{{tm:{namespace}}}:ev") >= 1
        assert not task.done(), task.exception()
        await handle.shutdown()
        await asyncio.wait_for(task, LIMIT)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await proxy.close()


async def test_entries_a_read_lost_on_its_way_back_are_read_again_at_once_and_in_order(
    redis_server: RedisServer, namespace: str
) -> None:
    """The server hands entries to this consumer (XREADGROUP: they are pending on it) and the reply is lost on its
    way back (the connection drops); the read is retried, and ``>`` gives only entries never handed to anyone. The
    events of the lost reply are this consumer's, read by no one: a dropped connection costs latency, never an
    event, and each consumer receives its share in deadline order (docs/redis.md). Catches: the lost entries left
    pending on this consumer until its own claimer took them over after claim_after (two minutes here, the
    events then out of order and counted as a second delivery)."""
    import redis.exceptions

    backend = RedisBackend(redis_server.url, namespace=namespace, claim_after=120.0)
    manager, handle = TimerManager.new(namespace, 0, 64, 64, backend=backend)
    run = asyncio.ensure_future(manager.run())
    try:
        await asyncio.wait_for(handle.flush(), LIMIT)
        link = manager._runner.store.link  # type: ignore[attr-defined]
        read = link._read_new
        lost = asyncio.Event()

        async def lost_once(stream: str, count: int) -> Any:
            reply = await read(stream, count)
            if reply[0] and not lost.is_set():  # read on the server; the reply never arrives
                lost.set()
                raise redis.exceptions.ConnectionError("Connection closed by server.")
            return reply

        link._read_new = lost_once
        await handle.set_timer("warm", 0.0)  # the read on its way went out before the wrapper: this event for it
        warm = await asyncio.wait_for(handle.recv_event(), LIMIT)
        assert warm is not None and warm.name == "warm"
        await handle.set_timer("first", 0.0)
        await asyncio.wait_for(lost.wait(), LIMIT)
        await handle.set_timer("second", 0.0)
        events = []
        for _ in range(2):
            event = await asyncio.wait_for(handle.recv_event(), 5.0)
            assert isinstance(event, RedisTimerExpired)
            events.append(event)
        assert [(event.name, event.attempt) for event in events] == [("first", 1), ("second", 1)]
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_a_marker_popped_by_a_watch_whose_reply_was_lost_still_wakes_the_promoter(
    redis_server: RedisServer, namespace: str
) -> None:
    """The promoter sleeps until the earliest deadline it knows (here ten minutes away); a set of an earlier timer
    moves the namespace's marker, and the watcher's BZPOPMIN pops it, but the reply is lost on its way back (the
    connection drops) and the pop is retried. Catches: the marker gone with the lost reply, so that no promoter
    learned of the earlier timer, and its event came when the promoter next woke (the ten minutes)."""
    import redis.exceptions

    backend = RedisBackend(redis_server.url, namespace=namespace)
    manager, handle = TimerManager.new(namespace, 0, 64, 64, backend=backend)
    run = asyncio.ensure_future(manager.run())
    try:
        await handle.set_timer("warm", 0.0)
        warm = await asyncio.wait_for(handle.recv_event(), LIMIT)  # the watch on its way went out before the wrapper
        assert warm is not None and warm.name == "warm"
        client = manager._runner.store.link.client  # type: ignore[attr-defined]
        pop = client.bzpopmin
        lost = asyncio.Event()

        async def lost_once(*arguments: Any, **options: Any) -> Any:
            popped = await pop(*arguments, **options)
            if popped and not lost.is_set():  # popped on the server; the reply never arrives
                lost.set()
                raise redis.exceptions.ConnectionError("Connection closed by server.")
            return popped

        client.bzpopmin = lost_once
        await handle.set_timer("far", 600.0)
        await handle.flush()
        await asyncio.sleep(0.2)  # the promoter asleep until "far"; the watch renewed through the wrapper
        lost.clear()
        await handle.set_timer("near", 0.1)
        await asyncio.wait_for(lost.wait(), LIMIT)
        event = await asyncio.wait_for(handle.recv_event(), 5.0)
        assert event is not None and event.name == "near"
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_a_marker_popped_by_a_manager_that_stops_before_acting_on_it_wakes_another(
    redis_server: RedisServer, namespace: str
) -> None:
    """A's promoter sleeps until the earliest deadline it knows (minutes away). A sets an earlier timer; B's watcher
    pops the namespace's marker, and B stops before its promoter looked (the pop's reply on its way). Each event of
    the namespace must still come at its deadline from the managers that run. Catches: the marker gone with B, so
    that A learned of the earlier timer when its promoter next woke (minutes later)."""
    import redis.asyncio

    given = redis.asyncio.Redis.from_url(redis_server.url)
    pop = given.bzpopmin
    hold = asyncio.Event()
    popped = asyncio.Event()

    async def held(*arguments: Any, **options: Any) -> Any:
        reply = await pop(*arguments, **options)
        if reply and hold.is_set():  # popped on the server; the reply stays on its way
            popped.set()
            await asyncio.Event().wait()
        return reply

    given.bzpopmin = held  # type: ignore[method-assign]
    manager, b = TimerManager.new(namespace, 0, 64, 64, backend=RedisBackend(client=given, namespace=namespace))
    run = asyncio.ensure_future(manager.run())
    try:
        await asyncio.wait_for(b.flush(), LIMIT)
        await asyncio.sleep(0.2)  # B's watcher blocked on the marker
        a_backend = RedisBackend(redis_server.url, namespace=namespace)
        async with TimerManager.open(namespace, heartbeat_interval=0, backend=a_backend) as a:
            await a.flush()
            await asyncio.sleep(0.2)  # A's watcher blocked behind B's
            # Blocked pops are served in the order they blocked: B's takes the first marker, and blocks again behind
            # A's, which takes the second, so that A's promoter sleeps until "far".
            await a.set_timer("farther", 600.0)
            await a.flush()
            await asyncio.sleep(0.2)
            await a.set_timer("far", 500.0)
            await a.flush()
            await asyncio.sleep(0.2)
            hold.set()
            await a.set_timer("near", 0.2)  # its marker to B's pop, held
            await asyncio.wait_for(popped.wait(), LIMIT)
            await b.shutdown()
            await asyncio.wait_for(asyncio.gather(run, return_exceptions=True), LIMIT)
            event = await asyncio.wait_for(a.recv_event(), 5.0)
            assert event is not None and event.name == "near"
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await given.aclose()


async def test_entries_a_claim_lost_on_its_way_back_took_over_are_taken_again_at_once(
    redis_server: RedisServer, namespace: str
) -> None:
    """B stopped holding an event it received and never acknowledged (``ack="manual"``); after claim_after, A's
    claimer takes it over (XAUTOCLAIM: it is now pending on A), and the reply is lost on its way back (the connection
    drops). The retried claim finds nothing (the entry is no longer idle), and the event must still come at once.
    Catches: the entry left pending on A, unread, until it was idle for claim_after again (four more seconds here),
    when a claim took it over once more."""
    import redis.exceptions

    b_backend = RedisBackend(redis_server.url, namespace=namespace, ack="manual", claim_after=4.0)
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=b_backend) as b:
        await b.set_timer("x", 0.0)
        held = await asyncio.wait_for(b.recv_event(), LIMIT)
        assert held is not None and held.name == "x"  # received, never acknowledged: pending on B after its stop
    a_backend = RedisBackend(redis_server.url, namespace=namespace, claim_after=4.0)
    manager, a = TimerManager.new(namespace, 0, 64, 64, backend=a_backend)
    run = asyncio.ensure_future(manager.run())
    try:
        await asyncio.wait_for(a.flush(), LIMIT)
        link = manager._runner.store.link  # type: ignore[attr-defined]
        claim = link._claim
        lost = asyncio.Event()
        lost_at = 0.0

        async def lost_once(*arguments: Any, **options: Any) -> Any:
            nonlocal lost_at
            result = await claim(*arguments, **options)
            if len(result) > 1 and not lost.is_set():  # taken over on the server; the reply never arrives
                lost_at = time.monotonic()
                lost.set()
                raise redis.exceptions.ConnectionError("Connection closed by server.")
            return result

        link._claim = lost_once
        await asyncio.wait_for(lost.wait(), LIMIT)
        event = await asyncio.wait_for(a.recv_event(), LIMIT)
        assert event is not None and event.name == "x"
        assert time.monotonic() - lost_at < 2.0, "taken again only once idle for claim_after"
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
