"""The HTTP/2 side of the connection core: one connection's streams as exchanges, sans-IO.

How this works: when ALPN chose `h2`, the connection core (gateway.conn) hands every plaintext
arrival to this connection's `H2Session` instead of the HTTP/1.1 reader, and every upstream event,
back-pressure signal, deadline, drain and loss too. The framing is gateway.http2's (h2's connection
or its native twin, behind a flood guard); their events, alike by name and attribute, go to one
handler each through a table keyed by the event's type (`_HANDLERS`), so both twins take one code
path. Each stream's request then goes through what an HTTP/1.1 request goes through: the
same screening (header names a backend would fold into ours, underscore spellings included), the
same path normalisation, the same rules, per-rule certificate demands, identity block and access
record, through a `StreamExchange` (gateway.exchange's Exchange, plus the stream's send state). A
forward takes its own HTTP/1.1 connection of the target group's keep-alive pool; the request body
goes on as it arrives under HTTP/2 flow control (the client's window is opened again only as the
target takes the bytes), the response comes back as HEADERS and DATA under the client's windows,
and the target is read no faster than the client takes it (STREAM_HIGH_WATER_BYTES).

Downgrade safety (the H2.CL / H2.TE desync class, RFC 9113 8.2): a stream has its own upstream
connection while it is in flight; its head is built by `headers.encode_request_head` with the
gateway's own framing (http2.request_of), and a stream that ends in any way but cleanly closes its
upstream connection instead of returning it to the pool: a stream's bytes can never frame a second
request on the target's connection.

Limits: past a flood limit (http2.FrameGuard), a protocol error, or a response held up longer than
`h2_stall_timeout_s` by a window the client keeps at zero, the connection gets GOAWAY with the code
and is closed, the reason in the error log. Coalescing (RFC 9113 9.1.1): a stream whose
`:authority` is another name than the connection's SNI and not one of its certificate's gets 421.
Per-rule certificate demands cannot ask for a certificate after the handshake on HTTP/2 (RFC 8740):
they answer 403 as over HTTP/1.1. Drain sends GOAWAY naming the last stream taken and lets open
streams finish.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import h2.errors
import h2.events
import h2.exceptions

from . import headers as hdrs
from . import http1, paths
from .errors import HTTPProtocolError, UpstreamError
from .exchange import UPSTREAM_ERROR_BODIES, Exchange, UpstreamClosed, UpstreamFailed
from .http1 import Data, EndOfMessage, Request, Response
from .http2 import (NATIVE, FrameGuard, H2Refused, answer_block, block_size, connection,
                    goaway_frame, request_builder, response_fields)
from .routes import REDIRECT_NEEDS_HOST, Fixed, Forward, split_host, split_path
from .tls import HandshakeDone
from .tls import _name_matches as name_matches

if TYPE_CHECKING:
    from .conn import ConnectionCore
    from .upstream import Target, TargetGroup, UpstreamConnection

__all__ = ["H2Session", "StreamExchange", "STREAM_HIGH_WATER_BYTES"]

# response bytes waiting for the client's window, per stream, before the target is read no more
STREAM_HIGH_WATER_BYTES = 65536
HIGHEST_STREAM_ID = 2 ** 31 - 1
DRAIN_PING = b"drain\x00\x00\x00"
# how long the drain's PING may take to come back before the final GOAWAY goes anyway (h2's own
# client, for one, drops everything it has to send once it reads a GOAWAY)
DRAIN_PING_TIMEOUT_S = 1.0
# what sending on a stream raises once the client has closed or reset it: StreamClosedError while
# the framing remembers the stream, StreamIDTooLowError once it has forgotten it (a stream reset in
# the very arrival that opened it, a later stream opened behind it)
STREAM_GONE = (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError)
HOSTS_KEPT = 16     # Host values a connection remembers it may serve or not (H2Session.hosts)


class StreamExchange(Exchange):
    """An Exchange of one HTTP/2 stream: the request, the response's send state."""

    __slots__ = ("stream_id", "pending", "pending_bytes", "end_pending", "stalled_at",
                 "unacked", "read_paused", "closed", "body_bytes", "rx_at")

    def __init__(self, request: Request, started: float, stream_id: int) -> None:
        super().__init__(request, started)
        self.stream_id = stream_id
        self.pending: list[bytes] = []      # response DATA waiting for the client's window
        self.pending_bytes = 0
        self.end_pending = False            # END_STREAM goes after the pending data
        self.stalled_at = 0.0               # since when pending data waits on a zero window
        self.unacked = 0                    # request body bytes taken but not yet given back
        self.read_paused = False            # the target is not read (the client is behind)
        self.closed = False
        self.body_bytes = 0                 # request body so far (DATA payload)
        self.rx_at = started                # the request's last bytes from the client


