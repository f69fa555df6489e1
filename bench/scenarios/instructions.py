"""Server instructions per operation, the gateway beside nginx, counted by valgrind: no noise.

    python -m mtls_gateway_bench.scenarios.instructions [--peers gateway,nginx] [--root ROOT] [--modes off,passthrough,verify]
                                 [--ops full,resumed,keepalive] [--count 100] [--tls 1.3]
                                 [--key ecdsa|rsa] [--keep DIR]

How this works: CPU time on a shared machine moved by 50% between identical runs, so this counts
instructions instead. Each peer (the harness's configuration, harness.peers: one worker, an ECDSA
P-256 or RSA-2048 server key, the same fixed answer) runs under `valgrind --tool=callgrind`
(nginx with the valgrind of its own root: `chroot ROOT apt-get install valgrind`, and valgrind
needs /proc there: `mount -t proc proc ROOT/proc`). A client in this process (Python's ssl) makes
a few operations to warm up; `callgrind_control -z` zeroes the worker's counters, the client
makes `--count` operations, `callgrind_control -d` dumps them, and the worker's instructions are
divided by the count:

- `full`: a new connection, a full handshake, `GET / HTTP/1.0` as `openssl s_time -www` sends it,
  the answer read, the connection closed by the server;
- `resumed`: the same, resuming the first connection's session (a TLS 1.3 ticket);
- `keepalive`: one connection, `--count` HTTP/1.1 requests over it, one at a time.

The client's certificate (leaf + intermediate) is sent in every mode but `off`. Instructions are
not cycles (a cache miss costs many), but both servers run the same kind of work on the same
OpenSSL major version, so the ratio is the figure to compare and it repeats to a few per mille.
Each count includes everything the worker does per operation: accept, the event loop, syscalls'
user-space side, TLS, HTTP, logs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..harness import certs, load, peers

SNI = "localhost"
WARMUP = 5
START_TIMEOUT_S = 180.0         # Python and its imports under valgrind take a while


def _client_context(pki: certs.BenchPKI, mode: str, tls: str) -> ssl.SSLContext:
    """harness.load's client context; the client's certificate in every mode but `off`."""
    cert = (str(pki.client_cert), str(pki.client_key)) if mode != "off" else (None, None)
    return load._client_context(tls, *cert, str(pki.root))


def _read_answer(s: ssl.SSLSocket) -> bytes:
    """One whole answer (head and Content-Length body); its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    want = load._content_length(head)
    while len(body) < want:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of an answer")
        body += chunk
    if not head.startswith(b"HTTP/1."):
        raise RuntimeError(f"not an HTTP answer: {data[:60]!r}")
    return head


class Client:
    def __init__(self, ctx: ssl.SSLContext, port: int) -> None:
        self.ctx, self.port, self.session, self.kept = ctx, port, None, None

    def connection(self, resume: bool) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        with self.ctx.wrap_socket(raw, server_hostname=SNI,
                                  session=self.session if resume else None) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            _read_answer(s)
            try:
                while s.recv(65536):        # the server closes; the tickets come before
                    pass
            except (ssl.SSLError, OSError):
                pass
            if resume and self.session is not None and not s.session_reused:
                raise RuntimeError("the handshake did not resume")
            if self.session is None:
                self.session = s.session

    def request(self) -> None:
        if self.kept is None:
            self.kept = load._connect(self.ctx, self.port)
        self.kept.sendall(load._KEEPALIVE_REQUEST)
        _read_answer(self.kept)

    def close(self) -> None:
        if self.kept is not None:
            self.kept.close()
            self.kept = None


def _valgrind_command(peer: peers.Peer, outdir_seen: str) -> list[str]:
    cmd = list(peer.command)
    root = peer.spec.root
    if root is not None:
        cmd = cmd[2:]           # without "chroot ROOT"
    vg = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--dump-instr=no",
          f"--callgrind-out-file={outdir_seen}/cg.%p"]
    return (["chroot", str(root)] if root is not None else []) + vg + cmd


def _control(peer: peers.Peer, *args: str) -> None:
    prefix = ["chroot", str(peer.spec.root)] if peer.spec.root is not None else []
    subprocess.run([*prefix, "callgrind_control", *args], check=True, capture_output=True,
                   timeout=120)


def _totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _worker(pid: int) -> int:
    from .flood import children
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = children(pid)
        if kids:
            return kids[0]
        time.sleep(0.2)
    raise RuntimeError("no worker process")


