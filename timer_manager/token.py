"""A cancellation token, as in ``tokio_util::sync::CancellationToken``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable

from ._futures import resolve

__all__ = ("CancellationToken",)

logger = logging.getLogger("timer_manager")


class CancellationToken:
    """A flag that, once cancelled, stays cancelled and tells everyone waiting on it.

    ``cancel()`` may be called from any thread. A child token (``child_token()``) is cancelled
    with its parent, never the other way round.
    """

    __slots__ = ("__weakref__", "_callbacks", "_cancelled", "_children", "_lock", "_parent")

    def __init__(self) -> None:
        self._cancelled = False
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._children: weakref.WeakSet[CancellationToken] = weakref.WeakSet()
        # A parent holds its children weakly; a child holds its parent, so that a token in between that
        # nobody else keeps (``root.child_token().child_token()``) lives as long as its descendants.
        self._parent: CancellationToken | None = None

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "active"
        return f"<CancellationToken {state}>"

    def cancel(self) -> None:
        """Cancel this token and all its children; idempotent, callable from any thread.

        Every callback runs and every child is cancelled even if a callback raises: such an exception
        is logged (``timer_manager`` logger, ERROR) and not raised here.
        """
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
            children = list(self._children)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("a CancellationToken callback raised: %r", callback)
        for child in children:
            child.cancel()

    def is_cancelled(self) -> bool:
        """Return whether the token has been cancelled."""
        return self._cancelled

    async def cancelled(self) -> None:
        """Wait until the token is cancelled (at once if it already is)."""
        if self._cancelled:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()

        def wake() -> None:
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed since the check (another thread): nobody to wake
                    loop.call_soon_threadsafe(resolve, waiter)

        remove = self.add_callback(wake)
        try:
            await waiter
        finally:
            remove()

    def child_token(self) -> CancellationToken:
        """Return a new token that is cancelled when this one is (but not the other way round)."""
        child = CancellationToken()
        with self._lock:
            if not self._cancelled:
                self._children.add(child)
                child._parent = self
                return child
        child.cancel()
        return child

    def add_callback(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` once when the token is cancelled (at once if it already is).

        The callback runs in the thread that cancels the token. Returns a function that
        unregisters it.
        """
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return lambda: self._remove_callback(callback)
        callback()
        return _nothing

    def _remove_callback(self, callback: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)


def _nothing() -> None:
    pass
