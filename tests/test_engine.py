"""The engine twins (``_engine_py.Engine`` and the compiled ``Engine`` in ``_core_c``) behave identically."""

from __future__ import annotations

import importlib
import pickle
import sys
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timer_manager import TimerExpired, _env
from timer_manager._engine_py import Engine as PyEngine
from timer_manager._protocol import CANCEL, CANCEL_ALL, FLUSH, SET, SET_INTERVAL, SHUTDOWN, TOUCH, Interval
from timer_manager._table_py import TimerTable as PyTable


def c_module() -> Any:
    if _env.no_extensions():
        pytest.skip("TIMER_MANAGER_NO_EXTENSIONS is set")
    return importlib.import_module("timer_manager._core_c")


def engines(command_capacity: int = 1000, event_capacity: int = 1000) -> list[Any]:
    c = c_module()
    return [
        PyEngine(PyTable(), command_capacity, event_capacity),
        c.Engine(c.TimerTable(), command_capacity, event_capacity),
    ]


def test_the_cython_engine_builds_events_directly() -> None:
    """The fast event construction is in use, and builds exactly what ``TimerExpired(...)`` builds.
    Catches: a layout check that silently disabled the fast path, or a wrong slot offset."""
    c = c_module()
    assert c._builds_events_directly()
    engine = c.Engine(c.TimerTable(), 10, 10)
    engine.push_set("a", 1.5, 0.0, {"k": 1})
    engine.push_set("b", 2.5, 0.0, None)
    engine.apply()
    assert engine.fire(3.0, 3.0) == 2
    first, second = engine.take(), engine.take()
    assert first == TimerExpired("a", 1.5, {"k": 1})
    assert second == TimerExpired("b", 2.5)
    assert repr(second) == "TimerExpired(name='b', deadline=2.5, data=None)"
    assert hash(second) == hash(TimerExpired("b", 2.5))
    assert pickle.loads(pickle.dumps(second)) == second
    assert type(first) is TimerExpired


def test_a_table_that_is_not_exactly_the_c_table_is_driven_through_its_python_methods() -> None:
    """The Cython engine takes any table with the interface (a subclass or a spy) and calls its Python
    methods. Catches: the engine bypassing an overridden ``set``."""
    c = c_module()
    calls: list[str] = []

    class Spy(c.TimerTable):  # type: ignore[misc, name-defined]
        def set_with_span(self, name: str, deadline: float, span: float) -> bool:
            calls.append(name)
            return bool(super().set_with_span(name, deadline, span))

    engine = c.Engine(Spy(), 10, 10)
    engine.push_set("a", 1.0, 0.0, None)
    engine.apply()
    assert calls == ["a"]
    assert engine.fire(2.0, 2.0) == 1
    assert engine.take() == TimerExpired("a", 1.0)


class Marker:
    """A flush's future, as far as the engines use it."""

    def __init__(self) -> None:
        self.result = False

    def done(self) -> bool:
        return self.result

    def set_result(self, _: None) -> None:
        self.result = True


commands = st.lists(
    st.one_of(
        st.tuples(
            st.just(SET),
            st.sampled_from("abcdef"),
            st.one_of(  # a deadline (span 0), or (deadline, span): the span a touch adds to its now
                st.integers(0, 8).map(float),
                st.tuples(st.integers(0, 8).map(float), st.sampled_from([0.0, 1.0, 2.5])),
            ),
            st.sampled_from([None, 1]),
        ),
        st.tuples(
            st.just(SET_INTERVAL),
            st.sampled_from("abcdef"),
            st.tuples(st.integers(0, 8), st.integers(1, 3), st.sampled_from(["skip", "burst", "delay"])),
            st.sampled_from([None, 2]),
        ),
        st.tuples(st.just(CANCEL), st.sampled_from("abcdefg"), st.none(), st.none()),
        st.tuples(st.just(CANCEL_ALL), st.none(), st.none(), st.none()),
        st.tuples(st.just(TOUCH), st.sampled_from("abcdefg"), st.none(), st.none()),
        st.tuples(st.just("touch"), st.sampled_from("abcdefg"), st.none(), st.none()),
        st.tuples(st.just(FLUSH), st.none(), st.none(), st.none()),
        st.tuples(st.just("withdraw"), st.none(), st.integers(0, 5), st.none()),
        st.tuples(st.just("reserve"), st.sampled_from("abcdef"), st.none(), st.none()),
        st.tuples(st.just("fire"), st.none(), st.integers(0, 9).map(float), st.none()),
        st.tuples(st.just("take"), st.none(), st.integers(1, 4), st.none()),
        st.tuples(st.just(SHUTDOWN), st.none(), st.none(), st.none()),
    ),
    max_size=60,
)


