"""A stateful property test of the whole manager, in virtual time, against a reference model.

Hypothesis drives random interleavings of sets, resets, cancels, cancel-all, batches (awaitable,
``try_`` and concurrent), clock advances, consumer pauses and resumes, full command and event
queues (buffer sizes 1 to 4), shutdown, token cancellation and cancellation of ``run()``'s task.
The manager runs on a looptime event loop the machine owns (virtual time starting at 0); each rule
runs a short coroutine on it with ``run_until_complete`` and then lets the loop settle at the
current virtual time, so every example is deterministic.

The model is the README's contract and nothing else:

* a dict ``name -> (deadline, sequence, data)`` of every armed timer whose event has not been
  received (fired-but-queued events are still in it: a cancel or re-set retracts them, "No stale
  events"); commands change it in the order they were sent, and a refused call changes nothing;
* with heartbeat ``h`` and run() started at ``origin``, a timer is due once the clock reaches the
  grid tick ``origin + k*h`` at or after its deadline; events come out in ``(deadline, sequence)``
  order;
* with the consumer active, every event is received exactly at that tick (or when the consumer
  resumed, if it was paused then): never earlier, never twice, and nothing due is left once the
  consumer caught up; with the consumer paused, the event queue holds exactly the first
  ``min(event_buffer_size, due)`` due timers, the rest wait in order;
* after a stop, exactly the events queued at that moment are receivable, then ``None``; every
  later command raises ``ManagerClosed``; no caller is left waiting.

All durations, heartbeats and clock steps are multiples of 1/16 s, so every loop time is exact in
binary floating point and the model computes the grid with fractions.

Its size is the Hypothesis profile's (``TIMER_MANAGER_HYPOTHESIS``, see ``conftest.py``): ``ci`` runs 300
examples of up to 30 steps per core, ``thorough`` 5000 of up to 80, for release checks.
"""

from __future__ import annotations

import asyncio
import logging
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from timer_manager import CancellationToken, ManagerClosed, QueueFull, TimerManager

looptime = pytest.importorskip("looptime", reason="virtual time needs looptime (Python >= 3.11)")

pytestmark = pytest.mark.usefixtures("core")

NAMES = ("a", "b", "c", "d", "e", "f")
SIXTEENTH = Fraction(1, 16)
VIRTUAL_LIMIT = 10_000.0  # a rule taking this long in virtual time hangs

names = st.sampled_from(NAMES)
# 0 .. 2.5 s, exact floats; a few values often, so that ties and re-sets of due timers are common.
durations = st.one_of(st.sampled_from([0.0, 0.25, 0.5]), st.integers(0, 40).map(lambda k: k / 16))
steps = st.integers(1, 48).map(lambda k: k / 16)
ops = st.one_of(
    st.tuples(st.just("set"), names, durations, st.booleans()),
    st.tuples(st.just("cancel"), names),
    st.tuples(st.just("sets"), st.lists(st.tuples(names, durations), max_size=4)),
    st.tuples(st.just("cancels"), st.lists(names, max_size=4)),
    st.tuples(st.just("cancel_all")),
)
# Concurrent callers waiting for room each queue their commands from their own task, in separate loop
# iterations; a timer due at once could fire in between, which the model does not predict. Timers not
# due yet keep the rule exact.
later = st.integers(1, 40).map(lambda k: k / 16)
later_ops = st.one_of(
    st.tuples(st.just("set"), names, later, st.booleans()),
    st.tuples(st.just("cancel"), names),
    st.tuples(st.just("sets"), st.lists(st.tuples(names, later), max_size=4)),
    st.tuples(st.just("cancels"), st.lists(names, max_size=4)),
    st.tuples(st.just("cancel_all")),
)


class Entry:
    __slots__ = ("data", "deadline", "name", "seq")

    def __init__(self, name: str, deadline: float, seq: int, data: Any) -> None:
        self.name = name
        self.deadline = deadline
        self.seq = seq
        self.data = data

    def key(self) -> tuple[float, int]:
        return (self.deadline, self.seq)

    def __repr__(self) -> str:
        return f"Entry({self.name!r}, {self.deadline}, seq={self.seq}, data={self.data!r})"


class ManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop: asyncio.AbstractEventLoop = looptime.new_event_loop()
        self.entries: dict[str, Entry] = {}
        self.seq = 0
        self.records: list[tuple[Any, float]] = []
        self.processed = 0
        self.consumer: asyncio.Task[None] | None = None
        self.consumer_ended = False
        self.active = False
        self.active_since = Fraction(0)
        self.stopped = False
        self.run_task: asyncio.Task[None] | None = None
        self.expect_run = "ok"  # how run() must end: "ok" or "cancelled"
        self.senders: list[tuple[asyncio.Task[Any], str]] = []  # (task, "ok" | "ok-or-closed")
        self.started = False

    # ------------------------------------------------------------------ plumbing

    def run(self, coro: Any) -> Any:
        """Run ``coro`` on the machine's loop, then let everything due at this virtual time happen."""

        async def body() -> Any:
            result = await coro
            await self._settle()
            return result

        async def guarded() -> Any:
            try:
                return await asyncio.wait_for(body(), VIRTUAL_LIMIT)
            except asyncio.TimeoutError:
                raise AssertionError("a rule did not finish: some caller hangs") from None

        return self.loop.run_until_complete(guarded())

    async def _settle(self) -> None:
        loop: Any = self.loop
        for _ in range(100_000):
            await asyncio.sleep(0)
            now = loop.time()
            if not loop._ready and not any(not h.cancelled() and h.when() <= now for h in loop._scheduled):
                return
        raise AssertionError("the loop never became idle at this virtual time (a livelock)")

    def now(self) -> float:
        return self.loop.time()

    def grid_floor(self, t: float) -> Fraction:
        t_ = Fraction(t)
        if self.h == 0:
            return t_
        return self.origin + math.floor((t_ - self.origin) / self.h) * self.h

    def grid_ceil(self, deadline: float) -> Fraction:
        d = Fraction(deadline)
        if d <= self.origin:
            return self.origin
        if self.h == 0:
            return d
        return self.origin + math.ceil((d - self.origin) / self.h) * self.h

    def due(self) -> list[Entry]:
        floor = self.grid_floor(self.now())
        return sorted((e for e in self.entries.values() if Fraction(e.deadline) <= floor), key=Entry.key)

    # model updates
    def model_set(self, name: str, deadline: float, data: Any) -> None:
        self.seq += 1
        self.entries[name] = Entry(name, deadline, self.seq, data)

    def model_apply(self, op: tuple[Any, ...], now: float) -> None:
        kind = op[0]
        if kind == "set":
            _, name, d, with_data = op
            self.model_set(name, now + d, self.seq + 1 if with_data else None)
        elif kind == "cancel":
            self.entries.pop(op[1], None)
        elif kind == "sets":
            for name, d in op[1]:
                self.model_set(name, now + d, None)
        elif kind == "cancels":
            for name in op[1]:
                self.entries.pop(name, None)
        else:
            self.entries.clear()

    @staticmethod
    def op_size(op: tuple[Any, ...]) -> int:
        return len(op[1]) if op[0] in ("sets", "cancels") else 1

    def call_try(self, op: tuple[Any, ...]) -> None:
        kind, handle = op[0], self.handle
        if kind == "set":
            _, name, d, with_data = op
            handle.try_set_timer(name, d, data=self.seq + 1 if with_data else None)
        elif kind == "cancel":
            handle.try_cancel_timer(op[1])
        elif kind == "sets":
            handle.try_set_timers(op[1])
        elif kind == "cancels":
            handle.try_cancel_timers(op[1])
        else:
            handle.try_cancel_all_timers()

    def call_await(self, op: tuple[Any, ...], data: Any = None) -> Any:
        kind, handle = op[0], self.handle
        if kind == "set":
            _, name, d, _with_data = op
            return handle.set_timer(name, d, data=data)
        if kind == "cancel":
            return handle.cancel_timer(op[1])
        if kind == "sets":
            return handle.set_timers(op[1])
        if kind == "cancels":
            return handle.cancel_timers(op[1])
        return handle.cancel_all_timers()

    async def consume(self, mode: str, batch: int) -> None:
        handle = self.handle
        while True:
            if mode == "one":
                event = await handle.recv_event()
                events = [] if event is None else [event]
            elif mode == "many":
                events = await handle.recv_events(batch)
            else:
                try:
                    events = [await handle.__anext__()]
                except StopAsyncIteration:
                    events = []
            if not events:
                self.consumer_ended = True
                return
            t = self.loop.time()
            self.records.extend((event, t) for event in events)

    # ------------------------------------------------------------------ set-up

    @initialize(
        heartbeat=st.sampled_from([0, 1 / 16, 1 / 4, 3 / 16, 1]),
        command_size=st.integers(1, 4),
        event_size=st.integers(1, 4),
        start_offset=st.integers(0, 20).map(lambda k: k / 16),
        early=st.lists(st.tuples(names, durations), max_size=5),
        active=st.booleans(),
        mode=st.sampled_from(["one", "many", "iter"]),
    )
    def start(
        self,
        heartbeat: float,
        command_size: int,
        event_size: int,
        start_offset: float,
        early: list[tuple[str, float]],
        active: bool,
        mode: str,
    ) -> None:
        self.h = Fraction(heartbeat)
        self.C, self.E = command_size, event_size
        self.token = CancellationToken()
        self.manager, self.handle = TimerManager.new("model", heartbeat, command_size, event_size, self.token)

        async def before_run() -> None:
            # Sets before run() starts are queued (up to the command buffer) and apply at start.
            now = self.now()
            for i, (name, d) in enumerate(early):
                if i >= command_size:
                    with pytest.raises(QueueFull):
                        self.handle.try_set_timer(name, d)
                else:
                    self.handle.try_set_timer(name, d)
                    self.model_set(name, now + d, None)
            await asyncio.sleep(start_offset)

        self.loop.run_until_complete(before_run())
        self.origin = Fraction(self.now())
        self.run_task = self.loop.create_task(self.manager.run())
        self.started = True
        if active:
            self._resume(mode, 2)
        else:
            self.run(asyncio.sleep(0))

    def _resume(self, mode: str, batch: int) -> None:
        self.active = True
        self.active_since = Fraction(self.now())
        self.consumer_ended = False
        self.consumer = self.loop.create_task(self.consume(mode, batch))
        self.run(asyncio.sleep(0))

    # ------------------------------------------------------------------ rules: commands

    @rule(op=ops)
    def try_one(self, op: tuple[Any, ...]) -> None:
        """One try_ call from a settled state: the command queue is empty, so it never is full."""

        async def go() -> None:
            if self.stopped:
                with pytest.raises(ManagerClosed):
                    self.call_try(op)
                return
            now = self.now()
            if self.op_size(op) > self.C and op[0] in ("sets", "cancels"):
                with pytest.raises(QueueFull):  # all or nothing: it can never fit
                    self.call_try(op)
                return
            self.call_try(op)
            self.model_apply(op, now)

        self.run(go())

    @rule(batch=st.lists(ops, min_size=2, max_size=7))
    def try_burst(self, batch: list[tuple[Any, ...]]) -> None:
        """try_ calls without yielding: the command queue fills; QueueFull is predicted exactly and a
        refused call leaves no trace."""

        async def go() -> None:
            self.queue_without_yielding(batch)

        self.run(go())

    def unqueued(self, op: tuple[Any, ...]) -> bool:
        """Whether ``op`` is a call that queues no command (a subclass's); if so, it has been made and
        checked here, after every queued command was applied."""
        return False

    def queue_without_yielding(self, batch: list[tuple[Any, ...]]) -> None:
        """Make the try_ calls of ``batch`` one after another, on the loop, without yielding: QueueFull
        is predicted exactly and a refused call leaves no trace."""
        now = self.now()
        used = 0
        for op in batch:
            if self.unqueued(op):
                used = 0  # the queued commands were applied first: the queue is empty
                continue
            n = self.op_size(op)
            if self.stopped:
                with pytest.raises(ManagerClosed):
                    self.call_try(op)
                continue
            if op[0] == "set" and used == 0:  # with nothing queued, applied at the call: it takes no place
                self.call_try(op)
                self.model_apply(op, now)
                continue
            full = used >= self.C if op[0] in ("set", "cancel", "cancel_all") else used + n > self.C
            if full:
                with pytest.raises(QueueFull):
                    self.call_try(op)
            else:
                self.call_try(op)
                self.model_apply(op, now)
                used += n

    @rule(batch=st.lists(ops, min_size=1, max_size=5))
    def await_sequence(self, batch: list[tuple[Any, ...]]) -> None:
        """Awaitable calls one after another (a batch larger than the command queue waits for room).

        The loop settles after each call, and the events received are checked then: the consumer
        legitimately receives an event between two awaited calls.
        """

        async def go() -> None:
            for op in batch:
                if self.stopped:
                    with pytest.raises(ManagerClosed):
                        await self.call_await(op)
                    continue
                now = self.now()
                call = self.call_await(op, data=self.seq + 1 if op[0] == "set" and op[3] else None)
                self.model_apply(op, now)
                await call
                await self._settle()
                self.received_events_match_the_model()

        self.run(go())

    @rule(batch=st.lists(later_ops, min_size=2, max_size=8))
    def concurrent_senders(self, batch: list[tuple[Any, ...]]) -> None:
        """Awaitable calls from concurrent tasks: more than the command queue holds; first come,
        first served."""
        if self.stopped:
            return

        async def go() -> None:
            now = self.now()
            tasks = []
            for op in batch:
                data = self.seq + 1 if op[0] == "set" and op[3] else None
                tasks.append(asyncio.ensure_future(self.call_await(op, data=data)))
                self.model_apply(op, now)  # tasks start, and queue, in creation order
            self.senders.extend((task, "ok") for task in tasks)

        self.run(go())

    @rule(wait=st.booleans())
    def flush(self, wait: bool) -> None:
        async def go() -> None:
            if self.stopped:
                with pytest.raises(ManagerClosed):
                    await self.handle.flush()
            else:
                await self.handle.flush()

        self.run(go())

    # ------------------------------------------------------------------ rules: time and consumer

    @rule(dt=steps)
    def advance(self, dt: float) -> None:
        self.run(asyncio.sleep(dt))

    @precondition(lambda self: self.active)
    @rule()
    def pause(self) -> None:
        """Cancel the consumer task, wherever it is (waiting, or just woken): no event may be lost."""
        assert self.consumer is not None
        self.consumer.cancel()
        self.run(asyncio.sleep(0))
        assert self.consumer.done()
        assert self.consumer.cancelled() or self.consumer_ended
        self.active = False

    @precondition(lambda self: not self.active)
    @rule(mode=st.sampled_from(["one", "many", "iter"]), batch=st.integers(1, 5))
    def resume(self, mode: str, batch: int) -> None:
        self._resume(mode, batch)

    # ------------------------------------------------------------------ rules: stopping

    def _model_stop(self) -> None:
        """A stop keeps exactly the events queued at that moment."""
        queued = self.due()[: self.E] if not self.stopped else sorted(self.entries.values(), key=Entry.key)
        self.entries = {e.name: e for e in queued}
        self.stopped = True

    @rule(try_form=st.booleans(), after=st.lists(ops, max_size=3))
    def shutdown(self, try_form: bool, after: list[tuple[Any, ...]]) -> None:
        async def go() -> None:
            if try_form:
                self.handle.try_shutdown()
            else:
                await self.handle.shutdown()
            # From the moment shutdown() is called, every later command raises ManagerClosed.
            for op in after:
                with pytest.raises(ManagerClosed):
                    self.call_try(op)
                with pytest.raises(ManagerClosed):
                    await self.call_await(op)
            # Idempotent.
            self.handle.try_shutdown()
            await self.handle.shutdown()

        was_stopped = self.stopped
        if not was_stopped:
            self._model_stop()
        self.run(go())

    @rule(after=st.lists(ops, max_size=3))
    def cancel_token(self, after: list[tuple[Any, ...]]) -> None:
        """Token cancellation stops the manager with no command or tick needed; commands sent right
        after the cancel, before the manager stopped, are discarded or refused, never applied."""

        async def go() -> None:
            self.token.cancel()
            for op in after:
                try:  # accepted (then discarded), refused as closed, or the queue filled up
                    self.call_try(op)
                except (ManagerClosed, QueueFull):
                    pass

        if not self.stopped:
            self._model_stop()
        self.run(go())

    @precondition(lambda self: not self.stopped)
    @rule()
    def cancel_run(self) -> None:
        assert self.run_task is not None
        self.run_task.cancel()
        self.expect_run = "cancelled"
        self._model_stop()
        self.run(asyncio.sleep(0))

    @precondition(lambda self: not self.stopped)
    @rule(kind=st.sampled_from(["token", "cancel_run", "shutdown"]), extra=st.integers(1, 4))
    def stop_with_waiting_senders(self, kind: str, extra: int) -> None:
        """Stop while senders wait for room in a full command queue: each returns or gets
        ManagerClosed; none hangs. (They cancel names never set, so whether they were applied before
        the stop leaves no trace.)"""

        async def go() -> None:
            # Cancels of names never set: a set with nothing queued would be applied at the call, never waiting.
            tasks = [asyncio.ensure_future(self.handle.cancel_timer(f"w{i}")) for i in range(self.C + extra)]
            if kind == "token":
                self.token.cancel()
                self.senders.extend((task, "ok-or-closed") for task in tasks)
            elif kind == "cancel_run":
                assert self.run_task is not None
                self.run_task.cancel()
                self.expect_run = "cancelled"
                self.senders.extend((task, "ok-or-closed") for task in tasks)
            else:
                shutdown = asyncio.ensure_future(self.handle.shutdown())
                self.senders.extend((task, "ok") for task in [*tasks, shutdown])
            if kind != "shutdown":
                await asyncio.sleep(0)
                # Those beyond the queue's room waited; the stop must release them with ManagerClosed.
                waited = tasks[self.C :]
                await asyncio.gather(*tasks, return_exceptions=True)
                for task in waited:
                    assert isinstance(task.exception(), ManagerClosed), task

        self._model_stop()
        self.run(go())

    # ------------------------------------------------------------------ the checks

    @invariant()
    def received_events_match_the_model(self) -> None:
        if not self.started:
            return
        while self.processed < len(self.records):
            event, t = self.records[self.processed]
            self.processed += 1
            assert self.entries, f"event {event!r} received at {t} but the model expects none"
            expected = min(self.entries.values(), key=Entry.key)
            model = sorted(self.entries.values(), key=Entry.key)
            assert (event.name, event.deadline, event.data) == (expected.name, expected.deadline, expected.data), (
                f"received {event!r} at {t}, expected {expected!r} (model: {model})"
            )
            tick = self.grid_ceil(event.deadline)
            assert Fraction(t) >= tick, f"{event!r} delivered early at {t}, its tick is {tick}"
            if not self.stopped:
                assert Fraction(t) == max(tick, self.active_since), (
                    f"{event!r} received at {t}; expected at {max(tick, self.active_since)}"
                )
            del self.entries[event.name]

    @invariant()
    def state_matches_the_model(self) -> None:
        if not self.started:
            return
        for task, allowed in self.senders:
            assert task.done(), f"a sender still waits: {task!r}"
            if allowed == "ok":
                assert task.exception() is None, task.exception()
            else:
                assert task.exception() is None or isinstance(task.exception(), ManagerClosed), task.exception()
        self.senders.clear()
        stats = self.manager.stats()
        if self.stopped:
            assert self.run_task is not None and self.run_task.done()
            assert stats.live == 0
            assert stats.events_ready == len(self.entries)
            if self.active:
                assert not self.entries, f"events left after the consumer caught up: {self.entries}"
                assert self.consumer_ended and self.consumer is not None and self.consumer.done()
            return
        assert self.run_task is not None and not self.run_task.done()
        due = self.due()
        if self.active:
            assert not due, f"due but not received with the consumer active at {self.now()}: {due}"
            assert stats.events_ready == 0
        else:
            assert stats.events_ready == min(self.E, len(due)), (stats, due)
        queued = {e.name for e in due[: stats.events_ready]}
        assert stats.live == len(self.entries) - len(queued), (stats, self.entries)
        assert self.handle.pending_count() == stats.live
        for name in NAMES:
            entry = self.entries.get(name)
            expected = None if entry is None or name in queued else entry.deadline
            assert self.handle.deadline(name) == expected, (name, entry)
            assert (name in self.handle) == (expected is not None)

    def teardown(self) -> None:
        try:
            if self.started:
                self._finish()
        finally:
            self._close_loop()

    def _finish(self) -> None:
        if not self.stopped:
            self._model_stop()
            self.run(self.handle.shutdown())
        if not self.active:
            self._resume("one", 1)
        self.received_events_match_the_model()
        assert not self.entries, f"never received: {self.entries}"
        self.state_matches_the_model()
        with pytest.raises(ManagerClosed):
            self.handle.try_recv_event()
        assert self.run(self.handle.recv_event()) is None
        assert self.run(self.handle.recv_events(3)) == []
        assert self.run_task is not None
        if self.expect_run == "cancelled":
            assert self.run_task.cancelled()
        else:
            assert self.run_task.result() is None

    def _close_loop(self) -> None:
        loop = self.loop
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def test_manager_matches_the_model(caplog: pytest.LogCaptureFixture) -> None:
    """Each core under the state machine (the ``core`` fixture has already patched it in)."""
    caplog.set_level(logging.CRITICAL, logger="timer_manager")  # the full-queue WARNINGs are expected
    run_state_machine_as_test(ManagerMachine, settings=settings())  # the profile conftest loaded
