"""Hostile and odd input: every value either works as documented or is refused at the call with a
clear ``TypeError``/``ValueError``, and the manager keeps every timer it had (after the odd call, the
earlier timers still fire, exactly at their deadlines, in order). Runs in virtual time.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from support import virtual

from timer_manager import TimerExpired, TimerManager

KEEP = [("keep-1", 1.0), ("keep-2", 2.0), ("keep-3", 2.0)]  # deadlines relative to the start


class _OddHash(str):
    def __hash__(self) -> int:
        raise RuntimeError("no hash for you")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq for you")

    __ne__ = __eq__


class _AlwaysEqual(str):
    def __hash__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return True

    __ne__ = lambda self, other: False  # noqa: E731


class _CountingHash(str):
    calls = 0

    def __hash__(self) -> int:
        _CountingHash.calls += 1
        return _CountingHash.calls  # different every time

    def __eq__(self, other: object) -> bool:
        _CountingHash.calls += 1
        return False


async def _manager(heartbeat: float = 0.0, **kwargs: Any) -> tuple[TimerManager, Any, asyncio.Task[None]]:
    manager, handle = TimerManager.new("hostile", heartbeat, 16, 16, **kwargs)
    task = asyncio.create_task(manager.run())
    for name, delay in KEEP:
        await handle.set_timer(name, delay)
    await handle.flush()
    return manager, handle, task


async def _check_kept(
    handle: Any, task: asyncio.Task[None], start: float, extra: Sequence[str] = ()
) -> list[TimerExpired]:
    """The earlier timers fire exactly (plus the ``extra`` names that are due by then), and the
    manager is still running."""
    loop = asyncio.get_running_loop()
    expected = sorted([(start + delay, name) for name, delay in KEEP])
    got: list[TimerExpired] = []
    while len(got) < len(KEEP) + len(extra):
        event = await asyncio.wait_for(handle.recv_event(), 10.0)
        assert event is not None
        assert loop.time() >= event.deadline
        got.append(event)
    kept = [(e.deadline, e.name) for e in got if e.name.startswith("keep-")]
    assert kept == expected
    assert sorted(e.name for e in got if not e.name.startswith("keep-")) == sorted(extra)
    assert not task.done(), task
    return got


async def _stop(handle: Any, task: asyncio.Task[None]) -> None:
    await handle.shutdown()
    await task


# ---------------------------------------------------------------------- names


@pytest.mark.usefixtures("core")
@virtual
@pytest.mark.parametrize("cls", [_OddHash, _AlwaysEqual, _CountingHash], ids=lambda c: c.__name__)
async def test_str_subclass_names_are_stored_as_plain_str(cls: type[str]) -> None:
    _manager_obj, handle, task = await _manager()
    start = min(handle.deadline(name) - delay for name, delay in KEEP)
    odd = cls("keep-1")  # equal in value to an existing name: it re-sets it, as a plain str would
    await handle.set_timer(cls("odd"), 0.5)
    await handle.set_timer(odd, 1.0)
    await handle.cancel_timer(cls("nothing"))
    await handle.set_timers([(cls("batch"), 0.5)])
    await handle.cancel_timers([cls("batch")])
    await handle.flush()
    assert handle.pending_count() == len(KEEP) + 1
    assert handle.deadline(cls("odd")) == start + 0.5
    got = await _check_kept(handle, task, start, extra=["odd"])
    assert all(type(event.name) is str for event in got)
    await _stop(handle, task)


@pytest.mark.usefixtures("core")
@virtual
@pytest.mark.parametrize(
    "name", ["", "x" * 10**6, "\x00", "é\u2028\U0001f600"], ids=["empty", "1e6-chars", "nul", "unicode"]
)
async def test_odd_but_valid_names_work(name: str) -> None:
    _manager_obj, handle, task = await _manager()
    start = min(handle.deadline(n) - d for n, d in KEEP)
    await handle.set_timer(name, 0.5)
    await handle.flush()
    assert name in handle
    got = await _check_kept(handle, task, start, extra=[name])
    assert got[0].name == name
    assert got[0].deadline == start + 0.5
    await _stop(handle, task)


@pytest.mark.usefixtures("core")
@virtual
@pytest.mark.parametrize("name", [None, b"bytes", 1, 1.5, ("a",), object()], ids=repr)
async def test_non_str_names_are_refused_and_nothing_is_queued(name: Any) -> None:
    _manager_obj, handle, task = await _manager()
    start = min(handle.deadline(n) - d for n, d in KEEP)
    calls: list[Callable[[], object]] = [
        lambda: handle.try_set_timer(name, 1.0),
        lambda: handle.try_cancel_timer(name),
        lambda: handle.try_set_timers([("ok", 0.1), (name, 1.0)]),
        lambda: handle.try_cancel_timers(["keep-1", name]),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="name"):
            call()
    with pytest.raises(TypeError):
        await handle.set_timer(name, 1.0)
    with pytest.raises(TypeError):
        await handle.cancel_timers(["keep-1", name])  # all checked before any is queued
    await handle.flush()
    assert handle.pending_count() == len(KEEP)
    await _check_kept(handle, task, start)
    await _stop(handle, task)


@pytest.mark.usefixtures("core")
@virtual
async def test_names_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Names (and the manager's own name) reach the log through repr(): no raw newline, carriage
    return or escape character ever appears in a message, at any level."""
    caplog.set_level(logging.DEBUG, logger="timer_manager")
    forged = "x\n2024-01-01 00:00:00 CRITICAL forged line\r\x1b[2J\x00"
    manager, handle = TimerManager.new(f"mgr{forged}", 0, 2, 1)
    task = asyncio.create_task(manager.run())
    await handle.set_timer(forged, 0.0)
    await handle.set_timer(forged + "2", 0.0)  # the event queue is full: the WARNING
    await handle.set_timers([(forged + "3", 5.0)])
    await handle.cancel_timer(forged + "3")
    await handle.cancel_timers([forged])
    await handle.flush()
    await _stop(handle, task)
    messages = [record.getMessage() for record in caplog.records if record.name.startswith("timer_manager")]
    assert any("set" in m for m in messages), messages  # DEBUG command records were emitted
    assert any(r.levelno == logging.WARNING for r in caplog.records), messages
    for message in messages:
        for char in ("\n", "\r", "\x1b", "\x00"):
            assert char not in message, (char, message)
    for record in caplog.records:
        assert "forged line" not in record.getMessage() or "\\n" in record.getMessage()


