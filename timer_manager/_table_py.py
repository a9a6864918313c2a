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
        self._span = 0.0  # the span of every timer while _spans is None
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
        entries = self._entries
        old = entries.get(name)
        sequence = self._next_sequence
        self._next_sequence = sequence + 1
        entry: _Entry = [deadline, sequence, name]
        entries[name] = entry
        heappush(self._heap, entry)
        if self._touches:
            self._touches.pop(name, None)  # the set replaces the touch
        if self._spans is not None:
            self._spans[name] = span
        elif span != self._span:
            if len(entries) == 1:
                self._span = span
            else:
                self._spans = dict.fromkeys(entries, self._span)
                self._spans[name] = span
        if old is None:
            self._peak = max(self._peak, len(entries))
            return False
        old[_NAME] = None
        self._compact_if_sparse()
        return True

    def touch(self, name: str, now: float, /) -> bool:
        """Make ``name`` due at ``now`` + the span it was set with, ordered as a set made now would be;
        return True if it was pending. The heap entry stays where it is (see the module's docstring),
        unless the new deadline is earlier than its place there: then it is a set, which moves it."""
        entry = self._entries.get(name)
        if entry is None:
            return False
        span = self._span if self._spans is None else self._spans[name]
        latest = now + span
        if latest != latest:
            raise ValueError(f"now must be a number of seconds, got {now!r}")
        if latest < entry[_DEADLINE]:  # type: ignore[operator]
            self.set_with_span(name, latest, span)
            return True
        sequence = self._next_sequence
        self._next_sequence = sequence + 1
        if self._touches is None:
            self._touches = {}
        self._touches[name] = (latest, sequence)
        return True

    def settle(self, now: float, ahead: float = 0.0, /) -> int:
        """Put back each touched timer at the top whose heap deadline is ``<= now`` (or ``<= now + ahead``
        times its span); return how many.

        Afterwards ``next_deadline()`` is exact if it is ``<= now``; ``settle(math.inf)`` makes it exact.
        """
        touches = self._touches
        if not touches:
            return 0
        heap = self._heap
        moved = 0
        while heap:
            top = heap[0]
            name = top[_NAME]
            if name is None:
                heappop(heap)
                continue
            if name not in touches:
                break
            span = self._span if self._spans is None else self._spans[name]
            if top[_DEADLINE] > now + ahead * span:  # type: ignore[operator]
                break
            self._put_back(top, touches.pop(name))
            moved += 1
        return moved

    def cancel(self, name: str, /) -> bool:
        """Remove ``name``; return True if it was pending."""
        old = self._entries.pop(name, None)
        if old is None:
            return False
        old[_NAME] = None
        if self._touches:
            self._touches.pop(name, None)
        if self._spans is not None:
            del self._spans[name]
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
        due: list[tuple[str, float]] = []  # first: an allocation may start a collection (see below)
        heap = self._heap
        entries = self._entries
        touches = self._touches
        while heap and len(due) < limit:
            top = heap[0]
            name = top[_NAME]
            if name is None:
                heappop(heap)
                continue
            deadline = top[_DEADLINE]
            if deadline > now:  # type: ignore[operator]
                break
            if touches and name in touches:  # touched since it was placed: put it back
                self._put_back(top, touches.pop(name))
                continue
            heappop(heap)
            del entries[name]  # type: ignore[arg-type]
            if self._spans is not None:
                span = self._spans.pop(name)  # type: ignore[arg-type]
                if spans is not None:
                    spans.append(span)
            elif spans is not None:
                spans.append(self._span)
            # Last, with the table whole: allocating the tuple may start a collection, whose __del__ may set or
            # touch a timer (a handle's touch) and so replace the heap or the entries (_compact_if_sparse).
            due.append((name, deadline))  # type: ignore[arg-type]
            heap = self._heap
            entries = self._entries
            touches = self._touches
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
        return self._span if self._spans is None else self._spans[name]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def _put_back(self, top: _Entry, key: tuple[float, int]) -> None:
        """Re-insert the touched entry at the top of the heap at its latest key."""
        top[_DEADLINE], top[_SEQUENCE] = key
        heapreplace(self._heap, top)
        self.reinserted += 1

    def _compact_if_sparse(self) -> None:
        live = len(self._entries)
        if len(self._heap) > 2 * live + _COMPACT_SLACK:
            self._heap = [entry for entry in self._heap if entry[_NAME] is not None]
            heapify(self._heap)
        # A dict keeps its peak size after deletions; copying it gives back the memory.
        if self._peak > 4 * live + _COMPACT_SLACK:
            self._entries = dict(self._entries)
            self._peak = live
