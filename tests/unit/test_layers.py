"""The layers of ../shared/DESIGN.md, held by a test: every gateway module imports only modules of a
lower layer (or, inside a layer, the ones listed), sans-IO modules import neither asyncio nor
socket, and native sources import nothing from gateway (the pure modules hand them their tables).
Only gateway/tlspump.py reaches pyOpenSSL's and cryptography's private or raw-binding surface.

Imports are read with `ast` from the source, functions' bodies included, so a late import cannot
hide a wrong direction."""
from __future__ import annotations

import ast
from pathlib import Path

import gateway

PACKAGE = Path(gateway.__file__).parent
NATIVE = PACKAGE.parent / "native"

# DESIGN.md: errors <- spec <- config <- {identity, trust, headers, http1, http2, routes} <- tls
# <- {conn, exchange, upstream} <- proxy <- server <- cli. The modules DESIGN.md lists beside the
# data path take the layer of what they serve.
LAYER = {
    "errors": 0,
    "spec": 1,
    "config": 2,
    "identity": 3,
    "trust": 4, "headers": 4, "http1": 4, "http2": 4, "routes": 4, "paths": 4, "sessions": 4,
    "logs": 4, "metrics": 4, "systemd": 4,
    # revocation beyond files (DESIGN.md: trust's revocation sources): the fetch they share, the
    # OCSP checker and the CRL fetcher a trust store holds, the runtime revocations' journal
    "fetch": 4, "ocsp": 4, "crlfetch": 4, "revocations": 4,
    # the signed identity: stdlib only, the verifier backends import too
    "signature": 1,
    # the pure pump under tls (DESIGN.md's layout): tls imports it, it imports only errors
    "tlspump": 4,
    "tls": 5,
    "conn": 6, "exchange": 6, "streams": 6, "upstream": 6, "health": 6, "wheel": 6,
    "accept": 7, "proxy": 7, "native": 7,
    "admin": 8, "server": 8,
    "pki": 9, "echo": 9, "testing": 9,
    "demo": 10, "cli": 11, "__main__": 12, "__init__": 0,
}
# imports inside one layer that the design names (the data path's order within a layer)
SAME_LAYER = {
    ("trust", "identity"), ("headers", "identity"), ("http2", "http1"), ("http2", "headers"),
    ("conn", "streams"), ("streams", "exchange"), ("streams", "upstream"), ("streams", "conn"),
    ("conn", "exchange"), ("conn", "upstream"), ("upstream", "exchange"), ("exchange", "upstream"),
    ("upstream", "health"), ("health", "upstream"),
    ("server", "admin"), ("admin", "server"),
    ("ocsp", "fetch"), ("ocsp", "trust"), ("crlfetch", "fetch"), ("crlfetch", "trust"),
}
SANS_IO = ("errors", "spec", "config", "identity", "trust", "headers", "http1", "http2", "routes",
           "paths", "tlspump", "tls", "conn", "exchange", "streams")


