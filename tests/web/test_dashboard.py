"""The dashboard driven in headless Chromium against a real `fieldline up` and a
simulated fleet, as an operator and as a viewer would use it.

Set FIELDLINE_SCREENSHOTS to a directory (e.g. docs/images) to keep the README's
screenshots that these tests take; otherwise they go to a temporary directory.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from fieldline.sim.provisioning import DEVICE_TYPE as SIM_DEVICE_TYPE
from tests.web.conftest import ADMIN_PASSWORD, Platform, create_user, sign_in

SIM_METRICS = {
    "temperature": {"display_name": "Temperature", "unit": "°C", "decimals": 1},
    "humidity": {"display_name": "Humidity", "unit": "%", "decimals": 0},
    "soil_moisture": {"display_name": "Soil moisture", "unit": "%", "decimals": 1},
    "battery_voltage": {"display_name": "Battery", "unit": "V", "decimals": 2},
    "pressure": {"display_name": "Pressure", "unit": "hPa", "decimals": 1},
    "signal_strength": {"display_name": "Signal", "unit": "dBm", "decimals": 0},
}

LIVE_TIMEOUT = 60_000  # ms: a ceiling for what arrives live; a miss fails the test, never hangs it
DEVICES = 12


@dataclass
class Simulator:
    platform: Platform
    log: Path
    prefix: str = field(default_factory=lambda: f"web{uuid.uuid4().hex[:6]}")
    process: subprocess.Popen[bytes] | None = None

    @property
    def first_device(self) -> str:
        return f"{self.prefix}-0001"

    def start(self) -> None:
        """Run `fieldline simulate` as a user would: it registers its devices through the API."""
        if self.process is not None:
            return
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fieldline",
                    "simulate",
                    "--devices",
                    str(DEVICES),
                    "--rate",
                    "2",
                    "--heartbeat-interval",
                    "5",
                    "--create",
                    "--username",
                    "admin",
                    "--password",
                    ADMIN_PASSWORD,
                    "--api-url",
                    self.platform.api_url,
                    "--mqtt-port",
                    str(self.platform.mqtt_port),
                    "--prefix",
                    self.prefix,
                    "--credentials",
                    str(self.log.with_suffix(".json")),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def simulator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    running = Simulator(platform, tmp_path_factory.mktemp("simulator") / "simulate.log")
    try:
        yield running
    finally:
        running.stop()


def admin_page(page: Page, platform: Platform) -> Page:
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    return page


def open_device(page: Page, platform: Platform, device_id: str, query: str = "") -> None:
    """Open the device's page once the simulator has registered it."""
    deadline = time.monotonic() + LIVE_TIMEOUT / 1000
    url = f"{platform.api_url}/api/v1/devices/{device_id}"
    while httpx.get(url, headers=platform.headers).status_code == 404:
        assert time.monotonic() < deadline, f"{device_id} was never registered"
        time.sleep(0.2)
    page.goto(f"{platform.api_url}/#/devices/{device_id}{query}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(device_id)


def test_a_bad_login_is_refused(page: Page, platform: Platform) -> None:
    page.goto(platform.api_url + "/")
    form = page.locator("#login-form")
    form.get_by_label("Username").fill("admin")
    form.get_by_label("Password").fill("not-the-password")
    form.get_by_role("button", name="Sign in").click()
    expect(form.get_by_role("alert")).to_have_text("wrong username or password")
    expect(page.locator("nav.nav")).to_have_count(0)
    assert page.evaluate("localStorage.getItem('fieldline.session')") is None


def test_devices_appear_and_go_online_when_the_simulator_starts(
    page: Page, platform: Platform, simulator: Simulator
) -> None:
    admin_page(page, platform)
    page.get_by_label("Search").fill(simulator.prefix)
    expect(page.get_by_text("No devices match these filters")).to_be_visible()

    simulator.start()

    rows = page.locator('table[aria-label="Devices"] tbody tr')
    expect(rows).to_have_count(DEVICES, timeout=LIVE_TIMEOUT)
    online = rows.locator(".badge.online")
    expect(online).to_have_count(DEVICES, timeout=LIVE_TIMEOUT)
    expect(page.locator(".pager")).to_contain_text(f"1–{DEVICES} of {DEVICES}")
    # The latest battery and signal arrive with the first readings.
    expect(rows.first.locator("td.num").first).to_contain_text(" V", timeout=LIVE_TIMEOUT)
    expect(page.locator(".stat").filter(has_text="Online")).not_to_contain_text("Online0")

    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(simulator.first_device)


def backfill(platform: Platform, simulator: Simulator, device_id: str, hours: float) -> None:
    """Readings the device took over the past `hours`, sent late as a device that was
    offline would: batches over HTTP ingest with its own credentials."""
    path = simulator.log.with_suffix(".json")
    deadline = time.monotonic() + LIVE_TIMEOUT / 1000
    while not path.exists() or device_id not in path.read_text():
        assert time.monotonic() < deadline, "the simulator wrote no credentials"
        time.sleep(0.2)
    password = json.loads(path.read_text())[device_id]
    rng = random.Random(7)
    now = time.time()
    temperature, humidity, battery, moisture = 21.0, 50.0, 4.05, 48.0
    readings = []
    for step in range(int(hours * 360), 0, -1):  # every 10 s
        temperature += rng.gauss(0, 0.08)
        humidity += rng.gauss(0, 0.3)
        battery -= abs(rng.gauss(0, 0.0004))
        moisture += rng.gauss(-0.01, 0.05)
        readings.append(
            {
                "message_id": f"backfill-{step}",
                "timestamp": now - step * 10,
                "sensors": {
                    "temperature": round(temperature, 2),
                    "humidity": round(humidity, 1),
                    "battery_voltage": round(battery, 3),
                    "soil_moisture": round(moisture, 1),
                    "pressure": round(1015 + rng.gauss(0, 0.4), 1),
                },
                "signal_strength": round(-70 + rng.gauss(0, 3)),
            }
        )
    for first in range(0, len(readings), 150):
        answer = httpx.post(
            f"{platform.api_url}/api/v1/devices/{device_id}/telemetry",
            json={"readings": readings[first : first + 150]},
            auth=(device_id, password),
        )
        assert answer.status_code == 202, answer.text


def test_a_device_chart_gains_points_live(
    page: Page, platform: Platform, simulator: Simulator, screenshots: Path
) -> None:
    simulator.start()
    # What the simulator's metrics are, for people: the tiles and charts show it.
    for metric, meta in SIM_METRICS.items():
        put = httpx.put(
            f"{platform.api_url}/api/v1/device-types/{SIM_DEVICE_TYPE}/metrics/{metric}",
            json=meta,
            headers=platform.headers,
        )
        assert put.status_code == 200, put.text
    admin_page(page, platform)
    backfill(platform, simulator, simulator.first_device, hours=1)
    open_device(page, platform, simulator.first_device, "?range=15m")
    expect(page.locator('.tile[data-metric="temperature"]')).to_be_visible(timeout=LIVE_TIMEOUT)
    chart = '[data-chart="temperature"] svg.chart'
    more_than = "([selector, n]) => Number(document.querySelector(selector)?.dataset.points) > n"
    page.wait_for_function(more_than, arg=[chart, 1], timeout=LIVE_TIMEOUT)
    before = int(page.locator(chart).get_attribute("data-points") or 0)

    # No reload: the device's stream brings the values, the chart asks for the new buckets.
    page.wait_for_function(more_than, arg=[chart, before], timeout=LIVE_TIMEOUT)

    # Drag across the last minutes of the chart: every chart zooms in to that span.
    svg = page.locator(chart)
    svg.scroll_into_view_if_needed()
    box = svg.bounding_box()
    assert box is not None
    start_before = int(svg.get_attribute("data-start") or 0)
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.8, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.99, y, steps=8)
    page.mouse.up()
    expect(page.get_by_role("button", name="Reset zoom")).to_be_visible()
    page.wait_for_function(
        "([selector, start]) => Number(document.querySelector(selector).dataset.start) > start",
        arg=[chart, start_before + 10 * 60 * 1000],  # the last few of the 15 minutes
    )
    page.wait_for_function(more_than, arg=['[data-chart="humidity"] svg.chart', 1])

    # The last hour, with the device's earlier readings, for the README.
    page.get_by_role("button", name="1 h", exact=True).click()
    expect(page.get_by_role("button", name="1 h", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.get_by_role("button", name="Reset zoom")).to_have_count(0)
    page.wait_for_function(more_than, arg=[chart, 100])
    expect(page.locator('.tile[data-metric="temperature"] .value')).to_contain_text("°C")
    expect(page.locator('[data-chart="pressure"] h2')).to_have_text("Pressure (hPa)")
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=screenshots / "device.png", full_page=True)


