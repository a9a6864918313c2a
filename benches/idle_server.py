"""Idle timeouts in a real asyncio TCP server: what a timer library saves per message, over loopback.

A server process accepts connections and closes each one once it has been idle for ``--idle``
seconds; a load client process opens the connections and keeps most of them active (one small
message every ``--period`` seconds each), while the rest go quiet at random moments and must be
closed. Four ways to run the idle timeout, each in a server process of its own:

- ``naive``: a ``loop.call_later`` per connection, cancelled and created again on every message;
- ``recheck``: the hand-rolled trick (Netty's ``IdleStateHandler``): each message stores its loop
  time; one ``call_at`` per connection closes it if it has been idle long enough when it fires, or
  re-arms at last activity + idle;
- ``try_set``: ``handle.try_set_timer(conn, idle)`` on every message, a task closing what expires;
- ``touch``: ``handle.touch(conn)`` on every message, the same task;

and ``none``, no idle timeout at all, as the floor: what a message costs the server without a timer.

Two diagnostic variants, run only when named in ``--variants``, take the touch's cost apart beside the
re-check (each is the re-check, closing its idle connections itself, plus one part of the touch variant's
work; the library's timers are set for ``PARKED`` times the idle timeout, so they never fall due in a run):

- ``recheck_sets``: plus a library timer set per connection at its start: the manager and its passes for
  the sets, with nothing touched and nothing delivered;
- ``recheck_touch``: plus that timer touched on every message as well: the touch's cost at the call, in
  the server, with no delivery.

``touch`` against ``recheck_touch`` is then what the library's deliveries (wake-ups, passes, the task
receiving the events) cost against the re-check's own per-message store and callbacks.

Each server measures its own CPU time (``time.process_time``) and message count over a window that
starts once every connection is open, its RSS before the connections were opened and after (their
timers included), and when it closed each connection and why. A connection's idle timeout starts at
its first message once every connection is open: on a loaded 2-CPU machine, opening 4,000 connections
to each of five servers at once took up to 2.9 s, longer than the 2 s timeout, and the servers closed
the first connections before the last had come (the run failed, or counted them as active ones
closed). For each loop and size, the five servers run at the same time, each with a load client of
its own, so that every ratio is taken between servers that ran side by side on the same machine, in
the same state; the verdict is on the median of the rounds' ratios. (Run one after another, seconds
apart, the same server's CPU per message varied by 10 to 30% from run to run on the shared 2-CPU
machine this was written on, as much as the timers cost; side by side, touch / re-check at
4,000 connections on uvloop varied from 0.867 to 0.880 over three rounds.)

Every server process starts with glibc's malloc thresholds set (``MALLOC_TUNABLES``): on the stock loop each
read allocates 256 KiB, and whether glibc mapped that afresh at each read (about 20 µs more per message) or
not depended on unrelated allocations, from run to run and variant to variant.

Checks in every run: each connection the client let go idle was closed by the server no earlier than
``idle`` after its last message and no later than ``idle + heartbeat + 50 ms``; no active connection was
ever closed. The closing is timed on the server, from its reading of the connection's last message (the
client marks it) to the close: that is the idle timeout's own precision. The client's view, from its
sending to its seeing the close, is reported beside it and must never be early; it also holds the
loopback's and both processes' scheduling delays. With ten processes on two CPUs those reached 141 ms,
while the servers' own closings stayed within 31 ms (82 ms once, the hand-rolled re-check's); timed by the
client, every variant, hand-rolled ones included, failed the check in some rounds. A run closed late
names its server's longest garbage collection in the window. Loopback only; every run is bounded in
time, and every process it starts is stopped by its pid.

    python benches/idle_server.py --quick        # one size, one round (well under a minute)
    python benches/idle_server.py                # 1,000 and 4,000 connections, 20 rounds (about 7 minutes)
    python benches/idle_server.py --rounds 5     # the same, a quicker look (about 2 minutes; see below)
    python benches/idle_server.py --sizes 1000 --rounds 10 --variants recheck recheck_sets recheck_touch touch

Twenty rounds by default: a round's touch / re-check ratio spread by 0.02 to 0.03 (standard deviation) on the
shared 2-CPU machine this was written on, two to three times the gap between the two at 1,000 connections
(about 0.01). Resampling a 30-round run, the median of 5 rounds came out above 1 in 12 to 16% of the draws in
those cells, the median of 20 in under 4% (docs/benchmarks.md, "Every cell over thirty rounds").

``--baseline FOLDER`` compares two builds of the library in the server: each library variant chosen also runs
from another checkout (its extension built in place), as ``<variant>@base``, side by side with the others,
and the report gives this checkout's against it (same-run ratios)::

    git -C /path/to/main archive HEAD | tar -x -C /tmp/main-build
    (cd /tmp/main-build && python setup.py -q build_ext --inplace)
    python benches/idle_server.py --sizes 1000 --rounds 10 --variants recheck touch --baseline /tmp/main-build
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("naive", "recheck", "try_set", "touch")
DIAGNOSTIC = ("recheck_sets", "recheck_touch")  # run only when named in --variants (see the module's docstring)
LIBRARY_VARIANTS = ("try_set", "touch", *DIAGNOSTIC)  # those that use the library: --baseline runs them twice
BASELINE = "@base"  # the suffix of a variant run from the --baseline checkout
BOOTSTRAP_RESAMPLES = 10_000
DEFAULT_ROUNDS = 20  # enough to decide a gap of about 1% at a round's spread of 2 to 3% (see the docstring)
PARKED = 1000.0  # the diagnostic variants' library timers last this many idle timeouts: never due in a run
FLOOR = "none"  # no idle timeout at all: the server's cost per message without any timer (not checked)
HOST = "127.0.0.1"
MESSAGE = b"ping....\n"  # 9 bytes; the server counts messages by bytes
# A quiet connection's last message, one byte longer: a read whose size is not a whole number of messages holds it,
# so the server notes its arrival, and the closing is timed from there, on the server's own clock, for the price of
# a remainder per read (every variant pays it). Messages this small are never split on loopback.
LAST_MESSAGE = b"ping...!!\n"
GREETING = b"+"  # the server's first write on each connection: the client starts once every one has it
MESSAGE_SIZE = len(MESSAGE)
HEARTBEAT = 0.01  # the library's heartbeat in this workload
LATE_SLACK = 0.05  # the closing may be this much later than idle + heartbeat (scheduling, a busy machine)
# glibc's malloc, set alike in every server process. On the stock loop each read allocates a bytes object of the
# transport's max_size (256 KiB) and shrinks it to the few bytes read. glibc maps such a block afresh (mmap, page
# faults, mremap, munmap) until the process frees a large mapped block, which raises its mmap threshold for good;
# whether that happened before the window depended on what else the process had allocated and freed, so the
# same server measured about 12 or about 31 µs per message at 1,000 connections, and one variant could sit in
# the slow state round after round while the others did not (recheck 30.6-35.2 against touch 12.7-13.4, four
# rounds). Set here: the state a long-running server reaches, for all: large blocks from the heap, kept.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=8388608"
# uvloop's time() counts whole milliseconds, read at the start of each loop iteration: a timer armed from it
# (a call_later, or a deadline from the manager's clock) may end up to a millisecond or two early, as the client
# (CLOCK_MONOTONIC) and the server's timing from its reading of the last message both see it.
EARLY_SLACK = {"asyncio": 0.0, "uvloop": 0.002}


def server_environment(environment: dict[str, str]) -> dict[str, str]:
    """``environment`` with :data:`MALLOC_TUNABLES` added to any ``GLIBC_TUNABLES`` already set (ignored
    where the C library is not glibc)."""
    tunables = [part for part in environment.get("GLIBC_TUNABLES", "").split(":") if part]
    return {**environment, "GLIBC_TUNABLES": ":".join([*tunables, MALLOC_TUNABLES])}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


# ---------------------------------------------------------------------------------------- the server


class Server:
    """One server process's state: its connections, its counters, its record of closings."""

    def __init__(self, variant: str, idle: float, expected: int, window: float) -> None:
        self.variant = variant
        self.idle = idle
        self.expected = expected
        self.window = window
        self.loop = asyncio.get_running_loop()
        self.connections: dict[str, Connection] = {}
        self.next_id = 0
        self.messages = 0
        self.closed = 0
        self.all_open = self.loop.create_future()
        self.handle: Any = None
        self.handle_closed = False
        self.rss_start = 0  # before the connections: see serve()
        self.rss_open = 0
        self.timing = False  # every connection is open: each one's idle timeout starts at its next message
        self.timed_count = 0
        self.first_open = 0.0
        self.opening_seconds = 0.0
        # Per connection closed idle: when it closed, past its last message's arrival + idle (server clock), or
        # None if its last message never came (closed before it: early).
        self.closing_lateness: list[float | None] = []

    def opened(self, connection: Connection) -> None:
        self.next_id += 1
        name = connection.name = f"c{self.next_id}"
        self.connections[name] = connection
        if self.next_id == 1:
            self.first_open = self.loop.time()
        if len(self.connections) == self.expected and not self.all_open.done():
            self.opening_seconds = self.loop.time() - self.first_open
            self.timing = True
            self.all_open.set_result(None)

    def timed(self) -> None:
        """One more connection's idle timeout runs; once all do, note the RSS (their timers included)."""
        self.timed_count += 1
        if self.timed_count == self.expected:
            self.rss_open = _rss_bytes()

    def close_idle(self, name: str) -> None:
        connection = self.connections.pop(name, None)
        if connection is not None:
            self.closed += 1
            last = connection.last_arrival
            self.closing_lateness.append(self.loop.time() - (last + self.idle) if last else None)
            connection.transport.close()

    async def close_expired(self) -> None:
        """The library variants: close what the manager reports idle."""
        async for event in self.handle:
            self.close_idle(event.name)


