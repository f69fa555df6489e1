"""gateway._http1_c.RequestReader against gateway.http1.RequestReader: the same bytes, cut the same way,
give the same events, the same refusals at the same point, and the same reader state after each piece.

The pure reader (llhttp through httptools, plus its own rules) is the reference: a difference is a bug
in the native twin unless the pure reader is plainly wrong.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import http1
from gateway.errors import GatewayError, NativeUnavailable
from gateway.http1 import MAX_CHUNK_LINE_BYTES, HTTPLimits, Request

NATIVE = http1.NATIVE
pytestmark = pytest.mark.skipif(NATIVE is None, reason="gateway._http1_c is not built")
PURE = http1.RequestReader

# HTTP1_DIFF_EXAMPLES raises the example count for a longer hunt (the suite's default is 300 each).
DIFF = settings(max_examples=int(os.environ.get("HTTP1_DIFF_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


# --- the trace both twins must agree on -------------------------------------------------------------

def feed_pieces(reader, data: bytes, bounds) -> list:
    """Feed `data` cut at `bounds`; after each piece the events, then the reader's state; a
    refusal ends it (with a check that the dead reader raises the same error from every call)."""
    out: list = []
    cuts = [0, *bounds, len(data)]
    for a, b in zip(cuts, cuts[1:]):
        try:
            reader.feed(data[a:b])
            out.append(("buffered", reader.buffered_bytes, reader.idle, reader.switched))
            events = []
            while (event := reader.next_event()) is not None:
                events.append(event)
            out.append(("events", events, reader.buffered_bytes, reader.idle))
            if reader.switched:
                out.append(("raw", reader.take_raw()))
        except GatewayError as err:
            out.append(("refused", b, type(err).__name__, err.status, err.reason, str(err)))
            # a dead reader raises the same error again, from every call
            for call in (lambda: reader.feed(b"x"), reader.next_event, reader.feed_eof):
                with pytest.raises(GatewayError) as again:
                    call()
                assert again.value is err
            out.append(("dead", reader.buffered_bytes))
            break
    return out


def trace(cls, data: bytes, bounds, limits: HTTPLimits, hold: bool = False, eof: bool = False) -> list:
    """Feed `data` cut at `bounds`; after each piece: the events, then the reader's state."""
    reader = cls(limits, hold_upgrades=hold)
    out = feed_pieces(reader, data, bounds)
    if out[-1][0] == "dead":
        return out
    if eof:
        try:
            reader.feed_eof()
            out.append(("eof", reader.idle, reader.next_event()))
        except GatewayError as err:
            out.append(("eof refused", type(err).__name__, err.status, err.reason, str(err)))
    return out


def same(data: bytes, bounds=(), limits: HTTPLimits = HTTPLimits(), hold: bool = False,
         eof: bool = True) -> list:
    bounds = sorted(set(b for b in bounds if 0 < b < len(data)))
    expected = trace(PURE, data, bounds, limits, hold, eof)
    got = trace(NATIVE, data, bounds, limits, hold, eof)
    assert got == expected, (data, bounds, limits, hold)
    return expected


def every_split(data: bytes, limits: HTTPLimits = HTTPLimits(), hold: bool = False) -> None:
    """Whole, byte by byte, and cut in two at every offset."""
    same(data, (), limits, hold)
    same(data, range(1, len(data)), limits, hold)
    for i in range(1, len(data)):
        same(data, (i,), limits, hold)


# --- generated requests -----------------------------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12).map(str.encode)
values = st.binary(max_size=16).map(lambda v: bytes(b for b in v if b in range(0x20, 0x7f) or b >= 0x80
                                                     or b == 9))
METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"PATCH", b"PURGE", b"QUERY",
           b"M-SEARCH", b"PRI", b"CONNECT", b"SOURCE", b"DESCRIBE", b"GET_PARAMETER"]
