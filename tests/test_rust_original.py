"""The Rust crate's behaviour, as its README shows it: set, cancel, cancel_all, reset, shutdown,
and the try_ variants. Virtual time (asyncio) plus one real-time run on both loops."""

from __future__ import annotations

import asyncio

import pytest
from support import ASYNCIO_ONLY

from timer_manager import CancellationToken, ManagerClosed, QueueEmpty, TimerManager

pytestmark = pytest.mark.usefixtures("core")


async def _names_until_quiet(handle, seconds: float) -> list[str]:  # type: ignore[no-untyped-def]
    await asyncio.sleep(seconds)
    return [event.name for event in handle.try_recv_events(1000)]


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_set_cancel_cancel_all_reset_shutdown_virtual() -> None:
    """set fires once at its deadline; cancel prevents it; cancel_all prevents all; reset moves it;
    shutdown stops. catches: any of the Rust crate's five operations not doing what its name says."""
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("rust", 0.01, 100, 100, CancellationToken())
    task = asyncio.create_task(manager.run())
    start = loop.time()
    await handle.set_timer("timer1", 1.0)
    await handle.set_timer("timer2", 2.0)
    event = await handle.recv_event()
    assert event is not None
    assert (event.name, event.deadline) == ("timer1", start + 1.0)
    event = await handle.recv_event()
    assert event is not None
    assert event.name == "timer2"

    await handle.set_timer("cancelled", 1.0)
    await handle.cancel_timer("cancelled")
    assert await _names_until_quiet(handle, 5) == []

    for i in range(3):
        await handle.set_timer(f"all{i}", 1.0 + i)
    await handle.cancel_all_timers()
    assert await _names_until_quiet(handle, 5) == []

    reset_start = loop.time()
    await handle.set_timer("reset", 1.0)
    await asyncio.sleep(0.5)
    await handle.set_timer("reset", 1.0)  # reset: due 1.0 from now
    event = await handle.recv_event()
    assert event is not None
    assert (event.name, event.deadline) == ("reset", reset_start + 1.5)
    assert await _names_until_quiet(handle, 5) == []

    await handle.shutdown()
    await asyncio.wait_for(task, 1)
    assert await handle.recv_event() is None
    with pytest.raises(ManagerClosed):
        await handle.set_timer("late", 1.0)


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_try_variants_virtual() -> None:
    """The try_ forms: try_set_timer, try_cancel_timer, try_cancel_all_timers, try_recv_event
    (QueueEmpty while running, ManagerClosed once stopped and drained), try_shutdown.
    catches: try_ forms that do nothing, or raise the wrong error."""
    manager, handle = TimerManager.new("rust", 0.01, 10, 10, CancellationToken())
    task = asyncio.create_task(manager.run())
    with pytest.raises(QueueEmpty):
        handle.try_recv_event()
    handle.try_set_timer("quick_timer", 0.1)
    handle.try_set_timer("cancelled", 0.1)
    handle.try_cancel_timer("cancelled")
    await asyncio.sleep(1)
    assert handle.try_recv_event().name == "quick_timer"
    with pytest.raises(QueueEmpty):
        handle.try_recv_event()
    handle.try_set_timer("a", 0.1)
    handle.try_set_timer("b", 0.2)
    handle.try_cancel_all_timers()
    await asyncio.sleep(1)
    with pytest.raises(QueueEmpty):
        handle.try_recv_event()
    handle.try_set_timer("kept", 0.1)
    await asyncio.sleep(1)
    handle.try_shutdown()
    await asyncio.wait_for(task, 1)
    assert handle.try_recv_event().name == "kept"
    with pytest.raises(ManagerClosed):
        handle.try_recv_event()
    with pytest.raises(ManagerClosed):
        handle.try_set_timer("late", 1.0)


async def test_rust_crate_operations_real_time() -> None:
    """Real time, both loops: set, reset, cancel and cancel_all, exact outcome.
    catches: the Rust crate's operations misbehaving on uvloop."""
    manager, handle = TimerManager.new("rust", 0.01, 100, 100, CancellationToken())
    task = asyncio.create_task(manager.run())
    await handle.set_timer("gone", 0.05)
    await handle.set_timer("moved", 0.05)
    await handle.set_timer("all", 0.05)
    await handle.cancel_timer("gone")
    await handle.set_timer("moved", 0.1)
    await handle.set_timer("first", 0.02)
    event = await asyncio.wait_for(handle.recv_event(), 10)
    assert event is not None
    assert event.name == "first"
    await handle.cancel_all_timers()
    await handle.set_timer("moved", 0.05)
    event = await asyncio.wait_for(handle.recv_event(), 10)
    assert event is not None
    assert event.name == "moved"
    await asyncio.sleep(0.15)
    assert handle.try_recv_events(10) == []
    await handle.shutdown()
    await asyncio.wait_for(task, 10)
