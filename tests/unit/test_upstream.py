"""gateway.upstream: balancing, health-check state, passive ejection, pools, TLS contexts.

No sockets and no sleeps: timers are scheduled on a loop that is never left running, health
results are handed to the group directly, and connections are stand-ins with a fake transport.
"""
from __future__ import annotations

import asyncio
import ssl

import pytest

from gateway.config import HealthCheckSpec, TargetGroupSpec, UpstreamTLSSpec
from gateway.errors import UpstreamError
from gateway.http1 import Data, EndOfMessage, Response
from gateway.health import _Probe
from gateway.upstream import (TargetGroup, UpstreamClosed, UpstreamConnection, UpstreamFailed,
                              client_context)

A, B, C = ("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)
HC = HealthCheckSpec(path="/healthz", interval_s=1.0, timeout_s=0.5, healthy_threshold=2,
                     unhealthy_threshold=3)


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple] = []

    def log(self, level, reason, message, **fields) -> None:
        self.lines.append((level, reason, message, fields))

    def reasons(self) -> list[str]:
        return [line[1] for line in self.lines]


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def upstream(self, group, target, latency_s, ok) -> None:
        self.calls.append((group, target, ok))


@pytest.fixture
def loop():
    """A loop that is running while the test body runs (timers are scheduled, never waited for)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


def running(test):
    """Run a test body inside a coroutine on the `loop` fixture, so get_running_loop() works."""
    import functools

    @functools.wraps(test)
    def wrapper(loop, *args, **kw):
        async def body():
            return test(loop, *args, **kw)
        return loop.run_until_complete(body())
    return wrapper


def make(targets=(A, B, C), **kw) -> TargetGroup:
    return TargetGroup("app", targets, errors=kw.pop("errors", Log()), **kw)


def labels(targets) -> list[str]:
    return [t.label for t in targets]


# --- balancing --------------------------------------------------------------------------------------

def test_round_robin_in_turn_and_outstanding_counts():
    g = make()
    picked = [g.pick() for _ in range(6)]
    assert labels(picked) == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] * 2
    assert [t.outstanding for t in g.targets] == [2, 2, 2]
    for t in picked:
        g.done(t)
    assert [t.outstanding for t in g.targets] == [0, 0, 0]


def test_least_outstanding_requests_picks_the_least_busy():
    g = make(load_balancing="least_outstanding_requests")
    a, b, c = g.targets
    a.outstanding, b.outstanding, c.outstanding = 3, 1, 2
    assert g.pick() is b
    assert g.pick() in (b, c)           # b now has 2, as c has: either
    a.outstanding = b.outstanding = c.outstanding = 0
    # equal load: the starting point rotates, so ties do not all land on the first target
    seen = set()
    for _ in range(3):
        t = g.pick()
        seen.add(t.label)
        g.done(t)
    assert len(seen) == 3


def test_pick_excluding_targets_already_tried():
    g = make()
    a, b, c = g.targets
    assert g.pick(exclude=(a, b)) is c
    assert g.pick(exclude=(a, b, c)) is None
    one = make(targets=(A,))
    assert one.pick(exclude=one.targets) is None
    lor = make(load_balancing="least_outstanding_requests")
    assert lor.pick(exclude=lor.targets[:2]) is lor.targets[2]


def test_ipv6_labels_are_bracketed():
    assert make(targets=(("::1", 9000),)).targets[0].label == "[::1]:9000"


# --- active health checks ---------------------------------------------------------------------------

def test_first_health_check_decides_at_once():
    log, obs = Log(), Observer()
    g = make(health_check=HC, errors=log)
    g.observer = obs
    a, b, c = g.targets
    g.health.result(b, False, "connection refused", True, 0.01)
    assert not b.healthy and g.available == (a, c)
    assert log.reasons() == ["target_unhealthy"] and log.lines[0][0] == "warning"
    assert log.lines[0][3] == {"target_group": "app", "target": "10.0.0.2:80",
                               "detail": "connection refused"}
    assert obs.calls == [("app", "10.0.0.2:80", False)]


def test_thresholds_count_consecutive_results():
    log = Log()
    g = make(health_check=HC, errors=log)
    a = g.targets[0]
    for ok in (False, False, True, False, False):       # a pass resets the failure run
        g.health.result(a, ok, "x", False, 0.0)
    assert a.healthy
    g.health.result(a, False, "status 500 does not match 200-399", False, 0.0)
    assert not a.healthy and a not in g.available
    g.health.result(a, True, "status 200", False, 0.0)
    assert not a.healthy                                  # healthy_threshold = 2
    g.health.result(a, False, "x", False, 0.0)
    g.health.result(a, True, "status 200", False, 0.0)
    assert not a.healthy                                  # the run of passes was broken
    g.health.result(a, True, "status 200", False, 0.0)
    assert a.healthy and a in g.available
    assert log.reasons() == ["target_unhealthy", "target_healthy"]


def test_no_available_target_means_pick_returns_none():
    g = make(targets=(A,), health_check=HC)
    g.health.result(g.targets[0], False, "down", True, 0.0)
    assert g.pick() is None


# --- passive ejection -------------------------------------------------------------------------------

@running
def test_ejection_after_consecutive_failures_and_return(loop):
    log, obs = Log(), Observer()
    g = make(ejection_failures=3, ejection_duration_s=30.0, errors=log)
    g.observer = obs
    a, b, c = g.targets
    g.connection_failed(b, "upstream_connect_failed")
    g.connection_failed(b, "upstream_connect_failed")
    assert not b.ejected and b in g.available
    g.connection_failed(b, "upstream_closed")
    assert b.ejected and g.available == (a, c)
    assert log.reasons() == ["target_ejected"]
    assert "30s after 3 connection failures in a row (last: upstream_closed)" in log.lines[0][2]
    assert obs.calls == [("app", "10.0.0.2:80", False)]
    assert b._uneject is not None and b._uneject.when() - loop.time() == pytest.approx(30, abs=1)
    g.connection_failed(b, "again")                      # already out: nothing more
    assert log.reasons() == ["target_ejected"]
    b._uneject._run()                                     # the ejection ends
    assert not b.ejected and b.failures == 0 and g.available == (a, b, c)
    assert log.reasons() == ["target_ejected", "target_returned"]
    assert "ejection ended" in log.lines[1][2]


@running
def test_a_passing_health_check_ends_an_ejection(loop):
    log = Log()
    g = make(ejection_failures=1, health_check=HC, errors=log)
    a = g.targets[0]
    g.connection_failed(a, "upstream_connect_failed")
    assert a.ejected
    g.health.result(a, True, "status 200", False, 0.0)
    assert not a.ejected and a in g.available and a._uneject is None
    assert log.reasons() == ["target_ejected", "target_returned"]
    assert "health check passed" in log.lines[1][2]


@running
def test_ejection_off_with_zero(loop):
    g = make(ejection_failures=0)
    for _ in range(100):
        g.connection_failed(g.targets[0], "x")
    assert not g.targets[0].ejected


@running
def test_a_success_resets_the_failure_run(loop):
    g = make(ejection_failures=2)
    a = g.targets[0]
    g.connection_failed(a, "x")
    g.connection_ok(a)
    g.connection_failed(a, "x")
    assert not a.ejected


@running
def test_close_cancels_timers(loop):
    g = make(ejection_failures=1)
    g.connection_failed(g.targets[0], "x")
    handle = g.targets[0]._uneject
    g.close()
    assert handle.cancelled() and g.targets[0]._uneject is None


# --- pools ------------------------------------------------------------------------------------------

class FakeTransport:
    def __init__(self) -> None:
        self.closed = False
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        self.written.append(data)


def conn(g: TargetGroup, target) -> UpstreamConnection:
    c = UpstreamConnection(g, target)
    c.connection_made(FakeTransport())
    return c


@running
def test_release_and_take_idle_most_recent_first(loop):
    g = make(max_idle_per_target=2)
    a = g.targets[0]
    c1, c2, c3 = conn(g, a), conn(g, a), conn(g, a)
    for c in (c1, c2, c3):
        g.release(c)
    assert list(a.idle) == [c1, c2] and c3.transport.closed       # at most max_idle_per_target
    taken = g.take_idle(a)
    assert taken is c2 and taken.reused and not c1.reused
    c1.transport.close()                                          # died while idle
    assert g.take_idle(a) is None
    g.close()


@running
def test_pool_disabled_with_zero(loop):
    g = make(max_idle_per_target=0)
    c = conn(g, g.targets[0])
    g.release(c)
    assert c.transport.closed and not g.targets[0].idle


@running
def test_a_closed_connection_leaves_the_pool_and_tells_its_owner(loop):
    g = make()
    a = g.targets[0]
    idle = conn(g, a)
    g.release(idle)
    idle.connection_lost(None)
    assert not a.idle

    class Owner:
        lost = None

        def upstream_event(self, c, events):
            self.lost = (c, events)

    busy = conn(g, a)
    busy.owner = owner = Owner()
    reset = ConnectionResetError()
    busy.connection_lost(reset)
    c, events = owner.lost
    assert c is busy and busy.owner is None
    assert len(events) == 1 and type(events[0]) is UpstreamClosed and events[0].exc is reset


@running
def test_bytes_on_an_idle_connection_close_it(loop):
    g = make()
    c = conn(g, g.targets[0])
    c.data_received(b"HTTP/1.1 200 OK\r\n\r\n")
    assert c.closed and c.transport.closed


class Events:
    """An owner that records what its upstream connection reports."""

    def __init__(self) -> None:
        self.reads: list = []

    def upstream_event(self, c, events):
        self.reads.append(list(events))


def owned(g, method=b"GET", upgrade=False):
    c = conn(g, g.targets[0])
    c.owner = owner = Events()
    c.expect(method, upgrade)
    return c, owner


@running
def test_the_connection_parses_its_response_and_emits_events_per_read(loop):
    g = make()
    c, owner = owned(g)
    c.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
    c.data_received(b"llo")
    head, body = owner.reads
    assert type(head[0]) is Response and head[0].status == 200 and head[1] == Data(b"he")
    assert body == [Data(b"llo"), EndOfMessage()]


@running
def test_a_close_delimited_body_ends_with_the_connection(loop):
    g = make()
    c, owner = owned(g)
    c.data_received(b"HTTP/1.1 200 OK\r\n\r\nabc")
    c.connection_lost(None)
    end = owner.reads[-1]
    assert type(end[-1]) is UpstreamClosed and end[-1].exc is None
    assert EndOfMessage() in end


@running
def test_a_broken_response_is_one_failure_event(loop):
    g = make()
    c, owner = owned(g)
    c.data_received(b"SSH-2.0-OpenSSH\r\n\r\n")
    (read,) = owner.reads
    assert type(read[-1]) is UpstreamFailed and isinstance(read[-1].error, UpstreamError)


@running
def test_after_a_101_bytes_pass_unparsed(loop):
    g = make()
    c, owner = owned(g, upgrade=True)
    c.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: upgrade\r\n\r\n\x81\x02hi")
    c.data_received(b"HTTP/1.1 not parsed")
    first, second = owner.reads
    assert first[0].status == 101 and first[1] == EndOfMessage() and first[2] == b"\x81\x02hi"
    assert second == [b"HTTP/1.1 not parsed"] and c.tunnel
    c.connection_lost(None)
    assert len(owner.reads[-1]) == 1 and type(owner.reads[-1][0]) is UpstreamClosed


# --- construction from the configuration ------------------------------------------------------------

def test_from_spec_plain():
    spec = TargetGroupSpec(name="app", targets=(A, B), connect_timeout_s=1.0, read_timeout_s=2.0,
                           max_idle_per_target=3, idle_timeout_s=4.0,
                           load_balancing="least_outstanding_requests", ejection_failures=6,
                           ejection_duration_s=7.0, health_check=HC)
    g = TargetGroup.from_spec(spec)
    assert (g.name, g.connect_timeout_s, g.read_timeout_s, g.max_idle_per_target,
            g.idle_timeout_s, g.least_outstanding, g.ejection_failures,
            g.ejection_duration_s, g.health_check) == ("app", 1.0, 2.0, 3, 4.0, True, 6, 7.0, HC)
    assert g.ssl is None and all(t.server_hostname is None for t in g.targets)
    assert g.health._request % b"10.0.0.1:80" == (
        b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.1:80\r\nUser-Agent: mtls-gateway-health-check\r\n"
        b"Accept: */*\r\nConnection: close\r\n\r\n")


def test_from_spec_with_tls(test_pki):
    good = test_pki.clients["good"]
    tls = UpstreamTLSSpec(ca_bundle=test_pki.ca_bundle, cert=good.cert, key=good.key,
                          server_name="backend.internal")
    g = TargetGroup.from_spec(TargetGroupSpec(name="s", targets=(A, ("b.example", 443)), tls=tls))
    assert isinstance(g.ssl, ssl.SSLContext)
    assert g.ssl.verify_mode == ssl.CERT_REQUIRED and g.ssl.check_hostname
    assert g.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [t.server_hostname for t in g.targets] == ["backend.internal"] * 2
    g2 = TargetGroup.from_spec(TargetGroupSpec(name="s", targets=(A, ("b.example", 443)),
                                               tls=UpstreamTLSSpec(ca_bundle=test_pki.ca_bundle)))
    assert [t.server_hostname for t in g2.targets] == ["10.0.0.1", "b.example"]


def test_client_context_uses_the_system_store_without_a_bundle():
    ctx = client_context(UpstreamTLSSpec())
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.cert_store_stats()["x509_ca"] >= 0


# --- the health-check exchange ------------------------------------------------------------------------

def probe(loop) -> tuple[_Probe, asyncio.Future, FakeTransport]:
    waiter = loop.create_future()
    p = _Probe(b"GET / HTTP/1.1\r\n\r\n", waiter)
    t = FakeTransport()
    p.connection_made(t)
    return p, waiter, t


def test_probe_reads_the_status_in_pieces(loop):
    p, waiter, t = probe(loop)
    assert t.written == [b"GET / HTTP/1.1\r\n\r\n"]
    p.data_received(b"HTTP/1.1 20")
    assert not waiter.done()
    p.data_received(b"4 No Content\r\n\r\n")
    assert waiter.result() == 204


def test_probe_refuses_garbage_and_early_close(loop):
    p, waiter, _ = probe(loop)
    p.data_received(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert isinstance(waiter.exception(), UpstreamError)
    p, waiter, _ = probe(loop)
    p.connection_lost(None)
    assert "closed the connection before answering" in str(waiter.exception())
