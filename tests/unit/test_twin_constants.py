"""Every constant and table a native extension exports equals its pure twin's.

How this works: for each extension, TWINS names every constant it exports (a module attribute that
is not callable and not a module) with the pure value it must equal, and NATIVE_ONLY the few that
have no pure twin, each with why. A table the pure module hands in at load (`bind` / `init`) is
equal as long as the hand-over happened; one the extension still writes itself is equal only while
nobody changes one side. An exported constant in neither list fails too, so a new one gets a pair.
DESIGN.md: "a table copied between twins needs a test, a table passed in at load does not".
"""
from __future__ import annotations

import importlib
import types

import pytest

from gateway import conn, headers, http1, paths, tlspump, trust  # noqa: F401  (conn binds its twin)


def _path_work() -> bytes:
    """The single bytes gateway.paths' scan finds work in."""
    return bytes(b for b in range(256) if paths._NEEDS_WORK(bytes((b,))) is not None)


# extension -> {exported name: (how it compares, the pure value)}
TWINS = {
    "gateway._headers_c": {
        "DROPPED_NAMES": (frozenset, headers.DROPPED_NAMES),
        "DROPPED_PREFIXES": (sorted, sorted(headers.DROPPED_PREFIXES)),
        "FOLDED_NAME": (None, headers._XFF),
        "ALB_SAFE_BYTES": (None, headers._ALB_SAFE),
        "ENVOY_SAFE_BYTES": (None, headers._ENVOY_SAFE),
        "FOLD_TABLE": (None, headers._FOLD_TABLE),
        "STANDARD_NAME_BYTES": (None, headers._STANDARD_NAME_BYTES),
    },
    "gateway._http1_c": {
        "STATES": (frozenset, frozenset(s.value for s in http1._State)),
        "TRANSITIONS": (None, {s.value: tuple(n.value for n in successors)
                               for s, successors in http1._TRANSITIONS.items()}),
        "SPECIAL_FIELDS": (None, http1._SPECIAL_FIELDS),
        "TCHARS": (None, http1._TCHARS),
        "HOST_NAME_BYTES": (None, http1._HOST_NAME_BYTES),
        "HOST_LITERAL_BYTES": (None, http1._HOST_LITERAL_BYTES),
    },
    "gateway._trust_c": {
        "MAX_SERIAL_BYTES": (None, trust.MAX_SERIAL_BYTES),
    },
    "gateway._tls_c": {
        "WANT": (None, tlspump.WANT),
        "DONE": (None, tlspump.DONE),
        "CLOSED": (None, tlspump.CLOSED),
        "FAILED": (None, tlspump.FAILED),
        "FUNCTIONS": (None, tlspump.PUMP_FUNCTIONS),
        # the pump's compiled-in enums, against the pure pump's constants of the same meaning
        "ENUMS": (None, {
            "CHUNK": tlspump._CHUNK, "MAX_WRITE": tlspump._MAX_WRITE, "RENEW_AT": tlspump._RENEW_AT,
            "E_WANT_READ": tlspump._SSL_ERROR_WANT_READ, "E_SYSCALL": tlspump._SSL_ERROR_SYSCALL,
            "E_ZERO_RETURN": tlspump._SSL_ERROR_ZERO_RETURN, "RT_HANDSHAKE": tlspump._RT_HANDSHAKE,
            "MT_CLIENT_HELLO": tlspump.MT_CLIENT_HELLO,
            "MT_NEW_SESSION_TICKET": tlspump.MT_NEW_SESSION_TICKET,
            "MT_CERTIFICATE": tlspump.MT_CERTIFICATE, "KEY_MAX": tlspump._KEY_MAX}),
    },
    "gateway._conn_c": {
        "PATH_WORK_BYTES": (None, _path_work()),
    },
}

NATIVE_ONLY = {
    # the prefix index over the sorted keys exists only in the native SerialSet
    "gateway._trust_c": {"DEFAULT_MAX_INDEX_BITS"},
    # the OpenSSL entry points `server()` takes by address; the pure twin calls them through cffi
    "gateway._tls_c": {"SERVER_FUNCTIONS"},
}


def _extension(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.skip(f"{name} is not built")


def _exported(module: types.ModuleType) -> set[str]:
    return {n for n, v in vars(module).items()
            if not n.startswith("_") and not callable(v) and not isinstance(v, types.ModuleType)}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_every_exported_constant_has_a_pure_twin(name):
    module = _extension(name)
    assert _exported(module) == set(TWINS[name]) | NATIVE_ONLY.get(name, set())


@pytest.mark.parametrize("name,constant", [(m, c) for m in sorted(TWINS) for c in TWINS[m]])
def test_constant_equals_the_pure_twins(name, constant):
    module = _extension(name)
    compare, pure = TWINS[name][constant]
    native = getattr(module, constant)
    if compare is not None:
        native = compare(native)
    assert native == pure, f"{name}.{constant} is not the pure twin's"
