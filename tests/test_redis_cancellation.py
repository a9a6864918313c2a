"""The Redis backend under cancellation and calls from other threads: every awaitable of a Redis-backed handle
cancelled at its suspension points (waiting for room, woken, its batch on its way to the server, the server
stalled), the manager stopped under calls in flight, and ``threadsafe()`` callers racing a live manager, its
shutdown and its token. The rule, as locally (tests/test_cancellation.py, tests/test_cross_thread.py): a call
that returned had its effect, one that raised or was cancelled had none; nothing accepted is lost or applied
twice; nothing hangs. Each test uses a namespace of its own; a test that stalls its server (SIGSTOP) has a
redis-server of its own."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio
from redis_server import LIMIT, RedisServer, client_of, eventually, free_port

from timer_manager import CancellationToken, ManagerClosed, TimerHandle, TimerManager
from timer_manager.redis import RedisBackend, RedisTimerExpired
from timer_manager.redis._engine import RedisEngine
from timer_manager.redis._event import make_event
from timer_manager.redis._link import Link

pytestmark = pytest.mark.usefixtures("default_core", "redis_server")  # redis_server: skip or fail without it


def link_of(manager: TimerManager) -> Link:
    """The running Redis manager's link (its tasks that talk to the server)."""
    link = manager._runner.store.link  # type: ignore[attr-defined]
    assert isinstance(link, Link)
    return link


async def pending_entries(client: redis.asyncio.Redis, namespace: str) -> int:
    """Stream entries read by a consumer of ``namespace`` and not acknowledged."""
    summary: Any = await client.xpending(f"{{tm:{namespace}}}:ev", "timers")
    return int(summary["pending"])


# ---------------------------------------------------------------------- the manager stops under a call in flight


@pytest.mark.parametrize("stop", ["token", "shutdown"])
@pytest.mark.parametrize("client", ["owned", "given"])
async def test_a_query_on_its_way_when_the_manager_stops_raises_manager_closed(
    own_redis: RedisServer, namespace: str, stop: str, client: str
) -> None:
    """get_pending_count() has flushed and sent its QUERY; the server stalls before answering; the manager stops
    (its token, or a shutdown). Every stop releases every waiting caller with ManagerClosed (contract point 9).
    Catches: the query raising CancelledError in a task nobody cancelled (the stop closes the owned client's
    connections and the link's retry loop, seeing the stop, raised CancelledError), or, on a client the caller
    gave, waiting for the stalled server until reconnect_timeout (60 s here) after the manager stopped."""
    token = CancellationToken()
    given = redis.asyncio.Redis.from_url(own_redis.url) if client == "given" else None
    backend = (
        RedisBackend(client=given, namespace=namespace, reconnect_timeout=60.0)
        if given is not None
        else RedisBackend(own_redis.url, namespace=namespace, reconnect_timeout=60.0)
    )
    manager, handle = TimerManager.new(namespace, 0, 16, 16, token, backend=backend)
    task = asyncio.ensure_future(manager.run())
    try:
        await handle.set_timer("a", 600.0)
        await asyncio.wait_for(handle.flush(), LIMIT)
        link = link_of(manager)
        query_script = link._query
        sent = asyncio.Event()

        def stalled(**arguments: Any) -> Any:
            own_redis.pause()  # the server takes the query and does not answer
            sent.set()
            return query_script(**arguments)

        link._query = stalled  # type: ignore[assignment]
        query = asyncio.ensure_future(handle.get_pending_count())
        await asyncio.wait_for(sent.wait(), LIMIT)
        await asyncio.sleep(0.1)
        assert not query.done()
        if stop == "token":
            token.cancel()
        else:
            await asyncio.wait_for(handle.shutdown(), LIMIT)
        with pytest.raises(ManagerClosed):
            await asyncio.wait_for(query, LIMIT)
        assert not query.cancelled()
    finally:
        own_redis.resume()
        await asyncio.gather(task, return_exceptions=True)
        if given is not None:
            await given.aclose()


async def test_an_open_block_whose_exit_is_cancelled_while_it_settles_with_redis_still_settles(
    redis_server: RedisServer, namespace: str
) -> None:
    """open()'s exit is cancelled while the stopped manager settles with the server: it acknowledges what was
    received (ack="next"), and hands back what was read and not received. run() waits for that settle however
    it ends ("a cancelled run() still waits for that, which is bounded"). Catches: the cancellation of the exit,
    passed on to run()'s task and from it to the settle, cutting the settle short: the received event stayed
    pending on the server (another consumer would get it again after claim_after: a duplicate), and the event
    read and never received was not handed back at once."""
    settling = asyncio.Event()

    async def block() -> None:
        backend = RedisBackend(redis_server.url, namespace=namespace, claim_after=120.0)
        async with TimerManager.open(namespace, heartbeat_interval=0, event_buffer_size=16, backend=backend) as handle:
            await handle.set_timers([("received", 0.01), ("unreceived", 0.2)])
            event = await asyncio.wait_for(handle.recv_event(), LIMIT)
            assert event is not None and event.name == "received"
            engine = handle._runner.engine
            assert isinstance(engine, RedisEngine)
            while not engine.pending_events():  # "unreceived" is read, not received
                await asyncio.sleep(0.01)
            link = handle._runner.store.link
            assert isinstance(link, Link)
            apply_script = link._apply

            async def slow(**arguments: Any) -> Any:
                if link._stopping:  # the settle's batch, on a slow server
                    settling.set()
                    await asyncio.sleep(0.5)
                return await apply_script(**arguments)

            link._apply = slow

    exiting = asyncio.ensure_future(block())
    await asyncio.wait_for(settling.wait(), LIMIT)
    exiting.cancel()
    (outcome,) = await asyncio.gather(exiting, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)
    # Another manager gets the handed-back event at once, not after claim_after (two minutes).
    taking = RedisBackend(redis_server.url, namespace=namespace, claim_after=120.0)
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=taking) as taker:
        event = await asyncio.wait_for(taker.recv_event(), LIMIT)
        assert event is not None and event.name == "unreceived"
        await asyncio.sleep(0.3)
        assert taker.try_recv_events(10) == []
    async with client_of(redis_server) as client:
        assert await pending_entries(client, namespace) == 0  # "received" was acknowledged at the stop


# ---------------------------------------------------------------------- every awaitable, cancelled at each point

MAX_STEPS = 24  # loop iterations from the server's answer to a woken caller's return, and then some
FAR = 600.0  # seconds: no timer of these tests falls due


class Gate:
    """Holds the answer to each APPLY batch of ``link`` (already applied on the server) while closed, so that
    a test decides when the room it frees and the flushes it confirms reach the callers: from the opening on,
    everything runs in loop iterations, without the network."""

    def __init__(self, link: Link) -> None:
        self.opened = asyncio.Event()
        self.opened.set()
        self.held = 0  # batches answered and held
        send = link._send_batch

        async def gated(*arguments: Any) -> list[int]:
            result = await send(*arguments)
            if not self.opened.is_set():
                self.held += 1
                await self.opened.wait()
            return result

        link._send_batch = gated  # type: ignore[method-assign,assignment]

    def close(self) -> None:
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()


