"""Feature: ``touch(name)``: the deadline becomes now + the duration the timer was last set with, with
no command queued and no move in the heap. Table-level tests on both tables (with a model under
Hypothesis), the handle in virtual time, the thread-safe form from threads with a tiny switch
interval, and bad input. The manager-level model check against ``set_timer`` is in
``test_touch_model.py``."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import math
import os
import random
import sys
import threading
import tracemalloc
from collections import deque
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from support import EPS, now, recv, running, virtual

import timer_manager
from timer_manager import ManagerClosed, TimerExpired, TimerManager

pytestmark = pytest.mark.usefixtures("core")


# ---------------------------------------------------------------------- the table


def test_touch_reports_whether_pending_and_moves_the_deadline(table_class: Any) -> None:
    """Catches: a touch that ignores the span, or creates a timer that was not pending."""
    table = table_class()
    table.set_with_span("a", 5.0, 5.0)
    assert table.touch("missing", 1.0) is False
    assert "missing" not in table
    assert table.touch("a", 2.0) is True
    assert table.deadline("a") == 7.0
    assert len(table) == 1


def test_a_touched_timer_stays_in_place_and_is_put_back_once_when_its_old_deadline_comes(table_class: Any) -> None:
    """The heap is not touched: the top still shows the old deadline; when it comes round, the timer is
    put back once, nothing fires, and it fires at the new deadline. Catches: a touch that is lost at
    expiry (the timer fires at its old deadline), or one that moves the entry at once."""
    table = table_class()
    table.set_with_span("a", 5.0, 5.0)
    table.touch("a", 1.0)
    table.touch("a", 2.0)
    assert table.next_deadline() == 5.0  # still in its old place
    assert table.pop_due(5.0, 10) == []
    assert table.reinserted == 1  # two touches, one re-insert
    assert table.next_deadline() == 7.0
    assert table.pop_due(7.0, 10) == [("a", 7.0)]


def test_touches_order_equal_deadlines_as_sets_made_then_would(table_class: Any) -> None:
    """Catches: a put-back timer keeping its old set order instead of its touch's."""
    table = table_class()
    table.set_with_span("a", 5.0, 5.0)
    table.set_with_span("b", 5.0, 5.0)
    table.touch("b", 1.0)
    table.touch("a", 1.0)
    assert table.pop_due(6.0, 10) == [("b", 6.0), ("a", 6.0)]


def test_a_touch_to_an_earlier_deadline_moves_the_timer(table_class: Any) -> None:
    """A clock that went back (a thread's stale now): the new deadline is earlier than the entry's place,
    so it must move now. Catches: only later deadlines being handled."""
    table = table_class()
    table.set_with_span("a", 10.0, 5.0)
    table.set_with_span("b", 8.0, 5.0)
    table.touch("a", 0.0)
    assert table.deadline("a") == 5.0
    assert table.next_deadline() == 5.0
    assert table.pop_due(8.0, 10) == [("a", 5.0), ("b", 8.0)]


def test_settle_makes_next_deadline_exact(table_class: Any) -> None:
    """Catches: settle leaving a touched timer at the top."""
    table = table_class()
    table.set_with_span("a", 1.0, 1.0)
    table.set_with_span("b", 3.0, 1.0)
    table.touch("a", 2.5)
    assert table.next_deadline() == 1.0
    assert table.settle(math.inf) == 1
    assert table.next_deadline() == 3.0
    assert table.settle(math.inf) == 0


def test_spans_and_bad_input(table_class: Any) -> None:
    """Catches: a negative or NaN span accepted, a NaN now accepted."""
    table = table_class()
    with pytest.raises(ValueError, match="span"):
        table.set_with_span("a", 1.0, -1.0)
    with pytest.raises(ValueError, match="span"):
        table.set_with_span("a", 1.0, math.nan)
    table.set("a", 1.0)
    assert table.span("a") == 0.0
    table.set_with_span("a", 1.0, 2.5)
    assert table.span("a") == 2.5
    with pytest.raises(ValueError, match="now must be a number of seconds, got nan"):
        table.touch("a", math.nan)


