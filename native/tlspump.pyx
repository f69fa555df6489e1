# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Native twin of gateway.tlspump's byte pump: one call per arrival instead of a dozen cffi calls.

How this works: OpenSSL is reached only through the function pointers of the cryptography bindings
(the same OpenSSL pyOpenSSL runs on; this module links none). `bind()` takes their addresses once,
from gateway.tlspump. A `Pump` holds the SSL* and the two memory BIOs of one pyOpenSSL Connection (and
the Connection itself, which owns them). Each method feeds the arriving ciphertext, drives OpenSSL
until it wants more, and drains what it wrote, in one call, returning a result code instead of
raising for want-read. Reads go through a stack buffer; the plaintext of one call becomes one bytes
object. A failure leaves OpenSSL's error queue to `error_factory` (set by bind), which turns it into
the same SSL.Error pyOpenSSL would raise; that Python call only happens on the failure path.

The GIL is held throughout: OpenSSL may call back into pyOpenSSL's (cffi) verify, SNI and ALPN
callbacks from inside SSL_do_handshake, exactly as it does when pyOpenSSL drives it.
gateway/tlspump.py holds the pure twin (`PyPump`) and the unit suite runs the TLS tests on both.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.weakref cimport PyWeakref_NewRef
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ
from libc.string cimport memset
from libc.stdint cimport uintptr_t

include "slots.pxi"

ctypedef int (*ssl_fn)(void *ssl) noexcept
ctypedef int (*io_fn)(void *obj, void *buf, int n) noexcept
ctypedef int (*err_fn)(void *ssl, int ret) noexcept
ctypedef void (*void_fn)() noexcept
ctypedef void *(*bio_new_fn)(void *method) noexcept
ctypedef void *(*method_fn)() noexcept
ctypedef void (*set_bio_fn)(void *ssl, void *rbio, void *wbio) noexcept
ctypedef long (*mem_data_fn)(void *bio, char **data) noexcept
ctypedef int (*bio_free_fn)(void *bio) noexcept
ctypedef int (*pending_fn)(const void *ssl) noexcept
ctypedef void *(*ssl_new_fn)(void *ctx) noexcept
ctypedef void (*ssl_free_fn)(void *ssl) noexcept
ctypedef void (*accept_state_fn)(void *ssl) noexcept
ctypedef long (*set_mode_fn)(void *ssl, long mode) noexcept
ctypedef void *(*get_ptr_fn)(const void *obj) noexcept
ctypedef void (*x509_free_fn)(void *x509) noexcept
ctypedef int (*i2d_bio_fn)(void *bio, void *x509) noexcept
ctypedef size_t (*master_key_fn)(const void *sess, unsigned char *out, size_t n) noexcept
ctypedef const char *(*name_fn)(const void *obj) noexcept
ctypedef const char *(*servername_fn)(const void *ssl, int type) noexcept
ctypedef void (*alpn_fn)(const void *ssl, const unsigned char **data, unsigned int *len) noexcept

cdef ssl_fn c_do_handshake = NULL
cdef ssl_fn c_shutdown = NULL
cdef io_fn c_ssl_read = NULL
cdef io_fn c_ssl_write = NULL
cdef io_fn c_bio_read = NULL
cdef io_fn c_bio_write = NULL
cdef err_fn c_get_error = NULL
cdef void_fn c_clear_error = NULL
cdef bio_new_fn c_bio_new = NULL
cdef method_fn c_bio_s_mem = NULL
cdef set_bio_fn c_set_bio = NULL
cdef mem_data_fn c_mem_data = NULL
cdef bio_free_fn c_bio_free = NULL
cdef pending_fn c_ssl_pending = NULL
cdef ssl_new_fn c_ssl_new = NULL
cdef ssl_free_fn c_ssl_free = NULL
cdef accept_state_fn c_set_accept_state = NULL
cdef set_mode_fn c_set_mode = NULL
cdef long auto_retry = 0
cdef get_ptr_fn c_peer_certificate = NULL       # SSL_get_peer_certificate (a reference of ours)
cdef x509_free_fn c_x509_free = NULL
cdef i2d_bio_fn c_i2d_x509_bio = NULL
cdef get_ptr_fn c_get_session = NULL
cdef master_key_fn c_master_key = NULL
cdef get_ptr_fn c_store_current_cert = NULL
cdef ssl_fn c_session_reused = NULL             # SSL_session_reused
cdef name_fn c_get_version = NULL               # SSL_get_version
cdef get_ptr_fn c_current_cipher = NULL         # SSL_get_current_cipher
cdef name_fn c_cipher_name = NULL               # SSL_CIPHER_get_name
cdef servername_fn c_servername = NULL          # SSL_get_servername
cdef alpn_fn c_get0_alpn = NULL                # SSL_get0_alpn_selected
cdef bytes ALPN_H2 = b"h2"
cdef bytes ALPN_HTTP11 = b"http/1.1"
cdef object sha256 = None
cdef unsigned char KEY_BUF[64]          # a session's secret passes through here, wiped after use
cdef object error_factory = None
cdef dict _owners = {}          # SSL address -> weak reference to its owner (see server())
cdef object renewed_hook = None

