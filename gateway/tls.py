"""TLS for listeners: SSL contexts per certificate and SNI name, and a sans-IO server connection.

How this works: `ListenerTLS` builds, once per listener, one pyOpenSSL context per configured
certificate (TLS 1.2+ only, ECDHE+AEAD ciphers for 1.2, no compression, no renegotiation, ALPN
http/1.1, a session id context so verified sessions resume) and the SNI map that picks among them.
Three C-level callbacks are installed through the cryptography bindings rather than pyOpenSSL's
wrappers: the verify callback (so a refusal can name its reason in the alert), the servername
callback (called for every ClientHello: the SNI switch and the verdict on a resumed session) and a
message callback (the size of the client's Certificate message, a renegotiation attempt, each
session ticket issued); the last has a native twin in native/tlspump.pyx because OpenSSL calls it
for every record.

`TLSConnection` drives one `SSL.Connection(ctx, None)` over memory BIOs: `receive(bytes)` returns the
bytes to send back, the plaintext that arrived, and every event of that arrival as a tuple (usually
empty: `HandshakeDone`, `HandshakeFailed`, `TLSFailed`, `PeerClosed`, in order);
`send(plaintext)` returns records to write; `close()` returns a close_notify.
No socket and no event loop here.

What a resumption forwards is the chain of its own session: OpenSSL restores only the leaf (a
ticket carries no chain), so the chain is kept under a digest of each session's secret, collected
while the handshake issues its sessions, and found again by the resumed session's (see
`_session_digest`); an unknown session forwards its leaf alone, never another connection's chain.

The client certificate is decided during the handshake, in OpenSSL's verify callback, so a refused
client gets a TLS alert rather than an HTTP error. OpenSSL's own chain checks see an empty store and
are overruled (the callback accepts at the OpenSSL level); the decision is the gateway's `Verifier`,
taken at the last callback (depth 0, preverify ok), when OpenSSL has walked the whole chain it could
build from what the client sent. OpenSSL still verifies the CertificateVerify signature afterwards:
a client that does not hold the key fails the handshake whatever the verdict.
"""
from __future__ import annotations

import enum
import hashlib
import time
import warnings
from dataclasses import dataclass
from functools import partial

from OpenSSL import SSL, crypto

from .identity import Identity, VerifyStatus, identity_from_der
from .trust import ChainCache, TrustStore, Verdict, Verifier

from OpenSSL._util import exception_from_error_queue as _error_from_queue
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from .errors import BindingsUnsupported, NativeUnavailable

# Every OpenSSL function and constant this module reaches through the `cryptography` bindings
# (pyOpenSSL's `_util.lib` is that same object). Upstream calls the raw bindings unsupported and
# has been removing names (44 -> 50 took out about 100), so they are checked once, here, before
# anything uses them: a missing one is a clear error at start, never an AttributeError in the middle
# of a handshake. The native pump's own needs (_PUMP_FUNCTIONS) are checked where it is loaded, and
# a missing one there only costs the native twin (see _load_native).
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


def missing_bindings(lib, names) -> tuple[str, ...]:
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

_session_reused = _lib.SSL_session_reused

MODES = ("off", "passthrough", "verify", "optional")
DEFAULT_CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"
_TLS_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_SSL_MODE_RELEASE_BUFFERS = 0x00000010   # free record buffers of idle connections (memory per conn)
_ALPN_HTTP11 = b"http/1.1"
_ASN1 = crypto.FILETYPE_ASN1
_dump = crypto.dump_certificate