# ---------------------------------------------------------------------- durations


ACCEPTED = [
    pytest.param(1e-12, 1e-12, id="1e-12"),
    pytest.param(0, 0.0, id="0"),
    pytest.param(-0.0, 0.0, id="-0.0"),
    pytest.param(0.5, 0.5, id="0.5"),
    pytest.param(Decimal("0.5"), 0.5, id="Decimal"),
    pytest.param(Fraction(1, 2), 0.5, id="Fraction"),
    pytest.param(timedelta(milliseconds=500), 0.5, id="timedelta"),
    pytest.param(timedelta(0), 0.0, id="timedelta-0"),
]
FAR = [
    pytest.param(1e15, id="1e15"),
    pytest.param(sys.float_info.max, id="float-max"),
    pytest.param(timedelta.max, id="timedelta.max"),
    pytest.param(10**300, id="10**300"),
]
REFUSED = [
    pytest.param(True, TypeError, id="True"),
    pytest.param(False, TypeError, id="False"),
    pytest.param("1", TypeError, id="str"),
    pytest.param(None, TypeError, id="None"),
    pytest.param(1j, TypeError, id="complex"),
    pytest.param(-1e-12, ValueError, id="-1e-12"),
    pytest.param(-1, ValueError, id="-1"),
    pytest.param(float("nan"), ValueError, id="nan"),
    pytest.param(float("inf"), ValueError, id="inf"),
    pytest.param(float("-inf"), ValueError, id="-inf"),
    pytest.param(Decimal("NaN"), ValueError, id="Decimal-NaN"),
    pytest.param(Decimal("sNaN"), ValueError, id="Decimal-sNaN"),
    pytest.param(Decimal("-1"), ValueError, id="Decimal-neg"),
    pytest.param(10**400, ValueError, id="10**400"),
    pytest.param(timedelta(seconds=-1), ValueError, id="timedelta-neg"),
    pytest.param(timedelta.min, ValueError, id="timedelta.min"),
]


