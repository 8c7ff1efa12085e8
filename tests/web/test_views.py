"""The views over many devices (issue 16), in real Chromium against `fieldline up`: a
group's page (trend, latest values with units, map, commands and bulk disable/enable),
the compare view (its state in the URL, a crosshair across charts), the fleet map, a
device's state timeline and track, and exports downloaded from the dashboard; on a
desktop and a phone viewport."""

from __future__ import annotations

import csv
import io
import time
import uuid
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.web.conftest import ADMIN_PASSWORD, Platform, create_user, sign_in


def _device(platform: Platform, device_id: str, **fields: object) -> str:
    created = httpx.post(
        f"{platform.api_url}/api/v1/devices",
        json={"device_id": device_id, **fields},
        headers=platform.headers,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["mqtt"]["password"])


def _send(platform: Platform, device_id: str, password: str, readings: list[dict]) -> None:
    for first in range(0, len(readings), 200):
        answer = httpx.post(
            f"{platform.api_url}/api/v1/devices/{device_id}/telemetry",
            json={"readings": readings[first : first + 200]},
            auth=(device_id, password),
        )
        assert answer.status_code == 202, answer.text


def _greenhouses(platform: Platform, count: int = 3) -> tuple[str, list[str], str]:
    """A group of greenhouses (with a unit for their temperature), each reporting two hours
    of temperature and humidity and standing somewhere near Utrecht."""
    tag = uuid.uuid4().hex[:6]
    group, device_type = f"farm-{tag}", f"greenhouse-{tag}"
    made = httpx.post(
        f"{platform.api_url}/api/v1/groups",
        json={"name": group, "timezone": "Europe/Amsterdam"},
        headers=platform.headers,
    )
    assert made.status_code == 201, made.text
    put = httpx.put(
        f"{platform.api_url}/api/v1/device-types/{device_type}/metrics/temperature",
        json={"display_name": "Air temperature", "unit": "°C", "decimals": 1},
        headers=platform.headers,
    )
    assert put.status_code == 200, put.text
    now = time.time()
    devices = []
    for n in range(count):
        device_id = f"gh-{tag}-{n}"
        password = _device(platform, device_id, group=group, device_type=device_type)
        readings = [
            {
                "message_id": f"m-{i}",
                "timestamp": now - 7200 + i * 60,
                "sensors": {
                    "temperature": 18.0 + 2 * n + (i % 10) / 10,
                    "humidity": 60.0 - n,
                    "lat": 52.09 + n / 100,
                    "lon": 5.12 + n / 100,
                },
            }
            for i in range(121)
        ]
        _send(platform, device_id, password, readings)
        devices.append(device_id)
    return group, devices, device_type


def _admin(page: Page, platform: Platform) -> None:
    sign_in(page, platform, "admin", ADMIN_PASSWORD)


