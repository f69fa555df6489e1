"""CRLs fetched from distribution points, kept current for one trust store.

How this works: a `CRLFetcher` watches a fixed set of URLs: the http:// CRL distribution points of
the bundle's CAs (RFC 5280 4.2.1.13) and the trust store's `crl_urls`. Each URL is a source with at
most one CRL held. A pass (`refresh_all`, or the due sources in `run`) fetches its sources
concurrently (bounded: a body cap, a deadline, a few fetches at a time, one per URL), parses each
answer (DER as RFC 5280 4.2.1.13 says, PEM accepted too), and holds it only if it is a complete CRL
(no delta, no critical extension we cannot process: RFC 5280 5.2), issued by the CA the distribution
point names, signed by a CA of the bundle, and newer than the one held (never an older one: a plain
http answer can be replayed, RFC 5280 5.2.3). The pass ends with one `TrustStore.set_fetched` of
everything held, so a handshake sees either the old revocation data or the new, and the CRLs taken
are written to `state_dir/crls/` (tmp file + rename) for `load_cached` to read back at the next
start or reload. A source that fails keeps its CRL and retries with backoff.

`run` schedules each source on its own: again at thisUpdate + 3/4 of the CRL's validity window
(within 30 s .. 24 h from now), so a new CRL is normally held well before the old one's nextUpdate.
A source is stale while it has no CRL whose nextUpdate is in the future (one without nextUpdate
never goes stale); the store is marked stale while any source is, which refuses clients unless the
store's `crl_stale` is "allow" (then it is logged). Until the first CRL of a source arrives, the
source is stale: revocation that cannot be checked fails closed. Nothing a distribution point sends
(garbage, a slow answer, a huge body) escapes `run`; it is one warning line with a reason code.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast, get_args

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID

from .fetch import FetchError, fetch as http_fetch
from .spec import MAX_CRL_URLS, TrustStoreSpec
from .trust import TrustStore

__all__ = ["CRLFetcher", "distribution_points", "parse_crl", "cache_path", "MAX_CRL_BYTES",
           "REFRESH_FRACTION", "MIN_REFRESH_S", "MAX_REFRESH_S", "RETRY_FIRST_S", "RETRY_MAX_S"]

# Large CAs publish CRLs of tens of MB (millions of entries); beyond this a body is refused.
MAX_CRL_BYTES = 64 * 1024 * 1024
# Fetches of one pass in flight at once: bounds the memory a pass holds (bodies are kept until
# parsed) to this many times MAX_CRL_BYTES, whatever the number of URLs.
MAX_CONCURRENT_FETCHES = 8
# The next fetch of a source is at this fraction of its CRL's validity window, within these bounds
# from now. A CA publishes its next CRL before the current one's nextUpdate (RFC 5280 5.1.2.5), so
# 3/4 leaves a quarter of the window for retries.
REFRESH_FRACTION = 0.75
MIN_REFRESH_S = 30.0
MAX_REFRESH_S = 86400.0
# A failed fetch is retried after RETRY_FIRST_S, doubling up to RETRY_MAX_S.
RETRY_FIRST_S = 10.0
RETRY_MAX_S = 300.0
# A CRL whose thisUpdate is further ahead than this is refused (OpenSSL's CRL_NOT_YET_VALID): held,
# a CRL dated in the future would turn every real newer one away as "older".
MAX_FUTURE_SKEW_S = 300.0
# Slack on top of the fetch's own deadline, in case a fetch function does not keep it.
FETCH_GRACE_S = 1.0
# run() wakes at least this often (a wall-clock jump must not hide a nextUpdate for long) and
# sleeps at least MIN_SLEEP_S (a clock that stands still must not spin the loop).
MAX_SLEEP_S = 60.0
MIN_SLEEP_S = 1.0
# RFC 2585 3: the media type of a DER CRL.
CRL_MEDIA_TYPE = "application/pkix-crl"
CACHE_SUBDIR = "crls"

_PEM_MARKER = b"-----BEGIN X509 CRL-----"
# RFC 5280 5.2: a CRL with a critical extension we cannot process must not be used. These we do:
# the issuing distribution point (indirect CRLs are refused below) and the two non-critical ones.
_UNDERSTOOD_CRITICAL = frozenset({ExtensionOID.ISSUING_DISTRIBUTION_POINT})
# The key types a CA may sign with (an X25519 or ML-KEM key cannot sign a CRL).
_ISSUER_KEY_TYPES = get_args(CertificateIssuerPublicKeyTypes)


class FetchFunction(Protocol):
    """gateway.fetch.fetch, as this module calls it (tests pass a fake)."""

    def __call__(self, url: str, *, accept: str, timeout_s: float,
                 max_bytes: int) -> Awaitable[bytes]: ...


@dataclass(slots=True, eq=False)        # by identity: a source is a dict key
class _Source:
    """One URL: the issuers its CRL may come from (None: any CA of the bundle), the CRL held, and
    when to fetch it next (wall-clock seconds; 0: at once)."""

    url: str
    issuers: frozenset[bytes] | None
    crl: x509.CertificateRevocationList | None = None
    der: bytes = b""
    next_fetch_at: float = 0.0
    failures: int = 0


class _Refused(Exception):
    """An answer not held: `reason` is the log line's code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _points(certs: Iterable[x509.Certificate]) -> dict[str, set[bytes]]:
    """http:// full-name URIs of the certificates' distribution points, in order, each with the
    issuer names (DER) its CRL must carry: the certificate's issuer, or the point's cRLIssuer."""
    out: dict[str, set[bytes]] = {}
    for cert in certs:
        try:
            cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except x509.ExtensionNotFound:
            continue
        except ValueError:          # a malformed extension names no usable point
            continue
        for point in cdp:
            if not point.full_name:         # a relative name needs an LDAP directory: not fetched
                continue
            if point.crl_issuer:
                issuers = {n.value.public_bytes() for n in point.crl_issuer
                           if isinstance(n, x509.DirectoryName)}
            else:
                issuers = {cert.issuer.public_bytes()}
            for name in point.full_name:
                # ldap:// and ftp:// points are not fetched; nor https:// (a CRL is signed, and a
                # TLS fetch would need revocation checks of its own: gateway.fetch)
                if isinstance(name, x509.UniformResourceIdentifier) \
                        and name.value[:7].lower() == "http://":
                    out.setdefault(name.value, set()).update(issuers)
    return out


