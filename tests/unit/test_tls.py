"""TLSConnection and the verifier, handshake by handshake, over memory BIOs (no sockets).

The client side is Python's ssl module (the system OpenSSL), the server side the gateway's
pyOpenSSL connection: two independent TLS stacks talking.
"""
from __future__ import annotations

import ssl
from datetime import datetime, timedelta, timezone

import pytest

from gateway import pki
from gateway.identity import VerifyStatus
from gateway import tls as gtls
from gateway import tlspump
from gateway.testing import MemoryTLSClient
from gateway.tls import REFUSAL_ALERTS, HandshakeDone, HandshakeFailed, ListenerTLS
from gateway.trust import FAILURE_TTL_S, ChainCache, TrustStore, Verdict

pytestmark = pytest.mark.usefixtures("trust_impl", "pump_twin")


@pytest.fixture(params=["python", pytest.param("native", marks=pytest.mark.skipif(
    gtls.NATIVE_PUMP is None, reason="gateway._tls_c is not built"))])
def pump_twin(request):
    """Both twins of the pump and of the message callback (chosen together, as the server does)."""
    assert gtls.set_native("off" if request.param == "python" else "on") == request.param
    yield request.param
    gtls.set_native("auto")


@pytest.fixture(scope="module")
def ca():
    root = pki.make_root("Test Root")
    inter = pki.make_intermediate(root, "Test Intermediate")
    server = pki.make_server(inter, ["localhost", "127.0.0.1"])
    return root, inter, server


@pytest.fixture(scope="module")
def files(tmp_path_factory, ca):
    root, inter, server = ca
    d = tmp_path_factory.mktemp("tls")
    server.write(d / "server.pem", d / "server.key")
    (d / "root.pem").write_bytes(root.cert_pem)
    return d


def _store(ca, *, crl_serials=(), deny=frozenset()):
    root, inter, _ = ca
    crls = [pki.make_crl(inter, list(crl_serials))] if crl_serials else []
    return TrustStore("test", [root.cert, inter.cert], crls, deny)


def _listener(files, ca, mode="verify", **kw):
    store = kw.pop("store", None) or (_store(ca) if mode in ("verify", "optional") else None)
    return ListenerTLS(name="t", certificates=[(files / "server.pem", files / "server.key", ("localhost",))],
                       mtls=mode, store=store, **kw)


def _client_ctx(files, tmp_path, client=None, *, version=None, key_override=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files / "root.pem")
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    if client is not None:
        cp, kp = tmp_path / "c.pem", tmp_path / "c.key"
        client.write(cp, kp)
        if key_override is not None:
            kp.write_bytes(key_override)
        ctx.load_cert_chain(cp, kp)
    return ctx


