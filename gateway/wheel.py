"""One loop timer for every connection's deadline: a wheel of coarse slots.

How this works: each connection has at most one deadline armed at a time, the earliest its core
asks for (gateway.proxy: the core's `rearm`). Instead of a loop timer per connection (a TimerHandle
made, scheduled in libuv and cancelled for every connection, several times over its life), `arm`
puts the connection in the list of the slot its deadline falls in (slots of `TICK_S`) and the
wheel keeps one loop timer, at the earliest slot that holds anyone. When it fires, every
connection in the slots now due is told (`owner._on_timer()`: its core then checks what is due
against the clock). A slot is a dict of its owners, so arming again (the owner leaves its old
slot) and disarming (a connection that ends) are one dict removal each: the wheel never holds a
connection that is gone, which would keep its TLS state alive until the slot came. A deadline is
never early and at most one tick (and LATE_S) late; the core's own deadlines are what decide, the wheel only wakes it. nginx keeps its timers
in one red-black tree per worker for the same reason; the coarse slots make arming an append.

One wheel per listener runtime and event loop (gateway.proxy makes it on the first connection):
a reload's new runtime gets its own, the old one keeps waking the connections it still has.
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Any, Protocol

TICK_S = 0.05           # the granularity of every connection deadline: at most this late
# The loop's clock moves in whole milliseconds (libuv), so its timer may run up to 1 ms before the
# monotonic time asked for: the wheel's timer is set this much later, and never sooner than this,
# so an early wake-up finds its slot due, or waits again, instead of spinning the loop.
LATE_S = 0.002

_monotonic = time.monotonic
_push, _pop = heapq.heappush, heapq.heappop


class Owner(Protocol):
    """What the wheel wakes (gateway.proxy's GatewayProtocol): its slot, and what it calls."""

    timer: int | None

    def _on_timer(self) -> None: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Loop(Protocol):
    """The two calls the wheel makes on its event loop (asyncio's, uvloop's)."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable: ...

    def call_exception_handler(self, context: dict[str, Any]) -> None: ...


class Wheel:
    """The deadlines of the connections of one loop. An owner has a `timer` attribute (the slot
    it is armed for, or None) and an `_on_timer()` method."""

    __slots__ = ("loop", "_slots", "_heap", "_handle", "_at", "_fired")

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self._slots: dict[int, dict[Owner, None]] = {}  # slot -> its owners (a dict: ordered, O(1) removal)
        self._heap: list[int] = []          # the slots of _slots, earliest first
        self._handle: Cancellable | None = None     # the one loop timer
        self._at = 0                        # the slot it is set for (0: none)
        self._fired = 0                     # the last slot that fired: none reopens after

    def arm(self, owner: Owner, when: float) -> None:
        """Wake `owner` at monotonic time `when` (or up to one tick after), instead of whenever it
        was armed for before; sets the owner's `timer` to the slot."""
        slot = int(when / TICK_S) + 1
        if slot <= self._fired:
            # a deadline already past (armed from a wake-up, say): the next slot, never one that
            # has fired, so a wake-up cannot re-arm itself into the same pass
            slot = self._fired + 1
        old = owner.timer
        if old is not None:
            if old == slot:
                return
            self._leave(owner, old)
        owner.timer = slot
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = {owner: None}
            _push(self._heap, slot)
            if not self._at or slot < self._at:
                self._set(slot)
        else:
            bucket[owner] = None

    def disarm(self, owner: Owner) -> None:
        """`owner` needs no wake-up any more (its connection ended, or has no deadline)."""
        old = owner.timer
        if old is not None:
            owner.timer = None
            self._leave(owner, old)

    def _leave(self, owner: Owner, slot: int) -> None:
        bucket = self._slots.get(slot)
        if bucket is not None:
            bucket.pop(owner, None)     # an emptied slot stays until it comes: its heap entry too

    def _set(self, slot: int) -> None:
        handle = self._handle
        if handle is not None:
            handle.cancel()
        self._at = slot
        delay = slot * TICK_S - _monotonic() + LATE_S
        self._handle = self.loop.call_later(delay if delay > LATE_S else LATE_S, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._at = 0
        heap, slots = self._heap, self._slots
        now = _monotonic()
        while heap and heap[0] * TICK_S <= now:
            slot = _pop(heap)
            self._fired = slot
            for owner in slots.pop(slot):
                if owner.timer != slot:
                    continue        # (cannot happen: arming again and disarming leave the slot)
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
