"""Trust stores, client-chain verification and the verified-chain cache.

How this works: a `TrustStore` is built once from a CA bundle, its CRLs and a serial deny-list, and is
immutable afterwards (a reload builds a new one and swaps the reference). CRL signatures are checked
once, at load, against the bundle; their revoked serials are indexed per issuer name, so a revocation
check during a handshake is a set lookup, not a CRL walk (OpenSSL re-checks CRL signatures on every
verification, which costs more than the rest of the chain work together).

`Verifier` applies one listener's policy (depth, expiry handling, size cap) to a presented chain:
purpose of the leaf, path building from the leaf through the intermediates the client sent to a CA of
the bundle (every link's signature checked), validity windows, CRLs, deny-list. Its verdicts are kept
in a `ChainCache` keyed by the SHA-256 of the presented chain, until the earliest notAfter on the path
(failures only briefly), so a returning client costs one hash and one dict lookup. A cache belongs to
one trust store and one policy; a new trust store starts with an empty cache, which is what makes a
trust-store or CRL change take effect at once.

OpenSSL still checks the client's CertificateVerify signature (possession of the private key) on every
full handshake; nothing here replaces that.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import ConfigError, Problem
from .identity import Identity, VerifyStatus, identity_from_certificates

# Failed verdicts are cached this long: long enough to blunt a flood of the same bad chain, short
# enough that a fixed clock or a newly added CA takes effect quickly.
FAILURE_TTL_S = 10.0
# Bounded cache: an attacker presenting endless distinct chains evicts old entries, never grows memory.
DEFAULT_CACHE_ENTRIES = 16384

_CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
_ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")


@dataclass(slots=True)
class Verdict:
    """The outcome for one presented chain, with the identity it proved (if any)."""

    status: VerifyStatus
    identity: Identity | None
    expires_at: float                 # wall-clock seconds; the verdict is stale after this
    detail: str = ""                  # why, for the log line (never key material)
    path_serials: tuple[tuple[bytes, int], ...] = ()   # (issuer DER name, serial) per non-anchor cert

    @property
    def ok(self) -> bool:
        return self.status is VerifyStatus.SUCCESS


def chain_key(chain_der: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Cache key of a presented chain: SHA-256 over the length-prefixed DER certificates."""
    h = hashlib.sha256()
    for der in chain_der:
        h.update(len(der).to_bytes(4, "big"))
        h.update(der)
    return h.digest()


class ChainCache:
    """Bounded LRU of verdicts by chain key, plus an index of good verdicts by leaf fingerprint.

    The leaf index serves resumed sessions, where no certificate crosses the handshake and only the
    leaf is known (from the session): the identity and its path are found there and revocation is
    checked again against the current store.
    """

    __slots__ = ("_entries", "_by_leaf", "max_entries", "hits", "misses")

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self._entries: OrderedDict[bytes, Verdict] = OrderedDict()
        self._by_leaf: OrderedDict[str, Verdict] = OrderedDict()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> Verdict | None:
        verdict = self._entries.get(key)
        if verdict is None or verdict.expires_at <= now:
            if verdict is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return verdict

    def put(self, key: bytes, verdict: Verdict) -> None:
        entries = self._entries
        entries[key] = verdict
        entries.move_to_end(key)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
        if verdict.ok and verdict.identity is not None:
            by_leaf = self._by_leaf
            by_leaf[verdict.identity.fingerprint] = verdict
            by_leaf.move_to_end(verdict.identity.fingerprint)
            if len(by_leaf) > self.max_entries:
                by_leaf.popitem(last=False)

    def by_leaf(self, fingerprint: str, now: float) -> Verdict | None:
        verdict = self._by_leaf.get(fingerprint)
        if verdict is None or verdict.expires_at <= now:
            return None
        return verdict


