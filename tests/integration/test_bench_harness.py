"""One tiny real run of `mtls-gateway-bench`: the gateway alone, verify mode, TLS 1.3, full and
resumed handshakes, half-second windows, driven by real `openssl s_time` processes."""
from __future__ import annotations

import shutil
import subprocess
import sys

import orjson
import pytest

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 90


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl (the load generator) is not installed")
def test_tiny_run_measures_handshakes_and_server_cpu(tmp_path):
    cmd = [sys.executable, "-m", "mtls_gateway_bench.harness",
           "--quick", "--peers", "gateway", "--modes", "verify", "--tls", "1.3", "--keys", "ecdsa",
           "--handshakes", "full,resumed", "--seconds", "0.5", "--clients", "2",
           "--no-latency", "--no-keepalive", "--out", str(tmp_path)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    doc = orjson.loads((tmp_path / "results.json").read_bytes())
    assert [p["name"] for p in doc["peers"]] == ["gateway"]
    assert doc["peers"][0]["openssl"].startswith("OpenSSL")
    rows = {r["handshake"]: r for r in doc["handshakes"]}
    assert set(rows) == {"full", "resumed"}
    for row in rows.values():
        assert (row["mode"], row["tls"], row["key"]) == ("verify", "1.3", "ecdsa")
        assert row["hs_per_s"]["median"] > 0
        assert row["cpu_us"]["median"] > 0
        assert row["bottleneck"] in ("server", "client", "both", "neither")
    assert rows["resumed"]["runs"][0]["resumed_fraction"] > 0.9
    assert rows["full"]["floor_us"] > 0 and rows["full"]["floor_multiple"] > 0
    assert doc["reference"] is None and doc["targets"] == []      # no nginx in this run: no ratios
    table = done.stdout.decode()
    assert "verify" in table and "no nginx in this run" in table
    assert (tmp_path / "results.md").exists()