# SSL_get_error(3) codes
cdef enum:
    E_NONE = 0
    E_SSL = 1
    E_WANT_READ = 2
    E_WANT_WRITE = 3
    E_SYSCALL = 5
    E_ZERO_RETURN = 6

# Result codes (gateway.tls mirrors them)
WANT = 0        # nothing more to do until more bytes arrive
DONE = 1        # the handshake completed
CLOSED = 2      # the peer sent close_notify
FAILED = 3      # a TLS error; `Pump.error` holds it

cdef enum:
    CHUNK = 32768
    MAX_WRITE = 16384           # one record per SSL_write: OpenSSL writes whole records to the BIO
    RENEW_AT = 16384            # a call that moved more than this through a BIO renews both

FUNCTIONS = ("SSL_do_handshake", "SSL_shutdown", "SSL_read", "SSL_write", "BIO_read", "BIO_write",
             "SSL_get_error", "ERR_clear_error", "BIO_new", "BIO_s_mem", "SSL_set_bio",
             "BIO_get_mem_data", "BIO_free", "SSL_pending")
# what `server()` needs besides: a connection's own SSL, made from a pyOpenSSL-built context
SERVER_FUNCTIONS = ("SSL_new", "SSL_free", "SSL_set_accept_state", "SSL_set_mode",
                    "SSL_get_peer_certificate", "X509_free", "i2d_X509_bio", "SSL_get_session",
                    "SSL_SESSION_get_master_key", "X509_STORE_CTX_get_current_cert",
                    "SSL_session_reused", "SSL_get_version", "SSL_get_current_cipher",
                    "SSL_CIPHER_get_name", "SSL_get_servername", "SSL_get0_alpn_selected")


def bind(dict addresses, factory, renewed):
    """Take OpenSSL's entry points (name -> address, as ints), the error factory and the hook
    told of new BIOs (so the pyOpenSSL Connection never holds a freed pointer)."""
    global c_do_handshake, c_shutdown, c_ssl_read, c_ssl_write, c_bio_read, c_bio_write
    global c_get_error, c_clear_error, error_factory, renewed_hook
    global c_bio_new, c_bio_s_mem, c_set_bio, c_mem_data, c_bio_free, c_ssl_pending
    for name in FUNCTIONS:
        if not addresses.get(name):
            raise ValueError(f"no address for {name}")
    c_do_handshake = <ssl_fn><uintptr_t>addresses["SSL_do_handshake"]
    c_shutdown = <ssl_fn><uintptr_t>addresses["SSL_shutdown"]
    c_ssl_read = <io_fn><uintptr_t>addresses["SSL_read"]
    c_ssl_write = <io_fn><uintptr_t>addresses["SSL_write"]
    c_bio_read = <io_fn><uintptr_t>addresses["BIO_read"]
    c_bio_write = <io_fn><uintptr_t>addresses["BIO_write"]
    c_get_error = <err_fn><uintptr_t>addresses["SSL_get_error"]
    c_clear_error = <void_fn><uintptr_t>addresses["ERR_clear_error"]
    c_bio_new = <bio_new_fn><uintptr_t>addresses["BIO_new"]
    c_bio_s_mem = <method_fn><uintptr_t>addresses["BIO_s_mem"]
    c_set_bio = <set_bio_fn><uintptr_t>addresses["SSL_set_bio"]
    c_mem_data = <mem_data_fn><uintptr_t>addresses["BIO_get_mem_data"]
    c_bio_free = <bio_free_fn><uintptr_t>addresses["BIO_free"]
    c_ssl_pending = <pending_fn><uintptr_t>addresses["SSL_pending"]
    error_factory = factory
    renewed_hook = renewed


def bind_server(dict addresses, long mode_auto_retry, hash_factory):
    """Take the entry points `server()` and the handshake's readers need (SERVER_FUNCTIONS),
    SSL_MODE_AUTO_RETRY and hashlib's sha256 (for `session_digest`)."""
    global c_ssl_new, c_ssl_free, c_set_accept_state, c_set_mode, auto_retry, sha256
    global c_peer_certificate, c_x509_free, c_i2d_x509_bio, c_get_session, c_master_key
    global c_store_current_cert, c_session_reused, c_get_version, c_current_cipher, c_cipher_name
    global c_servername, c_get0_alpn
    for name in SERVER_FUNCTIONS:
        if not addresses.get(name):
            raise ValueError(f"no address for {name}")
    c_ssl_new = <ssl_new_fn><uintptr_t>addresses["SSL_new"]
    c_ssl_free = <ssl_free_fn><uintptr_t>addresses["SSL_free"]
    c_set_accept_state = <accept_state_fn><uintptr_t>addresses["SSL_set_accept_state"]
    c_set_mode = <set_mode_fn><uintptr_t>addresses["SSL_set_mode"]
    c_peer_certificate = <get_ptr_fn><uintptr_t>addresses["SSL_get_peer_certificate"]
    c_x509_free = <x509_free_fn><uintptr_t>addresses["X509_free"]
    c_i2d_x509_bio = <i2d_bio_fn><uintptr_t>addresses["i2d_X509_bio"]
    c_get_session = <get_ptr_fn><uintptr_t>addresses["SSL_get_session"]
    c_master_key = <master_key_fn><uintptr_t>addresses["SSL_SESSION_get_master_key"]
    c_store_current_cert = <get_ptr_fn><uintptr_t>addresses["X509_STORE_CTX_get_current_cert"]
    c_session_reused = <ssl_fn><uintptr_t>addresses["SSL_session_reused"]
    c_get_version = <name_fn><uintptr_t>addresses["SSL_get_version"]
    c_current_cipher = <get_ptr_fn><uintptr_t>addresses["SSL_get_current_cipher"]
    c_cipher_name = <name_fn><uintptr_t>addresses["SSL_CIPHER_get_name"]
    c_servername = <servername_fn><uintptr_t>addresses["SSL_get_servername"]
    c_get0_alpn = <alpn_fn><uintptr_t>addresses["SSL_get0_alpn_selected"]
    auto_retry = mode_auto_retry
    sha256 = hash_factory


