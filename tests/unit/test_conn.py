"""The connection core (gateway.conn) on its own: no sockets, no loop, a fake clock.

A real TLS client (Python's ssl over memory BIOs) talks to a `Connection` built from a real
listener runtime; the test plays the shell: it hands the core the client's bytes with a time,
feeds the core's `Actions.out` back to the client, and keeps what else the core asked for (log
records, connects, reading, close, the next deadline). Target groups are fakes that hand out fake
upstream connections, so a forward is driven event by event.
"""
from __future__ import annotations

import ssl
import tomllib

import pytest

from gateway import config, server, testing
from gateway import conn as conn_mod
from gateway.conn import ABORT, CLOSE, STATE, Connection
from gateway.errors import UpstreamError
from gateway.http1 import Data, EndOfMessage, Response
from gateway.upstream import UpstreamClosed

T0 = 1000.0

needs_native_core = pytest.mark.skipif(
    conn_mod.NATIVE is None, reason="gateway._conn_c is not built (run `python -m pip install -e .`)")
CORES = [pytest.param(Connection, id="core-python"),
         pytest.param(conn_mod.NATIVE, id="core-native", marks=needs_native_core)]


@pytest.fixture(params=CORES, autouse=True)
def core_class(request):
    """Every test here runs on both twins of the core (the one `Peer` makes by default)."""
    conn_mod.set_native("off" if request.param is Connection else "on")
    yield request.param
    conn_mod.set_native("auto")


_RULES = """
[[listener.rule]]
priority = 10
path = "/app/*"
action = "forward"
target_group = "app"

[[listener.rule]]
priority = 20
action = "fixed-response"
fixed_response = {status = 200, body = "ok"}
"""

# one catch-all rule: every request gets its answer without a match (RouteTable.unconditional)
CATCH_ALL = """
[[listener.rule]]
priority = 1
action = "fixed-response"
fixed_response = {status = 203, body = "all"}
"""


def _runtime(test_pki, rules=_RULES, **listener):
    """The `web` listener with `rules` (TOML text); `listener` are its other keys as TOML values."""
    d = test_pki.dir
    fields = tomllib.loads("\n".join(f"{k} = {v}" for k, v in listener.items()))
    web = testing.listener("web", 9, d / "server.pem", d / "server.key", mtls="verify", rules=(), **fields)
    conf = config.loads(
        testing.toml({"gateway": {"access_log": "off", "connection_log": "off", "error_log": "-"},
                      "listener": [web]})
        + rules
        + testing.toml({"trust_store": {"main": {"ca_bundle": d / "ca-bundle.pem"}},
                        "target_group": {"app": {"targets": ["127.0.0.1:9"], "read_timeout_s": 5}}}))
    rt = server.build_runtime(conf).listeners["web"]
    rt.access_log = Sink()
    rt.connection_log = Sink()
    rt.target_groups = {"app": FakeGroup()}
    return rt


class Sink:
    enabled = True

    def write(self, record) -> None:     # pragma: no cover - the core hands records back instead
        raise AssertionError("the core writes no log itself")


class FakeTarget:
    label = "10.0.0.1:80"
    failures = 0


class FakeUpstream:
    """An upstream connection: records what the core writes and does to it."""

    def __init__(self, group) -> None:
        self.group = group
        self.written: list[bytes] = []
        self.closed = False
        self.paused = False
        self.reused = False
        self.reader = object()
        self.last_activity = 0.0
        self.owner = None
        self.expected = None
        self.reading = True

    def expect(self, method, upgrade=False):
        self.expected = (method, upgrade)

    def write(self, data):
        self.written.append(data)

    def close(self):
        self.closed = True

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def write_eof(self):
        return False


class FakeGroup:
    name = "app"
    read_timeout_s = 5.0

    def __init__(self) -> None:
        self.targets = (FakeTarget(),)
        self.idle: list[FakeUpstream] = []
        self.outstanding = 0
        self.released: list = []
        self.failed: list = []

    def pick(self, exclude=()):
        t = self.targets[0]
        if t in exclude:
            return None
        self.outstanding += 1
        return t

    def done(self, target):
        self.outstanding -= 1

    def take_idle(self, target):
        return self.idle.pop() if self.idle else None

    def release(self, conn):
        self.released.append(conn)

    def connection_failed(self, target, reason):
        self.failed.append(reason)