@pytest.mark.usefixtures("core")
@virtual
@pytest.mark.parametrize(("duration", "seconds"), ACCEPTED)
@pytest.mark.parametrize("heartbeat", [0.0, 0.01])
async def test_accepted_durations_fire_on_time(duration: Any, seconds: float, heartbeat: float) -> None:
    _manager_obj, handle, task = await _manager(heartbeat)
    start = min(handle.deadline(n) - d for n, d in KEEP)
    loop = asyncio.get_running_loop()
    now = loop.time()
    await handle.set_timer("odd", duration, data="payload")
    await handle.flush()
    if seconds > 0:
        assert handle.deadline("odd") == now + seconds
    got = await _check_kept(handle, task, start, extra=["odd"])
    odd = next(e for e in got if e.name == "odd")
    assert odd.deadline == now + seconds
    assert odd.data == "payload"
    assert got[0] is odd
    await _stop(handle, task)


@pytest.mark.usefixtures("core")
@virtual
@pytest.mark.parametrize("heartbeat", [0.0, 0.01, 1.0])
@pytest.mark.parametrize("duration", FAR)
async def test_far_durations_are_accepted_and_never_fire_early(duration: Any, heartbeat: float) -> None:
    """Finite but enormous: accepted (or refused with ValueError), never fired, never harmful."""
    _manager_obj, handle, task = await _manager(heartbeat)
    start = min(handle.deadline(n) - d for n, d in KEEP)
    try:
        await handle.set_timer("far", duration)
    except ValueError:
        accepted = False
    else:
        accepted = True
    await handle.set_timers([("far-batch", duration)]) if accepted else None
    await handle.flush()
    assert not task.done(), task.exception() if task.done() else None
    await _check_kept(handle, task, start)
    if accepted:
        assert "far" in handle
        assert handle.next_deadline() is not None
        assert handle.next_deadline() >= 1e13
    await asyncio.sleep(100.0)
    with pytest.raises(Exception, match="no event"):
        handle.try_recv_event()
    assert not task.done(), task.exception() if task.done() else None
    await _stop(handle, task)


@pytest.mark.usefixtures("core")
@virtual
@pytest.mark.parametrize(("duration", "error"), REFUSED)
async def test_refused_durations_leave_the_manager_intact(duration: Any, error: type[Exception]) -> None:
    _manager_obj, handle, task = await _manager(0.01)
    start = min(handle.deadline(n) - d for n, d in KEEP)
    with pytest.raises(error, match="duration"):
        handle.try_set_timer("bad", duration)
    with pytest.raises(error, match="duration"):
        await handle.set_timer("keep-1", duration)  # must not disturb the existing timer
    with pytest.raises(error):
        await handle.set_timers([("fine", 0.1), ("bad", duration)])  # all or nothing
    with pytest.raises(error):
        handle.try_set_timers([("fine", 0.1), ("bad", duration)])
    with pytest.raises(error):
        await handle.set_interval("bad", duration)
    await handle.flush()
    assert "bad" not in handle
    assert "fine" not in handle
    assert handle.pending_count() == len(KEEP)
    await _check_kept(handle, task, start)
    await _stop(handle, task)


@pytest.mark.usefixtures("core")
@virtual
async def test_numpy_scalars() -> None:
    numpy = pytest.importorskip("numpy")
    _manager_obj, handle, task = await _manager()
    start = min(handle.deadline(n) - d for n, d in KEEP)
    now = asyncio.get_running_loop().time()
    accepted = {"f64": numpy.float64(0.5), "f32": numpy.float32(0.5), "i64": numpy.int64(1), "u8": numpy.uint8(1)}
    for name, value in accepted.items():
        await handle.set_timer(name, value)
    for value, error in [
        (numpy.bool_(True), TypeError),
        (numpy.complex128(1), TypeError),
        (numpy.float64("nan"), ValueError),
        (numpy.float64("inf"), ValueError),
        (numpy.int64(-1), ValueError),
        (numpy.array([1.0]), TypeError),
    ]:
        with pytest.raises(error):
            await handle.set_timer("bad", value)
    await handle.flush()
    for name, value in accepted.items():
        deadline = handle.deadline(name)
        assert type(deadline) is float
        assert deadline == now + float(value)
    assert "bad" not in handle
    await _check_kept(handle, task, start, extra=list(accepted))
    await _stop(handle, task)


