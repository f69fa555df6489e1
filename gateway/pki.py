"""A development PKI: root and intermediate CAs, server and client certificates, CRLs.

How this works: every certificate is made by one builder (`_build`) from a subject, a public key, an
issuer and a list of extensions; the `make_*` functions only choose those extensions, so a CA, a
server leaf and a client leaf differ in exactly the places RFC 5280 says they should. Each result is
an `Issued`: the certificate, its private key and the intermediates above it (never the root, which
a peer must already hold), with the PEM/DER encodings a TLS stack or a test wants.

On disk (`init_dir`, `issue_client`, `revoke`) the layout is the one the AWS ALB mTLS walkthrough
builds with openssl: a root, an intermediate that signs every leaf, a CA bundle for the trust store,
one CRL per CA, and `state.json`, which remembers the serial issued to each client name and the
serials revoked, so a revocation can re-sign the intermediate's CRL without re-reading every
certificate. Every file is written to a temporary name and renamed into place, so a crash never
leaves half a key or a CRL a verifier cannot parse; keys are created with mode 0600 before a byte of
them is written.

This is for development, demos, tests and benchmarks: keys are stored unencrypted.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import GatewayError

KeyType = Literal["ec", "rsa"]
ExtendedKeyUsage = Literal["client", "server", "both", "none"]

DEFAULT_ORGANIZATION = "mtls-gateway dev"
RSA_KEY_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
# Back-date notBefore (and a CRL's lastUpdate) so a peer whose clock runs behind ours still accepts
# them: OpenSSL rejects "not yet valid" certificates and CRLs outright, with no leeway.
CLOCK_SKEW_S = 3600
CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 365
CRL_VALIDITY_DAYS = 30
CLIENT_NAME_MAX_CHARS = 64
# fullmatch, not match with `$`: `$` also matches before a trailing newline, and "alice\n" must not
# become a file name.
_CLIENT_NAME = re.compile(r"[A-Za-z0-9._-]{1,%d}" % CLIENT_NAME_MAX_CHARS)

# File names of the on-disk layout.
ROOT_CERT = "root-ca.pem"
ROOT_KEY = "root-ca.key"
INTERMEDIATE_CERT = "intermediate-ca.pem"
INTERMEDIATE_KEY = "intermediate-ca.key"
CA_BUNDLE = "ca-bundle.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
ROOT_CRL = "crl-root.pem"
INTERMEDIATE_CRL = "crl-intermediate.pem"
CLIENTS_DIR = "clients"
STATE_FILE = "state.json"
STATE_FORMAT = 1
FIRST_CLIENT = "client1"
_LAYOUT = (ROOT_CERT, ROOT_KEY, INTERMEDIATE_CERT, INTERMEDIATE_KEY, CA_BUNDLE, SERVER_CERT,
           SERVER_KEY, ROOT_CRL, INTERMEDIATE_CRL, STATE_FILE)

KEY_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644

# Short names accepted as keys of `subject_extra`, as openssl spells them.
_NAME_OIDS: dict[str, x509.ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "street": NameOID.STREET_ADDRESS,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "emailAddress": NameOID.EMAIL_ADDRESS,
}


class PKIError(GatewayError):
    """The operator asked the development PKI for something it cannot do (bad name, no PKI, ...)."""

    reason = "pki_error"


@dataclass(frozen=True)
class Issued:
    """A certificate, its private key, and the intermediates above it (nearest first, no root)."""

    cert: x509.Certificate
    key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def chain_pem(self) -> bytes:
        """The certificate followed by its intermediates: what a TLS peer sends (RFC 8446 4.4.2)."""
        return self.cert_pem + b"".join(c.public_bytes(serialization.Encoding.PEM)
                                        for c in self.chain)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str], *,
              with_chain: bool = True) -> None:
        """Write the certificate (with its intermediates unless told not to) and the key (0600)."""
        _write_file(Path(cert_path), self.chain_pem if with_chain else self.cert_pem,
                    PUBLIC_FILE_MODE)
        _write_file(Path(key_path), self.key_pem, KEY_FILE_MODE)


# --- keys and certificates ------------------------------------------------------------------------

def new_key(key_type: KeyType = "ec") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A fresh private key: "ec" is P-256, "rsa" is 2048 bits (the smallest size still accepted
    at OpenSSL's default security level 2)."""
    _check_key_type(key_type)
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def make_root(common_name: str, *, key_type: KeyType = "ec", not_before: datetime | None = None,
              not_after: datetime | None = None, organization: str = DEFAULT_ORGANIZATION,
              path_length: int | None = None, serial: int | None = None) -> Issued:
    """A self-signed root CA. `path_length=None` leaves the depth of intermediates unlimited."""
    key = new_key(key_type)
    subject = _subject(common_name, organization)
    cert = _build(subject=subject, public_key=key.public_key(), issuer_name=subject,
                  issuer_key=key, issuer_cert=None,
                  extensions=_ca_extensions(path_length),
                  not_before=not_before, not_after=not_after,
                  validity=timedelta(days=CA_VALIDITY_DAYS), serial=serial)
    return Issued(cert, key)


