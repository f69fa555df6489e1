"""Types of the native twins of gateway.http1's readers (built from native/http1.pyx)."""
from collections.abc import Callable, Mapping

from gateway.http1 import Data, EndOfMessage, HTTPLimits, Request, Response

STATES: tuple[str, ...]
SPECIAL_FIELDS: dict[bytes, int]
# what init() took (empty before)
TRANSITIONS: dict[str, tuple[str, ...]]
TCHARS: bytes
HOST_NAME_BYTES: bytes
HOST_LITERAL_BYTES: bytes

def init(*, request: type[Request], data: type[Data], end_of_message: EndOfMessage,
         error: type[Exception], tokens: Callable[[bytes], frozenset[bytes]],
         llhttp_errors: Mapping[str, tuple[str, int]], refinements: Mapping[str, Callable[[bytes], str]],
         no_tokens: frozenset[bytes], max_chunk_line: int, default_limits: HTTPLimits,
         request_fields: tuple[str, ...], data_field: str,
         transitions: Mapping[str, tuple[str, ...]], special_fields: Mapping[bytes, int],
         tchars: bytes, host_name_bytes: bytes, host_literal_bytes: bytes,
         response: type[Response] | None = ...,
         response_fields: tuple[str, ...] = ..., upstream_error: type[Exception] | None = ...,
         response_refinements: Mapping[str, Callable[[bytes], str]] | None = ...,
         default_response_limits: tuple[int, int] = ...) -> None: ...

class RequestReader:
    def __init__(self, limits: HTTPLimits | None = ..., *, hold_upgrades: bool = ...) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> None: ...
    def next_event(self) -> Request | Data | EndOfMessage | None: ...
    def feed_eof(self) -> None: ...
    def take_raw(self) -> bytes: ...
    @property
    def buffered_bytes(self) -> int: ...
    @property
    def switched(self) -> bool: ...
    @property
    def idle(self) -> bool: ...


class ResponseReader(RequestReader):
    def __init__(self, max_header_bytes: int | None = ..., max_header_count: int | None = ...) -> None: ...
    def expect(self, method: bytes, upgrade: bool = ...) -> None: ...
    def next_event(self) -> Response | Data | EndOfMessage | None: ...  # type: ignore[override]