# ---------------------------------------------------------------------- buffer sizes and heartbeats


@pytest.mark.parametrize(
    ("size", "error"),
    [
        (True, TypeError),
        (False, TypeError),
        (1.0, TypeError),
        ("4", TypeError),
        (None, TypeError),
        (0, ValueError),
        (-1, ValueError),
    ],
    ids=repr,
)
def test_bad_buffer_sizes_are_refused(size: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="command_buffer_size"):
        TimerManager.new("bad", 0.01, size, 4)
    with pytest.raises(error, match="event_buffer_size"):
        TimerManager.new("bad", 0.01, 4, size)


@pytest.mark.parametrize("heartbeat", [True, -0.01, float("nan"), float("inf"), "0.01", None], ids=repr)
def test_bad_heartbeats_are_refused(heartbeat: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="heartbeat"):
        TimerManager.new("bad", heartbeat, 4, 4)


@pytest.mark.usefixtures("core")
@virtual
async def test_huge_buffer_sizes_work() -> None:
    """2**63 (and more) for both buffers: accepted, and the manager works normally."""
    for size in (2**63, 2**63 - 1, 2**64 + 7):
        manager, handle = TimerManager.new("huge", 0.01, size, size)
        task = asyncio.create_task(manager.run())
        for name, delay in KEEP:
            handle.try_set_timer(name, delay)
        handle.try_set_timers([(f"n{i}", 0.0) for i in range(100)])
        events: list[TimerExpired] = []
        while len(events) < 100 + len(KEEP):
            events.extend(await asyncio.wait_for(handle.recv_events(2**63), 10.0))
        assert [e.name for e in events] == [f"n{i}" for i in range(100)] + [name for name, _ in KEEP]
        assert not task.done()
        await _stop(handle, task)


@pytest.mark.usefixtures("core")
@virtual
async def test_odd_heartbeats_work() -> None:
    """A tiny, an irrational-looking and a Decimal heartbeat: timers fire at their grid tick, in order."""
    for heartbeat in (1e-9, 0.1, Decimal("0.3"), Fraction(1, 3), timedelta(milliseconds=7)):
        manager, handle = TimerManager.new("grid", heartbeat, 16, 16)  # type: ignore[arg-type]  # Decimal, Fraction
        task = asyncio.create_task(manager.run())
        for i in range(10):
            await handle.set_timer(f"t{i}", i * 0.37)
        got: list[str] = []
        while len(got) < 10:
            event = await asyncio.wait_for(handle.recv_event(), 10.0)
            assert event is not None
            assert asyncio.get_running_loop().time() >= event.deadline
            got.append(event.name)
        assert got == [f"t{i}" for i in range(10)]
        await _stop(handle, task)


@pytest.mark.usefixtures("core")
@virtual
@pytest.mark.parametrize("heartbeat", [5e-324, 1e-310, 1e-305], ids=repr)
async def test_a_heartbeat_too_fine_to_count_its_ticks_keeps_the_manager_running(heartbeat: float) -> None:
    """A positive heartbeat so small that the ticks since the start overflow a float (a subnormal at once,
    1e-305 after half an hour): accepted, and the timers still fire at their deadlines, in order, never early.
    catches: the grid's floor computing ``math.floor(inf)``, ``run()`` failing and every timer discarded."""
    _manager_obj, handle, task = await _manager(heartbeat)
    start = min(handle.deadline(n) - d for n, d in KEEP)
    await asyncio.sleep(3600.0 if heartbeat == 1e-305 else 0.5)  # 1e-305: (now - origin) / heartbeat past 1.8e308
    assert not task.done(), task.exception() if task.done() else None
    await handle.set_timer("later", 2.0)  # after keep-3 either way
    loop = asyncio.get_running_loop()
    got: list[TimerExpired] = []
    for _ in range(len(KEEP) + 1):
        event = await asyncio.wait_for(handle.recv_event(), 10.0)
        assert isinstance(event, TimerExpired)
        assert loop.time() >= event.deadline
        got.append(event)
    assert [event.name for event in got] == [*(name for name, _ in KEEP), "later"]
    assert [event.deadline for event in got][:3] == [start + d for _, d in KEEP]
    assert not task.done(), task.exception() if task.done() else None
    await _stop(handle, task)


