# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Native twin of gateway.conn's connection core: its state in a C struct, its common arrival in C.

How this works: `Core` holds every name of gateway.conn.STATE as a field (deadlines as doubles,
flags as C ints, the rest as objects), so the pure core's methods, mixed in after it by
gateway.conn (`NativeConnection(Core, ConnectionCore)`), read and write the same state as they do
in the pure twin's slots. `Core` overrides two of them:

* `receive`: the common arrival of a kept-alive connection, one complete request with no body
  that the rules answer with a fixed response, is served here: TLS records in (the pump), the
  request read (the reader's own `feed` / `next_event`), screened (header names, the path,
  Connection options), matched, answered with the rule's prebuilt bytes, counted, logged, and the
  idle deadline set, without a Python frame of the core's. Anything else, decided before any state
  changes, goes to the pure methods at the point it would have reached them: the arrival's
  decrypted bytes to `_received`, a request already taken from the reader as `held` to `_fed`
  (the pure `_pump` takes `held` first).
* `_done`: the end of every call (the response's one TLS write, the earliest deadline, the timer).

gateway.conn hands over at load (`bind`) its state objects, event and action classes, and the
header module (whose twin choice is read per request); nothing here imports gateway.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from libc.string cimport memchr, memset
from libc.stdint cimport int64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

include "slots.pxi"

cdef object HANDSHAKE = None
cdef object OPEN = None
cdef object CLOSING = None
cdef object CLOSED = None
cdef object NO_READER = None
cdef object Request = None
cdef object EndOfMessage = None
cdef object Fixed = None
cdef object Exchange = None
cdef object ProtocolError = None
cdef object headers_module = None
cdef dict protected_tokens = None
cdef object general_receive = None
cdef object HandshakeDone = None
cdef object Actions = None
cdef int TIMER_HANDSHAKE = 0        # gateway.conn._HANDSHAKE: which deadline conn_deadline is
cdef object TLS_OPEN = None         # gateway.tls.TLSState.OPEN
cdef object TLS_FAILED = None
cdef object NULL_OBSERVER = None    # gateway.metrics.NULL_OBSERVER: counts nothing
# gateway.conn.Actions' fields by slot offset, when it is a plain slotted class (AC_DIRECT); used
# only on an instance of exactly that class
cdef bint AC_DIRECT = False
cdef Py_ssize_t AC_OUT, AC_MORE, AC_LOGS, AC_CONNECTS, AC_READING, AC_CLOSE, AC_DEADLINE, AC_REARM
cdef object ZERO = 0.0
# the Request's fields the common path reads, by slot offset (slots.pxi); set by bind
cdef Py_ssize_t RQ_METHOD, RQ_TARGET, RQ_VERSION, RQ_HEADERS, RQ_KEEP_ALIVE, RQ_LENGTH
cdef Py_ssize_t RQ_CHUNKED, RQ_EXPECT, RQ_UPGRADE, RQ_HOST, RQ_CONNECTION
cdef enum:
    MEMO_MAX = 256                  # a listener's remembered route decisions, at most
    MEMO_KEY_MAX = 256              # and only for a host and path of at most this many bytes
    STATUS_MAX = 600                # fixed answers are counted by status, 100-599
cdef enum:
    PUMP_WANT = 0                   # gateway.tls.WANT: what a pump's read and write return
    PUMP_FAILED = 3                 # gateway.tls.FAILED

# the bytes gateway.paths' _NEEDS_WORK finds in a path ("%", ";", "\\", controls, space, DEL,
# non-ASCII), probed one by one through that very search at bind
cdef unsigned char PATH_WORK[256]
PATH_WORK_BYTES = b""                   # the same, as bytes


def bind(*, handshake, open_, closing, closed, no_reader, request, end_of_message, fixed,
         exchange, protocol_error, headers, protected_tokens, general_receive, state, tls_open,
         tls_failed, pump_codes, handshake_done, actions, timer_handshake, null_observer,
         needs_work):
    """Take gateway.conn's objects. `state`: the names the pure twin's slots have, checked here
    against this struct's, so the two cannot drift; `pump_codes`: gateway.tls's (WANT, FAILED),
    checked against this module's; `needs_work`: gateway.paths' _NEEDS_WORK, whose single bytes
    become PATH_WORK (its two-byte "/." and "//" are this module's `_path_plain`)."""
    global TLS_OPEN, TLS_FAILED, HandshakeDone, Actions, TIMER_HANDSHAKE, NULL_OBSERVER
    missing = [n for n in state if not hasattr(Core, n)]
    if missing:
        raise AttributeError(f"gateway._conn_c.Core lacks {missing}: a stale build")
    if tuple(pump_codes) != (PUMP_WANT, PUMP_FAILED):
        raise AttributeError(f"gateway._conn_c: pump codes {pump_codes} are not its own")
    TLS_OPEN, TLS_FAILED = tls_open, tls_failed
    HandshakeDone = handshake_done
    Actions = actions
    _bind_actions(actions)
    TIMER_HANDSHAKE = timer_handshake
    NULL_OBSERVER = null_observer
    _bind_path_work(needs_work)
    _bind(handshake, open_, closing, closed, no_reader, request, end_of_message, fixed, exchange,
          protocol_error, headers, protected_tokens, general_receive)


cdef _bind(handshake, open_, closing, closed, no_reader, request, end_of_message, fixed,
           exchange, protocol_error, headers, dict tokens, receive):
    global HANDSHAKE, OPEN, CLOSING, CLOSED, NO_READER, Request, EndOfMessage, Fixed, Exchange
    global ProtocolError, headers_module, protected_tokens, general_receive
    global RQ_METHOD, RQ_TARGET, RQ_VERSION, RQ_HEADERS, RQ_KEEP_ALIVE, RQ_LENGTH
    global RQ_CHUNKED, RQ_EXPECT, RQ_UPGRADE, RQ_HOST, RQ_CONNECTION
    RQ_METHOD = _slot_offset(request, "method")
    RQ_TARGET = _slot_offset(request, "target")
    RQ_VERSION = _slot_offset(request, "http_version")
    RQ_HEADERS = _slot_offset(request, "headers")
    RQ_KEEP_ALIVE = _slot_offset(request, "keep_alive")
    RQ_LENGTH = _slot_offset(request, "content_length")
    RQ_CHUNKED = _slot_offset(request, "chunked")
    RQ_EXPECT = _slot_offset(request, "expect_continue")
    RQ_UPGRADE = _slot_offset(request, "upgrade")
    RQ_HOST = _slot_offset(request, "host")
    RQ_CONNECTION = _slot_offset(request, "connection")
    HANDSHAKE, OPEN, CLOSING, CLOSED = handshake, open_, closing, closed
    NO_READER = no_reader
    Request = request
    EndOfMessage = end_of_message
    Fixed = fixed
    Exchange = exchange
    ProtocolError = protocol_error
    headers_module = headers
    protected_tokens = tokens
    general_receive = receive


cdef _bind_actions(cls):
    global AC_DIRECT, AC_OUT, AC_MORE, AC_LOGS, AC_CONNECTS, AC_READING, AC_CLOSE, AC_DEADLINE
    global AC_REARM
    names = ("out", "more", "logs", "connects", "reading", "close", "deadline", "rearm")
    AC_DIRECT = False
    if tuple(getattr(cls, "__slots__", ())) != names or not plain_alloc(cls):
        return
    AC_OUT, AC_MORE, AC_LOGS, AC_CONNECTS, AC_READING, AC_CLOSE, AC_DEADLINE, AC_REARM = (
        _slot_offset(cls, n) for n in names)
    AC_DIRECT = True


cdef object _new_actions():
    """Actions(): its __init__'s values, set by offset."""
    if not AC_DIRECT:
        return Actions()
    acts = new_instance(Actions)
    slot_set(acts, AC_OUT, [])
    slot_set(acts, AC_MORE, False)
    slot_set(acts, AC_LOGS, None)
    slot_set(acts, AC_CONNECTS, None)
    slot_set(acts, AC_READING, None)
    slot_set(acts, AC_CLOSE, 0)
    slot_set(acts, AC_DEADLINE, ZERO)
    slot_set(acts, AC_REARM, ZERO)
    return acts


cdef inline list _out_of(acts):
    """acts.out"""
    if AC_DIRECT and type(acts) is Actions:
        return <list>slot_get(acts, AC_OUT)
    return acts.out


cdef inline bint _more_of(acts) except -1:
    """acts.more"""
    if AC_DIRECT and type(acts) is Actions:
        return bool(slot_get(acts, AC_MORE))
    return bool(acts.more)


cdef _bind_path_work(needs_work):
    global PATH_WORK_BYTES
    if needs_work(b"/.") is None or needs_work(b"//") is None or needs_work(b"/a") is not None:
        raise AttributeError("gateway._conn_c: gateway.paths' _NEEDS_WORK is not the scan "
                             "this build knows")
    cdef int b
    found = []
    for b in range(256):
        PATH_WORK[b] = needs_work(bytes((b,))) is not None
        if PATH_WORK[b]:
            found.append(b)
    PATH_WORK_BYTES = bytes(found)


cdef inline bint _path_plain(bytes target):
    """gateway.paths.normalize_target returns `target` itself: origin form, and before any "?"
    nothing _NEEDS_WORK finds (no byte of PATH_WORK, no "/." and no "//")."""
    cdef const unsigned char *t = <const unsigned char *>PyBytes_AS_STRING(target)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(target), i
    cdef unsigned char c
    if n == 0 or t[0] != 47:
        return False
    for i in range(n):
        c = t[i]
        if c == 63:         # "?": the query is not normalised
            return True
        if PATH_WORK[c]:
            return False
        if c == 47 and i + 1 < n and (t[i + 1] == 46 or t[i + 1] == 47):
            return False
    return True


cdef inline object _path_of(bytes target):
    """gateway.routes.split_path of an origin-form target: the path before "?"."""
    cdef Py_ssize_t q = target.find(b"?")
    return target if q < 0 else target[:q]


cdef object _route_host(bytes host):
    """gateway.conn._route_host: the Host without port and without a final dot, or None."""
    cdef Py_ssize_t end
    if not host:
        return None
    if host[0] == 91:       # "[": an IPv6 literal keeps its brackets
        end = host.find(b"]")
        if end > 0:
            host = host[:end + 1]
    elif memchr(PyBytes_AS_STRING(host), 58, PyBytes_GET_SIZE(host)) != NULL:     # ":"
        host = host.rsplit(b":", 1)[0]
    host = host.rstrip(b".")
    return host if host else None


cdef class Listener:
    """What the common path reads of a listener runtime, as C fields.

    Made by the runtime's first connection (`listener_of`) and kept in the runtime's `native`
    field: a runtime's spec, rules, header policy, observer and log sinks are fixed once it
    serves (a reload builds a new runtime). Besides the constants it keeps two things of its own:
    the route decisions already taken, when no rule reads a header (the decision is then a pure
    function of host, path and method; at most MEMO_MAX, forgotten all at once when full, and
    none for a host and path longer than MEMO_KEY_MAX together), and the
    count of fixed answers by status for an observer that drains them (`take_counts`, at its flush)
    instead of a Python call per request."""

    cdef readonly object rt, name, routes, header_policy, observer, access_log
    cdef readonly object connection_log, mtls
    cdef readonly bint sni_host_strict, counting, reports, http2
    cdef readonly long max_requests
    cdef readonly double idle_timeout, header_timeout
    cdef object unconditional               # the first rule's action when it has no condition
    cdef dict memo                          # (host, path, method) -> action; None: rules read headers
    cdef long long counts[STATUS_MAX]
    cdef object __weakref__

    def __init__(self, rt):
        spec = rt.spec
        self.rt = rt
        self.name = spec.name
        self.routes = rt.routes
        self.header_policy = rt.header_policy
        self.observer = rt.observer
        self.access_log = rt.access_log
        self.sni_host_strict = bool(rt.sni_host_strict)
        self.max_requests = spec.max_requests_per_connection
        self.idle_timeout = spec.idle_timeout_s
        self.header_timeout = spec.header_timeout_s
        self.connection_log = rt.connection_log
        self.mtls = spec.mtls
        self.reports = bool(rt.tls.reports)
        self.http2 = bool(spec.http2)
        self.unconditional = getattr(self.routes, "unconditional", None)
        self.memo = None if getattr(self.routes, "reads_headers", True) else {}
        memset(self.counts, 0, sizeof(self.counts))
        self.counting = False
        attach = getattr(self.observer, "attach_counts", None)
        if attach is not None:
            attach(self)
            self.counting = True

    def take_counts(self):
        """[(status, n)] of the fixed answers counted since the last call, and zero again."""
        cdef int i
        out = []
        for i in range(STATUS_MAX):
            if self.counts[i]:
                out.append((i, self.counts[i]))
                self.counts[i] = 0
        return out

    cdef object route(self, request, bytes target, bytes method):
        """gateway.routes.RouteTable.match for this request, remembered when it may be."""
        action = self.unconditional
        if action is not None:
            return action
        host = _route_host(slot_get(request, RQ_HOST))
        path = _path_of(target)
        memo = self.memo
        if memo is None:
            return self.routes.match(host, path, method, slot_get(request, RQ_HEADERS))
        if PyBytes_GET_SIZE(path) + (PyBytes_GET_SIZE(host) if host is not None else 0) > MEMO_KEY_MAX:
            # long names are not kept: what a client can make the memo hold stays small
            return self.routes.match(host, path, method, ())
        key = (host, path, method)
        action = memo.get(key)
        if action is None:
            action = self.routes.match(host, path, method, ())
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[key] = action
        return action

    cdef int request_done(self, int status) except -1:
        """The observer's request(listener, status, 0.0) of a fixed answer."""
        if self.counting and 0 <= status < STATUS_MAX:
            self.counts[status] += 1
        elif self.observer is not NULL_OBSERVER:
            self.observer.request(self.name, status, 0.0)
        return 0


cdef Listener listener_of(rt):
    lc = rt.native
    if lc is None or (<Listener>lc).rt is not rt:
        lc = Listener(rt)
        rt.native = lc
    return <Listener>lc


cdef class Core:
    """The state of one client connection (every name of gateway.conn.STATE) and its common path."""

    cdef public object rt, acts, client_ip, client_port, client_ip_b, tls, state, reader
    cdef public object current, held, identity_lines, done_event, refusals
    cdef public object close_reason, batch, owner, h2
    cdef public long requests
    cdef public int conn_timer
    cdef public bint read_paused, write_paused, header_deadline_armed, draining, peer_done
    cdef public double conn_deadline, idle_deadline, up_deadline, tunnel_deadline
    cdef public double connected_at, rx_at, tx_at, armed
    cdef readonly Listener lc        # the runtime's constants (not part of gateway.conn.STATE)

    def __init__(self, rt, client_ip, client_port, double now):
        """gateway.conn.ConnectionCore.__init__'s twin: the same fields, set in the struct (a test
        holds the two starts equal)."""
        self.rt = rt
        self.lc = listener_of(rt)
        self.acts = _new_actions()
        self.client_ip = client_ip
        self.client_port = client_port
        self.client_ip_b = client_ip.encode()
        self.tls = rt.tls.connection()
        self.state = HANDSHAKE
        self.reader = NO_READER
        self.current = None
        self.held = None
        self.identity_lines = b""
        self.done_event = None
        self.refusals = None
        self.requests = 0
        self.read_paused = False
        self.write_paused = False
        self.header_deadline_armed = False
        self.conn_deadline = now + rt.spec.handshake_timeout_s
        self.conn_timer = TIMER_HANDSHAKE
        self.idle_deadline = 0.0
        self.up_deadline = 0.0
        self.tunnel_deadline = 0.0
        self.connected_at = now
        self.rx_at = 0.0
        self.tx_at = 0.0
        self.close_reason = ""
        self.batch = []
        self.draining = False
        self.peer_done = False
        self.owner = None
        self.armed = 0.0
        self.h2 = None
        self._finish()

    def receive(self, data, double now):
        """Bytes from the client (gateway.conn.ConnectionCore.receive's twin)."""
        return self._receive(data, now)

    cdef object _receive(self, data, double now):
        state = self.state
        if state is HANDSHAKE:
            return self._handshake_arrival(data, now)
        if (state is not OPEN or self.current is not None or self.held is not None
                or self.h2 is not None or self.read_paused or self.write_paused or self.draining
                or self.peer_done):
            return general_receive(self, data, now)
        # gateway.tls.TLSConnection.receive of an open connection, its pump called from here
        tls = self.tls
        if tls.state is not TLS_OPEN or tls._renegotiating:
            return general_receive(self, data, now)
        code, plain, out = tls._pump.read(data)
        if code != PUMP_WANT or tls._renegotiating:
            return self._received(out, plain, (tls._read_ended(code),), now)
        if not plain:
            return self._received(out, plain, (), now)
        if out:
            _out_of(self.acts).append(out)
        self.rx_at = now
        self._serve_plain(plain, now)
        return self._finish()

    cdef object _handshake_arrival(self, data, double now):
        """The arrival that completes the handshake usually carries the first request too (a
        client writes its Finished and its request back to back): the handshake's event goes to
        the pure `_on_handshake`, and the request is served here when it is the common case,
        exactly as `_received` would have fed it."""
        out, plain, events = self.tls.receive(data)
        if (not plain or len(events) != 1 or type(events[0]) is not HandshakeDone
                or self.current is not None or self.held is not None or self.read_paused
                or self.write_paused or self.draining or self.peer_done):
            return self._received(out, plain, events, now)
        if out:
            _out_of(self.acts).append(out)
        event = events[0]
        if not self._handshake_common(event, now):
            self._on_handshake(event, now)
        self.rx_at = now
        if self.state is OPEN and self.h2 is None:
            self._serve_plain(plain, now)
        else:
            self._feed(plain, now)
        return self._finish()

    cdef bint _handshake_common(self, event, double now) except -1:
        """gateway.conn.ConnectionCore._on_handshake's twin for a listener that enforces and a
        connection that speaks HTTP/1.1 (the same steps in its order); False, having changed
        nothing, for anything else (report-only listeners, HTTP/2), which the pure method does."""
        cdef Listener lc = self.lc
        if lc.reports:
            return False
        tls = self.tls
        if lc.http2 and tls._pump.selected_alpn() == b"h2":
            return False
        self.state = OPEN
        self.done_event = event
        identity = event.identity
        status = event.status
        if identity is not None:
            rt = self.rt
            verified = status is not None and identity.verified
            self.identity_lines = headers_module.identity_block(
                identity, verified, rt.header_styles, fields=rt.identity_fields if verified else ())
        if lc.connection_log.enabled:
            self._connection_log(event, "")
        observer = lc.observer
        if observer is not NULL_OBSERVER:
            observer.handshake(lc.name, lc.mtls, "accepted",
                               status.value if status is not None else None, event.resumed,
                               tls.handshake_s)
        self.conn_deadline = 0.0
        # the first request is awaited as long as a header may take; nothing sent: a quiet close
        self.idle_deadline = now + lc.header_timeout
        return True

    cdef int _serve_plain(self, plain, double now) except -1:
        """One arrival's plaintext on an open connection with nothing in flight: the common
        request served here, anything else handed to the pure methods where `_feed` would."""
        reader = self.reader
        if reader is NO_READER:
            reader = self._new_reader()      # the connection's first request (the pure _feed's)
        try:
            reader.feed(plain)
        except ProtocolError as exc:
            self._protocol_error(exc, now)
            return 0
        request = reader.next_event()
        if request is None:
            self._fed(now)
            return 0
        if not self._serve_fixed(request, now):
            self.held = request     # the pure _pump takes it first
            self._fed(now)
        return 0

    cdef bint _serve_fixed(self, request, double now) except -1:
        """Serve `request` if it is the common case; False, having changed nothing, if not."""
        if type(request) is not Request:
            return False
        # the fields by slot (slots.pxi): the reader set them all, and Request is exactly its type
        if (slot_get(request, RQ_CHUNKED) or slot_get(request, RQ_LENGTH)
                or slot_get(request, RQ_UPGRADE) is not None or slot_get(request, RQ_EXPECT)):
            return False
        lc = self.lc
        if lc.sni_host_strict:
            return False
        headers = slot_get(request, RQ_HEADERS)
        # screening (gateway.conn._screened_out): None for sure when every Connection option is a
        # known harmless one and every name is standard; else the pure function decides
        connection = slot_get(request, RQ_CONNECTION)
        clean = True
        if connection:
            for token in connection:
                if protected_tokens.get(token) is not False:
                    clean = False
                    break
        if not clean or headers_module.first_nonstandard(headers) >= 0:
            if headers_module.screen_request(lc.header_policy, headers, connection) is not None:
                return False
        target = slot_get(request, RQ_TARGET)
        if type(target) is not bytes or not _path_plain(target):
            return False
        method = slot_get(request, RQ_METHOD)
        action = lc.route(request, target, method)
        if type(action) is not Fixed or action.access is not None:
            return False

        # gateway.conn._start, _after_answer and _finish for a fixed response, in their order
        self.requests += 1
        self.header_deadline_armed = False
        self.idle_deadline = 0.0
        self.conn_deadline = 0.0
        cdef bint keep = slot_get(request, RQ_KEEP_ALIVE)
        if lc.max_requests and self.requests >= lc.max_requests:
            keep = False
        if not keep:
            payload = action.closing
        elif slot_get(request, RQ_VERSION) == b"1.0":
            payload = action.head_only_10 if method == b"HEAD" else action.keep_alive_10
        else:
            payload = action.head_only if method == b"HEAD" else action.keep_alive
        self.batch.append(payload)
        if keep:
            # the request's own EndOfMessage ends the exchange (a bodiless one comes at once)
            end = self.reader.next_event()
            if type(end) is not EndOfMessage:
                raise RuntimeError(f"request reader: {end!r} after a request without a body")
        status = action.status
        lc.request_done(status)         # the observer's request(name, status, now - started: 0)
        if lc.access_log.enabled:
            ex = Exchange(request, now)
            ex.keep_alive = keep
            ex.action = action
            ex.status = status
            ex.body_queue = None
            ex.bytes_out = len(payload)
            ex.discard = keep
            ex.request_done = True
            self._log("access", ex.access_record(lc.name, self.client, self.done_event, now,
                                                 False))
        if not keep:
            self._close("response_complete")
            return True
        self.idle_deadline = now + lc.idle_timeout
        if self.held is not None or self.reader.buffered_bytes > 0:
            # pipelined: what follows is the pure core's, from where its _finish goes on
            self._process(now)
            self._header_started(now)
            self._process(now)
            if self.current is None:
                self._header_started(now)
        elif not self.reader.idle:
            # the start of another head behind this request, already inside the reader (the pure
            # _fed's last step): its deadline starts now
            self._header_started(now)
        return True

    def _done(self):
        """The end of every call (gateway.conn.ConnectionCore._done's twin)."""
        return self._finish()

    cdef object _finish(self):
        acts = self.acts
        batch = self.batch
        cdef Py_ssize_t n = PyList_GET_SIZE(batch)
        if n:
            state = self.state
            if state is CLOSING or state is CLOSED:
                del batch[:]
            else:
                data = batch[0] if n == 1 else b"".join(batch)
                del batch[:]
                tls = self.tls
                if tls.state is TLS_OPEN:
                    # gateway.tls.TLSConnection.send of an open connection
                    code, out = tls._pump.write(data)
                    if code == PUMP_FAILED:
                        tls._to(TLS_FAILED)
                        out = b""
                else:
                    out = tls.send(data)
                if out:
                    _out_of(acts).append(out)
        cdef double d = self.conn_deadline, o = self.idle_deadline
        if o and (not d or o < d):
            d = o
        o = self.up_deadline
        if o and (not d or o < d):
            d = o
        o = self.tunnel_deadline
        if o and (not d or o < d):
            d = o
        cdef bint direct = AC_DIRECT and type(acts) is Actions
        if direct:
            slot_set(acts, AC_DEADLINE, d if d else ZERO)
        else:
            acts.deadline = d
        if d and (d < self.armed or not self.armed):
            self.armed = d
            if direct:
                slot_set(acts, AC_REARM, d)
                slot_set(acts, AC_MORE, True)
            else:
                acts.rearm = d
                acts.more = True
        return acts


cdef inline double monotonic() noexcept:
    """time.monotonic(), to the bit: CLOCK_MONOTONIC in nanoseconds, as CPython converts it."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    cdef int64_t ns = <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec
    if ns % 1000000000 == 0:
        return <double>(ns // 1000000000)
    return <double>ns / 1e9


def monotonic_now():
    """The clock the shell's twin reads (a test holds it to time.monotonic)."""
    return monotonic()


# the shell's state (gateway.proxy.GatewayProtocol's slots) by offset, and what its callbacks call;
# set by bind_shell. The offsets are used only on an instance of exactly SHELL_CLASS.
cdef Py_ssize_t SH_RUNTIME_REF, SH_LISTENER, SH_SLOT_RELEASE, SH_LOOP, SH_RT, SH_TRANSPORT
cdef Py_ssize_t SH_CORE, SH_TIMER, SH_WHEEL
cdef object SHELL_CLASS = None          # gateway.proxy.NativeGatewayProtocol
cdef object PY_CONNECTION_MADE = None   # GatewayProtocol's own methods: any other class
cdef object PY_CONNECTION_LOST = None
cdef object PY_MORE = None
cdef object CLOSE_ACT = None            # gateway.conn.CLOSE, ABORT: what Actions.close says
cdef object ABORT_ACT = None
cdef object GENERAL_LOST = None         # gateway.conn.ConnectionCore.lost
cdef object get_running_loop = None
cdef object Wheel = None
cdef object conn_module = None          # gateway.conn: its core_class, as set_native left it


def bind_shell(*, protocol, native_protocol, get_running_loop_, wheel, conn, general_lost,
               close, abort):
    """Take gateway.proxy's shell classes (`protocol` owns the slots, `native_protocol` mixes
    Shell in before it), asyncio.get_running_loop, gateway.wheel.Wheel, gateway.conn and
    ConnectionCore.lost."""
    global SH_RUNTIME_REF, SH_LISTENER, SH_SLOT_RELEASE, SH_LOOP, SH_RT, SH_TRANSPORT
    global SH_CORE, SH_TIMER, SH_WHEEL, SHELL_CLASS, PY_CONNECTION_MADE, PY_CONNECTION_LOST
    global GENERAL_LOST, get_running_loop, Wheel, conn_module, PY_MORE, CLOSE_ACT, ABORT_ACT
    if (<type>native_protocol).__basicsize__ != (<type>protocol).__basicsize__:
        raise AttributeError("gateway._conn_c.Shell: the native shell's layout is not its base's")
    SH_RUNTIME_REF = _slot_offset(protocol, "_runtime_ref")
    SH_LISTENER = _slot_offset(protocol, "_listener_name")
    SH_SLOT_RELEASE = _slot_offset(protocol, "slot_release")
    SH_LOOP = _slot_offset(protocol, "loop")
    SH_RT = _slot_offset(protocol, "rt")
    SH_TRANSPORT = _slot_offset(protocol, "transport")
    SH_CORE = _slot_offset(protocol, "core")
    SH_TIMER = _slot_offset(protocol, "timer")
    SH_WHEEL = _slot_offset(protocol, "wheel")
    PY_CONNECTION_MADE = protocol.connection_made
    PY_CONNECTION_LOST = protocol.connection_lost
    PY_MORE = protocol._more
    CLOSE_ACT, ABORT_ACT = close, abort
    GENERAL_LOST = general_lost
    get_running_loop = get_running_loop_
    Wheel = wheel
    conn_module = conn
    SHELL_CLASS = native_protocol


cdef class Shell:
    """The native twin of gateway.proxy.GatewayProtocol's data_received, connection_made and
    connection_lost, mixed in before it (`NativeGatewayProtocol(Shell, GatewayProtocol)`; no
    fields of its own, so the protocol's slots stay where they are, and are read and written here
    by their offsets): the arrival goes to a native core's C method with the clock read in C, and
    the core's one write is made here; anything rarer is the protocol's `_more`. A pure core is
    called as GatewayProtocol would call it, and an instance of another class gets
    GatewayProtocol's own methods."""

    def __init__(self, runtime_ref, listener_name):
        """GatewayProtocol.__init__'s twin."""
        if type(self) is not SHELL_CLASS:
            self._runtime_ref = runtime_ref
            self._listener_name = listener_name
            self.slot_release = None
            return
        slot_set(self, SH_RUNTIME_REF, runtime_ref)
        slot_set(self, SH_LISTENER, listener_name)
        slot_set(self, SH_SLOT_RELEASE, None)

    def data_received(self, data):
        core = self.core
        if isinstance(core, Core):
            acts = (<Core>core)._receive(data, monotonic())
        else:
            acts = core.receive(data, monotonic())
        _apply(self, acts, self.transport)

    def _more(self, acts):
        """GatewayProtocol._more's twin (the rarer actions, in its order); log records and
        upstream connects are left to it."""
        if type(self) is not SHELL_CLASS or acts.logs is not None or acts.connects is not None:
            return PY_MORE(self, acts)
        acts.more = False
        close = acts.close
        if close:
            acts.close = 0
            acts.reading = None
            _shell_cancel_timer(self)
            acts.rearm = 0.0
            if close == CLOSE_ACT:
                slot_get(self, SH_TRANSPORT).close()
            elif close == ABORT_ACT:
                slot_get(self, SH_TRANSPORT).abort()
            return
        reading = acts.reading
        if reading is not None:
            acts.reading = None
            if reading:
                slot_get(self, SH_TRANSPORT).resume_reading()
            else:
                slot_get(self, SH_TRANSPORT).pause_reading()
        rearm = acts.rearm
        if rearm:
            acts.rearm = 0.0
            slot_get(self, SH_WHEEL).arm(self, rearm)   # instead of what was armed before

    def connection_made(self, transport):
        """GatewayProtocol.connection_made's twin (the same steps, in its order)."""
        if type(self) is not SHELL_CLASS:
            return PY_CONNECTION_MADE(self, transport)
        loop = get_running_loop()
        slot_set(self, SH_LOOP, loop)
        runtime = slot_get(self, SH_RUNTIME_REF)()
        rt = runtime.listeners[slot_get(self, SH_LISTENER)]
        slot_set(self, SH_RT, rt)
        wheel = rt.wheel
        if wheel is None or wheel.loop is not loop:
            wheel = Wheel(loop)
            rt.wheel = wheel
        slot_set(self, SH_WHEEL, wheel)
        slot_set(self, SH_TRANSPORT, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        host = peer[0]
        port = peer[1]
        core = conn_module.core_class(rt, host if type(host) is str else str(host),
                                      port if type(port) is int else int(port), monotonic())
        if isinstance(core, Core):
            (<Core>core).owner = self
        else:
            core.owner = self
        slot_set(self, SH_CORE, core)
        slot_set(self, SH_TIMER, None)
        rt.open_connections += 1
        rt.protocols.add(self)
        observer = rt.observer
        if observer is not NULL_OBSERVER:
            observer.connection_opened(rt.spec.name)
        _apply(self, core.acts, transport)

    def connection_lost(self, exc):
        """GatewayProtocol.connection_lost's twin; a native core's common case (a connection whose
        handshake finished, with no exchange and no HTTP/2 session left) without its Python
        `lost`."""
        if type(self) is not SHELL_CLASS:
            return PY_CONNECTION_LOST(self, exc)
        core = slot_get(self, SH_CORE)
        if core.state is CLOSED:
            _shell_cancel_timer(self)
            _set_owner(core, None)
            return
        rt = slot_get(self, SH_RT)
        rt.open_connections -= 1
        rt.protocols.discard(self)
        observer = rt.observer
        if observer is not NULL_OBSERVER:
            observer.connection_closed(rt.spec.name)
        _shell_cancel_timer(self)
        cdef Core c
        if isinstance(core, Core) and (<Core>core).h2 is None and (<Core>core).current is None \
                and (<Core>core).done_event is not None:
            # ConnectionCore.lost with nothing to log: closed, no deadline, done
            c = <Core>core
            c.state = CLOSED
            c.conn_deadline = c.idle_deadline = c.up_deadline = c.tunnel_deadline = 0.0
            acts = c._finish()
        else:
            acts = GENERAL_LOST(core, monotonic())
        # nothing can be written or closed any more; the records still go out
        del acts.out[:]
        acts.connects = None
        acts.reading = None
        acts.close = 0
        acts.rearm = 0.0
        acts.more = False
        if acts.logs is not None:
            self._logs(acts)
        # the core's way back to this shell is the one cycle of a connection: broken here, the
        # connection's objects (its SSL included) are freed now by reference counting
        _set_owner(core, None)
        release = slot_get(self, SH_SLOT_RELEASE)
        if release is not None:
            slot_set(self, SH_SLOT_RELEASE, None)
            release()

cdef int _apply(shell, acts, transport) except -1:
    """GatewayProtocol._apply: the core's one write, then the rarer actions if any."""
    cdef list out = _out_of(acts)
    cdef Py_ssize_t n = PyList_GET_SIZE(out)
    if n:
        payload = out[0] if n == 1 else b"".join(out)
        del out[:]
        transport.write(payload)
    if _more_of(acts):
        shell._more(acts)
    return 0


cdef int _shell_cancel_timer(shell) except -1:
    if slot_get(shell, SH_TIMER) is not None:
        slot_get(shell, SH_WHEEL).disarm(shell)     # the wheel lets go of this connection
    return 0


cdef inline int _set_owner(core, owner) except -1:
    if isinstance(core, Core):
        (<Core>core).owner = owner
    else:
        core.owner = owner
    return 0
