"""The gateway end to end: real TLS on 127.0.0.1, real clients (curl, openssl, Python ssl), real
backends (the built-in echo backend and Python's http.server), the gateway as its own process."""
from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway import testing

from .conftest import free_port, start_echo, wait_port

pytestmark = pytest.mark.integration

ALL_STYLES = ["alb", "xfcc", "rfc9440"]


def _listeners(d: Path) -> str:
    """verify, passthrough and off, each on the port the factory fills in."""
    cert = (d / "server.pem", d / "server.key")
    return testing.toml({"listener": [
        testing.listener("verify", "127.0.0.1:{port_verify}", *cert, mtls="verify", header_style=ALL_STYLES,
                         rules=[testing.fixed_response(path="/fixed", content_type="text/plain", body="fixed ok"),
                                testing.forward("echo")]),
        testing.listener("passthrough", "127.0.0.1:{port_passthrough}", *cert, mtls="passthrough",
                         header_style="alb", rules=[testing.forward("echo")]),
        testing.listener("off", "127.0.0.1:{port_off}", *cert, header_style=ALL_STYLES,
                         rules=[testing.forward("dead", path="/dead/*"), testing.forward("echo")]),
    ]})


def _extra(d: Path, echo: int, dead: int, denied: int) -> str:
    return testing.toml({
        "trust_store": {"main": {"ca_bundle": d / "ca-bundle.pem",
                                 "crls": [d / "crl-root.pem", d / "crl-intermediate.pem"],
                                 "deny_serials": [f"{denied:X}"]}},
        "target_group": {"echo": {"targets": [f"127.0.0.1:{echo}"]},
                         "dead": {"targets": [f"127.0.0.1:{dead}"], "connect_timeout_s": 2.0}},
    })


IDENTITY_NAMES = ["X-Amzn-Mtls-Clientcert", "X-Amzn-Mtls-Clientcert-Serial-Number",
                  "X-Amzn-Mtls-Clientcert-Issuer", "X-Amzn-Mtls-Clientcert-Subject",
                  "X-Amzn-Mtls-Clientcert-Validity", "X-Amzn-Mtls-Clientcert-Leaf",
                  "X-Forwarded-Client-Cert", "Client-Cert", "Client-Cert-Chain"]


@pytest.fixture
def gw(gateway_factory, test_pki, echo_backend):
    d = test_pki.dir
    extra = _extra(d, echo_backend.port, free_port(), test_pki.clients["denied"].issued.cert.serial_number)
    return gateway_factory(_listeners(d), extra, names=["verify", "passthrough", "off"])


def ctx_for(test_pki, client: str | None, *, version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(test_pki.root_pem))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if client is not None:
        c = test_pki.clients[client]
        ctx.load_cert_chain(c.cert, c.key)
    return ctx


def request(port, ctx, method="GET", path="/", headers=None, body=None, conn=None):
    return testing.https_request(port, ctx, method, path, headers=headers, body=body, conn=conn)


def echoed(data: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n, v in json.loads(data)["headers"]:
        out.setdefault(n.lower(), []).append(v)
    return out


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True)


# -- verify ------------------------------------------------------------------------------------------

def test_verify_good_client_alb_headers_exact(gw, test_pki):
    c = test_pki.clients["alice"].issued
    resp, data = request(gw.port("verify"), ctx_for(test_pki, "alice"), path="/hello?x=1")
    assert resp.status == 200
    h = echoed(data)
    cert = c.cert
    serial = f"{cert.serial_number:X}"
    assert h["x-amzn-mtls-clientcert-serial-number"] == ["0" * (len(serial) % 2) + serial]   # whole bytes
    assert h["x-amzn-mtls-clientcert-subject"] == ["CN=alice,O=mtls-gateway dev"]
    assert h["x-amzn-mtls-clientcert-issuer"] == ["CN=mtls-gateway dev intermediate CA,O=mtls-gateway dev"]
    assert h["x-amzn-mtls-clientcert-validity"] == [
        f"NotBefore={cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ};"
        f"NotAfter={cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"]
    leaf = urllib.parse.unquote(h["x-amzn-mtls-clientcert-leaf"][0])
    assert x509.load_pem_x509_certificate(leaf.encode()) == cert
    assert "x-amzn-mtls-clientcert" not in h        # the passthrough header is not sent in verify mode
    # Envoy and RFC 9440 styles from the same handshake
    xfcc = h["x-forwarded-client-cert"][0]
    assert f"Hash={hashlib.sha256(c.der).hexdigest()}" in xfcc
    assert "URI=spiffe://example.com/alice" in xfcc and "DNS=alice.example.com" in xfcc
    import base64
    assert base64.b64decode(h["client-cert"][0].strip(":")) == c.der
    assert h["x-forwarded-proto"] == ["https"]
    assert h["x-forwarded-port"] == [str(gw.port("verify"))]
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    line = gw.wait_log("connection", lambda l: l["listener"] == "verify" and l["result"] == "accepted")
    assert line["tls_verify_status"] == "Success"
    assert line["leaf_client_cert_subject"] == "CN=alice,O=mtls-gateway dev"


