"""Feature: repeating timers, ``set_interval(name, period, *, first=None, missed="skip")`` and
``try_set_interval``. Exact deadlines in virtual time (looptime, heartbeat 0, binary-exact periods)."""

from __future__ import annotations

import asyncio
import itertools
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from support import EPS, LOOPTIME, now, recv, running, virtual

from timer_manager import QueueEmpty, QueueFull, TimerHandle, TimerManager

pytestmark = pytest.mark.usefixtures("core")

POLICIES = ("skip", "burst", "delay")


async def expect(handle: TimerHandle, name: str, deadline: float, received_at: float) -> None:
    """Receive the next event: it is ``name``'s for ``deadline``, received at loop time ``received_at``."""
    event = await recv(handle)
    assert event.name == name
    assert abs(event.deadline - deadline) < EPS, (event.deadline, deadline)
    assert abs(now() - received_at) < EPS, (now(), received_at)


@virtual
@pytest.mark.parametrize("missed", POLICIES)
async def test_interval_on_grid_while_the_consumer_keeps_up(missed: str) -> None:
    """A consumer that keeps up gets t0+p, t0+2p, ... under every policy, each at its deadline.
    Catches: first expiry not one period out, a drifting or wrong grid, no re-arming."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_interval("i", 0.5, missed=missed)
        for k in range(1, 7):
            await expect(handle, "i", t0 + 0.5 * k, t0 + 0.5 * k)


@virtual
@pytest.mark.parametrize("missed", POLICIES)
async def test_interval_first_sets_the_grid(missed: str) -> None:
    """first=0.25 with period 1: t0+0.25, t0+1.25, t0+2.25; first=0 fires at once. Catches: ``first``
    ignored, or the grid anchored at the call instead of the first expiry."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1, first=0.25, missed=missed)
        for k in range(3):
            await expect(handle, "i", t0 + 0.25 + k, t0 + 0.25 + k)
        await handle.cancel_timer("i")
        t1 = now()
        handle.try_set_interval("j", 2, first=0, missed=missed)
        await expect(handle, "j", t1, t1)
        await expect(handle, "j", t1 + 2, t1 + 2)


@virtual
async def test_interval_skip_policy_exactly() -> None:
    """ "skip": a slow consumer receives the one waiting event late; the next tick is the next grid point
    strictly after the moment it was received. Received at t0+3.5 -> next t0+4; received exactly at
    the grid point t0+6 -> next t0+7 (as Tokio's Skip). Catches: burst/delay behaviour under "skip",
    a tick at the receive moment itself, more than one waiting event."""
    async with running() as (manager, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1)  # "skip" is the default
        await asyncio.sleep(3.5)
        assert len(handle.try_recv_events(10)) == 1  # only t0+1 waits, though t0+2 and t0+3 passed
        assert manager.stats().fired == 1
        await expect(handle, "i", t0 + 4, t0 + 4)
        await asyncio.sleep(2)  # now t0+6, exactly on the grid; t0+5 waits
        await expect(handle, "i", t0 + 5, t0 + 6)
        await expect(handle, "i", t0 + 7, t0 + 7)
        await expect(handle, "i", t0 + 8, t0 + 8)


@virtual
async def test_interval_burst_policy_exactly() -> None:
    """ "burst": received at t0+3.5, the missed ticks t0+2 and t0+3 come one after another at once, then
    t0+4 on time; still only one event waits at any moment. Catches: skipping missed ticks, re-arming
    from the receive time, queuing several events at once."""
    async with running() as (manager, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1, missed="burst")
        await asyncio.sleep(3.5)
        assert [e.deadline for e in handle.try_recv_events(10)] == [t0 + 1]
        with pytest.raises(QueueEmpty):  # the next one is made ready only after the receipt
            handle.try_recv_event()
        await expect(handle, "i", t0 + 2, t0 + 3.5)
        assert manager.stats().events_ready <= 1
        await expect(handle, "i", t0 + 3, t0 + 3.5)
        await expect(handle, "i", t0 + 4, t0 + 4)
        await expect(handle, "i", t0 + 5, t0 + 5)
        assert manager.stats().event_queue_high_water == 1


