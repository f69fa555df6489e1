"""A fleet on one machine: N gateway instances behind HAProxy in TCP mode, driven by real mTLS clients.

How this works: each instance is a whole gateway (`python -m gateway run`, its master and workers) in
a process group and a directory of its own, as a separate host would be: its own port, admin port,
logs and TLS contexts, so its own session-ticket keys. They share one PKI and one configuration
shape: a `verify` listener answering every request with the instance's name (so a client knows who
served it), `shutdown_delay_s` so a stopped instance leaves its balancer before refusing anything,
and an admin listener whose `/readyz` is HAProxy's health check.

HAProxy is the layer-4 balancer (`mode tcp`: the TLS goes through it untouched, as through a cloud
NLB): `balance source` (consistent hashing of the client's address) or `roundrobin`; a health
check every CHECK_INTER_MS on `/readyz` that takes a server out at the first failure and back after
two passes; `observe layer4` marks a server down at its first refused connection, and `retries` with
`option redispatch 1` sends a connection that was refused to another server at once. Its stats
socket tells which servers it has up.

The clients are Python's `ssl` with the PKI's client certificate. A `new` client makes a new TLS
connection per request from its own source address (127.0.0.N, so `balance source` has distinct
clients to hash), offering the session of its last connection: whether the server resumed it is the
resumption figure. A `keepalive` client keeps one connection and sends request after request; when a
server closed that connection between two requests (a drain's close_notify, a dead instance), the
request, which had not been answered at all, is sent again on a new connection, as browsers and
curl do with a reused connection (RFC 9112, 9.3.1); that counts as `retried`, not as failed. Every
request is an `Outcome` with its start and end time, so a test can tell which were in flight when
something happened.

Ticket keys are not shared across instances: the bindings the gateway uses (pyOpenSSL and the
`cryptography` bindings) expose no way to set a context's ticket keys, so each instance makes its
own, and a session from one instance is a full handshake on another. Source affinity keeps a
returning client on the instance that holds its session.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gateway import testing

from . import certs, cpu
from .load import _stop_all

BALANCES = ("source", "roundrobin")
CHECK_INTER_MS = 100
BACKEND = "gateways"
START_TIMEOUT_S = 30.0


def haproxy_config(front_port: int, servers: Sequence[tuple[str, int, int]], *, balance: str,
                   stats_socket: Path) -> str:
    """HAProxy's configuration: one TCP frontend on 127.0.0.1:`front_port`, one backend of
    `servers` (name, port, admin port) balanced by `balance`."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
    lines = [
        "global",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    log stdout format raw local0",
        "    maxconn 4096",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    timeout connect 1s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout check 1s",
        "    retries 3",
        "    option redispatch 1",
        "frontend fleet",
        f"    bind 127.0.0.1:{front_port}",
        f"    default_backend {BACKEND}",
        f"backend {BACKEND}",
        f"    balance {balance}",
    ]
    if balance == "source":
        lines.append("    hash-type consistent")
    lines += [
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
        f"    default-server check inter {CHECK_INTER_MS}ms fall 1 rise 2 "
        "observe layer4 error-limit 1 on-error mark-down",
    ]
    lines += [f"    server {name} 127.0.0.1:{port} port {admin}" for name, port, admin in servers]
    return "\n".join(lines) + "\n"


def parse_stat(csv: str) -> dict[str, str]:
    """`show stat` output -> {server name: status} for the backend's servers ("UP", "DOWN", ...)."""
    rows = [l for l in csv.splitlines() if l.strip()]
    if not rows or not rows[0].startswith("# "):
        return {}
    names = rows[0][2:].split(",")
    px, sv, st = names.index("pxname"), names.index("svname"), names.index("status")
    out = {}
    for row in rows[1:]:
        f = row.split(",")
        if len(f) > st and f[px] == BACKEND and f[sv] not in ("BACKEND", "FRONTEND"):
            out[f[sv]] = f[st].split(" ")[0]
    return out


def servers_in_log(text: str, connections: Mapping[str, float]) -> dict[str, str]:
    """From HAProxy's tcplog lines (`SRC:PORT [accept date] frontend backend/server ...`): for each
    client "ip:port" -> the wall-clock time it connected, the server of the line with that source
    accepted nearest that time (within a second; a source port comes back in later connections)."""
    best: dict[str, tuple[float, str]] = {}
    for line in text.splitlines():
        m = _TCPLOG.search(line)
        if m is None or m.group(1) not in connections:
            continue
        accepted = datetime.strptime(m.group(2), "%d/%b/%Y:%H:%M:%S.%f").timestamp()
        off = abs(accepted - connections[m.group(1)])
        if off <= 1.0 and (m.group(1) not in best or off < best[m.group(1)][0]):
            best[m.group(1)] = (off, m.group(3))
    return {source: server for source, (_, server) in best.items()}


