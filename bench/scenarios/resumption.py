"""Full vs resumed mTLS handshakes, verify and passthrough, one and two workers.

    python -m mtls_gateway_bench.scenarios.resumption [--seconds 5] [--repeats 3] [--workers 1 2]

How this works: a throwaway PKI (ECDSA P-256, client chain of depth 2) and the gateway as its own
process (`workers` workers, logs off, fixed responses so no upstream takes CPU). For each cell,
`openssl s_time -new` (full) or `-reuse` (resumed; `-www /` so TLS 1.3 tickets are read) runs for
`--seconds`. Handshakes per second are s_time's connection count over the wall time; server CPU per
handshake is the utime+stime the gateway's processes spent (from /proc/PID/stat) over that count,
which holds whichever side was the bottleneck. With one worker the gateway is pinned to CPU 0 and
the client to CPU 1; with two, the workers share both CPUs with the client. Cells alternate and
repeat; medians are printed.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from gateway import testing

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total * _TICK_S


def _pids(master: int) -> list[int]:
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        children = []
    return [master] + [int(c) for c in children]


def _start(d: Path, workers: int, ports: dict) -> subprocess.Popen:
    p = d / "pki"
    config = testing.write_config(d / "gateway.toml", {
        "gateway": {"workers": workers, "access_log": "off", "connection_log": "off", "error_log": d / "error.log"},
        "listener": [testing.listener(mode, port, p / "server.pem", p / "server.key", mtls=mode)
                     for mode, port in ports.items()],
        "trust_store": {"main": {"ca_bundle": p / "ca-bundle.pem",
                                 "crls": [p / "crl-root.pem", p / "crl-intermediate.pem"]}},
    })
    cpus = "0" if workers == 1 else "0,1"
    gateway = testing.GatewayProcess(config, ports, command=["taskset", "-c", cpus, *testing.gateway_command(config)],
                                     stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return gateway.proc


def _s_time(port: int, pki: Path, reuse: bool, seconds: float) -> int:
    r = subprocess.run(["taskset", "-c", "1", "openssl", "s_time", "-connect", f"127.0.0.1:{port}",
                        "-reuse" if reuse else "-new", "-www", "/", "-cert", str(pki / "clients" / "client1.pem"),
                        "-key", str(pki / "clients" / "client1.key"), "-CAfile", str(pki / "root-ca.pem"),
                        "-time", str(int(seconds))], capture_output=True, text=True)
    found = re.findall(r"(\d+) connections in [\d.]+s", r.stdout)
    return int(found[0]) if found else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.resumption")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    from gateway import pki
    rows = []
    with tempfile.TemporaryDirectory(prefix="mtls-gateway-resume-") as tmp:
        d = Path(tmp)
        pki.init_dir(d / "pki")
        for workers in args.workers:
            ports = {"verify": testing.free_port(), "passthrough": testing.free_port()}
            proc = _start(d, workers, ports)
            cells: dict[tuple, list[tuple[float, float]]] = {}
            try:
                for _ in range(args.repeats):
                    for mode in ("verify", "passthrough"):
                        for reuse in (False, True):
                            pids = _pids(proc.pid)
                            c0, t0 = _cpu_s(pids), time.monotonic()
                            n = _s_time(ports[mode], d / "pki", reuse, args.seconds)
                            wall, cpu = time.monotonic() - t0, _cpu_s(pids) - c0
                            if n:
                                cells.setdefault((mode, reuse), []).append((n / wall, cpu / n * 1e6))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            for (mode, reuse), vals in cells.items():
                rows.append((workers, mode, "resumed" if reuse else "full",
                             statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals)))
    print(f"{'workers':>7} {'mode':<12} {'handshake':<9} {'handshakes/s':>13} {'server CPU us/handshake':>24}")
    for w, mode, kind, rate, cpu in rows:
        print(f"{w:>7} {mode:<12} {kind:<9} {rate:>13.0f} {cpu:>24.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
