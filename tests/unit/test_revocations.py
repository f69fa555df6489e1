"""The revocation journal (gateway.revocations): what one process writes another reads, torn lines,
compaction, a replaced journal, the trust store's view and the API's checks."""
from __future__ import annotations

import os

import pytest

from gateway import pki
from gateway.identity import VerifyStatus
from gateway.revocations import (COMPACT_SLACK, JOURNAL_NAME, Revocations, RevocationError,
                                 parse_serial_text)
from gateway.trust import TrustStore


@pytest.fixture
def stores():
    root = pki.make_root("Revocation Test Root")
    return {"main": TrustStore("main", [root.cert]), "other": TrustStore("other", [root.cert])}


def _process(path, stores_of):
    """A process's view: its own Revocations over its own stores (as a forked worker has)."""
    r = Revocations(path)
    r.load()
    r.attach(stores_of)
    return r


def test_a_revocation_written_by_one_process_is_read_by_another(tmp_path, stores):
    root = pki.make_root("R")
    theirs = {"main": TrustStore("main", [root.cert])}
    a = _process(tmp_path, stores)
    b = _process(tmp_path, theirs)
    gen = theirs["main"].generation
    change, created, _ = a.revoke(stores, "main", 0x1234, "stolen", "127.0.0.1:1")
    assert created and change.serial == 0x1234
    assert stores["main"].is_revoked(((b"x", 0x1234),)) is VerifyStatus.REVOKED
    # the other process sees it on its next look, and its cached verdicts are stale
    assert theirs["main"].is_revoked(((b"x", 0x1234),)) is None
    changes = b.poll(theirs)
    assert [(c.op, c.trust_store, c.serial) for c in changes] == [("revoke", "main", 0x1234)]
    assert theirs["main"].is_revoked(((b"x", 0x1234),)) is VerifyStatus.REVOKED
    assert theirs["main"].generation > gen
    assert stores["other"].is_revoked(((b"x", 0x1234),)) is None       # per trust store
    assert b.poll(theirs) == []                                           # nothing new
    removed, _ = b.unrevoke(theirs, "main", 0x1234, "me")
    assert removed is not None and removed.entry[0] == "stolen"
    assert [c.op for c in a.poll(stores)] == ["unrevoke"]
    assert stores["main"].is_revoked(((b"x", 0x1234),)) is None


def test_revoking_twice_is_one_revocation(tmp_path, stores):
    a = _process(tmp_path, stores)
    assert a.revoke(stores, "main", 5, "first", "")[1] is True
    change, created, _ = a.revoke(stores, "main", 5, "second", "")
    assert created is False and change.entry[0] == "first"
    assert len((tmp_path / JOURNAL_NAME).read_bytes().splitlines()) == 1
    assert a.unrevoke(stores, "main", 6, "")[0] is None


def test_a_torn_last_line_is_ignored_and_the_next_append_starts_fresh(tmp_path, stores):
    a = _process(tmp_path, stores)
    a.revoke(stores, "main", 1, "", "")
    with open(tmp_path / JOURNAL_NAME, "ab") as f:
        f.write(b'{"op":"revoke","trust_store":"main","ser')        # a crash mid-write
    b = _process(tmp_path, {"main": TrustStore("main", stores["main"].cas)})
    assert set(b.state.stores["main"]) == {1}
    a.revoke(stores, "main", 2, "", "")
    c = _process(tmp_path, {"main": TrustStore("main", stores["main"].cas)})
    assert set(c.state.stores["main"]) == {1, 2}


def test_a_compacted_journal_is_read_again_from_the_start(tmp_path, stores):
    a = _process(tmp_path, stores)
    for serial in range(COMPACT_SLACK + 10):
        a.revoke(stores, "main", serial + 1, "", "")
        a.unrevoke(stores, "main", serial + 1, "")
    a.revoke(stores, "main", 99999, "kept", "")
    before = os.stat(tmp_path / JOURNAL_NAME).st_ino
    reader = {"main": TrustStore("main", stores["main"].cas)}
    b = _process(tmp_path, reader)     # load compacts: history outweighs what is in force
    assert os.stat(tmp_path / JOURNAL_NAME).st_ino != before
    assert len((tmp_path / JOURNAL_NAME).read_bytes().splitlines()) == 1
    assert set(b.state.stores["main"]) == {99999}
    # the first process notices the new file and ends up with the same state
    a.poll(stores)
    assert set(a.state.stores["main"]) == {99999}
    assert stores["main"].is_revoked(((b"", 99999),)) is VerifyStatus.REVOKED


def test_unknown_trust_store_and_bad_text_are_refused(tmp_path, stores):
    a = _process(tmp_path, stores)
    with pytest.raises(RevocationError) as exc:
        a.revoke(stores, "nope", 1, "", "")
    assert exc.value.status == 404
    with pytest.raises(RevocationError):
        a.revoke(stores, "main", 1, "x" * 1000, "")
    with pytest.raises(RevocationError):
        a.revoke(stores, "main", 1, "line\nbreak", "")
    assert not (tmp_path / JOURNAL_NAME).exists() or \
        (tmp_path / JOURNAL_NAME).read_bytes() == b""


@pytest.mark.parametrize("text,value", [("0A:1B", 0x0A1B), ("0x4d2", 0x4D2), ("ff", 255)])
def test_serials_in_hex(text, value):
    assert parse_serial_text(text) == value


@pytest.mark.parametrize("text", ["", "zz", "0x", 12, "1" * 65])
def test_bad_serials(text):
    with pytest.raises(RevocationError):
        parse_serial_text(text)


def test_records_not_of_ours_change_nothing(tmp_path, stores):
    (tmp_path / JOURNAL_NAME).write_bytes(b'[1]\n{"op":"drop"}\n{"op":"revoke","trust_store":"main",'
                                          b'"serial":"zz"}\nnot json\n'
                                          b'{"op":"revoke","trust_store":"main","serial":"0F"}\n')
    a = _process(tmp_path, stores)
    assert set(a.state.stores["main"]) == {15}


def test_listing_pages_through_every_revocation(tmp_path, stores):
    a = _process(tmp_path, stores)
    for serial in range(1, 26):
        a.revoke(stores, "main" if serial % 5 else "other", serial, f"r{serial}", "")
    seen, offset = [], 0
    while True:
        page, total = a.listing(offset=offset, limit=7)
        assert total == 25 and len(page) <= 7
        seen += [(r["trust_store"], int(r["serial"], 16)) for r in page]
        if not page:
            break
        offset += len(page)
    assert sorted(s for _, s in seen) == list(range(1, 26)) and len(set(seen)) == 25
    page, total = a.listing("other", offset=2, limit=10)
    assert total == 5 and [int(r["serial"], 16) for r in page] == [15, 20, 25]
    page, total = a.listing("main", serial=7)
    assert total == 1 and page[0]["reason"] == "r7"
