"""OCSP for client certificates: requests, response checks, and a cached, non-blocking checker.

How this works: the pure half builds a request (`build_request`: a SHA-1 CertID, as RFC 5019 2.1.1
says lightweight responders expect, and a 32-byte nonce, RFC 8954) and decides what a responder's
answer means (`check_response`): the answer must be a successful BasicOCSPResponse, carry a
SingleResponse for our CertID, be signed by the issuer or by a responder the issuer delegated to
(RFC 6960 4.2.2.2), be current (RFC 6960 4.2.2.1, within a clock skew) and echo our nonce if it
echoes one. Anything less raises `OCSPInvalid`; a usable answer is an `Answer` (good, revoked or
unknown) that stays valid until its nextUpdate.

`OCSPChecker` sits beside a trust store and is asked once per handshake, after the chain verified.
Answers live in a bounded LRU keyed by (issuer DER name, serial), the same pairs the verdict's
`path_serials` carries, so a warm handshake costs one dict probe per checked certificate and no
parsing. A miss never blocks: `check` hands back a `Pending` and starts one asyncio task per key
(concurrent misses of one key share it) that fetches the answer from the responder; the caller
resumes the handshake from the Pending's waiters. A responder that cannot be reached or answers
badly yields an "unavailable" answer, cached only for `UNAVAILABLE_TTL_S` so a flood of handshakes
costs the responder one request every few seconds; the store's `failure` policy says whether such a
handshake is refused (`refuse`, the default: fail closed) or admitted (`allow`, logged).
"""
from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    SignatureAlgorithmOID,
)

from .fetch import FetchError
from .fetch import fetch as http_fetch
from .identity import Identity, VerifyStatus, serial_hex
from .spec import DEFAULT_OCSP_TIMEOUT_S, FAILURE_POLICIES, OCSP_MODES

#: RFC 8954 2.1: a nonce is 1 to 32 octets; 32 is what it recommends.
NONCE_BYTES = 32
#: thisUpdate/nextUpdate leeway for clocks that disagree; `openssl ocsp -validity_period` defaults
#: to the same 5 minutes.
DEFAULT_SKEW_S = 300.0
#: RFC 6960 4.2.2.1: no nextUpdate means newer information is always available; such an answer is
#: reused this long, so a responder that omits it still serves a handshake burst with one request.
NO_NEXT_UPDATE_TTL_S = 60.0
#: An unavailable answer (no responder, a bad or late answer) is kept this long: long enough that a
#: flood of handshakes does not hammer a dead responder, short enough that its recovery shows soon.
#: No answer is kept less than this either (one at its nextUpdate within the skew would else be
#: fetched again on every handshake).
UNAVAILABLE_TTL_S = 5.0
#: A responder's answer is a few KiB at most (one SingleResponse, maybe one responder certificate).
MAX_RESPONSE_BYTES = 65536
#: Our deadline over an injected fetch, a little past the fetch's own so its reason wins the race.
DEADLINE_GRACE_S = 0.5
DEFAULT_MAX_ENTRIES = 16384
DEFAULT_MAX_IN_FLIGHT = 64
OCSP_REQUEST_TYPE = "application/ocsp-request"        # RFC 6960 A.1
OCSP_RESPONSE_TYPE = "application/ocsp-response"
CHECK_MODES = tuple(m for m in OCSP_MODES if m != "off")      # "off" builds no checker

_OCSP_SIGNING = ExtendedKeyUsageOID.OCSP_SIGNING
# The signature algorithms accepted on a response, by the key type they need. SHA-1 is left out:
# OpenSSL 3 refuses SHA-1 signatures from security level 1 up, and so do we.
_SIG = SignatureAlgorithmOID
_RSA_PKCS1 = frozenset({_SIG.RSA_WITH_SHA224, _SIG.RSA_WITH_SHA256, _SIG.RSA_WITH_SHA384,
                        _SIG.RSA_WITH_SHA512})