Call = Callable[[TimerHandle], Awaitable[Any]]
Effect = Callable[[TimerHandle], Awaitable[bool]]  # after a flush: whether the call's effect is on the server


async def _pending(handle: TimerHandle, *names: str) -> list[bool]:
    return [await handle.get_deadline(name) is not None for name in names]


SENDS: dict[str, tuple[Call, Effect]] = {
    "set_timer": (lambda h: h.set_timer("x", FAR), lambda h: _all(h, "x")),
    "set_timer_at": (lambda h: h.set_timer_at("x", 4e9), lambda h: _all(h, "x")),
    "set_interval": (lambda h: h.set_interval("x", FAR), lambda h: _all(h, "x")),
    "set_timers": (lambda h: h.set_timers([("x", FAR), ("y", FAR)]), lambda h: _all(h, "x", "y")),
    "cancel_timer": (lambda h: h.cancel_timer("p"), lambda h: _none(h, "p")),
    "cancel_timers": (lambda h: h.cancel_timers(["p", "q"]), lambda h: _none(h, "p", "q")),
    "cancel_all_timers": (lambda h: h.cancel_all_timers(), lambda h: _none(h, "p", "q")),
}
PAIRS = {"set_timers": ("x", "y"), "cancel_timers": ("p", "q"), "cancel_all_timers": ("p", "q")}


async def _all(handle: TimerHandle, *names: str) -> bool:
    return all(await _pending(handle, *names))


async def _none(handle: TimerHandle, *names: str) -> bool:
    return not any(await _pending(handle, *names))


def _assert_nothing_left(manager: TimerManager) -> None:
    runner = manager._runner
    assert not runner.senders, "a sender was left waiting"
    assert runner.promised == 0, "room promised to a cancelled caller was never passed on"
    assert not runner.receivers, "a cancelled receiver was left behind"


async def _stop(handle: TimerHandle, run: asyncio.Task[None]) -> None:
    await asyncio.wait_for(handle.shutdown(), LIMIT)
    await asyncio.wait_for(run, LIMIT)


async def _cancel_after(
    steps: int | None,
    manager: TimerManager,
    task: asyncio.Future[Any],
    gate: Gate,
    seen: set[str],
    states: list[str] | None = None,
) -> str:
    """Wait until the batch that fills the command queue is applied and its answer held, and ``task`` has run;
    then open the gate and cancel ``task`` after ``steps`` loop iterations (-1: before the opening; None: never).
    How it ended; ``seen`` collects where the calls were when cancelled ("waiting" for room, "woken": room promised)."""

    await eventually(lambda: gate.held > 0, "a batch's answer held")
    await asyncio.sleep(0)
    if steps is None:
        gate.open()
        await asyncio.wait_for(asyncio.shield(task), LIMIT)
        return "returned"
    if steps >= 0:
        gate.open()
        for _ in range(steps):
            await asyncio.sleep(0)
    runner = manager._runner
    state = "woken" if runner.promised else "waiting" if runner.senders else "queued"
    if state != "queued":
        seen.add(state)
    if states is not None:
        states.append(state)
    task.cancel()
    gate.open()
    try:
        await asyncio.wait_for(asyncio.shield(task), LIMIT)
    except asyncio.CancelledError:
        return "cancelled"
    return "returned"


async def _started(
    url: str, namespace: str, commands: int, **options: Any
) -> tuple[TimerManager, TimerHandle, Gate, asyncio.Task[None]]:
    manager, handle = TimerManager.new(
        namespace, 0, commands, 8, backend=RedisBackend(url, namespace=namespace, **options)
    )
    run = asyncio.ensure_future(manager.run())
    await asyncio.wait_for(handle.flush(), LIMIT)
    return manager, handle, Gate(link_of(manager)), run


@pytest.mark.parametrize("method", sorted(SENDS))
async def test_a_send_cancelled_at_each_suspension_point_on_redis_has_all_or_none_of_its_effect(
    redis_server: RedisServer, namespace: str, method: str
) -> None:
    """The call waits for room in a command queue of three that a batch on its way to the server fills; the
    server applies that batch and its answer is held, then let through, and the call is cancelled after 0..N
    loop iterations (waiting; woken, with the room the answer freed promised to it; returned). Catches: a
    cancelled call whose commands reached the server anyway, half a batch applied, room promised to a cancelled
    caller never passed on (the caller waiting behind it hangs)."""
    call, effect = SENDS[method]
    outcomes: set[str] = set()
    seen: set[str] = set()
    for steps in range(-1, MAX_STEPS):
        manager, handle, gate, run = await _started(redis_server.url, f"{namespace}-{steps}", 3)
        await handle.set_timers([("p", FAR), ("q", FAR)])
        await asyncio.wait_for(handle.flush(), LIMIT)
        gate.close()
        handle.try_set_timers([("f1", FAR), ("f2", FAR), ("f3", FAR)])  # the queue is full until they are applied
        task = asyncio.ensure_future(call(handle))
        await asyncio.sleep(0)
        # Behind it, a caller whose commands do not fit beside the call's: it gets room only once the call has
        # queued (and its commands were applied) or, cancelled after it was woken, has passed its room on.
        size = 2 if method in PAIRS and method != "cancel_all_timers" else 1
        follower = asyncio.ensure_future(handle.set_timers([(f"g{index}", FAR) for index in range(4 - size)]))
        outcome = await _cancel_after(steps, manager, task, gate, seen)
        outcomes.add(outcome)
        await asyncio.wait_for(follower, LIMIT)
        await asyncio.wait_for(handle.flush(), LIMIT)
        assert await effect(handle) == (outcome == "returned"), (steps, outcome)
        if method in PAIRS:
            first, second = await _pending(handle, *PAIRS[method])
            assert first == second, f"half of the batch was applied (after {steps} steps)"
        _assert_nothing_left(manager)
        await asyncio.wait_for(handle.set_timer("after", FAR), LIMIT)  # nothing the cancelled call left blocks it
        await asyncio.wait_for(handle.cancel_all_timers(), LIMIT)
        await _stop(handle, run)
        if outcome == "returned" and "woken" in seen:
            break
    assert outcomes == {"cancelled", "returned"}, outcomes
    assert seen == {"waiting", "woken"}, seen


