# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Native twins of gateway.http1.RequestReader and ResponseReader (a leaf module: imports nothing
from gateway).

How this works. The pure reader hands bytes to llhttp (strict mode) in slices cut at message and
limit boundaries, and adds its own checks when a head ends. This twin keeps the slicing, the limits
and the checks exactly as the pure reader has them, and replaces llhttp with a byte-at-a-time state
machine written here: one state per llhttp node that can see a byte, with the same edges, so every
refusal happens at the same byte, with the same llhttp reason string, and so maps to the same reason
code. Bytes of a head are copied into one growable buffer; the machine records where the target and
each field's name and value lie in it, and at the end of the head the only Python objects made are
the Request, the target, and one (name, value) tuple (with its two bytes) per field. Body bytes are
sliced straight from the caller's bytes, one Data per message per `feed`, as the pure reader does.
Everything the events and refusals are made of (the event classes, the error class, llhttp's
reason table and the refinements that read a refused head) is handed in by gateway.http1 at load
(`init`), so both twins build equal objects; so is every table the pure reader has too (its state
graph, the bytes of a token and of a Host), and the fields it acts on are checked against this
build's, so the twins hold one copy of each. The byte classes that are llhttp's own (URL, header
value, hex digits) are built here: the pure reader has them only inside llhttp. The grammar is
RFC 9112 (2-7) as llhttp applies it; the comments name the llhttp node each state stands for.

