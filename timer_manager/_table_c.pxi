# The timer table: the same ``TimerTable`` as ``_table_py.py``, in three flat C arrays. Included by
# ``_core_c.pyx``; docs/design.md describes the layout and the alternatives measured against it.

ctypedef struct Slot:
    uint32_t pos            # heap index of the slot's timer; 0 when empty (the heap starts at HEAP0)
    uint32_t tag            # low 32 bits of the str hash of the name: the slot's home and a filter

ctypedef struct HeapEntry:
    double deadline
    uint32_t sequence       # set order among equal deadlines
    uint32_t slot           # index into _slots of this timer's slot

ctypedef struct Touch:
    double latest           # the deadline a touch gave the timer (later than its heap entry's key)
    uint32_t sequence       # and the touch's sequence: (latest, sequence) is the timer's real key
    uint32_t touched        # 1 while the heap entry holds an earlier key than (latest, sequence)

cdef enum:
    # The root sits at index 3 so that every group of four siblings starts on a 64-byte boundary.
    HEAP0 = 3
    ARITY = 4
    ALIGN = 64
    MIN_CAPACITY = 8
    MIN_SLOTS = 16
    # Heap entries below this index (the top five levels, 5 KB) stay cached between pops.
    HOT_ENTRIES = 344
    # Heap indices are 32-bit; keep well clear of that.
    MAX_TIMERS = 0x7FFFFFFF

cdef enum:
    # What a lookup is for, so that it asks for the lines that will be needed.
    LOOKING = 0
    UPDATING = 1
    TOUCHING = 2

cdef uint64_t SEQUENCES = 0x100000000  # sequence numbers are uint32_t


cdef enum:
    GIVE_BACK_AT = 4 << 20  # bytes freed at once that are worth handing back to the system


cdef inline void _give_back(size_t freed) noexcept nogil:
    """After freeing ``freed`` bytes of arrays: have glibc return free memory to the system.

    Arrays of a few MB come from the main heap once glibc has raised its mmap threshold, and it
    keeps the pages of free chunks inside its heap; ``malloc_trim`` releases them. Elsewhere the
    allocator decides alone.
    """
    if freed >= GIVE_BACK_AT:
        _trim_heap()


cdef inline uint32_t _parent(uint32_t pos) noexcept nogil:
    """The heap index of the parent of the entry at ``pos`` (``pos > HEAP0``)."""
    return (pos - HEAP0 - 1) // ARITY + HEAP0


cdef inline uint32_t _first_child(uint32_t pos) noexcept nogil:
    """The heap index of the first of the four children of the entry at ``pos``."""
    return (pos - HEAP0) * ARITY + HEAP0 + 1


cdef inline bint _precedes(const HeapEntry* a, const HeapEntry* b) noexcept nogil:
    """``(deadline, sequence)`` order, with bitwise operators: no branch for the compiler to emit."""
    return (a.deadline < b.deadline) | ((a.deadline == b.deadline) & (a.sequence < b.sequence))


cdef inline uint32_t _first_of(const HeapEntry* entries, uint32_t i, uint32_t j) noexcept nogil:
    """Whichever of ``entries[i]`` and ``entries[j]`` comes first in ``(deadline, sequence)`` order."""
    cdef double a = entries[i].deadline
    cdef double b = entries[j].deadline
    if a == b:  # rare: equal deadlines, so set order decides
        return i if entries[i].sequence < entries[j].sequence else j
    # Arithmetic rather than a conditional, which compilers may turn into a branch that random
    # deadlines mispredict half the time.
    return i + (j - i) * <uint32_t>(b < a)


cdef inline uint32_t _least_of_group(const HeapEntry* group) noexcept nogil:
    """The index (0 to 3) of the least of four sibling entries in ``(deadline, sequence)`` order."""
    cdef int tie
    cdef uint32_t best = _least_of_four(&group[0].deadline, &tie)
    if tie:  # rare: two deadlines the tournament compared are equal, so set order decides
        best = _first_of(group, _first_of(group, 0, 1), _first_of(group, 2, 3))
    return best


cdef inline void _prefetch_grandchildren(const HeapEntry* heap, uint32_t first, uint32_t end) noexcept nogil:
    """Ask for the children of the four entries from ``first``: 16 entries, four cache lines, so
    that loading the next level overlaps this level's comparisons. The top levels stay cached."""
    cdef uint32_t grand = _first_child(first)
    cdef const HeapEntry* ahead
    if HOT_ENTRIES <= grand < end:
        ahead = heap + grand
        _prefetch(ahead)
        _prefetch(ahead + 4)
        _prefetch(ahead + 8)
        _prefetch(ahead + 12)


