"""What tests, benchmarks and the demo share to drive the gateway's own parts in process.

For now: `MemoryTransport`, the part of an asyncio transport the shell (gateway.proxy) and the
upstream connections use, writing to a function instead of a socket, so a real TLS client over
memory BIOs can talk to a real shell and core with no socket in between.
"""
from __future__ import annotations

from collections.abc import Callable


class MemoryTransport:
    """The part of an asyncio transport the gateway uses, writing to a function."""

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self.sink = sink
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sink(data)

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
