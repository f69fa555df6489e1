"""Observations of traffic, for metrics: the interface the data path calls.

How this works: the per-connection protocol calls these methods at a few fixed points (handshake
outcome, connection open/close, request done, upstream exchange done). `Observer` does nothing and
is what runs when no admin listener is configured; the Prometheus-backed implementation subclasses
it. Each call is a handful of counter increments: nothing here may block or allocate per byte.
"""
from __future__ import annotations

from bisect import bisect_left


class Observer:
    """No-op observer; the data path always has one, so it never checks for None."""

    __slots__ = ()

    def handshake(self, listener: str, mode: str, result: str, verify_status: str | None,
                  resumed: bool, latency_s: float) -> None:
        """result: "accepted" or "refused"; verify_status: ALB's status string or None."""

    def connection_opened(self, listener: str) -> None:
        pass

    def would_refuse(self, listener: str, verify_status: str) -> None:
        """A report-only listener served a client its verdict refuses (mtls_enforcement)."""

    def connection_closed(self, listener: str) -> None:
        pass

    def request(self, listener: str, status: int, duration_s: float) -> None:
        pass

    def upstream(self, target_group: str, target: str, latency_s: float, ok: bool) -> None:
        """One exchange with a target: ok=False for connect failures, resets, timeouts."""

    def chain_cache(self, hit: bool) -> None:
        pass

    def flush(self) -> None:
        """Move accumulated observations to where they are read (nothing to move here)."""


NULL_OBSERVER = Observer()


# Handshakes take ~0.5-5 ms; requests through a proxy 0.1 ms to seconds.
_HANDSHAKE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def setup_multiprocess(directory: str) -> None:
    """Point prometheus-client at a directory shared by the workers; call before it is imported."""
    import os
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


