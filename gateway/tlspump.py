"""The pure TLS byte pump, and the one module that touches pyOpenSSL's private attributes.

How this works: gateway.tls drives OpenSSL itself rather than through pyOpenSSL's methods (which
raise an exception for every want-read and copy through a fresh 64 KB buffer per recv) and installs
its own C callbacks rather than pyOpenSSL's wrappers (which give no access to the verify store and
find a connection only through a pyOpenSSL Connection, which the native twin never makes). That
takes the cryptography bindings pyOpenSSL runs on (`OpenSSL._util.lib`, which upstream calls
unsupported) and pyOpenSSL's internals: a Connection's `_ssl` and memory BIOs, a Context's
`_context`, `Connection._reverse_mapping`, `X509._from_raw_x509_ptr`, the callback helpers a
Context may hold. All of it is here, behind small named functions, so a release that renames any
of it breaks this file alone, and the self-test at import (REQUIRED_BINDINGS, and PUMP_FUNCTIONS
for the native twin) says so at start rather than in the middle of a handshake.
tests/unit/test_layers.py holds every other module to that.

Three parts, none of which decides anything (what to refuse and with which alert, SNI, ALPN and
the connection's state machine are gateway.tls's):
- the readers: what a handshake reads of one SSL (the server name, the peer's leaf and chain, a
  session's digest, the version, cipher and ALPN), of a verify callback's store, and which
  TLSConnection owns an SSL that OpenSSL hands a callback; and the setters that install C callbacks
  on a context. gateway.tls's verify, servername and ALPN callbacks stay beside the policy they
  carry out, written against these readers and made C callbacks with `c_callback`.
- `PyPump`: one call per arrival: feed the ciphertext, drive OpenSSL until it wants more, drain
  what it wrote, and return a code (WANT, DONE, CLOSED, FAILED) rather than raise. It is the pure
  twin of native/tlspump.pyx's Pump, which calls the same OpenSSL functions through the addresses
  of these same bindings; `load_native` binds that extension to them once, at import.
- `py_message_callback`, the pure twin of native/tlspump.pyx's C message filter: OpenSSL calls it
  for every record, so it is pump machinery, and it only hands three messages to the connection.
No socket and no event loop here.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from OpenSSL import SSL, crypto
from OpenSSL._util import exception_from_error_queue as _error_from_queue
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from .errors import BindingsUnsupported

if TYPE_CHECKING:
    from . import _tls_c

# A cffi object of the bindings (an `SSL *`, an `X509_STORE_CTX *`, an `int *` out-parameter, a C
# callback): the bindings are untyped (cryptography declares `lib` and `ffi` as Any), so to the
# checker every such value is Any; the alias says which ones are C data. A value read from the
# bindings gets its type where it is bound, by an annotated name, which costs nothing at run time.
CData: TypeAlias = Any

# Every OpenSSL function and constant the TLS layer reaches through the `cryptography` bindings
# (pyOpenSSL's `_util.lib` is that same object). Upstream calls the raw bindings unsupported and
# has been removing names (44 -> 50 took out about 100), so they are checked once, here, before
# anything uses them: a missing one is a clear error at start, never an AttributeError in the middle
# of a handshake. The native pump's own needs (PUMP_FUNCTIONS) are checked where it is loaded, and
# a missing one there only costs the native twin (see load_native).
REQUIRED_BINDINGS = (
    "BIO_free", "BIO_get_mem_data", "BIO_new", "BIO_read", "BIO_s_mem", "BIO_write",
    "ERR_clear_error", "SSL_CTX_set_msg_callback", "SSL_CTX_set_tlsext_servername_callback",
    "SSL_CTX_set_verify", "SSL_SESSION_get_master_key", "SSL_do_handshake", "SSL_get_error",
    "SSL_get_ex_data_X509_STORE_CTX_idx", "SSL_get_session", "SSL_pending", "SSL_read",
    "SSL_session_reused",
    "SSL_set_bio", "SSL_shutdown", "SSL_write", "X509_STORE_CTX_get_current_cert",
    "X509_STORE_CTX_get_error_depth", "X509_STORE_CTX_get_ex_data", "X509_STORE_CTX_set_error",
    "X509_V_ERR_CERT_CHAIN_TOO_LONG", "X509_V_ERR_CERT_HAS_EXPIRED", "X509_V_ERR_CERT_REJECTED",
    "X509_V_ERR_CERT_REVOKED", "X509_V_ERR_INVALID_PURPOSE",
    "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "X509_up_ref",
    "SSL_CTX_set_alpn_select_cb", "SSL_get0_alpn_selected", "SSL_get_servername",
    "TLSEXT_NAMETYPE_host_name", "SSL_get_peer_certificate", "SSL_get_peer_cert_chain",
    "sk_X509_num", "sk_X509_value", "SSL_get_version", "SSL_get_current_cipher",
    "SSL_CIPHER_get_name", "SSL_set_SSL_CTX",
)


def missing_bindings(lib: object, names: Iterable[str]) -> tuple[str, ...]:
    """The names of `names` that `lib` does not have."""
    return tuple(n for n in names if not hasattr(lib, n))


def _cryptography_version() -> str:
    try:
        import cryptography
        return cryptography.__version__
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


_MISSING = missing_bindings(_lib, REQUIRED_BINDINGS)
if _MISSING:
    raise BindingsUnsupported(
        f"cryptography {_cryptography_version()} no longer exposes the OpenSSL function(s) "
        f"{', '.join(_MISSING)} that gateway.tls needs; install a cryptography within the range "
        f"pyproject.toml names")

# The X509_V_ERR_* a refusal records in the verify store (gateway.tls.REFUSAL_ALERTS picks one per
# verify status: OpenSSL's ssl_x509err2alert() turns it into the alert).
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = _lib.X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
X509_V_ERR_CERT_CHAIN_TOO_LONG = _lib.X509_V_ERR_CERT_CHAIN_TOO_LONG
X509_V_ERR_CERT_HAS_EXPIRED = _lib.X509_V_ERR_CERT_HAS_EXPIRED
X509_V_ERR_CERT_REVOKED = _lib.X509_V_ERR_CERT_REVOKED
X509_V_ERR_INVALID_PURPOSE = _lib.X509_V_ERR_INVALID_PURPOSE
X509_V_ERR_CERT_REJECTED = _lib.X509_V_ERR_CERT_REJECTED


# -- C callbacks and the contexts that call them ---------------------------------------------------
# The signatures OpenSSL calls (SSL_CTX_set_verify(3), SSL_CTX_set_tlsext_servername_callback(3),
# SSL_CTX_set_alpn_select_cb(3), SSL_CTX_set_msg_callback(3)).
VERIFY_CALLBACK = "int(int, X509_STORE_CTX *)"
SERVERNAME_CALLBACK = "int(SSL *, int *, void *)"
ALPN_SELECT_CALLBACK = ("int(SSL *, const unsigned char **, unsigned char *, const unsigned char *, "
                        "unsigned int, void *)")
MESSAGE_CALLBACK = "void(int, int, int, void *, size_t, SSL *, void *)"


def c_callback(signature: str) -> Callable[[Callable[..., object]], CData]:
    """A decorator making a Python function a C callback of `signature` (one of the four above).
    The object it returns must outlive every context that installed it; nothing may raise out of
    the function (cffi would only print it)."""
    decorator: Callable[[Callable[..., object]], CData] = _ffi.callback(signature)
    return decorator


def set_verify_callback(ctx: SSL.Context, flags: int, callback: CData) -> None:
    """SSL_CTX_set_verify with a C callback of VERIFY_CALLBACK: pyOpenSSL's Context is told
    nothing, so its _verify_helper stays None and a pump's failure skips it."""
    _lib.SSL_CTX_set_verify(ctx._context, flags, callback)


