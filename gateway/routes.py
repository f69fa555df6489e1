"""Listener rules compiled once: request -> action. First match wins, ordered by priority.

How this works: each rule's conditions are compiled at load: `host` and `path` patterns (`*` matches
any run of characters, as in ALB's conditions; hosts compare case-insensitively, paths
case-sensitively) become one regular expression each, `methods` a set, `headers` a pattern per
header name. A rule matches when every condition it has holds. Actions are prepared at load too:
fixed responses are encoded to complete HTTP/1.1 responses in a keep-alive and a closing variant,
so answering one is a single write; a redirect's Location is a template of literal pieces and
ALB's `#{...}` placeholders, so answering one is a join. A rule may also ask for a client identity
(`require_client_cert`, `allow` lists): the match hands that back as the action's `access`, which
the caller checks against the connection's identity (it is the same for every request of a
connection, so the caller may keep the answer). No I/O here.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .identity import Identity
    from .spec import ClientAllow, Redirect, RuleSpec

# a rule's header conditions: (lowercase name, the pattern one of its values must match whole)
HeaderConditions = tuple[tuple[bytes, "re.Pattern[bytes]"], ...]

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
            302: "Found", 303: "See Other", 307: "Temporary Redirect", 308: "Permanent Redirect",
            400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


def _pattern(glob: str, *, ignore_case: bool, star: str = ".*") -> re.Pattern[bytes]:
    parts = (re.escape(p) for p in glob.split("*"))
    return re.compile((star.join(parts)).encode(), re.IGNORECASE if ignore_case else 0)


def _any_of(globs: Sequence[str], *, ignore_case: bool, star: str = ".*") -> re.Pattern[bytes] | None:
    """One expression matching any of `globs` whole, or None for an empty list."""
    if not globs:
        return None
    alternatives = b"|".join(_pattern(g, ignore_case=False, star=star).pattern for g in globs)
    return re.compile(b"(?:" + alternatives + b")", re.IGNORECASE if ignore_case else 0)


# --- actions --------------------------------------------------------------------------------------

class Access:
    """What a rule asks of the client's certificate: a verified one, accepted by every allow-list
    given (each list: any of its patterns)."""

    __slots__ = ("subject", "issuer", "san_dns", "san_uri")
    subject: re.Pattern[bytes] | None
    issuer: re.Pattern[bytes] | None
    san_dns: re.Pattern[bytes] | None
    san_uri: re.Pattern[bytes] | None

    def __init__(self, allow: ClientAllow | None = None) -> None:
        self.subject = self.issuer = self.san_dns = self.san_uri = None
        if allow is not None:
            # RFC 2253 strings: `*` stays inside one attribute value (never crosses a ',')
            self.subject = _any_of(allow.subject, ignore_case=False, star="[^,]*")
            self.issuer = _any_of(allow.issuer, ignore_case=False, star="[^,]*")
            # DNS names: `*` stays inside one label, as a certificate wildcard does (RFC 6125 6.4.3)
            self.san_dns = _any_of(allow.san_dns, ignore_case=True, star="[^.]*")
            self.san_uri = _any_of(allow.san_uri, ignore_case=False)

    def refusal(self, identity: Identity | None) -> Fixed | None:
        """None if `identity` may pass, else the 403 to answer with. Fails closed."""
        if identity is None or not identity.verified:
            return FORBIDDEN_NO_CERT
        if self.subject is not None and self.subject.fullmatch(identity.subject.encode()) is None:
            return FORBIDDEN_NOT_ALLOWED
        if self.issuer is not None and self.issuer.fullmatch(identity.issuer.encode()) is None:
            return FORBIDDEN_NOT_ALLOWED
        if self.san_dns is not None and not any(
                self.san_dns.fullmatch(n.encode()) for n in identity.san_dns):
            return FORBIDDEN_NOT_ALLOWED
        if self.san_uri is not None and not any(
                self.san_uri.fullmatch(u.encode()) for u in identity.san_uri):
            return FORBIDDEN_NOT_ALLOWED
        return None


@dataclass(frozen=True, slots=True)
class Forward:
    target_group: str
    rule: int
    upgrades: frozenset[bytes] = frozenset()    # Upgrade values this rule lets through
    access: Access | None = None


@dataclass(frozen=True, slots=True)
class Fixed:
    status: int
    keep_alive: bytes       # whole response, for a connection that stays open
    closing: bytes          # whole response with Connection: close
    head_only: bytes        # for HEAD: the keep-alive head without the body
    rule: int
    access: Access | None = None
    reason: str = ""        # for refusals the gateway makes itself: the log's reason code
    # for an HTTP/1.0 client that asked for keep-alive, which the answer must confirm (RFC 9112
    # 9.3): the same with "Connection: keep-alive", whole and without the body
    keep_alive_10: bytes = b""
    head_only_10: bytes = b""


def encode_fixed(status: int, content_type: str, body: bytes, rule: int = -1,
                 access: Access | None = None, reason: str = "") -> Fixed:
    phrase = _REASONS.get(status, "Status")
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n").encode("latin-1")
    head_10 = head + b"Connection: keep-alive\r\n\r\n"
    return Fixed(status, head + b"\r\n" + body, head + b"Connection: close\r\n\r\n" + body,
                 head + b"\r\n", rule, access, reason, head_10 + body, head_10)


_TEXT = "text/plain; charset=utf-8"
MEMO_MAX = 256          # a table's remembered decisions, at most (RouteTable.decide)
MEMO_KEY_MAX = 256      # and only for a host and path of at most this many bytes together
NO_RULE = encode_fixed(404, _TEXT, b"no rule matched this request\n")
FORBIDDEN_NO_CERT = encode_fixed(403, _TEXT, b"forbidden: this path requires a verified client "
                                             b"certificate\n", reason="client_cert_required")
FORBIDDEN_NOT_ALLOWED = encode_fixed(403, _TEXT, b"forbidden: this client certificate is not "
                                                 b"allowed on this path\n",
                                     reason="client_cert_not_allowed")
REDIRECT_NEEDS_HOST = encode_fixed(400, _TEXT, b"a redirect needs the request's Host\n",
                                   reason="redirect_without_host")

# placeholder -> index into the values a redirect is rendered from
_SCHEME, _HOST, _PORT, _PATH, _QUERY = range(5)
_PLACEHOLDERS = {b"#{protocol}": _SCHEME, b"#{scheme}": _SCHEME, b"#{host}": _HOST,
                 b"#{port}": _PORT, b"#{path}": _PATH, b"#{query}": _QUERY}
_PLACEHOLDER_RE = re.compile(rb"(#\{[a-z]+\})")
_DEFAULT_PORTS = {b"https": b"443", b"http": b"80"}


def _template(text: str) -> tuple[bytes | int, ...]:
    """Literal bytes and placeholder indexes, in order."""
    out: list[bytes | int] = []
    for piece in _PLACEHOLDER_RE.split(text.encode("ascii")):
        if not piece:
            continue
        out.append(_PLACEHOLDERS.get(piece, piece))
    return tuple(out)


def _render(template: tuple[bytes | int, ...], values: tuple[bytes, ...]) -> bytes:
    return b"".join(values[p] if isinstance(p, int) else p for p in template)


class RedirectAction:
    """A redirect rule: the Location is rendered per request from the templates (ALB's keywords:
    `#{protocol}` https, `#{host}` the Host without port, `#{port}` the listener's port, `#{path}`
    the path without its leading "/", `#{query}` the query without "?"). A port that is the
    scheme's default is left out; an empty query drops the "?"."""

    __slots__ = ("status", "rule", "access", "_scheme", "_host", "_port", "_path", "_query",
                 "_head", "_needs_host")

    def __init__(self, spec: Redirect, rule: int, access: Access | None = None) -> None:
        self.status = spec.status
        self.rule = rule
        self.access = access
        self._scheme = _template(spec.scheme)
        self._host = _template(spec.host)
        self._port = _template(spec.port)
        self._path = _template(spec.path)
        self._query = _template(spec.query)
        self._needs_host = _HOST in self._host or _HOST in self._path or _HOST in self._query
        self._head = b"HTTP/1.1 %d %s\r\nLocation: " % (self.status, _REASONS[self.status].encode())

    def location(self, host: bytes | None, port: int, target: bytes) -> bytes | None:
        """The Location for a request, or None when it needs a Host the request did not give."""
        if host is None and self._needs_host:
            return None
        path = split_path(target)
        q = target.find(b"?")
        values = (b"https", host or b"", b"%d" % port, path[1:] if path[:1] == b"/" else path,
                  target[q + 1:] if q >= 0 else b"")
        scheme = _render(self._scheme, values)
        out_port = _render(self._port, values)
        authority = _render(self._host, values)
        if out_port != _DEFAULT_PORTS.get(scheme):
            authority += b":" + out_port
        query = _render(self._query, values)
        return b"".join((scheme, b"://", authority, _render(self._path, values),
                         b"?" + query if query else b""))

    def response(self, location: bytes, keep_alive: bool, http10: bool = False) -> bytes:
        if not keep_alive:
            end = b"Connection: close\r\n\r\n"
        else:
            end = b"Connection: keep-alive\r\n\r\n" if http10 else b"\r\n"
        return b"".join((self._head, location, b"\r\nContent-Length: 0\r\n", end))


