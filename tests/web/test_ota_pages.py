"""Firmware and rollouts in the dashboard (issue 17), in headless Chromium against a real
`fieldline up`: an operator uploads an image from a file and reads back its digest and
signature, starts a rollout seeing how many devices it targets, watches its devices'
states drawn as they report over MQTT, sees why it paused itself, pauses and resumes it;
a viewer sees all of it without an action. Main flows on a desktop and a phone.

Images, groups and devices are prepared through the API and named uniquely (the platform
is shared by the session); the devices are MQTT clients that report as firmware would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from gmqtt.mqtt.constants import MQTTv311
from playwright.sync_api import Page, expect

from fieldline.sim.payloads import status_online
from tests.mqtt_clients import NoReconnectClient
from tests.web.conftest import Platform, create_user, sign_in

NOTIFY_TIMEOUT = 90.0  # s: a ceiling for the engine's round and pace, never a wait


@pytest.fixture(params=["desktop", "phone"])
def screen(request: pytest.FixtureRequest) -> Page:
    name = "page" if request.param == "desktop" else "phone"
    chosen: Page = request.getfixturevalue(name)
    return chosen


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(answer: httpx.Response) -> Any:
    assert answer.is_success, f"{answer.request.method} {answer.request.url}: {answer.text}"
    return answer.json() if answer.content else None


def signed_in_as(page: Page, platform: Platform, role: str) -> None:
    username, password = create_user(platform, role)
    sign_in(page, platform, username, password)
    expect(page.locator("main h1")).to_be_visible()


def go(page: Page, name: str) -> None:
    """Follow the main menu's link, behind the Menu button on a phone."""
    menu = page.get_by_role("button", name="Menu")
    if menu.is_visible():
        menu.click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()


def open_page(page: Page, platform: Platform, route: str) -> None:
    """Load the dashboard at `route` afresh (the session stays in localStorage)."""
    page.goto("about:blank")
    page.goto(f"{platform.api_url}/#{route}")
    expect(page.locator("main h1, main > .page > .empty").first).to_be_visible()


def register(http: httpx.Client, device_id: str, **fields: Any) -> str:
    """A device through the API; answers its MQTT password."""
    created = ok(http.post("/api/v1/devices", json={"device_id": device_id, **fields}))
    return str(created["mqtt"]["password"])


def upload(http: httpx.Client, model: str, version: str, image: bytes) -> dict[str, Any]:
    files = {"file": ("image.bin", image, "application/octet-stream")}
    data = {"device_model": model, "version": version, "release_notes": "test build"}
    answer = http.post("/api/v1/firmware", data=data, files=files)
    assert answer.status_code == 201, answer.text
    uploaded: dict[str, Any] = answer.json()
    return uploaded


class FirmwareDevice:
    """A device of a model over MQTT, in a thread with an event loop of its own
    (Playwright's sync API holds the test's): online on `version`, it notes the update
    fieldline offers on its `ota` topic and reports progress when the test says."""

    def __init__(
        self, platform: Platform, http: httpx.Client, device_id: str, **fields: Any
    ) -> None:
        self.device_id, self.password = device_id, register(http, device_id, **fields)
        self.port = platform.mqtt_port
        self.offers: list[dict[str, Any]] = []
        self.offered = threading.Event()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: NoReconnectClient | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FirmwareDevice:
        self._thread.start()
        assert self.ready.wait(15), f"{self.device_id} did not connect"
        if self.failure is not None:
            raise self.failure
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def wait_offer(self) -> dict[str, Any]:
        assert self.offered.wait(NOTIFY_TIMEOUT), f"{self.device_id} was never told of an update"
        return self.offers[-1]

    def report(self, state: str, progress: int | None = None, error: str | None = None) -> None:
        offer = self.wait_offer()
        body = {
            "rollout_id": offer["rollout_id"],
            "version": offer["version"],
            "state": state,
            "progress": progress,
            "error": error,
        }
        self._publish("ota/progress", json.dumps(body).encode())

    def _publish(self, suffix: str, payload: bytes) -> None:
        assert self._loop is not None and self._client is not None
        client = self._client
        topic = f"devices/{self.device_id}/{suffix}"
        self._loop.call_soon_threadsafe(lambda: client.publish(topic, payload, qos=1))

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.failure = exc
            self.ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        subscribed = asyncio.Event()
        client = NoReconnectClient(self.device_id)
        client.set_auth_credentials(self.device_id, self.password)
        client.set_config({"reconnect_retries": 0})
        topic = f"devices/{self.device_id}"

        def on_message(_c: Any, _topic: str, payload: bytes, _q: int, _p: Any) -> int:
            if payload:  # an empty retained message clears the offer
                self.offers.append(json.loads(payload))
                self.offered.set()
            return 0

        client.on_message = on_message
        client.on_subscribe = lambda *_: subscribed.set()
        await client.connect("127.0.0.1", self.port, version=MQTTv311)
        self._client = client
        try:
            client.subscribe(f"{topic}/ota", qos=1)
            await asyncio.wait_for(subscribed.wait(), 10)
            online = status_online(
                uptime_s=1, heap_free=100_000, boot_count=1, firmware_version="1.0.0"
            )
            client.publish(f"{topic}/status", online, qos=1)
            self.ready.set()
            await self._stop.wait()
        finally:
            await client.disconnect()


