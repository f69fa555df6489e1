"""gateway.spec: the dataclasses, their field metadata, the enums; stdlib only."""
from __future__ import annotations

import ast
import dataclasses
import json
import sys
from pathlib import Path

import orjson
import pytest

from gateway import config, spec
from gateway.spec import REQUIRED, Key, Kind, MTLSMode

SPEC_CLASSES = (spec.CertificateSpec, spec.FixedResponse, spec.Redirect, spec.ClientAllow,
                spec.RuleSpec, spec.ListenerSpec, spec.TrustStoreSpec, spec.HealthCheckSpec,
                spec.UpstreamTLSSpec, spec.TargetGroupSpec, spec.GatewaySpec, spec.AdminSpec)


def test_spec_imports_only_the_stdlib():
    tree = ast.parse(Path(spec.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


@pytest.mark.parametrize("cls", SPEC_CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_key_metadata(cls):
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key")
        assert isinstance(key, Key), f"{cls.__name__}.{f.name} has no Key"
        if key.default is REQUIRED:
            assert f.default is dataclasses.MISSING, f.name
        else:
            assert f.default == key.default, f.name
        if key.kind is Kind.CHOICE:
            assert key.choices and all(type(c) is str for c in key.choices), f.name
            assert key.default is REQUIRED or key.default in key.choices, f.name
        if key.kind is Kind.INTEGER and key.default not in (REQUIRED, None):
            assert key.lo is None or key.default >= key.lo, f.name
            assert key.hi is None or key.default <= key.hi, f.name
        if key.kind is Kind.PART:
            assert key.toml is None, f.name


def test_toml_keys_are_the_keys_the_file_may_hold():
    # pinned: the same keys, in the same order, as the reader allowed before the metadata existed
    assert spec.toml_keys(spec.ListenerSpec) == (
        "name", "bind", "certificates", "mtls", "trust_store", "header_style",
        "ignore_client_certificate_expiry", "advertise_ca_names", "max_chain_depth",
        "tls_min_version", "ciphers_tls12", "session_tickets", "session_timeout_s",
        "handshake_timeout_s", "header_timeout_s", "idle_timeout_s", "max_request_line_bytes",
        "max_header_bytes", "max_header_count", "max_body_bytes", "max_client_cert_chain_bytes",
        "rule", "body_timeout_s", "max_requests_per_connection", "max_connections_per_worker",
        "underscore_headers", "strip_request_headers", "merge_slashes", "escaped_slashes",
        "strict_sni_host", "alpn", "h2_max_concurrent_streams", "h2_header_table_size",
        "h2_max_resets_per_s", "h2_max_control_frames_per_s", "h2_max_empty_frames",
        "h2_max_continuation_frames", "h2_stall_timeout_s", "mtls_enforcement",
        "identity_signature", "identity_fields", "log_fields")
    assert spec.toml_keys(spec.GatewaySpec) == (
        "workers", "native", "access_log", "connection_log", "error_log", "log_level",
        "drain_timeout_s", "shutdown_delay_s", "ticket_rotation_s", "watch_files", "watch_interval_s",
        "connection_log_format", "state_dir")
    assert spec.toml_keys(spec.AdminSpec) == ("bind", "token_file", "idle_timeout_s", "max_connections")
    assert spec.toml_keys(spec.CertificateSpec) == ("cert", "key")
    assert spec.toml_keys(spec.RuleSpec) == (
        "priority", "host", "path", "action", "target_group", "fixed_response", "methods",
        "headers", "redirect", "require_client_cert", "allow", "allow_upgrade")
    assert spec.toml_keys(spec.Redirect) == ("status", "scheme", "host", "port", "path", "query")
    assert spec.toml_keys(spec.ClientAllow) == ("subject", "issuer", "san_dns", "san_uri")
    assert spec.toml_keys(spec.FixedResponse) == ("status", "content_type", "body")
    assert spec.toml_keys(spec.TrustStoreSpec) == (
        "ca_bundle", "crls", "deny_serials", "ocsp", "ocsp_responder", "ocsp_timeout_s",
        "ocsp_failure", "crl_fetch", "crl_urls", "crl_stale", "crl_fetch_timeout_s")
    assert spec.toml_keys(spec.TargetGroupSpec) == (
        "targets", "connect_timeout_s", "read_timeout_s", "max_idle_per_target",
        "idle_timeout_s", "load_balancing", "ejection_failures", "ejection_duration_s",
        "health_check", "tls")
    assert spec.toml_keys(spec.HealthCheckSpec) == (
        "path", "interval_s", "timeout_s", "healthy_threshold", "unhealthy_threshold", "matcher")
    assert spec.toml_keys(spec.UpstreamTLSSpec) == ("ca_bundle", "cert", "key", "server_name")


def test_mtls_mode_is_its_plain_string():
    assert MTLSMode("verify") is MTLSMode.VERIFY
    assert MTLSMode.VERIFY == "verify" and "verify" == MTLSMode.VERIFY
    assert MTLSMode.OPTIONAL in ("verify", "optional") and MTLSMode.OFF not in ("verify",)
    assert hash(MTLSMode.PASSTHROUGH) == hash("passthrough")
    assert {"verify": 1}[MTLSMode.VERIFY] == 1
    assert f"{MTLSMode.OFF}|{MTLSMode.VERIFY!s}" == "off|verify"
    assert json.dumps({"mtls": MTLSMode.OPTIONAL}) == '{"mtls": "optional"}'
    assert orjson.dumps({"mtls": MTLSMode.OPTIONAL}) == b'{"mtls":"optional"}'
    assert spec.MTLS_MODES == ("off", "passthrough", "verify", "optional")
    assert all(type(m) is str for m in spec.MTLS_MODES + spec.MTLS_VERIFYING_MODES)


@pytest.mark.parametrize("mode,verifies,asks", [
    ("off", False, False), ("passthrough", False, True), ("verify", True, True),
    ("optional", True, True),
])
def test_mtls_mode_behaviour(mode, verifies, asks):
    assert MTLSMode(mode).verifies is verifies
    assert MTLSMode(mode).asks_for_certificate is asks
    assert (mode in spec.MTLS_VERIFYING_MODES) is verifies


def test_listener_spec_built_by_hand_holds_the_enum():
    listener = spec.ListenerSpec(name="a", host="", port=1, certificates=(), mtls="optional")
    assert listener.mtls is MTLSMode.OPTIONAL and listener.verifies
    assert spec.ListenerSpec(name="a", host="", port=1, certificates=()).mtls is MTLSMode.OFF
    assert listener.host_must_match_sni is True


def test_config_reexports_the_spec():
    for name in dir(spec):
        if name.startswith("_"):
            continue
        if name.isupper() or name.endswith("Spec") or name in (
                "Config", "FixedResponse", "Redirect", "ClientAllow", "MTLSMode"):
            if name == "REQUIRED":
                continue
            assert getattr(config, name) is getattr(spec, name), name