class H2Session:
    """The HTTP/2 side of one client connection; its core (`core`) owns the TLS and the logs."""

    __slots__ = ("core", "conn", "request_of", "guard", "streams", "by_upstream", "goaway_sent", "last_stream",
                 "closing", "rt", "now", "draining", "drain_at", "waiting", "hosts", "max_requests",
                 "max_header_count", "max_body")

    def __init__(self, core: ConnectionCore, now: float) -> None:
        self.core = core
        rt = self.rt = core.rt
        spec = rt.spec
        self.conn = connection(spec.h2_max_concurrent_streams, spec.h2_header_table_size,
                               spec.max_header_bytes)
        self.request_of = request_builder()     # the twin the native switch chose, as the codec
        self.guard = FrameGuard(spec.h2_max_resets_per_s, spec.h2_max_control_frames_per_s,
                                spec.h2_max_empty_frames, spec.h2_max_continuation_frames)
        self.streams: dict[int, StreamExchange] = {}
        self.waiting: dict[int, StreamExchange] = {}    # streams whose response waits on a window
        self.by_upstream: dict[Any, StreamExchange] = {}
        self.goaway_sent = False
        self.last_stream = 0
        self.closing = False
        self.now = now          # the time of the call being served
        self.draining = False   # the first GOAWAY of a drain is out, its PING not yet answered
        self.drain_at = 0.0     # when the final GOAWAY goes even so (a client that never answers)
        # the Host values this connection may serve, by whether it may (coalescing, RFC 9113
        # 9.1.1; at most HOSTS_KEPT), and the runtime's limits a stream reads
        self.hosts: dict[bytes, bool] = {}
        self.max_requests = spec.max_requests_per_connection
        self.max_header_count = rt.http_limits.max_header_count
        self.max_body = rt.http_limits.max_body_bytes
        self._flush()

    # -- plumbing ------------------------------------------------------------------------------------
    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.core._write(data)

    def _schedule(self, now: float) -> None:
        """The core's upstream deadline serves this session's checks: the targets' read timeouts
        and the zero-window stall; idle when no stream is open."""
        core = self.core
        soonest = 0.0
        stall = self.rt.spec.h2_stall_timeout_s
        body = self.rt.spec.body_timeout_s
        for ex in self.streams.values():
            if ex.upstream is not None:
                d = ex.upstream.last_activity + ex.upstream.group.read_timeout_s
                soonest = d if not soonest or d < soonest else soonest
            if self._body_awaited(ex):
                d = ex.rx_at + body
                soonest = d if not soonest or d < soonest else soonest
            if ex.stalled_at:
                d = ex.stalled_at + stall
                soonest = d if not soonest or d < soonest else soonest
        if self.draining:
            d = self.drain_at
            soonest = d if not soonest or d < soonest else soonest
        core.up_deadline = soonest
        if self.streams:
            core.idle_deadline = 0.0
        elif not core.idle_deadline and not self.closing:
            core.idle_deadline = now + self.rt.spec.idle_timeout_s

    def _reset(self, stream_id: int, code: int) -> None:
        """RST_STREAM, unless the stream is closed already (the client's own reset, say, read in
        the same arrival as its request)."""
        try:
            self.conn.reset_stream(stream_id, code)
        except STREAM_GONE:
            pass

    def _acknowledge(self, n: int, stream_id: int) -> None:
        """Give the client back `n` bytes of window (the connection's, and the stream's while it
        is open)."""
        try:
            self.conn.acknowledge_received_data(n, stream_id)
        except STREAM_GONE:
            pass

    def _close_now(self, reason: str) -> None:
        """Close the connection after what h2 has still to send."""
        self.closing = True
        self._flush()
        self.core._close(reason)

    def _goaway(self, code: int, reason: str, message: str, level: str = "info") -> None:
        """GOAWAY with `code` and close the connection now (a limit passed, a protocol error)."""
        core = self.core
        if code != 0:
            core._error(level, reason, message, listener=self.rt.spec.name, client=core.client,
                        h2_error=h2.errors.ErrorCodes(code).name)
        self._send_goaway(code)
        for ex in list(self.streams.values()):
            self._abort_stream(ex, 0, reason, reset=False)
        self._close_now(reason)

    def _send_goaway(self, code: int) -> None:
        if not self.goaway_sent:
            self.goaway_sent = True
            self.core._write(self.conn.data_to_send() + goaway_frame(self.last_stream, code))

    # -- bytes from the client -----------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> None:
        self.now = now
        if self.closing:
            return
        reason = self.guard.scan(data, now)
        if reason is not None:
            self._goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, reason,
                         "HTTP/2 flood limit passed")
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._flush()       # h2's own GOAWAY for the error
            self.goaway_sent = True
            reason = "h2_protocol_error"
            if isinstance(exc, h2.exceptions.TooManyStreamsError):
                reason = "h2_too_many_streams"
            elif isinstance(exc, h2.exceptions.InvalidBodyLengthError):
                reason = "h2_content_length_mismatch"
            elif isinstance(exc, h2.exceptions.DenialOfServiceError):
                reason = "h2_header_list_too_large"
            self.core._error("info", reason, f"HTTP/2 protocol error: {exc}",
                             listener=self.rt.spec.name, client=self.core.client)
            for ex in list(self.streams.values()):
                self._abort_stream(ex, 0, reason, reset=False)
            self._close_now(reason)
            return
        handlers = _HANDLERS
        try:
            for event in events:
                if self.closing:
                    break
                handler = handlers.get(type(event))
                if handler is not None:
                    handler(self, event, now)
        except Exception as exc:  # noqa: BLE001 - fail closed: this connection, not the worker
            self._goaway(h2.errors.ErrorCodes.INTERNAL_ERROR, "h2_internal_error",
                         f"HTTP/2 session failed: {exc!r}", level="error")
            return
        self._flush()
        self._schedule(now)

    def _on_request(self, event: Any, now: float) -> None:
        self._request(event.stream_id, event.headers, event.stream_ended is not None, now)

    def _on_data(self, event: Any, now: float) -> None:
        self._data(event.stream_id, event.data, event.flow_controlled_length,
                   event.stream_ended is not None, now)

    def _on_reset(self, event: Any, now: float) -> None:
        ex = self.streams.get(event.stream_id)
        if ex is not None:
            self._abort_stream(ex, 0, "client_reset", reset=False)

    def _on_ping_ack(self, event: Any, now: float) -> None:
        if self.draining and event.ping_data == DRAIN_PING:
            self._drained()

    def _on_window(self, event: Any, now: float) -> None:
        self._send_pending(now)

    def _on_terminated(self, event: Any, now: float) -> None:
        # the client opens nothing more; what it opened may finish (RFC 9113 6.8)
        self._send_goaway(0)
        if not self.streams:
            self._close_now("client_closed")

    def _on_trailers(self, event: Any, now: float) -> None:
        # trailers are not passed on (HTTP/1.1 targets get a plain body); the stream ends
        ex = self.streams.get(event.stream_id)
        if ex is not None and event.stream_ended is not None:
            self._request_end(ex, now)

    # -- requests ------------------------------------------------------------------------------------
    def _request(self, stream_id: int, raw: Sequence[tuple[bytes, bytes]], ended: bool,
                 now: float) -> None:
        core = self.core
        rt = self.rt
        if self.goaway_sent and stream_id > self.last_stream:
            self._reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if stream_id > self.last_stream:
            self.last_stream = stream_id
        core.requests += 1
        core.idle_deadline = 0.0        # _schedule sets it again once no stream is open
        most = self.max_requests
        if most and core.requests >= most and not self.goaway_sent:
            # the connection's last request (nginx's keepalive_requests applies to HTTP/2 too):
            # GOAWAY naming this stream; it and those before it finish
            self._send_goaway(0)
        try:
            request = self.request_of(raw, ended, self.max_header_count)
        except H2Refused as exc:
            core._error("info", exc.reason, str(exc), listener=rt.spec.name, client=core.client,
                        stream=stream_id)
            self._reset(stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            core._access_log_bare(400, exc.reason)
            return
        ex = StreamExchange(request, now, stream_id)
        ex.request_done = ended
        self.streams[stream_id] = ex
        limit = self.max_body
        if limit is not None and request.content_length is not None and request.content_length > limit:
            self._answer_error(ex, 413, b"payload too large\n", "body_too_large", now)
            return
        host = _route_host(request.host)
        if self._screened_out(ex, request, host, now):
            return
        action = ex.action = rt.routes.decide(host, split_path(ex.forward_target), request.method,
                                              request.headers)
        if action.access is not None:
            refusal = core._refusal(action)
            if refusal is not None:
                self._answer(ex, refusal.keep_alive, now)
                return
        if type(action) is Forward:
            self._forward(ex, action, now)
        elif type(action) is Fixed:
            ex.status = action.status
            self._answer(ex, action.keep_alive, now)
        else:
            location = action.location(split_host(request.host), rt.port,  # type: ignore[union-attr]
                                       ex.forward_target)
            if location is None:
                self._answer(ex, REDIRECT_NEEDS_HOST.keep_alive, now)
                return
            self._answer(ex, action.response(location, True, False), now)  # type: ignore[union-attr]

    def _screened_out(self, ex: StreamExchange, request: Request, route_host: bytes | None,
                      now: float) -> bool:
        """gateway.conn's screening, per stream, plus the coalescing check of RFC 9113 9.1.1."""
        core = self.core
        rt = self.rt
        screening = hdrs.screen_request(rt.header_policy, request.headers, request.connection)
        if screening is not None:
            core._error("info", screening.reason, screening.message, listener=rt.spec.name,
                        client=core.client, headers=[n.decode("latin-1") for n in screening.names])
            if screening.refuse:
                ex.reason = screening.reason
                self._answer_error(ex, 400, screening.message.encode()[:200] + b"\n",
                                   screening.reason, now)
                return True
        try:
            ex.forward_target = paths.normalize_target(rt.path_policy, request.target)
        except HTTPProtocolError as exc:
            core._error("info", exc.reason, str(exc), listener=rt.spec.name, client=core.client,
                        target=request.target[:512].decode("latin-1"))
            ex.reason = exc.reason
            self._answer_error(ex, exc.status, str(exc).encode()[:200] + b"\n", exc.reason, now)
            return True
        if route_host is not None:
            served = self.hosts.get(route_host)
            if served is None:
                served = self._serves(route_host)
                if len(self.hosts) < HOSTS_KEPT:
                    self.hosts[route_host] = served
            if not served:
                ev = core.done_event
                core._error("info", "misdirected_request", "the connection's certificate does not "
                            "cover this :authority", listener=rt.spec.name, client=core.client,
                            host=route_host.lower().decode("latin-1"),
                            server_name=ev.server_name if type(ev) is HandshakeDone else None)
                ex.reason = "misdirected_request"
                self._answer_error(ex, 421, b"misdirected request: this connection does not "
                                   b"serve that host\n", "misdirected_request", now)
                return True
        return False

    def _serves(self, route_host: bytes) -> bool:
        """Whether this connection may serve a stream for `route_host`: another name than the
        one the connection was made for must be one its certificate covers (coalescing); with
        several certificates (`sni_host_strict`), every name must."""
        host = route_host.lower().decode("latin-1")
        ev = self.core.done_event
        names = ev.certificate_names if type(ev) is HandshakeDone else ()
        sni = ev.server_name if type(ev) is HandshakeDone else None
        coalesced = sni is not None and host != sni.lower().rstrip(".")
        return not (coalesced or self.rt.sni_host_strict) or any(name_matches(n, host) for n in names)

    def _forward(self, ex: StreamExchange, action: Forward, now: float) -> None:
        group = self.rt.target_groups[action.target_group]
        none = ex.pick_target(group)
        if none is not None:
            self._failed(ex, none, now, count=False)
            return
        target = ex.picked
        conn = group.take_idle(target)  # type: ignore[arg-type]  # picked above
        if conn is not None:
            self._attach(ex, conn, now)
        else:
            self.core._connect(ex, group, target)  # type: ignore[arg-type]

    def _attach(self, ex: StreamExchange, conn: UpstreamConnection, now: float) -> None:
        core = self.core
        rt = self.rt
        self.by_upstream[conn] = ex
        ex.send_head(conn, core.owner, core.identity_lines, core.client_ip_b, core.client_port,
                     rt.port, rt.header_policy, now, rt.signer)
        if ex.unacked:
            self._ack(ex)

    def _data(self, stream_id: int, data: bytes, flow: int, ended: bool, now: float) -> None:
        ex = self.streams.get(stream_id)
        if ex is None or ex.closed or ex.discard:
            # a stream answered already (or refused): the bytes are dropped, the window given back
            if flow:
                self._acknowledge(flow, stream_id)
            return
        ex.bytes_in += len(data)
        ex.body_bytes += len(data)
        ex.rx_at = now
        limit = self.rt.http_limits.max_body_bytes
        if limit is not None and ex.body_bytes > limit:
            if flow:
                self._acknowledge(flow, stream_id)
            if ex.head_sent:
                self._abort_stream(ex, h2.errors.ErrorCodes.CANCEL, "body_too_large")
            else:
                self._answer_error(ex, 413, b"payload too large\n", "body_too_large", now)
            return
        if data:
            piece = http1.chunk(data) if ex.request.chunked else data
            if ex.upstream is not None:
                ex.upstream.write(piece)
            elif ex.body_queue is not None:
                ex.body_queue.append(piece)
        ex.unacked += flow
        if ex.upstream is not None and not ex.upstream.paused:
            self._ack(ex)
        if ended:
            self._request_end(ex, now)

    def _ack(self, ex: StreamExchange) -> None:
        """Open the client's window again for what the target has taken."""
        n, ex.unacked = ex.unacked, 0
        if n and not ex.closed:
            self._acknowledge(n, ex.stream_id)

    def _request_end(self, ex: StreamExchange, now: float) -> None:
        ex.request_done = True
        if ex.discard:
            return
        if ex.request.chunked:
            if ex.upstream is not None:
                ex.upstream.write(http1.LAST_CHUNK)
            elif ex.body_queue is not None:
                ex.body_queue.append(http1.LAST_CHUNK)
        if ex.upstream is not None:
            ex.upstream.last_activity = now

    # -- answers made here ---------------------------------------------------------------------------
    def _answer(self, ex: StreamExchange, payload: bytes, now: float) -> None:
        """A whole HTTP/1.1 response the gateway made (a fixed response, a refusal, a redirect),
        sent as this stream's HEADERS and DATA."""
        status, block, size, body = answer_block(payload)
        ex.status = status
        ex.body_queue = None
        if ex.upstream is not None:
            self._drop_upstream(ex)
        ex.discard = True       # whatever more of the request comes is dropped
        if self._send_block(ex, block, size, not body or ex.request.method == b"HEAD"):
            self._queue(ex, body, end=True)
            self._send_stream(ex, now)

    def _answer_error(self, ex: StreamExchange, status: int, body: bytes, reason: str,
                      now: float) -> None:
        ex.reason = ex.reason or reason
        self._answer(ex, http1.error_response(status, body, close=False), now)

    def _send_head(self, ex: StreamExchange, status: int, fields: list[tuple[bytes, bytes]],
                   end: bool) -> None:
        block = [(b":status", b"%d" % status)]
        block.extend(fields)
        self._send_block(ex, block, block_size(block), end)

    def _send_block(self, ex: StreamExchange, block: list[tuple[bytes, bytes]], size: int,
                    end: bool) -> bool:
        """The response's HEADERS (`size`: its block_size); True when its DATA is still to come."""
        ex.head_sent = True
        ex.bytes_out += size
        try:
            self.conn.send_headers(ex.stream_id, block, end_stream=end)
        except STREAM_GONE:
            # the client reset it meanwhile (in this very arrival, after its request)
            self._abort_stream(ex, 0, "client_reset", reset=False)
            return False
        if end:
            ex.end_pending = False
            self._stream_done(ex)
            return False
        return True

    def _queue(self, ex: StreamExchange, data: bytes, end: bool = False) -> None:
        if data:
            ex.pending.append(data)
            ex.pending_bytes += len(data)
        if end:
            ex.end_pending = True

    def _send_pending(self, now: float) -> None:
        """A window opened: send what the streams waiting on one may now send."""
        for ex in list(self.waiting.values()):
            self._send_stream(ex, now)

    def _send_stream(self, ex: StreamExchange, now: float) -> None:
        """Send what the client's windows allow of one stream's response."""
        if ex.closed or (not ex.pending and not ex.end_pending):
            self.waiting.pop(ex.stream_id, None)
            return
        conn = self.conn
        sid = ex.stream_id
        while ex.pending:
            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if window <= 0:
                break
            chunk = ex.pending[0]
            if len(chunk) > window:
                ex.pending[0] = chunk[window:]
                chunk = chunk[:window]
            else:
                ex.pending.pop(0)
            ex.pending_bytes -= len(chunk)
            ex.bytes_out += len(chunk)
            last = not ex.pending and ex.end_pending
            try:
                conn.send_data(sid, chunk, end_stream=last)
            except STREAM_GONE:
                self._abort_stream(ex, 0, "client_reset", reset=False)
                return
            if last:
                # the last bytes carried END_STREAM: no empty frame of its own
                ex.end_pending = False
                self.waiting.pop(sid, None)
                self._stream_done(ex)
                return
        if ex.pending:
            self.waiting[sid] = ex
            if not ex.stalled_at:
                ex.stalled_at = now
        else:
            self.waiting.pop(sid, None)
            ex.stalled_at = 0.0
            if ex.end_pending:
                ex.end_pending = False
                try:
                    conn.end_stream(sid)
                except STREAM_GONE:
                    self._abort_stream(ex, 0, "client_reset", reset=False)
                    return
                self._stream_done(ex)
                return
        up = ex.upstream
        if up is not None:
            if ex.pending_bytes > STREAM_HIGH_WATER_BYTES and not ex.read_paused:
                ex.read_paused = True
                up.pause_reading()
            elif ex.pending_bytes <= STREAM_HIGH_WATER_BYTES and ex.read_paused:
                ex.read_paused = False
                up.resume_reading()

    def _drop_upstream(self, ex: StreamExchange) -> None:
        """Close the stream's target connection, never to be pooled: a response may still be
        coming on it, or a request body still be owed."""
        if ex.upstream is not None:
            self.by_upstream.pop(ex.upstream, None)
            ex.upstream.close()
            ex.upstream = None

    def _forget(self, ex: StreamExchange) -> None:
        """The stream is over: no longer served, its target connection and target let go."""
        ex.closed = True
        self.streams.pop(ex.stream_id, None)
        self.waiting.pop(ex.stream_id, None)
        self._drop_upstream(ex)
        ex.done_with_target()

    def _stream_done(self, ex: StreamExchange) -> None:
        """The response is complete: the stream's record, and the stream forgotten."""
        if ex.closed:
            return
        self._forget(ex)
        self.core._access_log(ex, self.now)
        if not ex.request_done:
            # the response is complete and the client is still sending: it need not (RFC 9113
            # 8.1: NO_ERROR reset)
            self._reset(ex.stream_id, h2.errors.ErrorCodes.NO_ERROR)
        if self.goaway_sent and not self.streams and not self.closing:
            self._close_now("shutdown")

    def _abort_stream(self, ex: StreamExchange, code: int, reason: str, reset: bool = True) -> None:
        """End a stream that cannot finish: its target's connection closed, RST_STREAM, logged
        aborted."""
        if ex.closed:
            return
        self._forget(ex)
        if ex.status == 0:
            ex.status = 499
        ex.reason = ex.reason or reason
        self.core._access_log(ex, self.now, aborted=True)
        if reset:
            self._reset(ex.stream_id, code)
        if self.goaway_sent and not self.streams and not self.closing:
            self._close_now("shutdown")

    # -- the targets ---------------------------------------------------------------------------------
    def upstream_connected(self, ex: StreamExchange, conn: UpstreamConnection, now: float) -> None:
        self.now = now
        ex.connecting = False
        if ex.closed or self.closing or ex.discard:
            conn.close()
            return
        self._attach(ex, conn, now)
        self._flush()
        self._schedule(now)

    def upstream_connect_failed(self, ex: StreamExchange, group: TargetGroup, target: Target,
                                exc: UpstreamError, now: float) -> None:
        self.now = now
        ex.connecting = False
        if ex.closed or self.closing:
            return
        core = self.core
        core._error("warning", exc.reason, str(exc), listener=self.rt.spec.name,
                    target=exc.target, target_group=group.name, client=core.client)
        self.rt.observer.upstream(group.name, exc.target, now - ex.started, False)
        other = ex.retarget(group, target)
        if other is None:
            self._failed(ex, exc, now, count=False, logged=True)
        else:
            core._connect(ex, group, other)
        self._flush()
        self._schedule(now)

    def upstream_event(self, conn: UpstreamConnection, events: Sequence[Any], now: float) -> None:
        self.now = now
        ex = self.by_upstream.get(conn)
        if ex is None or ex.closed:
            conn.close()
            return
        conn.last_activity = now
        for event in events:
            if not self._upstream_event(ex, conn, event, now):
                break
        self._send_stream(ex, now)
        self._flush()
        self._schedule(now)

    def _upstream_event(self, ex: StreamExchange, conn: UpstreamConnection, event: Any,
                        now: float) -> bool:
        kind = type(event)
        if kind is Data:
            self._queue(ex, event.data)
            return True
        if kind is Response:
            self._response_head(ex, event)
            return True
        if kind is EndOfMessage:
            reusable = (ex.response is not None and ex.response.keep_alive and ex.request_done
                        and conn.reader is not None)
            self.by_upstream.pop(conn, None)
            ex.upstream = None
            self.rt.observer.upstream(conn.group.name, ex.target, now - ex.started, True)
            if reusable:
                conn.group.release(conn)
            else:
                conn.close()
            if ex.head_sent:
                self._queue(ex, b"", end=True)
            return False
        if kind is UpstreamFailed:
            exc = event.error
            exc.target = ex.target
            self._failed(ex, exc, now)
            return False
        if kind is UpstreamClosed:
            self.by_upstream.pop(conn, None)
            ex.upstream = None
            self._failed(ex, UpstreamError(
                f"{ex.target} closed the connection" + (f": {event.exc}" if event.exc else "")
                + (" before answering" if ex.response is None else " inside the response"),
                status=502, reason="upstream_closed", target=ex.target), now)
            return False
        return True

    def _response_head(self, ex: StreamExchange, resp: Response) -> None:
        ex.response = resp
        ex.status = resp.status
        if ex.picked is not None:
            ex.picked.failures = 0
        if resp.status < 200:
            return      # an interim response is not passed on (1xx over HTTP/2 are optional)
        fields = response_fields(resp, ex.request.method)
        self._send_head(ex, resp.status, fields, end=False)

    def _failed(self, ex: StreamExchange, exc: UpstreamError, now: float, *, count: bool = True,
                logged: bool = False) -> None:
        group = ex.group
        group_name = group.name if group is not None else ""
        core = self.core
        if count:
            self.rt.observer.upstream(group_name, exc.target or ex.target, now - ex.started, False)
        if not logged:
            core._error("warning", exc.reason, str(exc), listener=self.rt.spec.name,
                        target=exc.target or ex.target or None, target_group=group_name,
                        client=core.client)
        self._drop_upstream(ex)
        if ex.head_sent:
            self._abort_stream(ex, h2.errors.ErrorCodes.INTERNAL_ERROR, exc.reason)
            return
        ex.reason = exc.reason
        self._answer(ex, http1.error_response(
            exc.status, UPSTREAM_ERROR_BODIES.get(exc.status, b"upstream error\n"), close=False),
            now)

    def upstream_pause_writing(self, now: float) -> None:
        for ex in self.streams.values():
            if ex.upstream is not None:
                ex.upstream.paused = True

    def upstream_resume_writing(self, now: float) -> None:
        for ex in list(self.streams.values()):
            up = ex.upstream
            if up is not None and up.paused:
                up.paused = False
                up.last_activity = now
                self._ack(ex)
        self._flush()

    # -- the client's side ---------------------------------------------------------------------------
    def pause_writing(self, now: float) -> None:
        for ex in self.streams.values():
            if ex.upstream is not None and not ex.read_paused:
                ex.read_paused = True
                ex.upstream.pause_reading()

    def resume_writing(self, now: float) -> None:
        for ex in self.streams.values():
            if ex.upstream is not None and ex.read_paused and ex.pending_bytes <= STREAM_HIGH_WATER_BYTES:
                ex.read_paused = False
                ex.upstream.resume_reading()

    def _body_awaited(self, ex: StreamExchange) -> bool:
        """The stream's request body is the client's to send (not held back by the gateway,
        whose window it waits on while the target is slow to take the bytes)."""
        if ex.request_done or ex.discard or ex.closed:
            return False
        up = ex.upstream
        return not (ex.unacked and (up is None or up.paused))

    def timeout(self, now: float) -> None:
        """The core's upstream deadline came: targets too slow, responses stalled on a window,
        request bodies stalled."""
        self.now = now
        if self.draining and now >= self.drain_at:
            self._drained()
            if self.closing:
                return
        stall = self.rt.spec.h2_stall_timeout_s
        for ex in list(self.streams.values()):
            if ex.stalled_at and now - ex.stalled_at >= stall:
                self._goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "h2_window_stall",
                             f"the client kept its HTTP/2 window closed for {stall:g}s")
                return
            body = self.rt.spec.body_timeout_s
            if self._body_awaited(ex) and now - ex.rx_at >= body:
                core = self.core
                core._error("info", "body_timeout", f"no request body bytes for {body:g}s",
                            listener=self.rt.spec.name, client=core.client,
                            target=ex.target or None, stream=ex.stream_id)
                if ex.head_sent:
                    ex.status = ex.status or 408
                    self._abort_stream(ex, h2.errors.ErrorCodes.CANCEL, "body_timeout")
                else:
                    self._answer_error(ex, 408, b"request timeout: the request body stalled\n",
                                       "body_timeout", now)
                continue
            up = ex.upstream
            if up is None or up.paused or ex.read_paused:
                continue
            limit = up.group.read_timeout_s
            if now - up.last_activity >= limit:
                self._failed(ex, UpstreamError(f"{ex.target} did not answer within {limit:g}s",
                                               status=504, reason="upstream_timeout",
                                               target=ex.target), now)
        self._send_pending(now)
        self._flush()
        self._schedule(now)

    def drain(self, now: float) -> None:
        """Shutdown or reload, in two steps (RFC 9113 6.8): a PING and a GOAWAY naming the
        highest stream id; once the PING comes back, every stream the client sent before it is here,
        and a second GOAWAY names the last one taken. Open streams finish, then the connection
        closes."""
        self.now = now
        if self.closing or self.draining or self.goaway_sent:
            return
        self.draining = True
        self.drain_at = now + DRAIN_PING_TIMEOUT_S
        # the PING first: a client that stops reading at a GOAWAY (h2's own client state
        # machine does) has answered it already
        self.conn.ping(DRAIN_PING)
        self.core._write(self.conn.data_to_send() + goaway_frame(HIGHEST_STREAM_ID, 0))
        self._schedule(now)

    def _drained(self) -> None:
        """The drain's PING came back: the final GOAWAY."""
        self.draining = False
        self._send_goaway(0)
        if not self.streams:
            self._close_now("shutdown")

    def idle_close(self) -> None:
        """The idle deadline came with no stream open: GOAWAY, then the core closes."""
        self._send_goaway(0)
        self.closing = True

    def peer_closed(self, now: float) -> None:
        """close_notify from the client: nothing more comes; finish what is open."""
        self.now = now
        for ex in list(self.streams.values()):
            if not ex.request_done:
                self._abort_stream(ex, h2.errors.ErrorCodes.CANCEL, "client_closed")
        if not self.streams:
            self._close_now("client_closed")

    def has_streams(self) -> bool:
        return bool(self.streams)

    def lost(self, now: float) -> None:
        self.now = now
        self.closing = True
        for ex in list(self.streams.values()):
            self._abort_stream(ex, 0, "client_gone", reset=False)


