"""Idle-connection flood: what one idle TLS connection costs a gateway worker in memory.

    python -m mtls_gateway_bench.scenarios.flood [--connections 10000] [--mode off|passthrough|verify] [--full]
                          [--peers gateway,nginx] [--root /var/tmp/trixie]

How this works: a throwaway PKI (`harness.certs`) and a gateway of one worker (its own process, logs
off, `max_connections_per_worker` and the header deadline raised so nothing is refused or timed
out) are started on 127.0.0.1. A single-threaded non-blocking client (`open_idle`: one selector,
`ssl.MemoryBIO`, a bounded number of handshakes in flight so the listen backlog never overflows)
opens the connections, completes each TLS 1.3 handshake and keeps the socket open without sending a
request. A connection counts as open once the server's NewSessionTicket arrives: OpenSSL sends it
only after it has read the client's Finished, so the server side has completed its handshake too.
The client then drops its TLS state and keeps only the socket, so the client stays small.

The worker's memory is read from `/proc/PID/status` before and after: `VmRSS` and `RssAnon` (the
resident anonymous pages, that is the heap: Python objects, OpenSSL's and libuv's allocations; file
mappings and page cache excluded). Per connection = (after - before) / N. Kernel socket buffers
are not in either figure.

Handshakes are resumed (TLS 1.3 PSK with ECDHE) after the first one unless `--full`: cheaper for
both sides, which is what lets a test open ten thousand in seconds. A resumed connection keeps a
little less: its session holds the client's leaf certificate, where a full handshake keeps every
certificate the client sent (OpenSSL keeps each decoded, about 5 KB apiece). `--mode` is the
listener's: `verify` (the default) and `passthrough` clients present a certificate, `off` ones do not.

`--peers gateway,nginx` measures nginx the same way beside it (one worker, the harness's
configuration from harness.peers with `worker_connections` and the header timeout raised; `--root`
runs the nginx of a Debian 13 root, as the harness does), and prints the ratio.
"""
from __future__ import annotations

import argparse
import errno
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway import testing

TARGET_BYTES = 40 * 1024    # issue 8: an idle connection costs a worker less than this
MAX_IN_FLIGHT = 200         # handshakes at once: well under the gateway's listen backlog (1024)
OPEN_TIMEOUT_S = 120.0
_CONNECTING, _HANDSHAKE, _TICKET = 1, 2, 3


