"""gateway.headers: identity header styles, stripping, head encoding; pure and native twins."""
from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import headers
from gateway.errors import NativeUnavailable
from gateway.identity import Identity, VerifyStatus, identity_from_certificates

UTC = dt.timezone.utc
NOT_BEFORE = dt.datetime(2023, 9, 21, 1, 50, 17, tzinfo=UTC)
NOT_AFTER = dt.datetime(2024, 9, 20, 1, 50, 17, tzinfo=UTC)

needs_native = pytest.mark.skipif(
    headers.NATIVE is None, reason="gateway._headers_c is not built (run `python -m pip install -e .`)")

IMPLS = [
    pytest.param("python", id="python"),
    pytest.param("native", id="native", marks=needs_native),
]


@pytest.fixture(params=IMPLS)
def impl(request):
    """Each implementation, also made the module-wide choice so identity_block uses it."""
    chosen = headers.set_native("off" if request.param == "python" else "on")
    assert chosen == request.param
    yield headers.PYTHON if request.param == "python" else headers.NATIVE
    headers.set_native("auto")


# ---------------------------------------------------------------------------------------------
# A small PKI: root -> issuing CA -> client leaf with DNS and URI SANs.
# ---------------------------------------------------------------------------------------------

def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, key, signer, serial, *, ca, sans=()):
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(serial)
         .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    root_key, int_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_name = _name("Test Root CA", "Example Org")
    int_name = _name("Test Issuing CA", "Example Org")
    root = _cert(root_name, root_name, root_key, root_key, 1, ca=True)
    inter = _cert(int_name, root_name, int_key, root_key, 2, ca=True)
    leaf = _cert(_name("client", "Org"), int_name, leaf_key, int_key, 0x03A5B1, ca=False,
                 sans=[x509.DNSName("client.example"), x509.DNSName("alt.example"),
                       x509.UniformResourceIdentifier("spiffe://example.org/client")])
    return leaf, inter, root


def _identity(certs, status=VerifyStatus.SUCCESS) -> Identity:
    ders = tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)
    return identity_from_certificates(list(certs), ders, status)


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _alb_reference(data: bytes) -> bytes:
    return urllib.parse.quote(data, safe="+=/").encode("ascii")


def _envoy_reference(data: bytes) -> bytes:
    # Envoy source/common/http/utility.cc: kUrlEncodedCharTable = ~(kAlphanumeric | "*-._")
    keep = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-._")
    return b"".join(bytes((c,)) if c in keep else b"%%%02X" % c for c in data)


def _lines(block: bytes) -> list[tuple[bytes, bytes]]:
    assert block.endswith(b"\r\n")
    out = []
    for line in block[:-2].split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line and b"\0" not in line
        name, sep, value = line.partition(b": ")
        assert sep
        out.append((name, value))
    return out


def _parse_xfcc(value: bytes) -> list[list[tuple[str, str]]]:
    """Split an XFCC value into elements of (key, value), honouring quoted-pairs."""
    elements, pairs, key, buf = [], [], None, []
    i, quoted, s = 0, False, value.decode("utf-8")
    while i < len(s):
        ch = s[i]
        if quoted:
            if ch == "\\":
                buf.append(s[i + 1])
                i += 1
            elif ch == '"':
                quoted = False
            else:
                buf.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == "=" and key is None:
            key, buf = "".join(buf), []
        elif ch in ";,":
            pairs.append((key, "".join(buf)))
            key, buf = None, []
            if ch == ",":
                elements.append(pairs)
                pairs = []
        else:
            buf.append(ch)
        i += 1
    assert not quoted
    pairs.append((key, "".join(buf)))
    elements.append(pairs)
    return elements


# ---------------------------------------------------------------------------------------------
# Byte functions
# ---------------------------------------------------------------------------------------------

def test_alb_quoting_is_urllib_quote_with_plus_equals_slash_safe(impl, pki):
    chain = b"".join(_pem(c) for c in pki)
    assert impl.quote_pem_alb(chain) == _alb_reference(chain)
    assert impl.quote_pem_alb(b"-----BEGIN CERTIFICATE-----\nab+/=\n") == \
        b"-----BEGIN%20CERTIFICATE-----%0Aab+/=%0A"
    # every byte value, alone
    for b in range(256):
        assert impl.quote_pem_alb(bytes((b,))) == _alb_reference(bytes((b,))), b
    assert impl.quote_pem_alb(b"") == b""


def test_envoy_quoting(impl, pki):
    chain = b"".join(_pem(c) for c in pki)
    assert impl.quote_pem_envoy(chain) == _envoy_reference(chain)
    assert impl.quote_pem_envoy(b"a+b/c=d ~*-._\n") == b"a%2Bb%2Fc%3Dd%20%7E*-._%0A"
    for b in range(256):
        assert impl.quote_pem_envoy(bytes((b,))) == _envoy_reference(bytes((b,))), b


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"abcd", bytes(range(256))])
def test_sf_binary(impl, data):
    out = impl.sf_binary(data)
    assert out == b":" + base64.b64encode(data) + b":"
    assert base64.b64decode(out[1:-1], validate=True) == data


@needs_native
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000))
def test_native_byte_functions_equal_pure(data):
    n, p = headers.NATIVE, headers.PYTHON
    assert n.quote_pem_alb(data) == p.quote_pem_alb(data) == _alb_reference(data)
    assert n.quote_pem_envoy(data) == p.quote_pem_envoy(data)
    assert n.sf_binary(data) == p.sf_binary(data)


def test_pem_matches_openssl_layout(pki):
    for cert in pki:
        assert headers.pem(cert.public_bytes(serialization.Encoding.DER)) == _pem(cert)


# ---------------------------------------------------------------------------------------------
# identity_block
# ---------------------------------------------------------------------------------------------

def test_alb_verify_mode_block(impl, pki):
    leaf, inter, _root = pki
    ident = _identity(pki)
    block = headers.identity_block(ident, True, ("alb",))
    leaf_value = _alb_reference(_pem(leaf))
    assert block == (
        b"X-Amzn-Mtls-Clientcert-Serial-Number: 03A5B1\r\n"
        b"X-Amzn-Mtls-Clientcert-Issuer: CN=Test Issuing CA,O=Example Org,C=US\r\n"
        b"X-Amzn-Mtls-Clientcert-Subject: CN=client,O=Org,C=US\r\n"
        b"X-Amzn-Mtls-Clientcert-Validity: NotBefore=2023-09-21T01:50:17Z;NotAfter=2024-09-20T01:50:17Z\r\n"
        b"X-Amzn-Mtls-Clientcert-Leaf: " + leaf_value + b"\r\n")
    assert leaf_value.startswith(b"-----BEGIN%20CERTIFICATE-----%0AMII")
    assert leaf_value.endswith(b"%0A-----END%20CERTIFICATE-----%0A")
    assert b"%2B" not in leaf_value and b"%2F" not in leaf_value and b"%3D" not in leaf_value
    assert urllib.parse.unquote_to_bytes(leaf_value) == _pem(leaf)


