# Every part of the C API the compiled core uses that Cython's own cpython declarations lack.

cdef extern from "Python.h":
    ctypedef struct PyObject
    ctypedef int (*_visitproc "visitproc")(PyObject*, void*) noexcept
    ctypedef int (*_traverseproc "traverseproc")(PyObject*, _visitproc, void*) noexcept
    ctypedef int (*_inquiry "inquiry")(PyObject*) noexcept
    ctypedef struct _GCSlots "PyTypeObject":
        _traverseproc tp_traverse
        _inquiry tp_clear

    bint PyUnicode_CheckExact(object) noexcept
    bint PyUnicode_Check(object) noexcept
    object PyUnicode_FromObject(object)
    int PyUnicode_Compare(PyObject*, PyObject*) except? -1
    Py_hash_t PyObject_Hash(object) except -1
    Py_ssize_t PyNumber_AsSsize_t(object, PyObject*) except? -1
    object PyTuple_New(Py_ssize_t)
    void PyTuple_SET_ITEM(object, Py_ssize_t, PyObject*) noexcept
    object PyFloat_FromDouble(double)
    void PyObject_GC_UnTrack(PyObject*) noexcept
    void Py_INCREF(PyObject*) noexcept
    void Py_DECREF(PyObject*) noexcept

    ctypedef struct PyTypeObject
    void Py_XDECREF(PyObject*) noexcept
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    PyObject* PyType_GenericAlloc(PyTypeObject*, Py_ssize_t) except NULL
    int PyDict_Contains(object, object) except -1
    Py_ssize_t PyDict_GET_SIZE(object) noexcept  # a read of the dict's count: no call
    Py_ssize_t Py_SIZE(object) noexcept  # a variable-size object's item count (a deque's length)
    # A C method's definition, behind its descriptor: a subclass may get a descriptor of its own for it.
    ctypedef struct PyMethodDef
    ctypedef struct PyMethodDescrObject:
        PyMethodDef* d_method
    object PyDescr_NewMethod(PyTypeObject*, PyMethodDef*)
    # A callable's C entry point (PEP 590); called with a bound method's self as its one argument.
    ctypedef object (*_vectorcallfunc "vectorcallfunc")(PyObject*, PyObject**, size_t, PyObject*)
    _vectorcallfunc PyVectorcall_Function(object) noexcept
    bint PyMethod_Check(object) noexcept
    PyObject* PyMethod_GET_FUNCTION(object) noexcept
    PyObject* PyMethod_GET_SELF(object) noexcept
