"""Load generators: `openssl s_time` processes, our own latency and keep-alive clients, and `ab -k`.

How this works:

- Throughput. N `openssl s_time` processes (the neutral external client: the OpenSSL command line,
  no code of ours) connect over and over, each new TLS connection fetching `/` (`-www /`, without
  which s_time never reads the TLS 1.3 tickets and so cannot resume). s_time prints one character
  per completed connection and flushes it: `*` for a full handshake, `r` for a resumed one. Its own
  summary has whole-second resolution, so the harness does not use it: it lets the clients warm up,
  counts the characters written so far, waits the measuring window, counts again and only then stops
  them. Handshakes, server CPU and client CPU are all read at the same two instants.
- Latency. `python -m mtls_gateway_bench.harness.load latency` (pinned to the client CPUs) opens
  one connection at a time on a fixed schedule (a sub-saturating rate) and times each from its scheduled start to the
  first byte of the response, so the server's own handshake work (in TLS 1.3 it checks the client's
  certificate after the client considers the handshake done) is inside the figure, and a server
  that falls behind the schedule is charged for the wait (no coordinated omission).
- Keep-alive. `ab -k` (apache2-utils, HTTP/1.0 keep-alive) when installed, and always our own
  HTTP/1.1 client (`python -m mtls_gateway_bench.harness.load keepalive`), which needs nothing but a
  server that speaks HTTP/1.1: one TLS connection per process, then requests back to back.
"""
from __future__ import annotations

import argparse
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import cpu
from .stats import percentile

S_TIME_MARKS = frozenset("*rt3")     # s_time's per-connection characters (s_time.c: 'r' = reused)
WARMUP_S = 0.5                        # process start-up, certificate loading, first connections
STOP_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 10.0
AB_TIMEOUT_S = 5                      # ab -s: per-response timeout, so a stuck run ends quickly
AB_MAX_REQUESTS = 100_000_000         # with -t, ab otherwise stops at 50,000 requests
HOST = "127.0.0.1"
SNI = "localhost"


# --- openssl s_time -------------------------------------------------------------------------------

def s_time_command(openssl: list[str], port: int, *, resume: bool, tls: str, cert: Path, key: Path,
                   ca: Path, max_s: int) -> list[str]:
    return [*openssl, "s_time", "-connect", f"{HOST}:{port}", "-reuse" if resume else "-new",
            "-www", "/", "-cert", str(cert), "-key", str(key), "-CAfile", str(ca),
            "-tls1_3" if tls == "1.3" else "-tls1_2", "-time", str(max_s)]


def count_connections(text: str) -> tuple[int, int]:
    """(full, resumed) connections in s_time output so far: the lines made only of its marks."""
    full = resumed = 0
    for line in text.splitlines():
        if line and set(line) <= S_TIME_MARKS:
            resumed += line.count("r")
            full += len(line) - line.count("r")
    return full, resumed


_SUMMARY = re.compile(r"^(\d+) connections in ([\d.]+)s; ([\d.]+) connections/user sec", re.M)


def parse_summary(text: str) -> tuple[int, float] | None:
    """s_time's own summary, when it ran to its end: (connections, client user seconds)."""
    m = _SUMMARY.search(text)
    return (int(m.group(1)), float(m.group(2))) if m else None


@dataclass
class Window:
    """What one measuring window saw."""
    connections: int
    resumed: int
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float
    busy_s: float = 0.0         # all CPU time spent on the server and client CPUs, by anyone
    errors: list[str] = field(default_factory=list)

    @property
    def other_cpu_s(self) -> float:
        """CPU time on our CPUs that neither the server nor the clients used: other work."""
        return max(0.0, self.busy_s - self.server_cpu_s - self.client_cpu_s)

    @property
    def resumed_fraction(self) -> float | None:
        return self.resumed / self.connections if self.connections else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def run_s_time(openssl: list[str], port: int, server_pid: int, *, resume: bool, tls: str,
               cert: Path, key: Path, ca: Path, clients: int, client_cpus: tuple[int, ...],
               seconds: float, workdir: Path, warmup_s: float = WARMUP_S,
               server_cpus: tuple[int, ...] = ()) -> Window:
    """Run `clients` s_time processes against the server and measure one window of `seconds`."""
    max_s = int(warmup_s + seconds) + 30    # they are stopped long before this
    cmd = s_time_command(openssl, port, resume=resume, tls=tls, cert=cert, key=key, ca=ca, max_s=max_s)
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    outs: list[Path] = []
    errs: list[Path] = []
    try:
        for i in range(clients):
            out, err = workdir / f"s_time-{i}.out", workdir / f"s_time-{i}.err"
            outs.append(out)
            errs.append(err)
            with open(out, "wb") as fo, open(err, "wb") as fe:
                procs.append(subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                              preexec_fn=cpu.pin(client_cpus)))
        time.sleep(warmup_s)
        pids = [p.pid for p in procs]
        c0 = [count_connections(_read(o)) for o in outs]
        ours = set(server_cpus) | set(client_cpus)
        b0 = cpu.busy_seconds(ours)
        s0, k0, t0 = cpu.tree_seconds(server_pid), cpu.processes_seconds(pids), time.monotonic()
        time.sleep(seconds)
        s1, k1, t1 = cpu.tree_seconds(server_pid), cpu.processes_seconds(pids), time.monotonic()
        b1 = cpu.busy_seconds(ours)
        c1 = [count_connections(_read(o)) for o in outs]
    finally:
        _stop_all(procs)
    full = sum(b[0] - a[0] for a, b in zip(c0, c1))
    resumed = sum(b[1] - a[1] for a, b in zip(c0, c1))
    errors = []
    for p, e, o in zip(procs, errs, outs):
        if p.returncode not in (None, 0, -signal.SIGTERM, -signal.SIGKILL):
            text = (_read(e).strip() or _read(o).strip()).splitlines()
            errors.append(f"s_time exited with {p.returncode}: {' | '.join(text[-3:])}")
    return Window(full + resumed, resumed, t1 - t0, s1 - s0, k1 - k0, b1 - b0, errors)


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- ab -k ----------------------------------------------------------------------------------------

