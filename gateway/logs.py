"""Access log (one JSON line per request) and connection log (one per connection), via orjson.

How this works: a `LogSink` is a destination ("-" for stdout, "off", or a file path opened for
append) with a small write buffer that is flushed when it passes a size or on the next loop turn, so
a burst of requests costs one write(2), not one per line. Connection log fields follow ALB's
connection log (client ip/port, listener port, TLS protocol and cipher, handshake latency, leaf
subject, validity, serial, verify status), named in snake_case as JSON keys.
A file sink can be reopened (after logrotate moved it) with `reopen()`.
"""
from __future__ import annotations

import os
import sys
import time

import orjson

_FLUSH_BYTES = 65536


def _alb_field(value, *, quote: bool = False) -> str:
    if value is None or value == "":
        return "-"
    text = str(value)
    if quote or any(c in text for c in ' "\t'):
        return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'
    return text


def alb_connection_line(record: dict) -> bytes:
    """ALB's connection log entry: space-separated fields in ALB's order, "-" for absent values,
    the subject always quoted, handshake latency in seconds with millisecond precision, a trace id
    last (existing ALB connection-log parsers read it unchanged)."""
    latency = record.get("tls_handshake_latency")
    g = record.get
    line = " ".join((
        _alb_field(g("time")), _alb_field(g("client_ip")), _alb_field(g("client_port")),
        _alb_field(g("listener_port")), _alb_field(g("tls_protocol")), _alb_field(g("tls_cipher")),
        f"{latency:.3f}" if latency is not None else "-",
        _alb_field(g("leaf_client_cert_subject"), quote=True),
        _alb_field(g("leaf_client_cert_validity")), _alb_field(g("leaf_client_cert_serial_number")),
        _alb_field(g("tls_verify_status")), _alb_field(g("conn_trace_id")),
    ))
    return (line + "\n").encode("utf-8", "replace")


class LogSink:
    # `enabled`: whether records are written at all (a plain slot, read per request)
    __slots__ = ("dest", "_fd", "_own", "_buf", "_size", "_scheduled", "_loop", "_format", "enabled")

    def __init__(self, dest: str = "-", format: str = "json") -> None:
        self.dest = dest
        self._format = alb_connection_line if format == "alb" else None
        self._fd: int | None = None
        self.enabled = False
        self._own = False
        self._buf: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._loop = None
        self.reopen()

    def reopen(self) -> None:
        self.flush()
        if self._own and self._fd is not None:
            os.close(self._fd)
        self._own = False
        if self.dest == "off":
            self._fd = None
        elif self.dest == "-":
            self._fd = sys.stdout.fileno()
        else:
            self._fd = os.open(self.dest, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self._own = True
        self.enabled = self._fd is not None

    def attach(self, loop) -> None:
        """Flush on the next turn of this loop instead of at every line."""
        self._loop = loop

    def write(self, record: dict) -> None:
        if self._fd is None:
            return
        fmt = self._format
        line = fmt(record) if fmt is not None else orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self._buf.append(line)
        self._size += len(line)
        if self._loop is None or self._size >= _FLUSH_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._buf or self._fd is None:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
        except BlockingIOError:
            pass          # a stdout pipe that is full: drop rather than stall the event loop
        except OSError:
            pass

    def close(self) -> None:
        self.flush()
        if self._own and self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self.enabled = False


_stamp_second = -1          # the whole second _stamp_prefix was formatted for
_stamp_prefix = ""


def iso_now(_time=time.time) -> str:
    """Now as ISO 8601 UTC with microseconds and a Z, for every log record. The date and time of
    day change once a second, so they are formatted once a second (strftime is most of the cost of
    a record's timestamp); the microseconds are added to each."""
    global _stamp_second, _stamp_prefix
    t = _time()
    second = int(t)
    if second != _stamp_second:
        _stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp_second = second
    return f"{_stamp_prefix}.{int((t - second) * 1e6):06d}Z"


def validity(identity) -> str:
    """ALB's validity notation: NotBefore=...;NotAfter=... (UTC, seconds)."""
    return (f"NotBefore={identity.not_before:%Y-%m-%dT%H:%M:%SZ};"
            f"NotAfter={identity.not_after:%Y-%m-%dT%H:%M:%SZ}")


class ErrorLog:
    """Operator-facing messages: one line each, with a level and a reason code. Never tracebacks
    for a peer's misbehaviour."""

    LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

    def __init__(self, dest: str = "-", level: str = "info") -> None:
        self.level = self.LEVELS.get(level, 20)
        self._fd = sys.stderr.fileno() if dest == "-" else os.open(
            dest, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def log(self, level: str, reason: str, message: str, **fields) -> None:
        if self.LEVELS.get(level, 20) < self.level:
            return
        record = {"time": iso_now(), "level": level, "reason": reason, "message": message}
        record.update(fields)
        try:
            os.write(self._fd, orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        except OSError:
            pass

    def info(self, reason: str, message: str, **fields) -> None:
        self.log("info", reason, message, **fields)

    def warning(self, reason: str, message: str, **fields) -> None:
        self.log("warning", reason, message, **fields)

    def error(self, reason: str, message: str, **fields) -> None:
        self.log("error", reason, message, **fields)

    def debug(self, reason: str, message: str, **fields) -> None:
        self.log("debug", reason, message, **fields)