class TLSState(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    PEER_CLOSED = "peer_closed"     # close_notify received: we may still write (a half-close)
    CLOSED = "closed"
    FAILED = "failed"


_TRANSITIONS = {
    TLSState.HANDSHAKING: {TLSState.OPEN, TLSState.FAILED, TLSState.CLOSED},
    TLSState.OPEN: {TLSState.PEER_CLOSED, TLSState.CLOSED, TLSState.FAILED},
    TLSState.PEER_CLOSED: {TLSState.CLOSED, TLSState.FAILED},
    TLSState.CLOSED: set(),
    TLSState.FAILED: set(),
}
# the same, as a tuple on each state: `_to` checks a move without hashing an Enum member (Enum's
# __hash__ is Python code, and a connection makes two to four moves)
for _from, _to_states in _TRANSITIONS.items():
    _from._successors = tuple(_to_states)
del _from, _to_states


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    identity: Identity | None
    status: VerifyStatus | None       # None when no certificate was asked for or given
    resumed: bool
    protocol: str
    cipher: str
    server_name: str | None
    # the DNS names (lower-cased, wildcards as "*.example.com") of the certificate SNI selected
    certificate_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    status: VerifyStatus
    reason: str                       # a short code for logs: tls_error, client_cert_refused, ...
    detail: str
    identity: Identity | None = None
    resumed: bool = False             # the refused handshake was resuming a session


@dataclass(frozen=True, slots=True)
class TLSFailed:
    """The TLS layer failed after the handshake (a bad record, a fatal alert from the peer, a
    refused renegotiation): not a handshake refusal, the connection simply ends."""
    reason: str                       # renegotiation_refused | tls_error
    detail: str


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer sent close_notify."""


PEER_CLOSED = PeerClosed()
NO_EVENTS: tuple = ()


# -- refusals as TLS alerts -------------------------------------------------------------------------
# Alert descriptions (RFC 8446 6.2, RFC 5246 7.2.2).
ALERT_HANDSHAKE_FAILURE = 40
ALERT_BAD_CERTIFICATE = 42
ALERT_UNSUPPORTED_CERTIFICATE = 43
ALERT_CERTIFICATE_REVOKED = 44
ALERT_CERTIFICATE_EXPIRED = 45
ALERT_UNKNOWN_CA = 48
ALERT_INTERNAL_ERROR = 80
ALERT_CERTIFICATE_REQUIRED = 116

_X509_V_OK = 0
_X509_V_ERR_UNSPECIFIED = 1     # what OpenSSL 3+ records when a callback refuses without an error

# The one table: verify status -> (the X509_V_ERR_* set in the store before the verify callback
# refuses, the alert OpenSSL's ssl_x509err2alert() then sends). The alert column is what the
# servername callback sends itself for a refused resumption, and what the tests check on the wire.
# OpenSSL maps X509_V_ERR_CERT_NOT_YET_VALID to bad_certificate; RFC 8446 6.2 defines
# certificate_expired as "expired or not currently valid", so a not-yet-valid certificate is
# reported through X509_V_ERR_CERT_HAS_EXPIRED. A deny-listed serial is revoked by the operator:
# certificate_revoked like a CRL hit. No certificate at all is refused by OpenSSL itself
# (VERIFY_FAIL_IF_NO_PEER_CERT): certificate_required in TLS 1.3 (RFC 8446 4.4.2.4), and
# handshake_failure in TLS 1.2, which has no better alert (RFC 5246 7.4.6).
REFUSAL_ALERTS: dict[VerifyStatus, tuple[int, int]] = {
    VerifyStatus.UNTRUSTED: (_lib.X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, ALERT_UNKNOWN_CA),
    VerifyStatus.MAX_CHAIN_DEPTH: (_lib.X509_V_ERR_CERT_CHAIN_TOO_LONG, ALERT_UNKNOWN_CA),
    VerifyStatus.EXPIRED: (_lib.X509_V_ERR_CERT_HAS_EXPIRED, ALERT_CERTIFICATE_EXPIRED),
    VerifyStatus.NOT_YET_VALID: (_lib.X509_V_ERR_CERT_HAS_EXPIRED, ALERT_CERTIFICATE_EXPIRED),
    VerifyStatus.CRL_HIT: (_lib.X509_V_ERR_CERT_REVOKED, ALERT_CERTIFICATE_REVOKED),
    VerifyStatus.REJECTED: (_lib.X509_V_ERR_CERT_REVOKED, ALERT_CERTIFICATE_REVOKED),
    VerifyStatus.PURPOSE_INVALID: (_lib.X509_V_ERR_INVALID_PURPOSE, ALERT_UNSUPPORTED_CERTIFICATE),
    VerifyStatus.TYPE_UNSUPPORTED: (_lib.X509_V_ERR_INVALID_PURPOSE, ALERT_UNSUPPORTED_CERTIFICATE),
    VerifyStatus.INVALID: (_lib.X509_V_ERR_CERT_REJECTED, ALERT_BAD_CERTIFICATE),
    VerifyStatus.MAX_SIZE: (_lib.X509_V_ERR_CERT_REJECTED, ALERT_BAD_CERTIFICATE),
    VerifyStatus.NOT_FOUND: (_lib.X509_V_ERR_CERT_REJECTED, ALERT_BAD_CERTIFICATE),
    VerifyStatus.UNMAPPED: (_X509_V_ERR_UNSPECIFIED, ALERT_INTERNAL_ERROR),
}
_UNMAPPED_REFUSAL = REFUSAL_ALERTS[VerifyStatus.UNMAPPED]

_SSL_TLSEXT_ERR_OK = 0
_SSL_TLSEXT_ERR_ALERT_FATAL = 2
_Connection = SSL.Connection
_STORE_SSL_IDX = _lib.SSL_get_ex_data_X509_STORE_CTX_idx()
_store_ssl = _lib.X509_STORE_CTX_get_ex_data
_store_set_error = _lib.X509_STORE_CTX_set_error
_store_depth = _lib.X509_STORE_CTX_get_error_depth
_store_cert = _lib.X509_STORE_CTX_get_current_cert
_x509_up_ref = _lib.X509_up_ref
_X509_from_ptr = crypto.X509._from_raw_x509_ptr


# -- facts of one SSL, read through the bindings (both twins: a native connection has no pyOpenSSL
# Connection to ask, and these are what its methods do) ------------------------------------------
_NAMETYPE_HOST = _lib.TLSEXT_NAMETYPE_host_name
_ALPN_OUT = _ffi.new("const unsigned char **")
_ALPN_LEN = _ffi.new("unsigned int *")


def _servername(ssl) -> bytes | None:
    name = _lib.SSL_get_servername(ssl, _NAMETYPE_HOST)
    return _ffi.string(name) if name != _ffi.NULL else None


def _peer_leaf_der(ssl) -> bytes | None:
    """The DER of the peer's certificate (SSL_get_peer_certificate: a reference of our own,
    which the X509 wrapper frees), or None."""
    x = _lib.SSL_get_peer_certificate(ssl)
    if x == _ffi.NULL:
        return None
    return _dump(_ASN1, _X509_from_ptr(x))


def _peer_chain_ders(ssl) -> tuple[bytes, ...] | None:
    """SSL_get_peer_cert_chain as DER (on a server: without the leaf), or None without one."""
    stack = _lib.SSL_get_peer_cert_chain(ssl)
    if stack == _ffi.NULL:
        return None
    out = []
    for i in range(_lib.sk_X509_num(stack)):
        x = _lib.sk_X509_value(stack, i)
        _x509_up_ref(x)
        out.append(_dump(_ASN1, _X509_from_ptr(x)))
    return tuple(out)


# The names a connection keeps for its logs (version, cipher, server name), one string per
# distinct name instead of one per connection; bounded (the server name is the client's choice).
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 1024


def _name(raw: bytes) -> str:
    name = _NAMES.get(raw)
    if name is None:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        name = _NAMES[raw] = raw.decode("ascii", "replace")
    return name


def _version_name(ssl) -> str:
    return _name(_ffi.string(_lib.SSL_get_version(ssl)))


def _cipher_name(ssl) -> str:
    cipher = _lib.SSL_get_current_cipher(ssl)
    return _name(_ffi.string(_lib.SSL_CIPHER_get_name(cipher))) if cipher != _ffi.NULL else ""


def _alpn_selected(ssl) -> bytes:
    _lib.SSL_get0_alpn_selected(ssl, _ALPN_OUT, _ALPN_LEN)
    n = _ALPN_LEN[0]
    return _ffi.buffer(_ALPN_OUT[0], n)[:] if n else b""


def _current_cert_der(store) -> bytes:
    x = _store_cert(store)
    _x509_up_ref(x)
    return _dump(_ASN1, _X509_from_ptr(x))


_reverse_get = _Connection._reverse_mapping.get
_native_owner = None        # gateway._tls_c.owner_of once the native pump is bound (_load_native)


def _owner(ssl) -> "TLSConnection | None":
    """The TLSConnection of an SSL (a cffi `SSL *`): one the native pump made (no pyOpenSSL
    Connection: gateway._tls_c's registry), else a pyOpenSSL Connection's app data."""
    if _native_owner is not None:
        tc = _native_owner(int(_ffi.cast("uintptr_t", ssl)))
        if tc is not None:
            return tc
    conn = _reverse_get(ssl)
    return conn._app_data if conn is not None else None


def _keep_callback_error(ssl, where: str, exc: BaseException) -> None:
    """Keep the first exception an OpenSSL callback caught on its connection, so the handshake's
    outcome names it (httptools keeps `_last_error` for the same reason): an exception may not
    cross the C boundary, but it must not vanish either."""
    try:
        _owner(ssl)._keep_error(where, exc)
    except BaseException:   # noqa: BLE001 - the connection is gone or not ours: nothing to keep
        pass


@_ffi.callback("int(int, X509_STORE_CTX *)")
def _c_verify(ok: int, store) -> int:
    """OpenSSL's verify callback, installed with SSL_CTX_set_verify (not pyOpenSSL's wrapper, which
    gives no access to the store and so cannot name a refusal: OpenSSL 3+ then records
    X509_V_ERR_UNSPECIFIED and ssl_x509err2alert() turns it into internal_error). A refusal sets
    the X509_V_ERR_* whose alert fits the verify status (REFUSAL_ALERTS). Nothing may cross the C
    boundary: any exception is a refusal (internal_error)."""
    try:
        refused = _owner(_store_ssl(store, _STORE_SSL_IDX))._on_verify(store, _store_depth(store), ok)
        if refused is None:
            # accepted at the gateway's level: OpenSSL's own complaint (its store is empty) must not
            # linger as the connection's verify result (pyOpenSSL's wrapper does the same)
            _store_set_error(store, _X509_V_OK)
            return 1
        _store_set_error(store, REFUSAL_ALERTS.get(refused, _UNMAPPED_REFUSAL)[0])
        return 0
    except BaseException as exc:   # noqa: BLE001 - fail closed
        try:
            _store_set_error(store, _X509_V_ERR_UNSPECIFIED)
            _keep_callback_error(_store_ssl(store, _STORE_SSL_IDX), "verify", exc)
        except BaseException:   # noqa: BLE001
            pass
        return 0


@_ffi.callback("int(SSL *, int *, void *)")
def _c_client_hello(ssl, alert, arg) -> int:
    """OpenSSL's servername callback, which it calls for every ClientHello, with or without SNI,
    once the extensions are parsed (final_server_name): by then SSL_session_reused() says whether a
    session resumes (TLS 1.2 ticket or session id: ssl_get_prev_session; TLS 1.3: the PSK, its
    binder checked) and that session's peer certificate is readable. Returning ALERT_FATAL with
    *alert set sends that alert before the ServerHello. Any exception refuses (internal_error)."""
    try:
        return _owner(ssl)._on_client_hello(alert)
    except BaseException as exc:   # noqa: BLE001 - fail closed
        try:
            alert[0] = ALERT_INTERNAL_ERROR
            _keep_callback_error(ssl, "servername", exc)
        except BaseException:   # noqa: BLE001
            pass
        return _SSL_TLSEXT_ERR_ALERT_FATAL


# -- sessions and their chains ------------------------------------------------------------------------
# OpenSSL restores only the leaf on resumption (a ticket carries no chain, and these bindings offer
# neither ticket appdata nor session new/get callbacks), yet two connections of one leaf may present
# different chains. So each chain is kept under the session it was admitted with, found again by
# the resumed session's own secret: its master key in TLS 1.2 (the same when the ticket is issued
# and when it is resumed, RFC 5077 4 / RFC 5246 F.1.4), the ticket's resumption PSK in TLS 1.3
# (each NewSessionTicket is its own session, RFC 8446 4.6.1: OpenSSL makes a fresh s->session for
# every ticket it writes, so its key is readable when the message callback sees the ticket written;
# the resumed session's key is readable in the servername callback). Only a digest of the key is
# ever kept, in memory or in the workers' shared files: never the key.
_get_session = _lib.SSL_get_session
_session_master_key = _lib.SSL_SESSION_get_master_key
_KEY_MAX = 64                               # SSL_MAX_MASTER_KEY_LENGTH is 48 (a SHA-384 PSK)
_KEY_BUF = _ffi.new("unsigned char[]", _KEY_MAX)
_KEY_ZERO = bytes(_KEY_MAX)
_SESSION_LABEL = b"mtls-gateway session chain v1\0"
_sha256 = hashlib.sha256


def _session_digest(ssl, label: bytes = _SESSION_LABEL) -> bytes | None:
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


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def session_id_context(name: str, mtls: str, store: TrustStore | None, max_chain_depth: int,
                       ignore_expiry: bool) -> bytes:
    """The SSL session id context of a listener's policy (32 bytes, SSL_MAX_SID_CTX_LENGTH)."""
    policy = (f"{name}|{mtls}|{store.name}|{store.ca_fingerprint}|{max_chain_depth}|{int(ignore_expiry)}"
              if store is not None else f"{name}|{mtls}")
    return hashlib.sha256(policy.encode()).digest()[:32]