def test_an_operator_uploads_an_image_and_reads_its_signature(
    screen: Page, platform: Platform, http: httpx.Client, tmp_path: Path
) -> None:
    page = screen
    model = unique("soil")
    image = tmp_path / "soil.bin"
    image.write_bytes(b"\x7fFW" + uuid.uuid4().bytes * 2048)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    keys = ok(http.get("/api/v1/firmware/keys"))["items"]
    active = next(k for k in keys if k["active"])

    signed_in_as(page, platform, "operator")
    go(page, "Firmware")
    form = page.get_by_role("form", name="Upload firmware")
    form.get_by_label("Device model").fill(model)
    form.get_by_label("Version", exact=True).fill("1.4.0")
    form.get_by_label("Image file").set_input_files(str(image))
    form.get_by_label("Release notes").fill("Faster Wi-Fi reconnect")
    form.get_by_role("button", name="Upload").click()

    result = page.locator(".upload-result")
    expect(result).to_contain_text(f"Uploaded {model} 1.4.0")
    expect(result).to_contain_text(active["key_id"])
    expect(result.locator("[data-field='sha256']")).to_have_text(digest)
    signature = result.locator("[data-field='signature']").inner_text()
    assert len(base64.b64decode(signature, validate=True)) == 64
    stored = ok(http.get(f"/api/v1/firmware/{model}/1.4.0"))
    assert (stored["sha256"], stored["signature"], stored["size_bytes"]) == (
        digest,
        signature,
        image.stat().st_size,
    )

    page.get_by_label("Model", exact=True).select_option(model)
    row = page.locator("table.data tbody tr").filter(has_text=model)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("1.4.0")
    expect(row).to_contain_text(digest[:12])
    if page.viewport_size and page.viewport_size["width"] > 720:
        expect(row).to_contain_text("Faster Wi-Fi reconnect")
        expect(row).to_contain_text("32.0 KiB")

    # The same version again: the server's 409, said where the form is.
    form.get_by_label("Device model").fill(model)
    form.get_by_label("Version", exact=True).fill("1.4.0")
    form.get_by_label("Image file").set_input_files(str(image))
    form.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert").filter(has_text="1.4.0")).to_contain_text("already")
    # A signature no trusted key made: refused (422), nothing stored.
    form.get_by_label("Version", exact=True).fill("1.4.1")
    form.get_by_label("Image file").set_input_files(str(image))
    form.get_by_label("Signature (optional)").fill(base64.b64encode(bytes(64)).decode())
    form.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert").filter(has_text="signature")).to_contain_text("trusted key")
    assert http.get(f"/api/v1/firmware/{model}/1.4.1").status_code == 404

    keys_card = page.get_by_role("region", name="Signing keys")
    active_row = keys_card.locator(f"tr[data-key-id='{active['key_id']}']")
    expect(active_row).to_contain_text("active")
    expect(active_row).to_contain_text(active["public_key"])


