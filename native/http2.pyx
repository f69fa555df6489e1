# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Native twins for HTTP/2: the `hpack` library's Encoder and Decoder as the `h2` library drives
them, and gateway.http2.request_of (a leaf module: imports nothing from gateway; what request_of
builds and raises is handed in by gateway.http2 at load, `init`).

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

`request_of` is the pure one's checks in its order, each field's bytes read once in C (the
CR/LF/NUL scan, the surrounding blanks, a leading colon, upper case), the rare fields (cookie, host,
content-length, te) by the same bytes methods the pure one calls; it builds the same
http1.Request and raises the same H2Refused with the same reason and message. A field that is not
a pair of bytes goes to the pure function. tests/unit/test_http2_request_native.py holds the two
equal on generated and mutated header lists.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc

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
        cdef bytes block = bytes(data)
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
                header = HeaderTuple(entry[0], entry[1])
            elif first & 0x40:
                used, header = self._literal(p + at, n - at, True)
            elif first & 0x20:
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                used = _get_integer(p + at, n - at, 5, &number)
                if number > <uint64_t>self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.table.set_maxsize(number)
                header = None
            else:
                used, header = self._literal(p + at, n - at, False)
            if header is not None:
                headers.append(header)
                inflated += 32 + PyBytes_GET_SIZE(header[0]) + PyBytes_GET_SIZE(header[1])
                if inflated > limit:
                    raise OversizedHeaderListError(
                        f"A header list larger than {self.max_header_list_size} has been received")
            at += used
        if self.table.maxsize > self.max_allowed_table_size:
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        if raw:
            return headers
        try:
            return [h.__class__(h[0].decode("utf-8"), h[1].decode("utf-8")) for h in headers]
        except UnicodeDecodeError as err:
            raise HPACKDecodingError("Unable to decode headers as UTF-8") from err

    cdef tuple _literal(self, const unsigned char *p, Py_ssize_t n, bint index):
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


def init(*, request, refused, connection_specific, pure, host_re, tchars):
    """gateway.http2 hands in what request_of builds and raises, itself for odd input, and the
    HTTP/1.1 reader's Host pattern and token bytes."""
    global Request, H2Refused, CONNECTION_SPECIFIC, _pure_request_of, _request_ready, _host_fullmatch
    cdef int c
    Request, H2Refused, _pure_request_of = request, refused, pure
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
    return Request(method, path, b"2", fields, True, content_length,
                   content_length is None and not ended, False, None,
                   authority if authority is not None else host, _EMPTY)

