"""GatewayProtocol: the one per-connection orchestrator (TLS -> HTTP -> rule -> action).

How this works: the asyncio protocol only moves bytes. `data_received` makes one call into the
sans-IO `TLSConnection`, writes what it returns, reacts to its event (handshake done or refused) and
feeds the plaintext to the sans-IO `RequestReader`. Requests are served one at a time, in order
(pipelined requests wait their turn in the reader): the route table picks the action by host, path,
method and headers; a rule that asks for a client certificate (or an allowed one) is checked
against the connection's identity (403 otherwise; the answer is kept per rule for the
connection); a fixed response is one prebuilt write, a redirect one join; a forward picks a target
of the group (503 when none is available), takes a pooled upstream connection or opens one, writes
a request head built by `headers` (every identity header of every style stripped, the gateway's own
added, hop-by-hop headers dropped, the body re-framed) and streams the body; the response streams
back the same way. Back-pressure is passed through in both directions, so memory stays bounded
whatever the sizes.

Upstream failures: a connect that fails (refused, timed out, TLS) is retried on another available
target while the request body is still held here; a pooled connection the target closed before
answering (the keep-alive race, RFC 9112 9.3.1) is retried once on a new connection when the
request had no body. Otherwise the client gets 502 (refused, broken), 504 (timed out) or 503 (no
available target), each with a short body and one error-log line naming the target and why.

Protocol upgrades (WebSocket) pass only where a forward rule allows the Upgrade value; the reader
then stops parsing after that request, and once the target answers 101 the connection becomes a
byte tunnel both ways. Elsewhere an upgrade request is refused with 501 and the connection closed.

The runtime (TLS contexts, trust stores, rules, target groups) is taken once per connection in
`connection_made`, so a reload never changes a live connection.

Memory: a worker may hold tens of thousands of idle connections, so what one keeps is kept small:
the protocol's state lives in slots, and the HTTP reader is made with the first plaintext, not
before (bench/flood.py measures what an idle connection costs).

Deadlines: the TLS handshake, the first request's header section and each later one
(`header_timeout_s`, 408 then close), idle keep-alive (`idle_timeout_s`, also a tunnel's idle time),
a pause in a request body or in the client taking a response (`body_timeout_s`), upstream connect
and read (`connect_timeout_s`, `read_timeout_s`: no sign of life from the target for that long
while it is the side being waited for). Deadlines that may be renewed by traffic are checked
against a last-activity time when they fire, rather than re-armed for every piece of data.
"""
from __future__ import annotations

import asyncio
import enum
import os
import time

from . import headers as hdrs
from . import http1, paths
from .errors import HTTPProtocolError, UpstreamError
from .exchange import CONTINUE, UPGRADE_REFUSED, UPSTREAM_ERROR_BODIES, Exchange
from .http1 import EndOfMessage, Request, Response
from .identity import serial_hex
from .logs import iso_now, validity
from .routes import REDIRECT_NEEDS_HOST, Fixed, Forward, split_host, split_path
from .tls import HandshakeDone, HandshakeFailed, PeerClosed
from .upstream import UpstreamClosed, UpstreamFailed
from .tls import _name_matches as name_matches

# Pause reading from the client when this much parsed-but-unsent request data is queued
# (a pipelining client or a body arriving before the upstream connection is up).
READ_HIGH_WATER_BYTES = 262144


class ConnState(enum.Enum):
    HANDSHAKE = 1
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


class _NoRequestYet:
    """The request reader of a connection that has sent no plaintext yet. The real one (an llhttp
    parser, its callbacks, two queues: about 2.7 KB) is made when the first bytes of a request
    arrive: a client that connects ahead of need, or an idle flood, costs none of it."""

    __slots__ = ()
    idle = True
    buffered_bytes = 0

    def next_event(self) -> None:
        return None

    def feed_eof(self) -> None:
        return None

    def take_raw(self) -> bytes:
        return b""


_NO_READER = _NoRequestYet()