def distribution_points(certs: Iterable[x509.Certificate]) -> tuple[str, ...]:
    """The http:// full-name URIs of the certificates' CRL distribution points, deduplicated, in
    the order met."""
    return tuple(_points(certs))


def parse_crl(body: bytes) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER (RFC 5280 4.2.1.13 serves DER; some servers send PEM); ValueError."""
    if _PEM_MARKER in body:
        return x509.load_pem_x509_crl(body)
    return x509.load_der_x509_crl(body)


def cache_path(state_dir: Path, url: str) -> Path:
    """Where the CRL of `url` is kept: named by the URL's SHA-256, so any URL makes a safe name."""
    return state_dir / CACHE_SUBDIR / (hashlib.sha256(url.encode("utf-8")).hexdigest() + ".crl")


def _timestamp(crl: x509.CertificateRevocationList) -> float:
    return crl.last_update_utc.timestamp()


def _next_update(crl: x509.CertificateRevocationList) -> float | None:
    nu = crl.next_update_utc
    return nu.timestamp() if nu is not None else None


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _compare(new: x509.CertificateRevocationList, held: x509.CertificateRevocationList) -> int:
    """1 if `new` is newer than `held`, 0 if it is the same, -1 if older. RFC 5280 5.2.3: CRL
    numbers only increase, so a lower number is older whatever its date, and a higher number with
    an earlier thisUpdate contradicts itself: taken as older (never go back)."""
    new_at, held_at = _timestamp(new), _timestamp(held)
    new_no, held_no = _crl_number(new), _crl_number(held)
    if new_no is not None and held_no is not None:
        if new_no < held_no or (new_no > held_no and new_at < held_at):
            return -1
        return 1 if new_no > held_no else 0
    if new_at != held_at:
        return 1 if new_at > held_at else -1
    return 0


def _current(crl: x509.CertificateRevocationList, now: float) -> bool:
    nu = _next_update(crl)
    return nu is None or nu > now