_ECDSA = frozenset({_SIG.ECDSA_WITH_SHA224, _SIG.ECDSA_WITH_SHA256, _SIG.ECDSA_WITH_SHA384,
                    _SIG.ECDSA_WITH_SHA512})

Key = tuple[bytes, int]         # (issuer DER name, serial): one entry of Verdict.path_serials
_NO_KEY: Key = (b"", -1)        # what a log line about no certificate in particular is throttled by


class OCSPInvalid(Exception):
    """A responder's answer that cannot be used; `reason` is a short code for logs and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Answer:
    """What a responder said about one certificate. `status` None means good."""

    status: VerifyStatus | None
    detail: str
    expires_at: float                   # wall-clock seconds: the answer is stale after this
    this_update: float = 0.0
    next_update: float | None = None    # None: the responder gave none (RFC 6960 4.2.2.1)


class FetchFn(Protocol):
    def __call__(self, url: str, *, body: bytes | None = ..., content_type: str = ...,
                 accept: str = ..., timeout_s: float, max_bytes: int) -> Awaitable[bytes]: ...


class LogFn(Protocol):
    def __call__(self, level: str, reason: str, message: str, **fields: object) -> None: ...


# What the checker reads of gateway.trust's TrustStore and Verdict, spelled as protocols: this
# module needs nothing else of trust (whose stores hold their checker in `ocsp`).
class StoreLike(Protocol):
    def issuers_of(self, cert: x509.Certificate) -> tuple[x509.Certificate, ...]: ...


class VerdictLike(Protocol):
    @property
    def identity(self) -> Identity | None: ...

    @property
    def path_serials(self) -> tuple[Key, ...]: ...


# ---------------------------------------------------------------------------------------------
# The pure half: URLs, requests, responses.
# ---------------------------------------------------------------------------------------------

def responder_urls(cert: x509.Certificate) -> tuple[str, ...]:
    """The http:// OCSP responder URLs of the certificate's Authority Information Access (RFC 5280
    4.2.2.1), in order. Other schemes are left out: an answer is signed, so it is fetched in the
    clear (RFC 6960 A.1), and an https fetch would need revocation checks of its own."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(d.access_location.value for d in aia
                 if d.access_method == AuthorityInformationAccessOID.OCSP
                 and isinstance(d.access_location, x509.UniformResourceIdentifier)
                 and d.access_location.value[:7].lower() == "http://")


def build_request(cert: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None) -> bytes:
    """A DER OCSPRequest for `cert` (issued by `issuer`), with a nonce extension when given."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        if not 1 <= len(nonce) <= NONCE_BYTES:
            raise ValueError(f"an OCSP nonce is 1 to {NONCE_BYTES} bytes (RFC 8954 2.1)")
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at `pos`; ValueError if it overruns."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        width = length & 0x7F
        if not 1 <= width <= 4 or pos + width > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos:pos + width], "big")
        pos += width
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def public_key_bits(cert: x509.Certificate) -> bytes:
    """The contents of the certificate's subjectPublicKey BIT STRING (no tag, length or unused-bits
    octet): what RFC 6960 4.1.1 (issuerKeyHash) and 4.2.1 (ResponderID byKey) hash. Read from the
    certificate's own DER, since re-encoding the key could change it (a compressed EC point)."""
    tbs = cert.tbs_certificate_bytes
    _, pos, _ = _tlv(tbs, 0)                    # TBSCertificate
    tag, _, after = _tlv(tbs, pos)
    if tag == 0xA0:                             # [0] EXPLICIT version
        pos = after
    for _ in range(5):                          # serial, signature, issuer, validity, subject
        _, _, pos = _tlv(tbs, pos)
    tag, pos, _ = _tlv(tbs, pos)                # SubjectPublicKeyInfo
    _, _, pos = _tlv(tbs, pos)                  # its AlgorithmIdentifier
    tag, start, end = _tlv(tbs, pos)
    if tag != 0x03 or end <= start:
        raise ValueError("no subjectPublicKey BIT STRING")
    return tbs[start + 1:end]


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _when(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _verify_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    """The response's signature over tbsResponseData by `signer`'s key, or OCSPInvalid."""
    oid = response.signature_algorithm_oid
    key = signer.public_key()
    signature, data = response.signature, response.tbs_response_bytes
    try:
        if isinstance(key, rsa.RSAPublicKey) and oid in _RSA_PKCS1:
            algorithm = response.signature_hash_algorithm
            assert algorithm is not None            # every OID of _RSA_PKCS1 names its hash
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and oid in _ECDSA:
            algorithm = response.signature_hash_algorithm
            assert algorithm is not None
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey) and oid == SignatureAlgorithmOID.ED25519:
            key.verify(signature, data)
        elif isinstance(key, ed448.Ed448PublicKey) and oid == SignatureAlgorithmOID.ED448:
            key.verify(signature, data)
        else:
            raise OCSPInvalid("unsupported_signature",
                              f"signature algorithm {oid.dotted_string} with a "
                              f"{type(key).__name__.lstrip('_')} is not accepted")
    except InvalidSignature:
        raise OCSPInvalid("bad_signature", "the response's signature does not verify") from None


