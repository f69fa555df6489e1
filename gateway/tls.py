"""TLS for listeners: SSL contexts per certificate and SNI name, and a sans-IO server connection.

How this works: `ListenerTLS` builds, once per listener, one pyOpenSSL context per configured
certificate (TLS 1.2+ only, ECDHE+AEAD ciphers for 1.2, no compression, no renegotiation, ALPN
http/1.1, a session id context so verified sessions resume) and the SNI map that picks among them.
C-level callbacks are installed through the cryptography bindings rather than pyOpenSSL's
wrappers: the verify callback (so a refusal can name its reason in the alert), the servername
callback (called for every ClientHello: the SNI switch and the verdict on a resumed session), the
ALPN callback (http/1.1 or nothing) and a message callback (the size of the client's Certificate
message, a renegotiation attempt, each session ticket issued).

The machinery is gateway.tlspump's, the one module that touches pyOpenSSL's private attributes and
the raw bindings: the byte pump and its native twin's binding, what a handshake reads of an SSL, the
setters that install the callbacks. This module holds the policy and the state machine, and calls
those by name. The verify, servername and ALPN callbacks are here, beside the policy they carry out
(REFUSAL_ALERTS, fail closed, http/1.1 only), written against tlspump's readers; the message
callback, which decides nothing and runs for every record, is tlspump's, beside its C twin in
native/tlspump.pyx, and hands its three messages to `TLSConnection._on_message`.

`TLSConnection` drives one `SSL.Connection(ctx, None)` over memory BIOs: `receive(bytes)` returns the
bytes to send back, the plaintext that arrived, and every event of that arrival as a tuple (usually
empty: `HandshakeDone`, `HandshakeFailed`, `TLSFailed`, `PeerClosed`, in order);
`send(plaintext)` returns records to write; `close()` returns a close_notify.
No socket and no event loop here.

What a resumption forwards is the chain of its own session: OpenSSL restores only the leaf (a
ticket carries no chain, and these bindings offer neither ticket appdata nor session new/get
callbacks), so the chain is kept under a digest of each session's secret, collected while the
handshake issues its sessions, and found again by the resumed session's (see
gateway.tlspump.session_digest); an unknown session forwards its leaf alone, never another
connection's chain.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from OpenSSL import SSL, crypto

from .errors import NativeUnavailable
from .identity import Identity, VerifyStatus, identity_from_der
# The machinery (every touch of pyOpenSSL's private surface): bound here as module globals, once,
# since the handshake calls them for every connection (DESIGN.md's hot-path rule 10). The pump's
# result codes are the connection core's too, named through this module (conn.py, bench).
# The names other modules read through this one are re-exported explicitly (`X as X`).
from .tlspump import CLOSED as CLOSED
from .tlspump import DONE as DONE
from .tlspump import FAILED as FAILED
from .tlspump import NATIVE_MESSAGE_CALLBACK as NATIVE_MESSAGE_CALLBACK
from .tlspump import NATIVE_PUMP as NATIVE_PUMP
from .tlspump import NATIVE_UNAVAILABLE as NATIVE_UNAVAILABLE
from .tlspump import WANT as WANT
from .tlspump import (ALPN_SELECT_CALLBACK, MT_CERTIFICATE, MT_CLIENT_HELLO, MT_NEW_SESSION_TICKET,
                      NAMES_MAX, NAMETYPE_HOST, NATIVE_SERVER, SERVERNAME_CALLBACK, SESSION_LABEL,
                      VERIFY_CALLBACK, CData, PumpFactory, TLSPump, X509_V_ERR_CERT_CHAIN_TOO_LONG,
                      X509_V_ERR_CERT_HAS_EXPIRED, X509_V_ERR_CERT_REJECTED, X509_V_ERR_CERT_REVOKED,
                      X509_V_ERR_INVALID_PURPOSE, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                      alpn_selected, c_bytes, c_callback, cipher_name, context_address,
                      keep_callback_error, name_of, owner, peer_chain_ders, pointer_address,
                      py_message_callback, py_pump, servername, session_reused,
                      set_alpn_select_callback, set_message_callback, set_servername_callback,
                      set_ssl_context, set_verify_callback, set_verify_error, ssl_of, ssl_pointer,
                      int_pointer, native_servername_callback, store_ssl, verify_depth, version_name)
from .trust import ChainCache, Implementation, TrustStore, Verdict, Verifier

if TYPE_CHECKING:
    from .sessions import ChainStore

MODES = ("off", "passthrough", "verify", "optional")
DEFAULT_CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"
_TLS_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_SSL_MODE_RELEASE_BUFFERS = 0x00000010   # free record buffers of idle connections (memory per conn)
_ALPN_HTTP11 = b"http/1.1"


class TLSState(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    PEER_CLOSED = "peer_closed"     # close_notify received: we may still write (a half-close)
    CLOSED = "closed"
    FAILED = "failed"

    _successors: tuple[TLSState, ...]     # set below, from _TRANSITIONS


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


@dataclass(frozen=True, slots=True)
class StatusPending:
    """The handshake is complete at the TLS level but the client's revocation status is still
    being asked for (gateway.ocsp): the connection reads no more until `pending` settles, then
    calls `receive(b"")`, which ends the handshake either way (HandshakeDone or HandshakeFailed).
    nginx's `ssl_ocsp` waits the same way, after the handshake and before the request."""
    pending: Any