targets = st.one_of(
    st.text("abcdefxyz/?=&%-._~!$'()*+,;:@0189", max_size=20).map(lambda t: ("/" + t).encode()),
    st.just(b"*"),
    st.sampled_from([b"http://a/x", b"https://Example.com:8443/p?q", b"http://u@a/", b"http:///x",
                     b"ftp://a/", b"a:b", b"/#f", b"/a?b#c", b"example.com:443", b"HTTP://a"]),
)
SPECIAL = [b"Host: a", b"Host: example.com:443", b"Connection: close", b"Connection: keep-alive",
           b"Connection: Upgrade", b"Connection: keep-alive, upgrade", b"Connection: x, close ",
           b"Proxy-Connection: close", b"Upgrade: websocket", b"Upgrade: h2c", b"Upgrade:",
           b"Expect: 100-continue", b"Expect: 100-Continue, 100-continue", b"Expect: x",
           b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
           b"Transfer-Encoding: Chunked ", b"Transfer-Encoding: chunked\t", b"Transfer-Encoding:",
           b"Content-Length: 0", b"Content-Length: 3", b"Content-Length: 003", b"Content-Length:",
           b"Content-Length: 18446744073709551615", b"Content-Length: 18446744073709551616",
           b"Content-Length: 1, 1", b"Host:", b"Host: a b", b"Host: [::1]:80"]


@st.composite
def chunked_body(draw) -> bytes:
    out = []
    for size in draw(st.lists(st.integers(1, 12), max_size=3)):
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b';a="q\\"x"', b";a=b;c", b"; x"]))
        digits = b"%x" % size if draw(st.booleans()) else b"%X" % size
        out.append(b"0" * draw(st.integers(0, 2)) + digits + ext + b"\r\n" + b"d" * size + b"\r\n")
    out.append(b"0\r\n")
    for trailer in draw(st.lists(st.sampled_from([b"T: v", b"X-Y: z ", b"Connection: close",
                                                  b"Content-Length: 1", b"Transfer-Encoding: x",
                                                  b"Upgrade: y"]), max_size=2)):
        out.append(trailer + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


@st.composite
def request_bytes(draw) -> bytes:
    method = draw(st.sampled_from(METHODS))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"RTSP/1.0"]))
    fields = draw(st.lists(st.one_of(st.sampled_from(SPECIAL),
                                     st.tuples(tokens, values).map(lambda nv: nv[0] + b": " + nv[1])),
                           max_size=6))
    if draw(st.booleans()):
        fields.insert(0, b"Host: a")
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=12))
        fields.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        fields.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_body())
    fields = draw(st.permutations(fields))
    lead = draw(st.sampled_from([b"", b"", b"\r\n", b"\n", b"\r\n\r\n"]))
    return (lead + method + b" " + draw(targets) + b" " + version + b"\r\n"
            + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body)


pipelines = st.lists(request_bytes(), min_size=1, max_size=3).map(b"".join)

SPECIAL_BYTES = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b"_", b"\x80", b"\xff", b";", b",",
                 b'"', b"\\", b"#", b"?", b"@", b"\x7f", b"\x0c", b"0", b"a", b"\r\n\r\n", b"\r\n "]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(pipelines))
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate", "huge"]))
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.sampled_from(SPECIAL_BYTES))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 3))]
        elif kind == "truncate":
            del data[i:]
        elif kind == "duplicate":
            start = data.rfind(b"\n", 0, i) + 1
            end = data.find(b"\n", i)
            if end > 0:
                data[end + 1:end + 1] = data[start:end + 1]
        else:
            data[i:i] = b"Content-Length: 99999999999999999999\r\n"
    return bytes(data)


small_limits = st.builds(
    HTTPLimits,
    max_request_line_bytes=st.integers(14, 48),
    max_header_bytes=st.integers(11, 120),
    max_header_count=st.integers(1, 6),
    max_body_bytes=st.one_of(st.none(), st.integers(0, 24)),
)
limits = st.one_of(st.just(HTTPLimits()), small_limits)


def multi_splits(data_strategy):
    return data_strategy.flatmap(lambda d: st.tuples(
        st.just(d), st.lists(st.integers(1, max(1, len(d) - 1)), max_size=12)))


# --- the properties ------------------------------------------------------------------------------

@DIFF
@given(request_bytes(), limits, st.booleans())
def test_generated_requests_split_at_every_offset(data, lim, hold):
    every_split(data, lim, hold)


