"""The behaviour contract, points 10 and 11: bad input refused at the call; logging."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from timer_manager import CancellationToken, TimerHandle, TimerManager

BAD_DURATIONS = [
    ("1.0", TypeError),
    (None, TypeError),
    (True, TypeError),
    (False, TypeError),
    (b"1", TypeError),
    (-1, ValueError),
    (-0.5, ValueError),
    (timedelta(seconds=-1), ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
]
BAD_NAMES = [None, 1, b"name", ("a",), 1.5]


def duration_calls(handle: TimerHandle, value: Any) -> list[Callable[[], Any]]:
    return [
        lambda: handle.set_timer("n", value),
        lambda: handle.try_set_timer("n", value),
        lambda: handle.set_interval("n", value),
        lambda: handle.try_set_interval("n", value),
        lambda: handle.set_timers([("ok", 1.0), ("n", value)]),
        lambda: handle.try_set_timers([("ok", 1.0), ("n", value)]),
    ]


def name_calls(handle: TimerHandle, name: Any) -> list[Callable[[], Any]]:
    return [
        lambda: handle.set_timer(name, 1.0),
        lambda: handle.try_set_timer(name, 1.0),
        lambda: handle.set_timer_at(name, 1.0),
        lambda: handle.try_set_timer_at(name, 1.0),
        lambda: handle.set_interval(name, 1.0),
        lambda: handle.try_set_interval(name, 1.0),
        lambda: handle.set_timers([("ok", 1.0), (name, 1.0)]),
        lambda: handle.try_set_timers([("ok", 1.0), (name, 1.0)]),
        lambda: handle.cancel_timer(name),
        lambda: handle.try_cancel_timer(name),
        lambda: handle.cancel_timers(["ok", name]),
        lambda: handle.try_cancel_timers(["ok", name]),
    ]


async def _call(call: Callable[[], Any]) -> None:
    result = call()
    if asyncio.iscoroutine(result):
        await result


@pytest.mark.usefixtures("core")
async def test_bad_input_refused_at_the_call_manager_keeps_running() -> None:
    """Every set/cancel call with a non-str name or a bad duration raises TypeError/ValueError naming the
    value; nothing is queued (no timer, no event, no set counted), and the manager keeps running with its
    timers. catches: validation in the manager (stopping it), partial batches queued, bool accepted."""
    manager, handle = TimerManager.new("input", 0.01, 100, 100)
    task = asyncio.create_task(manager.run())
    await handle.set_timer("keep", 1000.0)
    await handle.flush()
    for value, error in BAD_DURATIONS:
        for call in duration_calls(handle, value):
            with pytest.raises(error) as info:
                await _call(call)
            message = str(info.value)
            assert "duration" in message or "period" in message
            assert repr(value) in message
    for name in BAD_NAMES:
        for call in name_calls(handle, name):
            with pytest.raises(TypeError, match="str"):
                await _call(call)
    with pytest.raises(TypeError):
        await handle.cancel_timers("abc")
    for when, error in [(math.nan, ValueError), (math.inf, ValueError), ("1", TypeError), (True, TypeError)]:
        with pytest.raises(error):
            await handle.set_timer_at("n", when)  # type: ignore[arg-type]  # bad on purpose
    await handle.flush()
    assert not task.done()
    assert handle.pending_count() == 1
    assert "keep" in handle
    assert manager.stats().set == 1
    await handle.set_timer("after", 0.01)
    event = await asyncio.wait_for(handle.recv_event(), 10)
    assert event is not None
    assert event.name == "after"
    await handle.shutdown()
    await task


@pytest.mark.usefixtures("core")
async def test_str_subclass_name_stored_as_plain_str() -> None:
    """A str subclass is accepted and comes back as an exact str. catches: the subclass object (with its
    own hash/eq) stored in the table or handed out in events."""

    class Name(str):
        def __hash__(self) -> int:
            return 0

    manager, handle = TimerManager.new("sub", 0, 10, 10)
    task = asyncio.create_task(manager.run())
    await handle.set_timer(Name("s"), 0.0)
    event = await asyncio.wait_for(handle.recv_event(), 10)
    assert event is not None
    assert type(event.name) is str
    assert event.name == "s"
    await handle.shutdown()
    await task


@pytest.mark.parametrize(
    ("kwargs", "error", "what"),
    [
        ({"heartbeat_interval": "0.01"}, TypeError, "heartbeat_interval"),
        ({"heartbeat_interval": None}, TypeError, "heartbeat_interval"),
        ({"heartbeat_interval": True}, TypeError, "heartbeat_interval"),
        ({"heartbeat_interval": -0.01}, ValueError, "heartbeat_interval"),
        ({"heartbeat_interval": math.nan}, ValueError, "heartbeat_interval"),
        ({"heartbeat_interval": math.inf}, ValueError, "heartbeat_interval"),
        ({"command_buffer_size": 1.0}, TypeError, "command_buffer_size"),
        ({"command_buffer_size": True}, TypeError, "command_buffer_size"),
        ({"command_buffer_size": "10"}, TypeError, "command_buffer_size"),
        ({"command_buffer_size": 0}, ValueError, "command_buffer_size"),
        ({"command_buffer_size": -1}, ValueError, "command_buffer_size"),
        ({"event_buffer_size": 2.0}, TypeError, "event_buffer_size"),
        ({"event_buffer_size": False}, TypeError, "event_buffer_size"),
        ({"event_buffer_size": None}, TypeError, "event_buffer_size"),
        ({"event_buffer_size": 0}, ValueError, "event_buffer_size"),
        ({"event_buffer_size": -1}, ValueError, "event_buffer_size"),
        ({"name": 5}, TypeError, "name"),
        ({"name": None}, TypeError, "name"),
        ({"cancel_token": "token"}, TypeError, "cancel_token"),
    ],
)
def test_bad_construction_arguments(kwargs: dict[str, Any], error: type[Exception], what: str) -> None:
    """TimerManager.new refuses a bad heartbeat, buffer size, name or token with a message naming the
    argument and the value. catches: bool taken as a size, 0 accepted, NaN heartbeat accepted."""
    arguments: dict[str, Any] = {
        "name": "m",
        "heartbeat_interval": 0.01,
        "command_buffer_size": 10,
        "event_buffer_size": 10,
        "cancel_token": CancellationToken(),
    }
    arguments.update(kwargs)
    with pytest.raises(error, match=what) as info:
        TimerManager.new(**arguments)
    if what != "cancel_token":
        assert repr(kwargs[what]) in str(info.value)


@pytest.mark.usefixtures("core")
def test_good_construction_arguments() -> None:
    """A timedelta or int heartbeat, 0 heartbeat and size 1 are fine. catches: over-strict checks."""
    for heartbeat in (0, 0.0, 1, timedelta(milliseconds=10)):
        TimerManager.new("m", heartbeat, 1, 1)


@pytest.mark.usefixtures("core")
async def test_recv_events_bad_max_events() -> None:
    """recv_events/try_recv_events refuse max_events that is not an int >= 1."""
    _, handle = TimerManager.new("m", 0.01, 1, 1)
    for value, error in [(0, ValueError), (-1, ValueError), (True, TypeError), (1.0, TypeError)]:
        with pytest.raises(error, match="max_events"):
            handle.try_recv_events(value)  # type: ignore[arg-type]  # bad on purpose
        with pytest.raises(error, match="max_events"):
            await handle.recv_events(value)  # type: ignore[arg-type]  # bad on purpose


# -- 11. logging ------------------------------------------------------------------------------------------


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "timer_manager" and r.levelno == level]


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("how", ["shutdown", "token", "task-cancelled"])
async def test_info_on_start_and_stop_with_name_and_reason(how: str, caplog: pytest.LogCaptureFixture) -> None:
    """INFO when started and when stopped, each naming the manager (repr) and the stop giving its reason.
    catches: missing lifecycle logs, the reason not said."""
    caplog.set_level(logging.INFO, logger="timer_manager")
    token = CancellationToken()
    manager, handle = TimerManager.new("logged", 0.01, 10, 10, token)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0.01)
    if how == "shutdown":
        await handle.shutdown()
        await task
        reason = "shutdown"
    elif how == "token":
        token.cancel()
        await task
        reason = "token"
    else:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        reason = "cancelled"
    infos = _records(caplog, logging.INFO)
    assert len(infos) == 2
    assert "'logged'" in infos[0]
    assert "started" in infos[0]
    assert "'logged'" in infos[1]
    assert "stopped" in infos[1]
    assert reason in infos[1]


@pytest.mark.usefixtures("core")
async def test_a_manager_that_fails_logs_its_stop_at_error(caplog: pytest.LogCaptureFixture) -> None:
    """Contract 11 as the docs now say it: a manager that stops because it failed logs its stop at ERROR
    (its name and the exception), not at INFO, which the contract promised for every stop. Catches: the
    docs and the code disagreeing on the level again."""
    caplog.set_level(logging.INFO, logger="timer_manager")
    manager, _handle = TimerManager.new("fails", 0, 4, 4)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0)

    def broken_clock() -> float:
        raise RuntimeError("broken clock")

    manager._runner.clock = broken_clock
    manager._runner.schedule_service()
    with pytest.raises(RuntimeError, match="broken clock"):
        await asyncio.wait_for(task, 30)
    errors = _records(caplog, logging.ERROR)
    assert len(errors) == 1
    assert "'fails'" in errors[0]
    assert "stopped" in errors[0]
    assert "broken clock" in errors[0]
    assert not any("stopped" in message for message in _records(caplog, logging.INFO))


@pytest.mark.usefixtures("core")
async def test_debug_for_each_command_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    """With DEBUG on, one DEBUG record per command, in order, names in repr.
    catches: commands not logged; names logged raw."""
    caplog.set_level(logging.DEBUG, logger="timer_manager")
    manager, handle = TimerManager.new("dbg", 0.01, 10, 10)
    task = asyncio.create_task(manager.run())
    handle.try_set_timer("a", 100.0)
    handle.try_cancel_timer("b")
    handle.try_cancel_all_timers()
    await handle.flush()
    debugs = _records(caplog, logging.DEBUG)
    assert len(debugs) == 4
    assert "set" in debugs[0]
    assert "'a'" in debugs[0]
    assert "cancel" in debugs[1]
    assert "'b'" in debugs[1]
    assert "cancel_all" in debugs[2]
    assert "flush" in debugs[3]
    await handle.shutdown()
    await task


@pytest.mark.usefixtures("core")
async def test_nothing_at_debug_when_off_and_checked_once_per_batch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With DEBUG off, logger.debug is never called for 200 commands, and the level is asked of the logger
    once per batch, not per command (a set applied at the call reads the logger's cache of its answer).
    catches: formatting/calling debug per command while DEBUG is off."""
    caplog.set_level(logging.INFO, logger="timer_manager")
    logger = logging.getLogger("timer_manager")
    debug_calls: list[Any] = []
    checks: list[int] = []
    is_enabled_for = logger.isEnabledFor
    monkeypatch.setattr(logger, "debug", lambda *a, **k: debug_calls.append(a))
    manager, handle = TimerManager.new("quiet", 0.01, 1000, 10)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0.01)

    def counted(level: int) -> bool:
        checks.append(level)
        return is_enabled_for(level)

    monkeypatch.setattr(logger, "isEnabledFor", counted)
    for i in range(200):
        handle.try_set_timer(f"t{i}", 100.0)
    await handle.flush()
    assert debug_calls == []
    assert checks.count(logging.DEBUG) <= 2  # the batch of 200 (and the flush, if in its own batch)
    await handle.shutdown()
    await task
    assert debug_calls == []


