"""Accepting client connections with a cap per worker: beyond it, new ones wait in the backlog.

How this works: an `Acceptor` has two ways of accepting, and uses the cheaper one while the cap is
far away.

- Well below the cap (`active < fast_below`, 7/8 of the limit less one accept batch, nginx's
  `ngx_accept_disabled` rule), uvloop's own server accepts: `loop.create_server` on a duplicate
  of the listening socket's descriptor (closing that server closes the duplicate only; the socket
  and its backlog stay). libuv accepts in C, every pending connection at each wake-up, and makes
  each transport without a Python frame: the cheapest accept there is (`bench/NATIVE.md`, the
  accept path). Its factory counts each connection; the one that reaches `fast_below` switches to
  the other way. A single wake-up of libuv's loop can take more than the headroom left (a burst
  bigger than `limit - fast_below` already in the backlog): what it takes beyond `limit` is closed
  at once, logged and counted (`accept_overflow`; nginx's "worker_connections are not enough").
- Near the cap, the acceptor watches the non-blocking listening socket itself (`loop.add_reader`)
  and calls `accept()` at most `ACCEPT_BATCH` times per wake-up, handing each socket to
  `loop.connect_accepted_socket`. At `limit` open connections it stops watching: connections the
  kernel completes meanwhile stay in the listen backlog (or go to another worker sharing the
  socket), none is accepted only to be dropped. When a slot frees up, watching resumes; below
  `fast_up` (a hysteresis under `fast_below`) uvloop's server takes over again.

Every admitted connection holds a slot until its protocol's `connection_lost` gives it back (the
protocol calls its `slot_release`, set here).

Errors. On the watched socket, an accept error that is about this process (out of file
descriptors) pauses accepting for `ACCEPT_RETRY_S`, as asyncio's own loop does; one about the peer
(it reset before we accepted) is skipped. uvloop's server meets the same errors in libuv, which
answers EMFILE by accepting and closing what is pending (its reserve-descriptor trick, nginx's
behaviour too) without telling anyone, and should that trick fail, closes the server for good:
the acceptor looks once a second (`FAST_CHECK_S`), logs either as the watched path would and
carries on watching, after the same pause.

Fast mode needs the listen backlog, because uvloop's server calls listen() again: `backlog=None`
(a socket systemd passed, whose Backlog= only systemd knows) keeps to the watched path.

What the watched path costs per connection is kept close to uvloop's: no Task per connection.
`connect_accepted_socket` is a coroutine whose work is synchronous up to one `await` of the waiter
that connection_made resolves; the acceptor runs it to that point in the accept loop itself and
finishes it from the waiter's done callback, which is what a Task would do with one more loop turn
and one more object. The socket object handed over is of a subclass whose `family` and `type` are
plain class attributes: uvloop reads both, and the stdlib's properties build an enum each time.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
from functools import partial

ACCEPT_BATCH = 64           # accept() calls per readiness event, so one busy listener cannot hog the loop
ACCEPT_RETRY_S = 1.0        # after EMFILE/ENFILE/ENOBUFS/ENOMEM: try again this much later
FAST_CHECK_S = 1.0          # how often the acceptor looks whether uvloop's server closed itself
OVERFLOW_LOG_S = 1.0        # accept_overflow is logged at most this often (with the count since)
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
    """One admitted connection's place; released exactly once. The protocol holds the slot itself
    as its `slot_release` and calls it: a bound `release` method would be one more object per
    open connection."""

    __slots__ = ("acceptor",)

    def __init__(self, acceptor: "Acceptor") -> None:
        self.acceptor: Acceptor | None = acceptor

    def __call__(self) -> None:
        self.release()

    def release(self) -> None:
        acceptor = self.acceptor
        if acceptor is not None:
            self.acceptor = None
            acceptor._released()


class _Overflow(asyncio.Protocol):
    """A connection libuv accepted past the cap in one wake-up: reset at once, its slot given back."""

    __slots__ = ("slot",)

    def __init__(self, slot: "_Slot") -> None:
        self.slot = slot

    def connection_made(self, transport) -> None:
        transport.abort()

    def connection_lost(self, exc) -> None:
        self.slot.release()


def fast_below(limit: int) -> int:
    """Under this many open connections uvloop's server accepts (see the module's docstring)."""
    return limit - max(limit // 8, ACCEPT_BATCH)


class Acceptor:
    """Accepts on `sock` while fewer than `limit` of its connections are open. Has the part of
    `asyncio.Server` the worker uses: `close()` (stop accepting; open connections carry on)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol_factory,
                 limit: int, *, errors=None, name: str = "", backlog: int | None = None) -> None:
        self.loop = loop
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.limit = limit
        self.errors = errors
        self.name = name
        self.backlog = backlog
        self.active = 0             # admitted and not yet released
        self.watching = False
        self.closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._fd = sock.fileno()
        # plain ints for the accepted sockets' constructor: the socket's `family` and `type`
        # properties build enums on every read
        self._family = family = int(sock.family)
        self._accepted = _ACCEPTED.get(family, socket.socket)
        # uvloop's server while far from the cap (None: the watched path); see the module's doc
        self.fast_below = fast_below(limit) if backlog is not None else 0
        self.fast_up = self.fast_below - max(limit // 16, ACCEPT_BATCH // 2)
        self.fast: asyncio.Server | None = None
        self._fast_opening = False
        self._fast_check: asyncio.TimerHandle | None = None
        self.overflowed = 0         # connections closed past the cap (accept_overflow), ever
        self._overflow_logged = 0   # of those, how many a log line has reported
        self._overflow_at = -OVERFLOW_LOG_S
        self._overflow_flush: asyncio.TimerHandle | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self.sock,)

    def start(self) -> "Acceptor":
        self._watch()
        self._go_fast()
        return self

    def close(self) -> None:
        self.closed = True
        self._unwatch()
        self._stop_fast(at_once=True)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._overflow_flush is not None:
            self._overflow_flush.cancel()
            self._log_overflow()

    async def wait_closed(self) -> None:
        return None

    def is_serving(self) -> bool:
        return not self.closed

    # -- the watched path ---------------------------------------------------------------------------
    def _watch(self) -> None:
        if (not self.watching and self.fast is None and not self.closed and self.active < self.limit
                and self._retry is None):
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
                fd, _ = sock._accept()  # type: ignore[attr-defined]  # CPython's, not in typeshed
            except (BlockingIOError, InterruptedError):
                return      # another worker took it, or nothing left
            except ConnectionAbortedError:
                continue    # the client gave up before we accepted
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self._pause(f"cannot accept: {exc.strerror}")
                    return
                continue
            conn = self._accepted(self._family, _SOCK_STREAM, 0, fd)
            self.active += 1
            self._admit(conn, _Slot(self))

    def _pause(self, why: str) -> None:
        if self.errors is not None:
            self.errors.error("accept_failed", f"{why}; retrying in {ACCEPT_RETRY_S:g}s",
                              listener=self.name)
        self._unwatch()
        self._retry = self.loop.call_later(ACCEPT_RETRY_S, self._after_retry)

    def _after_retry(self) -> None:
        self._retry = None
        self._watch()
        self._go_fast()

    def _admit(self, conn: socket.socket, slot: _Slot) -> None:
        """Make the connection's transport and protocol now (connection_made follows on the next
        loop turn), and finish uvloop's coroutine when its waiter is resolved."""
        protocol_factory = self.protocol_factory

        def factory():
            protocol = protocol_factory()
            protocol.slot_release = slot
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
        if self.active < self.fast_up:
            self._go_fast()
        if not self.watching:
            self._watch()

    # -- uvloop's server, far from the cap --------------------------------------------------------
    def _go_fast(self) -> None:
        if (self.fast is None and not self._fast_opening and not self.closed and self._retry is None
                and self.active < self.fast_up):
            self._fast_opening = True
            self.loop.create_task(self._open_fast())

    async def _open_fast(self) -> None:
        try:
            dup = self.sock.dup()
            try:
                # fast mode is only ever opened with a backlog (fast_below is 0 without one)
                server = await self.loop.create_server(
                    self._fast_protocol, sock=dup, backlog=self.backlog)  # type: ignore[arg-type]
            except BaseException:
                dup.close()
                raise
        except OSError as exc:
            if exc.errno in _RESOURCE_ERRORS:
                return      # out of descriptors: the watched path meets it too; tried again later
            self._no_fast(exc)
            return
        except Exception as exc:       # noqa: BLE001 - the watched path carries on alone
            self._no_fast(exc)
            return
        finally:
            self._fast_opening = False
        if self.closed or self._retry is not None or self.active >= self.fast_below:
            server.close()
            return
        self.fast = server
        self._unwatch()
        self._fast_check = self.loop.call_later(FAST_CHECK_S, self._check_fast)

    def _no_fast(self, exc: BaseException) -> None:
        if self.errors is not None:
            self.errors.warning("accept_fast_failed", f"uvloop's accept loop could not start: "
                                f"{exc}; accepting through the watched socket", listener=self.name)
        self.fast_below = self.fast_up = 0

    def _fast_protocol(self):
        """uvloop's server's protocol factory: one accepted connection."""
        self.active += 1
        slot = _Slot(self)
        if self.active > self.limit:
            self._overflow()
            return _Overflow(slot)
        if self.active >= self.fast_below:
            self._stop_fast()       # the connections libuv already took are served
            self._watch()
        try:
            protocol = self.protocol_factory()
        except BaseException:
            slot.release()          # uvloop closes the connection and reports the exception
            raise
        protocol.slot_release = slot
        return protocol

    def _stop_fast(self, *, at_once: bool = False) -> None:
        server = self.fast
        if server is not None:
            self.fast = None
            if at_once:
                server.close()
            else:
                # closing a uvloop server from inside its own accept callback would close the
                # descriptor libuv has just accepted: the next loop turn does it
                self.loop.call_soon(server.close)
        if self._fast_check is not None:
            self._fast_check.cancel()
            self._fast_check = None

    def _check_fast(self) -> None:
        """Once a second while uvloop's server accepts. Out of descriptors, libuv accepts and
        closes what is pending (its reserve-descriptor trick) and says nothing: a probe that
        cannot open /dev/null sees the same condition, and the watched path, which leaves
        connections in the backlog, takes over after the pause. Should libuv's trick itself fail,
        uvloop closes its server for good, equally silently: its socket then reads as None."""
        self._fast_check = None
        server = self.fast
        if server is None:
            return
        try:
            os.close(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            if exc.errno in _RESOURCE_ERRORS:
                self._stop_fast(at_once=True)
                self._pause(f"cannot accept: {exc.strerror}")
                return
        if None in server.sockets:
            self.fast = None
            server.close()
            self._pause("cannot accept: uvloop's accept loop stopped")
            return
        self._fast_check = self.loop.call_later(FAST_CHECK_S, self._check_fast)

    def _overflow(self) -> None:
        self.overflowed += 1
        if self.errors is None or self._overflow_flush is not None:
            return
        wait = self._overflow_at + OVERFLOW_LOG_S - self.loop.time()
        if wait <= 0:
            self._log_overflow()
        else:
            # logged at most once a second: what comes meanwhile is counted into the next line
            self._overflow_flush = self.loop.call_later(wait, self._log_overflow)

    def _log_overflow(self) -> None:
        self._overflow_flush = None
        self._overflow_at = self.loop.time()
        n, self._overflow_logged = self.overflowed - self._overflow_logged, self.overflowed
        if n and self.errors is not None:
            self.errors.warning("accept_overflow", f"{n} connection(s) accepted in one burst past "
                                f"max_connections_per_worker = {self.limit}: closed",
                                listener=self.name)


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
          errors=None, name: str = "", backlog: int | None = None) -> Acceptor:
    """Start accepting on `sock` with at most `limit` connections open at a time; `backlog` (the
    socket's listen backlog, when known) lets uvloop's server accept far from the limit."""
    return Acceptor(loop, sock, protocol_factory, limit, errors=errors, name=name,
                    backlog=backlog).start()