def ab_command(ab: str, port: int, *, tls: str, combined: Path, concurrency: int,
               seconds: float) -> list[str]:
    return [ab, "-k", "-q", "-s", str(AB_TIMEOUT_S), "-c", str(concurrency),
            "-t", str(max(1, round(seconds))), "-n", str(AB_MAX_REQUESTS), "-E", str(combined),
            "-f", "TLS1.3" if tls == "1.3" else "TLS1.2", f"https://{HOST}:{port}/"]


@dataclass(frozen=True)
class ABResult:
    complete: int
    failed: int
    keepalive: int
    non_2xx: int
    time_s: float


def parse_ab(text: str) -> ABResult | None:
    def grab(label: str, cast=int, default=None):
        m = re.search(rf"^{re.escape(label)}:\s+([\d.]+)", text, re.M)
        return cast(m.group(1)) if m else default
    complete = grab("Complete requests")
    taken = grab("Time taken for tests", float)
    if complete is None or taken is None:
        return None
    return ABResult(complete, grab("Failed requests", default=0), grab("Keep-Alive requests", default=0),
                    grab("Non-2xx responses", default=0), taken)


# --- our clients (run as `python -m mtls_gateway_bench.harness.load ...`, pinned to the client CPUs)

def _client_context(tls: str, cert: str | None, key: str | None, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    version = ssl.TLSVersion.TLSv1_3 if tls == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


_CLOSE_REQUEST = f"GET / HTTP/1.1\r\nHost: {SNI}\r\nConnection: close\r\n\r\n".encode()
_CRLF = b"\r\n"
_KEEPALIVE_REQUEST = f"GET / HTTP/1.1\r\nHost: {SNI}\r\n\r\n".encode()


def _one_connection(ctx: ssl.SSLContext, port: int, session):
    """Connect, handshake, send one request; (first-byte time, session, reused)."""
    with socket.create_connection((HOST, port), timeout=REQUEST_TIMEOUT_S) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_hostname=SNI, session=session) as s:
            s.sendall(_CLOSE_REQUEST)
            if not s.recv(1):
                raise ConnectionError("closed before a response")
            first = time.perf_counter()
            reused = s.session_reused
            while True:     # to the end, so the TLS 1.3 tickets are read and the close is clean
                try:
                    if not s.recv(65536):
                        break
                except (ssl.SSLError, OSError):
                    break
            return first, s.session, reused


