"""One keep-alive request through the gateway's shell and core, in process: native core vs pure.

How this works: a `verify` listener answering a fixed response, one `GatewayProtocol` in this
process over a memory transport, a real TLS client (Python's ssl over memory BIOs) that has done
its handshake; each request is one TLS record in and one out. Only the server's side is timed
(`data_received`, perf_counter around it). `--core` picks the connection core's twin, every other
hot path stays native. With `--count N` it serves N requests and prints nothing, for counting
instructions with valgrind (the difference of two counts, machine noise aside):

    python -m mtls_gateway_bench.scenarios.core_keepalive [--core native|python] [--rounds 7] [--requests 20000]
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python -m mtls_gateway_bench.scenarios.core_keepalive --count N --pki DIR

(`--pki DIR` keeps the generated certificates in DIR and reuses them, so that two counts differ by
the requests only.)
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from gateway.testing import MemoryTLSClient, MemoryTransport, client_context, fixed_response, listener, toml

from ..harness import certs

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n"


def _config(pki: certs.BenchPKI, mode: str = "verify", **fields) -> str:
    """One worker, logs off, a listener answering 200 "ok" in `mode` (`fields`: its other keys)."""
    return toml({
        "gateway": {"workers": 1, "access_log": "off", "connection_log": "off", "log_level": "warning"},
        "listener": [listener("bench", 1, pki.server_certs["ecdsa"], pki.server_keys["ecdsa"], mtls=mode,
                              trust_store="bench" if mode in ("verify", "optional") else None,
                              header_style="alb", **fields,
                              rules=[fixed_response(content_type="text/plain")])],
        "trust_store": {"bench": {"ca_bundle": pki.ca_bundle}},
    })


def _pki(workdir: Path, keep: Path | None) -> certs.BenchPKI:
    import pickle

    if keep is None:
        return certs.make(workdir / "pki")
    saved = keep / "pki.pickle"
    if saved.exists():
        return pickle.loads(saved.read_bytes())
    pki = certs.make(keep)
    saved.write_bytes(pickle.dumps(pki))
    return pki


def measure(one, count: int, warmup: int, n: int, rounds: int) -> list[float]:
    """`count` calls of `one` and nothing back (for valgrind); else `warmup` calls, then `rounds`
    means of `n` calls, in microseconds (`one` returns the seconds it timed)."""
    if count:
        for _ in range(count):
            one()
        return []
    for _ in range(warmup):
        one()
    return [sum(one() for _ in range(n)) / n * 1e6 for _ in range(rounds)]


def run(core: str, rounds: int, requests: int, count: int, workdir: Path,
        keep: Path | None = None) -> list[float]:
    import uvloop

    from gateway import config
    from gateway import conn as conn_mod
    from gateway.proxy import new_protocol
    from gateway.server import build_runtime

    pki = _pki(workdir, keep)
    runtime = build_runtime(config.loads(_config(pki, max_requests_per_connection=0)))
    conn_mod.set_native("on" if core == "native" else "off")

    async def main() -> list[float]:
        pair = MemoryTLSClient(client_context(pki.root, pki.client_cert, pki.client_key))
        client, outgoing = pair.tls, pair.outgoing
        proto = new_protocol(lambda: runtime, "bench")
        proto.connection_made(MemoryTransport(pair.incoming.write))
        pair.handshake(proto.data_received)
        if outgoing.pending:
            proto.data_received(outgoing.read())
        clock = time.perf_counter

        def one() -> float:
            client.write(REQUEST)
            record = outgoing.read()
            started = clock()
            proto.data_received(record)
            spent = clock() - started
            if not client.read(65536).startswith(b"HTTP/1.1 200"):
                raise RuntimeError("the gateway did not answer 200")
            return spent

        return measure(one, count, 2000, requests, rounds)

    return uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.core_keepalive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--core", choices=("native", "python"), default="native")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--pki", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mtls-gateway-core-bench-"))
    try:
        rounds = run(args.core, args.rounds, args.requests, args.count, workdir, args.pki)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if rounds:
        print(f"core {args.core}: {min(rounds):.2f} us per request in data_received (fastest of "
              f"{len(rounds)} rounds of {args.requests}: {', '.join(f'{r:.2f}' for r in rounds)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