_TCPLOG = re.compile(r"(\d+\.\d+\.\d+\.\d+:\d+) \[([^\]]*)\] \S+ " + BACKEND + r"/(\S+) ")


class HAProxy:
    def __init__(self, directory: Path, front_port: int, servers: Sequence[tuple[str, int, int]], *,
                 balance: str, binary: str = "haproxy", cpus: Sequence[int] | None = None) -> None:
        self.dir = directory
        self.port = front_port
        self.stats_socket = directory / "haproxy.sock"
        self.config = directory / "haproxy.cfg"
        self.config.write_text(haproxy_config(front_port, servers, balance=balance,
                                              stats_socket=self.stats_socket))
        self.log = directory / "haproxy.log"     # one tcplog line per connection, at its end
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=out, stderr=out,
                                         start_new_session=True,
                                         preexec_fn=cpu.pin(cpus) if cpus else None)
        testing.wait_port(front_port, self.proc)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats_socket))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def servers_of(self, outcomes: Sequence[Outcome]) -> dict[str, str]:
        """{client "ip:port": the server HAProxy sent that connection to} for these outcomes' last
        connections, from its connection log (a connection is logged when it ends)."""
        return servers_in_log(self.log.read_text(errors="replace"),
                              {o.source: o.connected for o in outcomes if o.source})

    def states(self) -> dict[str, str]:
        return parse_stat(self.command("show stat"))

    def wait(self, predicate: Callable[[dict[str, str]], bool], timeout: float = START_TIMEOUT_S) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if predicate(states):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy's servers stayed {states}")
            time.sleep(0.02)

    def stop(self) -> None:
        _stop_all([self.proc])


