"""Sans-IO HTTP/1.1: request and response framing over llhttp (httptools), limits, events.

How this works. A reader takes bytes (`feed`) and hands out events (`next_event`): a `Request` (or
`Response`) for each head, `Data` for each piece of body, `EndOfMessage` when the message is done.
llhttp, in its strict mode, does the parsing; this module decides where each message starts and ends
and what to refuse.

It never lets llhttp parse past a point it does not know. Bytes are handed to llhttp in slices cut so
that every message ends exactly at the end of a slice and no slice runs past a limit:
- a request line is fed up to its LF and never past its budget;
- the rest of a head up to the first CRLF CRLF (strict llhttp ends a head there and nowhere else), and
  never past the header budget, so an endless header line is refused the moment it uses the budget up;
- a Content-Length body exactly its length;
- a chunked body one framing line at a time (each bounded), then exactly the chunk's size.
So the reader knows how many bytes a head took, which byte starts the next message, and that nothing
after `Connection: close` was ever parsed; and because llhttp never sees a byte beyond a limit, a
refusal is the same however the bytes were cut (a malformed byte before the limit wins, one after it
is never read). llhttp still validates every byte it is given.

What llhttp (strict) already refuses: Content-Length together with Transfer-Encoding, duplicate or
list-valued or non-digit or overflowing Content-Length, Transfer-Encoding whose final coding is not
chunked, bad chunk sizes and extensions, a missing CRLF after chunk data, bare CR or LF in any line,
obs-fold, whitespace before the colon, empty or non-token field names, CTLs in field values, unknown
methods, CTLs and spaces in the target, malformed versions. What this module adds: HTTP versions
other than 1.0 and 1.1 (llhttp takes 0.9, 2.0, RTSP/ and ICE/), exactly one valid Host in HTTP/1.1,
request-target form checks (no fragment, `*` only for OPTIONS, absolute-form only http(s) without
userinfo and agreeing with Host), transfer codings other than plain `chunked` (llhttp takes
"gzip, chunked"), Transfer-Encoding in HTTP/1.0, Expect, CONNECT, the size and count limits, a bound on
chunk-size lines (llhttp accepts endless leading zeros and extensions), a bound on trailers, and, on
the response side, the HEAD and 1xx framing rules httptools cannot express.

Every refusal is an `HTTPProtocolError` (client) or an `UpstreamError` (upstream) with a reason code
and a status; after one, the reader is dead and every call raises the same error again.

Serialisation helpers at the end build what the gateway sends: it always re-serialises heads and
re-frames bodies, it never forwards bytes as the client sent them.
"""
from __future__ import annotations

import enum
import importlib
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union
from dataclasses import dataclass, fields

from httptools import (HttpParserCallbackError, HttpParserError, HttpParserUpgrade,
                       HttpRequestParser, HttpResponseParser)

from gateway.errors import GatewayError, HTTPProtocolError, NativeUnavailable, UpstreamError

__all__ = [
    "HTTPLimits", "Request", "Response", "Data", "EndOfMessage", "END_OF_MESSAGE",
    "RequestReader", "ResponseReader",
    "response_head", "chunk", "LAST_CHUNK", "HOP_BY_HOP", "connection_tokens", "error_response",
    "REASON_PHRASES", "MAX_CHUNK_LINE_BYTES",
    "request_reader", "set_native", "native_mode", "NATIVE",
]

# --- limits -----------------------------------------------------------------------------------------

DEFAULT_MAX_REQUEST_LINE_BYTES = 8192
DEFAULT_MAX_HEADER_BYTES = 32768
DEFAULT_MAX_HEADER_COUNT = 100
DEFAULT_MAX_RESPONSE_HEADER_BYTES = 65536
DEFAULT_MAX_RESPONSE_HEADER_COUNT = 200
# A chunk-size line with its extensions and CRLF. llhttp bounds neither leading zeros nor extensions
# (Node added its own bound for CVE-2024-22019); real clients send a few hex digits.
MAX_CHUNK_LINE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """Per-connection bounds on what a client may send.

    `max_request_line_bytes`: method SP request-target SP version, without the CRLF (414).
    `max_header_bytes`: everything after the request line's CRLF up to and including the empty line
    that ends the head (431); empty lines a client sends before the request line count here too.
    Trailers of a chunked body get the same allowance. `max_header_count`: field lines (431), counted
    when the head ends (the byte limit bounds what can arrive before).
    `max_body_bytes`: body bytes after de-chunking, None for no bound (413).
    """

    max_request_line_bytes: int = DEFAULT_MAX_REQUEST_LINE_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_body_bytes: int | None = None

    def __post_init__(self) -> None:
        # "GET / HTTP/1.1" is 14 bytes; "Host: a\r\n\r\n" is 11.
        if self.max_request_line_bytes < 14:
            raise ValueError("max_request_line_bytes must be at least 14")
        if self.max_header_bytes < 11:
            raise ValueError("max_header_bytes must be at least 11")
        if self.max_header_count < 1:
            raise ValueError("max_header_count must be at least 1")
        if self.max_body_bytes is not None and self.max_body_bytes < 0:
            raise ValueError("max_body_bytes must be None or >= 0")


# --- events -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Request:
    """A request head. `headers` keep names as received and values without surrounding OWS.

    `content_length` is the declared length (None when absent); `chunked` means the body is chunked;
    neither means no body (RFC 9112 6.3, item 7). `host` is the authority of an absolute-form target,
    else the Host field value (RFC 9112 3.2.2). `upgrade` is the lowercased Upgrade value when an
    HTTP/1.1 request asks to switch protocols; the reader itself never switches and keeps parsing
    HTTP/1.1, which is what refusing an upgrade means (RFC 9110 7.8).
    """

    method: bytes
    target: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    content_length: int | None
    chunked: bool
    expect_continue: bool
    upgrade: bytes | None
    host: bytes | None
    connection: frozenset[bytes] = frozenset()   # the lowercased options of every Connection field


@dataclass(frozen=True, slots=True)
class Response:
    """A final response head from an upstream.

    `content_length` is the Content-Length the upstream declared (None if it sent none); `chunked`
    means a chunked body follows. A response that cannot have a body (to HEAD, 204, 304: RFC 9112 6.3
    items 1-2) is followed by EndOfMessage at once whatever it declares; its `content_length` is
    still the declared one (for HEAD, the length a GET would get, worth passing on: RFC 9110 9.3.2)
    and `chunked` is False. Otherwise a response with neither is close-delimited and has
    `keep_alive` False.
    """

    status: int
    reason: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    content_length: int | None
    chunked: bool
    connection: frozenset[bytes] = frozenset()   # the lowercased options of every Connection field


@dataclass(frozen=True, slots=True)
class Data:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    pass


END_OF_MESSAGE = EndOfMessage()
# what a reader's next_event() returns (a ResponseReader: Response in place of Request)
Event = Union[Request, Response, Data, EndOfMessage]


# --- reader state -----------------------------------------------------------------------------------

class _State(enum.Enum):
    successors: tuple[_State, ...]      # set on each member below, from _TRANSITIONS
    IDLE = "idle"        # between messages (empty lines before a request line are allowed here)
    HEAD = "head"        # a head has begun
    BODY = "body"        # the head is done; the body (possibly empty) is being read
    CLOSED = "closed"    # the last message is done (close, HTTP/1.0, EOF); later bytes are ignored
    ERROR = "error"      # a refusal was raised; every call raises it again
    SWITCHED = "switched"  # a protocol switch may follow the last message: later bytes are kept raw


