"""The gateway's configuration: one TOML file -> frozen dataclasses, checked in full at start.

How this works: `load(path)` reads the file and hands its text to `loads()`, which parses it with
the stdlib `tomllib` and then walks the document once, section by section (`[gateway]`,
`[trust_store.*]`, `[target_group.*]`, then each `[[listener]]` with its `[[listener.rule]]`s).
Every reader takes the raw table, the key path that leads to it (`listener[0].certificates[1].key`)
and records a `Problem` instead of raising, so one run reports every mistake in the file at once
(house rule 6). Files the configuration names are opened and parsed here too: certificate chains,
private keys (matched against their certificate by public key), CA bundles (every certificate must
be a CA) and CRLs (signed by a bundle CA, not expired). Names that refer across sections (a
listener's `trust_store`, a rule's `target_group`) are checked against the names the document
defines, even when that definition has problems of its own, so one typo yields one problem. Only
when the list of problems is empty are the dataclasses handed out; otherwise `ConfigError(problems)`
is raised. Deciding the exit code is the CLI's business, not this module's.

Relative file paths resolve against the directory of the configuration file (or `base_dir` for
`loads()`, else the current directory) and are stored absolute. Every default is a module constant
so other modules and the docs can name it; the dataclasses carry the same defaults for callers that
build them by hand.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import ipaddress
import json
import math
import os
import re
import ssl
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from gateway.errors import ConfigError, Problem

__all__ = [
    "CertificateSpec", "ClientAllow", "Config", "FixedResponse", "GatewaySpec", "HealthCheckSpec",
    "ListenerSpec", "Redirect", "RuleSpec", "TargetGroupSpec", "TrustStoreSpec", "UpstreamTLSSpec",
    "load", "loads",
]

# --- allowed values -------------------------------------------------------------------------------

NATIVE_MODES = ("auto", "on", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
MTLS_MODES = ("off", "passthrough", "verify", "optional")
#: mTLS modes that verify a client chain, and so need a trust store.
MTLS_VERIFYING_MODES = ("verify", "optional")
HEADER_STYLES = ("alb", "xfcc", "rfc9440")
TLS_VERSIONS = ("1.2", "1.3")
ACTIONS = ("forward", "fixed-response", "redirect")
LOAD_BALANCING = ("round_robin", "least_outstanding_requests")
LOG_STDOUT = "-"
LOG_OFF = "off"

# --- defaults and limits --------------------------------------------------------------------------

DEFAULT_WORKERS = os.cpu_count() or 1   # one worker per CPU; the master never serves traffic
DEFAULT_NATIVE = "auto"
DEFAULT_ACCESS_LOG = LOG_STDOUT
DEFAULT_CONNECTION_LOG = LOG_STDOUT
DEFAULT_ERROR_LOG = LOG_STDOUT  # "-" means stderr for the error log
DEFAULT_LOG_LEVEL = "info"
DEFAULT_DRAIN_TIMEOUT_S = 30.0
DEFAULT_TICKET_ROTATION_S = 0.0       # 0: never roll workers just to rotate ticket keys
DEFAULT_WATCH_FILES = False
DEFAULT_WATCH_INTERVAL_S = 2.0
CONNECTION_LOG_FORMATS = ("json", "alb")
DEFAULT_CONNECTION_LOG_FORMAT = "json"
DEFAULT_ADMIN_BIND = "127.0.0.1:9901"

DEFAULT_MTLS = "off"
DEFAULT_HEADER_STYLE: tuple[str, ...] = ("alb",)
DEFAULT_IGNORE_CLIENT_CERTIFICATE_EXPIRY = False
DEFAULT_ADVERTISE_CA_NAMES = False
DEFAULT_MAX_CHAIN_DEPTH = 4
MIN_CHAIN_DEPTH = 1
MAX_CHAIN_DEPTH = 10
DEFAULT_TLS_MIN_VERSION = "1.2"
DEFAULT_CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"
DEFAULT_SESSION_TICKETS = True
DEFAULT_SESSION_TIMEOUT_S = 300
MIN_SESSION_TIMEOUT_S = 1
MAX_SESSION_TIMEOUT_S = 86400
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_MAX_REQUEST_LINE_BYTES = 8192
DEFAULT_MAX_HEADER_BYTES = 32768
DEFAULT_MAX_HEADER_COUNT = 100
#: `max_body_bytes = 0` in the file means unlimited, which the dataclass holds as None.
DEFAULT_MAX_BODY_BYTES: int | None = None
#: ALB caps the client's Certificate message at 64 KB.
DEFAULT_MAX_CLIENT_CERT_CHAIN_BYTES = 65536
#: Longest pause inside a body on the client's side: no request body byte received, or no response
#: byte taken (nginx's client_body_timeout and send_timeout, 60 s there).
DEFAULT_BODY_TIMEOUT_S = 30.0
#: Requests served on one connection before it is closed (nginx's keepalive_requests); 0 = no limit.
DEFAULT_MAX_REQUESTS_PER_CONNECTION = 1000
#: Open client connections per worker and listener; beyond it, new ones wait in the listen backlog.
DEFAULT_MAX_CONNECTIONS_PER_WORKER = 4096
#: A TLS handshake message length is a uint24 (RFC 8446 section 4), so no chain can be longer.
MAX_CLIENT_CERT_CHAIN_BYTES = 2**24 - 1
#: Request header names with an underscore (or any byte but letters, digits and "-"): CGI, WSGI and
#: PHP backends read `X_Foo` and `X-Foo` as one variable, so such a name could pass for a header the
#: gateway sets. "drop" (nginx's
#: `underscores_in_headers off`), "reject" (400) or "keep" (forwarded; the gateway's own names are
#: still stripped in any spelling).
UNDERSCORE_HEADERS = ("drop", "reject", "keep")
DEFAULT_UNDERSCORE_HEADERS = "drop"
#: Paths are normalised before rules match (RFC 3986 6.2.2 and dot segments); slashes merged too.
DEFAULT_MERGE_SLASHES = True
#: An encoded "/" or "\\" (%2F, %5C) or a ";" path parameter in a path: refused with 400 ("reject",
#: Envoy's REJECT_REQUEST), passed on as sent ("keep"), or decoded before matching ("decode").
ESCAPED_SLASHES = ("reject", "keep", "decode")
DEFAULT_ESCAPED_SLASHES = "reject"
#: A request whose Host is not a name of the certificate SNI chose gets 421; None means "on unless
#: mtls is off" (a client authenticated for one name must not reach another through it).
DEFAULT_STRICT_SNI_HOST: bool | None = None
#: Extra request header names to strip on a listener (`*` wildcards), beside the built-in list.
MAX_STRIP_REQUEST_HEADERS = 256

#: ALB's rule priorities run 1..50000; rules without any priority take 1, 2, 3... in file order.
MIN_RULE_PRIORITY = 1
MAX_RULE_PRIORITY = 50000
DEFAULT_FIXED_RESPONSE_CONTENT_TYPE = "text/plain"
DEFAULT_FIXED_RESPONSE_BODY = b""
MIN_FIXED_RESPONSE_STATUS = 200
MAX_FIXED_RESPONSE_STATUS = 599
#: ALB limits a fixed-response body to 1024 bytes.
MAX_FIXED_RESPONSE_BODY_BYTES = 1024
#: What a listener answers when no rule matches (or it has no rules).
NO_RULE_MATCHED_STATUS = 404
NO_RULE_MATCHED_BODY = b"no rule matched"

#: What a `redirect` action may answer with, and the default (ALB's HTTP_301).
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
DEFAULT_REDIRECT_STATUS = 301
#: ALB's reserved keywords: the original request's scheme, Host (without port), listener port, path
#: without its leading "/", and query string without "?". `#{scheme}` is taken as `#{protocol}`.
REDIRECT_PLACEHOLDERS = ("#{protocol}", "#{scheme}", "#{host}", "#{port}", "#{path}", "#{query}")
DEFAULT_REDIRECT_SCHEME = "#{protocol}"
DEFAULT_REDIRECT_HOST = "#{host}"
DEFAULT_REDIRECT_PORT = "#{port}"
DEFAULT_REDIRECT_PATH = "/#{path}"
DEFAULT_REDIRECT_QUERY = "#{query}"

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 60.0
DEFAULT_MAX_IDLE_PER_TARGET = 32
#: A pooled keep-alive connection unused this long is closed.
DEFAULT_POOL_IDLE_TIMEOUT_S = 30.0
DEFAULT_LOAD_BALANCING = "round_robin"
#: Passive ejection: this many consecutive connection failures take a target out of rotation for
#: `ejection_duration_s` (0 turns ejection off). Envoy's outlier detection defaults to 5 and 30 s.
DEFAULT_EJECTION_FAILURES = 5
DEFAULT_EJECTION_DURATION_S = 30.0
#: Active health checks (a `health_check` table turns them on). ALB's allow 2..10 for thresholds.
DEFAULT_HEALTH_CHECK_PATH = "/"
DEFAULT_HEALTH_CHECK_INTERVAL_S = 10.0
DEFAULT_HEALTH_CHECK_TIMEOUT_S = 5.0
DEFAULT_HEALTHY_THRESHOLD = 3
DEFAULT_UNHEALTHY_THRESHOLD = 2
MIN_HEALTH_THRESHOLD = 1
MAX_HEALTH_THRESHOLD = 10
DEFAULT_HEALTH_CHECK_MATCHER = "200-399"

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")



def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


# --- the dataclasses ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CertificateSpec:
    """A server certificate chain (leaf first) and its key; `names` are what SNI matches against:
    the leaf's SAN DNS names, lowercase (wildcards kept), or its CN when it has none."""

    cert: Path
    key: Path
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FixedResponse:
    status: int
    content_type: str = DEFAULT_FIXED_RESPONSE_CONTENT_TYPE
    body: bytes = DEFAULT_FIXED_RESPONSE_BODY


