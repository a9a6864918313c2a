"""Feature: the ``max_timers=N`` option. A set of a new name that would take the live timers plus the
sets still queued past N is refused at the call with ``TimerLimitExceeded``; re-setting an existing
name is always allowed; a batch that would exceed is refused whole; room returns when timers fire or
are cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support import recv, running, virtual

from timer_manager import QueueFull, TimerLimitExceeded, TimerManager, TimerManagerError, _backend


def test_timer_limit_exceeded_is_a_timer_manager_error() -> None:
    """Catches: the wrong base class."""
    assert issubclass(TimerLimitExceeded, TimerManagerError)


@pytest.mark.usefixtures("core")
async def test_queued_sets_count_against_the_limit_at_the_call() -> None:
    """max_timers=2: two sets still queued (manager not running) use up the room; a third new name is
    refused at the call by every set form, while re-setting a queued name is allowed. Catches: only
    live timers counted, the check done when applied instead of at the call, re-sets refused."""
    manager, handle = TimerManager.new("limit", 0, 64, 64, max_timers=2)
    handle.try_set_timer("a", 100)
    await handle.set_timer("b", 100)
    refusals: list[Callable[[], object]] = [
        lambda: handle.try_set_timer("c", 100),
        lambda: handle.try_set_timer_at("c", 100),
        lambda: handle.try_set_interval("c", 100),
        lambda: handle.try_set_timers([("c", 100)]),
    ]
    for refuse in refusals:
        with pytest.raises(TimerLimitExceeded):
            refuse()
    with pytest.raises(TimerLimitExceeded):
        await handle.set_timer("c", 100)
    with pytest.raises(TimerLimitExceeded):
        await handle.set_timer_at("c", 100)
    with pytest.raises(TimerLimitExceeded):
        await handle.set_interval("c", 100)
    with pytest.raises(TimerLimitExceeded):
        await handle.set_timers([("c", 100)])
    # re-setting a name already queued or live is always allowed
    handle.try_set_timer("a", 50)
    await handle.set_timer_at("b", 60)
    handle.try_set_timers([("a", 70), ("b", 80)])
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert handle.pending_count() == 2
    assert "c" not in handle
    handle.try_set_timer("a", 10)  # live now: still allowed
    await handle.set_interval("b", 10)
    with pytest.raises(TimerLimitExceeded):
        handle.try_set_timer("c", 100)
    await handle.shutdown()
    await task


@pytest.mark.usefixtures("core")
async def test_a_batch_that_would_exceed_is_refused_whole() -> None:
    """max_timers=3 with "a" live: a batch adding three new names is refused whole (neither form queues
    any item); a batch of re-sets plus new names that fit is taken, duplicates counted once.
    Catches: partial batches, per-item checks, duplicates counted twice."""
    async with running(max_timers=3) as (_, handle, _task):
        await handle.set_timer("a", 100)
        await handle.flush()
        with pytest.raises(TimerLimitExceeded):
            await handle.set_timers([("b", 100), ("c", 100), ("d", 100)])
        with pytest.raises(TimerLimitExceeded):
            handle.try_set_timers([("b", 100), ("c", 100), ("d", 100)])
        await handle.flush()
        assert handle.pending_count() == 1
        assert "b" not in handle
        await handle.set_timers([("a", 90), ("b", 100), ("b", 110), ("c", 100), ("a", 80)])
        await handle.flush()
        assert handle.pending_count() == 3
        with pytest.raises(TimerLimitExceeded):
            handle.try_set_timers([("a", 1), ("d", 1)])


@pytest.mark.usefixtures("core")
async def test_room_returns_when_timers_fire_or_are_cancelled() -> None:
    """max_timers=1: once "a" fires (its event not even received yet) a new name fits; once that one is
    cancelled (and the cancel applied) another fits. Catches: fired or cancelled timers still counted."""
    async with running(heartbeat=0.001, max_timers=1) as (manager, handle, _task):
        await handle.set_timer("a", 0.01)
        with pytest.raises(TimerLimitExceeded):
            await handle.set_timer("b", 100)
        while manager.stats().fired < 1:
            await asyncio.sleep(0.005)
        await handle.set_timer("b", 100)  # "a" fired; its event still waits
        with pytest.raises(TimerLimitExceeded):
            handle.try_set_timer("c", 100)
        assert (await recv(handle, 5)).name == "a"
        await handle.cancel_timer("b")
        await handle.flush()
        handle.try_set_timer("c", 100)
        await handle.cancel_all_timers()
        await handle.flush()
        handle.try_set_timer("d", 100)


@pytest.mark.usefixtures("core")
async def test_refused_or_abandoned_sets_give_their_room_back() -> None:
    """A try_ set refused with QueueFull, and an awaitable set cancelled while waiting for room, do not
    keep counting against the limit. Catches: reservations leaked on those paths (the limit would
    shrink for good)."""
    manager, handle = TimerManager.new("leak", 0, 1, 8, max_timers=2)
    handle.try_set_timer("a", 100)  # fills the single command place
    with pytest.raises(QueueFull):
        handle.try_set_timer("b", 100)
    with pytest.raises(QueueFull):
        handle.try_set_timers([("b", 100)])
    waiting = asyncio.create_task(handle.set_timer("c", 100))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert handle.pending_count() == 1
    handle.try_set_timer("d", 100)  # "a" + "d" = 2: fits unless "b" or "c" still count
    await handle.flush()
    assert handle.pending_count() == 2
    await handle.shutdown()
    await task


@pytest.mark.usefixtures("core")
async def test_threadsafe_sets_respect_the_limit() -> None:
    """The limit holds for sets from other threads too: with max_timers=1 and "a" live, the thread-safe
    set_timer and try_set_timer of a new name raise TimerLimitExceeded (and queue nothing), while a
    re-set of "a" goes through. Catches: the thread-safe path bypassing max_timers."""
    async with running(heartbeat=0.001, max_timers=1) as (_, handle, _task):
        await handle.set_timer("a", 100)
        await handle.flush()
        threadsafe = handle.threadsafe()
        with pytest.raises(TimerLimitExceeded):
            await asyncio.to_thread(threadsafe.set_timer, "b", 100)
        with pytest.raises(TimerLimitExceeded):
            await asyncio.to_thread(threadsafe.try_set_timer, "c", 100)
        await asyncio.to_thread(threadsafe.set_timer, "a", 50)
        await asyncio.sleep(0.01)
        await handle.flush()
        assert handle.pending_count() == 1
        assert "b" not in handle
        assert "c" not in handle


async def test_max_timers_is_validated() -> None:
    """max_timers must be an int >= 1. Catches: nonsense limits accepted."""
    with pytest.raises(ValueError):
        TimerManager.new("x", 0, 1, 1, max_timers=0)
    with pytest.raises(TypeError):
        TimerManager.new("x", 0, 1, 1, max_timers="3")
    with pytest.raises(TypeError):
        TimerManager.new("x", 0, 1, 1, max_timers=True)


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("caller", ["touch", "touch_many", "thread"])
@virtual
async def test_a_touch_that_would_rearm_a_fired_timer_past_max_timers_does_nothing(caller: str) -> None:
    """A one-shot timer fell due and its event waits: it is no longer pending, and ``max_timers`` lets another
    name take its place. A touch would re-arm it, as ``set_timer(name, same duration)`` would; at the limit that
    set is refused (TimerLimitExceeded), so the touch must not re-arm it either. Catches: a touch (at the call,
    or a thread's, applied by the manager) that re-arms it anyway, leaving more live timers than
    ``max_timers``."""
    async with running(heartbeat=0, max_timers=1) as (manager, handle, _task):
        await handle.set_timer("a", 1.0)
        await asyncio.sleep(1.5)  # "a" fired; its event waits, unreceived
        assert handle.pending_count() == 0
        await handle.set_timer("b", 100.0)  # the one place
        with pytest.raises(TimerLimitExceeded):
            await handle.set_timer("a", 1.0)
        if caller == "touch":
            assert handle.touch("a") is False
        elif caller == "touch_many":
            assert handle.touch_many(["a", "b"]) == 1
        else:
            await asyncio.to_thread(handle.threadsafe().touch, "a")
            await handle.flush()
        assert handle.pending_count() == 1
        assert "a" not in handle
        event = await recv(handle, 1.0)
        assert event.name == "a" and manager.stats().retracted == 0  # its event stayed
        await handle.cancel_timer("b")
        await handle.flush()
        await handle.set_timer("a", 1.0)  # a place again
        await handle.flush()
        assert handle.pending_count() == 1


def _in_a_thread(call: Callable[[], object]) -> str:
    """Run ``call`` in a thread of its own, joined: "accepted", or "refused" (TimerLimitExceeded)."""
    outcome: list[str] = []

    def run() -> None:
        try:
            call()
        except TimerLimitExceeded:
            outcome.append("refused")
        else:
            outcome.append("accepted")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome[0]


class _LockWithAThreadFirst(contextlib.AbstractContextManager[Any]):
    """The admission's lock, as the engine sees it: at the first acquisition after ``arm()`` another thread's call
    (``call``, run in a thread of its own and joined) takes the lock first, as a thread does that acquires it while
    the loop's thread runs up to its ``with lock:`` (in the compiled engine the loop's thread then blocks there)."""

    def __init__(self, lock: object, call: Callable[[], object]) -> None:
        self.lock = lock
        self.call = call
        self.armed = False
        self.outcome: list[str] = []

    def arm(self) -> None:
        self.armed = True

    def __enter__(self) -> object:
        if self.armed:
            self.armed = False
            self.outcome.append(_in_a_thread(self.call))
        return self.lock.__enter__()  # type: ignore[attr-defined]

    def __exit__(self, *exc: Any) -> bool | None:
        return self.lock.__exit__(*exc)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("case", ["a set_interval of a new name", "a set of a repeating timer whose event waits"])
async def test_a_thread_admitted_while_the_engine_applies_a_set_sees_a_consistent_count(case: str) -> None:
    """``max_timers`` admission counts the live timers plus the reserved names that are not live; the engine must
    change what it counts (``intervals``, the table, ``parked``) in the one locked step that releases the set's
    reservation. A thread whose admission runs just before that step (it holds the lock while the loop's thread
    reaches ``with lock:``) must see a consistent count.

    - ``set_interval`` of a new name, at the limit: the engine wrote ``intervals[name]`` before the locked step, so
      the name looked live (``is_live``) but was not counted (``live_count``), and its reservation was not counted
      either: a thread's set of another new name was admitted, and the live timers exceeded ``max_timers``.
    - ``set_timer`` of a repeating timer whose event waits (parked), one place left: the engine removed the name
      from ``intervals`` before the locked step, while ``parked`` still counted it: it was counted twice (parked,
      and as a reserved name no longer live), and a thread's set that fits was refused with TimerLimitExceeded.
    """
    async with running(heartbeat=0, max_timers=2 if case.startswith("a set_interval") else 3) as (
        manager,
        handle,
        _task,
    ):
        threadsafe = handle.threadsafe()
        engine = manager._runner.engine
        hooked = _LockWithAThreadFirst(engine.lock, lambda: threadsafe.try_set_timer("thread", 100))
        await handle.set_timer("a", 100)
        if case.startswith("a set_interval"):
            await handle.flush()
            engine.lock = hooked
            hooked.arm()
            await handle.set_interval("x", 100)  # takes the last place: the thread's set must be refused
            await handle.flush()
            assert hooked.outcome == ["refused"]
            await asyncio.sleep(0.01)
            await handle.flush()
            assert handle.pending_count() == 2 and "thread" not in handle
        else:
            await handle.set_interval("x", 0.01)
            await asyncio.sleep(0.05)  # "x" fell due: parked, its event waits
            await handle.flush()
            assert handle.pending_count() == 2 and "x" in handle and engine.ready_count() == 1
            engine.lock = hooked
            hooked.arm()
            await handle.set_timer("x", 100)  # a re-set: "x" stays one timer, one place is left
            await handle.flush()
            assert hooked.outcome == ["accepted"]
            await asyncio.sleep(0.01)
            await handle.flush()
            assert handle.pending_count() == 3 and "thread" in handle
        assert manager._runner.admission is not None and manager._runner.admission.reserved == {}


@pytest.mark.parametrize(
    "case", ["a cancel of a repeating timer", "a cancel of a repeating timer whose event waits", "a cancel_all"]
)
async def test_a_thread_admitted_while_the_engine_cancels_a_repeating_timer_sees_a_consistent_count(
    core: Any, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """A repeating timer "x" is cancelled, and a set of "x" is queued behind the cancel (its reservation holds the
    place "x" takes again). While the engine takes "x" out of the table (or out of ``parked``, its event waiting),
    admission must count it once: live (``intervals``, which ``is_live`` reads, and the table or ``parked``, which
    ``live_count`` reads) or reserved and not live. The engine took "x" out of the table or ``parked`` before it took it
    out of ``intervals``: in between "x" looked live but was not counted, nor was its reservation; a thread's set of
    a new name admitted there, at the limit, made three timers live under ``max_timers=2``. (The table here calls the
    thread as it cancels or clears, in the middle of the engine's work, where a thread switch may come: between any
    two bytecodes in the pure-Python engine.)"""
    outcome: list[str] = []
    threadsafe_call: list[Callable[[], object]] = []

    class TableCallingAThread(core.TimerTable):  # type: ignore[misc]
        def cancel(self, name: str, /) -> bool:
            removed = bool(super().cancel(name))
            if threadsafe_call:
                outcome.append(_in_a_thread(threadsafe_call.pop()))
            return removed

        def clear(self) -> int:
            cleared = int(super().clear())
            if threadsafe_call:
                outcome.append(_in_a_thread(threadsafe_call.pop()))
            return cleared

    monkeypatch.setattr(_backend, "TimerTable", TableCallingAThread)
    async with running(heartbeat=0, max_timers=2) as (manager, handle, _task):
        threadsafe = handle.threadsafe()
        await handle.set_timer("a", 100)
        await handle.set_interval("x", 0.01 if "event waits" in case else 100)
        await handle.flush()
        if "event waits" in case:
            await asyncio.sleep(0.05)  # "x" fell due: parked, its event waits
            await handle.flush()
            assert manager._runner.engine.ready_count() == 1
        assert handle.pending_count() == 2
        if case == "a cancel_all":
            handle.try_cancel_all_timers()
            handle.try_set_timer("a", 100)
        else:
            handle.try_cancel_timer("x")
        handle.try_set_timer("x", 100)  # "x" keeps its place: every place is taken
        threadsafe_call.append(lambda: threadsafe.try_set_timer("thread", 100))
        await handle.flush()
        assert outcome == ["refused"]
        await handle.flush()
        assert handle.pending_count() == 2 and "thread" not in handle
        assert manager._runner.admission is not None and manager._runner.admission.reserved == {}
