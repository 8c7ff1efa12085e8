"""The ingest, latency and embedded scenarios at toy scale (seconds), so their code cannot rot.

They assert what the scenarios report about correctness (everything acknowledged is
stored, once), never anything about speed: that is measured, in docs/benchmarks.md.
"""

from __future__ import annotations

from pathlib import Path

from fieldline.bench.embedded import EmbeddedOptions
from fieldline.bench.embedded import run as run_embedded
from fieldline.bench.ingest import IngestOptions
from fieldline.bench.ingest import run as run_ingest
from fieldline.bench.latency import LatencyOptions
from fieldline.bench.latency import run as run_latency
from fieldline.bench.load import METRICS_PER_MESSAGE


async def test_ingest_measures_the_ceiling_fieldline_and_node_red_on_one_load(
    workdir: Path,
) -> None:
    result = await run_ingest(
        IngestOptions(devices=10, rate=200, duration=3, processes=2, directory=workdir)
    )

    phases = {phase["name"]: phase for phase in result.data["phases"]}
    assert list(phases) == ["bare subscriber", "fieldline", "node-red"]
    for phase in phases.values():
        assert phase["published"] > 0
        assert phase["acknowledged"] == phase["published"]
        assert phase["consumed"] == phase["acknowledged"], phase["name"]
        assert phase["rate"] > 0
    for name in ("fieldline", "node-red"):
        assert phases[name]["lost"] == 0
        assert phases[name]["duplicated"] == 0
        assert phases[name]["points"] == phases[name]["consumed"] * METRICS_PER_MESSAGE
    usage = phases["fieldline"]["usage"]
    assert {"fieldline ingest a", "mosquitto", "postgresql"} <= set(usage)
    assert "| node-red |" in result.markdown()


async def test_latency_is_read_from_commit_timestamps(workdir: Path) -> None:
    result = await run_latency(
        LatencyOptions(rates=[100.0], devices=5, duration=3, warmup=0.5, directory=workdir)
    )

    (run,) = result.data["runs"]
    assert run["stored"] == run["acknowledged"] == run["published"] > 0
    percentiles = run["percentiles_ms"]
    # Every message became visible after it was sent, and the order of percentiles holds.
    assert 0 < percentiles["p50"] <= percentiles["p99"] <= percentiles["max"]
    assert len(run["latencies_ms"]) > 0


async def test_embedded_defaults_store_everything_through_amqtt(workdir: Path) -> None:
    result = await run_embedded(
        EmbeddedOptions(broker="amqtt", devices=5, rate=100, duration=3, directory=workdir)
    )

    assert result.data["stored"] == result.data["acknowledged"] == result.data["published"] > 0
