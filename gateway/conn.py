"""Connection: the per-connection core, sans-IO (TLS -> HTTP -> rule -> action).

How this works: a `Connection` takes what happens to one client connection as calls with the
current monotonic time (`receive(data, now)`, `timeout(now)`, `eof(now)`, `pause_writing(now)`,
`resume_writing(now)`, `drain(now)`, `lost(now)`, and what an upstream connection reports:
`upstream_event(conn, events, now)`, `upstream_connected(ex, conn, now)`,
`upstream_connect_failed(ex, group, target, exc, now)`, `upstream_pause_writing(now)`,
`upstream_resume_writing(now)`) and answers each with its `Actions`: a few plain slots the shell
(gateway.proxy) carries out, in this order: `out` (TLS bytes for the client, in order), `logs`
(records for the access, connection and error logs), `connects` (upstream connections to open:
(exchange, group, target); the shell reports back), `reading` (pause or resume reading from the
client), `close` (CLOSE: FIN after the bytes, ABORT: reset) and `rearm` (move the shell's one timer to
this time, at which it calls `timeout`: set only when the earliest deadline, `deadline`, is
earlier than the time armed); `more` says whether any but `out` is set, so the common call (bytes
out, nothing else) costs the shell two tests. The same Actions object is reused for every call, so a
call allocates nothing of its own; the shell empties it as it applies it.

Inside, `receive` makes one call into the sans-IO `TLSConnection`, reacts to its events
(handshake done or refused, peer closed), and feeds the plaintext to the sans-IO `RequestReader`.
Requests are served one at a time, in order (pipelined requests wait their turn in the reader):
a request first passes screening (header names a backend would fold into ours, the path it acts
on, a Host the SNI-chosen certificate covers: 421), then the route table picks the action by host,
path, method and headers; a rule that asks for a client certificate is checked against the
connection's identity (403 otherwise; kept per rule for the connection); a fixed response is one
prebuilt write, a redirect one join; a forward picks a target (503 when none is available), takes a
pooled upstream connection or asks the shell for a new one, writes the request head built by the
`Exchange` (gateway.exchange) and streams the body; the response streams back as the upstream
connection's events arrive. Plaintext written during one call goes out as one TLS write at its end.
Back-pressure is passed through both ways, so memory stays bounded whatever the sizes.

Upstream connections are objects handed in by the shell (gateway.upstream.UpstreamConnection, or a
fake in tests); the core calls only their small surface: write, close, expect, pause_reading,
resume_reading, write_eof, and their group's pick/take_idle/done/release/connection_failed.

Deadlines are plain floats, one per kind (the connection's: handshake, header or client body, one
at a time; idle keep-alive; upstream read; tunnel idle), and `Actions.deadline` is the earliest.
Deadlines renewed by traffic are checked against a last-activity time when they come due, rather
than moved for every piece of data: the shell's one timer per connection is moved (`rearm`) only
when the earliest deadline is earlier than the time it is armed for; one that fires early finds
nothing due and is armed again for what is.

Memory: a worker may hold tens of thousands of idle connections, so the state is in slots, the
HTTP reader is made with the first plaintext (bench/scenarios/flood.py measures what an idle one costs),
and an Exchange exists only while a request is in flight.
"""
from __future__ import annotations

import enum
import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import headers as hdrs
from . import http1, paths
from .errors import HTTPProtocolError, NativeUnavailable, UpstreamError
from .exchange import (CONTINUE, UPGRADE_REFUSED, UPSTREAM_ERROR_BODIES, Exchange, UpstreamClosed,
                       UpstreamFailed)
from .http1 import Data, EndOfMessage, Request, Response
from .identity import serial_hex
from .logs import iso_now, validity
from .metrics import NULL_OBSERVER
from .routes import REDIRECT_NEEDS_HOST, Fixed, Forward, split_host, split_path
from . import tls as tls_mod
from .tls import HandshakeDone, HandshakeFailed, PeerClosed, StatusPending, TLSState
from .tls import _name_matches as name_matches

if TYPE_CHECKING:
    from .streams import H2Session
    from .headers import HeaderPolicy
    from .http1 import Event, HTTPLimits, RequestReader
    from .logs import LogSink
    from .metrics import Observer
    from .paths import PathPolicy
    from .routes import RedirectAction, RouteTable
    from .spec import ListenerSpec
    from .tls import TLSConnection
    from .upstream import Target, TargetGroup, UpstreamConnection

    LogEntry = tuple[str, dict[str, Any]] | tuple[str, str, str, str, dict[str, Any]]
    # what an upstream connection reports (gateway.upstream): the response's events (Response,
    # Data, EndOfMessage), the raw bytes after a switch, UpstreamClosed, UpstreamFailed. Any: the
    # handlers dispatch on `type(event)` kept in a local, which the checker does not follow.
    UpstreamEvent = Any

__all__ = ["Actions", "Connection", "ConnectionCore", "ConnState", "STATE", "set_native",
           "core_class", "CLOSE", "ABORT", "READ_HIGH_WATER_BYTES"]

# Pause reading from the client when this much parsed-but-unsent request data is queued
# (a pipelining client or a body arriving before the upstream connection is up).
READ_HIGH_WATER_BYTES = 262144

CLOSE = 1       # Actions.close: close after the bytes (FIN)
ABORT = 2       # Actions.close: reset now

# what the connection's own deadline is for (one at a time)
_HANDSHAKE = 1
_HEADER = 2
_CLIENT = 3


class ConnState(enum.Enum):
    HANDSHAKE = 1
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


_OPEN = ConnState.OPEN
_CLOSING = ConnState.CLOSING
_CLOSED = ConnState.CLOSED


class Actions:
    """What the shell does after a call, in slot order. Reused: the shell empties it."""

    __slots__ = ("out", "more", "logs", "connects", "reading", "close", "deadline", "rearm")

    def __init__(self) -> None:
        self.out: list[bytes] = []          # TLS bytes for the client
        self.more = False                   # any of the five below is set (one test for the shell)
        # ("access" | "connection", dict) | ("error", level, reason, message, fields)
        self.logs: list[LogEntry] | None = None
        # (exchange, group, target): open, then report back
        self.connects: list[tuple[Exchange, TargetGroup, Target]] | None = None
        self.reading: bool | None = None    # False: pause reading from the client, True: resume
        self.close = 0                      # CLOSE or ABORT
        self.deadline = 0.0                 # when to call timeout(); 0: none
        self.rearm = 0.0                    # move the shell's timer to this (earlier) time; 0: keep it


class _NoRequestYet:
    """The request reader of a connection that has sent no plaintext yet. The real one (an llhttp
    parser, its callbacks, two queues: about 2.7 KB) is made when the first bytes of a request
    arrive: a client that connects ahead of need, or an idle flood, costs none of it."""

    __slots__ = ()
    idle = True
    buffered_bytes = 0

    def next_event(self) -> Event | None:
        return None

    def feed_eof(self) -> None:
        return None

    def take_raw(self) -> bytes:
        return b""


