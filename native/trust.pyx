# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Native twin of the trust store's hot data (a leaf module: imports nothing from gateway).

How this works:

* `SerialSet` holds revoked (or denied) serial numbers as fixed-width keys in ONE bytes object: each
  serial's big-endian magnitude, left-padded to the width of the widest serial of the set (at most
  20 bytes, RFC 5280 section 4.1.2.2), sorted and unique. Five million 20-byte serials take 100 MB
  instead of the ~500 MB of a Python set of ints. Serials the layout cannot hold (negative ones,
  wider ones: both non-conforming, both seen in the wild) go to a small frozenset beside it.
  A prefix index (up to 2**20 + 1 uint32 offsets over the key bits after the bytes every key
  shares) narrows a lookup to a handful of neighbouring keys, so a lookup touches two or three cache
  lines rather than the ~23 of a plain binary search over 100 MB. Loading is a counting sort on the
  same prefix (which builds the index), then a qsort of each small bucket: linear for the random
  serials CAs issue (RFC 5280 and the CA/Browser Forum ask for 64 bits of entropy).
* `chain_key` is the SHA-256 of the length-prefixed DER certificates, hashed in one call.

The issuer index and the verdict cache have no twin here: natively they saved under a microsecond
of a full handshake's ~1.3 ms (bench/NATIVE.md, "Trust store"), so gateway/trust.py's are the only
ones.

gateway/trust.py holds the pure twins and the rules they follow, and hands in its MAX_SERIAL_BYTES
at load (`bind`); the unit suite proves the twins equal. Nothing here is called from an OpenSSL
callback; the qsort comparator is plain C.
"""
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                             PyBytes_GET_SIZE, _PyBytes_Resize)
from cpython.long cimport PyLong_Check
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcmp, memcpy, memmove, memset

import hashlib

cdef extern from "Python.h":         # CPython's private int helpers: Cython ships no declaration
    int _PyLong_Sign(object v)
    size_t _PyLong_NumBits(object v) except? <size_t>-1

cdef extern from *:
    """
    /* int -> big-endian unsigned bytes of exactly n bytes (the caller checked that it fits) */
    static int gw_long_to_key(PyObject *v, unsigned char *buf, size_t n) {
    #if PY_VERSION_HEX >= 0x030D0000
        return _PyLong_AsByteArray((PyLongObject *)v, buf, n, 0, 0, 1);
    #else
        return _PyLong_AsByteArray((PyLongObject *)v, buf, n, 0, 0);
    #endif
    }
    static size_t gw_sort_width;
    static int gw_key_cmp(const void *a, const void *b) {
        return memcmp(a, b, gw_sort_width);
    }
    """
    int gw_long_to_key(object v, unsigned char *buf, size_t n) except -1
    size_t gw_sort_width
    int gw_key_cmp(const void *a, const void *b) noexcept nogil

# gateway.trust.MAX_SERIAL_BYTES (RFC 5280 4.1.2.2: at most 20 octets), handed in by bind()
MAX_SERIAL_BYTES = 0
DEFAULT_MAX_INDEX_BITS = 20
cdef enum:
    KEY_BYTES = 20                     # the widest key a lookup's stack buffer holds
cdef Py_ssize_t _MAX_WIDTH = 0
cdef int _MAX_INDEX_BITS = 20
cdef object _sha256 = hashlib.sha256


def bind(*, Py_ssize_t max_serial_bytes):
    """Take gateway.trust's widest serial: wider (and negative) ones are kept aside."""
    global MAX_SERIAL_BYTES, _MAX_WIDTH
    if not 1 <= max_serial_bytes <= KEY_BYTES:
        raise ValueError(f"gateway._trust_c holds serials of 1 to {KEY_BYTES} bytes, "
                         f"not {max_serial_bytes}")
    MAX_SERIAL_BYTES = _MAX_WIDTH = max_serial_bytes


cdef inline int _check_bound() except -1:
    if _MAX_WIDTH == 0:
        raise RuntimeError("gateway._trust_c: bind() was not called (gateway.trust does it)")
    return 0


cdef inline uint32_t _prefix(const unsigned char *key, Py_ssize_t skip, Py_ssize_t width,
                             int bits) noexcept:
    """The top `bits` bits of the key after its first `skip` bytes (monotonic in key order)."""
    cdef uint32_t v = 0
    cdef Py_ssize_t i
    for i in range(4):
        v <<= 8
        if skip + i < width:
            v |= key[skip + i]
    return v >> (32 - bits) if bits else 0


cdef int _index_bits(Py_ssize_t count, Py_ssize_t usable_bytes) noexcept:
    """Enough prefix bits for about four keys per bucket, within what the keys can tell apart."""
    cdef int bits = 0
    while bits < _MAX_INDEX_BITS and ((<Py_ssize_t>1) << bits) * 4 < count:
        bits += 1
    if bits > usable_bytes * 8:
        bits = <int>(usable_bytes * 8)
    return bits


