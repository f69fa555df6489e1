"""Real processes on 127.0.0.1: the gateway (`python -m gateway run`), backends, real clients."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port}")


def tls_get(port: int, ctx, timeout: float = 10.0) -> bytes:
    """A new TLS connection to 127.0.0.1:`port`, one `GET /` with Connection: close; the whole
    response as it came."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            out = b""
            while chunk := tls.recv(65536):
                out += chunk
            return out


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


@dataclass
class Gateway:
    dir: Path
    config: Path
    ports: dict[str, int]
    proc: subprocess.Popen
    access_log: Path
    connection_log: Path
    error_log: Path

    def port(self, name: str) -> int:
        return self.ports[name]

    def lines(self, which: str) -> list[dict]:
        import orjson
        path = {"access": self.access_log, "connection": self.connection_log, "error": self.error_log}[which]
        if not path.exists():
            return []
        return [orjson.loads(l) for l in path.read_bytes().splitlines() if l.strip()]

    def wait_log(self, which: str, predicate, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines(which):
                if predicate(line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no {which} log line matched; have {self.lines(which)[-5:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


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
        ports = {n: free_port() for n in names}
        d = tmp_path / f"gw{len(started)}"
        d.mkdir()
        access, conns, errs = d / "access.log", d / "connection.log", d / "error.log"
        text = (f'[gateway]\naccess_log = "{access}"\nconnection_log = "{conns}"\n'
                f'error_log = "{errs}"\nlog_level = "debug"\n{gateway}\n{native_setting(gateway)}'
                + listeners.format(**{f"port_{n}": p for n, p in ports.items()}) + "\n" + extra)
        config = d / "gateway.toml"
        config.write_text(text)
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        gw = Gateway(d, config, ports, proc, access, conns, errs)
        started.append(gw)
        try:
            for p in ports.values():
                wait_port(p, proc)
        except RuntimeError:
            out, err = proc.communicate()
            raise RuntimeError(f"gateway failed to start: {err.decode()[-2000:]}") from None
        return gw

    yield start
    for gw in started:
        code = gw.stop()
        assert code == 0, f"gateway exited with {code}: {gw.proc.stderr.read().decode()[-2000:]}"