_IDLE, _HEAD, _BODY, _CLOSED, _ERROR, _SWITCHED = (
    _State.IDLE, _State.HEAD, _State.BODY, _State.CLOSED, _State.ERROR, _State.SWITCHED)

_TRANSITIONS: dict[_State, tuple[_State, ...]] = {
    _IDLE: (_HEAD, _CLOSED, _ERROR),
    _HEAD: (_BODY, _ERROR),
    _BODY: (_IDLE, _CLOSED, _ERROR, _SWITCHED),
    _CLOSED: (),
    _ERROR: (),
    _SWITCHED: (),
}
# The guard runs a few times per message: keep each state's successors on the member itself, so the
# check is an identity scan of a short tuple instead of two hashes through Enum.__hash__.
for _state, _successors in _TRANSITIONS.items():
    _state.successors = _successors
del _state, _successors


class _Framing(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_EOF = "until_eof"      # responses only (RFC 9112 6.3 item 8)


class _Chunk(enum.Enum):
    SIZE = "size"                # chunk-size [ext] CRLF
    DATA = "data"
    DATA_END = "data_end"        # the CRLF after chunk data
    TRAILER = "trailer"          # trailer field lines and the final empty line


_NONE, _LENGTH, _CHUNKED, _UNTIL_EOF = (
    _Framing.NONE, _Framing.LENGTH, _Framing.CHUNKED, _Framing.UNTIL_EOF)
_C_SIZE, _C_DATA, _C_DATA_END, _C_TRAILER = (
    _Chunk.SIZE, _Chunk.DATA, _Chunk.DATA_END, _Chunk.TRAILER)

_CRLFCRLF = b"\r\n\r\n"
_OWS = (b" ", b"\t")
_V11 = b"1.1"
_V10 = b"1.0"

# Fields the readers act on, found by length first so most names are never lowercased.
_F_HOST, _F_CL, _F_TE, _F_CONNECTION, _F_EXPECT, _F_UPGRADE = range(6)
_SPECIAL_FIELDS = {
    b"host": _F_HOST, b"content-length": _F_CL, b"transfer-encoding": _F_TE,
    b"connection": _F_CONNECTION, b"expect": _F_EXPECT, b"upgrade": _F_UPGRADE,
}
_SPECIAL_LENGTHS = frozenset(len(name) for name in _SPECIAL_FIELDS)

_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# RFC 9110 5.6.2 tchar (the native reader's TOKEN table is built from it)
_TCHARS = b"!#$%&'*+-.^_`|~" + _ALNUM
_TCHAR_RUN = re.compile(rb"[" + re.escape(_TCHARS) + rb"]*")
# RFC 3986 3.2.2 host (reg-name or IP-literal) with an optional port; RFC 9110 7.2 allows it empty.
# The bytes of each part are handed to the native reader too.
_HOST_NAME_BYTES = _ALNUM + b"._~!$&'()*+,;=%-"
_HOST_LITERAL_BYTES = _ALNUM + b":._~!$&'()*+,;=-"
_HOST_RE = re.compile(rb"(?:\[[" + re.escape(_HOST_LITERAL_BYTES) + rb"]+\]|["
                      + re.escape(_HOST_NAME_BYTES) + rb"]*)(?::[0-9]*)?")
_ABSOLUTE_FORM = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)")
# RFC 9112 4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
_REASON_RE = re.compile(rb"[\t \x21-\x7e\x80-\xff]*")

_PRIME_CHUNKED = b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
_PRIME_LENGTH = b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"


# --- llhttp's refusals, named -------------------------------------------------------------------------
# httptools gives llhttp's reason string only; each is mapped to a reason code and a status. A few are
# made more precise by looking at the head bytes (`_refine`), which the reader keeps until the head ends.

_LLHTTP_ERRORS: dict[str, tuple[str, int]] = {
    "Invalid method encountered": ("bad_method", 400),
    "Expected space after method": ("bad_method", 400),
    "Invalid method for HTTP/x.x request": ("bad_method", 400),
    "Invalid method for RTSP/x.x request": ("bad_method", 400),
    "Expected SOURCE method for ICE/x.x request": ("bad_method", 400),
    "Invalid word encountered": ("bad_method", 400),
    "Unexpected start char in url": ("bad_target", 400),
    "Invalid characters in url": ("bad_target", 400),
    "Invalid char in url path": ("bad_target", 400),
    "Invalid char in url query": ("bad_target", 400),
    "Invalid char in url fragment start": ("bad_target", 400),
    "Double @ in url": ("bad_target", 400),
    "Unexpected char in url schema": ("bad_target", 400),
    "Unexpected char in url server": ("bad_target", 400),
    "Expected HTTP/, RTSP/ or ICE/": ("bad_target", 400),
    "Invalid HTTP version": ("version_unsupported", 505),
    "Invalid major version": ("bad_version", 400),
    "Invalid minor version": ("bad_version", 400),
    "Expected dot": ("bad_version", 400),
    "Expected CRLF after version": ("bad_version", 400),
    "Expected space after version": ("bad_status_line", 400),
    "Expected HTTP/2 Connection Preface": ("http2_preface", 505),
    "Pause on PRI/Upgrade": ("http2_preface", 505),
    "Pause on CONNECT/Upgrade": ("unexpected_upgrade", 400),
    "Unexpected space after start line": ("obs_fold", 400),
    "Unexpected whitespace after header value": ("obs_fold", 400),
    "Invalid header token": ("bad_header_name", 400),
    "Invalid header field char": ("bad_header_name", 400),
    "Invalid header value char": ("bad_header_value", 400),
    "Missing expected CR after header value": ("bare_lf", 400),
    "Missing expected LF after header value": ("bare_cr", 400),
    "Expected LF after headers": ("bare_cr", 400),
    "Expected LF after CR": ("bare_cr", 400),
    "Missing expected CR after response line": ("bare_lf", 400),
    "Invalid response status": ("bad_status", 400),
    "Invalid status code": ("bad_status", 400),
    "Transfer-Encoding can't be present with Content-Length": ("cl_and_te", 400),
    "Content-Length can't be present with Transfer-Encoding": ("cl_and_te", 400),
    "Duplicate Content-Length": ("duplicate_content_length", 400),
    "Invalid character in Content-Length": ("bad_content_length", 400),
    "Empty Content-Length": ("bad_content_length", 400),
    "Content-Length overflow": ("bad_content_length", 400),
    "Invalid `Transfer-Encoding` header value": ("bad_transfer_encoding", 400),
    "Request has invalid `Transfer-Encoding`": ("bad_transfer_encoding", 400),
    "Empty Transfer-Encoding": ("bad_transfer_encoding", 400),
    "Invalid character in chunk size": ("bad_chunk_size", 400),
    "Chunk size overflow": ("bad_chunk_size", 400),
    "Invalid character in chunk extensions": ("bad_chunk_extension", 400),
    "Invalid character in chunk extensions name": ("bad_chunk_extension", 400),
    "Invalid character in chunk extensions value": ("bad_chunk_extension", 400),
    "Invalid character in chunk extensions quote value": ("bad_chunk_extension", 400),
    "Invalid character in chunk extensions quoted value": ("bad_chunk_extension", 400),
    "Invalid quoted-pair in chunk extensions quoted value": ("bad_chunk_extension", 400),
    "Missing expected CR after chunk size": ("bare_lf", 400),
    "Missing expected CR after chunk extension name": ("bare_lf", 400),
    "Missing expected CR after chunk extension value": ("bare_lf", 400),
    "Expected LF after chunk size": ("bare_cr", 400),
    "Missing expected CR after chunk data": ("bad_chunk_data_end", 400),
    "Expected LF after chunk data": ("bad_chunk_data_end", 400),
    "Data after `Connection: close`": ("data_after_close", 400),
    "Invalid EOF state": ("incomplete_request", 400),
}