cdef inline uint32_t _least_child(HeapEntry* heap, uint32_t first, uint32_t end) noexcept nogil:
    """The index of the least of the children starting at ``first`` (entries from ``end`` on are
    not in the heap)."""
    _prefetch_grandchildren(heap, first, end)
    if first + ARITY <= end:
        return first + _least_of_group(heap + first)
    cdef uint32_t best = first
    cdef uint32_t child
    for child in range(first + 1, end):
        best = _first_of(heap, best, child)
    return best


cdef inline Py_hash_t _str_hash(object name) except -1:
    """The hash a dict of exact str would use, without calling a subclass's ``__hash__``."""
    cdef Py_hash_t h
    if PyUnicode_CheckExact(name):
        h = _cached_str_hash(name)  # as dicts do: a str keeps its hash once computed
        return h if h != -1 else PyObject_Hash(name)
    if PyUnicode_Check(name):
        return PyObject_Hash(PyUnicode_FromObject(name))
    raise TypeError(f"timer name must be str, not {type(name).__name__}")


cdef char* _realloc_aligned(char** block, char* start, size_t size, size_t keep) noexcept:
    """Reallocate ``*block``, whose ALIGN-aligned start is ``start``, to hold ``size`` bytes from an
    aligned start, keeping its first ``keep`` bytes. Return the new start, or NULL (nothing changed)."""
    cdef size_t old_offset = <size_t>(start - block[0])
    cdef char* new_block = <char*>PyMem_Realloc(block[0], size + ALIGN)
    if new_block == NULL:
        return NULL
    # realloc keeps the bytes but not necessarily their alignment.
    cdef size_t offset = (ALIGN - <uintptr_t>new_block % ALIGN) % ALIGN
    if offset != old_offset:
        memmove(new_block + offset, new_block + old_offset, keep)
    block[0] = new_block
    return new_block + offset


