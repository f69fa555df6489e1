"""HTTP/2 framing, sans-IO: a server connection set up with a listener's limits (the `h2`
library's, or its native twin), the flood guard in front of it, and a stream's header block made
into the same `http1.Request` an HTTP/1.1 reader makes (gateway.streams serves the streams, behind
the connection core).

How this works: `connection(...)` makes the server side of one connection whose SETTINGS carry
the listener's limits (streams open at once, the header list as `max_header_bytes`, the HPACK
table; no server push): `h2_connection`'s `h2.connection.H2Connection`, or, when the native switch
allows, gateway._http2_c's H2Connection, its twin for the surface gateway.streams uses (the same
events by name and attribute, bytes and h2.exceptions; tests/unit/test_h2conn_native.py holds it
to h2's differentially). Either validates frames, HPACK, the stream states, flow control and DATA
against `content-length`. `request_of` refuses, as a stream error (RFC 9113 8.1.1), every header
block RFC 9113 8.2-8.3 calls malformed and whatever an HTTP/1.1 target could not be handed as it
is: a name that is empty or not a lower-case token (a pseudo-header's after its colon); CR, LF or
NUL anywhere, another control byte (HTAB aside) or DEL in a value; whitespace around a value;
connection-specific fields and `te` other than `trailers`; pseudo-headers unknown, repeated or
after a field; a `content-length` that is not one number; neither `:authority` nor `host`, either
one not a Host the HTTP/1.1 reader takes, or the two different; a missing or odd `:scheme`; a
`:method` that is not a token; a `:path` that is not origin-form or holds a byte the HTTP/1.1
reader refuses in a target (a space, a control, DEL, `#`, a non-ASCII byte); CONNECT. That is all h2's own inbound header validation refuses, and more (so h2's pass
is off; tests/unit/test_http2_request_native.py holds the superset). It builds the Request:
`host` from `:authority`, cookies joined into one field (RFC 9113 8.2.3), and the body's framing
for the target decided here, never taken from the client: the declared length
(which `h2` holds the DATA frames to), else chunked.

`FrameGuard` reads every frame header off the byte stream before `h2` parses it and counts what the
known floods are made of: streams the client resets (rapid reset, CVE-2023-44487), CONTINUATION
frames of one header block (CVE-2024-27316), PING/SETTINGS/PRIORITY frames per second, frames that
carry nothing. It names the limit passed; the caller answers GOAWAY (ENHANCE_YOUR_CALM).

HPACK has a native twin too (gateway._http2_c's Encoder and Decoder, which the native connection
calls in C), held to the hpack library byte for byte by tests/unit/test_hpack_native.py. So is
`request_of` (`request_builder()` gives the chosen one), held to this one by
tests/unit/test_http2_request_native.py.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import h2.config
import h2.connection
import h2.settings
from hpack.struct import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame

from . import headers as hdrs
from .errors import NativeUnavailable
from .http1 import _HOST_RE, _TCHARS, Request, Response

__all__ = ["PREFACE", "FrameGuard", "H2Refused", "connection", "h2_connection", "goaway_frame", "request_of",
           "response_fields", "split_answer", "CONNECTION_SPECIFIC", "NATIVE", "set_native",
           "native_mode", "request_builder", "answer_block", "block_size"]

try:
    from . import _http2_c as NATIVE
except ImportError:         # not built: hpack's own codec serves
    NATIVE = None  # type: ignore[assignment]

native_mode = "python"


def set_native(mode: str) -> str:
    """Pick the native connection (and HPACK codec, and request builder) or h2's for connections
    made from now on:
    ``"auto"``, ``"on"`` (NativeUnavailable without the extension) or ``"off"``; the choice."""
    global native_mode
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"native mode must be 'auto', 'on' or 'off', not {mode!r}")
    if mode == "on" and NATIVE is None:
        raise NativeUnavailable("native = \"on\" but gateway._http2_c cannot be imported "
                                "(reinstall with `pip install -e .` to build it)")
    native_mode = "native" if mode != "off" and NATIVE is not None else "python"
    return native_mode

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 6)
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, \
    _WINDOW_UPDATE, _CONTINUATION = range(10)
_END_STREAM = 0x1
_END_HEADERS = 0x4

# what a response may not carry over HTTP/2 (RFC 9113 8.2.2), nor anything the target's
# Connection names; the length is the target's own when it gave one
_RESPONSE_DROP = hdrs.HOP_BY_HOP | {b"content-length"}
CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade"))
_BAD_VALUE_BYTES = (b"\r", b"\n", b"\x00")
# what a field value may hold as HTTP/1.1 carries it (RFC 9110 5.5, as the HTTP/1.1 reader takes
# it): HTAB, SP, visible ASCII and obs-text; no other control byte, no DEL
_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_SECURE = frozenset((b"authorization", b"proxy-authorization"))
# what a field name may be made of: a lower-case HTTP/1.1 token (RFC 9110 5.1), a pseudo-header's
# after its colon. Stricter than RFC 9113 8.2.1 (no control, space, upper case, non-ASCII byte, or
# colon past the first): a name HTTP/1.1 could not carry is never forwarded
_NAME_BYTES = bytes(c for c in _TCHARS if not 0x41 <= c <= 0x5A)
# what a request-target may hold as the HTTP/1.1 reader takes it: visible ASCII but '#' (a fragment
# the gateway would match and a backend drop), no space, control, DEL or non-ASCII byte
_TARGET_BYTES = bytes(c for c in range(0x21, 0x7F) if c != 0x23)
_MARKED = _SECURE | {b"cookie"}
NO_BODY_STATUS = (204, 304)


def connection(max_streams: int, header_table_size: int, max_header_bytes: int) -> Any:
    """The server side of one HTTP/2 connection, its SETTINGS queued: gateway._http2_c's
    H2Connection when the native switch allows (`set_native`), else h2's (`h2_connection`).
    Both have the surface gateway.streams uses and give the same events, bytes and exceptions
    (tests/unit/test_h2conn_native.py)."""
    if native_mode == "native":
        return NATIVE.H2Connection(max_streams, header_table_size, max_header_bytes)
    return h2_connection(max_streams, header_table_size, max_header_bytes)


def h2_connection(max_streams: int, header_table_size: int, max_header_bytes: int
                  ) -> h2.connection.H2Connection:
    """h2's server side of one HTTP/2 connection, its SETTINGS (and the preface to send) queued.

    h2's passes over header blocks are off both ways, each replaced by the gateway's own: what it
    sends is made already as h2's outbound normalisation would make it and passes its outbound
    validation (`response_fields`, `split_answer`; tests/unit/test_http2_outbound.py holds the
    bytes equal), and what the client sends goes through `request_of`, which refuses all that
    h2's inbound validation would and more. h2 still joins cookies and checks frames, stream
    states, flow control and DATA against content-length."""
    config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                       validate_inbound_headers=False,
                                       normalize_inbound_headers=True,
                                       validate_outbound_headers=False,
                                       normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    conn.local_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
        h2.settings.SettingCodes.HEADER_TABLE_SIZE: header_table_size,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_bytes,
        h2.settings.SettingCodes.ENABLE_PUSH: 0,
    })
    conn.max_inbound_frame_size = 16384
    conn.decoder.max_header_list_size = max_header_bytes
    conn.decoder.max_allowed_table_size = header_table_size
    conn.initiate_connection()
    return conn


def goaway_frame(last_stream: int, code: int) -> bytes:
    """A GOAWAY frame, written by the caller itself rather than through h2's close_connection
    (which ends h2's state machine and would refuse the DATA still due on open streams)."""
    return GoAwayFrame(stream_id=0, last_stream_id=last_stream, error_code=code).serialize()


def _field(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """A field to send, never indexed by HPACK when it may carry credentials (h2's rule: any
    authorization, a cookie under 20 bytes), as h2's outbound normalisation marks it."""
    if name in _SECURE or (name == b"cookie" and len(value) < 20):
        return NeverIndexedHeaderTuple(name, value)
    return (name, value)


def response_fields(resp: Response, method: bytes) -> list[tuple[bytes, bytes]]:
    """The fields of a target's response as HTTP/2 carries them: lower-case names, values without
    surrounding whitespace, without the hop-by-hop and connection-specific ones (and those its
    Connection names), credentials never indexed; the length when the target declared one."""
    drop = _RESPONSE_DROP | resp.connection if resp.connection else _RESPONSE_DROP
    fields: list[tuple[bytes, bytes]] = []
    for name, value in resp.headers:
        low = name.strip().lower()
        if low in drop or low in CONNECTION_SPECIFIC:
            continue
        fields.append(_field(low, value.strip()) if low in _MARKED else (low, value.strip()))
    bodyless = method == b"HEAD" or resp.status in NO_BODY_STATUS
    if resp.content_length is not None and (not bodyless or method == b"HEAD"):
        fields.append((b"content-length", b"%d" % resp.content_length))
    return fields


class H2Refused(Exception):
    """A request stream the gateway refuses as malformed (a stream error)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class FrameGuard:
    """Reads frame headers off the client's byte stream (after the preface), before `h2` parses
    them, and says when a flood limit is passed (`scan` returns the reason code, else None)."""

    __slots__ = ("_skip", "_head", "_payload", "_block", "_continuations", "_empty",
                 "_window_at", "_resets", "_control", "max_resets", "max_control", "max_empty",
                 "max_continuations")

    def __init__(self, max_resets: int, max_control: int, max_empty: int,
                 max_continuations: int) -> None:
        self._skip = len(PREFACE)
        self._head = b""            # a frame header split across arrivals
        self._payload = 0           # payload bytes of the current frame still to come
        self._block = False         # inside a header block (HEADERS without END_HEADERS)
        self._continuations = 0
        self._empty = 0
        self._window_at = -1.0      # the start of the current one-second window
        self._resets = 0
        self._control = 0
        self.max_resets = max_resets
        self.max_control = max_control
        self.max_empty = max_empty
        self.max_continuations = max_continuations

    def scan(self, data: bytes, now: float) -> str | None:
        if now - self._window_at >= 1.0:
            self._window_at = now
            self._resets = self._control = 0
        i, n = 0, len(data)
        if self._skip:
            take = min(self._skip, n)
            self._skip -= take
            i = take
        while i < n:
            if self._payload:
                take = min(self._payload, n - i)
                self._payload -= take
                i += take
                continue
            need = 9 - len(self._head)
            piece = data[i:i + need]
            i += len(piece)
            if len(piece) < need:
                self._head += piece
                break
            head = self._head + piece if self._head else piece
            self._head = b""
            length = int.from_bytes(head[0:3], "big")
            kind = head[3]
            flags = head[4]
            self._payload = length
            reason = self._frame(kind, flags, length)
            if reason is not None:
                return reason
        return None

    def _frame(self, kind: int, flags: int, length: int) -> str | None:
        if kind == _CONTINUATION:
            self._continuations += 1
            if self._continuations > self.max_continuations:
                return "h2_continuation_flood"
            if length == 0:
                return self._count_empty()
            if flags & _END_HEADERS:
                self._block = False
            return None
        if kind == _DATA:
            if length == 0 and not flags & _END_STREAM:
                return self._count_empty()
            return None
        if kind == _HEADERS:
            self._continuations = 0
            self._block = not flags & _END_HEADERS
            if length == 0:
                return self._count_empty()
            return None
        if kind == _RST_STREAM:
            self._resets += 1
            return "h2_rapid_reset" if self._resets > self.max_resets else None
        if kind in (_PING, _SETTINGS, _PRIORITY):
            self._control += 1
            return "h2_control_flood" if self._control > self.max_control else None
        return None

    def _count_empty(self) -> str | None:
        self._empty += 1
        return "h2_empty_frames" if self._empty > self.max_empty else None


def request_of(raw: Sequence[tuple[bytes, bytes]], ended: bool, max_count: int) -> Request:
    """The request a stream's header block makes (after h2 joined its cookies), checked as RFC
    9113 8.2-8.3 asks; H2Refused names what is malformed."""
    method = scheme = path = authority = None
    fields: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    host = None
    lengths: set[bytes] = set()
    if len(raw) > max_count:
        raise H2Refused("too_many_headers", f"more than {max_count} header fields")
    for name, value in raw:
        if value.translate(None, _VALUE_BYTES) or any(b in name for b in _BAD_VALUE_BYTES):
            raise H2Refused("h2_bad_header_bytes", "a control byte (CR, LF, NUL or another) or DEL "
                                                   "in a header field")
        if value != value.strip(b" \t"):
            raise H2Refused("h2_bad_header_value", "whitespace around a header value")
        bare = name[1:] if name[:1] == b":" else name
        if not bare or bare.translate(None, _NAME_BYTES):
            raise H2Refused("h2_bad_header_name", "an empty header name, or one with a byte no "
                            "HTTP/1.1 token has (upper case, a control, a space, a delimiter, "
                            "a non-ASCII byte)")
        if name.startswith(b":"):
            if fields or cookies:
                raise H2Refused("h2_pseudo_header_order", "a pseudo-header after a regular field")
            if name == b":method" and method is None:
                method = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":authority" and authority is None:
                authority = value
            else:
                raise H2Refused("h2_bad_pseudo_header", f"pseudo-header {name!r} unknown or repeated")
            continue
        if name in CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
            raise H2Refused("h2_connection_header", f"connection-specific field {name!r}")
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            if host is not None:
                raise H2Refused("h2_bad_host", "more than one host field")
            host = value
        elif name == b"content-length":
            for part in value.split(b","):
                part = part.strip()
                if not part.isdigit():
                    raise H2Refused("h2_bad_content_length", "content-length is not a number")
                lengths.add(part.lstrip(b"0") or b"0")
        fields.append((name, value))
    if method is None:
        raise H2Refused("h2_missing_pseudo_header", ":method missing")
    if method == b"CONNECT":
        raise H2Refused("h2_connect", "CONNECT is not served")
    if scheme is None or path is None:
        raise H2Refused("h2_missing_pseudo_header", ":scheme or :path missing")
    if scheme != b"https":
        raise H2Refused("h2_bad_scheme", f":scheme {scheme!r} on a TLS connection")
    if not method or method.translate(None, _TCHARS):
        # a method is a token (RFC 9110 9.1): a space in it would move the target a backend reads
        raise H2Refused("h2_bad_method", ":method is not a token")
    if not path.startswith(b"/") and not (path == b"*" and method == b"OPTIONS"):
        raise H2Refused("h2_bad_path", ":path is neither origin-form nor * for OPTIONS")
    if path.translate(None, _TARGET_BYTES):
        raise H2Refused("h2_bad_path", ":path has a byte no HTTP/1.1 request-target has (a space, a control, "
                                        "DEL, '#' or a non-ASCII byte)")
    if authority is None and host is None:
        raise H2Refused("h2_missing_authority", "neither :authority nor host")
    if (authority is not None and _HOST_RE.fullmatch(authority) is None) or \
            (host is not None and _HOST_RE.fullmatch(host) is None):
        raise H2Refused("h2_bad_host", "invalid :authority or host value")
    if authority is not None and host is not None and authority != host:
        raise H2Refused("h2_authority_host_mismatch", ":authority and host disagree")
    if len(lengths) > 1:
        raise H2Refused("h2_bad_content_length", "content-length values disagree")
    if authority is not None and host is None:
        fields.insert(0, (b"host", authority))
    if cookies:
        # RFC 9113 8.2.3: one field for HTTP/1.1
        fields.append((b"cookie", b"; ".join(cookies)))
    content_length = int(lengths.pop()) if lengths else None
    if ended and content_length not in (None, 0):
        raise H2Refused("h2_content_length_mismatch", "content-length without a body")
    return Request(method=method, target=path, http_version=b"2", headers=fields, keep_alive=True,
                   content_length=content_length,
                   chunked=content_length is None and not ended,
                   expect_continue=False, upgrade=None,
                   host=authority if authority is not None else host, connection=frozenset())


if NATIVE is not None:
    NATIVE.init(request=Request, refused=H2Refused, connection_specific=CONNECTION_SPECIFIC,
                pure=request_of, host_re=_HOST_RE, tchars=_TCHARS)


def request_builder() -> Callable[[Sequence[tuple[bytes, bytes]], bool, int], Request]:
    """The `request_of` the native switch chose (for a session made now)."""
    return NATIVE.request_of if native_mode == "native" else request_of


# the answers the gateway makes are few and repeat (a rule's fixed response is one bytes object):
# each is split once, into its fields and into the header block HTTP/2 sends; lists shared, read only
_Split = tuple[int, list[tuple[bytes, bytes]], bytes]
_Block = tuple[int, list[tuple[bytes, bytes]], int, bytes]
_ANSWERS: dict[bytes, tuple[_Split, _Block]] = {}
_MAX_ANSWERS = 256
_MAX_ANSWER_BYTES = 4096


def block_size(block: Sequence[tuple[bytes, bytes]]) -> int:
    """A header block's size as the access record counts it (name, value and 4 bytes a field)."""
    size = 4 * len(block)
    for name, value in block:
        size += len(name) + len(value)
    return size


def _answer(payload: bytes) -> tuple[_Split, _Block]:
    known = _ANSWERS.get(payload)
    if known is not None:
        return known
    split = _split_answer(payload)
    status, fields, body = split
    block = [(b":status", b"%d" % status)]
    block.extend(fields)
    both = (split, (status, block, block_size(block), body))
    if len(payload) <= _MAX_ANSWER_BYTES:
        if len(_ANSWERS) >= _MAX_ANSWERS:
            _ANSWERS.clear()
        _ANSWERS[payload] = both
    return both


def split_answer(payload: bytes) -> _Split:
    """(status, lower-case fields, body) of a whole HTTP/1.1 response the gateway made; the
    fields HTTP/2 does not carry are left out. The fields' list is not to be changed."""
    return _answer(payload)[0]


def answer_block(payload: bytes) -> _Block:
    """(status, the header block with `:status` first, its `block_size`, body) of a whole
    HTTP/1.1 response the gateway made, split as `split_answer` splits it (the same cache). The
    block is not to be changed."""
    return _answer(payload)[1]


def _split_answer(payload: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    head, _, body = payload.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        low = name.strip().lower()
        if low in hdrs.HOP_BY_HOP:      # the connection-specific ones, te and trailer among them
            continue
        fields.append(_field(low, value.strip()))
    return status, fields, body
