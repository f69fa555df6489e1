"""From raw runs to the three outputs: a terminal table, a JSON document (orjson) and a PNG chart.

How this works: the harness hands over raw runs (one dict per measured window); `summarize_*` turn
them into one row per point (peer x mode x handshake x TLS version x key type) carrying the median,
the spread, the bottleneck, the crypto floor and the ratios to every nginx of the run. Those rows,
with the machine's description and the peers' versions, are the JSON document, and every other
output is rendered from that document alone, so a saved JSON can be re-rendered (and the unit tests
build one by hand).

Ratios are always "peer / nginx": for CPU per handshake and latency, below 1 is better; for
handshakes per second, above 1 is better.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import orjson

from . import floor as floor_mod
from .stats import median, ratio, spread

SCHEMA = "mtls-gateway-bench/1"
SERVER_BUSY = 0.85      # a side above this share of its CPUs is the bottleneck
CLIENT_BUSY = 0.85
RESUMED_MIN = 0.9       # below this share of resumed connections a "resumed" point is flagged

# The product's targets: server CPU per operation as a ratio to the reference nginx, ECDSA P-256,
# TLS 1.3, one worker.
TARGETS = (
    ("full handshake, verify", "handshake", ("verify", "full"), 0.8),
    ("full handshake, passthrough", "handshake", ("passthrough", "full"), 0.8),
    ("resumed handshake, verify", "handshake", ("verify", "resumed"), 0.8),
    ("resumed handshake, passthrough", "handshake", ("passthrough", "resumed"), 0.8),
    ("keep-alive request, verify", "keepalive", ("verify",), 1.2),
    ("keep-alive request, passthrough", "keepalive", ("passthrough",), 1.2),
)


def bottleneck(server_util: float, client_util: float) -> str:
    if server_util >= SERVER_BUSY and client_util >= CLIENT_BUSY:
        return "both"
    if server_util >= SERVER_BUSY:
        return "server"
    if client_util >= CLIENT_BUSY:
        return "client"
    return "neither"


def _majority(labels: Sequence[str]) -> str:
    if not labels:
        return "-"
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return max(counts, key=lambda k: (counts[k], k == "server"))


def _figure(values: Sequence[float | None]) -> dict:
    xs = [v for v in values if v is not None]
    return {"median": median(xs), "spread": spread(xs), "min": min(xs) if xs else None,
            "max": max(xs) if xs else None, "n": len(xs)}


def nginx_names(peers: Sequence[dict]) -> list[str]:
    return [p["name"] for p in peers if p["kind"] == "nginx"]


def _version_key(openssl: str) -> tuple[int, ...]:
    m = re.search(r"\d+(?:\.\d+)*", openssl)
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()


def pick_reference(peers: Sequence[dict], wanted: str | None = None) -> str | None:
    """The nginx the targets are judged against: the one asked for, else the one on the newest
    OpenSSL (the targets are set against nginx on a current OpenSSL)."""
    names = nginx_names(peers)
    if wanted:
        return wanted if wanted in {p["name"] for p in peers} else None
    if not names:
        return None
    by_name = {p["name"]: p for p in peers}
    return max(names, key=lambda n: (_version_key(by_name[n]["openssl"]), n))


# --- summaries ------------------------------------------------------------------------------------

def summarize_handshakes(runs: Sequence[dict], peers: Sequence[dict], floor_ops: dict | None) -> list[dict]:
    """One row per (peer, mode, handshake, tls, key) from raw windows."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        key = (run["peer"], run["mode"], run["handshake"], run["tls"], run["key"])
        groups.setdefault(key, []).append(run)
    rows = []
    for (peer, mode, hs, tls, key), rs in groups.items():
        good = [r for r in rs if r.get("connections")]
        row = {"peer": peer, "mode": mode, "handshake": hs, "tls": tls, "key": key,
               "runs": rs,
               "hs_per_s": _figure([r["hs_per_s"] for r in good]),
               "cpu_us": _figure([r["cpu_us"] for r in good]),
               "server_util": median(r["server_util"] for r in good),
               "client_util": median(r["client_util"] for r in good),
               "other_util": median(r.get("other_util") for r in good),
               "bottleneck": _majority([r["bottleneck"] for r in good]),
               "notes": sorted({e for r in rs for e in r.get("errors", [])})[:3]}
        if hs == "resumed":
            fractions = [r.get("resumed_fraction") for r in good if r.get("resumed_fraction") is not None]
            if fractions and median(fractions) < RESUMED_MIN:
                row["notes"].append(f"only {median(fractions):.0%} of connections resumed")
        fl = floor_mod.cell_floor(floor_ops, mode, hs, tls, key) if floor_ops else None
        row["floor_us"] = fl
        row["floor_multiple"] = ratio(row["cpu_us"]["median"], fl)
        rows.append(row)
    _add_ratios(rows, peers, ("mode", "handshake", "tls", "key"),
                {"cpu": ("cpu_us", "median"), "hs_per_s": ("hs_per_s", "median")})
    return rows


