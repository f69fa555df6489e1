"""GatewayProtocol: the asyncio shell around one client connection's core (gateway.conn).

How this works: the protocol holds references only: the transport, the listener's runtime (taken
once in `connection_made`, so a reload never changes a live connection), the sans-IO
`Connection` core and its one deadline, armed on the listener runtime's wheel (gateway.wheel:
one loop timer for all of its connections). Every asyncio callback becomes one call into the core
with the monotonic time, and the core's `Actions` are carried out in order: the TLS bytes written
(one write), the log records handed to their sinks, upstream connections opened (a task per
connect, reporting back to the core), reading paused or resumed, the transport closed or reset,
and the one deadline moved when the core asks (`rearm`: its earliest deadline is earlier than the
one armed; a later one is handled when the wheel wakes the connection: the core then asks for
the time it has). Upstream connections (gateway.upstream) report to this protocol as their owner; it passes
their events on.

Re-entry: a write may call back into the protocol (`pause_writing` from inside
`transport.write`, an upstream's `pause_writing` from inside the core's write to it). The shell
therefore takes each list out of the Actions before acting on it, so a nested call's actions are
carried out at once and none twice.
"""
from __future__ import annotations

import asyncio
import time

from . import conn as _conn
from . import headers as hdrs
from .conn import ABORT, CLOSE, ConnState
from .errors import UpstreamError
from .wheel import Wheel

__all__ = ["GatewayProtocol", "ConnState"]

_CLOSED = ConnState.CLOSED
_monotonic = time.monotonic


class GatewayProtocol(asyncio.Protocol):
    """Serves one client connection of one listener."""

    # Slots, not a __dict__: an idle connection is mostly this object, its core, its TLS state and
    # its transport (bench/scenarios/flood.py measures what it costs).
    __slots__ = ("_runtime_ref", "_listener_name", "slot_release", "loop", "rt", "transport",
                 "core", "timer", "wheel")

    def __init__(self, runtime_ref, listener_name: str) -> None:
        self._runtime_ref = runtime_ref
        self._listener_name = listener_name
        # set by the acceptor that admitted the connection (gateway.accept): called once at the end
        self.slot_release = None

    # -- the transport's callbacks -------------------------------------------------------------------
    # a stream server's transport is a Transport (typeshed's BaseProtocol names the base class)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.loop = loop = asyncio.get_running_loop()
        runtime = self._runtime_ref()
        self.rt = rt = runtime.listeners[self._listener_name]
        wheel = rt.wheel
        if wheel is None or wheel.loop is not loop:
            wheel = rt.wheel = Wheel(loop)
        self.wheel = wheel
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        # the twin chosen when this connection came (gateway.native): a reload never changes it
        self.core = core = _conn.core_class(rt, str(peer[0]), int(peer[1]), _monotonic())
        core.owner = self
        self.timer = None
        rt.open_connections += 1
        rt.protocols.add(self)
        rt.observer.connection_opened(rt.spec.name)
        self._apply(core.acts)

    def data_received(self, data: bytes) -> None:
        acts = self.core.receive(data, _monotonic())
        out = acts.out      # _apply, inlined: once per arrival
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.transport.write(data)
        if acts.more:
            self._more(acts)

    def eof_received(self) -> bool | None:
        core = self.core
        keep = core.eof(_monotonic())
        self._apply(core.acts)
        return True if keep else None

    def pause_writing(self) -> None:
        self._apply(self.core.pause_writing(_monotonic()))

    def resume_writing(self) -> None:
        self._apply(self.core.resume_writing(_monotonic()))

    def connection_lost(self, exc: Exception | None) -> None:
        core = self.core
        if core.state is _CLOSED:
            self._cancel_timer()
            core.owner = None
            return
        rt = self.rt
        rt.open_connections -= 1
        rt.protocols.discard(self)
        rt.observer.connection_closed(rt.spec.name)
        self._cancel_timer()
        acts = core.lost(_monotonic())
        # nothing can be written or closed any more; the records still go out
        acts.out.clear()
        acts.connects = None
        acts.reading = None
        acts.close = 0
        acts.rearm = 0.0
        acts.more = False
        self._logs(acts)
        # the core's way back to this shell (for upstream connections, none of which can attach
        # now) is the one cycle of a connection: broken here, the connection's objects (its SSL
        # included) are freed now by reference counting, while they are still in the cache, not
        # later by the cycle collector
        core.owner = None
        release = self.slot_release
        if release is not None:
            self.slot_release = None
            release()

    def drain(self) -> None:
        """Shutdown (gateway.server): finish the exchange in flight, then close."""
        self._apply(self.core.drain(_monotonic()))

    def status_settled(self, pending: object = None) -> None:
        """The OCSP answer the handshake waited for is in (a gateway.ocsp.Pending's waiter)."""
        if self.core.state is not _CLOSED and self.core.owner is self:
            self._apply(self.core.status_settled(_monotonic()))

    def revoked(self, detail: str) -> None:
        """The client's certificate was revoked (gateway.revocations): close now."""
        self._apply(self.core.revoke(detail, _monotonic()))

    # -- what upstream connections report (their owner is this protocol) ---------------------------
    def upstream_event(self, conn, events) -> None:
        acts = self.core.upstream_event(conn, events, _monotonic())
        out = acts.out      # _apply, inlined: once per read of the target
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.transport.write(data)
        if acts.more:
            self._more(acts)

    def upstream_pause_writing(self) -> None:
        self._apply(self.core.upstream_pause_writing(_monotonic()))

    def upstream_resume_writing(self) -> None:
        self._apply(self.core.upstream_resume_writing(_monotonic()))

    async def _connect(self, ex, group, target) -> None:
        try:
            conn = await group.connect(target)
        except UpstreamError as exc:
            self._apply(self.core.upstream_connect_failed(ex, group, target, exc, _monotonic()))
            return
        self._apply(self.core.upstream_connected(ex, conn, _monotonic()))

    # -- carrying out the core's actions -----------------------------------------------------------
    def _apply(self, acts) -> None:
        out = acts.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.transport.write(data)
        if acts.more:
            self._more(acts)

    def _more(self, acts) -> None:
        """The rarer actions."""
        acts.more = False
        if acts.logs is not None:
            self._logs(acts)
        connects = acts.connects
        if connects is not None:
            acts.connects = None
            loop = self.loop
            for ex, group, target in connects:
                loop.create_task(self._connect(ex, group, target))
        close = acts.close
        if close:
            acts.close = 0
            acts.reading = None
            self._cancel_timer()
            acts.rearm = 0.0
            if close == CLOSE:
                self.transport.close()
            elif close == ABORT:
                self.transport.abort()
            return
        reading = acts.reading
        if reading is not None:
            acts.reading = None
            if reading:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()
        rearm = acts.rearm
        if rearm:
            acts.rearm = 0.0
            self.wheel.arm(self, rearm)     # instead of what was armed before (gateway.wheel)

    def _logs(self, acts) -> None:
        logs = acts.logs
        if logs is None:
            return
        acts.logs = None
        rt = self.rt
        for entry in logs:
            kind = entry[0]
            if kind == "access":
                record = entry[1]
                if rt.identity_fields or rt.log_fields is not None:
                    record = _chosen(record, rt, self.core.done_event)
                rt.access_log.write(record)
            elif kind == "connection":
                rt.connection_log.write(entry[1])
            else:
                rt.errors.log(entry[1], entry[2], entry[3], **entry[4])

    def _on_timer(self) -> None:
        """The wheel's wake-up (it has set `timer` to None): the core checks what is due."""
        self._apply(self.core.timeout(_monotonic()))

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.wheel.disarm(self)     # the wheel lets go of this connection