def test_alb_passthrough_sends_whole_chain_leaf_first(impl, pki):
    ident = _identity(pki, VerifyStatus.NOT_VERIFIED)
    block = headers.identity_block(ident, False, ("alb",))
    (name, value), = _lines(block)
    assert name == b"X-Amzn-Mtls-Clientcert"
    assert value == _alb_reference(b"".join(_pem(c) for c in pki))
    pems = urllib.parse.unquote_to_bytes(value).split(b"-----END CERTIFICATE-----\n")[:-1]
    loaded = [x509.load_pem_x509_certificate(p + b"-----END CERTIFICATE-----\n") for p in pems]
    assert loaded == list(pki)


@pytest.mark.parametrize("serial, text", [(1, b"01"), (0x80, b"80"), (0xABC, b"0ABC"),
                                          (0x03A5B1, b"03A5B1"), (2**159 + 5, b"8" + b"0" * 38 + b"5")])
def test_alb_serial_is_uppercase_hex_in_whole_bytes(serial, text):
    assert headers.serial_hex(serial).encode() == text


def test_xfcc(impl, pki):
    leaf, inter, root = pki
    ident = _identity(pki)
    block = headers.identity_block(ident, True, ("xfcc",), by=b"spiffe://gw.example/edge")
    cert = _envoy_reference(_pem(leaf))
    chain = _envoy_reference(_pem(leaf) + _pem(inter) + _pem(root))
    assert block == (
        b"X-Forwarded-Client-Cert: By=spiffe://gw.example/edge;Hash=" + ident.fingerprint.encode()
        + b';Cert="' + cert + b'";Chain="' + chain + b'";Subject="CN=client,O=Org,C=US"'
        + b";URI=spiffe://example.org/client;DNS=client.example;DNS=alt.example\r\n")
    # same in passthrough; no By= without `by`
    plain = headers.identity_block(ident, False, ("xfcc",))
    assert plain.startswith(b"X-Forwarded-Client-Cert: Hash=")


def test_xfcc_quotes_values_with_separators(impl, pki):
    subject = 'CN=a\\,b\\;c=d\\"e\\\\,O=Org "x"'
    ident = Identity(fingerprint="ab" * 32, serial=7, subject=subject, issuer="CN=CA",
                     not_before=NOT_BEFORE, not_after=NOT_AFTER, san_dns=("plain.example",),
                     san_uri=("spiffe://x/a;b=c,d",), chain_der=(pki[0].public_bytes(serialization.Encoding.DER),))
    block = headers.identity_block(ident, True, ("xfcc",), by=b'by"x')
    (name, value), = _lines(block)
    assert b'Subject="CN=a\\\\,b\\\\;c=d\\\\\\"e\\\\\\\\,O=Org \\"x\\""' in value
    assert b'URI="spiffe://x/a;b=c,d"' in value
    assert b";DNS=plain.example" in value
    (element,) = _parse_xfcc(value)
    assert [k for k, _ in element] == ["By", "Hash", "Cert", "Chain", "Subject", "URI", "DNS"]
    got = dict(element)
    assert got["Subject"] == subject
    assert got["URI"] == "spiffe://x/a;b=c,d"
    assert got["By"] == 'by"x'


def test_xfcc_without_uri_san_has_empty_uri(impl, pki):
    leaf, inter, root = pki
    ident = _identity([inter, root])         # a CA cert: no SANs
    value = _lines(headers.identity_block(ident, True, ("xfcc",)))[0][1]
    assert value.endswith(b';Subject="CN=Test Issuing CA,O=Example Org,C=US";URI=')


def test_rfc9440_round_trip(impl, pki):
    leaf, inter, root = pki
    ident = _identity(pki)
    lines = _lines(headers.identity_block(ident, True, ("rfc9440",)))
    assert [n for n, _ in lines] == [b"Client-Cert", b"Client-Cert-Chain"]
    cert_value, chain_value = lines[0][1], lines[1][1]
    assert cert_value[:1] == cert_value[-1:] == b":"
    assert base64.b64decode(cert_value[1:-1], validate=True) == ident.leaf_der
    members = chain_value.split(b", ")
    assert [base64.b64decode(m[1:-1], validate=True) for m in members] == list(ident.chain_der[1:])
    # only a leaf: no Client-Cert-Chain at all (an empty list is not serialised, RFC 8941 section 4.1)
    alone = _identity([leaf])
    assert [n for n, _ in _lines(headers.identity_block(alone, True, ("rfc9440",)))] == [b"Client-Cert"]


def test_styles_in_order_and_cached(impl, pki):
    ident = _identity(pki)
    block = headers.identity_block(ident, True, ("rfc9440", "alb", "xfcc"))
    names = [n for n, _ in _lines(block)]
    assert names[:2] == [b"Client-Cert", b"Client-Cert-Chain"]
    assert names[2] == b"X-Amzn-Mtls-Clientcert-Serial-Number"
    assert names[-1] == b"X-Forwarded-Client-Cert"
    assert headers.identity_block(ident, True, ("rfc9440", "alb", "xfcc")) is block
    assert (True, ("rfc9440", "alb", "xfcc"), b"", ()) in ident.header_cache
    assert headers.identity_block(None, True, headers.STYLES) == b""
    with pytest.raises(ValueError):
        headers.identity_block(ident, True, ("nginx",))