def handshake(listener, ctx, session=None, payload=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
    """Pump bytes between an ssl client and the gateway's TLSConnection until both settle."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(inc, out, server_hostname="localhost", session=session)
    server = listener.connection()
    events, plain = [], b""
    client_error = None
    done = False
    for _ in range(50):
        if not done:
            try:
                client.do_handshake()
                done = True
                client.write(payload)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                client_error = exc
        data = out.read()
        reply, p, evs = server.receive(data)
        plain += p
        events.extend(evs)
        if reply:
            inc.write(reply)
        if done:
            try:
                client.read(1)    # lets a TLS 1.3 client take tickets or an alert
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                client_error = exc
        if not data and not reply and (done or client_error):
            break
    return server, client, events, plain, client_error


def test_verify_good_client(files, ca, tmp_path):
    _, inter, _ = ca
    client = pki.make_client(inter, "alice", san_dns=["alice.example"])
    server, _, events, plain, err = handshake(_listener(files, ca), _client_ctx(files, tmp_path, client))
    assert err is None
    [ev] = events
    assert isinstance(ev, HandshakeDone)
    assert ev.status is VerifyStatus.SUCCESS
    assert ev.identity.subject == "CN=alice,O=mtls-gateway dev"
    assert ev.identity.san_dns == ("alice.example",)
    assert plain.startswith(b"GET / HTTP/1.1")
    assert ev.protocol == "TLSv1.3"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_verify_without_cert_is_refused(files, ca, tmp_path, version):
    server, _, events, plain, err = handshake(_listener(files, ca), _client_ctx(files, tmp_path, version=version))
    assert [type(e) for e in events] == [HandshakeFailed]
    assert events[0].status is VerifyStatus.NOT_FOUND
    assert plain == b""


# the reason Python's ssl (OpenSSL 3.0) gives for each alert it receives
ALERT_REASONS = {
    40: "SSLV3_ALERT_HANDSHAKE_FAILURE", 42: "SSLV3_ALERT_BAD_CERTIFICATE",
    43: "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE", 44: "SSLV3_ALERT_CERTIFICATE_REVOKED",
    45: "SSLV3_ALERT_CERTIFICATE_EXPIRED", 48: "TLSV1_ALERT_UNKNOWN_CA", 80: "TLSV1_ALERT_INTERNAL_ERROR",
    116: "TLSV13_ALERT_CERTIFICATE_REQUIRED",
}
# what each refusal must look like on the wire (the table in gateway.tls must say the same)
EXPECTED_ALERT = {
    VerifyStatus.UNTRUSTED: "TLSV1_ALERT_UNKNOWN_CA",
    VerifyStatus.MAX_CHAIN_DEPTH: "TLSV1_ALERT_UNKNOWN_CA",
    VerifyStatus.EXPIRED: "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    VerifyStatus.NOT_YET_VALID: "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    VerifyStatus.CRL_HIT: "SSLV3_ALERT_CERTIFICATE_REVOKED",
    VerifyStatus.REJECTED: "SSLV3_ALERT_CERTIFICATE_REVOKED",
    VerifyStatus.PURPOSE_INVALID: "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    VerifyStatus.TYPE_UNSUPPORTED: "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    VerifyStatus.INVALID: "SSLV3_ALERT_BAD_CERTIFICATE",
    VerifyStatus.MAX_SIZE: "SSLV3_ALERT_BAD_CERTIFICATE",
    VerifyStatus.NOT_FOUND: "SSLV3_ALERT_BAD_CERTIFICATE",
    VerifyStatus.UNMAPPED: "TLSV1_ALERT_INTERNAL_ERROR",
    VerifyStatus.REVOKED: "SSLV3_ALERT_CERTIFICATE_REVOKED",
    VerifyStatus.OCSP_REVOKED: "SSLV3_ALERT_CERTIFICATE_REVOKED",
    VerifyStatus.OCSP_UNKNOWN: "SSLV3_ALERT_BAD_CERTIFICATE",
    VerifyStatus.OCSP_UNAVAILABLE: "SSLV3_ALERT_BAD_CERTIFICATE",
    VerifyStatus.CRL_STALE: "SSLV3_ALERT_BAD_CERTIFICATE",
}
VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


def _refused(files, ca, tmp_path, client, expect, **kw):
    listener = _listener(files, ca, **kw)
    for version in VERSIONS:
        server, _, events, plain, err = handshake(listener, _client_ctx(files, tmp_path, client, version=version))
        assert [type(e) for e in events] == [HandshakeFailed], (version, events)
        assert events[0].status is expect, (version, events[0])
        assert not events[0].resumed
        assert plain == b""
        # the client is told why, in the alert (TLS 1.3: right after its own Finished)
        assert isinstance(err, ssl.SSLError), (version, err)
        assert err.reason == EXPECTED_ALERT[expect], (version, expect, err.reason)


class _ForcedVerifier:
    """A verifier whose verdict is given (Verifier has slots: its methods cannot be patched)."""

    def __init__(self, verify_der):
        self.verify_der = verify_der
        self.store = TrustStore("forced", [])       # no revocation source beside the verdict
        self.cache = ChainCache()


def test_refusal_table_covers_every_failure_status():
    refusals = {s for s in VerifyStatus if s.value.startswith("Failed:")}
    assert set(REFUSAL_ALERTS) == refusals == set(EXPECTED_ALERT)
    for status, (_, alert) in REFUSAL_ALERTS.items():
        assert ALERT_REASONS[alert] == EXPECTED_ALERT[status], status


@pytest.mark.parametrize("status", sorted(REFUSAL_ALERTS, key=lambda s: s.value))
@pytest.mark.parametrize("version", VERSIONS)
def test_each_refusal_status_sends_its_alert(files, ca, tmp_path, monkeypatch, status, version):
    """Whatever the verdict's status, the X509 error set in the verify callback makes OpenSSL send
    the alert of the table (ssl_x509err2alert), never a blanket internal_error."""
    _, inter, _ = ca
    listener = _listener(files, ca)
    listener.verifier = _ForcedVerifier(lambda chain, now=None: Verdict(status, None, 0.0, "forced"))
    _, _, events, plain, err = handshake(listener, _client_ctx(files, tmp_path, pki.make_client(inter, "z"),
                                                               version=version))
    assert [type(e) for e in events] == [HandshakeFailed]
    assert events[0].status is status and events[0].reason == "client_cert_refused"
    assert isinstance(err, ssl.SSLError) and err.reason == EXPECTED_ALERT[status], err
    assert plain == b""


def test_an_exception_in_the_verifier_refuses_with_internal_error(files, ca, tmp_path, monkeypatch):
    _, inter, _ = ca
    listener = _listener(files, ca)

    def boom(chain, now=None):
        raise RuntimeError("verifier bug")
    listener.verifier = _ForcedVerifier(boom)
    _, _, events, plain, err = handshake(listener, _client_ctx(files, tmp_path, pki.make_client(inter, "z")))
    assert [type(e) for e in events] == [HandshakeFailed] and plain == b""
    assert err.reason == "TLSV1_ALERT_INTERNAL_ERROR"
    # the exception is not lost: the refusal names it, for its one log line
    assert events[0].reason == "callback_error"
    assert "verify callback: RuntimeError: verifier bug" in events[0].detail


def test_an_exception_in_the_servername_callback_is_kept_for_the_log(files, ca, tmp_path, monkeypatch):
    _, inter, _ = ca

    def boom(self, alert=None):
        raise KeyError("sni table")
    monkeypatch.setattr(gtls.TLSConnection, "_on_client_hello", boom)
    # the native twin decides a new session in C, reading whether the listener has one certificate
    monkeypatch.setattr(gtls.ListenerTLS, "single_context", property(boom, lambda self, v: None),
                        raising=False)
    _, _, events, plain, err = handshake(_listener(files, ca),
                                         _client_ctx(files, tmp_path, pki.make_client(inter, "z")))
    assert [type(e) for e in events] == [HandshakeFailed] and plain == b""
    assert err.reason == "TLSV1_ALERT_INTERNAL_ERROR"
    assert events[0].reason == "callback_error" and "servername callback: KeyError" in events[0].detail


@pytest.mark.parametrize("version,reason", [(ssl.TLSVersion.TLSv1_2, "SSLV3_ALERT_HANDSHAKE_FAILURE"),
                                            (ssl.TLSVersion.TLSv1_3, "TLSV13_ALERT_CERTIFICATE_REQUIRED")])
def test_no_certificate_alert(files, ca, tmp_path, version, reason):
    """OpenSSL refuses a missing certificate itself (VERIFY_FAIL_IF_NO_PEER_CERT): TLS 1.3 has
    certificate_required (RFC 8446 4.4.2.4); TLS 1.2 has none and gets handshake_failure."""
    _, _, events, _, err = handshake(_listener(files, ca), _client_ctx(files, tmp_path, version=version))
    assert events[0].status is VerifyStatus.NOT_FOUND
    assert err.reason == reason


def test_untrusted_same_subject_other_ca(files, ca, tmp_path):
    other_root = pki.make_root("Test Root")
    other_inter = pki.make_intermediate(other_root, "Test Intermediate")
    _refused(files, ca, tmp_path, pki.make_client(other_inter, "alice"), VerifyStatus.UNTRUSTED)


def test_expired_and_not_yet_valid(files, ca, tmp_path):
    _, inter, _ = ca
    now = datetime.now(timezone.utc)
    expired = pki.make_client(inter, "old", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    _refused(files, ca, tmp_path, expired, VerifyStatus.EXPIRED)
    future = pki.make_client(inter, "new", not_before=now + timedelta(days=1), not_after=now + timedelta(days=10))
    _refused(files, ca, tmp_path, future, VerifyStatus.NOT_YET_VALID)


def test_ignore_expiry_accepts_expired(files, ca, tmp_path):
    _, inter, _ = ca
    now = datetime.now(timezone.utc)
    expired = pki.make_client(inter, "old", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    _, _, events, _, err = handshake(_listener(files, ca, ignore_expiry=True), _client_ctx(files, tmp_path, expired))
    assert isinstance(events[0], HandshakeDone) and events[0].status is VerifyStatus.SUCCESS


def test_revoked_by_crl_and_deny_list(files, ca, tmp_path):
    _, inter, _ = ca
    c = pki.make_client(inter, "mallory")
    _refused(files, ca, tmp_path, c, VerifyStatus.CRL_HIT, store=_store(ca, crl_serials=[c.cert.serial_number]))
    _refused(files, ca, tmp_path, c, VerifyStatus.REJECTED, store=_store(ca, deny=frozenset([c.cert.serial_number])))


def test_server_auth_only_certificate(files, ca, tmp_path):
    _, inter, _ = ca
    _refused(files, ca, tmp_path, pki.make_client(inter, "srv", extended_key_usage="server"),
             VerifyStatus.PURPOSE_INVALID)


def test_chain_too_deep(files, ca, tmp_path):
    root, inters, leaf = pki.chain_of_depth(6)
    store = TrustStore("deep", [root.cert], [], frozenset())
    _refused(files, ca, tmp_path, leaf, VerifyStatus.MAX_CHAIN_DEPTH, store=store)
    root, inters, leaf = pki.chain_of_depth(4)
    ok_store = TrustStore("deep", [root.cert], [], frozenset())
    _, _, events, _, _ = handshake(_listener(files, ca, store=ok_store), _client_ctx(files, tmp_path, leaf))
    assert isinstance(events[0], HandshakeDone) and events[0].status is VerifyStatus.SUCCESS


def test_passthrough_with_and_without_cert(files, ca, tmp_path):
    other_root = pki.make_root("Anyone")
    client = pki.make_client(pki.make_intermediate(other_root, "Any Int"), "bob")
    listener = _listener(files, ca, mode="passthrough")
    _, _, events, plain, err = handshake(listener, _client_ctx(files, tmp_path, client))
    [ev] = events
    assert isinstance(ev, HandshakeDone) and ev.status is VerifyStatus.NOT_VERIFIED
    assert len(ev.identity.chain_der) == 2 and ev.identity.chain_der[0] == client.der
    _, _, events, plain, err = handshake(listener, _client_ctx(files, tmp_path))
    assert isinstance(events[0], HandshakeDone) and events[0].identity is None
    assert plain.startswith(b"GET /")


def test_optional_mode(files, ca, tmp_path):
    _, inter, _ = ca
    listener = _listener(files, ca, mode="optional")
    _, _, events, _, _ = handshake(listener, _client_ctx(files, tmp_path))
    assert isinstance(events[0], HandshakeDone) and events[0].identity is None
    _, _, events, _, _ = handshake(listener, _client_ctx(files, tmp_path, pki.make_client(inter, "carol")))
    assert events[0].status is VerifyStatus.SUCCESS
    other = pki.make_client(pki.make_intermediate(pki.make_root("X"), "Y"), "eve")
    _, _, events, _, _ = handshake(listener, _client_ctx(files, tmp_path, other))
    assert isinstance(events[0], HandshakeFailed) and events[0].status is VerifyStatus.UNTRUSTED


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_an_established_connection_keeps_no_handshake_state(files, ca, tmp_path, version):
    """Memory per idle connection: once open, a connection holds neither the chain's DER copies
    nor the digests of its sessions (their chains are filed by then), and its version, cipher
    and server name are strings shared with every other connection."""
    _, inter, _ = ca
    listener = _listener(files, ca)
    ctx = _client_ctx(files, tmp_path, pki.make_client(inter, "erin"), version=version)
    one, c1, [first], _, _ = handshake(listener, ctx)
    two, _, [second], _, _ = handshake(listener, ctx, session=c1.session)
    assert second.resumed
    for server in (one, two):
        assert server.state is gtls.TLSState.OPEN
        assert server._chain is None and server._sessions == () and server._resumed_session is None
    assert first.protocol is second.protocol and first.cipher is second.cipher
    assert first.server_name == "localhost" and first.server_name is second.server_name


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_resumption_keeps_identity_and_rechecks_revocation(files, ca, tmp_path, version):
    _, inter, _ = ca
    client = pki.make_client(inter, "dave")
    store = _store(ca)
    listener = _listener(files, ca, store=store)
    ctx = _client_ctx(files, tmp_path, client, version=version)
    _, c1, events, _, _ = handshake(listener, ctx)
    assert events[0].status is VerifyStatus.SUCCESS and not events[0].resumed
    session = c1.session
    assert session is not None
    _, c2, events, plain, _ = handshake(listener, ctx, session=session)
    assert c2.session_reused
    assert events[0].resumed and events[0].identity.subject == "CN=dave,O=mtls-gateway dev"
    assert plain.startswith(b"GET /")
    # revoke: the same session must now be refused on resumption, before any byte is delivered
    verifier = listener.verifier
    verifier.store.deny_serials = frozenset([client.cert.serial_number])
    _, c3, events, plain, err = handshake(listener, ctx, session=session)
    assert isinstance(events[0], HandshakeFailed) and events[0].status is VerifyStatus.REJECTED
    assert events[0].resumed and events[0].reason == "resumed_client_refused"
    assert plain == b""
    # refused inside the handshake, with the alert of the status, before the ServerHello: the
    # client neither completes the handshake nor gets a new ticket
    assert isinstance(err, ssl.SSLError) and err.reason == "SSLV3_ALERT_CERTIFICATE_REVOKED", err
    assert not c3.session_reused


@pytest.mark.parametrize("version", VERSIONS)
def test_resumption_refused_by_crl_and_when_expired(files, ca, tmp_path, version, monkeypatch):
    root, inter, _ = ca
    client = pki.make_client(inter, "erin")
    listener = _listener(files, ca)
    ctx = _client_ctx(files, tmp_path, client, version=version)
    _, c1, events, _, _ = handshake(listener, ctx)
    assert events[0].status is VerifyStatus.SUCCESS
    listener.verifier.store.update_revocation(crls=[pki.make_crl(inter, [client.cert.serial_number])])
    _, c2, events, plain, err = handshake(listener, ctx, session=c1.session)
    assert [type(e) for e in events] == [HandshakeFailed] and plain == b""
    assert events[0].status is VerifyStatus.CRL_HIT and events[0].resumed
    assert err.reason == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    # a session whose certificate expired since: certificate_expired
    listener.verifier.store.update_revocation(crls=[])
    import time as _time
    later = _time.time() + 10 * 365 * 86400
    monkeypatch.setattr(gtls.time, "time", lambda: later)
    _, c3, events, plain, err = handshake(listener, ctx, session=c1.session)
    assert events[0].status is VerifyStatus.EXPIRED and events[0].resumed
    assert err.reason == "SSLV3_ALERT_CERTIFICATE_EXPIRED"


def test_old_protocols_refused(files, ca, tmp_path):
    listener = _listener(files, ca, mode="off")
    ctx = _client_ctx(files, tmp_path)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    _, _, events, plain, err = handshake(listener, ctx)
    assert err is not None or (events and isinstance(events[0], HandshakeFailed))
    assert plain == b""


def test_garbage_before_client_hello(files, ca):
    server = _listener(files, ca, mode="off").connection()
    out, plain, (ev,) = server.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(ev, HandshakeFailed) and plain == b""


def _tlslite_handshake(listener, chain_pem: bytes, key_pem: bytes):
    """A client that presents `chain_pem` but signs CertificateVerify with `key_pem` (tlslite-ng does
    not check that they match, unlike OpenSSL clients). TLS 1.2 over a socketpair."""
    tlslite = pytest.importorskip("tlslite")
    import socket
    import threading
    a, b = socket.socketpair()
    server = listener.connection()
    events = []

    def pump():
        while True:
            try:
                data = b.recv(65536)
            except OSError:
                break
            if not data:
                break
            out, _, evs = server.receive(data)
            events.extend(evs)
            if out:
                b.sendall(out)
            if any(isinstance(ev, HandshakeFailed) for ev in evs):
                break
        b.close()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    chain = tlslite.X509CertChain()
    chain.parsePemList(chain_pem.decode())
    key = tlslite.parsePEMKey(key_pem.decode(), private=True)
    settings = tlslite.HandshakeSettings()
    settings.minVersion = settings.maxVersion = (3, 3)
    conn = tlslite.TLSConnection(a)
    error = None
    try:
        conn.handshakeClientCert(chain, key, settings=settings)
    except Exception as exc:      # the alert the gateway sent
        error = exc
    a.close()
    t.join(5)
    return events, error


def test_certificate_without_its_private_key_is_refused(files, ca):
    """A stolen certificate: the chain is trusted, but CertificateVerify is signed with another key.
    OpenSSL's signature check stays in force whatever the gateway's verdict on the chain."""
    _, inter, _ = ca
    victim, thief = pki.make_client(inter, "victim"), pki.make_client(inter, "thief")
    listener = _listener(files, ca)
    events, error = _tlslite_handshake(listener, victim.chain_pem, thief.key_pem)
    assert error is not None and "decrypt_error" in str(error)
    assert [type(e) for e in events] == [HandshakeFailed]
    assert "signature" in events[0].detail
    # control: the same chain with its own key is accepted by the same listener
    events, error = _tlslite_handshake(listener, victim.chain_pem, victim.key_pem)
    assert error is None and isinstance(events[0], HandshakeDone) and events[0].status is VerifyStatus.SUCCESS


# -- every event of an arrival; failures after the handshake ------------------------------------------
def _tls13_flight_with(files, ca, tmp_path, after):
    """A TLS 1.3 client's last flight (Certificate..Finished) with `after(client, out)` appended to
    the same arrival; returns the server connection and the events of that one receive()."""
    _, inter, _ = ca
    listener = _listener(files, ca)
    ctx = _client_ctx(files, tmp_path, pki.make_client(inter, "frank"), version=ssl.TLSVersion.TLSv1_3)
    client = MemoryTLSClient(ctx)
    server = listener.connection()

    def deliver(data: bytes) -> None:
        reply, _, evs = server.receive(data)
        assert evs == ()
        client.incoming.write(reply)
    client.handshake(deliver, flights=10)
    flight = client.outgoing.read()          # the client's Finished, not yet given to the server
    flight += after(client.tls, client.outgoing)
    reply, plain, events = server.receive(flight)
    return server, client.tls, reply, plain, events


def test_close_notify_behind_finished_is_not_lost(files, ca, tmp_path):
    def request_and_close(client, out):
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            client.unwrap()
        except ssl.SSLWantReadError:
            pass
        return out.read()
    server, _, _, plain, events = _tls13_flight_with(files, ca, tmp_path, request_and_close)
    assert [type(e) for e in events] == [HandshakeDone, gtls.PeerClosed]
    assert plain.startswith(b"GET / HTTP/1.1")
    assert server.state is gtls.TLSState.PEER_CLOSED


def test_bad_record_behind_finished_is_a_tls_failure(files, ca, tmp_path):
    garbage = b"\x17\x03\x03\x00\x20" + b"\x00" * 32       # an application record that fails to decrypt
    server, _, reply, plain, events = _tls13_flight_with(files, ca, tmp_path, lambda c, o: garbage)
    assert [type(e) for e in events] == [HandshakeDone, gtls.TLSFailed]
    assert events[1].reason == "tls_error" and events[1].detail
    assert server.state is gtls.TLSState.FAILED
    assert reply        # the tickets, then OpenSSL's bad_record_mac alert
    # nothing after: a failed connection stays quiet
    assert server.receive(b"more") == (b"", b"", ())


def test_no_events_is_the_shared_empty_tuple(files, ca, tmp_path):
    _, inter, _ = ca
    listener = _listener(files, ca)
    ctx = _client_ctx(files, tmp_path, pki.make_client(inter, "gus"))
    server, client, events, _, _ = handshake(listener, ctx)
    assert isinstance(events[0], HandshakeDone)
    _, _, evs = server.receive(b"")
    assert evs is gtls.NO_EVENTS


def test_renegotiation_attempt_is_a_tls_failure_not_a_handshake_refusal(files, ca, tmp_path):
    """TLS 1.2: OpenSSL answers the new ClientHello with a no_renegotiation warning and would carry
    on; the connection reports it as TLSFailed(renegotiation_refused) and ends."""
    from OpenSSL import SSL
    _, inter, _ = ca
    client_cert = pki.make_client(inter, "henry")
    cp, kp = tmp_path / "h.pem", tmp_path / "h.key"
    client_cert.write(cp, kp)
    cctx = SSL.Context(SSL.TLS_METHOD)
    cctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    cctx.use_certificate_chain_file(str(cp))
    cctx.use_privatekey_file(str(kp))
    client = SSL.Connection(cctx, None)
    client.set_connect_state()
    server = _listener(files, ca).connection()
    events = []
    for _ in range(10):
        try:
            client.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            data = client.bio_read(65536)
        except SSL.WantReadError:
            data = b""
        reply, _, evs = server.receive(data)
        events.extend(evs)
        if reply:
            client.bio_write(reply)
        if events:
            break
    assert [type(e) for e in events] == [HandshakeDone] and events[0].protocol == "TLSv1.2"
    client.do_handshake()           # takes the server's Finished
    assert client.renegotiate()
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    reply, plain, evs = server.receive(client.bio_read(65536))
    assert [type(e) for e in evs] == [gtls.TLSFailed], evs
    assert evs[0].reason == "renegotiation_refused"
    assert server.state is gtls.TLSState.FAILED


def test_certificate_names_of_the_selected_certificate(tmp_path, ca):
    root, inter, _ = ca
    a = pki.make_server(inter, ["a.example", "*.wild.example"])
    b = pki.make_server(inter, ["b.example"])
    a.write(tmp_path / "a.pem", tmp_path / "a.key")
    b.write(tmp_path / "b.pem", tmp_path / "b.key")
    (tmp_path / "root.pem").write_bytes(root.cert_pem)
    listener = ListenerTLS(name="names", certificates=[
        (tmp_path / "a.pem", tmp_path / "a.key", ("A.example", "*.Wild.example")),
        (tmp_path / "b.pem", tmp_path / "b.key", ("b.example",))])
    for sni, names in (("b.example", ("b.example",)), ("x.wild.example", ("a.example", "*.wild.example")),
                       ("other.example", ("a.example", "*.wild.example"))):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = ctx.wrap_bio(inc, out, server_hostname=sni)
        server = listener.connection()
        events = []
        for _ in range(10):
            try:
                client.do_handshake()
            except ssl.SSLWantReadError:
                pass
            reply, _, evs = server.receive(out.read())
            events.extend(evs)
            inc.write(reply)
            if events:
                break
        assert isinstance(events[0], HandshakeDone) and events[0].certificate_names == names, sni


# -- max_client_cert_chain_bytes ---------------------------------------------------------------------
def _padding_certs(n: int, size: int = 3600) -> bytes:
    """`n` self-signed certificates of about `size` bytes each, chaining to nothing: OpenSSL never
    puts them in the chain it builds, but the client sends them all."""
    import datetime as dt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ObjectIdentifier
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    out = []
    for i in range(n):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"padding {i}")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.2"),
                                                          b"\x04\x82" + size.to_bytes(2, "big") + b"P" * size),
                               critical=False)
                .sign(key, hashes.SHA256()))
        out.append(cert.public_bytes(serialization.Encoding.PEM))
    return b"".join(out)


def _padded_client_ctx(tmp_path, files, client, padding: int, version):
    cp, kp = tmp_path / "padded.pem", tmp_path / "padded.key"
    client.write(cp, kp)
    cp.write_bytes(cp.read_bytes() + _padding_certs(padding))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files / "root.pem")
    ctx.minimum_version = ctx.maximum_version = version
    ctx.load_cert_chain(cp, kp)
    return ctx


@pytest.mark.parametrize("mode", ["verify", "passthrough"])
@pytest.mark.parametrize("version", VERSIONS)
def test_padding_certificates_count_toward_the_chain_limit(files, ca, tmp_path, version, mode):
    """leaf + intermediate + 20 padding certificates (~79 KB): over the 64 KiB default, though the
    chain OpenSSL builds (and the Verifier sees) is two certificates."""
    _, inter, _ = ca
    client = pki.make_client(inter, "ivan")
    ctx = _padded_client_ctx(tmp_path, files, client, 20, version)
    _, _, events, plain, err = handshake(_listener(files, ca, mode=mode), ctx)
    assert [type(e) for e in events] == [HandshakeFailed] and plain == b""
    assert events[0].status is VerifyStatus.MAX_SIZE, events[0]
    assert "65536" in events[0].detail
    assert err.reason == "SSLV3_ALERT_BAD_CERTIFICATE"
    # the same chain under a larger limit is accepted: the padding is ignored by the verdict
    _, _, events, _, err = handshake(_listener(files, ca, mode=mode, max_chain_bytes=200_000), ctx)
    assert isinstance(events[0], HandshakeDone), events[0]


def test_openssl_own_certificate_limit_is_max_size_too(files, ca, tmp_path):
    """~150 KB of certificates: OpenSSL's max_cert_list (100 KiB) fires before any callback sees
    the message; it is reported as ClientCertMaxSizeExceeded all the same."""
    _, inter, _ = ca
    ctx = _padded_client_ctx(tmp_path, files, pki.make_client(inter, "judy"), 40, ssl.TLSVersion.TLSv1_3)
    _, _, events, plain, err = handshake(_listener(files, ca, max_chain_bytes=1 << 20), ctx)
    assert [type(e) for e in events] == [HandshakeFailed] and plain == b""
    assert events[0].status is VerifyStatus.MAX_SIZE, events[0]


# -- sessions are bound to the policy that admitted them ----------------------------------------------
def test_session_id_context_binds_the_verification_policy(files, ca):
    root, inter, _ = ca
    base = _listener(files, ca).session_id_context
    other_root = pki.make_root("Another Root")
    # the CA set by content (not the store's name), the depth, the expiry policy, the listener, the mode
    assert _listener(files, ca, store=TrustStore("test", [root.cert])).session_id_context != base
    assert _listener(files, ca, store=TrustStore("test", [root.cert, inter.cert, other_root.cert])
                     ).session_id_context != base
    assert _listener(files, ca, max_chain_depth=3).session_id_context != base
    assert _listener(files, ca, ignore_expiry=True).session_id_context != base
    assert _listener(files, ca, mode="optional").session_id_context != base
    assert ListenerTLS(name="u", certificates=[(files / "server.pem", files / "server.key", ("localhost",))],
                       mtls="verify", store=_store(ca)).session_id_context != base
    # not the CRLs nor the deny-list (revocation is re-checked on resume), nor the bundle's order
    assert _listener(files, ca, store=_store(ca, crl_serials=[12345])).session_id_context == base
    assert _listener(files, ca, store=_store(ca, deny=frozenset([7]))).session_id_context == base
    assert _listener(files, ca, store=TrustStore("test", [inter.cert, root.cert])).session_id_context == base


@pytest.mark.parametrize("version", VERSIONS)
def test_a_session_never_resumes_on_another_listener(files, ca, tmp_path, version):
    _, inter, _ = ca
    client = pki.make_client(inter, "kate")
    a, b = _listener(files, ca), _listener(files, ca, ignore_expiry=True)
    ctx = _client_ctx(files, tmp_path, client, version=version)
    _, c1, events, _, _ = handshake(a, ctx)
    assert events[0].status is VerifyStatus.SUCCESS
    _, c2, events, _, _ = handshake(b, ctx, session=c1.session)
    assert isinstance(events[0], HandshakeDone) and not events[0].resumed and not c2.session_reused
    _, c3, events, _, _ = handshake(a, ctx, session=c1.session)
    assert events[0].resumed       # control: the session itself was resumable


# -- a resumption forwards the chain of ITS OWN session -------------------------------------------
# OpenSSL restores only the leaf on resumption; two connections of one leaf may present different
# chains. Each session must come back with the chain its own full handshake presented, never the
# chain another connection of the same leaf sent last; an unknown one with the leaf alone.
@pytest.fixture(scope="module")
def one_leaf(ca):
    _, inter, _ = ca
    return pki.make_client(inter, "gina", san_dns=["gina.example"])


def _sending(files, tmp_path, client, version, name, *, with_chain=True, extra=b""):
    """A client context that presents `client` with or without its intermediate, plus `extra`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files / "root.pem")
    ctx.minimum_version = ctx.maximum_version = version
    cp, kp = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    client.write(cp, kp, with_chain=with_chain)
    if extra:
        cp.write_bytes(cp.read_bytes() + extra)
    ctx.load_cert_chain(cp, kp)
    return ctx