@pytest.mark.parametrize("what", ["flush", "get_deadline", "get_pending_count", "get_next_deadline", "shutdown"])
async def test_a_flush_query_or_shutdown_cancelled_at_each_suspension_point_on_redis_leaves_nothing_behind(
    redis_server: RedisServer, namespace: str, what: str
) -> None:
    """As above, for the awaitables that queue a marker (flush(), and the queries, which flush first) or the
    SHUTDOWN: cancelled waiting for room, woken, with their marker's batch on its way, or returned. A query that
    returned answers as the server's state after the commands sent before it; a shutdown that returned stops
    the manager, one that was cancelled leaves it open. Catches: a flush marker resolving a cancelled future,
    a waiter or promised room left behind, a cancelled shutdown leaving the manager closed with no SHUTDOWN
    queued (run() never returns)."""
    outcomes: set[str] = set()
    seen: set[str] = set()
    # The queries' QUERY goes to the server after their flush: the last run lets the call finish.
    for steps in [*range(-1, MAX_STEPS), None]:
        manager, handle, gate, run = await _started(redis_server.url, f"{namespace}-{steps}", 3)
        await handle.set_timer("p", FAR)
        await asyncio.wait_for(handle.flush(), LIMIT)
        gate.close()
        handle.try_set_timers([("f1", FAR), ("f2", FAR), ("f3", FAR)])
        calls: dict[str, Call] = {
            "flush": lambda h: h.flush(),
            "get_deadline": lambda h: h.get_deadline("f3"),
            "get_pending_count": lambda h: h.get_pending_count(),
            "get_next_deadline": lambda h: h.get_next_deadline(),
            "shutdown": lambda h: h.shutdown(),
        }
        task = asyncio.ensure_future(calls[what](handle))
        outcome = await _cancel_after(steps, manager, task, gate, seen)
        outcomes.add(outcome)
        if outcome == "returned":
            if what == "shutdown":
                await asyncio.wait_for(run, LIMIT)
                continue
            answer = task.result()
            if what == "get_pending_count":
                assert answer == 4
            elif what != "flush":
                assert isinstance(answer, float)
        await asyncio.wait_for(handle.set_timer("after", FAR), LIMIT)  # the manager is open and not blocked
        await asyncio.wait_for(handle.flush(), LIMIT)
        assert await handle.get_pending_count() == 5
        _assert_nothing_left(manager)
        await asyncio.wait_for(handle.cancel_all_timers(), LIMIT)
        await _stop(handle, run)
        if outcome == "returned" and "woken" in seen:
            break
    assert outcomes == {"cancelled", "returned"}, outcomes
    assert seen == {"waiting", "woken"}, seen


@pytest.mark.parametrize("ack", ["next", "receive"])
@pytest.mark.parametrize("receive", ["recv_event", "recv_events", "anext"])
async def test_a_receive_cancelled_at_each_suspension_point_on_redis_loses_no_event(
    redis_server: RedisServer, namespace: str, receive: str, ack: str
) -> None:
    """The receiver waits for an event; the timer falls due, the reader reads its event from the stream and the
    reply is held, then let through, and the receiver is cancelled after 0..N loop iterations (waiting; woken,
    the event ready; returned). A cancelled receive took nothing: the next call receives the event, once.
    Catches: an event taken (or acknowledged, under ack="receive") by a cancelled receiver, a wake-up not
    passed on, a waiter left behind."""
    outcomes: set[str] = set()
    seen: set[str] = set()
    # "woken": cancelled by the wake-up itself, right after the manager woke it and before it ran; None: never
    # cancelled (an event whose name was set during the read is checked on the server: a round trip more)
    schedule: list[int | str | None] = [-1, "woken", *range(MAX_STEPS), None]
    for steps in schedule:
        options: dict[str, Any] = {"ack": ack}
        manager, handle, _, run = await _started(redis_server.url, f"{namespace}-{steps}", 8, **options)
        runner = manager._runner
        link = link_of(manager)
        opened = asyncio.Event()
        held = asyncio.Event()
        read = link._read_new

        async def gated(stream: str, count: int, read: Any = read, opened: Any = opened, held: Any = held) -> Any:
            reply = await read(stream, count)
            if reply[0] and not opened.is_set():
                held.set()
                await opened.wait()
            return reply

        link._read_new = gated  # type: ignore[method-assign]
        # The read on its way now went out before the gate: an event for it, then every read is gated.
        await handle.set_timer("warm", 0.0)
        warm = await asyncio.wait_for(handle.recv_event(), LIMIT)
        assert warm is not None and warm.name == "warm" and not held.is_set()
        awaitable: Awaitable[Any]
        if receive == "recv_event":
            awaitable = handle.recv_event()
        elif receive == "recv_events":
            awaitable = handle.recv_events(4)
        else:
            awaitable = handle.__anext__()
        task = asyncio.ensure_future(awaitable)
        await asyncio.sleep(0)
        await handle.set_timer("due", 0.0)
        await asyncio.wait_for(held.wait(), LIMIT)
        if steps == "woken":
            wake = runner.wake_receivers

            def waking(wake: Any = wake, task: asyncio.Future[Any] = task, runner: Any = runner) -> None:
                woken = bool(runner.receivers)
                wake()
                if woken:
                    seen.add("woken")
                    task.cancel()

            runner.wake_receivers = waking  # type: ignore[method-assign]
            opened.set()
        elif steps is None:
            opened.set()
        else:
            assert isinstance(steps, int)
            if steps >= 0:
                opened.set()
                for _ in range(steps):
                    await asyncio.sleep(0)
            if runner.receivers:
                seen.add("waiting")
            elif runner.engine.ready_count() and not task.done():
                seen.add("woken")
            task.cancel()
            opened.set()
        try:
            result = await asyncio.wait_for(asyncio.shield(task), LIMIT)
        except asyncio.CancelledError:
            outcomes.add("cancelled")
            event = await asyncio.wait_for(handle.recv_event(), LIMIT)
            assert event is not None and event.name == "due"
        else:
            outcomes.add("returned")
            received: list[Any] = result if isinstance(result, list) else [result]
            names = [got.name for got in received]
            assert names == ["due"]
        await asyncio.sleep(0.05)
        assert handle.try_recv_events(4) == [], "an event was received twice"
        _assert_nothing_left(manager)
        await _stop(handle, run)
        async with client_of(redis_server) as client:
            assert await pending_entries(client, f"{namespace}-{steps}") == 0  # received once, and acknowledged
        if outcome_done(outcomes, seen):
            break
    assert outcomes == {"cancelled", "returned"}, outcomes
    assert seen == {"waiting", "woken"}, seen


def outcome_done(outcomes: set[str], seen: set[str]) -> bool:
    return outcomes == {"cancelled", "returned"} and seen == {"waiting", "woken"}


