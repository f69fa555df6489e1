"""Running as a service: sd_notify on a real AF_UNIX socket, socket activation through
systemd-socket-activate, SIGHUP reloads (good and broken), SIGTERM drain, SIGUSR1 log reopen."""
from __future__ import annotations

import http.client
import json
import os
import shutil
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

from .conftest import NATIVE_OVERRIDE, free_port, native_setting, start_echo, wait_port

pytestmark = pytest.mark.integration


def _config(d: Path, pki: Path, port: int, body: str, *, echo_port: int | None = None, extra: str = "") -> str:
    """Two workers, a verify listener answering `body` (and forwarding /up/* to `echo_port`);
    `extra` goes into [gateway] (TOML lines)."""
    head = testing.toml({"gateway": {"workers": 2, **testing.log_settings(d), "drain_timeout_s": 20}})
    rules = [testing.forward("echo", path="/up/*")] if echo_port else []
    rest = testing.toml({
        "listener": [testing.listener("svc", port, pki / "server.pem", pki / "server.key", mtls="verify",
                                      rules=[*rules, testing.fixed_response(body=body)])],
        "trust_store": {"main": {"ca_bundle": pki / "ca-bundle.pem",
                                 "crls": [pki / "crl-root.pem", pki / "crl-intermediate.pem"]}},
        "target_group": {"echo": {"targets": [f"127.0.0.1:{echo_port}"]}} if echo_port else None,
    })
    return f"{head}{extra}\n{native_setting(extra)}\n{rest}"


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line in m.split("\n") for m in self.messages):
                return
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError(f"no {line!r} on the notify socket; got {self.messages}")

    def clear(self) -> None:
        self.messages.clear()


def _ctx(pki: Path, client: str = "client1") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "root-ca.pem"))
    ctx.load_cert_chain(pki / "clients" / f"{client}.pem", pki / "clients" / f"{client}.key")
    return ctx


def _get(port: int, ctx, path: str = "/", conn=None) -> tuple[int, bytes]:
    own = conn is None
    if own:
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


@pytest.fixture
def pki_dir(tmp_path):
    d = tmp_path / "pki"
    subprocess.run([sys.executable, "-m", "gateway", "pki", "init", str(d)], check=True, capture_output=True)
    return d


def _start(tmp_path, config_text: str, env_extra: dict | None = None, argv_prefix=()):
    config = tmp_path / "gateway.toml"
    config.write_text(config_text)
    env = dict(os.environ, **(env_extra or {}))
    gateway = testing.GatewayProcess(config, command=[*argv_prefix, *testing.gateway_command(config)],
                                     wait=False, env=env)
    return gateway.proc, config


