"""CRLs fetched from distribution points, on real gateways: a real HTTP distribution point on
127.0.0.1 (its answers changed by the test: DER, PEM, garbage, a CRL of another CA, a 500, a slow
answer, nothing at all), real TLS clients, the echo backend behind the gateway.

The PKI: a root R and two issuing CAs A and B, all three in the bundle. A and B name
`/root.crl` as their distribution point (RFC 5280 4.2.1.13: where the CRL covering *them* is
published, so R's CRL, served as PEM): it revokes B and a client R issued directly. A's own CRL,
covering its clients, is served as DER at `/a.crl`, which the trust store names in `crl_urls`; it
revokes one client of A."""
from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway import pki, testing
from gateway.crlfetch import RETRY_FIRST_S

from .conftest import native_setting

pytestmark = pytest.mark.integration

CRL_HIT = "Failed:ClientCertCrlHit"
CRL_STALE = "Failed:ClientCertCrlStale"
NEXT_UPDATE_METRIC = "mtls_gateway_crl_next_update_timestamp_seconds"


# -- the distribution point ---------------------------------------------------------------------

@dataclass
class Answer:
    body: bytes
    status: int = 200
    delay_s: float = 0.0
    content_type: str = "application/pkix-crl"


class DistributionPoint:
    """An HTTP server on 127.0.0.1:`port` answering each path as `answers` says (404 for others),
    counting what it was asked; `stop()` closes the socket (the port then refuses connections) and
    `start()` opens it again on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: dict[str, Answer] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._released = threading.Event()     # wakes slow answers at the end of a test
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes, **kw) -> None:
        with self._lock:
            self.answers[path] = Answer(body, **kw)

    def asked(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    def start(self) -> "DistributionPoint":
        point = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with point._lock:
                    point.hits[path] += 1
                    answer = point.answers.get(path)
                if answer is None:
                    answer = Answer(b"not here\n", status=404, content_type="text/plain")
                if answer.delay_s:
                    point._released.wait(answer.delay_s)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer.body)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self._released.clear()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


# -- the PKI ------------------------------------------------------------------------------------

@dataclass
class PKI:
    dir: Path
    root: pki.Issued
    a: pki.Issued
    b: pki.Issued
    clients: dict[str, pki.Issued]
    root_url: str               # the distribution point A and B name (R's CRL)
    a_url: str                  # A's CRL, named by the trust store's crl_urls

    def ctx(self, client: str) -> ssl.SSLContext:
        return testing.client_context(self.dir / "root.pem", self.dir / f"{client}.pem",
                                      self.dir / f"{client}.key")

    def root_crl(self, *, number: int = 1) -> x509.CertificateRevocationList:
        return pki.make_crl(self.root, [self.b.serial, self.clients["of_root"].serial],
                            crl_number=number)

    def a_crl(self, *, number: int = 1) -> x509.CertificateRevocationList:
        return pki.make_crl(self.a, [self.clients["revoked"].serial], crl_number=number)


def make_pki(d: Path, point: DistributionPoint) -> PKI:
    d.mkdir(parents=True, exist_ok=True)
    root_url, a_url = point.url("/root.crl"), point.url("/a.crl")
    root = pki.make_root("crl-fetch test root CA")
    a = pki.make_intermediate(root, "crl-fetch issuing CA A", crl_urls=[root_url])
    b = pki.make_intermediate(root, "crl-fetch issuing CA B", crl_urls=[root_url])
    server = pki.make_server(root, ["localhost", "127.0.0.1"])
    clients = {"good": pki.make_client(a, "good client of A"),
               "revoked": pki.make_client(a, "revoked client of A"),
               "of_b": pki.make_client(b, "client of the revoked CA B"),
               "of_root": pki.make_client(root, "revoked client of R")}
    (d / "root.pem").write_bytes(root.cert_pem)
    (d / "bundle.pem").write_bytes(root.cert_pem + a.cert_pem + b.cert_pem)
    server.write(d / "server.pem", d / "server.key")
    for name, issued in clients.items():
        issued.write(d / f"{name}.pem", d / f"{name}.key")
    return PKI(d, root, a, b, clients, root_url, a_url)


def serve_good_crls(point: DistributionPoint, p: PKI,
                    ) -> tuple[x509.CertificateRevocationList, x509.CertificateRevocationList]:
    """R's CRL as PEM, A's as DER (both forms a distribution point may send); the two CRLs."""
    root_crl, a_crl = p.root_crl(), p.a_crl()
    point.serve("/root.crl", pki.crl_pem(root_crl), content_type="application/x-pem-file")
    point.serve("/a.crl", a_crl.public_bytes(Encoding.DER))
    return root_crl, a_crl


# -- the gateway --------------------------------------------------------------------------------

class Env:
    """One test's distribution point, PKI, state directory and gateways."""

    def __init__(self, tmp_path: Path, echo_port: int, point: DistributionPoint) -> None:
        self.tmp = tmp_path
        self.echo_port = echo_port
        self.point = point
        self.pki = make_pki(tmp_path / "pki", point)
        self.state = tmp_path / "state"
        self.gateways: list[testing.GatewayProcess] = []

    def config(self, d: Path, ports: dict[str, int], *, workers: int, crl_stale: str,
               timeout_s: float, admin: bool) -> Path:
        p = self.pki
        head = testing.toml({"gateway": {"workers": workers, "state_dir": self.state,
                                         "log_level": "info", **testing.log_settings(d)}})
        doc: dict = {
            "listener": [testing.listener("edge", ports["edge"], p.dir / "server.pem",
                                          p.dir / "server.key", mtls="verify",
                                          rules=[testing.forward("echo")])],
            "trust_store": {"main": {"ca_bundle": p.dir / "bundle.pem", "crl_fetch": True,
                                     "crl_urls": [p.a_url], "crl_stale": crl_stale,
                                     "crl_fetch_timeout_s": timeout_s}},
            "target_group": {"echo": {"targets": [f"127.0.0.1:{self.echo_port}"]}},
        }
        if admin:
            doc = {"admin": {"bind": f"127.0.0.1:{ports['admin']}"}, **doc}
        path = d / "gateway.toml"
        path.write_text(f"{head}{native_setting('')}{testing.toml(doc)}")
        return path

    def start(self, *, workers: int = 1, crl_stale: str = "refuse", timeout_s: float = 2,
              admin: bool = False, timeout: float = testing.START_TIMEOUT_S,
              ) -> testing.GatewayProcess:
        d = self.tmp / f"gw{len(self.gateways)}"
        d.mkdir()
        names = ["edge", "admin"] if admin else ["edge"]
        ports = dict(zip(names, testing.free_ports(len(names))))
        config = self.config(d, ports, workers=workers, crl_stale=crl_stale,
                             timeout_s=timeout_s, admin=admin)
        gw = testing.GatewayProcess(config, ports, logs=testing.logs_in(d), wait=False)
        self.gateways.append(gw)
        gw.wait_ready(timeout)
        return gw