HOSTILE = [
    "CN=x\r\nX-Amzn-Mtls-Clientcert-Subject: CN=admin",
    "CN=x\nClient-Cert: :AAAA:",
    "CN=x\rX-Forwarded-Client-Cert: Hash=1",
    "CN=nul\0byte,O=\x7f\x1b[31m",
    'CN=x";URI=spiffe://admin;Subject="',
    "CN=\\\";URI=spiffe://admin;x=\\\"",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_cannot_inject_headers(impl, pki, hostile):
    ident = Identity(fingerprint="cd" * 32, serial=9, subject=hostile, issuer=hostile,
                     not_before=NOT_BEFORE, not_after=NOT_AFTER,
                     san_dns=("evil\r\nclient-cert: x",), san_uri=("spiffe://a\r\nb",),
                     chain_der=(pki[0].public_bytes(serialization.Encoding.DER),))
    block = headers.identity_block(ident, True, headers.STYLES, by=b"by\r\nx: y")
    names = [n for n, _ in _lines(block)]          # asserts no CR/LF/NUL inside any line
    assert names == [b"X-Amzn-Mtls-Clientcert-Serial-Number", b"X-Amzn-Mtls-Clientcert-Issuer",
                     b"X-Amzn-Mtls-Clientcert-Subject", b"X-Amzn-Mtls-Clientcert-Validity",
                     b"X-Amzn-Mtls-Clientcert-Leaf", b"X-Forwarded-Client-Cert", b"Client-Cert"]
    subject_line = dict(_lines(block))[b"X-Amzn-Mtls-Clientcert-Subject"]
    expected = hostile.encode()
    for c in list(range(0x20)) + [0x7f]:
        expected = expected.replace(bytes((c,)), b"\\%02X" % c)
    assert subject_line == expected
    # XFCC keeps its structure: one element, the expected keys, the subject intact
    (element,) = _parse_xfcc(dict(_lines(block))[b"X-Forwarded-Client-Cert"])
    assert [k for k, _ in element] == ["By", "Hash", "Cert", "Chain", "Subject", "URI", "DNS"]
    assert dict(element)["Subject"] == expected.decode()
    # and the whole head stays a well-formed head
    head = impl.encode_request_head(b"GET", b"/", [(b"Host", b"h")], block, b"1.2.3.4", 1, 443)
    assert head.count(b"\r\n\r\n") == 1 and head.endswith(b"\r\n\r\n")


# ---------------------------------------------------------------------------------------------
# encode_request_head
# ---------------------------------------------------------------------------------------------

def test_strips_every_identity_header_any_case_any_count(impl):
    spoofed = [
        (b"X-AMZN-MTLS-CLIENTCERT", b"spoof"), (b"x-amzn-mtls-clientcert-serial-number", b"1"),
        (b"X-Amzn-Mtls-Clientcert-Issuer", b"CN=evil"), (b"x-AMZN-mtls-CLIENTCERT-subject", b"CN=a"),
        (b"X-Amzn-Mtls-Clientcert-Validity", b"x"), (b"X-Amzn-Mtls-Clientcert-Leaf", b"x"),
        (b"x-forwarded-client-cert", b"Hash=1"), (b"x-forwarded-client-cert", b"Hash=2"),
        (b"X-Forwarded-Client-Cert", b"By=x"), (b"Client-Cert", b":AAAA:"),
        (b"CLIENT-CERT-CHAIN", b":AAAA:"), (b"client-cert", b":BBBB:"),
    ]
    head = impl.encode_request_head(b"GET", b"/a?b", [(b"Host", b"example")] + spoofed + [(b"Accept", b"*/*")],
                                    b"", b"203.0.113.7", 50000, 443)
    assert head == (b"GET /a?b HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n"
                    b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
                    b"X-Forwarded-Port: 443\r\n\r\n")


def test_x_forwarded_for_is_folded_and_appended(impl):
    hdrs = [(b"X-Forwarded-For", b" 198.51.100.1, 10.0.0.1 "), (b"Host", b"h"),
            (b"x-forwarded-for", b"192.0.2.9"), (b"X-Forwarded-For", b"  "),
            (b"X-Forwarded-Proto", b"http"), (b"x-forwarded-port", b"80")]
    head = impl.encode_request_head(b"POST", b"/", hdrs, b"", b"2001:db8::1", 1, 8443)
    assert head == (b"POST / HTTP/1.1\r\nHost: h\r\n"
                    b"X-Forwarded-For: 198.51.100.1, 10.0.0.1, 192.0.2.9, 2001:db8::1\r\n"
                    b"X-Forwarded-Proto: https\r\nX-Forwarded-Port: 8443\r\n\r\n")


def test_hop_by_hop_connection_tokens_and_framing(impl):
    hdrs = [(b"Host", b"h"), (b"Connection", b"keep-alive, X-Secret, Foo"), (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Connection", b"close"), (b"TE", b"trailers"), (b"Trailer", b"X"),
            (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"h2c"), (b"Content-Length", b"12"),
            (b"X-Secret", b"s"), (b"foo", b"f"), (b"Bar", b"b")]
    head = impl.encode_request_head(b"PUT", b"/u", hdrs, b"Client-Cert: :AA==:\r\n", b"192.0.2.1",
                                    2, 443, frozenset({b"keep-alive", b"x-secret", b"FOO"}),
                                    b"Transfer-Encoding: chunked\r\n")
    assert head == (b"PUT /u HTTP/1.1\r\nHost: h\r\nBar: b\r\n"
                    b"X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n"
                    b"Client-Cert: :AA==:\r\nTransfer-Encoding: chunked\r\n\r\n")
    head = impl.encode_request_head(b"POST", b"/", [(b"Content-Length", b"999")], b"", b"", 0, 443,
                                    framing=b"Content-Length: 5\r\n")
    assert head == (b"POST / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n"
                    b"Content-Length: 5\r\n\r\n")


def test_headers_carrying_line_breaks_are_dropped(impl):
    hdrs = [(b"A", b"1"), (b"B", b"x\r\nClient-Cert: :AAAA:"), (b"C\n", b"y"), (b"D", b"z\0"),
            (b"", b"empty name"), (b"X-Forwarded-For", b"1.1.1.1\r\nX: y"), (b"E", b"5")]
    head = impl.encode_request_head(b"GET", b"/", hdrs, b"", b"192.0.2.1", 1, 443)
    assert head == (b"GET / HTTP/1.1\r\nA: 1\r\nE: 5\r\nX-Forwarded-For: 192.0.2.1\r\n"
                    b"X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n\r\n")


def test_many_headers(impl):
    hdrs = [(b"X-H%d" % i, b"v%d" % i) for i in range(300)] + [(b"client-cert", b"x")] * 50
    head = impl.encode_request_head(b"GET", b"/", hdrs, b"", b"192.0.2.1", 1, 443)
    assert head.count(b"\r\n") == 1 + 300 + 3 + 1
    assert b"client-cert" not in head.lower()


@needs_native
def test_native_drop_table_matches_pure():
    from gateway import _headers_c
    assert frozenset(_headers_c.DROPPED_NAMES) == headers.DROPPED_NAMES
    assert len(_headers_c.DROPPED_NAMES) == len(headers.DROPPED_NAMES)
    assert tuple(sorted(_headers_c.DROPPED_PREFIXES)) == headers.DROPPED_PREFIXES
    assert _headers_c.FOLDED_NAME == b"x-forwarded-for"


def test_drop_tables_are_folded_and_cover_the_third_party_table():
    for name in headers.DROPPED_NAMES | set(headers.DROPPED_PREFIXES) | headers.CONNECTION_PROTECTED:
        assert name == headers.fold_name(name), name
    for pattern in headers.THIRD_PARTY_CERT_HEADERS:
        if pattern.endswith(b"*"):
            assert pattern[:-1] in headers.DROPPED_PREFIXES
        else:
            assert pattern in headers.DROPPED_NAMES
    assert headers.IDENTITY_HEADER_NAMES <= headers.MANAGED_NAMES
    assert b"x-forwarded-for" in headers.MANAGED_NAMES


# ---------------------------------------------------------------------------------------------
# Header-name spellings: compared as backends compare them (case-insensitive, `_` equal to `-`)
# ---------------------------------------------------------------------------------------------

_BASE_HEAD = (b"X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n")

FORGED = [
    b"X_Amzn_Mtls_Clientcert_Subject", b"x-amzn-mtls-clientcert-subject",
    b"X-AMZN-MTLS-CLIENTCERT_SUBJECT", b"X_AMZN_MTLS_CLIENTCERT", b"x_amzn-mtls_clientcert-leaf",
    b"X_Forwarded_Client_Cert", b"Client_Cert", b"client_cert_chain", b"CLIENT-CERT",
    b"X_Forwarded_For", b"x_forwarded_for", b"X-Forwarded_For", b"X_Forwarded_Proto",
    b"x-forwarded_port", b"Content_Length", b"Transfer_Encoding", b"Keep_Alive", b"Proxy_Connection",
    b"X-SSL-Client-S-DN", b"SSL_CLIENT_S_DN", b"ssl-client-cert", b"SSL_CLIENT_CERT_CHAIN_0",
    b"X-SSL-Cert", b"X-SSL", b"X_SSL_Client_Verify", b"SSL_CIPHER", b"ssl_session_id",
    b"X-Forwarded-Tls-Client-Cert", b"X_Forwarded_Tls_Client_Cert_Info",
    b"X-ARR-ClientCert", b"X_ARR_SSL",
    b"X-Client-Cert-Present", b"X-Client-Cert-Chain-Verified", b"X-Client-Cert-Error",
    b"X-Client-Cert-Hash", b"X-Client-Cert-Serial-Number", b"X-Client-Cert-SPIFFE",
    b"X-Client-Cert-URI-SANs", b"X-Client-Cert-DNSName-SANs", b"X-Client-Cert-Valid-Not-Before",
    b"X_Client_Cert_Valid_Not_After", b"X-Client-Cert", b"X-Client-Verify", b"X_Client_DN",
    b"Cf-Client-Cert-Der-Base64", b"CF_CLIENT_CERT_SHA256",
    b"CloudFront-Viewer-Cert-Serial-Number", b"CloudFront-Viewer-Cert-Issuer",
    b"CloudFront-Viewer-Cert-Subject", b"CloudFront-Viewer-Cert-Present",
    b"CloudFront-Viewer-Cert-Sha256", b"CloudFront-Viewer-Cert-Validity",
    b"CLOUDFRONT_VIEWER_CERT_PEM",
]


@pytest.mark.parametrize("mode", headers.UNDERSCORE_MODES)
def test_managed_and_third_party_names_dropped_in_every_spelling_and_mode(impl, mode):
    policy = headers.HeaderPolicy(mode)
    hdrs = [(b"Host", b"h")] + [(name, b"CN=admin") for name in FORGED * 2] + [(b"Accept", b"*/*")]
    head = impl.encode_request_head(b"GET", b"/", hdrs, b"", b"192.0.2.1", 1, 443, frozenset(), b"",
                                    policy)
    assert head == b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n" + _BASE_HEAD + b"\r\n"
    for name in FORGED:
        assert policy.strips(name), name


def test_forged_x_forwarded_for_is_dropped_not_folded(impl):
    hdrs = [(b"X-Forwarded-For", b"198.51.100.1"), (b"X_Forwarded_For", b"10.6.6.6"),
            (b"x-forwarded_for", b"10.7.7.7"), (b"X-FORWARDED-FOR", b"198.51.100.2")]
    head = impl.encode_request_head(b"GET", b"/", hdrs, b"", b"192.0.2.1", 1, 443)
    assert head == (b"GET / HTTP/1.1\r\nX-Forwarded-For: 198.51.100.1, 198.51.100.2, 192.0.2.1\r\n"
                    b"X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n\r\n")


def test_near_misses_are_kept(impl):
    # Prefix patterns are prefixes of folded names, nothing looser.
    near = [(b"X-SSLv", b"1"), (b"X-Clientcert", b"2"), (b"Client-Certs", b"3"), (b"SSL-Clientx", b"4"),
            (b"X-Client-Ce", b"5"), (b"X-Forwarded-Host", b"6"), (b"CloudFront-Viewer-Country", b"7"),
            (b"Cf-Client", b"8"), (b"X-Amzn-Trace-Id", b"9")]
    head = impl.encode_request_head(b"GET", b"/", near, b"", b"192.0.2.1", 1, 443)
    assert head == (b"GET / HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in near)
                    + _BASE_HEAD + b"\r\n")


@pytest.mark.parametrize("mode, kept", [("drop", False), ("reject", False), ("keep", True)])
def test_other_underscore_names_follow_the_policy(impl, mode, kept):
    hdrs = [(b"Host", b"h"), (b"X_Custom", b"1"), (b"my_header", b"2"), (b"X-Plain", b"3")]
    head = impl.encode_request_head(b"GET", b"/", hdrs, b"", b"192.0.2.1", 1, 443, frozenset(), b"",
                                    headers.HeaderPolicy(mode))
    middle = b"X_Custom: 1\r\nmy_header: 2\r\n" if kept else b""
    assert head == (b"GET / HTTP/1.1\r\nHost: h\r\n" + middle + b"X-Plain: 3\r\n" + _BASE_HEAD
                    + b"\r\n")
    if mode == "drop":       # and no policy at all means the defaults
        assert impl.encode_request_head(b"GET", b"/", hdrs, b"", b"192.0.2.1", 1, 443) == head


def test_strip_request_headers_globs(impl):
    policy = headers.HeaderPolicy("keep", ("x-internal-*", "exact_name", "a*b*c", "*-user"))
    hdrs = [(b"X-Internal-Role", b"1"), (b"X_INTERNAL_ROLE", b"2"), (b"x-internal-", b"3"),
            (b"X-Internal", b"kept"), (b"Exact-Name", b"4"), (b"EXACT_NAME", b"5"), (b"Exact-Names", b"kept"),
            (b"abc", b"6"), (b"A-xB-yC", b"7"), (b"abcd", b"kept"), (b"Remote-User", b"8"),
            (b"Remote_User", b"9"), (b"User", b"kept"), (b"Host", b"h")]
    head = impl.encode_request_head(b"GET", b"/", hdrs, b"", b"192.0.2.1", 1, 443, frozenset(), b"",
                                    policy)
    assert head == (b"GET / HTTP/1.1\r\nX-Internal: kept\r\nExact-Names: kept\r\nabcd: kept\r\n"
                    b"User: kept\r\nHost: h\r\n" + _BASE_HEAD + b"\r\n")


def test_connection_options_compare_folded_and_never_touch_managed_names(impl):
    policy = headers.HeaderPolicy("keep")
    hdrs = [(b"X-Secret", b"1"), (b"x_secret", b"2"), (b"Foo_Bar", b"3"), (b"Other", b"4"),
            (b"X-Forwarded-For", b"198.51.100.1"), (b"Host", b"h")]
    tokens = frozenset({b"x_secret", b"foo-bar", b"x-forwarded-for", b"keep-alive", b"close",
                        b"x-amzn-mtls-clientcert-subject"})
    head = impl.encode_request_head(b"GET", b"/", hdrs, b"X-Amzn-Mtls-Clientcert-Subject: CN=c\r\n",
                                    b"192.0.2.1", 1, 443, tokens, b"", policy)
    assert head == (b"GET / HTTP/1.1\r\nOther: 4\r\nHost: h\r\n"
                    b"X-Forwarded-For: 198.51.100.1, 192.0.2.1\r\nX-Forwarded-Proto: https\r\n"
                    b"X-Forwarded-Port: 443\r\nX-Amzn-Mtls-Clientcert-Subject: CN=c\r\n\r\n")


def test_fold_name():
    assert headers.fold_name(b"X_Amzn-MTLS_clientcert") == b"x-amzn-mtls-clientcert"
    # every byte but a letter or digit is a separator to some backend (Apache 2.2, PHP)
    assert headers.fold_name(b"X.Amzn~Mtls!Clientcert") == b"x-amzn-mtls-clientcert"
    assert headers.fold_name(b"\xc3\x89_A") == b"---a"


def test_header_policy_is_immutable_validated_and_comparable():
    p = headers.HeaderPolicy("reject", ("X-Internal-*",))
    assert p.strip == ("x-internal-*",) and p.underscore == "reject" and not p.keep_underscore
    assert p == headers.HeaderPolicy("reject", ("x-internal-*",))
    assert hash(p) == hash(headers.HeaderPolicy("reject", ("x-internal-*",)))
    assert p != headers.HeaderPolicy("drop", ("x-internal-*",))
    assert headers.HeaderPolicy().match is None and headers.HeaderPolicy("keep").keep_underscore
    with pytest.raises(AttributeError):
        p.underscore = "keep"
    with pytest.raises(AttributeError):
        del p.strip
    with pytest.raises(ValueError):
        headers.HeaderPolicy("allow")
    assert "reject" in repr(p)


# ---------------------------------------------------------------------------------------------
# screen_request
# ---------------------------------------------------------------------------------------------

_PLAIN = [(b"Host", b"h"), (b"User-Agent", b"x"), (b"X-Amzn-Mtls-Clientcert-Subject", b"CN=a"),
          (b"Accept", b"*/*")]


@pytest.mark.parametrize("mode", headers.UNDERSCORE_MODES)
def test_screen_common_case_is_none(mode):
    policy = headers.HeaderPolicy(mode, ("x-internal-*",))
    assert headers.screen_request(policy, _PLAIN, frozenset()) is None
    assert headers.screen_request(policy, [], frozenset()) is None
    # ordinary options, hop-by-hop names and third-party names are no reason to refuse
    for token in (b"keep-alive", b"close", b"upgrade", b"te", b"expect", b"x-secret", b"x-ssl-client-s-dn",
                  b"keep_alive"):
        assert headers.screen_request(policy, _PLAIN, frozenset({token})) is None, token


def test_first_nonstandard(impl):
    assert impl.first_nonstandard([]) == -1
    assert impl.first_nonstandard(_PLAIN) == -1
    assert impl.first_nonstandard(_PLAIN + [(b"a_b", b"")] + _PLAIN + [(b"_", b"")]) == len(_PLAIN)
    assert impl.first_nonstandard([(b"", b"x_y"), (b"ok", b"_"), (b"_x", b"")]) == 2
    assert impl.first_nonstandard([[b"x", b"1"], (b"y_", b"2")]) == 1    # any (name, value) pair
    assert impl.first_nonstandard([(b"a-b", b""), (b"x.y", b"")]) == 1
    assert impl.first_nonstandard([(b"A-Z-a-z-0-9", b""), (b"\xc3\x89", b"")]) == 1
    with pytest.raises(TypeError):
        impl.first_nonstandard([("str_name", b"v")])


def test_screen_common_case_allocates_nothing():
    import sys
    policy = headers.HeaderPolicy()
    hdrs = _PLAIN * 5
    empty = frozenset()
    headers.screen_request(policy, hdrs, empty)
    before = sys.getallocatedblocks()
    for _ in range(1000):
        headers.screen_request(policy, hdrs, empty)
    assert sys.getallocatedblocks() - before < 50


@pytest.mark.parametrize("token", [b"x-amzn-mtls-clientcert-subject", b"x_amzn_mtls_clientcert_subject",
                                   b"X-AMZN-MTLS-CLIENTCERT", b"x-forwarded-for", b"x_forwarded_for",
                                   b"x-forwarded-proto", b"x-forwarded-port", b"client-cert",
                                   b"client_cert_chain", b"x-forwarded-client-cert", b"content-length",
                                   b"transfer-encoding", b"host"])
@pytest.mark.parametrize("mode", headers.UNDERSCORE_MODES)
def test_screen_refuses_connection_options_naming_gateway_headers(token, mode):
    got = headers.screen_request(headers.HeaderPolicy(mode), _PLAIN, frozenset({token, b"keep-alive"}))
    assert got == headers.Screening(True, "connection_names_managed_header", got.message, (token,))
    assert got.message


def test_screen_drop_mode_logs_underscore_names_once():
    hdrs = _PLAIN + [(b"X_Custom", b"1"), (b"X_Custom", b"2"), (b"my_header", b"3")]
    got = headers.screen_request(headers.HeaderPolicy(), hdrs, frozenset())
    assert got == headers.Screening(False, "underscore_headers_dropped", got.message,
                                    (b"X_Custom", b"my_header"))
    # keep mode: nothing dropped, nothing to say
    assert headers.screen_request(headers.HeaderPolicy("keep"), hdrs, frozenset()) is None


@pytest.mark.parametrize("mode", headers.UNDERSCORE_MODES)
def test_screen_managed_spellings_are_dropped_and_logged_in_every_mode(mode):
    hdrs = _PLAIN + [(b"X_Amzn_Mtls_Clientcert_Subject", b"CN=admin"), (b"X_Forwarded_For", b"1.1.1.1"),
                     (b"SSL_CLIENT_S_DN", b"CN=admin"), (b"X_Internal_Role", b"admin")]
    got = headers.screen_request(headers.HeaderPolicy(mode, ("x-internal-*",)), hdrs, frozenset())
    assert got == headers.Screening(False, "managed_header_spelling_dropped", got.message,
                                    (b"X_Amzn_Mtls_Clientcert_Subject", b"X_Forwarded_For",
                                     b"SSL_CLIENT_S_DN", b"X_Internal_Role"))


def test_screen_reject_mode_refuses_other_underscore_names():
    hdrs = _PLAIN + [(b"X_Amzn_Mtls_Clientcert_Subject", b"CN=admin"), (b"X_Custom", b"1"),
                     (b"X_Custom", b"1")]
    got = headers.screen_request(headers.HeaderPolicy("reject"), hdrs, frozenset())
    assert got == headers.Screening(True, "underscore_header_rejected", got.message, (b"X_Custom",))
    # a connection option naming a gateway header is refused first, with its own reason
    got = headers.screen_request(headers.HeaderPolicy("reject"), hdrs, frozenset({b"x-forwarded-for"}))
    assert got.refuse and got.reason == "connection_names_managed_header"


# Property tests over arbitrary header lists.

_TCHAR = st.sampled_from(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_KNOWN = sorted(headers.DROPPED_NAMES | {b"x-forwarded-for", b"host", b"foo", b"x-secret"})


@st.composite
def _random_case(draw, name: bytes) -> bytes:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return bytes(c ^ 0x20 if f and 97 <= c <= 122 else c for c, f in zip(name, flips))


_NAMES = st.one_of(
    st.sampled_from(_KNOWN).flatmap(_random_case),
    st.lists(_TCHAR, min_size=1, max_size=20).map(bytes),
)
_SAFE_VALUES = st.binary(max_size=60).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b""))
_ANY_VALUES = st.one_of(_SAFE_VALUES, st.binary(max_size=20))
_IDENTITY_LINES = st.sampled_from([b"", b"Client-Cert: :AA==:\r\n",
                                   b"X-Amzn-Mtls-Clientcert: x\r\nX-Forwarded-Client-Cert: Hash=1\r\n"])
_TOKENS = st.frozensets(st.one_of(st.sampled_from(_KNOWN).flatmap(_random_case),
                                  st.lists(_TCHAR, min_size=1, max_size=8).map(bytes)), max_size=4)
_IP = st.sampled_from([b"", b"192.0.2.1", b"2001:db8::7"])


def _args(draw_headers, policies=st.none()):
    return st.tuples(st.sampled_from([b"GET", b"POST"]), st.sampled_from([b"/", b"/p?q=1"]),
                     draw_headers, _IDENTITY_LINES, _IP, st.integers(0, 65535),
                     st.integers(0, 65535), _TOKENS,
                     st.sampled_from([b"", b"Content-Length: 5\r\n"]), policies)


def _call(fn, args):
    method, target, hdrs, ident, ip, cport, lport, tokens, framing, policy = args
    if policy is None:        # the call as it was before policies existed
        return fn(method, target, hdrs, ident, ip, cport, lport, tokens, framing)
    return fn(method, target, hdrs, ident, ip, cport, lport, tokens, framing, policy)


# Names in many spellings: managed names, third-party names, glob matches and near misses, each
# with random letter case and random `-` <-> `_` swaps.
_GLOBS = [(), ("x-internal-*",), ("x-internal-*", "my_header", "a*b*c"), ("*-user", "exact-name")]
_SPELLING_BASES = sorted(headers.MANAGED_NAMES | {p + b"x" for p in headers.DROPPED_PREFIXES} | {
    b"ssl-client-s-dn", b"x-ssl-client-cert", b"x-ssl-cert", b"x-client-cert-present",
    b"cf-client-cert-sha256", b"cloudfront-viewer-cert-pem", b"x-forwarded-tls-client-cert-info",
    b"x-internal-user", b"x-internal", b"my-header", b"a-b-c", b"remote-user", b"exact-name",
    b"host", b"foo", b"x-secret", b"x-sslx", b"x-clientcert", b"client-certs", b"accept"})


@st.composite
def _respelled(draw, name: bytes) -> bytes:
    out = bytearray(name)
    for i, c in enumerate(out):
        if draw(st.booleans()):
            if 97 <= c <= 122 or 65 <= c <= 90:
                out[i] = c ^ 0x20
            elif c == 45 or c == 95:
                # the separators backends fold together: CGI/WSGI's "_", and the "." or "~" that
                # Apache 2.2 and PHP turn into "_" as well
                out[i] = draw(st.sampled_from(b"-_.~"))
    return bytes(out)


_SPELLINGS = st.sampled_from(_SPELLING_BASES).flatmap(_respelled)
_ALL_NAMES = st.one_of(_SPELLINGS, _NAMES)
_POLICIES = st.builds(headers.HeaderPolicy, st.sampled_from(headers.UNDERSCORE_MODES),
                      st.sampled_from(_GLOBS))
_SPELLED_TOKENS = st.frozensets(st.one_of(_SPELLINGS, st.lists(_TCHAR, min_size=1, max_size=8).map(bytes)),
                                max_size=4)


def _upper_fold(name: bytes) -> bytes:
    """The broadest CGI meta-variable spelling: upper case, and every byte that is not a letter or
    digit `_` (RFC 3875 4.1.18 maps `-`; Apache 2.2's http2env and PHP map every such byte)."""
    return bytes(c if 48 <= c <= 57 or 65 <= c <= 90 else (c - 32 if 97 <= c <= 122 else 95)
                 for c in name)


def _unusual(name: bytes) -> bool:
    """A name with a byte other than a letter, a digit or `-` (`_` first of all)."""
    return any(not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 45) for c in name)


