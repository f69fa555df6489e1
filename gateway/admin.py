"""The admin listener: /metrics, /healthz, /readyz, /certificates. Plain HTTP, loopback by default.

How this works: the master binds the admin socket like any listener and every worker serves it, so
whichever worker accepts answers: metrics come from prometheus-client's multi-process files (every
worker's numbers, aggregated), health from the answering worker's own state. It never shares a port
with traffic and is never enabled unless `[admin]` is configured.
"""
from __future__ import annotations

import asyncio
import time

import orjson
from cryptography import x509

from . import http1
from .errors import HTTPProtocolError
from .identity import rfc2253, serial_hex


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
    def __init__(self, worker) -> None:
        self.worker = worker
        self.reader = http1.request_reader(http1.HTTPLimits(max_header_bytes=16384, max_header_count=64))
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # until connection_made

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except HTTPProtocolError as exc:
            self.transport.write(http1.error_response(exc.status, b"bad request\n"))
            self.transport.close()
            return
        while True:
            event = self.reader.next_event()
            if event is None:
                return
            if isinstance(event, http1.Request):
                self.request = event
            elif isinstance(event, http1.EndOfMessage):
                self._answer(self.request)
                if not self.request.keep_alive:
                    self.transport.close()
                    return

    def _answer(self, req: http1.Request) -> None:
        path = req.target.split(b"?", 1)[0]
        if req.method not in (b"GET", b"HEAD"):
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
            ready = self.worker.serving and not self.worker.stopping.is_set()
            status, ctype, body = (200, b"text/plain", b"ready\n") if ready else (503, b"text/plain", b"draining\n")
        elif path == b"/certificates":
            status, ctype = 200, b"application/json"
            body = orjson.dumps(certificates_report(self.worker.runtime), option=orjson.OPT_INDENT_2)
        else:
            status, ctype, body = 404, b"text/plain", b"not found\n"
        head = [(b"Content-Type", ctype), (b"Content-Length", b"%d" % len(body)),
                (b"Cache-Control", b"no-store")]
        if not req.keep_alive:
            head.append((b"Connection", b"close"))
        self.transport.write(http1.response_head(status, head) + (b"" if req.method == b"HEAD" else body))
