"""The callers the cross-thread stress tests and the threaded soak run (this module holds no tests).

A ``Caller`` is one thread or task with its own random stream and its own names (``"<key>:<n>"``), which
records every call that returned normally; ``recording_table`` makes a table class that logs what the
engine applies, so that each caller's accepted calls can be matched against what was applied. A caller
made with ``touches=True`` also touches its recent names (a quarter of its calls), in every form its side
has; ``same_calls`` matches those, and ``record_refused_rearms`` logs the touches that ``max_timers`` turned
down.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque
from typing import Any, Protocol

from timer_manager import ManagerClosed, QueueFull, ThreadsafeHandle, TimerHandle, TimerLimitExceeded

REFUSALS = (QueueFull, ManagerClosed, TimerLimitExceeded)


class RecordingTable(Protocol):
    """What a table made by ``recording_table`` has besides the table's own methods."""

    limit: int | None  # on the class: the size beyond which ``over_limit`` records
    log: list[tuple[str, str, bool]]
    over_limit: list[int]

    def __len__(self) -> int: ...


def recording_table(base: Any) -> Any:
    """A subclass of the table class ``base`` that logs what the engine applies: ("set", name, replaced),
    ("cancel", name, removed), ("touch", name, touched) and ("clear", "", cleared); see ``RecordingTable``.
    A touch of a timer whose event waits is applied as a set (the event retracted, the timer armed again)."""

    class Recording(base):  # type: ignore[misc]
        limit: int | None = None

        def __init__(self) -> None:
            super().__init__()
            self.log: list[tuple[str, str, bool]] = []
            self.over_limit: list[int] = []

        def set_with_span(self, name: str, deadline: float, span: float, /) -> bool:
            replaced = bool(super().set_with_span(name, deadline, span))
            self.log.append(("set", name, replaced))
            if self.limit is not None and len(self) > self.limit:
                self.over_limit.append(len(self))
            return replaced

        def cancel(self, name: str, /) -> bool:
            removed = bool(super().cancel(name))
            self.log.append(("cancel", name, removed))
            return removed

        def touch(self, name: str, now: float, /) -> bool:
            touched = bool(super().touch(name, now))
            self.log.append(("touch", name, touched))
            return touched

        def clear(self) -> int:
            cleared = int(super().clear())
            self.log.append(("clear", "", bool(cleared)))
            return cleared

    return Recording


def record_refused_rearms(engine: Any, table: RecordingTable) -> None:
    """Log ("touch", name, False) in ``table`` for each touch that ``max_timers`` kept from re-arming a fired
    timer: the engine then leaves the table alone, and the touch would not show in its log."""
    admit = engine.admit_rearm

    def admit_and_record(name: str) -> bool:
        admitted = bool(admit(name))
        if not admitted:
            table.log.append(("touch", name, False))
        return admitted

    engine.admit_rearm = admit_and_record


def same_calls(applied: list[tuple[str, str]], accepted: list[tuple[str, str]]) -> bool:
    """Whether ``applied`` is ``accepted``, call for call: a touch is applied as a touch, or as a set where it
    re-armed a timer whose event waited."""
    return len(applied) == len(accepted) and all(
        got == expected or (expected[0] == "touch" and got == ("set", expected[1]))
        for got, expected in zip(applied, accepted, strict=True)
    )


class Caller:
    """One thread's or task's calls: what it sent, in order, and which returned normally."""

    def __init__(
        self,
        key: str,
        seed: int,
        durations: tuple[float, ...] = (0.0, 0.001, 1000.0, 1000.0, 1000.0),
        touches: bool = False,
    ) -> None:
        self.key = key
        self.random = random.Random(seed)
        self.touches = touches
        self.accepted: deque[tuple[str, str]] = deque()  # ("set" | "cancel" | "touch", name), in call order
        self.refused = 0
        self.sequence = 0
        self.mine: deque[str] = deque(maxlen=64)  # recent names, to reset and cancel
        self.durations = durations

    def new_name(self) -> str:
        self.sequence += 1
        name = f"{self.key}:{self.sequence}"
        self.mine.append(name)
        return name

    def known_name(self) -> str:
        return self.random.choice(self.mine) if self.mine else self.new_name()

    def duration(self) -> float:
        return self.random.choice(self.durations)


def thread_touch(caller: Caller, threadsafe: ThreadsafeHandle) -> list[tuple[str, str]]:
    """Make one random threadsafe touch (of one name or several, blocking or not); return the commands it sent."""
    roll = caller.random.random()
    if roll < 0.5:
        name = caller.known_name()
        if roll < 0.25:
            threadsafe.try_touch(name)
        else:
            threadsafe.touch(name, timeout=caller.random.choice((None, 0.0, 0.001, 0.05)))
        return [("touch", name)]
    names = [caller.known_name() for _ in range(caller.random.randint(1, 3))]
    if roll < 0.75:
        threadsafe.try_touch_many(names)
    else:
        threadsafe.touch_many(names, timeout=0.05)
    return [("touch", name) for name in names]


