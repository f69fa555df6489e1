"""gateway.crlfetch: distribution points, fetching, checking, scheduling, staleness, the state dir.

No sockets and no sleeps: the fetch is a fake answering canned bytes (or raising FetchError), the
clock is a number the tests move, and run()'s sleep moves that number instead of waiting. Every test
runs against both trust-store twins (the fetched CRLs are indexed by them)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway import pki
from gateway.crlfetch import (MAX_CRL_BYTES, MIN_REFRESH_S, MAX_REFRESH_S, RETRY_MAX_S, CRLFetcher,
                              cache_path, distribution_points)
from gateway.fetch import FetchError
from gateway.identity import VerifyStatus
from gateway.spec import MAX_CRL_URLS, TrustStoreSpec
from gateway.trust import TrustStore

pytestmark = pytest.mark.usefixtures("trust_impl")

ROOT_URL = "http://pki.test/root.crl"          # the intermediate's CDP: the root's CRL
INTER_URL = "http://pki.test/inter.crl"        # a crl_urls entry: the intermediate's CRL
OTHER_URL = "http://pki.test/other.crl"
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
t0 = T0.timestamp()
HOUR = 3600.0


@dataclass
class PKI:
    root: pki.Issued
    inter: pki.Issued
    inter2: pki.Issued
    alice: pki.Issued
    bob: pki.Issued
    impostor: pki.Issued       # a self-signed CA with the intermediate's name, not in the bundle


@pytest.fixture(scope="module")
def ca() -> PKI:
    root = pki.make_root("CRL Root")
    inter = pki.make_intermediate(root, "CRL Intermediate",
                                  crl_urls=[ROOT_URL, "ldap://ldap.test/cn=root",
                                            "https://pki.test/root.crl"])
    inter2 = pki.make_intermediate(root, "CRL Intermediate 2", crl_urls=[OTHER_URL, ROOT_URL])
    alice = pki.make_client(inter, "alice", crl_urls=[INTER_URL])
    bob = pki.make_client(inter, "bob", crl_urls=[INTER_URL])
    impostor = pki.make_root("CRL Intermediate")
    assert impostor.cert.subject == inter.cert.subject
    return PKI(root, inter, inter2, alice, bob, impostor)


def path_of(ca: PKI, client: pki.Issued) -> tuple[tuple[bytes, int], ...]:
    """The (issuer, serial) pairs a verdict for `client` under inter under root carries."""
    return ((ca.inter.cert.subject.public_bytes(), client.serial),
            (ca.root.cert.subject.public_bytes(), ca.inter.serial))


def crl(issuer: pki.Issued, serials: list[int] = [], *, at: float = t0, valid_s: float = 8 * HOUR,
        number: int = 1) -> x509.CertificateRevocationList:
    this = datetime.fromtimestamp(at, timezone.utc)
    return pki.make_crl(issuer, serials, last_update=this,
                        next_update=this + timedelta(seconds=valid_s), crl_number=number)


def der(c: x509.CertificateRevocationList) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


class Clock:
    def __init__(self, now: float = t0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeFetch:
    """Canned answers by URL (bytes, or an exception to raise); unknown URLs answer 404."""

    def __init__(self, clock: Clock) -> None:
        self.answers: dict[str, bytes | BaseException] = {}
        self.calls: list[tuple[str, float, dict[str, Any]]] = []
        self.clock = clock
        self.gate: asyncio.Event | None = None      # when set: every fetch waits for it

    async def __call__(self, url: str, **kwargs: Any) -> bytes:
        self.calls.append((url, self.clock.now, kwargs))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.get(url, FetchError("status", "HTTP 404 from pki.test:80"))
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def times(self, url: str) -> list[float]:
        return [t for u, t, _ in self.calls if u == url]


class Stop(BaseException):
    """Ends run() from the fake sleep (run() catches Exception, never this)."""


@dataclass
class Rig:
    ca: PKI
    store: TrustStore
    fetcher: CRLFetcher
    fetch: FakeFetch
    clock: Clock
    logs: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    swaps: list[TrustStore] = field(default_factory=list)
    wakes: list[float] = field(default_factory=list)
    until: float = 0.0
    max_sleeps: int = 10000

    def reasons(self, level: str | None = None) -> list[str]:
        return [r for lv, r, _, _ in self.logs if level is None or lv == level]

    def refresh(self) -> None:
        asyncio.run(self.fetcher.refresh_all())

    async def sleep(self, s: float) -> None:
        """run()'s sleep: moves the clock, or ends run() once it reached `until`."""
        if self.clock.now >= self.until or len(self.wakes) >= self.max_sleeps:
            raise Stop
        assert s > 0
        self.clock.now += s
        self.wakes.append(self.clock.now)

    def on_swap(self, store: TrustStore) -> None:
        self.swaps.append(store)

    def run_until(self, until: float) -> None:
        """run() until the clock reaches `until` (the pass at that moment included)."""
        self.until = until
        with pytest.raises(Stop):
            asyncio.run(self.fetcher.run())


