"""gateway.wheel: one loop timer for every connection's deadline (a fake loop and clock)."""
from __future__ import annotations

import pytest

from gateway import wheel as wheel_mod
from gateway.wheel import LATE_S, TICK_S, Wheel


class FakeLoop:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.timers: list[list] = []        # [due, fn, cancelled]
        self.calls = 0
        self.errors: list[dict] = []

    early = 0.0         # how much sooner than asked a timer runs (a clock in whole milliseconds)

    def call_later(self, delay, fn):
        self.calls += 1
        entry = [self.clock.now + delay - self.early, fn, False]
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
        w.arm(o, at)
    assert len(loop.pending()) == 1             # one loop timer, whatever the number of owners
    loop.run_until(1010.0)
    assert [n for n, _ in log] == ["b", "d", "a", "c"]
    wanted = {"a": 1001.0, "b": 1000.3, "c": 1005.02, "d": 1000.3}
    for name, t in log:
        assert wanted[name] <= t <= wanted[name] + TICK_S + LATE_S + 1e-9
    assert all(o.timer is None for o in owners.values())
    assert len(w) == 0 and not loop.pending()


def test_rearming_and_disarming_make_the_old_entry_lapse(setup):
    clock, loop, w, log = setup
    early, late, gone = Owner("early", log, clock), Owner("late", log, clock), Owner("gone", log, clock)
    w.arm(late, 1009.0)
    w.arm(late, 1002.0)            # earlier: the 1009 entry lapses
    w.arm(early, 1001.0)
    w.arm(early, 1003.0)          # later: the 1001 entry lapses
    w.arm(gone, 1001.5)
    w.disarm(gone)
    loop.run_until(1020.0)
    assert [n for n, _ in log] == ["late", "early"]
    assert log[0][1] >= 1002.0 and log[1][1] >= 1003.0


def test_the_loop_timer_follows_the_earliest_slot(setup):
    clock, loop, w, log = setup
    o1, o2 = Owner("1", log, clock), Owner("2", log, clock)
    w.arm(o1, 1030.0)
    (first,) = loop.pending()
    w.arm(o2, 1001.0)
    (second,) = loop.pending()                  # the later timer was cancelled, not added to
    assert second[0] < first[0] and second[0] >= 1001.0
    loop.run_until(1001.0 + 2 * TICK_S)
    assert [n for n, _ in log] == ["2"]
    (third,) = loop.pending()                   # set again for what is left
    assert third[0] >= 1030.0


def test_an_owner_that_raises_does_not_stop_the_others(setup):
    clock, loop, w, log = setup
    bad, good = Owner("bad", log, clock, fail=True), Owner("good", log, clock)
    w.arm(bad, 1001.0)
    w.arm(good, 1001.0)
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
                w.arm(self, self.clock.now + 1.0)
    o = Again("again", log, clock)
    w.arm(o, 1001.0)
    loop.run_until(1010.0)
    assert len(log) == 3
    assert log[1][1] >= log[0][1] + 1.0 and log[2][1] >= log[1][1] + 1.0
    assert not loop.pending()


def test_a_timer_that_runs_early_does_not_spin_the_loop(setup):
    """libuv's clock has millisecond steps: its timer may run up to 1 ms before the time asked.
    The wheel then waits again at least LATE_S, and its slot is due by then: a few wake-ups, not a
    loop spinning until the monotonic clock catches up."""
    clock, loop, w, log = setup
    loop.early = 0.001
    owners = [Owner(str(i), log, clock) for i in range(3)]
    for i, o in enumerate(owners):
        w.arm(o, 1000.5 + i)
    loop.run_until(1010.0)
    assert [n for n, _ in log] == ["0", "1", "2"]
    assert all(t >= 1000.5 + i for i, (_, t) in enumerate(log))
    assert loop.calls <= 2 * len(owners)


def test_the_wheel_lets_go_of_a_disarmed_or_moved_owner(setup):
    """A connection that ends is disarmed and the wheel holds no reference to it: nothing of a
    closed connection (its TLS state) is kept until its slot comes."""
    import gc
    import weakref
    clock, loop, w, log = setup
    owners = [Owner(str(i), log, clock) for i in range(50)]
    for o in owners:
        w.arm(o, 1010.0)
    for o in owners[:25]:
        w.arm(o, 1005.0)            # moved: left the 1010 slot
    assert len(w) == 50
    refs = [weakref.ref(o) for o in owners]
    for o in owners:
        w.disarm(o)
        assert o.timer is None
    assert len(w) == 0
    del owners, o
    gc.collect()
    assert all(r() is None for r in refs)
    loop.run_until(1020.0)
    assert log == []


def test_a_wake_up_that_arms_a_past_deadline_waits_for_the_next_slot(setup):
    """An owner whose handler arms a time already past is woken at the next slot, not again in
    the same pass (which would loop for as long as it kept doing so)."""
    clock, loop, w, log = setup

    class Past(Owner):
        def _on_timer(self) -> None:
            super()._on_timer()
            if len(self.log) < 4:
                w.arm(self, self.clock.now - 5.0)
    o = Past("past", log, clock)
    w.arm(o, 1001.0)
    loop.run_until(1001.1)
    assert len(log) == 1                # one wake-up per pass
    loop.run_until(1002.0)
    assert len(log) == 4
    assert all(b[1] - a[1] >= TICK_S - 1e-9 for a, b in zip(log, log[1:]))