_AFTER_TARGET = re.compile(rb"[\r\n]*[^ ]+ +[^ ]+ +(.)", re.S)
_AFTER_VERSION = re.compile(rb"[\r\n]*[^ ]+ +[^ ]+ +[A-Za-z]+/[0-9]\.[0-9](.)(.?)", re.S)
_CL_LIST = re.compile(rb"^content-length[ \t]*:[^\r\n]*,", re.I | re.M)


def _first_line_end(head: bytes) -> tuple[int, int]:
    start = len(head) - len(head.lstrip(b"\r\n"))
    return start, head.find(b"\r\n", start)


def _refine_method(head: bytes) -> str:
    start, _ = _first_line_end(head)
    first = head[start:start + 1]
    if first == b"\x16":            # a TLS record (ClientHello) where a request line belongs
        return "tls_handshake"
    if first and _TCHAR_RUN.match(first).end():    # type: ignore[union-attr]  # `*`: always matches
        return "bad_method"         # a token, but not a method llhttp knows (or lowercase)
    return "garbage"


def _refine_protocol(head: bytes) -> str:
    # llhttp stopped at the first byte of the word after the target: a version-looking word is a bad
    # version; anything else means the target had a space in it.
    m = _AFTER_TARGET.match(head)
    if m is not None and m.group(1).upper() in (b"H", b"R", b"I"):
        return "bad_version"
    return "bad_target"


def _refine_line_end(head: bytes) -> str:
    m = _AFTER_VERSION.match(head)
    if m is not None:
        if m.group(1) == b"\n":
            return "bare_lf"
        if m.group(1) == b"\r" and m.group(2) not in (b"", b"\n"):
            return "bare_cr"
    return "bad_version"


def _refine_field_line(head: bytes) -> str:
    # The first field line whose name breaks is the one llhttp stopped at.
    _, eol = _first_line_end(head)
    if eol < 0:
        return "bad_header_name"
    for line in head[eol + 2:].split(b"\r\n"):
        k = _TCHAR_RUN.match(line).end()   # type: ignore[union-attr]  # `*`: always matches
        if k == len(line):
            return "bad_header_name"
        c = line[k]
        if c == 0x3A:                                   # ':'
            if k == 0:
                return "empty_header_name"
            continue
        if c == 0x0A:
            return "bare_lf"
        if c in (0x20, 0x09):
            # at the start of a line it is obs-fold (RFC 9112 5.2); after a name it is whitespace
            # before the colon (RFC 9112 5.1)
            return "obs_fold" if k == 0 else "header_name_whitespace"
        return "bad_header_name"
    return "bad_header_name"


def _refine_content_length(head: bytes) -> str:
    # "Content-Length: 5, 5" is a list: RFC 9112 6.3 treats it as several values
    return "duplicate_content_length" if _CL_LIST.search(head) else "bad_content_length"


_REFINE_FIELDS = {
    "Invalid header token": _refine_field_line,
    "Invalid header field char": _refine_field_line,
    "Invalid character in Content-Length": _refine_content_length,
}
_REFINE_REQUEST = {
    **_REFINE_FIELDS,
    "Invalid method encountered": _refine_method,
    "Expected HTTP/, RTSP/ or ICE/": _refine_protocol,
    "Expected CRLF after version": _refine_line_end,
}


# --- the shared reader ------------------------------------------------------------------------------