def make_rig(ca: PKI, *, cas: list[pki.Issued] | None = None,
             crl_urls: tuple[str, ...] = (INTER_URL,),
             state_dir: Path | None = None, crl_fetch: bool = True, now: float = t0,
             refuses: bool = True, on_swap: Any = None) -> Rig:
    clock = Clock(now)
    bundle = cas if cas is not None else [ca.root, ca.inter]
    store = TrustStore("clients", [c.cert for c in bundle])
    store.crl_stale_refuses = refuses
    spec = TrustStoreSpec(name="clients", ca_bundle=Path("bundle.pem"), crl_fetch=crl_fetch,
                          crl_urls=crl_urls, crl_fetch_timeout_s=7.0)
    fetch = FakeFetch(clock)
    rig = Rig(ca, store, None, fetch, clock)  # type: ignore[arg-type]
    rig.fetcher = CRLFetcher(store, spec, state_dir=state_dir, fetch=fetch, clock=clock,
                             log=lambda lv, r, m, **f: rig.logs.append((lv, r, m, f)),
                             on_swap=on_swap or rig.on_swap, sleep=rig.sleep)
    return rig


def serve_good(rig: Rig, *, revoked: list[int] = [], at: float = t0, valid_s: float = 8 * HOUR,
               number: int = 1) -> None:
    """Both sources answer a current CRL; the intermediate's revokes `revoked`."""
    rig.fetch.answers[ROOT_URL] = der(crl(rig.ca.root, at=at, valid_s=valid_s, number=number))
    rig.fetch.answers[INTER_URL] = der(crl(rig.ca.inter, revoked, at=at, valid_s=valid_s,
                                           number=number))


# --- URLs ---------------------------------------------------------------------------------------

def test_distribution_points_http_full_names_deduped_in_order(ca: PKI) -> None:
    certs = [ca.inter.cert, ca.inter2.cert, ca.alice.cert, ca.root.cert]
    # ldap:// and https:// are skipped, ROOT_URL (in two CDPs) once, the root has no CDP
    assert distribution_points(certs) == (ROOT_URL, OTHER_URL, INTER_URL)
    assert distribution_points([ca.root.cert]) == ()


def test_urls_are_the_cas_points_then_crl_urls_deduped(ca: PKI) -> None:
    rig = make_rig(ca, cas=[ca.root, ca.inter, ca.inter2], crl_urls=(INTER_URL, ROOT_URL))
    assert rig.fetcher.urls == (ROOT_URL, OTHER_URL, INTER_URL)


def test_crl_fetch_off_means_no_urls(ca: PKI) -> None:
    rig = make_rig(ca, crl_fetch=False)
    assert rig.fetcher.urls == ()
    rig.refresh()
    assert rig.fetch.calls == [] and not rig.fetcher.stale(t0)


def test_at_most_max_crl_urls(ca: PKI) -> None:
    urls = tuple(f"http://pki.test/{i}.crl" for i in range(MAX_CRL_URLS + 6))
    rig = make_rig(ca, crl_urls=urls)
    assert len(rig.fetcher.urls) == MAX_CRL_URLS
    assert rig.fetcher.urls[0] == ROOT_URL and "crl_too_many_urls" in rig.reasons("error")


# --- one pass -----------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["der", "pem"])
def test_a_good_fetch_applies(ca: PKI, encoding: str) -> None:
    rig = make_rig(ca)
    serve_good(rig, revoked=[ca.alice.serial])
    if encoding == "pem":
        rig.fetch.answers[INTER_URL] = pki.crl_pem(crl(ca.inter, [ca.alice.serial]))
    assert rig.store.is_revoked(path_of(ca, ca.alice)) is None
    rig.refresh()
    assert rig.store.is_revoked(path_of(ca, ca.alice)) is VerifyStatus.CRL_HIT
    assert rig.store.is_revoked(path_of(ca, ca.bob)) is None
    assert set(rig.store.fetched_crls) == {ROOT_URL, INTER_URL}
    assert not rig.store.crl_stale
    for url, _, kwargs in rig.fetch.calls:
        assert kwargs["max_bytes"] == MAX_CRL_BYTES and kwargs["timeout_s"] == 7.0


