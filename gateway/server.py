"""Listeners, the runtime they serve from, worker processes and signals.

How this works: `build_runtime(config)` turns a validated `Config` into everything a connection
needs (per listener: TLS contexts and verifier, compiled rules, header styles, limits; trust stores;
target groups; log sinks). It is built before any fork, so every worker shares the same SSL contexts
and therefore the same session-ticket keys: a client resumes whichever worker it lands on.

`serve(config)` binds every listener in the master, then either serves in-process (`workers = 1`) or
forks N workers that each run a uvloop loop over the inherited sockets while the master supervises
(a worker that dies is replaced and the event logged; the master never serves traffic).

SIGTERM/SIGINT leave, then drain: /readyz answers 503 at once while the listeners keep accepting for
`shutdown_delay_s` (0 unless set: a load balancer's health check takes the instance out meanwhile),
then every worker stops accepting, lets in-flight requests finish (up to `drain_timeout_s`), closes
idle keep-alive connections with close_notify and exits 0. A second SIGTERM drains at once.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import headers as hdrs
from . import native as native_switch
from . import paths
from .config import Config, ListenerSpec
from .errors import ConfigError, NativeUnavailable, Problem
from .http1 import HTTPLimits
from .logs import ErrorLog, LogSink
from .metrics import NULL_OBSERVER, Observer
from .routes import RouteTable
from .tls import ListenerTLS
from .tls import fallback_reason as tls_fallback_reason
from .trust import TrustStore
from .upstream import TargetGroup

if TYPE_CHECKING:
    from .accept import Acceptor
    from .revocations import Revocations

DRAIN_TIMEOUT_S = 30.0
LISTEN_BACKLOG = 1024
WORKER_RESTART_DELAY_S = 0.2
# The certificate_authorities list of a CertificateRequest: OpenSSL fails the handshake with an
# internal error near 64 KB (about 1,000 names); one TLS record (16 KB) is what cautious clients take.
ADVERTISE_MAX_BYTES = 60000
ADVERTISE_WARN_BYTES = 16384
CHAIN_SWEEP_INTERVAL_S = 30.0


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
    observer: Observer = NULL_OBSERVER
    tls_identity: tuple = ()
    header_policy: hdrs.HeaderPolicy = field(default_factory=hdrs.HeaderPolicy)
    path_policy: paths.PathPolicy = field(default_factory=paths.PathPolicy)
    # a request's Host must be a name of the certificate SNI chose: `strict_sni_host`, for a
    # listener that serves several certificates
    sni_host_strict: bool = False
    open_connections: int = 0
    protocols: set = field(default_factory=set)
    # the connections' deadlines on one loop timer (gateway.wheel), made by the first connection
    wheel: object = None
    # what the native core reads of this runtime as C fields (gateway._conn_c.Listener), made by
    # its first connection: the fields above are fixed from then on
    native: object = None
    # identity_fields (headers and access log), log_fields (None: every field), identity_signature
    identity_fields: tuple[str, ...] = ()
    log_fields: tuple[str, ...] | None = None
    signer: object = None


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
    # the revocation API's journal (gateway.revocations) and bearer token: None without
    # gateway.state_dir / admin.token_file
    revocations: "Revocations | None" = None
    admin_token: bytes | None = None
    # the CRL fetchers of trust stores with crl_fetch (gateway.crlfetch): each worker runs them
    crl_fetchers: list = field(default_factory=list)


def _tls_identity(spec: ListenerSpec, config: Config) -> tuple:
    """What a listener's SSL contexts are made of. While it is unchanged, a reload keeps the
    contexts, and with them the session-ticket keys: returning clients still resume, and resumption
    is then checked against the new trust store (a CRL update must not cost every client a full
    handshake, and must still refuse a revoked client's session)."""
    import hashlib

    def digest(path) -> str:
        try:
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            return ""

    from .trust import bundle_fingerprint

    certs = tuple((str(c.cert), digest(c.cert), str(c.key), digest(c.key), c.names) for c in spec.certificates)
    store = config.trust_stores.get(spec.trust_store) if spec.trust_store else None
    advertised = digest(store.ca_bundle) if (store is not None and spec.advertise_ca_names) else ""
    # what feeds the session id context (gateway.tls.session_id_context): the CA set, by content,
    # the depth and the expiry policy. A change makes new contexts (new ticket keys, new sid_ctx),
    # so no session admitted under the old policy resumes; a CRL-only change keeps them.
    verifies = store is not None and spec.mtls in ("verify", "optional")
    ca_set = bundle_fingerprint(store.ca_bundle) if verifies else ""  # type: ignore[union-attr]
    return (spec.name, certs, spec.mtls, spec.trust_store, spec.tls_min_version, spec.ciphers_tls12,
            spec.session_tickets, spec.session_timeout_s, spec.max_chain_depth, advertised, ca_set,
            spec.ignore_client_certificate_expiry, spec.alpn, spec.mtls_enforcement)


def build_runtime(config: Config, *, generation: int = 0, errors: ErrorLog | None = None,
                  previous: "Runtime | None" = None, fresh_tls: bool = False) -> Runtime:
    """Everything new from a config; raises ConfigError with every problem, touches nothing live.

    With `previous` (a reload), a listener whose TLS makings are unchanged keeps its SSL contexts
    (see `_tls_identity`) unless `fresh_tls` asks for new ones (ticket-key rotation), and log sinks
    with the same destination are kept open rather than opened again."""
    g = config.gateway
    errors = errors or ErrorLog(g.error_log, g.log_level)
    source = str(config.source or "<config>")
    # which twin of each hot path this runtime gets, worked out without changing anything: it is
    # handed to what is built here and applied only once everything validated (gateway.native)
    try:
        selection = native_switch.select(g.native)
    except NativeUnavailable as exc:
        raise ConfigError([Problem(source, "gateway.native", str(exc))]) from None
    native = selection.describe()
    problems: list[Problem] = []
    stores: dict[str, TrustStore] = {}
    for name, store_spec in config.trust_stores.items():
        try:
            stores[name] = TrustStore.from_files(name, store_spec.ca_bundle, store_spec.crls,
                                                 store_spec.deny_serials,
                                                 generation, source,
                                                 selection.trust_implementation)
        except ConfigError as exc:
            problems.extend(exc.problems)
    groups = {}
    for name, group_spec in config.target_groups.items():
        try:
            groups[name] = TargetGroup.from_spec(group_spec, errors)
        except OSError as exc:      # ssl.SSLError included: a TLS file unreadable since check
            problems.append(Problem(source, f"target_group.{name}.tls", f"TLS setup failed: {exc}"))
    if previous is not None and previous.access_log.dest == g.access_log:
        access = previous.access_log
    else:
        access = LogSink(g.access_log)
    if (previous is not None and previous.connection_log.dest == g.connection_log
            and previous.config.gateway.connection_log_format == g.connection_log_format):
        conns = previous.connection_log
    else:
        conns = LogSink(g.connection_log, format=g.connection_log_format)
    listeners: dict[str, ListenerRuntime] = {}
    for i, spec in enumerate(config.listeners):
        store = stores.get(spec.trust_store) if spec.trust_store else None
        if spec.advertise_ca_names and store is not None and spec.mtls != "off":
            size = sum(len(ca.subject.public_bytes()) + 2 for ca in store.cas)
            if size > ADVERTISE_MAX_BYTES:
                problems.append(Problem(source, f"listener[{i}].advertise_ca_names",
                    f"the {len(store.cas)} CA names of trust store {spec.trust_store!r} take {size} "
                    f"bytes in the CertificateRequest; at most {ADVERTISE_MAX_BYTES} fit (OpenSSL "
                    f"fails the handshake beyond): set advertise_ca_names = false or trim the bundle"))
                continue
            if size > ADVERTISE_WARN_BYTES:
                errors.warning("advertise_ca_names_large",
                               f"listener {spec.name}: the advertised CA names take {size} bytes; "
                               f"clients with small handshake buffers may fail beyond "
                               f"{ADVERTISE_WARN_BYTES}", listener=spec.name)
        ident = _tls_identity(spec, config)
        old = previous.listeners.get(spec.name) if previous is not None and not fresh_tls else None
        if old is not None and old.tls_identity == ident:
            tls = _with_store(old.tls, store if spec.mtls in ("verify", "optional") else None, spec)
            listeners[spec.name] = _listener_runtime(spec, tls, ident, groups, access, conns, errors)
            continue
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
                max_chain_bytes=spec.max_client_cert_chain_bytes,
                message_callback=selection.message_callback,
                trust_implementation=selection.trust_implementation,
                alpn=spec.alpn, report_only=spec.reports_only)
        except Exception as exc:   # an OpenSSL refusal of a cipher string, a key, ...
            problems.append(Problem(source, f"listener[{i}]", f"TLS setup failed: {exc}"))
            continue
        listeners[spec.name] = _listener_runtime(spec, tls, ident, groups, access, conns, errors)
    fetchers = []
    for name, store_spec in config.trust_stores.items():
        built = stores.get(name)
        if built is None:
            continue
        built.crl_stale_refuses = store_spec.crl_stale == "refuse"
        if store_spec.ocsp != "off":
            from .ocsp import OCSPChecker
            built.ocsp = OCSPChecker(built, mode=store_spec.ocsp, responder=store_spec.ocsp_responder,
                                     timeout_s=store_spec.ocsp_timeout_s,
                                     failure=store_spec.ocsp_failure, log=errors.log)
        if store_spec.crl_fetch:
            fetchers.append(_crl_fetcher(built, store_spec, g.state_dir, errors))
    revocations = None
    admin_token = None
    if g.state_dir is not None:
        from .revocations import Revocations
        try:
            revocations = Revocations(g.state_dir)
            revocations.load()
            revocations.attach(stores)
        except OSError as exc:
            problems.append(Problem(source, "gateway.state_dir",
                                    f"cannot keep revocations in {g.state_dir}: {exc}"))
    if config.admin is not None and config.admin.token_file is not None:
        try:
            admin_token = config.admin.token_file.read_bytes().strip()
        except OSError as exc:
            problems.append(Problem(source, "admin.token_file", f"cannot read: {exc}"))
    if problems:
        raise ConfigError(problems)         # the selection in force stays as it was
    _first_crls(fetchers, errors)
    native_switch.apply(selection)
    return Runtime(config, listeners, stores, groups, access, conns, errors, native, generation,
                   revocations, admin_token, fetchers)


