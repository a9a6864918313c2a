"""High-volume named timers for asyncio: set, reset and cancel through a bounded command queue,
receive expiries through a bounded event queue."""

from ._core import CORE
from ._version import __version__ as __version__
from .errors import BackendUnavailable, ManagerClosed, QueueEmpty, QueueFull, TimerLimitExceeded, TimerManagerError
from .events import TimerEvent, TimerExpired
from .handle import TimerHandle
from .manager import TimerManager
from .stats import TimerStats
from .threadsafe import ThreadsafeHandle
from .token import CancellationToken

__all__ = (
    "CORE",
    "BackendUnavailable",
    "CancellationToken",
    "ManagerClosed",
    "QueueEmpty",
    "QueueFull",
    "ThreadsafeHandle",
    "TimerEvent",
    "TimerExpired",
    "TimerHandle",
    "TimerLimitExceeded",
    "TimerManager",
    "TimerManagerError",
    "TimerStats",
)