def test_a_crl_signed_by_a_stranger_is_refused_and_the_previous_kept(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig)
    rig.refresh()
    held = rig.store.fetched_crls[INTER_URL]
    # same issuer name, newer, revokes alice: but not signed by the intermediate of the bundle
    rig.fetch.answers[INTER_URL] = der(crl(ca.impostor, [ca.alice.serial], at=t0 + 60, number=2))
    rig.clock.now += 60
    rig.refresh()
    assert "untrusted_signer" in rig.reasons("warning")
    assert rig.store.fetched_crls[INTER_URL] is held
    assert rig.store.is_revoked(path_of(ca, ca.alice)) is None


def test_a_crl_from_another_issuer_than_the_point_names_is_refused(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig)
    # the intermediate's CDP names the root's CRL; a (valid) CRL of the intermediate is not it
    rig.fetch.answers[ROOT_URL] = der(crl(ca.inter, [ca.alice.serial]))
    rig.refresh()
    assert "wrong_issuer" in rig.reasons("warning")
    assert ROOT_URL not in rig.store.fetched_crls and rig.store.crl_stale


@pytest.mark.parametrize("body", [b"", b"garbage", b"-----BEGIN X509 CRL-----\nnope\n",
                                  b"\x30\x03\x02\x01\x01"])
def test_a_garbage_body_is_refused(ca: PKI, body: bytes) -> None:
    rig = make_rig(ca)
    serve_good(rig)
    rig.fetch.answers[INTER_URL] = body
    rig.refresh()
    assert "bad_crl" in rig.reasons("warning")
    assert set(rig.store.fetched_crls) == {ROOT_URL}
    assert rig.store.crl_stale and rig.fetcher.stale(t0)


def test_a_delta_crl_is_refused(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig)
    this = datetime.fromtimestamp(t0, timezone.utc)
    delta = (x509.CertificateRevocationListBuilder().issuer_name(ca.inter.cert.subject)
             .last_update(this).next_update(this + timedelta(hours=1))
             .add_extension(x509.CRLNumber(5), critical=False)
             .add_extension(x509.DeltaCRLIndicator(1), critical=True)
             .sign(ca.inter.key, hashes.SHA256()))  # type: ignore[arg-type]
    rig.fetch.answers[INTER_URL] = der(delta)
    rig.refresh()
    assert "delta_crl" in rig.reasons("warning") and INTER_URL not in rig.store.fetched_crls


def test_a_crl_with_a_critical_extension_not_understood_is_refused(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig)
    this = datetime.fromtimestamp(t0, timezone.utc)
    odd = (x509.CertificateRevocationListBuilder().issuer_name(ca.inter.cert.subject)
           .last_update(this).next_update(this + timedelta(hours=1))
           .add_extension(x509.CRLNumber(5), critical=False)
           .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"),
                                                     b"\x05\x00"), critical=True)
           .sign(ca.inter.key, hashes.SHA256()))  # type: ignore[arg-type]
    rig.fetch.answers[INTER_URL] = der(odd)
    rig.refresh()
    assert "critical_extension" in rig.reasons("warning")
    assert INTER_URL not in rig.store.fetched_crls


def test_a_crl_dated_in_the_future_is_refused(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig)
    rig.fetch.answers[INTER_URL] = der(crl(ca.inter, at=t0 + HOUR))
    rig.refresh()
    assert "not_yet_valid" in rig.reasons("warning") and INTER_URL not in rig.store.fetched_crls


def test_a_fetch_error_keeps_the_previous_crl(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig, revoked=[ca.alice.serial])
    rig.refresh()
    rig.fetch.answers[INTER_URL] = FetchError("timeout", "no complete answer within 7 s")
    rig.fetch.answers[ROOT_URL] = RuntimeError("a bug in the fetch")    # never escapes either
    rig.clock.now += 60
    rig.refresh()
    assert rig.store.is_revoked(path_of(ca, ca.alice)) is VerifyStatus.CRL_HIT
    assert set(rig.store.fetched_crls) == {ROOT_URL, INTER_URL}
    failed = {f["url"]: r for lv, r, _, f in rig.logs if lv == "warning"}
    assert failed == {INTER_URL: "timeout", ROOT_URL: "error"}


