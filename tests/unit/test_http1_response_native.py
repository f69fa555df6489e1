"""gateway._http1_c.ResponseReader against gateway.http1.ResponseReader (the upstream side): the same
requests expected, the same bytes cut the same way, give the same events, the same refusals at the
same point, and the same reader state after each piece.

The pure reader (llhttp through httptools, plus its own rules: HEAD, 1xx, 101, close-delimited
bodies) is the reference: a difference is a bug in the native twin unless the pure reader is
plainly wrong.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import http1
from gateway.errors import GatewayError

from .test_http1_native import feed_pieces

NATIVE = http1.NATIVE_RESPONSE
pytestmark = pytest.mark.skipif(NATIVE is None, reason="gateway._http1_c is not built")
PURE = http1.ResponseReader

DIFF = settings(max_examples=int(os.environ.get("HTTP1_DIFF_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

DEFAULT = (http1.DEFAULT_MAX_RESPONSE_HEADER_BYTES, http1.DEFAULT_MAX_RESPONSE_HEADER_COUNT)


def trace(cls, asked, data: bytes, bounds, limits=DEFAULT, eof: bool = True) -> list:
    """`asked`: the (method, upgrade) of each request sent, expected before any byte arrives;
    then `data` fed cut at `bounds`; after each piece the events and the reader's state."""
    reader = cls(*limits)
    for method, upgrade in asked:
        reader.expect(method, upgrade)
    out = feed_pieces(reader, data, bounds)
    if out[-1][0] == "dead":
        return out
    if eof:
        try:
            reader.feed_eof()
            events = []
            while (event := reader.next_event()) is not None:
                events.append(event)
            out.append(("eof", reader.idle, events))
        except GatewayError as err:
            out.append(("eof refused", type(err).__name__, err.status, err.reason, str(err)))
    return out


def same(asked, data: bytes, bounds=(), limits=DEFAULT, eof: bool = True) -> list:
    bounds = sorted(set(b for b in bounds if 0 < b < len(data)))
    expected = trace(PURE, asked, data, bounds, limits, eof)
    got = trace(NATIVE, asked, data, bounds, limits, eof)
    assert got == expected, (asked, data, bounds, limits)
    return expected


def every_split(asked, data: bytes, limits=DEFAULT) -> None:
    same(asked, data, (), limits)
    same(asked, data, range(1, len(data)), limits)
    for i in range(1, len(data)):
        same(asked, data, (i,), limits, eof=i % 2 == 0)


# --- generated responses ------------------------------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12).map(str.encode)
values = st.binary(max_size=16).map(lambda v: bytes(b for b in v if b in range(0x20, 0x7f) or b >= 0x80
                                                     or b == 9))
STATUSES = [100, 101, 102, 103, 199, 200, 200, 200, 204, 206, 301, 304, 404, 500, 599, 600, 99, 999]
REASONS = [b"OK", b"", b" ", b"Not Found", b"a\tb", b"\x80\xff", b"x\x01y", b"x\x7f", b"  spaced  "]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"RTSP/1.0",
            b"ICE/1.0", b"HTTP/1.2", b"HTTP/3.0"]
SPECIAL = [b"Connection: close", b"Connection: keep-alive", b"Connection: Upgrade",
           b"Connection: keep-alive, upgrade", b"Connection: x, close ", b"Keep-Alive: timeout=5",
           b"Upgrade: websocket", b"Upgrade:", b"Transfer-Encoding: chunked",
           b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: chunked, gzip",
           b"Transfer-Encoding: Chunked ", b"Transfer-Encoding: gzip", b"Transfer-Encoding:",
           b"Content-Length: 0", b"Content-Length: 3", b"Content-Length: 003", b"Content-Length:",
           b"Content-Length: 18446744073709551615", b"Content-Length: 18446744073709551616",
           b"Content-Length: 1, 1", b"Server: x", b"Date: Sat, 28 Nov 2026 12:00:00 GMT"]
ASKED = st.lists(st.tuples(st.sampled_from([b"GET", b"GET", b"HEAD", b"POST"]), st.booleans()),
                 max_size=4)


@st.composite
def chunked_body(draw) -> bytes:
    out = []
    for size in draw(st.lists(st.integers(1, 12), max_size=3)):
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b';a="q\\"x"', b";a=b;c", b"; x"]))
        out.append(b"%x" % size + ext + b"\r\n" + b"d" * size + b"\r\n")
    out.append(b"0\r\n")
    for trailer in draw(st.lists(st.sampled_from([b"T: v", b"X-Y: z ", b"Connection: close",
                                                  b"Content-Length: 1"]), max_size=2)):
        out.append(trailer + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


@st.composite
def response_bytes(draw) -> bytes:
    status = draw(st.sampled_from(STATUSES))
    version = draw(st.sampled_from(VERSIONS))
    line = version + b" " + (b"%03d" % status)
    reason = draw(st.sampled_from(REASONS + [None]))
    if reason is not None:
        line += b" " + reason
    fields = draw(st.lists(st.one_of(st.sampled_from(SPECIAL),
                                     st.tuples(tokens, values).map(lambda nv: nv[0] + b": " + nv[1])),
                           max_size=5))
    framing = draw(st.sampled_from(["none", "length", "length", "chunked", "eof"]))
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=12))
        fields.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        fields.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_body())
    elif framing == "eof":
        body = draw(st.binary(max_size=12))
    fields = draw(st.permutations(fields))
    lead = draw(st.sampled_from([b"", b"", b"", b"\r\n", b"\n"]))
    return lead + line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


