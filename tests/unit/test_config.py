"""gateway.config: TOML -> frozen dataclasses, and every problem reported at once with its key path.

The certificates, keys and CRLs are made here with `cryptography` (a root CA, an intermediate, EC
and RSA server certificates, a foreign CA, CRLs), written into a temporary directory next to the
configuration under test. No sockets.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import pathlib
import shutil
import tomllib
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.config import (
    CertificateSpec, Config, FixedResponse, GatewaySpec, ListenerSpec, RuleSpec, TargetGroupSpec,
    TrustStoreSpec, load, loads,
)
from gateway.errors import ConfigError, Problem

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "gateway.example.toml"
NOW = dt.datetime.now(dt.timezone.utc)


# --- a tiny local PKI -----------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def _rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(cn, key, *, issuer=None, issuer_key=None, ca=False, dns=(), serial=None):
    issuer_name = issuer.subject if issuer is not None else _name(cn)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn)).issuer_name(issuer_name)
               .public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(days=1))
               .not_valid_after(NOW + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _crl(issuer, issuer_key, *, next_update=NOW + dt.timedelta(days=7), revoked=()):
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.subject)
               .last_update(min(NOW, next_update) - dt.timedelta(days=1))
               .next_update(next_update))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(NOW - dt.timedelta(hours=1)).build())
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def _key_pem(key, password: bytes | None = None, *, fmt=serialization.PrivateFormat.PKCS8):
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


def _make_pki() -> dict[str, bytes]:
    root_key, inter_key, server_key, rsa_key = _ec_key(), _ec_key(), _ec_key(), _rsa_key()
    root = _cert("Test Root CA", root_key, ca=True)
    inter = _cert("Test Intermediate CA", inter_key, issuer=root, issuer_key=root_key, ca=True)
    server = _cert("server", server_key, issuer=inter, issuer_key=inter_key,
                   dns=["Gateway.Example.com", "*.example.com"])
    rsa_server = _cert("rsa.example.com", rsa_key, issuer=inter, issuer_key=inter_key)
    other_key = _ec_key()
    other_ca = _cert("Other CA", other_key, ca=True)
    impostor_key = _ec_key()  # signs a CRL under the root's name
    return {
        "ca-bundle.pem": _pem(root) + _pem(inter),
        "root.pem": _pem(root),
        "server.pem": _pem(server) + _pem(inter),
        "server.key": _key_pem(server_key),
        "server.der": server.public_bytes(serialization.Encoding.DER),
        "server.key.der": server_key.private_bytes(serialization.Encoding.DER,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()),
        "rsa.pem": _pem(rsa_server),
        "rsa.key": _key_pem(rsa_key, fmt=serialization.PrivateFormat.TraditionalOpenSSL),
        "other-ec.key": _key_pem(_ec_key()),
        "other-rsa.key": _key_pem(_rsa_key()),
        "encrypted.key": _key_pem(server_key, b"secret"),
        "encrypted-traditional.key": _key_pem(
            server_key, b"secret", fmt=serialization.PrivateFormat.TraditionalOpenSSL),
        "root.crl.pem": _pem(_crl(root, root_key, revoked=[0x1234])),
        "inter.crl.der": _crl(inter, inter_key).public_bytes(serialization.Encoding.DER),
        "expired.crl.pem": _pem(_crl(root, root_key, next_update=dt.datetime(
            2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))),
        "foreign.crl.pem": _pem(_crl(other_ca, other_key)),
        "impostor.crl.pem": _pem(_crl(root, impostor_key)),
        "two.crl.pem": _pem(_crl(root, root_key)) + _pem(_crl(root, root_key)),
        "mixed-bundle.pem": _pem(root) + _pem(server),
        "garbage.pem": b"this is not a certificate\n",
        "empty.pem": b"",
    }


@pytest.fixture(scope="module")
def pki_files() -> dict[str, bytes]:
    return _make_pki()


@pytest.fixture()
def workdir(tmp_path: Path, pki_files: dict[str, bytes]) -> Path:
    for name, data in pki_files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "logs").mkdir()
    (tmp_path / "a-directory").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory, pki_files: dict[str, bytes]) -> Path:
    """Like `workdir`, for hypothesis tests (which cannot take function-scoped fixtures)."""
    path = tmp_path_factory.mktemp("pki")
    for name, data in pki_files.items():
        (path / name).write_bytes(data)
    return path


# --- writing TOML (the stdlib only reads it) ------------------------------------------------------

def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(type(value))


def dumps(doc: dict) -> str:
    return "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in doc.items())


def test_dumps_round_trips():
    doc = {"a": [1, 2.5, "x\"\\\n\x7f", {"b": True}], "c": {"d": float("inf")}}
    assert tomllib.loads(dumps(doc)) == doc


# --- helpers --------------------------------------------------------------------------------------

def minimal() -> dict:
    return {"listener": [{"name": "public", "bind": "0.0.0.0:8443",
                          "certificates": [{"cert": "server.pem", "key": "server.key"}]}]}


def full() -> dict:
    return {
        "gateway": {"workers": 2, "native": "off", "access_log": "logs/access.log",
                    "connection_log": "off", "error_log": "-", "log_level": "debug"},
        "listener": [
            {"name": "public", "bind": "0.0.0.0:8443",
             "certificates": [{"cert": "server.pem", "key": "server.key"},
                              {"cert": "rsa.pem", "key": "rsa.key"}],
             "mtls": "verify", "trust_store": "main", "header_style": ["rfc9440", "alb"],
             "ignore_client_certificate_expiry": True, "advertise_ca_names": True,
             "max_chain_depth": 3, "tls_min_version": "1.3", "ciphers_tls12": "ECDHE+AESGCM",
             "session_tickets": False, "session_timeout_s": 600, "handshake_timeout_s": 5,
             "header_timeout_s": 2.5, "idle_timeout_s": 30.0, "max_request_line_bytes": 4096,
             "max_header_bytes": 16384, "max_header_count": 50, "max_body_bytes": 1048576,
             "max_client_cert_chain_bytes": 32768,
             "rule": [
                 {"priority": 20, "path": "/api/*", "action": "forward", "target_group": "app"},
                 {"priority": 10, "host": "*.Example.COM", "action": "fixed-response",
                  "fixed_response": {"status": 503, "content_type": "application/json",
                                     "body": "{\"down\": true}"}},
             ]},
            {"name": "internal", "bind": "[::1]:9443", "mtls": "passthrough",
             "certificates": [{"cert": "server.pem", "key": "server.key"}]},
        ],
        "trust_store": {"main": {"ca_bundle": "ca-bundle.pem",
                                 "crls": ["root.crl.pem", "inter.crl.der"],
                                 "deny_serials": ["0A:1B:2C", 4660, "0xff"]}},
        "target_group": {"app": {"targets": ["127.0.0.1:9000", "[::1]:9001",
                                             "Backend.Internal:80"],
                                 "connect_timeout_s": 1, "read_timeout_s": 30.0,
                                 "max_idle_per_target": 0}},
    }


def load_doc(directory: Path, doc: dict, name: str = "gateway.toml") -> Config:
    path = directory / name
    path.write_text(dumps(doc))
    return load(path)


def problems_of(directory: Path, doc: dict | str, name: str = "gateway.toml") -> list[Problem]:
    path = directory / name
    path.write_text(doc if isinstance(doc, str) else dumps(doc))
    with pytest.raises(ConfigError) as info:
        load(path)
    found = info.value.problems
    assert found, "ConfigError without problems"
    assert all(p.file == str(path) for p in found), found
    return found


def only_problem(directory: Path, doc: dict | str) -> Problem:
    found = problems_of(directory, doc)
    assert len(found) == 1, found
    return found[0]


# --- a valid configuration ------------------------------------------------------------------------

def test_full_config_loads_with_the_right_values(workdir: Path):
    cfg = load_doc(workdir, full())
    assert cfg.source == workdir / "gateway.toml"
    assert cfg.gateway == GatewaySpec(workers=2, native="off",
                                      access_log=str(workdir / "logs" / "access.log"),
                                      connection_log="off", error_log="-", log_level="debug")
    public, internal = cfg.listeners
    assert (public.name, public.host, public.port) == ("public", "0.0.0.0", 8443)
    assert public.certificates == (
        CertificateSpec(cert=workdir / "server.pem", key=workdir / "server.key",
                        names=("gateway.example.com", "*.example.com")),
        CertificateSpec(cert=workdir / "rsa.pem", key=workdir / "rsa.key",
                        names=("rsa.example.com",)),
    )
    assert public.mtls == "verify" and public.trust_store == "main"
    assert public.header_style == ("rfc9440", "alb")
    assert public.ignore_client_certificate_expiry is True
    assert public.advertise_ca_names is True
    assert public.max_chain_depth == 3
    assert public.tls_min_version == "1.3"
    assert public.ciphers_tls12 == "ECDHE+AESGCM"
    assert public.session_tickets is False
    assert public.session_timeout_s == 600
    assert public.handshake_timeout_s == 5.0 and isinstance(public.handshake_timeout_s, float)
    assert (public.header_timeout_s, public.idle_timeout_s) == (2.5, 30.0)
    assert (public.max_request_line_bytes, public.max_header_bytes,
            public.max_header_count) == (4096, 16384, 50)
    assert public.max_body_bytes == 1048576
    assert public.max_client_cert_chain_bytes == 32768
    assert public.rules == (
        RuleSpec(priority=10, host="*.example.com", path=None, action="fixed-response",
                 target_group=None,
                 fixed_response=FixedResponse(503, "application/json", b'{"down": true}')),
        RuleSpec(priority=20, host=None, path="/api/*", action="forward", target_group="app",
                 fixed_response=None),
    )
    assert (internal.host, internal.port, internal.mtls) == ("::1", 9443, "passthrough")
    assert internal.trust_store is None and internal.rules == ()

    assert isinstance(cfg.trust_stores, MappingProxyType)
    assert isinstance(cfg.target_groups, MappingProxyType)
    assert cfg.trust_stores["main"] == TrustStoreSpec(
        name="main", ca_bundle=workdir / "ca-bundle.pem",
        crls=(workdir / "root.crl.pem", workdir / "inter.crl.der"),
        deny_serials=frozenset({0x0A1B2C, 4660, 255}))
    assert cfg.target_groups["app"] == TargetGroupSpec(
        name="app", targets=(("127.0.0.1", 9000), ("::1", 9001), ("backend.internal", 80)),
        connect_timeout_s=1.0, read_timeout_s=30.0, max_idle_per_target=0)


def test_defaults_are_the_named_constants(workdir: Path):
    cfg = load_doc(workdir, minimal())
    assert cfg.gateway == GatewaySpec(
        workers=config.DEFAULT_WORKERS, native=config.DEFAULT_NATIVE,
        access_log=config.DEFAULT_ACCESS_LOG, connection_log=config.DEFAULT_CONNECTION_LOG,
        error_log=config.DEFAULT_ERROR_LOG, log_level=config.DEFAULT_LOG_LEVEL)
    (listener,) = cfg.listeners
    assert listener.mtls == config.DEFAULT_MTLS == "off"
    assert listener.trust_store is None
    assert listener.header_style == config.DEFAULT_HEADER_STYLE == ("alb",)
    assert listener.ignore_client_certificate_expiry is False
    assert listener.advertise_ca_names is False
    assert listener.max_chain_depth == config.DEFAULT_MAX_CHAIN_DEPTH == 4
    assert listener.tls_min_version == config.DEFAULT_TLS_MIN_VERSION == "1.2"
    assert listener.ciphers_tls12 == config.DEFAULT_CIPHERS_TLS12 == "ECDHE+AESGCM:ECDHE+CHACHA20"
    assert listener.session_tickets is True
    assert listener.session_timeout_s == config.DEFAULT_SESSION_TIMEOUT_S == 300
    assert listener.handshake_timeout_s == config.DEFAULT_HANDSHAKE_TIMEOUT_S == 10.0
    assert listener.header_timeout_s == config.DEFAULT_HEADER_TIMEOUT_S == 10.0
    assert listener.idle_timeout_s == config.DEFAULT_IDLE_TIMEOUT_S == 60.0
    assert listener.max_request_line_bytes == config.DEFAULT_MAX_REQUEST_LINE_BYTES == 8192
    assert listener.max_header_bytes == config.DEFAULT_MAX_HEADER_BYTES == 32768
    assert listener.max_header_count == config.DEFAULT_MAX_HEADER_COUNT == 100
    assert listener.max_body_bytes is None
    assert listener.max_client_cert_chain_bytes == config.DEFAULT_MAX_CLIENT_CERT_CHAIN_BYTES
    assert listener.max_client_cert_chain_bytes == 65536
    assert listener.rules == ()
    assert dict(cfg.trust_stores) == {} and dict(cfg.target_groups) == {}
    # The dataclasses carry the same defaults for callers that build them by hand.
    by_hand = ListenerSpec(name="public", host="0.0.0.0", port=8443,
                           certificates=listener.certificates)
    assert by_hand == listener


def test_target_group_defaults(workdir: Path):
    doc = minimal()
    doc["target_group"] = {"app": {"targets": ["127.0.0.1:9000"]}}
    group = load_doc(workdir, doc).target_groups["app"]
    assert group.connect_timeout_s == config.DEFAULT_CONNECT_TIMEOUT_S == 5.0
    assert group.read_timeout_s == config.DEFAULT_READ_TIMEOUT_S == 60.0
    assert group.max_idle_per_target == config.DEFAULT_MAX_IDLE_PER_TARGET == 32


def test_new_listener_rule_and_group_defaults(workdir: Path):
    doc = minimal()
    doc["target_group"] = {"app": {"targets": ["127.0.0.1:9000"]}}
    doc["listener"][0]["rule"] = [{"action": "forward", "target_group": "app"}]
    cfg = load_doc(workdir, doc)
    (listener,) = cfg.listeners
    assert listener.body_timeout_s == config.DEFAULT_BODY_TIMEOUT_S == 30.0
    assert listener.max_requests_per_connection == config.DEFAULT_MAX_REQUESTS_PER_CONNECTION == 1000
    assert listener.max_connections_per_worker == config.DEFAULT_MAX_CONNECTIONS_PER_WORKER
    (rule,) = listener.rules
    assert (rule.methods, rule.headers, rule.redirect, rule.require_client_cert, rule.allow,
            rule.allow_upgrade) == ((), (), None, False, None, ())
    group = cfg.target_groups["app"]
    assert group.load_balancing == config.DEFAULT_LOAD_BALANCING == "round_robin"
    assert group.idle_timeout_s == config.DEFAULT_POOL_IDLE_TIMEOUT_S
    assert group.ejection_failures == config.DEFAULT_EJECTION_FAILURES == 5
    assert group.ejection_duration_s == config.DEFAULT_EJECTION_DURATION_S == 30.0
    assert group.health_check is None and group.tls is None


def test_new_rule_and_group_keys_load(workdir: Path):
    doc = full()
    doc["listener"][0]["rule"] = [
        {"priority": 1, "path": "/ws", "methods": ["GET"], "headers": {"X-Env": "prod",
                                                                       "Accept": ["a*", "b"]},
         "allow_upgrade": ["WebSocket"], "action": "forward", "target_group": "app",
         "allow": {"subject": ["CN=alice,O=Example"], "san_dns": ["*.Example.com"],
                   "san_uri": ["spiffe://x/*"], "issuer": ["CN=CA*"]}},
        {"priority": 2, "path": "/old/*", "action": "redirect", "require_client_cert": True,
         "redirect": {"status": 302, "host": "new.#{host}", "port": 8443, "query": ""}},
    ]
    doc["target_group"]["app"].update({
        "load_balancing": "least_outstanding_requests", "idle_timeout_s": 5,
        "ejection_failures": 0, "ejection_duration_s": 2,
        "health_check": {"path": "/healthz?deep=1", "interval_s": 2, "timeout_s": 1,
                         "healthy_threshold": 4, "unhealthy_threshold": 1,
                         "matcher": "200,202-204"},
        "tls": {"ca_bundle": "ca-bundle.pem", "cert": "server.pem", "key": "server.key",
                "server_name": "Backend.Internal"}})
    cfg = load_doc(workdir, doc)
    ws, old = cfg.listeners[0].rules
    assert ws.methods == ("GET",)
    assert ws.headers == (("x-env", ("prod",)), ("accept", ("a*", "b")))
    assert ws.allow_upgrade == ("websocket",)
    assert ws.require_client_cert is True
    assert ws.allow == config.ClientAllow(subject=("CN=alice,O=Example",), issuer=("CN=CA*",),
                                          san_dns=("*.example.com",), san_uri=("spiffe://x/*",))
    assert old.redirect == config.Redirect(status=302, scheme="#{protocol}", host="new.#{host}",
                                           port="8443", path="/#{path}", query="")
    assert old.require_client_cert is True and old.allow is None
    group = cfg.target_groups["app"]
    assert group.load_balancing == "least_outstanding_requests"
    assert (group.idle_timeout_s, group.ejection_failures, group.ejection_duration_s) == (5.0, 0, 2.0)
    assert group.health_check == config.HealthCheckSpec(
        path="/healthz?deep=1", interval_s=2.0, timeout_s=1.0, healthy_threshold=4,
        unhealthy_threshold=1, matcher=((200, 200), (202, 204)))
    assert group.tls == config.UpstreamTLSSpec(
        ca_bundle=workdir / "ca-bundle.pem", cert=workdir / "server.pem",
        key=workdir / "server.key", server_name="backend.internal")


def test_health_check_table_defaults(workdir: Path):
    doc = minimal()
    doc["target_group"] = {"app": {"targets": ["127.0.0.1:9000"], "health_check": {}, "tls": {}}}
    group = load_doc(workdir, doc).target_groups["app"]
    assert group.health_check == config.HealthCheckSpec(
        path=config.DEFAULT_HEALTH_CHECK_PATH, interval_s=config.DEFAULT_HEALTH_CHECK_INTERVAL_S,
        timeout_s=config.DEFAULT_HEALTH_CHECK_TIMEOUT_S,
        healthy_threshold=config.DEFAULT_HEALTHY_THRESHOLD,
        unhealthy_threshold=config.DEFAULT_UNHEALTHY_THRESHOLD,
        matcher=config.parse_matcher(config.DEFAULT_HEALTH_CHECK_MATCHER))
    assert group.tls == config.UpstreamTLSSpec()       # system trust store, the target's host


@pytest.mark.parametrize("text,ranges", [
    ("200", ((200, 200),)), ("200-399", ((200, 399),)), ("200, 202,300-302", (
        (200, 200), (202, 202), (300, 302))),
])
def test_parse_matcher(text, ranges):
    assert config.parse_matcher(text) == ranges


@pytest.mark.parametrize("text", ["", "2xx", "200-", "600", "99", "300-200", "200;201"])
def test_parse_matcher_rejects(text):
    with pytest.raises(ValueError):
        config.parse_matcher(text)


def test_dataclasses_are_frozen_with_slots_and_tuples(workdir: Path):
    cfg = load_doc(workdir, full())
    for obj in (cfg, cfg.gateway, cfg.listeners[0], cfg.listeners[0].certificates[0],
                cfg.listeners[0].rules[0], cfg.listeners[0].rules[0].fixed_response,
                cfg.trust_stores["main"], cfg.target_groups["app"]):
        assert dataclasses.is_dataclass(obj)
        assert not hasattr(obj, "__dict__"), type(obj)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(obj)[0].name, None)
    listener = cfg.listeners[0]
    assert isinstance(cfg.listeners, tuple)
    assert isinstance(listener.certificates, tuple) and isinstance(listener.rules, tuple)
    assert isinstance(listener.header_style, tuple)
    assert isinstance(cfg.trust_stores["main"].crls, tuple)
    assert isinstance(cfg.trust_stores["main"].deny_serials, frozenset)
    with pytest.raises(TypeError):
        cfg.trust_stores["x"] = None  # type: ignore[index]


def test_workers_auto_is_the_cpu_count(workdir: Path):
    doc = minimal()
    doc["gateway"] = {"workers": "auto"}
    assert load_doc(workdir, doc).gateway.workers == (os.cpu_count() or 1)


# --- paths ----------------------------------------------------------------------------------------

def test_relative_paths_resolve_against_the_config_file(workdir: Path, tmp_path_factory,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # not where the files are
    sub = workdir / "conf"
    sub.mkdir()
    doc = minimal()
    doc["listener"][0]["certificates"] = [{"cert": "../server.pem",
                                           "key": str(workdir / "server.key")}]
    doc["gateway"] = {"access_log": "access.log"}
    cfg = load_doc(sub, doc)
    spec = cfg.listeners[0].certificates[0]
    assert spec.cert == sub / ".." / "server.pem" and spec.cert.is_absolute()
    assert spec.key == workdir / "server.key"
    assert cfg.gateway.access_log == str(sub / "access.log")


def test_loads_resolves_against_base_dir_or_cwd(workdir: Path, monkeypatch):
    text = dumps(minimal())
    cfg = loads(text, base_dir=workdir)
    assert cfg.source is None
    assert cfg.listeners[0].certificates[0].cert == workdir / "server.pem"
    monkeypatch.chdir(workdir)
    assert loads(text).listeners[0].certificates[0].key == workdir / "server.key"


def test_loads_names_its_source_in_problems(workdir: Path):
    with pytest.raises(ConfigError) as info:
        loads("[gateway]\nworkers = 0\n", source="inline.toml", base_dir=workdir)
    assert {p.file for p in info.value.problems} == {"inline.toml"}
    with pytest.raises(ConfigError) as info:
        loads("[gateway]\nworkers = 0\n", base_dir=workdir)
    assert {p.file for p in info.value.problems} == {"<string>"}


def test_config_file_itself_missing_or_unreadable(workdir: Path, monkeypatch):
    with pytest.raises(ConfigError) as info:
        load(workdir / "nope.toml")
    assert info.value.problems == [Problem(str(workdir / "nope.toml"), "<file>",
                                           "file not found")]
    with pytest.raises(ConfigError) as info:
        load(workdir / "a-directory")
    assert info.value.problems[0].message == "not a regular file"
    bad = workdir / "latin1.toml"
    bad.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load(bad)
    assert "not UTF-8" in info.value.problems[0].message


# --- TOML syntax ----------------------------------------------------------------------------------

def test_toml_syntax_error_is_one_problem_with_line_and_column(workdir: Path):
    problem = only_problem(workdir, "[gateway]\nworkers = 1\n[[listener]\nname = 'x'\n")
    assert problem.key == "line 3, column 11"
    assert problem.message.startswith("invalid TOML: ")


def test_toml_syntax_error_at_end_of_document(workdir: Path):
    problem = only_problem(workdir, "a = ")
    assert problem.key == "end of document"


def test_deeply_nested_toml_is_a_problem_not_a_crash(workdir: Path):
    with pytest.raises(ConfigError) as info:
        loads("a = " + "[" * 5000 + "]" * 5000, base_dir=workdir)
    assert "nesting too deep" in str(info.value)


def test_byte_order_mark_is_accepted(workdir: Path):
    assert loads("\ufeff" + dumps(minimal()), base_dir=workdir).listeners[0].name == "public"


# --- problems, one by one -------------------------------------------------------------------------

def _set(doc: dict, path: str, value) -> dict:
    """Set (or with value=DELETE, remove) `a.b[0].c` in doc."""
    parts: list[str | int] = []
    for part in path.split("."):
        while "[" in part:
            head, _, rest = part.partition("[")
            if head:
                parts.append(head)
            index, _, part = rest.partition("]")
            parts.append(int(index))
        if part:
            parts.append(part)
    node = doc
    for part in parts[:-1]:
        if isinstance(part, str) and part not in node:
            node[part] = {}
        node = node[part]
    if value is DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return doc


DELETE = object()

# (change, expected key, a piece of the expected message), each on top of full()
CASES = [
    # wrong types
    ("gateway.workers", "many", "gateway.workers", "expected an integer or 'auto', got string"),
    ("gateway.workers", True, "gateway.workers", "expected an integer or 'auto', got boolean"),
    ("listener[0].max_header_count", "100", "listener[0].max_header_count",
     "expected an integer, got string"),
    ("listener[0].max_chain_depth", True, "listener[0].max_chain_depth",
     "expected an integer, got boolean"),
    ("listener[0].session_tickets", 1, "listener[0].session_tickets",
     "expected a boolean (true or false), got integer"),
    ("listener[0].handshake_timeout_s", "10s", "listener[0].handshake_timeout_s",
     "expected a number, got string"),
    ("listener[0].bind", 8443, "listener[0].bind", "expected a string, got integer"),
    ("listener[0].certificates", {"cert": "server.pem"}, "listener[0].certificates",
     "expected an array, got table"),
    ("listener[0].certificates[0]", "server.pem", "listener[0].certificates[0]",
     "expected a table, got string"),
    ("gateway", [1], "gateway", "expected a table, got array"),
    ("listener", {"name": "x"}, "listener",
     "expected an array of tables ([[listener]]), got table"),
    ("trust_store.main.deny_serials", "0A", "trust_store.main.deny_serials",
     "expected an array, got string"),
    ("trust_store.main.crls[0]", 5, "trust_store.main.crls[0]",
     "expected a string (a file path), got integer"),
    ("target_group.app.targets[1]", 9001, "target_group.app.targets[1]",
     "expected a string (host:port), got integer"),
    ("listener[0].tls_min_version", 1.2, "listener[0].tls_min_version",
     "expected a string, got float; write it as a string: \"1.2\""),
    # out of range
    ("gateway.workers", 0, "gateway.workers", "must be >= 1, got 0"),
    ("listener[0].max_chain_depth", 11, "listener[0].max_chain_depth",
     "must be from 1 to 10, got 11"),
    ("listener[0].max_chain_depth", 0, "listener[0].max_chain_depth",
     "must be from 1 to 10, got 0"),
    ("listener[0].session_timeout_s", 0, "listener[0].session_timeout_s",
     "must be from 1 to 86400, got 0"),
    ("listener[0].session_timeout_s", 86401, "listener[0].session_timeout_s",
     "must be from 1 to 86400, got 86401"),
    ("listener[0].handshake_timeout_s", 0, "listener[0].handshake_timeout_s",
     "must be a finite number > 0, got 0"),
    ("listener[0].header_timeout_s", -1.5, "listener[0].header_timeout_s",
     "must be a finite number > 0, got -1.5"),
    ("listener[0].idle_timeout_s", float("nan"), "listener[0].idle_timeout_s",
     "must be a finite number > 0, got nan"),
    ("target_group.app.read_timeout_s", float("inf"), "target_group.app.read_timeout_s",
     "must be a finite number > 0, got inf"),
    ("listener[0].max_body_bytes", -1, "listener[0].max_body_bytes", "must be >= 0, got -1"),
    ("listener[0].max_header_bytes", 0, "listener[0].max_header_bytes", "must be >= 1, got 0"),
    ("listener[0].max_client_cert_chain_bytes", 2**24, "listener[0].max_client_cert_chain_bytes",
     "must be from 1 to 16777215"),
    ("target_group.app.max_idle_per_target", -1, "target_group.app.max_idle_per_target",
     "must be >= 0, got -1"),
    ("listener[0].rule[0].priority", 0, "listener[0].rule[0].priority",
     "must be from 1 to 50000, got 0"),
    ("listener[0].rule[1].fixed_response.status", 600, "listener[0].rule[1].fixed_response.status",
     "must be from 200 to 599, got 600"),
    ("listener[0].rule[1].fixed_response.status", 199, "listener[0].rule[1].fixed_response.status",
     "must be from 200 to 599, got 199"),
    ("listener[0].rule[1].fixed_response.body", "x" * 1025,
     "listener[0].rule[1].fixed_response.body", "at most 1024 bytes (UTF-8), got 1025"),
    ("listener[0].rule[1].fixed_response.body", "é" * 513,
     "listener[0].rule[1].fixed_response.body", "at most 1024 bytes (UTF-8), got 1026"),
    ("listener[0].rule[1].fixed_response.content_type", "text/plain\r\nX: y",
     "listener[0].rule[1].fixed_response.content_type", "printable ASCII"),
    # missing required keys
    ("listener[0].name", DELETE, "listener[0].name", "missing required key"),
    ("listener[0].bind", DELETE, "listener[0].bind", "missing required key"),
    ("listener[0].certificates", DELETE, "listener[0].certificates", "missing required key"),
    ("listener[0].certificates[1].key", DELETE, "listener[0].certificates[1].key",
     "missing required key"),
    ("trust_store.main.ca_bundle", DELETE, "trust_store.main.ca_bundle", "missing required key"),
    ("target_group.app.targets", DELETE, "target_group.app.targets", "missing required key"),
    ("listener[0].rule[0].action", DELETE, "listener[0].rule[0].action", "missing required key"),
    ("listener[0].rule[0].target_group", DELETE, "listener[0].rule[0].target_group",
     "required when action is 'forward'"),
    ("listener[0].rule[1].fixed_response", DELETE, "listener[0].rule[1].fixed_response",
     "required when action is 'fixed-response'"),
    ("listener[0].rule[1].fixed_response.status", DELETE,
     "listener[0].rule[1].fixed_response.status", "missing required key"),
    ("listener[0].trust_store", DELETE, "listener[0].trust_store",
     "required when mtls is 'verify'"),
    # empty where at least one is needed
    ("listener[0].certificates", [], "listener[0].certificates",
     "at least one certificate is required"),
    ("target_group.app.targets", [], "target_group.app.targets",
     "at least one target is required"),
    ("listener[0].header_style", [], "listener[0].header_style", "must not be empty"),
    ("listener", [], "listener", "at least one [[listener]] is required"),
    # enums
    ("listener[0].mtls", "verfy", "listener[0].mtls",
     "unknown value 'verfy'; expected one of: 'off', 'passthrough', 'verify', 'optional' "
     "(did you mean 'verify'?)"),
    ("gateway.native", "yes", "gateway.native", "expected one of: 'auto', 'on', 'off'"),
    ("gateway.log_level", "warn", "gateway.log_level", "(did you mean 'warning'?)"),
    ("listener[0].tls_min_version", "1.1", "listener[0].tls_min_version",
     "expected one of: '1.2', '1.3'"),
    ("listener[0].header_style", "envoy", "listener[0].header_style",
     "expected one of: 'alb', 'xfcc', 'rfc9440'"),
    ("listener[0].header_style", ["alb", "xfc"], "listener[0].header_style[1]",
     "(did you mean 'xfcc'?)"),
    ("listener[0].header_style", ["alb", "xfcc", "alb"], "listener[0].header_style[2]",
     "duplicate header style 'alb'"),
    ("listener[0].rule[0].action", "redirct", "listener[0].rule[0].action",
     "expected one of: 'forward', 'fixed-response', 'redirect' (did you mean 'redirect'?)"),
    # names and references
    ("listener[0].name", "has space", "listener[0].name", "invalid name 'has space'"),
    ("listener[0].name", "x" * 65, "listener[0].name", "invalid name"),
    ("listener[1].name", "public", "listener[1].name",
     "duplicate listener name 'public' (also listener[0])"),
    ("listener[0].trust_store", "mian", "listener[0].trust_store",
     "unknown trust store 'mian' (did you mean 'main'?) (defined: 'main')"),
    ("listener[0].rule[0].target_group", "web", "listener[0].rule[0].target_group",
     "unknown target group 'web' (defined: 'app')"),
    ("listener[0].rule[1].target_group", "app", "listener[0].rule[1].target_group",
     "only used when action is 'forward'"),
    ("listener[0].rule[0].fixed_response", {"status": 200}, "listener[0].rule[0].fixed_response",
     "only used when action is 'fixed-response'"),
    ("listener[0].ciphers_tls12", "NOT-A-CIPHER", "listener[0].ciphers_tls12",
     "OpenSSL selects no TLS 1.2 cipher from 'NOT-A-CIPHER'"),
    ("listener[0].ciphers_tls12", "", "listener[0].ciphers_tls12", "must not be empty"),
    ("gateway.error_log", "off", "gateway.error_log", "error_log cannot be 'off'"),
    ("gateway.access_log", "no/such/dir/access.log", "gateway.access_log",
     "directory does not exist: "),
    ("gateway.connection_log", "a-directory", "gateway.connection_log", "is a directory: "),
    # rules
    ("listener[0].rule[0].path", "api/*", "listener[0].rule[0].path",
     "a path pattern must start with '/' or be '*', got 'api/*'"),
    ("listener[0].rule[0].path", "/a b", "listener[0].rule[0].path", "cannot hold spaces"),
    ("listener[0].rule[1].host", "example.com:8443", "listener[0].rule[1].host", "(no port)"),
    ("listener[0].rule[1].priority", 20, "listener[0].rule[1].priority",
     "duplicate priority 20 (also rule[0])"),
    ("listener[0].rule[1].priority", DELETE, "listener[0].rule",
     "give every rule of a listener a priority, or none (without one: rule[1])"),
    # unknown keys
    ("listener[0].bnid", "0.0.0.0:1", "listener[0].bnid",
     "unknown key 'bnid' (did you mean 'bind'?)"),
    ("gateway.worker", 1, "gateway.worker", "unknown key 'worker' (did you mean 'workers'?)"),
    ("listeners", [], "listeners", "unknown key 'listeners' (did you mean 'listener'?)"),
    ("trust_store.main.crl", [], "trust_store.main.crl", "(did you mean 'crls'?)"),
    ("target_group.app.zzz", 1, "target_group.app.zzz", "unknown key 'zzz'"),
    ("listener[0].certificates[0].chain", "x", "listener[0].certificates[0].chain",
     "unknown key 'chain'"),
    ("listener[0].rule[0].method", [], "listener[0].rule[0].method",
     "unknown key 'method' (did you mean 'methods'?)"),
    ("listener[0].rule[1].fixed_response.contenttype", "x",
     "listener[0].rule[1].fixed_response.contenttype", "(did you mean 'content_type'?)"),
    # targets
    ("target_group.app.targets", ["127.0.0.1"], "target_group.app.targets[0]", "missing port"),
    ("target_group.app.targets", [":80"], "target_group.app.targets[0]", "missing host"),
    ("target_group.app.targets", ["bad_host!:80"], "target_group.app.targets[0]",
     "host must be an IP address or a DNS name"),
    ("target_group.app.targets", ["a:1", "A:1"], "target_group.app.targets[1]",
     "duplicate target 'A:1' (also targets[0])"),
    # deny serials
    ("trust_store.main.deny_serials", ["xyz"], "trust_store.main.deny_serials[0]",
     "not a hex serial number: 'xyz'"),
    ("trust_store.main.deny_serials", [1, -1], "trust_store.main.deny_serials[1]",
     "cannot be negative"),
    ("trust_store.main.deny_serials", [1.5], "trust_store.main.deny_serials[0]",
     "expected a hex string or an integer, got float"),
    # names of sections
    ("trust_store", {"bad name": {"ca_bundle": "ca-bundle.pem"}, "main": {
        "ca_bundle": "ca-bundle.pem"}}, 'trust_store."bad name"', "invalid name 'bad name'"),
    ("target_group.app", "x", "target_group.app", "expected a table, got string"),
] + [
    # listener limits
    ("listener[0].body_timeout_s", 0, "listener[0].body_timeout_s",
     "must be a finite number > 0, got 0"),
    ("listener[0].max_requests_per_connection", -1, "listener[0].max_requests_per_connection",
     "must be >= 0, got -1"),
    ("listener[0].max_connections_per_worker", 0, "listener[0].max_connections_per_worker",
     "must be >= 1, got 0"),
    # rule conditions
    ("listener[0].rule[0].methods", ["get"], "listener[0].rule[0].methods[0]",
     "methods are case-sensitive; write 'GET'"),
    ("listener[0].rule[0].methods", [], "listener[0].rule[0].methods", "must not be empty"),
    ("listener[0].rule[0].methods", ["GET", "GET"], "listener[0].rule[0].methods[1]",
     "duplicate 'GET'"),
    ("listener[0].rule[0].methods", ["G T"], "listener[0].rule[0].methods[0]",
     "not an HTTP token: 'G T'"),
    ("listener[0].rule[0].methods", "GET", "listener[0].rule[0].methods",
     "expected an array, got string"),
    ("listener[0].rule[0].headers", {"X Bad": "v"}, 'listener[0].rule[0].headers."X Bad"',
     "not a header name"),
    ("listener[0].rule[0].headers", {"X-A": []}, "listener[0].rule[0].headers.X-A",
     "expected a string or a non-empty array of strings, got array"),
    ("listener[0].rule[0].headers", {"X-A": ["ok", 5]}, "listener[0].rule[0].headers.X-A[1]",
     "expected a string, got integer"),
    ("listener[0].rule[0].headers", {"X-A": "a", "x-a": "b"}, "listener[0].rule[0].headers.x-a",
     "is given twice"),
    ("listener[0].rule[0].headers", {"X-A": " padded"}, "listener[0].rule[0].headers.X-A",
     "printable ASCII"),
    ("listener[0].rule[0].headers", {}, "listener[0].rule[0].headers", "must not be empty"),
    ("listener[0].rule[0].allow_upgrade", ["web socket"], "listener[0].rule[0].allow_upgrade[0]",
     "not an HTTP token"),
    ("listener[0].rule[1].allow_upgrade", ["websocket"], "listener[0].rule[1].allow_upgrade",
     "only used when action is 'forward'"),
    ("listener[0].rule[0].redirect", {"status": 301}, "listener[0].rule[0].redirect",
     "only used when action is 'redirect'"),
    # redirects
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect"}, "listener[0].rule[1].redirect",
     "required when action is 'redirect'"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect",
                             "redirect": {"status": 200, "host": "x"}},
     "listener[0].rule[1].redirect.status", "must be one of 301, 302, 303, 307, 308, got 200"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect",
                             "redirect": {"scheme": "ftp", "host": "x"}},
     "listener[0].rule[1].redirect.scheme", "expected 'http', 'https' or '#{protocol}'"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect", "redirect": {"host": "a b"}},
     "listener[0].rule[1].redirect.host", "may hold only letters"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect",
                             "redirect": {"host": "#{hots}.x"}},
     "listener[0].rule[1].redirect.host", "unknown placeholder '#{hots}'"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect", "redirect": {"port": 0}},
     "listener[0].rule[1].redirect.port", "expected a port from 1 to 65535"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect", "redirect": {"path": "x"}},
     "listener[0].rule[1].redirect.path", "must start with '/'"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect",
                             "redirect": {"path": "/a b"}},
     "listener[0].rule[1].redirect.path", "may hold only printable ASCII"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect",
                             "redirect": {"query": "?a=1"}},
     "listener[0].rule[1].redirect.query", "without its leading '?'"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect", "redirect": {}},
     "listener[0].rule[1].redirect", "redirects every request to itself"),
    ("listener[0].rule[1]", {"priority": 10, "action": "redirect",
                             "redirect": {"scheme": "https", "port": "#{port}"}},
     "listener[0].rule[1].redirect", "redirects every request to itself"),
    # client-certificate requirements
    ("listener[1].rule", [{"allow": {"subject": ["CN=x"]}, "action": "fixed-response",
                           "fixed_response": {"status": 200}}], "listener[1].rule[0].allow",
     "needs a listener with mtls 'verify' or 'optional' (passthrough does not verify"),
    ("listener[1].rule", [{"require_client_cert": True, "action": "fixed-response",
                           "fixed_response": {"status": 200}}],
     "listener[1].rule[0].require_client_cert", "needs a listener with mtls"),
    ("listener[0].rule[0].allow", {}, "listener[0].rule[0].allow", "give at least one of"),
    ("listener[0].rule[0].allow", {"subject": []}, "listener[0].rule[0].allow.subject",
     "must not be empty"),
    ("listener[0].rule[0].allow", {"subject": ["x"], "sbject": ["y"]},
     "listener[0].rule[0].allow.sbject", "(did you mean 'subject'?)"),
    ("listener[0].rule[0].allow", {"san_dns": ["a\nb"]}, "listener[0].rule[0].allow.san_dns[0]",
     "cannot hold control characters"),
    ("listener[0].rule[0].require_client_cert", "yes", "listener[0].rule[0].require_client_cert",
     "expected a boolean"),
    # target groups
    ("target_group.app.load_balancing", "random", "target_group.app.load_balancing",
     "expected one of: 'round_robin', 'least_outstanding_requests'"),
    ("target_group.app.idle_timeout_s", 0, "target_group.app.idle_timeout_s",
     "must be a finite number > 0"),
    ("target_group.app.ejection_failures", -1, "target_group.app.ejection_failures",
     "must be >= 0, got -1"),
    ("target_group.app.ejection_duration_s", -1, "target_group.app.ejection_duration_s",
     "must be a finite number > 0"),
    ("target_group.app.health_check", {"path": "health"}, "target_group.app.health_check.path",
     "must start with '/'"),
    ("target_group.app.health_check", {"interval_s": 5, "timeout_s": 5},
     "target_group.app.health_check.timeout_s", "must be shorter than interval_s (5), got 5"),
    ("target_group.app.health_check", {"matcher": "200-"}, "target_group.app.health_check.matcher",
     "expected status codes like '200', '200,202' or '200-399'"),
    ("target_group.app.health_check", {"matcher": "399-200"},
     "target_group.app.health_check.matcher", "low to high"),
    ("target_group.app.health_check", {"healthy_threshold": 11},
     "target_group.app.health_check.healthy_threshold", "must be from 1 to 10, got 11"),
    ("target_group.app.health_check", {"intervals": 1}, "target_group.app.health_check.intervals",
     "(did you mean 'interval_s'?)"),
    ("target_group.app.health_check", True, "target_group.app.health_check",
     "expected a table, got boolean"),
    ("target_group.app.tls", {"ca_bundle": "missing.pem"}, "target_group.app.tls.ca_bundle",
     "file not found"),
    ("target_group.app.tls", {"ca_bundle": "garbage.pem"}, "target_group.app.tls.ca_bundle",
     "no certificate in"),
    ("target_group.app.tls", {"cert": "server.pem"}, "target_group.app.tls.key",
     "give cert and key together"),
    ("target_group.app.tls", {"cert": "server.pem", "key": "other-ec.key"},
     "target_group.app.tls.key", "private key does not match the certificate"),
    ("target_group.app.tls", {"server_name": "not a name"}, "target_group.app.tls.server_name",
     "must be a DNS name"),
    ("target_group.app.tls", "yes", "target_group.app.tls", "expected a table, got string"),
]


@pytest.mark.parametrize("where,value,key,message", CASES,
                         ids=[f"{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_each_problem_is_reported_with_its_key_path(workdir: Path, where, value, key, message):
    doc = _set(full(), where, value)
    found = problems_of(workdir, doc)
    assert [p.key for p in found] == [key], found
    assert message in found[0].message, found[0].message


BAD_BINDS = [
    ("8443", "missing port"),
    ("0.0.0.0", "missing port"),
    ("example.com:8443", "host must be an IP address or 'localhost', got 'example.com'"),
    ("::1:8443", "an IPv6 address goes in brackets"),
    ("0.0.0.0:0", "port must be a number from 1 to 65535, got 0"),
    ("0.0.0.0:65536", "port must be a number from 1 to 65535, got 65536"),
    ("0.0.0.0:", "port must be a number from 1 to 65535"),
    ("0.0.0.0:+80", "port must be a number"),
    ("0.0.0.0:8_0", "port must be a number"),
    ("0.0.0.0:\uff18\uff10", "port must be a number"),
    ("[127.0.0.1]:80", "is not an IPv6 address"),
    ("[::1]", "expected [IPv6]:port"),
    ("01.2.3.4:80", "host must be an IP address"),
    ("", "must not be empty"),
]


@pytest.mark.parametrize("bind,message", BAD_BINDS)
def test_bad_bind_address(workdir: Path, bind: str, message: str):
    problem = only_problem(workdir, _set(minimal(), "listener[0].bind", bind))
    assert problem.key == "listener[0].bind"
    assert message in problem.message


@pytest.mark.parametrize("bind,host,port", [
    (":8443", "", 8443),
    ("[::1]:8443", "::1", 8443),
    ("[0:0::0]:1", "::", 1),
    ("LocalHost:65535", "localhost", 65535),
    ("127.0.0.1:443", "127.0.0.1", 443),
])
def test_good_bind_address(workdir: Path, bind: str, host: str, port: int):
    listener = load_doc(workdir, _set(minimal(), "listener[0].bind", bind)).listeners[0]
    assert (listener.host, listener.port) == (host, port)


def test_duplicate_bind_across_listeners_compares_canonical_addresses(workdir: Path):
    doc = full()
    doc["listener"][0]["bind"] = "[::0]:9443"
    doc["listener"][1]["bind"] = "[::]:9443"
    problem = only_problem(workdir, doc)
    assert problem.key == "listener[1].bind"
    assert problem.message == "address [::]:9443 is already bound by listener[0]"


def test_same_port_on_different_addresses_is_fine(workdir: Path):
    doc = full()
    doc["listener"][1]["bind"] = "127.0.0.1:8443"
    assert len(load_doc(workdir, doc).listeners) == 2


def test_unknown_trust_store_when_none_is_defined(workdir: Path):
    doc = _set(minimal(), "listener[0].mtls", "optional")
    doc["listener"][0]["trust_store"] = "main"
    problem = only_problem(workdir, doc)
    assert problem.key == "listener[0].trust_store"
    assert "none is defined; add a [trust_store.main] table" in problem.message


def test_trust_store_with_mtls_off_or_passthrough_is_allowed(workdir: Path):
    doc = full()
    doc["listener"][1]["trust_store"] = "main"
    assert load_doc(workdir, doc).listeners[1].trust_store == "main"


# --- files ----------------------------------------------------------------------------------------

FILE_CASES = [
    ("listener[0].certificates[1].cert", "missing.pem", "file not found: {dir}/missing.pem"),
    ("listener[0].certificates[1].key", "missing.key", "file not found: {dir}/missing.key"),
    ("listener[0].certificates[0].cert", "nodir/x.pem", "file not found: {dir}/nodir/x.pem"),
    ("listener[0].certificates[0].cert", "server.key/x", "file not found: {dir}/server.key/x"),
    ("listener[0].certificates[0].cert", "a-directory", "not a regular file: {dir}/a-directory"),
    ("listener[0].certificates[0].key", "a-directory", "not a regular file: {dir}/a-directory"),
    ("trust_store.main.ca_bundle", "a-directory", "not a regular file: {dir}/a-directory"),
    ("trust_store.main.crls[1]", "missing.crl", "file not found: {dir}/missing.crl"),
    ("listener[0].certificates[0].cert", "garbage.pem",
     "no certificate in {dir}/garbage.pem (expected PEM '-----BEGIN CERTIFICATE-----')"),
    ("listener[0].certificates[0].cert", "empty.pem", "no certificate in {dir}/empty.pem"),
    ("listener[0].certificates[0].cert", "server.key", "no certificate in {dir}/server.key"),
    ("listener[0].certificates[0].cert", "server.der",
     "{dir}/server.der holds a DER certificate; give it in PEM form"),
    ("listener[0].certificates[0].key", "garbage.pem", "no private key in {dir}/garbage.pem"),
    ("listener[0].certificates[0].key", "server.pem", "no private key in {dir}/server.pem"),
    ("listener[0].certificates[0].key", "server.key.der",
     "{dir}/server.key.der holds a DER private key; give it in PEM form"),
    ("listener[0].certificates[0].key", "encrypted.key",
     "private key is encrypted; give an unencrypted key"),
    ("listener[0].certificates[0].key", "encrypted-traditional.key",
     "private key is encrypted; give an unencrypted key"),
    ("trust_store.main.ca_bundle", "garbage.pem", "no certificate in {dir}/garbage.pem"),
    ("trust_store.main.crls[0]", "garbage.pem", "not a PEM or DER CRL: {dir}/garbage.pem"),
    ("trust_store.main.crls[0]", "server.pem", "no CRL in {dir}/server.pem"),
    ("trust_store.main.crls[0]", "two.crl.pem", "{dir}/two.crl.pem holds 2 CRLs"),
    ("trust_store.main.crls[0]", "expired.crl.pem", "CRL expired at 2020-01-02T03:04:05Z"),
    ("trust_store.main.crls[0]", "foreign.crl.pem",
     "CRL issuer 'CN=Other CA,O=Test' is not a CA in {dir}/ca-bundle.pem"),
    ("trust_store.main.crls[0]", "impostor.crl.pem",
     "CRL signature does not verify with the key of 'CN=Test Root CA,O=Test' in "
     "{dir}/ca-bundle.pem"),
    ("trust_store.main.ca_bundle", "mixed-bundle.pem",
     "certificate 2 in {dir}/mixed-bundle.pem (CN=server,O=Test) is not a CA"),
]


@pytest.mark.parametrize("key,value,message", FILE_CASES,
                         ids=[f"{c[0]}={c[1]}" for c in FILE_CASES])
def test_file_problems(workdir: Path, key: str, value: str, message: str):
    doc = _set(full(), key, value)
    if key == "trust_store.main.ca_bundle":
        doc["trust_store"]["main"]["crls"] = []  # not to be checked against a broken bundle
    found = problems_of(workdir, doc)
    assert [p.key for p in found] == [key], found
    assert message.format(dir=workdir) in found[0].message, found[0].message


def test_crl_problems_against_a_bundle_with_its_own_problem_are_not_doubled(workdir: Path):
    doc = _set(full(), "trust_store.main.ca_bundle", "garbage.pem")
    doc["trust_store"]["main"]["crls"] = ["foreign.crl.pem"]
    assert [p.key for p in problems_of(workdir, doc)] == ["trust_store.main.ca_bundle"]


def test_a_bundle_with_only_the_root_verifies_the_root_crl(workdir: Path):
    doc = _set(full(), "trust_store.main.ca_bundle", "root.pem")
    doc["trust_store"]["main"]["crls"] = ["root.crl.pem"]
    assert load_doc(workdir, doc).trust_stores["main"].ca_bundle == workdir / "root.pem"


def test_unreadable_files(workdir: Path, monkeypatch):
    # The suite may run as root, which chmod cannot lock out, so the denial is simulated.
    denied = {workdir / "server.key", workdir / "ca-bundle.pem"}
    real = pathlib.Path.read_bytes

    def read_bytes(self):
        if self in denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    found = problems_of(workdir, full())
    assert {(p.key, p.message) for p in found} == {
        ("listener[0].certificates[0].key", f"cannot read {workdir}/server.key: permission denied"),
        ("listener[1].certificates[0].key", f"cannot read {workdir}/server.key: permission denied"),
        ("trust_store.main.ca_bundle", f"cannot read {workdir}/ca-bundle.pem: permission denied"),
    }


def test_unreadable_config_file(workdir: Path, monkeypatch):
    path = workdir / "gateway.toml"
    path.write_text(dumps(minimal()))

    def read_bytes(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems == [Problem(str(path), "<file>", "cannot read: permission denied")]


def test_no_key_material_in_any_message(workdir: Path, pki_files):
    doc = full()
    doc["listener"][0]["certificates"] = [
        {"cert": "server.pem", "key": "encrypted.key"},
        {"cert": "rsa.pem", "key": "other-rsa.key"},
        {"cert": "server.key", "key": "server.key"},
    ]
    (workdir / "broken.key").write_bytes(pki_files["server.key"].replace(b"M", b"#", 3))
    doc["listener"][1]["certificates"] = [{"cert": "server.pem", "key": "broken.key"}]
    text = str(ConfigError(problems_of(workdir, doc)))
    for name in ("server.key", "other-rsa.key", "encrypted.key", "broken.key"):
        key_file = (workdir / name).read_bytes().decode()
        body_lines = [line for line in key_file.splitlines()
                      if line and not line.startswith("-----") and ":" not in line]
        assert body_lines
        for line in body_lines:
            assert line not in text
    assert f"cannot parse the private key in {workdir}/broken.key" in text


# --- keys and certificates ------------------------------------------------------------------------

@pytest.mark.parametrize("cert,key", [
    ("server.pem", "other-ec.key"),   # EC certificate, another EC key
    ("rsa.pem", "other-rsa.key"),     # RSA certificate, another RSA key
    ("server.pem", "rsa.key"),        # EC certificate, an RSA key
    ("rsa.pem", "server.key"),        # RSA certificate, an EC key
])
def test_key_that_does_not_match_its_certificate(workdir: Path, cert: str, key: str):
    doc = _set(minimal(), "listener[0].certificates", [{"cert": cert, "key": key}])
    problem = only_problem(workdir, doc)
    assert problem.key == "listener[0].certificates[0].key"
    assert problem.message == f"private key does not match the certificate in {workdir}/{cert}"


def test_matching_keys_in_both_algorithms_and_formats(workdir: Path):
    doc = _set(minimal(), "listener[0].certificates", [
        {"cert": "server.pem", "key": "server.key"},   # EC, PKCS#8
        {"cert": "rsa.pem", "key": "rsa.key"},         # RSA, traditional "RSA PRIVATE KEY"
    ])
    names = [c.names for c in load_doc(workdir, doc).listeners[0].certificates]
    # SAN DNS names lowercased; the CN when there is no SAN.
    assert names == [("gateway.example.com", "*.example.com"), ("rsa.example.com",)]


def test_combined_certificate_and_key_file(workdir: Path, pki_files):
    (workdir / "combined.pem").write_bytes(pki_files["server.key"] + pki_files["server.pem"])
    doc = _set(minimal(), "listener[0].certificates",
               [{"cert": "combined.pem", "key": "combined.pem"}])
    assert load_doc(workdir, doc).listeners[0].certificates[0].names[0] == "gateway.example.com"


def test_missing_cert_still_checks_the_key_file(workdir: Path):
    doc = _set(minimal(), "listener[0].certificates",
               [{"cert": "missing.pem", "key": "encrypted.key"}])
    assert {(p.key, p.message.split(":")[0]) for p in problems_of(workdir, doc)} == {
        ("listener[0].certificates[0].cert", "file not found"),
        ("listener[0].certificates[0].key", "private key is encrypted; give an unencrypted key"),
    }


# --- all at once ----------------------------------------------------------------------------------

def test_five_different_problems_are_reported_at_once(workdir: Path):
    doc = full()
    doc["gateway"]["workers"] = 0                                   # out of range
    doc["listener"][0]["bnid"] = doc["listener"][0].pop("bind")      # unknown key + missing key
    doc["listener"][0]["certificates"][1]["cert"] = "missing.pem"   # missing file
    doc["listener"][0]["rule"][0]["target_group"] = "ap"            # unknown target group
    doc["trust_store"]["main"]["crls"] = ["expired.crl.pem"]        # expired CRL
    found = problems_of(workdir, doc)
    assert [(p.key, p.message) for p in found] == [
        ("gateway.workers", "must be >= 1, got 0"),
        ("trust_store.main.crls[0]", "CRL expired at 2020-01-02T03:04:05Z"),
        ("listener[0].bnid", "unknown key 'bnid' (did you mean 'bind'?)"),
        ("listener[0].bind", "missing required key"),
        ("listener[0].certificates[1].cert", f"file not found: {workdir}/missing.pem"),
        ("listener[0].rule[0].target_group",
         "unknown target group 'ap' (did you mean 'app'?) (defined: 'app')"),
    ]
    text = str(ConfigError(found))
    assert text.splitlines()[0] == f"{workdir}/gateway.toml: gateway.workers: must be >= 1, got 0"


# --- values ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,serial", [
    ("0A1B2C", 0x0A1B2C), ("0a:1b:2c", 0x0A1B2C), ("0x0A:1B:2C", 0x0A1B2C), ("0XFF", 255),
    (" 01 ", 1), (4660, 4660), (0, 0),
    ("00:8F:" + "AB:" * 18 + "CD", int("008F" + "AB" * 18 + "CD", 16)),
])
def test_deny_serial_parsing(value, serial):
    assert config.parse_serial(value) == serial


@pytest.mark.parametrize("value", ["", "0x", ":0A", "0A:", "0A::1B", "0G", "-1", -1, True, 1.0,
                                   "0A 1B"])
def test_deny_serial_rejects(value):
    with pytest.raises(ValueError):
        config.parse_serial(value)


def test_rules_are_ordered_by_priority(workdir: Path):
    doc = minimal()
    doc["target_group"] = {"app": {"targets": ["127.0.0.1:9000"]}}
    doc["listener"][0]["rule"] = [
        {"priority": 30, "path": "/c", "action": "forward", "target_group": "app"},
        {"priority": 5, "path": "/a", "action": "forward", "target_group": "app"},
        {"priority": 50000, "path": "*", "action": "fixed-response",
         "fixed_response": {"status": 404}},
        {"priority": 7, "host": "A.example.com", "action": "forward", "target_group": "app"},
    ]
    rules = load_doc(workdir, doc).listeners[0].rules
    assert [(r.priority, r.path or r.host) for r in rules] == [
        (5, "/a"), (7, "a.example.com"), (30, "/c"), (50000, "*")]
    assert rules[-1].fixed_response == FixedResponse(
        404, config.DEFAULT_FIXED_RESPONSE_CONTENT_TYPE, b"")


def test_rules_without_priority_keep_file_order(workdir: Path):
    doc = minimal()
    doc["listener"][0]["rule"] = [
        {"path": "/z", "action": "fixed-response", "fixed_response": {"status": 200}},
        {"path": "/a", "action": "fixed-response", "fixed_response": {"status": 201}},
    ]
    rules = load_doc(workdir, doc).listeners[0].rules
    assert [(r.priority, r.path) for r in rules] == [(1, "/z"), (2, "/a")]


@pytest.mark.parametrize("style,expected", [
    ("xfcc", ("xfcc",)),
    (["rfc9440"], ("rfc9440",)),
    (["xfcc", "alb", "rfc9440"], ("xfcc", "alb", "rfc9440")),
])
def test_header_style_string_or_list(workdir: Path, style, expected):
    doc = _set(minimal(), "listener[0].header_style", style)
    assert load_doc(workdir, doc).listeners[0].header_style == expected


def test_body_is_utf8_bytes(workdir: Path):
    doc = minimal()
    doc["listener"][0]["rule"] = [{"action": "fixed-response", "fixed_response": {
        "status": 200, "body": "é" * 512}}]
    rule = load_doc(workdir, doc).listeners[0].rules[0]
    assert rule.fixed_response.body == "é".encode() * 512


def test_parse_address_for_targets():
    assert config.parse_address("Backend-1.svc:8080", listen=False) == ("backend-1.svc", 8080)
    assert config.parse_address("[::FFFF:1.2.3.4]:1", listen=False) == ("::ffff:102:304", 1)
    with pytest.raises(ValueError):
        config.parse_address(":80", listen=False)
    with pytest.raises(ValueError):
        config.parse_address("-bad-.example:80", listen=False)


# --- the example file -----------------------------------------------------------------------------

def test_example_config_loads(tmp_path: Path, pki_files):
    """deploy/gateway.example.toml must stay valid: give it the files it names and load it."""
    target = tmp_path / "gateway.toml"
    shutil.copy(EXAMPLE, target)
    raw = tomllib.loads(EXAMPLE.read_text())
    wanted: dict[str, str] = {}
    for listener in raw["listener"]:
        for pair in listener["certificates"]:
            wanted[pair["cert"]] = "server.pem"
            wanted[pair["key"]] = "server.key"
    for store in raw["trust_store"].values():
        wanted[store["ca_bundle"]] = "ca-bundle.pem"
        for crl in store.get("crls", []):
            wanted[crl] = "root.crl.pem"
    for group in raw["target_group"].values():
        tls = group.get("tls", {})
        for key, source in (("ca_bundle", "ca-bundle.pem"), ("cert", "server.pem"),
                            ("key", "server.key")):
            if key in tls:
                wanted[tls[key]] = source
    for relative, source in wanted.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pki_files[source])
    for name in ("access_log", "connection_log", "error_log"):
        value = raw.get("gateway", {}).get(name, "-")
        if value not in ("-", "off"):
            (tmp_path / value).parent.mkdir(parents=True, exist_ok=True)
    cfg = load(target)
    assert cfg.listeners and cfg.trust_stores and cfg.target_groups
    assert cfg.target_groups["api"].health_check is not None
    assert cfg.target_groups["secure"].tls is not None
    assert {r.action for r in cfg.listeners[0].rules} == {"forward", "fixed-response", "redirect"}


def test_example_documents_every_key():
    text = EXAMPLE.read_text()
    for key in (config._GATEWAY_KEYS + config._LISTENER_KEYS + config._RULE_KEYS
                + config._FIXED_RESPONSE_KEYS + config._TRUST_STORE_KEYS
                + config._TARGET_GROUP_KEYS + config._HEALTH_CHECK_KEYS + config._REDIRECT_KEYS
                + config._ALLOW_KEYS + config._UPSTREAM_TLS_KEYS):
        assert key in text, key


# --- property: nothing but ConfigError ever escapes -----------------------------------------------

def _check_loads(text: str, base_dir: Path) -> None:
    try:
        result = loads(text, base_dir=base_dir)
    except ConfigError as exc:
        assert exc.problems
        assert all(isinstance(p, Problem) for p in exc.problems)
        str(exc)
    else:
        assert isinstance(result, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_loads_arbitrary_text(shared_dir: Path, text: str):
    _check_loads(text, shared_dir)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]{}=\"'.,#\n ab0:-_")), max_size=80))
def test_loads_arbitrary_toml_shaped_text(shared_dir: Path, text: str):
    _check_loads(text, shared_dir)


_KEYS = sorted(set(config._TOP_KEYS + config._GATEWAY_KEYS + config._LISTENER_KEYS
                   + config._CERTIFICATE_KEYS + config._RULE_KEYS + config._FIXED_RESPONSE_KEYS
                   + config._TRUST_STORE_KEYS + config._TARGET_GROUP_KEYS
                   + config._HEALTH_CHECK_KEYS + config._REDIRECT_KEYS + config._ALLOW_KEYS
                   + config._UPSTREAM_TLS_KEYS + ("main", "app", "bnid")))
_STRINGS = ["auto", "on", "off", "-", "verify", "optional", "passthrough", "alb", "xfcc",
            "forward", "fixed-response", "redirect", "#{host}", "/#{path}", "#{bad}", "200-399",
            "websocket", "least_outstanding_requests", "GET",
            "main", "app", "1.2", "1.3", "0.0.0.0:8443", ":1",
            "[::1]:2", "server.pem", "server.key", "rsa.key", "ca-bundle.pem", "root.crl.pem",
            "expired.crl.pem", "garbage.pem", "/", "*", "0A:1B", "", "\x00", "a" * 300]
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-2**63, max_value=2**63 - 1),
    st.sampled_from([0, 1, 10, 65535, 65536, 86400, 2**24]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.sampled_from(_STRINGS),
    st.dates(),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), children, max_size=5)),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), _values, max_size=5))
def test_loads_arbitrary_toml_documents(shared_dir: Path, doc: dict):
    _check_loads(dumps(doc), shared_dir)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


_FULL_PATHS = [p for p in _paths(full()) if p]
_GONE = object()


def _child(node, part):
    """node[part] if an earlier change left that place in the document, else _GONE."""
    if isinstance(node, dict) and isinstance(part, str) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return _GONE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_FULL_PATHS), _values), min_size=1, max_size=3))
def test_loads_a_valid_document_with_random_changes(shared_dir: Path, changes):
    """Start from a valid document and replace a few values anywhere in it."""
    doc = full()
    doc["gateway"].pop("access_log")  # the shared directory has no logs/ folder
    # EC only: checking an RSA key's consistency costs tens of milliseconds per example.
    doc["listener"][0]["certificates"][1] = {"cert": "server.pem", "key": "server.key"}
    for path, value in changes:
        node = doc
        for part in path[:-1]:
            node = _child(node, part)
        if _child(node, path[-1]) is not _GONE:
            node[path[-1]] = value
    _check_loads(dumps(doc), shared_dir)


# --- the field metadata drives the reader ---------------------------------------------------------

_WRONG = {  # kind -> (a value of the wrong type, the message it gets)
    "string": (5, "expected a string, got integer"),
    "choice": (True, "expected a string, got boolean"),
    "boolean": ("yes", "expected a boolean (true or false), got string"),
    "integer": (1.5, "expected an integer, got float"),
    "seconds": ("1s", "expected a number, got string"),
}


def _generic_keys():
    from gateway.spec import Kind, keys_of
    places = [(config.ListenerSpec, ("listener", 0)), (config.GatewaySpec, ("gateway",)),
              (config.TargetGroupSpec, ("target_group", "app")),
              (config.HealthCheckSpec, ("target_group", "app", "health_check"))]
    for cls, where in places:
        for name, key in keys_of(cls):
            if key.kind.value in _WRONG:
                yield pytest.param(where, key.toml or name, key.kind.value,
                                   id=f"{cls.__name__}.{name}")
    assert Kind.EXPLICIT.value not in _WRONG


@pytest.mark.parametrize("where,name,kind", list(_generic_keys()))
def test_every_keyed_field_is_read_by_its_kind(workdir: Path, where, name, kind):
    doc = minimal()
    doc["target_group"] = {"app": {"targets": ["127.0.0.1:9000"], "health_check": {}}}
    table = doc
    for part in where:
        table = table.setdefault(part, {}) if isinstance(part, str) else table[part]
    value, message = _WRONG[kind]
    table[name] = value
    prefix = ".".join(p if isinstance(p, str) else f"[{p}]" for p in where).replace(".[", "[")
    assert only_problem(workdir, doc) == Problem(str(workdir / "gateway.toml"), f"{prefix}.{name}",
                                                 message)


def test_mtls_is_read_as_the_enum(workdir: Path):
    doc = full()
    cfg = load_doc(workdir, doc)
    assert cfg.listeners[0].mtls is config.MTLSMode.VERIFY and cfg.listeners[0].mtls.verifies
    assert cfg.listeners[1].mtls is config.MTLSMode.PASSTHROUGH
    assert not cfg.listeners[1].mtls.verifies
    assert load_doc(workdir, minimal()).listeners[0].mtls is config.MTLSMode.OFF


@pytest.mark.parametrize("cls,readers", [
    (config.ListenerSpec, config._LISTENER_READERS),
    (config.GatewaySpec, config._GATEWAY_READERS),
    (config.Redirect, config._REDIRECT_READERS),
    (config.FixedResponse, config._FIXED_RESPONSE_READERS),
], ids=lambda v: getattr(v, "__name__", ""))
def test_every_field_has_metadata_or_an_explicit_reader(cls, readers):
    from gateway.spec import Kind, keys_of
    fields = dict(keys_of(cls))
    assert set(fields) == {f.name for f in dataclasses.fields(cls)}
    for name, key in fields.items():
        if key.kind is Kind.EXPLICIT:
            assert name in readers, f"{cls.__name__}.{name} is EXPLICIT but has no reader"
    assert set(readers) <= set(fields)


def test_metadata_keys_are_bare_toml_keys():
    # the walk writes `prefix.key` without quoting, which only a bare key allows
    from gateway.spec import toml_keys
    for cls in (config.GatewaySpec, config.AdminSpec, config.ListenerSpec, config.CertificateSpec,
                config.RuleSpec, config.Redirect, config.ClientAllow, config.FixedResponse,
                config.TrustStoreSpec, config.TargetGroupSpec, config.HealthCheckSpec,
                config.UpstreamTLSSpec):
        for key in toml_keys(cls):
            assert config._BARE_KEY.fullmatch(key), (cls.__name__, key)
