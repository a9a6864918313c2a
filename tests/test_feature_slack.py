"""``timer_slack``: timers due soon after a delivery wait for one wake-up together, never early, in order.

The rule: the wake-up for the earliest deadline's tick comes no sooner than ``timer_slack`` after the
last pass that delivered a timer. A timer alone (the previous delivery longer ago than the slack) is
delivered at its tick; with ``timer_slack=0`` every timer is.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

import pytest
from support import ASYNCIO_ONLY, running

from timer_manager import TimerExpired, TimerHandle, TimerManager
from timer_manager.manager import DEFAULT_TIMER_SLACK

pytestmark = pytest.mark.usefixtures("core")

LOOPTIME_TICK = 1e-6  # looptime keeps its clock in integer microseconds
NEAR = 2 * LOOPTIME_TICK  # a slack counted from a delivery instant that looptime rounded
SLACK = 2.0**-8  # 3.90625 ms, binary-exact
STEP = 2.0**-10  # 0.9765625 ms


async def sleep_until_dyadic() -> None:
    """Under looptime: sleep until a binary-exact loop time (whole second + 0.375)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(math.floor(loop.time()) + 1.375 - loop.time())


async def receive_all(handle: TimerHandle, count: int) -> list[tuple[str, float, float]]:
    """``count`` events as ``(name, deadline, loop time received)``."""
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(count):
        event = await asyncio.wait_for(handle.recv_event(), 30)
        assert isinstance(event, TimerExpired)
        out.append((event.name, event.deadline, loop.time()))
    return out


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_timers_due_within_the_slack_of_a_delivery_wait_for_one_wakeup_virtual() -> None:
    """A timer alone is delivered at its deadline; the ones due within the slack after that delivery come
    together at delivery + slack; one due later than that, alone again, at its deadline.
    catches: slack ignored, slack applied to a lone timer, a timer delivered early, order broken."""
    await sleep_until_dyadic()
    async with running(heartbeat=0, timer_slack=SLACK) as (_, handle, _task):
        start = asyncio.get_running_loop().time()
        for name, offset in (("a", STEP), ("b", 2 * STEP), ("c", 3 * STEP), ("d", 1.0)):
            handle.try_set_timer(name, offset)
        received = await receive_all(handle, 4)
    first = start + STEP
    assert [(name, deadline) for name, deadline, _ in received] == [
        ("a", first),
        ("b", start + 2 * STEP),
        ("c", start + 3 * STEP),
        ("d", start + 1.0),
    ]
    at = [when for _, _, when in received]
    assert at[0] == pytest.approx(first, abs=LOOPTIME_TICK)
    assert at[1] == at[2] == pytest.approx(first + SLACK, abs=NEAR)
    assert at[3] == pytest.approx(start + 1.0, abs=LOOPTIME_TICK)


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_zero_slack_delivers_each_timer_at_its_deadline_virtual() -> None:
    """``timer_slack=0`` at heartbeat 0: every timer at its own deadline, however close together.
    catches: a slack applied when none was asked for."""
    await sleep_until_dyadic()
    async with running(heartbeat=0, timer_slack=0) as (_, handle, _task):
        start = asyncio.get_running_loop().time()
        for index in range(1, 5):
            handle.try_set_timer(f"t{index}", index * STEP)
        received = await receive_all(handle, 4)
    for index, (name, deadline, at) in enumerate(received, start=1):
        assert (name, deadline) == (f"t{index}", start + index * STEP)
        assert at == pytest.approx(deadline, abs=LOOPTIME_TICK)


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_slack_below_the_heartbeat_leaves_the_grid_alone_virtual() -> None:
    """With a slack shorter than the heartbeat, each timer comes at its own grid tick.
    catches: the slack delaying a tick that the heartbeat already spaces out."""
    await sleep_until_dyadic()
    heartbeat = 2.0**-6  # 15.625 ms
    async with running(heartbeat=heartbeat, timer_slack=SLACK) as (_, handle, _task):
        origin = asyncio.get_running_loop().time()
        handle.try_set_timer("a", heartbeat / 2)
        handle.try_set_timer("b", heartbeat * 1.5)
        received = await receive_all(handle, 2)
    assert [name for name, _, _ in received] == ["a", "b"]
    assert received[0][2] == pytest.approx(origin + heartbeat, abs=LOOPTIME_TICK)
    assert received[1][2] == pytest.approx(origin + 2 * heartbeat, abs=LOOPTIME_TICK)


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_slack_above_the_heartbeat_spaces_wakeups_virtual() -> None:
    """With a slack longer than the heartbeat, a tick soon after a delivery waits for the slack; the
    timers then delivered are those due at the last tick passed.
    catches: a wake-up sooner than the slack, a timer delivered before its tick."""
    await sleep_until_dyadic()
    heartbeat = STEP
    async with running(heartbeat=heartbeat, timer_slack=SLACK) as (_, handle, _task):
        origin = asyncio.get_running_loop().time()
        handle.try_set_timer("a", heartbeat / 2)  # tick 1
        handle.try_set_timer("b", heartbeat * 1.5)  # tick 2: within the slack of a's delivery
        received = await receive_all(handle, 2)
    assert received[0][2] == pytest.approx(origin + heartbeat, abs=LOOPTIME_TICK)
    assert received[1][2] == pytest.approx(origin + heartbeat + SLACK, abs=NEAR)