def make_intermediate(parent: Issued, common_name: str, *, key_type: KeyType = "ec",
                      path_length: int | None = 0, not_before: datetime | None = None,
                      not_after: datetime | None = None, organization: str | None = None,
                      serial: int | None = None, ocsp_url: str | None = None,
                      crl_urls: Sequence[str] = ()) -> Issued:
    """An intermediate CA signed by `parent`. `path_length=0` lets it sign leaves only.
    `ocsp_url` and `crl_urls` say where its own status is published (AIA, CDP)."""
    return _issue(parent, _subject(common_name, _organization_of(parent, organization)),
                  key_type=key_type,
                  extensions=_ca_extensions(path_length) + _status_extensions(ocsp_url, crl_urls),
                  not_before=not_before, not_after=not_after,
                  validity=timedelta(days=CA_VALIDITY_DAYS), serial=serial)


def make_server(parent: Issued, names: Sequence[str], *, key_type: KeyType = "ec",
                not_before: datetime | None = None, not_after: datetime | None = None,
                organization: str | None = None, serial: int | None = None) -> Issued:
    """A TLS server leaf for DNS names and IP addresses ("127.0.0.1", "::1"); CN is the first.

    Clients match the name against the SAN only (RFC 6125 6.4.4, and browsers ignore the CN), so
    every name goes in the SAN, IP literals as iPAddress entries rather than dNSName.
    """
    names = list(names)
    if not names:
        raise PKIError("a server certificate needs at least one name", reason="bad_name")
    general_names: list[x509.GeneralName] = []
    for name in names:
        try:
            general_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general_names.append(x509.DNSName(name))
    key = new_key(key_type)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        # keyEncipherment only means something for RSA: TLS 1.2 RSA key exchange encrypts the
        # premaster secret to the server's key (RFC 5246 7.4.2); an EC key can only sign.
        (_key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
         True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.SubjectAlternativeName(general_names), False),
    ]
    return _issue(parent, _subject(names[0], _organization_of(parent, organization)),
                  key=key, extensions=extensions, not_before=not_before, not_after=not_after,
                  validity=timedelta(days=LEAF_VALIDITY_DAYS), serial=serial)


def make_client(parent: Issued, common_name: str, *, key_type: KeyType = "ec",
                san_dns: Iterable[str] = (), san_uri: Iterable[str] = (),
                extended_key_usage: ExtendedKeyUsage = "client",
                not_before: datetime | None = None, not_after: datetime | None = None,
                serial: int | None = None, subject_extra: Mapping | None = None,
                organization: str | None = None, ocsp_url: str | None = None,
                crl_urls: Sequence[str] = ()) -> Issued:
    """A TLS client leaf signed by `parent`; `ocsp_url` and `crl_urls` say where its status is
    published (Authority Information Access, CRL Distribution Points).

    `extended_key_usage`: "client" (clientAuth, the default), "server" (serverAuth only: a cert a
    verifier must refuse as a client cert), "both", or "none" (no EKU extension at all, which RFC
    5280 4.2.1.12 reads as "any purpose"). An empty `common_name` leaves CN out of the subject.
    `subject_extra` adds attributes between O and CN ({"OU": "eng"} or {NameOID...: [...]}); an
    "O" entry replaces the organization.
    """
    subject = _subject(common_name, _organization_of(parent, organization), subject_extra)
    return _issue(parent, subject, key_type=key_type,
                  extensions=_client_extensions(extended_key_usage, san_dns, san_uri)
                  + _status_extensions(ocsp_url, crl_urls),
                  not_before=not_before, not_after=not_after,
                  validity=timedelta(days=LEAF_VALIDITY_DAYS), serial=serial)