@pytest.mark.parametrize("older", [
    pytest.param({"at": t0 - 60, "number": 1}, id="earlier-lower-number"),
    pytest.param({"at": t0 + 60, "number": 1}, id="later-but-lower-number"),
    pytest.param({"at": t0 - 60, "number": 3}, id="higher-number-but-earlier"),
])
def test_an_older_crl_never_replaces_a_newer(ca: PKI, older: dict[str, Any]) -> None:
    rig = make_rig(ca)
    serve_good(rig, revoked=[ca.alice.serial], number=2)
    rig.refresh()
    rig.fetch.answers[INTER_URL] = der(crl(ca.inter, [], **older))   # replayed: alice not on it
    rig.clock.now += 120
    rig.refresh()
    assert "crl_older" in rig.reasons("warning")
    assert rig.store.is_revoked(path_of(ca, ca.alice)) is VerifyStatus.CRL_HIT


def test_a_newer_crl_replaces_the_held_one(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig, revoked=[ca.alice.serial])
    rig.refresh()
    rig.fetch.answers[INTER_URL] = der(crl(ca.inter, [ca.bob.serial], at=t0 + 60, number=2))
    rig.clock.now += 120
    rig.refresh()
    assert rig.store.is_revoked(path_of(ca, ca.alice)) is None
    assert rig.store.is_revoked(path_of(ca, ca.bob)) is VerifyStatus.CRL_HIT


def test_on_swap_is_called_after_each_swap(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig)
    rig.refresh()
    assert rig.swaps == [rig.store]
    rig.clock.now += 60
    rig.refresh()                       # the same CRLs again: nothing changed
    assert rig.swaps == [rig.store]
    rig.fetch.answers[INTER_URL] = der(crl(ca.inter, [ca.bob.serial], at=t0 + 60, number=2))
    rig.refresh()
    assert rig.swaps == [rig.store, rig.store]


def test_one_fetch_per_url_at_a_time(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig)

    async def main() -> None:
        rig.fetch.gate = asyncio.Event()
        first = asyncio.ensure_future(rig.fetcher.refresh_all())
        await asyncio.sleep(0)          # the first pass is now waiting on its fetches
        second = asyncio.ensure_future(rig.fetcher.refresh_all())
        await asyncio.sleep(0)
        rig.fetch.gate.set()
        await asyncio.gather(first, second)
    asyncio.run(main())
    assert sorted(u for u, _, _ in rig.fetch.calls) == sorted([ROOT_URL, INTER_URL])
    assert set(rig.store.fetched_crls) == {ROOT_URL, INTER_URL}


# --- staleness, schedule, backoff ---------------------------------------------------------------

def test_no_crl_yet_is_stale(ca: PKI) -> None:
    rig = make_rig(ca)
    assert rig.fetcher.stale(t0)
    rig.fetcher.load_cached()               # no state dir: still fails closed at once
    assert rig.store.crl_stale
    assert rig.store.is_revoked(path_of(ca, ca.bob)) is VerifyStatus.CRL_STALE


@pytest.mark.parametrize("refuses", [True, False], ids=["refuse", "allow"])
def test_stale_at_next_update(ca: PKI, refuses: bool) -> None:
    rig = make_rig(ca, refuses=refuses)
    serve_good(rig, revoked=[ca.alice.serial], valid_s=HOUR)
    next_update = t0 + HOUR
    rig.run_until(t0 + 1)                   # the first pass: both CRLs held, current
    assert not rig.store.crl_stale and rig.store.is_revoked(path_of(ca, ca.bob)) is None
    rig.fetch.answers[INTER_URL] = FetchError("unreachable", "pki.test:80: refused")
    rig.fetch.answers[ROOT_URL] = der(crl(ca.root, at=t0 + 1800, valid_s=HOUR, number=2))
    rig.run_until(next_update)
    assert next_update in rig.wakes         # woken at the nextUpdate itself
    assert rig.store.crl_stale and rig.fetcher.stale(next_update)
    level = "error" if refuses else "warning"
    assert "crl_stale" in rig.reasons(level)
    stale = [f for _, r, _, f in rig.logs if r == "crl_stale"][-1]
    assert stale["urls"] == [INTER_URL]     # the root's CRL was refreshed meanwhile
    if refuses:
        assert rig.store.is_revoked(path_of(ca, ca.bob)) is VerifyStatus.CRL_STALE
    else:
        assert rig.store.is_revoked(path_of(ca, ca.bob)) is None
        # what the expired CRL revoked stays revoked
        assert rig.store.is_revoked(path_of(ca, ca.alice)) is VerifyStatus.CRL_HIT
    # a current CRL coming back ends it
    rig.fetch.answers[INTER_URL] = der(crl(ca.inter, at=next_update, number=2))
    rig.run_until(next_update + RETRY_MAX_S + 1)
    assert not rig.store.crl_stale and "crl_current" in rig.reasons("info")


