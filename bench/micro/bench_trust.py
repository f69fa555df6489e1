"""Micro benchmarks for gateway.trust: native vs pure twins (and a Python frozenset), side by side.

Run with ``python -m pytest --pyargs mtls_gateway_bench.micro.bench_trust --benchmark-enable -q -s``.
Inputs are fixed and realistic: 5,000,000 revoked serials of 20 bytes (random, as RFC 5280 / CA/Browser Forum serials
are), and a real signed DER CRL listing them, issued by an ECDSA P-256 CA; a 3-certificate client
chain (leaf, issuing CA, root) for the cache-hit path; a 100-CA issuer index and a full verdict
cache (pure only); and a whole verify handshake through the in-process core
(mtls_gateway_bench.scenarios.core_handshake) with the trust twin switched. Load time and resident memory are measured in a fresh subprocess per
structure, so one structure's garbage does not count against another. The last test prints the
table (ns per lookup, load seconds, RSS MB, cache-hit and handshake microseconds).
"""
from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import pki, trust

ENTRIES = 5_000_000
PROBES = 1000
NATIVE_REQUIRED = pytest.mark.skipif(trust.NATIVE is None, reason="gateway._trust_c is not built")
_results: dict[str, float] = {}


def _serials(n: int = ENTRIES, seed: int = 5) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(159) | (1 << 152) for _ in range(n)]     # 20-byte positive serials


def _run(benchmark, key, fn, *args, per: int = 1):
    result = benchmark(fn, *args)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and not getattr(benchmark, "disabled", False):
        _results[key] = stats.stats.median / per
    return result


@pytest.fixture(scope="module")
def serials():
    return _serials()


@pytest.fixture(scope="module")
def probes(serials):
    rng = random.Random(9)
    present = rng.sample(serials, PROBES)
    absent = [rng.getrandbits(159) | (1 << 152) for _ in range(PROBES)]
    return present, absent


@pytest.fixture(scope="module")
def structures(serials):
    built = {"frozenset": frozenset(serials)}
    if trust.NATIVE is not None:
        built["native"] = trust.NATIVE.SerialSet(serials)
    return built


# ---------------------------------------------------------------------------------------------
# Lookups in 5,000,000 serials
# ---------------------------------------------------------------------------------------------

def _lookups(s, items):
    return sum(map(s.__contains__, items))


@NATIVE_REQUIRED
def test_lookup_native_present(benchmark, structures, probes):
    assert _run(benchmark, "lookup-native-hit", _lookups, structures["native"], probes[0],
                per=PROBES) == PROBES


@NATIVE_REQUIRED
def test_lookup_native_absent(benchmark, structures, probes):
    assert _run(benchmark, "lookup-native-miss", _lookups, structures["native"], probes[1],
                per=PROBES) == 0


def test_lookup_frozenset_present(benchmark, structures, probes):
    _run(benchmark, "lookup-set-hit", _lookups, structures["frozenset"], probes[0], per=PROBES)


def test_lookup_pure_present(benchmark, serials, probes):
    s = trust.PYTHON.SerialSet(serials)
    assert _run(benchmark, "lookup-python-hit", _lookups, s, probes[0], per=PROBES) == PROBES


# ---------------------------------------------------------------------------------------------
# Load time and memory, each in a fresh process
# ---------------------------------------------------------------------------------------------

_LOAD = r"""
import json, random, sys, time, gc
from gateway import trust
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
which, n = sys.argv[1], int(sys.argv[2])
gc.collect()
before = rss()
rng = random.Random(5)
serials = [rng.getrandbits(159) | (1 << 152) for _ in range(n)]
t = time.perf_counter()
if which == "frozenset":
    s = frozenset(serials)
else:
    s = (trust.NATIVE if which == "native" else trust.PYTHON).SerialSet(serials)
t = time.perf_counter() - t
del serials
gc.collect()
print(json.dumps({"load_s": t, "rss": rss() - before, "len": len(s)}))
"""


def _load_in_subprocess(which: str, n: int = ENTRIES) -> dict:
    out = subprocess.run([sys.executable, "-c", _LOAD, which, str(n)], capture_output=True,
                         text=True, check=True, timeout=600)
    return json.loads(out.stdout)


