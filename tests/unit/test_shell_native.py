"""The shell's native twin (gateway._conn_c.Shell: __init__, connection_made, data_received,
_more and connection_lost in C) does what gateway.proxy.GatewayProtocol does, step for step: the
same writes, the same runtime bookkeeping (open connections, the protocols set, the wheel), the same
observer calls in the same order, the same records, the owner link broken and the accept slot given
back exactly once. And what the handshake's end now builds in C (the HandshakeDone event, the
ALPN read off the SSL) equals what the pure twin builds.

Real TLS (Python's ssl over memory BIOs as the client) against a real listener runtime over a
memory transport, each twin of the shell with its own core and pump."""
from __future__ import annotations

import asyncio
import dataclasses
import ssl

import pytest

from gateway import config, conn, proxy, testing, tls
from gateway.server import build_runtime


class Recorder:
    """An observer that writes down what it is told (latencies left out: they differ)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def connection_opened(self, listener):
        self.calls.append(("opened", listener))

    def connection_closed(self, listener):
        self.calls.append(("closed", listener))

    def handshake(self, listener, mode, result, status, resumed, latency_s):
        assert latency_s >= 0
        self.calls.append(("handshake", listener, mode, result, status, resumed))

    def request(self, listener, status, duration_s):
        self.calls.append(("request", listener, status))

    def __getattr__(self, name):     # everything else an observer may be told: written down too
        if name == "attach_counts":  # (but not counting in the native core's arrays: per call)
            raise AttributeError(name)
        return lambda *args, **kw: self.calls.append((name,) + args)


class Slot:
    def __init__(self) -> None:
        self.released = 0

    def __call__(self) -> None:
        self.released += 1


def _runtime(test_pki, tmp_path):
    d = test_pki.dir
    tmp_path.mkdir(parents=True, exist_ok=True)
    runtime = build_runtime(config.loads(testing.toml({
        "gateway": {"workers": 1, "access_log": tmp_path / "access.log",
                    "connection_log": tmp_path / "connections.log", "log_level": "warning"},
        "listener": [testing.listener(mode, i + 1, d / "server.pem", d / "server.key", mtls=mode,
                                      alpn=["h2", "http/1.1"])
                     for i, mode in enumerate(("off", "passthrough", "verify"))],
        "trust_store": {"main": {"ca_bundle": d / "ca-bundle.pem"}},
    })))
    for rt in runtime.listeners.values():
        rt.observer = Recorder()
    return runtime


def _close_logs(runtime) -> None:
    """The runtime's log files, closed (the suite checks that no descriptor is left open)."""
    for rt in runtime.listeners.values():
        rt.access_log.close()
        rt.connection_log.close()


def _twin(name: str) -> None:
    if name == "native" and (proxy.NativeGatewayProtocol is None or tls.NATIVE_PUMP is None):
        pytest.skip("the native shell, core or pump is not built")
    mode = "on" if name == "native" else "off"
    conn.set_native(mode)
    tls.set_native(mode)


@pytest.fixture
def restore():
    yield
    conn.set_native("auto")
    tls.set_native("auto")


def _run(test_pki, tmp_path, twin: str, mode: str, *, resumed: bool, requests: int,
         client_leaves: bool, alpn: list[str] | None = None) -> dict:
    """Connections through the `twin` shell (a second one resuming the first's session when
    `resumed`); what the last one did, as plain data."""
    runtime = _runtime(test_pki, tmp_path / twin / mode)
    _twin(twin)     # after the build, which applies the configuration's own choice
    rt = runtime.listeners[mode]
    good = test_pki.clients["good"]
    ctx = testing.client_context(test_pki.dir / "root-ca.pem",
                                 *((good.cert, good.key) if mode != "off" else ()))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    seen: dict = {}

    def one(session) -> ssl.SSLSession:
        pair = testing.MemoryTLSClient(ctx, session=session)
        transport = testing.MemoryTransport(pair.incoming.write)
        proto = proxy.new_protocol(lambda: runtime, mode)
        assert type(proto) is (proxy.NativeGatewayProtocol if twin == "native"
                               else proxy.GatewayProtocol)
        slot = Slot()
        proto.slot_release = slot
        proto.connection_made(transport)
        assert rt.open_connections == 1 and proto in rt.protocols
        assert proto.core.owner is proto and proto.transport is transport
        assert proto.wheel is rt.wheel and proto.loop is asyncio.get_running_loop()
        pair.handshake(proto.data_received)
        if not requests and pair.outgoing.pending:
            proto.data_received(pair.outgoing.read())   # the client's Finished, on its own
        answers = b""
        for i in range(requests):
            last = i == requests - 1 and not client_leaves
            pair.tls.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                           + (b"Connection: close\r\n" if last else b"") + b"\r\n")
            proto.data_received(pair.outgoing.read())
            answers += pair.read_available()
        core = proto.core
        event = core.done_event
        seen["event"] = (type(event), dataclasses.astuple(event))
        seen["done"] = event
        seen["resumed"] = pair.tls.session_reused
        seen["alpn"] = core.tls._pump.selected_alpn()
        seen["before_lost"] = (core.state, transport.closing, proto.timer is not None)
        proto.connection_lost(None)
        seen["after"] = (rt.open_connections, proto in rt.protocols, core.owner,
                         slot.released, proto.slot_release, proto.timer)
        seen["answers"] = answers.count(b"HTTP/1.1 200")
        return pair.tls.session

    async def main() -> None:
        session = one(None)
        if resumed:
            one(session)

    try:
        asyncio.run(main())
    finally:
        _close_logs(runtime)
    seen["observer"] = rt.observer.calls
    seen["wheel_empty"] = rt.wheel is None or not any(rt.wheel._slots.values())
    return seen


