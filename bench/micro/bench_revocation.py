"""Revoking a serial through the admin API of a running gateway with 500,000 revocations loaded.

Run with ``python -m pytest --pyargs mtls_gateway_bench.micro.bench_revocation --benchmark-enable -q -s``.
A journal of 500,000 revocations (random 20-byte serials, as CAs issue them) is written under a
state directory, a real gateway of two workers starts on it (how long the start takes with them,
and what they cost a worker in memory, are printed), and each round POSTs one new serial to
`/revocations` over a kept-alive HTTP connection to the admin listener and reads the answer: the
journal's lock, the append and its fsync, the worker's replay, the generation bump and the scan of
open connections, as an operator's call pays them. The last test prints the table.
"""
from __future__ import annotations

import http.client
import itertools
import json
import random
import subprocess
import sys
import time

import orjson
import pytest

from gateway import testing

LOADED = 500_000
TOKEN = "bench-token-0123456789abcdef"
_results: dict[str, float] = {}


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _gateway(tmp, loaded: int):
    pki = tmp / "pki"
    subprocess.run([sys.executable, "-m", "gateway", "pki", "init", str(pki)], check=True,
                   capture_output=True)
    state = tmp / "state"
    state.mkdir()
    rng = random.Random(7)
    with open(state / "revocations.jsonl", "wb") as f:
        for _ in range(loaded):
            f.write(orjson.dumps({"op": "revoke", "trust_store": "main",
                                  "serial": f"{rng.getrandbits(159) | (1 << 152):X}",
                                  "reason": "bulk", "at": 1.7e9, "by": "bench"}) + b"\n")
    token = tmp / "admin.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    verify, admin = testing.free_ports(2)
    doc = {"gateway": {"workers": 2, "state_dir": state, **testing.log_settings(tmp)},
           "admin": {"bind": f"127.0.0.1:{admin}", "token_file": token},
           "listener": [testing.listener("verify", verify, pki / "server.pem", pki / "server.key",
                                         mtls="verify", rules=[testing.fixed_response()])],
           "trust_store": {"main": {"ca_bundle": pki / "ca-bundle.pem"}}}
    config = testing.write_config(tmp / "gateway.toml", doc)
    started = time.perf_counter()
    gw = testing.GatewayProcess(config, {"verify": verify, "admin": admin}, timeout=120)
    # the ports accept once the master has bound them, before any worker is forked: the start
    # is over when a worker answers /readyz
    deadline = time.monotonic() + 120
    while not _ready(admin):
        assert time.monotonic() < deadline, "no worker became ready"
        time.sleep(0.01)
    return gw, admin, time.perf_counter() - started


def _ready(admin: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="module")
def loaded_gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("revocation")
    gw, admin, start_s = _gateway(tmp, LOADED)
    _results["start-s"] = start_s
    workers = _children(gw.pid)
    _results["worker-rss-mb"] = max(_rss_kb(p) for p in workers) / 1024 if workers else 0.0
    yield admin
    gw.stop()


def test_revoke_through_the_api(benchmark, loaded_gateway):
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    conn = http.client.HTTPConnection("127.0.0.1", loaded_gateway, timeout=10)
    serials = itertools.count(1)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def revoke_one() -> int:
        body = json.dumps({"trust_store": "main", "serial": f"{next(serials):X}", "reason": "b"})
        conn.request("POST", "/revocations", body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status

    assert revoke_one() == 201
    status = benchmark.pedantic(revoke_one, rounds=200, iterations=1, warmup_rounds=5)
    assert status == 201
    _results["revoke-ms"] = benchmark.stats.stats.median * 1e3
    _results["revoke-max-ms"] = benchmark.stats.stats.max * 1e3
    conn.request("GET", "/revocations?trust_store=main&serial=01",
                 headers={"Authorization": f"Bearer {TOKEN}"})
    listing = json.loads(conn.getresponse().read())
    assert listing["count"] == 1
    conn.close()


def test_table(capsys):
    if not _results:
        pytest.skip("no benchmark ran")
    with capsys.disabled():
        print(f"\nrevocations loaded: {LOADED:,}")
        print(f"  gateway start (2 workers):  {_results.get('start-s', 0):8.2f} s")
        print(f"  worker resident memory:     {_results.get('worker-rss-mb', 0):8.1f} MB")
        if "revoke-ms" in _results:
            print(f"  POST /revocations, median:  {_results['revoke-ms']:8.3f} ms "
                  f"(max {_results['revoke-max-ms']:.3f} ms)")
