"""The contract points that hold on every backend, run on each through one ``backend`` fixture: the local
table (the default) and Redis (a real redis-server, ``redis_server`` in conftest.py). Deadlines are read
on the backend's own clock: loop time locally, Unix time (the server's, the same machine's clock here) on
Redis. The differences between the two are listed in docs/redis.md and tested in test_redis_*.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from timer_manager import CancellationToken, ManagerClosed, QueueFull, TimerEvent, TimerHandle, TimerManager
from timer_manager._backend import LocalBackend

pytestmark = pytest.mark.usefixtures("default_core")

LIMIT = 30.0
# How much later than the call plus its duration a deadline may be. Locally it is taken at the call. On
# Redis the server adds the time left to its clock when it applies the command, so a client paused (a
# loaded machine) between sending and the server's apply moves the deadline by that pause.
LATER_AT_MOST = {"local": 0.05, "redis": 0.5}
SLACK = 0.0015  # Redis deadlines are whole milliseconds, rounded up


@dataclass
class Backend:
    """How a test builds a manager on one backend, and reads that backend's clock."""

    kind: str
    make: Callable[[str], Any]
    clock: Callable[[], float]


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "local":
        return Backend("local", lambda name: LocalBackend(), lambda: asyncio.get_running_loop().time())
    server = request.getfixturevalue("redis_server")
    from timer_manager.redis import RedisBackend

    return Backend("redis", lambda name: RedisBackend(server.url, namespace=name), time.time)


@asynccontextmanager
async def started(
    backend: Backend, heartbeat: float = 0.0, commands: int = 64, events: int = 64, **options: Any
) -> AsyncIterator[tuple[TimerManager, TimerHandle, asyncio.Task[None]]]:
    name = f"contract-{uuid.uuid4().hex[:10]}"
    manager, handle = TimerManager.new(name, heartbeat, commands, events, backend=backend.make(name), **options)
    task = asyncio.ensure_future(manager.run())
    try:
        yield manager, handle, task
    finally:
        if not task.done():
            await asyncio.wait_for(handle.shutdown(), LIMIT)
        if not task.cancelled():
            await asyncio.wait_for(task, LIMIT)


async def recv(handle: TimerHandle) -> TimerEvent:
    event = await asyncio.wait_for(handle.recv_event(), LIMIT)
    assert event is not None
    return event