# what TLSConnection.receive returns, in order, for one arrival
TLSEvent: TypeAlias = "HandshakeDone | HandshakeFailed | TLSFailed | PeerClosed | StatusPending"

PEER_CLOSED = PeerClosed()
NO_EVENTS: tuple[()] = ()


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
# reported through X509_V_ERR_CERT_HAS_EXPIRED. A deny-listed serial, one revoked through the
# admin API or by its OCSP responder is certificate_revoked like a CRL hit; a status that could not
# be learnt (responder unreachable, CRL stale) or that the responder does not know is
# bad_certificate, as OpenSSL's own OCSP checks report it. No certificate at all is refused by OpenSSL itself
# (VERIFY_FAIL_IF_NO_PEER_CERT): certificate_required in TLS 1.3 (RFC 8446 4.4.2.4), and
# handshake_failure in TLS 1.2, which has no better alert (RFC 5246 7.4.6).
REFUSAL_ALERTS: dict[VerifyStatus, tuple[int, int]] = {
    VerifyStatus.UNTRUSTED: (X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, ALERT_UNKNOWN_CA),
    VerifyStatus.MAX_CHAIN_DEPTH: (X509_V_ERR_CERT_CHAIN_TOO_LONG, ALERT_UNKNOWN_CA),
    VerifyStatus.EXPIRED: (X509_V_ERR_CERT_HAS_EXPIRED, ALERT_CERTIFICATE_EXPIRED),
    VerifyStatus.NOT_YET_VALID: (X509_V_ERR_CERT_HAS_EXPIRED, ALERT_CERTIFICATE_EXPIRED),
    VerifyStatus.CRL_HIT: (X509_V_ERR_CERT_REVOKED, ALERT_CERTIFICATE_REVOKED),
    VerifyStatus.REJECTED: (X509_V_ERR_CERT_REVOKED, ALERT_CERTIFICATE_REVOKED),
    VerifyStatus.REVOKED: (X509_V_ERR_CERT_REVOKED, ALERT_CERTIFICATE_REVOKED),
    VerifyStatus.OCSP_REVOKED: (X509_V_ERR_CERT_REVOKED, ALERT_CERTIFICATE_REVOKED),
    VerifyStatus.OCSP_UNKNOWN: (X509_V_ERR_CERT_REJECTED, ALERT_BAD_CERTIFICATE),
    VerifyStatus.OCSP_UNAVAILABLE: (X509_V_ERR_CERT_REJECTED, ALERT_BAD_CERTIFICATE),
    VerifyStatus.CRL_STALE: (X509_V_ERR_CERT_REJECTED, ALERT_BAD_CERTIFICATE),
    VerifyStatus.PURPOSE_INVALID: (X509_V_ERR_INVALID_PURPOSE, ALERT_UNSUPPORTED_CERTIFICATE),
    VerifyStatus.TYPE_UNSUPPORTED: (X509_V_ERR_INVALID_PURPOSE, ALERT_UNSUPPORTED_CERTIFICATE),
    VerifyStatus.INVALID: (X509_V_ERR_CERT_REJECTED, ALERT_BAD_CERTIFICATE),
    VerifyStatus.MAX_SIZE: (X509_V_ERR_CERT_REJECTED, ALERT_BAD_CERTIFICATE),
    VerifyStatus.NOT_FOUND: (X509_V_ERR_CERT_REJECTED, ALERT_BAD_CERTIFICATE),
    VerifyStatus.UNMAPPED: (_X509_V_ERR_UNSPECIFIED, ALERT_INTERNAL_ERROR),
}
_UNMAPPED_REFUSAL = REFUSAL_ALERTS[VerifyStatus.UNMAPPED]

_SSL_TLSEXT_ERR_OK = 0
_SSL_TLSEXT_ERR_ALERT_FATAL = 2

# tlspump.owner, typed: the connection of an SSL, found for OpenSSL's callbacks (tlspump, a layer
# below, cannot name TLSConnection). None for an SSL that is not ours: the callback then fails on
# it, which is a refusal like any exception there.
_owner: Callable[[CData], TLSConnection | None] = owner