def summarize_keepalive(runs: Sequence[dict], peers: Sequence[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["peer"], run["mode"], run["client"]), []).append(run)
    rows = []
    for (peer, mode, client), rs in groups.items():
        good = [r for r in rs if r.get("requests")]
        rows.append({"peer": peer, "mode": mode, "client": client, "tls": rs[0].get("tls"),
                     "key": rs[0].get("key"), "runs": rs,
                     "req_per_s": _figure([r["req_per_s"] for r in good]),
                     "cpu_us": _figure([r["cpu_us"] for r in good]),
                     "bottleneck": _majority([r["bottleneck"] for r in good]),
                     "notes": sorted({e for r in rs for e in r.get("errors", [])})[:3]})
    _add_ratios(rows, peers, ("mode", "client"), {"cpu": ("cpu_us", "median"),
                                                  "req_per_s": ("req_per_s", "median")})
    return rows


def summarize_latency(runs: Sequence[dict], peers: Sequence[dict]) -> list[dict]:
    rows = [dict(r) for r in runs]
    _add_ratios(rows, peers, ("mode", "handshake", "tls", "key"), {"p50": ("p50_ms",), "p99": ("p99_ms",)})
    return rows


def _dig(row: dict, path: tuple[str, ...]):
    value = row
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _add_ratios(rows: list[dict], peers: Sequence[dict], same: tuple[str, ...],
                metrics: dict[str, tuple[str, ...]]) -> None:
    index = {(r["peer"], *(r.get(k) for k in same)): r for r in rows}
    for row in rows:
        row["ratios"] = {}
        for ref in nginx_names(peers):
            other = index.get((ref, *(row.get(k) for k in same)))
            if other is None:
                continue
            row["ratios"][ref] = {m: ratio(_dig(row, path), _dig(other, path)) for m, path in metrics.items()}


def evaluate_targets(doc: dict) -> list[dict]:
    ref = doc.get("reference")
    out = []
    hs = {(r["peer"], r["mode"], r["handshake"]): r for r in doc.get("handshakes", [])
          if r["tls"] == "1.3" and r["key"] == "ecdsa"}
    ka_rows = [r for r in doc.get("keepalive", []) if r.get("tls", "1.3") == "1.3"]
    for name, kind, what, limit in TARGETS:
        if kind == "handshake":
            ours, theirs = hs.get(("gateway", *what)), hs.get((ref, *what))
            client = None
        else:
            ours = theirs = client = None
            for c in ("ab", "http11"):     # ab -k, the neutral client, when both sides completed it
                o = next((r for r in ka_rows if (r["peer"], r["mode"], r["client"]) == ("gateway", what[0], c)), None)
                t = next((r for r in ka_rows if (r["peer"], r["mode"], r["client"]) == (ref, what[0], c)), None)
                if o and t and o["cpu_us"]["median"] and t["cpu_us"]["median"]:
                    ours, theirs, client = o, t, c
                    break
        g = ours["cpu_us"]["median"] if ours else None
        n = theirs["cpu_us"]["median"] if theirs else None
        r = ratio(g, n)
        out.append({"target": name, "limit": limit, "reference": ref, "gateway_us": g, "reference_us": n,
                    "ratio": r, "met": None if r is None else r <= limit, "client": client})
    return out


