"""Signed identity for backends: an HMAC over the identity headers the gateway set and the request.

How this works: a listener with `identity_signature` adds one more header to every forwarded
request, ``X-Mtls-Identity-Signature: t=<unix>,n=<nonce>,kid=<id>,sig=<mac>``, an HMAC-SHA256
under a key shared with the backends. The gateway strips every identity header name from every
client request, whatever the configuration, so a backend that checks the signature (`verify`)
knows the identity headers it sees are the ones the gateway wrote, for this request, recently, and
that none was removed on the way. This module is also that verifier: it imports nothing but the
standard library, so a backend can vendor this one file. The canonical string puts the identity
part first: the gateway keeps, per identity block (one per client certificate), the HMAC state
already fed that part, and per request only copies it and feeds the method, path, host, time and
nonce (`Signer.sign_lines`); nonces are drawn from the system's random source a batch at a time.

The algorithm, version 1 (enough to reimplement it in any language)
-------------------------------------------------------------------

Key. The key is the bytes of the key file with surrounding ASCII whitespace removed, used as they
are (a file holding base64 text is a key made of that text; it is not decoded). ``kid`` is the first
8 hex digits, lower case, of SHA-256 of the key: it names the key without revealing it, so a backend
holding the current and the previous key during a rotation knows which one to try (it only picks the
key; the HMAC is what proves anything). HMAC-SHA256 is RFC 2104's HMAC with SHA-256.

Identity headers. Exactly these names (compared case-insensitively; written lower case below):
``x-amzn-mtls-clientcert``, ``x-amzn-mtls-clientcert-serial-number``,
``x-amzn-mtls-clientcert-issuer``, ``x-amzn-mtls-clientcert-subject``,
``x-amzn-mtls-clientcert-validity``, ``x-amzn-mtls-clientcert-leaf``,
``x-amzn-mtls-clientcert-sha256-fingerprint``, ``x-amzn-mtls-clientcert-san-dns``,
``x-amzn-mtls-clientcert-san-uri``, ``x-amzn-mtls-clientcert-san-email``,
``x-amzn-mtls-clientcert-spiffe-id``, ``x-forwarded-client-cert``, ``client-cert``,
``client-cert-chain``, ``x-mtls-verify-status`` (`SIGNED_HEADER_NAMES`). The signature header
itself is not one of them.

Canonical string (bytes; ``\\n`` is the single byte 0x0A; no CR anywhere)::

    "mtls-gateway-identity-v1\\n"
    for each identity header present:        lowercase-name ":" value "\\n"
    "\\n"
    METHOD "\\n" PATH "\\n" HOST "\\n" T "\\n" NONCE

* The identity lines are every identity header of the request (every occurrence, if a name occurs
  twice), sorted by the pair (lower-case name, value) compared byte by byte: first by name, then by
  value. Note this is not the order of the joined lines: ``client-cert`` sorts before
  ``client-cert-chain``. A value is the field value as sent on the wire, byte for byte (no percent-
  or quote-decoding: the XFCC value keeps its quotes and ``\\"``), without the leading and trailing
  spaces and tabs that surround it (RFC 9110 section 5.5). An identity header that is not present
  is simply not in the list; with none at all the part is empty and the string goes straight from
  the version line to the empty line. So a header an intermediary removed breaks the signature
  (the gateway signed it), and a header added around the gateway breaks it too (the gateway strips
  every such name from what clients send, so whatever arrives under one of them was signed, or is
  a forgery).
* METHOD is the request method as sent (``GET``). PATH is the request-target as the gateway
  forwarded it, exactly as on the request line (``/v1/orders?id=7``: path and query, still
  percent-encoded; in WSGI that is ``RAW_URI``/``REQUEST_URI``, not ``PATH_INFO``; in ASGI
  ``raw_path`` plus ``?`` and ``query_string`` when there is one). HOST is the Host header's value
  (surrounding spaces and tabs removed, like any value), lower-cased (ASCII A-Z only), empty when
  there is none.
* T is the ``t`` parameter's text, NONCE the ``n`` parameter's text, both exactly as in the header.

Header value (under the listener's ``identity_signature.header``, ``X-Mtls-Identity-Signature``
unless configured otherwise)::

    t=<T>,n=<NONCE>,kid=<kid>,sig=<base64url(HMAC-SHA256(key, canonical)), no padding>

in this order, nothing else, no spaces. T is the signing time in whole unix seconds, decimal, no
sign, no leading zeros. NONCE is 12 random bytes in base64url without padding (16 characters).
``sig`` is 43 characters of base64url (RFC 4648 section 5: ``-`` and ``_`` for ``+`` and ``/``)
without the ``=``.

Verifying (`verify`): take the one signature header (none: "missing"; two, or a value that does not
match the format above: "malformed"); find the keys whose kid is the header's (none:
"unknown_key"); rebuild the canonical string from the request and compare the computed ``sig`` text
in constant time (no key matches: "bad_signature"); then refuse a T more than ``max_age_s``
(default 300) in the past ("expired") or more than 60 seconds in the future ("future": clock
skew); then, with a replay memory, refuse a nonce already seen ("replayed"). An identity value,
METHOD, PATH or HOST that carries CR, LF or NUL is "malformed" (the canonical string could not be
read back unambiguously), and so is a request with two Host headers.

Test vector: key ``0123456789abcdef0123456789abcdef`` (32 ASCII bytes), kid ``3eb1bd43``;
identity headers ``X-Amzn-Mtls-Clientcert-Subject: CN=client,O=Org`` and
``X-Amzn-Mtls-Clientcert-Serial-Number: 03A5B1``; ``GET /v1/orders?id=7``,
``Host: API.Example.org``; t ``1700000000``, n ``AAECAwQFBgcICQoL``. The canonical string is::

    mtls-gateway-identity-v1
    x-amzn-mtls-clientcert-serial-number:03A5B1
    x-amzn-mtls-clientcert-subject:CN=client,O=Org

    GET
    /v1/orders?id=7
    api.example.org
    1700000000
    AAECAwQFBgcICQoL

(no newline after the nonce), and the header value is::

    t=1700000000,n=AAECAwQFBgcICQoL,kid=3eb1bd43,sig=ux5azSUI8nk-LLGSFguQZ21KHE4WxHoskLH8dY6ptjo

What the signature does not cover: the body, and every header that is not an identity header. It
proves the gateway wrote these identity headers for a request with this method, target and host;
the backend still decides what the identity is allowed to do.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
from binascii import b2a_base64
from collections.abc import Iterable, Iterator, MutableSet
from time import time as _clock
from typing import Protocol, Union

__all__ = [
    "SIGNED_HEADER_NAMES", "DEFAULT_HEADER", "DEFAULT_MAX_AGE_S", "CLOCK_SKEW_S", "VERSION_LINE",
    "NONCE_BYTES", "PREFIX_CACHE_ENTRIES", "REASONS", "SignatureError", "key_id", "load_key",
    "canonical", "Signer", "verify",
]

# Every identity header the gateway may write (gateway.headers strips each from client requests).
SIGNED_HEADER_NAMES: frozenset[bytes] = frozenset({
    # ALB verify mode, and passthrough's whole chain
    b"x-amzn-mtls-clientcert-serial-number",
    b"x-amzn-mtls-clientcert-issuer",
    b"x-amzn-mtls-clientcert-subject",
    b"x-amzn-mtls-clientcert-validity",
    b"x-amzn-mtls-clientcert-leaf",
    b"x-amzn-mtls-clientcert",
    # `identity_fields`, in ALB's naming
    b"x-amzn-mtls-clientcert-sha256-fingerprint",
    b"x-amzn-mtls-clientcert-san-dns",
    b"x-amzn-mtls-clientcert-san-uri",
    b"x-amzn-mtls-clientcert-san-email",
    b"x-amzn-mtls-clientcert-spiffe-id",
    # Envoy, RFC 9440, and the report-only verdict
    b"x-forwarded-client-cert",
    b"client-cert",
    b"client-cert-chain",
    b"x-mtls-verify-status",
})
DEFAULT_HEADER = "X-Mtls-Identity-Signature"
DEFAULT_MAX_AGE_S = 300.0
# A backend whose clock runs behind the gateway's sees signatures from its future; a minute covers
# NTP-disciplined hosts with room to spare, and bounds how far ahead a captured header stays valid.
CLOCK_SKEW_S = 60.0
VERSION_LINE = b"mtls-gateway-identity-v1\n"
NONCE_BYTES = 12                            # 96 bits: no collision in any realistic replay window
NONCE_CHARS = 16                            # base64 of 12 bytes, which needs no padding
KEY_ID_HEX_DIGITS = 8
# Distinct identity blocks whose HMAC prefix a Signer keeps: one per client certificate (and
# header style) seen lately. Each entry is one digest context; the block itself is shared with the
# identity's own header cache. Cleared when full: a simple bound, and a churn of more than this
# many distinct clients costs each only the first-sight price again.
PREFIX_CACHE_ENTRIES = 4096
# Nonces drawn per os.urandom call: one system call and one base64 pass per this many requests.
NONCE_BATCH = 256
# Keys whose kid and pads `verify` keeps: the current and previous key of a few listeners (a
# retired key's stay until newer ones push them out).
KEY_CACHE_ENTRIES = 16
REASONS = ("missing", "malformed", "unknown_key", "expired", "future", "bad_signature", "replayed")

_VALUE = re.compile(rb"t=(0|[1-9][0-9]{0,14}),n=([A-Za-z0-9_-]{16}),kid=([0-9a-f]{8}),"
                    rb"sig=([A-Za-z0-9_-]{43})")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")       # RFC 9110 section 5.6.2
_OWS = b" \t"                                             # RFC 9110 section 5.6.3


class SignatureError(Exception):
    """A request whose identity signature does not hold; `reason` is one of REASONS.

    The fault is whatever sent the request around the gateway, or changed it on the way: a backend
    answers 401 (`status_hint`), or drops the identity, and logs the reason, never a traceback."""

    status_hint = 401

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def key_id(key: bytes) -> str:
    """The first 8 hex digits of SHA-256(key): names a key in the header without revealing it."""
    return hashlib.sha256(key).hexdigest()[:KEY_ID_HEX_DIGITS]


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The key in `path`: the file's bytes without surrounding whitespace (not decoded).

    An empty key is refused: an HMAC under it would be a checksum anyone can compute."""
    with open(path, "rb") as f:
        key = f.read().strip()
    if not key:
        raise ValueError(f"{os.fspath(path)!s} holds no key")
    return key


