"""The configuration as data: every dataclass, closed choice, default and limit; stdlib only.

How this works: each configuration section is a frozen dataclass with slots, and each of its fields
says once, in its metadata, how the TOML file spells it: the key's name, its kind (a string, one of
a closed set of choices, a boolean, an integer within bounds, a duration in seconds), and the
default the field takes when the key is left out. `gateway.config` walks a table against these
fields with one generic reader (`_Reader.fields`), so a key is written here and nowhere else. Keys
that need parsing of their own (addresses, certificates, rules, header styles, files) are marked
`explicit` and read by named readers there; a typed key with a check of its own (a cipher string
OpenSSL must accept, a log file's directory, a trust store's name that must be defined) keeps its
kind here and gets the check from a named reader, as do the rules that tie one field to another.
A field marked `part` has no key of its own: another field's reader fills it (a listener's `port`
comes with its `bind`, a trust store's `name` is its table's name).

Closed choices that carry behaviour are `StrEnum`s: `MTLSMode.verifies` says whether a mode checks
the client's chain. A member is a `str`, so `spec.mtls == "verify"`, `spec.mtls in ("verify",
"optional")`, f-strings, `json` and `orjson` all see the plain value. The `*_MODES` tuples stay
plain strings, as the messages that list them quote them. No third-party import: this module is the
bottom of the import graph (after `errors`).
"""
from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "AdminSpec", "CertificateSpec", "ClientAllow", "Config", "FixedResponse", "GatewaySpec",
    "HealthCheckSpec", "IdentitySignatureSpec", "Key", "Kind", "ListenerSpec", "MTLSMode", "Redirect", "RuleSpec",
    "TargetGroupSpec", "TrustStoreSpec", "UpstreamTLSSpec",
]


class MTLSMode(enum.StrEnum):
    """What a listener asks of the client's certificate."""

    OFF = "off"                  # none asked for
    PASSTHROUGH = "passthrough"  # asked for and passed on, not verified
    VERIFY = "verify"            # required and verified against the trust store
    OPTIONAL = "optional"        # verified if given

    @property
    def verifies(self) -> bool:
        """The mode checks a client chain, and so needs a trust store."""
        return self is MTLSMode.VERIFY or self is MTLSMode.OPTIONAL

    @property
    def asks_for_certificate(self) -> bool:
        return self is not MTLSMode.OFF


MTLS_MODES: tuple[str, ...] = tuple(mode.value for mode in MTLSMode)
#: mTLS modes that verify a client chain, and so need a trust store.
MTLS_VERIFYING_MODES: tuple[str, ...] = tuple(mode.value for mode in MTLSMode if mode.verifies)


# --- field metadata: how the file spells a field --------------------------------------------------

