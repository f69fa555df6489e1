"""Target groups: balancing, health, keep-alive pools of HTTP/1.1 connections, optional TLS.

How this works: a `TargetGroup` (one per worker, shared by its listeners) holds its `Target`s and
hands one out per exchange with `pick()`: round robin, or the target with the fewest outstanding
requests (ties broken in turn), among the *available* ones: healthy by the active checks and not
ejected. The available set is a tuple rebuilt only when a target's state changes, so a pick is a
few attribute reads. When none is available, `pick()` returns None and the caller answers 503.

Health. Active checks (`health_check`): each target is probed on its own schedule (`GET path`, a
new connection each time, `Connection: close`); `unhealthy_threshold` failures in a row take it
out, `healthy_threshold` passes bring it back. The first probe runs at start and decides at once,
so a target that is down at start is out within `timeout_s`. Passive ejection: `connect()` and the
caller count consecutive connection failures per target (refused, reset, TLS failure, closed
before answering); at `ejection_failures` the target is out for `ejection_duration_s`, or until a
health check passes (Envoy's outlier detection does the same). Every change of state is one line
in the error log, naming the group, the target and the reason, and is reported to the observer.

Pools: an exchange takes an idle pooled connection of its target when one is alive, else opens a
new one (bounded by `connect_timeout_s`, TLS handshake included). The connection parses what it
receives with its own `http1.ResponseReader` (the parser belongs to the side that receives the
bytes) and hands its owner (the client connection holding it) the events of each read as one
list, `owner.upstream_event(conn, events)`: `Response`, `Data`, `EndOfMessage`, then, after a 101
it was allowed to see, the new protocol's bytes as plain `bytes`; `UpstreamFailed(error)` when
the target broke HTTP, `UpstreamClosed(exc)` when the connection ended (after what the end of
the stream completed, a close-delimited body). One list per read lets the owner send what one
read produced as one write. When the exchange ends cleanly and both sides allow
keep-alive, the connection goes back to its target's pool (at most `max_idle_per_target`); idle
connections close after `idle_timeout_s` or when the peer closes them. Flow control is passed
through both ways.

TLS to targets uses the stdlib `ssl` module (this is a client connection): the targets'
certificates are verified against the group's CA bundle for the configured server name (or the
target's host), and the gateway may present its own client certificate.
"""
from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

from .spec import (DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_EJECTION_DURATION_S,
                   DEFAULT_EJECTION_FAILURES, DEFAULT_MAX_IDLE_PER_TARGET,
                   DEFAULT_POOL_IDLE_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S)
from .errors import UpstreamError
from .exchange import UpstreamClosed, UpstreamFailed
from .http1 import EndOfMessage, Response, response_reader
from .metrics import NULL_OBSERVER

__all__ = ["Target", "TargetGroup", "UpstreamConnection", "UpstreamClosed", "UpstreamFailed",
           "client_context", "DEFAULT_POOL_IDLE_TIMEOUT_S"]

HEALTH_CHECK_USER_AGENT = b"mtls-gateway-health-check"


