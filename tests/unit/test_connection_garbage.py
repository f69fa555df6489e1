"""A closed connection leaves no cycle behind: everything it made (the shell, its core, the TLS
state and its SSL, the reader, the requests) is freed by reference counting when the transport
goes, not later by the cycle collector, which would run SSL_free and the rest on cold memory, in
bursts, and keep every closed connection's memory until then.

Real TLS (Python's ssl over memory BIOs as the client), the worker's own shell and core over a
memory transport, each twin; gc.DEBUG_SAVEALL keeps whatever the collector would have freed."""
from __future__ import annotations

import asyncio
import gc

import pytest

from gateway import config, conn, testing, tls
from gateway.proxy import new_protocol
from gateway.server import build_runtime


def _runtime(test_pki, mode: str):
    d = test_pki.dir
    return build_runtime(config.loads(testing.toml({
        "gateway": {"workers": 1, "access_log": "off", "connection_log": "off", "log_level": "warning"},
        "listener": [testing.listener("l", 1, d / "server.pem", d / "server.key", mtls=mode)],
        "trust_store": {"main": {"ca_bundle": d / "ca-bundle.pem"}},
    })))


@pytest.fixture(params=["native", "pure"])
def twin(request):
    """The core and the TLS pump, both native or both pure."""
    if request.param == "native" and (conn.NATIVE is None or tls.NATIVE_PUMP is None):
        pytest.skip("the native core or pump is not built")
    mode = "on" if request.param == "native" else "off"
    conn.set_native(mode)
    tls.set_native(mode)
    yield request.param
    conn.set_native("auto")
    tls.set_native("auto")


@pytest.mark.parametrize("mode", ["off", "passthrough", "verify"])
@pytest.mark.parametrize("resumed", [False, True], ids=["full", "resumed"])
def test_a_closed_connection_leaves_no_cycle(test_pki, twin, mode, resumed):
    runtime = _runtime(test_pki, mode)
    good = test_pki.clients["good"]
    ctx = testing.client_context(test_pki.dir / "root-ca.pem", *((good.cert, good.key) if mode != "off" else ()))
    session = None

    def one(keep_alive_requests: int) -> None:
        nonlocal session
        pair = testing.MemoryTLSClient(ctx, session=session if resumed else None)
        client = pair.tls
        transport = testing.MemoryTransport(pair.incoming.write)
        proto = new_protocol(lambda: runtime, "l")
        proto.connection_made(transport)
        pair.handshake(proto.data_received)
        answers = b""
        for i in range(keep_alive_requests):
            last = i == keep_alive_requests - 1
            client.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                         + (b"Connection: close\r\n" if last else b"") + b"\r\n")
            proto.data_received(pair.outgoing.read())
            answers += pair.read_available()
        assert answers.count(b"HTTP/1.1 200") == keep_alive_requests
        assert transport.closing
        if session is None:
            session = client.session
        proto.connection_lost(None)

    async def main() -> list:
        one(1)      # first-use allocations, and the session the resumed ones take up
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for n in (1, 3, 1, 2):
                one(n)
            gc.collect()
            return [type(o).__name__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    garbage = asyncio.run(main())
    assert garbage == []
