"""Floods against a real gateway process of one worker: ten thousand idle TLS connections held at
once (memory per idle connection measured, every descriptor given back when they close), and a
flood of handshakes with an untrusted certificate, each refused, while good clients keep their
latency. The worker is the master's only child; its memory and descriptors are read from /proc."""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import time

import pytest

from mtls_gateway_bench.scenarios import flood

from .conftest import client_ctx, tls_get

pytestmark = pytest.mark.integration

IDLE_CONNECTIONS = 10_000
MAX_BYTES_PER_IDLE_CONNECTION = 40 * 1024       # issue 8: under 40 KB per idle connection
FD_MARGIN = 512                 # the test process's own descriptors besides the client sockets
FD_SETTLE_S = 30.0              # closes reach the worker's loop as FINs and resets arrive

# The bad-certificate flood: FLOODERS processes, each opening one connection at a time, together
# FLOOD_RATE full handshakes a second (one worker refuses 500-1,000 a second on a 2-core test
# machine: 1-1.7 ms of its CPU each). A flood that saturated the worker would make every
# handshake, good or bad, queue behind the others (they look alike until the certificate
# arrives); what is shown here is that refusals stay cheap and the loop keeps serving good
# clients in turn. The flooders run at nice 19: they share the machine with the client being
# measured, and their own CPU must not be what slows it down (at nice 0, eight of them on two
# cores slow every process on the machine, the gateway included, four to eight times).
FLOODERS = 4
FLOOD_RATE = 200.0
MIN_FLOOD_RATE = FLOOD_RATE / 2     # below this the flood did not happen and nothing was shown
ROUNDS = 3                  # idle and flooded phases alternate, so drift on the machine hits both
PROBES_PER_PHASE = 25
PROBE_GAP_S = 0.04          # good clients arrive at 25/s, one at a time
MAX_LATENCY_RATIO = 2.0     # issue 8: within 2x of an idle gateway

VERIFY_LISTENER = """
[[listener]]
name = "{name}"
bind = "127.0.0.1:{{port_{name}}}"
certificates = [{{{{cert = "{pki}/server.pem", key = "{pki}/server.key"}}}}]
mtls = "verify"
trust_store = "main"
{extra}
[[listener.rule]]
action = "fixed-response"
fixed_response = {{{{status = 200, body = "ok"}}}}
"""
TRUST_STORE = """
[trust_store.main]
ca_bundle = "{pki}/ca-bundle.pem"
"""

# A bad client: handshakes back to back (paced to `rate` a second) with the certificate it is
# given, sends a request after each and counts what came back. "ready" once the first attempt is
# over; on EOF on stdin it finishes the attempt in hand and prints its counts as JSON.
FLOODER = r"""
import json, os, socket, ssl, sys, threading, time
port, cert, key, rate = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
os.nice(19)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(cert, key)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
counts = {"refused": 0, "closed": 0, "admitted": 0, "errors": 0}
errors = []
next_at = time.monotonic()
while not stop.is_set():
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                # TLS 1.3: the client's side of the handshake ends before the server has judged
                # its certificate; the refusal (an alert) is what the request meets
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                reply = tls.recv(4096)
        counts["admitted" if reply else "closed"] += 1
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        counts["refused"] += 1
    except OSError as exc:
        counts["errors"] += 1
        errors.append(repr(exc))
    if sum(counts.values()) == 1:
        print("ready", flush=True)
    next_at += 1.0 / rate
    delay = next_at - time.monotonic()
    if delay > 0:
        stop.wait(delay)
    else:
        next_at = time.monotonic()      # behind: no burst to catch up
print(json.dumps({"counts": counts, "errors": errors[:3]}), flush=True)
"""


def _request(port: int, ctx: ssl.SSLContext) -> bytes:
    """A new connection, a full handshake, one request; the whole response."""
    return tls_get(port, ctx, timeout=30)


def _only_worker(gw) -> int:
    workers = flood.children(gw.proc.pid)
    assert len(workers) == 1, f"workers = 1 but the master has children {workers}"
    return workers[0]


def _fds(pid: int) -> dict[int, str]:
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            pass
    return out


def _assert_fds_return(pid: int, baseline: int) -> None:
    flood.settled_fd_count(pid, at_most=baseline, timeout_s=FD_SETTLE_S)
    left = _fds(pid)
    assert len(left) <= baseline, (f"worker {pid} holds {len(left)} descriptors, {baseline} before: "
                                   f"{sorted(left.values())[:40]}")


