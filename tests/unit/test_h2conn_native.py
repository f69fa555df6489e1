"""gateway._http2_c.H2Connection held to h2's own server connection (as gateway.http2 configures
it), differentially: the same client bytes, split at the same offsets and interleaved with the
same server calls, go to both, and every step must give the same (normalised) events, the same
bytes to send, the same exception class and the same flow-control windows.

How this works: a session is a list of steps drawn by hypothesis. Client steps append frames
written here byte by byte (so they may break every rule: bad stream ids, frames on closed
streams, bad padding, oversize frames, header blocks split into CONTINUATION, floods) to what
is pending; `deliver` steps hand a prefix of the pending bytes to both servers; `garble` steps
flip a bit, cut or splice the pending bytes; server steps call the surface gateway.streams uses.
Header blocks are HPACK-encoded by one client encoder (hpack's), so the two servers' decoders stay
in step with it. A receive error ends the session after its GOAWAY bytes are compared.

One difference is meant: a frame longer than our SETTINGS allow is refused at its 9-byte head,
where h2 waits for the whole frame first (up to 16 MiB buffered). When only the native side
raised FrameTooLargeError, the reference is given the rest of that frame and must then raise it
too, with the same bytes to send.
"""
from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import http2

N = pytest.importorskip("gateway._http2_c")

PREFACE = http2.PREFACE
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


def reference(max_streams: int, table: int, max_header: int) -> h2.connection.H2Connection:
    return http2.h2_connection(max_streams, table, max_header)


def frame(kind: int, flags: int, sid: int, body: bytes = b"") -> bytes:
    return struct.pack(">I", len(body))[1:] + bytes((kind, flags)) + struct.pack(">I", sid) + body


def normal(events, native: bool) -> list:
    out = []
    for e in events:
        name = type(e).__name__
        if name in ("RequestReceived", "TrailersReceived"):
            out.append((name, e.stream_id, [tuple(h) for h in e.headers], e.stream_ended is not None))
        elif name == "DataReceived":
            out.append((name, e.stream_id, e.data, e.flow_controlled_length, e.stream_ended is not None))
        elif name == "StreamEnded":
            out.append((name, e.stream_id))
        elif name == "StreamReset":
            out.append((name, e.stream_id, int(e.error_code), e.remote_reset))
        elif name == "PingAckReceived":
            out.append((name, e.ping_data))
        elif name == "WindowUpdated":
            out.append((name, e.stream_id, e.delta))
        elif name == "RemoteSettingsChanged":
            changed = e.changed_settings if native else {int(k): v.new_value for k, v in
                                                         e.changed_settings.items()}
            out.append((name, changed))
        elif name == "ConnectionTerminated":
            out.append((name, int(e.error_code), e.last_stream_id, e.additional_data))
    return out


class Twins:
    """The reference and the native server, driven alike, compared after every step."""

    def __init__(self, max_streams: int = 100, table: int = 4096, max_header: int = 16384) -> None:
        self.ref = reference(max_streams, table, max_header)
        self.nat = N.H2Connection(max_streams, table, max_header)
        self.dead = False
        self.log: list = []
        self.same_out()

    def same_out(self) -> None:
        a, b = self.ref.data_to_send(), self.nat.data_to_send()
        assert a == b, (self.log, a, b)

    def call(self, name: str, *args, **kw):
        outcome = []
        for conn in (self.ref, self.nat):
            try:
                outcome.append(("ok", getattr(conn, name)(*args, **kw)))
            except Exception as exc:  # noqa: BLE001 - the class is what is compared
                outcome.append(("err", type(exc)))
        self.log.append((name, args, kw, outcome[0][0], outcome[0][1] if outcome[0][0] == "err" else None))
        return outcome

    def receive(self, data: bytes) -> None:
        (ka, a), (kb, b) = self.call("receive_data", data)
        if ka == "ok" and kb == "err" and b is h2.exceptions.FrameTooLargeError:
            # refused at the frame's head; h2 refuses it once the whole frame is in
            try:
                self.ref.receive_data(b"\0" * (2 ** 24 + 9))
            except h2.exceptions.FrameTooLargeError:
                ka, a = "err", h2.exceptions.FrameTooLargeError
        assert ka == kb, (self.log, a, b)
        if ka == "ok":
            assert normal(a, False) == normal(b, True), self.log
        else:
            assert a is b, (self.log, a, b)
            self.dead = True
        self.same_out()
        self.windows()

    def op(self, name: str, *args, **kw) -> None:
        (ka, a), (kb, b) = self.call(name, *args, **kw)
        assert (ka, a) == (kb, b), (self.log, a, b)
        self.same_out()
        self.windows()

    def windows(self) -> None:
        assert self.ref.max_outbound_frame_size == self.nat.max_outbound_frame_size
        assert self.ref.outbound_flow_control_window == self.nat.outbound_flow_control_window
        assert self.ref.inbound_flow_control_window == self.nat.inbound_flow_control_window
        for sid in range(1, 15, 2):
            for name in ("local_flow_control_window", "remote_flow_control_window"):
                (ka, a), (kb, b) = self.call(name, sid)
                self.log.pop()
                assert (ka, a) == (kb, b), (self.log, name, sid, a, b)


