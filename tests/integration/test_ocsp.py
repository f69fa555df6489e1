"""OCSP for client certificates through a real gateway, against real responders on 127.0.0.1:
`openssl ocsp -index ... -port` for good, revoked and unknown certificates, and a small HTTP server
answering with prepared responses for what openssl's responder will not make (a bad signature, an
expired answer), plus a responder that is not there at all."""
from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from gateway import pki, testing

from .conftest import free_port, native_setting, start_echo

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _index_line(issued: pki.Issued, revoked: bool) -> str:
    cert = issued.cert
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    serial = f"{cert.serial_number:X}"
    subject = "/" + "/".join(f"{a.oid._name}={a.value}" for a in cert.subject)
    when = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%y%m%d%H%M%SZ")
    return ("R" if revoked else "V") + f"\t{expiry}\t{when + ',keyCompromise' if revoked else ''}" \
        f"\t{serial}\tunknown\t{subject}\n"


class _Canned(http.server.BaseHTTPRequestHandler):
    """POST anything: the prepared response (set on the server), as an OCSP responder answers."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = self.server.answer          # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def world(tmp_path):
    root = pki.make_root("OCSP Test Root")
    ocsp_port, canned_port, dead_port = free_port(), free_port(), free_port()
    inter = pki.make_intermediate(root, "OCSP Test Issuing CA")
    url = f"http://127.0.0.1:{ocsp_port}/"
    clients = {
        "good": pki.make_client(inter, "good", ocsp_url=url),
        "revoked": pki.make_client(inter, "revoked", ocsp_url=url),
        "unknown": pki.make_client(inter, "unknown", ocsp_url=url),
        "canned": pki.make_client(inter, "canned", ocsp_url=f"http://127.0.0.1:{canned_port}/"),
        "dead": pki.make_client(inter, "dead", ocsp_url=f"http://127.0.0.1:{dead_port}/"),
    }
    signer = pki.make_ocsp_signer(inter, "OCSP Responder")
    d = tmp_path
    for name, issued in clients.items():
        issued.write(d / f"{name}.pem", d / f"{name}.key")
    (d / "bundle.pem").write_bytes(_pem(root.cert) + _pem(inter.cert))
    (d / "root.pem").write_bytes(_pem(root.cert))
    (d / "inter.pem").write_bytes(_pem(inter.cert))
    signer.write(d / "signer.pem", d / "signer.key")
    (d / "index.txt").write_text(_index_line(clients["good"], False)
                                 + _index_line(clients["revoked"], True))
    (d / "index.txt.attr").write_text("unique_subject = no\n")
    responder = subprocess.Popen(
        ["openssl", "ocsp", "-index", str(d / "index.txt"), "-port", str(ocsp_port), "-rsigner",
         str(d / "signer.pem"), "-rkey", str(d / "signer.key"), "-CA", str(d / "inter.pem"),
         "-nmin", "10", "-ignore_err"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # ready when it says so: a probe connection that sends nothing would hold the responder (it
    # serves one connection at a time) until its own read timeout
    deadline = time.monotonic() + 10
    while "waiting for OCSP client connections" not in responder.stderr.readline():
        assert time.monotonic() < deadline and responder.poll() is None, "openssl ocsp did not start"
    threading.Thread(target=responder.stderr.read, daemon=True).start()
    canned = http.server.ThreadingHTTPServer(("127.0.0.1", canned_port), _Canned)
    canned.answer = b""                     # type: ignore[attr-defined]
    threading.Thread(target=canned.serve_forever, daemon=True).start()
    server = pki.make_server(root, ["localhost", "127.0.0.1"])
    server.write(d / "server.pem", d / "server.key")
    echo = start_echo()
    started: list[testing.GatewayProcess] = []

    def start(failure: str = "refuse", mode: str = "leaf") -> testing.GatewayProcess:
        port = free_port()
        doc = {"gateway": {"workers": 1, **testing.log_settings(d)},
               "listener": [testing.listener("verify", port, d / "server.pem", d / "server.key",
                                             mtls="verify", rules=[testing.forward("echo")])],
               "trust_store": {"main": {"ca_bundle": d / "bundle.pem", "ocsp": mode,
                                        "ocsp_failure": failure, "ocsp_timeout_s": 2}},
               "target_group": {"echo": {"targets": [f"127.0.0.1:{echo.port}"]}}}
        config = d / "gateway.toml"
        config.write_text(testing.toml({"gateway": doc.pop("gateway")}) + native_setting("")
                          + testing.toml(doc))
        gw = testing.GatewayProcess(config, {"verify": port}, logs=testing.logs_in(d), wait=False)
        started.append(gw)
        gw.wait_ready()
        return gw

    def make_response(status: str, *, signer_issued: pki.Issued | None = None,
                      next_update: datetime | None = None) -> bytes:
        now = datetime.now(timezone.utc)
        cert = clients["canned"].cert
        who = signer_issued or signer
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=inter.cert, algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD, this_update=now - timedelta(hours=2),
            next_update=next_update or now + timedelta(hours=1), revocation_time=None,
            revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.HASH, who.cert)
        builder = builder.certificates([who.cert])
        return builder.sign(who.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    yield {"start": start, "dir": d, "clients": clients, "canned": canned, "inter": inter,
           "root": root, "make_response": make_response}
    for gw in started:
        if gw.proc.poll() is None:
            gw.stop()
    responder.terminate()
    responder.wait(10)
    canned.shutdown()
    echo.stop()


def _ctx(d: Path, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(d / "root.pem"))
    ctx.load_cert_chain(d / f"{name}.pem", d / f"{name}.key")
    return ctx


def _status(port: int, ctx: ssl.SSLContext) -> tuple[int, str]:
    """(HTTP status, "") for a served request; (0, why) when the connection was refused, in the
    handshake (an alert) or right after it (closed before any answer)."""
    try:
        _, _, raw = testing.https_get(port, ctx, timeout=10)
    except ssl.SSLError as exc:
        return 0, exc.reason or str(exc)
    except (ConnectionError, OSError) as exc:
        return 0, type(exc).__name__
    if not raw.startswith(b"HTTP/1.1 "):
        return 0, "closed"
    return int(raw[9:12]), ""


def _soon(condition, timeout: float = 5.0) -> bool:
    """Whether `condition()` held within `timeout` (polled)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _refusals(gw: testing.GatewayProcess, status: str) -> list[dict]:
    return [r for r in gw.lines("error") if r.get("verify_status") == status]


