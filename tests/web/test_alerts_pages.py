"""The dashboard's alerting pages in headless Chromium, against a real `fieldline up`:
an alert that fires is shown and acknowledged, the rule editor's preview draws the
would-have-fired interval on the metric's chart, a channel's "Send test" reaches a
local HTTP receiver, and a viewer sees all of it without any action button.

Alerts are made as a user makes them: a rule through the API and a device's readings
through HTTP ingest; the platform's own evaluator opens the alert.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import ADMIN_PASSWORD, Platform, create_user, sign_in

ALERT_TIMEOUT = 60.0  # s: a ceiling for the evaluator under a loaded machine, never a wait


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Device:
    device_id: str
    password: str


def register(http: httpx.Client) -> Device:
    device_id = unique("cold")
    answer = http.post("/api/v1/devices", json={"device_id": device_id})
    assert answer.status_code == 201, answer.text
    return Device(device_id, answer.json()["mqtt"]["password"])


def send(platform: Platform, device: Device, readings: list[dict[str, Any]]) -> None:
    """Readings through HTTP ingest, as a device without MQTT sends them."""
    answer = httpx.post(
        f"{platform.api_url}/api/v1/devices/{device.device_id}/telemetry",
        json={"readings": readings},
        auth=(device.device_id, device.password),
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == len(readings), answer.text


def create_rule(
    http: httpx.Client, device: Device, channels: tuple[int, ...] | list[int] = (), **condition: Any
) -> dict[str, Any]:
    body = {
        "name": unique("cold room warm"),
        "severity": "critical",
        "scope": {"device_id": device.device_id},
        "condition": {"type": "threshold", "metric": "temperature", **condition},
        "channels": list(channels),
    }
    answer = http.post("/api/v1/alert-rules", json=body)
    assert answer.status_code == 201, answer.text
    rule: dict[str, Any] = answer.json()
    return rule


def wait_for_alert(http: httpx.Client, device: Device, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + ALERT_TIMEOUT
    while True:
        answer = http.get("/api/v1/alerts", params={"device_id": device.device_id})
        assert answer.status_code == 200, answer.text
        found = [a for a in answer.json()["items"] if a["state"] == state]
        if found:
            alert: dict[str, Any] = found[0]
            return alert
        assert time.monotonic() < deadline, f"no {state} alert for {device.device_id}"
        time.sleep(0.3)


def wait_for_delivery(http: httpx.Client, alert_id: int) -> None:
    deadline = time.monotonic() + ALERT_TIMEOUT
    while True:
        answer = http.get("/api/v1/notifications", params={"alert_id": alert_id})
        assert answer.status_code == 200, answer.text
        if any(n["status"] == "delivered" for n in answer.json()["items"]):
            return
        assert time.monotonic() < deadline, f"alert {alert_id}'s notification never delivered"
        time.sleep(0.3)


@pytest.fixture
def firing(platform: Platform, http: httpx.Client) -> tuple[Device, dict[str, Any]]:
    """A device whose temperature is above its rule's 8 °C: one firing alert."""
    device = register(http)
    create_rule(http, device, op=">", value=8, for_seconds=0)
    send(platform, device, [{"timestamp": time.time(), "sensors": {"temperature": 9.5}}])
    return device, wait_for_alert(http, device, "firing")


def open_page(page: Page, platform: Platform, route: str) -> None:
    """Load the dashboard at `route` afresh (the session stays in localStorage)."""
    page.goto("about:blank")
    page.goto(f"{platform.api_url}/#{route}")
    expect(page.locator("main h1, main > .page > .empty").first).to_be_visible()