def _clients(files, ca, tmp_path, leaf, version, mode):
    """name -> (client context, the chain it presents as the identity should carry it)."""
    _, inter, _ = ca
    clients = {"long": (_sending(files, tmp_path, leaf, version, "long"), (leaf.der, inter.der)),
               "alone": (_sending(files, tmp_path, leaf, version, "alone", with_chain=False),
                         (leaf.der,))}
    if mode == "passthrough":
        # passthrough forwards what was sent, an unrelated certificate too (verify forwards the
        # path OpenSSL built, which never includes it)
        stranger = pki.make_root("Stranger")
        clients["extra"] = (_sending(files, tmp_path, leaf, version, "extra", extra=stranger.cert_pem),
                            (leaf.der, inter.der, stranger.der))
    return clients


def _sharing_contexts(listener, files, ca, mode, **kw):
    """Another ListenerTLS over the same SSL contexts (so the same ticket keys: a session of one
    resumes on the other) but with its own caches: another worker, or this one after a reload."""
    other = _listener(files, ca, mode=mode, **kw)
    other._contexts, other.default_context = listener._contexts, listener.default_context
    other._exact, other._wildcard = listener._exact, listener._wildcard
    other.certificate_names = listener.certificate_names
    return other


def _assert_forwards(event, chain, mode):
    from gateway import headers
    assert isinstance(event, HandshakeDone), event
    assert event.identity.chain_der == chain
    pems = b"".join(headers.pem(d) for d in chain)
    verified = mode == "verify"
    block = headers.identity_block(event.identity, verified, ("alb", "xfcc", "rfc9440"))
    assert b'Chain="' + headers.quote_pem_envoy(pems) + b'"' in block
    if not verified:
        assert b"X-Amzn-Mtls-Clientcert: " + headers.quote_pem_alb(pems) + b"\r\n" in block
    assert (b"Client-Cert-Chain: " in block) == (len(chain) > 1)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", ["passthrough", "verify"])
