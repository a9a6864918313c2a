"""A real redis-server for the tests: started on a free loopback port in a folder of its own, owned by
pid, and stopped by pid (never a daemon, never a fake); a Redis Cluster made of such servers; and the
helpers the Redis tests share."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio

from timer_manager import TimerHandle
from timer_manager.redis import RedisTimerExpired

__all__ = (
    "LIMIT",
    "REDIS_SERVER",
    "RedisCluster",
    "RedisServer",
    "client_of",
    "eventually",
    "free_port",
    "hold_answers",
    "receive",
)

REDIS_SERVER = shutil.which("redis-server")
LIMIT = 30.0  # seconds any one wait in the Redis tests may take before it counts as a hang


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process; ``restart()`` keeps its port and folder (and so its AOF)."""

    def __init__(
        self, folder: Path, *, appendonly: bool = False, cluster: bool = False, options: tuple[str, ...] = ()
    ) -> None:
        self.folder = folder
        self.options = options  # more command-line options (``--proto-max-bulk-len 1mb``...)
        self.port = free_port()
        self.appendonly = appendonly
        # A cluster node's bus port is chosen here too (by default Redis takes port + 10000, which may be taken).
        self.cluster_port = free_port() if cluster else 0
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """The URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's pid."""
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        assert REDIS_SERVER is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        options = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        if self.cluster_port:
            options += ["--cluster-enabled", "yes", "--cluster-port", str(self.cluster_port)]
            options += ["--cluster-config-file", str(self.folder / "nodes.conf")]
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.folder),
                "--logfile",
                str(self.folder / "redis.log"),
                *options,
                *self.options,
            ],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.folder / "redis.log"
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: see {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 20 s")

    def kill(self) -> None:
        """``kill -9`` the server, as a crash would."""
        self._signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def restart(self) -> None:
        """Kill it, then start it again on the same port and folder."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """``SIGSTOP``: the server stalls, its connections stay open."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """``SIGCONT``."""
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server by its pid (SIGCONT first, in case a test paused it)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self._signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def _signal(self, number: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, number)


class RedisCluster:
    """A Redis Cluster of ``size`` primaries (no replicas), each a :class:`RedisServer` in a folder of its own,
    the 16384 hash slots split evenly between them; ``stop()`` stops every node by its pid."""

    SLOTS = 16384

    def __init__(self, folder: Path, size: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for index in range(size):
                self.nodes.append(RedisServer(folder / f"node{index}", cluster=True))
            self._form()
        except BaseException:
            self.stop()
            raise

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Every node's (host, port)."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    def node_of(self, slot: int) -> RedisServer:
        """The node that serves hash slot ``slot``."""
        return self.nodes[slot * len(self.nodes) // self.SLOTS]

    def _form(self) -> None:
        import redis

        clients = [redis.Redis(port=node.port) for node in self.nodes]
        try:
            size = len(self.nodes)
            for index, client in enumerate(clients):
                first, last = index * self.SLOTS // size, (index + 1) * self.SLOTS // size - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)  # type: ignore[no-untyped-call]
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.cluster_port)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 30.0
            while not all(self._formed(client) for client in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not form within 30 s")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def _formed(self, client: Any) -> bool:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(len(self.nodes))

    def stop(self) -> None:
        """Stop every node by its pid."""
        for node in self.nodes:
            node.stop()


@asynccontextmanager
async def client_of(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A redis-py client of ``server``, closed at the end: for a test to look at the keys itself."""
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def receive(handle: TimerHandle, count: int) -> list[RedisTimerExpired]:
    """``count`` events of a Redis-backed manager, failing the test rather than hanging."""
    events: list[RedisTimerExpired] = []
    while len(events) < count:
        event = await asyncio.wait_for(handle.recv_event(), LIMIT)
        assert isinstance(event, RedisTimerExpired)
        events.append(event)
    return events


async def eventually(condition: Callable[[], bool | Awaitable[bool]], what: str = "") -> None:
    """Wait until ``condition()`` (a bool, or an awaitable of one) holds, checking every few milliseconds; fail
    the test (``what`` says what was awaited) if it does not within LIMIT. For what a loaded machine makes slow,
    in place of a fixed sleep."""
    give_up = time.monotonic() + LIMIT
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        assert time.monotonic() < give_up, f"not within {LIMIT} s: {what or condition}"
        await asyncio.sleep(0.005)


def hold_answers(link: Any) -> asyncio.Event:
    """Make a Redis manager's link wait for ever after each batch the server has applied, as if its answer never
    came (a batch on its way: what is queued behind it waits); return an event set once one is held."""
    send_batch, held = link._send_batch, asyncio.Event()

    async def holding(*arguments: Any) -> Any:
        result = await send_batch(*arguments)
        held.set()
        await asyncio.Event().wait()
        return result

    link._send_batch = holding
    return held


async def acks_a_stop_catches(
    handle: TimerHandle, token: Any, run: asyncio.Future[Any], held: asyncio.Event, *acks: Callable[[], Awaitable[Any]]
) -> list[Any]:
    """With a batch on its way and its answer held (``held``, from :func:`hold_answers`): queue a set behind it, start
    each of ``acks`` (calls of ``handle.ack`` or ``ack_events``), and cancel ``token`` before they run on, so that the
    stop's settle takes their acknowledgements. Return how each ended (its result or exception), once the manager
    stopped."""
    handle.try_set_timer("later", 600.0)
    await asyncio.wait_for(held.wait(), LIMIT)
    started = [asyncio.ensure_future(ack()) for ack in acks]
    await asyncio.sleep(0)
    token.cancel()
    outcomes = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), LIMIT)
    await asyncio.wait_for(asyncio.gather(run, return_exceptions=True), LIMIT)
    return outcomes