# -- what a handshake reads of its certificates and sessions (gateway.tls's pure readers' twins) ---
cdef object _der(void *x509):
    """The DER of a certificate, through a memory BIO (what pyOpenSSL's dump_certificate does)."""
    cdef void *bio = c_bio_new(c_bio_s_mem())
    cdef char *p = NULL
    cdef long n
    if bio == NULL:
        raise MemoryError("BIO_new failed")
    try:
        if c_i2d_x509_bio(bio, x509) <= 0:
            raise ValueError("i2d_X509_bio failed")
        n = c_mem_data(bio, &p)
        return PyBytes_FromStringAndSize(p, n) if n > 0 else b""
    finally:
        c_bio_free(bio)


def peer_leaf_der(uintptr_t ssl):
    """gateway.tlspump.peer_leaf_der's twin: the DER of the peer's certificate, or None."""
    cdef void *x = c_peer_certificate(<void *>ssl)
    if x == NULL:
        return None
    try:
        return _der(x)
    finally:
        c_x509_free(x)


def store_cert_der(uintptr_t store):
    """gateway.tlspump.current_cert_der's twin: the DER of the verify callback's current certificate."""
    cdef void *x = c_store_current_cert(<void *>store)
    if x == NULL:
        raise ValueError("no current certificate")
    return _der(x)


def session_digest(uintptr_t ssl, bytes label):
    """gateway.tlspump.session_digest's twin: SHA-256 over `label` and the current session's secret
    (None without a session or key). The key is only ever in KEY_BUF, seen by the hash through a
    memoryview, and wiped before this returns."""
    cdef const void *sess = c_get_session(<void *>ssl)
    cdef size_t n
    if sess == NULL:
        return None
    n = c_master_key(sess, KEY_BUF, 64)
    if n == 0:
        return None
    if n > 64:
        n = 64
    try:
        h = sha256(label)
        view = PyMemoryView_FromMemory(<char *>KEY_BUF, <Py_ssize_t>n, PyBUF_READ)
        try:
            h.update(view)
        finally:
            view.release()
        return h.digest()
    finally:
        memset(KEY_BUF, 0, 64)


def bound():
    return c_do_handshake != NULL


# -- the message callback (SSL_CTX_set_msg_callback) --------------------------------------------
# OpenSSL calls it for every record header and every protocol message of a connection, both ways,
# for its whole life: the filter must cost next to nothing per record, so it is C, and only the
# three messages gateway.tls cares about (a received ClientHello or Certificate, a written
# NewSessionTicket: a few per handshake) reach Python. gateway.tlspump.py_message_callback is the pure
# twin. The handler is gateway.tlspump._on_message(ssl address, write_p, message type, length).
cdef object message_handler = None

cdef enum:
    RT_HANDSHAKE = 22
    MT_CLIENT_HELLO = 1
    MT_NEW_SESSION_TICKET = 4
    MT_CERTIFICATE = 11

# The C enums above, for tests/unit/test_twin_constants.py to hold equal to gateway.tlspump's (a
# cdef enum is compiled in, so it cannot be handed in at load as the tables are)
ENUMS = {
    "CHUNK": CHUNK, "MAX_WRITE": MAX_WRITE, "RENEW_AT": RENEW_AT,
    "E_WANT_READ": E_WANT_READ, "E_SYSCALL": E_SYSCALL, "E_ZERO_RETURN": E_ZERO_RETURN,
    "RT_HANDSHAKE": RT_HANDSHAKE, "MT_CLIENT_HELLO": MT_CLIENT_HELLO,
    "MT_NEW_SESSION_TICKET": MT_NEW_SESSION_TICKET, "MT_CERTIFICATE": MT_CERTIFICATE,
    "KEY_MAX": sizeof(KEY_BUF),
}


# gateway.tls.TLSState's members (bind_connection)
cdef object T_HANDSHAKING = None
cdef object T_OPEN = None
cdef object T_PEER_CLOSED = None
cdef object T_CLOSED = None
cdef object T_FAILED = None
cdef bytes SESSION_LABEL_ = None        # gateway.tlspump.SESSION_LABEL (bind_connection)