def _chosen(record: dict, rt, event) -> dict:
    """An access record with the listener's identity_fields added and only its log_fields kept."""
    identity = getattr(event, "identity", None)
    fields = rt.log_fields
    names = rt.identity_fields + tuple(f for f in (fields or ()) if f in hdrs.FIELD_HEADERS
                                       and f not in rt.identity_fields)
    if names:
        values = hdrs.identity_field_values(identity) if identity is not None else {}
        for name in names:
            record[name] = values.get(name)
    if fields is not None:
        record = {name: record[name] for name in fields if name in record}
    return record


# --- the shell's native twin --------------------------------------------------------------------------
# gateway._conn_c.Shell is data_received, connection_made and connection_lost in C (the clock read,
# the slots written by their offsets, the native core's arrival called without a Python frame); it
# is mixed in before GatewayProtocol, whose other methods it keeps. The same switch as the core's
# picks it (gateway.conn.set_native), per connection, when it is accepted.

def _native_protocol():
    try:
        from ._conn_c import Shell
    except ImportError:
        return None
    if _conn.NATIVE is None:
        return None

    class NativeGatewayProtocol(Shell, GatewayProtocol):
        """GatewayProtocol with its data_received, connection_made and connection_lost in C
        (gateway._conn_c.Shell)."""

        __slots__ = ()

    try:
        from ._conn_c import bind_shell
        bind_shell(protocol=GatewayProtocol, native_protocol=NativeGatewayProtocol,
                   get_running_loop_=asyncio.get_running_loop, wheel=Wheel, conn=_conn,
                   general_lost=_conn.ConnectionCore.lost, close=CLOSE, abort=ABORT)
    except (ImportError, AttributeError):
        return None     # a stale build: the pure shell serves
    return NativeGatewayProtocol


NativeGatewayProtocol = _native_protocol()


def new_protocol(runtime_ref, listener_name: str) -> GatewayProtocol:
    """The shell for a connection just accepted: the native twin when the native core is chosen."""
    if NativeGatewayProtocol is not None and _conn.native_mode == "native":
        return NativeGatewayProtocol(runtime_ref, listener_name)
    return GatewayProtocol(runtime_ref, listener_name)
