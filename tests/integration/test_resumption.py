"""Session resumption across worker processes, identity kept, revocation enforced on every resume,
ticket-key rotation by rolling workers, and a worker killed under load."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway import testing

from .conftest import free_port, native_setting, start_echo

pytestmark = pytest.mark.integration


def _config(d: Path, pki: Path, ports: dict, echo_port: int, *, extra: str = "", workers: int = 2,
            deny: str = "") -> str:
    """`extra` goes into [gateway], `deny` into the trust store (TOML lines)."""
    cert = (pki / "server.pem", pki / "server.key")
    head = testing.toml({"gateway": {"workers": workers, **testing.log_settings(d)}})
    body = testing.toml({
        "listener": [testing.listener("verify", ports["verify"], *cert, mtls="verify", header_style=["alb", "xfcc"],
                                      rules=[testing.forward("echo")]),
                     testing.listener("passthrough", ports["passthrough"], *cert, mtls="passthrough",
                                      rules=[testing.forward("echo")])],
        "trust_store": {"main": {"ca_bundle": pki / "ca-bundle.pem",
                                 "crls": [pki / "crl-root.pem", pki / "crl-intermediate.pem"]}},
    })
    groups = testing.toml({"target_group": {"echo": {"targets": [f"127.0.0.1:{echo_port}"]}}})
    return f"{head}{extra}\n{native_setting(extra)}{body}{deny}\n{groups}"


@pytest.fixture
def setup(tmp_path):
    pki = tmp_path / "pki"
    subprocess.run([sys.executable, "-m", "gateway", "pki", "init", str(pki)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "gateway", "pki", "issue-client", str(pki), "dora"],
                   check=True, capture_output=True)
    echo = start_echo()
    ports = {"verify": free_port(), "passthrough": free_port()}
    procs = []

    def start(**kw):
        config = tmp_path / "gateway.toml"
        config.write_text(_config(tmp_path, pki, ports, echo.port, **kw))
        gateway = testing.GatewayProcess(config, ports, wait=False)
        procs.append(gateway.proc)
        gateway.wait_ready()
        return gateway.proc, config

    yield pki, ports, start, tmp_path
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    echo.stop()


IDENTITY = ("x-amzn-mtls-clientcert", "x-amzn-mtls-clientcert-subject", "x-amzn-mtls-clientcert-serial-number",
            "x-amzn-mtls-clientcert-leaf", "x-forwarded-client-cert")


def _identity(body: bytes) -> dict:
    headers = {n.lower(): v for n, v in json.loads(body)["headers"]}
    return {k: headers.get(k) for k in IDENTITY}


def s_client(port: int, pki: Path, client: str, version: str, sess_out: Path | None = None,
             sess_in: Path | None = None) -> tuple[bool, bytes]:
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", f"-{version}", "-servername", "localhost",
            "-CAfile", str(pki / "root-ca.pem"), "-cert", str(pki / "clients" / f"{client}.pem"),
            "-key", str(pki / "clients" / f"{client}.key"), "-ign_eof"]
    if sess_out:
        args += ["-sess_out", str(sess_out)]
    if sess_in:
        args += ["-sess_in", str(sess_in)]
    r = subprocess.run(args, input=b"GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                       capture_output=True, timeout=30)
    out = r.stdout
    reused = b"\nReused, " in out
    # s_client interleaves its own report (a TLS 1.3 ticket arriving after the response is printed
    # with a hex dump) with the response, so the body is cut by the response's own Content-Length.
    start = out.find(b"HTTP/1.1 ")
    if start < 0 or b"\r\n\r\n" not in out[start:]:
        return reused, b""
    head, rest = out[start:].split(b"\r\n\r\n", 1)
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    return reused, rest[: int(m.group(1))] if m else b""


@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
@pytest.mark.parametrize("listener", ["verify", "passthrough"])
def test_openssl_sessions_resume_on_every_try_across_workers(setup, version, listener):
    pki, ports, start, tmp = setup
    start()
    sess = tmp / f"{listener}-{version}.sess"
    reused, body = s_client(ports[listener], pki, "dora", version, sess_out=sess)
    assert not reused and body
    first = _identity(body)
    assert first["x-amzn-mtls-clientcert" if listener == "passthrough" else "x-amzn-mtls-clientcert-subject"]
    for _ in range(10):
        reused, body = s_client(ports[listener], pki, "dora", version, sess_in=sess)
        assert reused, "not resumed"
        assert _identity(body) == first       # the same identity reaches the backend
    lines = [json.loads(l) for l in (tmp / "connection.log").read_text().splitlines()]
    mine = [l for l in lines if l["listener"] == listener and l["result"] == "accepted"]
    assert sum(1 for l in mine if l["resumed"]) == 10


def _py_get(port: int, ctx: ssl.SSLContext, session=None):
    return testing.https_get(port, ctx, session=session, tolerate_reset=True)


def _ctx(pki: Path, client: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "root-ca.pem"))
    ctx.load_cert_chain(pki / "clients" / f"{client}.pem", pki / "clients" / f"{client}.key")
    return ctx


def test_revoked_between_resumptions_is_refused_then_full_handshake_fails(setup):
    pki, ports, start, tmp = setup
    proc, config = start()
    ctx = _ctx(pki, "dora")
    reused, session, data = _py_get(ports["verify"], ctx)
    assert not reused and data.startswith(b"HTTP/1.1 200")
    reused, session2, data = _py_get(ports["verify"], ctx, session)
    assert reused and data.startswith(b"HTTP/1.1 200")
    # revoke dora with a real CRL and reload: the TLS contexts (and ticket keys) stay, the trust
    # store is new
    subprocess.run([sys.executable, "-m", "gateway", "pki", "revoke", str(pki), "dora"], check=True,
                   capture_output=True)
    proc.send_signal(signal.SIGHUP)
    log = tmp / "error.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "generation 1 serving" not in log.read_text():
        time.sleep(0.05)
    # the resumption is refused inside the handshake, before the ServerHello, with the alert of
    # the status: the client completes no handshake, gets no new ticket, sends no request
    with pytest.raises(ssl.SSLError) as refused_alert:
        _py_get(ports["verify"], ctx, session2)
    assert refused_alert.value.reason == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    deadline = time.monotonic() + 5
    refused = []
    while time.monotonic() < deadline and not refused:
        lines = [json.loads(l) for l in (tmp / "connection.log").read_text().splitlines()]
        refused = [l for l in lines if l["reason"] == "resumed_client_refused"]
        time.sleep(0.05)
    assert refused and refused[0]["tls_verify_status"] == "Failed:ClientCertCrlHit"
    assert not any(l["result"] == "accepted" and l["resumed"] for l in lines[-len(refused):])
    # the next handshake is a full one, and it fails
    with pytest.raises((ssl.SSLError, ConnectionError)):
        r, _, data = _py_get(ports["verify"], ctx)
        if not data:
            raise ConnectionError("refused")
    # other clients are unaffected
    assert _py_get(ports["verify"], _ctx(pki, "client1"))[2].startswith(b"HTTP/1.1 200")


def test_ticket_rotation_by_rolling_workers(setup):
    """Resumption before, during and after a rotation: every request succeeds; after a rotation a
    returning client pays one full handshake, then resumes again."""
    pki, ports, start, tmp = setup
    start(extra="ticket_rotation_s = 3")
    ctx = _ctx(pki, "dora")
    reused, session, data = _py_get(ports["verify"], ctx)
    samples = []            # (time, reused)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 8:
        reused, new, data = _py_get(ports["verify"], ctx, session)
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        samples.append((time.monotonic() - t0, reused))
        session = new
        time.sleep(0.02)
    rotations = (tmp / "error.log").read_text().count("ticket key rotation: generation")
    assert rotations >= 1
    full = [t for t, r in samples if not r]
    rate = sum(1 for _, r in samples if r) / len(samples)
    print(f"\nresumption: {len(samples)} tries, {rate:.1%} resumed, {rotations} rotation(s), "
          f"full handshakes at {[round(t, 2) for t in full]}")
    assert rate > 0.8
    assert 1 <= len(full) <= 4 * rotations        # a rotation costs each worker's clients one full handshake


def test_worker_killed_under_load(setup):
    pki, ports, start, tmp = setup
    proc, _ = start()
    ctx = _ctx(pki, "client1")
    stop = threading.Event()
    outcomes = {"ok": 0, "failed": 0}

    def load():
        while not stop.is_set():
            try:
                reused, _, data = _py_get(ports["verify"], ctx)
                if data.startswith(b"HTTP/1.1 200"):
                    outcomes["ok"] += 1
                else:
                    outcomes["failed"] += 1
            except OSError:
                outcomes["failed"] += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    log = tmp / "error.log"
    pids = [json.loads(l)["pid"] for l in log.read_text().splitlines() if "worker_started" in l]
    os.kill(pids[0], signal.SIGKILL)
    killed_at = time.monotonic()
    while time.monotonic() - killed_at < 5 and log.read_text().count("worker_started") < 3:
        time.sleep(0.01)
    replaced_in = time.monotonic() - killed_at
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert log.read_text().count("worker_started") == 3
    assert replaced_in < 1.0, replaced_in
    # only requests in flight on the killed worker may fail: at most one per client thread
    assert outcomes["failed"] <= len(threads), outcomes
    assert outcomes["ok"] > 20


# -- a resumption forwards the chain of its own session -------------------------------------------
# Client A sends dora's leaf and the intermediate, client B the same leaf alone. OpenSSL restores
# only the leaf on resumption, so a chain looked up by leaf is whichever the last full handshake of
# that leaf presented: each session must get its own, on whichever worker it lands.
def _pem_blocks(path: Path) -> list[bytes]:
    text = path.read_bytes()
    return [b"-----BEGIN CERTIFICATE-----" + part.split(b"-----END CERTIFICATE-----")[0]
            + b"-----END CERTIFICATE-----\n" for part in text.split(b"-----BEGIN CERTIFICATE-----")[1:]]


def _chains(pki: Path) -> dict:
    """name -> (certificate file, intermediates file or None, the chain presented as DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    leaf_pem, inter_pem = _pem_blocks(pki / "clients" / "dora.pem")
    (pki / "clients" / "dora-leaf.pem").write_bytes(leaf_pem)
    (pki / "clients" / "dora-inter.pem").write_bytes(inter_pem)
    der = [x509.load_pem_x509_certificate(p).public_bytes(Encoding.DER) for p in (leaf_pem, inter_pem)]
    return {"A": (pki / "clients" / "dora.pem", pki / "clients" / "dora-inter.pem", tuple(der)),
            "B": (pki / "clients" / "dora-leaf.pem", None, (der[0],))}


def _expect(listener: str, chain: tuple[bytes, ...]) -> tuple[str, str]:
    """(header, what its value must be, or contain) for the chain."""
    from gateway import headers
    pems = b"".join(headers.pem(d) for d in chain)
    if listener == "passthrough":
        return "x-amzn-mtls-clientcert", headers.quote_pem_alb(pems).decode()
    return "x-forwarded-client-cert", 'Chain="' + headers.quote_pem_envoy(pems).decode() + '"'


def _forwards(listener: str, body: bytes, chain: tuple[bytes, ...]) -> bool:
    name, want = _expect(listener, chain)
    got = _identity(body)[name] or ""
    return got == want if listener == "passthrough" else want in got


def _workers(tmp: Path) -> list[int]:
    log = tmp / "error.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [json.loads(l)["pid"] for l in log.read_text().splitlines() if "worker_started" in l]
        if len(pids) >= 2:
            return pids
        time.sleep(0.05)
    raise AssertionError("two workers did not start")


def _worker_of(sock: socket.socket, pids: list[int]) -> int | None:
    """The worker holding the server side of this connection (/proc/net/tcp, then its fds)."""
    local, remote = sock.getsockname()[1], sock.getpeername()[1]
    want = (f"0100007F:{remote:04X}", f"0100007F:{local:04X}")
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if (f[1], f[2]) == want:
            inode = f[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                pass
    return None


def _get_on(port: int, ctx: ssl.SSLContext, session, pids: list[int]):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = ctx.wrap_socket(sock, server_hostname="localhost", session=session)
    worker = _worker_of(tls, pids)
    tls.sendall(b"GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = b""
    try:
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, ConnectionError):
        pass
    reused, new_session = tls.session_reused, tls.session
    tls.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    return reused, new_session, worker, body[: int(m.group(1))] if m else body


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
                         ids=["tls1_3", "tls1_2"])
@pytest.mark.parametrize("listener", ["verify", "passthrough"])
def test_each_session_resumes_with_its_own_chain_on_either_worker(setup, version, listener):
    pki, ports, start, tmp = setup
    start()
    pids = _workers(tmp)
    chains = _chains(pki)
    ctxs, sessions = {}, {}
    for name, (cert, _, chain) in chains.items():
        ctx = ssl.create_default_context(cafile=str(pki / "root-ca.pem"))
        ctx.minimum_version = ctx.maximum_version = version
        ctx.load_cert_chain(cert, pki / "clients" / "dora.key")
        ctxs[name] = ctx
    # both full handshakes first: B, the same leaf alone, comes after A
    for name in ("A", "B"):
        reused, sessions[name], _, body = _get_on(ports[listener], ctxs[name], None, pids)
        assert not reused and _forwards(listener, body, chains[name][2]), (name, _identity(body))
    # then resume each on each worker in turn: the workers share one accept queue, so with one of
    # them stopped (SIGSTOP) the other takes the connection; every resumption carries its own
    # session's chain, whichever worker did the full handshake
    seen = {"A": set(), "B": set()}
    for _ in range(2):
        for stopped, serving in ((pids[0], pids[1]), (pids[1], pids[0])):
            os.kill(stopped, signal.SIGSTOP)
            try:
                for name in ("A", "B"):
                    reused, new, worker, body = _get_on(ports[listener], ctxs[name], sessions[name],
                                                        pids)
                    assert reused, f"{name} did not resume"
                    assert worker == serving, (name, worker, serving)
                    assert _forwards(listener, body, chains[name][2]), (name, worker, _identity(body))
                    seen[name].add(worker)
                    sessions[name] = new    # TLS 1.3: the ticket the resumption issued
            finally:
                os.kill(stopped, signal.SIGCONT)
    assert all(s == set(pids[:2]) for s in seen.values()), seen


@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
@pytest.mark.parametrize("listener", ["verify", "passthrough"])
def test_openssl_sessions_of_one_leaf_keep_their_chains(setup, version, listener):
    """The same with s_client: A sends -cert_chain, B the leaf alone; -sess_in/-sess_out."""
    pki, ports, start, tmp = setup
    start()
    chains = _chains(pki)

    def run(name, sess_in=None):
        cert, inter, chain = chains[name]
        args = ["openssl", "s_client", "-connect", f"127.0.0.1:{ports[listener]}", f"-{version}",
                "-servername", "localhost", "-CAfile", str(pki / "root-ca.pem"), "-cert", str(cert),
                "-key", str(pki / "clients" / "dora.key"), "-ign_eof",
                "-sess_out", str(tmp / f"{name}.sess")]
        if inter is not None:
            args += ["-cert_chain", str(inter)]
        if sess_in:
            args += ["-sess_in", str(sess_in)]
        r = subprocess.run(args, input=b"GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                           capture_output=True, timeout=30)
        out = r.stdout
        start_at = out.find(b"HTTP/1.1 ")
        head, _, rest = out[start_at:].partition(b"\r\n\r\n")
        m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
        return b"\nReused, " in out, rest[: int(m.group(1))] if m else b""

    for name in ("A", "B"):
        reused, body = run(name)
        assert not reused and _forwards(listener, body, chains[name][2]), (name, _identity(body))
    for _ in range(4):
        for name in ("A", "B"):
            sess = tmp / f"{name}-in.sess"
            sess.write_bytes((tmp / f"{name}.sess").read_bytes())
            reused, body = run(name, sess_in=sess)
            assert reused, f"{name} did not resume"
            assert _forwards(listener, body, chains[name][2]), (name, _identity(body))
