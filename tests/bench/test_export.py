"""The export scenario at a tiny scale: every seeded point comes back once in each format,
and the table says how fast and how much memory the API used."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldline.bench.export import FORMATS, run

pytestmark = pytest.mark.usefixtures("mosquitto_installed")


async def test_both_formats_export_every_seeded_point(workdir: Path) -> None:
    result = await run(workdir, points=30_000, devices=4)

    assert result.data["seeded"] == 30_000
    (table,) = result.tables
    assert [row[0] for row in table.rows] == list(FORMATS)
    for row in table.rows:
        _, rows, size, seconds, per_second, _, peak_rss, *_ = row
        assert rows == 30_000
        assert size > 0 and seconds > 0 and per_second > 0
        assert peak_rss > 0  # the API was sampled while it answered
