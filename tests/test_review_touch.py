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