def bottleneck_summary(doc: dict) -> str:
    counts: dict[str, int] = {}
    for row in doc.get("handshakes", []):
        counts[row["bottleneck"]] = counts.get(row["bottleneck"], 0) + 1
    if not counts:
        return "no handshake points were measured"
    parts = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    rows = doc.get("handshakes", [])
    med = lambda key: median(r.get(key) for r in rows)    # noqa: E731
    text = (f"Bottleneck by point: {parts}. Median share of CPU busy: server {pct(med('server_util'))} of its "
            f"cores, clients {pct(med('client_util'))} of theirs, other work {pct(med('other_util'))} of all "
            f"the benchmark's CPUs. 'client' means the load generators kept their CPUs >= {CLIENT_BUSY:.0%} "
            f"busy while the server had room: handshakes/s is then the client's limit and server CPU per "
            f"handshake is the figure to compare.")
    if (med("other_util") or 0) >= 0.15:
        text += (" Other processes took a large share of the CPUs: neither side could be kept busy, and "
                 "figures are noisier than on a quiet machine (see the ranges).")
    return text


# --- formatting -----------------------------------------------------------------------------------

def num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False,
          right: Sequence[bool] | None = None) -> str:
    right = right or [False] * len(headers)
    if markdown:
        sep = ["---:" if r else "---" for r in right]
        lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def handshake_table(doc: dict, *, markdown: bool = False) -> str:
    refs = nginx_names(doc["peers"])
    ref = doc.get("reference")
    headers = ["mode", "handshake", "TLS", "key", "peer", "hs/s", "range", "CPU µs/hs", "range", "×floor"]
    headers += [f"CPU ×{n}" for n in refs]
    headers += [f"hs/s ×{ref}" if ref else "hs/s ×nginx", "bound"]
    right = [False] * 5 + [True] * (len(headers) - 6) + [False]
    order = {m: i for i, m in enumerate(("off", "passthrough", "verify"))}
    rows = []
    for r in sorted(doc.get("handshakes", []), key=lambda r: (r["tls"] != "1.3", r["key"], order.get(r["mode"], 9),
                                                              r["handshake"], _peer_order(doc, r["peer"]))):
        cells = [r["mode"], r["handshake"], r["tls"], r["key"], r["peer"],
                 num(r["hs_per_s"]["median"]), pct(r["hs_per_s"]["spread"]),
                 num(r["cpu_us"]["median"]), pct(r["cpu_us"]["spread"]), times(r.get("floor_multiple"))]
        cells += [times(r["ratios"].get(n, {}).get("cpu")) for n in refs]
        cells += [times(r["ratios"].get(ref, {}).get("hs_per_s")) if ref else "-", r["bottleneck"]]
        rows.append(cells)
    return table(headers, rows, markdown=markdown, right=right)


def _peer_order(doc: dict, name: str) -> int:
    names = [p["name"] for p in doc["peers"]]
    return names.index(name) if name in names else len(names)


