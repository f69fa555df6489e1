"""scenarios.profile's stage classification of py-spy's collapsed stacks (pure functions)."""
from __future__ import annotations

from mtls_gateway_bench.scenarios import profile

_RAW = """\
main (gateway/cli.py:68);run_worker (gateway/server.py:382);uv_run (core.c:452);epoll_pwait (libc.so.6) 40
run_worker (gateway/server.py:382);GatewayProtocol.data_received (gateway/proxy.py:63);Connection.receive (gateway/conn.py:373);TLSConnection.receive (gateway/tls.py:876);x25519_fe64_sqr (cryptography/hazmat/bindings/_rust.abi3.so) 7
run_worker (gateway/server.py:382);Connection.receive (gateway/conn.py:373);TLSConnection.receive (gateway/tls.py:876);ssl3_read_bytes (cryptography/hazmat/bindings/_rust.abi3.so) 5
run_worker (gateway/server.py:382);Connection.receive (gateway/conn.py:373);_Reader.feed (gateway/http1.py:431);llhttp__internal_execute (httptools/parser/parser.cpython-311-x86_64-linux-gnu.so) 3
run_worker (gateway/server.py:382);Connection._access_log (gateway/conn.py:900);LogSink.write (gateway/logs.py:40) 2
run_worker (gateway/server.py:382);Acceptor._on_readable (gateway/accept.py:99);accept4 (libc.so.6) 4
run_worker (gateway/server.py:382);Loop__run (loop.c:20313);uv__io_poll (linux.c:1400) 1
"""


def test_stages_of_collapsed_stacks():
    stages = profile.parse_raw(_RAW)
    assert stages == {"idle": 40, "OpenSSL crypto": 7, "OpenSSL TLS and X.509": 5,
                      "HTTP/1.1 parse": 3, "logs": 2, "accept": 4, "event loop": 1}


def test_empty_and_unknown_stacks():
    assert profile.classify([]) == "other"
    assert profile.classify([("main", "x.py:1"), ("write", "libc.so.6")]) == "syscalls and libc"
