# The engine: the same ``Engine`` as ``_engine_py.py``. Included by ``_core_c.pyx`` after the table, so
# that it calls the table's C methods directly (no Python call per timer).
#
# Where it differs from its twin, for speed: commands wait in a C ring of structs rather than a deque
# of tuples, and events are built by filling the slots of a new ``TimerExpired`` directly rather than
# through the frozen dataclass's ``__init__`` (which costs a Python-level ``object.__setattr__`` per
# field). The slot offsets are read off the class's member descriptors at import, and checked.

ctypedef struct CommandSlot:
    int op
    PyObject* name      # strong reference or NULL
    double deadline     # SET; TOUCH: the touch's now
    double span         # SET
    PyObject* value     # strong reference or NULL: an Interval, or a flush's future
    PyObject* data      # strong reference or NULL


cdef enum:
    OP_SET = 0
    OP_SET_INTERVAL = 1
    OP_CANCEL = 2
    OP_CANCEL_ALL = 3
    OP_SHUTDOWN = 4
    OP_FLUSH = 5
    OP_TOUCH = 6
    RING_MIN = 64
    WINDOW = 1024

assert (SET, SET_INTERVAL, CANCEL, CANCEL_ALL, SHUTDOWN, FLUSH, TOUCH) == (0, 1, 2, 3, 4, 5, 6)
assert (QUEUE_FULL, QUEUED, QUEUED_FIRST, APPLIED) == (0, 1, 2, 3)
assert LATENESS_WINDOW == WINDOW


# -- building events ------------------------------------------------------------------------------

cdef PyTypeObject* _event_type = <PyTypeObject*>TimerExpired
cdef Py_ssize_t _name_offset = -1
cdef Py_ssize_t _deadline_offset = -1
cdef Py_ssize_t _data_offset = -1


cdef Py_ssize_t _slot_offset(str field) except -1:
    descriptor = TimerExpired.__dict__.get(field)
    if type(descriptor).__name__ != "member_descriptor":
        return -1
    return (<PyMemberDescrObject*>descriptor).d_member.offset


def _check_event_layout():
    """Use the direct construction only if it builds exactly what ``TimerExpired(...)`` builds."""
    global _name_offset, _deadline_offset, _data_offset
    offsets = (_slot_offset("name"), _slot_offset("deadline"), _slot_offset("data"))
    if min(offsets) <= 0 or len(set(offsets)) != 3 or TimerExpired.__slots__ != ("name", "deadline", "data"):
        return
    _name_offset, _deadline_offset, _data_offset = offsets
    made = _new_event("x", 1.5, None)
    if made != TimerExpired("x", 1.5) or repr(made) != repr(TimerExpired("x", 1.5)):
        _name_offset = -1


cdef inline void _fill_slot(PyObject* obj, Py_ssize_t offset, object value) noexcept:
    Py_INCREF(<PyObject*>value)
    (<PyObject**>(<char*>obj + offset))[0] = <PyObject*>value


cdef object _new_event(object name, double deadline, object data):
    if _name_offset < 0:
        return TimerExpired(name, deadline, data)
    cdef PyObject* obj = PyType_GenericAlloc(_event_type, 0)
    event = <object>obj  # a new reference; drop the one from the allocation
    Py_DECREF(obj)
    _fill_slot(obj, _name_offset, name)
    _fill_slot(obj, _deadline_offset, PyFloat_FromDouble(deadline))
    _fill_slot(obj, _data_offset, data)
    if data is None and PyUnicode_CheckExact(name):
        # A str, a float and None cannot form a reference cycle, so the garbage collector need
        # not track the event. In a storm, hundreds of thousands of events wait in the queue:
        # tracked, every full collection would walk them all (as CPython does for tuples of atoms).
        PyObject_GC_UnTrack(obj)
    return event


cdef inline object _event_name(object event):
    if _name_offset < 0:
        return event.name
    return <object>(<PyObject**>(<char*><PyObject*>event + _name_offset))[0]


_check_event_layout()


# -- the engine -----------------------------------------------------------------------------------

cdef object _deque = deque


cdef inline Py_ssize_t _length(object sized) except -1:
    """``len(sized)``; of a deque (the runner's inbox), read off the object with no call: a touch at the call
    reads it on every message, out of the caches."""
    if type(sized) is _deque:
        return Py_SIZE(sized)
    return len(sized)