def set_servername_callback(ctx: SSL.Context, callback: CData) -> None:
    _lib.SSL_CTX_set_tlsext_servername_callback(ctx._context, callback)


def set_alpn_select_callback(ctx: SSL.Context, callback: CData) -> None:
    _lib.SSL_CTX_set_alpn_select_cb(ctx._context, callback, _ffi.NULL)


def set_message_callback(ctx: SSL.Context, callback: CData) -> None:
    """SSL_CTX_set_msg_callback: `py_message_callback` or NATIVE_MESSAGE_CALLBACK."""
    _lib.SSL_CTX_set_msg_callback(ctx._context, callback)


def context_address(ctx: SSL.Context) -> int:
    """The address of a context's SSL_CTX (what the native twin makes an SSL from)."""
    return int(_ffi.cast("uintptr_t", ctx._context))


def set_ssl_context(ssl: CData, ctx: SSL.Context) -> None:
    """SSL_set_SSL_CTX: the SNI switch of an SSL that has no pyOpenSSL Connection."""
    _lib.SSL_set_SSL_CTX(ssl, ctx._context)


ssl_of = attrgetter("_ssl")                 # a pyOpenSSL Connection's `SSL *`
ssl_pointer = partial(_ffi.cast, "SSL *")   # an SSL's address -> its `SSL *`
int_pointer = partial(_ffi.cast, "int *")   # an address -> an `int *` (a callback's alert)


