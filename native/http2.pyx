# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Native twins for HTTP/2: the `hpack` library's Encoder and Decoder as the `h2` library drives
them, gateway.http2.request_of, and the server side of `h2`'s connection as gateway.http2
configures it (a leaf module: imports nothing from gateway; what request_of builds and raises is
handed in by gateway.http2 at load, `init`).

How this works. HPACK (RFC 7541) is a per-connection codec: a static table of 61 fields, a dynamic
table each side keeps in step (newest entry first, sized by 32 + name + value bytes, evicting the
oldest past its maximum), integers with an N-bit prefix, and strings either raw or Huffman-coded
(the RFC's canonical code, padded with the most significant bits of EOS). h2 holds one Encoder and
one Decoder per connection and calls `encode(headers)`, `decode(block, raw=True)` and the table-size
and list-size attributes; this twin has the same surface and the same behaviour byte for byte:

- decode: the representations in hpack's order of tests (indexed, literal with indexing, size
  update, literal without indexing or never indexed), integers of at most five continuation
  octets (hpack's VARINT_MAX_LENGTH), the same checks at the same points (a size update after a
  field, an index outside both tables, a truncated string, an invalid Huffman string, the decoded
  list past `max_header_list_size`, the table above `max_allowed_table_size` at the end), raising
  hpack's own exception classes, so h2 maps them to the same errors. Fields come back as hpack's
  HeaderTuple / NeverIndexedHeaderTuple of bytes, as hpack's raw mode returns them.
