"""The servers under test: the gateway, nginx and HAProxy, as real processes pinned to a CPU set.

How this works: every peer serves the same endpoints, one listening port per (mTLS mode, server key
type), from one process tree started once for the whole run, so no measurement pays for a start and
an idle peer costs nothing while another is measured. Each endpoint answers every request with the
same small fixed response ("ok"), so what is measured is TLS and a minimal HTTP exchange:

- `off`: plain TLS, no certificate asked for.
- `verify`: a client certificate is required and verified against the CA bundle (root +
  intermediate); the gateway `mtls = "verify"`, nginx `ssl_verify_client on`, HAProxy
  `verify required`.
- `passthrough`: a certificate is asked for, not verified, and its PEM passed on: the gateway
  `mtls = "passthrough"`, nginx `ssl_verify_client optional_no_ca` with `$ssl_client_escaped_cert`
  in a header, HAProxy `verify optional` ignoring every error, with `ssl_c_der` in a header.

TLS settings are aligned: TLS 1.2 and 1.3, the gateway's TLS 1.2 cipher list (ECDHE with AES-GCM or
ChaCha20), server cipher preference, a shared session cache and session tickets, a 300 s session
lifetime; access logs off. Configuration is rendered by pure functions (unit-tested) from the
endpoints and the PKI as the peer sees it: a peer run in another root (`chroot`, e.g. a newer Debian
unpacked with debootstrap) gets the PKI and its configuration copied into a directory inside that
root and sees them at the matching path.

Discovery never installs anything: a peer that is not there is reported with the command that would
add it, and the run goes on without it.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway import testing

from . import certs, cpu

MODES = ("off", "passthrough", "verify")
KEYS = ("ecdsa", "rsa")
BODY = "ok"
CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"     # the gateway's default (config.DEFAULT_CIPHERS_TLS12)
SESSION_TIMEOUT_S = 300                           # the gateway's default session_timeout_s
VERIFY_DEPTH = 2                                  # leaf -> intermediate -> root
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
ROOT_WORKDIR = "tmp"                              # where files go inside a root
PASSTHROUGH_HEADER = "X-Amzn-Mtls-Clientcert"


@dataclass(frozen=True)
class Endpoint:
    mode: str
    key: str
    port: int

    @property
    def name(self) -> str:
        return f"{self.mode}-{self.key}"


@dataclass
class PeerSpec:
    """A peer found on this machine (or in a root): what it is and how to start it."""
    kind: str                   # "gateway" | "nginx" | "haproxy"
    name: str                   # unique in a run: "gateway", "nginx", "nginx@trixie"
    binary: str                 # path as seen inside `root` when there is one
    version: str
    openssl: str                # the OpenSSL it runs on
    root: Path | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        where = f", in {self.root}" if self.root else ""
        return f"{self.kind} {self.version} on {self.openssl}{where}"

    def as_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "binary": self.binary, "version": self.version,
                "openssl": self.openssl, "root": str(self.root) if self.root else None,
                "notes": self.notes}


@dataclass(frozen=True)
class Missing:
    name: str
    reason: str


# --- discovery ------------------------------------------------------------------------------------

def _run(cmd: list[str], timeout: float = 20.0) -> str:
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    return out.stdout.decode(errors="replace")


def parse_nginx_version(text: str) -> tuple[str | None, str | None]:
    """(nginx version, OpenSSL it runs on) from `nginx -V`; "running with" beats "built with"."""
    version = re.search(r"nginx version: \S+?/(\S+)", text)
    running = re.search(r"running with (OpenSSL [^\s)]+)", text)
    built = re.search(r"built with (OpenSSL \S+)", text)
    ssl = running or built
    return (version.group(1) if version else None), (ssl.group(1) if ssl else None)


def parse_haproxy_version(text: str) -> tuple[str | None, str | None]:
    """(HAProxy version, OpenSSL it runs on) from `haproxy -vv`."""
    version = re.search(r"HA-?Proxy version (\S+)", text)
    running = re.search(r"Running on OpenSSL version : (OpenSSL \S+)", text)
    built = re.search(r"Built with OpenSSL version : (OpenSSL \S+)", text)
    ssl = running or built
    return (version.group(1) if version else None), (ssl.group(1) if ssl else None)


def _root_prefix(root: Path | None) -> list[str]:
    return ["chroot", str(root)] if root is not None else []


def _resolve(binary: str, root: Path | None) -> str | None:
    if root is None:
        return shutil.which(binary)
    for candidate in ([binary] if binary.startswith("/") else [f"/usr/sbin/{binary}", f"/usr/bin/{binary}",
                                                                 f"/usr/local/sbin/{binary}"]):
        if (root / candidate.lstrip("/")).exists():
            return candidate
    return None


def root_label(root: Path) -> str:
    """A short name for a root: its Debian codename when it has one, else the folder's name."""
    try:
        text = (root / "etc/os-release").read_text()
        m = re.search(r"^VERSION_CODENAME=(\S+)", text, re.M)
        if m:
            return m.group(1)
    except OSError:
        pass
    return root.name