def measure(spec, pki, workdir: Path, modes: list[str], ops: list[str], count: int,
            tls: str, key: str = "ecdsa", keep: Path | None = None) -> dict[tuple[str, str], float]:
    endpoints = [(m, key) for m in modes]
    peer = peers.Peer(spec, pki, endpoints, workers=1, server_cpus=(0,), crl=False,
                      workdir=workdir / spec.name.replace("@", "-"))
    if spec.kind == "nginx" and "user nobody nogroup;" in peer.config_text:
        # callgrind_control reaches a worker through FIFOs that valgrind made before the worker
        # dropped to nobody, and could then no longer open: the workers keep root's user here
        text = peer.config_text.replace("user nobody nogroup;", "user root root;")
        (peer._host_dir / "nginx.conf").write_text(text)
        peer.config_text = text
    outdir = peer._host_dir / "callgrind"
    outdir.mkdir(parents=True, exist_ok=True)
    seen = str(outdir) if spec.root is None else "/" + str(outdir.relative_to(spec.root))
    peer.command = _valgrind_command(peer, seen)
    with open(peer._log, "wb") as log:
        peer.proc = subprocess.Popen(peer.command, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
    results: dict[tuple[str, str], float] = {}
    try:
        try:
            peers._wait_ports([e.port for e in peer.endpoints.values()], peer.proc, START_TIMEOUT_S)
        except RuntimeError as exc:
            raise RuntimeError(f"{spec.name} under valgrind did not start: {exc}; "
                               f"{peer.log_tail(8)}") from None
        worker = _worker(peer.pid)
        for mode in modes:
            ctx = _client_context(pki, mode, tls)
            for op in ops:
                client = Client(ctx, peer.port(mode, key))
                step = {"full": lambda: client.connection(False),
                        "resumed": lambda: client.connection(True),
                        "keepalive": client.request}[op]
                for _ in range(WARMUP):
                    step()
                before = set(outdir.glob(f"cg.{worker}*"))
                _control(peer, "-z", str(worker))
                for _ in range(count):
                    step()
                _control(peer, "-d", str(worker))
                client.close()
                deadline = time.monotonic() + 60
                new = set()
                while not new and time.monotonic() < deadline:
                    new = set(outdir.glob(f"cg.{worker}*")) - before
                    time.sleep(0.2)
                if not new:
                    raise RuntimeError("callgrind wrote no dump")
                time.sleep(0.5)     # let the dump finish
                dump = max(new, key=lambda p: p.stat().st_mtime)
                results[(mode, op)] = _totals(dump) / count
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(dump, keep / f"{spec.name.replace('@', '-')}.{mode}.{op}.callgrind")
                print(f"  {spec.name:14} {mode:11} {op:9} {results[(mode, op)]:12,.0f} instructions",
                      flush=True)
    finally:
        peer.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.instructions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default="gateway,nginx")
    p.add_argument("--root", type=Path, default=None, help="run nginx in this root (chroot)")
    p.add_argument("--modes", default="off,passthrough,verify")
    p.add_argument("--ops", default="full,resumed,keepalive")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    p.add_argument("--key", choices=peers.KEYS, default="ecdsa", help="the servers' key type")
    p.add_argument("--keep", type=Path, default=None,
                   help="copy each counted dump here (PEER.MODE.OP.callgrind, for callgrind_annotate)")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    ops = [o for o in args.ops.split(",") if o]
    if args.root is not None and not (args.root / "proc/self/maps").exists():
        print(f"valgrind needs /proc in {args.root}: mount -t proc proc {args.root}/proc",
              file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mtls-gateway-instructions-"))
    try:
        pki = certs.make(workdir / "pki")
        table: dict[str, dict] = {}
        for name in [n for n in args.peers.split(",") if n]:
            spec = peers.find_gateway() if name == "gateway" else \
                peers.find_server(name, name, args.root)
            if isinstance(spec, peers.Missing):
                print(f"  {name}: {spec.reason}", file=sys.stderr)
                continue
            table[spec.name] = measure(spec, pki, workdir, modes, ops, args.count, args.tls,
                                       args.key, args.keep)
        names = list(table)
        print(f"\n| operation (TLS {args.tls}, {args.key.upper()}) | " + " | ".join(names)
              + (f" | ratio {names[0]} / {names[1]} |" if len(names) == 2 else " |"))
        print("|---|" + "---:|" * (len(names) + (1 if len(names) == 2 else 0)))
        for mode in modes:
            for op in ops:
                vals = [table[n].get((mode, op)) for n in names]
                cells = [f"{v:,.0f}" if v else "-" for v in vals]
                if len(vals) == 2 and all(vals):
                    cells.append(f"{vals[0] / vals[1]:.2f}")
                print(f"| {op}, {mode} | " + " | ".join(cells) + " |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
