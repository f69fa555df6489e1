"""Keep-alive requests proxied over established mTLS connections: the gateway against nginx.

How this works: one fast upstream (nginx answering `200 ok` from memory, keep-alive) sits behind two
proxies that do the same job: TLS with a required, verified client certificate, a forward of every
request to the upstream over pooled keep-alive connections, and the client's identity passed on in
ALB's headers (nginx: `proxy_pass` with `keepalive`, `$ssl_client_*` variables in
`proxy_set_header`; the gateway: `mtls = "verify"`, `header_style = "alb"`). Each proxy runs one
worker pinned to the server CPU; `ab -k` with a client certificate (`-E`) and the upstream run on the
client CPU. `ab -k` opens its connections once (one handshake each) and then sends requests back
to back, so almost all the work measured is per request. A third server, `nginx-lean`, is the same
nginx proxy without the identity headers (nginx renders `$ssl_client_escaped_cert` and the DNs
anew for every request, the gateway once per connection): the stricter comparison for the
proxying itself. The figure is the proxy's own CPU time
(user + system of its process tree, from /proc/PID/stat, read just before and just after the ab
run) divided by the requests ab completed: CPU per request on the server, whichever side is the
bottleneck. Runs rotate through the servers, `--repeats` times; the table shows each run, the
medians and the ratios gateway / nginx and gateway / nginx-lean.

    python -m mtls_gateway_bench.scenarios.proxy_keepalive [--seconds 5] [--repeats 5] [--concurrency 32]
                                    [--server-cpu 0] [--client-cpu 1] [--root ROOT]

`--root ROOT` runs both nginx (the upstream and the proxies) from another system's root with
chroot, as the harness does (nginx 1.26 on OpenSSL 3.5 from a Debian 13 root: bench/README.md);
the working directory is then made inside ROOT so that both sides see the same files.

`--in-process N` measures the gateway's own share instead: one `GatewayProtocol` in this process,
real TLS over memory BIOs to an in-process client, a stand-in target answering from memory, no
sockets and no kernel; N requests on one connection, five rounds, the fastest reported (the
client's TLS work is included, about a tenth of the figure). It isolates the Python path from
syscalls and scheduling, which is what to watch when changing the data path.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

from gateway.testing import (MemoryTLSClient, MemoryTransport, client_context, forward, gateway_command, listener,
                             toml)

from ..harness import certs, cpu
from ..harness.load import ab_command, parse_ab
from ..harness.peers import _wait_ports, free_ports
from ..harness.stats import median, ratio, spread

BODY = "ok"
WARMUP_S = 2


def gateway_config(port: int, upstream: int, pki: certs.BenchPKI, workdir: Path) -> str:
    return toml({
        "gateway": {"workers": 1, "access_log": "off", "connection_log": "off",
                    "error_log": workdir / "gateway-error.log", "log_level": "warning"},
        "listener": [listener("bench", port, pki.server_certs["ecdsa"], pki.server_keys["ecdsa"], mtls="verify",
                              trust_store="bench", header_style="alb", max_requests_per_connection=0,
                              rules=[forward("up")])],
        "trust_store": {"bench": {"ca_bundle": pki.ca_bundle}},
        "target_group": {"up": {"targets": [f"127.0.0.1:{upstream}"]}},
    })


def _nginx_head(workdir: Path, name: str) -> list[str]:
    """`workdir` as nginx sees it; the caller has made `workdir/name`."""
    d = workdir / name
    out = ["daemon off;", "master_process on;", "worker_processes 1;", f"pid {d}/nginx.pid;",
           f"error_log {d}/error.log warn;"]
    if os.geteuid() == 0:
        out.append("user nobody nogroup;")
    out += ["events { worker_connections 4096; }", "http {", "    access_log off;",
            "    default_type text/plain;", f"    client_body_temp_path {d}/body;",
            f"    proxy_temp_path {d}/proxy;", f"    fastcgi_temp_path {d}/fastcgi;",
            f"    uwsgi_temp_path {d}/uwsgi;", f"    scgi_temp_path {d}/scgi;",
            "    keepalive_requests 100000000;", "    keepalive_timeout 60s;"]
    return out


def upstream_config(port: int, workdir: Path) -> str:
    out = _nginx_head(workdir, "upstream")
    out += ["    server {", f"        listen 127.0.0.1:{port};",
            f'        location / {{ return 200 "{BODY}"; }}', "    }", "}"]
    return "\n".join(out) + "\n"


def nginx_proxy_config(port: int, upstream: int, pki: certs.BenchPKI, workdir: Path, *,
                       identity: bool = True) -> str:
    name = "proxy" if identity else "lean"
    out = _nginx_head(workdir, name)
    out += ["    ssl_protocols TLSv1.2 TLSv1.3;", f"    ssl_session_cache shared:{name}:20m;",
            "    upstream up {", f"        server 127.0.0.1:{upstream};", "        keepalive 32;",
            "        keepalive_requests 100000000;", "    }",
            "    server {", f"        listen 127.0.0.1:{port} ssl;",
            f"        ssl_certificate {pki.server_certs['ecdsa']};",
            f"        ssl_certificate_key {pki.server_keys['ecdsa']};",
            f"        ssl_client_certificate {pki.ca_bundle};", "        ssl_verify_client on;",
            "        ssl_verify_depth 2;",
            "        location / {",
            "            proxy_pass http://up;", "            proxy_http_version 1.1;",
            '            proxy_set_header Connection "";',
            "            proxy_set_header Host $http_host;",
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "            proxy_set_header X-Forwarded-Proto https;",
            "            proxy_set_header X-Forwarded-Port $server_port;"]
    if identity:
        out += [
            "            proxy_set_header X-Amzn-Mtls-Clientcert-Serial-Number $ssl_client_serial;",
            "            proxy_set_header X-Amzn-Mtls-Clientcert-Issuer $ssl_client_i_dn;",
            "            proxy_set_header X-Amzn-Mtls-Clientcert-Subject $ssl_client_s_dn;",
            '            proxy_set_header X-Amzn-Mtls-Clientcert-Validity '
            '"NotBefore=$ssl_client_v_start;NotAfter=$ssl_client_v_end";',
            "            proxy_set_header X-Amzn-Mtls-Clientcert-Leaf $ssl_client_escaped_cert;"]
    out += ["        }", "    }", "}"]
    return "\n".join(out) + "\n"


def _start(cmd: list[str], cpus: tuple[int, ...], ports: list[int], log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, preexec_fn=cpu.pin(cpus), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        _wait_ports(ports, proc, 30.0)
    except RuntimeError as exc:
        proc.kill()
        raise RuntimeError(f"{cmd[0]}: {exc}; see {log}") from None
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(ab: str, port: int, server_pid: int, pki: certs.BenchPKI, *, seconds: float,
            concurrency: int, client_cpus: tuple[int, ...]) -> dict:
    """One ab run: requests, requests/s and the server's CPU per request."""
    cmd = ab_command(ab, port, tls="1.3", combined=pki.client_combined, concurrency=concurrency,
                     seconds=seconds)
    before = cpu.tree_seconds(server_pid)
    out = subprocess.run(cmd, preexec_fn=cpu.pin(client_cpus), capture_output=True, text=True,
                         timeout=seconds + 60)
    used = cpu.tree_seconds(server_pid) - before
    result = parse_ab(out.stdout)
    if result is None or result.complete == 0:
        raise RuntimeError(f"ab failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    if result.failed or result.non_2xx:
        raise RuntimeError(f"ab saw {result.failed} failed and {result.non_2xx} non-2xx responses")
    return {"requests": result.complete, "rps": result.complete / result.time_s,
            "cpu_s": used, "us_per_request": cpu.per_event_us(used, result.complete)}


_IN_PROCESS_REQUEST = (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1\r\n"
                       b"User-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n")
_IN_PROCESS_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 28 Nov 2026 12:00:00 GMT\r\n"
                        b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")


def in_process(requests: int, workdir: Path, keep: Path | None = None) -> list[float]:
    """Microseconds of this process's CPU per proxied request, for five rounds. `keep`: reuse
    the certificates kept there (made the first time), so that two runs differ by the requests
    only (for counting instructions)."""
    import asyncio
    import ssl

    import uvloop

    from gateway import config
    from gateway.proxy import new_protocol
    from gateway.server import build_runtime
    from gateway.upstream import UpstreamConnection

    from .core_keepalive import _pki
    pki = _pki(workdir, keep)
    text = gateway_config(1, 9, pki, workdir).replace('error_log = ', '# error_log = ')
    runtime = build_runtime(config.loads(text))

    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        group = runtime.target_groups["up"]
        target = group.targets[0]
        pooled = UpstreamConnection(group, target)
        pooled.connection_made(MemoryTransport(
            lambda data: loop.call_soon(pooled.data_received, _IN_PROCESS_RESPONSE)))
        group.release(pooled)
        pair = MemoryTLSClient(client_context(pki.root, pki.client_cert, pki.client_key))
        client, incoming, outgoing = pair.tls, pair.incoming, pair.outgoing
        answered = asyncio.Event()

        def to_client(data: bytes) -> None:
            incoming.write(data)
            try:
                while client.read(65536).endswith(b"ok"):
                    answered.set()
            except ssl.SSLWantReadError:
                pass

        proto = new_protocol(lambda: runtime, "bench")
        proto.connection_made(MemoryTransport(to_client))
        pair.handshake(proto.data_received)
        if outgoing.pending:
            proto.data_received(outgoing.read())

        async def one() -> None:
            answered.clear()
            client.write(_IN_PROCESS_REQUEST)
            proto.data_received(outgoing.read())
            await answered.wait()

        for _ in range(500):
            await one()
        rounds = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(requests):
                await one()
            rounds.append((time.process_time() - started) * 1e6 / requests)
        return rounds

    return uvloop.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.proxy_keepalive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--upstream-cpu", default=None,
                        help="where the upstream runs (default: with the client)")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON too")
    parser.add_argument("--in-process", type=int, metavar="N", default=0,
                        help="measure the gateway alone, in this process, over N requests")
    parser.add_argument("--python", default=None, metavar="PYTHON",
                        help="the interpreter that runs the gateway (default: this one)")
    parser.add_argument("--root", type=Path, default=None,
                        help="run nginx from this root (chroot), as the harness does")
    parser.add_argument("--pki", type=Path, default=None,
                        help="with --in-process: keep the certificates in this directory and reuse them")
    args = parser.parse_args(argv)
    if args.in_process:
        workdir = Path(tempfile.mkdtemp(prefix="mtls-gateway-proxy-bench-"))
        try:
            rounds = in_process(args.in_process, workdir, args.pki)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"in process, no sockets: {min(rounds):.1f} us CPU per request (fastest of "
              f"{len(rounds)} rounds of {args.in_process}: {', '.join(f'{r:.0f}' for r in rounds)})")
        return 0
    root = args.root
    if root is not None:
        nginx = "/usr/sbin/nginx" if (root / "usr/sbin/nginx").exists() else None
    else:
        nginx = shutil.which("nginx")
    ab = shutil.which("ab")
    if not nginx or not ab:
        print("needs nginx and ab: apt-get install -y nginx apache2-utils (or --root ROOT with "
              "nginx installed in ROOT)", file=sys.stderr)
        return 2
    server_cpus, client_cpus = cpu.parse_cpus(args.server_cpu), cpu.parse_cpus(args.client_cpu)
    upstream_cpus = cpu.parse_cpus(args.upstream_cpu) if args.upstream_cpu else client_cpus
    base = None
    if root is not None:
        base = root / "tmp"
        base.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="mtls-gateway-proxy-bench-", dir=base))
    workdir.chmod(0o755)

    def seen(path: Path) -> Path:
        """A path as nginx sees it (inside ROOT when there is one)."""
        return path if root is None else Path("/") / path.relative_to(root)

    def nginx_cmd(name: str) -> list[str]:
        cmd = [nginx, "-e", str(seen(workdir / name / "error.log")), "-p", f"{seen(workdir)}/",
               "-c", str(seen(workdir / f"{name}.conf"))]
        return ["chroot", str(root), *cmd] if root is not None else cmd

    procs: list[subprocess.Popen] = []
    try:
        pki = certs.make(workdir / "pki")
        ngx_pki = pki if root is None else types.SimpleNamespace(
            server_certs={"ecdsa": seen(Path(pki.server_certs["ecdsa"]))},
            server_keys={"ecdsa": seen(Path(pki.server_keys["ecdsa"]))},
            ca_bundle=seen(Path(pki.ca_bundle)))
        up_port, gw_port, ngx_port, lean_port = free_ports(4)
        for name in ("upstream", "proxy", "lean"):
            (workdir / name).mkdir(parents=True, exist_ok=True)
        (workdir / "upstream.conf").write_text(upstream_config(up_port, seen(workdir)))
        (workdir / "proxy.conf").write_text(nginx_proxy_config(ngx_port, up_port, ngx_pki,
                                                               seen(workdir)))
        (workdir / "lean.conf").write_text(nginx_proxy_config(lean_port, up_port, ngx_pki,
                                                              seen(workdir), identity=False))
        (workdir / "gateway.toml").write_text(gateway_config(gw_port, up_port, pki, workdir))
        procs.append(_start(nginx_cmd("upstream"), upstream_cpus, [up_port],
                            workdir / "upstream.stderr"))
        servers = {
            "gateway": _start(gateway_command(workdir / "gateway.toml", args.python), server_cpus, [gw_port],
                              workdir / "gateway.stderr"),
            "nginx": _start(nginx_cmd("proxy"), server_cpus, [ngx_port], workdir / "nginx.stderr"),
            "nginx-lean": _start(nginx_cmd("lean"), server_cpus, [lean_port],
                                 workdir / "lean.stderr"),
        }
        procs += servers.values()
        ports = {"gateway": gw_port, "nginx": ngx_port, "nginx-lean": lean_port}
        names = list(servers)
        for name, proc in servers.items():        # warm up: pools filled, code paths hot
            measure(ab, ports[name], proc.pid, pki, seconds=WARMUP_S, concurrency=args.concurrency,
                    client_cpus=client_cpus)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for i in range(args.repeats):
            for name in names[i % 3:] + names[:i % 3]:
                r = measure(ab, ports[name], servers[name].pid, pki, seconds=args.seconds,
                            concurrency=args.concurrency, client_cpus=client_cpus)
                runs[name].append(r)
                print(f"run {i + 1} {name:10s} {r['requests']:8d} requests  {r['rps']:9.0f} req/s  "
                      f"{r['us_per_request']:7.2f} us CPU/request", flush=True)
        print()
        print(f"keep-alive requests over mTLS (TLS 1.3, client certificate verified), proxied to a "
              f"fast upstream; ab -k -c {args.concurrency}, {args.seconds:g} s x {args.repeats}; "
              f"server CPU {cpu.format_cpus(server_cpus)}, client CPU {cpu.format_cpus(client_cpus)}, "
              f"upstream CPU {cpu.format_cpus(upstream_cpus)}")
        print(f"{'':10s} {'median us CPU/request':>22s} {'spread':>7s} {'median req/s':>13s}")
        medians = {}
        for name in names:
            us = [r["us_per_request"] for r in runs[name]]
            medians[name] = median(us)
            sp = spread(us)
            print(f"{name:10s} {medians[name]:22.2f} {sp * 100 if sp is not None else 0:6.0f}% "
                  f"{median([r['rps'] for r in runs[name]]):13.0f}")
        r = ratio(medians["gateway"], medians["nginx"])
        lean = ratio(medians["gateway"], medians["nginx-lean"])
        print(f"ratio gateway / nginx, same job (server CPU per request): {r:.2f}")
        print(f"ratio gateway / nginx-lean, no identity headers in nginx: {lean:.2f}")
        if args.json:
            print(json.dumps({"runs": runs, "medians": medians, "ratio": r, "ratio_lean": lean}))
        return 0
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
