"""The alerts scenario at toy scale (seconds), so its code cannot rot.

It asserts what the scenario reports about correctness (everything acknowledged is
stored, every probe reading reaches the webhook), never anything about speed: that is
measured, in docs/benchmarks.md.
"""

from __future__ import annotations

from pathlib import Path

from fieldline.bench.alerts import AlertsOptions, run


async def test_alerts_scenario_stores_everything_and_every_probe_reaches_the_webhook(
    workdir: Path,
) -> None:
    result = await run(
        AlertsOptions(devices=40, rules=4, rate=200, duration=6, processes=1, directory=workdir)
    )

    baseline, ruled = result.data["phases"]
    for phase in (baseline, ruled):
        assert phase["published"] == phase["acknowledged"] == phase["stored"] > 0, phase
        assert phase["lost"] == 0
    assert baseline["alerts_opened"] == 0
    # Every probe reading opened or resolved the probe rule's alert and was delivered.
    assert result.data["never_arrived"] == 0
    latencies = result.data["latency_ms"]
    assert latencies and all(value > 0 for value in latencies)
    assert "| 4 rules |" in result.markdown()
