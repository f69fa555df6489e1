"""Identity header styles, stripping of spoofable headers, and request-head encoding.

How this works: a verified (or passed-through) client certificate reaches the backend as request
headers in one or more *styles*. `identity_block` renders the header lines for an `Identity` once per
(mode, styles, by) and keeps them in `identity.header_cache`, so a keep-alive request or a returning
client (the chain cache hands back the same Identity) costs one dict lookup. `encode_request_head`
then makes ONE pass over the client's headers: it drops every header any style could produce (in any
letter case, every duplicate), hop-by-hop headers, the X-Forwarded-* headers the gateway owns, and
Content-Length (the caller passes its own framing); it folds X-Forwarded-For and appends the client
address; and it writes the head in a single join. The byte-level loops (PEM percent-encoding,
structured-field base64, the head encoder) have a Cython twin in native/headers.pyx; `set_native`
picks one, and the unit suite proves both byte-identical.

Formats, and what each follows:

* ``alb`` -- AWS Application Load Balancer mutual TLS headers ("HTTP headers and mutual TLS",
  Elastic Load Balancing user guide, mutual-authentication):

  verify mode::

    X-Amzn-Mtls-Clientcert-Serial-Number: 03A5B1
    X-Amzn-Mtls-Clientcert-Issuer: CN=rootcamtls.com,OU=rootCA,O=mTLS,L=Seattle,ST=Washington,C=US
    X-Amzn-Mtls-Clientcert-Subject: CN=client_.com,OU=client-3,O=mTLS,ST=Washington,C=US
    X-Amzn-Mtls-Clientcert-Validity: NotBefore=2023-09-21T01:50:17Z;NotAfter=2024-09-20T01:50:17Z
    X-Amzn-Mtls-Clientcert-Leaf: -----BEGIN%20CERTIFICATE-----%0AMIIG...%0A-----END%20CERTIFICATE-----%0A

  passthrough mode: ``X-Amzn-Mtls-Clientcert`` carrying the whole chain as presented, leaf first.
  The serial is upper-case hex of the serial's magnitude in whole bytes (the guide's ``03A5B1``
  keeps its leading zero; this is also OpenSSL's BN_bn2hex, as ``openssl x509 -serial`` prints it).
  Issuer and subject are RFC 2253 strings (the Identity stores them; see `rfc2253`). Validity is
  ISO 8601 UTC with a ``Z``. PEM is "URL-encoded ... with +=/ as safe characters", which is exactly
  ``urllib.parse.quote(pem, safe="+=/")``: A-Z a-z 0-9 ``_.-~+=/`` kept, every other byte ``%XX``
  upper-case. (The guide's *example* shows ``%3D%3D`` for base64 padding, contradicting its own
  stated rule; we follow the stated rule.)

* ``xfcc`` -- Envoy's x-forwarded-client-cert (Envoy docs, "HTTP header manipulation"; element order
  as Envoy's conn_manager_utility.cc writes it)::

    X-Forwarded-Client-Cert: By=spiffe://gw;Hash=<hex sha256 of leaf DER>;Cert="<url-pem>";
        Chain="<url-pem of every cert, leaf first>";Subject="CN=client,O=Org";URI=spiffe://x;DNS=a.example

  (one line; wrapped here). Cert and Chain use Envoy's PercentEncoding::urlEncode: A-Z a-z 0-9 and
  ``*-._`` kept, every other byte ``%XX``. Subject, Cert and Chain are always quoted, as Envoy writes
  them; By, URI and DNS are quoted only if they contain ``,;="`` or a backslash, as the XFCC
  definition asks. Inside quotes ``"`` becomes ``\\"`` and ``\\`` becomes ``\\\\`` (an RFC 9110
  quoted-pair): the definition only names the quote, but RFC 2253 subjects already contain
  ``\\"``, and escaping the backslash too is what keeps a hostile subject from closing the quoted
  string early. ``URI=`` appears once per URI SAN, or empty when there is none; ``DNS=`` once per DNS
  SAN (both as Envoy does). ``By=`` only when the listener gives one.

* ``rfc9440`` -- RFC 9440 (Client-Cert HTTP Header Field): ``Client-Cert`` is an RFC 8941
  byte sequence ``:base64(leaf DER):`` (section 2.2); ``Client-Cert-Chain`` is an RFC 8941 list of
  byte sequences, ``, `` separated, of the chain WITHOUT the leaf (section 2.3), omitted when the
  client sent only its leaf.

No identity header value ever contains CR, LF or NUL: names are RFC 2253 strings in which every
control byte is written as the RFC 2253 hex escape ``\\XX``; SANs and ``by`` have control bytes
percent-encoded. A client header whose name or value carries CR, LF or NUL is dropped rather than
forwarded.
"""
from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timezone
from typing import Callable, NamedTuple

from cryptography import x509