def _load_pem_or_der_crl(data: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


class TrustStore:
    """A CA bundle, its CRLs (indexed) and a serial deny-list. Immutable once built."""

    def __init__(self, name: str, cas: list[x509.Certificate],
                 crls: list[x509.CertificateRevocationList] = (),
                 deny_serials: frozenset[int] = frozenset(), generation: int = 0) -> None:
        self.name = name
        self.generation = generation
        self.cas = tuple(cas)
        self.deny_serials = frozenset(deny_serials)
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        for ca in cas:
            self._by_subject.setdefault(ca.subject.public_bytes(), []).append(ca)
        # issuer DER name -> revoked serials; only CRLs whose signature a bundle CA vouches for.
        self.revoked: dict[bytes, frozenset[int]] = {}
        self.crl_next_update: dict[bytes, float | None] = {}
        for crl in crls:
            issuer = crl.issuer.public_bytes()
            signer = next((ca for ca in self._by_subject.get(issuer, ())
                           if crl.is_signature_valid(ca.public_key())), None)
            if signer is None:
                raise ValueError(f"CRL issued by {crl.issuer.rfc4514_string()} is not signed by a CA "
                                 "of the bundle")
            serials = frozenset(r.serial_number for r in crl)
            self.revoked[issuer] = self.revoked.get(issuer, frozenset()) | serials
            nu = crl.next_update_utc
            self.crl_next_update[issuer] = nu.timestamp() if nu is not None else None
        self._caches: dict[tuple, ChainCache] = {}

    @classmethod
    def from_files(cls, name: str, ca_bundle: Path, crls: tuple[Path, ...] = (),
                   deny_serials: frozenset[int] = frozenset(), generation: int = 0,
                   source: str = "<config>") -> "TrustStore":
        problems: list[Problem] = []
        cas: list[x509.Certificate] = []
        loaded_crls: list[x509.CertificateRevocationList] = []
        try:
            cas = x509.load_pem_x509_certificates(Path(ca_bundle).read_bytes())
        except (OSError, ValueError) as exc:
            problems.append(Problem(source, f"trust_store.{name}.ca_bundle", f"cannot load: {exc}"))
        for i, path in enumerate(crls):
            try:
                loaded_crls.append(_load_pem_or_der_crl(Path(path).read_bytes()))
            except (OSError, ValueError) as exc:
                problems.append(Problem(source, f"trust_store.{name}.crls[{i}]", f"cannot load: {exc}"))
        if problems:
            raise ConfigError(problems)
        try:
            return cls(name, cas, loaded_crls, deny_serials, generation)
        except ValueError as exc:
            raise ConfigError([Problem(source, f"trust_store.{name}.crls", str(exc))]) from None

    def cache_for(self, policy: tuple) -> ChainCache:
        cache = self._caches.get(policy)
        if cache is None:
            cache = self._caches[policy] = ChainCache()
        return cache

    def ca_names(self) -> list[x509.Name]:
        return [ca.subject for ca in self.cas]

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        return self._by_subject.get(cert.issuer.public_bytes(), [])

    def is_revoked(self, path_serials: tuple[tuple[bytes, int], ...]) -> VerifyStatus | None:
        """Revocation as of this store: O(1) per certificate. Used on resumption too."""
        deny = self.deny_serials
        for issuer, serial in path_serials:
            if serial in deny:
                return VerifyStatus.REJECTED
            revoked = self.revoked.get(issuer)
            if revoked is not None and serial in revoked:
                return VerifyStatus.CRL_HIT
        return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _ca_ok(cert: x509.Certificate, intermediates_below: int) -> bool:
    """A certificate may issue others: CA basic constraint, keyCertSign, path length respected."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not bc.ca:
        return False
    if bc.path_length is not None and intermediates_below > bc.path_length:
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            return False
    except x509.ExtensionNotFound:
        pass
    return True


def _client_purpose_ok(leaf: x509.Certificate) -> bool:
    """RFC 5280 4.2.1.12: if EKU is present it must allow clientAuth; KU must allow signatures."""
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if _CLIENT_AUTH not in eku and _ANY_EKU not in eku:
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            return False            # a CA certificate is not a client identity
    except x509.ExtensionNotFound:
        pass
    return True


class Verifier:
    """One listener's client-certificate policy over a trust store, with its verdict cache."""

    __slots__ = ("store", "max_chain_depth", "ignore_expiry", "max_chain_bytes", "cache")

    def __init__(self, store: TrustStore, *, max_chain_depth: int = 4, ignore_expiry: bool = False,
                 max_chain_bytes: int = 65536) -> None:
        self.store = store
        self.max_chain_depth = max_chain_depth
        self.ignore_expiry = ignore_expiry
        self.max_chain_bytes = max_chain_bytes
        self.cache = store.cache_for((max_chain_depth, ignore_expiry, max_chain_bytes))

    def verify_der(self, chain_der: tuple[bytes, ...], now: float | None = None) -> Verdict:
        """Verdict for a presented chain (leaf first), from the cache when it is fresh."""
        if now is None:
            now = time.time()
        key = chain_key(chain_der)
        verdict = self.cache.get(key, now)
        if verdict is not None:
            # A cached success is re-checked against revocation only when the store changes, and a
            # store change means a new cache: nothing to redo here.
            return verdict
        verdict = self._decide(chain_der, now)
        self.cache.put(key, verdict)
        return verdict

    def recheck(self, verdict: Verdict, now: float | None = None) -> Verdict:
        """Re-decide a known good verdict for a resumed session: still valid, still not revoked."""
        if now is None:
            now = time.time()
        if verdict.expires_at <= now:
            return self.verify_der(verdict.identity.chain_der, now)
        revoked = self.store.is_revoked(verdict.path_serials)
        if revoked is not None:
            return Verdict(revoked, verdict.identity.with_status(revoked), now + FAILURE_TTL_S,
                           "revoked since the full handshake")
        return verdict

    def _fail(self, status: VerifyStatus, detail: str, chain_der, certs, now: float) -> Verdict:
        identity = None
        if certs:
            try:
                identity = identity_from_certificates(certs, tuple(chain_der), status)
            except Exception:       # an unparseable field must not turn a refusal into a crash
                identity = None
        return Verdict(status, identity, now + FAILURE_TTL_S, detail)

    def _decide(self, chain_der: tuple[bytes, ...], now: float) -> Verdict:
        if not chain_der:
            return Verdict(VerifyStatus.NOT_FOUND, None, now + FAILURE_TTL_S, "no certificate")
        if sum(len(d) for d in chain_der) > self.max_chain_bytes:
            return Verdict(VerifyStatus.MAX_SIZE, None, now + FAILURE_TTL_S,
                           f"chain larger than {self.max_chain_bytes} bytes")
        if len(chain_der) > self.max_chain_depth:
            return Verdict(VerifyStatus.MAX_CHAIN_DEPTH, None, now + FAILURE_TTL_S,
                           f"{len(chain_der)} certificates presented, at most {self.max_chain_depth}")
        try:
            certs = [x509.load_der_x509_certificate(d) for d in chain_der]
            leaf = certs[0]
            # touch the extensions now: a malformed extension is a refusal, not a later exception
            _ = leaf.extensions
        except Exception as exc:
            return Verdict(VerifyStatus.INVALID, None, now + FAILURE_TTL_S, f"unparseable: {exc}")
        try:
            return self._decide_parsed(certs, chain_der, now)
        except Exception as exc:    # fail closed on anything unexpected in a hostile certificate
            return self._fail(VerifyStatus.INVALID, f"malformed certificate: {exc}", chain_der, certs,
                              now)

    def _decide_parsed(self, certs: list[x509.Certificate], chain_der, now: float) -> Verdict:
        leaf = certs[0]
        if not _client_purpose_ok(leaf):
            return self._fail(VerifyStatus.PURPOSE_INVALID, "not a client-authentication certificate",
                              chain_der, certs, now)
        # Path building: from the leaf, at each step prefer a bundle CA (a trust anchor) that signed
        # the current certificate, else an intermediate the client sent; signatures are checked here.
        path = [leaf]
        pool = certs[1:]
        current = leaf
        while True:
            below = len(path) - 1          # intermediates below the issuer we are looking for
            anchor = next((ca for ca in self.store.issuers_of(current)
                           if _signed_by(current, ca) and _ca_ok(ca, below)), None)
            if anchor is not None:
                path.append(anchor)
                break
            nxt = next((c for c in pool if c.subject == current.issuer and c not in path
                        and _signed_by(current, c)), None)
            if nxt is None:
                return self._fail(VerifyStatus.UNTRUSTED, "no path to a trusted CA", chain_der,
                                  certs, now)
            if not _ca_ok(nxt, below):
                return self._fail(VerifyStatus.UNTRUSTED,
                                  f"{nxt.subject.rfc4514_string()} may not issue certificates",
                                  chain_der, certs, now)
            path.append(nxt)
            current = nxt
            if len(path) >= self.max_chain_depth:
                # even the shortest completion (an anchor next) would be too long
                return self._fail(VerifyStatus.MAX_CHAIN_DEPTH,
                                  f"path longer than {self.max_chain_depth} certificates",
                                  chain_der, certs, now)
        if len(path) > self.max_chain_depth:
            return self._fail(VerifyStatus.MAX_CHAIN_DEPTH,
                              f"path of {len(path)} certificates, at most {self.max_chain_depth}",
                              chain_der, certs, now)
        expires_at = min(c.not_valid_after_utc.timestamp() for c in path)
        if not self.ignore_expiry:
            for c in path:
                if c.not_valid_before_utc.timestamp() > now:
                    return self._fail(VerifyStatus.NOT_YET_VALID,
                                      f"{c.subject.rfc4514_string()} valid from "
                                      f"{c.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
                                      chain_der, certs, now)
                if expires_at <= now:
                    bad = min(path, key=lambda c: c.not_valid_after_utc)
                    return self._fail(VerifyStatus.EXPIRED,
                                      f"{bad.subject.rfc4514_string()} expired "
                                      f"{bad.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
                                      chain_der, certs, now)
            # a not-yet-valid path becomes valid later: never cache success past a notBefore either
        else:
            expires_at = now + 3600.0
        path_serials = tuple((path[i + 1].subject.public_bytes(), path[i].serial_number)
                             for i in range(len(path) - 1))
        revoked = self.store.is_revoked(path_serials)
        if revoked is not None:
            return self._fail(revoked, "serial on the CRL" if revoked is VerifyStatus.CRL_HIT
                              else "serial on the deny-list", chain_der, certs, now)
        identity = identity_from_certificates(certs, tuple(chain_der), VerifyStatus.SUCCESS)
        return Verdict(VerifyStatus.SUCCESS, identity, expires_at, "", path_serials)


def ca_names_der_size(store: TrustStore) -> int:
    """Bytes the CertificateRequest's certificate_authorities list takes (2-byte length each)."""
    return sum(len(ca.subject.public_bytes()) + 2 for ca in store.cas)


