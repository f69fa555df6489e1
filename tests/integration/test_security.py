"""Request-level guarantees a client cannot talk its way around, through a real gateway process:
the Host must be a name of the certificate SNI chose (421 otherwise), and what the gateway answers
by itself is accounted for in the access log like anything else it sends."""
from __future__ import annotations

import socket
import ssl

import pytest

from .test_proxy import (client_ctx, forward_all, gateway, group, listener, status_of,  # noqa: F401
                         upstreams, wait_until)

pytestmark = pytest.mark.integration


def _raw(port: int, ctx: ssl.SSLContext, data: bytes, server_name: str = "localhost") -> bytes:
    """Send bytes over one TLS connection (SNI `server_name`), read until the gateway closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_name) as tls:
            tls.sendall(data)
            out = b""
            try:
                while chunk := tls.recv(65536):
                    out += chunk
            except (ssl.SSLError, ConnectionError):
                pass
            return out


def test_bytes_out_counts_what_the_gateway_answers_itself(gateway, test_pki, upstreams):
    up = upstreams("app")
    rules = """
[[listener.rule]]
path = "/fixed"
action = "fixed-response"
fixed_response = {status = 418, body = "short and stout\\n"}

[[listener.rule]]
path = "/away"
action = "redirect"
redirect = {host = "elsewhere.example", status = 302}

[[listener.rule]]
path = "/admin/*"
require_client_cert = true
action = "forward"
target_group = "app"

[[listener.rule]]
path = "/none/*"
action = "forward"
target_group = "empty"
""" + forward_all()
    gw = gateway(listener(rules, mtls="optional") + group("app", [up.port])
                 + '\n[target_group.empty]\ntargets = ["127.0.0.1:1"]\n'
                   'health_check = {path = "/", interval_s = 60, timeout_s = 1, '
                   'unhealthy_threshold = 1, healthy_threshold = 1}\n')
    ctx = client_ctx(test_pki)
    sent = {}
    for path in ("/fixed", "/away", "/admin/x", "/none/x", "/proxied"):
        out = _raw(gw.port("main"), ctx,
                   b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path.encode())
        assert status_of(out), (path, out[:200])
        sent[path] = (status_of(out), len(out))

    def logged():
        lines = {l["target"]: l for l in gw.lines("access")}
        return lines if len(lines) >= len(sent) else None

    lines = wait_until(logged)
    assert [sent[p][0] for p in sent] == [418, 302, 403, 503, 200]
    for path, (status, size) in sent.items():
        line = lines[path]
        assert line["status"] == status
        # every byte of the response the client read, head and body, before TLS
        assert line["bytes_out"] == size, (path, line)


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory, test_pki):
    """Server certificates for a.example and *.b.example, from the test PKI's intermediate."""
    from gateway import pki
    d = tmp_path_factory.mktemp("sni")
    out = {}
    for label, names in (("a", ["a.example"]), ("b", ["*.b.example"])):
        issued = pki.make_server(test_pki.intermediate, names)
        issued.write(d / f"{label}.pem", d / f"{label}.key")
        out[label] = (d / f"{label}.pem", d / f"{label}.key")
    return out


def _two_cert_listener(two_servers, mtls: str, extra: str = "") -> str:
    (a_cert, a_key), (b_cert, b_key) = two_servers["a"], two_servers["b"]
    store = 'trust_store = "main"\n' if mtls in ("verify", "optional") else ""
    return f"""
[[listener]]
name = "main"
bind = "127.0.0.1:{{port}}"
certificates = [{{cert = "{a_cert}", key = "{a_key}"}}, {{cert = "{b_cert}", key = "{b_key}"}}]
mtls = "{mtls}"
{store}{extra}
[[listener.rule]]
host = "a.example"
action = "fixed-response"
fixed_response = {{status = 200, body = "a\\n"}}
[[listener.rule]]
action = "fixed-response"
fixed_response = {{status = 200, body = "other\\n"}}

[trust_store.main]
ca_bundle = "{{pki}}/ca-bundle.pem"
"""


def _sni_ctx(test_pki, client: str | None = "good") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(test_pki.root_pem))
    if client is not None:
        c = test_pki.clients[client]
        ctx.load_cert_chain(c.cert, c.key)
    return ctx


@pytest.mark.parametrize("mtls,native", [("verify", "on"), ("verify", "off"), ("optional", "on"),
                                         ("passthrough", "off")])
def test_host_outside_the_sni_certificate_is_421(gateway, test_pki, two_servers, mtls, native):
    gw = gateway(_two_cert_listener(two_servers, mtls), gateway_extra=f'native = "{native}"')
    ctx = _sni_ctx(test_pki)
    port = gw.port("main")

    def get(sni: str, host: str) -> bytes:
        return _raw(port, ctx, b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                    % host.encode(), server_name=sni)

    assert get("a.example", "a.example").endswith(b"\r\n\r\na\n")
    assert get("a.example", "A.Example.:443").endswith(b"\r\n\r\na\n")
    assert get("x.b.example", "x.b.example").endswith(b"\r\n\r\nother\n")
    # authenticated for one certificate's names, asking for another's: not this connection's host
    for sni, host in (("x.b.example", "a.example"), ("a.example", "x.b.example"),
                      ("a.example", "evil.example"), ("x.b.example", "b.example"),
                      ("x.b.example", "y.z.b.example")):
        out = get(sni, host)
        assert status_of(out) == 421, (sni, host, out[:200])
    line = wait_until(lambda: [l for l in gw.lines("error") if l.get("reason") == "misdirected_request"])
    assert line[0]["host"] == "a.example"
    access = wait_until(lambda: [l for l in gw.lines("access") if l["status"] == 421])
    assert access[0]["reason"] == "misdirected_request"


def test_strict_sni_host_can_be_turned_off(gateway, test_pki, two_servers):
    gw = gateway(_two_cert_listener(two_servers, "verify", "strict_sni_host = false"))
    out = _raw(gw.port("main"), _sni_ctx(test_pki),
               b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
               server_name="x.b.example")
    assert out.endswith(b"\r\n\r\na\n")