@pytest.fixture
def point():
    dp = DistributionPoint(testing.free_port()).start()
    yield dp
    dp.stop()


@pytest.fixture
def env(tmp_path, echo_backend, point):
    e = Env(tmp_path, echo_backend.port, point)
    yield e
    problems = []
    for gw in e.gateways:
        code = gw.stop()
        if code != 0:
            problems.append(f"gateway exited with {code}: {gw.stderr_tail()}")
        if gw.proc.stderr is not None:
            gw.proc.stderr.close()      # a failed test's traceback may keep the process object
        if [r for r in gw.lines("error") if r.get("reason") == "worker_died"]:
            problems.append("a worker died")
    assert not problems, problems


# -- clients ------------------------------------------------------------------------------------

def attempt(port: int, ctx: ssl.SSLContext) -> tuple[int, str, bytes]:
    """One GET on a new connection: (HTTP status, "", body) or (0, the client's error, b"")."""
    try:
        _, _, raw = testing.https_get(port, ctx, timeout=5)
    except (ssl.SSLError, OSError) as exc:
        return 0, f"{type(exc).__name__}: {exc}", b""
    if not raw.startswith(b"HTTP/1.1 "):
        return 0, f"no HTTP answer: {raw[:80]!r}", b""
    return int(raw[9:12]), "", raw.partition(b"\r\n\r\n")[2]


