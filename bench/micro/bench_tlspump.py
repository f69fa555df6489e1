"""The TLS byte pump: native (native/tlspump.pyx) vs its pure twin vs pyOpenSSL's own methods.

    python -m pytest --pyargs mtls_gateway_bench.micro.bench_tlspump --benchmark-enable -q

How this works: a server TLSConnection and a Python `ssl` client talk over memory BIOs in this
process, and only the server's calls are timed. `MethodPump` is the pump as it was before the
native one: pyOpenSSL's `bio_write` / `do_handshake` / `recv` / `send` / `bio_read`, an exception
for every want-read and a fresh buffer per call. The same interface, so any of the three can drive
a TLSConnection (`tls._make_pump`); scenarios/handshake.py uses it for the end-to-end figures.

- `keepalive`: one request record in, one response out (`receive` + `send`), on an established
  TLS 1.3 connection: the per-request cost of the pump.
- `first_flight`: the server's first handshake step (ClientHello in; ServerHello to Finished out,
  with the ECDSA signature and the key exchange): the pump's share of a full handshake's biggest step.
"""
from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import pytest
from OpenSSL import SSL

from gateway import pki, tls
from gateway.testing import MemoryTLSClient, client_context

_CHUNK = 262144


class MethodPump:
    """The pump through pyOpenSSL's Connection methods (the gateway's before the native pump)."""

    __slots__ = ("_conn", "error")

    def __init__(self, conn: SSL.Connection) -> None:
        self._conn = conn
        self.error = None

    def _drain(self) -> bytes:
        out = b""
        while True:
            try:
                data = self._conn.bio_read(_CHUNK)
            except SSL.WantReadError:
                return out
            out += data
            if len(data) < _CHUNK:
                return out

    def handshake(self, data: bytes):
        if data:
            self._conn.bio_write(data)
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return tls.WANT, self._drain()
        except SSL.Error as exc:
            self.error = exc
            return tls.FAILED, self._drain()
        return tls.DONE, self._drain()

    def read(self, data: bytes):
        conn = self._conn
        if data:
            conn.bio_write(data)
        plain, code = b"", tls.WANT
        try:
            while True:
                plain += conn.recv(65536)
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            code = tls.CLOSED
        except SSL.Error as exc:
            self.error, code = exc, tls.FAILED
        return code, plain, self._drain()

    def write(self, data: bytes):
        try:
            self._conn.sendall(data) if len(data) > 16384 else self._conn.send(data)
        except SSL.Error as exc:
            self.error = exc
            return tls.FAILED, b""
        return tls.WANT, self._drain()

    def renew(self) -> bool:
        return False        # this path never replaced its BIOs

    def shutdown(self) -> bytes:
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass
        return self._drain()


PUMPS = ("native", "python", "methods")


def use(pump: str) -> None:
    """Make `pump` the one new TLSConnections get."""
    if pump == "methods":
        tls.set_native("off")
        tls._make_pump = MethodPump
    else:
        tls.set_native("on" if pump == "native" else "off")


@pytest.fixture(scope="module")
def files():
    d = Path(tempfile.mkdtemp(prefix="bench-pump-"))
    root = pki.make_root("Bench Root")
    pki.make_server(root, ["localhost"]).write(d / "server.pem", d / "server.key")
    (d / "root.pem").write_bytes(root.cert_pem)
    return d


def _pair(files):
    listener = tls.ListenerTLS(name="b", certificates=[(files / "server.pem", files / "server.key",
                                                         ("localhost",))])
    return listener, MemoryTLSClient(client_context(files / "root.pem"))


def _established(files):
    listener, pair = _pair(files)
    server = listener.connection()

    def deliver(data: bytes) -> None:
        reply, _, _ = server.receive(data)
        pair.incoming.write(reply)
    pair.handshake(deliver, flights=10)
    deliver(pair.outgoing.read())               # the TLS 1.3 tickets
    return server, pair.tls, pair.incoming, pair.outgoing


REQUEST = b"GET /api/items?id=42 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"


@pytest.mark.parametrize("pump", PUMPS)
def test_keepalive(benchmark, files, pump):
    use(pump)
    server, client, inc, out = _established(files)
    records = []
    for _ in range(3000):
        client.write(REQUEST)
        records.append(out.read())
    it = iter(records)

    def setup():
        return (next(it),), {}

    def step(record):
        _, plain, _ = server.receive(record)
        server.send(RESPONSE)
        return plain

    benchmark.pedantic(step, setup=setup, rounds=2500, iterations=1, warmup_rounds=100)
    tls.set_native("auto")


@pytest.mark.parametrize("pump", PUMPS)
def test_first_flight(benchmark, files, pump):
    use(pump)

    def setup():
        listener, pair = _pair(files)
        try:
            pair.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return (listener.connection(), pair.outgoing.read()), {}

    def step(server, hello):
        reply, _, _ = server.receive(hello)
        assert reply
    benchmark.pedantic(step, setup=setup, rounds=300, iterations=1, warmup_rounds=10)
    tls.set_native("auto")