# -- what a session is made of ----------------------------------------------------------------------

sid_choice = st.one_of(st.sampled_from(["new", "new", "last", "last", "prev", "prev"]),
                       st.sampled_from([1, 3, 5, 2, 0, 2 ** 31 - 1]))
token = st.sampled_from([b"a", b"x-b", b"accept", b"user-agent", b"content-type", b"x" * 40])
value = st.sampled_from([b"", b"1", b"v", b"text/plain", b"y" * 100, b"\x00\xff", b"a b"])
field = st.one_of(
    st.tuples(token, value),
    st.tuples(st.just(b"cookie"), st.sampled_from([b"a=1", b"b=2", b"", b"c=" + b"3" * 30])),
    st.tuples(st.just(b"content-length"), st.sampled_from([b"0", b"3", b"5", b"10", b"x", b"",
                                                          b"007", b"99999999999999999999999"])),
    st.tuples(st.sampled_from([b":status", b":method", b":path", b"te"]),
              st.sampled_from([b"100", b"200", b"GET", b"/", b"trailers"])),
)
request = st.tuples(st.sampled_from([b"GET", b"POST", b"HEAD"]), st.lists(field, max_size=6))


def _fields(req) -> list[tuple[bytes, bytes]]:
    method, rest = req
    return [(b":method", method), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/"), *rest]


good_sid = st.sampled_from(["new", "last", "last", "prev"])
open_sid = st.sampled_from(["last", "last", "prev"])
good_field = st.one_of(st.tuples(token, value.filter(lambda v: len(v) < 50)),
                       st.tuples(st.just(b"cookie"), st.sampled_from([b"a=1", b"b=2", b"c=" + b"3" * 30])))
good_request = st.tuples(st.sampled_from([b"GET", b"POST"]), st.one_of(
    st.lists(good_field, max_size=5),
    st.lists(good_field, max_size=3).map(lambda f: [*f, (b"content-length", b"5")])))

good = [
    st.tuples(st.just("headers"), st.just("new"), good_request, st.booleans(),
              st.one_of(st.none(), st.integers(0, 5)),
              st.one_of(st.none(), st.tuples(st.just(0), st.integers(0, 255), st.booleans())),
              st.lists(st.integers(1, 40), max_size=3)),
    st.tuples(st.just("post"), st.lists(st.sampled_from([0, 1, 5, 100, 3000]), min_size=1, max_size=4),
              st.one_of(st.none(), st.integers(0, 10)), st.booleans()),
    st.tuples(st.just("trailers"), open_sid, st.lists(good_field, max_size=2), st.just(True)),
    st.tuples(st.just("data"), open_sid, st.sampled_from([0, 1, 2, 5, 100, 5000, 16000]), st.booleans(),
              st.one_of(st.none(), st.none(), st.integers(0, 10))),
    st.tuples(st.just("rst"), open_sid, st.sampled_from([0, 8])),
    st.tuples(st.just("ping"), st.binary(min_size=8, max_size=8), st.booleans()),
    st.tuples(st.just("settings"), st.lists(st.one_of(
        st.tuples(st.just(4), st.sampled_from([0, 1, 100, 65535, 70000, 2 ** 20])),
        st.tuples(st.just(5), st.sampled_from([16384, 20000, 2 ** 20])),
        st.tuples(st.just(1), st.sampled_from([0, 100, 4096, 8192])),
        st.tuples(st.sampled_from([3, 6]), st.sampled_from([0, 1, 100])),
        st.tuples(st.sampled_from([2, 8, 0x99]), st.sampled_from([0, 1]))), max_size=3), st.just(False)),
    st.tuples(st.just("settings"), st.just([]), st.booleans()),
    st.tuples(st.just("window"), st.one_of(st.just(0), open_sid),
              st.sampled_from([1, 100, 10000, 65535, 2 ** 31 - 1 - 65535, 2 ** 31 - 65535])),
    st.tuples(st.just("priority"), good_sid, st.just(0), st.integers(0, 255)),
    st.tuples(st.just("deliver"), st.integers(0, 10 ** 6)),
    st.tuples(st.just("deliver"), st.integers(0, 10 ** 6)),
    st.tuples(st.just("s_headers"), open_sid, st.sampled_from([b"200", b"404"]), st.booleans(),
              st.sampled_from([0, 0, 1, 20])),
    st.tuples(st.just("s_data"), open_sid, st.sampled_from([0, 1, 10, 1000, 16384, 40000]), st.booleans()),
    st.tuples(st.just("s_end"), open_sid),
    st.tuples(st.just("s_reset"), open_sid, st.sampled_from([0, 8])),
    st.tuples(st.just("s_ack"), open_sid, st.sampled_from([1, 100, 1024, 1025, 5000, 16383, 16384, 32767])),
    st.tuples(st.just("s_ack"), open_sid, st.sampled_from([1, 100, 1024, 5000, 32766, 32767, 32768])),
    st.tuples(st.just("s_ping"), st.binary(min_size=8, max_size=8)),
]
bad = st.one_of(
    st.tuples(st.just("headers"), sid_choice, request, st.booleans(),          # END_STREAM
              st.one_of(st.none(), st.integers(0, 20)),                         # padding
              st.one_of(st.none(), st.tuples(st.sampled_from([0, 1, 3, "self"]), st.integers(0, 255),
                                             st.booleans())),                   # priority
              st.lists(st.integers(1, 40), max_size=3)),                        # CONTINUATION cuts
    st.tuples(st.just("trailers"), sid_choice, st.lists(field, max_size=3), st.booleans()),
    st.tuples(st.just("data"), sid_choice, st.sampled_from([0, 1, 3, 5, 100, 5000, 16384, 16385, 70000]),
              st.booleans(), st.one_of(st.none(), st.integers(0, 255))),
    st.tuples(st.just("rst"), sid_choice, st.sampled_from([0, 1, 5, 8, 99])),
    st.tuples(st.just("settings"), st.lists(st.tuples(
        st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0x99]),
        st.sampled_from([0, 1, 2, 100, 4096, 16383, 16384, 20000, 65535, 65536, 2 ** 24, 2 ** 31 - 1,
                         2 ** 31, 2 ** 32 - 1])), max_size=4), st.booleans()),
    st.tuples(st.just("window"), st.one_of(st.just(0), sid_choice),
              st.sampled_from([1, 100, 1000, 65535, 2 ** 31 - 1, 0, 2 ** 31])),
    st.tuples(st.just("priority"), sid_choice, st.sampled_from([0, 1, 3, "self"]), st.integers(0, 255)),
    st.tuples(st.just("goaway"), st.sampled_from([0, 1, 3, 2 ** 31 + 1]), st.sampled_from([0, 2, 99]),
              st.sampled_from([b"", b"bye"])),
    st.tuples(st.just("raw"), st.integers(0, 12), st.integers(0, 255), sid_choice, st.binary(max_size=12)),
    st.tuples(st.just("garble"), st.sampled_from(["flip", "cut", "splice"]), st.integers(0, 10 ** 6),
              st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("s_headers"), sid_choice, st.sampled_from([b"200", b"404", b"103"]), st.booleans(),
              st.integers(0, 40)),
    st.tuples(st.just("s_data"), sid_choice, st.sampled_from([0, 1, 10, 1000, 16384, 16385, 65535, 70000]),
              st.booleans()),
    st.tuples(st.just("s_end"), sid_choice),
    st.tuples(st.just("s_reset"), sid_choice, st.sampled_from([0, 2, 8])),
    st.tuples(st.just("s_ack"), sid_choice, st.sampled_from([0, 1, 100, 1024, 5000, 32768, 65535, 70000])),
)
# mostly what a client may send, now and then what it may not
step = st.one_of(*good, bad)
valid_step = st.one_of(*good)