def test_a_configuration_change_is_reported_by_the_device(
    page: Page, platform: Platform, simulator: Simulator
) -> None:
    simulator.start()
    admin_page(page, platform)
    device = f"{simulator.prefix}-0002"
    open_device(page, platform, device)
    editor = page.get_by_label("This device's own settings (JSON)")
    expect(editor).to_have_value("{}", timeout=LIVE_TIMEOUT)

    editor.fill('{"interval": ')
    page.get_by_role("button", name="Save configuration").click()
    expect(page.locator("form[aria-label='Device configuration'] [role=alert]")).to_contain_text(
        "not valid JSON"
    )

    editor.fill('{"interval": 5, "unit": "celsius"}')
    page.get_by_role("button", name="Save configuration").click()
    status = page.locator(".config-status")
    expect(status.locator("[data-sync='in-sync']")).to_have_text(
        "in sync · v1", timeout=LIVE_TIMEOUT
    )
    expect(status).to_contain_text("device reported v1")
    expect(page.locator("pre.config-effective")).to_contain_text('"unit": "celsius"')


def test_a_command_is_sent_and_its_result_shown(
    page: Page, platform: Platform, simulator: Simulator
) -> None:
    simulator.start()
    admin_page(page, platform)
    open_device(page, platform, f"{simulator.prefix}-0003")
    page.get_by_label("Command", exact=True).fill("identify")
    page.get_by_label("Parameters (JSON)").fill('{"seconds": 3}')
    page.get_by_role("button", name="Send command").click()

    row = page.locator('table[aria-label="Commands"] tbody tr').filter(has_text="identify")
    expect(row.locator(".badge")).to_have_text("succeeded", timeout=LIVE_TIMEOUT)
    expect(row).to_contain_text('{"blinked_s":3}')


