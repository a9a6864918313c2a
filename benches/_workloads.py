"""The workloads of ``compare.py``: each one drives one contender on its own fresh event loop.

Names, offsets and the expected events are built before any timing (:class:`Data`). Each workload
coroutine returns ``(metrics, delivered)``: ``delivered`` is the list of ``(name, deadline)`` the
contender emitted, in the order received (the consumer keeps only these tuples, not the event
objects); :func:`check` compares it with the expected events. CPU is ``time.process_time()`` (the whole process), with
the garbage collector on.

Deadlines grow with set order (offset ``i`` is ``window * i / n``, set in that order), so the
delivery order is defined no matter how fast each contender sets: by deadline, which is set order.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from _contenders import ContenderSpec, loop_factory

__all__ = ("BATCH", "Data", "check", "churn", "idle", "lateness", "run_on_loop", "steady", "storm")

BATCH = 1024  # the batch consumer's max_events
WINDOW = 1.0  # the storm: every timer due within this many seconds
FAR = 3600.0  # "not due": idle timers and the first set of the churn are this far and more


@dataclass
class Data:
    """Everything a workload needs for ``n`` timers, built once per size before any timing."""

    n: int
    window: float = WINDOW
    seed: int = 7
    names: list[str] = field(init=False)
    soon: list[float] = field(init=False)  # increasing offsets within WINDOW
    far: list[float] = field(init=False)  # random offsets beyond FAR
    cancelled: list[str] = field(init=False)  # churn: every other name
    survivors: list[str] = field(init=False)  # churn: the others, in delivery order

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        names = [f"timer-{i:08d}" for i in range(self.n)]
        rng.shuffle(names)  # set order is not the names' sort order
        self.names = names
        self.soon = [self.window * i / self.n for i in range(self.n)]
        self.far = [FAR + rng.random() * FAR for _ in range(self.n)]
        self.cancelled = names[0::2]
        self.survivors = names[1::2]


def run_on_loop(loop_name: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main()`` on a new event loop of the given kind and close the loop."""
    loop = loop_factory(loop_name)()
    try:
        return loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def check(spec: ContenderSpec, delivered: list[tuple[str, float]], expected: list[str]) -> str | None:
    """Why ``delivered`` is not the expected events (None if it is): same names, and for ordered
    contenders the same order with deadlines that never decrease."""
    names = [name for name, _ in delivered]
    deadlines = [deadline for _, deadline in delivered]
    if len(names) != len(expected):
        return f"{len(names)} events, expected {len(expected)}"
    if not spec.ordered:
        if sorted(names) != sorted(expected):
            return "a different set of names"
        return None
    if names != expected:
        where = next(i for i, (a, b) in enumerate(zip(names, expected, strict=False)) if a != b)
        return f"order differs at event {where}: {names[where]!r}, expected {expected[where]!r}"
    if any(b < a for a, b in itertools.pairwise(deadlines)):
        return "deadlines decrease"
    return None


async def _consume(contender: Any, count: int, style: str) -> list[tuple[str, float]]:
    """Receive ``count`` events one at a time (``single``) or in batches of BATCH (``batch``); keep
    only each event's ``(name, deadline)`` (see ``contender.key``)."""
    out: list[Any] = []
    key = contender.key
    if style == "single":
        recv = contender.recv
        append = out.append
        if key is None:
            for _ in range(count):
                append(await recv())
        else:
            for _ in range(count):
                append(key(await recv()))
    else:
        recv_batch = contender.recv_batch
        extend = out.extend
        if key is None:
            while len(out) < count:
                extend(await recv_batch(BATCH))
        else:
            while len(out) < count:
                extend(map(key, await recv_batch(BATCH)))
    return out


async def storm(spec: ContenderSpec, data: Data, heartbeat: float, style: str) -> tuple[dict[str, float], Any]:
    """Set every timer, all due within WINDOW, and receive them all: CPU per delivered expiry.

    Also reports the cost of the set calls alone (a new name each)."""
    n = data.n
    contender = await spec.build(heartbeat, n + 64)
    set_ = contender.set
    names, soon = data.names, data.soon
    gc.collect()
    cpu = time.process_time
    start = cpu()
    for name, offset in zip(names, soon, strict=False):
        set_(name, offset)
    set_done = cpu()
    events = await _consume(contender, n, style)
    end = cpu()
    await contender.stop()
    metrics = {"cpu_per_event_us": (end - start) / n * 1e6, "set_new_us": (set_done - start) / n * 1e6}
    return metrics, events