async def until_ready(manager: TimerManager, count: int) -> None:
    """Wait until ``count`` events are ready to be received (on Redis: read from the server); fail after LIMIT."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + LIMIT
    while manager.stats().events_ready < count:
        assert loop.time() < give_up, manager.stats()
        await asyncio.sleep(0.01)


async def test_never_early_and_due_at_the_call_plus_its_duration(backend: Backend) -> None:
    async with started(backend) as (_, handle, _task):
        calls = {}
        for index, duration in enumerate((0.09, 0.03, 0.06, 0.12)):
            calls[f"t{index}"] = (backend.clock(), duration)
            await handle.set_timer(f"t{index}", duration)
        for _ in calls:
            event = await recv(handle)
            assert backend.clock() >= event.deadline - 0.0005  # never early
            called, duration = calls[event.name]
            assert called + duration - 0.0005 <= event.deadline <= called + duration + LATER_AT_MOST[backend.kind]


async def test_a_reset_takes_its_deadline_from_its_own_call(backend: Backend) -> None:
    async with started(backend) as (_, handle, _task):
        await handle.set_timer("x", 0.05)
        await asyncio.sleep(0.02)
        called = backend.clock()
        await handle.set_timer("x", 0.1)
        event = await recv(handle)
        assert called + 0.1 - 0.0005 <= event.deadline <= called + 0.1 + LATER_AT_MOST[backend.kind]
        await asyncio.sleep(0.1)
        with pytest.raises(Exception, match="no event is ready"):
            handle.try_recv_event()  # one event: the first deadline never fired


async def test_events_in_deadline_order_then_set_order(backend: Backend) -> None:
    async with started(backend, events=1024) as (_, handle, _task):
        items = [(f"n{index}", 0.05 + 0.01 * (index % 3)) for index in range(300)]
        await handle.set_timers(items)
        received = [await recv(handle) for _ in items]
    expected = sorted(range(len(items)), key=lambda index: (round(items[index][1], 6), index))
    assert [event.name for event in received] == [items[index][0] for index in expected]


async def test_a_full_event_queue_loses_nothing_and_keeps_the_order(backend: Backend) -> None:
    async with started(backend, events=4) as (_, handle, _task):
        await handle.set_timers([(f"n{index:03}", 0.01 + 0.0001 * index) for index in range(200)])
        await asyncio.sleep(0.3)  # all due; four fit in the event queue, the rest wait
        received = [(await recv(handle)).name for _ in range(200)]
    assert received == [f"n{index:03}" for index in range(200)]


async def test_a_reset_or_cancel_retracts_a_ready_event(backend: Backend) -> None:
    async with started(backend) as (_, handle, _task):
        await handle.set_timers([("reset", 0.01), ("cancelled", 0.01), ("kept", 0.02)])
        await asyncio.sleep(0.2)  # all three events ready, none received
        await handle.set_timer("reset", 0.05, data="again")
        await handle.cancel_timer("cancelled")
        # The contract: once applied. A returned call has queued its command, not applied it; on Python 3.11
        # and older, asyncio.wait_for (in recv) ran the receive in a task of its own, which let the manager
        # apply the two commands first, so the test passed without this flush, and failed on 3.12 and later.
        await handle.flush()
        received = [await recv(handle) for _ in range(2)]
        assert [(event.name, event.data) for event in received] == [("kept", None), ("reset", "again")]
        await asyncio.sleep(0.1)
        with pytest.raises(Exception, match="no event is ready"):
            handle.try_recv_event()


async def test_a_receive_right_after_a_reset_or_cancel_never_takes_the_retracted_event(backend: Backend) -> None:
    """The same, with no flush() and no await between the commands and the receive: a receive applies first the
    commands sent before it (on Redis: moves them towards the server, which withdraws their names' events from
    the local queue). Catches: a receive taking what is ready while the reset and the cancel still wait in the
    command queue."""
    async with started(backend) as (manager, handle, _task):
        await handle.set_timers([("reset", 0.01), ("cancelled", 0.01), ("kept", 0.02)])
        await until_ready(manager, 3)  # all three events ready, none received
        handle.try_set_timer("reset", 0.05, data="again")
        handle.try_cancel_timer("cancelled")
        assert [event.name for event in handle.try_recv_events(10)] == ["kept"]
        event = await recv(handle)
        assert (event.name, event.data) == ("reset", "again")


async def test_payloads_come_back_with_their_event(backend: Backend) -> None:
    payloads = {"none": None, "text": "é|x", "raw": b"\x00\x01", "json": {"a": [1, 2.5, None], "b": True}}
    async with started(backend) as (_, handle, _task):
        for name, payload in payloads.items():
            await handle.set_timer(name, 0.01, data=payload)
        received = {event.name: event.data for event in [await recv(handle) for _ in payloads]}
    assert received == payloads


async def test_a_repeating_timer_keeps_its_grid_until_cancelled(backend: Backend) -> None:
    async with started(backend) as (_, handle, _task):
        started_at = backend.clock()
        await handle.set_interval("tick", 0.04)
        deadlines = [(await recv(handle)).deadline for _ in range(4)]
        assert await handle.get_pending_count() == 1
        await handle.cancel_timer("tick")
        assert await handle.get_pending_count() == 0
        await asyncio.sleep(0.1)
        with pytest.raises(Exception, match="no event is ready"):
            handle.try_recv_event()
    for earlier, later in itertools.pairwise(deadlines):
        assert later - earlier == pytest.approx(0.04, abs=SLACK) or later - earlier > 0.04
    assert deadlines[0] >= started_at + 0.04 - 0.0005


async def test_with_debug_logging_every_command_is_logged_and_the_manager_runs_on(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # The Redis manager stopped at its first set with DEBUG on: the log line took a deadline where a set
    # carries (deadline, duration), or Unix time.
    caplog.set_level(logging.DEBUG, logger="timer_manager")
    async with started(backend) as (_, handle, _task):
        await handle.set_timer("in", 0.02)
        await handle.set_timer_at("at", backend.clock() + 0.3)
        await handle.set_interval("tick", 0.5)
        handle.touch("in")
        await handle.cancel_timer("tick")
        await handle.flush()
        assert [(await recv(handle)).name for _ in range(2)] == ["in", "at"]
    debugs = [r.getMessage() for r in caplog.records if r.name == "timer_manager" and r.levelno == logging.DEBUG]
    sets = [message for message in debugs if ": set " in message]
    assert len(sets) == 2 and "'in', due in 0.0" in sets[0], sets
    assert ("'at', due at Unix time 1" if backend.kind == "redis" else "'at', due in 0.") in sets[1], sets
    assert any(": cancel 'tick'" in message for message in debugs), debugs


async def test_flush_then_introspection_sees_every_command_sent_before(backend: Backend) -> None:
    async with started(backend) as (_, handle, _task):
        now = backend.clock()
        await handle.set_timers([("a", 10.0), ("b", 20.0), ("c", 30.0)])
        await handle.cancel_timer("b")
        await handle.flush()
        assert await handle.get_pending_count() == 2
        deadline = await handle.get_deadline("a")
        assert deadline is not None and now + 10.0 - 0.0005 <= deadline <= now + 10.5
        assert await handle.get_deadline("b") is None
        assert await handle.get_next_deadline() == deadline
        await handle.cancel_all_timers()
        assert await handle.get_pending_count() == 0
        assert await handle.get_next_deadline() is None


async def test_a_cancelled_send_queued_nothing_and_a_returned_one_everything(backend: Backend) -> None:
    async with started(backend, commands=4) as (_, handle, _task):
        sent = 0
        with pytest.raises(QueueFull):
            while True:  # fill the command queue
                handle.try_set_timer(f"filler{sent}", 30.0)
                sent += 1
        waiting = asyncio.ensure_future(handle.set_timers([("cancelled1", 30.0), ("cancelled2", 30.0)]))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await handle.set_timer("returned", 30.0)
        await handle.flush()
        assert await handle.get_deadline("cancelled1") is None
        assert await handle.get_deadline("cancelled2") is None
        assert await handle.get_deadline("returned") is not None
        assert await handle.get_pending_count() == sent + 1
        await handle.cancel_all_timers()


async def test_shutdown_applies_what_came_before_and_releases_every_waiter(backend: Backend) -> None:
    async with started(backend) as (_, handle, task):
        receiver = asyncio.ensure_future(handle.recv_event())
        await handle.set_timer("before", 0.01)
        assert (await asyncio.wait_for(receiver, LIMIT)) is not None
        receiver = asyncio.ensure_future(handle.recv_event())
        await asyncio.sleep(0.01)
        await handle.shutdown()
        assert await asyncio.wait_for(receiver, LIMIT) is None
        await asyncio.wait_for(task, LIMIT)
        with pytest.raises(ManagerClosed):
            await handle.set_timer("after", 0.01)


async def test_the_awaitable_queries_raise_manager_closed_after_the_stop(backend: Backend) -> None:
    """One rule on both backends: from shutdown() on, and after the stop, get_deadline(), get_pending_count() and
    get_next_deadline() raise ManagerClosed. Catches: the local ones answering 0 / None after the stop."""
    async with started(backend) as (_, handle, task):
        await handle.set_timer("x", 30.0)
        assert await handle.get_pending_count() >= 1
        await handle.cancel_all_timers()
        await handle.shutdown()
        await asyncio.wait_for(task, LIMIT)
        for query in (lambda: handle.get_deadline("x"), handle.get_pending_count, handle.get_next_deadline):
            with pytest.raises(ManagerClosed, match="stopped"):
                await asyncio.wait_for(query(), LIMIT)


async def test_a_flush_cancelled_before_the_manager_runs_leaves_nothing_queued(backend: Backend) -> None:
    """A flush() waiting for its marker before run(), cancelled: the marker leaves the command queue (of two:
    a set and the marker filled it), so a try_ call finds room. Catches: the cancelled flush's marker kept its
    place (QueueFull)."""
    name = f"contract-{uuid.uuid4().hex[:10]}"
    manager, handle = TimerManager.new(name, 0, 2, 8, backend=backend.make(name))
    handle.try_set_timer("x", 30.0)
    flushing = asyncio.ensure_future(handle.flush())
    for _ in range(3):
        await asyncio.sleep(0)
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    handle.try_set_timer("y", 30.0)
    task = asyncio.ensure_future(manager.run())
    try:
        await asyncio.wait_for(handle.flush(), LIMIT)
        assert await asyncio.wait_for(handle.get_pending_count(), LIMIT) == 2
        await handle.cancel_all_timers()
    finally:
        await asyncio.wait_for(handle.shutdown(), LIMIT)
        await asyncio.wait_for(task, LIMIT)


async def test_a_token_stops_the_manager_and_releases_a_waiting_receiver(backend: Backend) -> None:
    token = CancellationToken()
    async with started(backend, cancel_token=token) as (_, handle, task):
        receiver = asyncio.ensure_future(handle.recv_event())
        await asyncio.sleep(0.05)
        token.cancel()
        assert await asyncio.wait_for(receiver, LIMIT) is None
        await asyncio.wait_for(task, LIMIT)
        with pytest.raises(ManagerClosed):
            handle.try_set_timer("after", 0.01)


async def test_other_threads_set_timers_and_every_one_fires(backend: Backend) -> None:
    async with started(backend) as (_, handle, _task):
        threadsafe = handle.threadsafe()

        def body(first: int) -> None:
            for index in range(first, first + 50):
                threadsafe.set_timer(f"n{index}", 0.02, data=index)

        threads = [threading.Thread(target=body, args=(first,)) for first in (0, 50, 100)]
        for thread in threads:
            thread.start()

        def join() -> None:
            for thread in threads:
                thread.join()

        await asyncio.get_running_loop().run_in_executor(None, join)
        received = sorted(event.data for event in [await recv(handle) for _ in range(150)])
    assert received == list(range(150))


async def test_recv_events_hands_over_batches_in_order(backend: Backend) -> None:
    async with started(backend, events=256) as (_, handle, _task):
        await handle.set_timers([(f"n{index:03}", 0.02) for index in range(100)])
        received: list[str] = []
        while len(received) < 100:
            batch = await asyncio.wait_for(handle.recv_events(30), LIMIT)
            assert 1 <= len(batch) <= 30
            received += [event.name for event in batch]
    assert received == [f"n{index:03}" for index in range(100)]


async def test_cancelled_waits_take_nothing_and_leave_nothing_behind(backend: Backend) -> None:
    async with started(backend) as (_, handle, _task):
        for call in (handle.recv_event, lambda: handle.recv_events(5)):
            waiting = asyncio.ensure_future(call())
            await asyncio.sleep(0.01)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        flushing = asyncio.ensure_future(handle.flush())
        flushing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flushing
        querying = asyncio.ensure_future(handle.get_pending_count())
        await asyncio.sleep(0)
        querying.cancel()  # locally it has answered already; on Redis it waits for the server
        (outcome,) = await asyncio.gather(querying, return_exceptions=True)
        assert outcome == 0 or isinstance(outcome, asyncio.CancelledError)
        await handle.set_timer("after", 0.01)
        assert (await recv(handle)).name == "after"  # the cancelled receivers took nothing
        assert await handle.get_pending_count() == 0
