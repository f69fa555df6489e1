"""Client chains shared by the workers, for resumed sessions.

How this works: a TLS session ticket carries the client's leaf certificate but not the chain it
presented (OpenSSL restores only the peer certificate on resumption), and a returning client may land
on any worker, or on a worker started after a reload, whose in-memory cache has never seen it. So
after each full handshake the presented chain is written once to a small file named by the leaf's
SHA-256 fingerprint in a directory the master creates (on tmpfs when there is one); a resumption that
misses the worker's own cache reads it back. The files hold public certificates only. What is read
back is never trusted as such: in verify mode the chain is verified again against the current trust
store, exactly like a presented chain.

Bounded: the master calls `sweep()` to keep at most `max_entries` files, oldest first.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile

DEFAULT_MAX_ENTRIES = 100_000
MAX_CHAIN_FILE_BYTES = 1 << 20
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


class ChainStore:
    __slots__ = ("directory", "max_entries", "_written")

    def __init__(self, directory: str, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.directory = directory
        self.max_entries = max_entries
        self._written: set[str] = set()       # per process: what this worker already wrote

    @classmethod
    def create(cls, max_entries: int = DEFAULT_MAX_ENTRIES) -> "ChainStore":
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        return cls(tempfile.mkdtemp(prefix="mtls-gateway-chains-", dir=base), max_entries)

    def put(self, fingerprint: str, chain_der: tuple[bytes, ...]) -> None:
        if fingerprint in self._written or not _FINGERPRINT.match(fingerprint):
            return
        if len(self._written) > self.max_entries:
            self._written.clear()
        self._written.add(fingerprint)
        payload = b"".join(len(d).to_bytes(4, "big") + d for d in chain_der)
        if len(payload) > MAX_CHAIN_FILE_BYTES:
            return
        path = os.path.join(self.directory, fingerprint)
        tmp = f"{path}.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
            os.replace(tmp, path)        # readers see a whole file or none
        except OSError:
            pass

    def get(self, fingerprint: str) -> tuple[bytes, ...] | None:
        if not _FINGERPRINT.match(fingerprint):
            return None
        try:
            with open(os.path.join(self.directory, fingerprint), "rb") as f:
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

    def sweep(self) -> int:
        """Remove the oldest files beyond `max_entries`; returns how many were removed."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        excess = len(entries) - self.max_entries
        if excess <= 0:
            return 0
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        removed = 0
        for entry in entries[:excess]:
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
        return removed

    def destroy(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