class _Required:
    """The default of a key the file must give."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class Kind(enum.Enum):
    STRING = "string"
    CHOICE = "choice"
    BOOLEAN = "boolean"
    INTEGER = "integer"
    SECONDS = "seconds"     # a finite number > 0, held as a float
    EXPLICIT = "explicit"   # read by a named reader in gateway.config
    PART = "part"           # no key of its own; another field's reader fills it


@dataclass(frozen=True, slots=True)
class Key:
    """One field's TOML key. `toml` None means the field's own name (for PART: no key at all).
    `default` is REQUIRED for a key the file must give."""

    kind: Kind
    toml: str | None = None
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    convert: Callable[[str], Any] | None = None
    lo: int | None = None
    hi: int | None = None
    empty_ok: bool = False
    zero_is_none: bool = False
    must_give: bool = False   # required in the file, though a spec built by hand has a default

    @property
    def file_default(self) -> Any:
        """What a table without the key yields: REQUIRED when the file must give it."""
        return REQUIRED if self.must_give else self.default


def _setting(key: Key) -> Any:
    if key.default is REQUIRED:
        return field(metadata={"key": key})
    return field(default=key.default, metadata={"key": key})


def string(default: Any = REQUIRED, *, empty_ok: bool = False) -> Any:
    """A string; empty only if `empty_ok`."""
    return _setting(Key(Kind.STRING, default=default, empty_ok=empty_ok))


def choice(default: Any, choices: tuple[str, ...],
           convert: Callable[[str], Any] | None = None, *, must_give: bool = False) -> Any:
    """One of `choices` (plain strings), turned into `convert(value)` when given."""
    return _setting(Key(Kind.CHOICE, default=default, choices=choices, convert=convert,
                        must_give=must_give))


def boolean(default: Any) -> Any:
    return _setting(Key(Kind.BOOLEAN, default=default))


def integer(default: Any = REQUIRED, lo: int | None = None, hi: int | None = None, *,
            zero_is_none: bool = False) -> Any:
    """An integer within [lo, hi] (either end open when None); 0 held as None if `zero_is_none`."""
    return _setting(Key(Kind.INTEGER, default=default, lo=lo, hi=hi, zero_is_none=zero_is_none))


def seconds(default: Any) -> Any:
    return _setting(Key(Kind.SECONDS, default=default))


def explicit(default: Any = REQUIRED, *, toml: str | None = None) -> Any:
    """A key with parsing of its own (gateway.config reads it by name), spelt `toml` in the file."""
    return _setting(Key(Kind.EXPLICIT, toml=toml, default=default))


def part(default: Any = REQUIRED) -> Any:
    """No key of its own: filled in by another field's reader."""
    return _setting(Key(Kind.PART, default=default))


# --- allowed values -------------------------------------------------------------------------------