def test_verify_with_curl_and_fixed_response(gw, test_pki):
    c = test_pki.clients["good"]
    r = curl("--cacert", str(test_pki.root_pem), "--cert", str(c.cert), "--key", str(c.key),
             f"https://localhost:{gw.port('verify')}/fixed")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "fixed ok"
    r = curl("--cacert", str(test_pki.root_pem), f"https://localhost:{gw.port('verify')}/fixed")
    assert r.returncode != 0 and "fixed ok" not in r.stdout


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("client,status", [
    (None, "Failed:ClientCertNotFound"),
    ("untrusted", "Failed:ClientCertUntrusted"),
    ("expired", "Failed:ClientCertExpired"),
    ("notyet", "Failed:ClientCertNotYetValid"),
    ("revoked", "Failed:ClientCertCrlHit"),
    ("denied", "Failed:ClientCertRejected"),
    ("serverauth", "Failed:ClientCertPurposeInvalid"),
    ("deep", "Failed:ClientCertMaxChainDepthExceeded"),
])
def test_verify_refuses_in_handshake(gw, test_pki, client, status, version):
    ctx = ctx_for(test_pki, client, version=version)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        request(gw.port("verify"), ctx)
    line = gw.wait_log("connection", lambda l: l["listener"] == "verify" and l["result"] == "refused"
                       and l["tls_verify_status"] == status)
    assert line["reason"] in ("client_cert_refused", "client_cert_missing")
    # nothing reached the backend or the access log for this listener
    assert not [l for l in gw.lines("access") if l["listener"] == "verify"]


def test_openssl_s_client_sees_alert(gw, test_pki):
    c = test_pki.clients["untrusted"]
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{gw.port('verify')}", "-tls1_2",
                        "-cert", str(c.cert), "-key", str(c.key), "-CAfile", str(test_pki.root_pem)],
                       input="", capture_output=True, text=True, timeout=20)
    assert "alert" in r.stderr.lower() or r.returncode != 0
    good = test_pki.clients["good"]
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{gw.port('verify')}", "-tls1_3",
                        "-cert", str(good.cert), "-key", str(good.key), "-CAfile", str(test_pki.root_pem),
                        "-quiet", "-verify_return_error"],
                       input="GET /fixed HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                       capture_output=True, text=True, timeout=20)
    assert "fixed ok" in r.stdout, r.stderr


# -- passthrough -------------------------------------------------------------------------------------

def test_passthrough_forwards_whole_chain(gw, test_pki):
    c = test_pki.clients["untrusted"]         # passthrough verifies nothing: any chain is forwarded
    resp, data = request(gw.port("passthrough"), ctx_for(test_pki, "untrusted"))
    assert resp.status == 200
    h = echoed(data)
    [value] = h["x-amzn-mtls-clientcert"]
    presented = [c.issued.cert] + list(c.issued.chain)
    pem_chain = b"".join(p.public_bytes(Encoding.PEM) for p in presented)
    assert value == urllib.parse.quote(pem_chain, safe="+=/")      # ALB: URL-encoded, + = / kept
    pems = x509.load_pem_x509_certificates(urllib.parse.unquote(value).encode())
    assert [p.public_bytes(Encoding.DER) for p in pems] == [c.issued.der] + [
        i.public_bytes(Encoding.DER) for i in c.issued.chain]
    assert "x-amzn-mtls-clientcert-leaf" not in h


def test_passthrough_without_certificate(gw, test_pki):
    resp, data = request(gw.port("passthrough"), ctx_for(test_pki, None))
    assert resp.status == 200
    assert "x-amzn-mtls-clientcert" not in echoed(data)


# -- spoofing ----------------------------------------------------------------------------------------

def _forged() -> list[tuple[str, str]]:
    forged = []
    for n in IDENTITY_NAMES:
        forged += [(n, "forged"), (n.upper(), "FORGED"), (n.lower(), "forged-again")]
    return forged


@pytest.mark.parametrize("listener,client", [("verify", "good"), ("passthrough", "good"),
                                             ("passthrough", None), ("off", None)])
def test_client_identity_headers_are_always_stripped(gw, test_pki, listener, client):
    port = gw.port(listener)
    sock = socket.create_connection(("127.0.0.1", port))
    tls = ctx_for(test_pki, client).wrap_socket(sock, server_hostname="localhost")
    head = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in _forged())
    tls.sendall(head.encode() + b"\r\n")
    raw = b""
    while True:
        chunk = tls.recv(65536)
        if not chunk:
            break
        raw += chunk
    tls.close()
    body = raw.split(b"\r\n\r\n", 1)[1]
    h = echoed(body)
    for n in IDENTITY_NAMES:
        for v in h.get(n.lower(), []):
            assert "forged" not in v.lower(), (n, v)
    if client is None:
        assert not any(n.lower() in h for n in IDENTITY_NAMES)


