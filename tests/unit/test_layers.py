"""The layers of ../shared/DESIGN.md, held by a test: every gateway module imports only modules of a
lower layer (or, inside a layer, the ones listed), sans-IO modules import neither asyncio nor
socket, and native sources import nothing from gateway (the pure modules hand them their tables).

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
    "tls": 5,
    "conn": 6, "exchange": 6, "upstream": 6, "health": 6, "wheel": 6,
    "accept": 7, "proxy": 7, "native": 7,
    "admin": 8, "server": 8,
    "pki": 9, "echo": 9, "testing": 9,
    "demo": 10, "cli": 11, "__main__": 12, "__init__": 0,
}
# imports inside one layer that the design names (the data path's order within a layer)
SAME_LAYER = {
    ("trust", "identity"), ("headers", "identity"),
    ("conn", "exchange"), ("conn", "upstream"), ("upstream", "exchange"), ("exchange", "upstream"),
    ("upstream", "health"), ("health", "upstream"),
    ("server", "admin"), ("admin", "server"),
}
SANS_IO = ("errors", "spec", "config", "identity", "trust", "headers", "http1", "http2", "routes",
           "paths", "tls", "conn", "exchange")


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