def pointer_address(pointer: CData) -> int:
    """The address of a cffi pointer (an `SSL *`, an `X509_STORE_CTX *`), as an int."""
    return int(_ffi.cast("uintptr_t", pointer))


def c_bytes(pointer: CData, length: int) -> bytes:
    """A copy of `length` bytes at a C callback's pointer."""
    data: bytes = _ffi.buffer(pointer, length)[:]
    return data


# -- what a verify callback reads and sets of its store ---------------------------------------------
_STORE_SSL_IDX = _lib.SSL_get_ex_data_X509_STORE_CTX_idx()
_store_ssl = _lib.X509_STORE_CTX_get_ex_data
_store_cert = _lib.X509_STORE_CTX_get_current_cert
_x509_up_ref = _lib.X509_up_ref
_X509_from_ptr = crypto.X509._from_raw_x509_ptr
_ASN1 = crypto.FILETYPE_ASN1
_dump = crypto.dump_certificate
# OpenSSL's own, called as they are: (store) -> the depth of the current certificate, and
# (store, X509_V_ERR_*) -> the verify result a refusal (or an acceptance: X509_V_OK) leaves
verify_depth = _lib.X509_STORE_CTX_get_error_depth
set_verify_error = _lib.X509_STORE_CTX_set_error


def store_ssl(store: CData) -> CData:
    """The `SSL *` a verify callback's X509_STORE_CTX belongs to."""
    return _store_ssl(store, _STORE_SSL_IDX)


def current_cert_der(store: CData) -> bytes:
    x = _store_cert(store)
    _x509_up_ref(x)
    return _dump(_ASN1, _X509_from_ptr(x))


# -- facts of one SSL, read through the bindings (both twins: a native connection has no pyOpenSSL
# Connection to ask, and these are what its methods do) ------------------------------------------
NAMETYPE_HOST = _lib.TLSEXT_NAMETYPE_host_name
_ALPN_OUT = _ffi.new("const unsigned char **")
_ALPN_LEN = _ffi.new("unsigned int *")
session_reused = _lib.SSL_session_reused       # (ssl) -> nonzero when a session resumes


def servername(ssl: CData) -> bytes | None:
    name = _lib.SSL_get_servername(ssl, NAMETYPE_HOST)
    return _ffi.string(name) if name != _ffi.NULL else None


def peer_leaf_der(ssl: CData) -> bytes | None:
    """The DER of the peer's certificate (SSL_get_peer_certificate: a reference of our own,
    which the X509 wrapper frees), or None."""
    x = _lib.SSL_get_peer_certificate(ssl)
    if x == _ffi.NULL:
        return None
    return _dump(_ASN1, _X509_from_ptr(x))