class CRLFetcher:
    """Keeps the fetched CRLs of one trust store current (see the module's paragraph).

    `log(level, reason, message, **fields)` writes one error-log line; `on_swap(store)` is called
    after every change of the store's fetched CRLs or of its staleness. `fetch`, `clock` (wall-clock
    seconds) and `sleep` are the outside world, replaced in tests. With `spec.crl_fetch` off there
    are no URLs and nothing is ever fetched.
    """

    def __init__(self, store: TrustStore, spec: TrustStoreSpec, *, state_dir: Path | None = None,
                 fetch: FetchFunction = http_fetch, clock: Callable[[], float] = time.time,
                 log: Callable[..., None] | None = None,
                 on_swap: Callable[[TrustStore], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store = store
        self.spec = spec
        self.state_dir = state_dir
        self._fetch = fetch
        self._clock = clock
        self._log_fn = log
        self._on_swap = on_swap
        self._sleep = sleep
        self._in_flight: set[str] = set()
        points: dict[str, set[bytes] | None] = {}
        if spec.crl_fetch:
            points.update(_points(store.cas))
            for url in spec.crl_urls:
                points.setdefault(url, None)      # an operator's URL: any CA of the bundle
        urls = list(points)
        if len(urls) > MAX_CRL_URLS:
            self._log("error", "crl_too_many_urls",
                      f"trust store {store.name}: {len(urls)} CRL URLs, only the first "
                      f"{MAX_CRL_URLS} are fetched", dropped=urls[MAX_CRL_URLS:])
            urls = urls[:MAX_CRL_URLS]
        self._sources = tuple(
            _Source(u, frozenset(i) if (i := points[u]) is not None else None) for u in urls)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(s.url for s in self._sources)

    def held(self) -> dict[str, x509.CertificateRevocationList]:
        """The CRL held per URL (URLs without one left out)."""
        return {s.url: s.crl for s in self._sources if s.crl is not None}

    # --- time ---------------------------------------------------------------------------------

    def stale(self, now: float) -> bool:
        """Some source has no CRL whose nextUpdate is after `now`."""
        return any(s.crl is None or not _current(s.crl, now) for s in self._sources)

    def next_wakeup(self, now: float) -> float:
        """When something is next due: a source's fetch, or a held CRL's nextUpdate (the store turns
        stale then unless a newer CRL came first). Wall-clock seconds; may be <= now."""
        times = [s.next_fetch_at for s in self._sources if s.url not in self._in_flight]
        for s in self._sources:
            nu = _next_update(s.crl) if s.crl is not None else None
            if nu is not None and nu > now:
                times.append(nu)
        return min(times, default=now + MAX_REFRESH_S)

    @staticmethod
    def refresh_at(crl: x509.CertificateRevocationList, now: float) -> float:
        """When to fetch again a source whose CRL is `crl`: at thisUpdate + 3/4 of its window; past
        that point (the distribution point still serves it), at 3/4 of what is left, so a CA that
        publishes only at nextUpdate is asked a few times, not every MIN_REFRESH_S. Always within
        MIN_REFRESH_S .. MAX_REFRESH_S from now."""
        nu = _next_update(crl)
        if nu is None:
            return now + MAX_REFRESH_S
        this = _timestamp(crl)
        at = this + REFRESH_FRACTION * (nu - this)
        if at <= now:
            at = now + REFRESH_FRACTION * (nu - now)
        return min(max(at, now + MIN_REFRESH_S), now + MAX_REFRESH_S)

    @staticmethod
    def retry_after_s(failures: int) -> float:
        """The wait after `failures` failures in a row: RETRY_FIRST_S doubling to RETRY_MAX_S."""
        return min(RETRY_FIRST_S * 2.0 ** min(max(failures - 1, 0), 32), RETRY_MAX_S)

    # --- the cache ------------------------------------------------------------------------------

    def load_cached(self) -> None:
        """Hold the CRLs earlier fetches saved in the state directory that are still current and
        vouched for by the bundle, apply them, and mark the store stale if a source still has
        none. Call it before the first handshake: without a CRL, a source fails closed at once."""
        now = self._clock()
        loaded: dict[_Source, x509.CertificateRevocationList] = {}
        if self.state_dir is not None:
            for source in self._sources:
                path = cache_path(self.state_dir, source.url)
                try:
                    if path.stat().st_size > MAX_CRL_BYTES:
                        raise _Refused("too_large", f"over {MAX_CRL_BYTES} bytes")
                    crl = self._judge(source, path.read_bytes(), now)
                    if not _current(crl, now):
                        raise _Refused("crl_expired", f"nextUpdate {crl.next_update_utc} passed")
                    if source.crl is not None and _compare(crl, source.crl) <= 0:
                        continue            # what is held already is as new
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    self._log("warning", "crl_cache_unreadable",
                              f"trust store {self.store.name}: cached CRL of {source.url} cannot "
                              f"be read: {exc}", url=source.url, path=str(path))
                    continue
                except _Refused as exc:
                    self._log("info", "crl_cache_ignored",
                              f"trust store {self.store.name}: cached CRL of {source.url} not "
                              f"used: {exc.reason}: {exc.detail}", url=source.url, path=str(path))
                    continue
                loaded[source] = crl
        if loaded and self._swap(loaded, now):
            for source, crl in loaded.items():
                source.next_fetch_at = self.refresh_at(crl, now)
            self._log("info", "crl_cache_loaded",
                      f"trust store {self.store.name}: {len(loaded)} cached CRL(s) in use",
                      urls=[s.url for s in loaded])
        self._apply_staleness(now)

    def _write_cache(self, items: Sequence[tuple[str, bytes]]) -> list[str]:
        """Write each (url, DER) atomically (tmp file in the same directory, fsync, rename: a
        reader sees the old file or the new, never half of one); the errors, as text. Runs in a
        thread: tens of MB may be written."""
        assert self.state_dir is not None
        errors: list[str] = []
        for url, der in items:
            final = cache_path(self.state_dir, url)
            tmp = ""
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=final.parent)
                with os.fdopen(fd, "wb") as f:
                    f.write(der)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
                tmp = ""
            except OSError as exc:
                errors.append(f"{url}: {exc}")
            finally:
                if tmp:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
        return errors

    # --- fetching -------------------------------------------------------------------------------

    async def refresh_all(self) -> None:
        """One pass over every source, due or not. Never raises."""
        try:
            await self._refresh(self._sources)
        except Exception as exc:        # a bug here must not take the worker's loop down
            self._log("error", "crl_fetch_error",
                      f"trust store {self.store.name}: CRL refresh failed: "
                      f"{type(exc).__name__}: {exc}")

    async def run(self) -> None:
        """Keep every source current until cancelled: fetch what is due, mark the store stale at a
        nextUpdate passed without a newer CRL, sleep until the next thing is due."""
        while True:
            delay = MAX_SLEEP_S
            try:
                now = self._clock()
                due = [s for s in self._sources if s.next_fetch_at <= now]
                if due:
                    await self._refresh(due)
                now = self._clock()
                self._apply_staleness(now)
                delay = self.next_wakeup(now) - now
            except Exception as exc:
                self._log("error", "crl_fetch_error",
                          f"trust store {self.store.name}: CRL refresh failed: "
                          f"{type(exc).__name__}: {exc}")
            await self._sleep(min(max(delay, MIN_SLEEP_S), MAX_SLEEP_S))

    async def _refresh(self, sources: Sequence[_Source]) -> None:
        todo = [s for s in sources if s.url not in self._in_flight]   # one fetch per URL at a time
        if not todo:
            return
        self._in_flight.update(s.url for s in todo)
        gate = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        try:
            outcomes = await asyncio.gather(*(self._fetch_one(s, gate) for s in todo))
        finally:
            self._in_flight.difference_update(s.url for s in todo)
        now = self._clock()
        taken: dict[_Source, x509.CertificateRevocationList] = {}
        for source, outcome in zip(todo, outcomes):
            if isinstance(outcome, _Refused):
                self._failed(source, outcome, now)
                continue
            crl = outcome
            if source.crl is not None:
                order = _compare(crl, source.crl)
                if order < 0:
                    self._failed(source, _Refused(
                        "crl_older", f"thisUpdate {crl.last_update_utc:%Y-%m-%dT%H:%M:%SZ}, "
                        f"number {_crl_number(crl)}; holding "
                        f"{source.crl.last_update_utc:%Y-%m-%dT%H:%M:%SZ}, number "
                        f"{_crl_number(source.crl)}"), now)
                    continue
                if order == 0:
                    self._answered(source, source.crl, now)
                    continue
            taken[source] = crl
        if not taken:
            self._apply_staleness(now)
            return
        if not self._swap(taken, now):
            for source in taken:
                self._failed(source, _Refused("crl_refused", "the trust store refused it"), now)
            self._apply_staleness(now)
            return
        for source, crl in taken.items():
            self._answered(source, crl, now)
            self._log("info", "crl_updated",
                      f"trust store {self.store.name}: CRL of {crl.issuer.rfc4514_string()} from "
                      f"{source.url}, number {_crl_number(crl)}, next update "
                      f"{crl.next_update_utc}", url=source.url)
        if self.state_dir is not None:
            items = [(s.url, s.der) for s in taken]
            try:
                errors = await asyncio.to_thread(self._write_cache, items)
            except Exception as exc:    # no thread to run it in: the CRLs are held all the same
                errors = [f"{type(exc).__name__}: {exc}"]
            for error in errors:
                self._log("warning", "crl_cache_write",
                          f"trust store {self.store.name}: cannot keep a fetched CRL: {error}")
        self._apply_staleness(self._clock())

    async def _fetch_one(self, source: _Source, gate: asyncio.Semaphore,
                         ) -> x509.CertificateRevocationList | _Refused:
        """The source's answer, parsed and checked, or why not. Never raises (but cancellation)."""
        timeout_s = self.spec.crl_fetch_timeout_s
        try:
            async with gate:
                body = await asyncio.wait_for(
                    self._fetch(source.url, accept=CRL_MEDIA_TYPE, timeout_s=timeout_s,
                                max_bytes=MAX_CRL_BYTES), timeout_s + FETCH_GRACE_S)
            if len(body) > MAX_CRL_BYTES:
                raise _Refused("too_large", f"body over {MAX_CRL_BYTES} bytes")
            return self._judge(source, body, self._clock())
        except _Refused as exc:
            return exc
        except FetchError as exc:
            return _Refused(exc.reason, exc.detail)
        except (asyncio.TimeoutError, TimeoutError):
            return _Refused("timeout", f"no answer within {timeout_s:g} s")
        except Exception as exc:
            return _Refused("error", f"{type(exc).__name__}: {exc}")

    def _judge(self, source: _Source, body: bytes, now: float) -> x509.CertificateRevocationList:
        """The CRL in `body` if it may be held for `source` (its age against the held one aside);
        else _Refused."""
        try:
            crl = parse_crl(body)
            extensions = crl.extensions     # parsed now: a malformed extension refuses the CRL
            issuer = crl.issuer.public_bytes()
            this_update = _timestamp(crl)
            _next_update(crl)
        except ValueError as exc:
            raise _Refused("bad_crl", f"not a CRL: {exc}") from None
        for ext in extensions:
            if isinstance(ext.value, x509.DeltaCRLIndicator):
                # RFC 5280 5.2.4: a delta lists only changes since its base; taken for a complete
                # CRL it would drop every revocation it does not repeat
                raise _Refused("delta_crl", "a delta CRL, not a complete one")
            if ext.critical and ext.oid not in _UNDERSTOOD_CRITICAL:
                raise _Refused("critical_extension",
                               f"critical extension {ext.oid.dotted_string} not understood")
            if isinstance(ext.value, x509.IssuingDistributionPoint) and ext.value.indirect_crl:
                # RFC 5280 5.3.3: entries of other issuers; the store credits every entry to the
                # CRL's issuer
                raise _Refused("indirect_crl", "an indirect CRL")
        name = crl.issuer.rfc4514_string()
        if source.issuers is not None and issuer not in source.issuers:
            raise _Refused("wrong_issuer", f"issued by {name}, not by the CA the distribution "
                                           "point belongs to")
        if source.crl is not None and source.crl.issuer.public_bytes() != issuer:
            raise _Refused("issuer_changed", f"issued by {name}, the CRL held is by "
                                             f"{source.crl.issuer.rfc4514_string()}")
        if this_update > now + MAX_FUTURE_SKEW_S:
            raise _Refused("not_yet_valid",
                           f"thisUpdate {crl.last_update_utc:%Y-%m-%dT%H:%M:%SZ} is in the future")
        if not self._signed_by_bundle(crl, issuer):
            raise _Refused("untrusted_signer",
                           f"issued by {name}: not signed by a CA of the bundle")
        return crl

    def _signed_by_bundle(self, crl: x509.CertificateRevocationList, issuer: bytes) -> bool:
        """A CA of the bundle named as the CRL's issuer, allowed to sign CRLs (RFC 5280 4.2.1.3:
        cRLSign when it has a key usage), signed it."""
        for ca in self.store.cas:
            if ca.subject.public_bytes() != issuer:
                continue
            try:
                ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
                if not ku.crl_sign:
                    continue
            except x509.ExtensionNotFound:
                pass
            except ValueError:
                continue
            try:
                key = ca.public_key()
                if not isinstance(key, _ISSUER_KEY_TYPES):
                    continue
                if crl.is_signature_valid(cast(CertificateIssuerPublicKeyTypes, key)):
                    return True
            except Exception:           # a key that cannot verify this CRL did not sign it
                continue
        return False

    # --- outcomes -------------------------------------------------------------------------------

    def _answered(self, source: _Source, crl: x509.CertificateRevocationList, now: float) -> None:
        """The source answered with `crl` (now held). An expired one is no answer: retry soon."""
        if not _current(crl, now):
            self._failed(source, _Refused(
                "crl_expired", f"the newest CRL served is past its nextUpdate "
                               f"{crl.next_update_utc}"), now)
            return
        source.failures = 0
        source.next_fetch_at = self.refresh_at(crl, now)

    def _failed(self, source: _Source, why: _Refused, now: float) -> None:
        source.failures += 1
        delay_s = self.retry_after_s(source.failures)
        source.next_fetch_at = now + delay_s
        kept = "keeping the CRL held" if source.crl is not None else "no CRL held"
        self._log("warning", why.reason,
                  f"trust store {self.store.name}: CRL from {source.url}: {why.detail}; {kept}, "
                  f"retry in {delay_s:g} s", url=source.url, failures=source.failures,
                  retry_in_s=delay_s)

    def _swap(self, taken: dict[_Source, x509.CertificateRevocationList], now: float) -> bool:
        """Apply the held CRLs with `taken` in place of their sources' in one swap; commit them to
        the sources only if the store accepted them all."""
        fetched = {s.url: taken.get(s, s.crl) for s in self._sources
                   if s in taken or s.crl is not None}
        held = {u: c for u, c in fetched.items() if c is not None}
        stale = any(u not in held or not _current(held[u], now) for u in self.urls)
        was_stale = self.store.crl_stale
        try:
            self.store.set_fetched(held, stale=stale)
        except Exception as exc:        # ValueError for a CRL it refuses; anything else: same
            self._log("error", "crl_refused",
                      f"trust store {self.store.name}: fetched CRLs not applied: {exc}",
                      urls=[s.url for s in taken])
            return False
        for source, crl in taken.items():
            source.crl = crl
            source.der = crl.public_bytes(Encoding.DER)
        if stale != was_stale:
            self._log_staleness(stale, now)
        self._notify()
        return True

    def _apply_staleness(self, now: float) -> None:
        stale = self.stale(now)
        if stale != self.store.crl_stale:
            self.store.mark_stale(stale)
            self._log_staleness(stale, now)
            self._notify()

    def _log_staleness(self, stale: bool, now: float) -> None:
        if not stale:
            self._log("info", "crl_current",
                      f"trust store {self.store.name}: every CRL source has a current CRL")
            return
        urls = [s.url for s in self._sources if s.crl is None or not _current(s.crl, now)]
        if self.store.crl_stale_refuses:
            self._log("error", "crl_stale",
                      f"trust store {self.store.name}: no current CRL from {', '.join(urls)}: its "
                      "clients are refused until one arrives (crl_stale = \"refuse\")", urls=urls)
        else:
            self._log("warning", "crl_stale",
                      f"trust store {self.store.name}: no current CRL from {', '.join(urls)}: "
                      "clients are admitted on the CRLs held (crl_stale = \"allow\")", urls=urls)

    def _notify(self) -> None:
        if self._on_swap is None:
            return
        try:
            self._on_swap(self.store)
        except Exception as exc:        # a metrics hook must not stop revocation updates
            self._log("error", "crl_on_swap_error",
                      f"trust store {self.store.name}: on_swap failed: {type(exc).__name__}: {exc}")

    def _log(self, level: str, reason: str, message: str, **fields: object) -> None:
        if self._log_fn is not None:
            self._log_fn(level, reason, message, store=self.store.name, **fields)
