"""The hand-over from other threads: a bounded, lock-protected queue of commands that the loop drains.

The rule: the loop's thread alone owns the manager's command queue and its capacity. Another thread
never touches them; it appends its command here under the lock (or is refused, or waits for room on
the condition), and then, unless the loop was already asked since it last took the inbox, asks it
once to come and take what is here. The loop takes everything at once, in order, before it applies
anything its own thread sends after that moment, so a command a thread sent before (in real time)
some loop-side call is applied before that call's command.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

from ._protocol import Command
from .errors import ManagerClosed, QueueFull

__all__ = ("Inbox",)

# A thread blocked for room looks at its loop this often: a loop that was closed under it wakes nobody.
_LOOP_CHECK_SECONDS = 0.1


class Inbox:
    """Commands handed over from other threads, in order, up to ``capacity`` at a time."""

    __slots__ = (
        "_arrived",
        "_room",
        "appended",
        "capacity",
        "closed",
        "commands",
        "lock",
        "loop",
        "name",
        "taken",
        "wake_pending",
    )

    def __init__(self, name: str, capacity: int, arrived: Callable[[], None]) -> None:
        self.name = name
        self.capacity = capacity
        self.lock = threading.Lock()
        self._room = threading.Condition(self.lock)
        self._arrived = arrived  # called on the loop's thread after the first command arrives
        self.commands: deque[Command] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = ""  # why no more commands are taken ("" while open)
        self.wake_pending = False  # the loop has been asked to take the commands and has not yet
        # How many commands were ever appended and taken: a loop-side caller that starts waiting for room notes
        # ``appended``; once ``taken`` reaches it, what is here came after it started (see Runner.wake_senders).
        self.appended = 0
        self.taken = 0

    def put(self, commands: list[Command], *, block: bool, timeout: float | None = None) -> None:
        """Append ``commands`` (all or none), waiting for room if ``block``; raise :class:`QueueFull` or
        :class:`ManagerClosed` with nothing appended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while True:
                if self.closed:
                    raise ManagerClosed(f"timer manager {self.name!r} is {self.closed}")
                loop = self.loop
                if loop is None or loop.is_closed():
                    raise ManagerClosed(f"timer manager {self.name!r}: its event loop is closed")
                # A batch larger than the whole inbox goes in alone, if its caller waits for that; a try_ call's
                # batch must fit, as on the loop's thread.
                if len(self.commands) + len(commands) <= self.capacity or (block and not self.commands):
                    break
                if not block:
                    raise QueueFull(
                        f"timer manager {self.name!r}: the queue for other threads is full ({self.capacity} commands)"
                    )
                wait = _LOOP_CHECK_SECONDS
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0.0:
                        raise QueueFull(f"timer manager {self.name!r}: no room in the command queue within {timeout}s")
                    wait = min(wait, remaining)
                self._room.wait(wait)
            # The commands go in before the loop is asked to come: a pass that is running now may look (without
            # the lock) and find them, or must be followed by the pass asked for here.
            self.commands.extend(commands)
            self.appended += len(commands)
            if not self.wake_pending:
                try:
                    loop.call_soon_threadsafe(self._arrived)
                except RuntimeError as exc:  # closed between the check above and now
                    for _ in commands:
                        self.commands.pop()
                    self.appended -= len(commands)
                    raise ManagerClosed(f"timer manager {self.name!r}: its event loop is closed") from exc
                self.wake_pending = True

    def take(self, room: int = -1) -> list[Command] | None:
        """Remove and return every command handed over so far, or None (and remove none) if there are more
        than ``room`` (``-1``: no limit). Called on the loop's thread."""
        with self.lock:
            if 0 <= room < len(self.commands):
                return None
            taken = list(self.commands)
            self.commands.clear()
            self.taken += len(taken)
            self.wake_pending = False
            self._room.notify_all()
        return taken

    def close(self, reason: str, *, take: bool = True) -> list[Command]:
        """Take no more commands (threads waiting for room get :class:`ManagerClosed`); return those here (unless
        ``take`` is false: they stay, to be taken in their turn)."""
        with self.lock:
            self.closed = reason
            if not take:
                self._room.notify_all()
                return []
            taken = list(self.commands)
            self.commands.clear()
            self.taken += len(taken)
            self.wake_pending = False  # taken: a put after a reopen() must ask the loop again
            self._room.notify_all()
        return taken

    def reopen(self) -> None:
        """Take commands again (a shutdown that was cancelled before it was queued)."""
        with self.lock:
            self.closed = ""
