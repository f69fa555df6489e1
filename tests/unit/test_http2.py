"""HTTP/2 from clients (gateway.h2) through the connection core: no sockets, a fake clock.

The shell is played as in test_conn.py (whose fakes these tests share): a real TLS client (Python's
ssl over memory BIOs, ALPN h2) and a real HTTP/2 client (the h2 library, client side) talk to a
core built from a real listener runtime; target groups hand out fake upstream connections, so a
forward is driven event by event. Every test runs on both twins of the core, and with them both
twins of the HPACK codec (the pure core with hpack's, the native core with gateway._http2_c).
"""
from __future__ import annotations

import os
import ssl

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

from gateway.http2 import FrameGuard, request_of as _request_of
from gateway.http1 import Data, EndOfMessage, Response

from .test_conn import T0, FakeUpstream, Peer, _runtime, core_class  # noqa: F401 - the fixture

H2_RULES = """
[[listener.rule]]
priority = 10
path = "/app/*"
action = "forward"
target_group = "app"

[[listener.rule]]
priority = 15
path = "/admin"
action = "fixed-response"
fixed_response = {status = 200, body = "admin"}
allow = {subject = ["CN=nobody"]}

[[listener.rule]]
priority = 20
action = "fixed-response"
fixed_response = {status = 200, body = "ok"}
"""


def _h2_runtime(test_pki, **listener):
    listener.setdefault("alpn", '["h2", "http/1.1"]')
    return _runtime(test_pki, H2_RULES, **listener)


class H2Peer(Peer):
    """A TLS client offering h2, and an HTTP/2 client connection over it (made by `_peer`)."""

    def start(self) -> None:
        self.handshake()
        assert self.tls.selected_alpn_protocol() == "h2"
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        """What the HTTP/2 client has to send goes to the core; what comes back is parsed."""
        data = self.h2.data_to_send()
        if data:
            self.raw(data)

    def raw(self, data: bytes) -> None:
        back = self.send(data)
        if back:
            self.events += self.h2.receive_data(back)
            more = self.h2.data_to_send()
            if more:
                self.raw(more)

    def collect(self) -> None:
        back = self.read()
        if back:
            self.events += self.h2.receive_data(back)
            more = self.h2.data_to_send()
            if more:
                self.raw(more)

    def request(self, path="/", method="GET", extra=(), body=None, end=True, authority="localhost"):
        sid = self.h2.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "https"), (":authority", authority),
                   (":path", path), *extra]
        self.h2.send_headers(sid, headers, end_stream=body is None and end)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def response(self, sid):
        """(status, headers, body, ended) of stream `sid` from the events so far."""
        status, headers, body, ended, reset = None, [], b"", False, None
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, h2.events.ResponseReceived):
                headers = [(bytes(n), bytes(v)) for n, v in e.headers]
                status = int(dict(headers)[b":status"])
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
                self.h2.acknowledge_received_data(e.flow_controlled_length, sid)
            elif isinstance(e, h2.events.StreamEnded):
                ended = True
            elif isinstance(e, h2.events.StreamReset):
                reset = e.error_code
        return status, headers, body, ended, reset

    def goaway(self):
        g = [e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)]
        return g[-1] if g else None


def _peer(test_pki, rt, **kw) -> H2Peer:
    p = H2Peer.__new__(H2Peer)
    p._alpn = list(kw.pop("alpn", ("h2", "http/1.1")))
    validate = kw.pop("validate", True)
    ctx = ssl.create_default_context(cafile=str(test_pki.root_pem))
    c = test_pki.clients["good"]
    ctx.load_cert_chain(c.cert, c.key)
    ctx.set_alpn_protocols(p._alpn)
    from gateway import conn as conn_mod
    from gateway import http2 as http2_mod
    # the HPACK codec's twins go with the core's: the pure core's runs have hpack's, the native
    # core's the native codec (the runtime's build applied "auto" to both)
    http2_mod.set_native("on" if conn_mod.native_mode == "native" and http2_mod.NATIVE else "off")
    p.incoming, p.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    p.tls = ctx.wrap_bio(p.incoming, p.outgoing, server_hostname="localhost")
    p.now = T0
    p.core = conn_mod.core_class(rt, "192.0.2.7", 50123, p.now)
    p.core.owner = p
    p.logs, p.connects, p.closed, p.reading, p.writes, p.armed = [], [], 0, True, 0, 0.0
    p.deadline = p.take(p.core.acts)
    cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                    validate_outbound_headers=validate,
                                    normalize_outbound_headers=validate,
                                    validate_inbound_headers=True)
    p.h2 = h2.connection.H2Connection(config=cfg)
    p.events = []
    return p


