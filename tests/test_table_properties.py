"""Differential test: the Cython and the pure-Python table, and a trivially correct model, agree.

Every step of a random operation sequence is applied to both tables and to ``Model`` (a dict and
a sort); all three must give identical results. The run's size is the Hypothesis profile's
(``TIMER_MANAGER_HYPOTHESIS``, see ``conftest.py``): ``thorough`` runs many more examples than ``ci``.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from timer_manager._table_py import TimerTable as PyTable


class Model:
    """What the tables must do, written the obvious way."""

    def __init__(self) -> None:
        self.timers: dict[str, tuple[float, int, str]] = {}
        self.sequence = 0

    def set(self, name: str, deadline: float) -> bool:
        replaced = name in self.timers
        self.timers[name] = (deadline, self.sequence, name)
        self.sequence += 1
        return replaced

    def cancel(self, name: str) -> bool:
        return self.timers.pop(name, None) is not None

    def clear(self) -> int:
        count = len(self.timers)
        self.timers.clear()
        return count

    def pop_due(self, now: float, limit: int) -> list[tuple[str, float]]:
        due = sorted(t for t in self.timers.values() if t[0] <= now)[: max(limit, 0)]
        for _, _, name in due:
            del self.timers[name]
        return [(name, deadline) for deadline, _, name in due]

    def next_deadline(self) -> float | None:
        return min((t[0] for t in self.timers.values()), default=None)

    def deadline(self, name: str) -> float | None:
        timer = self.timers.get(name)
        return None if timer is None else timer[0]

    def __len__(self) -> int:
        return len(self.timers)

    def __contains__(self, name: object) -> bool:
        return name in self.timers


# Few names and few distinct deadlines, so that resets and ties are the common case.
names = st.sampled_from([f"n{i}" for i in range(12)])
deadlines = st.one_of(
    st.integers(-3, 12).map(float),
    st.floats(allow_nan=False, min_value=-20.0, max_value=20.0),
    st.sampled_from([float("inf"), -float("inf"), sys.float_info.max, -sys.float_info.max, 1e15]),
)
nows = st.one_of(st.integers(-4, 14).map(float), st.floats(allow_nan=False))
limits = st.one_of(st.integers(-1, 4), st.just(sys.maxsize))


class TablesAgree(RuleBasedStateMachine):
    """Model first; then the table under test; then the pure table when that is not it."""

    table_class: Any = PyTable

    def __init__(self) -> None:
        super().__init__()
        self.subjects: list[Any] = [Model(), self.table_class()]
        if self.table_class is not PyTable:
            self.subjects.append(PyTable())

    def _same(self, method: str, *args: Any) -> Any:
        results = [getattr(subject, method)(*args) for subject in self.subjects]
        for subject, result in zip(self.subjects[1:], results[1:], strict=False):
            assert result == results[0], (type(subject).__module__, method, args, result, results[0])
            if isinstance(result, list):  # the same name objects, not just equal ones
                assert [type(n) for n, _ in result] == [type(n) for n, _ in results[0]]
        return results[0]

    @rule(name=names, deadline=deadlines)
    def set(self, name: str, deadline: float) -> None:
        # A fresh object each time: the tables must return the most recent one.
        self._same("set", "".join(name), deadline)

    @rule(name=names)
    def cancel(self, name: str) -> None:
        self._same("cancel", name)

    @rule(now=nows, limit=limits)
    def pop_due(self, now: float, limit: int) -> None:
        due = self._same("pop_due", now, limit)
        assert all(deadline <= now for _, deadline in due)

    @precondition(lambda self: len(self.subjects[0]) > 0)
    @rule()
    def pop_one_each(self) -> None:
        self._same("pop_due", float("inf"), 1)

    @rule()
    def clear(self) -> None:
        self._same("clear")

    @rule(name=names)
    def query(self, name: str) -> None:
        self._same("deadline", name)
        self._same("__contains__", name)

    @invariant()
    def summary_agrees(self) -> None:
        self._same("__len__")
        self._same("next_deadline")

    def teardown(self) -> None:
        self._same("pop_due", float("inf"), sys.maxsize)


def test_tables_agree(table_class: Any) -> None:
    machine = type("TablesAgreeFor", (TablesAgree,), {"table_class": table_class})
    run_state_machine_as_test(machine, settings=settings())  # the profile conftest loaded


def test_tables_agree_when_sequence_numbers_run_out(table_class: Any) -> None:
    """The C table's sequences are 32-bit and renumbered when they run out; with the supply cut to 24
    (at most 12 names live here) renumbering happens every few sets, and every step must still agree
    with the model. catches: a renumbering that reorders ties, or skips the heap's sequences."""
    if not table_class.__module__.endswith("_core_c"):
        pytest.skip("the pure table's sequences are Python ints: they never run out")

    class ShortSequences(table_class):  # type: ignore[misc]
        def __init__(self) -> None:
            self._limit_sequences(24)

    machine = type("TablesAgreeShortSequences", (TablesAgree,), {"table_class": ShortSequences})
    run_state_machine_as_test(machine, settings=settings())  # the profile conftest loaded


