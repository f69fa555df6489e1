"""Revocations made at run time through the admin API: one journal on disk, every worker in step.

How this works: a revocation (`POST /revocations`) or its withdrawal (`DELETE`) is one JSON line
appended to `state_dir/revocations.jsonl`, under an exclusive `flock` on a lock file beside it and
with an `fsync` before the API answers, so a change the operator was told about survives a crash, a
restart and a reload. A line is written with one `write()`; a reader applies complete lines only (a
torn last line, from a crash mid-write, is ignored and overwritten by nothing: the next append
starts on a new line). The journal is the only shared state: every process holds the replay of it
(`RevocationState`: trust store -> serial -> (reason, when, by whom)), and each worker checks the
journal's size every `POLL_INTERVAL_S` (one `fstat`), reading only what was appended since its last
look, so a change made on one worker reaches all of them well within a second, without a reload and
without the master. The worker that took the API call applies it at once. A process that finds the
journal replaced (another inode: compaction) or shorter reads it again from the start.

What a change does: the trust store's `runtime_revoked` (the very dict of the replay, not a copy)
gains or loses the serial and the store's generation moves, so every cached verdict is decided
again, resumed sessions are re-checked against it (`Verifier.recheck`), and the worker closes the
open connections whose verified path holds the serial (`close_revoked`). Like `deny_serials`, a
serial counts wherever it appears in a client's path below the CA.

The journal grows by one line per API call; it is compacted (only the revocations still in force,
written to a temporary file, fsynced and renamed over it) when a process loads it at start or on a
reload and finds more lines than twice its live entries plus `COMPACT_SLACK`.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import orjson

from .identity import serial_hex

JOURNAL_NAME = "revocations.jsonl"
LOCK_NAME = "revocations.lock"
POLL_INTERVAL_S = 0.25
MAX_REASON_CHARS = 256
MAX_BY_CHARS = 128
COMPACT_SLACK = 1024
# one journal line at most (a record is ~200 bytes; anything longer was not written by us)
MAX_LINE_BYTES = 4096
READ_CHUNK_BYTES = 1 << 22

_intern = sys.intern

#: what a store's runtime_revoked maps a serial to: (reason, revoked at (unix s), by whom)
Entry = tuple[str, float, str]


class RevocationError(Exception):
    """A request the API refuses: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Change(NamedTuple):
    """One change the journal made to the replay: `op` is "revoke" or "unrevoke"."""

    op: str
    trust_store: str
    serial: int
    entry: Entry


def parse_serial_text(value: object) -> int:
    """A serial as the API takes it: hex, with optional colons or a 0x prefix."""
    if not isinstance(value, str):
        raise RevocationError(400, "serial must be a string of hex digits")
    text = value.strip().replace(":", "")
    if text[:2].lower() == "0x":
        text = text[2:]
    if not text or len(text) > 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise RevocationError(400, f"serial must be hex digits (colons allowed), got {value[:80]!r}")
    return int(text, 16)