ResponseReader (the upstream side) is the same machine with a response's status line (llhttp's
res_* nodes), the two places where llhttp reads a response's fields differently (codings after
chunked), llhttp's view of a response's end (1xx, 204, 304, a close-delimited body) and the pure
ResponseReader's own rules at the end of a head (HEAD, interim responses dropped, 101 only when
asked, with its Upgrade fields). tests/unit/test_http1_response_native.py holds it to the pure one.
"""
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                             PyBytes_GET_SIZE)
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy

include "slots.pxi"

# --- handed in by gateway.http1 -----------------------------------------------------------------

cdef object Request = None
cdef object Data = None
cdef object END_OF_MESSAGE = None
cdef object HTTPProtocolError = None
cdef object _tokens = None
cdef dict LLHTTP_ERRORS = {}
cdef dict REFINE = {}
cdef object NO_TOKENS = None
cdef object DEFAULT_LIMITS = None
cdef Py_ssize_t MAX_CHUNK_LINE = 4096
cdef bint _ready = False
cdef Py_ssize_t REQUEST_AT[11]         # each Request field's slot offset, in field order
cdef Py_ssize_t DATA_AT = 0
cdef object Response = None
cdef object UpstreamError = None
cdef dict REFINE_RESPONSE = {}
cdef Py_ssize_t RESPONSE_AT[8]         # each Response field's slot offset, in field order
cdef bint RESPONSE_PLAIN = False
cdef Py_ssize_t DEFAULT_RESPONSE_BYTES = 65536
cdef Py_ssize_t DEFAULT_RESPONSE_COUNT = 200
cdef object _deque = None
cdef object object_new = object.__new__
cdef bint REQUEST_PLAIN = False         # Request and Data made by new_instance (slots.pxi)


def init(*, request, data, end_of_message, error, tokens, llhttp_errors, refinements, no_tokens,
         max_chunk_line, default_limits, request_fields, data_field, transitions, special_fields,
         bytes tchars not None, bytes host_name_bytes not None, bytes host_literal_bytes not None,
         response=None, response_fields=(), upstream_error=None, response_refinements=None,
         default_response_limits=(65536, 200)):
    """Called once by gateway.http1: the event and error classes and the tables both twins share.
    `request_fields`: the Request's field names in order (its events are built slot by slot,
    as `object.__setattr__` would leave them, not through the frozen dataclass's __init__: a sixth
    of the cost; slots.pxi). `response` and the names after it: the same for ResponseReader (the
    upstream side), which refuses with `upstream_error` (status 502, reason "upstream_...").
    `transitions`: the pure reader's state graph, {state name: successor names}, over the names of
    STATES (this build's reader states); `special_fields`: its {lowercased name: field number},
    checked against SPECIAL_FIELDS (the numbers this build acts on); `tchars`, `host_name_bytes`,
    `host_literal_bytes`: the bytes of a token, and of a Host's reg-name and IP-literal."""
    global Request, Data, END_OF_MESSAGE, HTTPProtocolError, _tokens, LLHTTP_ERRORS, REFINE
    global NO_TOKENS, MAX_CHUNK_LINE, DEFAULT_LIMITS, _ready, DATA_AT, REQUEST_PLAIN
    global TRANSITIONS, TCHARS, HOST_NAME_BYTES, HOST_LITERAL_BYTES
    if len(request_fields) != 11:
        raise AttributeError(f"Request has {len(request_fields)} fields, this build knows 11")
    if dict(special_fields) != SPECIAL_FIELDS:
        raise AttributeError(f"gateway._http1_c acts on the fields {SPECIAL_FIELDS}, not "
                             f"{dict(special_fields)}: a stale build")
    cdef Py_ssize_t i
    cdef int successors[6]
    graph = {k: tuple(v) for k, v in dict(transitions).items()}
    if set(graph) != set(STATES) or not all(set(v) <= set(STATES) for v in graph.values()):
        raise AttributeError(f"gateway._http1_c knows the reader states {STATES}, not "
                             f"{tuple(graph)}: a stale build")
    for i in range(6):
        successors[i] = 0
        for name in graph[STATES[i]]:
            successors[i] |= 1 << STATES.index(name)
    _ready = False
    for i in range(6):
        SUCCESSORS[i] = successors[i]
    _set_table(TOKEN, tchars)
    _set_table(HOST_REG, host_name_bytes)
    _set_table(HOST_LIT, host_literal_bytes)
    TRANSITIONS, TCHARS = graph, tchars
    HOST_NAME_BYTES, HOST_LITERAL_BYTES = host_name_bytes, host_literal_bytes
    for i in range(11):
        REQUEST_AT[i] = _slot_offset(request, request_fields[i])
    DATA_AT = _slot_offset(data, data_field)
    REQUEST_PLAIN = plain_alloc(request) and plain_alloc(data)
    global Response, UpstreamError, REFINE_RESPONSE, RESPONSE_PLAIN, _deque
    global DEFAULT_RESPONSE_BYTES, DEFAULT_RESPONSE_COUNT
    if response is not None:
        if len(response_fields) != 8:
            raise AttributeError(f"Response has {len(response_fields)} fields, this build knows 8")
        for i in range(8):
            RESPONSE_AT[i] = _slot_offset(response, response_fields[i])
        RESPONSE_PLAIN = plain_alloc(response)
        Response = response
        UpstreamError = upstream_error
        REFINE_RESPONSE = dict(response_refinements or {})
        DEFAULT_RESPONSE_BYTES, DEFAULT_RESPONSE_COUNT = default_response_limits
        from collections import deque
        _deque = deque
    Request = request
    Data = data
    END_OF_MESSAGE = end_of_message
    HTTPProtocolError = error
    _tokens = tokens
    LLHTTP_ERRORS = dict(llhttp_errors)
    REFINE = dict(refinements)
    NO_TOKENS = no_tokens
    MAX_CHUNK_LINE = max_chunk_line
    DEFAULT_LIMITS = default_limits
    _ready = True


cdef object _request_event(method, target, version, headers, keep_alive, length, chunked,
                           expect_continue, upgrade, host, tokens):
    """Request(...), built as its frozen dataclass's __init__ would leave it."""
    obj = new_instance(Request) if REQUEST_PLAIN else object_new(Request)
    slot_set(obj, REQUEST_AT[0], method)
    slot_set(obj, REQUEST_AT[1], target)
    slot_set(obj, REQUEST_AT[2], version)
    slot_set(obj, REQUEST_AT[3], headers)
    slot_set(obj, REQUEST_AT[4], keep_alive)
    slot_set(obj, REQUEST_AT[5], length)
    slot_set(obj, REQUEST_AT[6], chunked)
    slot_set(obj, REQUEST_AT[7], expect_continue)
    slot_set(obj, REQUEST_AT[8], upgrade)
    slot_set(obj, REQUEST_AT[9], host)
    slot_set(obj, REQUEST_AT[10], tokens)
    return obj


cdef object _response_event(status, reason, version, headers, keep_alive, length, chunked, tokens):
    """Response(...), built as its frozen dataclass's __init__ would leave it."""
    obj = new_instance(Response) if RESPONSE_PLAIN else object_new(Response)
    slot_set(obj, RESPONSE_AT[0], status)
    slot_set(obj, RESPONSE_AT[1], reason)
    slot_set(obj, RESPONSE_AT[2], version)
    slot_set(obj, RESPONSE_AT[3], headers)
    slot_set(obj, RESPONSE_AT[4], keep_alive)
    slot_set(obj, RESPONSE_AT[5], length)
    slot_set(obj, RESPONSE_AT[6], chunked)
    slot_set(obj, RESPONSE_AT[7], tokens)
    return obj


cdef object _data_event(bytes data):
    obj = new_instance(Data) if REQUEST_PLAIN else object_new(Data)
    slot_set(obj, DATA_AT, data)
    return obj


# --- byte classes (llhttp constants.ts) ------------------------------------------------------------

cdef unsigned char TOKEN[256]          # RFC 9110 5.6.2 tchar: gateway.http1._TCHARS (init)
cdef unsigned char URL_CHAR[256]       # llhttp's strict URL_CHAR
cdef unsigned char USERINFO[256]       # llhttp's USERINFO_CHARS
cdef unsigned char ALPHA[256]
cdef unsigned char HEADER_CHAR[256]    # HTAB / SP / VCHAR / obs-text (RFC 9110 5.5)
cdef unsigned char CONN_TOKEN[256]     # HEADER_CHAR without ','
cdef unsigned char QDTEXT[256]
cdef unsigned char HEXVAL[256]         # 0-15, 255 for not a hex digit
cdef unsigned char LOWER[256]
cdef unsigned char HOST_REG[256]       # gateway.http1._HOST_NAME_BYTES, _HOST_RE's reg-name (init)
cdef unsigned char HOST_LIT[256]       # gateway.http1._HOST_LITERAL_BYTES, inside [ ] (init)
TCHARS = b""                           # what init took for them
HOST_NAME_BYTES = b""
HOST_LITERAL_BYTES = b""


cdef void _set_table(unsigned char *table, bytes chars):
    """1 for each byte of `chars`, 0 for the others."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(chars)
    cdef Py_ssize_t i
    for i in range(256):
        table[i] = 0
    for i in range(PyBytes_GET_SIZE(chars)):
        table[p[i]] = 1


cdef void _set(unsigned char *table, const char *chars) noexcept:
    cdef Py_ssize_t i = 0
    while chars[i] != 0:
        table[<unsigned char>chars[i]] = 1
        i += 1


cdef void _init_tables() noexcept:
    cdef int i
    for i in range(256):
        URL_CHAR[i] = 0
        USERINFO[i] = 0
        ALPHA[i] = 1 if (65 <= i <= 90 or 97 <= i <= 122) else 0
        HEADER_CHAR[i] = 1 if (i == 9 or 32 <= i <= 126 or i >= 128) else 0
        CONN_TOKEN[i] = HEADER_CHAR[i]
        QDTEXT[i] = 1 if (i == 9 or i == 32 or i == 0x21 or 0x23 <= i <= 0x5b or 0x5d <= i <= 0x7e
                          or i >= 128) else 0
        HEXVAL[i] = 255
        LOWER[i] = <unsigned char>(i + 32 if 65 <= i <= 90 else i)
    CONN_TOKEN[44] = 0
    alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    _set(URL_CHAR, alnum)
    _set(URL_CHAR, b"!\"$%&'()*+,-./:;<=>@[\\]^_`{|}~")
    _set(USERINFO, alnum)
    _set(USERINFO, b"-_.!~*'()%;:&=+$,")
    for i in range(10):
        HEXVAL[48 + i] = <unsigned char>i
    for i in range(6):
        HEXVAL[65 + i] = <unsigned char>(10 + i)
        HEXVAL[97 + i] = <unsigned char>(10 + i)


_init_tables()

# llhttp's method table (constants.ts METHODS), sorted so that the names sharing a prefix are
# neighbours: matching narrows a [lo, hi) range byte by byte, as llparse's trie does.
cdef tuple METHOD_NAMES = tuple(sorted((
    b"DELETE", b"GET", b"HEAD", b"POST", b"PUT", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH", b"LINK",
    b"UNLINK", b"COPY", b"LOCK", b"MKCOL", b"MOVE", b"PROPFIND", b"PROPPATCH", b"SEARCH", b"UNLOCK",
    b"BIND", b"REBIND", b"UNBIND", b"ACL", b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE",
    b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE", b"MKCALENDAR", b"PURGE", b"QUERY", b"SOURCE",
    b"PRI", b"DESCRIBE", b"ANNOUNCE", b"SETUP", b"PLAY", b"PAUSE", b"TEARDOWN", b"GET_PARAMETER",
    b"SET_PARAMETER", b"REDIRECT", b"RECORD", b"FLUSH")))
# for "HTTP/x.x": METHODS_HTTP (HTTP/1 methods and PRI); for "RTSP/x.x": METHODS_RTSP
cdef frozenset RTSP_ONLY = frozenset((b"DESCRIBE", b"ANNOUNCE", b"SETUP", b"PLAY", b"PAUSE",
                                      b"TEARDOWN", b"GET_PARAMETER", b"SET_PARAMETER", b"REDIRECT",
                                      b"RECORD", b"FLUSH"))
cdef frozenset RTSP_METHODS = RTSP_ONLY | frozenset((b"OPTIONS", b"GET", b"POST"))

cdef enum:
    N_METHODS = 47
    M_CONNECT_FLAG = 1
    M_HTTP = 2          # allowed with HTTP/
    M_RTSP = 4          # allowed with RTSP/
    M_ICE = 8           # SOURCE: allowed with ICE/
    M_PRI = 16
    M_OPTIONS = 32

cdef const unsigned char *M_PTR[N_METHODS]
cdef Py_ssize_t M_LEN[N_METHODS]
cdef int M_KIND[N_METHODS]


cdef void _init_methods():
    cdef int i
    for i in range(N_METHODS):
        name = METHOD_NAMES[i]
        M_PTR[i] = <const unsigned char *>PyBytes_AS_STRING(name)
        M_LEN[i] = PyBytes_GET_SIZE(name)
        k = 0
        if name not in RTSP_ONLY:
            k |= M_HTTP
        if name in RTSP_METHODS:
            k |= M_RTSP
        if name == b"SOURCE":
            k |= M_ICE
        if name == b"CONNECT":
            k |= M_CONNECT_FLAG
        if name == b"PRI":
            k |= M_PRI
        if name == b"OPTIONS":
            k |= M_OPTIONS
        M_KIND[i] = k


if len(METHOD_NAMES) != N_METHODS:
    raise RuntimeError("http1: method table size")
_init_methods()

# --- states -------------------------------------------------------------------------------------

cdef enum:                     # the reader (gateway.http1._State)
    R_IDLE = 0
    R_HEAD = 1
    R_BODY = 2
    R_CLOSED = 3
    R_ERROR = 4
    R_SWITCHED = 5

# the names of the reader states (gateway.http1._State's values), by number
STATES = ("idle", "head", "body", "closed", "error", "switched")
# successors of each reader state, as a bit mask: gateway.http1._TRANSITIONS (init)
cdef int SUCCESSORS[6]
TRANSITIONS = {}                       # what init took for it

cdef enum:                     # body framing and chunk phase
    FR_NONE = 0
    FR_LENGTH = 1
    FR_CHUNKED = 2
    FR_EOF = 3                 # a response's body that runs to the close
    CK_SIZE = 0
    CK_DATA = 1
    CK_DATA_END = 2
    CK_TRAILER = 3

cdef enum:                     # the parser: one per llhttp node that reads a byte
    P_START = 0                # start
    P_METHOD                   # after_start_req (method trie)
    P_SPACE_AFTER_METHOD       # req_first_space_before_url
    P_SPACES_BEFORE_URL        # req_spaces_before_url
    U_START                    # url_start
    U_SCHEMA                   # url_schema
    U_SCHEMA_DELIM             # url_schema_delim ('//')
    U_SCHEMA_DELIM2
    U_SERVER                   # url_server
    U_SERVER_AT                # url_server_with_at
    U_PATH                     # url_path
    U_QOF                      # url_query_or_fragment
    U_QUERY                    # url_query
    U_FRAGMENT                 # url_fragment
    U_CRLF09                   # url_skip_lf_to_http09, after its CR
    U_TO_HTTP                  # url_to_http: after the SP that ends the target
    U_TO_HTTP09                # url_to_http_09: after the CRLF or LF that ends an HTTP/0.9 line
    P_HTTP_START               # req_http_start
    P_PROTO                    # req_after_http_start / res_after_start (HTTP, RTSP, ICE)
    P_AFTER_PROTO              # req_after_protocol / res_after_protocol
    P_MAJOR                    # req_http_major / res_http_major
    P_DOT                      # req_http_dot
    P_MINOR                    # req_http_minor / res_http_minor
    P_PRI                      # req_pri_upgrade
    P_COMPLETE                 # req_http_complete
    P_COMPLETE_CRLF            # req_http_complete_crlf
    H_START                    # headers_start
    H_FIELD_START              # header_field_start
    H_FIELD                    # header_field / header_field_general
    H_DISCARD_WS               # header_value_discard_ws
    H_DISCARD_WS_CR            # header_value_discard_ws_almost_done
    H_DISCARD_LWS              # header_value_discard_lws
    V_GENERAL                  # header_value
    V_CONN                     # header_value_connection
    V_CONN_TRIE                # ... inside 'close' / 'upgrade' / 'keep-alive'
    V_CONN_WS                  # header_value_connection_ws
    V_CONN_TOKEN               # header_value_connection_token
    V_TE_CHUNKED               # header_value_te_chunked
    V_TE_CHUNKED_LAST          # header_value_te_chunked_last
    V_TE_TOKEN                 # header_value_te_token
    V_TE_OWS                   # header_value_te_token_ows
    V_CL                       # header_value_content_length
    V_CL_WS                    # header_value_content_length_ws
    V_OTHERWISE                # header_value_otherwise
    V_ALMOST_DONE              # header_value_almost_done
    V_LWS                      # header_value_lws
    H_ALMOST_DONE              # headers_almost_done
    C_SIZE_DIGIT               # chunk_size_digit
    C_SIZE                     # chunk_size
    C_EXT                      # chunk_extensions
    C_EXT_NAME                 # chunk_extension_name
    C_EXT_VALUE                # chunk_extension_value
    C_EXT_QUOTED               # chunk_extension_quoted_value
    C_EXT_QPAIR                # chunk_extension_quoted_value_quoted_pair
    C_EXT_QDONE                # chunk_extension_quoted_value_done
    C_SIZE_ALMOST_DONE         # chunk_size_almost_done
    C_DATA                     # chunk_data (bytes counted outside the machine)
    C_DATA_END                 # chunk_data_almost_done
    C_DATA_END_LF              # ... after its CR
    B_IDENTITY                 # body_identity (bytes counted outside the machine)
    X_CLOSED                   # closed: after a message llhttp would not keep alive
    RS_AFTER_VERSION           # res_after_version
    RS_CODE1                   # res_status_code_digit_1
    RS_CODE2                   # res_status_code_digit_2
    RS_CODE3                   # res_status_code_digit_3
    RS_CODE_OTHERWISE          # res_status_code_otherwise
    RS_STATUS                  # res_status_start / res_status: the reason phrase
    RS_LINE_ALMOST_DONE        # res_line_almost_done

cdef enum:                     # llhttp's header_state
    HS_GENERAL = 0
    HS_CONNECTION = 1
    HS_CONTENT_LENGTH = 2
    HS_TRANSFER_ENCODING = 3
    HS_UPGRADE = 4
    HS_CONNECTION_KEEP_ALIVE = 5
    HS_CONNECTION_CLOSE = 6
    HS_CONNECTION_UPGRADE = 7
    HS_TRANSFER_ENCODING_CHUNKED = 8

cdef enum:                     # llhttp's flags
    F_CONNECTION_KEEP_ALIVE = 0x1
    F_CONNECTION_CLOSE = 0x2
    F_CONNECTION_UPGRADE = 0x4
    F_CHUNKED = 0x8
    F_UPGRADE = 0x10
    F_CONTENT_LENGTH = 0x20
    F_TRAILING = 0x80
    F_TRANSFER_ENCODING = 0x200

cdef enum:                     # the fields the pure reader acts on (gateway.http1._F_*)
    SF_NONE = -1
    SF_HOST = 0
    SF_CL = 1
    SF_TE = 2
    SF_CONNECTION = 3
    SF_EXPECT = 4
    SF_UPGRADE = 5
# ... by name (init checks it is gateway.http1._SPECIAL_FIELDS)
SPECIAL_FIELDS = {b"host": SF_HOST, b"content-length": SF_CL, b"transfer-encoding": SF_TE,
                  b"connection": SF_CONNECTION, b"expect": SF_EXPECT, b"upgrade": SF_UPGRADE}

cdef const char *K_CLOSE = b"close"
cdef const char *K_UPGRADE = b"upgrade"
cdef const char *K_KEEP_ALIVE = b"keep-alive"
cdef const char *K_CHUNKED = b"chunked"
cdef const char *K_PRI_TAIL = b"\r\n\r\nSM\r\n\r\n"
cdef const char *K_PROTO[3]
K_PROTO[0] = b"HTTP"
K_PROTO[1] = b"RTSP"
K_PROTO[2] = b"ICE"
cdef const char *CRLFCRLF = b"\r\n\r\n"

cdef bytes V11 = b"1.1"
cdef bytes V10 = b"1.0"
cdef bytes B_CLOSE = b"close"
cdef bytes B_KEEP_ALIVE = b"keep-alive"
cdef bytes B_UPGRADE = b"upgrade"


cdef struct Field:
    Py_ssize_t name
    Py_ssize_t name_len
    Py_ssize_t value
    Py_ssize_t value_len


cdef inline int _special_llhttp(const unsigned char *p, Py_ssize_t n) noexcept:
    """llhttp's SPECIAL_HEADERS, compared case-insensitively."""
    if n == 10 and _ieq(p, b"connection", 10):
        return HS_CONNECTION
    if n == 14 and _ieq(p, b"content-length", 14):
        return HS_CONTENT_LENGTH
    if n == 16 and _ieq(p, b"proxy-connection", 16):
        return HS_CONNECTION
    if n == 17 and _ieq(p, b"transfer-encoding", 17):
        return HS_TRANSFER_ENCODING
    if n == 7 and _ieq(p, b"upgrade", 7):
        return HS_UPGRADE
    return HS_GENERAL


cdef inline int _special_pure(const unsigned char *p, Py_ssize_t n) noexcept:
    """gateway.http1._SPECIAL_FIELDS."""
    if n == 4 and _ieq(p, b"host", 4):
        return SF_HOST
    if n == 14 and _ieq(p, b"content-length", 14):
        return SF_CL
    if n == 17 and _ieq(p, b"transfer-encoding", 17):
        return SF_TE
    if n == 10 and _ieq(p, b"connection", 10):
        return SF_CONNECTION
    if n == 6 and _ieq(p, b"expect", 6):
        return SF_EXPECT
    if n == 7 and _ieq(p, b"upgrade", 7):
        return SF_UPGRADE
    return SF_NONE


cdef inline bint _ieq(const unsigned char *p, const char *lower, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[p[i]] != <unsigned char>lower[i]:
            return False
    return True


cdef bint _host_ok(const unsigned char *p, Py_ssize_t n) noexcept:
    """gateway.http1._HOST_RE.fullmatch: reg-name or [IP-literal], then an optional :port."""
    cdef Py_ssize_t i = 0
    if n and p[0] == 91:                    # '['
        i = 1
        while i < n and HOST_LIT[p[i]]:
            i += 1
        if i == 1 or i >= n or p[i] != 93:  # at least one char, then ']'
            return False
        i += 1
    else:
        while i < n and HOST_REG[p[i]]:
            i += 1
    if i == n:
        return True
    if p[i] != 58:                          # ':'
        return False
    i += 1
    while i < n:
        if not (48 <= p[i] <= 57):
            return False
        i += 1
    return True


cdef bytes _strip_lower(const unsigned char *p, Py_ssize_t n):
    cdef Py_ssize_t a = 0, b = n
    while a < b and (p[a] == 32 or p[a] == 9):
        a += 1
    while b > a and (p[b - 1] == 32 or p[b - 1] == 9):
        b -= 1
    cdef bytes out = PyBytes_FromStringAndSize(NULL, b - a)
    cdef unsigned char *d = <unsigned char *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(b - a):
        d[i] = LOWER[p[a + i]]
    return out


cdef class RequestReader:
    """The native twin of gateway.http1.RequestReader: same constructor, methods and events."""

    cdef:
        object _limits
        bint _hold_upgrades
        Py_ssize_t _max_header_bytes, _max_header_count, _line_budget
        long long _max_body                 # -1: no bound
        int _state
        list _events
        Py_ssize_t *_sizes                  # each queued event's bytes (as many as _events)
        Py_ssize_t _sizes_alloc
        Py_ssize_t _ev_next
        Py_ssize_t _buffered
        object _error
        list _raw
        # the head being read: every byte since the last head ended
        unsigned char *_head
        Py_ssize_t _head_len, _head_alloc
        Py_ssize_t _head_cap, _base_cap
        bint _line_done
        Py_ssize_t _line_raw
        int _piece_first                    # first byte of the slice being parsed
        # fields of this head
        Field *_fields
        Py_ssize_t _nfields, _fields_alloc
        # message framing (the pure reader's view)
        int _framing, _chunk
        unsigned long long _remaining
        Py_ssize_t _line_len, _trailer_bytes
        unsigned long long _body_seen
        bint _keep_alive, _switch
        # body bytes of this feed
        object _body_first
        list _body_parts
        # the parser (llhttp's view)
        int _ps, _hs, _flags, _method, _major, _minor, _sub, _lo, _hi, _proto
        bint _upgrade, _trailing_cb
        uint64_t _clen
        Py_ssize_t _url_start, _url_end, _name_start, _name_end, _value_start, _value_end
        # the upstream side (ResponseReader): what was asked, and the response being read
        bint _response, _interim, _may_switch
        object _expected
        int _status
        Py_ssize_t _reason_start, _reason_end
        object __weakref__

    def __cinit__(self):
        self._head = NULL
        self._fields = NULL
        self._response = False
        self._sizes = NULL
        self._sizes_alloc = 0

    def __dealloc__(self):
        free(self._head)
        free(self._fields)
        free(self._sizes)

    def __init__(self, limits=None, *, hold_upgrades=False):
        if not _ready:
            raise RuntimeError("gateway._http1_c used before gateway.http1 initialised it")
        if limits is None:
            limits = DEFAULT_LIMITS
        self._limits = limits
        self._hold_upgrades = bool(hold_upgrades)
        self._max_header_bytes = limits.max_header_bytes
        self._max_header_count = limits.max_header_count
        self._max_body = -1 if limits.max_body_bytes is None else limits.max_body_bytes
        self._line_budget = limits.max_request_line_bytes + 2      # with its CRLF
        self._state = R_IDLE
        self._events = []
        self._ev_next = 0
        self._buffered = 0
        self._error = None
        self._raw = []
        self._head_len = 0
        self._base_cap = self._max_header_bytes
        self._head_cap = self._base_cap
        self._line_done = False
        self._line_raw = 0
        self._nfields = 0
        self._framing = FR_NONE
        self._chunk = CK_SIZE
        self._remaining = 0
        self._line_len = 0
        self._trailer_bytes = 0
        self._body_seen = 0
        self._keep_alive = True
        self._switch = False
        self._body_first = None
        self._body_parts = None
        self._ps = P_START
        self._flags = 0
        self._upgrade = False
        self._clen = 0

    # -- public ----------------------------------------------------------------------------------

    def feed(self, data):
        """Take bytes as they arrive, in pieces of any size; events are queued for `next_event`."""
        if self._error is not None:
            raise self._error
        if not PyBytes_CheckExact(data):
            data = bytes(data)
        cdef bytes buf = data
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t pos = 0, stop
        cdef unsigned long long left
        cdef int st
        while pos < n:
            st = self._state
            if st == R_BODY:
                if self._framing == FR_LENGTH or (self._framing == FR_CHUNKED and self._chunk == CK_DATA):
                    left = self._remaining
                    stop = pos + <Py_ssize_t>left if left < <unsigned long long>(n - pos) else n
                    self._remaining = left - <unsigned long long>(stop - pos)
                    self._body(buf, pos, stop)
                    if self._remaining == 0:
                        if self._framing == FR_CHUNKED:
                            self._chunk = CK_DATA_END
                            self._ps = C_DATA_END
                        else:
                            self._message_done()
                elif self._framing == FR_CHUNKED:
                    stop = self._feed_chunk_line(p, pos, n)
                elif self._framing == FR_EOF:
                    stop = n
                    self._body(buf, pos, n)
                else:
                    raise RuntimeError("http1: body state without framing")
            elif st == R_IDLE or st == R_HEAD:
                stop = self._feed_head(p, pos, n)
            elif st == R_SWITCHED:
                self._raw.append(buf[pos:] if pos else buf)
                break
            else:
                # CLOSED: RFC 9112 9.6, nothing after the closing message is processed.
                break
            pos = stop
        if self._body_first is not None:
            self._flush_body()

    def next_event(self):
        """The oldest queued event, or None when more bytes are needed."""
        if self._error is not None:
            raise self._error
        cdef Py_ssize_t i = self._ev_next
        if i >= len(self._events):
            return None
        event = self._events[i]
        self._buffered -= self._sizes[i]
        i += 1
        if i == len(self._events):
            self._events.clear()
            i = 0
        self._ev_next = i
        return event

    def feed_eof(self):
        """The client closed its side. Refused if a request was partly received."""
        if self._error is not None:
            raise self._error
        cdef int st = self._state
        if st == R_HEAD or st == R_BODY:
            raise self._die(self._fail("incomplete_request", 400, "connection closed inside a request"))
        if st == R_IDLE:
            self._to(R_CLOSED)

    @property
    def buffered_bytes(self):
        """Bytes of queued events not yet taken (heads as received, body data)."""
        return self._buffered

    def take_raw(self):
        """After a protocol switch: the bytes received after the switching message, unparsed."""
        raw = b"".join(self._raw)
        self._raw.clear()
        return raw

    @property
    def switched(self):
        """The last message may switch protocols: later bytes are not HTTP/1.1 and are kept raw."""
        return self._state == R_SWITCHED

    @property
    def idle(self):
        """No message is partly received and no event is waiting to be taken."""
        cdef int st = self._state
        return (st == R_IDLE or st == R_CLOSED) and self._ev_next >= len(self._events)

    # -- events and state -----------------------------------------------------------------------------

    cdef int _to(self, int new) except -1:
        if not (SUCCESSORS[self._state] >> new) & 1:
            raise RuntimeError("http1: illegal transition %d -> %d" % (self._state, new))
        self._state = new
        return 0

    cdef inline int _push(self, object event, Py_ssize_t size) except -1:
        cdef Py_ssize_t n = len(self._events)
        cdef Py_ssize_t *grown
        if n >= self._sizes_alloc:
            grown = <Py_ssize_t *>realloc(self._sizes, (n + 8) * sizeof(Py_ssize_t))
            if grown == NULL:
                raise MemoryError()
            self._sizes = grown
            self._sizes_alloc = n + 8
        self._events.append(event)
        self._sizes[n] = size
        self._buffered += size
        return 0

    cdef void _body(self, bytes buf, Py_ssize_t a, Py_ssize_t b):
        piece = buf if (a == 0 and b == PyBytes_GET_SIZE(buf)) else buf[a:b]
        if self._body_first is None:
            self._body_first = piece
        else:
            if self._body_parts is None:
                self._body_parts = [self._body_first]
            self._body_parts.append(piece)

    cdef int _flush_body(self) except -1:
        cdef bytes data
        if self._body_parts is not None:
            data = b"".join(self._body_parts)
            self._body_parts = None
        else:
            data = self._body_first
        self._body_first = None
        self._push(_data_event(data), PyBytes_GET_SIZE(data))
        return 0

    cdef int _complete(self) except -1:
        if self._body_first is not None:
            self._flush_body()
        self._push(END_OF_MESSAGE, 0)
        self._framing = FR_NONE
        if self._switch:
            self._to(R_SWITCHED)
        else:
            self._to(R_IDLE if self._keep_alive else R_CLOSED)
        return 0

    cdef int _message_done(self) except -1:
        # llhttp's message_done -> on_message_complete -> cleanup: restart, or closed when llhttp
        # itself would not keep the connection (a Connection: close in a trailer).
        self._complete()
        self._after_message()
        return 0

    cdef void _after_message(self) noexcept:
        cdef bint keep = self._llhttp_keep_alive()
        self._flags = 0
        self._clen = 0
        self._ps = P_START if keep else X_CLOSED

    cdef bint _llhttp_keep_alive(self) noexcept:
        # llhttp_should_keep_alive
        if self._major > 0 and self._minor > 0:
            if self._flags & F_CONNECTION_CLOSE:
                return False
        elif not (self._flags & F_CONNECTION_KEEP_ALIVE):
            return False
        return not self._needs_eof()

    cdef bint _needs_eof(self) noexcept:
        # llhttp_message_needs_eof: a request never; a response whose length only the close tells
        if not self._response:
            return False
        cdef int status = self._status
        if status // 100 == 1 or status == 204 or status == 304:
            return False
        if self._flags & F_TRANSFER_ENCODING and not (self._flags & F_CHUNKED):
            return True
        if self._flags & (F_CHUNKED | F_CONTENT_LENGTH):
            return False
        return True

    cdef object _fail(self, str reason, int status, str message):
        if self._response:
            return UpstreamError(message, status=502, reason="upstream_" + reason)
        return HTTPProtocolError(message, status=status, reason=reason)

    cdef object _die(self, object err):
        self._state = R_ERROR
        self._error = err
        self._events.clear()
        self._ev_next = 0
        self._buffered = 0
        self._body_first = None
        self._body_parts = None
        return err

    cdef object _llerr(self, str message):
        """A refusal llhttp would have made: its reason string, named as the pure reader names it."""
        reason, status = LLHTTP_ERRORS.get(message, ("malformed", 400))
        cdef int st = self._state
        if st == R_IDLE or st == R_HEAD:
            refine = (REFINE_RESPONSE if self._response else REFINE).get(message)
            if refine is not None and self._head_len:
                reason = refine(PyBytes_FromStringAndSize(<char *>self._head, self._head_len))
        elif message == "Invalid header field char" and self._piece_first == 10:
            reason = "bare_lf"          # the empty line after trailers sent as a bare LF
        return self._die(self._fail(reason, status, message))

    # -- slicing (gateway.http1._Reader and RequestReader, line for line) ---------------------------

    cdef int _append_head(self, const unsigned char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t need = self._head_len + n
        cdef Py_ssize_t size
        cdef unsigned char *grown
        if need > self._head_alloc:
            size = self._head_alloc * 2 if self._head_alloc else 256    # most heads are smaller
            while size < need:
                size *= 2
            grown = <unsigned char *>realloc(self._head, size)
            if grown == NULL:
                raise MemoryError()
            self._head = grown
            self._head_alloc = size
        memcpy(self._head + self._head_len, p, n)
        self._head_len = need
        return 0

    cdef Py_ssize_t _feed_head(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t n) except -1:
        cdef Py_ssize_t used, budget, end, lf, stop, i
        if self._line_done or self._response:
            # a response's head limit covers its status line too (gateway.http1._Reader)
            return self._feed_head_rest(p, pos, n)
        # The request line is cut at its LF and never fed past its budget.
        used = self._line_raw
        budget = self._line_budget - used
        end = pos + budget if budget < n - pos else n
        lf = -1
        for i in range(pos, end):
            if p[i] == 10:
                lf = i
                break
        if lf >= 0 and used + lf + 1 - pos > 2:
            self._line_done = True
            self._head_cap = used + lf + 1 - pos + self._max_header_bytes
            return self._feed_head_rest(p, pos, n)
        stop = lf + 1 if lf >= 0 else end
        self._line_raw = used + stop - pos
        self._execute_head(p, pos, stop)
        if lf >= 0:
            # an empty line before the request line (RFC 9112 2.2)
            self._line_raw = 0
            if self._head_len > self._max_header_bytes:
                raise self._die(self._fail("header_too_large", 431, "too many empty lines"))
        elif self._line_raw >= self._line_budget:
            raise self._die(self._fail(
                "uri_too_long", 414, "request line over %d bytes" % (self._line_budget - 2)))
        return stop

    cdef Py_ssize_t _feed_head_rest(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t n) except -1:
        cdef Py_ssize_t budget = self._head_cap - self._head_len
        cdef Py_ssize_t limit = pos + budget if budget < n - pos else n
        cdef Py_ssize_t end = -1, t, k, j, m, stop, i
        cdef unsigned char window[6]
        # a CRLF CRLF may straddle the bytes already fed and these
        t = self._head_len if self._head_len < 3 else 3
        if t:
            m = n - pos if n - pos < 3 else 3
            for j in range(t):
                window[j] = self._head[self._head_len - t + j]
            for j in range(m):
                window[t + j] = p[pos + j]
            for k in range(t):
                if k + 4 <= t + m and memcmp(window + k, CRLFCRLF, 4) == 0:
                    end = pos + k + 4 - t
                    break
        if end < 0:
            i = pos
            while i + 4 <= limit:
                if p[i + 3] != 10:
                    i += 1 if p[i + 3] == 13 else 4
                    continue
                if p[i] == 13 and p[i + 1] == 10 and p[i + 2] == 13:
                    end = i + 4
                    break
                i += 1
        stop = end if 0 <= end <= limit else limit
        self._execute_head(p, pos, stop)
        cdef int st = self._state
        if (st == R_IDLE or st == R_HEAD) and self._head_len >= self._head_cap:
            raise self._die(self._fail("header_too_large", 431, "header section over the limit"))
        return stop

    cdef int _execute_head(self, const unsigned char *p, Py_ssize_t a, Py_ssize_t b) except -1:
        cdef Py_ssize_t off = self._head_len
        self._append_head(p + a, b - a)
        self._piece_first = p[a] if b > a else -1
        self._run(off, self._head_len)
        return 0

    cdef Py_ssize_t _feed_chunk_line(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t n) except -1:
        cdef int state = self._chunk
        cdef Py_ssize_t budget, cap = 0, limit, lf, stop, i
        if state == CK_TRAILER:
            budget = self._max_header_bytes - self._trailer_bytes
            if budget <= 0:
                raise self._die(self._fail("trailer_too_large", 431, "trailer section over the limit"))
        else:
            cap = MAX_CHUNK_LINE if state == CK_SIZE else 2
            budget = cap - self._line_len
        limit = pos + budget if budget < n - pos else n
        lf = -1
        for i in range(pos, limit):
            if p[i] == 10:
                lf = i
                break
        stop = lf + 1 if lf >= 0 else limit
        cdef Py_ssize_t off
        self._piece_first = p[pos]
        if state == CK_TRAILER:
            # trailer lines are kept (in the head's buffer, empty during a body) while they last:
            # a field name may arrive in pieces and must be read whole
            off = self._head_len
            self._append_head(p + pos, stop - pos)
            self._run(off, self._head_len)
            if self._state != R_BODY:
                self._head_len = 0
        else:
            self._run_bytes(p, pos, stop)       # every framing byte is validated
        if state == CK_TRAILER:
            self._trailer_bytes += stop - pos
            if lf < 0 and self._trailer_bytes >= self._max_header_bytes:
                raise self._die(self._fail("trailer_too_large", 431, "trailer section over the limit"))
            return stop
        if lf < 0:
            self._line_len += stop - pos
            if self._line_len >= cap:
                if state == CK_SIZE:
                    raise self._die(self._fail(
                        "chunk_line_too_long", 400, "chunk-size line over %d bytes" % MAX_CHUNK_LINE))
                raise self._die(self._fail("bad_chunk_data_end", 400, "no CRLF after chunk data"))
            return stop
        self._line_len = 0
        if state == CK_DATA_END:
            self._chunk = CK_SIZE
            return stop
        # the size line is whole: the machine has the size (hex digits only, checked)
        cdef unsigned long long size = self._clen
        cdef unsigned long long seen
        if size:
            seen = self._body_seen + size
            if self._max_body >= 0 and (seen > <unsigned long long>self._max_body or seen < size):
                raise self._die(self._fail("body_too_large", 413, "chunked body over the limit"))
            self._body_seen = seen
            self._remaining = size
            self._chunk = CK_DATA
        else:
            self._trailer_bytes = 0
            self._chunk = CK_TRAILER
        return stop

    cdef int _run_bytes(self, const unsigned char *p, Py_ssize_t a, Py_ssize_t b) except -1:
        # chunk framing and trailers are not kept: parse them where they lie
        cdef unsigned char *saved = self._head
        cdef Py_ssize_t saved_len = self._head_len
        self._head = <unsigned char *>p
        try:
            self._run(a, b)
        finally:
            self._head = saved
            self._head_len = saved_len
        return 0

    # -- the machine ---------------------------------------------------------------------------------

    cdef int _run(self, Py_ssize_t i, Py_ssize_t end) except -1:
        """Parse self._head[i:end], byte by byte, as llhttp (strict) parses it."""
        cdef const unsigned char *h = self._head
        cdef unsigned char c
        cdef int ps = self._ps
        cdef int k
        cdef uint64_t d
        while i < end:
            c = h[i]
            # -- request line -------------------------------------------------------------------
            if ps == P_START:
                if c == 13 or c == 10:
                    i += 1
                    continue
                if self._response:
                    # gateway.http1.ResponseReader.on_message_begin
                    if not self._expected:
                        self._ps = ps
                        raise self._die(self._fail("unsolicited", 502, "response without a request"))
                    self._to(R_HEAD)
                    self._nfields = 0
                    self._flags = 0
                    self._clen = 0
                    self._upgrade = False
                    self._status = 0
                    self._reason_start = self._reason_end = -1
                    self._proto = -1
                    self._sub = 0
                    ps = P_PROTO        # res_after_start .. res_http_minor: the request's states
                    continue
                # on_message_begin
                self._to(R_HEAD)
                self._nfields = 0
                self._flags = 0
                self._clen = 0
                self._upgrade = False
                self._lo = 0
                self._hi = N_METHODS
                self._sub = 0
                ps = P_METHOD
                continue
            elif ps == P_METHOD:
                k = self._method_step(c)
                if k == 1:
                    i += 1
                    continue
                if k == 0:
                    ps = P_SPACE_AFTER_METHOD
                    continue
                self._ps = ps
                raise self._llerr("Invalid method encountered")
            elif ps == P_SPACE_AFTER_METHOD:
                if c != 32:
                    raise self._llerr("Expected space after method")
                ps = P_SPACES_BEFORE_URL
                i += 1
                continue
            elif ps == P_SPACES_BEFORE_URL:
                if c == 32:
                    i += 1
                    continue
                self._url_start = i
                ps = U_SERVER if M_KIND[self._method] & M_CONNECT_FLAG else U_START
                continue
            elif ps == U_START:
                if c == 47 or c == 42:                  # '/' '*'
                    ps = U_PATH
                    i += 1
                    continue
                if ALPHA[c]:
                    ps = U_SCHEMA
                    continue
                if c == 32 or c == 13 or c == 10 or c == 9 or c == 12:
                    raise self._llerr("Invalid characters in url")
                raise self._llerr("Unexpected start char in url")
            elif ps == U_SCHEMA:
                if ALPHA[c]:
                    i += 1
                    continue
                if c == 58:
                    ps = U_SCHEMA_DELIM
                    i += 1
                    continue
                if c == 32 or c == 13 or c == 10 or c == 9 or c == 12:
                    raise self._llerr("Invalid characters in url")
                raise self._llerr("Unexpected char in url schema")
            elif ps == U_SCHEMA_DELIM:
                if c == 47:
                    ps = U_SCHEMA_DELIM2
                    i += 1
                    continue
                if c == 32 or c == 13 or c == 10 or c == 9 or c == 12:
                    raise self._llerr("Invalid characters in url")
                raise self._llerr("Unexpected char in url schema")
            elif ps == U_SCHEMA_DELIM2:
                if c == 47:
                    ps = U_SERVER
                    i += 1
                    continue
                raise self._llerr("Unexpected char in url schema")
            elif ps == U_SERVER or ps == U_SERVER_AT:
                if c == 47:
                    ps = U_PATH
                    i += 1
                    continue
                if c == 63:
                    ps = U_QUERY
                    i += 1
                    continue
                if USERINFO[c] or c == 91 or c == 93:
                    ps = U_SERVER
                    i += 1
                    continue
                if c == 64:
                    if ps == U_SERVER_AT:
                        raise self._llerr("Double @ in url")
                    ps = U_SERVER_AT
                    i += 1
                    continue
                k = self._url_end_byte(c, i)
                if k:
                    ps = k
                    i += 1
                    continue
                if c == 9 or c == 12:
                    raise self._llerr("Invalid characters in url")
                raise self._llerr("Unexpected char in url server")
            elif ps == U_PATH:
                while i < end and URL_CHAR[h[i]]:
                    i += 1
                if i == end:
                    break
                c = h[i]
                if c == 9 or c == 12:
                    raise self._llerr("Invalid characters in url")
                ps = U_QOF
                continue
            elif ps == U_QOF:
                if c == 63:
                    ps = U_QUERY
                    i += 1
                    continue
                if c == 35:
                    ps = U_FRAGMENT
                    i += 1
                    continue
                k = self._url_end_byte(c, i)
                if k:
                    ps = k
                    i += 1
                    continue
                if c == 9 or c == 12:
                    raise self._llerr("Invalid characters in url")
                raise self._llerr("Invalid char in url path")
            elif ps == U_QUERY:
                if URL_CHAR[c] or c == 63:
                    i += 1
                    continue
                if c == 35:
                    ps = U_FRAGMENT
                    i += 1
                    continue
                k = self._url_end_byte(c, i)
                if k:
                    ps = k
                    i += 1
                    continue
                if c == 9 or c == 12:
                    raise self._llerr("Invalid characters in url")
                raise self._llerr("Invalid char in url query")
            elif ps == U_FRAGMENT:
                if URL_CHAR[c] or c == 63 or c == 35:
                    i += 1
                    continue
                k = self._url_end_byte(c, i)
                if k:
                    ps = k
                    i += 1
                    continue
                if c == 9 or c == 12:
                    raise self._llerr("Invalid characters in url")
                raise self._llerr("Invalid char in url fragment start")
            elif ps == U_CRLF09:
                if c != 10:
                    raise self._llerr("Expected CRLF")
                ps = U_TO_HTTP09
                i += 1
                continue
            elif ps == U_TO_HTTP or ps == U_TO_HTTP09:
                # still a URL node in llhttp: HTAB and FF are refused as URL characters
                if c == 9 or c == 12:
                    raise self._llerr("Invalid characters in url")
                if ps == U_TO_HTTP:
                    ps = P_HTTP_START
                else:
                    # HTTP/0.9: no version; the pure reader refuses it when the head ends
                    self._major = 0
                    self._minor = 9
                    ps = H_START
                continue
            elif ps == P_HTTP_START:
                if c == 32:
                    i += 1
                    continue
                self._proto = -1
                self._sub = 0
                ps = P_PROTO
                continue
            elif ps == P_PROTO:
                if self._sub == 0:
                    if c == 72:
                        self._proto = 0
                    elif c == 82:
                        self._proto = 1
                    elif c == 73:
                        self._proto = 2
                    else:
                        raise self._llerr("Expected HTTP/, RTSP/ or ICE/")
                    self._sub = 1
                    i += 1
                    continue
                if c != <unsigned char>K_PROTO[self._proto][self._sub]:
                    raise self._llerr("Expected HTTP/, RTSP/ or ICE/")
                self._sub += 1
                i += 1
                if K_PROTO[self._proto][self._sub] == 0 and self._response:
                    ps = P_AFTER_PROTO      # llhttp's res_after_protocol: the same edges
                elif K_PROTO[self._proto][self._sub] == 0:
                    k = M_KIND[self._method]
                    if self._proto == 0 and not (k & M_HTTP):
                        raise self._llerr("Invalid method for HTTP/x.x request")
                    if self._proto == 1 and not (k & M_RTSP):
                        raise self._llerr("Invalid method for RTSP/x.x request")
                    if self._proto == 2 and not (k & M_ICE):
                        raise self._llerr("Expected SOURCE method for ICE/x.x request")
                    ps = P_AFTER_PROTO
                continue
            elif ps == P_AFTER_PROTO:
                if c != 47:
                    raise self._llerr("Expected HTTP/, RTSP/ or ICE/")
                ps = P_MAJOR
                i += 1
                continue
            elif ps == P_MAJOR:
                if not (48 <= c <= 57):
                    raise self._llerr("Invalid major version")
                self._major = c - 48
                ps = P_DOT
                i += 1
                continue
            elif ps == P_DOT:
                if c != 46:
                    raise self._llerr("Expected dot")
                ps = P_MINOR
                i += 1
                continue
            elif ps == P_MINOR:
                if not (48 <= c <= 57):
                    raise self._llerr("Invalid minor version")
                self._minor = c - 48
                if not ((self._major == 0 and self._minor == 9) or (self._major == 1 and self._minor <= 1)
                        or (self._major == 2 and self._minor == 0)):
                    raise self._llerr("Invalid HTTP version")
                i += 1
                if self._response:
                    ps = RS_AFTER_VERSION
                elif M_KIND[self._method] & M_PRI:
                    self._sub = 0
                    ps = P_PRI
                else:
                    ps = P_COMPLETE
                continue
            elif ps == P_PRI:
                if c != <unsigned char>K_PRI_TAIL[self._sub]:
                    raise self._llerr("Expected HTTP/2 Connection Preface")
                self._sub += 1
                i += 1
                if self._sub == 10:
                    raise self._llerr("Pause on PRI/Upgrade")
                continue
            elif ps == P_COMPLETE:
                if c != 13:
                    raise self._llerr("Expected CRLF after version")
                ps = P_COMPLETE_CRLF
                i += 1
                continue
            elif ps == P_COMPLETE_CRLF:
                if c != 10:
                    raise self._llerr("Expected CRLF after version")
                ps = H_START
                i += 1
                continue
            # -- a response's status line (RFC 9112 4) -------------------------------------------------
            elif ps == RS_AFTER_VERSION:
                if c != 32:
                    raise self._llerr("Expected space after version")
                self._status = 0
                ps = RS_CODE1
                i += 1
                continue
            elif ps == RS_CODE1 or ps == RS_CODE2 or ps == RS_CODE3:
                if not (48 <= c <= 57):
                    raise self._llerr("Invalid status code")
                self._status = self._status * 10 + (c - 48)
                ps = RS_CODE2 if ps == RS_CODE1 else (RS_CODE3 if ps == RS_CODE2 else RS_CODE_OTHERWISE)
                i += 1
                continue
            elif ps == RS_CODE_OTHERWISE:
                if c == 32:
                    self._reason_start = i + 1
                    ps = RS_STATUS
                    i += 1
                    continue
                if c == 13:
                    ps = RS_LINE_ALMOST_DONE
                    i += 1
                    continue
                raise self._llerr("Invalid response status")
            elif ps == RS_STATUS:
                # every byte but CR and LF is the reason's (the pure reader checks it at the end)
                while i < end and h[i] != 13 and h[i] != 10:
                    i += 1
                if i == end:
                    break
                self._reason_end = i
                if h[i] == 10:
                    raise self._llerr("Missing expected CR after response line")
                ps = RS_LINE_ALMOST_DONE
                i += 1
                continue
            elif ps == RS_LINE_ALMOST_DONE:
                if c != 10:
                    raise self._llerr("Expected LF after CR")
                ps = H_START
                i += 1
                continue
            # -- field lines (RFC 9112 5) ----------------------------------------------------------
            elif ps == H_START:
                if c == 32:     # RFC 9112 2.2: whitespace before the first field line
                    raise self._llerr("Unexpected space after start line")
                ps = H_FIELD_START
                continue
            elif ps == H_FIELD_START:
                if c == 13:
                    ps = H_ALMOST_DONE
                    i += 1
                    continue
                if c == 10:
                    raise self._llerr("Invalid header field char")
                if c == 58:
                    raise self._llerr("Invalid header token")
                self._name_start = i
                ps = H_FIELD
                i += 1      # any byte starts a name; the next state checks it is a token
                if not TOKEN[c]:
                    raise self._llerr("Invalid header token")
                continue
            elif ps == H_FIELD:
                while i < end and TOKEN[h[i]]:
                    i += 1
                if i == end:
                    break
                c = h[i]
                if c == 58:
                    # on_header_field_complete; RFC 9112 6.1 / 6.3: CL with TE is refused
                    self._name_end = i
                    self._hs = _special_llhttp(h + self._name_start, i - self._name_start)
                    if self._hs == HS_TRANSFER_ENCODING and self._flags & F_CONTENT_LENGTH:
                        raise self._llerr("Transfer-Encoding can't be present with Content-Length")
                    if self._hs == HS_CONTENT_LENGTH and self._flags & F_TRANSFER_ENCODING:
                        raise self._llerr("Content-Length can't be present with Transfer-Encoding")
                    ps = H_DISCARD_WS
                    i += 1
                    continue
                # RFC 9112 5.1: no whitespace between the name and the colon
                if c == 32 and _special_llhttp(h + self._name_start, i - self._name_start) != HS_GENERAL:
                    raise self._llerr("Invalid header field char")
                raise self._llerr("Invalid header token")
            elif ps == H_DISCARD_WS:
                if c == 32 or c == 9:
                    i += 1
                    continue
                if c == 13:
                    ps = H_DISCARD_WS_CR
                    i += 1
                    continue
                if c == 10:
                    raise self._llerr("Invalid header value char")
                self._value_start = i
                ps = self._value_start_state(i)
                continue
            elif ps == H_DISCARD_WS_CR:
                if c != 10:
                    raise self._llerr("Expected LF after CR")
                ps = H_DISCARD_LWS
                i += 1
                continue
            elif ps == H_DISCARD_LWS:
                if c == 32 or c == 9:
                    raise self._llerr("Invalid header value char")
                if self._hs == HS_CONTENT_LENGTH:
                    raise self._llerr("Empty Content-Length")
                if self._hs == HS_TRANSFER_ENCODING:
                    raise self._llerr("Empty Transfer-Encoding")
                self._value_complete(i, 0)
                ps = H_FIELD_START
                continue
            elif ps == V_GENERAL:
                while i < end and HEADER_CHAR[h[i]]:
                    i += 1
                if i == end:
                    break
                ps = V_OTHERWISE
                continue
            elif ps == V_CONN:
                if c == 32 or c == 9:
                    i += 1
                    continue
                k = LOWER[c]
                if k == 99:
                    self._sub = 0
                elif k == 117:
                    self._sub = 1
                elif k == 107:
                    self._sub = 2
                else:
                    ps = V_CONN_TOKEN
                    continue
                self._lo = 1
                ps = V_CONN_TRIE
                i += 1
                continue
            elif ps == V_CONN_TRIE:
                if self._sub == 0:
                    k = <unsigned char>K_CLOSE[self._lo]
                elif self._sub == 1:
                    k = <unsigned char>K_UPGRADE[self._lo]
                else:
                    k = <unsigned char>K_KEEP_ALIVE[self._lo]
                if LOWER[c] != k:
                    ps = V_CONN_TOKEN
                    continue
                self._lo += 1
                i += 1
                if self._sub == 0 and self._lo == 5:
                    self._hs = HS_CONNECTION_CLOSE
                    ps = V_CONN_WS
                elif self._sub == 1 and self._lo == 7:
                    self._hs = HS_CONNECTION_UPGRADE
                    ps = V_CONN_WS
                elif self._sub == 2 and self._lo == 10:
                    self._hs = HS_CONNECTION_KEEP_ALIVE
                    ps = V_CONN_WS
                continue
            elif ps == V_CONN_WS:
                if c == 44:
                    self._set_header_flags()
                    ps = V_CONN
                    i += 1
                    continue
                if c == 32 or c == 9:
                    i += 1
                    continue
                if c == 13 or c == 10:
                    ps = V_OTHERWISE
                    continue
                self._hs = HS_GENERAL
                ps = V_CONN_TOKEN
                continue
            elif ps == V_CONN_TOKEN:
                if c == 44:
                    ps = V_CONN
                    i += 1
                    continue
                if CONN_TOKEN[c]:
                    i += 1
                    continue
                ps = V_OTHERWISE
                continue
            elif ps == V_TE_CHUNKED:
                if (c | 0x20) != <unsigned char>K_CHUNKED[self._sub]:
                    ps = V_TE_TOKEN
                    continue
                self._sub += 1
                i += 1
                if self._sub == 7:
                    ps = V_TE_CHUNKED_LAST
                continue
            elif ps == V_TE_CHUNKED_LAST:
                if c == 32:
                    i += 1
                    continue
                if c == 13 or c == 10:
                    self._hs = HS_TRANSFER_ENCODING_CHUNKED
                    ps = V_OTHERWISE
                    continue
                if c == 44:
                    # RFC 9112 6.1: chunked must be the final coding of a request; a response
                    # goes on reading codings (the byte is read again)
                    if not self._response:
                        raise self._llerr("Invalid `Transfer-Encoding` header value")
                    self._sub = 0
                    ps = V_TE_CHUNKED
                    continue
                ps = V_TE_TOKEN
                continue
            elif ps == V_TE_TOKEN:
                if c == 44:
                    ps = V_TE_OWS
                    i += 1
                    continue
                if CONN_TOKEN[c]:
                    i += 1
                    continue
                self._hs = HS_GENERAL
                ps = V_GENERAL
                continue
            elif ps == V_TE_OWS:
                if c == 32 or c == 9:
                    i += 1
                    continue
                self._sub = 0
                ps = V_TE_CHUNKED
                continue
            elif ps == V_CL:
                k = c - 48
                if 0 <= k <= 9:
                    # RFC 9112 6.3 item 5: digits only, and the length must fit (llhttp: 64 bits)
                    d = self._clen
                    if d > <uint64_t>0xffffffffffffffff // 10:
                        raise self._llerr("Content-Length overflow")
                    d *= 10
                    if d > <uint64_t>0xffffffffffffffff - <uint64_t>k:
                        raise self._llerr("Content-Length overflow")
                    self._clen = d + k
                    i += 1
                    continue
                ps = V_CL_WS
                continue
            elif ps == V_CL_WS:
                if c == 32 or c == 9:
                    i += 1
                    continue
                if c == 13 or c == 10:
                    self._flags |= F_CONTENT_LENGTH
                    ps = V_OTHERWISE
                    continue
                raise self._llerr("Invalid character in Content-Length")
            elif ps == V_OTHERWISE:
                if c == 13:
                    self._value_end = i
                    ps = V_ALMOST_DONE
                    i += 1
                    continue
                if c == 10:
                    raise self._llerr("Missing expected CR after header value")
                raise self._llerr("Invalid header value char")
            elif ps == V_ALMOST_DONE:
                if c != 10:
                    raise self._llerr("Missing expected LF after header value")
                ps = V_LWS
                i += 1
                continue
            elif ps == V_LWS:
                if c == 32 or c == 9:
                    # RFC 9112 5.2: obs-fold is refused
                    raise self._llerr("Unexpected whitespace after header value")
                self._value_complete(self._value_start, self._value_end - self._value_start)
                ps = H_FIELD_START
                continue
            elif ps == H_ALMOST_DONE:
                if c != 10:
                    raise self._llerr("Expected LF after headers")
                i += 1
                self._ps = ps
                if self._flags & F_TRAILING:
                    # the trailer section has ended, and with it the message (RFC 9112 7.1.2)
                    self._message_done()
                elif self._response:
                    self._response_complete(i)
                else:
                    self._headers_complete(i)
                ps = self._ps
                continue
            # -- chunked framing (RFC 9112 7.1) ----------------------------------------------------
            elif ps == C_SIZE_DIGIT or ps == C_SIZE:
                k = HEXVAL[c]
                if k != 255:
                    d = self._clen
                    if d > <uint64_t>0xffffffffffffffff // 16:
                        raise self._llerr("Chunk size overflow")
                    d *= 16
                    if d > <uint64_t>0xffffffffffffffff - <uint64_t>k:
                        raise self._llerr("Chunk size overflow")
                    self._clen = d + k
                    ps = C_SIZE
                    i += 1
                    continue
                if ps == C_SIZE_DIGIT:
                    raise self._llerr("Invalid character in chunk size")
                if c == 13:
                    ps = C_SIZE_ALMOST_DONE
                    i += 1
                    continue
                if c == 10:
                    raise self._llerr("Missing expected CR after chunk size")
                if c == 59:
                    ps = C_EXT
                    i += 1
                    continue
                raise self._llerr("Invalid character in chunk size")
            elif ps == C_EXT:
                if c == 32 or c == 13:
                    raise self._llerr("Invalid character in chunk extensions")
                ps = C_EXT_NAME
                continue
            elif ps == C_EXT_NAME:
                if TOKEN[c]:
                    i += 1
                    continue
                if c == 61:
                    ps = C_EXT_VALUE
                elif c == 59:
                    ps = C_EXT
                elif c == 13:
                    ps = C_SIZE_ALMOST_DONE
                elif c == 10:
                    raise self._llerr("Missing expected CR after chunk extension name")
                else:
                    raise self._llerr("Invalid character in chunk extensions name")
                i += 1
                continue
            elif ps == C_EXT_VALUE:
                if c == 34:
                    ps = C_EXT_QUOTED
                elif TOKEN[c]:
                    pass
                elif c == 59:
                    ps = C_EXT
                elif c == 13:
                    ps = C_SIZE_ALMOST_DONE
                elif c == 10:
                    raise self._llerr("Missing expected CR after chunk extension value")
                else:
                    raise self._llerr("Invalid character in chunk extensions value")
                i += 1
                continue
            elif ps == C_EXT_QUOTED:
                if QDTEXT[c]:
                    pass
                elif c == 34:
                    ps = C_EXT_QDONE
                elif c == 92:
                    ps = C_EXT_QPAIR
                else:
                    raise self._llerr("Invalid character in chunk extensions quoted value")
                i += 1
                continue
            elif ps == C_EXT_QPAIR:
                if not HEADER_CHAR[c]:
                    raise self._llerr("Invalid quoted-pair in chunk extensions quoted value")
                ps = C_EXT_QUOTED
                i += 1
                continue
            elif ps == C_EXT_QDONE:
                if c == 59:
                    ps = C_EXT
                elif c == 13:
                    ps = C_SIZE_ALMOST_DONE
                elif c == 10:
                    raise self._llerr("Missing expected CR after chunk extension value")
                else:
                    raise self._llerr("Invalid character in chunk extensions quote value")
                i += 1
                continue
            elif ps == C_SIZE_ALMOST_DONE:
                if c != 10:
                    raise self._llerr("Expected LF after chunk size")
                i += 1
                if self._clen == 0:
                    self._flags |= F_TRAILING      # the last chunk: trailers follow
                    ps = H_FIELD_START
                else:
                    ps = C_DATA
                continue
            elif ps == C_DATA_END:
                if c == 13:
                    ps = C_DATA_END_LF
                    i += 1
                    continue
                if c == 10:
                    raise self._llerr("Missing expected CR after chunk data")
                raise self._llerr("Expected LF after chunk data")
            elif ps == C_DATA_END_LF:
                if c != 10:
                    raise self._llerr("Expected LF after chunk data")
                self._clen = 0
                ps = C_SIZE_DIGIT
                i += 1
                continue
            elif ps == X_CLOSED:
                if c == 13 or c == 10:
                    i += 1
                    continue
                raise self._llerr("Data after `Connection: close`")
            else:
                raise RuntimeError("http1: parser state %d reads no bytes" % ps)
        self._ps = ps
        return 0

    cdef inline int _method_step(self, unsigned char c) noexcept:
        """1: c continues a method name; 0: the name so far is a method and c follows it; -1: no."""
        cdef int lo = self._lo, hi = self._hi, idx = self._sub
        cdef int j, nlo = -1, nhi = -1
        for j in range(lo, hi):
            if M_LEN[j] > idx and M_PTR[j][idx] == c:
                if nlo < 0:
                    nlo = j
                nhi = j + 1
            elif nlo >= 0:
                break
        if nlo >= 0:
            self._lo = nlo
            self._hi = nhi
            self._sub = idx + 1
            return 1
        if M_LEN[lo] == idx and idx > 0:
            self._method = lo
            return 0
        return -1

    cdef inline int _url_end_byte(self, unsigned char c, Py_ssize_t i) noexcept:
        """The states that follow the target: SP, CR (HTTP/0.9, then LF) or LF (HTTP/0.9); 0 if not."""
        if c == 32:
            self._url_end = i
            return U_TO_HTTP
        if c == 13:
            self._url_end = i
            return U_CRLF09
        if c == 10:
            self._url_end = i
            return U_TO_HTTP09
        return 0

    cdef int _value_start_state(self, Py_ssize_t i) except -1:
        cdef int hs = self._hs
        if hs == HS_UPGRADE:
            self._flags |= F_UPGRADE
            self._hs = HS_GENERAL
            return V_GENERAL
        if hs == HS_TRANSFER_ENCODING:
            if self._flags & F_CHUNKED and not self._response:
                raise self._llerr("Invalid `Transfer-Encoding` header value")
            self._flags |= F_TRANSFER_ENCODING
            self._flags &= ~F_CHUNKED
            self._sub = 0
            return V_TE_CHUNKED
        if hs == HS_CONTENT_LENGTH:
            if self._flags & F_CONTENT_LENGTH:
                raise self._llerr("Duplicate Content-Length")
            self._clen = 0
            return V_CL
        if hs == HS_CONNECTION:
            return V_CONN
        return V_GENERAL

    cdef inline void _set_header_flags(self) noexcept:
        cdef int hs = self._hs
        if hs == HS_CONNECTION_KEEP_ALIVE:
            self._flags |= F_CONNECTION_KEEP_ALIVE
            self._hs = HS_CONNECTION
        elif hs == HS_CONNECTION_CLOSE:
            self._flags |= F_CONNECTION_CLOSE
            self._hs = HS_CONNECTION
        elif hs == HS_CONNECTION_UPGRADE:
            self._flags |= F_CONNECTION_UPGRADE
            self._hs = HS_CONNECTION
        elif hs == HS_TRANSFER_ENCODING_CHUNKED:
            self._flags |= F_CHUNKED

    cdef int _value_complete(self, Py_ssize_t value, Py_ssize_t length) except -1:
        self._set_header_flags()
        if self._flags & F_TRAILING:
            return 0    # a trailer field: dropped (RFC 9110 6.5.1 lets a recipient discard trailers)
        cdef Field *f
        cdef Field *grown
        cdef Py_ssize_t size
        if self._nfields == self._fields_alloc:
            size = self._fields_alloc * 2 if self._fields_alloc else 16
            grown = <Field *>realloc(self._fields, size * sizeof(Field))
            if grown == NULL:
                raise MemoryError()
            self._fields = grown
            self._fields_alloc = size
        # llhttp drops leading OWS only; trailing OWS is not part of the value (RFC 9112 5)
        while length and (self._head[value + length - 1] == 32 or self._head[value + length - 1] == 9):
            length -= 1
        f = &self._fields[self._nfields]
        f.name = self._name_start
        f.name_len = self._name_end - self._name_start
        f.value = value
        f.value_len = length
        self._nfields += 1
        return 0

    # -- the end of a head: gateway.http1.RequestReader.on_headers_complete ---------------------------

    cdef int _headers_complete(self, Py_ssize_t head_end) except -1:
        cdef const unsigned char *h = self._head
        # the whole slice counts, as the pure reader's joined head does (a head can end before its
        # slice only when it is refused below)
        cdef Py_ssize_t size = self._head_len, L = self._head_len, start = 0, eol = -1, s, e, j
        cdef Py_ssize_t nf = self._nfields
        cdef Field *f
        cdef bint http11
        cdef int kind, hosts = 0
        # llhttp's before_headers_complete
        if self._flags & F_UPGRADE and self._flags & F_CONNECTION_UPGRADE:
            self._upgrade = True
        else:
            self._upgrade = (M_KIND[self._method] & M_CONNECT_FLAG) != 0
        # _take_head
        self._head_len = 0
        self._head_cap = self._base_cap
        self._line_done = False
        self._line_raw = 0
        while start < L and (h[start] == 13 or h[start] == 10):
            start += 1
        for j in range(start, L - 1):
            if h[j] == 13 and h[j + 1] == 10:
                eol = j
                break
        if nf > self._max_header_count:
            raise self._die(self._fail("too_many_headers", 431,
                                       "more than %d header fields" % self._max_header_count))
        # a request line ended by a bare LF (llhttp's HTTP/0.9): see the pure reader
        if eol > start:
            for j in range(start, eol):
                if h[j] == 10:
                    raise self._die(self._fail("bare_lf", 400, "request line ended by a bare LF"))
        # head[eol - 9:eol], with Python's slice bounds
        s = eol - 9
        if s < 0:
            s += L
            if s < 0:
                s = 0
        e = eol if eol >= 0 else eol + L
        if e - s == 9 and memcmp(h + s, b" HTTP/1.1", 9) == 0:
            version = V11
            http11 = True
        elif e - s == 9 and memcmp(h + s, b" HTTP/1.0", 9) == 0:
            version = V10
            http11 = False
        else:
            raise self._die(self._fail("version_unsupported", 505, "HTTP version not supported"))
        method = METHOD_NAMES[self._method]
        if M_KIND[self._method] & M_CONNECT_FLAG:
            raise self._die(self._fail("connect_unsupported", 501, "CONNECT is not supported"))

        headers = []
        host = cl = te = connection = expect = upgrade = None
        for j in range(nf):
            f = &self._fields[j]
            name = PyBytes_FromStringAndSize(<char *>h + f.name, f.name_len)
            value = PyBytes_FromStringAndSize(<char *>h + f.value, f.value_len)
            headers.append((name, value))
            kind = _special_pure(h + f.name, f.name_len)
            if kind == SF_NONE:
                continue
            if kind == SF_HOST:
                hosts += 1
                host = value
            elif kind == SF_CL:
                cl = value
            elif kind == SF_TE:
                te = value if te is None else te + b", " + value
            elif kind == SF_CONNECTION:
                connection = value if connection is None else connection + b", " + value
            elif kind == SF_EXPECT:
                expect = value if expect is None else expect + b", " + value
            else:
                upgrade = value if upgrade is None else upgrade + b", " + value

        # RFC 9112 3.2: exactly one Host in HTTP/1.1; never several.
        if hosts != 1 and (http11 or hosts > 1):
            if hosts:
                raise self._die(self._fail("duplicate_host", 400, "more than one Host field"))
            raise self._die(self._fail("missing_host", 400, "HTTP/1.1 request without Host"))
        if host is not None and not _host_ok(<const unsigned char *>PyBytes_AS_STRING(host),
                                             PyBytes_GET_SIZE(host)):
            raise self._die(self._fail("bad_host", 400, "invalid Host value"))

        target = PyBytes_FromStringAndSize(<char *>h + self._url_start, self._url_end - self._url_start)
        cdef const unsigned char *t = h + self._url_start
        cdef Py_ssize_t tn = self._url_end - self._url_start, a
        if t[0] != 47:
            if tn == 1 and t[0] == 42:
                if not M_KIND[self._method] & M_OPTIONS:   # RFC 9112 3.2.4
                    raise self._die(self._fail("bad_target", 400, "asterisk-form target outside OPTIONS"))
            else:
                a = _absolute_authority(t, tn)
                # RFC 9110 4.2.4: userinfo in an http(s) URI is an error.
                if a <= 0 or not _authority_ok(t, tn, a):
                    raise self._die(self._fail("bad_target", 400, "invalid request-target"))
                authority = PyBytes_FromStringAndSize(<char *>t + a, _authority_end(t, tn, a) - a)
                # RFC 9112 3.2.2: the target's authority wins over Host; both, differing, is refused
                if host is not None and host.lower() != authority.lower():
                    raise self._die(self._fail("host_mismatch", 400,
                                               "Host differs from the target's authority"))
                host = authority
        for j in range(tn):
            if t[j] == 35:      # RFC 9112 3.2: a request-target never carries a fragment
                raise self._die(self._fail("bad_target", 400, "fragment in request-target"))

        cdef bint close = False, keep_alive
        tokens = NO_TOKENS
        if connection is not None:
            tokens = _tokens(connection)
            close = B_CLOSE in tokens
        if http11:
            keep_alive = not close
        else:
            keep_alive = not close and B_KEEP_ALIVE in tokens      # RFC 9112 9.3
        keep_alive = keep_alive and self._llhttp_keep_alive()

        cdef bint expect_continue = False
        if expect is not None:
            for item in expect.split(b","):
                if _strip_lower(<const unsigned char *>PyBytes_AS_STRING(item),
                                PyBytes_GET_SIZE(item)) != b"100-continue":
                    raise self._die(self._fail("expectation_failed", 417, "unsupported expectation"))
            expect_continue = http11     # RFC 9110 10.1.1

        if upgrade is not None and http11 and B_UPGRADE in tokens:
            upgrade = upgrade.lower()
        else:
            upgrade = None      # RFC 9110 7.8

        cdef bint chunked = False
        length = None
        if te is not None:
            if not http11:
                raise self._die(self._fail("te_in_http10", 400, "Transfer-Encoding in an HTTP/1.0 request"))
            if cl is not None:
                raise self._die(self._fail("cl_and_te", 400, "Content-Length with Transfer-Encoding"))
            if te.lower() != b"chunked":
                codings = [c.strip(b" \t").lower() for c in te.split(b",")]
                if codings[len(codings) - 1] != b"chunked":
                    # RFC 9112 6.3 item 4: without chunked last the length cannot be known (400).
                    raise self._die(self._fail("bad_transfer_encoding", 400,
                                               "chunked is not the final coding"))
                raise self._die(self._fail("te_unsupported", 501, "transfer coding not implemented"))
            chunked = True
        elif cl is not None:
            length = self._clen     # the digits llhttp's way read, the same number int() reads
            if self._max_body >= 0 and self._clen > <unsigned long long>self._max_body:
                raise self._die(self._fail("body_too_large", 413, "Content-Length over the limit"))

        self._keep_alive = keep_alive
        self._switch = upgrade is not None and self._hold_upgrades
        self._push(_request_event(method, target, version, headers, keep_alive, length, chunked,
                                  expect_continue, upgrade, host, tokens), size)
        self._to(R_BODY)
        if chunked:
            self._framing = FR_CHUNKED
            self._chunk = CK_SIZE
            self._line_len = 0
            self._body_seen = 0
        elif length:
            self._framing = FR_LENGTH
            self._remaining = self._clen

        # llhttp's after_headers_complete
        if self._upgrade:
            # httptools makes llhttp skip an upgrade request's body; the pure reader reads it with
            # a fresh parser primed with a stand-in HTTP/1.1 head of the same framing.
            if chunked or length:
                self._major = 1
                self._minor = 1
                self._flags = (F_TRANSFER_ENCODING | F_CHUNKED) if chunked else F_CONTENT_LENGTH
                self._clen = 0
                self._ps = C_SIZE_DIGIT if chunked else B_IDENTITY
            else:
                self._message_done()
            return 0
        if self._flags & F_CHUNKED:
            self._clen = 0
            self._ps = C_SIZE_DIGIT
        elif self._flags & F_TRANSFER_ENCODING:
            self._state = R_BODY
            raise self._llerr("Request has invalid `Transfer-Encoding`")
        elif self._clen > 0:
            self._ps = B_IDENTITY
        else:
            self._message_done()
        return 0


    # -- the end of a response's head: gateway.http1.ResponseReader.on_headers_complete -----------------

    cdef int _response_complete(self, Py_ssize_t head_end) except -1:
        cdef const unsigned char *h = self._head
        cdef Py_ssize_t size = self._head_len, L = self._head_len, start = 0, j
        cdef Py_ssize_t nf = self._nfields
        cdef Field *f
        cdef int kind, status = self._status
        cdef bint http11, has_cl = False, close = False, keep_alive, chunked = False
        # _take_head
        self._head_len = 0
        self._head_cap = self._base_cap
        while start < L and (h[start] == 13 or h[start] == 10):
            start += 1
        if nf > self._max_header_count:
            raise self._die(self._fail("too_many_headers", 431,
                                       "more than %d header fields" % self._max_header_count))
        if not 100 <= status <= 599:
            raise self._die(self._fail("bad_status", 502, "status code out of range"))
        if L - start >= 9 and memcmp(h + start, b"HTTP/1.1 ", 9) == 0:
            version = V11
            http11 = True
        elif L - start >= 9 and memcmp(h + start, b"HTTP/1.0 ", 9) == 0:
            version = V10
            http11 = False
        else:
            raise self._die(self._fail("bad_version", 502, "HTTP version not supported"))
        cdef Py_ssize_t rs = self._reason_start, re_ = self._reason_end
        if rs < 0 or re_ < rs:
            reason = b""
        else:
            reason = PyBytes_FromStringAndSize(<char *>h + rs, re_ - rs)
            for j in range(rs, re_):
                # RFC 9112 4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
                if h[j] != 9 and (h[j] < 32 or h[j] == 127):
                    raise self._die(self._fail("bad_status_line", 502,
                                               "control character in reason phrase"))

        headers = []
        te = connection = None
        for j in range(nf):
            f = &self._fields[j]
            name = PyBytes_FromStringAndSize(<char *>h + f.name, f.name_len)
            value = PyBytes_FromStringAndSize(<char *>h + f.value, f.value_len)
            headers.append((name, value))
            kind = _special_pure(h + f.name, f.name_len)
            if kind == SF_CL:
                has_cl = True
            elif kind == SF_TE:
                te = value if te is None else te + b", " + value
            elif kind == SF_CONNECTION:
                connection = value if connection is None else connection + b", " + value

        if status == 101:
            if not self._may_switch or not self._expected:
                raise self._die(self._fail("unexpected_101", 502,
                                           "switching protocols without an Upgrade"))
            if has_cl or te is not None:
                raise self._die(self._fail("bad_interim", 502, "framing fields in a 101 response"))
            if not (self._flags & F_UPGRADE and self._flags & F_CONNECTION_UPGRADE):
                # llhttp's upgrade flag (before_headers_complete): both fields, or no switch
                raise self._die(self._fail("unexpected_101", 502,
                                           "switching protocols without Upgrade and Connection: upgrade"))
            self._expected.popleft()
            self._keep_alive = False
            self._switch = True
            self._framing = FR_NONE
            self._push(_response_event(status, reason, version, headers, False, None, False,
                                       NO_TOKENS), size)
            self._to(R_BODY)
            # llhttp: on_message_complete, then the upgrade pause; the reader has switched
            self._complete()
            self._ps = X_CLOSED
            return 0

        if status < 200:
            if has_cl or te is not None:
                raise self._die(self._fail("bad_interim", 502, "framing fields in a 1xx response"))
            self._to(R_BODY)
            # llhttp completes an interim response at once; the reader drops it
            self._to(R_IDLE)
            self._after_message()
            return 0

        method = self._expected.popleft()
        tokens = NO_TOKENS
        if connection is not None:
            tokens = _tokens(connection)
            close = B_CLOSE in tokens
        keep_alive = not close if http11 else (not close and B_KEEP_ALIVE in tokens)

        length = None
        cdef bint head = method == b"HEAD"
        cdef int done = 0      # 1: complete now as llhttp does; 2: the pure reader completes it
        if head or status == 204 or status == 304:
            length = self._clen if has_cl else None
            self._framing = FR_NONE
            if head and status != 204 and status != 304:
                # llhttp, not told of HEAD, completes the message itself only when nothing can
                # follow the head (Content-Length: 0); otherwise a fresh parser takes the next one
                done = 1 if (has_cl and self._clen == 0 and not (self._flags & F_TRANSFER_ENCODING)) else 2
            else:
                done = 1
        else:
            # llhttp's keep-alive view matters only when it parses the body itself
            keep_alive = keep_alive and self._llhttp_keep_alive()
            if te is not None:
                # RFC 9112 6.1 and 6.3 item 3: faulty framing in HTTP/1.0, and a coding the
                # gateway could not decode, are both refused
                # (not F_CHUNKED: llhttp read "chunked" followed by a tab as another coding)
                if not http11 or te.lower() != b"chunked" or not (self._flags & F_CHUNKED):
                    raise self._die(self._fail("bad_transfer_encoding", 502,
                                               "unsupported Transfer-Encoding"))
                if has_cl:
                    raise self._die(self._fail("cl_and_te", 502, "Content-Length with Transfer-Encoding"))
                chunked = True
                self._framing = FR_CHUNKED
                self._chunk = CK_SIZE
                self._line_len = 0
                self._body_seen = 0
            elif has_cl:
                length = self._clen
                if self._clen:
                    self._framing = FR_LENGTH
                    self._remaining = self._clen
            else:
                keep_alive = False      # RFC 9112 6.3 item 8: the body runs to the close
                self._framing = FR_EOF
        self._keep_alive = keep_alive
        self._push(_response_event(status, reason, version, headers, keep_alive, length, chunked,
                                   tokens), size)
        self._to(R_BODY)

        # llhttp's after_headers_complete
        if done == 1:
            self._message_done()
        elif done == 2:
            self._complete()
            self._ps = P_START          # a fresh parser
            self._flags = 0
            self._clen = 0
        elif self._framing == FR_CHUNKED:
            self._clen = 0
            self._ps = C_SIZE_DIGIT
        elif self._framing == FR_LENGTH:
            self._ps = B_IDENTITY
        elif self._framing == FR_EOF:
            self._ps = B_IDENTITY       # every byte is the body's; the machine sees none of them
        else:
            self._message_done()        # Content-Length: 0
        return 0


cdef class ResponseReader(RequestReader):
    """The native twin of gateway.http1.ResponseReader: the client side of one upstream
    connection, same constructor, methods and events (`expect` before each response)."""

    def __init__(self, max_header_bytes=None, max_header_count=None):
        if not _ready or Response is None:
            raise RuntimeError("gateway._http1_c used before gateway.http1 initialised it")
        if max_header_bytes is None:
            max_header_bytes = DEFAULT_RESPONSE_BYTES
        if max_header_count is None:
            max_header_count = DEFAULT_RESPONSE_COUNT
        if max_header_bytes < 16 or max_header_count < 1:
            raise ValueError("max_header_bytes must be >= 16 and max_header_count >= 1")
        RequestReader.__init__(self)
        self._response = True
        self._max_header_bytes = max_header_bytes
        self._max_header_count = max_header_count
        self._max_body = -1
        self._base_cap = max_header_bytes
        self._head_cap = max_header_bytes
        self._line_done = True
        self._expected = _deque()
        self._interim = False
        self._may_switch = False
        self._status = 0

    def expect(self, method, upgrade=False):
        """The method of a request just sent; responses are matched to requests in order.
        `upgrade`: the request asked to switch protocols, so a 101 may answer it."""
        self._expected.append(method)
        self._may_switch = bool(upgrade)

    def feed_eof(self):
        """The upstream closed. Ends a close-delimited body; refused inside any other message."""
        if self._error is not None:
            raise self._error
        cdef int st = self._state
        if st == R_BODY and self._framing == FR_EOF:
            self._keep_alive = False
            self._complete()
            return
        if st == R_HEAD or st == R_BODY:
            raise self._die(self._fail("incomplete", 502, "upstream closed inside a response"))
        if st == R_IDLE:
            if self._expected:
                raise self._die(self._fail("closed", 502, "upstream closed before responding"))
            self._to(R_CLOSED)


cdef Py_ssize_t _absolute_authority(const unsigned char *t, Py_ssize_t n) noexcept:
    """Where the authority of an http(s):// target starts (gateway.http1._ABSOLUTE_FORM), or -1."""
    cdef Py_ssize_t i
    if n < 7 or LOWER[t[0]] != 104 or LOWER[t[1]] != 116 or LOWER[t[2]] != 116 or LOWER[t[3]] != 112:
        return -1
    i = 4
    if LOWER[t[i]] == 115:
        i += 1
    if i + 3 > n or t[i] != 58 or t[i + 1] != 47 or t[i + 2] != 47:
        return -1
    i += 3
    if _authority_end(t, n, i) == i:
        return 0        # empty authority
    return i


cdef Py_ssize_t _authority_end(const unsigned char *t, Py_ssize_t n, Py_ssize_t a) noexcept:
    while a < n and t[a] != 47 and t[a] != 63 and t[a] != 35:
        a += 1
    return a


cdef bint _authority_ok(const unsigned char *t, Py_ssize_t n, Py_ssize_t a) noexcept:
    cdef Py_ssize_t e = _authority_end(t, n, a), j
    for j in range(a, e):
        if t[j] == 64:
            return False
    return _host_ok(t + a, e - a)