class ListenerTLS:
    """One listener's TLS: contexts per certificate, SNI selection, the client-cert verifier."""

    def __init__(self, *, name: str, certificates: list[tuple[str, str, tuple[str, ...]]],
                 mtls: str = "off", store: TrustStore | None = None, max_chain_depth: int = 4,
                 ignore_expiry: bool = False, advertise_ca_names: bool = False,
                 min_version: str = "1.2", ciphers_tls12: str = DEFAULT_CIPHERS_TLS12,
                 session_tickets: bool = True, session_timeout_s: int = 300,
                 max_chain_bytes: int = 65536, message_callback=None,
                 trust_implementation=None) -> None:
        if mtls not in MODES:
            raise ValueError(f"mtls must be one of {MODES}")
        if mtls in ("verify", "optional") and store is None:
            raise ValueError(f"mtls = {mtls!r} needs a trust store")
        self.name = name
        self.mtls = mtls
        self.store = store
        self.verifier = (Verifier(store, max_chain_depth=max_chain_depth, ignore_expiry=ignore_expiry,
                                  max_chain_bytes=max_chain_bytes)
                         if mtls in ("verify", "optional") else None)
        self.max_chain_bytes = max_chain_bytes
        self.max_chain_depth = max_chain_depth
        # passthrough identities by chain key, and by session for resumptions
        self.passthrough_cache = (ChainCache(implementation=trust_implementation)
                                  if mtls == "passthrough" else None)
        # a client certificate may be asked for: its chain is kept with each session issued
        self.keeps_chains = mtls != "off"
        self.session_timeout_s = session_timeout_s
        # chains by session, shared by the workers for resumed sessions (gateway.sessions); set by
        # the server when it has one
        self._chain_store = None
        # The session id context binds sessions to this listener and the verification policy that
        # admitted them: a session verified under one listener, or under another CA set, depth or
        # expiry policy, must never resume under this one (RFC 5246 F.1.4's concern; OpenSSL does
        # not resume a session whose sid_ctx differs). The CRLs and the deny-list are left out on
        # purpose: revocation is re-checked on every resumption, and a CRL update must not cost
        # every client a full handshake. gateway.server._tls_identity keeps the contexts over a
        # reload only while all of this is unchanged.
        self.session_id_context = session_id_context(name, mtls, store, max_chain_depth, ignore_expiry)
        sid = self.session_id_context
        self._contexts: list[SSL.Context] = []
        self._exact: dict[str, SSL.Context] = {}
        self._wildcard: dict[str, SSL.Context] = {}
        self.certificate_names: dict[SSL.Context, tuple[str, ...]] = {}
        # the message filter of the twin the runtime selected (gateway.native), else the one in force
        self._message_callback = message_callback if message_callback is not None else _message_callback
        for cert_path, key_path, names in certificates:
            ctx = self._context(cert_path, key_path, sid, min_version, ciphers_tls12,
                                session_tickets, session_timeout_s, advertise_ca_names)
            self._contexts.append(ctx)
            self.certificate_names[ctx] = tuple(dict.fromkeys(n.lower().rstrip(".") for n in names))
            for n in names:
                n = n.lower()
                if n.startswith("*."):
                    self._wildcard.setdefault(n[2:], ctx)
                else:
                    self._exact.setdefault(n, ctx)
        self.default_context = self._contexts[0]
        self._native_address: tuple = (None, 0)     # (a context, its SSL_CTX address)
        # the C callbacks these contexts call (module-level objects; kept here too so their
        # lifetime visibly covers the contexts')
        self._callbacks = (_c_verify, _c_client_hello, _c_select_alpn, self._message_callback)
        # connections of this listener get an SSL of their own, without a pyOpenSSL Connection,
        # when the native pump can make one and these contexts carry the native message filter
        # (which finds such connections by the SSL's address)
        self._native_setup = (NATIVE_SERVER is not None
                              and self._message_callback is NATIVE_MESSAGE_CALLBACK)
        # OpenSSL calls the servername callback of the context the SSL was made with (the
        # default one); it does the SNI switch and the check of a resumed session. Every context
        # of the listener has the same verify policy, so whatever the ClientHello says (or fails
        # to say) never selects a weaker one.
        _lib.SSL_CTX_set_tlsext_servername_callback(self.default_context._context, _c_client_hello)

    @property
    def chain_store(self):
        return self._chain_store

    @chain_store.setter
    def chain_store(self, store) -> None:
        self._chain_store = store
        if store is not None:
            # the store's sweep may drop a name once no listener's session can outlive it
            store.keep_for(self.session_timeout_s)

    def _context(self, cert_path: str, key_path: str, sid: bytes, min_version: str, ciphers: str,
                 tickets: bool, timeout_s: int, advertise: bool) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(_TLS_VERSIONS[min_version])
        options = SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE
        if not tickets:
            options |= SSL.OP_NO_TICKET
        ctx.set_options(options)
        ctx.set_mode(_SSL_MODE_RELEASE_BUFFERS)
        ctx.set_cipher_list(ciphers.encode())
        ctx.use_certificate_chain_file(str(cert_path))
        ctx.use_privatekey_file(str(key_path))
        ctx.check_privatekey()
        # our own ALPN callback, not pyOpenSSL's wrapper (which finds the pyOpenSSL Connection of
        # the SSL, and the native twin makes none)
        _lib.SSL_CTX_set_alpn_select_cb(ctx._context, _c_select_alpn, _ffi.NULL)
        _lib.SSL_CTX_set_msg_callback(ctx._context, self._message_callback)
        ctx.set_session_id(sid)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
        ctx.set_timeout(timeout_s)
        if self.mtls == "off":
            ctx.set_verify(SSL.VERIFY_NONE)
        else:
            flags = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
            if self.mtls == "verify":
                flags |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            # our own C-level callback (see _c_verify); pyOpenSSL's Context is told nothing, so its
            # _verify_helper stays None and _tls_error skips it
            _lib.SSL_CTX_set_verify(ctx._context, flags, _c_verify)
            # OpenSSL builds at most depth+2 certificates; leave room to report "too deep" ourselves
            ctx.set_verify_depth(self.max_chain_depth + 1)
            if advertise and self.store is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ctx.set_client_ca_list([crypto.X509.from_cryptography(ca).get_subject()
                                            for ca in self.store.cas])
        return ctx

    def _on_sni(self, tc: "TLSConnection") -> None:
        """Switch to the certificate the client's SNI names (an unknown or absent name: the
        default one). Called from the servername callback, which catches what this raises."""
        if len(self._contexts) == 1:
            return
        raw = _servername(tc._ssl)
        if not raw:
            return
        name = raw.decode("ascii", "replace").lower().rstrip(".")
        ctx = self._exact.get(name)
        if ctx is None:
            ctx = self._wildcard.get(name.partition(".")[2])
        if ctx is not None and ctx is not self.default_context:
            tc._set_context(ctx)

    def _native_context_address(self, ctx: SSL.Context) -> int:
        """The SSL_CTX address the native twin makes a connection's SSL from (the default
        context's, remembered with the very context it belongs to)."""
        known, address = self._native_address
        if known is not ctx:
            address = int(_ffi.cast("uintptr_t", ctx._context))
            self._native_address = (ctx, address)
        return address

    def connection(self) -> "TLSConnection":
        """A new connection: the native twin when its SSL can be made without a pyOpenSSL
        Connection (gateway._tls_c.server) and the native pump is chosen, else the pure one."""
        if self._native_setup and _make_pump is NATIVE_PUMP and NativeTLSConnection is not None:
            return NativeTLSConnection(self)
        return PureTLSConnection(self)