# -- HTTP --------------------------------------------------------------------------------------------

def test_keep_alive_many_requests_one_connection(gw, test_pki):
    conn = http.client.HTTPSConnection("localhost", gw.port("verify"), context=ctx_for(test_pki, "good"))
    for i in range(20):
        resp, data = request(None, None, path=f"/r{i}", conn=conn)
        assert resp.status == 200 and json.loads(data)["target"] == f"/r{i}"
    conn.close()
    lines = [l for l in gw.lines("connection") if l["listener"] == "verify" and l["result"] == "accepted"]
    assert len(lines) == 1     # one handshake for 20 requests


def test_large_bodies_stream_both_ways(gw, test_pki):
    ctx = ctx_for(test_pki, "good")
    size = 64 * 1024 * 1024
    block = bytes(range(256)) * 4096        # 1 MiB

    def gen():
        for _ in range(size // len(block)):
            yield block

    expected = hashlib.sha256(block * (size // len(block))).hexdigest()
    conn = http.client.HTTPSConnection("localhost", gw.port("verify"), context=ctx, timeout=60)
    conn.request("POST", "/upload", body=gen(), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    info = json.loads(resp.read())
    assert resp.status == 200 and info["body_length"] == size and info["body_sha256"] == expected
    # the same with Content-Length, on the same connection
    conn.request("PUT", "/upload", body=gen(), headers={"Content-Length": str(size)})
    resp = conn.getresponse()
    info = json.loads(resp.read())
    assert info["body_length"] == size and info["body_sha256"] == expected
    for path in (f"/bytes/{size}", f"/bytes/{size}?chunked=1"):
        conn.request("GET", path)
        resp = conn.getresponse()
        got = 0
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        assert resp.status == 200 and got == size
    conn.close()


def test_unreachable_target_is_502(gw, test_pki):
    resp, data = request(gw.port("off"), ctx_for(test_pki, None), path="/dead/x")
    assert resp.status == 502
    line = gw.wait_log("error", lambda l: l.get("reason") == "upstream_connect_failed")
    assert line["target"].startswith("127.0.0.1:")


def test_malformed_request_gets_400_and_close(gw, test_pki):
    sock = socket.create_connection(("127.0.0.1", gw.port("off")))
    tls = ctx_for(test_pki, None).wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    raw = b""
    while True:
        chunk = tls.recv(65536)
        if not chunk:
            break
        raw += chunk
    assert raw.startswith(b"HTTP/1.1 400")
    tls.close()


def test_third_party_upstream_http_server(gateway_factory, test_pki, tmp_path):
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("hello from http.server\n")
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(tmp_path / "www")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        d = test_pki.dir
        listeners = testing.toml({"listener": [testing.listener(
            "web", "127.0.0.1:{port_web}", d / "server.pem", d / "server.key", mtls="verify",
            rules=[testing.forward("web")])]})
        extra = testing.toml({"trust_store": {"main": {"ca_bundle": d / "ca-bundle.pem"}},
                              "target_group": {"web": {"targets": [f"127.0.0.1:{port}"]}}})
        gw = gateway_factory(listeners, extra, names=["web"])
        c = test_pki.clients["good"]
        r = curl("--cacert", str(test_pki.root_pem), "--cert", str(c.cert), "--key", str(c.key),
                 f"https://localhost:{gw.port('web')}/hello.txt")
        assert r.returncode == 0 and r.stdout == "hello from http.server\n", r.stderr
    finally:
        proc.terminate()
        proc.wait(10)


# -- configuration -----------------------------------------------------------------------------------

def test_check_reports_every_problem(tmp_path, test_pki):
    bad = tmp_path / "bad.toml"
    bad.write_text(f"""
[[listener]]
name = "a"
bind = "127.0.0.1:99999"
certificates = [{{cert = "{test_pki.dir}/server.pem", key = "{test_pki.dir}/root-ca.key"}}]
mtls = "verify"
trust_store = "nope"

[[listener]]
name = "b"
bind = "127.0.0.1:8445"
certificates = [{{cert = "{tmp_path}/missing.pem", key = "{tmp_path}/missing.key"}}]
mtls = "passthrough"

[trust_store.bundle_with_leaf]
ca_bundle = "{test_pki.dir}/server.pem"
""")
    r = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    err = r.stderr
    assert "listener[0].bind" in err
    assert "listener[0].certificates[0].key" in err        # key does not match its certificate
    assert "listener[0].trust_store" in err
    assert "listener[1].certificates[0].cert" in err       # missing file
    assert "trust_store.bundle_with_leaf.ca_bundle" in err # non-CA certificate in a CA bundle
    assert str(bad) in err
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "listener[0].bind" in r.stderr


def test_demo_once():
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--once", "--verify-port", "0",
                        "--passthrough-port", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 of 4 checks passed" in r.stdout
    assert r.stdout.count("PASS") == 4
