"""Paired handshake runs: server CPU per connection, user and system apart, gateways beside nginx.

    python -m mtls_gateway_bench.scenarios.paired [--mode off|passthrough|verify] [--full] [--tls 1.3|1.2]
                           [--repeats 5] [--seconds 4] [--root /var/tmp/trixie]
                           [--variant NAME=VAR=VALUE ...] [--python NAME=PYTHON ...]

How this works: one throwaway PKI (`harness.certs`), one gateway of one worker per variant (a variant
is the gateway started with one more environment variable, e.g. `--variant pure=
MTLS_GATEWAY_NATIVE=off` when the tree reads such a switch; without `--variant`, the gateway as it
is) and nginx (harness.peers, the harness's configuration; `--root` runs a Debian 13 root's), every
server on CPU 0. Each repeat drives every server in turn with six `openssl s_time` clients on
CPU 1 (`-reuse` unless `--full`) for `--seconds` after a one-second warm-up, and reads the
worker's `utime` and `stime` from /proc before and after: CPU per connection, and the ratio to
nginx's figure of the same repeat. The machine's weather moves every server of a repeat alike, so
the median of the per-repeat ratios says more than a ratio of medians; both are printed.

Used for bench/NATIVE.md's "The handshake's Python" section, where the split showed that the
kernel's share is the same for both and the whole gap is user time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..harness import certs, cpu, load, peers
from . import flood

CLIENTS = 6
CLIENT_CPU = "1"


def _ticks(pid: int) -> tuple[int, int]:
    user = system = 0
    for worker in flood.children(pid) or [pid]:
        st = cpu.read_stat(worker)
        if st is not None:
            user += st.utime
            system += st.stime
    return user, system


def _window(peer: peers.Peer, pki, mode: str, resume: bool, tls: str, seconds: float,
            workdir: Path) -> tuple[float, float, int]:
    """(user µs, system µs, connections) of one peer's window."""
    cmd = load.s_time_command(["openssl"], peer.port(mode, "ecdsa"), resume=resume, tls=tls,
                              cert=pki.client_cert, key=pki.client_key, ca=pki.root,
                              max_s=int(seconds) + 30)
    outs = [workdir / f"s_time-{i}.out" for i in range(CLIENTS)]
    procs = []
    try:
        for out in outs:
            with open(out, "wb") as f:
                procs.append(subprocess.Popen(["taskset", "-c", CLIENT_CPU, *cmd], stdout=f,
                                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
        time.sleep(1.0)

        def seen() -> int:
            return sum(sum(load.count_connections(o.read_text(errors="replace"))) for o in outs)
        c0, (u0, s0) = seen(), _ticks(peer.pid)
        time.sleep(seconds)
        (u1, s1), c1 = _ticks(peer.pid), seen()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    n = c1 - c0
    if n <= 0:
        raise RuntimeError(f"{peer.spec.name}: no connection completed in the window")
    tick_us = 1e6 / cpu.CLK_TCK
    return (u1 - u0) * tick_us / n, (s1 - s0) * tick_us / n, n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.paired", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("off", "passthrough", "verify"), default="off")
    parser.add_argument("--full", action="store_true", help="full handshakes (default: resumed)")
    parser.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--root", type=Path, default=None, help="run nginx in this root (chroot)")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=VAR=VALUE: a gateway started with VAR=VALUE in its environment")
    parser.add_argument("--python", action="append", default=[], metavar="NAME=PYTHON",
                        help="a gateway run by this interpreter (which has it installed)")
    args = parser.parse_args(argv)
    variants: list[tuple[str, dict[str, str], str | None]] = []
    for v in args.variant:
        name, _, assignment = v.partition("=")
        var, _, value = assignment.partition("=")
        if not name or not var:
            parser.error(f"--variant {v!r}: expected NAME=VAR=VALUE")
        variants.append((name, {var: value}, None))
    for v in args.python:
        name, _, python = v.partition("=")
        if not name or not python:
            parser.error(f"--python {v!r}: expected NAME=PYTHON")
        variants.append((name, {}, python))
    if not variants:
        variants = [("gateway", {}, None)]
    nginx = peers.find_server("nginx", "nginx", args.root)
    if isinstance(nginx, peers.Missing):
        print(nginx.reason, file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mtls-gateway-paired-"))
    pki = certs.make(workdir / "pki")
    running: list[tuple[str, peers.Peer]] = []
    try:
        for name, env, python in variants:
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                peer = peers.Peer(peers.find_gateway(python), pki, [(args.mode, "ecdsa")], workers=1,
                                  server_cpus=(0,), crl=False, workdir=workdir / name)
                peer.start()
            finally:
                for k, old in saved.items():
                    if old is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = old
            running.append((name, peer))
        peer = peers.Peer(nginx, pki, [(args.mode, "ecdsa")], workers=1, server_cpus=(0,),
                          crl=False, workdir=workdir / "nginx")
        peer.start()
        running.append(("nginx", peer))
        rows: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _ in running}
        for _ in range(args.repeats):
            for name, peer in running:
                rows[name].append(_window(peer, pki, args.mode, not args.full, args.tls,
                                          args.seconds, workdir))
        kind = "full" if args.full else "resumed"
        print(f"{kind} TLS {args.tls} handshakes, mode {args.mode}, {args.repeats} repeats of "
              f"{args.seconds:g} s; server CPU per connection (user + system)")
        ref = [u + s for u, s, _ in rows["nginx"]]
        for name, values in rows.items():
            total = [u + s for u, s, _ in values]
            ratios = [t / r for t, r in zip(total, ref)]
            print(f"  {name:12s} {statistics.median(total):7.0f} µs (user "
                  f"{statistics.median([u for u, _, _ in values]):.0f}, system "
                  f"{statistics.median([s for _, s, _ in values]):.0f}); paired ratio to nginx "
                  f"{statistics.median(ratios):.3f} ({' '.join(f'{r:.2f}' for r in ratios)})")
    finally:
        for _, peer in running:
            peer.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