def _crl_fetcher(store: TrustStore, spec, state_dir: Path | None, errors: ErrorLog):
    """The CRL fetcher of a trust store with `crl_fetch`; what earlier fetches kept under the state
    directory is loaded at once, so a restart or a reload starts with current CRLs."""
    from .crlfetch import CRLFetcher
    fetcher = CRLFetcher(store, spec, state_dir=state_dir, log=errors.log)
    fetcher.load_cached()
    return fetcher


def _first_crls(fetchers: list, errors: ErrorLog) -> None:
    """Before the workers start: fetch what no cached copy covers (bounded by each store's
    crl_fetch_timeout_s), so the first clients are not refused for a CRL not yet fetched. Inside a
    running loop (an in-process gateway, the tests) the workers' fetchers do it instead."""
    now = time.time()
    stale = [f for f in fetchers if f.stale(now)]
    if not stale:
        return
    try:
        asyncio.get_running_loop()
        return
    except RuntimeError:
        pass

    async def fetch_all() -> None:
        await asyncio.gather(*(f.refresh_all() for f in stale))

    asyncio.run(fetch_all())


def _listener_runtime(spec, tls, ident, groups, access, conns, errors) -> ListenerRuntime:
    limits = HTTPLimits(max_request_line_bytes=spec.max_request_line_bytes,
                        max_header_bytes=spec.max_header_bytes,
                        max_header_count=spec.max_header_count,
                        max_body_bytes=spec.max_body_bytes)
    return ListenerRuntime(
        spec=spec, port=spec.port, tls=tls, routes=RouteTable(spec.rules),
        header_styles=tuple(spec.header_style), http_limits=limits, target_groups=groups,
        access_log=access, connection_log=conns, errors=errors, tls_identity=ident,
        header_policy=hdrs.HeaderPolicy(spec.underscore_headers, spec.strip_request_headers + (
            (spec.identity_signature.header,) if spec.identity_signature is not None else ())),
        path_policy=paths.PathPolicy(spec.merge_slashes, spec.escaped_slashes),
        sni_host_strict=spec.host_must_match_sni and len(spec.certificates) > 1,
        identity_fields=tuple(spec.identity_fields), log_fields=spec.log_fields,
        signer=_signer(spec, errors))