def peer_chain_ders(ssl: CData) -> tuple[bytes, ...] | None:
    """SSL_get_peer_cert_chain as DER (on a server: without the leaf), or None without one."""
    stack = _lib.SSL_get_peer_cert_chain(ssl)
    if stack == _ffi.NULL:
        return None
    out: list[bytes] = []
    for i in range(_lib.sk_X509_num(stack)):
        x = _lib.sk_X509_value(stack, i)
        _x509_up_ref(x)
        out.append(_dump(_ASN1, _X509_from_ptr(x)))
    return tuple(out)


# The names a connection keeps for its logs (version, cipher, server name), one string per
# distinct name instead of one per connection; bounded (the server name is the client's choice).
_NAMES: dict[bytes, str] = {}
NAMES_MAX = 1024


def name_of(raw: bytes) -> str:
    """The one shared string of a name OpenSSL gives (native/tlspump.pyx's `_name_of` is the twin)."""
    name = _NAMES.get(raw)
    if name is None:
        if len(_NAMES) >= NAMES_MAX:
            _NAMES.clear()
        name = _NAMES[raw] = raw.decode("ascii", "replace")
    return name


def version_name(ssl: CData) -> str:
    return name_of(_ffi.string(_lib.SSL_get_version(ssl)))


def cipher_name(ssl: CData) -> str:
    cipher = _lib.SSL_get_current_cipher(ssl)
    return name_of(_ffi.string(_lib.SSL_CIPHER_get_name(cipher))) if cipher != _ffi.NULL else ""


def alpn_selected(ssl: CData) -> bytes:
    _lib.SSL_get0_alpn_selected(ssl, _ALPN_OUT, _ALPN_LEN)
    n = _ALPN_LEN[0]
    return _ffi.buffer(_ALPN_OUT[0], n)[:] if n else b""


# -- a session's digest -----------------------------------------------------------------------------
# What finds a resumed session's chain again (gateway.tls keeps each chain under the sessions it was
# admitted with): the session's own secret, its master key in TLS 1.2 (the same when the ticket is
# issued and when it is resumed, RFC 5077 4 / RFC 5246 F.1.4), the ticket's resumption PSK in TLS
# 1.3 (each NewSessionTicket is its own session, RFC 8446 4.6.1: OpenSSL makes a fresh s->session
# for every ticket it writes, so its key is readable when the message callback sees the ticket
# written; the resumed session's key is readable in the servername callback). Only a digest of the
# key is ever kept, in memory or in the workers' shared files: never the key.
_get_session = _lib.SSL_get_session
_session_master_key = _lib.SSL_SESSION_get_master_key
_KEY_MAX = 64                               # SSL_MAX_MASTER_KEY_LENGTH is 48 (a SHA-384 PSK)
_KEY_BUF = _ffi.new("unsigned char[]", _KEY_MAX)
_KEY_ZERO = bytes(_KEY_MAX)
SESSION_LABEL = b"mtls-gateway session chain v1\0"
_sha256 = hashlib.sha256


def session_digest(ssl: CData, label: bytes = SESSION_LABEL) -> bytes | None:
    """SHA-256 over a label and the current session's secret (None without a session or key).
    The key passes through one static buffer, wiped after use, and never becomes a Python object."""
    sess = _get_session(ssl)
    if sess == _ffi.NULL:
        return None
    n = _session_master_key(sess, _KEY_BUF, _KEY_MAX)
    if n <= 0:
        return None
    h = _sha256(label)
    h.update(_ffi.buffer(_KEY_BUF, n))
    _ffi.memmove(_KEY_BUF, _KEY_ZERO, n)
    return h.digest()


# -- the owner of an SSL ------------------------------------------------------------------------------
_Connection = SSL.Connection
_reverse_get = _Connection._reverse_mapping.get
# gateway._tls_c.owner_of once the native pump is bound (load_native)
_native_owner: Callable[[int], Any] | None = None