def keepalive_table(doc: dict, *, markdown: bool = False) -> str:
    refs = nginx_names(doc["peers"])
    headers = ["mode", "client", "peer", "req/s", "range", "CPU µs/req", "range"] + [f"CPU ×{n}" for n in refs] + ["bound", "note"]
    right = [False] * 3 + [True] * (4 + len(refs)) + [False, False]
    order = {m: i for i, m in enumerate(("off", "passthrough", "verify"))}
    rows = []
    for r in sorted(doc.get("keepalive", []), key=lambda r: (r["client"], order.get(r["mode"], 9),
                                                            _peer_order(doc, r["peer"]))):
        client = "HTTP/1.1 (ours)" if r["client"] == "http11" else "ab -k (HTTP/1.0)"
        rows.append([r["mode"], client, r["peer"], num(r["req_per_s"]["median"]), pct(r["req_per_s"]["spread"]),
                     num(r["cpu_us"]["median"], 1), pct(r["cpu_us"]["spread"])]
                    + [times(r["ratios"].get(n, {}).get("cpu")) for n in refs]
                    + [r["bottleneck"], "; ".join(r.get("notes", []))[:90]])
    return table(headers, rows, markdown=markdown, right=right)


def latency_table(doc: dict, *, markdown: bool = False) -> str:
    """p50/p99 from each connection's scheduled start (a late start counts against the peer) and
    the service times from its actual start; a '*' marks a point where the client fell behind."""
    refs = nginx_names(doc["peers"])
    headers = (["mode", "handshake", "peer", "rate/s", "n", "p50 ms", "p99 ms", "service p50", "service p99"]
               + [f"p50 ×{n}" for n in refs] + [f"p99 ×{n}" for n in refs])
    right = [False] * 3 + [True] * (len(headers) - 3)
    order = {m: i for i, m in enumerate(("off", "passthrough", "verify"))}
    rows = []
    for r in sorted(doc.get("latency", []), key=lambda r: (order.get(r["mode"], 9), r["handshake"],
                                                          _peer_order(doc, r["peer"]))):
        slipped = "*" if "fell behind" in (r.get("note") or "") else ""
        rows.append([r["mode"], r["handshake"], r["peer"], num(r.get("achieved_rate")) + slipped,
                     str(r.get("count", 0)), num(r.get("p50_ms"), 2), num(r.get("p99_ms"), 2),
                     num(r.get("service_p50_ms"), 2), num(r.get("service_p99_ms"), 2)]
                    + [times(r["ratios"].get(n, {}).get("p50")) for n in refs]
                    + [times(r["ratios"].get(n, {}).get("p99")) for n in refs])
    return table(headers, rows, markdown=markdown, right=right)


def targets_table(doc: dict, *, markdown: bool = False) -> str:
    ref = doc.get("reference") or "nginx"
    headers = ["target (server CPU, ECDSA, TLS 1.3)", "gateway µs", f"{ref} µs", "ratio", "limit", "met"]
    rows = []
    for t in doc.get("targets", []):
        met = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
        name = t["target"] + (f" ({'HTTP/1.1 client' if t['client'] == 'http11' else 'ab -k'})" if t.get("client") else "")
        rows.append([name, num(t["gateway_us"], 1 if "keep-alive" in t["target"] else 0),
                     num(t["reference_us"], 1 if "keep-alive" in t["target"] else 0),
                     times(t["ratio"]), f"<= {t['limit']}", met])
    return table(headers, rows, markdown=markdown, right=[False, True, True, True, True, False])


def floor_table(doc: dict, *, markdown: bool = False) -> str:
    fl = doc.get("floor") or {}
    sources = {f"{fl.get('openssl', '?')} (cryptography, the gateway's)": fl.get("ops_us") or {}}
    for name, ops in (fl.get("speed") or {}).items():
        if isinstance(ops, dict):
            sources[f"{name} (openssl speed)"] = ops
    ops_names = ["x25519_keygen_derive", "ecdsa_p256_sign", "ecdsa_p256_verify", "rsa2048_pss_sign"]
    headers = ["OpenSSL", *ops_names, "full verify (ECDSA)"]
    rows = []
    for name, ops in sources.items():
        total = floor_mod.cell_floor(ops, "verify", "full", "1.3", "ecdsa") if len(ops) == 4 else None
        rows.append([name, *(num(ops.get(o), 1) for o in ops_names), num(total, 0)])
    return table(headers, rows, markdown=markdown, right=[False] + [True] * 5)


