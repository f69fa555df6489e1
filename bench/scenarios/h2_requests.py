"""HTTP/2 requests beside nginx: server CPU per request over multiplexed streams.

    python -m mtls_gateway_bench.scenarios.h2_requests [--root /var/tmp/trixie] [--seconds 4]
                       [--repeats 5] [--python PYTHON] [--server-cpu 0] [--client-cpu 1]

How this works: one throwaway PKI (`harness.certs`); the gateway (one worker) and nginx (one worker,
`http2 on`, the same ECDSA certificate, TLS 1.3, access log off) each answer every request with the
same small fixed response ("ok"), on CPU 0. `h2load` (Debian's nghttp2-client) on CPU 1 drives two
shapes: one connection carrying 100 concurrent streams (`-c 1 -m 100`), and 8 connections of 10
streams each (`-c 8 -m 10`), for `--seconds` after a warm-up, the servers taking turns. The
worker's utime + stime from /proc before and after, over the requests h2load completed, is the CPU
per request; the ratio is the median of the per-repeat ratios (the machine's weather moves both
servers of a repeat alike). h2load has no client certificate, so the listeners are `mtls = "off"`:
what is measured is HTTP/2 framing and the exchange, the part that costs per request (the
certificate's cost is per connection and is the handshake scenarios').

`--h1` runs the same through HTTP/1.1 (`h2load --h1`, keep-alive, no multiplexing): the HTTP/1.1
figure beside it.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from gateway import testing

from ..harness import certs, cpu
from ..harness.peers import free_ports
from .proxy_keepalive import _start, _stop

SHAPES = (("1 connection x 100 streams", 1, 100), ("8 connections x 10 streams", 8, 10))


def gateway_config(port: int, pki: certs.BenchPKI, workdir: Path) -> str:
    return testing.toml({
        "gateway": {"workers": 1, "access_log": "off", "connection_log": "off",
                    "error_log": workdir / "gateway-error.log"},
        "listener": [testing.listener("h2", port, pki.server_certs["ecdsa"], pki.server_keys["ecdsa"],
                                      alpn=["h2", "http/1.1"], tls_min_version="1.3",
                                      h2_max_control_frames_per_s=100000,
                                      max_requests_per_connection=0,     # nginx: 1000000
                                      rules=[testing.fixed_response(body="ok")])],
    })


def nginx_config(port: int, cert: Path, key: Path, workdir: Path) -> str:
    return "\n".join([
        "worker_processes 1;", "daemon off;", "master_process on;", f"pid {workdir}/nginx.pid;",
        "events { worker_connections 1024; }",
        "http {", "    access_log off;", f"    error_log {workdir}/nginx-error.log;",
        "    server {", f"        listen 127.0.0.1:{port} ssl;", "        http2 on;",
        f"        ssl_certificate {cert};", f"        ssl_certificate_key {key};",
        "        ssl_protocols TLSv1.3;", "        keepalive_requests 1000000;",
        "        http2_max_concurrent_streams 128;",
        '        location / { default_type text/plain; return 200 "ok"; }', "    }", "}"]) + "\n"


def run_h2load(port: int, pid: int, connections: int, streams: int, seconds: float,
               client_cpus: tuple[int, ...], h1: bool) -> tuple[int, float]:
    """(requests done, server CPU seconds) of one h2load window."""
    cmd = ["h2load", "-c", str(connections), "-m", str(streams if not h1 else 1), "-D", f"{seconds:g}",
           "--warm-up-time", "1", *(["--h1"] if h1 else []), f"https://127.0.0.1:{port}/"]
    before = cpu.tree_seconds(pid)
    out = subprocess.run(cmd, preexec_fn=cpu.pin(client_cpus), capture_output=True, text=True,
                         timeout=seconds + 60)
    used = cpu.tree_seconds(pid) - before
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out.stdout)
    if m is None or int(m.group(2)) == 0:
        raise RuntimeError(f"h2load failed: {out.stdout[-400:]} {out.stderr[-400:]}")
    if int(m.group(3)):
        raise RuntimeError(f"h2load saw {m.group(3)} failed requests")
    # h2load counts the warm-up's requests too; the CPU read spans both, so both are counted
    return int(m.group(2)), used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.h2_requests",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--root", type=Path, default=None, help="run nginx from this root (chroot)")
    parser.add_argument("--python", default=None, help="the interpreter that runs the gateway")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--h1", action="store_true", help="HTTP/1.1 keep-alive instead (h2load --h1)")
    args = parser.parse_args(argv)
    root = args.root
    nginx = ("/usr/sbin/nginx" if root is not None and (root / "usr/sbin/nginx").exists()
             else shutil.which("nginx") if root is None else None)
    if nginx is None or shutil.which("h2load") is None:
        print("needs nginx and h2load: apt-get install -y nginx nghttp2-client (or --root ROOT with "
              "nginx installed in ROOT)", file=sys.stderr)
        return 2
    server_cpus, client_cpus = cpu.parse_cpus(args.server_cpu), cpu.parse_cpus(args.client_cpu)
    base = None
    if root is not None:
        base = root / "tmp"
        base.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="mtls-gateway-h2-bench-", dir=base))
    workdir.chmod(0o755)

    def seen(path: Path) -> Path:
        return path if root is None else Path("/") / path.relative_to(root)

    procs: dict[str, subprocess.Popen] = {}
    try:
        pki = certs.make(workdir / "pki")
        gw_port, ngx_port = free_ports(2)
        (workdir / "gateway.toml").write_text(gateway_config(gw_port, pki, workdir))
        (workdir / "nginx.conf").write_text(nginx_config(
            ngx_port, seen(Path(pki.server_certs["ecdsa"])), seen(Path(pki.server_keys["ecdsa"])),
            seen(workdir)))
        ngx_cmd = [nginx, "-e", str(seen(workdir / "nginx-error.log")), "-p", f"{seen(workdir)}/",
                   "-c", str(seen(workdir / "nginx.conf"))]
        cmds = {"gateway": testing.gateway_command(workdir / "gateway.toml", args.python),
                "nginx": ["chroot", str(root), *ngx_cmd] if root is not None else ngx_cmd}
        ports = {"gateway": gw_port, "nginx": ngx_port}
        for name, cmd in cmds.items():
            procs[name] = _start(cmd, server_cpus, [ports[name]], workdir / f"{name}.stderr")
        proto = "HTTP/1.1 keep-alive" if args.h1 else "HTTP/2"
        print(f"{proto} requests (fixed 200 \"ok\", TLS 1.3 ECDSA, mtls off), h2load on CPU "
              f"{cpu.format_cpus(client_cpus)}, servers on CPU {cpu.format_cpus(server_cpus)}, "
              f"{args.repeats} x {args.seconds:g} s")
        for label, conns, streams in SHAPES if not args.h1 else SHAPES[1:]:
            runs: dict[str, list[float]] = {"gateway": [], "nginx": []}
            for i in range(args.repeats):
                order = ["gateway", "nginx"] if i % 2 == 0 else ["nginx", "gateway"]
                for name in order:
                    done, used = run_h2load(ports[name], procs[name].pid, conns, streams, args.seconds,
                                            client_cpus, args.h1)
                    runs[name].append(used * 1e6 / done)
            ratios = [g / n for g, n in zip(runs["gateway"], runs["nginx"])]
            print(f"  {label if not args.h1 else '8 connections, keep-alive'}: gateway "
                  f"{statistics.median(runs['gateway']):.1f} µs, nginx {statistics.median(runs['nginx']):.1f} µs "
                  f"per request; paired ratio {statistics.median(ratios):.2f} "
                  f"({' '.join(f'{r:.2f}' for r in ratios)})", flush=True)
        return 0
    finally:
        for proc in procs.values():
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