def latency(port: int, *, rate: float, count: int, resume: bool, tls: str, cert: str, key: str,
            ca: str) -> dict:
    ctx = _client_context(tls, cert, key, ca)
    session = None
    errors: list[str] = []
    if resume:
        _, session, _ = _one_connection(ctx, port, None)
    interval = 1.0 / rate
    latencies: list[float] = []
    services: list[float] = []
    reused = 0
    start = time.perf_counter() + 0.05
    for i in range(count):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        began = time.perf_counter()
        try:
            first, new_session, was_reused = _one_connection(ctx, port, session if resume else None)
        except (OSError, ssl.SSLError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if resume and new_session is not None:
            session = new_session
        reused += bool(was_reused)
        latencies.append(first - due)
        services.append(first - began)
    latencies.sort()
    services.sort()
    elapsed = time.perf_counter() - start
    return {
        "count": len(latencies), "errors": len(errors), "error_sample": errors[:3],
        "resumed": reused, "rate": rate, "achieved_rate": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": _ms(percentile(latencies, 0.50)), "p99_ms": _ms(percentile(latencies, 0.99)),
        "max_ms": _ms(latencies[-1] if latencies else None),
        "service_p50_ms": _ms(percentile(services, 0.50)),
        "service_p99_ms": _ms(percentile(services, 0.99)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def keepalive(port: int, *, seconds: float, tls: str, cert: str | None, key: str | None, ca: str) -> dict:
    """Requests back to back over one TLS connection for `seconds`. A server that ends the
    connection after a number of requests (nginx's `keepalive_requests`, the gateway's
    `max_requests_per_connection`) says so with `Connection: close`: the client then opens a new
    one, and reports how many it opened so their handshakes can be subtracted."""
    ctx = _client_context(tls, cert, key, ca)
    requests = connections = 0
    error = None
    began = time.perf_counter()
    deadline = began + seconds
    s = None
    try:
        while time.perf_counter() < deadline:
            s = _connect(ctx, port)
            connections += 1
            done, closing = _requests(s, deadline)
            requests += done
            s.close()
            s = None
            if not closing:
                break
    except (OSError, ssl.SSLError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - began
    if s is not None:
        try:
            s.close()
        except OSError:
            pass
    return {"requests": requests, "seconds": elapsed, "connections": connections, "error": error}


def _connect(ctx: ssl.SSLContext, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=REQUEST_TIMEOUT_S)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname=SNI)


def _requests(s: ssl.SSLSocket, deadline: float) -> tuple[int, bool]:
    """Requests until the deadline or until the server announces the end of the connection:
    (requests answered, whether the server is closing)."""
    send, recv = s.sendall, s.recv
    buf = b""
    done = 0
    while time.perf_counter() < deadline:
        send(_KEEPALIVE_REQUEST)
        while b"\r\n\r\n" not in buf:
            chunk = recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection without a response")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        length = _content_length(head)
        while len(buf) < length:
            chunk = recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection mid-body")
            buf += chunk
        buf = buf[length:]
        if not head.startswith(b"HTTP/1.1 2"):
            raise ConnectionError(f"status line {head.partition(_CRLF)[0]!r}")
        done += 1
        if _closing(head):
            return done, True
    return done, False


def _closing(head: bytes) -> bool:
    for line in head.split(_CRLF)[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection" and b"close" in value.lower():
            return True
    return False


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    raise ConnectionError("a response without Content-Length cannot be kept alive here")


def probe_http10_keepalive(port: int, *, cert: str | None, key: str | None, ca: str) -> str | None:
    """Why `ab -k` would not reuse connections with this server, or None if it would.

    ab speaks HTTP/1.0 and keeps a connection only when the response says `Connection: keep-alive`
    (RFC 7230 appendix A.1.2); a server that keeps the connection open without saying so leaves ab
    waiting for the end of a response that already ended.
    """
    ctx = _client_context("1.3", cert, key, ca)
    try:
        with socket.create_connection((HOST, port), timeout=3.0) as raw:
            with ctx.wrap_socket(raw, server_hostname=SNI) as s:
                s.sendall(f"GET / HTTP/1.0\r\nHost: {SNI}\r\nConnection: Keep-Alive\r\n\r\n".encode())
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
    except (OSError, ssl.SSLError) as exc:
        return f"probe failed: {type(exc).__name__}: {exc}"
    head = buf.partition(b"\r\n\r\n")[0].decode("latin-1")
    lines = head.split("\r\n")
    conn = [l.split(":", 1)[1].strip().lower() for l in lines[1:] if l.lower().startswith("connection:")]
    if "keep-alive" not in conn:
        return (f"answers an HTTP/1.0 keep-alive request with {lines[0]!r} and no "
                f"'Connection: keep-alive' ({'Connection: ' + conn[0] if conn else 'no Connection header'})")
    return None


# --- spawning our clients -------------------------------------------------------------------------

def client_command(kind: str, port: int, **options) -> list[str]:
    # this module by the name it was imported under, so that the client runs from a checkout and
    # installed alike
    cmd = [sys.executable, "-m", __spec__.name, kind, "--port", str(port)]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        cmd += [flag] if value is True else [flag, str(value)]
    return cmd


def run_clients(cmds: list[list[str]], client_cpus: tuple[int, ...], timeout_s: float) -> list[dict]:
    """Start the commands at once, pinned; each prints one JSON object."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, preexec_fn=cpu.pin(client_cpus)) for c in cmds]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        try:
            results.append(orjson.loads(out))
        except orjson.JSONDecodeError:
            results.append({"error": (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]})
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.harness.load")
    sub = p.add_subparsers(dest="kind", required=True)
    for name in ("latency", "keepalive"):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
        s.add_argument("--cert")
        s.add_argument("--key")
        s.add_argument("--ca", required=True)
        if name == "latency":
            s.add_argument("--rate", type=float, required=True)
            s.add_argument("--count", type=int, required=True)
            s.add_argument("--resume", action="store_true")
        else:
            s.add_argument("--seconds", type=float, required=True)
    args = p.parse_args(argv)
    if args.kind == "latency":
        result = latency(args.port, rate=args.rate, count=args.count, resume=args.resume, tls=args.tls,
                         cert=args.cert, key=args.key, ca=args.ca)
    else:
        result = keepalive(args.port, seconds=args.seconds, tls=args.tls, cert=args.cert, key=args.key,
                           ca=args.ca)
    sys.stdout.buffer.write(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
