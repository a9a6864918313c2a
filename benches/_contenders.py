"""The contenders of ``compare.py``: the same small interface over each way to run many named timers.

Every contender is built inside a running event loop (``await spec.build(heartbeat)``) and offers:

* ``set(name, seconds)``: create or reset a timer, non-blocking (deadline = loop time + seconds);
* ``cancel(name)``: non-blocking;
* ``await settle()``: return once every earlier call is applied (the library: ``flush()``);
* ``await recv()`` / ``await recv_batch(limit)``: the next event / a non-empty list of events;
* ``key``: None when events already are ``(name, deadline)`` tuples, else a C-level callable that
  makes that tuple (``operator.attrgetter``); the consumer keeps only these tuples, never the event
  objects (a consumer that kept 10^6 event objects alive would be timing the garbage collector's
  full passes over them, which real consumers, which drop each event, do not pay);
* ``await stop()``.

``set``, ``cancel``, ``recv`` and ``recv_batch`` are plain attributes holding the fastest bound
callable (for the library: the handle's own methods), so that no wrapper call is timed.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from heapq import heappop, heappush
from typing import Any

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the bench and test extras where it installs
    uvloop = None  # type: ignore[assignment]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

__all__ = ("CONTENDERS", "ContenderSpec", "loop_factory", "on_loop")


def loop_factory(name: str) -> LoopFactory:
    """``asyncio.new_event_loop`` or ``uvloop.new_event_loop``."""
    if name == "uvloop":
        if uvloop is None:
            raise RuntimeError("uvloop is not installed")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


async def _queue_batch(queue: asyncio.Queue[Any], limit: int) -> list[Any]:
    """The usual way to take a batch from an ``asyncio.Queue``: wait for one, then drain."""
    batch = [await queue.get()]
    get_nowait = queue.get_nowait
    try:
        while len(batch) < limit:
            batch.append(get_nowait())
    except asyncio.QueueEmpty:
        pass
    return batch


def core_patches(kind: str) -> dict[str, Any]:
    """The classes ``timer_manager._runner`` must build its manager from, for the ``c`` or ``py`` core."""
    if kind == "c":
        module = importlib.import_module("timer_manager._core_c")
        return {"TimerTable": module.TimerTable, "Engine": module.Engine}
    return {
        "TimerTable": importlib.import_module("timer_manager._table_py").TimerTable,
        "Engine": importlib.import_module("timer_manager._engine_py").Engine,
    }


LIBRARY_OPTIONS: dict[str, Any] = {}  # extra TimerManager options for the library rows (compare.py --timer-slack)


class Library:
    """``timer_manager`` with a given core (``c``: the Cython table; ``py``: the pure-Python one),
    through ``try_set_timer``, ``try_cancel_timer`` and ``recv_event(s)``."""

    def __init__(self, kind: str, heartbeat: float, capacity: int, **options: Any) -> None:
        from timer_manager import TimerManager, _backend

        patches = core_patches(kind)
        table_class = patches["TimerTable"]
        saved = {name: getattr(_backend, name) for name in patches}
        for name, value in patches.items():  # the manager builds its table (and engine) from these
            setattr(_backend, name, value)
        try:
            options = {**LIBRARY_OPTIONS, **options}
            self.manager, self.handle = TimerManager.new("bench", heartbeat, capacity, capacity, **options)
        finally:
            for name, value in saved.items():
                setattr(_backend, name, value)
        if type(self.manager._runner.table) is not table_class:
            raise RuntimeError(f"the manager did not take {table_class!r}")
        handle = self.handle
        self.set = handle.try_set_timer
        self.cancel = handle.try_cancel_timer
        self.recv = handle.recv_event
        self.recv_batch = handle.recv_events
        self.task: asyncio.Task[None] | None = None

    key = operator.attrgetter("name", "deadline")

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.manager.run())
        await asyncio.sleep(0)

    async def settle(self) -> None:
        await self.handle.flush()

    async def stop(self) -> None:
        await self.handle.shutdown()
        assert self.task is not None
        await self.task


class QueueFed:
    """What the hand-rolled contenders share: expiries go onto an ``asyncio.Queue`` as
    ``(name, deadline)`` and are received from it, one at a time or in batches."""

    key = None

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        self.recv = self.queue.get

    def recv_batch(self, limit: int) -> Any:
        return _queue_batch(self.queue, limit)

    async def start(self) -> None:
        pass

    async def settle(self) -> None:
        await asyncio.sleep(0)


class CallLater(QueueFed):
    """A dict of name -> ``loop.call_at`` handle; each callback puts ``(name, deadline)`` on an
    ``asyncio.Queue``. Reset cancels the old handle."""

    def __init__(self, heartbeat: float, capacity: int) -> None:
        super().__init__()
        self.handles: dict[str, asyncio.TimerHandle] = {}

    def set(self, name: str, seconds: float) -> None:
        handles = self.handles
        old = handles.get(name)
        if old is not None:
            old.cancel()
        loop = self.loop
        deadline = loop.time() + seconds
        handles[name] = loop.call_at(deadline, self._fire, name, deadline)

    def cancel(self, name: str) -> None:
        old = self.handles.pop(name, None)
        if old is not None:
            old.cancel()

    def _fire(self, name: str, deadline: float) -> None:
        del self.handles[name]
        self.queue.put_nowait((name, deadline))

    async def stop(self) -> None:
        for handle in self.handles.values():
            handle.cancel()
        self.handles.clear()


class LazyHeap(QueueFed):
    """A ``heapq`` of ``[deadline, sequence, name]`` with lazy deletion and a dict name -> entry,
    driven by one ``loop.call_at`` callback for the earliest deadline, feeding an ``asyncio.Queue``."""

    def __init__(self, heartbeat: float, capacity: int) -> None:
        super().__init__()
        self.heap: list[list[Any]] = []
        self.entries: dict[str, list[Any]] = {}
        self.sequence = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = math.inf

    def set(self, name: str, seconds: float) -> None:
        deadline = self.loop.time() + seconds
        entries = self.entries
        old = entries.get(name)
        if old is not None:
            old[2] = None
        sequence = self.sequence
        self.sequence = sequence + 1
        entry = [deadline, sequence, name]
        entries[name] = entry
        heappush(self.heap, entry)
        if deadline < self.timer_when:
            self._arm(deadline)

    def cancel(self, name: str) -> None:
        old = self.entries.pop(name, None)
        if old is not None:
            old[2] = None

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._fire)
        self.timer_when = when

    def _fire(self) -> None:
        self.timer = None
        self.timer_when = math.inf
        now = self.loop.time()
        heap = self.heap
        entries = self.entries
        put = self.queue.put_nowait
        while heap:
            top = heap[0]
            name = top[2]
            if name is None:
                heappop(heap)
                continue
            if top[0] > now:
                self._arm(top[0])
                return
            heappop(heap)
            del entries[name]
            put((name, top[0]))

    async def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


class ScanEveryHeartbeat(QueueFed):
    """The Rust original's design in Python: a dict name -> deadline, scanned in full every
    ``heartbeat`` by a task that sleeps ``heartbeat`` between scans and puts each expiry on an
    ``asyncio.Queue``. Events within one scan come out in dict order (only their set is compared)."""

    def __init__(self, heartbeat: float, capacity: int) -> None:
        if heartbeat <= 0.0:
            raise ValueError("the scanning design needs a heartbeat > 0")
        super().__init__()
        self.heartbeat = heartbeat
        self.timers: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    def set(self, name: str, seconds: float) -> None:
        self.timers[name] = self.loop.time() + seconds

    def cancel(self, name: str) -> None:
        self.timers.pop(name, None)

    async def _run(self) -> None:
        timers = self.timers
        put = self.queue.put_nowait
        time = self.loop.time
        while True:
            await asyncio.sleep(self.heartbeat)
            now = time()
            expired = [(name, deadline) for name, deadline in timers.items() if deadline <= now]
            for name, deadline in expired:
                del timers[name]
                put((name, deadline))

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@dataclass(frozen=True)
class ContenderSpec:
    """One row of the comparison: how to build the contender, and on which loop it runs."""

    key: str
    label: str
    loop: str  # "asyncio" or "uvloop"
    factory: Callable[[float, int], Any]
    # False: compare only the set of delivered names. uvloop's order is not by deadline: its timers
    # have a 1 ms granularity, and a call_at whose delay rounds to 0 ms runs as a call_soon, after
    # every libuv timer due in that loop iteration (seen: tens of ms of deadline out of order).
    ordered: bool = True
    has_heartbeat: bool = False  # whether its delivery follows the heartbeat (else: at each deadline)
    needs_heartbeat: bool = False  # it cannot run with heartbeat 0
    steady_only: bool = False  # a variant shown in the steady workload only

    async def build(self, heartbeat: float, capacity: int) -> Any:
        """Create and start the contender on the running loop."""
        contender = self.factory(heartbeat, capacity)
        await contender.start()
        return contender

    def available(self) -> bool:
        if self.loop == "uvloop" and uvloop is None:
            return False
        if self.key.startswith("tm-cython"):
            try:
                importlib.import_module("timer_manager._core_c")
            except ImportError:
                return False
        return True


CONTENDERS: list[ContenderSpec] = [
    ContenderSpec(
        "tm-cython",
        "timer_manager, Cython table",
        "asyncio",
        lambda h, cap: Library("c", h, cap),
        has_heartbeat=True,
    ),
    ContenderSpec(
        "tm-python",
        "timer_manager, pure-Python table",
        "asyncio",
        lambda h, cap: Library("py", h, cap),
        has_heartbeat=True,
    ),
    ContenderSpec(
        "tm-cython-precise",
        "timer_manager, Cython table, timer_slack=0 (a wake-up per deadline; a timerfd on asyncio)",
        "asyncio",
        lambda h, cap: Library("c", h, cap, timer_slack=0.0),
        has_heartbeat=True,
        steady_only=True,
    ),
    ContenderSpec("call_later", "dict of call_later + asyncio.Queue", "asyncio", CallLater),
    ContenderSpec(
        "call_later-uvloop", "dict of call_later + asyncio.Queue, uvloop", "uvloop", CallLater, ordered=False
    ),
    ContenderSpec("heapq", "heapq, lazy deletion, one call_at + asyncio.Queue", "asyncio", LazyHeap),
    ContenderSpec(
        "rust-scan",
        "Rust-crate design: dict scanned every heartbeat",
        "asyncio",
        ScanEveryHeartbeat,
        ordered=False,
        has_heartbeat=True,
        needs_heartbeat=True,
    ),
]


def on_loop(spec: ContenderSpec, loop: str) -> ContenderSpec:
    """``spec`` on another event loop: the same contender, keyed ``<key>-uvloop`` on uvloop, where only the
    set of delivered names is checked (see ``ordered``)."""
    if spec.loop == loop:
        return spec
    if loop == "uvloop":
        return replace(spec, key=f"{spec.key}-uvloop", label=f"{spec.label}, uvloop", loop="uvloop", ordered=False)
    raise ValueError(f"no {loop} variant of {spec.key}")