def test_each_resumption_forwards_the_chain_of_its_own_session(files, ca, tmp_path, one_leaf,
                                                               version, mode):
    listener = _listener(files, ca, mode=mode)
    clients = _clients(files, ca, tmp_path, one_leaf, version, mode)
    sessions = {}
    for name, (ctx, chain) in clients.items():
        _, c, events, _, err = handshake(listener, ctx)
        assert err is None and not events[0].resumed
        _assert_forwards(events[0], chain, mode)
        sessions[name] = c.session
    # every order, twice: a TLS 1.3 resumption issues a new ticket with a new key, which must map
    # to the same chain; a TLS 1.2 session resumes with the same key
    for order in (list(clients), list(reversed(clients))):
        for name in order:
            ctx, chain = clients[name]
            _, c, events, plain, err = handshake(listener, ctx, session=sessions[name])
            assert err is None and c.session_reused and events[0].resumed
            _assert_forwards(events[0], chain, mode)
            assert plain.startswith(b"GET /")
            sessions[name] = c.session


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", ["passthrough", "verify"])
def test_a_session_whose_chain_is_unknown_resumes_with_the_leaf_alone(files, ca, tmp_path, one_leaf,
                                                                     version, mode):
    listener = _listener(files, ca, mode=mode)
    clients = _clients(files, ca, tmp_path, one_leaf, version, mode)
    ctx, chain = clients["long"]
    _, c, events, _, _ = handshake(listener, ctx)
    _assert_forwards(events[0], chain, mode)
    # a listener that shares no cache nor store with the first, over the same contexts: it has
    # seen another connection of the same leaf, with a longer chain, but not this session
    fresh = _sharing_contexts(listener, files, ca, mode)
    other_ctx, other_chain = clients["extra" if mode == "passthrough" else "long"]
    _, _, events, _, _ = handshake(fresh, other_ctx)
    _assert_forwards(events[0], other_chain, mode)
    _, c2, events, _, err = handshake(fresh, ctx, session=c.session)
    assert err is None and c2.session_reused and events[0].resumed
    _assert_forwards(events[0], (one_leaf.der,), mode)
    if mode == "verify":
        assert events[0].status is VerifyStatus.SUCCESS     # re-verified: the leaf chains to the bundle


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", ["passthrough", "verify"])
def test_workers_share_chains_by_session_not_by_leaf(files, ca, tmp_path, one_leaf, version, mode):
    from gateway.sessions import ChainStore
    from cryptography import x509
    d = tmp_path / "chains"
    d.mkdir()
    one = _listener(files, ca, mode=mode)
    two = _sharing_contexts(one, files, ca, mode)
    one.chain_store, two.chain_store = ChainStore(str(d)), ChainStore(str(d))    # two processes
    clients = _clients(files, ca, tmp_path, one_leaf, version, mode)
    long_ctx, long_chain = clients["long"]
    alone_ctx, alone_chain = clients["alone"]
    _, a, events, _, _ = handshake(one, long_ctx)
    _assert_forwards(events[0], long_chain, mode)
    listing = sorted(p.name for p in d.iterdir())
    names = [n for n in listing if not n.startswith("chain-")]
    # a name per session issued (two TLS 1.3 tickets, OpenSSL's default; one TLS 1.2 session), each
    # a digest, never key material, linked to the one file of the public certificates presented
    assert len(names) == (2 if version is ssl.TLSVersion.TLSv1_3 else 1)
    assert len(listing) == len(names) + 1
    assert all(len(n) == 64 and int(n, 16) >= 0 for n in names)
    for n in names:
        stored = one.chain_store.get(n)
        assert stored == long_chain and all(x509.load_der_x509_certificate(c) for c in stored)
    _, b, events, _, _ = handshake(two, alone_ctx)
    _assert_forwards(events[0], alone_chain, mode)
    assert sorted(p.name for p in d.iterdir()) == listing     # the leaf alone needs no file
    # each resumes on the worker that did not see its full handshake, then back
    for worker in (two, one):
        _, a, events, _, err = handshake(worker, long_ctx, session=a.session)
        assert err is None and a.session_reused
        _assert_forwards(events[0], long_chain, mode)
    for worker in (one, two):
        _, b, events, _, err = handshake(worker, alone_ctx, session=b.session)
        assert err is None and b.session_reused
        _assert_forwards(events[0], alone_chain, mode)