def make_ocsp_signer(parent: Issued, common_name: str, *, key_type: KeyType = "ec",
                     extended_key_usage: bool = True, not_before: datetime | None = None,
                     not_after: datetime | None = None) -> Issued:
    """A delegated OCSP responder certificate (RFC 6960 4.2.2.2): issued by the CA whose
    certificates it answers for, with id-kp-OCSPSigning (left out with `extended_key_usage=False`,
    to make one a verifier must refuse) and id-pkix-ocsp-nocheck."""
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(digital_signature=True), True),
        (x509.OCSPNoCheck(), False),
    ]
    if extended_key_usage:
        extensions.append((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False))
    return _issue(parent, _subject(common_name, _organization_of(parent, None)),
                  key_type=key_type, extensions=extensions, not_before=not_before,
                  not_after=not_after, validity=timedelta(days=LEAF_VALIDITY_DAYS), serial=None)


def _status_extensions(ocsp_url: str | None, crl_urls: Sequence[str],
                       ) -> list[tuple[x509.ExtensionType, bool]]:
    """AIA (OCSP) and CRL Distribution Points extensions, as CAs publish them (RFC 5280 4.2.2.1,
    4.2.1.13)."""
    out: list[tuple[x509.ExtensionType, bool]] = []
    if ocsp_url:
        out.append((x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]),
            False))
    if crl_urls:
        out.append((x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(u) for u in crl_urls], None, None, None)]), False))
    return out


def make_self_signed_client(common_name: str, *, key_type: KeyType = "ec",
                            san_dns: Iterable[str] = (), san_uri: Iterable[str] = (),
                            extended_key_usage: ExtendedKeyUsage = "client",
                            not_before: datetime | None = None, not_after: datetime | None = None,
                            serial: int | None = None, subject_extra: Mapping | None = None,
                            organization: str = DEFAULT_ORGANIZATION) -> Issued:
    """A client leaf that is its own issuer but not a CA (BasicConstraints ca=False).

    What a careless client presents; a verifier must not trust it unless the very same certificate
    is pinned, and must never treat it as an issuer.
    """
    key = new_key(key_type)
    subject = _subject(common_name, organization, subject_extra)
    cert = _build(subject=subject, public_key=key.public_key(), issuer_name=subject,
                  issuer_key=key, issuer_cert=None,
                  extensions=_client_extensions(extended_key_usage, san_dns, san_uri),
                  not_before=not_before, not_after=not_after,
                  validity=timedelta(days=LEAF_VALIDITY_DAYS), serial=serial)
    return Issued(cert, key)


def chain_of_depth(depth: int, *, key_type: KeyType = "ec") -> tuple[Issued, list[Issued], Issued]:
    """A root, `depth - 2` intermediates (root-most first) and a client leaf: `depth` certificates
    from root to leaf. Each intermediate's path length allows exactly the intermediates below it,
    so the chain is valid and one more level would not be."""
    if depth < 2:
        raise PKIError(f"a chain needs at least a root and a leaf (depth >= 2), got {depth}",
                       reason="bad_depth")
    count = depth - 2
    root = make_root(f"depth-{depth} root CA", key_type=key_type)
    intermediates: list[Issued] = []
    parent = root
    for index in range(count):
        parent = make_intermediate(parent, f"depth-{depth} intermediate CA {index + 1}",
                                   key_type=key_type, path_length=count - 1 - index)
        intermediates.append(parent)
    leaf = make_client(parent, f"depth-{depth} client", key_type=key_type)
    return root, intermediates, leaf


# --- CRLs -----------------------------------------------------------------------------------------