NATIVE_MODES = ("auto", "on", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
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
DEFAULT_SHUTDOWN_DELAY_S = 0.0        # 0: drain at once on SIGTERM
DEFAULT_TICKET_ROTATION_S = 0.0       # 0: never roll workers just to rotate ticket keys
DEFAULT_WATCH_FILES = False
DEFAULT_WATCH_INTERVAL_S = 2.0
CONNECTION_LOG_FORMATS = ("json", "alb")
DEFAULT_CONNECTION_LOG_FORMAT = "json"
DEFAULT_ADMIN_HOST = "127.0.0.1"
DEFAULT_ADMIN_PORT = 9901
DEFAULT_ADMIN_BIND = f"{DEFAULT_ADMIN_HOST}:{DEFAULT_ADMIN_PORT}"
DEFAULT_ADMIN_IDLE_TIMEOUT_S = 10.0      # a request must come whole within it (or the next one)
DEFAULT_ADMIN_MAX_CONNECTIONS = 64       # per worker
#: Where revocations made through the admin API are kept (gateway.revocations); the systemd unit's
#: StateDirectory. None: no state kept, and the revocation API cannot be turned on.
DEFAULT_STATE_DIR: Path | None = None

DEFAULT_MTLS = MTLSMode.OFF
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
# HTTP/2 (gateway.h2): what ALPN offers, in the server's order of preference, and the abuse limits
ALPN_PROTOCOLS: tuple[str, ...] = ("h2", "http/1.1")
DEFAULT_ALPN: tuple[str, ...] = ("h2", "http/1.1")
DEFAULT_H2_MAX_CONCURRENT_STREAMS = 100        # SETTINGS_MAX_CONCURRENT_STREAMS (nginx: 128)
MAX_H2_MAX_CONCURRENT_STREAMS = 1000
DEFAULT_H2_HEADER_TABLE_SIZE = 4096            # SETTINGS_HEADER_TABLE_SIZE: the HPACK table we keep
MAX_H2_HEADER_TABLE_SIZE = 65536
DEFAULT_H2_MAX_RESETS_PER_S = 100              # streams a client cancels (CVE-2023-44487)
DEFAULT_H2_MAX_CONTROL_FRAMES_PER_S = 100      # PING, SETTINGS, PRIORITY, WINDOW_UPDATE w/o traffic
DEFAULT_H2_MAX_EMPTY_FRAMES = 32               # DATA/HEADERS/CONTINUATION with nothing in them
DEFAULT_H2_MAX_CONTINUATION_FRAMES = 32        # CONTINUATION frames of one header block (CVE-2024-27316)
DEFAULT_H2_STALL_TIMEOUT_S = 30.0              # a response held up by a window the client keeps at 0
# Rolling mTLS out (gateway.signature; ALB has no report-only mode, Google's load balancer's is
# ALLOW_INVALID_OR_MISSING_CLIENT_CERT): "report" serves a client that would have been refused and
# tells the backend and the logs what the verdict would have been.
MTLS_ENFORCEMENTS = ("enforce", "report")
DEFAULT_MTLS_ENFORCEMENT = "enforce"
DEFAULT_IDENTITY_SIGNATURE_HEADER = "X-Mtls-Identity-Signature"
MIN_SIGNATURE_KEY_BYTES = 32
#: Optional identity headers (ALB-style names, X-Amzn-Mtls-Clientcert-...), by what they carry.
IDENTITY_FIELDS = ("sha256_fingerprint", "san_dns", "san_uri", "san_email", "spiffe_id")
#: Access-log fields `log_fields` may choose (the record's keys; identity fields as above).
ACCESS_LOG_FIELDS = ("time", "listener", "client", "method", "target", "status", "bytes_in",
                     "bytes_out", "duration_ms", "upstream", "rule", "verify_status", "subject",
                     "aborted", "reason") + IDENTITY_FIELDS
#: Extra request header names to strip on a listener (`*` wildcards), beside the built-in list.
MAX_STRIP_REQUEST_HEADERS = 256
# Revocation beyond files (gateway.ocsp, gateway.crlfetch): what a trust store checks, how long a
# responder or a distribution point may take, and what an answer that cannot be had means.
OCSP_MODES = ("off", "leaf", "chain")
DEFAULT_OCSP = "off"
DEFAULT_OCSP_TIMEOUT_S = 3.0            # nginx's resolver_timeout is 30 s; a handshake waits on this
FAILURE_POLICIES = ("refuse", "allow")
DEFAULT_OCSP_FAILURE = "refuse"
DEFAULT_CRL_FETCH = False
DEFAULT_CRL_STALE = "refuse"
DEFAULT_CRL_FETCH_TIMEOUT_S = 10.0
MAX_CRL_URLS = 64

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


def parse_http_url(url: str) -> tuple[str, int, str]:
    """(host, port, path with query) of an http:// URL, as a responder's or a CRL distribution
    point's; ValueError says what is wrong with it."""
    from urllib.parse import urlsplit
    if len(url) > 2048 or any(c in url for c in "\x00\r\n \t"):
        raise ValueError(f"not a usable URL: {url[:80]!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {url!r} ({exc})") from None
    if parts.scheme.lower() != "http":
        raise ValueError(f"{url!r}: only http:// URLs are fetched (OCSP and CRLs are signed, and "
                         f"a TLS fetch would need revocation checks of its own)")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r}: expected http://host[:port]/path")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, port if port is not None else 80, path


def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


# --- the dataclasses ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CertificateSpec:
    """A server certificate chain (leaf first) and its key; `names` are what SNI matches against:
    the leaf's SAN DNS names, lowercase (wildcards kept), or its CN when it has none."""

    cert: Path = explicit()
    key: Path = explicit()
    names: tuple[str, ...] = part()


@dataclass(frozen=True, slots=True)
class FixedResponse:
    status: int = integer(REQUIRED, MIN_FIXED_RESPONSE_STATUS, MAX_FIXED_RESPONSE_STATUS)
    content_type: str = string(DEFAULT_FIXED_RESPONSE_CONTENT_TYPE)
    body: bytes = explicit(DEFAULT_FIXED_RESPONSE_BODY)


