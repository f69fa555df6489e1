"""Listener rules compiled once: (host, path) -> action. First match wins, ordered by priority.

How this works: each rule's `host` and `path` patterns (`*` matches any run of characters, as in
ALB's conditions; hosts compare case-insensitively, paths case-sensitively) become one compiled
regular expression each. Fixed responses are encoded to complete HTTP/1.1 responses at load, in a
keep-alive and a closing variant, so answering one is a single write. No I/O here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
            302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


def _pattern(glob: str, *, ignore_case: bool) -> re.Pattern[bytes]:
    parts = (re.escape(p) for p in glob.split("*"))
    return re.compile((".*".join(parts)).encode(), re.IGNORECASE if ignore_case else 0)


@dataclass(frozen=True, slots=True)
class Forward:
    target_group: str
    rule: int


@dataclass(frozen=True, slots=True)
class Fixed:
    status: int
    keep_alive: bytes       # whole response, for a connection that stays open
    closing: bytes          # whole response with Connection: close
    head_only: bytes        # for HEAD: the keep-alive head without the body
    rule: int


def encode_fixed(status: int, content_type: str, body: bytes, rule: int = -1) -> Fixed:
    reason = _REASONS.get(status, "Status")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n").encode("latin-1")
    return Fixed(status, head + b"\r\n" + body, head + b"Connection: close\r\n\r\n" + body,
                 head + b"\r\n", rule)


NO_RULE = encode_fixed(404, "text/plain; charset=utf-8", b"no rule matched this request\n")


class RouteTable:
    """Compiled rules of one listener."""

    __slots__ = ("_rules",)

    def __init__(self, rules) -> None:
        compiled = []
        for index, rule in enumerate(rules):
            host = _pattern(rule.host, ignore_case=True) if rule.host else None
            path = _pattern(rule.path, ignore_case=False) if rule.path and rule.path != "*" else None
            if rule.action == "forward":
                action: Forward | Fixed = Forward(rule.target_group, index)
            else:
                fr = rule.fixed_response
                body = fr.body if isinstance(fr.body, bytes) else fr.body.encode()
                action = encode_fixed(fr.status, fr.content_type, body, index)
            compiled.append((host, path, action))
        self._rules = tuple(compiled)

    def match(self, host: bytes | None, path: bytes) -> Forward | Fixed:
        """The action for a request. `host` without port; `path` without the query string."""
        for host_re, path_re, action in self._rules:
            if host_re is not None and (host is None or host_re.fullmatch(host) is None):
                continue
            if path_re is not None and path_re.fullmatch(path) is None:
                continue
            return action
        return NO_RULE


def split_host(host: bytes | None) -> bytes | None:
    """The Host header without its port ("[::1]:443" -> "[::1]", "a.example:8443" -> "a.example")."""
    if not host:
        return None
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(b":", 1)[0] if b":" in host else host


def split_path(target: bytes) -> bytes:
    q = target.find(b"?")
    return target if q < 0 else target[:q]
