"""gateway.ocsp: requests, response checks (signers, freshness, nonce, CertID) and the checker
(cache, dedupe, waiters, failure policy, bounds). Responses are made with cryptography's builder;
the responder is a fake async fetch, the clock a fake one; no sockets, no sleeps."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from gateway import pki
from gateway.fetch import FetchError
from gateway.identity import VerifyStatus, identity_from_der
from gateway.ocsp import (
    MAX_RESPONSE_BYTES,
    NO_NEXT_UPDATE_TTL_S,
    NONCE_BYTES,
    OCSP_REQUEST_TYPE,
    UNAVAILABLE_TTL_S,
    Answer,
    OCSPChecker,
    OCSPInvalid,
    Pending,
    build_request,
    check_response,
    public_key_bits,
    responder_urls,
)
from gateway.trust import TrustStore, Verifier

T0 = float(int(time.time()))        # the fake clock starts now: the pki certificates are valid
HOUR = 3600.0
SKEW = 300.0
GOOD, REVOKED, UNKNOWN = (ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED,
                          ocsp.OCSPCertStatus.UNKNOWN)
ROOT_URL = "http://ocsp.test/root"
INTER_URL = "http://ocsp.test/intermediate"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class CA:
    """A root, an intermediate that publishes its status at ROOT_URL, and client leaves that
    publish theirs at INTER_URL."""

    def __init__(self, key_type: pki.KeyType = "ec") -> None:
        self.root = pki.make_root(f"OCSP Root {key_type}", key_type=key_type)
        self.inter = pki.make_intermediate(self.root, f"OCSP Intermediate {key_type}",
                                           key_type=key_type, ocsp_url=ROOT_URL)
        self.leaf = self.client("alice")
        self.store = TrustStore("ocsp", [self.root.cert])

    def client(self, name: str, ocsp_url: str | None = INTER_URL) -> pki.Issued:
        return pki.make_client(self.inter, name, ocsp_url=ocsp_url)

    def verdict(self, leaf: pki.Issued | None = None):
        leaf = leaf or self.leaf
        verdict = Verifier(self.store).verify_der((leaf.der, self.inter.der), now=T0)
        assert verdict.ok, verdict.detail
        return verdict


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("ec")


@pytest.fixture(scope="module")
def rsa_ca() -> CA:
    return CA("rsa")


def respond(cert: x509.Certificate, issuer: x509.Certificate, key, responder: x509.Certificate,
            *, status: ocsp.OCSPCertStatus = GOOD, this_update: float = T0 - 60,
            next_update: float | None = T0 + HOUR, nonce: bytes | None = None,
            certs: tuple[x509.Certificate, ...] = (), by: str = "hash",
            revoked_at: float | None = None, reason: x509.ReasonFlags | None = None,
            cert_id_hash: hashes.HashAlgorithm = hashes.SHA1(),
            signature_hash: hashes.HashAlgorithm | None = hashes.SHA256()) -> bytes:
    """A DER OCSPResponse about `cert`, signed by `key` and naming `responder` as its signer."""
    if status is REVOKED and revoked_at is None:
        revoked_at = T0 - 2 * HOUR
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=issuer, algorithm=cert_id_hash, cert_status=status,
        this_update=_dt(this_update), next_update=None if next_update is None else _dt(next_update),
        revocation_time=None if revoked_at is None else _dt(revoked_at),
        revocation_reason=reason)
    encoding = ocsp.OCSPResponderEncoding.HASH if by == "hash" else ocsp.OCSPResponderEncoding.NAME
    builder = builder.responder_id(encoding, responder)
    if certs:
        builder = builder.certificates(list(certs))
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(key, signature_hash).public_bytes(serialization.Encoding.DER)


def by_issuer(ca: CA, **kw) -> bytes:
    """An answer about ca.leaf signed by the intermediate itself."""
    return respond(ca.leaf.cert, ca.inter.cert, ca.inter.key, ca.inter.cert, **kw)


def check(ca: CA, der: bytes, *, nonce: bytes | None = None, now: float = T0) -> Answer:
    return check_response(der, ca.leaf.cert, ca.inter.cert, nonce=nonce, now=now, skew_s=SKEW)


def invalid(ca: CA, der: bytes, **kw) -> OCSPInvalid:
    with pytest.raises(OCSPInvalid) as info:
        check(ca, der, **kw)
    return info.value


# DER surgery on a signed response, for what cryptography's builder will not make: a signature by a
# key other than the named responder's, a SHA-1 signature, an algorithm that does not fit the key.

def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        width = length & 0x7F
        length = int.from_bytes(der[pos:pos + width], "big")
        pos += width
    return tag, pos, pos + length


def _enc(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(body))) + body + content


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _enc(0x06, bytes(out))


def resign(der: bytes, key, algorithm_oid: x509.ObjectIdentifier,
           hash_: hashes.HashAlgorithm | None, *, tamper: bool = False) -> bytes:
    """`der` (a successful OCSPResponse) with its BasicOCSPResponse signed again by `key` under
    `algorithm_oid` (the signature made with `hash_`); `tamper` changes tbsResponseData after
    signing."""
    _, pos, _ = _tlv(der, 0)                            # OCSPResponse
    _, _, pos = _tlv(der, pos)                          # responseStatus
    _, pos, _ = _tlv(der, pos)                          # [0] responseBytes
    _, pos, _ = _tlv(der, pos)                          # ResponseBytes SEQUENCE
    _, _, pos = _tlv(der, pos)                          # responseType
    _, start, end = _tlv(der, pos)                      # OCTET STRING
    basic = der[start:end]
    _, pos, end = _tlv(basic, 0)
    _, _, after_tbs = _tlv(basic, pos)
    tbs = basic[pos:after_tbs]
    _, _, after_alg = _tlv(basic, after_tbs)
    _, _, after_sig = _tlv(basic, after_alg)
    certs = basic[after_sig:end]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(tbs, ec.ECDSA(hash_))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(tbs)
    else:
        signature = key.sign(tbs, padding.PKCS1v15(), hash_)
    if tamper:
        # producedAt's first digit, 2xxx -> 3xxx: still well-formed, and nothing checks its value
        _, inner, _ = _tlv(tbs, 0)
        _, _, inner = _tlv(tbs, inner)                  # responderID
        tag, at, _ = _tlv(tbs, inner)
        assert tag == 0x18 and tbs[at:at + 1] == b"2"
        tbs = tbs[:at] + b"3" + tbs[at + 1:]
    alg = _enc(0x30, _oid(algorithm_oid.dotted_string)
               + (b"\x05\x00" if isinstance(key, rsa.RSAPrivateKey) else b""))
    basic = _enc(0x30, tbs + alg + _enc(0x03, b"\x00" + signature) + certs)
    body = _enc(0x30, _oid("1.3.6.1.5.5.7.48.1.1") + _enc(0x04, basic))
    return _enc(0x30, b"\x0a\x01\x00" + _enc(0xA0, body))


def test_resign_helper_round_trips(ca):
    again = resign(by_issuer(ca), ca.inter.key, SignatureAlgorithmOID.ECDSA_WITH_SHA256,
                   hashes.SHA256())
    assert check(ca, again).status is None


# ---------------------------------------------------------------------------------------------
# URLs and requests
# ---------------------------------------------------------------------------------------------

def test_responder_urls(ca):
    assert responder_urls(ca.leaf.cert) == (INTER_URL,)
    assert responder_urls(ca.inter.cert) == (ROOT_URL,)
    assert responder_urls(ca.root.cert) == ()            # no AIA at all
    aia = x509.AuthorityInformationAccess([
        x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                               x509.UniformResourceIdentifier("http://ca.test/issuer.der")),
        x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                               x509.UniformResourceIdentifier("https://ocsp.test/tls")),
        x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                               x509.UniformResourceIdentifier("HTTP://ocsp.test/a")),
        x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                               x509.UniformResourceIdentifier("http://ocsp.test/b")),
    ])
    cert = _leaf_with(ca, [aia])
    assert responder_urls(cert) == ("HTTP://ocsp.test/a", "http://ocsp.test/b")


def _leaf_with(ca: CA, extensions: list[x509.ExtensionType]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
               .issuer_name(ca.inter.cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(_dt(T0 - HOUR)).not_valid_after(_dt(T0 + HOUR)))
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(ca.inter.key, hashes.SHA256())


def test_build_request_certid_and_nonce(ca):
    nonce = bytes(range(NONCE_BYTES))
    request = ocsp.load_der_ocsp_request(build_request(ca.leaf.cert, ca.inter.cert, nonce))
    assert request.serial_number == ca.leaf.serial
    assert isinstance(request.hash_algorithm, hashes.SHA1)
    h = hashes.Hash(hashes.SHA1())
    h.update(public_key_bits(ca.inter.cert))
    assert request.issuer_key_hash == h.finalize()
    h = hashes.Hash(hashes.SHA1())
    h.update(ca.inter.cert.subject.public_bytes())
    assert request.issuer_name_hash == h.finalize()
    assert request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    bare = ocsp.load_der_ocsp_request(build_request(ca.leaf.cert, ca.inter.cert, None))
    with pytest.raises(x509.ExtensionNotFound):
        bare.extensions.get_extension_for_class(x509.OCSPNonce)
    with pytest.raises(ValueError):
        build_request(ca.leaf.cert, ca.inter.cert, bytes(NONCE_BYTES + 1))
    with pytest.raises(ValueError):
        build_request(ca.leaf.cert, ca.inter.cert, b"")


def test_public_key_bits_is_the_spki_bit_string(ca, rsa_ca):
    # the subjectPublicKey of an EC key is its point; of an RSA key, the DER RSAPublicKey
    point = ca.inter.cert.public_key().public_bytes(serialization.Encoding.X962,
                                                    serialization.PublicFormat.UncompressedPoint)
    assert public_key_bits(ca.inter.cert) == point
    pkcs1 = rsa_ca.inter.cert.public_key().public_bytes(serialization.Encoding.DER,
                                                        serialization.PublicFormat.PKCS1)
    assert public_key_bits(rsa_ca.inter.cert) == pkcs1
    # and its SHA-1 is what RFC 5280 4.2.1.2 method 1 calls the key identifier
    ski = x509.SubjectKeyIdentifier.from_public_key(ca.inter.cert.public_key()).digest
    h = hashes.Hash(hashes.SHA1())
    h.update(public_key_bits(ca.inter.cert))
    assert h.finalize() == ski


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["ec", "rsa"])
def test_good_from_the_issuer(which, ca, rsa_ca):
    c = ca if which == "ec" else rsa_ca
    answer = check(c, by_issuer(c))
    assert answer.status is None and answer.detail == "good"
    assert answer.expires_at == T0 + HOUR == answer.next_update
    assert answer.this_update == T0 - 60


@pytest.mark.parametrize("which", ["ec", "rsa"])
def test_revoked_and_unknown(which, ca, rsa_ca):
    c = ca if which == "ec" else rsa_ca
    answer = check(c, by_issuer(c, status=REVOKED, revoked_at=T0 - 2 * HOUR,
                                reason=x509.ReasonFlags.key_compromise))
    assert answer.status is VerifyStatus.OCSP_REVOKED
    assert "keyCompromise" in answer.detail
    assert _dt(T0 - 2 * HOUR).strftime("%Y-%m-%dT%H:%M:%SZ") in answer.detail
    answer = check(c, by_issuer(c, status=UNKNOWN))
    assert answer.status is VerifyStatus.OCSP_UNKNOWN


def test_ed25519_issuer():
    root_key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ed25519 Root")])
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_dt(T0 - HOUR)).not_valid_after(_dt(T0 + 10 * HOUR))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(root_key, None))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed-client")]))
            .issuer_name(name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_dt(T0 - HOUR)).not_valid_after(_dt(T0 + HOUR)).sign(root_key, None))
    der = respond(leaf, root, root_key, root, signature_hash=None)
    assert check_response(der, leaf, root, nonce=None, now=T0).status is None
    stranger = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(OCSPInvalid) as info:
        check_response(resign(der, stranger, SignatureAlgorithmOID.ED25519, None), leaf, root,
                       nonce=None, now=T0)
    assert info.value.reason == "bad_signature"


@pytest.mark.parametrize("by", ["hash", "name"])
def test_signed_by_a_stranger_key(by, ca):
    stranger = ec.generate_private_key(ec.SECP256R1())
    der = resign(by_issuer(ca, by=by), stranger, SignatureAlgorithmOID.ECDSA_WITH_SHA256,
                 hashes.SHA256())
    assert invalid(ca, der).reason == "bad_signature"


def test_signed_by_a_stranger_certificate_of_the_issuers_name(ca):
    # a self-made certificate that copies the issuer's name: by name, the ResponderID says
    # "the issuer", so the issuer's key must verify, and it does not
    stranger = ec.generate_private_key(ec.SECP256R1())
    fake = (x509.CertificateBuilder().subject_name(ca.inter.cert.subject)
            .issuer_name(ca.inter.cert.subject).public_key(stranger.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_dt(T0 - HOUR)).not_valid_after(_dt(T0 + HOUR))
            .sign(stranger, hashes.SHA256()))
    der = respond(ca.leaf.cert, ca.inter.cert, stranger, fake, by="name", certs=(fake,))
    assert invalid(ca, der).reason == "bad_signature"


def test_tampered_response(ca):
    der = resign(by_issuer(ca), ca.inter.key, SignatureAlgorithmOID.ECDSA_WITH_SHA256,
                 hashes.SHA256(), tamper=True)
    assert invalid(ca, der).reason == "bad_signature"


def test_rsa_issuer_stranger_key(rsa_ca):
    stranger = pki.new_key("rsa")
    der = resign(by_issuer(rsa_ca), stranger, SignatureAlgorithmOID.RSA_WITH_SHA256,
                 hashes.SHA256())
    assert invalid(rsa_ca, der).reason == "bad_signature"


def test_sha1_signature_refused(ca, rsa_ca):
    # a genuine signature by the issuer, but over SHA-1
    der = resign(by_issuer(ca), ca.inter.key, SignatureAlgorithmOID.ECDSA_WITH_SHA1, hashes.SHA1())
    assert invalid(ca, der).reason == "unsupported_signature"
    der = resign(by_issuer(rsa_ca), rsa_ca.inter.key, SignatureAlgorithmOID.RSA_WITH_SHA1,
                 hashes.SHA1())
    assert invalid(rsa_ca, der).reason == "unsupported_signature"


def test_signature_algorithm_must_fit_the_key(ca):
    der = resign(by_issuer(ca), ca.inter.key, SignatureAlgorithmOID.RSA_WITH_SHA256,
                 hashes.SHA256())
    assert invalid(ca, der).reason == "unsupported_signature"


@pytest.mark.parametrize("by", ["hash", "name"])
def test_delegated_responder_with_eku(by, ca):
    signer = pki.make_ocsp_signer(ca.inter, "OCSP Signer")
    der = respond(ca.leaf.cert, ca.inter.cert, signer.key, signer.cert, certs=(signer.cert,), by=by)
    assert check(ca, der).status is None
    # the same answer without the responder's certificate: nothing vouches for its key
    bare = respond(ca.leaf.cert, ca.inter.cert, signer.key, signer.cert, by=by)
    assert invalid(ca, bare).reason == "bad_signer"


def test_delegated_responder_without_eku(ca):
    signer = pki.make_ocsp_signer(ca.inter, "OCSP Signer no EKU", extended_key_usage=False)
    err = invalid(ca, respond(ca.leaf.cert, ca.inter.cert, signer.key, signer.cert,
                              certs=(signer.cert,)))
    assert err.reason == "bad_signer" and "OCSPSigning" in err.detail


def test_delegated_responder_with_another_eku(ca):
    # a certificate of the issuer's, valid, but for client authentication only
    client = ca.client("not-a-responder")
    err = invalid(ca, respond(ca.leaf.cert, ca.inter.cert, client.key, client.cert,
                              certs=(client.cert,)))
    assert err.reason == "bad_signer" and "OCSPSigning" in err.detail


def test_delegated_responder_not_issued_by_the_issuer(ca):
    # a good responder certificate, but the root's: it may not answer for the intermediate's leaves
    signer = pki.make_ocsp_signer(ca.root, "Root OCSP Signer")
    err = invalid(ca, respond(ca.leaf.cert, ca.inter.cert, signer.key, signer.cert,
                              certs=(signer.cert,)))
    assert err.reason == "bad_signer" and "not issued by" in err.detail


def test_delegated_responder_outside_its_validity(ca):
    signer = pki.make_ocsp_signer(ca.inter, "Old OCSP Signer", not_before=_dt(T0 - 10 * HOUR),
                                  not_after=_dt(T0 - HOUR))
    err = invalid(ca, respond(ca.leaf.cert, ca.inter.cert, signer.key, signer.cert,
                              certs=(signer.cert,)))
    assert err.reason == "bad_signer" and "validity" in err.detail


def test_responder_id_names_someone_else(ca):
    # signed by the root, which is not the leaf's issuer and was not delegated to
    der = respond(ca.leaf.cert, ca.inter.cert, ca.root.key, ca.root.cert, certs=(ca.root.cert,))
    assert invalid(ca, der).reason == "bad_signer"
    # signed by the issuer's key, but the ResponderID names the root: the signer must match it
    der = resign(der, ca.inter.key, SignatureAlgorithmOID.ECDSA_WITH_SHA256, hashes.SHA256())
    assert invalid(ca, der).reason == "bad_signer"


def test_expired_response(ca):
    err = invalid(ca, by_issuer(ca, this_update=T0 - 3 * HOUR, next_update=T0 - SKEW - 1))
    assert err.reason == "expired"
    # within the skew, still accepted
    assert check(ca, by_issuer(ca, this_update=T0 - 3 * HOUR,
                               next_update=T0 - SKEW + 1)).status is None


def test_this_update_in_the_future(ca):
    err = invalid(ca, by_issuer(ca, this_update=T0 + SKEW + 1, next_update=T0 + HOUR))
    assert err.reason == "not_yet_valid"
    assert check(ca, by_issuer(ca, this_update=T0 + SKEW - 1)).status is None


def test_no_next_update(ca):
    answer = check(ca, by_issuer(ca, next_update=None), now=T0 + 5)
    assert answer.status is None and answer.next_update is None
    assert answer.expires_at == T0 + 5 + NO_NEXT_UPDATE_TTL_S


def test_nonce(ca):
    ours = b"n" * NONCE_BYTES
    assert check(ca, by_issuer(ca, nonce=ours), nonce=ours).status is None
    # a responder may leave it out (a pre-signed answer)
    assert check(ca, by_issuer(ca), nonce=ours).status is None
    err = invalid(ca, by_issuer(ca, nonce=b"x" * NONCE_BYTES), nonce=ours)
    assert err.reason == "nonce_mismatch"


def test_response_for_another_serial(ca):
    other = ca.client("bob")
    err = invalid(ca, respond(other.cert, ca.inter.cert, ca.inter.key, ca.inter.cert))
    assert err.reason == "no_response"


def test_certid_must_match_the_issuer_hashes(ca):
    def by_hash(name_hash: bytes, key_hash: bytes) -> bytes:
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=name_hash, issuer_key_hash=key_hash, serial_number=ca.leaf.serial,
            algorithm=hashes.SHA1(), cert_status=GOOD, this_update=_dt(T0 - 60),
            next_update=_dt(T0 + HOUR), revocation_time=None, revocation_reason=None)
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca.inter.cert)
        return builder.sign(ca.inter.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def sha1(data: bytes) -> bytes:
        h = hashes.Hash(hashes.SHA1())
        h.update(data)
        return h.finalize()

    name_hash = sha1(ca.inter.cert.subject.public_bytes())
    key_hash = sha1(public_key_bits(ca.inter.cert))
    assert check(ca, by_hash(name_hash, key_hash)).status is None
    assert invalid(ca, by_hash(name_hash, sha1(b"another key"))).reason == "no_response"
    assert invalid(ca, by_hash(sha1(b"another name"), key_hash)).reason == "no_response"


def test_certid_in_the_responses_hash_algorithm(ca):
    assert check(ca, by_issuer(ca, cert_id_hash=hashes.SHA256())).status is None


def test_malformed_bytes(ca):
    assert invalid(ca, b"not DER at all").reason == "malformed"
    assert invalid(ca, by_issuer(ca)[:-20]).reason == "malformed"
    assert invalid(ca, b"").reason == "malformed"


@pytest.mark.parametrize("status", [ocsp.OCSPResponseStatus.TRY_LATER,
                                    ocsp.OCSPResponseStatus.INTERNAL_ERROR,
                                    ocsp.OCSPResponseStatus.UNAUTHORIZED])
def test_unsuccessful_response_status(status, ca):
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)
    err = invalid(ca, der)
    assert err.reason == "status" and status.name in err.detail


# ---------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------

class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Responder:
    """A fake async fetch: answers each request with the status set for its serial, signed by the
    issuer, echoing the nonce. `gate` (a future) holds every answer until it is resolved."""

    def __init__(self, *cas: CA, clock: Clock) -> None:
        self.issuers: dict[int, tuple[x509.Certificate, pki.Issued]] = {}
        for c in cas:
            self.add(c.leaf, c.inter)
            self.add(c.inter, c.root)
        self.clock = clock
        self.status: dict[int, ocsp.OCSPCertStatus] = {}
        self.calls: list[dict] = []
        self.gate: asyncio.Future | None = None
        self.error: Exception | None = None
        self.next_update_in = HOUR
        self.echo: bytes | None = None          # a fixed nonce to answer with instead of ours

    def add(self, leaf: pki.Issued, issuer: pki.Issued) -> None:
        self.issuers[leaf.serial] = (leaf.cert, issuer)

    @property
    def serials(self) -> list[int]:
        return [c["serial"] for c in self.calls]

    async def __call__(self, url, *, body=None, content_type="", accept="", timeout_s, max_bytes):
        request = ocsp.load_der_ocsp_request(body)
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        self.calls.append(dict(url=url, serial=request.serial_number, nonce=nonce,
                               content_type=content_type, max_bytes=max_bytes, timeout_s=timeout_s))
        if self.gate is not None:
            await self.gate
        if self.error is not None:
            raise self.error
        cert, issuer = self.issuers[request.serial_number]
        now = self.clock()
        return respond(cert, issuer.cert, issuer.key, issuer.cert,
                       status=self.status.get(request.serial_number, GOOD), this_update=now - 60,
                       next_update=now + self.next_update_in,
                       nonce=self.echo if self.echo is not None else nonce)


class Logs(list):
    def __call__(self, level, reason, message, **fields):
        self.append((level, reason, message, fields))


def make(ca: CA, responder_fn=None, *, clock: Clock | None = None, **kw):
    clock = clock or Clock()
    responder = responder_fn or Responder(ca, clock=clock)
    logs = Logs()
    checker = OCSPChecker(ca.store, **{"mode": "leaf", "responder": None, "timeout_s": 2.0,
                                       "failure": "refuse", "fetch": responder, "clock": clock,
                                       "log": logs, **kw})
    return checker, responder, clock, logs


async def next_turn() -> None:
    """One turn of the loop (what is already scheduled runs), with no timer involved."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_soon(fut.set_result, None)
    await fut