_SSL_TLSEXT_ERR_NOACK = 3


def select_alpn(offered: bytes) -> int:
    """The offset in `offered` (the ClientHello's ALPN list: length-prefixed names, RFC 7301 3.1)
    of the protocol chosen, or -1 for none. Only http/1.1 is spoken; never pick h2 just because the
    client offers it."""
    i, n = 0, len(offered)
    while i < n:
        size = offered[i]
        end = i + 1 + size
        if end > n:
            return -1       # a malformed list (OpenSSL checks it first): nothing is chosen
        if offered[i + 1:end] == _ALPN_HTTP11:
            return i + 1
        i = end
    return -1


@_ffi.callback("int(SSL *, const unsigned char **, unsigned char *, const unsigned char *, "
               "unsigned int, void *)")
def _c_select_alpn(ssl, out, outlen, inp, inlen, arg) -> int:
    """OpenSSL's ALPN select callback: point at http/1.1 in the client's own list, or carry on
    without ALPN (NOACK), as pyOpenSSL's NO_OVERLAPPING_PROTOCOLS does. Stateless: no connection
    is looked up. An exception answers NOACK."""
    try:
        at = select_alpn(_ffi.buffer(inp, inlen)[:])
        if at < 0:
            return _SSL_TLSEXT_ERR_NOACK
        out[0] = inp + at
        outlen[0] = len(_ALPN_HTTP11)
        return _SSL_TLSEXT_ERR_OK
    except BaseException:   # noqa: BLE001 - nothing crosses the C boundary
        return _SSL_TLSEXT_ERR_NOACK