@c_callback(VERIFY_CALLBACK)
def _c_verify(ok: int, store: CData) -> int:
    """OpenSSL's verify callback, installed with SSL_CTX_set_verify (not pyOpenSSL's wrapper, which
    gives no access to the store and so cannot name a refusal: OpenSSL 3+ then records
    X509_V_ERR_UNSPECIFIED and ssl_x509err2alert() turns it into internal_error). A refusal sets
    the X509_V_ERR_* whose alert fits the verify status (REFUSAL_ALERTS). Nothing may cross the C
    boundary: any exception is a refusal (internal_error)."""
    try:
        refused = _owner(store_ssl(store))._on_verify(  # type: ignore[union-attr]  # None: refused
            store, verify_depth(store), ok)
        if refused is None:
            # accepted at the gateway's level: OpenSSL's own complaint (its store is empty) must not
            # linger as the connection's verify result (pyOpenSSL's wrapper does the same)
            set_verify_error(store, _X509_V_OK)
            return 1
        set_verify_error(store, REFUSAL_ALERTS.get(refused, _UNMAPPED_REFUSAL)[0])
        return 0
    except BaseException as exc:   # noqa: BLE001 - fail closed
        try:
            set_verify_error(store, _X509_V_ERR_UNSPECIFIED)
            keep_callback_error(store_ssl(store), "verify", exc)
        except BaseException:   # noqa: BLE001
            pass
        return 0


@c_callback(SERVERNAME_CALLBACK)
def _c_client_hello(ssl: CData, alert: CData, arg: CData) -> int:
    """OpenSSL's servername callback, which it calls for every ClientHello, with or without SNI,
    once the extensions are parsed (final_server_name): by then SSL_session_reused() says whether a
    session resumes (TLS 1.2 ticket or session id: ssl_get_prev_session; TLS 1.3: the PSK, its
    binder checked) and that session's peer certificate is readable. Returning ALERT_FATAL with
    *alert set sends that alert before the ServerHello. Any exception refuses (internal_error).
    Its native twin (gateway._tls_c.servername_callback) decides the common cases in C and hands
    the rest to `_client_hello_at`."""
    return _client_hello(ssl, alert)


def _client_hello_at(ssl: int, alert: int) -> int:
    """The servername callback's body for the native twin's C callback (addresses as ints)."""
    return _client_hello(ssl_pointer(ssl), int_pointer(alert))


def _client_hello(ssl: CData, alert: CData) -> int:
    """The servername callback's body, both twins'."""
    try:
        return _owner(ssl)._on_client_hello(alert)  # type: ignore[union-attr]  # None: refused
    except BaseException as exc:   # noqa: BLE001 - fail closed
        try:
            alert[0] = ALERT_INTERNAL_ERROR
            keep_callback_error(ssl, "servername", exc)
        except BaseException:   # noqa: BLE001
            pass
        return _SSL_TLSEXT_ERR_ALERT_FATAL