cdef void _dispatch(uintptr_t ssl, int write_p, int msg_type, size_t length) noexcept with gil:
    owner = None
    try:
        ref = _owners.get(ssl)
        if ref is None:
            # an SSL of a pyOpenSSL Connection: the handler finds its owner
            if message_handler is not None:
                message_handler(ssl, write_p, msg_type, length)
            return
        owner = ref()
        if owner is None:
            return
        if isinstance(owner, TLSCore):
            # gateway.tls.TLSConnection._on_message, its two received cases here (a ClientHello
            # during the handshake, the common one, does nothing); a written ticket goes to it
            core = <TLSCore>owner
            if not write_p:
                if msg_type == MT_CLIENT_HELLO:
                    if core.state is not T_HANDSHAKING:
                        core._renegotiating = True
                    return
                if msg_type == MT_CERTIFICATE:
                    core._cert_bytes = <long>length - 4       # less the handshake header
                    return
            elif msg_type == MT_NEW_SESSION_TICKET and SESSION_LABEL_ is not None:
                # a ticket written while handshaking, on a listener that keeps chains: its
                # session's digest noted (TLSConnection._note_session)
                if core.state is T_HANDSHAKING and core._tls.keeps_chains:
                    d = session_digest(ssl, SESSION_LABEL_)
                    sessions = core._sessions
                    if d is not None and d != core._resumed_session and d not in sessions:
                        sessions.append(d)
                return
        owner._on_message(write_p, msg_type, length)
    except BaseException as exc:       # nothing crosses the C boundary, but it is kept
        if owner is not None:
            try:
                owner._keep_error("message", exc)
            except BaseException:
                pass


cdef void _on_message(int write_p, int version, int content_type, const void *buf, size_t length,
                      void *ssl, void *arg) noexcept nogil:
    cdef unsigned char t
    if content_type != RT_HANDSHAKE or length < 1:
        return
    t = (<const unsigned char *>buf)[0]
    if write_p:
        if t != MT_NEW_SESSION_TICKET:
            return
    elif t != MT_CLIENT_HELLO and t != MT_CERTIFICATE:
        return
    _dispatch(<uintptr_t>ssl, write_p, t, length)


def message_callback(handler):
    """Set the Python handler of the messages that pass the filter; returns the address of the C
    callback, to be installed with SSL_CTX_set_msg_callback."""
    global message_handler
    message_handler = handler
    return <uintptr_t>&_on_message


# -- the servername callback ------------------------------------------------------------------
# OpenSSL calls it for every ClientHello (gateway.tls._c_client_hello is the pure twin, and says
# what it decides). For a connection `server()` made, of a listener with one certificate, the
# common cases are decided here: a new session (nothing to judge yet), or a resumed one on a
# listener that neither verifies nor keeps chains. Anything else (several certificates: the SNI
# switch; a resumed session to judge; an SSL of a pyOpenSSL Connection) goes to the Python
# handler, which runs the pure callback's whole body (its first steps, repeated, change nothing).
cdef object servername_handler = None
cdef object servername_error = None      # (SSL address, exception): kept for the handshake's log
cdef enum:
    TLSEXT_ERR_OK = 0
    TLSEXT_ERR_ALERT_FATAL = 2
    ALERT_INTERNAL_ERROR = 80


cdef int _on_servername(void *ssl, int *alert, void *arg) noexcept with gil:
    cdef TLSCore core
    try:
        ref = _owners.get(<uintptr_t>ssl)
        owner = ref() if ref is not None else None
        if owner is not None and isinstance(owner, TLSCore) and c_session_reused != NULL:
            core = <TLSCore>owner
            tls = core._tls
            if tls.single_context:
                core._hello_seen = True
                if not c_session_reused(ssl):
                    return TLSEXT_ERR_OK
                if not tls.keeps_chains and tls.verifier is None:
                    core._resumed = True
                    return TLSEXT_ERR_OK
        return servername_handler(<uintptr_t>ssl, <uintptr_t>alert)
    except BaseException as exc:   # fail closed (the handler keeps its own errors): refused
        alert[0] = ALERT_INTERNAL_ERROR
        try:
            servername_error(<uintptr_t>ssl, exc)
        except BaseException:
            pass
        return TLSEXT_ERR_ALERT_FATAL


def servername_callback(handler, keep_error):
    """Set the Python handler (SSL address, alert address) -> OpenSSL's answer, for what the C
    callback does not decide, and what keeps an exception of its own (SSL address, exception);
    returns the address of the C callback, to be installed with
    SSL_CTX_set_tlsext_servername_callback."""
    global servername_handler, servername_error
    servername_handler = handler
    servername_error = keep_error
    return <uintptr_t>&_on_servername


# -- connections without a pyOpenSSL Connection -------------------------------------------------
# `server(ctx, owner)` makes the SSL of one client connection from a pyOpenSSL-built context, with
# its memory BIOs, in one call: what `SSL.Connection(ctx, None)` plus `set_accept_state()` do, minus
# its Python bookkeeping (a WeakValueDictionary entry, cffi gc wrappers, helper references). The
# Pump then owns the SSL and frees it when it goes. OpenSSL's callbacks find the connection's
# owner (gateway.tls.TLSConnection) by the SSL's address in `_owners`, which holds a weak
# reference: the entry lives exactly as long as the Pump, which removes it before it frees the
# SSL, so an address OpenSSL reuses can never find a dead connection's owner.
def owner_of(uintptr_t ssl):
    """The owner registered for this SSL address by `server()`, or None."""
    ref = _owners.get(ssl)
    return ref() if ref is not None else None