class PrometheusObserver(Observer):
    """Prometheus metrics in prometheus-client's multi-process mode, kept off the hot path.

    The data path's calls only add to plain dicts in this worker (a tuple key and an integer, or a
    histogram's bucket counts and sum): a prometheus-client call in multi-process mode costs 2-5 us
    (a lock and an mmap write per value), several per request. `flush()` moves what accumulated
    into prometheus-client's values, which write the worker's own files; the worker calls it once a
    second and before answering a scrape, so /metrics (any worker aggregates all of them) lags by
    at most a second. Histogram buckets are added through the child's per-bucket values, the very
    ones `Histogram.observe` increments; a unit test holds the result equal to `observe()`'s, so a
    prometheus-client that changes them fails loudly.

    The native connection core counts the fixed answers it serves in C arrays of its own
    (gateway._conn_c.Listener, one per listener runtime), attached here by `attach_counts`;
    `flush()` drains them first, as if each had been a `request(listener, status, 0.0)`."""

    __slots__ = ("_m", "_children", "_counts", "_hists", "_bounds", "_gauge_deltas", "_gauge_sets",
                 "_sources")

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram
        self._children: dict = {}
        self._counts: dict[tuple, int] = {}             # (metric, labels) -> increments
        self._hists: dict[tuple, list] = {}             # (metric, labels) -> [sum, n per bucket...]
        self._gauge_deltas: dict[tuple, int] = {}       # livesum gauges: net inc/dec
        self._gauge_sets: dict[tuple, float] = {}       # last value set
        self._sources: list = []                        # native counters (attach_counts)
        self._m = {
            "handshakes": Counter("mtls_gateway_handshakes_total", "TLS handshakes",
                                  ["listener", "mode", "result", "verify_status", "resumed"]),
            "handshake_seconds": Histogram("mtls_gateway_handshake_seconds", "TLS handshake latency",
                                           ["listener", "resumed"], buckets=_HANDSHAKE_BUCKETS),
            "connections": Gauge("mtls_gateway_connections_open", "Open client connections",
                                 ["listener"], multiprocess_mode="livesum"),
            "requests": Counter("mtls_gateway_requests_total", "Requests answered", ["listener", "status"]),
            "would_refuse": Counter("mtls_gateway_would_refuse_total",
                                    "Clients a report-only listener served that enforcing would refuse",
                                    ["listener", "verify_status"]),
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
        # the upper bounds as the histograms hold them (+Inf last): an observation goes to the first
        # bucket whose bound it does not exceed, as Histogram.observe decides
        self._bounds = {"handshake_seconds": tuple(_HANDSHAKE_BUCKETS) + (float("inf"),),
                        "request_seconds": tuple(_LATENCY_BUCKETS) + (float("inf"),),
                        "upstream_seconds": tuple(_LATENCY_BUCKETS) + (float("inf"),)}

    def _child(self, metric: str, labels: tuple):
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._m[metric].labels(*labels)
        return child

    # -- the hot path: plain dicts -----------------------------------------------------------------
    def _count(self, key: tuple, n: int = 1) -> None:
        counts = self._counts
        counts[key] = counts.get(key, 0) + n

    def _observe(self, metric: str, labels: tuple, value: float) -> None:
        key = (metric, labels)
        hist = self._hists.get(key)
        if hist is None:
            hist = self._hists[key] = [0.0] + [0] * len(self._bounds[metric])
        hist[0] += value
        hist[1 + bisect_left(self._bounds[metric], value)] += 1

    def handshake(self, listener, mode, result, verify_status, resumed, latency_s) -> None:
        r = "true" if resumed else "false"
        self._count(("handshakes", (listener, mode, result, verify_status or "none", r)))
        if result == "accepted":
            self._observe("handshake_seconds", (listener, r), latency_s)

    def would_refuse(self, listener, verify_status) -> None:
        self._count(("would_refuse", (listener, verify_status)))

    def connection_opened(self, listener) -> None:
        key = ("connections", (listener,))
        deltas = self._gauge_deltas
        deltas[key] = deltas.get(key, 0) + 1

    def connection_closed(self, listener) -> None:
        key = ("connections", (listener,))
        deltas = self._gauge_deltas
        deltas[key] = deltas.get(key, 0) - 1

    def request(self, listener, status, duration_s) -> None:
        self._count(("requests", (listener, str(status))))
        self._observe("request_seconds", (listener,), duration_s)

    def upstream(self, target_group, target, latency_s, ok) -> None:
        labels = (target_group, target)
        if ok:
            self._observe("upstream_seconds", labels, latency_s)
        else:
            self._count(("upstream_failures", labels))
        self._gauge_sets[("upstream_up", labels)] = 1 if ok else 0

    def cache_counts(self, trust_store: str, hits: int, misses: int) -> None:
        if hits:
            self._count(("cache", (trust_store, "hit")), hits)
        if misses:
            self._count(("cache", (trust_store, "miss")), misses)

    def attach_counts(self, source) -> None:
        """`source` counts fixed answers by status for one listener (`source.name`); its
        `take_counts()` returns [(status, n)] and starts again from zero."""
        self._sources.append(source)

    # -- off the hot path --------------------------------------------------------------------------
    def _drain_sources(self) -> None:
        if not self._sources:
            return
        zero = 1 + bisect_left(self._bounds["request_seconds"], 0.0)
        for source in self._sources:
            counted = source.take_counts()
            if not counted:
                continue
            labels = (source.name,)
            key = ("request_seconds", labels)
            hist = self._hists.get(key)
            if hist is None:
                hist = self._hists[key] = [0.0] + [0] * len(self._bounds["request_seconds"])
            for status, n in counted:
                self._count(("requests", (source.name, str(status))), n)
                hist[zero] += n

    def flush(self) -> None:
        """Move what accumulated into prometheus-client's values (this worker's files)."""
        self._drain_sources()
        counts, self._counts = self._counts, {}
        for (metric, labels), n in counts.items():
            self._child(metric, labels).inc(n)
        hists, self._hists = self._hists, {}
        for (metric, labels), hist in hists.items():
            child = self._child(metric, labels)
            child._sum.inc(hist[0])
            buckets = child._buckets
            for i, n in enumerate(hist[1:]):
                if n:
                    buckets[i].inc(n)
        deltas, self._gauge_deltas = self._gauge_deltas, {}
        for (metric, labels), n in deltas.items():
            if n:
                self._child(metric, labels).inc(n)
        sets, self._gauge_sets = self._gauge_sets, {}
        for (metric, labels), value in sets.items():
            self._child(metric, labels).set(value)

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
