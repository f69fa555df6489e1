"""gateway.http2.request_of's native twin (gateway._http2_c.request_of) against the pure one: the
same Request, or the same refusal (reason and message), for generated and mutated header lists."""
from __future__ import annotations

import pytest
from hpack.struct import HeaderTuple, NeverIndexedHeaderTuple
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import http2

native = pytest.importorskip("gateway._http2_c", reason="the native HTTP/2 extension is not built")

SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GOOD = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"), (b":path", b"/a")]

NAMES = [b":method", b":scheme", b":path", b":authority", b":status", b":", b"host", b"Host", b"cookie",
         b"content-length", b"te", b"connection", b"keep-alive", b"proxy-connection",
         b"transfer-encoding", b"upgrade", b"user-agent", b"x-a", b"X-A", b"", b"x\x00y", b"x\ry"]
VALUES = [b"GET", b"POST", b"CONNECT", b"OPTIONS", b"https", b"http", b"/", b"*", b"/x?y", b"x", b"",
          b"example.com", b"EXAMPLE.com", b"trailers", b"Trailers", b"gzip", b"0", b"00", b"10",
          b"1, 1", b"1,2", b" 5", b"5 ", b"\t5", b"5\x0b", b"\x0c7", b"1,", b"a=b", b"v\nw", b"v\x00",
          b"+1", b"\xd9\xa1", b"123456789012345678901234567890", b"GET /admin", b"G(T", b"/a b",
          b"/a?x y", b"/a\x7f", b"a@b.example", b"a b", b"[::1]:8443", b"example.com:443", b"\xc3\xa9"]

name = st.one_of(st.sampled_from(NAMES), st.binary(max_size=6))
value = st.one_of(st.sampled_from(VALUES), st.binary(max_size=8))
pair = st.tuples(name, value)
wrapped = st.one_of(pair, pair.map(lambda p: HeaderTuple(*p)), pair.map(lambda p: NeverIndexedHeaderTuple(*p)))


def _outcome(fn, raw, ended, max_count):
    try:
        return "ok", fn(raw, ended, max_count)
    except http2.H2Refused as exc:
        return "refused", exc.reason, str(exc)
    except Exception as exc:     # noqa: BLE001 - the class is what is compared
        return "error", type(exc)


def _same(raw, ended=True, max_count=100):
    assert _outcome(native.request_of, raw, ended, max_count) == \
        _outcome(http2.request_of, raw, ended, max_count), raw


@SETTINGS
@given(st.lists(wrapped, max_size=10), st.booleans(), st.sampled_from([3, 100]))
def test_arbitrary_header_lists(raw, ended, max_count):
    _same(raw, ended, max_count)


@SETTINGS
@given(st.lists(wrapped, max_size=6), st.integers(0, 10), st.booleans())
def test_a_valid_request_with_fields_spliced_in(extra, where, ended):
    """A well-formed request (its pseudo-headers first) with fields put anywhere in it."""
    raw = list(GOOD)
    for i, field in enumerate(extra):
        raw.insert(min(where + i, len(raw)), field)
    _same(raw, ended)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([b"host", b"cookie", b"content-length", b"te", b"x-a"]), value),
                max_size=6), st.booleans())
def test_valid_pseudo_headers_then_regular_fields(fields, ended):
    _same(GOOD + fields, ended)


def test_odd_input_goes_to_the_pure_one():
    _same([(b":method", b"GET", True)])          # a three-tuple: the pure one's ValueError
    _same([("x", "y")])                          # text, not bytes
    _same([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b"x", bytearray(b"y"))])


def test_the_request_is_the_pure_ones():
    raw = GOOD + [(b"cookie", b"a=1"), (b"x-a", b"1"), (b"cookie", b"b=2"), (b"content-length", b"007")]
    got = native.request_of(raw, False, 100)
    assert got == http2.request_of(raw, False, 100)
    assert got.headers[0] == (b"host", b"example.com") and got.headers[-1] == (b"cookie", b"a=1; b=2")
    assert (got.content_length, got.chunked, got.host, got.http_version) == (7, False, b"example.com", b"2")


def test_the_session_takes_the_chosen_builder():
    before = http2.native_mode
    try:
        http2.set_native("on")
        assert http2.request_builder() is native.request_of
        http2.set_native("off")
        assert http2.request_builder() is http2.request_of
    finally:
        http2.set_native("auto" if before == "native" else "off")


# -- what h2's own inbound validation refused, request_of refuses --------------------------------
# The connection runs with h2's inbound header validation off (gateway.http2.connection): a block
# h2 would have refused must be refused by request_of, on the fields h2 hands it (its cookie
# fields joined, as normalize_inbound_headers leaves them).

def _h2_refuses(raw) -> bool:
    import h2.exceptions
    from h2.utilities import HeaderValidationFlags, validate_headers
    flags = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False,
                                  is_push_promise=False)
    try:
        list(validate_headers(raw, flags))
    except h2.exceptions.ProtocolError:
        return True
    return False


def _as_h2_hands_it(raw):
    from h2.utilities import HeaderValidationFlags, normalize_inbound_headers
    flags = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False,
                                  is_push_promise=False)
    return list(normalize_inbound_headers([HeaderTuple(n, v) for n, v in raw], flags))


NAME_BYTES = st.binary(min_size=0, max_size=5)
names_h2 = st.one_of(st.sampled_from(NAMES), NAME_BYTES,
                     st.tuples(st.sampled_from([b"x", b":", b"a-b"]), NAME_BYTES).map(b"".join))


