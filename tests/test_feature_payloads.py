"""Feature: payloads. ``data=`` on every set call, carried on the event as ``TimerExpired.data``
(None by default); a re-set without data clears the old payload; interval events carry it every time.
Runs in real time on every loop (durations 0: the events are due at once)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support import now, recv, running

from timer_manager import TimerExpired, TimerHandle


async def _threadsafe_set(handle: TimerHandle, name: str, data: Any) -> None:
    threadsafe = handle.threadsafe()
    if data is None:
        await asyncio.to_thread(threadsafe.set_timer, name, 0)
    else:
        await asyncio.to_thread(threadsafe.set_timer, name, 0, data=data)


async def _threadsafe_try_set(handle: TimerHandle, name: str, data: Any) -> None:
    threadsafe = handle.threadsafe()
    if data is None:
        await asyncio.to_thread(threadsafe.try_set_timer, name, 0)
    else:
        await asyncio.to_thread(threadsafe.try_set_timer, name, 0, data=data)
    await asyncio.sleep(0.01)


async def _sync(call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Call ``call``; await what it returned if that is a coroutine (the awaitable forms)."""
    result = call(*args, **kwargs)
    if asyncio.iscoroutine(result):
        await result


def _kw(data: Any) -> dict[str, Any]:
    """Pass ``data=`` only when there is a payload, so the default is exercised too."""
    return {} if data is None else {"data": data}


SETTERS: dict[str, Callable[[TimerHandle, str, Any], Awaitable[None]]] = {
    "set_timer": lambda h, n, d: _sync(h.set_timer, n, 0, **_kw(d)),
    "try_set_timer": lambda h, n, d: _sync(h.try_set_timer, n, 0, **_kw(d)),
    "set_timer_at": lambda h, n, d: _sync(h.set_timer_at, n, now(), **_kw(d)),
    "try_set_timer_at": lambda h, n, d: _sync(h.try_set_timer_at, n, now(), **_kw(d)),
    "set_interval": lambda h, n, d: _sync(h.set_interval, n, 3600, first=0, **_kw(d)),
    "try_set_interval": lambda h, n, d: _sync(h.try_set_interval, n, 3600, first=0, **_kw(d)),
    "set_timers": lambda h, n, d: _sync(h.set_timers, [(n, 0) if d is None else (n, 0, d)]),
    "try_set_timers": lambda h, n, d: _sync(h.try_set_timers, [(n, 0) if d is None else (n, 0, d)]),
    "threadsafe.set_timer": _threadsafe_set,
    "threadsafe.try_set_timer": _threadsafe_try_set,
}


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("kind", list(SETTERS))
async def test_every_set_call_carries_its_payload(kind: str) -> None:
    """The object given as ``data=`` is the event's ``data`` (the same object); without it, None.
    Catches: a set form dropping ``data`` or not accepting it."""
    payload = object()
    async with running(heartbeat=0.001) as (_, handle, _task):
        await SETTERS[kind](handle, "with", payload)
        event = await recv(handle, 5)
        assert event.name == "with"
        assert event.data is payload
        await SETTERS[kind](handle, "without", None)
        event = await recv(handle, 5)
        assert event.name == "without"
        assert event.data is None
        await handle.cancel_all_timers()


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("kind", list(SETTERS))
async def test_a_reset_without_data_clears_the_old_payload(kind: str) -> None:
    """ "a" is set with a payload and a far deadline, then re-set (by every set form) without data: the
    event has data None. Catches: the old payload surviving the re-set."""
    async with running(heartbeat=0.001) as (_, handle, _task):
        await handle.set_timer("a", 3600, data="old")
        await handle.flush()
        await SETTERS[kind](handle, "a", None)
        event = await recv(handle, 5)
        assert event.name == "a"
        assert event.data is None
        await handle.cancel_all_timers()


@pytest.mark.usefixtures("core")
async def test_a_reset_with_new_data_replaces_the_payload_and_a_retracted_events_payload_goes() -> None:
    """Re-set with new data: the new payload; a retracted event's payload is not received; after a
    cancel, a fresh set without data has None. Catches: payload mix-ups between a name's settings."""
    async with running(heartbeat=0.001) as (manager, handle, _task):
        await handle.set_timer("a", 3600, data=1)
        await handle.set_timer("a", 0, data=2)
        assert (await recv(handle, 5)).data == 2
        await handle.set_timer("b", 0, data="stale")
        while manager.stats().events_ready < 1:
            await asyncio.sleep(0.001)
        await handle.set_timer("b", 0, data="fresh")  # retracts the "stale" event
        await handle.flush()
        assert (await recv(handle, 5)).data == "fresh"
        await handle.set_timer("c", 3600, data="gone")
        await handle.cancel_timer("c")
        await handle.set_timer("c", 0)
        event = await recv(handle, 5)
        assert event.name == "c"
        assert event.data is None


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("payload", [0, 0.0, "", False, [], {}, ()])
async def test_falsy_payloads_are_carried(payload: Any) -> None:
    """Falsy payloads are payloads too (only ``None`` means none). Catches: ``if data:`` instead of
    ``if data is not None``."""
    async with running(heartbeat=0.001) as (_, handle, _task):
        await handle.set_timer("a", 0, data=payload)
        event = await recv(handle, 5)
        assert event.data is payload


@pytest.mark.usefixtures("core")
async def test_interval_events_carry_their_data_every_time() -> None:
    """Every tick of an interval has its payload, and a re-set of the interval without data clears it
    for later ticks. Catches: the payload consumed by the first event."""
    payload = {"peer": 42}
    async with running(heartbeat=0) as (_, handle, _task):
        await handle.set_interval("i", 0.005, data=payload)
        for _ in range(4):
            event = await recv(handle, 5)
            assert event.data is payload
        await handle.set_interval("i", 0.005)
        await handle.flush()
        for _ in range(2):
            event = await recv(handle, 5)
            assert event.data is None
        await handle.cancel_timer("i")


@pytest.mark.usefixtures("core")
async def test_set_timers_mixes_items_with_and_without_data() -> None:
    """In one batch, 3-tuples carry their data and 2-tuples have None. Catches: data shifted between
    batch items."""
    async with running(heartbeat=0.001) as (_, handle, _task):
        await handle.set_timers([("a", 0, "A"), ("b", 0), ("c", 0, None), ("d", 0, "D")])
        events: list[TimerExpired] = []
        while len(events) < 4:
            events += await asyncio.wait_for(handle.recv_events(10), 5)
        assert [(e.name, e.data) for e in events] == [("a", "A"), ("b", None), ("c", None), ("d", "D")]


def test_timer_expired_data_defaults_to_none() -> None:
    """``TimerExpired(name, deadline)`` has data None. Catches: a missing default."""
    assert TimerExpired("x", 1.0).data is None
    assert TimerExpired("x", 1.0, "d").data == "d"