def make_crl(issuer: Issued, revoked_serials: Iterable[int], *,
             last_update: datetime | None = None, next_update: datetime | None = None,
             revocation_date: datetime | None = None,
             revocation_dates: Mapping[int, datetime] | None = None,
             crl_number: int = 1) -> x509.CertificateRevocationList:
    """A CRL signed by `issuer` listing `revoked_serials`.

    Every serial is revoked at `revocation_date` (default: `last_update`) unless
    `revocation_dates` names its own date. The CRL carries the two extensions RFC 5280 5.2 requires
    of a conforming issuer: the CRL number and the issuer's key identifier (which OpenSSL uses to
    pick the right CRL when two CAs share a name).
    """
    now = _now()
    if last_update is None:
        last_update = now - timedelta(seconds=CLOCK_SKEW_S)
    if next_update is None:
        next_update = now + timedelta(days=CRL_VALIDITY_DAYS)
    last_update, next_update = _utc(last_update), _utc(next_update)
    default_date = _utc(revocation_date) if revocation_date is not None else last_update
    dates = revocation_dates or {}
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.cert.subject)
               .last_update(last_update)
               .next_update(next_update)
               .add_extension(x509.CRLNumber(crl_number), critical=False)
               .add_extension(_authority_key_identifier(issuer.cert), critical=False))
    for serial in dict.fromkeys(revoked_serials):  # a serial listed twice is one entry
        when = _utc(dates[serial]) if serial in dates else default_date
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    # a key that cannot sign (X25519, DH: load() takes any) is refused by sign() itself
    return builder.sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


# --- the on-disk PKI ------------------------------------------------------------------------------

def init_dir(directory: str | os.PathLike[str], *,
             server_names: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
             key_type: KeyType = "ec", force: bool = False) -> list[Path]:
    """Create a root, an intermediate, a server and a first client in `directory`.

    Refuses to replace an existing PKI unless `force`; with `force`, the client files the old
    state knew of are removed too, since the old intermediate that signed them is gone.
    Returns the paths written.
    """
    directory = Path(directory)
    existing = [name for name in _LAYOUT if (directory / name).exists()]
    if existing and not force:
        raise PKIError(f"{directory} already holds a PKI ({', '.join(existing)}); "
                       "use force to replace it", reason="pki_exists")
    _check_key_type(key_type)  # before touching the directory
    if existing:
        _remove_old_clients(directory)
    (directory / CLIENTS_DIR).mkdir(parents=True, exist_ok=True)

    root = make_root(f"{DEFAULT_ORGANIZATION} root CA", key_type=key_type)
    intermediate = make_intermediate(root, f"{DEFAULT_ORGANIZATION} intermediate CA",
                                     key_type=key_type, path_length=0)
    server = make_server(intermediate, list(server_names), key_type=key_type)
    client = make_client(intermediate, FIRST_CLIENT, key_type=key_type)

    written: list[Path] = []

    def put(name: str, data: bytes, mode: int = PUBLIC_FILE_MODE) -> None:
        path = directory / name
        _write_file(path, data, mode)
        written.append(path)

    put(ROOT_CERT, root.cert_pem)
    put(ROOT_KEY, root.key_pem, KEY_FILE_MODE)
    put(INTERMEDIATE_CERT, intermediate.cert_pem)
    put(INTERMEDIATE_KEY, intermediate.key_pem, KEY_FILE_MODE)
    put(CA_BUNDLE, root.cert_pem + intermediate.cert_pem)
    put(SERVER_CERT, server.chain_pem)
    put(SERVER_KEY, server.key_pem, KEY_FILE_MODE)
    put(ROOT_CRL, crl_pem(make_crl(root, [], crl_number=1)))
    put(INTERMEDIATE_CRL, crl_pem(make_crl(intermediate, [], crl_number=1)))
    put(f"{CLIENTS_DIR}/{FIRST_CLIENT}.pem", client.chain_pem)
    put(f"{CLIENTS_DIR}/{FIRST_CLIENT}.key", client.key_pem, KEY_FILE_MODE)
    state: dict[str, Any] = {
        "format": STATE_FORMAT,
        "key_type": key_type,
        "crl_number": {"root": 1, "intermediate": 1},
        "issued": {FIRST_CLIENT: _serial_hex(client.serial)},
        "revoked": [],
    }
    written.append(_write_state(directory, state))
    return written


