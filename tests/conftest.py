"""Shared fixtures: a development PKI with every kind of client certificate; a session-wide check
that the test process leaks no file descriptor."""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway import pki

# MTLS_GATEWAY_TEST_NATIVE=on|off|auto: the twins this process starts with (the integration
# suite's gateways take the same setting, tests/integration/conftest.py); tests that pick a twin
# themselves still do
if os.environ.get("MTLS_GATEWAY_TEST_NATIVE"):
    from gateway import native as _native
    _native.apply(_native.select(os.environ["MTLS_GATEWAY_TEST_NATIVE"]))


@dataclass
class Client:
    name: str
    cert: Path
    key: Path
    issued: pki.Issued


@dataclass
class TestPKI:
    dir: Path
    root: pki.Issued
    intermediate: pki.Issued
    clients: dict[str, Client]

    @property
    def ca_bundle(self) -> Path:
        return self.dir / "ca-bundle.pem"

    @property
    def root_pem(self) -> Path:
        return self.dir / "root-ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def crls(self) -> list[Path]:
        return [self.dir / "crl-root.pem", self.dir / "crl-intermediate.pem"]


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory) -> TestPKI:
    d = tmp_path_factory.mktemp("pki")
    pki.init_dir(d)
    root = pki.load_issued(d / "root-ca.pem", d / "root-ca.key")
    inter = pki.load_issued(d / "intermediate-ca.pem", d / "intermediate-ca.key")
    clients: dict[str, Client] = {}

    def add(name: str, issued: pki.Issued) -> None:
        cert, key = d / f"{name}.pem", d / f"{name}.key"
        issued.write(cert, key)
        clients[name] = Client(name, cert, key, issued)

    clients["good"] = Client("good", d / "clients" / "client1.pem", d / "clients" / "client1.key",
                             pki.load_issued(d / "clients" / "client1.pem", d / "clients" / "client1.key"))
    now = datetime.now(timezone.utc)
    add("alice", pki.make_client(inter, "alice", san_dns=["alice.example.com"],
                                 san_uri=["spiffe://example.com/alice"]))
    add("expired", pki.make_client(inter, "expired", not_before=now - timedelta(days=30),
                                   not_after=now - timedelta(days=1)))
    add("notyet", pki.make_client(inter, "notyet", not_before=now + timedelta(days=1),
                                  not_after=now + timedelta(days=30)))
    add("serverauth", pki.make_client(inter, "serverauth", extended_key_usage="server"))
    add("denied", pki.make_client(inter, "denied"))
    other_root = pki.make_root("mtls-gateway dev root CA")
    other_inter = pki.make_intermediate(other_root, "mtls-gateway dev intermediate CA")
    add("untrusted", pki.make_client(other_inter, "client1"))
    deep_parent = inter
    for i in range(4):
        deep_parent = pki.make_intermediate(deep_parent, f"deep CA {i}", path_length=None)
    add("deep", pki.make_client(deep_parent, "deep"))
    pki.issue_client(d, "revoked")
    pki.revoke(d, "revoked")
    clients["revoked"] = Client("revoked", d / "clients" / "revoked.pem", d / "clients" / "revoked.key",
                                pki.load_issued(d / "clients" / "revoked.pem", d / "clients" / "revoked.key"))
    return TestPKI(d, root, inter, clients)


def _open_fds() -> dict[int, str]:
    """This process's descriptors and what each refers to."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass        # the listing's own descriptor, closed by now
    return out


_FD_LEAKS: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    """The test process gives back every descriptor it opened: /proc/self/fd before the first
    test and after the last one, once every fixture is torn down and every test's arguments let
    go (a session fixture would look too early: the last test's own fixture values are still
    referenced while session fixtures are torn down). Objects only the garbage collector would
    close are collected first: an unreachable file is not a leak, a reachable one is. A leak
    fails the run and is listed at the end with what each descriptor refers to."""
    if not os.path.isdir("/proc/self/fd") or session.config.option.collectonly:
        return (yield)
    try:
        import uvloop
    except ImportError:
        pass
    else:
        # libuv opens a process-wide pipe (its signal lock) with the first loop and keeps it for
        # the life of the process: let it exist before counting
        uvloop.new_event_loop().close()
    before = _open_fds()
    failed_before = session.testsfailed
    result = yield
    gc.collect()
    after = _open_fds()
    leaked = {fd: target for fd, target in after.items() if before.get(fd) != target}
    if leaked:
        _FD_LEAKS.append(f"{len(leaked)} descriptor(s) opened during the tests and never closed "
                         f"({len(before)} open before the first test, {len(after)} after the last)"
                         + (" (tests failed: their tracebacks may hold some of these)"
                            if session.testsfailed > failed_before else "") + ":")
        _FD_LEAKS.extend(f"  {fd} -> {target}" for fd, target in sorted(leaked.items()))
        session.testsfailed += 1
    return result


def pytest_terminal_summary(terminalreporter) -> None:
    if _FD_LEAKS:
        terminalreporter.section("file descriptors leaked", red=True)
        for line in _FD_LEAKS:
            terminalreporter.line(line, red=True)