from gateway.errors import NativeUnavailable
from gateway.identity import Identity, rfc2253, serial_hex  # noqa: F401  (rfc2253 re-exported)

__all__ = [
    "STYLES", "IDENTITY_HEADER_NAMES", "FORWARDED_OVERWRITE", "HOP_BY_HOP", "DROPPED_NAMES",
    "DROPPED_PREFIXES", "THIRD_PARTY_CERT_HEADERS", "MANAGED_NAMES", "CONNECTION_PROTECTED",
    "HeaderPolicy", "Screening", "screen_request", "fold_name",
    "quote_pem_alb", "quote_pem_envoy", "sf_binary", "identity_block", "encode_request_head",
    "set_native", "native_mode", "rfc2253", "pem", "PYTHON", "NATIVE",
]

STYLES = ("alb", "xfcc", "rfc9440")

ALB_HEADER_NAMES = frozenset({
    b"x-amzn-mtls-clientcert",
    b"x-amzn-mtls-clientcert-serial-number",
    b"x-amzn-mtls-clientcert-issuer",
    b"x-amzn-mtls-clientcert-subject",
    b"x-amzn-mtls-clientcert-validity",
    b"x-amzn-mtls-clientcert-leaf",
})
# `identity_fields`: more of the leaf, in ALB's naming (ALB itself sends none of them)
FIELD_HEADERS: dict[str, bytes] = {
    "sha256_fingerprint": b"X-Amzn-Mtls-Clientcert-Sha256-Fingerprint",
    "san_dns": b"X-Amzn-Mtls-Clientcert-San-Dns",
    "san_uri": b"X-Amzn-Mtls-Clientcert-San-Uri",
    "san_email": b"X-Amzn-Mtls-Clientcert-San-Email",
    "spiffe_id": b"X-Amzn-Mtls-Clientcert-Spiffe-Id",
}
# `mtls_enforcement = "report"`: the verdict enforcing would have given; the signature's default name
VERIFY_STATUS_HEADER = b"X-Mtls-Verify-Status"
SIGNATURE_HEADER = b"X-Mtls-Identity-Signature"
IDENTITY_HEADER_NAMES: frozenset[bytes] = ALB_HEADER_NAMES | {
    b"x-forwarded-client-cert",
    b"client-cert",
    b"client-cert-chain",
    VERIFY_STATUS_HEADER.lower(),
    SIGNATURE_HEADER.lower(),
} | {name.lower() for name in FIELD_HEADERS.values()}
# The gateway sets these; X-Forwarded-For is appended to instead (ALB's default "append" mode).
FORWARDED_OVERWRITE: frozenset[bytes] = frozenset({b"x-forwarded-proto", b"x-forwarded-port"})
# RFC 9110 section 7.6.1 (Connection), plus Keep-Alive and Proxy-Connection, which predate it.
HOP_BY_HOP: frozenset[bytes] = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade",
})
_XFF = b"x-forwarded-for"

# Client-certificate headers that other proxies write, and that a backend moved behind this gateway
# may still trust. The gateway never sets them, so a client's copy can only be a forgery: they are
# stripped from every request in every spelling, whatever `underscore_headers` says. A trailing `*`
# is a prefix pattern. Names are written folded (lower case, `-` for `_`): `ssl-client-*` also
# catches Apache's `SSL_CLIENT_S_DN`.
THIRD_PARTY_CERT_HEADERS: tuple[bytes, ...] = (
    # Apache mod_ssl variables (SSL_CLIENT_S_DN, SSL_CLIENT_CERT, SSL_CLIENT_VERIFY, ...) passed
    # on with `RequestHeader set SSL_CLIENT_CERT "%{SSL_CLIENT_CERT}s"`; ingress-nginx
    # (auth-tls-pass-certificate-to-upstream) sends ssl-client-cert, ssl-client-verify,
    # ssl-client-subject-dn, ssl-client-issuer-dn; Keycloak's x509 lookup providers read
    # SSL_CLIENT_CERT / ssl-client-cert; Tomcat's SSLValve reads ssl_client_cert.
    b"ssl-client-*",
    # Tomcat SSLValve's other defaults: ssl_cipher, ssl_cipher_usekeysize, ssl_session_id.
    b"ssl-cipher*",
    b"ssl-session-id",
    # nginx configurations (`proxy_set_header X-SSL-Client-S-DN $ssl_client_s_dn`, X-SSL-Cert
    # from $ssl_client_escaped_cert) and HAProxy's configuration manual examples (X-SSL from
    # ssl_fc, X-SSL-Client-Verify, -DN, -CN, -NotBefore, -NotAfter, X-SSL-Issuer).
    b"x-ssl",
    b"x-ssl-*",
    # Traefik's PassTLSClientCert middleware: X-Forwarded-Tls-Client-Cert and
    # X-Forwarded-Tls-Client-Cert-Info.
    b"x-forwarded-tls-client-cert*",
    # Azure App Service: X-ARR-ClientCert (base64 leaf), X-ARR-SSL (set when TLS was terminated).
    b"x-arr-clientcert",
    b"x-arr-ssl",
    # Google Cloud Application Load Balancer mTLS custom headers, as its documentation names them:
    # X-Client-Cert-Present, -Chain-Verified, -Error, -Hash, -Serial-Number, -SPIFFE, -URI-SANs,
    # -DNSName-SANs, -Valid-Not-Before, -Valid-Not-After (also -Leaf, -Chain); and the generic
    # X-Client-Cert / X-Client-Certificate of nginx, Kong and CloudFront's rename examples.
    b"x-client-cert*",
    # nginx's `proxy_set_header X-Client-Verify $ssl_client_verify` / `X-Client-DN $ssl_client_s_dn`.
    b"x-client-verify",
    b"x-client-dn",
    # Cloudflare Access "forward a client certificate": Cf-Client-Cert-Der-Base64, -Sha256.
    b"cf-client-cert-*",
    # CloudFront viewer mTLS ("Viewer mTLS headers for cache policies and forwarded to origin"):
    # CloudFront-Viewer-Cert-Serial-Number, -Issuer, -Subject, -Present, -Sha256, -Validity, -Pem.
    b"cloudfront-viewer-cert-*",
)
# Everything encode_request_head drops by exact (folded) name. Content-Length is dropped because the
# caller re-frames the body and passes its own framing line.
DROPPED_NAMES: frozenset[bytes] = (
    IDENTITY_HEADER_NAMES | HOP_BY_HOP | FORWARDED_OVERWRITE | {b"content-length"}
    | {p for p in THIRD_PARTY_CERT_HEADERS if not p.endswith(b"*")})