def thread_call(caller: Caller, threadsafe: ThreadsafeHandle) -> list[tuple[str, str]]:
    """Make one random threadsafe call; return the commands it sent (it raised if refused)."""
    if caller.touches and caller.random.random() < 0.25:
        return thread_touch(caller, threadsafe)
    roll = caller.random.random()
    if roll < 0.35:
        name = caller.new_name() if caller.random.random() < 0.7 else caller.known_name()
        threadsafe.try_set_timer(name, caller.duration())
        return [("set", name)]
    if roll < 0.55:
        name = caller.new_name() if caller.random.random() < 0.7 else caller.known_name()
        threadsafe.set_timer(name, caller.duration(), timeout=caller.random.choice((None, 0.0, 0.001, 0.05)))
        return [("set", name)]
    if roll < 0.7:
        names = [caller.new_name() for _ in range(caller.random.randint(1, 4))]
        items = [(name, caller.duration()) for name in names]
        if caller.random.random() < 0.5:
            threadsafe.try_set_timers(items)
        else:
            threadsafe.set_timers(items, timeout=0.05)
        return [("set", name) for name in names]
    if roll < 0.85:
        name = caller.known_name()
        threadsafe.try_cancel_timer(name)
        return [("cancel", name)]
    names = [caller.known_name() for _ in range(caller.random.randint(1, 3))]
    threadsafe.cancel_timers(names, timeout=0.05)
    return [("cancel", name) for name in names]


def thread_body(
    caller: Caller, threadsafe: ThreadsafeHandle, stop: threading.Event, errors: list[BaseException]
) -> None:
    """Call at random until ``stop`` is set or the manager is closed; record what was accepted."""
    try:
        while not stop.is_set():
            try:
                sent = thread_call(caller, threadsafe)
            except REFUSALS as exc:
                caller.refused += 1
                if isinstance(exc, ManagerClosed):
                    return
            else:
                caller.accepted.extend(sent)
    except BaseException as exc:  # pragma: no cover - reported by the test
        errors.append(exc)


async def task_call(caller: Caller, handle: TimerHandle) -> list[tuple[str, str]]:
    """Make one random loop-side call; return the commands it sent (it raised if refused or timed out)."""
    if caller.touches and caller.random.random() < 0.25:  # at the call, or behind the commands queued before it
        if caller.random.random() < 0.5:
            name = caller.known_name()
            handle.touch(name)
            return [("touch", name)]
        names = [caller.known_name() for _ in range(caller.random.randint(1, 3))]
        handle.touch_many(names)
        return [("touch", name) for name in names]
    roll = caller.random.random()
    if roll < 0.3:
        name = caller.new_name() if caller.random.random() < 0.7 else caller.known_name()
        handle.try_set_timer(name, caller.duration())
        if caller.random.random() < 0.3:
            await asyncio.sleep(0)
        return [("set", name)]
    if roll < 0.6:
        names = [caller.new_name() for _ in range(caller.random.randint(1, 3))]
        sent = [("set", name) for name in names]
        coroutine: Any = (
            handle.set_timer(names[0], caller.duration())
            if len(names) == 1
            else handle.set_timers([(name, caller.duration()) for name in names])
        )
    elif roll < 0.8:
        name = caller.known_name()
        sent = [("cancel", name)]
        coroutine = handle.cancel_timer(name)
    else:
        names = [caller.known_name() for _ in range(caller.random.randint(1, 3))]
        sent = [("cancel", name) for name in names]
        coroutine = handle.cancel_timers(names)
    # Some calls are cancelled wherever they are (waiting for room, or woken and not yet run).
    await asyncio.wait_for(coroutine, caller.random.choice((None, None, 0.0, 0.0005)))
    return sent


async def task_body(caller: Caller, handle: TimerHandle, stop: asyncio.Event) -> None:
    """Call at random (some calls cancelled by a tiny timeout) until ``stop`` is set or the manager is closed."""
    while not stop.is_set():
        try:
            sent = await task_call(caller, handle)
        except (asyncio.TimeoutError, *REFUSALS) as exc:
            caller.refused += 1
            if isinstance(exc, ManagerClosed):
                return
        else:
            caller.accepted.extend(sent)


async def consume(handle: TimerHandle, seen: list[str]) -> None:
    """Receive every event until the manager stops; record the names."""
    async for event in handle:
        seen.append(event.name)


def applied_by(log: list[tuple[str, str, bool]], key: str) -> list[tuple[str, str]]:
    """The (op, name) entries of ``log`` that belong to caller ``key``, in order."""
    return [(op, name) for op, name, _ in log if op != "clear" and name.split(":")[0] == key]


class Crowd:
    """Four threads (``threadsafe()``) and three loop tasks calling one manager at random until stopped (touching
    too, with ``touches``)."""

    def __init__(
        self, handle: TimerHandle, seed: int, durations: tuple[float, ...] | None = None, touches: bool = False
    ) -> None:
        options: dict[str, Any] = {"touches": touches}
        if durations is not None:
            options["durations"] = durations
        self.thread_callers = [Caller(f"t{i}", seed * 100 + i, **options) for i in range(4)]
        self.task_callers = [Caller(f"a{i}", seed * 100 + 50 + i, **options) for i in range(3)]
        self.errors: list[BaseException] = []
        self._thread_stop = threading.Event()
        self._task_stop = asyncio.Event()
        threadsafe = handle.threadsafe()
        self._threads = [
            threading.Thread(target=thread_body, args=(caller, threadsafe, self._thread_stop, self.errors), daemon=True)
            for caller in self.thread_callers
        ]
        for thread in self._threads:
            thread.start()
        self._tasks = [
            asyncio.ensure_future(task_body(caller, handle, self._task_stop)) for caller in self.task_callers
        ]

    @property
    def callers(self) -> list[Caller]:
        """Every caller, threads first."""
        return self.thread_callers + self.task_callers

    async def stop(self, hang: float) -> list[str]:
        """Stop every caller; return what did not stop within ``hang`` seconds (nothing, unless hung)."""
        self._thread_stop.set()
        self._task_stop.set()
        hung = []
        for thread in self._threads:
            await asyncio.to_thread(thread.join, hang)
            if thread.is_alive():
                hung.append(thread.name)
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), hang)
        except asyncio.TimeoutError:
            hung.append("a calling task")
        return hung