# The stripped names, written out here independently of gateway.headers' tables (its
# THIRD_PARTY_CERT_HEADERS documents the sources), in the CGI meta-variable spelling.
_EXPECTED_MANAGED = {
    "X_AMZN_MTLS_CLIENTCERT", "X_AMZN_MTLS_CLIENTCERT_SERIAL_NUMBER", "X_AMZN_MTLS_CLIENTCERT_ISSUER",
    "X_AMZN_MTLS_CLIENTCERT_SUBJECT", "X_AMZN_MTLS_CLIENTCERT_VALIDITY", "X_AMZN_MTLS_CLIENTCERT_LEAF",
    "X_FORWARDED_CLIENT_CERT", "CLIENT_CERT", "CLIENT_CERT_CHAIN",
    # identity_fields, report-only mode's verdict and the signature's default name
    "X_AMZN_MTLS_CLIENTCERT_SHA256_FINGERPRINT", "X_AMZN_MTLS_CLIENTCERT_SAN_DNS",
    "X_AMZN_MTLS_CLIENTCERT_SAN_URI", "X_AMZN_MTLS_CLIENTCERT_SAN_EMAIL",
    "X_AMZN_MTLS_CLIENTCERT_SPIFFE_ID", "X_MTLS_VERIFY_STATUS", "X_MTLS_IDENTITY_SIGNATURE",
    "X_FORWARDED_FOR", "X_FORWARDED_PROTO", "X_FORWARDED_PORT",
    "CONNECTION", "KEEP_ALIVE", "PROXY_CONNECTION", "TE", "TRAILER", "TRANSFER_ENCODING", "UPGRADE",
    "CONTENT_LENGTH",
    "SSL_SESSION_ID", "X_SSL", "X_ARR_CLIENTCERT", "X_ARR_SSL", "X_CLIENT_VERIFY", "X_CLIENT_DN",
}
_EXPECTED_PREFIXES = ("SSL_CLIENT_", "SSL_CIPHER", "X_SSL_", "X_FORWARDED_TLS_CLIENT_CERT",
                      "X_CLIENT_CERT", "CF_CLIENT_CERT_", "CLOUDFRONT_VIEWER_CERT_")


