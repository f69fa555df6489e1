"""HTTP/1.1 proxying end to end: target groups (balancing, health checks, ejection, pools, TLS to
targets), rules (conditions, redirects, client-certificate requirements), streaming with
back-pressure, failures of targets, limits, timeouts and every request-smuggling shape.

The gateway runs as its own process; the targets are real servers on 127.0.0.1: Python's
`http.server` (not ours) and the built-in echo backend as processes, killed and restarted
mid-test, and `Upstream`, a small threaded HTTP/1.1 server in this process whose behaviour each
test scripts (slow answers, closes, 101, TLS) and which records what reached it.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import testing

from .conftest import Gateway, client_ctx, free_port, native_setting, start_echo, wait_port

pytestmark = pytest.mark.integration

# The gateway process. Until gateway/server.py builds target groups with `TargetGroup.from_spec`
# and listens through `gateway.accept`, this launcher applies that wiring in the gateway process
# (the same two calls); once server.py does it itself, the launcher changes nothing.
LAUNCHER = r"""
import inspect, sys
from gateway import accept, cli, server, upstream

if "from_spec" not in inspect.getsource(server.build_runtime):
    _build = server.build_runtime

    def build_runtime(config, **kw):
        runtime = _build(config, **kw)
        for name, spec in config.target_groups.items():
            # in place: every listener runtime shares this dict
            runtime.target_groups[name] = upstream.TargetGroup.from_spec(spec, runtime.errors)
        return runtime

    server.build_runtime = build_runtime

if "accept" not in inspect.getsource(server.Worker.start):
    import uvloop
    from gateway import config as _cfg
    _limits = {l.port: l.max_connections_per_worker for l in _cfg.load(sys.argv[-1]).listeners}

    class _Loop(uvloop.Loop):
        async def create_server(self, factory, *args, sock=None, **kw):
            if sock is not None and sock.getsockname()[1] in _limits:
                return accept.serve(self, sock, factory, _limits[sock.getsockname()[1]])
            return await super().create_server(factory, *args, sock=sock, **kw)

    server._new_loop = _Loop

sys.exit(cli.main(["run", "--config", sys.argv[-1]]))
"""


class ProxyGateway(Gateway):
    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def errors(self, reason: str) -> list[dict]:
        return [l for l in self.lines("error") if l.get("reason") == reason]


class _Starter:
    """start(listener_and_groups_toml, workers=1) -> ProxyGateway; `{pki}` and `{port}` are filled."""

    def __init__(self, directory: Path, test_pki) -> None:
        self.directory = directory
        self.pki = test_pki
        self.started: list[ProxyGateway] = []

    def __call__(self, body: str, *, workers: int = 1, gateway_extra: str = "") -> ProxyGateway:
        port = free_port()
        d = self.directory / f"gw{len(self.started)}"
        d.mkdir()
        head = testing.toml({"gateway": {"workers": workers, **testing.log_settings(d), "log_level": "debug",
                                         "drain_timeout_s": 5}})
        text = (f'{head}{gateway_extra}\n{native_setting(gateway_extra)}'
                + body.replace("{pki}", str(self.pki.dir)).replace("{port}", str(port)))
        config = d / "gateway.toml"
        config.write_text(text)
        gw = ProxyGateway(d, config, {"main": port}, command=[sys.executable, "-c", LAUNCHER, str(config)])
        self.started.append(gw)
        gw.wait_ready(tail=3000)
        return gw

    def stop_all(self) -> None:
        for gw in self.started:
            code = gw.stop()
            assert code == 0, f"gateway exited with {code}: {gw.stderr_tail()}"


@pytest.fixture
def gateway(tmp_path, test_pki):
    starter = _Starter(tmp_path, test_pki)
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory, test_pki):
    """One gateway for a module's worth of tests that do not change it."""
    starter = _Starter(tmp_path_factory.mktemp("shared"), test_pki)
    yield starter
    starter.stop_all()


def listener(rules: str, *, mtls: str = "off", extra: str = "") -> str:
    store = 'trust_store = "main"\n' if mtls in ("verify", "optional") else ""
    return f"""
[[listener]]
name = "main"
bind = "127.0.0.1:{{port}}"
certificates = [{{cert = "{{pki}}/server.pem", key = "{{pki}}/server.key"}}]
mtls = "{mtls}"
{store}{extra}
{rules}

[trust_store.main]
ca_bundle = "{{pki}}/ca-bundle.pem"
"""


def forward_all(group: str = "app") -> str:
    return f'[[listener.rule]]\naction = "forward"\ntarget_group = "{group}"\n'


def group(name: str, ports, extra: str = "") -> str:
    targets = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    return f"\n[target_group.{name}]\ntargets = [{targets}]\n{extra}\n"


def get(gw, test_pki, path="/", *, method="GET", headers=None, body=None, client=None, conn=None,
        timeout=30):
    ctx = client_ctx(test_pki, client) if conn is None else None
    return testing.https_request(gw.port("main"), ctx, method, path, headers=headers, body=body,
                                 conn=conn, timeout=timeout)


def raw(gw, test_pki, data: bytes, *, client=None, timeout=10.0, pause: float = 0.0) -> bytes:
    """Send bytes over one TLS connection, then read until the gateway closes (or timeout)."""
    sock = socket.create_connection(("127.0.0.1", gw.port("main")), timeout=timeout)
    tls = client_ctx(test_pki, client).wrap_socket(sock, server_hostname="localhost")
    tls.sendall(data)
    if pause:
        time.sleep(pause)
    out = b""
    try:
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ssl.SSLError, ConnectionError):
        pass
    tls.close()
    return out