class Target:
    """One backend address of a group, with its pool, load and health."""

    __slots__ = ("host", "port", "label", "server_hostname", "idle", "outstanding", "healthy",
                 "passes", "fails", "failures", "ejected", "_uneject", "_probe_task")

    def __init__(self, host: str, port: int, server_hostname: str | None) -> None:
        self.host = host
        self.port = port
        self.label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.server_hostname = server_hostname
        self.idle: deque[UpstreamConnection] = deque()
        self.outstanding = 0        # exchanges holding this target now
        self.healthy = True         # by the active checks (True until a check says otherwise)
        self.passes = 0             # consecutive passing health checks while unhealthy
        self.fails = 0              # consecutive failing health checks while healthy
        self.failures = 0           # consecutive connection failures (passive)
        self.ejected = False
        self._uneject: asyncio.TimerHandle | None = None
        self._probe_task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"Target({self.label})"


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to a target; owned by at most one exchange at a time."""

    __slots__ = ("group", "target", "transport", "reader", "owner", "idle_since", "closed",
                 "paused", "reused", "last_activity", "switching", "tunnel")

    def __init__(self, group: "TargetGroup", target: Target) -> None:
        self.group = group
        self.target = target
        # None only until connection_made; every use but pause/resume_reading comes after it
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.reader = response_reader()
        self.owner = None           # the client connection receiving events (gateway.proxy)
        self.idle_since = 0.0
        self.closed = False
        self.paused = False         # its transport asked us to stop writing (flow control)
        self.reused = False         # taken from the pool (a close before answering is then a race)
        self.last_activity = 0.0    # monotonic time of the last sign of life (bytes in, writes resumed)
        self.switching = False      # a 101 head was seen: its end switches to a byte tunnel
        self.tunnel = False         # switched: bytes pass through unparsed

    @property
    def label(self) -> str:
        return self.target.label

    def expect(self, method: bytes, upgrade: bool = False) -> None:
        """A request was sent (see ResponseReader.expect)."""
        self.reader.expect(method, upgrade)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            # bytes from an idle pooled connection: the server broke the protocol; drop it
            self.close()
            return
        if self.tunnel:
            owner.upstream_event(self, (data,))
            return
        reader = self.reader
        events: list = []
        try:
            reader.feed(data)
            self._collect(events)
        except UpstreamError as exc:
            events.append(UpstreamFailed(exc))
        owner.upstream_event(self, events)

    def _collect(self, events: list) -> None:
        # Up to the end of one response: what follows belongs to the next request's (nothing may
        # come before it is asked for), or, after a 101, to the new protocol.
        reader = self.reader
        while True:
            event = reader.next_event()
            if event is None:
                return
            events.append(event)
            kind = type(event)
            if kind is EndOfMessage:
                if self.switching:
                    self._switched(events)
                return
            if kind is Response and event.status == 101:  # type: ignore[union-attr]  # a Response
                self.switching = True

    def _switched(self, events: list) -> None:
        self.switching = False
        self.tunnel = True
        early = self.reader.take_raw()
        if early:
            events.append(early)

    def eof_received(self) -> bool | None:
        return None   # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.group._forget(self)
        owner = self.owner
        self.owner = None
        if owner is None:
            return
        events: list = []
        if not self.tunnel:
            # the end of the stream may complete a close-delimited response
            try:
                self.reader.feed_eof()
                self._collect(events)
            except UpstreamError:
                pass
        events.append(UpstreamClosed(exc))
        owner.upstream_event(self, events)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_resume_writing()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def write_eof(self) -> bool:
        """Half-close towards the target (a tunnel the client ended); False where the transport
        cannot (TLS)."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
            return True
        return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner = None
            if self.transport is not None:
                self.transport.close()