def find_server(kind: str, binary: str, root: Path | None) -> PeerSpec | Missing:
    name = kind if root is None else f"{kind}@{root_label(root)}"
    package = {"nginx": "nginx", "haproxy": "haproxy"}[kind]
    if root is not None and os.geteuid() != 0:
        return Missing(name, f"running in {root} needs chroot, which needs root; run as root or drop --root")
    path = _resolve(binary, root)
    if path is None:
        hint = (f"`apt-get install {package}` would add it" if root is None
                else f"`chroot {root} apt-get install {package}` would add it")
        return Missing(name, f"{binary} not found{' in ' + str(root) if root else ''}; {hint}")
    try:
        text = _run([*_root_prefix(root), path, "-V" if kind == "nginx" else "-vv"])
    except (OSError, subprocess.SubprocessError) as exc:
        return Missing(name, f"{path} does not run: {exc}")
    version, ssl = (parse_nginx_version if kind == "nginx" else parse_haproxy_version)(text)
    if version is None:
        return Missing(name, f"{path} does not look like {kind}: {text.strip()[:120]!r}")
    return PeerSpec(kind, name, path, version, ssl or "OpenSSL ?", root)


_GATEWAY_FACTS = """
import importlib.metadata, json, sys
from OpenSSL import SSL
from gateway.native import interpreter_build
raw = SSL.OpenSSL_version(SSL.OPENSSL_VERSION)
try:
    version = importlib.metadata.version("mtls-gateway")
except importlib.metadata.PackageNotFoundError:
    version = "?"
print(json.dumps({"version": version, "openssl": raw.decode() if isinstance(raw, bytes) else str(raw),
                  "python": sys.version.split()[0], "build": interpreter_build(),
                  "pyOpenSSL": importlib.metadata.version("pyOpenSSL"),
                  "cryptography": importlib.metadata.version("cryptography")}))
"""


def find_gateway(python: str | None = None) -> PeerSpec:
    """The gateway as `python` (default: this interpreter) runs it; its versions are read by
    running that interpreter when it is another one."""
    import json

    from gateway.native import interpreter_build
    if python is None or os.path.realpath(python) == os.path.realpath(sys.executable):
        python = sys.executable
        from OpenSSL import SSL
        raw = SSL.OpenSSL_version(SSL.OPENSSL_VERSION)
        try:
            version = importlib.metadata.version("mtls-gateway")
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        facts = {"version": version, "openssl": raw.decode() if isinstance(raw, bytes) else str(raw),
                 "python": sys.version.split()[0], "build": interpreter_build(),
                 "pyOpenSSL": importlib.metadata.version("pyOpenSSL"),
                 "cryptography": importlib.metadata.version("cryptography")}
    else:
        out = subprocess.run([python, "-c", _GATEWAY_FACTS], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"{python} cannot run the gateway: {out.stderr.strip()[-300:]}")
        facts = json.loads(out.stdout)
    openssl = " ".join(facts["openssl"].split()[:2])
    notes = [f"python {facts['python']} ({python}, {facts['build']})",
             f"pyOpenSSL {facts['pyOpenSSL']}", f"cryptography {facts['cryptography']}"]
    revision = _source_revision()
    if revision:
        notes.append(revision)
    return PeerSpec("gateway", "gateway", python, facts["version"], openssl, notes=notes)


