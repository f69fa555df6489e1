"""End to end: server CPU per mTLS handshake (full and resumed) and per keep-alive request.

Run with ``python -m mtls_gateway_bench.scenarios.handshake [--seconds 10] [--repeats 5]`` (needs
`openssl` and `taskset`); ``--pumps`` compares the TLS pumps instead (native, pure twin, pyOpenSSL's methods). Each configuration is a fresh gateway process (one worker, a
`verify` listener answering a fixed response, every log off) pinned to CPU 0; the client is pinned
to CPU 1:

* full handshakes: ``openssl s_time -new -www / -cert ... -key ... -CAfile ...`` (it sends the leaf
  only, so the intermediate is in the server's bundle, as FIELD-NOTES.md says);
* resumed: ``openssl s_time -reuse`` (TLS 1.3 tickets, which the client reads because of ``-www``);
* keep-alive requests: one TLS connection with the client certificate, N sequential HTTP/1.1
  requests (a small Python client; ``ab -k`` speaks HTTP/1.0 keep-alive and hangs waiting for a
  ``Connection: keep-alive`` echo the gateway does not send).

The server's CPU is read from /proc/PID/stat (utime + stime) before and after the client runs and
divided by the connections (or requests) made. Configurations are alternated within each repeat and
medians over the repeats are printed with their ratios, because the noise between repeats of one
cell is 13-47% on these machines. The cache-off cells give the verifier a zero-entry cache, so
every handshake runs the full chain verification; `native` picks the trust and header twins.

``python -m mtls_gateway_bench.scenarios.handshake serve DIR PORT CACHE NATIVE`` is the server side,
used by main().
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.testing import fixed_response, listener, toml

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
CLIENT_CPU = "1"

def _config(d: str, port: int, native: str) -> str:
    d = Path(d)
    return toml({
        "gateway": {"workers": 1, "native": native, "access_log": "off", "connection_log": "off",
                    "log_level": "warning"},
        "listener": [listener("verify", port, d / "server.pem", d / "server.key", mtls="verify", trust_store="dev",
                              header_style="alb", max_requests_per_connection=0,
                              rules=[fixed_response(body="ok\n", content_type="text/plain")])],
        "trust_store": {"dev": {"ca_bundle": d / "ca-bundle.pem",
                                "crls": [d / "crl-root.pem", d / "crl-intermediate.pem"]}},
    })


def serve(directory: str, port: int, cache: str, native: str, pump: str = "") -> None:
    from gateway import config, server, trust
    conf = config.loads(_config(directory, port, native))
    trust.set_native(native)       # build_runtime sets the header twins from `native`
    runtime = server.build_runtime(conf)
    if pump:
        from ..micro.bench_tlspump import use
        use(pump)                  # the TLS pump alone: native, python or pyOpenSSL's methods
    if cache == "off":
        for listener in runtime.listeners.values():
            verifier = listener.tls.verifier
            if verifier is not None:
                verifier.cache = trust.ChainCache(0, verifier.store.impl)
    sockets = {spec.name: server.bind(spec) for spec in conf.listeners}
    print("ready", os.getpid(), flush=True)
    server.run_worker(runtime, sockets)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK      # utime, stime


class Server:
    def __init__(self, directory: Path, port: int, cache: str, native: str, pump: str = "") -> None:
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, sys.executable, "-m", __spec__.name, "serve",
             str(directory), str(port), cache, native, pump],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self.proc.kill()
            raise RuntimeError("the gateway did not start")
        self.pid = int(line[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _s_time(port: int, d: Path, mode: str, seconds: int) -> int:
    out = subprocess.run(
        ["taskset", "-c", CLIENT_CPU, "openssl", "s_time", "-connect", f"127.0.0.1:{port}", mode,
         "-www", "/", "-cert", str(d / "clients" / "client1.pem"),
         "-key", str(d / "clients" / "client1.key"), "-CAfile", str(d / "root-ca.pem"),
         "-time", str(seconds)], capture_output=True, text=True, timeout=seconds * 3 + 30).stdout
    m = re.search(r"^(\d+) connections in [\d.]+s", out, re.M)
    if not m:
        raise RuntimeError("openssl s_time printed no count:\n" + out)
    return int(m.group(1))


_KEEPALIVE_CLIENT = r"""
import socket, ssl, sys
port, n, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(d + "/root-ca.pem")
ctx.load_cert_chain(d + "/clients/client1.pem", d + "/clients/client1.key")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
req = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
buf = b""
for _ in range(n):
    s.sendall(req)
    while b"\r\n\r\nok\n" not in buf:
        data = s.recv(65536)
        if not data:
            raise SystemExit("closed early")
        buf += data
    buf = buf.split(b"\r\n\r\nok\n", 1)[1]
