"""The manager on real event loops and the real clock (conftest runs each async test on asyncio and
uvloop). uvloop's clock is libuv's, with millisecond timers: a loop timer may run a little before
the float deadline it was given. The manager must never deliver an event before its deadline, or out
of order, whatever the loop's clock resolution.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from timer_manager import TimerExpired, TimerManager

pytestmark = pytest.mark.usefixtures("core")


@pytest.mark.parametrize("heartbeat", [0.0, 0.0005, 0.003])
async def test_sub_millisecond_spacing_never_early_never_out_of_order(heartbeat: float) -> None:
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("clock", heartbeat, 4096, 64)
    task = asyncio.create_task(manager.run())
    rng = random.Random(5)
    count = 1500
    # Deadlines 0-150 ms ahead with sub-millisecond spacing (many closer than uvloop's 1 ms),
    # set in random order, with ties.
    offsets = [round(i * 0.0001, 7) for i in range(count)]
    offsets += offsets[:100]  # ties: equal offsets, set later
    order = list(range(len(offsets)))
    rng.shuffle(order)
    base = loop.time() + 0.01
    items = [(f"t{i}", base + offsets[i]) for i in order]
    expected_deadlines = dict(items)
    for name, when in items:
        await handle.set_timer_at(name, when)
    received: list[tuple[TimerExpired, float]] = []
    while len(received) < len(items):
        events = await asyncio.wait_for(handle.recv_events(64), 5.0)
        at = loop.time()
        for event in events:
            received.append((event, at))
    for event, at in received:
        assert at >= event.deadline, f"{event.name} received at {at!r}, before its deadline {event.deadline!r}"
        assert event.deadline == expected_deadlines[event.name]
    deadlines = [event.deadline for event, _ in received]
    assert deadlines == sorted(deadlines), "out of deadline order"
    # Ties come out in the order they were set.
    set_position = {name: position for position, (name, _) in enumerate(items)}
    for (a, _), (b, _) in itertools.pairwise(received):
        if a.deadline == b.deadline:
            assert set_position[a.name] < set_position[b.name], (a, b)
    assert manager.stats().fired == len(items)
    await handle.shutdown()
    await task


async def test_relative_sets_never_early_on_this_loop() -> None:
    """set_timer with sub-millisecond durations, checked against the loop's own clock on receipt."""
    loop = asyncio.get_running_loop()
    manager, handle = TimerManager.new("clock", 0, 1024, 1024)
    task = asyncio.create_task(manager.run())
    for i in range(500):
        await handle.set_timer(f"r{i}", (i % 37) * 0.00013)
        if i % 50 == 0:
            await asyncio.sleep(0.0003)
    last = None
    for _ in range(500):
        event = await asyncio.wait_for(handle.recv_event(), 5.0)
        assert event is not None
        assert loop.time() >= event.deadline
        if last is not None:
            assert event.deadline >= last
        last = event.deadline
    await handle.shutdown()
    await task