def owner(ssl: CData) -> Any:
    """The TLSConnection of an SSL (a cffi `SSL *`): one the native pump made (no pyOpenSSL
    Connection: gateway._tls_c's registry), else a pyOpenSSL Connection's app data; None for an
    SSL that is neither. Any to the checker: gateway.tls is a layer above, not named here (it
    gives the result its type where it calls this)."""
    if _native_owner is not None:
        tc = _native_owner(int(_ffi.cast("uintptr_t", ssl)))
        if tc is not None:
            return tc
    conn = _reverse_get(ssl)
    return conn._app_data if conn is not None else None


def keep_callback_error(ssl: CData, where: str, exc: BaseException) -> None:
    """Keep the first exception an OpenSSL callback caught on its connection, so the handshake's
    outcome names it (httptools keeps `_last_error` for the same reason): an exception may not
    cross the C boundary, but it must not vanish either."""
    try:
        owner(ssl)._keep_error(where, exc)
    except BaseException:   # noqa: BLE001 - the connection is gone or not ours: nothing to keep
        pass


# -- the message callback ----------------------------------------------------------------------------
# SSL_CTX_set_msg_callback: OpenSSL calls it for every record header and every protocol message, in
# both directions, for the life of the connection. Three messages matter to the connection
# (gateway.tls.TLSConnection._on_message says why): a received ClientHello, the received client
# Certificate and each NewSessionTicket written. The filter runs per record, so its native twin is C
# (native/tlspump.pyx); both hand the three messages to `_on_message`.
_RT_HANDSHAKE = 22
MT_CLIENT_HELLO = 1
MT_NEW_SESSION_TICKET = 4
MT_CERTIFICATE = 11


def _on_message(ssl_addr: int, write_p: int, msg_type: int, length: int) -> None:
    conn = _Connection._reverse_mapping.get(_ffi.cast("SSL *", ssl_addr))
    # the TLSConnection (a layer above) that set itself as the app data, which pyOpenSSL types None
    tc: Any = conn._app_data if conn is not None else None
    if tc is not None:
        tc._on_message(write_p, msg_type, length)


@c_callback(MESSAGE_CALLBACK)
def py_message_callback(write_p: int, version: int, content_type: int, buf: CData, length: int,
                        ssl: CData, arg: CData) -> None:
    """The pure twin of tlspump's C filter."""
    if content_type != _RT_HANDSHAKE or length < 1:
        return
    t = _ffi.cast("unsigned char *", buf)[0]
    if (t == MT_NEW_SESSION_TICKET) if write_p else (t == MT_CLIENT_HELLO or t == MT_CERTIFICATE):
        try:
            _on_message(int(_ffi.cast("uintptr_t", ssl)), write_p, t, length)
        except BaseException as exc:   # noqa: BLE001 - nothing crosses the C boundary
            keep_callback_error(ssl, "message", exc)


# -- the byte pump -----------------------------------------------------------------------------------
# One call per arrival: feed the ciphertext, drive OpenSSL until it wants more, drain what it wrote,
# and return a code rather than raise for want-read (pyOpenSSL raises an exception for every
# want-read and copies through a fresh 64 KB buffer per recv). `PyPump` is the pure twin, calling
# the same OpenSSL functions through pyOpenSSL's cffi bindings; native/tlspump.pyx is the native
# one, calling them through the addresses of those same bindings. gateway.tls.set_native picks.
WANT, DONE, CLOSED, FAILED = 0, 1, 2, 3
_CHUNK = 32768
_MAX_WRITE = 16384
_RENEW_AT = 16384   # a call that moved more than this through a BIO renews both (see PyPump.renew)
_SSL_ERROR_WANT_READ = 2
_SSL_ERROR_SYSCALL = 5
_SSL_ERROR_ZERO_RETURN = 6
PUMP_FUNCTIONS = ("SSL_do_handshake", "SSL_shutdown", "SSL_read", "SSL_write", "BIO_read", "BIO_write",
                  "SSL_get_error", "ERR_clear_error", "BIO_new", "BIO_s_mem", "SSL_set_bio",
                  "BIO_get_mem_data", "BIO_free", "SSL_pending")