@pytest.mark.c_extension
def test_touched_timers_keep_their_order_when_sequences_run_out() -> None:
    """The C table renumbers when its 32-bit sequences run out; touched timers must keep the order of their
    touches. Catches: renumbering the heap keys only (a touched timer's latest key compared wrongly)."""
    from timer_manager._core_c import TimerTable

    table = TimerTable()
    table._limit_sequences(8)
    for name in "abcd":
        table.set_with_span(name, 5.0, 5.0)
    for name in "dcba":  # new sequences: renumbering happens in the middle
        table.touch(name, 1.0)
    table.set_with_span("e", 6.0, 5.0)
    assert [name for name, _ in table.pop_due(10.0, 10)] == ["d", "c", "b", "a", "e"]


class TouchModel:
    """What a table with touches must answer: every touch is a set at now + span."""

    def __init__(self) -> None:
        self.timers: dict[str, tuple[float, int, float]] = {}  # name -> (deadline, sequence, span)
        self.sequence = 0

    def set(self, name: str, deadline: float, span: float) -> bool:
        replaced = name in self.timers
        self.timers[name] = (deadline, self.sequence, span)
        self.sequence += 1
        return replaced

    def touch(self, name: str, now: float) -> bool:
        timer = self.timers.get(name)
        if timer is None:
            return False
        self.timers[name] = (now + timer[2], self.sequence, timer[2])
        self.sequence += 1
        return True

    def pop_due(self, now: float, limit: int) -> list[tuple[str, float]]:
        due = sorted((t[0], t[1], name) for name, t in self.timers.items() if t[0] <= now)[:limit]
        for _, _, name in due:
            del self.timers[name]
        return [(name, deadline) for deadline, _, name in due]


quarter = st.integers(0, 8).map(lambda k: k / 4)  # exact floats; ties and touched timers coming due are common


class TouchTables(RuleBasedStateMachine):
    """Both tables (the fixture's and, for the C one, the other as well) against ``TouchModel``."""

    table_class: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.table = self.table_class()
        self.model = TouchModel()
        self.now = 0.0

    @rule(name=st.sampled_from("abcdef"), delay=quarter, span=quarter)
    def set(self, name: str, delay: float, span: float) -> None:
        # Like the engine: deadline = now + span, or an absolute deadline with the span it implies.
        deadline = self.now + delay
        assert self.table.set_with_span(name, deadline, span) == self.model.set(name, deadline, span)

    @rule(name=st.sampled_from("abcdefg"), back=st.sampled_from([0.0, 0.0, 0.0, 0.5]))
    def touch(self, name: str, back: float) -> None:
        now = self.now - back  # now and then a stale now, earlier than the last set
        assert self.table.touch(name, now) == self.model.touch(name, now)

    @rule(step=quarter)
    def advance(self, step: float) -> None:
        self.now += step

    @rule(limit=st.integers(0, 4))
    def pop_due(self, limit: int) -> None:
        assert self.table.pop_due(self.now, limit) == self.model.pop_due(self.now, limit)

    @rule()
    def cancel_one(self) -> None:
        if self.model.timers:
            name = min(self.model.timers)
            assert self.table.cancel(name) is True
            del self.model.timers[name]

    @invariant()
    def agree(self) -> None:
        assert len(self.table) == len(self.model.timers)
        for name in "abcdefg":
            timer = self.model.timers.get(name)
            assert self.table.deadline(name) == (None if timer is None else timer[0])
        earliest = min((t[0] for t in self.model.timers.values()), default=None)
        top = self.table.next_deadline()
        assert (top is None) == (earliest is None)
        if earliest is not None:
            assert top <= earliest  # a lower bound; exact once settled

    @rule()
    def settle(self) -> None:
        """A rule, not part of the invariant: pop_due must meet touched timers that were not settled."""
        self.table.settle(math.inf)
        earliest = min((t[0] for t in self.model.timers.values()), default=None)
        assert self.table.next_deadline() == earliest


def test_tables_with_touches_match_the_model(table_class: Any) -> None:
    TouchTables.table_class = table_class
    run_state_machine_as_test(TouchTables, settings=settings())


