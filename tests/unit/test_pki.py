"""The development PKI: what each certificate says, that it verifies, and the on-disk round trip."""
from __future__ import annotations

import ipaddress
import json
import shutil
import stat
import subprocess
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway import pki
from gateway.errors import GatewayError
from gateway.pki import PKIError

# Slack for "now" measured in the test versus inside the library.
NOW_SLACK_S = 120


# --- fixtures: one EC hierarchy shared by the module (EC key generation is cheap, but not free) ---

@pytest.fixture(scope="module")
def root() -> pki.Issued:
    return pki.make_root("test root CA")


@pytest.fixture(scope="module")
def intermediate(root: pki.Issued) -> pki.Issued:
    return pki.make_intermediate(root, "test intermediate CA")


@pytest.fixture(scope="module")
def server(intermediate: pki.Issued) -> pki.Issued:
    return pki.make_server(intermediate, ["localhost", "127.0.0.1", "::1"])


@pytest.fixture(scope="module")
def client(intermediate: pki.Issued) -> pki.Issued:
    return pki.make_client(intermediate, "alice")


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.init_dir(directory)
    return directory


def ext(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def has_ext(cert: x509.Certificate, kind: type) -> bool:
    try:
        cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return False
    return True


def key_usages(cert: x509.Certificate) -> set[str]:
    usage = ext(cert, x509.KeyUsage).value
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign"]
    return {name for name in names if getattr(usage, name)}


def assert_linked(child: x509.Certificate, issuer: x509.Certificate) -> None:
    """Signed by the issuer, and the AKI names the issuer's SKI."""
    child.verify_directly_issued_by(issuer)
    aki = ext(child, x509.AuthorityKeyIdentifier).value
    ski = ext(issuer, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def assert_ca(cert: x509.Certificate, path_length: int | None) -> None:
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == path_length
    assert ext(cert, x509.KeyUsage).critical
    assert key_usages(cert) == {"key_cert_sign", "crl_sign"}
    assert not has_ext(cert, x509.ExtendedKeyUsage)


def assert_leaf(cert: x509.Certificate) -> None:
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    assert ext(cert, x509.SubjectKeyIdentifier).value.digest == \
        x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    if not has_ext(cert, x509.ExtendedKeyUsage):
        return None
    return list(ext(cert, x509.ExtendedKeyUsage).value)


def pem_count(data: bytes) -> int:
    return len(x509.load_pem_x509_certificates(data))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def now() -> datetime:
    return datetime.now(timezone.utc)


# --- certificates in memory ----------------------------------------------------------------------

def test_root_is_a_self_signed_ca(root: pki.Issued) -> None:
    assert_linked(root.cert, root.cert)
    assert_ca(root.cert, path_length=None)
    assert root.cert.subject == root.cert.issuer
    assert root.cert.subject.rfc4514_string() == "CN=test root CA,O=mtls-gateway dev"
    assert root.chain == ()
    assert isinstance(root.key, ec.EllipticCurvePrivateKey)
    assert root.key.curve.name == "secp256r1"
    assert root.cert.signature_hash_algorithm.name == "sha256"


def test_root_organization_is_inherited(root: pki.Issued) -> None:
    other = pki.make_root("other", organization="Example Corp")
    assert other.cert.subject.rfc4514_string() == "CN=other,O=Example Corp"
    leaf = pki.make_client(other, "bob")
    assert leaf.cert.subject.rfc4514_string() == "CN=bob,O=Example Corp"


def test_intermediate_is_a_ca_under_the_root(root: pki.Issued, intermediate: pki.Issued) -> None:
    assert_linked(intermediate.cert, root.cert)
    assert_ca(intermediate.cert, path_length=0)
    assert intermediate.cert.issuer == root.cert.subject
    assert intermediate.chain == ()  # the root is never part of a chain


def test_server_leaf(intermediate: pki.Issued, server: pki.Issued) -> None:
    cert = server.cert
    assert_linked(cert, intermediate.cert)
    assert_leaf(cert)
    assert cert.subject.rfc4514_string() == "CN=localhost,O=mtls-gateway dev"
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert key_usages(cert) == {"digital_signature"}  # EC: no keyEncipherment
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                       ipaddress.ip_address("::1")]
    assert server.chain == (intermediate.cert,)
    assert server.chain_pem == server.cert_pem + intermediate.cert_pem


def test_server_needs_a_name(intermediate: pki.Issued) -> None:
    with pytest.raises(PKIError):
        pki.make_server(intermediate, [])


def test_client_leaf_defaults(intermediate: pki.Issued, client: pki.Issued) -> None:
    cert = client.cert
    assert_linked(cert, intermediate.cert)
    assert_leaf(cert)
    assert cert.subject.rfc4514_string() == "CN=alice,O=mtls-gateway dev"
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not ext(cert, x509.ExtendedKeyUsage).critical
    assert key_usages(cert) == {"digital_signature"}
    assert not has_ext(cert, x509.SubjectAlternativeName)
    assert client.chain == (intermediate.cert,)
    assert client.der == cert.public_bytes(serialization.Encoding.DER)
    assert client.serial == cert.serial_number


def test_client_sans(intermediate: pki.Issued) -> None:
    leaf = pki.make_client(intermediate, "svc", san_dns=["svc.internal", "svc"],
                           san_uri=["spiffe://example.org/svc"])
    san = ext(leaf.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["svc.internal", "svc"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/svc"]


@pytest.mark.parametrize(("usage", "expected"), [
    ("client", [ExtendedKeyUsageOID.CLIENT_AUTH]),
    ("server", [ExtendedKeyUsageOID.SERVER_AUTH]),
    ("both", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
    ("none", None),
])
def test_client_extended_key_usage(intermediate: pki.Issued, usage: str, expected) -> None:
    leaf = pki.make_client(intermediate, "eku", extended_key_usage=usage)
    assert eku(leaf.cert) == expected
    assert_linked(leaf.cert, intermediate.cert)


def test_client_bad_extended_key_usage(intermediate: pki.Issued) -> None:
    with pytest.raises(PKIError) as info:
        pki.make_client(intermediate, "x", extended_key_usage="email")
    assert info.value.reason == "bad_eku"


def test_client_serial_and_subject(intermediate: pki.Issued) -> None:
    leaf = pki.make_client(intermediate, "carol", serial=0x1234,
                           subject_extra={"OU": ["eng", "ops"], NameOID.COUNTRY_NAME: "NL"})
    assert leaf.cert.serial_number == 0x1234
    assert leaf.cert.subject.rfc4514_string() == \
        "CN=carol,C=NL,OU=ops,OU=eng,O=mtls-gateway dev"
    replaced = pki.make_client(intermediate, "dave", subject_extra={"O": "Elsewhere"})
    assert replaced.cert.subject.rfc4514_string() == "CN=dave,O=Elsewhere"
    no_cn = pki.make_client(intermediate, "", san_uri=["spiffe://example.org/anon"])
    assert no_cn.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    with pytest.raises(PKIError):
        pki.make_client(intermediate, "x", subject_extra={"nonsense": "1"})


def test_random_serials_are_positive_159_bit_and_distinct(intermediate: pki.Issued) -> None:
    serials = {pki.make_client(intermediate, f"s{i}").serial for i in range(4)}
    assert len(serials) == 4
    assert all(0 < s and s.bit_length() <= 159 for s in serials)


def test_default_validity(root: pki.Issued, intermediate: pki.Issued,
                          client: pki.Issued, server: pki.Issued) -> None:
    moment = now()
    slack = timedelta(seconds=NOW_SLACK_S)
    for issued, days in ((root, 3650), (intermediate, 3650), (server, 365), (client, 365)):
        before = issued.cert.not_valid_before_utc
        after = issued.cert.not_valid_after_utc
        assert abs(before - (moment - timedelta(hours=1))) < slack
        assert abs(after - (moment + timedelta(days=days))) < slack


def test_explicit_validity(intermediate: pki.Issued) -> None:
    start = datetime(2020, 1, 1, tzinfo=timezone.utc)
    end = datetime(2021, 1, 1, tzinfo=timezone.utc)
    expired = pki.make_client(intermediate, "old", not_before=start, not_after=end)
    assert expired.cert.not_valid_before_utc == start
    assert expired.cert.not_valid_after_utc == end
    # notAfter defaults to a year after an explicit notBefore (a not-yet-valid cert stays sane)
    future = now().replace(microsecond=0) + timedelta(days=30)
    later = pki.make_client(intermediate, "later", not_before=future)
    assert later.cert.not_valid_before_utc == future
    assert later.cert.not_valid_after_utc == future + timedelta(days=365)
    # naive datetimes are UTC
    naive = pki.make_client(intermediate, "naive", not_before=start.replace(tzinfo=None),
                            not_after=end.replace(tzinfo=None))
    assert naive.cert.not_valid_before_utc == start


def test_self_signed_client_is_not_a_ca() -> None:
    leaf = pki.make_self_signed_client("mallory", san_dns=["mallory.example"])
    assert_linked(leaf.cert, leaf.cert)
    assert_leaf(leaf.cert)
    assert leaf.cert.subject == leaf.cert.issuer
    assert leaf.cert.subject.rfc4514_string() == "CN=mallory,O=mtls-gateway dev"
    assert eku(leaf.cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.chain == ()


def test_new_key_types() -> None:
    assert isinstance(pki.new_key(), ec.EllipticCurvePrivateKey)
    with pytest.raises(PKIError) as info:
        pki.new_key("dsa")
    assert info.value.reason == "bad_key_type"
    assert isinstance(info.value, GatewayError)


def test_rsa_hierarchy() -> None:
    # The one test that pays for RSA key generation: root, server and client.
    root = pki.make_root("rsa root", key_type="rsa")
    server = pki.make_server(root, ["rsa.example"], key_type="rsa")
    client = pki.make_client(root, "rsa-client", key_type="rsa")
    for issued in (root, server, client):
        assert isinstance(issued.key, rsa.RSAPrivateKey)
        assert issued.key.key_size == 2048
        assert issued.cert.signature_hash_algorithm.name == "sha256"
        assert_linked(issued.cert, root.cert)
        assert b"BEGIN PRIVATE KEY" in issued.key_pem  # PKCS8, unencrypted
    assert_ca(root.cert, path_length=None)
    assert key_usages(server.cert) == {"digital_signature", "key_encipherment"}
    assert key_usages(client.cert) == {"digital_signature"}
    assert server.chain == client.chain == ()
    crl = pki.make_crl(root, [client.serial])
    assert crl.is_signature_valid(root.cert.public_key())
    assert crl.get_revoked_certificate_by_serial_number(client.serial) is not None


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_chain_of_depth(depth: int) -> None:
    root, intermediates, leaf = pki.chain_of_depth(depth)
    assert len(intermediates) == depth - 2
    path = [root] + intermediates + [leaf]
    assert len(path) == depth
    for issuer, child in zip(path, path[1:]):
        assert_linked(child.cert, issuer.cert)
        assert child.cert.issuer == issuer.cert.subject
    assert_ca(root.cert, path_length=None)
    for index, intermediate in enumerate(intermediates):
        assert_ca(intermediate.cert, path_length=len(intermediates) - 1 - index)
    assert_leaf(leaf.cert)
    assert eku(leaf.cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.chain == tuple(i.cert for i in reversed(intermediates))
    assert pem_count(leaf.chain_pem) == depth - 1


def test_chain_of_depth_needs_a_root_and_a_leaf() -> None:
    with pytest.raises(PKIError):
        pki.chain_of_depth(1)


def test_two_level_intermediates_link_their_chain(root: pki.Issued) -> None:
    upper = pki.make_intermediate(root, "upper", path_length=1)
    lower = pki.make_intermediate(upper, "lower")
    leaf = pki.make_client(lower, "deep")
    assert upper.chain == ()
    assert lower.chain == (upper.cert,)
    assert leaf.chain == (lower.cert, upper.cert)


# --- CRLs ----------------------------------------------------------------------------------------

def test_crl_lists_serials_and_is_signed(intermediate: pki.Issued, root: pki.Issued) -> None:
    when = datetime(2024, 5, 1, tzinfo=timezone.utc)
    crl = pki.make_crl(intermediate, [7, 11, 7], revocation_date=when, crl_number=5)
    assert crl.is_signature_valid(intermediate.cert.public_key())
    assert not crl.is_signature_valid(root.cert.public_key())
    assert crl.issuer == intermediate.cert.subject
    assert sorted(r.serial_number for r in crl) == [7, 11]
    assert crl.get_revoked_certificate_by_serial_number(7).revocation_date_utc == when
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 5
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(intermediate.cert, x509.SubjectKeyIdentifier).value.digest
    moment = now()
    slack = timedelta(seconds=NOW_SLACK_S)
    assert abs(crl.last_update_utc - (moment - timedelta(hours=1))) < slack
    assert abs(crl.next_update_utc - (moment + timedelta(days=30))) < slack
    assert x509.load_pem_x509_crl(pki.crl_pem(crl)) == crl


def test_crl_dates(intermediate: pki.Issued) -> None:
    last = datetime(2024, 1, 1, tzinfo=timezone.utc)
    nxt = datetime(2024, 1, 2, tzinfo=timezone.utc)
    own = datetime(2023, 6, 1, tzinfo=timezone.utc)
    crl = pki.make_crl(intermediate, [1, 2], last_update=last, next_update=nxt,
                       revocation_dates={2: own})
    assert (crl.last_update_utc, crl.next_update_utc) == (last, nxt)
    assert crl.get_revoked_certificate_by_serial_number(1).revocation_date_utc == last
    assert crl.get_revoked_certificate_by_serial_number(2).revocation_date_utc == own
    empty = pki.make_crl(intermediate, [])
    assert len(empty) == 0 and empty.is_signature_valid(intermediate.cert.public_key())


# --- files ---------------------------------------------------------------------------------------

def test_write_and_load_round_trip(tmp_path: Path, intermediate: pki.Issued,
                                   client: pki.Issued) -> None:
    cert_path, key_path = tmp_path / "alice.pem", tmp_path / "alice.key"
    client.write(cert_path, key_path)
    assert mode_of(key_path) == 0o600
    assert cert_path.read_bytes() == client.chain_pem
    assert key_path.read_bytes() == client.key_pem
    loaded = pki.load_issued(cert_path, key_path)
    assert loaded.cert == client.cert
    assert loaded.chain == (intermediate.cert,)
    assert loaded.key_pem == client.key_pem
    client.write(cert_path, key_path, with_chain=False)
    assert cert_path.read_bytes() == client.cert_pem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key", "alice.pem"]  # no temp files


def test_load_drops_a_trailing_root(tmp_path: Path, root: pki.Issued, intermediate: pki.Issued,
                                    client: pki.Issued) -> None:
    cert_path, key_path = tmp_path / "full.pem", tmp_path / "full.key"
    cert_path.write_bytes(client.chain_pem + root.cert_pem)
    key_path.write_bytes(client.key_pem)
    assert pki.load_issued(cert_path, key_path).chain == (intermediate.cert,)


def test_load_refuses_a_foreign_key_or_garbage(tmp_path: Path, client: pki.Issued,
                                               server: pki.Issued) -> None:
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "c.key"
    cert_path.write_bytes(client.cert_pem)
    key_path.write_bytes(server.key_pem)
    with pytest.raises(PKIError) as info:
        pki.load_issued(cert_path, key_path)
    assert info.value.reason == "pki_key_mismatch"
    cert_path.write_bytes(b"not a certificate")
    with pytest.raises(PKIError):
        pki.load_issued(cert_path, key_path)
    with pytest.raises(PKIError):
        pki.load_issued(tmp_path / "missing.pem", key_path)


LAYOUT = ["root-ca.pem", "root-ca.key", "intermediate-ca.pem", "intermediate-ca.key",
          "ca-bundle.pem", "server.pem", "server.key", "crl-root.pem", "crl-intermediate.pem",
          "clients/client1.pem", "clients/client1.key", "state.json"]
KEYS = ["root-ca.key", "intermediate-ca.key", "server.key", "clients/client1.key"]


def test_init_dir_layout(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "pki"  # parents are created
    written = pki.init_dir(directory)
    assert written == [directory / name for name in LAYOUT]
    for name in KEYS:
        assert mode_of(directory / name) == 0o600
    assert not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]

    root = pki.load_issued(directory / "root-ca.pem", directory / "root-ca.key")
    intermediate = pki.load_issued(directory / "intermediate-ca.pem",
                                   directory / "intermediate-ca.key")
    server = pki.load_issued(directory / "server.pem", directory / "server.key")
    client = pki.load_issued(directory / "clients/client1.pem", directory / "clients/client1.key")
    assert_ca(root.cert, path_length=None)
    assert_ca(intermediate.cert, path_length=0)
    assert_linked(intermediate.cert, root.cert)
    assert_linked(server.cert, intermediate.cert)
    assert_linked(client.cert, intermediate.cert)
    assert server.chain == client.chain == (intermediate.cert,)
    assert client.cert.subject.rfc4514_string() == "CN=client1,O=mtls-gateway dev"
    assert eku(client.cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = ext(server.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert len(san.get_values_for_type(x509.IPAddress)) == 2

    bundle = x509.load_pem_x509_certificates((directory / "ca-bundle.pem").read_bytes())
    assert bundle == [root.cert, intermediate.cert]

    for crl_name, issuer in (("crl-root.pem", root), ("crl-intermediate.pem", intermediate)):
        crl = x509.load_pem_x509_crl((directory / crl_name).read_bytes())
        assert crl.is_signature_valid(issuer.cert.public_key())
        assert len(crl) == 0
        assert abs(crl.next_update_utc - (now() + timedelta(days=30))) < \
            timedelta(seconds=NOW_SLACK_S)

    state = json.loads((directory / "state.json").read_text())
    assert state["issued"].keys() == {"client1"}
    serial_hex = state["issued"]["client1"]  # as `openssl x509 -noout -serial` prints it
    assert serial_hex == serial_hex.upper() and len(serial_hex) % 2 == 0
    assert int(serial_hex, 16) == client.serial
    assert state["revoked"] == []


def test_init_dir_refuses_an_existing_pki(pki_dir: Path) -> None:
    before = (pki_dir / "root-ca.pem").read_bytes()
    with pytest.raises(PKIError) as info:
        pki.init_dir(pki_dir)
    assert info.value.reason == "pki_exists"
    assert (pki_dir / "root-ca.pem").read_bytes() == before


def test_init_dir_force_replaces_everything(pki_dir: Path) -> None:
    pki.issue_client(pki_dir, "bob")
    old_root = (pki_dir / "root-ca.pem").read_bytes()
    pki.init_dir(pki_dir, force=True)
    assert (pki_dir / "root-ca.pem").read_bytes() != old_root
    assert not (pki_dir / "clients" / "bob.pem").exists()  # signed by the old intermediate
    assert json.loads((pki_dir / "state.json").read_text())["issued"].keys() == {"client1"}
    for name in KEYS:
        assert mode_of(pki_dir / name) == 0o600


def test_init_dir_in_a_directory_with_other_files(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("unrelated")
    pki.init_dir(tmp_path)
    assert (tmp_path / "README").read_text() == "unrelated"


def test_init_dir_bad_key_type_touches_nothing(tmp_path: Path) -> None:
    with pytest.raises(PKIError):
        pki.init_dir(tmp_path / "x", key_type="dsa")
    assert not (tmp_path / "x").exists()


def test_issue_client(pki_dir: Path) -> None:
    written = pki.issue_client(pki_dir, "svc-1.prod_a", san_dns=["svc.internal"],
                               san_uri=["spiffe://example.org/svc"])
    cert_path = pki_dir / "clients" / "svc-1.prod_a.pem"
    key_path = pki_dir / "clients" / "svc-1.prod_a.key"
    assert written == [cert_path, key_path, pki_dir / "state.json"]
    assert mode_of(key_path) == 0o600
    issued = pki.load_issued(cert_path, key_path)
    intermediate = pki.load_issued(pki_dir / "intermediate-ca.pem",
                                   pki_dir / "intermediate-ca.key")
    assert_linked(issued.cert, intermediate.cert)
    assert issued.chain == (intermediate.cert,)
    assert issued.cert.subject.rfc4514_string() == "CN=svc-1.prod_a,O=mtls-gateway dev"
    san = ext(issued.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["svc.internal"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/svc"]
    state = json.loads((pki_dir / "state.json").read_text())
    assert int(state["issued"]["svc-1.prod_a"], 16) == issued.serial
    assert "client1" in state["issued"]


@pytest.mark.parametrize("name", ["", "a/b", "../x", "a b", "alice\n", "é", "x" * 65, "a\\b"])
def test_issue_client_bad_names(pki_dir: Path, name: str) -> None:
    with pytest.raises(PKIError) as info:
        pki.issue_client(pki_dir, name)
    assert info.value.reason == "bad_name"


def test_issue_client_longest_name(pki_dir: Path) -> None:
    pki.issue_client(pki_dir, "x" * 64)
    assert (pki_dir / "clients" / ("x" * 64 + ".pem")).exists()


def test_issue_client_duplicate(pki_dir: Path) -> None:
    with pytest.raises(PKIError) as info:
        pki.issue_client(pki_dir, "client1")
    assert info.value.reason == "name_taken"
    pki.issue_client(pki_dir, "bob")
    before = (pki_dir / "clients" / "bob.pem").read_bytes()
    with pytest.raises(PKIError):
        pki.issue_client(pki_dir, "bob")
    assert (pki_dir / "clients" / "bob.pem").read_bytes() == before


def test_issue_client_bad_san(pki_dir: Path) -> None:
    with pytest.raises(PKIError) as info:
        pki.issue_client(pki_dir, "intl", san_dns=["bücher.example"])
    assert info.value.reason == "bad_san"
    assert not (pki_dir / "clients" / "intl.pem").exists()


def test_operations_need_a_pki(tmp_path: Path) -> None:
    for call in (lambda: pki.issue_client(tmp_path, "bob"), lambda: pki.revoke(tmp_path, "bob")):
        with pytest.raises(PKIError) as info:
            call()
        assert info.value.reason == "pki_missing"


def test_damaged_state_is_refused(pki_dir: Path) -> None:
    (pki_dir / "state.json").write_text('{"format": 1, "issued": []}')
    with pytest.raises(PKIError) as info:
        pki.issue_client(pki_dir, "bob")
    assert info.value.reason == "pki_unreadable"


def test_revoke(pki_dir: Path) -> None:
    pki.issue_client(pki_dir, "bob")
    intermediate = pki.load_issued(pki_dir / "intermediate-ca.pem",
                                   pki_dir / "intermediate-ca.key")
    client1 = x509.load_pem_x509_certificate((pki_dir / "clients/client1.pem").read_bytes())
    bob = x509.load_pem_x509_certificate((pki_dir / "clients/bob.pem").read_bytes())

    written = pki.revoke(pki_dir, "client1")
    assert written == [pki_dir / "crl-intermediate.pem", pki_dir / "state.json"]
    crl = x509.load_pem_x509_crl((pki_dir / "crl-intermediate.pem").read_bytes())
    assert crl.is_signature_valid(intermediate.cert.public_key())
    assert [r.serial_number for r in crl] == [client1.serial_number]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    entry = crl.get_revoked_certificate_by_serial_number(client1.serial_number)
    assert entry.revocation_date_utc <= crl.last_update_utc < now() < crl.next_update_utc
    first_date = entry.revocation_date_utc

    pki.revoke(pki_dir, "bob")
    crl = x509.load_pem_x509_crl((pki_dir / "crl-intermediate.pem").read_bytes())
    assert sorted(r.serial_number for r in crl) == sorted([client1.serial_number,
                                                           bob.serial_number])
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    # an earlier revocation keeps its date when the list is re-signed
    assert crl.get_revoked_certificate_by_serial_number(
        client1.serial_number).revocation_date_utc == first_date
    state = json.loads((pki_dir / "state.json").read_text())
    assert [e["name"] for e in state["revoked"]] == ["client1", "bob"]
    # the root's CRL is untouched
    root_crl = x509.load_pem_x509_crl((pki_dir / "crl-root.pem").read_bytes())
    assert len(root_crl) == 0


def test_revoke_errors(pki_dir: Path) -> None:
    with pytest.raises(PKIError) as info:
        pki.revoke(pki_dir, "nobody")
    assert info.value.reason == "unknown_name"
    with pytest.raises(PKIError) as info:
        pki.revoke(pki_dir, "../state")
    assert info.value.reason == "bad_name"
    pki.revoke(pki_dir, "client1")
    with pytest.raises(PKIError) as info:
        pki.revoke(pki_dir, "client1")
    assert info.value.reason == "already_revoked"


def test_config_snippet(pki_dir: Path) -> None:
    config = tomllib.loads(pki.config_snippet(pki_dir))
    (listener,) = config["listener"]
    assert listener["name"] == "verify"
    assert listener["bind"] == "127.0.0.1:8443"
    assert listener["mtls"] == "verify"
    assert listener["trust_store"] == "dev"
    assert listener["rule"] == [{
        "action": "fixed-response",
        "fixed_response": {"status": 200, "content_type": "text/plain",
                           "body": "hello, authenticated client\n"},
    }]
    (pair,) = listener["certificates"]
    store = config["trust_store"]["dev"]
    paths = [pair["cert"], pair["key"], store["ca_bundle"], *store["crls"]]
    assert [Path(p).name for p in paths] == ["server.pem", "server.key", "ca-bundle.pem",
                                             "crl-root.pem", "crl-intermediate.pem"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths)


def test_config_snippet_quotes_odd_paths(tmp_path: Path) -> None:
    odd = tmp_path / 'we"ird\\dir'
    config = tomllib.loads(pki.config_snippet(odd))
    assert config["trust_store"]["dev"]["ca_bundle"] == str(odd.resolve() / "ca-bundle.pem")


# --- what OpenSSL thinks -------------------------------------------------------------------------

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")


def openssl_verify(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, "verify", *map(str, args)], capture_output=True, text=True,
                          timeout=30)


@needs_openssl
def test_openssl_accepts_the_chain_and_honours_revocation(pki_dir: Path) -> None:
    client = pki_dir / "clients" / "client1.pem"
    server = pki_dir / "server.pem"
    # The intermediate comes only from the client's own file: the root alone is trusted.
    ok = openssl_verify("-CAfile", pki_dir / "root-ca.pem", "-untrusted", client,
                        "-purpose", "sslclient", client)
    assert ok.returncode == 0, ok.stderr
    ok = openssl_verify("-CAfile", pki_dir / "ca-bundle.pem", "-untrusted", server,
                        "-purpose", "sslserver", server)
    assert ok.returncode == 0, ok.stderr
    # A client certificate is not a server certificate.
    wrong = openssl_verify("-CAfile", pki_dir / "ca-bundle.pem", "-purpose", "sslserver", client)
    assert wrong.returncode != 0
    # Both CRLs are well-formed and current, so a full CRL check passes before any revocation.
    ok = openssl_verify("-CAfile", pki_dir / "ca-bundle.pem", "-untrusted", client,
                        "-crl_check_all", "-CRLfile", pki_dir / "crl-root.pem",
                        "-CRLfile", pki_dir / "crl-intermediate.pem", client)
    assert ok.returncode == 0, ok.stderr

    pki.revoke(pki_dir, "client1")
    revoked = openssl_verify("-CAfile", pki_dir / "ca-bundle.pem", "-untrusted", client,
                             "-crl_check", "-CRLfile", pki_dir / "crl-intermediate.pem", client)
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    # ... and only client1.
    pki.issue_client(pki_dir, "bob")
    bob = pki_dir / "clients" / "bob.pem"
    ok = openssl_verify("-CAfile", pki_dir / "ca-bundle.pem", "-untrusted", bob,
                        "-crl_check", "-CRLfile", pki_dir / "crl-intermediate.pem", bob)
    assert ok.returncode == 0, ok.stderr


@needs_openssl
def test_openssl_accepts_a_deep_chain(tmp_path: Path) -> None:
    root, intermediates, leaf = pki.chain_of_depth(5)
    (tmp_path / "root.pem").write_bytes(root.cert_pem)
    leaf.write(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    ok = openssl_verify("-CAfile", tmp_path / "root.pem", "-untrusted", tmp_path / "leaf.pem",
                        "-purpose", "sslclient", tmp_path / "leaf.pem")
    assert ok.returncode == 0, ok.stderr
