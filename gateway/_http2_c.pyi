"""Types of the native twins for HTTP/2: the hpack library's Encoder and Decoder, and gateway.http2.request_of
(built from native/http2.pyx)."""
from collections.abc import Iterable
from typing import Any

from hpack.struct import HeaderTuple

def huffman_encode_for_tests(data: bytes) -> bytes: ...
def huffman_decode_for_tests(data: bytes) -> bytes: ...

class Encoder:
    header_table_size: int
    def encode(self, headers: Iterable[Any] | dict[Any, Any], huffman: bool = True) -> bytes: ...

class Decoder:
    max_header_list_size: int
    max_allowed_table_size: int
    header_table_size: int
    def __init__(self, max_header_list_size: int = 65536) -> None: ...
    def decode(self, data: bytes, raw: bool = False) -> list[HeaderTuple]: ...

def init(*, request: type[Any], refused: type[Exception], connection_specific: frozenset[bytes],
         pure: Any, host_re: Any, tchars: bytes) -> None: ...
def request_of(raw: Any, ended: bool, max_count: int) -> Any: ...

# the server side of an HTTP/2 connection: h2.connection.H2Connection's twin for the surface
# gateway.streams uses; its events have h2.events' names and attributes
class RequestReceived:
    stream_id: int
    headers: list[tuple[bytes, bytes]]
    stream_ended: StreamEnded | None
    priority_updated: None

class TrailersReceived:
    stream_id: int
    headers: list[tuple[bytes, bytes]]
    stream_ended: StreamEnded | None
    priority_updated: None

class DataReceived:
    stream_id: int
    data: bytes
    flow_controlled_length: int
    stream_ended: StreamEnded | None

class StreamEnded:
    stream_id: int

class StreamReset:
    stream_id: int
    error_code: int
    remote_reset: bool

class WindowUpdated:
    stream_id: int
    delta: int

class RemoteSettingsChanged:
    changed_settings: dict[int, int]

class PingAckReceived:
    ping_data: bytes

class ConnectionTerminated:
    error_code: int
    last_stream_id: int
    additional_data: bytes | None

class H2Connection:
    encoder: Encoder
    decoder: Decoder
    highest_inbound_stream_id: int
    outbound_flow_control_window: int
    inbound_flow_control_window: int
    max_outbound_frame_size: int
    max_inbound_frame_size: int
    def __init__(self, max_streams: int, header_table_size: int, max_header_bytes: int) -> None: ...
    def receive_data(self, data: bytes) -> list[Any]: ...
    def data_to_send(self, amount: int | None = None) -> bytes: ...
    def clear_outbound_data_buffer(self) -> None: ...
    def send_headers(self, stream_id: int, headers: Iterable[Any], end_stream: bool = False) -> None: ...
    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False,
                  pad_length: int | None = None) -> None: ...
    def end_stream(self, stream_id: int) -> None: ...
    def reset_stream(self, stream_id: int, error_code: int = 0) -> None: ...
    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None: ...
    def ping(self, opaque_data: bytes) -> None: ...
    def local_flow_control_window(self, stream_id: int) -> int: ...
    def remote_flow_control_window(self, stream_id: int) -> int: ...
