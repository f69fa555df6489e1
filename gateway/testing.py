"""What tests, benchmarks and the demo share to drive the gateway: in process and as a process.

How this works: a few small pieces, each what several places used to write for themselves.

- `MemoryTransport`: the part of an asyncio transport the shell (gateway.proxy) and the upstream
  connections use, writing to a function instead of a socket.
- `MemoryTLSClient`: Python's `ssl` (the system OpenSSL, not the gateway's) as a TLS client over
  memory BIOs. `handshake(deliver)` hands each flight the client writes to `deliver`, which gets
  the server's answer back into `incoming` however the server is reached: a TLSConnection's
  receive(), a shell over a MemoryTransport, or a real socket (`over_socket`). A real TLS client
  can so talk to a real shell and core with no socket in between. `client_context` and
  `https_get` are the client side of a test against a real listener.
- `toml()` and the builders beside it (`listener`, `fixed_response`, `forward`): a gateway
  configuration written from Python values, so no one writes its TOML by hand. It writes tables and
  arrays of tables, never inline tables: the text has no braces of its own and can go through
  `str.format` with placeholders in its strings (`bind = "127.0.0.1:{port_web}"`).
- `GatewayProcess`: `python -m gateway run --config FILE` as a child process, ready when every
  port it was given accepts a connection (what a client sees: the workers serve), stopped with
  SIGTERM (the drain) and killed only if it outlives the timeout; its JSON log lines read back.

Nothing here imports tests, bench or pytest: the module is part of the installed package.
"""
from __future__ import annotations

import http.client
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

START_TIMEOUT_S = 20.0          # the bound the integration tests have always waited for a start
STOP_TIMEOUT_S = 15.0           # SIGTERM drains; a gateway that holds no connection exits at once
POLL_S = 0.02


# -- in process ------------------------------------------------------------------------------------