def client_context(tls) -> ssl.SSLContext:
    """The TLS context for connections to targets, from an `UpstreamTLSSpec`."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=str(tls.ca_bundle) if tls.ca_bundle else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert is not None:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TargetGroup:
    """Targets of one group with their pools and health. One per worker, shared by its listeners."""

    def __init__(self, name: str, targets, *,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                 max_idle_per_target: int = DEFAULT_MAX_IDLE_PER_TARGET,
                 idle_timeout_s: float = DEFAULT_POOL_IDLE_TIMEOUT_S,
                 load_balancing: str = "round_robin",
                 ejection_failures: int = DEFAULT_EJECTION_FAILURES,
                 ejection_duration_s: float = DEFAULT_EJECTION_DURATION_S,
                 health_check=None, ssl_context: ssl.SSLContext | None = None,
                 server_name: str | None = None, errors=None) -> None:
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle_per_target = max_idle_per_target
        self.idle_timeout_s = idle_timeout_s
        self.least_outstanding = load_balancing == "least_outstanding_requests"
        self.ejection_failures = ejection_failures
        self.ejection_duration_s = ejection_duration_s
        self.health_check = health_check
        self.ssl = ssl_context
        self.errors = errors
        self.observer = NULL_OBSERVER
        hostname = (lambda host: server_name or host) if ssl_context is not None else (lambda host: None)
        self.targets = tuple(Target(h, p, hostname(h)) for h, p in targets)
        self._by_address = {(t.host, t.port): t for t in self.targets}
        self._available: tuple[Target, ...] = self.targets
        self._next = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._health_request = b""
        if health_check is not None:
            self._health_request = (
                b"GET %s HTTP/1.1\r\nHost: %%s\r\nUser-Agent: %s\r\nAccept: */*\r\n"
                b"Connection: close\r\n\r\n" % (health_check.path.encode("ascii"),
                                                HEALTH_CHECK_USER_AGENT))

    @classmethod
    def from_spec(cls, spec, errors=None) -> "TargetGroup":
        """A group from a `TargetGroupSpec`; reads the TLS files it names (checked by config)."""
        ctx = client_context(spec.tls) if spec.tls is not None else None
        return cls(spec.name, spec.targets, connect_timeout_s=spec.connect_timeout_s,
                   read_timeout_s=spec.read_timeout_s,
                   max_idle_per_target=spec.max_idle_per_target,
                   idle_timeout_s=spec.idle_timeout_s, load_balancing=spec.load_balancing,
                   ejection_failures=spec.ejection_failures,
                   ejection_duration_s=spec.ejection_duration_s,
                   health_check=spec.health_check, ssl_context=ctx,
                   server_name=spec.tls.server_name if spec.tls is not None else None,
                   errors=errors)

    # -- life --------------------------------------------------------------------------------------

    def start(self, observer=None) -> None:
        """Called once in each worker when its loop runs: health checks start here."""
        if observer is not None:
            self.observer = observer
        if self.health_check is None:
            return
        loop = asyncio.get_running_loop()
        for target in self.targets:
            if target._probe_task is None:
                target._probe_task = loop.create_task(self._probe_loop(target))

    def close(self) -> None:
        for target in self.targets:
            while target.idle:
                target.idle.pop().close()
            if target._probe_task is not None:
                target._probe_task.cancel()
                target._probe_task = None
            if target._uneject is not None:
                target._uneject.cancel()
                target._uneject = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # -- balancing ---------------------------------------------------------------------------------

    def target(self, host: str, port: int) -> Target:
        return self._by_address[(host, port)]

    @property
    def available(self) -> tuple[Target, ...]:
        return self._available

    def pick(self, exclude: tuple = ()) -> Target | None:
        """An available target for one exchange (counted as outstanding until `done`), or None."""
        avail = self._available
        n = len(avail)
        if n == 0:
            return None
        i = self._next
        if i >= n:
            i = 0
        self._next = i + 1
        chosen: Target | None
        if n == 1:
            chosen = avail[0]
            if exclude and chosen in exclude:
                return None
        elif self.least_outstanding:
            chosen = None
            for k in range(n):
                t = avail[(i + k) % n]
                if (chosen is None or t.outstanding < chosen.outstanding) and t not in exclude:
                    chosen = t
            if chosen is None:
                return None
        else:
            chosen = avail[i]
            if exclude:
                for k in range(n):
                    chosen = avail[(i + k) % n]
                    if chosen not in exclude:
                        break
                else:
                    return None
        chosen.outstanding += 1
        return chosen

    def done(self, target: Target) -> None:
        """The exchange that picked `target` is over."""
        target.outstanding -= 1

    def _recompute(self) -> None:
        self._available = tuple(t for t in self.targets if t.healthy and not t.ejected)

    # -- passive ejection --------------------------------------------------------------------------

    def connection_failed(self, target: Target, reason: str) -> None:
        """A connection to `target` failed (refused, reset, TLS, closed before answering)."""
        target.failures += 1
        limit = self.ejection_failures
        if limit and target.failures >= limit and not target.ejected:
            target.ejected = True
            self._recompute()
            self._log("warning", "target_ejected",
                      f"target {target.label} of group {self.name} taken out of rotation for "
                      f"{self.ejection_duration_s:g}s after {target.failures} connection failures "
                      f"in a row (last: {reason})", target, detail=reason)
            self.observer.upstream(self.name, target.label, 0.0, False)
            target._uneject = asyncio.get_running_loop().call_later(
                self.ejection_duration_s, self._return, target, "ejection_ended")

    def connection_ok(self, target: Target) -> None:
        target.failures = 0

    def _return(self, target: Target, why: str) -> None:
        if target._uneject is not None:
            target._uneject.cancel()
            target._uneject = None
        if not target.ejected:
            return
        target.ejected = False
        target.failures = 0
        self._recompute()
        self._log("info", "target_returned", f"target {target.label} of group {self.name} back "
                  f"in rotation ({why.replace('_', ' ')})", target)

    # -- active health checks ----------------------------------------------------------------------

    async def _probe_loop(self, target: Target) -> None:
        hc = self.health_check
        loop = asyncio.get_running_loop()
        first = True
        while True:
            started = loop.time()
            ok, detail = await self.probe(target)
            self._health_result(target, ok, detail, first, loop.time() - started)
            first = False
            await asyncio.sleep(max(0.0, hc.interval_s - (loop.time() - started)))

    async def probe(self, target: Target) -> tuple[bool, str]:
        """One health check of `target`: (passed, what was seen)."""
        hc = self.health_check
        loop = asyncio.get_running_loop()
        host = target.server_hostname or target.label
        request = self._health_request % host.encode("ascii")
        waiter = loop.create_future()
        transport = None
        try:
            async with asyncio.timeout(hc.timeout_s):
                transport, _ = await loop.create_connection(
                    lambda: _Probe(request, waiter), target.host, target.port, ssl=self.ssl,
                    server_hostname=target.server_hostname)
                status = await waiter
        except TimeoutError:
            return False, f"no answer within {hc.timeout_s:g}s"
        except UpstreamError as exc:
            return False, str(exc)
        except OSError as exc:
            return False, _os_error(exc)
        finally:
            if transport is not None:
                transport.close()
        for lo, hi in hc.matcher:
            if lo <= status <= hi:
                return True, f"status {status}"
        return False, f"status {status} does not match {_matcher_text(hc.matcher)}"

    def _health_result(self, target: Target, ok: bool, detail: str, first: bool,
                       latency_s: float) -> None:
        hc = self.health_check
        if ok:
            target.fails = 0
            if target.ejected:
                self._return(target, "health_check_passed")
            if target.healthy:
                return
            target.passes += 1
            if target.passes < hc.healthy_threshold and not first:
                return
            target.passes = 0
            target.healthy = True
            self._recompute()
            self._log("info", "target_healthy", f"target {target.label} of group {self.name} is "
                      f"healthy ({detail})", target, detail=detail)
            self.observer.upstream(self.name, target.label, latency_s, True)
            return
        target.passes = 0
        if not target.healthy:
            return
        target.fails += 1
        if target.fails < hc.unhealthy_threshold and not first:
            return
        target.fails = 0
        target.healthy = False
        self._recompute()
        self._log("warning", "target_unhealthy", f"target {target.label} of group {self.name} "
                  f"failed its health check: {detail}", target, detail=detail)
        self.observer.upstream(self.name, target.label, latency_s, False)

    def _log(self, level: str, reason: str, message: str, target: Target, **fields) -> None:
        if self.errors is not None:
            self.errors.log(level, reason, message, target_group=self.name, target=target.label,
                            **fields)

    # -- pools -------------------------------------------------------------------------------------

    def take_idle(self, target: Target) -> UpstreamConnection | None:
        idle = target.idle
        while idle:
            conn = idle.pop()       # most recently used first: likeliest to be alive
            if not conn.closed and not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    async def connect(self, target: Target) -> UpstreamConnection:
        """A new connection to `target` (TLS done if the group uses it); UpstreamError if not."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, target), target.host, target.port,
                    ssl=self.ssl, server_hostname=target.server_hostname)
        except TimeoutError:
            error = UpstreamError(f"connect to {target.label} timed out after "
                                  f"{self.connect_timeout_s:g}s", status=504,
                                  reason="upstream_connect_timeout", target=target.label)
        except ssl.SSLCertVerificationError as exc:
            error = UpstreamError(f"TLS to {target.label}: certificate not accepted: "
                                  f"{exc.verify_message or exc.reason}", status=502,
                                  reason="upstream_tls_verify_failed", target=target.label)
        except ssl.SSLError as exc:
            error = UpstreamError(f"TLS to {target.label} failed: {exc.reason or exc}", status=502,
                                  reason="upstream_tls_failed", target=target.label)
        except OSError as exc:
            error = UpstreamError(f"connect to {target.label} failed: {_os_error(exc)}",
                                  status=502, reason="upstream_connect_failed",
                                  target=target.label)
        else:
            target.failures = 0
            return conn
        self.connection_failed(target, error.reason)
        raise error

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose exchange ended cleanly with keep-alive on both sides."""
        conn.owner = None
        if conn.closed or conn.transport.is_closing():
            return
        idle = conn.target.idle
        if len(idle) >= self.max_idle_per_target:
            conn.close()
            return
        if not conn.reader.idle:
            conn.reader = response_reader()
        # the time of its last read, which ended the exchange: its owner stamped it (monotonic)
        # as it took the read; asking the clock again here would be once more per request
        conn.idle_since = conn.last_activity or time.monotonic()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_timeout_s / 2, self._sweep)

    def _forget(self, conn: UpstreamConnection) -> None:
        idle = conn.target.idle
        if idle and conn in idle:
            idle.remove(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = time.monotonic() - self.idle_timeout_s
        remaining = 0
        for target in self.targets:
            idle = target.idle
            while idle and idle[0].idle_since < cutoff:
                idle.popleft().close()
            remaining += len(idle)
        if remaining:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_timeout_s / 2, self._sweep)


class _Probe(asyncio.Protocol):
    """A health-check exchange: send the request, read up to the status of the response."""

    def __init__(self, request: bytes, waiter: asyncio.Future) -> None:
        self.request = request
        self.waiter = waiter
        self.reader = response_reader()
        self.reader.expect(b"GET")

    def connection_made(self, transport) -> None:
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.waiter.done():
            return
        try:
            self.reader.feed(data)
            event = self.reader.next_event()
        except UpstreamError as exc:
            self.waiter.set_exception(exc)
            return
        if type(event) is Response:
            self.waiter.set_result(event.status)

    def connection_lost(self, exc) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(UpstreamError("closed the connection before answering",
                                                    reason="upstream_closed"))


def _os_error(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _matcher_text(matcher) -> str:
    return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in matcher)