def issue_client(directory: str | os.PathLike[str], name: str, *, key_type: KeyType = "ec",
                 san_dns: Iterable[str] = (), san_uri: Iterable[str] = ()) -> list[Path]:
    """Issue clients/NAME.pem (leaf + intermediate) and clients/NAME.key, signed by the
    intermediate. Returns the paths written."""
    directory = Path(directory)
    _check_client_name(name)
    state = _read_state(directory)
    cert_path = directory / CLIENTS_DIR / f"{name}.pem"
    key_path = directory / CLIENTS_DIR / f"{name}.key"
    if name in state["issued"] or cert_path.exists() or key_path.exists():
        raise PKIError(f"a client named {name!r} already exists in {directory}",
                       reason="name_taken")
    intermediate = _load_intermediate(directory)
    try:
        client = make_client(intermediate, name, key_type=key_type, san_dns=list(san_dns),
                             san_uri=list(san_uri))
    except ValueError as exc:  # cryptography refuses e.g. a non-ASCII DNS name
        raise PKIError(f"cannot issue {name!r}: {exc}", reason="bad_san") from exc
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    client.write(cert_path, key_path)
    state["issued"][name] = _serial_hex(client.serial)
    return [cert_path, key_path, _write_state(directory, state)]


def revoke(directory: str | os.PathLike[str], name: str) -> list[Path]:
    """Add client NAME's serial to crl-intermediate.pem, re-signed with a fresh lastUpdate /
    nextUpdate and the next CRL number. Returns the paths written."""
    directory = Path(directory)
    _check_client_name(name)
    state = _read_state(directory)
    if name not in state["issued"]:
        raise PKIError(f"no client named {name!r} in {directory}", reason="unknown_name")
    if any(entry["name"] == name for entry in state["revoked"]):
        raise PKIError(f"client {name!r} is already revoked", reason="already_revoked")
    intermediate = _load_intermediate(directory)
    # The new entry is dated at the CRL's (back-dated) lastUpdate, so no entry claims a revocation
    # later than the list that announces it.
    last_update = _now() - timedelta(seconds=CLOCK_SKEW_S)
    revoked = state["revoked"] + [{
        "name": name,
        "serial": state["issued"][name],
        "revoked_at": last_update.isoformat(),
    }]
    crl_number = state["crl_number"]["intermediate"] + 1
    dates = {int(e["serial"], 16): datetime.fromisoformat(e["revoked_at"]) for e in revoked}
    crl = make_crl(intermediate, list(dates), last_update=last_update, revocation_dates=dates,
                   crl_number=crl_number)
    # The CRL first, the state second: if we stop in between, the serial is already refused and a
    # second `revoke` rewrites the same list. The other order could record a revocation that no CRL
    # carries, and a retry would then answer "already revoked".
    crl_path = directory / INTERMEDIATE_CRL
    _write_file(crl_path, crl_pem(crl), PUBLIC_FILE_MODE)
    state["revoked"] = revoked
    state["crl_number"]["intermediate"] = crl_number
    return [crl_path, _write_state(directory, state)]


def load_issued(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> Issued:
    """Read a certificate file (leaf first, then any issuers) and its unencrypted key.

    A self-signed certificate after the leaf (a root some tools append) is dropped from `chain`,
    which holds intermediates only.
    """
    try:
        certs = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PKIError(f"cannot load {cert_path} / {key_path}: {exc}", reason="pki_unreadable") \
            from exc
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != \
            certs[0].public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo):
        raise PKIError(f"{key_path} is not the key of {cert_path}", reason="pki_key_mismatch")
    chain = tuple(c for c in certs[1:] if c.subject != c.issuer)
    return Issued(certs[0], key, chain)


def config_snippet(directory: str | os.PathLike[str]) -> str:
    """A TOML listener + trust store that serves the PKI in `directory` with mtls = "verify".

    Paths are absolute so the snippet works wherever the configuration file ends up.
    """
    base = Path(directory).resolve()

    def path(name: str) -> str:
        return _toml_string(str(base / name))

    return (
        "[[listener]]\n"
        'name = "verify"\n'
        'bind = "127.0.0.1:8443"\n'
        f"certificates = [{{cert = {path(SERVER_CERT)}, key = {path(SERVER_KEY)}}}]\n"
        'mtls = "verify"\n'
        'trust_store = "dev"\n'
        "[[listener.rule]]\n"
        'action = "fixed-response"\n'
        'fixed_response = {status = 200, content_type = "text/plain", '
        'body = "hello, authenticated client\\n"}\n'
        "[trust_store.dev]\n"
        f"ca_bundle = {path(CA_BUNDLE)}\n"
        f"crls = [{path(ROOT_CRL)}, {path(INTERMEDIATE_CRL)}]\n"
    )