@pytest.mark.usefixtures("core")
async def test_names_logged_with_repr_cannot_forge_lines(caplog: pytest.LogCaptureFixture) -> None:
    """A manager name and a timer name with a newline appear escaped in every record.
    catches: %s instead of %r (log injection)."""
    caplog.set_level(logging.DEBUG, logger="timer_manager")
    evil = "x\nINFO forged"
    manager, handle = TimerManager.new(evil, 0.01, 10, 10)
    task = asyncio.create_task(manager.run())
    await handle.set_timer(evil, 100.0)
    await handle.flush()
    await handle.shutdown()
    await task
    messages = [r.getMessage() for r in caplog.records if r.name == "timer_manager"]
    assert len(messages) >= 4
    for message in messages:
        assert "\n" not in message
    assert any(repr(evil) in message for message in _records(caplog, logging.DEBUG))
    assert repr(evil) in _records(caplog, logging.INFO)[0]


@pytest.mark.usefixtures("default_core")
def test_error_messages_stay_short_for_huge_or_long_input() -> None:
    """A 400-digit int, an int too long to print, or a long string is named in a line, not printed whole.
    Catches: error messages of hundreds of characters, or a ValueError from int printing itself."""
    for bad, error in ((10**400, ValueError), (10**5000, ValueError), ("s" * 500, TypeError)):
        with pytest.raises(error) as raised:
            TimerManager.new("short", bad, 8, 8)  # type: ignore[arg-type]
        assert len(str(raised.value)) < 200, str(raised.value)
        assert "heartbeat_interval" in str(raised.value)


