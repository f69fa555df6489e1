"""`mtls-gateway demo`: the embedded default, needing no files of the user's.

How this works: a throwaway PKI is made in a temporary directory (root CA, intermediate, server and
client certificates, CRLs), a built-in echo backend starts on 127.0.0.1, and the gateway serves two
listeners from an embedded configuration: `verify` (fixed response) and `passthrough` (forwarding to
the echo backend, which answers with the headers it received). Then the four checks of the ALB
mutual-TLS walkthrough run with a real TLS client (Python's ssl, the system OpenSSL) and print as a
table. Without `--once` the gateway keeps serving, prints ready-to-paste curl lines and stops on
Ctrl-C.
"""
from __future__ import annotations

import asyncio
import errno
import signal
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import config as cfg
from . import pki
from .echo import start_echo
from .server import Worker, build_runtime
from .testing import fixed_response, forward, listener, toml

DEMO_VERIFY_PORT = 8443
DEMO_PASSTHROUGH_PORT = 8444
CHECK_TIMEOUT_S = 10.0

def _config(directory: Path, verify_port: int, passthrough_port: int, echo_port: int) -> str:
    """The embedded configuration; certificate paths are relative to `directory` (the PKI's)."""
    return toml({
        "gateway": {"access_log": directory / "access.log", "connection_log": directory / "connection.log",
                    "log_level": "warning"},
        "listener": [
            listener("verify", verify_port, "server.pem", "server.key", mtls="verify", trust_store="demo",
                     header_style="alb",
                     rules=[fixed_response(body="hello, authenticated client\n", content_type="text/plain")]),
            listener("passthrough", passthrough_port, "server.pem", "server.key", mtls="passthrough",
                     header_style="alb", rules=[forward("echo")]),
        ],
        "trust_store": {"demo": {"ca_bundle": "ca-bundle.pem", "crls": ["crl-root.pem", "crl-intermediate.pem"]}},
        "target_group": {"echo": {"targets": [f"127.0.0.1:{echo_port}"]}},
    })


@dataclass
class Check:
    name: str
    expected: str
    observed: str
    passed: bool


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
        sock.bind(("127.0.0.1", 0))     # the usual port is taken: any free one will do
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _client_context(directory: Path, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(directory / "root-ca.pem"))
    if with_cert:
        ctx.load_cert_chain(directory / "clients" / "client1.pem", directory / "clients" / "client1.key")
    return ctx


async def _request(port: int, ctx: ssl.SSLContext) -> tuple[int, dict[str, str], bytes]:
    """One GET over a fresh TLS connection; (status, headers, body). Raises on a refused handshake."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), CHECK_TIMEOUT_S)
    try:
        writer.write(b"GET /demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), CHECK_TIMEOUT_S)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, OSError):
            pass
    if not raw:
        raise ConnectionError("closed without a response")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return status, headers, body


def _echoed_headers(body: bytes) -> dict[str, str]:
    return {n.lower(): v for n, v in orjson.loads(body)["headers"]}


async def run_checks(directory: Path, verify_port: int, passthrough_port: int) -> list[Check]:
    checks: list[Check] = []
    with_cert, without = _client_context(directory, True), _client_context(directory, False)

    try:
        status, _, body = await _request(verify_port, with_cert)
        checks.append(Check("verify + client certificate", "200", f"{status} {body.strip().decode()!r}",
                            status == 200))
    except Exception as exc:
        checks.append(Check("verify + client certificate", "200", f"error: {exc}", False))

    try:
        status, _, _ = await _request(verify_port, without)
        checks.append(Check("verify, no certificate", "handshake refused", f"got HTTP {status}", False))
    except (ssl.SSLError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        checks.append(Check("verify, no certificate", "handshake refused", f"refused ({reason})", True))

    name = "X-Amzn-Mtls-Clientcert"
    try:
        status, _, body = await _request(passthrough_port, with_cert)
        seen = _echoed_headers(body).get(name.lower())
        ok = status == 200 and seen is not None and seen.startswith("-----BEGIN%20CERTIFICATE-----")
        checks.append(Check("passthrough + client certificate", f"backend sees {name}",
                            f"{status}, {name}: {seen[:40] + '...' if seen else 'absent'}", ok))
    except Exception as exc:
        checks.append(Check("passthrough + client certificate", f"backend sees {name}", f"error: {exc}", False))

    try:
        status, _, body = await _request(passthrough_port, without)
        seen = _echoed_headers(body).get(name.lower())
        checks.append(Check("passthrough, no certificate", f"backend sees no {name}",
                            f"{status}, {name}: {'present' if seen else 'absent'}",
                            status == 200 and seen is None))
    except Exception as exc:
        checks.append(Check("passthrough, no certificate", f"backend sees no {name}", f"error: {exc}", False))
    return checks


def format_table(checks: list[Check]) -> str:
    rows = [("check", "expected", "observed", "result")]
    rows += [(c.name, c.expected, c.observed, "PASS" if c.passed else "FAIL") for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line]
    for i, r in enumerate(rows):
        out.append("| " + " | ".join(r[j].ljust(widths[j]) for j in range(4)) + " |")
        if i == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)


async def demo(once: bool, verify_port: int = DEMO_VERIFY_PORT,
               passthrough_port: int = DEMO_PASSTHROUGH_PORT, print_=print) -> int:
    with tempfile.TemporaryDirectory(prefix="mtls-gateway-demo-") as tmp:
        directory = Path(tmp)
        pki.init_dir(directory)
        echo = await start_echo()
        echo_port = echo.sockets[0].getsockname()[1]
        vsock, psock = _bind(verify_port), _bind(passthrough_port)
        vport, pport = vsock.getsockname()[1], psock.getsockname()[1]
        text = _config(directory, vport, pport, echo_port)
        config = cfg.loads(text, source="<demo>", base_dir=directory)
        runtime = build_runtime(config)
        worker = Worker(runtime, {"verify": vsock, "passthrough": psock})
        await worker.start()
        print_(f"mtls-gateway demo: throwaway PKI in {directory}")
        print_(f"  verify listener       https://localhost:{vport}/  (mtls = verify, fixed response)")
        print_(f"  passthrough listener  https://localhost:{pport}/  (mtls = passthrough -> echo backend "
               f"127.0.0.1:{echo_port})")
        print_(f"  hot paths: {runtime.native}")
        print_("")
        checks = await run_checks(directory, vport, pport)
        print_(format_table(checks))
        failed = [c for c in checks if not c.passed]
        print_(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed")
        if not once:
            ca = directory / "root-ca.pem"
            cert, key = directory / "clients" / "client1.pem", directory / "clients" / "client1.key"
            print_("\nTry it (the files live until the demo stops):")
            print_(f"  curl --cacert {ca} --cert {cert} --key {key} https://localhost:{vport}/")
            print_(f"  curl --cacert {ca} https://localhost:{vport}/      # refused: no certificate")
            print_(f"  curl --cacert {ca} --cert {cert} --key {key} https://localhost:{pport}/")
            print_(f"  curl --cacert {ca} https://localhost:{pport}/")
            print_(f"Logs: {directory}/access.log, {directory}/connection.log. Ctrl-C stops.")
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, worker.stopping.set)
            await worker.stopping.wait()
            print_("\nstopping: draining connections")
        await worker.drain(timeout_s=5.0)
        echo.close()
        await echo.wait_closed()
        return 1 if failed else 0


def main(once: bool, verify_port: int, passthrough_port: int) -> int:
    import uvloop
    return uvloop.run(demo(once, verify_port, passthrough_port))


__all__ = ["demo", "main", "run_checks", "format_table"]