# what each event of either connection (h2's, gateway._http2_c's) is handled by; StreamEnded is
# handled with the DATA or HEADERS that carried END_STREAM, the rest are not the session's concern
_HANDLERS: dict[type, Callable[[H2Session, Any, float], None]] = {
    h2.events.RequestReceived: H2Session._on_request,
    h2.events.DataReceived: H2Session._on_data,
    h2.events.StreamReset: H2Session._on_reset,
    h2.events.PingAckReceived: H2Session._on_ping_ack,
    h2.events.WindowUpdated: H2Session._on_window,
    h2.events.RemoteSettingsChanged: H2Session._on_window,
    h2.events.ConnectionTerminated: H2Session._on_terminated,
    h2.events.TrailersReceived: H2Session._on_trailers,
}
if NATIVE is not None:
    _HANDLERS.update({
        NATIVE.RequestReceived: H2Session._on_request,
        NATIVE.DataReceived: H2Session._on_data,
        NATIVE.StreamReset: H2Session._on_reset,
        NATIVE.PingAckReceived: H2Session._on_ping_ack,
        NATIVE.WindowUpdated: H2Session._on_window,
        NATIVE.RemoteSettingsChanged: H2Session._on_window,
        NATIVE.ConnectionTerminated: H2Session._on_terminated,
        NATIVE.TrailersReceived: H2Session._on_trailers,
    })


def _route_host(host: bytes | None) -> bytes | None:
    host = split_host(host)
    return host.rstrip(b".") or None if host is not None else None