@virtual
async def test_interval_delay_policy_exactly() -> None:
    """ "delay": received at t0+3.5, the next tick is one period after that moment (t0+4.5), and the grid
    moves with it. Catches: skip/burst behaviour under "delay"."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1, missed="delay")
        await asyncio.sleep(3.5)
        await expect(handle, "i", t0 + 1, t0 + 3.5)
        await expect(handle, "i", t0 + 4.5, t0 + 4.5)
        await asyncio.sleep(0.25)
        await expect(handle, "i", t0 + 5.5, t0 + 5.5)
        await asyncio.sleep(1.75)  # received at t0+7.25
        await expect(handle, "i", t0 + 6.5, t0 + 7.25)
        await expect(handle, "i", t0 + 8.25, t0 + 8.25)


@virtual
async def test_interval_skip_with_first_keeps_its_grid() -> None:
    """ "skip" with first=0.25, period 1: grid t0+0.25+k; received at t0+2.5 -> next t0+3.25. Catches:
    skip computing its grid from the call time rather than the first expiry."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1, first=0.25, missed="skip")
        await asyncio.sleep(2.5)
        await expect(handle, "i", t0 + 0.25, t0 + 2.5)
        await expect(handle, "i", t0 + 3.25, t0 + 3.25)


@virtual
async def test_interval_never_has_more_than_one_event_waiting() -> None:
    """Three intervals (one per policy) and a consumer asleep for 50 periods: exactly one event each
    waits. Catches: intervals re-arming at fire time instead of at receipt."""
    async with running() as (manager, handle, _task):
        for missed in POLICIES:
            await handle.set_interval(missed, 0.25, missed=missed)
        await asyncio.sleep(12.5)
        stats = manager.stats()
        assert stats.events_ready == 3
        assert stats.fired == 3
        assert sorted(e.name for e in handle.try_recv_events(100)) == sorted(POLICIES)
        assert handle.try_recv_events(100) == []


@virtual
async def test_cancel_stops_an_interval_and_retracts_its_waiting_event() -> None:
    """Cancelling an interval whose event waits retracts that event and no further tick comes.
    Catches: an interval re-armed after cancel, or its stale event delivered."""
    async with running() as (manager, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1)
        await expect(handle, "i", t0 + 1, t0 + 1)
        await asyncio.sleep(1.5)  # t0+2 waits
        await handle.cancel_timer("i")
        await handle.flush()
        await asyncio.sleep(20)
        assert handle.try_recv_events(10) == []
        assert "i" not in handle
        assert manager.stats().retracted == 1


@virtual
async def test_cancel_of_a_pending_interval() -> None:
    """Cancelled before its next tick (after one was received): nothing more. Catches: re-arm surviving
    a cancel."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1)
        await expect(handle, "i", t0 + 1, t0 + 1)
        await handle.cancel_timer("i")
        await asyncio.sleep(20)
        assert handle.try_recv_events(10) == []


@virtual
async def test_reset_with_set_timer_makes_an_interval_one_shot() -> None:
    """A set_timer of an interval's name replaces it with a plain timer: one event, then no more (both
    when its event was received and when it was still waiting). Catches: the interval surviving a
    re-set."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1)
        await expect(handle, "i", t0 + 1, t0 + 1)
        await handle.set_timer("i", 0.25)
        await expect(handle, "i", t0 + 1.25, t0 + 1.25)
        await asyncio.sleep(20)
        assert handle.try_recv_events(10) == []

        t1 = now()
        await handle.set_interval("j", 1)
        await asyncio.sleep(1.5)  # its t1+1 event waits
        await handle.set_timer("j", 0.25)
        # Retraction holds once the set is applied (README); without the flush, whether the manager
        # ran before the receive depends on the Python version's wait_for.
        await handle.flush()
        await expect(handle, "j", t1 + 1.75, t1 + 1.75)
        await asyncio.sleep(20)
        assert handle.try_recv_events(10) == []