# ---------------------------------------------------------------------- the Redis backend
# The same promises on the Redis backend, against a real redis-server (``redis_server`` in conftest.py): odd input
# is refused at the call, or accepted and harmless; the manager keeps running and the backends agree.


@asynccontextmanager
async def _on_redis(server: Any, namespace: str, heartbeat: float = 0.0, **options: Any) -> AsyncIterator[Any]:
    from timer_manager.redis import RedisBackend

    backend = RedisBackend(server.url, namespace=namespace, **options)
    manager, handle = TimerManager.new(namespace, heartbeat, 16, 16, backend=backend)
    task = asyncio.create_task(manager.run())
    try:
        yield handle, task
    finally:
        if not task.done():
            await handle.shutdown()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30.0)


async def _still_works(handle: Any, task: asyncio.Task[None]) -> None:
    """A set made now fires, and the manager has not stopped."""
    await asyncio.wait_for(handle.set_timer("after", 0.01), 30.0)
    await asyncio.wait_for(handle.flush(), 30.0)
    event = await asyncio.wait_for(handle.recv_event(), 30.0)
    assert event is not None and event.name == "after"
    assert not task.done(), task.exception() if task.done() else None


@pytest.mark.usefixtures("default_core")
@pytest.mark.parametrize("period", [1e306, sys.float_info.max], ids=["1e306", "float-max"])
async def test_redis_a_far_period_is_harmless_as_locally(redis_server: Any, namespace: str, period: float) -> None:
    """A repeating timer with a period far beyond any deadline is accepted locally and never fires; on Redis it was
    accepted at the call too, and then the link's conversion to milliseconds overflowed and stopped the manager."""
    async with _on_redis(redis_server, namespace) as (handle, task):
        await handle.set_interval("far", period)
        await asyncio.wait_for(handle.flush(), 30.0)
        assert await handle.get_pending_count() == 1
        await _still_works(handle, task)


@pytest.mark.usefixtures("default_core")
async def test_redis_a_far_heartbeat_is_harmless_as_locally(redis_server: Any, namespace: str) -> None:
    """A heartbeat far over a minute is accepted with a warning, locally and on Redis; on Redis run() failed at
    once (OverflowError), and every call with it."""
    context = _on_redis(redis_server, namespace, heartbeat=1e306)
    with pytest.warns(UserWarning, match="heartbeat_interval"):
        handle, task = await context.__aenter__()
    try:
        await asyncio.wait_for(handle.set_timer("x", 0.01), 30.0)
        await asyncio.wait_for(handle.flush(), 30.0)
        assert await handle.get_pending_count() == 1
        assert not task.done(), task.exception() if task.done() else None
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.usefixtures("default_core")
@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({"reconnect_timeout": 0}, "reconnect_timeout"),
        ({"reconnect_timeout": 1e300}, None),
        ({"namespace": "lone\ud800surrogate"}, "namespace"),
        ({"consumer": "lone\ud800surrogate"}, "consumer"),
    ],
    ids=["reconnect_timeout=0", "reconnect_timeout=1e300", "namespace-surrogate", "consumer-surrogate"],
)
async def test_redis_backend_options_are_refused_at_construction_or_work(
    redis_server: Any, namespace: str, options: dict[str, Any], refused: str | None
) -> None:
    """Each RedisBackend option is checked when the backend (or its manager) is made: a value is refused there
    with the option's name, or the manager runs with it. These were accepted, and the manager stopped at its
    first call to the server (a zero reconnect_timeout timed every call out at once, a huge one made an expiry
    Redis refuses, a lone surrogate could not be encoded as a key or consumer name)."""
    from timer_manager.redis import RedisBackend

    options = {"namespace": namespace, **options}
    if refused is not None:
        with pytest.raises(ValueError, match=refused):
            TimerManager.new(namespace, 0.0, 16, 16, backend=RedisBackend(redis_server.url, **options))
        if refused == "namespace":  # the default namespace: the manager's name
            with pytest.raises(ValueError, match=refused):
                TimerManager.new(options["namespace"], 0.0, 16, 16, backend=RedisBackend(redis_server.url))
        return
    async with _on_redis(redis_server, **options) as (handle, task):
        await _still_works(handle, task)


