"""The events a manager emits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

__all__ = ("TimerEvent", "TimerExpired")


@dataclass(frozen=True, slots=True)
class TimerExpired:
    """A timer reached its deadline.

    ``deadline`` is the loop time (``loop.time()``) at which the timer was due; ``data`` is the
    payload given to the set call that armed it (``None`` when none was given).
    """

    name: str
    deadline: float
    data: Any = None


TimerEvent = Union[TimerExpired]  # noqa: UP007 - a union: later kinds of event join it
"""Every type of event a manager emits (today only :class:`TimerExpired`)."""