def test_chain_store_sweeps_expired_sessions(files, ca, tmp_path):
    import os
    from gateway.sessions import ChainStore
    store = ChainStore(str(tmp_path), max_entries=10)
    listener = _listener(files, ca, mode="passthrough", session_timeout_s=120)
    listener.chain_store = store
    assert store.max_age_s == 120
    long, other = (b"leaf", b"inter"), (b"leaf", b"other")
    store.put(["a" * 64, "b" * 64], long)
    store.put(["c" * 64], long)                 # the same chain: one file, a link per session
    store.put(["d" * 64], other)
    assert store.get("b" * 64) == long and store.get("c" * 64) == long and store.get("d" * 64) == other
    [chain_long] = [n for n in os.listdir(tmp_path) if n.startswith("chain-") and os.path.samefile(
        tmp_path / n, tmp_path / ("a" * 64))]
    now = os.lstat(tmp_path / ("d" * 64)).st_mtime
    assert store.sweep(now + 60) == 0

    def age(name, seconds):
        os.utime(tmp_path / name, (now - seconds, now - seconds), follow_symlinks=False)
    age("a" * 64, 300)      # an expired session goes; its chain file stays while others may link
    age("b" * 64, 300)
    age(chain_long, 200)
    assert store.sweep(now) == 2
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith("chain-")) == ["c" * 64, "d" * 64]
    assert store.get("c" * 64) == long
    age(chain_long, 250)    # two lifetimes without a rewrite: no live session can link to it
    assert store.sweep(now) == 1 and store.get("c" * 64) is None     # a dangling link is unknown
    # a worker rewrites the chain file it links to once it is half a lifetime old
    store._files[long] = (chain_long, store._files[long][1] - 61)
    store.put(["e" * 64], long)
    assert store.get("e" * 64) == long and store.get("c" * 64) == long
    # the count bound: oldest names first
    store.max_entries = 3
    before = len(os.listdir(tmp_path))
    assert before > 3 and store.sweep(now) == before - 3 and len(os.listdir(tmp_path)) == 3
    assert store.get("../" + "c" * 61) is None and store.get("a" * 64) is None


