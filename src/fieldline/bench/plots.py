"""PNG plots of benchmark results, for docs/benchmarks.md (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import itertools

import matplotlib.pyplot as plt

from fieldline.bench.report import Result


def throughput(result: Result, path: Path) -> None:
    """Messages/s over time: published, and consumed by each consumer of the ingest run."""
    phases: list[dict[str, Any]] = result.data["phases"]
    figure, axes = plt.subplots(len(phases), 1, figsize=(9, 2.6 * len(phases)), sharex=True)
    if len(phases) == 1:
        axes = [axes]
    for axis, phase in zip(axes, phases, strict=True):
        published = phase["published_per_second"]
        axis.step(range(len(published)), published, where="post", label="published", alpha=0.6)
        samples = phase["consumed_samples"]
        times, rates = [], []
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if t1 > t0:
                times.append(t1)
                rates.append((c1 - c0) / (t1 - t0))
        axis.plot(times, rates, label="consumed" if phase["name"] != "fieldline" else "stored")
        axis.set_title(f"{phase['name']}: {phase['rate']:,.0f} msg/s")
        axis.set_ylabel("messages/s")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
    axes[-1].set_xlabel("seconds since the first publish")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def latency(result: Result, path: Path) -> None:
    """Distribution of publish-to-queryable latency, one curve per offered rate."""
    runs: list[dict[str, Any]] = result.data["runs"]
    figure, axis = plt.subplots(figsize=(9, 4))
    for run in runs:
        values = sorted(run["latencies_ms"])
        if not values:
            continue
        fractions = [(n + 1) / len(values) for n in range(len(values))]
        axis.plot(values, fractions, label=f"{run['rate']:,.0f} msg/s")
    axis.set_xscale("log")
    axis.set_xlabel("publish to queryable, ms (log scale)")
    axis.set_ylabel("fraction of messages")
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
