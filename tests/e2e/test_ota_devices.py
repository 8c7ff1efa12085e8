"""Firmware updates on a real `fieldline up`, from the devices' side: a simulated fleet takes
a rollout (some devices fail to flash, some roll back, some have their download cut), and
a device downloads an image over HTTP with Range, resumes after a cut and checks it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import httpx

from fieldline.sim.download import download_image
from fieldline.sim.firmware import FirmwareOffer, Keyring, verify_image
from fieldline.sim.ota import Fate, fate_of, link_drops
from tests.e2e.conftest import ADMIN_PASSWORD, Platform, eventually
from tests.e2e.test_lifecycle import api_get

IMAGE_BYTES = 300_000  # five Range requests of 64 KiB
FAIL_PERCENT = 20.0
ROLLBACK_PERCENT = 20.0
CUT_PERCENT = 50.0
FLEET = 6
FINISHED = {"succeeded", "failed", "rolled_back", "timed_out", "skipped", "cancelled"}


async def upload(platform: Platform, model: str, version: str, image: bytes) -> dict[str, Any]:
    async with platform.http() as http:
        answer = await http.post(
            "/api/v1/firmware",
            data={"device_model": model, "version": version},
            files={"file": ("image.bin", image, "application/octet-stream")},
        )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    assert body["sha256"] == hashlib.sha256(image).hexdigest()
    return body


async def start_rollout(platform: Platform, body: dict[str, Any]) -> int:
    rollout = {
        "percentage": 100,
        "max_per_minute": 6000,
        "device_timeout_seconds": 300,
        "settle_seconds": 2,
        # Judged only past the fleet's size: the failures here are meant, not a reason to stop.
        "abort": {"min_finished": 100, "failure_percent": 50},
        **body,
    }
    async with platform.http() as http:
        answer = await http.post("/api/v1/rollouts", json=rollout)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def fleet_with_every_fate() -> tuple[str, dict[str, Fate]]:
    """A device id prefix whose fleet has healthy, failing and rolling-back devices, and
    healthy ones whose download is cut: the fates are a hash of the device id."""
    for _ in range(1000):
        prefix = f"ota-{uuid.uuid4().hex[:6]}"
        ids = [f"{prefix}-{n:04d}" for n in range(1, FLEET + 1)]
        fates = {
            d: fate_of(d, fail_percent=FAIL_PERCENT, rollback_percent=ROLLBACK_PERCENT) for d in ids
        }
        healthy = [d for d, fate in fates.items() if fate is Fate.HEALTHY]
        if (
            Fate.FLASH_FAILS in fates.values()
            and Fate.ROLLS_BACK in fates.values()
            and any(link_drops(d, cut_percent=CUT_PERCENT) for d in healthy)
            and not all(link_drops(d, cut_percent=CUT_PERCENT) for d in healthy)
        ):
            return prefix, fates
    raise AssertionError("no prefix gives every fate")


async def test_a_simulated_fleet_takes_a_rollout_and_ends_on_the_new_version(
    platform: Platform,
) -> None:
    prefix, fates = fleet_with_every_fate()
    model, group = f"sim-{prefix}", f"group-{prefix}"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fieldline",
            "simulate",
            "--create",
            "--devices",
            str(FLEET),
            "--prefix",
            prefix,
            "--group",
            group,
            "--device-type",
            model,
            "--firmware-version",
            "1.0.0",
            "--rate",
            "1",
            "--heartbeat-interval",
            "1",
            "--ota-fail-percent",
            str(FAIL_PERCENT),
            "--ota-rollback-percent",
            str(ROLLBACK_PERCENT),
            "--ota-cut-percent",
            str(CUT_PERCENT),
            "--api-url",
            platform.api_url,
            "--mqtt-port",
            str(platform.mqtt_port),
            "--username",
            "admin",
            "--password",
            ADMIN_PASSWORD,
        ],
        env={**os.environ, "FIELDLINE_MQTT_HOST": "127.0.0.1", "FIELDLINE_LOG_LEVEL": "INFO"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        async def online_on_the_old_version() -> None:
            for device_id in fates:
                shown = await api_get(platform, f"/api/v1/devices/{device_id}")
                assert shown["status"] == "online", shown
                assert shown["firmware_version"] == "1.0.0", shown

        await eventually(online_on_the_old_version, timeout=60, interval=0.5)
        image = os.urandom(IMAGE_BYTES)
        await upload(platform, model, "1.1.0", image)
        rollout_id = await start_rollout(
            platform,
            {
                "firmware": {"device_model": model, "version": "1.1.0"},
                "target": {"groups": [group], "device_ids": []},
            },
        )

        async def every_device_finished() -> dict[str, Any]:
            rollout = await api_get(platform, f"/api/v1/rollouts/{rollout_id}")
            states = {d["device_id"]: d["state"] for d in rollout["devices"]}
            assert set(states) == set(fates), rollout
            if not set(states.values()) <= FINISHED:
                # All of it, untruncated: which device waits, in what state, and why.
                seen = []
                for d in rollout["devices"]:
                    shown = await api_get(platform, f"/api/v1/devices/{d['device_id']}")
                    seen.append(
                        f"{d['device_id']} ({fates[d['device_id']].value}): {d['state']}"
                        f" {d['progress']}% error={d['error']!r}, reports"
                        f" {shown['firmware_version']} {shown['status']}"
                    )
                raise AssertionError("not every device finished:\n" + "\n".join(seen))
            return rollout

        # A wait, not a timing: the whole suite on 2 cores once needed more than 120 s.
        rollout = await eventually(every_device_finished, timeout=200, interval=0.5)
        devices = {d["device_id"]: d for d in rollout["devices"]}
        expected = {
            Fate.HEALTHY: ("succeeded", "1.1.0", None),
            Fate.FLASH_FAILS: ("failed", "1.0.0", "flash write error"),
            Fate.ROLLS_BACK: ("rolled_back", "1.0.0", None),
        }
        for device_id, fate in fates.items():
            state, version, error = expected[fate]
            assert devices[device_id]["state"] == state, (fate, devices[device_id])
            assert devices[device_id]["from_version"] == "1.0.0"
            if error is not None:
                assert devices[device_id]["error"] == error
            shown = await api_get(platform, f"/api/v1/devices/{device_id}")
            assert shown["firmware_version"] == version, (fate, shown)
            assert shown["status"] == "online", shown

        async def completed() -> None:
            rollout = await api_get(platform, f"/api/v1/rollouts/{rollout_id}")
            assert rollout["state"] == "completed", rollout

        await eventually(completed, timeout=30)

        # Updated devices keep publishing, with the new version in their readings too.
        healthy = next(d for d, fate in fates.items() if fate is Fate.HEALTHY)

        async def reading_with_the_new_version() -> None:
            attributes = await api_get(platform, f"/api/v1/devices/{healthy}/attributes")
            assert "1.1.0" in str(attributes), attributes

        await eventually(reading_with_the_new_version, timeout=30)
    finally:
        simulator.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(simulator.communicate, timeout=60)
        # Shown with a failure: what the devices did.
        print(f"--- fieldline simulate ---\n{output.decode()[-6000:]}")
    summary = output.decode()
    assert simulator.returncode == 0, summary
    counts = {fate: list(fates.values()).count(fate) for fate in Fate}
    # Every device downloads (a failing install fails after it); each cut one resumes once.
    cut = sum(link_drops(d, cut_percent=CUT_PERCENT) for d in fates)
    assert (
        f"firmware updates: installed {counts[Fate.HEALTHY]}, "
        f"failed {counts[Fate.FLASH_FAILS]} (flash write error {counts[Fate.FLASH_FAILS]}), "
        f"rolled back {counts[Fate.ROLLS_BACK]}, downloads resumed {cut}; "
        f"running 1.0.0 on {FLEET - counts[Fate.HEALTHY]}, 1.1.0 on {counts[Fate.HEALTHY]}"
    ) in summary, summary


async def test_a_device_downloads_with_range_resumes_after_a_cut_and_checks_the_image(
    platform: Platform,
) -> None:
    model = f"probe-{uuid.uuid4().hex[:6]}"
    device_id = f"{model}-1"
    password = await platform.register(device_id, device_type=model)
    image = os.urandom(IMAGE_BYTES)
    uploaded = await upload(platform, model, "2.0.0", image)
    # The device stays offline: the rollout reaches it and its update stays open.
    await start_rollout(
        platform,
        {
            "firmware": {"device_model": model, "version": "2.0.0"},
            "target": {"groups": [], "device_ids": [device_id]},
        },
    )
    auth = httpx.BasicAuth(device_id, password)
    async with httpx.AsyncClient(base_url=platform.api_url, timeout=30) as http:
        keys = await http.get("/api/v1/firmware/keys")  # public: no credentials
        assert keys.status_code == 200, keys.text
        keyring = Keyring.from_json(keys.json())

        async def offered() -> httpx.Response:
            answer = await http.get(f"/firmware/{model}/latest", auth=auth)
            assert answer.status_code == 200, answer.text
            return answer

        offer = FirmwareOffer.from_json((await eventually(offered, timeout=30)).json())
        assert (offer.version, offer.sha256, offer.key_id) == (
            "2.0.0",
            uploaded["sha256"],
            uploaded["key_id"],
        )
        assert offer.key_id in keyring

        # The link drops after 100,000 bytes; the next request asks for the bytes after them.
        held = bytearray()
        stats = await download_image(
            http, offer.binary_url, size=offer.size_bytes, into=held, auth=auth, cut_at=100_000
        )
        assert stats.resumes == 1
        assert hashlib.sha256(held).hexdigest() == offer.sha256
        assert verify_image(offer, bytes(held), keyring) is None

        # A download continued from bytes held before (after a reboot, say) ends the same.
        resumed = bytearray(image[:123_456])
        await download_image(http, offer.binary_url, size=offer.size_bytes, into=resumed, auth=auth)
        assert bytes(resumed) == image

        # One byte changed on the way and the device refuses the image.
        held[IMAGE_BYTES // 2] ^= 0x40
        assert verify_image(offer, bytes(held), keyring) == "sha256 mismatch"

        # Without the device's credentials there is nothing to download.
        anonymous = await http.get(offer.binary_url, headers={"Range": "bytes=0-9"})
        assert anonymous.status_code == 401, anonymous.text