@pytest.mark.parametrize("which", ["native", "python", "frozenset"])
def test_load_and_memory(benchmark, which):
    if which == "native" and trust.NATIVE is None:
        pytest.skip("gateway._trust_c is not built")
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    r = _load_in_subprocess(which)
    assert r["len"] == ENTRIES
    _results[f"load-{which}"] = r["load_s"]
    _results[f"rss-{which}"] = r["rss"]


# ---------------------------------------------------------------------------------------------
# A real 5,000,000-entry CRL: what cryptography spends parsing it, separately
# ---------------------------------------------------------------------------------------------

def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _der_len(len(body)) + body


def big_crl_der(issuer: pki.Issued, serials: list[int]) -> bytes:
    """A signed DER CRL listing `serials` (20-byte positive), built directly: cryptography's
    builder is quadratic in the number of entries."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    utc = lambda t: _tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())   # noqa: E731
    when = utc(now - timedelta(days=1))
    entries = b"".join(b"\x30\x25\x02\x14" + s.to_bytes(20, "big") + when for s in serials)
    alg = _tlv(0x30, _tlv(0x06, bytes.fromhex("2a8648ce3d040302")))    # ecdsa-with-SHA256
    tbs = _tlv(0x30, _tlv(0x02, b"\x01") + alg + issuer.cert.subject.public_bytes()
               + utc(now - timedelta(minutes=5)) + utc(now + timedelta(days=7))
               + _tlv(0x30, entries))
    sig = issuer.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + alg + _tlv(0x03, b"\x00" + sig))


@pytest.fixture(scope="module")
def big_crl(serials):
    root = pki.make_root("Bench Root")
    der = big_crl_der(root, serials)
    return root, der


def test_crl_parse_cryptography(benchmark, big_crl, serials):
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    root, der = big_crl
    t = time.perf_counter()
    crl = x509.load_der_x509_crl(der)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    assert crl.is_signature_valid(root.cert.public_key())
    t_sig = time.perf_counter() - t
    t = time.perf_counter()
    got = trust.crl_serials(crl)
    t_iter = time.perf_counter() - t
    assert len(got) == ENTRIES and got[0] == serials[0]
    _results.update({"crl-bytes": len(der), "crl-load": t_load, "crl-signature": t_sig,
                     "crl-serials": t_iter})
    for impl in (trust.NATIVE, trust.PYTHON):
        if impl is None:
            continue
        t = time.perf_counter()
        store = trust.TrustStore("bench", [root.cert], [crl], implementation=impl)
        _results[f"store-{impl.name}"] = time.perf_counter() - t
        assert store.is_revoked(((root.cert.subject.public_bytes(), serials[123]),)) is not None


# ---------------------------------------------------------------------------------------------
# The cache-hit path of a returning client: chain key (SHA-256 of ~1.5 KB) + LRU lookup
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain_and_verifiers():
    root = pki.make_root("Hit Root")
    inter = pki.make_intermediate(root, "Hit Issuing CA")
    leaf = pki.make_client(inter, "client-042", san_dns=["client-042.example.org"])
    chain = tuple(c.public_bytes(serialization.Encoding.DER) for c in (leaf.cert, inter.cert,
                                                                         root.cert))
    verifiers = {}
    for impl in (trust.NATIVE, trust.PYTHON):
        if impl is not None:
            v = trust.Verifier(trust.TrustStore("hit", [root.cert], implementation=impl))
            assert v.verify_der(chain).ok
            verifiers[impl.name] = v
    return chain, verifiers


@NATIVE_REQUIRED
def test_cache_hit_native(benchmark, chain_and_verifiers):
    chain, v = chain_and_verifiers
    assert _run(benchmark, "hit-native", v["native"].verify_der, chain).ok


def test_cache_hit_pure(benchmark, chain_and_verifiers):
    chain, v = chain_and_verifiers
    assert _run(benchmark, "hit-python", v["python"].verify_der, chain).ok


@NATIVE_REQUIRED
def test_chain_key_native(benchmark, chain_and_verifiers):
    _run(benchmark, "key-native", trust.NATIVE.chain_key, chain_and_verifiers[0])


def test_chain_key_pure(benchmark, chain_and_verifiers):
    _run(benchmark, "key-python", trust.PYTHON.chain_key, chain_and_verifiers[0])


# ---------------------------------------------------------------------------------------------
# The issuer index and the verdict cache alone, per call (a 100-CA bundle; a full 16,384-entry LRU).
# Pure only since their native twins went (bench/NATIVE.md, "Trust store", has both figures).
# ---------------------------------------------------------------------------------------------

def _issuer_probe():
    """An index of 100 CAs (subject DER, key id), and the 1000 (issuer, key id) lookups a verify
    path makes: each names a CA of the bundle, every tenth with the key id of another one."""
    rng = random.Random(3)
    entries = [(b"\x30\x20" + rng.randbytes(30), rng.randbytes(20), f"ca{i}") for i in range(100)]
    index = trust.IssuerIndex(entries)
    lookups = [(entries[j][0], entries[j][1] if i % 10 else entries[(j + 1) % 100][1])
               for i, j in enumerate(rng.choices(range(100), k=PROBES))]
    return index, lookups


def _issuer_lookups(index, lookups):
    lookup = index.lookup
    return sum(len(lookup(s, k)) for s, k in lookups)


def test_issuer_lookup(benchmark):
    index, lookups = _issuer_probe()
    assert _run(benchmark, "issuer-python", _issuer_lookups, index, lookups, per=PROBES) == 900


def _cache_full():
    cache = trust.VerdictCache(trust.DEFAULT_CACHE_ENTRIES)
    keys = [hashlib.sha256(b"%d" % i).digest() for i in range(trust.DEFAULT_CACHE_ENTRIES)]
    for k in keys:
        cache.put(k, object(), 1e12)
    return cache, random.Random(4).sample(keys, PROBES)


def _cache_gets(cache, keys):
    get = cache.get
    return sum(get(k, 0.0) is not None for k in keys)


def _cache_puts(cache, keys):
    put = cache.put
    for k in keys:
        put(k, k, 1e12)


def test_verdict_cache_get(benchmark):
    cache, keys = _cache_full()
    assert _run(benchmark, "cache-get-python", _cache_gets, cache, keys, per=PROBES) == PROBES


def test_verdict_cache_put(benchmark):
    """New keys into a full cache: each put evicts the least recently used entry."""
    cache, _ = _cache_full()
    fresh = [hashlib.sha256(b"new %d" % i).digest() for i in range(PROBES)]
    _run(benchmark, "cache-put-python", _cache_puts, cache, fresh, per=PROBES)


# ---------------------------------------------------------------------------------------------
# End to end: a full verify handshake through the in-process core, the trust twin switched
# ---------------------------------------------------------------------------------------------

E2E_REPEATS = 7


def _handshake_variants() -> dict:
    """The trust implementations a runtime can be built with (None: the pure one, chosen by
    select("auto") when no native twin is there)."""
    return {"native": trust.NATIVE, "pure": None} if trust.NATIVE is not None else {"pure": None}


def test_handshake_trust_twins(benchmark, monkeypatch, tmp_path):
    """core_handshake's full TLS 1.3 verify handshake (the chain cache on, native core),
    E2E_REPEATS times per variant, interleaved; each repeat's fastest of 3 rounds of 400
    connections, the median of those is kept (server side, us per connection)."""
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    from ..scenarios import core_handshake
    from gateway import conn
    core = "native" if conn.NATIVE is not None else "python"
    variants = _handshake_variants()
    fastest: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(E2E_REPEATS):
        for name, impl in variants.items():
            monkeypatch.setattr(trust, "NATIVE", impl)
            rounds = core_handshake.run(core, "verify", False, 3, 400, 0, tmp_path, tmp_path, "1.3")
            fastest[name].append(min(rounds))
    monkeypatch.undo()
    for name, values in fastest.items():
        values.sort()
        _results[f"e2e-{name}"] = values[len(values) // 2]
        _results[f"e2e-{name}-range"] = (values[0], values[-1])


# ---------------------------------------------------------------------------------------------
# What OpenSSL's own chain work costs when it runs beside the gateway's verdict
# ---------------------------------------------------------------------------------------------

def test_openssl_chain_work(benchmark):
    """X509_verify_cert over leaf -> issuing CA (the issuing CA trusted, PARTIAL_CHAIN): what
    OpenSSL still does in a handshake whose client sends its intermediate (chain building, purpose
    and extension checks, one signature), through pyOpenSSL, so a few us of wrapping included."""
    from OpenSSL import crypto
    root = pki.make_root("Chain Root")
    inter = pki.make_intermediate(root, "Chain Issuing CA")
    leaf = crypto.X509.from_cryptography(pki.make_client(inter, "chain-client").cert)
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(inter.cert))
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    _run(benchmark, "openssl-chain", lambda: crypto.X509StoreContext(store, leaf).verify_certificate())


def test_table(capsys):
    """Print the results; native lookups must beat the pure twin and a 5M load take seconds."""
    if not _results:
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    r = _results
    mb = 2 ** 20
    lines = [f"revoked serials: {ENTRIES:,} x 20 bytes; {PROBES} probes per round"]

    def line(label, key, scale, unit):
        if key in r:
            lines.append(f"  {label:<44} {r[key] * scale:10.2f} {unit}")

    line("lookup, native SerialSet, present", "lookup-native-hit", 1e9, "ns")
    line("lookup, native SerialSet, absent", "lookup-native-miss", 1e9, "ns")
    line("lookup, pure SerialSet, present", "lookup-python-hit", 1e9, "ns")
    line("lookup, Python frozenset of ints, present", "lookup-set-hit", 1e9, "ns")
    line("load from a list of ints, native", "load-native", 1, "s")
    line("load from a list of ints, pure", "load-python", 1, "s")
    line("load from a list of ints, frozenset", "load-frozenset", 1, "s")
    line("RSS after load, native", "rss-native", 1 / mb, "MB")
    line("RSS after load, pure", "rss-python", 1 / mb, "MB")
    line("RSS after load, frozenset (holds the ints)", "rss-frozenset", 1 / mb, "MB")
    line("CRL DER size", "crl-bytes", 1 / mb, "MB")
    line("cryptography load_der_x509_crl", "crl-load", 1, "s")
    line("cryptography CRL signature check", "crl-signature", 1, "s")
    line("cryptography: list every serial_number", "crl-serials", 1, "s")
    line("TrustStore from the parsed CRL, native", "store-native", 1, "s")
    line("TrustStore from the parsed CRL, pure", "store-python", 1, "s")
    line("cache hit (chain key + lookup), native", "hit-native", 1e6, "us")
    line("cache hit (chain key + lookup), pure", "hit-python", 1e6, "us")
    line("chain key alone (3 certs), native", "key-native", 1e6, "us")
    line("chain key alone (3 certs), pure", "key-python", 1e6, "us")
    line("issuer index lookup (100 CAs), pure only", "issuer-python", 1e9, "ns")
    line("verdict cache get, hit (16,384 entries), pure only", "cache-get-python", 1e9, "ns")
    line("verdict cache put, evicting, pure only", "cache-put-python", 1e9, "ns")
    line("OpenSSL X509_verify_cert leaf->issuing CA", "openssl-chain", 1e6, "us")
    for key in sorted(k for k in r if k.startswith("e2e-") and not k.endswith("-range")):
        low, high = r[key + "-range"]
        lines.append(f"  {'full verify handshake, trust ' + key[4:]:<70} {r[key]:8.1f} us "
                     f"({low:.1f}-{high:.1f})")
    if "lookup-native-hit" in r and "lookup-python-hit" in r:
        lines.append(f"  lookup native vs pure: {r['lookup-python-hit'] / r['lookup-native-hit']:.1f}x")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    if "lookup-native-hit" in r and "lookup-python-hit" in r:
        assert r["lookup-native-hit"] < r["lookup-python-hit"]
    if "load-native" in r:
        assert r["load-native"] < 10