def test_a_firing_alert_shows_and_an_operator_acknowledges_and_silences_it(
    page: Page, platform: Platform, http: httpx.Client, firing: tuple[Device, dict[str, Any]]
) -> None:
    device, alert = firing
    username, password = create_user(platform, "operator")
    sign_in(page, platform, username, password)
    # The overview counts it, and links to the alerts page filtered to it.
    critical = page.locator(".alert-stats a.stat").filter(has_text="Firing critical")
    expect(critical).not_to_have_attribute("data-count", "0")
    critical.click()
    expect(page.get_by_role("heading", name="Alerts", level=1)).to_be_visible()

    open_page(page, platform, f"/alerts?device_id={device.device_id}")
    active = page.get_by_role("table", name="Active alerts")
    row = active.locator(f'tr[data-alert-id="{alert["id"]}"]')
    expect(row).to_contain_text("firing")
    expect(row).to_contain_text(alert["rule_name"])
    expect(row).to_contain_text("9.5")
    expect(row.get_by_role("link", name=device.device_id)).to_have_attribute(
        "href", f"#/devices/{device.device_id}"
    )

    row.get_by_role("button", name="Acknowledge").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Note").fill("door closed, watching it")
    dialog.get_by_role("button", name="Acknowledge").click()
    expect(row).to_contain_text("acknowledged")
    expect(row).to_contain_text(username)
    expect(row).to_contain_text("door closed, watching it")
    expect(row.get_by_role("button", name="Acknowledge")).to_have_count(0)
    stored = http.get(f"/api/v1/alerts/{alert['id']}").json()
    assert (stored["state"], stored["acknowledged_by"]) == ("acknowledged", username)

    row.get_by_role("button", name="Silence").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Silence").select_option(label=f"Device {device.device_id}")
    dialog.get_by_role("button", name="1 day").click()
    dialog.get_by_label("Reason").fill("compressor repair")
    dialog.get_by_role("button", name="Silence").click()
    silences = page.locator("section").filter(has=page.get_by_role("heading", name="Silences"))
    silence_row = silences.locator("tbody tr").filter(has_text=device.device_id)
    expect(silence_row).to_contain_text("compressor repair")
    active_silences = http.get("/api/v1/silences", params={"active": "true"}).json()["items"]
    assert [s["reason"] for s in active_silences if s["device_id"] == device.device_id] == [
        "compressor repair"
    ]

    silence_row.get_by_role("button", name="End").click()
    page.get_by_role("dialog").get_by_role("button", name="End silence").click()
    expect(silence_row).to_have_count(0)


def test_the_device_page_lists_its_alerts_and_shades_them_on_its_chart(
    page: Page, platform: Platform, firing: tuple[Device, dict[str, Any]]
) -> None:
    device, alert = firing
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    open_page(page, platform, f"/devices/{device.device_id}")
    alerts = page.get_by_role("table", name="Alerts of this device")
    expect(alerts.locator(f'tr[data-alert-id="{alert["id"]}"]')).to_contain_text("firing")
    chart = page.locator('[data-chart="temperature"]')
    expect(chart.locator("rect.chart-band")).to_have_count(1)


