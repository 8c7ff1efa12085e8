"""The lifecycle scenario at a tiny scale: the old days archived, the database backed up,
verified and restored, the old days dropped by retention under load with nothing lost, and
a day imported back."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldline.bench.lifecycle import LifecycleOptions, run

pytestmark = pytest.mark.usefixtures("mosquitto_installed")


async def test_retention_drops_the_old_days_while_every_message_is_stored(workdir: Path) -> None:
    options = LifecycleOptions(
        rate=500, devices=10, duration=12, processes=1, old_days=2, points_per_day=20_000
    )

    result = await run(options)

    archive, backup, drop, latency = result.tables
    archived, verified, imported, in_postgres = archive.rows
    # Every point; a file per hour with points (each series every 6 h here) and per day.
    assert archived[1:3] == [2 * 20_000, 2 * 4 + 2]
    assert verified[1] == 2 * 20_000
    assert imported[1:3] == [20_000, 4]  # the first day's points, back
    assert in_postgres[1] == 2 * 20_000
    steps = [row[0] for row in backup.rows]
    assert steps[0].startswith("backup create") and steps[2] == "restore into a new database"
    assert all(row[2] >= 2 * 20_000 for row in backup.rows)  # rows in all tables, seeds too
    (row,) = drop.rows
    partitions, points, size, _, _, _, published, stored, lost = row
    assert partitions == 2 and points == 2 * 20_000 and size > 0
    assert published == stored and lost == 0
    assert len(result.data["drop"]["partitions"]) == 2
    windows = [line[0] for line in latency.rows]
    assert windows == ["before the drop", "from 1 s before to 1 s after", "after the drop"]
    assert all(line[1] > 0 for line in latency.rows)  # readings in every window