@SETTINGS
@given(st.lists(st.tuples(names_h2, value), max_size=8), st.integers(0, 12), st.booleans())
def test_request_of_refuses_all_that_h2s_validation_refuses(extra, where, keep_good):
    raw = list(GOOD) if keep_good else []
    for i, field in enumerate(extra):
        raw.insert(min(where + i, len(raw)), field)
    fields = _as_h2_hands_it(raw)
    for fn in (http2.request_of, native.request_of):
        if _h2_refuses(fields):
            with pytest.raises(http2.H2Refused):
                fn(fields, True, 100)


@pytest.mark.parametrize("field", [
    (b"x y", b"v"), (b"x\x7f", b"v"), (b"x\xc3\xa9", b"v"), (b"x:y", b"v"), (b"X-A", b"v"),
    (b"\x01", b"v"), (b"x\t", b"v"), (b"", b"v"), (b":path:", b"/"),
])
def test_names_rfc_9113_forbids_are_refused(field):
    raw = [*GOOD, field]
    assert _h2_refuses(_as_h2_hands_it(raw))
    for fn in (http2.request_of, native.request_of):
        with pytest.raises(http2.H2Refused) as exc:
            fn(_as_h2_hands_it(raw), True, 100)
        assert exc.value.reason in ("h2_bad_header_name", "h2_bad_header_bytes")


def test_authority_and_host_are_compared_as_h2_compared_them():
    base = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")]
    neither = base
    differ_in_case = [*base, (b":authority", b"A.example"), (b"host", b"a.example")]
    for raw in (neither, differ_in_case):
        assert _h2_refuses(raw)
        for fn in (http2.request_of, native.request_of):
            with pytest.raises(http2.H2Refused):
                fn(raw, True, 100)


@pytest.mark.parametrize("pseudo, value, reason", [
    (b":method", b"GET /admin", "h2_bad_method"),      # the target a backend reads would move
    (b":method", b"", "h2_bad_method"),
    (b":method", b"G\xc3\xa9T", "h2_bad_method"),
    (b":path", b"/public /admin", "h2_bad_path"),
    (b":path", b"/a?q=x y", "h2_bad_path"),
    (b":path", b"/a\x7f", "h2_bad_header_bytes"),     # a field's value HTTP/1.1 could not carry
    (b":path", b"/a\x01", "h2_bad_header_bytes"),
    (b":path", b"/admin#x", "h2_bad_path"),           # the gateway would match it, a backend drop it
    (b":path", b"/a\xc3\xa9", "h2_bad_path"),
    (b":path", b"/a?q=\x80", "h2_bad_path"),
    (b":authority", b"user@example.com", "h2_bad_host"),
    (b":authority", b"example.com evil", "h2_bad_host"),
    (b":authority", b"example.com/x", "h2_bad_host"),
])
def test_what_http11_could_not_carry_is_refused(pseudo, value, reason):
    raw = [(n, value if n == pseudo else v) for n, v in GOOD]
    for fn in (http2.request_of, native.request_of):
        with pytest.raises(http2.H2Refused) as exc:
            fn(raw, True, 100)
        assert exc.value.reason == reason


@pytest.mark.parametrize("authority", [b"example.com", b"example.com:8443", b"[::1]:8443", b"192.0.2.1",
                                       b"xn--bcher-kva.example"])
def test_hosts_http11_accepts_are_accepted(authority):
    raw = [(n, authority if n == b":authority" else v) for n, v in GOOD]
    assert native.request_of(raw, True, 100) == http2.request_of(raw, True, 100)
    assert native.request_of(raw, True, 100).host == authority


@pytest.mark.parametrize("name", [b"x(y", b"a/b", b"a=b", b'x"y', b"x;", b"x@y", b"{x}", b"x,y", b"x?"])
def test_names_http11_could_not_carry_are_refused_though_rfc_9113_allows_them(name):
    raw = [*GOOD, (name, b"v")]
    assert not _h2_refuses(_as_h2_hands_it(raw))     # h2 takes them: the gateway does not
    for fn in (http2.request_of, native.request_of):
        with pytest.raises(http2.H2Refused) as exc:
            fn(raw, True, 100)
        assert exc.value.reason == "h2_bad_header_name"



@pytest.mark.parametrize("value", [b"a\x0bb", b"a\x01", b"\x7f", b"a\x1fb"])
def test_values_http11_could_not_carry_are_refused(value):
    raw = [*GOOD, (b"x-a", value)]
    for fn in (http2.request_of, native.request_of):
        with pytest.raises(http2.H2Refused) as exc:
            fn(raw, True, 100)
        assert exc.value.reason == "h2_bad_header_bytes"
    ok = [*GOOD, (b"x-a", b"a\tb \x80\xff")]
    assert native.request_of(ok, True, 100) == http2.request_of(ok, True, 100)



def test_a_path_takes_exactly_the_bytes_the_http11_reader_takes_in_a_target():
    from gateway import http1
    for c in range(0x21, 0x100):
        path = b"/a" + bytes([c]) + b"b?q" + bytes([c])
        reader = http1.RequestReader()
        try:
            reader.feed(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            http11 = reader.next_event() is not None
        except Exception:       # noqa: BLE001 - refused
            http11 = False
        raw = [(n, path if n == b":path" else v) for n, v in GOOD]
        for fn in (http2.request_of, native.request_of):
            try:
                fn(raw, True, 100)
                h2_ok = True
            except http2.H2Refused:
                h2_ok = False
            assert h2_ok == http11, (hex(c), fn)