@dataclass
class Instance:
    """One gateway of the fleet, started by `start()` in its own process group."""

    name: str
    dir: Path
    pki: certs.BenchPKI
    port: int
    admin_port: int
    workers: int = 1
    shutdown_delay_s: float = 1.0
    native: str | None = None
    cpus: Sequence[int] | None = None        # pinned there (a benchmark), else anywhere
    process: testing.GatewayProcess | None = None

    def config_text(self) -> str:
        gateway: dict[str, object] = {"workers": self.workers, **testing.log_settings(self.dir),
                                      "shutdown_delay_s": self.shutdown_delay_s, "drain_timeout_s": 10}
        if self.native is not None:
            gateway["native"] = self.native
        return testing.toml({
            "gateway": gateway,
            "admin": {"bind": f"127.0.0.1:{self.admin_port}"},
            "listener": [testing.listener(
                "fleet", self.port, self.pki.server_certs["ecdsa"], self.pki.server_keys["ecdsa"],
                mtls="verify", rules=[testing.fixed_response(body=self.name)])],
            "trust_store": {"main": {"ca_bundle": self.pki.ca_bundle, "crls": list(self.pki.crls)}},
        })

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "gateway.toml"
        config.write_text(self.config_text())
        self.process = testing.GatewayProcess(config, [self.port, self.admin_port], start_new_session=True,
                                              logs=testing.logs_in(self.dir), stderr=subprocess.DEVNULL,
                                              preexec_fn=cpu.pin(self.cpus) if self.cpus else None)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready():
            if time.monotonic() > deadline or not self.alive():
                raise RuntimeError(f"{self.name} did not become ready")
            time.sleep(0.02)

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.admin_port), timeout=2) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU the instance's processes spent so far (its master, its workers)."""
        return cpu.tree_seconds(self.pid) if self.alive() else 0.0

    def kill(self) -> tuple[float, float]:
        """The host dies: SIGKILL to every process of the instance at once. Returns when its port
        refuses connections (the kernel has closed the last copy of the listening socket), with
        (when the signal went, when the refusal was seen) in time.monotonic(): what was in flight
        began before the second and was still going at the first."""
        signalled = time.monotonic()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert self.process is not None
        self.process.proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except ConnectionRefusedError:
                return signalled, time.monotonic()
            except OSError:
                pass
            time.sleep(0.001)
        raise TimeoutError(f"{self.name}'s port still accepts after SIGKILL")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM: leave (not ready, still accepting for shutdown_delay_s), drain, exit. Exit code."""
        assert self.process is not None
        code = self.process.stop(signal.SIGTERM, timeout)
        try:
            os.killpg(self.pid, signal.SIGKILL)     # nothing of it may outlive its master
        except ProcessLookupError:
            pass
        return code


class Fleet:
    """N instances behind HAProxy; `with Fleet(...) as fleet:` starts all and waits until HAProxy
    has every server up."""

    def __init__(self, directory: Path, n: int = 3, *, balance: str = "source", workers: int = 1,
                 shutdown_delay_s: float = 1.0, native: str | None = None, haproxy: str = "haproxy",
                 cpus: Sequence[int] | None = None) -> None:
        self.dir = directory
        self.balance = balance
        self.haproxy_binary = haproxy
        self.cpus = cpus
        self.pki = certs.make(directory / "pki")
        ports = testing.free_ports(2 * n + 1)
        self.front_port = ports[0]
        self.instances = [Instance(f"gw{i}", directory / f"gw{i}", self.pki, ports[1 + 2 * i], ports[2 + 2 * i],
                                   workers=workers, shutdown_delay_s=shutdown_delay_s, native=native, cpus=cpus)
                          for i in range(n)]
        self.haproxy: HAProxy | None = None

    def __enter__(self) -> Fleet:
        try:
            for inst in self.instances:
                inst.start()
            self.haproxy = HAProxy(self.dir, self.front_port,
                                   [(i.name, i.port, i.admin_port) for i in self.instances],
                                   balance=self.balance, binary=self.haproxy_binary, cpus=self.cpus)
            self.wait_up([i.name for i in self.instances])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for inst in self.instances:
            if inst.alive():
                inst.stop()

    def wait_up(self, names: Sequence[str], timeout: float = START_TIMEOUT_S) -> dict[str, str]:
        assert self.haproxy is not None
        return self.haproxy.wait(lambda st: all(st.get(n) == "UP" for n in names), timeout)

    def wait_down(self, name: str, timeout: float = START_TIMEOUT_S) -> dict[str, str]:
        assert self.haproxy is not None
        return self.haproxy.wait(lambda st: st.get(name) not in ("UP", None), timeout)

    def roll(self) -> list[dict]:
        """Restart every instance, one at a time: SIGTERM (it leaves its balancer, then drains),
        start it again, and go on once HAProxy has it up. A record per instance."""
        done = []
        for inst in self.instances:
            began = time.monotonic()
            code = inst.stop()
            stopped = time.monotonic()
            inst.start()
            self.wait_up([inst.name])
            done.append({"instance": inst.name, "exit": code, "stop_s": stopped - began,
                         "back_s": time.monotonic() - stopped})
        return done

    def cpu_seconds(self) -> float:
        return sum(i.cpu_seconds() for i in self.instances)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.root))
        ctx.load_cert_chain(self.pki.client_cert, self.pki.client_key)
        return ctx


# -- the clients -----------------------------------------------------------------------------------

@dataclass(slots=True)
class Outcome:
    kind: str                  # "new" | "keepalive"
    client: int
    started: float             # time.monotonic()
    ended: float
    ok: bool
    instance: str | None = None
    resumed: bool = False
    first: bool = False        # the client's first connection: nothing to resume
    retried: bool = False      # a keep-alive connection was closed under it; sent again, once
    error: str | None = None
    source: str | None = None  # the client's "ip:port" of the (last) connection it went on
    connected: float = 0.0     # time.time() when that connection was made


_HEAD_END = b"\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.I)


def _read_response(tls: ssl.SSLSocket) -> tuple[bytes, bytes, bool]:
    """One response: (head, body, whether the server said Connection: close). EOFError if the
    connection ended before a single byte of it; ConnectionError if it ended part-way."""
    data = b""
    while _HEAD_END not in data:
        chunk = tls.recv(65536)
        if not chunk:
            if not data:
                raise EOFError("closed before the response")
            raise ConnectionError("closed inside the response head")
        data += chunk
    head, _, body = data.partition(_HEAD_END)
    m = _LENGTH.search(head)
    if m is None:
        raise ConnectionError("a response without content-length")
    length = int(m.group(1))
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        body += chunk
    closing = re.search(rb"\r\nconnection: *close", head, re.I) is not None
    return head, body[:length], closing


class Load:
    """`new` new-connection clients and `keepalive` keep-alive clients against 127.0.0.1:`port`,
    each on its own thread and source address, from `start()` until `stop()`."""

    def __init__(self, port: int, ctx: ssl.SSLContext, *, new: int = 4, keepalive: int = 2,
                 timeout: float = 10.0) -> None:
        self.port = port
        self.ctx = ctx
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._new_client, args=(i,), daemon=True) for i in range(new)]
        self._threads += [threading.Thread(target=self._keepalive_client, args=(new + i,), daemon=True)
                          for i in range(keepalive)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        return self.outcomes

    def count(self) -> int:
        return len(self.outcomes)

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _tcp(self, client: int) -> tuple[socket.socket, str]:
        """A connection to the balancer and its source "ip:port"; 127.0.0.0/8 is all loopback: a
        source address per client, for `balance source`."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout,
                                        source_address=(f"127.0.0.{10 + client}", 0))
        return sock, "%s:%d" % sock.getsockname()[:2]

    def _tls(self, sock: socket.socket, session) -> ssl.SSLSocket:
        try:
            return self.ctx.wrap_socket(sock, server_hostname="localhost", session=session)
        except BaseException:
            sock.close()
            raise

    def _new_client(self, client: int) -> None:
        session = None
        first = True
        request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        while not self._stop.is_set():
            started = time.monotonic()
            source, connected = None, 0.0
            try:
                sock, source = self._tcp(client)
                connected = time.time()
                with self._tls(sock, session) as tls:
                    tls.sendall(request)
                    head, body, _ = _read_response(tls)
                    resumed = bool(tls.session_reused)
                    session = tls.session
                ok = head.startswith(b"HTTP/1.1 200")
                self._record(Outcome("new", client, started, time.monotonic(), ok, body.decode(errors="replace"),
                                     resumed, first, error=None if ok else head.split(b"\r\n", 1)[0].decode(),
                                     source=source, connected=connected))
            except (OSError, EOFError, ssl.SSLError) as exc:
                self._record(Outcome("new", client, started, time.monotonic(), False, first=first,
                                     error=f"{type(exc).__name__}: {exc}", source=source,
                                     connected=connected))
            first = False

    def _keepalive_client(self, client: int) -> None:
        request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
        tls: ssl.SSLSocket | None = None
        reused = False
        source, connected = None, 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            retried = False
            for attempt in (0, 1):
                try:
                    if tls is None:
                        sock, source = self._tcp(client)
                        connected = time.time()
                        tls, reused = self._tls(sock, None), False
                    tls.sendall(request)
                    head, body, closing = _read_response(tls)
                    ok = head.startswith(b"HTTP/1.1 200")
                    self._record(Outcome("keepalive", client, started, time.monotonic(), ok,
                                         body.decode(errors="replace"), retried=retried,
                                         error=None if ok else head.split(b"\r\n", 1)[0].decode()))
                    reused = True
                    if closing:
                        tls.close()
                        tls = None
                    break
                except (OSError, EOFError, ssl.SSLError) as exc:
                    if tls is not None:
                        tls.close()
                        tls = None
                    # nothing of the response came on a reused connection: the server had closed
                    # it between requests; the request was not taken, so it is sent again, once
                    quiet_close = isinstance(exc, (EOFError, BrokenPipeError, ConnectionResetError,
                                                   ssl.SSLZeroReturnError, ssl.SSLEOFError))
                    if attempt == 0 and reused and quiet_close:
                        retried = True
                        continue
                    self._record(Outcome("keepalive", client, started, time.monotonic(), False,
                                         retried=retried, error=f"{type(exc).__name__}: {exc}",
                                         source=source, connected=connected))
                    break
        if tls is not None:
            tls.close()


# -- what the outcomes say -------------------------------------------------------------------------

@dataclass
class Summary:
    requests: int
    failed: int
    retried: int
    by_instance: dict[str, int] = field(default_factory=dict)
    resumable: int = 0          # new connections that offered a session
    resumed: int = 0

    @property
    def resumption_rate(self) -> float | None:
        return self.resumed / self.resumable if self.resumable else None


def summarize(outcomes: Sequence[Outcome]) -> Summary:
    s = Summary(len(outcomes), sum(not o.ok for o in outcomes), sum(o.retried for o in outcomes))
    for o in outcomes:
        if o.ok and o.instance:
            s.by_instance[o.instance] = s.by_instance.get(o.instance, 0) + 1
        if o.kind == "new" and o.ok and not o.first:
            s.resumable += 1
            s.resumed += o.resumed
    return s
