"""Metric metadata and time in the dashboard, in headless Chromium: the Metrics page
(operators add, edit and delete entries, viewers only read), units in the overview's
columns, and the choice of time zone (browser, UTC or a group's), kept across reloads.

The browser runs in Asia/Kolkata (UTC+5:30) so that its wall clock and UTC's differ in
both hours and minutes. Data is prepared through the API and HTTP ingest, named uniquely:
the platform is shared by the whole session.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.web.conftest import ADMIN_PASSWORD, PHONE, Platform, create_user, sign_in

BROWSER_ZONE = "Asia/Kolkata"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh profile whose clock is Kolkata's, on a desktop viewport."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id=BROWSER_ZONE)
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        viewport=PHONE, is_mobile=True, has_touch=True, timezone_id=BROWSER_ZONE
    )
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        context.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def add_device(
    http: httpx.Client,
    platform: Platform,
    device_type: str,
    sensors: dict[str, float],
    device_id: str | None = None,
) -> str:
    """A new device of `device_type` that has reported `sensors` once, over HTTP ingest."""
    device_id = device_id or unique("web-meta")
    created = http.post(
        "/api/v1/devices", json={"device_id": device_id, "device_type": device_type}
    )
    assert created.status_code == 201, created.text
    sent = httpx.post(
        f"{platform.api_url}/api/v1/devices/{device_id}/telemetry",
        json={"sensors": sensors},
        auth=(device_id, created.json()["mqtt"]["password"]),
    )
    assert sent.status_code == 202, sent.text
    return device_id


def put_meta(http: httpx.Client, device_type: str, metric: str, **meta: object) -> None:
    answer = http.put(f"/api/v1/device-types/{device_type}/metrics/{metric}", json=meta)
    assert answer.status_code == 200, answer.text


def open_route(page: Page, platform: Platform, route: str) -> None:
    """Load the dashboard at `route` afresh, so no page still loading renders into it."""
    page.goto("about:blank")
    page.goto(f"{platform.api_url}/#{route}")
    expect(page.locator("main h1, main > .page > .empty").first).to_be_visible()


def entry_row(page: Page, device_type: str, metric: str) -> Locator:
    return page.locator(f'tr[data-device-type="{device_type}"][data-metric="{metric}"]')


def tile_value(page: Page, metric: str) -> Locator:
    return page.locator(f'.tile[data-metric="{metric}"] .value')


def test_operator_adds_edits_and_deletes_an_entry(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    device_type = unique("station")
    device_id = add_device(http, platform, device_type, {"pressure": 101.325, "door": 1})
    username, password = create_user(platform, "operator")
    sign_in(page, platform, username, password)
    expect(page.locator("main h1")).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Metrics").click()
    expect(page.get_by_role("heading", name="Metrics", level=1)).to_be_visible()
    explained = page.get_by_role("region", name="How each kind is shown")
    expect(explained).to_contain_text("state timeline")
    expect(explained).to_contain_text("map")

    page.get_by_role("button", name="Add metric").click()
    dialog = page.get_by_role("dialog", name="Add a metric")
    dialog.get_by_label("Device type").fill(device_type)
    dialog.get_by_label("Metric").fill("pressure")
    # The form suggests the fleet's types and the metrics its devices report.
    suggested = dialog.locator("#metric-form-metrics option[value='pressure']")
    expect(suggested).to_have_count(1)
    expect(dialog.locator(f"#metric-form-types option[value='{device_type}']")).to_have_count(1)
    dialog.get_by_label("Display name").fill("Air pressure")
    dialog.get_by_label("Unit").fill("kPa")
    dialog.get_by_label("Decimals").fill("1")
    expect(dialog.get_by_role("group", name="Labels")).to_be_hidden()  # a number has none
    dialog.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("dialog")).to_have_count(0)

    row = entry_row(page, device_type, "pressure")
    expect(row).to_contain_text("Air pressure")
    expect(row).to_contain_text("kPa")
    expect(row).to_contain_text("number")

    # A boolean with labels for its two values, through the labels editor.
    page.get_by_role("button", name="Add metric").click()
    dialog = page.get_by_role("dialog", name="Add a metric")
    dialog.get_by_label("Device type").fill(device_type)
    dialog.get_by_label("Metric").fill("door")
    dialog.get_by_label("Kind").select_option("boolean")
    labels = dialog.get_by_role("group", name="Labels")
    expect(labels.get_by_role("textbox", name="Value")).to_have_count(2)
    labels.get_by_role("textbox", name="Label").nth(0).fill("closed")
    labels.get_by_role("textbox", name="Label").nth(1).fill("open")
    dialog.get_by_role("button", name="Add", exact=True).click()
    expect(entry_row(page, device_type, "door")).to_contain_text("0 = closed, 1 = open")
    door = http.get("/api/v1/metric-metadata").json()["items"]
    assert {"device_type": device_type, "metric": "door", "kind": "boolean"}.items() <= next(
        e for e in door if e["device_type"] == device_type and e["metric"] == "door"
    ).items()

    # The device page shows the value as the entries say.
    open_route(page, platform, f"/devices/{device_id}")
    expect(tile_value(page, "pressure")).to_have_text("101.3 kPa")
    expect(page.locator('.tile[data-metric="pressure"] .label')).to_have_text("Air pressure")
    expect(tile_value(page, "door")).to_have_text("open")

    open_route(page, platform, f"/metrics?type={device_type}")
    expect(page.get_by_label("Device type")).to_have_value(device_type)
    expect(page.locator("table.data tbody tr")).to_have_count(2)  # filtered to the type
    entry_row(page, device_type, "pressure").get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name=re.compile("Edit pressure"))
    expect(dialog.get_by_label("Metric")).to_have_value("pressure")
    expect(dialog.get_by_label("Unit")).to_have_value("kPa")
    dialog.get_by_label("Unit").fill("hPa")
    dialog.get_by_label("Decimals").fill("0")
    dialog.get_by_role("button", name="Save").click()
    expect(entry_row(page, device_type, "pressure")).to_contain_text("hPa")
    open_route(page, platform, f"/devices/{device_id}")
    expect(tile_value(page, "pressure")).to_have_text("101 hPa")

    open_route(page, platform, "/metrics")
    row = entry_row(page, device_type, "pressure")
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(row).to_be_visible()
    row.get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog")
    expect(confirm).to_contain_text("Delete pressure of")
    confirm.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    left = [
        (e["device_type"], e["metric"]) for e in http.get("/api/v1/metric-metadata").json()["items"]
    ]
    assert (device_type, "pressure") not in left
    assert (device_type, "door") in left
    open_route(page, platform, f"/devices/{device_id}")
    expect(tile_value(page, "pressure")).to_have_text("101.3")  # no unit: a plain number


def test_a_viewer_sees_the_entries_without_controls(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    device_type = unique("viewer-type")
    put_meta(http, device_type, "level", display_name="Tank level", unit="%", decimals=0)
    username, password = create_user(platform, "viewer")
    sign_in(page, platform, username, password)
    open_route(page, platform, "/metrics")
    row = entry_row(page, device_type, "level")
    expect(row).to_contain_text("Tank level")
    expect(row).to_contain_text("%")
    expect(page.get_by_role("heading", name="How each kind is shown")).to_be_visible()
    expect(page.get_by_role("button", name="Add metric")).to_have_count(0)
    expect(page.get_by_role("button", name="Edit")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)


def test_the_overview_columns_show_units_from_metadata(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    prefix = unique("web-vitals")
    volts, percent, plain = (unique(t) for t in ("volts", "percent", "plain"))
    put_meta(http, volts, "battery_voltage", unit="V", decimals=3)
    put_meta(http, volts, "signal_strength", unit="dBm", decimals=1)
    put_meta(http, percent, "battery", unit="%", decimals=0)

    a = add_device(
        http, platform, volts, {"battery_voltage": 3.7, "signal_strength": -71}, f"{prefix}-a"
    )
    b = add_device(
        http, platform, volts, {"battery_voltage": 3.65, "signal_strength": -80}, f"{prefix}-b"
    )
    c = add_device(http, platform, percent, {"battery": 85}, f"{prefix}-c")
    d = add_device(http, platform, plain, {"battery": 4.1, "rssi": -60}, f"{prefix}-d")

    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    table = page.get_by_role("table", name="Devices")

    def cell(device_id: str, column: int) -> Locator:
        """The device's battery (0) or signal (1) cell."""
        return table.locator(f'tr[data-device-id="{device_id}"] td.num').nth(column)

    headers = table.locator("thead th")

    # One type: every row's unit is the same, so the headers carry it, not the cells.
    open_route(page, platform, f"/?device_type={volts}&q={prefix}")
    expect(cell(a, 0)).to_have_text("3.700")
    expect(cell(b, 0)).to_have_text("3.650")
    expect(cell(a, 1)).to_have_text("-71.0")
    expect(headers.filter(has_text="Battery")).to_have_text(re.compile(r"^Battery \(V\)"))
    expect(headers.filter(has_text="Signal")).to_have_text(re.compile(r"^Signal \(dBm\)"))

    # Mixed units: each cell says its own; no metadata: volts and dBm as ever.
    open_route(page, platform, f"/?q={prefix}")
    expect(cell(a, 0)).to_have_text("3.700 V")
    expect(cell(c, 0)).to_have_text("85 %")
    expect(cell(d, 0)).to_have_text("4.1 V")
    expect(cell(d, 1)).to_have_text("-60 dBm")
    expect(headers.filter(has_text="Battery")).to_have_text(re.compile(r"^Battery\W*$"))

    # A type without entries takes the entries of every type (*).
    put_meta(http, "*", "rssi", unit="dB", decimals=1)
    try:
        open_route(page, platform, f"/?q={prefix}")
        expect(cell(d, 1)).to_have_text("-60.0 dB")
    finally:
        assert http.delete("/api/v1/device-types/*/metrics/rssi").status_code == 204


