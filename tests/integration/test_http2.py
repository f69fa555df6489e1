"""HTTP/2 from real clients through a real gateway to the echo backend: curl --http2, nghttp and
Python's h2 over a real TLS socket, in verify, passthrough and optional modes."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse

import h2.config
import h2.connection
import h2.events
import pytest
from cryptography import x509

from gateway import testing

from .test_gateway import ALL_STYLES, IDENTITY_NAMES, _extra, ctx_for, curl, echoed, request
from .conftest import free_port

pytestmark = pytest.mark.integration


def _listeners(d) -> str:
    cert = (d / "server.pem", d / "server.key")
    return testing.toml({"listener": [
        testing.listener("verify", "127.0.0.1:{port_verify}", *cert, mtls="verify", header_style=ALL_STYLES,
                         alpn=["h2", "http/1.1"],
                         rules=[testing.fixed_response(path="/fixed", content_type="text/plain", body="fixed ok"),
                                testing.forward("echo")]),
        testing.listener("passthrough", "127.0.0.1:{port_passthrough}", *cert, mtls="passthrough",
                         header_style="alb", alpn=["h2", "http/1.1"], rules=[testing.forward("echo")]),
        testing.listener("optional", "127.0.0.1:{port_optional}", *cert, mtls="optional",
                         trust_store="main", header_style="alb", alpn=["h2", "http/1.1"],
                         rules=[testing.forward("echo")]),
        testing.listener("h1only", "127.0.0.1:{port_h1only}", *cert, alpn=["http/1.1"],
                         rules=[testing.forward("echo")]),
    ]})


@pytest.fixture
def gw(gateway_factory, test_pki, echo_backend):
    d = test_pki.dir
    extra = _extra(d, echo_backend.port, free_port(), test_pki.clients["denied"].issued.cert.serial_number)
    return gateway_factory(_listeners(d), extra, names=["verify", "passthrough", "optional", "h1only"])


def _curl_h2(test_pki, url, client="alice", *args):
    c = test_pki.clients[client] if client else None
    cert = ["--cert", str(c.cert), "--key", str(c.key)] if c else []
    return curl("--http2", "--cacert", str(test_pki.root_pem), *cert,
                "-w", "\n%{http_version} %{http_code}", *args, url)


def _split(out: str) -> tuple[str, str, str]:
    body, _, tail = out.rpartition("\n")
    version, _, code = tail.partition(" ")
    return body, version, code


class H2Client:
    """Python's h2 over a real TLS socket to 127.0.0.1."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def get(self, path: str, extra=(), authority="localhost") -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                     (":authority", authority), (":path", path), *extra],
                               end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        return sid

    def responses(self, sids, timeout=10.0) -> dict[int, tuple[int | None, bytes, int | None]]:
        """(status, body, reset code) per stream, once every one ended or was reset."""
        out = {sid: [None, b"", None, False] for sid in sids}
        self.terminated = None
        deadline = time.monotonic() + timeout
        while not all(v[3] for v in out.values()) and time.monotonic() < deadline:
            data = self.sock.recv(65536)
            if not data:
                break
            for e in self.conn.receive_data(data):
                if isinstance(e, h2.events.ConnectionTerminated):
                    self.terminated = e
                    for v in out.values():
                        v[3] = True
                sid = getattr(e, "stream_id", None)
                if sid not in out:
                    continue
                if isinstance(e, h2.events.ResponseReceived):
                    out[sid][0] = int(dict(e.headers)[b":status"])
                elif isinstance(e, h2.events.DataReceived):
                    out[sid][1] += e.data
                    self.conn.acknowledge_received_data(e.flow_controlled_length, sid)
                elif isinstance(e, h2.events.StreamEnded):
                    out[sid][3] = True
                elif isinstance(e, h2.events.StreamReset):
                    out[sid][2] = e.error_code
                    out[sid][3] = True
            pending = self.conn.data_to_send()
            if pending:
                self.sock.sendall(pending)
        return {sid: (v[0], v[1], v[2]) for sid, v in out.items()}

    def close(self) -> None:
        self.sock.close()


