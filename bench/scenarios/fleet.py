"""A fleet behind a layer-4 balancer: what source affinity buys, what a dead instance costs, what a
rolling restart costs.

    python -m mtls_gateway_bench.scenarios.fleet [--instances 3] [--seconds 5] [--repeats 3]
                                                 [--clients 8] [--server-cpus 0] [--client-cpus 1]

How this works: mtls_gateway_bench.harness.fleet starts `--instances` gateways (one worker each,
`verify`, ECDSA P-256, TLS 1.3, separate process groups: separate hosts) and HAProxy in TCP mode in
front of them, all pinned to `--server-cpus`; the clients (Python's ssl with the client
certificate, a new connection per request offering its last session, each from its own 127.0.0.N)
run on `--client-cpus`.

1. Affinity: `balance source` and `roundrobin` alternate, `--repeats` times. In each, after a
   second of warm-up, a `--seconds` window counts the connections, how many resumed, and the CPU
   the instances spent (from /proc, HAProxy's left out: it is the same in both), so server CPU per
   connection with and without affinity is measured side by side.
2. Kill: under `--clients` new-connection and two keep-alive clients, round-robin, SIGKILL one
   instance's process group; the requests that failed (each had started before the instance's
   port refused and was still going when the signal went), the slowest new connection in the
   second after, how long HAProxy took to mark it down.
3. Roll: under the same load, restart every instance one at a time (SIGTERM: /readyz 503 for
   `shutdown_delay_s` = 1 s while HAProxy takes it out, then the drain; start again; on once HAProxy
   has it up); failed requests, keep-alive requests sent again after a drain closed their
   connection between requests, and how long each step took.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mtls_gateway_bench.harness import cpu
from mtls_gateway_bench.harness import fleet as F


def _window(fleet: F.Fleet, load: F.Load, seconds: float) -> dict:
    start = len(load.outcomes)
    cpu0 = fleet.cpu_seconds()
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1 = fleet.cpu_seconds()
    wall = time.monotonic() - t0
    s = F.summarize(load.outcomes[start:])
    ok = s.requests - s.failed
    return {"connections": ok, "per_s": ok / wall, "failed": s.failed,
            "resumption": s.resumption_rate, "cpu_us": (cpu1 - cpu0) / ok * 1e6 if ok else None,
            "instances": len(s.by_instance)}


def affinity(directory: Path, args) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {b: [] for b in F.BALANCES}
    for r in range(args.repeats):
        for balance in F.BALANCES:
            with F.Fleet(directory / f"affinity-{balance}-{r}", args.instances, balance=balance,
                         cpus=args.server_cpus) as fleet:
                load = F.Load(fleet.front_port, fleet.client_context(), new=args.clients, keepalive=0).start()
                try:
                    time.sleep(1.0)
                    w = _window(fleet, load, args.seconds)
                finally:
                    load.stop()
            runs[balance].append(w)
            print(f"affinity {balance:10} repeat {r}: {w['per_s']:7.0f} conn/s, resumed "
                  f"{w['resumption']:.3f}, {w['cpu_us']:.0f} µs server CPU per connection", flush=True)
    return runs


def kill(directory: Path, args) -> dict:
    with F.Fleet(directory / "kill", args.instances, balance="roundrobin", cpus=args.server_cpus) as fleet:
        load = F.Load(fleet.front_port, fleet.client_context(), new=args.clients, keepalive=2).start()
        try:
            time.sleep(2.0)
            killed_at, dead_at = fleet.instances[0].kill()
            fleet.wait_down("gw0", timeout=10)
            down_s = time.monotonic() - killed_at
            time.sleep(2.0)
        finally:
            outcomes = load.stop()
        assert fleet.haproxy is not None
        failed = [o for o in outcomes if not o.ok]
        where = fleet.haproxy.servers_of(failed)
    in_flight = [o for o in outcomes if o.started <= dead_at and o.ended >= killed_at]
    first = [o for o in outcomes if o.kind == "new" and dead_at < o.started < dead_at + 1.0]
    return {"requests": len(outcomes), "failed": len(failed),
            "failed_outside_in_flight": sum(1 for o in failed if o not in in_flight),
            "failed_elsewhere": sum(1 for o in failed if where.get(o.source or "") != "gw0"),
            "in_flight": len(in_flight), "retried": sum(o.retried for o in outcomes),
            "slowest_new_after_ms": max((o.ended - o.started for o in first), default=0) * 1e3,
            "median_new_after_ms": statistics.median(o.ended - o.started for o in first) * 1e3 if first else None,
            "marked_down_s": down_s}


def roll(directory: Path, args) -> dict:
    with F.Fleet(directory / "roll", args.instances, balance="roundrobin", cpus=args.server_cpus) as fleet:
        load = F.Load(fleet.front_port, fleet.client_context(), new=args.clients, keepalive=2).start()
        try:
            time.sleep(1.0)
            before = len(load.outcomes)
            t0 = time.monotonic()
            steps = fleet.roll()
            took = time.monotonic() - t0
            during = load.outcomes[before:]
            time.sleep(1.0)
        finally:
            outcomes = load.stop()
    return {"requests_during": len(during), "failed": sum(not o.ok for o in outcomes),
            "retried": sum(o.retried for o in outcomes), "took_s": took, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mtls_gateway_bench.scenarios.fleet")
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--server-cpus", type=cpu.parse_cpus, default=(0,))
    ap.add_argument("--client-cpus", type=cpu.parse_cpus, default=(1,))
    args = ap.parse_args(argv)
    import os
    os.sched_setaffinity(0, set(args.client_cpus))
    with tempfile.TemporaryDirectory(prefix="mtls-gateway-fleet-") as d:
        directory = Path(d)
        runs = affinity(directory, args)
        killed = kill(directory, args)
        rolled = roll(directory, args)
    med = {b: {k: statistics.median(r[k] for r in runs[b]) for k in ("per_s", "resumption", "cpu_us")}
           for b in F.BALANCES}
    print(f"\n## Affinity ({args.instances} instances, {args.clients} clients, medians of {args.repeats})\n")
    print("| balance | connections/s | resumed | server CPU per connection |")
    print("|---|---:|---:|---:|")
    for b in F.BALANCES:
        m = med[b]
        print(f"| {b} | {m['per_s']:.0f} | {m['resumption']:.1%} | {m['cpu_us']:.0f} µs |")
    paired = statistics.median(rr["cpu_us"] / src["cpu_us"] for rr, src in zip(runs["roundrobin"], runs["source"]))
    print(f"\nroundrobin / source, server CPU per connection (paired median): {paired:.2f}")
    print(f"\n## Kill one instance (round-robin, {args.clients} + 2 keep-alive clients)\n")
    print(f"requests {killed['requests']}, failed {killed['failed']} (requests overlapping the kill: "
          f"{killed['in_flight']}; failed outside them: {killed['failed_outside_in_flight']}; failed on "
          f"another instance, by HAProxy's log: {killed['failed_elsewhere']}), keep-alive "
          f"requests sent again {killed['retried']}; new connections in the second after: median "
          f"{killed['median_new_after_ms']:.1f} ms, slowest {killed['slowest_new_after_ms']:.1f} ms; "
          f"HAProxy had it down after {killed['marked_down_s']:.2f} s")
    print(f"\n## Roll every instance (round-robin, {args.clients} + 2 keep-alive clients)\n")
    print(f"requests during the roll {rolled['requests_during']}, failed {rolled['failed']}, keep-alive "
          f"requests sent again {rolled['retried']}, took {rolled['took_s']:.1f} s")
    for step in rolled["steps"]:
        print(f"- {step['instance']}: exit {step['exit']}, stopped in {step['stop_s']:.2f} s, "
              f"back up in HAProxy {step['back_s']:.2f} s later")
    clean = killed["failed_outside_in_flight"] == 0 and killed["failed_elsewhere"] == 0
    return 0 if clean and rolled["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
