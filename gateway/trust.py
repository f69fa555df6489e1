"""Trust stores, client-chain verification and the verified-chain cache.

How this works: a `TrustStore` is built once from a CA bundle, its CRLs and a serial deny-list (a
reload builds a new one and swaps the reference). CRL signatures are checked once, at load, against
the bundle; their revoked serials are indexed per issuer name in a `SerialSet` (sorted fixed-width
keys in one buffer: natively, 5,000,000 serials load in under two seconds and take ~100 MB, where a
Python set of ints takes ~360 MB; the native twin reads them straight from the CRL's DER, which
spares the ~13 s cryptography spends making an object per entry), so a revocation check during a
handshake is one probe, not a CRL walk (OpenSSL
re-checks CRL signatures on every verification, which costs more than the rest of the chain work
together). CAs are indexed by subject name and key identifier (`IssuerIndex`).

`Verifier` applies one listener's policy (depth, expiry handling, size cap) to a presented chain:
purpose of the leaf, path building from the leaf through the intermediates the client sent to a CA of
the bundle (every link's signature checked), validity windows, CRLs, deny-list. Its verdicts are kept
in a `ChainCache` keyed by the SHA-256 of the presented chain, until the earliest notAfter on the path
(failures only briefly), so a returning client costs one hash and one lookup, and gets back the same
`Identity` with the identity headers already encoded in it. The cache is a bounded LRU stamped with
the store's `generation`: replacing the store's revocation data (`update_revocation`, or assigning
`deny_serials`) raises the generation, and every entry stored before is a miss from then on, without
walking them. A new trust store starts with empty caches. The session index that serves resumed
sessions (keyed by the session, not the leaf: each resumption gets the chain its own full handshake
presented) holds successes only and survives a generation change: `Verifier.recheck` asks the current
revocation data every time.

The revocation data (`SerialSet`) and the chain key (`chain_key`) have a Cython twin in
native/trust.pyx; `set_native` picks one for the stores built afterwards, and the unit suite runs
against both and proves them equal. A store keeps the implementation it was built with. The issuer
index and the verdict cache are pure only: their native twins saved under a microsecond of a full
handshake's ~1.3 ms (one cache get and two puts per handshake, no issuer lookup once the chain is
cached; bench/NATIVE.md, "Trust store"), so they were removed.

OpenSSL still checks the client's CertificateVerify signature (possession of the private key) on every
full handshake; nothing here replaces that.
"""
from __future__ import annotations

import hashlib
import time
from itertools import repeat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, NamedTuple, Protocol, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import ConfigError, NativeUnavailable, Problem
from .identity import Identity, VerifyStatus, identity_from_certificates

# Failed verdicts are cached this long: long enough to blunt a flood of the same bad chain, short
# enough that a fixed clock or a newly added CA takes effect quickly.
FAILURE_TTL_S = 10.0
# Bounded cache: an attacker presenting endless distinct chains evicts old entries, never grows memory.
DEFAULT_CACHE_ENTRIES = 16384
# Sessions outnumber chains: a TLS 1.3 full handshake issues two tickets (OpenSSL's default), each
# resumption one more; an entry is a key and a reference to a shared verdict.
DEFAULT_SESSION_ENTRIES = 65536
# RFC 5280 4.1.2.2: a serial is at most 20 octets. Wider (and negative) serials are kept aside.
MAX_SERIAL_BYTES = 20

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


# ---------------------------------------------------------------------------------------------
# Pure twins of native/trust.pyx. Same inputs, same outputs, same state (the tests compare them).
# ---------------------------------------------------------------------------------------------

def _py_chain_key(chain_der: Sequence[bytes]) -> bytes:
    """Cache key of a presented chain: SHA-256 over the length-prefixed DER certificates."""
    h = hashlib.sha256()
    for der in chain_der:
        h.update(len(der).to_bytes(4, "big"))
        h.update(der)
    return h.digest()