@pytest.mark.parametrize("version", VERSIONS)
def test_native_readers_match_the_pure_ones(files, ca, tmp_path, version):
    """What a handshake reads of an SSL (the peer's leaf, a session's digest) comes out the same
    from the native readers (used by connections the native pump made) as from the pure ones."""
    if gtls.NATIVE_SERVER is None:
        pytest.skip("the native connection setup is not built")
    from gateway import _tls_c
    _, inter, _ = ca
    client = pki.make_client(inter, "reader")
    server, _, events, _, err = handshake(_listener(files, ca, mode="passthrough"),
                                          _client_ctx(files, tmp_path, client, version=version))
    assert err is None and isinstance(events[0], HandshakeDone)
    addr = tlspump.pointer_address(server._ssl)
    leaf = tlspump.peer_leaf_der(server._ssl)
    from cryptography.hazmat.primitives import serialization
    assert leaf == client.cert.public_bytes(serialization.Encoding.DER)
    assert _tls_c.peer_leaf_der(addr) == leaf
    digest = tlspump.session_digest(server._ssl)
    assert digest is not None and len(digest) == 32
    assert _tls_c.session_digest(addr, tlspump.SESSION_LABEL) == digest


def test_the_connection_twins_hold_the_same_state(files, ca, pump_twin):
    """gateway.tls.STATE is every name both twins keep: the pure one in slots, the native one
    (gateway._tls_c.TLSCore first) in its struct; and ListenerTLS.connection gives the twin of
    the pump chosen."""
    assert set(gtls.PureTLSConnection.__slots__) == set(gtls.STATE) | {"__weakref__"}
    assert gtls.TLSConnection.__slots__ == ()
    listener = _listener(files, ca)
    conn = listener.connection()
    assert isinstance(conn, gtls.TLSConnection)
    if pump_twin == "native" and gtls.NativeTLSConnection is not None:
        from gateway import _tls_c
        assert type(conn) is gtls.NativeTLSConnection
        assert {n for n in gtls.STATE if n in vars(_tls_c.TLSCore)} == set(gtls.STATE)
        assert not hasattr(conn, "__dict__")
    else:
        assert type(conn) is gtls.PureTLSConnection
    for name in gtls.STATE:
        getattr(conn, name)         # every name is set by either twin's __init__