def registered():
    """How many SSLs made by `server()` are alive (a test's leak check)."""
    return len(_owners)


def server(uintptr_t ctx, owner):
    """A Pump owning a new server-side SSL made from `ctx` (an SSL_CTX address), registered
    under `owner` (weakly) for OpenSSL's callbacks."""
    cdef void *ssl
    cdef void *r
    cdef void *w
    cdef Pump pump
    if c_ssl_new == NULL or c_do_handshake == NULL:
        raise RuntimeError("gateway._tls_c is not bound to OpenSSL")
    ssl = c_ssl_new(<void *>ctx)
    if ssl == NULL:
        raise MemoryError("SSL_new failed")
    c_set_mode(ssl, auto_retry)
    r = c_bio_new(c_bio_s_mem())
    w = c_bio_new(c_bio_s_mem()) if r != NULL else NULL
    if w == NULL:
        if r != NULL:
            c_bio_free(r)
        c_ssl_free(ssl)
        raise MemoryError("BIO_new failed")
    c_set_bio(ssl, r, w)            # the SSL owns both BIOs from here
    c_set_accept_state(ssl)
    pump = Pump.__new__(Pump, None, <uintptr_t>ssl, <uintptr_t>r, <uintptr_t>w)
    pump.owns = 1
    _owners[<uintptr_t>ssl] = PyWeakref_NewRef(owner, None)
    return pump


