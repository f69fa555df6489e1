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

The dataclasses, closed choices and defaults live in `gateway.spec` (re-exported here, so
`config.ListenerSpec` and `config.DEFAULT_...` keep working). Each field there carries its TOML
key's name, kind, bounds and default as metadata. `_Reader.fields` walks a table against a spec
class's fields in declaration order, reading every keyed field through the one typed check of its
kind (`_Reader.check`: the same key paths and messages in every section). Keys with parsing of their
own (addresses, certificates, rules, header styles, files) have named readers here, handed to
`fields` in a table by field name (`_LISTENER_READERS`); a reader sees the values read before it,
which is where the rules between fields live (a verifying mtls needs a trust store, a health
check's timeout is shorter than its interval, an allow-list needs a verifying listener). The
walk's order is the order problems were always reported in; where a key was read out of field
order (`max_body_bytes`, a target group's `health_check` and `tls`), it still is.

Relative file paths resolve against the directory of the configuration file (or `base_dir` for
`loads()`, else the current directory) and are stored absolute.
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
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from gateway.errors import ConfigError, Problem
from gateway.spec import (  # noqa: F401 - re-exported: the spec's names are config's too
    AdminSpec, CertificateSpec, ClientAllow, Config, FixedResponse, GatewaySpec, HealthCheckSpec,
    ListenerSpec, MTLSMode, Redirect, RuleSpec, TargetGroupSpec, TrustStoreSpec, UpstreamTLSSpec,
    Key, Kind, REQUIRED, keys_of, toml_keys, parse_http_url, MAX_CRL_URLS, ACTIONS,
    IdentitySignatureSpec, ACCESS_LOG_FIELDS, DEFAULT_IDENTITY_SIGNATURE_HEADER,
    DEFAULT_MTLS_ENFORCEMENT, IDENTITY_FIELDS, MIN_SIGNATURE_KEY_BYTES, MTLS_ENFORCEMENTS,
    DEFAULT_CRL_FETCH, DEFAULT_CRL_FETCH_TIMEOUT_S, DEFAULT_CRL_STALE, DEFAULT_OCSP,
    DEFAULT_OCSP_FAILURE, DEFAULT_OCSP_TIMEOUT_S, DEFAULT_STATE_DIR, FAILURE_POLICIES, OCSP_MODES, CONNECTION_LOG_FORMATS, DEFAULT_ACCESS_LOG,
    DEFAULT_ADMIN_BIND, DEFAULT_ADMIN_HOST, DEFAULT_ADMIN_IDLE_TIMEOUT_S,
    DEFAULT_ADMIN_MAX_CONNECTIONS, DEFAULT_ADMIN_PORT, DEFAULT_ADVERTISE_CA_NAMES,
    DEFAULT_BODY_TIMEOUT_S, DEFAULT_CIPHERS_TLS12, DEFAULT_CONNECTION_LOG,
    DEFAULT_CONNECTION_LOG_FORMAT, DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_EJECTION_DURATION_S, DEFAULT_EJECTION_FAILURES, DEFAULT_ERROR_LOG,
    DEFAULT_ESCAPED_SLASHES, DEFAULT_FIXED_RESPONSE_BODY, DEFAULT_FIXED_RESPONSE_CONTENT_TYPE,
    ALPN_PROTOCOLS, DEFAULT_ALPN, DEFAULT_H2_HEADER_TABLE_SIZE, DEFAULT_H2_MAX_CONCURRENT_STREAMS,
    DEFAULT_H2_MAX_CONTINUATION_FRAMES, DEFAULT_H2_MAX_CONTROL_FRAMES_PER_S,
    DEFAULT_H2_MAX_EMPTY_FRAMES, DEFAULT_H2_MAX_RESETS_PER_S, DEFAULT_H2_STALL_TIMEOUT_S,
    MAX_H2_HEADER_TABLE_SIZE, MAX_H2_MAX_CONCURRENT_STREAMS, DEFAULT_HANDSHAKE_TIMEOUT_S, DEFAULT_HEADER_STYLE, DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_HEALTHY_THRESHOLD, DEFAULT_HEALTH_CHECK_INTERVAL_S, DEFAULT_HEALTH_CHECK_MATCHER,
    DEFAULT_HEALTH_CHECK_PATH, DEFAULT_HEALTH_CHECK_TIMEOUT_S, DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_IGNORE_CLIENT_CERTIFICATE_EXPIRY, DEFAULT_LOAD_BALANCING, DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CHAIN_DEPTH, DEFAULT_MAX_CLIENT_CERT_CHAIN_BYTES,
    DEFAULT_MAX_CONNECTIONS_PER_WORKER, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_COUNT,
    DEFAULT_MAX_IDLE_PER_TARGET, DEFAULT_MAX_REQUESTS_PER_CONNECTION,
    DEFAULT_MAX_REQUEST_LINE_BYTES, DEFAULT_MERGE_SLASHES, DEFAULT_MTLS, DEFAULT_NATIVE,
    DEFAULT_POOL_IDLE_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S, DEFAULT_REDIRECT_HOST,
    DEFAULT_REDIRECT_PATH, DEFAULT_REDIRECT_PORT, DEFAULT_REDIRECT_QUERY, DEFAULT_REDIRECT_SCHEME,
    DEFAULT_REDIRECT_STATUS, DEFAULT_SESSION_TICKETS, DEFAULT_SESSION_TIMEOUT_S,
    DEFAULT_STRICT_SNI_HOST, DEFAULT_SHUTDOWN_DELAY_S, DEFAULT_TICKET_ROTATION_S, DEFAULT_TLS_MIN_VERSION,
    DEFAULT_UNDERSCORE_HEADERS, DEFAULT_UNHEALTHY_THRESHOLD, DEFAULT_WATCH_FILES,
    DEFAULT_WATCH_INTERVAL_S, DEFAULT_WORKERS, ESCAPED_SLASHES, HEADER_STYLES, LOAD_BALANCING,
    LOG_LEVELS, LOG_OFF, LOG_STDOUT, MAX_CHAIN_DEPTH, MAX_CLIENT_CERT_CHAIN_BYTES,
    MAX_FIXED_RESPONSE_BODY_BYTES, MAX_FIXED_RESPONSE_STATUS, MAX_HEALTH_THRESHOLD,
    MAX_RULE_PRIORITY, MAX_SESSION_TIMEOUT_S, MAX_STRIP_REQUEST_HEADERS, MIN_CHAIN_DEPTH,
    MIN_FIXED_RESPONSE_STATUS, MIN_HEALTH_THRESHOLD, MIN_RULE_PRIORITY, MIN_SESSION_TIMEOUT_S,
    MTLS_MODES, MTLS_VERIFYING_MODES, NAME_PATTERN, NATIVE_MODES, NO_RULE_MATCHED_BODY,
    NO_RULE_MATCHED_STATUS, REDIRECT_PLACEHOLDERS, REDIRECT_STATUSES, TLS_VERSIONS,
    UNDERSCORE_HEADERS,
)

__all__ = [
    "CertificateSpec", "ClientAllow", "Config", "FixedResponse", "GatewaySpec", "HealthCheckSpec",
    "ListenerSpec", "Redirect", "RuleSpec", "TargetGroupSpec", "TrustStoreSpec", "UpstreamTLSSpec",
    "load", "loads",
]

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


def _spki(public_key: PublicKeyTypes) -> bytes:
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

_GATEWAY_KEYS = toml_keys(GatewaySpec)
_ADMIN_KEYS = toml_keys(AdminSpec)
_LISTENER_KEYS = toml_keys(ListenerSpec)
_CERTIFICATE_KEYS = toml_keys(CertificateSpec)
_RULE_KEYS = toml_keys(RuleSpec)
_REDIRECT_KEYS = toml_keys(Redirect)
_ALLOW_KEYS = toml_keys(ClientAllow)
_FIXED_RESPONSE_KEYS = toml_keys(FixedResponse)
_TRUST_STORE_KEYS = toml_keys(TrustStoreSpec)
_TARGET_GROUP_KEYS = toml_keys(TargetGroupSpec)
_HEALTH_CHECK_KEYS = toml_keys(HealthCheckSpec)
_UPSTREAM_TLS_KEYS = toml_keys(UpstreamTLSSpec)
_SIGNATURE_KEYS = toml_keys(IdentitySignatureSpec)
_TOP_KEYS = ("gateway", "admin", "listener", "trust_store", "target_group")

#: Keys explicit readers take that are no field's own: a listener's `bind` (host and port).
_BIND = Key(Kind.STRING)
#: A fixed response's `body` as the file writes it (text, held as its UTF-8 bytes).
_BODY_TEXT = Key(Kind.STRING, default="", empty_ok=True)
#: A health check's `matcher` as the file writes it ("200-399"); the spec holds the ranges.
_MATCHER = Key(Kind.STRING, default=DEFAULT_HEALTH_CHECK_MATCHER)
_UNSET: Any = object()
_RULE_HOST_RE = re.compile(r"[a-z0-9_.*-]{1,255}")
_CONTENT_TYPE_RE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_PATTERN_RE = _CONTENT_TYPE_RE
_REQUEST_TARGET_RE = re.compile(r"[\x21-\x7e]+")
_PLACEHOLDER_RE = re.compile(r"#\{[^}]*\}")
_REDIRECT_HOST_RE = re.compile(r"[A-Za-z0-9.-]*")
_REDIRECT_PATH_RE = re.compile(r"[\x21-\x22\x24-\x3e\x40-\x7e]*")     # no '#', '?', space
_REDIRECT_QUERY_RE = re.compile(r"[\x21-\x22\x24-\x7e]*")               # no '#', space

#: An explicit reader: (reader, table, key path of the table, the values read so far from it) ->
#: its field's value; it may fill a PART field into the values too (bind -> host and port).
_Explicit = Callable[["_Reader", dict[str, Any], str, dict[str, Any]], Any]
#: Per spec class, what `fields` walks: (field name, TOML key, Key, file default, check); `check`
#: is the _Reader method for the key's kind, None for EXPLICIT and PART fields (a PART field's TOML
#: key is "": it has none). Built once per class, when the module loads.
_Step = tuple[str, str, Key, Any, "Callable[[_Reader, object, str, Key], Any] | None"]
_PLANS: dict[type, tuple[_Step, ...]] = {}
_STEPS: dict[type, dict[str, _Step]] = {}
_NO_READERS: dict[str, _Explicit] = {}


class _Reader:
    """Walks one parsed document, recording problems rather than raising."""

    def __init__(self, shown: str, base_dir: Path) -> None:
        self.file = shown
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        # the names the document defines, for the references of the listener being read
        self.store_names: list[str] = []
        self.group_names: list[str] = []
        self.now = _dt.datetime.now(_dt.timezone.utc)

    def add(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, key, message))

    # the generic reader: a table against a spec dataclass's field metadata

    def fields(self, cls: type, table: dict[str, Any], prefix: str,
               readers: Mapping[str, _Explicit] = _NO_READERS,
               **given: Any) -> dict[str, Any]:
        """The values of every field of `cls` from `table`, in field order: those in `given` as
        they are, keyed fields by their metadata, the others by `readers[name](self, table,
        prefix, values so far)`. A field whose value had a problem holds None (the spec is only
        handed out when there is no problem at all)."""
        values = given
        for name, toml, key, default, check in _PLANS[cls]:
            read = readers.get(name)
            if read is not None:
                values[name] = read(self, table, prefix, values)
            elif check is None:
                if key.kind is Kind.EXPLICIT and name not in values:
                    raise TypeError(f"{cls.__name__}.{name} has no reader")
            elif toml not in table:
                if default is not REQUIRED:
                    values.setdefault(name, default)
                elif name not in values:
                    self.add(f"{prefix}.{toml}", "missing required key")
                    values[name] = None
            elif name not in values:
                # metadata keys are bare TOML keys, so the path needs no quoting (_join)
                values[name] = check(self, table[toml], f"{prefix}.{toml}", key)
        return values

    def field(self, cls: type, table: dict[str, Any], prefix: str, name: str,
              default: Any = _UNSET) -> Any:
        """One keyed field of `cls`, for explicit readers; `default` overrides the metadata's."""
        _, toml, key, file_default, check = _STEPS[cls][name]
        if toml not in table:
            if default is _UNSET:
                default = file_default
            if default is REQUIRED:
                self.add(f"{prefix}.{toml}", "missing required key")
                return None
            return default
        if check is None:
            raise TypeError(f"{cls.__name__}.{name}: {key.kind.name} keys have no generic reader")
        return check(self, table[toml], f"{prefix}.{toml}", key)

    def get(self, table: dict[str, Any], prefix: str, name: str, key: Key) -> Any:
        """`table[name]` checked against `key` (one no field owns), or its default."""
        if name not in table:
            default = key.file_default
            if default is REQUIRED:
                self.add(_join(prefix, name), "missing required key")
                return None
            return default
        return self.check(table[name], _join(prefix, name), key)

    def check(self, value: object, where: str, key: Key) -> Any:
        """`value` as `key`'s kind allows it, or None after recording a problem at `where`."""
        check = _CHECKS.get(key.kind)
        if check is None:
            raise TypeError(f"{where}: {key.kind.name} keys have no generic reader")
        return check(self, value, where, key)

    def string_key(self, value: object, where: str, key: Key) -> str | None:
        if not isinstance(value, str):
            self.add(where, f"expected a string, got {_type_name(value)}")
            return None
        if not value and not key.empty_ok:
            self.add(where, "must not be empty")
            return None
        return value

    def choice_key(self, value: object, where: str, key: Key) -> Any:
        text = self.choice_value(value, where, key.choices)
        return text if text is None or key.convert is None else key.convert(text)

    def boolean_key(self, value: object, where: str, key: Key) -> bool | None:
        if not isinstance(value, bool):
            self.add(where, f"expected a boolean (true or false), got {_type_name(value)}")
            return None
        return value

    def integer_key(self, value: object, where: str, key: Key) -> int | None:
        number = self.integer_value(value, where, key.lo, key.hi)
        return (number or None) if key.zero_is_none else number

    def seconds_key(self, value: object, where: str, key: Key) -> float | None:
        return self.seconds_value(value, where)

    # typed values, also for explicit readers; each returns None after recording a problem

    def keys(self, table: dict[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                self.add(_join(prefix, key), f"unknown key {key!r}{_suggest(key, allowed)}")

    def table(self, value: object, key: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.add(key, f"expected a table, got {_type_name(value)}")
        return None

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

    def seconds_value(self, value: object, key: str) -> float | None:
        """A duration in seconds: a finite number > 0 (an integer is taken as a float)."""
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
              default: Any = REQUIRED) -> Any:
        """`table[name]` if it is an array, else `default` (REQUIRED: a problem) when absent."""
        if name not in table:
            if default is REQUIRED:
                self.add(_join(prefix, name), "missing required key")
                return None
            return default
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

    def log_target(self, table: dict[str, Any], name: str, *, off_ok: bool) -> str | None:
        value: str | None = self.field(GatewaySpec, table, "gateway", name)
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

    def state_dir(self, table: dict[str, Any]) -> Path | None:
        if "state_dir" not in table:
            return None
        key = "gateway.state_dir"
        path = self.path_value(table["state_dir"], key)
        if path is None:
            return None
        try:
            if path.exists() and not path.is_dir():
                self.add(key, f"not a directory: {path}")
                return None
        except OSError as exc:
            self.add(key, f"cannot access {path}: {_os_reason(exc)}")
            return None
        return path     # made at start when missing (gateway.revocations)

    def token_file(self, table: dict[str, Any]) -> Path | None:
        """The revocation API's bearer token: a file only its owner may read, holding one token of
        at least 16 printable characters."""
        if "token_file" not in table:
            return None
        key = "admin.token_file"
        path = self.path_value(table["token_file"], key)
        if path is None:
            return None
        data = self.read(path, key)
        if data is None:
            return None
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            self.add(key, f"cannot access {path}: {_os_reason(exc)}")
            return None
        if mode & 0o077:
            self.add(key, f"{path} may be read by other users (mode {mode & 0o777:04o}); "
                          f"chmod 600 it")
            return None
        token = data.strip()
        if len(token) < 16 or not all(0x21 <= b <= 0x7e for b in token):
            self.add(key, f"{path} must hold one token of at least 16 printable characters "
                          f"(no spaces)")
            return None
        return path

    def http_url(self, value: object, key: str) -> str | None:
        """An http:// URL of a responder or a distribution point (https would need revocation
        checks of its own: RFC 5280 4.2.1.13 and RFC 6960 appendix A.1 use plain http)."""
        if not isinstance(value, str):
            self.add(key, f"expected a string (an http:// URL), got {_type_name(value)}")
            return None
        try:
            parse_http_url(value)
        except ValueError as exc:
            self.add(key, str(exc))
            return None
        return value

    # sections

    def document(self, doc: dict[str, Any], source: Path | None) -> Config:
        self.keys(doc, _TOP_KEYS, "")
        gateway = self.gateway(doc.get("gateway", {}))
        admin = self.admin(doc["admin"]) if "admin" in doc else None

        stores_raw = self.table(doc.get("trust_store", {}), "trust_store") or {}
        groups_raw = self.table(doc.get("target_group", {}), "target_group") or {}
        trust_stores: dict[str, TrustStoreSpec] = {}
        for name, body in stores_raw.items():
            store = self.trust_store(name, body)
            if store is not None:
                trust_stores[name] = store
        target_groups: dict[str, TargetGroupSpec] = {}
        for name, body in groups_raw.items():
            group = self.target_group(name, body)
            if group is not None:
                target_groups[name] = group

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

        if gateway is not None:
            self.cross_sections(gateway, admin)
        return Config(
            source=source.absolute() if source is not None else None,
            gateway=gateway,
            listeners=tuple(listeners),
            trust_stores=MappingProxyType(trust_stores),
            target_groups=MappingProxyType(target_groups),
            admin=admin,
        )

    def cross_sections(self, gateway: GatewaySpec, admin: AdminSpec | None) -> None:
        if admin is not None and admin.token_file is not None and gateway.state_dir is None:
            self.add("admin.token_file", "the revocation API keeps what it is told under "
                                         "gateway.state_dir: set it (e.g. /var/lib/mtls-gateway)")

    def gateway(self, raw: object) -> GatewaySpec:
        table = self.table(raw, "gateway")
        if table is None:
            return GatewaySpec()
        self.keys(table, _GATEWAY_KEYS, "gateway")
        return GatewaySpec(**self.fields(GatewaySpec, table, "gateway", _GATEWAY_READERS))

    def workers(self, table: dict[str, Any]) -> int | None:
        if "workers" not in table:
            return DEFAULT_WORKERS
        value = table["workers"]
        if value == "auto" and isinstance(value, str):
            return os.cpu_count() or 1
        if isinstance(value, int) and not isinstance(value, bool):
            return self.integer_value(value, "gateway.workers", 1, None)
        self.add("gateway.workers", f"expected an integer or 'auto', got {_type_name(value)}")
        return None

    def admin(self, raw: object) -> AdminSpec | None:
        table = self.table(raw, "admin")
        if table is None:
            return None
        self.keys(table, _ADMIN_KEYS, "admin")
        text = table.get("bind", DEFAULT_ADMIN_BIND)
        if not isinstance(text, str):
            self.add("admin.bind", f"expected a string (host:port), got {_type_name(text)}")
            return None
        token_file = self.token_file(table)
        idle = DEFAULT_ADMIN_IDLE_TIMEOUT_S
        if "idle_timeout_s" in table:
            idle = self.seconds_value(table["idle_timeout_s"], "admin.idle_timeout_s") or idle
        most = DEFAULT_ADMIN_MAX_CONNECTIONS
        if "max_connections" in table:
            most = self.integer_value(table["max_connections"], "admin.max_connections", 1, 100000) or most
        try:
            host, port = parse_address(text, listen=True)
        except ValueError as exc:
            self.add("admin.bind", str(exc))
            return None
        return AdminSpec(host, port, token_file, idle, most)

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

        responder = None
        if "ocsp_responder" in table:
            responder = self.http_url(table["ocsp_responder"], f"{prefix}.ocsp_responder")
        urls: list[str] = []
        raw_urls = self.array(table, "crl_urls", prefix, []) or []
        if len(raw_urls) > MAX_CRL_URLS:
            self.add(f"{prefix}.crl_urls", f"at most {MAX_CRL_URLS} URLs, got {len(raw_urls)}")
        for index, value in enumerate(raw_urls[:MAX_CRL_URLS]):
            url = self.http_url(value, f"{prefix}.crl_urls[{index}]")
            if url is not None:
                urls.append(url)
        values = self.fields(TrustStoreSpec, table, prefix, name=name, ca_bundle=bundle_path,
                             crls=tuple(crls), deny_serials=frozenset(serials),
                             ocsp_responder=responder, crl_urls=tuple(urls))
        if urls and values.get("crl_fetch") is False:
            self.add(f"{prefix}.crl_urls", "CRLs are fetched only with crl_fetch = true")
        return TrustStoreSpec(**values)

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
        # read before the group's own scalars, so that problems keep the file's reading order
        health = None
        if "health_check" in table:
            health = self.health_check(table["health_check"], f"{prefix}.health_check")
        tls = None
        if "tls" in table:
            tls = self.upstream_tls(table["tls"], f"{prefix}.tls")
        return TargetGroupSpec(**self.fields(TargetGroupSpec, table, prefix, name=name,
                                             targets=tuple(targets), health_check=health, tls=tls))

    def health_check(self, raw: object, prefix: str) -> HealthCheckSpec | None:
        table = self.table(raw, prefix)
        if table is None:
            return None
        self.keys(table, _HEALTH_CHECK_KEYS, prefix)
        path = self.field(HealthCheckSpec, table, prefix, "path")
        if path is not None and (not path.startswith("/") or not _REQUEST_TARGET_RE.fullmatch(path)):
            self.add(f"{prefix}.path", f"must start with '/' and hold only printable ASCII without "
                                       f"spaces, got {path!r}")
            path = None
        interval = self.field(HealthCheckSpec, table, prefix, "interval_s")
        timeout = self.field(HealthCheckSpec, table, prefix, "timeout_s")
        if interval is not None and timeout is not None and timeout >= interval:
            self.add(f"{prefix}.timeout_s", f"must be shorter than interval_s ({interval:g}), "
                                            f"got {timeout:g}")
            timeout = None
        matcher = None
        text = self.get(table, prefix, "matcher", _MATCHER)
        if text is not None:
            try:
                matcher = parse_matcher(text)
            except _Invalid as exc:
                self.add(f"{prefix}.matcher", str(exc))
        return HealthCheckSpec(**self.fields(HealthCheckSpec, table, prefix, path=path,
                                             interval_s=interval, timeout_s=timeout,
                                             matcher=matcher))

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
        server_name = self.field(UpstreamTLSSpec, table, prefix, "server_name")
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
        self.store_names, self.group_names = stores, groups
        values = self.fields(ListenerSpec, table, prefix, _LISTENER_READERS)
        mode = values.get("mtls")
        if (values.get("mtls_enforcement") == "report" and mode is not None
                and not MTLSMode(mode).verifies):
            self.add(f"{prefix}.mtls_enforcement", f"\"report\" applies to mtls = \"verify\" or "
                                                   f"\"optional\", not {str(mode)!r}")
        return ListenerSpec(**values)

    def listener_name(self, table: dict[str, Any], prefix: str,
                      values: dict[str, Any]) -> str | None:
        if "name" not in table:
            self.add(f"{prefix}.name", "missing required key")
            return None
        return self.name(table["name"], f"{prefix}.name")

    def listener_bind(self, table: dict[str, Any], prefix: str,
                      values: dict[str, Any]) -> str | None:
        values["port"] = None
        text = self.get(table, prefix, "bind", _BIND)
        if text is None:
            return None
        try:
            host, values["port"] = parse_address(text, listen=True)
        except _Invalid as exc:
            self.add(f"{prefix}.bind", str(exc))
            return None
        return host

    def listener_trust_store(self, table: dict[str, Any], prefix: str,
                             values: dict[str, Any]) -> str | None:
        mtls = values["mtls"]
        store: str | None = self.field(ListenerSpec, table, prefix, "trust_store")
        if store is not None:
            self.reference(store, f"{prefix}.trust_store", "trust store", "trust_store",
                           self.store_names)
        elif mtls is not None and mtls.verifies and "trust_store" not in table:
            self.add(f"{prefix}.trust_store", f"required when mtls is {str(mtls)!r}: name a "
                                              f"[trust_store.NAME] to verify clients against")
        return store

    def listener_header_style(self, table: dict[str, Any], prefix: str,
                              values: dict[str, Any]) -> tuple[str, ...] | None:
        styles = self.header_style(table, prefix)
        # max_body_bytes has always been read here, ahead of the other limits: reading it here
        # keeps the problems of a file in the order they always came in
        values["max_body_bytes"] = self.field(ListenerSpec, table, prefix, "max_body_bytes")
        return styles

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
        return self.distinct(value, key, HEADER_STYLES, "header style")

    def alpn(self, table: dict[str, Any], prefix: str) -> tuple[str, ...] | None:
        """The protocols ALPN may choose, in the server's order of preference."""
        if "alpn" not in table:
            return DEFAULT_ALPN
        value = table["alpn"]
        key = f"{prefix}.alpn"
        if not isinstance(value, list):
            self.add(key, f"expected an array of strings (of {_one_of(ALPN_PROTOCOLS)}), got "
                          f"{_type_name(value)}")
            return None
        if not value:
            self.add(key, f"must not be empty; give one or both of: {_one_of(ALPN_PROTOCOLS)}")
            return None
        return self.distinct(value, key, ALPN_PROTOCOLS, "protocol")

    def name_list(self, table: dict[str, Any], name: str, prefix: str, choices: tuple[str, ...],
                  default: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """An array of distinct names out of `choices` (identity_fields, log_fields)."""
        if name not in table:
            return default
        value = table[name]
        key = f"{prefix}.{name}"
        if not isinstance(value, list):
            self.add(key, f"expected an array of strings (of {_one_of(choices)}), got "
                          f"{_type_name(value)}")
            return None
        return self.distinct(value, key, choices, "")

    def distinct(self, items: list[Any], key: str, choices: tuple[str, ...],
                 what: str) -> tuple[str, ...]:
        """The items of an array that are each one of `choices`, in order; a repeat is a problem
        ("duplicate <what> 'x'") at its index, as is anything not a choice."""
        out: list[str] = []
        for index, item in enumerate(items):
            chosen = self.choice_value(item, f"{key}[{index}]", choices)
            if chosen is None:
                continue
            if chosen in out:
                self.add(f"{key}[{index}]", f"duplicate {what + ' ' if what else ''}{chosen!r}")
                continue
            out.append(chosen)
        return tuple(out)

    def signature_key(self, path: Path, key: str) -> bool:
        """A signing key file: only its owner may read it, at least MIN_SIGNATURE_KEY_BYTES."""
        data = self.read(path, key)
        if data is None:
            return False
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            self.add(key, f"cannot access {path}: {_os_reason(exc)}")
            return False
        if mode & 0o077:
            self.add(key, f"{path} may be read by other users (mode {mode & 0o777:04o}); chmod 600 it")
            return False
        if len(data.strip()) < MIN_SIGNATURE_KEY_BYTES:
            self.add(key, f"{path} holds {len(data.strip())} bytes; a signing key needs at least "
                          f"{MIN_SIGNATURE_KEY_BYTES} (e.g. `head -c 32 /dev/urandom | base64`)")
            return False
        return True

    def identity_signature(self, table: dict[str, Any], prefix: str) -> IdentitySignatureSpec | None:
        if "identity_signature" not in table:
            return None
        key = f"{prefix}.identity_signature"
        raw = self.table(table["identity_signature"], key)
        if raw is None:
            return None
        self.keys(raw, _SIGNATURE_KEYS, key)
        if "key_file" not in raw:
            self.add(f"{key}.key_file", "missing required key")
            return None
        key_file = self.path_value(raw["key_file"], f"{key}.key_file")
        ok = key_file is not None and self.signature_key(key_file, f"{key}.key_file")
        previous = None
        if "previous_key_file" in raw:
            previous = self.path_value(raw["previous_key_file"], f"{key}.previous_key_file")
            if previous is not None and not self.signature_key(previous, f"{key}.previous_key_file"):
                previous = None
        header = raw.get("header", DEFAULT_IDENTITY_SIGNATURE_HEADER)
        if not isinstance(header, str) or not _TOKEN_RE.fullmatch(header):
            self.add(f"{key}.header", f"expected a header name (an HTTP token), got {header!r}")
            return None
        if not ok:
            return None
        return IdentitySignatureSpec(key_file, header, previous)  # type: ignore[arg-type]

    def ciphers(self, table: dict[str, Any], prefix: str) -> str | None:
        value: str | None = self.field(ListenerSpec, table, prefix, "ciphers_tls12")
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
            specs.append(CertificateSpec(**self.fields(CertificateSpec, body, entry,
                                                       cert=cert_path, key=key_path,
                                                       names=names)))
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
        priority = self.field(RuleSpec, table, prefix, "priority", position)

        host = self.field(RuleSpec, table, prefix, "host")
        if host is not None:
            host = host.lower()
            if not _RULE_HOST_RE.fullmatch(host):
                self.add(f"{prefix}.host", "a host pattern may hold only letters, digits, '.', "
                                           "'-', '_' and '*' (no port), at most 255 characters")
                host = None

        path = self.field(RuleSpec, table, prefix, "path")
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

        action = self.field(RuleSpec, table, prefix, "action")
        target_group = self.field(RuleSpec, table, prefix, "target_group")
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

        require = self.field(RuleSpec, table, prefix, "require_client_cert")
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
        return RuleSpec(priority=priority, host=host, path=path,
                        action=action, target_group=target_group,
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
        values = self.fields(Redirect, table, prefix, _REDIRECT_READERS)
        if (values["scheme"] in ("#{protocol}", "#{scheme}", "https")
                and values["host"] == DEFAULT_REDIRECT_HOST
                and values["port"] == DEFAULT_REDIRECT_PORT
                and values["path"] == DEFAULT_REDIRECT_PATH
                and values["query"] == DEFAULT_REDIRECT_QUERY):
            # ALB refuses this too: the client would be sent where it already is, forever
            self.add(prefix, "redirects every request to itself; change at least one of "
                             "scheme, host, port, path or query")
        return Redirect(**values)

    def redirect_status(self, table: dict[str, Any], prefix: str,
                        _: dict[str, Any]) -> int | None:
        status: int | None = self.field(Redirect, table, prefix, "status")
        if status is not None and status not in REDIRECT_STATUSES:
            allowed = ", ".join(map(str, REDIRECT_STATUSES))
            self.add(f"{prefix}.status", f"must be one of {allowed}, got {status}")
            return None
        return status

    def redirect_scheme(self, table: dict[str, Any], prefix: str,
                        _: dict[str, Any]) -> str | None:
        scheme: str | None = self.field(Redirect, table, prefix, "scheme")
        if scheme is not None and scheme not in ("http", "https", "#{protocol}", "#{scheme}"):
            self.add(f"{prefix}.scheme", f"expected 'http', 'https' or '#{{protocol}}', "
                                         f"got {scheme!r}")
            return None
        return scheme

    def redirect_host(self, table: dict[str, Any], prefix: str,
                      _: dict[str, Any]) -> str | None:
        host: str | None = self.field(Redirect, table, prefix, "host")
        if host is not None and not self.template(host, f"{prefix}.host", _REDIRECT_HOST_RE,
                                                  "letters, digits, '.', '-' and placeholders"):
            return None
        return host

    def redirect_port(self, table: dict[str, Any], prefix: str,
                      _: dict[str, Any]) -> str | None:
        if "port" not in table:
            return DEFAULT_REDIRECT_PORT
        value = table["port"]
        if isinstance(value, int) and not isinstance(value, bool):
            if 1 <= value <= 65535:
                return str(value)
        elif isinstance(value, str) and (value == "#{port}" or (_PORT_RE.fullmatch(value)
                                                                and 1 <= int(value) <= 65535)):
            return value
        self.add(f"{prefix}.port", f"expected a port from 1 to 65535 or '#{{port}}', "
                                   f"got {value!r}")
        return None

    def redirect_path(self, table: dict[str, Any], prefix: str,
                      _: dict[str, Any]) -> str | None:
        path: str | None = self.field(Redirect, table, prefix, "path")
        if path is None:
            return None
        if not path.startswith("/"):
            self.add(f"{prefix}.path", f"must start with '/', got {path!r}")
            return None
        if not self.template(path, f"{prefix}.path", _REDIRECT_PATH_RE,
                             "printable ASCII without spaces, '?' or '#', and placeholders"):
            return None
        return path

    def redirect_query(self, table: dict[str, Any], prefix: str,
                       _: dict[str, Any]) -> str | None:
        query: str | None = self.field(Redirect, table, prefix, "query")
        if query is None:
            return None
        if query.startswith("?"):
            self.add(f"{prefix}.query", "give the query without its leading '?'")
            return None
        if not self.template(query, f"{prefix}.query", _REDIRECT_QUERY_RE,
                             "printable ASCII without spaces or '#', and placeholders"):
            return None
        return query

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
        return FixedResponse(**self.fields(FixedResponse, table, prefix, _FIXED_RESPONSE_READERS))

    def fixed_content_type(self, table: dict[str, Any], prefix: str,
                           _: dict[str, Any]) -> str | None:
        value: str | None = self.field(FixedResponse, table, prefix, "content_type")
        if value is not None and not _CONTENT_TYPE_RE.fullmatch(value):
            # It becomes a header value verbatim, so nothing that could end or split the line.
            self.add(f"{prefix}.content_type", "must be printable ASCII without line breaks "
                                               "or surrounding spaces")
            return None
        return value

    def fixed_body(self, table: dict[str, Any], prefix: str,
                   _: dict[str, Any]) -> bytes | None:
        text: str | None = self.get(table, prefix, "body", _BODY_TEXT)
        if text is None:
            return None
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            self.add(f"{prefix}.body", "cannot be encoded as UTF-8")
            return None
        if len(data) > MAX_FIXED_RESPONSE_BODY_BYTES:
            self.add(f"{prefix}.body", f"at most {MAX_FIXED_RESPONSE_BODY_BYTES} bytes "
                                       f"(UTF-8), got {len(data)}")
            return None
        return data


_CHECKS: dict[Kind, Callable[[_Reader, object, str, Key], Any]] = {
    Kind.STRING: _Reader.string_key, Kind.CHOICE: _Reader.choice_key,
    Kind.BOOLEAN: _Reader.boolean_key, Kind.INTEGER: _Reader.integer_key,
    Kind.SECONDS: _Reader.seconds_key,
}


_GATEWAY_READERS: dict[str, _Explicit] = {
    "workers": lambda r, table, prefix, values: r.workers(table),
    "access_log": lambda r, table, prefix, values: r.log_target(table, "access_log", off_ok=True),
    "connection_log": lambda r, table, prefix, values: r.log_target(table, "connection_log",
                                                                    off_ok=True),
    "error_log": lambda r, table, prefix, values: r.log_target(table, "error_log", off_ok=False),
    "state_dir": lambda r, table, prefix, values: r.state_dir(table),
}
_LISTENER_READERS: dict[str, _Explicit] = {
    "name": _Reader.listener_name,
    "host": _Reader.listener_bind,
    "certificates": lambda r, table, prefix, values: r.certificates(table, prefix),
    "trust_store": _Reader.listener_trust_store,
    "header_style": _Reader.listener_header_style,
    "ciphers_tls12": lambda r, table, prefix, values: r.ciphers(table, prefix),
    "alpn": lambda r, table, prefix, values: r.alpn(table, prefix),
    "identity_signature": lambda r, table, prefix, values: r.identity_signature(table, prefix),
    "identity_fields": lambda r, table, prefix, values: r.name_list(
        table, "identity_fields", prefix, IDENTITY_FIELDS, ()),
    "log_fields": lambda r, table, prefix, values: r.name_list(
        table, "log_fields", prefix, ACCESS_LOG_FIELDS, None),
    "rules": lambda r, table, prefix, values: r.rules(table, prefix, r.group_names,
                                                      values["mtls"]),
    "strip_request_headers": lambda r, table, prefix, values: r.header_globs(
        table, "strip_request_headers", prefix),
}
_REDIRECT_READERS: dict[str, _Explicit] = {
    "status": _Reader.redirect_status, "scheme": _Reader.redirect_scheme,
    "host": _Reader.redirect_host, "port": _Reader.redirect_port, "path": _Reader.redirect_path,
    "query": _Reader.redirect_query,
}
_FIXED_RESPONSE_READERS: dict[str, _Explicit] = {
    "content_type": _Reader.fixed_content_type, "body": _Reader.fixed_body,
}


def _plan(cls: type) -> None:
    plan = tuple((name, "" if key.kind is Kind.PART else key.toml or name, key, key.file_default,
                  _CHECKS.get(key.kind))
                 for name, key in keys_of(cls))
    _PLANS[cls] = plan
    _STEPS[cls] = {step[0]: step for step in plan}


for _cls in (GatewaySpec, AdminSpec, ListenerSpec, CertificateSpec, RuleSpec, Redirect,
             IdentitySignatureSpec,
             ClientAllow, FixedResponse, TrustStoreSpec, TargetGroupSpec, HealthCheckSpec,
             UpstreamTLSSpec):
    _plan(_cls)


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