def raw_frames(data: bytes):
    """The frames in `data`, parsed by hyperframe."""
    from hyperframe.frame import Frame
    out = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        out.append(frame)
        data = data[9 + length:]
    return out


@pytest.fixture
def rt2(test_pki):
    return _h2_runtime(test_pki)


def open_h2(test_pki, rt, **kw) -> H2Peer:
    p = _peer(test_pki, rt, **kw)
    p.start()
    assert p.core.h2 is not None
    return p


def _target_up(p, group=None, only=True):
    """The target connection the core asked for (`only`: the one it asked for) comes up: (its
    exchange, the fake connection)."""
    if only:
        assert len(p.connects) == 1, p.connects
    ex, asked, _ = p.connects.pop(0)
    up = FakeUpstream(group or asked)
    p.take(p.core.upstream_connected(ex, up, p.now))
    return ex, up


def _headers(sid, enc, path="/", method="GET", end=True) -> bytes:
    """A raw HEADERS frame of a request, its block from `enc` (an hpack Encoder)."""
    block = enc.encode([(":method", method), (":scheme", "https"), (":path", path),
                        (":authority", "localhost")])
    flags = ["END_HEADERS", "END_STREAM"] if end else ["END_HEADERS"]
    return HeadersFrame(sid, data=block, flags=flags).serialize()


def ok(length, headers) -> Response:
    return Response(status=200, reason=b"OK", http_version=b"1.1", headers=headers, keep_alive=True,
                    content_length=length, chunked=length is None)


# --- ALPN and fixed answers ------------------------------------------------------------------------

