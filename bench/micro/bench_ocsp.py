"""A full verify handshake with OCSP on and a warm answer cache, beside the same with OCSP off.

Run with ``python -m pytest --pyargs mtls_gateway_bench.micro.bench_ocsp --benchmark-enable -q -s``.
Both sides are the in-process handshake of mtls_gateway_bench.scenarios.core_handshake (a real TLS
1.3 client over memory BIOs, the native core, the verified-chain cache on, one request, close),
the server's side timed; the OCSP side has the trust store's checker in "leaf" mode holding a good
answer for the client's certificate, so each handshake pays the lookup by certificate ID, not a
fetch. The two alternate, round after round, and the last test prints the ratio of their medians.
The lookup alone (`OCSPChecker.check` on a cached answer) is timed too.
"""
from __future__ import annotations

import statistics
import time

import pytest

from gateway.identity import VerifyStatus
from gateway.ocsp import Answer, OCSPChecker
from gateway.trust import Verdict

ROUNDS = 9
CONNECTIONS = 300
_results: dict[str, float] = {}
_checkers: list[OCSPChecker] = []


def _warm(runtime, pki) -> None:
    from cryptography import x509
    store = runtime.trust_stores["bench"]
    checker = OCSPChecker(store, mode="leaf", timeout_s=2.0)
    leaf = x509.load_pem_x509_certificates(pki.client_cert.read_bytes())[0]
    checker.remember((leaf.issuer.public_bytes(), leaf.serial_number),
                     Answer(None, "good", time.time() + 86400))
    store.ocsp = checker
    _checkers.append(checker)


def test_handshake_with_and_without_ocsp(benchmark, tmp_path):
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    from ..scenarios import core_handshake
    off, on = [], []
    for _ in range(ROUNDS):
        off += core_handshake.run("native", "verify", False, 1, CONNECTIONS, 0, tmp_path, tmp_path, "1.3")
        on += core_handshake.run("native", "verify", False, 1, CONNECTIONS, 0, tmp_path, tmp_path, "1.3",
                                 prepare=_warm)
    # every OCSP-side handshake was decided by the cached answer: no fetch, no miss
    assert all(c.stats.hits >= CONNECTIONS and c.stats.fetches == 0 for c in _checkers), \
        [c.stats.as_dict() for c in _checkers]
    _results["off-us"] = statistics.median(off)
    _results["on-us"] = statistics.median(on)
    benchmark.pedantic(lambda: None, rounds=1)


def test_cached_lookup(benchmark, tmp_path):
    from gateway import pki
    from gateway.identity import identity_from_certificates
    root = pki.make_root("R")
    inter = pki.make_intermediate(root, "I")
    leaf = pki.make_client(inter, "c")
    from gateway.trust import TrustStore
    store = TrustStore("s", [root.cert, inter.cert])
    checker = OCSPChecker(store, mode="leaf")
    key = (inter.cert.subject.public_bytes(), leaf.cert.serial_number)
    checker.remember(key, Answer(None, "good", time.time() + 86400))
    identity = identity_from_certificates([leaf.cert], (leaf.der,), VerifyStatus.SUCCESS)
    verdict = Verdict(VerifyStatus.SUCCESS, identity, time.time() + 3600, "", (key,))
    now = time.time()
    assert benchmark(checker.check, verdict, now) is None
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        _results["lookup-us"] = stats.stats.median * 1e6


def test_table(capsys):
    if "off-us" not in _results:
        pytest.skip("no benchmark ran")
    with capsys.disabled():
        print(f"\nfull TLS 1.3 verify handshake, server side, median of {ROUNDS} alternating rounds "
              f"of {CONNECTIONS}:")
        print(f"  OCSP off:              {_results['off-us']:8.1f} us")
        print(f"  OCSP on, warm cache:   {_results['on-us']:8.1f} us  "
              f"(x{_results['on-us'] / _results['off-us']:.3f})")
        if "lookup-us" in _results:
            print(f"  the cached lookup:     {_results['lookup-us']:8.3f} us")
