"""The in-process benchmarks run (a few operations, both cores), and scenarios.instructions' pieces."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway import conn as conn_mod
from mtls_gateway_bench.scenarios import core_handshake, instructions

CORES = ["python", pytest.param("native", marks=pytest.mark.skipif(
    conn_mod.NATIVE is None, reason="gateway._conn_c is not built"))]


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("mode,resumed", [("verify", False), ("verify", True), ("passthrough", True),
                                          ("off", False)])
def test_core_handshake_serves_each_connection(tmp_path, core, mode, resumed):
    """Every connection of the benchmark is checked (a 200, a close, a resumption when asked):
    run() raises otherwise."""
    try:
        assert core_handshake.run(core, mode, resumed, 1, 1, 4, tmp_path / "w", tmp_path / "pki") == []
    finally:
        conn_mod.set_native("auto")


def test_callgrind_totals_are_read_from_a_dump(tmp_path):
    dump = tmp_path / "cg.123.1"
    dump.write_text("# callgrind format\nversion: 1\ncmd: x\nevents: Ir\nsummary: 123456\n"
                    "fn=main\n1 10\ntotals: 123456\n")
    assert instructions._totals(dump) == 123456
    (tmp_path / "empty").write_text("events: Ir\n")
    with pytest.raises(RuntimeError):
        instructions._totals(tmp_path / "empty")


def test_valgrind_wraps_the_peer_command_inside_its_root():
    class Spec:
        root = Path("/var/tmp/r")

    class Peer:
        spec = Spec()
        command = ["chroot", "/var/tmp/r", "/usr/sbin/nginx", "-c", "/tmp/x/nginx.conf"]
    cmd = instructions._valgrind_command(Peer(), "/tmp/x/callgrind")
    assert cmd[:3] == ["chroot", "/var/tmp/r", "valgrind"]
    assert "--callgrind-out-file=/tmp/x/callgrind/cg.%p" in cmd
    assert cmd[-3:] == ["/usr/sbin/nginx", "-c", "/tmp/x/nginx.conf"]
    Spec.root = None
    Peer.command = ["/usr/bin/python3", "-m", "gateway", "run"]
    cmd = instructions._valgrind_command(Peer(), "/tmp/y")
    assert cmd[0] == "valgrind" and cmd[-4:] == ["/usr/bin/python3", "-m", "gateway", "run"]
