"""The event a Redis-backed manager emits."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..events import TimerExpired

__all__ = ("RedisTimerExpired",)


@dataclass(frozen=True, slots=True)
class RedisTimerExpired(TimerExpired):
    """A timer kept on Redis reached its deadline.

    ``deadline`` is Unix time in seconds, by the Redis server's clock (millisecond resolution);
    ``attempt`` counts deliveries (above 1: another consumer read it first and did not acknowledge it
    within ``claim_after``); ``generation`` is unique per set of a name, and grows with each set, so an
    application can make its handling idempotent on ``(name, generation)``.
    """

    attempt: int = 1
    generation: int = 0
    entry: str = field(default="", repr=False, compare=False)  # the stream entry, for the acknowledgement
    repeating: bool = field(default=False, repr=False, compare=False)
