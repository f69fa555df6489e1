"""The fuzz targets: each takes bytes and must return normally or raise one of the gateway's own
errors. Shared by the atheris entry points (fuzz_*.py) and the hypothesis tests."""
from __future__ import annotations

import functools

from gateway import config, headers, http1
from gateway.errors import ConfigError, GatewayError


def http1_request(data: bytes) -> None:
    """Arbitrary bytes, split at data-derived points, into a RequestReader."""
    reader = http1.RequestReader(http1.HTTPLimits(max_header_bytes=4096, max_header_count=32,
                                                  max_request_line_bytes=1024))
    step = (data[0] % 17 + 1) if data else 1
    try:
        for i in range(0, len(data), step):
            reader.feed(data[i:i + step])
            while reader.next_event() is not None:
                pass
        reader.feed_eof()
    except GatewayError:
        pass


def http1_response(data: bytes) -> None:
    reader = http1.ResponseReader(max_header_bytes=4096, max_header_count=32)
    reader.expect(b"HEAD" if data[:1] == b"H" else b"GET")
    try:
        reader.feed(data)
        while reader.next_event() is not None:
            pass
        reader.feed_eof()
        while reader.next_event() is not None:
            pass
    except GatewayError:
        pass


def header_twins(data: bytes) -> None:
    """Pure and native encoders agree byte for byte on anything."""
    native = headers.NATIVE
    pure = headers.PYTHON
    for name in ("quote_pem_alb", "quote_pem_envoy", "sf_binary"):
        a = getattr(pure, name)(data)
        if native is not None:
            assert getattr(native, name)(data) == a, name
    lines = data.split(b"\n")
    hdrs = []
    for line in lines[1:16]:
        n, _, v = line.partition(b":")
        hdrs.append((n.strip() or b"x", v.strip().replace(b"\r", b"")))
    args = (b"GET", b"/" + lines[0][:64].replace(b" ", b"").replace(b"\r", b""), hdrs, b"", b"10.0.0.1",
            1234, 443, frozenset(), b"")
    try:
        a = pure.encode_request_head(*args)
    except (ValueError, GatewayError):
        a = None
    if native is not None:
        try:
            b = native.encode_request_head(*args)
        except (ValueError, GatewayError):
            b = None
        assert a == b


@functools.lru_cache(maxsize=1)
def _seed_chain() -> tuple[bytes, bytes, object]:
    from cryptography.hazmat.primitives.serialization import Encoding
    from gateway import pki
    from gateway.trust import TrustStore, Verifier
    root = pki.make_root("fuzz root")
    inter = pki.make_intermediate(root, "fuzz intermediate")
    leaf = pki.make_client(inter, "fuzz", san_dns=["a.example"], san_uri=["spiffe://x/y"])
    verifier = Verifier(TrustStore("fuzz", [root.cert]), max_chain_depth=4)
    return leaf.der, inter.cert.public_bytes(Encoding.DER), verifier


def identity(data: bytes) -> None:
    """A real certificate with bytes of it replaced: field extraction and the verifier either give
    a value or one of our errors; the verifier always gives a verdict (fails closed)."""
    from gateway.identity import identity_from_der
    leaf, inter, verifier = _seed_chain()
    mutated = bytearray(leaf)
    for i in range(0, len(data) - 2, 3):
        pos = (data[i] << 8 | data[i + 1]) % len(mutated)
        mutated[pos] = data[i + 2]
    der = bytes(mutated) if data[:1] != b"\x00" else data
    try:
        identity_from_der((der, inter))
    except GatewayError:
        pass
    verdict = verifier.verify_der((der, inter))
    assert verdict.status is not None
    if der != leaf:
        assert not verdict.ok or der == leaf


def config_text(data: bytes) -> None:
    try:
        config.loads(data.decode("utf-8", "replace"), source="<fuzz>")
    except ConfigError:
        pass