# -- the message callback ----------------------------------------------------------------------------
# SSL_CTX_set_msg_callback: OpenSSL calls it for every record header and every protocol message, in
# both directions, for the life of the connection. Three messages matter: a received ClientHello
# after the handshake (a renegotiation attempt), the received client Certificate (its length,
# before the verify callback runs: padding certificates the client sends but OpenSSL never puts in
# the chain count too), and each NewSessionTicket written (in TLS 1.3 each ticket is its own
# session with its own PSK, and OpenSSL has just made it s->session). The filter runs per record,
# so its native twin is C (native/tlspump.pyx); both hand the three messages to `_on_message`.
_RT_HANDSHAKE = 22
_MT_CLIENT_HELLO = 1
_MT_NEW_SESSION_TICKET = 4
_MT_CERTIFICATE = 11


def _on_message(ssl_addr: int, write_p: int, msg_type: int, length: int) -> None:
    conn = _Connection._reverse_mapping.get(_ffi.cast("SSL *", ssl_addr))
    tc = conn._app_data if conn is not None else None
    if tc is not None:
        tc._on_message(write_p, msg_type, length)


@_ffi.callback("void(int, int, int, void *, size_t, SSL *, void *)")
def _py_message_callback(write_p, version, content_type, buf, length, ssl, arg) -> None:
    """The pure twin of tlspump's C filter."""
    if content_type != _RT_HANDSHAKE or length < 1:
        return
    t = _ffi.cast("unsigned char *", buf)[0]
    if (t == _MT_NEW_SESSION_TICKET) if write_p else (t == _MT_CLIENT_HELLO or t == _MT_CERTIFICATE):
        try:
            _on_message(int(_ffi.cast("uintptr_t", ssl)), write_p, t, length)
        except BaseException as exc:   # noqa: BLE001 - nothing crosses the C boundary
            _keep_callback_error(ssl, "message", exc)


# -- the byte pump -----------------------------------------------------------------------------------
# One call per arrival: feed the ciphertext, drive OpenSSL until it wants more, drain what it wrote,
# and return a code rather than raise for want-read (pyOpenSSL raises an exception for every
# want-read and copies through a fresh 64 KB buffer per recv). `PyPump` is the pure twin, calling
# the same OpenSSL functions through pyOpenSSL's cffi bindings; native/tlspump.pyx is the native
# one, calling them through the addresses of those same bindings. `set_native` picks.
WANT, DONE, CLOSED, FAILED = 0, 1, 2, 3
_CHUNK = 32768
_MAX_WRITE = 16384
_RENEW_AT = 16384   # a call that moved more than this through a BIO renews both (see PyPump.renew)
_SSL_ERROR_WANT_READ = 2
_SSL_ERROR_SYSCALL = 5
_SSL_ERROR_ZERO_RETURN = 6
_PUMP_FUNCTIONS = ("SSL_do_handshake", "SSL_shutdown", "SSL_read", "SSL_write", "BIO_read", "BIO_write",
                   "SSL_get_error", "ERR_clear_error", "BIO_new", "BIO_s_mem", "SSL_set_bio",
                   "BIO_get_mem_data", "BIO_free", "SSL_pending")


def _tls_error(conn: SSL.Connection | None, code: int) -> SSL.Error:
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
    def _carry(old, new) -> None:
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

    # what the handshake reads of this SSL (the native Pump has the same three)
    def leaf_der(self) -> bytes | None:
        return _peer_leaf_der(self._ssl)

    def session_digest(self, label: bytes) -> bytes | None:
        return _session_digest(self._ssl, label)

    def store_cert_der(self, store: int) -> bytes:
        return _current_cert_der(_ffi.cast("X509_STORE_CTX *", store))


def _py_pump(conn: SSL.Connection) -> PyPump:
    return PyPump(conn)


def _load_native():
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
    missing = missing_bindings(_openssl.lib, _PUMP_FUNCTIONS)
    if missing:
        NATIVE_UNAVAILABLE = (f"cryptography {_cryptography_version()} no longer exposes "
                              f"{', '.join(missing)}")
        return None
    addresses = {n: int(_ffi.cast("uintptr_t", _ffi.addressof(_openssl.lib, n))) for n in _PUMP_FUNCTIONS}
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

    def native_pump(conn: SSL.Connection):
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


NATIVE_MESSAGE_CALLBACK = None
# gateway._tls_c.server: a connection's SSL made without a pyOpenSSL Connection (None: an old build,
# or bindings without SSL_new & co.: connections then get a pyOpenSSL Connection and the native pump)
NATIVE_SERVER = None
NATIVE_UNAVAILABLE: str | None = None      # why the native pump is not there, when it is not
NATIVE_PUMP = _load_native()
_make_pump = _py_pump
_message_callback = _py_message_callback
native_mode = "python"


def set_native(mode: str) -> str:
    """Pick the native or pure pump for connections made afterwards, and the message callback of
    contexts built afterwards: ``"auto"``, ``"on"`` or ``"off"``; returns what was chosen.
    ``"on"`` without a working extension raises NativeUnavailable (with NATIVE_UNAVAILABLE's
    reason); ``"auto"`` falls back to the pure twin, and `fallback_reason()` says why."""
    global _make_pump, _message_callback, native_mode
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"native mode must be 'auto', 'on' or 'off', not {mode!r}")
    if mode == "on" and NATIVE_PUMP is None:
        raise NativeUnavailable(f"native = \"on\" but the native TLS pump is unavailable: "
                                f"{NATIVE_UNAVAILABLE or 'gateway._tls_c cannot be imported'} "
                                f"(reinstall with `pip install -e .` to "
                                f"build it, or install a cryptography within the range "
                                f"pyproject.toml names)")
    native = mode != "off" and NATIVE_PUMP is not None
    _make_pump = NATIVE_PUMP if native else _py_pump
    # contexts built afterwards get the matching message callback (see ListenerTLS._context)
    _message_callback = NATIVE_MESSAGE_CALLBACK if native else _py_message_callback
    native_mode = "native" if native else "python"
    return native_mode


def fallback_reason(mode: str) -> str | None:
    """Why `mode` ("auto") got the pure pump although native was wanted, or None."""
    return NATIVE_UNAVAILABLE if mode == "auto" and NATIVE_PUMP is None else None


set_native("auto")


_NO_SESSIONS: tuple = ()      # what an established connection keeps of its sessions


# The state of a TLS connection, one name each: PureTLSConnection keeps it in slots, the native
# twin (gateway._tls_c.TLSCore) in a C struct with the same names (tests/unit/test_tls.py holds
# them equal).
STATE = ("_tls", "_conn", "_ssl", "_ctx", "_pump", "state", "_chain", "_decision", "_verdict",
         "_called", "started", "handshake_s", "identity", "_resumed", "_renegotiating",
         "_cert_bytes", "_hello_seen", "_sessions", "_resumed_session", "_callback_error")


