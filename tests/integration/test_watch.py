"""watch_files against the ways files really change on disk: a Kubernetes volume's `..data`
symlink swap (Secrets and ConfigMaps), a plain rename over the file, an editor's write-then-rename,
and a file written in place a piece at a time. Each change is one reload; nothing is read
half-written."""
from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from gateway import pki, testing

from .conftest import free_port, native_setting

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5


def _reloads(gw: testing.GatewayProcess) -> list[dict]:
    return [r for r in gw.lines("error") if r.get("reason") in ("reloaded", "reload_failed")]


def _wait_reloads(gw: testing.GatewayProcess, n: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(_reloads(gw)) < n:
        assert time.monotonic() < deadline, f"expected {n} reload(s): {_reloads(gw)}"
        time.sleep(0.05)
    # and no further one for a few looks: one change, one reload
    time.sleep(INTERVAL_S * 3)
    return _reloads(gw)


def _served_serial(port: int, root: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(root))
    with ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", port), timeout=5),
                         server_hostname="localhost") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def _body(port: int, root: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(root))
    return testing.https_get(port, ctx)[2].split(b"\r\n\r\n", 1)[1]


@pytest.fixture
def volume(tmp_path):
    """A directory laid out as the kubelet lays out a Secret: the files are links through `..data`
    to a timestamped directory, and an update swaps `..data` in one rename."""
    root = pki.make_root("Watch Root")
    vol = tmp_path / "secret"
    vol.mkdir()

    def publish(stamp: str) -> pki.Issued:
        server = pki.make_server(root, ["localhost", "127.0.0.1"])
        d = vol / f"..{stamp}"
        d.mkdir()
        server.write(d / "tls.crt", d / "tls.key")
        tmp = vol / "..data_tmp"
        tmp.symlink_to(d.name)
        os.replace(tmp, vol / "..data")
        for name in ("tls.crt", "tls.key"):
            if not (vol / name).is_symlink():
                (vol / name).symlink_to(Path("..data") / name)
        return server

    (tmp_path / "root.pem").write_bytes(root.cert_pem)
    return vol, publish, tmp_path / "root.pem"


def _config(d: Path, vol: Path, port: int, body: str) -> str:
    head = testing.toml({"gateway": {"workers": 1, "watch_files": True,
                                     "watch_interval_s": INTERVAL_S, **testing.log_settings(d)}})
    rest = testing.toml({"listener": [testing.listener(
        "w", port, vol / "tls.crt", vol / "tls.key", rules=[testing.fixed_response(body=body)])]})
    return f"{head}{native_setting('')}{rest}"


def _start(d: Path, text: str, port: int) -> testing.GatewayProcess:
    config = d / "gateway.toml"
    config.write_text(text)
    gw = testing.GatewayProcess(config, {"w": port}, logs=testing.logs_in(d), wait=False)
    gw.wait_ready()
    return gw


def test_a_secret_volume_swap_is_one_reload(tmp_path, volume):
    vol, publish, root = volume
    first = publish("2026_12_04_00_00_00.1")
    port = free_port()
    gw = _start(tmp_path, _config(tmp_path, vol, port, "one"), port)
    try:
        assert _served_serial(port, root) == first.serial
        second = publish("2026_12_04_00_01_00.2")
        reloads = _wait_reloads(gw, 1)
        assert [r["reason"] for r in reloads] == ["reloaded"], reloads
        assert _served_serial(port, root) == second.serial
    finally:
        assert gw.stop() == 0


def test_a_rename_over_and_an_editors_write_then_rename(tmp_path, volume):
    vol, publish, root = volume
    publish("2026_12_04_00_00_00.1")
    port = free_port()
    gw = _start(tmp_path, _config(tmp_path, vol, port, "one"), port)
    config = tmp_path / "gateway.toml"
    try:
        assert _body(port, root) == b"one"
        # a plain rename over the configuration file
        new = tmp_path / "gateway.toml.new"
        new.write_text(_config(tmp_path, vol, port, "two"))
        os.replace(new, config)
        assert [r["reason"] for r in _wait_reloads(gw, 1)] == ["reloaded"]
        assert _body(port, root) == b"two"
        # an editor: a hidden temporary file beside it, written and flushed, then renamed over
        swap = tmp_path / ".gateway.toml.swp"
        with open(swap, "w") as f:
            f.write(_config(tmp_path, vol, port, "three"))
            f.flush()
            os.fsync(f.fileno())
        os.rename(swap, config)
        assert [r["reason"] for r in _wait_reloads(gw, 2)] == ["reloaded", "reloaded"]
        assert _body(port, root) == b"three"
    finally:
        assert gw.stop() == 0


def test_a_file_written_in_place_is_read_only_once_it_holds_still(tmp_path, volume):
    """A writer that takes its time (pieces far more often than the watch looks): no look sees the
    same half-written state twice, so no reload reads it; the finished file is one reload."""
    vol, publish, root = volume
    publish("2026_12_04_00_00_00.1")
    port = free_port()
    gw = _start(tmp_path, _config(tmp_path, vol, port, "one"), port)
    config = tmp_path / "gateway.toml"
    try:
        text = _config(tmp_path, vol, port, "four").encode()
        with open(config, "r+b") as f:
            f.truncate(0)
            for i in range(0, len(text), 16):
                f.write(text[i:i + 16])
                f.flush()
                time.sleep(INTERVAL_S / 10)
        reloads = _wait_reloads(gw, 1)
        assert [r["reason"] for r in reloads] == ["reloaded"], reloads
        assert _body(port, root) == b"four"
    finally:
        assert gw.stop() == 0