async def test_an_ack_cancelled_at_each_suspension_point_acknowledges_only_once_its_acknowledgement_has_left(
    redis_server: RedisServer, namespace: str
) -> None:
    """ack() (ack="manual") queues its acknowledgement with a flush marker, waiting for room like any command, then
    waits for the server. Cancelled while it waits for room (or woken with room promised), or once queued while its
    acknowledgement still waits here for the next batch, it acknowledged nothing: the event is still held. Only an
    acknowledgement already on its way to the server stands (it cannot be called back). Catches: the acknowledgement
    queued before the wait for room, so that an ack() cancelled there (or one refused because the manager was
    closing) acknowledged the event anyway; and one left queued when its call was cancelled before it was sent."""
    outcomes: set[str] = set()
    seen: set[str] = set()
    for steps in [*range(-1, MAX_STEPS), None]:
        options: dict[str, Any] = {"ack": "manual"}
        manager, handle, gate, run = await _started(redis_server.url, f"{namespace}-{steps}", 3, **options)
        await handle.set_timer("x", 0.0)
        event = await asyncio.wait_for(handle.recv_event(), LIMIT)
        assert event is not None
        # The receipt's mark for the server goes with the next call: with this flush, so that the batch the gate
        # holds below is the one that fills the queue.
        await asyncio.wait_for(handle.flush(), LIMIT)
        gate.close()
        handle.try_set_timers([("f1", FAR), ("f2", FAR), ("f3", FAR)])
        engine = manager._runner.engine
        assert isinstance(engine, RedisEngine)
        taken_back: list[bool] = []  # what the cancelled call's take-back said: found here, or already on its way

        def spied(events: list[RedisTimerExpired], take_back: Any = engine._take_back, said: Any = taken_back) -> bool:
            said.append(take_back(events))
            return bool(said[-1])

        engine._take_back = spied
        task = asyncio.ensure_future(handle.ack(event))
        states: list[str] = []
        outcome = await _cancel_after(steps, manager, task, gate, seen, states)
        left = states == ["queued"] and taken_back == [False]  # cancelled once it was on its way to the server
        outcomes.add(outcome)
        await asyncio.wait_for(handle.flush(), LIMIT)
        async with client_of(redis_server) as client:
            acknowledged = await pending_entries(client, f"{namespace}-{steps}") == 0
        assert acknowledged == (outcome == "returned" or left), (steps, outcome, states, taken_back)
        _assert_nothing_left(manager)
        await asyncio.wait_for(handle.ack(event), LIMIT)  # acknowledged now, or again (which does nothing)
        await _stop(handle, run)
        async with client_of(redis_server) as client:
            assert await pending_entries(client, f"{namespace}-{steps}") == 0
        if outcome == "returned" and "woken" in seen:
            break
    assert outcomes == {"cancelled", "returned"}, outcomes
    assert {"waiting", "woken"} <= seen, seen


async def test_an_ack_cancelled_before_its_acknowledgement_left_takes_it_back(
    redis_server: RedisServer, namespace: str
) -> None:
    """An ack() queued while the previous batch waits for the server's answer waits for the next batch here; cancelled
    then, it must take its acknowledgement back: the event stays held (pending on the server), and a later ack()
    acknowledges it. Catches: a cancelled ack() whose acknowledgement went with the next batch all the same."""
    options: dict[str, Any] = {"ack": "manual"}
    manager, handle, gate, run = await _started(redis_server.url, namespace, 8, **options)
    await handle.set_timer("x", 0.0)
    event = await asyncio.wait_for(handle.recv_event(), LIMIT)
    assert event is not None
    await asyncio.wait_for(handle.flush(), LIMIT)  # the receipt's mark is on the server
    gate.close()
    handle.try_set_timer("held", FAR)  # its batch is answered and the answer held: the link waits for it

    await eventually(lambda: gate.held > 0, "a batch's answer held")
    task = asyncio.ensure_future(handle.ack(event))
    for _ in range(5):
        await asyncio.sleep(0)
    engine = manager._runner.engine
    assert isinstance(engine, RedisEngine)
    assert not task.done() and any(ack is event for ack in engine.acks)  # queued, not yet sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.open()
    await asyncio.wait_for(handle.flush(), LIMIT)
    async with client_of(redis_server) as client:
        assert await pending_entries(client, namespace) == 1, "the cancelled ack() acknowledged the event"
    _assert_nothing_left(manager)
    await asyncio.wait_for(handle.ack(event), LIMIT)
    async with client_of(redis_server) as client:
        assert await pending_entries(client, namespace) == 0
    await _stop(handle, run)


@pytest.mark.parametrize("cancel", [True, False])
async def test_an_ack_cancelled_while_the_link_ships_an_outbox_of_several_calls_stands_and_loses_no_touch(
    redis_server: RedisServer, namespace: str, cancel: bool
) -> None:
    """The link counts the acknowledgements queued before it sends an outbox that takes several calls, and sends
    them with the call of the last of those commands. An ack() cancelled while the first calls are on their way is
    among them: it stands. Taking it back there shrank the list under the link's count (found by a review): an
    acknowledgement queued later, the retraction of a touched timer's ready event, went in a call before the touch,
    so the server dropped the event's record first and the touch, which had returned True, found nothing."""
    manager, handle = TimerManager.new(
        namespace, 0, 4000, 8, backend=RedisBackend(redis_server.url, namespace=namespace, ack="manual")
    )
    run = asyncio.ensure_future(manager.run())
    await asyncio.wait_for(handle.flush(), LIMIT)
    engine = manager._runner.engine
    assert isinstance(engine, RedisEngine)
    gate = Gate(link_of(manager))
    await handle.set_timer("x", 0.0)
    x = await asyncio.wait_for(handle.recv_event(), LIMIT)
    assert x is not None
    await asyncio.wait_for(handle.flush(), LIMIT)
    await handle.set_timer("y", 0.3)
    await eventually(lambda: engine.ready_count() == 1)  # y's event is ready, not received
    await asyncio.wait_for(handle.flush(), LIMIT)
    gate.close()
    handle.try_set_timer("h", FAR)
    await eventually(lambda: gate.held == 1)
    handle.try_set_timers([(f"f{index}", FAR) for index in range(1500)])  # two calls' worth
    task = asyncio.ensure_future(handle.ack(x))
    await eventually(lambda: any(ack is x for ack in engine.acks) and len(engine.outbox) >= 1500)
    gate.open()
    gate.close()
    await eventually(lambda: gate.held == 2)  # the first call of the outbox is on its way; x's acknowledgement counted
    assert any(ack is x for ack in engine.acks)
    if cancel:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert handle.touch("y")  # retracts y's ready event (its acknowledgement queued) and queues the touch
    gate.open()
    await asyncio.wait_for(handle.flush(), LIMIT)
    event = await asyncio.wait_for(handle.recv_event(), LIMIT)
    assert event is not None and event.name == "y", event
    async with client_of(redis_server) as client:
        assert await pending_entries(client, namespace) == 1, "x's acknowledgement, on its way, stands"  # y's
    await _stop(handle, run)
    assert manager._runner.stop_reason == "shutdown requested", manager._runner.stop_reason


