"""Where a gateway worker's CPU goes, by stage: a sampling profile under load.

    python -m mtls_gateway_bench.scenarios.profile [--mode off|passthrough|verify] [--workload full|resumed|keepalive]
                            [--seconds 8] [--rate 997]

How this works: one gateway worker (the harness's configuration, harness.peers, pinned to CPU 1)
serves a load pinned to CPU 0: `openssl s_time -new` (full handshakes), `-reuse` (resumed; TLS 1.2,
where s_time resumes: its TLS 1.3 `-reuse` needs the tickets read) or `ab -k` (keep-alive requests
with the client certificate). `py-spy record --native` samples the worker (Python and C frames
together) for the window while /proc says how much CPU the worker used and the load says how many
operations it served. Each sample goes to one stage, by the frames it has:

- `idle`: the loop waiting in epoll (not counted in the shares);
- `OpenSSL crypto` / `OpenSSL TLS and X.509`: any frame inside the OpenSSL that cryptography bundles,
  split by symbol (ciphers, hashes, curves, bignums and signatures vs the rest);
- the innermost Python frame's module otherwise: `TLS glue` (gateway.tls and the pump),
  `HTTP/1.1 parse` (gateway.http1, llhttp), `connection core` (conn, proxy, exchange),
  `screening and routing` (headers, paths, routes), `logs`, `metrics`, `accept`, `upstream`;
- `event loop` (uvloop and libuv with no gateway frame below), `syscalls and libc` (the kernel's
  share of a stage is in the stage when it is called from one).

It prints each stage's share of the busy samples and, with the CPU the worker used per operation,
the stage's microseconds per operation: the figures bench/NATIVE.md quotes before and after a change.
Needs py-spy (`pip install py-spy`) and, for keep-alive, `ab` (apache2-utils).
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway import testing

from ..harness import certs, cpu, load, peers

SERVER_CPU = 1
CLIENT_CPU = 0
_FRAME = re.compile(r"^(.*?) \((.*?)\)$")
# symbols of OpenSSL's cryptography proper (provider code, primitives): the rest is TLS and X.509
_CRYPTO = re.compile(r"(aes|gcm|chacha|poly1305|sha\d|sha_|keccak|x25519|x448|ecp_|ec_|ecdsa|ecx_|"
                     r"bn_|BN_|rsa|p256|p384|fe64|fe51|ge_|curve|hkdf|hmac|HMAC|drbg|rand_|RAND_|"
                     r"kdf|EVP_PKEY_(sign|verify|derive)|bn\w*mul|mont)", re.I)
_MODULE_STAGES = (
    ("gateway/tls.py", "TLS glue"), ("gateway/tlspump.py", "TLS glue"), ("_tls_c", "TLS glue"), ("gateway/sessions.py", "TLS glue"),
    ("gateway/trust.py", "TLS glue"), ("_trust_c", "TLS glue"), ("OpenSSL/", "TLS glue"),
    ("gateway/http1.py", "HTTP/1.1 parse"), ("httptools", "HTTP/1.1 parse"), ("_http1_c", "HTTP/1.1 parse"),
    ("gateway/conn.py", "connection core"), ("gateway/proxy.py", "connection core"),
    ("gateway/exchange.py", "connection core"), ("gateway/wheel.py", "connection core"),
    ("gateway/headers.py", "screening and routing"), ("_headers_c", "screening and routing"),
    ("gateway/paths.py", "screening and routing"), ("gateway/routes.py", "screening and routing"),
    ("gateway/logs.py", "logs"), ("orjson", "logs"),
    ("gateway/metrics.py", "metrics"), ("prometheus_client", "metrics"),
    ("gateway/accept.py", "accept"), ("gateway/upstream.py", "upstream"),
)


def classify(frames: list[tuple[str, str]]) -> str:
    """The stage of one sample, from its frames (outermost first): (name, where) pairs."""
    if not frames:
        return "other"
    leaf_name, _ = frames[-1]
    if leaf_name.startswith("epoll_pwait") or leaf_name.startswith("epoll_wait"):
        return "idle"
    for name, where in reversed(frames):
        if "_rust.abi3.so" in where or "libcrypto" in where or "libssl" in where:
            return "OpenSSL crypto" if _CRYPTO.search(name) else "OpenSSL TLS and X.509"
    for name, where in reversed(frames):
        for marker, stage in _MODULE_STAGES:
            if marker in where:
                return stage
    for name, where in reversed(frames):
        if "loop.c" in where or "uv" in where or "libuv" in where:
            return "event loop"
    return "syscalls and libc"


def parse_raw(text: str) -> collections.Counter:
    """py-spy's raw (collapsed) output -> samples per stage."""
    stages: collections.Counter = collections.Counter()
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame.strip())
            frames.append((m.group(1), m.group(2)) if m else (frame.strip(), ""))
        stages[classify(frames)] += int(count)
    return stages


