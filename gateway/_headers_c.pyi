"""Types of the native twin of gateway.headers (built from native/headers.pyx)."""
from collections.abc import Iterable, Sequence

from gateway.headers import HeaderPolicy

# gateway.headers' tables, as bind() took them (empty before)
DROPPED_NAMES: tuple[bytes, ...]
DROPPED_PREFIXES: tuple[bytes, ...]
FOLDED_NAME: bytes
ALB_SAFE_BYTES: bytes
ENVOY_SAFE_BYTES: bytes
FOLD_TABLE: bytes
STANDARD_NAME_BYTES: bytes

def bind(*, dropped_names: Iterable[bytes], dropped_prefixes: Iterable[bytes], folded_name: bytes,
         alb_safe: bytes, envoy_safe: bytes, fold_table: bytes, standard_name_bytes: bytes) -> None: ...

def quote_pem_alb(pem: bytes) -> bytes: ...
def quote_pem_envoy(pem: bytes) -> bytes: ...
def sf_binary(der: bytes) -> bytes: ...
def first_nonstandard(headers: Sequence[tuple[bytes, bytes]]) -> int: ...
def encode_response_head(line: bytes, headers: Sequence[tuple[bytes, bytes]],
                         drop: frozenset[bytes] | set[bytes],
                         extra: Sequence[tuple[bytes, bytes]]) -> bytes: ...
def encode_request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    identity_lines: bytes,
    client_ip: bytes,
    client_port: int,
    listener_port: int,
    connection_tokens: frozenset[bytes] = ...,
    framing: bytes = ...,
    policy: HeaderPolicy | None = ...,
) -> bytes: ...