def test_touch_state_follows_its_timer_through_growth_cancels_and_compaction(table_class: Any) -> None:
    """The compiled table keeps spans and touches per hash slot: a cancel's back-shift moves slots, and
    growth and compaction rebuild them. Hundreds of timers, set with a few spans, touched, cancelled and
    expired at random, against the model. Catches: a touch or a span left behind in a slot its timer
    left (a timer firing at its old deadline, or taking another's span)."""
    rng = random.Random(17)
    table = table_class()
    model = TouchModel()
    clock = 0.0
    names = [f"conn:{i}" for i in range(600)]
    for step in range(20000):
        name = rng.choice(names)
        action = rng.random()
        if action < 0.35:
            span = rng.choice([1.0, 2.0, 3.5])
            assert table.set_with_span(name, clock + span, span) == model.set(name, clock + span, span)
        elif action < 0.75:
            assert table.touch(name, clock) == model.touch(name, clock)
        elif action < 0.85:
            assert table.cancel(name) == (model.timers.pop(name, None) is not None)
        else:
            clock += rng.choice([0.25, 0.5, 1.0])
            limit = rng.randint(1, 200)
            assert table.pop_due(clock, limit) == model.pop_due(clock, limit)
        if step % 500 == 0:
            for check in names:
                timer = model.timers.get(check)
                assert table.deadline(check) == (None if timer is None else timer[0])
                assert table.span(check) == (None if timer is None else timer[2])
    assert len(table) == len(model.timers)


def test_timers_never_touched_cost_no_memory_for_touches(table_class: Any) -> None:
    """Spans are kept per timer only once two differ, and touch state only from the first touch. Catches:
    an array allocated for every table (memory for users who never touch)."""

    def traced(build: Any) -> int:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            kept = build()
            size = tracemalloc.get_traced_memory()[0] - base
            del kept
            return size
        finally:
            tracemalloc.stop()

    names = [f"n{i}" for i in range(5000)]

    def filled(spans: list[float], touches: int) -> Any:
        table = table_class()
        for i, name in enumerate(names):
            table.set_with_span(name, 10.0 + i, spans[i % len(spans)])
        for name in names[:touches]:
            table.touch(name, 1.0)
        return table

    plain = traced(lambda: filled([0.0], 0))
    per_timer = 8 * len(names)  # what a span or a touch kept per timer would at least take
    assert abs(traced(lambda: filled([2.0], 0)) - plain) < per_timer / 4  # allocator noise only
    assert traced(lambda: filled([1.0, 2.0], 0)) > plain + per_timer
    assert traced(lambda: filled([2.0], len(names))) > plain + per_timer


# ---------------------------------------------------------------------- the handle, in virtual time


@virtual
async def test_touch_needs_no_command_and_keeps_the_timer_alive() -> None:
    """Catches: a touch that queues a command (the usual case must not), or does not delay the expiry."""
    async with running(heartbeat=0) as (manager, handle, _):
        handle.try_set_timer("conn", 2.0, data="peer")
        await asyncio.sleep(0)
        start = now()
        for _ in range(10):
            await asyncio.sleep(1.0)
            assert handle.touch("conn") is True
            assert manager._runner.engine.queued() == 0
        assert handle.deadline("conn") == pytest.approx(start + 12.0)
        assert handle.next_deadline() == pytest.approx(start + 12.0)  # exact, though the heap holds an older one
        event = await recv(handle)
        assert event == TimerExpired("conn", start + 12.0, "peer")
        assert now() == pytest.approx(start + 12.0)
        assert manager.stats().fired == 1