async def test_slack_keeps_order_and_is_never_early_real_time() -> None:
    """Real time, both loops: 300 timers 0.1 ms apart at the default slack: every one received, in
    deadline order, none before its deadline (received loop time >= deadline).
    catches: early delivery from a coalesced wake-up, a timer lost between wake-ups."""
    loop = asyncio.get_running_loop()
    async with running(heartbeat=0, events=512, commands=512) as (_, handle, _task):
        for index in range(300):
            handle.try_set_timer(f"t{index:03d}", 0.02 + index * 1e-4)
        received = await receive_all(handle, 300)
    assert [name for name, _, _ in received] == [f"t{index:03d}" for index in range(300)]
    assert all(at >= deadline for _, deadline, at in received)
    assert loop.time() >= received[-1][1]


def test_default_slack() -> None:
    """The default is the documented 2 ms; the option is keyword-only and reaches the manager."""
    assert DEFAULT_TIMER_SLACK == 0.002
    manager, _ = TimerManager.new("slack", 0, 8, 8)
    assert manager._runner.slack == DEFAULT_TIMER_SLACK
    manager, _ = TimerManager.new("slack", 0, 8, 8, timer_slack=0.0005)
    assert manager._runner.slack == 0.0005


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-0.001, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (10**400, ValueError),  # an int past any float: infinite
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_bad_slack_is_refused_at_construction(value: object, error: type[Exception]) -> None:
    """catches: a negative, NaN, infinite or non-number slack accepted."""
    with pytest.raises(error, match="timer_slack"):
        TimerManager("slack", 0, timer_slack=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("slack", [1e9, 1e300, 61, timedelta(hours=1)])
async def test_a_slack_over_a_minute_is_accepted_with_a_warning_at_the_callers_line(slack: object) -> None:
    """A slack over 60 s (1e9, or 100 meant as 100 ms) is most likely a unit mistake, as a heartbeat that long
    is: a UserWarning names it, pointing at the caller's line (through new(), the constructor and open()); 60 s
    and less pass silently. Catches: an absurd slack taken without a word (timers due after a delivery would
    wait that long)."""
    with pytest.warns(UserWarning, match=r"timer_slack=\S+ s") as warned:
        TimerManager.new("suspicious", 0, 8, 8, timer_slack=slack)
    assert warned[0].filename == __file__
    with pytest.warns(UserWarning, match="timer_slack") as warned:
        TimerManager("suspicious", 0, timer_slack=slack)  # type: ignore[arg-type]
    assert warned[0].filename == __file__
    with pytest.warns(UserWarning, match="timer_slack") as warned:
        async with TimerManager.open("suspicious", 0, timer_slack=slack):
            pass
    assert warned[0].filename == __file__
    TimerManager.new("fine", 0, 8, 8, timer_slack=60)  # the suite turns any warning into an error