async def settle(pending: Pending, turns: int = 50) -> Pending:
    """Run the loop until `pending` calls its waiter; a bounded number of turns, so a Pending that
    never settles fails the test instead of hanging it."""
    assert isinstance(pending, Pending) and not pending.done
    called: list[Pending] = []
    pending.add_waiter(called.append)
    for _ in range(turns):
        if called:
            break
        await next_turn()
    assert called == [pending], "the pending never settled"
    return pending


def test_checker_good_then_cache_hit_without_fetch(ca):
    checker, responder, clock, _ = make(ca)

    async def main():
        verdict = ca.verdict()
        first = checker.check(verdict, clock())
        done = await settle(first)
        assert done.done and done.result is None
        assert responder.serials == [ca.leaf.serial]
        call = responder.calls[0]
        assert call["url"] == INTER_URL and call["content_type"] == OCSP_REQUEST_TYPE
        assert call["max_bytes"] == MAX_RESPONSE_BYTES and call["timeout_s"] == 2.0
        assert len(call["nonce"]) == NONCE_BYTES
        clock.t += 60
        assert checker.check(verdict, clock()) is None
        assert checker.check(ca.verdict(), clock()) is None     # another verdict, same chain
        assert len(responder.calls) == 1
        s = checker.stats
        assert (s.hits, s.misses, s.fetches, s.failures) == (2, 1, 1, 0)
        assert checker.answer((ca.inter.cert.subject.public_bytes(), ca.leaf.serial)).status is None

    asyncio.run(main())