def _stop(proc) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def test_notify_ready_reloading_stopping_and_watchdog(tmp_path, pki_dir):
    notify = NotifySocket(tmp_path / "notify.sock")
    port = free_port()
    proc, config = _start(tmp_path, _config(tmp_path, pki_dir, port, "v1"),
                          {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    try:
        notify.wait_for("READY=1")
        assert _get(port, _ctx(pki_dir)) == (200, b"v1")
        notify.wait_for("WATCHDOG=1")
        notify.clear()
        config.write_text(_config(tmp_path, pki_dir, port, "v2"))
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        assert _get(port, _ctx(pki_dir)) == (200, b"v2")
        notify.clear()
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(30) == 0
    finally:
        _stop(proc)


def test_socket_activation(tmp_path, pki_dir):
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    port = free_port()
    text = _config(tmp_path, pki_dir, port, "activated")
    proc, _ = _start(tmp_path, text, argv_prefix=(activate, "-l", f"127.0.0.1:{port}", "--fdname=svc"))
    try:
        wait_port(port, proc)
        assert _get(port, _ctx(pki_dir)) == (200, b"activated")
        log = (tmp_path / "error.log").read_text()
        assert "socket_inherited" in log
    finally:
        assert _stop(proc) == 0


def _resume_get(port: int, ctx, session=None) -> tuple[bool, object, bytes]:
    """One request on a new TLS connection, offering `session`: (resumed, new session, response)."""
    return testing.https_get(port, ctx, session=session)


def _wait_generation(log: Path, generation: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and f"generation {generation} serving" not in log.read_text():
        time.sleep(0.05)
    assert f"generation {generation} serving" in log.read_text()


def test_sessions_resume_across_a_reload_that_keeps_the_tls_settings(tmp_path, pki_dir):
    """What the README promises: a reload with the same TLS settings keeps the ticket keys, so a
    returning client resumes; a reload that changes them costs one full handshake."""
    port = free_port()
    proc, config = _start(tmp_path, _config(tmp_path, pki_dir, port, "v1"))
    try:
        wait_port(port, proc)
        ctx = _ctx(pki_dir)
        reused, session, out = _resume_get(port, ctx)
        assert not reused and out.endswith(b"v1")
        config.write_text(_config(tmp_path, pki_dir, port, "v2"))      # rules change, TLS doesn't
        proc.send_signal(signal.SIGHUP)
        _wait_generation(tmp_path / "error.log", 1)
        reused, session, out = _resume_get(port, ctx, session)
        assert reused and out.endswith(b"v2")
        # now a TLS setting changes: new contexts, new ticket keys, one full handshake
        config.write_text(_config(tmp_path, pki_dir, port, "v3").replace(
            'mtls = "verify"', 'mtls = "verify"\nsession_timeout_s = 600'))
        proc.send_signal(signal.SIGHUP)
        _wait_generation(tmp_path / "error.log", 2)
        reused, session, out = _resume_get(port, ctx, session)
        assert not reused and out.endswith(b"v3")
        reused, session, out = _resume_get(port, ctx, session)
        assert reused and out.endswith(b"v3")
    finally:
        assert _stop(proc) == 0


def test_broken_reload_keeps_serving(tmp_path, pki_dir):
    port = free_port()
    proc, config = _start(tmp_path, _config(tmp_path, pki_dir, port, "old"))
    try:
        wait_port(port, proc)
        config.write_text(_config(tmp_path, pki_dir, port, "new").replace(
            'mtls = "verify"', 'mtls = "verfy"').replace("server.key", "missing.key"))
        proc.send_signal(signal.SIGHUP)
        log = tmp_path / "error.log"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "still serving the previous one" not in log.read_text():
            time.sleep(0.05)
        text = log.read_text()
        assert "still serving the previous one" in text
        assert "listener[0].mtls" in text and "listener[0].certificates[0].key" in text
        for _ in range(5):
            assert _get(port, _ctx(pki_dir)) == (200, b"old")
    finally:
        assert _stop(proc) == 0


def test_reload_under_load_fails_nothing(tmp_path, pki_dir):
    """Continuous new connections and keep-alive requests across three reloads: zero failures."""
    port = free_port()
    proc, config = _start(tmp_path, _config(tmp_path, pki_dir, port, "gen0"))
    wait_port(port, proc)
    ctx = _ctx(pki_dir)
    stop = threading.Event()
    results = {"ok": 0, "failed": [], "bodies": set()}

    def new_connections():
        while not stop.is_set():
            try:
                status, body = _get(port, ctx)
                assert status == 200
                results["ok"] += 1
                results["bodies"].add(body)
            except Exception as exc:       # every failure is counted, none is allowed
                results["failed"].append(repr(exc))

    def keep_alive():
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
        while not stop.is_set():
            try:
                status, body = _get(port, ctx, conn=conn)
                results["ok"] += 1
                results["bodies"].add(body)
                if status != 200:
                    results["failed"].append(status)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the server closed an idle keep-alive connection (close_notify) during the roll:
                # a client may retry an idempotent request on a new connection, as browsers do
                conn.close()
                conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
            except Exception as exc:
                results["failed"].append(repr(exc))
        conn.close()

    threads = [threading.Thread(target=new_connections) for _ in range(2)] + [threading.Thread(target=keep_alive)]
    for t in threads:
        t.start()
    try:
        for gen in (1, 2, 3):
            time.sleep(0.5)
            config.write_text(_config(tmp_path, pki_dir, port, f"gen{gen}"))
            proc.send_signal(signal.SIGHUP)
            log = tmp_path / "error.log"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and f"generation {gen} serving" not in log.read_text():
                time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        code = _stop(proc)
    assert results["failed"] == []
    assert results["ok"] > 50
    assert b"gen3" in results["bodies"] and b"gen0" in results["bodies"]
    assert code == 0


def test_drain_finishes_in_flight_request(tmp_path, pki_dir):
    echo = start_echo()
    port = free_port()
    proc, _ = _start(tmp_path, _config(tmp_path, pki_dir, port, "x", echo_port=echo.port))
    try:
        wait_port(port, proc)
        result = {}

        def slow():
            result["value"] = _get(port, _ctx(pki_dir), "/up/delay/1500")

        t = threading.Thread(target=slow)
        t.start()
        log = tmp_path / "connection.log"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not log.exists() or "accepted" not in log.read_text()):
            time.sleep(0.02)
        time.sleep(0.2)        # the request is now with the upstream
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert result["value"][0] == 200
        assert json.loads(result["value"][1])["target"] == "/up/delay/1500"
        assert proc.wait(30) == 0
    finally:
        _stop(proc)
        echo.stop()


def test_sigusr1_reopens_logs(tmp_path, pki_dir):
    port = free_port()
    proc, _ = _start(tmp_path, _config(tmp_path, pki_dir, port, "x"))
    try:
        wait_port(port, proc)
        assert _get(port, _ctx(pki_dir))[0] == 200
        access = tmp_path / "access.log"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not access.read_text():
            time.sleep(0.02)
        access.rename(tmp_path / "access.log.1")
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _get(port, _ctx(pki_dir))
            if access.exists() and access.read_text():
                break
            time.sleep(0.1)
        assert access.exists() and '"status":200' in access.read_text()
    finally:
        assert _stop(proc) == 0


def _admin_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_admin_metrics_move_with_traffic(tmp_path, pki_dir):
    port, admin, port2 = free_port(), free_port(), free_port()
    # a second listener on the same trust store shares its verified-chain cache: the cache's
    # lookups are counted once, under the store's name, not once per listener
    second = testing.toml({"listener": [testing.listener("svc2", port2, pki_dir / "server.pem", pki_dir / "server.key",
                                                         mtls="verify", rules=[testing.fixed_response(body="m2")])]})
    proc, _ = _start(tmp_path, _config(tmp_path, pki_dir, port, "m") + second
                     + f'\n[admin]\nbind = "127.0.0.1:{admin}"\n')
    try:
        wait_port(port, proc)
        wait_port(port2, proc)
        wait_port(admin, proc)
        assert _admin_get(admin, "/healthz") == (200, b"ok\n")
        assert _admin_get(admin, "/readyz")[0] == 200
        status, before = _admin_get(admin, "/metrics")
        assert status == 200
        before = before.decode()
        for _ in range(6):
            assert _get(port, _ctx(pki_dir))[0] == 200
        bad = ssl.create_default_context(cafile=str(pki_dir / "root-ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _get(port, bad)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = _admin_get(admin, "/metrics")[1].decode()
            lookups = _metric(after, "mtls_gateway_chain_cache_total")
            if _metric(after, "mtls_gateway_handshakes_total", result="refused") >= 1 and lookups >= 6:
                break
            time.sleep(0.2)
        ok = _metric(after, "mtls_gateway_handshakes_total", listener="svc", result="accepted",
                     verify_status="Success")
        assert ok - _metric(before, "mtls_gateway_handshakes_total", result="accepted") == 6
        assert _metric(after, "mtls_gateway_handshakes_total", result="refused",
                       verify_status="Failed:ClientCertNotFound") == 1
        assert _metric(after, "mtls_gateway_requests_total", listener="svc", status="200") == 6
        # two workers, one cache each: the first handshake on each worker misses, the rest hit
        assert _metric(after, "mtls_gateway_chain_cache_total") == 6
        assert _metric(after, "mtls_gateway_chain_cache_total", trust_store="main") == 6
        assert 4 <= _metric(after, "mtls_gateway_chain_cache_total", result="hit") <= 5
        assert _metric(after, "mtls_gateway_chain_cache_total", listener="svc") == 0
        assert _metric(after, "mtls_gateway_trust_store_generation", trust_store="main") == 0
        assert "mtls_gateway_handshake_seconds_bucket" in after
        report = json.loads(_admin_get(admin, "/certificates")[1])
        listener = report["listeners"][0]
        assert len(report["listeners"]) == 2
        assert listener["certificates"][0]["names"] and listener["certificates"][0]["not_after"]
        [store] = report["trust_stores"]
        assert len(store["cas"]) == 2 and len(store["crls"]) == 2
    finally:
        assert _stop(proc) == 0


def test_alb_connection_log_format(tmp_path, pki_dir):
    port = free_port()
    proc, _ = _start(tmp_path, _config(tmp_path, pki_dir, port, "x", extra='connection_log_format = "alb"'))
    try:
        wait_port(port, proc)
        assert _get(port, _ctx(pki_dir))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _get(port, ssl.create_default_context(cafile=str(pki_dir / "root-ca.pem")))
        log = tmp_path / "connection.log"
        deadline = time.monotonic() + 10
        import shlex
        while time.monotonic() < deadline:
            # (the readiness probe's bare TCP connection is logged too, with "-" for every TLS field)
            lines = [shlex.split(l) for l in log.read_text().splitlines()]
            lines = [f for f in lines if f[10] != "-"]
            if len(lines) >= 2:
                break
            time.sleep(0.05)
        ok, refused = lines[:2]
        assert len(ok) == 12 and len(refused) == 12
        assert ok[1] == "127.0.0.1" and ok[3] == str(port) and ok[4] in ("TLSv1.3", "TLSv1.2")
        assert ok[7] == "CN=client1,O=mtls-gateway dev" and ok[8].startswith("NotBefore=")
        assert ok[10] == "Success" and ok[11].startswith("TID_")
        assert refused[10] == "Failed:ClientCertNotFound" and refused[7] == "-"
    finally:
        assert _stop(proc) == 0


def test_watch_files_reloads_a_new_crl(tmp_path, pki_dir):
    """A CRL that revokes a client is written to disk: new handshakes of that client fail, others
    keep working, with no signal sent."""
    port = free_port()
    subprocess.run([sys.executable, "-m", "gateway", "pki", "issue-client", str(pki_dir), "carol"],
                   check=True, capture_output=True)
    proc, _ = _start(tmp_path, _config(tmp_path, pki_dir, port, "x",
                                       extra="watch_files = true\nwatch_interval_s = 0.2"))
    try:
        wait_port(port, proc)
        assert _get(port, _ctx(pki_dir, "carol"))[0] == 200
        subprocess.run([sys.executable, "-m", "gateway", "pki", "revoke", str(pki_dir), "carol"],
                       check=True, capture_output=True)
        log = tmp_path / "error.log"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "generation 1 serving" not in log.read_text():
            time.sleep(0.05)
        assert "watched files changed" in log.read_text()
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _get(port, _ctx(pki_dir, "carol"))
        assert _get(port, _ctx(pki_dir))[0] == 200
    finally:
        assert _stop(proc) == 0


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    exe = shutil.which("mtls-gateway") or "/usr/local/bin/mtls-gateway"
    for unit in ("mtls-gateway.service", "mtls-gateway.socket"):
        text = (deploy / unit).read_text().replace("/usr/local/bin/mtls-gateway", exe)
        (tmp_path / unit).write_text(text)
    service = (tmp_path / "mtls-gateway.service").read_text()
    for setting in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=", "User=mtls-gateway",
                    "ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                    "PrivateTmp=yes"):
        assert setting in service
    r = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "mtls-gateway.service"),
                        str(tmp_path / "mtls-gateway.socket")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "mtls-gateway" not in r.stderr, r.stderr      # no warning about our units


def test_reload_under_load_with_certificate_rotation_and_a_crl(tmp_path, pki_dir):
    """Under continuous load: the server certificate is replaced and a CRL revokes a client that
    holds an open keep-alive connection, then SIGHUP. Nothing fails; the new certificate is served
    to new connections; the revoked client's live connection finishes on the state it was admitted
    under, and its next handshake is refused."""
    from gateway import pki
    subprocess.run([sys.executable, "-m", "gateway", "pki", "issue-client", str(pki_dir), "eve"],
                   check=True, capture_output=True)
    port = free_port()
    proc, config = _start(tmp_path, _config(tmp_path, pki_dir, port, "ok"))
    wait_port(port, proc)
    ctx = _ctx(pki_dir)
    eve_conn = http.client.HTTPSConnection("localhost", port, context=_ctx(pki_dir, "eve"), timeout=30)
    assert _get(port, None, conn=eve_conn) == (200, b"ok")
    stop = threading.Event()
    results = {"ok": 0, "failed": []}

    def load():
        while not stop.is_set():
            try:
                assert _get(port, ctx)[0] == 200
                results["ok"] += 1
            except Exception as exc:
                results["failed"].append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        inter = pki.load_issued(pki_dir / "intermediate-ca.pem", pki_dir / "intermediate-ca.key")
        new_server = pki.make_server(inter, ["localhost", "127.0.0.1"])
        new_server.write(pki_dir / "server.pem.new", pki_dir / "server.key.new")
        os.replace(pki_dir / "server.key.new", pki_dir / "server.key")
        os.replace(pki_dir / "server.pem.new", pki_dir / "server.pem")
        subprocess.run([sys.executable, "-m", "gateway", "pki", "revoke", str(pki_dir), "eve"],
                       check=True, capture_output=True)
        proc.send_signal(signal.SIGHUP)
        log = tmp_path / "error.log"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "generation 1 serving" not in log.read_text():
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    try:
        assert results["failed"] == [] and results["ok"] > 20
        # new connections see the new server certificate
        with socket.create_connection(("127.0.0.1", port)) as sock:
            with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                served = tls.getpeercert(binary_form=True)
        assert served == new_server.der
        # eve's idle keep-alive connection was closed with close_notify when its worker retired;
        # any new handshake of hers is refused under the new CRL
        eve_conn.sock.settimeout(5)
        assert eve_conn.sock.recv(1) == b""
        eve_conn.close()
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _get(port, _ctx(pki_dir, "eve"))
    finally:
        assert _stop(proc) == 0


def test_shutdown_delay_answers_not_ready_while_accepting_then_refuses(tmp_path, pki_dir):
    """SIGTERM with shutdown_delay_s: /readyz is 503 at once, handshakes and requests still succeed
    for the delay (the balancer's health check takes the instance out meanwhile), then the drain:
    a new connection is refused at once, not left in a backlog."""
    port, admin = free_port(), free_port()
    proc, _ = _start(tmp_path, _config(tmp_path, pki_dir, port, "leaving", extra="shutdown_delay_s = 1.5\n")
                     + f'\n[admin]\nbind = "127.0.0.1:{admin}"\n')
    try:
        wait_port(port, proc)
        wait_port(admin, proc)
        assert _admin_get(admin, "/readyz") == (200, b"ready\n")
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        deadline = sent + 5
        while _admin_get(admin, "/readyz")[0] != 503:
            assert time.monotonic() < deadline, "readyz never went to 503"
        answered = 0
        while time.monotonic() - sent < 1.2:     # well inside the delay
            assert _get(port, _ctx(pki_dir)) == (200, b"leaving")
            answered += 1
        assert answered > 0
        assert _admin_get(admin, "/readyz") == (503, b"draining\n")
        # after the delay: refused (ECONNREFUSED) while the master is still there or already gone
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.settimeout(2)
                    assert time.monotonic() < deadline, "still accepting 10 s after the delay"
            except ConnectionRefusedError:
                break
            time.sleep(0.02)
        assert time.monotonic() - sent >= 1.5
        assert proc.wait(30) == 0
        log = (tmp_path / "error.log").read_text()
        assert "accepting for 1.5 s while load balancers take this instance out" in log
    finally:
        _stop(proc)


def test_readyz_stays_200_across_a_reload(tmp_path, pki_dir):
    """During a reload the old workers drain; they must not answer /readyz (503) for the instance."""
    port, admin = free_port(), free_port()
    proc, config = _start(tmp_path, _config(tmp_path, pki_dir, port, "r0")
                          + f'\n[admin]\nbind = "127.0.0.1:{admin}"\n')
    echo = start_echo()
    try:
        wait_port(port, proc)
        wait_port(admin, proc)
        # a slow in-flight request keeps an old worker draining across the reload
        slow = threading.Thread(target=lambda: _get(port, _ctx(pki_dir), "/up/delay/1500"))
        config.write_text(_config(tmp_path, pki_dir, port, "r1", echo_port=echo.port)
                          + f'\n[admin]\nbind = "127.0.0.1:{admin}"\n')
        proc.send_signal(signal.SIGHUP)
        _wait_generation(tmp_path / "error.log", 1)
        slow.start()
        time.sleep(0.1)
        config.write_text(_config(tmp_path, pki_dir, port, "r2", echo_port=echo.port)
                          + f'\n[admin]\nbind = "127.0.0.1:{admin}"\n')
        proc.send_signal(signal.SIGHUP)
        statuses = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            statuses.append(_admin_get(admin, "/readyz")[0])
        slow.join(30)
        _wait_generation(tmp_path / "error.log", 2)
        assert set(statuses) == {200}, statuses.count(503)
    finally:
        _stop(proc)
        echo.stop()


def test_admin_listener_cuts_silent_and_slow_peers_and_caps_connections(tmp_path, pki_dir):
    port, admin = free_port(), free_port()
    gateway: dict = {"workers": 1, **testing.log_settings(tmp_path)}
    if NATIVE_OVERRIDE:
        gateway["native"] = NATIVE_OVERRIDE
    text = testing.toml({
        "gateway": gateway,
        "admin": {"bind": f"127.0.0.1:{admin}", "idle_timeout_s": 0.5, "max_connections": 3},
        "listener": [testing.listener("svc", port, pki_dir / "server.pem", pki_dir / "server.key")],
    })
    proc, _ = _start(tmp_path, text)
    try:
        wait_port(admin, proc)
        assert _admin_get(admin, "/readyz")[0] == 200

        def closed_after(sock: socket.socket) -> float:
            began = time.monotonic()
            sock.settimeout(10)
            try:
                while sock.recv(1024):
                    pass
            except ConnectionResetError:
                pass
            return time.monotonic() - began

        # silent: cut at the idle timeout, not before
        with socket.create_connection(("127.0.0.1", admin)) as silent:
            assert 0.4 <= closed_after(silent) < 5
        # slow: a byte every 0.1 s of a request that would take 3 s is cut at the same bound
        with socket.create_connection(("127.0.0.1", admin)) as slow:
            began = time.monotonic()
            try:
                for b in b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n":
                    slow.send(bytes([b]))
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert time.monotonic() - began < 2.5
        # a keep-alive client gets its own time per request
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        for _ in range(3):
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b"ok\n"
            time.sleep(0.3)
        conn.close()
        # capped: three held, the fourth is closed at once and the refusal logged
        held = [socket.create_connection(("127.0.0.1", admin)) for _ in range(3)]
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", admin)) as extra:
            assert closed_after(extra) < 0.3
        for s in held:
            s.close()
        deadline = time.monotonic() + 5
        while _admin_get(admin, "/readyz")[0] != 200:
            assert time.monotonic() < deadline
        log = (tmp_path / "error.log").read_text()
        assert "admin_connection_refused" in log and "admin_timeout" in log
    finally:
        assert _stop(proc) == 0