def test_an_operator_starts_a_rollout_watches_it_and_pauses_and_resumes_it(
    screen: Page, platform: Platform, http: httpx.Client
) -> None:
    page = screen
    model, other, group = unique("valve"), unique("pump"), unique("farm")
    upload(http, model, "2.0.0", b"valve firmware " + uuid.uuid4().bytes)
    ok(http.post("/api/v1/groups", json={"name": group}))
    ids = [unique("valve") for _ in range(3)]
    devices = [FirmwareDevice(platform, http, i, device_type=model, group=group) for i in ids]
    register(http, unique("pump"), device_type=other, group=group)

    signed_in_as(page, platform, "operator")
    go(page, "Rollouts")
    page.get_by_role("link", name="New rollout").click()
    form = page.get_by_role("form", name="New rollout")
    form.get_by_label("Device model", exact=True).select_option(model)
    expect(form.get_by_label("Version", exact=True)).to_have_value("2.0.0")
    expect(form.locator(".target-count")).to_have_text("Choose groups or devices")
    form.get_by_label(group).check()
    count = form.locator(".target-count")
    expect(count).to_contain_text(f"3 devices of {model} targeted")
    expect(count).to_contain_text("1 device of other models left out")
    # One percentage instead of the stages; every device at once, judged on the first.
    form.get_by_label("One percentage, raised by hand").check()
    form.get_by_label("Percentage", exact=True).fill("100")
    form.get_by_label("Devices told per minute at most").fill("600")
    form.get_by_label("Judge after finished devices").fill("1")
    form.get_by_label("Pause above failures (%)").fill("20")
    with devices[0], devices[1], devices[2]:
        form.get_by_role("button", name="Start rollout").click()
        heading = page.get_by_role("heading", level=1)
        expect(heading).to_contain_text(f"{model} 2.0.0")
        expect(heading).to_contain_text("running")
        rollout_id = int(re.findall(r"#/rollouts/(\d+)", page.url)[0])
        rollout = ok(http.get(f"/api/v1/rollouts/{rollout_id}"))
        assert rollout["firmware"] == {"device_model": model, "version": "2.0.0"}

        for device in devices:
            device.wait_offer()
        devices[0].report("downloading", 40)
        bar = page.locator(".rollout-progress .ota-bar")
        expect(bar.locator(".ota-seg[data-state='downloading']")).to_have_attribute(
            "data-count", "1"
        )
        legend = page.get_by_role("list", name="Devices per state")
        expect(legend.locator("li[data-state='downloading']")).to_contain_text("downloading 1")
        table = page.locator("table.rollout-devices")
        expect(table.locator(f"tr[data-device-id='{ids[0]}']")).to_contain_text("40%")

        # One failure of one finished device is above 20%: the rollout pauses itself.
        devices[1].report("failed", error="flash write error")
        banner = page.locator(".pause-banner")
        expect(banner).to_contain_text("Paused by itself")
        expect(heading).to_contain_text("paused")
        expect(bar.locator(".ota-seg[data-state='failed']")).to_have_attribute("data-count", "1")
        expect(bar.locator(".ota-seg")).to_have_count(3)  # downloading, notified, failed
        whole = bar.bounding_box()
        assert whole is not None
        for segment in bar.locator(".ota-seg").all():
            drawn = segment.bounding_box()
            assert drawn is not None
            assert 0.25 < drawn["width"] / whole["width"] < 0.4, "one device in three: a third"
        first = table.locator("tbody tr").first
        expect(first).to_have_attribute("data-device-id", ids[1])
        expect(first).to_contain_text("flash write error")
        assert ok(http.get(f"/api/v1/rollouts/{rollout_id}"))["pause_reason"]

        page.get_by_role("button", name="Resume").click()
        expect(heading).to_contain_text("running")
        expect(banner).to_have_count(0)
        page.get_by_role("button", name="Pause").click()
        expect(heading).to_contain_text("paused")
        assert ok(http.get(f"/api/v1/rollouts/{rollout_id}"))["state"] == "paused"
        page.get_by_role("button", name="Resume").click()
        expect(heading).to_contain_text("running")
        assert ok(http.get(f"/api/v1/rollouts/{rollout_id}"))["state"] == "running"

        # The legend filters the table to a state's devices.
        legend.get_by_role("button", name=re.compile("failed")).click()
        expect(table.locator("tbody tr")).to_have_count(1)

        # The list sums it up; the device's page lists the update.
        go(page, "Rollouts")
        listed = page.locator(f"tr[data-rollout-id='{rollout_id}']")
        expect(listed).to_contain_text("running")
        expect(listed).to_contain_text("1 failed")
        open_page(page, platform, f"/devices/{ids[1]}")
        updates = page.get_by_role("region", name="Firmware updates")
        entry = updates.locator(f"tr[data-rollout-id='{rollout_id}']")
        expect(entry).to_contain_text("1.0.0 → 2.0.0")
        expect(entry).to_contain_text("failed")
        expect(entry).to_contain_text("flash write error")