class Peer:
    """A TLS client and the shell's side of one core."""

    def __init__(self, test_pki, rt, client="good", core=None) -> None:
        ctx = ssl.create_default_context(cafile=str(test_pki.root_pem))
        c = test_pki.clients[client]
        ctx.load_cert_chain(c.cert, c.key)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.now = T0
        self.core = (core or conn_mod.core_class)(rt, "192.0.2.7", 50123, self.now)
        self.core.owner = self
        self.logs: list = []
        self.connects: list = []
        self.closed = 0
        self.reading = True
        self.writes = 0
        self.armed = 0.0
        self.deadline = self.take(self.core.acts)

    def take(self, acts):
        """What a shell does with the actions; returns the deadline."""
        if acts.out:
            self.writes += 1
            self.incoming.write(b"".join(acts.out))
            acts.out.clear()
        if acts.logs:
            self.logs += acts.logs
        acts.logs = None
        if acts.connects:
            self.connects += acts.connects
        acts.connects = None
        if acts.reading is not None:
            self.reading = acts.reading
            acts.reading = None
        if acts.close:
            self.closed = acts.close
            acts.close = 0
        acts.more = False
        if acts.rearm:
            self.armed = acts.rearm
            acts.rearm = 0.0
        self.deadline = acts.deadline
        return acts.deadline

    def pump(self) -> None:
        data = self.outgoing.read()
        if data:
            self.take(self.core.receive(data, self.now))

    def handshake(self) -> None:
        for _ in range(10):
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.pump()
        self.pump()     # the client's Finished (TLS 1.3): the server's side is done with it

    def send(self, data: bytes) -> bytes:
        self.tls.write(data)
        self.pump()
        return self.read()

    def read(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                return out
            if not chunk:
                return out
            out += chunk

    def at(self, t: float) -> None:
        """The clock moves to `t` and the shell's timer fires (the core checks what is due)."""
        self.now = t
        self.armed = 0.0
        self.take(self.core.timeout(t))

    def access(self) -> list[dict]:
        return [e[1] for e in self.logs if e[0] == "access"]

    def errors(self) -> list[str]:
        return [e[2] for e in self.logs if e[0] == "error"]


def ok(length, headers) -> Response:
    return Response(status=200, reason=b"OK", http_version=b"1.1", headers=headers, keep_alive=True,
                    content_length=length, chunked=length is None)


GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture
def rt(test_pki):
    return _runtime(test_pki)


def open_peer(test_pki, rt, core=None) -> Peer:
    p = Peer(test_pki, rt, core=core)
    p.handshake()
    assert p.core.state.name == "OPEN"
    return p


def test_handshake_then_keep_alive_requests(test_pki, rt):
    p = Peer(test_pki, rt)
    assert p.deadline == T0 + rt.spec.handshake_timeout_s
    p.handshake()
    conn_log = [e[1] for e in p.logs if e[0] == "connection"]
    assert len(conn_log) == 1 and conn_log[0]["result"] == "accepted"
    assert conn_log[0]["tls_verify_status"] == "Success"
    # the first request is awaited for as long as a header may take
    assert p.deadline == T0 + rt.spec.header_timeout_s
    for i in range(3):
        p.now += 1
        answer = p.send(GET)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
        assert p.deadline == p.now + rt.spec.idle_timeout_s
    assert [a["status"] for a in p.access()] == [200, 200, 200]
    assert p.access()[0]["subject"] and p.access()[0]["verify_status"] == "Success"
    assert not p.closed and p.core.current is None


def test_pipelined_requests_answer_in_order_in_one_write(test_pki, rt):
    p = open_peer(test_pki, rt)
    writes = p.writes
    answer = p.send(GET + b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n" + GET)
    assert answer.count(b"HTTP/1.1 200") == 3
    assert p.writes == writes + 1
    assert [a["method"] for a in p.access()] == ["GET", "HEAD", "GET"]


def test_handshake_deadline_resets_the_connection(test_pki, rt):
    p = Peer(test_pki, rt)
    p.at(T0 + rt.spec.handshake_timeout_s - 0.01)
    assert not p.closed
    p.at(T0 + rt.spec.handshake_timeout_s)
    assert p.closed == ABORT and "handshake_timeout" in p.errors()
    p.take(p.core.lost(p.now))
    conn_log = [e[1] for e in p.logs if e[0] == "connection"]
    assert conn_log[-1]["reason"] == "handshake_timeout" and conn_log[-1]["result"] == "refused"


def test_idle_deadline_closes_quietly_and_is_renewed_by_requests(test_pki, rt):
    p = open_peer(test_pki, rt)
    p.send(GET)
    first = p.deadline
    p.now += 5
    p.send(GET)
    assert p.deadline == first + 5
    p.at(first)             # the old deadline: not idle that long
    assert not p.closed
    p.at(p.deadline)
    assert p.closed == CLOSE and p.core.close_reason == "idle_timeout"


def test_the_shell_timer_moves_only_for_an_earlier_deadline(test_pki, rt):
    p = open_peer(test_pki, rt)
    armed = p.armed
    assert armed == p.deadline
    for _ in range(3):
        p.now += 1
        p.send(GET)
    assert p.armed == armed < p.deadline       # the idle deadline moved later: timer untouched
    p.at(armed)                                 # it fires early: nothing is due, armed anew
    assert not p.closed and p.armed == p.deadline == T0 + 3 + rt.spec.idle_timeout_s


def test_header_deadline_answers_408_and_closes(test_pki, rt):
    p = open_peer(test_pki, rt)
    assert p.send(b"GET / HTTP/1.1\r\nHost: loc") == b""
    assert p.deadline == p.now + rt.spec.header_timeout_s
    p.at(p.deadline)
    assert p.read().startswith(b"HTTP/1.1 408")
    assert p.closed == CLOSE and "header_timeout" in p.errors()
    assert p.access()[-1]["status"] == 408 and p.access()[-1]["reason"] == "header_timeout"


def test_malformed_request_is_400_and_close(test_pki, rt):
    p = open_peer(test_pki, rt)
    answer = p.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"Connection: close" in answer
    assert p.closed == CLOSE


def test_refused_upgrade_is_501_and_close(test_pki, rt):
    p = open_peer(test_pki, rt)
    answer = p.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\n"
                    b"Upgrade: websocket\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501") and p.closed == CLOSE
    assert "upgrade_refused" in p.errors()


def test_forward_to_a_new_upstream_connection(test_pki, rt):
    p = open_peer(test_pki, rt)
    group = rt.target_groups["app"]
    assert p.send(b"GET /app/x?q=1 HTTP/1.1\r\nHost: localhost\r\n\r\n") == b""
    (ex, g, target), = p.connects
    assert g is group and target is group.targets[0] and ex.connecting
    up = FakeUpstream(group)
    p.take(p.core.upstream_connected(ex, up, p.now))
    head = up.written[0]
    assert head.startswith(b"GET /app/x?q=1 HTTP/1.1\r\n")
    assert b"X-Amzn-Mtls-Clientcert-Subject:" in head and b"X-Forwarded-For: 192.0.2.7" in head
    assert up.owner is p and up.expected == (b"GET", False)
    assert p.deadline == p.now + 5.0          # the upstream read deadline
    p.now += 0.5
    p.take(p.core.upstream_event(up, [ok(5, [(b"Content-Length", b"5")]),
                                      Data(b"hello"), EndOfMessage()], p.now))
    answer = p.read()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"hello")
    assert group.released == [up] and group.outstanding == 0
    rec = p.access()[-1]
    assert rec["status"] == 200 and rec["upstream"] == "10.0.0.1:80" and rec["duration_ms"] == 500.0
    assert p.core.idle_deadline == p.now + rt.spec.idle_timeout_s
    # the read deadline is left to come due (it finds no exchange): not moved per request
    assert p.deadline == T0 + 5.0
    p.at(T0 + 5.0)
    assert not p.closed and p.deadline == T0 + 0.5 + rt.spec.idle_timeout_s