def _signer(spec: ListenerSpec, errors: ErrorLog):
    """The listener's identity signer (gateway.signature), its key read now: a reload rotates it.
    The key ids go to the log, so an operator rotating keys sees which one signs (and which one
    backends should still accept) without ever seeing a key."""
    sig = spec.identity_signature
    if sig is None:
        return None
    from .signature import Signer, key_id, load_key
    signer = Signer(load_key(sig.key_file), sig.header)
    previous = key_id(load_key(sig.previous_key_file)) if sig.previous_key_file is not None else None
    errors.info("identity_signature", f"listener {spec.name} signs identities with key {signer.kid}"
                + (f" (backends may still accept {previous})" if previous else ""),
                listener=spec.name, kid=signer.kid, previous_kid=previous)
    return signer


def _with_store(old: ListenerTLS, store: TrustStore | None, spec: ListenerSpec) -> ListenerTLS:
    """The same SSL contexts (and ticket keys) with a verifier over the new trust store."""
    import copy
    from .trust import Verifier
    tls = copy.copy(old)
    tls.store = store
    if store is not None:
        tls.verifier = Verifier(store, max_chain_depth=spec.max_chain_depth,
                                ignore_expiry=spec.ignore_client_certificate_expiry,
                                max_chain_bytes=spec.max_client_cert_chain_bytes)
    return tls


def bind(spec: ListenerSpec) -> socket.socket:
    return _bind_address(spec.host, spec.port)