def test_checker_revoked_and_unknown_are_cached_refusals(ca):
    bob, carol = ca.client("bob-r"), ca.client("carol-u")
    checker, responder, clock, _ = make(ca)
    responder.add(bob, ca.inter)
    responder.add(carol, ca.inter)
    responder.status[bob.serial] = REVOKED
    responder.status[carol.serial] = UNKNOWN

    async def main():
        p = await settle(checker.check(ca.verdict(bob), clock()))
        assert p.result is VerifyStatus.OCSP_REVOKED and "revoked at" in p.detail
        p = await settle(checker.check(ca.verdict(carol), clock()))
        assert p.result is VerifyStatus.OCSP_UNKNOWN
        assert checker.check(ca.verdict(bob), clock()) is VerifyStatus.OCSP_REVOKED
        assert checker.check(ca.verdict(carol), clock()) is VerifyStatus.OCSP_UNKNOWN
        assert len(responder.calls) == 2
        assert (checker.stats.hits, checker.stats.misses) == (2, 2)

    asyncio.run(main())


def test_checker_expiry_at_next_update_fetches_again(ca):
    checker, responder, clock, _ = make(ca)

    async def main():
        await settle(checker.check(ca.verdict(), clock()))
        clock.t = T0 + HOUR - 1
        assert checker.check(ca.verdict(), clock()) is None
        assert len(responder.calls) == 1
        clock.t = T0 + HOUR
        again = checker.check(ca.verdict(), clock())
        assert isinstance(again, Pending)
        await settle(again)
        assert len(responder.calls) == 2
        assert responder.calls[0]["nonce"] != responder.calls[1]["nonce"]     # a fresh nonce each

    asyncio.run(main())


