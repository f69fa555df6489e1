"""Rolling mTLS out, through real gateway processes: report-only verification (every client the
verdict refuses is served, the would-be status reaches the backend, the connection log and the
metrics; the same clients refused in the handshake under enforce), the optional identity fields
(headers and access log), `log_fields`, and the signed identity (checked by the package's verifier
and by a verifier written here from gateway/signature.py's description, across a key rotation).

The clients are Python's ssl and curl; the backend is gateway.echo, which answers with the headers
it received. Each connection is matched to its own connection-log line by the client's port."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway import pki, signature, testing
from gateway.spec import ACCESS_LOG_FIELDS, IDENTITY_FIELDS

from .conftest import native_setting, start_echo

pytestmark = pytest.mark.integration

# the verify-mode ALB headers: what a client the verdict refuses must never get
VERIFIED_HEADERS = ("x-amzn-mtls-clientcert-serial-number", "x-amzn-mtls-clientcert-issuer",
                    "x-amzn-mtls-clientcert-subject", "x-amzn-mtls-clientcert-validity",
                    "x-amzn-mtls-clientcert-leaf")
PASSTHROUGH_HEADER = "x-amzn-mtls-clientcert"
STATUS_HEADER = "x-mtls-verify-status"
FIELD_HEADERS = {"sha256_fingerprint": "x-amzn-mtls-clientcert-sha256-fingerprint",
                 "san_dns": "x-amzn-mtls-clientcert-san-dns",
                 "san_uri": "x-amzn-mtls-clientcert-san-uri",
                 "san_email": "x-amzn-mtls-clientcert-san-email",
                 "spiffe_id": "x-amzn-mtls-clientcert-spiffe-id"}

# test_pki's client -> the status enforcing gives it (None: no certificate at all)
REFUSALS = [
    (None, "Failed:ClientCertNotFound"),
    ("untrusted", "Failed:ClientCertUntrusted"),
    ("expired", "Failed:ClientCertExpired"),
    ("notyet", "Failed:ClientCertNotYetValid"),
    ("revoked", "Failed:ClientCertCrlHit"),
    ("denied", "Failed:ClientCertRejected"),
    ("serverauth", "Failed:ClientCertPurposeInvalid"),
    ("deep", "Failed:ClientCertMaxChainDepthExceeded"),
]
LOG_FIELDS = ["time", "status", "target", "verify_status", "sha256_fingerprint", "san_dns"]
DEADLINE_S = 10.0


# -- the gateway -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sans_client(test_pki, tmp_path_factory):
    """A client of the test PKI's intermediate with DNS, URI and email SANs, some holding the bytes
    the list encoding must escape (",", "%", controls); two URIs, so no SPIFFE ID."""
    d = tmp_path_factory.mktemp("sans")
    issued = _client_with_sans(test_pki.intermediate, "sans",
                               dns=["x.example.com", "we,ird%.example.com"],
                               uris=["https://example.com/one", "spiffe://example.com/two"],
                               emails=["ops@example.com", "a,b%c\x01@example.com"])
    cert, key = d / "sans.pem", d / "sans.key"
    issued.write(cert, key)
    return cert, key, issued


def _client_with_sans(issuer: pki.Issued, cn: str, *, dns=(), uris=(), emails=()) -> pki.Issued:
    """pki.make_client has no email SANs: the same client leaf, built here."""
    key = pki.new_key()
    issuer_key = issuer.key
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)      # the test PKI's keys are P-256
    now = datetime.now(timezone.utc)
    names = ([x509.DNSName(v) for v in dns] + [x509.UniformResourceIdentifier(v) for v in uris]
             + [x509.RFC822Name(v) for v in emails])
    ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mtls-gateway dev"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(issuer_key, hashes.SHA256()))
    return pki.Issued(cert, key, (issuer.cert,) + issuer.chain)


@pytest.fixture(scope="module")
def gw(test_pki, tmp_path_factory):
    """One gateway of two workers: report listeners (verify and optional), an enforcing one, one
    with every identity field, one with log_fields, one the metrics test alone uses; the admin
    listener for /metrics."""
    d = tmp_path_factory.mktemp("rollout")
    echo = start_echo()
    names = ["report", "optional", "enforce", "fields", "logf", "metered", "admin"]
    ports = dict(zip(names, testing.free_ports(len(names))))
    p = test_pki.dir
    cert = (p / "server.pem", p / "server.key")
    forward = [testing.forward("echo")]
    head = testing.toml({"gateway": {"workers": 2, **testing.log_settings(d)}})
    body = testing.toml({
        "admin": {"bind": f"127.0.0.1:{ports['admin']}"},
        "listener": [
            # "keep": an underscore spelling of the gateway's own names must still be stripped
            testing.listener("report", ports["report"], *cert, mtls="verify", rules=forward,
                             mtls_enforcement="report", underscore_headers="keep",
                             identity_fields=list(IDENTITY_FIELDS)),
            testing.listener("optional", ports["optional"], *cert, mtls="optional", rules=forward,
                             mtls_enforcement="report"),
            testing.listener("enforce", ports["enforce"], *cert, mtls="verify", rules=forward),
            testing.listener("fields", ports["fields"], *cert, mtls="verify", rules=forward,
                             identity_fields=list(IDENTITY_FIELDS), underscore_headers="keep"),
            testing.listener("logf", ports["logf"], *cert, mtls="verify",
                             rules=[testing.fixed_response(path="/fixed", body="fixed"), *forward],
                             log_fields=LOG_FIELDS),
            testing.listener("metered", ports["metered"], *cert, mtls="verify", rules=forward,
                             mtls_enforcement="report"),
        ],
        "trust_store": {"main": {"ca_bundle": p / "ca-bundle.pem",
                                 "crls": [p / "crl-root.pem", p / "crl-intermediate.pem"],
                                 "deny_serials": [f"{test_pki.clients['denied'].issued.serial:X}"]}},
        "target_group": {"echo": {"targets": [f"127.0.0.1:{echo.port}"]}},
    })
    config = d / "gateway.toml"
    config.write_text(f"{head}{native_setting('')}{body}")
    proc = testing.GatewayProcess(config, ports, logs=testing.logs_in(d), wait=False)
    try:
        proc.wait_ready()
        yield proc
    finally:
        code = proc.stop()
        echo.stop()
    assert code == 0, f"gateway exited with {code}: {proc.stderr_tail()}"


# -- clients ---------------------------------------------------------------------------------------

def _ctx(test_pki, client: str | None = None, *, cert_key=None, version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(test_pki.root_pem))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert_key is not None:
        ctx.load_cert_chain(*cert_key[:2])
    elif client is not None:
        c = test_pki.clients[client]
        ctx.load_cert_chain(c.cert, c.key)
    return ctx


def _echoed(body: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def _request(port: int, ctx: ssl.SSLContext, path: str = "/", headers=None,
             method: str = "GET") -> tuple[int, dict[str, list[str]], int, dict]:
    """One request on a new connection: (status, the headers the echo saw, the client's port,
    the echo's whole answer)."""
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.connect()
        local = conn.sock.getsockname()[1]
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, (resp.status, body[:300])
    doc = json.loads(body)
    return resp.status, _echoed(body), local, doc


def _refused(port: int, ctx: ssl.SSLContext, path: str = "/", session=None) -> int:
    """A connection (offering `session`) the gateway must refuse in the handshake: no HTTP answer
    comes. The client's port."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        local = sock.getsockname()[1]
        answer = b""
        try:
            with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
                # TLS 1.3: the client's handshake ends before the server has read its certificate;
                # the refusal is the alert the first read meets
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
                while chunk := tls.recv(65536):
                    answer += chunk
        except (ssl.SSLError, ConnectionError):
            pass
        assert not answer.startswith(b"HTTP/"), answer[:200]
        return local


def _conn_line(gw, listener: str, client_port: int) -> dict:
    return gw.wait_log("connection", lambda r: r.get("listener") == listener
                       and r.get("client_port") == client_port, timeout=DEADLINE_S)


def _access_line(gw, target: str) -> dict:
    return gw.wait_log("access", lambda r: r.get("target") == target, timeout=DEADLINE_S)


def _unique(prefix: str) -> str:
    return f"/{prefix}/{uuid.uuid4().hex}"


# -- report-only -----------------------------------------------------------------------------------

@pytest.mark.parametrize("client,status", REFUSALS, ids=[c or "no-cert" for c, _ in REFUSALS])
def test_report_serves_a_client_enforcing_would_refuse(gw, test_pki, client, status):
    path = _unique("report")
    code, h, port, doc = _request(gw.port("report"), _ctx(test_pki, client), path)
    assert code == 200 and doc["target"] == path
    assert h.get(STATUS_HEADER) == [status]
    for name in VERIFIED_HEADERS:
        assert name not in h, (name, h[name])
    if client is None:
        assert PASSTHROUGH_HEADER not in h
    line = _conn_line(gw, "report", port)
    assert line["result"] == "accepted"
    assert line["reason"] == "would_refuse"
    assert line["tls_verify_status"] == status
    assert _access_line(gw, path)["verify_status"] == status


@pytest.mark.parametrize("client", [c for c, _ in REFUSALS if c is not None])
def test_report_forwards_the_presented_chain_unverified(gw, test_pki, client):
    """The chain as presented goes passthrough's way: the backend sees who it was, unverified."""
    _, h, port, _ = _request(gw.port("report"), _ctx(test_pki, client), _unique("chain"))
    issued = test_pki.clients[client].issued
    assert len(h.get(PASSTHROUGH_HEADER, [])) == 1, sorted(h)
    sent = x509.load_pem_x509_certificates(urllib.parse.unquote(h[PASSTHROUGH_HEADER][0]).encode())
    assert sent == [issued.cert, *issued.chain]
    line = _conn_line(gw, "report", port)
    assert line["leaf_client_cert_subject"] == issued.cert.subject.rfc4514_string()


def test_report_tells_the_backend_a_good_client_succeeded(gw, test_pki):
    path = _unique("good")
    _, h, port, _ = _request(gw.port("report"), _ctx(test_pki, "alice"), path)
    assert h.get(STATUS_HEADER) == ["Success"]
    assert h["x-amzn-mtls-clientcert-subject"] == ["CN=alice,O=mtls-gateway dev"]
    serial = pki._serial_hex(test_pki.clients["alice"].issued.serial)
    assert h["x-amzn-mtls-clientcert-serial-number"] == [serial]
    assert PASSTHROUGH_HEADER not in h
    assert h[FIELD_HEADERS["spiffe_id"]] == ["spiffe://example.com/alice"]      # verified: all of it
    line = _conn_line(gw, "report", port)
    assert line["result"] == "accepted" and line["tls_verify_status"] == "Success"
    assert line["reason"] is None


@pytest.fixture(scope="module")
def impostors(test_pki, tmp_path_factory):
    """Clients whose certificates claim an identity enforcing would refuse: a self-signed one and
    an expired one of the right CA, each naming a SPIFFE ID and a DNS name."""
    d = tmp_path_factory.mktemp("impostors")
    now = datetime.now(timezone.utc)
    made = {
        "self-signed": pki.make_self_signed_client("mallory", san_uri=["spiffe://example.com/admin"],
                                                   san_dns=["admin.example.com"]),
        "expired": pki.make_client(test_pki.intermediate, "old-admin", san_uri=["spiffe://example.com/admin"],
                                   san_dns=["admin.example.com"], not_before=now - timedelta(days=30),
                                   not_after=now - timedelta(days=1)),
    }
    out = {}
    for name, issued in made.items():
        issued.write(d / f"{name}.pem", d / f"{name}.key")
        out[name] = (d / f"{name}.pem", d / f"{name}.key", issued)
    return out


@pytest.mark.parametrize("which,status", [("self-signed", "Failed:ClientCertUntrusted"),
                                          ("expired", "Failed:ClientCertExpired")])
def test_report_sends_no_identity_fields_for_a_would_refuse_client(gw, test_pki, impostors, which, status):
    """A certificate the verdict refuses proves nothing: the names it claims must not reach the
    backend under the headers a verified identity uses (only the chain, passthrough's way)."""
    path = _unique("impostor")
    _, h, _, _ = _request(gw.port("report"), _ctx(test_pki, cert_key=impostors[which]), path)
    assert h.get(STATUS_HEADER) == [status]
    assert not set(VERIFIED_HEADERS) & set(h)
    assert PASSTHROUGH_HEADER in h
    assert _access_line(gw, path)["verify_status"] == status
    sent = {name: h[header] for name, header in FIELD_HEADERS.items() if header in h}
    assert sent == {}, sent


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_report_keeps_the_status_on_a_resumed_session(gw, test_pki, version):
    """A session of a client the verdict refuses resumes with the same verdict, never Success."""
    ctx = _ctx(test_pki, "expired", version=version)
    resumed, session, raw = testing.https_get(gw.port("report"), ctx, "/first")
    assert not resumed and raw.startswith(b"HTTP/1.1 200")
    assert _echoed(raw.split(b"\r\n\r\n", 1)[1]).get(STATUS_HEADER) == ["Failed:ClientCertExpired"]
    assert session is not None
    seen = []
    # two workers: a session is resumed by whichever takes the connection; a few tries
    for _ in range(6):
        resumed, _, raw = testing.https_get(gw.port("report"), ctx, "/again", session=session)
        assert raw.startswith(b"HTTP/1.1 200")
        seen.append((resumed, _echoed(raw.split(b"\r\n\r\n", 1)[1]).get(STATUS_HEADER)))
    assert any(resumed for resumed, _ in seen), seen
    assert all(s == ["Failed:ClientCertExpired"] for _, s in seen), seen


def test_report_on_optional_reports_a_bad_certificate(gw, test_pki):
    _, h, port, _ = _request(gw.port("optional"), _ctx(test_pki, "untrusted"), "/opt")
    assert h.get(STATUS_HEADER) == ["Failed:ClientCertUntrusted"]
    assert not set(VERIFIED_HEADERS) & set(h)
    line = _conn_line(gw, "optional", port)
    assert line["reason"] == "would_refuse" and line["result"] == "accepted"
    # optional admits a client without a certificate: enforcing would not refuse it either
    _, h, port, _ = _request(gw.port("optional"), _ctx(test_pki), "/opt-none")
    assert PASSTHROUGH_HEADER not in h and not set(VERIFIED_HEADERS) & set(h)
    assert _conn_line(gw, "optional", port)["reason"] != "would_refuse"
    _, h, _, _ = _request(gw.port("optional"), _ctx(test_pki, "good"), "/opt-good")
    assert h.get(STATUS_HEADER) == ["Success"]


@pytest.mark.parametrize("client,status", REFUSALS, ids=[c or "no-cert" for c, _ in REFUSALS])
def test_enforce_refuses_the_same_clients_in_the_handshake(gw, test_pki, client, status):
    path = _unique("enforce")
    port = _refused(gw.port("enforce"), _ctx(test_pki, client), path)
    line = _conn_line(gw, "enforce", port)
    assert line["result"] == "refused" and line["tls_verify_status"] == status
    assert line["reason"] != "would_refuse"
    # the good client passes, and gets no verify-status header from an enforcing listener
    _, h, _, _ = _request(gw.port("enforce"), _ctx(test_pki, "good"))
    assert STATUS_HEADER not in h and h["x-amzn-mtls-clientcert-subject"] == ["CN=client1,O=mtls-gateway dev"]
    assert not [r for r in gw.lines("access") if r.get("target") == path]


def test_client_sent_verify_status_never_reaches_the_backend(gw, test_pki):
    forged = {"X-Mtls-Verify-Status": "Success", "x_mtls_verify_status": "Success",
              "X-MTLS-VERIFY_STATUS": "Success"}
    # a refused-in-enforce client claims success on the report listener: only the gateway's verdict
    _, h, _, _ = _request(gw.port("report"), _ctx(test_pki, "untrusted"), "/spoof", headers=forged)
    assert h.get(STATUS_HEADER) == ["Failed:ClientCertUntrusted"]
    assert [n for n in h if n.replace("_", "-") == STATUS_HEADER] == [STATUS_HEADER]
    # an enforcing listener sets none, and lets none through
    _, h, _, _ = _request(gw.port("enforce"), _ctx(test_pki, "good"), "/spoof", headers=forged)
    assert not [n for n in h if n.replace("_", "-") == STATUS_HEADER], h


def test_would_refuse_metric_counts_by_status_across_workers(gw, test_pki):
    port = gw.port("metered")
    sent = {"Failed:ClientCertUntrusted": 3, "Failed:ClientCertExpired": 2, "Failed:ClientCertNotFound": 1}
    clients = {"Failed:ClientCertUntrusted": "untrusted", "Failed:ClientCertExpired": "expired",
               "Failed:ClientCertNotFound": None}
    for status, n in sent.items():
        for _ in range(n):
            _request(port, _ctx(test_pki, clients[status]))
    for _ in range(2):
        _request(port, _ctx(test_pki, "good"))      # served and not counted
    deadline = time.monotonic() + DEADLINE_S
    while True:
        samples = _would_refuse(_metrics(gw.port("admin")), "metered")
        if samples == sent or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert samples == sent


def _metrics(admin_port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 200
    return text


def _would_refuse(text: str, listener: str) -> dict[str, int]:
    """mtls_gateway_would_refuse_total's samples of `listener`, by verify_status."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("mtls_gateway_would_refuse_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        pairs = dict(p.split("=", 1) for p in labels[labels.index("{") + 1:-1].split(","))
        if pairs.get("listener") == f'"{listener}"':
            out[pairs["verify_status"].strip('"')] = int(float(value))
    return {k: v for k, v in out.items() if v}


def test_report_over_http2_with_curl(gw, test_pki):
    c = test_pki.clients["untrusted"]
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--http2", "--cacert", str(test_pki.root_pem),
                        "--cert", str(c.cert), "--key", str(c.key), "-H", "X-Mtls-Verify-Status: Success",
                        "-w", "\n%{http_version}",
                        f"https://localhost:{gw.port('report')}/h2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    body, version = r.stdout.rsplit("\n", 1)
    assert version == "2"
    h = _echoed(body.encode())
    assert h.get(STATUS_HEADER) == ["Failed:ClientCertUntrusted"]
    assert not set(VERIFIED_HEADERS) & set(h)


# -- identity fields and log_fields ----------------------------------------------------------------

def test_identity_fields_of_a_spiffe_client(gw, test_pki):
    alice = test_pki.clients["alice"].issued
    path = _unique("fields")
    _, h, _, _ = _request(gw.port("fields"), _ctx(test_pki, "alice"), path)
    fingerprint = alice.cert.fingerprint(hashes.SHA256()).hex()
    assert h[FIELD_HEADERS["sha256_fingerprint"]] == [fingerprint]
    assert h[FIELD_HEADERS["san_dns"]] == ["alice.example.com"]
    assert h[FIELD_HEADERS["san_uri"]] == ["spiffe://example.com/alice"]
    assert h[FIELD_HEADERS["spiffe_id"]] == ["spiffe://example.com/alice"]
    assert FIELD_HEADERS["san_email"] not in h            # alice has none
    assert h["x-amzn-mtls-clientcert-subject"] == ["CN=alice,O=mtls-gateway dev"]
    record = _access_line(gw, path)
    assert record["sha256_fingerprint"] == fingerprint
    assert record["san_dns"] == ["alice.example.com"]
    assert record["san_uri"] == ["spiffe://example.com/alice"]
    assert record["spiffe_id"] == "spiffe://example.com/alice"
    assert not record["san_email"]
    assert record["listener"] == "fields" and record["status"] == 200   # the other fields stay


def test_identity_fields_encode_list_values(gw, test_pki, sans_client):
    path = _unique("sans")
    _, h, _, _ = _request(gw.port("fields"), _ctx(test_pki, cert_key=sans_client), path)
    issued = sans_client[2]
    assert h[FIELD_HEADERS["sha256_fingerprint"]] == [issued.cert.fingerprint(hashes.SHA256()).hex()]
    assert h[FIELD_HEADERS["san_dns"]] == ["x.example.com,we%2Cird%25.example.com"]
    assert h[FIELD_HEADERS["san_uri"]] == ["https://example.com/one,spiffe://example.com/two"]
    assert h[FIELD_HEADERS["san_email"]] == ["ops@example.com,a%2Cb%25c%01@example.com"]
    # two URI SANs: not an X509-SVID, so no SPIFFE ID even though one of them is spiffe://
    assert FIELD_HEADERS["spiffe_id"] not in h
    record = _access_line(gw, path)
    assert record["san_dns"] == ["x.example.com", "we,ird%.example.com"]
    assert record["san_email"] == ["ops@example.com", "a,b%c\x01@example.com"]
    assert record["san_uri"] == ["https://example.com/one", "spiffe://example.com/two"]
    assert record["spiffe_id"] is None


def test_identity_fields_a_client_sends_are_stripped(gw, test_pki):
    forged = {"X-Amzn-Mtls-Clientcert-Spiffe-Id": "spiffe://example.com/admin",
              "X_Amzn_Mtls_Clientcert_San_Email": "root@example.com",
              "x-amzn-mtls-clientcert-san-dns": "admin.example.com",
              "X-Amzn-Mtls-Clientcert-San-Uri": "spiffe://example.com/admin",
              "X-Amzn-Mtls-Clientcert-Sha256-Fingerprint": "00" * 32}
    good = test_pki.clients["good"].issued          # client1: no SANs at all
    _, h, _, _ = _request(gw.port("fields"), _ctx(test_pki, "good"), "/forged", headers=forged)
    assert h[FIELD_HEADERS["sha256_fingerprint"]] == [good.cert.fingerprint(hashes.SHA256()).hex()]
    for name in ("san_dns", "san_uri", "san_email", "spiffe_id"):
        assert FIELD_HEADERS[name] not in h, name
    assert not [n for n in h if "_" in n and n.replace("_", "-") in FIELD_HEADERS.values()], h
    # a listener without identity_fields strips them too
    _, h, _, _ = _request(gw.port("enforce"), _ctx(test_pki, "good"), "/forged", headers=forged)
    assert not set(FIELD_HEADERS.values()) & set(h), h


def test_log_fields_keep_only_the_chosen_keys(gw, test_pki):
    assert set(LOG_FIELDS) <= set(ACCESS_LOG_FIELDS)
    alice = test_pki.clients["alice"].issued
    path = _unique("logf")
    _, h, _, _ = _request(gw.port("logf"), _ctx(test_pki, "alice"), path)
    # log_fields choose what is logged, not what is sent: no identity_fields on this listener
    assert not set(FIELD_HEADERS.values()) & set(h)
    record = _access_line(gw, path)
    assert set(record) == set(LOG_FIELDS), record
    assert record["status"] == 200 and record["verify_status"] == "Success"
    assert record["sha256_fingerprint"] == alice.cert.fingerprint(hashes.SHA256()).hex()
    assert record["san_dns"] == ["alice.example.com"]
    # fixed responses on a kept-alive connection (the native core answers those itself)
    targets = [_unique("fixed").replace("/fixed/", "/fixed?") for _ in range(3)]
    conn = http.client.HTTPSConnection("localhost", gw.port("logf"), context=_ctx(test_pki, "alice"),
                                       timeout=10)
    try:
        for target in targets:
            conn.request("GET", target)
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"fixed")
    finally:
        conn.close()
    for target in targets:
        record = _access_line(gw, target)
        assert set(record) == set(LOG_FIELDS), record
        assert record["status"] == 200
    # HTTP/2 streams write their records through the same choice
    c = test_pki.clients["alice"]
    h2 = _unique("h2")
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--http2", "--cacert", str(test_pki.root_pem),
                        "--cert", str(c.cert), "--key", str(c.key), "-o", "/dev/null", "-w", "%{http_version}",
                        f"https://localhost:{gw.port('logf')}{h2}"], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "2"), r.stderr
    assert set(_access_line(gw, h2)) == set(LOG_FIELDS)
    # a request refused before it has an exchange (400) is written with the chosen keys only
    with socket.create_connection(("127.0.0.1", gw.port("logf")), timeout=10) as sock:
        with _ctx(test_pki, "alice").wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")
    gw.wait_log("access", lambda r: "listener" not in r and r.get("status") == 400, timeout=DEADLINE_S)
    # every record of this listener (the only one without a "listener" key) holds chosen keys only
    mine = [r for r in gw.lines("access") if "listener" not in r]
    assert len(mine) >= 6 and all(set(r) <= set(LOG_FIELDS) for r in mine), mine


# -- the rollout's last step: report, then enforce by a reload --------------------------------------

def _own_gateway(d: Path, test_pki, listeners: list[dict], echo_port: int) -> testing.GatewayProcess:
    """A one-worker gateway of `listeners` (their ports are what it waits for) in `d`."""
    p = test_pki.dir
    head = testing.toml({"gateway": {"workers": 1, **testing.log_settings(d)}})
    body = testing.toml({
        "listener": listeners,
        "trust_store": {"main": {"ca_bundle": p / "ca-bundle.pem",
                                 "crls": [p / "crl-root.pem", p / "crl-intermediate.pem"]}},
        "target_group": {"echo": {"targets": [f"127.0.0.1:{echo_port}"]}},
    })
    config = d / "gateway.toml"
    config.write_text(f"{head}{native_setting('')}{body}")
    ports = [int(l["bind"].rsplit(":", 1)[1]) for l in listeners]
    gw = testing.GatewayProcess(config, ports, logs=testing.logs_in(d), wait=False)
    try:
        gw.wait_ready()
    except BaseException:
        gw.stop()
        raise
    return gw


def _reload(gw: testing.GatewayProcess, listeners: list[dict]) -> None:
    """Rewrite the listeners of `gw`'s configuration, SIGHUP, and wait for the next generation."""
    text = gw.config.read_text()
    head, _, _ = text.partition("[[listener]]")
    rest = testing.toml({"listener": listeners})
    tail = text[text.index("[trust_store."):] if "[trust_store." in text else ""
    gw.config.write_text(head + rest + "\n" + tail)
    done = len([r for r in gw.lines("error") if r.get("reason") == "reloaded"])
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while len([r for r in gw.lines("error") if r.get("reason") == "reloaded"]) <= done:
        failed = [r for r in gw.lines("error") if r.get("reason") == "reload_failed"]
        assert not failed, failed
        assert time.monotonic() < deadline, "no reload within 30 s"
        time.sleep(testing.POLL_S)


@pytest.fixture
def echo():
    backend = start_echo()
    yield backend
    backend.stop()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_report_then_enforce_by_reload(tmp_path, test_pki, echo, version):
    port = testing.free_port()
    p = test_pki.dir

    def roll(enforcement: str) -> dict:
        return testing.listener("roll", port, p / "server.pem", p / "server.key", mtls="verify",
                                rules=[testing.forward("echo")], mtls_enforcement=enforcement)

    gw = _own_gateway(tmp_path, test_pki, [roll("report")], echo.port)
    try:
        expired, good = _ctx(test_pki, "expired", version=version), _ctx(test_pki, "good", version=version)
        sessions = {}
        for name, ctx, status in (("expired", expired, "Failed:ClientCertExpired"), ("good", good, "Success")):
            _, sessions[name], raw = testing.https_get(port, ctx)
            assert raw.startswith(b"HTTP/1.1 200")
            assert _echoed(raw.split(b"\r\n\r\n", 1)[1]).get(STATUS_HEADER) == [status]
            assert sessions[name] is not None
        _reload(gw, [roll("enforce")])
        # the client report mode served is refused now, with its old session or without one
        for session in (None, sessions["expired"]):
            line = _conn_line(gw, "roll", _refused(port, expired, "/after", session=session))
            assert line["result"] == "refused"
            assert line["tls_verify_status"] == "Failed:ClientCertExpired"
        # the good client is served; a session issued under report does not resume under enforce
        resumed, _, raw = testing.https_get(port, good, session=sessions["good"])
        assert raw.startswith(b"HTTP/1.1 200") and not resumed
        h = _echoed(raw.split(b"\r\n\r\n", 1)[1])
        assert STATUS_HEADER not in h and h["x-amzn-mtls-clientcert-subject"] == ["CN=client1,O=mtls-gateway dev"]
    finally:
        assert gw.stop() == 0, gw.stderr_tail()


# -- signed identity -------------------------------------------------------------------------------
# An independent verifier, written from gateway/signature.py's description of version 1 (not from
# its code): the key is the file's bytes without surrounding whitespace, kid the first 8 hex digits
# of its SHA-256; the canonical string is the version line, every identity header as
# "name:value\n" (lower-case name, value without surrounding spaces and tabs) sorted by (name,
# value), an empty line, then METHOD, PATH, lower-cased HOST, T and NONCE joined by "\n"; sig is
# base64url(HMAC-SHA256(key, canonical)) without padding.

MY_SIGNED_NAMES = {
    "x-amzn-mtls-clientcert", "x-amzn-mtls-clientcert-serial-number", "x-amzn-mtls-clientcert-issuer",
    "x-amzn-mtls-clientcert-subject", "x-amzn-mtls-clientcert-validity", "x-amzn-mtls-clientcert-leaf",
    "x-amzn-mtls-clientcert-sha256-fingerprint", "x-amzn-mtls-clientcert-san-dns",
    "x-amzn-mtls-clientcert-san-uri", "x-amzn-mtls-clientcert-san-email",
    "x-amzn-mtls-clientcert-spiffe-id", "x-forwarded-client-cert", "client-cert", "client-cert-chain",
    "x-mtls-verify-status",
}
SIG_HEADER = "x-mtls-identity-signature"
SIG_VALUE = re.compile(r"t=(0|[1-9][0-9]*),n=([A-Za-z0-9_-]{16}),kid=([0-9a-f]{8}),sig=([A-Za-z0-9_-]{43})")
TEST_VECTOR_KEY = b"0123456789abcdef0123456789abcdef"


def my_kid(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def my_canonical(pairs: list[tuple[str, str]], method: str, path: str, t: str, nonce: str) -> bytes:
    identity = sorted((n.lower().encode("latin-1"), v.strip(" \t").encode("latin-1"))
                      for n, v in pairs if n.lower() in MY_SIGNED_NAMES)
    hosts = [v.strip(" \t") for n, v in pairs if n.lower() == "host"]
    assert len(hosts) <= 1
    host = hosts[0].lower() if hosts else ""
    out = b"mtls-gateway-identity-v1\n"
    for name, value in identity:
        out += name + b":" + value + b"\n"
    return out + b"\n" + "\n".join((method, path, host, t, nonce)).encode("latin-1")


def my_verify(pairs: list[tuple[str, str]], method: str, path: str, keys: list[bytes],
              max_age_s: float = 300.0, now: float | None = None) -> str:
    """The kid of the key that verifies the request, or AssertionError."""
    values = [v.strip(" \t") for n, v in pairs if n.lower() == SIG_HEADER]
    assert len(values) == 1, f"{len(values)} signature headers"
    m = SIG_VALUE.fullmatch(values[0])
    assert m is not None, values[0]
    t, nonce, kid, sig = m.groups()
    message = my_canonical(pairs, method, path, t, nonce)
    for key in keys:
        if my_kid(key) != kid:
            continue
        mac = hmac.new(key, message, hashlib.sha256).digest()
        if hmac.compare_digest(base64.urlsafe_b64encode(mac).rstrip(b"=").decode(), sig):
            now = time.time() if now is None else now
            assert -60 <= now - int(t) <= max_age_s, (now, t)
            return kid
        raise AssertionError(f"bad signature under kid {kid}")
    raise AssertionError(f"no key with kid {kid}")


def test_my_verifier_agrees_with_the_documented_test_vector():
    """The description's own example, through the verifier written here: it reads what it says."""
    pairs = [("X-Amzn-Mtls-Clientcert-Subject", "CN=client,O=Org"),
             ("X-Amzn-Mtls-Clientcert-Serial-Number", "03A5B1"), ("Host", "API.Example.org"),
             ("X-Mtls-Identity-Signature", "t=1700000000,n=AAECAwQFBgcICQoL,kid=3eb1bd43,"
                                           "sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo")]
    assert my_kid(TEST_VECTOR_KEY) == "3eb1bd43"
    assert my_verify(pairs, "GET", "/v1/orders?id=7", [TEST_VECTOR_KEY], now=1700000000) == "3eb1bd43"
    with pytest.raises(AssertionError):
        my_verify(pairs, "GET", "/v1/orders?id=8", [TEST_VECTOR_KEY], now=1700000000)


def _key_file(path: Path) -> tuple[Path, bytes]:
    """A signing key as an operator makes one (32 random bytes, base64, newline), chmod 600."""
    path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    path.chmod(0o600)
    return path, path.read_bytes().strip()


def _signed_listener(port: int, test_pki, key: Path, previous: Path | None = None) -> dict:
    p = test_pki.dir
    sig = {"key_file": key, "previous_key_file": previous}
    return testing.listener("signed", port, p / "server.pem", p / "server.key", mtls="verify",
                            rules=[testing.forward("echo")], header_style=["alb", "xfcc", "rfc9440"],
                            identity_fields=list(IDENTITY_FIELDS), mtls_enforcement="report",
                            identity_signature=sig)


def _signed_request(port: int, ctx: ssl.SSLContext, path: str = "/", headers=None,
                    method: str = "GET") -> tuple[list[tuple[str, str]], str, str]:
    """What the backend got: its headers as pairs, the method and the request-target."""
    _, _, _, doc = _request(port, ctx, path, headers=headers, method=method)
    return [(n, v) for n, v in doc["headers"]], doc["method"], doc["target"]


@pytest.fixture(scope="module")
def signed(test_pki, tmp_path_factory):
    d = tmp_path_factory.mktemp("signed")
    key_path, key = _key_file(d / "identity.key")
    backend = start_echo()
    port = testing.free_port()
    gw = _own_gateway(d, test_pki, [_signed_listener(port, test_pki, key_path)], backend.port)
    yield gw, port, key
    code = gw.stop()
    backend.stop()
    assert code == 0, gw.stderr_tail()


@pytest.mark.parametrize("client", ["alice", "expired", None], ids=["alice", "expired", "no-cert"])
def test_signature_verifies_with_the_package_and_independently(signed, test_pki, client):
    gw, port, key = signed
    target = "/v1/orders?id=7&next=%2Fhome"
    pairs, method, path = _signed_request(port, _ctx(test_pki, client), target,
                                          headers={"X-Mtls-Identity-Signature": "t=1,n=forged"})
    assert (method, path) == ("GET", target)
    values = [v for n, v in pairs if n.lower() == SIG_HEADER]
    assert len(values) == 1 and SIG_VALUE.fullmatch(values[0]), values   # the client's copy is gone
    assert signature.verify(pairs, method, path, [key]) == signature.key_id(key) == my_kid(key)
    assert my_verify(pairs, method, path, [key]) == my_kid(key)
    # what was signed is what the backend sees: the identity headers the gateway set
    names = {n.lower() for n, _ in pairs}
    if client == "alice":
        assert {"x-amzn-mtls-clientcert-subject", "x-forwarded-client-cert", "client-cert",
                "x-amzn-mtls-clientcert-spiffe-id", "x-mtls-verify-status"} <= names
    elif client == "expired":
        assert {"x-amzn-mtls-clientcert", "x-mtls-verify-status"} <= names
    # a key that is not the gateway's does not verify it
    other = base64.b64encode(os.urandom(32))
    with pytest.raises(signature.SignatureError) as err:
        signature.verify(pairs, method, path, [other])
    assert err.value.reason == "unknown_key"
    # nor does the right key long after
    with pytest.raises(signature.SignatureError) as err:
        signature.verify(pairs, method, path, [key], max_age_s=300, now=time.time() + 301)
    assert err.value.reason == "expired"


def _replace(pairs, name: str, value: str) -> list[tuple[str, str]]:
    assert any(n.lower() == name for n, _ in pairs), name
    return [(n, value if n.lower() == name else v) for n, v in pairs]


def _sig_fields(pairs) -> tuple[str, ...]:
    """(t, nonce, kid, sig) of the request's one signature header."""
    values = [v for n, v in pairs if n.lower() == SIG_HEADER]
    assert len(values) == 1, values
    m = SIG_VALUE.fullmatch(values[0])
    assert m is not None, values[0]
    return m.groups()


def _retimed(pairs, delta: int) -> list[tuple[str, str]]:
    t = int(_sig_fields(pairs)[0])
    return [(n, v.replace(f"t={t},", f"t={t + delta},", 1) if n.lower() == SIG_HEADER else v)
            for n, v in pairs]


def test_signature_detects_tampering(signed, test_pki):
    gw, port, key = signed
    pairs, method, path = _signed_request(port, _ctx(test_pki, "alice"), "/orders?id=7")
    signature.verify(pairs, method, path, [key])
    my_verify(pairs, method, path, [key])
    tampered = {
        "subject": (_replace(pairs, "x-amzn-mtls-clientcert-subject", "CN=admin,O=mtls-gateway dev"), method, path),
        "serial": (_replace(pairs, "x-amzn-mtls-clientcert-serial-number", "01"), method, path),
        "spiffe": (_replace(pairs, "x-amzn-mtls-clientcert-spiffe-id", "spiffe://example.com/admin"), method, path),
        "xfcc": (_replace(pairs, "x-forwarded-client-cert", "Hash=00"), method, path),
        "status": (_replace(pairs, "x-mtls-verify-status", "Failed:ClientCertUntrusted"), method, path),
        "removed": ([(n, v) for n, v in pairs if n.lower() != "x-amzn-mtls-clientcert-san-dns"], method, path),
        "added": (pairs + [("X-Amzn-Mtls-Clientcert-San-Email", "root@example.com")], method, path),
        "host": (_replace(pairs, "host", "evil.example"), method, path),
        "method": (pairs, "POST", path),
        "path": (pairs, method, "/orders?id=8"),
        "timestamp": (_retimed(pairs, -1), method, path),
    }
    for what, (forged, m, p) in tampered.items():
        with pytest.raises(signature.SignatureError) as err:
            signature.verify(forged, m, p, [key])
        assert err.value.reason == "bad_signature", what
        with pytest.raises(AssertionError):
            my_verify(forged, m, p, [key])


def test_a_would_refuse_verdict_cannot_be_turned_into_success(signed, test_pki):
    """Report mode's X-Mtls-Verify-Status is signed: a Failed verdict rewritten to Success fails."""
    gw, port, key = signed
    pairs, method, path = _signed_request(port, _ctx(test_pki, "untrusted"), "/", method="POST")
    assert ("X-Mtls-Verify-Status", "Failed:ClientCertUntrusted") in pairs
    assert method == "POST"
    assert signature.verify(pairs, method, path, [key]) == my_verify(pairs, method, path, [key])
    forged = _replace(pairs, "x-mtls-verify-status", "Success")
    with pytest.raises(signature.SignatureError):
        signature.verify(forged, method, path, [key])
    with pytest.raises(AssertionError):
        my_verify(forged, method, path, [key])


def test_every_request_of_a_connection_is_signed_afresh(signed, test_pki):
    gw, port, key = signed
    conn = http.client.HTTPSConnection("localhost", port, context=_ctx(test_pki, "alice"), timeout=10)
    seen: list[tuple[list, str, str]] = []
    try:
        for target in ("/a", "/b?x=1", "/a"):
            conn.request("GET", target)
            resp = conn.getresponse()
            doc = json.loads(resp.read())
            seen.append(([(n, v) for n, v in doc["headers"]], doc["method"], doc["target"]))
    finally:
        conn.close()
    nonces = set()
    memory: set[str] = set()
    for pairs, method, path in seen:
        signature.verify(pairs, method, path, [key], seen_nonces=memory)
        my_verify(pairs, method, path, [key])
        nonces.add(_sig_fields(pairs)[1])
    assert len(nonces) == 3
    with pytest.raises(signature.SignatureError) as err:        # the backend's replay memory
        signature.verify(*seen[0], [key], seen_nonces=memory)
    assert err.value.reason == "replayed"


def test_signature_over_http2_with_curl(signed, test_pki):
    gw, port, key = signed
    c = test_pki.clients["alice"]
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--http2", "--cacert", str(test_pki.root_pem),
                        "--cert", str(c.cert), "--key", str(c.key), "-w", "\n%{http_version}",
                        f"https://localhost:{port}/h2/path?q=1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    body, version = r.stdout.rsplit("\n", 1)
    assert version == "2"
    doc = json.loads(body)
    pairs = [(n, v) for n, v in doc["headers"]]
    assert doc["target"] == "/h2/path?q=1"
    assert signature.verify(pairs, doc["method"], doc["target"], [key]) == my_kid(key)
    assert my_verify(pairs, doc["method"], doc["target"], [key]) == my_kid(key)


def test_key_rotation_by_reload_keeps_requests_valid(tmp_path, test_pki, echo):
    old_path, old = _key_file(tmp_path / "identity-1.key")
    new_path, new = _key_file(tmp_path / "identity-2.key")
    port = testing.free_port()
    gw = _own_gateway(tmp_path, test_pki, [_signed_listener(port, test_pki, old_path)], echo.port)
    try:
        ctx = _ctx(test_pki, "alice")
        before = _signed_request(port, ctx, "/before")
        assert signature.verify(*before, [old]) == my_verify(*before, [old]) == my_kid(old)
        _reload(gw, [_signed_listener(port, test_pki, new_path, previous=old_path)])
        after = _signed_request(port, ctx, "/after")
        # signed after the reload: the new key's id; the backend holding both keys accepts it
        assert signature.verify(*after, [new, old]) == my_verify(*after, [new, old]) == my_kid(new)
        assert signature.verify(*after, [new]) == my_kid(new)
        with pytest.raises(signature.SignatureError) as err:
            signature.verify(*after, [old])
        assert err.value.reason == "unknown_key"
        # a request signed before the rotation still verifies against [new, old]
        assert signature.verify(*before, [new, old]) == my_verify(*before, [new, old]) == my_kid(old)
        # the error log names the key ids in force, never a key
        said = [r for r in gw.lines("error") if r.get("reason") == "identity_signature"]
        assert [(r["kid"], r["previous_kid"]) for r in said][-1] == (my_kid(new), my_kid(old))
        text = (tmp_path / "error.log").read_bytes()
        assert new not in text and old not in text
    finally:
        assert gw.stop() == 0, gw.stderr_tail()


@pytest.mark.parametrize("problem", ["readable", "short"])
def test_a_signing_key_others_can_read_or_too_short_is_refused(tmp_path, test_pki, problem):
    key_path, _ = _key_file(tmp_path / "identity.key")
    if problem == "readable":
        key_path.chmod(0o644)
    else:
        key_path.write_bytes(b"x" * 31 + b"\n")
        key_path.chmod(0o600)
    config = tmp_path / "gateway.toml"
    config.write_text(testing.toml({
        "gateway": testing.log_settings(tmp_path),
        "listener": [_signed_listener(testing.free_port(), test_pki, key_path)],
        "trust_store": {"main": {"ca_bundle": test_pki.dir / "ca-bundle.pem"}},
        "target_group": {"echo": {"targets": ["127.0.0.1:9"]}},
    }))
    r = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(config)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "identity_signature.key_file" in r.stdout + r.stderr, r.stdout + r.stderr
