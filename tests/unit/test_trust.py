"""gateway.trust: serial sets, issuer index, verdict cache and verifier; pure and native twins."""
from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import headers, pki, trust
from gateway.errors import NativeUnavailable
from gateway.identity import VerifyStatus
from gateway.trust import MAX_SERIAL_BYTES, TrustStore, Verifier

from .conftest import needs_native_trust

N, P = trust.NATIVE, trust.PYTHON


@pytest.fixture(scope="module")
def ca():
    root = pki.make_root("Trust Root")
    inter = pki.make_intermediate(root, "Trust Intermediate")
    return root, inter


def _der(issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------------
# SerialSet
# ---------------------------------------------------------------------------------------------

def test_serial_set_membership(trust_impl):
    s = trust_impl.SerialSet([5, 3, 3, 1, 2 ** 100, -4, 2 ** 200, 0])
    assert len(s) == 7                       # the repeated 3 counts once
    for x in (0, 1, 3, 5, 2 ** 100, -4, 2 ** 200):
        assert x in s
    for x in (2, 4, 6, -1, 2 ** 100 + 1, 2 ** 150, 2 ** 200 + 1, 2 ** 159):
        assert x not in s
    assert s.width == 13 and s.odd == frozenset({-4, 2 ** 200})
    assert s.keys == b"".join(x.to_bytes(13, "big") for x in (0, 1, 3, 5, 2 ** 100))
    with pytest.raises(TypeError):
        trust_impl.SerialSet(["1"])
    with pytest.raises(TypeError):
        "1" in s  # noqa: B015


def test_serial_set_edges(trust_impl):
    empty = trust_impl.SerialSet([])
    assert len(empty) == 0 and 0 not in empty and 1 not in empty and empty.keys == b""
    one = trust_impl.SerialSet([7, 7, 7])
    assert len(one) == 1 and 7 in one and 6 not in one and 8 not in one
    widest = 2 ** (8 * MAX_SERIAL_BYTES) - 1
    s = trust_impl.SerialSet([widest, 1])
    assert s.width == MAX_SERIAL_BYTES and widest in s and 1 in s and widest - 1 not in s
    assert widest + 1 not in s and s.odd == frozenset()
    # serials sharing a long common prefix (a CA's fixed prefix and a counter)
    base = 0xABCDEF0123456789 << 64
    s = trust_impl.SerialSet([base + i for i in range(0, 20000, 2)])
    assert all(base + i in s for i in range(0, 20000, 2))
    assert not any(base + i in s for i in range(1, 20000, 2))
    assert base - 1 not in s and (base ^ (1 << 120)) not in s


def test_serial_set_many_random(trust_impl):
    rng = random.Random(7)
    serials = [rng.getrandbits(rng.choice((16, 64, 128, 159))) for _ in range(50000)]
    s = trust_impl.SerialSet(serials)
    assert len(s) == len(set(serials))
    assert all(x in s for x in serials[::7])
    present = set(serials)
    probes = [rng.getrandbits(rng.choice((16, 64, 128, 159))) for _ in range(5000)]
    assert [p in s for p in probes] == [p in present for p in probes]


@needs_native_trust
@settings(max_examples=300, deadline=None)
@given(serials=st.lists(st.one_of(st.integers(-2 ** 70, 2 ** 70),
                                  st.integers(0, 2 ** 160 - 1),
                                  st.integers(2 ** 160, 2 ** 200),
                                  st.integers(0, 300)), max_size=200),
       probes=st.lists(st.integers(-2 ** 170, 2 ** 170), max_size=50))
def test_serial_set_twins_identical(serials, probes):
    n, p = N.SerialSet(serials), P.SerialSet(serials)
    assert n.keys == p.keys and n.width == p.width and n.odd == p.odd and len(n) == len(p)
    present = set(serials)
    for x in serials + probes + [x + 1 for x in serials]:
        assert (x in n) == (x in p) == (x in present)


# ---------------------------------------------------------------------------------------------
# VerdictCache and IssuerIndex (pure only), chain_key
# ---------------------------------------------------------------------------------------------

def test_verdict_cache_lru_expiry_generation():
    c = trust.VerdictCache(2)
    c.put(b"a", "A", 10.0)
    c.put(b"b", "B", 10.0)
    assert c.get(b"a", 5.0) == "A"          # a is now the most recent
    c.put(b"c", "C", 10.0)                  # evicts b
    assert c.lru_keys() == [b"c", b"a"] and len(c) == 2
    assert c.get(b"b", 5.0) is None
    assert c.get(b"a", 10.0) is None        # expired at 10.0: removed
    assert len(c) == 1
    c.put(b"c", "C2", 20.0)                 # replace in place
    assert c.get(b"c", 15.0) == "C2"
    c.invalidate()                          # every entry stored so far is a miss
    assert c.get(b"c", 15.0) is None and len(c) == 0
    assert (c.hits, c.misses) == (2, 3)
    off = trust.VerdictCache(0)
    off.put(b"x", 1, 10.0)
    assert off.get(b"x", 0.0) is None and len(off) == 0
    with pytest.raises(ValueError):
        trust.VerdictCache(-1)


def test_verdict_cache_keeps_the_same_object():
    c = trust.VerdictCache(4)
    value = object()
    c.put("fp", value, 1e12)
    assert c.get("fp", 0.0) is value


def test_issuer_index_filters_by_key_identifier():
    idx = trust.IssuerIndex([(b"s", b"k1", "A"), (b"s", None, "B"), (b"s", b"k2", "C"),
                             (b"t", b"k9", "T")])
    assert idx.lookup(b"s", None) == ("A", "B", "C")
    assert idx.lookup(b"s", b"k1") == ("A", "B")
    assert idx.lookup(b"s", b"k3") == ("B",)
    assert idx.lookup(b"t", b"k9") == ("T",)
    assert idx.lookup(b"u", None) == ()
    assert len(idx) == 2


@needs_native_trust
@settings(max_examples=200)
@given(chain=st.lists(st.binary(max_size=3000), max_size=5))
def test_chain_key_twins_identical(chain):
    assert N.chain_key(chain) == P.chain_key(chain) == N.chain_key(tuple(chain))


def test_set_native(monkeypatch):
    try:
        assert trust.set_native("off") == "python" and trust.impl is P
        assert TrustStore("x", []).impl is P
        if N is not None:
            assert trust.set_native("on") == "native" and trust.chain_key is N.chain_key
            assert TrustStore("x", []).impl is N
            assert trust.set_native("auto") == "native"
        monkeypatch.setattr(trust, "NATIVE", None)
        assert trust.set_native("auto") == "python"
        with pytest.raises(NativeUnavailable):
            trust.set_native("on")
        with pytest.raises(ValueError):
            trust.set_native("maybe")
    finally:
        monkeypatch.undo()
        trust.set_native("auto")


# ---------------------------------------------------------------------------------------------
# TrustStore and Verifier
# ---------------------------------------------------------------------------------------------

def test_crl_and_deny_list_and_generation(trust_impl, ca):
    root, inter = ca
    alice, bob = pki.make_client(inter, "alice"), pki.make_client(inter, "bob")
    store = TrustStore("t", [root.cert, inter.cert], [pki.make_crl(inter, [bob.cert.serial_number])])
    assert store.impl is trust_impl
    v = Verifier(store)
    good = v.verify_der((_der(alice),))
    # the bundle's intermediate is where the path stops, and its own revocation by the root counts
    assert good.ok and good.path_serials == (
        (inter.cert.subject.public_bytes(), alice.cert.serial_number),
        (root.cert.subject.public_bytes(), inter.cert.serial_number))
    by_root = TrustStore("r", [root.cert, inter.cert], [pki.make_crl(root, [inter.cert.serial_number])])
    assert Verifier(by_root).verify_der((_der(alice),)).status is VerifyStatus.CRL_HIT
    assert v.verify_der((_der(bob),)).status is VerifyStatus.CRL_HIT
    assert v.verify_der((_der(alice),)) is good and v.cache.hits == 1
    # a deny-list change: the cached verdict is stale at once, and the new decision is taken
    g = store.generation
    store.deny_serials = frozenset([alice.cert.serial_number])
    assert store.generation == g + 1 and v.cache.generation == g + 1
    assert v.verify_der((_der(alice),)).status is VerifyStatus.REJECTED
    # a new CRL without bob: bob's cached refusal is stale too
    store.update_revocation(crls=[pki.make_crl(inter, [])], deny_serials=frozenset())
    assert v.verify_der((_der(bob),)).ok and v.verify_der((_der(alice),)).ok
    # a CRL from elsewhere is refused and changes nothing
    other = pki.make_root("Elsewhere")
    with pytest.raises(ValueError):
        store.update_revocation(crls=[pki.make_crl(other, [alice.cert.serial_number])])
    assert v.verify_der((_der(alice),)).ok


def test_resumption_index_rechecks_revocation(trust_impl, ca):
    root, inter = ca
    carol = pki.make_client(inter, "carol")
    store = TrustStore("t", [root.cert, inter.cert])
    v = Verifier(store)
    first = v.verify_der((_der(carol), _der(inter)))
    v.cache.put_session(b"s" * 32, first, first.expires_at)
    known = v.cache.by_session(b"s" * 32, 0.0)
    assert known is first and v.recheck(known) is first
    store.deny_serials = frozenset([carol.cert.serial_number])
    known = v.cache.by_session(b"s" * 32, 0.0)      # a success survives the change,
    assert v.recheck(known).status is VerifyStatus.REJECTED    # the recheck asks the new data


def test_sessions_of_one_leaf_keep_their_own_chains(trust_impl, ca):
    """The resumption index is keyed by session, never by leaf: a later chain of the same leaf
    does not replace an earlier session's (the leaf index it replaces did, last writer wins)."""
    root, inter = ca
    frank = pki.make_client(inter, "frank")
    v = Verifier(TrustStore("t", [root.cert, inter.cert]))
    long = v.verify_der((_der(frank), _der(inter)))
    short = v.verify_der((_der(frank),))
    assert long.ok and short.ok and long.identity.fingerprint == short.identity.fingerprint
    v.cache.put_session(b"a" * 32, long, long.expires_at)
    v.cache.put_session(b"b" * 32, short, short.expires_at)
    assert v.cache.by_session(b"a" * 32, 0.0).identity.chain_der == (_der(frank), _der(inter))
    assert v.cache.by_session(b"b" * 32, 0.0).identity.chain_der == (_der(frank),)
    assert v.cache.by_session(b"c" * 32, 0.0) is None
    # an entry lives until the session expires (never past its verdict), failures are not kept
    v.cache.put_session(b"d" * 32, long, 100.0)
    assert v.cache.by_session(b"d" * 32, 99.0) is long and v.cache.by_session(b"d" * 32, 100.0) is None
    bad = v.verify_der((_der(pki.make_client(pki.make_root("Other"), "eve")),))
    v.cache.put_session(b"e" * 32, bad, bad.expires_at)
    assert not bad.ok and v.cache.by_session(b"e" * 32, 0.0) is None


def test_cached_identity_keeps_its_encoded_headers(trust_impl, ca):
    root, inter = ca
    dave = pki.make_client(inter, "dave", san_dns=["dave.example"])
    v = Verifier(TrustStore("t", [root.cert, inter.cert]))
    chain = (_der(dave), _der(inter))
    ident = v.verify_der(chain).identity
    block = headers.identity_block(ident, True, ("alb", "xfcc"))
    again = v.verify_der(chain).identity
    assert again is ident and headers.identity_block(again, True, ("alb", "xfcc")) is block


def test_cache_is_bounded(trust_impl, ca):
    root, inter = ca
    store = TrustStore("t", [root.cert, inter.cert])
    v = Verifier(store)
    v.cache = trust.ChainCache(3)
    clients = [pki.make_client(inter, f"c{i}") for i in range(5)]
    for c in clients:
        v.verify_der((_der(c),))
    assert len(v.cache) == 3
    v.verify_der((_der(clients[0]),))
    assert v.cache.misses == 6


def test_issuer_with_same_name_other_key(trust_impl, ca):
    """Two CAs share a subject (a key rollover): the authority key id picks the right one first,
    and a chain signed by neither is still refused."""
    root, inter = ca
    twin_root = pki.make_root("Trust Root")                 # same name, another key
    store = TrustStore("t", [twin_root.cert, root.cert])
    assert store.issuers_of(inter.cert) == (root.cert,)
    v = Verifier(store)
    erin = pki.make_client(inter, "erin")
    assert v.verify_der((_der(erin), _der(inter))).ok
    stranger = pki.make_intermediate(pki.make_root("Trust Root"), "Trust Intermediate")
    mallory = pki.make_client(stranger, "mallory")
    assert v.verify_der((_der(mallory), _der(stranger))).status is VerifyStatus.UNTRUSTED


# ---------------------------------------------------------------------------------------------
# The twins decide identically on arbitrary certificates
# ---------------------------------------------------------------------------------------------

_SPECIAL = ',+"\\<>;#= \r\n\t\0\x7f' + "é€\U0001F600"
_TEXT = st.text(alphabet=st.sampled_from(list("abcXYZ019-._") + list(_SPECIAL)), min_size=1,
                max_size=20)
_PRINTABLE = st.text(alphabet="abcXYZ019 '()+,-./:=?", min_size=1, max_size=20)   # X.520 serialNumber
_KEY = ec.generate_private_key(ec.SECP256R1())


@st.composite
def _client_cert(draw, inter):
    now = datetime.now(timezone.utc)
    start = now + timedelta(days=draw(st.integers(-30, 2)))
    end = start + timedelta(days=draw(st.integers(-1, 30)))
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, draw(_TEXT))]
    if draw(st.booleans()):
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, draw(_TEXT)))
    if draw(st.booleans()):
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, draw(_PRINTABLE)))
    issuer_name = inter.cert.subject if draw(st.booleans()) else x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, draw(_TEXT))])
    b = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(issuer_name)
         .public_key(_KEY.public_key()).serial_number(draw(st.integers(1, 2 ** 159 - 1)))
         .not_valid_before(start).not_valid_after(max(end, start + timedelta(seconds=1))))
    eku = draw(st.sampled_from([None, ExtendedKeyUsageOID.CLIENT_AUTH,
                                ExtendedKeyUsageOID.SERVER_AUTH]))
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    dns = draw(st.lists(st.from_regex(r"[a-z0-9]{1,8}(\.[a-z]{1,5}){0,2}", fullmatch=True),
                        max_size=2))
    uris = draw(st.lists(st.sampled_from(["spiffe://x/a", "spiffe://x/a;b=c,d", "urn:x:y"]),
                         max_size=2))
    if dns or uris:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(d) for d in dns] + [x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False)
    cert = b.sign(inter.key if draw(st.booleans()) else _KEY, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER), cert.serial_number


