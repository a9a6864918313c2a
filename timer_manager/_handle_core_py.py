"""The part of ``TimerHandle`` that the compiled core compiles (``_handle_core_c.pxi``): ``touch``, which asks
the engine to touch at the call and otherwise takes the handle's ordered path. This is its pure-Python twin."""

from __future__ import annotations

from ._protocol import EngineInterface

__all__ = ("HandleCore", "adopt_touch")


class HandleCore:
    """The part of the handle compiled with the engine: ``touch``, which goes from the caller to the timer's
    touch record when nothing has to come first. The subclass gives ``_touch_in_order``, the ordered path."""

    __slots__ = ("_touch_engine",)

    def _use_engine(self, engine: EngineInterface, /) -> None:
        """Touch through ``engine``."""
        self._touch_engine = engine

    def touch(self, name: str) -> bool:
        """Make pending timer ``name`` due at now + the duration it was last set with; return whether it
        was pending or its event waited to be received (nothing happens if neither).

        The cheap way to keep an idle timeout from firing while there is activity: the timer keeps its
        place in the manager's heap and only its latest deadline is written, with no command queued
        (it is put back at that deadline when its earlier one comes round: about once per period).
        Otherwise it behaves exactly as ``set_timer(name, duration)`` made now would, payload kept: same
        order among equal deadlines, never early, and an event that fell due and was not received yet
        is retracted and the timer armed again (under ``max_timers``, only if a place is free: otherwise the touch
        does nothing, the event stays, and it returns False). A timer set with :meth:`set_timer_at` took ``when`` -
        now as its duration; a repeating timer's next tick moves to now + its period, and its grid with
        it. Commands sent before (from this thread, or from threads whose call returned) are applied
        first, so a touch never acts on a timer state they replace. Once the manager's cancellation token is
        cancelled, a touch does nothing (the stop on its way discards it, as it discards the commands still
        queued) and returns whether the timer is pending. Made from code the manager runs in the middle of its own
        work (a DEBUG log handler, a ``__del__`` run by a garbage collection), a touch is queued as a command, behind
        those queued, and returns whether the timer is pending at the call.

        On a remote backend (Redis) a touch is a command, applied on the server in order with the
        others: it returns True once queued (only the server knows whether the timer was pending), and
        raises :class:`QueueFull` if the command queue has no room.
        """
        touched = self._touch_engine.touch_now(name)
        if touched is None:
            return self._touch_in_order(name)
        return touched

    def _touch_in_order(self, name: str) -> bool:
        """A touch that may have to wait for what comes first: the subclass's."""
        raise NotImplementedError


def adopt_touch(cls: type[HandleCore], /) -> None:
    """The compiled core gives ``cls`` a ``touch`` of its own, for CPython's call specialisation; a Python method's
    calls are specialised in subclasses too, so here there is nothing to do."""
    if not (isinstance(cls, type) and issubclass(cls, HandleCore)):
        raise TypeError(f"expected a subclass of HandleCore, got {cls!r}")