def _tls_error(conn: SSL.Connection | None, code: int) -> Exception:
    """The exception pyOpenSSL would raise for SSL_get_error() == `code`: a problem recorded by one
    of pyOpenSSL's callback helpers first (a pyOpenSSL Connection's context may have them; the
    gateway's own contexts install none), else OpenSSL's error queue, which this consumes. `conn`
    is None for a connection the native pump made itself."""
    ctx = conn.get_context() if conn is not None else None
    for name in ("_verify_helper", "_alpn_select_helper", "_ocsp_helper"):
        helper = getattr(ctx, name, None)
        if helper is not None:
            try:
                helper.raise_if_problem()
            except Exception as exc:    # noqa: BLE001 - handed back as the failure, never raised
                _lib.ERR_clear_error()
                return exc
    try:
        _error_from_queue(SSL.Error)
    except SSL.Error as exc:
        if exc.args and exc.args[0]:
            return exc
    if code == _SSL_ERROR_SYSCALL:
        return SSL.SysCallError(-1, "Unexpected EOF")
    return SSL.Error([("SSL routines", "", f"SSL_get_error {code}")])


def _bios_renewed(conn: SSL.Connection, rbio: int, wbio: int) -> None:
    """The native pump replaced the connection's BIOs (SSL_set_bio freed the old ones):
    pyOpenSSL's Connection must not keep pointing at them."""
    conn._into_ssl = _ffi.cast("BIO *", rbio)
    conn._from_ssl = _ffi.cast("BIO *", wbio)


class TLSPump(Protocol):
    """What gateway.tls drives, whichever twin: PyPump below, or gateway._tls_c.Pump."""

    @property
    def error(self) -> BaseException | None: ...     # what the last FAILED was
    def renew(self) -> bool: ...
    def handshake(self, data: bytes) -> tuple[int, bytes]: ...
    def read(self, data: bytes) -> tuple[int, bytes, bytes]: ...
    def write(self, data: bytes) -> tuple[int, bytes]: ...
    def shutdown(self) -> bytes: ...
    def leaf_der(self) -> bytes | None: ...
    def session_digest(self, label: bytes) -> bytes | None: ...
    def store_cert_der(self, store: int) -> bytes: ...
    def selected_alpn(self) -> bytes | None: ...


# a pump for a pyOpenSSL Connection: py_pump, or the native one load_native returns
PumpFactory: TypeAlias = Callable[[SSL.Connection], TLSPump]

_READ_BUF = _ffi.new("char[]", _CHUNK)
_MEM_DATA = _ffi.new("char **")


