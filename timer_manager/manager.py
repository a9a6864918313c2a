"""The manager: owns the timers and runs their loop."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Coroutine, Generator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._backend import Backend, LocalBackend
from ._runner import Runner
from ._validate import check_size, seconds
from .errors import ManagerClosed
from .handle import TimerHandle
from .stats import TimerStats, snapshot
from .token import CancellationToken

if TYPE_CHECKING:
    from ._validate import Duration

__all__ = ("TimerManager",)

DEFAULT_HEARTBEAT = 0.01
DEFAULT_BUFFER_SIZE = 1024
DEFAULT_TIMER_SLACK = 0.002  # seconds; see TimerManager's docstring and docs/benchmarks.md ("Steady rates")
SUSPICIOUS_HEARTBEAT = 60.0  # seconds; more is most likely a unit mistake
SUSPICIOUS_TIMER_SLACK = 60.0  # seconds; the same for the slack


class TimerManager:
    """Keeps named timers and emits an event when each one is due.

    Create one with :meth:`new` (which also returns its :class:`TimerHandle`) and run it with
    ``await manager.run()`` in a task, or use :meth:`open`, which does both. It stops on
    ``handle.shutdown()``, when its cancellation token is cancelled, or when its task is cancelled.

    ``timer_slack`` (seconds, default 2 ms) trades lateness for CPU: the wake-up for due timers comes no
    sooner than ``timer_slack`` after the last one that delivered a timer, so that timers due close
    together share one wake-up (a wake-up costs far more than a timer). A timer due longer than that after
    the previous delivery is delivered at its deadline (its heartbeat tick); one due sooner, up to
    ``timer_slack`` late. With a slack of at least 1 ms and at least the heartbeat, the manager wakes
    through the loop's own timer, which adds the loop's millisecond rounding (0 to 1 ms); otherwise, on
    Linux's stock asyncio loop, through a ``timerfd`` at the exact instant, which costs more CPU per
    wake-up. ``timer_slack=0`` wakes for each distinct deadline, as precisely as the loop allows. A negative,
    NaN or infinite slack raises ``ValueError``; one over 60 s (most likely a unit mistake, as for
    ``heartbeat_interval``) is taken with a ``UserWarning``.
    """

    __slots__ = ("_handle", "_runner", "_token")

    def __init__(
        self,
        name: str,
        heartbeat_interval: Duration = DEFAULT_HEARTBEAT,
        command_buffer_size: int = DEFAULT_BUFFER_SIZE,
        event_buffer_size: int = DEFAULT_BUFFER_SIZE,
        cancel_token: CancellationToken | None = None,
        *,
        max_timers: int | None = None,
        backend: Backend | None = None,
        timer_slack: Duration = DEFAULT_TIMER_SLACK,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}: {name!r}")
        heartbeat = seconds(heartbeat_interval, "heartbeat_interval")
        if heartbeat > SUSPICIOUS_HEARTBEAT:
            warnings.warn(
                f"heartbeat_interval={heartbeat:g} s: timers may be delivered up to that late. It is in seconds "
                "(0.01 is 10 ms); pass a smaller value, or silence this UserWarning if you meant it.",
                UserWarning,
                stacklevel=_outside_this_module(),
            )
        commands = check_size(command_buffer_size, "command_buffer_size")
        events = check_size(event_buffer_size, "event_buffer_size")
        if max_timers is not None:
            max_timers = check_size(max_timers, "max_timers")
        if cancel_token is not None and not isinstance(cancel_token, CancellationToken):
            raise TypeError(f"cancel_token must be a CancellationToken, got {type(cancel_token).__name__}")
        slack = seconds(timer_slack, "timer_slack")
        if slack > SUSPICIOUS_TIMER_SLACK:
            warnings.warn(
                f"timer_slack={slack:g} s: a timer due after a delivery may be delivered up to that late. It is in "
                "seconds (0.002 is 2 ms); pass a smaller value, or silence this UserWarning if you meant it.",
                UserWarning,
                stacklevel=_outside_this_module(),
            )
        if backend is None:
            backend = LocalBackend()
        elif not callable(getattr(backend, "store", None)):
            raise TypeError(f"backend must be a timer_manager backend (LocalBackend, RedisBackend), got {backend!r}")
        store = backend.store(name, min(commands, sys.maxsize), min(events, sys.maxsize), max_timers)
        self._runner = Runner(str(name), heartbeat, commands, events, max_timers, store, slack)
        self._token = cancel_token if cancel_token is not None else CancellationToken()
        self._handle = TimerHandle(self._runner)

    def __repr__(self) -> str:
        runner = self._runner
        # The pending count, as stats().live and pending_count() give it (a parked repeating timer is out of the table).
        return f"<TimerManager {runner.name!r} {runner.state}, {runner.engine.live_count()} timers>"

    @classmethod
    def new(
        cls,
        name: str,
        heartbeat_interval: Duration,
        command_buffer_size: int,
        event_buffer_size: int,
        cancel_token: CancellationToken | None = None,
        **options: Any,
    ) -> tuple[TimerManager, TimerHandle]:
        """Create a manager and its handle, as the Rust crate's ``TimerManager::new`` does.

        ``options``: ``max_timers`` (refuse sets of new names beyond this many live and queued timers);
        ``backend`` (where the timers are kept: the process by default, or
        ``timer_manager.redis.RedisBackend``); ``timer_slack`` (how late past its tick a timer may be
        delivered so that one wake-up takes several).
        """
        manager = cls(name, heartbeat_interval, command_buffer_size, event_buffer_size, cancel_token, **options)
        return manager, manager._handle

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        name: str,
        heartbeat_interval: Duration = DEFAULT_HEARTBEAT,
        command_buffer_size: int = DEFAULT_BUFFER_SIZE,
        event_buffer_size: int = DEFAULT_BUFFER_SIZE,
        cancel_token: CancellationToken | None = None,
        **options: Any,
    ) -> AsyncIterator[TimerHandle]:
        """Run a manager for the duration of an ``async with`` block and yield its handle.

        On exit the manager is shut down and its task awaited; an exception the manager raised is
        re-raised here.
        """
        manager = cls(name, heartbeat_interval, command_buffer_size, event_buffer_size, cancel_token, **options)
        task = asyncio.ensure_future(manager.run())
        try:
            yield manager._handle
            if not task.done():
                # ManagerClosed: the manager stopped while the shutdown waited for room (its token, its task
                # cancelled, a failure); the task tells how, as it does for a stop before the exit.
                with contextlib.suppress(ManagerClosed):
                    await manager._handle.shutdown()
            await task
        finally:
            # The body raised, or the exit was cancelled: the manager must not outlive the block.
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    @property
    def name(self) -> str:
        """The instance name, used in logs."""
        return self._runner.name

    @property
    def handle(self) -> TimerHandle:
        """The manager's handle (the same one :meth:`new` returned)."""
        return self._handle

    @property
    def cancel_token(self) -> CancellationToken:
        """The token that stops this manager when cancelled."""
        return self._token

    def run(self) -> Coroutine[Any, Any, None]:
        """Run the manager until it stops: shutdown, token, or cancellation of this task.

        A manager runs once; a second call raises ``RuntimeError``. If the manager fails, the
        exception is raised here; if this task is cancelled, ``CancelledError`` is.
        Either way every waiting caller is released: receivers get ``None``, senders
        :class:`ManagerClosed`. A task cancelled before it ever ran stops the manager too.
        """
        return _Run(self._run(), self._runner)

    async def _run(self) -> None:
        runner = self._runner
        loop = asyncio.get_running_loop()
        done = runner.start(loop)

        def token_cancelled() -> None:
            # Any thread may cancel the token. The flag stops the manager before it applies anything more;
            # the stop itself runs on the loop's thread, never in the middle of the manager's own work (the
            # token may be cancelled from a log handler it called).
            runner.token_cancelled = True
            runner.engine.halted = True  # an apply under way (from a log handler, or while this thread runs) stops
            runner.update_applies_at_call()  # sets from now on queue and touches do nothing: the stop discards both
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed just now
                    loop.call_soon_threadsafe(runner.stop, "cancellation token cancelled")

        unregister = self._token.add_callback(token_cancelled)
        try:
            await done
        except BaseException as exc:
            reason = "run() was cancelled" if isinstance(exc, asyncio.CancelledError) else f"{exc!r}"
            runner.stop(reason)
            raise
        finally:
            unregister()
            if runner.background is not None:
                # The backend settles after the stop (a remote one acknowledges what was received); a
                # cancelled run() still waits for that, which is bounded. A cancellation that comes during the
                # wait (open()'s exit cancelled while it awaits this task) must not reach the settle: waited
                # through, then raised.
                await _wait_through(runner.background)

    def stats(self) -> TimerStats:
        """A snapshot of the manager's counters (cheap; the counters cost nothing to keep)."""
        return snapshot(self._runner)