def test_a_group_page_shows_trend_values_map_and_acts_on_its_devices(
    page: Page, platform: Platform, screenshots: Path
) -> None:
    group, devices, _ = _greenhouses(platform)
    _admin(page, platform)
    page.goto(f"{platform.api_url}/#/groups")
    page.get_by_role("link", name=group).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(group)
    expect(page.locator(".page-head .sub")).to_contain_text("3 devices · Europe/Amsterdam")

    table = page.get_by_role("table", name=f"Devices of {group}")
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table.locator("th", has_text="Air temperature (°C)")).to_have_count(1)
    cell = table.locator(f'tr[data-device-id="{devices[1]}"] td[data-metric="temperature"]')
    expect(cell).to_have_text("20.0 °C")  # the newest reading, i = 120: 18 + 2 + 0.0

    trend = page.locator("section", has=page.get_by_role("heading", name="Trend"))
    expect(trend.get_by_label("Metric")).to_have_value("temperature")
    svg = trend.locator("svg.chart")
    expect(svg).not_to_have_attribute("data-points", "0")
    expect(trend.locator("path.chart-range")).to_have_count(1)
    expect(page).to_have_url(f"{platform.api_url}/#/groups/{group}?metric=temperature&range=24h")

    the_map = page.locator("#group-map")
    expect(the_map).to_have_attribute("data-devices", "3")
    expect(the_map.locator("path.map-device")).to_have_count(3)
    # Without internet the tiles fail and the grid of coordinates shows the places.
    expect(the_map.locator("canvas.leaflet-tile").first).to_be_visible()
    page.screenshot(path=screenshots / "group.png", full_page=True)

    # A command to two selected devices.
    table.get_by_label(f"Select {devices[0]}").check()
    table.get_by_label(f"Select {devices[2]}").check()
    page.get_by_role("button", name="Send command to 2 selected").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Command").fill("vent")
    dialog.get_by_label("Parameters (JSON)").fill('{"open": true}')
    dialog.get_by_role("button", name="Send to 2 devices").click()
    expect(page.locator(".toast").last).to_contain_text("vent sent to 2 devices")
    for device, expected in ((devices[0], 1), (devices[1], 0), (devices[2], 1)):
        listed = httpx.get(
            f"{platform.api_url}/api/v1/devices/{device}/commands", headers=platform.headers
        ).json()["items"]
        assert [(c["name"], c["params"]) for c in listed] == [("vent", {"open": True})] * expected

    # Bulk disable of the selection, confirmed; then enable all again.
    page.get_by_role("button", name="Disable 2 selected").click()
    page.get_by_role("dialog").get_by_role("button", name="Disable").click()
    expect(table.locator(f'tr[data-device-id="{devices[0]}"]')).to_contain_text("disabled")
    enabled = {
        d: httpx.get(f"{platform.api_url}/api/v1/devices/{d}", headers=platform.headers).json()[
            "enabled"
        ]
        for d in devices
    }
    assert enabled == {devices[0]: False, devices[1]: True, devices[2]: False}
    page.get_by_role("button", name="Enable all 3").click()
    expect(table.locator(f'tr[data-device-id="{devices[0]}"]')).not_to_contain_text("disabled")

    # Its configuration, edited in place.
    config = page.locator("section", has=page.get_by_role("heading", name="Configuration"))
    config.get_by_role("button", name="Edit configuration").click()
    config.get_by_label("Configuration (JSON object)").fill('{"interval_s": 30}')
    config.get_by_role("button", name="Save configuration").click()
    expect(page.locator(".toast").last).to_contain_text("saved as version 1: sent to 3 devices")
    shared = httpx.get(f"{platform.api_url}/api/v1/groups/{group}/config", headers=platform.headers)
    assert shared.json()["config"] == {"interval_s": 30}

    # The selected devices, compared.
    table.get_by_label(f"Select {devices[0]}").check()
    table.get_by_label(f"Select {devices[1]}").check()
    page.get_by_role("link", name="Compare 2 selected").click()
    first = page.locator("section", has=page.locator("#compare-first"))
    expect(first.locator(".chart-legend li")).to_have_text(devices[:2])
    assert f"devices={devices[0]}%2C{devices[1]}" in page.url


def test_a_viewer_sees_a_group_without_its_controls(page: Page, platform: Platform) -> None:
    group, _, _ = _greenhouses(platform, count=1)
    sign_in(page, platform, *create_user(platform, "viewer"))
    page.goto(f"{platform.api_url}/#/groups/{group}")
    expect(page.get_by_role("table", name=f"Devices of {group}").locator("tbody tr")).to_have_count(
        1
    )
    expect(page.get_by_role("checkbox")).to_have_count(0)
    expect(page.get_by_role("button", name="Send command", exact=False)).to_have_count(0)
    expect(page.get_by_role("button", name="Edit configuration")).to_have_count(0)


