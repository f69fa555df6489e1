"""Exchange: one request and its response through the gateway.

How this works: the connection makes an `Exchange` for every request the reader surfaces and keeps
it as its `current` one until the response is complete. The exchange holds the request, the action
the rules chose, where the response stands (head sent, chunked, keep-alive), the upstream
connection and target it holds, and the counters of its access record. It does no I/O: its
methods turn what happened into bytes for the connection to write (`answer_payload` for a prebuilt
fixed response or refusal, `error_payload`, `request_head` for the target, `response_head` for the
client) and into the one access record (`access_record`) the connection logs when it ends. Phases
are plain fields rather than a state enum: they are independent (a body may still be arriving
while the response streams) and each is one attribute read on the hot path.

Memory: one exists only while a request is in flight, and only slots; an idle keep-alive
connection holds none.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import headers as hdrs
from . import http1
from .errors import UpstreamError
from .http1 import Request, Response
from .logs import iso_now
from .tls import HandshakeDone

if TYPE_CHECKING:
    from .headers import HeaderPolicy
    from .routes import Fixed, Forward, RedirectAction
    from .tls import HandshakeFailed
    from .upstream import Target, TargetGroup, UpstreamConnection

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
NO_BODY_STATUS = frozenset((204, 304))
UPSTREAM_ERROR_BODIES = {
    502: b"bad gateway: the target failed\n",
    503: b"service unavailable: no healthy target\n",
    504: b"gateway timeout: the target did not answer\n",
}
UPGRADE_REFUSED = b"protocol upgrade is not supported here\n"
# response fields never passed on as received: hop-by-hop ones, and the length (re-framed here)
RESPONSE_DROP = hdrs.HOP_BY_HOP | {b"content-length"}

__all__ = ["Exchange", "UpstreamClosed", "UpstreamFailed", "header_value", "CONTINUE",
           "UPSTREAM_ERROR_BODIES", "UPGRADE_REFUSED"]


# What an upstream connection reports besides the response's own events (http1.Response, Data,
# EndOfMessage, and raw bytes after a switch); here, not in gateway.upstream, so that the sans-IO
# connection core can tell them apart without importing asyncio.
class UpstreamClosed:
    """Event: the connection to the target ended (`exc`: why, or None for a clean close)."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception | None) -> None:
        self.exc = exc


class UpstreamFailed:
    """Event: the target broke HTTP (`error`: the UpstreamError); nothing more is parsed."""

    __slots__ = ("error",)

    def __init__(self, error: UpstreamError) -> None:
        self.error = error