@needs_native_trust
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_twins_decide_identically_on_arbitrary_certificates(ca, data):
    root, inter = ca
    der, serial = data.draw(_client_cert(inter))
    revoke = data.draw(st.booleans())
    crls = [pki.make_crl(inter, [serial] if revoke else [])]
    deny = frozenset([serial]) if data.draw(st.booleans()) else frozenset()
    chain = (der, _der(inter)) if data.draw(st.booleans()) else (der,)
    verdicts = []
    now = time.time()
    for implementation in (N, P):
        store = TrustStore("t", [root.cert, inter.cert], crls, deny, implementation=implementation)
        verdicts.append(Verifier(store).verify_der(chain, now))
    a, b = verdicts
    assert (a.status, a.detail, a.path_serials) == (b.status, b.detail, b.path_serials)
    assert a.expires_at == b.expires_at
    if a.identity is not None:
        ia, ib = a.identity, b.identity
        assert (ia.fingerprint, ia.serial, ia.subject, ia.issuer, ia.not_before, ia.not_after,
                ia.san_dns, ia.san_uri, ia.chain_der, ia.status) == \
               (ib.fingerprint, ib.serial, ib.subject, ib.issuer, ib.not_before, ib.not_after,
                ib.san_dns, ib.san_uri, ib.chain_der, ib.status)
        ok = a.ok
        assert headers.identity_block(ia, ok, headers.STYLES) == \
            headers.identity_block(ib, ok, headers.STYLES)
    else:
        assert b.identity is None


