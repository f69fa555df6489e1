"""One loop timer for every connection's deadline: a wheel of coarse slots.

How this works: each connection has at most one deadline armed at a time, the earliest its core
asks for (gateway.proxy: the core's `rearm`). Instead of a loop timer per connection (a TimerHandle
made, scheduled in libuv and cancelled for every connection, several times over its life), `arm`
puts the connection in the list of the slot its deadline falls in (slots of `TICK_S`) and the
wheel keeps one loop timer, at the earliest slot that holds anyone. When it fires, every
connection in the slots now due is told (`owner._on_timer()`: its core then checks what is due
against the clock) unless it was armed again or disarmed since: arming or disarming only changes
the owner's own `timer` attribute, and an entry whose slot no longer matches it is skipped when
its slot comes (nothing is searched or removed). A deadline is never early and at most one tick
late; the core's own deadlines are what decide, the wheel only wakes it. nginx keeps its timers
in one red-black tree per worker for the same reason; the coarse slots make arming an append.

One wheel per listener runtime and event loop (gateway.proxy makes it on the first connection):
a reload's new runtime gets its own, the old one keeps waking the connections it still has.
"""
from __future__ import annotations

import heapq
import time

TICK_S = 0.05           # the granularity of every connection deadline: at most this late

_monotonic = time.monotonic
_push, _pop = heapq.heappush, heapq.heappop


class Wheel:
    """The deadlines of the connections of one loop. An owner has a `timer` attribute (the slot
    it is armed for, or None) and an `_on_timer()` method."""

    __slots__ = ("loop", "_slots", "_heap", "_handle", "_at")

    def __init__(self, loop) -> None:
        self.loop = loop
        self._slots: dict[int, list] = {}   # slot -> owners armed for it (some perhaps no longer)
        self._heap: list[int] = []          # the slots of _slots, earliest first
        self._handle = None                 # the one loop timer
        self._at = 0                        # the slot it is set for (0: none)

    def arm(self, owner, when: float) -> int:
        """Wake `owner` at monotonic time `when` (or up to one tick after); returns the slot, for
        the owner's `timer`. The owner's earlier arming, if any, lapses by that assignment."""
        slot = int(when / TICK_S) + 1
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [owner]
            _push(self._heap, slot)
            if not self._at or slot < self._at:
                self._set(slot)
        else:
            bucket.append(owner)
        return slot

    def _set(self, slot: int) -> None:
        handle = self._handle
        if handle is not None:
            handle.cancel()
        self._at = slot
        self._handle = self.loop.call_later(max(0.0, slot * TICK_S - _monotonic()), self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._at = 0
        heap, slots = self._heap, self._slots
        now = _monotonic()
        while heap and heap[0] * TICK_S <= now:
            slot = _pop(heap)
            for owner in slots.pop(slot):
                if owner.timer != slot:
                    continue        # armed again, or disarmed, since
                owner.timer = None
                try:
                    owner._on_timer()
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:    # noqa: BLE001 - one owner must not stop the rest
                    self.loop.call_exception_handler({
                        "message": "connection deadline handler failed", "exception": exc,
                        "protocol": owner})
        if heap and (not self._at or heap[0] < self._at):
            self._set(heap[0])

    def __len__(self) -> int:
        """Entries held, stale ones included (a test's bound check)."""
        return sum(len(b) for b in self._slots.values())