@DIFF
@given(multi_splits(pipelines), limits, st.booleans())
def test_pipelines_at_random_splits(case, lim, hold):
    data, bounds = case
    same(data, (), lim, hold)
    same(data, bounds, lim, hold)


@DIFF
@given(mutated(), limits, st.booleans())
def test_mutated_requests_split_at_every_offset(data, lim, hold):
    every_split(data, lim, hold)


@DIFF
@given(multi_splits(mutated()), small_limits, st.booleans())
def test_mutated_requests_at_random_splits(case, lim, hold):
    data, bounds = case
    same(data, bounds, lim, hold)
    same(data, range(1, len(data)), lim, hold)


_ALPHABET = st.sampled_from([b"GET", b"POST", b" ", b"/", b"\r\n", b"\r", b"\n", b":", b"Host: a",
                             b"Content-Length: 3", b"Transfer-Encoding: chunked", b"HTTP/1.1",
                             b"HTTP/1.0", b"0", b"3", b";", b"abc", b"\t", b"\x00", b"Connection: close",
                             b"Connection: upgrade", b"Upgrade: x", b"Expect: 100-continue", b"*",
                             b"http://a", b"Proxy-Connection: close", b"\r\n\r\n", b"=", b'"'])


@DIFF
@given(st.lists(_ALPHABET, max_size=60).map(b"".join), st.integers(1, 9), limits, st.booleans())
def test_near_http_words(data, step, lim, hold):
    same(data, (), lim, hold)
    same(data, range(step, len(data), step), lim, hold)


@DIFF
@given(st.binary(max_size=200), small_limits)
def test_arbitrary_bytes(data, lim):
    same(data, (), lim)
    same(data, range(3, len(data), 3), lim)


# --- every byte in every place -----------------------------------------------------------------------

