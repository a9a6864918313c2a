# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled core: the timer table, the engine that drives it and the handle's touch, in one extension module.

The same ``TimerTable`` as ``_table_py.py``, ``Engine`` as ``_engine_py.py`` and ``HandleCore`` as
``_handle_core_py.py``; ``_core.py`` chooses between the two sets. The engine is compiled into the table's module
so that it calls the table's C methods directly, and the handle's touch calls the engine's. Its parts:
``_table_c.pxi``, ``_engine_c.pxi`` and ``_handle_core_c.pxi``; the C API they use
beyond Cython's own declarations, in ``_cpython.pxd``; C shims, in ``_compat.h`` (``_compat.pxd``).
"""

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport uint32_t, uint64_t, uintptr_t
from libc.math cimport INFINITY, NAN
from libc.stdlib cimport qsort
from libc.string cimport memmove, memset

from cpython.exc cimport PyErr_SetFromErrno

from timer_manager._compat cimport (
    _cached_str_hash,
    _have_monotonic,
    _least_of_four,
    _monotonic,
    _prefetch,
    _tfd_arm,
    _tfd_native,
    _trim_heap,
    _unlikely,
)
from timer_manager._cpython cimport (
    Py_DECREF,
    Py_INCREF,
    Py_XDECREF,
    Py_SIZE,
    PyDescr_NewMethod,
    PyDict_Contains,
    PyDict_GET_SIZE,
    PyFloat_FromDouble,
    PyMemberDescrObject,
    PyMethodDescrObject,
    PyMethod_Check,
    PyMethod_GET_FUNCTION,
    PyMethod_GET_SELF,
    PyNumber_AsSsize_t,
    PyObject,
    PyObject_GC_UnTrack,
    PyObject_Hash,
    PyTuple_New,
    PyTuple_SET_ITEM,
    PyType_GenericAlloc,
    PyTypeObject,
    PyUnicode_Check,
    PyUnicode_CheckExact,
    PyUnicode_Compare,
    PyUnicode_FromObject,
    PyVectorcall_Function,
    _GCSlots,
    _inquiry,
    _traverseproc,
    _vectorcallfunc,
    _visitproc,
)

from collections import deque
from logging import DEBUG as _DEBUG
from contextlib import nullcontext
from time import monotonic as _time_monotonic
from types import MethodDescriptorType

from timer_manager._futures import resolve
from timer_manager._protocol import (
    APPLIED,
    CANCEL,
    CANCEL_ALL,
    FLUSH,
    LATENESS_WINDOW,
    QUEUE_FULL,
    QUEUED,
    QUEUED_FIRST,
    SET,
    SET_INTERVAL,
    SETTLE_AHEAD,
    SHUTDOWN,
    TOUCH,
)
from timer_manager.events import TimerExpired

__all__ = ("Engine", "HandleCore", "TimerTable", "adopt_touch")

include "_table_c.pxi"
include "_engine_c.pxi"
include "_handle_core_c.pxi"


# -- the wake-up's timerfd (_wakeup.py), called from C ----------------------------------------------


@cython.binding(False)
def _timerfd_native():
    """Whether ``_timerfd_arm`` works here (Linux); elsewhere it raises ENOSYS."""
    return bool(_tfd_native)


@cython.binding(False)
def _timerfd_arm(int fd, long long when_ns):
    """Arm timerfd ``fd`` to expire once at CLOCK_MONOTONIC ``when_ns`` (0 disarms it)."""
    if _tfd_arm(fd, when_ns) < 0:
        PyErr_SetFromErrno(OSError)