async def test_a_large_ack_cancelled_while_the_link_ships_an_outbox_of_several_calls_does_not_fail_the_manager(
    redis_server: RedisServer, namespace: str
) -> None:
    """As above, with an ack() of 10,000 events: taking them back under the link's count sent it past the end of
    the list (IndexError), and the manager stopped as failed, losing the commands it had accepted (found by a
    review)."""
    count = 10_000
    manager, handle = TimerManager.new(
        namespace, 0, 20_000, count, backend=RedisBackend(redis_server.url, namespace=namespace, ack="manual")
    )
    run = asyncio.ensure_future(manager.run())
    await asyncio.wait_for(handle.flush(), LIMIT)
    engine = manager._runner.engine
    assert isinstance(engine, RedisEngine)
    gate = Gate(link_of(manager))
    await handle.set_timers([(f"e{index}", 0.0) for index in range(count)])
    events: list[Any] = []
    while len(events) < count:
        events += await asyncio.wait_for(handle.recv_events(count - len(events)), LIMIT)
    await asyncio.wait_for(handle.flush(), LIMIT)
    gate.close()
    handle.try_set_timer("h", FAR)
    await eventually(lambda: gate.held == 1)
    handle.try_set_timers([(f"f{index}", FAR) for index in range(1500)])
    task = asyncio.ensure_future(handle.ack_events(events))
    await eventually(lambda: len(engine.acks) == count and len(engine.outbox) >= 1500)
    gate.open()
    gate.close()
    await eventually(lambda: gate.held == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.open()
    await asyncio.wait_for(handle.flush(), LIMIT)
    assert await handle.get_pending_count() == 1501
    async with client_of(redis_server) as client:
        assert await pending_entries(client, namespace) == 0  # on their way when cancelled: they stand
    await _stop(handle, run)
    assert manager._runner.stop_reason == "shutdown requested", manager._runner.stop_reason


async def test_an_ack_refused_because_the_manager_is_shutting_down_acknowledges_nothing(
    redis_server: RedisServer, namespace: str
) -> None:
    """After shutdown(), ack() raises ManagerClosed (every later command does); it must then have acknowledged
    nothing: the event stays pending for another consumer (after claim_after), as for any event received and not
    acknowledged under ack="manual". Catches: the acknowledgement queued before the closed check, and sent by the
    batches before the stop or by the stop's settle."""
    options: dict[str, Any] = {"ack": "manual"}
    _, handle, _, run = await _started(redis_server.url, namespace, 8, **options)
    await handle.set_timer("x", 0.0)
    event = await asyncio.wait_for(handle.recv_event(), LIMIT)
    assert event is not None
    await handle.set_timer("later", FAR)
    await asyncio.wait_for(handle.shutdown(), LIMIT)
    with pytest.raises(ManagerClosed):
        await asyncio.wait_for(handle.ack(event), LIMIT)
    await asyncio.wait_for(run, LIMIT)
    async with client_of(redis_server) as client:
        assert await pending_entries(client, namespace) == 1


# ---------------------------------------------------------------------- other threads, against a live manager


def _matches_a_prefix(accepted: list[tuple[str, str]], observed: set[str], *, whole: bool) -> bool:
    """Whether the caller's timers pending on the server (``observed``) are what its accepted calls leave: all of
    them (``whole``), or the first k of them for some k (a stop by the token discards what was not yet sent)."""
    state: dict[str, bool] = {}
    wrong = len(observed)  # names whose state differs from observed, with nothing applied yet
    prefixes_matching = wrong == 0
    if prefixes_matching and not whole:  # k = 0: a stop by the token may discard every call the caller made
        return True
    for op, name in accepted:
        before = state.get(name, False)
        after = op == "set"
        state[name] = after
        if before != after:
            wrong += -1 if after == (name in observed) else 1
        prefixes_matching = wrong == 0
        if prefixes_matching and not whole:
            return True
    return prefixes_matching


def test_the_prefix_check_takes_any_prefix_the_empty_one_too() -> None:
    """The check the test below makes of each caller. Catches: the empty prefix refused (a caller whose accepted
    calls were all still queued when the token stopped the manager: beside two busy processes, a task that got its
    first two calls in just before the stop failed the test below, with nothing of its own on the server)."""
    accepted = [("set", "a:1"), ("set", "a:2"), ("cancel", "a:1")]
    for observed in (set(), {"a:1"}, {"a:1", "a:2"}, {"a:2"}):
        assert _matches_a_prefix(accepted, observed, whole=False), observed
    assert _matches_a_prefix(accepted, {"a:2"}, whole=True)
    for observed in (set(), {"a:1"}, {"a:1", "a:2"}):
        assert not _matches_a_prefix(accepted, observed, whole=True), observed
    for observed in ({"a:2", "a:3"}, {"b:1"}):  # never set by this caller: no prefix leaves it
        assert not _matches_a_prefix(accepted, observed, whole=False), observed
    assert _matches_a_prefix([], set(), whole=True) and _matches_a_prefix([], set(), whole=False)
    assert not _matches_a_prefix([], {"a:1"}, whole=False)


@pytest.mark.parametrize("switch_interval", [1e-5], indirect=True)
@pytest.mark.parametrize("stop_by", ["shutdown", "shutdown-live", "token"])
async def test_threads_and_tasks_against_a_redis_manager_lose_nothing_and_apply_nothing_refused(
    redis_server: RedisServer, namespace: str, switch_interval: float, stop_by: str
) -> None:
    """Four threads (threadsafe(): blocking and try_, single and batched, with timeouts) and three loop tasks
    (awaitable and try_, some cancelled by a tiny wait_for) set and cancel their own timers on a Redis manager with
    a command queue of four, for 0.6 s, with threads switching every 10 µs; then the manager is stopped: by a
    shutdown once the callers stopped, by a shutdown while they call (every call that returned before it must
    be applied), or by its token, cancelled from a thread while they call (a prefix of each caller's calls is
    applied). Then what is pending on the server must be exactly what each caller's accepted calls leave.
    Catches: a command lost between the inbox, the queue, the outbox and the batch in flight, one applied twice
    or out of its caller's order, a refused or cancelled call that reached the server, a caller hung."""
    from stress import Crowd

    token = CancellationToken()
    backend = RedisBackend(redis_server.url, namespace=namespace)
    manager, handle = TimerManager.new(namespace, 0.0, 4, 8, token, backend=backend)
    run = asyncio.ensure_future(manager.run())
    crowd = Crowd(handle, 11, durations=(FAR,))
    await asyncio.sleep(0.6)
    # The threads' commands go ahead of the loop's waiting senders, and on Redis room comes back only with the
    # server's answers: the tasks may get few calls in. Go on until some did (or LIMIT more: on a loaded machine
    # the threads' head start grows).
    for _ in range(int(LIMIT / 0.05)):
        if sum(len(caller.accepted) for caller in crowd.task_callers):
            break
        await asyncio.sleep(0.05)
    if stop_by == "shutdown":
        assert await crowd.stop(LIMIT) == [], "a caller hangs"
        await asyncio.wait_for(handle.flush(), LIMIT)
        await asyncio.wait_for(handle.shutdown(), LIMIT)
    elif stop_by == "shutdown-live":
        await asyncio.wait_for(handle.shutdown(), LIMIT)
        assert await crowd.stop(LIMIT) == [], "a caller hangs"
    else:
        await asyncio.to_thread(token.cancel)
        assert await crowd.stop(LIMIT) == [], "a caller hangs"
    await asyncio.wait_for(run, LIMIT)
    assert not crowd.errors, crowd.errors
    async with client_of(redis_server) as client:
        members: list[bytes] = await client.zrange(f"{{tm:{namespace}}}:due", 0, -1)  # type: ignore[assignment]
        pending = {name.decode() for name in members}
    for caller in crowd.callers:
        mine = {name for name in pending if name.split(":")[0] == caller.key}
        assert _matches_a_prefix(list(caller.accepted), mine, whole=stop_by != "token"), caller.key
    assert sum(len(caller.accepted) for caller in crowd.thread_callers) > 0
    assert sum(len(caller.accepted) for caller in crowd.task_callers) > 0


async def test_a_task_waiting_for_room_gets_its_turn_beside_threads_that_keep_the_queue_full(
    redis_server: RedisServer, namespace: str
) -> None:
    """A command queue of four on Redis, kept full for a second by four threads calling ``threadsafe().set_timer``
    in a loop, and one task calling ``await handle.set_timer`` in a loop. Room comes back with each of the server's
    answers; the task must get a share of it (a fair share is a fifth of the calls: here at least a twentieth of
    the threads' count). Catches: what threads handed over always queued ahead of a task already waiting for room
    (the threads refill it at once), so that the task got a few calls a second against the threads' thousands (52
    against 12,725 in two seconds, measured)."""
    import threading

    backend = RedisBackend(redis_server.url, namespace=namespace)
    async with TimerManager.open(namespace, heartbeat_interval=0, command_buffer_size=4, backend=backend) as handle:
        await asyncio.wait_for(handle.flush(), LIMIT)
        threadsafe = handle.threadsafe()
        stop = threading.Event()
        calls = {"threads": 0, "task": 0}
        lock = threading.Lock()

        def thread_calls(key: int) -> None:
            index = 0
            while not stop.is_set():
                threadsafe.set_timer(f"t{key}:{index % 50}", FAR, timeout=LIMIT)
                with lock:
                    calls["threads"] += 1
                index += 1

        async def task_calls() -> None:
            index = 0
            while not stop.is_set():
                await handle.set_timer(f"task:{index % 50}", FAR)
                calls["task"] += 1
                index += 1

        threads = [threading.Thread(target=thread_calls, args=(key,)) for key in range(4)]
        for thread in threads:
            thread.start()
        task = asyncio.ensure_future(task_calls())
        try:
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                await asyncio.wait_for(asyncio.to_thread(thread.join, LIMIT), LIMIT)
            await asyncio.wait_for(task, LIMIT)
        assert calls["threads"] > 0
        assert calls["task"] * 20 >= calls["threads"], calls


# ---------------------------------------------------------------------- stops while the link cannot reach the server


@pytest.mark.parametrize("stop", ["token", "shutdown", "task"])
async def test_a_stop_while_the_server_is_unreachable_at_the_start_ends_run_promptly(namespace: str, stop: str) -> None:
    """The server cannot be reached when the manager starts (nothing listens on its port), so the link retries
    its first call, for up to reconnect_timeout (60 s here); the manager is stopped meanwhile (its token, a
    shutdown, or its task cancelled). run() must end promptly, as contract point 8 says of the token, and every
    caller be released. Catches: run() waiting, after the stop, for the link's first call to give up (until
    reconnect_timeout): the stop did not reach a link that had not started its tasks yet."""
    token = CancellationToken()
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", namespace=namespace, reconnect_timeout=60.0)
    manager, handle = TimerManager.new(namespace, 0, 4, 4, token, backend=backend)
    run = asyncio.ensure_future(manager.run())
    receiver = asyncio.ensure_future(handle.recv_event())
    await asyncio.sleep(0.3)  # the link is retrying its first call
    assert not run.done()
    if stop == "token":
        token.cancel()
    elif stop == "shutdown":
        await asyncio.wait_for(handle.shutdown(), LIMIT)
    else:
        run.cancel()
    assert await asyncio.wait_for(receiver, LIMIT) is None
    (outcome,) = await asyncio.gather(asyncio.wait_for(run, LIMIT), return_exceptions=True)
    if stop == "task":
        assert isinstance(outcome, asyncio.CancelledError)
    else:
        assert outcome is None


async def test_sends_cancelled_while_the_link_reconnects_have_all_or_none_of_their_effect(
    own_redis: RedisServer, namespace: str
) -> None:
    """Many callers wait for room in a command queue of four that a batch held by the stalled server (SIGSTOP)
    fills; the server resumes and every client connection is dropped (the batch in flight is sent again on a new
    connection); callers are cancelled at staggered moments throughout: during the stall, as the room comes
    back, while the link reconnects. Each call that returned has its whole effect on the server, each one
    cancelled none. Catches: a cancelled caller's commands applied, a returned one's lost or applied twice
    across the reconnection, half a batch applied, a caller hung."""
    manager, handle = TimerManager.new(
        namespace, 0, 4, 8, backend=RedisBackend(own_redis.url, namespace=namespace, reconnect_timeout=30.0)
    )
    run = asyncio.ensure_future(manager.run())
    try:
        await handle.set_timers([(f"c{index}", FAR) for index in range(16)])
        await asyncio.wait_for(handle.flush(), LIMIT)
        own_redis.pause()
        try:
            handle.try_set_timers([(f"f{index}", FAR) for index in range(4)])
            await asyncio.sleep(0.1)  # their batch is on its way, held by the stalled server
            calls: list[tuple[asyncio.Future[None], Callable[[], Awaitable[bool]]]] = []
            effect: Callable[[], Awaitable[bool]]
            for index in range(16):
                kind = index % 4
                if kind == 0:
                    coroutine = handle.set_timer(f"s{index}", FAR)
                    effect = functools.partial(_all, handle, f"s{index}")
                elif kind == 1:
                    coroutine = handle.set_timers([(f"m{index}a", FAR), (f"m{index}b", FAR)])
                    effect = functools.partial(_all, handle, f"m{index}a", f"m{index}b")
                elif kind == 2:
                    coroutine = handle.cancel_timer(f"c{index}")
                    effect = functools.partial(_none, handle, f"c{index}")
                else:
                    coroutine = handle.cancel_timers([f"c{index}", f"c{index - 1}x"])
                    effect = functools.partial(_none, handle, f"c{index}")
                calls.append((asyncio.ensure_future(coroutine), effect))
            await asyncio.sleep(0.1)
            for task, _ in calls[0:16:4]:
                task.cancel()  # during the stall
        finally:
            own_redis.resume()
        async with client_of(own_redis) as client:
            await client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]
        for round in range(1, 4):  # while the link reconnects and the room comes back
            for _ in range(round * 3):
                await asyncio.sleep(0)
            for task, _ in calls[round:16:4]:
                task.cancel()
        outcomes: list[bool] = []
        for task, _ in calls:
            try:
                await asyncio.wait_for(asyncio.shield(task), LIMIT)
            except asyncio.CancelledError:
                returned = False
            else:
                returned = True
            outcomes.append(returned)
        assert True in outcomes and False in outcomes, outcomes
        await asyncio.wait_for(handle.flush(), LIMIT)
        for (_, effect), returned in zip(calls, outcomes, strict=True):
            assert await effect() == returned
        for index in range(1, 16, 4):  # never half a batch
            assert len({*(await _pending(handle, f"m{index}a", f"m{index}b"))}) == 1
        _assert_nothing_left(manager)
        await asyncio.wait_for(handle.set_timer("after", FAR), LIMIT)
        await _stop(handle, run)
    finally:
        own_redis.resume()
        await asyncio.gather(run, return_exceptions=True)


