"""Timers on a Redis server: ``TimerManager.open(name, backend=RedisBackend(url))``.

Needs ``pip install 'timer_manager[redis]'`` (redis-py and hiredis); importing ``timer_manager``
itself never imports ``redis``.
"""

from ..errors import BackendUnavailable
from ._backend import RedisBackend
from ._codec import Serializer
from ._event import RedisTimerExpired

__all__ = ("BackendUnavailable", "RedisBackend", "RedisTimerExpired", "Serializer")