def test_a_viewer_sees_no_write_controls(
    page: Page, platform: Platform, simulator: Simulator, screenshots: Path
) -> None:
    simulator.start()
    username, password = create_user(platform, "viewer")
    sign_in(page, platform, username, password)
    expect(page.locator('table[aria-label="Devices"] tbody tr').first).to_be_visible(
        timeout=LIVE_TIMEOUT
    )
    expect(page.get_by_role("button", name="Add device")).to_have_count(0)
    for link in ("Rejected", "Provisioning", "Users", "Audit log"):
        expect(page.locator("nav.nav").get_by_role("link", name=link)).to_have_count(0)

    open_device(page, platform, simulator.first_device)
    expect(page.locator(".config-status")).to_contain_text("v", timeout=LIVE_TIMEOUT)
    for action in (
        "Rotate credentials",
        "Disable",
        "Delete",
        "Save configuration",
        "Send command",
    ):
        expect(page.get_by_role("button", name=action)).to_have_count(0)
    expect(page.locator("main textarea, main form")).to_have_count(0)

    # The API refuses what the page does not offer.
    token = page.evaluate("JSON.parse(localStorage.getItem('fieldline.session')).access")
    answer = page.request.delete(
        f"{platform.api_url}/api/v1/devices/{simulator.first_device}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status == 403


def test_the_overview_screenshot_shows_a_live_fleet(
    page: Page, platform: Platform, simulator: Simulator, screenshots: Path
) -> None:
    simulator.start()
    admin_page(page, platform)
    rows = page.locator('table[aria-label="Devices"] tbody tr')
    expect(rows.locator(".badge.online").first).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(page.locator(".stat").filter(has_text="Ingest")).not_to_contain_text(
        "Ingest0.0", timeout=LIVE_TIMEOUT
    )
    page.screenshot(path=screenshots / "overview.png", full_page=True)


def test_rotating_disabling_and_deleting_ask_first(page: Page, platform: Platform) -> None:
    device_id = f"web-actions-{uuid.uuid4().hex[:6]}"
    created = httpx.post(
        f"{platform.api_url}/api/v1/devices",
        json={"device_id": device_id, "name": "Gate sensor"},
        headers=platform.headers,
    )
    assert created.status_code == 201, created.text
    old_password = created.json()["mqtt"]["password"]
    ingest = f"{platform.api_url}/api/v1/devices/{device_id}/telemetry"
    admin_page(page, platform)
    open_device(page, platform, device_id)

    page.get_by_role("button", name="Rotate credentials").click()
    page.get_by_role("dialog").get_by_role("button", name="Rotate").click()
    secret = page.get_by_role("dialog").locator(".secret-value")
    expect(secret).not_to_be_empty()
    new_password = secret.inner_text()
    page.get_by_role("dialog").get_by_role("button", name="Done").click()
    reading = {"temperature": 20.5}
    assert httpx.post(ingest, json=reading, auth=(device_id, old_password)).status_code == 401
    assert httpx.post(ingest, json=reading, auth=(device_id, new_password)).status_code == 202

    page.get_by_role("button", name="Disable").click()
    page.get_by_role("dialog").get_by_role("button", name="Disable").click()
    expect(page.get_by_role("heading", level=1).locator(".badge")).to_have_text("disabled")
    expect(page.get_by_role("button", name="Enable")).to_be_visible()
    assert httpx.post(ingest, json=reading, auth=(device_id, new_password)).status_code in (
        401,
        403,
    )

    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(device_id)
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("nav.nav a[aria-current=page]")).to_have_text("Overview")
    gone = httpx.get(f"{platform.api_url}/api/v1/devices/{device_id}", headers=platform.headers)
    assert gone.status_code == 404