# -- curl --------------------------------------------------------------------------------------------

def test_curl_http2_verify_sees_the_same_identity_as_http11(gw, test_pki):
    url = f"https://localhost:{gw.port('verify')}/hello?x=1"
    r = _curl_h2(test_pki, url)
    body, version, code = _split(r.stdout)
    assert (version, code) == ("2", "200"), r.stderr
    over_h2 = echoed(body.encode())
    _, data = request(gw.port("verify"), ctx_for(test_pki, "alice"), path="/hello?x=1")
    over_h1 = echoed(data)
    for name in IDENTITY_NAMES + ["x-forwarded-proto", "x-forwarded-for", "x-forwarded-port"]:
        assert over_h2.get(name.lower()) == over_h1.get(name.lower()), name
    assert over_h2["host"] == [f"localhost:{gw.port('verify')}"]
    assert json.loads(body)["target"] == "/hello?x=1"
    line = gw.wait_log("access", lambda l: l["listener"] == "verify" and l["target"] == "/hello?x=1")
    assert line["status"] == 200


def test_curl_http2_passthrough_forwards_the_chain(gw, test_pki):
    r = _curl_h2(test_pki, f"https://localhost:{gw.port('passthrough')}/p")
    body, version, code = _split(r.stdout)
    assert (version, code) == ("2", "200"), r.stderr
    pem = urllib.parse.unquote(echoed(body.encode())["x-amzn-mtls-clientcert"][0])
    assert x509.load_pem_x509_certificates(pem.encode())[0] == test_pki.clients["alice"].issued.cert
    # no certificate: the request goes through without the header
    r = _curl_h2(test_pki, f"https://localhost:{gw.port('passthrough')}/p", None)
    body, version, code = _split(r.stdout)
    assert (version, code) == ("2", "200") and "x-amzn-mtls-clientcert" not in echoed(body.encode())


def test_curl_http2_optional_with_and_without_a_certificate(gw, test_pki):
    r = _curl_h2(test_pki, f"https://localhost:{gw.port('optional')}/o")
    body, version, code = _split(r.stdout)
    assert (version, code) == ("2", "200")
    assert echoed(body.encode())["x-amzn-mtls-clientcert-subject"] == ["CN=alice,O=mtls-gateway dev"]
    r = _curl_h2(test_pki, f"https://localhost:{gw.port('optional')}/o", None)
    body, version, code = _split(r.stdout)
    assert (version, code) == ("2", "200")
    assert not any(n.startswith("x-amzn-mtls") for n in echoed(body.encode()))


def test_curl_http2_strips_forged_identity_headers(gw, test_pki):
    r = _curl_h2(test_pki, f"https://localhost:{gw.port('verify')}/s", "alice",
                 "-H", "X-Amzn-Mtls-Clientcert-Subject: CN=mallory", "-H", "x-forwarded-client-cert: By=evil")
    body, version, code = _split(r.stdout)
    assert (version, code) == ("2", "200")
    h = echoed(body.encode())
    assert h["x-amzn-mtls-clientcert-subject"] == ["CN=alice,O=mtls-gateway dev"]
    assert "By=evil" not in h["x-forwarded-client-cert"][0]
    # an underscore spelling a backend would fold into ours: dropped and logged, as over HTTP/1.1
    r = _curl_h2(test_pki, f"https://localhost:{gw.port('verify')}/s", "alice",
                 "-H", "X_Amzn_Mtls_Clientcert_Subject: CN=mallory")
    body, version, code = _split(r.stdout)
    assert (version, code) == ("2", "200")
    h = echoed(body.encode())
    assert "CN=mallory" not in json.dumps(h) and h["x-amzn-mtls-clientcert-subject"] == ["CN=alice,O=mtls-gateway dev"]
    gw.wait_log("error", lambda l: l.get("reason") in ("managed_header_spelling_dropped",
                                                       "underscore_headers_dropped"))


