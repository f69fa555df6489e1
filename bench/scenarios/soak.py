"""Soak: mixed load against a real gateway for a bounded time, watching memory and descriptors.

    python -m mtls_gateway_bench.scenarios.soak [--minutes 10] [--workers 1] [--sample-s 5] [--json soak.json]

How this works: a throwaway PKI, two echo backends and the gateway (its own process, `workers`
workers, logs off) are started on 127.0.0.1. Client threads then run, all at once, until the time
is up: full handshakes (a new connection per request), resumed handshakes (TLS session reuse),
keep-alive requests on long-lived connections, 1 MiB uploads, and clients with an untrusted
certificate (each must be refused). Every 60 s one backend is stopped and started again (the other
keeps serving). Every `--sample-s` seconds the RSS and open descriptors of the gateway's processes
are sampled.

It fails (exit 1) if any good request fails, if a bad client is ever admitted, or if RSS or
descriptors grow by more than 5% from the end of warm-up (the first fifth of the run, at least
30 s) to the end. A request answered 502/503 while its backend was deliberately down is counted
apart ("upstream_outage"), not as a failure of the gateway.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from gateway import testing

GROWTH_LIMIT = 0.05
UPLOAD_BYTES = 1 << 20
RESTART_EVERY_S = 60.0


def _tree(pid: int) -> list[int]:
    """The gateway master and its workers."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return out + [int(c) for c in children]


def _sample(pid: int) -> tuple[int, int]:
    rss = fds = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return rss, fds


