"""The manager's one wake-up: a loop timer, or on Linux a ``timerfd`` for sub-millisecond precision.

asyncio's selector loops sleep in ``epoll_wait``, whose timeout is in whole milliseconds: ``selectors``
rounds the delay up to the next millisecond and ``select.epoll.poll`` may round it up once more
(a delay just under 9 ms becomes 10 ms). A ``call_at`` therefore runs 0.5 to 2 ms after its time,
which is most of a heartbeat tick's lateness beyond the grid itself. A ``timerfd`` armed at an
absolute ``CLOCK_MONOTONIC`` instant (the clock of ``time.monotonic``, which the stock loop's
``time()`` reads) makes ``epoll_wait`` return at that instant instead, to the nanosecond the kernel
allows. It is used only where its clock is the manager's: the stock asyncio loop on Linux with an
unpatched ``time()``, and only where the manager asks for precision (``precise``: its slack is under
``LOOP_RESOLUTION`` or its heartbeat is longer than its slack), since a timerfd wake-up costs more CPU.
Everywhere else (uvloop, a virtual-time test loop, Windows' proactor) the wake-up is a ``call_at``.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Protocol

from ._env import is_true

__all__ = ("LOOP_RESOLUTION", "LoopTimerWakeup", "TimerFdWakeup", "Wakeup", "create_wakeup")

# How late the loop's own timer may come (asyncio and uvloop sleep in whole milliseconds). A manager
# allowed at least this much slack beyond its heartbeat uses the loop's timer: on Linux a timerfd
# wake-up armed through ctypes cost about 45 µs more CPU than a call_at one; armed from C and never read,
# the two cost about the same with no library around them (benches/wakeup_floor.py), and the rule stays
# (docs/benchmarks.md, "Steady rates").
LOOP_RESOLUTION = 0.001


class Wakeup(Protocol):
    """One pending wake-up at a time, at a loop-clock instant."""

    when: float | None  # the instant armed for, or None

    def arm(self, when: float) -> None:
        """Wake at ``when`` (replacing any earlier arming)."""

    def disarm(self) -> None:
        """Wake at no time."""

    def close(self) -> None:
        """Disarm for good and release what the wake-up holds."""


class LoopTimerWakeup:
    """A wake-up through ``loop.call_at``.

    A loop whose clock moves in coarse steps (uvloop: milliseconds) runs a timer once its rounded
    delay has passed, which can be just before the instant asked for: by up to half a step, or by a
    rounding error when the instant is a step plus a float's last bit (a heartbeat tick computed from
    the grid's origin often is). Such a wake-up does not call back (nothing can be due at the instant
    yet: a pass of the manager would only ask for it again) and asks again no sooner than the loop's
    clock can next step (its ``_clock_resolution``, or ``LOOP_RESOLUTION`` for a loop without one, such
    as uvloop); consecutive early wake-ups for one instant back off: the next is asked for twice as far
    past the early moment, then four times, and so on. Asking again for the same instant would spin
    until the clock steps over it, a pass at each iteration of the loop.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float], callback: Callable[[], None]
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.callback = callback
        self.when: float | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.early_wakes = 0  # consecutive wake-ups before the instant they were for
        resolution = getattr(loop, "_clock_resolution", LOOP_RESOLUTION)  # asyncio's loops have one
        self.step = resolution if isinstance(resolution, float) and 0.0 < resolution <= 1.0 else LOOP_RESOLUTION

    def arm(self, when: float) -> None:
        """Wake at ``when`` (replacing any earlier arming)."""
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.loop.call_at(when, self.fire)
        self.when = when
        self.early_wakes = 0  # the back-off is for one instant

    def disarm(self) -> None:
        """Wake at no time."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.when = None
        self.early_wakes = 0

    close = disarm

    def fire(self) -> None:
        """The loop timer ran: call back, unless it ran before its instant (then ask again, backing off)."""
        wanted = self.when
        if wanted is not None:
            now = self.clock()
            early = wanted - now
            if early > 0.0:
                self.early_wakes += 1
                delay = max(early * 2.0 ** min(self.early_wakes, 30), self.step)
                self.handle = self.loop.call_at(now + delay, self.fire)
                return
        self.early_wakes = 0
        self.handle = None
        self.when = None
        self.callback()


# -- timerfd -----------------------------------------------------------------------------------------

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _compiled_setter() -> Callable[[int, int], None] | None:
    """The compiled core's arming of a timerfd (a C call), where the compiled core is in use."""
    from . import _core

    if _core.CORE != "cython":
        return None
    try:
        from . import _core_c
    except ImportError:  # pragma: no cover - CORE says it was imported
        return None
    if not _core_c._timerfd_native():
        return None
    return _core_c._timerfd_arm


