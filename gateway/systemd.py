"""systemd integration without a dependency: sd_notify, socket activation, the watchdog.

How this works: `notify()` sends one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET
(a leading "@" means Linux's abstract namespace), as sd_notify(3) describes; with no such variable
it does nothing, so the same code runs under systemd and in a terminal. `listen_fds()` takes the
sockets systemd passed (sd_listen_fds(3): $LISTEN_PID must be this process, $LISTEN_FDS counts fds
from 3, $LISTEN_FDNAMES names them) and unsets the variables so children do not take them again.
`watchdog_interval_s()` reads $WATCHDOG_USEC (and $WATCHDOG_PID): ping at half of it.
"""
from __future__ import annotations

import os
import socket
import time

SD_LISTEN_FDS_START = 3


def notify(*lines: str) -> bool:
    """Send "KEY=value" lines (READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, STATUS=...)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not lines:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    payload = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
        return True
    except OSError:
        return False


def ready(status: str = "") -> bool:
    return notify("READY=1", *((f"STATUS={status}",) if status else ()))


def reloading(status: str = "reloading configuration") -> bool:
    # Type=notify-reload (systemd 253) wants MONOTONIC_USEC with RELOADING=1; older ones ignore it.
    usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")


def stopping(status: str = "draining connections") -> bool:
    return notify("STOPPING=1", f"STATUS={status}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout systemd set for this process, or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


def listen_fds(unset: bool = True) -> list[tuple[str, socket.socket]]:
    """Sockets passed by systemd, as (name, socket) in order; [] when none were passed to us."""
    try:
        pid = int(os.environ.get("LISTEN_PID", ""))
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    names = os.environ.get("LISTEN_FDNAMES", "")
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    if pid != os.getpid() or count <= 0:
        return []
    labels = names.split(":") if names else []
    out = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, True)
        sock = socket.socket(fileno=fd)
        label = labels[i] if i < len(labels) else ""
        out.append((label, sock))
    return out


def match_sockets(inherited: list[tuple[str, socket.socket]],
                  listeners: list[tuple[str, str, int]]) -> dict[str, socket.socket]:
    """Pair inherited sockets with listeners: by name (FileDescriptorName= / LISTEN_FDNAMES) first,
    then by the address they are bound to. `listeners` is [(name, host, port)]."""
    matched: dict[str, socket.socket] = {}
    rest = []
    names = {name for name, _, _ in listeners}
    for label, sock in inherited:
        if label in names and label not in matched:
            matched[label] = sock
        else:
            rest.append(sock)
    for sock in rest:
        try:
            host, port = sock.getsockname()[:2]
        except OSError:
            continue
        for name, lhost, lport in listeners:
            if name in matched or lport != port:
                continue
            if lhost in ("", "0.0.0.0", "::", host):
                matched[name] = sock
                break
    return matched
