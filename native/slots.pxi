# Reading and writing a slotted class's fields by their offsets (included by http1.pyx, conn.pyx).
#
# How this works: a class with __slots__ (the frozen `slots=True` dataclasses of gateway.http1)
# keeps each field at a fixed offset in its instances, which the field's member descriptor records
# (PyMemberDef.offset, type T_OBJECT_EX). Getting or setting the attribute from C goes through the
# generic attribute machinery (a type lookup, the descriptor, PyMember_GetOne/SetOne: some hundred
# instructions); with the offset taken once, at load, it is one load or store. `slot_offsets`
# refuses anything that is not such a slot of that very class, so a changed class fails the load,
# never a request. Use only on an instance whose type is exactly the class the offsets came from.

from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF

# Cython ships none of these: the member descriptor's struct, PyTypeObject's tp_alloc, and
# PyType_GenericAlloc as a C function (cpython.type's returns an object, so it has no address to
# compare tp_alloc with).
cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
        int flags
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    ctypedef struct _SlotsType "PyTypeObject":
        PyObject *(*tp_alloc)(_SlotsType *, Py_ssize_t)
    PyObject *PyType_GenericAlloc(_SlotsType *, Py_ssize_t)

cdef extern from "structmember.h":      # T_OBJECT_EX, READONLY: not shipped by Cython either
    enum:
        T_OBJECT_EX
        READONLY


cdef object _member_descriptor_type():
    class Probe:
        __slots__ = ("x",)
    return type(Probe.__dict__["x"])


cdef object _MEMBER_DESCRIPTOR = _member_descriptor_type()


cdef Py_ssize_t _slot_offset(type cls, str name) except -1:
    """The offset of `cls`'s own slot `name` (an object slot, not read-only)."""
    d = cls.__dict__.get(name)
    if type(d) is not _MEMBER_DESCRIPTOR or getattr(d, "__objclass__", None) is not cls:
        raise AttributeError(f"{cls.__qualname__}.{name} is not a slot of that class")
    cdef PyMemberDef *m = (<PyMemberDescrObject *><PyObject *>d).d_member
    if m.type != T_OBJECT_EX or (m.flags & READONLY) or m.offset <= 0:
        raise AttributeError(f"{cls.__qualname__}.{name} is not a writable object slot")
    return m.offset


cdef bint plain_alloc(type cls) noexcept:
    """`object.__new__(cls)` is just the generic allocation (a class statement's type, no
    abstract methods): `new_instance` may then be used for it."""
    return ((<_SlotsType *><PyObject *>cls).tp_alloc == PyType_GenericAlloc
            and not getattr(cls, "__abstractmethods__", None))


cdef inline object new_instance(type cls):
    """object.__new__(cls) for a class `plain_alloc` accepted: every slot NULL, tracked by the GC."""
    cdef PyObject *o = PyType_GenericAlloc(<_SlotsType *><PyObject *>cls, 0)
    if o == NULL:
        raise MemoryError()
    obj = <object>o         # a reference of its own; the allocation's one is released next
    Py_XDECREF(o)
    return obj


cdef inline object slot_get(object obj, Py_ssize_t offset):
    """obj's field at `offset`; AttributeError if it was never set (as the attribute would)."""
    cdef PyObject *v = (<PyObject **>((<char *><PyObject *>obj) + offset))[0]
    if v == NULL:
        raise AttributeError("slot not set")
    return <object>v


cdef inline void slot_set(object obj, Py_ssize_t offset, object value) noexcept:
    """What PyMember_SetOne does for a T_OBJECT_EX slot: the new value in, the old one released."""
    cdef PyObject **p = <PyObject **>((<char *><PyObject *>obj) + offset)
    cdef PyObject *old = p[0]
    Py_INCREF(value)
    p[0] = <PyObject *>value
    Py_XDECREF(old)