cdef class Pump:
    """The pump of one server connection; see gateway.tlspump.PyPump for the contract."""
    cdef void *ssl
    cdef void *rbio         # network -> OpenSSL
    cdef void *wbio         # OpenSSL -> network
    cdef object owner       # the pyOpenSSL Connection that owns ssl and both BIOs, or None
    cdef int owns           # made by server(): this Pump owns the SSL (and so both BIOs)
    cdef public object error

    def __cinit__(self, owner, uintptr_t ssl, uintptr_t rbio, uintptr_t wbio):
        if c_do_handshake == NULL:
            raise RuntimeError("gateway._tls_c is not bound to OpenSSL")
        if not ssl or not rbio or not wbio:
            raise ValueError("a Pump needs an SSL and two memory BIOs")
        self.owner = owner
        self.ssl = <void *>ssl
        self.rbio = <void *>rbio
        self.wbio = <void *>wbio
        self.owns = 0
        self.error = None

    def __dealloc__(self):
        if self.owns and self.ssl != NULL:
            if _owners is not None:
                _owners.pop(<uintptr_t>self.ssl, None)
            c_ssl_free(self.ssl)
            self.ssl = NULL

    @property
    def ssl_address(self):
        return <uintptr_t>self.ssl

    # what the handshake reads of this SSL (gateway.tlspump.PyPump's methods are the pure twins)
    def leaf_der(self):
        """The DER of the peer's certificate, or None."""
        if c_peer_certificate == NULL:
            raise RuntimeError("gateway._tls_c: bind_server was not called")
        return peer_leaf_der(<uintptr_t>self.ssl)

    def session_digest(self, bytes label):
        """SHA-256 over `label` and the current session's secret, or None."""
        if c_get_session == NULL:
            raise RuntimeError("gateway._tls_c: bind_server was not called")
        return session_digest(<uintptr_t>self.ssl, label)

    def selected_alpn(self):
        """The protocol ALPN chose (b"h2", b"http/1.1", another), or None."""
        cdef const unsigned char *proto = NULL
        cdef unsigned int n = 0
        if c_get0_alpn == NULL:
            raise RuntimeError("gateway._tls_c: bind_server was not called")
        c_get0_alpn(self.ssl, &proto, &n)
        if n == 0 or proto == NULL:
            return None
        if n == 2 and proto[0] == 104 and proto[1] == 50:          # "h2"
            return ALPN_H2
        if n == 8 and (<const char *>proto)[:8] == b"http/1.1":
            return ALPN_HTTP11
        return (<const char *>proto)[:n]

    def store_cert_der(self, uintptr_t store):
        """The DER of the verify callback's current certificate (`store`: its X509_STORE_CTX)."""
        if c_store_current_cert == NULL:
            raise RuntimeError("gateway._tls_c: bind_server was not called")
        return store_cert_der(store)

    cdef int _feed(self, bytes data) except -1:
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef char *p = PyBytes_AS_STRING(data)
        cdef int w, step
        while n > 0:
            step = <int>(n if n < 0x40000000 else 0x40000000)
            w = c_bio_write(self.rbio, p, step)
            if w <= 0:
                raise MemoryError("BIO_write failed")
            p += w
            n -= w
        return 0

    cdef bytes _drain(self):
        cdef char buf[CHUNK]
        cdef int r = c_bio_read(self.wbio, buf, CHUNK)
        if r <= 0:
            return b""
        if r < CHUNK:
            return PyBytes_FromStringAndSize(buf, r)
        parts = [PyBytes_FromStringAndSize(buf, r)]
        while True:
            r = c_bio_read(self.wbio, buf, CHUNK)
            if r <= 0:
                break
            parts.append(PyBytes_FromStringAndSize(buf, r))
            if r < CHUNK:
                break
        return b"".join(parts)

    cdef int _carry(self, void *old, void *new) except -1:
        cdef char *p = NULL
        cdef long n = c_mem_data(old, &p)
        if n > 0 and c_bio_write(new, p, <int>n) != n:
            raise MemoryError("BIO_write failed")
        return 0

    cpdef object renew(self):
        """Swap in empty memory BIOs. A memory BIO keeps the largest buffer it ever held (the
        handshake's flights, a 256 KB read): an idle connection should not. Whatever is still
        pending moves across; OpenSSL frees the old pair."""
        cdef void *r = c_bio_new(c_bio_s_mem())
        cdef void *w = c_bio_new(c_bio_s_mem()) if r != NULL else NULL
        if w == NULL:
            if r != NULL:
                c_bio_free(r)
            return False
        try:
            self._carry(self.rbio, r)
            self._carry(self.wbio, w)
        except MemoryError:
            c_bio_free(r)
            c_bio_free(w)
            return False
        c_set_bio(self.ssl, r, w)
        self.rbio = r
        self.wbio = w
        if self.owner is not None:
            renewed_hook(self.owner, <uintptr_t>r, <uintptr_t>w)
        return True

    cdef int _fail(self, int code) except -1:
        # pyOpenSSL's SysCallError(-1, "Unexpected EOF") and SSL.Error(queue) both come from here
        self.error = error_factory(self.owner, code)
        return FAILED

    cpdef tuple handshake(self, bytes data):
        """Feed `data`, drive the handshake; returns (WANT | DONE | FAILED, records to send)."""
        cdef int r, e, code
        if PyBytes_GET_SIZE(data):
            self._feed(data)
        c_clear_error()
        r = c_do_handshake(self.ssl)
        if r == 1:
            code = DONE
        else:
            e = c_get_error(self.ssl, r)
            code = WANT if e == E_WANT_READ else self._fail(e)
        return code, self._drain()

    cpdef tuple read(self, bytes data):
        """Feed `data`, read all the plaintext it completes; returns (WANT | CLOSED | FAILED,
        plaintext, records to send). Once a record was read and neither the BIO nor OpenSSL holds
        anything more, the SSL_read that would only say want-read is not made."""
        cdef char buf[CHUNK]
        cdef char *left = NULL
        cdef int used = 0, r, e, code = WANT
        cdef list parts = None
        if PyBytes_GET_SIZE(data):
            self._feed(data)
        c_clear_error()
        while True:
            r = c_ssl_read(self.ssl, buf + used, CHUNK - used)
            if r > 0:
                used += r
                if used == CHUNK:
                    if parts is None:
                        parts = []
                    parts.append(PyBytes_FromStringAndSize(buf, used))
                    used = 0
                if c_mem_data(self.rbio, &left) <= 0 and c_ssl_pending(self.ssl) <= 0:
                    break       # code is WANT
                continue
            e = c_get_error(self.ssl, r)
            if e == E_WANT_READ:
                code = WANT
            elif e == E_ZERO_RETURN:
                code = CLOSED
            else:
                code = self._fail(e)
            break
        if parts is None:
            plain = PyBytes_FromStringAndSize(buf, used) if used else b""
        else:
            if used:
                parts.append(PyBytes_FromStringAndSize(buf, used))
            plain = b"".join(parts)
        out = self._drain()
        if code == WANT and (PyBytes_GET_SIZE(data) > RENEW_AT or PyBytes_GET_SIZE(out) > RENEW_AT):
            self.renew()
        return code, plain, out

    cpdef tuple write(self, bytes data):
        """Encrypt all of `data`; returns (WANT | FAILED, records to send)."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef char *p = PyBytes_AS_STRING(data)
        cdef int r, step
        c_clear_error()
        while n > 0:
            step = <int>(n if n < MAX_WRITE else MAX_WRITE)
            r = c_ssl_write(self.ssl, p, step)
            if r <= 0:
                return self._fail(c_get_error(self.ssl, r)), self._drain()
            p += r
            n -= r
        out = self._drain()
        if PyBytes_GET_SIZE(out) > RENEW_AT:
            self.renew()
        return WANT, out

    cpdef bytes shutdown(self):
        """Queue a close_notify; returns the records to send (empty if OpenSSL refused)."""
        c_clear_error()
        if c_shutdown(self.ssl) < 0:
            c_clear_error()
        return self._drain()


# -- the TLS connection: gateway.tls.TLSConnection's state in a C struct, its arrivals in C ------
# `NativeTLSConnection(TLSCore, TLSConnection)` (gateway.tls): the struct has every name of
# gateway.tls.STATE (tests/unit/test_tls.py holds the two twins' names equal); `__init__`,
# `receive`, `send`, `close`, `_to` and `_handshake_done` are here, everything rarer (the callbacks,
# a verdict on a resumed session, refusals) is the pure class's, reached as a method. Only
# connections whose SSL `server()` makes get this twin (ListenerTLS.connection).
cdef object HandshakeDoneType = None
# HandshakeDone's fields by slot offset (slots.pxi), when the class allows building it so
cdef bint HD_DIRECT = False
cdef Py_ssize_t HD_IDENTITY, HD_STATUS, HD_RESUMED, HD_PROTOCOL, HD_CIPHER, HD_SERVER_NAME, HD_NAMES
cdef object HandshakeFailedType = None
cdef object NO_EVENTS_ = ()
cdef object NO_SESSIONS_ = ()
cdef object NOT_VERIFIED = None
cdef object VERIFY_NOT_FOUND = None
cdef object ssl_pointer = None          # address -> the cffi `SSL *` the pure methods take
cdef object monotonic_clock = None
cdef dict _names = {}                   # gateway.tlspump._NAMES' twin: one string per distinct name
cdef Py_ssize_t NAMES_MAX = 1024
cdef int NAMETYPE_HOST = 0


def bind_connection(*, states, handshake_done, handshake_failed, no_events, no_sessions,
                    not_verified, not_found, pointer, monotonic, names_max, nametype_host,
                    session_label=None):
    """Take gateway.tls's constants: the TLSState members (handshaking, open, peer_closed, closed,
    failed), the event classes, its empty tuples, the statuses, the `SSL *` maker and the clock."""
    global T_HANDSHAKING, T_OPEN, T_PEER_CLOSED, T_CLOSED, T_FAILED, HandshakeDoneType
    global HandshakeFailedType, NO_EVENTS_, NO_SESSIONS_, NOT_VERIFIED, VERIFY_NOT_FOUND
    global ssl_pointer, monotonic_clock, NAMES_MAX, NAMETYPE_HOST, SESSION_LABEL_
    SESSION_LABEL_ = session_label
    T_HANDSHAKING, T_OPEN, T_PEER_CLOSED, T_CLOSED, T_FAILED = states
    if T_OPEN not in T_HANDSHAKING._successors:
        raise AttributeError("gateway._tls_c: a handshake's end is not an allowed move")
    HandshakeDoneType = handshake_done
    _bind_done(handshake_done)
    HandshakeFailedType = handshake_failed
    NO_EVENTS_ = no_events
    NO_SESSIONS_ = no_sessions
    NOT_VERIFIED = not_verified
    VERIFY_NOT_FOUND = not_found
    ssl_pointer = pointer
    monotonic_clock = monotonic
    NAMES_MAX = names_max
    NAMETYPE_HOST = nametype_host


cdef _bind_done(cls):
    """HandshakeDone made in C (fields by offset) when it is a plain slotted class of exactly these
    fields, in this order; else through its constructor."""
    global HD_DIRECT, HD_IDENTITY, HD_STATUS, HD_RESUMED, HD_PROTOCOL, HD_CIPHER, HD_SERVER_NAME
    global HD_NAMES
    names = ("identity", "status", "resumed", "protocol", "cipher", "server_name",
             "certificate_names")
    HD_DIRECT = False
    if tuple(getattr(cls, "__slots__", ())) != names or not plain_alloc(cls):
        return
    HD_IDENTITY, HD_STATUS, HD_RESUMED, HD_PROTOCOL, HD_CIPHER, HD_SERVER_NAME, HD_NAMES = (
        _slot_offset(cls, n) for n in names)
    HD_DIRECT = True


cdef object _done_event(identity, status, bint resumed, protocol, cipher, server_name, names):
    """HandshakeDone(identity, status, resumed, protocol, cipher, server_name, names)."""
    if not HD_DIRECT:
        return HandshakeDoneType(identity, status, resumed, protocol, cipher, server_name, names)
    event = new_instance(HandshakeDoneType)
    slot_set(event, HD_IDENTITY, identity)
    slot_set(event, HD_STATUS, status)
    slot_set(event, HD_RESUMED, True if resumed else False)
    slot_set(event, HD_PROTOCOL, protocol)
    slot_set(event, HD_CIPHER, cipher)
    slot_set(event, HD_SERVER_NAME, server_name)
    slot_set(event, HD_NAMES, names)
    return event


cdef object _name_of(const char *raw):
    """gateway.tlspump.name_of's twin: the shared string of a name OpenSSL gives (NUL-terminated)."""
    cdef bytes key = raw
    name = _names.get(key)
    if name is None:
        if len(_names) >= NAMES_MAX:
            _names.clear()
        name = key.decode("ascii", "replace")
        _names[key] = name
    return name