def status_of(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    return int(m.group(1)) if m else 0


# --- targets ----------------------------------------------------------------------------------------

@dataclass
class HTTPServerTarget:
    """`python -m http.server` serving a directory with a `whoami` file: a target that is not ours."""
    port: int
    root: Path
    name: str
    proc: subprocess.Popen | None = None

    def start(self) -> "HTTPServerTarget":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", str(self.root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def http_servers(tmp_path):
    made: list[HTTPServerTarget] = []

    def make(name: str) -> HTTPServerTarget:
        root = tmp_path / f"www-{name}"
        root.mkdir()
        (root / "whoami").write_text(name)
        (root / "health").write_text("ok")
        target = HTTPServerTarget(free_port(), root, name).start()
        made.append(target)
        return target

    yield make
    for t in made:
        t.kill()


@dataclass
class Seen:
    head: bytes
    body: bytes
    connection: int         # which connection (in accept order) carried it


class Upstream:
    """A scripted HTTP/1.1 target in a thread. Paths: `/name` (its name), `/delay/MS`, `/close`
    (close without answering), `/status/N`, `/ws` (101, then echo bytes), `/bytes/N`, `/echo`
    (the request body back). `close_reused`: a second request on a connection is met with a close,
    the keep-alive race. Records every request."""

    def __init__(self, name: str = "u", *, tls: ssl.SSLContext | None = None,
                 close_reused: bool = False) -> None:
        self.name = name
        self.seen: list[Seen] = []
        self.connections = 0
        self.close_reused = close_reused
        self.tls = tls
        self.peer_subjects: list = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, sock: socket.socket) -> None:
        self.connections += 1
        number = self.connections
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                return
            self.peer_subjects.append(sock.getpeercert())
        buf = b""
        served = 0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                body, buf = self._body(sock, head, buf)
                self.seen.append(Seen(head, body, number))
                served += 1
                if self.close_reused and served > 1:
                    return
                if not self._answer(sock, head, body, buf):
                    return
        except OSError:
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _more(sock) -> bytes:
        data = sock.recv(65536)
        if not data:        # the gateway gave up on this request (a 408, a client gone): so do we
            raise ConnectionError("closed mid-body")
        return data

    def _body(self, sock, head: bytes, buf: bytes) -> tuple[bytes, bytes]:
        m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
        if m:
            n = int(m.group(1))
            while len(buf) < n:
                buf += self._more(sock)
            return buf[:n], buf[n:]
        if re.search(rb"\r\ntransfer-encoding: *chunked", head, re.I):
            body = b""
            while True:
                while b"\r\n" not in buf:
                    buf += self._more(sock)
                line, buf = buf.split(b"\r\n", 1)
                size = int(line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    buf += self._more(sock)
                body, buf = body + buf[:size], buf[size + 2:]
                if size == 0:
                    return body, buf
        return b"", buf

    def _answer(self, sock, head: bytes, body: bytes, rest: bytes) -> bool:
        line = head.split(b"\r\n", 1)[0].decode()
        method, target = line.split(" ")[:2]
        path = target.split("?")[0]
        status, payload, extra = 200, self.name.encode(), b""
        if path.startswith("/delay/"):
            time.sleep(int(path[7:]) / 1000)
        elif path == "/close":
            return False
        elif path.startswith("/status/"):
            status = int(path[8:])
            payload = b"" if status in (204, 304) else payload
        elif path == "/echo":
            payload = body
        elif path.startswith("/bytes/"):
            payload = b"x" * int(path[7:])
        elif path == "/ws":
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         b"Upgrade: websocket\r\nX-Upstream: yes\r\n\r\n" + b"hello from upstream;")
            data = rest
            while True:
                if data:
                    sock.sendall(data)
                data = sock.recv(65536)
                if not data:
                    return False
        if status in (204, 304):
            sock.sendall(b"HTTP/1.1 %d X\r\n%s\r\n" % (status, extra))
            return True
        head_out = b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n" % (status, len(payload), extra)
        sock.sendall(head_out if method == "HEAD" else head_out + payload)
        return True

    def heads(self) -> list[bytes]:
        return [s.head for s in self.seen]


@pytest.fixture
def upstreams():
    made: list[Upstream] = []

    def make(*args, **kw) -> Upstream:
        u = Upstream(*args, **kw)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


# --- balancing --------------------------------------------------------------------------------------

def test_round_robin_over_third_party_targets(gateway, test_pki, http_servers):
    a, b, c = http_servers("a"), http_servers("b"), http_servers("c")
    gw = gateway(listener(forward_all()) + group("app", [a.port, b.port, c.port]))
    conn = http.client.HTTPSConnection("localhost", gw.port("main"), context=client_ctx(test_pki))
    names = [get(gw, test_pki, "/whoami", conn=conn)[1].decode() for _ in range(9)]
    conn.close()
    assert sorted(names) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert names[:3] == names[3:6] == names[6:]      # in turn


def test_least_outstanding_requests_avoids_the_busy_target(gateway, test_pki, upstreams):
    a, b = upstreams("a"), upstreams("b")
    gw = gateway(listener(forward_all()) + group("app", [a.port, b.port],
                                                 'load_balancing = "least_outstanding_requests"'))
    slow = []
    t = threading.Thread(target=lambda: slow.append(get(gw, test_pki, "/delay/1500")[1]))
    t.start()
    wait_until(lambda: a.seen or b.seen)
    busy = "a" if a.seen else "b"
    # while the slow one is outstanding, every other request goes to the idle target
    names = [get(gw, test_pki, "/name")[1].decode() for _ in range(6)]
    t.join()
    assert slow == [busy.encode()]
    assert set(names) == {"b" if busy == "a" else "a"}


# --- health checks and ejection ----------------------------------------------------------------------

HEALTH = ('health_check = {path = "/health", interval_s = 0.3, timeout_s = 0.2, '
          'healthy_threshold = 2, unhealthy_threshold = 2}\n')


def test_health_checks_take_a_killed_target_out_and_bring_it_back(gateway, test_pki, http_servers):
    a, b = http_servers("a"), http_servers("b")
    gw = gateway(listener(forward_all()) + group("app", [a.port, b.port], HEALTH))
    conn = http.client.HTTPSConnection("localhost", gw.port("main"), context=client_ctx(test_pki))
    assert {get(gw, test_pki, "/whoami", conn=conn)[1] for _ in range(4)} == {b"a", b"b"}
    b.kill()
    # no client sees the dead target: a refused connect is retried on the other target
    for _ in range(10):
        resp, data = get(gw, test_pki, "/whoami", conn=conn)
        assert (resp.status, data) == (200, b"a")
    line = gw.wait_log("error", lambda l: l.get("reason") == "target_unhealthy")
    assert line["target"] == f"127.0.0.1:{b.port}" and line["target_group"] == "app"
    assert "connection refused" in line["message"]
    b.start()       # the same port again
    gw.wait_log("error", lambda l: l.get("reason") == "target_healthy"
                and l["target"] == f"127.0.0.1:{b.port}")
    names = {get(gw, test_pki, "/whoami", conn=conn)[1] for _ in range(4)}
    assert names == {b"a", b"b"}
    conn.close()


