"""The event a Redis-backed manager emits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..events import TimerExpired
from ._codec import NO_DATA

__all__ = ("RedisTimerExpired", "entry_events", "make_event")


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


def entry_events(
    entry: str, fields: list[bytes], attempt: int, decode: Callable[[bytes, bytes], object]
) -> list[RedisTimerExpired]:
    """The events of stream entry ``entry``, as ``make_event`` makes them: ``fields`` is name, value, name,
    value... (``value``: the due time in ms, then the timer's record as the scripts write it, its payload last);
    ``decode(name, payload)`` gives an event's data (not called for a set without data). One call per entry
    rather than two per event: the link reads up to 64 events per entry."""
    events: list[RedisTimerExpired] = []
    append = events.append
    for index in range(0, len(fields), 2):
        name = fields[index]
        due, gen, _, period, _, _, payload = fields[index + 1].split(b"|", 6)
        event = _new(RedisTimerExpired)
        _set_name(event, name.decode("utf-8", "surrogatepass"))
        _set_deadline(event, int(due) / 1000.0)
        _set_data(event, None if payload == NO_DATA else decode(name, payload))
        _set_attempt(event, attempt)
        _set_generation(event, int(gen))
        _set_entry(event, entry)
        _set_repeating(event, period != b"")
        append(event)
    return events