def test_a_viewer_sees_alerts_and_rules_but_no_action_buttons(
    page: Page, platform: Platform, firing: tuple[Device, dict[str, Any]]
) -> None:
    device, alert = firing
    username, password = create_user(platform, "viewer")
    sign_in(page, platform, username, password)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Alerts")).to_be_visible()
    expect(nav.get_by_role("link", name="Rules")).to_be_visible()
    expect(nav.get_by_role("link", name="Channels")).to_have_count(0)

    open_page(page, platform, f"/alerts?device_id={device.device_id}")
    row = page.locator(f'tr[data-alert-id="{alert["id"]}"]')
    expect(row).to_contain_text("firing")
    expect(page.locator("main").get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(page.locator("main").get_by_role("button", name="Silence")).to_have_count(0)
    expect(page.locator("main").get_by_role("button", name="New silence")).to_have_count(0)

    open_page(page, platform, "/rules")
    rule_row = page.locator(f'tr[data-rule-id="{alert["rule_id"]}"]')
    expect(rule_row).to_contain_text("temperature > 8")
    expect(rule_row.get_by_role("button", name="Delete")).to_have_count(0)
    expect(rule_row.get_by_role("checkbox")).to_have_count(0)
    expect(page.get_by_role("link", name="New rule")).to_have_count(0)
    rule_row.get_by_role("link", name="View").click()
    expect(page.get_by_role("button", name="Save rule")).to_have_count(0)
    expect(page.get_by_role("form", name="Rule").get_by_label("Name")).to_be_disabled()
    expect(page.get_by_role("button", name="Preview")).to_be_visible()

    open_page(page, platform, "/channels")
    expect(page.get_by_text("This page needs the admin role.")).to_be_visible()


def test_the_rule_editor_previews_a_template_on_stored_history(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    device = register(http)
    now = time.time()
    # A day at 5 °C every 10 minutes, warm (10 °C) from 6 h to 4 h ago.
    history = [
        {
            "timestamp": t,
            "sensors": {"temperature": 10.0 if now - 6 * 3600 <= t <= now - 4 * 3600 else 5.0},
        }
        for t in (now - 86_000 + 600 * i for i in range(143))
    ]
    send(platform, device, history)
    username, password = create_user(platform, "operator")
    sign_in(page, platform, username, password)
    open_page(page, platform, "/rules/new")

    page.get_by_label("Template").select_option(label="Temperature above 8 °C for 10 minutes")
    form = page.get_by_role("form", name="Rule")
    expect(form.locator('[name="metric"]')).to_have_value("temperature")
    expect(form.locator('[name="value"]')).to_have_value("8")
    form.get_by_label("Scope").select_option("device_id")
    form.get_by_label("Device id, group or type").fill(device.device_id)
    name = unique("cold room")
    form.get_by_label("Name").fill(name)

    page.get_by_role("button", name="Preview").click()
    preview = page.locator("section.preview")
    expect(preview.locator(".preview-summary")).to_contain_text(
        "would have fired 1 time on 1 of 1 device"
    )
    intervals = preview.get_by_role("table", name="Would have fired").locator("tbody tr")
    expect(intervals).to_have_count(1)
    expect(intervals).to_contain_text(device.device_id)
    chart = preview.locator("svg.chart")
    expect(chart).not_to_have_attribute("data-points", "0")
    expect(chart.locator("rect.chart-band")).to_have_count(1)
    expect(chart.locator("line.chart-threshold")).to_have_attribute("data-value", "8")
    band = chart.locator("rect.chart-band").bounding_box()
    plot = chart.locator("rect.chart-overlay").bounding_box()
    assert band is not None and plot is not None
    # Shaded from about 6 h to 4 h ago of a day: the band sits in the last third.
    assert plot["x"] + plot["width"] * 0.65 < band["x"] < plot["x"] + plot["width"] * 0.8
    assert 0.05 * plot["width"] < band["width"] < 0.12 * plot["width"]

    form.get_by_role("button", name="Create rule").click()
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
    created = [r for r in http.get("/api/v1/alert-rules").json()["items"] if r["name"] == name]
    assert len(created) == 1
    assert created[0]["scope"] == {"device_id": device.device_id}
    assert created[0]["condition"]["for_seconds"] == 600


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A local webhook receiver: its URL and what it received."""
    received: list[tuple[dict[str, str], bytes]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_an_admin_adds_a_webhook_channel_and_sends_a_test(
    page: Page,
    platform: Platform,
    http: httpx.Client,
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, received = receiver
    name = unique("ops webhook")
    secret = uuid.uuid4().hex
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Channels").click()
    page.get_by_role("button", name="New channel").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("Type").select_option("webhook")
    dialog.get_by_label("URL").fill(url)
    dialog.get_by_label("Signing secret").fill(secret)
    dialog.get_by_role("button", name="Create channel").click()

    row = page.locator("table.data tbody tr").filter(has_text=name)
    expect(row).to_contain_text("webhook")
    assert secret not in (page.content()), "a secret is never shown back"
    row.get_by_role("button", name="Send test").click()
    expect(row.locator(".test-result")).to_contain_text("ok")
    assert len(received) == 1
    headers, body = received[0]
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["x-fieldline-event"] == "test"
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert lowered["x-fieldline-signature"] == f"sha256={expected}"
    assert json.loads(body)["event"] == "test"

    # An alert on a rule naming the channel: its notification shows in the log, delivered.
    channel = next(
        c for c in http.get("/api/v1/notification-channels").json()["items"] if c["name"] == name
    )
    device = register(http)
    create_rule(http, device, op=">", value=8, for_seconds=0, channels=[channel["id"]])
    send(platform, device, [{"timestamp": time.time(), "sensors": {"temperature": 12.5}}])
    alert = wait_for_alert(http, device, "firing")
    wait_for_delivery(http, alert["id"])
    open_page(page, platform, "/channels")
    log = page.locator("section").filter(has=page.get_by_role("heading", name="Notifications"))
    delivered = log.locator("tbody tr").filter(has_text=f"#{alert['id']}")
    expect(delivered).to_contain_text("firing")
    expect(delivered).to_contain_text("delivered")
    delivered.get_by_role("button", name="Attempts").click()
    expect(log.locator("tr.detail-row")).to_contain_text("HTTP 204")

    # A receiver that is gone: the test says so, with the error.
    row.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("URL").fill("http://127.0.0.1:9/hook")
    dialog.get_by_role("button", name="Save channel").click()
    expect(page.locator(".toast").filter(has_text=f"Channel {name} saved")).to_be_visible()
    row.get_by_role("button", name="Send test").click()
    expect(row.locator(".test-result")).to_contain_text("error")
    changed = http.get(f"/api/v1/notification-channels/{channel['id']}").json()
    assert changed["config"]["url"] == "http://127.0.0.1:9/hook"
    assert changed["secrets_set"] == ["secret"], "an edit leaves the secret it did not touch"
