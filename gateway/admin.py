"""The admin listener: /metrics, /healthz, /readyz, /certificates, /revocations. Plain HTTP,
loopback by default.

How this works: the master binds the admin socket like any listener and every worker serves it, so
whichever worker accepts answers: metrics come from prometheus-client's multi-process files (every
worker's numbers, aggregated), health from the answering worker's own state. It never shares a port
with traffic and is never enabled unless `[admin]` is configured.

The revocation API (`GET /revocations`, `POST /revocations`, `DELETE /revocations/{store}/{serial}`)
exists only with `[admin] token_file`: every request must carry `Authorization: Bearer <token>`,
compared in constant time (a wrong or missing token is 401 and one warning line). A change is
written to the journal of gateway.revocations before the answer, applied by this worker at once
and by the others within a second; each change is one audit line in the error log, and the
connections of a revoked client are closed. Request bodies are JSON, at most `MAX_BODY_BYTES`.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from urllib.parse import parse_qs, unquote

import orjson
from cryptography import x509

from . import http1
from .errors import HTTPProtocolError
from .identity import rfc2253, serial_hex
from .revocations import RevocationError, close_revoked, parse_serial_text

MAX_BODY_BYTES = 65536
# a worker rolled out by a reload answers what its admin connections have sent within this, then
# closes them (the new generation serves the listener)
ADMIN_DRAIN_S = 1.0
# GET /revocations pages (offset, limit): a listing of 500,000 must not hold up a worker
DEFAULT_PAGE = 1000
MAX_PAGE = 10000
_JSON = b"application/json"


def _iso(ts) -> str | None:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None


def certificates_report(runtime) -> dict:
    """What is loaded: server certificates per listener, CA subjects and CRLs per trust store."""
    listeners = []
    for name, rt in runtime.listeners.items():
        certs = []
        for spec in rt.spec.certificates:
            try:
                leaf = x509.load_pem_x509_certificates(spec.cert.read_bytes())[0]
                certs.append({"file": str(spec.cert), "subject": rfc2253(leaf.subject),
                              "names": list(spec.names), "not_after": _iso(leaf.not_valid_after_utc),
                              "serial": serial_hex(leaf.serial_number)})
            except (OSError, ValueError) as exc:
                certs.append({"file": str(spec.cert), "error": str(exc)})
        listeners.append({"listener": name, "mtls": rt.spec.mtls, "trust_store": rt.spec.trust_store,
                          "certificates": certs})
    stores = []
    for name, store in runtime.trust_stores.items():
        by_subject = {ca.subject.public_bytes(): rfc2253(ca.subject) for ca in store.cas}
        crls = [{"issuer": by_subject.get(issuer, issuer.hex()),
                 "next_update": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None,
                 "revoked": len(store.revoked.get(issuer, ()))}
                for issuer, ts in store.crl_next_update.items()]
        stores.append({"trust_store": name, "generation": store.generation,
                       "cas": [{"subject": rfc2253(ca.subject), "not_after": _iso(ca.not_valid_after_utc)}
                               for ca in store.cas],
                       "crls": crls, "deny_serials": len(store.deny_serials)})
    return {"generation": runtime.generation, "listeners": listeners, "trust_stores": stores}


class AdminProtocol(asyncio.Protocol):
    """One admin connection. A silent or slow peer cannot hold it: each request must be whole
    within `[admin] idle_timeout_s` of the connection's start or of the last answer, and a worker
    keeps at most `[admin] max_connections` (any above is closed at once); each kind of cut is
    logged, at most once a second."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self._timer: asyncio.TimerHandle | None = None
        self.served = 0             # requests answered on this connection
        self.pending = False        # bytes of a request not answered yet
        # counted from the accept (the factory's call), before connection_made comes: a drain
        # that starts in between still waits for this one
        worker.admin_protocols.add(self)
        self.reader = http1.request_reader(http1.HTTPLimits(max_header_bytes=16384, max_header_count=64,
                                                            max_body_bytes=MAX_BODY_BYTES))
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # until connection_made
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        worker = self.worker
        spec = worker.runtime.config.admin
        if len(worker.admin_protocols) > spec.max_connections:
            now = time.monotonic()
            if now - worker.admin_refused_logged >= 1.0:
                worker.admin_refused_logged = now
                worker.runtime.errors.warning(
                    "admin_connection_refused", f"admin listener: {spec.max_connections} connections "
                    "open in this worker (admin.max_connections); closing new ones")
            worker.admin_protocols.discard(self)
            transport.abort()
            return
        self._arm(ADMIN_DRAIN_S if worker.admin_closing else None)

    def _arm(self, within: float | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(
            within if within is not None else self.worker.runtime.config.admin.idle_timeout_s,
            self._expired)

    def drain(self) -> None:
        """The worker stops serving the admin listener (rolled out by a reload): a connection
        between requests closes now; one with a request under way, or not one yet (it may be
        on its way), gets its answer (with Connection: close) within ADMIN_DRAIN_S, else it is
        cut."""
        if self.served and not self.pending:
            self.transport.close()
        else:
            self._arm(ADMIN_DRAIN_S)

    def _expired(self) -> None:
        self._timer = None
        if self.transport is None:
            return              # not made yet: connection_made arms its own timer
        worker = self.worker
        now = time.monotonic()
        if now - worker.admin_timeout_logged >= 1.0:
            worker.admin_timeout_logged = now
            peer = self.transport.get_extra_info("peername")
            worker.runtime.errors.info(
                "admin_timeout", "admin listener: no whole request within admin.idle_timeout_s; "
                "connection closed", client=f"{peer[0]}:{peer[1]}" if peer else None)
        self.transport.abort()      # nothing whole came in time: a silent or slow peer

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.worker.admin_protocols.discard(self)

    def data_received(self, data: bytes) -> None:
        self.pending = True
        try:
            self.reader.feed(data)
            while True:
                event = self.reader.next_event()
                if event is None:
                    return
                if isinstance(event, http1.Request):
                    self.request = event
                    self.body = []
                elif isinstance(event, http1.Data):
                    self.body.append(event.data)
                elif isinstance(event, http1.EndOfMessage):
                    try:
                        self._answer(self.request, b"".join(self.body))
                    except Exception as exc:     # an admin request never takes the worker down
                        self.worker.runtime.errors.error("admin_failed",
                                                         f"admin request failed: {exc!r}")
                        self.transport.write(http1.error_response(500, b"internal error\n"))
                        self.transport.close()
                        return
                    self.body = []
                    self.served += 1
                    self.pending = False
                    if not self.request.keep_alive or self.worker.admin_closing:
                        self.transport.close()
                        return
                    self._arm()      # the next request has its own time
        except HTTPProtocolError as exc:
            self.transport.write(http1.error_response(exc.status, b"bad request\n"))
            self.transport.close()

    def _answer(self, req: http1.Request, body_in: bytes) -> None:
        target = req.target.split(b"?", 1)
        path = target[0]
        query = target[1] if len(target) > 1 else b""
        extra: list[tuple[bytes, bytes]] = []
        if path == b"/revocations" or path.startswith(b"/revocations/"):
            status, ctype, body, extra = self._revocations(req, path, query, body_in)
        elif req.method not in (b"GET", b"HEAD"):
            status, ctype, body = 405, b"text/plain", b"GET only\n"
        elif path == b"/metrics":
            from .metrics import exposition
            observer = getattr(self.worker, "_observer", None)
            if observer is not None:
                observer.flush()        # this worker's latest counts; the others' are <= 1 s old
            body, ct = exposition()
            status, ctype = 200, ct.encode()
        elif path == b"/healthz":
            status, ctype, body = 200, b"text/plain", b"ok\n"
        elif path == b"/readyz":
            # the instance's readiness: 503 once it leaves (the master's stop); a worker rolled
            # out by a reload still says 200 for what it answers (the new generation serves)
            worker = self.worker
            ready = not worker.unready and (worker.serving or worker.admin_closing)
            status, ctype, body = (200, b"text/plain", b"ready\n") if ready else (503, b"text/plain", b"draining\n")
        elif path == b"/certificates":
            status, ctype = 200, _JSON
            body = orjson.dumps(certificates_report(self.worker.runtime), option=orjson.OPT_INDENT_2)
        else:
            status, ctype, body = 404, b"text/plain", b"not found\n"
        head = [(b"Content-Type", ctype), (b"Content-Length", b"%d" % len(body)),
                (b"Cache-Control", b"no-store")] + extra
        if not req.keep_alive or self.worker.admin_closing:
            head.append((b"Connection", b"close"))
        self.transport.write(http1.response_head(status, head) + (b"" if req.method == b"HEAD" else body))

    # -- the revocation API -----------------------------------------------------------------------
    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{peer[0]}:{peer[1]}" if peer else ""

    def _revocations(self, req: http1.Request, path: bytes, query: bytes, body_in: bytes,
                     ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        runtime = self.worker.runtime
        revocations = getattr(runtime, "revocations", None)
        token = getattr(runtime, "admin_token", None)
        if revocations is None or not token:
            return 404, b"text/plain", b"the revocation API is off (set [admin] token_file)\n", []
        given = b""
        for name, value in req.headers:
            if name.lower() == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip()
        if not hmac.compare_digest(given, token):
            runtime.errors.warning("admin_auth_failed", "revocation API: missing or wrong bearer token",
                                   client=self._peer(), method=req.method.decode("latin-1"),
                                   path=path.decode("latin-1")[:200])
            return (401, _JSON, _error_json("a valid bearer token is required"),
                    [(b"WWW-Authenticate", b'Bearer realm="mtls-gateway"')])
        try:
            if path == b"/revocations":
                if req.method in (b"GET", b"HEAD"):
                    return 200, _JSON, self._list(revocations, query), []
                if req.method == b"POST":
                    return self._post(runtime, revocations, body_in)
                return 405, _JSON, _error_json("GET or POST"), [(b"Allow", b"GET, HEAD, POST")]
            parts = path[len(b"/revocations/"):].split(b"/")
            if len(parts) != 2 or not all(parts):
                return 404, _JSON, _error_json("expected /revocations/{trust_store}/{serial}"), []
            if req.method != b"DELETE":
                return 405, _JSON, _error_json("DELETE"), [(b"Allow", b"DELETE")]
            return self._delete(runtime, revocations, unquote(parts[0].decode("latin-1")),
                                unquote(parts[1].decode("latin-1")))
        except RevocationError as exc:
            return exc.status, _JSON, _error_json(str(exc)), []
        except OSError as exc:
            runtime.errors.error("revocation_failed", f"revocation journal: {exc}")
            return 500, _JSON, _error_json("the revocation journal cannot be written"), []

    def _list(self, revocations, query: bytes) -> bytes:
        params = parse_qs(query.decode("latin-1"))
        store = params.get("trust_store", [None])[0]
        serial_text = params.get("serial", [None])[0]
        serial = parse_serial_text(serial_text) if serial_text is not None else None
        try:
            offset = int(params.get("offset", ["0"])[0])
            limit = int(params.get("limit", [str(DEFAULT_PAGE)])[0])
        except ValueError:
            raise RevocationError(400, "offset and limit must be integers") from None
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise RevocationError(400, f"offset must be >= 0 and limit 1..{MAX_PAGE}")
        entries, total = revocations.listing(store, serial, offset, limit)
        doc: dict = {"revocations": entries, "count": len(entries), "total": total}
        if offset + len(entries) < total:
            doc["next_offset"] = offset + len(entries)
        return orjson.dumps(doc)

    def _post(self, runtime, revocations, body_in: bytes):
        try:
            doc = orjson.loads(body_in)
        except orjson.JSONDecodeError as exc:
            raise RevocationError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise RevocationError(400, "expected a JSON object")
        unknown = set(doc) - {"trust_store", "serial", "reason"}
        if unknown:
            raise RevocationError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        store = doc.get("trust_store")
        if not isinstance(store, str) or not store:
            raise RevocationError(400, "trust_store must name a [trust_store.NAME]")
        serial = parse_serial_text(doc.get("serial"))
        change, created, seen = revocations.revoke(runtime.trust_stores, store, serial,
                                                   doc.get("reason") or "", self._peer())
        closed = close_revoked(runtime, seen, time.monotonic())
        if created:
            runtime.errors.warning("revocation_added", f"serial {serial_hex(serial)} revoked in "
                                   f"trust store {store}", trust_store=store,
                                   serial=serial_hex(serial), revocation_reason=change.entry[0],
                                   by=change.entry[2], connections_closed=closed)
        record, _ = revocations.listing(store, serial)
        return (201 if created else 200), _JSON, orjson.dumps(
            {"revocation": record[0] if record else None, "created": created}), []

    def _delete(self, runtime, revocations, store: str, serial_text: str):
        if store not in runtime.trust_stores:
            raise RevocationError(404, f"no trust store {store!r}")
        serial = parse_serial_text(serial_text)
        change, seen = revocations.unrevoke(runtime.trust_stores, store, serial, self._peer())
        close_revoked(runtime, seen, time.monotonic())
        if change is None:
            raise RevocationError(404, f"serial {serial_hex(serial)} is not revoked in {store}")
        runtime.errors.warning("revocation_removed", f"serial {serial_hex(serial)} no longer revoked "
                               f"in trust store {store}", trust_store=store,
                               serial=serial_hex(serial), by=self._peer())
        return 200, _JSON, orjson.dumps({"removed": {"trust_store": store,
                                                     "serial": serial_hex(serial),
                                                     "reason": change.entry[0]}}), []


def _error_json(message: str) -> bytes:
    return orjson.dumps({"error": message})
