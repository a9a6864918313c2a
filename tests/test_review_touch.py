"""Review: touch ordering corner cases (a touch from inside the engine's own pass)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from support import EPS, now, virtual

from timer_manager import TimerManager

pytestmark = pytest.mark.usefixtures("core")


class _TouchOnRecord(logging.Handler):
    """A DEBUG handler that touches ``name`` when it sees the record of the set of ``name``."""

    def __init__(self, handle: object, name: str, many: bool) -> None:
        super().__init__(logging.DEBUG)
        self.timers = handle
        self.name = name
        self.many = many
        self.touched_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.touched_at is None and f": set {self.name!r}" in record.getMessage():
            self.touched_at = now()
            if self.many:
                self.timers.touch_many([self.name])  # type: ignore[attr-defined]
            else:
                self.timers.touch(self.name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("many", [False, True], ids=["touch", "touch_many"])
@virtual
async def test_a_touch_from_a_debug_log_handler_acts_after_the_command_being_applied(many: bool) -> None:
    """A DEBUG log handler touches "a" while the manager applies the set of "a" (the last queued command).
    The set was sent before the touch, so the touch must act on the state it leaves (design.md: inside the
    engine's own pass a touch is queued as a TOUCH command). Catches: a touch applied at the call there,
    before the set it follows: its effect is then overwritten by that set."""
    manager, handle = TimerManager.new("logged-touch", 0, 8, 8)
    handle.try_set_timer("a", 5.0)  # due at t0 + 5; applied when run() starts
    t0 = now()
    await asyncio.sleep(3.0)
    logger = logging.getLogger("timer_manager")
    handler = _TouchOnRecord(handle, "a", many)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        task = asyncio.create_task(manager.run())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert handler.touched_at == pytest.approx(t0 + 3.0)
    await handle.flush()
    # set (due t0 + 5, span 5), then touch at t0 + 3: due t0 + 8
    assert handle.deadline("a") == pytest.approx(t0 + 8.0, abs=EPS)
    await handle.shutdown()
    await task



@pytest.mark.parametrize("caller", ["touch", "touch_many", "thread"])
@virtual
async def test_a_touch_that_would_rearm_a_fired_timer_past_max_timers_does_nothing(caller: str) -> None:
    """A one-shot timer fell due and its event waits: it is no longer pending, and ``max_timers`` lets another
    name take its place. A touch would re-arm it, as ``set_timer(name, same duration)`` would; at the limit that
    set is refused (TimerLimitExceeded), so the touch must not re-arm it either. Catches: a touch (at the call,
    or a thread's, applied by the manager) that re-arms it anyway, leaving more live timers than
    ``max_timers``."""
    from support import recv, running

    from timer_manager import TimerLimitExceeded

    async with running(heartbeat=0, max_timers=1) as (manager, handle, _task):
        await handle.set_timer("a", 1.0)
        await asyncio.sleep(1.5)  # "a" fired; its event waits, unreceived
        assert handle.pending_count() == 0
        await handle.set_timer("b", 100.0)  # the one place
        with pytest.raises(TimerLimitExceeded):
            await handle.set_timer("a", 1.0)
        if caller == "touch":
            assert handle.touch("a") is False
        elif caller == "touch_many":
            assert handle.touch_many(["a", "b"]) == 1
        else:
            await asyncio.to_thread(handle.threadsafe().touch, "a")
            await handle.flush()
        assert handle.pending_count() == 1
        assert "a" not in handle
        event = await recv(handle, 1.0)
        assert event.name == "a" and manager.stats().retracted == 0  # its event stayed
        await handle.cancel_timer("b")
        await handle.flush()
        await handle.set_timer("a", 1.0)  # a place again
        await handle.flush()
        assert handle.pending_count() == 1
