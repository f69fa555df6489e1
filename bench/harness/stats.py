"""Medians, spreads, ratios and percentiles: the arithmetic every table of the harness rests on.

How this works: a point of the benchmark is measured `repeats` times; its figure is the median of
the runs (robust to the one run a noisy neighbour spoiled) and its spread is the range of the runs
relative to that median, `(max - min) / median`, so "±12%" reads directly as how far apart the runs
were. Ratios are `ours / theirs` and are `None` whenever either side is missing or zero: a table
shows a dash rather than a misleading infinity.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def median(values: Iterable[float | None]) -> float | None:
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2.0


def spread(values: Iterable[float | None]) -> float | None:
    """Range of the runs relative to their median (0.12 = the runs lie within 12% of each other);
    None for fewer than two runs, where there is no spread to speak of."""
    xs = [v for v in values if v is not None and not math.isnan(v)]
    m = median(xs)
    if len(xs) < 2 or not m:
        return None
    return (max(xs) - min(xs)) / m


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values (the convention of ab and wrk)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


__all__ = ["median", "spread", "ratio", "percentile"]
