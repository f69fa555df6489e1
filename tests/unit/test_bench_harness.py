"""The benchmark harness's pure parts: output parsing, CPU accounting, config rendering, statistics,
the crypto floor's arithmetic and the JSON document. No sockets, no processes."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import orjson
import pytest

from gateway import config as gateway_config
from mtls_gateway_bench.harness import certs, cli, cpu, floor, load, peers, report, stats

# --- openssl s_time and ab output -----------------------------------------------------------------

S_TIME_NEW = """Collecting connection statistics for 2 seconds
**********************************************************************

331 connections in 0.83s; 398.80 connections/user sec, bytes read 28466
331 connections in 3 real seconds, 86 bytes read per connection
"""

S_TIME_REUSE_RUNNING = """

Now timing with session id reuse.
starting
rrrrrrrrrrrrrrrrrrrr*rrrrr"""


def test_s_time_counts_full_connections_and_ignores_text():
    assert load.count_connections(S_TIME_NEW) == (70, 0)


def test_s_time_counts_resumed_connections_while_running():
    # the header lines contain 'r' letters ("starting", "reuse") and must not count
    assert load.count_connections(S_TIME_REUSE_RUNNING) == (1, 25)


def test_s_time_empty_output_counts_nothing():
    assert load.count_connections("") == (0, 0)
    assert load.count_connections("Collecting connection statistics for 1 seconds\n") == (0, 0)


def test_s_time_summary():
    assert load.parse_summary(S_TIME_NEW) == (331, 0.83)
    assert load.parse_summary(S_TIME_REUSE_RUNNING) is None


def test_s_time_command_resumes_with_www():
    cmd = load.s_time_command(["openssl"], 4433, resume=True, tls="1.3", cert=Path("c.pem"),
                              key=Path("c.key"), ca=Path("ca.pem"), max_s=9)
    assert cmd[:2] == ["openssl", "s_time"]
    assert "-reuse" in cmd and "-tls1_3" in cmd
    assert cmd[cmd.index("-www") + 1] == "/"      # without it TLS 1.3 sessions never resume
    assert cmd[cmd.index("-connect") + 1] == "127.0.0.1:4433"


AB_OUTPUT = """Server Software:        nginx
Document Length:        2 bytes

