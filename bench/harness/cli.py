"""`mtls-gateway-bench`: handshake throughput and cost of the gateway, side by side with nginx.

How this works: the harness makes its own PKI (`certs`), finds the peers it can run (`peers`: the
gateway always; nginx and HAProxy from PATH, from `--nginx/--haproxy`, and from every `--root`),
says what it skips and why, and starts each peer once, pinned to the server CPU set, serving one
port per (mTLS mode, server key). It times the crypto floor (`floor`) on the server CPUs, then
measures, from the client CPU set:

1. handshakes: for every point (mode x full/resumed x TLS version x key type) and every peer,
   `openssl s_time` processes drive new connections for a window (`load.run_s_time`); handshakes/s,
   server CPU per handshake (`cpu`, the servers' own accounting) and which side was the bottleneck.
   Repeats alternate the peers (their order rotates) so slow drifts of a shared machine spread
   evenly; each point reports the median of its repeats and their spread.
2. keep-alive requests: server CPU per request over long-lived connections, with our HTTP/1.1
   client and with `ab -k` when installed.
3. latency: p50/p99 from connect to the first response byte at a fixed, sub-saturating rate.

Everything is reported as a terminal table, a JSON document and a PNG chart (`report`), with every
figure also as a ratio to each nginx of the run, and the product's targets judged against the
reference nginx (the one on the newest OpenSSL unless `--reference` says otherwise).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import certs, cpu, floor, load, peers, report
from .stats import median

DEFAULTS = {           # the default run                          # --quick
    "seconds": (2.0, 1.0),
    "repeats": (5, 1),
    "tls": ("1.3,1.2", "1.3"),
    "keys": ("ecdsa,rsa", "ecdsa"),
    "latency_samples": (500, 30),
    "keepalive_repeats": (3, 1),
    "warmup": (0.5, 0.3),
}
LATENCY_RATE = 50.0             # connections/s: well under every peer's capacity, and under our client's
SCHEDULE_SLIP = 0.95            # a latency client achieving less than this share of its rate fell behind
CLIENTS_PER_CPU = 8             # s_time mostly waits for the server: a queue keeps the server busy
SUB_SATURATING = 0.5            # warn when the latency rate exceeds this share of a peer's capacity
PROGRESS = sys.stderr


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtls-gateway-bench",
        description="TLS handshake throughput and server CPU per handshake of the mTLS gateway "
                    "(verify, passthrough, off; full and resumed; TLS 1.3 and 1.2), side by side "
                    "with nginx and HAProxy on the same certificates, CPUs and clients.")
    p.add_argument("--quick", action="store_true",
                   help="one short repeat, TLS 1.3 and ECDSA only, keep-alive and latency for verify and "
                        "passthrough only, no ab: under two minutes")
    p.add_argument("--seconds", type=float, help="measuring window per point (default 2, quick 1)")
    p.add_argument("--repeats", type=int, help="repeats per point; median and spread reported (default 5, quick 1)")
    p.add_argument("--workers", type=int, default=1, help="server workers (gateway workers, nginx "
                   "worker_processes, HAProxy nbthread); default 1")
    p.add_argument("--server-cpus", help="CPU list for the servers, e.g. 0 or 0-1 (default: the first CPUs)")
    p.add_argument("--client-cpus", help="CPU list for the load generators (default: the other CPUs)")
    p.add_argument("--clients", type=int, help="concurrent load processes: s_time, our clients, ab -c "
                   f"(default {CLIENTS_PER_CPU} per client CPU)")
    p.add_argument("--nice", type=int, default=0, help="run peers and clients at this nice value; a "
                   "negative one (root only) keeps unrelated work on a shared machine off their CPUs")
    p.add_argument("--modes", default="off,passthrough,verify")
    p.add_argument("--handshakes", default="full,resumed")
    p.add_argument("--tls", help="TLS versions (default 1.3,1.2; quick 1.3)")
    p.add_argument("--keys", help="server key types (default ecdsa,rsa; quick ecdsa)")
    p.add_argument("--peers", default="gateway,nginx,haproxy", help="kinds of peer to run")
    p.add_argument("--gateway-python", metavar="PYTHON",
                   help="the interpreter that runs the gateway (default: this one); it needs the "
                        "gateway installed. A static, PGO+LTO build (a distribution's python3) runs "
                        "it with far less CPU than a shared-libpython one (bench/NATIVE.md)")
    p.add_argument("--nginx", default="nginx", help="nginx binary ('none' to skip the system's)")
    p.add_argument("--haproxy", default="haproxy", help="HAProxy binary ('none' to skip the system's)")
    p.add_argument("--root", action="append", type=Path, default=[],
                   help="also run the nginx and HAProxy installed in this root (chroot), e.g. a "
                        "Debian 13 unpacked with debootstrap; an absolute --nginx/--haproxy path is "
                        "looked for inside it; repeatable")
    p.add_argument("--reference", help="the peer targets and headline ratios are judged against "
                   "(default: the nginx on the newest OpenSSL)")
    p.add_argument("--openssl", default="openssl", help="the openssl command whose s_time drives load")
    p.add_argument("--crl", action="store_true", help="load the (empty) CRLs in every verify peer")
    p.add_argument("--rate", type=float, default=LATENCY_RATE, help="latency run: connections per second")
    p.add_argument("--latency-samples", type=int, help="latency run: connections per point (default 500, quick 30)")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--no-keepalive", action="store_true")
    p.add_argument("--no-ab", action="store_true", help="keep-alive with our HTTP/1.1 client only")
    p.add_argument("--no-speed", action="store_true", help="skip `openssl speed` for the peers' OpenSSLs")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: print the tables of a saved results.json (with --markdown, as "
                        "Markdown) and write its chart into --out")
    p.add_argument("--markdown", action="store_true", help="with --render: Markdown tables")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="directory for results.json, results.md and results.png (default ./bench-results)")
    return p


def _resolve(args: argparse.Namespace) -> None:
    q = 1 if args.quick else 0
    args.seconds = args.seconds if args.seconds is not None else DEFAULTS["seconds"][q]
    args.repeats = args.repeats if args.repeats is not None else DEFAULTS["repeats"][q]
    args.tls = args.tls or DEFAULTS["tls"][q]
    args.keys = args.keys or DEFAULTS["keys"][q]
    args.latency_samples = args.latency_samples or DEFAULTS["latency_samples"][q]
    args.keepalive_repeats = DEFAULTS["keepalive_repeats"][q]
    args.warmup = DEFAULTS["warmup"][q]
    if args.quick:
        args.no_ab = True
        args.no_speed = True


def _split(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise SystemExit(f"mtls-gateway-bench: --{what}: expected some of {', '.join(allowed)}, got {text!r}")
    return items


def plan_cells(modes: list[str], handshakes: list[str], tls_versions: list[str],
               keys: list[str]) -> list[tuple[str, str, str, str]]:
    """Every point to measure. A resumed handshake makes no signature with the server key, so
    resumption is measured with the first key type only."""
    cells = []
    for tls in tls_versions:
        for key in keys:
            for mode in modes:
                for hs in handshakes:
                    if hs == "resumed" and key != keys[0]:
                        continue
                    cells.append((mode, hs, tls, key))
    return cells


# --- the machine ----------------------------------------------------------------------------------

def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10,
                             stdin=subprocess.DEVNULL).stdout.decode(errors="replace").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def describe_machine(openssl: list[str], ab: str | None) -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    distro = None
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "cpu": model, "cpus": os.cpu_count(), "usable_cpus": sorted(os.sched_getaffinity(0)),
        "memory_mb": mem, "os": distro, "kernel": platform.release(), "arch": platform.machine(),
        "python": sys.version.split()[0], "load_average_at_start": list(os.getloadavg()),
        "client_openssl": _first_line([*openssl, "version"]),
        "ab": _first_line([ab, "-V"]) if ab else None,
    }


# --- measuring ------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, pki: certs.BenchPKI, running: list[peers.Peer],
                 server_cpus: tuple[int, ...], client_cpus: tuple[int, ...], workdir: Path) -> None:
        self.args = args
        self.pki = pki
        self.peers = running
        self.server_cpus = server_cpus
        self.client_cpus = client_cpus
        self.server_cores = max(1, min(args.workers, len(server_cpus)))
        self.all_cpus = tuple(sorted(set(server_cpus) | set(client_cpus)))
        self.workdir = workdir
        self.notes: list[str] = []

    def _ensure(self, peer: peers.Peer) -> bool:
        if peer.alive():
            return True
        self.notes.append(f"{peer.spec.name} had exited ({peer.log_tail(2)}); restarted")
        try:
            peer.start()
            return True
        except RuntimeError as exc:
            self.notes.append(str(exc))
            return False

    def handshakes(self, peer: peers.Peer, cell: tuple[str, str, str, str], repeat: int) -> dict:
        mode, hs, tls, key = cell
        row = {"peer": peer.spec.name, "mode": mode, "handshake": hs, "tls": tls, "key": key,
               "repeat": repeat}
        if not self._ensure(peer):
            return {**row, "connections": 0, "errors": [f"{peer.spec.name} is not running"]}
        w = load.run_s_time(self.args.openssl_cmd, peer.port(mode, key), peer.pid, resume=hs == "resumed",
                            tls=tls, cert=self.pki.client_cert, key=self.pki.client_key, ca=self.pki.root,
                            clients=self.args.clients, client_cpus=self.client_cpus,
                            seconds=self.args.seconds, workdir=self.workdir / "s_time",
                            warmup_s=self.args.warmup, server_cpus=self.server_cpus)
        su = cpu.utilisation(w.server_cpu_s, w.wall_s, self.server_cores)
        cu = cpu.utilisation(w.client_cpu_s, w.wall_s, len(self.client_cpus))
        ou = cpu.utilisation(w.other_cpu_s, w.wall_s, len(self.all_cpus))
        return {**row, "connections": w.connections, "resumed_fraction": w.resumed_fraction,
                "wall_s": w.wall_s, "server_cpu_s": w.server_cpu_s, "client_cpu_s": w.client_cpu_s,
                "hs_per_s": w.connections / w.wall_s if w.wall_s > 0 else None,
                "cpu_us": cpu.per_event_us(w.server_cpu_s, w.connections),
                "server_util": su, "client_util": cu, "other_util": ou,
                "bottleneck": report.bottleneck(su, cu), "errors": w.errors}

    def _window(self, peer: peers.Peer, run) -> tuple[object, float, float, float, float]:
        """Run `run()`; (its result, server CPU s, client CPU s, other work's CPU s, wall s). The
        clients are our children, so their CPU is what RUSAGE_CHILDREN gained once they are reaped."""
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        b0 = cpu.busy_seconds(self.all_cpus)
        s0, t0 = cpu.tree_seconds(peer.pid), time.monotonic()
        result = run()
        s1, t1 = cpu.tree_seconds(peer.pid), time.monotonic()
        b1 = cpu.busy_seconds(self.all_cpus)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        return result, s1 - s0, client, max(0.0, (b1 - b0) - (s1 - s0) - client), t1 - t0

    def keepalive_own(self, peer: peers.Peer, mode: str, tls: str, key: str, hs_cpu_us: float | None,
                      repeat: int) -> dict:
        row = {"peer": peer.spec.name, "mode": mode, "client": "http11", "tls": tls, "key": key, "repeat": repeat}
        if not self._ensure(peer):
            return {**row, "requests": 0, "errors": [f"{peer.spec.name} is not running"]}
        cmds = [load.client_command("keepalive", peer.port(mode, key), seconds=self.args.seconds, tls=tls,
                                    cert=self.pki.client_cert, key=self.pki.client_key, ca=self.pki.root)
                for _ in range(self.args.clients)]
        results, server_s, client_s, other_s, wall = self._window(
            peer, lambda: load.run_clients(cmds, self.client_cpus, self.args.seconds + 60))
        requests = sum(r.get("requests", 0) for r in results)
        conns = sum(r.get("connections", 0) for r in results)
        errors = sorted({str(r["error"]) for r in results if r.get("error")})
        rate = sum(r["requests"] / r["seconds"] for r in results if r.get("requests") and r.get("seconds"))
        return self._ka_row(row, requests, conns, rate, server_s, client_s, other_s, wall, hs_cpu_us, errors)

    def keepalive_ab(self, peer: peers.Peer, mode: str, tls: str, key: str, hs_cpu_us: float | None,
                     repeat: int) -> dict:
        row = {"peer": peer.spec.name, "mode": mode, "client": "ab", "tls": tls, "key": key, "repeat": repeat}
        if not self._ensure(peer):
            return {**row, "requests": 0, "errors": [f"{peer.spec.name} is not running"]}
        port = peer.port(mode, key)
        why = load.probe_http10_keepalive(port, cert=str(self.pki.client_cert), key=str(self.pki.client_key),
                                          ca=str(self.pki.root))
        if why is not None:
            return {**row, "requests": 0, "errors": [f"ab -k skipped: {peer.spec.name} {why}"]}
        cmd = load.ab_command(self.args.ab, port, tls=tls, combined=self.pki.client_combined,
                              concurrency=self.args.clients, seconds=self.args.seconds)

        def run():
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  timeout=self.args.seconds + load.AB_TIMEOUT_S + 60,
                                  preexec_fn=cpu.pin(self.client_cpus))
        try:
            out, server_s, client_s, other_s, wall = self._window(peer, run)
        except subprocess.TimeoutExpired:
            return {**row, "requests": 0, "errors": ["ab did not finish"]}
        parsed = load.parse_ab(out.stdout.decode(errors="replace"))
        if parsed is None:
            tail = (out.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            return {**row, "requests": 0, "errors": [f"ab failed: {tail}"]}
        errors = []
        if parsed.failed or parsed.non_2xx:
            errors.append(f"ab: {parsed.failed} failed, {parsed.non_2xx} non-2xx")
        if parsed.keepalive < 0.9 * parsed.complete:
            errors.append(f"ab kept only {parsed.keepalive} of {parsed.complete} requests alive")
        conns = max(self.args.clients, parsed.complete - parsed.keepalive)
        rate = parsed.complete / parsed.time_s if parsed.time_s > 0 else None
        return self._ka_row(row, parsed.complete, conns, rate, server_s, client_s, other_s, wall, hs_cpu_us,
                            errors)

    def _ka_row(self, row, requests, conns, rate, server_s, client_s, other_s, wall, hs_cpu_us, errors) -> dict:
        handshake_s = conns * (hs_cpu_us or 0.0) / 1e6
        su = cpu.utilisation(server_s, wall, self.server_cores)
        cu = cpu.utilisation(client_s, wall, len(self.client_cpus))
        if hs_cpu_us is None and conns:
            errors = [*errors, "no full-handshake figure to subtract"]
        return {**row, "requests": requests, "connections": conns, "req_per_s": rate, "wall_s": wall,
                "server_cpu_s": server_s, "client_cpu_s": client_s, "handshake_cpu_s": handshake_s,
                "cpu_us": cpu.per_event_us(max(0.0, server_s - handshake_s), requests),
                "server_util": su, "client_util": cu,
                "other_util": cpu.utilisation(other_s, wall, len(self.all_cpus)),
                "bottleneck": report.bottleneck(su, cu), "errors": errors}

    def latency(self, peer: peers.Peer, mode: str, hs: str, tls: str, key: str) -> dict:
        row = {"peer": peer.spec.name, "mode": mode, "handshake": hs, "tls": tls, "key": key}
        if not self._ensure(peer):
            return {**row, "count": 0, "error_sample": [f"{peer.spec.name} is not running"]}
        cmd = load.client_command("latency", peer.port(mode, key), rate=self.args.rate,
                                  count=self.args.latency_samples, resume=hs == "resumed", tls=tls,
                                  cert=self.pki.client_cert, key=self.pki.client_key, ca=self.pki.root)
        timeout = self.args.latency_samples / self.args.rate + 60
        return {**row, **load.run_clients([cmd], self.client_cpus, timeout)[0]}


def _say(text: str = "") -> None:
    print(text, file=PROGRESS, flush=True)


def _estimate_s(args, cells: int, npeers: int, modes: int) -> float:
    per_point = args.seconds + args.warmup + 0.3
    total = cells * npeers * args.repeats * per_point + 3 * npeers + 2
    if not args.no_keepalive:
        total += modes * npeers * args.keepalive_repeats * (args.seconds + 1.5) * (1 if args.no_ab or not args.ab else 2)
    if not args.no_latency:
        total += 2 * modes * npeers * (args.latency_samples / args.rate + 0.3)
    return total


def _cpu_sets(args) -> tuple[tuple[int, ...], tuple[int, ...], list[str]]:
    warnings = []
    server, client = cpu.default_cpu_sets(args.workers)
    if args.server_cpus:
        server = cpu.parse_cpus(args.server_cpus)
    if args.client_cpus:
        client = cpu.parse_cpus(args.client_cpus)
    elif args.server_cpus:
        rest = tuple(c for c in sorted(os.sched_getaffinity(0)) if c not in server)
        client = rest or server
    if set(server) & set(client):
        warnings.append(f"server CPUs {cpu.format_cpus(server)} and client CPUs {cpu.format_cpus(client)} overlap: "
                        "client and server compete for the same cores")
    return server, client, warnings


def run(args: argparse.Namespace) -> int:
    _resolve(args)
    started = dt.datetime.now(dt.timezone.utc)
    t_start = time.monotonic()
    modes = _split(args.modes, peers.MODES, "modes")
    handshakes = _split(args.handshakes, ("full", "resumed"), "handshakes")
    tls_versions = _split(args.tls, ("1.3", "1.2"), "tls")
    keys = _split(args.keys, peers.KEYS, "keys")
    kinds = _split(args.peers, ("gateway", "nginx", "haproxy"), "peers")
    cells = plan_cells(modes, handshakes, tls_versions, keys)
    # --quick measures keep-alive and latency in the modes the targets are about
    detail_modes = ([m for m in modes if m != "off"] if args.quick else modes) or modes
    server_cpus, client_cpus, warnings = _cpu_sets(args)
    args.clients = args.clients or CLIENTS_PER_CPU * len(client_cpus)
    if args.nice < 0 and os.geteuid() != 0:
        _say("mtls-gateway-bench: a negative --nice needs root")
        return 2
    cpu.set_nice(args.nice)
    args.openssl_cmd = args.openssl.split()
    if shutil.which(args.openssl_cmd[0]) is None:
        _say(f"mtls-gateway-bench: `{args.openssl}` not found; it is the load generator "
             "(`apt-get install openssl` would add it)")
        return 2
    args.ab = None if args.no_ab else shutil.which("ab")

    # peers
    specs: list[peers.PeerSpec] = []
    skipped: list[peers.Missing] = []
    if "gateway" in kinds:
        specs.append(peers.find_gateway(args.gateway_python))
    for kind in ("nginx", "haproxy"):
        if kind not in kinds:
            continue
        binary = getattr(args, kind)
        if binary != "none":
            found = peers.find_server(kind, binary, None)
            (specs if isinstance(found, peers.PeerSpec) else skipped).append(found)
        for root in args.root:
            # an absolute --nginx/--haproxy path is looked for inside the root too
            inside = binary if binary.startswith("/") else kind
            found = peers.find_server(kind, inside, root)
            (specs if isinstance(found, peers.PeerSpec) else skipped).append(found)
    if not args.no_keepalive and not args.no_ab and args.ab is None:
        skipped.append(peers.Missing("ab -k", "ab not found; `apt-get install apache2-utils` would add it "
                                     "(keep-alive is measured with our HTTP/1.1 client only)"))
    if not specs:
        _say("mtls-gateway-bench: no peer to measure")
        return 2

    _say(f"mtls-gateway-bench: {len(specs)} peer(s), {len(cells)} point(s), {args.repeats} repeat(s), "
         f"{args.seconds:g} s windows")
    for s in specs:
        _say(f"  using   {s.name:<16} {s.describe()}")
    for m in skipped:
        _say(f"  skip    {m.name:<16} {m.reason}")
    _say(f"  server CPUs {cpu.format_cpus(server_cpus)} ({args.workers} worker(s)); client CPUs "
         f"{cpu.format_cpus(client_cpus)} ({args.clients} client processes, {args.openssl} s_time)")
    for w in warnings:
        _say(f"  warning: {w}")
    _say(f"  about {_estimate_s(args, len(cells), len(specs), len(detail_modes)) / 60:.1f} min")

    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="mtls-gateway-bench-"))
    running: list[peers.Peer] = []
    raw_hs: list[dict] = []
    raw_ka: list[dict] = []
    raw_lat: list[dict] = []
    phases: dict[str, float] = {}
    try:
        pki = certs.make(workdir / "pki")
        _say(f"  PKI in {pki.dir} (client chain depth 2, ECDSA P-256; server keys ECDSA P-256 and RSA-2048)")

        _say("crypto floor ...")
        ops = floor.measure(server_cpus, scale=1.0 if args.quick else 3.0)
        speed: dict[str, object] = {}
        if not args.no_speed:
            seen = {floor.openssl_version()}
            for s in specs:
                if s.kind != "gateway" and s.openssl not in seen:
                    seen.add(s.openssl)
                    speed[s.openssl] = floor.speed([*(["chroot", str(s.root)] if s.root else []), "openssl"],
                                                   server_cpus)
        _say("  " + ", ".join(f"{k} {v:.0f} µs" for k, v in ops.items()) + f" ({floor.openssl_version()})")

        endpoints = [(m, k) for m in modes for k in keys]
        for s in specs:
            peer = peers.Peer(s, pki, endpoints, workers=args.workers, server_cpus=server_cpus, crl=args.crl,
                              workdir=workdir / s.name)
            try:
                peer.start()
                running.append(peer)
            except RuntimeError as exc:
                skipped.append(peers.Missing(s.name, str(exc)))
                _say(f"  skip    {s.name:<16} {exc}")
        if not running:
            return 1
        bench = Bench(args, pki, running, server_cpus, client_cpus, workdir)

        phases["setup"] = time.monotonic() - t_start
        t_phase = time.monotonic()
        total = len(cells) * len(running) * args.repeats
        done = 0
        for repeat in range(args.repeats):
            for cell in cells:
                k = repeat % len(running)
                for peer in running[k:] + running[:k]:
                    done += 1
                    r = bench.handshakes(peer, cell, repeat)
                    raw_hs.append(r)
                    _say(f"[{done:>4}/{total}] {cell[0]:<11} {cell[1]:<7} TLS{cell[2]} {cell[3]:<5} "
                         f"{peer.spec.name:<15} {report.num(r.get('hs_per_s')):>7} hs/s "
                         f"{report.num(r.get('cpu_us')):>7} µs/hs  server {report.pct(r.get('server_util')):>4} "
                         f"client {report.pct(r.get('client_util')):>4} others {report.pct(r.get('other_util')):>4}"
                         + (f"  {r['errors'][0]}" if r.get("errors") else ""))

        def full_cpu(peer_name: str, mode: str, tls: str, key: str) -> float | None:
            return median(r.get("cpu_us") for r in raw_hs if (r["peer"], r["mode"], r["handshake"], r["tls"],
                                                                 r["key"]) == (peer_name, mode, "full", tls, key))

        tls0, key0 = tls_versions[0], keys[0]
        phases["handshakes"] = time.monotonic() - t_phase
        t_phase = time.monotonic()
        if not args.no_keepalive:
            _say("keep-alive requests ...")
            for repeat in range(args.keepalive_repeats):
                for mode in detail_modes:
                    k = repeat % len(running)
                    for peer in running[k:] + running[:k]:
                        hs_cpu = full_cpu(peer.spec.name, mode, tls0, key0)
                        measures = [bench.keepalive_own] + ([bench.keepalive_ab] if args.ab else [])
                        for measure in measures:
                            r = measure(peer, mode, tls0, key0, hs_cpu, repeat)
                            raw_ka.append(r)
                            _say(f"  {mode:<11} {r['client']:<6} {peer.spec.name:<15} "
                                 f"{report.num(r.get('req_per_s')):>7} req/s {report.num(r.get('cpu_us'), 1):>6} µs/req"
                                 + (f"  {r['errors'][0]}" if r.get("errors") else ""))

        phases["keepalive"] = time.monotonic() - t_phase
        t_phase = time.monotonic()
        if not args.no_latency:
            _say(f"latency at {args.rate:g} connections/s ...")
            for mode in detail_modes:
                for hs in handshakes:
                    for peer in running:
                        r = bench.latency(peer, mode, hs, tls0, key0)
                        r["rate"] = args.rate
                        capacity = median(x.get("hs_per_s") for x in raw_hs
                                          if (x["peer"], x["mode"], x["handshake"], x["tls"], x["key"])
                                          == (peer.spec.name, mode, hs, tls0, key0))
                        if capacity and args.rate > SUB_SATURATING * capacity:
                            r["note"] = f"rate is {args.rate / capacity:.0%} of the measured capacity"
                        if r.get("count") and r.get("achieved_rate", 0) < SCHEDULE_SLIP * args.rate:
                            r["note"] = (f"the client fell behind its schedule ({r['achieved_rate']:.0f}/s of "
                                         f"{args.rate:g}/s): p50/p99 include its own queueing; see service times")
                        raw_lat.append(r)
                        _say(f"  {mode:<11} {hs:<7} {peer.spec.name:<15} p50 {report.num(r.get('p50_ms'), 2):>6} ms "
                             f"p99 {report.num(r.get('p99_ms'), 2):>6} ms (service p50 "
                             f"{report.num(r.get('service_p50_ms'), 2)} p99 {report.num(r.get('service_p99_ms'), 2)}, "
                             f"{report.num(r.get('achieved_rate'))}/s)"
                             + (f"  errors {r['errors']}: {r.get('error_sample')}" if r.get("errors") else ""))
        phases["latency"] = time.monotonic() - t_phase
        notes = bench.notes
    finally:
        for peer in running:
            peer.stop()

    peer_docs = []
    for p in running:
        d = p.spec.as_json()
        d["command"] = " ".join(["taskset", "-c", cpu.format_cpus(server_cpus), *p.command])
        d["config"] = p.config_text
        peer_docs.append(d)
    doc: dict = {
        "schema": report.SCHEMA,
        "command": " ".join(["mtls-gateway-bench", *sys.argv[1:]]),
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t_start, 1),
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "machine": describe_machine(args.openssl_cmd, args.ab or shutil.which("ab")),
        "settings": {
            "quick": args.quick, "seconds": args.seconds, "repeats": args.repeats, "warmup_s": args.warmup,
            "workers": args.workers, "server_cpus": cpu.format_cpus(server_cpus),
            "client_cpus": cpu.format_cpus(client_cpus), "clients": args.clients,
            "load_generator": f"taskset -c {cpu.format_cpus(client_cpus)} {args.openssl} s_time -new|-reuse -www / "
                              f"-cert client.pem -key client.key -CAfile root-ca.pem -tls1_3|-tls1_2",
            "latency_rate": args.rate, "latency_samples": args.latency_samples,
            "keepalive_repeats": args.keepalive_repeats, "crl": args.crl, "nice": args.nice,
            "modes": modes, "handshakes": handshakes, "tls": tls_versions, "keys": keys,
        },
        "peers": peer_docs,
        "skipped": [{"name": m.name, "reason": m.reason} for m in skipped],
        "floor": {"openssl": floor.openssl_version(), "ops_us": ops, "speed": speed},
        "notes": notes + warnings,
    }
    doc["reference"] = report.pick_reference(peer_docs, args.reference)
    doc["handshakes"] = report.summarize_handshakes(raw_hs, peer_docs, ops)
    doc["keepalive"] = report.summarize_keepalive(raw_ka, peer_docs)
    doc["latency"] = report.summarize_latency(raw_lat, peer_docs)
    doc["targets"] = report.evaluate_targets(doc) if doc["reference"] and "gateway" in kinds else []
    doc["bottleneck"] = report.bottleneck_summary(doc)

    report.write_json(out_dir / "results.json", doc)
    (out_dir / "results.md").write_text(report.render(doc, markdown=True) + "\n")
    why_no_chart = report.chart(out_dir / "results.png", doc)
    print(report.render(doc))
    if not doc["reference"]:
        print("\nno nginx in this run: no ratios (`apt-get install nginx` would add the nginx column)")
    for m in skipped:
        print(f"skipped {m.name}: {m.reason}")
    for n in doc["notes"]:
        print(f"note: {n}")
    print(f"\nJSON: {out_dir / 'results.json'}; tables: {out_dir / 'results.md'}; "
          + (f"chart: {out_dir / 'results.png'}" if why_no_chart is None else why_no_chart))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def render_saved(path: Path, out_dir: Path, markdown: bool) -> int:
    import orjson
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        _say(f"mtls-gateway-bench: cannot read {path}: {exc}")
        return 2
    if doc.get("schema") != report.SCHEMA:
        _say(f"mtls-gateway-bench: {path} is not a {report.SCHEMA} document")
        return 2
    if doc.get("reference") and any(p["kind"] == "gateway" for p in doc["peers"]):
        doc["targets"] = report.evaluate_targets(doc)
    print(report.render(doc, markdown=markdown))
    out_dir.mkdir(parents=True, exist_ok=True)
    why_not = report.chart(out_dir / "results.png", doc)
    _say(why_not or f"chart: {out_dir / 'results.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render is not None:
        return render_saved(args.render, args.out, args.markdown)
    try:
        return run(args)
    except KeyboardInterrupt:
        _say("interrupted: peers stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