_NO_READER = _NoRequestYet()


# The state of a connection, one name each; `Connection` keeps it in slots, the native twin
# (native/conn.pyx) in a C struct with the same names (tests/unit/test_conn.py holds them equal).
STATE = ("rt", "acts", "client_ip", "client_port", "client_ip_b", "tls", "state", "reader",
         "current", "held", "identity_lines", "done_event", "refusals", "requests",
         "read_paused", "write_paused", "header_deadline_armed", "conn_deadline",
         "conn_timer", "idle_deadline", "up_deadline", "tunnel_deadline", "connected_at",
         "rx_at", "tx_at", "close_reason", "batch", "draining", "peer_done", "owner",
         "armed", "h2")


class Listener(Protocol):
    """What a connection reads of its listener's runtime snapshot (gateway.server's
    ListenerRuntime, a layer above: named here by what is used)."""

    @property
    def spec(self) -> ListenerSpec: ...
    @property
    def port(self) -> int: ...
    @property
    def tls(self) -> _TLSFactory: ...
    @property
    def routes(self) -> RouteTable: ...
    @property
    def header_styles(self) -> tuple[str, ...]: ...
    @property
    def http_limits(self) -> HTTPLimits: ...
    @property
    def target_groups(self) -> dict[str, TargetGroup]: ...
    @property
    def access_log(self) -> LogSink: ...
    @property
    def connection_log(self) -> LogSink: ...
    @property
    def observer(self) -> Observer: ...
    @property
    def header_policy(self) -> HeaderPolicy: ...
    @property
    def path_policy(self) -> PathPolicy: ...
    @property
    def sni_host_strict(self) -> bool: ...
    @property
    def identity_fields(self) -> tuple[str, ...]: ...
    @property
    def signer(self) -> Any: ...


class _TLSFactory(Protocol):
    def connection(self) -> TLSConnection: ...
    @property
    def reports(self) -> bool: ...


