"""``max_timers``: which sets may be queued, decided at the call, from the loop's thread or any other.

A set is admitted if its name is already pending or queued, or if one more name fits under the limit.
Each admitted set holds a reservation until the engine applies it (``release``) or it is dropped
unapplied (``release`` too, from whoever drops it). Reservations and the checks against them happen
under one lock; the engine's counts (``live_count``, ``is_live``) change in an order that never
shows a thread fewer timers than there are, so the limit is never exceeded.
"""

from __future__ import annotations

import threading
from typing import Any

from .errors import TimerLimitExceeded

__all__ = ("Admission",)


class Admission:
    """Reservations of queued sets against ``limit`` live-or-queued names."""

    __slots__ = ("engine", "limit", "lock", "name", "reserved")

    def __init__(self, name: str, limit: int, engine: Any) -> None:
        self.name = name
        self.limit = limit
        self.engine = engine
        # Re-entrant: a log handler the engine calls (under this lock, in the pure-Python engine) may set a timer.
        self.lock = threading.RLock()
        self.reserved: dict[str, int] = engine.reserved  # name -> queued sets of it, shared with the engine
        engine.release = self.release
        engine.admit_rearm = self.admit_rearm
        engine.lock = self.lock

    def reserve(self, names: list[str]) -> None:
        """Reserve a place for each set in ``names``, or raise :class:`TimerLimitExceeded` and reserve none."""
        engine = self.engine
        reserved = self.reserved
        with self.lock:
            new = {name for name in names if name not in reserved and not engine.is_live(name)}
            if new:
                admitted = self._admitted(len(new))
                if admitted + len(new) > self.limit:
                    raise TimerLimitExceeded(
                        f"timer manager {self.name!r} holds {admitted} live or queued timers; "
                        f"{len(new)} new would exceed max_timers={self.limit}"
                    )
            for name in names:
                reserved[name] = reserved.get(name, 0) + 1

    def admit_rearm(self, name: str) -> bool:
        """Whether a touch may re-arm ``name``, a one-shot timer that fell due (not pending: its event waits):
        it is queued or reserved already, or one more live timer fits under the limit. The engine calls this
        holding the lock, and re-arms in the same locked step."""
        with self.lock:
            if name in self.reserved or self.engine.is_live(name):
                return True
            return self._admitted(1) + 1 <= self.limit

    def _admitted(self, new: int) -> int:
        """The live or queued names (under the lock): a quick count, made exact only where ``new`` more would
        not fit by it (it counts twice the names both pending and queued)."""
        engine = self.engine
        reserved = self.reserved
        admitted: int = engine.live_count() + len(reserved)
        if admitted + new > self.limit:
            admitted = engine.live_count() + sum(1 for name in reserved if not engine.is_live(name))
        return admitted

    def release(self, name: str) -> None:
        """One reserved set of ``name`` was applied or dropped."""
        reserved = self.reserved
        with self.lock:
            count = reserved.get(name, 0)
            if count > 1:
                reserved[name] = count - 1
            elif count == 1:
                del reserved[name]

    def clear(self) -> None:
        """The manager stopped: nothing queued will be applied."""
        with self.lock:
            self.reserved.clear()
