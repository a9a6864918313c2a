"""A handle for threads other than the event loop's."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import TYPE_CHECKING, Any

from ._core import ManagerCore, Sender
from ._engine_py import CANCEL, SET, Command
from ._validate import check_name, seconds
from .errors import ManagerClosed, QueueFull

if TYPE_CHECKING:
    from .handle import Duration

__all__ = ("ThreadsafeHandle",)


class ThreadsafeHandle:
    """Sets and cancels timers from any thread; get one from :meth:`TimerHandle.threadsafe`.

    ``set_timer`` and ``cancel_timer`` block the calling thread until the command is queued
    (:class:`QueueFull` after ``timeout`` seconds, :class:`ManagerClosed` if the manager stops);
    ``try_set_timer`` and ``try_cancel_timer`` never block. Commands from one thread are applied
    in the order that thread sent them. Never call the blocking methods from the loop's own
    thread: they would wait for the loop they block.
    """

    __slots__ = ("_core", "_loop")

    def __init__(self, core: ManagerCore, loop: asyncio.AbstractEventLoop) -> None:
        self._core = core
        self._loop = loop

    def set_timer(self, name: str, duration: Duration, *, data: Any = None, timeout: float | None = None) -> None:
        """Set timer ``name`` to now + ``duration``, blocking until the command is queued."""
        self._send(self._set_command(name, duration, data), timeout)

    def cancel_timer(self, name: str, timeout: float | None = None) -> None:
        """Cancel timer ``name``, blocking until the command is queued."""
        self._send((CANCEL, check_name(name), None, None), timeout)

    def try_set_timer(self, name: str, duration: Duration, *, data: Any = None) -> None:
        """Set timer ``name`` to now + ``duration`` if the command queue has room; never blocks."""
        self._try_send(self._set_command(name, duration, data))

    def try_cancel_timer(self, name: str) -> None:
        """Cancel timer ``name`` if the command queue has room; never blocks."""
        self._try_send((CANCEL, check_name(name), None, None))

    def _set_command(self, name: str, duration: Duration, data: Any) -> Command:
        name = check_name(name)
        command = (SET, name, self._loop.time() + seconds(duration), data)
        self._check_thread()
        if self._core.max_timers is not None:
            self._core.reserve([name])  # released on the loop's thread if the command is dropped
        return command

    def _send(self, command: Command, timeout: float | None) -> None:
        if timeout is not None:
            timeout = seconds(timeout, "timeout")
        self._check_thread()
        queued: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._call(self._submit, command, queued)
        try:
            queued.result(timeout)
        except concurrent.futures.TimeoutError:
            if queued.cancel():  # still waiting for room: withdrawn, never queued
                raise QueueFull(
                    f"timer manager {self._core.name!r}: no room in the command queue within {timeout}s"
                ) from None
            queued.result()  # it was being queued just then

    def _submit(self, command: Command, queued: concurrent.futures.Future[None]) -> None:
        core = self._core
        if core.closing:
            core.drop(command)
            if queued.set_running_or_notify_cancel():
                queued.set_exception(ManagerClosed(f"timer manager {core.name!r} is closed"))
        elif not core.has_room(1):
            # Wait for room; the caller may still give up (timeout) until its command is admitted.
            core.senders.append(Sender(queued, [command], claim=queued.set_running_or_notify_cancel))
        elif queued.set_running_or_notify_cancel():
            core.enqueue(command)
            queued.set_result(None)
        else:
            core.drop(command)

    def _try_send(self, command: Command) -> None:
        self._check_thread()
        core = self._core
        core.check_open()
        # Take the place now, so that the command cannot find the queue full when it arrives.
        with self._core.thread_lock:
            if core.senders or core.engine.queued() >= core.engine.command_capacity:
                core.drop(command)
                raise QueueFull(f"timer manager {core.name!r}: the command queue is full")
            core.engine.command_capacity -= 1
        try:
            self._call(self._submit_reserved, command)
        except BaseException:
            with self._core.thread_lock:
                core.engine.command_capacity += 1
            raise

    def _submit_reserved(self, command: Command) -> None:
        core = self._core
        with self._core.thread_lock:
            core.engine.command_capacity += 1
        if core.closing:
            core.drop(command)
        else:
            core.enqueue(command)

    def _call(self, function: Any, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError as exc:  # the loop is closed
            raise ManagerClosed(f"timer manager {self._core.name!r}: its event loop is closed") from exc

    def _check_thread(self) -> None:
        if threading.get_ident() == self._core.thread_id:
            raise RuntimeError("ThreadsafeHandle is for other threads; on the loop's thread use the TimerHandle itself")
