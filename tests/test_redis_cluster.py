"""The Redis backend on a real Redis Cluster (``redis_cluster`` in conftest.py: three primaries), through a
``redis.asyncio.RedisCluster`` client. A namespace's keys share one hash tag, so each namespace lives on
the one node that serves its slot, and every script runs there as it does on a single server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis_server import LIMIT, RedisCluster, receive

from timer_manager import ManagerClosed, TimerManager
from timer_manager.redis import RedisBackend
from timer_manager.redis._link import namespace_keys

pytestmark = pytest.mark.usefixtures("default_core")


def namespaces_on_each_node(cluster: RedisCluster, prefix: str) -> list[str]:
    """One namespace per node of ``cluster``, in node order: its keys' slot is served by that node."""
    found: dict[int, str] = {}
    for index in itertools.count():
        namespace = f"{prefix}-{index}"
        node = cluster.nodes.index(cluster.node_of(key_slot(namespace_keys(namespace)[0].encode())))
        found.setdefault(node, namespace)
        if len(found) == len(cluster.nodes):
            return [found[node] for node in range(len(cluster.nodes))]
    raise AssertionError("unreachable")


@asynccontextmanager
async def cluster_client(cluster: RedisCluster) -> AsyncIterator[redis.asyncio.RedisCluster]:
    client = redis.asyncio.RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in cluster.startup_nodes])
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_namespace_on_each_node_keeps_order_payloads_and_introspection(redis_cluster: RedisCluster) -> None:
    async with cluster_client(redis_cluster) as client:
        for node, namespace in enumerate(namespaces_on_each_node(redis_cluster, "contract")):
            backend = RedisBackend(client=client, namespace=namespace)
            async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend) as handle:
                # Due a second out, so that none is due before the count below, however loaded the machine.
                items = [(f"n{index:02}", 1.0 + 0.01 * (index % 3)) for index in range(30)]
                await handle.set_timers(items)
                await handle.cancel_timer("n04")
                await handle.set_timer("n05", 1.2, data={"node": node})
                assert handle.touch("n06")
                await handle.set_timer("later", 60.0)
                await handle.flush()
                assert await handle.get_pending_count() == 30
                assert await handle.get_deadline("n04") is None
                received = await receive(handle, 29)
                assert await handle.get_pending_count() == 1
                assert await handle.get_next_deadline() == await handle.get_deadline("later")
            names = [event.name for event in received]
            assert sorted(names) == sorted(name for name, _ in items if name != "n04")
            # n05 moved to 1.2 s, with its payload; the others in (deadline, set order); n06, touched after every
            # set, after the rest of its group (1.0 s), as a set made then.
            assert names[-1] == "n05" and received[-1].data == {"node": node}
            moved = ("n04", "n05", "n06")
            expected = [name for name, _ in sorted(items, key=lambda item: item[1]) if name not in moved]
            assert [name for name in names[:-1] if name != "n06"] == expected
            assert names.index("n06") > names.index("n27")
            # The namespace's keys are on that node and nowhere else.
            stream = namespace_keys(namespace)[5]
            for index, server in enumerate(redis_cluster.nodes):
                plain = redis.Redis(port=server.port)
                try:
                    if index == node:
                        assert plain.exists(stream) == 1
                    else:
                        owner = redis_cluster.nodes[node].port
                        with pytest.raises(redis.exceptions.MovedError, match=f"127.0.0.1:{owner}$"):
                            plain.exists(stream)
                finally:
                    plain.close()


async def test_managers_sharing_a_namespace_split_its_events_and_take_over_a_stopped_ones(
    redis_cluster: RedisCluster,
) -> None:
    namespace = namespaces_on_each_node(redis_cluster, "shared")[1]
    names = [f"t{index:03}" for index in range(200)]

    def open_manager(client: Any, consumer: str, events: int) -> Any:
        backend = RedisBackend(client=client, namespace=namespace, consumer=consumer, claim_after=0.2)
        return TimerManager.open(namespace, heartbeat_interval=0, event_buffer_size=events, backend=backend)

    async with cluster_client(redis_cluster) as first_client, cluster_client(redis_cluster) as second_client:
        async with open_manager(first_client, "first", 8) as first:
            await first.set_timers([(name, 0.05) for name in names])
            await first.flush()
            await asyncio.sleep(0.3)  # all due; the first manager holds up to 8 it has read and not received
            taken = [event.name for event in await receive(first, 50)]
        # Stopped with events read and not received: they go back to the group for the second manager.
        async with open_manager(second_client, "second", 256) as second:
            rest = [event.name for event in await receive(second, len(names) - len(taken))]
            await asyncio.sleep(0.3)
            extra = second.try_recv_events(1000)
    assert sorted(taken + rest) == names, (taken, rest)
    assert extra == [], (extra, taken)


@pytest.mark.parametrize("small", [0, 1, 2])
async def test_a_max_payload_larger_than_any_primarys_argument_limit_is_refused_at_the_start(
    redis_cluster: RedisCluster, small: int
) -> None:
    """One primary takes arguments of 1 MiB at most (``proto-max-bulk-len``), the others 512 MB: ``run()`` must
    refuse ``max_payload=2_000_000`` with ``ValueError`` whichever node that is. A cluster client sends ``CONFIG
    GET`` to one node only (its default node), so the start read that node's limit and missed a smaller one
    elsewhere, where the namespace's slot may be now or after a resharding. Catches: the limit read from one node."""
    limited = redis.Redis(port=redis_cluster.nodes[small].port)
    default = str(limited.config_get("proto-max-bulk-len")["proto-max-bulk-len"])
    limited.config_set("proto-max-bulk-len", "1mb")
    try:
        async with cluster_client(redis_cluster) as client:
            namespace = namespaces_on_each_node(redis_cluster, "limit")[small]
            backend = RedisBackend(client=client, namespace=namespace, max_payload=2_000_000, reconnect_timeout=3.0)
            manager, handle = TimerManager.new(namespace, 0, 8, 8, backend=backend)
            run = asyncio.ensure_future(manager.run())
            try:
                with pytest.raises(ManagerClosed):
                    await asyncio.wait_for(handle.flush(), LIMIT)  # before: returned, the manager running
                with pytest.raises(ValueError, match=r"proto-max-bulk-len \(1,048,576\)"):
                    await asyncio.wait_for(run, LIMIT)
            finally:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
    finally:
        limited.config_set("proto-max-bulk-len", default)
        limited.close()