- encode: hpack's choices exactly: pending table-size changes first, then per field the static
  table's exact match, else the first exact match in the dynamic table, else a literal with the
  lowest static name index (or the dynamic table's first name match), indexed incrementally
  unless sensitive (never indexed then, and not added); literals always Huffman-coded when
  `huffman` (hpack's default), so the blocks are identical.

The Huffman code, the static table and the exception classes are the hpack package's own data and
classes (it is h2's dependency); the decoding tree and the encoder's code arrays are built from its
code table at import. tests/unit/test_hpack_native.py holds both classes to hpack's on generated and
mutated blocks.

`H2Connection` is h2.connection.H2Connection's twin for the surface gateway.streams uses,
configured as gateway.http2.h2_connection configures h2 (server side, no push, our SETTINGS at
once, 16 KiB frames in, h2's header passes off but cookie joining). Bytes in are framed in place
(one buffer and an offset, no frame objects): the preface checked, each frame's head and body
checked where hyperframe checks them, a header block gathered from HEADERS and CONTINUATION
(at most 64 frames, nothing else between), then the frame applied as h2 applies it: the
connection's states (idle, open, closed), each stream's (RFC 9113 5.1 for a server with no push:
idle, open, half closed either way, closed, and how it closed, which decides what a late frame
on it gets: h2 forgets a closed stream only when a new one opens, and remembers 65536 of them),
windows both ways (inbound given back by h2's WindowManager rule: half the window processed, or
the window empty and more than min(1024, a quarter) processed), content-length against DATA,
SETTINGS applied and acknowledged, PING answered, GOAWAY. A frame longer than we allow is refused
at its 9-byte head (h2 waits for the whole of it first: up to 16 MiB buffered). Sends build
frames straight into one bytearray, header blocks split into CONTINUATION at the peer's frame
size. Per stream the state is one small object (_Stream, C fields); the events handed out are
this module's cdef classes with h2.events' names and attributes; errors are h2.exceptions' own
classes, and on one the GOAWAY h2 would send is queued. tests/unit/test_h2conn_native.py drives
both with the same generated and mutated sessions and demands the same events, bytes, windows and
exception classes.

`request_of` is the pure one's checks in its order, each field's bytes read once in C (the
CR/LF/NUL scan, the surrounding blanks, a leading colon, upper case), the rare fields (cookie, host,
content-length, te) by the same bytes methods the pure one calls; it builds the same
http1.Request and raises the same H2Refused with the same reason and message. A field that is not
a pair of bytes goes to the pure function. tests/unit/test_http2_request_native.py holds the two
equal on generated and mutated header lists.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject_GenericSetAttr
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc

import sys

from hpack.exceptions import (HPACKDecodingError, InvalidTableIndex, InvalidTableSizeError,
                              OversizedHeaderListError)
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.struct import HeaderTuple, NeverIndexedHeaderTuple
from hpack.table import HeaderTable

DEF DEFAULT_TABLE_SIZE = 4096
DEF DEFAULT_MAX_HEADER_LIST_SIZE = 65536
DEF VARINT_MAX_LENGTH = 5
DEF EOS = 256

cdef tuple STATIC = tuple(HeaderTable.STATIC_TABLE)
cdef Py_ssize_t STATIC_LENGTH = len(STATIC)
# name -> (its lowest index, {value: index}), as hpack's search reads the static table
cdef dict STATIC_MAPPING = {}
for _i, (_n, _v) in enumerate(STATIC, 1):
    STATIC_MAPPING.setdefault(_n, (_i, {}))[1][_v] = _i     # a repeated pair: the last index, as hpack

# the code of each symbol (0-255, EOS 256) and its length in bits
cdef uint32_t CODE[257]
cdef unsigned char CODE_BITS[257]
# the decoding tree: node n's children at TREE[2n] (bit 0) and TREE[2n + 1] (bit 1); a child < 0
# is the leaf of symbol -child - 1
cdef int TREE[2 * 513]
cdef int _nodes = 1


cdef void _build() except *:
    global _nodes
    cdef int s, b, node, bit, nxt
    for s in range(2 * 513):
        TREE[s] = 0
    for s in range(257):
        CODE[s] = REQUEST_CODES[s]
        CODE_BITS[s] = REQUEST_CODES_LENGTH[s]
        node = 0
        for b in range(CODE_BITS[s] - 1, -1, -1):
            bit = (CODE[s] >> b) & 1
            if b == 0:
                TREE[2 * node + bit] = -s - 1
            else:
                nxt = TREE[2 * node + bit]
                if nxt == 0:
                    nxt = _nodes
                    _nodes += 1
                    TREE[2 * node + bit] = nxt
                node = nxt


_build()


# -- strings ----------------------------------------------------------------------------------------

cdef bytes huffman_decode(const unsigned char *p, Py_ssize_t n):
    """The RFC 7541 5.2 rules: EOS inside is an error; what is left after the last symbol must be
    fewer than 8 bits, all ones."""
    if n == 0:
        return b""
    cdef unsigned char *out = <unsigned char *>malloc(n * 8 // 5 + 1)
    if out == NULL:
        raise MemoryError()
    cdef Py_ssize_t i, o = 0
    cdef int node = 0, child, k, bit, pad = 0
    cdef bint ones = True
    cdef unsigned char byte
    try:
        for i in range(n):
            byte = p[i]
            for k in range(7, -1, -1):
                bit = (byte >> k) & 1
                child = TREE[2 * node + bit]
                if child < 0:
                    if child == -EOS - 1:
                        raise HPACKDecodingError("Invalid Huffman string")
                    out[o] = <unsigned char>(-child - 1)
                    o += 1
                    node = 0
                    pad = 0
                    ones = True
                else:
                    node = child
                    pad += 1
                    if not bit:
                        ones = False
        if pad > 7 or not ones:
            raise HPACKDecodingError("Incomplete Huffman string")
        return PyBytes_FromStringAndSize(<char *>out, o)
    finally:
        free(out)


cdef bytes huffman_encode(bytes data):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if n == 0:
        return b""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t i, bits = 0
    for i in range(n):
        bits += CODE_BITS[p[i]]
    cdef Py_ssize_t size = (bits + 7) // 8
    cdef bytes result = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char *out = <unsigned char *>PyBytes_AS_STRING(result)
    cdef uint64_t acc = 0
    cdef int held = 0
    cdef Py_ssize_t o = 0
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        acc = (acc << CODE_BITS[c]) | CODE[c]
        held += CODE_BITS[c]
        while held >= 8:
            held -= 8
            out[o] = <unsigned char>(acc >> held)
            o += 1
        acc &= (<uint64_t>1 << held) - 1
    if held:
        out[o] = <unsigned char>((acc << (8 - held)) | ((1 << (8 - held)) - 1))
    return result


# -- integers ---------------------------------------------------------------------------------------

cdef inline void _put_integer(bytearray out, uint64_t value, int prefix, unsigned char flags):
    cdef uint64_t most = (1 << prefix) - 1
    if value < most:
        out.append(<unsigned char>(flags | value))
        return
    out.append(<unsigned char>(flags | most))
    value -= most
    while value >= 128:
        out.append(<unsigned char>((value & 127) | 128))
        value >>= 7
    out.append(<unsigned char>value)


cdef inline Py_ssize_t _get_integer(const unsigned char *p, Py_ssize_t n, int prefix,
                                    uint64_t *value) except -1:
    """Octets read, hpack's decode_integer's rules (its VARINT_MAX_LENGTH check included)."""
    if n < 1:
        raise HPACKDecodingError("Unable to decode HPACK integer representation")
    cdef uint64_t most = (1 << prefix) - 1
    cdef uint64_t number = p[0] & most
    cdef Py_ssize_t index = 1
    cdef int shift = 0
    cdef unsigned char nxt
    if number == most:
        while True:
            if index >= n:
                raise HPACKDecodingError("Unable to decode HPACK integer representation")
            nxt = p[index]
            index += 1
            if nxt >= 128:
                number += (<uint64_t>(nxt - 128)) << shift
            else:
                number += (<uint64_t>nxt) << shift
                break
            shift += 7
            if index > VARINT_MAX_LENGTH:
                raise HPACKDecodingError("Variable integer representation is too long")
    value[0] = number
    return index


# -- the dynamic table ------------------------------------------------------------------------------

cdef class _Table:
    """Newest entry first: entries[0] is index STATIC_LENGTH + 1."""
    cdef list entries          # (name, value) tuples
    cdef list sizes
    cdef Py_ssize_t maxsize, size
    cdef public bint resized

    def __cinit__(self):
        self.entries = []
        self.sizes = []
        self.maxsize = DEFAULT_TABLE_SIZE
        self.size = 0
        self.resized = False

    cdef tuple get(self, uint64_t index):
        cdef uint64_t dyn
        if index >= 1:
            if index <= <uint64_t>STATIC_LENGTH:
                return <tuple>STATIC[index - 1]
            dyn = index - STATIC_LENGTH - 1
            if dyn < <uint64_t>len(self.entries):
                return <tuple>self.entries[dyn]
        raise InvalidTableIndex("Invalid table index %d" % index)

    cdef void add(self, bytes name, bytes value) except *:
        cdef Py_ssize_t size = 32 + PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value)
        if size > self.maxsize:
            del self.entries[:]
            del self.sizes[:]
            self.size = 0
            return
        self.entries.insert(0, (name, value))
        self.sizes.insert(0, size)
        self.size += size
        self._shrink()

    cdef void _shrink(self) except *:
        while self.size > self.maxsize:
            self.entries.pop()
            self.size -= <Py_ssize_t>self.sizes.pop()

    cdef void set_maxsize(self, object value) except *:
        cdef Py_ssize_t newmax = int(value)
        cdef Py_ssize_t oldmax = self.maxsize
        self.maxsize = newmax
        self.resized = newmax != oldmax
        if newmax <= 0:
            del self.entries[:]
            del self.sizes[:]
            self.size = 0
        elif oldmax > newmax:
            self._shrink()


# -- the codec --------------------------------------------------------------------------------------

cdef object _bytes_of(object v):
    if type(v) is bytes:
        return v
    if type(v) is not str:
        v = str(v)
    return (<str>v).encode("utf-8")


cdef class Encoder:
    """hpack.Encoder's twin: `encode(headers, huffman=True)` and `header_table_size`."""
    cdef _Table table
    cdef list table_size_changes

    def __cinit__(self):
        self.table = _Table()
        self.table_size_changes = []

    @property
    def header_table_size(self):
        return self.table.maxsize

    @header_table_size.setter
    def header_table_size(self, value):
        self.table.set_maxsize(value)
        if self.table.resized:
            self.table_size_changes.append(int(value))

    def encode(self, headers, bint huffman=True):
        if isinstance(headers, dict):
            headers = sorted(headers.items(), key=lambda kv: not _bytes_of(kv[0]).startswith(b":"))
        return self._encode(headers, huffman)

    cdef bytes _encode(self, object headers, bint huffman):
        cdef bytearray out = bytearray()
        cdef object size
        if self.table.resized:
            for size in self.table_size_changes:
                _put_integer(out, <uint64_t>size, 5, 0x20)
            self.table_size_changes = []
            self.table.resized = False
        cdef bint sensitive
        for header in headers:
            if isinstance(header, HeaderTuple):
                sensitive = not header.indexable
            elif len(header) > 2:
                sensitive = bool(header[2])
            else:
                sensitive = False
            self._add(out, _bytes_of(header[0]), _bytes_of(header[1]), sensitive, huffman)
        return bytes(out)

    cdef void _add(self, bytearray out, bytes name, bytes value, bint sensitive, bint huffman) except *:
        cdef Py_ssize_t index = 0, i, offset = STATIC_LENGTH + 1
        cdef tuple found = STATIC_MAPPING.get(name)
        cdef object exact
        cdef tuple entry
        if found is not None:
            exact = (<dict>found[1]).get(value)
            if exact is not None:
                _put_integer(out, <uint64_t>exact, 7, 0x80)
                return
            index = found[0]
        for i in range(len(self.table.entries)):
            entry = <tuple>self.table.entries[i]
            if entry[0] == name:
                if entry[1] == value:
                    _put_integer(out, <uint64_t>(i + offset), 7, 0x80)
                    return
                if index == 0:
                    index = i + offset
        if index == 0:
            out.append(0x10 if sensitive else 0x40)
            self._string(out, name, huffman)
        elif sensitive:
            _put_integer(out, <uint64_t>index, 4, 0x10)
        else:
            _put_integer(out, <uint64_t>index, 6, 0x40)
        self._string(out, value, huffman)
        if not sensitive:
            self.table.add(name, value)

    cdef void _string(self, bytearray out, bytes s, bint huffman) except *:
        if huffman:
            s = huffman_encode(s)
            _put_integer(out, <uint64_t>PyBytes_GET_SIZE(s), 7, 0x80)
        else:
            _put_integer(out, <uint64_t>PyBytes_GET_SIZE(s), 7, 0)
        out += s


cdef bytes _string_at(const unsigned char *p, Py_ssize_t n, Py_ssize_t *at):
    """The string literal (a 7-bit-prefix length, Huffman or raw) at p + at[0]; at moves past it."""
    cdef uint64_t length
    cdef Py_ssize_t start = at[0]
    cdef Py_ssize_t used = _get_integer(p + start, n - start, 7, &length)
    if length > <uint64_t>(n - start - used):
        raise HPACKDecodingError("Truncated header block")
    at[0] = start + used + <Py_ssize_t>length
    if p[start] & 0x80:
        return huffman_decode(p + start + used, <Py_ssize_t>length)
    return PyBytes_FromStringAndSize(<const char *>(p + start + used), <Py_ssize_t>length)


cdef class Decoder:
    """hpack.Decoder's twin: `decode(data, raw=True)`, `max_header_list_size`,
    `max_allowed_table_size` and `header_table_size`."""
    cdef _Table table
    cdef public object max_header_list_size
    cdef public object max_allowed_table_size

    def __cinit__(self, max_header_list_size=DEFAULT_MAX_HEADER_LIST_SIZE):
        self.table = _Table()
        self.max_header_list_size = max_header_list_size
        self.max_allowed_table_size = self.table.maxsize

    @property
    def header_table_size(self):
        return self.table.maxsize

    @header_table_size.setter
    def header_table_size(self, value):
        self.table.set_maxsize(value)

    def decode(self, data, bint raw=False):
        cdef list headers = self._decode(bytes(data), False)
        if raw:
            return headers
        try:
            return [h.__class__(h[0].decode("utf-8"), h[1].decode("utf-8")) for h in headers]
        except UnicodeDecodeError as err:
            raise HPACKDecodingError("Unable to decode headers as UTF-8") from err

    cdef list _decode(self, bytes block, bint plain):
        """The block's fields, as hpack's raw mode gives them or (`plain`, for H2Connection) as
        plain (name, value) tuples."""
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(block)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(block), at = 0, used
        cdef list headers = []
        cdef Py_ssize_t inflated = 0
        cdef Py_ssize_t limit = self.max_header_list_size
        cdef unsigned char first
        cdef uint64_t number
        cdef tuple entry
        cdef object header
        while at < n:
            first = p[at]
            if first & 0x80:
                used = _get_integer(p + at, n - at, 7, &number)
                entry = self.table.get(number)
                header = entry if plain else HeaderTuple(entry[0], entry[1])
            elif first & 0x40:
                used, header = self._literal(p + at, n - at, True, plain)
            elif first & 0x20:
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                used = _get_integer(p + at, n - at, 5, &number)
                if number > <uint64_t>self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.table.set_maxsize(number)
                header = None
            else:
                used, header = self._literal(p + at, n - at, False, plain)
            if header is not None:
                headers.append(header)
                inflated += 32 + PyBytes_GET_SIZE(header[0]) + PyBytes_GET_SIZE(header[1])
                if inflated > limit:
                    raise OversizedHeaderListError(
                        f"A header list larger than {self.max_header_list_size} has been received")
            at += used
        if self.table.maxsize > self.max_allowed_table_size:
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        return headers

    cdef tuple _literal(self, const unsigned char *p, Py_ssize_t n, bint index, bint plain):
        cdef Py_ssize_t at
        cdef uint64_t number
        cdef bint never = False
        cdef unsigned char first = p[0]
        cdef int prefix
        cdef bytes name, value
        cdef bint named
        if index:
            named = (first & 0x3F) != 0
            prefix = 6
        else:
            named = (first & 0x0F) != 0
            prefix = 4
            never = (first & 0x10) != 0
        if named:
            at = _get_integer(p, n, prefix, &number)
            name = <bytes>(self.table.get(number)[0])
        else:
            at = 1
            name = _string_at(p, n, &at)
        value = _string_at(p, n, &at)
        if plain:
            header = (name, value)
        else:
            header = NeverIndexedHeaderTuple(name, value) if never else HeaderTuple(name, value)
        if index:
            self.table.add(name, value)
        return at, header


# the string codecs alone, for the differential tests against hpack's
def huffman_encode_for_tests(bytes data):
    return huffman_encode(data)


def huffman_decode_for_tests(bytes data):
    return huffman_decode(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))



# -- a stream's request (gateway.http2.request_of's twin) -------------------------------------------

cdef object Request = None
cdef object H2Refused = None
cdef object _pure_request_of = None
cdef frozenset CONNECTION_SPECIFIC = frozenset()
cdef bint _request_ready = False
cdef frozenset _EMPTY = frozenset()
cdef object _host_fullmatch = None
cdef unsigned char TCHAR[256]
cdef unsigned char NAMECHAR[256]       # a lower-case token's bytes


# http1.Request's fields, in order, when it is the frozen dataclass request_of expects (each set
# as its own __init__ sets it, by object.__setattr__, here without the Python call per field)
cdef tuple _REQUEST_FIELDS = ("method", "target", "http_version", "headers", "keep_alive",
                              "content_length", "chunked", "expect_continue", "upgrade", "host",
                              "connection")
cdef tuple _request_names = None


cdef object _new_request(tuple values):
    if _request_names is None:
        return Request(*values)
    cdef object obj = Request.__new__(Request)
    cdef Py_ssize_t i
    for i in range(11):
        PyObject_GenericSetAttr(obj, _request_names[i], values[i])
    return obj


def init(*, request, refused, connection_specific, pure, host_re, tchars):
    """gateway.http2 hands in what request_of builds and raises, itself for odd input, and the
    HTTP/1.1 reader's Host pattern and token bytes."""
    global Request, H2Refused, CONNECTION_SPECIFIC, _pure_request_of, _request_ready, _host_fullmatch
    global _request_names
    cdef int c
    Request, H2Refused, _pure_request_of = request, refused, pure
    fields = getattr(request, "__dataclass_fields__", None)
    _request_names = None
    if (fields is not None and tuple(fields) == _REQUEST_FIELDS and
            not hasattr(request, "__post_init__") and getattr(request, "__slots__", None)):
        _request_names = tuple(sys.intern(name) for name in _REQUEST_FIELDS)
    CONNECTION_SPECIFIC = frozenset(connection_specific)
    _host_fullmatch = host_re.fullmatch
    for c in range(256):
        TCHAR[c] = 0
        NAMECHAR[c] = 0
    for c in tchars:
        TCHAR[c] = 1
        NAMECHAR[c] = not 65 <= c <= 90
    _request_ready = True


cdef inline bint _same(const unsigned char *p, Py_ssize_t n, const char *word, Py_ssize_t m):
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if p[i] != <unsigned char>word[i]:
            return False
    return True


def request_of(raw, bint ended, Py_ssize_t max_count):
    if not _request_ready:
        raise RuntimeError("gateway._http2_c.init() was not called")
    if len(raw) > max_count:
        raise H2Refused("too_many_headers", f"more than {max_count} header fields")
    cdef object method = None, scheme = None, path = None, authority = None, host = None
    cdef list fields = []
    cdef list cookies = []
    cdef set lengths = set()
    cdef object name, value, part
    cdef const unsigned char *np
    cdef const unsigned char *vp
    cdef Py_ssize_t nn, vn, i
    cdef unsigned char c
    cdef bint bad_name
    for header in raw:
        name = header[0]
        value = header[1]
        if type(name) is not bytes or type(value) is not bytes or len(header) != 2:
            return _pure_request_of(raw, ended, max_count)
        np = <const unsigned char *>PyBytes_AS_STRING(name)
        nn = PyBytes_GET_SIZE(name)
        vp = <const unsigned char *>PyBytes_AS_STRING(value)
        vn = PyBytes_GET_SIZE(value)
        for i in range(vn):
            c = vp[i]
            if (c < 0x20 and c != 9) or c == 0x7F:
                raise H2Refused("h2_bad_header_bytes", "a control byte (CR, LF, NUL or another) or DEL "
                                                       "in a header field")
        bad_name = nn == 0
        for i in range(nn):
            c = np[i]
            if c == 13 or c == 10 or c == 0:
                raise H2Refused("h2_bad_header_bytes", "a control byte (CR, LF, NUL or another) or DEL "
                                                       "in a header field")
            if not NAMECHAR[c] and not (c == 58 and i == 0):
                bad_name = True
        if nn == 1 and np[0] == 58:
            bad_name = True
        if vn and (vp[0] == 32 or vp[0] == 9 or vp[vn - 1] == 32 or vp[vn - 1] == 9):
            raise H2Refused("h2_bad_header_value", "whitespace around a header value")
        if bad_name:
            raise H2Refused("h2_bad_header_name", "an empty header name, or one with a byte no "
                            "HTTP/1.1 token has (upper case, a control, a space, a delimiter, "
                            "a non-ASCII byte)")
        if nn and np[0] == 58:          # ":"
            if fields or cookies:
                raise H2Refused("h2_pseudo_header_order", "a pseudo-header after a regular field")
            if method is None and _same(np, nn, b":method", 7):
                method = value
            elif scheme is None and _same(np, nn, b":scheme", 7):
                scheme = value
            elif path is None and _same(np, nn, b":path", 5):
                path = value
            elif authority is None and _same(np, nn, b":authority", 10):
                authority = value
            else:
                raise H2Refused("h2_bad_pseudo_header", f"pseudo-header {name!r} unknown or repeated")
            continue
        if name in CONNECTION_SPECIFIC or (_same(np, nn, b"te", 2) and value.lower() != b"trailers"):
            raise H2Refused("h2_connection_header", f"connection-specific field {name!r}")
        if _same(np, nn, b"cookie", 6):
            cookies.append(value)
            continue
        if _same(np, nn, b"host", 4):
            if host is not None:
                raise H2Refused("h2_bad_host", "more than one host field")
            host = value
        elif _same(np, nn, b"content-length", 14):
            for part in value.split(b","):
                part = part.strip()
                if not part.isdigit():
                    raise H2Refused("h2_bad_content_length", "content-length is not a number")
                lengths.add(part.lstrip(b"0") or b"0")
        fields.append((name, value))
    if method is None:
        raise H2Refused("h2_missing_pseudo_header", ":method missing")
    if method == b"CONNECT":
        raise H2Refused("h2_connect", "CONNECT is not served")
    if scheme is None or path is None:
        raise H2Refused("h2_missing_pseudo_header", ":scheme or :path missing")
    if scheme != b"https":
        raise H2Refused("h2_bad_scheme", f":scheme {scheme!r} on a TLS connection")
    vp = <const unsigned char *>PyBytes_AS_STRING(method)
    vn = PyBytes_GET_SIZE(method)
    if vn == 0:
        raise H2Refused("h2_bad_method", ":method is not a token")
    for i in range(vn):
        if not TCHAR[vp[i]]:
            raise H2Refused("h2_bad_method", ":method is not a token")
    if not (<bytes>path).startswith(b"/") and not (path == b"*" and method == b"OPTIONS"):
        raise H2Refused("h2_bad_path", ":path is neither origin-form nor * for OPTIONS")
    vp = <const unsigned char *>PyBytes_AS_STRING(path)
    vn = PyBytes_GET_SIZE(path)
    for i in range(vn):
        if vp[i] <= 0x20 or vp[i] >= 0x7F or vp[i] == 0x23:
            raise H2Refused("h2_bad_path", ":path has a byte no HTTP/1.1 request-target has (a space, a control, "
                                        "DEL, '#' or a non-ASCII byte)")
    if authority is None and host is None:
        raise H2Refused("h2_missing_authority", "neither :authority nor host")
    if (authority is not None and _host_fullmatch(authority) is None) or \
            (host is not None and _host_fullmatch(host) is None):
        raise H2Refused("h2_bad_host", "invalid :authority or host value")
    if authority is not None and host is not None and authority != host:
        raise H2Refused("h2_authority_host_mismatch", ":authority and host disagree")
    if len(lengths) > 1:
        raise H2Refused("h2_bad_content_length", "content-length values disagree")
    if authority is not None and host is None:
        fields.insert(0, (b"host", authority))
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    content_length = int(lengths.pop()) if lengths else None
    if ended and content_length not in (None, 0):
        raise H2Refused("h2_content_length_mismatch", "content-length without a body")
    return _new_request((method, path, b"2", fields, True, content_length,
                         content_length is None and not ended, False, None,
                         authority if authority is not None else host, _EMPTY))



# -- the connection (h2.connection.H2Connection's twin, server side) --------------------------------

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from h2.exceptions import (DenialOfServiceError, FlowControlError, FrameDataMissingError,
                           FrameTooLargeError, InvalidBodyLengthError, InvalidSettingsValueError,
                           NoSuchStreamError, ProtocolError, StreamClosedError, StreamIDTooLowError,
                           TooManyStreamsError)
from collections import deque

from h2.errors import ErrorCodes as _ErrorCodes
from hpack.exceptions import HPACKError

cdef bytes PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEF PREFACE_LENGTH = 24
DEF MAX_WINDOW = 2147483647
DEF CONTINUATION_BACKLOG = 64          # h2's frame buffer: a header block of at most 64 frames
DEF MAX_CLOSED_STREAMS = 65536         # h2's memory of how its closed streams closed
DEF DEFAULT_WINDOW = 65535
DEF DEFAULT_FRAME_SIZE = 16384
DEF FRAME_SIZE_LIMIT = 16384           # the largest frame we take (our SETTINGS: the default)

# frame types and flags (RFC 9113 6)
DEF T_DATA = 0
DEF T_HEADERS = 1
DEF T_PRIORITY = 2
DEF T_RST_STREAM = 3
DEF T_SETTINGS = 4
DEF T_PUSH_PROMISE = 5
DEF T_PING = 6
DEF T_GOAWAY = 7
DEF T_WINDOW_UPDATE = 8
DEF T_CONTINUATION = 9
DEF T_ALTSVC = 10
DEF F_END_STREAM = 0x1
DEF F_ACK = 0x1
DEF F_END_HEADERS = 0x4
DEF F_PADDED = 0x8
DEF F_PRIORITY = 0x20

# the connection's states (h2's IDLE, CLIENT_OPEN and SERVER_OPEN are one here: no input this
# surface makes tells them apart) and the inputs its one transition function takes
DEF C_IDLE = 0
DEF C_OPEN = 1
DEF C_CLOSED = 2
DEF I_RECV_HEADERS = 0
DEF I_RECV_DATA = 1
DEF I_RECV_RST = 2
DEF I_RECV_CONTROL = 3      # SETTINGS, PING, PRIORITY, WINDOW_UPDATE
DEF I_RECV_GOAWAY = 4
DEF I_RECV_ALTSVC = 5
DEF I_SEND_HEADERS = 6
DEF I_SEND_DATA = 7
DEF I_SEND_RST = 8
DEF I_SEND_CONTROL = 9      # SETTINGS, PING
DEF I_SEND_GOAWAY = 10

# a stream's states (RFC 9113 5.1, no push) and how it closed
DEF S_IDLE = 0
DEF S_OPEN = 3
DEF S_HALF_CLOSED_REMOTE = 4
DEF S_HALF_CLOSED_LOCAL = 5
DEF S_CLOSED = 6
DEF BY_NONE = 0
DEF BY_SEND_END = 1
DEF BY_RECV_END = 2
DEF BY_SEND_RST = 3
DEF BY_RECV_RST = 4

DEF E_PROTOCOL_ERROR = 1
DEF E_FLOW_CONTROL_ERROR = 3
DEF E_STREAM_CLOSED = 5

cdef object _PROTOCOL_ERROR_CODE = _ErrorCodes.PROTOCOL_ERROR
cdef object _FLOW_CONTROL_ERROR_CODE = _ErrorCodes.FLOW_CONTROL_ERROR


# -- events: h2.events' names and attributes, made cheaply ------------------------------------------

cdef class _HeaderBlockEvent:
    """What RequestReceived and TrailersReceived carry (each its own type, as h2's are)."""
    cdef readonly int stream_id
    cdef readonly list headers
    cdef readonly object stream_ended
    priority_updated = None

    def __repr__(self):
        return f"<{type(self).__name__} stream_id:{self.stream_id}, headers:{self.headers}>"


cdef class RequestReceived(_HeaderBlockEvent):
    pass


cdef class TrailersReceived(_HeaderBlockEvent):
    pass


cdef class DataReceived:
    cdef readonly int stream_id
    cdef readonly bytes data
    cdef readonly Py_ssize_t flow_controlled_length
    cdef readonly object stream_ended

    def __repr__(self):
        return (f"<DataReceived stream_id:{self.stream_id}, flow_controlled_length:"
                f"{self.flow_controlled_length}, data:{self.data[:20]!r}>")


cdef class StreamEnded:
    cdef readonly int stream_id

    def __repr__(self):
        return f"<StreamEnded stream_id:{self.stream_id}>"


cdef class StreamReset:
    cdef readonly int stream_id
    cdef readonly object error_code
    cdef readonly bint remote_reset

    def __repr__(self):
        return (f"<StreamReset stream_id:{self.stream_id}, error_code:{self.error_code}, "
                f"remote_reset:{self.remote_reset}>")


cdef class WindowUpdated:
    cdef readonly int stream_id
    cdef readonly int64_t delta

    def __repr__(self):
        return f"<WindowUpdated stream_id:{self.stream_id}, delta:{self.delta}>"


cdef class RemoteSettingsChanged:
    cdef readonly dict changed_settings     # setting code -> its new value

    def __repr__(self):
        return f"<RemoteSettingsChanged changed_settings:{self.changed_settings}>"


cdef class PingAckReceived:
    cdef readonly bytes ping_data

    def __repr__(self):
        return f"<PingAckReceived ping_data:{self.ping_data!r}>"


cdef class ConnectionTerminated:
    cdef readonly object error_code
    cdef readonly object last_stream_id
    cdef readonly object additional_data

    def __repr__(self):
        return (f"<ConnectionTerminated error_code:{self.error_code}, last_stream_id:"
                f"{self.last_stream_id}, additional_data:{self.additional_data!r}>")


cdef inline StreamEnded _ended(int sid):
    cdef StreamEnded ev = StreamEnded.__new__(StreamEnded)
    ev.stream_id = sid
    return ev


cdef inline StreamReset _reset_event(int sid, object code, bint remote):
    cdef StreamReset ev = StreamReset.__new__(StreamReset)
    ev.stream_id = sid
    ev.error_code = code
    ev.remote_reset = remote
    return ev


cdef inline WindowUpdated _window_event(int sid, int64_t delta):
    cdef WindowUpdated ev = WindowUpdated.__new__(WindowUpdated)
    ev.stream_id = sid
    ev.delta = delta
    return ev


# -- a stream and the window arithmetic -------------------------------------------------------------

cdef class _Stream:
    """One stream's state: where RFC 9113 5.1 has it, how it closed, its windows both ways (the
    inbound one kept as h2's WindowManager keeps it) and the body's length against its
    content-length."""
    cdef int sid
    cdef int state
    cdef int closed_by
    cdef bint headers_received, headers_sent, trailers_sent
    cdef int64_t out_window
    cdef int64_t in_max, in_current, in_processed
    cdef int64_t expected           # content-length; -1 when none was declared
    cdef int64_t actual


cdef inline int64_t _process_bytes(int64_t *maximum, int64_t *current, int64_t *processed,
                                   int64_t size):
    """h2's WindowManager.process_bytes: what to give back now (0: nothing yet). Give the
    processed bytes back once half the window is processed, or when the window is empty and
    more than min(1024, a quarter of it) is."""
    processed[0] += size
    if not processed[0]:
        return 0
    cdef int64_t increment = 0
    cdef int64_t quarter = maximum[0] // 4
    if (current[0] == 0 and processed[0] > (1024 if 1024 < quarter else quarter)) or \
            processed[0] >= maximum[0] // 2:
        increment = processed[0] if processed[0] < maximum[0] - current[0] else maximum[0] - current[0]
        processed[0] = 0
    current[0] += increment
    return increment


def _stream_id(_Stream s):
    return s.sid


cdef inline bint _is_open(int state):
    return state == S_OPEN or state == S_HALF_CLOSED_REMOTE or state == S_HALF_CLOSED_LOCAL


cdef inline uint32_t _u32(const unsigned char *p):
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _put_frame(bytearray out, Py_ssize_t length, int kind, int flags, uint32_t sid,
                        const char *body, Py_ssize_t n) except *:
    """Append a frame: its 9-byte head, then `n` bytes of `body` (the length may say more: the
    caller writes the rest)."""
    cdef Py_ssize_t at = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, at + 9 + n)
    cdef unsigned char *p = <unsigned char *>PyByteArray_AS_STRING(out) + at
    p[0] = <unsigned char>(length >> 16)
    p[1] = <unsigned char>(length >> 8)
    p[2] = <unsigned char>length
    p[3] = <unsigned char>kind
    p[4] = <unsigned char>flags
    sid &= 0x7FFFFFFF
    p[5] = <unsigned char>(sid >> 24)
    p[6] = <unsigned char>(sid >> 16)
    p[7] = <unsigned char>(sid >> 8)
    p[8] = <unsigned char>sid
    if n:
        memcpy(p + 9, body, n)


cdef inline void _u32_frame(bytearray out, int kind, uint32_t sid, uint32_t value) except *:
    """A frame whose body is one 32-bit number (RST_STREAM, WINDOW_UPDATE)."""
    cdef unsigned char body[4]
    body[0] = <unsigned char>(value >> 24)
    body[1] = <unsigned char>(value >> 16)
    body[2] = <unsigned char>(value >> 8)
    body[3] = <unsigned char>value
    _put_frame(out, 4, kind, 0, sid, <const char *>body, 4)


cdef inline bint _is_name(object name, const char *word, Py_ssize_t m):
    return type(name) is bytes and _same(<const unsigned char *>PyBytes_AS_STRING(name),
                                         PyBytes_GET_SIZE(name), word, m)


cdef bint _informational(object headers) except -1:
    """h2's is_informational_response: the first :status among the leading pseudo-fields says
    1xx."""
    cdef object name, value
    cdef object header
    if type(headers) is list:
        # the usual case, read in C: a list of (bytes, bytes)
        for header in <list>headers:
            if type(header) is not tuple or len(<tuple>header) != 2:
                break
            name = (<tuple>header)[0]
            value = (<tuple>header)[1]
            if type(name) is not bytes or type(value) is not bytes:
                break
            if PyBytes_GET_SIZE(name) == 0 or PyBytes_AS_STRING(name)[0] != 58:     # ':'
                return False
            if _is_name(name, b":status", 7):
                return PyBytes_GET_SIZE(value) > 0 and PyBytes_AS_STRING(value)[0] == 49    # '1'
        else:
            return False
    for header in headers:
        name = header[0]
        value = header[1]
        if type(name) is str:
            name = (<str>name).encode("utf-8")
        if type(value) is str:
            value = (<str>value).encode("utf-8")
        if not name.startswith(b":"):
            return False
        if name != b":status":
            continue
        return value.startswith(b"1")
    return False


cdef dict _ERROR_CODES = {int(c): c for c in _ErrorCodes}


cdef inline object _error_code(uint32_t code):
    """h2's _error_code_from_int: the ErrorCodes member, else the number."""
    cdef object known = _ERROR_CODES.get(code)
    return known if known is not None else code


cdef list _join_cookies(list headers):
    """h2's normalize_inbound_headers: every cookie field joined into one, last (RFC 9113 8.2.3)."""
    cdef object name
    cdef list cookies = None
    cdef list out
    for header in headers:
        if _is_name((<tuple>header)[0], b"cookie", 6):
            cookies = []
            break
    if cookies is None:
        return headers
    out = []
    for header in headers:
        name = (<tuple>header)[0]
        if _is_name(name, b"cookie", 6):
            cookies.append((<tuple>header)[1])
        else:
            out.append(header)
    out.append((b"cookie", b"; ".join(cookies)))
    return out


cdef class H2Connection:
    """The server side of one HTTP/2 connection, as gateway.http2.connection configures h2's:
    the same surface (receive_data, data_to_send, send_headers, send_data, end_stream,
    reset_stream, acknowledge_received_data, ping, local_flow_control_window,
    max_outbound_frame_size), the same events (this module's, with h2.events' names and
    attributes) in the same order, the same bytes to send and the same h2.exceptions raised."""
    cdef readonly Encoder encoder
    cdef readonly Decoder decoder
    cdef dict streams               # stream id -> _Stream, in the order they opened (h2's dict)
    cdef dict closed_streams        # stream id -> how it closed, once forgotten
    cdef object closed_order        # their ids, oldest first (a deque)
    cdef list closed_since          # streams closed since they were last forgotten
    cdef int64_t open_inbound       # streams open (OPEN, or half closed either way)
    cdef int state
    cdef readonly int64_t highest_inbound_stream_id
    cdef readonly int64_t outbound_flow_control_window
    cdef int64_t in_max, in_current, in_processed
    cdef readonly Py_ssize_t max_outbound_frame_size
    cdef readonly Py_ssize_t max_inbound_frame_size
    cdef int64_t max_concurrent_streams         # ours
    cdef int64_t remote_max_concurrent_streams
    cdef int64_t remote_initial_window
    cdef bytearray out
    cdef bytes buf                  # bytes received and not yet framed, from `at`
    cdef Py_ssize_t at
    cdef Py_ssize_t preface_left
    # a header block being read (HEADERS or PUSH_PROMISE without END_HEADERS, then CONTINUATION)
    cdef int block_frames
    cdef uint32_t block_sid
    cdef int block_kind, block_flags
    cdef uint32_t block_depends
    cdef list block_parts

    def __cinit__(self, int64_t max_streams, Py_ssize_t header_table_size,
                  Py_ssize_t max_header_bytes):
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.decoder.max_header_list_size = max_header_bytes
        self.decoder.max_allowed_table_size = header_table_size
        self.streams = {}
        self.closed_streams = {}
        self.closed_order = deque()
        self.closed_since = []
        self.open_inbound = 0
        self.state = C_IDLE
        self.highest_inbound_stream_id = 0
        self.outbound_flow_control_window = DEFAULT_WINDOW
        self.in_max = self.in_current = DEFAULT_WINDOW
        self.in_processed = 0
        self.max_outbound_frame_size = DEFAULT_FRAME_SIZE
        self.max_inbound_frame_size = FRAME_SIZE_LIMIT
        self.max_concurrent_streams = max_streams
        self.remote_max_concurrent_streams = 2 ** 32 + 1
        self.remote_initial_window = DEFAULT_WINDOW
        self.out = bytearray()
        self.buf = b""
        self.at = 0
        self.preface_left = PREFACE_LENGTH
        self.block_frames = 0
        self.block_parts = []
        # our SETTINGS, in h2's order: HEADER_TABLE_SIZE, ENABLE_PUSH, INITIAL_WINDOW_SIZE,
        # MAX_FRAME_SIZE, ENABLE_CONNECT_PROTOCOL, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE
        cdef unsigned char body[42]
        cdef uint64_t values[7]
        cdef int codes[7]
        codes[:] = [1, 2, 4, 5, 8, 3, 6]
        values[:] = [header_table_size, 0, DEFAULT_WINDOW, DEFAULT_FRAME_SIZE, 0, max_streams,
                     max_header_bytes]
        cdef int i
        for i in range(7):
            body[6 * i] = 0
            body[6 * i + 1] = <unsigned char>codes[i]
            body[6 * i + 2] = <unsigned char>(values[i] >> 24)
            body[6 * i + 3] = <unsigned char>(values[i] >> 16)
            body[6 * i + 4] = <unsigned char>(values[i] >> 8)
            body[6 * i + 5] = <unsigned char>values[i]
        _put_frame(self.out, 42, T_SETTINGS, 0, 0, <const char *>body, 42)

    # -- the connection's state machine -------------------------------------------------------------
    cdef int _input(self, int what) except -1:
        """h2's connection transitions as this surface meets them; an input the state does not
        take closes the connection's state machine and is a ProtocolError."""
        cdef int old = self.state
        if what == I_SEND_GOAWAY or what == I_RECV_GOAWAY:
            self.state = C_CLOSED
            return 0
        if old == C_OPEN:
            return 0
        if old == C_IDLE:
            if what == I_RECV_HEADERS or what == I_SEND_HEADERS or what == I_RECV_ALTSVC:
                self.state = C_OPEN
                return 0
            if what == I_RECV_CONTROL or what == I_SEND_CONTROL:
                return 0
        self.state = C_CLOSED
        raise ProtocolError(f"Invalid input {what} in connection state {old}")

    # -- streams ------------------------------------------------------------------------------------
    cdef int _close(self, _Stream s) except -1:
        """A stream's one way to its closed state: it counts no more as open, and is forgotten
        at the next _open_streams."""
        if s.state == S_CLOSED:
            return 0
        if _is_open(s.state):
            self.open_inbound -= 1
        s.state = S_CLOSED
        self.closed_since.append(s)
        return 0

    cdef int64_t _open_streams(self, int remainder) except -1:
        """How many streams of this parity are open (every stream here is the client's: odd);
        the closed ones are forgotten meanwhile, in the order they opened (h2 does it here, so
        when a frame finds a stream forgotten depends on it)."""
        cdef _Stream s
        if self.closed_since:
            if len(self.closed_since) > 1:
                self.closed_since.sort(key=_stream_id)
            for s in self.closed_since:
                del self.streams[s.sid]
                self.closed_streams[s.sid] = s.closed_by
                self.closed_order.append(s.sid)
                if len(self.closed_order) > MAX_CLOSED_STREAMS:
                    # the oldest forgotten, in O(1) (next(iter(dict)) would walk the holes
                    # deletions leave at the dict's front)
                    del self.closed_streams[self.closed_order.popleft()]
            self.closed_since = []
        return self.open_inbound if remainder == 1 else 0

    cdef _Stream _stream(self, int64_t sid):
        """The stream, else NoSuchStreamError (never opened) or StreamClosedError (closed and
        forgotten), as h2's _get_stream_by_id."""
        if not sid:
            raise NoSuchStreamError(-1)
        cdef object s = self.streams.get(sid)
        if s is not None:
            return <_Stream>s
        cdef int64_t highest = 0 if sid % 2 == 0 else self.highest_inbound_stream_id
        if sid > highest:
            raise NoSuchStreamError(sid)
        raise StreamClosedError(sid)

    cdef int _closed_by(self, int64_t sid):
        cdef object s = self.streams.get(sid)
        if s is not None:
            return (<_Stream>s).closed_by
        return self.closed_streams.get(sid, BY_NONE)

    cdef int _on_closed_stream(self, int64_t sid, list events, object more) except -1:
        """A frame on a closed stream: RST_STREAM (STREAM_CLOSED) when it was reset, else the
        connection's error (StreamClosedError), as h2's _receive_frame."""
        cdef int by = self._closed_by(sid)
        if by == BY_SEND_RST or by == BY_RECV_RST:
            _u32_frame(self.out, T_RST_STREAM, <uint32_t>sid, E_STREAM_CLOSED)
            if more is not None:
                events.append(more)
            return 0
        raise StreamClosedError(sid)

    # -- bytes in -----------------------------------------------------------------------------------
    def receive_data(self, data):
        cdef list events = []
        cdef bytes chunk = data if type(data) is bytes else bytes(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(chunk), take
        if self.preface_left:
            take = n if n < self.preface_left else self.preface_left
            if chunk[:take] != PREFACE[PREFACE_LENGTH - self.preface_left:
                                       PREFACE_LENGTH - self.preface_left + take]:
                raise ProtocolError("Invalid HTTP/2 preamble.")
            self.preface_left -= take
            chunk = chunk[take:]
        if self.at < PyBytes_GET_SIZE(self.buf):
            self.buf = self.buf[self.at:] + chunk
        else:
            self.buf = chunk
        self.at = 0
        try:
            self._frames(events)
        except ProtocolError as exc:
            self._terminate(exc.error_code)
            raise
        return events

    cdef int _terminate(self, object code) except -1:
        self._input(I_SEND_GOAWAY)
        cdef unsigned char body[8]
        cdef uint32_t last = <uint32_t>self.highest_inbound_stream_id
        cdef uint32_t c = <uint32_t>int(code)
        body[0] = <unsigned char>(last >> 24) & 0x7F
        body[1] = <unsigned char>(last >> 16)
        body[2] = <unsigned char>(last >> 8)
        body[3] = <unsigned char>last
        body[4] = <unsigned char>(c >> 24)
        body[5] = <unsigned char>(c >> 16)
        body[6] = <unsigned char>(c >> 8)
        body[7] = <unsigned char>c
        _put_frame(self.out, 8, T_GOAWAY, 0, 0, <const char *>body, 8)
        return 0

    cdef int _frames(self, list events) except -1:
        cdef bytes buf = self.buf
        cdef const unsigned char *p
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t length
        cdef int kind, flags
        cdef uint32_t sid
        while n - self.at >= 9:
            p = <const unsigned char *>PyBytes_AS_STRING(buf) + self.at
            length = (<Py_ssize_t>p[0] << 16) | (<Py_ssize_t>p[1] << 8) | p[2]
            kind = p[3]
            flags = p[4]
            sid = _u32(p + 5) & 0x7FFFFFFF
            # hyperframe's checks on the frame's head (its stream id)
            if sid == 0 and (kind == T_DATA or kind == T_HEADERS or kind == T_PRIORITY or
                             kind == T_RST_STREAM or kind == T_PUSH_PROMISE or
                             kind == T_CONTINUATION):
                raise ProtocolError("Received frame with invalid header: a stream id of 0")
            if sid != 0 and (kind == T_SETTINGS or kind == T_PING or kind == T_GOAWAY):
                raise ProtocolError("Received frame with invalid header: a stream id on a "
                                    "connection frame")
            # h2 waits for the whole frame before it finds it too long; refusing it at its head
            # bounds what a connection buffers to one frame we allow
            if length > self.max_inbound_frame_size:
                raise FrameTooLargeError(f"Received overlong frame: length {length}, max "
                                         f"{self.max_inbound_frame_size}")
            if n - self.at - 9 < length:
                break
            self.at += 9 + length
            self._frame(kind, flags, sid, p + 9, length, events)
        return 0

    cdef int _frame(self, int kind, int flags, uint32_t sid, const unsigned char *p,
                    Py_ssize_t length, list events) except -1:
        """One frame: its body checked as hyperframe parses it, then the header block it
        belongs to (if any), then what it does."""
        cdef Py_ssize_t start = 0, stop = length, pad = 0, rest
        cdef uint32_t depends = 0, value
        cdef int i
        if kind == T_DATA:
            if flags & F_PADDED:
                if length < 1:
                    raise FrameDataMissingError("Frame data missing or invalid")
                pad = p[0]
                start = 1
                if pad and pad >= length:
                    raise ProtocolError("Received frame with invalid padding.")
                stop = length - pad
        elif kind == T_HEADERS or kind == T_PUSH_PROMISE:
            if flags & F_PADDED:
                if length < 1:
                    raise FrameDataMissingError("Frame data missing or invalid")
                pad = p[0]
                start = 1
            rest = length - start
            if kind == T_HEADERS:
                if flags & F_PRIORITY:
                    if rest < 5:
                        raise FrameDataMissingError("Frame data missing or invalid")
                    depends = _u32(p + start) & 0x7FFFFFFF
                    start += 5
                stop = length - pad
                if stop < start:
                    stop = start
                if pad and pad >= rest:
                    raise ProtocolError("Received frame with invalid padding.")
            else:
                if rest < 4:
                    raise FrameDataMissingError("Frame data missing or invalid")
                value = _u32(p + start)
                start += 4
                stop = length - pad
                if stop < start:
                    stop = start
                if value == 0 or value % 2 != 0:
                    raise ProtocolError("Received frame with non-compliant data")
                if pad and pad >= length:
                    raise ProtocolError("Received frame with invalid padding.")
        elif kind == T_PRIORITY:
            if length != 5:
                raise FrameDataMissingError("Frame data missing or invalid")
            depends = _u32(p) & 0x7FFFFFFF
        elif kind == T_RST_STREAM:
            if length != 4:
                raise FrameDataMissingError("Frame data missing or invalid")
        elif kind == T_SETTINGS:
            if flags & F_ACK and length:
                raise ProtocolError("Received frame with non-compliant data")
            if length % 6:
                raise FrameDataMissingError("Frame data missing or invalid")
        elif kind == T_PING:
            if length != 8:
                raise FrameDataMissingError("Frame data missing or invalid")
        elif kind == T_GOAWAY:
            if length < 8:
                raise FrameDataMissingError("Frame data missing or invalid")
        elif kind == T_WINDOW_UPDATE:
            if length != 4:
                raise FrameDataMissingError("Frame data missing or invalid")
            value = _u32(p)
            if value == 0 or value > MAX_WINDOW:
                raise ProtocolError("Received frame with non-compliant data")
        elif kind == T_ALTSVC:
            if length < 2 or 2 + ((<Py_ssize_t>p[0] << 8) | p[1]) > length:
                raise FrameDataMissingError("Frame data missing or invalid")
        # the header block (h2's frame buffer): nothing but its CONTINUATION frames until it ends
        if self.block_frames:
            if kind != T_CONTINUATION or sid != self.block_sid:
                raise ProtocolError("Invalid frame during header block.")
            self.block_parts.append(PyBytes_FromStringAndSize(<const char *>p, length))
            self.block_frames += 1
            if self.block_frames > CONTINUATION_BACKLOG:
                raise ProtocolError("Too many continuation frames received.")
            if flags & F_END_HEADERS:
                self.block_frames = 0
                block = b"".join(self.block_parts)
                self.block_parts = []
                if self.block_kind == T_PUSH_PROMISE:
                    raise ProtocolError("Received pushed stream")
                self._headers(self.block_sid, self.block_flags, block, self.block_depends, events)
            return 0
        if (kind == T_HEADERS or kind == T_PUSH_PROMISE) and not flags & F_END_HEADERS:
            self.block_frames = 1
            self.block_sid = sid
            self.block_kind = kind
            self.block_flags = flags
            self.block_depends = depends
            self.block_parts = [PyBytes_FromStringAndSize(<const char *>(p + start), stop - start)]
            return 0
        if kind == T_DATA:
            self._data(sid, flags, p, start, stop, length, events)
        elif kind == T_HEADERS:
            self._headers(sid, flags, PyBytes_FromStringAndSize(<const char *>(p + start), stop - start),
                          depends, events)
        elif kind == T_PRIORITY:
            self._input(I_RECV_CONTROL)
            if depends == sid:
                raise ProtocolError(f"Stream {sid} may not depend on itself")
        elif kind == T_RST_STREAM:
            self._rst(sid, _u32(p), events)
        elif kind == T_SETTINGS:
            self._settings(flags, p, length, events)
        elif kind == T_PUSH_PROMISE:
            raise ProtocolError("Received pushed stream")
        elif kind == T_PING:
            self._input(I_RECV_CONTROL)
            if flags & F_ACK:
                ack = PingAckReceived.__new__(PingAckReceived)
                (<PingAckReceived>ack).ping_data = PyBytes_FromStringAndSize(<const char *>p, 8)
                events.append(ack)
            else:
                _put_frame(self.out, 8, T_PING, F_ACK, 0, <const char *>p, 8)
        elif kind == T_GOAWAY:
            self._input(I_RECV_GOAWAY)
            PyByteArray_Resize(self.out, 0)      # h2 drops what it had to send
            term = ConnectionTerminated.__new__(ConnectionTerminated)
            (<ConnectionTerminated>term).error_code = _error_code(_u32(p + 4))
            (<ConnectionTerminated>term).last_stream_id = _u32(p)
            (<ConnectionTerminated>term).additional_data = (
                PyBytes_FromStringAndSize(<const char *>(p + 8), length - 8) if length > 8 else None)
            events.append(term)
        elif kind == T_WINDOW_UPDATE:
            self._window_update(sid, _u32(p), events)
        elif kind == T_CONTINUATION:
            # outside a header block
            s = self.streams.get(sid)
            if s is None:
                if sid % 2 == 0 or sid > self.highest_inbound_stream_id:
                    raise NoSuchStreamError(sid)
                return self._on_closed_stream(sid, events, None)
            self._close(<_Stream>s)
            raise ProtocolError("CONTINUATION outside a header block")
        elif kind == T_ALTSVC:
            self._input(I_RECV_ALTSVC)
        # any other type: ignored (RFC 9113 5.5)
        return 0

    cdef int _headers(self, uint32_t sid, int flags, bytes block, uint32_t depends,
                      list events) except -1:
        cdef object found = self.streams.get(sid)
        if found is None:
            if self._open_streams(1) + 1 > self.max_concurrent_streams:
                raise TooManyStreamsError(f"Max inbound streams is {self.max_concurrent_streams}")
        cdef list headers
        try:
            headers = self.decoder._decode(block, True)
        except OversizedHeaderListError as exc:
            raise DenialOfServiceError(f"Oversized header block: {exc}") from exc
        except (HPACKError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"Error decoding header block: {exc}") from exc
        self._input(I_RECV_HEADERS)
        cdef _Stream s
        cdef int by
        if found is None:
            if sid % 2 == 0:
                raise ProtocolError("Invalid stream ID for peer.")
            if sid <= self.highest_inbound_stream_id:
                by = self._closed_by(sid)
                if by == BY_SEND_RST or by == BY_RECV_RST:
                    _u32_frame(self.out, T_RST_STREAM, sid, E_STREAM_CLOSED)
                    return 0
                if by == BY_SEND_END or by == BY_RECV_END:
                    raise StreamClosedError(sid)
                raise StreamIDTooLowError(sid, self.highest_inbound_stream_id)
            s = _Stream.__new__(_Stream)
            s.sid = sid
            s.state = S_IDLE
            s.out_window = self.remote_initial_window
            s.in_max = s.in_current = DEFAULT_WINDOW
            s.expected = -1
            self.streams[sid] = s
            self.highest_inbound_stream_id = sid
        else:
            s = <_Stream>found
        cdef bint end = flags & F_END_STREAM
        if _informational(headers):
            if not end:
                self._close(s)
            raise ProtocolError("An informational response from a client")
        cdef bint trailers
        if s.state == S_IDLE:
            s.state = S_OPEN
            self.open_inbound += 1
            s.headers_received = True
            trailers = False
        elif s.state == S_OPEN or s.state == S_HALF_CLOSED_LOCAL:
            trailers = True
        elif s.state == S_HALF_CLOSED_REMOTE:
            self._close(s)
            s.closed_by = BY_SEND_RST
            return self._on_closed_stream(sid, events,
                                          _reset_event(sid, _ErrorCodes.STREAM_CLOSED, False))
        else:
            return self._on_closed_stream(sid, events, None)
        cdef StreamEnded ended = None
        if end:
            ended = _ended(sid)
            if s.state == S_OPEN:
                s.state = S_HALF_CLOSED_REMOTE
            else:
                self._close(s)
                s.closed_by = BY_RECV_END
        self._content_length(s, headers)
        if trailers and not end:
            raise ProtocolError("Trailers must have END_STREAM set")
        headers = _join_cookies(headers)
        if trailers:
            tr = TrailersReceived.__new__(TrailersReceived)
            (<TrailersReceived>tr).stream_id = sid
            (<TrailersReceived>tr).headers = headers
            (<TrailersReceived>tr).stream_ended = ended
            events.append(tr)
        else:
            rq = RequestReceived.__new__(RequestReceived)
            (<RequestReceived>rq).stream_id = sid
            (<RequestReceived>rq).headers = headers
            (<RequestReceived>rq).stream_ended = ended
            events.append(rq)
        if ended is not None:
            events.append(ended)
        if flags & F_PRIORITY:
            self._input(I_RECV_CONTROL)
            if depends == sid:
                raise ProtocolError(f"Stream {sid} may not depend on itself")
        return 0

    cdef int _content_length(self, _Stream s, list headers) except -1:
        """h2's _initialize_content_length: every content-length all digits, all equal. A length
        past 10**18 is kept as 10**18, which no body reaches."""
        cdef object length = None, parsed
        cdef object name, value
        cdef const unsigned char *vp
        cdef Py_ssize_t vn, i
        for name, value in headers:
            if not _is_name(name, b"content-length", 14):
                continue
            vp = <const unsigned char *>PyBytes_AS_STRING(value)
            vn = PyBytes_GET_SIZE(value)
            if vn == 0:
                raise ProtocolError(f"Invalid content-length header: {value!r}")
            for i in range(vn):
                if not 48 <= vp[i] <= 57:
                    raise ProtocolError(f"Invalid content-length header: {value!r}")
            parsed = int(value)
            if length is None:
                length = parsed
            elif parsed != length:
                raise ProtocolError(f"Conflicting content-length headers: {length} and {parsed}")
        if length is None:
            s.expected = -1
        else:
            s.expected = length if length < 1000000000000000000 else 1000000000000000000
        return 0

    cdef int _data(self, uint32_t sid, int flags, const unsigned char *p, Py_ssize_t start,
                   Py_ssize_t stop, Py_ssize_t length, list events) except -1:
        cdef int64_t flow = length
        self._input(I_RECV_DATA)
        self.in_current -= flow
        if self.in_current < 0:
            raise FlowControlError("Flow control window shrunk below 0")
        cdef object found = self.streams.get(sid)
        cdef _Stream s
        if found is None:
            if sid % 2 == 0 or sid > self.highest_inbound_stream_id:
                raise NoSuchStreamError(sid)
            return self._data_on_closed(sid, flow, events, None)
        s = <_Stream>found
        if s.state == S_HALF_CLOSED_REMOTE:
            self._close(s)
            s.closed_by = BY_SEND_RST
            return self._data_on_closed(sid, flow, events,
                                        _reset_event(sid, _ErrorCodes.STREAM_CLOSED, False))
        if s.state == S_CLOSED:
            return self._data_on_closed(sid, flow, events, None)
        if s.state == S_IDLE or not s.headers_received:
            self._close(s)
            raise ProtocolError("cannot receive data before headers")
        s.in_current -= flow
        if s.in_current < 0:
            raise FlowControlError("Flow control window shrunk below 0")
        cdef bint end = flags & F_END_STREAM
        s.actual += stop - start
        if s.expected >= 0:
            if s.expected < s.actual or (end and s.expected != s.actual):
                raise InvalidBodyLengthError(s.expected, s.actual)
        cdef DataReceived ev = DataReceived.__new__(DataReceived)
        ev.stream_id = sid
        ev.data = PyBytes_FromStringAndSize(<const char *>(p + start), stop - start)
        ev.flow_controlled_length = flow
        events.append(ev)
        if end:
            ev.stream_ended = _ended(sid)
            if s.state == S_OPEN:
                s.state = S_HALF_CLOSED_REMOTE
            else:
                self._close(s)
                s.closed_by = BY_RECV_END
            events.append(ev.stream_ended)
        return 0

    cdef int _data_on_closed(self, uint32_t sid, int64_t flow, list events,
                             object more) except -1:
        """DATA on a closed stream: its window given back to the connection as h2 would, and
        RST_STREAM (STREAM_CLOSED)."""
        cdef int64_t increment = _process_bytes(&self.in_max, &self.in_current,
                                                &self.in_processed, flow)
        if increment:
            _u32_frame(self.out, T_WINDOW_UPDATE, 0, <uint32_t>increment)
        _u32_frame(self.out, T_RST_STREAM, sid, E_STREAM_CLOSED)
        if more is not None:
            events.append(more)
        return 0

    cdef int _rst(self, uint32_t sid, uint32_t code, list events) except -1:
        self._input(I_RECV_RST)
        cdef object found = self.streams.get(sid)
        cdef _Stream s
        if found is None:
            return 0        # h2 ignores it, whether the stream is closed or was never opened
        s = <_Stream>found
        if _is_open(s.state):
            self._close(s)
            s.closed_by = BY_RECV_RST
            events.append(_reset_event(sid, _error_code(code), True))
        return 0

    cdef int _window_update(self, uint32_t sid, uint32_t increment, list events) except -1:
        self._input(I_RECV_CONTROL)
        cdef object found
        cdef _Stream s
        if sid:
            found = self.streams.get(sid)
            if found is None:
                if sid % 2 == 0 or sid > self.highest_inbound_stream_id:
                    raise NoSuchStreamError(sid)
                return 0
            s = <_Stream>found
            if not _is_open(s.state):
                return 0
            if s.out_window + increment > MAX_WINDOW:
                events.append(_reset_event(sid, _FLOW_CONTROL_ERROR_CODE, False))
                self._close(s)
                s.closed_by = BY_SEND_RST
                _u32_frame(self.out, T_RST_STREAM, sid, E_FLOW_CONTROL_ERROR)
                return 0
            s.out_window += increment
            events.append(_window_event(sid, increment))
            return 0
        if self.outbound_flow_control_window + increment > MAX_WINDOW:
            raise FlowControlError(f"May not increment flow control window past {MAX_WINDOW}")
        self.outbound_flow_control_window += increment
        events.append(_window_event(0, increment))
        return 0

    cdef int _settings(self, int flags, const unsigned char *p, Py_ssize_t length,
                       list events) except -1:
        self._input(I_RECV_CONTROL)
        if flags & F_ACK:
            return 0        # ours took effect at once (gateway.http2.connection's initial values)
        cdef dict settings = {}
        cdef Py_ssize_t i
        for i in range(0, length, 6):
            settings[(<int>p[i] << 8) | p[i + 1]] = _u32(p + i + 2)
        cdef object code, value
        for code, value in settings.items():
            if code == 2 or code == 8:          # ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL
                if value not in (0, 1):
                    raise InvalidSettingsValueError(f"Setting {code} has invalid value {value}",
                                                    error_code=_PROTOCOL_ERROR_CODE)
            elif code == 4:                     # INITIAL_WINDOW_SIZE
                if value > MAX_WINDOW:
                    raise InvalidSettingsValueError(f"Setting {code} has invalid value {value}",
                                                    error_code=_FLOW_CONTROL_ERROR_CODE)
            elif code == 5:                     # MAX_FRAME_SIZE
                if not 16384 <= value <= 16777215:
                    raise InvalidSettingsValueError(f"Setting {code} has invalid value {value}",
                                                    error_code=_PROTOCOL_ERROR_CODE)
        cdef RemoteSettingsChanged changed = RemoteSettingsChanged.__new__(RemoteSettingsChanged)
        changed.changed_settings = settings
        events.append(changed)
        self._input(I_SEND_CONTROL)
        cdef int64_t delta
        cdef _Stream s
        if 4 in settings:
            delta = <int64_t>settings[4] - self.remote_initial_window
            self.remote_initial_window = settings[4]
            for s in self.streams.values():
                if s.out_window + delta > MAX_WINDOW:
                    raise FlowControlError(f"May not increment flow control window past {MAX_WINDOW}")
                s.out_window += delta
        if 1 in settings:
            self.encoder.header_table_size = settings[1]
        if 5 in settings:
            self.max_outbound_frame_size = settings[5]
        if 3 in settings:
            self.remote_max_concurrent_streams = settings[3]
        _put_frame(self.out, 0, T_SETTINGS, F_ACK, 0, NULL, 0)
        return 0

    # -- bytes out ----------------------------------------------------------------------------------
    def data_to_send(self, amount=None):
        cdef bytes data
        if amount is None:
            data = bytes(self.out)
            PyByteArray_Resize(self.out, 0)
            return data
        data = bytes(self.out[:amount])
        del self.out[:amount]
        return data

    def clear_outbound_data_buffer(self):
        PyByteArray_Resize(self.out, 0)

    def local_flow_control_window(self, int64_t stream_id):
        cdef _Stream s = self._stream(stream_id)
        return s.out_window if s.out_window < self.outbound_flow_control_window \
            else self.outbound_flow_control_window

    def remote_flow_control_window(self, int64_t stream_id):
        cdef _Stream s = self._stream(stream_id)
        return s.in_current if s.in_current < self.in_current else self.in_current

    @property
    def inbound_flow_control_window(self):
        return self.in_current

    cdef _Stream _send_stream(self, int64_t sid):
        """The stream send_headers writes on; a server opens none (no push)."""
        cdef object found = self.streams.get(sid)
        if found is None:
            if self._open_streams(0) + 1 > self.remote_max_concurrent_streams:
                raise TooManyStreamsError(f"Max outbound streams is "
                                          f"{self.remote_max_concurrent_streams}")
        self._input(I_SEND_HEADERS)
        if found is not None:
            return <_Stream>found
        if sid % 2 == 0:
            raise ProtocolError("A server opens no stream (no push)")
        if sid <= self.highest_inbound_stream_id:
            raise StreamIDTooLowError(sid, self.highest_inbound_stream_id)
        raise ProtocolError("Invalid stream ID for peer.")

    def send_headers(self, int64_t stream_id, headers, bint end_stream=False):
        if type(headers) is not list and type(headers) is not tuple:
            headers = list(headers)
        cdef _Stream s = self._send_stream(stream_id)
        if _informational(headers):
            if end_stream:
                raise ProtocolError("Cannot set END_STREAM on informational responses.")
            if s.state == S_OPEN or s.state == S_HALF_CLOSED_REMOTE:
                if s.headers_sent:
                    self._close(s)
                    raise ProtocolError("Information response after final response")
            else:
                self._close(s)
                raise ProtocolError(f"Invalid input: informational headers in stream state {s.state}")
        elif s.state == S_OPEN or s.state == S_HALF_CLOSED_REMOTE:
            if not s.headers_sent:
                s.headers_sent = True
            elif s.trailers_sent:
                self._close(s)
                raise ProtocolError("Trailers sent twice")
            else:
                s.trailers_sent = True
        elif s.state == S_CLOSED:
            raise StreamClosedError(stream_id)
        else:
            self._close(s)
            raise ProtocolError(f"Invalid input: headers in stream state {s.state}")
        cdef bytes block = self.encoder._encode(headers, True)
        if end_stream:
            if s.state == S_OPEN:
                s.state = S_HALF_CLOSED_LOCAL
            else:
                self._close(s)
                s.closed_by = BY_SEND_END
        if s.trailers_sent and not end_stream:
            raise ProtocolError("Trailers must have END_STREAM set.")
        cdef Py_ssize_t n = PyBytes_GET_SIZE(block), size = self.max_outbound_frame_size
        cdef Py_ssize_t at = 0, piece
        cdef const char *bp = PyBytes_AS_STRING(block)
        if n == 0:
            raise IndexError("list index out of range")
        cdef int kind = T_HEADERS
        cdef int flags = F_END_STREAM if end_stream else 0
        while at < n:
            piece = n - at if n - at < size else size
            if at + piece == n:
                flags |= F_END_HEADERS
            _put_frame(self.out, piece, kind, flags, <uint32_t>stream_id, bp + at, piece)
            at += piece
            kind = T_CONTINUATION
            flags = 0

    def send_data(self, int64_t stream_id, data, bint end_stream=False, pad_length=None):
        cdef Py_ssize_t size = len(data)
        cdef int pad = -1
        if pad_length is not None:
            if not isinstance(pad_length, int):
                raise TypeError("pad_length must be an int")
            if pad_length < 0 or pad_length > 255:
                raise ValueError("pad_length must be within range: [0, 255]")
            pad = pad_length
            size += pad + 1
        if size > 0 and size > self.local_flow_control_window(stream_id):
            raise FlowControlError(f"Cannot send {size} bytes, flow control window is "
                                   f"{self.local_flow_control_window(stream_id)}")
        if size > self.max_outbound_frame_size:
            raise FrameTooLargeError(f"Cannot send frame size {size}, max frame size is "
                                     f"{self.max_outbound_frame_size}")
        self._input(I_SEND_DATA)
        cdef _Stream s = <_Stream>self.streams[stream_id]
        if s.state == S_CLOSED:
            raise StreamClosedError(stream_id)
        if s.state != S_OPEN and s.state != S_HALF_CLOSED_REMOTE:
            self._close(s)
            raise ProtocolError(f"Invalid input: data in stream state {s.state}")
        if end_stream:
            if s.state == S_OPEN:
                s.state = S_HALF_CLOSED_LOCAL
            else:
                self._close(s)
                s.closed_by = BY_SEND_END
        cdef bytes body = data if type(data) is bytes else bytes(data)
        cdef int flags = F_END_STREAM if end_stream else 0
        cdef Py_ssize_t at
        cdef unsigned char *q
        if pad < 0:
            _put_frame(self.out, size, T_DATA, flags, <uint32_t>stream_id, PyBytes_AS_STRING(body),
                   PyBytes_GET_SIZE(body))
        else:
            at = PyByteArray_GET_SIZE(self.out)
            _put_frame(self.out, size, T_DATA, flags | F_PADDED, <uint32_t>stream_id, NULL, 0)
            PyByteArray_Resize(self.out, at + 9 + size)
            q = <unsigned char *>PyByteArray_AS_STRING(self.out) + at + 9
            q[0] = <unsigned char>pad
            memcpy(q + 1, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
            for i in range(pad):
                q[1 + PyBytes_GET_SIZE(body) + i] = 0
        s.out_window -= size
        self.outbound_flow_control_window -= size

    def end_stream(self, int64_t stream_id):
        self._input(I_SEND_DATA)
        cdef _Stream s = self._stream(stream_id)
        if s.state == S_OPEN:
            s.state = S_HALF_CLOSED_LOCAL
        elif s.state == S_HALF_CLOSED_REMOTE:
            self._close(s)
            s.closed_by = BY_SEND_END
        elif s.state == S_CLOSED:
            raise StreamClosedError(stream_id)
        else:
            self._close(s)
            raise ProtocolError(f"Invalid input: END_STREAM in stream state {s.state}")
        _put_frame(self.out, 0, T_DATA, F_END_STREAM, <uint32_t>stream_id, NULL, 0)

    def reset_stream(self, int64_t stream_id, error_code=0):
        self._input(I_SEND_RST)
        cdef _Stream s = self._stream(stream_id)
        if s.state == S_CLOSED:
            raise StreamClosedError(stream_id)
        self._close(s)
        s.closed_by = BY_SEND_RST
        _u32_frame(self.out, T_RST_STREAM, <uint32_t>stream_id, <uint32_t>int(error_code))

    def acknowledge_received_data(self, int64_t acknowledged_size, int64_t stream_id):
        if stream_id <= 0:
            raise ValueError(f"Stream ID {stream_id} is not valid for acknowledge_received_data")
        if acknowledged_size < 0:
            raise ValueError("Cannot acknowledge negative data")
        cdef int64_t conn = _process_bytes(&self.in_max, &self.in_current, &self.in_processed,
                                           acknowledged_size)
        cdef int64_t own = 0
        cdef _Stream s = None
        try:
            s = self._stream(stream_id)
        except StreamClosedError:
            pass
        if s is not None and _is_open(s.state):
            own = _process_bytes(&s.in_max, &s.in_current, &s.in_processed, acknowledged_size)
        if conn:
            _u32_frame(self.out, T_WINDOW_UPDATE, 0, <uint32_t>conn)
        if own:
            _u32_frame(self.out, T_WINDOW_UPDATE, <uint32_t>stream_id, <uint32_t>own)

    def ping(self, opaque_data):
        if not isinstance(opaque_data, bytes) or len(opaque_data) != 8:
            raise ValueError(f"Invalid value for ping data: {opaque_data!r}")
        self._input(I_SEND_CONTROL)
        _put_frame(self.out, 8, T_PING, 0, 0, PyBytes_AS_STRING(opaque_data), 8)


