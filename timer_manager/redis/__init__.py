"""Timers on a Redis server: ``TimerManager.open(name, backend=RedisBackend(url))``.

Needs the ``redis`` extra (redis-py and hiredis): ``python -m pip install '.[redis]'`` from a checkout.
Importing ``timer_manager`` itself never imports ``redis``; importing this module without it raises a
``ModuleNotFoundError`` that says how to install it.
"""

try:
    import redis.asyncio  # noqa: F401 - only to say what is missing, here rather than deep inside the package
except ModuleNotFoundError as exc:  # pragma: no cover - the test extra installs redis-py
    if exc.name not in ("redis", "redis.asyncio"):
        raise
    raise ModuleNotFoundError(
        "timer_manager.redis needs redis-py (the `redis` extra): install it with python -m pip install '.[redis]' "
        "from a checkout of timer_manager, or with python -m pip install 'redis[hiredis]>=5.0.1'",
        name=exc.name,
    ) from exc

from ..errors import BackendUnavailable
from ._backend import RedisBackend
from ._codec import Serializer
from ._event import RedisTimerExpired

__all__ = ("BackendUnavailable", "RedisBackend", "RedisTimerExpired", "Serializer")