@dataclass(frozen=True, slots=True)
class Redirect:
    """Where a `redirect` action sends the client: each part may hold REDIRECT_PLACEHOLDERS."""

    status: int = DEFAULT_REDIRECT_STATUS
    scheme: str = DEFAULT_REDIRECT_SCHEME
    host: str = DEFAULT_REDIRECT_HOST
    port: str = DEFAULT_REDIRECT_PORT
    path: str = DEFAULT_REDIRECT_PATH
    query: str = DEFAULT_REDIRECT_QUERY


@dataclass(frozen=True, slots=True)
class ClientAllow:
    """Allow-lists on the verified client certificate; every non-empty list must match one entry.

    `subject` and `issuer` are RFC 2253 strings (as in the logs and ALB headers), `*` matching any
    run of characters but ','; `san_dns` is case-insensitive, `*` matching within one label;
    `san_uri` is exact, `*` matching any run of characters."""

    subject: tuple[str, ...] = ()
    issuer: tuple[str, ...] = ()
    san_dns: tuple[str, ...] = ()
    san_uri: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One routing rule. `host` is lowercase; both patterns use `*` wildcards; None matches all.

    `methods`: the request method must be one of them (none: any). `headers`: (lowercase name,
    value patterns) pairs; every name must be present with a value matching one of its patterns
    (`*` wildcards, case-insensitive). `require_client_cert` / `allow`: the request needs a verified
    client certificate (and one the allow-lists accept), else 403. `allow_upgrade`: lowercase
    protocol tokens (`websocket`) a `forward` rule lets a client switch to."""

    priority: int
    host: str | None = None
    path: str | None = None
    action: str = "forward"
    target_group: str | None = None
    fixed_response: FixedResponse | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    redirect: Redirect | None = None
    require_client_cert: bool = False
    allow: ClientAllow | None = None
    allow_upgrade: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One bound address. `host` is a canonical IP literal, "localhost", or "" for all addresses.
    `certificates[0]` serves clients without SNI or with a name no certificate carries."""

    name: str
    host: str
    port: int
    certificates: tuple[CertificateSpec, ...]
    mtls: str = DEFAULT_MTLS
    trust_store: str | None = None
    header_style: tuple[str, ...] = DEFAULT_HEADER_STYLE
    ignore_client_certificate_expiry: bool = DEFAULT_IGNORE_CLIENT_CERTIFICATE_EXPIRY
    advertise_ca_names: bool = DEFAULT_ADVERTISE_CA_NAMES
    max_chain_depth: int = DEFAULT_MAX_CHAIN_DEPTH
    tls_min_version: str = DEFAULT_TLS_MIN_VERSION
    ciphers_tls12: str = DEFAULT_CIPHERS_TLS12
    session_tickets: bool = DEFAULT_SESSION_TICKETS
    session_timeout_s: int = DEFAULT_SESSION_TIMEOUT_S
    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_request_line_bytes: int = DEFAULT_MAX_REQUEST_LINE_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES
    max_client_cert_chain_bytes: int = DEFAULT_MAX_CLIENT_CERT_CHAIN_BYTES
    rules: tuple[RuleSpec, ...] = ()
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_requests_per_connection: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION
    max_connections_per_worker: int = DEFAULT_MAX_CONNECTIONS_PER_WORKER
    underscore_headers: str = DEFAULT_UNDERSCORE_HEADERS
    strip_request_headers: tuple[str, ...] = ()
    merge_slashes: bool = DEFAULT_MERGE_SLASHES
    escaped_slashes: str = DEFAULT_ESCAPED_SLASHES
    strict_sni_host: bool | None = DEFAULT_STRICT_SNI_HOST

    @property
    def verifies(self) -> bool:
        return self.mtls in MTLS_VERIFYING_MODES

    @property
    def host_must_match_sni(self) -> bool:
        """`strict_sni_host` as it applies: unset means on unless mtls is off."""
        return self.mtls != "off" if self.strict_sni_host is None else self.strict_sni_host


@dataclass(frozen=True, slots=True)
class TrustStoreSpec:
    name: str
    ca_bundle: Path
    crls: tuple[Path, ...] = ()
    deny_serials: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    """Active health checks: `GET path` every `interval_s`; a status in `matcher` (inclusive ranges)
    within `timeout_s` is a pass. `healthy_threshold` passes in a row bring a target back,
    `unhealthy_threshold` failures in a row take it out."""

    path: str = DEFAULT_HEALTH_CHECK_PATH
    interval_s: float = DEFAULT_HEALTH_CHECK_INTERVAL_S
    timeout_s: float = DEFAULT_HEALTH_CHECK_TIMEOUT_S
    healthy_threshold: int = DEFAULT_HEALTHY_THRESHOLD
    unhealthy_threshold: int = DEFAULT_UNHEALTHY_THRESHOLD
    matcher: tuple[tuple[int, int], ...] = ((200, 399),)


@dataclass(frozen=True, slots=True)
class UpstreamTLSSpec:
    """TLS from the gateway to the targets. The targets' certificates are verified against
    `ca_bundle` (None: the system's trust store) for `server_name` (None: the target's host, an IP
    address checked against IP SANs); `cert`/`key` are the gateway's own client certificate."""

    ca_bundle: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class TargetGroupSpec:
    """Backends as (host, port); host is a canonical IP literal (IPv6 without brackets) or a
    lowercase DNS name."""

    name: str
    targets: tuple[tuple[str, int], ...]
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    max_idle_per_target: int = DEFAULT_MAX_IDLE_PER_TARGET
    idle_timeout_s: float = DEFAULT_POOL_IDLE_TIMEOUT_S
    load_balancing: str = DEFAULT_LOAD_BALANCING
    ejection_failures: int = DEFAULT_EJECTION_FAILURES
    ejection_duration_s: float = DEFAULT_EJECTION_DURATION_S
    health_check: HealthCheckSpec | None = None
    tls: UpstreamTLSSpec | None = None


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    """Process-wide settings. Log fields hold "-" (stdout; stderr for `error_log`), "off" (not for
    `error_log`) or an absolute file path."""

    workers: int = DEFAULT_WORKERS
    native: str = DEFAULT_NATIVE
    access_log: str = DEFAULT_ACCESS_LOG
    connection_log: str = DEFAULT_CONNECTION_LOG
    error_log: str = DEFAULT_ERROR_LOG
    log_level: str = DEFAULT_LOG_LEVEL
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    ticket_rotation_s: float = DEFAULT_TICKET_ROTATION_S
    watch_files: bool = DEFAULT_WATCH_FILES
    watch_interval_s: float = DEFAULT_WATCH_INTERVAL_S
    connection_log_format: str = DEFAULT_CONNECTION_LOG_FORMAT


@dataclass(frozen=True, slots=True)
class AdminSpec:
    """The admin listener (metrics, health, certificates): plain HTTP, loopback by default."""

    host: str = "127.0.0.1"
    port: int = 9901


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. `source` is the file it came from (None for `loads()`)."""

    source: Path | None
    gateway: GatewaySpec
    listeners: tuple[ListenerSpec, ...]
    trust_stores: Mapping[str, TrustStoreSpec] = field(default_factory=_empty_mapping)
    target_groups: Mapping[str, TargetGroupSpec] = field(default_factory=_empty_mapping)
    admin: AdminSpec | None = None


# --- entry points ---------------------------------------------------------------------------------

_FILE_KEY = "<file>"


def load(path: str | os.PathLike[str]) -> Config:
    """Read and check the configuration file at `path`; raise ConfigError listing every problem."""
    path = Path(path)
    shown = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem(shown, _FILE_KEY, "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(shown, _FILE_KEY, "not a regular file")]) from None
    except PermissionError:
        raise ConfigError([Problem(shown, _FILE_KEY, "cannot read: permission denied")]) from None
    except (OSError, ValueError) as exc:
        raise ConfigError([Problem(shown, _FILE_KEY, f"cannot read: {_os_reason(exc)}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(shown, _FILE_KEY,
                                   f"not UTF-8 text (byte {exc.start})")]) from None
    return _build(text, shown, path.absolute().parent, path)


def loads(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """Check configuration `text`; problems name `source` as their file. Relative paths resolve
    against `base_dir` (default: the current directory)."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    return _build(text, source, base.absolute(), None)


