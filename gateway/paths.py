"""Request-target normalisation: rules match, and backends receive, one canonical path.

How this works: before rules match, `normalize_target` rewrites the path of a request-target into
the form every reasonable backend reads the same way, and the caller forwards exactly that form, so
the path a rule was matched against is the path the backend acts on. A gateway that matches on one
spelling and forwards another is the bypass behind CVE-2019-9901 (Envoy), CVE-2024-45410 and
CVE-2026-39858 (Traefik) and CVE-2025-48865 (Fabio): `/pub/../admin/x`, `//admin/x` or
`/%61dmin/x` miss a rule on `/admin/*`, and the backend serves `/admin/x`.
The steps, in order, over the path only (the query is never altered, RFC 3986 3.4):
1. Characters that are not URI syntax (RFC 3986 2, appendix A) and that backends read differently
   are refused: raw bytes >= 0x80, raw controls and space, a raw backslash (WHATWG URL and Windows
   servers read it as "/").
2. `;` path parameters (RFC 3986 3.3) per the listener's `escaped_slashes`: refused, kept, or
   removed from each segment before decoding, as Jakarta Servlet 6.0 section 3.5.2 canonicalises
   (`/pub/..;x/admin` is `/pub/../admin` to Tomcat).
3. Percent-encodings (RFC 3986 2.1, 6.2.2.1, 6.2.2.2): a `%` not followed by two hex digits is
   refused; encoded unreserved characters (ALPHA DIGIT `-._~`) are decoded, so `%2e` is a dot and
   `%61dmin` is `admin`; encoded controls (`%00`..`%1F`, `%7F`) are refused (a C backend stops at
   `%00`, a logger splits at `%0A`); `%2F` and `%5C` follow `escaped_slashes` (refused, kept as data,
   or decoded to "/", as Envoy's `path_with_escaped_slashes_action`); every other encoding is kept,
   with upper-case hex. Overlong UTF-8 forms (`%C0%AF` for "/", `%C0%AE` for ".") are refused: lax
   decoders turned them into separators and dots (IIS, CVE-2000-0884).
4. Empty segments are dropped when `merge_slashes` is on (nginx's and Envoy's `merge_slashes`), and
   dot segments are removed (RFC 3986 5.2.4; Envoy's `normalize_path`). Merging comes first, so that
   the two spellings it declares equal (`//` and `/`) give one result (`/pub//../admin` is
   `/pub/../admin` is `/admin`, as nginx, Go's `path.Clean` and `posixpath.normpath` read it).
   A `..` at the root stays at the root (`/../x` is `/x`), as RFC 3986 5.2.4 and 5.4.2 resolve it,
   rather than a refusal (nginx answers 400): the backend receives the resolved path, so nothing
   climbs anyway, and resolving keeps the function total and idempotent.
An absolute-form target (RFC 9112 3.2.2) comes out in origin-form: the proxy already took the
authority as the Host. The asterisk-form (`OPTIONS *`, RFC 9112 3.2.4) passes untouched.
What comes out has no dot segments, no encoded unreserved characters, no `//` (merging on), and no
`%2F`, `%5C` or `;` ("reject" or "decode"): a fixed point of this function, and a path that full
decoding, `http.server`'s slash collapsing, Servlet canonicalisation and unreserved-only decoding
all route the same way. "keep" and `merge_slashes = false` give that guarantee up, for backends known
to treat `%2F`, `;` and `//` as data. Sans-IO, stdlib only.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import HTTPProtocolError

if TYPE_CHECKING:
    from .spec import ListenerSpec

ESCAPED_SLASH_ACTIONS = ("reject", "keep", "decode")

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX_DIGITS = b"0123456789abcdefABCDEF"

# The hot path's scan, over the path only: any byte that may need work; a path without one is done.
# `/.` finds every dot segment (a segment starts after a "/"), `//` every empty segment.
_NEEDS_WORK = re.compile(rb"[%;\\\x00-\x20\x7f-\xff]|/[./]").search  # (string, pos, endpos)
_CONTROL = re.compile(rb"[\x00-\x20\x7f]").search
# Lead bytes that only an overlong encoding uses (C0, C1), or that start one (E0 then 80..9F,
# F0 then 80..8F) -- RFC 3629 3; matched on the normalised text, where hex is upper-case.
_OVERLONG = re.compile(rb"%C[01]%[89AB][0-9A-F]|%E0%[89][0-9A-F]|%F0%8[0-9A-F]").search
# RFC 3986 3.1 scheme, then "//" and the authority (http1 has checked it, and refused userinfo).
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[^/]*").match


def _refuse(reason: str, message: str) -> HTTPProtocolError:
    return HTTPProtocolError(message, status=400, reason=reason)


_MESSAGES = {
    "path_non_ascii": "raw non-ASCII byte in the request path",
    "path_control_byte": "control byte or space in the request path",
    "path_backslash": "backslash in the request path",
    "path_bad_escape": "malformed percent-encoding in the request path",
    "path_escaped_slash": "encoded '/' or '\\' in the request path",
    "path_parameter": "';' path parameter in the request path",
    "path_overlong_utf8": "overlong UTF-8 encoding in the request path",
    "path_bad_target": "request-target is not origin-, absolute- or asterisk-form",
}


class PathPolicy:
    """A listener's path settings, compiled once: the table of what each `%XX` becomes.

    `merge_slashes`: drop empty segments (`//a` is `/a`). `escaped_slashes`: what `%2F`, `%5C` and
    `;` path parameters get -- "reject" (400), "keep" (forwarded as sent, matched as data) or
    "decode" (`%2F` and `%5C` become "/", parameters are removed from their segment)."""

    __slots__ = ("merge_slashes", "escaped_slashes", "_escapes")

    def __init__(self, merge_slashes: bool = True, escaped_slashes: str = "reject") -> None:
        if escaped_slashes not in ESCAPED_SLASH_ACTIONS:
            raise ValueError(f"escaped_slashes must be one of {ESCAPED_SLASH_ACTIONS}, "
                             f"got {escaped_slashes!r}")
        self.merge_slashes = bool(merge_slashes)
        self.escaped_slashes = escaped_slashes
        # two hex digits in any case -> the bytes that replace "%XX", or a refusal's reason (str)
        escapes: dict[bytes, bytes | str] = {}
        for hi in _HEX_DIGITS:
            for lo in _HEX_DIGITS:
                key = bytes((hi, lo))
                value = int(key, 16)
                if value in _UNRESERVED:
                    out: bytes | str = bytes((value,))          # RFC 3986 6.2.2.2
                elif value < 0x20 or value == 0x7F:
                    out = "path_control_byte"
                elif value in (0x2F, 0x5C):
                    slash: dict[str, bytes | str] = {
                        "reject": "path_escaped_slash", "keep": b"%" + key.upper(), "decode": b"/"}
                    out = slash[escaped_slashes]
                else:
                    out = b"%" + key.upper()                    # RFC 3986 6.2.2.1
                escapes[key] = out
        self._escapes = escapes

    @classmethod
    def from_listener(cls, spec: ListenerSpec) -> "PathPolicy":
        """The policy of a `config.ListenerSpec` (its `merge_slashes` and `escaped_slashes`)."""
        return cls(getattr(spec, "merge_slashes", True), getattr(spec, "escaped_slashes", "reject"))

    def __repr__(self) -> str:
        return (f"PathPolicy(merge_slashes={self.merge_slashes}, "
                f"escaped_slashes={self.escaped_slashes!r})")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PathPolicy) and self.merge_slashes == other.merge_slashes
                and self.escaped_slashes == other.escaped_slashes)

    def __hash__(self) -> int:
        return hash((self.merge_slashes, self.escaped_slashes))


DEFAULT_POLICY = PathPolicy()


def normalize_target(policy: PathPolicy, target: bytes) -> bytes:
    """The request-target to match and to forward: the normalised path and the original `?query`.

    Returns `target` itself when there is nothing to do (the common case: two scans). Raises
    `HTTPProtocolError` (status 400, a `path_*` reason) for a path a backend could read otherwise."""
    # two scans: memchr for the query, one regular expression over the path before it
    q = target.find(b"?")
    if target[:1] == b"/" and (_NEEDS_WORK(target, 0, q) if q >= 0 else _NEEDS_WORK(target)) is None:
        return target
    return _normalize_slow(policy, target)


def _normalize_slow(policy: PathPolicy, target: bytes) -> bytes:
    if target == b"*":
        return target
    q = target.find(b"?")
    if q < 0:
        path, query = target, b""
    else:
        path, query = target[:q], target[q:]
    if path[:1] != b"/":
        m = _ABSOLUTE(path)
        if m is None:
            raise _refuse("path_bad_target", _MESSAGES["path_bad_target"])
        path = path[m.end():] or b"/"   # RFC 9110 4.2.3: an empty path is "/"
    result = normalize_path(policy, path) + query
    return target if result == target else result


def normalize_path(policy: PathPolicy, path: bytes) -> bytes:
    """The normalised form of an origin-form path (starts with "/", no query)."""
    if not path.isascii():
        raise _refuse("path_non_ascii", _MESSAGES["path_non_ascii"])
    if _CONTROL(path) is not None:
        raise _refuse("path_control_byte", _MESSAGES["path_control_byte"])
    if b"\\" in path:
        # Not URI syntax at all (RFC 3986 2); WHATWG URL, IIS and many Windows stacks read "/".
        # Refused in every mode: "keep" and "decode" are about the legal encoded spelling.
        raise _refuse("path_backslash", _MESSAGES["path_backslash"])
    if b";" in path:
        mode = policy.escaped_slashes
        if mode == "reject":
            raise _refuse("path_parameter", _MESSAGES["path_parameter"])
        if mode == "decode":
            # Servlet 6.0 3.5.2: parameters leave each segment before anything is decoded
            path = b"/".join(s.split(b";", 1)[0] for s in path.split(b"/"))
    if b"%" in path:
        path = _unescape(policy._escapes, path)
        if _OVERLONG(path) is not None:
            raise _refuse("path_overlong_utf8", _MESSAGES["path_overlong_utf8"])
    merge = policy.merge_slashes
    if b"/." in path or (merge and b"//" in path):
        path = _segments(path, merge)
    return path


def _unescape(escapes: dict[bytes, bytes | str], path: bytes) -> bytes:
    pieces = path.split(b"%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        replacement = escapes.get(piece[:2])
        if replacement is None:         # "%zz", "%4", "%" at the end: RFC 3986 2.1 needs two HEXDIG
            raise _refuse("path_bad_escape", _MESSAGES["path_bad_escape"])
        if isinstance(replacement, str):
            raise _refuse(replacement, _MESSAGES[replacement])
        out.append(replacement)
        out.append(piece[2:])
    return b"".join(out)


def _segments(path: bytes, merge: bool) -> bytes:
    """Dot segments removed (RFC 3986 5.2.4), empty segments dropped first when `merge`. A final
    "." or ".." (or an empty segment) leaves the trailing slash, as 5.2.4 does (`/a/b/..` is `/a/`)."""
    segments = path.split(b"/")[1:]
    out: list[bytes] = []
    for s in segments:
        if s == b"..":
            if out:
                out.pop()
        elif s == b"." or (merge and not s):
            continue
        else:
            out.append(s)
    last = segments[-1]
    if last == b"." or last == b".." or (merge and not last):
        out.append(b"")
    return b"/" + b"/".join(out)
