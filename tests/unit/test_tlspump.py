"""The TLS byte pump's twins (gateway.tlspump.PyPump and native/tlspump.pyx) behave the same.

A TLS stream is randomised (key shares, nonces), so two runs never produce the same records; what
must be equal is everything a run decides: the result codes, the events, the plaintext delivered
each way, and, where the output is deterministic (alerts answering garbage before any key exists),
the bytes themselves. Each scenario runs once per twin and the transcripts are compared.
"""
from __future__ import annotations

import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from gateway import pki, tls, tlspump
from gateway.testing import MemoryTLSClient
from gateway.errors import NativeUnavailable
from gateway.tls import HandshakeFailed, ListenerTLS, PeerClosed, TLSState

needs_native = pytest.mark.skipif(tls.NATIVE_PUMP is None,
                                  reason="gateway._tls_c is not built (run `python -m pip install -e .`)")
TWINS = ["python", pytest.param("native", marks=needs_native)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = pki.make_root("Pump Root")
    server = pki.make_server(root, ["localhost"])
    d = tmp_path_factory.mktemp("pump")
    server.write(d / "server.pem", d / "server.key")
    (d / "root.pem").write_bytes(root.cert_pem)
    return d


@pytest.fixture(autouse=True)
def _restore():
    yield
    tls.set_native("auto")


def _use(twin: str) -> None:
    assert tls.set_native("off" if twin == "python" else "on") == twin


def _listener(files, alpn=("http/1.1",)) -> ListenerTLS:
    return ListenerTLS(name="p", certificates=[(files / "server.pem", files / "server.key", ("localhost",))],
                       alpn=alpn)


def _client_context(files, version=None, alpn=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files / "root.pem")
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _client(files, version=None, alpn=None):
    client = MemoryTLSClient(_client_context(files, version, alpn))
    return client.tls, client.incoming, client.outgoing


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` in pieces at the given cut sizes (cycled); one piece when there are none."""
    if not cuts:
        return [data] if data else []
    pieces, at, i = [], 0, 0
    while at < len(data):
        n = max(1, cuts[i % len(cuts)])
        pieces.append(data[at:at + n])
        at += n
        i += 1
    return pieces


def _established(files, alpn=None, events=None, listener_alpn=("http/1.1",)):
    """A server connection and its client, handshake done and the tickets delivered (the server's
    events of the handshake appended to `events`, if given)."""
    client = MemoryTLSClient(_client_context(alpn=alpn, files=files))
    server = _listener(files, listener_alpn).connection()
    seen = events if events is not None else []

    def deliver(data: bytes) -> None:
        reply, _, evs = server.receive(data)
        seen.extend(evs)
        client.incoming.write(reply)
    client.handshake(deliver, flights=10)
    deliver(client.outgoing.read())     # the client's Finished; TLS 1.3 tickets come back
    return server, client.tls, client.incoming, client.outgoing


def _run(files, payloads: list[bytes], replies: list[bytes], cuts: list[int], version=None) -> dict:
    """Handshake, then each payload client->server and each reply server->client, then the client's
    close_notify; ciphertext reaches the server in pieces of `cuts` sizes. Returns the transcript."""
    client, inc, out = _client(files, version)
    server = _listener(files).connection()
    events, codes_seen = [], []

    def deliver() -> bytes:
        got = b""
        for piece in _split(out.read(), cuts):
            reply, plain, evs = server.receive(piece)
            got += plain
            events.extend(type(ev).__name__ for ev in evs)
            if reply:
                inc.write(reply)
        return got

    for _ in range(20):
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            deliver()
    else:
        raise AssertionError("no handshake")
    deliver()
    received, echoed = [], []
    for payload, reply in zip(payloads, replies):
        if payload:
            client.write(payload)
        got = deliver()
        while len(got) < len(payload):
            more = deliver()
            assert more, "plaintext lost"
            got += more
        received.append(got)
        records = server.send(reply)
        codes_seen.append(bool(records) == bool(reply))
        inc.write(records)
        back = b""
        while len(back) < len(reply):
            back += client.read(65536)
        echoed.append(back)
    try:
        client.unwrap()
    except ssl.SSLWantReadError:
        pass
    deliver()
    closing = server.close()
    return {"events": events, "received": received, "echoed": echoed, "records": codes_seen,
            "state": server.state, "closing": bool(closing)}


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_twins_carry_the_same_conversation(files, version):
    payloads = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"x" * 100_000, b"", b"\x00\xff" * 9000]
    replies = [b"HTTP/1.1 200 OK\r\n\r\n", b"", b"y" * 70_000, b"z"]
    runs = {}
    for twin in ("python", "native") if tls.NATIVE_PUMP is not None else ("python",):
        _use(twin)
        runs[twin] = _run(files, payloads, replies, [], version)
        r = runs[twin]
        assert r["received"] == payloads and r["echoed"] == replies
        assert r["events"] == ["HandshakeDone", "PeerClosed"] and r["state"] is TLSState.CLOSED
        assert r["closing"]       # a close_notify answers the peer's
    assert len(set(map(repr, runs.values()))) == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(max_size=20_000), min_size=1, max_size=4),
       cuts=st.lists(st.integers(1, 3000), max_size=6))
def test_twins_agree_on_any_split_of_the_stream(files, payloads, cuts):
    replies = [p[::-1] for p in payloads]
    runs = []
    for twin in ("python", "native") if tls.NATIVE_PUMP is not None else ("python",):
        _use(twin)
        runs.append(_run(files, payloads, replies, cuts))
    for r in runs:
        assert r["received"] == payloads and r["echoed"] == replies
    assert all(r == runs[0] for r in runs)


def test_one_byte_at_a_time(files):
    for twin in ("python", "native") if tls.NATIVE_PUMP is not None else ("python",):
        _use(twin)
        r = _run(files, [b"ping"], [b"pong"], [1])
        assert r["received"] == [b"ping"] and r["echoed"] == [b"pong"], twin


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=600))
def test_twins_answer_garbage_with_the_same_bytes(files, garbage):
    """Before any key exists the server's answer (an alert, or nothing yet) is deterministic: the
    twins must produce the same bytes, codes and failure text."""
    seen = []
    for twin in ("python", "native") if tls.NATIVE_PUMP is not None else ("python",):
        _use(twin)
        server = _listener(files).connection()
        out, plain, evs = server.receive(garbage)
        assert plain == b""
        assert evs == () or [type(e) for e in evs] == [HandshakeFailed]
        seen.append((out, evs, server.state))
    assert all(s == seen[0] for s in seen)


@pytest.mark.parametrize("twin", TWINS)
def test_exception_in_a_callback_fails_the_handshake_and_is_kept(files, twin):
    """pyOpenSSL records an exception raised in a callback; the pump hands it back as the failure
    and nothing is raised through OpenSSL."""
    _use(twin)
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.use_certificate_chain_file(str(files / "server.pem"))
    ctx.use_privatekey_file(str(files / "server.key"))

    def boom(conn, offered):
        raise ValueError("boom in ALPN")
    ctx.set_alpn_select_callback(boom)
    conn = SSL.Connection(ctx, None)
    conn.set_accept_state()
    pump = tls._make_pump(conn)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(files / "root.pem")
    cctx.set_alpn_protocols(["http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    code, alert = pump.handshake(out.read())
    assert code == tlspump.FAILED
    assert isinstance(pump.error, ValueError) and "boom" in str(pump.error)
    inc.write(alert)
    with pytest.raises(ssl.SSLError):
        client.do_handshake()


@pytest.mark.parametrize("twin", TWINS)
def test_write_after_failure_and_close_twice_are_harmless(files, twin):
    _use(twin)
    server = _listener(files).connection()
    out, _, (ev,) = server.receive(b"\x16\x03\x01\x00\x05hello")   # a record too short to be a hello
    assert isinstance(ev, HandshakeFailed)
    assert server.send(b"late") == b"" and server.close() == b""
    assert server.receive(b"more") == (b"", b"", ())


def test_native_on_without_the_extension_is_an_error(monkeypatch):
    monkeypatch.setattr(tls, "NATIVE_PUMP", None)
    with pytest.raises(NativeUnavailable, match="_tls_c"):
        tls.set_native("on")
    assert tls.set_native("auto") == "python"


@needs_native
def test_native_pump_refuses_to_run_unbound_or_on_nothing():
    from gateway import _tls_c
    assert _tls_c.bound()
    with pytest.raises(ValueError):
        _tls_c.Pump(object(), 0, 0, 0)


def test_peer_closed_event_keeps_plaintext_that_came_with_it(files):
    for twin in ("python", "native") if tls.NATIVE_PUMP is not None else ("python",):
        _use(twin)
        server, client, inc, out = _established(files)
        client.write(b"last words")
        try:
            client.unwrap()
        except ssl.SSLWantReadError:
            pass
        _, plain, (ev,) = server.receive(out.read())
        assert plain == b"last words" and isinstance(ev, PeerClosed), twin
        assert server.state is TLSState.PEER_CLOSED
        assert server.send(b"reply after half-close")    # a half-close still lets us answer


@pytest.mark.parametrize("twin", TWINS)
def test_renewed_bios_carry_pending_bytes_and_the_connection_follows(files, twin):
    """`renew` swaps in empty BIOs (a memory BIO never gives back the largest buffer it held):
    bytes still pending move across, and pyOpenSSL's Connection points at the new pair (its own
    bio_write goes to the live BIO, not a freed one)."""
    _use(twin)
    server, client, inc, out = _established(files)
    pump, conn = server._pump, server._conn
    if conn is not None:
        before = (conn._into_ssl, conn._from_ssl)
        assert pump.renew()
        assert (conn._into_ssl, conn._from_ssl) != before
        client.write(b"pending across a renewal")
        conn.bio_write(out.read())          # pending in the read BIO, not yet seen by OpenSSL
        assert pump.renew()
        _, plain, _ = server.receive(b"")
        assert plain == b"pending across a renewal"
    else:
        # the native twin's own SSL (no pyOpenSSL Connection to follow): renewing between two
        # records keeps the connection whole
        assert pump.renew()
        client.write(b"after a renewal")
        _, plain, _ = server.receive(out.read())
        assert plain == b"after a renewal"
    big = bytes(range(256)) * 1024      # 256 KB each way: both calls renew on their own
    client.write(big)
    got = b""
    while len(got) < len(big):
        _, plain, _ = server.receive(out.read())
        got += plain
    assert got == big
    inc.write(server.send(big))
    back = b""
    while len(back) < len(big):
        back += client.read(65536)
    assert back == big


def test_bindings_self_test():
    """Every OpenSSL name the TLS layer uses is checked at import; a missing one of the native
    pump's takes only the native twin away, with the reason kept for the log."""
    from cryptography.hazmat.bindings._rust import _openssl
    assert tlspump.missing_bindings(_openssl.lib, tlspump.REQUIRED_BINDINGS + tlspump.PUMP_FUNCTIONS) == ()
    assert tlspump.missing_bindings(object(), ("SSL_read", "BIO_new")) == ("SSL_read", "BIO_new")
    saved = tlspump.PUMP_FUNCTIONS, tlspump.NATIVE_UNAVAILABLE, tlspump.NATIVE_MESSAGE_CALLBACK
    try:
        tlspump.PUMP_FUNCTIONS = saved[0] + ("SSL_function_removed_upstream",)
        assert tlspump.load_native() is None
        assert "SSL_function_removed_upstream" in tlspump.NATIVE_UNAVAILABLE
    finally:
        # a failed self-test binds nothing: what it found at import stays in force
        tlspump.PUMP_FUNCTIONS, tlspump.NATIVE_UNAVAILABLE, tlspump.NATIVE_MESSAGE_CALLBACK = saved
    assert tls.set_native("auto") == ("native" if tls.NATIVE_PUMP is not None else "python")


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("offered,chosen", [(["h2", "http/1.1"], "http/1.1"), (["http/1.1"], "http/1.1"),
                                            (["h2"], None), (["spdy/3", "http/1.0"], None)])
def test_alpn_answers_http11_and_never_h2(files, twin, offered, chosen):
    """The gateway's own ALPN callback (both twins): http/1.1 when offered, otherwise the handshake
    goes on without ALPN (RFC 7301 3.2 allows it; pyOpenSSL's NO_OVERLAPPING_PROTOCOLS did the
    same), never a protocol the gateway does not speak."""
    _use(twin)
    events = []
    server, client, _, _ = _established(files, alpn=offered, events=events)
    assert [type(e).__name__ for e in events] == ["HandshakeDone"]
    assert client.selected_alpn_protocol() == chosen
    assert server.alpn == (chosen.encode() if chosen else None)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("listener,offered,chosen", [
    (("h2", "http/1.1"), ["http/1.1", "h2"], "h2"), (("h2", "http/1.1"), ["http/1.1"], "http/1.1"),
    (("h2", "http/1.1"), ["h2"], "h2"), (("http/1.1", "h2"), ["h2", "http/1.1"], "http/1.1"),
    (("h2",), ["http/1.1"], None), (("h2", "http/1.1"), None, None)])
def test_alpn_follows_the_listeners_protocols(files, twin, listener, offered, chosen):
    """A listener's `alpn`, in its order of preference, on both twins."""
    _use(twin)
    events = []
    server, client, _, _ = _established(files, alpn=offered, events=events, listener_alpn=listener)
    assert [type(e).__name__ for e in events] == ["HandshakeDone"]
    assert client.selected_alpn_protocol() == chosen
    assert server.alpn == (chosen.encode() if chosen else None)


def test_select_alpn_reads_the_length_prefixed_list():
    assert tls.select_alpn(b"\x02h2\x08http/1.1") == (4, 8)
    assert tls.select_alpn(b"\x08http/1.1") == (1, 8)
    assert tls.select_alpn(b"\x02h2") == (-1, 0)
    assert tls.select_alpn(b"") == (-1, 0)
    # a name that merely contains or prefixes http/1.1 is not it
    assert tls.select_alpn(b"\x09http/1.10\x05http/") == (-1, 0)
    # a length running past the end (OpenSSL validates the list first; this must still not match)
    assert tls.select_alpn(b"\x20http/1.1") == (-1, 0)


def test_select_alpn_follows_the_listeners_order_not_the_clients():
    both = (b"h2", b"http/1.1")
    assert tls.select_alpn(b"\x08http/1.1\x02h2", both) == (10, 2)
    assert tls.select_alpn(b"\x02h2\x08http/1.1", both) == (1, 2)
    assert tls.select_alpn(b"\x02h2\x08http/1.1", (b"http/1.1", b"h2")) == (4, 8)
    assert tls.select_alpn(b"\x08http/1.1", both) == (1, 8)
    assert tls.select_alpn(b"\x02h3\x02h2", (b"http/1.1",)) == (-1, 0)
    # the same preference, the same callback (made once)
    assert tls._alpn_callback(both) is tls._alpn_callback((b"h2", b"http/1.1"))


@pytest.mark.parametrize("twin", TWINS)
def test_connection_setup_of_each_twin_and_no_registry_leak(files, twin):
    """The native twin makes each connection's SSL itself (no pyOpenSSL Connection), registered
    for OpenSSL's callbacks only as long as the connection lives; the pure twin keeps pyOpenSSL's
    Connection."""
    _use(twin)
    if twin == "native":
        from gateway import _tls_c
    import gc
    gc.collect()        # connections of earlier tests held only by reference cycles
    before = _tls_c.registered() if twin == "native" else 0
    servers = [_established(files)[0] for _ in range(20)]
    if twin == "native":
        assert all(s._conn is None for s in servers)
        assert _tls_c.registered() == before + 20
        assert all(tlspump.owner(s._ssl) is s for s in servers)
    else:
        assert all(isinstance(s._conn, SSL.Connection) for s in servers)
        assert all(tlspump.owner(s._ssl) is s for s in servers)
    del servers
    if twin == "native":
        assert _tls_c.registered() == before


def test_tls_binds_the_pumps_names_once():
    """The handshake calls tlspump's readers for every connection: gateway/tls.py binds each name
    once, as a module global (`from .tlspump import name`), and never imports the module itself,
    whose attributes a call would otherwise look up every time."""
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(tls))
    modules = {alias.asname or alias.name for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module
               for alias in node.names}
    assert "tlspump" not in modules
    names = {alias.name for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.module == "tlspump" for alias in node.names}
    per_connection = {"owner", "store_ssl", "verify_depth", "set_verify_error", "session_reused",
                      "servername", "version_name", "cipher_name", "name_of", "ssl_of", "py_pump"}
    assert per_connection <= names
    assert all(getattr(tls, n) is getattr(tlspump, n) for n in per_connection)
