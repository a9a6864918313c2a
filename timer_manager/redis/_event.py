"""The event a Redis-backed manager emits."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..events import TimerExpired

__all__ = ("RedisTimerExpired", "make_event")


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


_new = RedisTimerExpired.__new__
_set_name, _set_deadline, _set_data, _set_attempt, _set_generation, _set_entry, _set_repeating = (
    getattr(RedisTimerExpired, field).__set__
    for field in ("name", "deadline", "data", "attempt", "generation", "entry", "repeating")
)


def make_event(
    name: str, deadline: float, data: object, attempt: int, generation: int, entry: str, repeating: bool
) -> RedisTimerExpired:
    """``RedisTimerExpired(name, deadline, data, attempt, generation, entry, repeating)``, made in half the time:
    the frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; this sets the slots
    directly (the link makes one event per expiry)."""
    event = _new(RedisTimerExpired)
    _set_name(event, name)
    _set_deadline(event, deadline)
    _set_data(event, data)
    _set_attempt(event, attempt)
    _set_generation(event, generation)
    _set_entry(event, entry)
    _set_repeating(event, repeating)
    return event
