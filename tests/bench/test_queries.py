"""The queries scenario at a tiny scale: every query answers the seeded data, without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldline.bench.queries import QUERIES, RAW_PAGE, Scale, run

pytestmark = pytest.mark.usefixtures("mosquitto_installed")


async def test_queries_answer_seeded_history(workdir: Path) -> None:
    scale = Scale(
        devices=30,
        history_devices=5,
        history_days=1,
        history_interval=60,
        long_days=2,
        long_interval=10,
    )

    result = await run(workdir / "stack", scale, concurrency=[1, 3], duration=0.5)

    rows = result.data["measurements"]
    assert sorted((row["query"], row["clients"]) for row in rows) == sorted(
        (query, clients) for query in QUERIES for clients in (1, 3)
    )
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in rows)
    checks = result.data["checks"]
    assert checks["latest_devices"] == 30
    assert checks["latest_devices_with_all_metrics"] == 30
    assert result.data["seeded"]["points"] == scale.history_points + scale.long_points
    # The readings span 2 days less 10 s and end on a whole minute: 48 whole hours and
    # the two partial hours at either end make 49 hourly buckets.
    assert checks["chart_points"] == 49
    assert checks["raw_points"] == RAW_PAGE
    assert [table.title for table in result.tables][-1].startswith("CPU and memory")
    assert "| latest | 3 |" in result.markdown()