def test_a_refresh_lands_before_next_update(ca: PKI) -> None:
    rig = make_rig(ca)
    serve_good(rig, valid_s=8 * HOUR)
    rig.run_until(t0 + 1)
    serve_good(rig, at=t0 + 5 * HOUR, valid_s=8 * HOUR, number=2)
    rig.run_until(t0 + 9 * HOUR)
    assert rig.fetch.times(INTER_URL)[:2] == [t0, t0 + 6 * HOUR]    # 3/4 of 8 h
    assert not rig.store.crl_stale and "crl_stale" not in rig.reasons()


@pytest.mark.parametrize(("valid_s", "fetch_s"), [
    pytest.param(8 * HOUR, 6 * HOUR, id="three-quarters"),
    pytest.param(20.0, MIN_REFRESH_S, id="never-sooner-than-30s"),
    pytest.param(30 * 24 * HOUR, MAX_REFRESH_S, id="never-later-than-24h"),
])
def test_next_wakeup_at_three_quarters_clamped(ca: PKI, valid_s: float, fetch_s: float) -> None:
    rig = make_rig(ca, cas=[ca.root], crl_urls=(ROOT_URL,))
    rig.fetch.answers[ROOT_URL] = der(crl(ca.root, valid_s=valid_s))
    rig.refresh()
    assert rig.store.fetched_crls
    # the wake-up is the next fetch, or the nextUpdate when that comes first (to mark it stale)
    assert rig.fetcher.next_wakeup(t0) == t0 + min(fetch_s, valid_s)
    assert rig.fetcher.next_wakeup(t0 + valid_s) == t0 + fetch_s


def test_past_the_three_quarter_point_asks_at_three_quarters_of_what_is_left(ca: PKI) -> None:
    c = crl(ca.root, at=t0 - 7 * HOUR, valid_s=8 * HOUR)        # 1 h left, its 3/4 point passed
    assert CRLFetcher.refresh_at(c, t0) == t0 + 0.75 * HOUR
    assert CRLFetcher.refresh_at(c, t0 + HOUR - 10) == t0 + HOUR - 10 + MIN_REFRESH_S


def test_next_wakeup_is_the_earliest_of_fetches_and_next_updates(ca: PKI) -> None:
    rig = make_rig(ca)
    assert rig.fetcher.next_wakeup(t0) == 0.0                 # nothing held: fetch at once
    rig.fetch.answers[ROOT_URL] = der(crl(ca.root, valid_s=8 * HOUR))
    rig.fetch.answers[INTER_URL] = der(crl(ca.inter, valid_s=100 * HOUR))
    rig.refresh()
    assert rig.fetcher.next_wakeup(t0) == t0 + 6 * HOUR
    # the root's source failing: its retries come first, its nextUpdate still counts
    rig.fetch.answers[ROOT_URL] = FetchError("status", "HTTP 503")
    rig.clock.now = t0 + 6 * HOUR
    rig.refresh()
    assert rig.fetcher.next_wakeup(rig.clock.now) == t0 + 6 * HOUR + 10


def test_failures_back_off_doubling_to_five_minutes(ca: PKI) -> None:
    rig = make_rig(ca, cas=[ca.root], crl_urls=(ROOT_URL,))
    rig.fetch.answers[ROOT_URL] = FetchError("unreachable", "pki.test:80: refused")
    rig.run_until(t0 + 1500)
    times = rig.fetch.times(ROOT_URL)
    assert [b - a for a, b in zip(times, times[1:])][:7] == [10, 20, 40, 80, 160, 300, 300]
    assert [CRLFetcher.retry_after_s(n) for n in (1, 2, 6, 100)] == [10, 20, 300, 300]
    # a success ends the run of failures: the next failure waits 10 s again
    now = rig.clock.now
    rig.fetch.answers[ROOT_URL] = der(crl(ca.root, at=now))
    rig.refresh()
    assert rig.fetcher.next_wakeup(now) == now + 6 * HOUR
    rig.fetch.answers[ROOT_URL] = FetchError("unreachable", "pki.test:80: refused")
    rig.clock.now = now + 6 * HOUR
    rig.refresh()
    assert rig.fetcher.next_wakeup(rig.clock.now) == rig.clock.now + 10


