"""The command line for real: `pki init / issue-client / revoke`, `check`, and a gateway started on
the files they make, with a worker pool."""
from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import http.client

import pytest

from gateway import native as native_switch
from gateway import testing

from .conftest import free_port, wait_port

pytestmark = pytest.mark.integration


def gw(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=60, **kw)


def _get(port: int, ctx: ssl.SSLContext) -> int:
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def test_pki_commands_and_a_gateway_on_their_files(tmp_path):
    d = tmp_path / "pki"
    r = gw("pki", "init", str(d))
    assert r.returncode == 0, r.stderr
    assert (d / "ca-bundle.pem").exists() and (d / "clients" / "client1.key").stat().st_mode & 0o777 == 0o600
    assert gw("pki", "init", str(d)).returncode != 0            # refuses to overwrite
    assert gw("pki", "issue-client", str(d), "bob").returncode == 0
    assert gw("pki", "issue-client", str(d), "bad/name").returncode != 0
    # the printed snippet is a working configuration
    snippet = r.stdout.split("A configuration using these files:", 1)[1]
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\naccess_log = "off"\nconnection_log = "off"\nworkers = 2\n'
                      + snippet.replace("127.0.0.1:8443", f"127.0.0.1:{port}"))
    r = gw("check", "--config", str(config))
    assert r.returncode == 0, r.stderr
    gateway = testing.GatewayProcess(config, [port], wait=False)
    try:
        gateway.wait_ready()
        ctx = ssl.create_default_context(cafile=str(d / "root-ca.pem"))
        ctx.load_cert_chain(d / "clients" / "bob.pem", d / "clients" / "bob.key")
        assert _get(port, ctx) == 200
    finally:
        assert gateway.stop(timeout=20) == 0
    # revoke bob: a gateway started on the new CRL refuses him, still serves client1
    assert gw("pki", "revoke", str(d), "bob").returncode == 0
    assert gw("pki", "revoke", str(d), "nobody").returncode != 0
    gateway = testing.GatewayProcess(config, [port], wait=False)
    try:
        gateway.wait_ready()
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _get(port, ctx)
        ok = ssl.create_default_context(cafile=str(d / "root-ca.pem"))
        ok.load_cert_chain(d / "clients" / "client1.pem", d / "clients" / "client1.key")
        assert _get(port, ok) == 200
    finally:
        assert gateway.stop(timeout=20) == 0


def test_workers_share_the_listener_and_a_dead_worker_is_replaced(tmp_path):
    d = tmp_path / "pki"
    assert gw("pki", "init", str(d)).returncode == 0
    port = free_port()
    config = tmp_path / "gateway.toml"
    errors = tmp_path / "error.log"
    testing.write_config(config, {
        "gateway": {"workers": 2, "access_log": "off", "connection_log": "off", "error_log": errors},
        "listener": [testing.listener("w", port, d / "server.pem", d / "server.key",
                                      rules=[testing.fixed_response(body="pid {}")])],
    })
    gateway = testing.GatewayProcess(config, [port], wait=False)
    try:
        gateway.wait_ready()
        ctx = ssl.create_default_context(cafile=str(d / "root-ca.pem"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and errors.read_text().count("worker_started") < 2:
            time.sleep(0.02)
        started = [l for l in errors.read_text().splitlines() if "worker_started" in l]
        assert len(started) == 2
        import json
        # the start-up log says which interpreter runs, and how it was built
        said = [json.loads(l) for l in errors.read_text().splitlines() if '"interpreter"' in l]
        assert len(said) == 1 and said[0]["build"] == native_switch.interpreter_build(), said
        assert said[0]["python"] == sys.version.split()[0]
        pids = [json.loads(l)["pid"] for l in started]
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and errors.read_text().count("worker_started") < 3:
            time.sleep(0.02)
        assert "worker_died" in errors.read_text()
        assert errors.read_text().count("worker_started") == 3
        for _ in range(10):
            assert _get(port, ctx) == 200
    finally:
        assert gateway.stop(timeout=20) == 0


# A gateway whose cryptography bindings lack one function of the native pump's (as a future
# release may): the start-up self-test finds it, says so once, and the pure twin serves.
_WITHOUT_A_PUMP_FUNCTION = r"""
import sys
from gateway import tlspump
tlspump.PUMP_FUNCTIONS = tlspump.PUMP_FUNCTIONS + ("SSL_function_removed_upstream",)
tlspump.NATIVE_PUMP = tlspump.load_native()
from gateway import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("native", ["auto", "on"])
def test_native_self_test_falls_back_with_one_line(tmp_path, native):
    d = tmp_path / "pki"
    r = gw("pki", "init", str(d))
    assert r.returncode == 0, r.stderr
    snippet = r.stdout.split("A configuration using these files:", 1)[1]
    port = free_port()
    errors = tmp_path / "error.log"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nnative = "{native}"\naccess_log = "off"\nconnection_log = "off"\n'
                      f'error_log = "{errors}"\nworkers = 1\n'
                      + snippet.replace("127.0.0.1:8443", f"127.0.0.1:{port}"))
    proc = subprocess.Popen([sys.executable, "-c", _WITHOUT_A_PUMP_FUNCTION, "run", "--config",
                             str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if native == "on":
        # asked for by name: no silent fallback, a clear refusal to start
        assert proc.wait(30) != 0
        err = proc.stderr.read().decode()
        assert "SSL_function_removed_upstream" in err, err
        return
    try:
        wait_port(port, proc)
        ctx = ssl.create_default_context(cafile=str(d / "root-ca.pem"))
        ctx.load_cert_chain(d / "clients" / "client1.pem", d / "clients" / "client1.key")
        assert _get(port, ctx) == 200
        lines = [l for l in errors.read_text().splitlines() if "native_fallback" in l]
        assert len(lines) == 1 and "SSL_function_removed_upstream" in lines[0], lines
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
