"""A handle for threads other than the event loop's."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._protocol import CANCEL, SET, TOUCH, Command
from ._validate import Duration, check_name, seconds

if TYPE_CHECKING:
    from ._runner import Runner

__all__ = ("ThreadsafeHandle",)


class ThreadsafeHandle:
    """Sets and cancels timers from any thread; get one from :meth:`TimerHandle.threadsafe`.

    Commands from other threads go through a queue of their own, of the manager's command buffer
    size, which the loop takes in order. The blocking methods wait until their commands are in it
    (:class:`QueueFull` after ``timeout`` seconds, :class:`ManagerClosed` once the manager stops or
    its loop is closed); the ``try_`` methods never wait. A call that returns has queued its
    commands, which the manager applies in the order this thread sent them, and before any command
    the loop's thread sends after that; a call that raises has queued nothing. On the loop's own thread
    the ``try_`` methods work too, and the blocking ones raise ``RuntimeError``: they would wait for the
    loop they block.
    """

    __slots__ = ("_runner",)

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def __repr__(self) -> str:
        return f"<ThreadsafeHandle of {self._runner.name!r}>"

    def set_timer(self, name: str, duration: Duration, *, data: Any = None, timeout: float | None = None) -> None:
        """Set timer ``name`` to now + ``duration`` (now: the call), blocking until the command is queued."""
        limit = self._timeout(timeout)
        self._put(self._sets([(name, duration, data)]), limit, block=True)

    def try_set_timer(self, name: str, duration: Duration, *, data: Any = None) -> None:
        """Set timer ``name`` to now + ``duration`` if there is room now; never blocks."""
        self._put(self._sets([(name, duration, data)]), None, block=False)

    def set_timers(
        self, items: Iterable[tuple[str, Duration] | tuple[str, Duration, Any]], *, timeout: float | None = None
    ) -> None:
        """Set several timers, all or none, in order, blocking until they are queued."""
        limit = self._timeout(timeout)
        self._put(self._sets(items), limit, block=True)

    def try_set_timers(self, items: Iterable[tuple[str, Duration] | tuple[str, Duration, Any]]) -> None:
        """Set several timers if all fit now, else raise :class:`QueueFull` and set none."""
        self._put(self._sets(items), None, block=False)

    def cancel_timer(self, name: str, timeout: float | None = None) -> None:
        """Cancel timer ``name``, blocking until the command is queued."""
        limit = self._timeout(timeout)
        self._put([(CANCEL, check_name(name), None, None)], limit, block=True)

    def try_cancel_timer(self, name: str) -> None:
        """Cancel timer ``name`` if there is room now; never blocks."""
        self._put([(CANCEL, check_name(name), None, None)], None, block=False)

    def cancel_timers(self, names: Iterable[str], *, timeout: float | None = None) -> None:
        """Cancel several timers, in order, blocking until the commands are queued."""
        limit = self._timeout(timeout)
        self._put(self._cancels(names), limit, block=True)

    def try_cancel_timers(self, names: Iterable[str]) -> None:
        """Cancel several timers if all fit now, else raise :class:`QueueFull` and cancel none."""
        self._put(self._cancels(names), None, block=False)

    def touch(self, name: str, timeout: float | None = None) -> None:
        """Touch timer ``name`` (:meth:`TimerHandle.touch`; now: this call), blocking until the command is
        queued. It is applied in order with this thread's other commands; it does nothing if the timer
        is not pending then (nor its event waiting to be received)."""
        limit = self._timeout(timeout)
        self._put(self._touches([name]), limit, block=True)

    def try_touch(self, name: str) -> None:
        """Touch timer ``name`` if there is room now; never blocks."""
        self._put(self._touches([name]), None, block=False)

    def touch_many(self, names: Iterable[str], *, timeout: float | None = None) -> None:
        """Touch several timers, all at one now, in order, blocking until the commands are queued."""
        limit = self._timeout(timeout)
        self._put(self._touches(names), limit, block=True)

    def try_touch_many(self, names: Iterable[str]) -> None:
        """Touch several timers if all fit now, else raise :class:`QueueFull` and touch none."""
        self._put(self._touches(names), None, block=False)

    # ------------------------------------------------------------------ building and handing over

    def _sets(self, items: Iterable[tuple[str, Duration] | tuple[str, Duration, Any]]) -> list[Command]:
        checked = []
        for item in items:
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise TypeError(f"each item must be a (name, duration) or (name, duration, data) tuple, got {item!r}")
            data = item[2] if len(item) == 3 else None
            if data is not None and self._runner.encode is not None:
                data = self._runner.encode(data)
            checked.append((check_name(item[0]), seconds(item[1]), data))
        now = self._runner.clock()
        return [(SET, name, (now + duration, duration), data) for name, duration, data in checked]

    def _touches(self, names: Iterable[str]) -> list[Command]:
        if isinstance(names, str):
            raise TypeError("names must be an iterable of str, not a single str")
        checked = [check_name(name) for name in names]
        now = self._runner.clock()
        return [(TOUCH, name, now, None) for name in checked]

    def _cancels(self, names: Iterable[str]) -> list[Command]:
        if isinstance(names, str):
            raise TypeError("names must be an iterable of str, not a single str")
        return [(CANCEL, check_name(name), None, None) for name in names]

    def _put(self, commands: list[Command], timeout: float | None, *, block: bool) -> None:
        """Hand ``commands`` to the loop, all or none; every check came first, the reservation last."""
        runner = self._runner
        runner.admit([command[1] for command in commands if command[0] == SET])  # type: ignore[misc]
        try:
            runner.inbox.put(commands, block=block, timeout=timeout)
        except BaseException:
            runner.drop(commands)
            raise

    def _timeout(self, timeout: float | None) -> float | None:
        """Check a blocking call: its ``timeout``, and that it is not made on the loop's thread, which it would block
        (every blocking method calls this first). The thread, not its id: an ended loop thread's id may be another's."""
        if threading.current_thread() is self._runner.thread:
            raise RuntimeError(
                "ThreadsafeHandle's blocking methods are for other threads: on the loop's thread they would block the "
                "loop they wait for; use the TimerHandle itself (or the try_ methods)"
            )
        return None if timeout is None else seconds(timeout, "timeout")
