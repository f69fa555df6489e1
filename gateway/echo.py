"""A built-in HTTP/1.1 echo backend, for the demo, the tests and the benchmarks.

How this works: it answers every request with JSON describing what it received: method, target,
the headers in order as [name, value] pairs, and the body's length and SHA-256 (the body is hashed as
it streams, never held). `GET /bytes/N` streams N bytes back instead (`?chunked=1` for chunked
framing), which is what the large-download tests use; `/delay/MS` answers after MS milliseconds. Plain TCP on 127.0.0.1: it sits behind the
gateway, which terminates TLS.
"""
from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson

from . import http1
from .errors import HTTPProtocolError

_STREAM_CHUNK = 65536


class EchoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = http1.request_reader(http1.HTTPLimits(max_header_bytes=1 << 20, max_header_count=1000))
        # None only until they are first set, before any use: the request and its body's hash by
        # the request's head, the transport by connection_made
        self.request: http1.Request = None  # type: ignore[assignment]
        self.hash: hashlib._Hash = None  # type: ignore[assignment]
        self.length = 0
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.paused = False
        self.streaming: list[Any] | None = None     # [bytes left, chunked, keep-alive]
        self._delayed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream server's: a Transport

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except HTTPProtocolError as exc:
            self.transport.write(http1.error_response(exc.status, b"bad request\n"))
            self.transport.close()
            return
        self._process()

    def _process(self) -> None:
        while self.streaming is None:
            event = self.reader.next_event()
            if event is None:
                return
            if isinstance(event, http1.Request):
                self.request = event
                self.hash = hashlib.sha256()
                self.length = 0
            elif isinstance(event, http1.Data):
                self.hash.update(event.data)
                self.length += len(event.data)
            else:
                self._respond()

    def _respond(self) -> None:
        req = self.request
        keep = req.keep_alive
        path = req.target.split(b"?", 1)[0]
        if path.startswith(b"/delay/") and not self._delayed:
            # answer after N milliseconds: a slow upstream for timeout and drain tests
            try:
                delay_ms = int(path[7:])
            except ValueError:
                delay_ms = 0
            self._delayed = True
            self.streaming = []          # hold further requests until this one is answered
            asyncio.get_running_loop().call_later(delay_ms / 1000, self._after_delay)
            return
        self._delayed = False
        if path.startswith(b"/bytes/"):
            try:
                n = int(path[7:])
            except ValueError:
                n = 0
            chunked = b"chunked=1" in req.target
            head = [(b"Content-Type", b"application/octet-stream")]
            head.append((b"Transfer-Encoding", b"chunked") if chunked else (b"Content-Length", b"%d" % n))
            if not keep:
                head.append((b"Connection", b"close"))
            self.transport.write(http1.response_head(200, head))
            if req.method == b"HEAD":
                self._done(keep)
                return
            self.streaming = [n, chunked, keep]
            self._stream()
            return
        body = orjson.dumps({
            "method": req.method.decode("latin-1"),
            "target": req.target.decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in req.headers],
            "body_length": self.length,
            "body_sha256": self.hash.hexdigest(),
        })
        head = [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body))]
        if not keep:
            head.append((b"Connection", b"close"))
        self.transport.write(http1.response_head(200, head) + (b"" if req.method == b"HEAD" else body))
        self._done(keep)

    def _after_delay(self) -> None:
        self.streaming = None
        if not self.transport.is_closing():
            self._respond()

    def _stream(self) -> None:
        streaming = self.streaming
        assert streaming is not None        # called only while a response streams
        left, chunked, keep = streaming
        block = b"x" * _STREAM_CHUNK
        while left > 0 and not self.paused:
            n = min(left, _STREAM_CHUNK)
            data = block[:n]
            self.transport.write(http1.chunk(data) if chunked else data)
            left -= n
        streaming[0] = left
        if left == 0:
            if chunked:
                self.transport.write(http1.LAST_CHUNK)
            self.streaming = None
            self._done(keep)

    def _done(self, keep: bool) -> None:
        if not keep:
            self.transport.close()
            return
        self._process()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.streaming is not None:
            self._stream()


async def start_echo(host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(EchoProtocol, host, port)


def main() -> None:   # pragma: no cover - `python -m gateway.echo PORT` for manual tests
    import sys
    import uvloop
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080

    async def run() -> None:
        server = await start_echo("127.0.0.1", port)
        print(f"echo backend on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    uvloop.run(run())


if __name__ == "__main__":  # pragma: no cover
    main()