class Session:
    def __init__(self, twins: Twins) -> None:
        self.t = twins
        self.enc = hpack.Encoder()
        self.pending = b""
        self.opened: list[int] = []
        self.next = 1

    def sid(self, choice) -> int:
        if choice == "new":
            sid = self.next
            self.next += 2
            self.opened.append(sid)
            return sid
        if choice == "last":
            return self.opened[-1] if self.opened else 1
        if choice == "prev":
            return self.opened[-2] if len(self.opened) > 1 else 1
        return choice

    def heard(self, choice) -> bool:
        """The server has the stream's request (or, for 0, any request)."""
        ref = self.t.ref
        if choice == 0:
            return ref.highest_inbound_stream_id > 0
        if choice == "new":
            return True
        sid = {"last": self.opened[-1:], "prev": self.opened[-2:-1]}.get(choice, [choice])
        return not sid or sid[0] <= ref.highest_inbound_stream_id

    def block(self, fields) -> bytes:
        return self.enc.encode(fields)

    def run(self, kind, *a) -> None:
        t = self.t
        if a and a[0] in ("last", "prev") and not self.opened:
            return      # nothing opened yet to name
        if kind == "post":
            # a request with a body in DATA frames, trailers or not
            sizes, pad, trailers = a
            self.run("headers", "new", (b"POST", []), False, None, None, [])
            for i, size in enumerate(sizes):
                self.run("data", "last", size, not trailers and i == len(sizes) - 1, pad)
            if trailers:
                self.run("trailers", "last", [(b"x-t", b"1")], True)
        elif kind == "headers":
            choice, req, end, pad, prio, cuts = a
            sid = self.sid(choice)
            block = self.block(_fields(req))
            self.headers(sid, block, end, pad, prio, cuts)
        elif kind == "trailers":
            choice, fields, end = a
            self.headers(self.sid(choice), self.block(fields), end, None, None, [])
        elif kind == "data":
            choice, size, end, pad = a
            body = bytes(size % 251 for size in range(size))
            flags = 1 if end else 0
            if pad is not None:
                flags |= 0x8
                body = bytes((pad,)) + body + b"\0" * pad
            self.pending += frame(0, flags, self.sid(choice), body)
        elif kind == "rst":
            self.pending += frame(3, 0, self.sid(a[0]), struct.pack(">I", a[1]))
        elif kind == "ping":
            self.pending += frame(6, 1 if a[1] else 0, 0, a[0])
        elif kind == "settings":
            pairs, ack = a
            body = b"".join(struct.pack(">HI", k, v) for k, v in pairs)
            self.pending += frame(4, 1 if ack else 0, 0, body)
            if not ack:
                for k, v in pairs:
                    if k == 1:      # a client that follows our table size... or not
                        self.enc.header_table_size = min(v, 4096)
        elif kind == "window":
            sid = 0 if a[0] == 0 else self.sid(a[0])
            self.pending += frame(8, 0, sid, struct.pack(">I", a[1]))
        elif kind == "priority":
            sid = self.sid(a[0])
            dep = sid if a[1] == "self" else a[1]
            self.pending += frame(2, 0, sid, struct.pack(">IB", dep, a[2]))
        elif kind == "goaway":
            self.pending += frame(7, 0, 0, struct.pack(">II", a[0], a[1]) + a[2])
        elif kind == "raw":
            self.pending += frame(a[0], a[1], self.sid(a[2]), a[3])
        elif kind == "deliver":
            if self.pending:
                k = a[0] % len(self.pending) + 1
                data, self.pending = self.pending[:k], self.pending[k:]
                t.receive(data)
        elif kind == "garble":
            how, at, junk = a
            if not self.pending:
                return
            at %= len(self.pending)
            if how == "flip":
                b = bytearray(self.pending)
                b[at] ^= 1 << (junk[0] % 8)
                self.pending = bytes(b)
            elif how == "cut":
                self.pending = self.pending[:at]
            else:
                self.pending = self.pending[:at] + junk + self.pending[at:]
        elif kind.startswith("s_") and kind != "s_ping" and a[0] in (0, 2):
            return      # a server opens no stream of its own (h2 would, as for a push)
        elif kind.startswith("s_") and self.pending and not self.heard(a[0] if kind != "s_ping" else 0):
            # a server answers what it has read: the request first (unless it is all in)
            t.receive(self.pending)
            self.pending = b""
            if not t.dead:
                self.run(kind, *a)
        elif kind == "s_headers":
            choice, status, end, extra = a
            fields = [(b":status", status)] + [(b"x-%d" % i, b"v" * 1000) for i in range(extra)]
            t.op("send_headers", self.sid(choice), fields, end_stream=end)
        elif kind == "s_data":
            choice, size, end = a
            t.op("send_data", self.sid(choice), b"d" * size, end_stream=end)
        elif kind == "s_end":
            t.op("end_stream", self.sid(a[0]))
        elif kind == "s_reset":
            t.op("reset_stream", self.sid(a[0]), a[1])
        elif kind == "s_ack":
            t.op("acknowledge_received_data", a[1], self.sid(a[0]))
        elif kind == "s_ping":
            t.op("ping", a[0])

    def headers(self, sid, block, end, pad, prio, cuts) -> None:
        marks = sorted({c for c in cuts if 0 < c < len(block)})
        pieces = [block[i:j] for i, j in zip([0, *marks], [*marks, len(block)])]
        flags = (1 if end else 0) | (0 if len(pieces) > 1 else 4)
        body = pieces[0]
        if prio is not None:
            dep, weight, excl = prio
            dep = sid if dep == "self" else dep
            flags |= 0x20
            body = struct.pack(">IB", dep | (0x80000000 if excl else 0), weight) + body
        if pad is not None:
            flags |= 0x8
            body = bytes((pad,)) + body + b"\0" * pad
        self.pending += frame(1, flags, sid, body)
        for i, piece in enumerate(pieces[1:], 2):
            self.pending += frame(9, 4 if i == len(pieces) else 0, sid, piece)