def _imports(path: Path) -> set[str]:
    """The gateway modules and the top-level stdlib/third-party modules `path` imports."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                out.add(name[len("gateway."):].split(".")[0] if name.startswith("gateway.")
                        else "ext:" + name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.module or "").split(".")[0] == "gateway":
                module = node.module or ""
                if node.level == 0:
                    module = module[len("gateway"):].lstrip(".")
                if module:
                    out.add(module.split(".")[0])
                else:
                    out.update(alias.name for alias in node.names)      # from . import x
            elif node.level == 0 and node.module:
                out.add("ext:" + node.module.split(".")[0])
    return out


def _modules() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}


def test_every_module_has_a_layer():
    assert set(_modules()) - set(LAYER) == set()


def test_imports_go_down_the_layers():
    wrong = []
    for module, imports in _modules().items():
        for target in imports:
            if target.startswith("ext:") or target.startswith("_"):     # extensions: _headers_c ...
                continue
            if target not in LAYER:
                continue
            if LAYER[target] < LAYER[module] or (module, target) in SAME_LAYER or target == module:
                continue
            wrong.append(f"{module} (layer {LAYER[module]}) imports {target} (layer {LAYER[target]})")
    assert not wrong, "\n".join(sorted(wrong))


def test_sans_io_modules_import_no_io():
    modules = _modules()
    wrong = [f"{m} imports {t[4:]}" for m in SANS_IO if m in modules
             for t in modules[m] if t in ("ext:asyncio", "ext:socket", "ext:uvloop", "ext:selectors")]
    assert not wrong, wrong


def test_native_sources_import_nothing_from_gateway():
    import re
    statement = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\b|c?import\s+([\w.]+))")
    seen = 0
    for pyx in NATIVE.glob("*.pyx"):
        for line in pyx.read_text().splitlines():
            m = statement.match(line)
            if m is not None:
                seen += 1
                assert not (m.group(1) or m.group(2)).startswith("gateway"), f"{pyx.name}: {line}"
    assert seen            # the pattern does find the extensions' imports


def test_tlspump_sits_under_tls():
    modules = _modules()
    assert "tlspump" in modules["tls"]
    assert {t for t in modules["tlspump"] if not t.startswith(("ext:", "_"))} <= {"errors"}


# -- pyOpenSSL's private surface: tlspump.py alone -------------------------------------------------
# The private names of pyOpenSSL, read from its own source: every `_`-prefixed (non-dunder) name it
# defines (attributes its objects set on themselves, class attributes and methods, module-level
# names), plus the ones the pump is known to need, in case a release renames its internals.
KNOWN_PRIVATE = {"_ssl", "_context", "_reverse_mapping", "_from_raw_x509_ptr", "_lib", "_ffi",
                 "_into_ssl", "_from_ssl", "_app_data", "_verify_helper", "_alpn_select_helper",
                 "_ocsp_helper", "_x509"}
# modules whose every name is the raw-binding surface
RAW_MODULES = ("OpenSSL._util", "cryptography.hazmat.bindings")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _pyopenssl_private_names() -> set[str]:
    import OpenSSL
    names = set(KNOWN_PRIVATE)
    for path in Path(OpenSSL.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        names.add(target.id)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
    return {n for n in names if _private(n)}


PYOPENSSL_PRIVATE = _pyopenssl_private_names()


def _own_names(tree: ast.AST) -> set[str]:
    """The names a module's own objects define on themselves: `self.x = ...` targets and the
    members of its classes (a TLSConnection's `_ssl` slot is the gateway's, not pyOpenSSL's)."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and node.value.id == "self":
            own.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    own.add(member.name)
                elif isinstance(member, ast.Assign):
                    own.update(t.id for t in member.targets if isinstance(t, ast.Name))
    return own


def private_surface(source: str, filename: str = "<source>") -> list[str]:
    """Every place `source` touches pyOpenSSL's or cryptography's private or raw-binding surface:
    an import of OpenSSL._util, cryptography's raw bindings or a private name of either package; a
    read of a pyOpenSSL private attribute (on anything but `self`'s own member of that name); a
    string naming one (what getattr would read)."""
    tree = ast.parse(source, filename)
    own = _own_names(tree)
    found = []

    def raw(module: str) -> bool:
        top = module.split(".")[0]
        return top in ("OpenSSL", "cryptography") and (
            module.startswith(RAW_MODULES) or any(_private(part) for part in module.split(".")))

    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names if raw(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if raw(node.module):
                found.append(f"{where} imports from {node.module}")
            elif top in ("OpenSSL", "cryptography"):
                found += [f"{where} imports {node.module}.{a.name}" for a in node.names
                          if _private(a.name) or raw(f"{node.module}.{a.name}")]
        elif isinstance(node, ast.Attribute) and node.attr in PYOPENSSL_PRIVATE:
            if not (isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in own):
                found.append(f"{where} reads {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value in PYOPENSSL_PRIVATE and node.value not in own:
            found.append(f"{where} names {node.value!r}")
    return found


def test_the_private_surface_check_finds_each_kind_of_touch():
    assert {"_ssl", "_reverse_mapping", "_from_raw_x509_ptr", "_verify_helper"} <= PYOPENSSL_PRIVATE
    touches = [
        "from OpenSSL._util import lib as _lib",
        "from OpenSSL import _util",
        "import OpenSSL._util",
        "from cryptography.hazmat.bindings._rust import _openssl",
        "from cryptography.hazmat.bindings.openssl.binding import Binding",
        "ssl = conn._ssl",
        "SSL.Connection._reverse_mapping.get(ssl)",
        "crypto.X509._from_raw_x509_ptr(x)",
        "ctx._context",
        "tc = conn._app_data",
        "SSL._lib.SSL_read",
        "helper = getattr(ctx, '_verify_helper', None)",
        "class C:\n    def f(self, other):\n        self._ssl = 1\n        return other._ssl",
    ]
    for source in touches:
        assert private_surface(source), source
    clean = ["from OpenSSL import SSL, crypto", "from cryptography import x509",
             "class C:\n    def f(self):\n        self._ssl = 1\n        return self._ssl",
             "ctx.set_verify(SSL.VERIFY_NONE)"]
    for source in clean:
        assert not private_surface(source), source


def test_only_tlspump_touches_pyopenssl_private_surface():
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name != "tlspump.py":
            found += private_surface(path.read_text(), path.name)
    assert not found, "\n".join(found)
