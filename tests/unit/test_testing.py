"""gateway.testing's configuration writer and memory-BIO client (no sockets, no processes)."""
from __future__ import annotations

import ssl
import tomllib

import pytest

from gateway import config, testing


def test_the_writer_round_trips_through_toml_and_the_gateway_reads_it(test_pki):
    d = test_pki.dir
    doc = {
        "gateway": {"workers": 2, "access_log": "off", "drain_timeout_s": 2.5, "log_level": None},
        "listener": [
            testing.listener("v", 8443, d / "server.pem", d / "server.key", mtls="verify",
                             header_style=["alb", "xfcc"], max_requests_per_connection=0,
                             rules=[testing.fixed_response(path="/f", content_type="text/plain", body="a \"b\"\n"),
                                    testing.forward("up")]),
            testing.listener("p", "127.0.0.1:8444", d / "server.pem", d / "server.key", mtls="passthrough"),
        ],
        "trust_store": {"main": {"ca_bundle": d / "ca-bundle.pem", "crls": [d / "crl-root.pem"]}},
        "target_group": {"up": {"targets": ["127.0.0.1:9"], "connect_timeout_s": 2.0}},
    }
    text = testing.toml(doc)
    parsed = tomllib.loads(text)
    assert "log_level" not in parsed["gateway"]                    # None: left out
    assert parsed["gateway"] == {"workers": 2, "access_log": "off", "drain_timeout_s": 2.5}
    verify, passthrough = parsed["listener"]
    assert verify["bind"] == "127.0.0.1:8443" and verify["trust_store"] == "main"
    assert verify["certificates"] == [{"cert": str(d / "server.pem"), "key": str(d / "server.key")}]
    assert verify["rule"] == [
        {"path": "/f", "action": "fixed-response",
         "fixed_response": {"status": 200, "content_type": "text/plain", "body": 'a "b"\n'}},
        {"action": "forward", "target_group": "up"}]
    assert "trust_store" not in passthrough
    assert passthrough["rule"] == [{"action": "fixed-response", "fixed_response": {"status": 200, "body": "ok"}}]
    conf = config.loads(text)
    assert [l.name for l in conf.listeners] == ["v", "p"]


def test_the_text_has_no_braces_of_its_own_so_placeholders_survive_format():
    text = testing.toml({"listener": [testing.listener("w", "127.0.0.1:{port_w}", "/c", "/k", rules=())]})
    assert "{" not in text.replace("{port_w}", "")
    assert tomllib.loads(text.format(port_w=5))["listener"][0]["bind"] == "127.0.0.1:5"
    assert "rule" not in tomllib.loads(text.format(port_w=5))["listener"][0]


def test_values_it_cannot_write_are_refused():
    with pytest.raises(TypeError):
        testing.toml({"gateway": {"workers": object()}})


def test_a_server_that_never_finishes_the_handshake_is_an_error_not_a_loop(tmp_path, test_pki):
    client = testing.MemoryTLSClient(testing.client_context(test_pki.dir / "root-ca.pem"))
    sent = []
    with pytest.raises(RuntimeError, match="did not finish in 3 flights"):
        client.handshake(sent.append, flights=3)
    assert len(sent) == 3 and sent[0][0] == 0x16          # a TLS handshake record: the ClientHello
    assert isinstance(client.tls, ssl.SSLObject)