class _Run(Coroutine[Any, Any, None]):
    """``run()``'s coroutine, which notices being cancelled or closed before its first step.

    A task cancelled before it first ran never enters a coroutine's body, so ``run()`` itself could
    not stop the manager; its handle would then take commands that nothing applies.
    """

    __slots__ = ("_coroutine", "_runner", "_started")

    def __init__(self, coroutine: Coroutine[Any, Any, None], runner: Runner) -> None:
        self._coroutine = coroutine
        self._runner = runner
        self._started = False

    def send(self, value: Any) -> Any:
        self._started = True
        return self._coroutine.send(value)

    def throw(self, *args: Any) -> Any:
        if not self._started:
            self._never_ran("cancelled")
        return self._coroutine.throw(*args)

    def close(self) -> None:
        if not self._started:
            self._never_ran("closed")
        self._coroutine.close()

    def __await__(self) -> Generator[Any, None, None]:
        self._started = True
        return self._coroutine.__await__()

    def _never_ran(self, how: str) -> None:
        self._started = True
        if self._runner.state == "new":
            self._runner.stop(f"run() was {how} before it started")


async def _wait_through(work: Awaitable[None]) -> None:
    """Wait until ``work`` ends, whatever it raises, without passing it a cancellation of this task (which
    ``asyncio.gather`` or a plain ``await`` would): such a cancellation is raised once ``work`` has ended."""
    future = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError as exc:
            cancelled = exc
    if not future.cancelled():
        future.exception()  # retrieved: the backend reports its own failures through the runner
    if cancelled is not None:
        raise cancelled


def _outside_this_module() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside this module (and contextlib)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__") in (__name__, "contextlib"):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