class TLSConnection:
    """A server-side TLS connection over memory BIOs. Sans-IO: bytes in, bytes and events out.

    The behaviour of both twins, without a layout of its own: `PureTLSConnection` adds the state
    as slots; the native twin puts gateway._tls_c.TLSCore first, whose struct holds the same names
    and whose `__init__`, `receive`, `send`, `close`, `_to` and `_handshake_done` are C; the rest
    (the callbacks, verdicts, refusals) is these methods for both. Made by ListenerTLS.connection."""

    __slots__ = ()

    def __init__(self, tls: ListenerTLS) -> None:
        self._tls = tls
        self._ctx = tls.default_context
        if tls._native_setup and _make_pump is NATIVE_PUMP:
            # the native twin: the SSL and its BIOs made in one call, owned by the pump, found by
            # OpenSSL's callbacks through the pump's registry (weakly: see gateway._tls_c.server)
            pump = NATIVE_SERVER(tls._native_context_address(self._ctx), self)
            self._conn = None
            self._ssl = _ffi.cast("SSL *", pump.ssl_address)
        else:
            conn = SSL.Connection(self._ctx, None)
            conn.set_accept_state()
            conn.set_app_data(self)
            self._conn = conn
            self._ssl = conn._ssl
            pump = _make_pump(conn)
        self._pump = pump
        self.state = TLSState.HANDSHAKING
        self._chain: list[bytes] = []
        self._decision: bool | None = None
        self._verdict: Verdict | None = None
        self._called = False
        self._resumed = False           # set by the servername callback
        self._renegotiating = False     # set by the message callback
        self._cert_bytes = -1           # the client Certificate message's body, as received
        self._hello_seen = False        # the servername callback ran: the ClientHello is processed
        self._sessions: list[bytes] = []        # digests of the sessions this handshake issued
        self._resumed_session: bytes | None = None      # digest of the session it resumed
        self._callback_error: str | None = None         # the first exception a callback caught
        self.started = time.monotonic()
        self.handshake_s = 0.0
        self.identity: Identity | None = None

    def _keep_error(self, where: str, exc: BaseException) -> None:
        if self._callback_error is None:
            self._callback_error = f"{where} callback: {type(exc).__name__}: {exc}"[:400]

    def _set_context(self, ctx: SSL.Context) -> None:
        """The SNI switch to another of the listener's certificates."""
        if self._conn is not None:
            self._conn.set_context(ctx)
        else:
            _lib.SSL_set_SSL_CTX(self._ssl, ctx._context)
        self._ctx = ctx

    def _to(self, new: TLSState) -> None:
        if new not in self.state._successors:
            raise RuntimeError(f"TLS state {self.state} -> {new} is not allowed")
        self.state = new

    # -- the verify callback ---------------------------------------------------------------------
    def _on_verify(self, store, depth: int, ok: int) -> VerifyStatus | None:
        """One call of OpenSSL's verify callback: None accepts, a status refuses (see _c_verify)."""
        self._called = True
        if self._decision is not None:
            return None if self._decision else self._verdict.status
        tls = self._tls
        if depth == 0 and ok:
            too_big = self._size_refusal()
            if too_big is not None:
                self._verdict = too_big
                self._decision = False
                return too_big.status
        if tls.verifier is None:
            # passthrough: nothing is verified; the presented chain is read after the handshake
            return None
        chain = self._chain
        if depth >= len(chain):
            chain.extend([b""] * (depth + 1 - len(chain)))
        if not chain[depth]:
            # the top of an unanchored chain only ever gets an error call, so record on every call
            chain[depth] = self._pump.store_cert_der(int(_ffi.cast("uintptr_t", store)))
        if depth != 0 or not ok:
            # OpenSSL's opinion (its store is empty, so it always complains) is not the verdict.
            # The verdict comes at the final call, depth 0 with preverify ok: by then OpenSSL has
            # walked every certificate it could chain from what the client sent.
            return None
        return None if self._decide() else self._verdict.status

    def _size_refusal(self) -> Verdict | None:
        """max_client_cert_chain_bytes, applied to what the client sent: the body of its Certificate
        message. The chain the Verifier sees is the one OpenSSL built (one certificate per depth of
        the verify callback), so certificates that chain to nothing (padding) never reach it: the
        Verifier's own size check cannot see them. Unknown size (the message callback did not see
        the message) fails closed."""
        n, limit = self._cert_bytes, self._tls.max_chain_bytes
        if 0 <= n <= limit:
            return None
        if n < 0:
            return Verdict(VerifyStatus.UNMAPPED, None, 0.0, "size of the client's Certificate message unknown")
        return Verdict(VerifyStatus.MAX_SIZE, None, 0.0,
                       f"client certificates of {n} bytes, more than max_client_cert_chain_bytes = {limit}")

    def _decide(self) -> bool:
        too_big = self._size_refusal()
        if too_big is not None:
            self._verdict = too_big
            self._decision = False
            return False
        verdict = self._tls.verifier.verify_der(tuple(d for d in self._chain if d))
        self._verdict = verdict
        self._decision = verdict.ok
        return verdict.ok

    # -- the message callback ----------------------------------------------------------------------
    def _on_message(self, write_p: int, msg_type: int, length: int) -> None:
        if not write_p and msg_type == _MT_CLIENT_HELLO and self.state is not TLSState.HANDSHAKING:
            # a ClientHello on an established connection: a renegotiation attempt (TLS 1.2;
            # OP_NO_RENEGOTIATION makes OpenSSL answer a no_renegotiation warning and carry on, RFC
            # 5746 4.2) or a protocol violation (TLS 1.3 has no renegotiation)
            self._renegotiating = True
        elif not write_p and msg_type == _MT_CERTIFICATE:
            # before the verify callback: OpenSSL hands a message to the callback once it has read
            # all of it, then processes it (tls_get_message_body)
            self._cert_bytes = length - 4       # less the handshake header
        elif write_p and msg_type == _MT_NEW_SESSION_TICKET and self.state is TLSState.HANDSHAKING \
                and self._tls.keeps_chains:
            # TLS 1.3: OpenSSL has just made this ticket's session s->session, with its own PSK
            # (tls_construct_new_session_ticket dups the session per ticket); TLS 1.2: the
            # handshake's session, whose master key the ticket carries
            self._note_session()

    def _note_session(self) -> None:
        d = self._pump.session_digest(_SESSION_LABEL)
        if d is not None and d != self._resumed_session and d not in self._sessions:
            self._sessions.append(d)

    # -- the servername callback -------------------------------------------------------------------
    def _on_client_hello(self, alert) -> int:
        """Every ClientHello: the SNI switch, then, when a session resumes, the verdict on it. A
        resumed session whose client is no longer admitted (revoked since, expired, its CA gone) is
        refused here, with the alert of its status, before the ServerHello: the client never gets
        to send a request, nor a fresh ticket."""
        tls = self._tls
        ssl = self._ssl
        self._hello_seen = True
        tls._on_sni(self)
        if not _session_reused(ssl):
            return _SSL_TLSEXT_ERR_OK
        self._resumed = True
        if tls.keeps_chains:
            # the resumed session is s->session now; in TLS 1.3 it is replaced by the new ticket's
            # before the handshake ends, so its key is read here
            self._resumed_session = self._pump.session_digest(_SESSION_LABEL)
        if tls.verifier is None:
            return _SSL_TLSEXT_ERR_OK
        leaf = self._pump.leaf_der()
        if leaf is None:
            # a session of an optional-mode client that sent no certificate: nothing to re-check
            return _SSL_TLSEXT_ERR_OK
        verdict = self._resumed_verdict(leaf)
        self._verdict = verdict
        if verdict.ok:
            return _SSL_TLSEXT_ERR_OK
        alert[0] = REFUSAL_ALERTS.get(verdict.status, _UNMAPPED_REFUSAL)[1]
        return _SSL_TLSEXT_ERR_ALERT_FATAL

    # -- bytes in and out ----------------------------------------------------------------------------
    def receive(self, data: bytes) -> tuple[bytes, bytes, tuple]:
        """Feed ciphertext; get (ciphertext to send, plaintext received, events): every event of
        this arrival, in order, as a tuple (NO_EVENTS, the empty tuple, in the common case)."""
        state = self.state
        if state is TLSState.OPEN:
            code, plain, out = self._pump.read(data)
            if code == WANT and not self._renegotiating:
                return out, plain, NO_EVENTS
            return out, plain, (self._read_ended(code),)
        if state is not TLSState.HANDSHAKING:
            return b"", b"", NO_EVENTS
        pump = self._pump
        code, out = pump.handshake(data)
        if code == WANT:
            return out, b"", NO_EVENTS
        if code == FAILED:
            self._to(TLSState.FAILED)
            return out, b"", (self._failure(pump.error),)
        event = self._handshake_done()
        if type(event) is HandshakeFailed:
            self._to(TLSState.FAILED)
            return out + pump.shutdown(), b"", (event,)
        self._to(TLSState.OPEN)
        # what only the handshake needed can go: the chain is in the verdict now, and the sessions
        # it issued have their chains filed (_keep); no session is noted once the state is OPEN
        self._chain = None
        self._sessions = _NO_SESSIONS
        self._resumed_session = None
        # the client's first request often travels with its Finished: read it now, and whatever
        # follows it in the same arrival (a close_notify, a bad record) is an event too
        code, plain, more = pump.read(b"")
        if more:
            out += more
        if code != WANT or self._renegotiating:
            return out, plain, (event, self._read_ended(code))
        pump.renew()        # drop the handshake's buffers: most connections idle from here
        return out, plain, (event,)

    def _read_ended(self, code: int):
        if code == CLOSED and not self._renegotiating:
            self._to(TLSState.PEER_CLOSED)
            return PEER_CLOSED
        self._to(TLSState.FAILED)
        if self._renegotiating:
            # refused whatever OpenSSL did with it (a warning alert, or a fatal one in TLS 1.3):
            # like nginx, the connection ends here rather than carry on half-renegotiated
            detail = "client-initiated renegotiation" if code != FAILED else \
                f"client-initiated renegotiation: {_describe(self._pump.error)}"
            return TLSFailed("renegotiation_refused", detail)
        return TLSFailed("tls_error", _describe(self._pump.error))

    def send(self, data: bytes) -> bytes:
        state = self.state
        if state is not TLSState.OPEN and state is not TLSState.PEER_CLOSED:
            return b""
        code, out = self._pump.write(data)
        if code == FAILED:
            self._to(TLSState.FAILED)
            return b""
        return out

    def close(self) -> bytes:
        """A close_notify for the peer, if the connection is in a state to send one."""
        if self.state is TLSState.OPEN or self.state is TLSState.PEER_CLOSED:
            self._to(TLSState.CLOSED)
            return self._pump.shutdown()
        return b""

    # -- handshake outcome -------------------------------------------------------------------------
    def _failure(self, exc: Exception) -> HandshakeFailed:
        if self._callback_error is not None:
            # one of our OpenSSL callbacks failed (and refused, failing closed): that is the cause,
            # whatever OpenSSL says about the alert it then sent
            return HandshakeFailed(VerifyStatus.UNMAPPED, "callback_error",
                                   f"{self._callback_error} ({_describe(exc)})", None,
                                   self._resumed)
        v = self._verdict
        if v is not None and not v.ok:
            if self._resumed:
                return HandshakeFailed(v.status, "resumed_client_refused", v.detail, v.identity, True)
            return HandshakeFailed(v.status, "client_cert_refused", v.detail, v.identity)
        detail = _describe(exc)
        if "peer did not return a certificate" in detail:
            return HandshakeFailed(VerifyStatus.NOT_FOUND, "client_cert_missing", detail)
        if "excessive message size" in detail and self._hello_seen and self._tls.mtls != "off":
            # OpenSSL's own cap on the Certificate message (max_cert_list, 100 KiB by default, not
            # settable through these bindings) fired before ours could: past the ClientHello the
            # only message a client sends that large is its Certificate. OpenSSL has already sent
            # its alert (illegal_parameter); the status is the one ours would have given.
            return HandshakeFailed(VerifyStatus.MAX_SIZE, "client_cert_refused",
                                   f"client certificates larger than OpenSSL's limit ({detail})")
        if v is not None and v.ok:
            # the chain was fine but the handshake still failed after it: typically the client does
            # not hold the private key (CertificateVerify), or it aborted
            return HandshakeFailed(VerifyStatus.UNMAPPED, "tls_error", detail, v.identity)
        return HandshakeFailed(VerifyStatus.UNMAPPED, "tls_error", detail)

    def _handshake_done(self) -> HandshakeDone | HandshakeFailed:
        ssl = self._ssl
        tls = self._tls
        self.handshake_s = time.monotonic() - self.started
        resumed = bool(_session_reused(ssl))
        if tls.keeps_chains and not resumed and not self._sessions:
            # a TLS 1.2 session without a ticket (session id cache) has no NewSessionTicket; a
            # resumed TLS 1.2 session keeps its key, a resumed TLS 1.3 one noted its new ticket
            self._note_session()
        identity: Identity | None = None
        status: VerifyStatus | None = None
        if tls.verifier is not None:
            verdict = self._verdict
            if verdict is None and self._called:
                # a full handshake whose final callback never came: decide now, fail closed
                self._decide()
                verdict = self._verdict
                if not verdict.ok:
                    return HandshakeFailed(verdict.status, "client_cert_refused", verdict.detail,
                                           verdict.identity)
            elif verdict is None:
                leaf = self._pump.leaf_der()
                if leaf is not None:
                    # A resumed session the servername callback did not judge (it always does:
                    # this is the fail-closed net). Find the identity proved at the full
                    # handshake and check revocation again, now.
                    verdict = self._resumed_verdict(leaf)
                    if not verdict.ok:
                        return HandshakeFailed(verdict.status, "resumed_client_refused",
                                               verdict.detail, verdict.identity, True)
            if verdict is not None:
                identity, status = verdict.identity, verdict.status
                if self._sessions:
                    self._keep(verdict, tls.verifier.cache)
            elif tls.mtls == "verify":
                return HandshakeFailed(VerifyStatus.NOT_FOUND, "client_cert_missing", "no certificate")
        elif tls.passthrough_cache is not None:
            identity = self._passthrough_identity(ssl)
            status = VerifyStatus.NOT_VERIFIED if identity is not None else None
        self.identity = identity
        name = _servername(ssl)
        return HandshakeDone(identity, status, resumed, _version_name(ssl), _cipher_name(ssl),
                             _name(name) if name else None,
                             tls.certificate_names.get(self._ctx, ()))

    def _keep(self, verdict: Verdict, cache: ChainCache) -> None:
        """Keep the chain this connection was admitted with under every session it issued: in this
        worker's memory until the session expires, and in the shared chain store for the others."""
        sessions = self._sessions
        if not sessions or not verdict.ok or verdict.identity is None:
            return
        tls = self._tls
        until = time.time() + tls.session_timeout_s
        for d in sessions:
            cache.put_session(d, verdict, until)
        chain = verdict.identity.chain_der
        store = tls.chain_store
        # the leaf alone is what a resumption that finds no file forwards anyway
        if store is not None and len(chain) > 1:
            store.put([d.hex() for d in sessions], chain)

    def _session_chain(self, cache: ChainCache, leaf_der: bytes, now: float):
        """What is known of the resumed session's own chain: (verdict kept in this worker, None),
        or (None, the chain to decide on: the shared store's, else the leaf alone). Never the chain
        of another session of the same leaf."""
        session = self._resumed_session
        if session is None:
            return None, (leaf_der,)
        known = cache.by_session(session, now)
        if known is not None and known.identity.chain_der[0] == leaf_der:
            return known, None
        store = self._tls.chain_store
        chain = store.get(session.hex()) if store is not None else None
        if not chain or chain[0] != leaf_der:
            chain = (leaf_der,)
        return None, chain

    def _resumed_verdict(self, leaf_der: bytes) -> Verdict:
        verifier = self._tls.verifier
        now = time.time()
        known, chain = self._session_chain(verifier.cache, leaf_der, now)
        if known is not None:
            return verifier.recheck(known, now)
        # Not in this worker's memory (another worker did the full handshake, or a reload emptied
        # it): the chain presented then, read back from the shared store, is verified again in
        # full against the current trust store, like a presented chain. Without it only the leaf is
        # known, and it must chain to the bundle on its own or the session is refused.
        verdict = verifier.verify_der(chain, now)
        if self._resumed_session is not None:
            verifier.cache.put_session(self._resumed_session, verdict, now + self._tls.session_timeout_s)
        return verdict

    def _passthrough_identity(self, ssl) -> Identity | None:
        cache = self._tls.passthrough_cache
        now = time.time()
        leaf_der = self._pump.leaf_der()
        if leaf_der is None:
            return None
        chain = _peer_chain_ders(ssl)
        if chain or self._called:
            # A full handshake (the verify callback ran): the presented chain, which on the server
            # side does not include the leaf (SSL_get_peer_cert_chain(3)) and is empty when the
            # client sent its leaf alone. Only a resumed session has no chain to read.
            ders = chain or ()
            if not ders or ders[0] != leaf_der:
                ders = (leaf_der,) + ders
        else:
            known, ders = self._session_chain(cache, leaf_der, now)
            if known is not None:
                self._keep(known, cache)       # TLS 1.3: the new ticket gets the same chain
                return known.identity
        key = cache.chain_key(ders)
        verdict = cache.get(key, now)
        if verdict is None:
            try:
                identity = identity_from_der(ders, VerifyStatus.NOT_VERIFIED)
            except Exception:
                return None     # an unparseable certificate is forwarded as nothing, never guessed
            verdict = Verdict(VerifyStatus.SUCCESS, identity, now + 3600.0)
            cache.put(key, verdict)
        if self._resumed_session is not None:
            cache.put_session(self._resumed_session, verdict, now + self._tls.session_timeout_s)
        self._keep(verdict, cache)
        return verdict.identity

    # -- facts for logs ----------------------------------------------------------------------------
    @property
    def alpn(self) -> bytes | None:
        return _alpn_selected(self._ssl) or None