cdef class TLSCore:
    """The state of one server TLS connection (every name of gateway.tls.STATE) and its common path."""

    cdef public object _tls, _conn, _ssl, _ctx, _pump, state, _chain, _decision, _verdict
    cdef public object identity, _sessions, _resumed_session, _callback_error, _awaiting
    cdef public bint _called, _resumed, _renegotiating, _hello_seen
    cdef public long _cert_bytes
    cdef public double started, handshake_s
    cdef object __weakref__

    def __init__(self, tls):
        """gateway.tls.TLSConnection.__init__'s twin for an SSL `server()` makes."""
        cdef Pump pump
        self._tls = tls
        ctx = tls.default_context
        self._ctx = ctx
        pump = server(tls._native_context_address(ctx), self)
        self._conn = None
        self._pump = pump
        self._ssl = ssl_pointer(<uintptr_t>pump.ssl)
        self.state = T_HANDSHAKING
        self._chain = []
        self._decision = None
        self._verdict = None
        self._called = False
        self._resumed = False
        self._renegotiating = False
        self._cert_bytes = -1
        self._hello_seen = False
        self._sessions = []
        self._resumed_session = None
        self._callback_error = None
        self._awaiting = None
        self.started = monotonic_clock()
        self.handshake_s = 0.0
        self.identity = None

    def _to(self, new):
        if new not in self.state._successors:
            raise RuntimeError(f"TLS state {self.state} -> {new} is not allowed")
        self.state = new

    def receive(self, bytes data):
        """gateway.tls.TLSConnection.receive's twin."""
        cdef Pump pump = <Pump>self._pump
        cdef int code
        state = self.state
        if state is T_OPEN:
            code, plain, out = pump.read(data)
            if code == WANT and not self._renegotiating:
                return out, plain, NO_EVENTS_
            return out, plain, (self._read_ended(code),)
        if state is not T_HANDSHAKING:
            return b"", b"", NO_EVENTS_
        code, out = pump.handshake(data)
        if code == WANT:
            return out, b"", NO_EVENTS_
        if code == FAILED:
            self._to(T_FAILED)
            return out, b"", (self._failure(pump.error),)
        if self._awaiting is not None:
            held = self._settle(out)
            if held is not None:
                return held
        event = _handshake_done(self)
        if type(event) is HandshakeFailedType:
            self._to(T_FAILED)
            return out + pump.shutdown(), b"", (event,)
        self.state = T_OPEN     # _to's move from HANDSHAKING, checked allowed at bind
        self._chain = None
        self._sessions = NO_SESSIONS_
        self._resumed_session = None
        code, plain, more = pump.read(b"")
        if more:
            out = out + more
        if code != WANT or self._renegotiating:
            return out, plain, (event, self._read_ended(code))
        pump.renew()
        return out, plain, (event,)

    def send(self, bytes data):
        cdef Pump pump = <Pump>self._pump
        cdef int code
        state = self.state
        if state is not T_OPEN and state is not T_PEER_CLOSED:
            return b""
        code, out = pump.write(data)
        if code == FAILED:
            self._to(T_FAILED)
            return b""
        return out

    def close(self):
        state = self.state
        if state is T_OPEN or state is T_PEER_CLOSED:
            self._to(T_CLOSED)
            return (<Pump>self._pump).shutdown()
        return b""

    def _handshake_done(self):
        """gateway.tls.TLSConnection._handshake_done's twin: the common outcomes here, the rest
        (a verdict still to make, a resumed session's, passthrough's identity) the pure methods'."""
        return _handshake_done(self)


