"""Listeners, the runtime they serve from, worker processes and signals.

How this works: `build_runtime(config)` turns a validated `Config` into everything a connection
needs (per listener: TLS contexts and verifier, compiled rules, header styles, limits; trust stores;
target groups; log sinks). It is built before any fork, so every worker shares the same SSL contexts
and therefore the same session-ticket keys: a client resumes whichever worker it lands on.

`serve(config)` binds every listener in the master, then either serves in-process (`workers = 1`) or
forks N workers that each run a uvloop loop over the inherited sockets while the master supervises
(a worker that dies is replaced and the event logged; the master never serves traffic).

SIGTERM/SIGINT drain: stop accepting, let in-flight requests finish (up to `DRAIN_TIMEOUT_S`), close
idle keep-alive connections with close_notify, exit 0.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from dataclasses import dataclass, field

from . import headers as hdrs
from .config import Config, ListenerSpec
from .errors import ConfigError, Problem
from .http1 import HTTPLimits
from .logs import ErrorLog, LogSink
from .routes import RouteTable
from .tls import ListenerTLS
from .trust import TrustStore
from .upstream import TargetGroup

DRAIN_TIMEOUT_S = 30.0
LISTEN_BACKLOG = 1024
WORKER_RESTART_DELAY_S = 0.2


@dataclass(eq=False)
class ListenerRuntime:
    spec: ListenerSpec
    port: int
    tls: ListenerTLS
    routes: RouteTable
    header_styles: tuple[str, ...]
    http_limits: HTTPLimits
    target_groups: dict[str, TargetGroup]
    access_log: LogSink
    connection_log: LogSink
    errors: ErrorLog
    open_connections: int = 0
    protocols: set = field(default_factory=set)


@dataclass(eq=False)
class Runtime:
    config: Config
    listeners: dict[str, ListenerRuntime]
    trust_stores: dict[str, TrustStore]
    target_groups: dict[str, TargetGroup]
    access_log: LogSink
    connection_log: LogSink
    errors: ErrorLog
    native: str = "python"
    generation: int = 0


def build_runtime(config: Config, *, generation: int = 0, errors: ErrorLog | None = None) -> Runtime:
    """Everything new from a config; raises ConfigError with every problem, touches nothing live."""
    g = config.gateway
    errors = errors or ErrorLog(g.error_log, g.log_level)
    source = str(config.source or "<config>")
    native = hdrs.set_native(g.native)
    problems: list[Problem] = []
    stores: dict[str, TrustStore] = {}
    for name, spec in config.trust_stores.items():
        try:
            stores[name] = TrustStore.from_files(name, spec.ca_bundle, spec.crls, spec.deny_serials,
                                                 generation, source)
        except ConfigError as exc:
            problems.extend(exc.problems)
    groups = {name: TargetGroup(name, spec.targets, connect_timeout_s=spec.connect_timeout_s,
                                read_timeout_s=spec.read_timeout_s,
                                max_idle_per_target=spec.max_idle_per_target)
              for name, spec in config.target_groups.items()}
    access = LogSink(g.access_log)
    conns = LogSink(g.connection_log)
    listeners: dict[str, ListenerRuntime] = {}
    for i, spec in enumerate(config.listeners):
        store = stores.get(spec.trust_store) if spec.trust_store else None
        try:
            tls = ListenerTLS(
                name=spec.name,
                certificates=[(c.cert, c.key, c.names) for c in spec.certificates],
                mtls=spec.mtls, store=store if spec.mtls in ("verify", "optional") else None,
                max_chain_depth=spec.max_chain_depth,
                ignore_expiry=spec.ignore_client_certificate_expiry,
                advertise_ca_names=spec.advertise_ca_names, min_version=spec.tls_min_version,
                ciphers_tls12=spec.ciphers_tls12, session_tickets=spec.session_tickets,
                session_timeout_s=spec.session_timeout_s,
                max_chain_bytes=spec.max_client_cert_chain_bytes)
        except Exception as exc:   # an OpenSSL refusal of a cipher string, a key, ...
            problems.append(Problem(source, f"listener[{i}]", f"TLS setup failed: {exc}"))
            continue
        limits = HTTPLimits(max_request_line_bytes=spec.max_request_line_bytes,
                            max_header_bytes=spec.max_header_bytes,
                            max_header_count=spec.max_header_count,
                            max_body_bytes=spec.max_body_bytes)
        listeners[spec.name] = ListenerRuntime(
            spec=spec, port=spec.port, tls=tls, routes=RouteTable(spec.rules),
            header_styles=tuple(spec.header_style), http_limits=limits, target_groups=groups,
            access_log=access, connection_log=conns, errors=errors)
    if problems:
        raise ConfigError(problems)
    return Runtime(config, listeners, stores, groups, access, conns, errors, native, generation)


def bind(spec: ListenerSpec) -> socket.socket:
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and spec.host in ("::", ""):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((spec.host or "0.0.0.0", spec.port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class Worker:
    """One event loop serving every listener from inherited sockets."""

    def __init__(self, runtime: Runtime, sockets: dict[str, socket.socket]) -> None:
        self.runtime = runtime
        self.sockets = sockets
        self.servers: list[asyncio.AbstractServer] = []
        self.stopping: asyncio.Event | None = None

    def runtime_ref(self) -> Runtime:
        return self.runtime

    async def start(self) -> None:
        from .proxy import GatewayProtocol
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.runtime.access_log.attach(loop)
        self.runtime.connection_log.attach(loop)
        for name, sock in self.sockets.items():
            server = await loop.create_server(
                lambda name=name: GatewayProtocol(self.runtime_ref, name), sock=sock,
                backlog=LISTEN_BACKLOG)
            self.servers.append(server)

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)

    async def run_until_stopped(self) -> None:
        await self.stopping.wait()
        await self.drain()

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        for server in self.servers:
            server.close()
        deadline = time.monotonic() + timeout_s
        while True:
            live = [p for rt in self.runtime.listeners.values() for p in list(rt.protocols)]
            for proto in live:
                proto.drain()
            if not live or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for proto in [p for rt in self.runtime.listeners.values() for p in list(rt.protocols)]:
            proto.transport.abort()
        for group in self.runtime.target_groups.values():
            group.close()
        self.runtime.access_log.flush()
        self.runtime.connection_log.flush()


def _new_loop() -> asyncio.AbstractEventLoop:
    import uvloop
    return uvloop.new_event_loop()


def run_worker(runtime: Runtime, sockets: dict[str, socket.socket]) -> None:
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(runtime, sockets)

    async def main() -> None:
        await worker.start()
        worker.install_signals()
        await worker.run_until_stopped()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def serve(config: Config, *, on_ready=None) -> int:
    """Bind, build, then serve in-process or through forked workers. Returns an exit code."""
    runtime = build_runtime(config)
    errors = runtime.errors
    sockets = {spec.name: bind(spec) for spec in config.listeners}
    errors.info("native", f"hot paths: {runtime.native}")
    for spec in config.listeners:
        errors.info("listening", f"listener {spec.name} on {spec.host}:{spec.port} mtls={spec.mtls}",
                    listener=spec.name)
    workers = max(1, config.gateway.workers)
    if on_ready is not None:
        on_ready(sockets)
    if workers == 1:
        run_worker(runtime, sockets)
        return 0
    return _supervise(runtime, sockets, workers)


def _supervise(runtime: Runtime, sockets, workers: int) -> int:
    errors = runtime.errors
    children: dict[int, int] = {}
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                run_worker(runtime, sockets)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children[pid] = slot
        errors.info("worker_started", f"worker {slot} started", pid=pid)

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(workers):
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        slot = children.pop(pid, None)
        if slot is None:
            continue
        if not stopping:
            errors.warning("worker_died", f"worker {slot} exited ({_describe_status(status)}); replacing it",
                           pid=pid)
            time.sleep(WORKER_RESTART_DELAY_S)
            spawn(slot)
    for sock in sockets.values():
        sock.close()
    return 0


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"
