"""The helpers the tests share (this module holds no tests; ``conftest.py`` holds the fixtures and hooks).

Cores (the timer table and the engine that drives it)
    ``Core``, ``load_core(kind)``: the ``c`` core (``_core_c``) or the ``py`` one (``_table_py`` and
    ``_engine_py``); ``use_core(kind)`` makes managers created from then on use it (for scripts: tests
    request the ``core`` fixture instead).

Event loops and virtual time
    ``LOOP_FACTORIES``: the loops every async test runs on (asyncio and, where installed, uvloop);
    ``ASYNCIO_ONLY``: a mark for a test that runs on asyncio's loop only; ``LOOPTIME``: whether looptime
    is installed; ``virtual``: a decorator running a test in virtual time (looptime) on asyncio's loop;
    ``now()``: the running loop's time.

Managers
    ``running(...)``: a manager made with ``TimerManager.new`` running in a task, stopped on exit;
    ``recv(handle)``: ``recv_event`` that fails the test instead of hanging; ``EPS``: a tolerance for
    deadlines computed two ways.

Environment
    ``SOAK``: whether ``TIMER_MANAGER_SOAK`` asks for the long soak runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from timer_manager import TimerHandle, TimerManager, _backend, _env

F = TypeVar("F", bound=Callable[..., Any])

# ---------------------------------------------------------------------- cores


@dataclasses.dataclass(frozen=True)
class Core:
    """One implementation of the manager's core: a timer table class and the engine class that drives it."""

    kind: str  # "c": the compiled ``_core_c``; "py": ``_table_py`` and ``_engine_py``
    TimerTable: Any
    Engine: Any


KINDS = ("c", "py")


def load_core(kind: str) -> Core:
    """Import the ``c`` or the ``py`` core. There is no fallback: a missing extension raises ImportError."""
    if kind == "c":
        compiled = importlib.import_module("timer_manager._core_c")
        return Core("c", compiled.TimerTable, compiled.Engine)
    if kind == "py":
        table = importlib.import_module("timer_manager._table_py")
        engine = importlib.import_module("timer_manager._engine_py")
        return Core("py", table.TimerTable, engine.Engine)
    raise ValueError(f"core kind must be one of {KINDS}, got {kind!r}")


def use_core(kind: str) -> Core:
    """Make managers created from now on use the ``c`` or ``py`` core (``timer_manager._backend`` builds its
    table and engine from its module globals ``TimerTable`` and ``Engine``). For scripts; not undone."""
    core = load_core(kind)
    _backend.TimerTable = core.TimerTable  # type: ignore[attr-defined]
    _backend.Engine = core.Engine  # type: ignore[attr-defined]
    return core


# ---------------------------------------------------------------------- event loops and virtual time

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a test extra where it installs
    uvloop = None  # type: ignore[assignment]

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop

# pytest-asyncio >= 1.4 (Python >= 3.10) runs async tests once per loop factory; older ones use asyncio only.
LOOP_FACTORIES_SUPPORTED = tuple(int(part) for part in pytest_asyncio.__version__.split(".")[:2]) >= (1, 4)

# Virtual-time tests (looptime) drive asyncio's own loop: mark them with this (``virtual`` does).
ASYNCIO_ONLY = pytest.mark.asyncio(loop_factories=["asyncio"]) if LOOP_FACTORIES_SUPPORTED else pytest.mark.asyncio

try:
    import looptime  # noqa: F401
except ImportError:  # looptime >= 0.8 needs Python 3.11; the virtual-time tests are skipped below it
    LOOPTIME = False
else:
    LOOPTIME = True


def virtual(function: F) -> F:
    """Run the test ``function`` in virtual time (looptime), on the asyncio loop only."""
    marked: F = ASYNCIO_ONLY(pytest.mark.looptime(function))
    return marked


def now() -> float:
    """The running loop's time."""
    return asyncio.get_running_loop().time()


# ---------------------------------------------------------------------- managers

EPS = 1e-9
HANG = 30.0  # seconds: a manager that takes longer than this to stop is hung


@contextlib.asynccontextmanager
async def running(
    heartbeat: float = 0.0, commands: int = 64, events: int = 64, *, name: str = "test", **options: Any
) -> AsyncIterator[tuple[TimerManager, TimerHandle, asyncio.Task[None]]]:
    """Yield ``(manager, handle, task)``: ``TimerManager.new(name, heartbeat, commands, events, **options)``
    with ``run()`` started in ``task`` (its grid origin is the loop time on entry).

    On exit a manager still running is shut down gracefully, and its task is awaited, so that a
    ``run()`` that failed fails the test (a task the test cancelled itself is left alone)."""
    manager, handle = TimerManager.new(name, heartbeat, commands, events, **options)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    assert manager._runner.state == "running"
    try:
        yield manager, handle, task
    finally:
        if not task.done():
            await asyncio.wait_for(handle.shutdown(), HANG)
        if not task.cancelled():
            await asyncio.wait_for(task, HANG)


async def recv(handle: TimerHandle, timeout: float = 100.0) -> Any:
    """``recv_event`` that fails the test instead of hanging (the event, or None once the manager stopped)."""
    return await asyncio.wait_for(handle.recv_event(), timeout)


# ---------------------------------------------------------------------- environment

SOAK = _env.is_true(os.environ.get("TIMER_MANAGER_SOAK"))