def test_the_engines_touch_at_the_call_only_when_nothing_may_come_first(core: Any) -> None:
    """``touch_now`` is the handle's whole hot path: it touches at the call only while the runner allows it
    (``applies_at_call``), no command is queued or handed over by another thread, and the name is an exact str;
    otherwise it answers None and changes nothing. Catches: a touch that overtakes a queued or handed-over
    command, one applied while the runner forbids it (closing, unbound, debug), or a str subclass taken
    unchecked."""
    engine = core.Engine(core.TimerTable(), 8, 8)
    engine.clock = lambda: 10.0
    engine.push_set("a", 11.0, 1.0, None)
    engine.apply()
    assert engine.touch_now("a") is None  # applies_at_call starts False: the runner allows it once bound
    engine.applies_at_call = True
    assert engine.touch_now("a") is True
    assert engine.touch_now("missing") is False
    assert engine.pending_deadline("a") == 11.0

    class Name(str):
        pass

    engine.clock = lambda: 20.0
    assert engine.touch_now(Name("a")) is None
    engine.handed_over = [("a command", "from a thread")]
    assert engine.touch_now("a") is None
    engine.handed_over = deque([("a command", "from a thread")])  # the runner's inbox (its length is read off it)
    assert engine.touch_now("a") is None
    engine.handed_over = deque()
    assert engine.touch_now("a") is True
    engine.clock = lambda: 10.0  # back to the deadline it had
    assert engine.touch_now("a") is True
    engine.clock = lambda: 20.0
    engine.handed_over = []
    engine.push_set("b", 30.0, 1.0, None)
    assert engine.touch_now("a") is None
    engine.applies_at_call = False
    engine.apply()
    assert engine.touch_now("a") is None
    assert engine.pending_deadline("a") == 11.0  # none of those touched it
    engine.applies_at_call = True
    assert engine.touch_now("a") is True
    assert engine.pending_deadline("a") == 21.0


@virtual
async def test_a_touch_at_the_call_runs_no_python_code_of_the_library(core: Any) -> None:
    """On the compiled core a touch at the call is C from the caller's call to the timer's touch record: no Python
    frame of the library runs (a profiler sees none). On the pure-Python core only the engine's and the table's run,
    never the handle's (unless the extension is missing, when the pure twin of the handle's core runs too).
    Catches: a Python frame back on the hot path of idle timeouts (``TimerHandle.touch`` written in Python again)."""
    import timer_manager._core as selected

    package = os.path.dirname(timer_manager.__file__)
    expected: set[str] = set() if core.kind == "c" else {"_engine_py.py", "_table_py.py"}
    if selected.HandleCore.__module__ == "timer_manager._handle_core_py":
        expected.add("_handle_core_py.py")
    async with running(heartbeat=0) as (_, handle, _):
        handle.try_set_timer("conn", 2.0)
        await asyncio.sleep(0.5)
        frames: list[str] = []

        def profile(frame: Any, event: str, _: Any) -> None:
            if event == "call" and frame.f_code.co_filename.startswith(package):
                frames.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}")

        sys.setprofile(profile)
        try:
            touched = handle.touch("conn")
        finally:
            sys.setprofile(None)
        assert touched is True
        assert handle.deadline("conn") == pytest.approx(now() + 2.0)
        assert {frame.split(":")[0] for frame in frames} <= expected, frames
        if core.kind == "c":
            assert frames == []


def test_both_handle_cores_answer_for_the_engine_and_else_touch_in_order(core: Any) -> None:
    """``HandleCore.touch`` (compiled, and its pure twin) returns the engine's answer to ``touch_now`` and takes the
    subclass's ordered path where it answers None. The compiled one asks its own engine in C and any other engine
    (the pure one, Redis's) through ``touch_now``. Catches: an answer of the wrong engine, a touch that skips the
    ordered path when the engine may not touch at the call, or one that takes it (and queues) when it may."""
    base: type[Any] = importlib.import_module(
        "timer_manager._core_c" if core.kind == "c" else "timer_manager._handle_core_py"
    ).HandleCore

    class Handle(base):  # type: ignore[misc]
        __slots__ = ("ordered",)

        def __init__(self, engine: Any) -> None:
            self.ordered: list[str] = []
            self._use_engine(engine)

        def _touch_in_order(self, name: str) -> bool:
            self.ordered.append(name)
            return False

    class Answers:
        def __init__(self, answer: bool | None) -> None:
            self.answer = answer

        def touch_now(self, name: str) -> bool | None:
            return self.answer

    for answer in (True, False):
        handle = Handle(Answers(answer))
        assert handle.touch("a") is answer
        assert handle.ordered == []
    handle = Handle(Answers(None))
    assert handle.touch("a") is False
    assert handle.ordered == ["a"]

    engines = [core.Engine]
    if core.kind == "c":
        from timer_manager._engine_py import Engine as PureEngine

        engines.append(PureEngine)
    for engine_class in engines:
        engine = engine_class(core.TimerTable(), 8, 8)
        engine.clock = lambda: 10.0
        engine.push_set("a", 11.0, 1.0, None)
        engine.apply()
        handle = Handle(engine)
        assert handle.touch("a") is False  # applies_at_call not set: the ordered path
        assert handle.ordered == ["a"]
        engine.applies_at_call = True
        assert handle.touch("a") is True
        assert handle.touch("missing") is False
        assert handle.ordered == ["a"]
        assert engine.pending_deadline("a") == 11.0
        engine.push_set("b", 30.0, 1.0, None)  # queued: it comes first
        assert handle.touch("a") is False
        assert handle.ordered == ["a", "a"]