def _build(text: str, shown: str, base_dir: Path, source: Path | None) -> Config:
    if text.startswith("\ufeff"):  # a byte-order mark some editors write; TOML has no use for it
        text = text[1:]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(shown, str(exc))]) from None
    except RecursionError:
        raise ConfigError([Problem(shown, "<toml>", "invalid TOML: nesting too deep")]) from None
    reader = _Reader(shown, base_dir)
    config = reader.document(doc, source)
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


_AT_RE = re.compile(r"^(?P<msg>.*) \(at (?P<where>line \d+, column \d+|end of document)\)$", re.S)


def _syntax_problem(shown: str, message: str) -> Problem:
    match = _AT_RE.match(message)
    if match is None:
        return Problem(shown, "<toml>", f"invalid TOML: {message}")
    return Problem(shown, match["where"], f"invalid TOML: {match['msg']}")


# --- small pure helpers ---------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(prefix: str, name: str) -> str:
    """Key path of `name` inside `prefix`, quoting names a TOML bare key could not spell."""
    part = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
    return f"{prefix}.{part}" if prefix else part


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, _dt.datetime):
        return "datetime"
    if isinstance(value, _dt.date):
        return "date"
    if isinstance(value, _dt.time):
        return "time"
    return type(value).__name__


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_of(choices: tuple[str, ...]) -> str:
    return ", ".join(repr(c) for c in choices)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class _Invalid(ValueError):
    """A value failed a pure parse; the message is the problem's text."""


_PORT_RE = re.compile(r"[0-9]{1,5}")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