# gateway._tls_c's servername callback (None without the native pump): contexts of the native
# setup install it
NATIVE_CLIENT_HELLO: CData | None = native_servername_callback(_client_hello_at)


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

    def __init__(self, *, name: str,
                 certificates: Sequence[tuple[str | Path, str | Path, tuple[str, ...]]],
                 mtls: str = "off", store: TrustStore | None = None, max_chain_depth: int = 4,
                 ignore_expiry: bool = False, advertise_ca_names: bool = False,
                 min_version: str = "1.2", ciphers_tls12: str = DEFAULT_CIPHERS_TLS12,
                 session_tickets: bool = True, session_timeout_s: int = 300,
                 max_chain_bytes: int = 65536, message_callback: CData | None = None,
                 trust_implementation: Implementation | None = None,
                 alpn: Sequence[str] = ("http/1.1",), report_only: bool = False) -> None:
        if mtls not in MODES:
            raise ValueError(f"mtls must be one of {MODES}")
        if mtls in ("verify", "optional") and store is None:
            raise ValueError(f"mtls = {mtls!r} needs a trust store")
        self.name = name
        self.mtls = mtls
        self.store = store
        # mtls_enforcement = "report": a client the verdict refuses is served, the verdict reported
        # (HandshakeDone with the failed status); only for a listener that verifies
        self.reports = report_only and mtls in ("verify", "optional")
        # the protocols ALPN may choose, in this listener's order of preference
        self.alpn = tuple(p.encode("ascii") for p in alpn)
        self._select_alpn = _alpn_callback(self.alpn)
        self.verifier = (Verifier(store, max_chain_depth=max_chain_depth, ignore_expiry=ignore_expiry,
                                  max_chain_bytes=max_chain_bytes)
                         if mtls in ("verify", "optional") and store is not None else None)
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
        self._chain_store: ChainStore | None = None
        # The session id context binds sessions to this listener and the verification policy that
        # admitted them: a session verified under one listener, or under another CA set, depth or
        # expiry policy, must never resume under this one (RFC 5246 F.1.4's concern; OpenSSL does
        # not resume a session whose sid_ctx differs). The CRLs and the deny-list are left out on
        # purpose: revocation is re-checked on every resumption, and a CRL update must not cost
        # every client a full handshake. gateway.server._tls_identity keeps the contexts over a
        # reload only while all of this is unchanged.
        self.session_id_context = session_id_context(
            name, mtls + ("|report" if self.reports else ""), store, max_chain_depth, ignore_expiry)
        sid = self.session_id_context
        self._contexts: list[SSL.Context] = []
        self._exact: dict[str, SSL.Context] = {}
        self._wildcard: dict[str, SSL.Context] = {}
        self.certificate_names: dict[SSL.Context, tuple[str, ...]] = {}
        # the message filter of the twin the runtime selected (gateway.native), else the one in force
        self._message_callback = message_callback if message_callback is not None else _message_callback
        for cert_path, key_path, names in certificates:
            ctx = self._build_context(cert_path, key_path, sid, min_version, ciphers_tls12,
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
        # (a context, its SSL_CTX address)
        self._native_address: tuple[SSL.Context | None, int] = (None, 0)
        # the C callbacks these contexts call (module-level objects; kept here too so their
        # lifetime visibly covers the contexts')
        self._callbacks: tuple[CData, ...] = (_c_verify, _c_client_hello, self._select_alpn,
                                              self._message_callback)
        # connections of this listener get an SSL of their own, without a pyOpenSSL Connection,
        # when the native pump can make one and these contexts carry the native message filter
        # (which finds such connections by the SSL's address)
        self._native_setup = (NATIVE_SERVER is not None
                              and self._message_callback is NATIVE_MESSAGE_CALLBACK)
        # one certificate: no SNI switch (what the native servername callback checks)
        self.single_context = len(self._contexts) == 1
        # OpenSSL calls the servername callback of the context the SSL was made with (the
        # default one); it does the SNI switch and the check of a resumed session. Every context
        # of the listener has the same verify policy, so whatever the ClientHello says (or fails
        # to say) never selects a weaker one. The native twin's with the native setup.
        client_hello = (NATIVE_CLIENT_HELLO if self._native_setup and NATIVE_CLIENT_HELLO is not None
                        else _c_client_hello)
        self._callbacks = self._callbacks + (client_hello,)
        set_servername_callback(self.default_context, client_hello)

    @property
    def chain_store(self) -> ChainStore | None:
        return self._chain_store

    @chain_store.setter
    def chain_store(self, store: ChainStore | None) -> None:
        self._chain_store = store
        if store is not None:
            # the store's sweep may drop a name once no listener's session can outlive it
            store.keep_for(self.session_timeout_s)

    def _build_context(self, cert_path: str | Path, key_path: str | Path, sid: bytes, min_version: str,
                       ciphers: str, tickets: bool, timeout_s: int, advertise: bool) -> SSL.Context:
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
        set_alpn_select_callback(ctx, self._select_alpn)
        set_message_callback(ctx, self._message_callback)
        ctx.set_session_id(sid)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
        ctx.set_timeout(timeout_s)
        if self.mtls == "off":
            ctx.set_verify(SSL.VERIFY_NONE)
        else:
            flags = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
            if self.mtls == "verify" and not self.reports:
                flags |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            # our own C-level callback (see _c_verify); pyOpenSSL's Context is told nothing, so its
            # _verify_helper stays None and the pump's failure skips it
            set_verify_callback(ctx, flags, _c_verify)
            # OpenSSL builds at most depth+2 certificates; leave room to report "too deep" ourselves
            ctx.set_verify_depth(self.max_chain_depth + 1)
            if advertise and self.store is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ctx.set_client_ca_list([crypto.X509.from_cryptography(ca).get_subject()
                                            for ca in self.store.cas])
        return ctx

    def _on_sni(self, tc: TLSConnection, ssl: CData) -> None:
        """Switch `tc` to the certificate the client's SNI names, read from `ssl`, its SSL (an
        unknown or absent name: the default one). Called from the servername callback, which
        catches what this raises."""
        if len(self._contexts) == 1:
            return
        raw = servername(ssl)
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
            address = context_address(ctx)
            self._native_address = (ctx, address)
        return address

    def connection(self) -> TLSConnection:
        """A new connection: the native twin when its SSL can be made without a pyOpenSSL
        Connection (gateway._tls_c.server) and the native pump is chosen, else the pure one."""
        if self._native_setup and _make_pump is NATIVE_PUMP and NativeTLSConnection is not None:
            return NativeTLSConnection(self)
        return PureTLSConnection(self)


_SSL_TLSEXT_ERR_NOACK = 3


def select_alpn(offered: bytes, preference: Sequence[bytes] = (_ALPN_HTTP11,)) -> tuple[int, int]:
    """(offset, length) in `offered` (the ClientHello's ALPN list: length-prefixed names, RFC 7301
    3.1) of the protocol chosen, or (-1, 0) for none: the first of the listener's `preference` the
    client offers (the server's order decides, as nginx's and OpenSSL's own selection do). Never a
    protocol the listener does not speak just because the client offers it."""
    found: dict[bytes, int] = {}
    i, n = 0, len(offered)
    while i < n:
        size = offered[i]
        end = i + 1 + size
        if end > n:
            return -1, 0    # a malformed list (OpenSSL checks it first): nothing is chosen
        found.setdefault(offered[i + 1:end], i + 1)
        i = end
    for proto in preference:
        at = found.get(proto)
        if at is not None:
            return at, len(proto)
    return -1, 0


def _alpn_callback(preference: tuple[bytes, ...]) -> CData:
    """OpenSSL's ALPN select callback for one order of preference: point at the protocol chosen
    in the client's own list, or carry on without ALPN (NOACK), as pyOpenSSL's
    NO_OVERLAPPING_PROTOCOLS does. Stateless: no connection is looked up. An exception answers
    NOACK. One per preference, made once and kept for the process's life (ALPN_CALLBACKS)."""
    callback = _ALPN_CALLBACKS.get(preference)
    if callback is not None:
        return callback

    @c_callback(ALPN_SELECT_CALLBACK)
    def select(ssl: CData, out: CData, outlen: CData, inp: CData, inlen: int, arg: CData) -> int:
        try:
            at, size = select_alpn(c_bytes(inp, inlen), preference)
            if at < 0:
                return _SSL_TLSEXT_ERR_NOACK
            out[0] = inp + at
            outlen[0] = size
            return _SSL_TLSEXT_ERR_OK
        except BaseException:   # noqa: BLE001 - nothing crosses the C boundary
            return _SSL_TLSEXT_ERR_NOACK

    _ALPN_CALLBACKS[preference] = select
    return select


_ALPN_CALLBACKS: dict[tuple[bytes, ...], CData] = {}


# -- which twin -----------------------------------------------------------------------------------
# gateway.tlspump's self-test found, at import, which twins of the pump and of the message filter
# this process has (NATIVE_PUMP, NATIVE_MESSAGE_CALLBACK, NATIVE_SERVER); set_native picks among
# them for the connections and contexts made afterwards.
_make_pump: PumpFactory = py_pump
_message_callback: CData = py_message_callback
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
    native_pump = NATIVE_PUMP if mode != "off" else None
    native = native_pump is not None
    _make_pump = native_pump if native_pump is not None else py_pump
    # contexts built afterwards get the matching message callback (see ListenerTLS._build_context)
    _message_callback = NATIVE_MESSAGE_CALLBACK if native else py_message_callback
    native_mode = "native" if native else "python"
    return native_mode


def fallback_reason(mode: str) -> str | None:
    """Why `mode` ("auto") got the pure pump although native was wanted, or None."""
    return NATIVE_UNAVAILABLE if mode == "auto" and NATIVE_PUMP is None else None


set_native("auto")


_NO_SESSIONS: tuple[()] = ()      # what an established connection keeps of its sessions


# The state of a TLS connection, one name each: PureTLSConnection keeps it in slots, the native
# twin (gateway._tls_c.TLSCore) in a C struct with the same names (tests/unit/test_tls.py holds
# them equal).
STATE = ("_tls", "_conn", "_ssl", "_ctx", "_pump", "state", "_chain", "_decision", "_verdict",
         "_called", "started", "handshake_s", "identity", "_resumed", "_renegotiating",
         "_cert_bytes", "_hello_seen", "_sessions", "_resumed_session", "_callback_error",
         "_awaiting")


class TLSConnection:
    """A server-side TLS connection over memory BIOs. Sans-IO: bytes in, bytes and events out.

    The behaviour of both twins, without a layout of its own: `PureTLSConnection` adds the state
    as slots; the native twin puts gateway._tls_c.TLSCore first, whose struct holds the same names
    and whose `__init__`, `receive`, `send`, `close`, `_to` and `_handshake_done` are C; the rest
    (the callbacks, verdicts, refusals) is these methods for both. Made by ListenerTLS.connection."""

    # No slots of its own (the layout is the subclass's); a type checker, told `()`, would refuse
    # every state assignment below, so it is given STATE's names and types instead.
    if not TYPE_CHECKING:
        __slots__ = ()
    _tls: ListenerTLS
    _conn: SSL.Connection | None        # None: the native pump made the SSL itself
    _ssl: CData                         # the connection's `SSL *`
    _ctx: SSL.Context
    _pump: TLSPump
    state: TLSState
    _chain: list[bytes] | None          # the chain by verify depth; None once OPEN
    _decision: bool | None
    _verdict: Verdict | None
    _called: bool
    started: float
    handshake_s: float
    identity: Identity | None
    _resumed: bool
    _renegotiating: bool
    _cert_bytes: int
    _hello_seen: bool
    _sessions: list[bytes] | tuple[()]  # _NO_SESSIONS once OPEN
    _resumed_session: bytes | None
    _callback_error: str | None
    _awaiting: Any                      # an OCSP answer still coming (gateway.ocsp.Pending)

    def __init__(self, tls: ListenerTLS) -> None:
        self._tls = tls
        self._ctx = tls.default_context
        pump: TLSPump
        if tls._native_setup and _make_pump is NATIVE_PUMP:
            # the native twin: the SSL and its BIOs made in one call, owned by the pump, found by
            # OpenSSL's callbacks through the pump's registry (weakly: see gateway._tls_c.server)
            pump = NATIVE_SERVER(  # type: ignore[misc]  # _native_setup: NATIVE_SERVER is set
                tls._native_context_address(self._ctx), self)
            self._conn = None
            self._ssl = ssl_pointer(pump.ssl_address)
        else:
            conn = SSL.Connection(self._ctx, None)
            conn.set_accept_state()
            conn.set_app_data(self)
            self._conn = conn
            self._ssl = ssl_of(conn)
            pump = _make_pump(conn)
        self._pump = pump
        self.state = TLSState.HANDSHAKING
        self._chain = []
        self._decision = None
        self._verdict = None
        self._called = False
        self._resumed = False           # set by the servername callback
        self._renegotiating = False     # set by the message callback
        self._cert_bytes = -1           # the client Certificate message's body, as received
        self._hello_seen = False        # the servername callback ran: the ClientHello is processed
        self._sessions = []             # digests of the sessions this handshake issued
        self._resumed_session = None    # digest of the session it resumed
        self._callback_error = None     # the first exception a callback caught
        self._awaiting = None           # the client's OCSP status, while it is being asked for
        self.started = time.monotonic()
        self.handshake_s = 0.0
        self.identity = None

    def _keep_error(self, where: str, exc: BaseException) -> None:
        if self._callback_error is None:
            self._callback_error = f"{where} callback: {type(exc).__name__}: {exc}"[:400]

    def _set_context(self, ctx: SSL.Context) -> None:
        """The SNI switch to another of the listener's certificates."""
        if self._conn is not None:
            self._conn.set_context(ctx)
        else:
            set_ssl_context(self._ssl, ctx)
        self._ctx = ctx

    def _to(self, new: TLSState) -> None:
        if new not in self.state._successors:
            raise RuntimeError(f"TLS state {self.state} -> {new} is not allowed")
        self.state = new

    # -- the verify callback ---------------------------------------------------------------------
    def _on_verify(self, store: CData, depth: int, ok: int) -> VerifyStatus | None:
        """One call of OpenSSL's verify callback: None accepts, a status refuses (see _c_verify).
        A listener that only reports accepts what its verdict refuses; the verdict stays, and the
        handshake's outcome carries its status (`_handshake_done`)."""
        refused = self._judge(store, depth, ok)
        if refused is not None and self._tls.reports:
            return None
        return refused

    def _judge(self, store: CData, depth: int, ok: int) -> VerifyStatus | None:
        self._called = True
        if self._decision is not None:
            # a decision is made with its verdict (_decide, the size refusal)
            return None if self._decision else self._verdict.status  # type: ignore[union-attr]
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
        # a list until the connection is OPEN, and OpenSSL calls this only while handshaking
        chain: list[bytes] = self._chain  # type: ignore[assignment]
        if depth >= len(chain):
            chain.extend([b""] * (depth + 1 - len(chain)))
        if not chain[depth]:
            # the top of an unanchored chain only ever gets an error call, so record on every call
            chain[depth] = self._pump.store_cert_der(pointer_address(store))
        if depth != 0 or not ok:
            # OpenSSL's opinion (its store is empty, so it always complains) is not the verdict.
            # The verdict comes at the final call, depth 0 with preverify ok: by then OpenSSL has
            # walked every certificate it could chain from what the client sent.
            return None
        return None if self._decide() else self._verdict.status  # type: ignore[union-attr]

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
        # called only for a listener that verifies, while handshaking (the chain is still a list)
        verdict = self._tls.verifier.verify_der(tuple(d for d in self._chain if d))  # type: ignore[union-attr]
        if verdict.ok:
            verdict = self._status_checked(verdict)
        self._verdict = verdict
        self._decision = verdict.ok
        return verdict.ok

    def _status_checked(self, verdict: Verdict) -> Verdict:
        """A good chain verdict, with the trust store's OCSP answer applied: a known refusal
        refuses now (inside the handshake, with its alert), an answer still coming is waited for
        after the handshake (`_awaiting`), a good one changes nothing. The checker's fast path is a
        cache lookup by CertID; the verdict in the chain cache is never changed."""
        checker = self._tls.verifier.store.ocsp  # type: ignore[union-attr]  # a verifying listener
        if checker is None:
            return verdict
        outcome = checker.check(verdict, time.time())
        if outcome is None:
            return verdict
        if isinstance(outcome, VerifyStatus):
            return _refused(verdict, outcome, "OCSP")
        self._awaiting = outcome
        return verdict

    def _settle(self, out: bytes) -> tuple[bytes, bytes, tuple[TLSEvent, ...]] | None:
        """The handshake is done at the TLS level and an OCSP answer was awaited: None when it came
        back good (the handshake ends as usual), else what `receive` returns (still waiting, or
        the refusal)."""
        pending = self._awaiting
        if not pending.done:
            return out, b"", (StatusPending(pending),)
        self._awaiting = None
        status = pending.result
        if status is None:
            return None
        awaited: Verdict = self._verdict  # type: ignore[assignment]  # awaited: a verdict was made
        verdict = _refused(awaited, status, f"OCSP: {pending.detail}" if pending.detail else "OCSP")
        self._verdict = verdict
        if self._tls.reports:
            return None         # served; the handshake's outcome reports the refusal
        self._to(TLSState.FAILED)
        return out + self._pump.shutdown(), b"", (HandshakeFailed(
            status, "resumed_client_refused" if self._resumed else "client_cert_refused",
            verdict.detail, verdict.identity, self._resumed),)

    # -- the message callback ----------------------------------------------------------------------
    def _on_message(self, write_p: int, msg_type: int, length: int) -> None:
        if not write_p and msg_type == MT_CLIENT_HELLO and self.state is not TLSState.HANDSHAKING:
            # a ClientHello on an established connection: a renegotiation attempt (TLS 1.2;
            # OP_NO_RENEGOTIATION makes OpenSSL answer a no_renegotiation warning and carry on, RFC
            # 5746 4.2) or a protocol violation (TLS 1.3 has no renegotiation)
            self._renegotiating = True
        elif not write_p and msg_type == MT_CERTIFICATE:
            # before the verify callback: OpenSSL hands a message to the callback once it has read
            # all of it, then processes it (tls_get_message_body)
            self._cert_bytes = length - 4       # less the handshake header
        elif write_p and msg_type == MT_NEW_SESSION_TICKET and self.state is TLSState.HANDSHAKING \
                and self._tls.keeps_chains:
            # TLS 1.3: OpenSSL has just made this ticket's session s->session, with its own PSK
            # (tls_construct_new_session_ticket dups the session per ticket); TLS 1.2: the
            # handshake's session, whose master key the ticket carries
            self._note_session()

    def _note_session(self) -> None:
        d = self._pump.session_digest(SESSION_LABEL)
        if d is not None and d != self._resumed_session and d not in self._sessions:
            # noted only while handshaking, when the digests are still a list
            self._sessions.append(d)  # type: ignore[union-attr]

    # -- the servername callback -------------------------------------------------------------------
    def _on_client_hello(self, alert: CData) -> int:
        """Every ClientHello: the SNI switch, then, when a session resumes, the verdict on it. A
        resumed session whose client is no longer admitted (revoked since, expired, its CA gone) is
        refused here, with the alert of its status, before the ServerHello: the client never gets
        to send a request, nor a fresh ticket."""
        tls = self._tls
        ssl = self._ssl
        self._hello_seen = True
        tls._on_sni(self, ssl)
        if not session_reused(ssl):
            return _SSL_TLSEXT_ERR_OK
        self._resumed = True
        if tls.keeps_chains:
            # the resumed session is s->session now; in TLS 1.3 it is replaced by the new ticket's
            # before the handshake ends, so its key is read here
            self._resumed_session = self._pump.session_digest(SESSION_LABEL)
        if tls.verifier is None:
            return _SSL_TLSEXT_ERR_OK
        leaf = self._pump.leaf_der()
        if leaf is None:
            # a session of an optional-mode client that sent no certificate: nothing to re-check
            return _SSL_TLSEXT_ERR_OK
        verdict = self._resumed_verdict(leaf)
        if verdict.ok:
            verdict = self._status_checked(verdict)
        self._verdict = verdict
        if verdict.ok or tls.reports:
            return _SSL_TLSEXT_ERR_OK
        alert[0] = REFUSAL_ALERTS.get(verdict.status, _UNMAPPED_REFUSAL)[1]
        return _SSL_TLSEXT_ERR_ALERT_FATAL

    # -- bytes in and out ----------------------------------------------------------------------------
    def receive(self, data: bytes) -> tuple[bytes, bytes, tuple[TLSEvent, ...]]:
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
        if self._awaiting is not None:
            held = self._settle(out)
            if held is not None:
                return held
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

    def _read_ended(self, code: int) -> PeerClosed | TLSFailed:
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
    def _failure(self, exc: BaseException | None) -> HandshakeFailed:
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
        resumed = bool(session_reused(ssl))
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
                decided: Verdict = self._verdict  # type: ignore[assignment]  # _decide sets it
                if not decided.ok and not tls.reports:
                    return HandshakeFailed(decided.status, "client_cert_refused", decided.detail,
                                           decided.identity)
                verdict = decided
            elif verdict is None:
                leaf = self._pump.leaf_der()
                if leaf is not None:
                    # A resumed session the servername callback did not judge (it always does:
                    # this is the fail-closed net). Find the identity proved at the full
                    # handshake and check revocation again, now.
                    verdict = self._resumed_verdict(leaf)
                    if not verdict.ok and not tls.reports:
                        return HandshakeFailed(verdict.status, "resumed_client_refused",
                                               verdict.detail, verdict.identity, True)
            if verdict is not None:
                identity, status = verdict.identity, verdict.status
                if self._sessions:
                    self._keep(verdict, tls.verifier.cache)
            elif tls.mtls == "verify":
                if not tls.reports:
                    return HandshakeFailed(VerifyStatus.NOT_FOUND, "client_cert_missing",
                                           "no certificate")
                status = VerifyStatus.NOT_FOUND
        elif tls.passthrough_cache is not None:
            identity = self._passthrough_identity(ssl)
            status = VerifyStatus.NOT_VERIFIED if identity is not None else None
        self.identity = identity
        name = servername(ssl)
        return HandshakeDone(identity, status, resumed, version_name(ssl), cipher_name(ssl),
                             name_of(name) if name else None,
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

    def _session_chain(self, cache: ChainCache, leaf_der: bytes,
                       now: float) -> tuple[Verdict, None] | tuple[None, tuple[bytes, ...]]:
        """What is known of the resumed session's own chain: (verdict kept in this worker, None),
        or (None, the chain to decide on: the shared store's, else the leaf alone). Never the chain
        of another session of the same leaf."""
        session = self._resumed_session
        if session is None:
            return None, (leaf_der,)
        known = cache.by_session(session, now)
        # a verdict kept by session has its identity (ChainCache.put_session keeps no other)
        if known is not None and known.identity.chain_der[0] == leaf_der:  # type: ignore[union-attr]
            return known, None
        store = self._tls.chain_store
        chain = store.get(session.hex()) if store is not None else None
        if not chain or chain[0] != leaf_der:
            chain = (leaf_der,)
        return None, chain

    def _resumed_verdict(self, leaf_der: bytes) -> Verdict:
        # called only for a listener that verifies
        verifier: Verifier = self._tls.verifier  # type: ignore[assignment]
        now = time.time()
        known, chain = self._session_chain(verifier.cache, leaf_der, now)
        if known is not None:
            return verifier.recheck(known, now)
        # Not in this worker's memory (another worker did the full handshake, or a reload emptied
        # it): the chain presented then, read back from the shared store, is verified again in
        # full against the current trust store, like a presented chain. Without it only the leaf is
        # known, and it must chain to the bundle on its own or the session is refused.
        verdict = verifier.verify_der(chain, now)  # type: ignore[arg-type]  # no verdict: a chain
        if self._resumed_session is not None:
            verifier.cache.put_session(self._resumed_session, verdict, now + self._tls.session_timeout_s)
        return verdict

    def _passthrough_identity(self, ssl: CData) -> Identity | None:
        # called only for a passthrough listener, which has this cache
        cache: ChainCache = self._tls.passthrough_cache  # type: ignore[assignment]
        now = time.time()
        leaf_der = self._pump.leaf_der()
        if leaf_der is None:
            return None
        chain = peer_chain_ders(ssl)
        if chain or self._called:
            # A full handshake (the verify callback ran): the presented chain, which on the server
            # side does not include the leaf (SSL_get_peer_cert_chain(3)) and is empty when the
            # client sent its leaf alone. Only a resumed session has no chain to read.
            ders = chain or ()
            if not ders or ders[0] != leaf_der:
                ders = (leaf_der,) + ders
        else:
            known, ders = self._session_chain(  # type: ignore[assignment]  # no verdict: a chain
                cache, leaf_der, now)
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
        return alpn_selected(self._ssl) or None


class PureTLSConnection(TLSConnection):
    """TLSConnection with its state in slots: the pure twin."""

    __slots__ = STATE + ("__weakref__",)


def _native_connection() -> type[TLSConnection] | None:
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
        not_found=VerifyStatus.NOT_FOUND, pointer=ssl_pointer,
        monotonic=time.monotonic, names_max=NAMES_MAX, nametype_host=NAMETYPE_HOST,
        session_label=SESSION_LABEL)

    # TLSCore's _pump is always the Pump it made, a TLSPump (the checker asks the two declarations
    # of a settable attribute to be the same type)
    class NativeTLSConnection(_tls_c.TLSCore, TLSConnection):  # type: ignore[misc]
        """The native twin: the state and the common path in C (gateway._tls_c.TLSCore)."""

        __slots__ = ()

    return NativeTLSConnection


NativeTLSConnection: type[TLSConnection] | None = _native_connection()


def _refused(verdict: Verdict, status: VerifyStatus, detail: str) -> Verdict:
    """A good verdict turned into a refusal by a revocation source outside the chain cache."""
    identity = verdict.identity.with_status(status) if verdict.identity is not None else None
    return Verdict(status, identity, 0.0, detail, verdict.path_serials)


def _describe(exc: BaseException | None) -> str:
    # `exc` is a pump's `error`, typed optional; a call that returned FAILED always set it
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list):
        parts = [e[2] if isinstance(e, tuple) and len(e) > 2 else str(e) for e in args[0]]
        if parts:
            return "; ".join(p for p in parts if p)
    return str(exc) or type(exc).__name__
