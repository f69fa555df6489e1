"""Target groups: balancing, health, keep-alive pools of HTTP/1.1 connections, optional TLS.

How this works: a `TargetGroup` (one per worker, shared by its listeners) holds its `Target`s and
hands one out per exchange with `pick()`: round robin, or the target with the fewest outstanding
requests (ties broken in turn), among the *available* ones: healthy by the active checks and not
ejected. The available set is a tuple rebuilt only when a target's state changes, so a pick is a
few attribute reads. When none is available, `pick()` returns None and the caller answers 503.

Health: which targets are available is decided by the group's `Health` (gateway.health: active
checks and passive ejection); it calls `recompute()` when a target's state changed. The core and
`connect()` report connection failures to it through the group (`connection_failed`).

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
from typing import Any

from .spec import (DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_EJECTION_DURATION_S,
                   DEFAULT_EJECTION_FAILURES, DEFAULT_MAX_IDLE_PER_TARGET,
                   DEFAULT_POOL_IDLE_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S)
from .errors import UpstreamError
from .exchange import UpstreamClosed, UpstreamFailed
from .health import Health, os_error
from .http1 import EndOfMessage, Response, response_reader

__all__ = ["Target", "TargetGroup", "UpstreamConnection", "UpstreamClosed", "UpstreamFailed",
           "client_context", "DEFAULT_POOL_IDLE_TIMEOUT_S"]

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
        hostname = (lambda host: server_name or host) if ssl_context is not None else (lambda host: None)
        self.targets = tuple(Target(h, p, hostname(h)) for h, p in targets)
        self._by_address = {(t.host, t.port): t for t in self.targets}
        self._available: tuple[Target, ...] = self.targets
        self._next = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self.health = health = Health(name, self.targets, health_check,
                                      ejection_failures=ejection_failures,
                                      ejection_duration_s=ejection_duration_s,
                                      ssl_context=ssl_context, changed=self.recompute, log=self._log)
        # what the connection core and connect() report go straight to the group's health
        self.connection_failed = health.connection_failed
        self.connection_ok = health.connection_ok

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

    @property
    def observer(self) -> Any:
        """Where the targets' changes of state are reported (the health's observer)."""
        return self.health.observer

    @observer.setter
    def observer(self, observer: Any) -> None:
        self.health.observer = observer

    def start(self, observer=None) -> None:
        """Called once in each worker when its loop runs: health checks start here."""
        self.health.start(observer)

    def close(self) -> None:
        for target in self.targets:
            while target.idle:
                target.idle.pop().close()
        self.health.close()
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

    def recompute(self) -> None:
        """The available targets, again: one of them changed its health."""
        self._available = tuple(t for t in self.targets if t.healthy and not t.ejected)

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
            error = UpstreamError(f"connect to {target.label} failed: {os_error(exc)}",
                                  status=502, reason="upstream_connect_failed",
                                  target=target.label)
        else:
            target.failures = 0         # health.connection_ok, inline
            return conn
        self.health.connection_failed(target, error.reason)
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