@pytest.mark.usefixtures("default_core")
@pytest.mark.parametrize(
    ("when", "error"),
    [(10**400, ValueError), (Decimal("sNaN"), ValueError), (Decimal("NaN"), ValueError), (float("inf"), ValueError)],
    ids=["10**400", "Decimal-sNaN", "Decimal-NaN", "inf"],
)
async def test_redis_set_timer_at_refuses_bad_numbers_as_locally(
    redis_server: Any, namespace: str, when: Any, error: type[Exception]
) -> None:
    """``set_timer_at`` refuses a number that is no time with the local backend's ValueError naming ``when``
    (on Redis a huge int raised OverflowError, and Decimal('sNaN') a ValueError that named nothing)."""
    _manager, handle = TimerManager.new("local", 0.0, 16, 16)
    with pytest.raises(error, match="when"):
        handle.try_set_timer_at("x", when)
    async with _on_redis(redis_server, namespace) as (handle, task):
        with pytest.raises(error, match="when"):
            handle.try_set_timer_at("x", when)
        with pytest.raises(error, match="when"):
            await handle.set_timer_at("x", when)
        await _still_works(handle, task)
        assert await handle.get_deadline("x") is None


@pytest.mark.usefixtures("default_core")
@pytest.mark.parametrize("ack", ["next", "manual"])
async def test_redis_ack_of_an_event_not_from_redis_is_refused_at_the_call(
    redis_server: Any, namespace: str, ack: str
) -> None:
    """``ack(event)`` takes the events the manager handed over; a ``TimerExpired`` made elsewhere (a local
    manager's, or the application's own) is refused at the call with TypeError. It was queued, the link failed
    on it (AttributeError: no stream entry), the manager stopped, and the ack call itself never returned."""
    async with _on_redis(redis_server, namespace, ack=ack) as (handle, task):
        with pytest.raises(TypeError, match="event"):
            await asyncio.wait_for(handle.ack(TimerExpired("x", 1.0)), 10.0)
        with pytest.raises(TypeError, match="event"):
            await asyncio.wait_for(handle.ack_events([TimerExpired("y", 1.0)]), 10.0)
        await _still_works(handle, task)


@pytest.mark.usefixtures("default_core")
@pytest.mark.parametrize("duration", [1e16, 1e300, sys.float_info.max], ids=["1e16", "1e300", "float-max"])
async def test_redis_introspection_sees_far_timers_as_locally(
    redis_server: Any, namespace: str, duration: float
) -> None:
    """A far timer is pending on both backends, and the awaitable introspection says so: its deadline, and the
    earliest deadline when it is the only one. On Redis a deadline past 2**63 ms came back through an integer
    reply, which it overflowed: get_deadline() and get_next_deadline() answered None for a pending timer."""
    _manager, local = TimerManager.new("local", 0.0, 16, 16)
    local_task = asyncio.create_task(_manager.run())
    await local.set_timer("far", duration)
    assert await local.get_deadline("far") is not None
    assert await local.get_next_deadline() is not None
    await local.shutdown()
    await local_task
    async with _on_redis(redis_server, namespace) as (handle, task):
        before = time.time()
        await handle.set_timer("far", duration)
        assert await handle.get_pending_count() == 1
        deadline = await handle.get_deadline("far")
        assert deadline is not None
        assert deadline >= before + duration * (1 - 1e-9)
        assert await handle.get_next_deadline() == deadline
        await _still_works(handle, task)


@pytest.mark.usefixtures("core")
@virtual
async def test_a_far_first_tick_is_refused_naming_first() -> None:
    """``set_interval(name, 1, first=1e308)``: the period is fine, the first tick is too far for a grid of 1 s at
    the loop clock's resolution. It was refused with a message about ``period`` alone; it names ``first``."""
    _manager_obj, handle, task = await _manager()
    start = min(handle.deadline(n) - d for n, d in KEEP)
    with pytest.raises(ValueError, match="first"):
        await handle.set_interval("far", 1.0, first=1e308)
    with pytest.raises(ValueError, match="first"):
        handle.try_set_interval("far", 1.0, first=1e308)
    await _check_kept(handle, task, start)
    await _stop(handle, task)