cdef object _handshake_done(TLSCore self):
        """TLSCore._handshake_done (called from `receive` without a method lookup)."""
        cdef Pump pump = <Pump>self._pump
        cdef void *ssl = pump.ssl
        cdef const void *cipher
        cdef const char *sni
        tls = self._tls
        self.handshake_s = monotonic_clock() - self.started
        resumed = c_session_reused(ssl) != 0
        if tls.keeps_chains and not resumed and not self._sessions:
            self._note_session()
        identity = None
        status = None
        verifier = tls.verifier
        if verifier is not None:
            verdict = self._verdict
            if verdict is None and self._called:
                self._decide()
                verdict = self._verdict
                if not verdict.ok and not tls.reports:
                    return HandshakeFailedType(verdict.status, "client_cert_refused", verdict.detail,
                                               verdict.identity)
            elif verdict is None:
                leaf = pump.leaf_der()
                if leaf is not None:
                    verdict = self._resumed_verdict(leaf)
                    if not verdict.ok and not tls.reports:
                        return HandshakeFailedType(verdict.status, "resumed_client_refused",
                                                   verdict.detail, verdict.identity, True)
            if verdict is not None:
                identity, status = verdict.identity, verdict.status
                if self._sessions:
                    self._keep(verdict, verifier.cache)
            elif tls.mtls == "verify":
                if not tls.reports:
                    return HandshakeFailedType(VERIFY_NOT_FOUND, "client_cert_missing",
                                               "no certificate")
                status = VERIFY_NOT_FOUND
        elif tls.passthrough_cache is not None:
            identity = self._passthrough_identity(self._ssl)
            status = NOT_VERIFIED if identity is not None else None
        self.identity = identity
        cipher = c_current_cipher(ssl)
        sni = c_servername(ssl, NAMETYPE_HOST)
        return _done_event(identity, status, resumed, _name_of(c_get_version(ssl)),
                           _name_of(c_cipher_name(cipher)) if cipher != NULL else "",
                           _name_of(sni) if sni != NULL and sni[0] != 0 else None,
                           tls.certificate_names.get(self._ctx, ()))