def test_alpn_h2_serves_streams_with_the_rules(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    a = p.request("/")
    b = p.request("/other", method="HEAD")
    status, headers, body, ended, _ = p.response(a)
    assert (status, body, ended) == (200, b"ok", True)
    assert (b"content-length", b"2") in headers and (b"content-type", b"text/plain") in headers
    assert not any(n in (b"connection", b"keep-alive") for n, _ in headers)
    status, _, body, ended, _ = p.response(b)
    assert (status, body, ended) == (200, b"", True)
    records = p.access()
    assert [r["status"] for r in records] == [200, 200] and records[0]["target"] == "/"
    assert not p.closed


def test_without_h2_in_alpn_the_listener_speaks_http11(test_pki):
    rt = _h2_runtime(test_pki, alpn='["http/1.1"]')
    p = _peer(test_pki, rt)
    p.handshake()
    assert p.tls.selected_alpn_protocol() == "http/1.1" and p.core.h2 is None
    assert p.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_a_rules_certificate_demand_answers_403_on_h2(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    sid = p.request("/admin")
    status, _, body, ended, _ = p.response(sid)
    assert status == 403 and b"not allowed" in body and ended
    assert "client_cert_not_allowed" in p.errors()


def test_a_coalesced_authority_the_certificate_does_not_cover_is_421(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    sid = p.request("/", authority="other.example")
    status, _, _, _, _ = p.response(sid)
    assert status == 421 and "misdirected_request" in p.errors()
    ok_sid = p.request("/", authority="localhost:8443")
    assert p.response(ok_sid)[0] == 200


# --- forwarding ------------------------------------------------------------------------------------

def test_a_stream_forwarded_carries_the_identity_and_http11_framing(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    group = rt2.target_groups["app"]
    sid = p.request("/app/x?q=1", extra=[("x-amzn-mtls-clientcert-subject", "CN=forged"),
                                         ("x_amzn_mtls_clientcert_subject", "CN=forged"),
                                         ("cookie", "a=1"), ("cookie", "b=2")])
    (ex, g, target), = p.connects
    up = FakeUpstream(group)
    p.take(p.core.upstream_connected(ex, up, p.now))
    head = up.written[0]
    assert head.startswith(b"GET /app/x?q=1 HTTP/1.1\r\n")
    assert b"host: localhost\r\n" in head.lower()
    assert b"CN=forged" not in head
    assert b"X-Amzn-Mtls-Clientcert-Subject:" in head and b"X-Forwarded-For: 192.0.2.7" in head
    assert b"cookie: a=1; b=2\r\n" in head.lower()
    assert b"content-length" not in head.lower() and b"transfer-encoding" not in head.lower()
    p.now += 0.25
    p.take(p.core.upstream_event(up, [ok(5, [(b"Content-Length", b"5"), (b"Connection", b"keep-alive"),
                                             (b"X-App", b"1")]),
                                      Data(b"hello"), EndOfMessage()], p.now))
    p.collect()
    status, headers, body, ended, _ = p.response(sid)
    assert (status, body, ended) == (200, b"hello", True)
    assert (b"x-app", b"1") in headers and (b"content-length", b"5") in headers
    assert not any(n == b"connection" for n, _ in headers)
    assert group.released == [up] and group.outstanding == 0
    rec = p.access()[-1]
    assert rec["status"] == 200 and rec["upstream"] == "10.0.0.1:80" and rec["duration_ms"] == 250.0


def test_request_bodies_are_framed_by_the_gateway(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    group = rt2.target_groups["app"]
    # no content-length: chunked to the target, the END_STREAM its last chunk
    sid = p.request("/app/up", method="POST", body=b"abc", end=False)
    ex, up = _target_up(p, group)
    p.h2.send_data(sid, b"defg", end_stream=True)
    p.flush()
    sent = b"".join(up.written)
    assert b"Transfer-Encoding: chunked\r\n" in sent
    assert sent.endswith(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    # a declared length: Content-Length, the bytes as they are
    sid2 = p.request("/app/up", method="POST", extra=[("content-length", "3")], body=b"xyz")
    ex2, up2 = _target_up(p, group)
    sent2 = b"".join(up2.written)
    assert b"Content-Length: 3\r\n" in sent2 and sent2.endswith(b"\r\n\r\nxyz")
    assert sid2 != sid


def test_a_content_length_the_data_frames_break_ends_the_connection(test_pki, rt2):
    p = open_h2(test_pki, rt2, validate=False)
    group = rt2.target_groups["app"]
    sid = p.request("/app/up", method="POST", extra=[("content-length", "2")], body=b"ab", end=False)
    ex, up = _target_up(p, group)
    # more DATA than declared: the stream's bytes may never reach the target as a second request
    p.raw(DataFrame(sid, data=b"GET /smuggled HTTP/1.1\r\n\r\n", flags=["END_STREAM"]).serialize())
    assert b"smuggled" not in b"".join(up.written)
    assert up.closed and group.released == []
    assert p.closed and "h2_content_length_mismatch" in p.errors()


def test_a_reset_stream_closes_its_target_connection(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    group = rt2.target_groups["app"]
    sid = p.request("/app/slow")
    ex, up = _target_up(p, group)
    p.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    p.flush()
    assert up.closed and group.released == [] and group.outstanding == 0
    rec = p.access()[-1]
    assert rec["aborted"] and rec["status"] == 499
    assert not p.closed


def test_a_stream_reset_in_the_arrival_that_opened_it_leaves_the_rest_served(test_pki, rt2):
    """HEADERS on 1, RST_STREAM on 1 and HEADERS on 3 in one arrival: stream 1 is gone by the time
    its answer would go (the framing has forgotten it, so sending on it says its id is too low),
    which ends only that stream: no GOAWAY, no error line, stream 3 answered."""
    p = open_h2(test_pki, rt2)
    headers = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", "/")]
    p.h2.send_headers(1, headers, end_stream=True)
    p.h2.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    p.h2.send_headers(3, headers, end_stream=True)
    p.flush()
    p.collect()
    assert p.goaway() is None and not p.closed
    status, _, body, ended, _ = p.response(3)
    assert (status, body, ended) == (200, b"ok", True)
    assert not [e for e in p.logs if e[0] == "error" and e[1] == "error"], p.logs
    assert "h2_internal_error" not in p.errors()


def test_the_target_is_read_no_faster_than_the_client_takes(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    group = rt2.target_groups["app"]
    sid = p.request("/app/big")
    ex, up = _target_up(p, group)
    chunk = b"x" * 16384
    p.take(p.core.upstream_event(up, [ok(None, [])] + [Data(chunk)] * 12, p.now))
    # the client's initial window (65535) is spent; the rest waits and the target is paused
    assert up.reading is False
    p.collect()
    status, _, body, ended, _ = p.response(sid)   # acknowledges what it read: the window opens
    p.flush()
    p.take(p.core.upstream_event(up, [EndOfMessage()], p.now))
    for _ in range(20):
        p.collect()
        status, _, body, ended, _ = p.response(sid)
        p.flush()
        if ended:
            break
    assert status == 200 and ended and len(body) == 12 * 16384


def test_an_upstream_failure_before_the_response_is_502_on_the_stream(test_pki, rt2):
    from gateway.errors import UpstreamError
    p = open_h2(test_pki, rt2)
    group = rt2.target_groups["app"]
    sid = p.request("/app/x")
    (ex, g, target), = p.connects
    p.take(p.core.upstream_connect_failed(ex, g, target, UpstreamError(
        "refused", status=502, reason="upstream_refused", target="10.0.0.1:80"), p.now))
    p.collect()
    status, _, body, ended, _ = p.response(sid)
    assert status == 502 and ended and b"bad gateway" in body
    assert not p.closed
    assert group.outstanding == 0


# --- malformed requests ----------------------------------------------------------------------------

@pytest.mark.parametrize("extra, reason", [
    ([("connection", "keep-alive")], None),
    ([("transfer-encoding", "chunked")], None),
    ([("te", "gzip")], None),
    ([("Upper", "x")], None),
    ([("x-a", "a\r\nInjected: 1")], None),
    ([("x-a", "a\x00")], None),
    ([("host", "evil.example")], {"h2_authority_host_mismatch", "h2_protocol_error"}),
    ([("content-length", "1, 2")], {"h2_bad_content_length", "h2_protocol_error"}),
    ([("x-a", " padded")], None),
])
def test_malformed_header_blocks_are_refused(test_pki, rt2, extra, reason):
    p = open_h2(test_pki, rt2, validate=False)
    sid = p.request("/app/x", extra=extra)
    assert p.connects == []          # nothing reaches a target
    status, _, _, _, reset = p.response(sid)
    assert status is None
    refused = reset is not None or p.goaway() is not None
    assert refused, p.events
    if reason is not None:
        assert reason & set(p.errors())


@pytest.mark.parametrize("method, path, authority, reason", [
    ("GET /admin", "/app/x", "localhost", "h2_bad_method"),     # a backend would read /admin
    ("GET", "/app/x /admin", "localhost", "h2_bad_path"),
    ("GET", "/app/x?q=a b", "localhost", "h2_bad_path"),
    ("GET", "/app/x", "user@localhost", "h2_bad_host"),
])
def test_pseudo_headers_http11_could_not_carry_are_reset_and_never_forwarded(
        test_pki, rt2, method, path, authority, reason):
    p = open_h2(test_pki, rt2, validate=False)
    bad = p.request(path, method=method, authority=authority)
    assert p.connects == []
    assert p.response(bad)[4] is not None, p.events            # reset
    assert reason in set(p.errors())
    # the connection goes on: a good stream after it is served
    sid = p.request("/")
    assert p.response(sid)[0] == 200


def test_request_of_checks_what_h2_lets_through():
    base = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")]
    req = _request_of(base, True, 100)
    assert req.host == b"a" and req.headers == [(b"host", b"a")] and not req.chunked
    post = _request_of([(b":method", b"POST"), *base[1:]], False, 100)
    assert post.chunked and post.content_length is None
    with pytest.raises(Exception, match="scheme"):
        _request_of([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")], True, 100)
    with pytest.raises(Exception, match="CONNECT"):
        _request_of([(b":method", b"CONNECT"), (b":authority", b"a:443")], True, 100)
    with pytest.raises(Exception, match="origin-form"):
        _request_of([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"a")], True, 100)
    with pytest.raises(Exception, match="after a regular"):
        _request_of([(b":method", b"GET"), (b"x", b"1"), (b":path", b"/")], True, 100)
    with pytest.raises(Exception, match="repeated"):
        _request_of([(b":method", b"GET"), (b":method", b"POST")], True, 100)
    with pytest.raises(Exception, match="without a body"):
        _request_of([*base, (b"content-length", b"3")], True, 100)


# --- floods and limits -----------------------------------------------------------------------------

def _flooded(p, reason):
    g = p.goaway()
    assert g is not None and g.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert reason in p.errors() and p.closed


def test_rapid_reset_is_goaway(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    for _ in range(rt2.spec.h2_max_resets_per_s + 1):
        sid = p.h2.get_next_available_stream_id()
        p.h2.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                                (":path", "/app/x")], end_stream=True)
        p.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    p.flush()
    _flooded(p, "h2_rapid_reset")


def test_ping_and_settings_floods_are_goaway(test_pki, rt2):
    p = open_h2(test_pki, rt2, validate=False)
    p.raw(b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize()
                   for i in range(rt2.spec.h2_max_control_frames_per_s + 1)))
    _flooded(p, "h2_control_flood")
    q = open_h2(test_pki, rt2, validate=False)
    q.raw(b"".join(SettingsFrame(0, settings={4: 65535}).serialize()
                   for _ in range(rt2.spec.h2_max_control_frames_per_s + 1)))
    _flooded(q, "h2_control_flood")


def test_a_ping_a_second_is_answered(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    for i in range(5):
        p.h2.ping(b"%08d" % i)
        p.flush()
        p.now += 1.0
    acks = [e for e in p.events if isinstance(e, h2.events.PingAckReceived)]
    assert len(acks) == 5 and not p.closed


def test_continuation_flood_is_goaway(test_pki, rt2):
    p = open_h2(test_pki, rt2, validate=False)
    from hpack import Encoder
    block = Encoder().encode([(":method", "GET"), (":scheme", "https"), (":path", "/"),
                              (":authority", "localhost")])
    frames = [HeadersFrame(1, data=block[:2]).serialize()]
    frames += [ContinuationFrame(1, data=b"").serialize()
               for _ in range(rt2.spec.h2_max_continuation_frames + 1)]
    p.raw(b"".join(frames))
    assert p.closed
    assert {"h2_continuation_flood", "h2_empty_frames"} & set(p.errors())


def test_empty_data_frames_are_goaway(test_pki, rt2):
    p = open_h2(test_pki, rt2, validate=False)
    sid = p.request("/app/up", method="POST", body=b"", end=False)
    p.raw(b"".join(DataFrame(sid, data=b"").serialize() for _ in range(rt2.spec.h2_max_empty_frames + 1)))
    _flooded(p, "h2_empty_frames")


def test_more_streams_than_the_setting_ends_the_connection(test_pki):
    rt = _h2_runtime(test_pki, h2_max_concurrent_streams=2)
    p = open_h2(test_pki, rt, validate=False)
    from hpack import Encoder
    enc = Encoder()
    p.raw(b"".join(_headers(sid, enc, "/app/x") for sid in (1, 3, 5)))
    # h2 makes the excess stream a connection error (RFC 9113 5.1.2 allows a stream error too):
    # the whole arrival is refused, nothing reaches a target
    assert p.connects == []
    assert p.closed and "h2_too_many_streams" in p.errors()


def test_a_window_kept_at_zero_is_goaway_after_the_stall_timeout(test_pki):
    rt = _h2_runtime(test_pki, h2_stall_timeout_s=3)
    p = open_h2(test_pki, rt)
    group = rt.target_groups["app"]
    p.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    p.flush()
    sid = p.request("/app/x")
    ex, up = _target_up(p, group)
    p.take(p.core.upstream_event(up, [ok(5, []), Data(b"hello"), EndOfMessage()], p.now))
    assert p.deadline == p.now + 3
    p.at(p.now + 3)
    p.collect()
    _flooded(p, "h2_window_stall")


def test_frame_guard_reads_frames_split_anywhere():
    frames = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
              + b"".join(RstStreamFrame(i * 2 + 1, error_code=8).serialize() for i in range(5)))
    for cut in range(len(frames)):
        g = FrameGuard(max_resets=4, max_control=10, max_empty=10, max_continuations=10)
        first = g.scan(frames[:cut], 0.0)
        second = g.scan(frames[cut:], 0.0)
        assert (first or second) == "h2_rapid_reset", cut
    g = FrameGuard(max_resets=4, max_control=10, max_empty=10, max_continuations=10)
    assert g.scan(frames[:24 + 13 * 4], 0.0) is None
    assert g.scan(frames[24 + 13 * 4:], 1.5) is None     # a new second: the count starts again


# --- drain -----------------------------------------------------------------------------------------

def test_drain_sends_goaway_and_lets_open_streams_finish(test_pki, rt2):
    p = open_h2(test_pki, rt2, validate=False)
    group = rt2.target_groups["app"]
    sid = p.request("/app/x")
    ex, up = _target_up(p, group)
    p.take(p.core.drain(p.now))
    # first a PING and a GOAWAY naming the highest id
    first = raw_frames(p.read())
    kinds = [type(f).__name__ for f in first]
    assert kinds == ["PingFrame", "GoAwayFrame"] and first[1].last_stream_id == 2 ** 31 - 1
    # a stream the client sent before it saw the GOAWAY is still taken
    from hpack import Encoder
    late = _headers(3, Encoder())
    p.tls.write(late + PingFrame(0, opaque_data=first[0].opaque_data, flags=["ACK"]).serialize())
    p.pump()
    second = raw_frames(p.read())
    names = [type(f).__name__ for f in second]
    assert "HeadersFrame" in names          # stream 3 answered (a fixed response)
    goaway = [f for f in second if type(f).__name__ == "GoAwayFrame"]
    assert goaway and goaway[0].last_stream_id == 3 and goaway[0].error_code == 0
    assert not p.closed                     # stream 1 is still open
    p.take(p.core.upstream_event(up, [ok(2, []), Data(b"hi"), EndOfMessage()], p.now))
    got = raw_frames(p.read())
    data = [f for f in got if type(f).__name__ == "DataFrame"]
    assert data and data[0].stream_id == sid and data[0].data == b"hi" and "END_STREAM" in data[0].flags
    assert p.closed


def test_drain_of_an_idle_h2_connection_closes_it_once_the_ping_is_back(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    assert p.response(p.request("/"))[0] == 200
    p.take(p.core.drain(p.now))
    assert not p.closed
    p.collect()
    # h2's own client drops its PING answer once it reads the GOAWAY: the final GOAWAY goes a
    # second later even so
    assert p.goaway() is not None and not p.closed
    assert p.deadline == p.now + 1.0
    p.at(p.now + 1.0)
    assert p.closed


def test_idle_h2_connection_gets_goaway_at_the_idle_deadline(test_pki, rt2):
    p = open_h2(test_pki, rt2)
    assert p.response(p.request("/"))[0] == 200
    assert p.deadline == p.now + rt2.spec.idle_timeout_s
    p.at(p.deadline)
    p.collect()
    assert p.goaway() is not None and p.closed


# --- no stream frames a second request upstream (hypothesis) ---------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SMUGGLE = [b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", b"0\r\n\r\nGET /s HTTP/1.1\r\n\r\n",
            b"\r\n\r\n", b"5\r\nhello\r\n", b"x" * 40]
_FIELDS = st.sampled_from([
    (b"content-length", b"0"), (b"content-length", b"5"), (b"content-length", b"40"),
    (b"content-length", b"abc"), (b"content-length", b"5, 5"), (b"transfer-encoding", b"chunked"),
    (b"te", b"trailers"), (b"te", b"gzip"), (b"connection", b"close"), (b"host", b"localhost"),
    (b"host", b"evil"), (b"x-a", b"1\r\nContent-Length: 0"), (b"X-Upper", b"1"), (b"x-b", b"\x00"),
    (b"expect", b"100-continue"), (b"upgrade", b"websocket"), (b"cookie", b"a=1"),
])
_STREAM = st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD"]),
    st.lists(_FIELDS, max_size=4),
    st.lists(st.one_of(st.sampled_from(_SMUGGLE), st.binary(max_size=30)), max_size=4),
    st.booleans(),          # END_STREAM on the last frame
    st.booleans(),          # reset by the client afterwards
)


def _frames_of(streams) -> bytes:
    from hpack import Encoder
    enc = Encoder()
    out = []
    sid = 1
    for method, fields, chunks, end, reset in streams:
        block = enc.encode([(b":method", method), (b":scheme", b"https"), (b":path", b"/app/h"),
                            (b":authority", b"localhost"), *fields])
        flags = ["END_HEADERS"] + (["END_STREAM"] if end and not chunks else [])
        out.append(HeadersFrame(sid, data=block, flags=flags).serialize())
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            out.append(DataFrame(sid, data=chunk, flags=["END_STREAM"] if last and end else []).serialize())
        if reset:
            out.append(RstStreamFrame(sid, error_code=8).serialize())
        sid += 2
    return b"".join(out)


_RT_CACHE: dict = {}


@settings(max_examples=int(os.environ.get('MTLS_GATEWAY_HYPOTHESIS_EXAMPLES', '60')), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(streams=st.lists(_STREAM, min_size=1, max_size=4), cuts=st.lists(st.integers(1, 400), max_size=4))
def test_no_http2_input_frames_more_than_one_request_per_stream(test_pki, streams, cuts):
    """Whatever the client sends on its streams (lengths that lie, framing fields, CR/LF, bytes
    that look like requests, resets, the arrival split anywhere), what reaches each target
    connection parses as at most one request, and nothing follows a request that ended."""
    from gateway import http1
    from gateway.http1 import HTTPLimits
    from gateway.errors import HTTPProtocolError
    rt = _RT_CACHE.get(id(test_pki))
    if rt is None:
        rt = _RT_CACHE[id(test_pki)] = _h2_runtime(test_pki)
    rt.target_groups["app"].idle.clear()
    p = open_h2(test_pki, rt, validate=False)
    ups: list[FakeUpstream] = []
    data = _frames_of(streams)
    at = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        if at >= len(data) or p.closed:
            break
        piece, at = data[at:cut], max(at, cut)
        if not piece:
            continue
        p.tls.write(piece)
        p.pump()
        while p.connects:       # every target connection comes up at once
            ups.append(_target_up(p, only=False)[1])
    assert "h2_internal_error" not in p.errors()        # no input makes the session fail
    for up in ups:
        sent = b"".join(up.written)
        reader = http1.request_reader(HTTPLimits())
        requests, ended = 0, False
        try:
            reader.feed(sent)
            while (event := reader.next_event()) is not None:
                if type(event) is http1.Request:
                    requests += 1
                    assert not ended, sent          # a second request after the first ended
                elif type(event) is http1.EndOfMessage:
                    ended = True
        except HTTPProtocolError:
            raise AssertionError(f"the gateway framed bytes the target cannot parse: {sent!r}")
        assert requests <= 1, sent
        assert b"/smuggled" not in sent.split(b"\r\n\r\n", 1)[0]
        if ended:
            assert reader.buffered_bytes == 0, sent


def test_max_requests_per_connection_ends_an_h2_connection_with_goaway(test_pki):
    rt = _h2_runtime(test_pki, max_requests_per_connection=3)
    p = open_h2(test_pki, rt, validate=False)
    from hpack import Encoder
    enc = Encoder()
    p.tls.write(b"".join(_headers(sid, enc) for sid in (1, 3, 5, 7)))
    p.pump()
    got = raw_frames(p.read())
    goaway = [f for f in got if type(f).__name__ == "GoAwayFrame"]
    answered = {f.stream_id for f in got if type(f).__name__ == "HeadersFrame"}
    resets = {f.stream_id: f.error_code for f in got if type(f).__name__ == "RstStreamFrame"}
    assert goaway and goaway[0].last_stream_id == 5 and goaway[0].error_code == 0
    # stream 7 is past the GOAWAY's last stream: never processed (the client may retry it)
    assert answered == {1, 3, 5} and resets in ({}, {7: h2.errors.ErrorCodes.REFUSED_STREAM})
    assert p.closed


@settings(max_examples=int(os.environ.get('MTLS_GATEWAY_HYPOTHESIS_EXAMPLES', '60')), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 255), st.sampled_from([0, 1, 3, 5, 2]),
                                 st.binary(max_size=40)), max_size=12))
def test_arbitrary_frames_never_break_the_session(test_pki, frames):
    """Frames of any type, flags, stream and payload (valid or not) after the preface: the
    session answers or refuses, and never fails."""
    rt = _RT_CACHE.get(id(test_pki))
    if rt is None:
        rt = _RT_CACHE[id(test_pki)] = _h2_runtime(test_pki)
    p = open_h2(test_pki, rt, validate=False)
    wire = b"".join(len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload
                    for kind, flags, sid, payload in frames)
    p.tls.write(wire)
    p.pump()
    while p.connects:
        _target_up(p, only=False)
    assert "h2_internal_error" not in p.errors()
    p.at(p.now + 100)           # every deadline comes: nothing is left half done
    assert "h2_internal_error" not in p.errors()


def test_a_stalled_request_body_is_408_on_its_stream(test_pki):
    rt = _h2_runtime(test_pki, body_timeout_s=5)
    p = open_h2(test_pki, rt)
    group = rt.target_groups["app"]
    sid = p.request("/app/up", method="POST", body=b"part", end=False)
    ex, up = _target_up(p, group)
    assert p.deadline == p.now + 5
    p.at(p.now + 5)
    p.collect()
    status, _, body, ended, _ = p.response(sid)
    assert status == 408 and b"stalled" in body and ended
    assert "body_timeout" in p.errors() and up.closed and not p.closed
    assert p.access()[-1]["status"] == 408


def test_split_answer_splits_each_answer_once_and_stays_bounded():
    from gateway import http2
    payload = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    first = http2.split_answer(payload)
    assert first == (200, [(b"content-type", b"text/plain"), (b"content-length", b"2")], b"ok")
    assert http2.split_answer(bytes(payload)) is first          # an equal payload: the same split
    for i in range(http2._MAX_ANSWERS * 2):
        http2.split_answer(b"HTTP/1.1 302 Found\r\nLocation: /%d\r\n\r\n" % i)
    assert len(http2._ANSWERS) <= http2._MAX_ANSWERS
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    assert http2.split_answer(big)[2] == b"x" * 5000 and big not in http2._ANSWERS