@pytest.mark.c_extension
def test_the_two_handle_cores_say_the_same_of_touch() -> None:
    """``TimerHandle.touch``'s documentation lives in both twins of the handle's core, and both give ``inspect`` the
    same parameters; whichever is live, a reader (or ``create_autospec``) gets the same. Catches: one twin's docstring
    edited and not the other, or a compiled touch whose signature ``inspect`` cannot read."""
    from timer_manager._core_c import HandleCore as Compiled
    from timer_manager._handle_core_py import HandleCore as Pure

    assert inspect.getdoc(Compiled.touch) == inspect.getdoc(Pure.touch)
    assert list(inspect.signature(Compiled.touch).parameters) == list(inspect.signature(Pure.touch).parameters)
    assert list(inspect.signature(TimerManager.new("a", 0, 4, 4)[1].touch).parameters) == ["name"]


@pytest.mark.c_extension
def test_the_handle_has_the_compiled_touch_as_a_method_of_its_own() -> None:
    """CPython specialises a call of a C method only where the object's type is exactly the method's own, so
    ``TimerHandle`` gets the compiled ``touch`` as its own method (``adopt_touch``): the same C function, with the
    same documentation and signature. Catches: the adoption dropped (every touch then takes the generic call, which
    checks the subclass), or a descriptor made of another method."""
    from timer_manager._core_c import HandleCore as Compiled
    from timer_manager.handle import TimerHandle

    own = TimerHandle.__dict__["touch"]
    assert type(own) is type(Compiled.__dict__["touch"])
    assert own.__objclass__ is TimerHandle
    assert inspect.getdoc(own) == inspect.getdoc(Compiled.touch)
    assert inspect.signature(own) == inspect.signature(Compiled.touch)


@pytest.mark.parametrize("twin", ["_core_c", "_handle_core_py"])
def test_adopt_touch_takes_only_subclasses_of_the_handle_core(twin: str) -> None:
    """A compiled method called on an object of another layout would read the wrong memory. Catches: an adoption
    that accepts any class (or an instance)."""
    if twin == "_core_c" and timer_manager._env.no_extensions():
        pytest.skip("the compiled core is not under test")
    module = importlib.import_module(f"timer_manager.{twin}")
    for wrong in (int, type("Unrelated", (), {}), module.HandleCore()):
        with pytest.raises(TypeError, match="subclass of HandleCore"):
            module.adopt_touch(wrong)