def _observe(engine: Any) -> tuple[Any, ...]:
    names = "abcdefg"
    return (
        engine.count_set,
        engine.count_reset,
        engine.count_cancelled,
        engine.count_fired,
        engine.count_retracted,
        engine.ready_count(),
        engine.queued(),
        engine.command_high_water,
        engine.event_high_water,
        len(engine.table),
        engine.table.next_deadline(),
        engine.live_count(),
        engine.parked,
        dict(engine.reserved),
        [engine.is_live(name) for name in names],
        [engine.pending_deadline(name) for name in names],
    )


@given(commands, st.integers(1, 4), st.integers(1, 4))
def test_both_engines_agree_on_every_step(script: list[Any], command_capacity: int, event_capacity: int) -> None:
    """Random sequences of commands (one-shot and repeating sets, cancels, touches at the call and queued,
    flushes, flushes withdrawn (a cancelled caller's), sets counted against max_timers), firings at a moving
    clock and receipts give identical results from both engines:
    queue-full answers, shutdown, events (name, deadline, data, order), retractions, re-arming,
    reservations released, what is pending and its deadlines, counters.
    Catches: any divergence of the Cython engine from its pure-Python reference."""
    twins = engines(command_capacity, event_capacity)
    now = [0.0]
    for engine in twins:
        engine.clock = lambda: now[0]
        reserved = engine.reserved

        def release(name: str, reserved: dict[str, int] = reserved) -> None:
            if reserved.get(name, 0) > 1:
                reserved[name] -= 1
            else:
                reserved.pop(name, None)

        engine.release = release
    markers: list[list[Marker]] = [[], []]  # each engine's flush markers, in the order pushed
    for op, name, value, data in script:
        results = []
        for engine, pushed in zip(twins, markers, strict=True):
            if op == "fire":
                now[0] = max(now[0], value)
                result: Any = (engine.apply(), engine.fire(value, now[0]))
            elif op == "take":
                result = engine.take_many(value)
            elif op == "touch":  # at the call, as TimerHandle.touch with nothing queued
                result = engine.touch(name, now[0])
            elif op == TOUCH:  # a thread's touch, applied in order with the commands
                result = engine.push(op, name, now[0], data)
            elif op == "reserve":
                engine.reserved[name] = engine.reserved.get(name, 0) + 1
                result = engine.push(SET, name, now[0] + 5.0, None)
                if not result:
                    engine.release(name)
            elif op == SET_INTERVAL:
                origin, period, missed = value
                result = engine.push(op, name, Interval(now[0] + origin, float(period), missed), data)
            elif op == FLUSH:
                marker = Marker()
                pushed.append(marker)
                result = engine.push(op, name, marker, data)
            elif op == "withdraw":  # queued, applied, or withdrawn already: each answers whether it took it out
                result = engine.withdraw(pushed[value % len(pushed)]) if pushed else None
            else:
                result = engine.push(op, name, value, data)
            results.append(result)
        assert results[0] == results[1], (op, name, value)
        assert _observe(twins[0]) == _observe(twins[1]), (op, name, value)
        assert [m.done() for m in markers[0]] == [m.done() for m in markers[1]], (op, name, value)
    for engine in twins:
        engine.apply()
    assert _observe(twins[0]) == _observe(twins[1])
    assert [m.done() for m in markers[0]] == [m.done() for m in markers[1]]
    assert twins[0].take_many(100) == twins[1].take_many(100)


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_a_withdrawn_flush_leaves_the_other_commands_in_order(position: str) -> None:
    """A flush marker withdrawn from anywhere in the queue, with the queue wrapped round the end of the compiled
    engine's ring (and grown past it): the commands around it are applied in order, the marker is not resolved,
    and a second withdrawal finds nothing. Catches: the ring shifted the wrong way, a slot lost or doubled, a
    reference leaked or freed twice (the marker's refcount), the pure-Python twin disagreeing."""
    for engine in engines():
        for index in range(50):  # move the ring's head near its end: the queue below wraps round
            engine.push(SET, f"old{index}", 1.0, None)
        engine.apply()
        marker, other = Marker(), Marker()
        names = [f"n{index:02}" for index in range(40 if position != "middle" else 120)]  # 120: the ring grows
        at = {"first": 0, "middle": 60, "last": len(names)}[position]
        for index, name in enumerate(names):
            if index == at:
                engine.push(FLUSH, None, marker, None)
            engine.push(SET, name, 2.0 + index, None)
        if at == len(names):
            engine.push(FLUSH, None, marker, None)
        engine.push(FLUSH, None, other, None)
        before = sys.getrefcount(marker)
        assert engine.queued() == len(names) + 2
        assert engine.withdraw(marker) is True
        assert engine.withdraw(marker) is False
        assert sys.getrefcount(marker) == before - 1
        assert engine.queued() == len(names) + 1
        applied: list[Any] = []

        def log(op: int, name: str | None, value: Any, applied: list[Any] = applied) -> None:
            applied.append(name if op == SET else value)

        engine.apply(log)
        assert applied == [*names, other]
        assert not marker.done() and other.done()
        assert engine.withdraw(other) is False  # applied: nothing to take out


