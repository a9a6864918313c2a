"""Public API: exports, the event type, the error hierarchy, TimerManager.new, CORE."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Union, get_args

import pytest

import timer_manager
from timer_manager import (
    CORE,
    CancellationToken,
    ManagerClosed,
    QueueEmpty,
    QueueFull,
    TimerEvent,
    TimerExpired,
    TimerHandle,
    TimerLimitExceeded,
    TimerManager,
    TimerManagerError,
    TimerStats,
    _env,
)

ROOT = Path(__file__).resolve().parent.parent


def test_readme_import_line_names_exist() -> None:
    """Every name of the README's API import exists and is exported. catches: a missing export."""
    for name in (
        "TimerManager",
        "TimerHandle",
        "TimerEvent",
        "TimerExpired",
        "CancellationToken",
        "TimerManagerError",
        "ManagerClosed",
        "QueueFull",
        "QueueEmpty",
        "TimerLimitExceeded",
        "TimerStats",
        "CORE",
    ):
        assert name in timer_manager.__all__
        assert hasattr(timer_manager, name)
    assert TimerStats is timer_manager.TimerStats


def test_timer_expired_is_a_frozen_slotted_dataclass() -> None:
    """catches: a mutable event (a consumer could corrupt it), a __dict__ per event, wrong fields."""
    assert dataclasses.is_dataclass(TimerExpired)
    assert [f.name for f in dataclasses.fields(TimerExpired)] == ["name", "deadline", "data"]
    event = TimerExpired("a", 1.5)
    assert event.data is None
    assert event == TimerExpired("a", 1.5, None)
    assert hash(event) == hash(TimerExpired("a", 1.5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.name = "b"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    assert TimerExpired.__slots__ == ("name", "deadline", "data")
    assert get_args(TimerEvent) == () or set(get_args(TimerEvent)) == {TimerExpired}
    assert TimerEvent == Union[TimerExpired]  # type: ignore[comparison-overlap]  # noqa: UP007


def test_timer_expired_supports_match() -> None:
    """The user guide's match example (docs/guide.md): class pattern with keywords and positionally.
    catches: missing __match_args__."""
    source = """
def classify(event):
    match event:
        case TimerExpired(name=name, data=data):
            return ("expired", name, data)
        case None:
            return ("stopped",)

def positional(event):
    match event:
        case TimerExpired(name, deadline, data):
            return (name, deadline, data)
"""
    namespace: dict[str, Any] = {"TimerExpired": TimerExpired}
    exec(compile(source, "<match>", "exec"), namespace)
    assert namespace["classify"](TimerExpired("a", 1.0, 7)) == ("expired", "a", 7)
    assert namespace["classify"](None) == ("stopped",)
    assert namespace["positional"](TimerExpired("a", 1.0, 7)) == ("a", 1.0, 7)


def test_error_hierarchy() -> None:
    """catches: QueueFull not catchable as asyncio.QueueFull, errors outside the family."""
    for error in (ManagerClosed, QueueFull, QueueEmpty, TimerLimitExceeded):
        assert issubclass(error, TimerManagerError)
    assert issubclass(TimerManagerError, Exception)
    assert issubclass(QueueFull, asyncio.QueueFull)
    assert issubclass(QueueEmpty, asyncio.QueueEmpty)
    assert not issubclass(ManagerClosed, (asyncio.QueueFull, asyncio.QueueEmpty))


@pytest.mark.usefixtures("core")
def test_a_handle_cannot_be_copied_or_pickled() -> None:
    """A handle belongs to its manager. A copy once shared its runner but missed what binding told the handle; with
    the touch compiled, a copy kept only the touch's fields, and its other methods failed. Both are refused
    with a TypeError. Catches: a copy that looks usable and is not."""
    _, handle = TimerManager.new("a", 0, 4, 4)
    for copier in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            copier(handle)


@pytest.mark.usefixtures("core")
def test_new_positional_and_keyword() -> None:
    """TimerManager.new with positional or keyword arguments returns (manager, handle), the token
    optional. catches: a changed parameter order or name."""
    token = CancellationToken()
    manager, handle = TimerManager.new("a", 0.01, 10, 20, token)
    assert isinstance(manager, TimerManager)
    assert isinstance(handle, TimerHandle)
    assert manager.handle is handle
    assert manager.cancel_token is token
    assert manager.name == "a"
    manager2, handle2 = TimerManager.new(
        name="b", heartbeat_interval=0.5, command_buffer_size=3, event_buffer_size=4, cancel_token=token
    )
    assert manager2.name == "b"
    assert manager2.handle is handle2
    manager3, _ = TimerManager.new("c", 0, 1, 1)
    assert isinstance(manager3.cancel_token, CancellationToken)


@pytest.mark.usefixtures("core")
async def test_run_twice_raises() -> None:
    """A manager runs once. catches: a second run() silently restarting a stopped manager."""
    manager, handle = TimerManager.new("once", 0.01, 1, 1)
    task = asyncio.create_task(manager.run())
    await handle.shutdown()
    await task
    with pytest.raises(RuntimeError):
        await manager.run()


def test_core_in_process() -> None:
    """CORE is "cython" unless TIMER_MANAGER_NO_EXTENSIONS is true. catches: the extension silently
    not built/not used."""
    assert ("python" if _env.no_extensions() else "cython") == CORE


def _core_with(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("TIMER_MANAGER_NO_EXTENSIONS", None)
    if env_value is not None:
        env["TIMER_MANAGER_NO_EXTENSIONS"] = env_value
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", "import timer_manager; print(timer_manager.CORE)"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_core_from_environment_subprocess() -> None:
    """TIMER_MANAGER_NO_EXTENSIONS=1 (or true/yes/on) selects python; unset or 0 selects cython (fails if
    the extension is not built). catches: the variable ignored, "0" treated as true, a missing build."""
    assert _core_with("1") == "python"
    assert _core_with("Yes") == "python"
    assert _core_with(None) == "cython"
    assert _core_with("0") == "cython"