@dataclass(frozen=True, slots=True)
class Redirect:
    """Where a `redirect` action sends the client: each part may hold REDIRECT_PLACEHOLDERS."""

    status: int = integer(DEFAULT_REDIRECT_STATUS)
    scheme: str = string(DEFAULT_REDIRECT_SCHEME)
    host: str = string(DEFAULT_REDIRECT_HOST)
    port: str = explicit(DEFAULT_REDIRECT_PORT)
    path: str = string(DEFAULT_REDIRECT_PATH)
    query: str = string(DEFAULT_REDIRECT_QUERY, empty_ok=True)


@dataclass(frozen=True, slots=True)
class ClientAllow:
    """Allow-lists on the verified client certificate; every non-empty list must match one entry.

    `subject` and `issuer` are RFC 2253 strings (as in the logs and ALB headers), `*` matching any
    run of characters but ','; `san_dns` is case-insensitive, `*` matching within one label;
    `san_uri` is exact, `*` matching any run of characters."""

    subject: tuple[str, ...] = explicit(())
    issuer: tuple[str, ...] = explicit(())
    san_dns: tuple[str, ...] = explicit(())
    san_uri: tuple[str, ...] = explicit(())


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One routing rule. `host` is lowercase; both patterns use `*` wildcards; None matches all.

    `methods`: the request method must be one of them (none: any). `headers`: (lowercase name,
    value patterns) pairs; every name must be present with a value matching one of its patterns
    (`*` wildcards, case-insensitive). `require_client_cert` / `allow`: the request needs a verified
    client certificate (and one the allow-lists accept), else 403. `allow_upgrade`: lowercase
    protocol tokens (`websocket`) a `forward` rule lets a client switch to.

    `priority` defaults to the rule's position (1, 2, 3...) in the file, so it is read
    explicitly."""

    priority: int = integer(REQUIRED, MIN_RULE_PRIORITY, MAX_RULE_PRIORITY)
    host: str | None = string(None)
    path: str | None = string(None)
    action: str = choice("forward", ACTIONS, must_give=True)
    target_group: str | None = string(None)
    fixed_response: FixedResponse | None = explicit(None)
    methods: tuple[str, ...] = explicit(())
    headers: tuple[tuple[str, tuple[str, ...]], ...] = explicit(())
    redirect: Redirect | None = explicit(None)
    require_client_cert: bool = boolean(False)
    allow: ClientAllow | None = explicit(None)
    allow_upgrade: tuple[str, ...] = explicit(())


@dataclass(frozen=True, slots=True)
class IdentitySignatureSpec:
    """HMAC-SHA256 over the request and the identity headers the gateway set (gateway.signature):
    `key_file` signs, `previous_key_file` is what a backend may still accept during a rotation."""

    key_file: Path = explicit()
    header: str = explicit(DEFAULT_IDENTITY_SIGNATURE_HEADER)
    previous_key_file: Path | None = explicit(None)


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One bound address. `host` is a canonical IP literal, "localhost", or "" for all addresses.
    `certificates[0]` serves clients without SNI or with a name no certificate carries.

    `mtls` is an MTLSMode; one given as a plain string (a spec built by hand) is turned into one."""

    name: str = explicit()
    host: str = explicit(toml="bind")
    port: int = part()
    certificates: tuple[CertificateSpec, ...] = explicit()
    mtls: MTLSMode = choice(DEFAULT_MTLS, MTLS_MODES, MTLSMode)
    trust_store: str | None = string(None)   # a [trust_store.NAME]; checked in gateway.config
    header_style: tuple[str, ...] = explicit(DEFAULT_HEADER_STYLE)
    ignore_client_certificate_expiry: bool = boolean(DEFAULT_IGNORE_CLIENT_CERTIFICATE_EXPIRY)
    advertise_ca_names: bool = boolean(DEFAULT_ADVERTISE_CA_NAMES)
    max_chain_depth: int = integer(DEFAULT_MAX_CHAIN_DEPTH, MIN_CHAIN_DEPTH, MAX_CHAIN_DEPTH)
    tls_min_version: str = choice(DEFAULT_TLS_MIN_VERSION, TLS_VERSIONS)
    ciphers_tls12: str = string(DEFAULT_CIPHERS_TLS12)
    session_tickets: bool = boolean(DEFAULT_SESSION_TICKETS)
    session_timeout_s: int = integer(DEFAULT_SESSION_TIMEOUT_S, MIN_SESSION_TIMEOUT_S,
                                     MAX_SESSION_TIMEOUT_S)
    handshake_timeout_s: float = seconds(DEFAULT_HANDSHAKE_TIMEOUT_S)
    header_timeout_s: float = seconds(DEFAULT_HEADER_TIMEOUT_S)
    idle_timeout_s: float = seconds(DEFAULT_IDLE_TIMEOUT_S)
    max_request_line_bytes: int = integer(DEFAULT_MAX_REQUEST_LINE_BYTES, 1)
    max_header_bytes: int = integer(DEFAULT_MAX_HEADER_BYTES, 1)
    max_header_count: int = integer(DEFAULT_MAX_HEADER_COUNT, 1)
    max_body_bytes: int | None = integer(DEFAULT_MAX_BODY_BYTES, 0, zero_is_none=True)
    max_client_cert_chain_bytes: int = integer(DEFAULT_MAX_CLIENT_CERT_CHAIN_BYTES, 1,
                                               MAX_CLIENT_CERT_CHAIN_BYTES)
    rules: tuple[RuleSpec, ...] = explicit((), toml="rule")
    body_timeout_s: float = seconds(DEFAULT_BODY_TIMEOUT_S)
    max_requests_per_connection: int = integer(DEFAULT_MAX_REQUESTS_PER_CONNECTION, 0)
    max_connections_per_worker: int = integer(DEFAULT_MAX_CONNECTIONS_PER_WORKER, 1)
    underscore_headers: str = choice(DEFAULT_UNDERSCORE_HEADERS, UNDERSCORE_HEADERS)
    strip_request_headers: tuple[str, ...] = explicit(())
    merge_slashes: bool = boolean(DEFAULT_MERGE_SLASHES)
    escaped_slashes: str = choice(DEFAULT_ESCAPED_SLASHES, ESCAPED_SLASHES)
    strict_sni_host: bool | None = boolean(DEFAULT_STRICT_SNI_HOST)
    alpn: tuple[str, ...] = explicit(DEFAULT_ALPN)
    h2_max_concurrent_streams: int = integer(DEFAULT_H2_MAX_CONCURRENT_STREAMS, 1,
                                             MAX_H2_MAX_CONCURRENT_STREAMS)
    h2_header_table_size: int = integer(DEFAULT_H2_HEADER_TABLE_SIZE, 0, MAX_H2_HEADER_TABLE_SIZE)
    h2_max_resets_per_s: int = integer(DEFAULT_H2_MAX_RESETS_PER_S, 1)
    h2_max_control_frames_per_s: int = integer(DEFAULT_H2_MAX_CONTROL_FRAMES_PER_S, 1)
    h2_max_empty_frames: int = integer(DEFAULT_H2_MAX_EMPTY_FRAMES, 1)
    h2_max_continuation_frames: int = integer(DEFAULT_H2_MAX_CONTINUATION_FRAMES, 1)
    h2_stall_timeout_s: float = seconds(DEFAULT_H2_STALL_TIMEOUT_S)
    mtls_enforcement: str = choice(DEFAULT_MTLS_ENFORCEMENT, MTLS_ENFORCEMENTS)
    identity_signature: IdentitySignatureSpec | None = explicit(None)
    identity_fields: tuple[str, ...] = explicit(())
    log_fields: tuple[str, ...] | None = explicit(None)

    @property
    def reports_only(self) -> bool:
        """A verifying listener that serves every client and reports what it would have refused."""
        return self.mtls_enforcement == "report" and self.mtls in MTLS_VERIFYING_MODES

    @property
    def http2(self) -> bool:
        """ALPN offers h2."""
        return "h2" in self.alpn

    def __post_init__(self) -> None:
        mode = self.mtls
        if type(mode) is str and mode in MTLS_MODES:
            object.__setattr__(self, "mtls", MTLSMode(mode))

    @property
    def verifies(self) -> bool:
        return self.mtls in MTLS_VERIFYING_MODES

    @property
    def host_must_match_sni(self) -> bool:
        """`strict_sni_host` as it applies: unset means on unless mtls is off."""
        return self.mtls != "off" if self.strict_sni_host is None else self.strict_sni_host


