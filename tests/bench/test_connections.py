"""The connections scenario at toy scale: every device connects, everything sent is stored."""

from __future__ import annotations

from pathlib import Path

from fieldline.bench.connections import run_connections


async def test_every_device_connects_and_every_message_is_stored(workdir: Path) -> None:
    result = await run_connections(
        workdir,
        targets=[20, 50],
        publish_interval=1.0,
        hold=3.0,
        connect_rate=200.0,
        processes=2,
    )

    stages = result.data["stages"]
    assert [stage["connected"] for stage in stages] == [20, 50]
    assert all(stage["ramp"]["failures"] == 0 for stage in stages)
    assert all(stage["dropped"] == 0 for stage in stages)
    assert stages[-1]["stored_per_s"] > 0
    final = result.data["final"]
    # Each device sent at least one message per second of holding.
    assert final["acknowledged"] >= 50 * 3
    assert final["stored"] == final["acknowledged"] == final["published"]
    assert "no drift found." in " ".join(result.notes)
    markdown = result.markdown()
    assert "| 50 | 50 | 0 |" in markdown
