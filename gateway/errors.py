"""The exception tree of the gateway, nothing else.

Every exception says whose fault it was (the operator's configuration, a peer, an upstream) and
carries a short reason code for logs, plus an HTTP status hint where one applies (the h11 habit).
A peer's misbehaviour becomes one log line with its reason code, never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where it is (file and key path) and what is wrong."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


class ConfigError(GatewayError):
    """The operator's configuration is wrong; carries every problem found, not just the first."""

    reason = "config_invalid"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid configuration")


class NativeUnavailable(GatewayError):
    """`native = "on"` was asked for but the compiled extension cannot be imported."""

    reason = "native_unavailable"


class BindingsUnsupported(GatewayError):
    """The installed `cryptography` no longer exposes an OpenSSL function the TLS layer needs (its
    raw bindings are not a supported API and shrink between releases). The operator's install is
    at fault: install a `cryptography` inside the range pyproject.toml names."""

    reason = "bindings_unsupported"


class PeerError(GatewayError):
    """The client did something wrong. `status` is the HTTP status to answer with, if any."""

    reason = "peer_error"
    status: int = 400


class TLSFailure(PeerError):
    """The TLS layer failed: a bad record, an alert, a refused certificate, a deadline."""

    reason = "tls_error"
    status = 0


class BadCertificate(PeerError):
    """A certificate the peer presented cannot be parsed (bad DER, unknown version, broken fields)."""

    reason = "bad_certificate"
    status = 0


class HTTPProtocolError(PeerError):
    """A malformed or over-limit HTTP/1.1 message from the client; the connection closes after."""

    reason = "http_malformed"

    def __init__(self, message: str = "", *, status: int = 400, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.status = status


class UpstreamError(GatewayError):
    """A target failed: refused, reset, timed out, or answered with a malformed response."""

    reason = "upstream_error"

    def __init__(self, message: str = "", *, status: int = 502, reason: str | None = None,
                 target: str = "") -> None:
        super().__init__(message, reason=reason)
        self.status = status
        self.target = target