print(n)
"""


def _keepalive(port: int, d: Path, requests: int) -> int:
    """`requests` sequential requests on one TLS connection with a client certificate (ab -k
    would do, but it speaks HTTP/1.0 keep-alive and waits for a `Connection: keep-alive` echo)."""
    out = subprocess.run(
        ["taskset", "-c", CLIENT_CPU, sys.executable, "-c", _KEEPALIVE_CLIENT, str(port),
         str(requests), str(d)], capture_output=True, text=True, timeout=600, check=True).stdout
    return int(out.strip())


def measure(d: Path, port: int, kind: str, cache: str, native: str, seconds: int, pump: str = "") -> float:
    """Server CPU in microseconds per connection (full/resumed) or per request (keepalive)."""
    srv = Server(d, port, cache, native, pump)
    try:
        if kind == "keepalive":
            _keepalive(port, d, 200)                                    # warm up
            before = _cpu_s(srv.pid)
            n = _keepalive(port, d, 2000 * seconds)
        else:
            mode = "-new" if kind == "full" else "-reuse"
            _s_time(port, d, mode, 1)                                   # warm up, fill the cache
            before = _cpu_s(srv.pid)
            n = _s_time(port, d, mode, seconds)
        used = _cpu_s(srv.pid) - before
    finally:
        srv.stop()
    return used / n * 1e6


CELLS = [
    ("full", "on", "on"), ("full", "on", "off"), ("full", "off", "on"), ("full", "off", "off"),
    ("resumed", "on", "on"), ("resumed", "on", "off"),
    ("keepalive", "on", "on"), ("keepalive", "on", "off"),
]


def _compare_pumps(args) -> int:
    """Server CPU per handshake and per keep-alive request with each TLS pump, alternated."""
    from ..micro.bench_tlspump import PUMPS
    from gateway import pki
    kinds = args.only or ["full", "resumed", "keepalive"]
    cells = [(k, p) for k in kinds for p in PUMPS]
    results: dict[tuple, list[float]] = {c: [] for c in cells}
    with tempfile.TemporaryDirectory(prefix="bench-pumps-") as tmp:
        d = Path(tmp)
        pki.init_dir(d)
        for r in range(args.repeats):
            for kind, pump in (cells if r % 2 == 0 else list(reversed(cells))):
                us = measure(d, args.port, kind, "on", "on", args.seconds, pump)
                results[(kind, pump)].append(us)
                print(f"repeat {r + 1} {kind:9} pump={pump:7} {us:8.1f} us", flush=True)
                time.sleep(0.5)
    print("\nserver CPU, median of", args.repeats, "(us per connection; per request for keepalive)")
    print(f"{'kind':9} {'pump':7} {'median':>8} {'min':>8} {'max':>8} {'/native':>8}")
    for kind, pump in cells:
        v = results[(kind, pump)]
        base = statistics.median(results[(kind, "native")])
        print(f"{kind:9} {pump:7} {statistics.median(v):8.1f} {min(v):8.1f} {max(v):8.1f} "
              f"{statistics.median(v) / base:7.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        serve(argv[1], int(argv[2]), argv[3], argv[4], argv[5] if len(argv) > 5 else "")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--port", type=int, default=9643)
    ap.add_argument("--only", choices=["full", "resumed", "keepalive"], action="append")
    ap.add_argument("--pumps", action="store_true",
                    help="compare the TLS pumps instead (native, pure twin, pyOpenSSL's methods; "
                         "cache on, trust and headers native)")
    args = ap.parse_args(argv)
    for tool in ("openssl", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench_handshake: {tool} is not installed", file=sys.stderr)
            return 2
    from gateway import pki
    if args.pumps:
        return _compare_pumps(args)
    cells = [c for c in CELLS if not args.only or c[0] in args.only]
    with tempfile.TemporaryDirectory(prefix="bench-handshake-") as tmp:
        d = Path(tmp)
        pki.init_dir(d)
        results: dict[tuple, list[float]] = {c: [] for c in cells}
        for r in range(args.repeats):
            order = cells if r % 2 == 0 else list(reversed(cells))     # alternate the sides
            for cell in order:
                us = measure(d, args.port, *cell, args.seconds)
                results[cell].append(us)
                print(f"repeat {r + 1} {cell[0]:9} cache={cell[1]:3} native={cell[2]:3} "
                      f"{us:8.1f} us", flush=True)
                time.sleep(0.5)
    med = {c: statistics.median(v) for c, v in results.items()}
    print("\nserver CPU, median of", args.repeats, "(us per connection; per request for keepalive)")
    print(f"{'kind':9} {'cache':5} {'native':6} {'median':>8} {'min':>8} {'max':>8}")
    for c in cells:
        print(f"{c[0]:9} {c[1]:5} {c[2]:6} {med[c]:8.1f} {min(results[c]):8.1f} {max(results[c]):8.1f}")
    print("\nratios")

    def ratio(label, a, b):
        if a in med and b in med:
            print(f"  {label:44} {med[a] / med[b]:.2f}x")

    ratio("full: cache off / cache on (native on)", ("full", "off", "on"), ("full", "on", "on"))
    ratio("full: cache off / cache on (native off)", ("full", "off", "off"), ("full", "on", "off"))
    ratio("full: native off / on (cache on)", ("full", "on", "off"), ("full", "on", "on"))
    ratio("full: native off / on (cache off)", ("full", "off", "off"), ("full", "off", "on"))
    ratio("resumed: native off / on", ("resumed", "on", "off"), ("resumed", "on", "on"))
    ratio("keepalive: native off / on", ("keepalive", "on", "off"), ("keepalive", "on", "on"))
    nginx = {"full": 1300.0, "resumed": 600.0, "keepalive": 10.0}   # FIELD-NOTES.md, nginx 1.26/3.5
    for kind, ref in nginx.items():
        if (kind, "on", "on") in med:
            print(f"  {kind + ': gateway (cache, native) / nginx 1.26 ref':44} "
                  f"{med[(kind, 'on', 'on')] / ref:.2f}x  (reference {ref:.0f} us, FIELD-NOTES.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