exchanges = st.tuples(ASKED, st.lists(response_bytes(), min_size=1, max_size=3).map(b"".join))

SPECIAL_BYTES = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b"_", b"\x80", b"\xff", b";", b",",
                 b'"', b"\\", b"\x7f", b"0", b"a", b"\r\n\r\n", b"\r\n ", b"HTTP/1.1 200 OK\r\n"]


@st.composite
def mutated(draw):
    asked, raw = draw(exchanges)
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.sampled_from(SPECIAL_BYTES))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 3))]
        elif kind == "truncate":
            del data[i:]
        else:
            start = data.rfind(b"\n", 0, i) + 1
            end = data.find(b"\n", i)
            if end > 0:
                data[end + 1:end + 1] = data[start:end + 1]
    return asked, bytes(data)


small_limits = st.tuples(st.integers(16, 120), st.integers(1, 6))
limits = st.one_of(st.just(DEFAULT), small_limits)


def with_splits(strategy):
    return strategy.flatmap(lambda case: st.tuples(
        st.just(case), st.lists(st.integers(1, max(1, len(case[1]) - 1)), max_size=12)))


# --- the properties -----------------------------------------------------------------------------------

@DIFF
@given(exchanges, limits)
def test_generated_responses_split_at_every_offset(case, lim):
    asked, data = case
    every_split(asked, data, lim)


@DIFF
@given(mutated(), limits)
def test_mutated_responses_split_at_every_offset(case, lim):
    asked, data = case
    every_split(asked, data, lim)


@DIFF
@given(with_splits(mutated()), small_limits)
def test_mutated_responses_at_random_splits(case, lim):
    (asked, data), bounds = case
    same(asked, data, bounds, lim)
    same(asked, data, range(1, len(data)), lim)


_ALPHABET = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b" ", b"200", b"101", b"204", b"100", b"OK",
                             b"\r\n", b"\r", b"\n", b":", b"Content-Length: 3", b"Content-Length: 0",
                             b"Transfer-Encoding: chunked", b"0", b"3", b";", b"abc", b"\t", b"\x00",
                             b"Connection: close", b"Connection: upgrade", b"Upgrade: x",
                             b"\r\n\r\n", b"=", b'"', b"RTSP/1.0"])


@DIFF
@given(ASKED, st.lists(_ALPHABET, max_size=60).map(b"".join), st.integers(1, 9), limits)
def test_near_http_words(asked, data, step, lim):
    same(asked, data, (), lim)
    same(asked, data, range(step, len(data), step), lim)


@DIFF
@given(ASKED, st.binary(max_size=200), small_limits)
def test_arbitrary_bytes(asked, data, lim):
    same(asked, data, (), lim)
    same(asked, data, range(3, len(data), 3), lim)


# --- every byte in every place -------------------------------------------------------------------------

TEMPLATES = [
    b"@TTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"H@TP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP@1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/@.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1@1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.@ 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1@200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 @00 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 2@0 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 20@ OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200@OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 @K\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK@\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r@Content-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\n@Content-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length:@1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1@\r\n\r\nxxxxxxxxxxx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n@\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r@x",
    b"HTTP/1.1 200 OK\r\nConnection: clo@e\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ch@nked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked@\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n@\r\nx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx@\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: @\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n@\r\n",
    b"HTTP/1.1 100 Continue\r\n@\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: upgrade\r\n@\r\nraw",
    b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n@TTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n@TTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nclose-delimited @ body",
]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("asked", [[(b"GET", False), (b"GET", False)], [(b"HEAD", False), (b"GET", False)],
                                   [(b"GET", True), (b"GET", False)]], ids=["get", "head", "upgrade"])
def test_every_byte_in_every_place(template, asked):
    at = template.index(b"@")
    for byte in range(256):
        data = template[:at] + bytes([byte]) + template[at + 1:]
        same(asked, data)


@pytest.mark.parametrize("limit", range(16, 48))
def test_header_section_around_the_limit(limit):
    data = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\n\r\n"
    every_split([(b"GET", False)], data, (limit, 200))


@pytest.mark.parametrize("asked, data", [
    ([], b"HTTP/1.1 200 OK\r\n\r\n"),                                       # nobody asked
    ([(b"GET", False)], b""),                                               # closed before responding
    ([(b"GET", False)], b"HTTP/1.1 200 OK\r\nContent-Le"),                  # inside a head
    ([(b"GET", False)], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"),  # inside a body
    ([(b"GET", False)], b"HTTP/1.1 200 OK\r\n\r\nto the close"),            # a close-delimited body
    ([(b"HEAD", False)], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),  # HEAD: no body
    ([(b"GET", True)], b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nraw"),
    ([(b"GET", False)], b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),   # not asked
    ([(b"GET", False)], b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ([(b"GET", False)], b"HTTP/1.0 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n"),
])
def test_named_cases(asked, data):
    every_split(asked, data)


def test_the_factory_follows_the_switch():
    http1.set_native("off")
    try:
        assert type(http1.response_reader()) is PURE
    finally:
        http1.set_native("auto")
    assert type(http1.response_reader()) is NATIVE