class ConnectionCore:
    """Serves one client connection of one listener (`rt`: the listener's runtime snapshot).

    The behaviour, without a layout of its own: `Connection` adds the state as slots; the native
    twin's class puts the C-struct core of native/conn.pyx first, whose `receive` and `_done`
    serve the common arrival and defer to these methods for everything else."""

    # No slots of its own (the layout is the subclass's); a type checker, told `()`, would
    # refuse every state assignment below, so it is given the names and types instead.
    if not TYPE_CHECKING:
        __slots__ = ()
    rt: Listener
    acts: Actions
    client_ip: str
    client_port: int
    client_ip_b: bytes
    tls: TLSConnection
    state: ConnState
    reader: RequestReader | _NoRequestYet
    current: Exchange | None
    held: Event | None
    identity_lines: bytes
    done_event: HandshakeDone | HandshakeFailed | None
    refusals: dict[int, Fixed | None] | None
    requests: int
    read_paused: bool
    write_paused: bool
    header_deadline_armed: bool
    conn_deadline: float
    conn_timer: int
    idle_deadline: float
    up_deadline: float
    tunnel_deadline: float
    connected_at: float
    rx_at: float
    tx_at: float
    close_reason: str
    batch: list[bytes]
    draining: bool
    peer_done: bool
    owner: Any          # the shell (gateway.proxy's GatewayProtocol), a layer above
    armed: float
    h2: H2Session | None

    def __init__(self, rt: Listener, client_ip: str, client_port: int, now: float) -> None:
        self.rt = rt
        self.acts = Actions()
        self.client_ip = client_ip
        self.client_port = client_port
        self.client_ip_b = client_ip.encode()
        self.tls = rt.tls.connection()
        self.state = ConnState.HANDSHAKE
        self.reader = _NO_READER         # the real one comes with the first plaintext (_feed)
        self.current = None
        self.held = None                 # a pipelined request waiting for the current exchange
        self.identity_lines = b""
        self.done_event = None
        self.refusals = None                # rule index -> 403 or None, for this identity
        self.requests = 0
        self.read_paused = False
        self.write_paused = False
        self.header_deadline_armed = False
        self.conn_deadline = now + rt.spec.handshake_timeout_s
        self.conn_timer = _HANDSHAKE
        self.idle_deadline = 0.0         # when an idle connection closes; 0 while not idle
        self.up_deadline = 0.0           # when to look at the upstream being waited for
        self.tunnel_deadline = 0.0       # when to look at a tunnel's idle time
        self.connected_at = now
        self.rx_at = 0.0                 # last bytes from the client
        self.tx_at = 0.0                 # the client last took bytes (resumed writing)
        self.close_reason = ""
        self.batch = []                  # plaintext of this call, to go out as one TLS write
        self.draining = False
        self.peer_done = False       # the client sent close_notify: answer what is in flight, then close
        # what upstream connections report to (their `owner`): the shell, which calls in here
        self.owner = None
        # when the shell's timer fires (0: none armed): it is moved only for an earlier deadline,
        # so a deadline that moves later per request (idle, read) costs nothing until it fires
        self.armed = 0.0
        self.h2 = None                   # the HTTP/2 session, when ALPN chose h2 (gateway.streams)
        self._done()

    @property
    def client(self) -> str:
        return f"{self.client_ip}:{self.client_port}"

    # -- the end of every call -----------------------------------------------------------------------
    def _done(self) -> Actions:
        acts = self.acts
        batch = self.batch
        if batch:
            state = self.state
            if state is _CLOSING or state is _CLOSED:
                batch.clear()
            else:       # _flush, inlined: once per response
                data = batch[0] if len(batch) == 1 else b"".join(batch)
                batch.clear()
                out = self.tls.send(data)
                if out:
                    acts.out.append(out)
        # the earliest of the four (0: none), without building anything: this runs every call
        d = self.conn_deadline
        o = self.idle_deadline
        if o and (not d or o < d):
            d = o
        o = self.up_deadline
        if o and (not d or o < d):
            d = o
        o = self.tunnel_deadline
        if o and (not d or o < d):
            d = o
        acts.deadline = d
        if d and (d < self.armed or not self.armed):
            self.armed = acts.rearm = d
            acts.more = True
        return acts

    def _log(self, kind: str, record: dict[str, Any]) -> None:
        acts = self.acts
        acts.more = True
        if acts.logs is None:
            acts.logs = [(kind, record)]
        else:
            acts.logs.append((kind, record))

    def _error(self, level: str, reason: str, message: str, **fields: Any) -> None:
        entry: LogEntry = ("error", level, reason, message, fields)
        acts = self.acts
        acts.more = True
        if acts.logs is None:
            acts.logs = [entry]
        else:
            acts.logs.append(entry)

    def _reading(self, on: bool) -> None:
        self.acts.reading = on
        self.acts.more = True

    # -- connection ------------------------------------------------------------------------------
    def lost(self, now: float) -> Actions:
        """The transport is gone (connection_lost)."""
        if self.state is _CLOSED:
            return self.acts
        self.state = _CLOSED
        self._cancel_timers()
        if self.h2 is not None:
            self.h2.lost(now)
        ex = self.current
        if ex is not None:
            self.tunnel_deadline = 0.0
            if ex.upstream is not None:
                ex.upstream.close()     # the client is gone: do not leave the upstream streaming
                ex.upstream = None
            ex.done_with_target()
            if ex.status == 0:
                ex.status = 499
            self._access_log(ex, now, aborted=not ex.tunnel)
            self.current = None
        if self.done_event is None:
            # the handshake never finished: log the attempt as a connection record too
            self._connection_log(None, self.close_reason or "closed_before_handshake")
        return self._done()

    def drain(self, now: float) -> Actions:
        """Shutdown: finish the exchange in flight, then close; close an idle connection now."""
        self.draining = True
        if self.state is not _OPEN:
            return self._done()     # a handshake in progress completes; its first request is served, then close
        if self.h2 is not None:
            self.h2.drain(now)      # GOAWAY; open streams finish
            return self._done()
        if self.current is not None:
            self.current.keep_alive = False
        elif self.requests > 0 and self.reader.idle:
            # idle keep-alive: close_notify now (RFC 9112 9.6: the client retries on a new connection)
            self._close("shutdown")
        # a fresh connection that has not sent its request yet gets to send it (a race a client
        # cannot see coming); the header deadline still bounds how long it may take
        return self._done()

    def status_settled(self, now: float) -> Actions:
        """The OCSP answer a finished handshake waited for is in: reading resumes, and the TLS layer
        ends the handshake (accepted, or refused with the answer's status)."""
        if self.state is not ConnState.HANDSHAKE:
            return self._done()
        self._reading(True)
        return self.receive(b"", now)

    def revoke(self, detail: str, now: float) -> Actions:
        """The client's certificate was revoked while it is connected (gateway.revocations): one
        error line, then the connection ends at once, whatever is in flight."""
        if self.state is _CLOSING or self.state is _CLOSED:
            return self._done()
        identity = self.done_event.identity if self.done_event is not None else None
        self._error("warning", "client_revoked", "connection closed: client certificate revoked",
                    listener=self.rt.spec.name, client=self.client, detail=detail,
                    subject=identity.subject if identity is not None else None)
        if self.h2 is not None:
            self.h2.lost(now)
            self._abort("client_revoked")
        elif self.current is not None:
            self._drop_exchange(self.current, now, "client_revoked")
        else:
            self._close("client_revoked")
        return self._done()

    def _close(self, reason: str = "", *, notify: bool = True) -> None:
        """Close the client connection: close_notify when TLS is open, then FIN after the writes."""
        if self.state is _CLOSING or self.state is _CLOSED:
            return
        self.close_reason = self.close_reason or reason
        self._flush()
        if notify:
            out = self.tls.close()
            if out:
                self.acts.out.append(out)
        self.state = _CLOSING
        self._cancel_timers()
        self.acts.close = CLOSE
        self.acts.more = True

    def _abort(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        if self.state is not _CLOSING and self.state is not _CLOSED:
            self._flush()
        self.state = _CLOSING
        self._cancel_timers()
        self.acts.close = ABORT
        self.acts.more = True

    # -- deadlines ---------------------------------------------------------------------------------
    def _cancel_timers(self) -> None:
        self.conn_deadline = self.idle_deadline = self.up_deadline = self.tunnel_deadline = 0.0

    def _arm(self, deadline: float, kind: int) -> None:
        self.conn_deadline = deadline
        self.conn_timer = kind

    def timeout(self, now: float) -> Actions:
        """The shell's timer fired: act on every deadline that has come."""
        self.armed = 0.0
        d = self.conn_deadline
        if d and d <= now:
            self.conn_deadline = 0.0
            kind = self.conn_timer
            if kind == _HANDSHAKE:
                self._on_handshake_timeout()
            elif kind == _HEADER:
                self._on_header_timeout(now)
            else:
                self._on_client_timer(now)
        d = self.idle_deadline
        if d and d <= now and self.state is _OPEN:
            if self.h2 is not None:
                self.h2.idle_close()
            self._close("idle_timeout")
        d = self.up_deadline
        if d and d <= now:
            self.up_deadline = 0.0
            if self.h2 is not None:
                self.h2.timeout(now)
            else:
                self._on_upstream_timer(now)
        d = self.tunnel_deadline
        if d and d <= now:
            self.tunnel_deadline = 0.0
            self._on_tunnel_timer(now)
        return self._done()

    def _on_handshake_timeout(self) -> None:
        self.close_reason = "handshake_timeout"
        self._error("info", "handshake_timeout", "TLS handshake not completed in time",
                    listener=self.rt.spec.name, client=self.client)
        self._abort("handshake_timeout")

    def _idle(self, now: float, delay: float) -> None:
        """From now the connection is idle: it closes after `delay` unless a request starts."""
        self.idle_deadline = now + delay

    def _header_started(self, now: float) -> None:
        """Bytes of a request head are waiting for the rest: the head now has a deadline."""
        if (self.current is None and not self.header_deadline_armed and not self.reader.idle
                and self.state is _OPEN):
            self.header_deadline_armed = True
            self.idle_deadline = 0.0
            self._arm(now + self.rt.spec.header_timeout_s, _HEADER)

    def _on_header_timeout(self, now: float) -> None:
        self._error("info", "header_timeout", "request header not complete in time",
                    listener=self.rt.spec.name, client=self.client)
        self._send_error(408, b"request timeout: the request header took too long\n",
                         "header_timeout", now)

    def _on_client_timer(self, now: float) -> None:
        """During an exchange: the client's side stalled (request body, or taking the response)?"""
        ex = self.current
        if ex is None or self.state is not _OPEN:
            return
        limit = self.rt.spec.body_timeout_s
        if self.write_paused:
            if now - self.tx_at >= limit:
                self._error("info", "client_send_timeout", "the client took no response bytes for "
                            f"{limit:g}s", listener=self.rt.spec.name, client=self.client,
                            target=ex.target or None)
                if ex.status == 0:
                    ex.status = 408
                self._drop_exchange(ex, now, "client_send_timeout")
                return
            self._arm(self.tx_at + limit, _CLIENT)
            return
        if ex.request_done or ex.tunnel:
            return
        if self.read_paused:
            # we hold the client back (the target is slow to take the body): not its fault
            self._arm(now + limit, _CLIENT)
            return
        if now - self.rx_at < limit:
            self._arm(self.rx_at + limit, _CLIENT)
            return
        self._error("info", "body_timeout", f"no request body bytes for {limit:g}s",
                    listener=self.rt.spec.name, client=self.client, target=ex.target or None)
        if ex.head_sent:
            ex.status = ex.status or 408
            self._drop_exchange(ex, now, "body_timeout")
            return
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self._send_error(408, b"request timeout: the request body stalled\n", "body_timeout", now)

    def _drop_exchange(self, ex: Exchange, now: float, reason: str) -> None:
        """End an exchange that cannot finish cleanly: close both sides, log it aborted."""
        self.tunnel_deadline = 0.0
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        ex.done_with_target()
        self._access_log(ex, now, aborted=True)
        self.current = None
        self._abort(reason)

    # -- bytes in ----------------------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> Actions:
        """Bytes from the client."""
        state = self.state
        if state is _CLOSED or state is _CLOSING:
            return self.acts
        out, plain, events = self.tls.receive(data)
        return self._received(out, plain, events, now)

    def _received(self, out: bytes, plain: bytes, events: Sequence[Any], now: float) -> Actions:
        """What one arrival decrypted to (the native twin hands over here what it does not serve)."""
        if out:
            self.acts.out.append(out)
        for event in events:        # usually none; in order: the plaintext came before a close
            kind = type(event)
            if kind is HandshakeDone:
                self._on_handshake(event, now)
            elif kind is HandshakeFailed:
                self._on_handshake_failed(event, now)
                return self._done()
            elif kind is PeerClosed:
                if plain:
                    self._feed(plain, now)
                self._peer_closed(now)
                return self._done()
            elif kind is StatusPending:
                # the client's OCSP answer is being fetched: read nothing more until it settles
                # (bounded by ocsp_timeout_s, and by the handshake deadline, still armed)
                self._reading(False)
                owner = self.owner
                if owner is not None:
                    event.pending.add_waiter(owner.status_settled)
                return self._done()
            else:
                # TLSFailed, after the handshake: one error line, not a second connection-log line
                self._error("info", event.reason, "TLS failure after the handshake",
                            listener=self.rt.spec.name, client=self.client, detail=event.detail)
                self._close(event.reason, notify=False)
                return self._done()
        if plain:
            self.rx_at = now
            self._feed(plain, now)
        return self._done()

    def eof(self, now: float) -> bool:
        """TCP FIN without close_notify: True to keep the transport half-open so the response in
        flight can still be written (the actions are in `acts`)."""
        ex = self.current
        keep = False
        if self.h2 is not None:
            keep = self.state is _OPEN and self.h2.has_streams()
        elif self.state is _OPEN and ex is not None and ex.request_done:
            keep = self._tunnel_client_done(ex, now) if ex.tunnel else True
        self._done()
        return keep

    def _peer_closed(self, now: float) -> None:
        if self.h2 is not None:
            self.h2.peer_closed(now)
            return
        ex = self.current
        if ex is not None and ex.tunnel:
            self._tunnel_client_done(ex, now)
            return
        try:
            self.reader.feed_eof()
        except HTTPProtocolError:
            pass
        self.peer_done = True
        if self.current is None:
            self._close("client_closed")

    def _on_handshake(self, event: HandshakeDone, now: float) -> None:
        self.state = _OPEN
        self.done_event = event
        rt = self.rt
        identity = event.identity
        if identity is not None:
            verified = event.status is not None and identity.verified
            # identity_fields are claims of a verified certificate only: never a passthrough's or a
            # report-only listener's would-be refusal (their names would pass for proven ones)
            self.identity_lines = hdrs.identity_block(identity, verified, rt.header_styles,
                                                      fields=rt.identity_fields if verified else ())
        reason = ""
        if rt.tls.reports:
            # mtls_enforcement = "report": served whatever the verdict; the backend, the logs and
            # the metrics learn what enforcing would have done
            status = event.status
            if status is not None:
                self.identity_lines += hdrs.verify_status_line(status.value)
                if status.value.startswith("Failed:"):
                    reason = "would_refuse"
                    rt.observer.would_refuse(rt.spec.name, status.value)
        self._connection_log(event, reason)
        rt.observer.handshake(rt.spec.name, rt.spec.mtls, "accepted",
                              event.status.value if event.status is not None else None,
                              event.resumed, self.tls.handshake_s)
        self.conn_deadline = 0.0
        # the first request is awaited as long as a header may take; nothing sent: a quiet close
        self._idle(now, rt.spec.header_timeout_s)
        if rt.spec.http2 and self.tls.alpn == b"h2":
            from .streams import H2Session
            self.h2 = H2Session(self, now)     # its SETTINGS go out with this arrival's answer

    def _on_handshake_failed(self, event: HandshakeFailed, now: float) -> None:
        self.close_reason = event.reason
        rt = self.rt
        ident = event.identity
        self._error("info", event.reason, "TLS handshake refused", listener=rt.spec.name,
                    client=self.client, verify_status=event.status.value, detail=event.detail,
                    subject=ident.subject if ident else None,
                    serial=f"{ident.serial:x}" if ident else None)
        self.done_event = event
        self._connection_log(event, event.reason)
        rt.observer.handshake(rt.spec.name, rt.spec.mtls, "refused", event.status.value,
                              event.resumed, now - self.connected_at)
        self.state = _CLOSING
        self._cancel_timers()
        self.acts.close = CLOSE
        self.acts.more = True

    def _feed(self, plain: bytes, now: float) -> None:
        h2 = self.h2
        if h2 is not None:
            h2.receive(plain, now)
            return
        ex = self.current
        if ex is not None and ex.tunnel:
            ex.bytes_in += len(plain)
            ex.upstream.write(plain)  # type: ignore[union-attr]  # a tunnel has its upstream
            return
        reader = self.reader
        if reader is _NO_READER:
            reader = self._new_reader()
        try:
            reader.feed(plain)  # type: ignore[union-attr]  # made above
        except HTTPProtocolError as exc:
            self._protocol_error(exc, now)
            return
        self._fed(now)

    def _new_reader(self) -> RequestReader:
        """The connection's request reader, made when its first plaintext arrives."""
        rt = self.rt
        reader = self.reader = http1.request_reader(rt.http_limits, hold_upgrades=rt.routes.upgrades)
        return reader

    def _fed(self, now: float) -> None:
        """The reader has this arrival's plaintext: serve what it makes of it."""
        self._process(now)
        if self.current is None:        # _header_started's own first test, hoisted: per arrival
            self._header_started(now)

    def _protocol_error(self, exc: HTTPProtocolError, now: float) -> None:
        self._error("info", exc.reason, str(exc) or "malformed request", listener=self.rt.spec.name,
                    client=self.client, status=exc.status)
        ex = self.current
        if ex is not None and ex.head_sent:
            self._drop_exchange(ex, now, exc.reason)
            return
        if ex is not None and ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self._send_error(exc.status, (str(exc) or "bad request").encode("utf-8", "replace")[:200] + b"\n",
                         exc.reason, now)

    def _send_error(self, status: int, body: bytes, reason: str, now: float) -> None:
        """Answer with an error and close: the connection's framing can no longer be trusted."""
        if self.state is not _OPEN:
            self._abort(reason)
            return
        ex = self.current
        payload = http1.error_response(status, body, close=True)
        self._write(payload)
        if ex is not None:
            ex.bytes_out += len(payload)
            ex.status = status
            self.tunnel_deadline = 0.0
            ex.done_with_target()
            self._access_log(ex, now)
            self.current = None
        else:
            self._access_log_bare(status, reason, len(payload))
        self._close(reason)

    # -- requests ----------------------------------------------------------------------------------
    def _process(self, now: float) -> None:
        self._pump(now)
        self._flow_in()

    def _pump(self, now: float) -> None:
        """Take the reader's events while the current exchange can use them."""
        reader = self.reader
        while self.state is _OPEN:
            ex = self.current
            if ex is not None and ex.request_done:
                break       # a pipelined request waits until this response is finished
            event = self.held
            if event is not None:
                self.held = None
            else:
                event = reader.next_event()
                if event is None:
                    break
            if ex is None:
                if type(event) is not Request:       # pragma: no cover - the reader guarantees order
                    self._send_error(400, b"unexpected data\n", "http_out_of_order", now)
                    return
                self._start(event, now)
            elif ex.discard:
                if type(event) is EndOfMessage:
                    ex.request_done = True
                    self._finish(ex, now)
            elif type(event) is EndOfMessage:
                ex.request_done = True
                if ex.body_queue is not None:
                    ex.body_queue.append(http1.LAST_CHUNK if ex.request.chunked else b"")
                elif ex.upstream is not None:
                    if ex.request.chunked:
                        ex.upstream.write(http1.LAST_CHUNK)
                    # the target's read deadline runs from the end of the request (nginx's
                    # proxy_read_timeout does the same)
                    ex.upstream.last_activity = now
            elif type(event) is Request:             # pragma: no cover
                self.held = event
                break
            else:   # Data
                data = event.data  # type: ignore[union-attr]  # Data: what is left
                ex.bytes_in += len(data)
                if ex.request.chunked:
                    data = http1.chunk(data)
                if ex.body_queue is not None:
                    ex.body_queue.append(data)
                elif ex.upstream is not None:
                    ex.upstream.write(data)

    def _flow_in(self) -> None:
        """Pause reading from the client while too much request data waits to be sent on."""
        ex = self.current
        if (not self.read_paused and not self.write_paused
                and self.reader.buffered_bytes <= READ_HIGH_WATER_BYTES
                and (ex is None or not ex.body_queue)):
            return      # the usual case, decided without the sums below
        if self.state is not _OPEN:
            return
        backlog = self.reader.buffered_bytes
        if ex is not None and ex.body_queue:
            backlog += sum(len(b) for b in ex.body_queue)
        if backlog > READ_HIGH_WATER_BYTES or self.write_paused:
            if not self.read_paused:
                self.read_paused = True
                self._reading(False)
        elif self.read_paused and not (ex is not None and ex.upstream is not None and ex.upstream.paused):
            self.read_paused = False
            self._reading(True)

    def _start(self, request: Request, now: float) -> None:
        rt = self.rt
        self.requests += 1
        self.header_deadline_armed = False
        self.idle_deadline = 0.0
        self.conn_deadline = 0.0
        ex = Exchange(request, now)
        self.current = ex
        limit = rt.spec.max_requests_per_connection
        if self.draining or (limit and self.requests >= limit):
            ex.keep_alive = False
        host = _route_host(request.host)
        if self._screened_out(ex, request, host, now):
            return
        action = ex.action = rt.routes.match(host, split_path(ex.forward_target),
                                             request.method, request.headers)
        if action.access is not None:
            refusal = self._refusal(action)
            if refusal is not None:
                self._after_answer(ex, ex.answer_payload(refusal), now)
                return
        if request.upgrade is not None:
            if type(action) is not Forward or request.upgrade not in action.upgrades:
                # no protocol upgrade (WebSocket, h2c) where no rule allows it: refuse plainly
                ex.keep_alive = False
                self._error("info", "upgrade_refused", "protocol upgrade refused",
                            listener=rt.spec.name, upgrade=request.upgrade.decode("latin-1"),
                            client=self.client)
                self._respond_fixed(ex, 501, UPGRADE_REFUSED, now)
                return
            ex.upgrade = True
            ex.keep_alive = False       # whatever the target answers, HTTP/1.1 ends here
        if type(action) is Forward:
            self._forward(ex, action, request, now)
        elif type(action) is Fixed:
            self._after_answer(ex, ex.answer_payload(action), now)
        else:
            # a RedirectAction, what is left (the checker does not narrow on `type(...) is`)
            location = action.location(  # type: ignore[union-attr]
                split_host(request.host), rt.port, ex.forward_target)
            if location is None:
                self._after_answer(ex, ex.answer_payload(REDIRECT_NEEDS_HOST), now)
                return
            ex.status = action.status  # type: ignore[union-attr]
            ex.body_queue = None
            self._after_answer(ex, action.response(location, ex.answer_keeps(),  # type: ignore[union-attr]
                                                   request.http_version == b"1.0"), now)

    def _screened_out(self, ex: Exchange, request: Request, route_host: bytes | None,
                      now: float) -> bool:
        """What a request must pass before any rule sees it; True when it was refused (and
        answered). Header names a backend would fold into one the gateway sets (gateway.headers),
        the path the backend will act on (gateway.paths), and a Host that the certificate chosen by
        SNI covers (RFC 9110 7.4 and 15.5.20: 421 when a connection is not authoritative)."""
        rt = self.rt
        screening = hdrs.screen_request(rt.header_policy, request.headers, request.connection)
        if screening is not None:
            self._error("info", screening.reason, screening.message, listener=rt.spec.name,
                        client=self.client, headers=[n.decode("latin-1") for n in screening.names])
            if screening.refuse:
                return self._refuse(ex, 400, screening.message, screening.reason, now)
        try:
            ex.forward_target = paths.normalize_target(rt.path_policy, request.target)
        except HTTPProtocolError as exc:
            self._error("info", exc.reason, str(exc), listener=rt.spec.name, client=self.client,
                        target=request.target[:512].decode("latin-1"))
            return self._refuse(ex, exc.status, str(exc), exc.reason, now)
        if rt.sni_host_strict and route_host is not None:
            host = route_host.lower().decode("latin-1")
            ev = self.done_event
            names = ev.certificate_names if type(ev) is HandshakeDone else ()
            if not any(name_matches(n, host) for n in names):
                self._error("info", "misdirected_request", "Host is not a name of the certificate "
                            "the client's SNI chose", listener=rt.spec.name, client=self.client,
                            host=host,  # an open connection's event is a HandshakeDone:
                            server_name=ev.server_name  # type: ignore[union-attr]
                            if ev is not None else None)
                return self._refuse(ex, 421, "misdirected request: this connection does not "
                                    "serve that host", "misdirected_request", now)
        return False

    def _refuse(self, ex: Exchange, status: int, message: str, reason: str, now: float) -> bool:
        """Answer a request the gateway refuses by itself, and close: a 4xx for something a client
        sent on purpose ends the connection (nothing after it on the wire is trusted)."""
        ex.keep_alive = False
        ex.reason = reason
        self._respond_fixed(ex, status, message.encode("utf-8", "replace")[:200] + b"\n", now)
        return True

    def _refusal(self, action: Forward | Fixed | RedirectAction) -> Fixed | None:
        refusals = self.refusals
        if refusals is None:
            refusals = self.refusals = {}
        key = action.rule
        if key in refusals:
            return refusals[key]
        ev = self.done_event
        identity = ev.identity if type(ev) is HandshakeDone else None
        # asked only for a rule that has one (_start)
        refusal = refusals[key] = action.access.refusal(identity)  # type: ignore[union-attr]
        if refusal is not None:
            self._error("info", refusal.reason, "request refused by the rule's client-certificate "
                        "requirement", listener=self.rt.spec.name, rule=key, client=self.client,
                        subject=identity.subject if identity is not None else None)
        return refusal

    def _after_answer(self, ex: Exchange, payload: bytes, now: float) -> None:
        ex.bytes_out += len(payload)
        self._write(payload)
        if ex.keep_alive:
            # answered already; the request's own EndOfMessage (still queued) ends the exchange
            ex.discard = True
        else:
            ex.request_done = True
            self._finish(ex, now)

    def _forward(self, ex: Exchange, action: Forward, request: Request, now: float) -> None:
        group = self.rt.target_groups[action.target_group]
        none = ex.pick_target(group)
        if none is not None:
            self._upstream_failed(ex, none, now, count=False)
            return
        target = ex.picked
        if request.expect_continue:
            self._write(CONTINUE)
        if request.chunked or request.content_length:
            self._arm(now + self.rt.spec.body_timeout_s, _CLIENT)
        conn = group.take_idle(target)  # type: ignore[arg-type]  # picked above
        if conn is not None:
            self._attach(ex, conn, now)
        else:
            self._connect(ex, group, target)  # type: ignore[arg-type]

    def _connect(self, ex: Exchange, group: TargetGroup, target: Target) -> None:
        ex.connecting = True
        entry = (ex, group, target)
        acts = self.acts
        acts.more = True
        if acts.connects is None:
            acts.connects = [entry]
        else:
            acts.connects.append(entry)

    def upstream_connected(self, ex: Exchange, conn: UpstreamConnection, now: float) -> Actions:
        """A connection the shell opened for `ex` (an entry of Actions.connects) is up."""
        if self.h2 is not None:
            if self.state is _OPEN:
                self.h2.upstream_connected(ex, conn, now)  # type: ignore[arg-type]  # its own
            else:
                conn.close()
            return self._done()
        ex.connecting = False
        if self.current is not ex or self.state is not _OPEN:
            conn.close()
            return self._done()
        self._attach(ex, conn, now)
        self._flow_in()
        return self._done()

    def upstream_connect_failed(self, ex: Exchange, group: TargetGroup, target: Target,
                                exc: UpstreamError,
                                now: float) -> Actions:
        """The connection the shell opened for `ex` failed (refused, timed out, TLS)."""
        if self.h2 is not None:
            if self.state is _OPEN:
                self.h2.upstream_connect_failed(ex, group, target, exc, now)  # type: ignore[arg-type]
            return self._done()
        ex.connecting = False
        if self.current is not ex or self.state is not _OPEN:
            return self._done()
        # Nothing was sent anywhere, and the body so far is still queued here: another target
        # may take the request (nginx's proxy_next_upstream error timeout).
        self._error("warning", exc.reason, str(exc), listener=self.rt.spec.name, target=exc.target,
                    target_group=group.name, client=self.client)
        self.rt.observer.upstream(group.name, exc.target, now - ex.started, False)
        other = ex.retarget(group, target)
        if other is None:
            self._upstream_failed(ex, exc, now, count=False, logged=True)
            return self._done()
        self._connect(ex, group, other)
        return self._done()

    def _attach(self, ex: Exchange, conn: UpstreamConnection, now: float) -> None:
        rt = self.rt
        ex.send_head(conn, self.owner, self.identity_lines, self.client_ip_b, self.client_port,
                     rt.port, rt.header_policy, now, rt.signer)
        # one deadline per client connection watches whichever exchange is current (see
        # _on_upstream_timer); it is moved only when it is not due soon enough
        deadline = now + conn.group.read_timeout_s
        if not self.up_deadline or self.up_deadline > deadline:
            self.up_deadline = deadline
        # what of the request is queued already (its end, body) goes on now; reading is decided
        # by the caller, once (_process, upstream_connected)
        self._pump(now)

    # -- upstream events ---------------------------------------------------------------------------
    def upstream_event(self, conn: UpstreamConnection, events: Sequence[UpstreamEvent],
                       now: float) -> Actions:
        """What one read of the target produced (gateway.upstream: the connection parses)."""
        if self.h2 is not None:
            if self.state is _OPEN:
                self.h2.upstream_event(conn, events, now)
            else:
                conn.close()
            return self._done()
        ex = self.current
        if ex is None or ex.upstream is not conn:
            conn.close()
            return self._done()
        if ex.tunnel:
            for event in events:
                if type(event) is UpstreamClosed:
                    # the target ended the tunnel: end the client's side the same way
                    ex.upstream = None
                    self._end_tunnel(ex, now, "upstream_closed")
                    return self._done()
                ex.bytes_out += len(event)
                self._write(event)
            return self._done()
        if events and type(events[-1]) is UpstreamClosed:
            self._upstream_lost(ex, conn, events, now)
            return self._done()
        conn.last_activity = now
        for event in events:
            if not self._upstream_event(ex, conn, event, now) and not ex.tunnel:
                break
        return self._done()

    def _upstream_event(self, ex: Exchange, conn: UpstreamConnection, event: UpstreamEvent,
                        now: float) -> bool:
        """One event of the current exchange's target; False when the exchange is over (or
        switched to a tunnel, or failed)."""
        kind = type(event)
        if kind is Data:
            data = event.data
            if ex.chunked_out:
                data = http1.chunk(data)
            ex.bytes_out += len(data)
            self.batch.append(data)     # _write, inlined
            return True
        if kind is Response:
            self.batch.append(ex.response_head(event, self.state is _OPEN))
            return True
        if kind is bytes:
            # after the switch: the new protocol's first bytes, read with the 101
            ex.bytes_out += len(event)
            self._write(event)
            return True
        if kind is UpstreamFailed:
            exc = event.error
            exc.target = ex.target
            self._upstream_failed(ex, exc, now)
            return False
        if kind is EndOfMessage:
            if ex.response.status == 101:  # type: ignore[union-attr]  # its Response came first
                self._switch(ex, conn, now)
                return False
            if ex.chunked_out:
                ex.bytes_out += len(http1.LAST_CHUNK)
                self._write(http1.LAST_CHUNK)
            reusable = (ex.response.keep_alive  # type: ignore[union-attr]
                        and ex.request_done and conn.reader is not None)
            ex.upstream = None
            self.rt.observer.upstream(conn.group.name, ex.target, now - ex.started, True)
            self.tunnel_deadline = 0.0
            if reusable:
                conn.group.release(conn)
            else:
                conn.close()
            self._finish(ex, now)
            return False
        return True     # pragma: no cover - an upstream connection reports nothing else here

    def _switch(self, ex: Exchange, conn: UpstreamConnection, now: float) -> None:
        """The target answered 101: from now on bytes pass through both ways, unparsed."""
        ex.tunnel = True
        self.rt.observer.upstream(conn.group.name, ex.target, now - ex.started, True)
        pending = self.reader.take_raw()
        if pending:
            ex.bytes_in += len(pending)
            conn.write(pending)
        conn.last_activity = self.rx_at = now
        self.tunnel_deadline = now + self.rt.spec.idle_timeout_s

    def _on_tunnel_timer(self, now: float) -> None:
        ex = self.current
        if ex is None or not ex.tunnel or ex.upstream is None:
            return
        limit = self.rt.spec.idle_timeout_s
        idle = now - max(self.rx_at, ex.upstream.last_activity)
        if idle < limit:
            self.tunnel_deadline = now + limit - idle
            return
        self._end_tunnel(ex, now, "idle_timeout")

    def _tunnel_client_done(self, ex: Exchange, now: float) -> bool:
        """The client ended its side of a tunnel: pass that on to the target and let it finish
        (True), or, where the target's transport cannot half-close, end both sides now."""
        conn = ex.upstream
        if conn is not None and conn.write_eof():
            return True
        self._end_tunnel(ex, now, "client_closed")
        return False

    def _end_tunnel(self, ex: Exchange, now: float, reason: str) -> None:
        self.tunnel_deadline = 0.0
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        ex.done_with_target()
        self._access_log(ex, now)
        self.current = None
        self._close(reason)

    def _upstream_lost(self, ex: Exchange, conn: UpstreamConnection,
                       events: Sequence[UpstreamEvent], now: float) -> None:
        """The target's connection ended, after the events its end completed (if any)."""
        exc = None
        for event in events:
            if type(event) is UpstreamClosed:
                exc = event.exc
                break
            if not self._upstream_event(ex, conn, event, now):
                return
        ex.upstream = None
        if ex.response is None and not ex.head_sent:
            req = ex.request
            if conn.reused and not ex.retried and not req.chunked and not req.content_length:
                # a pooled connection the target closed as we sent on it (RFC 9112 9.3.1):
                # nothing of the request is lost, so send it again on a new connection
                ex.retried = True
                self.tunnel_deadline = 0.0
                ex.body_queue = []
                self._connect(ex, conn.group, ex.picked)  # type: ignore[arg-type]  # a forward has its target
                return
            if not conn.reused:
                conn.group.connection_failed(ex.picked, "upstream_closed")  # type: ignore[arg-type]
        self._upstream_failed(ex, UpstreamError(
            f"{ex.target} closed the connection" + (f": {exc}" if exc else "")
            + (" before answering" if ex.response is None else " inside the response"),
            status=502, reason="upstream_closed", target=ex.target), now)

    def upstream_pause_writing(self, now: float) -> Actions:
        """The current exchange's target stopped taking bytes: stop reading from the client."""
        if self.h2 is not None:
            self.h2.upstream_pause_writing(now)
            return self._done()
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.paused = True
            if not self.read_paused and self.state is _OPEN:
                self.read_paused = True
                self._reading(False)
        return self._done()

    def upstream_resume_writing(self, now: float) -> Actions:
        if self.h2 is not None:
            self.h2.upstream_resume_writing(now)
            return self._done()
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.paused = False
            ex.upstream.last_activity = now
        self._flow_in()
        return self._done()

    def _on_upstream_timer(self, now: float) -> None:
        ex = self.current
        if ex is None or ex.tunnel or ex.upstream is None or self.state is not _OPEN:
            return      # no target being waited for: the next exchange sets it again
        conn = ex.upstream
        limit = conn.group.read_timeout_s
        if self.write_paused or (not ex.request_done and not conn.paused):
            # the client is the side being waited for (slow to send the body or to take the
            # response): its own deadline (body_timeout_s) covers that
            self.up_deadline = now + limit
            return
        idle = now - conn.last_activity
        if idle < limit:
            self.up_deadline = now + limit - idle
            return
        self._upstream_failed(ex, UpstreamError(
            f"{ex.target} did not answer within {limit:g}s", status=504,
            reason="upstream_timeout", target=ex.target), now)

    def _upstream_failed(self, ex: Exchange, exc: UpstreamError, now: float, *, count: bool = True,
                         logged: bool = False) -> None:
        group = ex.group
        group_name = group.name if group is not None else ""
        if count:
            self.rt.observer.upstream(group_name, exc.target or ex.target, now - ex.started, False)
        if not logged:
            self._error("warning", exc.reason, str(exc), listener=self.rt.spec.name,
                        target=exc.target or ex.target or None, target_group=group_name,
                        client=self.client)
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self.tunnel_deadline = 0.0
        if ex.head_sent or self.state is not _OPEN:
            # the response already started: the only honest signal left is an abrupt close
            self._drop_exchange(ex, now, exc.reason)
            return
        ex.keep_alive = False
        self._respond_fixed(ex, exc.status, UPSTREAM_ERROR_BODIES.get(exc.status, b"upstream error\n"),
                            now)

    # -- responses ---------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        self.batch.append(data)

    def _flush(self) -> None:
        batch = self.batch
        if batch:
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            batch.clear()
            out = self.tls.send(data)
            if out:
                self.acts.out.append(out)

    def pause_writing(self, now: float) -> Actions:
        """The client's transport buffer is full."""
        self.write_paused = True
        self.tx_at = now
        if self.h2 is not None:
            self.h2.pause_writing(now)
            return self._done()
        ex = self.current
        if ex is not None:
            if ex.upstream is not None:
                ex.upstream.pause_reading()
            if not self.conn_deadline and self.state is _OPEN:
                self._arm(now + self.rt.spec.body_timeout_s, _CLIENT)
        return self._done()

    def resume_writing(self, now: float) -> Actions:
        self.write_paused = False
        self.tx_at = now
        if self.h2 is not None:
            self.h2.resume_writing(now)
            return self._done()
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()
        self._flow_in()
        return self._done()

    def _respond_fixed(self, ex: Exchange, status: int, body: bytes, now: float) -> None:
        self._write(ex.error_payload(status, body))
        self._finish(ex, now)

    def _finish(self, ex: Exchange, now: float) -> None:
        target = ex.picked      # ex.done_with_target(), inlined: once per request
        if target is not None:
            ex.picked = None
            ex.group.done(target)  # type: ignore[union-attr]  # picked from this group
        rt = self.rt
        rt.observer.request(rt.spec.name, ex.status, now - ex.started)     # _access_log, inlined
        if rt.access_log.enabled:
            self._log("access", ex.access_record(rt.spec.name, self.client, self.done_event, now,
                                                 False))
        self.current = None
        if not ex.keep_alive or self.state is not _OPEN or not ex.request_done:
            self._close("response_complete")
            return
        pending = self.held is not None or self.reader.buffered_bytes > 0
        if self.peer_done and not pending:
            self._close("client_closed")
            return
        self.idle_deadline = now + rt.spec.idle_timeout_s      # _idle, inlined
        if pending:
            self._process(now)
            self._header_started(now)
        else:
            self._flow_in()

    # -- logs --------------------------------------------------------------------------------------
    def _access_log(self, ex: Exchange, now: float, aborted: bool = False) -> None:
        rt = self.rt
        rt.observer.request(rt.spec.name, ex.status, now - ex.started)
        if rt.access_log.enabled:
            self._log("access", ex.access_record(rt.spec.name, self.client, self.done_event, now,
                                                 aborted))

    def _access_log_bare(self, status: int, reason: str, bytes_out: int = 0) -> None:
        if self.rt.access_log.enabled:
            self._log("access", {"time": iso_now(), "listener": self.rt.spec.name,
                                 "client": self.client, "method": None, "target": None,
                                 "status": status, "reason": reason, "bytes_out": bytes_out})

    def _connection_log(self, event: HandshakeDone | HandshakeFailed | None, reason: str) -> None:
        rt = self.rt
        if not rt.connection_log.enabled:
            return
        ident = getattr(event, "identity", None)
        done = type(event) is HandshakeDone
        status = getattr(event, "status", None)
        self._log("connection", {
            "time": iso_now(),
            "client_ip": self.client_ip,
            "client_port": self.client_port,
            "listener": rt.spec.name,
            "listener_port": rt.port,
            # `done`: a HandshakeDone
            "tls_protocol": event.protocol if done else None,  # type: ignore[union-attr]
            "tls_cipher": event.cipher if done else None,  # type: ignore[union-attr]
            "tls_handshake_latency": round(self.tls.handshake_s, 6) if done else None,
            "resumed": getattr(event, "resumed", False),
            "leaf_client_cert_subject": ident.subject if ident is not None else None,
            "leaf_client_cert_validity": validity(ident) if ident is not None else None,
            "leaf_client_cert_serial_number": serial_hex(ident.serial) if ident is not None else None,
            "tls_verify_status": status.value if status is not None else ("NoCertificate" if done else None),
            "result": "accepted" if done else "refused",
            "reason": reason or None,
            "conn_trace_id": "TID_" + os.urandom(16).hex(),
        })


def _route_host(host: bytes | None) -> bytes | None:
    """The Host as rules and the SNI check see it: without the port and without the trailing dot
    of a fully qualified name ("a.example." is "a.example", RFC 1034 3.1), so neither spelling
    slips past a host condition."""
    host = split_host(host)
    return host.rstrip(b".") or None if host is not None else None


class Connection(ConnectionCore):
    """The pure twin: the state in slots."""

    __slots__ = STATE


# --- twin selection ---------------------------------------------------------------------------------
# native/conn.pyx builds gateway._conn_c: a C struct with every name of STATE and the common arrival
# (a complete request answered by a fixed response, on a kept-alive connection) served without a
# Python frame; everything else is these methods, over the same state. It is handed this module's
# objects at load. tests/unit/test_conn.py runs on both classes and compares them call by call.

def _load_native() -> type[ConnectionCore] | None:
    try:
        c = importlib.import_module("gateway._conn_c")     # not `from gateway import`: a leaf
        c.bind(handshake=ConnState.HANDSHAKE, open_=_OPEN, closing=_CLOSING, closed=_CLOSED,
               no_reader=_NO_READER, request=Request, end_of_message=EndOfMessage, fixed=Fixed,
               exchange=Exchange, protocol_error=HTTPProtocolError, headers=hdrs,
               protected_tokens=hdrs._PROTECTED_TOKEN, general_receive=ConnectionCore.receive,
               state=STATE, tls_open=TLSState.OPEN, tls_failed=TLSState.FAILED,
               pump_codes=(tls_mod.WANT, tls_mod.FAILED), handshake_done=HandshakeDone,
               actions=Actions, timer_handshake=_HANDSHAKE, null_observer=NULL_OBSERVER,
               needs_work=paths._NEEDS_WORK)
    except (ImportError, AttributeError, TypeError):
        # AttributeError, TypeError: a stale build of the extension without these names.
        return None

    # c.Core: an extension imported by name at run time (so untyped here)
    class NativeConnection(c.Core, ConnectionCore):  # type: ignore[misc,name-defined]
        """The native twin: the state and the common arrival in C (gateway._conn_c)."""

        __slots__ = ()

    return NativeConnection


NATIVE: type[ConnectionCore] | None = _load_native()
core_class: type[ConnectionCore] = Connection      # what the shell makes for a new connection
native_mode = "python"


def set_native(mode: str) -> str:
    """Pick the native or pure connection core: ``"auto"``, ``"on"`` or ``"off"``; returns the
    choice. ``"on"`` without an importable extension raises NativeUnavailable."""
    global core_class, native_mode
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"native mode must be 'auto', 'on' or 'off', not {mode!r}")
    if mode == "on" and NATIVE is None:
        raise NativeUnavailable("native = \"on\" but gateway._conn_c cannot be imported "
                                "(reinstall with `pip install -e .` to build it)")
    if mode != "off" and NATIVE is not None:
        core_class, native_mode = NATIVE, "native"
    else:
        core_class, native_mode = Connection, "python"
    return native_mode


set_native("auto")