async def test_entries_a_stop_caught_on_their_way_from_the_server_are_handed_back_at_once(
    redis_server: RedisServer, namespace: str
) -> None:
    """The server has handed an entry to this consumer (XREADGROUP: it is pending on it) and the reply is still
    on its way when the manager stops: the stop cancels the read, and the reply is lost. The entry's event was
    read and never received, so the stop hands it back at once (docs/redis.md: "a consumer that stops hands back
    at once what it read and never received"). Catches: only the events the engine got being handed back, so
    that such an entry waited claim_after (two minutes here) on the stopped consumer before anyone got it."""
    backend = RedisBackend(redis_server.url, namespace=namespace, claim_after=120.0)
    manager, handle = TimerManager.new(namespace, 0, 8, 8, backend=backend)
    run = asyncio.ensure_future(manager.run())
    await asyncio.wait_for(handle.flush(), LIMIT)
    link = link_of(manager)
    read = link._read_new
    in_transit = asyncio.Event()

    async def lost_on_the_way(stream: str, count: int) -> Any:
        reply = await read(stream, count)
        if reply[0]:  # read on the server; the reply never arrives
            in_transit.set()
            await asyncio.Event().wait()
        return reply

    link._read_new = lost_on_the_way  # type: ignore[method-assign]
    await handle.set_timer("warm", 0.0)  # the read on its way went out before the wrapper: this event for it
    warm = await asyncio.wait_for(handle.recv_event(), LIMIT)
    assert warm is not None and warm.name == "warm"
    await handle.set_timer("x", 0.0)
    await asyncio.wait_for(in_transit.wait(), LIMIT)
    await asyncio.wait_for(handle.shutdown(), LIMIT)
    await asyncio.wait_for(run, LIMIT)
    taking = RedisBackend(redis_server.url, namespace=namespace, claim_after=120.0)
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=taking) as taker:
        event = await asyncio.wait_for(taker.recv_event(), LIMIT)
        assert event is not None and event.name == "x"
    async with client_of(redis_server) as client:
        assert await pending_entries(client, namespace) == 0  # "warm" acknowledged at the stop, "x" by the taker


