"""The Prometheus observer keeps the data path's counts in plain dicts and flushes them into
prometheus-client's multi-process values: what a scrape shows must equal what prometheus-client's
own `inc`/`observe`/`set` calls would have produced (the library is the reference)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _exposition(tmp_path, flush_through_observer: bool) -> str:
    """Run the same observations in a fresh process (prometheus-client reads its multi-process
    directory at import), through the observer's flush or through the library's own calls."""
    d = tmp_path / ("ours" if flush_through_observer else "ref")
    d.mkdir()
    script = textwrap.dedent(f"""
        import random, sys
        from gateway import metrics
        random.seed(7)
        obs = metrics.PrometheusObserver()
        direct = {not flush_through_observer!r}
        for i in range(3000):
            listener = random.choice(["a", "b"])
            latency = random.choice([0.0001, 0.0005, 0.0007, 0.003, 0.02, 0.2, 3.0, 20.0])
            status = random.choice([200, 404, 503])
            resumed = random.random() < 0.5
            result = random.choice(["accepted", "accepted", "refused"])
            ok = random.random() < 0.8
            if direct:
                r = "true" if resumed else "false"
                obs._m["handshakes"].labels(listener, "verify", result, "Success", r).inc()
                if result == "accepted":
                    obs._m["handshake_seconds"].labels(listener, r).observe(latency)
                obs._m["requests"].labels(listener, str(status)).inc()
                obs._m["request_seconds"].labels(listener).observe(latency)
                if ok:
                    obs._m["upstream_seconds"].labels("g", "t").observe(latency)
                else:
                    obs._m["upstream_failures"].labels("g", "t").inc()
                obs._m["upstream_up"].labels("g", "t").set(1 if ok else 0)
                obs._m["connections"].labels(listener).inc()
                if i % 3:
                    obs._m["connections"].labels(listener).dec()
                obs._m["cache"].labels("main", "hit").inc(2)
            else:
                obs.handshake(listener, "verify", result, "Success", resumed, latency)
                obs.request(listener, status, latency)
                obs.upstream("g", "t", latency, ok)
                obs.connection_opened(listener)
                if i % 3:
                    obs.connection_closed(listener)
                obs.cache_counts("main", 2, 0)
                if i % 1000 == 999:
                    obs.flush()
        # fixed answers the native core counted in its own arrays (gateway._conn_c.Listener)
        class Source:
            name = "a"
            def __init__(self):
                self.counts = {{}}
            def take_counts(self):
                out, self.counts = sorted(self.counts.items()), {{}}
                return out
        source = Source()
        if not direct:
            obs.attach_counts(source)
        for i in range(500):
            status = random.choice([200, 203, 503])
            if direct:
                obs._m["requests"].labels("a", str(status)).inc()
                obs._m["request_seconds"].labels("a").observe(0.0)
            else:
                source.counts[status] = source.counts.get(status, 0) + 1
                if i == 250:
                    obs.flush()
        obs.flush()
        obs.flush()         # drained: nothing counted twice
        sys.stdout.write(metrics.exposition()[0].decode())
    """)
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(d))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_flushed_counts_equal_the_librarys_own(tmp_path):
    ours = _exposition(tmp_path, True)
    ref = _exposition(tmp_path, False)
    assert "mtls_gateway_request_seconds_bucket" in ref and "mtls_gateway_upstream_up" in ref

    def samples(text):
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = round(float(value), 6)
        return out

    assert samples(ours) == samples(ref)


def test_the_hot_path_touches_no_prometheus_value(tmp_path):
    script = textwrap.dedent("""
        from gateway import metrics
        obs = metrics.PrometheusObserver()
        obs.request("a", 200, 0.01)
        obs.handshake("a", "verify", "accepted", "Success", False, 0.001)
        obs.connection_opened("a")
        obs.upstream("g", "t", 0.002, False)
        assert obs._children == {}      # no label child made, no mmap value written yet
        obs.flush()
        assert obs._children and not obs._counts and not obs._hists
        print("ok")
    """)
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