class _PySerialSet:
    """Serial numbers as sorted, unique, fixed-width big-endian keys in one bytes object.

    The width is that of the widest serial of at most MAX_SERIAL_BYTES bytes (at least 1); negative
    and wider serials go to `odd`, a frozenset. Lookup is a binary search over the buffer.
    """

    __slots__ = ("keys", "width", "odd", "_count")

    def __init__(self, serials: Iterable[int] = ()) -> None:
        items = serials if isinstance(serials, (list, tuple)) else list(serials)
        good: list[int]
        odd: list[int]
        if items and set(map(type, items)) <= {int} and min(items) >= 0 \
                and max(items).bit_length() <= 8 * MAX_SERIAL_BYTES:
            good, odd = list(set(items)), []         # the common case, without a Python loop
        else:
            good, odd = [], []
            for s in items:
                if not isinstance(s, int):
                    raise TypeError(f"a serial number must be an int, not {type(s).__name__}")
                if s < 0 or s.bit_length() > 8 * MAX_SERIAL_BYTES:
                    odd.append(s)
                else:
                    good.append(s)
            good = list(set(good))
        good.sort()
        width = max(1, (good[-1].bit_length() + 7) >> 3) if good else 1
        self.width = width
        self.odd = frozenset(odd)
        self._count = len(good)
        # typeshed's int.to_bytes takes byteorder as a Literal, which repeat("big") does not carry
        self.keys = b"".join(map(int.to_bytes, good, repeat(width), repeat("big")))  # type: ignore[arg-type]

    @classmethod
    def from_crl(cls, crl: x509.CertificateRevocationList) -> "_PySerialSet":
        """The serials a parsed CRL lists (the native twin reads them from the DER directly)."""
        return cls(crl_serials(crl))

    def __contains__(self, serial: int) -> bool:
        if not isinstance(serial, int):
            raise TypeError(f"a serial number must be an int, not {type(serial).__name__}")
        width = self.width
        n = (serial.bit_length() + 7) >> 3
        if serial < 0:
            return serial in self.odd
        if n > width:
            return n > MAX_SERIAL_BYTES and serial in self.odd
        key = serial.to_bytes(width, "big")
        keys = self.keys
        lo, hi = 0, self._count
        while lo < hi:
            mid = (lo + hi) >> 1
            probe = keys[mid * width:(mid + 1) * width]
            if probe == key:
                return True
            if probe < key:
                lo = mid + 1
            else:
                hi = mid
        return False

    def __len__(self) -> int:
        return self._count + len(self.odd)

    @property
    def nbytes(self) -> int:
        return len(self.keys) + len(self.odd) * 64


# ---------------------------------------------------------------------------------------------
# Pure only (no native twin: see the module's paragraph)
# ---------------------------------------------------------------------------------------------

class IssuerIndex:
    """Subject name (DER) -> the values (CAs) with that subject, in the order given."""

    __slots__ = ("_by_subject",)

    def __init__(self, entries: Iterable[tuple[bytes, bytes | None, Any]] = ()) -> None:
        grouped: dict[bytes, list[tuple[bytes | None, Any]]] = {}
        for subject, key_id, value in entries:
            grouped.setdefault(bytes(subject), []).append((key_id, value))
        self._by_subject = {s: (tuple(v for _, v in g), tuple(g)) for s, g in grouped.items()}

    def lookup(self, issuer: bytes, key_id: bytes | None) -> tuple[Any, ...]:
        """CAs named `issuer`; with the child's authority key id, those whose subject key id is
        absent or equal (X509_check_akid: a CA with another key id did not sign it)."""
        both = self._by_subject.get(issuer)
        if both is None:
            return ()
        if key_id is None or all(kid is None or kid == key_id for kid, _ in both[1]):
            return both[0]
        return tuple(v for kid, v in both[1] if kid is None or kid == key_id)

    def __len__(self) -> int:
        return len(self._by_subject)