def test_checker_dedupes_concurrent_misses_and_calls_each_waiter_once(ca):
    checker, responder, clock, logs = make(ca)

    async def main():
        loop = asyncio.get_running_loop()
        responder.gate = loop.create_future()
        calls: list[str] = []
        p1 = checker.check(ca.verdict(), clock())
        p2 = checker.check(ca.verdict(), clock())
        assert isinstance(p1, Pending) and isinstance(p2, Pending) and p1 is not p2
        assert checker.in_flight == 1

        def boom(p):
            calls.append("boom")
            raise RuntimeError("a broken waiter")

        p1.add_waiter(lambda p: calls.append("a1"))
        p1.add_waiter(boom)
        p1.add_waiter(lambda p: calls.append("a2"))
        p2.add_waiter(lambda p: calls.append("b"))
        await next_turn()                           # the fetch starts and waits at the gate
        assert not p1.done and calls == [] and len(responder.calls) == 1
        responder.gate.set_result(None)
        await settle(p2)
        assert p1.done and p2.done and p1.result is None and p2.result is None
        assert sorted(calls) == ["a1", "a2", "b", "boom"]
        assert len(responder.calls) == 1 and checker.stats.fetches == 1
        assert any(r[1] == "ocsp_waiter_failed" for r in logs)
        # a waiter added after settling is called once, from the loop, not from add_waiter
        late: list[Pending] = []
        p1.add_waiter(late.append)
        assert late == []
        await next_turn()
        assert late == [p1]
        assert sorted(calls) == ["a1", "a2", "b", "boom"]      # nobody called twice

    asyncio.run(main())