@pytest.mark.parametrize("switch_interval", [1e-5], indirect=True)
async def test_a_flush_covers_every_threadsafe_call_that_returned_before_it(
    redis_server: RedisServer, namespace: str, switch_interval: float
) -> None:
    """Three threads set and cancel timers through threadsafe() against a command queue of four; after each call
    that returned, a thread asks the loop for a flush(), and once it returns looks at the server itself (not
    through the handle): the call's effect is there (docs/redis.md: "flush() returns once every command sent
    before it is applied on the server"; a command a thread sent before is one whose call returned). Catches: a
    flush that overtook commands handed over by threads (the inbox, or the outbox and the batch in flight)."""
    import threading

    import redis as sync_redis

    backend = RedisBackend(redis_server.url, namespace=namespace)
    manager, handle = TimerManager.new(namespace, 0.0, 4, 8, backend=backend)
    run = asyncio.ensure_future(manager.run())
    threadsafe = handle.threadsafe()
    loop = asyncio.get_running_loop()
    due = f"{{tm:{namespace}}}:due"
    failures: list[str] = []

    def body(key: str) -> None:
        client = sync_redis.Redis.from_url(redis_server.url)
        try:
            for index in range(40):
                name = f"{key}:{index}"
                threadsafe.set_timer(name, FAR)
                if index % 3 == 2:
                    threadsafe.cancel_timer(name)
                asyncio.run_coroutine_threadsafe(handle.flush(), loop).result(LIMIT)
                present = client.zscore(due, name) is not None
                if present != (index % 3 != 2):
                    failures.append(f"{name}: pending {present} after a flush")
        finally:
            client.close()

    threads = [threading.Thread(target=body, args=(f"t{index}",)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join, LIMIT)
        assert not thread.is_alive(), "a thread hangs"
    assert failures == []
    await _stop(handle, run)


# ---------------------------------------------------------------------- what the stop's settle sends for its callers


async def _manual_receiver(
    url: str, namespace: str, token: CancellationToken, **options: Any
) -> tuple[TimerManager, TimerHandle, asyncio.Task[None], Any]:
    """A manager (ack="manual") that has received one-shot event "x", its receipt mark on the server."""
    backend = RedisBackend(url, namespace=namespace, ack="manual", claim_after=120.0, **options)
    manager, handle = TimerManager.new(namespace, 0, 8, 8, token, backend=backend)
    run = asyncio.ensure_future(manager.run())
    await handle.set_timer("x", 0.0)
    event = await asyncio.wait_for(handle.recv_event(), LIMIT)
    assert event is not None and event.name == "x"
    await asyncio.wait_for(handle.flush(), LIMIT)
    return manager, handle, run, event


@pytest.mark.parametrize("where", ["queued", "sent"])
async def test_an_ack_the_stop_catches_before_the_servers_answer_returns_once_the_settle_has_sent_it(
    redis_server: RedisServer, namespace: str, where: str
) -> None:
    """ack() (ack="manual") has queued its acknowledgement; the manager stops (its token) before the server answered
    the batch that carries it: still queued behind a batch on its way ("queued"), or applied with its answer held
    ("sent"). The stop's settle sends it (as it acknowledges what was received under ack="next"), so the event is
    acknowledged, and the call, which took effect, must return normally; a caller told ManagerClosed cannot retry
    on the closed manager, and would believe the event goes to another consumer. Catches: ack() raising
    ManagerClosed while the settle acknowledged the event."""
    token = CancellationToken()
    manager, handle, run, event = await _manual_receiver(redis_server.url, namespace, token)
    try:
        gate = Gate(link_of(manager))
        gate.close()
        if where == "queued":
            handle.try_set_timer("later", FAR)  # a batch on its way, its answer held: the ack waits behind it
            while not gate.held:
                await asyncio.sleep(0.005)
        task = asyncio.ensure_future(handle.ack(event))
        while not gate.held:
            await asyncio.sleep(0.005)
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()
        token.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), LIMIT)
        await asyncio.wait_for(run, LIMIT)
        async with client_of(redis_server) as client:
            assert await pending_entries(client, namespace) == 0  # the settle acknowledged it
        assert task.result() is None  # ... so the call returned
    finally:
        token.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_an_ack_the_stop_catches_raises_manager_closed_with_no_effect_when_the_settle_cannot_send_it(
    own_redis: RedisServer, namespace: str
) -> None:
    """As above, the acknowledgement queued behind a batch on its way, and the server stalls (SIGSTOP) before the
    stop: the settle cannot send it (it gives up after reconnect_timeout), so the call raises ManagerClosed, and the
    event is still pending once the server is back (another consumer takes it after claim_after)."""
    token = CancellationToken()
    manager, handle, run, event = await _manual_receiver(own_redis.url, namespace, token, reconnect_timeout=0.5)
    try:
        gate = Gate(link_of(manager))
        gate.close()
        handle.try_set_timer("later", FAR)
        while not gate.held:
            await asyncio.sleep(0.005)
        task = asyncio.ensure_future(handle.ack(event))
        for _ in range(5):
            await asyncio.sleep(0)
        own_redis.pause()
        token.cancel()
        (outcome,) = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), LIMIT)
        assert isinstance(outcome, ManagerClosed), outcome
        await asyncio.wait_for(run, LIMIT)
        own_redis.resume()
        async with client_of(own_redis) as client:
            assert await pending_entries(client, namespace) == 1
    finally:
        own_redis.resume()
        token.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_a_receipt_mark_the_stop_catches_on_its_way_is_sent_by_the_settle(
    redis_server: RedisServer, namespace: str
) -> None:
    """ack="manual": one-shot "x" was received and not acknowledged, and the batch carrying its receipt mark is on
    its way when the manager stops (its token) and cut short before the server had it. The event stays pending for
    another consumer, and the timer is not pending: a touch from another manager must do nothing, as locally.
    Catches: the settle sending the acknowledgements and re-arms of the batch the stop cut short, and not its
    marks: the mark never reached the server, and the other manager's touch re-armed the received timer."""
    token = CancellationToken()
    backend = RedisBackend(redis_server.url, namespace=namespace, ack="manual", claim_after=120.0)
    manager, handle = TimerManager.new(namespace, 0, 8, 8, token, backend=backend)
    run = asyncio.ensure_future(manager.run())
    try:
        await asyncio.wait_for(handle.flush(), LIMIT)
        link = link_of(manager)
        send = link._send_batch
        held = asyncio.Event()

        async def stalled(*arguments: Any) -> list[int]:
            if arguments[-1]:  # the marks: this batch never reaches the server
                held.set()
                await asyncio.Event().wait()
            return await send(*arguments)

        link._send_batch = stalled  # type: ignore[method-assign,assignment]
        await handle.set_timer("x", 0.0)
        event = await asyncio.wait_for(handle.recv_event(), LIMIT)
        assert isinstance(event, RedisTimerExpired) and event.name == "x"
        await asyncio.wait_for(held.wait(), LIMIT)
        token.cancel()
        await asyncio.wait_for(run, LIMIT)
        async with client_of(redis_server) as client:
            fired = await client.hget(f"{{tm:{namespace}}}:fired", "x")
        assert fired == b"r" + event.entry.encode(), fired
        other = RedisBackend(redis_server.url, namespace=namespace, claim_after=120.0)
        async with TimerManager.open(f"{namespace}-other", heartbeat_interval=0, backend=other) as toucher:
            toucher.touch("x")
            assert await asyncio.wait_for(toucher.get_deadline("x"), LIMIT) is None
    finally:
        token.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_a_re_arm_the_stop_catches_after_the_server_applied_it_is_not_applied_again(
    redis_server: RedisServer, namespace: str
) -> None:
    """A repeating timer's event was received (ack="next"); the batch carrying its re-arm is applied on the server,
    and its answer is on its way when the manager stops (its token). Meanwhile the timer came round again: promoted,
    its next event is out. The settle sends the batch's re-arm again, since the server may not have it. Applied a
    second time, the timer was due again while its event was out: two events for one tick, and from then on the
    timer ran twice. Catches: a re-arm sent again applied whatever became of its timer since (a re-arm now names its
    event's stream entry, and does nothing once the timer's event is another one)."""
    token = CancellationToken()
    backend = RedisBackend(redis_server.url, namespace=namespace, claim_after=120.0)
    manager, handle = TimerManager.new(namespace, 0, 8, 8, token, backend=backend)
    run = asyncio.ensure_future(manager.run())
    try:
        await asyncio.wait_for(handle.flush(), LIMIT)
        link = link_of(manager)
        send = link._send_batch
        held = asyncio.Event()

        async def holding(*arguments: Any) -> list[int]:
            result = await send(*arguments)
            if arguments[1]:  # the re-arm: applied, its answer held
                held.set()
                await asyncio.Event().wait()
            return result

        link._send_batch = holding  # type: ignore[method-assign,assignment]
        await handle.set_interval("r", 0.3)
        event = await asyncio.wait_for(handle.recv_event(), LIMIT)
        assert isinstance(event, RedisTimerExpired) and event.name == "r"
        await asyncio.wait_for(held.wait(), LIMIT)
        fired_key, due_key = f"{{tm:{namespace}}}:fired", f"{{tm:{namespace}}}:due"
        async with client_of(redis_server) as client:

            async def came_round() -> bool:
                fired = await client.hget(fired_key, "r")
                return fired is not None and fired != event.entry.encode()

            await eventually(came_round, "the timer promoted again")
            token.cancel()
            await asyncio.wait_for(run, LIMIT)
            assert await client.zscore(due_key, "r") is None  # its event is out: not due as well
    finally:
        token.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_an_ack_queued_before_the_manager_ran_raises_manager_closed_when_it_stops_unrun(
    redis_server: RedisServer, namespace: str
) -> None:
    """An ack() queued on a manager that never runs (run()'s coroutine closed unstarted: it stops at once) has no
    settle to send it: it raises ManagerClosed, as every flush then does. Catches: the stop leaving every ack()
    marker to a settle, and this one waiting for ever."""
    backend = RedisBackend(redis_server.url, namespace=namespace, ack="manual")
    manager, handle = TimerManager.new(namespace, 0, 8, 8, backend=backend)
    task = asyncio.ensure_future(handle.ack(make_event("x", 0.0, None, 1, 1, "1-0", False)))
    await asyncio.sleep(0)
    assert not task.done()  # queued, waiting for the server
    manager.run().close()
    with pytest.raises(ManagerClosed):
        await asyncio.wait_for(task, LIMIT)