def test_tables_equal_the_expected_lists():
    assert {_upper_fold(n).decode() for n in headers.MANAGED_NAMES} == _EXPECTED_MANAGED
    assert sorted(_upper_fold(p).decode() for p in headers.DROPPED_PREFIXES) == sorted(_EXPECTED_PREFIXES)


def _oracle_stripped(name: bytes, policy) -> bool:
    """Whether a name must be stripped, worked out independently of gateway.headers' matchers."""
    import fnmatch
    key = _upper_fold(name)
    text = key.decode("latin-1")
    if key == b"X_FORWARDED_FOR" and not _unusual(name):
        return False                                   # folded into the gateway's own, not kept
    if text in _EXPECTED_MANAGED or text.startswith(_EXPECTED_PREFIXES):
        return True
    if any(fnmatch.fnmatchcase(text, "*".join(_upper_fold(piece.encode()).decode()
                                              for piece in g.split("*")))
           for g in policy.strip):
        return True
    return _unusual(name) and policy.underscore != "keep"


@needs_native
@settings(max_examples=500)
@given(args=_args(st.lists(st.tuples(_NAMES, _ANY_VALUES), max_size=30)))
def test_native_encode_request_head_equals_pure(args):
    assert _call(headers.NATIVE.encode_request_head, args) == \
        _call(headers.PYTHON.encode_request_head, args)