@virtual
async def test_reset_with_set_interval_restarts_the_grid() -> None:
    """A new set_interval on an interval's name takes the new period and a grid from the new call.
    Catches: the old period or grid kept."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1)
        await expect(handle, "i", t0 + 1, t0 + 1)
        await asyncio.sleep(0.5)
        await handle.set_interval("i", 0.25, missed="burst")
        t1 = now()
        for k in range(1, 5):
            await expect(handle, "i", t1 + 0.25 * k, t1 + 0.25 * k)


@virtual
async def test_interval_and_one_shot_timers_interleave_in_deadline_order() -> None:
    """An interval's ticks take their place among plain timers by deadline. Catches: re-armed ticks
    jumping the queue."""
    async with running() as (_, handle, _task):
        t0 = now()
        await handle.set_interval("i", 1)
        await handle.set_timers([("x", 1.5), ("y", 2.25)])
        got = [(e.name, e.deadline - t0) for e in [await recv(handle) for _ in range(5)]]
        assert got == [("i", 1), ("x", 1.5), ("i", 2), ("y", 2.25), ("i", 3)]
        await handle.cancel_timer("i")


@pytest.mark.parametrize(
    ("period", "options", "error"),
    [
        (0, {}, ValueError),
        (0.0, {}, ValueError),
        (-1, {}, ValueError),
        (float("nan"), {}, ValueError),
        (float("inf"), {}, ValueError),
        ("1", {}, TypeError),
        (1, {"missed": "Skip"}, ValueError),
        (1, {"missed": "never"}, ValueError),
        (1, {"missed": None}, ValueError),
        (1, {"first": -1}, ValueError),
        (1, {"first": "0"}, TypeError),
    ],
)
async def test_set_interval_refuses_bad_input_at_the_call(
    period: object, options: dict[str, Any], error: type[Exception]
) -> None:
    """period <= 0 (or not finite), an unknown ``missed`` or a bad ``first`` raise at the call, for both
    forms, and queue nothing. Catches: missing validation, or a bad interval queued."""
    manager, handle = TimerManager.new("bad-interval", 0, 1, 4)
    with pytest.raises(error):
        await handle.set_interval("i", period, **options)  # type: ignore[arg-type]
    with pytest.raises(error):
        handle.try_set_interval("i", period, **options)  # type: ignore[arg-type]
    handle.try_set_timer("a", 10)  # the single command place is still free
    with pytest.raises(QueueFull):
        handle.try_set_interval("i", 1)
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert handle.pending_count() == 1
    assert "i" not in handle
    await handle.shutdown()
    await task


async def test_interval_in_real_time() -> None:
    """On every loop, in real time: an interval of 10 ms ticks on its grid. Catches: intervals broken
    on uvloop."""
    async with running(heartbeat=0) as (_, handle, _task):
        t0 = now()
        await handle.set_interval("i", 0.01, missed="burst")
        deadlines = [(await recv(handle, 5)).deadline for _ in range(5)]
        for k, deadline in enumerate(deadlines, 1):
            assert abs(deadline - (t0 + 0.01 * k)) < 0.005
        assert all(b > a for a, b in itertools.pairwise(deadlines))
        await handle.cancel_timer("i")


# ---------------------------------------------------------------------- a model of repeating timers

_NAMES = st.sampled_from(("a", "b", "c"))
_SIXTEENTHS = st.integers(0, 24).map(lambda k: k / 16)
_PERIODS = st.integers(1, 24).map(lambda k: k / 16)


class _Timer:
    """The model's timer: armed at ``(deadline, seq)``, or fired with its event waiting (``ready``)."""

    def __init__(self, deadline: float, seq: int, span: float, missed: str | None = None) -> None:
        self.deadline = deadline
        self.seq = seq
        self.span = span  # a repeating timer's period
        self.missed = missed  # a repeating timer's policy; None for a one-shot
        self.origin = deadline  # a repeating timer's grid
        self.ready = False


