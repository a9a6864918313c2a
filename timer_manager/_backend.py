"""Where a manager keeps its timers: the seam a backend plugs into.

A :class:`Backend` is what a user passes (``TimerManager.open(..., backend=...)``); for each manager
it makes a :class:`Store`, which gives the runner its engine (``_protocol.EngineInterface``: the
bounded queues the handle and the runner use) and does whatever the backend needs besides: checks at
the call, work in the background while the manager runs, and answers to questions that need the
backend. The default, :class:`LocalBackend`, keeps the timers in the process, in the compiled (or
pure-Python) table; ``timer_manager.redis.RedisBackend`` keeps them on a Redis server.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._core import Engine, TimerTable
from ._validate import check_when

if TYPE_CHECKING:
    from ._protocol import EngineInterface
    from ._runner import Runner

__all__ = ("Backend", "LocalBackend", "LocalStore", "Store")


class Store(Protocol):
    """One manager's use of a backend."""

    remote: bool  # the timers are elsewhere: introspection must be awaited
    engine: EngineInterface
    encode: Callable[[Any], Any] | None  # a payload's check (and encoding) at the call, if the backend needs one
    check_names: Callable[[list[str]], None] | None  # a remote backend's check of the names of sets at the call

    def deadline_at(self, when: object, /) -> Any:
        """An absolute deadline as ``set_timer_at`` takes it, checked, in the form the engine takes."""

    def start(self, runner: Runner, /) -> Awaitable[None] | None:
        """Begin the backend's own work as the manager starts; what ``run()`` awaits after the stop."""

    async def query(self, what: str, name: str, /) -> float | int | None:
        """``"deadline"`` of ``name``, pending ``"count"``, or ``"next"`` deadline, as the backend knows it."""

    def acknowledge(self, events: list[Any], /) -> Callable[[asyncio.Future[None]], Callable[[], bool]] | None:
        """Check received events for acknowledgement (raising at the call, with nothing queued); return what
        queues their acknowledgements, to be called with the flush marker that confirms them as it is queued (so
        that a call cancelled or refused before that queues nothing), or None if there is nothing to wait for.
        Queuing returns what takes them back if the call is then cancelled (as far as none has left yet). A
        stop before the confirmation leaves the marker to the backend, which resolves it once it knows whether
        the acknowledgements took effect (a remote one sends them as it settles)."""

    def counts(self) -> tuple[int, int | None, int | None]:
        """The backend's own counts for ``stats()``: sets refused, overdue timers, unacknowledged events."""


class Backend(Protocol):
    """What ``TimerManager(backend=...)`` takes."""

    def store(self, name: str, command_capacity: int, event_capacity: int, max_timers: int | None, /) -> Store:
        """The store for manager ``name``."""


class LocalStore:
    """Timers in this process: the default."""

    remote: bool = False
    encode: Callable[[Any], Any] | None = None
    check_names: Callable[[list[str]], None] | None = None

    def __init__(self, command_capacity: int, event_capacity: int) -> None:
        self.engine: EngineInterface = Engine(TimerTable(), command_capacity, event_capacity)

    def deadline_at(self, when: object) -> float:
        """A loop time."""
        return check_when(when)

    def start(self, runner: Runner) -> None:
        """Nothing runs besides the runner."""

    async def query(self, what: str, name: str) -> float | int | None:
        """Answered at once from the engine."""
        engine = self.engine
        if what == "deadline":
            return engine.pending_deadline(name)
        if what == "count":
            return engine.live_count()
        engine.table.settle(math.inf)  # touched timers at the top go back to their latest deadlines first
        return engine.table.next_deadline()  # type: ignore[no-any-return]

    def acknowledge(self, events: list[Any]) -> None:
        """Events of this backend need no acknowledgement."""
        return None

    def counts(self) -> tuple[int, int | None, int | None]:
        """Nothing is refused (``max_timers`` refuses at the call); the rest does not apply."""
        return 0, None, None


class LocalBackend:
    """Keep the timers in the process (the default backend)."""

    def __repr__(self) -> str:
        return "LocalBackend()"

    def store(self, name: str, command_capacity: int, event_capacity: int, max_timers: int | None) -> LocalStore:
        """A table of this process's own."""
        return LocalStore(command_capacity, event_capacity)
