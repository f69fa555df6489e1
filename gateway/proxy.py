"""GatewayProtocol: the one per-connection orchestrator (TLS -> HTTP -> rule -> action).

How this works: the asyncio protocol only moves bytes. `data_received` makes one call into the
sans-IO `TLSConnection`, writes what it returns, reacts to its event (handshake done or refused) and
feeds the plaintext to the sans-IO `RequestReader`. Requests are served one at a time, in order
(pipelined requests wait their turn in the reader): a rule picks the action; a fixed response is
one prebuilt write; a forward takes an upstream connection from the target group, writes a request
head built by `headers` (every identity header of every style stripped, the gateway's own added,
hop-by-hop headers dropped) and streams the body; the response streams back the same way.
Back-pressure is passed through in both directions.

The runtime (TLS contexts, trust stores, rules, target groups) is taken once per connection in
`connection_made`, so a reload never changes a live connection.

Deadlines: the TLS handshake, the first request's header section and each later one
(`header_timeout_s`), idle keep-alive (`idle_timeout_s`), and upstream connect/read.
"""
from __future__ import annotations

import asyncio
import enum
import os
import time

from . import headers as hdrs
from . import http1
from .errors import HTTPProtocolError, UpstreamError
from .http1 import EndOfMessage, Request, Response
from .logs import iso_now, validity
from .routes import Fixed, Forward, split_host, split_path
from .tls import HandshakeDone, HandshakeFailed, PeerClosed

# Pause reading from the client when this much parsed-but-unsent request data is queued
# (a pipelining client or a body arriving before the upstream connection is up).
READ_HIGH_WATER_BYTES = 262144
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUS = frozenset((204, 304))


class ConnState(enum.Enum):
    HANDSHAKE = 1
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


class Exchange:
    """One request/response through the gateway."""

    __slots__ = ("request", "action", "started", "upstream", "target", "body_queue", "request_done",
                 "response", "chunked_out", "keep_alive", "status", "bytes_out", "head_sent",
                 "connecting", "timer", "bytes_in", "discard")

    def __init__(self, request: Request, action) -> None:
        self.request = request
        self.action = action
        self.started = time.monotonic()
        self.upstream = None
        self.target = ""
        self.body_queue: list[bytes] | None = []
        self.request_done = False
        self.response: Response | None = None
        self.chunked_out = False
        self.keep_alive = request.keep_alive
        self.status = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.head_sent = False
        self.connecting = False
        self.discard = False        # the response is sent: drop the rest of the request
        self.timer: asyncio.TimerHandle | None = None