def test_the_compare_view_lives_in_the_url_and_shares_one_crosshair(
    page: Page, platform: Platform, screenshots: Path
) -> None:
    group, devices, _ = _greenhouses(platform)
    _admin(page, platform)
    page.goto(f"{platform.api_url}/#/compare")
    controls = page.get_by_role("region", name="What to compare")
    controls.locator("select[name=group]").select_option(group)
    controls.locator("select[name=metric]").select_option("temperature")
    controls.locator("select[name=metric2]").select_option("humidity")
    first = page.locator("section", has=page.locator("#compare-first"))
    expect(first.locator(".chart-legend li")).to_have_text(devices)
    expect(page.locator("#compare-first")).to_have_text("Air temperature (°C) of 3 devices")
    expect(page.locator("#compare-trend")).to_contain_text(f"Trend of {group}")
    expect(page.locator("#compare-second")).to_contain_text("humidity of 3 devices")

    # Reloading the address shows the same view.
    address = page.url
    assert f"group={group}" in address and "metric2=humidity" in address
    page.reload()
    expect(page.locator("#compare-first")).to_have_text("Air temperature (°C) of 3 devices")
    expect(first.locator(".chart-legend li")).to_have_text(devices)

    # One crosshair: hovering the first chart shows the time on the group's trend too.
    box = first.locator(".chart-overlay").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 40, box["y"] + box["height"] / 2)
    trend = page.locator("section", has=page.locator("#compare-trend"))
    expect(trend.locator(".chart-crosshair")).to_have_attribute("visibility", "visible")
    expect(first.locator(".chart-tooltip-value")).to_contain_text(f"{devices[0]}:")
    expect(first.locator(".chart-tooltip-value")).to_contain_text("°C")
    page.screenshot(path=screenshots / "compare.png", full_page=True)

    # The top 1 by latest value is the warmest greenhouse; two metrics of one device overlay.
    controls.locator("select[name=top]").select_option("1")
    expect(first.locator("svg.chart")).to_have_attribute("data-series", "2")
    expect(page.locator("#compare-first")).to_have_text(
        f"{devices[2]}: Air temperature (°C) and humidity"
    )
    expect(first.locator(".chart-legend li")).to_have_text(
        ["Air temperature (°C)", "humidity (right axis)"]
    )
    expect(page).to_have_url(f"{platform.api_url}/{'#'}/compare?" + page.url.split("?", 1)[1])
    assert "top=1" in page.url


def test_the_fleet_map_places_devices_and_opens_them(page: Page, platform: Platform) -> None:
    group, devices, _ = _greenhouses(platform, count=2)
    _admin(page, platform)
    page.goto(f"{platform.api_url}/#/map?group={group}")
    the_map = page.locator("#fleet-map")
    expect(the_map).to_have_attribute("data-devices", "2")
    expect(page.locator(".page-head .sub")).to_have_text(f"2 devices with a position in {group}")
    the_map.locator(f'path.map-device[data-device-id="{devices[1]}"]').click(force=True)
    expect(page.get_by_role("heading", level=1)).to_contain_text(devices[1])


def test_a_device_draws_states_and_its_track(page: Page, platform: Platform) -> None:
    tag = uuid.uuid4().hex[:6]
    device_type, device_id = f"tracker-{tag}", f"truck-{tag}"
    for metric, meta in (
        ("pump", {"display_name": "Pump", "kind": "boolean", "labels": {"0": "off", "1": "on"}}),
        ("gps_y", {"kind": "latitude"}),
        ("gps_x", {"kind": "longitude"}),
    ):
        put = httpx.put(
            f"{platform.api_url}/api/v1/device-types/{device_type}/metrics/{metric}",
            json=meta,
            headers=platform.headers,
        )
        assert put.status_code == 200, put.text
    password = _device(platform, device_id, device_type=device_type)
    now = time.time()
    _send(
        platform,
        device_id,
        password,
        [
            {
                "message_id": f"t-{i}",
                "timestamp": now - 3000 + i * 100,
                "sensors": {
                    "pump": (i // 10) % 2,
                    "gps_y": 59.9 + i / 1000,
                    "gps_x": 10.7,
                    "speed": 40.0 + i % 7,
                },
            }
            for i in range(30)
        ],
    )
    _admin(page, platform)
    page.goto(f"{platform.api_url}/#/devices/{device_id}")
    pump = page.locator('[data-chart="pump"]')
    expect(pump.locator("rect.chart-state").first).to_be_visible()
    states = pump.locator("rect.chart-state").evaluate_all("rs => rs.map((r) => r.dataset.state)")
    assert states == ["off", "on", "off"]
    # The coordinates are a track on a map, not two line charts.
    expect(page.locator('[data-chart="gps_y"]')).to_have_count(0)
    expect(page.locator("#device-track")).to_have_attribute("data-track", "30")
    expect(page.locator("#device-track path.map-track")).to_have_count(1)

    # One crosshair over the page's charts; a zoom is kept in the address.
    speed = page.locator('[data-chart="speed"] svg.chart')
    box = speed.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.6, y)
    expect(pump.locator(".chart-crosshair")).to_have_attribute("visibility", "visible")
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.9, y, steps=6)
    page.mouse.up()
    expect(page.get_by_role("button", name="Reset zoom")).to_be_visible()
    assert "from=" in page.url and "to=" in page.url
    page.reload()
    expect(page.get_by_role("button", name="Reset zoom")).to_be_visible()


