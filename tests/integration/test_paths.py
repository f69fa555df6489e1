"""Path normalisation end to end: a rule sees the path the backend will act on.

Raw request-targets go over TLS to a gateway process; a recording target (`Upstream`) shows what
arrived. Without a client certificate, every spelling of `/admin/x` (dot segments, encoded dots,
doubled slashes, encoded unreserved letters, absolute-form) meets the `/admin/*` rule's 403, and
every spelling a backend could read otherwise (`%2F`, `%5C`, `;`, a backslash, `%00`, a broken
escape, an overlong UTF-8 form) is a 400; none reaches the target. With the certificate they arrive
in normalised form with the query as sent. The precedents: CVE-2019-9901 (Envoy), CVE-2024-45410
and CVE-2026-39858 (Traefik), CVE-2025-48865 (Fabio).
"""
from __future__ import annotations

import pytest

from .test_proxy import Upstream, forward_all, gateway, group, listener, raw, status_of  # noqa: F401

pytestmark = pytest.mark.integration

ADMIN_RULE = """
[[listener.rule]]
path = "/admin/*"
require_client_cert = true
action = "forward"
target_group = "app"
"""

REDIRECT_RULE = """
[[listener.rule]]
path = "/old/*"
action = "redirect"
redirect = {status = 308, path = "/new/#{path}"}
"""


def rules(extra: str = "") -> str:
    return ADMIN_RULE + extra + forward_all()


def send(gw, test_pki, target: bytes, *, client=None, method: bytes = b"GET") -> bytes:
    return raw(gw, test_pki, method + b" " + target + b" HTTP/1.1\r\nHost: localhost\r\n"
               b"Connection: close\r\n\r\n", client=client)


def request_lines(u: Upstream) -> list[bytes]:
    return [h.split(b"\r\n", 1)[0] for h in u.heads()]


@pytest.fixture
def target():
    u = Upstream("app")
    yield u
    u.stop()


# Every spelling of /admin/x that a backend serves as /admin/x, and what the gateway forwards.
ADMIN_SPELLINGS = [
    (b"/admin/x", b"/admin/x"),
    (b"/pub/../admin/x", b"/admin/x"),
    (b"//admin/x", b"/admin/x"),
    (b"///admin//x", b"/admin/x"),
    (b"/pub/%2e%2e/admin/x", b"/admin/x"),
    (b"/pub/%2E%2E/admin/x", b"/admin/x"),
    (b"/pub/.%2e/admin/x", b"/admin/x"),
    (b"/./admin/x", b"/admin/x"),
    (b"/%2e/admin/x", b"/admin/x"),
    (b"/%61dmin/x", b"/admin/x"),
    (b"/%61%64%6D%69%6E/x", b"/admin/x"),
    (b"/../admin/x", b"/admin/x"),
    (b"/pub//../admin/x", b"/admin/x"),
    (b"/admin/./x/../x", b"/admin/x"),
]

# Spellings a backend could read differently: refused, whatever the certificate.
REFUSED = [
    b"/admin%2fx", b"/admin%2Fx", b"/admin%5cx", b"/pub/..%2fadmin/x", b"/pub/%2e%2e%2fadmin/x",
    b"/x;y", b"/pub/..;/admin/x", b"/admin;x=1/y", b"/admin\\x", b"/pub\\..\\admin\\x",
    b"/admin/x%00", b"/admin/x%0d%0a", b"/a%zz", b"/a%4", b"/%c0%ae%c0%ae/admin/x", b"/pub%c0%afadmin",
]


@pytest.mark.parametrize("native", ["on", "off"])
def test_without_a_certificate_no_spelling_of_a_protected_path_reaches_the_target(
        gateway, test_pki, target, native):
    gw = gateway(listener(rules(), mtls="optional") + group("app", [target.port]),
                 gateway_extra=f'native = "{native}"')
    for sent, _ in ADMIN_SPELLINGS:
        response = send(gw, test_pki, sent)
        assert status_of(response) == 403, (sent, response[:200])
        assert b"requires a verified client certificate" in response
    absolute = send(gw, test_pki, b"https://localhost/pub/%2e%2e//admin/x?q=1")
    assert status_of(absolute) == 403
    for sent in REFUSED:
        assert status_of(send(gw, test_pki, sent)) == 400, sent
    assert target.seen == []
    # each refusal is one error-log line with its reason code
    gw.wait_log("error", lambda l: l.get("reason") == "path_overlong_utf8")
    assert {l["reason"] for l in gw.lines("error") if l.get("reason", "").startswith("path_")} == {
        "path_escaped_slash", "path_parameter", "path_backslash", "path_control_byte",
        "path_bad_escape", "path_overlong_utf8"}
    # the catch-all still forwards, normalised
    assert status_of(send(gw, test_pki, b"/pub/./a/../b?x=/../%2e")) == 200
    assert request_lines(target) == [b"GET /pub/b?x=/../%2e HTTP/1.1"]


def test_with_the_certificate_the_target_gets_the_normalised_path_and_the_query_as_sent(
        gateway, test_pki, target):
    gw = gateway(listener(rules(), mtls="optional") + group("app", [target.port]))
    query = b"?a=%2e%2e/../&b=//c;d%2F\\"
    for sent, forwarded in ADMIN_SPELLINGS:
        response = send(gw, test_pki, sent + query, client="good")
        assert status_of(response) == 200, (sent, response[:200])
        assert request_lines(target)[-1] == b"GET " + forwarded + query + b" HTTP/1.1"
    assert status_of(send(gw, test_pki, b"https://localhost/pub/../admin/x?q", client="good")) == 200
    assert request_lines(target)[-1] == b"GET /admin/x?q HTTP/1.1"
    # percent-encodings other than the unreserved ones stay, in upper-case hex (RFC 3986 6.2.2.1)
    assert status_of(send(gw, test_pki, b"/admin/%7e%3a%c3%a9", client="good")) == 200
    assert request_lines(target)[-1] == b"GET /admin/~%3A%C3%A9 HTTP/1.1"
    for sent in REFUSED:
        assert status_of(send(gw, test_pki, sent, client="good")) == 400, sent
    assert len(target.seen) == len(ADMIN_SPELLINGS) + 2