@cython.binding(False)  # plain C methods: CPython's call specialisations apply to them
cdef class Engine:
    """The command queue, the timer table and the ready events of one manager."""

    # First, together, what a touch at the call reads: in a server each message finds them out of the caches,
    # and each further line they spread over was one more miss.
    cdef TimerTable _table          # the same table when it is exactly a TimerTable, else None
    cdef public object handed_over  # the runner's inbox (commands other threads handed over): a Sized
    cdef object _clock
    cdef public dict intervals
    cdef dict _ready                # name -> its receivable event
    cdef Py_ssize_t _count          # commands in the ring
    cdef public bint applies_at_call  # kept by the runner: running on its loop, open, local, not in debug mode
    # Kept by the runner: the earliest deadline its armed wake-up is for (inf: none is armed; -inf: a set at the call
    # asked for a pass, which arms it afresh).
    cdef public double wake_for
    # Set at the first repeating timer, never cleared: until then a touch does not read the repeating timers (a
    # line of its own, out of the caches in a server).
    cdef bint _had_intervals
    # Set while a timer moves between the queue, the table and the ready events (apply, fire, a take or a touch
    # that re-arms) and Python code may run (a log handler, the admission, a payload's __del__, the collector):
    # that code must not change timers then. Its apply() does nothing (the outer one, or the pass its commands
    # woke, applies them in order) and its touch() is queued behind them.
    cdef bint _busy
    cdef bint _monotonic            # the clock is time.monotonic: a touch reads it in C
    # Where the clock is a bound method (a loop's time(), uvloop's included) with a C entry point, a touch calls
    # that entry with the method's self, as the method would: Cython's generic call of the bound method cost 10 to
    # 25 ns more per touch on uvloop, hot (benches/touch_call.py, the two builds alternated).
    cdef _vectorcallfunc _clock_call
    cdef object _clock_function
    cdef object _clock_self

    cdef readonly object table
    cdef public Py_ssize_t command_capacity
    cdef public Py_ssize_t event_capacity
    cdef public object wake
    cdef public bint waiting_for_room
    cdef public dict data
    cdef public dict reserved
    cdef public object release      # called with a name once a reserved set of it is applied
    cdef public object admit_rearm  # max_timers: may a touch re-arm a one-shot that fell due (under lock)?
    cdef public object lock         # held while a reserved set is applied (max_timers admission reads from threads)
    cdef public object logs_commands  # whether the runner logs each command it applies (a set is then queued)
    cdef public dict log_cache      # that logger's cache of its answers per level, where it has one
    cdef public Py_ssize_t parked   # repeating timers whose event is ready: out of the table, still pending
    cdef public bint halted         # set (from any thread) by a token's cancellation: apply nothing more

    cdef CommandSlot* _ring
    cdef Py_ssize_t _ring_size      # a power of two
    cdef Py_ssize_t _head

    # Ready events in order, from _events_head on: a list used as a queue (appending and indexing
    # a list are C calls; a deque's methods are Python calls). Emptied or compacted as it drains.
    cdef list _events
    cdef Py_ssize_t _events_head
    # A touch of a timer whose event is ready re-arms it with its span. While every set used one span
    # (NaN before the first set) that is _span, and nothing is kept per event; after, _spans has it.
    cdef double _span
    cdef bint _spans_vary
    cdef dict _spans                # name -> span, for events made ready since the spans varied
    cdef double _lateness[WINDOW]
    cdef Py_ssize_t _lateness_len
    cdef Py_ssize_t _lateness_next

    cdef public Py_ssize_t count_set
    cdef public Py_ssize_t count_reset
    cdef public Py_ssize_t count_cancelled
    cdef public Py_ssize_t count_fired
    cdef public Py_ssize_t count_retracted
    cdef public Py_ssize_t command_high_water
    cdef public Py_ssize_t event_high_water

    def __cinit__(self, table not None, Py_ssize_t command_capacity, Py_ssize_t event_capacity):
        self.table = table
        # Any object with the TimerTable interface works; a plain TimerTable is driven through its C
        # methods, anything else (a subclass, a test's spy) through its Python ones.
        self._table = table if type(table) is TimerTable else None
        self.command_capacity = command_capacity
        self.event_capacity = event_capacity
        self.clock = _nothing
        self.wake = _nothing
        self.data = {}
        self.intervals = {}
        self.reserved = {}
        self.release = _nothing
        self.admit_rearm = _always
        self.lock = nullcontext()
        self.handed_over = ()
        self.wake_for = INFINITY
        self.logs_commands = _never
        self._events = []
        self._ready = {}
        self._spans = {}
        self._span = NAN
        self._ring = <CommandSlot*>PyMem_Malloc(RING_MIN * sizeof(CommandSlot))
        if self._ring == NULL:
            raise MemoryError()
        self._ring_size = RING_MIN

    def __dealloc__(self):
        self._drop_commands()
        PyMem_Free(self._ring)

    @property
    def clock(self):
        """The manager's clock: a callable returning its time in seconds."""
        return self._clock

    @clock.setter
    def clock(self, clock):
        self._clock = clock
        self._monotonic = _have_monotonic and clock is _time_monotonic
        self._clock_call = NULL
        self._clock_function = self._clock_self = None
        if PyMethod_Check(clock):
            self._clock_function = <object>PyMethod_GET_FUNCTION(clock)
            self._clock_self = <object>PyMethod_GET_SELF(clock)
            self._clock_call = PyVectorcall_Function(self._clock_function)

    # -- the command queue ------------------------------------------------------------------------

    def queued(self):
        """How many commands wait to be applied."""
        return self._count

    def push(self, int op, name, value, data):
        """Queue a command unless the queue is full: ``QUEUE_FULL``, ``QUEUED``, or ``QUEUED_FIRST`` if the
        queue was empty (the manager must be woken)."""
        return self._push_command(op, name, value, data, False)

    def push_set(self, name, double deadline, double span, data):
        """``push(SET, name, (deadline, span), data)``, the hot path."""
        return self._push(OP_SET, name, deadline, span, None, data)

    def set_now(self, name, double deadline, double span, data):
        """A loop-side set: applied at once where nothing may have to come first (``applies_at_call`` is set, no
        command is queued or handed over, no command is being logged, ``name`` is a str), answering ``APPLIED``;
        otherwise ``push_set``'s answer. A set applied at once asks for a pass only where its deadline comes
        before the one the armed wake-up is for (``wake_for``)."""
        if (
            not self.applies_at_call
            or self._count
            or self._busy
            or self.halted
            or not PyUnicode_CheckExact(name)
            or _length(self.handed_over)
            or self._logging()
        ):
            return self._push(OP_SET, name, deadline, span, None, data)
        self._busy = True  # code run meanwhile (a payload's __del__, the admission's lock) queues behind this set
        try:
            self._apply_set(OP_SET, name, None, deadline, span, data)
        finally:
            self._busy = False
        if deadline < self.wake_for:
            # The pass asked for arms the wake-up for whatever is earliest then: no set before it asks again.
            self.wake_for = -INFINITY
            self.wake()
        return APPLIED

    @cython.final
    cdef bint _logging(self) except -1:
        """Whether the runner logs each command it applies (then a set is queued, and logged as it is applied).
        The logger's own cache of its answers (``log_cache``) spares the Python call to ``logs_commands`` where it
        holds one."""
        if self.log_cache is not None:
            cached = self.log_cache.get(_DEBUG)
            if cached is not None:
                return cached is True
        return bool(self.logs_commands())

    def push_all(self, list commands not None):
        """Queue ``commands`` whatever the room (the caller has accounted for it); answers as ``push``."""
        cdef Py_ssize_t length = self._count
        for op, name, value, data in commands:
            self._push_command(op, name, value, data, True)
        return QUEUED_FIRST if length == 0 and self._count else QUEUED

    @cython.final
    cdef int _push_command(self, int op, object name, object value, object data, bint anyway) except -1:
        if op == OP_SET:
            if type(value) is tuple:
                deadline, span = value
                return self._push(OP_SET, name, deadline, span, None, data, anyway)
            return self._push(OP_SET, name, value, 0.0, None, data, anyway)
        if op == OP_TOUCH:
            return self._push(OP_TOUCH, name, value, 0.0, None, data, anyway)
        return self._push(op, name, 0.0, 0.0, value, data, anyway)

    @cython.final
    cdef int _push(
        self, int op, object name, double deadline, double span, object value, object data, bint anyway=False
    ) except -1:
        cdef Py_ssize_t length = self._count
        if length >= self.command_capacity and not anyway:
            return 0
        if length == self._ring_size:
            self._grow_ring()
        cdef CommandSlot* slot = &self._ring[(self._head + length) & (self._ring_size - 1)]
        slot.op = op
        slot.deadline = deadline
        slot.span = span
        slot.name = _new_ref(name)
        slot.value = _new_ref(value)
        slot.data = _new_ref(data)
        self._count = length + 1
        if length >= self.command_high_water:
            self.command_high_water = length + 1
        return 2 if length == 0 else 1

    @cython.final
    cdef int _grow_ring(self) except -1:
        cdef Py_ssize_t size = self._ring_size * 2
        cdef CommandSlot* ring = <CommandSlot*>PyMem_Malloc(size * sizeof(CommandSlot))
        if ring == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(self._count):
            ring[i] = self._ring[(self._head + i) & (self._ring_size - 1)]
        PyMem_Free(self._ring)
        self._ring = ring
        self._ring_size = size
        self._head = 0
        return 0

    @cython.final
    cdef void _shrink_ring(self) noexcept:
        # A burst of commands may have grown the ring; give the memory back once it is drained.
        cdef CommandSlot* ring
        if self._count == 0 and self._ring_size > 1024:
            ring = <CommandSlot*>PyMem_Malloc(RING_MIN * sizeof(CommandSlot))
            if ring != NULL:
                PyMem_Free(self._ring)
                self._ring = ring
                self._ring_size = RING_MIN
                self._head = 0

    def withdraw(self, marker):
        """Remove the queued ``FLUSH`` whose future is ``marker`` (its caller was cancelled before it was applied),
        keeping the order of the others; return whether it was still queued. Newest first: the marker is
        usually the last command queued. Not a hot path: a cancelled flush or query."""
        cdef Py_ssize_t mask = self._ring_size - 1
        cdef Py_ssize_t index = self._count
        cdef Py_ssize_t later
        cdef CommandSlot* slot
        cdef CommandSlot removed
        while index > 0:
            index -= 1
            slot = &self._ring[(self._head + index) & mask]
            if slot.op == OP_FLUSH and slot.value == <PyObject*>marker:
                removed = slot[0]
                for later in range(index, self._count - 1):  # the commands after it move up one place
                    self._ring[(self._head + later) & mask] = self._ring[(self._head + later + 1) & mask]
                self._count -= 1
                # The ring is whole again before anything can run Python code (the caller holds the marker).
                Py_XDECREF(removed.name)
                Py_XDECREF(removed.value)
                Py_XDECREF(removed.data)
                return True
        return False

    def apply(self, log=None):
        """Apply the queued commands in order; stop after a shutdown and return True if there was one.

        ``log`` sees each command just before it is applied; it may queue more (a log handler that sets a
        timer), which are applied in this call too.
        """
        cdef CommandSlot* slot
        cdef int op
        cdef double deadline
        cdef double span
        cdef bint was_parked
        if self._busy:
            return False
        self._busy = True
        try:
            while self._count and not self.halted:
                slot = &self._ring[self._head]
                op = slot.op
                deadline = slot.deadline
                span = slot.span
                # Take the slot's references before anything can run Python code.
                name = _steal(&slot.name)
                value = _steal(&slot.value)
                data = _steal(&slot.data)
                self._head = (self._head + 1) & (self._ring_size - 1)
                self._count -= 1
                if log is not None:
                    log(op, name, deadline if op == OP_SET or op == OP_TOUCH else value)
                if op <= OP_SET_INTERVAL:
                    if op == OP_SET_INTERVAL:
                        deadline = value.origin
                        span = value.period
                    self._apply_set(op, name, value, deadline, span, data)
                elif op == OP_CANCEL:
                    was_parked = self._ready and PyDict_Contains(self._ready, name) and self._retract(name)
                    # Out of the repeating timers before it leaves parked or the table: a timer that is_live() sees and
                    # live_count() no longer counts would be counted nowhere by max_timers admission, nor a set of its
                    # name queued behind this cancel (reserved, but taken for live).
                    if self.intervals:
                        self.intervals.pop(name, None)
                    if was_parked:
                        self.parked -= 1  # a parked repeating timer, pending, out of the table: cancelled
                        self.count_cancelled += 1
                    if (self._table._cancel(name) if self._table is not None else self.table.cancel(name)):
                        self.count_cancelled += 1
                    if self.data:
                        self.data.pop(name, None)
                elif op == OP_CANCEL_ALL:
                    for ready_name in list(self._ready):
                        # A retraction may drop events, whose payloads' __del__ may take events from the queue.
                        if PyDict_Contains(self._ready, ready_name):
                            self._retract(ready_name)
                    self.intervals.clear()  # first, as for OP_CANCEL
                    self.count_cancelled += self.table.clear() + self.parked  # parked repeating timers are pending too
                    self.parked = 0
                    self.data.clear()
                elif op == OP_FLUSH:
                    resolve(value)  # no handler runs between a C future's check and set, but a Python one's
                elif op == OP_TOUCH:
                    self._touch(name, deadline)
                else:  # SHUTDOWN
                    return True
            return False
        finally:
            self._busy = False
            self._shrink_ring()

    def discard(self):
        """Stop for good: drop pending timers and queued commands.

        Returns how many timers were pending and the futures of queued flushes (to be failed).
        """
        cdef Py_ssize_t i
        cdef CommandSlot* slot
        flushes = []
        for i in range(self._count):
            slot = &self._ring[(self._head + i) & (self._ring_size - 1)]
            if slot.op == OP_FLUSH:
                flushes.append(<object>slot.value)
        self._drop_commands()
        self._spans.clear()
        pending = self.table.clear() + self.parked
        self.parked = 0
        self.intervals.clear()
        self.data.clear()
        return pending, flushes

    @cython.final
    cdef void _drop_commands(self) noexcept:
        """Drop the commands queued now (not those a __del__ queues meanwhile, as a deque's clear would not)."""
        cdef CommandSlot removed
        cdef Py_ssize_t left = self._count
        while left and self._count:
            removed = self._ring[self._head]
            self._head = (self._head + 1) & (self._ring_size - 1)
            self._count -= 1
            left -= 1
            # The ring is whole again before anything can run Python code: a payload's __del__ may queue a
            # command, and growing the ring would free the slot under a pointer into it.
            Py_XDECREF(removed.name)
            Py_XDECREF(removed.value)
            Py_XDECREF(removed.data)

    @cython.final
    cdef int _visit_commands(self, _visitproc visit, void* arg) noexcept:
        cdef Py_ssize_t i
        cdef CommandSlot* slot
        cdef int result = 0
        for i in range(self._count):
            slot = &self._ring[(self._head + i) & (self._ring_size - 1)]
            if slot.name != NULL:
                result = visit(slot.name, arg)
            if not result and slot.value != NULL:
                result = visit(slot.value, arg)
            if not result and slot.data != NULL:
                result = visit(slot.data, arg)
            if result:
                return result
        return 0

    def touch(self, name, double now):
        """Make pending timer ``name`` due at ``now`` + the duration it was last set with, as a set made at
        ``now`` would (its ready event, if it fell due and was not received, is retracted and it is armed
        again); keep its payload. Return whether it was pending."""
        if self._busy:  # from code run in the middle of a timer's move: queued behind it
            if self._push(OP_TOUCH, name, now, 0.0, None, None, True) == 2:
                self.wake()
            return self.is_live(name)
        return self._touch(name, now) == 1

    def touch_now(self, name):
        """``touch(name, clock())`` at the call, if nothing may have to come first: ``applies_at_call`` is set, no
        command is queued or handed over, and ``name`` is a str. Otherwise None, with nothing done."""
        cdef int touched = self._touch_now(name)
        return None if touched < 0 else touched == 1

    @cython.final
    cdef int _touch_now(self, name) except -2:
        """``touch_now`` for C callers (``HandleCore.touch``): -1 where it answers None, else 1 if touched."""
        if not self.applies_at_call or self._count or not PyUnicode_CheckExact(name) or self._busy:
            return -1
        if self._table is not None:
            # In a server the table is cold at each message: its first lines are asked for here, and arrive
            # while the inbox and the clock are read (a third less CPU in the touch, benches/idle_server.py).
            self._table._expect(_str_hash(name))
        if _length(self.handed_over):
            return -1
        cdef double now = _monotonic() if self._monotonic else -1.0
        cdef PyObject* owner
        if now < 0.0:
            if self._clock_call is not NULL:
                # References of its own: the clock's Python code (the collector, a __del__) may replace the clock.
                function, clock_self = self._clock_function, self._clock_self
                owner = <PyObject*>clock_self
                now = self._clock_call(<PyObject*>function, &owner, 1, NULL)
            else:
                now = self._clock()
        return self._touch(name, now) == 1

    @cython.final
    cdef int _touch(self, name, double now) except -1:
        cdef double span
        cdef int touched
        interval = self.intervals.get(name) if self._had_intervals and PyDict_GET_SIZE(self.intervals) else None
        if interval is not None:  # a repeating timer: its grid restarts one period from now
            interval.origin = now + interval.period
        if self._table is not None:
            # The usual case: one write beside the timer's heap entry, asked of the table first. A timer in the table
            # has no ready event (its fire takes it out; a set or a touch withdraws the event before putting it
            # back), so the ready events are looked at only for a name the table does not hold.
            touched = self._table._touch(name, now)
            if touched == 2:
                # Earlier than its place (a repeating timer whose first tick was more than a period away): the
                # table moved it, and the wake-up armed for its old deadline may come too late. A touch at the
                # call queues no command, so nothing else would re-arm it.
                self.wake()
            if touched or not (PyDict_GET_SIZE(self._ready) and PyDict_Contains(self._ready, name)):
                return 1 if touched else 0
        elif not (PyDict_GET_SIZE(self._ready) and PyDict_Contains(self._ready, name)):
            before = self.table.deadline(name)
            if not self.table.touch(name, now):
                return 0
            if self.table.deadline(name) < before:  # moved earlier, as above
                self.wake()
            return 1
        event = self._ready[name]
        span = self._spans.get(name, self._span) if interval is None else interval.period
        cdef bint again = False
        cdef bint busy = self._busy
        self._busy = True  # from the event's retraction until the timer is armed again
        try:
            with self.lock:  # parked and table move together for the admission (max_timers)
                # A one-shot timer that fell due is not pending: re-arming it takes a place, as a set would. At the
                # max_timers limit the touch does nothing (its event stays) and reports it was not pending.
                if interval is None and not self.admit_rearm(name):
                    return 0
                # Taking the lock and asking the admission are Python calls: the collector may have run, and a
                # __del__ received or retracted the event meanwhile. Then the touch starts again from what is there.
                again = self._ready.get(name) is not event
                if not again:
                    was_parked = self._retract(name)
                    if event.data is not None and interval is None:
                        self.data[name] = event.data  # fire moved it into the event; the timer keeps it
                    self._set(name, now + span, span)
                    if was_parked:
                        self.parked -= 1
        finally:
            self._busy = busy
        if again:
            return self._touch(name, now)
        if interval is None:  # a one-shot that fell due was not pending: re-armed, it is a timer created
            self.count_set += 1
        self.wake()  # the runner arms the wake-up for it
        return 1

    # -- what is pending -----------------------------------------------------------------------------

    def live_count(self):
        """How many timers are pending: in the table, or parked (a repeating timer whose event is ready)."""
        return len(self.table) + self.parked

    def is_live(self, name):
        """Whether ``name`` is pending (in the table, or a parked repeating timer)."""
        return name in self.table or PyDict_Contains(self.intervals, name)

    def pending_deadline(self, name):
        """The deadline of pending timer ``name`` (a parked one's is its ready event's), or None."""
        deadline = self.table.deadline(name)
        if deadline is None and PyDict_Contains(self.intervals, name):
            event = self._ready.get(name)
            if event is not None:
                deadline = event.deadline
        return deadline

    # -- the ready events -------------------------------------------------------------------------

    def ready_count(self):
        """How many events wait to be received."""
        return len(self._ready)

    def fire(self, double bound, double now):
        """Move timers due at ``bound`` into the event queue, as far as it has room; return how many."""
        cdef bint busy = self._busy
        self._busy = True  # a timer out of the table is not ready until its event is built (an allocation)
        try:
            return self._fire(bound, now)
        finally:
            self._busy = busy

    @cython.final
    cdef Py_ssize_t _fire(self, double bound, double now) except -1:
        cdef Py_ssize_t room = self.event_capacity - len(self._ready)
        cdef Py_ssize_t count = 0
        cdef double deadline = 0.0
        cdef double span = 0.0
        cdef TimerTable table = self._table
        cdef dict ready = self._ready
        cdef dict spans = self._spans
        cdef list due = None
        cdef list due_spans = None
        cdef Py_ssize_t next_due = 0
        if room <= 0:
            if table is not None:
                table._settle(bound, SETTLE_AHEAD)  # so that the runner sees whether a timer is due
            else:
                self.table.settle(bound, SETTLE_AHEAD)
            return 0
        if table is None:
            due_spans = [] if self._spans_vary else None
            due = self.table.pop_due(bound, room, due_spans)
        cdef dict data = self.data
        while count < room:
            if table is not None:
                name = table._pop_due_one(bound, &deadline, &span)
                if name is None:
                    break
            elif next_due < len(due):
                name, deadline = due[next_due]
                if due_spans is not None:
                    span = due_spans[next_due]
                next_due += 1
            else:
                break
            if self._spans_vary:
                spans[name] = span
            if PyDict_GET_SIZE(self.intervals) and PyDict_Contains(self.intervals, name):
                self.parked += 1
                event = _new_event(name, deadline, data.get(name) if PyDict_GET_SIZE(data) else None)
            elif PyDict_GET_SIZE(data):
                event = _new_event(name, deadline, data.pop(name, None))
            else:
                event = _new_event(name, deadline, None)
            ready[name] = event
            # Not a list read before the loop: building the event may run the garbage collector, and through a
            # __del__ a touch whose retraction replaced the queue (_retract).
            self._events.append(event)
            self._lateness[self._lateness_next] = now - deadline
            self._lateness_next = (self._lateness_next + 1) & (WINDOW - 1)
            if self._lateness_len < WINDOW:
                self._lateness_len += 1
            count += 1
        if table is not None:
            table._settle(bound, SETTLE_AHEAD)  # so that the runner sees whether a timer is due
        else:
            self.table.settle(bound, SETTLE_AHEAD)
        if count:
            if table is not None:
                table._compact_if_sparse()
            self.count_fired += count
            if len(ready) > self.event_high_water:
                self.event_high_water = len(ready)
        return count

    def take_now(self):
        """``take()``, if no command waits to be applied (queued, or handed over by another thread): a reset or a
        cancel among them may retract the event. Otherwise None, with nothing taken (the receive's slow path
        applies them first)."""
        if self._count or _length(self.handed_over):
            return None
        return self.take()

    cpdef object take(self):
        """Remove and return the next receivable event, or None."""
        cdef dict ready = self._ready
        cdef list events
        cdef Py_ssize_t head
        cdef bint busy
        while True:
            # Read afresh each round: dropping a retracted event (below) may have run its payload's __del__,
            # and through it this engine's methods (a take, a touch that rebuilt the queue).
            events = self._events
            head = self._events_head
            if head >= len(events):
                return None
            event = events[head]
            events[head] = None
            head += 1
            if head == len(events):
                del events[:]
                head = 0
            elif head >= 1024 and head * 2 >= len(events):
                del events[:head]
                head = 0
            self._events_head = head
            name = _event_name(event)
            if ready.get(name) is event:
                if PyDict_GET_SIZE(self.intervals) and PyDict_Contains(self.intervals, name):
                    busy = self._busy
                    self._busy = True  # until the repeating timer is back in the table: the next tick is Python
                    try:
                        del ready[name]
                        self._rearm(name, event)
                    finally:
                        self._busy = busy
                    self.wake()
                    return event
                del ready[name]
                if PyDict_GET_SIZE(self._spans):
                    self._spans.pop(name, None)
                if self.waiting_for_room:
                    self.wake()
                return event
            # A retracted event: the queue is whole, so its last reference (and its payload's) may go now,
            # rather than at the next round's reads, where a __del__ would find the queue half updated.
            event = None
            name = None
            events = None

    @cython.final
    cdef int _rearm(self, name, event) except -1:
        """Arm repeating timer ``name`` again, its ``event`` taken: from parked back to the table."""
        if PyDict_GET_SIZE(self._spans):
            self._spans.pop(name, None)
        interval = self.intervals[name]
        next_deadline = interval.next_deadline(event.deadline, self._clock())
        with self.lock:  # from parked back to the table in one step, for the admission (max_timers)
            self._set(name, next_deadline, interval.period)
            self.parked -= 1
        return 0

    def take_many(self, Py_ssize_t limit):
        """Remove and return up to ``limit`` receivable events."""
        taken = []
        while len(taken) < limit:
            event = self.take()
            if event is None:
                break
            taken.append(event)
        return taken

    def lateness_window(self):
        """The recent lateness samples (seconds from deadline to ready)."""
        return [self._lateness[i] for i in range(self._lateness_len)]

    @cython.final
    cdef int _apply_set(self, int op, name, value, double deadline, double span, data) except -1:
        """Apply a set (a repeating one for a SET_INTERVAL, ``value`` its Interval) of ``name`` due at ``deadline``:
        its ready event retracted, the timer placed, counted, its payload kept. Called with ``_busy`` set."""
        cdef bint was_parked = self._ready and PyDict_Contains(self._ready, name) and self._retract(name)
        cdef int replaced = 0
        if self.reserved:
            # A reserved name turns live, counted and unreserved at once for an admission that reads
            # intervals (is_live), the table and parked (live_count), and the reservations.
            with self.lock:
                replaced = self._place(op, name, value, deadline, span, was_parked)
                self.release(name)
        else:
            replaced = self._place(op, name, value, deadline, span, was_parked)
        if replaced or was_parked:  # a parked repeating timer is pending: a set of it replaces it
            self.count_reset += 1
        else:
            self.count_set += 1
        if data is not None:
            self.data[name] = data
        elif self.data:
            self.data.pop(name, None)
        return 0

    @cython.final
    cdef int _place(self, int op, name, value, double deadline, double span, bint was_parked) except -1:
        """Make ``name`` a pending timer (repeating for a SET_INTERVAL, ``value`` its Interval) due at
        ``deadline``: every change that ``is_live`` and ``live_count`` see, made together (under the admission's
        lock with ``max_timers``). Return whether it replaced a timer in the table."""
        if op == OP_SET_INTERVAL:
            self._had_intervals = True
            self.intervals[name] = value
        elif self.intervals:
            self.intervals.pop(name, None)
        cdef int replaced = self._set(name, deadline, span)
        if was_parked:
            self.parked -= 1
        return replaced

    @cython.final
    cdef inline int _set(self, name, double deadline, double span) except -1:
        if not self._spans_vary and span != self._span:
            if self._span != self._span:  # the first set
                self._span = span
            else:
                self._spans_vary = True
        if self._table is not None:
            return self._table._set(name, deadline, span)
        return 1 if self.table.set_with_span(name, deadline, span) else 0

    @cython.final
    cdef int _retract(self, name) except -1:
        """Withdraw ``name``'s ready event; return whether ``name`` was parked (the caller uncounts it)."""
        del self._ready[name]
        if PyDict_GET_SIZE(self._spans):
            self._spans.pop(name, None)
        self.count_retracted += 1
        cdef list events = self._events
        cdef list rebuilt
        cdef Py_ssize_t i
        # Retracted events stay in the queue until they reach its front; rebuild it if they pile up.
        if len(events) - self._events_head > 2 * len(self._ready) + 64:
            ready = self._ready
            # The new list first, and the head read after it: before Python 3.12 its allocation may start a
            # collection, whose __del__ may take events (moving the head, emptying the slots before it). Appending
            # and the dict lookups run no Python code.
            rebuilt = []
            for i in range(self._events_head, len(events)):
                event = events[i]
                if ready.get(_event_name(event)) is event:
                    rebuilt.append(event)
            self._events = rebuilt
            self._events_head = 0
            # The old list (``events``) goes, with the retracted events and their payloads, only on return: any
            # __del__ then finds the queue and its head whole.
        return PyDict_Contains(self.intervals, name)


