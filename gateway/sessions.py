"""Client chains shared by the workers, for resumed sessions.

How this works: a TLS session ticket carries the client's leaf certificate but not the chain it
presented (OpenSSL restores only the peer certificate on resumption; RFC 5077 and RFC 8446 4.6.1
leave the ticket's contents to the server, and the bindings give no way to add to it), and a
returning client may land on any worker, or on a worker started after a reload, whose in-memory
cache has never seen it. So the chain is kept with the SESSION: after each handshake that issued
sessions, the presented chain is filed under the hex digest of each session's secret
(gateway.tlspump.session_digest: a SHA-256 over the master key or TLS 1.3 resumption PSK, never the key
itself), in a directory the master creates (on tmpfs when there is one); a resumption that misses
the worker's own cache reads back the file of its own session. Keying by the leaf instead would hand
a resumption whatever chain another connection of the same leaf presented last.

A session name costs one syscall on the handshake path: each distinct chain is written once per
worker, as `chain-<SHA-256 of the file>` (a temporary file renamed into place, so it is whole or
absent), and every session name is a symbolic link to it (its own inode, so its own age; on tmpfs a
short link target takes no page). A worker rewrites a chain file it still links to once it is older
than half a session lifetime, so a chain file outlives every session linking to it; the sweep
removes it only after two lifetimes without a rewrite. The session name exists before the ticket it
belongs to leaves the gateway (it is made inside the handshake call that produces the ticket), so no
reader can look for it earlier. A chain of the leaf alone is not filed at all: a missing name already
means "the leaf alone". The files hold public certificates only. What is read back is never trusted
as such: in verify mode the chain is verified again against the current trust store, exactly like a
presented chain.

Bounded: the master calls `sweep()`, which drops the names of expired sessions and stale chain
files, and keeps at most `max_entries` names, oldest first.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence

DEFAULT_MAX_ENTRIES = 100_000
MAX_CHAIN_FILE_BYTES = 1 << 20
# chains this worker has a file for, by value (their DER bytes cache their hash): cleared when full
MAX_KNOWN_CHAINS = 4096
# a session lifetime when no listener said (keep_for): OpenSSL's default SSL_CTX_set_timeout
DEFAULT_MAX_AGE_S = 300.0
_NAME = re.compile(r"^[0-9a-f]{64}$")
_CHAIN_PREFIX = "chain-"


class ChainStore:
    __slots__ = ("directory", "max_entries", "max_age_s", "_files")

    def __init__(self, directory: str, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.directory = directory
        self.max_entries = max_entries
        self.max_age_s: float | None = None       # set by keep_for()
        # per process: chain -> (its file's name, when this process wrote it, monotonic)
        self._files: dict[tuple[bytes, ...], tuple[str, float]] = {}

    @classmethod
    def create(cls, max_entries: int = DEFAULT_MAX_ENTRIES) -> "ChainStore":
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        return cls(tempfile.mkdtemp(prefix="mtls-gateway-chains-", dir=base), max_entries)

    def _write_chain(self, chain_der: tuple[bytes, ...], now: float) -> str | None:
        payload = b"".join(len(d).to_bytes(4, "big") + d for d in chain_der)
        if len(payload) > MAX_CHAIN_FILE_BYTES:
            return None
        name = _CHAIN_PREFIX + hashlib.sha256(payload).hexdigest()
        path = os.path.join(self.directory, name)
        tmp = f"{path}.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
            os.replace(tmp, path)        # readers see a whole file or none
        except OSError:
            return None
        files = self._files
        if len(files) >= MAX_KNOWN_CHAINS:
            files.clear()
        files[chain_der] = (name, now)
        return name

    def put(self, names: Sequence[str], chain_der: tuple[bytes, ...]) -> None:
        """File `chain_der` under every name (the session digests of one connection, hex)."""
        now = time.monotonic()
        known = self._files.get(chain_der)
        if known is None or now - known[1] > (self.max_age_s or DEFAULT_MAX_AGE_S) / 2:
            target = self._write_chain(chain_der, now)
            if target is None:
                return
        else:
            target = known[0]
        directory = self.directory
        for name in names:
            if _NAME.match(name):
                try:
                    os.symlink(target, os.path.join(directory, name))
                except OSError:
                    pass    # a name is a fresh session's: it exists only if swept and reused

    def get(self, name: str) -> tuple[bytes, ...] | None:
        """The chain filed under a session digest (hex), or None (also when its link dangles)."""
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
        """Remove the names of expired sessions (see `keep_for`), chain files no worker rewrote for
        two session lifetimes, then the oldest names beyond `max_entries`; returns how many were
        removed. Workers write while this runs: a name gone in between is skipped."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        now = time.time() if now is None else now
        age_ns = int((self.max_age_s or DEFAULT_MAX_AGE_S) * 1e9)
        now_ns = int(now * 1e9)
        doomed: list[tuple[int, str]] = []
        kept: list[tuple[int, str]] = []
        for entry in entries:
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime_ns
            except OSError:
                continue
            # a chain file lives two session lifetimes past its last rewrite (see the module doc)
            limit = 2 * age_ns if entry.name.startswith(_CHAIN_PREFIX) else age_ns
            (doomed if now_ns - mtime > limit else kept).append((mtime, entry.path))
        excess = len(kept) - self.max_entries
        if excess > 0:
            kept.sort()
            doomed += kept[:excess]
        removed = 0
        for _, path in doomed:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
        return removed

    def destroy(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
