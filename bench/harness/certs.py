"""The benchmark's own PKI: one set of files every peer and every client uses.

How this works: a root CA signs an intermediate CA; the intermediate signs a client certificate
(client chain of depth 2, leaf -> intermediate -> root, ECDSA P-256 throughout) and two server
certificates for 127.0.0.1/localhost, one with an ECDSA P-256 key and one with an RSA-2048 key, so
the cost of the server's own signature can be compared. Everything comes from `gateway.pki`, the
development PKI the product ships, and is written in the shapes each consumer wants: separate
certificate and key files (the gateway, nginx, openssl s_time), certificate + key in one file
(HAProxy's `crt`, ab's `-E`), and a CA bundle holding root and intermediate (what the servers
trust: `openssl s_time` sends its leaf only, so the intermediate must be known to the server).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway import pki

KEY_TYPES = {"ecdsa": "ec", "rsa": "rsa"}   # the harness's names -> gateway.pki's
SERVER_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class BenchPKI:
    dir: Path
    root: Path                      # the clients' trust anchor for the server certificates
    ca_bundle: Path                 # root + intermediate: what the servers trust for clients
    crls: tuple[Path, ...]          # empty CRLs of root and intermediate (used with --crl)
    crl_bundle: Path                # the same CRLs in one file (nginx ssl_crl, HAProxy crl-file)
    server_certs: dict[str, Path]   # "ecdsa" | "rsa" -> certificate chain (leaf + intermediate)
    server_keys: dict[str, Path]
    server_combined: dict[str, Path]  # chain + key in one file (HAProxy `crt`)
    client_cert: Path               # leaf + intermediate
    client_key: Path
    client_combined: Path           # leaf + intermediate + key (ab -E)

    def files(self) -> list[Path]:
        """Every file, for copying into a root a peer runs chrooted in."""
        out = [self.root, self.ca_bundle, *self.crls, self.crl_bundle, self.client_cert, self.client_key,
               self.client_combined]
        for key in self.server_certs:
            out += [self.server_certs[key], self.server_keys[key], self.server_combined[key]]
        return out


def make(directory: Path) -> BenchPKI:
    directory.mkdir(parents=True, exist_ok=True)
    root = pki.make_root("mtls-gateway-bench root CA")
    inter = pki.make_intermediate(root, "mtls-gateway-bench intermediate CA", path_length=0)
    client = pki.make_client(inter, "bench-client")

    def put(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    root_path = put("root-ca.pem", root.cert_pem)
    bundle = put("ca-bundle.pem", root.cert_pem + inter.cert_pem)
    crls = (put("crl-root.pem", pki.crl_pem(pki.make_crl(root, []))),
            put("crl-intermediate.pem", pki.crl_pem(pki.make_crl(inter, []))))
    crl_bundle = put("crls.pem", b"".join(p.read_bytes() for p in crls))
    certs: dict[str, Path] = {}
    keys: dict[str, Path] = {}
    combined: dict[str, Path] = {}
    for name, key_type in KEY_TYPES.items():
        server = pki.make_server(inter, list(SERVER_NAMES), key_type=key_type)
        certs[name] = put(f"server-{name}.pem", server.chain_pem)
        keys[name] = put(f"server-{name}.key", server.key_pem)
        combined[name] = put(f"server-{name}-combined.pem", server.chain_pem + server.key_pem)
    for path in (*keys.values(), *combined.values()):
        path.chmod(0o600)
    client_cert = put("client.pem", client.chain_pem)
    client_key = put("client.key", client.key_pem)
    client_combined = put("client-combined.pem", client.chain_pem + client.key_pem)
    client_key.chmod(0o600)
    client_combined.chmod(0o600)
    return BenchPKI(directory, root_path, bundle, crls, crl_bundle, certs, keys, combined,
                    client_cert, client_key, client_combined)


def relocate(bench: BenchPKI, host_dir: Path, seen_as: Path) -> BenchPKI:
    """Copy every file into `host_dir` and return the PKI as a process sees it at `seen_as` (the
    same directory seen from inside a chroot)."""
    host_dir.mkdir(parents=True, exist_ok=True)
    for path in bench.files():
        target = host_dir / path.name
        target.write_bytes(path.read_bytes())
        target.chmod(path.stat().st_mode & 0o777)

    def moved(path: Path) -> Path:
        return seen_as / path.name
    return BenchPKI(seen_as, moved(bench.root), moved(bench.ca_bundle),
                    tuple(moved(p) for p in bench.crls), moved(bench.crl_bundle),
                    {k: moved(v) for k, v in bench.server_certs.items()},
                    {k: moved(v) for k, v in bench.server_keys.items()},
                    {k: moved(v) for k, v in bench.server_combined.items()},
                    moved(bench.client_cert), moved(bench.client_key), moved(bench.client_combined))


__all__ = ["BenchPKI", "KEY_TYPES", "make", "relocate"]
