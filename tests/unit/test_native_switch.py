"""The one native switch: worked out without side effects, applied only after a runtime validated,
so a configuration that fails to load (at start or on a reload) leaves the running choice alone."""
from __future__ import annotations

import pytest

from gateway import conn, headers, http1, http2, native, pki, testing, tls, trust
from gateway.config import loads
from gateway.errors import ConfigError, NativeUnavailable
from gateway.server import build_runtime


@pytest.fixture
def restore():
    before = native.current()
    yield
    native.apply(before)


def _config(d, native_mode: str, key: str = "server.key"):
    return loads(testing.toml({
        "gateway": {"native": native_mode, "access_log": "off", "connection_log": "off", "error_log": "-"},
        # port 18443 is not bound: build_runtime only builds
        "listener": [testing.listener("l", 18443, d / "server.pem", d / key, mtls="verify", rules=())],
        "trust_store": {"main": {"ca_bundle": d / "ca-bundle.pem"}},
    }), base_dir=d)


def test_select_changes_nothing(restore):
    native.apply(native.select("off"))
    chosen = native.select("auto")
    assert chosen.headers == (headers.NATIVE is not None) and chosen.http1 == (http1.NATIVE is not None)
    assert native.current() == native.Selection("current", False, False, False, False, False, False)
    assert chosen.http2 == (http2.NATIVE is not None)
    assert not any((chosen := native.select("off")).__getattribute__(f)
                   for f in ("headers", "trust", "tls", "http1", "conn", "http2"))
    assert chosen.describe() == "python"


def test_on_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(http1, "NATIVE", None)
    with pytest.raises(NativeUnavailable, match="http1"):
        native.select("on")
    assert native.select("auto").http1 is False
    monkeypatch.setattr(http2, "NATIVE", None)
    with pytest.raises(NativeUnavailable, match="http2"):
        native.select("on")
    assert native.select("auto").http2 is False


def test_a_failed_build_leaves_the_selection_alone(tmp_path, restore):
    pki.init_dir(tmp_path)
    native.apply(native.select("off"))
    # a configuration that loaded, whose key file is gone by the time the runtime is built (a
    # reload racing an edit): the build fails, and with it the switch to "on"
    cfg = _config(tmp_path, "on")
    (tmp_path / "server.key").rename(tmp_path / "moved.key")
    with pytest.raises(ConfigError):
        build_runtime(cfg)
    assert native.current().describe() == "python"      # unchanged by the failed build
    assert headers.native_mode == trust.native_mode == tls.native_mode == http1.native_mode == \
        conn.native_mode == http2.native_mode == "python"


def test_a_good_build_applies_its_selection(tmp_path, restore):
    pki.init_dir(tmp_path)
    native.apply(native.select("off"))
    runtime = build_runtime(_config(tmp_path, "auto"))
    chosen = native.select("auto")
    assert native.current() == native.Selection("current", chosen.headers, chosen.trust, chosen.tls,
                                                chosen.http1, chosen.conn, chosen.http2)
    assert runtime.native == chosen.describe()
    # what it built got the selection too, not the one in force while it was built
    store = runtime.trust_stores["main"]
    assert store.impl is chosen.trust_implementation


def test_http2_connections_take_the_chosen_http2_codec(restore):
    """gateway.http2.connection: the native codec exactly when the switch chose it."""
    import hpack
    native.apply(native.select("off"))
    conn_ = http2.connection(100, 4096, 16384)
    assert type(conn_.encoder) is hpack.Encoder and type(conn_.decoder) is hpack.Decoder
    if http2.NATIVE is None:
        pytest.skip("gateway._http2_c is not built")
    native.apply(native.select("auto"))
    conn_ = http2.connection(100, 4096, 16384)
    assert type(conn_.encoder) is http2.NATIVE.Encoder and type(conn_.decoder) is http2.NATIVE.Decoder
    assert conn_.decoder.max_header_list_size == 16384 and conn_.decoder.max_allowed_table_size == 4096


def test_the_shell_follows_the_cores_switch(restore):
    """gateway.proxy.new_protocol: the shell with data_received in C exactly when the native core
    is chosen; its clock is time.monotonic's."""
    import time

    from gateway import proxy
    native.apply(native.select("off"))
    assert type(proxy.new_protocol(lambda: None, "l")) is proxy.GatewayProtocol
    if conn.NATIVE is None:
        pytest.skip("gateway._conn_c is not built")
    native.apply(native.select("auto"))
    shell = proxy.new_protocol(lambda: None, "l")
    assert type(shell) is proxy.NativeGatewayProtocol and isinstance(shell, proxy.GatewayProtocol)
    from gateway import _conn_c
    for _ in range(1000):
        before = time.monotonic()
        now = _conn_c.monotonic_now()
        assert before <= now <= time.monotonic()


@pytest.mark.parametrize("shared, maps, expected", [
    (0, None, "static"),                                                  # built without --enable-shared
    (1, "7f0 r-xp /usr/lib/libpython3.11.so.1.0\n", "shared libpython"),   # pyenv's kind
    (1, "7f0 r-xp /usr/bin/python3.11\n", "static"),                     # Debian's: says shared, is not
    (1, "", "static"),
])
def test_interpreter_build_reads_what_the_process_maps(tmp_path, monkeypatch, shared, maps, expected):
    import sysconfig
    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var",
                        lambda name: shared if name == "Py_ENABLE_SHARED" else real(name))
    path = tmp_path / "maps"
    if maps is not None:
        path.write_text(maps)
    assert native.interpreter_build(str(path)) == expected


def test_interpreter_build_without_proc_says_shared(tmp_path, monkeypatch):
    import sysconfig
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: 1)
    assert native.interpreter_build(str(tmp_path / "absent")) == "shared libpython"