@cython.binding(False)  # plain C methods: CPython's call specialisations apply to them
cdef class TimerTable:
    """Named timers ordered by ``(deadline, sequence)``; the manager's whole timer state."""

    # First, in the order a touch reads them: a server's touch finds the table out of the caches, and each
    # further line the fields spread over was one more miss.
    cdef Slot* _slots
    cdef size_t _mask               # number of slots - 1
    # Touch state, held per hash slot (slots move only on a cancel's back-shift and on a rebuild, never
    # in a sift), so that the heap and the names stay as they are for timers nobody touches.
    cdef Touch* _touches            # per slot; NULL until the first touch
    cdef PyObject** _names          # _names[pos] is the name of the timer at _heap[pos]
    cdef HeapEntry* _heap           # _heap_block rounded up to ALIGN
    cdef double* _spans             # per slot: the span its timer was set with; NULL while all share _span
    cdef double _span               # the span of every timer while _spans is NULL
    cdef uint64_t _next_sequence
    cdef uint64_t _sequence_limit   # SEQUENCES, or less in tests of the renumbering
    cdef Py_ssize_t _touched        # slots whose touch is not yet put back in the heap

    cdef char* _heap_block
    cdef char* _name_block
    cdef Py_ssize_t _live
    cdef Py_ssize_t _capacity       # heap entries and names allocated (besides the HEAP0 unused)
    cdef bint _exact_names          # no name was ever a str subclass (checking at expiry costs a miss)
    cdef public Py_ssize_t reinserted  # touched timers put back at their latest key (a benchmark reads it)
    # Makes Cython give the type garbage-collector slots, which _traverse/_clear extend to names.
    cdef object _gc_anchor

    def __cinit__(self):
        self._sequence_limit = SEQUENCES
        self._exact_names = True
        self._allocate_empty()

    def __dealloc__(self):
        self._release()

    # -- public interface, in the order of _table_py.py --------------------------------------

    def set(self, name, double deadline, /):
        """Create ``name`` or replace its deadline; return True if it replaced a pending timer. A later
        :meth:`touch` adds nothing to its ``now`` (see :meth:`set_with_span`)."""
        return self._set(name, deadline, 0.0) == 1

    def set_with_span(self, name, double deadline, double span, /):
        """:meth:`set`, and ``span`` is the duration a later :meth:`touch` adds to its ``now``.

        A method of its own rather than an optional argument of ``set``: Cython's wrapper for an
        optional argument made every set 30% slower (docs/design.md).
        """
        return self._set(name, deadline, span) == 1

    @cython.final
    cdef int _set(self, name, double deadline, double span) except -1:
        if deadline != deadline:
            raise ValueError("deadline must not be NaN")
        if _unlikely(span != self._span):  # _span is valid, and while _spans is NULL every timer's
            self._other_span(span)
        cdef Py_hash_t h = _str_hash(name)
        cdef PyObject* key = <PyObject*>name
        cdef Py_ssize_t slot = self._find(key, h, UPDATING)
        cdef PyObject* old_name
        cdef double old_deadline
        cdef HeapEntry entry
        cdef uint32_t pos
        if self._next_sequence >= self._sequence_limit:
            self._renumber()
        if slot >= 0:
            pos = self._slots[slot].pos
            entry = self._heap[pos]
            old_deadline = entry.deadline
            entry.deadline = deadline
            entry.sequence = <uint32_t>self._next_sequence
            self._next_sequence += 1
            old_name = self._names[pos]
            if old_name != key:  # an equal string, another object: hold the newest, as before
                Py_INCREF(key)
                if not PyUnicode_CheckExact(name):
                    self._exact_names = False  # the collector must see it from now on, as for a new name
            if self._touched and self._touches[slot].touched:  # the set replaces the touch
                self._touches[slot].touched = 0
                self._touched -= 1
            if self._spans != NULL:
                self._spans[slot] = span
            # The new sequence is the largest, so an equal deadline moves the entry down.
            if deadline < old_deadline:
                self._sift_up(pos, entry, key)
            else:
                self._sift_down(pos, entry, key)
            if old_name != key:
                Py_DECREF(old_name)  # last: it may run arbitrary code
            return 1
        if self._live >= MAX_TIMERS:
            raise OverflowError("too many timers")
        if <size_t>(self._live + 1) * 2 > self._mask + 1:
            self._build_slots((self._mask + 1) * 2)
            slot = self._find(key, h, LOOKING)
        if self._live == self._capacity:
            self._resize(self._capacity * 2)
        if not PyUnicode_CheckExact(name):
            self._exact_names = False
        pos = <uint32_t>(HEAP0 + self._live)
        self._slots[~slot].tag = <uint32_t>h
        entry.deadline = deadline
        entry.sequence = <uint32_t>self._next_sequence
        entry.slot = <uint32_t>~slot
        self._next_sequence += 1
        self._live += 1
        Py_INCREF(key)
        self._sift_up(pos, entry, key)  # also fills in the slot's heap index
        if self._spans != NULL:
            self._spans[~slot] = span
        return 0

    # Not final, so called through the vtable: the compiler keeps this cold path out of _set.
    cdef int _other_span(self, double span) except -1:
        """A set's span differs from ``_span``: check it, and unless the table is empty (then it becomes
        everyone's) make sure each slot can keep its own (the set writes it)."""
        if not span >= 0.0:
            raise ValueError(f"span must be >= 0, got {span!r}")
        if self._spans != NULL:
            return 0
        if not self._live:
            self._span = span
            return 0
        cdef size_t count = self._mask + 1
        cdef double* spans = <double*>PyMem_Malloc(count * sizeof(double))
        cdef size_t i
        if spans == NULL:
            raise MemoryError()
        for i in range(count):
            spans[i] = self._span
        self._spans = spans
        return 0

    def touch(self, name, double now, /):
        """Make ``name`` due at ``now`` + the span it was set with, ordered as a set made now would be;
        return True if it was pending. The heap entry stays where it is: its slot keeps the later key,
        and the entry is put back at it when it reaches the top (``pop_due``, ``settle``). A touch
        earlier than the entry's place is a set, which moves it."""
        return self._touch(name, now) != 0

    @cython.final
    cdef inline void _expect(self, Py_hash_t h) noexcept:
        """Ask for the lines that a lookup of a name hashing to ``h`` reads first (its home slot and, for a
        touch, the slot's record), so that their misses overlap the caller's work until the lookup."""
        cdef size_t i = <size_t>h & self._mask
        _prefetch(&self._slots[i])
        if self._touches != NULL:
            _prefetch(&self._touches[i])

    @cython.final
    cdef int _touch(self, name, double now) except -1:
        # 0: not pending; 1: touched; 2: touched and moved, due earlier than it was (the engine re-arms its wake-up).
        cdef Py_hash_t h = _str_hash(name)
        cdef Py_ssize_t slot = self._find(<PyObject*>name, h, TOUCHING)
        if slot < 0:
            return 0
        cdef double span = self._spans[slot] if self._spans != NULL else self._span
        cdef double latest = now + span
        if latest != latest:
            raise ValueError(f"now must be a number of seconds, got {now!r}")
        cdef Touch* touch
        if self._touches == NULL:
            self._touches = <Touch*>PyMem_Calloc(self._mask + 1, sizeof(Touch))
            if self._touches == NULL:
                raise MemoryError()
        if self._next_sequence >= self._sequence_limit:
            self._renumber()
        touch = &self._touches[slot]
        if touch.touched:
            # Its heap key is at most the latest one: no need to look at the heap entry.
            if not latest >= touch.latest and latest < self._heap[self._slots[slot].pos].deadline:
                self._set(name, latest, span)
                return 2
        elif latest < self._heap[self._slots[slot].pos].deadline:
            # Earlier than its place (a clock set back, or a repeating timer whose first tick was more than a
            # period away): move it. 2 tells the engine that the timer is due earlier than it was.
            self._set(name, latest, span)
            return 2
        else:
            touch.touched = 1
            self._touched += 1
        touch.latest = latest
        touch.sequence = <uint32_t>self._next_sequence
        self._next_sequence += 1
        return 1

    def settle(self, double now, double ahead=0.0, /):
        """Put back each touched timer at the top whose heap deadline is ``<= now`` (or ``<= now + ahead``
        times its span); return how many.

        Afterwards ``next_deadline()`` is exact if it is ``<= now``; ``settle(math.inf)`` makes it exact.
        """
        return self._settle(now, ahead)

    @cython.final
    cdef Py_ssize_t _settle(self, double now, double ahead) noexcept:
        cdef Py_ssize_t moved = 0
        cdef uint32_t slot
        if not self._touched:
            return 0
        while self._live:
            slot = self._heap[HEAP0].slot
            if not self._touches[slot].touched or self._heap[HEAP0].deadline > now + ahead * self._span_of(slot):
                break
            self._put_back_root()
            moved += 1
        return moved

    @cython.final
    cdef void _put_back_root(self) noexcept:
        """Move the touched timer at the root down to its latest key."""
        cdef HeapEntry entry = self._heap[HEAP0]
        cdef Touch* touch = &self._touches[entry.slot]
        entry.deadline = touch.latest
        entry.sequence = touch.sequence
        touch.touched = 0
        self._touched -= 1
        self.reinserted += 1
        self._sift_down(HEAP0, entry, self._names[HEAP0])

    def cancel(self, name, /):
        """Remove ``name``; return True if it was pending."""
        return self._cancel(name) == 1

    @cython.final
    cdef int _cancel(self, name) except -1:
        cdef Py_hash_t h = _str_hash(name)
        cdef Py_ssize_t slot = self._find(<PyObject*>name, h, LOOKING)
        if slot < 0:
            return 0
        cdef uint32_t pos = self._slots[slot].pos
        cdef PyObject* old_name = self._names[pos]
        self._remove_heap(pos)
        self._remove_slot(<size_t>slot)
        self._compact_if_sparse()
        Py_DECREF(old_name)
        return 1

    def clear(self):
        """Remove every timer; return how many there were."""
        cdef Py_ssize_t count = self._live
        self._clear()
        return count

    def pop_due(self, double now, limit, list spans=None, /):
        """Remove and return up to ``limit`` timers with ``deadline <= now``, in order; append their spans
        to ``spans`` if it is given."""
        cdef Py_ssize_t wanted = PyNumber_AsSsize_t(limit, NULL)  # clipped, like an unbounded int
        cdef Py_ssize_t count = 0
        cdef PyObject* name
        due = []
        while count < wanted and self._live and not (self._heap[HEAP0].deadline > now):
            if self._touched and self._touches[self._heap[HEAP0].slot].touched:
                self._put_back_root()
                continue
            # Allocating a tuple can run the garbage collector and so any code, this table's
            # methods included: look at the heap only after it.
            item = PyTuple_New(2)
            if not self._live or self._heap[HEAP0].deadline > now:
                break
            if self._touched and self._touches[self._heap[HEAP0].slot].touched:
                continue
            if spans is not None:
                spans.append(self._span_of(self._heap[HEAP0].slot))
            deadline = PyFloat_FromDouble(self._heap[HEAP0].deadline)
            name = self._pop()
            PyTuple_SET_ITEM(item, 0, name)  # the table's reference moves to the tuple
            Py_INCREF(<PyObject*>deadline)
            PyTuple_SET_ITEM(item, 1, <PyObject*>deadline)
            if self._exact_names:
                # A str and a float cannot be part of a cycle: spare the collector the tuple, as
                # it would itself decide at its first pass.
                PyObject_GC_UnTrack(<PyObject*>item)
            due.append(item)
            count += 1
        self._settle(now, 0.0)  # so that next_deadline() <= now means a timer is due
        if count:
            self._compact_if_sparse()
        return due

    @cython.final
    cdef object _pop_due_one(self, double now, double* deadline, double* span):
        """Remove the first timer with ``deadline <= now`` and return its name (None if none is due)."""
        while self._live and not (self._heap[HEAP0].deadline > now):
            if self._touched and self._touches[self._heap[HEAP0].slot].touched:
                self._put_back_root()
                continue
            deadline[0] = self._heap[HEAP0].deadline
            span[0] = self._span_of(self._heap[HEAP0].slot)
            name = <object>self._pop()  # a new reference; the table's is released below
            Py_DECREF(<PyObject*>name)
            return name
        return None

    @cython.final
    cdef inline double _span_of(self, uint32_t slot) noexcept:
        return self._spans[slot] if self._spans != NULL else self._span

    def next_deadline(self):
        """Return the deadline at the top of the heap, or None when the table is empty: the earliest
        pending deadline, or earlier than it when the timer at the top was touched since it got there
        (see :meth:`settle`)."""
        if self._live:
            return self._heap[HEAP0].deadline
        return None

    def deadline(self, name, /):
        """Return the pending deadline of ``name``, or None."""
        cdef Py_ssize_t slot = self._find(<PyObject*>name, _str_hash(name), LOOKING)
        if slot < 0:
            return None
        if self._touched and self._touches[slot].touched:
            return self._touches[slot].latest
        return self._heap[self._slots[slot].pos].deadline

    def span(self, name, /):
        """Return the span ``name`` was set with, or None if it is not pending."""
        cdef Py_ssize_t slot = self._find(<PyObject*>name, _str_hash(name), LOOKING)
        if slot < 0:
            return None
        return self._span_of(<uint32_t>slot)

    def __len__(self):
        return self._live

    def __contains__(self, name):
        if not PyUnicode_Check(name):
            hash(name)  # an unhashable name raises TypeError, as with a dict
            return False
        return self._find(<PyObject*>name, _str_hash(name), LOOKING) >= 0

    # -- hash table ---------------------------------------------------------------------------

    @cython.final
    cdef inline Py_ssize_t _find(self, PyObject* name, Py_hash_t h, int purpose) except? -1:
        """Return the slot holding ``name``, or ``~slot`` of the empty slot where it would go.

        A tag match asks for the timer's heap entry (and, for an UPDATING lookup, its parent's and
        children's lines; for a TOUCHING one, the slot's touch record) before the name is compared,
        so those loads overlap the name's.
        """
        cdef size_t mask = self._mask
        cdef size_t i = <size_t>h & mask
        cdef uint32_t tag = <uint32_t>h
        cdef Slot s
        cdef PyObject* held
        while True:
            s = self._slots[i]
            if s.pos == 0:
                return ~<Py_ssize_t>i
            if s.tag == tag:
                _prefetch(&self._heap[s.pos])
                if purpose == TOUCHING and self._touches != NULL:
                    _prefetch(&self._touches[i])
                if purpose == UPDATING:
                    if s.pos > HEAP0:
                        _prefetch(&self._heap[_parent(s.pos)])
                    if _first_child(s.pos) < <uint32_t>(HEAP0 + self._live):
                        _prefetch(&self._heap[_first_child(s.pos)])
                held = self._names[s.pos]
                if held == name or PyUnicode_Compare(held, name) == 0:
                    return <Py_ssize_t>i
            i = (i + 1) & mask

    @cython.final
    cdef inline void _remove_slot(self, size_t i) noexcept:
        """Empty slot ``i`` and shift later members of its cluster back (no tombstones); each slot
        moved tells its heap entry where it went."""
        cdef size_t mask = self._mask
        cdef size_t j = i
        cdef size_t home
        cdef Slot s
        if self._touched and self._touches[i].touched:
            self._touched -= 1
        while True:
            j = (j + 1) & mask
            s = self._slots[j]
            if s.pos == 0:
                break
            home = <size_t>s.tag & mask
            # Move s into the hole unless its home lies cyclically in (i, j].
            if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
                self._slots[i] = s
                self._heap[s.pos].slot = <uint32_t>i
                if self._spans != NULL:
                    self._spans[i] = self._spans[j]
                if self._touches != NULL:
                    self._touches[i] = self._touches[j]
                i = j
        self._slots[i].pos = 0
        self._slots[i].tag = 0
        if self._touches != NULL:
            self._touches[i].touched = 0

    @cython.final
    cdef int _build_slots(self, size_t count) except -1:
        """Index every timer in a new array of ``count`` slots, and free the old one."""
        cdef Slot* slots = <Slot*>PyMem_Malloc(count * sizeof(Slot))
        cdef double* spans = NULL
        cdef Touch* touches = NULL
        if slots == NULL:
            raise MemoryError()
        if self._spans != NULL:
            spans = <double*>PyMem_Malloc(count * sizeof(double))
        if self._touches != NULL:
            touches = <Touch*>PyMem_Calloc(count, sizeof(Touch))
        if (self._spans != NULL and spans == NULL) or (self._touches != NULL and touches == NULL):
            PyMem_Free(slots)
            PyMem_Free(spans)
            PyMem_Free(touches)
            raise MemoryError()
        memset(slots, 0, count * sizeof(Slot))
        cdef size_t mask = count - 1
        cdef size_t i
        cdef Py_ssize_t k
        cdef HeapEntry* entry
        cdef uint32_t tag
        for k in range(self._live):
            entry = &self._heap[HEAP0 + k]
            tag = self._slots[entry.slot].tag
            i = <size_t>tag & mask
            while slots[i].pos != 0:
                i = (i + 1) & mask
            slots[i].pos = <uint32_t>(HEAP0 + k)
            slots[i].tag = tag
            if spans != NULL:
                spans[i] = self._spans[entry.slot]
            if touches != NULL:
                touches[i] = self._touches[entry.slot]
            entry.slot = <uint32_t>i
        PyMem_Free(self._slots)
        PyMem_Free(self._spans)
        PyMem_Free(self._touches)
        self._slots = slots
        self._spans = spans
        self._touches = touches
        self._mask = mask
        return 0

    # -- heap ---------------------------------------------------------------------------------

    @cython.final
    cdef inline void _place(self, uint32_t pos, HeapEntry entry, PyObject* name) noexcept:
        self._heap[pos] = entry
        self._names[pos] = name
        self._slots[entry.slot].pos = pos

    @cython.final
    cdef inline void _sift_up(self, uint32_t pos, HeapEntry entry, PyObject* name) noexcept:
        """Put ``entry`` (named ``name``) at ``pos`` or above, moving down each parent it precedes."""
        cdef uint32_t parent
        while pos > HEAP0:
            parent = _parent(pos)
            if not _precedes(&entry, &self._heap[parent]):
                break
            self._place(pos, self._heap[parent], self._names[parent])
            pos = parent
        self._place(pos, entry, name)

    @cython.final
    cdef void _sift_down(self, uint32_t pos, HeapEntry entry, PyObject* name) noexcept:
        """Put ``entry`` (named ``name``) at ``pos`` or below, moving up each least child that
        precedes it."""
        cdef HeapEntry* heap = self._heap
        cdef uint32_t end = <uint32_t>(HEAP0 + self._live)
        cdef uint32_t first, best
        while True:
            first = _first_child(pos)
            if first >= end:
                break
            best = _least_child(heap, first, end)
            if not _precedes(&heap[best], &entry):
                break
            self._place(pos, heap[best], self._names[best])
            pos = best
        self._place(pos, entry, name)

    @cython.final
    cdef inline PyObject* _pop(self) noexcept:
        """Remove the root timer from the heap and the slots; return its name's reference."""
        cdef PyObject* name = self._names[HEAP0]
        cdef uint32_t slot = self._heap[HEAP0].slot
        _prefetch(&self._slots[slot])  # its line arrives while the heap is fixed
        self._pop_root()
        self._remove_slot(slot)
        if self._live:
            # Whoever takes this name will most likely take the next one too, and touch it.
            _prefetch(self._names[HEAP0])
        return name

    @cython.final
    cdef void _pop_root(self) noexcept:
        """Take the least entry out of the heap (its slot stays).

        Floyd's order of work: the hole left at the root sinks to a leaf along the least children,
        with no comparison against the entry that fills it; that entry (the last one, so most
        likely among the latest deadlines) then rises from the leaf, usually not at all.
        """
        cdef HeapEntry* heap = self._heap
        cdef PyObject** names = self._names
        self._live -= 1
        cdef uint32_t end = <uint32_t>(HEAP0 + self._live)  # the last entry's index: it leaves
        if end == HEAP0:
            return
        cdef uint32_t hole = HEAP0
        cdef uint32_t first = _first_child(HEAP0)
        cdef uint32_t best
        while first + ARITY <= end:  # full groups of four children: the common case, kept tight
            _prefetch_grandchildren(heap, first, end)
            best = first + _least_of_group(heap + first)
            self._place(hole, heap[best], names[best])
            hole = best
            first = _first_child(hole)
        if first < end:  # a last group of one to three children
            best = _least_child(heap, first, end)
            self._place(hole, heap[best], names[best])
            hole = best
        self._sift_up(hole, heap[end], names[end])

    @cython.final
    cdef void _remove_heap(self, uint32_t pos) noexcept:
        """Take the entry at ``pos`` out of the heap (its slot stays)."""
        self._live -= 1
        cdef uint32_t end = <uint32_t>(HEAP0 + self._live)
        if pos == end:
            return
        cdef HeapEntry last = self._heap[end]
        if pos > HEAP0 and _precedes(&last, &self._heap[_parent(pos)]):
            self._sift_up(pos, last, self._names[end])
        else:
            self._sift_down(pos, last, self._names[end])

    @cython.final
    cdef int _renumber(self) except -1:
        """Give the live timers sequences 0, 1, ... in ``(deadline, sequence)`` order.

        Every comparison between live timers comes out as before, so the heap stays valid. Touched
        timers are put back at their latest keys first, so that those keys are renumbered too.
        """
        cdef size_t i
        cdef HeapEntry entry
        cdef uint32_t pos
        if self._touched:
            for i in range(self._mask + 1):
                if self._slots[i].pos and self._touches[i].touched:
                    pos = self._slots[i].pos
                    entry = self._heap[pos]
                    entry.deadline = self._touches[i].latest
                    entry.sequence = self._touches[i].sequence
                    self._touches[i].touched = 0
                    self._touched -= 1
                    self.reinserted += 1
                    self._sift_down(pos, entry, self._names[pos])  # a touch's key is never earlier
        cdef Py_ssize_t live = self._live
        cdef uint32_t* order = <uint32_t*>PyMem_Malloc((live + 1) * sizeof(uint32_t))
        if order == NULL:
            raise MemoryError()
        cdef Py_ssize_t k
        for k in range(live):
            order[k] = <uint32_t>(HEAP0 + k)
        global _sorting_heap
        _sorting_heap = self._heap
        qsort(order, <size_t>live, sizeof(uint32_t), _compare_positions)
        for k in range(live):
            self._heap[order[k]].sequence = <uint32_t>k
        PyMem_Free(order)
        self._next_sequence = <uint64_t>live
        if self._next_sequence >= self._sequence_limit:
            raise OverflowError("more live timers than sequence numbers")
        return 0

    def _limit_sequences(self, limit):
        """Testing hook: run out of sequence numbers after ``limit`` (normally 2**32) of them."""
        if not 0 < limit <= SEQUENCES:
            raise ValueError("limit must be in (0, 2**32]")
        self._sequence_limit = limit

    def _next_sequence_number(self):
        """Testing hook: the sequence number the next set will take."""
        return self._next_sequence

    # -- memory -------------------------------------------------------------------------------

    @cython.final
    cdef int _resize(self, Py_ssize_t capacity) except -1:
        """Reallocate the heap and the names for ``capacity`` timers (at least ``_live``)."""
        cdef size_t entries = <size_t>(capacity + HEAP0)
        cdef size_t kept = <size_t>(self._live + HEAP0)
        cdef char* heap = _realloc_aligned(
            &self._heap_block, <char*>self._heap, entries * sizeof(HeapEntry), kept * sizeof(HeapEntry)
        )
        if heap == NULL:
            raise MemoryError()
        self._heap = <HeapEntry*>heap
        cdef char* names = _realloc_aligned(
            &self._name_block, <char*>self._names, entries * sizeof(PyObject*), kept * sizeof(PyObject*)
        )
        if names == NULL:
            # Both arrays hold at least the smaller of the two capacities.
            if capacity < self._capacity:
                self._capacity = capacity
            raise MemoryError()
        self._names = <PyObject**>names
        self._capacity = capacity
        return 0

    @cython.final
    cdef inline size_t _array_bytes(self) noexcept:
        """Bytes held by the heap, the names and the slots (what a shrink or a release frees)."""
        cdef size_t per_timer = sizeof(HeapEntry) + sizeof(PyObject*)
        cdef size_t per_slot = sizeof(Slot)
        if self._spans != NULL:
            per_slot += sizeof(double)
        if self._touches != NULL:
            per_slot += sizeof(Touch)
        return <size_t>self._capacity * per_timer + (self._mask + 1) * per_slot

    @cython.final
    cdef int _compact_if_sparse(self) noexcept:
        """Give memory back once live timers fill less than a quarter of the arrays."""
        if self._capacity <= MIN_CAPACITY or self._live * 4 >= self._capacity:
            return 0
        cdef Py_ssize_t capacity = MIN_CAPACITY
        while capacity < self._live * 2:
            capacity *= 2
        cdef size_t slot_count = MIN_SLOTS
        while slot_count < <size_t>self._live * 2 + 2:
            slot_count *= 2
        cdef size_t freed = self._array_bytes()
        try:
            # The heap and the names are dense, so they shrink in place; the slots are rebuilt.
            # On failure the larger arrays stay, which breaks nothing.
            self._build_slots(slot_count)
            self._resize(capacity)
        except MemoryError:
            return 0
        _give_back(freed)
        return 0

    @cython.final
    cdef int _allocate_empty(self) except -1:
        self._resize(MIN_CAPACITY)
        self._build_slots(MIN_SLOTS)
        return 0

    @cython.final
    cdef int _clear(self) except -1:
        cdef TimerTable emptied = TimerTable.__new__(TimerTable)
        self._swap(emptied)
        self._exact_names = True
        return 0  # emptied drops the names on its way out, once this table is consistent

    @cython.final
    cdef int _visit_names(self, _visitproc visit, void* arg) noexcept:
        cdef Py_ssize_t k
        cdef int result
        # An exact str refers to nothing, so it cannot be part of a cycle: visiting a million
        # of them would only make every full collection slower.
        if self._exact_names:
            return 0
        for k in range(HEAP0, HEAP0 + self._live):
            result = visit(self._names[k], arg)
            if result:
                return result
        return 0

    @cython.final
    cdef void _clear_for_gc(self) noexcept:
        try:
            self._clear()
        except MemoryError:
            pass  # the cycle stays until memory allows; nothing is broken

    @cython.final
    cdef void _swap(self, TimerTable other) noexcept:
        self._heap, other._heap = other._heap, self._heap
        self._heap_block, other._heap_block = other._heap_block, self._heap_block
        self._names, other._names = other._names, self._names
        self._name_block, other._name_block = other._name_block, self._name_block
        self._slots, other._slots = other._slots, self._slots
        self._mask, other._mask = other._mask, self._mask
        self._live, other._live = other._live, self._live
        self._capacity, other._capacity = other._capacity, self._capacity
        self._next_sequence, other._next_sequence = other._next_sequence, self._next_sequence
        self._span, other._span = other._span, self._span
        self._spans, other._spans = other._spans, self._spans
        self._touches, other._touches = other._touches, self._touches
        self._touched, other._touched = other._touched, self._touched

    @cython.final
    cdef void _release(self) noexcept:
        """Free everything and drop the names; only for a table nobody will use again."""
        cdef PyObject** names = self._names
        cdef char* name_block = self._name_block
        cdef Py_ssize_t live = self._live
        cdef size_t freed = self._array_bytes()
        PyMem_Free(self._heap_block)
        PyMem_Free(self._slots)
        PyMem_Free(self._spans)
        PyMem_Free(self._touches)
        self._spans = NULL
        self._touches = NULL
        self._touched = 0
        self._heap = NULL
        self._heap_block = NULL
        self._names = NULL
        self._name_block = NULL
        self._slots = NULL
        self._live = self._capacity = 0
        self._mask = 0
        cdef Py_ssize_t k
        for k in range(HEAP0, HEAP0 + live):
            Py_DECREF(names[k])
        PyMem_Free(name_block)
        _give_back(freed)