class Echo:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.down = False

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.echo", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        testing.wait_port(self.port)
        self.down = False

    def stop(self) -> None:
        self.down = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Soak:
    def __init__(self, args) -> None:
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.failures: list[str] = []

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def fail(self, what: str) -> None:
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)
            self.counts["failed"] = self.counts.get("failed", 0) + 1

    # -- clients -----------------------------------------------------------------------------------
    def _request(self, conn: http.client.HTTPSConnection, method: str, path: str, body=None) -> tuple[int, bytes]:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()

    def _judge(self, kind: str, status: int) -> None:
        if status == 200:
            self.count(kind)
        elif status in (502, 503) and any(e.down for e in self.echoes):
            self.count("upstream_outage")
        else:
            self.fail(f"{kind}: HTTP {status}")

    def full(self) -> None:
        while not self.stop.is_set():
            conn = http.client.HTTPSConnection("localhost", self.port, context=self.good, timeout=30)
            try:
                self._judge("full", self._request(conn, "GET", "/fixed")[0])
            except Exception as exc:
                self.fail(f"full: {exc!r}")
            finally:
                conn.close()

    def resumed(self) -> None:
        session = None
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                    with self.good.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
                        tls.sendall(b"GET /fixed HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                        data = b""
                        while chunk := tls.recv(65536):
                            data += chunk
                        session = tls.session
                        self.count("resumed_ok" if tls.session_reused else "resumed_full")
                status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
                self._judge("resumed", status)
            except Exception as exc:
                self.fail(f"resumed: {exc!r}")

    def keep_alive(self) -> None:
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.good, timeout=30)
        while not self.stop.is_set():
            try:
                self._judge("keep_alive", self._request(conn, "GET", "/app/ka")[0])
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()        # an idle-closed keep-alive connection: reconnect, as clients do
                conn = http.client.HTTPSConnection("localhost", self.port, context=self.good, timeout=30)
            except Exception as exc:
                self.fail(f"keep_alive: {exc!r}")
        conn.close()

    def upload(self) -> None:
        body = os.urandom(UPLOAD_BYTES)
        digest = hashlib.sha256(body).hexdigest()
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.good, timeout=60)
        while not self.stop.is_set():
            try:
                status, data = self._request(conn, "POST", "/app/upload", body)
                if status == 200 and orjson.loads(data)["body_sha256"] != digest:
                    self.fail("upload: body corrupted")
                else:
                    self._judge("upload", status)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                conn = http.client.HTTPSConnection("localhost", self.port, context=self.good, timeout=60)
            except Exception as exc:
                self.fail(f"upload: {exc!r}")
            time.sleep(0.05)
        conn.close()

    def bad(self) -> None:
        while not self.stop.is_set():
            conn = http.client.HTTPSConnection("localhost", self.port, context=self.bad_ctx, timeout=30)
            try:
                status, _ = self._request(conn, "GET", "/fixed")
                self.fail(f"bad client admitted: HTTP {status}")
            except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected, OSError):
                self.count("bad_refused")
            finally:
                conn.close()
            time.sleep(0.01)

    def restarts(self) -> None:
        i = 0
        while not self.stop.wait(RESTART_EVERY_S):
            echo = self.echoes[i % len(self.echoes)]
            echo.stop()
            time.sleep(2.0)
            echo.start()
            self.count("upstream_restarts")
            i += 1

    # -- run ---------------------------------------------------------------------------------------
    def run(self) -> int:
        from gateway import pki
        args = self.args
        with tempfile.TemporaryDirectory(prefix="mtls-gateway-soak-") as tmp:
            d = Path(tmp)
            pki.init_dir(d / "pki")
            other = pki.make_intermediate(pki.make_root("soak stranger root"), "soak stranger CA")
            pki.make_client(other, "client1").write(d / "bad.pem", d / "bad.key")
            self.echoes = [Echo(testing.free_port()), Echo(testing.free_port())]
            for e in self.echoes:
                e.start()
            self.port = testing.free_port()
            p = d / "pki"
            config = testing.write_config(d / "gateway.toml", {
                "gateway": {"workers": args.workers, "access_log": "off", "connection_log": "off",
                            "error_log": d / "error.log"},
                "listener": [testing.listener("soak", self.port, p / "server.pem", p / "server.key", mtls="verify",
                                              rules=[testing.fixed_response(path="/fixed"), testing.forward("app")])],
                "trust_store": {"main": {"ca_bundle": p / "ca-bundle.pem",
                                         "crls": [p / "crl-root.pem", p / "crl-intermediate.pem"]}},
                "target_group": {"app": {"targets": [f"127.0.0.1:{e.port}" for e in self.echoes]}},
            })
            gateway = testing.GatewayProcess(config, [self.port], stderr=subprocess.DEVNULL)
            self.good = ssl.create_default_context(cafile=str(p / "root-ca.pem"))
            self.good.load_cert_chain(p / "clients" / "client1.pem", p / "clients" / "client1.key")
            self.bad_ctx = ssl.create_default_context(cafile=str(p / "root-ca.pem"))
            self.bad_ctx.load_cert_chain(d / "bad.pem", d / "bad.key")
            threads = [threading.Thread(target=f, daemon=True) for f in
                       (self.full, self.resumed, self.keep_alive, self.upload, self.bad, self.restarts)]
            for t in threads:
                t.start()
            duration = args.minutes * 60
            warmup = max(30.0, duration / 5)
            started = time.monotonic()
            samples = []
            baseline = None
            while time.monotonic() - started < duration:
                time.sleep(min(args.sample_s, max(0.0, duration - (time.monotonic() - started))))
                elapsed = time.monotonic() - started
                rss, fds = _sample(gateway.pid)
                samples.append({"t": round(elapsed, 1), "rss": rss, "fds": fds, **dict(self.counts)})
                if baseline is None and elapsed >= warmup:
                    baseline = (rss, fds)
                print(f"[{elapsed:6.0f}s] rss {rss / 2**20:7.1f} MiB  fds {fds:4d}  "
                      f"{' '.join(f'{k}={v}' for k, v in sorted(self.counts.items()))}", flush=True)
            self.stop.set()
            for t in threads:
                t.join(70)
            final = _sample(gateway.pid)
            code = gateway.stop(timeout=60)
            for e in self.echoes:
                e.stop()
        baseline = baseline or (samples[0]["rss"], samples[0]["fds"])
        rss_growth = (final[0] - baseline[0]) / baseline[0]
        fd_growth = (final[1] - baseline[1]) / max(1, baseline[1])
        verdict = {
            "minutes": args.minutes, "workers": args.workers, "counts": self.counts,
            "rss_after_warmup": baseline[0], "rss_end": final[0], "rss_growth": round(rss_growth, 4),
            "fds_after_warmup": baseline[1], "fds_end": final[1], "fd_growth": round(fd_growth, 4),
            "failures": self.failures, "gateway_exit": code, "samples": samples,
        }
        ok = (not self.failures and rss_growth <= GROWTH_LIMIT and fd_growth <= GROWTH_LIMIT and code == 0)
        verdict["passed"] = ok
        if args.json:
            Path(args.json).write_bytes(orjson.dumps(verdict, option=orjson.OPT_INDENT_2))
        print(f"\nsoak {'PASSED' if ok else 'FAILED'}: rss {baseline[0] / 2**20:.1f} -> {final[0] / 2**20:.1f} MiB "
              f"({rss_growth:+.1%}), fds {baseline[1]} -> {final[1]} ({fd_growth:+.1%}), "
              f"failures {len(self.failures)}, exit {code}")
        for f in self.failures[:10]:
            print("  failure:", f)
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--json", help="write the samples and verdict here")
    return Soak(parser.parse_args(argv)).run()


if __name__ == "__main__":
    raise SystemExit(main())
