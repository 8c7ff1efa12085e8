"""The ota scenario at a tiny scale (seconds), so its code cannot rot.

It asserts what the scenario reports about correctness (every device gets the whole
image with its sha256, every device told is announced over MQTT, the pace's bucket is
never exceeded), not speed: that is measured, in docs/benchmarks.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fieldline.bench.ota import OtaOptions, run
from fieldline.bench.ota_pacing import most_within

pytestmark = pytest.mark.usefixtures("mosquitto_installed")

IMAGE_KIB = 300  # two of the API's 256 KiB pieces


async def test_every_device_downloads_the_image_and_the_pace_is_never_exceeded(
    workdir: Path,
) -> None:
    options = OtaOptions(
        devices=8, image_kib=IMAGE_KIB, pacing_devices=100, rates=(600,), duration=3.0
    )
    result = await run(workdir, options)

    whole, ranged = result.data["downloads"]
    for downloaded in (whole, ranged):
        assert downloaded["failed"] == 0, downloaded["errors"]
        assert downloaded["max_s"] > 0
        assert downloaded["api_peak_rss_mib"] > 0  # the API was sampled while it answered
    assert whole["requests"] == 8
    assert ranged["requests"] == 8 * math.ceil(IMAGE_KIB / options.range_kib)

    (paced,) = result.data["paces"]
    assert 0 < paced["told"] <= 600 / 60 * (paced["window_s"] + 2) + 1
    assert paced["most_in_1s"] <= 600 / 60 * 3
    assert paced["received"] == paced["told"]  # each one told was announced on its ota topic
    assert sum(paced["per_second"]) == paced["told"]
    assert "| 600 |" in result.markdown()


def test_most_within_counts_the_fullest_window() -> None:
    assert most_within([], 1.0) == 0
    assert most_within([0.0, 0.5, 0.99, 1.0, 1.2, 5.0], 1.0) == 4  # 0.5 .. 1.2
    assert most_within([0.0, 1.0, 2.0], 1.0) == 1  # a window is [t, t + 1)
