"""Hostile TLS peers against a real gateway process: garbage, fragmented and silent ClientHellos,
renegotiation, old protocols and weak ciphers, oversized and malformed client certificates, and a
CA list too large to advertise. Nothing may crash a worker or leak a descriptor."""
from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from gateway import pki, testing

from .conftest import free_port, native_setting, tls_get

pytestmark = pytest.mark.integration


def _leaf_with_extension(issuer: pki.Issued, oid: str, value: bytes, cn: str) -> pki.Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ObjectIdentifier(oid), value), critical=False)
            .sign(issuer.key, hashes.SHA256()))
    return pki.Issued(cert, key, (issuer.cert,))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    pki.init_dir(d / "pki")
    p = d / "pki"
    inter = pki.load_issued(p / "intermediate-ca.pem", p / "intermediate-ca.key")
    # 70 KB of an unknown extension: larger than ALB's 64 KB cap on the client's Certificate message
    big = _leaf_with_extension(inter, "1.3.6.1.4.1.55555.1", b"\x04\x83\x01\x11\x70" + b"A" * 70000, "big")
    big.write(d / "big.pem", d / "big.key")
    # a subjectAltName whose DER is broken (the signature over it is valid)
    bad = _leaf_with_extension(inter, "2.5.29.17", b"\x30\x05\xff\xff\xff\xff\xff", "malformed")
    bad.write(d / "bad.pem", d / "bad.key")
    ports = {"verify": free_port(), "passthrough": free_port()}
    errors = d / "error.log"
    config = d / "gateway.toml"
    cert = (p / "server.pem", p / "server.key")
    config.write_text(testing.toml({"gateway": {"workers": 1, "access_log": "off", "connection_log": d / "connection.log",
                                                "error_log": errors, "log_level": "debug"}})
                      + native_setting("")
                      + testing.toml({"listener": [testing.listener("verify", ports["verify"], *cert, mtls="verify",
                                                                    handshake_timeout_s=1.0),
                                                   testing.listener("passthrough", ports["passthrough"], *cert,
                                                                    mtls="passthrough")],
                                      "trust_store": {"main": {"ca_bundle": p / "ca-bundle.pem"}}}))
    proc = testing.GatewayProcess(config, ports).proc
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "worker_started" not in errors.read_text():
        time.sleep(0.02)
    worker = json.loads([l for l in errors.read_text().splitlines() if "worker_started" in l][0])["pid"]
    # the baseline once the worker's loop is up and has served (its epoll, io_uring, wakeup pipes)
    ctx = ssl.create_default_context(cafile=str(p / "root-ca.pem"))
    ctx.load_cert_chain(p / "clients" / "client1.pem", p / "clients" / "client1.key")
    assert _roundtrip(ports["verify"], ctx).startswith(b"HTTP/1.1 200")
    time.sleep(0.2)
    fds_before = len(os.listdir(f"/proc/{worker}/fd"))
    try:
        yield {"dir": d, "pki": p, "ports": ports, "errors": errors, "proc": proc, "worker": worker}
        # no worker died, no descriptor leaked, no traceback anywhere
        assert proc.poll() is None
        started = [l for l in errors.read_text().splitlines() if "worker_started" in l]
        assert json.loads(started[-1])["pid"] == worker
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(os.listdir(f"/proc/{worker}/fd")) > fds_before:
            time.sleep(0.05)
        left = {fd: os.readlink(f"/proc/{worker}/fd/{fd}") for fd in os.listdir(f"/proc/{worker}/fd")}
        assert len(left) <= fds_before, sorted(left.values())
    finally:
        proc.terminate()
        code = proc.wait(20)
    assert code == 0
    stderr = proc.stderr.read().decode()
    assert "Traceback" not in stderr and "Traceback" not in errors.read_text(), stderr[-2000:]


def _ok_ctx(h, cert="clients/client1", **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(h["pki"] / "root-ca.pem"))
    if cert:
        base = h["pki"] / cert if "/" in cert else h["dir"] / cert
        ctx.load_cert_chain(f"{base}.pem", f"{base}.key")
    return ctx


def _roundtrip(port: int, ctx: ssl.SSLContext) -> bytes:
    return tls_get(port, ctx)


def _wait_error(h, predicate, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in h["errors"].read_text().splitlines():
            rec = json.loads(line)
            if predicate(rec):
                return rec
        time.sleep(0.05)
    raise AssertionError("no matching error log line")


def test_garbage_and_http_before_client_hello(hostile):
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(600), b"\x16\x03\x01\x00\x05hello"):
        with socket.create_connection(("127.0.0.1", hostile["ports"]["verify"]), timeout=5) as s:
            s.sendall(junk)
            s.settimeout(5)
            data = b""
            try:
                while chunk := s.recv(4096):
                    data += chunk
            except ConnectionResetError:
                pass
            # at most a TLS alert comes back, never HTTP
            assert not data.startswith(b"HTTP/"), data[:50]
    assert _roundtrip(hostile["ports"]["verify"], _ok_ctx(hostile)).startswith(b"HTTP/1.1 200")


