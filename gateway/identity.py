"""What a TLS handshake proved about a client: pure values, no I/O.

An `Identity` is built once per presented chain (from DER bytes, leaf first) and then shared: the
chain cache keeps it with its verdict, so a returning client or a keep-alive request reuses the same
object, including the encoded identity headers (`header_cache`, filled by `headers`).

Verify statuses are ALB's taxonomy, so connection logs read the same as an ALB's.
"""
from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography import x509
from cryptography.x509.oid import ExtensionOID


class VerifyStatus(str, enum.Enum):
    SUCCESS = "Success"
    NOT_FOUND = "Failed:ClientCertNotFound"
    UNTRUSTED = "Failed:ClientCertUntrusted"
    EXPIRED = "Failed:ClientCertExpired"
    NOT_YET_VALID = "Failed:ClientCertNotYetValid"
    CRL_HIT = "Failed:ClientCertCrlHit"
    MAX_CHAIN_DEPTH = "Failed:ClientCertMaxChainDepthExceeded"
    MAX_SIZE = "Failed:ClientCertMaxSizeExceeded"
    PURPOSE_INVALID = "Failed:ClientCertPurposeInvalid"
    INVALID = "Failed:ClientCertInvalid"
    TYPE_UNSUPPORTED = "Failed:ClientCertTypeUnsupported"
    REJECTED = "Failed:ClientCertRejected"
    UNMAPPED = "Failed:UnmappedConnectionError"
    # passthrough: a certificate was presented and forwarded, but nothing was verified
    NOT_VERIFIED = "NotVerified"

    def __str__(self) -> str:
        return self.value


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


@dataclass(eq=False, slots=True)
class Identity:
    """The client's certificate as the backend and the logs see it."""

    fingerprint: str            # lowercase hex SHA-256 of the leaf's DER
    serial: int
    subject: str                # RFC 2253 (RFC 4514) string
    issuer: str
    not_before: datetime        # aware, UTC
    not_after: datetime
    san_dns: tuple[str, ...]
    san_uri: tuple[str, ...]
    chain_der: tuple[bytes, ...]  # as presented, leaf first
    status: VerifyStatus = VerifyStatus.NOT_VERIFIED
    # encoded headers by (mode, styles) key, filled lazily by gateway.headers
    header_cache: dict = field(default_factory=dict)

    @property
    def leaf_der(self) -> bytes:
        return self.chain_der[0]

    @property
    def verified(self) -> bool:
        return self.status is VerifyStatus.SUCCESS

    def with_status(self, status: VerifyStatus) -> "Identity":
        return Identity(self.fingerprint, self.serial, self.subject, self.issuer, self.not_before,
                        self.not_after, self.san_dns, self.san_uri, self.chain_der, status)


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def identity_from_certificates(certs: list[x509.Certificate], chain_der: tuple[bytes, ...],
                               status: VerifyStatus = VerifyStatus.NOT_VERIFIED) -> Identity:
    """Build an Identity from parsed certificates (leaf first) and their DER encodings.

    Field extraction never raises on odd certificates: a malformed SAN extension yields no SANs.
    """
    leaf = certs[0]
    san_dns: tuple[str, ...] = ()
    san_uri: tuple[str, ...] = ()
    try:
        ext = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        san_dns = tuple(ext.get_values_for_type(x509.DNSName))
        san_uri = tuple(ext.get_values_for_type(x509.UniformResourceIdentifier))
    except (x509.ExtensionNotFound, ValueError):
        pass
    return Identity(
        fingerprint=fingerprint(chain_der[0]),
        serial=leaf.serial_number,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        not_before=_utc(leaf.not_valid_before_utc),
        not_after=_utc(leaf.not_valid_after_utc),
        san_dns=san_dns,
        san_uri=san_uri,
        chain_der=chain_der,
        status=status,
    )


def identity_from_der(chain_der: tuple[bytes, ...],
                      status: VerifyStatus = VerifyStatus.NOT_VERIFIED) -> Identity:
    certs = [x509.load_der_x509_certificate(d) for d in chain_der]
    return identity_from_certificates(certs, chain_der, status)
