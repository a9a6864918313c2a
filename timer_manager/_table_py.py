"""The pure-Python timer table: the typed reference that the compiled table (``_table_c.pxi``, in ``_core_c``) mirrors.

A binary heap of ``[deadline, sequence, name]`` entries with lazy deletion, plus a dict from name
to its live entry. Cancel and reset mark the old entry stale (its name becomes ``None``); stale
entries are dropped when they reach the top, and the heap is rebuilt once stale entries outnumber
live ones, so memory follows the number of live timers, not the number of operations.
Order is ``(deadline, sequence)``: equal deadlines come out in the order they were set.

A touch does not move the entry: it keeps the timer's later key, ``(latest, sequence)``, in a dict
of its own, and the entry is put back at that key when it reaches the top and is due (``pop_due``,
``settle``), so that timers come out exactly as if the touch had been a set. Timers nobody touches
cost nothing more: the touch dict, like the dict of spans (needed only once two timers were set
with different spans), is created when first needed.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush, heapreplace

__all__ = ("TimerTable",)

# [deadline, sequence, name]; name is None once the entry is stale. A list, not a tuple, so that
# cancel can mark it in place; sequences are unique, so comparisons never reach the name.
_Entry = list[float | int | str | None]

_DEADLINE = 0
_SEQUENCE = 1
_NAME = 2
# Stale entries tolerated beyond the live count before the heap is rebuilt.
_COMPACT_SLACK = 64


class TimerTable:
    """Named timers ordered by ``(deadline, sequence)``; the manager's whole timer state."""

    __slots__ = ("_entries", "_heap", "_next_sequence", "_peak", "_span", "_spans", "_touches", "reinserted")

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._entries: dict[str, _Entry] = {}
        self._next_sequence = 0
        self._peak = 0
        self._span = 0.0  # the span of every timer not in _spans
        # name -> span, once timers were set with different spans; created holding one (a dict of every name
        # would have to be built by a call, at which the collector may run: see set_with_span)
        self._spans: dict[str, float] | None = None
        self._touches: dict[str, tuple[float, int]] | None = None  # name -> (latest, sequence) of a touch
        self.reinserted = 0  # touched timers put back at their latest key (a benchmark reads it)

    def set(self, name: str, deadline: float, /) -> bool:
        """Create ``name`` or replace its deadline; return True if it replaced a pending timer. A later
        :meth:`touch` adds nothing to its ``now`` (see :meth:`set_with_span`)."""
        return self.set_with_span(name, deadline, 0.0)

    def set_with_span(self, name: str, deadline: float, span: float, /) -> bool:
        """:meth:`set`, and ``span`` is the duration a later :meth:`touch` adds to its ``now``."""
        if deadline != deadline:
            raise ValueError("deadline must not be NaN")
        if not span >= 0.0:
            raise ValueError(f"span must be >= 0, got {span!r}")
        # Code that a collection runs (a __del__: a handle's touch) may use the table; a collection starts at an
        # allocation before Python 3.12 and at a call (or a function's start, a loop's jump back) from 3.12 on.
        # So the objects are made first and then, with neither until the table is whole, the changes.
        sequence = self._next_sequence
        self._next_sequence = sequence + 1
        entry: _Entry = [deadline, sequence, name]
        first_spans = {name: span} if self._spans is None and span != self._span and self._entries else None
        entries = self._entries
        old = entries[name] if name in entries else None  # noqa: SIM401 (no call: get() is one)
        entries[name] = entry
        if old is not None:
            old[_NAME] = None
        touches = self._touches
        if touches and name in touches:
            del touches[name]  # the set replaces the touch
        spans = self._spans
        if spans is not None:
            spans[name] = span
        elif span != self._span:
            if first_spans is None:
                self._span = span  # no other timer: the span of every timer
            else:
                self._spans = first_spans  # the others keep _span
        heappush(self._heap, entry)  # a new entry, anywhere in the heap: the table is whole before and after
        if old is None:
            self._peak = max(self._peak, len(self._entries))
            return False
        self._compact_if_sparse()
        return True

    def touch(self, name: str, now: float, /) -> bool:
        """Make ``name`` due at ``now`` + the span it was set with, ordered as a set made now would be;
        return True if it was pending. The heap entry stays where it is (see the module's docstring),
        unless the new deadline is earlier than its place there: then it is a set, which moves it."""
        entries = self._entries
        if name not in entries:
            return False
        entry = entries[name]
        spans = self._spans
        span = spans[name] if spans is not None and name in spans else self._span
        latest = now + span
        if latest != latest:
            raise ValueError(f"now must be a number of seconds, got {now!r}")
        if latest < entry[_DEADLINE]:  # type: ignore[operator]
            self.set_with_span(name, latest, span)
            return True
        sequence = self._next_sequence
        self._next_sequence = sequence + 1
        key = (latest, sequence)
        if self._touches is None:
            created: dict[str, tuple[float, int]] = {}  # (set_with_span says why the objects come first)
            if self._touches is None:
                self._touches = created
        touches = self._touches
        entries = self._entries
        if name not in entries or entries[name] is not entry:  # a collection at an allocation above changed it
            return self.touch(name, now)
        touches[name] = key
        return True

    def settle(self, now: float, ahead: float = 0.0, /) -> int:
        """Put back each touched timer at the top whose heap deadline is ``<= now`` (or ``<= now + ahead``
        times its span); return how many.

        Afterwards ``next_deadline()`` is exact if it is ``<= now``; ``settle(math.inf)`` makes it exact.
        """
        touches = self._touches
        if not touches:
            return 0
        moved = 0
        while True:
            heap = self._heap  # afresh at each step: code the collector ran at a call may have replaced it
            if not heap:
                break
            top = heap[0]
            name = top[_NAME]
            if name is None:
                heappop(heap)
                continue
            touches = self._touches
            if not touches or name not in touches:
                break
            spans = self._spans
            span = spans[name] if spans is not None and name in spans else self._span
            if top[_DEADLINE] > now + ahead * span:  # type: ignore[operator]
                break
            # Put back at the touch's key with no call before heapreplace: a collection may run at any call
            # (pop_due says why), and a __del__ it runs may touch or read the timer.
            key = touches[name]
            del touches[name]
            top[_DEADLINE], top[_SEQUENCE] = key
            heapreplace(heap, top)
            self.reinserted += 1
            moved += 1
        return moved

    def cancel(self, name: str, /) -> bool:
        """Remove ``name``; return True if it was pending."""
        entries = self._entries  # no call until the table is whole (set_with_span says why)
        if name not in entries:
            return False
        old = entries[name]
        del entries[name]
        old[_NAME] = None
        touches = self._touches
        if touches and name in touches:
            del touches[name]
        spans = self._spans
        if spans is not None and name in spans:
            del spans[name]
        self._compact_if_sparse()
        return True

    def clear(self) -> int:
        """Remove every timer; return how many there were."""
        count = len(self._entries)
        self._heap = []
        self._entries = {}
        self._peak = 0
        self._span = 0.0
        self._spans = None
        self._touches = None
        return count

    def pop_due(self, now: float, limit: int, spans: list[float] | None = None, /) -> list[tuple[str, float]]:
        """Remove and return up to ``limit`` timers with ``deadline <= now``, in order; append their spans
        to ``spans`` if it is given."""
        # Python 3.12 and later run the collector between bytecodes (at a call, a function's start, a loop's jump
        # back), not at an allocation as 3.11 did; a __del__ it runs may set, touch or cancel timers (a handle's
        # touch) and so replace the heap or the dicts (_compact_if_sparse, clear). So each step reads them afresh
        # and makes its changes with no call in between until the table is whole again: the timer leaves the
        # dicts and its entry turns stale, and only then is the entry popped (a call), spans and due appended.
        due: list[tuple[str, float]] = []
        while len(due) < limit:
            heap = self._heap
            if not heap:
                break
            top = heap[0]
            name = top[_NAME]
            if name is None:
                heappop(heap)
                continue
            deadline = top[_DEADLINE]
            if deadline > now:  # type: ignore[operator]
                break
            touches = self._touches
            if touches and name in touches:  # touched since it was placed: put it back, as settle() does
                key = touches[name]
                del touches[name]
                top[_DEADLINE], top[_SEQUENCE] = key
                heapreplace(heap, top)
                self.reinserted += 1
                continue
            del self._entries[name]  # type: ignore[arg-type]
            all_spans = self._spans
            if all_spans is not None and name in all_spans:
                span = all_spans[name]
                del all_spans[name]
            else:
                span = self._span
            top[_NAME] = None  # stale, as a cancelled timer's: the table is whole
            heappop(heap)
            if spans is not None:
                spans.append(span)
            due.append((name, deadline))  # type: ignore[arg-type]
        self.settle(now)  # so that next_deadline() <= now means a timer is due
        if due:
            self._compact_if_sparse()
        return due

    def next_deadline(self) -> float | None:
        """Return the deadline at the top of the heap, or None when the table is empty: the earliest
        pending deadline, or earlier than it when the timer at the top was touched since it got there
        (see :meth:`settle`)."""
        heap = self._heap
        while heap:
            top = heap[0]
            if top[_NAME] is not None:
                return top[_DEADLINE]  # type: ignore[return-value]
            heappop(heap)
        return None

    def deadline(self, name: str, /) -> float | None:
        """Return the pending deadline of ``name``, or None."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if self._touches and name in self._touches:
            return self._touches[name][0]
        return entry[_DEADLINE]  # type: ignore[return-value]

    def span(self, name: str, /) -> float | None:
        """Return the span ``name`` was set with, or None if it is not pending."""
        if name not in self._entries:
            return None
        spans = self._spans
        return spans[name] if spans is not None and name in spans else self._span

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def _compact_if_sparse(self) -> None:
        live = len(self._entries)
        if len(self._heap) > 2 * live + _COMPACT_SLACK:
            self._heap = [entry for entry in self._heap if entry[_NAME] is not None]
            heapify(self._heap)
        # A dict keeps its peak size after deletions; copying it gives back the memory.
        if self._peak > 4 * live + _COMPACT_SLACK:
            self._entries = dict(self._entries)
            self._peak = live