# --- the table ------------------------------------------------------------------------------------

class RouteTable:
    """Compiled rules of one listener."""

    __slots__ = ("_rules", "upgrades", "unconditional", "reads_headers", "_memo")

    def __init__(self, rules: Iterable[RuleSpec]) -> None:
        compiled: list[tuple[re.Pattern[bytes] | None, re.Pattern[bytes] | None,
                             frozenset[bytes] | None, HeaderConditions | None,
                             Forward | Fixed | RedirectAction]] = []
        upgrades = False
        for index, rule in enumerate(rules):
            host = _pattern(rule.host, ignore_case=True) if rule.host else None
            path = _pattern(rule.path, ignore_case=False) if rule.path and rule.path != "*" else None
            methods = frozenset(m.encode() for m in getattr(rule, "methods", ()))
            # a name with no patterns (config refuses one) matches no value, so fails closed
            headers = tuple((name.encode(), _any_of(patterns, ignore_case=True) or _NO_VALUE)
                            for name, patterns in getattr(rule, "headers", ()))
            allow = getattr(rule, "allow", None)
            access = (Access(allow) if allow is not None or getattr(rule, "require_client_cert", False)
                      else None)
            # config's rule checks give each action what it needs (a target group, a redirect, a
            # fixed response): the asserts only tell the type checker so
            if rule.action == "forward":
                assert rule.target_group is not None
                allowed = frozenset(u.encode() for u in getattr(rule, "allow_upgrade", ()))
                upgrades = upgrades or bool(allowed)
                action: Forward | Fixed | RedirectAction = Forward(rule.target_group, index,
                                                                   allowed, access)
            elif rule.action == "redirect":
                assert rule.redirect is not None
                action = RedirectAction(rule.redirect, index, access)
            else:
                fr = rule.fixed_response
                assert fr is not None
                body = fr.body if isinstance(fr.body, bytes) else fr.body.encode()
                action = encode_fixed(fr.status, fr.content_type, body, index, access)
            compiled.append((host, path, methods or None, headers or None, action))
        self._rules = tuple(compiled)
        self.upgrades = upgrades        # some rule lets a protocol upgrade through
        # what `match` returns whatever the request, when the first rule has no condition
        first = compiled[0] if compiled else None
        self.unconditional = (first[4] if first is not None and first[:4] == (None,) * 4
                              else None)
        # whether a decision may depend on more than host, path and method
        self.reads_headers = any(rule[3] is not None for rule in compiled)
        # the decisions `decide` took, when they depend on nothing else
        self._memo: dict[tuple[bytes | None, bytes, bytes], Forward | Fixed | RedirectAction] | None = (
            None if self.reads_headers else {})

    def decide(self, host: bytes | None, path: bytes, method: bytes,
               headers: Sequence[tuple[bytes, bytes]]) -> Forward | Fixed | RedirectAction:
        """`match`, remembered when no rule reads a header (the decision is then a function of
        host, path and method): at most MEMO_MAX decisions, forgotten all at once when full, none
        for a host and path longer than MEMO_KEY_MAX together (what a client can make the memo
        hold stays small). The native connection core keeps its own the same way."""
        if self.unconditional is not None:
            return self.unconditional
        memo = self._memo
        if memo is None:
            return self.match(host, path, method, headers)
        if len(path) + (len(host) if host is not None else 0) > MEMO_KEY_MAX:
            return self.match(host, path, method, ())
        key = (host, path, method)
        action = memo.get(key)
        if action is None:
            action = self.match(host, path, method, ())
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[key] = action
        return action

    def match(self, host: bytes | None, path: bytes, method: bytes = b"GET",
              headers: Sequence[tuple[bytes, bytes]] = ()) -> Forward | Fixed | RedirectAction:
        """The action for a request. `host` without port; `path` without the query string."""
        for host_re, path_re, methods, conditions, action in self._rules:
            if host_re is not None and (host is None or host_re.fullmatch(host) is None):
                continue
            if path_re is not None and path_re.fullmatch(path) is None:
                continue
            if methods is not None and method not in methods:
                continue
            if conditions is not None and not _headers_match(conditions, headers):
                continue
            return action
        return NO_RULE


_NO_VALUE = re.compile(b"(?!)")       # matches nothing, not even b""


def _headers_match(conditions: HeaderConditions, headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, pattern in conditions:
        n = len(name)
        for field, value in headers:
            if len(field) == n and field.lower() == name and pattern.fullmatch(value) is not None:
                break
        else:
            return False
    return True


def split_host(host: bytes | None) -> bytes | None:
    """The Host header without its port ("[::1]:443" -> "[::1]", "a.example:8443" -> "a.example")."""
    if not host:
        return None
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(b":", 1)[0] if b":" in host else host


def split_path(target: bytes) -> bytes:
    """The path of a request-target, without the query; an absolute-form target loses its
    scheme and authority (RFC 9112 3.2.2), so rules see the same path either way."""
    if target[:1] != b"/" and target != b"*":
        start = target.find(b"//")
        slash = target.find(b"/", start + 2) if start >= 0 else -1
        q = target.find(b"?", start + 2) if start >= 0 else -1
        if slash < 0 or (0 <= q < slash):
            target = b"/" + (target[q:] if q >= 0 else b"")
        else:
            target = target[slash:]
    q = target.find(b"?")
    return target if q < 0 else target[:q]