class GatewayProtocol(asyncio.Protocol):
    """Serves one client connection of one listener."""

    # Slots, not a __dict__: an idle connection is mostly this object, its TLS state and its
    # transport, and an instance dict of this many attributes costs about 1.5 KB of the 40 KB an
    # idle connection may take (bench/flood.py measures it).
    __slots__ = ("_runtime_ref", "_listener_name", "slot_release", "loop", "rt", "transport",
                 "client_ip", "client_port", "client_ip_b", "tls", "state", "reader", "current",
                 "held", "identity_lines", "done_event", "refusals", "requests", "read_paused",
                 "write_paused", "header_deadline_armed", "idle_timer", "idle_deadline",
                 "upstream_timer", "connected_at", "rx_at", "tx_at", "close_reason", "batch",
                 "draining", "peer_done", "timer")

    def __init__(self, runtime_ref, listener_name: str) -> None:
        self._runtime_ref = runtime_ref
        self._listener_name = listener_name
        # set by the acceptor that admitted the connection (gateway.accept): called once at the end
        self.slot_release = None

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.loop = loop = asyncio.get_running_loop()
        runtime = self._runtime_ref()
        self.rt = rt = runtime.listeners[self._listener_name]
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.client_ip = str(peer[0])
        self.client_port = int(peer[1])
        self.client_ip_b = self.client_ip.encode()
        self.tls = rt.tls.connection()
        self.state = ConnState.HANDSHAKE
        self.reader = _NO_READER         # the real one comes with the first plaintext (_feed)
        self.current: Exchange | None = None
        self.held = None                 # a pipelined request waiting for the current exchange
        self.identity_lines = b""
        self.done_event = None
        self.refusals: dict | None = None   # rule index -> 403 or None, for this identity
        self.requests = 0
        self.read_paused = False
        self.write_paused = False
        self.header_deadline_armed = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.idle_deadline = 0.0         # loop time an idle connection closes; 0 while not idle
        self.upstream_timer: asyncio.TimerHandle | None = None
        self.connected_at = time.monotonic()
        self.rx_at = 0.0                 # loop time of the last bytes from the client
        self.tx_at = 0.0                 # loop time the client last took bytes (resumed writing)
        self.close_reason = ""
        self.batch: list[bytes] | None = None   # plaintext held to go out as one TLS write
        self.draining = False
        self.peer_done = False       # the client sent close_notify: answer what is in flight, then close
        rt.open_connections += 1
        rt.protocols.add(self)
        rt.observer.connection_opened(rt.spec.name)
        self.timer = loop.call_later(rt.spec.handshake_timeout_s, self._on_handshake_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is ConnState.CLOSED:
            return
        self.state = ConnState.CLOSED
        self.rt.open_connections -= 1
        self.rt.protocols.discard(self)
        self.rt.observer.connection_closed(self.rt.spec.name)
        self._cancel_timers()
        ex = self.current
        if ex is not None:
            self._cancel_ex_timer(ex)
            if ex.upstream is not None:
                ex.upstream.close()     # the client is gone: do not leave the upstream streaming
                ex.upstream = None
            self._done_with_target(ex)
            if ex.status == 0:
                ex.status = 499
            self._access_log(ex, aborted=not ex.tunnel)
            self.current = None
        if self.done_event is None:
            # the handshake never finished: log the attempt as a connection record too
            self._connection_log(None, self.close_reason or "closed_before_handshake")
        release = self.slot_release
        if release is not None:
            self.slot_release = None
            release()

    def drain(self) -> None:
        """Shutdown: finish the exchange in flight, then close; close an idle connection now."""
        self.draining = True
        if self.state is not ConnState.OPEN:
            return      # a handshake in progress completes; its first request is served, then close
        if self.current is not None:
            self.current.keep_alive = False
        elif self.requests > 0 and self.reader.idle:
            # idle keep-alive: close_notify now (RFC 9112 9.6: the client retries on a new connection)
            self._close("shutdown")
        # a fresh connection that has not sent its request yet gets to send it (a race a client
        # cannot see coming); the header deadline still bounds how long it may take

    def _close(self, reason: str = "", *, notify: bool = True) -> None:
        """Close the client connection: close_notify when TLS is open, then FIN after the writes."""
        if self.state in (ConnState.CLOSING, ConnState.CLOSED):
            return
        self.close_reason = self.close_reason or reason
        self._flush()
        if notify:
            out = self.tls.close()
            if out:
                self.transport.write(out)
        self.state = ConnState.CLOSING
        self._cancel_timers()
        self.transport.close()

    def _abort(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        self.state = ConnState.CLOSING
        self._cancel_timers()
        self.transport.abort()

    # -- timers ------------------------------------------------------------------------------------
    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _cancel_timers(self) -> None:
        self._cancel_timer()
        for handle in (self.idle_timer, self.upstream_timer):
            if handle is not None:
                handle.cancel()
        self.idle_timer = self.upstream_timer = None

    def _arm(self, delay: float, callback) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay, callback)

    def _on_handshake_timeout(self) -> None:
        self.timer = None
        self.close_reason = "handshake_timeout"
        self.rt.errors.info("handshake_timeout", "TLS handshake not completed in time",
                            listener=self.rt.spec.name, client=f"{self.client_ip}:{self.client_port}")
        self._abort("handshake_timeout")

    def _idle(self, delay: float) -> None:
        """From now the connection is idle: it closes after `delay` unless a request starts.
        One timer serves many requests: it is re-armed when it fires early, not per request."""
        loop = self.loop
        deadline = self.idle_deadline = loop.time() + delay
        timer = self.idle_timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self.idle_timer = loop.call_at(deadline, self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        self.idle_timer = None
        deadline = self.idle_deadline
        if self.state is not ConnState.OPEN or not deadline:
            return      # busy: the end of the exchange sets the next idle deadline
        if deadline > self.loop.time():
            self.idle_timer = self.loop.call_at(deadline, self._on_idle_timer)
            return
        self._close("idle_timeout")

    def _header_started(self) -> None:
        """Bytes of a request head are waiting for the rest: the head now has a deadline."""
        if (self.current is None and not self.header_deadline_armed and not self.reader.idle
                and self.state is ConnState.OPEN):
            self.header_deadline_armed = True
            self.idle_deadline = 0.0
            self._arm(self.rt.spec.header_timeout_s, self._on_header_timeout)

    def _on_header_timeout(self) -> None:
        self.timer = None
        self.rt.errors.info("header_timeout", "request header not complete in time",
                            listener=self.rt.spec.name, client=f"{self.client_ip}:{self.client_port}")
        self._send_error(408, b"request timeout: the request header took too long\n",
                         "header_timeout")

    def _on_client_timer(self) -> None:
        """During an exchange: the client's side stalled (request body, or taking the response)?"""
        self.timer = None
        ex = self.current
        if ex is None or self.state is not ConnState.OPEN:
            return
        limit = self.rt.spec.body_timeout_s
        now = self.loop.time()
        if self.write_paused:
            if now - self.tx_at >= limit:
                self.rt.errors.info("client_send_timeout", "the client took no response bytes for "
                                    f"{limit:g}s", listener=self.rt.spec.name,
                                    client=f"{self.client_ip}:{self.client_port}",
                                    target=ex.target or None)
                if ex.status == 0:
                    ex.status = 408
                self._drop_exchange(ex, "client_send_timeout")
                return
            self._arm(limit - (now - self.tx_at), self._on_client_timer)
            return
        if ex.request_done or ex.tunnel:
            return
        if self.read_paused:
            # we hold the client back (the target is slow to take the body): not its fault
            self._arm(limit, self._on_client_timer)
            return
        idle = now - self.rx_at
        if idle < limit:
            self._arm(limit - idle, self._on_client_timer)
            return
        self.rt.errors.info("body_timeout", f"no request body bytes for {limit:g}s",
                            listener=self.rt.spec.name,
                            client=f"{self.client_ip}:{self.client_port}", target=ex.target or None)
        if ex.head_sent:
            ex.status = ex.status or 408
            self._drop_exchange(ex, "body_timeout")
            return
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self._send_error(408, b"request timeout: the request body stalled\n", "body_timeout")

    def _drop_exchange(self, ex: Exchange, reason: str) -> None:
        """End an exchange that cannot finish cleanly: close both sides, log it aborted."""
        self._cancel_ex_timer(ex)
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self._done_with_target(ex)
        self._access_log(ex, aborted=True)
        self.current = None
        self._abort(reason)

    # -- bytes in ----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.state is ConnState.CLOSED or self.state is ConnState.CLOSING:
            return
        out, plain, events = self.tls.receive(data)
        if out:
            self.transport.write(out)
        for event in events:        # usually none; in order: the plaintext came before a close
            kind = type(event)
            if kind is HandshakeDone:
                self._on_handshake(event)
            elif kind is HandshakeFailed:
                self._on_handshake_failed(event)
                return
            elif kind is PeerClosed:
                if plain:
                    self._feed(plain)
                self._peer_closed()
                return
            else:
                # TLSFailed, after the handshake: one error line, not a second connection-log line
                self.rt.errors.info(event.reason, "TLS failure after the handshake",
                                    listener=self.rt.spec.name,
                                    client=f"{self.client_ip}:{self.client_port}", detail=event.detail)
                self._close(event.reason, notify=False)
                return
        if plain:
            self.rx_at = self.loop.time()
            self._feed(plain)

    def eof_received(self) -> bool | None:
        # TCP FIN without close_notify: finish the response in flight if any, else close
        ex = self.current
        if self.state is ConnState.OPEN and ex is not None and ex.request_done:
            if ex.tunnel:
                return self._tunnel_client_done(ex) or None
            return True     # keep the transport half-open so the response can still be written
        return None

    def _peer_closed(self) -> None:
        ex = self.current
        if ex is not None and ex.tunnel:
            self._tunnel_client_done(ex)
            return
        try:
            self.reader.feed_eof()
        except HTTPProtocolError:
            pass
        self.peer_done = True
        if self.current is None:
            self._close("client_closed")

    def _on_handshake(self, event: HandshakeDone) -> None:
        self.state = ConnState.OPEN
        self.done_event = event
        rt = self.rt
        identity = event.identity
        if identity is not None:
            self.identity_lines = hdrs.identity_block(identity, event.status is not None and identity.verified,
                                                      rt.header_styles)
        self._connection_log(event, "")
        rt.observer.handshake(rt.spec.name, rt.spec.mtls, "accepted",
                              event.status.value if event.status is not None else None,
                              event.resumed, self.tls.handshake_s)
        self._cancel_timer()
        # the first request is awaited as long as a header may take; nothing sent: a quiet close
        self._idle(rt.spec.header_timeout_s)

    def _on_handshake_failed(self, event: HandshakeFailed) -> None:
        self.close_reason = event.reason
        rt = self.rt
        ident = event.identity
        rt.errors.info(event.reason, "TLS handshake refused", listener=rt.spec.name,
                       client=f"{self.client_ip}:{self.client_port}", verify_status=event.status.value,
                       detail=event.detail, subject=ident.subject if ident else None,
                       serial=f"{ident.serial:x}" if ident else None)
        self.done_event = event
        self._connection_log(event, event.reason)
        rt.observer.handshake(rt.spec.name, rt.spec.mtls, "refused", event.status.value,
                              event.resumed, time.monotonic() - self.connected_at)
        self.state = ConnState.CLOSING
        self._cancel_timers()
        self.transport.close()

    def _feed(self, plain: bytes) -> None:
        ex = self.current
        if ex is not None and ex.tunnel:
            ex.bytes_in += len(plain)
            ex.upstream.write(plain)
            return
        reader = self.reader
        if reader is _NO_READER:
            rt = self.rt
            reader = self.reader = http1.RequestReader(rt.http_limits, hold_upgrades=rt.routes.upgrades)
        try:
            reader.feed(plain)
        except HTTPProtocolError as exc:
            self._protocol_error(exc)
            return
        self._process()
        self._header_started()

    def _protocol_error(self, exc: HTTPProtocolError) -> None:
        self.rt.errors.info(exc.reason, str(exc) or "malformed request", listener=self.rt.spec.name,
                            client=f"{self.client_ip}:{self.client_port}", status=exc.status)
        ex = self.current
        if ex is not None and ex.head_sent:
            self._drop_exchange(ex, exc.reason)
            return
        if ex is not None and ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self._send_error(exc.status, (str(exc) or "bad request").encode("utf-8", "replace")[:200] + b"\n",
                         exc.reason)

    def _send_error(self, status: int, body: bytes, reason: str) -> None:
        """Answer with an error and close: the connection's framing can no longer be trusted."""
        if self.state is not ConnState.OPEN:
            self._abort(reason)
            return
        ex = self.current
        self._flush()
        payload = http1.error_response(status, body, close=True)
        self.transport.write(self.tls.send(payload))
        if ex is not None:
            ex.bytes_out += len(payload)
            ex.status = status
            self._cancel_ex_timer(ex)
            self._done_with_target(ex)
            self._access_log(ex)
            self.current = None
        else:
            self._access_log_bare(status, reason, len(payload))
        self._close(reason)

    # -- requests ----------------------------------------------------------------------------------
    def _process(self) -> None:
        reader = self.reader
        while self.state is ConnState.OPEN:
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
                    self._send_error(400, b"unexpected data\n", "http_out_of_order")
                    return
                self._start(event)
            elif ex.discard:
                if type(event) is EndOfMessage:
                    ex.request_done = True
                    self._finish(ex)
            elif type(event) is EndOfMessage:
                ex.request_done = True
                if ex.body_queue is not None:
                    ex.body_queue.append(http1.LAST_CHUNK if ex.request.chunked else b"")
                elif ex.upstream is not None:
                    if ex.request.chunked:
                        ex.upstream.write(http1.LAST_CHUNK)
                    # the target's read deadline runs from the end of the request (nginx's
                    # proxy_read_timeout does the same)
                    ex.upstream.last_activity = self.loop.time()
            elif type(event) is Request:             # pragma: no cover
                self.held = event
                break
            else:   # Data
                data = event.data
                ex.bytes_in += len(data)
                if ex.request.chunked:
                    data = http1.chunk(data)
                if ex.body_queue is not None:
                    ex.body_queue.append(data)
                elif ex.upstream is not None:
                    ex.upstream.write(data)
        self._flow_in()

    def _flow_in(self) -> None:
        """Pause reading from the client while too much request data waits to be sent on."""
        if self.state is not ConnState.OPEN:
            return
        ex = self.current
        backlog = self.reader.buffered_bytes
        if ex is not None and ex.body_queue:
            backlog += sum(len(b) for b in ex.body_queue)
        if backlog > READ_HIGH_WATER_BYTES or self.write_paused:
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
        elif self.read_paused and not (ex is not None and ex.upstream is not None and ex.upstream.paused):
            self.read_paused = False
            self.transport.resume_reading()

    def _start(self, request: Request) -> None:
        rt = self.rt
        self.requests += 1
        self.header_deadline_armed = False
        self.idle_deadline = 0.0
        self._cancel_timer()
        ex = Exchange(request, time.monotonic())
        self.current = ex
        limit = rt.spec.max_requests_per_connection
        if self.draining or (limit and self.requests >= limit):
            ex.keep_alive = False
        if self._screened_out(ex, request):
            return
        action = ex.action = rt.routes.match(_route_host(request.host), split_path(ex.forward_target),
                                             request.method, request.headers)
        if action.access is not None:
            refusal = self._refusal(action)
            if refusal is not None:
                self._answer(ex, refusal)
                return
        if request.upgrade is not None:
            if type(action) is not Forward or request.upgrade not in action.upgrades:
                # no protocol upgrade (WebSocket, h2c) where no rule allows it: refuse plainly
                ex.keep_alive = False
                self.rt.errors.info("upgrade_refused", "protocol upgrade refused",
                                    listener=rt.spec.name, upgrade=request.upgrade.decode("latin-1"),
                                    client=f"{self.client_ip}:{self.client_port}")
                self._respond_fixed(ex, 501, UPGRADE_REFUSED)
                return
            ex.upgrade = True
            ex.keep_alive = False       # whatever the target answers, HTTP/1.1 ends here
        if type(action) is Forward:
            self._forward(ex, action, request)
        elif type(action) is Fixed:
            self._answer(ex, action)
        else:
            location = action.location(split_host(request.host), rt.port, ex.forward_target)
            if location is None:
                self._answer(ex, REDIRECT_NEEDS_HOST)
                return
            ex.status = action.status
            ex.body_queue = None
            self._after_answer(ex, action.response(location, ex.answer_keeps(),
                                                   request.http_version == b"1.0"))

    def _screened_out(self, ex: Exchange, request: Request) -> bool:
        """What a request must pass before any rule sees it; True when it was refused (and
        answered). Header names a backend would fold into one the gateway sets (gateway.headers),
        the path the backend will act on (gateway.paths), and a Host that the certificate chosen by
        SNI covers (RFC 9110 7.4 and 15.5.20: 421 when a connection is not authoritative)."""
        rt = self.rt
        screening = hdrs.screen_request(rt.header_policy, request.headers, request.connection)
        if screening is not None:
            rt.errors.info(screening.reason, screening.message, listener=rt.spec.name,
                           client=f"{self.client_ip}:{self.client_port}",
                           headers=[n.decode("latin-1") for n in screening.names])
            if screening.refuse:
                return self._refuse(ex, 400, screening.message, screening.reason)
        try:
            ex.forward_target = paths.normalize_target(rt.path_policy, request.target)
        except HTTPProtocolError as exc:
            rt.errors.info(exc.reason, str(exc), listener=rt.spec.name,
                           client=f"{self.client_ip}:{self.client_port}",
                           target=request.target[:512].decode("latin-1"))
            return self._refuse(ex, exc.status, str(exc), exc.reason)
        route_host = _route_host(request.host) if rt.sni_host_strict else None
        if route_host is not None:
            host = route_host.lower().decode("latin-1")
            ev = self.done_event
            names = ev.certificate_names if type(ev) is HandshakeDone else ()
            if not any(name_matches(n, host) for n in names):
                rt.errors.info("misdirected_request", "Host is not a name of the certificate the "
                               "client's SNI chose", listener=rt.spec.name,
                               client=f"{self.client_ip}:{self.client_port}", host=host,
                               server_name=ev.server_name if ev is not None else None)
                return self._refuse(ex, 421, "misdirected request: this connection does not "
                                    "serve that host", "misdirected_request")
        return False

    def _refuse(self, ex: Exchange, status: int, message: str, reason: str) -> bool:
        """Answer a request the gateway refuses by itself, and close: a 4xx for something a client
        sent on purpose ends the connection (nothing after it on the wire is trusted)."""
        ex.keep_alive = False
        ex.reason = reason
        self._respond_fixed(ex, status, message.encode("utf-8", "replace")[:200] + b"\n")
        return True

    def _refusal(self, action) -> Fixed | None:
        refusals = self.refusals
        if refusals is None:
            refusals = self.refusals = {}
        key = action.rule
        if key in refusals:
            return refusals[key]
        ev = self.done_event
        identity = ev.identity if type(ev) is HandshakeDone else None
        refusal = refusals[key] = action.access.refusal(identity)
        if refusal is not None:
            self.rt.errors.info(refusal.reason, "request refused by the rule's client-certificate "
                                "requirement", listener=self.rt.spec.name, rule=key,
                                client=f"{self.client_ip}:{self.client_port}",
                                subject=identity.subject if identity is not None else None)
        return refusal

    def _answer(self, ex: Exchange, fixed: Fixed) -> None:
        """A prebuilt response, for a fixed-response rule or a refusal."""
        self._after_answer(ex, ex.answer_payload(fixed))

    def _after_answer(self, ex: Exchange, payload: bytes) -> None:
        ex.bytes_out += len(payload)
        self._write(payload)
        if ex.keep_alive:
            # answered already; the request's own EndOfMessage (still queued) ends the exchange
            ex.discard = True
        else:
            ex.request_done = True
            self._finish(ex)

    def _forward(self, ex: Exchange, action: Forward, request: Request) -> None:
        group = self.rt.target_groups[action.target_group]
        ex.group = group
        target = group.pick()
        if target is None:
            self._no_target(ex, group)
            return
        ex.picked = target
        ex.target = target.label
        if request.expect_continue:
            self._write(CONTINUE)
        if request.chunked or request.content_length:
            self._arm(self.rt.spec.body_timeout_s, self._on_client_timer)
        conn = group.take_idle(target)
        if conn is not None:
            self._attach(ex, conn)
        else:
            ex.connecting = True
            self.loop.create_task(self._connect(ex, group, target))

    def _no_target(self, ex: Exchange, group) -> None:
        self._upstream_failed(ex, UpstreamError(
            f"no healthy target in group {group.name} ({len(group.targets)} target(s), "
            f"none available)", status=503, reason="no_healthy_target"), count=False)

    async def _connect(self, ex: Exchange, group, target) -> None:
        try:
            conn = await group.connect(target)
        except UpstreamError as exc:
            ex.connecting = False
            if self.current is ex and self.state is ConnState.OPEN:
                self._connect_failed(ex, group, target, exc)
            return
        ex.connecting = False
        if self.current is not ex or self.state is not ConnState.OPEN:
            conn.close()
            return
        self._attach(ex, conn)

    def _connect_failed(self, ex: Exchange, group, target, exc: UpstreamError) -> None:
        # Nothing was sent anywhere, and the body so far is still queued here: another target
        # may take the request (nginx's proxy_next_upstream error timeout).
        self.rt.errors.warning(exc.reason, str(exc), listener=self.rt.spec.name, target=exc.target,
                               target_group=group.name, client=f"{self.client_ip}:{self.client_port}")
        self.rt.observer.upstream(group.name, exc.target, time.monotonic() - ex.started, False)
        ex.tried = ex.tried + (target,)
        other = group.pick(ex.tried) if ex.body_queue is not None else None
        if other is None:
            self._upstream_failed(ex, exc, count=False, logged=True)
            return
        self._done_with_target(ex)
        ex.picked = other
        ex.target = other.label
        ex.connecting = True
        self.loop.create_task(self._connect(ex, group, other))

    def _attach(self, ex: Exchange, conn) -> None:
        rt = self.rt
        req = ex.request
        ex.upstream = conn
        conn.owner = self
        conn.paused = False
        conn.expect(req.method, ex.upgrade)
        head = ex.request_head(self.identity_lines, self.client_ip_b, self.client_port, rt.port,
                               rt.header_policy)
        queued = ex.body_queue or ()
        ex.body_queue = None
        conn.write(head + b"".join(queued) if queued else head)
        loop = self.loop
        now = conn.last_activity = loop.time()
        # one timer per client connection watches whichever exchange is current (see
        # _on_upstream_timer); it is armed anew only when none is armed soon enough
        limit = conn.group.read_timeout_s
        timer = self.upstream_timer
        if timer is None or timer.when() > now + limit:
            if timer is not None:
                timer.cancel()
            self.upstream_timer = loop.call_at(now + limit, self._on_upstream_timer)
        self._process()

    # -- upstream events (called by UpstreamConnection) ---------------------------------------------
    def upstream_event(self, conn, events) -> None:
        """What one read of the target produced (gateway.upstream: the connection parses)."""
        ex = self.current
        if ex is None or ex.upstream is not conn:
            conn.close()
            return
        if ex.tunnel:
            for event in events:
                if type(event) is UpstreamClosed:
                    # the target ended the tunnel: end the client's side the same way
                    ex.upstream = None
                    self._end_tunnel(ex, "upstream_closed")
                    return
                ex.bytes_out += len(event)
                self._write(event)
            return
        if events and type(events[-1]) is UpstreamClosed:
            self._upstream_lost(ex, conn, events)
            return
        conn.last_activity = self.loop.time()
        # what one read of the target produces (head, body, end) goes out as one TLS write
        self.batch = batch = []
        try:
            for event in events:
                kind = type(event)
                if kind is bytes:
                    # after the switch: the new protocol's first bytes, read with the 101
                    ex.bytes_out += len(event)
                    self._write(event)
                elif kind is UpstreamFailed:
                    exc = event.error
                    exc.target = ex.target
                    self._upstream_failed(ex, exc)
                    break
                elif not self._upstream_event(ex, conn, event) and not ex.tunnel:
                    break
        finally:
            self.batch = None
            if batch and self.state is not ConnState.CLOSED:
                self._write(b"".join(batch))

    def _upstream_event(self, ex: Exchange, conn, event) -> bool:
        if type(event) is Response:
            self._response_head(ex, event)
            return True
        if type(event) is EndOfMessage:
            if ex.response.status == 101:
                self._switch(ex, conn)
                return False
            if ex.chunked_out:
                ex.bytes_out += len(http1.LAST_CHUNK)
                self._write(http1.LAST_CHUNK)
            reusable = ex.response.keep_alive and ex.request_done and conn.reader is not None
            ex.upstream = None
            self.rt.observer.upstream(conn.group.name, ex.target, time.monotonic() - ex.started, True)
            self._cancel_ex_timer(ex)
            if reusable:
                conn.group.release(conn)
            else:
                conn.close()
            self._finish(ex)
            return False
        data = event.data
        if ex.chunked_out:
            data = http1.chunk(data)
        ex.bytes_out += len(data)
        self._write(data)
        return True

    def _response_head(self, ex: Exchange, resp: Response) -> None:
        self._write(ex.response_head(resp, self.state is ConnState.OPEN))

    def _switch(self, ex: Exchange, conn) -> None:
        """The target answered 101: from now on bytes pass through both ways, unparsed."""
        ex.tunnel = True
        self._cancel_ex_timer(ex)
        self.rt.observer.upstream(conn.group.name, ex.target, time.monotonic() - ex.started, True)
        pending = self.reader.take_raw()
        if pending:
            ex.bytes_in += len(pending)
            conn.write(pending)
        conn.last_activity = self.rx_at = self.loop.time()
        ex.timer = self.loop.call_later(self.rt.spec.idle_timeout_s, self._on_tunnel_timer, ex)

    def _on_tunnel_timer(self, ex: Exchange) -> None:
        ex.timer = None
        if self.current is not ex or ex.upstream is None:
            return
        limit = self.rt.spec.idle_timeout_s
        idle = self.loop.time() - max(self.rx_at, ex.upstream.last_activity)
        if idle < limit:
            ex.timer = self.loop.call_later(limit - idle, self._on_tunnel_timer, ex)
            return
        self._end_tunnel(ex, "idle_timeout")

    def _tunnel_client_done(self, ex: Exchange) -> bool:
        """The client ended its side of a tunnel: pass that on to the target and let it finish
        (True), or, where the target's transport cannot half-close, end both sides now."""
        conn = ex.upstream
        if conn is not None and conn.transport.can_write_eof():
            conn.transport.write_eof()
            return True
        self._end_tunnel(ex, "client_closed")
        return False

    def _end_tunnel(self, ex: Exchange, reason: str) -> None:
        self._cancel_ex_timer(ex)
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self._done_with_target(ex)
        self._access_log(ex)
        self.current = None
        self._close(reason)

    def _upstream_lost(self, ex: Exchange, conn, events) -> None:
        """The target's connection ended, after the events its end completed (if any)."""
        for event in events:
            if type(event) is UpstreamClosed:
                exc = event.exc
                break
            if not self._upstream_event(ex, conn, event):
                return
        ex.upstream = None
        if ex.response is None and not ex.head_sent:
            req = ex.request
            if conn.reused and not ex.retried and not req.chunked and not req.content_length:
                # a pooled connection the target closed as we sent on it (RFC 9112 9.3.1):
                # nothing of the request is lost, so send it again on a new connection
                ex.retried = True
                self._cancel_ex_timer(ex)
                ex.body_queue = []
                ex.connecting = True
                self.loop.create_task(self._connect(ex, conn.group, ex.picked))
                return
            if not conn.reused:
                conn.group.connection_failed(ex.picked, "upstream_closed")
        self._upstream_failed(ex, UpstreamError(
            f"{ex.target} closed the connection" + (f": {exc}" if exc else "")
            + (" before answering" if ex.response is None else " inside the response"),
            status=502, reason="upstream_closed", target=ex.target))

    def upstream_pause_writing(self) -> None:
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.paused = True
            if not self.read_paused and self.state is ConnState.OPEN:
                self.read_paused = True
                self.transport.pause_reading()

    def upstream_resume_writing(self) -> None:
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.paused = False
            ex.upstream.last_activity = self.loop.time()
        self._flow_in()

    def _on_upstream_timer(self) -> None:
        self.upstream_timer = None
        ex = self.current
        if ex is None or ex.tunnel or ex.upstream is None or self.state is not ConnState.OPEN:
            return      # no target being waited for: the next exchange arms it again
        conn = ex.upstream
        limit = conn.group.read_timeout_s
        loop = self.loop
        if self.write_paused or (not ex.request_done and not conn.paused):
            # the client is the side being waited for (slow to send the body or to take the
            # response): its own deadline (body_timeout_s) covers that
            self.upstream_timer = loop.call_later(limit, self._on_upstream_timer)
            return
        idle = loop.time() - conn.last_activity
        if idle < limit:
            self.upstream_timer = loop.call_later(limit - idle, self._on_upstream_timer)
            return
        self._upstream_failed(ex, UpstreamError(
            f"{ex.target} did not answer within {limit:g}s", status=504,
            reason="upstream_timeout", target=ex.target))

    def _upstream_failed(self, ex: Exchange, exc: UpstreamError, *, count: bool = True,
                         logged: bool = False) -> None:
        group = ex.group
        group_name = group.name if group is not None else ""
        if count:
            self.rt.observer.upstream(group_name, exc.target or ex.target,
                                      time.monotonic() - ex.started, False)
        if not logged:
            self.rt.errors.warning(exc.reason, str(exc), listener=self.rt.spec.name,
                                   target=exc.target or ex.target or None, target_group=group_name,
                                   client=f"{self.client_ip}:{self.client_port}")
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self._cancel_ex_timer(ex)
        if ex.head_sent or self.state is not ConnState.OPEN:
            # the response already started: the only honest signal left is an abrupt close
            self._drop_exchange(ex, exc.reason)
            return
        ex.keep_alive = False
        self._respond_fixed(ex, exc.status, UPSTREAM_ERROR_BODIES.get(exc.status, b"upstream error\n"))

    # -- responses ---------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        batch = self.batch
        if batch is not None:
            batch.append(data)
            return
        out = self.tls.send(data)
        if out:
            self.transport.write(out)

    def _flush(self) -> None:
        batch = self.batch
        if batch:
            data = b"".join(batch)
            batch.clear()
            out = self.tls.send(data)
            if out:
                self.transport.write(out)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.tx_at = self.loop.time()
        ex = self.current
        if ex is not None:
            if ex.upstream is not None and ex.upstream.transport is not None:
                ex.upstream.transport.pause_reading()
            if self.timer is None and self.state is ConnState.OPEN:
                self._arm(self.rt.spec.body_timeout_s, self._on_client_timer)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.tx_at = self.loop.time()
        ex = self.current
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.resume_reading()
        self._flow_in()

    def _respond_fixed(self, ex: Exchange, status: int, body: bytes) -> None:
        self._write(ex.error_payload(status, body))
        self._finish(ex)

    def _cancel_ex_timer(self, ex: Exchange) -> None:
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None

    def _done_with_target(self, ex: Exchange) -> None:
        ex.done_with_target()

    def _finish(self, ex: Exchange) -> None:
        self._done_with_target(ex)
        self._access_log(ex)
        self.current = None
        rt = self.rt
        if not ex.keep_alive or self.state is not ConnState.OPEN or not ex.request_done:
            self._close("response_complete")
            return
        pending = self.held is not None or self.reader.buffered_bytes > 0
        if self.peer_done and not pending:
            self._close("client_closed")
            return
        self._idle(rt.spec.idle_timeout_s)
        if pending:
            self._process()
            self._header_started()
        else:
            self._flow_in()

    # -- logs --------------------------------------------------------------------------------------
    def _access_log(self, ex: Exchange, aborted: bool = False) -> None:
        now = time.monotonic()
        rt = self.rt
        rt.observer.request(rt.spec.name, ex.status, now - ex.started)
        sink = rt.access_log
        if sink.enabled:
            sink.write(ex.access_record(rt.spec.name, f"{self.client_ip}:{self.client_port}",
                                        self.done_event, now, aborted))

    def _access_log_bare(self, status: int, reason: str, bytes_out: int = 0) -> None:
        sink = self.rt.access_log
        if sink.enabled:
            sink.write({"time": iso_now(), "listener": self.rt.spec.name,
                        "client": f"{self.client_ip}:{self.client_port}", "method": None,
                        "target": None, "status": status, "reason": reason,
                        "bytes_out": bytes_out})

    def _connection_log(self, event, reason: str) -> None:
        sink = self.rt.connection_log
        if not sink.enabled:
            return
        ident = getattr(event, "identity", None)
        done = type(event) is HandshakeDone
        status = getattr(event, "status", None)
        sink.write({
            "time": iso_now(),
            "client_ip": self.client_ip,
            "client_port": self.client_port,
            "listener": self.rt.spec.name,
            "listener_port": self.rt.port,
            "tls_protocol": event.protocol if done else None,
            "tls_cipher": event.cipher if done else None,
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