def test_the_device_page_shows_names_units_and_labels_of_its_type(
    page: Page, platform: Platform
) -> None:
    device_type = f"greenhouse-{uuid.uuid4().hex[:6]}"
    device_id = f"web-units-{uuid.uuid4().hex[:6]}"
    created = httpx.post(
        f"{platform.api_url}/api/v1/devices",
        json={"device_id": device_id, "device_type": device_type},
        headers=platform.headers,
    )
    assert created.status_code == 201, created.text
    vent = {"display_name": "Vent", "kind": "boolean", "labels": {"0": "closed", "1": "open"}}
    for metric, meta in (
        ("temp", {"display_name": "Air temperature", "unit": "°C", "decimals": 1}),
        ("vent", vent),
    ):
        put = httpx.put(
            f"{platform.api_url}/api/v1/device-types/{device_type}/metrics/{metric}",
            json=meta,
            headers=platform.headers,
        )
        assert put.status_code == 200, put.text
    sent = httpx.post(
        f"{platform.api_url}/api/v1/devices/{device_id}/telemetry",
        json={"sensors": {"temp": 21.456, "vent": 1, "rpm": 1200}},
        auth=(device_id, created.json()["mqtt"]["password"]),
    )
    assert sent.status_code == 202, sent.text

    admin_page(page, platform)
    open_device(page, platform, device_id)
    temp = page.locator('.tile[data-metric="temp"]')
    expect(temp.locator(".label")).to_have_text("Air temperature")
    expect(temp.locator(".value")).to_have_text("21.5 °C")
    expect(page.locator('.tile[data-metric="vent"] .value')).to_have_text("open")
    expect(page.locator('.tile[data-metric="rpm"] .label')).to_have_text("rpm")  # no entry
    chart = page.locator('[data-chart="temp"] h2')
    expect(chart).to_have_text("Air temperature (°C)")


def test_a_device_page_opens_on_a_range_that_holds_its_data(page: Page, platform: Platform) -> None:
    device_id = f"web-range-{uuid.uuid4().hex[:6]}"
    created = httpx.post(
        f"{platform.api_url}/api/v1/devices",
        json={"device_id": device_id},
        headers=platform.headers,
    )
    assert created.status_code == 201, created.text
    sent = httpx.post(
        f"{platform.api_url}/api/v1/devices/{device_id}/telemetry",
        json={"timestamp": time.time() - 3 * 86400, "sensors": {"level": 4.5}},
        auth=(device_id, created.json()["mqtt"]["password"]),
    )
    assert sent.status_code == 202, sent.text
    admin_page(page, platform)
    open_device(page, platform, device_id)
    ranges = page.get_by_role("group", name="Time range")
    expect(ranges.get_by_role("button", name="7 d")).to_have_attribute("aria-pressed", "true")
    # Asked for in the address, a range is kept.
    open_device(page, platform, device_id, "?range=24h")
    expect(ranges.get_by_role("button", name="24 h")).to_have_attribute("aria-pressed", "true")
