# -- the handle's touch, compiled with the engine ------------------------------------------------------
# ``TimerHandle`` inherits it; ``_handle_core_py.py`` is its pure-Python twin.


@cython.binding(False)  # a plain C method: the caller's call goes straight into it, with no frame
@cython.embedsignature.format("clinic")  # a signature inspect reads (__text_signature__), as a bound one would give
@cython.auto_pickle(False)  # its state is the subclass's too: a copy goes through TimerHandle's own reduction
cdef class HandleCore:
    """The part of the handle compiled with the engine: ``touch``, which goes from the caller to the timer's
    touch record in C when nothing has to come first. The subclass gives ``_touch_in_order``, the ordered path."""

    cdef Engine _compiled  # the manager's engine, when it is this module's
    cdef object _other     # any other engine (pure-Python, remote), asked through its touch_now

    def _use_engine(self, engine, /):
        """Touch through ``engine``."""
        if type(engine) is Engine:  # exactly: a subclass may answer touch_now otherwise
            self._compiled, self._other = engine, None
        else:
            self._compiled, self._other = None, engine

    def touch(self, name):
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
        cdef int touched
        cdef Engine engine = self._compiled  # a reference of its own: Python code may run inside the touch
        if engine is not None:
            touched = engine._touch_now(name)
            if touched >= 0:
                return touched == 1
        elif self._other is not None:
            answer = self._other.touch_now(name)
            if answer is not None:
                return answer
        return self._touch_in_order(name)


def adopt_touch(cls, /):
    """Give ``cls``, a subclass of :class:`HandleCore`, the ``touch`` method as one of its own.

    CPython specialises a call of a C method (the handle's ``touch``, made on every message of an idle
    timeout) only where the object's type is exactly the method's own; an inherited one takes the generic
    call, which also checks the subclass: 11 ns more per touch, hot (``benches/touch_call.py``).
    """
    if not (isinstance(cls, type) and issubclass(cls, HandleCore)):
        raise TypeError(f"expected a subclass of HandleCore, got {cls!r}")
    inherited = HandleCore.__dict__["touch"]
    if type(inherited) is not MethodDescriptorType:  # not a plain C method (a build without binding=False)
        return
    cls.touch = PyDescr_NewMethod(<PyTypeObject*>cls, (<PyMethodDescrObject*>inherited).d_method)
