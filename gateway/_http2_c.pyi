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