# -- mtls_enforcement = "report" -----------------------------------------------------------------

@pytest.mark.parametrize("status", sorted(REFUSAL_ALERTS, key=lambda s: s.value))
@pytest.mark.parametrize("version", VERSIONS)
def test_report_only_serves_what_the_verdict_refuses(files, ca, tmp_path, status, version):
    """Whatever the verdict refuses with, a report-only listener completes the handshake, reads the
    request, and its HandshakeDone carries the would-be status (and the identity presented)."""
    _, inter, _ = ca
    listener = _listener(files, ca, report_only=True)
    client = pki.make_client(inter, "reported")
    listener.verifier = _ForcedVerifier(lambda chain, now=None: Verdict(status, None, 0.0, "forced"))
    _, _, events, plain, err = handshake(listener, _client_ctx(files, tmp_path, client, version=version))
    assert err is None
    assert [type(e) for e in events] == [HandshakeDone]
    assert events[0].status is status
    assert plain.startswith(b"GET / HTTP/1.1")
    # the same verdict under enforce is a refusal (the difference is the mode, nothing else)
    enforcing = _listener(files, ca)
    enforcing.verifier = listener.verifier
    _, _, events, plain, err = handshake(enforcing, _client_ctx(files, tmp_path, client, version=version))
    assert [type(e) for e in events] == [HandshakeFailed] and plain == b""