class _Reader:
    """Slicing, limits, chunk framing, the event queue and the state machine; subclasses parse heads."""

    _refinements: Mapping[str, Callable[[bytes], str]] = _REFINE_FIELDS

    __slots__ = (
        "_parser", "_state", "_events", "_sizes", "_buffered", "_error",
        "_head_parts", "_head_raw", "_head_cap", "_base_cap", "_tail",
        "_headers", "_specials", "_keep_alive",
        "_framing", "_remaining", "_chunk", "_line", "_line_len", "_trailer_bytes", "_body_seen",
        "_body_parts", "_max_header_bytes", "_max_header_count", "_max_body",
        "_switch", "_raw",
        "__weakref__",
    )

    def __init__(self, parser: HttpRequestParser | HttpResponseParser, max_header_bytes: int,
                 max_header_count: int, max_body: int | None, base_cap: int) -> None:
        self._parser = parser
        self._state = _IDLE
        self._events: deque[Event] = deque()
        self._sizes: deque[int] = deque()
        self._buffered = 0
        self._error: GatewayError | None = None
        self._head_parts: list[bytes] = []
        self._head_raw = 0
        self._base_cap = base_cap
        self._head_cap = base_cap
        self._tail = b""
        # None outside a head; a list from its first byte to its end, where the type checker is
        # told so (`ignore[arg-type]`): the callbacks that read it run only inside a head
        self._headers: list[tuple[bytes, bytes]] | None = None
        self._specials: list[tuple[int, bytes]] = []
        self._keep_alive = True
        self._framing = _NONE
        self._remaining = 0
        self._chunk = _C_SIZE
        self._line = b""
        self._line_len = 0
        self._trailer_bytes = 0
        self._body_seen = 0
        self._body_parts: list[bytes] = []
        self._max_header_bytes = max_header_bytes
        self._max_header_count = max_header_count
        self._max_body = max_body
        self._switch = False         # the message being read may be followed by another protocol
        self._raw: list[bytes] = []  # bytes after it, kept unparsed (SWITCHED)

    # -- public ----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Take bytes as they arrive, in pieces of any size; events are queued for `next_event`."""
        if self._error is not None:
            raise self._error
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        pos = 0
        view = None
        while pos < n:
            st = self._state
            if st is _BODY:
                framing = self._framing
                if framing is _LENGTH or (framing is _CHUNKED and self._chunk is _C_DATA):
                    left = self._remaining
                    stop = pos + left if left < n - pos else n
                    self._remaining = left - (stop - pos)
                    if framing is _CHUNKED and self._remaining == 0:
                        self._chunk = _C_DATA_END
                    if pos == 0 and stop == n:
                        self._execute(data)
                    else:
                        if view is None:
                            view = memoryview(data)
                        self._execute(view[pos:stop])
                elif framing is _CHUNKED:
                    stop = self._feed_chunk_line(data, pos, n)
                elif framing is _UNTIL_EOF:
                    stop = n
                    if pos == 0:
                        self._execute(data)
                    else:
                        if view is None:
                            view = memoryview(data)
                        self._execute(view[pos:])
                else:
                    # A head with no body is always completed inside the slice that ends it.
                    raise RuntimeError("http1: body state without framing")
            elif st is _IDLE or st is _HEAD:
                stop = self._feed_head(data, pos, n)
            elif st is _SWITCHED:
                self._raw.append(data[pos:] if pos else data)
                break
            else:
                # CLOSED: RFC 9112 9.6, nothing after the closing message is processed.
                break
            pos = stop
        if self._body_parts:
            self._flush_body()

    def next_event(self) -> Event | None:
        """The oldest queued event, or None when more bytes are needed."""
        if self._error is not None:
            raise self._error
        if not self._events:
            return None
        self._buffered -= self._sizes.popleft()
        return self._events.popleft()

    @property
    def buffered_bytes(self) -> int:
        """Bytes of queued events not yet taken (heads as received, body data)."""
        return self._buffered

    def take_raw(self) -> bytes:
        """After a protocol switch (SWITCHED): the bytes received after the switching message,
        unparsed; later calls return what arrived since. The caller now owns the byte stream."""
        raw = b"".join(self._raw)
        self._raw.clear()
        return raw

    @property
    def switched(self) -> bool:
        """The last message may switch protocols: later bytes are not HTTP/1.1 and are kept raw."""
        return self._state is _SWITCHED

    @property
    def idle(self) -> bool:
        """No message is partly received and no event is waiting to be taken."""
        st = self._state
        return (st is _IDLE or st is _CLOSED) and not self._events

    # -- slicing -----------------------------------------------------------------------------------

    def _feed_head(self, data: bytes, pos: int, n: int) -> int:
        budget = self._head_cap - self._head_raw
        limit = pos + budget if budget < n - pos else n
        tail = self._tail
        end = -1
        if tail:
            # a CRLF CRLF may straddle the previous piece and this one
            k = (tail + data[pos:pos + 3]).find(_CRLFCRLF)
            if k >= 0:
                end = pos + k + 4 - len(tail)
        if end < 0:
            k = data.find(_CRLFCRLF, pos, limit)
            if k >= 0:
                end = k + 4
        stop = end if 0 <= end <= limit else limit
        piece = data if (pos == 0 and stop == n) else data[pos:stop]
        self._head_parts.append(piece)
        self._tail = piece[-3:] if len(piece) >= 3 else (tail + piece)[-3:]
        self._head_raw += stop - pos
        self._execute(piece)
        st = self._state
        if (st is _IDLE or st is _HEAD) and self._head_raw >= self._head_cap:
            # the head has used its whole budget and is not finished: it can only get bigger
            raise self._die(self._fail("header_too_large", 431, "header section over the limit"))
        return stop

    def _feed_chunk_line(self, data: bytes, pos: int, n: int) -> int:
        state = self._chunk
        if state is _C_TRAILER:
            budget = self._max_header_bytes - self._trailer_bytes
            if budget <= 0:
                raise self._die(self._fail("trailer_too_large", 431, "trailer section over the limit"))
        else:
            cap = MAX_CHUNK_LINE_BYTES if state is _C_SIZE else 2
            budget = cap - self._line_len
        limit = pos + budget if budget < n - pos else n
        lf = data.find(b"\n", pos, limit)
        stop = lf + 1 if lf >= 0 else limit
        piece = data[pos:stop]
        self._execute(piece)            # llhttp validates every framing byte
        if state is _C_TRAILER:
            # the empty line ends the message inside _execute (on_message_complete)
            self._trailer_bytes += stop - pos
            if lf < 0 and self._trailer_bytes >= self._max_header_bytes:
                raise self._die(self._fail("trailer_too_large", 431, "trailer section over the limit"))
            return stop
        if lf < 0:
            if state is _C_SIZE:
                self._line += piece
            self._line_len += stop - pos
            if self._line_len >= cap:
                # the whole allowance is used and the line is not finished
                if state is _C_SIZE:
                    raise self._die(self._fail(
                        "chunk_line_too_long", 400, "chunk-size line over %d bytes" % MAX_CHUNK_LINE_BYTES))
                raise self._die(self._fail("bad_chunk_data_end", 400, "no CRLF after chunk data"))
            return stop
        self._line_len = 0
        if state is _C_DATA_END:
            self._chunk = _C_SIZE
            return stop
        line = self._line + piece if self._line else piece
        self._line = b""
        semi = line.find(b";")
        size = int(line[:semi] if semi >= 0 else line[:-2], 16)   # hex digits only: llhttp checked
        if size:
            seen = self._body_seen + size
            if self._max_body is not None and seen > self._max_body:
                raise self._die(self._fail("body_too_large", 413, "chunked body over the limit"))
            self._body_seen = seen
            self._remaining = size
            self._chunk = _C_DATA
        else:
            self._trailer_bytes = 0
            self._chunk = _C_TRAILER
        return stop

    def _execute(self, piece: bytes | memoryview) -> None:
        try:
            self._parser.feed_data(piece)
        except HttpParserUpgrade as exc:
            self._upgrade_paused(exc.args[0] if exc.args else 0, len(piece))
        except HttpParserError as exc:
            raise self._die(self._translate(exc, piece)) from None

    def _upgrade_paused(self, offset: int, length: int) -> None:
        raise self._die(self._fail("unexpected_upgrade", 400, "protocol switch"))

    # -- events and state -----------------------------------------------------------------------------

    def _to(self, new: _State) -> None:
        if new not in self._state.successors:
            raise RuntimeError(f"http1: illegal transition {self._state.name} -> {new.name}")
        self._state = new

    def _push(self, event: Event, size: int) -> None:
        self._events.append(event)
        self._sizes.append(size)
        self._buffered += size

    def _flush_body(self) -> None:
        parts = self._body_parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._push(Data(data), len(data))

    def on_body(self, body: bytes) -> None:
        self._body_parts.append(body)

    def _complete(self) -> None:
        if self._body_parts:
            self._flush_body()
        self._push(END_OF_MESSAGE, 0)
        self._framing = _NONE
        if self._switch:
            self._to(_SWITCHED)
        else:
            self._to(_IDLE if self._keep_alive else _CLOSED)

    def _take_head(self) -> tuple[bytes, int, int, int]:
        """The head's bytes, where its first line starts and ends, and its size; resets the budget."""
        parts = self._head_parts
        head = parts[0] if len(parts) == 1 else b"".join(parts)
        size = self._head_raw
        self._head_parts = []
        self._head_raw = 0
        self._head_cap = self._base_cap
        self._tail = b""
        start = 0
        if head[0] in (13, 10):
            start = len(head) - len(head.lstrip(b"\r\n"))
        return head, start, head.find(b"\r\n", start), size

    def _begin(self) -> None:
        self._to(_HEAD)
        self._headers = []
        self._specials = []

    def _field(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if headers is None:
            return      # a trailer field: dropped (RFC 9110 6.5.1 lets a recipient discard trailers)
        if value.endswith(_OWS):
            value = value.rstrip(b" \t")     # llhttp drops leading OWS only (RFC 9112 5)
        headers.append((name, value))
        if len(name) in _SPECIAL_LENGTHS:
            kind = _SPECIAL_FIELDS.get(name.lower())
            if kind is not None:
                self._specials.append((kind, value))

    def _too_many_fields(self) -> GatewayError:
        return self._fail("too_many_headers", 431, "more than %d header fields" % self._max_header_count)

    def _die(self, err: GatewayError) -> GatewayError:
        self._to(_ERROR)
        self._error = err
        self._events.clear()
        self._sizes.clear()
        self._buffered = 0
        self._body_parts.clear()
        return err

    def _fail(self, reason: str, status: int, message: str) -> GatewayError:
        raise NotImplementedError

    def _translate(self, exc: HttpParserError, piece: bytes | memoryview) -> GatewayError:
        cause = exc.__context__
        if isinstance(exc, HttpParserCallbackError) and cause is not None:
            if isinstance(cause, GatewayError):
                return cause            # one of ours, raised from a callback
            raise cause                 # a bug in a callback: let it surface as itself
        message = str(exc)
        reason, status = _LLHTTP_ERRORS.get(message, ("malformed", 400))
        st = self._state
        if st is _IDLE or st is _HEAD:
            refine = self._refinements.get(message)
            if refine is not None and self._head_parts:
                reason = refine(b"".join(self._head_parts))
        elif message == "Invalid header field char" and bytes(piece[:1]) == b"\n":
            reason = "bare_lf"          # the empty line after trailers sent as a bare LF
        return self._fail(reason, status, message)


# --- requests ----------------------------------------------------------------------------------------

class RequestReader(_Reader):
    """The server side of one client connection: bytes in, `Request` / `Data` / `EndOfMessage` out.

    Pipelined requests come out in order. A refusal raised by `feed` kills the reader, and the events
    still queued die with it: the caller answers with the error's status and closes.

    Methods are the ones llhttp knows (its table has the RFC 9110 ones, WebDAV's, PURGE, M-SEARCH,
    ...); any other token is refused as `bad_method`. An Upgrade request is surfaced with `upgrade`
    set and its body read as HTTP/1.1; the caller refuses the upgrade by answering normally.
    CONNECT is refused (501): the gateway does not tunnel, and what follows a CONNECT head is not
    HTTP. After a request that ends the connection (close, HTTP/1.0 without keep-alive), later bytes
    are ignored, as RFC 9112 9.6 asks.
    """

    __slots__ = ("_limits", "_line_budget", "_line_done", "_line_raw", "_target", "_priming",
                 "_reprime", "_hold_upgrades")
    _parser: HttpRequestParser
    _refinements = _REFINE_REQUEST

    def __init__(self, limits: HTTPLimits = HTTPLimits(), *, hold_upgrades: bool = False) -> None:
        super().__init__(HttpRequestParser(self), limits.max_header_bytes, limits.max_header_count,
                         limits.max_body_bytes, limits.max_header_bytes)
        self._limits = limits
        # With hold_upgrades, parsing stops after a request that asks for an upgrade (SWITCHED):
        # the caller either switches (and takes the raw bytes) or refuses and closes. Without it,
        # an upgrade request is an ordinary request and parsing carries on.
        self._hold_upgrades = hold_upgrades
        self._line_budget = limits.max_request_line_bytes + 2      # with its CRLF
        self._line_done = False     # the request line of the current head has been fed whole
        self._line_raw = 0          # bytes of the request line (or empty line) fed so far
        self._target = b""
        self._priming = False
        self._reprime = False

    def feed_eof(self) -> None:
        """The client closed its side. Refused if a request was partly received."""
        if self._error is not None:
            raise self._error
        st = self._state
        if st is _HEAD or st is _BODY:
            raise self._die(self._fail("incomplete_request", 400, "connection closed inside a request"))
        if st is _IDLE:
            self._to(_CLOSED)

    def _fail(self, reason: str, status: int, message: str) -> GatewayError:
        return HTTPProtocolError(message, status=status, reason=reason)

    def _feed_head(self, data: bytes, pos: int, n: int) -> int:
        if self._line_done:
            return _Reader._feed_head(self, data, pos, n)
        # The request line is cut at its LF and never fed past its budget, so a refusal llhttp finds
        # in it comes before 414 exactly when it comes first in the bytes.
        used = self._line_raw
        budget = self._line_budget - used
        end = pos + budget if budget < n - pos else n
        lf = data.find(b"\n", pos, end)
        if lf >= 0 and used + lf + 1 - pos > 2:
            # The whole line is here and within its limit: feed it with the rest of the head. The
            # header section's budget starts after it (empty lines sent before it count against it).
            self._line_done = True
            self._head_cap = used + lf + 1 - pos + self._max_header_bytes
            return _Reader._feed_head(self, data, pos, n)
        stop = lf + 1 if lf >= 0 else end
        piece = data if (pos == 0 and stop == n) else data[pos:stop]
        self._head_parts.append(piece)
        self._tail = piece[-3:] if len(piece) >= 3 else (self._tail + piece)[-3:]
        self._head_raw += stop - pos
        self._line_raw = used + stop - pos
        self._execute(piece)
        if lf >= 0:
            # an empty line before the request line (RFC 9112 2.2); llhttp has skipped it
            self._line_raw = 0
            if self._head_raw > self._max_header_bytes:
                raise self._die(self._fail("header_too_large", 431, "too many empty lines"))
        elif self._line_raw >= self._line_budget:
            raise self._die(self._fail(
                "uri_too_long", 414, "request line over %d bytes" % (self._line_budget - 2)))
        return stop

    # -- llhttp callbacks ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._priming:
            return
        self._begin()
        self._target = b""

    def on_url(self, url: bytes) -> None:
        if self._priming:
            return
        self._target = self._target + url if self._target else url

    on_header = _Reader._field

    def on_headers_complete(self) -> None:
        if self._priming:
            return
        head, start, eol, size = self._take_head()
        self._line_done = False
        self._line_raw = 0
        # Fields are counted when the head ends: the byte budget bounds what can arrive before, and
        # httptools reports a field only once the next one starts, at a point that depends on how
        # the bytes were cut.
        if len(self._headers) > self._max_header_count:  # type: ignore[arg-type]
            raise self._too_many_fields()
        # llhttp takes a request line that ends in a bare LF as HTTP/0.9 and goes on to parse what
        # follows as fields: "GET /\nX: HTTP/1.1\r\n" would then pass for an HTTP/1.1 request line
        # whose version sits in a field. A bare LF ends no line here (RFC 9112 2.2): refuse it.
        if eol > start and head.find(b"\n", start, eol) >= 0:
            raise self._fail("bare_lf", 400, "request line ended by a bare LF")
        # llhttp also takes HTTP/0.9 (no version), HTTP/2.0, RTSP/ and ICE/: only 1.0 and 1.1 pass
        # (RFC 9110 15.6.6).
        version_token = head[eol - 9:eol]
        if version_token == b" HTTP/1.1":
            version = _V11
        elif version_token == b" HTTP/1.0":
            version = _V10
        else:
            raise self._fail("version_unsupported", 505, "HTTP version not supported")
        http11 = version is _V11
        method = self._parser.get_method()
        if method == b"CONNECT":
            # A tunnel is not something this gateway offers, and after a CONNECT head the bytes are
            # no longer HTTP (RFC 9110 9.3.6).
            raise self._fail("connect_unsupported", 501, "CONNECT is not supported")

        host = cl = te = connection = expect = upgrade = None
        hosts = 0
        for kind, value in self._specials:
            if kind == _F_HOST:
                hosts += 1
                host = value
            elif kind == _F_CL:
                cl = value
            elif kind == _F_TE:
                te = value if te is None else te + b", " + value
            elif kind == _F_CONNECTION:
                connection = value if connection is None else connection + b", " + value
            elif kind == _F_EXPECT:
                expect = value if expect is None else expect + b", " + value
            else:
                upgrade = value if upgrade is None else upgrade + b", " + value

        # RFC 9112 3.2: exactly one Host in HTTP/1.1; never several.
        if hosts != 1 and (http11 or hosts > 1):
            if hosts:
                raise self._fail("duplicate_host", 400, "more than one Host field")
            raise self._fail("missing_host", 400, "HTTP/1.1 request without Host")
        if host is not None and _HOST_RE.fullmatch(host) is None:
            raise self._fail("bad_host", 400, "invalid Host value")

        target = self._target
        if target[:1] != b"/":
            if target == b"*":
                if method != b"OPTIONS":    # RFC 9112 3.2.4: asterisk-form is for OPTIONS only
                    raise self._fail("bad_target", 400, "asterisk-form target outside OPTIONS")
            else:
                m = _ABSOLUTE_FORM.match(target)
                authority = m.group(1) if m is not None else b""
                # RFC 9110 4.2.4: userinfo in an http(s) URI is an error.
                if not authority or b"@" in authority or _HOST_RE.fullmatch(authority) is None:
                    raise self._fail("bad_target", 400, "invalid request-target")
                # RFC 9112 3.2.2: the target's authority wins over Host; a client that sends both
                # differently is confused or probing, so refuse rather than pick one.
                if host is not None and host.lower() != authority.lower():
                    raise self._fail("host_mismatch", 400, "Host differs from the target's authority")
                host = authority
        if b"#" in target:      # RFC 9112 3.2: a request-target never carries a fragment
            raise self._fail("bad_target", 400, "fragment in request-target")

        close = False
        tokens = _NO_TOKENS
        if connection is not None:
            tokens = _tokens(connection)
            close = b"close" in tokens
        if http11:
            keep_alive = not close
        else:
            keep_alive = not close and b"keep-alive" in tokens      # RFC 9112 9.3
        # llhttp keeps its own view; when the two differ, the stricter one wins.
        keep_alive = keep_alive and self._parser.should_keep_alive()

        expect_continue = False
        if expect is not None:
            for item in expect.split(b","):
                if item.strip(b" \t").lower() != b"100-continue":
                    raise self._fail("expectation_failed", 417, "unsupported expectation")
            # RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored
            expect_continue = http11

        if upgrade is not None and http11 and b"upgrade" in tokens:
            upgrade = upgrade.lower()
        else:
            upgrade = None      # RFC 9110 7.8: without "Connection: upgrade", or in HTTP/1.0, ignored

        chunked = False
        length = None
        if te is not None:
            if not http11:
                # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
                raise self._fail("te_in_http10", 400, "Transfer-Encoding in an HTTP/1.0 request")
            if cl is not None:
                raise self._fail("cl_and_te", 400, "Content-Length with Transfer-Encoding")
            if te.lower() != b"chunked":
                codings = [c.strip(b" \t").lower() for c in te.split(b",")]
                if codings[-1] != b"chunked":
                    # RFC 9112 6.3 item 4: without chunked last the length cannot be known (400).
                    # (llhttp refuses this too, but only after this callback.)
                    raise self._fail("bad_transfer_encoding", 400, "chunked is not the final coding")
                # Chunked after another coding, e.g. "gzip, chunked": framed correctly, but a coding
                # this gateway does not implement (501, RFC 9112 6.1).
                raise self._fail("te_unsupported", 501, "transfer coding not implemented")
            chunked = True
        elif cl is not None:
            length = int(cl)            # digits only: llhttp checked, and that it fits in 64 bits
            if self._max_body is not None and length > self._max_body:
                raise self._fail("body_too_large", 413, "Content-Length over the limit")

        if (chunked or length) and self._parser.should_upgrade():
            # httptools makes llhttp skip the body of an upgrade request and stop; the body is then
            # read with a fresh parser (see _upgrade_paused).
            self._reprime = True

        self._keep_alive = keep_alive
        self._switch = upgrade is not None and self._hold_upgrades
        self._push(Request(method, target, version, self._headers,  # type: ignore[arg-type]
                           keep_alive, length, chunked, expect_continue, upgrade, host, tokens),
                   size)
        self._headers = None
        self._to(_BODY)
        if chunked:
            self._framing = _CHUNKED
            self._chunk = _C_SIZE
            self._line = b""
            self._line_len = 0
            self._body_seen = 0
        elif length:
            self._framing = _LENGTH
            self._remaining = length

    def on_message_complete(self) -> None:
        if self._priming or self._reprime:
            return
        self._complete()

    def _upgrade_paused(self, offset: int, length: int) -> None:
        # An Upgrade request (Connection: upgrade + Upgrade) head has ended. The reader does not
        # switch protocols: it carries on with HTTP/1.1, as a server that declines does (RFC 9110 7.8).
        if offset != length:
            # cannot happen: a head is fed up to its last byte and no further
            raise self._die(self._fail("malformed", 400, "bytes after an upgrade head"))
        if not self._reprime:
            return      # no body: llhttp has finished the message and resumed
        self._reprime = False
        # llhttp skipped the body: give a fresh parser the same framing through a stand-in head
        # (its callbacks are muted), then feed it the body.
        parser = HttpRequestParser(self)
        self._priming = True
        try:
            if self._framing is _CHUNKED:
                parser.feed_data(_PRIME_CHUNKED)
            else:
                parser.feed_data(_PRIME_LENGTH % self._remaining)
        finally:
            self._priming = False
        self._parser = parser


# --- responses ---------------------------------------------------------------------------------------

class ResponseReader(_Reader):
    """The client side of one upstream connection: bytes in, `Response` / `Data` / `EndOfMessage` out.

    Call `expect(method)` for every request sent, before its response arrives: a response to HEAD has
    no body whatever its headers say (RFC 9112 6.3 item 1). Bytes that start a response nobody asked
    for are refused (`upstream_unsolicited`).

    Interim responses: 100, 102, 103 and other 1xx are read and dropped, never surfaced; the gateway
    answers a client's `Expect: 100-continue` itself. A 101 is refused (RFC 9110 15.2.2: no switch
    without an Upgrade asked for) unless the request was sent with `expect(method, upgrade=True)`:
    then it is surfaced as a `Response` with status 101, followed by EndOfMessage, and the reader
    stops parsing (`switched`); what follows is the new protocol's, from `take_raw()`. A 1xx carrying Content-Length or
    Transfer-Encoding is refused (RFC 9110 8.6, RFC 9112 6.1), since llhttp would read a body for it.
    The head limit covers the whole head, status line included.
    """

    __slots__ = ("_expected", "_reason", "_interim", "_skip_body", "_may_switch", "_te_tab")
    _parser: HttpResponseParser

    def __init__(self, max_header_bytes: int = DEFAULT_MAX_RESPONSE_HEADER_BYTES,
                 max_header_count: int = DEFAULT_MAX_RESPONSE_HEADER_COUNT) -> None:
        if max_header_bytes < 16 or max_header_count < 1:
            raise ValueError("max_header_bytes must be >= 16 and max_header_count >= 1")
        super().__init__(HttpResponseParser(self), max_header_bytes, max_header_count, None,
                         max_header_bytes)
        self._expected: deque[bytes] = deque()
        self._reason = b""
        self._interim = False
        self._skip_body = False
        self._may_switch = False
        self._te_tab = False

    def expect(self, method: bytes, upgrade: bool = False) -> None:
        """The method of a request just sent; responses are matched to requests in order.
        `upgrade`: the request asked to switch protocols, so a 101 may answer it."""
        self._expected.append(method)
        self._may_switch = upgrade

    def _upgrade_paused(self, offset: int, length: int) -> None:
        # llhttp pauses after a 101 it was allowed to see: the head was fed up to its last byte,
        # and the reader has switched (on_headers_complete refused every other 101).
        if self._state is not _SWITCHED or offset != length:
            raise self._die(self._fail("unexpected_101", 502, "switching protocols unasked"))

    def feed_eof(self) -> None:
        """The upstream closed. Ends a close-delimited body; refused inside any other message."""
        if self._error is not None:
            raise self._error
        st = self._state
        if st is _BODY and self._framing is _UNTIL_EOF:
            self._keep_alive = False
            self._complete()
            return
        if st is _HEAD or st is _BODY:
            raise self._die(self._fail("incomplete", 502, "upstream closed inside a response"))
        if st is _IDLE:
            if self._expected:
                # nothing of the response arrived: the caller may retry an idempotent request
                # (RFC 9112 9.3.1), which is why this has its own reason
                raise self._die(self._fail("closed", 502, "upstream closed before responding"))
            self._to(_CLOSED)

    def _fail(self, reason: str, status: int, message: str) -> GatewayError:
        return UpstreamError(message, status=502, reason="upstream_" + reason)

    def _feed_head(self, data: bytes, pos: int, n: int) -> int:
        stop = _Reader._feed_head(self, data, pos, n)
        if self._skip_body:
            self._skip_body = False
            if self._state is _BODY:
                # llhttp would read a body for this HEAD response; this message has ended, and a
                # fresh parser takes the next one.
                self._parser = HttpResponseParser(self)
                self._complete()
        return stop

    # -- llhttp callbacks ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._expected:
            raise self._fail("unsolicited", 502, "response without a request")
        self._begin()
        self._reason = b""
        self._te_tab = False

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._field(name, value)
        if value[-1:] in _OWS and self._headers is not None:
            # llhttp reads "chunked" followed by a tab as some other coding (only spaces may
            # follow it), while the value without its OWS says chunked: the two readings of the
            # body's length disagree, so the response is refused (see on_headers_complete)
            if b"\t" in value[len(value.rstrip(b" \t")):] and name.lower() == b"transfer-encoding":
                self._te_tab = True

    def on_headers_complete(self) -> None:
        head, start, eol, size = self._take_head()
        if len(self._headers) > self._max_header_count:  # type: ignore[arg-type]  # see RequestReader
            raise self._too_many_fields()
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:
            raise self._fail("bad_status", 502, "status code out of range")
        version_token = head[start:start + 9]
        if version_token == b"HTTP/1.1 ":
            version = _V11
        elif version_token == b"HTTP/1.0 ":
            version = _V10
        else:
            raise self._fail("bad_version", 502, "HTTP version not supported")
        reason = self._reason
        if _REASON_RE.fullmatch(reason) is None:
            raise self._fail("bad_status_line", 502, "control character in reason phrase")
        if status == 101:
            if not self._may_switch or not self._expected:
                raise self._fail("unexpected_101", 502, "switching protocols without an Upgrade")
            if _cl_te_present(self._specials):
                raise self._fail("bad_interim", 502, "framing fields in a 101 response")
            if not self._parser.should_upgrade():
                # RFC 9110 7.8: a 101 names its protocol in Upgrade, with Connection: upgrade;
                # without both llhttp does not switch either (it would refuse the next byte)
                raise self._fail("unexpected_101", 502,
                                 "switching protocols without Upgrade and Connection: upgrade")
            self._expected.popleft()
            self._keep_alive = False
            self._switch = True
            self._framing = _NONE
            self._push(Response(status, reason, version, self._headers,  # type: ignore[arg-type]
                                False, None, False), size)
            self._headers = None
            self._to(_BODY)
            return

        cl = te = connection = None
        for kind, value in self._specials:
            if kind == _F_CL:
                cl = value
            elif kind == _F_TE:
                te = value if te is None else te + b", " + value
            elif kind == _F_CONNECTION:
                connection = value if connection is None else connection + b", " + value

        if status < 200:
            if cl is not None or te is not None:
                raise self._fail("bad_interim", 502, "framing fields in a 1xx response")
            self._headers = None
            self._interim = True
            self._to(_BODY)
            return

        method = self._expected.popleft()
        http11 = version is _V11
        close = False
        tokens = _NO_TOKENS
        if connection is not None:
            tokens = _tokens(connection)
            close = b"close" in tokens
        keep_alive = not close if http11 else (not close and b"keep-alive" in tokens)

        chunked = False
        length: int | None = None
        if method == b"HEAD" or status == 204 or status == 304:
            length = int(cl) if cl is not None else None
            self._framing = _NONE
            self._skip_body = method == b"HEAD"
        else:
            # llhttp's keep-alive view matters only when it parses the body itself
            keep_alive = keep_alive and self._parser.should_keep_alive()
            if te is not None:
                # RFC 9112 6.1: faulty framing in HTTP/1.0; RFC 9112 6.3 item 3 reads a non-chunked
                # coding to EOF, but the gateway could not decode it: refuse both.
                if not http11 or te.lower() != b"chunked" or self._te_tab:
                    raise self._fail("bad_transfer_encoding", 502, "unsupported Transfer-Encoding")
                if cl is not None:
                    raise self._fail("cl_and_te", 502, "Content-Length with Transfer-Encoding")
                chunked = True
                self._framing = _CHUNKED
                self._chunk = _C_SIZE
                self._line = b""
                self._line_len = 0
                self._body_seen = 0
            elif cl is not None:
                length = int(cl)
                if length:
                    self._framing = _LENGTH
                    self._remaining = length
            else:
                keep_alive = False      # RFC 9112 6.3 item 8: the body runs to the close
                self._framing = _UNTIL_EOF
        self._keep_alive = keep_alive
        self._push(Response(status, reason, version, self._headers,  # type: ignore[arg-type]
                            keep_alive, length, chunked, tokens), size)
        self._headers = None
        self._to(_BODY)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._to(_IDLE)
            return
        self._complete()


_NO_TOKENS: frozenset[bytes] = frozenset()


def _cl_te_present(specials: Iterable[tuple[int, bytes]]) -> bool:
    return any(kind == _F_CL or kind == _F_TE for kind, _ in specials)


_TOKEN_CACHE: dict[bytes, frozenset[bytes]] = {}
_TOKEN_CACHE_SIZE = 256     # a handful of values ("keep-alive", "close", "Upgrade") are most of them


def _tokens(value: bytes) -> frozenset[bytes]:
    found = _TOKEN_CACHE.get(value)
    if found is None:
        found = frozenset(t for t in (item.strip(b" \t").lower() for item in value.split(b",")) if t)
        if len(_TOKEN_CACHE) < _TOKEN_CACHE_SIZE:
            _TOKEN_CACHE[value] = found
    return found


# --- serialisation ----------------------------------------------------------------------------------

# RFC 9110 section 15 (plus 429 and 431 from RFC 6585, 451 from RFC 7725, 425 from RFC 8470).
REASON_PHRASES: dict[int, bytes] = {
    100: b"Continue", 101: b"Switching Protocols", 103: b"Early Hints",
    200: b"OK", 201: b"Created", 202: b"Accepted", 203: b"Non-Authoritative Information",
    204: b"No Content", 205: b"Reset Content", 206: b"Partial Content",
    300: b"Multiple Choices", 301: b"Moved Permanently", 302: b"Found", 303: b"See Other",
    304: b"Not Modified", 305: b"Use Proxy", 307: b"Temporary Redirect", 308: b"Permanent Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 402: b"Payment Required", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 406: b"Not Acceptable",
    407: b"Proxy Authentication Required", 408: b"Request Timeout", 409: b"Conflict", 410: b"Gone",
    411: b"Length Required", 412: b"Precondition Failed", 413: b"Content Too Large",
    414: b"URI Too Long", 415: b"Unsupported Media Type", 416: b"Range Not Satisfiable",
    417: b"Expectation Failed", 421: b"Misdirected Request", 422: b"Unprocessable Content",
    425: b"Too Early", 426: b"Upgrade Required", 428: b"Precondition Required",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    451: b"Unavailable For Legal Reasons",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in REASON_PHRASES.items()}


_LINE_CACHE: dict[tuple[int, bytes], bytes] = {}
_LINE_CACHE_SIZE = 256      # a target answers with a handful of (status, reason) pairs


def status_line(status: int, reason: bytes | None = None) -> bytes:
    """An HTTP/1.1 status line with its CRLF: `reason` as given (checked: RFC 9112 4), or the
    standard phrase when None. ValueError for a status out of three digits or a bad reason."""
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is None:
            if not 100 <= status <= 999:
                raise ValueError("status must be three digits")
            line = b"HTTP/1.1 %d \r\n" % status
        return line
    key = (status, reason)
    line = _LINE_CACHE.get(key)
    if line is None:
        if not 100 <= status <= 999 or _REASON_RE.fullmatch(reason) is None:
            raise ValueError("invalid status or reason phrase")
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_LINE_CACHE) >= _LINE_CACHE_SIZE:
            _LINE_CACHE.clear()
        _LINE_CACHE[key] = line
    return line