# ... and by (folded) prefix.
DROPPED_PREFIXES: tuple[bytes, ...] = tuple(sorted(
    p[:-1] for p in THIRD_PARTY_CERT_HEADERS if p.endswith(b"*")))
# Every name the gateway manages: each is stripped (or, X-Forwarded-For in its exact spelling,
# folded) in every spelling, whatever the listener's `underscore_headers`.
MANAGED_NAMES: frozenset[bytes] = DROPPED_NAMES | {_XFF}
# Headers the gateway itself writes (or routes on): a Connection option naming one of them is
# refused with 400, never honoured. Honouring it is the hop-by-hop abuse that let a client strip a
# proxy's own X-Forwarded-* or identity headers (Traefik CVE-2024-45410; Apache CVE-2022-31813 and
# the "hop-by-hop header abuse" write-ups). Host is here because HTTP/1.1 requires it
# (RFC 9112 section 3.2) and the rules matched on it; the framing names because the gateway frames
# the body itself. Other hop-by-hop names (keep-alive, upgrade, te, close) are ordinary options.
CONNECTION_PROTECTED: frozenset[bytes] = (
    IDENTITY_HEADER_NAMES | FORWARDED_OVERWRITE
    | {_XFF, b"content-length", b"transfer-encoding", b"host"})

UNDERSCORE_MODES = ("drop", "reject", "keep")
_DROP, _KEEP, _FOLD = 1, 0, 2


_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_STANDARD_NAME_BYTES = _ALNUM + b"-"
# lower case; every byte that is not a letter or digit becomes "-"
_FOLD_TABLE = bytes((c | 0x20 if 65 <= c <= 90 else c) if c in _ALNUM else 45 for c in range(256))


def fold_name(name: bytes) -> bytes:
    """A header name as backends compare it: ASCII case ignored, every byte that is not a letter
    or digit the same as `-`.

    CGI (RFC 3875 section 4.1.18), WSGI (PEP 3333, wsgiref), PHP and Rack all turn a header name
    into ``HTTP_`` + upper case with `-` replaced by `_`, so `X_Foo`, `x-foo` and `X-FOO` reach the
    application as one variable; Apache 2.2's CGI variables (util_script.c http2env) and PHP's
    request variables turn every other non-alphanumeric byte into `_` as well, so `X.Foo` joins
    them there. This returns the lower-case, `-` form of the broadest of those keys.
    """
    return name.translate(_FOLD_TABLE)


def _nonstandard(name: bytes) -> bool:
    """Whether a name has a byte other than a letter, a digit or `-` (`_` above all): such a name
    follows the listener's `underscore_headers` (nginx's `ignore_invalid_headers` drops them too)."""
    return bool(name.translate(None, _STANDARD_NAME_BYTES))