cdef HeapEntry* _sorting_heap = NULL  # the heap _compare_positions reads; set just before qsort


cdef int _compare_positions(const void* a, const void* b) noexcept nogil:
    cdef HeapEntry* x = &_sorting_heap[(<const uint32_t*>a)[0]]
    cdef HeapEntry* y = &_sorting_heap[(<const uint32_t*>b)[0]]
    if x.deadline != y.deadline:
        return -1 if x.deadline < y.deadline else 1
    if x.sequence != y.sequence:
        return -1 if x.sequence < y.sequence else 1
    return 0


# -- garbage collection ---------------------------------------------------------------------------
# Cython's slots know only _gc_anchor; names live in C arrays, so chain a traverse that visits
# them (a str subclass instance can refer back to the table) and a clear that drops them.

cdef _traverseproc _cython_traverse = (<_GCSlots*><PyObject*>TimerTable).tp_traverse
cdef _inquiry _cython_clear = (<_GCSlots*><PyObject*>TimerTable).tp_clear


cdef int _traverse(PyObject* o, _visitproc visit, void* arg) noexcept:
    cdef int result = _cython_traverse(o, visit, arg)
    if result:
        return result
    return (<TimerTable>o)._visit_names(visit, arg)


cdef int _clear(PyObject* o) noexcept:
    (<TimerTable>o)._clear_for_gc()
    return _cython_clear(o)


(<_GCSlots*><PyObject*>TimerTable).tp_traverse = _traverse
(<_GCSlots*><PyObject*>TimerTable).tp_clear = _clear