def test_a_touch_at_the_call_reads_the_engines_clock_whichever_it_is() -> None:
    """``touch_now`` takes its now from the engine's clock: a test clock when one is set, ``time.monotonic`` (which
    the compiled engine reads in C) otherwise, and the clock set last. Catches: the compiled engine reading the
    monotonic clock for a clock that is not ``time.monotonic`` (a loop's own, looptime's), or still reading it after
    the clock was replaced; a C reading that is not ``time.monotonic()``'s."""
    for engine in engines():
        engine.applies_at_call = True
        engine.push_set("a", 1.0, 10.0, None)
        engine.apply()
        engine.clock = lambda: 50.0
        assert engine.touch_now("a") is True
        assert engine.pending_deadline("a") == 60.0
        engine.clock = time.monotonic
        assert engine.clock is time.monotonic
        before = time.monotonic()
        assert engine.touch_now("a") is True
        after = time.monotonic()
        assert before + 10.0 <= engine.pending_deadline("a") <= after + 10.0
        engine.clock = lambda: 1e6
        assert engine.touch_now("a") is True
        assert engine.pending_deadline("a") == 1e6 + 10.0


class _ManualClock:
    """A clock whose time is set by hand, read through a bound method (as a loop's ``time()`` is)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.reads = 0

    def time(self) -> float:
        self.reads += 1
        return self.now

    def broken(self) -> float:
        raise RuntimeError("clock failed")

    def whole(self) -> int:
        return 7


def test_a_touch_reads_a_bound_method_clock_as_the_method_would() -> None:
    """A clock that is a bound method (a loop's ``time()``; the compiled engine calls its function with its self in
    C) is read at each touch, through the method last set, with its own result: a raise from it comes out of the
    touch and leaves the timer as it was, and an int is taken as seconds. Catches: the compiled engine calling the
    first bound method's function or self after the clock was replaced, dropping the clock's exception, or a
    conversion that refuses what ``float()`` takes."""
    for engine in engines():
        engine.applies_at_call = True
        engine.push_set("a", 1.0, 10.0, None)
        engine.apply()
        first, second = _ManualClock(100.0), _ManualClock(200.0)
        engine.clock = first.time
        assert engine.touch_now("a") is True
        assert engine.pending_deadline("a") == 110.0
        first.now = 150.0
        assert engine.touch_now("a") is True
        assert engine.pending_deadline("a") == 160.0
        assert first.reads == 2
        engine.clock = second.time
        assert engine.touch_now("a") is True
        assert engine.pending_deadline("a") == 210.0
        assert (first.reads, second.reads) == (2, 1)
        engine.clock = second.broken
        with pytest.raises(RuntimeError, match="clock failed"):
            engine.touch_now("a")
        assert engine.pending_deadline("a") == 210.0
        engine.clock = second.whole
        assert engine.touch_now("a") is True
        assert engine.pending_deadline("a") == 17.0
        engine.clock = [300.0].pop  # a builtin's bound method: no Python function behind it
        assert engine.touch_now("a") is True
        assert engine.pending_deadline("a") == 310.0


def test_a_set_at_the_call_is_applied_only_where_allowed_and_asks_for_one_pass() -> None:
    """``set_now`` applies a set at once only where ``applies_at_call`` is set and nothing is queued, handed over
    or being logged, and asks for a pass only for a deadline before ``wake_for``, once until the runner writes
    ``wake_for`` again (the pass arms for whatever is earliest then). Both engines alike. Catches: a set
    overtaking a queued command, one applied unlogged at DEBUG, a late wake-up left armed, or a pass asked for
    by every set of a burst."""
    for engine in engines():
        wakes: list[int] = []
        engine.wake = lambda wakes=wakes: wakes.append(1)
        assert engine.set_now("a", 1.0, 1.0, None) == 2  # not allowed yet: queued, first
        assert engine.queued() == 1
        engine.apply()
        engine.applies_at_call = True
        engine.wake_for = 5.0  # the runner armed for 5
        assert engine.set_now("b", 9.0, 9.0, "data") == 3  # applied; after the armed wake-up: no pass
        assert engine.queued() == 0 and wakes == []
        assert engine.pending_deadline("b") == 9.0 and engine.data["b"] == "data"
        assert engine.set_now("c", 4.0, 4.0, None) == 3  # before it: a pass is asked for
        assert wakes == [1]
        assert engine.set_now("d", 2.0, 2.0, None) == 3  # the pass already asked for arms for it
        assert wakes == [1]
        engine.push(CANCEL, "b", None, None)
        assert engine.set_now("b", 3.0, 3.0, None) == 1  # behind the queued cancel, in order
        engine.apply()
        assert engine.pending_deadline("b") == 3.0
        engine.handed_over = [object()]
        assert engine.set_now("e", 1.0, 1.0, None) == 2
        engine.apply()
        engine.handed_over = ()
        engine.log_cache, engine.logs_commands = None, lambda: True  # each command logged: queued, logged in apply
        assert engine.set_now("f", 1.0, 1.0, None) == 2
        engine.apply()
        engine.log_cache = {10: True}  # the logger's cache answers first
        engine.logs_commands = lambda: False
        assert engine.set_now("g", 1.0, 1.0, None) == 2
        engine.apply()
        engine.log_cache = {10: False}
        assert engine.set_now("h", 1.0, 1.0, None) == 3
        engine.halted = True  # a token stop is on its way
        assert engine.set_now("i", 1.0, 1.0, None) == 2
        assert (engine.count_set, engine.count_reset) == (9, 0)  # b was cancelled before its second set
