"""The events a manager emits."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Any, TypeVar, Union

__all__ = ("TimerEvent", "TimerExpired")

_T = TypeVar("_T")


def _slotted(cls: type[_T]) -> type[_T]:
    """Give a dataclass ``__slots__`` on Python 3.9, where ``dataclass(slots=True)`` does not exist."""
    if sys.version_info >= (3, 10):
        return cls
    names = tuple(field.name for field in fields(cls))
    namespace = {key: value for key, value in cls.__dict__.items() if key not in names}
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace["__slots__"] = names

    # A frozen class refuses setattr, which pickle's default slot restoring uses (3.10 does the same).
    def __getstate__(self: object) -> list[object]:
        return [getattr(self, name) for name in names]

    def __setstate__(self: object, state: list[object]) -> None:
        for name, value in zip(names, state):
            object.__setattr__(self, name, value)

    namespace["__getstate__"] = __getstate__
    namespace["__setstate__"] = __setstate__
    return type(cls)(cls.__name__, cls.__bases__, namespace)


@_slotted
@dataclass(frozen=True, **({"slots": True} if sys.version_info >= (3, 10) else {}))
class TimerExpired:
    """A timer reached its deadline.

    ``deadline`` is the loop time (``loop.time()``) at which the timer was due; ``data`` is the
    payload given to the set call that armed it (``None`` when none was given).
    """

    name: str
    deadline: float
    data: Any = None


TimerEvent = Union[TimerExpired]
"""Every type of event a manager emits (today only :class:`TimerExpired`)."""