async def test_the_runner_allows_a_touch_or_set_at_the_call_only_while_running_open_and_not_in_debug_mode(
    core: Any,
) -> None:
    """Catches: ``applies_at_call`` set before ``run()`` (a set would not wait for the manager to start), left set
    once the manager closes (a touch after shutdown would act instead of raising ManagerClosed), not set again
    when a shutdown is cancelled before it was queued, or set on a debug loop (where every call checks its
    thread)."""
    from timer_manager import TimerManager

    manager, handle = TimerManager.new("gate", 0.0, 1, 8)
    runner = manager._runner
    engine = runner.engine
    assert engine.applies_at_call is False  # not bound yet
    handle.try_set_timer("a", 10.0)
    assert engine.applies_at_call is False  # bound, not running: the set waits for run()
    assert engine.queued() == 1
    assert engine.handed_over is runner.inbox.commands
    assert handle.touch("a") is True  # the ordered path: the set applied first
    task = asyncio.create_task(manager.run())
    await handle.flush()
    assert engine.applies_at_call is True
    service = runner.service
    runner.service = lambda: setattr(runner, "service_soon", False)
    try:
        handle.try_cancel_timer("x")  # the queue of one is full, and the manager gets no turn
        shutdown = asyncio.ensure_future(handle.shutdown())  # no room: it waits, and the manager is closing
        await asyncio.sleep(0)
        assert engine.applies_at_call is False
        with pytest.raises(ManagerClosed):
            handle.touch("a")
        with pytest.raises(ManagerClosed):
            handle.try_set_timer("a", 1.0)
        shutdown.cancel()
        with pytest.raises(asyncio.CancelledError):
            await shutdown
        assert engine.applies_at_call is True
    finally:
        runner.service = service
    assert handle.touch("a") is True
    await handle.shutdown()
    await task
    assert engine.applies_at_call is False
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    try:
        debug_manager, debug_handle = TimerManager.new("debug", 0.0, 8, 8)
        debug_task = asyncio.create_task(debug_manager.run())
        await debug_handle.set_timer("a", 10.0)
        assert debug_manager._runner.engine.applies_at_call is False
        assert debug_manager._runner.engine.queued() == 1  # queued, not applied at the call
        assert debug_handle.touch("a") is True  # the ordered path, with its thread check
        await debug_handle.shutdown()
        await debug_task
    finally:
        loop.set_debug(False)


def test_settle_ahead_puts_back_touched_timers_due_within_a_share_of_their_span(table_class: Any) -> None:
    """Catches: ``ahead`` ignored (the manager woken for a touched timer at each of their old deadlines),
    or applied to a timer nobody touched."""
    table = table_class()
    table.set_with_span("touched", 1.0, 1.0)
    table.set_with_span("plain", 1.05, 1.0)
    table.touch("touched", 0.5)
    assert table.settle(0.8, 0.125) == 0  # 1.0 > 0.8 + 0.125
    assert table.settle(0.9, 0.125) == 1
    assert table.next_deadline() == 1.05  # the untouched one stays where it is
    assert table.settle(0.95, 0.125) == 0


@virtual
async def test_touched_timers_do_not_wake_the_manager_at_each_old_deadline() -> None:
    """A server's connections, touched all the time: their old deadlines are spread over the heap, and each
    would wake the manager (a heartbeat tick's wake-up) to put one timer back. Catches: a pass that puts
    back only what is due now, so that the manager wakes about once per heartbeat tick."""
    async with running(heartbeat=0.01) as (manager, handle, _):
        runner = manager._runner
        wakeups = 0
        on_timer = runner.on_timer

        def counting() -> None:
            nonlocal wakeups
            wakeups += 1
            on_timer()

        runner.on_timer = counting  # type: ignore[method-assign]
        names = [f"conn:{i}" for i in range(100)]
        for name in names:  # deadlines spread over half a span
            handle.try_set_timer(name, 1.0)
            await asyncio.sleep(0.005)
        for _ in range(60):  # 3 s of activity on every connection
            await asyncio.sleep(0.05)
            assert handle.touch_many(names) == len(names)
        assert wakeups <= 40  # about 8 per span at most (at each heartbeat tick an old deadline falls in: 150)
        assert manager.stats().fired == 0


@virtual
async def test_a_touch_acts_after_the_commands_queued_before_it() -> None:
    """Catches: a touch acting on the table before queued commands were applied (it would miss a timer
    set just before, or revive one cancelled just before)."""
    async with running(heartbeat=0) as (_, handle, _task):
        handle.try_set_timer("new", 1.0)
        assert handle.touch("new") is True  # the queued set was applied first
        handle.try_set_timer("old", 1.0)
        await asyncio.sleep(0)
        handle.try_cancel_timer("old")
        assert handle.touch("old") is False
        assert handle.touch_many(["new", "old", "none"]) == 1
        assert "old" not in handle


@virtual
async def test_a_touch_retracts_an_event_not_yet_received_and_rearms_it() -> None:
    """As a set would: the fired event is withdrawn, the timer is armed again with its payload.
    Catches: a stale event received after the touch, a lost payload, a timer not re-armed."""
    async with running(heartbeat=0) as (manager, handle, _):
        await handle.set_timer("conn", 1.0, data={"peer": 1})
        await asyncio.sleep(1.5)  # fired, nobody received it
        assert manager.stats().events_ready == 1
        touched_at = now()
        assert handle.touch("conn") is True
        assert manager.stats().events_ready == 0
        assert manager.stats().retracted == 1
        event = await recv(handle)
        assert event == TimerExpired("conn", touched_at + 1.0, {"peer": 1})