@pytest.mark.parametrize("version", VERSIONS)
def test_report_only_without_a_certificate_is_not_found_and_served(files, ca, tmp_path, version):
    listener = _listener(files, ca, report_only=True)
    _, _, events, plain, err = handshake(listener, _client_ctx(files, tmp_path, version=version))
    assert err is None
    assert [type(e) for e in events] == [HandshakeDone]
    assert events[0].status is VerifyStatus.NOT_FOUND and events[0].identity is None
    assert plain.startswith(b"GET / HTTP/1.1")


def test_report_only_with_real_refusals(files, ca, tmp_path):
    """Real verdicts (not forced): an untrusted, an expired and a revoked client are served with
    their status; a good one gets Success."""
    root, inter, _ = ca
    stranger = pki.make_client(pki.make_intermediate(pki.make_root("Elsewhere"), "Other"), "eve")
    past = datetime.now(timezone.utc) - timedelta(days=30)
    expired = pki.make_client(inter, "old", not_before=past, not_after=past + timedelta(days=1))
    revoked = pki.make_client(inter, "gone")
    good = pki.make_client(inter, "fine")
    listener = _listener(files, ca, report_only=True,
                         store=_store(ca, crl_serials=[revoked.cert.serial_number]))
    for client, want in ((stranger, VerifyStatus.UNTRUSTED), (expired, VerifyStatus.EXPIRED),
                         (revoked, VerifyStatus.CRL_HIT), (good, VerifyStatus.SUCCESS)):
        _, _, events, plain, err = handshake(listener, _client_ctx(files, tmp_path, client))
        assert err is None and [type(e) for e in events] == [HandshakeDone], client.cert.subject
        assert events[0].status is want
        assert events[0].identity is not None and events[0].identity.verified is (want is VerifyStatus.SUCCESS)


def test_report_only_sessions_do_not_resume_into_enforce(files, ca):
    """The enforcement is part of the session id context: a session a report-only listener
    issued (perhaps to a client it would refuse) never resumes under the enforcing one."""
    store = _store(ca)
    assert _listener(files, ca, store=store).session_id_context != \
        _listener(files, ca, store=store, report_only=True).session_id_context
