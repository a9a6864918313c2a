"""The pure-Python timer table: the typed reference that the compiled table (``_table_c.pxi``, in ``_core_c``) mirrors.

A binary heap of ``[deadline, sequence, name]`` entries with lazy deletion, plus a dict from name
to its live entry. Cancel and reset mark the old entry stale (its name becomes ``None``); stale
entries are dropped when they reach the top, and the heap is rebuilt once stale entries outnumber
live ones, so memory follows the number of live timers, not the number of operations.
Order is ``(deadline, sequence)``: equal deadlines come out in the order they were set.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

__all__ = ("TimerTable",)

# [deadline, sequence, name]; name is None once the entry is stale. A list, not a tuple, so that
# cancel can mark it in place; sequences are unique, so comparisons never reach the name.
_Entry = list[float | int | str | None]

_DEADLINE = 0
_NAME = 2
# Stale entries tolerated beyond the live count before the heap is rebuilt.
_COMPACT_SLACK = 64


class TimerTable:
    """Named timers ordered by ``(deadline, sequence)``; the manager's whole timer state."""

    __slots__ = ("_entries", "_heap", "_next_sequence", "_peak")

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._entries: dict[str, _Entry] = {}
        self._next_sequence = 0
        self._peak = 0

    def set(self, name: str, deadline: float, /) -> bool:
        """Create ``name`` or replace its deadline; return True if it replaced a pending timer."""
        if deadline != deadline:
            raise ValueError("deadline must not be NaN")
        entries = self._entries
        old = entries.get(name)
        sequence = self._next_sequence
        self._next_sequence = sequence + 1
        entry: _Entry = [deadline, sequence, name]
        entries[name] = entry
        heappush(self._heap, entry)
        if old is None:
            self._peak = max(self._peak, len(entries))
            return False
        old[_NAME] = None
        self._compact_if_sparse()
        return True

    def cancel(self, name: str, /) -> bool:
        """Remove ``name``; return True if it was pending."""
        old = self._entries.pop(name, None)
        if old is None:
            return False
        old[_NAME] = None
        self._compact_if_sparse()
        return True

    def clear(self) -> int:
        """Remove every timer; return how many there were."""
        count = len(self._entries)
        self._heap = []
        self._entries = {}
        self._peak = 0
        return count

    def pop_due(self, now: float, limit: int, /) -> list[tuple[str, float]]:
        """Remove and return up to ``limit`` timers with ``deadline <= now``, in order."""
        heap = self._heap
        entries = self._entries
        due: list[tuple[str, float]] = []
        while heap and len(due) < limit:
            top = heap[0]
            name = top[_NAME]
            if name is None:
                heappop(heap)
                continue
            deadline = top[_DEADLINE]
            if deadline > now:  # type: ignore[operator]
                break
            heappop(heap)
            del entries[name]  # type: ignore[arg-type]
            due.append((name, deadline))  # type: ignore[arg-type]
        if due:
            self._compact_if_sparse()
        return due

    def next_deadline(self) -> float | None:
        """Return the earliest pending deadline, or None when the table is empty."""
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
        return None if entry is None else entry[_DEADLINE]  # type: ignore[return-value]

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
