"""A real redis-server for the tests: started on a free loopback port in a folder of its own, owned by
pid, and stopped by pid (never a daemon, never a fake)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio

__all__ = ("REDIS_SERVER", "RedisServer", "client_of", "free_port")

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process; ``restart()`` keeps its port and folder (and so its AOF)."""

    def __init__(self, folder: Path, *, appendonly: bool = False) -> None:
        self.folder = folder
        self.port = free_port()
        self.appendonly = appendonly
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


@asynccontextmanager
async def client_of(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A redis-py client of ``server``, closed at the end: for a test to look at the keys itself."""
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()