def _responder_is(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """RFC 6960 4.2.1: does the ResponderID (by name, or by SHA-1 of the key) name `cert`?"""
    name = response.responder_name
    if name is not None:
        return name == cert.subject
    key_hash = response.responder_key_hash
    return key_hash is not None and hmac.compare_digest(
        key_hash, _digest(hashes.SHA1(), public_key_bits(cert)))


def _signer(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: float) -> x509.Certificate:
    """The certificate whose key must have signed the response (RFC 6960 4.2.2.2): the issuer
    itself, or a responder certificate included in the response that the issuer signed directly,
    that carries id-kp-OCSPSigning and is valid now. Its own revocation is not asked: a delegated
    responder's certificate carries id-pkix-ocsp-nocheck (4.2.2.2.1) or is short-lived."""
    if _responder_is(response, issuer):
        return issuer
    problem = "signed neither by the issuer nor by a responder certificate included in the response"
    for cert in response.certificates:
        if not _responder_is(response, cert):
            continue
        subject = cert.subject.rfc4514_string()
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            problem = f"responder {subject} is not issued by {issuer.subject.rfc4514_string()}"
            continue
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            delegated = _OCSP_SIGNING in eku
        except x509.ExtensionNotFound:
            delegated = False
        if not delegated:
            problem = f"responder {subject} lacks id-kp-OCSPSigning"
            continue
        if not (cert.not_valid_before_utc.timestamp() <= now
                <= cert.not_valid_after_utc.timestamp()):
            problem = (f"responder {subject} is outside its validity "
                       f"({_when(cert.not_valid_before_utc)} to {_when(cert.not_valid_after_utc)})")
            continue
        return cert
    raise OCSPInvalid("bad_signer", problem)


def _single_for(response: ocsp.OCSPResponse, cert: x509.Certificate,
                issuer: x509.Certificate) -> ocsp.OCSPSingleResponse:
    """The SingleResponse whose CertID is ours (RFC 6960 4.1.1), hashed with its own algorithm."""
    name_der = cert.issuer.public_bytes()
    key_bits = public_key_bits(issuer)
    serial = cert.serial_number
    for single in response.responses:
        if single.serial_number != serial:
            continue
        try:
            algorithm = single.hash_algorithm
        except Exception:           # an unsupported hash OID: not a CertID we can match
            continue
        if (hmac.compare_digest(single.issuer_name_hash, _digest(algorithm, name_der))
                and hmac.compare_digest(single.issuer_key_hash, _digest(algorithm, key_bits))):
            return single
    raise OCSPInvalid("no_response", f"no answer for serial {serial_hex(serial)} of "
                      f"{cert.issuer.rfc4514_string()}")


def check_response(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, *,
                   nonce: bytes | None, now: float, skew_s: float = DEFAULT_SKEW_S) -> Answer:
    """What the DER OCSPResponse `der` says about `cert`; OCSPInvalid (and nothing else) if it
    cannot be used. `nonce` is the one our request carried (None: none was sent)."""
    try:
        return _check_response(der, cert, issuer, nonce, now, skew_s)
    except OCSPInvalid:
        raise
    except Exception as exc:        # a hostile answer must not escape as anything else
        raise OCSPInvalid("malformed", f"{type(exc).__name__}: {exc}") from None


def _check_response(der: bytes, cert: x509.Certificate, issuer: x509.Certificate,
                    nonce: bytes | None, now: float, skew_s: float) -> Answer:
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise OCSPInvalid("malformed", f"not an OCSP response: {exc}") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        # RFC 6960 2.3: tryLater, internalError, unauthorized ... carry no signature to trust
        raise OCSPInvalid("status", f"responder answered {response.response_status.name}")
    single = _single_for(response, cert, issuer)
    _verify_signature(response, _signer(response, issuer, now))
    if nonce is not None:
        # RFC 8954 2.1: a responder may leave the nonce out (pre-signed answers); one it echoes
        # must be ours, or the answer was made for someone else's request (a replay)
        try:
            echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None
        if echoed is not None and not hmac.compare_digest(echoed, nonce):
            raise OCSPInvalid("nonce_mismatch", "the response echoes another request's nonce")
    this_update = single.this_update_utc.timestamp()
    next_dt = single.next_update_utc
    next_update = next_dt.timestamp() if next_dt is not None else None
    # RFC 6960 4.2.2.1 (and 3.2 items 4-5): thisUpdate is not in the future, nextUpdate (if any)
    # not in the past, both within the skew
    if this_update > now + skew_s:
        raise OCSPInvalid("not_yet_valid", f"thisUpdate {_when(single.this_update_utc)} is in "
                          "the future")
    if next_dt is not None and next_update is not None and next_update < now - skew_s:
        raise OCSPInvalid("expired", f"nextUpdate {_when(next_dt)} has passed")
    expires_at = next_update if next_update is not None else now + NO_NEXT_UPDATE_TTL_S
    status = single.certificate_status
    if status is ocsp.OCSPCertStatus.GOOD:
        return Answer(None, "good", expires_at, this_update, next_update)
    if status is ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason
        revoked_at = single.revocation_time_utc
        detail = f"revoked at {_when(revoked_at)}" if revoked_at is not None else "revoked"
        if reason is not None:
            detail += f" ({reason.value})"
        return Answer(VerifyStatus.OCSP_REVOKED, detail, expires_at, this_update, next_update)
    return Answer(VerifyStatus.OCSP_UNKNOWN, "the responder does not know the certificate",
                  expires_at, this_update, next_update)


# ---------------------------------------------------------------------------------------------
# The checker: cache, fetches, policy.
# ---------------------------------------------------------------------------------------------

class Pending:
    """An answer still being fetched. `add_waiter(callback)` calls `callback(pending)` exactly once,
    from the loop, when it settles (at once, through call_soon, if it already has); `result` is then
    the first refusal in path order (None: admitted) and `detail` says why."""

    __slots__ = ("done", "result", "detail", "_loop", "_slots", "_outstanding", "_waiters", "_log")

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 slots: list[tuple[VerifyStatus | None, str] | None], log: LogFn | None) -> None:
        self.done = False
        self.result: VerifyStatus | None = None
        self.detail = ""
        self._loop = loop
        self._slots = slots                     # per key in path order; None while unanswered
        self._outstanding = sum(1 for s in slots if s is None)
        self._waiters: list[Callable[[Pending], object]] = []
        self._log = log

    def add_waiter(self, callback: Callable[[Pending], object]) -> None:
        if self.done:
            self._loop.call_soon(self._call, callback)
        else:
            self._waiters.append(callback)

    def _answer(self, index: int, result: VerifyStatus | None, detail: str) -> None:
        if self.done or self._slots[index] is not None:
            return
        self._slots[index] = (result, detail)
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._settle()

    def _settle(self) -> None:
        for slot in self._slots:
            if slot is not None and slot[0] is not None:
                self.result, self.detail = slot
                break
        self.done = True
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            self._call(callback)

    def _call(self, callback: Callable[[Pending], object]) -> None:
        try:
            callback(self)
        except Exception as exc:        # one waiter's bug must not keep the others waiting
            if self._log is not None:
                try:
                    self._log("error", "ocsp_waiter_failed",
                              f"an OCSP waiter raised {type(exc).__name__}: {exc}")
                except Exception:
                    pass


