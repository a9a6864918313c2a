"""``touch()`` model-checked in virtual time against ``set_timer``'s semantics.

The state machine of ``test_model.py`` (sets, cancels, batches, full queues, a paused consumer,
stops), with touches added. The model knows no lazy heap: a touch of a pending timer (armed, or
fired and not received) is exactly a set made at the touch, with the duration that timer was last
set with and its payload kept; a touch of anything else changes nothing. So every check of the
machine (order, ties, exact delivery tick, never early, no stale event, the event queue's contents,
``deadline()``, ``pending_count()``) holds for touches as it holds for sets. Touches come alone from a
settled state, and inside bursts of ``try_`` calls, where commands are queued ahead of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test
from test_model import Entry, ManagerMachine, names, ops

from timer_manager import ManagerClosed

pytest.importorskip("looptime", reason="virtual time needs looptime (Python >= 3.11)")

pytestmark = pytest.mark.usefixtures("core")

touches = st.one_of(
    st.tuples(st.just("touch"), names),
    st.tuples(st.just("touch_many"), st.lists(names, max_size=4)),
)


class TouchMachine(ManagerMachine):
    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[str, float] = {}  # the duration each name was last set with

    def model_set(self, name: str, deadline: float, data: Any) -> None:
        # Every set is modelled at the loop time of its call, and all times are multiples of 1/16 s.
        self.spans[name] = deadline - self.now()
        super().model_set(name, deadline, data)

    def model_touch(self, name: str, now: float) -> bool:
        entry = self.entries.get(name)
        if entry is None:
            return False
        self.seq += 1
        self.entries[name] = Entry(name, now + self.spans[name], self.seq, entry.data)
        return True

    def call_touch(self, op: tuple[Any, ...]) -> None:
        """Touch as ``op`` says and check what the call returns against the model (once the manager has
        stopped: that it raises ManagerClosed and changes nothing)."""
        if self.stopped:
            with pytest.raises(ManagerClosed):
                if op[0] == "touch":
                    self.handle.touch(op[1])
                else:
                    self.handle.touch_many(op[1])
            return
        now = self.now()
        if op[0] == "touch":
            expected = self.model_touch(op[1], now)
            assert self.handle.touch(op[1]) is expected, op
        else:
            expected_count = sum(self.model_touch(name, now) for name in op[1])
            assert self.handle.touch_many(op[1]) == expected_count, op

    def unqueued(self, op: tuple[Any, ...]) -> bool:
        if op[0] not in ("touch", "touch_many"):
            return False
        self.call_touch(op)
        return True

    @rule(op=touches)
    def touch_alone(self, op: tuple[Any, ...]) -> None:
        async def go() -> None:
            self.call_touch(op)

        self.run(go())

    @rule(batch=st.lists(st.one_of(ops, touches), min_size=2, max_size=8))
    def touch_among_queued_commands(self, batch: list[tuple[Any, ...]]) -> None:
        """try_ calls queue commands without yielding; a touch among them acts after them (they are applied
        first, which empties the command queue), never on the state they replace."""

        async def go() -> None:
            self.queue_without_yielding(batch)

        self.run(go())

    @rule(name=names, step=st.integers(1, 8).map(lambda k: k / 16), count=st.integers(1, 6))
    def keep_touching(self, name: str, step: float, count: int) -> None:
        """A timer touched over and over as time passes (an active connection) never fires meanwhile,
        however often its old deadlines come round; the model checks each step."""
        for _ in range(count):
            if self.stopped:
                return

            async def go() -> None:
                self.call_touch(("touch", name))

            self.run(go())
            self.received_events_match_the_model()
            self.state_matches_the_model()
            self.run(asyncio.sleep(step))
            self.received_events_match_the_model()


def test_touch_matches_the_set_model(caplog: pytest.LogCaptureFixture) -> None:
    """Each core under the state machine with touches (the ``core`` fixture has patched it in)."""
    caplog.set_level(logging.CRITICAL, logger="timer_manager")  # the full-queue WARNINGs are expected
    run_state_machine_as_test(TouchMachine, settings=settings())
