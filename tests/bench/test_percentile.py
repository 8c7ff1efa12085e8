"""Every benchmark's percentiles are nearest-rank, so the p99s in docs/benchmarks.md compare."""

from __future__ import annotations

import math

from fieldline.bench.report import percentile


def test_nearest_rank_never_interpolates() -> None:
    values = [float(n) for n in range(1, 101)]  # 1 .. 100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([1.0, 10.0], 0.5) == 1.0  # not 5.5


def test_small_and_empty_inputs() -> None:
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([7.0], 0.0) == 7.0
    assert math.isnan(percentile([], 0.5))