def test_a_pooled_connection_is_reused_and_a_race_close_retried(test_pki, rt):
    p = open_peer(test_pki, rt)
    group = rt.target_groups["app"]
    pooled = FakeUpstream(group)
    pooled.reused = True
    group.idle.append(pooled)
    p.send(b"GET /app/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert pooled.written and not p.connects
    # the target had closed it as we sent: the request goes again on a new connection
    p.take(p.core.upstream_event(pooled, [UpstreamClosed(None)], p.now))
    (ex, _, _), = p.connects
    assert ex.retried and not p.closed


def test_upstream_read_deadline_is_504(test_pki, rt):
    p = open_peer(test_pki, rt)
    group = rt.target_groups["app"]
    up = FakeUpstream(group)
    group.idle.append(up)
    p.send(b"GET /app/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    p.at(p.now + 4.9)
    assert not p.closed
    p.at(p.now + 0.2)
    assert p.read().startswith(b"HTTP/1.1 504") and up.closed
    assert p.closed == CLOSE and "upstream_timeout" in p.errors()


def test_upstream_connect_failure_is_502(test_pki, rt):
    p = open_peer(test_pki, rt)
    p.send(b"GET /app/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    (ex, group, target), = p.connects
    exc = UpstreamError("connect to 10.0.0.1:80 failed: refused", status=502,
                        reason="upstream_connect_failed", target=target.label)
    p.take(p.core.upstream_connect_failed(ex, group, target, exc, p.now))
    assert p.read().startswith(b"HTTP/1.1 502") and p.closed == CLOSE
    assert p.access()[-1]["status"] == 502


def test_a_client_slow_to_take_the_response_is_dropped(test_pki, rt):
    p = open_peer(test_pki, rt)
    group = rt.target_groups["app"]
    up = FakeUpstream(group)
    group.idle.append(up)
    p.send(b"GET /app/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    p.take(p.core.upstream_event(up, [ok(None, []),
                                      Data(b"x" * 1000)], p.now))
    p.take(p.core.pause_writing(p.now))
    assert not up.reading                           # back-pressure passed to the target
    p.at(p.now + rt.spec.body_timeout_s)
    assert p.closed == ABORT and "client_send_timeout" in p.errors()
    assert p.access()[-1]["aborted"] and up.closed


def test_drain_closes_an_idle_keep_alive_connection(test_pki, rt):
    p = open_peer(test_pki, rt)
    p.send(GET)
    p.take(p.core.drain(p.now))
    assert p.closed == CLOSE and p.core.close_reason == "shutdown"


# --- the native twin against the pure one -----------------------------------------------------------

def test_the_native_core_starts_as_the_pure_one(test_pki):
    """The native __init__ sets every field of STATE as the pure one does."""
    if conn_mod.NATIVE is None:
        pytest.skip("gateway._conn_c is not built")
    rt = _runtime(test_pki)
    pure, native = Connection(rt, "192.0.2.7", 4433, T0), conn_mod.NATIVE(rt, "192.0.2.7", 4433, T0)

    def start(core):
        out = {}
        for name in STATE:
            value = getattr(core, name)
            if name == "tls":
                value = (type(value).__name__, value.state)
            elif name == "acts":
                value = tuple(getattr(value, a) for a in type(value).__slots__)
            out[name] = value
        return out
    assert start(native) == start(pure)
    assert start(pure)["conn_deadline"] == T0 + rt.spec.handshake_timeout_s


def test_the_native_core_has_the_pure_cores_state():
    if conn_mod.NATIVE is None:
        pytest.skip("gateway._conn_c is not built")
    assert set(Connection.__slots__) == set(STATE)
    assert all(hasattr(conn_mod.NATIVE, name) for name in STATE)
    assert conn_mod.NATIVE.__slots__ == ()      # no second copy of any field


# Arrivals that reach the native fast path and every way of leaving it: keep-alive and closing,
# HTTP/1.0, HEAD, pipelining, partial heads, Connection options, forged header spellings, paths that
# need normalising or are refused, a rule with a body, and a request over the per-connection limit.
SESSIONS = [
    [GET, GET, b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n"],
    [b"GET /x HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: localhost\r\n\r\n", GET],
    [b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"],
    [GET + GET + b"GET /y?q=1 HTTP/1.1\r\nHost: localhost\r\n\r\n"],
    [GET + b"GET / HTTP/1.1\r\nHo", b"st: localhost\r\n\r\n", GET],
    # a served request with the start of the next head behind it, on a kept-alive connection:
    # the partial head gets the header deadline, not the idle one
    [GET, GET + b"GET / HTTP/1.1\r\nHo", b"st: localhost\r\n\r\n"],
    [b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"],
    [b"GET / HTTP/1.1\r\nHost: localhost\r\nX_Amzn_Mtls_Clientcert: forged\r\n\r\n", GET],
    [b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: x-forwarded-for\r\n\r\n"],
    [b"GET /a//b/./c/../d HTTP/1.1\r\nHost: localhost\r\n\r\n", GET],
    [b"GET /a%2fb HTTP/1.1\r\nHost: localhost\r\n\r\n"],
    [b"GET /a%41b?x=%2f HTTP/1.1\r\nHost: LOCALHOST.:8443\r\n\r\n", GET],
    [b"GET http://localhost/abs HTTP/1.1\r\nHost: localhost\r\n\r\n", GET],
    [b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc", GET],
    [b"GET / HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"],
    [b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: other\r\n\r\n"],
    [b"GET\x00 / HTTP/1.1\r\n\r\n"],
    [GET] * 5,
]


def _comparable(entry):
    kind = entry[0]
    if kind == "error":
        return entry[:4] + (tuple(sorted(entry[4].items())),)
    record = dict(entry[1])
    for key in ("time", "conn_trace_id", "tls_handshake_latency"):
        record.pop(key, None)
    return kind, tuple(sorted((k, repr(v)) for k, v in record.items()))


_COMPARED = ("requests", "read_paused", "write_paused", "header_deadline_armed", "conn_deadline",
             "conn_timer", "idle_deadline", "up_deadline", "close_reason", "draining", "peer_done",
             "armed", "rx_at")


def _play(p, arrivals):
    """Each arrival written by the client and pumped in; what the client read, the state and the
    deadlines after each, and the logs."""
    seen = []
    for i, data in enumerate(arrivals):
        p.now = T0 + 1 + i
        p.tls.write(data)
        p.pump()
        state = {name: getattr(p.core, name) for name in _COMPARED}
        seen.append((p.read(), p.core.state, p.closed, p.deadline, state,
                     p.core.held is None, p.core.current is None))
    return seen, [_comparable(e) for e in p.logs]


def _run(test_pki, arrivals, core, rules=_RULES, observer=None, **listener):
    rt = _runtime(test_pki, rules, **listener)
    if observer is not None:
        rt.observer = observer
    return _play(open_peer(test_pki, rt, core=core), arrivals)


def _run_riding(test_pki, arrivals, core, **listener):
    """`_run`, but the first arrival travels with the client's Finished (TLS 1.3: a client writes
    its Finished and its first request back to back), so the handshake completes in the same
    receive that carries the request."""
    p = Peer(test_pki, _runtime(test_pki, **listener), core=core)
    for _ in range(10):
        try:
            p.tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            p.pump()
    assert p.core.state.name == "HANDSHAKE"
    return _play(p, arrivals)


@needs_native_core
@pytest.mark.parametrize("arrivals", SESSIONS, ids=[str(i) for i in range(len(SESSIONS))])
def test_native_and_pure_cores_answer_alike_when_the_request_rides_with_the_finished(
        test_pki, arrivals):
    pure = _run_riding(test_pki, arrivals, Connection)
    native = _run_riding(test_pki, arrivals, conn_mod.NATIVE)
    assert native == pure
    assert any(out for out, *_ in pure[0])
    assert pure[0][0][4]["requests"] >= 1 or pure[0][0][2]     # served, or refused and closed


@needs_native_core
@pytest.mark.parametrize("arrivals", SESSIONS, ids=[str(i) for i in range(len(SESSIONS))])
@pytest.mark.parametrize("listener", [{}, {"max_requests_per_connection": 2}], ids=["", "limit2"])
def test_native_and_pure_cores_answer_alike(test_pki, arrivals, listener, core_class):
    if core_class is not Connection:
        pytest.skip("compares both twins itself")
    pure = _run(test_pki, arrivals, Connection, **listener)
    native = _run(test_pki, arrivals, conn_mod.NATIVE, **listener)
    assert native == pure
    assert any(out for out, *_ in pure[0])      # the session was answered at all


@needs_native_core
@pytest.mark.parametrize("arrivals", SESSIONS, ids=[str(i) for i in range(len(SESSIONS))])
def test_native_and_pure_cores_answer_alike_with_one_catch_all_rule(test_pki, arrivals,
                                                                     core_class):
    if core_class is not Connection:
        pytest.skip("compares both twins itself")
    pure = _run(test_pki, arrivals, Connection, CATCH_ALL)
    native = _run(test_pki, arrivals, conn_mod.NATIVE, CATCH_ALL)
    assert native == pure
    assert any(b" 203 " in out for out, *_ in pure[0]) or pure[0][0][2]


class CountingObserver(type(conn_mod.NULL_OBSERVER)):
    """Records `request` calls, and takes native counters (`attach_counts`) as the Prometheus
    observer does; `seen` is every request, counted either way."""

    def __init__(self) -> None:
        self.calls = []
        self.sources = []

    def request(self, listener, status, duration_s) -> None:
        self.calls.append((listener, status, duration_s))

    def attach_counts(self, source) -> None:
        self.sources.append(source)

    def seen(self):
        from collections import Counter
        counted = Counter((listener, status, d) for listener, status, d in self.calls)
        self.native = 0
        for source in self.sources:
            for status, n in source.take_counts():
                counted[(source.name, status, 0.0)] += n
                self.native += n
        return counted


@needs_native_core
@pytest.mark.parametrize("rules", [_RULES, CATCH_ALL], ids=["rules", "catch-all"])
def test_native_counters_count_what_the_pure_core_reports(test_pki, rules, core_class):
    if core_class is not Connection:
        pytest.skip("compares both twins itself")
    natively = 0
    for arrivals in SESSIONS:
        pure_obs, native_obs = CountingObserver(), CountingObserver()
        _run(test_pki, arrivals, Connection, rules, observer=pure_obs)
        _run(test_pki, arrivals, conn_mod.NATIVE, rules, observer=native_obs)
        assert pure_obs.sources == []                   # the pure core calls request() only
        assert native_obs.seen() == pure_obs.seen(), arrivals
        natively += native_obs.native
    assert natively > 0         # the native path counted some of them itself


# rules on host, path and method: the native core remembers their decisions (no rule reads a header)
ROUTED = """
[[listener.rule]]
priority = 1
host = "a.example"
path = "/a/*"
action = "fixed-response"
fixed_response = {status = 201, body = "a"}

[[listener.rule]]
priority = 2
methods = ["HEAD"]
action = "fixed-response"
fixed_response = {status = 202, body = "head"}

[[listener.rule]]
priority = 3
path = "/b*"
action = "fixed-response"
fixed_response = {status = 203, body = "b"}

[[listener.rule]]
priority = 9
action = "fixed-response"
fixed_response = {status = 200, body = "rest"}
"""


@needs_native_core
def test_remembered_route_decisions_are_the_tables_own(test_pki, core_class):
    """More distinct (host, path, method) than the native core remembers (so it forgets and
    starts again), each spelling of a host, asked again later: every answer equals the pure
    core's, which matches every request afresh."""
    if core_class is not Connection:
        pytest.skip("compares both twins itself")
    import random
    rnd = random.Random(5)
    hosts = [b"a.example", b"A.Example.", b"a.example:8443", b"b.example", b"[::1]:443"]
    arrivals = []
    for i in range(340):
        path = rnd.choice([b"/a/%d" % (i % 290), b"/b%d" % i, b"/a", b"/c/%d?q=1" % i,
                           b"/a/" + b"y" * 300])     # too long to be remembered
        method = rnd.choice([b"GET", b"GET", b"HEAD"])
        arrivals.append(b"%s %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (method, path, rnd.choice(hosts)))
    pure = _run(test_pki, arrivals, Connection, ROUTED)
    native = _run(test_pki, arrivals, conn_mod.NATIVE, ROUTED)
    assert native == pure
    answers = [out.split(b" ", 2)[1] for out, *_ in pure[0]]
    assert {b"200", b"201", b"202", b"203"} <= set(answers)