# ---------------------------------------------------------------------------------------------
# Reading a CRL's serials from its DER (native) equals cryptography's reading (pure)
# ---------------------------------------------------------------------------------------------

def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = bytes((n,)) if n < 0x80 else \
        bytes((0x80 | ((n.bit_length() + 7) // 8),)) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag,)) + length + body


def _integer(value: int) -> bytes:
    # DER's minimal two's complement: -128 is one byte (0x80), 128 two (0x00 0x80)
    bits = value.bit_length() if value >= 0 else (~value).bit_length()
    return _tlv(0x02, value.to_bytes(bits // 8 + 1, "big", signed=True))


def crl_der(issuer, serials, *, next_update=True, extensions=True, entry_extensions=()) -> bytes:
    """A signed DER CRL listing `serials` in order (any int, duplicates kept), built by hand so
    that zero, negative and over-wide serials can be listed as some CAs do."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    utc = lambda t: _tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())   # noqa: E731
    alg = _tlv(0x30, _tlv(0x06, bytes.fromhex("2a8648ce3d040302")))
    ext = _tlv(0x30, _tlv(0x30, _tlv(0x06, bytes.fromhex("551d15"))
                          + _tlv(0x04, _tlv(0x0A, b"\x01"))))            # reasonCode keyCompromise
    entries = b"".join(_tlv(0x30, _integer(s) + utc(now - timedelta(days=1))
                            + (ext if i in entry_extensions else b""))
                       for i, s in enumerate(serials))
    body = (_integer(1) + alg + issuer.cert.subject.public_bytes() + utc(now - timedelta(hours=1))
            + (utc(now + timedelta(days=7)) if next_update else b"")
            + (_tlv(0x30, entries) if serials else b"")
            + (_tlv(0xA0, _tlv(0x30, _tlv(0x30, _tlv(0x06, bytes.fromhex("551d14"))
                                          + _tlv(0x04, _integer(5))))) if extensions else b""))
    tbs = _tlv(0x30, body)
    sig = issuer.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + alg + _tlv(0x03, b"\x00" + sig))


@pytest.fixture(scope="module")
def crl_issuer():
    return pki.make_root("CRL Issuer")


def test_serials_from_crl_edges(trust_impl, crl_issuer):
    for serials, kw in [([], {}), ([], {"next_update": False, "extensions": False}),
                        ([0, 1, 127, 128, 255, 256, 2 ** 159, 7, 7], {"extensions": False}),
                        ([-5, 2 ** 170, 3], {"next_update": False}),
                        ([-128, -129, -256, -32768, 128, -1], {}),
                        ([9, 10], {"entry_extensions": (1,)})]:
        crl = x509.load_der_x509_crl(crl_der(crl_issuer, serials, **kw))
        assert crl.is_signature_valid(crl_issuer.cert.public_key())
        s = trust_impl.SerialSet.from_crl(crl)
        reference = trust_impl.SerialSet([r.serial_number for r in crl])
        assert (s.keys, s.width, s.odd, len(s)) == \
            (reference.keys, reference.width, reference.odd, len(reference))
        assert all(x in s for x in serials) and len(s) == len(set(serials))


@needs_native_trust
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(serials=st.lists(st.one_of(st.integers(0, 2 ** 64), st.integers(2 ** 150, 2 ** 168),
                                  st.integers(-2 ** 40, -1)), max_size=60),
       next_update=st.booleans(), extensions=st.booleans(),
       entry_extensions=st.sets(st.integers(0, 59), max_size=5))
def test_serials_from_crl_twins_identical(crl_issuer, serials, next_update, extensions,
                                          entry_extensions):
    der = crl_der(crl_issuer, serials, next_update=next_update, extensions=extensions,
                  entry_extensions=entry_extensions)
    crl = x509.load_der_x509_crl(der)
    n, p = N.SerialSet.from_crl(crl), P.SerialSet.from_crl(crl)
    assert (n.keys, n.width, n.odd, len(n)) == (p.keys, p.width, p.odd, len(p))
