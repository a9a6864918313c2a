# The C shims of _compat.h, as Cython sees them.
from libc.stdint cimport uint32_t


cdef extern from "_compat.h":
    void _prefetch "TM_PREFETCH"(const void*) noexcept nogil
    void _trim_heap "TM_TRIM_HEAP"() noexcept nogil
    bint _unlikely "TM_UNLIKELY"(bint) noexcept nogil
    uint32_t _least_of_four "tm_least_of_four"(const double*, int*) noexcept nogil
    Py_hash_t _cached_str_hash "TM_CACHED_STR_HASH"(object) noexcept
    bint _tfd_native "TM_HAVE_TIMERFD"
    int _tfd_arm "tm_timerfd_arm"(int, long long) noexcept nogil
    bint _have_monotonic "TM_HAVE_MONOTONIC"
    double _monotonic "tm_monotonic"() noexcept nogil
