"""Micro benchmarks for gateway.headers: native vs pure vs urllib.parse.quote.

Run with ``python -m pytest --pyargs mtls_gateway_bench.micro.bench_headers --benchmark-enable -q``.
Inputs are fixed and realistic: a 3-certificate chain (RSA-2048 root and issuing CA, ECDSA P-256 client leaf, PEM,
leaf first) and a typical 12-header browser/API request. The last test prints the median-time
ratios and checks the native ALB quoting is at least 10x faster than urllib.parse.quote.
"""
from __future__ import annotations

import datetime as dt
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway import headers

NATIVE_REQUIRED = pytest.mark.skipif(headers.NATIVE is None,
                                     reason="gateway._headers_c is not built")
_medians: dict[str, float] = {}


def _chain_pem() -> bytes:
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    t1 = t0 + dt.timedelta(days=365)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject, issuer, key, signer, serial, ca, sans=()):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(serial)
             .not_valid_before(t0).not_valid_after(t1)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return b.sign(signer, hashes.SHA256())

    root_key = rsa.generate_private_key(65537, 2048)
    int_key = rsa.generate_private_key(65537, 2048)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = cert(name("Example Root CA"), name("Example Root CA"), root_key, root_key, 1, True)
    inter = cert(name("Example Issuing CA"), root.subject, int_key, root_key, 2, True)
    leaf = cert(name("client-042"), inter.subject, leaf_key, int_key, 0x5C6F6200B9C837C9, False,
                [x509.DNSName("client-042.example.org"),
                 x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/client-042")])
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, inter, root))


CHAIN = _chain_pem()
REQUEST_HEADERS = [
    (b"Host", b"api.example.org"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    b"Chrome/124.0 Safari/537.36"),
    (b"Accept", b"application/json, text/plain, */*"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Accept-Language", b"en-US,en;q=0.9"),
    (b"Connection", b"keep-alive"),
    (b"Cookie", b"session=" + b"a1b2c3d4" * 16 + b"; theme=dark; _ga=GA1.2.1234567890.1700000000"),
    (b"Authorization", b"Bearer " + b"eyJhbGciOiJSUzI1NiJ9." + b"x" * 220),
    (b"X-Request-Id", b"5f0c6b1e-8d2a-4c59-9a3b-7e4f2d1c0b9a"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"348"),
    (b"X-Forwarded-For", b"198.51.100.23"),
]
IDENTITY_LINES = (b"X-Amzn-Mtls-Clientcert-Serial-Number: 5C6F6200B9C837C9\r\n"
                  b"X-Amzn-Mtls-Clientcert-Subject: CN=client-042,O=Example Org,C=US\r\n")


def _run(benchmark, key, fn, *args):
    result = benchmark(fn, *args)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and not getattr(benchmark, "disabled", False):
        _medians[key] = stats.stats.median
    return result


@NATIVE_REQUIRED
def test_quote_alb_native(benchmark):
    assert _run(benchmark, "alb-native", headers.NATIVE.quote_pem_alb, CHAIN) == \
        urllib.parse.quote(CHAIN, safe="+=/").encode()


def test_quote_alb_pure(benchmark):
    _run(benchmark, "alb-pure", headers.PYTHON.quote_pem_alb, CHAIN)


def test_quote_alb_urllib(benchmark):
    _run(benchmark, "alb-urllib", urllib.parse.quote, CHAIN, "+=/")


@NATIVE_REQUIRED
def test_quote_envoy_native(benchmark):
    _run(benchmark, "envoy-native", headers.NATIVE.quote_pem_envoy, CHAIN)


def test_quote_envoy_pure(benchmark):
    _run(benchmark, "envoy-pure", headers.PYTHON.quote_pem_envoy, CHAIN)


@NATIVE_REQUIRED
def test_encode_request_head_native(benchmark):
    _run(benchmark, "head-native", headers.NATIVE.encode_request_head, b"POST", b"/v1/orders",
         REQUEST_HEADERS, IDENTITY_LINES, b"203.0.113.7", 51234, 443, frozenset(),
         b"Content-Length: 348\r\n")


def test_encode_request_head_pure(benchmark):
    _run(benchmark, "head-pure", headers.PYTHON.encode_request_head, b"POST", b"/v1/orders",
         REQUEST_HEADERS, IDENTITY_LINES, b"203.0.113.7", 51234, 443, frozenset(),
         b"Content-Length: 348\r\n")


# A listener with `strip_request_headers` globs: the one case where the native encoder calls back
# into Python (the compiled glob matcher) for each kept header.
GLOB_POLICY = headers.HeaderPolicy("drop", ("x-internal-*", "x-debug-*"))


@NATIVE_REQUIRED
def test_encode_request_head_native_globs(benchmark):
    _run(benchmark, "head-native-globs", headers.NATIVE.encode_request_head, b"POST", b"/v1/orders",
         REQUEST_HEADERS, IDENTITY_LINES, b"203.0.113.7", 51234, 443, frozenset(),
         b"Content-Length: 348\r\n", GLOB_POLICY)


def test_screen_request(benchmark):
    _run(benchmark, "screen", headers.screen_request, headers.DEFAULT_POLICY, REQUEST_HEADERS,
         frozenset({b"keep-alive"}))


def test_ratios(capsys):
    """Print the ratios of median times; the native ALB quoting must beat urllib by 10x."""
    if not _medians:
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    m = _medians
    lines = [f"chain PEM: {len(CHAIN)} bytes, 3 certificates; head: {len(REQUEST_HEADERS)} headers"]

    def ratio(label, slow, fast):
        if slow in m and fast in m:
            lines.append(f"{label}: {m[slow] / m[fast]:.1f}x  "
                         f"({m[slow] * 1e6:.2f} us / {m[fast] * 1e6:.2f} us)")

    ratio("ALB quote   native vs urllib.parse.quote", "alb-urllib", "alb-native")
    ratio("ALB quote   native vs pure", "alb-pure", "alb-native")
    ratio("ALB quote   pure vs urllib.parse.quote", "alb-urllib", "alb-pure")
    ratio("Envoy quote native vs pure", "envoy-pure", "envoy-native")
    ratio("request head native vs pure", "head-pure", "head-native")
    ratio("request head native, globs vs none", "head-native-globs", "head-native")
    if "screen" in m:
        lines.append(f"screen_request, common case: {m['screen'] * 1e9:.0f} ns")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    if "alb-native" in m:
        assert m["alb-urllib"] / m["alb-native"] >= 10