def _bind_address(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host or host == "" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host in ("::", ""):
        # ":8443" means every address, IPv4 included (dual-stack)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host or "::", port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    _OWN_BACKLOG[sock.fileno()] = LISTEN_BACKLOG
    return sock


# the listen backlog of each socket the gateway bound itself, by descriptor (workers inherit it):
# gateway.accept needs it to let uvloop's server accept, which calls listen() again. A socket
# systemd passed is not here: its Backlog= is systemd's to know.
_OWN_BACKLOG: dict[int, int] = {}


class Worker:
    """One event loop serving every listener from inherited sockets."""

    def __init__(self, runtime: Runtime, sockets: dict[str, socket.socket],
                 admin_socket: socket.socket | None = None) -> None:
        self.runtime = runtime
        self.sockets = sockets
        self.admin_socket = admin_socket
        self.servers: list[asyncio.AbstractServer | Acceptor] = []
        # made by start(), on the loop it serves (None until then; nothing waits on it before)
        self.stopping: asyncio.Event = None  # type: ignore[assignment]
        self.serving = False
        # the instance is leaving (the master's stop, not a reload): /readyz answers 503 and the
        # admin listener answers it until the worker exits
        self.unready = False
        self.admin_server: asyncio.AbstractServer | None = None
        self.admin_protocols: set = set()   # open admin connections (AdminProtocol keeps it)
        self.admin_closing = False          # a reload's rollout: admin connections are closing
        self.admin_refused_logged = 0.0     # the admin listener's lines, at most one a second each
        self.admin_timeout_logged = 0.0
        self._sampler: asyncio.TimerHandle | None = None
        self._revocation_timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task] = []
        self._cache_seen: dict[int, tuple[int, int]] = {}  # by id() of a live cache
        self.shutdown_delay_s = 0.0

    def runtime_ref(self) -> Runtime:
        return self.runtime

    async def start(self) -> None:
        from .proxy import new_protocol
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.runtime.access_log.attach(loop)
        self.runtime.connection_log.attach(loop)
        if self.admin_socket is not None:
            from .admin import AdminProtocol
            from .metrics import PrometheusObserver
            observer = PrometheusObserver()
            for rt in self.runtime.listeners.values():
                rt.observer = observer
            for name, store in self.runtime.trust_stores.items():
                observer.trust_store(name, store.generation, time.time(), {
                    issuer.hex(): ts for issuer, ts in store.crl_next_update.items()})
            self._observer = observer
            self._sample()
            self.admin_server = await loop.create_server(lambda: AdminProtocol(self),
                                                         sock=self.admin_socket)
        if self.runtime.revocations is not None:
            self._poll_revocations()
        for fetcher in self.runtime.crl_fetchers:
            fetcher._on_swap = self._crls_swapped
            self._tasks.append(loop.create_task(fetcher.run()))
        from . import accept
        group_observer = getattr(self, "_observer", None)
        for group in self.runtime.target_groups.values():
            group.start(group_observer)   # per worker: health checks report to this worker's observer
        # one bound method for every connection's protocol (a bound method made per accept is
        # an allocation per connection, kept as long as the connection)
        runtime_ref = self.runtime_ref
        for name, sock in self.sockets.items():
            # our own accept loop: at max_connections_per_worker it stops accepting, so new
            # connections wait in the kernel's backlog instead of being accepted and dropped
            server = accept.serve(loop, sock, lambda name=name: new_protocol(runtime_ref, name),
                                  self.runtime.listeners[name].spec.max_connections_per_worker,
                                  errors=self.runtime.errors, name=name,
                                  backlog=_OWN_BACKLOG.get(sock.fileno()))
            self.servers.append(server)
        self.serving = True

    def _crls_swapped(self, store: TrustStore) -> None:
        """Fetched CRLs changed (or went stale): the metrics' CRL gauges follow."""
        observer = getattr(self, "_observer", None)
        if observer is not None:
            observer.trust_store(store.name, store.generation, time.time(), {
                issuer.hex(): ts for issuer, ts in store.crl_next_update.items()})

    def _poll_revocations(self) -> None:
        """Every POLL_INTERVAL_S: what other workers wrote to the revocation journal, applied here,
        and the connections of clients revoked since closed."""
        from .revocations import POLL_INTERVAL_S, close_revoked
        runtime = self.runtime
        try:
            changes = runtime.revocations.poll(runtime.trust_stores)  # type: ignore[union-attr]
            if changes:
                close_revoked(runtime, changes, time.monotonic())
        except Exception as exc:    # a journal we cannot read must not stop the worker
            runtime.errors.error("revocation_poll_failed", f"revocation journal: {exc}")
        self._revocation_timer = asyncio.get_running_loop().call_later(
            POLL_INTERVAL_S, self._poll_revocations)

    def _sample(self) -> None:
        """Once a second: move the verified-chain cache's hit and miss counts, and what the data
        path counted, into the metrics.

        Listeners that name the same trust store with the same policy share one cache: each cache
        is counted once, under its trust store's name, not once per listener."""
        counted: set[int] = set()
        for rt in self.runtime.listeners.values():
            verifier = rt.tls.verifier
            cache = getattr(verifier, "cache", None)
            if cache is None or id(cache) in counted:
                continue
            counted.add(id(cache))
            store = rt.spec.trust_store or ""
            hits, misses = getattr(cache, "hits", 0), getattr(cache, "misses", 0)
            seen_hits, seen_misses = self._cache_seen.get(id(cache), (0, 0))
            self._observer.cache_counts(store, hits - seen_hits, misses - seen_misses)
            self._cache_seen[id(cache)] = (hits, misses)
        self._observer.flush()      # the data path's counts, kept in plain dicts, to the metrics
        self._sampler = asyncio.get_running_loop().call_later(1.0, self._sample)

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)
        loop.add_signal_handler(signal.SIGUSR2, self.leave)

    def leave(self) -> None:
        """The master's stop (SIGUSR2): not ready from now on, still accepting for
        `shutdown_delay_s` (the master's, given to run_worker), then the drain."""
        if self.unready:
            return
        self.unready = True
        asyncio.get_running_loop().call_later(self.shutdown_delay_s, self.stopping.set)

    def reopen_logs(self) -> None:
        """After logrotate moved the files: write to new ones from now on."""
        self.runtime.access_log.reopen()
        self.runtime.connection_log.reopen()

    async def run_until_stopped(self) -> None:
        await self.stopping.wait()
        await self.drain()

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S, on_closed=None) -> None:
        self.serving = False
        for server in self.servers:
            server.close()
        if self.admin_server is not None and not self.unready:
            # rolled out by a reload: the new generation answers /readyz (200) and /metrics; an
            # old worker answering 503 there would take a serving instance out of its balancer.
            # What its admin connections sent already is answered first (a probe accepted just
            # before the reload must not be cut unanswered)
            self.admin_server.close()
            self.admin_closing = True
            for admin in list(self.admin_protocols):
                admin.drain()
        from .admin import ADMIN_DRAIN_S
        admin_deadline = time.monotonic() + ADMIN_DRAIN_S + 0.5
        if on_closed is not None:
            on_closed()         # the master may now say the new generation alone accepts
        deadline = time.monotonic() + timeout_s
        while True:
            live = [p for rt in self.runtime.listeners.values() for p in list(rt.protocols)]
            for proto in live:
                proto.drain()
            # A connection accepted just before the close may not have its protocol yet (its
            # transport is being made): the acceptor still counts it. Leaving now would close it
            # mid-handshake, a failed request across a reload.
            admitting = sum(getattr(server, "active", 0) for server in self.servers)
            answering = (self.admin_closing and self.admin_protocols
                         and time.monotonic() < admin_deadline)
            if (not live and not admitting and not answering) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for proto in [p for rt in self.runtime.listeners.values() for p in list(rt.protocols)]:
            proto.transport.abort()
        for group in self.runtime.target_groups.values():
            group.close()
        if self._sampler is not None:
            self._sampler.cancel()
        if self._revocation_timer is not None:
            self._revocation_timer.cancel()
        for task in self._tasks:
            task.cancel()
        observer = getattr(self, "_observer", None)
        if observer is not None:
            observer.flush()        # counters outlive the worker in its metric files
        self.runtime.access_log.flush()
        self.runtime.connection_log.flush()