class Exchange:
    """One request/response through the gateway."""

    __slots__ = ("request", "action", "started", "upstream", "target", "body_queue", "request_done",
                 "response", "chunked_out", "keep_alive", "status", "bytes_out", "head_sent",
                 "connecting", "bytes_in", "discard", "group", "picked", "tried",
                 "retried", "upgrade", "tunnel", "forward_target", "reason")

    def __init__(self, request: Request, started: float) -> None:
        self.request = request
        self.action: Forward | Fixed | RedirectAction | None = None
        self.started = started      # monotonic seconds, for the duration in logs and metrics
        self.upstream: UpstreamConnection | None = None
        self.target = ""            # label of the target, for logs
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
        self.group: TargetGroup | None = None   # the TargetGroup of a forward
        self.picked: Target | None = None       # the Target counted as outstanding for this exchange
        self.tried: tuple[Target, ...] = ()     # targets whose connect failed, not to be picked again
        self.retried = False
        self.upgrade = False        # the request may switch protocols (an allowed Upgrade)
        self.tunnel = False         # it did: bytes now pass through both ways
        # the request-target rules match and the target receives: the normalised path, the query
        # as sent (gateway.paths)
        self.forward_target = request.target
        self.reason = ""            # why the gateway refused the request itself, for the access log

    # -- answers made here -------------------------------------------------------------------------
    def has_body(self) -> bool:
        req = self.request
        return req.chunked or (req.content_length or 0) > 0

    def answer_keeps(self) -> bool:
        """Whether the connection stays open after answering without reading the body."""
        if self.has_body():
            self.keep_alive = False     # do not read and discard an unbounded body
        return self.keep_alive

    def answer_payload(self, fixed: Fixed) -> bytes:
        """The prebuilt bytes of a fixed response or refusal (`routes.Fixed`) for this request."""
        keep = self.answer_keeps()
        req = self.request
        if not keep:
            payload = fixed.closing
        elif req.http_version == b"1.0":
            payload = fixed.head_only_10 if req.method == b"HEAD" else fixed.keep_alive_10
        else:
            payload = fixed.head_only if req.method == b"HEAD" else fixed.keep_alive
        self.status = fixed.status
        self.body_queue = None
        return payload

    def error_payload(self, status: int, body: bytes) -> bytes:
        """A short error answer; the request counts as done (its rest is not read)."""
        self.status = status
        self.body_queue = None
        if self.has_body() and not self.request_done:
            self.keep_alive = False
        payload = http1.error_response(status, body, close=not self.keep_alive)
        self.bytes_out += len(payload)
        self.request_done = True
        return payload

    # -- a forward ---------------------------------------------------------------------------------
    def request_head(self, identity_lines: bytes, client_ip_b: bytes, client_port: int,
                     listener_port: int, policy: HeaderPolicy | None) -> bytes:
        """The head sent to the target: identity headers of every style stripped, the gateway's
        own added, hop-by-hop fields dropped, the body re-framed (gateway.headers)."""
        req = self.request
        if req.chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        elif req.content_length is not None:
            framing = b"Content-Length: %d\r\n" % req.content_length
        else:
            framing = b""
        tokens = req.connection
        if req.expect_continue:
            tokens = tokens | {b"expect"}
        if self.upgrade:
            framing += b"Connection: upgrade\r\nUpgrade: " + header_value(req.headers, b"upgrade") + b"\r\n"
        return hdrs.encode_request_head(req.method, self.forward_target, req.headers, identity_lines,
                                        client_ip_b, client_port, listener_port, tokens, framing,
                                        policy)

    def response_head(self, resp: Response, open_: bool) -> bytes:
        """The head the client gets for the target's response; `open_`: the client connection may
        stay open afterwards (it is not closing)."""
        self.response = resp
        self.status = resp.status
        # the target answered: its run of connection failures is over (a response comes only on
        # the connection to the target picked for this exchange, so `picked` is set)
        self.picked.failures = 0    # type: ignore[union-attr]
        req = self.request
        tokens = resp.connection
        drop = RESPONSE_DROP | tokens if tokens else RESPONSE_DROP
        line = http1.status_line(resp.status, resp.reason or None)
        out: list[tuple[bytes, bytes]] = []     # what the gateway adds after the target's fields
        if resp.status == 101:
            # the switch the client asked for (RFC 9110 7.8); Upgrade names the new protocol
            out.append((b"Connection", b"upgrade"))
            out.append((b"Upgrade", header_value(resp.headers, b"upgrade")))
            head = hdrs.encode_response_head(line, resp.headers, drop, out)
            self.bytes_out += len(head)
            self.head_sent = True
            return head
        bodyless = req.method == b"HEAD" or resp.status in NO_BODY_STATUS or resp.status < 200
        if bodyless:
            if resp.content_length is not None and req.method == b"HEAD":
                out.append((b"Content-Length", b"%d" % resp.content_length))
        elif resp.content_length is not None:
            out.append((b"Content-Length", b"%d" % resp.content_length))
        elif req.http_version == b"1.1":
            out.append((b"Transfer-Encoding", b"chunked"))
            self.chunked_out = True
        else:
            self.keep_alive = False     # close-delimited for an HTTP/1.0 client
        if not open_:
            self.keep_alive = False
        if not self.keep_alive:
            out.append((b"Connection", b"close"))
        elif req.http_version == b"1.0":
            out.append((b"Connection", b"keep-alive"))      # RFC 9112 9.3: confirm it
        head = hdrs.encode_response_head(line, resp.headers, drop, out)
        self.bytes_out += len(head)
        self.head_sent = True
        return head

    def pick_target(self, group: TargetGroup) -> UpstreamError | None:
        """Pick the target of a forward from `group` (the exchange now counts as outstanding
        there); the 503 to answer when none is available."""
        self.group = group
        target = group.pick()
        if target is None:
            return UpstreamError(
                f"no healthy target in group {group.name} ({len(group.targets)} target(s), "
                f"none available)", status=503, reason="no_healthy_target")
        self.picked = target
        self.target = target.label
        return None

    def retarget(self, group: TargetGroup, failed: Target) -> Target | None:
        """After `failed` refused the connection: another target of `group` to try, when nothing
        of the request has gone anywhere yet (its body is still queued here: nginx's
        proxy_next_upstream error timeout), else None."""
        self.tried = self.tried + (failed,)
        other = group.pick(self.tried) if self.body_queue is not None else None
        if other is not None:
            self.done_with_target()
            self.picked = other
            self.target = other.label
        return other

    def send_head(self, conn: UpstreamConnection, owner: Any, identity_lines: bytes,
                  client_ip_b: bytes, client_port: int, listener_port: int,
                  policy: HeaderPolicy | None, now: float, signer: Any = None) -> None:
        """Take `conn` for this exchange (its events go to `owner`) and write the request head,
        with what of the body is queued already. With the listener's `signer`
        (gateway.signature), the identity lines get their signature over this request."""
        if signer is not None:
            req = self.request
            identity_lines = identity_lines + signer.sign_lines(
                identity_lines, req.method, self.forward_target, (req.host or b"").lower())
        self.upstream = conn
        conn.owner = owner
        conn.paused = False
        conn.expect(self.request.method, self.upgrade)
        head = self.request_head(identity_lines, client_ip_b, client_port, listener_port, policy)
        queued = self.body_queue or ()
        self.body_queue = None
        conn.write(head + b"".join(queued) if queued else head)
        conn.last_activity = now

    def done_with_target(self) -> None:
        """The target picked for this exchange no longer counts it as outstanding."""
        target = self.picked
        if target is not None:
            self.picked = None
            self.group.done(target)     # type: ignore[union-attr]  # picked from this group

    # -- the record --------------------------------------------------------------------------------
    def access_record(self, listener: str, client: str,
                      done_event: HandshakeDone | HandshakeFailed | None, now: float,
                      aborted: bool) -> dict[str, Any]:
        """The access-log line of this exchange."""
        req = self.request
        ev = done_event
        ident = ev.identity if ev is not None and type(ev) is HandshakeDone else None
        return {
            "time": iso_now(),
            "listener": listener,
            "client": client,
            "method": req.method.decode("latin-1"),
            "target": req.target.decode("latin-1"),
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration_ms": round((now - self.started) * 1000, 3),
            "upstream": self.target or None,
            "rule": getattr(self.action, "rule", None),
            "verify_status": ev.status.value if ev is not None and ev.status is not None else None,
            "subject": ident.subject if ident is not None else None,
            "aborted": aborted,
            "reason": self.reason or None,
        }


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The first value of a header (by lowercase name), b"" when absent."""
    n = len(name)
    for field, value in headers:
        if len(field) == n and field.lower() == name:
            return value
    return b""
