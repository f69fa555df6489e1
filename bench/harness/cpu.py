"""CPU time of a process tree, from the kernel's own accounting, and CPU-set parsing.

How this works: a server's cost per handshake is the CPU its processes spent (user + system) divided
by the handshakes they completed in the same window. The figure comes from `/proc/PID/stat` of the
server's processes, not from the load generator, so it holds whatever side is the bottleneck. A
server is a tree: nginx's master and workers, the gateway's supervisor and workers, HAProxy's one
process and its threads (threads are already summed into their process's line). For every live
process of the tree we add its own `utime + stime` and `cutime + cstime` (the CPU of children it
has reaped), so a worker that exits and is reaped inside the window still counts, and nothing
counts twice. The unit is the clock tick (`SC_CLK_TCK`, 10 ms on Linux): windows of a second or
more at a busy server keep that error near 1%.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = "/proc"


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    utime: int      # clock ticks
    stime: int
    cutime: int
    cstime: int

    @property
    def ticks(self) -> int:
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """One `/proc/PID/stat` line. The command name sits in parentheses and may itself contain
    spaces and parentheses (proc(5)), so the fields are counted from the last ')'."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # after ")": state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17); fields[0] is state
    return ProcStat(pid=pid, ppid=int(fields[1]), utime=int(fields[11]), stime=int(fields[12]),
                    cutime=int(fields[13]), cstime=int(fields[14]))


def read_stat(pid: int, proc: str = PROC) -> ProcStat | None:
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as f:
            return parse_stat(f.read())
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def all_stats(proc: str = PROC) -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for name in os.listdir(proc):
        if name.isdigit():
            st = read_stat(int(name), proc)
            if st is not None:
                stats[st.pid] = st
    return stats


def tree_ticks(root: int, stats: dict[int, ProcStat]) -> int:
    """Ticks of `root` and all its live descendants (own + reaped children's)."""
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid].ticks
        todo.extend(children.get(pid, ()))
    return total


def tree_seconds(root: int, proc: str = PROC) -> float:
    return tree_ticks(root, all_stats(proc)) / CLK_TCK


def processes_seconds(pids: Iterable[int], proc: str = PROC) -> float:
    """Own CPU (user + system) of the given processes, e.g. the load generators of a window."""
    total = 0
    for pid in pids:
        st = read_stat(pid, proc)
        if st is not None:
            total += st.utime + st.stime
    return total / CLK_TCK


def parse_proc_stat(text: str, cpus: Iterable[int]) -> float:
    """Busy seconds (everything but idle and iowait) of the given CPUs, from `/proc/stat`."""
    wanted = {f"cpu{c}" for c in cpus}
    busy = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name in wanted:
            fields = [int(x) for x in rest.split()]
            busy += sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    return busy / CLK_TCK


def busy_seconds(cpus: Iterable[int], proc: str = PROC) -> float:
    """How long the given CPUs have been busy, whoever with: compared with what the benchmark's
    own processes used, it shows how much of the window other work on a shared machine took."""
    with open(f"{proc}/stat", encoding="ascii") as f:
        return parse_proc_stat(f.read(), cpus)


def per_event_us(cpu_seconds: float, events: int) -> float | None:
    """Microseconds of CPU per handshake or request; None when nothing completed."""
    if events <= 0:
        return None
    return cpu_seconds * 1e6 / events


def utilisation(cpu_seconds: float, wall_s: float, cores: int) -> float:
    """Share of `cores` CPUs kept busy over `wall_s` (1.0 = every core all the time)."""
    if wall_s <= 0 or cores <= 0:
        return 0.0
    return cpu_seconds / (wall_s * cores)


def parse_cpus(text: str) -> tuple[int, ...]:
    """A CPU list as taskset(1) writes it: "0", "1-3", "0,2-3"."""
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            a, b = int(lo), int(hi)
            if b < a:
                raise ValueError(f"bad CPU range {part!r}")
            cpus.extend(range(a, b + 1))
        else:
            cpus.append(int(lo))
    if not cpus:
        raise ValueError(f"no CPUs in {text!r}")
    return tuple(dict.fromkeys(cpus))


def format_cpus(cpus: Iterable[int]) -> str:
    """The inverse of parse_cpus, with runs folded into ranges."""
    xs = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        parts.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(parts)


def default_cpu_sets(workers: int, available: Iterable[int] | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Server CPUs: the first `workers` usable CPUs; clients: the rest. One CPU: both share it."""
    cpus = sorted(available if available is not None else os.sched_getaffinity(0))
    if len(cpus) == 1:
        return (cpus[0],), (cpus[0],)
    n = max(1, min(workers, len(cpus) - 1))
    return tuple(cpus[:n]), tuple(cpus[n:])


# Scheduling priority of every benchmark process (`--nice`): on a shared machine a negative value
# makes the peers and the clients win the CPUs they are pinned to over unrelated work.
_nice = 0


def set_nice(value: int) -> None:
    global _nice
    _nice = value


def pin(cpus: Iterable[int]):
    """A `preexec_fn` that pins the child (and everything it forks) before it executes, at the
    run's priority."""
    cpu_set = set(cpus)
    nice = _nice

    def apply() -> None:
        os.sched_setaffinity(0, cpu_set)
        if nice:
            os.nice(nice)
    return apply


__all__ = ["CLK_TCK", "ProcStat", "parse_stat", "read_stat", "all_stats", "tree_ticks",
           "tree_seconds", "processes_seconds", "busy_seconds", "parse_proc_stat", "per_event_us", "utilisation", "parse_cpus",
           "format_cpus", "default_cpu_sets", "pin", "set_nice"]