class OCSPStats:
    """Counters for metrics: checks answered from the cache, checks that had to wait or were
    answered unavailable at once, requests sent to responders, fetches that ended unavailable, and
    misses refused a fetch because `max_in_flight` were already running."""

    __slots__ = ("hits", "misses", "fetches", "failures", "overflows")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.fetches = 0
        self.failures = 0
        self.overflows = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Entry:
    __slots__ = ("result", "expires_at", "answer")

    def __init__(self, result: VerifyStatus | None, expires_at: float, answer: Answer) -> None:
        self.result = result                    # the answer with the failure policy applied
        self.expires_at = expires_at
        self.answer = answer


class _Job:
    """One fetch in flight for one key, and the Pendings (with their slot) waiting on it."""

    __slots__ = ("key", "waiting", "task")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.waiting: list[tuple[Pending, int]] = []
        self.task: asyncio.Task[None] | None = None


class OCSPChecker:
    """The OCSP status of verified chains for one trust store: `check(verdict, now)`."""

    __slots__ = ("store", "mode", "responder", "timeout_s", "failure", "skew_s", "max_entries",
                 "max_in_flight", "stats", "_fetch", "_clock", "_log", "_allow", "_chain",
                 "_cache", "_jobs", "_logged")

    def __init__(self, store: StoreLike, *, mode: str = "leaf", responder: str | None = None,
                 timeout_s: float = DEFAULT_OCSP_TIMEOUT_S, failure: str = "refuse",
                 fetch: FetchFn = http_fetch, clock: Callable[[], float] = time.time,
                 log: LogFn | None = None, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 skew_s: float = DEFAULT_SKEW_S) -> None:
        if mode not in CHECK_MODES:
            raise ValueError(f"OCSP mode {mode!r}: expected one of {', '.join(CHECK_MODES)}")
        if failure not in FAILURE_POLICIES:
            raise ValueError(f"OCSP failure policy {failure!r}: expected "
                             f"{' or '.join(FAILURE_POLICIES)}")
        if max_entries < 1 or max_in_flight < 1 or timeout_s <= 0:
            raise ValueError("max_entries, max_in_flight and timeout_s must be positive")
        self.store = store
        self.mode = mode
        self.responder = responder
        self.timeout_s = timeout_s
        self.failure = failure
        self.skew_s = skew_s
        self.max_entries = max_entries
        self.max_in_flight = max_in_flight
        self.stats = OCSPStats()
        self._fetch = fetch
        self._clock = clock
        self._log = log
        self._allow = failure == "allow"
        self._chain = mode == "chain"
        self._cache: OrderedDict[Key, _Entry] = OrderedDict()
        self._jobs: dict[Key, _Job] = {}
        self._logged: dict[Key, float] = {}     # key -> until when its unavailability is not logged

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    def answer(self, key: Key) -> Answer | None:
        """The cached answer for (issuer DER name, serial), fresh or not (for the admin API)."""
        entry = self._cache.get(key)
        return entry.answer if entry is not None else None

    # -- the handshake's call ---------------------------------------------------------------------

    def check(self, verdict: VerdictLike, now: float) -> VerifyStatus | None | Pending:
        """The OCSP status of a verified chain (`verdict`: a gateway.trust.Verdict): a refusing
        status, None to admit, or a Pending when an answer must be fetched. Never raises, never
        blocks."""
        try:
            serials = verdict.path_serials
            keys = serials if self._chain else serials[:1]
            cache = self._cache
            for key in keys:
                entry = cache.get(key)
                if entry is None or entry.expires_at <= now:
                    return self._miss(verdict, keys, now)
                cache.move_to_end(key)
                if entry.result is not None:
                    self.stats.hits += 1
                    return entry.result
            if not keys:
                return self._miss(verdict, keys, now)
            self.stats.hits += 1
            return None
        except Exception as exc:            # fail by policy, never with an exception
            self._note(_NO_KEY, f"internal: {type(exc).__name__}: {exc}", now, level="error")
            return None if self._allow else VerifyStatus.OCSP_UNAVAILABLE

    def _miss(self, verdict: VerdictLike, keys: tuple[Key, ...],
              now: float) -> VerifyStatus | None | Pending:
        self.stats.misses += 1
        if not keys:                        # a verified chain always has its leaf: fail by policy
            self._note(_NO_KEY, "no_path: the verdict names no certificate to check", now)
            return None if self._allow else VerifyStatus.OCSP_UNAVAILABLE
        loop = asyncio.get_running_loop()
        slots: list[tuple[VerifyStatus | None, str] | None] = []
        jobs: list[tuple[_Job, int]] = []
        for index, key in enumerate(keys):
            entry = self._cache.get(key)
            if entry is not None and entry.expires_at > now:
                self._cache.move_to_end(key)
                if entry.result is not None and not jobs:
                    return entry.result     # a refusal ahead of every unanswered key
                slots.append((entry.result, entry.answer.detail))
                continue
            job = self._jobs.get(key)
            if job is None:
                if len(self._jobs) >= self.max_in_flight:
                    # too many responders awaited already: unavailable at once, not cached
                    self.stats.overflows += 1
                    detail = f"overloaded: {self.max_in_flight} OCSP fetches already in flight"
                    self._note(key, detail, now)
                    if not self._allow and not jobs:
                        return VerifyStatus.OCSP_UNAVAILABLE
                    slots.append((None if self._allow else VerifyStatus.OCSP_UNAVAILABLE, detail))
                    continue
                job = self._start(loop, key, verdict)
            slots.append(None)
            jobs.append((job, index))
        if not jobs:
            return next((s[0] for s in slots if s is not None and s[0] is not None), None)
        pending = Pending(loop, slots, self._log)
        for job, index in jobs:
            job.waiting.append((pending, index))
        return pending

    # -- fetching ---------------------------------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop, key: Key, verdict: VerdictLike) -> _Job:
        identity = verdict.identity
        chain_der = identity.chain_der if identity is not None else ()
        job = self._jobs[key] = _Job(key)
        job.task = loop.create_task(self._run(job, chain_der))
        return job

    async def _run(self, job: _Job, chain_der: tuple[bytes, ...]) -> None:
        try:
            answer = await self._query(job.key, chain_der)
        except asyncio.CancelledError:
            # the waiters still hear once; a cancelled fetch says nothing about the responder
            self._finish(job, self._unavailable("cancelled", "the checker was closed"), False)
            raise
        except Exception as exc:
            answer = self._unavailable("error", f"{type(exc).__name__}: {exc}")
        self._finish(job, answer, True)

    async def _query(self, key: Key, chain_der: tuple[bytes, ...]) -> Answer:
        located = self._locate(key, chain_der)
        if isinstance(located, Answer):
            return located
        cert, issuer = located
        if self.responder is not None:
            url = self.responder
        else:
            urls = responder_urls(cert)
            if not urls:
                return self._unavailable("no_responder", f"serial {serial_hex(key[1])} names no "
                                         "http:// OCSP responder and none is configured")
            url = urls[0]
        nonce = os.urandom(NONCE_BYTES)
        request = build_request(cert, issuer, nonce)
        self.stats.fetches += 1
        try:
            async with asyncio.timeout(self.timeout_s + DEADLINE_GRACE_S):
                der = await self._fetch(url, body=request, content_type=OCSP_REQUEST_TYPE,
                                        accept=OCSP_RESPONSE_TYPE, timeout_s=self.timeout_s,
                                        max_bytes=MAX_RESPONSE_BYTES)
        except FetchError as exc:
            return self._unavailable(exc.reason, f"{url}: {exc.detail}")
        except TimeoutError:
            return self._unavailable("timeout", f"{url}: no answer within {self.timeout_s:g} s")
        try:
            return check_response(der, cert, issuer, nonce=nonce, now=self._clock(),
                                  skew_s=self.skew_s)
        except OCSPInvalid as exc:
            return self._unavailable(exc.reason, f"{url}: {exc.detail}")

    def _locate(self, key: Key, chain_der: tuple[bytes, ...],
                ) -> tuple[x509.Certificate, x509.Certificate] | Answer:
        """The certificate `key` names (from the chain as presented) and its issuer (a CA of the
        store first, as path building prefers, else a certificate of the chain): the one whose
        subject is the key's issuer name and whose key verifies the certificate's signature."""
        issuer_name, serial = key
        certs = []
        for der in chain_der:
            try:
                certs.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue
        # an intermediate of the bundle the client did not send is on the path too (the
        # verifier checks it: gateway.trust.Verifier._above)
        cas = tuple(getattr(self.store, "cas", ()))
        cert = next((c for c in (*certs, *cas) if c.serial_number == serial
                     and c.issuer.public_bytes() == issuer_name), None)
        if cert is None:
            return self._unavailable("no_certificate", f"serial {serial_hex(serial)} is not in "
                                     "the presented chain")
        for candidate in (*self.store.issuers_of(cert), *certs):
            if candidate is cert or candidate.subject.public_bytes() != issuer_name:
                continue
            try:
                cert.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return cert, candidate
        return self._unavailable("no_issuer", f"no issuer of serial {serial_hex(serial)} found")

    def _unavailable(self, reason: str, detail: str) -> Answer:
        now = self._clock()
        return Answer(VerifyStatus.OCSP_UNAVAILABLE, f"{reason}: {detail}", now + UNAVAILABLE_TTL_S,
                      now, None)

    def remember(self, key: Key, answer: Answer) -> None:
        """Keep an answer for `key` as if it had just been fetched (a warm start, a benchmark)."""
        job = _Job(key)
        self._finish(job, answer, True)

    def _finish(self, job: _Job, answer: Answer, keep: bool) -> None:
        key = job.key
        if self._jobs.get(key) is job:
            del self._jobs[key]
        now = self._clock()
        result = answer.status
        if result is VerifyStatus.OCSP_UNAVAILABLE:
            self.stats.failures += 1
            self._note(key, answer.detail, now)
            if self._allow:
                result = None
        if keep:
            cache = self._cache
            cache[key] = _Entry(result, max(answer.expires_at, now + UNAVAILABLE_TTL_S), answer)
            cache.move_to_end(key)
            while len(cache) > self.max_entries:
                cache.popitem(last=False)
        for pending, index in job.waiting:
            pending._answer(index, result, answer.detail)
        job.waiting.clear()

    def _note(self, key: Key, detail: str, now: float, level: str = "warning") -> None:
        """Log an unavailable answer, at most once per key per UNAVAILABLE_TTL_S."""
        log = self._log
        if log is None:
            return
        logged = self._logged
        if logged.get(key, 0.0) > now:
            return
        logged.pop(key, None)
        logged[key] = now + UNAVAILABLE_TTL_S
        while len(logged) > self.max_entries:
            del logged[next(iter(logged))]
        policy = "allowed" if self._allow else "refused"
        serial = serial_hex(key[1]) if key is not _NO_KEY else ""
        try:
            log(level, "ocsp_unavailable",
                f"no usable OCSP answer{' for serial ' + serial if serial else ''}, handshake "
                f"{policy} (ocsp_failure = \"{self.failure}\"): {detail}",
                serial=serial, detail=detail, policy=self.failure)
        except Exception:
            pass

    def close(self) -> None:
        """Cancel the fetches in flight; their Pendings settle as unavailable (by policy)."""
        for job in list(self._jobs.values()):
            if job.task is not None:
                job.task.cancel()
