"""The one `native = "auto" | "on" | "off"` switch, for every extension at once.

How this works: `select(mode)` works out, without changing anything, which twin of each hot path a
runtime gets: the header encoder (gateway._headers_c), the trust store's data (gateway._trust_c),
the TLS pump and its message filter (gateway._tls_c), the HTTP/1.1 request reader
(gateway._http1_c), the connection core and its shell (gateway._conn_c) and HTTP/2's
connection, HPACK codec and request building (gateway._http2_c). `"on"` with an extension missing
raises NativeUnavailable, naming it. The builder hands the selection to what it builds (trust stores take their implementation, TLS contexts
their message callback) and calls `apply(selection)` only once the whole runtime validated: a
configuration that fails to load, at start or on a reload, leaves the running selection as it was
(ghostunnel's rule for reloads: build everything new, then swap).

The modules keep their own `set_native` (the tests and benchmarks pick twins with it); this module
is the only caller of them in the gateway's own start-up and reload path.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import conn, headers, http1, http2, tls, trust
from .errors import NativeUnavailable
from .tlspump import py_message_callback

MODES = ("auto", "on", "off")


@dataclass(frozen=True, slots=True)
class Selection:
    mode: str
    headers: bool       # True: the native twin
    trust: bool
    tls: bool
    http1: bool
    conn: bool
    http2: bool = False     # HTTP/2's connection, HPACK codec and request building

    @property
    def trust_implementation(self):
        return trust.NATIVE if self.trust else trust.PYTHON

    @property
    def message_callback(self):
        """The TLS message filter contexts built for this selection install."""
        return tls.NATIVE_MESSAGE_CALLBACK if self.tls else py_message_callback

    def describe(self) -> str:
        """One word when every hot path got the same twin, else each one."""
        names = {"headers": self.headers, "trust": self.trust, "tls pump": self.tls,
                 "request reader": self.http1, "connection core": self.conn, "http2": self.http2}
        if all(names.values()):
            return "native"
        if not any(names.values()):
            return "python"
        return ", ".join(f"{k} {'native' if v else 'python'}" for k, v in names.items())


def select(mode: str) -> Selection:
    """Which twin each hot path gets under `mode`; changes nothing. Raises NativeUnavailable for
    "on" when an extension cannot be used (with why, for the TLS pump's self-test)."""
    if mode not in MODES:
        raise ValueError(f"native mode must be one of {MODES}, not {mode!r}")
    have = {"headers": headers.NATIVE is not None, "trust": trust.NATIVE is not None,
            "tls": tls.NATIVE_PUMP is not None, "http1": http1.NATIVE is not None,
            "conn": conn.NATIVE is not None, "http2": http2.NATIVE is not None}
    if mode == "on":
        missing = [name for name, ok in have.items() if not ok]
        if missing:
            why = f" ({tls.NATIVE_UNAVAILABLE})" if "tls" in missing and tls.NATIVE_UNAVAILABLE else ""
            raise NativeUnavailable(
                f"native = \"on\" but the native {', '.join(missing)} extension(s) cannot be used"
                f"{why}; reinstall with `pip install -e .` to build them, or set native = \"auto\"")
    want = mode != "off"
    return Selection(mode, want and have["headers"], want and have["trust"], want and have["tls"],
                     want and have["http1"], want and have["conn"], want and have["http2"])


def apply(selection: Selection) -> None:
    """Make `selection` the process's choice for everything built or connected from now on."""
    for module, native in ((headers, selection.headers), (trust, selection.trust),
                           (tls, selection.tls), (http1, selection.http1),
                           (conn, selection.conn), (http2, selection.http2)):
        module.set_native("on" if native else "off")


def current() -> Selection:
    """The selection in force (what each module's switch says now)."""
    return Selection("current", headers.native_mode == "native", trust.native_mode == "native",
                     tls.native_mode == "native", http1.native_mode == "native",
                     conn.native_mode == "native", http2.native_mode == "native")


def interpreter_build(maps: str = "/proc/self/maps") -> str:
    """How the running interpreter was built, as far as it shows: "shared libpython" when the
    executable calls into a libpython.so, else "static". A shared build calls between the
    interpreter's own functions through the PLT and is, in practice, the unoptimised kind
    (pyenv's and python-build's default: no PGO, no LTO); a distribution's python3 is a static,
    PGO+LTO executable, on which the same gateway spends 2-6% less CPU per handshake and 11% less
    per proxied request (bench/NATIVE.md, "The interpreter"): the start-up log says which runs."""
    import sysconfig
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return "static"
    # Debian's python3 says --enable-shared (its libpython3.X.so is built too), yet its executable
    # is linked statically: what the process has mapped decides
    try:
        with open(maps) as lines:
            return "shared libpython" if any("libpython" in line for line in lines) else "static"
    except OSError:
        return "shared libpython"