def render(doc: dict, *, markdown: bool = False) -> str:
    h = "### " if markdown else ""
    parts = [f"{h}Handshakes (server CPU per handshake from the servers' own accounting; "
             "range = (max - min) / median of the repeats)",
             handshake_table(doc, markdown=markdown)]
    if doc.get("keepalive"):
        parts += ["", f"{h}Keep-alive requests (server CPU per request, handshakes subtracted)",
                  keepalive_table(doc, markdown=markdown)]
    if doc.get("latency"):
        parts += ["", f"{h}Latency to first response byte, new connection each, fixed rate "
                      f"({doc.get('settings', {}).get('latency_rate', '?')}/s; * = the client fell behind)",
                  latency_table(doc, markdown=markdown)]
    parts += ["", f"{h}Crypto floor (µs per operation, fastest batch)", floor_table(doc, markdown=markdown)]
    if doc.get("targets"):
        parts += ["", f"{h}Targets (ratio to {doc.get('reference')}, one worker)", targets_table(doc, markdown=markdown)]
    parts += ["", doc.get("bottleneck", "")]
    return "\n".join(parts)


def write_json(path: Path, doc: dict) -> None:
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def chart(path: Path, doc: dict, *, tls: str = "1.3", key: str = "ecdsa") -> str | None:
    """handshakes/s and server CPU per handshake, per mode, peers side by side; None when written,
    else why not (matplotlib is the optional `chart` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'mtls-gateway[chart]'); no chart"
    rows = [r for r in doc.get("handshakes", []) if r["tls"] == tls and r["key"] == key]
    if not rows:
        return "no TLS 1.3 ECDSA points to chart"
    points = [(m, h) for m in ("off", "passthrough", "verify") for h in ("full", "resumed")
              if any(r["mode"] == m and r["handshake"] == h for r in rows)]
    peers = [p["name"] for p in doc["peers"] if any(r["peer"] == p["name"] for r in rows)]
    index = {(r["peer"], r["mode"], r["handshake"]): r for r in rows}
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(points) + 2), 8), sharex=True)
    width = 0.8 / max(1, len(peers))
    labels = {p["name"]: f"{p['name']} ({p['openssl']})" for p in doc["peers"]}
    for ax, metric, title in ((axes[0], "hs_per_s", "handshakes/s (higher is better)"),
                              (axes[1], "cpu_us", "server CPU µs per handshake (lower is better)")):
        for i, peer in enumerate(peers):
            xs, ys, lo, hi = [], [], [], []
            for j, pt in enumerate(points):
                r = index.get((peer, *pt))
                fig_ = r[metric] if r else None
                if not fig_ or fig_["median"] is None:
                    continue
                xs.append(j + (i - (len(peers) - 1) / 2) * width)
                ys.append(fig_["median"])
                lo.append(fig_["median"] - fig_["min"])
                hi.append(fig_["max"] - fig_["median"])
            repeated = any(index[(peer, *pt)][metric]["n"] > 1 for pt in points if (peer, *pt) in index)
            ax.bar(xs, ys, width, yerr=[lo, hi] if repeated else None, capsize=2, label=labels.get(peer, peer))
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(points)), [f"{m}\n{h}" for m, h in points])
    axes[0].legend(fontsize=8)
    s = doc.get("settings", {})
    fig.suptitle(f"mtls-gateway-bench: TLS {tls}, {key.upper()} server key, {s.get('workers', 1)} worker(s) "
                 f"on CPU {s.get('server_cpus', '?')}, clients on CPU {s.get('client_cpus', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


__all__ = ["SCHEMA", "TARGETS", "bottleneck", "summarize_handshakes", "summarize_keepalive",
           "summarize_latency", "evaluate_targets", "bottleneck_summary", "pick_reference", "render",
           "write_json", "chart", "table", "nginx_names"]