def test_exports_download_the_points_a_view_shows(page: Page, platform: Platform) -> None:
    group, devices, _ = _greenhouses(platform, count=2)
    _admin(page, platform)
    page.goto(f"{platform.api_url}/#/groups/{group}?metric=temperature&range=24h")
    trend = page.locator("section", has=page.get_by_role("heading", name="Trend"))
    with page.expect_download() as started:
        trend.get_by_role("button", name="CSV").click()
    download = started.value
    assert download.suggested_filename.startswith(group) and download.suggested_filename.endswith(
        ".csv"
    )
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert len(rows) == 2 * 121
    assert {r["device_id"] for r in rows} == set(devices)
    assert {r["metric"] for r in rows} == {"temperature"}
    assert {r["unit"] for r in rows} == {"°C"}

    page.goto(f"{platform.api_url}/#/devices/{devices[0]}?range=24h")
    with page.expect_download() as started:
        page.get_by_role("group", name="Export").get_by_role("button", name="Parquet").click()
    assert started.value.suggested_filename.endswith(".parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(started.value.path())
    assert table.num_rows == 4 * 121  # temperature, humidity, lat, lon


def test_the_views_work_on_a_phone(phone: Page, platform: Platform) -> None:
    group, devices, _ = _greenhouses(platform, count=2)
    sign_in(phone, platform, "admin", ADMIN_PASSWORD)
    # Every page is behind the menu; the overview's sorted column is marked.
    nav = phone.get_by_role("navigation", name="Main")
    expect(nav).to_be_hidden()
    sorted_column = phone.locator("table.data th[aria-sort=ascending]")
    expect(sorted_column).to_have_text("Device▲")
    assert sorted_column.evaluate("th => getComputedStyle(th).boxShadow") != "none"
    menu = phone.get_by_role("button", name="Menu")
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    for link in ("Overview", "Compare", "Map", "Groups", "Metrics", "Storage", "API keys"):
        expect(nav.get_by_role("link", name=link, exact=True)).to_be_visible()
    expect(nav.get_by_label("Time zone")).to_be_visible()
    nav.get_by_role("link", name="Groups", exact=True).click()
    expect(nav).to_be_hidden()
    phone.get_by_role("link", name=group).click()
    table = phone.get_by_role("table", name=f"Devices of {group}")
    expect(table.locator("tbody tr")).to_have_count(2)
    # Nothing wider than the screen: the page does not scroll sideways.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    expect(phone.locator("#group-map path.map-device")).to_have_count(2)
    phone.goto(f"{platform.api_url}/#/compare?group={group}&metric=temperature&range=6h")
    legend = phone.locator("section", has=phone.locator("#compare-first")).locator(
        ".chart-legend li"
    )
    expect(legend).to_have_text(devices)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.goto(f"{platform.api_url}/#/map?group={group}")
    expect(phone.locator("#fleet-map")).to_have_attribute("data-devices", "2")
    expect(phone.locator("#fleet-map path.map-device")).to_have_count(2)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
