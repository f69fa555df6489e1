"""Types of the native twin of gateway.conn's core and gateway.proxy's data_received (built from
native/conn.pyx)."""
from collections.abc import Callable
from typing import Any

def bind(*, handshake: Any, open_: Any, closing: Any, closed: Any, no_reader: Any, request: type,
         end_of_message: type, fixed: type, exchange: type, protocol_error: type[Exception],
         headers: Any, protected_tokens: Any, general_receive: Callable[..., Any],
         state: tuple[str, ...], tls_open: Any, tls_failed: Any, pump_codes: tuple[int, int],
         handshake_done: type, actions: type, timer_handshake: int, null_observer: Any) -> None: ...

def monotonic_now() -> float: ...

class Listener:
    """What the common path reads of a listener runtime, as C fields."""
    @property
    def rt(self) -> Any: ...
    @property
    def name(self) -> str: ...
    @property
    def routes(self) -> Any: ...
    @property
    def header_policy(self) -> Any: ...
    @property
    def observer(self) -> Any: ...
    @property
    def access_log(self) -> Any: ...
    @property
    def connection_log(self) -> Any: ...
    @property
    def mtls(self) -> str: ...
    @property
    def reports(self) -> bool: ...
    @property
    def http2(self) -> bool: ...
    @property
    def header_timeout(self) -> float: ...
    @property
    def sni_host_strict(self) -> bool: ...
    @property
    def counting(self) -> bool: ...
    @property
    def max_requests(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...
    def __init__(self, rt: Any) -> None: ...
    def take_counts(self) -> list[tuple[int, int]]: ...

class Core:
    """gateway.conn.STATE in a C struct, and the connection's common arrival."""
    rt: Any
    acts: Any
    client_ip: Any
    client_port: Any
    client_ip_b: Any
    tls: Any
    state: Any
    reader: Any
    current: Any
    held: Any
    identity_lines: Any
    done_event: Any
    refusals: Any
    close_reason: Any
    batch: Any
    owner: Any
    h2: Any
    requests: int
    conn_timer: int
    read_paused: bool
    write_paused: bool
    header_deadline_armed: bool
    draining: bool
    peer_done: bool
    conn_deadline: float
    idle_deadline: float
    up_deadline: float
    tunnel_deadline: float
    connected_at: float
    rx_at: float
    tx_at: float
    armed: float
    @property
    def lc(self) -> Listener: ...
    def __init__(self, rt: Any, client_ip: str, client_port: int, now: float) -> None: ...
    def receive(self, data: bytes, now: float) -> Any: ...
    def _done(self) -> Any: ...

def bind_shell(*, protocol: type, native_protocol: type, get_running_loop_: Any, wheel: type,
               conn: Any, general_lost: Any, close: int, abort: int) -> None: ...

class Shell:
    """gateway.proxy.GatewayProtocol's __init__, data_received, connection_made and
    connection_lost, mixed in before it."""
    def __init__(self, runtime_ref: Any, listener_name: str) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def connection_made(self, transport: Any) -> None: ...
    def connection_lost(self, exc: BaseException | None) -> None: ...
    def _more(self, acts: Any) -> None: ...