def test_run_survives_everything(ca: PKI) -> None:
    def broken(store: TrustStore) -> None:
        raise RuntimeError("gauge")
    rig = make_rig(ca, on_swap=broken)
    serve_good(rig)
    rig.fetch.answers[ROOT_URL] = ValueError("a bug in the fetch")
    rig.run_until(t0 + 100)
    assert "crl_on_swap_error" in rig.reasons("error")
    assert rig.store.fetched_crls.keys() == {INTER_URL}
    assert len(rig.fetch.times(ROOT_URL)) >= 3        # still retried


# --- the state directory ------------------------------------------------------------------------

def test_fetched_crls_are_kept_and_read_back(ca: PKI, tmp_path: Path) -> None:
    rig = make_rig(ca, state_dir=tmp_path)
    serve_good(rig, revoked=[ca.alice.serial])
    rig.refresh()
    for url in (ROOT_URL, INTER_URL):
        path = cache_path(tmp_path, url)
        assert path.read_bytes() == rig.fetch.answers[url]
    assert sorted(p.name for p in (tmp_path / "crls").iterdir()) == sorted(
        cache_path(tmp_path, u).name for u in (ROOT_URL, INTER_URL))      # no tmp file left

    again = make_rig(ca, state_dir=tmp_path, now=t0 + HOUR)
    again.fetcher.load_cached()
    assert again.fetch.calls == []
    assert again.store.is_revoked(path_of(ca, ca.alice)) is VerifyStatus.CRL_HIT
    assert not again.store.crl_stale and again.swaps == [again.store]
    # a CRL read back is refreshed on its schedule, not at once
    assert again.fetcher.next_wakeup(t0 + HOUR) == t0 + 6 * HOUR


def test_a_state_dir_that_cannot_be_written_is_logged_and_the_crls_held(ca: PKI,
                                                                        tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_bytes(b"")            # crls/ cannot be made under a file
    rig = make_rig(ca, state_dir=blocked)
    serve_good(rig, revoked=[ca.alice.serial])
    rig.refresh()
    assert rig.reasons("warning") == ["crl_cache_write", "crl_cache_write"]
    assert rig.store.is_revoked(path_of(ca, ca.alice)) is VerifyStatus.CRL_HIT


def test_a_pem_answer_is_kept_as_der(ca: PKI, tmp_path: Path) -> None:
    rig = make_rig(ca, state_dir=tmp_path)
    serve_good(rig)
    c = crl(ca.inter, [ca.alice.serial])
    rig.fetch.answers[INTER_URL] = pki.crl_pem(c)
    rig.refresh()
    assert cache_path(tmp_path, INTER_URL).read_bytes() == der(c)


@pytest.mark.parametrize("kind", ["expired", "stranger", "garbage"])
def test_a_cached_crl_that_is_not_usable_is_ignored(ca: PKI, tmp_path: Path, kind: str) -> None:
    rig = make_rig(ca, state_dir=tmp_path, now=t0 + 9 * HOUR)
    good_root = crl(ca.root, at=t0 + 8 * HOUR)
    bad = {"expired": der(crl(ca.inter, [ca.alice.serial], valid_s=8 * HOUR)),
           "stranger": der(crl(ca.impostor, [ca.alice.serial], at=t0 + 8 * HOUR)),
           "garbage": b"\x00not a crl"}[kind]
    for url, data in ((ROOT_URL, der(good_root)), (INTER_URL, bad)):
        path = cache_path(tmp_path, url)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    rig.fetcher.load_cached()
    assert set(rig.store.fetched_crls) == {ROOT_URL}
    assert rig.store.crl_stale
    assert rig.store.is_revoked(path_of(ca, ca.alice)) is VerifyStatus.CRL_STALE
    rig.store.crl_stale_refuses = False
    assert rig.store.is_revoked(path_of(ca, ca.alice)) is None      # the bad CRL's entry not used
    assert "crl_cache_ignored" in rig.reasons("info")
    assert rig.fetcher.next_wakeup(rig.clock.now) == 0.0            # its source is fetched at once
