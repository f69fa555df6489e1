"""Micro benchmarks for what every request passes before a rule sees it: the header-name screen
(gateway.headers.screen_request, both twins) and the path normaliser (gateway.paths).

Run with ``taskset -c 1 python -m pytest --pyargs mtls_gateway_bench.micro.bench_screening
--benchmark-enable -q``. Inputs are fixed and realistic: a 12-header API request, with and without a forged underscore spelling;
a plain path with a query (the fast path every ordinary request takes), and a path with dot
segments, an encoded unreserved character and a doubled slash (the slow path). The last test prints
the medians.
"""
from __future__ import annotations

import pytest

from gateway import headers, paths

_HEADERS = [
    (b"Host", b"api.example.com"), (b"User-Agent", b"curl/8.5.0"), (b"Accept", b"*/*"),
    (b"Accept-Encoding", b"gzip, deflate, br"), (b"Accept-Language", b"en-US,en;q=0.9"),
    (b"Authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo"),
    (b"Content-Type", b"application/json"), (b"X-Request-Id", b"f058ebd6-02f7-4d3f-942e-904344e8cde5"),
    (b"X-Forwarded-For", b"198.51.100.7"), (b"Cache-Control", b"no-cache"),
    (b"Connection", b"keep-alive"), (b"Cookie", b"session=abc123; theme=dark"),
]
_FORGED = _HEADERS + [(b"X_Amzn_Mtls_Clientcert_Subject", b"CN=admin")]
_TOKENS = frozenset({b"keep-alive"})
_POLICY = headers.HeaderPolicy()
_PATH_POLICY = paths.PathPolicy()
_PLAIN_TARGET = b"/api/v1/orders/12345/items?limit=50&cursor=abc"
_DIRTY_TARGET = b"/api/v1/../v1/%6Frders//12345/./items?limit=50&cursor=abc"
_medians: dict[str, float] = {}

IMPLS = [headers.PYTHON] + ([headers.NATIVE] if headers.NATIVE is not None else [])


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
def test_screen_ordinary_request(benchmark, impl):
    saved = headers.first_nonstandard
    headers.first_nonstandard = impl.first_nonstandard
    try:
        assert benchmark(headers.screen_request, _POLICY, _HEADERS, _TOKENS) is None
    finally:
        headers.first_nonstandard = saved
    _medians[f"screen ordinary ({impl.name})"] = benchmark.stats.stats.median


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
def test_screen_forged_spelling(benchmark, impl):
    saved = headers.first_nonstandard
    headers.first_nonstandard = impl.first_nonstandard
    try:
        result = benchmark(headers.screen_request, _POLICY, _FORGED, _TOKENS)
    finally:
        headers.first_nonstandard = saved
    assert result is not None and not result.refuse
    _medians[f"screen forged ({impl.name})"] = benchmark.stats.stats.median


def test_normalize_plain_target(benchmark):
    assert benchmark(paths.normalize_target, _PATH_POLICY, _PLAIN_TARGET) is _PLAIN_TARGET
    _medians["path plain"] = benchmark.stats.stats.median


def test_normalize_dirty_target(benchmark):
    out = benchmark(paths.normalize_target, _PATH_POLICY, _DIRTY_TARGET)
    assert out == b"/api/v1/orders/12345/items?limit=50&cursor=abc"
    _medians["path dirty"] = benchmark.stats.stats.median


def test_report():
    if not _medians:
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    print()
    for name, seconds in _medians.items():
        print(f"  {name:32s} {seconds * 1e9:9.0f} ns")