def _source_revision() -> str | None:
    """The commit the gateway runs from when it runs from a git checkout ("+ changes" when the
    package's files differ from it): results of a work in progress say which one."""
    import gateway
    where = Path(gateway.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                              timeout=5, text=True)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--", "."],
                               capture_output=True, timeout=5, text=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"git {head.stdout.strip()}{' + changes' if dirty else ''}"


# --- configuration rendering (pure) ---------------------------------------------------------------

def render_gateway(endpoints: list[Endpoint], pki: certs.BenchPKI, *, workers: int, crl: bool,
                   workdir: Path) -> str:
    doc = {
        "gateway": {"workers": workers, "access_log": "off", "connection_log": "off",
                    "error_log": workdir / "gateway-error.log", "log_level": "warning"},
        # no cap on requests per connection, as nginx's keepalive_requests below
        "listener": [testing.listener(ep.name, ep.port, pki.server_certs[ep.key], pki.server_keys[ep.key],
                                      mtls=ep.mode, trust_store="bench" if ep.mode == "verify" else None,
                                      session_timeout_s=SESSION_TIMEOUT_S, max_requests_per_connection=0,
                                      header_style="alb",
                                      rules=[testing.fixed_response(body=BODY, content_type="text/plain")])
                     for ep in endpoints],
    }
    if any(ep.mode == "verify" for ep in endpoints):
        doc["trust_store"] = {"bench": {"ca_bundle": pki.ca_bundle, "crls": list(pki.crls) if crl else None}}
    return testing.toml(doc)


def render_nginx(endpoints: list[Endpoint], pki: certs.BenchPKI, *, workers: int, crl: bool,
                 workdir: Path, as_root: bool) -> str:
    d = workdir
    out = ["daemon off;", "master_process on;", f"worker_processes {workers};",
           f"pid {d}/nginx.pid;", f"error_log {d}/nginx-error.log warn;"]
    if as_root:
        out.append("user nobody nogroup;")   # workers drop root; keys were read by the master
    out += ["events { worker_connections 4096; }", "http {",
            "    access_log off;", "    default_type text/plain;",
            f"    client_body_temp_path {d}/body;", f"    proxy_temp_path {d}/proxy;",
            f"    fastcgi_temp_path {d}/fastcgi;", f"    uwsgi_temp_path {d}/uwsgi;",
            f"    scgi_temp_path {d}/scgi;",
            "    keepalive_requests 1000000;", "    keepalive_timeout 60s;",
            "    ssl_protocols TLSv1.2 TLSv1.3;", f"    ssl_ciphers {CIPHERS_TLS12};",
            "    ssl_prefer_server_ciphers on;", "    ssl_session_cache shared:bench:20m;",
            "    ssl_session_tickets on;", f"    ssl_session_timeout {SESSION_TIMEOUT_S}s;"]
    for ep in endpoints:
        out += ["    server {", f"        listen 127.0.0.1:{ep.port} ssl;",
                f"        ssl_certificate {pki.server_certs[ep.key]};",
                f"        ssl_certificate_key {pki.server_keys[ep.key]};"]
        if ep.mode == "verify":
            out += [f"        ssl_client_certificate {pki.ca_bundle};", "        ssl_verify_client on;",
                    f"        ssl_verify_depth {VERIFY_DEPTH};"]
            if crl:
                out.append(f"        ssl_crl {pki.crl_bundle};")
        elif ep.mode == "passthrough":
            out += ["        ssl_verify_client optional_no_ca;"]
        out += ["        location / {"]
        if ep.mode == "passthrough":
            out.append(f"            add_header {PASSTHROUGH_HEADER} $ssl_client_escaped_cert always;")
        out += [f'            return 200 "{BODY}";', "        }", "    }"]
    out.append("}")
    return "\n".join(out) + "\n"