@virtual
async def test_touch_uses_the_duration_of_the_last_set() -> None:
    """set_timer, set_timers, set_timer_at (when - now), and a re-set's new duration. Catches: a span
    kept from an earlier set, or none for the other set calls."""
    async with running(heartbeat=0) as (_, handle, _task):
        await handle.set_timer("a", 5.0)
        await handle.set_timer("a", 2.0)
        await handle.set_timers([("b", 3.0)])
        await handle.set_timer_at("c", now() + 4.0)
        await asyncio.sleep(1.0)
        t = now()
        assert handle.touch_many(["a", "b", "c"]) == 3
        assert [handle.deadline(name) for name in "abc"] == pytest.approx([t + 2.0, t + 3.0, t + 4.0], abs=EPS)


@virtual
async def test_touching_a_repeating_timer_restarts_its_grid() -> None:
    """Catches: a touch that moves the next tick but leaves the grid where it was."""
    async with running(heartbeat=0) as (_, handle, _task):
        await handle.set_interval("tick", 1.0)
        await asyncio.sleep(0.5)
        t = now()
        assert handle.touch("tick") is True
        first = await recv(handle)
        second = await recv(handle)
        assert (first.deadline, second.deadline) == pytest.approx((t + 1.0, t + 2.0), abs=EPS)


@virtual
@pytest.mark.parametrize("caller", ["touch", "touch_many", "thread"])
async def test_a_touch_that_brings_a_repeating_timer_forward_wakes_the_manager_for_it(caller: str) -> None:
    """``set_interval(name, 1.0, first=10.0)``, then a touch: the next tick is now + the period, 9 s earlier than
    the timer's place in the heap, so the table moves it (a set). At the call nothing queues a command, so the
    engine must ask the manager to re-arm its wake-up, which was for the old deadline. Catches: the event
    delivered 9 s late, at the first tick (only a thread's touch, applied in a pass, re-armed it)."""
    async with running(heartbeat=0) as (_, handle, _task):
        await handle.set_interval("tick", 1.0, first=10.0)
        await handle.flush()
        await asyncio.sleep(0.5)
        t = now()
        if caller == "touch":
            assert handle.touch("tick") is True
        elif caller == "touch_many":
            assert handle.touch_many(["tick"]) == 1
        else:
            await asyncio.to_thread(handle.threadsafe().touch, "tick")
            await handle.flush()
            deadline = handle.deadline("tick")
            assert deadline is not None
            t = deadline - 1.0  # the thread's now
        assert handle.deadline("tick") == pytest.approx(t + 1.0, abs=EPS)
        event = await recv(handle, 5.0)
        assert event.deadline == pytest.approx(t + 1.0, abs=EPS)
        assert now() == pytest.approx(t + 1.0, abs=EPS)  # delivered at its deadline, not at the old one


async def test_bad_input_is_refused_at_the_call() -> None:
    async with running() as (_, handle, _task):
        handle.try_set_timer("a", 10.0)
        with pytest.raises(TypeError, match="name"):
            handle.touch(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="single str"):
            handle.touch_many("abc")
        before = handle.deadline("a")
        with pytest.raises(TypeError, match="name"):
            handle.touch_many(["a", 5])  # type: ignore[list-item]
        assert handle.deadline("a") == before  # nothing touched: all names are checked first
        threadsafe = handle.threadsafe()
        with pytest.raises(RuntimeError, match="other threads"):
            threadsafe.touch("a")
        with pytest.raises(TypeError, match="single str"):
            await asyncio.to_thread(threadsafe.touch_many, "abc")
        with pytest.raises(TypeError, match="name"):
            await asyncio.to_thread(threadsafe.try_touch, 5)  # type: ignore[arg-type]