@needs_native
@settings(max_examples=500)
@given(args=_args(st.lists(st.tuples(_ALL_NAMES, _ANY_VALUES), max_size=30), _POLICIES),
       tokens=_SPELLED_TOKENS)
def test_native_equals_pure_for_spellings_and_policies(args, tokens):
    args = args[:7] + (tokens,) + args[8:]
    assert _call(headers.NATIVE.encode_request_head, args) == \
        _call(headers.PYTHON.encode_request_head, args)
    assert headers.NATIVE.first_nonstandard(args[2]) == headers.PYTHON.first_nonstandard(args[2])


@pytest.mark.parametrize("which", IMPLS)
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_ALL_NAMES, policy=_POLICIES)
def test_a_name_is_stripped_iff_its_backend_key_is_managed_or_listed(which, name, policy):
    impl = headers.PYTHON if which == "python" else headers.NATIVE
    head = impl.encode_request_head(b"GET", b"/", [(name, b"v")], b"", b"", 0, 443, frozenset(), b"",
                                    policy)
    kept = head.startswith(b"GET / HTTP/1.1\r\n" + name + b": v\r\n")
    if _upper_fold(name) == b"X_FORWARDED_FOR" and not _unusual(name):
        assert not kept and b"\r\nX-Forwarded-For: v\r\n" in head     # folded into ours
    else:
        assert kept == (not _oracle_stripped(name, policy))
        assert b"X-Forwarded-For" not in head
    assert policy.strips(name) == (_oracle_stripped(name, policy.__class__("keep", policy.strip))
                                   or _upper_fold(name) == b"X_FORWARDED_FOR")


