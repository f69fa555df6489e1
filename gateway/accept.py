"""Accepting client connections with a cap per worker: beyond it, new ones wait in the backlog.

How this works: instead of `loop.create_server`, which accepts whatever arrives, an `Acceptor`
watches the non-blocking listening socket with `loop.add_reader` and calls `accept()` itself, at
most `ACCEPT_BATCH` times per wake-up, handing each socket to `loop.connect_accepted_socket` with
the protocol factory. Every admitted connection holds a slot until its protocol's
`connection_lost` gives it back (the protocol calls its `slot_release`, set here). At `limit`
open connections the acceptor stops watching the socket: connections the kernel completes meanwhile
stay in the listen backlog (or go to another worker sharing the socket), none is accepted only to be
dropped. When a slot frees up, watching resumes.

Why not stop and re-create the asyncio server at the limit: `Server.close()` closes the listening
socket itself, and there is no public way to pause a server's accepting. An accept error that is
about this process (out of file descriptors) pauses accepting for `ACCEPT_RETRY_S`, as asyncio's
own loop does; one about the peer (it reset before we accepted) is skipped.
"""
from __future__ import annotations

import asyncio
import errno
import socket

ACCEPT_BATCH = 64           # accept() calls per readiness event, so one busy listener cannot hog the loop
ACCEPT_RETRY_S = 1.0        # after EMFILE/ENFILE/ENOBUFS/ENOMEM: try again this much later
_SOCK_STREAM = int(socket.SOCK_STREAM)
_RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class _Slot:
    """One admitted connection's place; released exactly once."""

    __slots__ = ("acceptor",)

    def __init__(self, acceptor: "Acceptor") -> None:
        self.acceptor = acceptor

    def release(self) -> None:
        acceptor = self.acceptor
        if acceptor is not None:
            self.acceptor = None
            acceptor._released()


class Acceptor:
    """Accepts on `sock` while fewer than `limit` of its connections are open. Has the part of
    `asyncio.Server` the worker uses: `close()` (stop accepting; open connections carry on)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol_factory,
                 limit: int, *, errors=None, name: str = "") -> None:
        self.loop = loop
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.limit = limit
        self.errors = errors
        self.name = name
        self.active = 0             # admitted and not yet released
        self.watching = False
        self.closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._fd = sock.fileno()
        # plain ints for the accepted sockets' constructor: the socket's `family` and `type`
        # properties build enums on every read
        self._family = int(sock.family)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self.sock,)

    def start(self) -> "Acceptor":
        self._watch()
        return self

    def close(self) -> None:
        self.closed = True
        self._unwatch()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    async def wait_closed(self) -> None:
        return None

    def is_serving(self) -> bool:
        return not self.closed

    def _watch(self) -> None:
        if not self.watching and not self.closed and self.active < self.limit and self._retry is None:
            self.watching = True
            self.loop.add_reader(self._fd, self._on_readable)

    def _unwatch(self) -> None:
        if self.watching:
            self.watching = False
            self.loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        sock = self.sock
        for _ in range(ACCEPT_BATCH):
            if self.active >= self.limit:
                # full: leave the rest in the backlog until a connection ends
                self._unwatch()
                if self.errors is not None:
                    self.errors.debug("accept_paused", f"{self.active} connections open: not "
                                      f"accepting more for now", listener=self.name)
                return
            try:
                # _accept(), not accept(): the fd alone, and one socket object made from plain ints
                # (accept() reads the listener's family and type as enums for every connection).
                # No setblocking(): libuv's uv_tcp_open makes the descriptor non-blocking itself.
                fd, _ = sock._accept()
            except (BlockingIOError, InterruptedError):
                return      # another worker took it, or nothing left
            except ConnectionAbortedError:
                continue    # the client gave up before we accepted
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    if self.errors is not None:
                        self.errors.error("accept_failed", f"cannot accept: {exc.strerror}; "
                                          f"retrying in {ACCEPT_RETRY_S:g}s", listener=self.name)
                    self._unwatch()
                    self._retry = self.loop.call_later(ACCEPT_RETRY_S, self._after_retry)
                    return
                continue
            conn = socket.socket(self._family, _SOCK_STREAM, 0, fd)
            self.active += 1
            self.loop.create_task(self._admit(conn, _Slot(self)))

    def _after_retry(self) -> None:
        self._retry = None
        self._watch()

    async def _admit(self, conn: socket.socket, slot: _Slot) -> None:
        def factory():
            protocol = self.protocol_factory()
            protocol.slot_release = slot.release
            return protocol
        try:
            await self.loop.connect_accepted_socket(factory, conn)
        except Exception:       # noqa: BLE001 - the peer vanished while its transport was made
            conn.close()
            slot.release()

    def _released(self) -> None:
        self.active -= 1
        if not self.watching:
            self._watch()


def serve(loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol_factory, limit: int, *,
          errors=None, name: str = "") -> Acceptor:
    """Start accepting on `sock` with at most `limit` connections open at a time."""
    return Acceptor(loop, sock, protocol_factory, limit, errors=errors, name=name).start()
