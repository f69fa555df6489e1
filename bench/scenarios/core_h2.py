"""HTTP/2 requests through the gateway's shell and core, in process: the native twins of HTTP/2
(gateway._http2_c: the HPACK codec and the request's building) beside the hpack library's codec and
the pure request_of, side by side.

    python -m mtls_gateway_bench.scenarios.core_h2 [--streams 1 10 100] [--rounds 7] [--batches 300]
                                                   [--compare twins|connection|outbound]

How this works: a listener with `mtls = "off"` answering a fixed 200 "ok" (as bench/scenarios/
h2_requests.py has it beside nginx), one `GatewayProtocol` per connection in this process over a
memory transport, and a real client: Python's ssl over memory BIOs with ALPN h2 and the h2
library's client connection, sending h2load's request fields. Each batch is `--streams` requests
in one TLS record; only the server's side is timed (`data_received`, perf_counter around it), per
request. For each batch size two connections are open at once, one made with each codec
(`gateway.http2.set_native`: a session takes the codec and the request builder chosen when it
is made; every other hot path native), and their rounds alternate; the figure
is the median of the per-round ratios and of each side's per-request time.

`--compare connection` sets both on the native twins but gives one of them h2's connection with
the native HPACK codec swapped in (as the gateway had it before the connection had a twin): what
the native connection saves by itself.

`--compare outbound` instead sets both connections on h2's connection with the native codec and
turns h2's outbound normalisation and validation back on for one of them: what the gateway saves
by sending fields already made as h2 would make them (tests/unit/test_http2_outbound.py holds the
bytes equal).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from gateway.testing import MemoryTLSClient, MemoryTransport, client_context, fixed_response, listener, toml

from ..harness import certs

FIELDS = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/"),
          (b"user-agent", b"h2load nghttp2/1.52.0"), (b"accept", b"*/*")]


def _config(pki: certs.BenchPKI) -> str:
    return toml({
        "gateway": {"workers": 1, "access_log": "off", "connection_log": "off", "log_level": "warning"},
        "listener": [listener("bench", 1, pki.server_certs["ecdsa"], pki.server_keys["ecdsa"], mtls="off",
                              max_requests_per_connection=0, h2_max_concurrent_streams=1000,
                              rules=[fixed_response(content_type="text/plain")])],
    })


class Client:
    """One HTTP/2 connection to a shell of its own, made while `codec` was chosen."""

    def __init__(self, runtime, root: Path, h2_with_native_codec: bool = False) -> None:
        import h2.config
        import h2.connection

        from gateway.proxy import new_protocol
        ctx = client_context(root)
        ctx.set_alpn_protocols(["h2"])
        self.pair = MemoryTLSClient(ctx)
        self.proto = new_protocol(lambda: runtime, "bench")
        self.proto.connection_made(MemoryTransport(self.pair.incoming.write))
        self.pair.handshake(self.proto.data_received)
        if self.pair.outgoing.pending:
            self.proto.data_received(self.pair.outgoing.read())
        assert self.pair.tls.selected_alpn_protocol() == "h2"
        if h2_with_native_codec:
            # h2's connection, its HPACK codec the native one; its SETTINGS are the ones sent
            from gateway import http2
            session = self.proto.core.h2
            spec = session.rt.spec
            session.conn = http2.h2_connection(spec.h2_max_concurrent_streams, spec.h2_header_table_size,
                                               spec.max_header_bytes)
            session.conn.encoder = http2.NATIVE.Encoder()
            session.conn.decoder = http2.NATIVE.Decoder()
            session.conn.decoder.max_header_list_size = spec.max_header_bytes
            session.conn.decoder.max_allowed_table_size = spec.h2_header_table_size
            session.conn.data_to_send()
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.local_settings.max_concurrent_streams = 1000
        self.h2.initiate_connection()
        self.exchange(self.h2.data_to_send())

    def exchange(self, data: bytes) -> float:
        """`data` to the server in one record; what came back read; the server's seconds."""
        self.pair.tls.write(data)
        record = self.pair.outgoing.read()
        started = time.perf_counter()
        self.proto.data_received(record)
        spent = time.perf_counter() - started
        back = self.pair.read_available()
        if back:
            self.h2.receive_data(back)
            more = self.h2.data_to_send()
            if more:
                self.exchange(more)
        return spent

    def batch(self, streams: int) -> float:
        for _ in range(streams):
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, FIELDS, end_stream=True)
        return self.exchange(self.h2.data_to_send()) / streams


def run(streams: int, rounds: int, batches: int, workdir: Path, compare: str = "twins") -> dict[str, list[float]]:
    import uvloop

    from gateway import config, http2
    from gateway.server import build_runtime

    pki = certs.make(workdir / "pki")
    runtime = build_runtime(config.loads(_config(pki)))

    async def main() -> dict[str, list[float]]:
        clients = {}
        for codec in ("native", "python"):
            http2.set_native("on" if codec == "native" or compare != "twins" else "off")
            # "python" is h2's connection with the native codec in --compare connection; both are
            # in --compare outbound
            clients[codec] = Client(runtime, pki.root, h2_with_native_codec=compare == "outbound"
                                    or (compare == "connection" and codec == "python"))
        http2.set_native("auto")
        if compare == "outbound":       # "python" is then the one with h2's outbound checks on
            checked = clients["python"].proto.core.h2.conn.config
            checked.validate_outbound_headers = checked.normalize_outbound_headers = True
        out: dict[str, list[float]] = {"native": [], "python": []}
        for c in clients.values():
            for _ in range(max(10, batches // 10)):
                c.batch(streams)
        for _ in range(rounds):
            for codec, c in clients.items():
                out[codec].append(sum(c.batch(streams) for _ in range(batches)) / batches * 1e6)
        return out

    return uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.core_h2", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--compare", choices=("twins", "connection", "outbound"), default="twins")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mtls-gateway-core-h2-"))
    try:
        a, b = {"twins": ("native", "pure"), "connection": ("native connection", "h2's, native codec"),
                "outbound": ("as sent", "h2's outbound checks on")}[args.compare]
        print(f"| streams per arrival | {a} µs/request | {b} µs/request | ratio |")
        print("|---:|---:|---:|---:|")
        for streams in args.streams:
            r = run(streams, args.rounds, max(3, args.batches * 10 // streams), workdir, args.compare)
            ratio = statistics.median(n / p for n, p in zip(r["native"], r["python"]))
            print(f"| {streams} | {statistics.median(r['native']):.1f} | {statistics.median(r['python']):.1f} "
                  f"| {ratio:.3f} |", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
