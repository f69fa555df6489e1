"""The runtime revocation API on a real gateway of two workers: the token, a revocation seen by
every worker within a second, open connections closed, resumptions refused, kept across a reload
and a restart, withdrawn again, the CLI, and the audit lines."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from gateway import testing

from .conftest import free_port, native_setting, start_echo

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-the-tests-0123456789"


def _config(d: Path, pki: Path, ports: dict, echo_port: int, *, token: bool = True) -> str:
    cert = (pki / "server.pem", pki / "server.key")
    gw = {"workers": 2, "state_dir": d / "state", **testing.log_settings(d)}
    head = testing.toml({"gateway": gw})
    admin = {"bind": f"127.0.0.1:{ports['admin']}"}
    if token:
        admin["token_file"] = d / "admin.token"
    body = testing.toml({
        "admin": admin,
        "listener": [testing.listener("verify", ports["verify"], *cert, mtls="verify",
                                      rules=[testing.forward("echo")])],
        "trust_store": {"main": {"ca_bundle": pki / "ca-bundle.pem"}},
        "target_group": {"echo": {"targets": [f"127.0.0.1:{echo_port}"]}},
    })
    return f"{head}{native_setting('')}{body}"


@pytest.fixture
def setup(tmp_path):
    pki = tmp_path / "pki"
    subprocess.run([sys.executable, "-m", "gateway", "pki", "init", str(pki)], check=True,
                   capture_output=True)
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    echo = start_echo()
    ports = {"verify": free_port(), "admin": free_port()}
    started: list[testing.GatewayProcess] = []

    def start(**kw) -> testing.GatewayProcess:
        config = tmp_path / "gateway.toml"
        config.write_text(_config(tmp_path, pki, ports, echo.port, **kw))
        gw = testing.GatewayProcess(config, ports, logs=testing.logs_in(tmp_path), wait=False)
        started.append(gw)
        gw.wait_ready()
        testing.wait_port(ports["admin"])
        return gw

    serial = x509.load_pem_x509_certificate(
        (pki / "clients" / "client1.pem").read_bytes()).serial_number
    yield {"start": start, "pki": pki, "ports": ports, "serial": serial, "dir": tmp_path}
    for gw in started:
        if gw.proc.poll() is None:
            gw.stop()
    echo.stop()


def _ctx(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "root-ca.pem"))
    ctx.load_cert_chain(pki / "clients" / "client1.pem", pki / "clients" / "client1.key")
    return ctx


def _api(port: int, method: str, path: str, body: object = None, token: str | None = TOKEN):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    answer = conn.getresponse()
    raw = answer.read()
    conn.close()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = raw
    return answer.status, doc, answer


def _get(port: int, ctx: ssl.SSLContext) -> int:
    """One request on a new connection: the HTTP status, or 0 when the TLS handshake (or the
    connection right after it) was refused."""
    try:
        _, _, raw = testing.https_get(port, ctx, timeout=5)
    except (ssl.SSLError, ConnectionError, OSError):
        return 0
    if not raw.startswith(b"HTTP/1.1 "):
        return 0
    return int(raw[9:12])


def _hex(serial: int) -> str:
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def test_api_is_off_without_a_token(setup):
    gw = setup["start"](token=False)
    status, _, _ = _api(setup["ports"]["admin"], "GET", "/revocations")
    assert status == 404
    gw.stop()


def test_a_wrong_or_missing_token_is_refused_and_logged(setup):
    gw = setup["start"]()
    port = setup["ports"]["admin"]
    for token in (None, "wrong-token-of-enough-length", TOKEN[:-1]):
        status, doc, answer = _api(port, "POST", "/revocations",
                                   {"trust_store": "main", "serial": "01"}, token=token)
        assert status == 401, doc
        assert answer.getheader("WWW-Authenticate", "").startswith("Bearer")
    gw.wait_log("error", lambda r: r.get("reason") == "admin_auth_failed")
    status, doc, _ = _api(port, "GET", "/revocations")
    assert status == 200 and doc["revocations"] == []     # nothing was revoked by the refusals
    gw.stop()


def test_bad_requests_get_clear_errors(setup):
    gw = setup["start"]()
    port = setup["ports"]["admin"]
    cases = [(b"not json", 400), (json.dumps([1]), 400),
             ({"trust_store": "nope", "serial": "01"}, 404),
             ({"trust_store": "main", "serial": "xyz"}, 400),
             ({"trust_store": "main", "serial": "01", "extra": 1}, 400),
             ({"trust_store": "main", "serial": "01", "reason": "a\nb"}, 400)]
    for body, want in cases:
        status, doc, _ = _api(port, "POST", "/revocations", body)
        assert status == want, (body, doc)
        assert "error" in doc
    assert _api(port, "DELETE", "/revocations/main/01")[0] == 404
    assert _api(port, "PUT", "/revocations")[0] == 405
    gw.stop()


def test_revocation_reaches_every_worker_within_a_second(setup):
    gw = setup["start"]()
    pki, ports, serial = setup["pki"], setup["ports"], setup["serial"]
    ctx = _ctx(pki)
    assert _get(ports["verify"], ctx) == 200
    # an open keep-alive connection and a session to resume, from before the revocation
    sock = socket.create_connection(("127.0.0.1", ports["verify"]), timeout=5)
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    first = tls.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    session = tls.session

    # the CLI, as an operator would run it
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "gateway", "revoke", "--admin",
                          f"http://127.0.0.1:{ports['admin']}", "--token-file",
                          str(setup["dir"] / "admin.token"), "--reason", "laptop stolen",
                          "main", _hex(serial)], capture_output=True, text=True, timeout=30)
    answered = time.monotonic()
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["created"] is True and doc["revocation"]["serial"] == _hex(serial)

    # the open connection is closed by the worker that holds it, within the second
    tls.settimeout(2.0)
    try:
        rest = tls.recv(65536)
    except (ssl.SSLError, ConnectionError, socket.timeout, OSError):
        rest = b""
    assert rest == b"", "the revoked client's open connection must be closed"
    tls.close()

    # new connections, on whichever worker they land: no success later than 1 s after the answer
    late_successes = []
    refused = 0
    deadline = answered + 2.0
    while time.monotonic() < deadline:
        status = _get(ports["verify"], ctx)
        if status == 0:
            refused += 1
        elif time.monotonic() > answered + 1.0:
            late_successes.append(status)
    assert refused >= 10 and late_successes == [], (refused, late_successes)
    assert answered - t0 < 10

    # the session from before is refused too
    sock = socket.create_connection(("127.0.0.1", ports["verify"]), timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        again = ctx.wrap_socket(sock, server_hostname="localhost", session=session)
        again.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        if not again.recv(65536):
            raise ConnectionError("closed")
    sock.close()

    # one audit line, however many workers applied it; the refusals name the status
    gw.wait_log("error", lambda r: r.get("reason") == "client_revoked")
    audit = [r for r in gw.lines("error") if r.get("reason") == "revocation_added"]
    assert len(audit) == 1 and audit[0]["serial"] == _hex(serial)
    assert audit[0]["reason"] == "revocation_added" and "laptop stolen" in json.dumps(audit[0])
    refusals = [r for r in gw.lines("error") if r.get("verify_status") == "Failed:ClientCertRevoked"]
    assert refusals, "a refused handshake is logged with its status"
    status, listing, _ = _api(ports["admin"], "GET", "/revocations")
    assert status == 200 and listing["count"] == 1
    assert listing["revocations"][0]["reason"] == "laptop stolen"

    # withdrawn: the client is admitted again, by every worker
    status, doc, _ = _api(ports["admin"], "DELETE", f"/revocations/main/{_hex(serial)}")
    assert status == 200, doc
    deadline = time.monotonic() + 2.0
    ok = 0
    while time.monotonic() < deadline and ok < 10:
        ok = ok + 1 if _get(ports["verify"], ctx) == 200 else 0
    assert ok == 10
    gw.stop()


def test_revocation_survives_reload_and_restart(setup):
    gw = setup["start"]()
    pki, ports, serial = setup["pki"], setup["ports"], setup["serial"]
    ctx = _ctx(pki)
    status, doc, _ = _api(ports["admin"], "POST", "/revocations",
                          {"trust_store": "main", "serial": _hex(serial), "reason": "incident 7"})
    assert status == 201, doc
    # the same again is not a second revocation
    status, doc, _ = _api(ports["admin"], "POST", "/revocations",
                          {"trust_store": "main", "serial": _hex(serial)})
    assert status == 200 and doc["created"] is False
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_log("error", lambda r: r.get("reason") == "reloaded", timeout=30)
    assert all(_get(ports["verify"], ctx) == 0 for _ in range(6))
    assert gw.stop() == 0
    journal = setup["dir"] / "state" / "revocations.jsonl"
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
    gw = setup["start"]()
    assert all(_get(ports["verify"], ctx) == 0 for _ in range(6))
    status, listing, _ = _api(ports["admin"], "GET", f"/revocations?trust_store=main")
    assert listing["count"] == 1 and listing["revocations"][0]["reason"] == "incident 7"
    gw.stop()