_GATEWAY_SET = {_upper_fold(n) for n in headers.IDENTITY_HEADER_NAMES | headers.FORWARDED_OVERWRITE
                | {b"x-forwarded-for", b"content-length", b"transfer-encoding"}}


@pytest.mark.parametrize("which", IMPLS)
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=_args(st.lists(st.tuples(_ALL_NAMES, _SAFE_VALUES), max_size=30), _POLICIES),
       tokens=_SPELLED_TOKENS)
def test_no_two_lines_collide_with_a_gateway_header_for_a_backend(which, args, tokens):
    """Whatever the spellings, a backend's environ holds each gateway header from one line only."""
    impl = headers.PYTHON if which == "python" else headers.NATIVE
    args = args[:7] + (tokens,) + args[8:]
    head = _call(impl.encode_request_head, args)
    lines = head.split(b"\r\n")[1:-2]
    seen: dict[bytes, int] = {}
    for line in lines:
        key = _upper_fold(line.partition(b":")[0])
        seen[key] = seen.get(key, 0) + 1
    for key in _GATEWAY_SET:
        assert seen.get(key, 0) <= 1, (key, head)
    assert seen.get(b"X_FORWARDED_PROTO") == 1 and seen.get(b"X_FORWARDED_PORT") == 1
    # and no kept client line is a managed or third-party name in any spelling
    client_lines = head[: len(head) - len(args[3]) - len(args[8]) - 2].split(b"\r\n")[1:-1]
    for line in client_lines:
        name = line.partition(b":")[0]
        if name in (b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Port"):
            continue
        assert not args[9].strips(name), line
        assert not _unusual(name) or args[9].underscore == "keep"


@pytest.mark.parametrize("which", IMPLS)
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=_args(st.lists(st.tuples(_NAMES, _SAFE_VALUES), max_size=30)))
def test_no_identity_header_survives_but_ours(which, args):
    impl = headers.PYTHON if which == "python" else headers.NATIVE
    head = _call(impl.encode_request_head, args)
    ident = args[3]
    assert head.endswith(ident + args[8] + b"\r\n")
    client_part = head[: len(head) - len(ident) - len(args[8]) - 2]
    lines = client_part.split(b"\r\n")
    assert lines[-1] == b""
    for line in lines[1:-1]:
        name = line.partition(b":")[0].lower()
        assert name not in headers.IDENTITY_HEADER_NAMES
        assert name not in headers.HOP_BY_HOP
        assert name != b"content-length"
    assert head.count(b"\r\n\r\n") == 1


