"""A fleet on one machine: three gateway instances (separate process groups, as separate hosts)
behind HAProxy in TCP mode, driven by real mTLS clients (mtls_gateway_bench.harness.fleet).

A dead instance costs only the requests it had in flight, a rolling restart costs nothing, and
resumption follows the balancer: with source affinity a returning client resumes, without it a
session resumes only where it was made."""
from __future__ import annotations

import shutil
import time

import pytest

from gateway import testing
from mtls_gateway_bench.harness import fleet as F

from .conftest import NATIVE_OVERRIDE

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("haproxy") is None,
                                 reason="haproxy is not installed (Debian package haproxy; .ci/run installs it)")]


def _fleet(tmp_path, balance: str, **kw) -> F.Fleet:
    return F.Fleet(tmp_path, 3, balance=balance, native=NATIVE_OVERRIDE or None, **kw)


def _until(load: F.Load, predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(F.summarize(list(load.outcomes))):
        assert time.monotonic() < deadline, F.summarize(list(load.outcomes))
        time.sleep(0.05)


def _everyone_served(s: F.Summary, names, at_least: int = 20) -> bool:
    return all(s.by_instance.get(n, 0) >= at_least for n in names)


@pytest.mark.parametrize("balance", F.BALANCES)
def test_a_killed_instance_fails_only_its_in_flight_requests(tmp_path, balance):
    with _fleet(tmp_path, balance) as fleet:
        names = [i.name for i in fleet.instances]
        load = F.Load(fleet.front_port, fleet.client_context(), new=6, keepalive=2).start()
        try:
            # under load, with traffic on the instance about to die
            _until(load, lambda s: _everyone_served(s, names[:1]) and s.requests > 100)
            killed_at, dead_at = fleet.instances[0].kill()   # its port refuses from dead_at on
            after = len(load.outcomes)
            _until(load, lambda s: s.requests > after + 200)
            time.sleep(1.0)
        finally:
            outcomes = load.stop()
        fleet.wait_down("gw0", timeout=5)
    failed = [o for o in outcomes if not o.ok]
    # only what was in flight when it died may fail: started before, ended after (a connection
    # the dying kernel socket still took counts as in flight)
    assert all(o.started <= dead_at and o.ended >= killed_at for o in failed), [
        (round(o.started - killed_at, 3), round(o.ended - killed_at, 3), o.error) for o in failed]
    # and each was on the instance that died, by HAProxy's own connection log
    assert fleet.haproxy is not None
    where = fleet.haproxy.servers_of(failed)
    assert all(o.source and where.get(o.source) == "gw0" for o in failed), (where, failed)
    later = [o for o in outcomes if o.started > dead_at]
    assert later and all(o.ok for o in later)
    assert not [o for o in later if o.instance == "gw0"]
    # new connections went elsewhere at once: none waited for a health check or a timeout
    first_second = [o for o in later if o.kind == "new" and o.started < dead_at + 1.0]
    assert first_second, "no new connection was made in the second after the kill"
    slowest = max(o.ended - o.started for o in first_second)
    assert slowest < 0.5, slowest
    s = F.summarize(later)
    assert set(s.by_instance) == {"gw1", "gw2"}, s


@pytest.mark.parametrize("balance", F.BALANCES)
def test_rolling_every_instance_under_load_fails_nothing(tmp_path, balance):
    with _fleet(tmp_path, balance) as fleet:
        names = [i.name for i in fleet.instances]
        load = F.Load(fleet.front_port, fleet.client_context(), new=6, keepalive=2).start()
        try:
            _until(load, lambda s: s.requests > 100)
            rolled = fleet.roll()
            done_at = time.monotonic()
            after = len(load.outcomes)
            _until(load, lambda s: s.requests > after + 100)
        finally:
            outcomes = load.stop()
        logs = [inst.dir / "error.log" for inst in fleet.instances]
    failed = [o for o in outcomes if not o.ok]
    assert failed == [], [(o.kind, o.error) for o in failed][:10]
    assert [r["exit"] for r in rolled] == [0, 0, 0], rolled
    # each instance left its balancer before it stopped accepting
    for log in logs:
        assert "while load balancers take this instance out" in log.read_text()
    # and takes traffic again once back (roundrobin: every one; source: the clients hashed to it)
    s = F.summarize([o for o in outcomes if o.started > done_at])
    if balance == "roundrobin":
        assert set(s.by_instance) == set(names), s
    assert len(outcomes) > 300


def test_resumption_follows_source_affinity(tmp_path):
    """Source affinity: a returning client lands where its session is, and resumes."""
    with _fleet(tmp_path, "source") as fleet:
        load = F.Load(fleet.front_port, fleet.client_context(), new=8, keepalive=0).start()
        try:
            _until(load, lambda s: s.resumable >= 400)
        finally:
            s = F.summarize(load.stop())
    assert s.failed == 0
    assert s.resumption_rate is not None and s.resumption_rate >= 0.98, s
    assert len(s.by_instance) >= 2, s          # eight addresses hashed over more than one instance


def test_without_affinity_a_session_resumes_only_on_its_own_instance(tmp_path):
    """Ticket keys are each instance's own: round-robin over three resumes about one in three, and
    a session made on one instance is a full handshake on another."""
    with _fleet(tmp_path, "roundrobin") as fleet:
        ctx = fleet.client_context()
        gw0, gw1 = fleet.instances[0], fleet.instances[1]
        _, session, _ = testing.https_get(gw0.port, ctx)
        assert testing.https_get(gw0.port, ctx, session=session)[0] is True
        assert testing.https_get(gw1.port, ctx, session=session)[0] is False
        load = F.Load(fleet.front_port, ctx, new=8, keepalive=0).start()
        try:
            _until(load, lambda s: s.resumable >= 600)
        finally:
            s = F.summarize(load.stop())
    assert s.failed == 0
    assert s.resumption_rate is not None and 0.15 <= s.resumption_rate <= 0.55, s