@pytest.mark.usefixtures("default_core")
def test_a_heartbeat_over_a_minute_is_accepted_with_a_warning_at_the_callers_line() -> None:
    """A heartbeat over 60 s (1e300, or 100 meant as 100 ms) is most likely a unit mistake: a UserWarning
    names it, pointing at the caller's line; 60 s and less pass silently."""
    with pytest.warns(UserWarning, match=r"heartbeat_interval=1e\+300 s") as warned:
        TimerManager.new("suspicious", 1e300, 8, 8)
    assert warned[0].filename == __file__
    with pytest.warns(UserWarning, match="heartbeat_interval=100 s"):
        TimerManager("suspicious", 100)
    TimerManager.new("fine", 60, 8, 8)  # the suite turns any warning into an error


@pytest.mark.usefixtures("core")
async def test_a_set_is_logged_at_debug_while_the_manager_runs_with_nothing_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With nothing queued, a set on the loop's thread is applied at the call, unless each command is logged:
    then it is queued, and logged as it is applied. Catches: sets applied at the call unlogged at DEBUG."""
    manager, handle = TimerManager.new("dbg-at-call", 0.01, 10, 10)
    task = asyncio.create_task(manager.run())
    await handle.flush()
    handle.try_set_timer("quiet", 100.0)  # DEBUG off: applied at the call
    assert manager.stats().command_queue_high_water == 1  # the flush's marker only
    caplog.set_level(logging.DEBUG, logger="timer_manager")
    handle.try_set_timer("a", 100.0)
    await handle.set_timer("b", 100.0)
    await handle.flush()
    debugs = _records(caplog, logging.DEBUG)
    assert ["'a'" in debugs[0], "'b'" in debugs[1], "flush" in debugs[2]] == [True, True, True], debugs
    assert all(message.startswith("timer manager 'dbg-at-call': set") for message in debugs[:2]), debugs
    await handle.shutdown()
    await task
