"""Review: a shutdown cancelled before it was queued, with commands handed over by a thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from timer_manager import TimerManager

pytestmark = pytest.mark.usefixtures("core")


async def test_a_thread_command_after_a_cancelled_shutdown_is_applied() -> None:
    """A thread hands a command over (the loop is asked to come for it); before the loop takes it, a
    shutdown() that must wait for room closes the manager, taking the handed-over command ahead of its
    SHUTDOWN, and is then cancelled, so the manager reopens. A thread's later command must still be
    applied. Catches: the inbox still believing the loop was asked (its wake_pending left set by close()),
    so that no later thread command asks the loop to come: it waits, unapplied, for some unrelated pass."""
    manager, handle = TimerManager.new("reopened", 0, 1, 8)
    run = asyncio.ensure_future(manager.run())
    await handle.flush()
    threadsafe = handle.threadsafe()

    def put(name: str) -> None:
        thread = threading.Thread(target=threadsafe.try_set_timer, args=(name, 1000))
        thread.start()
        thread.join()

    put("first")  # handed over; the loop (blocked in this step) is asked to come, nothing else is scheduled
    shutdown = asyncio.ensure_future(handle.shutdown())
    await asyncio.sleep(0)  # shutdown() closes the manager, takes "first" (the one place), and waits for room
    assert manager._runner.closing
    shutdown.cancel()
    with pytest.raises(asyncio.CancelledError):
        await shutdown
    assert not manager._runner.closing  # reopened
    await asyncio.sleep(0.05)  # the manager's passes for what was queued are over
    assert "first" in handle

    await asyncio.to_thread(threadsafe.try_set_timer, "second", 0.0)  # due at once
    event = await asyncio.wait_for(handle.recv_event(), 2.0)
    assert event is not None and event.name == "second"
    await handle.shutdown()
    await run