def test_a_viewer_sees_firmware_and_rollouts_without_actions(
    screen: Page, platform: Platform, http: httpx.Client
) -> None:
    page = screen
    model, group = unique("gate"), unique("depot")
    upload(http, model, "3.1.0", b"gate firmware " + uuid.uuid4().bytes)
    ok(http.post("/api/v1/groups", json={"name": group}))
    register(http, unique("gate"), device_type=model, group=group)
    rollout = ok(
        http.post(
            "/api/v1/rollouts",
            json={
                "firmware": {"device_model": model, "version": "3.1.0"},
                "target": {"groups": [group], "device_ids": []},
                "percentage": 50,
                "max_per_minute": 60,
                "device_timeout_seconds": 3600,
                "settle_seconds": 600,
                "abort": {"min_finished": 5, "failure_percent": 20},
                "allow_downgrade": False,
            },
        )
    )

    signed_in_as(page, platform, "viewer")
    go(page, "Firmware")
    expect(page.get_by_role("form", name="Upload firmware")).to_have_count(0)
    page.get_by_label("Model", exact=True).select_option(model)
    row = page.locator("table.data tbody tr").filter(has_text=model)
    expect(row).to_contain_text("3.1.0")
    expect(row.get_by_role("button")).to_have_count(0)
    expect(row.get_by_role("link")).to_have_count(0)

    go(page, "Rollouts")
    expect(page.locator(f"tr[data-rollout-id='{rollout['id']}']")).to_contain_text("running")
    expect(page.get_by_role("link", name="New rollout")).to_have_count(0)
    page.get_by_role("link", name=f"#{rollout['id']}", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"{model} 3.1.0")
    expect(page.get_by_role("region", name="Settings")).to_contain_text("50%")
    for action in ("Pause", "Resume", "Raise percentage", "Cancel rollout"):
        expect(page.get_by_role("button", name=action)).to_have_count(0)

    open_page(page, platform, "/rollouts/new")
    expect(page.locator("main")).to_contain_text("This page needs the operator role.")
    ok(http.patch(f"/api/v1/rollouts/{rollout['id']}", json={"action": "cancel"}))


def test_an_operator_raises_and_cancels_a_rollout(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    model, group = unique("lamp"), unique("street")
    upload(http, model, "1.1.0", b"lamp firmware " + uuid.uuid4().bytes)
    ok(http.post("/api/v1/groups", json={"name": group}))
    for _ in range(2):
        register(http, unique("lamp"), device_type=model, group=group)
    signed_in_as(page, platform, "operator")
    open_page(page, platform, f"/rollouts/new?device_model={model}&version=1.1.0")
    form = page.get_by_role("form", name="New rollout")
    expect(form.get_by_label("Device model", exact=True)).to_have_value(model)
    form.get_by_label(group).check()
    expect(form.locator(".target-count")).to_contain_text(f"2 devices of {model} targeted")
    # The default stages: a canary, then percentages after delays; one more is added.
    expect(form.locator("li.stage")).to_have_count(3)
    expect(form.get_by_label("Stage 1 devices")).to_have_value("5")
    form.get_by_role("button", name="Add stage").click()
    expect(form.locator("li.stage")).to_have_count(4)
    form.get_by_role("button", name="Remove stage 4").click()
    form.get_by_label("Stage 1 devices").fill("1")
    form.get_by_role("button", name="Start rollout").click()
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text(f"{model} 1.1.0")
    rollout_id = int(re.findall(r"#/rollouts/(\d+)", page.url)[0])
    stages = ok(http.get(f"/api/v1/rollouts/{rollout_id}"))["stages"]
    assert [(s.get("devices"), s.get("percentage"), s.get("after_seconds")) for s in stages] == [
        (1, None, 0),
        (None, 25, 3600),
        (None, 100, 86400),
    ]

    page.get_by_role("button", name="Raise percentage").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Percentage of the target").fill("60")
    dialog.get_by_role("button", name="Raise").click()
    expect(page.locator(".toast").last).to_contain_text("raised to 60%")
    assert ok(http.get(f"/api/v1/rollouts/{rollout_id}"))["percentage"] == 60

    page.get_by_role("button", name="Cancel rollout").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel rollout").click()
    expect(heading).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Cancel rollout")).to_have_count(0)
    assert ok(http.get(f"/api/v1/rollouts/{rollout_id}"))["state"] == "cancelled"
