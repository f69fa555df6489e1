"""gateway.signature: the signed identity a backend checks.

The canonical string and the HMAC are recomputed here from the module docstring's description
(`_reference_sig`), with hmac.new and none of the module's helpers, and held against what the
Signer writes; every alteration of a signed request is then shown to be refused with its reason.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import http.client
import io
import os
import re
import sys
from pathlib import Path

import pytest

from gateway import signature
from gateway.signature import SignatureError, Signer, verify

KEY = b"Jx8V2kq9rT0wLmB3nC5yHd7gFa1sPe4u"            # 32 bytes, as the config requires
OLD_KEY = b"previous-key-still-accepted-0001"
NOW = 1_700_000_000.0
METHOD, PATH, HOST = b"POST", b"/v1/orders?customer=42&expand=items", b"api.example.org"
SIG_HEADER = b"X-Mtls-Identity-Signature"
_LINE = re.compile(rb"X-Mtls-Identity-Signature: t=([0-9]+),n=([A-Za-z0-9_-]{16}),"
                   rb"kid=([0-9a-f]{8}),sig=([A-Za-z0-9_-]{43})\r\n")

LEAF = (b"-----BEGIN%20CERTIFICATE-----%0AMIIBszCCAVmgAwIBAgIIXG9iALnIN8kwCgYIKoZIzj0EAwIw%0A"
        b"OzELMAkGA1UEBhMCVVMxFDASBgNVBAoMC0V4YW1wbGUgT3JnMRYwFAYDVQQDDA1F%0A"
        b"eGFtcGxlIElzc3VpbmcwHhcNMjQwMTAxMDAwMDAwWhcNMjUwMTAxMDAwMDAwWjA2%0A"
        b"-----END%20CERTIFICATE-----%0A")
ALB_BLOCK = (
    b"X-Amzn-Mtls-Clientcert-Serial-Number: 5C6F6200B9C837C9\r\n"
    b"X-Amzn-Mtls-Clientcert-Issuer: CN=Example Issuing CA,O=Example Org,C=US\r\n"
    b"X-Amzn-Mtls-Clientcert-Subject: CN=client-042,O=Example Org,C=US\r\n"
    b"X-Amzn-Mtls-Clientcert-Validity: NotBefore=2024-01-01T00:00:00Z;NotAfter=2025-01-01T00:00:00Z\r\n"
    b"X-Amzn-Mtls-Clientcert-Leaf: " + LEAF + b"\r\n")
XFCC_BLOCK = (
    b'X-Forwarded-Client-Cert: By=spiffe://gw.example/edge;Hash=9f86d081884c7d659a2feaa0c55ad015a3bf'
    b'4f1b2b0b822cd15d6c15b0f00a08;Cert="-----BEGIN%20CERTIFICATE-----%0AMIIB%0A";Subject="CN=Smith\\, '
    b'Jane,O=\\"Quoted\\" Org,C=US";URI=spiffe://example.org/ns/a,b;DNS=a.example;DNS=b.example\r\n')
# client-cert sorts before client-cert-chain by (name, value), after it by joined line (":" > "-")
RFC9440_BLOCK = (b"Client-Cert-Chain: :MIIBsz==:, :MIIBtD==:\r\n"
                 b"Client-Cert: :MIIBqT==:\r\n"
                 b"X-Mtls-Verify-Status: Failed:ClientCertUntrusted\r\n")
# one line under every signed name, in no particular order
EVERY_BLOCK = b"".join(b"%s: value-of-%s\r\n" % (name.title(), name)
                       for name in sorted(signature.SIGNED_HEADER_NAMES, reverse=True))
OTHER_HEADERS = [
    (b"User-Agent", b"python-requests/2.32.3"),
    (b"Accept", b"application/json"),
    (b"X-Forwarded-For", b"198.51.100.23"),
    (b"X-Forwarded-Proto", b"https"),
]


# --- an independent implementation of version 1, from the module docstring ------------------------

def _reference_sig(key: bytes, identity: list[tuple[bytes, bytes]], method: bytes, path: bytes,
                   host: bytes, t: bytes, nonce: bytes) -> bytes:
    lines = sorted((name.lower(), value.strip(b" \t")) for name, value in identity)
    message = (b"mtls-gateway-identity-v1\n"
               + b"".join(name + b":" + value + b"\n" for name, value in lines)
               + b"\n" + method + b"\n" + path + b"\n" + host.lower() + b"\n" + t + b"\n" + nonce)
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).rstrip(b"=")


def _block_headers(block: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in block.split(b"\r\n"):
        if line:
            name, value = line.split(b":", 1)
            out.append((name, value.strip(b" ")))
    return out


def _value(line: bytes) -> bytes:
    """The value of a `Header: value\\r\\n` line."""
    assert line.endswith(b"\r\n")
    return line.split(b": ", 1)[1][:-2]


def _request(block: bytes, sig_line: bytes, host: bytes = HOST) -> list[tuple[bytes, bytes]]:
    """The headers a backend receives: Host, ordinary ones, the identity block, the signature."""
    return ([(b"Host", host)] + OTHER_HEADERS + _block_headers(block)
            + [(SIG_HEADER, _value(sig_line))])


def _signed(block: bytes = ALB_BLOCK, key: bytes = KEY, now: float = NOW,
            method: bytes = METHOD, path: bytes = PATH, host: bytes = HOST):
    return _request(block, Signer(key).sign_lines(block, method, path, host, now=now), host)


def _reason(headers, method=METHOD, path=PATH, keys=(KEY,), **kw) -> str:
    with pytest.raises(SignatureError) as info:
        verify(headers, method, path, list(keys), now=NOW, **kw)
    assert info.value.reason in signature.REASONS
    return info.value.reason


def _replace_sig_param(headers, param: bytes, new: bytes):
    out = []
    for name, value in headers:
        if name == SIG_HEADER:
            value = re.sub(rb"(^|,)" + param + rb"=[^,]*", rb"\g<1>" + param + b"=" + new, value)
        out.append((name, value))
    return out


# --- the format, against the reference ---------------------------------------------------------

@pytest.mark.parametrize("block", [b"", ALB_BLOCK, XFCC_BLOCK, RFC9440_BLOCK, EVERY_BLOCK,
                                   ALB_BLOCK + XFCC_BLOCK + RFC9440_BLOCK],
                         ids=["empty", "alb", "xfcc", "rfc9440", "every", "all-styles"])
@pytest.mark.parametrize("key", [KEY, b"k", b"x" * 64, b"y" * 65, os.urandom(100)],
                         ids=["32", "1", "64", "65", "100"])
def test_signer_matches_an_independent_implementation(block, key):
    signer = Signer(key)
    for _ in range(2):                  # first sight, then the cached prefix
        line = signer.sign_lines(block, METHOD, PATH, b"API.Example.ORG", now=NOW + 0.75)
        m = _LINE.fullmatch(line)
        assert m, line
        t, nonce, kid, sig = m.groups()
        assert t == b"1700000000"
        assert len(base64.urlsafe_b64decode(nonce)) == 12
        assert kid == hashlib.sha256(key).hexdigest()[:8].encode()
        assert sig == _reference_sig(key, _block_headers(block), METHOD, PATH, b"api.example.org",
                                     t, nonce)
    assert signer.cached_prefixes == 1
    # the general entry point signs the same string, reading the identity among other headers
    value = signer.sign(OTHER_HEADERS + _block_headers(block), METHOD, PATH, HOST, now=NOW)
    t, nonce, kid, sig = re.fullmatch(rb"t=(\d+),n=(\S{16}),kid=(\w{8}),sig=(\S{43})", value).groups()
    assert sig == _reference_sig(key, _block_headers(block), METHOD, PATH, HOST, t, nonce)


def test_docstring_test_vector():
    """The worked example a reimplementation is checked against holds, and is in the docstring."""
    key = b"0123456789abcdef0123456789abcdef"
    identity = [(b"X-Amzn-Mtls-Clientcert-Subject", b"CN=client,O=Org"),
                (b"X-Amzn-Mtls-Clientcert-Serial-Number", b"03A5B1")]
    sig = _reference_sig(key, identity, b"GET", b"/v1/orders?id=7", b"API.Example.org",
                         b"1700000000", b"AAECAwQFBgcICQoL")
    value = b"t=1700000000,n=AAECAwQFBgcICQoL,kid=3eb1bd43,sig=" + sig
    assert sig == b"ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo"
    assert value.decode() in signature.__doc__
    assert signature.key_id(key) == "3eb1bd43"
    request = identity + [(b"Host", b"API.Example.org"), (SIG_HEADER, value)]
    assert verify(request, "GET", "/v1/orders?id=7", [key], now=1_700_000_010) == "3eb1bd43"
    canonical = signature.canonical(request, "GET", "/v1/orders?id=7", "API.Example.org",
                                    1700000000, "AAECAwQFBgcICQoL")
    assert canonical == (b"mtls-gateway-identity-v1\n"
                         b"x-amzn-mtls-clientcert-serial-number:03A5B1\n"
                         b"x-amzn-mtls-clientcert-subject:CN=client,O=Org\n"
                         b"\nGET\n/v1/orders?id=7\napi.example.org\n1700000000\nAAECAwQFBgcICQoL")
    indented = "\n".join("    " + line if line else "" for line in canonical.decode().split("\n"))
    assert indented in signature.__doc__


def test_signed_header_names():
    assert signature.SIGNED_HEADER_NAMES == {
        b"x-amzn-mtls-clientcert-serial-number", b"x-amzn-mtls-clientcert-issuer",
        b"x-amzn-mtls-clientcert-subject", b"x-amzn-mtls-clientcert-validity",
        b"x-amzn-mtls-clientcert-leaf", b"x-amzn-mtls-clientcert",
        b"x-amzn-mtls-clientcert-sha256-fingerprint", b"x-amzn-mtls-clientcert-san-dns",
        b"x-amzn-mtls-clientcert-san-uri", b"x-amzn-mtls-clientcert-san-email",
        b"x-amzn-mtls-clientcert-spiffe-id", b"x-forwarded-client-cert", b"client-cert",
        b"client-cert-chain", b"x-mtls-verify-status"}
    assert SIG_HEADER.lower() not in signature.SIGNED_HEADER_NAMES


def test_every_signed_name_is_stripped_from_client_requests():
    """A client's copy of a signed name could otherwise reach the backend beside the gateway's."""
    from gateway import headers
    assert signature.SIGNED_HEADER_NAMES <= headers.DROPPED_NAMES
    assert all(name in headers.CONNECTION_PROTECTED for name in signature.SIGNED_HEADER_NAMES)


def test_module_is_stdlib_only():
    tree = ast.parse(Path(signature.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            imported.add((node.module or "").split(".")[0])
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_key_id_and_load_key(tmp_path):
    assert signature.key_id(KEY) == hashlib.sha256(KEY).hexdigest()[:8]
    path = tmp_path / "identity.key"
    path.write_bytes(b"\n  " + KEY + b"\n\n")
    assert signature.load_key(path) == KEY
    assert signature.load_key(str(path)) == KEY
    (tmp_path / "empty.key").write_bytes(b" \n")
    with pytest.raises(ValueError):
        signature.load_key(tmp_path / "empty.key")


def test_signer_refuses_what_it_cannot_sign_honestly():
    with pytest.raises(ValueError):
        Signer(b"")
    for header in ("Client-Cert", "x-forwarded-client-cert", "Host", "bad header", ""):
        with pytest.raises(ValueError):
            Signer(KEY, header)
    signer = Signer(KEY)
    for block in (b"X-Custom: 1\r\n",                          # not an identity header
                  ALB_BLOCK + b"Authorization: Bearer x\r\n",
                  ALB_BLOCK[:-2],                               # no final CRLF
                  b"X-Mtls-Verify-Status Success\r\n",         # no colon
                  b"X-Mtls-Verify-Status: Succ\ness\r\n",        # a bare LF, CR or NUL inside
                  b"X-Mtls-Verify-Status: Succ\ress\r\n",
                  b"X-Mtls-Verify-Status: Succ\0ess\r\n"):
        with pytest.raises(ValueError):
            signer.sign_lines(block, METHOD, PATH, HOST, now=NOW)


def test_custom_header_name():
    signer = Signer(KEY, "X-Gateway-Sig")
    line = signer.sign_lines(ALB_BLOCK, METHOD, PATH, HOST, now=NOW)
    assert line.startswith(b"X-Gateway-Sig: t=1700000000,")
    request = [(b"Host", HOST)] + _block_headers(ALB_BLOCK) + [(b"x-gateway-sig", _value(line))]
    assert verify(request, METHOD, PATH, [KEY], header="X-Gateway-Sig", now=NOW) == signer.kid
    assert _reason(request) == "missing"                        # under the default name


def test_nonces_differ():
    signer = Signer(KEY)
    nonces = {_LINE.fullmatch(signer.sign_lines(ALB_BLOCK, METHOD, PATH, HOST)).group(2)
              for _ in range(3 * signature.NONCE_BATCH + 7)}
    assert len(nonces) == 3 * signature.NONCE_BATCH + 7


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_a_forked_worker_does_not_reuse_the_parents_nonces():
    signer = Signer(KEY)
    signer.sign_lines(b"", METHOD, PATH, HOST)                  # the batch is drawn before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                                # the worker
        try:
            os.write(write_end, _LINE.fullmatch(signer.sign_lines(b"", METHOD, PATH, HOST)).group(2))
        finally:
            os._exit(0)
    os.close(write_end)
    child_nonce = os.read(read_end, 64)
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_nonce = _LINE.fullmatch(signer.sign_lines(b"", METHOD, PATH, HOST)).group(2)
    assert len(child_nonce) == 16 and child_nonce != parent_nonce


# --- sign, then verify ----------------------------------------------------------------------------

@pytest.mark.parametrize("block", [b"", ALB_BLOCK, XFCC_BLOCK, RFC9440_BLOCK, EVERY_BLOCK])
def test_sign_then_verify(block):
    assert verify(_signed(block), METHOD, PATH, [KEY], now=NOW) == signature.key_id(KEY)


def test_verify_a_real_identity_block():
    """The blocks gateway.headers writes for a development PKI, every style and field."""
    from gateway import headers, pki
    from gateway.identity import VerifyStatus, identity_from_certificates
    root = pki.make_root("Root")
    inter = pki.make_intermediate(root, "Issuing")
    leaf = pki.make_client(inter, "client, \"quoted\"", san_dns=["a.example"],
                           san_uri=["spiffe://example.org/a"])
    chain = (leaf, inter, root)
    ident = identity_from_certificates([c.cert for c in chain], tuple(c.der for c in chain),
                                       VerifyStatus.SUCCESS)
    for verified in (True, False):
        block = headers.identity_block(ident, verified, headers.STYLES, by=b"spiffe://gw",
                                       fields=tuple(headers.FIELD_HEADERS))
        assert verify(_signed(block), METHOD, PATH, [KEY], now=NOW)


def test_names_in_any_case_str_and_bytes():
    request = _signed(EVERY_BLOCK)
    mixed = []
    for i, (name, value) in enumerate(request):
        name = name.upper() if i % 3 == 0 else name.lower() if i % 3 == 1 else name.swapcase()
        mixed.append((name.decode() if i % 2 else name, value.decode() if i % 4 < 2 else value))
    assert verify(mixed, METHOD.decode(), PATH.decode(), [KEY], now=NOW) == signature.key_id(KEY)
    # values with the surrounding spaces a parser might leave on
    padded = [(n, b" \t" + v + b" ") for n, v in request]
    assert verify(padded, METHOD, PATH, [KEY], now=NOW)


def test_mapping_input():
    request = _signed(ALB_BLOCK + XFCC_BLOCK)
    as_dict = {name.decode().lower(): value.decode() for name, value in request}
    assert verify(as_dict, "POST", PATH.decode(), [KEY], now=NOW) == signature.key_id(KEY)
    as_bytes = {name.upper(): value for name, value in request}
    assert verify(as_bytes, METHOD, PATH, [KEY], now=NOW)
    # http.server's headers, a Message: items() holds every header, iterating gives only names
    raw = b"".join(name + b": " + value + b"\r\n" for name, value in request) + b"\r\n"
    message = http.client.parse_headers(io.BytesIO(raw))
    assert verify(message, "POST", PATH.decode(), [KEY], now=NOW)


def test_non_ascii_value_as_str():
    """A UTF-8 subject the way WSGI hands it over (decoded as ISO-8859-1), and decoded as UTF-8."""
    block = "X-Amzn-Mtls-Clientcert-Subject: CN=Jürgen Ørsted,O=Ünïcode\r\n".encode()
    request = _signed(block)
    latin1 = [(n.decode(), v.decode("latin-1")) for n, v in request]
    assert verify(latin1, "POST", PATH.decode(), [KEY], now=NOW)
    utf8 = [(n.decode(), v.decode("utf-8")) for n, v in request]
    with pytest.raises(SignatureError):         # "ü" fits ISO-8859-1, so it is not the wire bytes
        verify(utf8, "POST", PATH.decode(), [KEY], now=NOW)
    block = "X-Amzn-Mtls-Clientcert-Subject: CN=日本\r\n".encode()
    request = [(n.decode(), v.decode("utf-8")) for n, v in _signed(block)]
    assert verify(request, "POST", PATH.decode(), [KEY], now=NOW)


# --- alterations, each refused with its reason ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(signature.SIGNED_HEADER_NAMES))
def test_each_identity_value_is_covered(name):
    request = _signed(EVERY_BLOCK)
    assert verify(request, METHOD, PATH, [KEY], now=NOW)
    changed = [(n, v + b"x" if n.lower() == name else v) for n, v in request]
    assert _reason(changed) == "bad_signature"
    removed = [(n, v) for n, v in request if n.lower() != name]
    assert len(removed) == len(request) - 1
    assert _reason(removed) == "bad_signature"
    doubled = request + [(name, b"value-of-" + name)]
    assert _reason(doubled) == "bad_signature"


@pytest.mark.parametrize("name", sorted(signature.SIGNED_HEADER_NAMES - {
    n.lower() for n, _ in _block_headers(ALB_BLOCK)}))
def test_an_added_identity_header_is_detected(name):
    request = _signed(ALB_BLOCK)
    assert _reason(request[:3] + [(name, b"Success")] + request[3:]) == "bad_signature"


def test_other_headers_are_not_covered():
    """Only identity headers are signed: a proxy adding Via or X-Request-Id breaks nothing."""
    request = _signed(ALB_BLOCK) + [(b"Via", b"1.1 sidecar"), (b"X-Request-Id", b"abc")]
    assert verify(request, METHOD, PATH, [KEY], now=NOW)


def test_method_path_and_host_are_covered():
    request = _signed(ALB_BLOCK)
    assert _reason(request, method=b"GET") == "bad_signature"
    assert _reason(request, method=b"post") == "bad_signature"
    assert _reason(request, path=PATH + b"&admin=1") == "bad_signature"
    assert _reason(request, path=b"/v1/orders") == "bad_signature"
    other_host = [(n, b"evil.example" if n == b"Host" else v) for n, v in request]
    assert _reason(other_host) == "bad_signature"
    no_host = [(n, v) for n, v in request if n != b"Host"]
    assert _reason(no_host) == "bad_signature"
    # the host is compared case-insensitively, as DNS names are
    upper = [(n, HOST.upper() if n == b"Host" else v) for n, v in request]
    assert verify(upper, METHOD, PATH, [KEY], now=NOW)


def test_signature_parameters_are_covered():
    request = _signed(ALB_BLOCK)
    value = dict(request)[SIG_HEADER]
    t, nonce, _kid, sig = _LINE.fullmatch(SIG_HEADER + b": " + value + b"\r\n").groups()
    assert _reason(_replace_sig_param(request, b"t", b"%d" % (int(t) + 1))) == "bad_signature"
    assert _reason(_replace_sig_param(request, b"t", b"%d" % (int(t) - 1))) == "bad_signature"
    flipped = (b"B" if nonce[:1] != b"B" else b"C") + nonce[1:]
    assert _reason(_replace_sig_param(request, b"n", flipped)) == "bad_signature"
    flipped = sig[:-2] + (b"A" if sig[-2:-1] != b"A" else b"B") + sig[-1:]
    assert _reason(_replace_sig_param(request, b"sig", flipped)) == "bad_signature"
    assert _reason(_replace_sig_param(request, b"kid", b"00000000")) == "unknown_key"
    # the kid of a key the backend holds, on a signature made with another
    old_kid = signature.key_id(OLD_KEY).encode()
    assert _reason(_replace_sig_param(request, b"kid", old_kid), keys=(KEY, OLD_KEY)) == \
        "bad_signature"


def test_a_value_posing_as_two_lines_is_malformed():
    """Two signed headers folded into one value with an LF would give the same canonical string;
    it must be refused, not verified."""
    block = (b"X-Amzn-Mtls-Clientcert-Serial-Number: 01\r\n"
             b"X-Amzn-Mtls-Clientcert-Subject: CN=a\r\n")
    request = _signed(block)
    folded = [(n, v) for n, v in request if n != b"X-Amzn-Mtls-Clientcert-Subject"]
    folded = [(n, v + b"\nx-amzn-mtls-clientcert-subject:CN=a"
               if n == b"X-Amzn-Mtls-Clientcert-Serial-Number" else v) for n, v in folded]
    assert _reason(folded) == "malformed"
    assert _reason(request, path=PATH + b"\r\n") == "malformed"
    nul = [(n, v + b"\0" if n == b"X-Amzn-Mtls-Clientcert-Subject" else v) for n, v in request]
    assert _reason(nul) == "malformed"


@pytest.mark.parametrize("value", [
    b"",
    b"t=1700000000",
    b"t=1700000000,n=AAECAwQFBgcICQoL,kid=3eb1bd43",
    b"t=1700000000,n=AAECAwQFBgcICQoL,kid=3eb1bd43,sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo=",
    b"t=1700000000,n=AAECAwQFBgcICQoL,kid=3EB1BD43,sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo",
    b"t=01700000000,n=AAECAwQFBgcICQoL,kid=3eb1bd43,sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo",
    b"t=-1,n=AAECAwQFBgcICQoL,kid=3eb1bd43,sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo",
    b"n=AAECAwQFBgcICQoL,t=1700000000,kid=3eb1bd43,sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo",
    b"t=1700000000, n=AAECAwQFBgcICQoL, kid=3eb1bd43, sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo",
    b"t=1700000000,n=AAECAwQFBgcICQo+,kid=3eb1bd43,sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo",
    b"t=1700000000,n=AAECAwQFBgcICQoL,kid=3eb1bd43,sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo,v=2",
    b"t=1700000000,n=AAECAwQFBgcICQoL,kid=3eb1bd43,sig=ux5azSUI8nk+LLGSFguQZ21KHE4WxHoskLH8dY6ptjo",
], ids=lambda v: v[:20].decode() or "empty")
def test_malformed_values(value):
    request = [(b"Host", b"api.example.org"), (SIG_HEADER, value)]
    assert _reason(request, keys=(b"0123456789abcdef0123456789abcdef",)) == "malformed"


def test_missing_and_duplicated_signature_headers():
    request = _signed(ALB_BLOCK)
    assert _reason([(n, v) for n, v in request if n != SIG_HEADER]) == "missing"
    sig = [(n, v) for n, v in request if n == SIG_HEADER]
    assert _reason(request + sig) == "malformed"
    two_hosts = request + [(b"host", HOST)]
    assert _reason(two_hosts) == "malformed"


def test_freshness():
    request = _signed(ALB_BLOCK, now=NOW)
    assert verify(request, METHOD, PATH, [KEY], now=NOW + 300)
    with pytest.raises(SignatureError) as info:
        verify(request, METHOD, PATH, [KEY], now=NOW + 301)
    assert info.value.reason == "expired"
    assert verify(request, METHOD, PATH, [KEY], 3600.0, now=NOW + 3000)
    with pytest.raises(SignatureError) as info:
        verify(request, METHOD, PATH, [KEY], 10.0, now=NOW + 11)
    assert info.value.reason == "expired"
    # the backend's clock behind the gateway's: up to a minute is skew, more is refused
    assert verify(request, METHOD, PATH, [KEY], now=NOW - 60)
    with pytest.raises(SignatureError) as info:
        verify(request, METHOD, PATH, [KEY], now=NOW - 61)
    assert info.value.reason == "future"


def test_default_clock():
    """Without `now`, both ends read the system clock."""
    request = _request(ALB_BLOCK, Signer(KEY).sign_lines(ALB_BLOCK, METHOD, PATH, HOST))
    assert verify(request, METHOD, PATH, [KEY]) == signature.key_id(KEY)
    assert _reason(request) == "future"             # signed now, checked at NOW (years before)


def test_rotation():
    old_signed = _signed(ALB_BLOCK, key=OLD_KEY)
    new_signed = _signed(ALB_BLOCK, key=KEY)
    assert verify(old_signed, METHOD, PATH, [KEY, OLD_KEY], now=NOW) == signature.key_id(OLD_KEY)
    assert verify(new_signed, METHOD, PATH, [KEY, OLD_KEY], now=NOW) == signature.key_id(KEY)
    assert verify(new_signed, METHOD, PATH, [OLD_KEY, KEY], now=NOW) == signature.key_id(KEY)
    assert _reason(new_signed, keys=(OLD_KEY,)) == "unknown_key"
    assert _reason(old_signed, keys=(KEY,)) == "unknown_key"
    assert _reason(new_signed, keys=()) == "unknown_key"


def test_replay_detection():
    seen: set[str] = set()
    first = _signed(ALB_BLOCK)
    second = _signed(ALB_BLOCK)
    assert verify(first, METHOD, PATH, [KEY], now=NOW, seen_nonces=seen)
    assert _reason(first, seen_nonces=seen) == "replayed"
    assert verify(second, METHOD, PATH, [KEY], now=NOW, seen_nonces=seen)
    assert len(seen) == 2
    # a forgery carrying a fresh request's nonce does not use that nonce up
    third = _signed(ALB_BLOCK)
    forged = [(n, v + b"x" if n == b"X-Amzn-Mtls-Clientcert-Subject" else v) for n, v in third]
    assert _reason(forged, seen_nonces=seen) == "bad_signature"
    assert verify(third, METHOD, PATH, [KEY], now=NOW, seen_nonces=seen)
    # without a memory the same request verifies again (replay protection is the caller's choice)
    assert verify(first, METHOD, PATH, [KEY], now=NOW)


# --- the prefix cache ---------------------------------------------------------------------------

def test_prefix_cache_is_bounded():
    signer = Signer(KEY, max_cached_prefixes=3)
    blocks = [b"X-Amzn-Mtls-Clientcert-Serial-Number: %02X\r\n" % i for i in range(10)]
    for block in blocks:
        line = signer.sign_lines(block, METHOD, PATH, HOST, now=NOW)
        assert 1 <= signer.cached_prefixes <= 3
        assert verify(_request(block, line), METHOD, PATH, [KEY], now=NOW)
    # after being cleared, a block seen before is signed right again
    line = signer.sign_lines(blocks[0], METHOD, PATH, HOST, now=NOW)
    assert verify(_request(blocks[0], line), METHOD, PATH, [KEY], now=NOW)


def test_prefix_cache_default_bound():
    signer = Signer(KEY)
    for i in range(signature.PREFIX_CACHE_ENTRIES + 1):
        signer.sign_lines(b"X-Amzn-Mtls-Clientcert-Serial-Number: %X\r\n" % i, METHOD, PATH, HOST,
                          now=NOW)
        assert signer.cached_prefixes <= signature.PREFIX_CACHE_ENTRIES
    assert signer.cached_prefixes == 1                  # cleared when full, then the newest


def test_cached_prefix_is_not_consumed():
    """Each request signs from a copy: the cached state never takes in a request's own fields."""
    signer = Signer(KEY)
    for i in range(5):
        path = b"/item/%d" % i
        line = signer.sign_lines(ALB_BLOCK, METHOD, path, HOST, now=NOW)
        assert verify(_request(ALB_BLOCK, line), METHOD, path, [KEY], now=NOW)
    assert signer.cached_prefixes == 1
