"""The server's clock as the Redis promoter sees it (``timer_manager.redis._clock``): when, by this process's
monotonic clock, the server's clock reaches a tick. Calls are simulated: a true offset between the clocks, and
each call's way out and back."""

from __future__ import annotations

import random

import pytest

from timer_manager.redis._clock import WINDOW, ServerClock

OFFSET_US = 1.7e15  # the server's Unix clock (µs) minus the monotonic one, in these simulations


def call(clock: ServerClock, sent: float, way_out: float, way_back: float, offset_us: float = OFFSET_US) -> None:
    """A call sent at ``sent`` that reached the server ``way_out`` seconds later and came back ``way_back`` after."""
    read = sent + way_out
    clock.note(sent, read + way_back, int(read * 1e6 + offset_us))


def true_local(server_ms: float, offset_us: float = OFFSET_US) -> float:
    return (server_ms * 1000.0 - offset_us) / 1e6


def test_the_tick_is_never_later_than_the_server_reaching_it_and_as_late_as_the_fastest_recent_call_allows() -> None:
    rng = random.Random(7)
    clock = ServerClock()
    now = 100.0
    fastest = 1.0
    for _ in range(200):
        way_out = rng.uniform(0.0001, 0.02)
        fastest = min(fastest, way_out)
        call(clock, now, way_out, rng.uniform(0.0001, 0.02))
        tick = (now + 0.05) * 1000.0 + OFFSET_US / 1000.0
        early = true_local(tick) - clock.local_time(tick)
        assert early >= 0  # never after the server's clock reads the tick
        now += 0.001
    # 200 calls within 0.2 s: all are in the window, so the wake-up is early by the fastest way out only
    assert early == pytest.approx(fastest, abs=2e-6)


def test_a_slow_call_does_not_make_the_next_wake_early() -> None:
    # Counted from the last call alone, a call 30 ms on its way out made the next wake 30 ms early.
    clock = ServerClock()
    call(clock, 10.0, 0.0002, 0.0002)
    call(clock, 10.1, 0.030, 0.0002)
    tick = 10.2e3 + OFFSET_US / 1000.0
    assert true_local(tick) - clock.local_time(tick) == pytest.approx(0.0002, abs=2e-6)


def test_bounds_older_than_the_window_are_forgotten() -> None:
    clock = ServerClock()
    call(clock, 10.0, 0.0001, 0.0001)
    call(clock, 10.0 + WINDOW + 0.01, 0.005, 0.0001)  # the fast call is past the window now
    tick = 20e3 + OFFSET_US / 1000.0
    assert true_local(tick) - clock.local_time(tick) == pytest.approx(0.005, abs=2e-6)


def test_a_server_clock_that_steps_forward_is_followed_at_once() -> None:
    # The older bounds would put the tick 50 ms late: the new call's lower bound shows they no longer hold.
    clock = ServerClock()
    call(clock, 10.0, 0.0001, 0.0001)
    call(clock, 10.5, 0.001, 0.001, offset_us=OFFSET_US + 50_000)
    tick = 11e3 + (OFFSET_US + 50_000) / 1000.0
    early = true_local(tick, OFFSET_US + 50_000) - clock.local_time(tick)
    assert 0 <= early == pytest.approx(0.001, abs=2e-6)


def test_a_server_clock_that_steps_back_is_followed_at_once() -> None:
    clock = ServerClock()
    call(clock, 10.0, 0.0001, 0.0001)
    call(clock, 10.5, 0.001, 0.001, offset_us=OFFSET_US - 50_000)
    tick = 11e3 + (OFFSET_US - 50_000) / 1000.0
    early = true_local(tick, OFFSET_US - 50_000) - clock.local_time(tick)
    assert 0 <= early == pytest.approx(0.001, abs=2e-6)