class MemoryTransport:
    """The part of an asyncio transport the gateway uses, writing to a function."""

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self.sink = sink
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sink(data)

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def client_context(root: str | Path, cert: str | Path | None = None, key: str | Path | None = None, *,
                   version: str | None = None) -> ssl.SSLContext:
    """A TLS client context trusting `root`, with a client certificate when `cert` is given;
    `version` "1.3" pins TLS 1.3, "1.2" caps at TLS 1.2."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(root)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def https_request(port: int, ctx: ssl.SSLContext | None, method: str = "GET", path: str = "/", *,
                  headers: Mapping[str, str] | None = None, body: bytes | str | None = None,
                  conn: http.client.HTTPSConnection | None = None, timeout: float = 30.0,
                  ) -> tuple[http.client.HTTPResponse, bytes]:
    """One request with http.client to 127.0.0.1:`port` (server name localhost): on `conn` when
    given (kept open: keep-alive), else on a new connection closed after the response. Returns
    the response and its body."""
    own = conn is None
    if conn is None:
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=timeout)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    if own:
        conn.close()
    return resp, data


class MemoryTLSClient:
    """Python's ssl as a TLS client over memory BIOs: `outgoing` holds what it wrote, `incoming`
    takes what the server answers; `tls` is the SSLObject."""

    def __init__(self, ctx: ssl.SSLContext, server_hostname: str = "localhost", session=None) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname,
                                session=session)

    def handshake(self, deliver: Callable[[bytes], object], flights: int | None = None) -> None:
        """Run the handshake: each time the client waits for the server, what it wrote goes to
        `deliver`. At most `flights` of them when given (a server that never finishes is then a
        RuntimeError rather than a loop)."""
        done = 0
        while True:
            try:
                self.tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                if flights is not None and done >= flights:
                    raise RuntimeError(f"the handshake did not finish in {flights} flights") from None
                deliver(self.outgoing.read())
                done += 1

    def read_available(self) -> bytes:
        """The plaintext the client can read now (up to a close_notify)."""
        out = b""
        try:
            while chunk := self.tls.read(65536):
                out += chunk
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        return out

    def over_socket(self, sock: socket.socket, *, first_bytewise: bool = False,
                    pause_s: float = 0.0) -> Callable[[bytes], None]:
        """A `deliver` for a server at the other end of `sock`: send what the client wrote, put
        what comes back into `incoming`; the server closing mid-handshake is a ConnectionError.
        `first_bytewise`: the first flight (the ClientHello) goes one byte per send, `pause_s`
        apart, for a server that must reassemble it from many TCP segments (TCP_NODELAY on `sock`)."""
        first = first_bytewise

        def deliver(data: bytes) -> None:
            nonlocal first
            if first:
                for i in range(len(data)):
                    sock.send(data[i:i + 1])
                    if pause_s:
                        time.sleep(pause_s)
                first = False
            elif data:
                sock.sendall(data)
            answer = sock.recv(65536)
            if not answer:
                raise ConnectionError("closed during handshake")
            self.incoming.write(answer)
        return deliver

    def exchange_over_socket(self, sock: socket.socket, request: bytes) -> bytes:
        """Send `request` and read the answer until the server closes (or sends close_notify);
        what the client has to write meanwhile (a KeyUpdate's answer) goes out too."""
        self.tls.write(request)
        sock.sendall(self.outgoing.read())
        reply = b""
        while data := sock.recv(65536):
            self.incoming.write(data)
            try:
                reply += self.tls.read(65536)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                break
            if self.outgoing.pending:
                sock.sendall(self.outgoing.read())
        return reply


def https_get(port: int, ctx: ssl.SSLContext, path: str = "/", *, session=None, timeout: float = 10.0,
              tolerate_reset: bool = False) -> tuple[bool, ssl.SSLSession | None, bytes]:
    """One `GET path` with Connection: close on a new TLS connection to 127.0.0.1:`port`, offering
    `session`: (resumed, the session, the response as it came). `tolerate_reset`: a TLS error or
    reset while reading ends the response instead of raising (a server closing without close_notify)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            out = b""
            try:
                while chunk := tls.recv(65536):
                    out += chunk
            except (ssl.SSLError, ConnectionError):
                if not tolerate_reset:
                    raise
            return bool(tls.session_reused), tls.session, out


# -- configuration ---------------------------------------------------------------------------------

def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{s}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"no TOML value for {v!r}")


def _is_tables(v) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _table(lines: list[str], path: str, doc: Mapping) -> None:
    # a table's own keys first: TOML gives every key after a header to that header's table
    for k, v in doc.items():
        if v is not None and not isinstance(v, Mapping) and not _is_tables(v):
            lines.append(f"{k} = {_value(v)}")
    for k, v in doc.items():
        sub = f"{path}.{k}" if path else k
        if isinstance(v, Mapping):
            # a table holding only tables (`trust_store`) needs no header of its own
            if not v or not all(isinstance(x, Mapping) for x in v.values()):
                lines += ["", f"[{sub}]"]
            _table(lines, sub, v)
        elif _is_tables(v):
            for item in v:
                lines += ["", f"[[{sub}]]"]
                _table(lines, sub, item)


def toml(doc: Mapping) -> str:
    """`doc` (dicts, lists, strings, paths, numbers, booleans) as TOML; None values are left out.
    Dicts become tables and lists of dicts arrays of tables, so `{"listener": [...]}` is a run of
    `[[listener]]` and a rule's `fixed_response` a `[listener.rule.fixed_response]`."""
    lines: list[str] = []
    _table(lines, "", doc)
    return "\n".join(lines).lstrip("\n") + "\n"


def fixed_response(status: int = 200, body: str = "ok", **fields) -> dict:
    """A rule answering `status` and `body`; `fields` are the rule's others (path, host, ...) and
    `content_type`, which goes into the response."""
    response: dict[str, object] = {"status": status}
    if "content_type" in fields:
        response["content_type"] = fields.pop("content_type")
    response["body"] = body
    return {**fields, "action": "fixed-response", "fixed_response": response}


def forward(target_group: str, **fields) -> dict:
    """A rule forwarding to `target_group`; `fields` are its conditions (path, host, ...)."""
    return {**fields, "action": "forward", "target_group": target_group}


def listener(name: str, bind: str | int, cert: str | Path, key: str | Path, *, mtls: str = "off",
             trust_store: str | None = None, rules: Sequence[Mapping] | None = None, **fields) -> dict:
    """A `[[listener]]` serving one certificate; `bind` a port means 127.0.0.1:port. A verifying
    mode without `trust_store` gets the store named "main". `rules` default to one answering 200
    "ok"; `()` writes none (the caller's own `[[listener.rule]]` text follows). `fields` are the
    listener's other keys (header_style, timeouts, limits...), written in the order given."""
    if trust_store is None and mtls in ("verify", "optional"):
        trust_store = "main"
    return {"name": name, "bind": f"127.0.0.1:{bind}" if isinstance(bind, int) else bind,
            "mtls": mtls, "trust_store": trust_store, **fields,
            "certificates": [{"cert": cert, "key": key}],
            "rule": [fixed_response()] if rules is None else list(rules) or None}


LOGS = ("access", "connection", "error")


def logs_in(directory: Path) -> dict[str, Path]:
    """`[gateway]`'s three log files, all in `directory` (GatewayProcess's `logs` by name)."""
    return {which: directory / f"{which}.log" for which in LOGS}


def log_settings(directory: Path) -> dict[str, Path]:
    """The `[gateway]` keys that put the three logs in `directory`."""
    return {f"{which}_log": path for which, path in logs_in(directory).items()}


def write_config(path: Path, doc: Mapping) -> Path:
    path.write_text(toml(doc))
    return path


# -- as a process ----------------------------------------------------------------------------------

def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports of 127.0.0.1: all bound at once, then released (ports taken one by
    one can come back equal, the kernel handing out a just-released port again)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT_S) -> None:
    """Until 127.0.0.1:`port` accepts a connection; RuntimeError if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(POLL_S)
    raise TimeoutError(f"nothing listening on {port}")


def gateway_command(config: Path, python: str | None = None) -> list[str]:
    """`python -m gateway run --config CONFIG`, with this interpreter unless `python` names one."""
    return [python or sys.executable, "-m", "gateway", "run", "--config", str(config)]


class GatewayProcess:
    """A gateway running as a child process, started by the constructor.

    `ports` are waited for (every one accepts a connection) unless `wait` is false; a gateway that
    exits first is a RuntimeError carrying the end of its stderr when that is a pipe. `command`
    replaces `python -m gateway run --config FILE` (a launcher, `taskset`); the rest goes to Popen.
    `logs` names the JSON log files `lines()` and `wait_log()` read ("access", "connection", ...).
    """

    def __init__(self, config: Path, ports: Mapping[str, int] | Iterable[int] = (), *,
                 command: Sequence[str] | None = None, logs: Mapping[str, Path] | None = None,
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, wait: bool = True,
                 timeout: float = START_TIMEOUT_S, **popen) -> None:
        self.config = config
        self.ports = dict(ports) if isinstance(ports, Mapping) else {str(p): p for p in ports}
        self.logs = dict(logs or {})
        self.proc = subprocess.Popen(list(command) if command is not None else gateway_command(config),
                                     stdout=stdout, stderr=stderr, **popen)
        if wait:
            self.wait_ready(timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def port(self, name: str) -> int:
        return self.ports[name]

    def wait_ready(self, timeout: float = START_TIMEOUT_S, tail: int = 2000) -> None:
        """Until every port accepts a connection; RuntimeError with the last `tail` characters of
        stderr (when it is a pipe) if the gateway exits first."""
        try:
            for p in self.ports.values():
                wait_port(p, self.proc, timeout)
        except RuntimeError:
            err = self.proc.communicate()[1] if self.proc.stderr is not None else b""
            raise RuntimeError(f"gateway failed to start: {(err or b'').decode()[-tail:]}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send `sig` (the drain) and wait; killed if still running after `timeout`. The exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stderr_tail(self, n: int = 2000) -> str:
        """The end of what the gateway wrote to its stderr pipe (after it exited)."""
        return self.proc.stderr.read().decode()[-n:] if self.proc.stderr is not None else ""

    def lines(self, which: str) -> list[dict]:
        import orjson
        path = self.logs[which]
        if not path.exists():
            return []
        return [orjson.loads(l) for l in path.read_bytes().splitlines() if l.strip()]

    def wait_log(self, which: str, predicate: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines(which):
                if predicate(line):
                    return line
            time.sleep(POLL_S)
        raise AssertionError(f"no {which} log line matched; have {self.lines(which)[-5:]}")
