"""Runs every test against both timer tables (``c`` and ``py``) and every async test on both event
loops (``asyncio`` and, where installed, ``uvloop``)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import pytest_asyncio

from timer_manager import _env

TABLE_MODULES = {"c": "timer_manager._table_c", "py": "timer_manager._table_py"}
ENGINE_MODULES = {"c": "timer_manager._table_c", "py": "timer_manager._engine_py"}

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


try:
    import looptime  # noqa: F401
except ImportError:  # looptime >= 0.8 needs Python 3.11; the virtual-time tests are skipped below it
    LOOPTIME = False
else:
    LOOPTIME = True


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
    core = importlib.import_module("timer_manager._core")
    monkeypatch.setattr(core, "TimerTable", table_class)
    monkeypatch.setattr(core, "Engine", importlib.import_module(ENGINE_MODULES[kind]).Engine)