def _parse_port(text: str) -> int:
    if not _PORT_RE.fullmatch(text):
        raise _Invalid(f"port must be a number from 1 to 65535, got {text!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _Invalid(f"port must be a number from 1 to 65535, got {port}")
    return port


def parse_address(text: str, *, listen: bool) -> tuple[str, int]:
    """Parse "host:port" / "[v6]:port" into (host, port) with the host in canonical form, or
    raise ValueError with a message fit for an operator.

    For a listener (`listen=True`) the host must be an IP literal or "localhost", and ":port" means
    all addresses (host ""). For a target it may also be a DNS name, and is required.
    """
    if text.startswith("["):
        match = re.fullmatch(r"\[([^\]]*)\]:([^:]*)", text)
        if match is None:
            raise _Invalid(f"expected [IPv6]:port, got {text!r}")
        try:
            host = str(ipaddress.IPv6Address(match[1]))
        except ValueError:
            raise _Invalid(f"{match[1]!r} in brackets is not an IPv6 address") from None
        return host, _parse_port(match[2])
    colons = text.count(":")
    if colons == 0:
        example = "0.0.0.0:8443" if listen else "127.0.0.1:9000"
        raise _Invalid(f"missing port; write host:port, e.g. {example!r}")
    if colons > 1:
        raise _Invalid(f"an IPv6 address goes in brackets, e.g. '[::1]:8443', got {text!r}")
    raw_host, raw_port = text.split(":")
    port = _parse_port(raw_port)
    if raw_host == "":
        if listen:
            return "", port
        raise _Invalid("missing host; write host:port")
    if raw_host.lower() == "localhost":
        return "localhost", port
    try:
        return str(ipaddress.IPv4Address(raw_host)), port
    except ValueError:
        pass
    if listen:
        raise _Invalid(f"host must be an IP address or 'localhost', got {raw_host!r}")
    if not _HOSTNAME_RE.fullmatch(raw_host.lower()):
        raise _Invalid(f"host must be an IP address or a DNS name, got {raw_host!r}")
    return raw_host.lower(), port


_HEX_SERIAL_RE = re.compile(r"(?:0[xX])?[0-9A-Fa-f]+(?::[0-9A-Fa-f]+)*")


def parse_serial(value: object) -> int:
    """A certificate serial from an int or a hex string ("0x0A:1B:2C", "0a1b2c"); ValueError
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Invalid(f"expected a hex string or an integer, got {_type_name(value)}")
    if isinstance(value, int):
        if value < 0:
            raise _Invalid(f"a serial number cannot be negative, got {value}")
        return value
    text = value.strip()
    if not _HEX_SERIAL_RE.fullmatch(text):
        raise _Invalid(f"not a hex serial number: {value!r} (e.g. '0A:1B:2C' or '0x0a1b2c')")
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    return int(text.replace(":", ""), 16)


_MATCHER_ITEM_RE = re.compile(r"([0-9]{3})(?:-([0-9]{3}))?")


def parse_matcher(text: str) -> tuple[tuple[int, int], ...]:
    """A health-check status matcher as ALB writes it ("200", "200,202", "200-399") -> inclusive
    ranges; ValueError otherwise."""
    ranges: list[tuple[int, int]] = []
    for item in text.split(","):
        item = item.strip()
        m = _MATCHER_ITEM_RE.fullmatch(item)
        if m is None:
            raise _Invalid(f"expected status codes like '200', '200,202' or '200-399', "
                           f"got {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if not 100 <= lo <= hi <= 599:
            raise _Invalid(f"status codes run from 100 to 599, low to high; got {item!r}")
        ranges.append((lo, hi))
    return tuple(ranges)


def _utc(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string() or "<empty subject>"
    except ValueError:
        return "<unreadable subject>"


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """SAN DNS names, lowercase, in order without repeats; the CN(s) when there is none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(a.value).lower()
                 for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(dict.fromkeys(names))


_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_CRL = b"-----BEGIN X509 CRL-----"
_PEM_KEY_RE = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


# --- the reader -----------------------------------------------------------------------------------

_GATEWAY_KEYS = ("workers", "native", "access_log", "connection_log", "error_log", "log_level",
                 "drain_timeout_s", "ticket_rotation_s", "watch_files", "watch_interval_s",
                 "connection_log_format")
_ADMIN_KEYS = ("bind",)
_LISTENER_KEYS = (
    "name", "bind", "certificates", "mtls", "trust_store", "header_style",
    "ignore_client_certificate_expiry", "advertise_ca_names", "max_chain_depth", "tls_min_version",
    "ciphers_tls12", "session_tickets", "session_timeout_s", "handshake_timeout_s",
    "header_timeout_s", "idle_timeout_s", "max_request_line_bytes", "max_header_bytes",
    "max_header_count", "max_body_bytes", "max_client_cert_chain_bytes", "rule",
    "body_timeout_s", "max_requests_per_connection", "max_connections_per_worker",
    "underscore_headers", "strip_request_headers", "merge_slashes", "escaped_slashes",
    "strict_sni_host",
)
_CERTIFICATE_KEYS = ("cert", "key")
_RULE_KEYS = ("priority", "host", "path", "action", "target_group", "fixed_response", "methods",
              "headers", "redirect", "require_client_cert", "allow", "allow_upgrade")
_REDIRECT_KEYS = ("status", "scheme", "host", "port", "path", "query")
_ALLOW_KEYS = ("subject", "issuer", "san_dns", "san_uri")
_FIXED_RESPONSE_KEYS = ("status", "content_type", "body")
_TRUST_STORE_KEYS = ("ca_bundle", "crls", "deny_serials")
_TARGET_GROUP_KEYS = ("targets", "connect_timeout_s", "read_timeout_s", "max_idle_per_target",
                      "idle_timeout_s", "load_balancing", "ejection_failures",
                      "ejection_duration_s", "health_check", "tls")
_HEALTH_CHECK_KEYS = ("path", "interval_s", "timeout_s", "healthy_threshold",
                      "unhealthy_threshold", "matcher")
_UPSTREAM_TLS_KEYS = ("ca_bundle", "cert", "key", "server_name")
_TOP_KEYS = ("gateway", "admin", "listener", "trust_store", "target_group")

_REQUIRED = object()
_RULE_HOST_RE = re.compile(r"[a-z0-9_.*-]{1,255}")
_CONTENT_TYPE_RE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_PATTERN_RE = _CONTENT_TYPE_RE
_REQUEST_TARGET_RE = re.compile(r"[\x21-\x7e]+")
_PLACEHOLDER_RE = re.compile(r"#\{[^}]*\}")
_REDIRECT_HOST_RE = re.compile(r"[A-Za-z0-9.-]*")
_REDIRECT_PATH_RE = re.compile(r"[\x21-\x22\x24-\x3e\x40-\x7e]*")     # no '#', '?', space
_REDIRECT_QUERY_RE = re.compile(r"[\x21-\x22\x24-\x7e]*")               # no '#', space


class _Reader:
    """Walks one parsed document, recording problems rather than raising."""

    def __init__(self, shown: str, base_dir: Path) -> None:
        self.file = shown
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.now = _dt.datetime.now(_dt.timezone.utc)

    def add(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, key, message))

    # generic typed readers; each returns None after recording a problem

    def keys(self, table: dict[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                self.add(_join(prefix, key), f"unknown key {key!r}{_suggest(key, allowed)}")

    def table(self, value: object, key: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.add(key, f"expected a table, got {_type_name(value)}")
        return None

    def raw(self, table: dict[str, Any], name: str, prefix: str, default: object) -> object:
        if name in table:
            return table[name]
        if default is _REQUIRED:
            self.add(_join(prefix, name), "missing required key")
            return None
        return default

    def string(self, table: dict[str, Any], name: str, prefix: str,
               default: object = _REQUIRED, *, empty_ok: bool = False) -> str | None:
        if name not in table:
            return self.raw(table, name, prefix, default)  # type: ignore[return-value]
        value = table[name]
        key = _join(prefix, name)
        if not isinstance(value, str):
            self.add(key, f"expected a string, got {_type_name(value)}")
            return None
        if not value and not empty_ok:
            self.add(key, "must not be empty")
            return None
        return value

    def choice(self, table: dict[str, Any], name: str, prefix: str, choices: tuple[str, ...],
               default: object = _REQUIRED) -> str | None:
        if name not in table:
            return self.raw(table, name, prefix, default)  # type: ignore[return-value]
        return self.choice_value(table[name], _join(prefix, name), choices)

    def choice_value(self, value: object, key: str, choices: tuple[str, ...]) -> str | None:
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and str(value) in choices:
                hint = f"; write it as a string: \"{value}\""
            self.add(key, f"expected a string, got {_type_name(value)}{hint}")
            return None
        if value not in choices:
            self.add(key, f"unknown value {value!r}; expected one of: {_one_of(choices)}"
                          f"{_suggest(value, choices)}")
            return None
        return value

    def boolean(self, table: dict[str, Any], name: str, prefix: str,
                default: bool) -> bool | None:
        value = table.get(name, default)
        if not isinstance(value, bool):
            self.add(_join(prefix, name), f"expected a boolean (true or false), "
                                          f"got {_type_name(value)}")
            return None
        return value

    def integer(self, table: dict[str, Any], name: str, prefix: str, default: object,
                lo: int | None = None, hi: int | None = None) -> int | None:
        if name not in table:
            return self.raw(table, name, prefix, default)  # type: ignore[return-value]
        return self.integer_value(table[name], _join(prefix, name), lo, hi)

    def integer_value(self, value: object, key: str, lo: int | None,
                      hi: int | None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(key, f"expected an integer, got {_type_name(value)}")
            return None
        if lo is not None and hi is not None and not lo <= value <= hi:
            self.add(key, f"must be from {lo} to {hi}, got {value}")
            return None
        if lo is not None and value < lo:
            self.add(key, f"must be >= {lo}, got {value}")
            return None
        if hi is not None and value > hi:
            self.add(key, f"must be <= {hi}, got {value}")
            return None
        return value

    def seconds(self, table: dict[str, Any], name: str, prefix: str,
                default: float) -> float | None:
        """A duration in seconds: a finite number > 0 (an integer is taken as a float)."""
        value = table.get(name, default)
        key = _join(prefix, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.add(key, f"expected a number, got {_type_name(value)}")
            return None
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds) or not seconds > 0:
            self.add(key, f"must be a finite number > 0, got {value}")
            return None
        return seconds

    def array(self, table: dict[str, Any], name: str, prefix: str,
              default: object = _REQUIRED) -> list[Any] | None:
        if name not in table:
            return self.raw(table, name, prefix, default)  # type: ignore[return-value]
        value = table[name]
        if not isinstance(value, list):
            self.add(_join(prefix, name), f"expected an array, got {_type_name(value)}")
            return None
        return value

    def name(self, value: object, key: str) -> str | None:
        if not isinstance(value, str):
            self.add(key, f"expected a string, got {_type_name(value)}")
            return None
        if not NAME_PATTERN.fullmatch(value):
            self.add(key, f"invalid name {value!r}: use 1 to 64 letters, digits, '_', '.' or '-'")
            return None
        return value

    def reference(self, value: str, key: str, kind: str, section: str,
                  defined: list[str]) -> None:
        if value in defined:
            return
        if not defined:
            where = f"none is defined; add a [{section}.{value}] table"
        else:
            where = f"defined: {_one_of(tuple(defined))}"
        self.add(key, f"unknown {kind} {value!r}{_suggest(value, defined)} ({where})")

    # files

    def path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    def path_value(self, value: object, key: str) -> Path | None:
        if not isinstance(value, str):
            self.add(key, f"expected a string (a file path), got {_type_name(value)}")
            return None
        if not value:
            self.add(key, "must not be empty")
            return None
        if "\x00" in value:
            self.add(key, "a file path cannot hold a NUL character")
            return None
        return self.path(value)

    def read(self, path: Path, key: str) -> bytes | None:
        """The bytes of the regular file at `path`, or None after recording why not."""
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self.add(key, f"file not found: {path}")
            return None
        except PermissionError:
            self.add(key, f"cannot access {path}: permission denied")
            return None
        except (OSError, ValueError) as exc:
            self.add(key, f"cannot access {path}: {_os_reason(exc)}")
            return None
        if not stat.S_ISREG(info.st_mode):
            self.add(key, f"not a regular file: {path}")
            return None
        try:
            return path.read_bytes()
        except PermissionError:
            self.add(key, f"cannot read {path}: permission denied")
        except (OSError, ValueError) as exc:
            self.add(key, f"cannot read {path}: {_os_reason(exc)}")
        return None

    def certificates_in(self, data: bytes, path: Path, key: str) -> list[x509.Certificate] | None:
        """Every certificate of a PEM file, in order; None after recording why there is none."""
        if _PEM_CERT not in data:
            try:
                x509.load_der_x509_certificate(data)
            except ValueError:
                self.add(key, f"no certificate in {path} "
                              f"(expected PEM '-----BEGIN CERTIFICATE-----')")
            else:
                self.add(key, f"{path} holds a DER certificate; give it in PEM form")
            return None
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            self.add(key, f"cannot parse the certificates in {path}: {exc}")
            return None
        return certs

    def log_target(self, table: dict[str, Any], name: str, default: str, *,
                   off_ok: bool) -> str | None:
        value = self.string(table, name, "gateway", default)
        key = _join("gateway", name)
        if value is None or value == LOG_STDOUT:
            return value
        if value == LOG_OFF:
            if off_ok:
                return value
            self.add(key, f"{name} cannot be 'off'; give '-' (stderr) or a file path")
            return None
        path = self.path_value(value, key)
        if path is None:
            return None
        try:
            if path.is_dir():
                self.add(key, f"is a directory: {path}")
                return None
            if not path.parent.is_dir():
                self.add(key, f"directory does not exist: {path.parent}")
                return None
        except OSError as exc:
            self.add(key, f"cannot access {path}: {_os_reason(exc)}")
            return None
        return str(path)

    # sections

    def document(self, doc: dict[str, Any], source: Path | None) -> Config:
        self.keys(doc, _TOP_KEYS, "")
        gateway = self.gateway(doc.get("gateway", {}))
        admin = self.admin(doc["admin"]) if "admin" in doc else None

        stores_raw = self.table(doc.get("trust_store", {}), "trust_store") or {}
        groups_raw = self.table(doc.get("target_group", {}), "target_group") or {}
        trust_stores = {}
        for name, body in stores_raw.items():
            spec = self.trust_store(name, body)
            if spec is not None:
                trust_stores[name] = spec
        target_groups = {}
        for name, body in groups_raw.items():
            spec = self.target_group(name, body)
            if spec is not None:
                target_groups[name] = spec

        listeners: list[ListenerSpec] = []
        raw_listeners = doc.get("listener", [])
        if not isinstance(raw_listeners, list):
            self.add("listener", f"expected an array of tables ([[listener]]), "
                                 f"got {_type_name(raw_listeners)}")
        elif not raw_listeners:
            self.add("listener", "at least one [[listener]] is required")
        else:
            names: dict[str, int] = {}
            binds: dict[tuple[str, int], int] = {}
            for index, body in enumerate(raw_listeners):
                listener = self.listener(index, body, list(stores_raw), list(groups_raw))
                if listener is None:
                    continue
                prefix = f"listener[{index}]"
                if listener.name is not None:
                    if listener.name in names:
                        self.add(f"{prefix}.name", f"duplicate listener name {listener.name!r} "
                                                   f"(also listener[{names[listener.name]}])")
                    else:
                        names[listener.name] = index
                if listener.host is not None and listener.port is not None:
                    where = (listener.host, listener.port)
                    if where in binds:
                        self.add(f"{prefix}.bind", f"address {_show_bind(*where)} is already "
                                                   f"bound by listener[{binds[where]}]")
                    else:
                        binds[where] = index
                listeners.append(listener)

        return Config(
            source=source.absolute() if source is not None else None,
            gateway=gateway,
            listeners=tuple(listeners),
            trust_stores=MappingProxyType(trust_stores),
            target_groups=MappingProxyType(target_groups),
            admin=admin,
        )

    def gateway(self, raw: object) -> GatewaySpec:
        table = self.table(raw, "gateway")
        if table is None:
            return GatewaySpec()
        self.keys(table, _GATEWAY_KEYS, "gateway")
        workers: int | None = DEFAULT_WORKERS
        if "workers" in table:
            value = table["workers"]
            if value == "auto" and isinstance(value, str):
                workers = os.cpu_count() or 1
            elif isinstance(value, int) and not isinstance(value, bool):
                workers = self.integer_value(value, "gateway.workers", 1, None)
            else:
                self.add("gateway.workers", f"expected an integer or 'auto', "
                                            f"got {_type_name(value)}")
                workers = None
        return GatewaySpec(
            workers=workers,  # type: ignore[arg-type]
            native=self.choice(table, "native", "gateway", NATIVE_MODES, DEFAULT_NATIVE),
            access_log=self.log_target(table, "access_log", DEFAULT_ACCESS_LOG, off_ok=True),
            connection_log=self.log_target(table, "connection_log", DEFAULT_CONNECTION_LOG,
                                           off_ok=True),
            error_log=self.log_target(table, "error_log", DEFAULT_ERROR_LOG, off_ok=False),
            log_level=self.choice(table, "log_level", "gateway", LOG_LEVELS, DEFAULT_LOG_LEVEL),
            drain_timeout_s=self.seconds(table, "drain_timeout_s", "gateway",
                                         DEFAULT_DRAIN_TIMEOUT_S),
            ticket_rotation_s=(self.seconds(table, "ticket_rotation_s", "gateway", 1.0)
                               if "ticket_rotation_s" in table else DEFAULT_TICKET_ROTATION_S),
            watch_files=self.boolean(table, "watch_files", "gateway", DEFAULT_WATCH_FILES),
            watch_interval_s=self.seconds(table, "watch_interval_s", "gateway",
                                          DEFAULT_WATCH_INTERVAL_S),
            connection_log_format=self.choice(table, "connection_log_format", "gateway",
                                              CONNECTION_LOG_FORMATS, DEFAULT_CONNECTION_LOG_FORMAT),
        )  # type: ignore[arg-type]

    def admin(self, raw: object) -> AdminSpec | None:
        table = self.table(raw, "admin")
        if table is None:
            return None
        self.keys(table, _ADMIN_KEYS, "admin")
        text = table.get("bind", DEFAULT_ADMIN_BIND)
        if not isinstance(text, str):
            self.add("admin.bind", f"expected a string (host:port), got {_type_name(text)}")
            return None
        try:
            host, port = parse_address(text, listen=True)
        except ValueError as exc:
            self.add("admin.bind", str(exc))
            return None
        return AdminSpec(host, port)

    def trust_store(self, name: str, raw: object) -> TrustStoreSpec | None:
        prefix = _join("trust_store", name)
        self.name(name, prefix)
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _TRUST_STORE_KEYS, prefix)

        bundle_key = f"{prefix}.ca_bundle"
        bundle_path = None
        cas: list[x509.Certificate] | None = None
        if "ca_bundle" not in table:
            self.add(bundle_key, "missing required key")
        else:
            bundle_path = self.path_value(table["ca_bundle"], bundle_key)
        if bundle_path is not None:
            data = self.read(bundle_path, bundle_key)
            if data is not None:
                cas = self.certificates_in(data, bundle_path, bundle_key)
        if cas is not None:
            for number, cert in enumerate(cas, 1):
                if not _is_ca_safe(cert):
                    self.add(bundle_key, f"certificate {number} in {bundle_path} "
                                         f"({_subject(cert)}) is not a CA "
                                         f"(BasicConstraints ca=True is missing)")

        crls: list[Path] = []
        for index, value in enumerate(self.array(table, "crls", prefix, []) or []):
            key = f"{prefix}.crls[{index}]"
            path = self.path_value(value, key)
            if path is None:
                continue
            crls.append(path)
            self.crl(path, key, cas, bundle_path)

        serials: set[int] = set()
        for index, value in enumerate(self.array(table, "deny_serials", prefix, []) or []):
            try:
                serials.add(parse_serial(value))
            except _Invalid as exc:
                self.add(f"{prefix}.deny_serials[{index}]", str(exc))

        return TrustStoreSpec(name=name, ca_bundle=bundle_path,  # type: ignore[arg-type]
                              crls=tuple(crls), deny_serials=frozenset(serials))

    def crl(self, path: Path, key: str, cas: list[x509.Certificate] | None,
            bundle_path: Path | None) -> None:
        data = self.read(path, key)
        if data is None:
            return
        try:
            if b"-----BEGIN" in data:
                count = data.count(_PEM_CRL)
                if count == 0:
                    self.add(key, f"no CRL in {path} (expected PEM '-----BEGIN X509 CRL-----' "
                                  f"or DER)")
                    return
                if count > 1:
                    self.add(key, f"{path} holds {count} CRLs; give one CRL per file")
                    return
                crl = x509.load_pem_x509_crl(data)
            else:
                crl = x509.load_der_x509_crl(data)
        except ValueError as exc:
            self.add(key, f"not a PEM or DER CRL: {path} ({exc})")
            return

        next_update = crl.next_update_utc
        if next_update is not None and next_update < self.now:
            self.add(key, f"CRL expired at {_utc(next_update)}")
        if cas is None:
            return  # the bundle has its own problem; a CRL cannot be checked against it
        issuers = [ca for ca in cas if ca.subject == crl.issuer]
        issuer = crl.issuer.rfc4514_string() or "<empty name>"
        if not issuers:
            self.add(key, f"CRL issuer {issuer!r} is not a CA in {bundle_path}")
        elif not any(_signed_by(crl, ca) for ca in issuers):
            self.add(key, f"CRL signature does not verify with the key of {issuer!r} "
                          f"in {bundle_path}")

    def target_group(self, name: str, raw: object) -> TargetGroupSpec | None:
        prefix = _join("target_group", name)
        self.name(name, prefix)
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _TARGET_GROUP_KEYS, prefix)
        targets: list[tuple[str, int]] = []
        raw_targets = self.array(table, "targets", prefix)
        if raw_targets is not None and not raw_targets:
            self.add(f"{prefix}.targets", "at least one target is required")
        for index, value in enumerate(raw_targets or []):
            key = f"{prefix}.targets[{index}]"
            if not isinstance(value, str):
                self.add(key, f"expected a string (host:port), got {_type_name(value)}")
                continue
            try:
                target = parse_address(value, listen=False)
            except _Invalid as exc:
                self.add(key, str(exc))
                continue
            if target in targets:
                self.add(key, f"duplicate target {value!r} "
                              f"(also targets[{targets.index(target)}])")
            targets.append(target)
        health = None
        if "health_check" in table:
            health = self.health_check(table["health_check"], f"{prefix}.health_check")
        tls = None
        if "tls" in table:
            tls = self.upstream_tls(table["tls"], f"{prefix}.tls")
        return TargetGroupSpec(
            name=name,
            targets=tuple(targets),
            connect_timeout_s=self.seconds(table, "connect_timeout_s", prefix,
                                           DEFAULT_CONNECT_TIMEOUT_S),
            read_timeout_s=self.seconds(table, "read_timeout_s", prefix, DEFAULT_READ_TIMEOUT_S),
            max_idle_per_target=self.integer(table, "max_idle_per_target", prefix,
                                             DEFAULT_MAX_IDLE_PER_TARGET, 0),
            idle_timeout_s=self.seconds(table, "idle_timeout_s", prefix,
                                        DEFAULT_POOL_IDLE_TIMEOUT_S),
            load_balancing=self.choice(table, "load_balancing", prefix, LOAD_BALANCING,
                                       DEFAULT_LOAD_BALANCING),
            ejection_failures=self.integer(table, "ejection_failures", prefix,
                                           DEFAULT_EJECTION_FAILURES, 0),
            ejection_duration_s=self.seconds(table, "ejection_duration_s", prefix,
                                             DEFAULT_EJECTION_DURATION_S),
            health_check=health,
            tls=tls,
        )  # type: ignore[arg-type]

    def health_check(self, raw: object, prefix: str) -> HealthCheckSpec | None:
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _HEALTH_CHECK_KEYS, prefix)
        path = self.string(table, "path", prefix, DEFAULT_HEALTH_CHECK_PATH)
        if path is not None and (not path.startswith("/") or not _REQUEST_TARGET_RE.fullmatch(path)):
            self.add(f"{prefix}.path", f"must start with '/' and hold only printable ASCII without "
                                       f"spaces, got {path!r}")
            path = None
        interval = self.seconds(table, "interval_s", prefix, DEFAULT_HEALTH_CHECK_INTERVAL_S)
        timeout = self.seconds(table, "timeout_s", prefix, DEFAULT_HEALTH_CHECK_TIMEOUT_S)
        if interval is not None and timeout is not None and timeout >= interval:
            self.add(f"{prefix}.timeout_s", f"must be shorter than interval_s ({interval:g}), "
                                            f"got {timeout:g}")
            timeout = None
        matcher = None
        text = self.string(table, "matcher", prefix, DEFAULT_HEALTH_CHECK_MATCHER)
        if text is not None:
            try:
                matcher = parse_matcher(text)
            except _Invalid as exc:
                self.add(f"{prefix}.matcher", str(exc))
        return HealthCheckSpec(
            path=path,  # type: ignore[arg-type]
            interval_s=interval,  # type: ignore[arg-type]
            timeout_s=timeout,  # type: ignore[arg-type]
            healthy_threshold=self.integer(table, "healthy_threshold", prefix,
                                           DEFAULT_HEALTHY_THRESHOLD, MIN_HEALTH_THRESHOLD,
                                           MAX_HEALTH_THRESHOLD),  # type: ignore[arg-type]
            unhealthy_threshold=self.integer(table, "unhealthy_threshold", prefix,
                                             DEFAULT_UNHEALTHY_THRESHOLD, MIN_HEALTH_THRESHOLD,
                                             MAX_HEALTH_THRESHOLD),  # type: ignore[arg-type]
            matcher=matcher,  # type: ignore[arg-type]
        )

    def upstream_tls(self, raw: object, prefix: str) -> UpstreamTLSSpec | None:
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _UPSTREAM_TLS_KEYS, prefix)
        bundle = None
        if "ca_bundle" in table:
            bundle = self.path_value(table["ca_bundle"], f"{prefix}.ca_bundle")
            if bundle is not None:
                data = self.read(bundle, f"{prefix}.ca_bundle")
                if data is not None:
                    self.certificates_in(data, bundle, f"{prefix}.ca_bundle")
        cert = key = None
        if ("cert" in table) != ("key" in table):
            missing = "key" if "cert" in table else "cert"
            self.add(f"{prefix}.{missing}", "give cert and key together (the gateway's client "
                                            "certificate for the targets)")
        if "cert" in table:
            cert = self.path_value(table["cert"], f"{prefix}.cert")
        if "key" in table:
            key = self.path_value(table["key"], f"{prefix}.key")
        leaf = None
        if cert is not None:
            data = self.read(cert, f"{prefix}.cert")
            chain = None if data is None else self.certificates_in(data, cert, f"{prefix}.cert")
            leaf = chain[0] if chain else None
        if key is not None:
            self.private_key(key, f"{prefix}.key", leaf, cert)
        server_name = self.string(table, "server_name", prefix, None)
        if server_name is not None:
            server_name = server_name.lower()
            if not _HOSTNAME_RE.fullmatch(server_name):
                self.add(f"{prefix}.server_name", f"must be a DNS name, got {server_name!r}")
                server_name = None
        return UpstreamTLSSpec(ca_bundle=bundle, cert=cert, key=key, server_name=server_name)

    def listener(self, index: int, raw: object, stores: list[str],
                 groups: list[str]) -> ListenerSpec | None:
        prefix = f"listener[{index}]"
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _LISTENER_KEYS, prefix)

        name = None
        if "name" not in table:
            self.add(f"{prefix}.name", "missing required key")
        else:
            name = self.name(table["name"], f"{prefix}.name")

        host = port = None
        bind = self.string(table, "bind", prefix)
        if bind is not None:
            try:
                host, port = parse_address(bind, listen=True)
            except _Invalid as exc:
                self.add(f"{prefix}.bind", str(exc))

        certificates = self.certificates(table, prefix)

        mtls = self.choice(table, "mtls", prefix, MTLS_MODES, DEFAULT_MTLS)
        trust_store = self.string(table, "trust_store", prefix, None)
        if trust_store is not None:
            self.reference(trust_store, f"{prefix}.trust_store", "trust store", "trust_store",
                           stores)
        elif mtls in MTLS_VERIFYING_MODES and "trust_store" not in table:
            self.add(f"{prefix}.trust_store", f"required when mtls is {mtls!r}: name a "
                                              f"[trust_store.NAME] to verify clients against")

        header_style = self.header_style(table, prefix)

        max_body = self.integer(table, "max_body_bytes", prefix, 0, 0)
        return ListenerSpec(
            name=name,  # type: ignore[arg-type]
            host=host,  # type: ignore[arg-type]
            port=port,  # type: ignore[arg-type]
            certificates=certificates,
            mtls=mtls,  # type: ignore[arg-type]
            trust_store=trust_store,
            header_style=header_style,  # type: ignore[arg-type]
            ignore_client_certificate_expiry=self.boolean(
                table, "ignore_client_certificate_expiry", prefix,
                DEFAULT_IGNORE_CLIENT_CERTIFICATE_EXPIRY),  # type: ignore[arg-type]
            advertise_ca_names=self.boolean(table, "advertise_ca_names", prefix,
                                            DEFAULT_ADVERTISE_CA_NAMES),  # type: ignore[arg-type]
            max_chain_depth=self.integer(table, "max_chain_depth", prefix,
                                         DEFAULT_MAX_CHAIN_DEPTH, MIN_CHAIN_DEPTH,
                                         MAX_CHAIN_DEPTH),  # type: ignore[arg-type]
            tls_min_version=self.choice(table, "tls_min_version", prefix, TLS_VERSIONS,
                                        DEFAULT_TLS_MIN_VERSION),  # type: ignore[arg-type]
            ciphers_tls12=self.ciphers(table, prefix),  # type: ignore[arg-type]
            session_tickets=self.boolean(table, "session_tickets", prefix,
                                         DEFAULT_SESSION_TICKETS),  # type: ignore[arg-type]
            session_timeout_s=self.integer(table, "session_timeout_s", prefix,
                                           DEFAULT_SESSION_TIMEOUT_S, MIN_SESSION_TIMEOUT_S,
                                           MAX_SESSION_TIMEOUT_S),  # type: ignore[arg-type]
            handshake_timeout_s=self.seconds(table, "handshake_timeout_s", prefix,
                                             DEFAULT_HANDSHAKE_TIMEOUT_S),  # type: ignore[arg-type]
            header_timeout_s=self.seconds(table, "header_timeout_s", prefix,
                                          DEFAULT_HEADER_TIMEOUT_S),  # type: ignore[arg-type]
            idle_timeout_s=self.seconds(table, "idle_timeout_s", prefix,
                                        DEFAULT_IDLE_TIMEOUT_S),  # type: ignore[arg-type]
            max_request_line_bytes=self.integer(table, "max_request_line_bytes", prefix,
                                                DEFAULT_MAX_REQUEST_LINE_BYTES,
                                                1),  # type: ignore[arg-type]
            max_header_bytes=self.integer(table, "max_header_bytes", prefix,
                                          DEFAULT_MAX_HEADER_BYTES, 1),  # type: ignore[arg-type]
            max_header_count=self.integer(table, "max_header_count", prefix,
                                          DEFAULT_MAX_HEADER_COUNT, 1),  # type: ignore[arg-type]
            max_body_bytes=max_body or None,
            max_client_cert_chain_bytes=self.integer(
                table, "max_client_cert_chain_bytes", prefix, DEFAULT_MAX_CLIENT_CERT_CHAIN_BYTES,
                1, MAX_CLIENT_CERT_CHAIN_BYTES),  # type: ignore[arg-type]
            rules=self.rules(table, prefix, groups, mtls),
            body_timeout_s=self.seconds(table, "body_timeout_s", prefix,
                                        DEFAULT_BODY_TIMEOUT_S),  # type: ignore[arg-type]
            max_requests_per_connection=self.integer(
                table, "max_requests_per_connection", prefix,
                DEFAULT_MAX_REQUESTS_PER_CONNECTION, 0),  # type: ignore[arg-type]
            max_connections_per_worker=self.integer(
                table, "max_connections_per_worker", prefix,
                DEFAULT_MAX_CONNECTIONS_PER_WORKER, 1),  # type: ignore[arg-type]
            underscore_headers=self.choice(table, "underscore_headers", prefix,
                                           UNDERSCORE_HEADERS,
                                           DEFAULT_UNDERSCORE_HEADERS),  # type: ignore[arg-type]
            strip_request_headers=self.header_globs(table, "strip_request_headers", prefix),
            merge_slashes=self.boolean(table, "merge_slashes", prefix,
                                       DEFAULT_MERGE_SLASHES),  # type: ignore[arg-type]
            escaped_slashes=self.choice(table, "escaped_slashes", prefix, ESCAPED_SLASHES,
                                        DEFAULT_ESCAPED_SLASHES),  # type: ignore[arg-type]
            strict_sni_host=(self.boolean(table, "strict_sni_host", prefix, False)
                             if "strict_sni_host" in table else DEFAULT_STRICT_SNI_HOST),
        )

    def header_globs(self, table: dict[str, Any], name: str, prefix: str) -> tuple[str, ...]:
        """Header names with `*` wildcards, lower-cased, without repeats."""
        raw = self.array(table, name, prefix, [])
        key = _join(prefix, name)
        if raw is not None and len(raw) > MAX_STRIP_REQUEST_HEADERS:
            self.add(key, f"at most {MAX_STRIP_REQUEST_HEADERS} names, got {len(raw)}")
            return ()
        out: list[str] = []
        for index, value in enumerate(raw or []):
            if not isinstance(value, str):
                self.add(f"{key}[{index}]", f"expected a string, got {_type_name(value)}")
                continue
            if not value or not _TOKEN_RE.fullmatch(value.replace("*", "a")) or value == "*":
                self.add(f"{key}[{index}]", f"not a header name or a pattern of one (letters, "
                                            f"digits, '-', '_' and '*' wildcards): {value!r}")
                continue
            value = value.lower()
            if value not in out:
                out.append(value)
        return tuple(out)

    def header_style(self, table: dict[str, Any], prefix: str) -> tuple[str, ...] | None:
        if "header_style" not in table:
            return DEFAULT_HEADER_STYLE
        value = table["header_style"]
        key = f"{prefix}.header_style"
        if isinstance(value, str):
            style = self.choice_value(value, key, HEADER_STYLES)
            return None if style is None else (style,)
        if not isinstance(value, list):
            self.add(key, f"expected a string or an array of strings, got {_type_name(value)}")
            return None
        if not value:
            self.add(key, f"must not be empty; give one or more of: {_one_of(HEADER_STYLES)}")
            return None
        styles: list[str] = []
        for index, item in enumerate(value):
            style = self.choice_value(item, f"{key}[{index}]", HEADER_STYLES)
            if style is None:
                continue
            if style in styles:
                self.add(f"{key}[{index}]", f"duplicate header style {style!r}")
                continue
            styles.append(style)
        return tuple(styles)

    def ciphers(self, table: dict[str, Any], prefix: str) -> str | None:
        value = self.string(table, "ciphers_tls12", prefix, DEFAULT_CIPHERS_TLS12)
        if value is None or "ciphers_tls12" not in table:
            return value
        # The stdlib's OpenSSL parses the same cipher-string grammar the TLS layer's does; a
        # string that selects no TLS 1.2 cipher at all fails there as it would at start.
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
        except (ssl.SSLError, ValueError):
            self.add(f"{prefix}.ciphers_tls12",
                     f"OpenSSL selects no TLS 1.2 cipher from {value!r}")
            return None
        return value

    def certificates(self, table: dict[str, Any], prefix: str) -> tuple[CertificateSpec, ...]:
        raw = self.array(table, "certificates", prefix)
        if raw is None:
            return ()
        if not raw:
            self.add(f"{prefix}.certificates", "at least one certificate is required")
        specs: list[CertificateSpec] = []
        for index, item in enumerate(raw):
            entry = f"{prefix}.certificates[{index}]"
            body = self.table(item, entry)
            if body is None:
                continue
            self.keys(body, _CERTIFICATE_KEYS, entry)
            cert_path = key_path = None
            for part in _CERTIFICATE_KEYS:
                if part not in body:
                    self.add(f"{entry}.{part}", "missing required key")
            if "cert" in body:
                cert_path = self.path_value(body["cert"], f"{entry}.cert")
            if "key" in body:
                key_path = self.path_value(body["key"], f"{entry}.key")
            leaf = None
            if cert_path is not None:
                data = self.read(cert_path, f"{entry}.cert")
                chain = None if data is None else self.certificates_in(data, cert_path,
                                                                       f"{entry}.cert")
                leaf = chain[0] if chain else None
            names: tuple[str, ...] = ()
            if leaf is not None:
                try:
                    names = _dns_names(leaf)
                except Exception as exc:  # noqa: BLE001 - a malformed extension, in any form
                    self.add(f"{entry}.cert", f"cannot read the names of the certificate in "
                                              f"{cert_path}: {exc}")
            if key_path is not None:
                self.private_key(key_path, f"{entry}.key", leaf, cert_path)
            specs.append(CertificateSpec(cert=cert_path, key=key_path,  # type: ignore[arg-type]
                                         names=names))
        return tuple(specs)

    def private_key(self, path: Path, key: str, leaf: x509.Certificate | None,
                    cert_path: Path | None) -> None:
        # No message here quotes the file's content or the library's error text: a key file's
        # bytes must never reach a log.
        data = self.read(path, key)
        if data is None:
            return
        if not _PEM_KEY_RE.search(data):
            try:
                serialization.load_der_private_key(data, password=None)
            except TypeError:
                self.add(key, "private key is encrypted; give an unencrypted key")
            except Exception:  # noqa: BLE001 - any failure means "not a DER key" here
                self.add(key, f"no private key in {path} "
                              f"(expected PEM '-----BEGIN ... PRIVATE KEY-----')")
            else:
                self.add(key, f"{path} holds a DER private key; give it in PEM form")
            return
        try:
            private_key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            self.add(key, "private key is encrypted; give an unencrypted key")
            return
        except Exception:  # noqa: BLE001 - ValueError or UnsupportedAlgorithm, details withheld
            self.add(key, f"cannot parse the private key in {path}")
            return
        if leaf is None:
            return
        try:
            matches = _spki(leaf.public_key()) == _spki(private_key.public_key())
        except Exception:  # noqa: BLE001 - an unsupported algorithm cannot match either
            matches = False
        if not matches:
            self.add(key, f"private key does not match the certificate in {cert_path}")

    def rules(self, table: dict[str, Any], prefix: str, groups: list[str],
              mtls: str | None = None) -> tuple[RuleSpec, ...]:
        raw = self.array(table, "rule", prefix, [])
        if not raw:
            return ()
        given = [isinstance(item, dict) and "priority" in item for item in raw]
        if any(given) and not all(given):
            missing = ", ".join(f"rule[{i}]" for i, has in enumerate(given) if not has)
            self.add(f"{prefix}.rule", f"give every rule of a listener a priority, or none "
                                       f"(without one: {missing})")
        rules: list[RuleSpec] = []
        seen: dict[int, int] = {}
        for index, item in enumerate(raw):
            rule = self.rule(f"{prefix}.rule[{index}]", item, index + 1, groups, mtls)
            if rule is None:
                continue
            if given[index] and rule.priority is not None:
                if rule.priority in seen:
                    self.add(f"{prefix}.rule[{index}].priority", f"duplicate priority "
                             f"{rule.priority} (also rule[{seen[rule.priority]}])")
                else:
                    seen[rule.priority] = index
            rules.append(rule)
        if all(r.priority is not None for r in rules):
            rules.sort(key=lambda r: r.priority)
        return tuple(rules)

    def rule(self, prefix: str, raw: object, position: int,
             groups: list[str], mtls: str | None = None) -> RuleSpec | None:
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _RULE_KEYS, prefix)
        priority = self.integer(table, "priority", prefix, position, MIN_RULE_PRIORITY,
                                MAX_RULE_PRIORITY)

        host = self.string(table, "host", prefix, None)
        if host is not None:
            host = host.lower()
            if not _RULE_HOST_RE.fullmatch(host):
                self.add(f"{prefix}.host", "a host pattern may hold only letters, digits, '.', "
                                           "'-', '_' and '*' (no port), at most 255 characters")
                host = None

        path = self.string(table, "path", prefix, None)
        if path is not None:
            if path != "*" and not path.startswith("/"):
                self.add(f"{prefix}.path", f"a path pattern must start with '/' or be '*', "
                                           f"got {path!r}")
                path = None
            elif any(c.isspace() or not c.isprintable() for c in path):
                self.add(f"{prefix}.path", "a path pattern cannot hold spaces or control "
                                           "characters")
                path = None

        methods = self.methods(table, prefix)
        headers = self.header_conditions(table, prefix)

        action = self.choice(table, "action", prefix, ACTIONS)
        target_group = self.string(table, "target_group", prefix, None)
        fixed = redirect = None
        for key, wanted in (("target_group", "forward"), ("fixed_response", "fixed-response"),
                            ("redirect", "redirect"), ("allow_upgrade", "forward")):
            if key in table and action is not None and action != wanted:
                self.add(f"{prefix}.{key}", f"only used when action is {wanted!r}")
                if key == "target_group":
                    target_group = None
        if action == "forward":
            if target_group is not None:
                self.reference(target_group, f"{prefix}.target_group", "target group",
                               "target_group", groups)
            elif "target_group" not in table:
                self.add(f"{prefix}.target_group", "required when action is 'forward'")
        elif action == "fixed-response":
            if "fixed_response" not in table:
                self.add(f"{prefix}.fixed_response", "required when action is 'fixed-response'")
            else:
                fixed = self.fixed_response(table["fixed_response"], f"{prefix}.fixed_response")
        elif action == "redirect":
            if "redirect" not in table:
                self.add(f"{prefix}.redirect", "required when action is 'redirect'")
            else:
                redirect = self.redirect(table["redirect"], f"{prefix}.redirect")

        upgrades: tuple[str, ...] = ()
        if "allow_upgrade" in table and action == "forward":
            upgrades = self.tokens(table, "allow_upgrade", prefix, lower=True)

        require = self.boolean(table, "require_client_cert", prefix, False)
        allow = None
        if "allow" in table:
            allow = self.client_allow(table["allow"], f"{prefix}.allow")
            if require is False and "require_client_cert" in table:
                self.add(f"{prefix}.require_client_cert", "an allow-list needs a client "
                                                          "certificate; leave this out or true")
            require = True
        if require and mtls is not None and mtls not in MTLS_VERIFYING_MODES:
            key = "allow" if "allow" in table else "require_client_cert"
            why = ("no client certificate is asked for" if mtls == "off" else
                   "passthrough does not verify the certificate, so anyone could claim any name")
            self.add(f"{prefix}.{key}", f"needs a listener with mtls 'verify' or 'optional' "
                                        f"({why})")
        return RuleSpec(priority=priority, host=host, path=path,  # type: ignore[arg-type]
                        action=action, target_group=target_group,  # type: ignore[arg-type]
                        fixed_response=fixed, methods=methods, headers=headers,
                        redirect=redirect, require_client_cert=bool(require), allow=allow,
                        allow_upgrade=upgrades)

    def tokens(self, table: dict[str, Any], name: str, prefix: str, *,
               lower: bool = False) -> tuple[str, ...]:
        """A non-empty array of RFC 9110 tokens without repeats (methods, upgrade protocols)."""
        raw = self.array(table, name, prefix, [])
        key = _join(prefix, name)
        if raw is not None and not raw and name in table:
            self.add(key, "must not be empty; leave the key out instead")
        out: list[str] = []
        for index, value in enumerate(raw or []):
            if not isinstance(value, str):
                self.add(f"{key}[{index}]", f"expected a string, got {_type_name(value)}")
                continue
            if not _TOKEN_RE.fullmatch(value):
                self.add(f"{key}[{index}]", f"not an HTTP token: {value!r}")
                continue
            if lower:
                value = value.lower()
            if value in out:
                self.add(f"{key}[{index}]", f"duplicate {value!r}")
                continue
            out.append(value)
        return tuple(out)

    def methods(self, table: dict[str, Any], prefix: str) -> tuple[str, ...]:
        methods = self.tokens(table, "methods", prefix)
        for index, method in enumerate(methods):
            if method != method.upper():
                # methods are case-sensitive (RFC 9110 9.1): "get" would never match a GET
                self.add(f"{prefix}.methods[{index}]", f"methods are case-sensitive; "
                                                       f"write {method.upper()!r}")
        return methods

    def header_conditions(self, table: dict[str, Any],
                          prefix: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        if "headers" not in table:
            return ()
        key = f"{prefix}.headers"
        body = self.table(table["headers"], key)
        if body is None:
            return ()
        if not body:
            self.add(key, "must not be empty; leave the key out instead")
        out: list[tuple[str, tuple[str, ...]]] = []
        seen: set[str] = set()
        for name, value in body.items():
            where = _join(key, name)
            if not _TOKEN_RE.fullmatch(name):
                self.add(where, f"not a header name: {name!r}")
                continue
            if name.lower() in seen:
                self.add(where, f"header {name!r} is given twice (names are case-insensitive)")
                continue
            seen.add(name.lower())
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values:
                self.add(where, f"expected a string or a non-empty array of strings, "
                                f"got {_type_name(value)}")
                continue
            patterns: list[str] = []
            for index, item in enumerate(values):
                at = where if isinstance(value, str) else f"{where}[{index}]"
                if not isinstance(item, str):
                    self.add(at, f"expected a string, got {_type_name(item)}")
                elif not _FIELD_PATTERN_RE.fullmatch(item):
                    self.add(at, "a value pattern must be printable ASCII without leading or "
                                 "trailing spaces")
                else:
                    patterns.append(item)
            out.append((name.lower(), tuple(patterns)))
        return tuple(out)

    def redirect(self, raw: object, prefix: str) -> Redirect | None:
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _REDIRECT_KEYS, prefix)
        status = self.integer(table, "status", prefix, DEFAULT_REDIRECT_STATUS)
        if status is not None and status not in REDIRECT_STATUSES:
            self.add(f"{prefix}.status", f"must be one of {', '.join(map(str, REDIRECT_STATUSES))}, "
                                         f"got {status}")
            status = None
        scheme = self.string(table, "scheme", prefix, DEFAULT_REDIRECT_SCHEME)
        if scheme is not None and scheme not in ("http", "https", "#{protocol}", "#{scheme}"):
            self.add(f"{prefix}.scheme", f"expected 'http', 'https' or '#{{protocol}}', "
                                         f"got {scheme!r}")
            scheme = None
        host = self.string(table, "host", prefix, DEFAULT_REDIRECT_HOST)
        if host is not None and not self.template(host, f"{prefix}.host", _REDIRECT_HOST_RE,
                                                  "letters, digits, '.', '-' and placeholders"):
            host = None
        port: str | None = DEFAULT_REDIRECT_PORT
        if "port" in table:
            value = table["port"]
            if isinstance(value, int) and not isinstance(value, bool):
                port = str(value) if 1 <= value <= 65535 else None
            elif value == "#{port}" or (isinstance(value, str) and _PORT_RE.fullmatch(value)
                                         and 1 <= int(value) <= 65535):
                port = value
            else:
                port = None
            if port is None:
                self.add(f"{prefix}.port", f"expected a port from 1 to 65535 or '#{{port}}', "
                                           f"got {value!r}")
        path = self.string(table, "path", prefix, DEFAULT_REDIRECT_PATH)
        if path is not None:
            if not path.startswith("/"):
                self.add(f"{prefix}.path", f"must start with '/', got {path!r}")
                path = None
            elif not self.template(path, f"{prefix}.path", _REDIRECT_PATH_RE,
                                   "printable ASCII without spaces, '?' or '#', and placeholders"):
                path = None
        query = self.string(table, "query", prefix, DEFAULT_REDIRECT_QUERY, empty_ok=True)
        if query is not None:
            if query.startswith("?"):
                self.add(f"{prefix}.query", "give the query without its leading '?'")
                query = None
            elif not self.template(query, f"{prefix}.query", _REDIRECT_QUERY_RE,
                                   "printable ASCII without spaces or '#', and placeholders"):
                query = None
        result = Redirect(status=status, scheme=scheme, host=host,  # type: ignore[arg-type]
                          port=port, path=path, query=query)  # type: ignore[arg-type]
        if (scheme in ("#{protocol}", "#{scheme}", "https") and host == DEFAULT_REDIRECT_HOST
                and port == DEFAULT_REDIRECT_PORT and path == DEFAULT_REDIRECT_PATH
                and query == DEFAULT_REDIRECT_QUERY):
            # ALB refuses this too: the client would be sent where it already is, forever
            self.add(prefix, "redirects every request to itself; change at least one of "
                             "scheme, host, port, path or query")
        return result

    def template(self, value: str, key: str, allowed: re.Pattern[str], what: str) -> bool:
        ok = True
        for name in _PLACEHOLDER_RE.findall(value):
            if name not in REDIRECT_PLACEHOLDERS:
                self.add(key, f"unknown placeholder {name!r}; expected one of: "
                              f"{_one_of(REDIRECT_PLACEHOLDERS)}")
                ok = False
        if ok and not allowed.fullmatch(_PLACEHOLDER_RE.sub("", value)):
            self.add(key, f"may hold only {what}, got {value!r}")
            ok = False
        return ok

    def client_allow(self, raw: object, prefix: str) -> ClientAllow | None:
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _ALLOW_KEYS, prefix)
        if not any(k in table for k in _ALLOW_KEYS):
            self.add(prefix, f"give at least one of: {_one_of(_ALLOW_KEYS)}")
        lists: dict[str, tuple[str, ...]] = {}
        for name in _ALLOW_KEYS:
            items = self.array(table, name, prefix, [])
            key = _join(prefix, name)
            if items is not None and not items and name in table:
                self.add(key, "must not be empty (an empty allow-list would refuse everyone); "
                              "leave the key out instead")
            kept: list[str] = []
            for index, item in enumerate(items or []):
                if not isinstance(item, str) or not item:
                    self.add(f"{key}[{index}]", f"expected a non-empty string, "
                                                f"got {_type_name(item)}")
                elif any(not c.isprintable() for c in item):
                    self.add(f"{key}[{index}]", "cannot hold control characters")
                else:
                    kept.append(item.lower() if name == "san_dns" else item)
            lists[name] = tuple(kept)
        return ClientAllow(**lists)

    def fixed_response(self, raw: object, prefix: str) -> FixedResponse | None:
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _FIXED_RESPONSE_KEYS, prefix)
        status = self.integer(table, "status", prefix, _REQUIRED, MIN_FIXED_RESPONSE_STATUS,
                              MAX_FIXED_RESPONSE_STATUS)
        content_type = self.string(table, "content_type", prefix,
                                   DEFAULT_FIXED_RESPONSE_CONTENT_TYPE)
        if content_type is not None and not _CONTENT_TYPE_RE.fullmatch(content_type):
            # It becomes a header value verbatim, so nothing that could end or split the line.
            self.add(f"{prefix}.content_type", "must be printable ASCII without line breaks "
                                               "or surrounding spaces")
            content_type = None
        text = self.string(table, "body", prefix, "", empty_ok=True)
        body = None
        if text is not None:
            try:
                body = text.encode("utf-8")
            except UnicodeEncodeError:
                self.add(f"{prefix}.body", "cannot be encoded as UTF-8")
            else:
                if len(body) > MAX_FIXED_RESPONSE_BODY_BYTES:
                    self.add(f"{prefix}.body", f"at most {MAX_FIXED_RESPONSE_BODY_BYTES} bytes "
                                               f"(UTF-8), got {len(body)}")
                    body = None
        return FixedResponse(status=status, content_type=content_type,  # type: ignore[arg-type]
                             body=body)  # type: ignore[arg-type]


def _show_bind(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _is_ca_safe(cert: x509.Certificate) -> bool:
    try:
        return _is_ca(cert)
    except Exception:  # noqa: BLE001 - unreadable extensions cannot prove a CA
        return False


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - an unsupported key type cannot have signed it
        return False