class GatewayProtocol(asyncio.Protocol):
    """Serves one client connection of one listener."""

    def __init__(self, runtime_ref, listener_name: str) -> None:
        self._runtime_ref = runtime_ref
        self._listener_name = listener_name

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.loop = asyncio.get_running_loop()
        runtime = self._runtime_ref()
        self.rt = rt = runtime.listeners[self._listener_name]
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.client_ip = str(peer[0])
        self.client_port = int(peer[1])
        self.client_ip_b = self.client_ip.encode()
        self.tls = rt.tls.connection()
        self.state = ConnState.HANDSHAKE
        self.reader = http1.RequestReader(rt.http_limits)
        self.current: Exchange | None = None
        self.held = None                 # a pipelined request waiting for the current exchange
        self.identity_lines = b""
        self.done_event = None
        self.requests = 0
        self.read_paused = False
        self.write_paused = False
        self.header_deadline_armed = False
        self.connected_at = time.monotonic()
        self.close_reason = ""
        self.draining = False
        self.peer_done = False       # the client sent close_notify: answer what is in flight, then close
        rt.open_connections += 1
        rt.protocols.add(self)
        rt.observer.connection_opened(rt.spec.name)
        self.timer = self.loop.call_later(rt.spec.handshake_timeout_s, self._on_handshake_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is ConnState.CLOSED:
            return
        self.state = ConnState.CLOSED
        self.rt.open_connections -= 1
        self.rt.protocols.discard(self)
        self.rt.observer.connection_closed(self.rt.spec.name)
        self._cancel_timer()
        ex = self.current
        if ex is not None:
            self._cancel_ex_timer(ex)
            if ex.upstream is not None:
                ex.upstream.close()     # the client is gone: do not leave the upstream streaming
            if ex.status == 0:
                ex.status = 499 if not ex.head_sent else ex.status
            self._access_log(ex, aborted=True)
            self.current = None
        if self.done_event is None:
            # the handshake never finished: log the attempt as a connection record too
            self._connection_log(None, self.close_reason or "closed_before_handshake")

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
        if notify:
            out = self.tls.close()
            if out:
                self.transport.write(out)
        self.state = ConnState.CLOSING
        self._cancel_timer()
        self.transport.close()

    def _abort(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        self.state = ConnState.CLOSING
        self._cancel_timer()
        self.transport.abort()

    # -- timers ------------------------------------------------------------------------------------
    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

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

    def _on_idle_timeout(self) -> None:
        self.timer = None
        self._close("idle_timeout")

    def _on_header_timeout(self) -> None:
        self.timer = None
        self._send_error(408, b"request header timeout\n", "header_timeout")

    # -- bytes in ----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.state is ConnState.CLOSED or self.state is ConnState.CLOSING:
            return
        out, plain, event = self.tls.receive(data)
        if out:
            self.transport.write(out)
        if event is not None:
            if type(event) is HandshakeDone:
                self._on_handshake(event)
            elif type(event) is HandshakeFailed:
                self._on_handshake_failed(event)
                return
            elif type(event) is PeerClosed:
                if plain:
                    self._feed(plain)
                self._peer_closed()
                return
        if plain:
            self._feed(plain)

    def eof_received(self) -> bool | None:
        # TCP FIN without close_notify: finish the response in flight if any, else close
        if self.state is ConnState.OPEN and self.current is not None and self.current.request_done:
            return True     # keep the transport half-open so the response can still be written
        return None

    def _peer_closed(self) -> None:
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
        self._arm(rt.spec.header_timeout_s, self._on_idle_timeout)

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
        rt.observer.handshake(rt.spec.name, rt.spec.mtls, "refused", event.status.value, False,
                              time.monotonic() - self.connected_at)
        self.state = ConnState.CLOSING
        self._cancel_timer()
        self.transport.close()

    def _feed(self, plain: bytes) -> None:
        try:
            self.reader.feed(plain)
        except HTTPProtocolError as exc:
            self._protocol_error(exc)
            return
        if self.current is None and not self.header_deadline_armed and not self.reader.idle:
            # bytes of a request have started to arrive: the header section now has a deadline
            self.header_deadline_armed = True
            self._arm(self.rt.spec.header_timeout_s, self._on_header_timeout)
        self._process()

    def _protocol_error(self, exc: HTTPProtocolError) -> None:
        self.rt.errors.info(exc.reason, str(exc) or "malformed request", listener=self.rt.spec.name,
                            client=f"{self.client_ip}:{self.client_port}", status=exc.status)
        ex = self.current
        if ex is not None and ex.head_sent:
            self._abort(exc.reason)
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
        self.transport.write(self.tls.send(http1.error_response(status, body, close=True)))
        if ex is not None:
            ex.status = status
            self._cancel_ex_timer(ex)
            self._access_log(ex)
            self.current = None
        else:
            self._access_log_bare(status, reason)
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
                elif ex.upstream is not None and ex.request.chunked:
                    ex.upstream.write(http1.LAST_CHUNK)
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
        self._cancel_timer()
        if request.upgrade is not None:
            # no protocol upgrades (WebSocket, h2c) are proxied: refuse plainly
            self.current = ex = Exchange(request, None)
            ex.keep_alive = False
            self._respond_fixed(ex, 501, b"protocol upgrade is not supported\n")
            return
        action = rt.routes.match(split_host(request.host), split_path(request.target))
        ex = Exchange(request, action)
        if self.draining:
            ex.keep_alive = False
        self.current = ex
        if type(action) is Fixed:
            has_body = request.chunked or (request.content_length or 0) > 0
            if has_body:
                ex.keep_alive = False       # do not read and discard an unbounded body
            if request.method == b"HEAD":
                payload = action.head_only if ex.keep_alive else action.closing
            else:
                payload = action.keep_alive if ex.keep_alive else action.closing
            ex.status = action.status
            ex.body_queue = None
            self._write(payload)
            if ex.keep_alive:
                # answered already; the request's own EndOfMessage (still queued) ends the exchange
                ex.discard = True
            else:
                ex.request_done = True
                self._finish(ex)
            return
        group = rt.target_groups[action.target_group]
        target = group.pick()
        ex.target = f"{target[0]}:{target[1]}"
        if request.expect_continue:
            self._write(_CONTINUE)
        conn = group.take_idle(target)
        if conn is not None:
            self._attach(ex, conn)
        else:
            ex.connecting = True
            self.loop.create_task(self._connect(ex, group, target))

    async def _connect(self, ex: Exchange, group, target) -> None:
        try:
            conn = await group.connect(target)
        except UpstreamError as exc:
            ex.connecting = False
            if self.current is ex and self.state is ConnState.OPEN:
                self._upstream_failed(ex, exc)
            return
        ex.connecting = False
        if self.current is not ex or self.state is not ConnState.OPEN:
            conn.close()
            return
        self._attach(ex, conn)

    def _attach(self, ex: Exchange, conn) -> None:
        rt = self.rt
        req = ex.request
        ex.upstream = conn
        conn.owner = self
        conn.paused = False
        conn.reader.expect(req.method)
        if req.chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        elif req.content_length is not None:
            framing = b"Content-Length: %d\r\n" % req.content_length
        else:
            framing = b""
        tokens = http1.connection_tokens(req.headers)
        if req.expect_continue:
            tokens = tokens | {b"expect"}
        head = hdrs.encode_request_head(req.method, req.target, req.headers, self.identity_lines,
                                        self.client_ip_b, self.client_port, rt.port, tokens, framing)
        queued = ex.body_queue or ()
        ex.body_queue = None
        conn.write(head + b"".join(queued) if queued else head)
        ex.timer = self.loop.call_later(conn.group.read_timeout_s, self._upstream_timeout, ex)
        self._process()

    # -- upstream events (called by UpstreamConnection) ---------------------------------------------
    def upstream_data(self, conn, data: bytes) -> None:
        ex = self.current
        if ex is None or ex.upstream is not conn:
            conn.close()
            return
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = self.loop.call_later(conn.group.read_timeout_s, self._upstream_timeout, ex)
        reader = conn.reader
        try:
            reader.feed(data)
            while True:
                event = reader.next_event()
                if event is None:
                    break
                if not self._upstream_event(ex, conn, event):
                    break
        except UpstreamError as exc:
            exc.target = ex.target
            self._upstream_failed(ex, exc)

    def _upstream_event(self, ex: Exchange, conn, event) -> bool:
        if type(event) is Response:
            self._response_head(ex, event)
            return True
        if type(event) is EndOfMessage:
            if ex.chunked_out:
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
        ex.bytes_out += len(data)
        self._write(http1.chunk(data) if ex.chunked_out else data)
        return True

    def _response_head(self, ex: Exchange, resp: Response) -> None:
        ex.response = resp
        ex.status = resp.status
        req = ex.request
        tokens = http1.connection_tokens(resp.headers)
        drop = hdrs.HOP_BY_HOP
        out = [(n, v) for n, v in resp.headers
               if n.lower() not in drop and (not tokens or n.lower() not in tokens)
               and n.lower() != b"content-length"]
        bodyless = req.method == b"HEAD" or resp.status in _NO_BODY_STATUS or resp.status < 200
        if bodyless:
            if resp.content_length is not None and req.method == b"HEAD":
                out.append((b"Content-Length", b"%d" % resp.content_length))
        elif resp.content_length is not None:
            out.append((b"Content-Length", b"%d" % resp.content_length))
        elif req.http_version == b"1.1":
            out.append((b"Transfer-Encoding", b"chunked"))
            ex.chunked_out = True
        else:
            ex.keep_alive = False       # close-delimited for an HTTP/1.0 client
        if self.state is not ConnState.OPEN:
            ex.keep_alive = False
        if not ex.keep_alive:
            out.append((b"Connection", b"close"))
        self._write(http1.response_head(resp.status, out, resp.reason or None))
        ex.head_sent = True

    def upstream_lost(self, conn, exc: Exception | None) -> None:
        ex = self.current
        if ex is None or ex.upstream is not conn:
            return
        try:
            conn.reader.feed_eof()
            event = conn.reader.next_event()
            while event is not None:
                if not self._upstream_event(ex, conn, event):
                    return
                event = conn.reader.next_event()
        except UpstreamError:
            pass
        ex.upstream = None
        self._upstream_failed(ex, UpstreamError(
            f"{ex.target} closed the connection" + (f": {exc}" if exc else ""),
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
        self._flow_in()

    def _upstream_timeout(self, ex: Exchange) -> None:
        ex.timer = None
        if self.current is ex:
            self._upstream_failed(ex, UpstreamError(f"{ex.target} did not answer in time", status=504,
                                                    reason="upstream_timeout", target=ex.target))

    def _upstream_failed(self, ex: Exchange, exc: UpstreamError) -> None:
        action = ex.action
        self.rt.observer.upstream(getattr(action, "target_group", ""), exc.target or ex.target,
                                  time.monotonic() - ex.started, False)
        self.rt.errors.warning(exc.reason, str(exc), listener=self.rt.spec.name, target=exc.target or ex.target,
                               client=f"{self.client_ip}:{self.client_port}")
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self._cancel_ex_timer(ex)
        if ex.head_sent or self.state is not ConnState.OPEN:
            # the response already started: the only honest signal left is an abrupt close
            self._access_log(ex, aborted=True)
            self.current = None
            self._abort(exc.reason)
            return
        ex.keep_alive = False
        self._respond_fixed(ex, exc.status, {502: b"bad gateway: the target failed\n",
                                             504: b"gateway timeout: the target did not answer\n"}.get(
                                                 exc.status, b"upstream error\n"))

    # -- responses ---------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        out = self.tls.send(data)
        if out:
            self.transport.write(out)

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.current
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.current
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.resume_reading()
        self._flow_in()

    def _respond_fixed(self, ex: Exchange, status: int, body: bytes) -> None:
        ex.status = status
        ex.body_queue = None
        has_body = ex.request.chunked or (ex.request.content_length or 0) > 0
        if has_body and not ex.request_done:
            ex.keep_alive = False
        self._write(http1.error_response(status, body, close=not ex.keep_alive))
        ex.request_done = True
        self._finish(ex)

    def _cancel_ex_timer(self, ex: Exchange) -> None:
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None

    def _finish(self, ex: Exchange) -> None:
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
        self._arm(rt.spec.idle_timeout_s, self._on_idle_timeout)
        if pending:
            self._process()
        else:
            self._flow_in()

    # -- logs --------------------------------------------------------------------------------------
    def _access_log(self, ex: Exchange, aborted: bool = False) -> None:
        self.rt.observer.request(self.rt.spec.name, ex.status, time.monotonic() - ex.started)
        sink = self.rt.access_log
        if not sink.enabled:
            return
        req = ex.request
        ev = self.done_event
        ident = ev.identity if ev is not None and type(ev) is HandshakeDone else None
        sink.write({
            "time": iso_now(),
            "listener": self.rt.spec.name,
            "client": f"{self.client_ip}:{self.client_port}",
            "method": req.method.decode("latin-1"),
            "target": req.target.decode("latin-1"),
            "status": ex.status,
            "bytes_in": ex.bytes_in,
            "bytes_out": ex.bytes_out,
            "duration_ms": round((time.monotonic() - ex.started) * 1000, 3),
            "upstream": ex.target or None,
            "rule": getattr(ex.action, "rule", None),
            "verify_status": ev.status.value if ev is not None and ev.status is not None else None,
            "subject": ident.subject if ident is not None else None,
            "aborted": aborted,
        })

    def _access_log_bare(self, status: int, reason: str) -> None:
        sink = self.rt.access_log
        if sink.enabled:
            sink.write({"time": iso_now(), "listener": self.rt.spec.name,
                        "client": f"{self.client_ip}:{self.client_port}", "method": None,
                        "target": None, "status": status, "reason": reason})

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
            "resumed": event.resumed if done else False,
            "leaf_client_cert_subject": ident.subject if ident is not None else None,
            "leaf_client_cert_validity": validity(ident) if ident is not None else None,
            "leaf_client_cert_serial_number": f"{ident.serial:X}" if ident is not None else None,
            "tls_verify_status": status.value if status is not None else ("NoCertificate" if done else None),
            "result": "accepted" if done else "refused",
            "reason": reason or None,
            "conn_trace_id": "TID_" + os.urandom(16).hex(),
        })