class _Sub(str):
    __slots__ = ()


# Equal names as distinct objects, half of them str subclasses; spans few, so that they vary and repeat.
touch_names = st.tuples(st.sampled_from([f"n{i}" for i in range(20)]), st.booleans()).map(
    lambda pair: _Sub(pair[0]) if pair[1] else "".join(pair[0])
)
halves = st.integers(-4, 16).map(lambda k: k / 2)
spans = st.one_of(st.integers(0, 6).map(lambda k: k / 2), st.just(float("inf")))


class TouchesAgree(RuleBasedStateMachine):
    """The compiled and the pure table under sets with spans, touches, settles and pops: every answer the
    same, the lazy state too (``next_deadline``, ``settle``'s counts, ``reinserted``), and the same name
    objects handed out; what is pending as a model where a touch is a set at now + the timer's span."""

    table_class: Any = PyTable

    def __init__(self) -> None:
        super().__init__()
        self.tables = [self.table_class(), PyTable()]
        self.model: dict[str, tuple[float, int, float]] = {}  # name -> (deadline, sequence, span)
        self.sequence = 0

    def _same(self, method: str, *args: Any) -> Any:
        first, second = (getattr(table, method)(*args) for table in self.tables)
        assert first == second, (method, args, first, second)
        if isinstance(first, list):
            assert all(a is b for (a, _), (b, _) in zip(first, second, strict=True))
        return first

    @rule(name=touch_names, deadline=halves, span=spans)
    def set_with_span(self, name: str, deadline: float, span: float) -> None:
        assert self._same("set_with_span", name, deadline, span) == (name in self.model)
        self.model[name] = (deadline, self.sequence, span)
        self.sequence += 1

    @rule(name=touch_names, now=halves)
    def touch(self, name: str, now: float) -> None:
        assert self._same("touch", name, now) == (name in self.model)
        if name in self.model:
            span = self.model[name][2]
            self.model[name] = (now + span, self.sequence, span)
            self.sequence += 1

    @rule(name=touch_names)
    def cancel(self, name: str) -> None:
        assert self._same("cancel", name) == (self.model.pop(name, None) is not None)

    @rule(now=halves, limit=st.integers(0, 4))
    def pop_due(self, now: float, limit: int) -> None:
        due = sorted((key[:2], name) for name, key in self.model.items() if key[0] <= now)[:limit]
        for _, name in due:
            del self.model[name]
        assert self._same("pop_due", now, limit) == [(name, key[0]) for key, name in due]

    @rule(now=halves, ahead=st.sampled_from([0.0, 0.125, 1.0]))
    def settle(self, now: float, ahead: float) -> None:
        self._same("settle", now, ahead)

    @rule(name=touch_names)
    def query(self, name: str) -> None:
        assert self._same("deadline", name) == (self.model[name][0] if name in self.model else None)
        assert self._same("span", name) == (self.model[name][2] if name in self.model else None)
        assert self._same("__contains__", name) == (name in self.model)

    @invariant()
    def lazy_state_agrees(self) -> None:
        assert self._same("__len__") == len(self.model)
        self._same("next_deadline")
        assert self.tables[0].reinserted == self.tables[1].reinserted

    def teardown(self) -> None:
        self._same("settle", float("inf"), 0.0)
        assert self._same("next_deadline") == min((key[0] for key in self.model.values()), default=None)


def test_tables_agree_under_touches(table_class: Any) -> None:
    machine = type("TouchesAgreeFor", (TouchesAgree,), {"table_class": table_class})
    run_state_machine_as_test(machine, settings=settings())  # the profile conftest loaded
