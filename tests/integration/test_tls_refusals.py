"""TLS refusals through a real gateway process: each verify status reaches the client as the alert
that fits it (seen by `openssl s_client` and by Python's ssl, TLS 1.2 and 1.3), the connection log
keeps ALB's status, oversized client chains are refused inside the handshake, a session revoked
after its full handshake is refused inside its resumption, and a renegotiation attempt is one
error line, not a second connection. Each runs on both twins of the TLS pump (`native`)."""
from __future__ import annotations

import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import pki, testing

pytestmark = pytest.mark.integration

NATIVE = ["on", "off"]

def _listeners(d: Path) -> str:
    """One verify listener on the port the factory fills in, answering 200 "ok"."""
    return testing.toml({"listener": [testing.listener("verify", "127.0.0.1:{port_verify}", d / "server.pem",
                                                       d / "server.key", mtls="verify")]})


# client -> (ALB status, alert number, Python ssl's reason) ; None: no certificate at all
REFUSALS = {
    "untrusted": ("Failed:ClientCertUntrusted", 48, "TLSV1_ALERT_UNKNOWN_CA"),
    "deep": ("Failed:ClientCertMaxChainDepthExceeded", 48, "TLSV1_ALERT_UNKNOWN_CA"),
    "expired": ("Failed:ClientCertExpired", 45, "SSLV3_ALERT_CERTIFICATE_EXPIRED"),
    "notyet": ("Failed:ClientCertNotYetValid", 45, "SSLV3_ALERT_CERTIFICATE_EXPIRED"),
    "revoked": ("Failed:ClientCertCrlHit", 44, "SSLV3_ALERT_CERTIFICATE_REVOKED"),
    "denied": ("Failed:ClientCertRejected", 44, "SSLV3_ALERT_CERTIFICATE_REVOKED"),
    "serverauth": ("Failed:ClientCertPurposeInvalid", 43, "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE"),
    "padded": ("Failed:ClientCertMaxSizeExceeded", 42, "SSLV3_ALERT_BAD_CERTIFICATE"),
}
NO_CERT = {"tls1_3": (116, "TLSV13_ALERT_CERTIFICATE_REQUIRED"), "tls1_2": (40, "SSLV3_ALERT_HANDSHAKE_FAILURE")}
PY_VERSIONS = {"tls1_2": ssl.TLSVersion.TLSv1_2, "tls1_3": ssl.TLSVersion.TLSv1_3}


def _padding_pem(n: int, size: int = 3600) -> bytes:
    """Self-signed certificates chaining to nothing, ~`size` bytes each (see the unit test)."""
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
        out.append((x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number()).not_valid_before(now)
                    .not_valid_after(now + dt.timedelta(days=1))
                    .add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.2"),
                                                              b"\x04\x82" + size.to_bytes(2, "big") + b"P" * size),
                                   critical=False)
                    .sign(key, hashes.SHA256())).public_bytes(serialization.Encoding.PEM))
    return b"".join(out)


@pytest.fixture(scope="module")
def padded(test_pki, tmp_path_factory):
    """The good client's leaf + intermediate + 20 padding certificates: ~79 KB sent."""
    d = tmp_path_factory.mktemp("padded")
    good = test_pki.clients["good"]
    leaf = good.cert.read_bytes()
    cert = d / "padded.pem"
    cert.write_bytes(leaf + (b"" if leaf.count(b"BEGIN CERTIFICATE") > 1 else test_pki.intermediate.cert_pem)
                     + _padding_pem(20))
    assert 75_000 < len(b"".join(pki_der(cert.read_bytes()))) < 90_000
    return cert, good.key


def pki_der(pem: bytes) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


def _start(gateway_factory, test_pki, native: str, *, pki_dir: Path | None = None, deny: str | None = None):
    d = pki_dir or test_pki.dir
    if deny is None:
        deny = f'{test_pki.clients["denied"].issued.cert.serial_number:X}'
    store = {"ca_bundle": d / "ca-bundle.pem", "crls": [d / "crl-root.pem", d / "crl-intermediate.pem"],
             "deny_serials": [deny] if deny else None}
    return gateway_factory(_listeners(d), testing.toml({"trust_store": {"main": store}}), names=["verify"],
                           gateway=f'workers = 1\nnative = "{native}"')