class VerdictCache:
    """Bounded LRU of values by key, each with an expiry time and the generation it was stored in."""

    __slots__ = ("_entries", "capacity", "generation", "hits", "misses")

    def __init__(self, capacity: int = DEFAULT_CACHE_ENTRIES) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._entries: OrderedDict[Any, tuple[Any, float, int]] = OrderedDict()
        self.capacity = capacity
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, now: float) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry[2] != self.generation or entry[1] <= now:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: Hashable, value: Any, expires_at: float) -> None:
        if self.capacity == 0:
            return
        entries = self._entries
        if key not in entries and len(entries) >= self.capacity:
            entries.popitem(last=False)
        entries[key] = (value, float(expires_at), self.generation)
        entries.move_to_end(key)

    def invalidate(self) -> None:
        self.generation += 1

    def clear(self) -> None:
        self._entries.clear()

    def lru_keys(self) -> list[Any]:
        return list(reversed(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


# What the two twins have in common, as the rest of this module uses it.


class SerialLookup(Protocol):
    def __contains__(self, serial: int) -> bool: ...
    def __len__(self) -> int: ...


class SerialSetClass(Protocol):
    """A SerialSet class: built from serials, or from a parsed CRL."""

    def __call__(self, serials: Iterable[int] = ...) -> SerialLookup: ...
    def from_crl(self, crl: x509.CertificateRevocationList) -> SerialLookup: ...


class Implementation(NamedTuple):
    name: str
    SerialSet: SerialSetClass
    chain_key: Callable[[Sequence[bytes]], bytes]


PYTHON = Implementation("python", _PySerialSet, _py_chain_key)


def _load_native() -> Implementation | None:
    try:
        from . import _trust_c as c
    except ImportError:
        return None
    if not hasattr(c, "SerialSet") or not hasattr(c, "bind"):       # an old build
        return None
    c.bind(max_serial_bytes=MAX_SERIAL_BYTES)       # the twins' one copy of the limit
    return Implementation("native", c.SerialSet, c.chain_key)


NATIVE: Implementation | None = _load_native()

# Rebound by set_native(); stores, caches and verifiers built afterwards use it.
impl: Implementation = PYTHON
chain_key = PYTHON.chain_key
native_mode = "python"


def set_native(mode: str) -> str:
    """Pick the native or pure trust data structures: ``"auto"``, ``"on"`` or ``"off"``; returns
    what was chosen (``"native"`` or ``"python"``). Stores already built keep theirs.

    ``"on"`` without an importable extension raises NativeUnavailable (the operator asked for it).
    """
    global impl, chain_key, native_mode
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"native mode must be 'auto', 'on' or 'off', not {mode!r}")
    if mode == "on" and NATIVE is None:
        raise NativeUnavailable("native = \"on\" but gateway._trust_c cannot be imported "
                                "(reinstall with `pip install -e .` to build it)")
    chosen = NATIVE if mode != "off" and NATIVE is not None else PYTHON
    impl = chosen
    chain_key = chosen.chain_key
    native_mode = chosen.name
    return chosen.name


set_native("auto")


# ---------------------------------------------------------------------------------------------
# The verdict cache and the trust store
# ---------------------------------------------------------------------------------------------

class ChainCache:
    """Bounded LRU of verdicts by chain key, plus an index of good verdicts by TLS session.

    Entries are stamped with `generation`; raising it (the store's revocation data changed) turns
    every older entry into a miss at once. The session index serves resumed sessions, where no
    certificate crosses the handshake (OpenSSL restores only the leaf; a ticket carries no chain,
    RFC 5077 4, RFC 8446 4.6.1): it is keyed by a digest of the session's own secret
    (gateway.tlspump.session_digest), never by the leaf, because two connections of one leaf may
    present different chains and a resumption must get the chain of its own session. It holds
    successes only, each until the earlier of its verdict's expiry and the session's lifetime, and
    is not invalidated by a generation change: `Verifier.recheck` asks the current revocation data
    every time.
    """

    __slots__ = ("_entries", "_by_session", "max_entries", "impl", "chain_key")

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES,
                 implementation: Implementation | None = None,
                 max_sessions: int = DEFAULT_SESSION_ENTRIES) -> None:
        chosen = implementation or impl
        self.impl = chosen
        self.chain_key = chosen.chain_key
        self.max_entries = max_entries
        self._entries = VerdictCache(max_entries)
        self._by_session = VerdictCache(max_sessions)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hits(self) -> int:
        return self._entries.hits

    @property
    def misses(self) -> int:
        return self._entries.misses

    @property
    def generation(self) -> int:
        return self._entries.generation

    @generation.setter
    def generation(self, value: int) -> None:
        self._entries.generation = value

    def get(self, key: bytes, now: float) -> Verdict | None:
        verdict: Verdict | None = self._entries.get(key, now)      # the cache holds Verdicts only
        return verdict

    def put(self, key: bytes, verdict: Verdict) -> None:
        self._entries.put(key, verdict, verdict.expires_at)

    def put_session(self, session: bytes, verdict: Verdict, expires_at: float) -> None:
        """Remember the verdict (and so the chain) a TLS session was admitted with, until
        `expires_at` (at most the verdict's own expiry). Failures are never kept."""
        if verdict.ok and verdict.identity is not None:
            self._by_session.put(session, verdict, min(expires_at, verdict.expires_at))

    def by_session(self, session: bytes, now: float) -> Verdict | None:
        verdict: Verdict | None = self._by_session.get(session, now)
        return verdict

    @property
    def sessions(self) -> int:
        return len(self._by_session)


