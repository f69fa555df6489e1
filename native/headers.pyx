# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Native twin of the byte loops in gateway.headers (a leaf module: imports nothing from gateway).

How this works: every function sizes its output exactly in a first pass, allocates the result once
with PyBytes_FromStringAndSize(NULL, n), and fills it in a second pass. Byte classes come from
256-entry tables; no Python object is created per byte. encode_request_head classifies each header
name against tables of folded names and prefixes (length first, then a compare through NAME_FOLD,
which lower-cases and maps every byte that is not a letter or digit to `-`: the broadest way
backends compare names, CGI/WSGI's `_` for `-` included), so only a Connection header naming extra
fields, or a listener with `strip_request_headers` globs, costs a Python call per kept header.
Every table the pure twin also has (the names and prefixes, the percent-encoders' safe bytes,
fold_name's table, the bytes of a standard name) is handed in by gateway.headers at load (`bind`),
so the twins hold one copy of each; the functions that read them refuse to run before it.
gateway/headers.py holds the pure twins and the description of every format; the unit suite proves
the two byte-identical.
"""
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                             PyBytes_GET_SIZE)
from cpython.conversion cimport PyOS_snprintf
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcpy

cdef unsigned char ALB_SAFE[256]        # 1 for each byte of gateway.headers._ALB_SAFE (bind)
cdef unsigned char ENVOY_SAFE[256]      # ... of gateway.headers._ENVOY_SAFE (bind)
cdef unsigned char NAME_FOLD[256]       # gateway.headers._FOLD_TABLE, fold_name's (bind)
cdef unsigned char NONSTANDARD[256]     # 0 for each byte of _STANDARD_NAME_BYTES, else 1 (bind)
cdef unsigned char LOWER[256]
cdef unsigned char LINE_BREAKING[256]   # CR, LF, NUL: never copied into a header line
cdef const char *HEX = b"0123456789ABCDEF"
cdef const char *B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# Handed in by gateway.headers at load (`bind`): the folded names encode_request_head drops, the
# prefixes it drops, the one it folds, and the byte sets the tables below are built from. Empty
# until then; every function refuses to run before it.
DROPPED_NAMES = ()
DROPPED_PREFIXES = ()
FOLDED_NAME = b""
ALB_SAFE_BYTES = b""
ENVOY_SAFE_BYTES = b""
FOLD_TABLE = b""
STANDARD_NAME_BYTES = b""
cdef bint _bound = False

cdef enum:
    MAX_NAMES = 64
    MAX_PREFIXES = 32

cdef const char *NAME_PTR[MAX_NAMES]
cdef Py_ssize_t NAME_LEN[MAX_NAMES]
cdef unsigned char NAME_KIND[MAX_NAMES]
cdef int NAME_COUNT = 0
cdef tuple _NAME_KEEPALIVE = ()     # the bytes objects NAME_PTR and PREFIX_PTR point into
cdef const char *PREFIX_PTR[MAX_PREFIXES]
cdef Py_ssize_t PREFIX_LEN[MAX_PREFIXES]
cdef int PREFIX_COUNT = 0

cdef enum:
    KEEP = 0
    DROP = 1
    FOLD = 2


cdef void _set_safe(unsigned char *table, bytes chars):
    cdef Py_ssize_t i
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(chars)
    for i in range(256):
        table[i] = 0
    for i in range(PyBytes_GET_SIZE(chars)):
        table[p[i]] = 1


def bind(*, dropped_names, dropped_prefixes, bytes folded_name not None, bytes alb_safe not None,
         bytes envoy_safe not None, bytes fold_table not None, bytes standard_name_bytes not None):
    """Take gateway.headers' tables: DROPPED_NAMES and DROPPED_PREFIXES (folded), the folded
    X-Forwarded-For, the bytes ALB's and Envoy's percent-encoding keep, fold_name's 256-byte
    translation table, and the bytes a standard header name is made of."""
    global NAME_COUNT, PREFIX_COUNT, _NAME_KEEPALIVE, _bound
    global DROPPED_NAMES, DROPPED_PREFIXES, FOLDED_NAME, ALB_SAFE_BYTES, ENVOY_SAFE_BYTES
    global FOLD_TABLE, STANDARD_NAME_BYTES
    cdef int i
    names = tuple(sorted(bytes(n) for n in dropped_names))
    prefixes = tuple(sorted(bytes(n) for n in dropped_prefixes))
    if len(names) + 1 > MAX_NAMES or len(prefixes) > MAX_PREFIXES:
        raise ValueError("header name tables exceed MAX_NAMES / MAX_PREFIXES")
    if len(fold_table) != 256:
        raise ValueError("fold_table must have 256 bytes")
    _bound = False
    _set_safe(ALB_SAFE, alb_safe)
    _set_safe(ENVOY_SAFE, envoy_safe)
    _set_safe(NONSTANDARD, standard_name_bytes)
    for i in range(256):
        NONSTANDARD[i] = 1 - NONSTANDARD[i]
        NAME_FOLD[i] = <unsigned char>fold_table[i]
    _NAME_KEEPALIVE = names + (folded_name,) + prefixes
    NAME_COUNT = 0
    PREFIX_COUNT = 0
    for name in prefixes:
        PREFIX_PTR[PREFIX_COUNT] = PyBytes_AS_STRING(name)
        PREFIX_LEN[PREFIX_COUNT] = PyBytes_GET_SIZE(name)
        PREFIX_COUNT += 1
    for name in names + (folded_name,):
        NAME_PTR[NAME_COUNT] = PyBytes_AS_STRING(name)
        NAME_LEN[NAME_COUNT] = PyBytes_GET_SIZE(name)
        NAME_KIND[NAME_COUNT] = FOLD if name is folded_name else DROP
        NAME_COUNT += 1
    DROPPED_NAMES, DROPPED_PREFIXES, FOLDED_NAME = names, prefixes, folded_name
    ALB_SAFE_BYTES, ENVOY_SAFE_BYTES = alb_safe, envoy_safe
    FOLD_TABLE, STANDARD_NAME_BYTES = fold_table, standard_name_bytes
    _bound = True


cdef void _init_tables() noexcept:
    cdef int i
    for i in range(256):
        LOWER[i] = <unsigned char>(i + 32 if 65 <= i <= 90 else i)
        LINE_BREAKING[i] = 1 if i == 13 or i == 10 or i == 0 else 0


_init_tables()


cdef inline int _check_bound() except -1:
    if not _bound:
        raise RuntimeError("gateway._headers_c: bind() was not called (gateway.headers does it)")
    return 0


cdef inline unsigned char _classify(const unsigned char *p, Py_ssize_t n, bint underscore) noexcept:
    """KEEP, DROP or FOLD for a header name, compared through NAME_FOLD (case and '_' vs '-' ignored).

    Only the exact spelling of X-Forwarded-For (no '_') is folded into the gateway's own;
    X_Forwarded_For is dropped like every other managed name in another spelling.
    """
    cdef int i
    cdef Py_ssize_t j, m
    cdef const unsigned char *q
    for i in range(NAME_COUNT):
        if NAME_LEN[i] != n:
            continue
        q = <const unsigned char *>NAME_PTR[i]
        j = 0
        while j < n and NAME_FOLD[p[j]] == q[j]:
            j += 1
        if j == n:
            if NAME_KIND[i] == FOLD and underscore:
                return DROP
            return NAME_KIND[i]
    for i in range(PREFIX_COUNT):
        m = PREFIX_LEN[i]
        if m > n:
            continue
        q = <const unsigned char *>PREFIX_PTR[i]
        j = 0
        while j < m and NAME_FOLD[p[j]] == q[j]:
            j += 1
        if j == m:
            return DROP
    return KEEP


cdef bytes _folded(const unsigned char *p, Py_ssize_t n):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = NAME_FOLD[p[i]]
    return out


cdef object _token_filter(connection_tokens):
    """The Connection options, folded, that can still name a kept header (managed ones cannot)."""
    cdef bytes f
    kept = []
    for t in connection_tokens:
        if not PyBytes_CheckExact(t):
            t = bytes(t)
        f = _folded(<const unsigned char *>PyBytes_AS_STRING(t), PyBytes_GET_SIZE(t))
        if _classify(<const unsigned char *>PyBytes_AS_STRING(f), PyBytes_GET_SIZE(f), False) == KEEP:
            kept.append(f)
    return frozenset(kept) if kept else None


cdef inline bint _breaks_line(const unsigned char *p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if LINE_BREAKING[p[i]]:
            return True
    return False


cdef bytes _quote(bytes data, const unsigned char *safe):
    cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i, run = 0, unsafe = 0
    cdef unsigned char c
    for i in range(n):                   # branch-free count of the bytes to escape
        unsafe += 1 - safe[src[i]]
    if unsafe == 0:
        return data
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + 2 * unsafe)
    cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
    for i in range(n):                   # copy runs of safe bytes whole; PEM lines are 64 long
        c = src[i]
        if not safe[c]:
            if i > run:
                memcpy(dst, src + run, i - run)
                dst += i - run
            dst[0] = 37                  # '%'
            dst[1] = HEX[c >> 4]
            dst[2] = HEX[c & 15]
            dst += 3
            run = i + 1
    if n > run:
        memcpy(dst, src + run, n - run)
    return out


def quote_pem_alb(bytes pem not None):
    """ALB's rule: urllib.parse.quote(pem, safe="+=/") as bytes."""
    _check_bound()
    return _quote(pem, ALB_SAFE)


def quote_pem_envoy(bytes pem not None):
    """Envoy's PercentEncoding::urlEncode: keep ALPHA / DIGIT / *-._, %XX the rest."""
    _check_bound()
    return _quote(pem, ENVOY_SAFE)


def sf_binary(bytes der not None):
    """RFC 8941 byte sequence: b":" + base64 (padded) + b":"."""
    cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(der)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(der)
    cdef Py_ssize_t full = n // 3, rest = n - full * 3, i
    cdef Py_ssize_t size = 2 + (full + (1 if rest else 0)) * 4
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
    cdef unsigned int v
    dst[0] = 58              # ':'
    dst += 1
    for i in range(full):
        v = (<unsigned int>src[0] << 16) | (<unsigned int>src[1] << 8) | src[2]
        dst[0] = B64[(v >> 18) & 63]
        dst[1] = B64[(v >> 12) & 63]
        dst[2] = B64[(v >> 6) & 63]
        dst[3] = B64[v & 63]
        src += 3
        dst += 4
    if rest == 1:
        v = <unsigned int>src[0] << 16
        dst[0] = B64[(v >> 18) & 63]
        dst[1] = B64[(v >> 12) & 63]
        dst[2] = 61          # '='
        dst[3] = 61
        dst += 4
    elif rest == 2:
        v = (<unsigned int>src[0] << 16) | (<unsigned int>src[1] << 8)
        dst[0] = B64[(v >> 18) & 63]
        dst[1] = B64[(v >> 12) & 63]
        dst[2] = B64[(v >> 6) & 63]
        dst[3] = 61
        dst += 4
    dst[0] = 58
    return out


cdef inline bint _nonstandard(const unsigned char *p, Py_ssize_t n) noexcept:
    """Whether a name has a byte other than a letter, a digit or '-' ('_' above all)."""
    cdef Py_ssize_t i
    for i in range(n):
        if NONSTANDARD[p[i]]:
            return True
    return False


def first_nonstandard(headers):
    """Index of the first header whose name has a byte other than A-Z a-z 0-9 '-' (such as '_'),
    or -1; allocates nothing.

    screen_request's fast path: almost no request has such a name.
    """
    _check_bound()
    cdef object seq = PySequence_Fast(headers, "headers must be a sequence of (name, value)")
    cdef Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq)
    cdef object item
    cdef object name
    for i in range(n):
        item = <object>PySequence_Fast_GET_ITEM(seq, i)
        if PyTuple_CheckExact(item) and PyTuple_GET_SIZE(item) == 2:
            name = <object>PyTuple_GET_ITEM(item, 0)
        else:
            name, _value = item
        if not PyBytes_CheckExact(name):
            raise TypeError("header names and values must be bytes")
        if _nonstandard(<const unsigned char *>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)):
            return i
    return -1