# -- processes ---------------------------------------------------------------------------------------
def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to `needed` (capped at the hard limit); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def children(pid: int) -> list[int]:
    """The child processes of `pid` (the gateway master's workers)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def memory(pid: int) -> dict[str, int]:
    """Resident memory of a process in bytes: `rss` (all) and `anon` (anonymous: the heap)."""
    fields = {"VmRSS:": "rss", "RssAnon:": "anon"}
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(None, 1)[0] if line else ""
        if key in fields:
            out[fields[key]] = int(line.split()[1]) * 1024
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- the client --------------------------------------------------------------------------------------
def client_context(cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """TLS 1.3 only (the server's ticket marks the end of its handshake); the server certificate
    is not checked: this client measures the server, it does not trust it with anything."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def session_for(port: int, ctx: ssl.SSLContext) -> ssl.SSLSession:
    """One full handshake and one request, to get a session ticket to resume with."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while tls.recv(65536):
                pass
            return tls.session


class _Conn:
    __slots__ = ("sock", "tls", "incoming", "outgoing", "stage")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tls = None
        self.incoming = self.outgoing = None
        self.stage = _CONNECTING


def open_idle(port: int, count: int, ctx: ssl.SSLContext, *, session: ssl.SSLSession | None = None,
              in_flight: int = MAX_IN_FLIGHT, timeout_s: float = OPEN_TIMEOUT_S
              ) -> tuple[list[socket.socket], int]:
    """Open `count` TLS connections to 127.0.0.1:`port`, each with its handshake completed on both
    sides; their sockets (idle: no request sent) and how many of the handshakes resumed `session`.
    Raises if any fails or time runs out; the sockets opened so far are closed then."""
    sel = selectors.DefaultSelector()
    done: list[socket.socket] = []
    live: dict[int, _Conn] = {}
    started = resumed = 0
    deadline = time.monotonic() + timeout_s

    def fail(conn: _Conn, why: str) -> None:
        raise ConnectionError(f"connection {len(done) + len(live)} of {count}: {why}")

    def send(conn: _Conn) -> None:
        data = conn.outgoing.read()
        if data:
            # a handshake flight is a few hundred bytes: a fresh socket's buffer takes it whole
            if conn.sock.send(data) != len(data):
                fail(conn, "short write of a handshake flight")

    try:
        while len(done) < count:
            while started < count and len(live) < in_flight:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise ConnectionError(f"connect: {os.strerror(err)}")
                conn = _Conn(sock)
                live[sock.fileno()] = conn
                sel.register(sock, selectors.EVENT_WRITE, conn)
                started += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(done)} of {count} connections open after {timeout_s:g}s")
            for key, _ in sel.select(min(left, 1.0)):
                conn = key.data
                sock = conn.sock
                if conn.stage == _CONNECTING:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(conn, f"connect: {os.strerror(err)}")
                    conn.incoming, conn.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                    conn.tls = ctx.wrap_bio(conn.incoming, conn.outgoing, server_hostname="localhost",
                                            session=session)
                    try:
                        conn.tls.do_handshake()
                    except ssl.SSLWantReadError:
                        pass
                    send(conn)
                    conn.stage = _HANDSHAKE
                    sel.modify(sock, selectors.EVENT_READ, conn)
                    continue
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    fail(conn, f"recv: {exc}")
                if not data:
                    fail(conn, "closed by the server")
                if conn.stage == _HANDSHAKE:
                    conn.incoming.write(data)
                    try:
                        conn.tls.do_handshake()
                    except ssl.SSLWantReadError:
                        send(conn)
                        continue
                    send(conn)              # the client's Finished
                    resumed += conn.tls.session_reused
                    conn.stage = _TICKET
                    continue
                # the server's NewSessionTicket: its side of the handshake is complete. Keep the
                # socket, drop the client's TLS state (it will never speak again).
                sel.unregister(sock)
                del live[sock.fileno()]
                conn.tls = conn.incoming = conn.outgoing = None
                done.append(sock)
    except BaseException:
        for conn in live.values():
            conn.sock.close()
        for sock in done:
            sock.close()
        raise
    finally:
        sel.close()
    return done, resumed


# -- the measurement ---------------------------------------------------------------------------------
def measure(port: int, worker: int, count: int, ctx: ssl.SSLContext, *, resume: bool = True,
            warmup: int = 64) -> dict:
    """Open `count` idle connections to a gateway whose only worker is `worker`; memory and fds
    of the worker before, with all of them open, and after they are closed. The sockets are
    closed before returning."""
    session = session_for(port, ctx) if resume else None
    for sock in open_idle(port, warmup, ctx, session=session)[0]:   # first-use allocations, free lists
        sock.close()
    fds0 = settled_fd_count(worker)
    before = memory(worker)
    t0 = time.monotonic()
    socks, resumed = open_idle(port, count, ctx, session=session)
    try:
        opened_s = time.monotonic() - t0
        open_fds = fd_count(worker)
        during = memory(worker)
    finally:
        for sock in socks:
            sock.close()
    fds1 = settled_fd_count(worker, at_most=fds0)
    return {
        "connections": count, "resumed": resumed, "open_s": round(opened_s, 2),
        "fds_before": fds0, "fds_open": open_fds, "fds_after": fds1,
        "rss_before": before["rss"], "rss_open": during["rss"],
        "anon_before": before["anon"], "anon_open": during["anon"],
        "rss_per_conn": (during["rss"] - before["rss"]) / count,
        "anon_per_conn": (during["anon"] - before["anon"]) / count,
    }


def settled_fd_count(pid: int, *, at_most: int | None = None, timeout_s: float = 30.0) -> int:
    """A process's descriptor count once it is down to `at_most`, or, without one, once it holds
    still (the same twice, 50 ms apart); whatever it is when `timeout_s` runs out. Closes reach a
    worker's loop as the clients' FINs and resets arrive, not at once."""
    deadline = time.monotonic() + timeout_s
    last = fd_count(pid)
    while time.monotonic() < deadline:
        if at_most is not None and last <= at_most:
            return last
        time.sleep(0.05)
        now = fd_count(pid)
        if at_most is None and now == last:
            return now
        last = now
    return last


def _gateway_config(d: Path, bench, port: int, mode: str, connections: int) -> str:
    return testing.toml({
        "gateway": {"workers": 1, "access_log": "off", "connection_log": "off", "error_log": d / "error.log"},
        "listener": [testing.listener("flood", port, bench.server_certs["ecdsa"], bench.server_keys["ecdsa"],
                                      mtls=mode, trust_store="main" if mode == "verify" else None,
                                      max_connections_per_worker=connections + 1000, header_timeout_s=600,
                                      idle_timeout_s=600)],
        "trust_store": {"main": {"ca_bundle": bench.ca_bundle}},
    })


def _measure_gateway(d: Path, bench, args) -> dict:
    port = testing.free_port()
    (d / "gateway.toml").write_text(_gateway_config(d, bench, port, args.mode, args.connections))
    gateway = testing.GatewayProcess(d / "gateway.toml", [port], stderr=subprocess.DEVNULL, wait=False)
    try:
        ctx = client_context(*((bench.client_cert, bench.client_key) if args.mode != "off" else ()))
        gateway.wait_ready(timeout=30.0)
        session_for(port, ctx)          # served: the worker is up
        workers = children(gateway.pid)
        if len(workers) != 1:
            raise RuntimeError(f"expected one gateway worker, found {workers}")
        return measure(port, workers[0], args.connections, ctx, resume=not args.full)
    finally:
        gateway.stop(timeout=60)


def _measure_nginx(d: Path, bench, args) -> dict:
    """nginx measured the same way: one worker, the harness's configuration (harness.peers) with room
    for every connection and no header deadline inside the measurement."""
    from ..harness import peers
    spec = peers.find_server("nginx", "nginx", Path(args.root) if args.root else None)
    if isinstance(spec, peers.Missing):
        raise RuntimeError(spec.reason)
    peer = peers.Peer(spec, bench, [(args.mode, "ecdsa")], workers=1, server_cpus=(0,), crl=False,
                      workdir=d / "nginx")
    conf = (peer._host_dir / "nginx.conf")
    text = conf.read_text().replace("worker_connections 4096;",
                                    f"worker_connections {args.connections + 1000}; ")
    text = text.replace("events {", f"worker_rlimit_nofile {args.connections + 2000};\nevents {{")
    text = text.replace("    keepalive_timeout 60s;",
                        "    keepalive_timeout 600s;\n    client_header_timeout 600s;")
    conf.write_text(text)
    peer.start()
    try:
        port = peer.port(args.mode, "ecdsa")
        ctx = client_context(*((bench.client_cert, bench.client_key) if args.mode != "off" else ()))
        session_for(port, ctx)
        workers = children(peer.pid)
        if len(workers) != 1:
            raise RuntimeError(f"expected one nginx worker, found {workers}")
        r = measure(port, workers[0], args.connections, ctx, resume=not args.full)
        r["peer"] = spec.describe()
        return r
    finally:
        peer.stop()


def _report(name: str, r: dict, args) -> None:
    kb = 1024
    print(f"{name}: {r['connections']} idle TLS 1.3 connections (mtls = {args.mode}, {r['resumed']} "
          f"handshakes resumed) opened in {r['open_s']:.1f}s on one worker")
    print(f"  RSS   {r['rss_before'] / 2**20:7.1f} -> {r['rss_open'] / 2**20:7.1f} MiB   "
          f"{r['rss_per_conn'] / kb:6.1f} KB per connection")
    print(f"  anon  {r['anon_before'] / 2**20:7.1f} -> {r['anon_open'] / 2**20:7.1f} MiB   "
          f"{r['anon_per_conn'] / kb:6.1f} KB per connection  (x{r['anon_per_conn'] / TARGET_BYTES:.2f} "
          f"of the {TARGET_BYTES // kb} KB target)")
    print(f"  fds   {r['fds_before']} -> {r['fds_open']} -> {r['fds_after']} after closing")


def main(argv: list[str] | None = None) -> int:
    from ..harness import certs
    parser = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--mode", choices=("off", "passthrough", "verify"), default="verify",
                        help="the listener's mtls mode; passthrough and verify present a client certificate")
    parser.add_argument("--full", action="store_true", help="full handshakes only (no resumption)")
    parser.add_argument("--peers", default="gateway", help="comma-separated: gateway, nginx")
    parser.add_argument("--root", default=None, help="run nginx from this root (chroot), as the harness does")
    args = parser.parse_args(argv)
    limit = raise_fd_limit(args.connections + 256)
    if limit < args.connections + 64:
        print(f"the fd limit ({limit}) is too low for {args.connections} connections", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mtls-gateway-flood-") as tmp:
        d = Path(tmp)
        bench = certs.make(d / "pki")
        for name in args.peers.split(","):
            name = name.strip()
            try:
                if name == "gateway":
                    results[name] = _measure_gateway(d, bench, args)
                elif name == "nginx":
                    results[name] = _measure_nginx(d, bench, args)
                else:
                    print(f"unknown peer {name!r}", file=sys.stderr)
                    return 2
            except RuntimeError as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                return 1
            _report(results[name].get("peer", name), results[name], args)
    if "gateway" in results and "nginx" in results:
        g, n = results["gateway"], results["nginx"]
        print(f"gateway / nginx per idle connection: anon x{g['anon_per_conn'] / n['anon_per_conn']:.2f}, "
              f"RSS x{g['rss_per_conn'] / n['rss_per_conn']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