class PureTLSConnection(TLSConnection):
    """TLSConnection with its state in slots: the pure twin."""

    __slots__ = STATE + ("__weakref__",)


def _native_connection():
    if NATIVE_SERVER is None:
        return None
    from . import _tls_c
    if not hasattr(_tls_c, "TLSCore"):
        return None     # an old build

    _tls_c.bind_connection(
        states=(TLSState.HANDSHAKING, TLSState.OPEN, TLSState.PEER_CLOSED, TLSState.CLOSED,
                TLSState.FAILED),
        handshake_done=HandshakeDone, handshake_failed=HandshakeFailed, no_events=NO_EVENTS,
        no_sessions=_NO_SESSIONS, not_verified=VerifyStatus.NOT_VERIFIED,
        not_found=VerifyStatus.NOT_FOUND, pointer=partial(_ffi.cast, "SSL *"),
        monotonic=time.monotonic, names_max=_NAMES_MAX, nametype_host=_NAMETYPE_HOST)

    class NativeTLSConnection(_tls_c.TLSCore, TLSConnection):
        """The native twin: the state and the common path in C (gateway._tls_c.TLSCore)."""

        __slots__ = ()

    return NativeTLSConnection


NativeTLSConnection = _native_connection()


def _describe(exc: Exception) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list):
        parts = [e[2] if isinstance(e, tuple) and len(e) > 2 else str(e) for e in args[0]]
        if parts:
            return "; ".join(p for p in parts if p)
    return str(exc) or type(exc).__name__