cdef inline bint _tlv(const unsigned char *der, Py_ssize_t end, Py_ssize_t *pos, unsigned char *tag,
                      Py_ssize_t *body, Py_ssize_t *body_end) noexcept:
    """Read one DER tag-length at *pos (definite lengths, at most 4 length bytes), bounds-checked;
    *body and *body_end delimit the contents and *pos moves past them."""
    cdef Py_ssize_t p = pos[0], n = 0
    cdef int k, nb
    if p + 2 > end:
        return False
    tag[0] = der[p]
    nb = der[p + 1]
    p += 2
    if nb < 0x80:
        n = nb
    else:
        nb &= 0x7F
        if nb == 0 or nb > 4 or p + nb > end:
            return False
        for k in range(nb):
            n = (n << 8) | der[p + k]
        p += nb
    if n > end - p:
        return False
    body[0] = p
    body_end[0] = p + n
    pos[0] = p + n
    return True


cdef bint _revoked_list(const unsigned char *der, Py_ssize_t size, Py_ssize_t *start,
                        Py_ssize_t *end) noexcept:
    """Locate revokedCertificates in a TBSCertList (RFC 5280 5.1): version?, signature, issuer,
    thisUpdate, nextUpdate?, revokedCertificates?, [0] crlExtensions?. An absent list is empty."""
    cdef Py_ssize_t pos = 0, body, body_end, outer_end
    cdef unsigned char tag
    if not _tlv(der, size, &pos, &tag, &body, &body_end) or tag != 0x30 or body_end != size:
        return False
    pos = body
    outer_end = body_end
    if not _tlv(der, outer_end, &pos, &tag, &body, &body_end):
        return False
    if tag == 0x02:                                        # version
        if not _tlv(der, outer_end, &pos, &tag, &body, &body_end):
            return False
    if tag != 0x30:                                        # signature AlgorithmIdentifier
        return False
    if not _tlv(der, outer_end, &pos, &tag, &body, &body_end) or tag != 0x30:     # issuer
        return False
    if not _tlv(der, outer_end, &pos, &tag, &body, &body_end) or (tag != 0x17 and tag != 0x18):
        return False                                       # thisUpdate
    start[0] = end[0] = pos
    if pos == outer_end:
        return True
    if not _tlv(der, outer_end, &pos, &tag, &body, &body_end):
        return False
    if tag == 0x17 or tag == 0x18:                         # nextUpdate
        start[0] = end[0] = pos
        if pos == outer_end:
            return True
        if not _tlv(der, outer_end, &pos, &tag, &body, &body_end):
            return False
    if tag == 0x30:
        start[0] = body
        end[0] = body_end
        return True
    return tag == 0xA0                                     # only extensions: no entries


cdef const unsigned char *_entry_serial(const unsigned char *der, Py_ssize_t end, Py_ssize_t *pos,
                                        Py_ssize_t *length) noexcept:
    """The serial INTEGER's content bytes of the revoked entry at *pos (moved past the entry), or
    NULL if the entry is not SEQUENCE { INTEGER, ... } with a non-empty integer."""
    cdef Py_ssize_t body, body_end, p, ib, ib_end
    cdef unsigned char tag
    if not _tlv(der, end, pos, &tag, &body, &body_end) or tag != 0x30:
        return NULL
    p = body
    if not _tlv(der, body_end, &p, &tag, &ib, &ib_end) or tag != 0x02 or ib_end == ib:
        return NULL
    length[0] = ib_end - ib
    return der + ib


