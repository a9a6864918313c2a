"""Runs every test against both timer tables: the Cython one (id ``c``) and the pure-Python one (``py``)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

from timer_manager import _env

TABLE_MODULES = {"c": "timer_manager._table_c", "py": "timer_manager._table_py"}


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
def _manager_uses_table(table_class: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make managers created in the test use the table under test."""
    core = importlib.import_module("timer_manager._core")
    monkeypatch.setattr(core, "TimerTable", table_class)
    yield