def render_haproxy(endpoints: list[Endpoint], pki: certs.BenchPKI, *, workers: int, crl: bool) -> str:
    out = ["global", f"    nbthread {workers}", "    maxconn 4000",
           "    tune.ssl.cachesize 100000", f"    tune.ssl.lifetime {SESSION_TIMEOUT_S}",
           f"    ssl-default-bind-ciphers {CIPHERS_TLS12}",
           "    ssl-default-bind-options ssl-min-ver TLSv1.2",
           "", "defaults", "    mode http", "    timeout connect 5s", "    timeout client 60s",
           "    timeout server 60s", "    timeout http-request 10s", "    timeout http-keep-alive 60s", ""]
    for ep in endpoints:
        bind = f"    bind 127.0.0.1:{ep.port} ssl crt {pki.server_combined[ep.key]}"
        if ep.mode == "verify":
            bind += f" ca-file {pki.ca_bundle} verify required"
            if crl:
                bind += f" crl-file {pki.crl_bundle}"
        elif ep.mode == "passthrough":
            # HAProxy needs a CA file to ask for a certificate; every verification error is ignored
            bind += f" ca-file {pki.ca_bundle} verify optional ca-ignore-err all crt-ignore-err all"
        out += [f"frontend {ep.name.replace('-', '_')}", bind,
                f"    http-request return status 200 content-type text/plain string {BODY}"]
        if ep.mode == "passthrough":
            out.append(f"    http-after-response set-header {PASSTHROUGH_HEADER} %[ssl_c_der,base64]")
        out.append("")
    return "\n".join(out)


# --- running --------------------------------------------------------------------------------------

def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_ports(ports: list[int], proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.5):
                pending.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not listening on {pending[0]} after {timeout:.0f} s")
        time.sleep(0.05)


class Peer:
    """One started peer: its process tree, endpoints and files."""

    def __init__(self, spec: PeerSpec, pki: certs.BenchPKI, endpoints: list[tuple[str, str]], *,
                 workers: int, server_cpus: tuple[int, ...], crl: bool, workdir: Path) -> None:
        self.spec = spec
        self.workers = workers
        self.server_cpus = server_cpus
        ports = free_ports(len(endpoints))
        self.endpoints = {(m, k): Endpoint(m, k, p) for (m, k), p in zip(endpoints, ports)}
        self._host_dir = workdir       # where the files are, from here
        self._cleanup: Path | None = None
        if spec.root is not None:
            inside = Path("/") / ROOT_WORKDIR / tempfile.mkdtemp(
                prefix=f"mtls-gateway-bench-{spec.name.replace('@', '-')}-",
                dir=spec.root / ROOT_WORKDIR).rpartition("/")[2]
            self._host_dir = spec.root / inside.relative_to("/")
            self._cleanup = self._host_dir
            seen = inside
        else:
            self._host_dir.mkdir(parents=True, exist_ok=True)
            seen = self._host_dir
        self.pki = certs.relocate(pki, self._host_dir / "pki", seen / "pki") if spec.root else pki
        eps = list(self.endpoints.values())
        if spec.kind == "gateway":
            text = render_gateway(eps, self.pki, workers=workers, crl=crl, workdir=seen)
            conf = self._host_dir / "gateway.toml"
            cmd = testing.gateway_command(conf, spec.binary)
        elif spec.kind == "nginx":
            text = render_nginx(eps, self.pki, workers=workers, crl=crl, workdir=seen,
                                as_root=os.geteuid() == 0)
            conf = self._host_dir / "nginx.conf"
            cmd = [spec.binary, "-e", f"{seen}/nginx-error.log", "-p", f"{seen}/", "-c", f"{seen}/nginx.conf"]
        else:
            text = render_haproxy(eps, self.pki, workers=workers, crl=crl)
            conf = self._host_dir / "haproxy.cfg"
            cmd = [spec.binary, "-db", "-f", f"{seen}/haproxy.cfg"]
        conf.write_text(text)
        self.config_text = text
        self.command = [*_root_prefix(spec.root), *cmd]
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self._log = workdir / f"{spec.kind}.out"     # outside any root: it outlives the peer's files

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def port(self, mode: str, key: str) -> int:
        return self.endpoints[(mode, key)].port

    def start(self) -> None:
        with open(self._log, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=cpu.pin(self.server_cpus))
        try:
            _wait_ports([e.port for e in self.endpoints.values()], self.proc, START_TIMEOUT_S)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{self.spec.name} did not start: {exc}; {self.log_tail()}") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self._log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)   # its own session: its workers too
                except ProcessLookupError:
                    pass
                proc.wait()
        if self._cleanup is not None:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None


__all__ = ["MODES", "KEYS", "Endpoint", "PeerSpec", "Missing", "Peer", "find_server", "find_gateway",
           "parse_nginx_version", "parse_haproxy_version", "render_gateway", "render_nginx",
           "render_haproxy", "root_label", "free_ports"]