def test_good_revoked_and_unknown(world):
    gw = world["start"]()
    port, d = gw.port("verify"), world["dir"]
    # good: the first handshake waits for the answer, the next is decided from the cache
    assert _status(port, _ctx(d, "good")) == (200, "")
    assert _status(port, _ctx(d, "good")) == (200, "")
    # revoked: refused after the first handshake (before any request is read), then inside the
    # handshake with certificate_revoked once the answer is cached
    assert _status(port, _ctx(d, "revoked"))[0] == 0
    assert _status(port, _ctx(d, "revoked")) == (0, "SSLV3_ALERT_CERTIFICATE_REVOKED")
    # each refusal is one line; the log is written after the connection is gone, so wait for both
    assert _soon(lambda: len(_refusals(gw, "Failed:ClientCertOcspRevoked")) >= 2)
    assert len(_refusals(gw, "Failed:ClientCertOcspRevoked")) == 2
    # unknown to the responder
    assert _status(port, _ctx(d, "unknown"))[0] == 0
    gw.wait_log("error", lambda r: r.get("verify_status") == "Failed:ClientCertOcspUnknown")
    # the backend never saw a refused client
    served = lambda: [r for r in gw.lines("access") if r.get("status") == 200 or r.get("elb_status_code") == 200]
    assert _soon(lambda: len(served()) >= 2)
    assert len(served()) == 2, served()


@pytest.mark.parametrize("failure", ["refuse", "allow"])
def test_unreachable_responder_follows_the_policy(world, failure):
    gw = world["start"](failure=failure)
    port, d = gw.port("verify"), world["dir"]
    t0 = time.monotonic()
    status, _ = _status(port, _ctx(d, "dead"))
    assert time.monotonic() - t0 < 8     # bounded by ocsp_timeout_s, not the handshake deadline
    if failure == "refuse":
        assert status == 0
        gw.wait_log("error", lambda r: r.get("verify_status") == "Failed:ClientCertOcspUnavailable")
    else:
        assert status == 200
        gw.wait_log("error", lambda r: r.get("level") == "warning" and "ocsp" in r.get("reason", ""))


def test_bad_signature_and_expired_answers_are_unavailable(world):
    stranger_root = pki.make_root("Stranger")
    stranger = pki.make_ocsp_signer(pki.make_intermediate(stranger_root, "Stranger CA"), "Mallory")
    gw = world["start"]()
    port, d = gw.port("verify"), world["dir"]
    world["canned"].answer = world["make_response"]("good", signer_issued=stranger)
    assert _status(port, _ctx(d, "canned"))[0] == 0
    gw.wait_log("error", lambda r: r.get("verify_status") == "Failed:ClientCertOcspUnavailable")
    before = len(_refusals(gw, "Failed:ClientCertOcspUnavailable"))
    # an answer whose nextUpdate has passed is as good as none (the bad one is remembered only
    # briefly: wait that out rather than race it)
    world["canned"].answer = world["make_response"](
        "good", next_update=datetime.now(timezone.utc) - timedelta(hours=1))
    deadline = time.monotonic() + 30
    while len(_refusals(gw, "Failed:ClientCertOcspUnavailable")) < before + 2:
        assert time.monotonic() < deadline
        assert _status(port, _ctx(d, "canned"))[0] == 0
    # and a proper answer is taken once the failure's short memory is over
    world["canned"].answer = world["make_response"]("good")
    deadline = time.monotonic() + 30
    while _status(port, _ctx(d, "canned"))[0] != 200:
        assert time.monotonic() < deadline, "a good answer must be taken once the failure expired"
    assert "worker_died" not in {r.get("reason") for r in gw.lines("error")}