class Connection(asyncio.Protocol):
    """A connection, with each variant's way of timing it out on every message."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.variant = server.variant
        self.idle = server.idle
        self.name = ""
        self.timing = False
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.last_arrival = 0.0  # when the server read the connection's last message (LAST_MESSAGE), if it came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        server = self.server
        server.opened(self)
        self.transport.write(GREETING)

    def start_timing(self) -> None:
        """Start this connection's idle timeout (at its first message once every connection is open)."""
        server = self.server
        self.timing = True
        server.timed()
        self.last = self.loop.time()
        if self.variant == "naive":
            self.timer = self.loop.call_later(self.idle, server.close_idle, self.name)
        elif self.variant == "recheck":
            self.timer = self.loop.call_at(self.last + self.idle, self.recheck)
        elif self.variant in DIAGNOSTIC:
            self.timer = self.loop.call_at(self.last + self.idle, self.recheck)
            server.handle.try_set_timer(self.name, PARKED * self.idle)
        elif self.variant in ("try_set", "touch"):
            server.handle.try_set_timer(self.name, self.idle)

    def data_received(self, data: bytes) -> None:
        server = self.server
        size = len(data)
        server.messages += size // MESSAGE_SIZE
        if size % MESSAGE_SIZE:  # the client's last message on this connection
            self.last_arrival = self.loop.time()
        if not self.timing:
            if server.timing:  # the first message once every connection is open starts the idle timeout
                self.start_timing()
            return
        variant = self.variant
        # One timeout reset per read, as a server does; each message normally arrives in a read of its own.
        # Nothing else is done per message: the last one's arrival, noted above, is all the closing check needs.
        if variant == "touch":
            server.handle.touch(self.name)
        elif variant == "recheck":
            self.last = self.loop.time()
        elif variant == "try_set":
            server.handle.try_set_timer(self.name, self.idle)
        elif variant == "naive":
            self.timer.cancel()  # type: ignore[union-attr]
            self.timer = self.loop.call_later(self.idle, server.close_idle, self.name)
        # The diagnostic variants come last: they pay up to four more string comparisons than the re-check, a few
        # ns of the about 10 µs a message costs.
        elif variant == "recheck_touch":
            self.last = self.loop.time()
            server.handle.touch(self.name)
        elif variant == "recheck_sets":
            self.last = self.loop.time()

    def recheck(self) -> None:
        due = self.last + self.idle
        if self.loop.time() >= due:
            self.server.close_idle(self.name)
        else:
            self.timer = self.loop.call_at(due, self.recheck)

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if server.connections.pop(self.name, None) is not None:  # closed by the client: stop timing it
            if self.timer is not None:
                self.timer.cancel()
            if self.variant in ("try_set", "touch", *DIAGNOSTIC) and not server.handle_closed:
                server.handle.try_cancel_timer(self.name)