# -- garbage collection ---------------------------------------------------------------------------
# Cython's slots know only the object fields; queued commands hold their references in the C ring, so chain a
# traverse that visits them (a payload can refer back to the engine) and a clear that drops them.

cdef _traverseproc _cython_engine_traverse = (<_GCSlots*><PyObject*>Engine).tp_traverse
cdef _inquiry _cython_engine_clear = (<_GCSlots*><PyObject*>Engine).tp_clear


cdef int _engine_traverse(PyObject* o, _visitproc visit, void* arg) noexcept:
    cdef int result = _cython_engine_traverse(o, visit, arg)
    if result:
        return result
    return (<Engine>o)._visit_commands(visit, arg)


cdef int _engine_clear(PyObject* o) noexcept:
    (<Engine>o)._drop_commands()
    return _cython_engine_clear(o)


(<_GCSlots*><PyObject*>Engine).tp_traverse = _engine_traverse
(<_GCSlots*><PyObject*>Engine).tp_clear = _engine_clear


def _nothing(*args):
    pass


def _always(*args):
    return True


def _never(*args):
    return False


cdef inline PyObject* _new_ref(object value) noexcept:
    if value is None:
        return NULL
    Py_INCREF(<PyObject*>value)
    return <PyObject*>value


cdef inline object _steal(PyObject** slot):
    cdef PyObject* pointer = slot[0]
    slot[0] = NULL
    if pointer == NULL:
        return None
    value = <object>pointer
    Py_DECREF(pointer)
    return value


cdef inline object _object_or_none(PyObject* pointer):
    return None if pointer == NULL else <object>pointer


def _builds_events_directly():
    """Whether events are built by filling their slots (True) or through ``TimerExpired(...)``."""
    return _name_offset >= 0