class _TimerFdCalls:
    """``timerfd_create`` and ``timerfd_settime``: from ``os`` (Python 3.13+) or from libc via ctypes; and,
    where the compiled core is in use, the arming of a wake-up's timerfd as a C call."""

    def __init__(self) -> None:
        # Cold (after a 10 ms sleep), an arming through ctypes cost 6 to 20 µs here, through the compiled
        # core 5 (mostly the system call itself).
        self.compiled = _compiled_setter()
        self.native = hasattr(os, "timerfd_settime_ns")
        if not self.native:
            libc = ctypes.CDLL(None, use_errno=True)
            self._create = libc.timerfd_create
            self._create.argtypes = (ctypes.c_int, ctypes.c_int)
            self._create.restype = ctypes.c_int
            self._settime = libc.timerfd_settime
            self._settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p)
            self._settime.restype = ctypes.c_int
            # The same function without argtypes, for setter(): its arguments are built to fit once (two
            # ints, a byref of an itimerspec, None), and converting them at each call cost more than the call.
            self._settime_raw = libc["timerfd_settime"]
            self._settime_raw.restype = ctypes.c_int

    def create(self) -> int:
        """A new non-blocking, close-on-exec timerfd on CLOCK_MONOTONIC."""
        if self.native:
            fd: int = os.timerfd_create(_CLOCK_MONOTONIC, flags=_TFD_NONBLOCK | _TFD_CLOEXEC)  # type: ignore[attr-defined,unused-ignore]
            return fd
        fd = self._create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        return int(fd)

    def set_absolute_ns(self, fd: int, when_ns: int) -> None:
        """Arm ``fd`` to expire once at CLOCK_MONOTONIC ``when_ns`` (0 disarms it)."""
        if self.native:
            os.timerfd_settime_ns(fd, flags=_TFD_TIMER_ABSTIME if when_ns else 0, initial=when_ns)  # type: ignore[attr-defined,unused-ignore]
            return
        spec = _Itimerspec()  # one per call: managers on other threads arm their own timerfds
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(when_ns, 1_000_000_000)
        if self._settime(fd, _TFD_TIMER_ABSTIME if when_ns else 0, ctypes.byref(spec), None) < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    def setter(self) -> Callable[[int, int], None]:
        """A ``set_absolute_ns`` for one wake-up (one thread) at a time: with ctypes, it fills one
        itimerspec of its own instead of building one per call (a timerfd tick cost 7 to 8% less CPU)."""
        if self.compiled is not None:
            return self.compiled
        if self.native:
            return self.set_absolute_ns
        spec = _Itimerspec()
        value = spec.it_value
        pointer = ctypes.byref(spec)
        settime = self._settime_raw

        def set_absolute_ns(fd: int, when_ns: int) -> None:
            value.tv_sec, value.tv_nsec = divmod(when_ns, 1_000_000_000)
            if settime(fd, _TFD_TIMER_ABSTIME if when_ns else 0, pointer, None) < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

        return set_absolute_ns


_calls: _TimerFdCalls | None = None


def _timerfd_calls() -> _TimerFdCalls | None:
    """The timerfd calls, or None where the platform has none."""
    global _calls
    if _calls is None and sys.platform.startswith("linux"):
        try:
            _calls = _TimerFdCalls()
        except (OSError, AttributeError):  # no libc symbol (a libc without timerfd)
            return None
    return _calls


class TimerFdWakeup:
    """A wake-up through a ``timerfd`` watched by ``loop.add_reader``; times are ``time.monotonic()``.

    The instant is rounded up to the next nanosecond, so the wake-up is never before it. The expiry is
    never read: arming or disarming the descriptor (``timerfd_settime``) resets its expiry count, which
    makes it unreadable again, and each wake-up re-arms or disarms it anyway; so a wake-up costs one
    system call, not two (a cold ``read`` cost 5 to 8 µs here). A readiness that a re-arm overtook is
    recognised by the clock: the instant now armed is still ahead.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None], calls: _TimerFdCalls) -> None:
        self.loop = loop
        self.callback = callback
        self.calls = calls
        self.set_absolute_ns = calls.setter()
        self.when: float | None = None
        self.expired = False  # the descriptor expired and was neither re-armed nor disarmed since: readable
        self.fd = calls.create()
        try:
            loop.add_reader(self.fd, self.fire)
        except BaseException:
            os.close(self.fd)
            raise

    def arm(self, when: float) -> None:
        """Wake at ``when`` (replacing any earlier arming)."""
        # One nanosecond more than the rounded-up instant: the product may round down in binary.
        self.set_absolute_ns(self.fd, max(1, math.ceil(when * 1e9) + 1))
        self.when = when
        self.expired = False

    def disarm(self) -> None:
        """Wake at no time."""
        if self.when is not None or self.expired:
            self.set_absolute_ns(self.fd, 0)
            self.when = None
            self.expired = False

    def close(self) -> None:
        """Stop watching the descriptor and close it."""
        fd, self.fd = self.fd, -1
        self.when = None
        self.expired = False
        if fd < 0:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(fd)
        os.close(fd)

    def fire(self) -> None:
        """The descriptor is readable: the timer expired, unless it was re-armed or disarmed since."""
        when = self.when
        if when is None or time.monotonic() < when:
            return  # re-armed (or disarmed) after it expired and before this ran: that reset it, nothing is due
        self.when = None
        self.expired = True
        try:
            self.callback()
        finally:
            if self.expired and self.fd >= 0:  # the callback armed nothing: reset, or the loop would spin
                self.disarm()


def create_wakeup(
    loop: asyncio.AbstractEventLoop, clock: Callable[[], float], callback: Callable[[], None], precise: bool = True
) -> Wakeup:
    """The most precise wake-up ``loop`` allows for a manager reading ``clock``, or, if not ``precise``, the
    loop's own timer (the cheaper where a timerfd is possible: see ``LOOP_RESOLUTION``)."""
    calls = _timerfd_calls() if precise and clock is time.monotonic and not _disabled() else None
    if calls is not None:
        try:
            return TimerFdWakeup(loop, callback, calls)
        except (NotImplementedError, OSError):  # a loop without add_reader, or no descriptor to spare
            pass
    return LoopTimerWakeup(loop, clock, callback)


def _disabled() -> bool:
    """Whether ``TIMER_MANAGER_NO_TIMERFD`` asks for loop timers even where a timerfd would work."""
    return is_true(os.environ.get("TIMER_MANAGER_NO_TIMERFD"))
