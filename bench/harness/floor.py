"""The crypto floor: what a handshake's own public-key operations cost on this machine.

How this works: a handshake cannot cost a server less than the asymmetric cryptography the protocol
makes it do. We time each operation with `cryptography`, whose OpenSSL is the one pyOpenSSL (and so
the gateway) runs on, on the server's CPUs, and add them up per kind of handshake:

- full handshake, TLS 1.3 or 1.2 with ECDHE: one X25519 key pair and one X25519 derivation, one
  signature with the server key (ECDSA P-256 or RSA-2048 PSS), and the client-side checks the mode
  asks for: `off` none, `passthrough` one ECDSA verification (the client's CertificateVerify:
  proof of key possession, never skipped), `verify` three (CertificateVerify, the leaf's signature
  by the intermediate, the intermediate's by the root; the root's self-signature is not checked).
- resumed, TLS 1.3: PSK with (EC)DHE (`psk_dhe_ke`, what OpenSSL clients offer): one X25519 pair and
  derivation, no signature.
- resumed, TLS 1.2: symmetric only; no floor is given (shown as a dash).

Hashing, HKDF and record encryption are left out: a few microseconds against hundreds. Each result
is then shown as a multiple of its floor. A verifier that caches chain verdicts (the gateway does)
may legitimately spend less than the `verify` floor on a repeated client.

`openssl speed` (`speed()`) gives the same operations for another OpenSSL (the system's, a root's),
to show how much of a peer's cost is the cryptography of the OpenSSL it runs on.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable

from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519

CLIENT_VERIFIES = {"off": 0, "passthrough": 1, "verify": 3}
# TLS 1.3 CertificateVerify signs 64 spaces, a context string and a transcript hash (RFC 8446 4.4.3)
_SIGNED = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00" + bytes(48)
BATCHES = 7


def openssl_version() -> str:
    return " ".join(backend.openssl_version_text().split()[:2])


def _time(fn: Callable[[], object], batch: int, batches: int = BATCHES) -> float:
    """Microseconds per call: the fastest batch. A floor is a lower bound, and on a shared machine
    every slower batch is the same work plus someone else's."""
    for _ in range(max(2, batch // 10)):
        fn()
    per_call = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        per_call.append((time.perf_counter() - t0) * 1e6 / batch)
    return min(per_call)


def measure(cpus: Iterable[int] | None = None, scale: float = 1.0) -> dict[str, float]:
    """µs per operation, on `cpus` (restored afterwards). `scale` < 1 shortens it (--quick)."""
    previous = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, set(cpus))
    try:
        n = max(5, int(100 * scale))
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ec_sig = ec_key.sign(_SIGNED, ec.ECDSA(hashes.SHA256()))
        ec_pub = ec_key.public_key()
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        peer = x25519.X25519PrivateKey.generate().public_key()

        def kx() -> bytes:
            return x25519.X25519PrivateKey.generate().exchange(peer)

        return {
            "x25519_keygen_derive": _time(kx, n),
            "ecdsa_p256_sign": _time(lambda: ec_key.sign(_SIGNED, ec.ECDSA(hashes.SHA256())), n),
            "ecdsa_p256_verify": _time(lambda: ec_pub.verify(ec_sig, _SIGNED, ec.ECDSA(hashes.SHA256())), n),
            "rsa2048_pss_sign": _time(lambda: rsa_key.sign(_SIGNED, pss, hashes.SHA256()), max(5, n // 4)),
        }
    finally:
        os.sched_setaffinity(0, previous)


def cell_floor(ops: dict[str, float], mode: str, handshake: str, tls: str, key: str) -> float | None:
    """µs of public-key cryptography a server must spend on one handshake of this kind."""
    if handshake == "resumed":
        return ops["x25519_keygen_derive"] if tls == "1.3" else None
    sign = ops["ecdsa_p256_sign"] if key == "ecdsa" else ops["rsa2048_pss_sign"]
    return ops["x25519_keygen_derive"] + sign + CLIENT_VERIFIES[mode] * ops["ecdsa_p256_verify"]


# --- openssl speed, for the other OpenSSLs --------------------------------------------------------

def speed_command(openssl: list[str], seconds: int = 1) -> list[str]:
    return [*openssl, "speed", "-seconds", str(seconds), "ecdsap256", "ecdhx25519", "rsa2048"]


def parse_speed(text: str) -> dict[str, float]:
    """µs per operation from `openssl speed` output (3.0 and 3.5 layouts): each data line's
    trailing rates belong to the trailing `.../s` columns of the header above it."""
    ops: dict[str, float] = {}
    rates: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if any(w.endswith("/s") for w in words) and not re.search(r"\d", line):
            rates = [w for w in words if w.endswith("/s")]
            continue
        numbers = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.]*s\b)", line)
        if not rates or len(numbers) < len(rates):
            continue
        values = dict(zip(rates, (float(x) for x in numbers[-len(rates):])))
        if "ecdsa" in line and "nistp256" in line:
            if values.get("sign/s"):
                ops["ecdsa_p256_sign"] = 1e6 / values["sign/s"]
            if values.get("verify/s"):
                ops["ecdsa_p256_verify"] = 1e6 / values["verify/s"]
        elif "X25519" in line and values.get("op/s"):
            # speed times the derivation; a key pair costs one more scalar multiplication
            ops["x25519_keygen_derive"] = 2e6 / values["op/s"]
        elif "rsa" in line and "2048" in line and values.get("sign/s"):
            ops["rsa2048_pss_sign"] = 1e6 / values["sign/s"]
    return ops


def speed(openssl: list[str], cpus: Iterable[int], seconds: int = 1) -> dict[str, float] | str:
    """µs per operation measured by this `openssl` (pinned to `cpus`), or why it could not be."""
    cpu_set = set(cpus)
    try:
        out = subprocess.run(speed_command(openssl, seconds), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=120,
                             preexec_fn=lambda: os.sched_setaffinity(0, cpu_set))
    except (OSError, subprocess.SubprocessError) as exc:
        return f"openssl speed failed: {exc}"
    ops = parse_speed(out.stdout.decode(errors="replace"))
    return ops if len(ops) == 4 else f"openssl speed gave {sorted(ops)} only"


__all__ = ["openssl_version", "measure", "cell_floor", "parse_speed", "speed", "speed_command",
           "CLIENT_VERIFIES"]
