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
socket itself, and there is no public way to pause a server's accepting; uvloop's own accept loop
(libuv's) also takes every pending connection in one go, whatever the limit, and a uvloop server
that meets EMFILE closes itself for good. An accept error that is about this process (out of file
descriptors) pauses accepting for `ACCEPT_RETRY_S`, as asyncio's own loop does; one about the peer
(it reset before we accepted) is skipped.

What an accepted connection costs here is kept close to what uvloop's own server spends on one
(`bench/NATIVE.md`, the accept path): no Task per connection. `connect_accepted_socket` is a
coroutine whose work is synchronous up to one `await` of the waiter that connection_made resolves;
the acceptor runs it to that point in the accept loop itself and finishes it from the waiter's done
callback, which is what a Task would do with one more loop turn and one more object. The socket
object handed over is of a subclass whose `family` and `type` are plain class attributes: uvloop
reads both, and the stdlib's properties build an enum each time.
"""
from __future__ import annotations

import asyncio
import errno
import socket
from functools import partial

ACCEPT_BATCH = 64           # accept() calls per readiness event, so one busy listener cannot hog the loop
ACCEPT_RETRY_S = 1.0        # after EMFILE/ENFILE/ENOBUFS/ENOMEM: try again this much later
_SOCK_STREAM = int(socket.SOCK_STREAM)
_RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class _Accepted4(socket.socket):
    """An accepted IPv4 TCP socket whose family and type read as plain ints."""
    __slots__ = ()
    family = int(socket.AF_INET)        # type: ignore[assignment]
    type = _SOCK_STREAM                 # type: ignore[assignment]


class _Accepted6(socket.socket):
    """An accepted IPv6 TCP socket whose family and type read as plain ints."""
    __slots__ = ()
    family = int(socket.AF_INET6)       # type: ignore[assignment]
    type = _SOCK_STREAM                 # type: ignore[assignment]


_ACCEPTED = {int(socket.AF_INET): _Accepted4, int(socket.AF_INET6): _Accepted6}


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
        self._family = family = int(sock.family)
        self._accepted = _ACCEPTED.get(family, socket.socket)

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
            conn = self._accepted(self._family, _SOCK_STREAM, 0, fd)
            self.active += 1
            self._admit(conn, _Slot(self))

    def _after_retry(self) -> None:
        self._retry = None
        self._watch()

    def _admit(self, conn: socket.socket, slot: _Slot) -> None:
        """Make the connection's transport and protocol now (connection_made follows on the next
        loop turn), and finish uvloop's coroutine when its waiter is resolved."""
        protocol_factory = self.protocol_factory

        def factory():
            protocol = protocol_factory()
            protocol.slot_release = slot.release
            return protocol
        coro = self.loop.connect_accepted_socket(factory, conn)
        try:
            waiter = coro.send(None)
        except StopIteration:
            return
        except Exception:       # noqa: BLE001 - the peer vanished while its transport was made
            conn.close()
            slot.release()
            return
        waiter.add_done_callback(partial(_finish, coro, conn, slot))

    def _released(self) -> None:
        self.active -= 1
        if not self.watching:
            self._watch()


def _finish(coro, conn: socket.socket, slot: _Slot, _waiter) -> None:
    """The rest of `connect_accepted_socket` once its waiter is done: it returns, or (the
    connection failed before connection_made) closes the transport and raises."""
    try:
        coro.send(None)
    except StopIteration:
        pass
    except Exception:       # noqa: BLE001 - the peer vanished while its transport was made
        conn.close()
        slot.release()


def serve(loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol_factory, limit: int, *,
          errors=None, name: str = "") -> Acceptor:
    """Start accepting on `sock` with at most `limit` connections open at a time."""
    return Acceptor(loop, sock, protocol_factory, limit, errors=errors, name=name).start()
