"""Library message strings the gateway branches on, pinned: an upgrade of httptools (llhttp) or of
the OpenSSL inside `cryptography` that rewords one fails here, by name, instead of quietly turning a
precise refusal reason into "malformed" or a verify status into "UnmappedConnectionError"."""
from __future__ import annotations

import ssl

import pytest
from httptools import HttpParserError, HttpRequestParser

from gateway import http1

from .test_tls import _client_ctx, _listener, ca, files, handshake  # noqa: F401  (fixtures)

# (bytes that make strict llhttp fail, the message it gives): each message is a key of
# http1._LLHTTP_ERRORS, and the reason the reader gives for it depends on that key
LLHTTP = [
    (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", "Invalid header token"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", "Invalid header value char"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", "Invalid character in Content-Length"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     "Duplicate Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "Invalid character in chunk size"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "Unexpected whitespace after header value"),
    (b"GET / HTTP/1.1\nHost: a\r\n\r\n", "Expected CRLF after version"),
    (b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", "Missing expected CR after header value"),
    (b"G@T / HTTP/1.1\r\n\r\n", "Invalid method encountered"),
    (b"GET / HTTP/3.1\r\n\r\n", "Invalid HTTP version"),
]


class _Sink:
    pass


@pytest.mark.parametrize("data,message", LLHTTP, ids=[m for _, m in LLHTTP])
def test_llhttp_messages_the_reader_maps(data, message):
    assert message in http1._LLHTTP_ERRORS
    parser = HttpRequestParser(_Sink())
    with pytest.raises(HttpParserError) as info:
        parser.feed_data(data)
    assert str(info.value) == message


def test_every_mapped_reason_is_reached_through_the_reader():
    """The reader's reasons for the inputs above are the mapped ones, not the "malformed" fallback."""
    for data, message in LLHTTP:
        reader = http1.RequestReader(http1.HTTPLimits())
        try:
            reader.feed(data)
            while reader.next_event() is not None:
                pass
        except Exception as exc:        # HTTPProtocolError
            assert exc.reason != "malformed", (message, exc.reason)
        else:
            raise AssertionError(f"{data!r} was accepted")


def test_openssl_messages_the_tls_layer_maps(files, ca, tmp_path):  # noqa: F811
    """tls.TLSConnection._failure reads "peer did not return a certificate" to name
    Failed:ClientCertNotFound (TLS 1.2: no certificate_required alert to go by)."""
    _, _, events, _, err = handshake(_listener(files, ca),
                                     _client_ctx(files, tmp_path, version=ssl.TLSVersion.TLSv1_2))
    assert "peer did not return a certificate" in events[0].detail
    assert events[0].status.value == "Failed:ClientCertNotFound"