def test_health_check_matcher_and_path(gateway, test_pki, http_servers):
    a, b = http_servers("a"), http_servers("b")
    (b.root / "health").unlink()        # b answers 404 on the health path
    gw = gateway(listener(forward_all()) + group("app", [a.port, b.port], HEALTH))
    line = gw.wait_log("error", lambda l: l.get("reason") == "target_unhealthy")
    assert line["target"] == f"127.0.0.1:{b.port}"
    assert "status 404 does not match 200-399" in line["message"]
    assert {get(gw, test_pki, "/whoami")[1] for _ in range(4)} == {b"a"}
    (b.root / "health").write_text("ok")
    gw.wait_log("error", lambda l: l.get("reason") == "target_healthy")
    assert {get(gw, test_pki, "/whoami")[1] for _ in range(4)} == {b"a", b"b"}


def test_no_healthy_target_is_503_with_a_log_line(gateway, test_pki, http_servers):
    a = http_servers("a")
    gw = gateway(listener(forward_all()) + group("app", [a.port], HEALTH))
    assert get(gw, test_pki, "/whoami")[1] == b"a"
    a.kill()
    gw.wait_log("error", lambda l: l.get("reason") == "target_unhealthy")
    resp, data = get(gw, test_pki, "/whoami")
    assert resp.status == 503 and data == b"service unavailable: no healthy target\n"
    line = gw.wait_log("error", lambda l: l.get("reason") == "no_healthy_target")
    assert line["target_group"] == "app" and "no healthy target in group app" in line["message"]
    a.start()
    gw.wait_log("error", lambda l: l.get("reason") == "target_healthy")
    assert get(gw, test_pki, "/whoami")[1] == b"a"


def test_passive_ejection_after_connection_failures(gateway, test_pki):
    a, b = start_echo(), start_echo()
    try:
        gw = gateway(listener(forward_all()) + group(
            "app", [a.port, b.port], "ejection_failures = 2\nejection_duration_s = 1.5\n"
            "max_idle_per_target = 0\n"))
        b.stop()
        for _ in range(8):
            assert get(gw, test_pki, "/x")[0].status == 200
        line = gw.wait_log("error", lambda l: l.get("reason") == "target_ejected")
        assert line["target"] == f"127.0.0.1:{b.port}" and "2 connection failures" in line["message"]
        failures = len(gw.errors("upstream_connect_failed"))
        assert failures == 2        # once out of rotation, nothing is tried against it
        b2 = start_echo(b.port)
        try:
            gw.wait_log("error", lambda l: l.get("reason") == "target_returned", timeout=5)
            for _ in range(6):
                assert get(gw, test_pki, "/x")[0].status == 200
            lines = [l for l in gw.lines("access") if l.get("status") == 200]
            assert lines[-1]["upstream"] != lines[-2]["upstream"]        # both in turn again
        finally:
            b2.stop()
    finally:
        a.stop()
        b.stop()


# --- target failures -------------------------------------------------------------------------------

def test_target_that_closes_without_answering_is_502(gateway, test_pki, upstreams):
    u = upstreams("u")
    gw = gateway(listener(forward_all()) + group("app", [u.port]))
    resp, data = get(gw, test_pki, "/close")
    assert resp.status == 502 and data == b"bad gateway: the target failed\n"
    line = gw.wait_log("error", lambda l: l.get("reason") == "upstream_closed")
    assert line["target"] == f"127.0.0.1:{u.port}" and "before answering" in line["message"]


def test_slow_target_is_504_after_read_timeout(gateway, test_pki, upstreams):
    u = upstreams("u")
    gw = gateway(listener(forward_all()) + group("app", [u.port], "read_timeout_s = 0.5"))
    started = time.monotonic()
    resp, data = get(gw, test_pki, "/delay/3000")
    assert resp.status == 504 and data == b"gateway timeout: the target did not answer\n"
    assert 0.4 < time.monotonic() - started < 2.5
    line = gw.wait_log("error", lambda l: l.get("reason") == "upstream_timeout")
    assert line["target"] == f"127.0.0.1:{u.port}" and "within 0.5s" in line["message"]
    # a slow but steady target is fine: the deadline is between signs of life
    resp, _ = get(gw, test_pki, "/delay/300")
    assert resp.status == 200


def test_connect_timeout_is_504(gateway, test_pki):
    # a listening socket whose backlog is full never completes a handshake: connect times out
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(0)
    port = blocker.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        gw = gateway(listener(forward_all()) + group("app", [port], "connect_timeout_s = 0.5"))
        resp, data = get(gw, test_pki, "/")
        assert resp.status == 504
        line = gw.wait_log("error", lambda l: l.get("reason") == "upstream_connect_timeout")
        assert line["target"] == f"127.0.0.1:{port}"
    finally:
        for s in fillers:
            s.close()
        blocker.close()


def test_pooled_connection_closed_by_the_target_is_retried(gateway, test_pki, upstreams):
    u = upstreams("u", close_reused=True)
    gw = gateway(listener(forward_all()) + group("app", [u.port]))
    for i in range(4):
        resp, data = get(gw, test_pki, f"/name?{i}")
        assert (resp.status, data) == (200, b"u")
    # each request after the first met a closed pooled connection, then went out on a new one
    assert [s.head.split(b" ")[1] for s in u.seen] == [
        b"/name?0", b"/name?1", b"/name?1", b"/name?2", b"/name?2", b"/name?3", b"/name?3"]
    assert not gw.errors("upstream_closed")


def test_body_is_not_replayed_when_a_pooled_connection_closes(gateway, test_pki, upstreams):
    u = upstreams("u", close_reused=True)
    gw = gateway(listener(forward_all()) + group("app", [u.port]))
    assert get(gw, test_pki, "/name")[0].status == 200
    resp, _ = get(gw, test_pki, "/echo", method="POST", body=b"once")
    assert resp.status == 502       # the body is gone: not sent a second time
    assert [s.body for s in u.seen].count(b"once") == 1