def assert_served(gw: testing.GatewayProcess, p: PKI, client: str, times: int = 4) -> None:
    """`client` is answered 200 by the echo backend, which saw its serial, `times` in a row (on
    whichever worker each connection lands)."""
    for _ in range(times):
        status, error, body = attempt(gw.port("edge"), p.ctx(client))
        assert status == 200, f"{client}: {error or status}"
        echoed = json.loads(body)
        serials = [v for k, v in echoed["headers"]
                   if k.lower() == "x-amzn-mtls-clientcert-serial-number"]
        assert [int(s, 16) for s in serials] == [p.clients[client].serial], echoed


def assert_refused(gw: testing.GatewayProcess, p: PKI, client: str, status: str, alert: str,
                   times: int = 4) -> None:
    """`client`'s handshakes end with `alert`, and the gateway logs `status` for them in the error
    log and the connection log."""
    serial = f"{p.clients[client].serial:x}"

    def logged() -> int:
        return sum(1 for r in gw.lines("error") if r.get("serial") == serial
                   and r.get("verify_status") == status)
    before = logged()
    for _ in range(times):
        code, error, _ = attempt(gw.port("edge"), p.ctx(client))
        assert code == 0, f"{client} was answered {code}, expected a refusal with {status}"
        assert alert in error.lower(), error
    poll(lambda: logged() >= before + times, 5, what=f"{times} error-log lines with {status}")
    gw.wait_log("connection", lambda r: r.get("tls_verify_status") == status
                and r.get("result") == "refused"
                and int(r.get("leaf_client_cert_serial_number") or "0", 16) == p.clients[client].serial)


def hit(gw, p, client, times=4):
    assert_refused(gw, p, client, CRL_HIT, "certificate revoked", times)


def stale(gw, p, client, times=4):
    assert_refused(gw, p, client, CRL_STALE, "bad certificate", times)


def errors_with(gw: testing.GatewayProcess, reason: str, **fields) -> list[dict]:
    return [r for r in gw.lines("error") if r.get("reason") == reason
            and all(r.get(k) == v for k, v in fields.items())]


def staleness(gw: testing.GatewayProcess) -> list[str]:
    """The store's staleness changes the gateway logged, in order."""
    return [r["reason"] for r in gw.lines("error") if r.get("reason") in ("crl_stale", "crl_current")]


def admin_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def next_update_samples(text: str, store: str) -> dict[str, float]:
    """The crl_next_update gauge's samples of `store`, by issuer label."""
    out = {}
    for line in text.splitlines():
        if line.startswith(NEXT_UPDATE_METRIC + "{") and f'trust_store="{store}"' in line:
            labels, value = line.rsplit(" ", 1)
            issuer = labels.split('issuer="', 1)[1].split('"', 1)[0]
            out[issuer] = float(value)
    return out