def response_head(status: int, headers: list[tuple[bytes, bytes]], reason: bytes | None = None) -> bytes:
    """A complete HTTP/1.1 response head, ending with the empty line.

    Names and values must already be valid (they come from a parsed message or from checked
    configuration); a CR or LF anywhere raises ValueError, so no head can be split.
    """
    line = status_line(status, reason)
    out = [line]
    append = out.append
    for name, value in headers:
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")
    append(b"\r\n")
    head = b"".join(out)
    lines = len(headers) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise ValueError("CR or LF inside a header name or value")
    return head


LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 7.1); empty data gives b"", never a last-chunk."""
    if not data:
        return b""
    return b"".join((b"%x\r\n" % len(data), data, b"\r\n"))


# RFC 9110 7.6.1: Connection and the fields it names, plus those listed there as hop-by-hop.
# Trailer is here too: trailers are dropped, so announcing them downstream would be false.
# Proxy-Authenticate / Proxy-Authorization are not: RFC 9110 11.7 leaves them to the proxy's policy.
HOP_BY_HOP: frozenset[bytes] = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade",
})


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lowercased options listed in every Connection field; those fields are hop-by-hop too."""
    found: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            found.update(_tokens(value))
    return frozenset(found)


_ERROR_HEADERS = (b"Content-Type", b"text/plain; charset=utf-8")


