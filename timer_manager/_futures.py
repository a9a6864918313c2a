"""Resolving a future that may have been cancelled a moment ago.

On the loop's thread a signal handler runs between any two bytecodes, and ``asyncio.run`` installs one
for SIGINT that cancels the main task, and with it the future the task awaits: a receiver's waiter, a
sender's promise of room, a flush, the manager's ``done``. A ``done()`` check followed by ``set_result``
may therefore find the future cancelled in between; these helpers treat that as the check would have.
"""

from __future__ import annotations

from asyncio import Future, InvalidStateError
from typing import Any

__all__ = ("fail", "resolve")


def resolve(future: Future[Any], result: Any = None) -> bool:
    """Set ``future``'s result unless it is done (cancelled, even just now); return whether it was set."""
    if future.done():
        return False
    try:
        future.set_result(result)
    except InvalidStateError:
        return False
    return True


def fail(future: Future[Any], exc: BaseException) -> bool:
    """Set ``future``'s exception unless it is done (cancelled, even just now); return whether it was set."""
    if future.done():
        return False
    try:
        future.set_exception(exc)
    except InvalidStateError:
        return False
    return True
