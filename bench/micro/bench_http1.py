"""Micro benchmarks for gateway.http1's readers: the native twins vs the llhttp-based ones.

Run with ``taskset -c 1 python -m pytest --pyargs mtls_gateway_bench.micro.bench_http1
--benchmark-enable -q``. Inputs are fixed and realistic: a browser-like GET with 12 header fields, a POST with a small Content-Length
body, and a POST with the same body chunked (two chunks and a trailer). Each is fed whole and in two
pieces (cut inside the head) to a fresh reader per keep-alive request's worth of work: feed, then
take every event up to EndOfMessage. The response readers (an upstream connection's) get a
typical backend answer with a Content-Length body and the same answer chunked, each expected as a
GET's. The last test prints the medians and the native/pure ratios.
"""
from __future__ import annotations

import pytest

from gateway import http1
from gateway.http1 import END_OF_MESSAGE, HTTPLimits

NATIVE_REQUIRED = pytest.mark.skipif(http1.NATIVE is None, reason="gateway._http1_c is not built")
_medians: dict[str, float] = {}
LIMITS = HTTPLimits()

GET = (b"GET /api/v1/orders/12345?expand=items&currency=EUR HTTP/1.1\r\n"
       b"Host: shop.example.com\r\n"
       b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
       b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
       b"Accept-Language: en-GB,en;q=0.5\r\n"
       b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
       b"Referer: https://shop.example.com/basket\r\n"
       b"Cookie: session=8f2a7c1e9b3d4f60a5e7c2b1d9f8e7a6; theme=dark; consent=1\r\n"
       b"Connection: keep-alive\r\n"
       b"Upgrade-Insecure-Requests: 1\r\n"
       b"Sec-Fetch-Dest: document\r\n"
       b"Sec-Fetch-Mode: navigate\r\n"
       b"Cache-Control: max-age=0\r\n"
       b"\r\n")
BODY = b'{"sku": "A-1001", "quantity": 2, "gift": false}'
POST_LENGTH = (b"POST /api/v1/orders HTTP/1.1\r\nHost: shop.example.com\r\n"
               b"User-Agent: curl/8.5.0\r\nAccept: application/json\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY
POST_CHUNKED = (b"POST /api/v1/orders HTTP/1.1\r\nHost: shop.example.com\r\n"
                b"User-Agent: curl/8.5.0\r\nAccept: application/json\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                + http1.chunk(BODY[:20]) + http1.chunk(BODY[20:]) + b"0\r\nX-Checksum: 1\r\n\r\n")
INPUTS = {"get": GET, "post-length": POST_LENGTH, "post-chunked": POST_CHUNKED}
RESPONSE_HEAD = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 28 Nov 2026 12:00:00 GMT\r\n"
                 b"Content-Type: application/json\r\nCache-Control: no-store\r\n"
                 b"X-Request-Id: 6f1c2a9e-0b7d-4e3f-9a15-2c8d4b7e1f03\r\n")
RESPONSES = {
    "resp-length": RESPONSE_HEAD + b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(BODY) + BODY,
    "resp-chunked": RESPONSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                    + http1.chunk(BODY[:20]) + http1.chunk(BODY[20:]) + b"0\r\n\r\n",
}


def _drain(reader, pieces) -> int:
    n = 0
    for piece in pieces:
        reader.feed(piece)
        while (event := reader.next_event()) is not None:
            n += 1
            if event is END_OF_MESSAGE:
                return n
    raise AssertionError("no EndOfMessage")


def _read(cls, pieces) -> int:
    return _drain(cls(LIMITS), pieces)


def _read_response(cls, pieces) -> int:
    reader = cls()
    reader.expect(b"GET")
    return _drain(reader, pieces)


def _pieces(data: bytes, split: bool) -> tuple[bytes, ...]:
    if not split:
        return (data,)
    cut = data.index(b"\r\n") + 20        # inside the field lines
    return data[:cut], data[cut:]


CASES = [(name, split) for name in INPUTS for split in (False, True)]
RESPONSE_CASES = [(name, split) for name in RESPONSES for split in (False, True)]


def _run(benchmark, key, cls, pieces, read=_read):
    result = benchmark(read, cls, pieces)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and not getattr(benchmark, "disabled", False):
        _medians[key] = stats.stats.median
    return result


@pytest.mark.parametrize("name, split", CASES)
def test_pure(benchmark, name, split):
    _run(benchmark, f"{name}{'-2' if split else ''}-pure", http1.RequestReader, _pieces(INPUTS[name], split))


@NATIVE_REQUIRED
@pytest.mark.parametrize("name, split", CASES)
def test_native(benchmark, name, split):
    pieces = _pieces(INPUTS[name], split)
    assert _read(http1.NATIVE, pieces) == _read(http1.RequestReader, pieces)
    _run(benchmark, f"{name}{'-2' if split else ''}-native", http1.NATIVE, pieces)


@pytest.mark.parametrize("name, split", RESPONSE_CASES)
def test_response_pure(benchmark, name, split):
    _run(benchmark, f"{name}{'-2' if split else ''}-pure", http1.ResponseReader,
         _pieces(RESPONSES[name], split), _read_response)


@NATIVE_REQUIRED
@pytest.mark.parametrize("name, split", RESPONSE_CASES)
def test_response_native(benchmark, name, split):
    pieces = _pieces(RESPONSES[name], split)
    assert _read_response(http1.NATIVE_RESPONSE, pieces) == _read_response(http1.ResponseReader, pieces)
    _run(benchmark, f"{name}{'-2' if split else ''}-native", http1.NATIVE_RESPONSE, pieces,
         _read_response)


def test_ratios(capsys):
    """Print the median times and the pure/native ratio per input."""
    if not _medians:
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    m = _medians
    lines = [f"GET head {len(GET)} bytes, 12 fields; POST bodies {len(BODY)} bytes"]
    for name, split in CASES + RESPONSE_CASES:
        key = f"{name}{'-2' if split else ''}"
        pure, native = m.get(key + "-pure"), m.get(key + "-native")
        if pure is not None and native is not None:
            lines.append(f"{key:<16} pure {pure * 1e6:7.2f} us   native {native * 1e6:6.2f} us   "
                         f"native/pure {native / pure:.2f}  ({pure / native:.1f}x faster)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