class CollectorPauses:
    """The longest garbage collection while it is in ``gc.callbacks`` (wall clock): a closing due while one ran is
    late."""

    def __init__(self) -> None:
        self.started = 0.0
        self.longest = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self.started)


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    server = Server(args.variant, args.idle, args.connections, args.window)
    # Every variant's server runs a manager and its consumer task, used or not, so that they share its loop
    # callbacks. (On the stock loop a server with one once measured less than half the CPU per message of the
    # same server without, 10 against 25 µs at 8,000 messages/s, with no timer set at all: that was glibc's
    # mmap threshold, raised by the manager's allocations or not; see MALLOC_TUNABLES.)
    from timer_manager import CORE, TimerManager

    assert CORE == "cython", "the idle-server benchmark measures the compiled core"
    manager_cm = TimerManager.open(
        "idle", heartbeat_interval=HEARTBEAT, command_buffer_size=65536, event_buffer_size=65536
    )
    server.handle = await manager_cm.__aenter__()
    consumer = asyncio.ensure_future(server.close_expired())
    # The RSS per connection is measured from here: the library imported (about 3 MB, which every variant's server
    # pays once; taken before the import, as until 2026-12-04, it counted as 3 KB per connection at 1,000) and the
    # manager running.
    server.rss_start = _rss_bytes()
    tcp = await server.loop.create_server(lambda: Connection(server), HOST, 0, backlog=4096)
    port = tcp.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    await asyncio.wait_for(server.all_open, args.connect_timeout)
    pauses = CollectorPauses()
    gc.callbacks.append(pauses)
    cpu0, messages0, t0 = time.process_time(), server.messages, server.loop.time()
    await asyncio.sleep(args.window)
    cpu, messages = time.process_time() - cpu0, server.messages - messages0
    gc.callbacks.remove(pauses)
    window = server.loop.time() - t0
    # The diagnostic variants' proof that their touches reached pending timers: an active connection's timer, set
    # for PARKED idle timeouts at its start, is due that long after its latest touch, near the window's end.
    touched_lately = sum(
        1
        for name in server.connections
        if (deadline := server.handle.deadline(name)) is not None and deadline - PARKED * args.idle >= t0 + window - 1.0
    )
    open_at_end = len(server.connections)
    if not server.rss_open:  # some connection never sent once all were open (its client closed it)
        server.rss_open = _rss_bytes()
    await asyncio.sleep(1.0)  # the client checks its connections, then closes them
    still_open = list(server.connections)
    tcp.close()
    server.handle_closed = True
    for connection in list(server.connections.values()):
        connection.transport.close()
    await manager_cm.__aexit__(None, None, None)
    await consumer
    return {
        "cpu": cpu,
        "messages": messages,
        "window": window,
        "rss_per_connection": (server.rss_open - server.rss_start) / args.connections,
        "closed": server.closed,
        "closing_lateness": server.closing_lateness,
        "touched_lately": touched_lately,
        "open_at_end": open_at_end,
        "open": still_open,
        "opening_seconds": server.opening_seconds,
        "longest_collection": pauses.longest,
        "start": t0,
    }


