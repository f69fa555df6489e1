"""Observations of traffic, for metrics: the interface the data path calls.

How this works: the per-connection protocol calls these methods at a few fixed points (handshake
outcome, connection open/close, request done, upstream exchange done). `Observer` does nothing and
is what runs when no admin listener is configured; the Prometheus-backed implementation subclasses
it. Each call is a handful of counter increments: nothing here may block or allocate per byte.
"""
from __future__ import annotations


class Observer:
    """No-op observer; the data path always has one, so it never checks for None."""

    __slots__ = ()

    def handshake(self, listener: str, mode: str, result: str, verify_status: str | None,
                  resumed: bool, latency_s: float) -> None:
        """result: "accepted" or "refused"; verify_status: ALB's status string or None."""

    def connection_opened(self, listener: str) -> None:
        pass

    def connection_closed(self, listener: str) -> None:
        pass

    def request(self, listener: str, status: int, duration_s: float) -> None:
        pass

    def upstream(self, target_group: str, target: str, latency_s: float, ok: bool) -> None:
        """One exchange with a target: ok=False for connect failures, resets, timeouts."""

    def chain_cache(self, hit: bool) -> None:
        pass


NULL_OBSERVER = Observer()