# --- internals ------------------------------------------------------------------------------------

def _now() -> datetime:
    # X.509 times have whole seconds; dropping microseconds here means what we ask for is what the
    # certificate says.
    return datetime.now(timezone.utc).replace(microsecond=0)


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as cryptography does."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _serial_hex(serial: int) -> str:
    """Uppercase hex with an even number of digits, as `openssl x509 -noout -serial` prints it."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def _organization_of(parent: Issued, organization: str | None) -> str:
    """Children carry their issuer's organization unless told otherwise."""
    if organization is not None:
        return organization
    values = parent.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else DEFAULT_ORGANIZATION


def _subject(common_name: str, organization: str, extra: Mapping | None = None) -> x509.Name:
    """O, then any extra attributes, then CN: RFC 4514 prints them reversed, "CN=...,O=..."."""
    organizations: list[str] = [organization]
    others: list[x509.NameAttribute] = []
    for key, value in (extra or {}).items():
        oid = _NAME_OIDS.get(key) if isinstance(key, str) else key
        if not isinstance(oid, x509.ObjectIdentifier):
            raise PKIError(f"unknown subject attribute {key!r}", reason="bad_subject")
        values = [value] if isinstance(value, str) else list(value)
        if oid == NameOID.ORGANIZATION_NAME:
            organizations = values
        else:
            others.extend(x509.NameAttribute(oid, v) for v in values)
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes += others
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False,
               key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False,
                         key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
                         encipher_only=False, decipher_only=False)


def _ca_extensions(path_length: int | None) -> list[tuple[x509.ExtensionType, bool]]:
    # RFC 5280 4.2.1.9: basicConstraints MUST be critical in a CA certificate; 4.2.1.3: keyUsage
    # SHOULD be.
    return [
        (x509.BasicConstraints(ca=True, path_length=path_length), True),
        (_key_usage(key_cert_sign=True, crl_sign=True), True),
    ]


_EKU_OIDS: dict[str, list[x509.ObjectIdentifier] | None] = {
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "both": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    "none": None,
}


def _client_extensions(extended_key_usage: str, san_dns: Iterable[str],
                       san_uri: Iterable[str]) -> list[tuple[x509.ExtensionType, bool]]:
    if extended_key_usage not in _EKU_OIDS:
        raise PKIError(f"unknown extended key usage {extended_key_usage!r}; expected one of "
                       f"{', '.join(_EKU_OIDS)}", reason="bad_eku")
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        # A client only signs (its CertificateVerify), whatever its key type.
        (_key_usage(digital_signature=True), True),
    ]
    eku = _EKU_OIDS[extended_key_usage]
    if eku is not None:
        extensions.append((x509.ExtendedKeyUsage(eku), False))
    general_names: list[x509.GeneralName] = [x509.DNSName(d) for d in san_dns]
    general_names += [x509.UniformResourceIdentifier(u) for u in san_uri]
    if general_names:
        extensions.append((x509.SubjectAlternativeName(general_names), False))
    return extensions


def _authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # an issuer whose key cannot sign (X25519, X448) is refused here by cryptography itself
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _issue(parent: Issued, subject: x509.Name, *, key_type: KeyType = "ec",
           key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
           extensions: list[tuple[x509.ExtensionType, bool]],
           not_before: datetime | None, not_after: datetime | None, validity: timedelta,
           serial: int | None) -> Issued:
    """Sign a new certificate with `parent`; its chain is the parent plus the parent's chain,
    except that a self-signed parent (the root) is never part of a chain."""
    key = key if key is not None else new_key(key_type)
    cert = _build(subject=subject, public_key=key.public_key(), issuer_name=parent.cert.subject,
                  issuer_key=parent.key,  # type: ignore[arg-type]  # see make_crl's sign()
                  issuer_cert=parent.cert, extensions=extensions,
                  not_before=not_before, not_after=not_after, validity=validity, serial=serial)
    parent_is_root = parent.cert.subject == parent.cert.issuer
    chain = parent.chain if parent_is_root else (parent.cert,) + parent.chain
    return Issued(cert, key, chain)