def _cert_key(test_pki, padded, client):
    if client is None:
        return None
    if client == "padded":
        return padded
    c = test_pki.clients[client]
    return c.cert, c.key


def s_client(port: int, ca: Path, version: str, cert_key=None, *, stdin: bytes = b"", extra=()) -> str:
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", f"-{version}", "-servername", "localhost",
            "-CAfile", str(ca), "-msg", "-ign_eof", *extra]
    if cert_key is not None:
        # -cert sends the file's first certificate only; -cert_chain sends the rest as given
        args += ["-cert", str(cert_key[0]), "-key", str(cert_key[1]), "-cert_chain", str(cert_key[0])]
    r = subprocess.run(args, input=stdin, capture_output=True, timeout=30)
    return (r.stdout + r.stderr).decode(errors="replace")


def received_alerts(text: str) -> list[int]:
    """Alert descriptions the server sent, from s_client's -msg trace ("<<< ... Alert ..." then the
    two bytes level, description) and its error line ("SSL alert number N")."""
    alerts = [int(m.group(1), 16) for m in re.finditer(r"<<< [^\n]*Alert[^\n]*\n\s+0[12] ([0-9a-f]{2})", text)]
    alerts += [int(n) for n in re.findall(r"SSL alert number (\d+)", text)]
    return alerts


def py_refusal(port: int, ca: Path, version: str, cert_key=None, session=None) -> ssl.SSLError | None:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ctx.maximum_version = PY_VERSIONS[version]
    if cert_key is not None:
        ctx.load_cert_chain(*cert_key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):
                    pass
    except ssl.SSLError as exc:
        return exc
    except ConnectionError:
        return None
    return None


def _handshakes(gw, since: int) -> list[dict]:
    """Connection-log lines from `since` on, less the start-up probes' (no ClientHello at all)."""
    return [l for l in gw.lines("connection")[since:] if l["reason"] != "closed_before_handshake"]


@pytest.mark.parametrize("native", NATIVE)
def test_each_refusal_names_its_reason_in_the_alert(gateway_factory, test_pki, padded, native):
    gw = _start(gateway_factory, test_pki, native)
    port = gw.port("verify")
    for version in ("tls1_2", "tls1_3"):
        for client, (status, alert, reason) in [*REFUSALS.items(), (None, ("Failed:ClientCertNotFound",
                                                                            *NO_CERT[version]))]:
            before = len(gw.lines("connection"))
            cert_key = _cert_key(test_pki, padded, client)
            text = s_client(port, test_pki.root_pem, version, cert_key)
            assert alert in received_alerts(text), (version, client, text[-1500:])
            assert "HTTP/1.1 200" not in text
            err = py_refusal(port, test_pki.root_pem, version, cert_key)
            assert err is not None and err.reason == reason, (version, client, err)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(_handshakes(gw, before)) < 2:
                time.sleep(0.02)
            lines = _handshakes(gw, before)
            # the log keeps ALB's status, one line per refused connection
            assert [l["tls_verify_status"] for l in lines] == [status, status], (version, client, lines)
            assert all(l["result"] == "refused" for l in lines)
    size = [l for l in gw.lines("error") if l.get("verify_status") == "Failed:ClientCertMaxSizeExceeded"]
    assert size and "65536" in size[0]["detail"]


def _private_pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    subprocess.run([sys.executable, "-m", "gateway", "pki", "init", str(d)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "gateway", "pki", "issue-client", str(d), "kim"], check=True,
                   capture_output=True)
    return d


def _reload(gw, generation: int) -> None:
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_log("error", lambda l: f"generation {generation} serving" in l.get("message", "")
                or f"generation {generation} serving" in str(l), timeout=20)


