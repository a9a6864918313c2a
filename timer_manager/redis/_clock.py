"""The server's clock seen from this process: when, by ``time.monotonic()``, the server's clock reaches a time.

A reply that carries the server's clock (Unix microseconds, read while the call was on the server) bounds the
offset between the two clocks: the server read it after the call was sent and before its reply came back. The
promoter wakes at a tick by the upper bound, so it does not wake late; the tightest upper bound of the last second's
calls makes it wake as late as that allows. The bound of the last call alone moves with that call's own delay on
its way out, and a PROMOTE that reaches the server before the tick finds nothing and costs one more round trip.

A step of the server's clock forward that a later reply proves (by its lower bound) drops the older bounds at once;
a smaller one, or NTP slewing the clock, may keep one that is too low for up to :data:`WINDOW`, and the wake-up is
then late by less than that call's round trip.
"""

from __future__ import annotations

import collections

WINDOW = 1.0  # seconds: how long a call's bound is kept (the two clocks drift apart, and NTP slews the server's)


class ServerClock:
    """The least upper bound, over the calls of the last :data:`WINDOW` seconds, of the server's clock minus
    ``time.monotonic()`` (microseconds)."""

    __slots__ = ("_bounds",)

    def __init__(self) -> None:
        # (sent, upper bound) of recent calls, the bounds increasing from the left: the first is the least
        self._bounds: collections.deque[tuple[float, float]] = collections.deque()

    def note(self, sent: float, received: float, server_us: int) -> None:
        """A call sent and answered at these ``time.monotonic()`` times read the server's clock as ``server_us``."""
        upper = server_us - sent * 1e6
        bounds = self._bounds
        if bounds and server_us - received * 1e6 > bounds[0][1]:
            bounds.clear()  # the server's clock stepped forward (or this is another server): the old bounds are wrong
        while bounds and bounds[-1][1] >= upper:
            bounds.pop()
        bounds.append((sent, upper))
        while bounds[0][0] < sent - WINDOW:
            bounds.popleft()

    def local_time(self, server_ms: float) -> float:
        """The ``time.monotonic()`` time by which the server's clock reads ``server_ms`` milliseconds (or later),
        after at least one :meth:`note`."""
        return (server_ms * 1000.0 - self._bounds[0][1]) / 1e6
