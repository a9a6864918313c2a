"""Runs every test against both timer tables (``c`` and ``py``) and every async test on both event
loops (``asyncio`` and, where installed, ``uvloop``)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import pytest_asyncio

from timer_manager import TimerHandle, TimerManager, _env

TABLE_MODULES = {"c": "timer_manager._core_c", "py": "timer_manager._table_py"}
ENGINE_MODULES = {"c": "timer_manager._core_c", "py": "timer_manager._engine_py"}

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a test extra where it installs
    uvloop = None

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop

# pytest-asyncio >= 1.4 (Python >= 3.10) runs async tests once per loop factory; older ones use asyncio only.
LOOP_FACTORIES_SUPPORTED = tuple(int(part) for part in pytest_asyncio.__version__.split(".")[:2]) >= (1, 4)

# Virtual-time tests (looptime) drive asyncio's own loop: mark them with this.
ASYNCIO_ONLY = pytest.mark.asyncio(loop_factories=["asyncio"]) if LOOP_FACTORIES_SUPPORTED else pytest.mark.asyncio


@contextlib.asynccontextmanager
async def running(
    heartbeat: float = 0.01, commands: int = 1024, events: int = 1024, *, name: str = "test", **options: Any
) -> AsyncIterator[tuple[TimerManager, TimerHandle, asyncio.Task[None]]]:
    """A manager whose run() has started (its grid origin is the loop time on entry); on exit its task
    is cancelled if still running, and awaited."""
    manager, handle = TimerManager.new(name, heartbeat, commands, events, **options)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)
    assert manager._runner.state == "running"
    try:
        yield manager, handle, task
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


try:
    import looptime  # noqa: F401
except ImportError:  # looptime >= 0.8 needs Python 3.11; the virtual-time tests are skipped below it
    LOOPTIME = False
else:
    LOOPTIME = True


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    """Run every test not marked ``looptime`` on the stock asyncio loop class, as users get it.

    looptime's plugin re-classes every loop pytest-asyncio makes (it must, before knowing which test
    will use it), which changes ``loop.time``: the manager would then read the loop's clock through
    that method and wake through ``call_at``, never through its real-loop path (``time.monotonic``
    and the timerfd). Around unmarked tests the loop gets its own class back.
    """
    loop = _test_loop(pyfuncitem)
    patched: type | None = None
    selector = select = None
    if LOOPTIME and loop is not None and pyfuncitem.get_closest_marker("looptime") is None:
        from looptime import LoopTimeEventLoop

        if isinstance(loop, LoopTimeEventLoop):
            patched = type(loop)
            loop.__class__ = next(base for base in patched.__bases__ if not issubclass(base, LoopTimeEventLoop))
            # looptime also replaces the selector's select() on the instance.
            selector = getattr(loop, "_selector", None)
            select = vars(selector).pop("select", None) if selector is not None else None
    try:
        return (yield)
    finally:
        if patched is not None:
            assert loop is not None
            loop.__class__ = patched
            if select is not None:
                selector.select = select


def _test_loop(pyfuncitem: pytest.Function) -> asyncio.AbstractEventLoop | None:
    """The loop an async test runs on (None for a sync test)."""
    policy = pyfuncitem.funcargs.get("event_loop_policy")
    if policy is None or pyfuncitem.get_closest_marker("asyncio") is None:
        return None
    with warnings.catch_warnings():
        # Python 3.12+ warns when a policy is asked for a loop that is not set.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop: asyncio.AbstractEventLoop = policy.get_event_loop()
        except RuntimeError:
            return None
    return loop


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip virtual-time tests where looptime is not installed."""
    if LOOPTIME:
        return
    skip = pytest.mark.skip(reason="looptime (virtual time) is not installed: it needs Python >= 3.11")
    for item in items:
        if item.get_closest_marker("looptime") is not None:
            item.add_marker(skip)


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    """Run each async test once per event loop implementation."""
    return LOOP_FACTORIES


@pytest.fixture(
    scope="session",
    params=[pytest.param("c", marks=pytest.mark.c_extension, id="c"), pytest.param("py", id="py")],
)
def table_class(request: pytest.FixtureRequest) -> Any:
    """The ``TimerTable`` class under test; the C run is skipped only when extensions are forbidden."""
    if request.param == "c" and _env.no_extensions():
        pytest.skip(f"{_env.NO_EXTENSIONS_VARIABLE} is set: the Cython table is not under test")
    # No fallback here: if the extension was not built, the C run fails loudly.
    return importlib.import_module(TABLE_MODULES[request.param]).TimerTable


@pytest.fixture(autouse=True)
def _manager_uses_table(table_class: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make managers created in the test use the table under test, and the engine of the same kind."""
    kind = "c" if table_class.__module__ == TABLE_MODULES["c"] else "py"
    core = importlib.import_module("timer_manager._runner")
    monkeypatch.setattr(core, "TimerTable", table_class)
    monkeypatch.setattr(core, "Engine", importlib.import_module(ENGINE_MODULES[kind]).Engine)