def server_main(args: argparse.Namespace) -> None:
    if args.library is not None:  # a --baseline run: that checkout's library, ahead of this one's
        sys.path.insert(0, str(args.library))
        import timer_manager

        if not Path(timer_manager.__file__).resolve().is_relative_to(args.library.resolve()):
            raise SystemExit(f"the baseline's library was not imported from {args.library}: {timer_manager.__file__}")
    loop = _new_loop(args.loop)
    try:
        result = loop.run_until_complete(serve(args))
    finally:
        loop.close()
    import timer_manager

    result["library"] = str(Path(timer_manager.__file__).resolve().parent)  # whose library this server ran
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------- the client


class ClientConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed_at: float | None = None
        self.connected_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.greeted = False  # the server has accepted the connection and started timing it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A first message at once: the server's timeout restarts at its arrival, after this moment (its
        # accept may come before the client's loop gets here).
        self.connected_at = time.monotonic()
        self.transport = transport  # type: ignore[assignment]
        transport.write(MESSAGE)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.greeted = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_at = time.monotonic()


async def load(args: argparse.Namespace) -> dict[str, Any]:
    """Open the connections, keep the active ones talking, let the others go quiet; report, per
    connection, when the client last sent on it (wall clock) and whether it saw it closed."""
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    connections: list[ClientConnection] = []
    for start in range(0, args.connections, 200):  # in bursts the backlog holds
        batch = await asyncio.gather(
            *(
                loop.create_connection(ClientConnection, HOST, args.port)
                for _ in range(min(200, args.connections - start))
            )
        )
        connections.extend(protocol for _, protocol in batch)
    # The kernel completes a connect before the server accepts it: wait until the server has accepted every
    # connection, or the first messages of the window would wait in the accept backlog (up to 0.25 s at 4,000
    # connections on the stock loop) and the server's idle clock would start that much after the client's.
    waited_until = time.monotonic() + args.connect_timeout
    while not all(connection.greeted for connection in connections):
        if time.monotonic() > waited_until:
            raise TimeoutError("the server did not accept every connection")
        await asyncio.sleep(0.01)
    began = time.monotonic()
    idle_count = int(args.connections * args.idle_fraction)
    order = list(range(args.connections))
    rng.shuffle(order)
    quiet = set(order[:idle_count])
    # Each connection sends once per period (connections / rate), spread evenly: a tick every 2 ms writes
    # to its share, connection i first at tick i // per_tick.
    tick = 0.002
    per_tick = max(1, round(args.rate * tick))
    # Each quiet connection stops at a random moment after its first message of the window (even if the client
    # falls behind): its next turn sends LAST_MESSAGE, up to a cycle later, and it sends nothing after. That leaves
    # it time to be closed in the window. One that never sent would be timed from its connect, which the server saw
    # later (it starts its idle clock at its accept).
    cycle = args.connections / per_tick * tick
    spread = max(0.0, args.window - args.idle - 0.4 - 2 * cycle)
    stop_at = {i: began + (i // per_tick + 1) * tick + rng.uniform(0.0, spread) for i in quiet}
    last_sent = [connection.connected_at for connection in connections]
    said_last: set[int] = set()  # quiet connections that sent LAST_MESSAGE: nothing more
    position = 0
    end = began + args.window + 0.2
    next_tick = began
    # The longest the client's loop was away between two ticks: a closing it sees late by up to this much may be
    # the client's lateness (a loaded machine), not the server's.
    longest_pause = 0.0
    previous = began
    while True:
        now = time.monotonic()
        longest_pause = max(longest_pause, now - previous)
        previous = now
        if now >= end:
            break
        for _ in range(per_tick):
            i = position
            position = (position + 1) % args.connections
            connection = connections[i]
            message = MESSAGE
            if i in quiet and now >= stop_at[i] and last_sent[i] >= began:  # quiet, once it has sent
                if i in said_last:
                    continue
                said_last.add(i)
                message = LAST_MESSAGE
            transport = connection.transport
            if transport is not None and connection.closed_at is None:
                transport.write(message)
                last_sent[i] = now
        next_tick += tick
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    closed_active = [i for i in range(args.connections) if i not in quiet and connections[i].closed_at is not None]
    quiet_open = [i for i in quiet if connections[i].closed_at is None]
    # How long after its last message + idle the client saw each quiet connection closed (CLOCK_MONOTONIC, the
    # stock loop's clock, in both processes). It can only be >= 0 if the server never closed early.
    lateness = [connections[i].closed_at - (last_sent[i] + args.idle) for i in quiet if connections[i].closed_at]
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    return {
        "closed_active": len(closed_active),
        "quiet": len(quiet),
        "quiet_left_open": len(quiet_open),
        "lateness": lateness,
        "longest_pause": longest_pause,
    }


def client_main(args: argparse.Namespace) -> None:
    loop = _new_loop("uvloop" if _has_uvloop() else "asyncio")
    try:
        result = loop.run_until_complete(load(args))
    finally:
        loop.close()
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------- the runs


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop ``process`` by its pid, whatever state it is in."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=3)


def run_group(variants: list[str], loop: str, size: int, args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """One server per variant, all at once, each with a client of its own (the same seed: the same quiet
    connections, the same schedule); returns each server's measurements and the checks' findings.

    The servers run side by side so that they share the machine's state: run one after another, seconds
    apart, the same server's CPU per message varied by 10 to 30% from run to run on this shared 2-CPU
    machine, as much as the timers cost."""
    common = ["--connections", str(size), "--idle", str(args.idle), "--window", str(args.window)]
    common += ["--rate", str(args.rate)]
    here = str(Path(__file__).resolve())
    limit = args.window + args.idle + 30.0  # bounded: nothing below may outlive this
    processes: list[subprocess.Popen[str]] = []
    try:
        servers = {}
        for variant in variants:
            serve = ["--serve", "--variant", variant.removesuffix(BASELINE), "--loop", loop]
            if variant.endswith(BASELINE):
                serve += ["--library", str(args.baseline)]
            servers[variant] = subprocess.Popen(
                [sys.executable, here, *serve, *common],
                stdout=subprocess.PIPE,
                text=True,
                env=server_environment(dict(os.environ)),
            )
            processes.append(servers[variant])
        ports = {}
        for variant, server in servers.items():
            assert server.stdout is not None
            ports[variant] = json.loads(server.stdout.readline())["port"]
        clients = {}
        for variant in variants:
            clients[variant] = subprocess.Popen(
                [sys.executable, here, "--load", "--port", str(ports[variant]), "--seed", str(seed), *common],
                stdout=subprocess.PIPE,
                text=True,
            )
            processes.append(clients[variant])
        deadline = time.monotonic() + limit
        outputs = {}
        for variant in variants:
            client_out, _ = clients[variant].communicate(timeout=max(1.0, deadline - time.monotonic()))
            server_out, _ = servers[variant].communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs[variant] = (server_out, client_out)
    finally:
        for process in processes:
            _stop(process)
    return [_record(variant, loop, size, *outputs[variant]) for variant in variants]


def _record(variant: str, loop: str, size: int, server_out: str, client_out: str) -> dict[str, Any]:
    """One server's measurements and its client's findings, as a record."""
    measured = json.loads(server_out.strip().splitlines()[-1])
    seen = json.loads(client_out.strip().splitlines()[-1])
    heartbeat = HEARTBEAT if variant.removesuffix(BASELINE) in ("try_set", "touch") else 0.0
    lateness = seen["lateness"]  # the client's view: from its last send to its seeing the close
    # The server's view: from the arrival of the connection's last message to the close (None: closed before it came).
    served = measured["closing_lateness"]
    timed = [late for late in served if late is not None]
    before_last = len(served) - len(timed)
    early = before_last + sum(1 for late in timed if late < -EARLY_SLACK[loop])
    early_seen = sum(1 for late in lateness if late < -EARLY_SLACK[loop])
    late = sum(1 for late in timed if late > heartbeat + LATE_SLACK)
    return {
        "variant": variant,
        "loop": loop,
        "size": size,
        "cpu_per_message_us": measured["cpu"] / max(1, measured["messages"]) * 1e6,
        "messages_per_second": measured["messages"] / measured["window"],
        "rss_per_connection": measured["rss_per_connection"],
        "closed": len(lateness),
        "quiet": seen["quiet"],
        "quiet_left_open": seen["quiet_left_open"],
        "closed_active": seen["closed_active"],
        "early": early,
        "closed_before_last_message": before_last,
        "closings_timed": len(timed),
        "open_at_end": measured["open_at_end"],
        "touched_lately": measured["touched_lately"],
        "early_seen": early_seen,
        "late": late,
        "lateness_max_ms": max(timed, default=0.0) * 1000,
        "seen_lateness_max_ms": max(lateness, default=0.0) * 1000,
        "opening_seconds": measured["opening_seconds"],
        "client_pause_ms": seen["longest_pause"] * 1000,
        "server_collection_ms": measured["longest_collection"] * 1000,
        "library": measured["library"],
        "check": "",
    }


def check(record: dict[str, Any]) -> str:
    problems = []
    if record["closed_active"]:
        problems.append(f"{record['closed_active']} active connections closed")
    if record["quiet_left_open"]:
        problems.append(f"{record['quiet_left_open']} idle connections never closed")
    if record["early"]:
        problems.append(f"{record['early']} closed before idle after their last message reached the server")
    if record["early_seen"]:
        problems.append(f"{record['early_seen']} seen closed by the client before idle after their last message")
    if record["late"]:
        problems.append(
            f"{record['late']} closed later than idle + heartbeat + 50 ms after their last message reached the "
            f"server (latest {record['lateness_max_ms']:.0f} ms past idle; the server's longest garbage collection "
            f"in the window took {record['server_collection_ms']:.0f} ms)"
        )
    return "; ".join(problems)


def _interval(values: list[float]) -> tuple[float, float]:
    """A bootstrap 95% interval of the median of ``values`` (seeded: the same records give the same)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP_RESAMPLES))
    return medians[int(0.025 * len(medians))], medians[int(0.975 * len(medians)) - 1]


def _undecided(interval: tuple[float, float], bound: float) -> bool:
    """Whether a median's ``interval`` holds ``bound``: the verdict may go either way in another run of as many
    rounds."""
    low, high = interval
    return low <= bound <= high


def _spread(values: list[float], interval: tuple[float, float] | None = None) -> str:
    """The median of same-round ratios, a bootstrap 95% interval of it (``interval``, if already drawn), and the
    rounds' range."""
    low, high = interval or _interval(values)
    return (
        f"{statistics.median(values):.3f} (95% interval {low:.3f} to {high:.3f}; "
        f"{len(values)} round{'s' if len(values) != 1 else ''}, {min(values):.2f} to {max(values):.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one size, one round, short windows")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="connections per run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--loops", nargs="+", default=None, choices=["asyncio", "uvloop"])
    parser.add_argument("--idle", type=float, default=None, help="the idle timeout, seconds")
    parser.add_argument("--window", type=float, default=None, help="measured seconds per run")
    parser.add_argument("--rate", type=float, default=None, help="messages per second offered, all connections")
    parser.add_argument("--idle-fraction", type=float, default=0.2)
    parser.add_argument("--json", type=Path, default=None, help="also write the records here")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout, its extension built in place: each library variant chosen also runs from it "
        f"(as <variant>{BASELINE}), side by side",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=(*VARIANTS, *DIAGNOSTIC),
        help="the servers to run beside the floor (default: the four ways; the diagnostic ones on request)",
    )
    # Internal: the two kinds of child process.
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=(*VARIANTS, *DIAGNOSTIC, FLOOR), help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--library", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--connect-timeout", type=float, default=20.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        server_main(args)
        return 0
    if args.load:
        client_main(args)
        return 0

    quick = args.quick
    sizes = args.sizes or ([500] if quick else [1000, 4000])
    rounds = args.rounds or (1 if quick else DEFAULT_ROUNDS)
    loops = args.loops or (["asyncio", "uvloop"] if _has_uvloop() else ["asyncio"])
    variants = list(dict.fromkeys(args.variants))  # each once, in the order given
    if args.baseline is not None:
        if not (args.baseline / "timer_manager" / "__init__.py").is_file():
            print(f"--baseline {args.baseline}: not a checkout of timer_manager", file=sys.stderr)
            return 2
        variants += [variant + BASELINE for variant in variants if variant in LIBRARY_VARIANTS]
    args.idle = args.idle or (0.5 if quick else 2.0)
    args.window = args.window or (1.5 if quick else 3.0)
    args.rate = args.rate or 10000.0
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if 2 * max(sizes) + 100 > soft:
        print(f"open-file limit {soft} is too low for {max(sizes)} connections", file=sys.stderr)
        return 2

    started = time.monotonic()
    records: list[dict[str, Any]] = []
    for round_index in range(rounds):
        for size in sizes:
            for loop in loops:
                cells = [*variants, FLOOR]
                random.Random(round_index).shuffle(cells)  # no variant always starts first
                for record in run_group(cells, loop, size, args, seed=round_index + 1):
                    record["round"] = round_index
                    record["check"] = check(record) if record["variant"] != FLOOR else ""
                    records.append(record)
    elapsed = time.monotonic() - started
    status = report(records, sizes, loops, rounds, args, elapsed, variants)
    if args.json is not None:
        args.json.write_text(json.dumps({"records": records}, indent=1))
    return status


def report(
    records: list[dict[str, Any]],
    sizes: list[int],
    loops: list[str],
    rounds: int,
    args: argparse.Namespace,
    elapsed: float,
    variants: list[str],
) -> int:
    def cell(variant: str, loop: str, size: int) -> list[dict[str, Any]]:
        return [r for r in records if (r["variant"], r["loop"], r["size"]) == (variant, loop, size)]

    def ratios(numerator: str, denominator: str, loop: str, size: int) -> list[float]:
        by_round: dict[int, dict[str, float]] = {}
        for r in records:
            if r["loop"] == loop and r["size"] == size:
                by_round.setdefault(r["round"], {})[r["variant"]] = r["cpu_per_message_us"]
        return [v[numerator] / v[denominator] for v in by_round.values() if numerator in v and denominator in v]

    print(
        f"Idle-timeout server over loopback: CPython {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"idle {args.idle:g} s, {args.rate:,.0f} messages/s offered (spread over the connections), "
        f"{args.idle_fraction:.0%} of connections go quiet, window {args.window:g} s, {rounds} round(s); "
        f"run took {elapsed:.0f} s."
    )
    print("Server CPU per message (µs, median of rounds; in parentheses: ratio to naive, median of same-round ratios)")
    print("and RSS growth per connection (bytes, median), from one server process per cell.\n")
    print(
        "| loop | connections | variant | msgs/s | CPU µs/msg | RSS B/conn | closed idle | latest close (ms) "
        "| seen by client (ms) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for loop in loops:
        for size in sizes:
            for variant in (*variants, FLOOR):
                rs = cell(variant, loop, size)
                if not rs:
                    continue
                cpu = statistics.median(r["cpu_per_message_us"] for r in rs)
                to_naive = ratios(variant, "naive", loop, size)
                ratio = f" ({statistics.median(to_naive):.2f}x)" if to_naive else ""
                rss = statistics.median(r["rss_per_connection"] for r in rs)
                rate = statistics.median(r["messages_per_second"] for r in rs)
                closed = f"{sum(r['closed'] for r in rs)}/{sum(r['quiet'] for r in rs)}"
                worst = f"{max(r['lateness_max_ms'] for r in rs):.1f}"
                seen = f"{max(r['seen_lateness_max_ms'] for r in rs):.1f}"
                if variant == FLOOR:
                    closed, worst, seen = "none (floor)", "-", "-"
                print(
                    f"| {loop} | {size} | {variant} | {rate:,.0f} | {cpu:.2f}{ratio} | {rss:,.0f} | "
                    f"{closed} | {worst} | {seen} |"
                )
    print(
        "\nTargets (same-run ratios of CPU per message: the median of rounds, its bootstrap 95% interval, the rounds):"
    )
    status = 0
    for loop in loops:
        for size in sizes:
            vs_recheck = ratios("touch", "recheck", loop, size)
            vs_naive = ratios("touch", "naive", loop, size)
            for label, values, bound in (
                ("touch / recheck", vs_recheck, 1.0),
                ("touch / naive", vs_naive, 0.85),
            ):
                if not values:
                    continue
                median = statistics.median(values)
                verdict = "PASS" if median <= bound else "FAIL"
                interval = _interval(values)
                note = (
                    "; the interval holds the target: more rounds would decide it"
                    if _undecided(interval, bound)
                    else ""
                )
                print(
                    f"  {verdict}  {label} @ {loop}, {size} connections: {_spread(values, interval)}, "
                    f"need <= {bound}{note}"
                )
    if "recheck" in variants and set(DIAGNOSTIC) & set(variants):
        print("\nThe touch taken apart (same-run ratios to the re-check; see the module's docstring):")
        for loop in loops:
            for size in sizes:
                for variant in (*DIAGNOSTIC, "touch"):
                    values = ratios(variant, "recheck", loop, size)
                    if values:
                        print(f"  {variant} / recheck @ {loop}, {size} connections: {_spread(values)}")
        if "recheck_touch" in variants:
            proof = [f"{r['touched_lately']}/{r['open_at_end']}" for r in records if r["variant"] == "recheck_touch"]
            print(
                f"  (recheck_touch, per run: active connections whose timer a touch near the end had moved / open: "
                f"{', '.join(proof)})"
            )
    compared = [variant for variant in variants if variant.endswith(BASELINE)]
    if compared:
        print(f"\nThis checkout against {args.baseline} (same-run ratios; below 1: this one costs less):")
        for loop in loops:
            for size in sizes:
                for variant in compared:
                    mine = variant.removesuffix(BASELINE)
                    values = ratios(mine, variant, loop, size)
                    if values:
                        print(f"  {mine} / {variant} @ {loop}, {size} connections: {_spread(values)}")
    opening = max(r["opening_seconds"] for r in records)
    print(f"(Opening every connection took a server up to {opening:.1f} s; the idle timeouts start after.)")
    print(f"({FLOOR}: the same server with no idle timeout, the floor; it closes nothing and is not checked.")
    print(" latest close: the latest any idle connection was closed, past the server's reading of its last message")
    print(" + idle, on the server's clock; seen by client: the latest the client saw a closing, past its sending of")
    print(" the last message + idle, which adds the loopback's and both processes' scheduling delays (the client's")
    print(f" loop paused up to {max(r['client_pause_ms'] for r in records):.0f} ms between ticks).)")
    print("\nChecks (every run): idle connections closed no earlier than idle and within idle + heartbeat + 50 ms")
    print("after their last message reached the server, and never seen closed by the client before idle after its")
    print("last message; no active connection closed.")
    failed = [r for r in records if r["check"]]
    for r in failed:
        print(f"  FAIL  {r['variant']} @ {r['loop']}, {r['size']}, round {r['round']}: {r['check']}")
        status = 1
    if not failed:
        print(f"  PASS  all {len(records)} runs")
    print("\nRerun: python benches/idle_server.py" + (" --quick" if rounds == 1 and len(sizes) == 1 else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