# --- TLS to targets ---------------------------------------------------------------------------------

def _tls_target(test_pki, *, require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(test_pki.server_cert, test_pki.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(test_pki.ca_bundle)
    return ctx


def test_tls_to_targets_with_a_client_certificate(gateway, test_pki, upstreams):
    u = upstreams("secure", tls=_tls_target(test_pki, require_client_cert=True))
    good = test_pki.clients["good"]
    gw = gateway(listener(forward_all()) + group("app", [u.port], f"""
tls = {{ca_bundle = "{{pki}}/ca-bundle.pem", cert = "{good.cert}", key = "{good.key}"}}
health_check = {{path = "/name", interval_s = 0.5, timeout_s = 0.4}}"""))
    for _ in range(3):
        resp, data = get(gw, test_pki, "/name")
        assert (resp.status, data) == (200, b"secure")
    subject = dict(x[0] for x in u.peer_subjects[0]["subject"])
    assert subject["commonName"] == "client1"
    assert not gw.errors("target_unhealthy")


def test_tls_target_with_an_untrusted_certificate_is_502(gateway, test_pki, upstreams, tmp_path):
    u = upstreams("secure", tls=_tls_target(test_pki, require_client_cert=False))
    other = tmp_path / "other-ca.pem"
    from gateway import pki
    other.write_bytes(pki.make_root("some other CA").cert_pem)
    gw = gateway(listener(forward_all()) + group("app", [u.port], f'tls = {{ca_bundle = "{other}"}}'))
    resp, _ = get(gw, test_pki, "/name")
    assert resp.status == 502
    line = gw.wait_log("error", lambda l: l.get("reason") == "upstream_tls_verify_failed")
    assert line["target"] == f"127.0.0.1:{u.port}" and "certificate" in line["message"]
    assert not u.seen


def test_tls_target_checked_against_server_name(gateway, test_pki, upstreams):
    u = upstreams("secure", tls=_tls_target(test_pki, require_client_cert=False))
    gw = gateway(listener(forward_all()) + group(
        "app", [u.port], 'tls = {ca_bundle = "{pki}/ca-bundle.pem", server_name = "not-this.example"}'))
    assert get(gw, test_pki, "/name")[0].status == 502
    line = gw.wait_log("error", lambda l: l.get("reason") == "upstream_tls_verify_failed")
    assert "not-this.example" in line["message"] or "mismatch" in line["message"].lower()


# --- rules ------------------------------------------------------------------------------------------

RULES = """
[[listener.rule]]
priority = 10
host = "api.example.com"
path = "/v1/*"
methods = ["GET", "HEAD"]
action = "forward"
target_group = "api"

[[listener.rule]]
priority = 20
host = "*.example.com"
headers = {"X-Env" = ["prod", "stag*"]}
action = "fixed-response"
fixed_response = {status = 200, body = "env matched"}

[[listener.rule]]
priority = 30
path = "/old/*"
action = "redirect"
redirect = {status = 308, host = "new.#{host}", path = "/new/#{path}", query = "#{query}&moved=1"}

[[listener.rule]]
priority = 40
path = "/plain"
action = "redirect"
redirect = {scheme = "http", port = 8080, query = ""}

[[listener.rule]]
priority = 50
path = "/admin/*"
allow = {subject = ["CN=alice,O=mtls-gateway dev"], san_uri = ["spiffe://example.com/*"]}
action = "forward"
target_group = "api"

[[listener.rule]]
priority = 60
path = "/members/*"
require_client_cert = true
action = "fixed-response"
fixed_response = {status = 200, body = "members"}

[[listener.rule]]
priority = 70
action = "fixed-response"
fixed_response = {status = 404, body = "nothing here"}
"""


@pytest.fixture(scope="module")
def ruled_gateway(shared_gateway):
    u = Upstream("api")
    yield shared_gateway(listener(RULES, mtls="optional") + group("api", [u.port])), u
    u.stop()


@pytest.fixture
def ruled(ruled_gateway):
    ruled_gateway[1].seen.clear()
    return ruled_gateway


def test_rule_conditions_host_path_method_headers(ruled, test_pki):
    gw, u = ruled
    assert get(gw, test_pki, "/v1/x", headers={"Host": "api.example.com"})[1] == b"api"
    assert get(gw, test_pki, "/v1/x", method="HEAD", headers={"Host": "API.Example.com:443"})[0].status == 200
    # same host and path, another method: falls through to the catch-all
    assert get(gw, test_pki, "/v1/x", method="POST", body=b"",
               headers={"Host": "api.example.com"})[1] == b"nothing here"
    assert get(gw, test_pki, "/v2/x", headers={"Host": "api.example.com"})[1] == b"nothing here"
    for env in ("prod", "PROD", "staging"):
        assert get(gw, test_pki, "/", headers={"Host": "www.example.com", "X-Env": env})[1] == b"env matched"
    assert get(gw, test_pki, "/", headers={"Host": "www.example.com", "X-Env": "dev"})[1] == b"nothing here"
    assert get(gw, test_pki, "/", headers={"Host": "example.com", "X-Env": "prod"})[1] == b"nothing here"


def test_redirects_with_placeholders(ruled, test_pki):
    gw, _ = ruled
    resp, body = get(gw, test_pki, "/old/a/b?x=1", headers={"Host": "site.test:8443"})
    assert resp.status == 308 and body == b""
    assert resp.getheader("Location") == f"https://new.site.test:{gw.port('main')}/new/old/a/b?x=1&moved=1"
    resp, _ = get(gw, test_pki, "/plain?drop=me", headers={"Host": "site.test"})
    assert resp.status == 301 and resp.getheader("Location") == "http://site.test:8080/plain"


def test_client_certificate_requirements_per_path(ruled, test_pki):
    gw, u = ruled
    # the same listener: /members wants any verified certificate, /admin alice's only
    resp, data = get(gw, test_pki, "/members/x")
    assert resp.status == 403
    assert data == b"forbidden: this path requires a verified client certificate\n"
    assert get(gw, test_pki, "/members/x", client="good")[1] == b"members"
    resp, data = get(gw, test_pki, "/admin/x", client="good")
    assert resp.status == 403
    assert data == b"forbidden: this client certificate is not allowed on this path\n"
    assert get(gw, test_pki, "/admin/x", client="alice")[1] == b"api"
    assert get(gw, test_pki, "/anything")[1] == b"nothing here"
    assert len(u.seen) == 1         # refused requests never reached the target
    line = gw.wait_log("error", lambda l: l.get("reason") == "client_cert_not_allowed")
    assert line["subject"] == "CN=client1,O=mtls-gateway dev"
    gw.wait_log("error", lambda l: l.get("reason") == "client_cert_required")


def test_check_refuses_an_allow_list_on_a_passthrough_listener(tmp_path, test_pki):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(listener('[[listener.rule]]\npath = "/a"\nallow = {subject = ["CN=x"]}\n'
                            'action = "fixed-response"\nfixed_response = {status = 200}\n',
                            mtls="passthrough").replace("{pki}", str(test_pki.dir))
                   .replace("{port}", "8443"))
    r = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "listener[0].rule[0].allow: needs a listener with mtls 'verify' or 'optional'" in r.stderr


# --- protocol upgrades ------------------------------------------------------------------------------

WS_RULES = """
[[listener.rule]]
path = "/ws"
allow_upgrade = ["websocket"]
action = "forward"
target_group = "app"

[[listener.rule]]
action = "forward"
target_group = "app"
"""
UPGRADE = (b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def test_upgrade_refused_where_no_rule_allows_it(gateway, test_pki, upstreams):
    u = upstreams("u")
    gw = gateway(listener(WS_RULES) + group("app", [u.port]))
    out = raw(gw, test_pki, UPGRADE % (b"/other", b"websocket"))
    assert status_of(out) == 501 and b"Connection: close" in out
    out = raw(gw, test_pki, UPGRADE % (b"/ws", b"h2c"))
    assert status_of(out) == 501
    assert not u.seen
    gw.wait_log("error", lambda l: l.get("reason") == "upgrade_refused")


def test_websocket_upgrade_becomes_a_tunnel(gateway, test_pki, upstreams):
    u = upstreams("u")
    gw = gateway(listener(WS_RULES) + group("app", [u.port]))
    sock = socket.create_connection(("127.0.0.1", gw.port("main")), timeout=10)
    tls = client_ctx(test_pki).wrap_socket(sock, server_hostname="localhost")
    tls.sendall(UPGRADE % (b"/ws", b"websocket") + b"early bytes;")
    got = b""
    while b"\r\n\r\n" not in got:
        got += tls.recv(65536)
    head, _, got = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Upgrade: websocket" in head and b"Connection: upgrade" in head
    assert b"X-Upstream: yes" in head
    forwarded = u.seen[0].head
    assert b"Connection: upgrade" in forwarded and b"Upgrade: websocket" in forwarded
    assert b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" in forwarded
    # bytes pass through both ways, unparsed: the target echoes what it gets
    messages = [b"one", b"two" * 100000]
    for m in messages:
        tls.sendall(m)
    want = b"hello from upstream;early bytes;" + b"".join(messages)
    while len(got) < len(want):
        got += tls.recv(65536)
    assert got == want
    tls.close()
    line = gw.wait_log("access", lambda l: l.get("status") == 101)
    assert line["bytes_in"] >= len(b"early bytes;one") and line["aborted"] is False


# --- streaming --------------------------------------------------------------------------------------

def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


STREAM_BYTES = 128 * 1024 * 1024
# What one transfer may add to a worker's peak memory, whatever its size: socket buffers, the
# read high-water mark, TLS records in flight, allocator slack.
STREAM_MEMORY_BOUND_KB = 16 * 1024


def test_large_bodies_stream_both_ways_in_bounded_memory(gateway, test_pki, echo_backend):
    gw = gateway(listener(forward_all()) + group("app", [echo_backend.port]))
    assert get(gw, test_pki, "/warm")[0].status == 200
    [worker] = gw.worker_pids()
    before = _status_kb(worker, "VmRSS")
    block = bytes(range(256)) * 4096
    expected = hashlib.sha256(block * (STREAM_BYTES // len(block))).hexdigest()

    def blocks():
        for _ in range(STREAM_BYTES // len(block)):
            yield block

    conn = http.client.HTTPSConnection("localhost", gw.port("main"), context=client_ctx(test_pki),
                                       timeout=120)
    conn.request("POST", "/up", body=blocks(), headers={"Content-Length": str(STREAM_BYTES)})
    resp = conn.getresponse()
    info = json.loads(resp.read())
    assert info["body_length"] == STREAM_BYTES and info["body_sha256"] == expected
    conn.request("PUT", "/up", body=blocks(), encode_chunked=True)
    info = json.loads(conn.getresponse().read())
    assert info["body_length"] == STREAM_BYTES and info["body_sha256"] == expected
    for path in (f"/bytes/{STREAM_BYTES}", f"/bytes/{STREAM_BYTES}?chunked=1"):
        conn.request("GET", path)
        resp = conn.getresponse()
        got = 0
        while chunk := resp.read(1 << 20):
            got += len(chunk)
        assert got == STREAM_BYTES
    conn.close()
    peak = _status_kb(worker, "VmHWM")
    assert peak - before < STREAM_MEMORY_BOUND_KB, (before, peak)


def test_slow_reader_holds_the_target_back_not_memory(gateway, test_pki, echo_backend):
    gw = gateway(listener(forward_all()) + group("app", [echo_backend.port]))
    assert get(gw, test_pki, "/warm")[0].status == 200
    [worker] = gw.worker_pids()
    before = _status_kb(worker, "VmRSS")
    size = 64 * 1024 * 1024
    conn = http.client.HTTPSConnection("localhost", gw.port("main"), context=client_ctx(test_pki),
                                       timeout=60)
    conn.request("GET", f"/bytes/{size}")
    resp = conn.getresponse()
    first = resp.read(1 << 16)
    time.sleep(2.0)         # the client stops reading: the gateway must stop reading the target
    mid = _status_kb(worker, "VmRSS")
    got = len(first)
    while chunk := resp.read(1 << 20):
        got += len(chunk)
    conn.close()
    assert got == size
    assert mid - before < 8 * 1024, (before, mid)
    assert _status_kb(worker, "VmHWM") - before < STREAM_MEMORY_BOUND_KB


def test_expect_100_continue(gateway, test_pki, upstreams):
    u = upstreams("u")
    gw = gateway(listener(forward_all()) + group("app", [u.port]))
    sock = socket.create_connection(("127.0.0.1", gw.port("main")), timeout=10)
    tls = client_ctx(test_pki).wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert tls.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    tls.sendall(b"hello")
    out = b""
    while not out.endswith(b"hello"):
        out += tls.recv(65536)
    assert status_of(out) == 200
    tls.close()
    assert b"expect" not in u.seen[0].head.lower()      # answered here, not passed on


def test_head_204_and_304_framing(gateway, test_pki, upstreams, http_servers):
    u = upstreams("u")
    web = http_servers("web")
    gw = gateway(listener('[[listener.rule]]\npath = "/whoami"\naction = "forward"\n'
                          'target_group = "web"\n' + forward_all()) + group("app", [u.port])
                 + group("web", [web.port]))
    # one connection: any framing mistake would corrupt the next response on it
    data = raw(gw, test_pki, b"HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /name HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    parts = data.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"204", b"304", b"200"]
    assert b"Content-Length: 1000\r\n" in parts[0] and parts[0].endswith(b"\r\n\r\n")
    assert parts[1].endswith(b"\r\n\r\n") and b"Transfer-Encoding" not in parts[1]
    assert parts[2].endswith(b"\r\n\r\n") and b"Transfer-Encoding" not in parts[2]
    assert parts[3].endswith(b"\r\n\r\nu")
    # a real 304 from http.server (If-Modified-Since)
    resp, _ = get(gw, test_pki, "/whoami")
    resp, body = get(gw, test_pki, "/whoami", headers={"If-Modified-Since": resp.getheader("Last-Modified")})
    assert resp.status == 304 and body == b""


# --- limits and timeouts ----------------------------------------------------------------------------

LIMITS = """max_request_line_bytes = 256
max_header_bytes = 1024
max_header_count = 10
max_body_bytes = 1000
header_timeout_s = 0.5
body_timeout_s = 0.5
idle_timeout_s = 0.6
max_requests_per_connection = 3
"""


@pytest.fixture(scope="module")
def limited_gateway(shared_gateway):
    u = Upstream("u")
    yield shared_gateway(listener(forward_all(), extra=LIMITS) + group("app", [u.port])), u
    u.stop()


@pytest.fixture
def limited(limited_gateway):
    limited_gateway[1].seen.clear()
    return limited_gateway


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 1100 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(11)) + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413),
], ids=["request-line-414", "header-bytes-431", "header-count-431", "body-413"])
def test_size_limits(limited, test_pki, request_bytes, status):
    gw, u = limited
    out = raw(gw, test_pki, request_bytes)
    assert status_of(out) == status and b"Connection: close" in out
    assert not u.seen


def test_slow_header_gets_408_then_close(limited, test_pki):
    gw, u = limited
    started = time.monotonic()
    out = raw(gw, test_pki, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert status_of(out) == 408 and b"Connection: close" in out
    assert 0.4 < time.monotonic() - started < 3
    gw.wait_log("error", lambda l: l.get("reason") == "header_timeout")
    assert not u.seen


def test_stalled_body_gets_408_then_close(limited, test_pki):
    gw, u = limited
    out = raw(gw, test_pki, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert status_of(out) == 408
    gw.wait_log("error", lambda l: l.get("reason") == "body_timeout")


def test_idle_keep_alive_timeout_and_max_requests(limited, test_pki):
    gw, _ = limited
    started = time.monotonic()
    out = raw(gw, test_pki, b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(out) == 200 and 0.5 < time.monotonic() - started < 3   # closed when idle
    out = raw(gw, test_pki, b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n" * 5)
    responses = out.split(b"HTTP/1.1 ")[1:]
    assert len(responses) == 3          # the third says close and the connection ends
    assert b"Connection: close" in responses[2] and b"Connection: close" not in responses[1]


def test_connections_over_the_limit_wait_in_the_backlog(gateway, test_pki, upstreams):
    u = upstreams("u")
    gw = gateway(listener(forward_all(), extra="max_connections_per_worker = 2\n")
                 + group("app", [u.port]))
    ctx = client_ctx(test_pki)
    first = [http.client.HTTPSConnection("localhost", gw.port("main"), context=ctx, timeout=10)
             for _ in range(2)]
    for conn in first:
        assert get(gw, test_pki, "/name", conn=conn)[1] == b"u"
    waiting: list = []

    def third():
        waiting.append(get(gw, test_pki, "/name", timeout=20))

    t = threading.Thread(target=third)
    t.start()
    time.sleep(1.0)
    assert not waiting          # connected in the kernel's backlog, not accepted: no handshake yet
    first[0].close()
    t.join(10)
    assert waiting and waiting[0][1] == b"u"
    first[1].close()


def test_acceptor_admits_without_a_task_and_gives_back_every_slot():
    """gateway.accept runs uvloop's connect_accepted_socket to its await and finishes it from the
    waiter: every connection gets its protocol's connection_made and connection_lost, a client
    that resets at once included, every slot comes back, no descriptor stays open and the loop
    reports nothing (an abandoned coroutine would close its transport, or warn)."""
    import asyncio
    import os
    import struct

    import uvloop

    from gateway import accept

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        reported: list = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        listening.setblocking(False)
        port = listening.getsockname()[1]
        made: list = []
        lost: list = []

        class Recorder(asyncio.Protocol):
            slot_release = None

            def connection_made(self, transport):
                made.append(transport.get_extra_info("sockname"))
                transport.write(b"hi")

            def connection_lost(self, exc):
                lost.append(exc)
                self.slot_release()

        fds_before = len(os.listdir("/proc/self/fd"))
        acceptor = accept.serve(loop, listening, Recorder, 100)
        reset = struct.pack("ii", 1, 0)
        for i in range(40):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if i % 2:
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            else:
                assert await asyncio.wait_for(reader.readexactly(2), 5) == b"hi"
            writer.close()
        for _ in range(500):
            if len(lost) == 40 and acceptor.active == 0:
                break
            await asyncio.sleep(0.01)
        assert len(made) == 40 and len(lost) == 40 and acceptor.active == 0
        assert all(name[1] == port for name in made)
        acceptor.close()
        listening.close()
        await asyncio.sleep(0.05)
        assert len(os.listdir("/proc/self/fd")) <= fds_before
        assert reported == []

    uvloop.run(scenario())


class _Errors:
    """What gateway.accept logs, kept (the ErrorLog's interface)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, str]] = []

    def _log(self, level, reason, message, **fields):
        self.records.append((level, reason, message))

    def debug(self, reason, message, **fields):
        self._log("debug", reason, message)

    def info(self, reason, message, **fields):
        self._log("info", reason, message)

    def warning(self, reason, message, **fields):
        self._log("warning", reason, message)

    def error(self, reason, message, **fields):
        self._log("error", reason, message)

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.records]


def _acceptor_scenario(scenario) -> None:
    import asyncio

    import uvloop

    async def run() -> None:
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(1024)
        listening.setblocking(False)
        try:
            await scenario(asyncio.get_running_loop(), listening)
        finally:
            listening.close()

    uvloop.run(run())


def _counting_protocol(opened: list, lost: list):
    import asyncio

    class Counting(asyncio.Protocol):
        slot_release = None

        def connection_made(self, transport):
            opened.append(self)
            transport.write(b"+")

        def connection_lost(self, exc):
            lost.append(self)
            self.slot_release()

    return Counting


async def _until(predicate, timeout_s: float = 10.0) -> None:
    import asyncio
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_acceptor_hands_over_between_uvloops_server_and_the_watched_socket():
    """Far from the limit uvloop's own server accepts; at fast_below the watched socket takes
    over and holds the limit exactly (the next client waits in the backlog); below fast_up
    uvloop's server accepts again. Every connection is served once, every slot comes back."""
    import asyncio

    from gateway import accept

    async def scenario(loop, listening) -> None:
        opened, lost = [], []
        limit = 200
        acceptor = accept.serve(loop, listening, _counting_protocol(opened, lost), limit,
                                backlog=1024, errors=_Errors())
        assert (acceptor.fast_below, acceptor.fast_up) == (136, 104)
        await _until(lambda: acceptor.fast is not None)
        assert not acceptor.watching
        port = listening.getsockname()[1]
        clients = []
        for _ in range(limit):
            clients.append(await asyncio.open_connection("127.0.0.1", port))
            assert await asyncio.wait_for(clients[-1][0].readexactly(1), 5) == b"+"
        assert acceptor.active == limit and acceptor.fast is None and not acceptor.watching
        # the limit holds: the next one is connected by the kernel, not accepted
        extra = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(extra[0].readexactly(1), 0.3)
        for _, writer in clients[:100]:
            writer.close()
        await _until(lambda: acceptor.active == 101)    # 100 left, and the waiting one
        assert await asyncio.wait_for(extra[0].readexactly(1), 5) == b"+"
        await _until(lambda: acceptor.fast is not None)
        assert not acceptor.watching
        later = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(later[0].readexactly(1), 5) == b"+"
        for _, writer in clients[100:] + [extra, later]:
            writer.close()
        await _until(lambda: acceptor.active == 0)
        assert len(opened) == len(lost) == limit + 2 and acceptor.overflowed == 0
        acceptor.close()
        assert acceptor.fast is None and not acceptor.watching

    _acceptor_scenario(scenario)


def test_acceptor_closes_what_uvloops_server_takes_past_the_limit():
    """libuv takes what is pending at each wake-up, in C: should one wake-up take more than the
    headroom left under the limit, what comes past the limit is reset at once, its slot given
    back, and logged as accept_overflow (at most once a second, with the count since: none
    goes unlogged)."""
    import asyncio

    from gateway import accept

    async def scenario(loop, listening) -> None:
        errors = _Errors()
        opened, lost = [], []
        acceptor = accept.serve(loop, listening, _counting_protocol(opened, lost), 200,
                                backlog=1024, errors=errors)
        await _until(lambda: acceptor.fast is not None)
        acceptor.active = 200       # as if a burst had filled every slot within one wake-up
        extra = [acceptor._fast_protocol() for _ in range(3)]
        assert all(type(p) is accept._Overflow for p in extra) and not opened
        assert acceptor.active == 203 and acceptor.overflowed == 3

        class Transport:
            aborted = False

            def abort(self):
                self.aborted = True
        for p in extra:
            t = Transport()
            p.connection_made(t)
            assert t.aborted
            p.connection_lost(None)
        assert acceptor.active == 200
        # the first at once, the two that came within the second in one line, a second later
        assert errors.records == [("warning", "accept_overflow", "1 connection(s) accepted in one "
                                   "burst past max_connections_per_worker = 200: closed")]
        await _until(lambda: len(errors.records) == 2, 3.0)
        assert errors.records[1] == ("warning", "accept_overflow", "2 connection(s) accepted in "
                                     "one burst past max_connections_per_worker = 200: closed")
        acceptor.active = 0
        acceptor.close()
        assert len(errors.records) == 2

    _acceptor_scenario(scenario)


_EMFILE_CHILD = r"""
import asyncio, os, resource, socket, sys
import uvloop
from gateway import accept

class Errors:
    def _say(self, level, reason, message, **fields):
        print(level, reason, message, flush=True)
    def debug(self, *a, **k): pass
    def info(self, r, m, **k): self._say("info", r, m)
    def warning(self, r, m, **k): self._say("warning", r, m)
    def error(self, r, m, **k): self._say("error", r, m)

class Counting(asyncio.Protocol):
    slot_release = None
    def connection_made(self, transport):
        transport.write(b"+")
    def connection_lost(self, exc):
        self.slot_release()

async def main():
    loop = asyncio.get_running_loop()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(1024)
    listening.setblocking(False)
    acceptor = accept.serve(loop, listening, Counting, 1000, backlog=1024, errors=Errors())
    while acceptor.fast is None:
        await asyncio.sleep(0.01)
    fds = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (fds + 16, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print("ready", listening.getsockname()[1], flush=True)
    while True:
        await asyncio.sleep(0.05)
        print("state", acceptor.active, acceptor.fast is not None, acceptor.watching, flush=True)

uvloop.run(main())
"""


def test_acceptor_survives_uvloops_server_closing_itself_on_emfile():
    """Out of descriptors, libuv accepts and closes what is pending, silently: the acceptor
    notices within a second, logs accept_failed, retries on the watched socket (which leaves
    connections in the backlog), and once descriptors are free again accepts, uvloop's server
    included."""
    child = subprocess.Popen([sys.executable, "-c", _EMFILE_CHILD], stdout=subprocess.PIPE,
                             text=True, cwd=str(Path(__file__).resolve().parents[2]))
    lines: list[str] = []

    def read_until(pred, timeout_s: float = 15.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if pred(lines[-1]):
                return lines[-1]
        raise AssertionError(f"not seen; the child said: {lines[-20:]}")

    try:
        port = int(read_until(lambda l: l.startswith("ready")).split()[1])
        clients = []
        for _ in range(40):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            clients.append(c)
        read_until(lambda l: l.startswith("error accept_failed"))
        for c in clients:
            c.close()
        read_until(lambda l: l.startswith("state 0 "))
        read_until(lambda l: l.startswith("state 0 True False"))    # uvloop's server again
        late = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert late.recv(1) == b"+"
        late.close()
    finally:
        child.kill()
        child.wait(10)
    assert any(l.startswith("error accept_failed cannot accept: Too many open files; retrying")
               for l in lines), lines[-20:]


# --- request smuggling ------------------------------------------------------------------------------

SMUGGLING = {
    "cl-and-te": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "te-and-cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n"
                 b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "duplicate-cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n"
                    b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "cl-list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 40\r\n\r\n",
    "cl-plus-sign": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "bad-chunk-size": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"10000000000000000\r\nhello\r\n0\r\n\r\n",
    # llhttp's HTTP/0.9: a request line ended by a bare LF, its "version" in the next line
    "http09-bare-lf": b"GET /admin\nX: HTTP/1.1\r\nHost: x\r\n\r\n",
    "chunk-bare-lf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\nhello\r\n0\r\n\r\n",
    "te-not-chunked-last": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                           b"0\r\n\r\n",
    "te-obfuscated": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-in-http10": b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bare-lf-header": b"GET /name HTTP/1.1\r\nHost: x\nX-Smuggle: 1\r\n\r\n",
    "bare-lf-request-line": b"GET /name HTTP/1.1\nHost: x\r\n\r\n",
    "bare-cr": b"GET /name HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
    "obs-fold": b"GET /name HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    "space-before-colon": b"GET /name HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "invalid-method": b"G@T /name HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid-header-name": b"GET /name HTTP/1.1\r\nHost: x\r\nBad[Name]: v\r\n\r\n",
    "no-host": b"GET /name HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET /name HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "nul-in-value": b"GET /name HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
}


@pytest.fixture(scope="module")
def smuggling_target(shared_gateway):
    u = Upstream("u")
    yield shared_gateway(listener(forward_all()) + group("app", [u.port])), u
    u.stop()


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggling_shapes_get_400_and_close(smuggling_target, test_pki, name):
    gw, u = smuggling_target
    u.seen.clear()
    # a good request first on the same connection: it is served, the bad one ends the connection
    sock = socket.create_connection(("127.0.0.1", gw.port("main")), timeout=10)
    tls = client_ctx(test_pki).wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    out = b""
    while not out.endswith(b"\r\n\r\nu"):
        out += tls.recv(65536)
    tls.sendall(SMUGGLING[name] + b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        while chunk := tls.recv(65536):
            out += chunk
    except (ssl.SSLError, ConnectionError):
        pass
    tls.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
    assert statuses == [b"200", b"400"], out
    assert b"Connection: close" in out.split(b"HTTP/1.1 400 ", 1)[1]
    targets = [h.split(b" ")[1] for h in u.heads()]
    assert targets == [b"/first"]          # nothing of the bad request, nothing after it


def test_what_goes_upstream_is_re_serialised(gateway, test_pki, upstreams):
    u = upstreams("u")
    gw = gateway(listener(forward_all()) + group("app", [u.port]))
    out = raw(gw, test_pki, b"\r\nPOST /echo?q=1 HTTP/1.1\r\nhost: x\r\nX-Spaces:   padded value \t\r\n"
                            b"Transfer-Encoding: chunked\r\nConnection: close, X-Hop\r\nX-Hop: drop\r\n"
                            b"Keep-Alive: 5\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer-X: t\r\n\r\n")
    assert status_of(out) == 200 and out.endswith(b"abcde")
    head = u.seen[0].head
    assert head.startswith(b"POST /echo?q=1 HTTP/1.1\r\nhost: x\r\nX-Spaces: padded value\r\n")
    for dropped in (b"X-Hop", b"Keep-Alive", b"Connection", b"ext=1", b"Trailer-X"):
        assert dropped not in head
    assert u.seen[0].body == b"abcde"


def test_acceptor_holds_connections_over_the_limit_in_the_backlog():
    """gateway.accept on its own: at the limit it stops accepting; a slot freed resumes it."""
    import asyncio

    import uvloop

    from gateway import accept

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        listening.setblocking(False)
        port = listening.getsockname()[1]
        opened: list = []

        class Echo(asyncio.Protocol):
            slot_release = None

            def connection_made(self, transport):
                self.transport = transport
                opened.append(self)

            def data_received(self, data):
                self.transport.write(data)

            def connection_lost(self, exc):
                self.slot_release()

        acceptor = accept.serve(loop, listening, Echo, 2)
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0.3)
        assert len(opened) == 2 and acceptor.active == 2 and not acceptor.watching
        # the third is connected (the kernel completed it) but not accepted: no echo
        reader3, writer3 = clients[2]
        writer3.write(b"three")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader3.read(5), 0.3)
        clients[0][1].close()
        assert await asyncio.wait_for(reader3.read(5), 5) == b"three"
        assert len(opened) == 3 and acceptor.active == 2
        acceptor.close()
        late_reader, late_writer = await asyncio.open_connection("127.0.0.1", port)
        clients[1][1].close()
        late_writer.write(b"x")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(late_reader.read(1), 0.3)
        for _, w in clients[1:] + [(late_reader, late_writer)]:
            w.close()
        listening.close()

    uvloop.run(scenario())