def test_asterisk_form_is_untouched(gateway, test_pki, target):
    gw = gateway(listener(rules(), mtls="optional") + group("app", [target.port]))
    assert status_of(send(gw, test_pki, b"*", method=b"OPTIONS")) == 200
    assert request_lines(target) == [b"OPTIONS * HTTP/1.1"]


def test_redirects_are_built_from_the_normalised_path(gateway, test_pki, target):
    gw = gateway(listener(rules(REDIRECT_RULE), mtls="optional") + group("app", [target.port]))
    response = send(gw, test_pki, b"/pub/%2e%2e//old/a/./b?x=1")
    assert status_of(response) == 308
    assert b"\r\nLocation: https://localhost" in response
    assert b"/new/old/a/b?x=1\r\n" in response
    assert target.seen == []


def test_verify_mode(gateway, test_pki, target):
    allow = ADMIN_RULE.replace("require_client_cert = true",
                               'allow = {subject = ["CN=alice,O=mtls-gateway dev"]}')
    gw = gateway(listener(allow + forward_all(),
                          mtls="verify") + group("app", [target.port]))
    response = send(gw, test_pki, b"/pub/%2e%2e/admin/x", client="good")
    assert status_of(response) == 403 and b"not allowed" in response
    assert target.seen == []
    assert status_of(send(gw, test_pki, b"/pub/%2e%2e/admin/x", client="alice")) == 200
    assert request_lines(target) == [b"GET /admin/x HTTP/1.1"]


def test_passthrough_mode(gateway, test_pki, target):
    # passthrough verifies nothing; a rule can still fence a path off, and no spelling gets past it
    fence = ('[[listener.rule]]\npath = "/admin/*"\naction = "fixed-response"\n'
             'fixed_response = {status = 403, body = "fenced"}\n')
    gw = gateway(listener(fence + forward_all(),
                          mtls="passthrough") + group("app", [target.port]))
    for sent in (b"//admin/x", b"/pub/../admin/x", b"/%61dmin/x"):
        response = send(gw, test_pki, sent, client="good")
        assert status_of(response) == 403 and response.endswith(b"fenced"), sent
    assert status_of(send(gw, test_pki, b"/admin%2Fx", client="good")) == 400
    assert target.seen == []


def test_escaped_slashes_keep_forwards_them_as_data(gateway, test_pki, target):
    gw = gateway(listener(rules(), mtls="optional", extra='escaped_slashes = "keep"')
                 + group("app", [target.port]))
    # one segment "admin%2Fx": not under /admin/, so the catch-all takes it, and so must the backend
    for sent, forwarded in ((b"/admin%2fx", b"/admin%2Fx"), (b"/x;y", b"/x;y"),
                            (b"/a%5cb", b"/a%5Cb")):
        assert status_of(send(gw, test_pki, sent)) == 200, sent
        assert request_lines(target)[-1] == b"GET " + forwarded + b" HTTP/1.1"
    # dot segments and the refusals that no setting lifts are unchanged
    assert status_of(send(gw, test_pki, b"/pub/../admin/x")) == 403
    assert status_of(send(gw, test_pki, b"/admin\\x")) == 400
    assert status_of(send(gw, test_pki, b"/a%00")) == 400
    assert len(target.seen) == 3


def test_escaped_slashes_decode_matches_and_forwards_the_decoded_path(gateway, test_pki, target):
    gw = gateway(listener(rules(), mtls="optional", extra='escaped_slashes = "decode"')
                 + group("app", [target.port]))
    cases = ((b"/admin%2fx", b"/admin/x"), (b"/pub%2F..%2Fadmin/x", b"/admin/x"),
             (b"/admin%5Cx", b"/admin/x"), (b"/admin;v=1/x;jsessionid=2", b"/admin/x"),
             (b"/pub/..;/admin/x", b"/admin/x"))
    for sent, _ in cases:
        assert status_of(send(gw, test_pki, sent)) == 403, sent
    assert target.seen == []
    for sent, forwarded in cases:
        assert status_of(send(gw, test_pki, sent + b"?q=%2F", client="good")) == 200, sent
        assert request_lines(target)[-1] == b"GET " + forwarded + b"?q=%2F HTTP/1.1"


def test_merge_slashes_off_forwards_empty_segments(gateway, test_pki, target):
    gw = gateway(listener(rules(), mtls="optional", extra="merge_slashes = false")
                 + group("app", [target.port]))
    # `//admin/x` is not under /admin/ without merging: the operator said the backend agrees
    assert status_of(send(gw, test_pki, b"//admin/x")) == 200
    assert status_of(send(gw, test_pki, b"/a//b/./c")) == 200
    assert request_lines(target) == [b"GET //admin/x HTTP/1.1", b"GET /a//b/c HTTP/1.1"]
    assert status_of(send(gw, test_pki, b"/pub/../admin/x")) == 403
    assert status_of(send(gw, test_pki, b"/admin%2fx")) == 400
    assert len(target.seen) == 2