# --- HMAC-SHA256 --------------------------------------------------------------------------------

# RFC 2104 section 2: B is SHA-256's block size; the pads (ipad 0x36, opad 0x5C) are applied with
# translate tables that XOR every byte with them.
_BLOCK_BYTES = 64
_IPAD_TABLE = bytes(b ^ 0x36 for b in range(256))
_OPAD_TABLE = bytes(b ^ 0x5C for b in range(256))
# base64 to base64url (RFC 4648 section 5); translate() also deletes the padding, in the same pass
_TO_URL = bytes.maketrans(b"+/", b"-_")


class _Key:
    """A key's kid and its two HMAC halves: SHA-256 contexts fed ``K XOR ipad`` (then the version
    line) and ``K XOR opad``. HMAC(K, m) is the outer fed the inner's digest of m (RFC 2104).

    Both ends hold these rather than an hmac.HMAC: under OpenSSL 3 copying an HMAC context
    (EVP_MAC_CTX_dup), or making one, costs more than the rest of a request's signature, while a
    digest context copy costs a quarter of it. The tests hold this construction to hmac.new."""

    __slots__ = ("kid", "inner", "outer")

    def __init__(self, key: bytes) -> None:
        if not key:
            # an HMAC under the empty key is a checksum anyone can compute
            raise ValueError("an identity signature key must not be empty")
        self.kid = key_id(key)
        if len(key) > _BLOCK_BYTES:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK_BYTES, b"\0")
        self.inner = hashlib.sha256(key.translate(_IPAD_TABLE) + VERSION_LINE)
        self.outer = hashlib.sha256(key.translate(_OPAD_TABLE))

    def sig(self, inner: hashlib._Hash) -> bytes:
        """The ``sig`` text for an inner context (a copy of ours) fed the rest of the message."""
        outer = self.outer.copy()
        outer.update(inner.digest())
        return b2a_base64(outer.digest(), newline=False).translate(_TO_URL, b"=")