cdef inline unsigned char *_put(unsigned char *dst, const char *src, Py_ssize_t n) noexcept:
    memcpy(dst, src, n)
    return dst + n


cdef inline void _strip_ows(const unsigned char *p, Py_ssize_t n, Py_ssize_t *start,
                            Py_ssize_t *end) noexcept:
    cdef Py_ssize_t a = 0, b = n
    while a < b and (p[a] == 32 or p[a] == 9):
        a += 1
    while b > a and (p[b - 1] == 32 or p[b - 1] == 9):
        b -= 1
    start[0] = a
    end[0] = b


def encode_request_head(bytes method not None, bytes target not None, headers,
                        bytes identity_lines not None, bytes client_ip not None,
                        long long client_port, long long listener_port,
                        connection_tokens=frozenset(), bytes framing not None=b"", policy=None):
    """Same contract as gateway.headers.encode_request_head, byte for byte.

    `policy` is a gateway.headers.HeaderPolicy (None: its defaults); two attributes are read per
    call, `keep_underscore` and `match` (None, or the compiled matcher of the strip globs).
    """
    cdef object seq = PySequence_Fast(headers, "headers must be a sequence of (name, value)")
    cdef Py_ssize_t count = PySequence_Fast_GET_SIZE(seq)
    cdef Py_ssize_t i, nl, vl, a, b, size, xff_len = 0, xff_parts = 0
    cdef object item
    cdef object name
    cdef object value
    cdef const unsigned char *np
    cdef const unsigned char *vp
    cdef unsigned char kind
    cdef unsigned char small[64]
    cdef unsigned char *kinds = small
    cdef object tokens = None
    cdef char port_digits[32]
    cdef int port_len
    cdef bytes out
    cdef unsigned char *dst
    cdef bint first, underscore
    cdef bint keep_underscore = False
    cdef object match = None

    _check_bound()
    if policy is not None:
        keep_underscore = policy.keep_underscore
        match = policy.match
    if connection_tokens:
        tokens = _token_filter(connection_tokens)
    if count > 64:
        kinds = <unsigned char *>malloc(count)
        if kinds == NULL:
            raise MemoryError()
    try:
        # Pass 1: classify every header and size the result exactly.
        size = 0
        for i in range(count):
            item = <object>PySequence_Fast_GET_ITEM(seq, i)
            if not PyTuple_CheckExact(item) or PyTuple_GET_SIZE(item) != 2:
                name, value = item
            else:
                name = <object>PyTuple_GET_ITEM(item, 0)
                value = <object>PyTuple_GET_ITEM(item, 1)
            if not PyBytes_CheckExact(name) or not PyBytes_CheckExact(value):
                raise TypeError("header names and values must be bytes")
            np = <const unsigned char *>PyBytes_AS_STRING(name)
            nl = PyBytes_GET_SIZE(name)
            vp = <const unsigned char *>PyBytes_AS_STRING(value)
            vl = PyBytes_GET_SIZE(value)
            underscore = _nonstandard(np, nl)
            kind = _classify(np, nl, underscore)
            if kind == KEEP:
                if underscore and not keep_underscore:
                    kind = DROP
                elif match is not None and match(name) is not None:
                    kind = DROP
                elif tokens is not None and _folded(np, nl) in tokens:
                    kind = DROP
            if kind != DROP and (nl == 0 or _breaks_line(np, nl) or _breaks_line(vp, vl)):
                kind = DROP
            if kind == FOLD:
                _strip_ows(vp, vl, &a, &b)
                if b > a:
                    xff_len += (b - a) + (2 if xff_parts else 0)
                    xff_parts += 1
                else:
                    kind = DROP
            elif kind == KEEP:
                size += nl + 2 + vl + 2
            kinds[i] = kind

        if PyBytes_GET_SIZE(client_ip):
            xff_len += PyBytes_GET_SIZE(client_ip) + (2 if xff_parts else 0)
            xff_parts += 1
        port_len = PyOS_snprintf(port_digits, sizeof(port_digits), "%lld", listener_port)

        size += PyBytes_GET_SIZE(method) + 1 + PyBytes_GET_SIZE(target) + 11
        if xff_parts:
            size += 17 + xff_len + 2                    # X-Forwarded-For: ...\r\n
        size += 26 + 18 + port_len + 2                  # Proto and Port lines
        size += PyBytes_GET_SIZE(identity_lines) + PyBytes_GET_SIZE(framing) + 2

        # Pass 2: fill.
        out = PyBytes_FromStringAndSize(NULL, size)
        dst = <unsigned char *>PyBytes_AS_STRING(out)
        dst = _put(dst, PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method))
        dst[0] = 32
        dst += 1
        dst = _put(dst, PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target))
        dst = _put(dst, b" HTTP/1.1\r\n", 11)
        for i in range(count):
            if kinds[i] != KEEP:
                continue
            item = <object>PySequence_Fast_GET_ITEM(seq, i)
            if PyTuple_CheckExact(item) and PyTuple_GET_SIZE(item) == 2:
                name = <object>PyTuple_GET_ITEM(item, 0)
                value = <object>PyTuple_GET_ITEM(item, 1)
            else:
                name, value = item
            dst = _put(dst, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
            dst = _put(dst, b": ", 2)
            dst = _put(dst, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
            dst = _put(dst, b"\r\n", 2)
        if xff_parts:
            dst = _put(dst, b"X-Forwarded-For: ", 17)
            first = True
            for i in range(count):
                if kinds[i] != FOLD:
                    continue
                item = <object>PySequence_Fast_GET_ITEM(seq, i)
                value = item[1]
                vp = <const unsigned char *>PyBytes_AS_STRING(value)
                _strip_ows(vp, PyBytes_GET_SIZE(value), &a, &b)
                if not first:
                    dst = _put(dst, b", ", 2)
                dst = _put(dst, <const char *>vp + a, b - a)
                first = False
            if PyBytes_GET_SIZE(client_ip):
                if not first:
                    dst = _put(dst, b", ", 2)
                dst = _put(dst, PyBytes_AS_STRING(client_ip), PyBytes_GET_SIZE(client_ip))
            dst = _put(dst, b"\r\n", 2)
        dst = _put(dst, b"X-Forwarded-Proto: https\r\n", 26)
        dst = _put(dst, b"X-Forwarded-Port: ", 18)
        dst = _put(dst, port_digits, port_len)
        dst = _put(dst, b"\r\n", 2)
        dst = _put(dst, PyBytes_AS_STRING(identity_lines), PyBytes_GET_SIZE(identity_lines))
        dst = _put(dst, PyBytes_AS_STRING(framing), PyBytes_GET_SIZE(framing))
        dst = _put(dst, b"\r\n", 2)
        return out
    finally:
        if kinds != small:
            free(kinds)


cdef inline tuple _pair(object item):
    """A (name, value) pair of bytes, as the pure twin reads it (the item itself when it is one)."""
    cdef tuple t
    if PyTuple_CheckExact(item) and PyTuple_GET_SIZE(item) == 2:
        t = <tuple>item
    else:
        name, value = item
        t = (name, value)
    if not PyBytes_CheckExact(t[0]) or not PyBytes_CheckExact(t[1]):
        raise TypeError("header names and values must be bytes")
    return t


def encode_response_head(bytes line not None, headers, drop, extra):
    """Same contract as gateway.headers.encode_response_head, byte for byte: `line`, the target's
    fields whose lowercased names are not in `drop`, then `extra`, then the empty line;
    ValueError when the head would not have exactly one CR and one LF per line.

    Only a name whose length is that of some name in `drop` is lowercased and looked up (a
    bitmask of the lengths, taken once per call), so most fields cost no Python object."""
    cdef object seq = PySequence_Fast(headers, "headers must be a sequence of (name, value)")
    cdef object more = PySequence_Fast(extra, "extra must be a sequence of (name, value)")
    cdef Py_ssize_t count = PySequence_Fast_GET_SIZE(seq), extras = PySequence_Fast_GET_SIZE(more)
    cdef Py_ssize_t i, j, n, size, kept = 0, crs = 0, lfs = 0
    cdef unsigned long long lengths = 0
    cdef bint long_names = False
    cdef unsigned char small[64]
    cdef unsigned char *keep = small
    cdef const unsigned char *src
    cdef unsigned char *dst
    cdef unsigned char c
    cdef tuple pair
    cdef bytes name, value, lowered, out
    for d in drop:
        n = len(d)
        if n < 64:
            lengths |= 1ULL << n
        else:
            long_names = True
    if count > 64:
        keep = <unsigned char *>malloc(count)
        if keep == NULL:
            raise MemoryError()
    try:
        size = PyBytes_GET_SIZE(line) + 2
        for i in range(count):
            pair = _pair(<object>PySequence_Fast_GET_ITEM(seq, i))
            name = pair[0]
            value = pair[1]
            n = PyBytes_GET_SIZE(name)
            keep[i] = 1
            if (lengths >> n) & 1 if n < 64 else long_names:
                lowered = PyBytes_FromStringAndSize(NULL, n)
                src = <const unsigned char *>PyBytes_AS_STRING(name)
                dst = <unsigned char *>PyBytes_AS_STRING(lowered)
                for j in range(n):
                    dst[j] = LOWER[src[j]]
                if lowered in drop:
                    keep[i] = 0
                    continue
            size += n + PyBytes_GET_SIZE(value) + 4
            kept += 1
        for i in range(extras):
            pair = _pair(<object>PySequence_Fast_GET_ITEM(more, i))
            size += PyBytes_GET_SIZE(<bytes>pair[0]) + PyBytes_GET_SIZE(<bytes>pair[1]) + 4
            kept += 1
        out = PyBytes_FromStringAndSize(NULL, size)
        dst = <unsigned char *>PyBytes_AS_STRING(out)
        n = PyBytes_GET_SIZE(line)
        memcpy(dst, PyBytes_AS_STRING(line), n)
        dst += n
        for i in range(count + extras):
            if i < count:
                if not keep[i]:
                    continue
                pair = _pair(<object>PySequence_Fast_GET_ITEM(seq, i))
            else:
                pair = _pair(<object>PySequence_Fast_GET_ITEM(more, i - count))
            name = pair[0]
            value = pair[1]
            n = PyBytes_GET_SIZE(name)
            memcpy(dst, PyBytes_AS_STRING(name), n)
            dst += n
            dst[0] = 58
            dst[1] = 32
            dst += 2
            n = PyBytes_GET_SIZE(value)
            memcpy(dst, PyBytes_AS_STRING(value), n)
            dst += n
            dst[0] = 13
            dst[1] = 10
            dst += 2
        dst[0] = 13
        dst[1] = 10
    finally:
        if keep != small:
            free(keep)
    # no CR or LF but the line ends' (the pure twin counts both in the whole head)
    src = <const unsigned char *>PyBytes_AS_STRING(out)
    for i in range(size):
        c = src[i]
        if c == 13:
            crs += 1
        elif c == 10:
            lfs += 1
    if crs != kept + 2 or lfs != kept + 2:
        raise ValueError("CR or LF inside a header name or value")
    return out
