"""One connection through the gateway's shell and core, in process: handshake, one request, close.

How this works: the `core_keepalive` setting (one listener answering a fixed response, one
`GatewayProtocol` per connection over a memory transport, a real TLS client from Python's ssl over
memory BIOs), but every connection is new: the client sends its ClientHello, finishes the
handshake (a full one, or with `--resumed` one resuming the session of the first connection),
sends `GET / HTTP/1.0` as `openssl s_time -www` does, reads the answer and the gateway closes. Only
the server's side is timed (`connection_made`, every `data_received`, `connection_lost`). With
`--count N` it makes N connections and prints nothing, for counting instructions with valgrind
(the difference of two counts, machine noise aside):

    python -m mtls_gateway_bench.scenarios.core_handshake [--mode verify|passthrough|off] [--resumed] [--core native|python]
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m mtls_gateway_bench.scenarios.core_handshake --count N --pki DIR

The client's TLS work is in such a count too; it is the same for both twins and every change of
the server, so differences are the server's.
"""
from __future__ import annotations

import argparse
import shutil
import ssl
import tempfile
import time
from pathlib import Path

from ..harness import certs
from .core_keepalive import _pki, measure
from .proxy_keepalive import _MemoryTransport

REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def _config(pki: certs.BenchPKI, mode: str) -> str:
    store = '\ntrust_store = "bench"' if mode in ("verify", "optional") else ""
    return f"""
[gateway]
workers = 1
access_log = "off"
connection_log = "off"
log_level = "warning"

[[listener]]
name = "bench"
bind = "127.0.0.1:1"
certificates = [{{cert = "{pki.server_certs['ecdsa']}", key = "{pki.server_keys['ecdsa']}"}}]
mtls = "{mode}"{store}
header_style = "alb"

[[listener.rule]]
action = "fixed-response"
fixed_response = {{status = 200, content_type = "text/plain", body = "ok"}}

[trust_store.bench]
ca_bundle = "{pki.ca_bundle}"
"""


def run(core: str, mode: str, resumed: bool, rounds: int, connections: int, count: int,
        workdir: Path, keep: Path | None = None, tls: str = "1.3") -> list[float]:
    import uvloop

    from gateway import config
    from gateway import conn as conn_mod
    from gateway.proxy import new_protocol
    from gateway.server import build_runtime

    pki = _pki(workdir, keep)
    runtime = build_runtime(config.loads(_config(pki, mode)))
    conn_mod.set_native("on" if core == "native" else "off")

    async def main() -> list[float]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki.root)
        if mode != "off":
            ctx.load_cert_chain(pki.client_cert, pki.client_key)
        if tls == "1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        clock = time.perf_counter
        session = None

        def one() -> float:
            nonlocal session
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            client = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost",
                                  session=session if resumed else None)
            transport = _MemoryTransport(incoming.write)
            spent = 0.0
            started = clock()
            proto = new_protocol(lambda: runtime, "bench")
            proto.connection_made(transport)
            spent += clock() - started
            while True:
                try:
                    client.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    started = clock()
                    proto.data_received(outgoing.read())
                    spent += clock() - started
            client.write(REQUEST)
            started = clock()
            proto.data_received(outgoing.read())
            spent += clock() - started
            answer = b""
            while True:
                try:
                    chunk = client.read(65536)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
                if not chunk:
                    break
                answer += chunk
            if not answer.startswith(b"HTTP/1.0 200") and not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"the gateway did not answer 200: {answer[:40]!r}")
            if not transport.closing:
                raise RuntimeError("the gateway did not close the HTTP/1.0 connection")
            if resumed and session is not None and not client.session_reused:
                raise RuntimeError("the handshake did not resume")
            if session is None:
                session = client.session
            started = clock()
            proto.connection_lost(None)
            spent += clock() - started
            return spent

        one()       # the first connection: the session later ones resume
        return measure(one, count, 200, connections, rounds)

    return uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.core_handshake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--core", choices=("native", "python"), default="native")
    parser.add_argument("--mode", choices=("verify", "passthrough", "optional", "off"), default="verify")
    parser.add_argument("--resumed", action="store_true")
    parser.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--pki", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mtls-gateway-core-bench-"))
    try:
        rounds = run(args.core, args.mode, args.resumed, args.rounds, args.connections, args.count,
                     workdir, args.pki, args.tls)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if rounds:
        kind = "resumed" if args.resumed else "full"
        print(f"core {args.core}, {args.mode}, {kind} TLS {args.tls}: {min(rounds):.1f} us per "
              f"connection on the server's side (fastest of {len(rounds)} rounds of "
              f"{args.connections}: {', '.join(f'{r:.1f}' for r in rounds)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