@pytest.mark.parametrize("policy", ["refuse", "allow"])
def test_checker_failure_policy_on_timeout(policy, ca):
    checker, responder, clock, logs = make(ca, failure=policy)
    responder.error = FetchError("timeout", "no complete answer within 2 s")

    async def main():
        p = await settle(checker.check(ca.verdict(), clock()))
        if policy == "refuse":
            assert p.result is VerifyStatus.OCSP_UNAVAILABLE and "timeout" in p.detail
        else:
            assert p.result is None
        assert checker.stats.failures == 1
        unavailable = [r for r in logs if r[1] == "ocsp_unavailable"]
        assert len(unavailable) == 1 and "timeout" in unavailable[0][3]["detail"]
        # the failure is cached briefly: same answer, no new fetch, no new log line
        clock.t += UNAVAILABLE_TTL_S - 1
        expect = VerifyStatus.OCSP_UNAVAILABLE if policy == "refuse" else None
        assert checker.check(ca.verdict(), clock()) is expect
        assert len(responder.calls) == 1
        assert len([r for r in logs if r[1] == "ocsp_unavailable"]) == 1

    asyncio.run(main())


def test_checker_failures_are_cached_only_briefly(ca):
    checker, responder, clock, _ = make(ca)
    responder.error = FetchError("unreachable", "connection refused")

    async def main():
        p = await settle(checker.check(ca.verdict(), clock()))
        assert p.result is VerifyStatus.OCSP_UNAVAILABLE and "unreachable" in p.detail
        clock.t += UNAVAILABLE_TTL_S - 0.5
        assert checker.check(ca.verdict(), clock()) is VerifyStatus.OCSP_UNAVAILABLE
        assert len(responder.calls) == 1
        clock.t += 1
        responder.error = None                  # the responder is back
        p = await settle(checker.check(ca.verdict(), clock()))
        assert p.result is None and len(responder.calls) == 2
        assert checker.check(ca.verdict(), clock()) is None

    asyncio.run(main())