Concurrency Level:      8
Time taken for tests:   2.001 seconds
Complete requests:      23564
Failed requests:        3
Non-2xx responses:      1
Keep-Alive requests:    23560
Total transferred:      3000000 bytes
Requests per second:    11776.11 [#/sec] (mean)
"""


def test_ab_output():
    r = load.parse_ab(AB_OUTPUT)
    assert r == load.ABResult(complete=23564, failed=3, keepalive=23560, non_2xx=1, time_s=2.001)
    assert load.parse_ab("apr_pollset_poll: The timeout specified has expired (70007)") is None


def test_ab_command_time_limit_before_request_count():
    cmd = load.ab_command("ab", 8443, tls="1.3", combined=Path("client.pem"), concurrency=4, seconds=2)
    # -t implies -n 50000 unless -n comes after it
    assert cmd.index("-t") < cmd.index("-n")
    assert cmd[cmd.index("-E") + 1] == "client.pem" and "-k" in cmd
    assert cmd[-1] == "https://127.0.0.1:8443/"


# --- CPU accounting -------------------------------------------------------------------------------

def _stat(pid, ppid, utime, stime, cutime=0, cstime=0, comm="nginx"):
    fields = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime), str(cutime), str(cstime)] + ["0"] * 30
    return f"{pid} ({comm}) " + " ".join(fields)


def test_stat_line_with_parentheses_and_spaces_in_the_name():
    st = cpu.parse_stat(_stat(42, 7, 150, 50, 3, 2, comm="nginx: worker (x) y"))
    assert (st.pid, st.ppid, st.utime, st.stime, st.cutime, st.cstime) == (42, 7, 150, 50, 3, 2)
    assert st.ticks == 205


def test_tree_ticks_adds_descendants_and_reaped_children_but_not_strangers():
    stats = {s.pid: s for s in (
        cpu.parse_stat(_stat(10, 1, 100, 10, cutime=40)),   # master; a reaped worker left 40 ticks
        cpu.parse_stat(_stat(11, 10, 500, 50)),              # worker
        cpu.parse_stat(_stat(12, 10, 300, 30)),              # worker
        cpu.parse_stat(_stat(13, 11, 7, 0)),                 # a worker's child
        cpu.parse_stat(_stat(20, 1, 999, 999)),              # someone else
    )}
    assert cpu.tree_ticks(10, stats) == 110 + 40 + 550 + 330 + 7
    assert cpu.tree_ticks(99, stats) == 0


def test_per_event_and_utilisation():
    assert cpu.per_event_us(0.5, 250) == pytest.approx(2000.0)
    assert cpu.per_event_us(0.5, 0) is None
    assert cpu.utilisation(1.5, 2.0, 1) == pytest.approx(0.75)
    assert cpu.utilisation(1.5, 2.0, 2) == pytest.approx(0.375)
    assert cpu.utilisation(1.0, 0.0, 1) == 0.0


def test_proc_stat_busy_seconds_exclude_idle_and_iowait():
    text = ("cpu  900 0 100 5000 10 0 0 0 0 0\n"
            "cpu0 400 0 50 2000 5 0 10 0 0 0\n"
            "cpu1 500 0 50 3000 5 0 0 7 0 0\n")
    assert cpu.parse_proc_stat(text, [0]) == pytest.approx(460 / cpu.CLK_TCK)
    assert cpu.parse_proc_stat(text, [0, 1]) == pytest.approx(1017 / cpu.CLK_TCK)


def test_cpu_lists():
    assert cpu.parse_cpus("0") == (0,)
    assert cpu.parse_cpus("0,2-4, 7") == (0, 2, 3, 4, 7)
    assert cpu.format_cpus([4, 0, 2, 3, 7]) == "0,2-4,7"
    with pytest.raises(ValueError):
        cpu.parse_cpus("3-1")
    with pytest.raises(ValueError):
        cpu.parse_cpus(",")


def test_default_cpu_sets():
    assert cpu.default_cpu_sets(1, [0, 1]) == ((0,), (1,))
    assert cpu.default_cpu_sets(2, [0, 1, 2, 3]) == ((0, 1), (2, 3))
    assert cpu.default_cpu_sets(8, [0, 1, 2]) == ((0, 1), (2,))     # always leave the clients one
    assert cpu.default_cpu_sets(1, [5]) == ((5,), (5,))


# --- statistics -----------------------------------------------------------------------------------

def test_median_spread_ratio_percentile():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.median([None, 5.0]) == 5.0
    assert stats.median([]) is None
    assert stats.spread([90, 100, 110]) == pytest.approx(0.2)
    assert stats.spread([100]) is None                 # one run has no spread
    assert stats.ratio(80, 100) == pytest.approx(0.8)
    assert stats.ratio(80, 0) is None and stats.ratio(None, 1) is None
    xs = list(range(1, 101))
    assert stats.percentile(xs, 0.5) == 50 and stats.percentile(xs, 0.99) == 99
    assert stats.percentile([], 0.5) is None


# --- the crypto floor -----------------------------------------------------------------------------

OPS = {"x25519_keygen_derive": 100.0, "ecdsa_p256_sign": 30.0, "ecdsa_p256_verify": 90.0,
       "rsa2048_pss_sign": 900.0}


def test_floor_per_kind_of_handshake():
    assert floor.cell_floor(OPS, "off", "full", "1.3", "ecdsa") == 130.0
    assert floor.cell_floor(OPS, "passthrough", "full", "1.3", "ecdsa") == 220.0
    assert floor.cell_floor(OPS, "verify", "full", "1.2", "ecdsa") == 400.0
    assert floor.cell_floor(OPS, "verify", "full", "1.3", "rsa") == 1270.0
    assert floor.cell_floor(OPS, "verify", "resumed", "1.3", "ecdsa") == 100.0   # psk_dhe_ke
    assert floor.cell_floor(OPS, "verify", "resumed", "1.2", "ecdsa") is None    # symmetric only


SPEED_30 = """                  sign    verify    sign/s verify/s
rsa 2048 bits 0.000901s 0.000022s   1109.7  45268.0
                              sign    verify    sign/s verify/s
 256 bits ecdsa (nistp256)   0.0000s   0.0001s  34716.9   9909.9
                              op      op/s
 253 bits ecdh (X25519)   0.0000s  20538.9
"""

SPEED_35 = """                              sign    verify    sign/s verify/s
 256 bits ecdsa (nistp256)   0.0000s   0.0001s  30685.5  10361.2
                              op      op/s
 253 bits ecdh (X25519)   0.0000s  20597.5
                               keygen    encaps    decaps keygens/s  encaps/s  decaps/s
                    rsa2048 0.097500s 0.000029s 0.000905s      10.3   34002.6    1104.7
                               keygen     signs    verify keygens/s    sign/s  verify/s
                    rsa2048 0.046842s 0.000903s 0.000026s      21.3    1107.7   37826.0
"""


@pytest.mark.parametrize("text, rsa_sign_per_s", [(SPEED_30, 1109.7), (SPEED_35, 1107.7)])
def test_openssl_speed_both_layouts(text, rsa_sign_per_s):
    ops = floor.parse_speed(text)
    assert set(ops) == set(OPS)
    assert ops["rsa2048_pss_sign"] == pytest.approx(1e6 / rsa_sign_per_s)
    assert ops["x25519_keygen_derive"] == pytest.approx(2e6 / (20538.9 if text is SPEED_30 else 20597.5))
    assert ops["ecdsa_p256_verify"] == pytest.approx(1e6 / (9909.9 if text is SPEED_30 else 10361.2))


# --- peers: versions and configuration ------------------------------------------------------------

def test_nginx_and_haproxy_versions():
    text = ("nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.22 25 Aug 2026 (running with OpenSSL "
            "3.0.19 27 Jan 2026)\nTLS SNI support enabled\n")
    assert peers.parse_nginx_version(text) == ("1.22.1", "OpenSSL 3.0.19")
    assert peers.parse_nginx_version("nginx version: nginx/1.26.3\nbuilt with OpenSSL 3.5.7 9 Jun\n") == \
        ("1.26.3", "OpenSSL 3.5.7")
    text = ("HAProxy version 3.0.11-1+deb13u4 2026/10/15 - https://haproxy.org/\n"
            "Built with OpenSSL version : OpenSSL 3.5.7 9 Jun 2026\n"
            "Running on OpenSSL version : OpenSSL 3.5.9 29 Sep 2026\n")
    assert peers.parse_haproxy_version(text) == ("3.0.11-1+deb13u4", "OpenSSL 3.5.9")
    assert peers.parse_haproxy_version("something else") == (None, None)


@pytest.fixture(scope="module")
def bench_pki(tmp_path_factory) -> certs.BenchPKI:
    return certs.make(tmp_path_factory.mktemp("bench-pki"))


ENDPOINTS = [peers.Endpoint("off", "ecdsa", 9001), peers.Endpoint("passthrough", "ecdsa", 9002),
             peers.Endpoint("verify", "ecdsa", 9003), peers.Endpoint("verify", "rsa", 9004)]


def test_bench_pki_has_every_shape(bench_pki):
    from cryptography import x509
    assert len(x509.load_pem_x509_certificates(bench_pki.ca_bundle.read_bytes())) == 2
    assert len(x509.load_pem_x509_certificates(bench_pki.client_cert.read_bytes())) == 2   # leaf + intermediate
    assert b"PRIVATE KEY" in bench_pki.client_combined.read_bytes()
    assert b"PRIVATE KEY" in bench_pki.server_combined["rsa"].read_bytes()
    assert sorted(bench_pki.server_certs) == ["ecdsa", "rsa"]
    assert (bench_pki.server_keys["ecdsa"].stat().st_mode & 0o777) == 0o600


def test_relocated_pki_names_the_path_inside_the_root(bench_pki, tmp_path):
    moved = certs.relocate(bench_pki, tmp_path / "root/tmp/x", Path("/tmp/x"))
    assert moved.ca_bundle == Path("/tmp/x/ca-bundle.pem")
    assert (tmp_path / "root/tmp/x/ca-bundle.pem").read_bytes() == bench_pki.ca_bundle.read_bytes()


def test_gateway_config_is_valid_for_the_gateway(bench_pki, tmp_path):
    text = peers.render_gateway(ENDPOINTS, bench_pki, workers=2, crl=True, workdir=tmp_path)
    conf = gateway_config.loads(text, source="<bench>", base_dir=tmp_path)
    assert conf.gateway.workers == 2
    assert [(l.name, l.mtls, l.port) for l in conf.listeners] == [
        ("off-ecdsa", "off", 9001), ("passthrough-ecdsa", "passthrough", 9002),
        ("verify-ecdsa", "verify", 9003), ("verify-rsa", "verify", 9004)]
    doc = tomllib.loads(text)
    assert doc["gateway"]["access_log"] == "off" and doc["gateway"]["connection_log"] == "off"
    assert doc["listener"][0]["rule"][0]["action"] == "fixed-response"
    assert len(doc["trust_store"]["bench"]["crls"]) == 2
    without = tomllib.loads(peers.render_gateway(ENDPOINTS, bench_pki, workers=1, crl=False, workdir=tmp_path))
    assert "crls" not in without["trust_store"]["bench"]


def _server_blocks(text: str) -> list[str]:
    return text.split("    server {")[1:]


def test_nginx_config(bench_pki, tmp_path):
    text = peers.render_nginx(ENDPOINTS, bench_pki, workers=3, crl=True, workdir=tmp_path, as_root=True)
    assert "daemon off;" in text and "worker_processes 3;" in text and "user nobody nogroup;" in text
    assert "ssl_session_cache shared:" in text and "ssl_session_tickets on;" in text
    assert "access_log off;" in text
    off, passthrough, verify, verify_rsa = _server_blocks(text)
    assert "ssl_verify_client" not in off
    assert "ssl_verify_client optional_no_ca;" in passthrough
    assert "$ssl_client_escaped_cert" in passthrough and "ssl_client_certificate" not in passthrough
    assert "ssl_verify_client on;" in verify and f"ssl_client_certificate {bench_pki.ca_bundle};" in verify
    assert "ssl_verify_depth 2;" in verify and f"ssl_crl {bench_pki.crl_bundle};" in verify
    assert str(bench_pki.server_certs["rsa"]) in verify_rsa and "listen 127.0.0.1:9004 ssl;" in verify_rsa
    assert text.count("{") == text.count("}")
    assert "user " not in peers.render_nginx(ENDPOINTS, bench_pki, workers=1, crl=False, workdir=tmp_path,
                                             as_root=False)


def test_haproxy_config(bench_pki):
    text = peers.render_haproxy(ENDPOINTS, bench_pki, workers=2, crl=False)
    assert "nbthread 2" in text
    frontends = {block.split("\n", 1)[0]: block for block in text.split("frontend ")[1:]}
    assert set(frontends) == {"off_ecdsa", "passthrough_ecdsa", "verify_ecdsa", "verify_rsa"}
    assert "verify " not in frontends["off_ecdsa"]
    assert "verify required" in frontends["verify_ecdsa"] and str(bench_pki.ca_bundle) in frontends["verify_ecdsa"]
    assert "verify optional ca-ignore-err all crt-ignore-err all" in frontends["passthrough_ecdsa"]
    assert "ssl_c_der" in frontends["passthrough_ecdsa"]
    assert str(bench_pki.server_combined["rsa"]) in frontends["verify_rsa"]
    assert all("http-request return status 200" in b for b in frontends.values())
    assert "crl-file" in peers.render_haproxy(ENDPOINTS, bench_pki, workers=1, crl=True)


def test_missing_peer_says_how_to_add_it(monkeypatch):
    monkeypatch.setattr(peers.shutil, "which", lambda name: None)
    found = peers.find_server("nginx", "nginx", None)
    assert isinstance(found, peers.Missing)
    assert "apt-get install nginx" in found.reason


# --- the plan -------------------------------------------------------------------------------------

def test_plan_measures_resumption_with_the_first_key_only():
    cells = cli.plan_cells(["verify"], ["full", "resumed"], ["1.3"], ["ecdsa", "rsa"])
    assert cells == [("verify", "full", "1.3", "ecdsa"), ("verify", "resumed", "1.3", "ecdsa"),
                     ("verify", "full", "1.3", "rsa")]
    assert len(cli.plan_cells(list(peers.MODES), ["full", "resumed"], ["1.3", "1.2"], ["ecdsa", "rsa"])) == 18


def test_quick_and_default_settings():
    quick = cli._parser().parse_args(["--quick"])
    cli._resolve(quick)
    assert (quick.seconds, quick.repeats, quick.tls, quick.keys) == (1.0, 1, "1.3", "ecdsa")
    assert quick.no_ab and quick.no_speed
    full = cli._parser().parse_args(["--seconds", "3"])
    cli._resolve(full)
    assert (full.seconds, full.repeats, full.tls, full.keys) == (3.0, 5, "1.3,1.2", "ecdsa,rsa")


def test_bad_lists_are_refused():
    with pytest.raises(SystemExit):
        cli._split("verify,bogus", peers.MODES, "modes")


# --- summaries, ratios, targets and the JSON document ---------------------------------------------

PEERS = [{"name": "gateway", "kind": "gateway", "openssl": "OpenSSL 4.0.3"},
         {"name": "nginx", "kind": "nginx", "openssl": "OpenSSL 3.0.19"},
         {"name": "nginx@trixie", "kind": "nginx", "openssl": "OpenSSL 3.5.9"}]


def _run(peer, mode, hs, cpu_us, hs_per_s, util=(0.9, 0.5), repeat=0):
    return {"peer": peer, "mode": mode, "handshake": hs, "tls": "1.3", "key": "ecdsa", "repeat": repeat,
            "connections": 100, "resumed_fraction": 1.0 if hs == "resumed" else 0.0, "hs_per_s": hs_per_s,
            "cpu_us": cpu_us, "server_util": util[0], "client_util": util[1], "other_util": 0.0,
            "bottleneck": report.bottleneck(*util), "errors": []}


def _doc() -> dict:
    runs = []
    for i, (g, n, t) in enumerate([(900, 2600, 1200), (1000, 2500, 1250), (1100, 2700, 1300)]):
        runs += [_run("gateway", "verify", "full", g, 500, repeat=i), _run("nginx", "verify", "full", n, 300, repeat=i),
                 _run("nginx@trixie", "verify", "full", t, 400, repeat=i)]
    runs += [_run("gateway", "verify", "resumed", 700, 900), _run("nginx@trixie", "verify", "resumed", 600, 1000)]
    doc = {"schema": report.SCHEMA, "peers": PEERS, "settings": {"workers": 1}, "floor": {"openssl": "OpenSSL 4.0.3",
           "ops_us": OPS, "speed": {}}}
    doc["reference"] = report.pick_reference(PEERS)
    doc["handshakes"] = report.summarize_handshakes(runs, PEERS, OPS)
    ka = [{"peer": p, "mode": "verify", "client": "http11", "tls": "1.3", "key": "ecdsa", "requests": 1000,
           "req_per_s": r, "cpu_us": c, "bottleneck": "client", "errors": []}
          for p, c, r in (("gateway", 30.0, 5000), ("nginx@trixie", 10.0, 9000))]
    doc["keepalive"] = report.summarize_keepalive(ka, PEERS)
    doc["latency"] = report.summarize_latency(
        [{"peer": "gateway", "mode": "verify", "handshake": "full", "tls": "1.3", "key": "ecdsa", "rate": 100,
          "count": 50, "p50_ms": 5.0, "p99_ms": 9.0},
         {"peer": "nginx@trixie", "mode": "verify", "handshake": "full", "tls": "1.3", "key": "ecdsa", "rate": 100,
          "count": 50, "p50_ms": 8.0, "p99_ms": 12.0}], PEERS)
    doc["targets"] = report.evaluate_targets(doc)
    doc["bottleneck"] = report.bottleneck_summary(doc)
    return doc


def test_reference_is_the_nginx_on_the_newest_openssl():
    assert report.pick_reference(PEERS) == "nginx@trixie"
    assert report.pick_reference(PEERS, "nginx") == "nginx"
    assert report.pick_reference(PEERS[:1]) is None


def test_bottleneck_classification():
    assert report.bottleneck(0.95, 0.5) == "server"
    assert report.bottleneck(0.5, 0.95) == "client"
    assert report.bottleneck(0.9, 0.9) == "both"
    assert report.bottleneck(0.4, 0.4) == "neither"


def test_summary_medians_spreads_floor_and_ratios():
    doc = _doc()
    row = next(r for r in doc["handshakes"] if (r["peer"], r["mode"], r["handshake"]) == ("gateway", "verify", "full"))
    assert row["cpu_us"]["median"] == 1000 and row["cpu_us"]["n"] == 3
    assert row["cpu_us"]["spread"] == pytest.approx(0.2)
    assert row["floor_us"] == 400.0 and row["floor_multiple"] == pytest.approx(2.5)
    assert row["ratios"]["nginx"]["cpu"] == pytest.approx(1000 / 2600)
    assert row["ratios"]["nginx@trixie"]["cpu"] == pytest.approx(0.8)
    assert row["ratios"]["nginx@trixie"]["hs_per_s"] == pytest.approx(1.25)
    assert row["bottleneck"] == "server"
    resumed = next(r for r in doc["handshakes"] if (r["peer"], r["handshake"]) == ("gateway", "resumed"))
    assert "nginx" not in resumed["ratios"]          # nginx has no resumed point: no ratio, not a crash


def test_resumption_that_did_not_resume_is_flagged():
    run = _run("gateway", "verify", "resumed", 700, 900)
    run["resumed_fraction"] = 0.1
    row = report.summarize_handshakes([run], PEERS, OPS)[0]
    assert any("resumed" in n for n in row["notes"])


def test_targets_against_the_reference():
    targets = {t["target"]: t for t in _doc()["targets"]}
    full = targets["full handshake, verify"]
    assert full["ratio"] == pytest.approx(0.8) and full["met"] is True and full["reference"] == "nginx@trixie"
    resumed = targets["resumed handshake, verify"]
    assert resumed["ratio"] == pytest.approx(700 / 600) and resumed["met"] is False
    ka = targets["keep-alive request, verify"]
    assert ka["ratio"] == pytest.approx(3.0) and ka["met"] is False and ka["client"] == "http11"
    assert targets["full handshake, passthrough"]["met"] is None     # not measured: not judged


def test_json_document_round_trips_with_its_shape(tmp_path):
    doc = _doc()
    path = tmp_path / "results.json"
    report.write_json(path, doc)
    back = orjson.loads(path.read_bytes())
    assert json.loads(path.read_text()) == back
    assert back["schema"] == report.SCHEMA
    assert {"peers", "reference", "floor", "handshakes", "keepalive", "latency", "targets", "bottleneck"} <= set(back)
    row = back["handshakes"][0]
    assert {"peer", "mode", "handshake", "tls", "key", "runs", "hs_per_s", "cpu_us", "bottleneck", "floor_us",
            "floor_multiple", "ratios"} <= set(row)
    assert {"median", "spread", "min", "max", "n"} == set(row["cpu_us"])


def test_rendered_tables_carry_every_peer_and_ratio_column():
    doc = _doc()
    text = report.render(doc)
    assert "CPU ×nginx" in text and "CPU ×nginx@trixie" in text and "hs/s ×nginx@trixie" in text
    assert "keep-alive request, verify" in text and "NO" in text
    md = report.render(doc, markdown=True)
    assert "| mode | handshake |" in md and "---:" in md
    lines = report.handshake_table(doc).splitlines()
    assert len(lines) == 2 + len(doc["handshakes"])