@pytest.mark.parametrize("mode", ["off", "passthrough", "verify"])
@pytest.mark.parametrize("resumed", [False, True], ids=["full", "resumed"])
@pytest.mark.parametrize("client_leaves", [False, True], ids=["server-closes", "client-leaves"])
def test_the_native_shell_does_what_the_pure_one_does(test_pki, tmp_path, restore, mode, resumed,
                                                        client_leaves):
    runs = {twin: _run(test_pki, tmp_path, twin, mode, resumed=resumed, requests=2,
                       client_leaves=client_leaves) for twin in ("pure", "native")}
    pure, native = runs["pure"], runs["native"]
    assert pure["answers"] == native["answers"] == 2
    # the events themselves: the same fields, field by field ("event"), identities being objects
    pure.pop("done"), native.pop("done")
    assert native == pure
    # every connection counted in and out, the owner link broken, the slot given back once
    assert native["resumed"] is resumed
    assert native["after"] == (0, False, None, 1, None, None)
    assert native["wheel_empty"]
    calls = native["observer"]
    assert calls[0] == ("opened", mode) and calls[-1] == ("closed", mode)
    handshakes = [c for c in calls if c[0] == "handshake"]
    assert [c[3] for c in handshakes] == ["accepted"] * (2 if resumed else 1)
    assert handshakes[-1][5] is resumed
    assert (handshakes[-1][4] is None) == (mode == "off")


@pytest.mark.parametrize("offered, chosen", [(None, None), (["http/1.1"], b"http/1.1"),
                                             (["h2", "http/1.1"], b"h2"), (["h2"], b"h2")])
def test_the_alpn_read_in_c_is_the_pure_one(test_pki, tmp_path, restore, offered, chosen):
    """Pump.selected_alpn, both twins: what ALPN chose (the listener prefers h2), or None."""
    for twin in ("pure", "native"):
        seen = _run(test_pki, tmp_path, twin, "off", resumed=False, requests=0 if chosen == b"h2" else 1,
                    client_leaves=True, alpn=offered)
        assert seen["alpn"] == chosen, twin


def test_a_subclass_of_the_native_shell_gets_the_pure_methods(test_pki, tmp_path, restore):
    """The C methods write the slots by their offsets only on exactly NativeGatewayProtocol; a
    subclass (as a test or a tool may make) is served by GatewayProtocol's own methods."""
    runtime = _runtime(test_pki, tmp_path)
    _twin("native")
    rt = runtime.listeners["off"]

    class Sub(proxy.NativeGatewayProtocol):  # type: ignore[misc,valid-type]
        __slots__ = ("extra",)

    async def main() -> None:
        ctx = testing.client_context(test_pki.dir / "root-ca.pem")
        pair = testing.MemoryTLSClient(ctx)
        transport = testing.MemoryTransport(pair.incoming.write)
        proto = Sub(lambda: runtime, "off")
        proto.connection_made(transport)
        assert rt.open_connections == 1 and proto.core.owner is proto
        pair.handshake(proto.data_received)
        assert pair.tls.version() in ("TLSv1.3", "TLSv1.2")
        proto.connection_lost(None)
        assert rt.open_connections == 0 and proto.core.owner is None

    try:
        asyncio.run(main())
    finally:
        _close_logs(runtime)


def test_the_handshake_event_built_in_c_is_the_constructors(test_pki, tmp_path, restore):
    """HandshakeDone, made field by field in C, is the very class, equal to (and hashing like)
    the one its constructor makes from the same fields."""
    seen = _run(test_pki, tmp_path, "native", "verify", resumed=False, requests=1, client_leaves=False)
    kind, fields = seen["event"]
    assert kind is tls.HandshakeDone
    built = seen["done"]
    again = tls.HandshakeDone(*(getattr(built, f.name) for f in dataclasses.fields(built)))
    assert built == again and dataclasses.astuple(again) == fields
    assert built.identity is not None and built.protocol == "TLSv1.3" and built.cipher
