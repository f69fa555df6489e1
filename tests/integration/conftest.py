"""Real processes on 127.0.0.1: the gateway (`python -m gateway run`), backends, real clients."""
from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import testing

# the launcher, its readiness and the ports are gateway.testing's, shared with bench and the demo
free_port, wait_port = testing.free_port, testing.wait_port


def client_ctx(test_pki, client: str | None = None) -> ssl.SSLContext:
    """A client context trusting the test PKI's root, with `client`'s certificate when named."""
    ctx = ssl.create_default_context(cafile=str(test_pki.root_pem))
    if client is not None:
        c = test_pki.clients[client]
        ctx.load_cert_chain(c.cert, c.key)
    return ctx


def tls_get(port: int, ctx, timeout: float = 10.0) -> bytes:
    """A new TLS connection to 127.0.0.1:`port`, one `GET /` with Connection: close; the whole
    response as it came."""
    return testing.https_get(port, ctx, timeout=timeout)[2]


@dataclass
class Backend:
    port: int
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_echo(port: int | None = None) -> Backend:
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.echo", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return Backend(port, proc)


@pytest.fixture(scope="session")
def echo_backend():
    backend = start_echo()
    yield backend
    backend.stop()


class Gateway(testing.GatewayProcess):
    """A gateway the tests start in directory `d`, its access, connection and error logs there."""

    def __init__(self, d: Path, config: Path, ports: dict[str, int], **kw) -> None:
        self.dir = d
        super().__init__(config, ports, logs=testing.logs_in(d), wait=False, **kw)


# MTLS_GATEWAY_TEST_NATIVE=on|off|auto runs every gateway the tests start with that `native`
# setting, unless the test chose its own: the whole suite once per twin (CI runs both)
NATIVE_OVERRIDE = os.environ.get("MTLS_GATEWAY_TEST_NATIVE", "")


def native_setting(gateway_toml: str) -> str:
    """The `[gateway]` line that applies NATIVE_OVERRIDE, or "" (unset, or the test sets one)."""
    if not NATIVE_OVERRIDE or re.search(r"(?m)^\s*native\s*=", gateway_toml):
        return ""
    return f'native = "{NATIVE_OVERRIDE}"\n'


@pytest.fixture
def gateway_factory(tmp_path):
    started: list[Gateway] = []

    def start(listeners: str, extra: str = "", names: list[str] | None = None, gateway: str = "") -> Gateway:
        """`listeners` is TOML with {port_NAME} placeholders; a free port is chosen for each name."""
        names = names or []
        ports = dict(zip(names, testing.free_ports(len(names))))
        d = tmp_path / f"gw{len(started)}"
        d.mkdir()
        head = testing.toml({"gateway": {**testing.log_settings(d), "log_level": "debug"}})
        text = (f'{head}{gateway}\n{native_setting(gateway)}'
                + listeners.format(**{f"port_{n}": p for n, p in ports.items()}) + "\n" + extra)
        config = d / "gateway.toml"
        config.write_text(text)
        gw = Gateway(d, config, ports)
        started.append(gw)
        gw.wait_ready()
        return gw

    yield start
    for gw in started:
        code = gw.stop()
        assert code == 0, f"gateway exited with {code}: {gw.stderr_tail()}"
