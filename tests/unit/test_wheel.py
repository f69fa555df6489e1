"""gateway.wheel: one loop timer for every connection's deadline (a fake loop and clock)."""
from __future__ import annotations

import pytest

from gateway import wheel as wheel_mod
from gateway.wheel import TICK_S, Wheel


class FakeLoop:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.timers: list[list] = []        # [due, fn, cancelled]
        self.errors: list[dict] = []

    def call_later(self, delay, fn):
        entry = [self.clock.now + delay, fn, False]
        self.timers.append(entry)

        class Handle:
            def cancel(self_inner):
                entry[2] = True
        return Handle()

    def call_exception_handler(self, context) -> None:
        self.errors.append(context)

    def pending(self) -> list:
        return [t for t in self.timers if not t[2]]

    def run_until(self, t: float) -> None:
        """Fire every live timer due by `t`, in order, the clock at each one's time."""
        while True:
            due = sorted((x for x in self.pending() if x[0] <= t), key=lambda x: x[0])
            if not due:
                break
            entry = due[0]
            entry[2] = True
            self.clock.now = max(self.clock.now, entry[0])
            entry[1]()
        self.clock.now = max(self.clock.now, t)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


class Owner:
    def __init__(self, name, log, clock, fail=False) -> None:
        self.name, self.log, self.clock, self.fail = name, log, clock, fail
        self.timer = None

    def _on_timer(self) -> None:
        self.log.append((self.name, self.clock.now))
        if self.fail:
            raise RuntimeError("handler bug")


@pytest.fixture
def setup(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(wheel_mod, "_monotonic", clock)
    loop = FakeLoop(clock)
    return clock, loop, Wheel(loop), []


def test_deadlines_fire_once_never_early_and_at_most_a_tick_late(setup):
    clock, loop, w, log = setup
    owners = {}
    for name, at in (("a", 1001.0), ("b", 1000.3), ("c", 1005.02), ("d", 1000.3)):
        o = owners[name] = Owner(name, log, clock)
        o.timer = w.arm(o, at)
    assert len(loop.pending()) == 1             # one loop timer, whatever the number of owners
    loop.run_until(1010.0)
    assert [n for n, _ in log] == ["b", "d", "a", "c"]
    wanted = {"a": 1001.0, "b": 1000.3, "c": 1005.02, "d": 1000.3}
    for name, t in log:
        assert wanted[name] <= t <= wanted[name] + TICK_S + 1e-9
    assert all(o.timer is None for o in owners.values())
    assert len(w) == 0 and not loop.pending()


def test_rearming_and_disarming_make_the_old_entry_lapse(setup):
    clock, loop, w, log = setup
    early, late, gone = Owner("early", log, clock), Owner("late", log, clock), Owner("gone", log, clock)
    late.timer = w.arm(late, 1009.0)
    late.timer = w.arm(late, 1002.0)            # earlier: the 1009 entry lapses
    early.timer = w.arm(early, 1001.0)
    early.timer = w.arm(early, 1003.0)          # later: the 1001 entry lapses
    gone.timer = w.arm(gone, 1001.5)
    gone.timer = None                           # disarmed
    loop.run_until(1020.0)
    assert [n for n, _ in log] == ["late", "early"]
    assert log[0][1] >= 1002.0 and log[1][1] >= 1003.0


def test_the_loop_timer_follows_the_earliest_slot(setup):
    clock, loop, w, log = setup
    o1, o2 = Owner("1", log, clock), Owner("2", log, clock)
    o1.timer = w.arm(o1, 1030.0)
    (first,) = loop.pending()
    o2.timer = w.arm(o2, 1001.0)
    (second,) = loop.pending()                  # the later timer was cancelled, not added to
    assert second[0] < first[0] and second[0] >= 1001.0
    loop.run_until(1001.0 + 2 * TICK_S)
    assert [n for n, _ in log] == ["2"]
    (third,) = loop.pending()                   # set again for what is left
    assert third[0] >= 1030.0


def test_an_owner_that_raises_does_not_stop_the_others(setup):
    clock, loop, w, log = setup
    bad, good = Owner("bad", log, clock, fail=True), Owner("good", log, clock)
    bad.timer = w.arm(bad, 1001.0)
    good.timer = w.arm(good, 1001.0)
    loop.run_until(1002.0)
    assert [n for n, _ in log] == ["bad", "good"]
    assert len(loop.errors) == 1 and isinstance(loop.errors[0]["exception"], RuntimeError)
    assert loop.errors[0]["protocol"] is bad


def test_an_owner_rearming_from_its_handler(setup):
    clock, loop, w, log = setup

    class Again(Owner):
        def _on_timer(self) -> None:
            super()._on_timer()
            if len(self.log) < 3:
                self.timer = w.arm(self, self.clock.now + 1.0)
    o = Again("again", log, clock)
    o.timer = w.arm(o, 1001.0)
    loop.run_until(1010.0)
    assert len(log) == 3
    assert log[1][1] >= log[0][1] + 1.0 and log[2][1] >= log[1][1] + 1.0
    assert not loop.pending()