def _config(d: Path, bench: certs.BenchPKI, mode: str, port: int) -> str:
    ep = peers.Endpoint(mode, "ecdsa", port)
    return peers.render_gateway([ep], bench, workers=1, crl=False, workdir=d)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=peers.MODES, default="verify")
    parser.add_argument("--workload", choices=("full", "resumed", "keepalive"), default="full")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=997, help="samples per second")
    parser.add_argument("--clients", type=int, default=4, help="s_time processes or ab -c")
    parser.add_argument("--raw", type=Path, default=None,
                        help="also keep py-spy's collapsed stacks in this file")
    args = parser.parse_args(argv)
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mtls-gateway-profile-") as tmp:
        d = Path(tmp)
        bench = certs.make(d / "pki")
        port = peers.free_ports(1)[0]
        (d / "gateway.toml").write_text(_config(d, bench, args.mode, port))
        gw = testing.GatewayProcess(d / "gateway.toml", [port], stderr=subprocess.DEVNULL, wait=False,
                                    preexec_fn=cpu.pin((SERVER_CPU,)))
        clients: list[subprocess.Popen] = []
        try:
            gw.wait_ready(timeout=30)
            time.sleep(0.5)
            from .flood import children
            (worker,) = children(gw.pid)
            cmds = _load_commands(args, port, bench)
            if cmds is None:
                return 2
            # run 1, unprofiled: worker CPU over the whole load, and the operations it served
            cpu0 = cpu.processes_seconds([worker])
            outs = _start_load(cmds, d, "plain", clients)
            for c in clients:
                c.wait(args.seconds + 60)
            cpu_s = cpu.processes_seconds([worker]) - cpu0
            ops = _operations(outs, args.workload)
            clients.clear()
            # run 2, profiled: where the CPU goes (py-spy's sampling perturbs the timing, so the
            # shares come from here and the microseconds from run 1)
            _start_load(cmds, d, "profiled", clients)
            time.sleep(1.0)                      # past the first handshakes and allocations
            raw = d / "raw.txt"
            spy = subprocess.run([pyspy, "record", "--native", "-r", str(args.rate),
                            "-d", str(max(1, int(args.seconds) - 2)), "-p", str(worker), "--format",
                            "raw", "-o", str(raw)],
                                 capture_output=True, text=True, timeout=args.seconds + 60)
            for c in clients:
                c.wait(args.seconds + 60)
            if not raw.exists():
                print(f"py-spy failed: {spy.stderr.strip()[-500:]}", file=sys.stderr)
                return 1
            stages = parse_raw(raw.read_text())
            if args.raw is not None:
                shutil.copyfile(raw, args.raw)
        finally:
            for c in clients:
                if c.poll() is None:
                    c.kill()
            gw.stop(timeout=30)
    busy = sum(n for s, n in stages.items() if s != "idle")
    total = busy + stages.get("idle", 0)
    per_op = cpu_s / ops * 1e6 if cpu_s and ops > 0 else None
    what = {"full": "full handshake", "resumed": "resumed handshake (TLS 1.2)",
            "keepalive": "keep-alive request"}[args.workload]
    print(f"{what}, mtls = {args.mode}: {busy} busy samples of {total} "
          f"({busy / max(total, 1):.0%} of the window)"
          + (f"; worker CPU {per_op:.0f} us per operation over {ops} operations" if per_op else ""))
    print(f"| stage | share of busy | us per {'operation' if per_op else '(n/a)'} |")
    print("| --- | ---: | ---: |")
    for stage, n in sorted(((s, n) for s, n in stages.items() if s != "idle"), key=lambda x: -x[1]):
        share = n / busy if busy else 0
        print(f"| {stage} | {share:.1%} | {share * per_op:.0f} |" if per_op
              else f"| {stage} | {share:.1%} | |")
    return 0


def _load_commands(args, port: int, bench: certs.BenchPKI) -> list[list[str]] | None:
    if args.workload == "keepalive":
        ab = shutil.which("ab")
        if ab is None:
            print("ab not found: apt-get install apache2-utils", file=sys.stderr)
            return None
        return [load.ab_command(ab, port, tls="1.3", combined=bench.client_combined,
                                concurrency=args.clients, seconds=args.seconds)]
    return [load.s_time_command(["openssl"], port, resume=args.workload == "resumed",
                                tls="1.2" if args.workload == "resumed" else "1.3",
                                cert=bench.client_cert, key=bench.client_key, ca=bench.root,
                                max_s=int(args.seconds))] * args.clients


def _start_load(cmds: list[list[str]], d: Path, tag: str, clients: list) -> list[Path]:
    outs = [d / f"client-{tag}-{i}.out" for i in range(len(cmds))]
    for cmd, out in zip(cmds, outs):
        with open(out, "wb") as f:
            clients.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=cpu.pin((CLIENT_CPU,))))
    return outs


def _operations(outs: list[Path], workload: str) -> int:
    total = 0
    for out in outs:
        try:
            text = out.read_text(errors="replace")
        except OSError:
            continue
        if workload == "keepalive":
            result = load.parse_ab(text)
            total += result.complete if result is not None else 0
        else:
            full, resumed = load.count_connections(text)
            total += full + resumed
    return total


if __name__ == "__main__":
    raise SystemExit(main())