async def test_touch_after_shutdown_raises_manager_closed() -> None:
    async with running() as (_, handle, task):
        await handle.shutdown()
        await task
        with pytest.raises(ManagerClosed):
            handle.touch("a")
        with pytest.raises(ManagerClosed):
            handle.touch_many(["a"])


# ---------------------------------------------------------------------- threads


@pytest.mark.parametrize("switch_interval", [1e-5, 1e-3], indirect=True)
async def test_threads_keep_timers_alive_and_their_touches_apply_in_order(switch_interval: float) -> None:
    """Threads touch their own timers over and over, in order with their sets and cancels, while the loop
    touches too. None fires while touched; a thread's cancel after its touches leaves the timer
    cancelled (never revived by a touch queued before it); untouched timers fire. Catches: a thread's
    touch applied out of order with its other commands, touches that do not delay, a lost touch."""
    # Every timer is touched far more often than its span: the loop every 0.15 s, the threads all the time. The span
    # leaves room for the pauses of a loaded machine; the activity lasts longer than it, so a touch that does not
    # delay still lets timers fire.
    span = 1.0
    async with running(heartbeat=0.01, commands=16) as (manager, handle, _task):
        threadsafe = handle.threadsafe()
        stop = threading.Event()
        errors: list[BaseException] = []

        def worker(index: int) -> None:
            try:
                names = [f"t{index}-{k}" for k in range(4)]
                threadsafe.set_timers([(name, span) for name in names])
                while not stop.is_set():
                    threadsafe.touch_many(names, timeout=5)
                    threadsafe.touch(names[0], timeout=5)
                threadsafe.touch(names[1], timeout=5)
                threadsafe.cancel_timer(names[1], timeout=5)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        handle.try_set_timer("loop-side", span)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        fired: list[str] = []
        for _ in range(10):  # 1.5 spans of activity, the loop's own touches among them
            await asyncio.sleep(0.15)
            handle.touch("loop-side")
            fired.extend(event.name for event in handle.try_recv_events(100))
        stop.set()

        def join() -> None:
            for thread in threads:
                thread.join(10)

        await asyncio.to_thread(join)
        assert not errors, errors
        assert fired == [], f"fired while touched: {fired}"
        await handle.flush()
        expected = {f"t{i}-{k}" for i in range(3) for k in (0, 2, 3)} | {"loop-side"}
        seen: set[str] = set()
        while seen != expected:
            event = await recv(handle, 10)
            assert event.name in expected, event
            seen.add(event.name)
        assert manager.stats().live == 0


class _TouchOnRecord(logging.Handler):
    """A DEBUG handler that touches ``name`` when it sees the record of the set of ``name``."""

    def __init__(self, handle: object, name: str, many: bool) -> None:
        super().__init__(logging.DEBUG)
        self.timers = handle
        self.name = name
        self.many = many
        self.touched_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.touched_at is None and f": set {self.name!r}" in record.getMessage():
            self.touched_at = now()
            if self.many:
                self.timers.touch_many([self.name])  # type: ignore[attr-defined]
            else:
                self.timers.touch(self.name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("many", [False, True], ids=["touch", "touch_many"])
@virtual
async def test_a_touch_from_a_debug_log_handler_acts_after_the_command_being_applied(many: bool) -> None:
    """A DEBUG log handler touches "a" while the manager applies the set of "a" (the last queued command).
    The set was sent before the touch, so the touch must act on the state it leaves (design.md: inside the
    engine's own pass a touch is queued as a TOUCH command). Catches: a touch applied at the call there,
    before the set it follows: its effect is then overwritten by that set."""
    manager, handle = TimerManager.new("logged-touch", 0, 8, 8)
    handle.try_set_timer("a", 5.0)  # due at t0 + 5; applied when run() starts
    t0 = now()
    await asyncio.sleep(3.0)
    logger = logging.getLogger("timer_manager")
    handler = _TouchOnRecord(handle, "a", many)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        task = asyncio.create_task(manager.run())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert handler.touched_at == pytest.approx(t0 + 3.0)
    await handle.flush()
    # set (due t0 + 5, span 5), then touch at t0 + 3: due t0 + 8
    assert handle.deadline("a") == pytest.approx(t0 + 8.0, abs=EPS)
    await handle.shutdown()
    await task