@pytest.fixture
def fd_room():
    """Room in this process for IDLE_CONNECTIONS client sockets; the old limit is put back after."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE_CONNECTIONS + FD_MARGIN
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is below the {needed} descriptors "
                    f"{IDLE_CONNECTIONS} connections need")
    flood.raise_fd_limit(needed)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_ten_thousand_idle_connections_on_one_worker(gateway_factory, test_pki, fd_room):
    """10,000 TLS connections to a verify listener (a client with a certificate, resuming its
    session), handshakes completed, held open at once by one worker that still serves a new
    client; under 40 KB of worker memory each; every descriptor given back once they close (half
    with a FIN, half with a reset)."""
    # room enough that uvloop's server accepts throughout (gateway.accept: the watched socket
    # takes over at 7/8 of the limit, and the duplicate descriptor uvloop's server used closes)
    limit = IDLE_CONNECTIONS + 2000
    gw = gateway_factory(
        VERIFY_LISTENER.format(name="idle", pki=test_pki.dir,
                               extra=f"max_connections_per_worker = {limit}\n"
                                     f"header_timeout_s = 600\nidle_timeout_s = 600"),
        extra=TRUST_STORE.format(pki=test_pki.dir), names=["idle"], gateway="workers = 1")
    port = gw.port("idle")
    good = client_ctx(test_pki, "good")
    assert _request(port, good).startswith(b"HTTP/1.1 200")
    worker = _only_worker(gw)
    # Returning clients resume (TLS 1.3 PSK, no certificate sent): cheap for both sides. The
    # session keeps the client's leaf; after a full handshake OpenSSL keeps the intermediate the
    # client sent too (about 5 KB more: `python -m mtls_gateway_bench.scenarios.flood --full`
    # measures that case).
    idle = flood.client_context(test_pki.clients["good"].cert, test_pki.clients["good"].key)
    session = flood.session_for(port, idle)
    warm, _ = flood.open_idle(port, 64, idle, session=session)  # first-use allocations, free lists
    for sock in warm:
        sock.close()
    fds_before = flood.settled_fd_count(worker)
    mem_before = flood.memory(worker)
    started = time.monotonic()
    socks, resumed = flood.open_idle(port, IDLE_CONNECTIONS, idle, session=session)
    try:
        opened_s = time.monotonic() - started
        mem_open = flood.memory(worker)
        fds_open = flood.fd_count(worker)
        # every one of them accepted and held by the worker, which still serves a new client
        assert fds_open >= fds_before + IDLE_CONNECTIONS, (fds_before, fds_open)
        assert _request(port, good).startswith(b"HTTP/1.1 200")
    finally:
        linger_reset = struct.pack("ii", 1, 0)
        for i, sock in enumerate(socks):
            if i % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_reset)
            sock.close()
    anon = (mem_open["anon"] - mem_before["anon"]) / IDLE_CONNECTIONS
    rss = (mem_open["rss"] - mem_before["rss"]) / IDLE_CONNECTIONS
    print(f"\n{IDLE_CONNECTIONS} idle TLS connections ({resumed} resumed) opened in {opened_s:.1f}s; "
          f"worker memory per idle connection: {anon / 1024:.1f} KB anonymous, {rss / 1024:.1f} KB RSS; "
          f"worker fds {fds_before} -> {fds_open}")
    # the heap (anonymous memory) is what connections cost; RSS also moves with file pages touched
    assert anon < MAX_BYTES_PER_IDLE_CONNECTION, f"{anon / 1024:.1f} KB per idle connection"
    _assert_fds_return(worker, fds_before)
    assert flood.children(gw.proc.pid) == [worker]


class _Flood:
    """FLOODERS bad clients at FLOOD_RATE handshakes a second, from ready to stop."""

    def __init__(self, port: int, cert, key) -> None:
        self.procs = [subprocess.Popen(
            [sys.executable, "-c", FLOODER, str(port), str(cert), str(key), str(FLOOD_RATE / FLOODERS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(FLOODERS)]
        for proc in self.procs:
            line = proc.stdout.readline()
            if line.strip() != "ready":
                self.stop({}, [])
                raise AssertionError(f"a flooder did not start: {line!r} {proc.stderr.read()[-2000:]}")
        self.started = time.monotonic()
        self.seconds = 0.0

    def stop(self, totals: dict, errors: list) -> None:
        """Stop every flooder; add their counts to `totals` and a few of their errors to `errors`."""
        self.seconds = time.monotonic() - getattr(self, "started", time.monotonic())
        for proc in self.procs:         # all told at once; each finishes the attempt in hand
            proc.stdin.close()
        for proc in self.procs:
            out, err = proc.stdout.read(), proc.stderr.read()
            proc.wait(60)
            lines = out.strip().splitlines()
            assert proc.returncode == 0 and lines, f"flooder failed: {err[-2000:]}"
            report = json.loads(lines[-1])
            for key, value in report["counts"].items():
                totals[key] = totals.get(key, 0) + value
            errors += report["errors"]


def _probe(port: int, ctx: ssl.SSLContext,
           kept: http.client.HTTPSConnection) -> tuple[list[float], list[float]]:
    """Good clients, one at a time at 25/s: seconds from connect to the whole 200 response; and
    after each, the time of one request on a kept-alive connection of a good client."""
    new, again = [], []
    next_at = time.monotonic()
    for _ in range(PROBES_PER_PHASE):
        started = time.perf_counter()
        reply = _request(port, ctx)
        new.append(time.perf_counter() - started)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:100]
        started = time.perf_counter()
        kept.request("GET", "/")
        response = kept.getresponse()
        assert response.read() == b"ok" and response.status == 200
        again.append(time.perf_counter() - started)
        next_at += PROBE_GAP_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    return new, again


def test_bad_certificate_flood_is_refused_and_good_clients_keep_their_latency(gateway_factory, test_pki):
    """A flood of full handshakes with an untrusted client certificate: every one refused with an
    alert (none admitted), each refusal in the connection log and the error log, and good clients
    keep their median latency within 2x of the same clients against the idle gateway: a new one
    (connect, full handshake, one request) and one on a kept-alive connection (one request)."""
    gw = gateway_factory(VERIFY_LISTENER.format(name="v", pki=test_pki.dir, extra=""),
                         extra=TRUST_STORE.format(pki=test_pki.dir), names=["v"], gateway="workers = 1")
    port = gw.port("v")
    good = client_ctx(test_pki, "good")
    for _ in range(10):
        assert _request(port, good).startswith(b"HTTP/1.1 200")
    worker = _only_worker(gw)
    fds_before = flood.settled_fd_count(worker)
    bad = test_pki.clients["untrusted"]
    kept = http.client.HTTPSConnection("localhost", port, context=good, timeout=30)
    idle: list[float] = []
    flooded: list[float] = []
    idle_kept: list[float] = []
    flooded_kept: list[float] = []
    totals: dict = {}
    errors: list = []
    flood_s = 0.0
    try:
        for _ in range(ROUNDS):
            new, again = _probe(port, good, kept)
            idle += new
            idle_kept += again
            run = _Flood(port, bad.cert, bad.key)
            try:
                new, again = _probe(port, good, kept)
                flooded += new
                flooded_kept += again
            finally:
                run.stop(totals, errors)
            flood_s += run.seconds
    finally:
        kept.close()
    attempts = totals["refused"] + totals["closed"]
    rate = (attempts + totals["admitted"]) / flood_s
    idle_ms = statistics.median(idle) * 1000
    flooded_ms = statistics.median(flooded) * 1000
    kept_ms = statistics.median(idle_kept) * 1000, statistics.median(flooded_kept) * 1000
    print(f"\ngood clients, median of {len(idle)}, idle vs under a flood of {rate:.0f} bad "
          f"handshakes/s: new connection + request {idle_ms:.2f} -> {flooded_ms:.2f} ms "
          f"(x{flooded_ms / idle_ms:.2f}); a request on a kept-alive connection {kept_ms[0]:.3f} -> "
          f"{kept_ms[1]:.3f} ms (x{kept_ms[1] / kept_ms[0]:.2f}); flood: {totals}")
    assert totals["admitted"] == 0, f"bad clients admitted: {totals}"
    assert totals["errors"] == 0, f"bad clients could not even connect: {totals} {errors}"
    assert rate >= MIN_FLOOD_RATE, f"the flood reached only {rate:.0f} handshakes/s"
    assert flooded_ms <= MAX_LATENCY_RATIO * idle_ms, (
        f"new good clients took {flooded_ms:.2f} ms under the flood, {idle_ms:.2f} ms idle")
    assert kept_ms[1] <= MAX_LATENCY_RATIO * kept_ms[0], (
        f"a kept-alive good client took {kept_ms[1]:.3f} ms under the flood, {kept_ms[0]:.3f} ms idle")

    # one refusal line per bad connection in each log, with its verify status; every good one accepted
    def lines(which: str, key: str, value: str) -> list[dict]:
        return [r for r in gw.lines(which) if r.get(key) == value]
    untrusted = "Failed:ClientCertUntrusted"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            len(lines("connection", "tls_verify_status", untrusted)) < attempts
            or len(lines("error", "verify_status", untrusted)) < attempts):
        time.sleep(0.05)
    conn_refused = lines("connection", "tls_verify_status", untrusted)
    assert len(conn_refused) == attempts, (len(conn_refused), attempts)
    assert {(r["result"], r["reason"]) for r in conn_refused} == {("refused", "client_cert_refused")}
    err_refused = lines("error", "verify_status", untrusted)
    assert len(err_refused) == attempts, (len(err_refused), attempts)
    assert {r["reason"] for r in err_refused} == {"client_cert_refused"}
    other = [r for r in lines("connection", "result", "refused") if r["tls_verify_status"] != untrusted]
    # the fixture's readiness check connects and leaves without a ClientHello
    assert {r["reason"] for r in other} <= {"closed_before_handshake"}, other[:3]
    assert len(lines("connection", "result", "accepted")) == 10 + len(idle) + len(flooded) + 1
    _assert_fds_return(worker, fds_before)
    assert flood.children(gw.proc.pid) == [worker]