def play(steps, max_streams=100, table=4096, max_header=16384, preface=PREFACE) -> Twins:
    t = Twins(max_streams, table, max_header)
    s = Session(t)
    s.pending = preface
    for st_ in steps:
        if t.dead:
            break
        s.run(*st_)
    if not t.dead and s.pending:
        t.receive(s.pending)
    return t


@SETTINGS
@given(st.lists(valid_step, min_size=5, max_size=60), st.sampled_from([2, 5, 100]), st.sampled_from([4096, 8192]))
def test_the_native_connection_is_h2s_twin_on_sessions_a_client_may_send(steps, max_streams, table):
    play(steps, max_streams, table)


@SETTINGS
@given(st.lists(step, max_size=50), st.sampled_from([1, 2, 100]), st.sampled_from([0, 256, 4096, 8192]),
       st.sampled_from([200, 16384, 16384]))
def test_the_native_connection_is_h2s_twin_on_any_session(steps, max_streams, table, max_header):
    play(steps, max_streams, table, max_header)


@SETTINGS
@given(st.binary(max_size=60), st.lists(step, max_size=12))
def test_garbage_after_the_preface_or_instead_of_it(junk, steps):
    play([("deliver", 10 ** 6)] + steps, preface=PREFACE[:len(junk) % 25] + junk)


