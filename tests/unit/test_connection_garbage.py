"""A closed connection leaves no cycle behind: everything it made (the shell, its core, the TLS
state and its SSL, the reader, the requests) is freed by reference counting when the transport
goes, not later by the cycle collector, which would run SSL_free and the rest on cold memory, in
bursts, and keep every closed connection's memory until then.

Real TLS (Python's ssl over memory BIOs as the client), the worker's own shell and core over a
memory transport, each twin; gc.DEBUG_SAVEALL keeps whatever the collector would have freed."""
from __future__ import annotations

import asyncio
import gc
import ssl

import pytest

from gateway import config, conn, tls
from gateway.proxy import new_protocol
from gateway.server import build_runtime
from gateway.testing import MemoryTransport


def _runtime(test_pki, mode: str):
    d = test_pki.dir
    store = '\ntrust_store = "main"' if mode in ("verify", "optional") else ""
    return build_runtime(config.loads(f"""
[gateway]
workers = 1
access_log = "off"
connection_log = "off"
log_level = "warning"

[[listener]]
name = "l"
bind = "127.0.0.1:1"
certificates = [{{cert = "{d / 'server.pem'}", key = "{d / 'server.key'}"}}]
mtls = "{mode}"{store}

[[listener.rule]]
action = "fixed-response"
fixed_response = {{status = 200, body = "ok"}}

[trust_store.main]
ca_bundle = "{d / 'ca-bundle.pem'}"
"""))


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
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(test_pki.dir / "root-ca.pem")
    if mode != "off":
        good = test_pki.clients["good"]
        ctx.load_cert_chain(good.cert, good.key)
    session = None

    def one(keep_alive_requests: int) -> None:
        nonlocal session
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost",
                              session=session if resumed else None)
        transport = MemoryTransport(incoming.write)
        proto = new_protocol(lambda: runtime, "l")
        proto.connection_made(transport)
        while True:
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                proto.data_received(outgoing.read())
        answers = b""
        for i in range(keep_alive_requests):
            last = i == keep_alive_requests - 1
            client.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                         + (b"Connection: close\r\n" if last else b"") + b"\r\n")
            proto.data_received(outgoing.read())
            try:
                while chunk := client.read(65536):
                    answers += chunk
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
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
