"""Target groups: round-robin over targets, keep-alive pools of plain HTTP/1.1 connections.

How this works: a `TargetGroup` hands out an `UpstreamConnection` for one exchange at a time: an idle
pooled connection when one is alive, else a new one (connect bounded by `connect_timeout_s`). The
connection's protocol parses the response with `http1.ResponseReader` and hands every event to the
exchange that holds it (the client-side protocol), which streams it on. When the exchange ends
cleanly and both sides allow keep-alive, the connection goes back to the pool; idle connections
close after `idle_timeout_s` or when the peer closes them. Flow control is passed through both ways:
an upstream that cannot take more pauses the client's reads, and a client that cannot take more
pauses the upstream's reads.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque

from .errors import UpstreamError
from .http1 import ResponseReader

DEFAULT_POOL_IDLE_TIMEOUT_S = 30.0


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to a target; owned by at most one exchange at a time."""

    __slots__ = ("group", "target", "transport", "reader", "owner", "idle_since", "closed", "paused")

    def __init__(self, group: "TargetGroup", target: tuple[str, int]) -> None:
        self.group = group
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.owner = None           # the exchange receiving events; see proxy.GatewayProtocol
        self.idle_since = 0.0
        self.closed = False
        self.paused = False         # its transport asked us to stop writing (flow control)

    @property
    def label(self) -> str:
        return f"{self.target[0]}:{self.target[1]}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            # bytes from an idle pooled connection: the server broke the protocol; drop it
            self.close()
            return
        owner.upstream_data(self, data)

    def eof_received(self) -> bool | None:
        return None   # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.group._forget(self)
        owner = self.owner
        self.owner = None
        if owner is not None:
            owner.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_resume_writing()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner = None
            if self.transport is not None:
                self.transport.close()


class TargetGroup:
    """Targets of one group with their pools. One per worker, shared by its listeners."""

    def __init__(self, name: str, targets: tuple[tuple[str, int], ...], *, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 60.0, max_idle_per_target: int = 32,
                 idle_timeout_s: float = DEFAULT_POOL_IDLE_TIMEOUT_S) -> None:
        self.name = name
        self.targets = tuple(targets)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle_per_target = max_idle_per_target
        self.idle_timeout_s = idle_timeout_s
        self._rr = itertools.cycle(range(len(self.targets)))
        self._idle: dict[tuple[str, int], deque[UpstreamConnection]] = {t: deque() for t in self.targets}
        self._sweeper: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Called once in each worker when its loop runs (health checks will start here)."""

    def pick(self) -> tuple[str, int]:
        return self.targets[next(self._rr)]

    def take_idle(self, target: tuple[str, int]) -> UpstreamConnection | None:
        idle = self._idle[target]
        while idle:
            conn = idle.pop()       # most recently used first: likeliest to be alive
            if not conn.closed and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self, target: tuple[str, int]) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self, target), target[0], target[1]),
                self.connect_timeout_s)
        except asyncio.TimeoutError:
            raise UpstreamError(f"connect to {target[0]}:{target[1]} timed out", status=504,
                                reason="upstream_connect_timeout", target=f"{target[0]}:{target[1]}") from None
        except OSError as exc:
            raise UpstreamError(f"connect to {target[0]}:{target[1]} failed: {exc.strerror or exc}",
                                status=502, reason="upstream_connect_failed",
                                target=f"{target[0]}:{target[1]}") from None
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose exchange ended cleanly with keep-alive on both sides."""
        conn.owner = None
        if conn.closed or conn.transport.is_closing():
            return
        idle = self._idle[conn.target]
        if len(idle) >= self.max_idle_per_target:
            conn.close()
            return
        conn.reader = ResponseReader()
        conn.idle_since = time.monotonic()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_timeout_s / 2, self._sweep)

    def _forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.target)
        if idle and conn in idle:
            idle.remove(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = time.monotonic() - self.idle_timeout_s
        remaining = 0
        for idle in self._idle.values():
            while idle and idle[0].idle_since < cutoff:
                idle.popleft().close()
            remaining += len(idle)
        if remaining:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_timeout_s / 2, self._sweep)

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
