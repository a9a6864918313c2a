"""Checks of caller input, done at the call so that bad input never reaches the queue."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from numbers import Real

__all__ = ("Duration", "check_name", "check_size", "check_when", "seconds", "shown")

Duration = float | int | timedelta
"""Seconds as an ``int`` or ``float``, or a ``datetime.timedelta``."""


def check_name(name: object) -> str:
    """Return ``name`` as an exact ``str``; a ``str`` subclass is copied, so its own hash and
    equality cannot disturb the table."""
    if type(name) is str:
        return name
    if isinstance(name, str):
        return str.__str__(name)
    raise TypeError(f"timer name must be a str, got {type(name).__name__}: {shown(name)}")


def seconds(value: object, what: str = "duration") -> float:
    """Return ``value`` (seconds as a real number, or a ``timedelta``) as a float >= 0."""
    if isinstance(value, bool) or not isinstance(value, (Real, timedelta, Decimal)):
        raise TypeError(
            f"{what} must be a number of seconds (int or float) or a datetime.timedelta, "
            f"got {type(value).__name__}: {shown(value)}"
        )
    result = value.total_seconds() if isinstance(value, timedelta) else _to_float(value)
    if not 0.0 <= result < math.inf:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {shown(value)}")
    return result + 0.0  # -0.0 becomes 0.0


def check_when(value: object) -> float:
    """Return an absolute deadline (loop time) as a finite float."""
    if isinstance(value, bool) or not isinstance(value, (Real, Decimal)):
        raise TypeError(
            f"when must be a loop time in seconds (int or float), got {type(value).__name__}: {shown(value)}"
        )
    result = _to_float(value)
    if not -math.inf < result < math.inf:
        raise ValueError(f"when must be a finite loop time, got {shown(value)}")
    return result


def check_size(value: object, what: str) -> int:
    """Return a buffer size: an ``int`` >= 1 (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int >= 1, got {type(value).__name__}: {shown(value)}")
    if value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {shown(value)}")
    return int(value)


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` for an error message, kept short: a huge number or a long string is elided."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an int of {len(str(abs(value))) if value.bit_length() < 14000 else 'over 4000'} digits"
    try:
        text = repr(value)
    except Exception:  # a repr that raises (or a number too long for str): say what it is instead
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _to_float(value: Real | Decimal) -> float:
    try:
        return float(value)
    except OverflowError:  # an int too large for a float: as infinite as it gets
        return math.inf
    except ValueError:  # Decimal("sNaN"): not a number, refused by the caller's range check
        return math.nan