def error_response(status: int, body: bytes, *, close: bool = True) -> bytes:
    """A whole small plain-text response, as the gateway answers a refusal."""
    headers = [_ERROR_HEADERS, (b"Content-Length", b"%d" % len(body))]
    if close:
        headers.append((b"Connection", b"close"))
    return response_head(status, headers) + body


# --- twin selection ----------------------------------------------------------------------------------
# native/http1.pyx builds gateway._http1_c: a RequestReader twin that parses without llhttp and emits
# the same events and refusals (tests/unit/test_http1_native.py proves it against this module). It is
# handed this module's event and error classes, llhttp's reason table and this module's tables (the
# state graph, the byte sets of a token and of a Host) at load, so both twins build equal objects,
# name refusals alike and hold one copy of each table.

def _load_native() -> tuple[type[Any], type[Any]] | tuple[None, None]:
    try:
        c = importlib.import_module("gateway._http1_c")     # not `from gateway import`: a leaf
        c.init(request=Request, data=Data, end_of_message=END_OF_MESSAGE, error=HTTPProtocolError,
               tokens=_tokens, llhttp_errors=_LLHTTP_ERRORS, refinements=_REFINE_REQUEST,
               no_tokens=_NO_TOKENS, max_chunk_line=MAX_CHUNK_LINE_BYTES,
               default_limits=HTTPLimits(),
               request_fields=tuple(f.name for f in fields(Request)),
               data_field=fields(Data)[0].name,
               transitions={state.value: tuple(s.value for s in successors)
                            for state, successors in _TRANSITIONS.items()},
               special_fields=_SPECIAL_FIELDS, tchars=_TCHARS, host_name_bytes=_HOST_NAME_BYTES,
               host_literal_bytes=_HOST_LITERAL_BYTES, response=Response,
               response_fields=tuple(f.name for f in fields(Response)),
               upstream_error=UpstreamError, response_refinements=_REFINE_FIELDS,
               default_response_limits=(DEFAULT_MAX_RESPONSE_HEADER_BYTES,
                                        DEFAULT_MAX_RESPONSE_HEADER_COUNT))
        return c.RequestReader, c.ResponseReader
    except (ImportError, AttributeError, TypeError):
        # AttributeError, TypeError: a stale build of the extension without these names.
        return None, None