def test_checker_bad_answers_become_unavailable(ca):
    stranger = ec.generate_private_key(ec.SECP256R1())

    async def forged(url, **kw):
        return resign(by_issuer(ca), stranger, SignatureAlgorithmOID.ECDSA_WITH_SHA256,
                      hashes.SHA256())

    async def garbage(url, **kw):
        return b"<html>captive portal</html>"

    async def replayed(url, **kw):
        return by_issuer(ca, nonce=b"r" * NONCE_BYTES)

    async def main():
        for fn, reason in ((forged, "bad_signature"), (garbage, "malformed"),
                           (replayed, "nonce_mismatch")):
            checker, _, clock, _ = make(ca, fn)
            p = await settle(checker.check(ca.verdict(), clock()))
            assert p.result is VerifyStatus.OCSP_UNAVAILABLE, reason
            assert p.detail.startswith(reason), p.detail

    asyncio.run(main())


def test_checker_no_responder_url_and_override(ca):
    silent = ca.client("no-aia", ocsp_url=None)

    async def main():
        checker, responder, clock, _ = make(ca)
        responder.add(silent, ca.inter)
        p = await settle(checker.check(ca.verdict(silent), clock()))
        assert p.result is VerifyStatus.OCSP_UNAVAILABLE and p.detail.startswith("no_responder")
        assert responder.calls == []
        checker, responder, clock, _ = make(ca, responder="http://override.test/ocsp")
        responder.add(silent, ca.inter)
        p = await settle(checker.check(ca.verdict(silent), clock()))
        assert p.result is None
        assert [c["url"] for c in responder.calls] == ["http://override.test/ocsp"]

    asyncio.run(main())