def _clean_text(value: object, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RevocationError(400, f"{what} must be a string")
    if len(value) > limit:
        raise RevocationError(400, f"{what} is longer than {limit} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7f for c in value):
        raise RevocationError(400, f"{what} must not hold control characters")
    return value


class RevocationState:
    """The replay of a journal: trust store name -> serial -> Entry."""

    __slots__ = ("stores", "lines")

    def __init__(self) -> None:
        self.stores: dict[str, dict[int, Entry]] = {}
        self.lines = 0

    def apply(self, record: Any) -> Change | None:
        """One journal record; the change it made, or None (no change, or not a record of ours)."""
        self.lines += 1
        try:
            op, store, number = record["op"], record["trust_store"], int(record["serial"], 16)
        except (KeyError, TypeError, ValueError):
            return None
        if type(store) is not str:
            return None
        entries = self.stores.get(store)
        if entries is None:
            entries = self.stores[store] = {}
        if op == "revoke":
            if number in entries:
                return None
            at = record.get("at")
            entry: Entry = (_intern(str(record.get("reason") or "")),
                            float(at) if type(at) in (int, float) else 0.0,
                            _intern(str(record.get("by") or "")))
            entries[number] = entry
            return Change("revoke", store, number, entry)
        if op != "unrevoke":
            return None
        old = entries.pop(number, None)
        if old is None:
            return None
        return Change("unrevoke", store, number, old)

    def live(self) -> int:
        return sum(len(v) for v in self.stores.values())


class Journal:
    """The file, its lock and a reader's position in it."""

    __slots__ = ("directory", "path", "lock_path", "inode", "offset", "_tail")

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / JOURNAL_NAME
        self.lock_path = self.directory / LOCK_NAME
        self.inode = -1
        self.offset = 0
        self._tail = b""

    def ensure(self) -> None:
        """The state directory exists, owned by us and closed to others."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _lock(self) -> int:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def read_new(self, apply: Callable[[Any], object]) -> bool:
        """Hand every record appended since the last read to `apply`, in order, a chunk at a time
        (a journal of a million lines is never held whole); True when the journal was replaced or
        shortened since (start over). A missing journal is an empty one."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            restart = self.inode != -1 and self.offset > 0
            self.inode, self.offset, self._tail = -1, 0, b""
            return restart
        try:
            st = os.fstat(fd)
            restart = False
            if st.st_ino != self.inode or st.st_size < self.offset:
                restart = self.inode != -1
                self.inode, self.offset, self._tail = st.st_ino, 0, b""
            while self.offset < st.st_size:
                data = os.pread(fd, min(st.st_size - self.offset, READ_CHUNK_BYTES), self.offset)
                if not data:
                    break
                self.offset += len(data)
                self._lines(self._tail + data if self._tail else data, apply)
        finally:
            os.close(fd)
        return restart

    def _lines(self, data: bytes, apply: Callable[[Any], object]) -> None:
        end = data.rfind(b"\n")
        if end < 0:
            self._tail = data if len(data) <= MAX_LINE_BYTES else b""
            return
        self._tail = data[end + 1:] if len(data) - end - 1 <= MAX_LINE_BYTES else b""
        loads = orjson.loads
        start = 0
        while start < end:
            stop = data.find(b"\n", start, end + 1)
            if stop > start:
                try:
                    record = loads(data[start:stop])
                except orjson.JSONDecodeError:
                    record = None   # a torn line left by a crash: nothing we told anyone about
                if record is not None:
                    apply(record)
            start = stop + 1

    def append(self, record: dict[str, Any]) -> None:
        """One record, durably, by the caller holding the lock (see Revocations._locked)."""
        line = orjson.dumps(record) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if st.st_size and self._ends_torn(st.st_size):
                line = b"\n" + line         # after a torn line, start a fresh one
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ends_torn(self, size: int) -> bool:
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) != b"\n"

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the journal by these records (compaction): whole or not at all."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            buf = bytearray()
            for record in records:
                buf += orjson.dumps(record)
                buf += b"\n"
                if len(buf) > 1 << 20:
                    os.write(fd, buf)
                    buf.clear()
            if buf:
                os.write(fd, buf)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _record(op: str, store: str, serial: int, entry: Entry) -> dict[str, Any]:
    return {"op": op, "trust_store": store, "serial": serial_hex(serial), "reason": entry[0],
            "at": entry[1], "by": entry[2]}


class Revocations:
    """One process's view of the journal, and the API's operations on it."""

    def __init__(self, state_dir: Path) -> None:
        self.journal = Journal(state_dir)
        self.state = RevocationState()

    # -- start, reload ----------------------------------------------------------------------------
    def load(self) -> None:
        """Read the whole journal (made if missing); compact it when it is mostly history."""
        self.journal.ensure()
        fd = self.journal._lock()
        try:
            self._replay_all()
            if self.state.lines > 2 * self.state.live() + COMPACT_SLACK:
                self.journal.rewrite(self._live_records())
                self._replay_all()
        finally:
            os.close(fd)

    def _replay_all(self) -> None:
        self.journal.inode, self.journal.offset, self.journal._tail = -1, 0, b""
        state = RevocationState()
        self.journal.read_new(state.apply)
        self.state = state

    def _live_records(self) -> Iterable[dict[str, Any]]:
        for store, entries in self.state.stores.items():
            for serial, entry in entries.items():
                yield _record("revoke", store, serial, entry)

    def attach(self, stores: dict[str, Any]) -> None:
        """Hand every trust store its share of the replay (the dict itself: changes reach it)."""
        for name, store in stores.items():
            store.set_runtime_revoked(self.state.stores.setdefault(name, {}))

    # -- every worker, every POLL_INTERVAL_S --------------------------------------------------------
    def poll(self, stores: dict[str, Any]) -> list[Change]:
        """What other processes appended since the last look, applied to the stores."""
        records: list[Any] = []
        restart = self.journal.read_new(records.append)
        if restart:
            # compacted or replaced: read it all again, and tell what differs
            before = {name: dict(entries) for name, entries in self.state.stores.items()}
            self._replay_all()
            self.attach(stores)
            for store in stores.values():
                store._bump()
            return _differences(before, self.state.stores)
        changes = []
        for record in records:
            change = self._apply(record, stores)
            if change is not None:
                changes.append(change)
        return changes

    def _apply(self, record: Any, stores: dict[str, Any]) -> Change | None:
        change = self.state.apply(record)
        if change is not None:
            store = stores.get(change.trust_store)
            if store is not None:
                if store.runtime_revoked is not self.state.stores[change.trust_store]:
                    store.set_runtime_revoked(self.state.stores[change.trust_store])
                store._bump()
        return change

    # -- the API ------------------------------------------------------------------------------------
    def revoke(self, stores: dict[str, Any], store: str, serial: int, reason: str, by: str,
               now: float | None = None) -> tuple[Change, bool, list[Change]]:
        """Revoke; (the revocation, whether it is new, every change applied on the way)."""
        if store not in stores:
            raise RevocationError(404, f"no trust store {store!r}")
        reason = _clean_text(reason, "reason", MAX_REASON_CHARS)
        by = _clean_text(by, "by", MAX_BY_CHARS)
        fd = self.journal._lock()
        try:
            seen = self.poll(stores)        # under the lock: the state is the journal's
            current = self.state.stores.get(store, {}).get(serial)
            if current is not None:
                return Change("revoke", store, serial, current), False, seen
            entry: Entry = (reason, time.time() if now is None else now, by)
            record = _record("revoke", store, serial, entry)
            self.journal.append(record)
            seen += self.poll(stores)
        finally:
            os.close(fd)
        mine = next((c for c in reversed(seen) if c.op == "revoke" and c.serial == serial
                     and c.trust_store == store), Change("revoke", store, serial, entry))
        return mine, True, seen

    def unrevoke(self, stores: dict[str, Any], store: str, serial: int, by: str,
                 ) -> tuple[Change | None, list[Change]]:
        """Withdraw a revocation; (what was withdrawn or None, every change applied on the way)."""
        by = _clean_text(by, "by", MAX_BY_CHARS)
        fd = self.journal._lock()
        try:
            seen = self.poll(stores)
            current = self.state.stores.get(store, {}).get(serial)
            if current is None:
                return None, seen
            self.journal.append({"op": "unrevoke", "trust_store": store,
                                 "serial": serial_hex(serial), "at": time.time(), "by": by})
            seen += self.poll(stores)
        finally:
            os.close(fd)
        return Change("unrevoke", store, serial, current), seen

    def listing(self, store: str | None = None, serial: int | None = None, offset: int = 0,
                limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """(the revocations from `offset`, at most `limit` of them, in journal order; how many
        match in all). A page is bounded so that listing 500,000 never stalls a worker."""
        out: list[dict[str, Any]] = []
        total = 0
        for name, entries in self.state.stores.items():
            if store is not None and name != store:
                continue
            items: Iterable[tuple[int, Entry]]
            if serial is not None:
                found = entries.get(serial)
                items = [(serial, found)] if found is not None else []
                count = len(items)
            else:
                count = len(entries)
                skip = max(0, offset - total)
                items = islice(entries.items(), skip, None) if skip < count else ()
            total += count
            for number, (reason, at, by) in items:
                if limit is not None and len(out) >= limit:
                    break
                out.append({"trust_store": name, "serial": serial_hex(number), "reason": reason,
                            "revoked_at": _iso(at), "by": by})
        return out, total


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _differences(before: dict[str, dict[int, Entry]],
                 after: dict[str, dict[int, Entry]]) -> list[Change]:
    changes = []
    for name in set(before) | set(after):
        old, new = before.get(name, {}), after.get(name, {})
        for serial in new.keys() - old.keys():
            changes.append(Change("revoke", name, serial, new[serial]))
        for serial in old.keys() - new.keys():
            changes.append(Change("unrevoke", name, serial, old[serial]))
    return changes


def close_revoked(runtime: Any, changes: Iterable[Change], now: float) -> int:
    """Close this worker's open connections whose verified path holds a serial just revoked (in
    the trust store their listener verifies against); the number closed."""
    revoked: dict[str, set[int]] = {}
    for change in changes:
        if change.op == "revoke":
            revoked.setdefault(change.trust_store, set()).add(change.serial)
    if not revoked:
        return 0
    closed = 0
    for rt in runtime.listeners.values():
        serials = revoked.get(rt.spec.trust_store or "")
        if not serials or rt.tls.verifier is None:
            continue
        for proto in list(rt.protocols):
            core = getattr(proto, "core", None)
            tls = getattr(core, "tls", None)
            verdict = getattr(tls, "_verdict", None)
            if verdict is None or not verdict.ok:
                continue
            hit = next((s for _, s in verdict.path_serials if s in serials), None)
            if hit is not None:
                proto.revoked(f"serial {serial_hex(hit)} revoked through the admin API")
                closed += 1
    return closed
