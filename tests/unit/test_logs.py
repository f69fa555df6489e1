"""Log timestamps: the once-a-second prefix must give exactly what formatting each time gives."""
from __future__ import annotations

import time

from gateway import logs


def _reference(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def test_iso_now_equals_formatting_every_time():
    # across second boundaries, back and forth (a clock step), and at the edges of a second
    times = [1764691200.0, 1764691200.000001, 1764691200.999999, 1764691201.0, 1764691199.5,
             1764691201.25, 1764691201.25, 0.5, 2000000000.123456, 1764691200.0]
    for t in times:
        assert logs.iso_now(lambda: t) == _reference(t), t
    now = logs.iso_now()
    assert now.endswith("Z") and len(now) == len("2026-12-02T16:04:54.735113Z")