def test_curl_http2_post_body_reaches_the_target_whole(gw, test_pki, tmp_path):
    import hashlib
    payload = bytes(range(256)) * 1024      # 256 KiB: more than the initial windows
    f = tmp_path / "body"
    f.write_bytes(payload)
    r = _curl_h2(test_pki, f"https://localhost:{gw.port('verify')}/upload", "alice",
                 "--data-binary", f"@{f}")
    body, version, code = _split(r.stdout)
    assert (version, code) == ("2", "200"), r.stderr
    echo = json.loads(body)
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_curl_http2_large_response_under_flow_control(gw, test_pki):
    r = _curl_h2(test_pki, f"https://localhost:{gw.port('verify')}/bytes/1048576")
    body, version, code = _split(r.stdout)
    assert (version, code) == ("2", "200"), r.stderr
    assert len(body) == 1048576


def test_a_listener_without_h2_answers_curl_http2_with_http11(gw, test_pki):
    r = _curl_h2(test_pki, f"https://localhost:{gw.port('h1only')}/h", None)
    assert _split(r.stdout)[1:] == ("1.1", "200")


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (Debian's nghttp2-client) is not installed")
def test_nghttp_with_a_client_certificate(gw, test_pki):
    c = test_pki.clients["alice"]
    r = subprocess.run(["nghttp", "--cert", str(c.cert), "--key", str(c.key), "-n", "-s",
                        f"https://localhost:{gw.port('verify')}/fixed",
                        f"https://localhost:{gw.port('verify')}/a", f"https://localhost:{gw.port('verify')}/b"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "processed=0" not in r.stderr, r.stderr
    # -s prints one line per stream: id, times, status, size, path
    import re
    done = set(re.findall(r"(?m)\s200\s+\S+\s+(/\S*)$", r.stdout))
    assert done == {"/fixed", "/a", "/b"}, r.stdout
    r = subprocess.run(["nghttp", "--cert", str(c.cert), "--key", str(c.key),
                        f"https://localhost:{gw.port('verify')}/a"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["target"] == "/a"
    # no certificate on a verify listener: the handshake itself is refused
    r = subprocess.run(["nghttp", f"https://localhost:{gw.port('verify')}/a"], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout == "" and "processed=0" in r.stderr


# -- Python h2 over a real socket --------------------------------------------------------------------

def test_many_streams_on_one_connection(gw, test_pki):
    client = H2Client(gw.port("verify"), ctx_for(test_pki, "alice"))
    try:
        sids = [client.get(f"/m/{i}") for i in range(20)]
        got = client.responses(sids)
        for i, sid in enumerate(sids):
            status, body, reset = got[sid]
            assert status == 200 and reset is None
            assert json.loads(body)["target"] == f"/m/{i}"
    finally:
        client.close()


def test_malformed_requests_are_refused_and_reach_no_target(gw, test_pki):
    client = H2Client(gw.port("verify"), ctx_for(test_pki, "alice"))
    try:
        bad = client.get("/x", extra=[("x-a", "split\r\nx-injected: 1")])
        got = client.responses([bad])
        # a stream error (RST_STREAM) or, as h2 makes most of them, a connection error (GOAWAY
        # PROTOCOL_ERROR): either way never answered, never forwarded
        assert got[bad][0] is None
        assert got[bad][2] == 1 or (client.terminated is not None and client.terminated.error_code == 1)
    finally:
        client.close()
    line = gw.wait_log("error", lambda l: l.get("reason", "").startswith("h2_"))
    assert line["reason"] in ("h2_protocol_error", "h2_bad_header_bytes")
    assert not [l for l in gw.lines("access") if l.get("target") == "/x"]


def test_rapid_reset_gets_goaway_and_a_log_line(gw, test_pki):
    client = H2Client(gw.port("verify"), ctx_for(test_pki, "alice"))
    try:
        for _ in range(150):
            sid = client.get("/delay/200")
            client.conn.reset_stream(sid)
        client.sock.sendall(client.conn.data_to_send())
        ended = None
        deadline = time.monotonic() + 10
        while ended is None and time.monotonic() < deadline:
            data = client.sock.recv(65536)
            if not data:
                break
            for e in client.conn.receive_data(data):
                if isinstance(e, h2.events.ConnectionTerminated):
                    ended = e
        assert ended is not None and ended.error_code == 11     # ENHANCE_YOUR_CALM
    finally:
        client.close()
    gw.wait_log("error", lambda l: l.get("reason") == "h2_rapid_reset")


def test_sigterm_drains_http2_streams(gateway_factory, test_pki, echo_backend):
    """SIGTERM with a stream at the target: GOAWAY, the stream finishes, curl sees its 200."""
    d = test_pki.dir
    gw = gateway_factory(_listeners(d), _extra(d, echo_backend.port, free_port(), 1),
                         names=["verify", "passthrough", "optional", "h1only"])
    c = test_pki.clients["alice"]
    proc = subprocess.Popen(["curl", "-sS", "--http2", "--max-time", "20", "--cacert", str(test_pki.root_pem),
                             "--cert", str(c.cert), "--key", str(c.key), "-w", "\n%{http_version} %{http_code}",
                             f"https://localhost:{gw.port('verify')}/delay/1500"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the handshake is done (its connection record written): curl's request follows at once,
        # before it can have read the drain's PING, so the two-step GOAWAY takes it
        gw.wait_log("connection", lambda l: l["listener"] == "verify" and l["result"] == "accepted")
        gw.proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    body, version, code = _split(out)
    assert (version, code) == ("2", "200"), err
    assert json.loads(body)["target"] == "/delay/1500"


def _raw_flood(client: H2Client, data: bytes):
    """Send raw frames on an open HTTP/2 connection; the GOAWAY the gateway answers, if any."""
    from hyperframe.frame import Frame
    client.sock.sendall(data)
    buf = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = client.sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        buf += chunk
    while len(buf) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
        frame.parse_body(memoryview(buf[9:9 + length]))
        buf = buf[9 + length:]
        if type(frame).__name__ == "GoAwayFrame":
            return frame
    return None


@pytest.mark.parametrize("flood, reason", [
    ("ping", "h2_control_flood"), ("settings", "h2_control_flood"),
    ("continuation", "h2_continuation_flood"), ("empty_data", "h2_empty_frames"),
])
def test_floods_get_goaway_enhance_your_calm(gw, test_pki, flood, reason):
    from hpack import Encoder
    from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PingFrame, SettingsFrame
    client = H2Client(gw.port("verify"), ctx_for(test_pki, "alice"))
    try:
        if flood == "ping":
            data = b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(200))
        elif flood == "settings":
            data = b"".join(SettingsFrame(0, settings={4: 65535}).serialize() for _ in range(200))
        elif flood == "continuation":
            block = Encoder().encode([(":method", "GET"), (":scheme", "https"), (":path", "/"),
                                      (":authority", "localhost")] + [(f"x-pad-{i}", f"{i:020d}") for i in range(40)])
            pieces = [block[i:i + 8] for i in range(0, len(block), 8)]
            assert len(pieces) > 40
            data = HeadersFrame(1, data=pieces[0]).serialize() + b"".join(
                ContinuationFrame(1, data=p).serialize() for p in pieces[1:])
        else:
            block = Encoder().encode([(":method", "POST"), (":scheme", "https"), (":path", "/up"),
                                      (":authority", "localhost")])
            data = HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize() + b"".join(
                DataFrame(1, data=b"").serialize() for _ in range(100))
        goaway = _raw_flood(client, data)
    finally:
        client.close()
    assert goaway is not None and goaway.error_code == 11, goaway       # ENHANCE_YOUR_CALM
    gw.wait_log("error", lambda l: l.get("reason") == reason)
