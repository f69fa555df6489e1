"""One bounded HTTP/1.1 request to an OCSP responder or a CRL distribution point.

How this works: `fetch(url, ...)` opens a TCP connection to the URL's host (plain http only: OCSP
responses and CRLs carry their own signatures, RFC 6960 A.1 and RFC 5280 4.2.1.13), writes one
request with `Connection: close`, and reads the answer through httptools' response parser (the
reference the gateway's own readers are checked against), so chunked and length-delimited bodies
both work. Everything is bounded: one deadline for the whole exchange (connect, write, read), a cap
on the head and on the body; anything else (a status other than 200, a body over the cap, a
connection that ends early, garbage) is a `FetchError` with a short reason for the log line. It
never raises anything else, so a responder that answers badly or slowly costs a worker one task,
never a crash or a blocked loop.
"""
from __future__ import annotations

import asyncio

import httptools

from .spec import parse_http_url

MAX_HEAD_BYTES = 16384
USER_AGENT = b"mtls-gateway"


class FetchError(Exception):
    """A fetch that gave no usable body; `reason` is a short code for logs and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Answer:
    __slots__ = ("framed", "headers_done", "body", "size", "head", "done", "max_bytes", "error")

    def __init__(self, max_bytes: int) -> None:
        self.framed = False         # Content-Length or chunked: else the body ends with the connection
        self.headers_done = False
        self.body: list[bytes] = []
        self.size = 0
        self.head = 0
        self.done = False
        self.max_bytes = max_bytes
        self.error: FetchError | None = None

    # httptools' callbacks (an exception here aborts the parse, which fetch() reports)
    def on_header(self, name: bytes, value: bytes) -> None:
        self.head += len(name) + len(value)
        if self.head > MAX_HEAD_BYTES:
            self.error = FetchError("too_large", f"response head over {MAX_HEAD_BYTES} bytes")
            raise self.error
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            self.error = FetchError("too_large", f"response body over {self.max_bytes} bytes")
            raise self.error
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.done = True


async def fetch(url: str, *, body: bytes | None = None, content_type: str = "",
                accept: str = "", timeout_s: float, max_bytes: int) -> bytes:
    """The body of a 200 answer to GET `url` (POST `body` when given), within `timeout_s`."""
    try:
        host, port, path = parse_http_url(url)
    except ValueError as exc:
        raise FetchError("bad_url", str(exc)) from None
    try:
        return await asyncio.wait_for(_exchange(host, port, path, body, content_type, accept,
                                                max_bytes), timeout_s)
    except FetchError:
        raise
    except (asyncio.TimeoutError, TimeoutError):
        raise FetchError("timeout", f"no complete answer from {host}:{port} within {timeout_s:g} s") \
            from None
    except OSError as exc:
        raise FetchError("unreachable", f"{host}:{port}: {exc.strerror or exc}") from None
    except Exception as exc:        # nothing a peer sends may escape as anything but a FetchError
        raise FetchError("error", f"{host}:{port}: {type(exc).__name__}: {exc}") from None


async def _exchange(host: str, port: int, path: str, body: bytes | None, content_type: str,
                    accept: str, max_bytes: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        authority = host if port == 80 else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            authority = f"[{host}]" if port == 80 else f"[{host}]:{port}"
        lines = [f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1",
                 f"Host: {authority}", "Connection: close", "User-Agent: mtls-gateway"]
        if accept:
            lines.append(f"Accept: {accept}")
        if body is not None:
            lines.append(f"Content-Type: {content_type or 'application/octet-stream'}")
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (body or b""))
        answer = _Answer(max_bytes)
        parser = httptools.HttpResponseParser(answer)
        while not answer.done:
            data = await reader.read(65536)
            if not data:
                if answer.headers_done and not answer.framed:
                    break                       # a body delimited by the close (RFC 9112 6.3)
                raise FetchError("truncated", f"{host}:{port} closed before the answer ended")
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                raise FetchError("bad_answer", "an upgrade instead of an answer") from None
            except httptools.HttpParserError as exc:
                if answer.error is not None:
                    raise answer.error from None
                raise FetchError("bad_answer", f"not HTTP: {exc}") from None
        status = parser.get_status_code()
        if status != 200:
            raise FetchError("status", f"HTTP {status} from {host}:{port}")
        return b"".join(answer.body)
    finally:
        writer.close()