class PyPump:
    """The pure twin of gateway._tls_c.Pump: the same calls into OpenSSL, in the same order."""

    __slots__ = ("_owner", "_ssl", "_rbio", "_wbio", "error")

    def __init__(self, owner: SSL.Connection) -> None:
        self._owner = owner
        self._ssl = owner._ssl
        self._rbio = owner._into_ssl
        self._wbio = owner._from_ssl
        self.error: Exception | None = None

    def _feed(self, data: bytes) -> None:
        while data:
            w = _lib.BIO_write(self._rbio, _ffi.from_buffer(data), len(data))
            if w <= 0:
                raise MemoryError("BIO_write failed")
            data = data[w:]

    def _drain(self) -> bytes:
        buf, wbio, parts = _READ_BUF, self._wbio, []
        while True:
            r = _lib.BIO_read(wbio, buf, _CHUNK)
            if r <= 0:
                break
            parts.append(_ffi.buffer(buf, r)[:])
            if r < _CHUNK:
                break
        return b"".join(parts)

    def _fail(self, code: int) -> int:
        self.error = _tls_error(self._owner, code)
        return FAILED

    @staticmethod
    def _carry(old: CData, new: CData) -> None:
        n = _lib.BIO_get_mem_data(old, _MEM_DATA)
        if n > 0 and _lib.BIO_write(new, _MEM_DATA[0], n) != n:
            raise MemoryError("BIO_write failed")

    def renew(self) -> bool:
        """Swap in empty memory BIOs. A memory BIO keeps the largest buffer it ever held (the
        handshake's flights, a 256 KB read), and an idle connection should not: this is called
        after the handshake and after any call that moved more than _RENEW_AT bytes. Whatever is
        still pending moves across; SSL_set_bio frees the old pair."""
        r = _lib.BIO_new(_lib.BIO_s_mem())
        w = _lib.BIO_new(_lib.BIO_s_mem()) if r != _ffi.NULL else _ffi.NULL
        if w == _ffi.NULL:
            if r != _ffi.NULL:
                _lib.BIO_free(r)
            return False
        try:
            self._carry(self._rbio, r)
            self._carry(self._wbio, w)
        except MemoryError:
            _lib.BIO_free(r)
            _lib.BIO_free(w)
            return False
        _lib.SSL_set_bio(self._ssl, r, w)
        # pyOpenSSL's Connection must not keep pointing at the pair SSL_set_bio freed
        self._rbio = self._owner._into_ssl = r
        self._wbio = self._owner._from_ssl = w
        return True

    def handshake(self, data: bytes) -> tuple[int, bytes]:
        if data:
            self._feed(data)
        _lib.ERR_clear_error()
        r = _lib.SSL_do_handshake(self._ssl)
        if r == 1:
            code = DONE
        else:
            e = _lib.SSL_get_error(self._ssl, r)
            code = WANT if e == _SSL_ERROR_WANT_READ else self._fail(e)
        return code, self._drain()

    def read(self, data: bytes) -> tuple[int, bytes, bytes]:
        if data:
            self._feed(data)
        _lib.ERR_clear_error()
        ssl, buf, parts = self._ssl, _READ_BUF, []
        while True:
            r = _lib.SSL_read(ssl, buf, _CHUNK)
            if r > 0:
                parts.append(_ffi.buffer(buf, r)[:])
                if _lib.BIO_get_mem_data(self._rbio, _MEM_DATA) <= 0 and _lib.SSL_pending(ssl) <= 0:
                    # nothing left to read: the SSL_read that would only say want-read is not made
                    code = WANT
                    break
                continue
            e = _lib.SSL_get_error(ssl, r)
            if e == _SSL_ERROR_WANT_READ:
                code = WANT
            elif e == _SSL_ERROR_ZERO_RETURN:
                code = CLOSED
            else:
                code = self._fail(e)
            break
        out = self._drain()
        if code == WANT and (len(data) > _RENEW_AT or len(out) > _RENEW_AT):
            self.renew()
        return code, b"".join(parts), out

    def write(self, data: bytes) -> tuple[int, bytes]:
        _lib.ERR_clear_error()
        ssl, view, at, n = self._ssl, memoryview(data), 0, len(data)
        while at < n:
            step = min(n - at, _MAX_WRITE)
            r = _lib.SSL_write(ssl, _ffi.from_buffer(view[at:at + step]), step)
            if r <= 0:
                return self._fail(_lib.SSL_get_error(ssl, r)), self._drain()
            at += r
        out = self._drain()
        if len(out) > _RENEW_AT:
            self.renew()
        return WANT, out

    def shutdown(self) -> bytes:
        _lib.ERR_clear_error()
        if _lib.SSL_shutdown(self._ssl) < 0:
            _lib.ERR_clear_error()
        return self._drain()

    # what the handshake reads of this SSL (the native Pump has the same four)
    def leaf_der(self) -> bytes | None:
        return peer_leaf_der(self._ssl)

    def selected_alpn(self) -> bytes | None:
        """The protocol ALPN chose, or None."""
        return alpn_selected(self._ssl) or None

    def session_digest(self, label: bytes) -> bytes | None:
        return session_digest(self._ssl, label)

    def store_cert_der(self, store: int) -> bytes:
        return current_cert_der(_ffi.cast("X509_STORE_CTX *", store))


def py_pump(conn: SSL.Connection) -> PyPump:
    return PyPump(conn)