def poll(predicate, timeout: float, interval: float = 0.1, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


# -- the cases ----------------------------------------------------------------------------------

def test_fetched_crls_refuse_revoked_clients_and_serve_the_others(env):
    """Case 1 and 6: R's CRL from the CA certificates' distribution point (PEM) and A's from
    crl_urls (DER), fetched before the two workers start; a revoked client of A and every client of
    R that R's CRL lists are CRL hits, another client of A is served; the metrics show both
    nextUpdates."""
    p, point = env.pki, env.point
    root_crl, a_crl = serve_good_crls(point, p)
    gw = env.start(workers=2, admin=True)
    assert point.asked("/root.crl") >= 1 and point.asked("/a.crl") >= 1
    # every connection, on either worker, from the first on
    assert_served(gw, p, "good", times=6)
    hit(gw, p, "revoked", times=6)
    hit(gw, p, "of_root", times=4)
    assert errors_with(gw, "crl_updated", url=p.root_url)
    assert errors_with(gw, "crl_updated", url=p.a_url)
    # stale from the start (nothing cached yet) until the fetch, current since
    assert staleness(gw) == ["crl_stale", "crl_current"]

    # what was fetched is kept under state_dir, as DER, named by the URL's SHA-256
    for url, crl in ((p.root_url, root_crl), (p.a_url, a_crl)):
        kept = env.state / "crls" / (hashlib.sha256(url.encode()).hexdigest() + ".crl")
        assert kept.read_bytes() == crl.public_bytes(Encoding.DER), url

    # /metrics: one crl_next_update sample per issuer, at the CRL's nextUpdate
    testing.wait_port(gw.port("admin"))
    want = {p.root.cert.subject.public_bytes().hex(): root_crl.next_update_utc.timestamp(),
            p.a.cert.subject.public_bytes().hex(): a_crl.next_update_utc.timestamp()}

    def samples():
        status, text = admin_get(gw.port("admin"), "/metrics")
        assert status == 200
        got = next_update_samples(text, "main")
        return got if set(got) >= set(want) else None
    got = poll(samples, 10, what="crl_next_update samples for R and A")
    for issuer, ts in want.items():
        assert got[issuer] == pytest.approx(ts, abs=1e-3), (issuer, got[issuer], ts)


@pytest.mark.parametrize("policy", ["refuse", "allow"])
def test_unreachable_distribution_point_at_start(env, policy):
    """Case 2: nothing listens at the distribution point: with "refuse" every client is refused as
    stale (failing closed, not as a CRL hit); with "allow" they are served and it is logged."""
    p, point = env.pki, env.point
    point.stop()                        # connection refused from now on
    gw = env.start(crl_stale=policy)
    assert errors_with(gw, "unreachable", url=p.root_url)
    assert errors_with(gw, "unreachable", url=p.a_url)
    if policy == "refuse":
        stale(gw, p, "good")
        stale(gw, p, "revoked")
        assert errors_with(gw, "crl_stale")[0]["level"] == "error"
    else:
        assert_served(gw, p, "good")
        # nothing known revokes it: admitted on the CRLs held (none)
        assert_served(gw, p, "revoked")
        warned = errors_with(gw, "crl_stale")
        assert warned and warned[0]["level"] == "warning", warned
        assert "allow" in warned[0]["message"]


def test_restart_with_the_cached_copy_while_the_distribution_point_is_down(env):
    """Case 3: a first run fetches and keeps the CRLs; the second starts with the distribution
    point down and serves at once on the kept copies, still refusing the revoked clients."""
    p, point = env.pki, env.point
    serve_good_crls(point, p)
    first = env.start(workers=2)
    hit(first, p, "revoked", times=2)
    assert first.stop() == 0
    kept = sorted((env.state / "crls").glob("*.crl"))
    assert len(kept) == 2, kept
    point.stop()

    second = env.start(workers=2)
    # the very first connection is served: no wait for a fetch, no stale window
    status, error, _ = attempt(second.port("edge"), p.ctx("good"))
    assert status == 200, error
    assert_served(second, p, "good")
    hit(second, p, "revoked")
    hit(second, p, "of_root")
    loaded = errors_with(second, "crl_cache_loaded")
    assert loaded and set(loaded[0]["urls"]) == {p.root_url, p.a_url}, loaded
    assert staleness(second) == []          # current from the first moment


@pytest.mark.parametrize("fault", ["garbage", "other_ca", "status_500"])
def test_a_bad_answer_is_logged_and_the_policy_applies(env, fault):
    """Case 4, with crl_stale = "allow": A's distribution point answers garbage, a CRL signed by
    another CA of the same name (listing the good client) or a 500; R's is fine. The gateway
    starts, R's CRL is applied (R's revoked client is a hit), A's answer is not (the good client is
    served, whatever the rogue CRL lists), the reason is logged, no worker dies."""
    p, point = env.pki, env.point
    serve_good_crls(point, p)
    if fault == "garbage":
        point.serve("/a.crl", b"<html><body>maintenance</body></html>\n", content_type="text/html")
        reason = "bad_crl"
    elif fault == "other_ca":
        rogue_root = pki.make_root("crl-fetch test root CA")
        rogue_a = pki.make_intermediate(rogue_root, "crl-fetch issuing CA A")
        assert rogue_a.cert.subject == p.a.cert.subject
        point.serve("/a.crl", pki.make_crl(rogue_a, [p.clients["good"].serial], crl_number=9)
                    .public_bytes(Encoding.DER))
        reason = "untrusted_signer"
    else:
        point.serve("/a.crl", b"oops\n", status=500, content_type="text/plain")
        reason = "status"
    gw = env.start(workers=2, crl_stale="allow")
    assert errors_with(gw, reason, url=p.a_url), gw.lines("error")[-5:]
    assert not errors_with(gw, "crl_updated", url=p.a_url)
    assert errors_with(gw, "crl_updated", url=p.root_url)
    assert_served(gw, p, "good")
    hit(gw, p, "of_root")
    # A's revocations are unknown: with "allow" its revoked client gets in
    assert_served(gw, p, "revoked", times=2)
    assert errors_with(gw, "crl_stale")[0]["level"] == "warning"
    assert gw.proc.poll() is None


def test_a_failing_distribution_point_refuses_until_it_recovers(env):
    """Case 4, with crl_stale = "refuse": A's distribution point answers 500 at start, so every
    client is refused as stale; once it serves A's CRL, the workers' own fetchers take it at their
    retry (crlfetch.RETRY_FIRST_S), every worker then serves the good client and refuses the
    revoked one, and the metrics follow the swap."""
    p, point = env.pki, env.point
    serve_good_crls(point, p)
    point.serve("/a.crl", b"oops\n", status=500, content_type="text/plain")
    started = time.monotonic()
    gw = env.start(workers=2, admin=True)
    assert errors_with(gw, "status", url=p.a_url)
    stale(gw, p, "good")
    testing.wait_port(gw.port("admin"))
    a_issuer = p.a.cert.subject.public_bytes().hex()
    assert a_issuer not in next_update_samples(admin_get(gw.port("admin"), "/metrics")[1], "main")

    asked = point.asked("/a.crl")
    point.serve("/a.crl", p.a_crl().public_bytes(Encoding.DER))

    def every_worker_took_it() -> bool:
        # both workers fetched again and a run of connections is served
        if len(errors_with(gw, "crl_updated", url=p.a_url)) < 2:
            return False
        return all(attempt(gw.port("edge"), p.ctx("good"))[0] == 200 for _ in range(6))
    poll(every_worker_took_it, RETRY_FIRST_S + 10, interval=0.2,
         what="A's CRL taken by both workers after the retry")
    assert time.monotonic() - started >= RETRY_FIRST_S - 1   # by the retry, not by chance
    assert point.asked("/a.crl") >= asked + 2
    hit(gw, p, "revoked", times=6)
    assert_served(gw, p, "good", times=6)
    assert errors_with(gw, "crl_current")
    poll(lambda: a_issuer in next_update_samples(admin_get(gw.port("admin"), "/metrics")[1],
                                                 "main"),
         10, what="the crl_next_update sample of A after the workers' fetch")


def test_a_slow_distribution_point_is_bounded_by_the_fetch_timeout(env):
    """Case 5: both distribution points take 8 s to answer and crl_fetch_timeout_s = 1: the
    gateway answers clients within a few seconds, refusing them as stale, and logs the timeouts."""
    p, point = env.pki, env.point
    serve_good_crls(point, p)
    for path in ("/root.crl", "/a.crl"):
        answer = point.answers[path]
        point.serve(path, answer.body, delay_s=8.0, content_type=answer.content_type)
    started = time.monotonic()
    gw = env.start(workers=2, timeout_s=1, timeout=10)
    stale(gw, p, "good", times=2)
    elapsed = time.monotonic() - started
    assert elapsed < 8.0, f"the first refusal came {elapsed:.1f} s after the start"
    assert errors_with(gw, "timeout", url=p.root_url)
    assert errors_with(gw, "timeout", url=p.a_url)
    assert point.asked("/root.crl") >= 1 and point.asked("/a.crl") >= 1


def test_a_ca_revoked_by_the_crl_at_its_own_distribution_point_refuses_its_clients(env):
    """R's CRL, fetched from the distribution point B's certificate names, revokes B: B's clients
    must be CRL hits (RFC 5280 6.1.3 (a)(3): every certificate of the path is checked, not the
    leaf only), or the fetch of that distribution point protects nothing."""
    p, point = env.pki, env.point
    serve_good_crls(point, p)
    gw = env.start()
    assert errors_with(gw, "crl_updated", url=p.root_url)
    hit(gw, p, "of_root", times=1)          # R's CRL is held and applied
    hit(gw, p, "of_b", times=2)
