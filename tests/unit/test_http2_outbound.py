"""What the gateway sends over HTTP/2 is already what h2's outbound normalisation would make of it, and
passes h2's outbound validation: so the connection runs with both off (gateway.http2.connection).

Each response is sent twice, on two server connections in the same state: one as the gateway sends
it (h2's outbound processing off), one through h2's normalisation and validation (on). The bytes on
the wire must be the same, and h2's validation must never refuse. The responses are whatever the
gateway's own HTTP/1.1 response reader accepts from a target (generated raw responses, parsed by
it: names of any case, values with inner blanks, credentials, hop-by-hop and connection-specific
fields, fields a Connection header names), and the gateway's own answers (split_answer)."""
from __future__ import annotations

import h2.config
import h2.connection
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway import http1, http2
from gateway.errors import GatewayError

SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
NAMES = [b"Content-Type", b"set-cookie", b"Set-Cookie", b"Cookie", b"cookie", b"Authorization",
         b"proxy-authorization", b"Proxy-Authorization", b"Connection", b"Keep-Alive", b"TE", b"te",
         b"Trailer", b"Transfer-Encoding", b"Upgrade", b"Proxy-Connection", b"Cache-Control", b"X-A",
         b"Location", b"Vary", b"Alt-Svc", b"Content-Encoding", b"WWW-Authenticate"]

name = st.one_of(st.sampled_from(NAMES), st.binary(min_size=1, max_size=10).map(
    lambda b: bytes(TCHAR[c % len(TCHAR)] for c in b)))
value = st.one_of(
    st.sampled_from([b"", b"a=b", b"trailers", b"close", b"x-a", b"keep-alive, x-a", b"gzip",
                     b"Basic dXNlcjpwYXNz", b"a" * 25, b"text/html; charset=utf-8"]),
    st.lists(st.one_of(st.binary(min_size=1, max_size=6).map(lambda b: bytes(VCHAR[c % len(VCHAR)] for c in b)),
                       st.sampled_from([b" ", b"\t", b"  "])), max_size=6).map(b"".join))
ows = st.sampled_from([b"", b" ", b"\t", b" \t "])


def _pair():
    """Two server connections in one state, a request's stream (1) open on both."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"),
                            (b":path", b"/")], end_stream=True)
    preface = client.data_to_send()
    ours, checked = http2.connection(100, 4096, 16384), http2.h2_connection(100, 4096, 16384)
    checked.config.validate_outbound_headers = True
    checked.config.normalize_outbound_headers = True
    for server in (ours, checked):
        server.receive_data(preface)
        server.data_to_send()
    return ours, checked


def _same_on_the_wire(block):
    ours, checked = _pair()
    ours.send_headers(1, block, end_stream=True)
    checked.send_headers(1, block, end_stream=True)     # raises if h2's validation refuses
    assert ours.data_to_send() == checked.data_to_send(), block


@SETTINGS
@given(st.sampled_from([200, 204, 301, 404, 500, 503]),
       st.lists(st.tuples(name, ows, value, ows), max_size=10),
       st.sampled_from([b"GET", b"HEAD"]))
def test_a_targets_response_is_sent_as_h2_would_normalise_and_validate_it(status, fields, method):
    raw = b"HTTP/1.1 %d X\r\n" % status
    raw += b"".join(n + b":" + a + v + b + b"\r\n" for n, a, v, b in fields)
    raw += b"content-length: 0\r\n\r\n"
    reader = http1.ResponseReader(max_header_bytes=16384, max_header_count=64)
    reader.expect(method)
    try:
        reader.feed(raw)
        resp = reader.next_event()
    except GatewayError:
        assume(False)
    assert isinstance(resp, http1.Response)
    block = [(b":status", b"%d" % resp.status), *http2.response_fields(resp, method)]
    _same_on_the_wire(block)


@SETTINGS
@given(st.lists(st.tuples(name, value), max_size=8), st.binary(max_size=40))
def test_the_gateways_own_answers_are_sent_as_h2_would(fields, body):
    head = b"HTTP/1.1 403 Forbidden\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in fields)
    payload = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    status, parsed, _ = http2._split_answer(payload)
    _same_on_the_wire([(b":status", b"%d" % status), *parsed])


def test_credentials_are_never_indexed():
    """An authorization field goes as never indexed; a long cookie is indexed as usual."""
    ours, _ = _pair()
    resp_fields = [(b":status", b"200"), http2._field(b"authorization", b"Basic eA=="),
                   http2._field(b"cookie", b"a" * 30)]
    ours.send_headers(1, resp_fields, end_stream=True)
    first = ours.data_to_send()
    from hpack import Decoder
    from hpack.struct import NeverIndexedHeaderTuple
    got = Decoder().decode(first[9:], raw=True)
    assert isinstance(got[1], NeverIndexedHeaderTuple) and not isinstance(got[2], NeverIndexedHeaderTuple)