def test_checker_chain_mode_checks_the_intermediate(ca):
    async def main():
        checker, responder, clock, _ = make(ca, mode="chain")
        responder.status[ca.inter.serial] = REVOKED
        p = await settle(checker.check(ca.verdict(), clock()))
        assert p.result is VerifyStatus.OCSP_REVOKED
        assert sorted(responder.serials) == sorted([ca.leaf.serial, ca.inter.serial])
        assert {c["serial"]: c["url"] for c in responder.calls} == {
            ca.leaf.serial: INTER_URL, ca.inter.serial: ROOT_URL}
        assert checker.check(ca.verdict(), clock()) is VerifyStatus.OCSP_REVOKED
        assert len(checker) == 2
        # the same chain in leaf mode asks about the leaf only, which is good
        leaf_only, responder, clock, _ = make(ca, mode="leaf")
        responder.status[ca.inter.serial] = REVOKED
        p = await settle(leaf_only.check(ca.verdict(), clock()))
        assert p.result is None and responder.serials == [ca.leaf.serial]

    asyncio.run(main())


def test_checker_chain_mode_first_refusal_in_path_order(ca):
    async def main():
        checker, responder, clock, _ = make(ca, mode="chain")
        responder.status[ca.leaf.serial] = UNKNOWN
        responder.status[ca.inter.serial] = REVOKED
        p = await settle(checker.check(ca.verdict(), clock()))
        assert p.result is VerifyStatus.OCSP_UNKNOWN
        assert checker.check(ca.verdict(), clock()) is VerifyStatus.OCSP_UNKNOWN

    asyncio.run(main())


def test_checker_max_entries(ca):
    clients = [ca.client(f"lru-{i}") for i in range(3)]

    async def main():
        checker, responder, clock, _ = make(ca, max_entries=2)
        for c in clients:
            responder.add(c, ca.inter)
            await settle(checker.check(ca.verdict(c), clock()))
        assert len(checker) == 2
        assert checker.check(ca.verdict(clients[2]), clock()) is None
        assert checker.check(ca.verdict(clients[1]), clock()) is None
        evicted = checker.check(ca.verdict(clients[0]), clock())
        assert isinstance(evicted, Pending)
        await settle(evicted)
        assert len(responder.calls) == 4 and len(checker) == 2
        # clients[1] was used more recently than clients[2]: clients[2] went this time
        assert checker.check(ca.verdict(clients[1]), clock()) is None
        assert isinstance(checker.check(ca.verdict(clients[2]), clock()), Pending)

    asyncio.run(main())


