"""Client chains shared by the workers, for resumed sessions.

How this works: a TLS session ticket carries the client's leaf certificate but not the chain it
presented (OpenSSL restores only the peer certificate on resumption; RFC 5077 and RFC 8446 4.6.1
leave the ticket's contents to the server, and the bindings give no way to add to it), and a
returning client may land on any worker, or on a worker started after a reload, whose in-memory
cache has never seen it. So the chain is kept with the SESSION: after each handshake that issued
sessions, the presented chain is written to a small file named by the hex digest of each session's
secret (gateway.tls._session_digest: a SHA-256 over the master key or TLS 1.3 resumption PSK, never
the key itself), in a directory the master creates (on tmpfs when there is one); a resumption that
misses the worker's own cache reads back the file of its own session. Keying by the leaf instead
would hand a resumption whatever chain another connection of the same leaf presented last.

One connection can issue several sessions (two TLS 1.3 tickets, by OpenSSL's default): the first
name is written, the others are hard links to it (one syscall each). A chain of the leaf alone is
not written at all: a missing file already means "the leaf alone". The files hold public
certificates only. What is read back is never trusted as such: in verify mode the chain is verified
again against the current trust store, exactly like a presented chain.

Bounded: the master calls `sweep()`, which drops the names of expired sessions and keeps at most
`max_entries`, oldest first.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence

DEFAULT_MAX_ENTRIES = 100_000
MAX_CHAIN_FILE_BYTES = 1 << 20
_NAME = re.compile(r"^[0-9a-f]{64}$")


class ChainStore:
    __slots__ = ("directory", "max_entries", "max_age_s")

    def __init__(self, directory: str, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.directory = directory
        self.max_entries = max_entries
        self.max_age_s: float | None = None       # set by keep_for(); None: count bound only

    @classmethod
    def create(cls, max_entries: int = DEFAULT_MAX_ENTRIES) -> "ChainStore":
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        return cls(tempfile.mkdtemp(prefix="mtls-gateway-chains-", dir=base), max_entries)

    def put(self, names: Sequence[str], chain_der: tuple[bytes, ...]) -> None:
        """Store `chain_der` under every name (the session digests of one connection, hex)."""
        names = [n for n in names if _NAME.match(n)]
        if not names:
            return
        payload = b"".join(len(d).to_bytes(4, "big") + d for d in chain_der)
        if len(payload) > MAX_CHAIN_FILE_BYTES:
            return
        first = os.path.join(self.directory, names[0])
        tmp = f"{first}.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
            os.replace(tmp, first)        # readers see a whole file or none
        except OSError:
            return
        for name in names[1:]:
            try:
                os.link(first, os.path.join(self.directory, name))
            except OSError:
                pass        # a name is a fresh session's: it exists only if swept and reused

    def get(self, name: str) -> tuple[bytes, ...] | None:
        """The chain stored under a session digest (hex), or None."""
        if not _NAME.match(name):
            return None
        try:
            with open(os.path.join(self.directory, name), "rb") as f:
                data = f.read(MAX_CHAIN_FILE_BYTES + 1)
        except OSError:
            return None
        out = []
        i = 0
        while i + 4 <= len(data):
            n = int.from_bytes(data[i:i + 4], "big")
            i += 4
            if n == 0 or i + n > len(data):
                return None
            out.append(data[i:i + n])
            i += n
        return tuple(out) if out and i == len(data) else None

    def keep_for(self, seconds: float) -> None:
        """A listener's sessions live this long (its session_timeout_s): names older than the
        longest lifetime any listener asked for can no longer be resumed, and `sweep` removes them.
        Called in the master before the workers fork, so the master's sweep knows it."""
        self.max_age_s = max(self.max_age_s or 0.0, float(seconds))

    def sweep(self, now: float | None = None) -> int:
        """Remove names whose session has expired (see `keep_for`), then the oldest beyond
        `max_entries`; returns how many were removed. A hard link keeps its chain readable until
        its last name goes. Workers write while this runs: a name gone in between is skipped."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        dated = []
        for entry in entries:
            try:
                dated.append((entry.stat().st_mtime_ns, entry.path))
            except OSError:
                pass
        dated.sort()
        cut = 0
        if self.max_age_s is not None:
            oldest_ns = int(((time.time() if now is None else now) - self.max_age_s) * 1e9)
            while cut < len(dated) and dated[cut][0] < oldest_ns:
                cut += 1
        cut = max(cut, len(dated) - self.max_entries)
        removed = 0
        for _, path in dated[:cut]:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
        return removed

    def destroy(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
