"""The Redis backend under cancellation and calls from other threads: every awaitable of a Redis-backed handle
cancelled at its suspension points (waiting for room, woken, its batch on its way to the server, the server
stalled), the manager stopped under calls in flight, and ``threadsafe()`` callers racing a live manager, its
shutdown and its token. The rule, as locally (tests/test_cancellation.py, tests/test_cross_thread.py): a call
that returned had its effect, one that raised or was cancelled had none; nothing accepted is lost or applied
twice; nothing hangs. Each test uses a namespace of its own; a test that stalls its server (SIGSTOP) has a
redis-server of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from redis_server import LIMIT, REDIS_SERVER, RedisServer, client_of

from timer_manager import CancellationToken, ManagerClosed, TimerManager
from timer_manager.redis import RedisBackend
from timer_manager.redis._link import Link

pytestmark = pytest.mark.usefixtures("default_core", "redis_server")  # redis_server: skip or fail without it


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone (the test may stall it)."""
    assert REDIS_SERVER is not None
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


def link_of(manager: TimerManager) -> Link:
    """The running Redis manager's link (its tasks that talk to the server)."""
    link = manager._runner.store.link  # type: ignore[attr-defined]
    assert isinstance(link, Link)
    return link


async def pending_entries(client: redis.asyncio.Redis, namespace: str) -> int:
    """Stream entries read by a consumer of ``namespace`` and not acknowledged."""
    summary: Any = await client.xpending(f"{{tm:{namespace}}}:ev", "timers")
    return int(summary["pending"])


# ---------------------------------------------------------------------- the manager stops under a call in flight


@pytest.mark.parametrize("stop", ["token", "shutdown"])
@pytest.mark.parametrize("client", ["owned", "given"])
async def test_a_query_on_its_way_when_the_manager_stops_raises_manager_closed(
    own_redis: RedisServer, namespace: str, stop: str, client: str
) -> None:
    """get_pending_count() has flushed and sent its QUERY; the server stalls before answering; the manager stops
    (its token, or a shutdown). Every stop releases every waiting caller with ManagerClosed (contract point 9).
    Catches: the query raising CancelledError in a task nobody cancelled (the stop closes the owned client's
    connections and the link's retry loop, seeing the stop, raised CancelledError), or, on a client the caller
    gave, waiting for the stalled server until reconnect_timeout (60 s here) after the manager stopped."""
    token = CancellationToken()
    given = redis.asyncio.Redis.from_url(own_redis.url) if client == "given" else None
    backend = (
        RedisBackend(client=given, namespace=namespace, reconnect_timeout=60.0)
        if given is not None
        else RedisBackend(own_redis.url, namespace=namespace, reconnect_timeout=60.0)
    )
    manager, handle = TimerManager.new(namespace, 0, 16, 16, token, backend=backend)
    task = asyncio.ensure_future(manager.run())
    try:
        await handle.set_timer("a", 600.0)
        await asyncio.wait_for(handle.flush(), LIMIT)
        link = link_of(manager)
        query_script = link._query
        sent = asyncio.Event()

        def stalled(**arguments: Any) -> Any:
            own_redis.pause()  # the server takes the query and does not answer
            sent.set()
            return query_script(**arguments)

        link._query = stalled  # type: ignore[assignment]
        query = asyncio.ensure_future(handle.get_pending_count())
        await asyncio.wait_for(sent.wait(), LIMIT)
        await asyncio.sleep(0.1)
        assert not query.done()
        if stop == "token":
            token.cancel()
        else:
            await asyncio.wait_for(handle.shutdown(), LIMIT)
        with pytest.raises(ManagerClosed):
            await asyncio.wait_for(query, LIMIT)
        assert not query.cancelled()
    finally:
        own_redis.resume()
        await asyncio.gather(task, return_exceptions=True)
        if given is not None:
            await given.aclose()


async def test_an_open_block_whose_exit_is_cancelled_while_it_settles_with_redis_still_settles(
    redis_server: RedisServer, namespace: str
) -> None:
    """open()'s exit is cancelled while the stopped manager settles with the server: it acknowledges what was
    received (ack="next"), and hands back what was read and not received. run() waits for that settle however
    it ends ("a cancelled run() still waits for that, which is bounded"). Catches: the cancellation of the exit,
    passed on to run()'s task and from it to the settle, cutting the settle short: the received event stayed
    pending on the server (another consumer would get it again after claim_after: a duplicate), and the event
    read and never received was not handed back at once."""
    settling = asyncio.Event()

    async def block() -> None:
        backend = RedisBackend(redis_server.url, namespace=namespace, claim_after=120.0)
        async with TimerManager.open(namespace, heartbeat_interval=0, event_buffer_size=16, backend=backend) as handle:
            await handle.set_timers([("received", 0.01), ("unreceived", 0.2)])
            event = await asyncio.wait_for(handle.recv_event(), LIMIT)
            assert event is not None and event.name == "received"
            while not handle._runner.engine.pending_events():  # "unreceived" is read, not received
                await asyncio.sleep(0.01)
            link = handle._runner.store.link  # type: ignore[attr-defined]
            assert isinstance(link, Link)
            apply_script = link._apply

            async def slow(**arguments: Any) -> Any:
                if link._stopping:  # the settle's batch, on a slow server
                    settling.set()
                    await asyncio.sleep(0.5)
                return await apply_script(**arguments)

            link._apply = slow  # type: ignore[assignment]

    exiting = asyncio.ensure_future(block())
    await asyncio.wait_for(settling.wait(), LIMIT)
    exiting.cancel()
    (outcome,) = await asyncio.gather(exiting, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)
    # Another manager gets the handed-back event at once, not after claim_after (two minutes).
    taking = RedisBackend(redis_server.url, namespace=namespace, claim_after=120.0)
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=taking) as taker:
        event = await asyncio.wait_for(taker.recv_event(), LIMIT)
        assert event is not None and event.name == "unreceived"
        await asyncio.sleep(0.3)
        assert taker.try_recv_events(10) == []
    async with client_of(redis_server) as client:
        assert await pending_entries(client, namespace) == 0  # "received" was acknowledged at the stop