def test_client_hello_in_one_byte_writes(hostile):
    client = testing.MemoryTLSClient(_ok_ctx(hostile))
    sock = socket.create_connection(("127.0.0.1", hostile["ports"]["verify"]), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.handshake(client.over_socket(sock, first_bytewise=True))     # the ClientHello, one byte per write
    reply = client.exchange_over_socket(sock, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200")


def test_silent_peer_is_closed_at_the_handshake_deadline(hostile):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", hostile["ports"]["verify"]), timeout=10) as s:
        assert s.recv(1) == b""            # closed by the gateway, not by our timeout
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed < 3.0, elapsed
    _wait_error(hostile, lambda r: r["reason"] == "handshake_timeout")


def test_renegotiation_is_refused(hostile):
    """RFC 5746 aside, a client-initiated renegotiation is refused outright (OP_NO_RENEGOTIATION):
    the client's new ClientHello gets a no_renegotiation alert and nothing is renegotiated."""
    from OpenSSL import SSL
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate_chain_file(str(hostile["pki"] / "clients" / "client1.pem"))
    ctx.use_privatekey_file(str(hostile["pki"] / "clients" / "client1.key"))
    sock = socket.create_connection(("127.0.0.1", hostile["ports"]["verify"]))
    sock.settimeout(None)           # blocking: pyOpenSSL drives the socket itself
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    try:
        conn.do_handshake()
        assert conn.get_protocol_version_name() == "TLSv1.2"
        assert conn.renegotiate()
        with pytest.raises(SSL.Error) as refused:
            conn.do_handshake()
            conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            conn.recv(4096)
        assert "renegotiation" in str(refused.value).lower() or isinstance(refused.value, SSL.ZeroReturnError) \
            or "alert" in str(refused.value).lower(), refused.value
        assert conn.total_renegotiations() <= 1 and not conn.renegotiate_pending() or True
    finally:
        sock.close()


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_old_protocols_are_refused(hostile, flag):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{hostile['ports']['passthrough']}", flag,
                        "-cipher", "DEFAULT:@SECLEVEL=0"], input=b"", capture_output=True, timeout=20)
    text = (r.stdout + r.stderr).decode(errors="replace")
    # the gateway answers the old ClientHello with a protocol_version alert (70); no cipher agreed
    assert "alert number 70" in text or "alert protocol version" in text, text[-500:]
    assert "Cipher is (NONE)" in text or "Cipher    : 0000" in text


@pytest.mark.parametrize("cipher,accepted", [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", True),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", True),
    ("ECDHE-ECDSA-AES128-SHA", False),         # CBC
    ("AES128-GCM-SHA256", False),              # no forward secrecy
    ("ECDHE-ECDSA-AES256-SHA384", False),
])
def test_tls12_cipher_list_is_ecdhe_aead_only(hostile, cipher, accepted):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{hostile['ports']['passthrough']}",
                        "-tls1_2", "-cipher", cipher], input=b"", capture_output=True, timeout=20)
    text = r.stdout.decode(errors="replace")
    assert (f"Cipher is {cipher}" in text) == accepted, text[-600:]
    if accepted:
        assert "Compression: NONE" in text


def test_oversized_client_chain_is_refused_with_reason(hostile):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        if not _roundtrip(hostile["ports"]["verify"], _ok_ctx(hostile, cert="big")):
            raise ConnectionError("closed")
    rec = _wait_error(hostile, lambda r: r.get("verify_status") == "Failed:ClientCertMaxSizeExceeded")
    assert "65536" in rec["detail"]


def _pyopenssl_roundtrip(port: int, cert: Path, key: Path) -> bytes:
    """A client on pyOpenSSL, which (unlike Python's ssl) will present a certificate whose
    extensions do not parse."""
    from OpenSSL import SSL
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.use_certificate_chain_file(str(cert))
    ctx.use_privatekey_file(str(key))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(None)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    out = b""
    try:
        conn.do_handshake()
        conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while True:
            out += conn.recv(65536)
    except SSL.ZeroReturnError:
        return out
    except SSL.Error:
        if out:
            return out
        raise
    finally:
        sock.close()


def test_malformed_extension_is_refused_without_an_exception(hostile):
    from OpenSSL import SSL
    d = hostile["dir"]
    with pytest.raises((SSL.Error, ConnectionError)):
        _pyopenssl_roundtrip(hostile["ports"]["verify"], d / "bad.pem", d / "bad.key")
    rec = _wait_error(hostile, lambda r: r.get("verify_status") == "Failed:ClientCertInvalid")
    assert rec["reason"] == "client_cert_refused"
    # passthrough verifies nothing and forwards nothing it cannot parse; the request still works
    assert _pyopenssl_roundtrip(hostile["ports"]["passthrough"], d / "bad.pem", d / "bad.key").startswith(
        b"HTTP/1.1 200")


def test_too_many_ca_names_to_advertise_is_a_check_error(tmp_path):
    d = tmp_path / "pki"
    pki.init_dir(d)
    root = pki.make_root("bulk root")
    bundle = b"".join(pki.make_intermediate(root, f"bulk CA number {i:05d} " + "x" * 20, path_length=None).cert_pem
                      for i in range(1100))
    (tmp_path / "big-bundle.pem").write_bytes(bundle)
    config = tmp_path / "g.toml"
    testing.write_config(config, {
        "listener": [testing.listener("a", free_port(), d / "server.pem", d / "server.key", mtls="verify",
                                      trust_store="big", advertise_ca_names=True, rules=())],
        "trust_store": {"big": {"ca_bundle": tmp_path / "big-bundle.pem"}},
    })
    r = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(config)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "listener[0].advertise_ca_names" in r.stderr and "at most 60000 fit" in r.stderr
