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
import tempfile
import time
from pathlib import Path

from gateway.testing import MemoryTLSClient, MemoryTransport, client_context

from .core_keepalive import _config, _pki, measure

REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def run(core: str, mode: str, resumed: bool, rounds: int, connections: int, count: int,
        workdir: Path, keep: Path | None = None, tls: str = "1.3", prepare=None) -> list[float]:
    """`prepare(runtime, pki)`, when given, adjusts the built runtime before the first connection."""
    import uvloop

    from gateway import config
    from gateway import conn as conn_mod
    from gateway.proxy import new_protocol
    from gateway.server import build_runtime

    pki = _pki(workdir, keep)
    runtime = build_runtime(config.loads(_config(pki, mode)))
    if prepare is not None:
        prepare(runtime, pki)
    conn_mod.set_native("on" if core == "native" else "off")

    async def main() -> list[float]:
        client_cert = (pki.client_cert, pki.client_key) if mode != "off" else ()
        ctx = client_context(pki.root, *client_cert, version="1.2" if tls == "1.2" else "1.3")
        clock = time.perf_counter
        session = None

        def one() -> float:
            nonlocal session
            pair = MemoryTLSClient(ctx, session=session if resumed else None)
            client = pair.tls
            transport = MemoryTransport(pair.incoming.write)
            spent = 0.0
            started = clock()
            proto = new_protocol(lambda: runtime, "bench")
            proto.connection_made(transport)
            spent += clock() - started

            def deliver(data: bytes) -> None:
                nonlocal spent
                started = clock()
                proto.data_received(data)
                spent += clock() - started
            pair.handshake(deliver)
            client.write(REQUEST)
            deliver(pair.outgoing.read())
            answer = pair.read_available()
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
