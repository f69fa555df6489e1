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