def in_zone(iso: str, zone: str) -> str:
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def hover_chart(page: Page, metric: str) -> Locator:
    chart = page.locator(f'[data-chart="{metric}"]')
    expect(chart.locator("svg.chart")).not_to_have_attribute("data-points", "0")
    box = chart.locator(".chart-overlay").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    tooltip = chart.locator(".chart-tooltip")
    expect(tooltip).to_be_visible()
    return tooltip


def axis_hours(page: Page, metric: str) -> set[int]:
    """The hours of the chart's time labels that read HH:MM."""
    labels = page.locator(f'[data-chart="{metric}"] .chart-axis-x text').all_text_contents()
    clock = [label for label in labels if re.fullmatch(r"\d\d:\d\d", label)]
    assert clock, labels
    return {int(label[:2]) for label in clock}


def test_times_follow_the_chosen_zone_and_the_choice_survives_a_reload(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    device_id = add_device(http, platform, unique("clock"), {"level": 4.0})
    registered = http.get(f"/api/v1/devices/{device_id}").json()["created_at"]
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    picker = page.locator(".topbar .account").get_by_label("Time zone")
    expect(picker).to_have_value("browser")  # the default
    # Chromium names Kolkata by its older name, Calcutta.
    browser_option = picker.locator("option[value=browser]")
    expect(browser_option).to_have_text(re.compile(r"^Browser \(Asia/(Kolkata|Calcutta)\)$"))

    open_route(page, platform, f"/devices/{device_id}")
    details = page.locator("dt:text-is('Registered') + dd")
    expect(details).to_have_text(in_zone(registered, BROWSER_ZONE))
    tooltip = hover_chart(page, "level")
    expect(tooltip).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d GMT\+5:30"))

    picker.select_option("UTC")
    expect(details).to_have_text(in_zone(registered, "UTC"))
    tooltip = hover_chart(page, "level")
    expect(tooltip).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))
    shown = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", tooltip.inner_text())
    assert shown is not None
    reading = datetime.strptime(shown.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert abs(reading.timestamp() - time.time()) < 3600, "the tooltip's time read as UTC is now"
    # The axis's clock labels are UTC's hours (the page opened on its shortest range).
    now = datetime.now(UTC)
    assert axis_hours(page, "level") <= {(now.hour - 1) % 24, now.hour, (now.hour + 1) % 24}

    page.reload()
    expect(page.locator(".topbar .account").get_by_label("Time zone")).to_have_value("UTC")
    expect(details).to_have_text(in_zone(registered, "UTC"))


def test_the_metrics_page_on_a_phone(phone: Page, platform: Platform, http: httpx.Client) -> None:
    device_type = unique("phone-type")
    put_meta(http, device_type, "temp", display_name="Temperature", unit="°C", decimals=1)
    username, password = create_user(platform, "operator")
    sign_in(phone, platform, username, password)
    open_route(phone, platform, f"/metrics?type={device_type}")
    row = entry_row(phone, device_type, "temp")
    expect(row).to_contain_text("°C")
    expect(row.get_by_text(f"Temperature · {device_type}")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # The table fits the screen: its Delete buttons are in view without scrolling it.
    fits = "w => w.scrollWidth <= w.clientWidth"
    assert phone.locator(".table-wrap").evaluate(fits)

    phone.get_by_role("button", name="Add metric").click()
    dialog = phone.get_by_role("dialog", name="Add a metric")
    box = dialog.bounding_box()
    assert box is not None and box["width"] <= PHONE["width"]
    dialog.get_by_label("Device type").fill(device_type)
    dialog.get_by_label("Metric").fill("mode")
    dialog.get_by_label("Kind").select_option("enum")
    labels = dialog.get_by_role("group", name="Labels")
    labels.get_by_role("button", name="Add a label").tap()
    labels.get_by_role("textbox", name="Value").fill("2")
    labels.get_by_role("textbox", name="Label").fill("heating")
    dialog.get_by_role("button", name="Add", exact=True).tap()
    expect(entry_row(phone, device_type, "mode")).to_contain_text("enum")  # under the metric
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    entry_row(phone, device_type, "temp").get_by_role("button", name="Delete").tap()
    phone.get_by_role("dialog").get_by_role("button", name="Delete").tap()
    expect(entry_row(phone, device_type, "temp")).to_have_count(0)