cdef class SerialSet:
    """A set of certificate serial numbers (ints), compact and fast to probe."""

    cdef bytes _keys                 # count * width bytes: sorted, unique, big-endian magnitudes
    cdef Py_ssize_t _width
    cdef Py_ssize_t _count
    cdef frozenset _odd              # negative serials and those wider than MAX_SERIAL_BYTES
    cdef uint32_t *_index            # (1 << _bits) + 1 offsets into the keys, by key prefix
    cdef int _bits
    cdef Py_ssize_t _skip            # leading bytes every key shares (not used for the prefix)

    def __cinit__(self, *args, **kwargs):
        self._index = NULL
        self._keys = b""
        self._width = 1
        self._count = 0
        self._odd = frozenset()
        self._bits = 0
        self._skip = 0

    def __dealloc__(self):
        free(self._index)

    def __init__(self, serials=()):
        _check_bound()
        seq = PySequence_Fast(serials, "serials must be iterable")
        cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(seq)
        cdef Py_ssize_t i, m = 0, width = 1, nbytes
        cdef object item
        # One pass over the ints: each in-range serial as a 20-byte key, in arrival order; the
        # keys are narrowed to the widest serial's width afterwards (touching each int once
        # matters: five million of them are scattered over the heap).
        cdef unsigned char *raw = <unsigned char *>malloc((n if n else 1) * _MAX_WIDTH)
        if raw == NULL:
            raise MemoryError()
        odd = []
        try:
            for i in range(n):
                item = <object>PySequence_Fast_GET_ITEM(seq, i)
                if not PyLong_Check(item):
                    raise TypeError(f"a serial number must be an int, not {type(item).__name__}")
                if _PyLong_Sign(item) < 0:
                    odd.append(item)
                    continue
                nbytes = <Py_ssize_t>((_PyLong_NumBits(item) + 7) // 8)
                if nbytes > _MAX_WIDTH:
                    odd.append(item)
                    continue
                if nbytes > width:
                    width = nbytes
                gw_long_to_key(item, raw + m * _MAX_WIDTH, _MAX_WIDTH)
                m += 1
            self._odd = frozenset(odd)
            self._width = width
            if m == 0:
                return
            self._finish(raw, m, width)
        finally:
            free(raw)

    @staticmethod
    def from_crl(crl):
        """The serials a parsed CRL (cryptography) lists, read straight from its signed DER: the
        same set as SerialSet([r.serial_number for r in crl]), without an object per entry."""
        cdef SerialSet self = SerialSet.__new__(SerialSet)
        cdef bytes tbs = crl.tbs_certlist_bytes
        cdef const unsigned char *der = <const unsigned char *>PyBytes_AS_STRING(tbs)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(tbs)
        cdef Py_ssize_t start, end, pos, n_entries = 0, i, m = 0, width = 1, clen
        cdef const unsigned char *c
        cdef unsigned char *raw = NULL
        odd = []
        _check_bound()
        if not _revoked_list(der, size, &start, &end):
            return SerialSet([r.serial_number for r in crl])   # not the layout we expect
        pos = start
        while pos < end:                                   # first pass: count, check, width
            c = _entry_serial(der, end, &pos, &clen)
            if c == NULL:
                return SerialSet([r.serial_number for r in crl])
            n_entries += 1
        raw = <unsigned char *>malloc((n_entries if n_entries else 1) * _MAX_WIDTH)
        if raw == NULL:
            raise MemoryError()
        try:
            pos = start
            for i in range(n_entries):
                c = _entry_serial(der, end, &pos, &clen)
                if c[0] & 0x80:                            # negative: non-conforming, kept aside
                    odd.append(int.from_bytes((<bytes>(c[:clen])), "big", signed=True))
                    continue
                while clen > 1 and c[0] == 0:              # the sign byte of a positive serial
                    c += 1
                    clen -= 1
                if clen > _MAX_WIDTH:
                    odd.append(int.from_bytes((<bytes>(c[:clen])), "big"))
                    continue
                if clen > width and not (clen == 1 and c[0] == 0):
                    width = clen
                memset(raw + m * _MAX_WIDTH, 0, _MAX_WIDTH - clen)
                memcpy(raw + m * _MAX_WIDTH + (_MAX_WIDTH - clen), c, clen)
                m += 1
            self._odd = frozenset(odd)
            self._width = width
            self._finish(raw, m, width)
        finally:
            free(raw)
        return self

    cdef int _finish(self, unsigned char *raw, Py_ssize_t m, Py_ssize_t width) except -1:
        """Sort, deduplicate and index m keys of _MAX_WIDTH bytes (right-aligned) in raw."""
        cdef Py_ssize_t i, j, skip, pos
        cdef uint32_t *counts = NULL
        cdef unsigned char *out
        cdef bytes keys
        cdef PyObject *keys_ptr
        cdef int bits
        cdef uint32_t p
        global gw_sort_width
        if m == 0:
            return 0
        try:
            if width < _MAX_WIDTH:
                for i in range(m):
                    memmove(raw + i * width, raw + i * _MAX_WIDTH + (_MAX_WIDTH - width), width)
            # bytes every key shares: they cannot help to spread keys over buckets
            skip = width
            for i in range(1, m):
                j = 0
                while j < skip and raw[i * width + j] == raw[j]:
                    j += 1
                skip = j
                if skip == 0:
                    break
            if skip == width:              # one distinct key, maybe repeated
                skip = width - 1
            bits = _index_bits(m, width - skip)
            counts = <uint32_t *>calloc(((<Py_ssize_t>1) << bits) + 1, sizeof(uint32_t))
            if counts == NULL:
                raise MemoryError()
            for i in range(m):
                counts[_prefix(raw + i * width, skip, width, bits) + 1] += 1
            for i in range(1, ((<Py_ssize_t>1) << bits) + 1):
                counts[i] += counts[i - 1]
            keys = PyBytes_FromStringAndSize(NULL, m * width)
            out = <unsigned char *>PyBytes_AS_STRING(keys)
            # scatter by prefix (counts[p] walks each bucket's start to its end)
            for i in range(m):
                p = _prefix(raw + i * width, skip, width, bits)
                memcpy(out + <Py_ssize_t>counts[p] * width, raw + i * width, width)
                counts[p] += 1
            # counts[p] is now the end of bucket p, counts[p - 1] its start: sort each bucket
            gw_sort_width = width
            pos = 0
            for i in range((<Py_ssize_t>1) << bits):
                if counts[i] - pos > 1:
                    qsort(out + pos * width, counts[i] - pos, width, gw_key_cmp)
                pos = counts[i]
            # drop duplicates (adjacent now) and rebuild the bucket starts
            memset(counts, 0, (((<Py_ssize_t>1) << bits) + 1) * sizeof(uint32_t))
            j = 0
            for i in range(m):
                if j and memcmp(out + i * width, out + (j - 1) * width, width) == 0:
                    continue
                if i != j:
                    memcpy(out + j * width, out + i * width, width)
                counts[_prefix(out + j * width, skip, width, bits) + 1] += 1
                j += 1
            for i in range(1, ((<Py_ssize_t>1) << bits) + 1):
                counts[i] += counts[i - 1]
            if j != m:
                keys_ptr = <PyObject *>keys
                Py_INCREF(keys)
                keys = None
                _PyBytes_Resize(&keys_ptr, j * width)
                keys = <bytes>keys_ptr
                Py_DECREF(keys)
            self._keys = keys
            self._count = j
            self._bits = bits
            self._skip = skip
            self._index = counts
            counts = NULL
        finally:
            free(counts)
        return 0

    cdef bint contains(self, object serial) except -1:
        cdef unsigned char key[KEY_BYTES]
        cdef Py_ssize_t width = self._width, lo, hi, mid, nbytes
        cdef const unsigned char *keys
        cdef uint32_t p
        cdef int c
        if not PyLong_Check(serial):
            raise TypeError(f"a serial number must be an int, not {type(serial).__name__}")
        if _PyLong_Sign(serial) < 0:
            return serial in self._odd
        nbytes = <Py_ssize_t>((_PyLong_NumBits(serial) + 7) // 8)
        if nbytes > width:
            return nbytes > _MAX_WIDTH and serial in self._odd
        if self._count == 0:
            return False
        gw_long_to_key(serial, key, width)
        keys = <const unsigned char *>PyBytes_AS_STRING(self._keys)
        if self._skip and memcmp(key, keys, self._skip) != 0:
            return False
        p = _prefix(key, self._skip, width, self._bits)
        lo = self._index[p]
        hi = self._index[p + 1]
        while lo < hi:
            mid = (lo + hi) >> 1
            c = memcmp(keys + mid * width, key, width)
            if c == 0:
                return True
            if c < 0:
                lo = mid + 1
            else:
                hi = mid
        return False

    def __contains__(self, serial):
        return self.contains(serial)

    def __len__(self):
        return self._count + len(self._odd)

    @property
    def keys(self):
        """The sorted fixed-width keys, concatenated (what the pure twin must produce too)."""
        return self._keys

    @property
    def width(self):
        return self._width

    @property
    def odd(self):
        return self._odd

    @property
    def nbytes(self):
        """Memory held: the keys, the prefix index and the odd serials' set (approximate)."""
        return (PyBytes_GET_SIZE(self._keys)
                + ((((<Py_ssize_t>1) << self._bits) + 1) * 4 if self._index != NULL else 0)
                + len(self._odd) * 64)

    def __reduce__(self):
        raise TypeError("SerialSet is not picklable")


def chain_key(chain):
    """SHA-256 over the certificates, each as a 4-byte big-endian length then its DER."""
    seq = PySequence_Fast(chain, "a chain must be a sequence of DER certificates")
    cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i, total = 0, size
    cdef object der
    parts = None
    for i in range(n):
        der = <object>PySequence_Fast_GET_ITEM(seq, i)
        if not PyBytes_CheckExact(der):
            parts = [bytes(<object>PySequence_Fast_GET_ITEM(seq, k)) for k in range(n)]
            return chain_key(parts)
        total += 4 + PyBytes_GET_SIZE(der)
    cdef bytes buf = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(buf)
    for i in range(n):
        der = <object>PySequence_Fast_GET_ITEM(seq, i)
        size = PyBytes_GET_SIZE(der)
        if size > 0xFFFFFFFF:
            raise ValueError("certificate too large")
        p[0] = (size >> 24) & 0xFF
        p[1] = (size >> 16) & 0xFF
        p[2] = (size >> 8) & 0xFF
        p[3] = size & 0xFF
        memcpy(p + 4, PyBytes_AS_STRING(der), size)
        p += 4 + size
    return _sha256(buf).digest()