def _tell(fd: int, message: bytes) -> None:
    if fd >= 0:
        try:
            os.write(fd, message)
        except OSError:
            pass


def _new_loop() -> asyncio.AbstractEventLoop:
    import uvloop
    return uvloop.new_event_loop()


def run_worker(runtime: Runtime, sockets: dict[str, socket.socket], *, ready_fd: int = -1,
               drain_timeout_s: float = DRAIN_TIMEOUT_S, admin_socket: socket.socket | None = None,
               shutdown_delay_s: float = 0.0, left: list[int] | None = None) -> None:
    """`left` collects a SIGUSR2 that came before the loop's handlers were installed."""
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(runtime, sockets, admin_socket)
    worker.shutdown_delay_s = shutdown_delay_s

    async def main() -> None:
        await worker.start()
        worker.install_signals()
        if left:
            worker.leave()
        if ready_fd >= 0:
            os.write(ready_fd, b"R")
        await worker.stopping.wait()
        await worker.drain(drain_timeout_s, on_closed=lambda: _tell(ready_fd, b"S"))

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def serve(config: Config, *, config_path=None) -> int:
    """Bind (or take systemd's sockets), build, fork the workers and supervise them. Exit code."""
    return Master(config, config_path).run()


class _WorkerProc:
    __slots__ = ("pid", "slot", "generation", "ready", "ready_fd", "stopping")

    def __init__(self, pid: int, slot: int, generation: int, ready_fd: int) -> None:
        self.pid = pid
        self.slot = slot
        self.generation = generation
        self.ready = False
        self.ready_fd = ready_fd
        self.stopping = False