# -- pinned cases -----------------------------------------------------------------------------------

GET = (b"GET", [])
POST5 = (b"POST", [(b"content-length", b"5")])


@pytest.mark.parametrize("steps", [
    # a request and its answer, the window given back
    [("headers", "new", POST5, False, None, None, []), ("data", "last", 5, True, None),
     ("s_headers", "last", b"200", False, 0), ("s_data", "last", 10, True), ("s_ack", "last", 40000)],
    # DATA past the declared length; short of it at END_STREAM
    [("headers", "new", POST5, False, None, None, []), ("data", "last", 6, False, None)],
    [("headers", "new", POST5, False, None, None, []), ("data", "last", 3, True, None)],
    # DATA on a stream the client ended: RST_STREAM (STREAM_CLOSED) and StreamReset
    [("headers", "new", GET, True, None, None, []), ("data", "last", 3, False, None)],
    # RST_STREAM on a stream ended both ways, forgotten once another opens: a connection error
    [("headers", "new", GET, True, None, None, []), ("s_headers", "last", b"200", True, 0),
     ("headers", "new", GET, True, None, None, []), ("deliver", 10 ** 6), ("rst", "prev", 8)],
    # ... and on a reset one: answered with RST_STREAM
    [("headers", "new", GET, True, None, None, []), ("s_reset", "last", 8),
     ("headers", "new", GET, True, None, None, []), ("deliver", 10 ** 6), ("rst", "prev", 8),
     ("data", "prev", 4, False, None), ("headers", "prev", GET, True, None, None, [])],
    # a header block in CONTINUATION frames, padded, with priority; one depending on itself
    [("headers", "new", GET, True, 7, (0, 15, True), [3, 9, 20])],
    [("headers", "new", GET, True, None, ("self", 15, False), [])],
    # trailers, and trailers without END_STREAM
    [("headers", "new", (b"POST", []), False, None, None, []), ("trailers", "last", [(b"x", b"1")], True)],
    [("headers", "new", (b"POST", []), False, None, None, []), ("trailers", "last", [(b"x", b"1")], False)],
    # cookies joined, last
    [("headers", "new", (b"GET", [(b"cookie", b"a=1"), (b"x-b", b"1"), (b"cookie", b"b=2")]), True, None,
      None, [])],
    # INITIAL_WINDOW_SIZE moves open streams' windows; past 2**31 - 1 it is a FLOW_CONTROL_ERROR
    [("headers", "new", GET, True, None, None, []), ("settings", [(4, 100)], False), ("deliver", 10 ** 6),
     ("s_data", "last", 1000, False), ("s_data", "last", 100, False), ("settings", [(4, 2 ** 31 - 1)], False),
     ("deliver", 10 ** 6), ("window", "last", 2 ** 31 - 1)],
    [("headers", "new", GET, True, None, None, []), ("window", "last", 2 ** 31 - 65535),
     ("settings", [(4, 65536)], False)],
    # the windows to exactly 2**31 - 1, and one past
    [("headers", "new", GET, True, None, None, []), ("window", "last", 2 ** 31 - 1 - 65535),
     ("window", 0, 2 ** 31 - 1 - 65535), ("deliver", 10 ** 6), ("window", "last", 1)],
    # the window given back at exactly half of it, and when it is empty past min(1024, a quarter)
    [("post", [16000, 16000, 767], None, False), ("s_ack", "last", 32766), ("s_ack", "last", 1),
     ("s_ack", "last", 1)],
    [("post", [16000, 16000, 16000, 16000, 1535], None, False), ("s_ack", "last", 1024),
     ("s_ack", "last", 1)],
    # the connection's window past 2**31 - 1; a zero increment
    [("window", 0, 2 ** 31 - 1)],
    [("headers", "new", GET, True, None, None, []), ("window", "last", 0)],
    # a WINDOW_UPDATE on a stream never opened
    [("window", 5, 10)],
    # MAX_FRAME_SIZE: the server's header block split at it
    [("headers", "new", GET, True, None, None, []), ("s_headers", "last", b"200", True, 40)],
    [("settings", [(5, 20000)], False), ("headers", "new", GET, True, None, None, []),
     ("s_headers", "last", b"200", False, 40), ("s_data", "last", 16385, True)],
    # an oversize frame, refused at its head
    [("raw", 0, 0, 1, b""), ("deliver", 10 ** 6), ("garble", "splice", 0, b"\x01\x00\x00\x00\x00\x00\x00\x00\x01")],
    # too many streams; a header list too large
    [("headers", "new", GET, False, None, None, []), ("headers", "new", GET, False, None, None, [])],
    [("headers", "new", (b"GET", [(b"x" * 40, b"y" * 100)] * 3), True, None, None, [])],
    # DATA before any HEADERS; RST_STREAM before any HEADERS; bad padding
    [("data", 1, 3, False, None)],
    [("rst", 1, 0)],
    [("headers", "new", GET, False, None, None, []), ("raw", 0, 8, "last", b"\x05abc")],
    # a GOAWAY drops what the server had still to send; what comes after it is refused
    [("ping", b"12345678", False), ("goaway", 1, 0, b"bye"), ("ping", b"12345678", False)],
    # a PUSH_PROMISE from a client; an unknown frame inside a header block
    [("raw", 5, 4, 1, b"\x00\x00\x00\x02")],
    [("headers", "new", GET, True, None, None, [2]), ("raw", 11, 0, 0, b"")],
    # the server's calls on a stream reset, ended, or never opened
    [("headers", "new", GET, False, None, None, []), ("rst", "last", 8), ("deliver", 10 ** 6),
     ("s_headers", "last", b"200", False, 0), ("s_data", "last", 0, True), ("s_data", "last", 3, True),
     ("s_end", "last"), ("s_reset", "last", 0), ("s_ack", "last", 10), ("s_ack", 9, 10)],
    [("headers", "new", GET, True, None, None, []), ("s_headers", "last", b"200", True, 0),
     ("s_data", "last", 3, True), ("s_headers", "last", b"200", True, 0)],
])
def test_pinned(steps):
    for max_streams, max_header in ((100, 16384), (1, 16384), (100, 200)):
        play(steps, max_streams=max_streams, max_header=max_header)


