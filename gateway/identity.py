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

from .errors import BadCertificate


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
    # beyond ALB's taxonomy: the runtime revocation API, OCSP and fetched CRLs (gateway.revocations,
    # gateway.ocsp, gateway.crlfetch)
    REVOKED = "Failed:ClientCertRevoked"
    OCSP_REVOKED = "Failed:ClientCertOcspRevoked"
    OCSP_UNKNOWN = "Failed:ClientCertOcspUnknown"
    OCSP_UNAVAILABLE = "Failed:ClientCertOcspUnavailable"
    CRL_STALE = "Failed:ClientCertCrlStale"
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
    subject: str                # RFC 2253, as OpenSSL prints it (see rfc2253)
    issuer: str
    not_before: datetime        # aware, UTC
    not_after: datetime
    san_dns: tuple[str, ...]
    san_uri: tuple[str, ...]
    chain_der: tuple[bytes, ...]  # as presented, leaf first
    status: VerifyStatus = VerifyStatus.NOT_VERIFIED
    # encoded headers by (mode, styles, by, fields) key, filled lazily by gateway.headers
    header_cache: dict[tuple[object, ...], bytes] = field(default_factory=dict)
    san_email: tuple[str, ...] = ()

    @property
    def spiffe_id(self) -> str | None:
        """The SPIFFE ID: the one URI SAN of an X509-SVID, when it is a spiffe:// URI (the SPIFFE
        X509-SVID specification, 2: exactly one URI SAN); None otherwise."""
        uris = self.san_uri
        if len(uris) == 1 and uris[0].lower().startswith("spiffe://"):
            return uris[0]
        return None

    @property
    def leaf_der(self) -> bytes:
        return self.chain_der[0]

    @property
    def verified(self) -> bool:
        return self.status is VerifyStatus.SUCCESS

    def with_status(self, status: VerifyStatus) -> "Identity":
        return Identity(self.fingerprint, self.serial, self.subject, self.issuer, self.not_before,
                        self.not_after, self.san_dns, self.san_uri, self.chain_der, status,
                        san_email=self.san_email)


def serial_hex(serial: int) -> str:
    """A serial number as ALB writes it: upper-case hex in whole bytes (0x3A5B1 -> "03A5B1")."""
    digits = f"{abs(serial):X}"
    if len(digits) % 2:
        digits = "0" + digits
    return "-" + digits if serial < 0 else digits


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
    san_email: tuple[str, ...] = ()
    try:
        ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san_dns = tuple(ext.get_values_for_type(x509.DNSName))
        san_uri = tuple(ext.get_values_for_type(x509.UniformResourceIdentifier))
        san_email = tuple(ext.get_values_for_type(x509.RFC822Name))
    except (x509.ExtensionNotFound, ValueError):
        pass
    return Identity(
        fingerprint=fingerprint(chain_der[0]),
        serial=leaf.serial_number,
        subject=rfc2253(leaf.subject),
        issuer=rfc2253(leaf.issuer),
        not_before=_utc(leaf.not_valid_before_utc),
        not_after=_utc(leaf.not_valid_after_utc),
        san_dns=san_dns,
        san_uri=san_uri,
        chain_der=chain_der,
        status=status,
        san_email=san_email,
    )


def identity_from_der(chain_der: tuple[bytes, ...],
                      status: VerifyStatus = VerifyStatus.NOT_VERIFIED) -> Identity:
    """Raises BadCertificate (never another exception) when a certificate cannot be parsed."""
    try:
        certs = [x509.load_der_x509_certificate(d) for d in chain_der]
        return identity_from_certificates(certs, chain_der, status)
    except Exception as exc:    # cryptography raises ValueError, InvalidVersion, ...: all are the peer's
        raise BadCertificate(f"unparseable certificate: {exc}") from None


# ---------------------------------------------------------------------------------------------
# RFC 2253 names as OpenSSL prints them.
# ---------------------------------------------------------------------------------------------