@pytest.mark.parametrize("policy", ["refuse", "allow"])
def test_checker_max_in_flight(policy, ca):
    a, b = ca.client("busy-a"), ca.client("busy-b")

    async def main():
        checker, responder, clock, logs = make(ca, max_in_flight=1, failure=policy)
        responder.add(a, ca.inter)
        responder.add(b, ca.inter)
        responder.gate = asyncio.get_running_loop().create_future()
        pa = checker.check(ca.verdict(a), clock())
        assert isinstance(pa, Pending)
        over = checker.check(ca.verdict(b), clock())
        assert over is (VerifyStatus.OCSP_UNAVAILABLE if policy == "refuse" else None)
        assert checker.stats.overflows == 1 and checker.in_flight == 1
        overloaded = [r for r in logs if "overloaded" in r[3].get("detail", "")]
        assert len(overloaded) == 1 and overloaded[0][1] == "ocsp_unavailable"
        # a burst of them is one log line per key per UNAVAILABLE_TTL_S
        clock.t += UNAVAILABLE_TTL_S - 1
        assert checker.check(ca.verdict(b), clock()) is over
        assert len([r for r in logs if "overloaded" in r[3].get("detail", "")]) == 1
        clock.t += 1
        assert checker.check(ca.verdict(b), clock()) is over
        assert len([r for r in logs if "overloaded" in r[3].get("detail", "")]) == 2
        assert checker.stats.overflows == 3
        responder.gate.set_result(None)
        await settle(pa)
        # the overflow was not cached: b is fetched now that there is room
        pb = checker.check(ca.verdict(b), clock())
        assert isinstance(pb, Pending)
        assert (await settle(pb)).result is None
        assert responder.serials == [a.serial, b.serial]

    asyncio.run(main())


def test_checker_never_raises(ca):
    checker, responder, clock, logs = make(ca)
    # no running loop: a miss cannot start a fetch; it fails by policy instead of raising
    assert checker.check(ca.verdict(), clock()) is VerifyStatus.OCSP_UNAVAILABLE
    allow, _, _, _ = make(ca, failure="allow")
    assert allow.check(ca.verdict(), clock()) is None
    assert checker.check(object(), clock()) is VerifyStatus.OCSP_UNAVAILABLE
    assert responder.calls == []

    async def broken(url, **kw):
        raise KeyError("a bug in the fetch")

    async def main():
        c, _, clk, _ = make(ca, broken)
        p = await settle(c.check(ca.verdict(), clk()))
        assert p.result is VerifyStatus.OCSP_UNAVAILABLE and p.detail.startswith("error")

    asyncio.run(main())


def test_checker_close_settles_waiters(ca):
    async def main():
        checker, responder, clock, _ = make(ca)
        responder.gate = asyncio.get_running_loop().create_future()
        p = checker.check(ca.verdict(), clock())
        seen: list[Pending] = []
        p.add_waiter(seen.append)
        await next_turn()
        checker.close()
        await settle(p)
        assert seen == [p] and p.result is VerifyStatus.OCSP_UNAVAILABLE
        assert "cancelled" in p.detail and len(checker) == 0 and checker.in_flight == 0

    asyncio.run(main())


def test_checker_certificate_or_issuer_not_found(ca):
    # `other` has an intermediate of the same name as ca's, with another key
    other = CA("ec")
    assert other.inter.cert.subject == ca.inter.cert.subject

    async def main():
        checker, responder, clock, _ = make(ca)
        verdict = ca.verdict()
        # a serial the presented chain does not hold
        odd = dataclasses.replace(verdict, path_serials=(
            (ca.inter.cert.subject.public_bytes(), ca.leaf.serial + 1),))
        p = await settle(checker.check(odd, clock()))
        assert p.result is VerifyStatus.OCSP_UNAVAILABLE
        assert p.detail.startswith("no_certificate"), p.detail
        # the leaf alone: its issuer is neither presented nor in the store
        alone = dataclasses.replace(verdict, identity=identity_from_der((ca.leaf.der,)))
        p = await settle(checker.check(alone, clock()))
        assert p.result is VerifyStatus.OCSP_UNAVAILABLE and p.detail.startswith("no_issuer")
        # an issuer of the right name whose key did not sign the leaf is not taken
        checker, responder, clock, _ = make(ca)
        forged = dataclasses.replace(verdict, identity=identity_from_der(
            (ca.leaf.der, other.inter.der)))
        p = await settle(checker.check(forged, clock()))
        assert p.result is VerifyStatus.OCSP_UNAVAILABLE and p.detail.startswith("no_issuer")
        assert responder.calls == []

    asyncio.run(main())


def test_checker_rejects_bad_settings(ca):
    with pytest.raises(ValueError):
        OCSPChecker(ca.store, mode="off", responder=None, timeout_s=1.0, failure="refuse")
    with pytest.raises(ValueError):
        OCSPChecker(ca.store, mode="leaf", responder=None, timeout_s=1.0, failure="maybe")
    with pytest.raises(ValueError):
        OCSPChecker(ca.store, mode="leaf", responder=None, timeout_s=1.0, failure="refuse",
                    max_entries=0)
