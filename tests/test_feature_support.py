"""Shared helpers for the ``test_feature_*`` modules (this module holds no tests).

``virtual`` marks a test to run in virtual time (looptime) on asyncio's own loop only;
``running`` runs a manager made with ``TimerManager.new`` in a task and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Callable, TypeVar

import pytest

from timer_manager import TimerHandle, TimerManager

try:
    from conftest import ASYNCIO_ONLY
except ImportError:  # pragma: no cover - conftest not importable as a module
    ASYNCIO_ONLY = pytest.mark.asyncio(loop_factories=["asyncio"])

F = TypeVar("F", bound=Callable[..., Any])

EPS = 1e-9


def virtual(function: F) -> F:
    """Run ``function`` in virtual time (looptime), on the asyncio loop only."""
    return ASYNCIO_ONLY(pytest.mark.looptime(function))  # type: ignore[no-any-return]


def now() -> float:
    return asyncio.get_running_loop().time()


@contextlib.asynccontextmanager
async def running(
    name: str = "feature",
    heartbeat: float = 0,
    commands: int = 64,
    events: int = 64,
    **options: Any,
) -> AsyncIterator[tuple[TimerManager, TimerHandle]]:
    """A manager running in a task; shut down and awaited on exit."""
    manager, handle = TimerManager.new(name, heartbeat, commands, events, **options)
    task = asyncio.ensure_future(manager.run())
    try:
        yield manager, handle
    finally:
        await asyncio.wait_for(handle.shutdown(), 30)
        await asyncio.wait_for(task, 30)


async def recv(handle: TimerHandle, timeout: float = 100.0) -> Any:
    """``recv_event`` that fails the test instead of hanging."""
    return await asyncio.wait_for(handle.recv_event(), timeout)