# OpenSSL's short names (OBJ_nid2sn) for the attribute types cryptography names; other types are
# printed as dotted OIDs with a #hex DER value, as XN_FLAG_DUMP_UNKNOWN_FIELDS does.
_SHORT_NAMES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.9": "street",
    "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "2.5.4.4": "SN",
    "2.5.4.42": "GN", "2.5.4.12": "title", "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier", "2.5.4.45": "x500UniqueIdentifier",
    "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym", "2.5.4.15": "businessCategory",
    "2.5.4.16": "postalAddress", "2.5.4.17": "postalCode", "2.5.4.97": "organizationIdentifier",
    "2.5.4.41": "name", "2.5.4.13": "description", "2.5.4.72": "role",
    "0.9.2342.19200300.100.1.1": "UID", "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress", "1.2.840.113549.1.9.2": "unstructuredName",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL", "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
    "1.2.643.3.131.1.1": "INN", "1.2.643.100.1": "OGRN", "1.2.643.100.3": "SNILS",
}
# ASN.1 string types OpenSSL prints as text (a_strex.c tag2nbyte); anything else is dumped.
_TEXT_TAGS = {12: "utf-8", 18: "latin-1", 19: "latin-1", 20: "latin-1", 22: "latin-1",
              23: "latin-1", 24: "latin-1", 26: "latin-1", 28: "utf-32-be", 30: "utf-16-be"}
_RFC2253_SPECIAL = frozenset(b',+"\\<>;')


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _attribute_der(attr: x509.NameAttribute[str | bytes]) -> tuple[int, bytes]:
    tag = attr._type.value
    value = attr.value
    if isinstance(value, bytes):            # BIT STRING (x500UniqueIdentifier): no unused bits
        return tag, (b"\x00" + value if tag == 3 else value)
    try:
        return tag, value.encode(_TEXT_TAGS.get(tag, "utf-8"))
    except UnicodeEncodeError:             # a value its declared type cannot hold
        return tag, value.encode("utf-8", "surrogateescape")


def _escape_2253(value: str) -> str:
    raw = value.encode("utf-8", "surrogateescape")
    out = []
    last = len(raw) - 1
    for i, b in enumerate(raw):
        if b in _RFC2253_SPECIAL or (i == 0 and b in b" #") or (i == last and b == 0x20):
            out.append("\\" + chr(b))
        elif b < 0x20 or b >= 0x7f:
            out.append("\\%02X" % b)
        else:
            out.append(chr(b))
    return "".join(out)


def rfc2253(name: x509.Name) -> str:
    """`name` as OpenSSL's X509_NAME_print_ex(XN_FLAG_RFC2253) prints it.

    That is the RFC 2253 form Envoy, nginx and ``openssl x509 -nameopt RFC2253`` produce: last RDN
    first (and, as OpenSSL does, the attributes inside a multi-valued RDN reversed too), OpenSSL
    short names, ``,+"\\<>;`` and a leading ``#``/space or trailing space backslash-escaped, control
    and non-ASCII bytes as ``\\XX`` of their UTF-8, types without a short name as ``1.2.3=#hex``
    of the value's DER. cryptography's ``rfc4514_string()`` agrees for names made of CN, L, ST, O,
    OU, C, DC and UID with printable ASCII values, and differs otherwise (``2.5.4.5=...`` for
    serialNumber, raw UTF-8 and control characters, other multi-valued RDN order).
    """
    rdns = []
    for rdn in reversed(name.rdns):
        parts = []
        for attr in reversed(list(rdn)):
            oid = attr.oid.dotted_string
            short = _SHORT_NAMES.get(oid)
            tag, content = _attribute_der(attr)
            value = attr.value
            # a bytes value is a BIT STRING (tag 3), never one of _TEXT_TAGS: the test only narrows
            if short is None or tag not in _TEXT_TAGS or not isinstance(value, str):
                der = bytes((tag,)) + _der_length(len(content)) + content
                parts.append((short or oid) + "=#" + der.hex().upper())
            else:
                parts.append(short + "=" + _escape_2253(value))
        rdns.append("+".join(parts))
    return ",".join(rdns)