class IntervalMachine(RuleBasedStateMachine):
    """Repeating and one-shot timers, resets, touches, cancels and cancel-all, receives one by one, with an event
    queue of 1 to 3, against a model of the guide: a repeating timer re-arms when its event is received (by its
    policy), never has more than one event waiting, stays pending (``in``, ``pending_count()``, ``deadline()``)
    while it does; events come in (deadline, set order), never early, never stale."""

    def __init__(self) -> None:
        super().__init__()
        import looptime

        self.loop: asyncio.AbstractEventLoop = looptime.new_event_loop()
        self.timers: dict[str, _Timer] = {}
        self.queue: list[tuple[str, float]] = []  # the model's ready events, in order
        self.seq = 0
        self.started = False

    def run(self, coro: Any) -> Any:
        async def body() -> Any:
            result = await coro
            for _ in range(10_000):  # settle at this virtual time
                await asyncio.sleep(0)
                loop: Any = self.loop
                t = loop.time()
                if not loop._ready and not any(not h.cancelled() and h.when() <= t for h in loop._scheduled):
                    return result
            raise AssertionError("the loop never became idle (a livelock)")

        return self.loop.run_until_complete(body())

    def now(self) -> float:
        return self.loop.time()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def fire(self) -> None:
        """Move due timers into the model's event queue, in (deadline, seq) order, as far as it has room."""
        t = self.now()
        while len(self.queue) < self.E:
            due = [(timer.deadline, timer.seq, name) for name, timer in self.timers.items() if not timer.ready]
            due = [entry for entry in due if entry[0] <= t]
            if not due:
                return
            deadline, _, name = min(due)
            self.queue.append((name, deadline))
            self.timers[name].ready = True  # a one-shot is no longer pending; a repeating timer is parked

    def retract(self, name: str) -> None:
        self.queue = [entry for entry in self.queue if entry[0] != name]

    @initialize(event_size=st.integers(1, 3))
    def start(self, event_size: int) -> None:
        self.E = event_size
        self.manager, self.handle = TimerManager.new("intervals", 0, 4, event_size, timer_slack=0)
        self.task = self.loop.create_task(self.manager.run())
        self.started = True
        self.run(asyncio.sleep(0))

    @rule(name=_NAMES, duration=_SIXTEENTHS)
    def set_timer(self, name: str, duration: float) -> None:
        self.run(self.handle.set_timer(name, duration))
        self.retract(name)
        self.timers[name] = _Timer(self.now() + duration, self.next_seq(), duration, None)
        self.fire()

    @rule(name=_NAMES, period=_PERIODS, first=st.one_of(st.none(), _SIXTEENTHS), missed=st.sampled_from(POLICIES))
    def set_interval(self, name: str, period: float, first: float | None, missed: str) -> None:
        self.run(self.handle.set_interval(name, period, first=first, missed=missed))
        self.retract(name)
        origin = self.now() + (period if first is None else first)
        self.timers[name] = _Timer(origin, self.next_seq(), period, missed)
        self.fire()

    @rule(name=_NAMES)
    def cancel(self, name: str) -> None:
        self.run(self.handle.cancel_timer(name))
        self.retract(name)
        self.timers.pop(name, None)
        self.fire()

    @rule()
    def cancel_all(self) -> None:
        self.run(self.handle.cancel_all_timers())
        self.queue.clear()
        self.timers.clear()

    @rule(name=_NAMES)
    def touch(self, name: str) -> None:
        timer = self.timers.get(name)
        expected = timer is not None
        assert self.handle.touch(name) is expected
        if timer is not None:
            t = self.now()
            if timer.ready:
                self.retract(name)
                timer.ready = False
            timer.deadline = t + timer.span
            timer.seq = self.next_seq()
            if timer.missed is not None:
                timer.origin = t + timer.span
        self.run(asyncio.sleep(0))
        self.fire()

    @rule(dt=st.integers(1, 40).map(lambda k: k / 16))
    def advance(self, dt: float) -> None:
        # In steps no longer than the shortest span, so that the model's fire() sees each instant the manager does.
        target = self.now() + dt
        while self.now() < target:
            t = self.now()
            pending = [timer.deadline for timer in self.timers.values() if not timer.ready and timer.deadline > t]
            step = min([target, *pending]) - t
            self.run(asyncio.sleep(step))
            self.fire()

    @rule()
    def receive(self) -> None:
        if not self.queue:
            with pytest.raises(QueueEmpty):
                self.handle.try_recv_event()
            return
        event = self.handle.try_recv_event()
        name, deadline = self.queue.pop(0)
        assert (event.name, event.deadline) == (name, deadline), (event, name, deadline)
        assert event.deadline <= self.now()
        timer = self.timers[name]
        t = self.now()
        if timer.missed is None:
            del self.timers[name]
        else:
            origin, period, missed = timer.origin, timer.span, timer.missed
            if missed == "burst":
                timer.deadline = deadline + period
            elif missed == "delay":
                timer.deadline = t + period
            else:
                ticks = (Fraction(t) - Fraction(origin)) // Fraction(period) + 1
                timer.deadline = float(Fraction(origin) + ticks * Fraction(period))
            timer.seq = self.next_seq()
            timer.ready = False
        self.run(asyncio.sleep(0))
        self.fire()

    @invariant()
    def state_matches_the_model(self) -> None:
        if not self.started:
            return
        pending = {name: timer for name, timer in self.timers.items() if not timer.ready or timer.missed is not None}
        assert self.handle.pending_count() == len(pending)
        for name in ("a", "b", "c"):
            timer = pending.get(name)
            assert (name in self.handle) == (timer is not None), name
            assert self.handle.deadline(name) == (None if timer is None else timer.deadline), name
        assert self.manager._runner.engine.ready_count() == len(self.queue)

    def teardown(self) -> None:
        try:
            if self.started:
                self.run(self.handle.shutdown())
                self.run(self.task)
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.close()


@pytest.mark.skipif(not LOOPTIME, reason="virtual time needs looptime (Python >= 3.11)")
def test_repeating_timers_match_the_model() -> None:
    """Each core under the repeating timers' state machine (it found a touch that brought a repeating timer
    forward delivered at its old deadline: test_feature_touch.py)."""
    run_state_machine_as_test(IntervalMachine, settings=settings())