def _build(*, subject: x509.Name, public_key: CertificatePublicKeyTypes, issuer_name: x509.Name,
           issuer_key: CertificateIssuerPrivateKeyTypes,
           issuer_cert: x509.Certificate | None,
           extensions: list[tuple[x509.ExtensionType, bool]],
           not_before: datetime | None, not_after: datetime | None, validity: timedelta,
           serial: int | None) -> x509.Certificate:
    """The one certificate builder. Defaults: notBefore an hour back for clock skew, notAfter
    `validity` after now (or after an explicit notBefore), a random 159-bit serial (RFC 5280
    4.1.2.2: positive, at most 20 octets), SHA-256."""
    now = _now()
    if not_before is None:
        start = now - timedelta(seconds=CLOCK_SKEW_S)
        end = now + validity if not_after is None else _utc(not_after)
    else:
        start = _utc(not_before)
        end = start + validity if not_after is None else _utc(not_after)
    # A self-signed certificate names its own key as the authority; otherwise the issuer's SKI.
    aki = (_authority_key_identifier(issuer_cert) if issuer_cert is not None
           else x509.AuthorityKeyIdentifier.from_issuer_public_key(
               public_key))  # type: ignore[arg-type]  # as in _authority_key_identifier
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer_name)
               .public_key(public_key)
               .serial_number(serial if serial is not None else x509.random_serial_number())
               .not_valid_before(start)
               .not_valid_after(end))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                                    critical=False)
    builder = builder.add_extension(aki, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _check_key_type(key_type: str) -> None:
    if key_type not in ("ec", "rsa"):
        raise PKIError(f"unknown key type {key_type!r}; expected 'ec' or 'rsa'",
                       reason="bad_key_type")


def _check_client_name(name: str) -> None:
    # The name becomes a file name under clients/ and a CN; this alphabet keeps both unsurprising.
    if not isinstance(name, str) or not _CLIENT_NAME.fullmatch(name):
        raise PKIError(f"bad client name {name!r}: use 1-{CLIENT_NAME_MAX_CHARS} of "
                       "A-Z a-z 0-9 . _ -", reason="bad_name")


def _load_intermediate(directory: Path) -> Issued:
    return load_issued(directory / INTERMEDIATE_CERT, directory / INTERMEDIATE_KEY)


def _read_state(directory: Path) -> dict:
    path = directory / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PKIError(f"no PKI in {directory} (no {STATE_FILE}); run `mtls-gateway pki init` "
                       "first", reason="pki_missing") from None
    except (OSError, ValueError) as exc:
        raise PKIError(f"cannot read {path}: {exc}", reason="pki_unreadable") from exc
    well_formed = (isinstance(state, dict) and state.get("format") == STATE_FORMAT
                   and isinstance(state.get("issued"), dict)
                   and all(isinstance(v, str) for v in state["issued"].values())
                   and isinstance(state.get("revoked"), list)
                   and all(isinstance(e, dict) and {"name", "serial", "revoked_at"} <= e.keys()
                           for e in state["revoked"])
                   and isinstance(state.get("crl_number"), dict)
                   and isinstance(state["crl_number"].get("intermediate"), int))
    if not well_formed:
        raise PKIError(f"{path} is not a state file this version understands",
                       reason="pki_unreadable")
    return state


def _write_state(directory: Path, state: dict) -> Path:
    path = directory / STATE_FILE
    _write_file(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode(),
                PUBLIC_FILE_MODE)
    return path


def _remove_old_clients(directory: Path) -> None:
    try:
        names = list(_read_state(directory)["issued"])
    except PKIError:
        return  # nothing we can trust to name the old files; leave them
    for name in names:
        if _CLIENT_NAME.fullmatch(name):
            for suffix in (".pem", ".key"):
                (directory / CLIENTS_DIR / f"{name}{suffix}").unlink(missing_ok=True)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically: a temporary file in the same directory, then rename.

    mkstemp creates the file 0600, so a key is never readable by others, not even for an instant;
    the final mode is set on the descriptor before the rename. Readers see the old file or the new
    one, never a torn write (os.replace is atomic on POSIX within one file system).
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def _toml_string(text: str) -> str:
    """A TOML basic string. JSON's escapes are a subset of TOML's, except that TOML also wants
    DEL escaped."""
    return json.dumps(text).replace("\x7f", "\\u007f")