def test_sixty_four_frames_in_a_header_block_are_too_many():
    for cuts in (list(range(1, 64)), list(range(1, 63))):
        block = bytes(hpack.Encoder().encode(_fields(GET)) + b"\x40\x01a\x50" + b"b" * 80)
        t = Twins()
        pieces = [block[i:i + 1] for i in range(len(cuts))] + [block[len(cuts):]]
        data = PREFACE + frame(1, 1, 1, pieces[0])
        for i, piece in enumerate(pieces[1:], 1):
            data += frame(9, 4 if i == len(pieces) - 1 else 0, 1, piece)
        t.receive(data)


def test_a_wrong_preface_is_refused_without_goaway():
    t = Twins()
    t.receive(b"PRI * HTTP/1.1\r\n")
    assert t.dead


def test_events_carry_h2s_attribute_names():
    t = Twins()
    enc = hpack.Encoder()
    data = PREFACE + frame(1, 4, 1, enc.encode(_fields(POST5))) + frame(0, 1, 1, b"abcde")
    events = t.nat.receive_data(data)
    t.ref.receive_data(data)
    rq, dr, se = events
    assert (rq.stream_id, rq.stream_ended, rq.priority_updated) == (1, None, None)
    assert (dr.stream_id, dr.data, dr.flow_controlled_length) == (1, b"abcde", 5)
    assert dr.stream_ended is se and se.stream_id == 1


def test_h2_remembers_65536_closed_streams_and_so_does_its_twin():
    """Past 65536 forgotten streams the oldest is no longer known as reset: a frame on it is then
    a connection error, on both."""
    t = Twins()
    enc = hpack.Encoder()
    block = enc.encode(_fields(GET))
    again = enc.encode(_fields(GET))        # indexed now: the same bytes every time after
    t.receive(PREFACE + frame(1, 5, 1, block))
    t.op("reset_stream", 1, 8)
    sid = 3
    while sid < 2 * 65536 + 6:
        data = b"".join(frame(1, 5, s, again) for s in range(sid, sid + 100, 2))
        t.ref.receive_data(data), t.nat.receive_data(data)
        for s in range(sid, sid + 100, 2):
            t.ref.reset_stream(s, 8)
            t.nat.reset_stream(s, 8)
        t.same_out()
        sid += 100
    t.receive(frame(1, 5, sid, again))      # the last batch forgotten too
    t.receive(frame(1, 5, 1001, again))     # remembered as reset: RST_STREAM
    assert not t.dead
    t.receive(frame(1, 5, 1, again))        # no longer remembered: StreamIDTooLowError
    assert t.dead