def _load_pem_or_der_crl(data: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def _key_identifier(cert: x509.Certificate,
                    ext_class: type[x509.AuthorityKeyIdentifier | x509.SubjectKeyIdentifier],
                    ) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_class(ext_class).value
    except x509.ExtensionNotFound:
        return None
    return value.key_identifier if isinstance(value, x509.AuthorityKeyIdentifier) else value.digest


def ca_set_fingerprint(cas: Iterable[x509.Certificate]) -> str:
    """SHA-256 over the sorted DER encodings of a set of CAs: what the CA set is, whatever the order
    or the PEM formatting of the bundle it came from. CRLs and the deny-list are not in it."""
    from cryptography.hazmat.primitives.serialization import Encoding
    h = hashlib.sha256()
    for der in sorted({ca.public_bytes(Encoding.DER) for ca in cas}):
        h.update(len(der).to_bytes(4, "big"))
        h.update(der)
    return h.hexdigest()


def bundle_fingerprint(path: Path | str) -> str:
    """`ca_set_fingerprint` of a PEM bundle file ("" when it cannot be read: the build reports it)."""
    try:
        return ca_set_fingerprint(x509.load_pem_x509_certificates(Path(path).read_bytes()))
    except (OSError, ValueError):
        return ""


class TrustStore:
    """A CA bundle, its CRLs (indexed) and a serial deny-list. Its CAs never change once built; its
    revocation data can be replaced (`update_revocation`), which raises `generation`."""

    def __init__(self, name: str, cas: list[x509.Certificate],
                 crls: Sequence[x509.CertificateRevocationList] = (),
                 deny_serials: frozenset[int] = frozenset(), generation: int = 0,
                 implementation: Implementation | None = None) -> None:
        self.name = name
        self.impl = implementation or impl
        self.generation = generation
        self.cas = tuple(cas)
        self.ca_fingerprint = ca_set_fingerprint(self.cas)
        self._by_subject = IssuerIndex(
            (ca.subject.public_bytes(), _key_identifier(ca, x509.SubjectKeyIdentifier), ca)
            for ca in cas)
        self._caches: dict[tuple[int, bool, int], ChainCache] = {}
        self._file_crls = tuple(crls)
        # CRLs fetched from distribution points, by URL (gateway.crlfetch), and whether one of the
        # sources has no CRL that is still current; `crl_stale_refuses` is the store's crl_stale
        self.fetched_crls: dict[str, x509.CertificateRevocationList] = {}
        self.crl_stale = False
        self.crl_stale_refuses = True
        self.revoked, self.crl_next_update = self._index_crls(crls)
        self._deny_list = frozenset(deny_serials)
        self._deny = self.impl.SerialSet(self._deny_list)
        # serials revoked through the admin API (gateway.revocations): serial -> reason
        self.runtime_revoked: dict[int, Any] = {}
        # the store's OCSP checker (gateway.ocsp), when its `ocsp` is not "off"
        self.ocsp: Any = None

    def _index_crls(self, crls: Iterable[x509.CertificateRevocationList],
                    ) -> tuple[dict[bytes, SerialLookup], dict[bytes, float | None]]:
        """Revoked serials by issuer DER name, from CRLs whose signature a CA of the bundle
        vouches for (checked here, once); raises ValueError for any other CRL."""
        by_issuer: dict[bytes, list[x509.CertificateRevocationList]] = {}
        next_update: dict[bytes, float | None] = {}
        for crl in crls:
            issuer = crl.issuer.public_bytes()
            signer = next((ca for ca in self._by_subject.lookup(issuer, None)
                           if crl.is_signature_valid(ca.public_key())), None)
            if signer is None:
                raise ValueError(f"CRL issued by {crl.issuer.rfc4514_string()} is not signed by a CA "
                                 "of the bundle")
            by_issuer.setdefault(issuer, []).append(crl)
            nu = crl.next_update_utc
            next_update[issuer] = nu.timestamp() if nu is not None else None
        SerialSet = self.impl.SerialSet
        revoked: dict[bytes, SerialLookup] = {}
        for issuer, group in by_issuer.items():
            revoked[issuer] = (SerialSet.from_crl(group[0]) if len(group) == 1
                               else SerialSet([s for crl in group for s in crl_serials(crl)]))
        return revoked, next_update

    def update_revocation(self, crls: list[x509.CertificateRevocationList] | None = None,
                          deny_serials: frozenset[int] | None = None) -> None:
        """Replace the CRLs and/or the deny-list (None keeps what is there); every cached verdict
        becomes stale at once. A refused CRL raises ValueError and changes nothing."""
        revoked, next_update = (self.revoked, self.crl_next_update) if crls is None \
            else self._index_crls(crls)
        if deny_serials is not None:
            self._deny = self.impl.SerialSet(frozenset(deny_serials))
            self._deny_list = frozenset(deny_serials)
        self.revoked, self.crl_next_update = revoked, next_update
        self._bump()

    def _bump(self) -> None:
        """The revocation data changed: every cached verdict is a miss from now on."""
        self.generation += 1
        for cache in self._caches.values():
            cache.generation = self.generation

    def set_fetched(self, fetched: dict[str, x509.CertificateRevocationList], *,
                    stale: bool) -> None:
        """Replace the CRLs fetched from distribution points (by URL; the configured files stay)
        and say whether a source is stale. A CRL no CA of the bundle signed raises ValueError and
        changes nothing; a success swaps everything at once and makes every cached verdict stale."""
        revoked, next_update = self._index_crls(list(self._file_crls) + list(fetched.values()))
        self.fetched_crls = dict(fetched)
        self.revoked, self.crl_next_update = revoked, next_update
        self.crl_stale = stale
        self._bump()

    def mark_stale(self, stale: bool) -> None:
        """A fetched source's CRL passed its nextUpdate (or came back): verdicts are decided again."""
        if stale != self.crl_stale:
            self.crl_stale = stale
            self._bump()

    def revoke(self, serial: int, reason: Any = "") -> bool:
        """Revoke a serial at run time (the admin API); False if it already was."""
        known = serial in self.runtime_revoked
        self.runtime_revoked[serial] = reason
        if not known:
            self._bump()
        return not known

    def unrevoke(self, serial: int) -> bool:
        """Take a serial off the runtime revocations; False if it was not on them."""
        if serial not in self.runtime_revoked:
            return False
        del self.runtime_revoked[serial]
        self._bump()
        return True

    def set_runtime_revoked(self, revoked: dict[int, Any]) -> None:
        """Take this dict as the runtime revocations (serial -> what the journal says of it)."""
        self.runtime_revoked = revoked      # the replay's own dict (gateway.revocations)
        self._bump()

    @property
    def deny_serials(self) -> frozenset[int]:
        return self._deny_list

    @deny_serials.setter
    def deny_serials(self, serials: frozenset[int]) -> None:
        self.update_revocation(deny_serials=frozenset(serials))

    @classmethod
    def from_files(cls, name: str, ca_bundle: Path, crls: tuple[Path, ...] = (),
                   deny_serials: frozenset[int] = frozenset(), generation: int = 0,
                   source: str = "<config>",
                   implementation: Implementation | None = None) -> "TrustStore":
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
            return cls(name, cas, loaded_crls, deny_serials, generation, implementation)
        except ValueError as exc:
            raise ConfigError([Problem(source, f"trust_store.{name}.crls", str(exc))]) from None

    def cache_for(self, policy: tuple[int, bool, int]) -> ChainCache:
        cache = self._caches.get(policy)
        if cache is None:
            cache = self._caches[policy] = ChainCache(implementation=self.impl)
            cache.generation = self.generation
        return cache

    def ca_names(self) -> list[x509.Name]:
        return [ca.subject for ca in self.cas]

    def issuers_of(self, cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
        return self._by_subject.lookup(cert.issuer.public_bytes(),
                                       _key_identifier(cert, x509.AuthorityKeyIdentifier))

    def is_revoked(self, path_serials: tuple[tuple[bytes, int], ...]) -> VerifyStatus | None:
        """Revocation as of this store: one probe per certificate. Used on resumption too."""
        if self.crl_stale and self.crl_stale_refuses:
            return VerifyStatus.CRL_STALE
        deny = self._deny
        revoked = self.revoked
        runtime = self.runtime_revoked
        for issuer, serial in path_serials:
            if serial in deny:
                return VerifyStatus.REJECTED
            if runtime and serial in runtime:
                return VerifyStatus.REVOKED
            serials = revoked.get(issuer)
            if serials is not None and serial in serials:
                return VerifyStatus.CRL_HIT
        return None


def crl_serials(crl: x509.CertificateRevocationList) -> list[int]:
    """The serials a CRL lists (every entry is attributed to the CRL's issuer)."""
    return [r.serial_number for r in crl]


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
        cache = self.cache
        key = cache.chain_key(chain_der)
        verdict = cache.get(key, now)
        if verdict is not None:
            # A cached verdict is only returned within the generation it was stored in: a change of
            # the store's revocation data makes it a miss, a new store starts an empty cache.
            return verdict
        verdict = self._decide(chain_der, now)
        cache.put(key, verdict)
        return verdict

    def recheck(self, verdict: Verdict, now: float | None = None) -> Verdict:
        """Re-decide a known good verdict for a resumed session: still valid, still not revoked."""
        if now is None:
            now = time.time()
        # a good verdict has its identity (ChainCache.put_session keeps no other)
        if verdict.expires_at <= now:
            return self.verify_der(verdict.identity.chain_der, now)  # type: ignore[union-attr]
        revoked = self.store.is_revoked(verdict.path_serials)
        if revoked is not None:
            return Verdict(revoked, verdict.identity.with_status(revoked),  # type: ignore[union-attr]
                           now + FAILURE_TTL_S, "revoked since the full handshake")
        return verdict

    def _fail(self, status: VerifyStatus, detail: str, chain_der: Sequence[bytes],
              certs: list[x509.Certificate], now: float) -> Verdict:
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
        try:
            certs = [x509.load_der_x509_certificate(d) for d in chain_der]
            leaf = certs[0]
            # touch the extensions now: a malformed extension is a refusal, not a later exception
            _ = leaf.extensions
        except Exception as exc:
            return Verdict(VerifyStatus.INVALID, None, now + FAILURE_TTL_S, f"unparseable: {exc}")
        if len(chain_der) > self.max_chain_depth:
            # parsed first (the size cap above bounds the work) so the refusal keeps the identity
            # presented: the logs name it, and a report-only listener forwards the chain
            return self._fail(VerifyStatus.MAX_CHAIN_DEPTH,
                              f"{len(chain_der)} certificates presented, at most {self.max_chain_depth}",
                              chain_der, certs, now)
        try:
            return self._decide_parsed(certs, chain_der, now)
        except Exception as exc:    # fail closed on anything unexpected in a hostile certificate
            return self._fail(VerifyStatus.INVALID, f"malformed certificate: {exc}", chain_der, certs,
                              now)

    def _above(self, anchor: x509.Certificate) -> tuple[tuple[bytes, int], ...]:
        """(issuer, serial) of the anchor and of each bundle CA above it, up to a self-signed root:
        a bundle intermediate is where the path stops, but its own issuer may have revoked it (RFC
        5280 6.1.3 (a)(3) checks every certificate of the path; a CRL fetched from a CA's
        distribution point exists to do exactly that). Each link's signature is checked; the walk
        is bounded by the bundle. Only on a cache miss."""
        out: list[tuple[bytes, int]] = []
        current = anchor
        seen = {id(anchor)}
        while current.subject != current.issuer and len(out) < len(self.store.cas):
            parent = next((ca for ca in self.store.issuers_of(current)
                           if id(ca) not in seen and _signed_by(current, ca)), None)
            if parent is None:
                break
            out.append((parent.subject.public_bytes(), current.serial_number))
            seen.add(id(parent))
            current = parent
        return tuple(out)

    def _decide_parsed(self, certs: list[x509.Certificate], chain_der: Sequence[bytes],
                       now: float) -> Verdict:
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
                             for i in range(len(path) - 1)) + self._above(path[-1])
        revoked = self.store.is_revoked(path_serials)
        if revoked is not None:
            return self._fail(revoked, _REVOCATION_DETAIL[revoked], chain_der, certs, now)
        identity = identity_from_certificates(certs, tuple(chain_der), VerifyStatus.SUCCESS)
        return Verdict(VerifyStatus.SUCCESS, identity, expires_at, "", path_serials)


_REVOCATION_DETAIL = {
    VerifyStatus.CRL_HIT: "serial on the CRL",
    VerifyStatus.REJECTED: "serial on the deny-list",
    VerifyStatus.REVOKED: "serial revoked through the admin API",
    VerifyStatus.CRL_STALE: "a fetched CRL is past its nextUpdate (crl_stale = \"refuse\")",
}


def ca_names_der_size(store: TrustStore) -> int:
    """Bytes the CertificateRequest's certificate_authorities list takes (2-byte length each)."""
    return sum(len(ca.subject.public_bytes()) + 2 for ca in store.cas)