class Master:
    """Binds listeners, builds every SSL context once, forks and supervises workers; never serves.

    Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the configuration (build everything new,
    swap only if all of it is valid, roll the workers); SIGUSR1 reopens log files. A worker that dies
    is replaced within `WORKER_RESTART_DELAY_S`. Ticket keys live in the SSL contexts, so they are
    shared by all workers forked from one build and rotate when the workers are rolled onto a new
    build (`ticket_rotation_s`).
    """

    def __init__(self, config: Config, config_path=None) -> None:
        from . import systemd
        _raise_fd_limit()
        self.systemd = systemd
        self.config = config
        self.config_path = config_path
        self.generation = 0
        from .sessions import ChainStore
        self.chains = ChainStore.create()
        self.runtime = build_runtime(config, generation=0)
        self._share_chains(self.runtime)
        self.errors = self.runtime.errors
        self.sockets = self._sockets(config, {})
        self.metrics_dir: str | None = None
        self.admin_socket: socket.socket | None = None
        if config.admin is not None:
            import tempfile
            from .metrics import setup_multiprocess
            self.metrics_dir = tempfile.mkdtemp(prefix="mtls-gateway-metrics-")
            setup_multiprocess(self.metrics_dir)
            self.admin_socket = _bind_address(config.admin.host, config.admin.port)
        self.workers: dict[int, _WorkerProc] = {}
        self.pending_signals: list[int] = []
        self.stopping = False

    # -- sockets -----------------------------------------------------------------------------------
    def _sockets(self, config: Config, current: dict[str, socket.socket]) -> dict[str, socket.socket]:
        inherited = self.systemd.match_sockets(
            self.systemd.listen_fds(), [(l.name, l.host, l.port) for l in config.listeners])
        out: dict[str, socket.socket] = {}
        for spec in config.listeners:
            old = current.get(spec.name)
            if old is not None and _bound_to(old, spec.host, spec.port):
                out[spec.name] = old
            elif spec.name in inherited:
                sock = inherited[spec.name]
                sock.setblocking(False)
                out[spec.name] = sock
                self.errors.info("socket_inherited", f"listener {spec.name} uses a socket from systemd",
                                 listener=spec.name)
            else:
                out[spec.name] = bind(spec)
        return out

    # -- workers -----------------------------------------------------------------------------------
    def _spawn(self, slot: int) -> _WorkerProc:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                left: list[int] = []    # the master left before this worker's loop listens
                signal.signal(signal.SIGUSR2, lambda signum, frame: left.append(signum))
                run_worker(self.runtime, self.sockets, ready_fd=w,
                           drain_timeout_s=self._drain_timeout_s(), admin_socket=self.admin_socket,
                           shutdown_delay_s=float(self.config.gateway.shutdown_delay_s), left=left)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        proc = _WorkerProc(pid, slot, self.generation, r)
        self.workers[pid] = proc
        self.errors.info("worker_started", f"worker {slot} started", pid=pid, generation=self.generation)
        return proc

    def _drain_timeout_s(self) -> float:
        return float(getattr(self.config.gateway, "drain_timeout_s", DRAIN_TIMEOUT_S))

    def _wait_pipe(self, procs: list[_WorkerProc], message: bytes, timeout_s: float) -> bool:
        """Wait until each worker wrote `message` on its pipe: b"R" serving, b"S" stopped accepting."""
        import select
        deadline = time.monotonic() + timeout_s
        waiting = {p.ready_fd: p for p in procs if p.ready_fd >= 0}
        done = 0
        while waiting and time.monotonic() < deadline:
            rl, _, _ = select.select(list(waiting), [], [], max(0.0, deadline - time.monotonic()))
            for fd in rl:
                proc = waiting.pop(fd)
                data = os.read(fd, 1)
                if data == message:
                    done += 1
                    if message == b"R":
                        proc.ready = True
                if not data:            # the worker is gone
                    os.close(fd)
                    proc.ready_fd = -1
        return done == len(procs)

    def _wait_ready(self, procs: list[_WorkerProc], timeout_s: float = 30.0) -> bool:
        return self._wait_pipe(procs, b"R", timeout_s)

    def _stop_worker(self, proc: _WorkerProc, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: drain now (a reload's rollout, a second stop). SIGUSR2: the instance leaves
        (not ready, accepting for `shutdown_delay_s`, then the drain)."""
        proc.stopping = True
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.workers.pop(pid, None)
            if proc is None:
                continue
            if self.metrics_dir is not None:
                from .metrics import mark_dead
                mark_dead(pid)
            if proc.ready_fd >= 0:
                os.close(proc.ready_fd)
                proc.ready_fd = -1
            if proc.stopping or self.stopping:
                self.errors.info("worker_stopped", f"worker {proc.slot} stopped", pid=pid)
                continue
            self.errors.warning("worker_died", f"worker {proc.slot} exited "
                                f"({_describe_status(status)}); replacing it", pid=pid)
            time.sleep(WORKER_RESTART_DELAY_S)
            self._spawn(proc.slot)

    # -- reload and rotation -----------------------------------------------------------------------
    def reload(self, reason: str = "reload", *, fresh_tls: bool = False) -> bool:
        """Build everything new from the config file; swap and roll the workers only if valid."""
        from . import config as cfg
        self.systemd.reloading()
        try:
            new_config = cfg.load(self.config_path) if self.config_path else self.config
            runtime = build_runtime(new_config, generation=self.generation + 1, errors=self.errors,
                                    previous=self.runtime, fresh_tls=fresh_tls)
            sockets = self._sockets(new_config, self.sockets)
        except ConfigError as exc:
            for problem in exc.problems:
                self.errors.error("reload_failed", str(problem))
            self.errors.error("reload_failed", f"{reason}: configuration invalid "
                              f"({len(exc.problems)} problem(s)); still serving the previous one")
            self.systemd.ready(f"reload failed: {len(exc.problems)} problem(s); serving previous config")
            return False
        except OSError as exc:
            self.errors.error("reload_failed", f"{reason}: {exc}; still serving the previous one")
            self.systemd.ready("reload failed; serving previous config")
            return False
        old_sockets = self.sockets
        self._share_chains(runtime)
        self.config, self.runtime, self.sockets = new_config, runtime, sockets
        self.generation += 1
        self._roll()
        for name, sock in old_sockets.items():
            if sockets.get(name) is not sock:
                _OWN_BACKLOG.pop(sock.fileno(), None)
                sock.close()
        self.errors.info("reloaded", f"{reason}: generation {self.generation} serving")
        self.systemd.ready(f"serving generation {self.generation}")
        return True

    def _share_chains(self, runtime: Runtime) -> None:
        for rt in runtime.listeners.values():
            rt.tls.chain_store = self.chains

    def _roll(self) -> None:
        """Replace the workers one at a time: a new one is serving before an old one drains."""
        old = [p for p in self.workers.values() if p.generation != self.generation]
        count = max(1, self.config.gateway.workers)
        stopped = []
        for slot in range(count):
            proc = self._spawn(slot)
            self._wait_ready([proc])
            if old:
                stopped.append(old.pop(0))
                self._stop_worker(stopped[-1])
        for proc in old:
            stopped.append(proc)
            self._stop_worker(proc)
        # from here on only the new generation accepts: what it says about revocation holds
        self._wait_pipe(stopped, b"S", 5.0)

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        import select
        r, w = os.pipe()
        os.set_blocking(w, False)
        os.set_blocking(r, False)
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD,
                    signal.SIGUSR2):
            signal.signal(sig, lambda signum, frame: None)
        for spec in self.config.listeners:
            self.errors.info("listening", f"listener {spec.name} on {spec.host}:{spec.port} "
                             f"mtls={spec.mtls}", listener=spec.name)
        self.errors.info("native", f"hot paths: {self.runtime.native}")
        build = native_switch.interpreter_build()
        self.errors.info("interpreter", f"python {sys.version.split()[0]} ({sys.executable}, "
                         f"{build})", python=sys.version.split()[0], build=build)
        fallback = tls_fallback_reason(self.config.gateway.native)
        if fallback is not None:
            # the start-up self-test found the native pump unusable: one line, then the pure twin
            self.errors.warning("native_fallback", f"native TLS pump unavailable: {fallback}; "
                                "its pure twin serves")
        count = max(1, self.config.gateway.workers)
        procs = [self._spawn(slot) for slot in range(count)]
        self._wait_ready(procs)
        self.systemd.ready(f"serving {len(self.config.listeners)} listener(s) with {count} worker(s)")
        watchdog_s = self.systemd.watchdog_interval_s()
        rotation_s = float(getattr(self.config.gateway, "ticket_rotation_s", 0) or 0)
        next_rotation = time.monotonic() + rotation_s if rotation_s > 0 else None
        next_ping = time.monotonic()
        watch_s = self.config.gateway.watch_interval_s if self.config.gateway.watch_files else None
        watched = _file_state(self.config)
        settling: dict[str, tuple] | None = None     # a changed state seen once, not yet applied
        next_watch = time.monotonic() + watch_s if watch_s else None
        next_sweep = time.monotonic() + CHAIN_SWEEP_INTERVAL_S
        while True:
            now = time.monotonic()
            if watchdog_s is not None and now >= next_ping:
                self.systemd.watchdog()
                next_ping = now + watchdog_s
            if next_rotation is not None and now >= next_rotation and not self.stopping:
                self.reload("ticket key rotation", fresh_tls=True)
                next_rotation = time.monotonic() + rotation_s
            if now >= next_sweep:
                self.chains.sweep()
                next_sweep = now + CHAIN_SWEEP_INTERVAL_S
            if next_watch is not None and now >= next_watch and not self.stopping:
                current = _file_state(self.config)
                if current == watched:
                    settling = None
                elif current != settling:
                    # changed since the last look: wait one more look, so a file still being
                    # written in place is never read half-way (a rename or Kubernetes' ..data
                    # symlink swap is whole at once; an in-place writer is not)
                    settling = current
                else:
                    # a certificate, key, CA bundle, CRL or the configuration itself changed on
                    # disk and held still for a look (an ACME client, a CRL fetcher, a Secret or
                    # ConfigMap update): reload as SIGHUP would, once
                    self.reload("watched files changed")
                    watched = _file_state(self.config)
                    settling = None
                next_watch = time.monotonic() + watch_s  # type: ignore[operator]  # set: watch_s is
            timeout = 1.0
            if watchdog_s is not None:
                timeout = min(timeout, max(0.0, next_ping - time.monotonic()))
            try:
                readable, _, _ = select.select([r], [], [], timeout)
            except InterruptedError:
                readable = [r]
            signals = b""
            if readable:
                try:
                    signals = os.read(r, 64)
                except BlockingIOError:
                    pass
            for signum in signals:
                if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                    self.stopping = True
                    self.systemd.stopping()
                    delay = float(self.config.gateway.shutdown_delay_s)
                    if delay > 0:
                        self.errors.info("stopping", f"not ready: /readyz answers 503; accepting for "
                                         f"{delay:g} s while load balancers take this instance out, "
                                         "then draining workers", shutdown_delay_s=delay)
                    else:
                        self.errors.info("stopping", "draining workers")
                    for proc in list(self.workers.values()):
                        self._stop_worker(proc, signal.SIGUSR2)
                    # the workers hold the listening sockets now: once they stop accepting, a new
                    # connection is refused at once (a balancer retries it elsewhere) instead of
                    # waiting in the backlog for the master to exit
                    for sock in self.sockets.values():
                        sock.close()
                elif signum in (signal.SIGTERM, signal.SIGINT):
                    self.errors.info("stopping", "second stop signal: draining workers now")
                    for proc in list(self.workers.values()):
                        self._stop_worker(proc)
                elif signum == signal.SIGHUP and not self.stopping:
                    self.reload("SIGHUP")
                elif signum == signal.SIGUSR1:
                    self.runtime.access_log.reopen()
                    self.runtime.connection_log.reopen()
                    for proc in self.workers.values():
                        try:
                            os.kill(proc.pid, signal.SIGUSR1)
                        except ProcessLookupError:
                            pass
            self._reap()
            if self.stopping and not self.workers:
                break
        for sock in self.sockets.values():
            sock.close()
        if self.admin_socket is not None:
            self.admin_socket.close()
        if self.metrics_dir is not None:
            import shutil
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.chains.destroy()
        signal.set_wakeup_fd(-1)
        return 0


def _bound_to(sock: socket.socket, host: str, port: int) -> bool:
    """Is this listening socket already the one a listener with (host, port) needs?"""
    try:
        bound_host, bound_port = sock.getsockname()[:2]
    except OSError:
        return False
    wanted = {"": "::", "localhost": "127.0.0.1"}.get(host, host)
    return bound_port == port and bound_host == wanted


def _raise_fd_limit() -> None:
    """Every connection is a descriptor (two when forwarded): take the hard limit, as nginx's
    worker_rlimit_nofile would be set to."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _file_state(config: Config) -> dict[str, tuple]:
    """(inode, size, mtime) of every file the configuration loads, and of the configuration file
    itself, to notice replacements. stat() follows symbolic links, so a Kubernetes volume's `..data`
    swap (every file a link through `..data` to a new directory) shows as new inodes."""
    paths = [p for l in config.listeners for c in l.certificates for p in (c.cert, c.key)]
    if config.source is not None:
        paths.append(config.source)
    for store in config.trust_stores.values():
        paths.append(store.ca_bundle)
        paths.extend(store.crls)
    state: dict[str, tuple[int, ...]] = {}
    for path in paths:
        try:
            st = os.stat(path)
            state[str(path)] = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            state[str(path)] = ()
    return state


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"