def _glob_matcher(globs: tuple[str, ...]) -> Callable[[bytes], object] | None:
    """One compiled pattern for the listener's `strip_request_headers`, over names as sent.

    Each byte of a glob that is not a letter, a digit or `*` matches any such byte and letters
    match either case, so the pattern compares names exactly as `fold_name` does without building
    the folded name; `*` is any run of bytes (possibly empty).
    """
    if not globs:
        return None
    parts = []
    for glob in globs:
        pieces = []
        for literal in (fold_name(piece) for piece in glob.encode("ascii").split(b"*")):
            pieces.append(b"[^A-Za-z0-9]".join(re.escape(chunk) for chunk in literal.split(b"-")))
        parts.append(b".*".join(pieces))
    return re.compile(b"(?:" + b"|".join(parts) + b")", re.IGNORECASE | re.DOTALL).fullmatch


class HeaderPolicy:
    """A listener's request-header screening, built once at load; immutable.

    `underscore` decides what happens to header names containing `_` that are not managed names:
    "drop" (nginx's default `underscores_in_headers off`: silently not forwarded), "reject" (400) or
    "keep" (forwarded). Managed names (`MANAGED_NAMES`, `THIRD_PARTY_CERT_HEADERS`) and the listener's
    `strip` globs are stripped in every spelling whatever it says. Why underscores at all: a backend
    that builds CGI-style variables reads `X_Amzn_Mtls_Clientcert_Subject` as the very variable the
    gateway's `X-Amzn-Mtls-Clientcert-Subject` fills (oauth2-proxy's CVE-2025-64484 was exactly this
    with its X-Forwarded-* identity headers; nginx and Apache 2.4 drop such names by default).
    """

    __slots__ = ("underscore", "strip", "keep_underscore", "match")
    underscore: str
    strip: tuple[str, ...]
    keep_underscore: bool
    match: Callable[[bytes], object] | None

    def __init__(self, underscore: str = "drop", strip: tuple[str, ...] = ()) -> None:
        if underscore not in UNDERSCORE_MODES:
            raise ValueError(f"underscore must be one of {UNDERSCORE_MODES}, not {underscore!r}")
        strip = tuple(g.lower() for g in strip)
        setattr_ = object.__setattr__
        setattr_(self, "underscore", underscore)
        setattr_(self, "strip", strip)
        # the two values the encoders read per call
        setattr_(self, "keep_underscore", underscore == "keep")
        setattr_(self, "match", _glob_matcher(strip))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("HeaderPolicy is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("HeaderPolicy is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not HeaderPolicy:
            return NotImplemented
        return self.underscore == other.underscore and self.strip == other.strip

    def __hash__(self) -> int:
        return hash((self.underscore, self.strip))

    def __repr__(self) -> str:
        return f"HeaderPolicy(underscore={self.underscore!r}, strip={self.strip!r})"

    def strips(self, name: bytes) -> bool:
        """Whether `name` is stripped in every mode: a managed name or a `strip` glob, any spelling."""
        folded = fold_name(name)
        return (folded in MANAGED_NAMES or folded.startswith(DROPPED_PREFIXES)
                or (self.match is not None and self.match(name) is not None))


DEFAULT_POLICY = HeaderPolicy()


class Screening(NamedTuple):
    """What `screen_request` found: refuse (400) with a reason code, or forward and log once."""
    refuse: bool
    reason: str
    message: str
    names: tuple[bytes, ...]


_PROTECTED_TOKEN: dict[bytes, bool] = {}       # Connection option -> names a protected header


def screen_request(policy: HeaderPolicy, headers: list[tuple[bytes, bytes]],
                   connection_tokens: frozenset[bytes]) -> Screening | None:
    """Decide, once per request before routing, whether its header names refuse or need a log line.

    None in the common case (no name with `_`, no Connection option naming a gateway-set header),
    without allocating. Otherwise:

    * a Connection option naming a `CONNECTION_PROTECTED` header in any spelling:
      refuse, ``connection_names_managed_header``;
    * `underscore = "reject"` and a name with `_` that is not stripped anyway:
      refuse, ``underscore_header_rejected``;
    * names with `_` (or another byte but letters, digits, `-`) that the encoder will drop:
      forward, log once with the names. The reason is ``managed_header_spelling_dropped`` when
      one of them is a managed or listed name in another spelling (a forgery attempt worth an
      operator's eye), else ``underscore_headers_dropped``.

    The encoder drops the same names itself whatever this returns; this only decides the answer
    and the log line.
    """
    if connection_tokens:
        bad = None
        for t in connection_tokens:
            hit = _PROTECTED_TOKEN.get(t)
            if hit is None:
                hit = fold_name(t) in CONNECTION_PROTECTED
                if len(_PROTECTED_TOKEN) < 256:     # keep-alive, close, upgrade, te: seen again
                    _PROTECTED_TOKEN[t] = hit
            if hit:
                bad = [t] if bad is None else bad + [t]
        if bad is not None:
            return Screening(True, "connection_names_managed_header",
                             "a Connection option names a header the gateway sets",
                             tuple(sorted(bad)))
    start = first_nonstandard(headers)      # the module's choice of twin, set by set_native
    if start < 0:
        return None
    managed: list[bytes] = []
    other: list[bytes] = []
    for i in range(start, len(headers)):
        name = headers[i][0]
        if not _nonstandard(name) or name in managed or name in other:
            continue
        (managed if policy.strips(name) else other).append(name)
    if other and policy.underscore == "reject":
        return Screening(True, "underscore_header_rejected",
                         "request header names with '_' (or another byte but letters, digits and "
                         "'-') are refused on this listener", tuple(other))
    dropped = managed + other if policy.underscore == "drop" else managed
    if not dropped:
        return None
    if managed:
        return Screening(False, "managed_header_spelling_dropped",
                         "header names the gateway manages, spelled with '_' or the like, dropped",
                         tuple(dropped))
    return Screening(False, "underscore_headers_dropped",
                     "request header names with '_' (or another byte but letters, digits and '-') "
                     "dropped", tuple(dropped))


# ---------------------------------------------------------------------------------------------
# Pure twins of the native functions.
# ---------------------------------------------------------------------------------------------

def _escape_table(safe: bytes) -> dict[bytes, bytes]:
    return {bytes((b,)): (bytes((b,)) if b in safe else b"%%%02X" % b) for b in range(256)}


_ALB_SAFE = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" b"_.-~" b"+=/")
_ENVOY_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" b"*-._"
_ALB_ESC = _escape_table(_ALB_SAFE)
_ENVOY_ESC = _escape_table(_ENVOY_SAFE)
_ALB_UNSAFE = re.compile(b"[^" + re.escape(_ALB_SAFE) + b"]")
_ENVOY_UNSAFE = re.compile(b"[^" + re.escape(_ENVOY_SAFE) + b"]")
_Sub = Callable[[Callable[["re.Match[bytes]"], bytes], bytes], bytes]     # a bound Pattern.sub


def _py_quote_pem_alb(pem: bytes, _sub: _Sub = _ALB_UNSAFE.sub,
                      _esc: Callable[[bytes], bytes] = _ALB_ESC.__getitem__) -> bytes:
    """ALB's rule: ``urllib.parse.quote(pem, safe="+=/")``, as bytes."""
    return _sub(lambda m: _esc(m[0]), pem)


def _py_quote_pem_envoy(pem: bytes, _sub: _Sub = _ENVOY_UNSAFE.sub,
                        _esc: Callable[[bytes], bytes] = _ENVOY_ESC.__getitem__) -> bytes:
    """Envoy's PercentEncoding::urlEncode: keep ALPHA / DIGIT / ``*-._``, ``%XX`` the rest."""
    return _sub(lambda m: _esc(m[0]), pem)


def _py_sf_binary(der: bytes, _b64: Callable[..., bytes] = binascii.b2a_base64) -> bytes:
    """RFC 8941 section 4.1.8: a byte sequence is ``:`` base64 (with padding) ``:``."""
    return b":" + _b64(der, newline=False) + b":"


def _token_filter(connection_tokens: frozenset[bytes]) -> frozenset[bytes] | None:
    """The Connection options, folded, that can still name a kept header (managed ones cannot)."""
    out = frozenset(f for f in (fold_name(t) for t in connection_tokens)
                    if f not in MANAGED_NAMES and not f.startswith(DROPPED_PREFIXES))
    return out or None


def _py_encode_request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                            identity_lines: bytes, client_ip: bytes, client_port: int,
                            listener_port: int, connection_tokens: frozenset[bytes] = frozenset(),
                            framing: bytes = b"", policy: HeaderPolicy | None = None) -> bytes:
    """Build the upstream request head in one pass over the client's headers.

    Every name is compared as backends compare it (`fold_name`): a managed name is dropped in any
    spelling, and only the exact spelling ``X-Forwarded-For`` (any case) is folded into the
    gateway's own; `X_Forwarded_For` is dropped. Other names with `_` (or any byte but letters,
    digits and `-`) are dropped unless `policy` keeps them; names matching the policy's `strip` globs are dropped. `client_port` is accepted
    for symmetry with the connection record; ALB sends no header with the client's port, so neither
    do we. `connection_tokens` are the Connection header's options (RFC 9110 section 7.6.1);
    headers they name are dropped, compared the same way, but they never change what happens to a
    managed name (`screen_request` refuses such a request first). `framing` (for example
    ``b"Content-Length: 5\\r\\n"``) goes last, just before the blank line.
    """
    if policy is None:
        policy = DEFAULT_POLICY
    tokens = _token_filter(connection_tokens) if connection_tokens else None
    keep_underscore = policy.keep_underscore
    match = policy.match
    dropped = DROPPED_NAMES
    prefixes = DROPPED_PREFIXES
    # Fast path: no per-header byte checks; one check over everything kept afterwards decides
    # whether any name or value carried CR, LF or NUL (each kept line adds exactly one CRLF).
    lines: list[bytes] = []
    xff: list[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname.translate(None, _STANDARD_NAME_BYTES):
            lname = lname.translate(_FOLD_TABLE)
            if (not keep_underscore or lname in dropped or lname == _XFF
                    or lname.startswith(prefixes)):
                continue
        elif lname in dropped or lname.startswith(prefixes) or not name:
            continue
        elif lname == _XFF:
            value = value.strip(b" \t")
            if value:
                xff.append(value)
            continue
        if match is not None and match(name) is not None:
            continue
        if tokens is not None and lname in tokens:
            continue
        lines += (name, b": ", value, b"\r\n")
    kept = b"".join(lines)
    folded = b", ".join(xff)
    n = len(lines) >> 2
    if (kept.count(b"\r") != n or kept.count(b"\n") != n or b"\0" in kept
            or b"\r" in folded or b"\n" in folded or b"\0" in folded):
        kept, folded = _strict_headers(headers, policy, tokens)
    if client_ip:
        folded = folded + b", " + client_ip if folded else client_ip
    return b"".join((
        method, b" ", target, b" HTTP/1.1\r\n",
        kept,
        b"X-Forwarded-For: " + folded + b"\r\n" if folded else b"",
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Port: %d\r\n" % listener_port,
        identity_lines,
        framing,
        b"\r\n",
    ))


def _kind(name: bytes, policy: HeaderPolicy, tokens: frozenset[bytes] | None) -> int:
    """_KEEP, _DROP or _FOLD for one client header name (the fast loop above, spelled out)."""
    if not name:
        return _DROP
    folded = fold_name(name)
    underscore = _nonstandard(name)
    if folded in DROPPED_NAMES or folded.startswith(DROPPED_PREFIXES):
        return _DROP
    if folded == _XFF:
        return _DROP if underscore else _FOLD
    if underscore and not policy.keep_underscore:
        return _DROP
    if policy.match is not None and policy.match(name) is not None:
        return _DROP
    if tokens is not None and folded in tokens:
        return _DROP
    return _KEEP


def _strict_headers(headers: list[tuple[bytes, bytes]], policy: HeaderPolicy,
                    tokens: frozenset[bytes] | None) -> tuple[bytes, bytes]:
    """The slow path: the same filter, dropping any header whose name or value has CR, LF or NUL."""
    lines: list[bytes] = []
    xff: list[bytes] = []
    for name, value in headers:
        kind = _kind(name, policy, tokens)
        if kind == _DROP:
            continue
        if (b"\r" in name or b"\n" in name or b"\0" in name
                or b"\r" in value or b"\n" in value or b"\0" in value):
            continue
        if kind == _FOLD:
            value = value.strip(b" \t")
            if value:
                xff.append(value)
            continue
        lines += (name, b": ", value, b"\r\n")
    return b"".join(lines), b", ".join(xff)


def _py_encode_response_head(line: bytes, headers: list[tuple[bytes, bytes]],
                             drop: frozenset[bytes] | set[bytes],
                             extra: list[tuple[bytes, bytes]]) -> bytes:
    """The head a client gets for a target's response: `line` (the status line, with its CRLF),
    the target's fields whose lowercased names are not in `drop`, then `extra`, then the empty
    line. A CR or LF inside a name or value raises ValueError, so no head can be split (the
    fields come from a parsed response, which has none: this is the last line of defence)."""
    out = [line]
    append = out.append
    kept = 0
    for name, value in headers:
        if name.lower() in drop:
            continue
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")
        kept += 1
    for name, value in extra:
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")
        kept += 1
    append(b"\r\n")
    head = b"".join(out)
    lines = kept + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise ValueError("CR or LF inside a header name or value")
    return head


def _py_first_nonstandard(headers: list[tuple[bytes, bytes]]) -> int:
    """Index of the first header whose name has a byte other than a letter, a digit or `-`, or -1
    (screen_request's fast path)."""
    i = 0
    for name, _value in headers:
        if name.translate(None, _STANDARD_NAME_BYTES):
            return i
        i += 1
    return -1


class Implementation(NamedTuple):
    name: str
    quote_pem_alb: Callable[[bytes], bytes]
    quote_pem_envoy: Callable[[bytes], bytes]
    sf_binary: Callable[[bytes], bytes]
    encode_request_head: Callable[..., bytes]
    first_nonstandard: Callable[[list[tuple[bytes, bytes]]], int]
    encode_response_head: Callable[..., bytes]


PYTHON = Implementation("python", _py_quote_pem_alb, _py_quote_pem_envoy, _py_sf_binary,
                        _py_encode_request_head, _py_first_nonstandard, _py_encode_response_head)


def _load_native() -> Implementation | None:
    try:
        from gateway import _headers_c as c
        # the twin's tables are this module's, handed in once (the twins hold one copy)
        c.bind(dropped_names=DROPPED_NAMES, dropped_prefixes=DROPPED_PREFIXES, folded_name=_XFF,
               alb_safe=_ALB_SAFE, envoy_safe=_ENVOY_SAFE, fold_table=_FOLD_TABLE,
               standard_name_bytes=_STANDARD_NAME_BYTES)
        return Implementation("native", c.quote_pem_alb, c.quote_pem_envoy, c.sf_binary,
                              c.encode_request_head, c.first_nonstandard, c.encode_response_head)
    except (ImportError, AttributeError):
        # AttributeError: a stale build of the extension without these functions.
        return None


NATIVE: Implementation | None = _load_native()

# Rebound by set_native(); callers look them up on the module (`headers.encode_request_head`).
quote_pem_alb = PYTHON.quote_pem_alb
quote_pem_envoy = PYTHON.quote_pem_envoy
sf_binary = PYTHON.sf_binary
encode_request_head = PYTHON.encode_request_head
first_nonstandard = PYTHON.first_nonstandard
encode_response_head = PYTHON.encode_response_head
native_mode = "python"


def set_native(mode: str) -> str:
    """Pick the native or pure functions: ``"auto"``, ``"on"`` or ``"off"``; returns what was chosen.

    ``"on"`` without an importable extension raises NativeUnavailable (the operator asked for it).
    """
    global quote_pem_alb, quote_pem_envoy, sf_binary, encode_request_head, first_nonstandard
    global encode_response_head, native_mode
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"native mode must be 'auto', 'on' or 'off', not {mode!r}")
    if mode == "on" and NATIVE is None:
        raise NativeUnavailable("native = \"on\" but gateway._headers_c cannot be imported "
                                "(reinstall with `pip install -e .` to build it)")
    impl = NATIVE if mode != "off" and NATIVE is not None else PYTHON
    quote_pem_alb = impl.quote_pem_alb
    quote_pem_envoy = impl.quote_pem_envoy
    sf_binary = impl.sf_binary
    encode_request_head = impl.encode_request_head
    first_nonstandard = impl.first_nonstandard
    encode_response_head = impl.encode_response_head
    native_mode = impl.name
    return impl.name