@dataclass(frozen=True, slots=True)
class TrustStoreSpec:
    """A CA bundle and what revokes its certificates: CRL files, a serial deny-list, CRLs fetched
    from distribution points (`crl_fetch`: the bundle's CDPs and `crl_urls`), OCSP (`ocsp`, at the
    responder in each certificate's AIA unless `ocsp_responder` names one). `*_failure` and
    `crl_stale` say what an answer that cannot be had means: refuse (the default) or allow."""

    name: str = part()
    ca_bundle: Path = explicit()
    crls: tuple[Path, ...] = explicit(())
    deny_serials: frozenset[int] = explicit(frozenset())
    ocsp: str = choice(DEFAULT_OCSP, OCSP_MODES)
    ocsp_responder: str | None = explicit(None)
    ocsp_timeout_s: float = seconds(DEFAULT_OCSP_TIMEOUT_S)
    ocsp_failure: str = choice(DEFAULT_OCSP_FAILURE, FAILURE_POLICIES)
    crl_fetch: bool = boolean(DEFAULT_CRL_FETCH)
    crl_urls: tuple[str, ...] = explicit(())
    crl_stale: str = choice(DEFAULT_CRL_STALE, FAILURE_POLICIES)
    crl_fetch_timeout_s: float = seconds(DEFAULT_CRL_FETCH_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    """Active health checks: `GET path` every `interval_s`; a status in `matcher` (inclusive ranges)
    within `timeout_s` is a pass. `healthy_threshold` passes in a row bring a target back,
    `unhealthy_threshold` failures in a row take it out."""

    path: str = string(DEFAULT_HEALTH_CHECK_PATH)
    interval_s: float = seconds(DEFAULT_HEALTH_CHECK_INTERVAL_S)
    timeout_s: float = seconds(DEFAULT_HEALTH_CHECK_TIMEOUT_S)
    healthy_threshold: int = integer(DEFAULT_HEALTHY_THRESHOLD, MIN_HEALTH_THRESHOLD,
                                     MAX_HEALTH_THRESHOLD)
    unhealthy_threshold: int = integer(DEFAULT_UNHEALTHY_THRESHOLD, MIN_HEALTH_THRESHOLD,
                                       MAX_HEALTH_THRESHOLD)
    matcher: tuple[tuple[int, int], ...] = explicit(((200, 399),))


@dataclass(frozen=True, slots=True)
class UpstreamTLSSpec:
    """TLS from the gateway to the targets. The targets' certificates are verified against
    `ca_bundle` (None: the system's trust store) for `server_name` (None: the target's host, an IP
    address checked against IP SANs); `cert`/`key` are the gateway's own client certificate."""

    ca_bundle: Path | None = explicit(None)
    cert: Path | None = explicit(None)
    key: Path | None = explicit(None)
    server_name: str | None = string(None)


@dataclass(frozen=True, slots=True)
class TargetGroupSpec:
    """Backends as (host, port); host is a canonical IP literal (IPv6 without brackets) or a
    lowercase DNS name."""

    name: str = part()
    targets: tuple[tuple[str, int], ...] = explicit()
    connect_timeout_s: float = seconds(DEFAULT_CONNECT_TIMEOUT_S)
    read_timeout_s: float = seconds(DEFAULT_READ_TIMEOUT_S)
    max_idle_per_target: int = integer(DEFAULT_MAX_IDLE_PER_TARGET, 0)
    idle_timeout_s: float = seconds(DEFAULT_POOL_IDLE_TIMEOUT_S)
    load_balancing: str = choice(DEFAULT_LOAD_BALANCING, LOAD_BALANCING)
    ejection_failures: int = integer(DEFAULT_EJECTION_FAILURES, 0)
    ejection_duration_s: float = seconds(DEFAULT_EJECTION_DURATION_S)
    health_check: HealthCheckSpec | None = explicit(None)
    tls: UpstreamTLSSpec | None = explicit(None)


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    """Process-wide settings. Log fields hold "-" (stdout; stderr for `error_log`), "off" (not for
    `error_log`) or an absolute file path. `ticket_rotation_s` and `shutdown_delay_s` are 0
    (never; none) unless given, and then a duration > 0."""

    workers: int = explicit(DEFAULT_WORKERS)
    native: str = choice(DEFAULT_NATIVE, NATIVE_MODES)
    access_log: str = string(DEFAULT_ACCESS_LOG)
    connection_log: str = string(DEFAULT_CONNECTION_LOG)
    error_log: str = string(DEFAULT_ERROR_LOG)
    log_level: str = choice(DEFAULT_LOG_LEVEL, LOG_LEVELS)
    drain_timeout_s: float = seconds(DEFAULT_DRAIN_TIMEOUT_S)
    shutdown_delay_s: float = seconds(DEFAULT_SHUTDOWN_DELAY_S)
    ticket_rotation_s: float = seconds(DEFAULT_TICKET_ROTATION_S)
    watch_files: bool = boolean(DEFAULT_WATCH_FILES)
    watch_interval_s: float = seconds(DEFAULT_WATCH_INTERVAL_S)
    connection_log_format: str = choice(DEFAULT_CONNECTION_LOG_FORMAT, CONNECTION_LOG_FORMATS)
    state_dir: Path | None = explicit(DEFAULT_STATE_DIR)


@dataclass(frozen=True, slots=True)
class AdminSpec:
    """The admin listener (metrics, health, certificates): plain HTTP, loopback by default.
    `token_file` holds the bearer token of the revocation API (off without one). A connection has
    `idle_timeout_s` for each whole request (from its start or the last answer); a worker holds at
    most `max_connections` admin connections and closes any above."""

    host: str = explicit(DEFAULT_ADMIN_HOST, toml="bind")
    port: int = part(DEFAULT_ADMIN_PORT)
    token_file: Path | None = explicit(None)
    idle_timeout_s: float = explicit(DEFAULT_ADMIN_IDLE_TIMEOUT_S)
    max_connections: int = explicit(DEFAULT_ADMIN_MAX_CONNECTIONS)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. `source` is the file it came from (None for `loads()`)."""

    source: Path | None
    gateway: GatewaySpec
    listeners: tuple[ListenerSpec, ...]
    trust_stores: Mapping[str, TrustStoreSpec] = field(default_factory=_empty_mapping)
    target_groups: Mapping[str, TargetGroupSpec] = field(default_factory=_empty_mapping)
    admin: AdminSpec | None = None


def keys_of(cls: type) -> tuple[tuple[str, Key], ...]:
    """(field name, Key) for every field of a spec dataclass, in declaration order."""
    found = _KEYS.get(cls)
    if found is None:
        found = tuple((f.name, f.metadata["key"]) for f in fields(cls)
                      if "key" in f.metadata)
        _KEYS[cls] = found
    return found


def toml_keys(cls: type) -> tuple[str, ...]:
    """The TOML keys a table of `cls` may hold, in field order."""
    return tuple(key.toml or name for name, key in keys_of(cls) if key.kind is not Kind.PART)


_KEYS: dict[type, tuple[tuple[str, Key], ...]] = {}
