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


# Handshakes take ~0.5-5 ms; requests through a proxy 0.1 ms to seconds.
_HANDSHAKE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def setup_multiprocess(directory: str) -> None:
    """Point prometheus-client at a directory shared by the workers; call before it is imported."""
    import os
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


class PrometheusObserver(Observer):
    """Counters and histograms in prometheus-client's multi-process mode: each worker writes its own
    files, the /metrics endpoint of any worker aggregates them all. Label children are cached, so an
    observation is a dict lookup and an increment."""

    __slots__ = ("_m", "_children")

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram
        self._children: dict = {}
        self._m = {
            "handshakes": Counter("mtls_gateway_handshakes_total", "TLS handshakes",
                                  ["listener", "mode", "result", "verify_status", "resumed"]),
            "handshake_seconds": Histogram("mtls_gateway_handshake_seconds", "TLS handshake latency",
                                           ["listener", "resumed"], buckets=_HANDSHAKE_BUCKETS),
            "connections": Gauge("mtls_gateway_connections_open", "Open client connections",
                                 ["listener"], multiprocess_mode="livesum"),
            "requests": Counter("mtls_gateway_requests_total", "Requests answered", ["listener", "status"]),
            "request_seconds": Histogram("mtls_gateway_request_seconds", "Request duration",
                                         ["listener"], buckets=_LATENCY_BUCKETS),
            "upstream_seconds": Histogram("mtls_gateway_upstream_seconds", "Upstream exchange duration",
                                          ["target_group", "target"], buckets=_LATENCY_BUCKETS),
            "upstream_failures": Counter("mtls_gateway_upstream_failures_total", "Failed upstream exchanges",
                                         ["target_group", "target"]),
            "upstream_up": Gauge("mtls_gateway_upstream_up", "1 if the last exchange with the target worked",
                                 ["target_group", "target"], multiprocess_mode="livemax"),
            "cache": Counter("mtls_gateway_chain_cache_total", "Verified-chain cache lookups",
                             ["trust_store", "result"]),
            "generation": Gauge("mtls_gateway_trust_store_generation", "Configuration generation of a trust store",
                                ["trust_store"], multiprocess_mode="livemax"),
            "crl_next_update": Gauge("mtls_gateway_crl_next_update_timestamp_seconds",
                                     "nextUpdate of a loaded CRL", ["trust_store", "issuer"],
                                     multiprocess_mode="livemin"),
            "crl_age": Gauge("mtls_gateway_crl_loaded_timestamp_seconds",
                             "When the trust store's CRLs were loaded", ["trust_store"],
                             multiprocess_mode="livemax"),
        }

    def _child(self, metric: str, labels: tuple):
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._m[metric].labels(*labels)
        return child

    def handshake(self, listener, mode, result, verify_status, resumed, latency_s) -> None:
        r = "true" if resumed else "false"
        self._child("handshakes", (listener, mode, result, verify_status or "none", r)).inc()
        if result == "accepted":
            self._child("handshake_seconds", (listener, r)).observe(latency_s)

    def connection_opened(self, listener) -> None:
        self._child("connections", (listener,)).inc()

    def connection_closed(self, listener) -> None:
        self._child("connections", (listener,)).dec()

    def request(self, listener, status, duration_s) -> None:
        self._child("requests", (listener, str(status))).inc()
        self._child("request_seconds", (listener,)).observe(duration_s)

    def upstream(self, target_group, target, latency_s, ok) -> None:
        labels = (target_group, target)
        if ok:
            self._child("upstream_seconds", labels).observe(latency_s)
        else:
            self._child("upstream_failures", labels).inc()
        self._child("upstream_up", labels).set(1 if ok else 0)

    def cache_counts(self, trust_store: str, hits: int, misses: int) -> None:
        if hits:
            self._child("cache", (trust_store, "hit")).inc(hits)
        if misses:
            self._child("cache", (trust_store, "miss")).inc(misses)

    def trust_store(self, name: str, generation: int, loaded_at: float,
                    crl_next_update: dict[str, float | None]) -> None:
        self._child("generation", (name,)).set(generation)
        self._child("crl_age", (name,)).set(loaded_at)
        for issuer, ts in crl_next_update.items():
            if ts is not None:
                self._child("crl_next_update", (name, issuer)).set(ts)


def exposition() -> tuple[bytes, str]:
    """The aggregated metrics of every worker, in Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_dead(pid: int) -> None:
    """A worker exited: drop its live gauges (connections open, up/down) from the aggregate."""
    try:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid)
    except Exception:
        pass