def load_native() -> PumpFactory | None:
    """The native pump's factory, or None with the reason in NATIVE_UNAVAILABLE (the self-test:
    the extension imports, runs on the very OpenSSL pyOpenSSL uses, and every function it calls is
    still in the bindings)."""
    global NATIVE_UNAVAILABLE
    try:
        from cryptography.hazmat.bindings._rust import _openssl

        from . import _tls_c
    except ImportError as exc:
        NATIVE_UNAVAILABLE = f"gateway._tls_c cannot be imported ({exc})"
        return None
    if _openssl.ffi is not _ffi:
        # not the OpenSSL pyOpenSSL runs on: never mix two
        NATIVE_UNAVAILABLE = "the cryptography bindings are not the ones pyOpenSSL runs on"
        return None
    missing = missing_bindings(_openssl.lib, PUMP_FUNCTIONS)
    if missing:
        NATIVE_UNAVAILABLE = (f"cryptography {_cryptography_version()} no longer exposes "
                              f"{', '.join(missing)}")
        return None
    addresses = {n: int(_ffi.cast("uintptr_t", _ffi.addressof(_openssl.lib, n))) for n in PUMP_FUNCTIONS}
    _tls_c.bind(addresses, _tls_error, _bios_renewed)
    cast, Pump = _ffi.cast, _tls_c.Pump
    global NATIVE_SERVER, _native_owner
    server_functions = getattr(_tls_c, "SERVER_FUNCTIONS", None)
    if server_functions is None:
        NATIVE_UNAVAILABLE = "gateway._tls_c is an old build without server()"
        return None     # its pump lacks the handshake's readers
    missing = missing_bindings(_openssl.lib, server_functions)
    if missing:
        NATIVE_UNAVAILABLE = (f"cryptography {_cryptography_version()} no longer exposes "
                              f"{', '.join(missing)}")
        return None
    _tls_c.bind_server({n: int(_ffi.cast("uintptr_t", _ffi.addressof(_openssl.lib, n)))
                        for n in server_functions}, _lib.SSL_MODE_AUTO_RETRY, hashlib.sha256)
    NATIVE_SERVER = _tls_c.server
    _native_owner = _tls_c.owner_of

    def native_pump(conn: SSL.Connection) -> _tls_c.Pump:
        return Pump(conn, int(cast("uintptr_t", conn._ssl)), int(cast("uintptr_t", conn._into_ssl)),
                    int(cast("uintptr_t", conn._from_ssl)))
    global NATIVE_MESSAGE_CALLBACK
    if hasattr(_tls_c, "message_callback"):
        NATIVE_MESSAGE_CALLBACK = cast("void(*)(int, int, int, void *, size_t, SSL *, void *)",
                                       _tls_c.message_callback(_on_message))
    else:
        NATIVE_UNAVAILABLE = "gateway._tls_c is an old build without message_callback"
        return None     # an old build: the twins must come as a pair
    return native_pump


def native_servername_callback(handler: Callable[[int, int], int]) -> CData | None:
    """The native servername callback (gateway._tls_c's), `handler` taking what it does not decide
    itself; an exception of its own is kept as the pure callback keeps one. None without the
    native pump."""
    if NATIVE_MESSAGE_CALLBACK is None:
        return None
    from . import _tls_c
    if not hasattr(_tls_c, "servername_callback"):
        return None
    def keep(ssl: int, exc: BaseException) -> None:
        keep_callback_error(ssl_pointer(ssl), "servername", exc)
    return _ffi.cast(SERVERNAME_CALLBACK.replace("(", "(*)(", 1),
                     _tls_c.servername_callback(handler, keep))


# What the self-test finds, once, at import; gateway.tls takes these names then and chooses
# between the twins with its set_native.
NATIVE_MESSAGE_CALLBACK: CData | None = None
# gateway._tls_c.server: a connection's SSL made without a pyOpenSSL Connection (None: an old build,
# or bindings without SSL_new & co.: connections then get a pyOpenSSL Connection and the native pump)
NATIVE_SERVER: Callable[[int, Any], _tls_c.Pump] | None = None
NATIVE_UNAVAILABLE: str | None = None      # why the native pump is not there, when it is not
NATIVE_PUMP = load_native()
