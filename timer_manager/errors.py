"""The exceptions of ``timer_manager``: one family, rooted at :class:`TimerManagerError`."""

from __future__ import annotations

import asyncio

__all__ = ("BackendUnavailable", "ManagerClosed", "QueueEmpty", "QueueFull", "TimerLimitExceeded", "TimerManagerError")


class TimerManagerError(Exception):
    """Base class of every error raised by ``timer_manager``."""


class ManagerClosed(TimerManagerError):
    """The manager has stopped (or is stopping): it takes no more commands and has no more events."""


class QueueFull(TimerManagerError, asyncio.QueueFull):
    """A non-blocking call found the command queue full."""


class QueueEmpty(TimerManagerError, asyncio.QueueEmpty):
    """``try_recv_event`` found no event ready while the manager runs."""


class TimerLimitExceeded(TimerManagerError):
    """Setting a new timer would take the manager past its ``max_timers`` option."""


class BackendUnavailable(TimerManagerError):
    """The manager's backend (the Redis server) stayed unreachable, out of memory or a read-only replica longer
    than its ``reconnect_timeout``."""
