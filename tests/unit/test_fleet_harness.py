"""The fleet harness's pure parts: HAProxy's configuration, its stats, what outcomes add up to."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from mtls_gateway_bench.harness import fleet as F

SERVERS = [("gw0", 9000, 9100), ("gw1", 9001, 9101)]


@pytest.mark.parametrize("balance", F.BALANCES)
def test_haproxy_config_is_tcp_with_health_checks_on_readyz(tmp_path, balance):
    text = F.haproxy_config(8443, SERVERS, balance=balance, stats_socket=tmp_path / "s.sock")
    lines = [l.strip() for l in text.splitlines()]
    assert "mode tcp" in lines and f"balance {balance}" in lines
    assert ("hash-type consistent" in lines) == (balance == "source")
    assert "option httpchk GET /readyz" in lines and "option redispatch 1" in lines
    assert "server gw0 127.0.0.1:9000 port 9100" in lines
    assert "server gw1 127.0.0.1:9001 port 9101" in lines
    if shutil.which("haproxy"):
        cfg = tmp_path / "h.cfg"
        cfg.write_text(text)
        r = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_haproxy_config_refuses_an_unknown_balance(tmp_path):
    with pytest.raises(ValueError, match="balance"):
        F.haproxy_config(8443, SERVERS, balance="leastconn", stats_socket=tmp_path / "s")


def test_parse_stat_reads_the_backend_servers_only():
    csv = ("# pxname,svname,qcur,status,weight\n"
           "fleet,FRONTEND,,OPEN,\n"
           "gateways,gw0,0,UP,1\n"
           "gateways,gw1,0,DOWN 1/2,1\n"
           "gateways,BACKEND,0,UP,1\n"
           "other,gw9,0,UP,1\n")
    assert F.parse_stat(csv) == {"gw0": "UP", "gw1": "DOWN"}
    assert F.parse_stat("") == {}


def _o(kind="new", ok=True, instance="gw0", resumed=False, first=False, retried=False):
    return F.Outcome(kind, 0, 0.0, 1.0, ok, instance if ok else None, resumed, first, retried)


def test_summarize_counts_resumption_over_returning_connections_only():
    s = F.summarize([_o(first=True), _o(resumed=True), _o(resumed=False, instance="gw1"),
                     _o(ok=False), _o(kind="keepalive", retried=True)])
    assert (s.requests, s.failed, s.retried) == (5, 1, 1)
    assert s.by_instance == {"gw0": 3, "gw1": 1}
    assert (s.resumable, s.resumed) == (2, 1)
    assert s.resumption_rate == 0.5
    assert F.summarize([]).resumption_rate is None


def test_servers_in_log_takes_the_line_accepted_nearest_the_connection():
    from datetime import datetime
    at = datetime(2026, 12, 4, 19, 12, 0, 123000).timestamp()
    log = ("127.0.0.10:40001 [04/Dec/2026:19:11:30.000] fleet gateways/gw1 1/0/5 123 CD 1/1/0/0/0 0/0\n"
           "127.0.0.10:40001 [04/Dec/2026:19:12:00.124] fleet gateways/gw0 1/0/5 123 SD 1/1/0/0/0 0/0\n"
           "127.0.0.10:40001 [04/Dec/2026:19:12:40.000] fleet gateways/gw2 1/0/5 123 CD 1/1/0/0/0 0/0\n"
           "127.0.0.11:40002 [04/Dec/2026:19:12:00.124] fleet gateways/gw2 1/0/5 123 SD 1/1/0/0/0 0/0\n"
           "127.0.0.12:40003 [04/Dec/2026:19:12:00.125] fleet gateways/<NOSRV> -1/-1/0 0 SC 0/0/0/0/3 0/0\n"
           "127.0.0.13:40004 [04/Dec/2026:19:14:00.125] fleet gateways/gw1 1/0/5 123 SD 1/1/0/0/0 0/0\n"
           "Proxy fleet started.\n")
    assert F.servers_in_log(log, {"127.0.0.10:40001": at, "127.0.0.11:40002": at,
                                  "127.0.0.13:40004": at, "127.0.0.99:1": at}) == {
        "127.0.0.10:40001": "gw0", "127.0.0.11:40002": "gw2"}