async def churn(spec: ContenderSpec, data: Data, heartbeat: float) -> tuple[dict[str, float], Any]:
    """Set every timer (far), reset each once (due within WINDOW), cancel half, receive the rest.

    ``cpu_per_op_us`` is the whole cycle's CPU over its 3n operations (n sets, n resets, n/2
    cancels, n/2 deliveries); the call phases are also reported on their own."""
    n = data.n
    contender = await spec.build(heartbeat, 3 * n + 64)
    set_, cancel = contender.set, contender.cancel
    names = data.names
    gc.collect()
    cpu = time.process_time
    start = cpu()
    for name, offset in zip(names, data.far, strict=False):
        set_(name, offset)
    t_set = cpu()
    for name, offset in zip(names, data.soon, strict=False):
        set_(name, offset)
    t_reset = cpu()
    for name in data.cancelled:
        cancel(name)
    t_cancel = cpu()
    events = await _consume(contender, len(data.survivors), "single")
    end = cpu()
    await contender.stop()
    metrics = {
        "cpu_per_op_us": (end - start) / (3 * n) * 1e6,
        "set_us": (t_set - start) / n * 1e6,
        "reset_us": (t_reset - t_set) / n * 1e6,
        "cancel_us": (t_cancel - t_reset) / len(data.cancelled) * 1e6,
    }
    return metrics, events


def lead_time(n: int) -> float:
    """How far ahead the lateness storm starts: room for every contender to set ``n`` timers."""
    return 0.15 + 5e-6 * n


async def lateness(spec: ContenderSpec, data: Data, heartbeat: float) -> tuple[dict[str, float], Any]:
    """The storm with a clock: every timer due within WINDOW after a lead time, each event
    received with ``recv()`` and stamped with the loop time; lateness = stamp - deadline (ms)."""
    n = data.n
    contender = await spec.build(heartbeat, n + 64)
    set_ = contender.set
    lead = lead_time(n)
    clock = asyncio.get_running_loop().time
    started = clock()
    for name, offset in zip(data.names, data.soon, strict=False):
        set_(name, lead + offset)
    await contender.settle()
    setup = clock() - started  # must stay under the lead, or the first timers are late already
    recv = contender.recv
    key = contender.key or (lambda event: event)
    delivered: list[tuple[str, float]] = []
    stamps: list[float] = []
    for _ in range(n):
        delivered.append(key(await recv()))
        stamps.append(clock())
    await contender.stop()
    late = sorted((stamp - deadline) * 1e3 for stamp, (_, deadline) in zip(stamps, delivered, strict=False))
    metrics = {
        "p50_ms": late[len(late) // 2],
        "p99_ms": late[min(len(late) - 1, math.ceil(0.99 * len(late)) - 1)],
        "max_ms": late[-1],
        "min_ms": late[0],
        "early": float(sum(1 for value in late if value < 0.0)),
        "mean_ms": statistics.fmean(late),
        "setup_over_lead": setup / lead,
    }
    return metrics, delivered


async def idle(spec: ContenderSpec, data: Data, heartbeat: float, seconds: float) -> tuple[dict[str, float], Any]:
    """Every timer pending and none due: the share of a core used while waiting ``seconds``."""
    n = data.n
    contender = await spec.build(heartbeat, n + 64)
    set_ = contender.set
    for name, offset in zip(data.names, data.far, strict=False):
        set_(name, offset)
    await contender.settle()
    await asyncio.sleep(0.05)
    gc.collect()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    await contender.stop()
    return {"idle_core_pct": cpu / wall * 100.0}, []


def _percentiles(late: list[float]) -> dict[str, float]:
    late.sort()
    return {
        "p50_ms": late[len(late) // 2],
        "p99_ms": late[min(len(late) - 1, math.ceil(0.99 * len(late)) - 1)],
        "max_ms": late[-1],
        "min_ms": late[0],
        "early": float(sum(1 for value in late if value < 0.0)),
    }


async def steady(
    spec: ContenderSpec, data: Data, rate: float, heartbeat: float, style: str
) -> tuple[dict[str, float], Any]:
    """Timers due one after another at a steady ``rate`` (``data.n`` of them, ``1 / rate`` apart, after
    a lead time), received one at a time (``single``) or in batches (``batch``), each receive stamped
    with the loop's clock: CPU per delivered event over the whole set-then-deliver cycle, and the
    lateness of each event (stamp - deadline, ms; a batch's events share its stamp)."""
    n = data.n
    contender = await spec.build(heartbeat, n + 64)
    set_ = contender.set
    lead = lead_time(n)
    clock = asyncio.get_running_loop().time
    key = contender.key or (lambda event: event)
    delivered: list[tuple[str, float]] = []
    stamps: list[float] = []
    gc.collect()
    cpu = time.process_time
    start = cpu()
    for i, name in enumerate(data.names):
        set_(name, lead + i / rate)
    if style == "single":
        recv = contender.recv
        append, stamp = delivered.append, stamps.append
        for _ in range(n):
            append(key(await recv()))
            stamp(clock())
    else:
        recv_batch = contender.recv_batch
        while len(delivered) < n:
            batch = await recv_batch(BATCH)
            now = clock()
            delivered.extend(map(key, batch))
            stamps.extend(itertools.repeat(now, len(batch)))
    end = cpu()
    await contender.stop()
    late = [(stamp - deadline) * 1e3 for stamp, (_, deadline) in zip(stamps, delivered, strict=False)]
    metrics = {"cpu_per_event_us": (end - start) / n * 1e6, **_percentiles(late)}
    return metrics, delivered
