"""No forged identity through header-name spellings, end to end.

The backend is a real CGI-style application: a WSGI app served by `wsgiref.simple_server` in a
thread, answering with its environ's ``HTTP_*`` keys as JSON. That is exactly the view every
CGI/WSGI/PHP backend has of a request: RFC 3875 section 4.1.18 names each header ``HTTP_`` +
upper case with `-` turned into `_`, so ``X_Amzn_Mtls_Clientcert_Subject``,
``x-amzn-mtls-clientcert-subject`` and ``X-AMZN-MTLS-CLIENTCERT_SUBJECT`` all land in
``HTTP_X_AMZN_MTLS_CLIENTCERT_SUBJECT``, the variable the gateway's real header fills.

What wsgiref does with such names (Python 3.11's ``WSGIRequestHandler.get_environ``): it does NOT
skip names containing `_` (unlike nginx's ``underscores_in_headers off``, Apache 2.4's CGI
environment or gunicorn's newer ``header_map = "drop"``); it writes ``k.replace('-', '_').upper()``
and joins repeats with ``,``. So a forged underscore spelling that got through would show up either
as its own key or appended to the gateway's value after a comma; the tests below check that the
environ holds only what the gateway set, in every mTLS mode, with and without a client certificate,
with the native and the pure encoder.

The screening (``screen_request`` before routing, ``encode_request_head(..., policy)``) is done by
the connection core (gateway/conn.py); these tests hold it to the contract of gateway.headers.
"""
from __future__ import annotations

import json
import re
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from .test_proxy import forward_all, gateway, group, listener, raw, status_of  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

STYLES = 'header_style = ["alb", "xfcc", "rfc9440"]\n'