# ---------------------------------------------------------------------------------------------
# set_native
# ---------------------------------------------------------------------------------------------

def test_set_native_rebinds_module_names(monkeypatch):
    try:
        assert headers.set_native("off") == "python"
        assert headers.encode_request_head is headers.PYTHON.encode_request_head
        assert headers.quote_pem_alb is headers.PYTHON.quote_pem_alb
        assert headers.first_nonstandard is headers.PYTHON.first_nonstandard
        if headers.NATIVE is not None:
            assert headers.set_native("on") == "native"
            assert headers.encode_request_head is headers.NATIVE.encode_request_head
            assert headers.sf_binary is headers.NATIVE.sf_binary
            assert headers.first_nonstandard is headers.NATIVE.first_nonstandard
            assert headers.set_native("auto") == "native"
        monkeypatch.setattr(headers, "NATIVE", None)
        assert headers.set_native("auto") == "python"
        with pytest.raises(NativeUnavailable):
            headers.set_native("on")
        with pytest.raises(ValueError):
            headers.set_native("yes")
    finally:
        monkeypatch.undo()
        headers.set_native("auto")


# ---------------------------------------------------------------------------------------------
# rfc2253
# ---------------------------------------------------------------------------------------------

def test_rfc2253_simple_names_equal_rfc4514(pki):
    for cert in pki:
        assert headers.rfc2253(cert.subject) == cert.subject.rfc4514_string()
    assert headers.rfc2253(pki[0].subject) == "CN=client,O=Org,C=US"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command line tool")
def test_rfc2253_matches_openssl(tmp_path):
    A = x509.NameAttribute
    rdn = x509.RelativeDistinguishedName
    name = x509.Name([
        rdn([A(NameOID.COUNTRY_NAME, "US")]),
        rdn([A(NameOID.ORGANIZATION_NAME, 'Org, "Inc"; <x> +y\\z=')]),
        rdn([A(NameOID.ORGANIZATIONAL_UNIT_NAME, "#lead trail "), A(NameOID.USER_ID, "u1")]),
        rdn([A(NameOID.EMAIL_ADDRESS, "a@b.example")]),
        rdn([A(NameOID.STREET_ADDRESS, "Rue é\r\nX\x7f")]),
        rdn([A(NameOID.DOMAIN_COMPONENT, "example")]),
        rdn([A(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "custom")]),
        rdn([A(NameOID.SERIAL_NUMBER, "123"), A(NameOID.SURNAME, "S"), A(NameOID.GIVEN_NAME, "G")]),
        rdn([A(NameOID.JURISDICTION_COUNTRY_NAME, "DE"), A(NameOID.BUSINESS_CATEGORY, "b")]),
        rdn([A(NameOID.COMMON_NAME, " client ")]),
    ])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(5)
            .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER).sign(key, hashes.SHA256()))
    path = tmp_path / "c.pem"
    path.write_bytes(_pem(cert))
    out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-subject",
                          "-nameopt", "RFC2253"], capture_output=True, check=True).stdout
    assert out.startswith(b"subject=")
    assert headers.rfc2253(cert.subject).encode() == out[len(b"subject="):].rstrip(b"\n")
    assert headers.rfc2253(cert.subject) != cert.subject.rfc4514_string()


# ---------------------------------------------------------------------------------------------
# The response head a client gets (encode_response_head): the native twin against the pure one
# ---------------------------------------------------------------------------------------------

_RESPONSE_DROP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                            b"transfer-encoding", b"upgrade", b"content-length"})
_NAME_BYTES = st.sampled_from([b"Server", b"Date", b"Connection", b"CONNECTION", b"Keep-Alive",
                               b"Content-Length", b"content-length", b"Transfer-Encoding", b"TE",
                               b"Trailer", b"Upgrade", b"X-Request-Id", b"Set-Cookie", b"x-custom",
                               b"X-" + b"L" * 70, b"\xc3\x89tag", b"Con\rnection", b"A\nB", b""])
_VALUE_BYTES = st.one_of(st.sampled_from([b"", b"ok", b"close", b"a\r\nInjected: 1", b"x\r", b"\n",
                                          b"\x00", b"\xff"]), st.binary(max_size=20))


def _response_head_both(line, fields, drop, extra):
    outcomes = []
    for impl in (headers.PYTHON, headers.NATIVE):
        try:
            outcomes.append(("head", impl.encode_response_head(line, fields, drop, extra)))
        except ValueError as exc:
            outcomes.append(("refused", str(exc)))
    return outcomes


@needs_native
@settings(max_examples=500, deadline=None)
@given(line=st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 204 \r\n", b"HTTP/1.1 200 a\rb\r\n",
                             b"HTTP/1.1 200 OK\n", b"HTTP/1.1 200 OK"]),
       fields=st.lists(st.tuples(_NAME_BYTES, _VALUE_BYTES), max_size=80),
       drop=st.one_of(st.just(_RESPONSE_DROP), st.just(frozenset()),
                      st.just(_RESPONSE_DROP | {b"x-custom", b"x-" + b"l" * 70})),
       extra=st.lists(st.tuples(st.sampled_from([b"Content-Length", b"Connection", b"Via"]),
                                _VALUE_BYTES), max_size=3))
def test_native_response_head_equals_pure(line, fields, drop, extra):
    pure, native = _response_head_both(line, fields, drop, extra)
    assert native == pure


def test_response_head_drops_and_refuses(impl):
    fields = [(b"Server", b"x"), (b"Connection", b"keep-alive, x-hop"), (b"X-Hop", b"1"),
              (b"Content-Length", b"5"), (b"ETag", b'"1"')]
    head = impl.encode_response_head(b"HTTP/1.1 200 OK\r\n", fields, _RESPONSE_DROP | {b"x-hop"},
                                     [(b"Content-Length", b"5")])
    assert head == (b"HTTP/1.1 200 OK\r\nServer: x\r\nETag: \"1\"\r\nContent-Length: 5\r\n\r\n")
    for bad in ([(b"X", b"a\r\nInjected: 1")], [(b"X\n", b"1")]):
        with pytest.raises(ValueError):
            impl.encode_response_head(b"HTTP/1.1 200 OK\r\n", bad, _RESPONSE_DROP, [])