TEMPLATES = [
    b"@ET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET@/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET @ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /@ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /?@ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /#@ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET h@tp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http:@/a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a@/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / @TTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP@1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1@1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1@\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r@Host: a\r\n\r\n",
    b"GET / HTTP/1.1\r\n@Host: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHo@st: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost@: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection@: a\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:@a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a@\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r@\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n@\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r@",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: clo@e\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close@\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n@\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1@\r\n\r\nxxxxxxxxxxx",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:@1\r\n\r\nx",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ch@nked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked@\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n@\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1@\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;@\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a@\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=@\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"@\"\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"\\@\"\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"\"@\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r@x\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx@\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r@0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n@: v\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: @\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n@\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n@ET / HTTP/1.1\r\nHost: a\r\n\r\n",
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_byte_in_every_place(template):
    at = template.index(b"@")
    for byte in range(256):
        data = template[:at] + bytes([byte]) + template[at + 1:]
        same(data)
        same(data, range(1, len(data)))
        same(data, (at,))
        same(data, (at + 1,))


# --- fixed cases: limits at their edges, end of stream, take_raw -------------------------------------

def _head_of(section_size: int) -> bytes:
    base = b"Host: a\r\nX: \r\n\r\n"
    return b"GET / HTTP/1.1\r\n" + base.replace(b"X: ", b"X: " + b"v" * (section_size - len(base)))


@pytest.mark.parametrize("size", range(16, 40))
def test_header_section_around_the_limit(size):
    for cap in (28, 29, 30, 31):
        every_split(_head_of(size), HTTPLimits(max_header_bytes=cap))


@pytest.mark.parametrize("length", range(14, 24))
def test_request_line_around_the_limit(length):
    line = b"GET /" + b"a" * (length - 14) + b" HTTP/1.1"
    for cap in (16, 17, 18, 19, 20):
        every_split(line + b"\r\nHost: a\r\n\r\n", HTTPLimits(max_request_line_bytes=cap))
        every_split(b"\r\n\r\n" + line + b"\r\nHost: a\r\n\r\n",
                    HTTPLimits(max_request_line_bytes=cap, max_header_bytes=16))


def test_chunk_lines_and_trailers_at_their_bounds():
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    for zeros in (MAX_CHUNK_LINE_BYTES - 4, MAX_CHUNK_LINE_BYTES - 3, MAX_CHUNK_LINE_BYTES - 2,
                  MAX_CHUNK_LINE_BYTES):
        data = head + b"0" * zeros + b"3\r\nabc\r\n0\r\n\r\n"
        same(data)
        same(data, range(len(head), len(data), 97))
    for size in range(50, 70):
        trailer = b"T: " + b"v" * (size - 7) + b"\r\n\r\n"
        for cuts in ((), (len(head) + 9,)):
            same(head + b"1\r\nx\r\n0\r\n" + trailer, cuts, HTTPLimits(max_header_bytes=64))


def test_huge_lengths_and_body_limits():
    for value in (b"18446744073709551615", b"18446744073709551616", b"99999999999999999999",
                  b"0" * 40 + b"5", b"1" * 19):
        data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\nhello"
        for lim in (HTTPLimits(), HTTPLimits(max_body_bytes=5), HTTPLimits(max_body_bytes=4)):
            same(data, (), lim)
            same(data, range(1, len(data)), lim)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    for size in (b"ffffffffffffffff", b"10000000000000000", b"7fffffffffffffff"):
        for lim in (HTTPLimits(), HTTPLimits(max_body_bytes=10)):
            same(head + size + b"\r\nabc", (), lim)


@pytest.mark.parametrize("data", [
    b"", b"\r\n", b"GET", b"GET / HTTP/1.1\r\nHost: a\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n",
])
def test_feed_eof(data):
    for hold in (False, True):
        same(data, (), HTTPLimits(), hold, eof=True)
        same(data, range(1, len(data)), HTTPLimits(), hold, eof=True)


@pytest.mark.parametrize("framing, body", [
    (b"", b""),
    (b"Content-Length: 5\r\n", b"hello"),
    (b"Transfer-Encoding: chunked\r\n", b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
])
def test_take_raw_after_a_held_upgrade(framing, body):
    data = (b"POST /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + framing
            + b"\r\n" + body + b"\x81\x85\x00\x00\x00\x00hello" + b"GET /smuggled HTTP/1.1\r\n\r\n")
    for hold in (False, True):
        every_split(data, HTTPLimits(), hold)
    for cls in (PURE, NATIVE):
        reader = cls(HTTPLimits(), hold_upgrades=True)
        reader.feed(data)
        assert reader.switched and reader.take_raw().startswith(b"\x81\x85")
        reader.feed(b"more")
        reader.feed_eof()
        assert reader.take_raw() == b"more" and reader.take_raw() == b""


def test_buffered_bytes_follow_each_event():
    data = b"\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabcdefGET / HTTP/1.1\r\nHost: a\r\n\r\n"
    seen = []
    for cls in (PURE, NATIVE):
        reader = cls(HTTPLimits())
        reader.feed(data)
        sizes = [reader.buffered_bytes]
        while reader.next_event() is not None:
            sizes.append(reader.buffered_bytes)
        seen.append(sizes)
    assert seen[0] == seen[1] and seen[0][0] == len(data) and seen[0][-1] == 0
    same(data, range(1, len(data)))


def test_both_twins_emit_equal_event_objects():
    data = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
    events = []
    for cls in (PURE, NATIVE):
        reader = cls(HTTPLimits())
        reader.feed(data)
        events.append([reader.next_event(), reader.next_event()])
    assert events[0] == events[1]
    assert type(events[1][0]) is Request and events[1][1] is http1.END_OF_MESSAGE
    assert NATIVE().idle and NATIVE(HTTPLimits()).buffered_bytes == 0


# --- selection ---------------------------------------------------------------------------------------

def test_set_native_selects_the_factory_twin():
    try:
        assert http1.set_native("off") == "python" and http1.native_mode == "python"
        assert type(http1.request_reader(HTTPLimits())) is PURE
        assert http1.set_native("on") == "native"
        assert type(http1.request_reader(HTTPLimits(), hold_upgrades=True)) is NATIVE
        assert http1.set_native("auto") == "native"
        with pytest.raises(ValueError):
            http1.set_native("yes")
    finally:
        http1.set_native("auto")


def test_on_without_the_extension_is_refused(monkeypatch):
    monkeypatch.setattr(http1, "NATIVE", None)
    with pytest.raises(NativeUnavailable):
        http1.set_native("on")
    assert http1.set_native("auto") == "python"
    monkeypatch.undo()
    http1.set_native("auto")
