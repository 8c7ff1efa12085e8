"""The fuzz scenario at toy scale (seconds), so its code cannot rot.

It asserts what the scenario reports about correctness (every count adds up), never
anything about speed. tests/e2e/test_fuzz_mqtt.py runs the same fuzz with more messages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldline.bench.fuzz import FuzzOptions, run

pytestmark = pytest.mark.usefixtures("mosquitto_installed")


async def test_fuzz_reports_counts_that_add_up(workdir: Path) -> None:
    result = await run(FuzzOptions(devices=3, messages=400, rate=400.0, directory=workdir))

    expected, observed = result.data["expected"], result.data["observed"]
    assert result.data["published"] == result.data["acknowledged"] == expected["messages"] == 400
    assert observed["received"] == 400
    assert (observed["stored"], observed["duplicate"]) == (
        expected["stored"],
        expected["duplicate"],
    )
    assert observed["rejected"] == observed["rejected_in_database"] == expected["rejected"]
    assert observed["points"] == observed["points_in_database"] == expected["points"]
    assert observed["ready"] == 200
    assert "THE COUNTS DO NOT ADD UP" not in result.markdown()
    assert "| received = stored + duplicate + rejected |" in result.markdown()