NATIVE, NATIVE_RESPONSE = _load_native()
# typed as the pure classes, whose interface the native ones share (tests/unit/test_http1_native.py)
_request_reader_class: type[RequestReader] = RequestReader
_response_reader_class: type[ResponseReader] = ResponseReader
native_mode = "python"


def set_native(mode: str) -> str:
    """Pick the native or pure readers (requests and responses): ``"auto"``, ``"on"`` or ``"off"``;
    returns the choice.

    ``"on"`` without an importable extension raises NativeUnavailable (the operator asked for it).
    """
    global _request_reader_class, _response_reader_class, native_mode
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"native mode must be 'auto', 'on' or 'off', not {mode!r}")
    if mode == "on" and NATIVE is None:
        raise NativeUnavailable("native = \"on\" but gateway._http1_c cannot be imported "
                                "(reinstall with `pip install -e .` to build it)")
    if mode != "off" and NATIVE is not None and NATIVE_RESPONSE is not None:
        _request_reader_class, _response_reader_class, native_mode = NATIVE, NATIVE_RESPONSE, "native"
    else:
        _request_reader_class, _response_reader_class, native_mode = RequestReader, ResponseReader, "python"
    return native_mode


def request_reader(limits: HTTPLimits, *, hold_upgrades: bool = False) -> RequestReader:
    """A request reader of the twin chosen by `set_native`: the one place the gateway makes one."""
    return _request_reader_class(limits, hold_upgrades=hold_upgrades)


def response_reader() -> ResponseReader:
    """A response reader (an upstream connection's) of the twin chosen by `set_native`."""
    return _response_reader_class()


set_native("auto")
