"""Review: the Redis backend's stop paths."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import LIMIT, REDIS_SERVER, RedisServer

from timer_manager import CancellationToken, ManagerClosed, TimerManager
from timer_manager.redis import RedisBackend

pytestmark = pytest.mark.usefixtures("default_core", "redis_server")  # redis_server: skip or fail without it


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone (it is stalled)."""
    assert REDIS_SERVER is not None
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


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
        await asyncio.sleep(0.2)  # its batch is sent, and held by the stalled server
        assert not flush.done()
        assert manager._runner.engine.queued() == 1 and not manager._runner.engine.outbox  # in flight
        if stop == "token":
            token.cancel()
        else:
            task.cancel()
        with pytest.raises(ManagerClosed):
            await asyncio.wait_for(flush, 3.0)
    finally:
        own_redis.resume()
        await asyncio.gather(task, return_exceptions=True)