set_native("auto")


# ---------------------------------------------------------------------------------------------
# Identity headers (computed once per identity and mode; not a hot path).
# ---------------------------------------------------------------------------------------------

def pem(der: bytes) -> bytes:
    """PEM exactly as OpenSSL's PEM_write_X509 (and cryptography) write it: 64-column lines."""
    b64 = base64.b64encode(der)
    body = b"\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n"


def _iso_z(dt: datetime) -> bytes:
    # ISO 8601 UTC with Z, as ALB writes it; explicit widths so years < 1000 still have 4 digits.
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
    return b"%04d-%02d-%02dT%02d:%02d:%02dZ" % (dt.year, dt.month, dt.day, dt.hour, dt.minute,
                                                dt.second)


_CTL = re.compile(b"[\x00-\x1f\x7f]")


def _dn_value(dn: str) -> bytes:
    """An RFC 2253 string as header bytes: control bytes become the RFC 2253 escape ``\\XX``.

    The result still parses as the same distinguished name, and can never split a header line.
    """
    raw = dn.encode("utf-8", "surrogateescape")
    return _CTL.sub(lambda m: b"\\%02X" % m[0][0], raw)


def _text_value(text: str | bytes) -> bytes:
    """A SAN or `by` value as header bytes: control bytes percent-encoded, like any URI would."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return _CTL.sub(lambda m: b"%%%02X" % m[0][0], raw)


_XFCC_NEEDS_QUOTES = re.compile(b'[,;="\\\\]')
_QUOTED_PAIR = re.compile(b'["\\\\]')


def _xfcc_quoted(value: bytes) -> bytes:
    return b'"' + _QUOTED_PAIR.sub(lambda m: b"\\" + m[0], value) + b'"'


def _xfcc_value(value: bytes) -> bytes:
    return _xfcc_quoted(value) if _XFCC_NEEDS_QUOTES.search(value) else value


def _alb_lines(identity: Identity, verified: bool) -> list[bytes]:
    if not verified:
        chain = b"".join(pem(der) for der in identity.chain_der)
        return [b"X-Amzn-Mtls-Clientcert: " + quote_pem_alb(chain) + b"\r\n"]
    return [
        b"X-Amzn-Mtls-Clientcert-Serial-Number: " + serial_hex(identity.serial).encode() + b"\r\n",
        b"X-Amzn-Mtls-Clientcert-Issuer: " + _dn_value(identity.issuer) + b"\r\n",
        b"X-Amzn-Mtls-Clientcert-Subject: " + _dn_value(identity.subject) + b"\r\n",
        b"X-Amzn-Mtls-Clientcert-Validity: NotBefore=" + _iso_z(identity.not_before)
        + b";NotAfter=" + _iso_z(identity.not_after) + b"\r\n",
        b"X-Amzn-Mtls-Clientcert-Leaf: " + quote_pem_alb(pem(identity.leaf_der)) + b"\r\n",
    ]


def _xfcc_lines(identity: Identity, by: bytes) -> list[bytes]:
    pems = [pem(der) for der in identity.chain_der]
    parts = []
    if by:
        parts.append(b"By=" + _xfcc_value(_text_value(by)))
    parts.append(b"Hash=" + identity.fingerprint.encode("ascii"))
    parts.append(b'Cert="' + quote_pem_envoy(pems[0]) + b'"')
    parts.append(b'Chain="' + quote_pem_envoy(b"".join(pems)) + b'"')
    parts.append(b"Subject=" + _xfcc_quoted(_dn_value(identity.subject)))
    if identity.san_uri:
        parts.extend(b"URI=" + _xfcc_value(_text_value(u)) for u in identity.san_uri)
    else:
        parts.append(b"URI=")
    parts.extend(b"DNS=" + _xfcc_value(_text_value(d)) for d in identity.san_dns)
    return [b"X-Forwarded-Client-Cert: " + b";".join(parts) + b"\r\n"]


def _rfc9440_lines(identity: Identity) -> list[bytes]:
    lines = [b"Client-Cert: " + sf_binary(identity.leaf_der) + b"\r\n"]
    if len(identity.chain_der) > 1:
        lines.append(b"Client-Cert-Chain: "
                     + b", ".join(sf_binary(der) for der in identity.chain_der[1:]) + b"\r\n")
    return lines


def identity_block(identity: Identity | None, verified: bool, styles: tuple[str, ...],
                   by: bytes = b"", fields: tuple[str, ...] = ()) -> bytes:
    """The identity header lines (``Name: value\\r\\n`` ...) for `styles`, in the order given,
    then the `identity_fields` asked for (`fields`, see FIELD_HEADERS: a field the certificate
    does not have is left out).

    `verified` picks ALB's verify-mode set (serial, issuer, subject, validity, leaf) or, when False,
    passthrough's single X-Amzn-Mtls-Clientcert with the whole chain. XFCC and RFC 9440 are the same
    in both modes. The result is kept in ``identity.header_cache``.
    """
    if identity is None:
        return b""
    key = (verified, styles, by, fields)
    cache = identity.header_cache
    block = cache.get(key)
    if block is not None:
        return block
    lines: list[bytes] = []
    for style in styles:
        if style == "alb":
            lines += _alb_lines(identity, verified)
        elif style == "xfcc":
            lines += _xfcc_lines(identity, by)
        elif style == "rfc9440":
            lines += _rfc9440_lines(identity)
        else:
            raise ValueError(f"unknown header style {style!r}; expected one of {STYLES}")
    if fields:
        lines += _field_lines(identity, fields)
    block = cache[key] = b"".join(lines)
    return block


def identity_field_values(identity: Identity) -> dict[str, str | list[str] | None]:
    """The `identity_fields` of an identity, as the access log writes them."""
    return {"sha256_fingerprint": identity.fingerprint, "san_dns": list(identity.san_dns),
            "san_uri": list(identity.san_uri), "san_email": list(identity.san_email),
            "spiffe_id": identity.spiffe_id}


_LIST_SPECIALS = re.compile(b"[\x00-\x1f\x7f%,]")


def _list_value(values: tuple[str, ...]) -> bytes:
    """SANs in one header value: comma-separated, each with control bytes, "%" and "," percent-
    encoded (so no value can pass for two, nor split the line)."""
    return b",".join(_LIST_SPECIALS.sub(lambda m: b"%%%02X" % m[0][0],
                                        v.encode("utf-8", "surrogateescape")) for v in values)


def _field_lines(identity: Identity, fields: tuple[str, ...]) -> list[bytes]:
    out = []
    for name in fields:
        header = FIELD_HEADERS[name]
        if name == "sha256_fingerprint":
            value = identity.fingerprint.encode("ascii")
        elif name == "spiffe_id":
            spiffe = identity.spiffe_id
            if spiffe is None:
                continue
            value = _text_value(spiffe)
        else:
            items = getattr(identity, name)
            if not items:
                continue
            value = _list_value(items)
        out.append(header + b": " + value + b"\r\n")
    return out


def verify_status_line(status: str) -> bytes:
    """`X-Mtls-Verify-Status: <ALB status>` (a report-only listener's verdict)."""
    return VERIFY_STATUS_HEADER + b": " + status.encode("ascii") + b"\r\n"