# Forged spellings of every kind: the gateway's own names with `_` and mixed case, X-Forwarded-*
# spellings, and other proxies' client-certificate headers (see THIRD_PARTY_CERT_HEADERS).
FORGED = [
    "X_Amzn_Mtls_Clientcert_Subject", "x-amzn-mtls-clientcert-subject",
    "X-AMZN-MTLS-CLIENTCERT_SUBJECT", "X_Amzn_Mtls_Clientcert", "X_Amzn_Mtls_Clientcert_Leaf",
    "x_amzn_mtls_clientcert_serial_number", "X-Amzn-Mtls-Clientcert-Issuer",
    "X_Forwarded_Client_Cert", "Client_Cert", "CLIENT-CERT", "client_cert_chain",
    "X_Forwarded_For", "x-forwarded_for", "X_Forwarded_Proto", "X-Forwarded-Port",
    "X-SSL-Client-S-DN", "SSL_CLIENT_S_DN", "SSL_CLIENT_CERT", "ssl-client-verify", "X-SSL-Cert",
    "X_SSL_Client_Verify", "X-Client-Cert-Present", "X-Client-Cert-Chain-Verified",
    "X_Client_Cert_SPIFFE", "X-Client-Verify", "X-Client-DN", "X-Forwarded-Tls-Client-Cert",
    "X-Forwarded-Tls-Client-Cert-Info", "X-ARR-ClientCert", "X_ARR_SSL", "Cf-Client-Cert-Sha256",
    "CF_CLIENT_CERT_DER_BASE64", "CloudFront-Viewer-Cert-Subject", "CloudFront_Viewer_Cert_Pem",
    # separators Apache 2.2's CGI variables and PHP fold into "_" as well
    "X.Amzn.Mtls.Clientcert.Subject", "X-Forwarded~For", "X-Amzn-Mtls-Clientcert!Leaf",
]
GATEWAY_KEYS = {"HTTP_HOST", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_PORT"}
IDENTITY_KEYS = {
    "HTTP_X_AMZN_MTLS_CLIENTCERT", "HTTP_X_AMZN_MTLS_CLIENTCERT_SERIAL_NUMBER",
    "HTTP_X_AMZN_MTLS_CLIENTCERT_ISSUER", "HTTP_X_AMZN_MTLS_CLIENTCERT_SUBJECT",
    "HTTP_X_AMZN_MTLS_CLIENTCERT_VALIDITY", "HTTP_X_AMZN_MTLS_CLIENTCERT_LEAF",
    "HTTP_X_FORWARDED_CLIENT_CERT", "HTTP_CLIENT_CERT", "HTTP_CLIENT_CERT_CHAIN",
}


def env_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


# --- the CGI-style backend -------------------------------------------------------------------------

def environ_app(environ, start_response):
    body = json.dumps({k: v for k, v in environ.items() if k.startswith("HTTP_")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _ThreadedWSGIServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request, client_address):      # one thread per connection
        t = threading.Thread(target=self._handle, args=(request, client_address), daemon=True)
        t.start()

    def _handle(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


@pytest.fixture(scope="module")
def cgi_backend():
    server = make_server("127.0.0.1", 0, environ_app, server_class=_ThreadedWSGIServer,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


# --- helpers ------------------------------------------------------------------------------------------

def _body(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        return out
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return body[: int(m.group(1))] if m else body


def request(extra_lines: list[tuple[str, str]], *, connection: str = "close") -> bytes:
    lines = [("Host", "localhost"), ("X-Benign", "kept")] + extra_lines + [("Connection", connection)]
    return (b"GET /env HTTP/1.1\r\n"
            + b"".join(f"{n}: {v}\r\n".encode() for n, v in lines) + b"\r\n")


def environ_via(gw, test_pki, extra_lines, *, client=None) -> dict[str, str]:
    response = raw(gw, test_pki, request(extra_lines), client=client)
    assert status_of(response) == 200, response[:500]
    return json.loads(_body(response))


def start(gateway, cgi_backend, *, mtls="off", listener_extra="", native="auto"):  # noqa: F811
    return gateway(listener(forward_all(), mtls=mtls, extra=STYLES + listener_extra)
                   + group("app", [cgi_backend]), gateway_extra=f'native = "{native}"')


def forged_lines(repeat: int = 2) -> list[tuple[str, str]]:
    return [(name, f"forged-{i}-{r}") for r in range(repeat) for i, name in enumerate(FORGED)]


def assert_only_gateway_values(env: dict[str, str], *, identity: str | None) -> None:
    """The environ holds the gateway's keys, the benign header, and identity keys only when due."""
    allowed = GATEWAY_KEYS | {"HTTP_X_BENIGN"} | (IDENTITY_KEYS if identity else set())
    assert set(env) <= allowed, sorted(set(env) - allowed)
    for key, value in env.items():
        assert "forged" not in value, (key, value)
    assert env["HTTP_X_BENIGN"] == "kept"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"
    assert env["HTTP_X_FORWARDED_FOR"] == "198.51.100.9, 127.0.0.1"
    if identity == "verify":
        assert env["HTTP_X_AMZN_MTLS_CLIENTCERT_SUBJECT"].startswith(("CN=", "C=", "O=")), env
        assert "HTTP_X_AMZN_MTLS_CLIENTCERT" not in env
    elif identity == "passthrough":
        assert env["HTTP_X_AMZN_MTLS_CLIENTCERT"].startswith("-----BEGIN%20CERTIFICATE-----")
        assert "HTTP_X_AMZN_MTLS_CLIENTCERT_SUBJECT" not in env
    if identity:
        assert env["HTTP_X_FORWARDED_CLIENT_CERT"].startswith("Hash=")
        assert env["HTTP_CLIENT_CERT"].startswith(":") and env["HTTP_CLIENT_CERT"].endswith(":")
    for name in FORGED:
        key = env_key(name)
        if key not in GATEWAY_KEYS | IDENTITY_KEYS:
            assert key not in env, key              # nobody sets another proxy's headers


def _dropped_logged(gw) -> list[dict]:
    return [line for line in gw.lines("error")
            if line.get("reason") in ("managed_header_spelling_dropped", "underscore_headers_dropped")]


# --- the tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("native", ["on", "off"])
@pytest.mark.parametrize("mtls, clients", [("verify", ["good"]), ("passthrough", ["good", None]),
                                           ("optional", ["good", None]), ("off", [None])],
                         ids=["verify", "passthrough", "optional", "off"])
def test_forged_spellings_never_reach_the_backend(gateway, test_pki, cgi_backend, native, mtls,
                                                  clients):  # noqa: F811
    gw = start(gateway, cgi_backend, mtls=mtls, native=native)
    for client in clients:
        env = environ_via(gw, test_pki, [("X-Forwarded-For", "198.51.100.9")] + forged_lines(),
                          client=client)
        identity = None if client is None or mtls == "off" else (
            "passthrough" if mtls == "passthrough" else "verify")
        assert_only_gateway_values(env, identity=identity)
    # one log line per request, naming the forged spellings it dropped
    deadline = time.monotonic() + 5
    while len(_dropped_logged(gw)) < len(clients) and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = _dropped_logged(gw)
    assert len(logged) == len(clients), logged
    assert logged[0]["reason"] == "managed_header_spelling_dropped"
    assert "X_Amzn_Mtls_Clientcert_Subject" in json.dumps(logged[0])


def test_a_request_without_forgeries_is_forwarded_untouched_and_not_logged(gateway, test_pki,
                                                                           cgi_backend):  # noqa: F811
    gw = start(gateway, cgi_backend, mtls="verify")
    env = environ_via(gw, test_pki, [("X-Forwarded-For", "198.51.100.9"), ("X-Request-Id", "r1")],
                      client="good")
    assert env["HTTP_X_REQUEST_ID"] == "r1"
    assert env["HTTP_X_AMZN_MTLS_CLIENTCERT_SUBJECT"]
    time.sleep(0.3)
    assert _dropped_logged(gw) == []


@pytest.mark.parametrize("native", ["on", "off"])
def test_underscore_names_dropped_by_default(gateway, test_pki, cgi_backend, native):  # noqa: F811
    gw = start(gateway, cgi_backend, mtls="verify", native=native)
    env = environ_via(gw, test_pki, [("X-Forwarded-For", "198.51.100.9"), ("X_Custom", "1"),
                                     ("My_Header", "2"), ("X-Custom", "hyphen")], client="good")
    assert env["HTTP_X_CUSTOM"] == "hyphen"          # only the hyphen spelling, no ",1" appended
    assert "HTTP_MY_HEADER" not in env
    line = gw.wait_log("error", lambda l: l.get("reason") == "underscore_headers_dropped")
    assert "X_Custom" in json.dumps(line) and "My_Header" in json.dumps(line)


@pytest.mark.parametrize("native", ["on", "off"])
def test_underscore_headers_reject_answers_400_and_closes(gateway, test_pki, cgi_backend,
                                                          native):  # noqa: F811
    gw = start(gateway, cgi_backend, mtls="verify", native=native,
               listener_extra='underscore_headers = "reject"\n')
    started = time.monotonic()
    response = raw(gw, test_pki, request([("X_Custom", "1")], connection="keep-alive"), client="good",
                   timeout=10)
    assert status_of(response) == 400, response[:300]
    assert time.monotonic() - started < 8, "the gateway did not close the connection"
    head, _, body = response.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert m and len(body) == int(m.group(1)), response     # a whole response, then the close
    gw.wait_log("error", lambda l: l.get("reason") == "underscore_header_rejected")
    # a managed name spelled with '_' is stripped, not refused: the mode is for the other names
    env = environ_via(gw, test_pki, [("X-Forwarded-For", "198.51.100.9"),
                                     ("X_Amzn_Mtls_Clientcert_Subject", "forged")], client="good")
    assert_only_gateway_values(env, identity="verify")
    # and plain names still pass
    assert environ_via(gw, test_pki, [("X-Custom", "1")], client="good")["HTTP_X_CUSTOM"] == "1"


@pytest.mark.parametrize("native", ["on", "off"])
def test_underscore_headers_keep_forwards_all_but_managed_names(gateway, test_pki, cgi_backend,
                                                                native):  # noqa: F811
    gw = start(gateway, cgi_backend, mtls="verify", native=native,
               listener_extra='underscore_headers = "keep"\n')
    env = environ_via(gw, test_pki, [("X-Forwarded-For", "198.51.100.9"), ("X_Custom", "1")]
                      + forged_lines(), client="good")
    assert env.pop("HTTP_X_CUSTOM") == "1"
    assert_only_gateway_values(env, identity="verify")


@pytest.mark.parametrize("native", ["on", "off"])
def test_strip_request_headers_globs(gateway, test_pki, cgi_backend, native):  # noqa: F811
    gw = start(gateway, cgi_backend, mtls="verify", native=native,
               listener_extra='underscore_headers = "keep"\nstrip_request_headers = ["x-internal-*"]\n')
    env = environ_via(gw, test_pki, [("X-Internal-Role", "admin"), ("X_INTERNAL_USER", "root"),
                                     ("x-internal-", "x"), ("X-Internalx", "kept"),
                                     ("X-Other", "kept")], client="good")
    assert not [k for k in env if k.startswith("HTTP_X_INTERNAL_")], env
    assert env["HTTP_X_INTERNALX"] == "kept" and env["HTTP_X_OTHER"] == "kept"


@pytest.mark.parametrize("token", ["x-amzn-mtls-clientcert-subject", "X_Amzn_Mtls_Clientcert_Subject",
                                   "x-forwarded-for", "X-Forwarded-Proto", "client-cert"])
def test_connection_option_naming_a_gateway_header_is_400(gateway, test_pki, cgi_backend,
                                                          token):  # noqa: F811
    gw = start(gateway, cgi_backend, mtls="verify")
    response = raw(gw, test_pki, request([], connection=f"keep-alive, {token}"), client="good")
    assert status_of(response) == 400, response[:300]
    gw.wait_log("error", lambda l: l.get("reason") == "connection_names_managed_header")
    # ordinary options still work, and still drop the headers they name (compared the same way)
    env = environ_via(gw, test_pki, [("X-Forwarded-For", "198.51.100.9"), ("X-Secret", "s"),
                                     ("Connection", "x_secret")], client="good")
    assert "HTTP_X_SECRET" not in env
    assert env["HTTP_X_AMZN_MTLS_CLIENTCERT_SUBJECT"]
