/* C shims for the compiled core (_core_c.pyx): compiler builtins and platform details, each with a
   portable fallback. Declared to Cython in _compat.pxd. */
#ifndef TIMER_MANAGER_COMPAT_H
#define TIMER_MANAGER_COMPAT_H

#if defined(__GNUC__) || defined(__clang__)
#define TM_PREFETCH(address) __builtin_prefetch(address)
#else
#define TM_PREFETCH(address) ((void)0)
#endif


/* A branch the compiler should lay out of the hot path (its code, and what it calls, go cold). */
#if defined(__GNUC__) || defined(__clang__)
#define TM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define TM_UNLIKELY(x) (x)
#endif


#if defined(__GLIBC__)
#include <malloc.h>
#define TM_TRIM_HEAP() ((void)malloc_trim(0))
#else
#define TM_TRIM_HEAP() ((void)0)
#endif


/* The index (0 to 3) of the least of four deadlines, by a two-round tournament with no
   branch; *tie is set when a comparison it relied on was between equal deadlines.
   Written with SSE2 (every x86-64 CPU has it) because compilers turn the selects of the
   portable version into branches there, which random deadlines mispredict half the time. */
#if defined(_MSC_VER)
#define TM_INLINE __inline
#else
#define TM_INLINE inline
#endif
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
static TM_INLINE unsigned int tm_least_of_four(const double* d, int* tie) {
    /* d[0], d[2], d[4], d[6]: the deadlines of four 16-byte heap entries */
    __m128d even = _mm_loadh_pd(_mm_load_sd(d), d + 4);      /* d0 d2 */
    __m128d odd = _mm_loadh_pd(_mm_load_sd(d + 2), d + 6);   /* d1 d3 */
    __m128d low = _mm_min_pd(even, odd);                     /* min(d0,d1) min(d2,d3) */
    __m128d swapped = _mm_shuffle_pd(low, low, 1);
    *tie = _mm_movemask_pd(_mm_or_pd(_mm_cmpeq_pd(even, odd), _mm_cmpeq_pd(low, swapped)));
    unsigned int odd_wins = (unsigned int)_mm_movemask_pd(_mm_cmplt_pd(odd, even));
    unsigned int high_wins = (unsigned int)_mm_movemask_pd(_mm_cmplt_pd(swapped, low)) & 1u;
    unsigned int i_low = odd_wins & 1u;
    unsigned int i_high = 2u | (odd_wins >> 1);
    return i_low ^ ((i_low ^ i_high) & (0u - high_wins));
}
#else
static TM_INLINE unsigned int tm_least_of_four(const double* d, int* tie) {
    double d0 = d[0], d1 = d[2], d2 = d[4], d3 = d[6];
    double low = d1 < d0 ? d1 : d0;
    double high = d3 < d2 ? d3 : d2;
    unsigned int i_low = (unsigned int)(d1 < d0);
    unsigned int i_high = 2u + (unsigned int)(d3 < d2);
    *tie = (d0 == d1) | (d2 == d3) | (low == high);
    return high < low ? i_high : i_low;
}
#endif


#if defined(PYPY_VERSION) || defined(Py_LIMITED_API)
#define TM_CACHED_STR_HASH(o) ((Py_hash_t)-1)
#else
#define TM_CACHED_STR_HASH(o) (((PyASCIIObject *)(o))->hash)
#endif


/* timerfd_settime on Linux, called from C (the manager's wake-up, _wakeup.py): through ctypes, each
   arming of a wake-up cost microseconds of argument conversion, more when cold. tm_timerfd_arm arms fd
   to expire once at CLOCK_MONOTONIC when_ns (0 disarms it); 0, or -1 with errno set. Elsewhere it fails
   with ENOSYS. */
#include <errno.h>
#if defined(__linux__)
#include <sys/timerfd.h>
#define TM_HAVE_TIMERFD 1
static TM_INLINE int tm_timerfd_arm(int fd, long long when_ns) {
    struct itimerspec spec;
    spec.it_interval.tv_sec = 0;
    spec.it_interval.tv_nsec = 0;
    spec.it_value.tv_sec = (time_t)(when_ns / 1000000000LL);
    spec.it_value.tv_nsec = (long)(when_ns % 1000000000LL);
    return timerfd_settime(fd, when_ns ? TFD_TIMER_ABSTIME : 0, &spec, NULL);
}
#else
#define TM_HAVE_TIMERFD 0
static TM_INLINE int tm_timerfd_arm(int fd, long long when_ns) {
    (void)fd;
    (void)when_ns;
    errno = ENOSYS;
    return -1;
}
#endif


/* time.monotonic() read in C, to the same double (Linux: CPython reads CLOCK_MONOTONIC and divides its
   nanoseconds as _PyTime_AsSecondsDouble does). A touch calls it in place of the Python-level clock: a
   call, a float made and freed. Elsewhere CPython's clock may be another one: TM_HAVE_MONOTONIC is 0 and
   tm_monotonic is never called. */
#if defined(__linux__)
#include <time.h>
#define TM_HAVE_MONOTONIC 1
static TM_INLINE double tm_monotonic(void) {
    struct timespec ts;
    volatile double d;
    long long ns;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return -1.0;  /* never for CLOCK_MONOTONIC on Linux; the caller falls back to the Python clock */
    }
    ns = (long long)ts.tv_sec * 1000000000LL + (long long)ts.tv_nsec;
    if (ns % 1000000000LL == 0) {
        d = (double)(ns / 1000000000LL);
    } else {
        d = (double)ns;
        d /= 1e9;
    }
    return d;
}
#else
#define TM_HAVE_MONOTONIC 0
static TM_INLINE double tm_monotonic(void) { return -1.0; }
#endif


#endif /* TIMER_MANAGER_COMPAT_H */