@functools.lru_cache(maxsize=KEY_CACHE_ENTRIES)
def _key(key: bytes) -> _Key:
    return _Key(key)


# --- the canonical string ------------------------------------------------------------------------

class _Items(Protocol):
    def items(self) -> Iterable[tuple[str | bytes, str | bytes]]: ...


# A mapping (dict, http.client.HTTPMessage, a framework's headers) or (name, value) pairs (ASGI).
Headers = Union[_Items, Iterable[tuple[Union[str, bytes], Union[str, bytes]]]]


def _wire(text: str | bytes) -> bytes:
    """Header text back as wire bytes. WSGI (PEP 3333) and http.client decode header bytes as
    ISO-8859-1, so that is how a str is encoded back; one that cannot be (a character above U+00FF)
    came from a UTF-8 decoder and is encoded as UTF-8. Bytes are taken as they are: a backend that
    has them should pass them."""
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _items(headers: Headers) -> Iterable[tuple[str | bytes, str | bytes]]:
    # `items()` first: iterating a mapping yields its names, and a two-letter name ("te") would
    # unpack into a bogus (name, value) pair instead of failing
    return headers.items() if hasattr(headers, "items") else headers


def _pairs(headers: Headers) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value without surrounding OWS) for every header, as bytes."""
    return [(_wire(name).lower(), _wire(value).strip(_OWS))
            for name, value in _items(headers)]


def _after_version(identity: list[tuple[bytes, bytes]], *request: bytes) -> bytes:
    """The canonical string after its version line: the `identity` pairs (sorted, identity
    headers only) as lines, then, if given, the request's METHOD, PATH, HOST (lower-cased here),
    T and NONCE. One join, so a PEM value is copied once."""
    parts: list[bytes] = []
    for name, value in identity:
        parts += (name, b":", value, b"\n")
    if request:
        method, path, host, t, nonce = request
        parts += (b"\n", method, b"\n", path, b"\n", host.lower(), b"\n", t, b"\n", nonce)
    return b"".join(parts)


def canonical(headers: Headers, method: str | bytes, path: str | bytes, host: str | bytes,
              t: str | bytes | int, nonce: str | bytes) -> bytes:
    """The version-1 canonical string for a request (see the module docstring): the identity
    headers among `headers`, then the request. For a backend that wants to see what was signed."""
    t_text = b"%d" % t if isinstance(t, int) else _wire(t)
    identity = sorted(p for p in _pairs(headers) if p[0] in SIGNED_HEADER_NAMES)
    return VERSION_LINE + _after_version(identity, _wire(method), _wire(path), _wire(host), t_text,
                                         _wire(nonce))


# --- nonces ---------------------------------------------------------------------------------------

def _fresh_nonces() -> bytes:
    """Fill the nonce pool; returns its first nonce."""
    global _nonces
    # 12 is a multiple of 3, so base64 of the concatenation is the concatenation of each 12-byte
    # group's 16 characters: one encode for the whole batch, then slices
    text = base64.urlsafe_b64encode(os.urandom(NONCE_BYTES * NONCE_BATCH))
    _nonces = batch = iter([text[i:i + NONCE_CHARS] for i in range(0, len(text), NONCE_CHARS)])
    return next(batch)


# Taken with next(_nonces, None): a list iterator's next() runs without releasing the GIL, so two
# threads never get the same nonce; two refilling at once each draw a batch of their own.
_nonces: Iterator[bytes] = iter(())


def _forget_nonces() -> None:
    global _nonces
    _nonces = iter(())


# Workers are forked from the master: a child that kept the parent's batch would send the same
# nonces as its siblings, and a backend's replay memory would refuse the second of each.
os.register_at_fork(after_in_child=_forget_nonces)


# --- signing --------------------------------------------------------------------------------------

class Signer:
    """Signs forwarded requests with one key; `header` names the signature header.

    Meant for one event loop (a worker's): the prefix cache is a plain dict. The key is kept only
    as the digest contexts' state."""

    __slots__ = ("header", "kid", "_key", "_outer", "_line_start", "_kid_part", "_prefixes",
                 "_max_prefixes", "_t", "_t_text")

    def __init__(self, key: bytes, header: str = DEFAULT_HEADER, *,
                 max_cached_prefixes: int = PREFIX_CACHE_ENTRIES) -> None:
        if not _TOKEN.fullmatch(header):
            raise ValueError(f"{header!r} is not a header name")
        if header.lower().encode("ascii") in SIGNED_HEADER_NAMES or header.lower() == "host":
            raise ValueError(f"{header!r} is a signed header; the signature needs its own name")
        if max_cached_prefixes < 1:
            raise ValueError("max_cached_prefixes must be at least 1")
        self.header = header
        self._key = _Key(key)
        self.kid = self._key.kid
        self._outer = self._key.outer
        self._line_start = header.encode("ascii") + b": t="
        self._kid_part = b",kid=" + self.kid.encode("ascii") + b",sig="
        self._prefixes: dict[bytes, hashlib._Hash] = {}
        self._max_prefixes = max_cached_prefixes
        # the second `_t_text` spells: it is formatted once a second, not once a request
        self._t = -1
        self._t_text = b""

    @property
    def cached_prefixes(self) -> int:
        """How many identity blocks have their HMAC prefix kept."""
        return len(self._prefixes)

    def _prefix(self, identity_lines: bytes) -> hashlib._Hash:
        """The inner digest fed the version line and the identity part of `identity_lines`, kept
        for the next request with the same block (the same object, from the identity's header
        cache, so the lookup hashes nothing: bytes cache their hash)."""
        inner = self._key.inner.copy()
        inner.update(_after_version(sorted(_block_pairs(identity_lines))))
        prefixes = self._prefixes
        if len(prefixes) >= self._max_prefixes:
            prefixes.clear()
        prefixes[identity_lines] = inner
        return inner

    def sign_lines(self, identity_lines: bytes, method: bytes, path: bytes, host: bytes,
                   now: float | None = None) -> bytes:
        """The signature header line (``Header: value\\r\\n``) for a request forwarded with
        `identity_lines` (the gateway's ``Name: value\\r\\n`` block, possibly empty), `method`,
        request-target `path` and Host `host`. ValueError if the block holds a line that is not an
        identity header: it would go out unsigned while looking signed."""
        inner = self._prefixes.get(identity_lines)
        if inner is None:
            inner = self._prefix(identity_lines)
        inner = inner.copy()
        t = int(_clock() if now is None else now)
        if t != self._t:
            self._t, self._t_text = t, b"%d" % t
        t_text = self._t_text
        nonce = next(_nonces, None)
        if nonce is None:
            nonce = _fresh_nonces()
        inner.update(b"\n".join((b"", method, path, host.lower(), t_text, nonce)))
        outer = self._outer.copy()              # _Key.sig, inlined: this is the hot path
        outer.update(inner.digest())
        return b"".join((self._line_start, t_text, b",n=", nonce, self._kid_part,
                         b2a_base64(outer.digest(), newline=False).translate(_TO_URL, b"="),
                         b"\r\n"))

    def sign(self, headers: Headers, method: str | bytes, path: str | bytes, host: str | bytes,
             now: float | None = None) -> bytes:
        """The signature header's value for a request with `headers` (the identity headers among
        them are signed, the rest ignored), as `verify` reads it back."""
        t_text = b"%d" % int(_clock() if now is None else now)
        nonce = next(_nonces, None) or _fresh_nonces()
        inner = self._key.inner.copy()
        identity = sorted(p for p in _pairs(headers) if p[0] in SIGNED_HEADER_NAMES)
        inner.update(_after_version(identity, _wire(method), _wire(path), _wire(host), t_text,
                                    nonce))
        return b"t=" + t_text + b",n=" + nonce + self._kid_part + self._key.sig(inner)


def _block_pairs(identity_lines: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value) of each ``Name: value\\r\\n`` line of an identity block."""
    if not identity_lines:
        return []
    if not identity_lines.endswith(b"\r\n"):
        raise ValueError("an identity block ends with CRLF")
    lines = identity_lines[:-2].split(b"\r\n")
    # every CR and LF is a line end, and there is no NUL: one scan of the block, not one per value
    if identity_lines.count(b"\n") != len(lines) or identity_lines.count(b"\r") != len(lines) \
            or identity_lines.find(b"\0") >= 0:
        raise ValueError("an identity header value carries CR, LF or NUL")
    out = []
    for line in lines:
        name, colon, value = line.partition(b":")
        name = name.lower()
        if not colon or name not in SIGNED_HEADER_NAMES:
            raise ValueError(f"not an identity header line: {line[:60]!r}")
        out.append((name, value.strip(_OWS)))
    return out


# --- verifying ------------------------------------------------------------------------------------

def verify(headers: Headers, method: str | bytes, path: str | bytes, keys: Iterable[bytes],
           max_age_s: float = DEFAULT_MAX_AGE_S, *, header: str = DEFAULT_HEADER,
           now: float | None = None, seen_nonces: MutableSet[str] | None = None) -> str:
    """Check the identity signature of a request; returns the kid of the key that verified it.

    `headers` is every header of the request as received (a mapping, or (name, value) pairs; names
    in any case; str or bytes), `method` and `path` the request line's method and request-target
    (see the module docstring for what PATH is in WSGI and ASGI), `keys` every key currently
    accepted (during a rotation the new and the previous one). `seen_nonces`, when given, is the
    caller's replay memory: a nonce found in it is refused, a verified one is added. It only needs
    to remember ``max_age_s + CLOCK_SKEW_S`` seconds of nonces (older ones fail as "expired"): keep
    two sets, check both, add to the newer, and drop the older every that many seconds.

    Raises SignatureError with a reason from REASONS; never accepts on doubt."""
    wanted = header.lower().encode("latin-1")
    found: list[bytes] = []
    hosts: list[bytes] = []
    identity: list[tuple[bytes, bytes]] = []
    # one pass over the request: only the values of the headers that matter are converted
    for raw_name, raw_value in _items(headers):
        name = (raw_name if isinstance(raw_name, bytes) else _wire(raw_name)).lower()
        if name in SIGNED_HEADER_NAMES:
            identity.append((name, _wire(raw_value).strip(_OWS)))
        elif name == wanted:
            found.append(_wire(raw_value).strip(_OWS))
        elif name == b"host":
            hosts.append(_wire(raw_value).strip(_OWS))
    if not found:
        raise SignatureError("missing", f"no {header} header")
    if len(found) > 1:
        raise SignatureError("malformed", f"{len(found)} {header} headers")
    match = _VALUE.fullmatch(found[0])
    if match is None:
        raise SignatureError("malformed", f"{header} is not t=,n=,kid=,sig=")
    t_text, nonce, kid_b, sig = match.groups()
    kid = kid_b.decode("ascii")
    candidates = [k for k in map(_key, keys) if k.kid == kid]
    if not candidates:
        raise SignatureError("unknown_key", f"no key with kid {kid}")

    if len(hosts) > 1:
        raise SignatureError("malformed", "more than one Host header")
    method_b, path_b, host_b = _wire(method), _wire(path), hosts[0] if hosts else b""
    identity.sort()
    rest = _after_version(identity, method_b, path_b, host_b, t_text, nonce)
    # The format puts one LF after each identity line and five between the request's fields (t and
    # the nonce have none: the pattern said so); any more came from inside a value. One scan of
    # the message instead of one per value.
    if rest.count(b"\n") != len(identity) + 5 or rest.find(b"\r") >= 0 or rest.find(b"\0") >= 0:
        raise SignatureError("malformed", "CR, LF or NUL in a signed value")
    # every candidate is tried, so the time taken does not say which key (if any) came close
    verified = False
    for k in candidates:
        inner = k.inner.copy()
        inner.update(rest)
        verified |= hmac.compare_digest(k.sig(inner), sig)
    if not verified:
        raise SignatureError("bad_signature", f"signature does not match (kid {kid})")

    now_s = _clock() if now is None else now
    t = int(t_text)
    if now_s - t > max_age_s:
        raise SignatureError("expired", f"signed {now_s - t:.0f} s ago, more than {max_age_s:g} s")
    if t - now_s > CLOCK_SKEW_S:
        raise SignatureError("future", f"signed {t - now_s:.0f} s in the future")
    if seen_nonces is not None:
        nonce_text = nonce.decode("ascii")
        if nonce_text in seen_nonces:
            raise SignatureError("replayed", f"nonce {nonce_text} seen before")
        seen_nonces.add(nonce_text)
    return kid