@pytest.mark.parametrize("native", NATIVE)
def test_revoked_after_full_handshake_is_refused_inside_resumption(gateway_factory, test_pki, tmp_path, native):
    d = _private_pki(tmp_path)
    gw = _start(gateway_factory, test_pki, native, pki_dir=d, deny="")
    port = gw.port("verify")
    kim = (d / "clients" / "kim.pem", d / "clients" / "kim.key")
    sessions = {}
    for version in ("tls1_2", "tls1_3"):
        sessions[version] = tmp_path / f"{version}.sess"
        text = s_client(port, d / "root-ca.pem", version, kim, extra=["-sess_out", str(sessions[version])],
                        stdin=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert "HTTP/1.1 200" in text
        text = s_client(port, d / "root-ca.pem", version, kim, extra=["-sess_in", str(sessions[version])],
                        stdin=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert "Reused, " in text and "HTTP/1.1 200" in text, text[-800:]
    subprocess.run([sys.executable, "-m", "gateway", "pki", "revoke", str(d), "kim"], check=True,
                   capture_output=True)
    _reload(gw, 1)
    for version in ("tls1_2", "tls1_3"):
        before = len(gw.lines("connection"))
        text = s_client(port, d / "root-ca.pem", version, kim, extra=["-sess_in", str(sessions[version])],
                        stdin=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert 44 in received_alerts(text), (version, text[-1500:])       # certificate_revoked
        assert "HTTP/1.1 200" not in text
        assert "NewSessionTicket" not in text.split("Alert")[0][-3000:] or version == "tls1_2"
        line = gw.wait_log("connection", lambda l: l["reason"] == "resumed_client_refused"
                           and gw.lines("connection").index(l) >= before)
        assert line["result"] == "refused" and line["tls_verify_status"] == "Failed:ClientCertCrlHit"
        assert line["resumed"] is True          # counted as a refused resumed handshake
        assert not [l for l in _handshakes(gw, before) if l["result"] == "accepted"]


@pytest.mark.parametrize("native", NATIVE)
def test_renegotiation_attempt_is_one_error_line_and_one_connection_line(gateway_factory, test_pki, native):
    gw = _start(gateway_factory, test_pki, native)
    good = test_pki.clients["good"]
    before_conn = len(gw.lines("connection"))
    # "R" on its own line asks s_client to renegotiate (TLS 1.2 only; not with -ign_eof, which
    # turns the command letters off); stdin stays open until the gateway has answered
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{gw.port('verify')}", "-tls1_2",
                             "-servername", "localhost", "-CAfile", str(test_pki.root_pem), "-msg",
                             "-cert", str(good.cert), "-key", str(good.key)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    proc.stdin.write(b"R\n")
    proc.stdin.flush()
    try:
        out, _ = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    text = out.decode(errors="replace")
    assert "RENEGOTIATING" in text, text[-1000:]
    assert 100 in received_alerts(text) or "alert" in text.lower()     # no_renegotiation
    line = gw.wait_log("error", lambda l: l.get("reason") == "renegotiation_refused")
    time.sleep(0.3)
    assert len([l for l in gw.lines("error") if l.get("reason") in ("renegotiation_refused", "tls_error")]) == 1
    assert line["detail"]
    conns = _handshakes(gw, before_conn)
    assert len(conns) == 1 and conns[0]["result"] == "accepted", conns
    # and the gateway still serves
    assert "HTTP/1.1 200" in s_client(gw.port("verify"), test_pki.root_pem, "tls1_3", (good.cert, good.key),
                                      stdin=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")


def _py_session(port: int, ctx: ssl.SSLContext, session=None):
    """One GET; (resumed, session, response or the SSLError)."""
    try:
        return testing.https_get(port, ctx, session=session)
    except ssl.SSLError as exc:
        return False, None, exc


@pytest.mark.parametrize("native", NATIVE)
def test_sessions_are_bound_to_the_ca_set(gateway_factory, test_pki, tmp_path, native):
    """A reload that changes the CA set (by content: same file name) admits no old session; one
    that removes the client's CAs makes its sessions unusable. CRLs are not part of the binding."""
    d = _private_pki(tmp_path)
    bundle = tmp_path / "bundle.pem"
    original = (d / "ca-bundle.pem").read_bytes()
    bundle.write_bytes(original)
    gw = gateway_factory(_listeners(d), testing.toml({"trust_store": {"main": {"ca_bundle": bundle}}}),
                         names=["verify"],
                         gateway=f'workers = 1\nnative = "{native}"')
    port = gw.port("verify")
    ctx = ssl.create_default_context(cafile=str(d / "root-ca.pem"))
    ctx.load_cert_chain(d / "clients" / "kim.pem", d / "clients" / "kim.key")
    reused, session, data = _py_session(port, ctx)
    assert not reused and data.startswith(b"HTTP/1.1 200")
    reused, session, data = _py_session(port, ctx, session)
    assert reused and data.startswith(b"HTTP/1.1 200")
    # another CA added: the policy changed, the session does not resume (a full handshake passes)
    bundle.write_bytes(original + pki.make_root("another root").cert_pem)
    _reload(gw, 1)
    reused, session, data = _py_session(port, ctx, session)
    assert not reused and data.startswith(b"HTTP/1.1 200"), data
    # the client's CAs removed: its fresh session is unusable, and so is a full handshake
    bundle.write_bytes(pki.make_root("only root").cert_pem)
    _reload(gw, 2)
    reused, _, result = _py_session(port, ctx, session)
    assert not reused and isinstance(result, ssl.SSLError) and result.reason == "TLSV1_ALERT_UNKNOWN_CA", result


def _one_byte_hello(port: int, ctx: ssl.SSLContext, sni: str):
    """A handshake whose ClientHello goes out one byte per TCP segment; (peer certificate DER,
    response or the SSLError)."""
    client = testing.MemoryTLSClient(ctx, server_hostname=sni)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        client.handshake(client.over_socket(sock, first_bytewise=True, pause_s=0.0005))
        peer = client.tls.getpeercert(binary_form=True)
        reply = client.exchange_over_socket(
            sock, b"GET / HTTP/1.1\r\nHost: " + sni.encode() + b"\r\nConnection: close\r\n\r\n")
        return peer, reply
    except ssl.SSLError as exc:
        return None, exc
    finally:
        sock.close()


@pytest.mark.parametrize("native", NATIVE)
def test_fragmented_client_hello_keeps_sni_and_the_verify_policy(gateway_factory, test_pki, tmp_path, native):
    other = pki.make_server(test_pki.intermediate, ["other.test"])
    other.write(tmp_path / "other.pem", tmp_path / "other.key")
    d = test_pki.dir
    listeners = f"""
[[listener]]
name = "verify"
bind = "127.0.0.1:{{port_verify}}"
certificates = [{{{{cert = "{d}/server.pem", key = "{d}/server.key"}}}},
                {{{{cert = "{tmp_path}/other.pem", key = "{tmp_path}/other.key"}}}}]
mtls = "verify"
trust_store = "main"
[[listener.rule]]
action = "fixed-response"
fixed_response = {{{{status = 200, body = "ok"}}}}
"""
    gw = gateway_factory(listeners, f'[trust_store.main]\nca_bundle = "{d}/ca-bundle.pem"\n', names=["verify"],
                         gateway=f'workers = 1\nnative = "{native}"')
    good = test_pki.clients["good"]
    ctx = ssl.create_default_context(cafile=str(test_pki.root_pem))
    ctx.load_cert_chain(good.cert, good.key)
    peer, reply = _one_byte_hello(gw.port("verify"), ctx, "other.test")
    assert peer == other.der, "SNI did not select the other certificate"
    assert isinstance(reply, bytes) and reply.startswith(b"HTTP/1.1 200"), reply
    # the same fragmented hello without a client certificate is still refused
    bare = ssl.create_default_context(cafile=str(test_pki.root_pem))
    bare.minimum_version = ssl.TLSVersion.TLSv1_3
    peer, result = _one_byte_hello(gw.port("verify"), bare, "other.test")
    assert isinstance(result, ssl.SSLError) and result.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED", result
    gw.wait_log("connection", lambda l: l["tls_verify_status"] == "Failed:ClientCertNotFound")
